#!/usr/bin/env bash
# Builds and runs the vadvisor Docker image on a machine without a Docker engine, with
# Debian's podman/buildah (see docs/docker.md and /work/shared/docs/container-lab.md).
# Everything lives under a state dir; the host's podman/containers config is not touched.
#
#   scripts/container-lab.sh setup        apt packages, config, local base images
#                                         (debian:bookworm-slim, rust:1-bookworm)
#   scripts/container-lab.sh build        podman build of ./Dockerfile -> localhost/vadvisor:latest
#   scripts/container-lab.sh run [ARGS]   vAdvisor's docker run line (+ --network host);
#                                         ARGS go to the agent, after the image name
#   scripts/container-lab.sh check        black-box checks of the running container
#   scripts/container-lab.sh stop         podman stop -t 10 vadvisor && podman rm vadvisor
#   scripts/container-lab.sh smoke        setup + build + run + check + stop, with timings
#   scripts/container-lab.sh service      podman's Docker API on a socket, for the `docker` CLI
#   scripts/container-lab.sh service-stop
#   scripts/container-lab.sh env          print the exports to use podman/docker by hand
#   scripts/container-lab.sh clean [--all]  remove the container and the image
#                                         (--all: also the base images and the state dir)
#
# Environment: VADVISOR_CLAB (state dir, /var/tmp/vadvisor-clab), VADVISOR_CLAB_RUN
# (run dir, /tmp/vadvisor-clab-run), VADVISOR_IMAGE (localhost/vadvisor:latest),
# DEBIAN_MIRROR (http://deb.debian.org/debian).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

CLAB=${VADVISOR_CLAB:-/var/tmp/vadvisor-clab}
CLAB_RUN=${VADVISOR_CLAB_RUN:-/tmp/vadvisor-clab-run}
IMAGE=${VADVISOR_IMAGE:-localhost/vadvisor:latest}
NAME=vadvisor
PORT=8181
SOCK=/var/run/libvirt/libvirt-sock-ro
BASE=localhost/debian:bookworm-slim
RUST=localhost/rust:1-bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
HOST_CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}
export CONTAINERS_STORAGE_CONF=$CLAB/storage.conf
export CONTAINERS_CONF=$CLAB/containers.conf

log() { printf 'container-lab: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---- config (written before any podman/buildah call) -------------------------------------

write_config() {
  mkdir -p "$CLAB" "$CLAB_RUN/libpod"
  # root has no CAP_SYS_RESOURCE here: the container limits must not exceed the hard
  # limits, and conmon fails with nproc above 32768.
  local nofile nproc
  nofile=$(ulimit -Hn); [[ $nofile == unlimited || $nofile -gt 1048576 ]] && nofile=1048576
  nproc=$(ulimit -Hu); [[ $nproc == unlimited || $nproc -gt 32768 ]] && nproc=32768
  local storage containers
  # driver = "overlay" before the first podman call, or the libpod DB records driver ""
  # and every run/wait takes 20 s more ("Exceeded conmon timeout").
  storage=$(printf '[storage]\ndriver = "overlay"\ngraphroot = "%s"\nrunroot = "%s"\n' \
    "$CLAB/storage" "$CLAB_RUN/storage")
  containers=$(cat <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
# crun fails on this cgroup v1 "hybrid" host; there is no systemd.
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$CLAB_RUN/libpod"
EOF
)
  # Rewrite only on change, so the files' mtimes say when the config last changed.
  [[ -f $CONTAINERS_STORAGE_CONF && $(cat "$CONTAINERS_STORAGE_CONF") == "$storage" ]] ||
    printf '%s\n' "$storage" >"$CONTAINERS_STORAGE_CONF"
  [[ -f $CONTAINERS_CONF && $(cat "$CONTAINERS_CONF") == "$containers" ]] ||
    printf '%s\n' "$containers" >"$CONTAINERS_CONF"
}

# podman without systemd logs "unable to get systemd connection to add healthchecks" on
# every run/stop of a container with a HEALTHCHECK: it cannot schedule the periodic
# checks (`podman healthcheck run` still works). Filter that noise.
pm() {
  podman "$@" 2> >(grep -v --line-buffered 'unable to get systemd connection' >&2)
}

need_podman() {
  command -v podman >/dev/null || die "podman is not installed: run scripts/container-lab.sh setup"
}

# ---- setup -------------------------------------------------------------------------------

install_packages() {
  local pkgs=(podman buildah debootstrap runc) missing=() p
  for p in "${pkgs[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
  if ((${#missing[@]} == 0)); then
    log "packages present: ${pkgs[*]}"
    return
  fi
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null ||
    { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
}

unmount_under() {
  local dir=$1 m
  [[ -d $dir ]] || return 0
  # Deepest first; a debootstrap that was interrupted may leave proc/sys mounted.
  findmnt -rn -o TARGET | { grep -F "$dir/" || true; } | sort -r | while read -r m; do umount -l "$m" || true; done
}

base_image() {
  if podman image exists "$BASE"; then
    log "base image $BASE exists (scripts/container-lab.sh clean --all rebuilds it)"
  else
    local rootfs=$CLAB/rootfs t0
    t0=$(now)
    unmount_under "$rootfs"
    rm -rf "$rootfs" "$CLAB/rootfs.tar"
    log "debootstrap bookworm (minbase) from $MIRROR"
    debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$CLAB/debootstrap.log" 2>&1 ||
      { tail -20 "$CLAB/debootstrap.log" >&2; die "debootstrap failed (log: $CLAB/debootstrap.log)"; }
    unmount_under "$rootfs"
    # Slim it like the official debian:bookworm-slim: apt sources with updates and
    # security, dpkg excludes for docs/man/locales, no apt lists, caches or logs.
    if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
      install -m 0644 /etc/apt/sources.list.d/debian.sources "$rootfs/etc/apt/sources.list.d/debian.sources"
      rm -f "$rootfs/etc/apt/sources.list"
    fi
    mkdir -p "$rootfs/etc/dpkg/dpkg.cfg.d"
    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
    cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    chroot "$rootfs" apt-get clean
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
      "$rootfs"/usr/share/locale/* "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* "$rootfs"/var/cache/debconf/*-old
    # TLS interception: HTTPS (crates.io) is re-signed by a CA the host trusts through
    # /usr/local/share/ca-certificates. Any image that installs ca-certificates on top
    # of this base trusts it too (its postinst runs update-ca-certificates).
    local cas=() ca
    for ca in /usr/local/share/ca-certificates/*.crt; do [[ -f $ca ]] && cas+=("$ca"); done
    if ((${#cas[@]})); then
      log "adding the host's CA certificates to the base image: ${cas[*]##*/}"
      mkdir -p "$rootfs/usr/local/share/ca-certificates"
      cp "${cas[@]}" "$rootfs/usr/local/share/ca-certificates/"
    fi
    tar -C "$rootfs" --numeric-owner -cf "$CLAB/rootfs.tar" .
    podman import -q --change 'CMD ["bash"]' "$CLAB/rootfs.tar" "$BASE" >/dev/null
    rm -rf "$rootfs" "$CLAB/rootfs.tar"
    log "base image $BASE imported ($(since "$t0") s)"
  fi
  podman tag "$BASE" docker.io/library/debian:bookworm-slim
}

rust_image() {
  if podman image exists "$RUST"; then
    log "rust image $RUST exists (scripts/container-lab.sh clean --all rebuilds it)"
  else
    local t0 sysroot tc ctx=$CLAB/rust-ctx rustup_home=${RUSTUP_HOME:-$HOME/.rustup} f version
    t0=$(now)
    command -v rustc >/dev/null || die "no Rust toolchain on the host (rustup) to build $RUST from"
    sysroot=$(cd / && readlink -f "$(rustc --print sysroot)")
    tc=${sysroot##*/}
    version=$(cd / && rustc --version | awk '{print $2}')
    log "building $RUST from the host's toolchain $tc (rustc $version)"
    rm -rf "$ctx"
    mkdir -p "$ctx/rustup/toolchains" "$ctx/cargo/bin"
    # Hard links: no copy of the 1.4 GB toolchain; its docs (800 MB) are left out.
    cp -al "$sysroot" "$ctx/rustup/toolchains/$tc" 2>/dev/null || cp -a "$sysroot" "$ctx/rustup/toolchains/$tc"
    rm -rf "$ctx/rustup/toolchains/$tc/share/doc"
    { grep -m1 '^version' "$rustup_home/settings.toml" 2>/dev/null || echo 'version = "12"'
      printf 'default_toolchain = "%s"\nprofile = "minimal"\n' "$tc"; } >"$ctx/rustup/settings.toml"
    # rustup and its proxies (cargo, rustc, ...), nothing else from ~/.cargo/bin.
    cp "$HOST_CARGO_HOME/bin/rustup" "$ctx/cargo/bin/rustup"
    for f in "$HOST_CARGO_HOME"/bin/*; do
      [[ -L $f && $(readlink "$f") == rustup ]] && ln -s rustup "$ctx/cargo/bin/${f##*/}"
    done
    cat >"$ctx/Dockerfile" <<EOF
# Local stand-in for the official rust:1-bookworm (same layout), from the host's toolchain.
FROM $BASE
RUN apt-get update \\
 && apt-get install -y --no-install-recommends ca-certificates curl git gcc libc6-dev make pkg-config \\
 && rm -rf /var/lib/apt/lists/*
ENV RUSTUP_HOME=/usr/local/rustup \\
    CARGO_HOME=/usr/local/cargo \\
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    RUST_VERSION=$version
COPY rustup /usr/local/rustup
COPY cargo /usr/local/cargo
RUN cargo --version && rustc --version
EOF
    podman build --network host --pull=never --format docker -t "$RUST" "$ctx" >"$CLAB/rust-build.log" 2>&1 ||
      { tail -20 "$CLAB/rust-build.log" >&2; die "building $RUST failed (log: $CLAB/rust-build.log)"; }
    rm -rf "$ctx"
    log "rust image $RUST built ($(since "$t0") s)"
  fi
  podman tag "$RUST" docker.io/library/rust:1-bookworm
}

cmd_setup() {
  local t0
  t0=$(now)
  install_packages
  write_config
  base_image
  rust_image
  log "setup done ($(since "$t0") s); state in $CLAB"
}

# ---- build / run / stop ------------------------------------------------------------------

cmd_build() {
  need_podman
  podman image exists "$RUST" || die "no $RUST image: run scripts/container-lab.sh setup"
  local t0 registry=$HOST_CARGO_HOME/registry
  mkdir -p "$registry"
  t0=$(now)
  log "podman build -t $IMAGE . (crates from $registry)"
  # --format docker: HEALTHCHECK is not part of the OCI image format and podman drops it
  # there. The host's crate registry is mounted into every RUN of the build, so the
  # build downloads nothing it already has; the Dockerfile itself is unchanged.
  podman build --network host --pull=never --format docker \
    --volume "$registry:/usr/local/cargo/registry" \
    -t "$IMAGE" -f Dockerfile "$ROOT"
  log "built $IMAGE ($(since "$t0") s, $(podman image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
}

# The port the agent listens on, from --port N in the agent's arguments.
agent_port() {
  local p=$PORT
  while (($#)); do
    case $1 in
      --port) p=${2:-$p}; shift ;;
      --port=*) p=${1#--port=} ;;
    esac
    shift
  done
  echo "$p"
}

remove_container() {
  if podman container exists "$NAME"; then
    log "removing the old container $NAME"
    pm rm -f -t 10 "$NAME" >/dev/null
  fi
}

cmd_run() {
  need_podman
  podman image exists "$IMAGE" || die "no $IMAGE image: run scripts/container-lab.sh build"
  [[ -S $SOCK ]] || die "no libvirt socket $SOCK: is libvirtd running? (scripts/lab.sh up)"
  remove_container
  local port t0
  port=$(agent_port "$@")
  if ss -Hltn "sport = :$port" | grep -q .; then
    die "port $port is in use: $(ss -Hltnp "sport = :$port" | grep -o 'users:.*' | head -1) — stop that agent first"
  fi
  t0=$(now)
  # vAdvisor's own line, plus --network host (no bridge: the host's firewall and sysctls
  # stay untouched). With host networking podman ignores --publish; :Z is a no-op
  # without SELinux.
  pm run --volume=$SOCK:$SOCK:Z --name "$NAME" --publish $PORT:$PORT --detach=true \
    --network host "$IMAGE" "$@" >/dev/null
  local i
  for ((i = 0; i < 100; i++)); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz" 2>/dev/null; then
      log "container $NAME answers on :$port ($(since "$t0") s after podman run)"
      return 0
    fi
    [[ $(podman inspect -f '{{.State.Running}}' "$NAME") == true ]] || break
    sleep 0.2
  done
  podman logs "$NAME" >&2 || true
  die "container $NAME does not answer on :$port (state: $(podman inspect -f '{{.State.Status}} exit={{.State.ExitCode}}' "$NAME"))"
}

cmd_stop() {
  need_podman
  podman container exists "$NAME" || { log "no container $NAME"; return 0; }
  local t0 code
  t0=$(now)
  pm stop -t 10 "$NAME" >/dev/null
  code=$(podman inspect -f '{{.State.ExitCode}}' "$NAME")
  log "podman stop took $(since "$t0") s; exit code $code"
  pm rm "$NAME" >/dev/null
  [[ $code == 0 ]] || die "the agent exited with $code"
}

cmd_check() {
  need_podman
  local base="http://127.0.0.1:$PORT" uuids u stats missing i status
  curl -fsS "$base/healthz" >/dev/null || die "/healthz does not answer 200"
  log "ok: /healthz 200"
  uuids=$(virsh -c qemu:///system list --uuid --state-running | sed '/^$/d')
  [[ -n $uuids ]] || die "no running domain (scripts/lab.sh up)"
  for ((i = 0; i < 75; i++)); do
    stats=$(curl -fsS "$base/api/v1.0/stats/") || stats='{}'
    missing=$(for u in $uuids; do jq -e --arg u "$u" 'has($u)' <<<"$stats" >/dev/null || echo "$u"; done)
    [[ -z $missing ]] && break
    sleep 0.2
  done
  [[ -z $missing ]] || die "/api/v1.0/stats/ lacks running domains: $missing"
  log "ok: /api/v1.0/stats/ has all $(wc -w <<<"$uuids") running domains"
  status=$(curl -s -o "$CLAB_RUN/metrics" -w '%{http_code}' "$base/metrics")
  if [[ $status == 200 ]] && grep -q '^vm_up' "$CLAB_RUN/metrics"; then
    log "ok: /metrics has vm_up"
  elif podman exec "$NAME" grep -Eq '^  prometheus(/[^:]*)?:' /etc/vadvisor/config.yaml; then
    die "/metrics: HTTP $status without vm_up although the config has a prometheus sink"
  else
    log "skip: /metrics answers $status (no prometheus sink in the image's config)"
  fi
  [[ $(podman inspect -f '{{.Config.Healthcheck.Test}}' "$NAME") == *--healthcheck* ]] ||
    die "the container has no HEALTHCHECK"
  for ((i = 0; i < 10; i++)); do
    pm healthcheck run "$NAME" >/dev/null 2>&1 && break
    sleep 1
  done
  pm healthcheck run "$NAME" >/dev/null || die "podman healthcheck run $NAME: unhealthy"
  log "ok: HEALTHCHECK healthy"
}

cmd_smoke() {
  local t0 t
  t0=$(now)
  t=$(now); cmd_setup; local t_setup; t_setup=$(since "$t")
  t=$(now); cmd_build; local t_build; t_build=$(since "$t")
  t=$(now); cmd_run; local t_run; t_run=$(since "$t")
  cmd_check
  t=$(now); cmd_stop; local t_stop; t_stop=$(since "$t")
  log "smoke passed: setup ${t_setup} s, build ${t_build} s, run ${t_run} s, stop ${t_stop} s, total $(since "$t0") s"
}

# ---- docker CLI through podman's API -----------------------------------------------------

cmd_service() {
  need_podman
  local pidfile=$CLAB_RUN/podman-service.pid sock=$CLAB_RUN/podman.sock
  if [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    log "podman service already running (pid $(cat "$pidfile"))"
  else
    rm -f "$sock"
    nohup podman system service --time=0 "unix://$sock" >"$CLAB_RUN/podman-service.log" 2>&1 &
    echo $! >"$pidfile"
    local i
    for ((i = 0; i < 50; i++)); do [[ -S $sock ]] && break; sleep 0.1; done
    [[ -S $sock ]] || die "podman system service did not create $sock (log: $CLAB_RUN/podman-service.log)"
    log "podman service started (pid $(cat "$pidfile"))"
  fi
  echo "export DOCKER_HOST=unix://$sock"
}

cmd_service_stop() {
  local pidfile=$CLAB_RUN/podman-service.pid
  if [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    kill "$(cat "$pidfile")"
    log "podman service stopped"
  fi
  rm -f "$pidfile" "$CLAB_RUN/podman.sock"
}

cmd_env() {
  printf 'export CONTAINERS_STORAGE_CONF=%q CONTAINERS_CONF=%q\n' "$CONTAINERS_STORAGE_CONF" "$CONTAINERS_CONF"
}

cmd_clean() {
  command -v podman >/dev/null || { log "podman is not installed; nothing to clean"; return 0; }
  if [[ ${1:-} == --all ]]; then
    cmd_service_stop
    if [[ -d $CLAB/storage ]]; then
      podman system reset -f >/dev/null 2>&1 || true
    fi
    unmount_under "$CLAB"
    rm -rf "$CLAB" "$CLAB_RUN"
    log "removed $CLAB and $CLAB_RUN"
    return 0
  fi
  remove_container
  if podman image exists "$IMAGE"; then podman rmi -f "$IMAGE" >/dev/null; log "removed $IMAGE"; fi
  # Dangling layers of earlier builds only (prune -a would delete the base images).
  podman image prune -f >/dev/null
}

write_config
case ${1:-} in
  setup) cmd_setup ;;
  build) cmd_build ;;
  run) shift; cmd_run "$@" ;;
  check) cmd_check ;;
  stop) cmd_stop ;;
  smoke) cmd_smoke ;;
  service) cmd_service ;;
  service-stop) cmd_service_stop ;;
  env) cmd_env ;;
  clean) shift; cmd_clean "$@" ;;
  *) sed -n '2,22p' "$0" >&2; exit 2 ;;
esac
