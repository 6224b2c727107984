#!/usr/bin/env bash
#
# scripts/bench.sh [DOMAINS] — what monitoring costs the host, measured on the lab in one
# run (as root; not a timed test: it prints figures, docs/performance.md says how to read
# them).
#
#   bash scripts/bench.sh            every running lab guest (vadv-lab-*)
#   bash scripts/bench.sh 3          exactly 3 of them (more: scripts/lab.sh up N first)
#   BENCH_PHASE=20 BENCH_ROUNDS=3    seconds per phase, rounds of (idle, agent) phases
#   BENCH_REST_AGE=70 BENCH_REST_WINDOW=120  the agent at rest: measured this many seconds
#                                   after its start, for this many seconds
#   BENCH_BIN=target/release/vadvisor  the binary (default: built with cargo --release)
#   BENCH_SHARDS=1                  the agent's libvirt.bulk_shards (default: the config's, auto)
#   BENCH_KEEP=DIR                  keep the work files there (agent log, each request's time)
#   BENCH_CONFIG=FILE               the pipeline file (default: config.example.yaml); e.g. an
#                                   older build's own example file for an A/B run
#
# The agent runs the default configuration (config.example.yaml: cpu, memory, block, net
# at 1 s; rest, prometheus, events sinks), on a free loopback port.
#   1. CPU: phases without and with the agent alternate (idle, agent, idle, agent, …) to
#      cancel drift. Per phase: the agent's CPU, libvirtd's (or virtqemud's) and the QEMU
#      processes' of the measured domains, from /proc/<pid>/stat (10 ms clock ticks);
#      with perf installed also the agent's exact task-clock. What the agent causes
#      = agent phase − mean of the idle phases; host cost per tick = (agent + caused
#      libvirtd + caused QEMU) / ticks. QEMU's monitor I/O threads are also counted
#      apart: what reading libvirt's monitor commands costs, without the guests' noise;
#      and its vCPU threads, the guests' own work (noise of tens of ms per tick between
#      phases), with the host cost once more without them.
#      Then, with perf, the last phase's agent at rest: BENCH_REST_AGE s after its start
#      (its history full, start-up work over), BENCH_REST_WINDOW s of task-clock and
#      context switches, no request served yet. The default window, 120 s, holds two of
#      the specs collector's full refreshes (every 60 s), as any 120 s of a running agent.
#   2. Samples per VM per 60 s (median and fewest) and the actual period, from the REST
#      history; the collection time (vadvisor_collector_duration_seconds of `cpu`) and the
#      actual period (vadvisor_collector_period_seconds) as /metrics reported them in the
#      latency run.
#   3. RSS after the CPU phases (idle: no request served yet), latency of /metrics,
#      /api/v1.0/stats/ and ?live=true (median, p99; requests every 0.37 s so they land
#      at every point of the 1 s tick), then 200 concurrent clients (wrk, 10 s) and RSS
#      after that load, and again 25 s after the load (the agent checks every 10 s whether
#      to return free heap pages to the kernel; a check during the load finds them in use). RSS counts the shared
#      libraries' pages that libvirtd maps too; PSS divides shared pages among the
#      processes that map them (what the agent adds to the host).
#      The client floor: the same client reading the same /api/v1.0/stats/ body from a
#      minimal server that answers every request with one send of prepared bytes (what
#      the client, the loopback and this machine's scheduling take for ~1 MB anyway).
#   4. The raw bulk call: `virsh domstats` with the same groups (state, cpu-total,
#      balloon, vcpu, interface, block), the same way, in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."

PHASE="${BENCH_PHASE:-20}"
ROUNDS="${BENCH_ROUNDS:-3}"
REST_AGE="${BENCH_REST_AGE:-70}"
REST_WINDOW="${BENCH_REST_WINDOW:-120}"
LAB_URI="${LAB_URI:-qemu:///system}"
REQUESTS="${BENCH_REQUESTS:-120}"
SHARDS="${BENCH_SHARDS:-}"
HZ="$(getconf CLK_TCK)"

log() { printf 'bench: %s\n' "$*" >&2; }
die() {
	printf 'bench: error: %s\n' "$*" >&2
	exit 2
}
command -v curl >/dev/null || die "curl is missing"
command -v python3 >/dev/null || die "python3 is missing"
command -v virsh >/dev/null || die "virsh is missing (scripts/lab.sh)"

mapfile -t guests < <(virsh -q -c "$LAB_URI" list --name --state-running 2>/dev/null | grep '^vadv-lab-' | sort -V)
[ "${#guests[@]}" -ge 1 ] || die "no lab guest runs: scripts/lab.sh up N"
want="${1:-${#guests[@]}}"
[ "$want" -le "${#guests[@]}" ] || die "$want domains asked, ${#guests[@]} lab guests run: scripts/lab.sh up $want first"
guests=("${guests[@]:0:$want}")
total_domains="$(virsh -q -c "$LAB_URI" list --name --state-running | grep -c . || true)"
[ "$total_domains" -eq "$want" ] || log "note: $total_domains domains run on the host; the agent monitors all of them, QEMU CPU is counted for the $want measured ones"

qemu_pids=()
for g in "${guests[@]}"; do
	pid="$(cat "/var/run/libvirt/qemu/$g.pid" 2>/dev/null || true)"
	[ -n "$pid" ] || die "no pid file for $g"
	qemu_pids+=("$pid")
done
# QEMU's monitor I/O threads: where the QMP commands libvirt sends are read (one byte per
# system call in QEMU 7.2), counted apart: the rest of QEMU's CPU (the guests' own vCPU
# work) moves by more than the monitoring between phases.
# The vCPU threads ("CPU 0/TCG", "CPU 1/KVM", …) are counted apart too: they run the
# guests' own work, which the agent does not cause but which moves by tens of ms per
# tick between phases.
monitor_tids=()
vcpu_tids=()
for p in "${qemu_pids[@]}"; do
	for t in /proc/"$p"/task/*; do
		# As "PID/task/TID": /proc/TID/stat alone would count the whole process.
		comm="$(cat "$t/comm" 2>/dev/null)"
		case "$comm" in
		"IO mon_iothread") monitor_tids+=("$p/task/${t##*/}") ;;
		"CPU "*/TCG | "CPU "*/KVM) vcpu_tids+=("$p/task/${t##*/}") ;;
		esac
	done
done
mapfile -t daemon_pids < <(pgrep -x 'libvirtd|virtqemud' || true)
[ "${#daemon_pids[@]}" -ge 1 ] || die "no libvirtd/virtqemud process"

BIN="${BENCH_BIN:-target/release/vadvisor}"
if [ -z "${BENCH_BIN:-}" ]; then
	log "building $BIN"
	cargo build --release -p vadvisor --locked >&2 || die "release build failed"
fi
[ -x "$BIN" ] || die "$BIN is missing"

# shellcheck source=scripts/lib/agent-run.sh
. scripts/lib/agent-run.sh
agent_workdir
port="$(free_port)"
agent_config "$port" -e "s|^  bulk_shards: auto$|  bulk_shards: ${SHARDS:-auto}|"
base="http://127.0.0.1:$port"

# shellcheck source=scripts/lib/proc-cpu.sh
. scripts/lib/proc-cpu.sh
cpu_ms() { echo $(($1 * 1000 / HZ)); } # ticks -> ms
runs() { curl -s "$base/metrics" | awk '/^vadvisor_collector_runs_total\{collector="cpu"\}/ { print $2 }'; }

start_agent() {
	VADVISOR_LOG=warn "$BIN" --config "$work/config.yaml" >/dev/null 2>>"$work/agent.log" &
	agent_pid=$!
	agent_started=$(date +%s)
	for _ in $(seq 50); do
		curl -sf "$base/healthz" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	die "the agent did not start (log: $(tail -3 "$work/agent.log"))"
}
stop_agent() {
	kill "$agent_pid" 2>/dev/null || true
	wait "$agent_pid" 2>/dev/null || true
	agent_pid=""
}

# ---------------------------------------------------------------- 1. CPU phases
log "${#guests[@]} domains, $ROUNDS rounds of ${PHASE}s idle + ${PHASE}s with the agent"
idle_d=0 idle_q=0 idle_s=0 ag_a=0 ag_d=0 ag_q=0 ag_s=0 ag_ticks=0 ag_exact=0 idle_m=0 ag_m=0 idle_v=0 ag_v=0
# /proc/<pid>/stat counts CPU time in clock ticks (10 ms): over a 20 s phase that is
# ±0.5 ms per 1 s tick. With perf (Debian: linux-perf), the agent's task-clock gives its
# CPU time exactly as well.
perf_ok=""
if command -v perf >/dev/null 2>&1 && perf stat -e task-clock -- true >/dev/null 2>&1; then
	perf_ok=1
fi
for r in $(seq "$ROUNDS"); do
	d0=$(ticks "${daemon_pids[@]}") q0=$(ticks "${qemu_pids[@]}") m0=$(ticks "${monitor_tids[@]}") v0=$(ticks "${vcpu_tids[@]}") t0=$(date +%s%N)
	sleep "$PHASE"
	d1=$(ticks "${daemon_pids[@]}") q1=$(ticks "${qemu_pids[@]}") m1=$(ticks "${monitor_tids[@]}") v1=$(ticks "${vcpu_tids[@]}") t1=$(date +%s%N)
	idle_d=$((idle_d + d1 - d0)) idle_q=$((idle_q + q1 - q0)) idle_s=$((idle_s + (t1 - t0) / 1000000))
	idle_m=$((idle_m + m1 - m0)) idle_v=$((idle_v + v1 - v0))
	start_agent
	sleep 3 # first ticks, connection set-up
	a0=$(ticks "$agent_pid") d0=$(ticks "${daemon_pids[@]}") q0=$(ticks "${qemu_pids[@]}") m0=$(ticks "${monitor_tids[@]}") v0=$(ticks "${vcpu_tids[@]}") n0=$(runs) t0=$(date +%s%N)
	if [ -n "$perf_ok" ]; then
		# The agent's exact CPU time in the phase (its threads and those they start).
		perf stat -x, -e task-clock -p "$agent_pid" -o "$work/perf-$r.csv" -- sleep "$PHASE" 2>/dev/null
		ag_exact=$(awk -F, -v sum="$ag_exact" '$3 == "task-clock" { sum += $1 } END { printf "%.3f", sum }' "$work/perf-$r.csv")
	else
		sleep "$PHASE"
	fi
	a1=$(ticks "$agent_pid") d1=$(ticks "${daemon_pids[@]}") q1=$(ticks "${qemu_pids[@]}") m1=$(ticks "${monitor_tids[@]}") v1=$(ticks "${vcpu_tids[@]}") n1=$(runs) t1=$(date +%s%N)
	ag_a=$((ag_a + a1 - a0)) ag_d=$((ag_d + d1 - d0)) ag_q=$((ag_q + q1 - q0)) ag_m=$((ag_m + m1 - m0))
	ag_v=$((ag_v + v1 - v0))
	ag_s=$((ag_s + (t1 - t0) / 1000000))
	ag_ticks=$(python3 -c "print($ag_ticks + ${n1:-0} - ${n0:-0})")
	log "round $r: agent $(cpu_ms $((a1 - a0))) ms CPU in $(((t1 - t0) / 1000000)) ms"
	if [ "$r" -lt "$ROUNDS" ]; then stop_agent; fi
done

# ---------------------------------------------------------------- 1b. agent CPU at rest
# The phases above are the agent's first half-minute: its history filling, the specs
# fetched, start-up code released. At rest (REST_AGE seconds after start: the history
# full) the last phase's agent is measured again, REST_WINDOW seconds, no request yet.
rest_exact="" rest_cs="" rest_ticks=0
if [ -n "$perf_ok" ]; then
	age=$(( $(date +%s) - agent_started ))
	if [ "$age" -lt "$REST_AGE" ]; then sleep $((REST_AGE - age)); fi
	n0=$(runs)
	perf stat -x, -e task-clock,context-switches -p "$agent_pid" -o "$work/perf-rest.csv" -- sleep "$REST_WINDOW" 2>/dev/null
	n1=$(runs)
	rest_exact=$(awk -F, '$3 == "task-clock" { printf "%.3f", $1 }' "$work/perf-rest.csv")
	rest_cs=$(awk -F, '$3 == "context-switches" { print $1 }' "$work/perf-rest.csv")
	rest_ticks=$(python3 -c "print(${n1:-0} - ${n0:-0})")
	log "at rest: agent ${rest_exact} ms CPU in ${REST_WINDOW} s, ${rest_ticks} ticks"
fi

# ---------------------------------------------------------------- 3. RSS and latency
# RSS in MiB, split into anonymous (the agent's own heap and stacks) and file-backed
# pages (the binary's and the shared libraries' code and data, shared with every other
# process that maps them: libvirtd maps the same libvirt libraries).
rss() {
	awk '/^VmRSS/ { t = $2 } /^RssAnon/ { a = $2 } /^RssFile/ { f = $2 }
		END { printf "%.1f MiB (anon %.1f + file %.1f", t / 1024, a / 1024, f / 1024 }' \
		"/proc/$agent_pid/status"
	awk '/^Pss:/ { printf "; PSS %.1f)", $2 / 1024 }' "/proc/$agent_pid/smaps_rollup"
}
rss_idle="$(rss)"
# latency URL TIMES [FILE]: median, p99 and slowest of REQUESTS requests; each request's
# start (Unix time) and duration go to TIMES; with FILE, the cpu collector's duration and
# period of each /metrics response go there (milliseconds, one pair a line).
latency() {
	python3 - "$1" "$REQUESTS" "${3:-}" "$2" <<'EOF'
import http.client, re, statistics, sys, time, urllib.parse
url, n, keep, times = urllib.parse.urlsplit(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
log = open(times, "w")
conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
path = url.path + ("?" + url.query if url.query else "")
took, seen = [], []
fig = lambda name, text: re.search(r'^' + name + r'\{collector="cpu"\} (\S+)$', text, re.M)
for _ in range(n):
    started, t = time.time(), time.perf_counter()
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    took.append((time.perf_counter() - t) * 1000)
    log.write(f"{started:.3f} {took[-1]:.2f}\n")
    if keep:
        text = body.decode("utf-8", "replace")
        d = fig("vadvisor_collector_duration_seconds", text)
        p = fig("vadvisor_collector_period_seconds", text)
        if d and p:
            seen.append(f"{float(d.group(1)) * 1000:.1f} {float(p.group(1)) * 1000:.1f}")
    time.sleep(0.37)
took.sort()
p99 = took[min(len(took) - 1, int(round(0.99 * len(took) + 0.5)) - 1)]
print(f"{statistics.median(took):.2f} {p99:.2f} {took[-1]:.2f}")
if keep:
    open(keep, "w").write("\n".join(seen) + "\n")
EOF
}
log "latency: $REQUESTS requests each, 0.37 s apart"
lat_metrics="$(latency "$base/metrics" "$work/times-metrics.txt" "$work/collection.txt")"
collection="$(python3 - "$work/collection.txt" <<'EOF'
import statistics, sys
rows = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
d = sorted(r[0] for r in rows)
p = sorted(r[1] for r in rows)
print(f"{statistics.median(d):.0f} {d[-1]:.0f} {statistics.median(p):.0f} {p[-1]:.0f}" if rows else "- - - -")
EOF
)"
lat_stats="$(latency "$base/api/v1.0/stats/" "$work/times-stats.txt")"
lat_live="$(latency "$base/api/v1.0/stats/?live=true" "$work/times-live.txt")"
# The client floor: the same body from a server that only sends prepared bytes.
curl -s "$base/api/v1.0/stats/" >"$work/stats-body.json"
python3 - "$work/stats-body.json" >"$work/floor-port" <<'EOF' &
import socket, sys
body = open(sys.argv[1], "rb").read()
reply = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body) + body
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(4)
print(srv.getsockname()[1], flush=True)
while True:
    conn, _ = srv.accept()
    pending = b""
    while True:
        data = conn.recv(65536)
        if not data:
            break
        pending += data
        while b"\r\n\r\n" in pending:
            pending = pending.split(b"\r\n\r\n", 1)[1]
            conn.sendall(reply)
    conn.close()
EOF
floor_pid=$!
helper_pids+=("$floor_pid")
for _ in $(seq 50); do [ -s "$work/floor-port" ] && break; sleep 0.1; done
lat_floor="$(latency "http://127.0.0.1:$(cat "$work/floor-port")/stats" "$work/times-floor.txt")"
kill "$floor_pid" 2>/dev/null || true
command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null 2>&1 || true
if command -v wrk >/dev/null; then
	log "200 concurrent clients for 10 s (wrk)"
	wrk -c200 -t2 -d10s "$base/api/v1.0/stats/" >"$work/wrk.txt" 2>&1 || true
	rps="$(awk '/Requests\/sec/ { print $2 }' "$work/wrk.txt")"
else
	rps="(wrk missing)"
fi
sleep 2
rss_load="$(rss)"
sleep 23
rss_after="$(rss)"
names="$(printf '%s|' "${guests[@]}")"
partial="$(grep 'partial data' "$work/agent.log" | grep -cE "name=(${names%|})( |$)" || true)"
partial_all="$(grep -c 'partial data' "$work/agent.log" || true)"
# ---------------------------------------------------------------- 2. samples per VM (after
# the latency phase: by then the agent has run for more than 60 s)
curl -s "$base/api/v1.0/stats/" >"$work/history.json"
samples="$(python3 - "$work/history.json" <<'EOF'
import datetime, json, statistics, sys
v = json.load(open(sys.argv[1]))
def ts(s):
    return datetime.datetime.strptime(s["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()
per_min, periods = [], []
for samples in v.values():
    t = sorted(ts(s) for s in samples)
    if len(t) < 2:
        continue
    window = [x for x in t if t[-1] - x < 60.0]
    period = (window[-1] - window[0]) / (len(window) - 1)
    periods.append(period)
    # Scaled to 60 s when the agent has not run that long yet.
    per_min.append(len(window) * 60.0 / min(60.0, len(window) * period))
print(f"{statistics.median(per_min):.1f} {statistics.median(periods):.3f} {min(per_min):.1f}")
EOF
)"

stop_agent

# ---------------------------------------------------------------- 4. raw bulk call
log "raw bulk call: virsh domstats, $REQUESTS calls 0.37 s apart"
raw="$(python3 - "$LAB_URI" "$REQUESTS" <<'EOF'
import statistics, subprocess, sys, time
uri, n = sys.argv[1], int(sys.argv[2])
cmd = ["virsh", "-q", "-c", uri, "domstats", "--nowait", "--state", "--cpu-total", "--balloon",
       "--vcpu", "--interface", "--block"]
took = []
for _ in range(n):
    t = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
    took.append((time.perf_counter() - t) * 1000)
    time.sleep(0.37)
took.sort()
print(f"{statistics.median(took):.1f} {took[min(n - 1, int(0.99 * n))]:.1f}")
EOF
)"

# ---------------------------------------------------------------- report
python3 - "$HZ" "$idle_d" "$idle_q" "$idle_s" "$ag_a" "$ag_d" "$ag_q" "$ag_s" "$ag_ticks" \
	"${#guests[@]}" "$samples" "$rss_idle" "$rss_load" "$lat_metrics" "$lat_stats" "$lat_live" \
	"$rps" "$raw" "$partial" "$partial_all" "$collection" "${SHARDS:-auto}" "$(cut -d' ' -f1-3 /proc/loadavg)" \
	"$rss_after" "$lat_floor" "${perf_ok:+$ag_exact}" "$rest_exact" "$rest_cs" "$rest_ticks" "$REST_AGE" \
	"$idle_m" "$ag_m" "${#monitor_tids[@]}" "$idle_v" "$ag_v" "${#vcpu_tids[@]}" <<'EOF'
import sys
a = sys.argv[1:]
hz = int(a[0])
idle_d, idle_q, idle_s, ag_a, ag_d, ag_q, ag_s = (int(x) for x in a[1:8])
ticks, domains = float(a[8]), int(a[9])
per_min, period, fewest = a[10].split()
rss_idle, rss_load, lat_m, lat_s, lat_l, rps, raw, partial, partial_all, collection, shards, load = a[11:23]
rss_after, lat_floor, exact, rest_exact, rest_cs, rest_ticks, rest_age = a[23:30]
idle_m, ag_m, monitors = (int(x) for x in a[30:33])
idle_v, ag_v, vcpus = (int(x) for x in a[33:36])
c_med, c_max, p_med, p_max = collection.split()
ms = lambda t: t * 1000.0 / hz
# Per second of phase, then per tick.
pct = lambda t, secs_ms: 100.0 * ms(t) / secs_ms
agent = ms(ag_a) / ag_s * 1000          # ms CPU per s
d_caused = (ms(ag_d) / ag_s - ms(idle_d) / idle_s) * 1000
q_caused = (ms(ag_q) / ag_s - ms(idle_q) / idle_s) * 1000
tick_rate = ticks / (ag_s / 1000) if ticks > 0 else 1.0
row = lambda k, v: print(f"  {k:<44} {v}")
print(f"vadvisor bench: {domains} domains, {ag_s/1000:.0f} s with the agent, {idle_s/1000:.0f} s without, bulk_shards {shards}")
print(f"  load average at the end: {load}")
row("agent CPU", f"{agent/10:.2f} % of a core ({agent/tick_rate:.1f} ms per tick)")
if exact:
    row("agent CPU, exact (perf task-clock)", f"{float(exact)/ag_s*100:.3f} % of a core ({float(exact)/ag_s*1000/tick_rate:.2f} ms per tick)")
else:
    row("agent CPU, exact (perf task-clock)", "perf not available")
if rest_exact and float(rest_ticks) > 0:
    per_tick = float(rest_exact) / float(rest_ticks)
    row(f"agent CPU at rest ({rest_age} s after start)", f"{per_tick:.3f} ms per tick, {float(rest_cs)/float(rest_ticks):.1f} context switches per tick ({rest_ticks} ticks)")
row("libvirtd CPU caused", f"{d_caused/10:.2f} % of a core ({d_caused/tick_rate:.1f} ms per tick)")
row(f"QEMU CPU caused ({domains} processes)", f"{q_caused/10:.2f} % of a core ({q_caused/tick_rate:.1f} ms per tick)")
if monitors:
    m_caused = (ms(ag_m) / ag_s - ms(idle_m) / idle_s) * 1000
    row(f"  of which monitor threads ({monitors})", f"{m_caused/10:.2f} % of a core ({m_caused/tick_rate:.1f} ms per tick; the rest is mostly the guests' own work)")
v_caused = (ms(ag_v) / ag_s - ms(idle_v) / idle_s) * 1000
if vcpus:
    row(f"  of which vCPU threads ({vcpus})", f"{v_caused/10:.2f} % of a core ({v_caused/tick_rate:.1f} ms per tick; the guests' own work: noise)")
row("host cost per tick (agent+libvirtd+QEMU)", f"{(agent + d_caused + q_caused)/tick_rate:.1f} ms CPU")
if vcpus:
    row("  the same without the vCPU threads", f"{(agent + d_caused + q_caused - v_caused)/tick_rate:.1f} ms CPU")
row("ticks per second (cpu collector runs)", f"{tick_rate:.2f}")
row("samples per VM per 60 s (median, fewest)", f"{per_min}, {fewest} (actual period {period} s)")
row("collection time median / max (cpu)", f"{c_med} ms / {c_max} ms")
row("period self-metric median / max", f"{p_med} ms / {p_max} ms")
row("RSS idle", rss_idle)
row("RSS 2 s after 200 clients", rss_load)
row("RSS 25 s after 200 clients", rss_after)
row("/metrics median / p99 / slowest", " / ".join(x + " ms" for x in lat_m.split()))
row("/api/v1.0/stats/ median / p99 / slowest", " / ".join(x + " ms" for x in lat_s.split()))
row("  same body, minimal server (client floor)", " / ".join(x + " ms" for x in lat_floor.split()))
row("?live=true median / p99 / slowest", " / ".join(x + " ms" for x in lat_l.split()))
row("/api/v1.0/stats/ with 200 clients (wrk)", f"{rps} requests/s")
row("raw bulk call (virsh domstats) median / p99", " / ".join(x + " ms" for x in raw.split()))
row("partial-data warnings (measured domains / all)", f"{partial} / {partial_all}")
EOF
