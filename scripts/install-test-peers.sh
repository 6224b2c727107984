#!/usr/bin/env bash
#
# scripts/install-test-peers.sh — installs the third-party programs that vadvisor's
# tests and benchmarks talk to ("peers"), on Debian 12, as root. Idempotent: every
# step checks first and does nothing when its part is already there.
#
#   bash scripts/install-test-peers.sh
#
# Steps (one block each, in order):
#   prometheus   Debian's `prometheus` package: /usr/bin/prometheus (the real server
#                the lab test scrapes the agent with) and /usr/bin/promtool (`promtool
#                check metrics` validates /metrics); plus `wrk` for
#                scripts/bench-metrics.sh. The packaged daemon is not left running.
#   tools        curl, openssl, python3 (TLS peer and SQLite checks in the tests).
#   chromium     Debian's headless Chromium (+ chromium-driver) for tests/ui_browser.rs,
#                which drives it over the DevTools protocol; node runs the web UI's
#                JavaScript unit tests (tests/ui_js.rs).
#   k8s-validate Schema validators for deploy/kubernetes, pinned in scripts/k8s-validate/:
#                PyPI `kubernetes-validate` (Kubernetes OpenAPI schemas) in a venv and npm
#                `@kubernetes-models/prometheus-operator` (ServiceMonitor), in
#                $VADVISOR_PEERS_DIR/k8s-validate, for tests/deploy_kubernetes.rs.
#   systemd      systemd-analyze (Debian's `systemd` package) when missing: verifies
#                deploy/systemd/vadvisor.service offline (no running systemd needed).
#   statsd       Etsy's StatsD daemon from npm (`statsd`, pinned) in
#                $VADVISOR_PEERS_DIR/statsd (default /opt/vadvisor-test-peers/statsd),
#                for tests/statsd_daemon.rs; needs node and npm (Debian's if absent).
#   cargo-deny   cargo-deny (pinned, `cargo install --locked`) in
#                $VADVISOR_TOOLS_DIR (default /opt/vadvisor-test-peers/tools).

set -euo pipefail

log() { printf 'install-test-peers: %s\n' "$*" >&2; }
die() {
	printf 'install-test-peers: error: %s\n' "$*" >&2
	exit 1
}

[ "$(id -u)" -eq 0 ] || die "must run as root"

# ---------------------------------------------------------------- helpers

APT_UPDATED=0

pkg_installed() {
	local st
	st="$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null)" || return 1
	[ "${st:0:2}" = ii ]
}

# True when apt knows an installable version of the package.
has_candidate() {
	local c
	c="$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}')"
	[ -n "$c" ] && [ "$c" != "(none)" ]
}

apt_get() {
	DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=120 "$@"
}

# Installs the packages that are missing; runs `apt-get update` (once) only when apt
# does not know one of them yet.
apt_install() {
	local p missing=()
	for p in "$@"; do
		pkg_installed "$p" || missing+=("$p")
	done
	if [ "${#missing[@]}" -eq 0 ]; then
		log "already installed: $*"
		return 0
	fi
	for p in "${missing[@]}"; do
		if ! has_candidate "$p" && [ "$APT_UPDATED" = 0 ]; then
			log "apt-get update (apt does not know $p yet)"
			apt_get update >&2 || die "apt-get update failed"
			APT_UPDATED=1
		fi
	done
	log "installing: ${missing[*]}"
	apt_get install -y --no-install-recommends "${missing[@]}" >&2 || die "apt-get install ${missing[*]} failed"
}

# PIDs of running processes whose executable is exactly $1.
pids_of_exe() {
	local exe=$1 d
	for d in /proc/[0-9]*; do
		[ "$(readlink "$d/exe" 2>/dev/null)" = "$exe" ] && printf '%s\n' "${d#/proc/}"
	done
	return 0
}

# ---------------------------------------------------------------- prometheus + wrk

step_prometheus() {
	apt_install prometheus wrk
	command -v promtool >/dev/null || die "promtool missing after installing prometheus"
	command -v wrk >/dev/null || die "wrk missing after installing wrk"
	# The package's postinst may start its daemon (port 9090) where it can; the tests
	# start their own server on a free port, so stop the packaged one. Only the
	# daemon run as the package's `prometheus` user is stopped, never a test's.
	local pid stopped=0
	if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
		systemctl disable --now prometheus.service >/dev/null 2>&1 || true
	fi
	if [ -x /etc/init.d/prometheus ]; then
		/etc/init.d/prometheus stop >/dev/null 2>&1 || true
	fi
	for pid in $(pids_of_exe /usr/bin/prometheus); do
		if [ "$(stat -c %U "/proc/$pid" 2>/dev/null)" = prometheus ]; then
			kill "$pid" 2>/dev/null && stopped=1
		fi
	done
	[ "$stopped" = 1 ] && log "stopped the packaged prometheus daemon"
	log "prometheus $(prometheus --version 2>&1 | awk 'NR==1 {print $3}'), promtool and wrk ready"
}

step_prometheus

# ---------------------------------------------------------------- statsd (npm)

STATSD_VERSION=0.9.0
STATSD_DIR="${VADVISOR_PEERS_DIR:-/opt/vadvisor-test-peers}/statsd"

step_statsd() {
	local pkg="$STATSD_DIR/node_modules/statsd/package.json"
	if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
		apt_install nodejs npm
	fi
	if [ -f "$pkg" ] && grep -q "\"version\": *\"$STATSD_VERSION\"" "$pkg"; then
		log "already installed: statsd $STATSD_VERSION in $STATSD_DIR"
		return 0
	fi
	mkdir -p "$STATSD_DIR"
	log "installing statsd $STATSD_VERSION (npm) into $STATSD_DIR"
	# The optional dependencies (syslog, proxy hashring) are not used by the tests.
	npm install --prefix "$STATSD_DIR" --omit=optional --no-audit --no-fund \
		"statsd@$STATSD_VERSION" >&2 || die "npm install statsd@$STATSD_VERSION failed"
	[ -f "$STATSD_DIR/node_modules/statsd/stats.js" ] || die "statsd missing after npm install"
	log "statsd $STATSD_VERSION ready: $STATSD_DIR/node_modules/statsd/stats.js"
}

step_statsd

# ---------------------------------------------------------------- tools
# curl and openssl: the access-control test makes its certificate with openssl and
# talks TLS to the agent with curl (a real TLS client); python3 reads SQLite files.

step_tools() {
	apt_install curl openssl ca-certificates python3
}

step_tools

# ---------------------------------------------------------------- chromium
# The web UI's browser test (tests/ui_browser.rs) and scripts/ui-screenshots.sh start
# /usr/bin/chromium headless and talk to it over the DevTools protocol.

step_chromium() {
	apt_install chromium chromium-driver fonts-dejavu-core
	command -v chromium >/dev/null || die "chromium missing after installing it"
	log "$(chromium --version 2>/dev/null | head -n1) ready"
}

step_chromium

# ---------------------------------------------------------------- systemd-analyze
# tests/deploy_systemd.rs checks the unit with `systemd-analyze verify` and `security
# --offline`; both work without systemd running as init.

step_systemd_analyze() {
	if command -v systemd-analyze >/dev/null; then
		log "already installed: systemd-analyze ($(systemd-analyze --version | awk 'NR==1 {print $2}'))"
		return 0
	fi
	apt_install systemd
	command -v systemd-analyze >/dev/null || die "systemd-analyze missing after installing systemd"
}

step_systemd_analyze

# ---------------------------------------------------------------- k8s-validate

K8S_VALIDATE_SRC="$(cd "$(dirname "$0")" && pwd)/k8s-validate"
K8S_VALIDATE_DIR="${VADVISOR_PEERS_DIR:-/opt/vadvisor-test-peers}/k8s-validate"

step_k8s_validate() {
	local venv="$K8S_VALIDATE_DIR/venv" npmdir="$K8S_VALIDATE_DIR/npm" f
	mkdir -p "$K8S_VALIDATE_DIR"
	if [ -x "$venv/bin/kubernetes-validate" ] && cmp -s "$K8S_VALIDATE_SRC/requirements.txt" "$venv/requirements.txt"; then
		log "already installed: kubernetes-validate in $venv"
	else
		python3 -m venv --help >/dev/null 2>&1 || apt_install python3-venv
		rm -rf "$venv"
		python3 -m venv "$venv" || die "python3 -m venv $venv failed"
		log "installing kubernetes-validate (PyPI, pinned) into $venv"
		"$venv/bin/pip" install -q --disable-pip-version-check -r "$K8S_VALIDATE_SRC/requirements.txt" >&2 ||
			die "pip install kubernetes-validate failed"
		cp "$K8S_VALIDATE_SRC/requirements.txt" "$venv/requirements.txt"
	fi
	if [ -f "$npmdir/node_modules/@kubernetes-models/prometheus-operator/package.json" ] &&
		cmp -s "$K8S_VALIDATE_SRC/package-lock.json" "$npmdir/package-lock.json"; then
		log "already installed: @kubernetes-models/prometheus-operator in $npmdir"
	else
		if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
			apt_install nodejs npm
		fi
		mkdir -p "$npmdir"
		for f in package.json package-lock.json; do cp "$K8S_VALIDATE_SRC/$f" "$npmdir/$f"; done
		log "installing @kubernetes-models/prometheus-operator (npm ci, pinned) into $npmdir"
		(cd "$npmdir" && npm ci --omit=dev --no-audit --no-fund >&2) || die "npm ci in $npmdir failed"
	fi
}

step_k8s_validate

# ---------------------------------------------------------------- cargo-deny
# cargo-deny (pinned) checks licences, bans and sources of the dependency graph
# (scripts/test.sh). Built from crates.io with `cargo install --locked` into
# $VADVISOR_TOOLS_DIR (default /opt/vadvisor-test-peers/tools).

CARGO_DENY_VERSION=0.20.2
TOOLS_DIR="${VADVISOR_TOOLS_DIR:-/opt/vadvisor-test-peers/tools}"

step_cargo_deny() {
	local bin="$TOOLS_DIR/bin/cargo-deny"
	if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -qx "cargo-deny $CARGO_DENY_VERSION"; then
		log "already installed: cargo-deny $CARGO_DENY_VERSION in $TOOLS_DIR"
		return 0
	fi
	command -v cargo >/dev/null || die "cargo is needed to install cargo-deny"
	log "installing cargo-deny $CARGO_DENY_VERSION (cargo install) into $TOOLS_DIR"
	cargo install --locked --quiet --version "$CARGO_DENY_VERSION" --root "$TOOLS_DIR" cargo-deny \
		|| die "cargo install cargo-deny@$CARGO_DENY_VERSION failed"
	"$bin" --version >&2
}

step_cargo_deny
