#!/usr/bin/env bash
#
# scripts/ui-screenshots.sh — regenerates the web UI screenshots in docs/
# (ui-overview.png, ui-vm.png, ui-events.png, ui-vm-dark.png) by running the browser
# test against the lab with screenshots on: the pictures show real lab guests, taken
# by headless Chromium at 1440 px wide. Needs the lab (scripts/lab.sh up) and
# Chromium (scripts/install-test-peers.sh); run as root like the other lab scripts.
#
#   bash scripts/ui-screenshots.sh [OUTPUT_DIR]     default: docs/

set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath "${1:-docs}")
mkdir -p "$out"
VADVISOR_UI_SCREENSHOTS="$out" cargo test --locked --test ui_browser -- --ignored --nocapture
ls -l "$out"/ui-*.png
