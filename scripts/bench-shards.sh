#!/usr/bin/env bash
#
# scripts/bench-shards.sh [SHARDS...] — the agent's collection time with the bulk call
# split into 1, 2, 3, 4 shards (libvirt.bulk_shards), back to back on the running lab
# guests (as root; `scripts/lab.sh up N` first). Figures, not a timed test; see
# docs/performance.md#sharding.
#
#   bash scripts/bench-shards.sh              shard counts 1 2 3 4, then 1 again
#   bash scripts/bench-shards.sh 1 2          only these
#   BENCH_PHASE=30                            seconds per shard count (after 5 s warm-up)
#   BENCH_BIN=target/release/vadvisor         the binary (default: that path, built if absent)
#
# Per shard count: the agent runs the default configuration (cpu, memory, block, net at
# 1 s) with `bulk_shards: N`; every 0.5 s /metrics is read for the cpu collector's
# collection time (vadvisor_collector_duration_seconds) and actual period
# (vadvisor_collector_period_seconds). Reported: their median and 90th percentile, the
# ticks per second, the agent's and libvirtd's CPU (utime + stime from /proc) per
# second, the samples per VM in the last 60 s of the REST history (median and fewest;
# use BENCH_PHASE=60 or more), the agent's RSS at the end, the 1-minute load average,
# and the partial-data warnings the agent logged.
set -euo pipefail
cd "$(dirname "$0")/.."

PHASE="${BENCH_PHASE:-30}"
LAB_URI="${LAB_URI:-qemu:///system}"
BIN="${BENCH_BIN:-target/release/vadvisor}"
HZ="$(getconf CLK_TCK)"
counts=("$@")
[ "${#counts[@]}" -gt 0 ] || counts=(1 2 3 4 1)

die() {
	printf 'bench-shards: error: %s\n' "$*" >&2
	exit 2
}
[ -x "$BIN" ] || cargo build --release -p vadvisor --locked >&2 || die "release build failed"
domains="$(virsh -q -c "$LAB_URI" list --name | grep -c . || true)"
[ "$domains" -ge 1 ] || die "no running domain: scripts/lab.sh up N"
mapfile -t daemon_pids < <(pgrep -x 'libvirtd|virtqemud' || true)
[ "${#daemon_pids[@]}" -ge 1 ] || die "no libvirtd/virtqemud process"

# shellcheck source=scripts/lib/agent-run.sh
. scripts/lib/agent-run.sh
agent_workdir
port="$(free_port)"
base="http://127.0.0.1:$port"

# shellcheck source=scripts/lib/proc-cpu.sh
. scripts/lib/proc-cpu.sh

printf 'bench-shards: %s active domains, %s s per shard count\n' "$domains" "$PHASE"
printf '%-7s %-22s %-22s %-8s %-11s %-13s %-13s %-9s %-6s %s\n' shards "collection med/p90" \
	"period med/p90" ticks/s "agent CPU" "libvirtd CPU" "samples/60s" RSS load partial
for n in "${counts[@]}"; do
	sed -e "s|listen: 0.0.0.0:8181|listen: 127.0.0.1:$port|" \
		-e "s|path: /var/lib/vadvisor/events.db|path: $work/events.db|" \
		-e "s|^  bulk_shards: auto$|  bulk_shards: $n|" config.example.yaml >"$work/config.yaml"
	grep -q "^  bulk_shards: $n$" "$work/config.yaml" || die "cannot set bulk_shards"
	: >"$work/agent.log"
	VADVISOR_LOG=warn "$BIN" --config "$work/config.yaml" >/dev/null 2>>"$work/agent.log" &
	agent_pid=$!
	sleep 5
	a0=$(ticks "$agent_pid") d0=$(ticks "${daemon_pids[@]}") t0=$(date +%s%N)
	python3 - "$base/metrics" "$PHASE" >"$work/figures.txt" <<'EOF'
import re, sys, time, urllib.request
url, secs = sys.argv[1], float(sys.argv[2])
end = time.monotonic() + secs
runs = []
while time.monotonic() < end:
    text = urllib.request.urlopen(url, timeout=30).read().decode()
    f = lambda n: re.search(r'^' + n + r'\{collector="cpu"\} (\S+)$', text, re.M)
    d, p, r = f("vadvisor_collector_duration_seconds"), f("vadvisor_collector_period_seconds"), f("vadvisor_collector_runs_total")
    if d and p and r:
        print(float(d.group(1)), float(p.group(1)), float(r.group(1)), time.monotonic())
    time.sleep(0.5)
EOF
	a1=$(ticks "$agent_pid") d1=$(ticks "${daemon_pids[@]}") t1=$(date +%s%N)
	rss="$(awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$agent_pid/status")"
	curl -s "$base/api/v1.0/stats/" >"$work/history.json"
	kill "$agent_pid" 2>/dev/null || true
	wait "$agent_pid" 2>/dev/null || true
	agent_pid=""
	partial="$(grep -c 'partial data' "$work/agent.log" || true)"
	python3 - "$work/figures.txt" "$n" "$HZ" "$((a1 - a0))" "$((d1 - d0))" "$(((t1 - t0) / 1000000))" \
		"$(cut -d' ' -f1 /proc/loadavg)" "$partial" "$work/history.json" "$rss" <<'EOF'
import datetime, json, statistics, sys
rows = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
n, hz, a, d, ms, load, partial = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7], sys.argv[8]
def q(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]
dur = [r[0] * 1000 for r in rows]
per = [r[1] * 1000 for r in rows if r[1] > 0]
rate = (rows[-1][2] - rows[0][2]) / (rows[-1][3] - rows[0][3]) if len(rows) > 1 else 0
pct = lambda t: f"{100.0 * t * 1000 / hz / ms:.1f} %"
ts = lambda s: datetime.datetime.strptime(s["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()
counts = []
for samples in json.load(open(sys.argv[9])).values():
    t = sorted(ts(s) for s in samples)
    counts.append(sum(1 for x in t if t[-1] - x < 60.0) if t else 0)
spm = f"{statistics.median(counts):.0f}, {min(counts)}" if counts else "-"
rss = sys.argv[10]
print(f"{n:<7} {statistics.median(dur):>6.0f} / {q(dur, 0.9):>6.0f} ms      "
      f"{statistics.median(per):>6.0f} / {q(per, 0.9):>6.0f} ms      {rate:<8.2f} {pct(a):<11} {pct(d):<13} {spm:<13} {rss + ' MiB':<9} {load:<6} {partial}")
EOF
done
