#!/usr/bin/env bash
#
# scripts/bench-rest.sh [DOMAINS] — the agent's memory and /api/v1.0/stats/ latency with
# DOMAINS (default 22) domains and a full 60-sample history, without libvirtd: the agent
# reads libvirt's in-process test driver (test:///<file> with DOMAINS running domains,
# 2 vCPUs, one disk, one interface each). The test driver reports fewer statistics than
# QEMU (samples of about half the size), so figures compare builds with each other;
# scripts/bench.sh measures on real guests.
#
#   bash scripts/bench-rest.sh 22
#   BENCH_BIN=target/release/vadvisor BENCH_ENV='MALLOC_ARENA_MAX=2' bash scripts/bench-rest.sh
#
# Prints: body size, RSS with the full history (no request served yet), latency of
# /api/v1.0/stats/ (median, p99 of BENCH_REQUESTS requests 0.37 s apart on one kept-alive
# connection, landing at every point of the 1 s tick), 200 concurrent clients for 10 s
# (wrk) and RSS 2 s after that load.
set -euo pipefail
cd "$(dirname "$0")/.."

DOMAINS="${1:-22}"
REQUESTS="${BENCH_REQUESTS:-60}"
BIN="${BENCH_BIN:-target/release/vadvisor}"
[ -x "$BIN" ] || cargo build --release --bin vadvisor
command -v wrk >/dev/null || { echo "bench-rest: wrk is missing" >&2; exit 2; }

work="$(mktemp -d)"
pid=
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

python3 - "$DOMAINS" "$work" >"$work/node.xml" <<'EOF'
import sys
n, work = int(sys.argv[1]), sys.argv[2]
print("<node>")
for d in range(n):
    print(f"""<domain type='test'><name>bench-{d:02d}</name>
<uuid>6695eb01-f6a4-8304-79aa-97f2502e{d:04x}</uuid>
<memory>196608</memory><currentMemory>196608</currentMemory><vcpu>2</vcpu>
<os><type arch='x86_64'>hvm</type></os><devices>
<disk type='file' device='disk'><source file='{work}/disk{d}.img'/><target dev='vda' bus='virtio'/></disk>
<interface type='network'><mac address='52:54:00:00:{d // 256:02x}:{d % 256:02x}'/><source network='default'/><target dev='vnet{d}'/></interface>
</devices></domain>""")
print("</node>")
EOF
# shellcheck source=scripts/lib/agent-run.sh
. scripts/lib/agent-run.sh
port="$(free_port)"
"$BIN" --print-default-config |
	sed -e "s|^  uri: .*|  uri: test://$work/node.xml|" \
		-e "s|^  listen: .*|  listen: 127.0.0.1:$port|" \
		-e "s|path: /var/lib/vadvisor/events.db|path: $work/events.db|" >"$work/config.yaml"
grep -q "test://$work/node.xml" "$work/config.yaml" || { echo "bench-rest: could not set the URI" >&2; exit 2; }
# shellcheck disable=SC2086
env ${BENCH_ENV:-} VADVISOR_LOG=warn "$BIN" --config "$work/config.yaml" >/dev/null 2>"$work/agent.log" &
pid=$!
base="http://127.0.0.1:$port"
for _ in $(seq 50); do curl -fs "$base/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fs "$base/healthz" >/dev/null || { cat "$work/agent.log" >&2; exit 1; }

rss() { awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status"; }
echo "bench-rest: $DOMAINS domains; waiting 65 s for a full history" >&2
sleep 65
rss_idle="$(rss)"
latency() {
	python3 - "$1" "$REQUESTS" <<'EOF'
import http.client, statistics, sys, time, urllib.parse
url, n = urllib.parse.urlsplit(sys.argv[1]), int(sys.argv[2])
conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
took, size = [], 0
for _ in range(n):
    t = time.perf_counter()
    conn.request("GET", url.path)
    r = conn.getresponse()
    size = len(r.read())
    took.append((time.perf_counter() - t) * 1000)
    time.sleep(0.37)
took.sort()
p99 = took[min(len(took) - 1, int(round(0.99 * len(took) + 0.5)) - 1)]
print(f"{statistics.median(took):.2f} {p99:.2f} {size}")
EOF
}
read -r med p99 size < <(latency "$base/api/v1.0/stats/")
wrk -c200 -t2 -d10s "$base/api/v1.0/stats/" >"$work/wrk.txt" 2>&1 || true
rps="$(awk '/Requests\/sec/ { print $2 }' "$work/wrk.txt")"
sleep 2
rss_load="$(rss)"
samples="$(curl -s "$base/api/v1.0/stats/" | python3 -c 'import json,sys; v=json.load(sys.stdin); print(min(len(s) for s in v.values()) if v else 0)')"
printf 'vadvisor bench-rest: %s domains (test driver), %s samples each\n' "$DOMAINS" "$samples"
printf '  %-44s %s bytes\n' "/api/v1.0/stats/ body" "$size"
printf '  %-44s %s MiB / %s MiB\n' "RSS full history / after 200 clients" "$rss_idle" "$rss_load"
printf '  %-44s %s ms / %s ms\n' "/api/v1.0/stats/ median / p99" "$med" "$p99"
printf '  %-44s %s requests/s\n' "/api/v1.0/stats/ with 200 clients (wrk)" "$rps"
