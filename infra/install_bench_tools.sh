#!/usr/bin/env bash
# Installs what the benchmarks use beyond the project itself: wrk, a compiled HTTP load
# generator (benchmarks/wrk_load.py), from Debian's packages. `make bench` runs this first.
# Idempotent: does nothing when wrk is present. Needs root for apt-get; otherwise it says
# what to run, and the HTTP benchmarks use their Python generator alone and say so.
set -euo pipefail

say() { printf '[bench-tools] %s\n' "$*"; }

if command -v wrk >/dev/null 2>&1; then
  say "present: $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2)"
  exit 0
fi

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  say "installing wrk with apt-get"
  if [ ! -f /var/lib/apt/periodic/ffs-updated ]; then
    apt-get update -qq >/dev/null && mkdir -p /var/lib/apt/periodic && touch /var/lib/apt/periodic/ffs-updated
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null
  say "installed: $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2)"
else
  say "wrk missing and not root (or no apt-get): install it with"
  say "  sudo apt-get install wrk   (Debian/Ubuntu)"
  say "the HTTP benchmarks use their Python load generator alone until then"
fi
