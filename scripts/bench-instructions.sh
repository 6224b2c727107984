#!/usr/bin/env bash
#
# scripts/bench-instructions.sh [SECONDS] — the agent's CPU work per tick, counted in
# instructions (valgrind's callgrind), on the lab (`scripts/lab.sh up N`, as root).
#
# Instruction counts do not depend on what else the machine is doing, so two builds can
# be compared on a busy host where CPU-time figures (scripts/bench.sh) drift. They count
# user-space work only: the kernel's share (context switches, socket I/O) is not in them.
#
# The agent runs the default configuration (config.example.yaml on a loopback port)
# under callgrind; after 30 s of warm-up, SECONDS (default 60) of ticks are counted with
# no request served. Printed: instructions per tick, split by where they ran (the
# agent's own code, libvirt's client library and its XDR/GLib helpers, libc), the
# libvirt client's share of a tick (the bulk call with its reply decoding, and freeing
# the reply), and the functions that cost most, inclusive.
#
# Environment:
#   BENCH_BIN=target/release/vadvisor   the build to measure (default: build it)
#   BENCH_CONFIG=FILE                   the pipeline file (default: config.example.yaml)
#   BENCH_KEEP=DIR                      keep callgrind's output file in DIR
#
# Run it once per build to compare (`BENCH_BIN=/path/to/old/vadvisor`).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_COUNTED="${1:-60}"
if ! command -v valgrind >/dev/null || ! command -v callgrind_annotate >/dev/null; then
	apt-get install -y -qq valgrind >/dev/null
fi
# shellcheck source=scripts/lib/agent-run.sh
. scripts/lib/agent-run.sh
bench_bin
agent_workdir
port="$(free_port)"
agent_config "$port"
base="http://127.0.0.1:$port"
runs() { curl -s "$base/metrics" | awk '/^vadvisor_collector_runs_total\{collector="cpu"\}/ { print $2 }'; }

VADVISOR_LOG=warn valgrind --tool=callgrind --instr-atstart=no \
	--callgrind-out-file="$work/callgrind.out" "$BIN" --config "$work/config.yaml" \
	>/dev/null 2>"$work/agent.log" &
agent_pid=$!
for _ in $(seq 300); do
	curl -sf "$base/healthz" >/dev/null 2>&1 && break
	sleep 0.2
done
domains="$(virsh -r -q list --state-running --name 2>/dev/null | grep -c . || true)"
sleep 30
first="$(runs)"
callgrind_control -z "$agent_pid" >/dev/null 2>&1
callgrind_control -i on "$agent_pid" >/dev/null 2>&1
sleep "$SECONDS_COUNTED"
callgrind_control -d "$agent_pid" >/dev/null 2>&1
last="$(runs)"
callgrind_control -i off "$agent_pid" >/dev/null 2>&1
kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null || true
agent_pid=""
out="$(ls "$work"/callgrind.out.* | head -1)"
[ -n "${BENCH_KEEP:-}" ] && mkdir -p "$BENCH_KEEP" && cp "$out" "$BENCH_KEEP/"

callgrind_annotate --inclusive=no "$out" >"$work/self.txt" 2>/dev/null
callgrind_annotate --inclusive=yes "$out" >"$work/incl.txt" 2>/dev/null
python3 - "$work/self.txt" "$work/incl.txt" "$((last - first))" "$domains" "$SECONDS_COUNTED" "$BIN" <<'EOF'
import re, sys
self_txt, incl_txt, ticks, domains, secs, binary = sys.argv[1:7]
ticks = int(ticks)
line = re.compile(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*?)(?: \[(.*)\])?$")

def rows(path):
    for l in open(path):
        m = line.match(l)
        if m:
            yield int(m.group(1).replace(",", "")), m.group(2), m.group(3) or ""

total = next(n for n, name, _ in rows(self_txt) if "PROGRAM TOTALS" in name)
by_object = {}
for n, name, obj in rows(self_txt):
    if "PROGRAM TOTALS" in name:
        continue
    o = obj.rsplit("/", 1)[-1]
    kind = ("agent" if o == binary.rsplit("/", 1)[-1] else
            "libvirt client (libvirt, libtirpc, GLib)" if re.match(r"lib(virt|tirpc|glib|gobject|gio)", o) else
            "libc (malloc, memcpy, printf… for both)" if o.startswith(("libc.", "libm.")) else
            "other (kernel entry, loader, libgcc…)")
    by_object[kind] = by_object.get(kind, 0) + n
incl = {}
for n, name, obj in rows(incl_txt):
    fn = name.split(":", 1)[-1]
    incl.setdefault(fn, n)
per = lambda n: n / max(ticks, 1) / 1e6
print(f"vadvisor instructions: {domains} domains, {ticks} ticks in {secs} s, {binary}")
print(f"  {'instructions per tick':44} {per(total):6.2f} M")
for kind, n in sorted(by_object.items(), key=lambda kv: -kv[1]):
    print(f"    {kind:42} {per(n):6.2f} M  ({100 * n / total:4.1f} %)")
client = incl.get("virConnectGetAllDomainStats", 0) + incl.get("virDomainListGetStats", 0) \
    + incl.get("virDomainStatsRecordListFree", 0)
print(f"  {'libvirt client: bulk call + freeing its reply':44} {per(client):6.2f} M  (inclusive, libc included)")
print("  costliest functions, inclusive, per tick:")
skip = re.compile(r"'[0-9]+$|tokio::|std::|core::ops|__rust_begin|start_thread|clone3|thread_start|\{\{closure\}\}$|^0x|PROGRAM TOTALS|^\?\?\?$")
shown = 0
for n, name, obj in rows(incl_txt):
    fn = name.split(":", 1)[-1]
    if skip.search(fn) or fn.strip() == "":
        continue
    print(f"    {per(n):6.2f} M  {fn[:100]}")
    shown += 1
    if shown == 15:
        break
EOF
