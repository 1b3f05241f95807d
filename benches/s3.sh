#!/usr/bin/env bash
# cairn next to restic on S3: backup and restore of the Linux 6.1 source tree
# to a single-node Garage server on loopback, both tools against the same
# server, alternating order per round. Prints a markdown table (medians of
# wall seconds) and, with REPORT set, appends it there.
#
#   benches/s3.sh [ROUNDS]     # default 3
#
# Environment: CAIRN_GARAGE (garage binary; default: garage on PATH),
# CAIRN_DATA_DIR (where linux-6.1/ is; see tests/fetch-test-data.sh),
# BENCH_DIR (scratch, default /var/tmp/cairn-s3-bench), REPORT.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-${ROUNDS:-3}}
BENCH_DIR=${BENCH_DIR:-/var/tmp/cairn-s3-bench}
data=${CAIRN_DATA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cairn-test-data}
garage=${CAIRN_GARAGE:-$(command -v garage || true)}
[ -x "$garage" ] || { echo "s3.sh: no garage binary (set CAIRN_GARAGE or run tests/run-all.sh once)" >&2; exit 2; }
command -v restic >/dev/null || { echo "s3.sh: restic is needed (apt-get install restic)" >&2; exit 2; }
src="$data/linux-6.1"
[ -d "$src" ] || src=$(tests/fetch-test-data.sh | tail -n1)/linux-6.1
cargo build --release -q -p cairn-cli 2>/dev/null || cargo build --release -q
cairn=$(pwd)/target/release/cairn

rm -rf "$BENCH_DIR"; mkdir -p "$BENCH_DIR"
cat > "$BENCH_DIR/garage.toml" <<CFG
metadata_dir = "$BENCH_DIR/garage/meta"
data_dir = "$BENCH_DIR/garage/data"
db_engine = "lmdb"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:39911"
rpc_public_addr = "127.0.0.1:39911"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:39910"
root_domain = ".s3.garage.localhost"
CFG
G() { "$garage" -c "$BENCH_DIR/garage.toml" "$@"; }
if ss -ltn 2>/dev/null | grep -qE '127.0.0.1:3991[01] '; then
  echo "s3.sh: ports 39910/39911 are in use (another Garage still running?)" >&2; exit 2
fi
# Started directly, not through G: $! must be garage itself for the trap.
"$garage" -c "$BENCH_DIR/garage.toml" server > "$BENCH_DIR/garage.log" 2>&1 &
gpid=$!
trap 'kill $gpid 2>/dev/null; wait $gpid 2>/dev/null || true' EXIT
for _ in $(seq 100); do G status >/dev/null 2>&1 && break; sleep 0.3; done
G layout assign -z dc1 -c 20G "$(G node id -q | cut -d@ -f1)" >/dev/null
G layout apply --version 1 >/dev/null
for _ in $(seq 50); do G bucket create bench >/dev/null 2>&1 && break; sleep 0.3; done
export AWS_ACCESS_KEY_ID=GKbe0c0000000000000000be0c
export AWS_SECRET_ACCESS_KEY=be0c000000000000000000000000000000000000000000000000000000000000
export AWS_DEFAULT_REGION=garage
G key import --yes -n bench "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" >/dev/null
G bucket allow --read --write --owner bench --key bench >/dev/null
export CAIRN_PASSWORD=bench RESTIC_PASSWORD=bench CAIRN_CACHE_DIR="$BENCH_DIR/cache"
export CAIRN_S3_BUCKET_LOOKUP=path RESTIC_CACHE_DIR="$BENCH_DIR/restic-cache"
url=http://127.0.0.1:39910/bench

# Wall seconds of a command; a failing command stops the benchmark.
t() {
  local s e; s=$(date +%s.%N)
  if ! "$@" >/dev/null 2>"$BENCH_DIR/last.err"; then
    echo "s3.sh: failed: $*" >&2; cat "$BENCH_DIR/last.err" >&2; exit 1
  fi
  e=$(date +%s.%N); echo "$e - $s" | bc
}
declare -A res
for r in $(seq "$ROUNDS"); do
  order="cairn restic"; [ $((r % 2)) = 0 ] && order="restic cairn"
  for tool in $order; do
    rm -rf "$BENCH_DIR/out" "$BENCH_DIR/cache" "$BENCH_DIR/restic-cache"
    case $tool in
      cairn)
        repo="s3:$url/cairn-$r"
        "$cairn" -r "$repo" init >/dev/null
        b=$(t "$cairn" -r "$repo" backup "$src")
        x=$(t "$cairn" -r "$repo" restore latest --target "$BENCH_DIR/out") ;;
      restic)
        repo="s3:$url/restic-$r"
        restic -r "$repo" init >/dev/null
        b=$(t restic -r "$repo" backup "$src")
        x=$(t restic -r "$repo" restore latest --target "$BENCH_DIR/out") ;;
    esac
    # Untimed: the restore must be the tree that was backed up.
    diff -r "$src" "$BENCH_DIR/out$src" >/dev/null \
      || { echo "s3.sh: $tool's restore differs from the source" >&2; exit 1; }
    echo "s3.sh: round $r $tool backup ${b}s restore ${x}s (restore identical)" >&2
    res[$tool-backup]+="$b "; res[$tool-restore]+="$x "
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
table="| step (Linux 6.1 tree, Garage on loopback) | cairn s | restic s | cairn / restic |
|---|---|---|---|"
for step in backup restore; do
  c=$(echo "${res[cairn-$step]}" | median); k=$(echo "${res[restic-$step]}" | median)
  table+="
| $step | $(printf %.2f "$c") | $(printf %.2f "$k") | $(printf %.2fx "$(echo "scale=4; $c / $k" | bc)") |"
done
echo "$table"
if [ -n "${REPORT:-}" ]; then
  { echo; echo "Run $(date -u '+%Y-%m-%d %H:%M UTC'), $ROUNDS round(s), $(nproc) cores, restic $(restic version | cut -d' ' -f2), garage $("$garage" --version 2>/dev/null | head -1 | awk '{print $2}'):"; echo; echo "$table"; } >> "$REPORT"
fi
rm -rf "$BENCH_DIR"
