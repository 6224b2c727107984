#!/usr/bin/env bash
#
# scripts/measure-footprint.sh — the agent's steady memory and CPU use on this host, the
# figures behind the resource requests/limits in deploy/kubernetes/daemonset.yaml and
# deploy/systemd/vadvisor.service (docs/deploy.md, "Resources").
#
#   scripts/measure-footprint.sh [BINARY] [SECONDS]
#
# Runs BINARY (default target/release/vadvisor) with the built-in default config (1 s
# collection, REST + events + Prometheus sinks) on a free loopback port, with its events
# database in a temp dir, for SECONDS (default 120) while it is scraped like in
# production: GET /metrics every 15 s (a Prometheus) and GET /api/v1.0/stats/ every 5 s
# (a dashboard). Prints the guest count, RSS (after warm-up, at the end, peak) and the
# average CPU in millicores. Needs libvirtd with running guests (scripts/lab.sh up).
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${1:-target/release/vadvisor}
secs=${2:-120}
warmup=15
[ -x "$bin" ] || { echo "measure-footprint: $bin is not built (cargo build --release)" >&2; exit 1; }

dir=$(mktemp -d)
pid=
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$dir"
}
trap cleanup EXIT

# shellcheck source=scripts/lib/agent-run.sh
. scripts/lib/agent-run.sh
port=$(free_port)
"$bin" --print-default-config |
	sed -e "s|^  listen: .*|  listen: 127.0.0.1:$port|" -e "s|path: /var/lib/vadvisor/events.db|path: $dir/events.db|" >"$dir/config.yaml"
VADVISOR_LOG=warn "$bin" --config "$dir/config.yaml" >/dev/null 2>"$dir/log" &
pid=$!
base="http://127.0.0.1:$port"
for _ in $(seq 50); do curl -fs "$base/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fs "$base/healthz" >/dev/null || { cat "$dir/log" >&2; exit 1; }

hz=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$pid/status"; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$pid/status"; }

sleep "$warmup"
guests=$(curl -fs "$base/api/v1.0/stats/" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
rss_start=$(rss_kib)
t0=$(date +%s.%N)
c0=$(cpu_ticks)
for i in $(seq "$secs"); do
	[ $((i % 15)) = 0 ] && curl -fs -H 'Accept: application/openmetrics-text;version=1.0.0' "$base/metrics" >/dev/null
	[ $((i % 5)) = 0 ] && curl -fs --compressed "$base/api/v1.0/stats/" >/dev/null
	sleep 1
done
c1=$(cpu_ticks)
t1=$(date +%s.%N)
rss_end=$(rss_kib)
hwm=$(hwm_kib)
python3 - "$guests" "$secs" "$rss_start" "$rss_end" "$hwm" "$c0" "$c1" "$t0" "$t1" "$hz" "$bin" <<'PY'
import sys
guests, secs, rs, re_, hwm, c0, c1, t0, t1, hz, binary = sys.argv[1:]
cpu = (int(c1) - int(c0)) / int(hz) / (float(t1) - float(t0))
print(f"binary: {binary}")
print(f"guests: {guests}, measured {secs} s after {15} s warm-up")
print(f"RSS: {int(rs)/1024:.1f} MiB after warm-up, {int(re_)/1024:.1f} MiB at the end, peak {int(hwm)/1024:.1f} MiB")
print(f"CPU: {cpu*1000:.1f} millicores on average ({cpu*100:.2f} % of one core)")
PY
