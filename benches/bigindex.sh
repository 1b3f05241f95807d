#!/usr/bin/env bash
# Backup throughput and memory with a big index (issue 5: "with 10 M blobs
# already in the index, backup throughput within 10 % of an empty
# repository's, and memory flat").
#
#   sudo benches/bigindex.sh [ROUNDS]     # ROUNDS defaults to 3
#
# Once (kept between runs in $BENCH_DIR/fixture-N): a repository whose index
# holds N real blobs (default 10 M), written by the bigindex-fill example
# (benches/bigindex_fill.rs): 16-byte blobs in verified packs of 1,000, 32
# packs per index file, absorbed into the local redb index as a backup
# would. The fill is timed, and so is opening that repository with an empty
# cache (the local index rebuilt from the index files, as on a new machine).
# Then, every round, into (1) an empty repository and (2) a copy of the
# fixture (repository hard-linked, since objects are never changed in place;
# cache with its redb copied), in alternating order:
#   backup of the source tree (every chunk is new: looked up, not found, stored);
#   the same backup again (unchanged files: their chunks looked up per file);
#   backup --force (every file read and chunked: every chunk looked up, found).
# Wall time, user + system CPU and peak RSS come from GNU time -v. The report
# replaces the part of docs/benchmarks.md between the "bigindex:begin" and
# "bigindex:end" markers (appended if they are missing).
#
# Environment:
#   ROUNDS          rounds (default 3; the first argument wins)
#   BIG_BLOBS       blobs in the fixture's index (default 10000000)
#   BENCH_DIR       scratch directory (default /var/tmp/cairn-bigindex); the
#                   fixture needs about 3 GB per 10 M blobs, each copy 2 GB more
#   CAIRN_DATA_DIR  where linux-6.1/ is or is fetched to (see tests/fetch-test-data.sh)
#   SOURCE          the tree to back up (default $CAIRN_DATA_DIR/linux-6.1)
#   DROP_CACHES     1 (default): drop the page cache before each timed step
#                   (as root), so the source and the redb file are read cold;
#                   0: keep them warm
#   NEW_FIXTURE     1: rebuild the fixture even if one with BIG_BLOBS exists
#   REBUILD         0: skip timing the rebuild of the local index (default 1)
#   CAIRN_BIN       a cairn binary to measure instead of building this checkout's
#                   (for comparing builds; the fixture is still filled by this checkout)
#   REPORT          report file (default docs/benchmarks.md)
#   BENCH_NOTE      a line of free text added to the report
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

ROUNDS=${1:-${ROUNDS:-3}}
BIG_BLOBS=${BIG_BLOBS:-10000000}
BENCH_DIR=${BENCH_DIR:-/var/tmp/cairn-bigindex}
REPORT=${REPORT:-docs/benchmarks.md}
data=${CAIRN_DATA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cairn-test-data}
SOURCE=${SOURCE:-$data/linux-6.1}
STEPS="backup backup-again backup-force"
started=$(date -u '+%Y-%m-%d %H:%M UTC')
start_s=$(date +%s)

say() { echo "bigindex.sh: $*" >&2; }
need() { # need COMMAND PACKAGE
  command -v "$1" >/dev/null 2>&1 && return 0
  say "installing $2 (apt-get)"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null
}
need jq jq
[ -x /usr/bin/time ] || need /usr/bin/time time
command -v cargo >/dev/null || { say "cargo is needed to build cairn (https://rustup.rs)"; exit 1; }
if [ "$SOURCE" = "$data/linux-6.1" ] && [ ! -f "$data/linux-6.1/Makefile" ]; then
  CAIRN_DATA_DIR=$data tests/fetch-test-data.sh 6.1 >/dev/null
fi
[ -d "$SOURCE" ] || { say "no source tree at $SOURCE"; exit 1; }

say "building cairn (release)"
if [ -z "${CAIRN_BIN:-}" ]; then cargo build --release -q -p cairn-cli; fi
CAIRN=${CAIRN_BIN:-$root/target/release/cairn}
FILL=$root/target/release/examples/bigindex-fill

mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
fixture=$BENCH_DIR/fixture-$BIG_BLOBS
work=$BENCH_DIR/work
logs=$BENCH_DIR/logs
results=$BENCH_DIR/results.tsv
rm -rf "$logs" "$work" "$BENCH_DIR/rebuild-cache"
mkdir -p "$logs"
printf 'round\trepo\tstep\tseconds\tuser_s\tsys_s\tpeak_rss_kib\tcache_bytes\texit\n' >"$results"
export CAIRN_PASSWORD=bench-password

dropped=no
drop_caches() {
  # Always flush first: the copy of the fixture's cache must not be written
  # back during the timed step.
  sync
  [ "${DROP_CACHES:-1}" = 1 ] || return 0
  if echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then dropped=yes; fi
  return 0
}
bytes() { du -sb "$1" 2>/dev/null | cut -f1 || echo 0; }
tval() { awk -F': ' -v k="$1" '$1 ~ k { print $2 }' "$2" 2>/dev/null | head -n1; }

# measure ROUND REPO STEP CACHE CMD...: runs CMD under GNU time, appends a row.
measure() {
  local round=$1 variant=$2 step=$3 cache=$4; shift 4
  local base=$logs/$round-$variant-$step rc=0 t0 t1 secs
  drop_caches
  t0=$(date +%s%N)
  /usr/bin/time -v -o "$base.time" "$@" >"$base.out" 2>"$base.err" || rc=$?
  t1=$(date +%s%N)
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$variant" "$step" "$secs" \
    "$(tval 'User time' "$base.time")" "$(tval 'System time' "$base.time")" \
    "$(tval 'Maximum resident' "$base.time")" "$(bytes "$cache")" "$rc" >>"$results"
  say "round $round $variant $step: ${secs}s, peak RSS $(tval 'Maximum resident' "$base.time") KiB, exit $rc"
  [ "$rc" = 0 ] || { say "failed; see $base.err"; tail -n5 "$base.err" >&2; }
}

# ---- the fixture -----------------------------------------------------------
if [ "${NEW_FIXTURE:-0}" = 1 ] || [ ! -s "$fixture/fill.json" ]; then
  say "building the fixture: $BIG_BLOBS blobs (minutes)"
  cargo build --release -q -p cairn-suite --example bigindex-fill
  rm -rf "$fixture"
  mkdir -p "$fixture"
  "$CAIRN" -r "$fixture/repo" --cache-dir "$fixture/cache" init >/dev/null
  /usr/bin/time -v -o "$fixture/fill.time" "$FILL" "$fixture/repo" "$fixture/cache" "$BIG_BLOBS" \
    >"$fixture/fill.json.tmp"
  mv "$fixture/fill.json.tmp" "$fixture/fill.json"
fi
fill_s=$(jq -r .seconds "$fixture/fill.json")
fill_rss=$(tval 'Maximum resident' "$fixture/fill.time")
fill_packs=$(jq -r .packs "$fixture/fill.json")
fill_files=$(jq -r .index_files "$fixture/fill.json")
[ "$(jq -r .index_blobs "$fixture/fill.json")" = "$BIG_BLOBS" ] ||
  { say "the fixture's index does not hold $BIG_BLOBS blobs"; exit 1; }
fixture_repo_bytes=$(bytes "$fixture/repo")
fixture_cache_bytes=$(bytes "$fixture/cache")
redb_file=$(find "$fixture/cache" -name index.redb | head -n1)
redb_bytes=$(stat -c %s "$redb_file")

# Opening with an empty cache rebuilds the local index from the index files.
if [ "${REBUILD:-1}" = 1 ]; then
  measure 0 fixture rebuild "$BENCH_DIR/rebuild-cache" \
    "$CAIRN" -r "$fixture/repo" --cache-dir "$BENCH_DIR/rebuild-cache" snapshots
  rm -rf "$BENCH_DIR/rebuild-cache"
fi

# ---- rounds ----------------------------------------------------------------
prepare() { # prepare VARIANT
  rm -rf "$work"
  mkdir -p "$work"
  case $1 in
    empty) "$CAIRN" -r "$work/repo" --cache-dir "$work/cache" init >/dev/null ;;
    big)
      cp -al "$fixture/repo" "$work/repo"
      cp -a "$fixture/cache" "$work/cache"
      ;;
  esac
}
run_variant() { # run_variant ROUND VARIANT
  local r=$1 v=$2 c=(-r "$work/repo" --cache-dir "$work/cache")
  prepare "$v"
  measure "$r" "$v" backup "$work/cache" "$CAIRN" "${c[@]}" backup --json "$SOURCE"
  measure "$r" "$v" backup-again "$work/cache" "$CAIRN" "${c[@]}" backup --json "$SOURCE"
  measure "$r" "$v" backup-force "$work/cache" "$CAIRN" "${c[@]}" backup --json --force "$SOURCE"
  rm -rf "$work"
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for ((r = 1; r <= ROUNDS; r++)); do
  if ((r % 2)); then order="empty big"; else order="big empty"; fi
  for v in $order; do run_variant "$r" "$v"; done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
elapsed=$(($(date +%s) - start_s))

# ---- report ----------------------------------------------------------------
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() { # col REPO STEP COLUMN -> median
  awk -F'\t' -v t="$1" -v s="$2" -v c="$3" 'NR > 1 && $2 == t && $3 == s { print $c }' "$results" | median
}
cpu() { # cpu REPO STEP -> median of user + sys
  awk -F'\t' -v t="$1" -v s="$2" 'NR > 1 && $2 == t && $3 == s { print $5 + $6 }' "$results" | median
}
fails() { awk -F'\t' 'NR > 1 && $9 != 0' "$results" | wc -l; }
src_bytes=$(du -sb "$SOURCE" | cut -f1)
src_files=$(find "$SOURCE" -type f | wc -l)
mbs() { awk -v b="$src_bytes" -v s="$1" 'BEGIN { if (s == "" || s + 0 == 0) print "–"; else printf "%.1f", b / 1e6 / s }'; }
mib() { awk -v k="$1" 'BEGIN { if (k == "") print "–"; else printf "%.0f", k / 1024 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "–"; else printf "%.2f", a / b }'; }
cairn_rev=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
bin_desc="git $cairn_rev"
git -C "$root" diff --quiet HEAD -- engine cli 2>/dev/null || bin_desc="$bin_desc with uncommitted changes"
[ -n "${CAIRN_BIN:-}" ] && bin_desc="binary \`$CAIRN_BIN\`; script at git $cairn_rev"
cpu_model=$(lscpu | awk -F: '/Model name/ { gsub(/^ +/, "", $2); print $2; exit }')
fs_dev=$(df -P "$BENCH_DIR" | awk 'NR == 2 { print $1 }')
fs_type=$(df -PT "$BENCH_DIR" | awk 'NR == 2 { print $2 }')
title() {
  case $1 in
    backup) echo "first backup (every chunk new)" ;;
    backup-again) echo "unchanged re-backup (parent snapshot)" ;;
    backup-force) echo "re-backup --force (every chunk looked up and found)" ;;
  esac
}

tmp_report=$(mktemp)
{
  echo "<!-- bigindex:begin (written by benches/bigindex.sh; edit outside these markers) -->"
  echo "## Backup with a big index"
  echo
  echo "Run on $started, $ROUNDS round(s), the two repositories in alternating order; the whole run took $((elapsed / 60)) min."
  echo "Medians over the rounds. Reproduce (as root on Debian 12, from the repository root):"
  echo
  echo '```sh'
  echo "ROUNDS=$ROUNDS BIG_BLOBS=$BIG_BLOBS benches/bigindex.sh"
  echo '```'
  echo
  echo "- Machine: $cpu_model, $(nproc) logical CPUs, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM; scratch on $fs_dev ($fs_type); $(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r)"
  echo "- Load average (1/5/15 min) before the run: $load_before; after: $load_after"
  echo "- cairn $("$CAIRN" --version 2>/dev/null | awk '{ print $NF }') ($bin_desc), release build, default settings"
  echo "- Source: \`$SOURCE\`, $src_files files, $((src_bytes / 1000000)) MB"
  echo "- Page cache dropped before each timed step (source and redb file read cold): $dropped"
  [ -n "${BENCH_NOTE:-}" ] && echo "- Note: $BENCH_NOTE"
  echo "- Fixture: $BIG_BLOBS blobs of 16 bytes in $fill_packs packs and $fill_files index files"
  echo "  (repository $((fixture_repo_bytes / 1048576)) MiB, local redb index $((redb_bytes / 1048576)) MiB),"
  echo "  written by \`bigindex-fill\` in $fill_s s (peak RSS $(mib "$fill_rss") MiB)"
  if [ "${REBUILD:-1}" = 1 ]; then
    echo "- Opening the fixture with an empty cache (local index rebuilt from its $fill_files index files):"
    echo "  $(col fixture rebuild 4) s, peak RSS $(mib "$(col fixture rebuild 7)") MiB"
  fi
  echo
  echo "| step | empty: s | MB/s | CPU s | peak RSS MiB | $BIG_BLOBS blobs: s | MB/s | CPU s | peak RSS MiB | throughput ratio | RSS ratio |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  for s in $STEPS; do
    e=$(col empty "$s" 4) b=$(col big "$s" 4)
    echo "| $(title "$s") | $e | $(mbs "$e") | $(cpu empty "$s") | $(mib "$(col empty "$s" 7)") | $b | $(mbs "$b") | $(cpu big "$s") | $(mib "$(col big "$s" 7)") | $(ratio "$e" "$b") | $(ratio "$(col big "$s" 7)" "$(col empty "$s" 7)") |"
  done
  echo
  echo "Throughput ratio: the big-index repository's throughput over the empty one's (1.00 = equal;"
  echo "the target is ≥ 0.90). RSS ratio: its peak RSS over the empty one's (flat: ≤ 1.10)."
  echo
  echo "| target (issue 5) | measured | met? |"
  echo "|---|---|---|"
  for s in $STEPS; do
    tr=$(ratio "$(col empty "$s" 4)" "$(col big "$s" 4)")
    rr=$(ratio "$(col big "$s" 7)" "$(col empty "$s" 7)")
    ok=$(awk -v t="$tr" -v m="$rr" 'BEGIN { if (t == "–" || m == "–") print "not measured"; else if (t + 0 >= 0.90 && m + 0 <= 1.10) print "met"; else print "**not met**" }')
    echo "| $(title "$s"): throughput within 10 %, memory flat | throughput $tr, RSS $rr | $ok |"
  done
  [ "$(fails)" = 0 ] || echo "| every step exited 0 | $(fails) failed | **not met** |"
  echo
  echo "<details><summary>Every measurement</summary>"
  echo
  echo "| round | repository | step | seconds | user s | sys s | peak RSS (KiB) | cache (bytes) | exit |"
  echo "|---|---|---|---|---|---|---|---|---|"
  awk -F'\t' 'NR > 1 { print "| " $1 " | " $2 " | " $3 " | " $4 " | " $5 " | " $6 " | " $7 " | " $8 " | " $9 " |" }' "$results"
  echo
  echo "</details>"
  echo "<!-- bigindex:end -->"
} >"$tmp_report"

if [ -f "$REPORT" ] && grep -q '<!-- bigindex:begin' "$REPORT" && grep -q '<!-- bigindex:end -->' "$REPORT"; then
  awk -v f="$tmp_report" '
    /<!-- bigindex:begin/ { while ((getline l < f) > 0) print l; skip = 1; next }
    /<!-- bigindex:end -->/ { skip = 0; next }
    !skip { print }' "$REPORT" >"$REPORT.new"
  mv "$REPORT.new" "$REPORT"
else
  { echo; cat "$tmp_report"; } >>"$REPORT"
fi
rm -f "$tmp_report"
cp "$results" "$BENCH_DIR/results-$(date +%Y%m%d-%H%M%S).tsv"
say "wrote $REPORT (raw results: $results, logs: $logs; fixture kept in $fixture)"
