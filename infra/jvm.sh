#!/usr/bin/env bash
# Resolves the JVM parts declared in infra/jvm/pom.xml (Kafka, Spark's Kafka connector, Pinot)
# from Maven Central into a Maven repository cache shared by every checkout on this machine
# ($FFS_M2_REPO, default ~/.cache/ffs/m2), and writes one classpath file per module into
# .jvm/ (ffs/jvm.py reads them). Re-runs only when a pom changed or a jar went missing.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*"; }
repo=${FFS_M2_REPO:-$HOME/.cache/ffs/m2}
modules=(kafka spark-kafka pinot)
want=$(cat infra/jvm/pom.xml infra/jvm/*/pom.xml | sha256sum | cut -c1-16)

fresh() {
  [ "$(cat .jvm/.resolved 2>/dev/null)" = "$want:$repo" ] || return 1
  for m in "${modules[@]}"; do
    [ -s ".jvm/$m.classpath" ] || return 1
    tr ':' '\n' < ".jvm/$m.classpath" | while read -r jar; do [ -f "$jar" ] || exit 1; done || return 1
  done
}

if fresh; then
  say "JVM parts ready (Maven cache $repo)"
  exit 0
fi
if ! command -v mvn >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing maven with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq maven >/dev/null
  else
    say "Maven is needed to fetch Kafka, Spark's Kafka connector and Pinot: install maven"; exit 1
  fi
fi
mkdir -p .jvm "$repo"
started=$(date +%s)
say "resolving Kafka, Spark's Kafka connector and Pinot from Maven Central into $repo (about 250 MB the first time)"
log=.jvm/resolve.log
: >"$log"
for m in "${modules[@]}"; do
  if ! mvn -B -q -f "infra/jvm/$m/pom.xml" -Dmaven.repo.local="$repo" \
        dependency:build-classpath -Dmdep.outputFile="$PWD/.jvm/$m.classpath" >>"$log" 2>&1; then
    grep -E 'ERROR' "$log" | head -10
    say "resolving the JVM module $m failed (full log: $log)"; exit 1
  fi
done
echo "$want:$repo" > .jvm/.resolved
say "JVM parts resolved in $(( $(date +%s) - started )) s"
