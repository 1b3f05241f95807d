#!/usr/bin/env bash
# Repository size and first-backup time with and without compression
# dictionaries: backs up Linux 6.1, then 6.12 synced over it into the same
# path (as benches/peers.sh does), with each cairn binary given.
#
#   benches/dict.sh BIN [BIN...]     e.g. /work/main/target/release/cairn target/release/cairn
#
# Environment:
#   BENCH_DIR       scratch directory (default /var/tmp/cairn-dict-bench), wiped per binary
#   CAIRN_DATA_DIR  where linux-6.1/ and linux-6.12/ are (tests/fetch-test-data.sh)
#   DROP_CACHES     1 (default) drops the page cache before each backup (needs root)
#
# Prints one line per step: binary, step, wall seconds, user+system CPU
# seconds, repository bytes, and the load average at the start.
set -euo pipefail
BENCH_DIR=${BENCH_DIR:-/var/tmp/cairn-dict-bench}
data=${CAIRN_DATA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cairn-test-data}
export CAIRN_PASSWORD=bench-password
drop() { [ "${DROP_CACHES:-1}" = 1 ] && sync && { echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }; return 0; }
printf 'binary\tstep\twall_s\tcpu_s\trepo_bytes\tload\n'
for bin in "$@"; do
  rm -rf "$BENCH_DIR"; mkdir -p "$BENCH_DIR"
  repo=$BENCH_DIR/repo src=$BENCH_DIR/src
  export CAIRN_CACHE_DIR=$BENCH_DIR/cache
  "$bin" -r "$repo" init >/dev/null
  rsync -a "$data/linux-6.1/" "$src/"
  for v in 6.1 6.12; do
    [ "$v" = 6.12 ] && rsync -rlp --checksum --delete "$data/linux-6.12/" "$src/"
    drop
    load=$(cut -d' ' -f1 /proc/loadavg)
    t0=$(date +%s%N)
    /usr/bin/time -f '%U %S' -o "$BENCH_DIR/time" "$bin" -r "$repo" backup --json "$src" >"$BENCH_DIR/out"
    t1=$(date +%s%N)
    cpu=$(awk '{ printf "%.2f", $1 + $2 }' "$BENCH_DIR/time")
    printf '%s\tbackup-%s\t%.2f\t%s\t%s\t%s\n' "$bin" "$v" "$(echo "($t1 - $t0) / 1000000000" | bc -l)" \
      "$cpu" "$(du -sb "$repo" | cut -f1)" "$load"
  done
  ls "$repo/dicts" 2>/dev/null | sed 's/^/  dictionary: /' || true
done
rm -rf "$BENCH_DIR"
