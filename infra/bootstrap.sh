#!/usr/bin/env bash
# Sets up everything the project needs on a fresh machine, idempotently:
#   - Java 17 for Spark (installed with apt-get when missing and we are root),
#   - redis-server for the online store's tests (same),
#   - PostgreSQL's server binaries for the Feast SQL registry's tests (same; the tests
#     start their own server, never the system one the package may set up),
#   - the JVM parts (Apache Kafka, Spark's Kafka connector, Apache Pinot) from Maven Central
#     into a Maven cache, pinned in infra/jvm/pom.xml (infra/jvm.sh),
#   - a virtualenv in .venv with the project and its test dependencies, at the versions
#     pinned in requirements.lock.
# Re-running is cheap: the venv is rebuilt only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*"; }

apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing $* with apt-get"
    if [ ! -f /var/lib/apt/periodic/ffs-updated ]; then
      apt-get update -qq >/dev/null && mkdir -p /var/lib/apt/periodic && touch /var/lib/apt/periodic/ffs-updated
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    say "missing $*: install it with your package manager (needs root)"; return 1
  fi
}

java_ok() { command -v java >/dev/null && java -version 2>&1 | grep -qE 'version "(1[7-9]|2[0-9])'; }
java_ok || apt_install openjdk-17-jre-headless || { say "Spark needs Java 17+"; exit 1; }
command -v redis-server >/dev/null || apt_install redis-server || say "redis-server missing: online tests will skip"
# Debian keeps initdb/postgres in /usr/lib/postgresql/<version>/bin, off PATH (ffs/postgres.py looks there)
pg_ok() { compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null; }
pg_ok || apt_install postgresql || say "PostgreSQL missing: the SQL registry tests will fail"
bash infra/jvm.sh
bash infra/install_chromium.sh || say "no Chromium: the dashboard's browser test will skip"

PY=""
# Python 3.11 only: the version CI tests and requirements.lock is resolved for
for candidate in python3.11 python3; do
  if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    PY=$candidate; break
  fi
done
[ -n "$PY" ] || { say "need Python 3.11 (the version the project is tested and locked on)"; exit 1; }

stamp=.venv/.ffs-installed
want=$(cat pyproject.toml requirements.lock | sha256sum | cut -c1-16)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "creating .venv with $($PY --version) and installing the project (2-3 minutes the first time)"
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  log=.venv/install.log
  # pip's notes about this machine's optional local indexes are noise; a failure is not
  # the lock first (the same versions on every machine), then the project without resolving
  if ! { .venv/bin/python -m pip install -q --upgrade pip \
         && .venv/bin/python -m pip install -q -r requirements.lock \
         && .venv/bin/python -m pip install -q --no-deps -e '.[test]'; } >"$log" 2>&1; then
    grep -v "is ignored" "$log" | tail -30; say "pip install failed (full log: $log)"; exit 1
  fi
  .venv/bin/python -m ffs.cli --help >/dev/null || { say "the installed project does not import"; exit 1; }
  echo "$want" > "$stamp"
fi
say "ready: $(.venv/bin/python --version), $(java -version 2>&1 | head -1)"
