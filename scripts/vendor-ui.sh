#!/usr/bin/env bash
#
# scripts/vendor-ui.sh — copies the web UI's third-party files into the repository, so
# that `cargo build` and the Docker build never need npm (the files are compiled into
# the binary with include_bytes!).
#
#   bash scripts/vendor-ui.sh          fetch uPlot (pinned below) with `npm pack`, copy
#                                      its built files and licence, record the checksums
#   bash scripts/vendor-ui.sh --check  verify the committed files against the record
#                                      (no network; scripts/test.sh runs it)
#
# To upgrade: change UPLOT_VERSION, run the script, commit the vendor directory.

set -euo pipefail
cd "$(dirname "$0")/.."

UPLOT_VERSION=1.6.32
DEST=plugins/sinks/src/ui/assets/vendor
RECORD=$DEST/VENDORED
FILES=(uPlot.iife.min.js uPlot.min.css LICENSE)

die() {
	printf 'vendor-ui: error: %s\n' "$*" >&2
	exit 1
}

if [ "${1:-}" = --check ]; then
	[ -f "$RECORD" ] || die "$RECORD missing: run scripts/vendor-ui.sh"
	grep -q "^uplot $UPLOT_VERSION\$" "$RECORD" || die "$RECORD does not record uplot $UPLOT_VERSION"
	(cd "$DEST" && grep -E '^[0-9a-f]{64}  ' VENDORED | sha256sum --check --strict --quiet) ||
		die "vendored files differ from the checksums in $RECORD"
	n=$(grep -cE '^[0-9a-f]{64}  ' "$RECORD")
	[ "$n" -eq "${#FILES[@]}" ] || die "$RECORD lists $n files, expected ${#FILES[@]}"
	printf 'vendor-ui: uplot %s: %s files match %s\n' "$UPLOT_VERSION" "$n" "$RECORD"
	exit 0
fi

command -v npm >/dev/null || die "npm is needed to fetch uplot (apt-get install npm)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# npm verifies the tarball against the registry's integrity hash while packing.
(cd "$work" && npm pack --silent "uplot@$UPLOT_VERSION" >/dev/null) || die "npm pack uplot@$UPLOT_VERSION failed"
tarball=$(ls "$work"/uplot-*.tgz)
tar -xzf "$tarball" -C "$work"
mkdir -p "$DEST"
cp "$work/package/dist/uPlot.iife.min.js" "$work/package/dist/uPlot.min.css" "$work/package/LICENSE" "$DEST/"
{
	echo "# Written by scripts/vendor-ui.sh; checked by scripts/vendor-ui.sh --check."
	echo "# Source: https://www.npmjs.com/package/uplot (npm pack uplot@$UPLOT_VERSION), MIT licence."
	echo "uplot $UPLOT_VERSION"
	echo "tarball-sha256 $(sha256sum "$tarball" | cut -d' ' -f1)"
	(cd "$DEST" && sha256sum "${FILES[@]}")
} >"$RECORD"
printf 'vendor-ui: uplot %s copied into %s\n' "$UPLOT_VERSION" "$DEST"
cat "$RECORD"
