#!/usr/bin/env bash
# The main job, from a fresh machine: build cairn, create a local repository,
# back up a directory (default: engine/ of this source tree), restore it and compare.
#   tests/demo.sh [DIRECTORY]
set -euo pipefail
cd "$(dirname "$0")/.."
src=$(realpath "${1:-engine}")
cargo build --release -q -p cairn-cli
cairn=$PWD/target/release/cairn
work=$(mktemp -d /tmp/cairn-demo-XXXXXX)
export CAIRN_REPOSITORY="$work/repo" CAIRN_PASSWORD=${CAIRN_PASSWORD:-demo-password} CAIRN_CACHE_DIR="$work/cache"
set -x
"$cairn" init
"$cairn" backup "$src"
"$cairn" backup "$src"
"$cairn" snapshots
"$cairn" restore latest --target "$work/restore"
"$cairn" check --read-data
diff -r "$src" "$work/restore$src"
{ set +x; } 2>/dev/null
echo "backup and restore of $src are identical (repository: $work/repo)"
