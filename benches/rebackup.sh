#!/usr/bin/env bash
# Unchanged re-backup of a source tree: cairn next to restic, warm and cold.
#
# Copies SRC (default: the Linux 6.1 tree) with `cp -a`, backs it up once
# with each tool into a fresh repository (timed: the first backup), times
# one unchanged re-backup per tool (cold: it pays for anything the first
# backup changed), then ROUNDS more per tool, alternating the tools, first
# with the page cache warm, then dropped before each run (cold; needs root).
# Prints one line per measurement (wall and CPU seconds) and the medians;
# checks that the backups leave the atimes of the copy alone.
#
# Usage (from the repository root, after `cargo build --release -p cairn-cli`):
#   benches/rebackup.sh [SRC]
# Environment:
#   WORK    scratch directory (default /tmp/cairn-rebackup), deleted at the end
#   ROUNDS  measurements per tool and condition (default 3)
#   CAIRN   the cairn binary (default target/release/cairn)
#   KEEP=1  keep WORK (repositories and copy) for a later run
set -euo pipefail

src=${1:-${CAIRN_DATA_DIR:-/work/cache}/linux-6.1}
work=${WORK:-/tmp/cairn-rebackup}
rounds=${ROUNDS:-3}
cairn=$(realpath "${CAIRN:-target/release/cairn}")
command -v restic >/dev/null || { echo "restic is not installed (apt-get install -y restic)" >&2; exit 1; }
[ -x "$cairn" ] || { echo "$cairn missing: cargo build --release -p cairn-cli" >&2; exit 1; }

export CAIRN_PASSWORD=bench-password RESTIC_PASSWORD=bench-password
export CAIRN_REPOSITORY=$work/cairn-repo RESTIC_REPOSITORY=$work/restic-repo
export CAIRN_CACHE_DIR=$work/cache/cairn RESTIC_CACHE_DIR=$work/cache/restic
copy=$work/src

drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
# "WALL CPU": seconds of wall time and of user + system CPU time of "$@"
# (its output is kept in last.out; a failure stops the script)
timed() {
  /usr/bin/time -f '%e %U %S' -o "$work/last.time" "$@" >"$work/last.out" 2>"$work/last.err" ||
    { cat "$work/last.err" >&2; exit 1; }
  awk '{printf "%.2f %.2f\n", $1, $2 + $3}' "$work/last.time"
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
# A digest of every entry's atime. Not `find`: its own directory reads
# would move the directory atimes it reports (O_NOATIME here).
atimes() {
  python3 - "$copy" <<'PY'
import hashlib, os, sys
out = []
def walk(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOATIME)
    try:
        for e in sorted(os.scandir(fd), key=lambda e: e.name):
            p = os.path.join(path, e.name)
            st = os.lstat(p)
            out.append(f"{st.st_atime_ns} {p}")
            if e.is_dir(follow_symlinks=False):
                walk(p)
    finally:
        os.close(fd)
walk(sys.argv[1])
print(hashlib.sha256("\n".join(out).encode()).hexdigest()[:16])
PY
}

if [ ! -d "$copy" ]; then
  mkdir -p "$work"
  cp -a "$src" "$copy"
  "$cairn" init >/dev/null
  restic init >/dev/null
  before=$(atimes)
  drop
  echo "first cairn $(timed "$cairn" backup "$copy")"
  after=$(atimes)
  echo "atimes unchanged by cairn's first backup: $([ "$before" = "$after" ] && echo yes || echo no)"
  drop
  echo "first restic $(timed restic backup "$copy")"
  echo "atimes unchanged by restic's first backup: $([ "$after" = "$(atimes)" ] && echo yes || echo no)"
  # The first re-backup is the one that pays if the first backup changed
  # anything it records (atimes); later ones compare against it.
  drop
  s=$(timed "$cairn" --json backup "$copy")
  echo "first-again cairn $s $(tail -n1 "$work/last.out" | jq -c '{files_changed,files_unmodified,blobs_added,data_added}')"
  drop
  echo "first-again restic $(timed restic backup "$copy")"
fi
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
before=$(atimes)
for cond in warm cold; do
  for i in $(seq "$rounds"); do
    for tool in cairn restic; do
      [ "$cond" = cold ] && drop
      if [ "$tool" = cairn ]; then
        s=$(timed "$cairn" --json backup "$copy")
        echo "$cond cairn $s $(tail -n1 "$work/last.out" | jq -c '{files_changed,files_unmodified,blobs_added,data_added}')"
      else
        echo "$cond restic $(timed restic backup "$copy")"
      fi
    done
  done
done | tee "$work/results"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "atimes unchanged by the re-backups: $([ "$before" = "$(atimes)" ] && echo yes || echo no)"
for cond in warm cold; do
  for tool in cairn restic; do
    echo "median $cond $tool: $(awk -v c=$cond -v t=$tool '$1==c && $2==t {print $3}' "$work/results" | median) s wall, $(awk -v c=$cond -v t=$tool '$1==c && $2==t {print $4}' "$work/results" | median) s CPU"
  done
done
[ "${KEEP:-0}" = 1 ] || rm -rf "$work"
