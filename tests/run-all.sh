#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need,
# builds, and runs every test (including the ones that need real-world data).
set -euo pipefail
cd "$(dirname "$0")/.."

# tests/postgres.rs runs a private PostgreSQL cluster: needs Debian's server
# package (initdb, pg_ctl, pgbench, pg_dump, psql). Idempotent.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql
fi
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# tests/mount.rs mounts for real: fusermount3 and /dev/fuse come with Debian's
# fuse3 (no libfuse headers are needed to build), and it queries SQLite
# through python3. Installed only when missing.
need=()
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
python3 -c 'import sqlite3' >/dev/null 2>&1 || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  as_root apt-get update -q >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi
[ -e /dev/fuse ] || as_root modprobe fuse 2>/dev/null || true

export CAIRN_DATA_DIR=${CAIRN_DATA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cairn-test-data}
data=$(tests/fetch-test-data.sh | tail -n1)
export CAIRN_KERNEL_TREE="$data/linux-6.1"

cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets -- -D warnings
cargo build --release --workspace
cargo test --release --workspace -- --include-ignored
