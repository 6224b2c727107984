#!/usr/bin/env bash
#
# scripts/bench-groups.sh [CALLS] — what each libvirt statistics group costs the host,
# measured on the lab (as root; it prints figures, docs/performance.md says how to read
# them). For every group: CALLS bulk calls (`domstats --state --GROUP` over every running
# domain, all in one virsh session, so connecting is not counted), the CPU libvirtd (or
# virtqemud) and the QEMU processes spent during them, minus what they spend in an idle
# window of the same length right before (guests and daemons do work of their own).
# The state-only call is the floor every call pays (RPC, domain list, encoding).
#
#   bash scripts/bench-groups.sh        20 calls per group
#   bash scripts/bench-groups.sh 50     more calls: steadier figures on a busy host
#
# Output per group: ms of libvirtd CPU and of QEMU CPU per call (one call = one tick of
# the agent for that group), and the QEMU monitor commands libvirt issues for it (counted
# in libvirtd's debug-free way: `strace` of the monitor writes to one guest, if strace is
# installed).
set -euo pipefail
cd "$(dirname "$0")/.."

CALLS="${1:-20}"
URI="${LAB_URI:-qemu:///system}"
HZ="$(getconf CLK_TCK)"
GROUPS_TO_MEASURE="${BENCH_GROUPS:-state cpu-total balloon vcpu interface block dirtyrate}"

die() {
	printf 'bench-groups: error: %s\n' "$*" >&2
	exit 2
}
command -v virsh >/dev/null || die "virsh is missing (scripts/lab.sh)"

mapfile -t doms < <(virsh -q -c "$URI" list --name --state-running | grep . || true)
[ "${#doms[@]}" -ge 1 ] || die "no running domain: scripts/lab.sh up N"
qemu_pids=()
for d in "${doms[@]}"; do
	pid="$(cat "/var/run/libvirt/qemu/$d.pid" 2>/dev/null || true)"
	[ -n "$pid" ] && qemu_pids+=("$pid")
done
daemon="$(pgrep -x 'libvirtd|virtqemud' | head -1 || true)"
[ -n "$daemon" ] || die "no libvirtd/virtqemud process"

# shellcheck source=scripts/lib/proc-cpu.sh
. scripts/lib/proc-cpu.sh
now_ms() { date +%s%3N; }

# Runs CALLS bulk calls for "$@" (domstats options) in one virsh session; prints
# "wall_ms daemon_ticks qemu_ticks".
measure_calls() {
	local cmds="" i t0 d0 q0 t1 d1 q1
	for ((i = 0; i < CALLS; i++)); do cmds+="domstats --nowait $*; "; done
	t0="$(now_ms)"
	d0="$(ticks "$daemon")"
	q0="$(ticks "${qemu_pids[@]}")"
	virsh -q -c "$URI" "$cmds" >/dev/null
	t1="$(now_ms)"
	d1="$(ticks "$daemon")"
	q1="$(ticks "${qemu_pids[@]}")"
	echo "$((t1 - t0)) $((d1 - d0)) $((q1 - q0))"
}

# Idle window of wall_ms: "daemon_ticks qemu_ticks".
measure_idle() {
	local d0 q0
	d0="$(ticks "$daemon")"
	q0="$(ticks "${qemu_pids[@]}")"
	sleep "$(awk -v ms="$1" 'BEGIN { printf "%.3f", ms / 1000 }')"
	echo "$(($(ticks "$daemon") - d0)) $(($(ticks "${qemu_pids[@]}") - q0))"
}

# QEMU monitor commands libvirt sends for one call of "$@" (one domain), via strace.
monitor_commands() {
	command -v strace >/dev/null || {
		echo "?"
		return
	}
	local out
	out="$(mktemp)"
	strace -f -qq -s 256 -p "$daemon" -e trace=sendmsg,write -o "$out" &
	local sp=$!
	sleep 0.3
	virsh -q -c "$URI" domstats --nowait "$@" "${doms[0]}" >/dev/null
	sleep 0.3
	kill "$sp" 2>/dev/null
	wait "$sp" 2>/dev/null || true
	grep -o 'execute\\":\\"[a-z-]*' "$out" | sed 's/.*\\"//' | sort | uniq -c |
		awk '{ printf "%s%s×%s", sep, $2, $1; sep=", " } END { if (!NR) printf "none" }'
	rm -f "$out"
}

printf 'bench-groups: %d running domains, %d calls per group, libvirtd pid %s\n' \
	"${#doms[@]}" "$CALLS" "$daemon"
printf '%-11s %10s %14s %12s %14s  %s\n' group "ms/call" "libvirtd ms" "QEMU ms" "per domain ms" "QEMU monitor commands per domain"
for g in $GROUPS_TO_MEASURE; do
	if [ "$g" = state ]; then opts=(--state); else opts=(--state "--$g"); fi
	read -r wall dt qt < <(measure_calls "${opts[@]}")
	read -r idt iqt < <(measure_idle "$wall")
	awk -v g="$g" -v wall="$wall" -v dt="$dt" -v qt="$qt" -v idt="$idt" -v iqt="$iqt" \
		-v n="$CALLS" -v hz="$HZ" -v doms="${#doms[@]}" -v cmds="$(monitor_commands "${opts[@]}")" \
		'BEGIN {
			d = (dt - idt) * 1000 / hz / n; q = (qt - iqt) * 1000 / hz / n
			printf "%-11s %10.1f %14.1f %12.1f %14.2f  %s\n", g, wall / n, d, q, (d + q) / doms, cmds
		}'
done
printf 'libvirtd/QEMU ms: CPU per call above an idle window of the same length; a group\n'
printf 'costs its row minus the state row. Load average: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
