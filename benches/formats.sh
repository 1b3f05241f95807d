#!/bin/bash
# Paired first backup, restore and check --read-data of the Linux 6.1 tree into a
# format version 3 repository (small files compressed together) and a version 2 one
# (one frame per blob, with a dictionary), with the same build, alternating; the page
# cache is dropped before each step. Results: docs/benchmarks.md, "Reading the peer
# results (session 19)". Run as root from the repository root:
#   tests/fetch-test-data.sh 6.1 && ROUNDS=3 benches/formats.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p cairn-cli
bin=$PWD/target/release/cairn
data=${CAIRN_DATA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cairn-test-data}/linux-6.1
work=${BENCH_DIR:-/var/tmp/cairn-formats}
export CAIRN_PASSWORD=bench
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
mkdir -p "$work"
for round in $(seq "${ROUNDS:-3}"); do
  for v in 3 2; do
    r=$work/v$v
    rm -rf "$r" "$r-cache" "$r-out"
    "$bin" -r "$r" --cache-dir "$r-cache" init --format-version "$v" >/dev/null
    for step in backup restore check; do
      case $step in
        backup) args=(backup "$data") ;;
        restore) args=(restore latest --target "$r-out") ;;
        check) args=(check --read-data) ;;
      esac
      drop
      /usr/bin/time -f "format $v round $round $step: %e s wall, %U s user, %S s system, %M KiB peak" \
        "$bin" -r "$r" --cache-dir "$r-cache" "${args[@]}" >/dev/null
    done
    echo "format $v round $round repository: $(du -sb "$r" | cut -f1) bytes"
    rm -rf "$r-out"
  done
done
rm -rf "$work"
