#!/usr/bin/env bash
#
# scripts/lab.sh — a real libvirt/QEMU lab for vadvisor on a Debian 12 machine
# without systemd (run as root).
#
# Usage:
#   scripts/lab.sh deps            install the packages (libvirt, QEMU, busybox, ...)
#   scripts/lab.sh start-daemon    deps + configure and start virtlogd/libvirtd (no guests)
#   scripts/lab.sh up [N] [--second-host]
#                                  start-daemon + N running guests (default 3, 1..254);
#                                  --second-host also starts the second libvirt host
#   scripts/lab.sh down [--all|--second-host]
#                                  destroy/undefine every vadv-lab-* guest, remove
#                                  their disks/console logs/XML; --all also removes the
#                                  second host, the cached kernel/initramfs and stops the
#                                  libvirtd and virtlogd that this script started;
#                                  --second-host removes only the second host
#   scripts/lab.sh trim N          destroy/undefine the lab guests above vadv-lab-N (and
#                                  remove their files); keeps vadv-lab-1..N and libvirtd
#   scripts/lab.sh status          does libvirtd answer? list the lab guests and state
#   scripts/lab.sh migration-guest NAME
#                                  write the XML (and a fresh disk) of a migratable
#                                  guest NAME (vadv-mig-*) to the shared directory and
#                                  print the XML's path; start it with `virsh create`
#
# Guests: vadv-lab-1 .. vadv-lab-N, TCG (<domain type='qemu'>), 192 MiB, 1 vCPU
# (vadv-lab-1 has 2), UUID 5ad0a0b0-0000-4000-8000-<i as 12 hex digits>
# (vadv-lab-3 = 5ad0a0b0-0000-4000-8000-000000000003), MAC 52:54:00:ad:<i hi>:<i lo>,
# disk vda (qcow2 64M, virtio), NIC tap vadvtap<i> (virtio), virtio balloon with
# stats period 1, serial console to /var/lib/vadvisor-lab/vadv-lab-<i>.console.log.
# Network is link-local only: host end of vadvtap<i> is 169.254.<i>.1/30, the
# guest is 169.254.<i>.2/30. Each guest loops: 64 KiB write+read on vda, one ping
# to the host end, sleep 1 — so cpu/block/net/balloon statistics all move.
#
# Files: /var/lib/vadvisor-lab/ (disks, console logs, domain XML);
#        /var/lib/vadvisor-lab/cache/ (guest kernel, modules, initramfs: kept by
#        `down`, removed by `down --all`);
#        /run/vadvisor-lab/ (which daemons this script started, lock file).
#
# Second host (for live migration; `up --second-host`): a second, independent
# libvirtd on this machine, in its own network, mount and UTS namespaces: its own
# hostname (vadv-lab-host2), host_uuid 5ad0a0b0-0000-4000-9000-000000000002, config
# (/etc/libvirt), state (/var/lib/libvirt, /run/libvirt), cache and logs, all bind-
# mounted from /var/lib/vadvisor-lab/host2 and /run/vadvisor-lab/host2 inside its
# mount namespace. It runs as `libvirtd-host2` (a symlink to libvirtd) so that
# `pkill -x libvirtd` and `pgrep -x libvirtd` mean the first host only. Without
# cgroups and without virtlogd (QEMU logs to files). Both hosts' sockets have a path
# valid everywhere (on this machine and inside the second host's namespaces):
#   host 1: qemu:///system?socket=/run/vadvisor-lab/host1/libvirt-sock  (a bind
#           mount of /run/libvirt; plain qemu:///system works on this machine)
#   host 2: qemu:///system?socket=/run/vadvisor-lab/host2/libvirt-sock
# Network: a veth pair, host 1 end vadvh2a 169.254.255.1/30, host 2 end vadvh2b
# 169.254.255.2/30 (link-local only) carries QEMU's migration stream, e.g.
#   virsh migrate --live --unsafe vadv-mig-1 '<host 2 URI>' tcp://169.254.255.2
#   virsh -c '<host 2 URI>' migrate --live --unsafe --p2p vadv-mig-1 '<host 1 URI>' tcp://169.254.255.1
# Shared storage: /var/lib/vadvisor-lab/shared/ is the same directory on both hosts;
# migratable guests (`migration-guest NAME`) keep their disk and console log there
# and have no NIC. `--unsafe` is needed: libvirt does not see a plain directory as
# shared storage ("Migration without shared storage is unsafe").
#
# Environment: LAB_URI (default qemu:///system), LAB_BOOT_TIMEOUT (seconds to
# wait for the guests' ready line; default max(90, 60 + 5*N)). For many guests on a
# small machine (a 192 MiB TCG guest takes about 240 MB of host memory and 3-6 % of
# a core): LAB_GUEST_MEM_MIB (guest memory, default 192; 128 boots, 64 does not) and
# LAB_GUEST_IDLE=1: guests that boot
# nothing (no kernel; the BIOS finds no bootable disk and waits), for many domains on
# a small machine: they cost libvirt and the agent what a guest costs (same devices,
# same statistics groups, their counters just do not move, and the balloon has no
# guest statistics) but about 45 MB and little CPU; `up` does not wait for them. These
# apply to guests this run defines; guests already defined are left as they are.

set -euo pipefail

LAB_URI="${LAB_URI:-qemu:///system}"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
GUEST_INIT="$SCRIPT_DIR/lab/guest-init"
LAB_DIR=/var/lib/vadvisor-lab
CACHE_DIR="$LAB_DIR/cache"
RUN_DIR=/run/vadvisor-lab
READY_LINE=LAB-GUEST-READY
DOMAIN_PREFIX=vadv-lab-
TAP_PREFIX=vadvtap
UUID_PREFIX=5ad0a0b0-0000-4000-8000-
GUEST_MEM_MIB="${LAB_GUEST_MEM_MIB:-192}"
GUEST_IDLE="${LAB_GUEST_IDLE:-0}"
DISK_SIZE=64M

PACKAGES=(libvirt-dev pkg-config libvirt-daemon libvirt-daemon-driver-qemu
	libvirt-clients qemu-system-x86 busybox-static cpio iproute2 procps)
# Loaded by the guest's /init in exactly this order.
GUEST_MODULES=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev
	virtio_pci virtio_blk failover net_failover virtio_net virtio_balloon)

log() { printf 'lab: %s\n' "$*" >&2; }
die() {
	printf 'lab: error: %s\n' "$*" >&2
	exit 1
}

usage() {
	sed -n '6,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
}

virsh_() { virsh -q -c "$LAB_URI" "$@"; }

require_root() {
	[ "$(id -u)" -eq 0 ] || die "must run as root"
}

# ---------------------------------------------------------------- packages

APT_UPDATED=0

wait_apt_lock() {
	command -v fuser >/dev/null 2>&1 || return 0
	local deadline=$((SECONDS + 120)) said=0
	while fuser /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock \
		/var/lib/apt/lists/lock >/dev/null 2>&1; do
		if [ "$SECONDS" -ge "$deadline" ]; then
			log "apt/dpkg lock still held after 120 s; trying anyway"
			return 0
		fi
		if [ "$said" = 0 ]; then
			log "waiting for another apt/dpkg process to release its lock (up to 120 s)"
			said=1
		fi
		sleep 2
	done
}

# apt-get with lock waiting and a few retries (a lock may be taken between our
# check and apt-get's own).
apt_get() {
	local try
	for try in 1 2 3; do
		wait_apt_lock
		if DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 "$@"; then
			return 0
		fi
		log "apt-get $1 failed (try $try of 3)"
		sleep 3
	done
	return 1
}

apt_update_once() {
	[ "$APT_UPDATED" = 1 ] && return 0
	log "apt-get update"
	apt_get -q update >&2 || die "apt-get update failed"
	APT_UPDATED=1
}

pkg_installed() {
	local st
	st="$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null)" || return 1
	[ "${st:0:2}" = ii ]
}

# qemu-utils must be Debian 12's 1:7.2 (the machine ships 10.0 from backports,
# which conflicts with bookworm's qemu-system-x86 7.2).
qemu_utils_ok() {
	local v
	pkg_installed qemu-utils || return 1
	v="$(dpkg-query -W -f='${Version}' qemu-utils)"
	[ "${v#1:7.2}" != "$v" ]
}

cmd_deps() {
	require_root
	local p missing=()
	for p in "${PACKAGES[@]}"; do
		pkg_installed "$p" || missing+=("$p")
	done
	if [ "${#missing[@]}" -eq 0 ] && qemu_utils_ok; then
		log "packages already installed"
		return 0
	fi
	apt_update_once
	local qver
	qver="$(apt-cache madison qemu-utils |
		awk -F'|' '{ gsub(/ /, "", $2); if ($2 ~ /^1:7\.2/) { print $2; exit } }')"
	[ -n "$qver" ] || die "no 1:7.2 version of qemu-utils in apt-cache madison qemu-utils"
	log "installing ${missing[*]:-} qemu-utils=$qver"
	apt_get install -y -q --no-install-recommends --allow-downgrades \
		"${missing[@]}" "qemu-utils=$qver" >&2 || die "apt-get install failed"
}

# ---------------------------------------------------------------- daemons

daemon_answers() { virsh -c "$LAB_URI" version >/dev/null 2>&1; }

# set_conf KEY VALUE: make /etc/libvirt/qemu.conf contain KEY = "VALUE".
CONF_CHANGED=0
set_conf() {
	local f=/etc/libvirt/qemu.conf key=$1 val=$2
	if [ -f "$f" ] && grep -Eq "^[[:space:]]*${key}[[:space:]]*=[[:space:]]*\"${val}\"" "$f"; then
		return 0
	fi
	mkdir -p /etc/libvirt
	touch "$f"
	sed -i -E "/^[[:space:]]*${key}[[:space:]]*=/d" "$f"
	printf '%s = "%s"\n' "$key" "$val" >>"$f"
	CONF_CHANGED=1
}

# alive PID: the process exists and is not a zombie (a daemon we killed can
# stay <defunct> for a while: PID 1 here reaps lazily).
alive() {
	local st
	st="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
	st="${st##*) }"
	[ "${st%% *}" != Z ]
}

# running NAME: print the pid of a live process named exactly NAME.
running() {
	local p
	for p in $(pgrep -x "$1" || true); do
		if alive "$p"; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

# start_one NAME: start NAME -d unless a process of that name runs; remember
# the pid (from /run/NAME.pid) so that `down --all` stops only what we started.
start_one() {
	local name=$1 pid=""
	if running "$name" >/dev/null; then
		return 0
	fi
	log "starting $name"
	rm -f "/run/$name.pid"
	# 9>&-: the daemon must not inherit our lock (fd 9), or it would hold it forever.
	(cd / && LIBVIRT_LOG_OUTPUTS="3:file:/var/log/libvirt/$name.log" "$name" -d 9>&-) ||
		die "$name -d failed (see /var/log/libvirt/$name.log)"
	for _ in $(seq 1 50); do
		[ -s "/run/$name.pid" ] && pid="$(cat "/run/$name.pid")" && break
		sleep 0.1
	done
	if [ -z "$pid" ]; then
		pid="$(running "$name" || true)"
	fi
	[ -n "$pid" ] || die "$name did not start (see /var/log/libvirt/$name.log)"
	mkdir -p "$RUN_DIR"
	echo "$pid" >"$RUN_DIR/$name.started"
}

cmd_start_daemon() {
	require_root
	cmd_deps
	mkdir -p /var/log/libvirt /var/run/libvirt /var/lib/libvirt
	getent group kvm >/dev/null || groupadd --system kvm
	getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
	if ! id libvirt-qemu >/dev/null 2>&1; then
		useradd --system -g kvm -G libvirt-qemu -d /var/lib/libvirt \
			-s /usr/sbin/nologin -M libvirt-qemu
	fi
	set_conf user root
	set_conf group root
	set_conf security_driver none
	if [ "$CONF_CHANGED" = 1 ] && running libvirtd >/dev/null; then
		log "warning: /etc/libvirt/qemu.conf changed while libvirtd runs; restart libvirtd for it to apply"
	fi
	start_one virtlogd
	start_one libvirtd
	local deadline=$((SECONDS + 30))
	until daemon_answers; do
		if [ "$SECONDS" -ge "$deadline" ]; then
			tail -n 20 /var/log/libvirt/libvirtd.log >&2 2>/dev/null || true
			die "libvirtd does not answer at $LAB_URI after 30 s"
		fi
		sleep 0.5
	done
	log "libvirtd answers at $LAB_URI ($(virsh -c "$LAB_URI" version 2>/dev/null | awk '/Running hypervisor/ { print $3, $4 }'))"
}

stop_started() {
	local name=$1 f="$RUN_DIR/$1.started" pid
	[ -f "$f" ] || return 0
	pid="$(cat "$f")"
	if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" = "$name" ]; then
		log "stopping $name (pid $pid, started by this script)"
		kill "$pid" 2>/dev/null || true
		for _ in $(seq 1 100); do
			alive "$pid" || break
			sleep 0.1
		done
		if alive "$pid"; then log "warning: $name (pid $pid) still running"; fi
	fi
	rm -f "$f"
}

# ---------------------------------------------------------------- guest image

# The kernel (and its virtio modules) and the initramfs are built once into
# $CACHE_DIR. The initramfs is rebuilt when its inputs change.
build_kernel() {
	if [ -s "$CACHE_DIR/vmlinuz" ] && [ -s "$CACHE_DIR/kernel-version" ] &&
		[ -d "$CACHE_DIR/modules" ]; then
		return 0
	fi
	local kpkg tmp
	kpkg="$(apt-cache depends linux-image-amd64 2>/dev/null |
		grep -o 'linux-image-[0-9][^ ]*-amd64' | head -n1 || true)"
	if [ -z "$kpkg" ]; then
		apt_update_once
		kpkg="$(apt-cache depends linux-image-amd64 |
			grep -o 'linux-image-[0-9][^ ]*-amd64' | head -n1 || true)"
	fi
	[ -n "$kpkg" ] || die "cannot find the kernel package that linux-image-amd64 depends on"
	log "fetching guest kernel $kpkg"
	tmp="$(mktemp -d)"
	chmod 755 "$tmp"
	# apt-get download drops to the _apt user: let it write there.
	if id _apt >/dev/null 2>&1; then chown _apt "$tmp"; fi
	# shellcheck disable=SC2064
	trap "rm -rf '$tmp'" EXIT
	if ! (cd "$tmp" && apt-get download -q "$kpkg" >&2); then
		apt_update_once
		(cd "$tmp" && apt-get download -q "$kpkg" >&2) || die "apt-get download $kpkg failed"
	fi
	dpkg -x "$tmp"/"$kpkg"_*.deb "$tmp/x"
	local vmlinuz kver m ko
	vmlinuz="$(find "$tmp/x/boot" -name 'vmlinuz-*' | head -n1)"
	[ -n "$vmlinuz" ] || die "no vmlinuz in $kpkg"
	kver="${vmlinuz##*/vmlinuz-}"
	rm -rf "$CACHE_DIR/modules"
	mkdir -p "$CACHE_DIR/modules"
	for m in "${GUEST_MODULES[@]}"; do
		ko="$(find "$tmp/x/lib/modules/$kver" \( -name "$m.ko" -o -name "$m.ko.xz" \) | head -n1)"
		if [ -z "$ko" ]; then
			if grep -q "/$m.ko\$" "$tmp/x/lib/modules/$kver/modules.builtin" 2>/dev/null; then
				log "module $m is built into $kver"
				continue
			fi
			die "module $m not found in $kpkg"
		fi
		case "$ko" in
		*.xz) xz -dc "$ko" >"$CACHE_DIR/modules/$m.ko" ;;
		*) cp "$ko" "$CACHE_DIR/modules/$m.ko" ;;
		esac
	done
	cp "$vmlinuz" "$CACHE_DIR/vmlinuz"
	echo "$kver" >"$CACHE_DIR/kernel-version"
	rm -rf "$tmp"
	trap - EXIT
}

build_initramfs() {
	local busybox=/bin/busybox stamp stage m
	pkg_installed busybox-static || die "busybox-static is not installed (run: $0 deps)"
	[ -x "$busybox" ] || die "$busybox missing"
	[ -f "$GUEST_INIT" ] || die "$GUEST_INIT missing"
	stamp="$(
		{
			sha256sum "$GUEST_INIT" "$busybox" "$CACHE_DIR/kernel-version"
			printf '%s\n' "${GUEST_MODULES[@]}"
		} | sha256sum | cut -d' ' -f1
	)"
	if [ -s "$CACHE_DIR/initramfs.gz" ] &&
		[ "$(cat "$CACHE_DIR/initramfs.stamp" 2>/dev/null || true)" = "$stamp" ]; then
		return 0
	fi
	log "building guest initramfs"
	stage="$(mktemp -d)"
	mkdir -p "$stage"/{bin,dev,proc,sys,tmp,lib/modules}
	cp "$busybox" "$stage/bin/busybox"
	cp "$GUEST_INIT" "$stage/init"
	chmod 755 "$stage/init" "$stage/bin/busybox"
	: >"$stage/modules.order"
	for m in "${GUEST_MODULES[@]}"; do
		echo "$m" >>"$stage/modules.order"
		if [ -f "$CACHE_DIR/modules/$m.ko" ]; then
			cp "$CACHE_DIR/modules/$m.ko" "$stage/lib/modules/"
		fi
	done
	mknod -m 600 "$stage/dev/console" c 5 1
	mknod -m 666 "$stage/dev/null" c 1 3
	(cd "$stage" && find . -print0 | cpio --null -o -H newc -R 0:0 --quiet | gzip -9) \
		>"$CACHE_DIR/initramfs.gz.new"
	mv "$CACHE_DIR/initramfs.gz.new" "$CACHE_DIR/initramfs.gz"
	echo "$stamp" >"$CACHE_DIR/initramfs.stamp"
	rm -rf "$stage"
}

# ---------------------------------------------------------------- guests

dom_name() { echo "$DOMAIN_PREFIX$1"; }
dom_uuid() { printf '%s%012x\n' "$UUID_PREFIX" "$1"; }

domain_xml() {
	local i=$1 name uuid vcpus mac boot
	name="$(dom_name "$i")"
	uuid="$(dom_uuid "$i")"
	vcpus=1
	[ "$i" -eq 1 ] && vcpus=2
	mac="$(printf '52:54:00:ad:%02x:%02x' $((i >> 8)) $((i & 255)))"
	boot="<kernel>$CACHE_DIR/vmlinuz</kernel>
    <initrd>$CACHE_DIR/initramfs.gz</initrd>
    <cmdline>console=ttyS0 no_timer_check panic=5 vadv_ip=169.254.$i.2/30 vadv_peer=169.254.$i.1</cmdline>"
	[ "$GUEST_IDLE" = 1 ] && boot="<boot dev='hd'/>"
	cat <<EOF
<domain type='qemu'>
  <name>$name</name>
  <uuid>$uuid</uuid>
  <description>vadvisor lab guest (scripts/lab.sh)</description>
  <memory unit='MiB'>$GUEST_MEM_MIB</memory>
  <currentMemory unit='MiB'>$GUEST_MEM_MIB</currentMemory>
  <vcpu placement='static'>$vcpus</vcpu>
  <os>
    <!-- no_timer_check: under TCG with many guests on 2 cores the kernel's
         IO-APIC timer check can fail ("IO-APIC + timer doesn't work!" panic).
         panic=5: a guest that panics anyway reboots and tries again. -->
    <type arch='x86_64' machine='pc'>hvm</type>
    $boot
  </os>
  <features><acpi/></features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='$LAB_DIR/$name.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <controller type='usb' model='none'/>
    <interface type='ethernet'>
      <mac address='$mac'/>
      <target dev='$TAP_PREFIX$i' managed='yes'/>
      <model type='virtio'/>
    </interface>
    <serial type='file'>
      <source path='$LAB_DIR/$name.console.log'/>
      <target port='0'/>
    </serial>
    <console type='file'>
      <source path='$LAB_DIR/$name.console.log'/>
      <target type='serial' port='0'/>
    </console>
    <memballoon model='virtio'>
      <stats period='1'/>
    </memballoon>
  </devices>
</domain>
EOF
}

dom_state() { virsh_ domstate "$1" 2>/dev/null | head -n1 || true; }

lab_domains() {
	virsh_ list --all --name 2>/dev/null | grep -E "^${DOMAIN_PREFIX}[0-9]+\$" | sort -t- -k3 -n || true
}

# host end of the guest's tap: 169.254.i.1/30 (link-local only)
set_tap_addr() {
	local i=$1 tap="$TAP_PREFIX$1"
	for _ in $(seq 1 50); do
		[ -e "/sys/class/net/$tap" ] && break
		sleep 0.1
	done
	[ -e "/sys/class/net/$tap" ] || die "tap $tap did not appear for $(dom_name "$i")"
	ip addr replace "169.254.$i.1/30" dev "$tap"
	ip link set dev "$tap" up
}

# ensure_guest I: define/start guest I; add its name to PENDING if we must wait
# for its ready line.
PENDING=()
ensure_guest() {
	local i=$1 name uuid xml state cur
	name="$(dom_name "$i")"
	uuid="$(dom_uuid "$i")"
	xml="$LAB_DIR/$name.xml"
	domain_xml "$i" >"$xml"
	[ -f "$LAB_DIR/$name.qcow2" ] ||
		qemu-img create -q -f qcow2 "$LAB_DIR/$name.qcow2" "$DISK_SIZE" >&2
	state="$(dom_state "$name")"
	if [ -n "$state" ]; then
		cur="$(virsh_ domuuid "$name" 2>/dev/null | head -n1 || true)"
		if [ "$cur" != "$uuid" ]; then
			log "$name exists with foreign UUID $cur: replacing it"
			[ "$state" = "shut off" ] || virsh_ destroy "$name" >/dev/null 2>&1 || true
			virsh_ undefine "$name" >/dev/null
			state=""
		fi
	fi
	# (Re)define: keeps the persistent config current; a running guest keeps
	# running with its old live config. Guest size overrides are for new guests only.
	if [ -z "$state" ] || [ -z "${LAB_GUEST_MEM_MIB:-}${LAB_GUEST_IDLE:-}" ]; then
		virsh_ define "$xml" >/dev/null || die "virsh define $xml failed"
	fi
	case "$state" in
	running)
		log "$name already running"
		;;
	paused)
		log "$name is paused: resuming"
		virsh_ resume "$name" >/dev/null
		;;
	*)
		if [ -n "$state" ] && [ "$state" != "shut off" ]; then
			virsh_ destroy "$name" >/dev/null 2>&1 || true
		fi
		rm -f "$LAB_DIR/$name.console.log"
		log "starting $name"
		virsh_ start "$name" >/dev/null || die "virsh start $name failed"
		;;
	esac
	set_tap_addr "$i"
	# An idle guest (LAB_GUEST_IDLE, or defined so earlier) never prints the line.
	virsh_ dumpxml "$name" 2>/dev/null | grep -q '<kernel>' || return 0
	grep -q "$READY_LINE" "$LAB_DIR/$name.console.log" 2>/dev/null || PENDING+=("$name")
}

cmd_up() {
	local n=3 second=0 a
	for a in "$@"; do
		case "$a" in
		--second-host) second=1 ;;
		*) n=$a ;;
		esac
	done
	if ! [[ "$n" =~ ^[0-9]+$ ]] || [ "$n" -lt 1 ] || [ "$n" -gt 254 ]; then
		die "N must be an integer in 1..254 (got '$n')"
	fi
	require_root
	cmd_start_daemon
	mkdir -p "$LAB_DIR" "$CACHE_DIR"
	build_kernel
	build_initramfs
	local i name
	for i in $(seq 1 "$n"); do
		ensure_guest "$i"
	done
	local pending=(${PENDING[@]+"${PENDING[@]}"})
	local timeout=${LAB_BOOT_TIMEOUT:-$((60 + 5 * n))}
	[ -n "${LAB_BOOT_TIMEOUT:-}" ] || [ "$timeout" -ge 90 ] || timeout=90
	if [ "${#pending[@]}" -gt 0 ]; then
		log "waiting up to ${timeout} s for ${#pending[@]} guest(s) to print $READY_LINE"
	fi
	local deadline=$((SECONDS + timeout)) still
	while [ "${#pending[@]}" -gt 0 ]; do
		still=()
		for name in "${pending[@]}"; do
			grep -q "$READY_LINE" "$LAB_DIR/$name.console.log" 2>/dev/null || still+=("$name")
		done
		pending=(${still[@]+"${still[@]}"})
		[ "${#pending[@]}" -eq 0 ] && break
		if [ "$SECONDS" -ge "$deadline" ]; then
			for name in "${pending[@]}"; do
				log "$name did not get ready (state: $(dom_state "$name")); console log tail:"
				tail -n 25 "$LAB_DIR/$name.console.log" >&2 2>/dev/null || log "(no console log)"
			done
			die "${#pending[@]} guest(s) not ready after ${timeout} s"
		fi
		sleep 1
	done
	log "all $n guest(s) ready"
	virsh -c "$LAB_URI" list --all
	if [ "$second" = 1 ]; then
		cmd_second_host_up
	fi
}

cmd_down() {
	local all=0
	case "${1:-}" in
	"") ;;
	--all) all=1 ;;
	--second-host)
		cmd_second_host_down
		return 0
		;;
	*) die "unknown option for down: $1" ;;
	esac
	require_root
	local name
	if daemon_answers; then
		for name in $(lab_domains); do
			if [ "$(dom_state "$name")" != "shut off" ]; then
				virsh_ destroy "$name" >/dev/null 2>&1 || true
			fi
			virsh_ undefine "$name" >/dev/null || die "virsh undefine $name failed"
			log "removed $name"
		done
	else
		log "libvirtd does not answer at $LAB_URI: only removing files"
	fi
	rm -f "$LAB_DIR"/"$DOMAIN_PREFIX"*.qcow2 "$LAB_DIR"/"$DOMAIN_PREFIX"*.console.log \
		"$LAB_DIR"/"$DOMAIN_PREFIX"*.xml
	if [ "$all" = 1 ]; then
		cmd_second_host_down
		rm -rf "$LAB_DIR"
		stop_started libvirtd
		stop_started virtlogd
		log "lab removed (cache too)"
	else
		log "lab down (cache kept in $CACHE_DIR; 'down --all' removes it)"
	fi
}

cmd_trim() {
	local n=${1:-} name i
	[[ "$n" =~ ^[0-9]+$ ]] || die "usage: scripts/lab.sh trim N (keep vadv-lab-1..N)"
	require_root
	daemon_answers || die "libvirtd does not answer at $LAB_URI"
	for name in $(lab_domains); do
		i="${name#"$DOMAIN_PREFIX"}"
		[ "$i" -gt "$n" ] || continue
		if [ "$(dom_state "$name")" != "shut off" ]; then
			virsh_ destroy "$name" >/dev/null 2>&1 || true
		fi
		virsh_ undefine "$name" >/dev/null || die "virsh undefine $name failed"
		rm -f "$LAB_DIR/$name.qcow2" "$LAB_DIR/$name.console.log" "$LAB_DIR/$name.xml"
		log "removed $name"
	done
	log "$(lab_domains | wc -l) lab guest(s) left"
}

cmd_status() {
	if ! daemon_answers; then
		echo "libvirtd: not answering at $LAB_URI"
		return 1
	fi
	echo "libvirtd: answering at $LAB_URI ($(virsh -c "$LAB_URI" version 2>/dev/null | awk '/Running hypervisor/ { print $3, $4 }'))"
	local name state ready any=0 i
	for name in $(lab_domains); do
		any=1
		state="$(dom_state "$name")"
		i="${name#"$DOMAIN_PREFIX"}"
		ready=no
		grep -q "$READY_LINE" "$LAB_DIR/$name.console.log" 2>/dev/null && ready=yes
		printf '%-12s %-10s uuid=%s tap=%s host=169.254.%s.1 guest=169.254.%s.2 ready=%s\n' \
			"$name" "${state// /-}" "$(virsh_ domuuid "$name" 2>/dev/null | head -n1)" \
			"$TAP_PREFIX$i" "$i" "$i" "$ready"
	done
	[ "$any" = 1 ] || echo "no lab guests"
	h2_status
}

# ---------------------------------------------------------------- second host

H2_HOSTNAME=vadv-lab-host2
H2_UUID=5ad0a0b0-0000-4000-9000-000000000002
H2_NETNS=vadvhost2
H2_DIR="$LAB_DIR/host2"
H2_RUN="$RUN_DIR/host2"
H1_RUN="$RUN_DIR/host1"
H2_BIN="$RUN_DIR/bin/libvirtd-host2"
H2_URI="qemu:///system?socket=$H2_RUN/libvirt-sock"
H1_URI="qemu:///system?socket=$H1_RUN/libvirt-sock"
SHARED_DIR="$LAB_DIR/shared"
VETH_H1=vadvh2a
VETH_H2=vadvh2b
VETH_H1_ADDR=169.254.255.1
VETH_H2_ADDR=169.254.255.2
MIG_PREFIX=vadv-mig-
MIG_MEM_MIB=128

h2_virsh() { virsh -q -c "$H2_URI" "$@"; }
h2_answers() { virsh -c "$H2_URI" version >/dev/null 2>&1; }

# The second libvirtd's pid, if it runs (its pid file is in its own /run/libvirt).
h2_pid() {
	local pid
	pid="$(cat "$H2_RUN/libvirtd.pid" 2>/dev/null)" || return 1
	[ -n "$pid" ] && alive "$pid" &&
		[ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" = "${H2_BIN##*/}" ] &&
		echo "$pid"
}

h2_config() {
	mkdir -p "$H2_DIR"/etc/qemu "$H2_DIR"/lib "$H2_DIR"/cache "$H2_DIR"/log "$H2_RUN" \
		"$H1_RUN" "$SHARED_DIR" "${H2_BIN%/*}"
	# Only what differs from a default libvirtd: its own identity.
	printf 'host_uuid = "%s"\n' "$H2_UUID" >"$H2_DIR/etc/libvirtd.conf"
	# No cgroups (the first host's libvirtd owns the machine's "machine" cgroup tree,
	# and both hosts hold a domain of the same name during a migration), no virtlogd.
	cat >"$H2_DIR/etc/qemu.conf" <<EOC
user = "root"
group = "root"
security_driver = "none"
stdio_handler = "file"
cgroup_controllers = [ ]
EOC
	ln -sfn "$(command -v libvirtd)" "$H2_BIN"
}

h2_network() {
	[ -e "/run/netns/$H2_NETNS" ] || ip netns add "$H2_NETNS"
	if [ ! -e "/sys/class/net/$VETH_H1" ]; then
		ip link add "$VETH_H1" type veth peer name "$VETH_H2" netns "$H2_NETNS"
	fi
	ip addr replace "$VETH_H1_ADDR/30" dev "$VETH_H1"
	ip link set dev "$VETH_H1" up
	ip -n "$H2_NETNS" addr replace "$VETH_H2_ADDR/30" dev "$VETH_H2"
	ip -n "$H2_NETNS" link set dev "$VETH_H2" up
	ip -n "$H2_NETNS" link set dev lo up
}

cmd_second_host_up() {
	require_root
	cmd_start_daemon
	h2_config
	# host 1's sockets under a path that the second host's namespace does not cover.
	mountpoint -q "$H1_RUN" || mount --bind /run/libvirt "$H1_RUN"
	h2_network
	if ! h2_pid >/dev/null; then
		log "starting the second libvirt host ($H2_HOSTNAME)"
		rm -f "$H2_RUN/libvirtd.pid"
		# A new mount and UTS namespace inside the network namespace; bind mounts made
		# there stay there. libvirtd -d forks: the daemon keeps the namespaces alive.
		(cd / && ip netns exec "$H2_NETNS" unshare --mount --uts --propagation private \
			/bin/sh -euc '
				hostname "$1"
				mountpoint -q "$4" || mount --bind /run/libvirt "$4"
				mount --bind "$2/etc" /etc/libvirt
				mount --bind "$3" /run/libvirt
				mount --bind "$2/lib" /var/lib/libvirt
				mount --bind "$2/cache" /var/cache/libvirt
				mount --bind "$2/log" /var/log/libvirt
				LIBVIRT_LOG_OUTPUTS="3:file:/var/log/libvirt/libvirtd.log" \
					exec "$5" -d -p /run/libvirt/libvirtd.pid
			' sh "$H2_HOSTNAME" "$H2_DIR" "$H2_RUN" "$H1_RUN" "$H2_BIN" 9>&-) ||
			die "the second libvirtd did not start (see $H2_DIR/log/libvirtd.log)"
	fi
	local deadline=$((SECONDS + 30))
	until h2_answers; do
		if [ "$SECONDS" -ge "$deadline" ]; then
			tail -n 20 "$H2_DIR/log/libvirtd.log" >&2 2>/dev/null || true
			die "the second libvirtd does not answer at $H2_URI after 30 s"
		fi
		sleep 0.5
	done
	local name uuid
	name="$(virsh -c "$H2_URI" hostname 2>/dev/null || true)"
	uuid="$(virsh -c "$H2_URI" capabilities 2>/dev/null |
		sed -n 's:.*<uuid>\(.*\)</uuid>.*:\1:p' | head -n1)"
	[ "$name" = "$H2_HOSTNAME" ] && [ "$uuid" = "$H2_UUID" ] ||
		die "the second libvirtd answers as host '$name' uuid '$uuid', not $H2_HOSTNAME $H2_UUID"
	log "second host $H2_HOSTNAME answers at $H2_URI (migration address $VETH_H2_ADDR; host 1 is $VETH_H1_ADDR)"
}

cmd_second_host_down() {
	require_root
	local name pid
	if h2_answers; then
		for name in $(virsh -c "$H2_URI" list --all --name 2>/dev/null); do
			virsh -c "$H2_URI" destroy "$name" >/dev/null 2>&1 || true
			virsh -c "$H2_URI" undefine "$name" >/dev/null 2>&1 || true
			log "removed $name from the second host"
		done
	fi
	if pid="$(h2_pid)"; then
		log "stopping the second libvirtd (pid $pid)"
		kill "$pid" 2>/dev/null || true
		for _ in $(seq 1 100); do
			alive "$pid" || break
			sleep 0.1
		done
	fi
	# Whatever is left in the second host's network namespace was started there by
	# this script's libvirtd (QEMU outlives a killed libvirtd).
	if [ -e "/run/netns/$H2_NETNS" ]; then
		for pid in $(ip netns pids "$H2_NETNS" 2>/dev/null); do
			log "stopping pid $pid ($(cat "/proc/$pid/comm" 2>/dev/null || true)) left on the second host"
			kill "$pid" 2>/dev/null || true
		done
		ip netns del "$H2_NETNS"
	fi
	ip link del "$VETH_H1" 2>/dev/null || true
	# Migration guests still on host 1 use the shared directory that goes away.
	if daemon_answers; then
		for name in $(virsh_ list --all --name 2>/dev/null | grep "^$MIG_PREFIX" || true); do
			virsh_ destroy "$name" >/dev/null 2>&1 || true
			virsh_ undefine "$name" >/dev/null 2>&1 || true
			log "removed $name from the first host"
		done
	fi
	if mountpoint -q "$H1_RUN"; then umount "$H1_RUN"; fi
	rm -rf "$H2_DIR" "$H2_RUN" "$H1_RUN" "$SHARED_DIR" "$H2_BIN"
	rmdir "${H2_BIN%/*}" 2>/dev/null || true
	log "second host removed"
}

h2_status() {
	if h2_answers; then
		echo "second host: $H2_HOSTNAME answering at $H2_URI (migration address $VETH_H2_ADDR)"
		virsh -c "$H2_URI" list --all --name 2>/dev/null | sed '/^$/d; s/^/  /'
	elif [ -e "/run/netns/$H2_NETNS" ] || [ -d "$H2_DIR" ]; then
		echo "second host: set up but not answering at $H2_URI"
	fi
}

# A stable UUID per migration guest name.
mig_uuid() {
	local h
	h="$(printf '%s' "$1" | sha256sum | cut -c1-12)"
	echo "5ad0a0b0-0000-4000-a000-$h"
}

cmd_migration_guest() {
	local name=${1:-}
	[[ "$name" =~ ^${MIG_PREFIX}[a-z0-9-]{1,40}$ ]] ||
		die "migration-guest NAME: NAME must look like ${MIG_PREFIX}1 (got '$name')"
	require_root
	[ -s "$CACHE_DIR/vmlinuz" ] && [ -s "$CACHE_DIR/initramfs.gz" ] ||
		die "no guest kernel/initramfs in $CACHE_DIR: run scripts/lab.sh up first"
	mkdir -p "$SHARED_DIR"
	local disk="$SHARED_DIR/$name.qcow2" xml="$SHARED_DIR/$name.xml"
	rm -f "$disk" "$SHARED_DIR/$name.console.log"
	qemu-img create -q -f qcow2 "$disk" "$DISK_SIZE" >&2
	cat >"$xml" <<EOF
<domain type='qemu'>
  <name>$name</name>
  <uuid>$(mig_uuid "$name")</uuid>
  <description>vadvisor lab migration guest (scripts/lab.sh migration-guest)</description>
  <memory unit='MiB'>$MIG_MEM_MIB</memory>
  <currentMemory unit='MiB'>$MIG_MEM_MIB</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$CACHE_DIR/vmlinuz</kernel>
    <initrd>$CACHE_DIR/initramfs.gz</initrd>
    <cmdline>console=ttyS0 no_timer_check panic=5</cmdline>
  </os>
  <features><acpi/></features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='$disk'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <controller type='usb' model='none'/>
    <serial type='file'>
      <source path='$SHARED_DIR/$name.console.log' append='on'/>
      <target port='0'/>
    </serial>
    <console type='file'>
      <source path='$SHARED_DIR/$name.console.log' append='on'/>
      <target type='serial' port='0'/>
    </console>
    <memballoon model='virtio'>
      <stats period='1'/>
    </memballoon>
  </devices>
</domain>
EOF
	echo "$xml"
}

# ---------------------------------------------------------------- main

# Serialise the commands that change things.
lock() {
	mkdir -p "$RUN_DIR"
	exec 9>"$RUN_DIR/lock"
	if ! flock -n 9; then
		log "another scripts/lab.sh is running; waiting for it"
		flock -w 900 9 || die "timed out waiting for the other scripts/lab.sh"
	fi
}

main() {
	local cmd=${1:-}
	[ $# -gt 0 ] && shift
	case "$cmd" in
	deps) lock && cmd_deps ;;
	start-daemon) lock && cmd_start_daemon ;;
	up) lock && cmd_up "$@" ;;
	down) lock && cmd_down "$@" ;;
	trim) lock && cmd_trim "$@" ;;
	status) cmd_status ;;
	migration-guest) lock && cmd_migration_guest "$@" ;;
	-h | --help | help)
		usage
		;;
	*)
		usage
		exit 2
		;;
	esac
}

main "$@"
