#!/usr/bin/env bash
# Profiles cairn's first backup of the Linux 6.1 tree and its restore with
# `perf record -g`, and prints the flat hotspots (self time per symbol) and
# the split by shared object. Used for "where the time goes" in
# docs/benchmarks.md.
#
#   sudo benches/profile.sh            # needs perf (Debian: linux-perf)
#
# Environment: CAIRN_DATA_DIR (where linux-6.1/ is), PROFILE_DIR (scratch,
# default /var/tmp/cairn-profile), PERF_FREQ (default 999 Hz).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${CAIRN_DATA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cairn-test-data}
dir=${PROFILE_DIR:-/var/tmp/cairn-profile}
freq=${PERF_FREQ:-999}
[ -f "$data/linux-6.1/Makefile" ] || CAIRN_DATA_DIR=$data tests/fetch-test-data.sh 6.1 >/dev/null
command -v perf >/dev/null || { echo "perf is needed (apt-get install linux-perf)" >&2; exit 1; }
cargo build --release -q -p cairn-cli
cairn=$(pwd)/target/release/cairn

rm -rf "$dir"
mkdir -p "$dir"
export CAIRN_PASSWORD=bench-password CAIRN_CACHE_DIR=$dir/cache
"$cairn" -r "$dir/repo" init >/dev/null
drop() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }

report() { # report NAME
  echo "== $1: top symbols by self time (perf report --no-children)"
  perf report -i "$dir/$1.data" --no-children --sort symbol --stdio --percent-limit 0.7 2>/dev/null |
    grep -E '^ +[0-9]' | head -n 40
  echo "== $1: by shared object"
  perf report -i "$dir/$1.data" --no-children --sort dso --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -n 12
  echo "== $1: wall and CPU (GNU time)"
  grep -E 'Elapsed|User time|System time|Percent of CPU|Maximum resident' "$dir/$1.time"
}

drop
/usr/bin/time -v -o "$dir/backup.time" perf record -q -F "$freq" -g -o "$dir/backup.data" -- \
  "$cairn" -r "$dir/repo" backup "$data/linux-6.1" >/dev/null
drop
/usr/bin/time -v -o "$dir/restore.time" perf record -q -F "$freq" -g -o "$dir/restore.data" -- \
  "$cairn" -r "$dir/repo" restore latest --target "$dir/restore" >/dev/null
report backup
report restore
