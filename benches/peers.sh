#!/usr/bin/env bash
# cairn against its peers (restic, borg, and rustic when it is on PATH) on
# real data: the Linux 6.1 and 6.12 source trees from Debian's packages.
#
#   sudo benches/peers.sh [ROUNDS]        # ROUNDS defaults to 3
#
# For each tool in turn (the order rotates every round, so no tool always
# runs first or last), on the same disk, with repository and cache in a
# scratch directory:
#   init; backup of 6.1; backup of 6.1 again (unchanged); backup of 6.12;
#   restore of the 6.1 snapshot into an empty directory; check --read-data.
# Each tool backs up its own copy, $BENCH_DIR/tool-NAME/src/linux:
# 6.1 is copied there with `cp -a` before the first backup, and 6.12 is
# brought in with `rsync -rlp --checksum --delete`, as `git checkout` would:
# files whose content did not change are left untouched (same inode, mtime
# and ctime), the others are rewritten. Each tool sees exactly this.
# Wall time, peak RSS (GNU time -v) and repository size (du) are recorded
# after each step; the machine's own limits on the same tree (read every
# file, stat every entry, tar | zstd -3 -T0, cp -a) are measured every round
# too. The report (medians, ratios to restic in the same run) replaces the
# part of docs/benchmarks.md between the "peers:begin" and "peers:end" markers.
#
# Environment:
#   ROUNDS          repetitions (default 3; the first argument wins)
#   BENCH_DIR       scratch directory (default /var/tmp/cairn-bench); each tool's
#                   trees are kept until the end of the round (about 3 GB per tool)
#   CAIRN_DATA_DIR  where linux-6.1/ and linux-6.12/ are or are fetched to
#                   (default ~/.cache/cairn-test-data, see tests/fetch-test-data.sh)
#   TOOLS           tools to run (default "cairn restic borg rustic")
#   BORG_ENCRYPTION borg's encryption mode (default repokey-blake2)
#   REPORT          report file (default docs/benchmarks.md)
#   BENCH_NOTE      a line of free text added to the report (e.g. machine load)
#   DROP_CACHES     1 (default): drop the page cache before each step (as root;
#                   this also empties other processes' cache); 0: keep it warm
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

ROUNDS=${1:-${ROUNDS:-3}}
BENCH_DIR=${BENCH_DIR:-/var/tmp/cairn-bench}
TOOLS=${TOOLS:-cairn restic borg rustic}
BORG_ENCRYPTION=${BORG_ENCRYPTION:-repokey-blake2}
REPORT=${REPORT:-docs/benchmarks.md}
data=${CAIRN_DATA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cairn-test-data}
STEPS="init backup-6.1 backup-6.1-again backup-6.12 restore-6.1 check-read-data"
started=$(date -u '+%Y-%m-%d %H:%M UTC')
start_s=$(date +%s)

say() { echo "peers.sh: $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=
need() { # need COMMAND-OR-PATH PACKAGE
  command -v "$1" >/dev/null 2>&1 && [ "${1#/}" = "$1" ] && return 0
  [ -x "$1" ] && return 0
  say "installing $2 (apt-get)"
  if [ -z "$apt_updated" ]; then as_root apt-get update -q >/dev/null; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null
}

# ---- prerequisites -------------------------------------------------------
need restic restic
need borg borgbackup
need zstd zstd
need rsync rsync
need jq jq
need /usr/bin/time time
command -v cargo >/dev/null || { say "cargo is needed to build cairn (https://rustup.rs)"; exit 1; }

notes=()
tools=()
for t in $TOOLS; do
  if [ "$t" = rustic ] && ! command -v rustic >/dev/null 2>&1; then
    notes+=("rustic was skipped: \`rustic\` is not on PATH (install it with \`cargo install rustic-rs\` to include it).")
    continue
  fi
  tools+=("$t")
done

for v in 6.1 6.12; do
  if [ ! -f "$data/linux-$v/Makefile" ]; then
    CAIRN_DATA_DIR=$data tests/fetch-test-data.sh "$v" >/dev/null
  fi
done

say "building cairn (release)"
cargo build --release -q -p cairn-cli
CAIRN=$root/target/release/cairn

# ---- scratch -------------------------------------------------------------
mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
results=$BENCH_DIR/results.tsv
logs=$BENCH_DIR/logs
rm -rf "$logs"
mkdir -p "$logs"
printf 'round\ttool\tstep\tseconds\tpeak_rss_kib\trepo_bytes\tcache_bytes\texit\n' >"$results"
verify=$BENCH_DIR/verify.tsv
: >"$verify"
export CAIRN_PASSWORD=bench-password RESTIC_PASSWORD=bench-password
export BORG_PASSPHRASE=bench-password RUSTIC_PASSWORD=bench-password
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
# use_dirs NAME: the source copy, repository, cache and restore target of one
# tool (or "none"). Each tool has its own until the end of the round, so no
# tool restores right after another's trees were deleted: on ext4 without a
# journal, creating inodes just after many were freed is slow, and the tool
# that happened to follow the biggest cleanup paid for it.
use_dirs() {
  local d=$BENCH_DIR/tool-$1
  src=$d/src/linux repo=$d/repo cache=$d/cache target=$d/restore
  export src repo cache target
  export BORG_BASE_DIR=$cache BORG_CACHE_DIR=$cache/borg-cache
  export CAIRN_CACHE_DIR=$cache/cairn RESTIC_CACHE_DIR=$cache/restic
}
use_dirs none

dropped=no
drop_caches() {
  [ "${DROP_CACHES:-1}" = 1 ] || return 0
  sync
  if echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then dropped=yes; fi
  return 0
}
drop_caches

bytes() { du -sb "$1" 2>/dev/null | cut -f1 || echo 0; }

# measure ROUND TOOL STEP DIR CMD...: runs CMD in DIR under GNU time, appends a row.
measure() {
  local round=$1 tool=$2 step=$3 dir=$4; shift 4
  local base=$logs/$round-$tool-$step rc=0 t0 t1
  drop_caches
  t0=$(date +%s%N)
  (cd "$dir" && /usr/bin/time -v -o "$base.time" "$@" >"$base.out" 2>"$base.err") || rc=$?
  t1=$(date +%s%N)
  local secs rss
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
  rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$base.time" 2>/dev/null || true)
  [ -n "$rss" ] || rss=0
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$tool" "$step" "$secs" "$rss" \
    "$(bytes "$repo")" "$(bytes "$cache")" "$rc" >>"$results"
  say "round $round $tool $step: ${secs}s, peak RSS ${rss} KiB, repo $(bytes "$repo") B, exit $rc"
  return 0
}

# ---- what each tool runs -------------------------------------------------
# tool_STEP functions run inside `measure`; they must leave stdout in the log.
cairn_init() { "$CAIRN" -r "$repo" init; }
cairn_backup() { "$CAIRN" -r "$repo" backup --json --tag "$1" "$src"; }
cairn_restore() { "$CAIRN" -r "$repo" restore "$1" --target "$target"; }
cairn_check() { "$CAIRN" -r "$repo" check --read-data; }
cairn_snap() { # the snapshot taken in step backup-6.1
  tail -n1 "$logs/$1-cairn-backup-6.1.out" | jq -r .snapshot_id
}

restic_init() { restic -r "$repo" init --repository-version 2; }
restic_backup() { restic -r "$repo" backup --tag "$1" "$src"; }
restic_restore() { restic -r "$repo" restore "$1" --target "$target"; }
restic_check() { restic -r "$repo" check --read-data; }
restic_snap() { restic -r "$repo" snapshots --json --tag v6.1 | jq -r '.[0].id'; }

borg_init() { borg init --encryption="$BORG_ENCRYPTION" "$repo"; }
borg_backup() { borg create --compression zstd,3 "$repo::$1" "$src"; }
borg_restore() { cd "$target" && borg extract "$repo::$1"; }
borg_check() { borg check --verify-data "$repo"; }
borg_snap() { echo v6.1; }

# rustic: not on this machine when the script was written; flags from its docs.
rustic_init() { rustic -r "$repo" --cache-dir "$cache/rustic" init; }
rustic_backup() { rustic -r "$repo" --cache-dir "$cache/rustic" backup --tag "$1" "$src"; }
rustic_restore() { rustic -r "$repo" --cache-dir "$cache/rustic" restore "$1" "$target"; }
rustic_check() { rustic -r "$repo" --cache-dir "$cache/rustic" check --read-data; }
rustic_snap() {
  rustic -r "$repo" --cache-dir "$cache/rustic" snapshots --json --filter-tags v6.1 |
    jq -r '[.. | objects | select(has("tree")) | .id][0]'
}
export -f cairn_init cairn_backup cairn_restore cairn_check restic_init restic_backup \
  restic_restore restic_check borg_init borg_backup borg_restore borg_check \
  rustic_init rustic_backup rustic_restore rustic_check
export CAIRN repo cache src target BORG_ENCRYPTION

run_tool() { # run_tool ROUND TOOL
  local r=$1 t=$2
  use_dirs "$t"
  rm -rf "$BENCH_DIR/tool-$t"
  mkdir -p "$cache" "$(dirname "$src")"
  cp -a "$data/linux-6.1" "$src"
  measure "$r" "$t" init "$BENCH_DIR" bash -c "${t}_init"
  measure "$r" "$t" backup-6.1 "$BENCH_DIR" bash -c "${t}_backup v6.1"
  measure "$r" "$t" backup-6.1-again "$BENCH_DIR" bash -c "${t}_backup v6.1-again"
  rsync -rlp --checksum --delete "$data/linux-6.12/" "$src/"
  measure "$r" "$t" backup-6.12 "$BENCH_DIR" bash -c "${t}_backup v6.12"
  local snap
  snap=$(cd "$BENCH_DIR" && "${t}_snap" "$r")
  mkdir -p "$target"
  measure "$r" "$t" restore-6.1 "$BENCH_DIR" bash -c "${t}_restore $snap"
  measure "$r" "$t" check-read-data "$BENCH_DIR" bash -c "${t}_check"
  # Not timed: is the restored tree the 6.1 tree, byte for byte?
  local restored=$target${src} same=no
  if diff -r --no-dereference "$data/linux-6.1" "$restored" >/dev/null 2>&1; then same=yes; fi
  printf '%s\t%s\t%s\n' "$r" "$t" "$same" >>"$verify"
}

# Deletes every tool's trees at the end of a round.
clean_round() {
  rm -rf "$BENCH_DIR"/tool-*
  use_dirs none
  sync
}

machine_limits() { # machine_limits ROUND
  local r=$1 p=$data
  measure "$r" machine read-all "$p" bash -c 'tar cf - linux-6.1 | cat >/dev/null'
  # What an unchanged re-backup cannot avoid: list every directory, stat every entry.
  measure "$r" machine stat-all "$p" bash -c "find linux-6.1 -printf '%s %T@ %C@ %i\\n' >/dev/null"
  measure "$r" machine tar-zstd "$p" bash -c \
    "tar cf - linux-6.1 | zstd -3 -T0 -q | wc -c >'$BENCH_DIR/tarzst.size'"
  rm -rf "$BENCH_DIR/cp"
  measure "$r" machine cp-a "$p" cp -a linux-6.1 "$BENCH_DIR/cp"
  rm -rf "$BENCH_DIR/cp"
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
n=${#tools[@]}
for ((r = 1; r <= ROUNDS; r++)); do
  machine_limits "$r"
  for ((i = 0; i < n; i++)); do
    run_tool "$r" "${tools[$(((i + r - 1) % n))]}"
  done
  clean_round
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
elapsed=$(($(date +%s) - start_s))

# ---- report --------------------------------------------------------------
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() { # col TOOL STEP COLUMN -> median of that column
  awk -F'\t' -v t="$1" -v s="$2" -v c="$3" 'NR > 1 && $2 == t && $3 == s { print $c }' "$results" | median
}
fmt_ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "–"; else printf "%.2fx", a / b }'; }
# Targets are judged on three decimals, so a ratio that rounds to the limit is not "met".
fmt_ratio3() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "–"; else printf "%.3fx", a / b }'; }
mib() { awk -v b="$1" 'BEGIN { if (b == "") print "–"; else printf "%.1f", b / 1048576 }'; }
exits() { awk -F'\t' -v t="$1" -v s="$2" 'NR > 1 && $2 == t && $3 == s && $8 != 0 { printf " (exit %s)", $8 }' "$results"; }

cpu=$(lscpu | awk -F: '/Model name/ { gsub(/^ +/, "", $2); print $2; exit }')
ncpu=$(nproc)
threads=$(lscpu | awk -F: '/Thread\(s\) per core/ { gsub(/ /, "", $2); print $2 }')
ram=$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
fs_dev=$(df -P "$BENCH_DIR" | awk 'NR == 2 { print $1 }')
fs_type=$(df -PT "$BENCH_DIR" | awk 'NR == 2 { print $2 }')
fs_size=$(df -Ph "$BENCH_DIR" | awk 'NR == 2 { print $2 }')
disk=$(lsblk -ndo NAME,MODEL,ROTA,SIZE "$fs_dev" 2>/dev/null | awk '{ r = ($(NF - 1) == 1) ? "rotational" : "non-rotational"; print $1 " " r ", " $NF }' || true)
virt=$(systemd-detect-virt 2>/dev/null || true)
os=$(. /etc/os-release && echo "$PRETTY_NAME")
kver() { awk '/^VERSION =/ { v = $3 } /^PATCHLEVEL =/ { p = $3 } /^SUBLEVEL =/ { s = $3 } END { print v "." p "." s }' "$data/linux-$1/Makefile"; }
tree_desc() {
  local d=$data/linux-$1 files mb deb=""
  files=$(find "$d" -type f | wc -l)
  mb=$(du -sb "$d" | awk '{ printf "%.0f", $1 / 1e6 }')
  [ -f "$data/linux-$1.source" ] && deb=", from \`$(cat "$data/linux-$1.source")\`"
  echo "Linux $(kver "$1") (Debian \`linux-source-$1\`$deb): $files files, $mb MB"
}
tarzst=$(cat "$BENCH_DIR/tarzst.size" 2>/dev/null || echo "")
cairn_rev=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)

step_title() {
  case $1 in
    init) echo "init" ;;
    backup-6.1) echo "first backup (Linux 6.1, empty repository)" ;;
    backup-6.1-again) echo "unchanged re-backup (6.1 again)" ;;
    backup-6.12) echo "next version (6.12 over the same path)" ;;
    restore-6.1) echo "restore of the 6.1 snapshot into an empty directory" ;;
    check-read-data) echo "check, reading all data" ;;
  esac
}

tmp_report=$(mktemp)
{
  echo "<!-- peers:begin (written by benches/peers.sh; edit outside these markers) -->"
  echo "## Peer comparison"
  echo
  echo "Run on $started, ${ROUNDS} round(s), tools in rotating order each round: ${tools[*]}."
  echo "The whole run took $((elapsed / 60)) min. Medians over the rounds; ratios are to restic's median in the same run."
  echo
  echo "Reproduce (as root on Debian 12, from the repository root):"
  echo
  echo '```sh'
  echo "tests/fetch-test-data.sh 6.1 6.12   # once; or set CAIRN_DATA_DIR to where the trees are"
  echo "ROUNDS=$ROUNDS benches/peers.sh"
  echo '```'
  echo
  echo "### Machine and software"
  echo
  echo "- CPU: $cpu, $ncpu logical CPUs ($threads thread(s) per core)${virt:+, virtualisation: $virt}"
  echo "- RAM: $ram"
  echo "- Disk: repositories, caches, source copy and restore target on $fs_dev ($fs_type, $fs_size${disk:+; $disk})"
  echo "- OS: $os, kernel $(uname -r)"
  echo "- Load average (1/5/15 min) before the run: $load_before; after: $load_after"
  echo "- Page cache dropped before each step: $dropped$([ "$dropped" = no ] && echo " (DROP_CACHES=0 or writing /proc/sys/vm/drop_caches was refused, so every step ran with the source tree and repository warm in the page cache, for every tool alike)")"
  echo "- cairn $("$CAIRN" --version 2>/dev/null | awk '{ print $NF }') (git $cairn_rev), release build, default settings (zstd level 3, AES-256-GCM)"
  echo "- $(restic version | cut -d' ' -f1-2) (Debian package), repository version 2 (compression \`auto\`), encryption is always on"
  echo "- $(borg --version) (Debian package), \`--encryption=$BORG_ENCRYPTION\`, \`--compression zstd,3\`"
  if printf '%s\n' "${tools[@]}" | grep -qx rustic; then echo "- $(rustic --version 2>/dev/null | head -n1)"; fi
  for n in "${notes[@]}"; do echo "- $n"; done
  echo "- Data: $(tree_desc 6.1); $(tree_desc 6.12)"
  [ -n "${BENCH_NOTE:-}" ] && echo "- Note: $BENCH_NOTE"
  echo
  echo "Method: each tool backs up its own copy of the tree. 6.1 is copied in with \`cp -a\`;"
  echo "for the next version, 6.12 is synced over it with \`rsync -rlp --checksum --delete\`"
  echo "(files with unchanged content keep their inode, mtime and ctime, as after a \`git checkout\`)."
  echo "Repositories and caches start empty for every tool in every round. Passwords come from the environment."
  echo "Every tool's trees are deleted together at the end of a round, so no tool's steps follow the deletion of"
  echo "another's (on ext4 without a journal, creating many inodes right after many were freed is slow)."
  echo "Borg's encryption: \`repokey-blake2\` (AES-CTR-256 with a keyed BLAKE2b MAC and chunk IDs) is the mode closest to"
  echo "cairn's (keyed BLAKE3 IDs, AEAD); borg's compression is set to zstd level 3 to match cairn's and restic's (zstd)."
  echo "\"Repo\" is \`du -sb\` of the repository after the step (caches excluded). Peak RSS is GNU time's maximum resident set size."
  echo
  echo "### Results"
  echo
  for s in $STEPS; do
    echo "#### $(step_title "$s")"
    echo
    echo "| tool | median time (s) | ratio to restic | peak RSS (MiB) | repo after step (MiB) |"
    echo "|---|---|---|---|---|"
    rbase=$(col restic "$s" 4)
    for t in "${tools[@]}"; do
      m=$(col "$t" "$s" 4)
      echo "| $t | $m$(exits "$t" "$s") | $(fmt_ratio "$m" "$rbase") | $(awk -v k="$(col "$t" "$s" 5)" 'BEGIN { printf "%.0f", k / 1024 }') | $(mib "$(col "$t" "$s" 6)") |"
    done
    echo
  done
  echo "Restored 6.1 tree identical to the source (\`diff -r\`, not timed):"
  awk -F'\t' '{ printf " %s round %s: %s;", $2, $1, $3 }' "$verify" | sed 's/;$/./'
  echo
  echo
  echo "### The machine's own limits on the 6.1 tree"
  echo
  rd=$(col machine read-all 4); tz=$(col machine tar-zstd 4); cpa=$(col machine cp-a 4)
  sa=$(col machine stat-all 4)
  c1=$(col cairn backup-6.1 4); cr=$(col cairn restore-6.1 4); ca=$(col cairn backup-6.1-again 4)
  echo "| what | median time (s) | cairn's time as a multiple |"
  echo "|---|---|---|"
  echo "| read every file (\`tar cf - linux-6.1 \\| cat >/dev/null\`) | $rd | first backup: $(fmt_ratio "$c1" "$rd") |"
  echo "| \`tar cf - linux-6.1 \\| zstd -3 -T0\` ($(mib "$tarzst") MiB out) | $tz | first backup: $(fmt_ratio "$c1" "$tz") |"
  echo "| \`cp -a linux-6.1\` (read + write every file: a restore's floor) | $cpa | restore: $(fmt_ratio "$cr" "$cpa") |"
  echo "| \`find linux-6.1 -printf '%s %T@ %C@ %i'\` (stat every entry, one thread: an unchanged re-backup's floor) | $sa | unchanged re-backup: $(fmt_ratio "$ca" "$sa") |"
  echo
  echo "### Targets (issue 5)"
  echo
  echo "| target | cairn / reference | met? |"
  echo "|---|---|---|"
  target_row() { # target_row TEXT RATIO LIMIT
    local ok
    ok=$(awk -v r="$2" -v l="$3" 'BEGIN { if (r == "" || r == "–") print "not measured"; else if (r + 0 <= l + 0) print "met"; else print "**not met**" }')
    echo "| $1 | $2 | $ok |"
  }
  rt() { fmt_ratio3 "$(col cairn "$1" 4)" "$(col restic "$1" 4)"; }
  r1=$(rt backup-6.1)
  faster=yes
  for t in "${tools[@]}"; do
    [ "$t" = cairn ] && continue
    awk -v a="$(col cairn backup-6.1 4)" -v b="$(col "$t" backup-6.1 4)" 'BEGIN { exit !(a < b) }' || faster=no
  done
  target_row "first backup ≤ 0.5x restic" "$r1" 0.5
  echo "| first backup faster than every peer | $faster | $([ $faster = yes ] && echo met || echo '**not met**') |"
  target_row "unchanged re-backup ≤ 0.1x restic" "$(rt backup-6.1-again)" 0.1
  target_row "next version ≤ 0.5x restic" "$(rt backup-6.12)" 0.5
  target_row "restore ≤ 0.5x restic" "$(rt restore-6.1)" 0.5
  smallest="" smallest_tool=""
  for t in "${tools[@]}"; do
    [ "$t" = cairn ] && continue
    v=$(col "$t" backup-6.12 6)
    if [ -z "$smallest" ] || awk -v a="$v" -v b="$smallest" 'BEGIN { exit !(a < b) }'; then smallest=$v smallest_tool=$t; fi
  done
  target_row "repository after both versions ≤ 0.95x the smallest peer's ($smallest_tool, $(mib "$smallest") MiB)" \
    "$(fmt_ratio3 "$(col cairn backup-6.12 6)" "$smallest")" 0.95
  peak() { for s in backup-6.1 backup-6.1-again backup-6.12; do col "$1" "$s" 5; done | sort -g | tail -n1; }
  target_row "peak memory during backup ≤ 0.5x restic ($(awk -v k="$(peak cairn)" 'BEGIN { printf "%.0f", k / 1024 }') vs $(awk -v k="$(peak restic)" 'BEGIN { printf "%.0f", k / 1024 }') MiB)" \
    "$(fmt_ratio3 "$(peak cairn)" "$(peak restic)")" 0.5
  target_row "check --read-data ≤ 0.5x restic" "$(rt check-read-data)" 0.5
  echo "| backup throughput with 10 M blobs in the index within 10 % of an empty repository's | – | not measured by this script (see \`benches/bigindex.sh\`) |"
  echo
  echo "<details><summary>Every measurement (all rounds)</summary>"
  echo
  echo "| round | tool | step | seconds | peak RSS (KiB) | repo (bytes) | cache (bytes) | exit |"
  echo "|---|---|---|---|---|---|---|---|"
  awk -F'\t' 'NR > 1 { print "| " $1 " | " $2 " | " $3 " | " $4 " | " $5 " | " $6 " | " $7 " | " $8 " |" }' "$results"
  echo
  echo "</details>"
  echo "<!-- peers:end -->"
} >"$tmp_report"

# Replace the marked part of the report, keeping what is written around it.
if [ -f "$REPORT" ] && grep -q '<!-- peers:begin' "$REPORT" && grep -q '<!-- peers:end -->' "$REPORT"; then
  awk -v f="$tmp_report" '
    /<!-- peers:begin/ { while ((getline l < f) > 0) print l; skip = 1; next }
    /<!-- peers:end -->/ { skip = 0; next }
    !skip { print }' "$REPORT" >"$REPORT.new"
  mv "$REPORT.new" "$REPORT"
else
  mkdir -p "$(dirname "$REPORT")"
  { echo "# Benchmarks"; echo; cat "$tmp_report"; } >"$REPORT"
fi
rm -f "$tmp_report"
cp "$results" "$BENCH_DIR/results-$(date +%Y%m%d-%H%M%S).tsv"
say "wrote $REPORT (raw results: $results, logs: $logs)"
