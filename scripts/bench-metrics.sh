#!/usr/bin/env bash
#
# scripts/bench-metrics.sh — the /metrics benchmark of the prometheus sink (run as root
# on the lab machine; not a timed test).
#
#   bash scripts/bench-metrics.sh            22 lab guests (started if fewer run)
#   BENCH_GUESTS=3 bash scripts/bench-metrics.sh
#   BENCH_SKIP_BUILD=1 bash scripts/bench-metrics.sh   use target/release/vadvisor as is
#
# Brings the lab up to N running guests if fewer run (`scripts/lab.sh up N`), builds the
# release binary, starts the agent (cpu, memory, block, net collectors at 1 s; rest and
# prometheus sinks) on a free loopback port, waits 5 s, then measures:
#   - latency of 50 sequential `GET /metrics` (full response, curl's time_total):
#     median and p99 (nearest rank);
#   - throughput: `wrk -c4 -t2 -d10s` requests/s;
#   - the agent's RSS afterwards.
# and compares them with the targets: median <= 2 ms, p99 <= 5 ms, >= 6000 req/s.
# Prints PASS/FAIL per target; exits 1 if any target fails (2 on a setup error).
# Needs wrk and curl: `bash scripts/install-test-peers.sh`.

set -euo pipefail
cd "$(dirname "$0")/.."

GUESTS="${BENCH_GUESTS:-22}"
REQUESTS=50
TARGET_MEDIAN_MS=2
TARGET_P99_MS=5
TARGET_RPS=6000
LAB_URI="${LAB_URI:-qemu:///system}"

log() { printf 'bench: %s\n' "$*" >&2; }
die() {
	printf 'bench: error: %s\n' "$*" >&2
	exit 2
}

command -v wrk >/dev/null || die "wrk is missing: run bash scripts/install-test-peers.sh"
command -v curl >/dev/null || die "curl is missing"
command -v python3 >/dev/null || die "python3 is missing"

running_guests() {
	virsh -q -c "$LAB_URI" list --name --state-running 2>/dev/null | grep -c '^vadv-lab-' || true
}

# ---------------------------------------------------------------- lab
running="$(running_guests)"
if [ "$running" -lt "$GUESTS" ]; then
	log "$running lab guests run; bringing the lab up to $GUESTS"
	bash scripts/lab.sh up "$GUESTS" || die "scripts/lab.sh up $GUESTS failed"
	running="$(running_guests)"
fi
[ "$running" -ge 1 ] || die "no lab guest runs"
log "$running lab guests running"

# ---------------------------------------------------------------- build
BIN=target/release/vadvisor
if [ "${BENCH_SKIP_BUILD:-0}" = 1 ]; then
	[ -x "$BIN" ] || die "$BIN is missing (unset BENCH_SKIP_BUILD to build it)"
	log "using $BIN as built"
else
	log "cargo build --release"
	cargo build --release --quiet --bin vadvisor || die "release build failed"
fi

# ---------------------------------------------------------------- agent
TMP="$(mktemp -d)"
PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
URL="http://127.0.0.1:$PORT/metrics"
cat >"$TMP/agent.yaml" <<EOF
libvirt:
  uri: $LAB_URI
http:
  listen: 127.0.0.1:$PORT
collectors:
  cpu:
    interval: 1s
  memory:
    interval: 1s
  block:
    interval: 1s
  net:
    interval: 1s
sinks:
  rest: {}
  prometheus: {}
EOF
"$BIN" --config "$TMP/agent.yaml" >"$TMP/agent.log" 2>&1 &
AGENT_PID=$!
cleanup() {
	kill "$AGENT_PID" 2>/dev/null || true
	wait "$AGENT_PID" 2>/dev/null || true
	rm -rf "$TMP"
}
trap cleanup EXIT

for _ in $(seq 100); do
	curl -fs -o /dev/null "http://127.0.0.1:$PORT/healthz" && break
	kill -0 "$AGENT_PID" 2>/dev/null || {
		cat "$TMP/agent.log" >&2
		die "the agent exited"
	}
	sleep 0.1
done
curl -fs -o /dev/null "http://127.0.0.1:$PORT/healthz" || die "the agent does not answer on port $PORT"
log "agent pid $AGENT_PID on 127.0.0.1:$PORT; waiting 5 s"
sleep 5

curl -fs "$URL" >"$TMP/metrics.txt" || die "GET /metrics failed"
vms="$(grep -c '^vm_up{' "$TMP/metrics.txt" || true)"
series="$(grep -vc '^#' "$TMP/metrics.txt" || true)"
bytes="$(wc -c <"$TMP/metrics.txt")"
log "/metrics: $vms VMs, $series series, $bytes bytes"

# ---------------------------------------------------------------- latency
# time_total covers connect, request and the whole body.
latencies() { # [curl options...] URL
	for _ in $(seq "$REQUESTS"); do
		curl -fs -o /dev/null -w '%{time_total}\n' "$@"
	done
}
stats() { # stdin: seconds, one a line → "median_ms p99_ms"
	sort -g | awk '{ v[NR] = $1 * 1000 } END {
		n = NR; m = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
		r = int(0.99 * n); if (r < 0.99 * n) r++; if (r < 1) r = 1
		printf "%.3f %.3f\n", m, v[r] }'
}
read -r median p99 < <(latencies "$URL" | stats)
# For information only: what a Prometheus server asks for (OpenMetrics, gzip), and the
# same measurement of the agent's static index page `/`: the machine's noise floor
# (with the lab's TCG guests busy, scheduling delays hit every request alike).
read -r om_median om_p99 < <(latencies --compressed -H 'Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5' "$URL" | stats)
read -r base_median base_p99 < <(latencies "http://127.0.0.1:$PORT/" | stats)

# ---------------------------------------------------------------- throughput
wrk_out="$(wrk -c4 -t2 -d10s "$URL")"
rps="$(awk '/^Requests\/sec:/ { print $2 }' <<<"$wrk_out")"
errors="$(awk '/Non-2xx|Socket errors/' <<<"$wrk_out")"
rss_kib="$(awk '/^VmRSS:/ { print $2 }' "/proc/$AGENT_PID/status")"

# ---------------------------------------------------------------- report
fail=0
verdict() { # name value op target unit
	local ok
	ok="$(awk -v v="$2" -v t="$4" -v op="$3" 'BEGIN { print (op == "<=" ? v <= t : v >= t) ? "PASS" : "FAIL" }')"
	[ "$ok" = PASS ] || fail=1
	printf '  %-22s %12s %-5s  target %s %s %s\n' "$1" "$2" "$5" "$3" "$4" "$ok"
}
echo
echo "vadvisor /metrics benchmark: $vms VMs, $series series, $bytes bytes per scrape"
echo "  (4 collectors at 1 s, rest + prometheus sinks, $(nproc) CPUs, $REQUESTS sequential requests, wrk -c4 -t2 -d10s)"
verdict "latency median" "$median" "<=" "$TARGET_MEDIAN_MS" ms
verdict "latency p99" "$p99" "<=" "$TARGET_P99_MS" ms
verdict "throughput" "${rps:-0}" ">=" "$TARGET_RPS" req/s
printf '  %-22s %12s %-5s\n' "agent RSS" "$((rss_kib / 1024))" MiB
printf '  %-22s %12s ms   p99 %s ms (OpenMetrics + gzip, as Prometheus asks; info)\n' "latency median" "$om_median" "$om_p99"
printf '  %-22s %12s ms   p99 %s ms (GET / , a static page: noise floor; info)\n' "latency median" "$base_median" "$base_p99"
[ -z "$errors" ] || {
	echo "  wrk reported errors: $errors"
	fail=1
}
[ "$vms" -ge "$GUESTS" ] || echo "  note: only $vms VMs were exported (wanted $GUESTS)"
if [ "$fail" = 0 ]; then echo "RESULT: PASS"; else echo "RESULT: FAIL"; fi
exit "$fail"
