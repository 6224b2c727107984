#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian 12 machine (as root): installs what the
# build and the tests need, starts the lab (a real libvirtd with QEMU guests), checks
# formatting and lints, then runs every test including the lab tests.
#
#   scripts/test.sh            everything
#   LAB_GUESTS=3 scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s ==\n' "$*" >&2; }

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
guests=${LAB_GUESTS:-3}

log "dependencies and lab ($guests guests)"
bash scripts/lab.sh up "$guests"

log "cargo fmt --check"
cargo fmt --all --check

log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "cargo test (including the lab tests)"
VADVISOR_LAB=1 cargo test --workspace --locked -- --include-ignored
