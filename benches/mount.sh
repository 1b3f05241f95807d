#!/usr/bin/env bash
# Benchmark of `cairn mount` (see docs/mount.md for results):
#   1. sequential read of one large file through the mount, against
#      `cairn restore` of the same file (goal: the mount at >= 70 % of restore);
#   2. `ls -lR` (and `find`, and `cairn ls -l` for reference) over the
#      snapshot of a big tree (the Linux 6.1 sources if present, else a
#      generated tree of 50,000 small files).
#
# Usage: benches/mount.sh            (as root, or a user allowed to use fusermount3)
# Environment:
#   CAIRN_BIN       the binary to measure (default: target/release/cairn, built if missing)
#   BENCH_FILE_MB   size of the large file in MiB (default 1024)
#   BENCH_TREE      tree for `ls -lR` (default: $CAIRN_KERNEL_TREE, /work/cache/linux-6.1,
#                   ~/.cache/cairn-test-data/linux-6.1, else generated)
#   BENCH_RUNS      runs of each measurement; the best is reported (default 3)
#   BENCH_DIR       scratch directory (default: a new one under /tmp, removed at the end)
# Repository files stay in the page cache between runs (nothing drops caches),
# so both sides read the repository warm; the mount is remounted before every
# read so the file's own pages are never cached.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${CAIRN_BIN:-$PWD/target/release/cairn}
if [ ! -x "$bin" ]; then cargo build --release -p cairn-cli >&2; fi
file_mb=${BENCH_FILE_MB:-1024}
runs=${BENCH_RUNS:-3}
tree=${BENCH_TREE:-${CAIRN_KERNEL_TREE:-}}
for t in /work/cache/linux-6.1 "$HOME/.cache/cairn-test-data/linux-6.1"; do
  [ -n "$tree" ] || { [ -d "$t" ] && tree=$t; } || true
done

work=${BENCH_DIR:-$(mktemp -d /tmp/cairn-bench-mount-XXXXXX)}
mnt=$work/mnt
mkdir -p "$mnt"
export CAIRN_REPOSITORY=$work/repo CAIRN_PASSWORD=bench CAIRN_CACHE_DIR=$work/cache
export CAIRN_TEST_INSECURE_KDF=1 # the KDF is not what is measured
mount_pid=
cleanup() {
  [ -n "$mount_pid" ] && kill -INT "$mount_pid" 2>/dev/null && wait "$mount_pid" 2>/dev/null || true
  mountpoint -q "$mnt" && { fusermount3 -uz "$mnt" 2>/dev/null || umount -l "$mnt"; }
  [ -n "${BENCH_DIR:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc -l; }
mibps() { echo "scale=0; $1 / $2" | bc -l; }
best() { printf '%s\n' "$@" | sort -g | head -n1; }

mount_fs() {
  "$bin" mount "$mnt" 2>>"$work/mount.log" &
  mount_pid=$!
  for _ in $(seq 600); do mountpoint -q "$mnt" && return 0; sleep 0.05; done
  echo "mount did not come up: $(cat "$work/mount.log")" >&2
  exit 1
}
unmount_fs() {
  kill -INT "$mount_pid"
  wait "$mount_pid"
  mount_pid=
}

"$bin" init >/dev/null 2>&1
mkdir -p "$work/src"
echo "writing a ${file_mb} MiB file of random bytes" >&2
head -c "$((file_mb << 20))" /dev/urandom >"$work/src/big"
"$bin" backup "$work/src" --tag file >/dev/null 2>&1
big_rel=${work#/}/src/big

echo "sequential read: restore vs mount, $runs runs each" >&2
restore_t=() mount_t=()
for _ in $(seq "$runs"); do
  rm -rf "$work/restore"
  t0=$(now)
  "$bin" restore latest --target "$work/restore" >/dev/null 2>&1
  t1=$(now)
  restore_t+=("$(secs "$t0" "$t1")")
  cmp -s "$work/src/big" "$work/restore/$big_rel" || { echo "restore differs" >&2; exit 1; }

  mount_fs
  t0=$(now)
  cat "$mnt/latest/$big_rel" >/dev/null
  t1=$(now)
  mount_t+=("$(secs "$t0" "$t1")")
  unmount_fs
done
rm -rf "$work/restore"
r=$(best "${restore_t[@]}") m=$(best "${mount_t[@]}")

if [ -z "$tree" ]; then
  tree=$work/tree
  echo "generating a tree of 50,000 files in $tree" >&2
  for d in $(seq 0 499); do
    mkdir -p "$tree/d$((d / 50))/s$d"
    for f in $(seq 0 99); do echo "file $d/$f" >"$tree/d$((d / 50))/s$d/f$f.txt"; done
  done
fi
files=$(find "$tree" | wc -l)
echo "backing up $tree ($files entries)" >&2
"$bin" backup "$tree" --tag tree >/dev/null 2>&1

echo "ls -lR and find over the snapshot, $runs runs (each on a fresh mount)" >&2
ls_t=() find_t=() cairn_ls_t=()
for _ in $(seq "$runs"); do
  mount_fs
  snap=$(readlink "$mnt/latest")
  t0=$(now)
  n=$(ls -lR "$mnt/$snap" | wc -l)
  t1=$(now)
  ls_t+=("$(secs "$t0" "$t1")")
  unmount_fs
  mount_fs
  t0=$(now)
  find "$mnt/$snap" -printf '%m %u %s %T@ %p\n' >/dev/null
  t1=$(now)
  find_t+=("$(secs "$t0" "$t1")")
  unmount_fs
  t0=$(now)
  "$bin" ls latest -l >/dev/null
  t1=$(now)
  cairn_ls_t+=("$(secs "$t0" "$t1")")
done
t0=$(now)
ls -lR "$tree" >/dev/null
t1=$(now)
local_ls=$(secs "$t0" "$t1")

cat <<EOF
cairn mount benchmark ($(date -u +%Y-%m-%d), $(nproc) cores, $("$bin" --version))
large file: ${file_mb} MiB of random bytes, best of $runs
  cairn restore:        $(printf '%.2f' "$r") s  $(mibps "$file_mb" "$r") MiB/s
  cat through mount:    $(printf '%.2f' "$m") s  $(mibps "$file_mb" "$m") MiB/s
  mount / restore:      $(echo "scale=0; 100 * $r / $m" | bc -l) %
ls -lR over a snapshot of $tree ($files entries, $n lines), fresh mount, best of $runs
  ls -lR, mount:        $(printf '%.2f' "$(best "${ls_t[@]}")") s (two getxattr requests per entry)
  find -printf, mount:  $(printf '%.2f' "$(best "${find_t[@]}")") s (the same metadata, no xattrs)
  cairn ls -l:          $(printf '%.2f' "$(best "${cairn_ls_t[@]}")") s (no FUSE)
  ls -lR, source disk:  $(printf '%.2f' "$local_ls") s (page cache warm)
EOF
