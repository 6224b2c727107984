# Shared by the benchmark scripts (sourced): a free loopback port, and a work directory
# that is removed, with the agent started in it, when the script exits.

# A TCP port nothing listens on (loopback).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Sets `work` (a new temporary directory) and `agent_pid` (empty: the caller stores the
# agent's pid there), and on exit stops that agent and removes `work`.
agent_workdir() {
	work="$(mktemp -d)"
	agent_pid=""
	trap agent_workdir_cleanup EXIT
}
agent_workdir_cleanup() {
	[ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
	rm -rf "$work"
}
