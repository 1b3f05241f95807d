#!/usr/bin/env bash
# cairn next to restic on repository maintenance: prune after forgetting half
# of the snapshots of a repository that holds several kernel versions, and
# `check --read-data` of the pruned repository.
#
#   sudo benches/prune.sh [ROUNDS]        # ROUNDS defaults to 3
#
# History (built once, backups timed for information only): one source
# directory, $BENCH_DIR/src/linux, goes through six states, and after each
# one cairn and restic back it up, each into its own repository:
#   v1  Linux 6.1
#   v2  6.1 with a quarter of the top-level entries replaced by 6.12's
#   v3  a half replaced, v4  three quarters replaced
#   v5  Linux 6.12
#   v6  6.12 plus a small change (one file edited, one added)
# Only 6.1 and 6.12 exist as trees, so the states in between are made
# deterministically: the top-level entries (directories and files) of both
# trees, sorted by name, are dealt round-robin into four groups (so that
# arch/ and drivers/, the two largest, land in different groups), and each
# state brings one more group to 6.12 with `rsync -rlp --checksum --delete`
# (entries only in 6.1 are deleted), as peers.sh does for a whole tree:
# files whose content did not change keep their inode, mtime and ctime.
#
# The repositories and caches after v6 are kept as they are. Each round, for
# each tool in turn (the order rotates every round), a fresh copy of them is
# taken (not timed) and then timed, with the page cache dropped before each:
#   forget --keep-last 3  (the oldest half: v1, v2, v3)
#   prune                 (default --max-unused: 5% for both tools, but cairn
#                         applies it to each pack, restic to the whole repository)
#   check --read-data     (of the pruned repository)
# Wall time, peak RSS (GNU time -v), repository size (du -sb) and the 1-min
# load average are recorded for each step. The report (medians, ratios to
# restic in the same run, every measurement) replaces the part of
# docs/benchmarks.md between the "prune:begin" and "prune:end" markers, or
# is appended to it when the markers are missing.
#
# Environment:
#   ROUNDS          repetitions of the timed steps (default 3; the first argument wins)
#   BENCH_DIR       scratch directory (default /var/tmp/cairn-prunebench); wiped at the start
#   CAIRN_DATA_DIR  where linux-6.1/ and linux-6.12/ are or are fetched to
#                   (default ~/.cache/cairn-test-data, see tests/fetch-test-data.sh)
#   REPORT          report file (default docs/benchmarks.md)
#   BENCH_NOTE      a line of free text added to the report (e.g. machine load)
#   DROP_CACHES     1 (default): drop the page cache before each step (as root;
#                   this also empties other processes' cache); 0: keep it warm
#   KEEP            1: leave $BENCH_DIR in place at the end (default: delete
#                   the repositories and the source copy, keep logs and results)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

ROUNDS=${1:-${ROUNDS:-3}}
BENCH_DIR=${BENCH_DIR:-/var/tmp/cairn-prunebench}
REPORT=${REPORT:-docs/benchmarks.md}
data=${CAIRN_DATA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cairn-test-data}
TOOLS="cairn restic"
VERSIONS="v1 v2 v3 v4 v5 v6"
NVERSIONS=6
KEEP_LAST=$((NVERSIONS / 2))
STEPS="forget prune check-read-data"
started=$(date -u '+%Y-%m-%d %H:%M UTC')
start_s=$(date +%s)

say() { echo "prune.sh: $*" >&2; }
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
need rsync rsync
need jq jq
need /usr/bin/time time
command -v cargo >/dev/null || { say "cargo is needed to build cairn (https://rustup.rs)"; exit 1; }

# Another process may be fetching a tree right now (tests/fetch-test-data.sh
# writes .complete last): wait for it rather than fetch a second copy.
for v in 6.1 6.12; do
  if [ -d "$data/linux-$v" ] && [ ! -f "$data/linux-$v/.complete" ]; then
    say "waiting for $data/linux-$v/.complete (a fetch is in progress)"
    for _ in $(seq 1 360); do [ -f "$data/linux-$v/.complete" ] && break; sleep 10; done
  fi
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
rm -rf "$BENCH_DIR/src" "$BENCH_DIR/pristine" "$BENCH_DIR/work"
results=$BENCH_DIR/results.tsv
history=$BENCH_DIR/history.tsv
logs=$BENCH_DIR/logs
rm -rf "$logs"
mkdir -p "$logs"
printf 'round\ttool\tstep\tseconds\tpeak_rss_kib\trepo_bytes\tload1\texit\tcpu_seconds\n' >"$results"
printf 'version\ttool\tseconds\tpeak_rss_kib\trepo_bytes\texit\n' >"$history"
checks=$BENCH_DIR/checks.tsv
: >"$checks"
src=$BENCH_DIR/src/linux

export CAIRN_PASSWORD=bench-password RESTIC_PASSWORD=bench-password

dropped=no
drop_caches() {
  [ "${DROP_CACHES:-1}" = 1 ] || return 0
  sync
  if echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then dropped=yes; fi
  return 0
}

bytes() { du -sb "$1" 2>/dev/null | cut -f1 || echo 0; }
load1() { cut -d' ' -f1 /proc/loadavg; }

# timed BASE CMD...: runs CMD under GNU time with the page cache dropped;
# sets $secs, $rss, $cpu (user + system seconds) and $rc.
timed() {
  local base=$1 t0 t1; shift
  drop_caches
  rc=0
  t0=$(date +%s%N)
  /usr/bin/time -v -o "$base.time" "$@" >"$base.out" 2>"$base.err" || rc=$?
  t1=$(date +%s%N)
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
  rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$base.time" 2>/dev/null || true)
  [ -n "$rss" ] || rss=0
  cpu=$(awk -F': ' '/User time/ { u = $2 } /System time/ { s = $2 } END { printf "%.2f", u + s }' "$base.time" 2>/dev/null || echo 0)
}

# ---- what each tool runs -------------------------------------------------
# Every command gets the repository and cache directories as its first two
# arguments, so the same functions serve the history and the timed copies.
cairn_init() { "$CAIRN" -r "$1" --cache-dir "$2" init; }
cairn_backup() { "$CAIRN" -r "$1" --cache-dir "$2" backup --json --tag "$3" "$src"; }
cairn_forget() { "$CAIRN" -r "$1" --cache-dir "$2" forget --keep-last "$KEEP_LAST"; }
cairn_prune() { "$CAIRN" -r "$1" --cache-dir "$2" prune; }
cairn_check() { "$CAIRN" -r "$1" --cache-dir "$2" check --read-data; }
cairn_count() { "$CAIRN" -r "$1" --cache-dir "$2" snapshots --json | jq length; }
cairn_tags() { "$CAIRN" -r "$1" --cache-dir "$2" snapshots --json | jq -r '[.[].tags[]] | sort | join(",")'; }

restic_init() { restic -r "$1" --cache-dir "$2" init --repository-version 2; }
restic_backup() { restic -r "$1" --cache-dir "$2" backup --tag "$3" "$src"; }
restic_forget() { restic -r "$1" --cache-dir "$2" forget --keep-last "$KEEP_LAST"; }
restic_prune() { restic -r "$1" --cache-dir "$2" prune; }
restic_check() { restic -r "$1" --cache-dir "$2" check --read-data; }
restic_count() { restic -r "$1" --cache-dir "$2" snapshots --json | jq length; }
restic_tags() { restic -r "$1" --cache-dir "$2" snapshots --json | jq -r '[.[].tags[]] | sort | join(",")'; }
export -f cairn_init cairn_backup cairn_forget cairn_prune cairn_check \
  restic_init restic_backup restic_forget restic_prune restic_check
export CAIRN src KEEP_LAST

# ---- the history of versions ---------------------------------------------
# Top-level entries of both trees, sorted, dealt into 4 groups round-robin.
mapfile -t entries < <({ ls -A "$data/linux-6.1"; ls -A "$data/linux-6.12"; } | grep -vx '.complete' | LC_ALL=C sort -u)
group_of() { # group_of INDEX -> 0..3
  echo $(($1 % 4))
}
bring_group() { # bring_group G: every entry of group G becomes 6.12's
  local i e
  for ((i = 0; i < ${#entries[@]}; i++)); do
    [ "$(group_of "$i")" = "$1" ] || continue
    e=${entries[$i]}
    if [ -d "$data/linux-6.12/$e" ] && [ ! -L "$data/linux-6.12/$e" ]; then
      [ -d "$src/$e" ] && [ ! -L "$src/$e" ] || rm -rf "${src:?}/$e"
      rsync -rlp --checksum --delete "$data/linux-6.12/$e/" "$src/$e/"
    elif [ -e "$data/linux-6.12/$e" ] || [ -L "$data/linux-6.12/$e" ]; then
      [ ! -d "$src/$e" ] || [ -L "$src/$e" ] || rm -rf "${src:?}/$e"
      rsync -rlp --checksum "$data/linux-6.12/$e" "$src/$e"
    else
      rm -rf "${src:?}/$e"
    fi
  done
}
make_version() { # make_version vN: turn $src (at the previous version) into vN
  case $1 in
    v1)
      mkdir -p "$BENCH_DIR/src"
      cp -a "$data/linux-6.1" "$src"
      rm -f "$src/.complete"
      ;;
    v2) bring_group 0 ;;
    v3) bring_group 1 ;;
    v4) bring_group 2 ;;
    v5)
      bring_group 3
      # Nothing of 6.1 may be left: the result must be 6.12 exactly.
      rsync -rlp --checksum --delete --exclude /.complete "$data/linux-6.12/" "$src/"
      ;;
    v6)
      # A small change, as between two nightly backups of the same checkout.
      echo "# edited for the prune benchmark" >>"$src/Makefile"
      seq 1 20000 >"$src/prune-bench-new-file.txt"
      ;;
  esac
}
desc_version() {
  case $1 in
    v1) echo "Linux 6.1" ;;
    v2) echo "6.1, a quarter of the top-level entries from 6.12" ;;
    v3) echo "6.1, half of the top-level entries from 6.12" ;;
    v4) echo "6.1, three quarters of the top-level entries from 6.12" ;;
    v5) echo "Linux 6.12" ;;
    v6) echo "6.12, one file edited and one added" ;;
  esac
}

pristine=$BENCH_DIR/pristine
work=$BENCH_DIR/work
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
v5_same=no
mkdir -p "$pristine"
for t in $TOOLS; do
  mkdir -p "$pristine/$t-cache"
  "${t}_init" "$pristine/$t-repo" "$pristine/$t-cache" >"$logs/init-$t.out" 2>&1
done
for v in $VERSIONS; do
  say "making $v: $(desc_version "$v")"
  make_version "$v"
  du -sb "$src" | cut -f1 >"$BENCH_DIR/src-$v.bytes"
  if [ "$v" = v5 ]; then
    # Not timed: after v5 the directory really is 6.12.
    if diff -rq --no-dereference -x .complete "$data/linux-6.12" "$src" >/dev/null 2>&1; then v5_same=yes; fi
  fi
  for t in $TOOLS; do
    timed "$logs/backup-$v-$t" bash -c "${t}_backup '$pristine/$t-repo' '$pristine/$t-cache' $v"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$v" "$t" "$secs" "$rss" "$(bytes "$pristine/$t-repo")" "$rc" >>"$history"
    say "backup $v $t: ${secs}s, repo $(bytes "$pristine/$t-repo") B, exit $rc"
    [ "$rc" = 0 ] || { say "backup failed, see $logs/backup-$v-$t.err"; exit 1; }
  done
done

# ---- the timed rounds ----------------------------------------------------
run_tool() { # run_tool ROUND TOOL
  local r=$1 t=$2 repo=$work/$1-$2-repo cache=$work/$1-$2-cache step base before
  rm -rf "$work"
  mkdir -p "$work"
  cp -a "$pristine/$t-repo" "$repo"
  cp -a "$pristine/$t-cache" "$cache"
  before=$(bytes "$repo")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$t" before 0 0 "$before" "$(load1)" 0 0 >>"$results"
  for step in $STEPS; do
    base=$logs/$r-$t-$step
    local l
    l=$(load1)
    timed "$base" bash -c "${t}_${step%-read-data} '$repo' '$cache'"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$t" "$step" "$secs" "$rss" "$(bytes "$repo")" "$l" "$rc" "$cpu" >>"$results"
    say "round $r $t $step: ${secs}s (CPU ${cpu}s), peak RSS ${rss} KiB, repo $(bytes "$repo") B, load $l, exit $rc"
    if [ "$step" = forget ]; then
      # Not timed: the newest half is what is left.
      printf '%s\t%s\t%s\t%s\n' "$r" "$t" "$("${t}_count" "$repo" "$cache")" "$("${t}_tags" "$repo" "$cache")" >>"$checks"
    fi
  done
  rm -rf "$work"
}

n=2
set -- $TOOLS
tools=("$@")
for ((r = 1; r <= ROUNDS; r++)); do
  for ((i = 0; i < n; i++)); do
    run_tool "$r" "${tools[$(((i + r - 1) % n))]}"
  done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
elapsed=$(($(date +%s) - start_s))

# ---- report --------------------------------------------------------------
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
f2() { awk -v x="$1" 'BEGIN { if (x == "") print "–"; else printf "%.2f", x }'; }
col() { # col TOOL STEP COLUMN -> median of that column
  awk -F'\t' -v t="$1" -v s="$2" -v c="$3" 'NR > 1 && $2 == t && $3 == s { print $c }' "$results" | median
}
# per-round derived values: freed bytes and check throughput
freed() { # freed TOOL -> median of (before - after prune)
  awk -F'\t' -v t="$1" 'NR > 1 && $2 == t && $3 == "before" { b[$1] = $6 } NR > 1 && $2 == t && $3 == "prune" { a[$1] = $6 }
    END { for (r in a) print b[r] - a[r] }' "$results" | median
}
fp_time() { # fp_time TOOL -> median of forget + prune seconds
  awk -F'\t' -v t="$1" 'NR > 1 && $2 == t && ($3 == "forget" || $3 == "prune") { s[$1] += $4 }
    END { for (r in s) print s[r] }' "$results" | median
}
throughput() { # throughput TOOL -> median MiB/s of check --read-data
  awk -F'\t' -v t="$1" 'NR > 1 && $2 == t && $3 == "check-read-data" && $4 > 0 { printf "%.1f\n", $6 / 1048576 / $4 }' "$results" | median
}
fmt_ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "–"; else printf "%.2fx", a / b }'; }
mib() { awk -v b="$1" 'BEGIN { if (b == "") print "–"; else printf "%.1f", b / 1048576 }'; }
kib_mib() { awk -v k="$1" 'BEGIN { if (k == "") print "–"; else printf "%.0f", k / 1024 }'; }
exits() { awk -F'\t' -v t="$1" -v s="$2" 'NR > 1 && $2 == t && $3 == s && $8 != 0 { printf " (exit %s)", $8 }' "$results"; }

cpu_model=$(lscpu | awk -F: '/Model name/ { gsub(/^ +/, "", $2); print $2; exit }')
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
cairn_rev=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
groups_desc() {
  local g i out=""
  for g in 0 1 2 3; do
    out+="group $((g + 1)):"
    for ((i = 0; i < ${#entries[@]}; i++)); do
      [ "$(group_of "$i")" = "$g" ] && out+=" \`${entries[$i]}\`"
    done
    out+="; "
  done
  echo "${out%; }"
}

tmp_report=$(mktemp)
{
  echo "<!-- prune:begin (written by benches/prune.sh; edit outside these markers) -->"
  echo "## Prune and check --read-data next to restic"
  echo
  echo "Run on $started, ${ROUNDS} round(s) of the timed steps, tools in rotating order each round: ${tools[*]}."
  echo "The whole run took $((elapsed / 60)) min. Medians over the rounds; ratios are cairn's median over restic's in the same run."
  echo
  echo "Reproduce (as root on Debian 12, from the repository root):"
  echo
  echo '```sh'
  echo "tests/fetch-test-data.sh 6.1 6.12   # once; or set CAIRN_DATA_DIR to where the trees are"
  echo "ROUNDS=$ROUNDS benches/prune.sh"
  echo '```'
  echo
  echo "### Machine and software"
  echo
  echo "- CPU: $cpu_model, $ncpu logical CPUs ($threads thread(s) per core)${virt:+, virtualisation: $virt}"
  echo "- RAM: $ram"
  echo "- Disk: repositories, caches and the source copy on $fs_dev ($fs_type, $fs_size${disk:+; $disk})"
  echo "- OS: $os, kernel $(uname -r)"
  echo "- Load average (1/5/15 min) before the run: $load_before; after: $load_after (the 1-min value at the start of each timed step is in the raw table)"
  echo "- Page cache dropped before each timed step: $dropped$([ "$dropped" = no ] && echo " (DROP_CACHES=0 or writing /proc/sys/vm/drop_caches was refused, so every step ran with the repository warm in the page cache, for both tools alike)")"
  echo "- cairn $("$CAIRN" --version 2>/dev/null | awk '{ print $NF }') (git $cairn_rev), release build, default settings (zstd level 3, AES-256-GCM)"
  echo "- $(restic version | cut -d' ' -f1-2) (Debian package), repository version 2 (compression \`auto\`)"
  echo "- Data: $(tree_desc 6.1); $(tree_desc 6.12)"
  [ -n "${BENCH_NOTE:-}" ] && echo "- Note: $BENCH_NOTE"
  echo
  echo "Method: one source directory goes through $NVERSIONS states, and after each, cairn and restic back it up"
  echo "(each into its own repository, with its own cache; the backups are not part of the comparison)."
  echo "The states in between 6.1 and 6.12 are made by dealing the top-level entries of both trees, sorted by name,"
  echo "round-robin into four groups and bringing one more group to 6.12 per state with \`rsync -rlp --checksum --delete\`"
  echo "(unchanged files keep their inode, mtime and ctime, as after a \`git checkout\`); $(groups_desc)."
  echo "After v5 the directory is identical to 6.12 (checked with \`diff -r\`, not timed: $v5_same)."
  echo
  echo "| version | content | source (MB) | cairn backup (s) | restic backup (s) | cairn repo after (MiB) | restic repo after (MiB) |"
  echo "|---|---|---|---|---|---|---|"
  for v in $VERSIONS; do
    hc() { awk -F'\t' -v v="$1" -v t="$2" -v c="$3" 'NR > 1 && $1 == v && $2 == t { print $c }' "$history"; }
    echo "| $v | $(desc_version "$v") | $(awk -v b="$(cat "$BENCH_DIR/src-$v.bytes")" 'BEGIN { printf "%.0f", b / 1e6 }') | $(hc "$v" cairn 3) | $(hc "$v" restic 3) | $(mib "$(hc "$v" cairn 5)") | $(mib "$(hc "$v" restic 5)") |"
  done
  echo
  echo "Each round, for each tool, the repository and cache as they were after v6 are copied (not timed), then:"
  echo "\`forget --keep-last $KEEP_LAST\` (removes v1–v$((NVERSIONS - KEEP_LAST)), the oldest half; both tools group by host and paths by default),"
  echo "\`prune\` with its defaults (\`--max-unused\` is 5 % for both, but the rule differs: cairn repacks every pack"
  echo "more than 5 % unused, so it leaves at most 5 % of any pack unused; restic tolerates unused data up to 5 % of the"
  echo "whole repository and repacks only enough packs to get under that), and \`check --read-data\` of the pruned repository"
  echo "(restic's check uses a fresh temporary cache unless \`--with-cache\` is given; cairn's uses its index cache)."
  echo "\"Repo\" is \`du -sb\` of the repository (caches excluded). Peak RSS is GNU time's maximum resident set size."
  echo
  echo "### Results"
  echo
  echo "| step | cairn (s) | restic (s) | cairn / restic | cairn CPU (s) | restic CPU (s) | CPU cairn / restic | cairn peak RSS (MiB) | restic peak RSS (MiB) |"
  echo "|---|---|---|---|---|---|---|---|---|"
  for s in $STEPS; do
    c=$(col cairn "$s" 4) rr=$(col restic "$s" 4)
    case $s in
      forget) title="forget --keep-last $KEEP_LAST" ;;
      prune) title="prune" ;;
      check-read-data) title="check --read-data (pruned repository)" ;;
    esac
    cc=$(col cairn "$s" 9) rc_=$(col restic "$s" 9)
    echo "| $title | $(f2 "$c")$(exits cairn "$s") | $(f2 "$rr")$(exits restic "$s") | $(fmt_ratio "$c" "$rr") | $(f2 "$cc") | $(f2 "$rc_") | $(fmt_ratio "$cc" "$rc_") | $(kib_mib "$(col cairn "$s" 5)") | $(kib_mib "$(col restic "$s" 5)") |"
  done
  c=$(fp_time cairn) rr=$(fp_time restic)
  echo "| forget + prune | $(f2 "$c") | $(f2 "$rr") | $(fmt_ratio "$c" "$rr") | | | | | |"
  echo
  echo "| repository | cairn | restic | cairn / restic |"
  echo "|---|---|---|---|"
  cb=$(col cairn before 6) rb=$(col restic before 6)
  ca=$(col cairn prune 6) ra=$(col restic prune 6)
  echo "| size before forget (MiB) | $(mib "$cb") | $(mib "$rb") | $(fmt_ratio "$cb" "$rb") |"
  echo "| size after prune (MiB) | $(mib "$ca") | $(mib "$ra") | $(fmt_ratio "$ca" "$ra") |"
  echo "| freed: size before forget − size after prune (MiB) | $(mib "$(freed cairn)") | $(mib "$(freed restic)") | $(fmt_ratio "$(freed cairn)" "$(freed restic)") |"
  ct=$(throughput cairn) rt=$(throughput restic)
  echo "| check --read-data throughput (repository MiB/s) | $(f2 "$ct") | $(f2 "$rt") | $(fmt_ratio "$ct" "$rt") |"
  echo
  echo "What the tools' prune said (round 1, not timed):"
  echo
  echo "- cairn: $(grep -E '^(packs:|free )' "$logs/1-cairn-prune.out" 2>/dev/null | paste -sd '|' | sed 's/|/; /g')"
  echo "- restic: $(grep -E '^(to repack|this removes|to delete|remaining|unused size after prune)' "$logs/1-restic-prune.out" 2>/dev/null | tr -s ' ' | paste -sd '|' | sed 's/|/; /g')"
  echo
  echo "Snapshots left after forget (not timed; expected $KEEP_LAST, tagged v$((NVERSIONS - KEEP_LAST + 1))–v$NVERSIONS):"
  awk -F'\t' '{ printf " %s round %s: %s (%s);", $2, $1, $3, $4 }' "$checks" | sed 's/;$/./'
  echo
  echo
  echo "<details><summary>Every measurement (all rounds)</summary>"
  echo
  echo "| round | tool | step | seconds | CPU seconds | peak RSS (KiB) | repo (bytes) | load (1 min) at start | exit |"
  echo "|---|---|---|---|---|---|---|---|---|"
  awk -F'\t' 'NR > 1 { print "| " $1 " | " $2 " | " $3 " | " $4 " | " $9 " | " $5 " | " $6 " | " $7 " | " $8 " |" }' "$results"
  echo
  echo "Backups (history, once):"
  echo
  echo "| version | tool | seconds | peak RSS (KiB) | repo (bytes) | exit |"
  echo "|---|---|---|---|---|---|"
  awk -F'\t' 'NR > 1 { print "| " $1 " | " $2 " | " $3 " | " $4 " | " $5 " | " $6 " |" }' "$history"
  echo
  echo "</details>"
  echo "<!-- prune:end -->"
} >"$tmp_report"

# Replace the marked part of the report, keeping what is written around it;
# without the markers, append the section.
if [ -f "$REPORT" ] && grep -q '<!-- prune:begin' "$REPORT" && grep -q '<!-- prune:end -->' "$REPORT"; then
  awk -v f="$tmp_report" '
    /<!-- prune:begin/ { while ((getline l < f) > 0) print l; skip = 1; next }
    /<!-- prune:end -->/ { skip = 0; next }
    !skip { print }' "$REPORT" >"$REPORT.new"
  mv "$REPORT.new" "$REPORT"
else
  mkdir -p "$(dirname "$REPORT")"
  { [ -s "$REPORT" ] && echo; cat "$tmp_report"; } >>"$REPORT"
fi
rm -f "$tmp_report"
cp "$results" "$BENCH_DIR/results-$(date +%Y%m%d-%H%M%S).tsv"
if [ "${KEEP:-0}" != 1 ]; then rm -rf "$BENCH_DIR/src" "$pristine" "$work"; fi
say "wrote $REPORT (raw results: $results, logs: $logs)"
