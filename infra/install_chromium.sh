#!/usr/bin/env bash
# Installs a headless browser for the dashboard's browser test
# (tests/integration/test_dashboard_browser.py): Debian's chromium and chromium-driver.
# Idempotent: does nothing when both are present. Needs root for apt-get; otherwise it says
# what to run, and the browser test skips with that reason.
set -euo pipefail

say() { printf '[chromium] %s\n' "$*"; }

have() { command -v "$1" >/dev/null 2>&1; }

if { have chromium || have chromium-browser; } && have chromedriver; then
  say "present: $( (chromium --version || chromium-browser --version) 2>/dev/null | head -1), $(chromedriver --version | head -1)"
  exit 0
fi

if [ "$(id -u)" = 0 ] && have apt-get; then
  say "installing chromium and chromium-driver with apt-get"
  if [ ! -f /var/lib/apt/periodic/ffs-updated ]; then
    apt-get update -qq >/dev/null && mkdir -p /var/lib/apt/periodic && touch /var/lib/apt/periodic/ffs-updated
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
  say "installed: $(chromium --version 2>/dev/null | head -1), $(chromedriver --version | head -1)"
else
  say "chromium / chromedriver missing and not root (or no apt-get): install them with"
  say "  sudo apt-get install chromium chromium-driver   (Debian/Ubuntu)"
  say "the dashboard browser test skips until then"
fi
