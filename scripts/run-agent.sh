#!/usr/bin/env bash
# Runs the agent on real data: against this host's libvirtd when it answers, otherwise
# against a small local lab (libvirtd + QEMU guests) that this script starts.
#
#   scripts/run-agent.sh [vadvisor flags…]     e.g. scripts/run-agent.sh --port 8181 -v
set -euo pipefail
cd "$(dirname "$0")/.."
uri=${LIBVIRT_URI:-qemu:///system}
if ! virsh -r -c "$uri" version >/dev/null 2>&1; then
  echo "run-agent: no libvirtd answers on $uri; starting the local lab (scripts/lab.sh up)" >&2
  bash scripts/lab.sh up "${LAB_GUESTS:-3}"
else
  bash scripts/lab.sh deps >/dev/null
fi
cargo build --release --locked
echo "run-agent: http://localhost:8181/api/v1.0/stats/ (Ctrl-C stops)" >&2
exec target/release/vadvisor --libvirt-uri "$uri" "$@"
