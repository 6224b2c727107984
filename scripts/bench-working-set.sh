#!/usr/bin/env bash
#
# scripts/bench-working-set.sh [SECONDS] — how much memory the agent really keeps in use,
# on the lab (`scripts/lab.sh up N`, as root, Linux >= 5.10).
#
# RSS counts every page mapped into the process, including code pages of the binary
# and of libvirt's client libraries that were touched once at start-up (library
# constructors, configuration parsing) or brought in by the kernel's fault-around.
# To see the working set, the agent runs with a private copy of its shared libraries
# (so their pages are its alone, not shared with libvirtd), its file-backed pages are
# paged out once with process_madvise(MADV_PAGEOUT) after the history is full, and the
# RSS is read again as the agent pulls back what it uses: after 1 s, and after SECONDS
# (default 60). Anonymous memory (heap, stacks) is not paged out (no swap needed).
#
# Environment: BENCH_BIN (default: build the release binary), BENCH_CONFIG (default
# config.example.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."

WAIT="${1:-60}"
# shellcheck source=scripts/lib/agent-run.sh
. scripts/lib/agent-run.sh
bench_bin
agent_workdir
port="$(free_port)"
agent_config "$port"
mkdir "$work/lib"
cp "$BIN" "$work/vadvisor"
ldd "$BIN" | awk '/=> \// { print $3 }' | while read -r lib; do cp -L "$lib" "$work/lib/"; done

LD_LIBRARY_PATH="$work/lib" VADVISOR_LOG=warn "$work/vadvisor" --config "$work/config.yaml" \
	>/dev/null 2>"$work/agent.log" &
agent_pid=$!
for _ in $(seq 100); do
	curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
	sleep 0.1
done
echo "vadvisor working set: $(virsh -r -q list --state-running --name 2>/dev/null | grep -c . || true) domains, $BIN" >&2
sleep 70 # a full 60-sample REST history

python3 - "$agent_pid" "$WAIT" <<'EOF'
import ctypes, sys, time
pid, wait = int(sys.argv[1]), float(sys.argv[2])
libc = ctypes.CDLL(None, use_errno=True)
SYS_pidfd_open, SYS_process_madvise, MADV_PAGEOUT = 434, 440, 21

class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

def status():
    f = {l.split(":")[0]: int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("Rss")}
    return f["RssAnon"] / 1024, f["RssFile"] / 1024

def row(label):
    anon, file = status()
    print(f"  {label:38} {anon + file:6.1f} MiB  (anon {anon:5.1f} + file {file:5.1f})")

row("RSS with a full history")
pidfd = libc.syscall(SYS_pidfd_open, pid, 0)
if pidfd < 0:
    sys.exit("pidfd_open failed (Linux >= 5.10 needed)")
for line in open(f"/proc/{pid}/maps"):
    parts = line.split()
    if len(parts) >= 6 and parts[5].startswith("/"):
        start, end = (int(x, 16) for x in parts[0].split("-"))
        iov = IoVec(start, end - start)
        libc.syscall(SYS_process_madvise, pidfd, ctypes.byref(iov), 1, MADV_PAGEOUT, 0)
time.sleep(1)
row("1 s after paging file pages out")
time.sleep(wait)
row(f"{wait:.0f} s later (the working set)")
per = {}
cur = None
for line in open(f"/proc/{pid}/smaps"):
    parts = line.split()
    if "-" in parts[0] and not parts[0].endswith(":"):
        cur = parts[5].rsplit("/", 1)[-1] if len(parts) > 5 else "[anonymous]"
    elif parts[0] == "Rss:":
        per[cur] = per.get(cur, 0) + int(parts[1])
print("  resident by mapping (KiB), largest first:")
for name, kib in sorted(per.items(), key=lambda kv: -kv[1])[:12]:
    print(f"    {kib:6d}  {name}")
EOF
