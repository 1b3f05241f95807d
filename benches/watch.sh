#!/usr/bin/env bash
# Watch-mode benchmark (issue 7): over a 78,000-file tree (the Linux 6.1
# sources), the time from a one-file change to its committed snapshot
# (median and worst of RUNS), the time per snapshot for trees of different
# size, and the CPU that an idle `cairn watch` uses.
#
#   benches/watch.sh                      # uses $CAIRN_KERNEL_TREE, /work/cache/linux-6.1, or a generated tree
#   RUNS=20 CAIRN_BIN=target/release/cairn benches/watch.sh
#
# The tree is copied as hard links (no data copied); every change writes a
# new file and renames it over an old one, as editors save, which breaks
# the link, so the source tree is never modified.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-10}
SIZE_RUNS=${SIZE_RUNS:-5}
IDLE_SECS=${IDLE_SECS:-30}
BIN=${CAIRN_BIN:-}
if [[ -z $BIN ]]; then
    if [[ -x target/release/cairn ]]; then BIN=target/release/cairn; else BIN=target/debug/cairn; fi
fi
[[ -x $BIN ]] || { echo "no cairn binary at $BIN: run cargo build first" >&2; exit 1; }
BIN=$(realpath "$BIN")
SRC=${CAIRN_KERNEL_TREE:-/work/cache/linux-6.1}
command -v jq >/dev/null || { echo "needs jq (apt-get install jq)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/cairn-watch-bench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

export CAIRN_REPOSITORY=$WORK/repo CAIRN_PASSWORD=bench CAIRN_CACHE_DIR=$WORK/cache
export CAIRN_TEST_INSECURE_KDF=1 # the key derivation is not what is measured
"$BIN" init >/dev/null 2>&1

TREE=$WORK/tree
if [[ -d $SRC ]]; then
    echo "tree: hard-link copy of $SRC"
    cp -al "$SRC" "$TREE"
else
    echo "tree: generated (no $SRC): 78,000 files in 1,000 directories"
    for d in $(seq 1 1000); do
        mkdir -p "$TREE/d$((d % 10))/d$d"
        for f in $(seq 1 78); do
            head -c $(((d * 78 + f) % 16384 + 64)) /dev/urandom >"$TREE/d$((d % 10))/d$d/f$f"
        done
    done
fi
echo "binary: $BIN ($(file -b "$BIN" | grep -q 'with debug_info' && echo 'debug info' || echo stripped))"
echo "files: $(find "$TREE" -type f | wc -l), directories: $(find "$TREE" -type d | wc -l)"
echo "debounce: 1s (default); CPUs: $(nproc); load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

now_ms() { date +%s%3N; }

# snapshots OUT: how many snapshot events OUT holds.
snapshots() { grep -c '"message_type":"snapshot"' "$1" || true; }

# wait_snapshot OUT N: waits until OUT holds more than N snapshot events.
wait_snapshot() {
    local deadline=$(($(date +%s) + 1800))
    while (($(snapshots "$1") <= $2)); do
        (($(date +%s) < deadline)) || { echo "timed out waiting for a snapshot" >&2; exit 1; }
        sleep 0.01
    done
}

# start_watch DIR OUT: starts a watcher on DIR, waits for its first
# snapshot, and sets WATCH_PID.
start_watch() {
    "$BIN" --json watch "$1" >"$2" 2>"$2.err" &
    WATCH_PID=$!
    PIDS+=("$WATCH_PID")
    local t0
    t0=$(now_ms)
    wait_snapshot "$2" 0
    echo "  first snapshot (a full backup): $(($(now_ms) - t0)) ms"
}

# change_one DIR I: replaces one file of DIR the way editors save.
change_one() {
    local f
    f=$(find "$1" -type f -name '*.c' -print -quit 2>/dev/null)
    [[ -n $f ]] || f=$(find "$1" -type f -print -quit)
    cp "$f" "$f.bench-tmp"
    echo "/* watch bench $2 $RANDOM */" >>"$f.bench-tmp"
    mv "$f.bench-tmp" "$f"
}

# stats NUMBERS...: prints "median M, worst W" of integer arguments.
stats() {
    local sorted
    sorted=$(printf '%s\n' "$@" | sort -n)
    local n=$#
    echo "median $(echo "$sorted" | sed -n "$(((n + 1) / 2))p"), worst $(echo "$sorted" | tail -n1)"
}

# measure DIR RUNS OUT: one-file changes, one at a time; prints the latency
# from the change to the committed snapshot (as seen by a reader of the
# JSON), and the engine's own duration and lag.
measure() {
    local dir=$1 runs=$2 out=$3 lat=() dur=() lag=() read=()
    for i in $(seq 1 "$runs"); do
        sleep 2
        local n t0
        n=$(snapshots "$out")
        t0=$(now_ms)
        change_one "$dir" "$i"
        wait_snapshot "$out" "$n"
        lat+=($(($(now_ms) - t0)))
        local ev
        ev=$(grep '"message_type":"snapshot"' "$out" | tail -n1)
        dur+=("$(jq -r .duration_ms <<<"$ev")")
        lag+=("$(jq -r .lag_ms <<<"$ev")")
        read+=("$(jq -r .bytes_read <<<"$ev")")
        [[ $(jq -r .full_rescan <<<"$ev") == false ]] || echo "  (run $i was a full rescan)"
    done
    echo "  change -> committed snapshot (ms): $(stats "${lat[@]}")"
    echo "  engine lag, first event -> commit (ms): $(stats "${lag[@]}")"
    echo "  snapshot duration (ms): $(stats "${dur[@]}")"
    echo "  bytes read per snapshot: $(stats "${read[@]}")"
}

echo "== latency on the whole tree ($RUNS one-file changes)"
OUT=$WORK/whole.jsonl
start_watch "$TREE" "$OUT"
WHOLE_PID=$WATCH_PID
measure "$TREE" "$RUNS" "$OUT"

echo
echo "== idle CPU over ${IDLE_SECS}s"
sleep 3
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
c0=$(ticks "$WHOLE_PID")
t0=$(now_ms)
sleep "$IDLE_SECS"
c1=$(ticks "$WHOLE_PID")
t1=$(now_ms)
awk -v c=$((c1 - c0)) -v hz="$hz" -v ms=$((t1 - t0)) \
    'BEGIN { printf "  %d ticks of %d/s in %.1f s: %.3f %% of one CPU\n", c, hz, ms / 1000, 100 * c / hz / (ms / 1000) }'
echo "  resident memory: $(awk '/VmRSS/ {print $2, $3}' "/proc/$WHOLE_PID/status")"
kill -INT "$WHOLE_PID"
wait "$WHOLE_PID" || true

echo
echo "== time per snapshot by tree size ($SIZE_RUNS one-file changes each)"
if [[ -d $TREE/drivers ]]; then SUBS="block fs drivers"; else SUBS="d0/d10 d0"; fi
for sub in $SUBS; do
    [[ -d $TREE/$sub ]] || continue
    echo "-- $sub: $(find "$TREE/$sub" -type f | wc -l) files"
    OUT=$WORK/$sub.jsonl
    start_watch "$TREE/$sub" "$OUT"
    measure "$TREE/$sub" "$SIZE_RUNS" "$OUT"
    kill -INT "$WATCH_PID"
    wait "$WATCH_PID" || true
done
