#!/usr/bin/env bash
#
# scripts/load-test.sh — load on loopback: 200 concurrent connections on /metrics, then on
# /api/v1.0/stats/, for 30 s each, against the release agent watching the lab (run as
# root on the lab machine; a benchmark that prints figures, not a timed test).
#
#   bash scripts/load-test.sh
#   LOAD_SECONDS=10 bash scripts/load-test.sh         duration of each wrk run (default 30)
#   LOAD_CONNECTIONS=200 LOAD_THREADS=2                wrk -c / -t (defaults 200 and 2)
#   LOAD_WRK_TIMEOUT=30s                               wrk --timeout (default 30s, see below)
#   LOAD_SKIP_BUILD=1 bash scripts/load-test.sh       use target/release/vadvisor as is
#
# Starts the agent (cpu, memory, block, net and events collectors; rest, prometheus and
# events sinks, the event history in a temporary SQLite file) on a free loopback port,
# waits until every running lab guest has samples, then runs
# `wrk -t2 -c200 -d30s --latency` on each endpoint — on /api/v1.0/stats/ once the REST
# history is full (60 samples per domain, the steady state: the largest responses) —
# and prints, per endpoint: requests/s,
# p50/p99 latency, responses that were not 2xx/3xx and socket errors; plus the agent's
# RSS before, after each run and its peak (VmHWM); and, as a side figure, how long
# `GET /healthz` (a tiny response) takes while wrk runs (curl every 0.5 s: median, max),
# which shows whether one busy endpoint holds up the others.
#
# Exit status: 1 if any request failed (a non-2xx/3xx response, or a connect/read/write
# socket error) or the agent died; 2 on a setup error; 0 otherwise — slowness never
# fails it. wrk counts a request that takes longer than --timeout as a "timeout" socket
# error and leaves it out of the latency figures; wrk's default of 2 s would turn a slow
# agent into errors and hide the slow requests from p99, so the timeout here is 30 s and
# timeouts are reported (as slowness) without failing the run.
#
# Needs wrk, curl and python3 (`bash scripts/install-test-peers.sh`) and the lab
# (`bash scripts/lab.sh up`; started here with its default size if no guest runs).

set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN="${LOAD_SECONDS:-30}"
CONNECTIONS="${LOAD_CONNECTIONS:-200}"
THREADS="${LOAD_THREADS:-2}"
WRK_TIMEOUT="${LOAD_WRK_TIMEOUT:-30s}"
LAB_URI="${LAB_URI:-qemu:///system}"
PATHS=(/metrics /api/v1.0/stats/)

log() { printf 'load: %s\n' "$*" >&2; }
die() {
	printf 'load: error: %s\n' "$*" >&2
	exit 2
}

command -v wrk >/dev/null || die "wrk is missing: run bash scripts/install-test-peers.sh"
command -v curl >/dev/null || die "curl is missing"
command -v python3 >/dev/null || die "python3 is missing"
[[ "$SECONDS_PER_RUN" =~ ^[1-9][0-9]*$ ]] || die "LOAD_SECONDS must be a positive number of seconds"
[[ "$CONNECTIONS" =~ ^[1-9][0-9]*$ ]] || die "LOAD_CONNECTIONS must be a positive number"

# wrk and the agent each hold one descriptor per connection, plus their own.
need_fds=$((CONNECTIONS + 256))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need_fds" ]; then
	ulimit -n "$need_fds" 2>/dev/null || die "ulimit -n is $(ulimit -n); $CONNECTIONS connections need $need_fds"
fi
log "ulimit -n: $(ulimit -n)"

# ---------------------------------------------------------------- lab
running_guests() {
	virsh -q -c "$LAB_URI" list --name --state-running 2>/dev/null | grep -c '^vadv-lab-' || true
}
guests="$(running_guests)"
if [ "$guests" -lt 1 ]; then
	log "no lab guest runs; starting the lab"
	bash scripts/lab.sh up || die "scripts/lab.sh up failed"
	guests="$(running_guests)"
fi
[ "$guests" -ge 1 ] || die "no lab guest runs"
log "$guests lab guests running"

# ---------------------------------------------------------------- build
BIN=target/release/vadvisor
if [ "${LOAD_SKIP_BUILD:-0}" = 1 ]; then
	[ -x "$BIN" ] || die "$BIN is missing (unset LOAD_SKIP_BUILD to build it)"
	log "using $BIN as built"
else
	log "cargo build --release"
	cargo build --release --quiet --bin vadvisor || die "release build failed"
fi

# ---------------------------------------------------------------- agent
TMP="$(mktemp -d)"
PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
BASE="http://127.0.0.1:$PORT"
cat >"$TMP/agent.yaml" <<EOF
libvirt:
  uri: $LAB_URI
http:
  listen: 127.0.0.1:$PORT
collectors:
  cpu: {interval: 1s}
  memory: {interval: 1s}
  block: {interval: 1s}
  net: {interval: 1s}
  events: {}
sinks:
  rest: {}
  prometheus: {}
  events:
    path: $TMP/events.db
EOF
"$BIN" --config "$TMP/agent.yaml" >"$TMP/agent.log" 2>&1 &
AGENT_PID=$!
cleanup() {
	[ -z "${PROBE_PID:-}" ] || kill "$PROBE_PID" 2>/dev/null || true
	kill "$AGENT_PID" 2>/dev/null || true
	wait "$AGENT_PID" 2>/dev/null || true
	rm -rf "$TMP"
}
trap cleanup EXIT

for _ in $(seq 200); do
	curl -fs -o /dev/null "$BASE/healthz" && break
	kill -0 "$AGENT_PID" 2>/dev/null || {
		cat "$TMP/agent.log" >&2
		die "the agent exited"
	}
	sleep 0.1
done
curl -fs -o /dev/null "$BASE/healthz" || die "the agent does not answer on port $PORT"
log "agent pid $AGENT_PID on 127.0.0.1:$PORT; waiting for samples of all $guests guests"

# Data: every running guest has at least 2 samples in the REST history and is in /metrics.
ready=0
for _ in $(seq 60); do
	have="$(curl -fs "$BASE/api/v1.0/stats/" | python3 -c 'import json, sys
d = json.load(sys.stdin)
print(sum(1 for v in d.values() if len(v) >= 2))' 2>/dev/null || echo 0)"
	vms="$(curl -fs "$BASE/metrics" | grep -c '^vm_up{' || true)"
	if [ "$have" -ge "$guests" ] && [ "$vms" -ge "$guests" ]; then
		ready=1
		break
	fi
	sleep 1
done
[ "$ready" = 1 ] || die "no samples of all $guests guests within 60 s (stats: $have, /metrics: $vms)"

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$AGENT_PID/status"; }
hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$AGENT_PID/status"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
# wrk latency ("812.00us", "1.63ms", "2.01s") → milliseconds.
to_ms() {
	awk -v v="$1" 'BEGIN {
		if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
		else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
		else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.3f", v * 60000 }
		else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
		else printf "%s", v }'
}

rss_start="$(rss_kib)"
fail=0
declare -a report
# Samples per domain in the REST history: the lowest over all domains.
min_samples() {
	curl -fs "$BASE/api/v1.0/stats/" | python3 -c 'import json, sys
d = json.load(sys.stdin)
print(min((len(v) for v in d.values()), default=0))' 2>/dev/null || echo 0
}
for path in "${PATHS[@]}"; do
	url="$BASE$path"
	if [ "$path" = /api/v1.0/stats/ ]; then
		# The steady state: the history is full (rest's default max_samples, 60 one-second
		# samples per domain) — a response is then as large as it gets.
		for _ in $(seq 90); do
			[ "$(min_samples)" -ge 60 ] && break
			sleep 1
		done
		log "samples per domain in the REST history: $(min_samples)"
	fi
	size="$(curl -fs "$url" | wc -c)"
	log "wrk -t$THREADS -c$CONNECTIONS -d${SECONDS_PER_RUN}s --latency --timeout $WRK_TIMEOUT $path ($size bytes per response)"
	before="$(rss_kib)"
	: >"$TMP/probe.txt"
	(
		while :; do
			curl -s -o /dev/null -m 60 -w '%{time_total}\n' "$BASE/healthz" >>"$TMP/probe.txt" || true
			sleep 0.5
		done
	) &
	PROBE_PID=$!
	out="$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" --latency --timeout "$WRK_TIMEOUT" "$url" 2>&1)" || {
		printf '%s\n' "$out" >&2
		die "wrk failed on $path"
	}
	kill "$PROBE_PID" 2>/dev/null || true
	wait "$PROBE_PID" 2>/dev/null || true
	read -r probe_n probe_median probe_max < <(sort -g "$TMP/probe.txt" | awk '{ v[NR] = $1 * 1000 } END {
		n = NR; if (n == 0) { print 0, "-", "-"; exit }
		m = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
		printf "%d %.1f %.1f\n", n, m, v[n] }')
	printf '%s\n' "$out" | sed 's/^/  wrk| /' >&2
	kill -0 "$AGENT_PID" 2>/dev/null || {
		cat "$TMP/agent.log" >&2
		echo "RESULT: FAIL (the agent died under load on $path)"
		exit 1
	}
	after="$(rss_kib)"
	requests="$(awk '/requests in/ { print $1 }' <<<"$out")"
	rps="$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")"
	p50="$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")"
	p99="$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")"
	non2xx="$(awk -F: '/Non-2xx or 3xx responses/ { gsub(/ /, "", $2); print $2 }' <<<"$out")"
	# "Socket errors: connect 0, read 0, write 0, timeout 0" (printed only when non-zero).
	connect=0 rerr=0 werr=0 timeout=0
	read -r connect rerr werr timeout < <(awk '/Socket errors/ {
		gsub(/,/, ""); print $4, $6, $8, $10 }' <<<"$out") || true
	non2xx="${non2xx:-0}" connect="${connect:-0}" rerr="${rerr:-0}" werr="${werr:-0}" timeout="${timeout:-0}"
	errors=$((non2xx + connect + rerr + werr))
	[ "$errors" -eq 0 ] || fail=1
	report+=("$(printf '  %-18s %10s req/s  p50 %9s ms  p99 %9s ms  requests %8s (%s bytes each)\n  %-18s non-2xx %s  socket errors: connect %s read %s write %s  timeouts %s  RSS %s -> %s MiB\n  %-18s GET /healthz meanwhile: median %s ms, max %s ms (%s probes)' \
		"$path" "${rps:-0}" "$p50" "$p99" "${requests:-0}" "$size" "" "$non2xx" "$connect" "$rerr" "$werr" "$timeout" \
		"$(mib "$before")" "$(mib "$after")" "" "$probe_median" "$probe_max" "$probe_n")")
done

health="$(curl -fs -o /dev/null -w '%{http_code}' "$BASE/healthz" || echo 000)"
[ "$health" = 200 ] || fail=1
echo
echo "vadvisor load test: $guests lab guests, wrk -t$THREADS -c$CONNECTIONS -d${SECONDS_PER_RUN}s --timeout $WRK_TIMEOUT, $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%s\n' "${report[@]}"
echo "  agent RSS: $(mib "$rss_start") MiB before, $(mib "$(rss_kib)") MiB after, peak (VmHWM) $(mib "$(hwm_kib)") MiB; /healthz after the load: $health"
if [ "$fail" = 0 ]; then echo "RESULT: PASS (no failed request)"; else echo "RESULT: FAIL (failed requests, see above)"; fi
exit "$fail"
