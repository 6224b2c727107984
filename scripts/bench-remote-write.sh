#!/usr/bin/env bash
#
# scripts/bench-remote-write.sh — benchmark of the remote_write sink next to Prometheus'
# own remote write of the same series (run as root on the lab machine; not a timed test).
#
#   bash scripts/bench-remote-write.sh                      running lab guests, 10-min outage
#   BENCH_OUTAGE=120 bash scripts/bench-remote-write.sh     a shorter receiver outage
#   BENCH_SKIP_BUILD=1 bash scripts/bench-remote-write.sh   use target/release/vadvisor as is
#   BENCH_BIN=target/debug/vadvisor ...                     another build (figures say which)
#   BENCH_STEADY=60 (steady-state window, s)   BENCH_GUESTS=N (bring the lab up to N guests)
#
# Starts, on free loopback ports:
#   rx-agent, rx-prom   two Prometheus remote-write receivers (--web.enable-remote-write-receiver);
#   agent-rw            vadvisor (cpu, memory, block, net at 1 s) with a remote_write sink
#                       to rx-agent (disk buffer, default queue_config);
#   agent-base          the same agent without remote_write: the CPU baseline, and the
#                       target of
#   prom                a Prometheus scraping agent-base every 1 s with remote_write to
#                       rx-prom (Prometheus' default queue_config): the same series sent
#                       the Prometheus way (plus its up/scrape_* series).
# Measures over a steady window: samples/s sent, bytes on the wire per sample (compressed
# request bodies), agent CPU per 1,000 samples (agent-rw minus agent-base: the sink's own
# cost; and agent-rw in total). Then both receivers are stopped for BENCH_OUTAGE seconds
# (default 600) and restarted, and it measures the catch-up: time until nothing is left
# unsent (the oldest unsent sample at most 7 s old, i.e. one batch_send_deadline + 2 s,
# for both), samples/s while catching up (what one sink sustains) and CPU per 1,000 samples
# then, and whether anything was dropped. Prints a table. Needs curl, python3 and
# /usr/bin/prometheus (`bash scripts/install-test-peers.sh`).

set -euo pipefail
cd "$(dirname "$0")/.."

OUTAGE="${BENCH_OUTAGE:-600}"
STEADY="${BENCH_STEADY:-60}"
GUESTS="${BENCH_GUESTS:-0}"
LAB_URI="${LAB_URI:-qemu:///system}"
PROM=/usr/bin/prometheus
HZ="$(getconf CLK_TCK)"

log() { printf 'bench-rw: %s\n' "$*" >&2; }
die() {
	printf 'bench-rw: error: %s\n' "$*" >&2
	exit 2
}

command -v curl >/dev/null || die "curl is missing"
command -v python3 >/dev/null || die "python3 is missing"
[ -x "$PROM" ] || die "$PROM is missing: run bash scripts/install-test-peers.sh"

running_guests() {
	virsh -q -c "$LAB_URI" list --name --state-running 2>/dev/null | grep -c '^vadv-lab-' || true
}
if [ "$GUESTS" -gt 0 ] && [ "$(running_guests)" -lt "$GUESTS" ]; then
	bash scripts/lab.sh up "$GUESTS" || die "scripts/lab.sh up $GUESTS failed"
fi
NGUESTS="$(running_guests)"
[ "$NGUESTS" -ge 1 ] || die "no lab guest runs: scripts/lab.sh up"
# The agent reports every running domain, lab guest or not.
NDOMAINS="$(virsh -q -c "$LAB_URI" list --name --state-running 2>/dev/null | grep -c . || true)"
log "$NGUESTS lab guests running ($NDOMAINS domains in all)"

BIN="${BENCH_BIN:-target/release/vadvisor}"
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ] && [ -z "${BENCH_BIN:-}" ]; then
	log "building the release binary"
	cargo build --release --locked --bin vadvisor >&2 || die "cargo build --release failed"
fi
[ -x "$BIN" ] || die "$BIN is missing"

WORK="$(mktemp -d /tmp/bench-rw.XXXXXX)"
PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT

# shellcheck source=scripts/lib/agent-run.sh
. scripts/lib/agent-run.sh

# The sum of every sample of family $2 (any labels) in the exposition at URL $1.
metric() {
	curl -fsS --max-time 5 "$1" 2>/dev/null | awk -v n="$2" '
		$1 == n || index($1, n "{") == 1 { s += $NF } END { printf "%.6f\n", s + 0 }'
}
cpu_seconds() { awk -v hz="$HZ" '{ sub(/.*\) /, ""); print ($12 + $13) / hz }' "/proc/$1/stat"; }
now() { date +%s.%N; }
calc() { python3 -c "print(f'{($1):.${2:-2}f}')"; }

# ---------------------------------------------------------------- receivers
start_receiver() { # name port
	local dir="$WORK/$1"
	mkdir -p "$dir"
	printf 'global:\n  evaluation_interval: 1m\nscrape_configs: []\n' >"$dir/prometheus.yml"
	"$PROM" --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
		--web.listen-address="127.0.0.1:$2" --web.enable-remote-write-receiver \
		--log.level=error >"$dir/log" 2>&1 &
	echo $!
}
wait_ready() { # url [path]
	local i
	for i in $(seq 1 120); do
		curl -fsS --max-time 2 "$1${2:-/-/ready}" >/dev/null 2>&1 && return 0
		sleep 0.5
	done
	die "$1 did not become ready"
}

RXA_PORT="$(free_port)"
RXP_PORT="$(free_port)"
RXA_PID="$(start_receiver rx-agent "$RXA_PORT")"
RXP_PID="$(start_receiver rx-prom "$RXP_PORT")"
PIDS+=("$RXA_PID" "$RXP_PID")
wait_ready "http://127.0.0.1:$RXA_PORT"
wait_ready "http://127.0.0.1:$RXP_PORT"

# ---------------------------------------------------------------- agents
agent_config() { # port [remote_write url]
	printf 'libvirt:\n  uri: %s\nhttp:\n  listen: 127.0.0.1:%s\ncollectors:\n' "$LAB_URI" "$1"
	local c
	for c in cpu memory block net; do printf '  %s:\n    interval: 1s\n' "$c"; done
	printf 'sinks:\n  prometheus: {}\n'
	if [ -n "${2:-}" ]; then
		printf '  remote_write:\n    url: %s\n    external_labels: {host: bench}\n' "$2"
		printf '    buffer: {type: disk, path: %s, max_size: 2GiB}\n' "$WORK/buffer"
	fi
}
RW_PORT="$(free_port)"
BASE_PORT="$(free_port)"
agent_config "$RW_PORT" "http://127.0.0.1:$RXA_PORT/api/v1/write" >"$WORK/agent-rw.yaml"
agent_config "$BASE_PORT" >"$WORK/agent-base.yaml"
VADVISOR_LOG=warn "$BIN" --config "$WORK/agent-rw.yaml" >"$WORK/agent-rw.log" 2>&1 &
RW_PID=$!
VADVISOR_LOG=warn "$BIN" --config "$WORK/agent-base.yaml" >"$WORK/agent-base.log" 2>&1 &
BASE_PID=$!
PIDS+=("$RW_PID" "$BASE_PID")
AGENT="http://127.0.0.1:$RW_PORT/metrics"
wait_ready "http://127.0.0.1:$RW_PORT" /healthz
wait_ready "http://127.0.0.1:$BASE_PORT" /healthz

# ---------------------------------------------------------------- prometheus' own remote write
PROM_PORT="$(free_port)"
mkdir -p "$WORK/prom"
cat >"$WORK/prom/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1m
scrape_configs:
  - job_name: vadvisor
    static_configs: [{targets: ['127.0.0.1:$BASE_PORT']}]
remote_write:
  - url: http://127.0.0.1:$RXP_PORT/api/v1/write
YAML
"$PROM" --config.file="$WORK/prom/prometheus.yml" --storage.tsdb.path="$WORK/prom/data" \
	--web.listen-address="127.0.0.1:$PROM_PORT" --log.level=error >"$WORK/prom/log" 2>&1 &
PROM_PID=$!
PIDS+=("$PROM_PID")
PROMM="http://127.0.0.1:$PROM_PORT/metrics"
wait_ready "http://127.0.0.1:$PROM_PORT"

log "warming up 20 s"
sleep 20

# ---------------------------------------------------------------- steady state
snapshot() { # prefix
	eval "$1_t=$(now)"
	eval "$1_sent=$(metric "$AGENT" vadvisor_remote_write_samples_sent_total)"
	eval "$1_bytes=$(metric "$AGENT" vadvisor_remote_write_sent_bytes_total)"
	eval "$1_cpu=$(cpu_seconds "$RW_PID")"
	eval "$1_base=$(cpu_seconds "$BASE_PID")"
	eval "$1_psent=$(metric "$PROMM" prometheus_remote_storage_samples_total)"
	eval "$1_pbytes=$(metric "$PROMM" prometheus_remote_storage_bytes_total)"
	eval "$1_pcpu=$(cpu_seconds "$PROM_PID")"
}
log "steady state: ${STEADY} s"
snapshot s0
sleep "$STEADY"
snapshot s1
# shellcheck disable=SC2154 # set by snapshot via eval
{
	dt="$(calc "$s1_t - $s0_t" 3)"
	rate="$(calc "($s1_sent - $s0_sent) / $dt" 0)"
	bps="$(calc "($s1_bytes - $s0_bytes) / max(1, $s1_sent - $s0_sent)" 2)"
	cpu_k="$(calc "(($s1_cpu - $s0_cpu) - ($s1_base - $s0_base)) / max(1, $s1_sent - $s0_sent) * 1000 * 1000" 3)"
	cpu_all_k="$(calc "($s1_cpu - $s0_cpu) / max(1, $s1_sent - $s0_sent) * 1000 * 1000" 3)"
	prate="$(calc "($s1_psent - $s0_psent) / $dt" 0)"
	pbps="$(calc "($s1_pbytes - $s0_pbytes) / max(1, $s1_psent - $s0_psent)" 2)"
	pcpu_k="$(calc "($s1_pcpu - $s0_pcpu) / max(1, $s1_psent - $s0_psent) * 1000 * 1000" 3)"
}

# ---------------------------------------------------------------- outage and catch-up
log "stopping both receivers for ${OUTAGE} s"
kill "$RXA_PID" "$RXP_PID"
wait "$RXA_PID" "$RXP_PID" 2>/dev/null || true
sleep "$OUTAGE"
backlog="$(metric "$AGENT" vadvisor_remote_write_buffer_samples)"
buffer_bytes="$(metric "$AGENT" vadvisor_remote_write_buffer_bytes)"
rss_kib="$(awk '/^VmRSS:/ {print $2}' "/proc/$RW_PID/status")"
snapshot c0
RXA_PID="$(start_receiver rx-agent "$RXA_PORT")"
RXP_PID="$(start_receiver rx-prom "$RXP_PORT")"
PIDS+=("$RXA_PID" "$RXP_PID")
log "receivers back; backlog ${backlog%.*} samples in the agent's buffer (${buffer_bytes%.*} bytes)"
agent_done=""
prom_done=""
deadline=$(($(date +%s) + 1800))
while [ -z "$agent_done" ] || [ -z "$prom_done" ]; do
	[ "$(date +%s)" -lt "$deadline" ] || die "no catch-up within 30 min"
	# Caught up: the oldest unsent sample is no older than one batch_send_deadline (5 s) + 2 s.
	age="$(metric "$AGENT" vadvisor_remote_write_oldest_unsent_sample_age_seconds)"
	if [ -z "$agent_done" ] && python3 -c "import sys; sys.exit(0 if $age <= 7 else 1)"; then
		agent_done="$(now)"
		snapshot a1
	fi
	if [ -z "$prom_done" ]; then
		lag="$(calc "$(metric "$PROMM" prometheus_remote_storage_highest_timestamp_in_seconds) - $(metric "$PROMM" prometheus_remote_storage_queue_highest_sent_timestamp_seconds)" 1)"
		if python3 -c "import sys; sys.exit(0 if $lag <= 7 else 1)"; then
			prom_done="$(now)"
			snapshot p1
		fi
	fi
	sleep 0.5
done
# shellcheck disable=SC2154 # set by snapshot via eval
{
	catch="$(calc "$agent_done - $c0_t" 1)"
	crate="$(calc "($a1_sent - $c0_sent) / max(0.001, $a1_t - $c0_t)" 0)"
	ccpu_k="$(calc "(($a1_cpu - $c0_cpu) - ($a1_base - $c0_base)) / max(1, $a1_sent - $c0_sent) * 1000 * 1000" 3)"
	cbps="$(calc "($a1_bytes - $c0_bytes) / max(1, $a1_sent - $c0_sent)" 2)"
	pcatch="$(calc "$prom_done - $c0_t" 1)"
	pcrate="$(calc "($p1_psent - $c0_psent) / max(0.001, $p1_t - $c0_t)" 0)"
	pccpu_k="$(calc "($p1_pcpu - $c0_pcpu) / max(1, $p1_psent - $c0_psent) * 1000 * 1000" 3)"
}
dropped="$(metric "$AGENT" vadvisor_remote_write_samples_dropped_total)"
pdropped="$(metric "$PROMM" prometheus_remote_storage_samples_dropped_total)"
pfailed="$(metric "$PROMM" prometheus_remote_storage_samples_failed_total)"
per_guest="$(calc "$rate / max(1, $NDOMAINS)" 0)"
backlog22="$(calc "600 * $per_guest * 22" 0)"
catch22="$(calc "600 * $per_guest * 22 / max(1, $crate)" 0)"

cat <<TABLE

remote-write benchmark: $NDOMAINS running domains, collectors at 1 s, receiver outage ${OUTAGE} s, agent $BIN
(CPU in ms; "sink" = agent-rw minus agent-base; Prometheus' CPU includes its scraping and TSDB)

| figure                                   | vadvisor remote_write | Prometheus remote_write |
|------------------------------------------|-----------------------|-------------------------|
| samples/s sent (steady)                  | $rate | $prate |
| bytes on the wire per sample (steady)    | $bps | $pbps |
| CPU ms per 1,000 samples (steady)        | $cpu_k (sink), $cpu_all_k (whole agent) | $pcpu_k (whole process) |
| backlog after the outage (samples)       | ${backlog%.*} (buffer ${buffer_bytes%.*} B on disk, agent RSS ${rss_kib} KiB) | — |
| catch-up time after the outage (s)       | $catch | $pcatch |
| samples/s while catching up (sustained)  | $crate | $pcrate |
| CPU ms per 1,000 samples (catching up)   | $ccpu_k (sink) | $pccpu_k (whole process) |
| bytes per sample (catching up)           | $cbps | — |
| samples dropped                          | ${dropped%.*} | ${pdropped%.*} dropped, ${pfailed%.*} failed |

per domain: $per_guest samples/s; at 22 domains a 10-minute outage leaves ~$backlog22 samples,
which the sink drains in ~$catch22 s at the catch-up rate measured here.
TABLE
