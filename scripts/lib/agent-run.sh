# Shared by the benchmark scripts (sourced): a free loopback port, and a work directory
# that is removed, with the agent started in it, when the script exits.

# A TCP port nothing listens on (loopback).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Sets `work` (a new temporary directory), `agent_pid` (empty: the caller stores the
# agent's pid there) and `helper_pids` (empty: other processes the caller starts), and
# on exit stops them and removes `work` (copied first to $BENCH_KEEP when that is set:
# the agent's log, the per-request times, …).
agent_workdir() {
	work="$(mktemp -d)"
	agent_pid=""
	helper_pids=()
	trap agent_workdir_cleanup EXIT
}
agent_workdir_cleanup() {
	[ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
	for pid in "${helper_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	if [ -n "${BENCH_KEEP:-}" ]; then mkdir -p "$BENCH_KEEP" && cp -r "$work"/. "$BENCH_KEEP"/; fi
	rm -rf "$work"
}

# Sets `BIN`: $BENCH_BIN if given, else the release binary, built first.
bench_bin() {
	BIN="${BENCH_BIN:-}"
	if [ -z "$BIN" ]; then
		cargo build --release -q --bin vadvisor
		BIN=target/release/vadvisor
	fi
}

# Writes "$work/config.yaml": the pipeline file ($BENCH_CONFIG, default
# config.example.yaml) listening on loopback port $1, with its events DB in `work`.
# Further arguments are extra `sed` arguments (e.g. -e 's|…|…|').
agent_config() {
	local port="$1"
	shift
	sed -e "s|listen: 0.0.0.0:8181|listen: 127.0.0.1:$port|" \
		-e "s|path: /var/lib/vadvisor/events.db|path: $work/events.db|" \
		"$@" "${BENCH_CONFIG:-config.example.yaml}" >"$work/config.yaml"
}
