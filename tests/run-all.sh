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
# through python3. Installed only when missing, like man (below).
need=()
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
# tests/restore_options.rs restores onto bindfs: a FUSE filesystem with no
# unnamed files (O_TMPFILE), as NFS, SMB and FAT.
command -v bindfs >/dev/null 2>&1 || need+=(bindfs)
python3 -c 'import sqlite3' >/dev/null 2>&1 || need+=(python3)
# tests/restore_options.rs restores onto an ext4 of its own (times to the
# second), made with mkfs.ext4 and mounted through a loop device.
command -v mkfs.ext4 >/dev/null 2>&1 || need+=(e2fsprogs)
# tests/restore_options.rs restores onto a case-insensitive exFAT (FUSE).
command -v mkfs.exfat >/dev/null 2>&1 || need+=(exfatprogs)
command -v mount.exfat-fuse >/dev/null 2>&1 || need+=(exfat-fuse)
# tests/commands.rs renders the generated manual pages with man.
command -v man >/dev/null 2>&1 || need+=(man-db)
# tests/commands.rs reads dates in zones with clock changes (TZ=...), which
# the binary looks up in the system's time zone database.
[ -e /usr/share/zoneinfo/America/Santiago ] || need+=(tzdata)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  as_root apt-get update -q >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi
[ -e /dev/fuse ] || as_root modprobe fuse 2>/dev/null || true

# tests/s3.rs runs a real S3 server: Garage, built from crates.io once (about
# 10 minutes on 2 cores; cheaper profile settings, as it is only a test
# server) into the data directory and reused afterwards.
garage_root=${CAIRN_GARAGE_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/cairn-garage}
if [ -z "${CAIRN_GARAGE:-}" ]; then
  if command -v garage >/dev/null 2>&1; then
    CAIRN_GARAGE=$(command -v garage)
  else
    if [ ! -x "$garage_root/bin/garage" ]; then
      echo "installing garage (cargo install garage --locked) into $garage_root" >&2
      CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
        CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_DEBUG=0 \
        CARGO_TARGET_DIR="$garage_root/target" \
        cargo install garage --version 2.5.0 --locked --no-default-features \
          --features bundled-libs,lmdb --root "$garage_root" --quiet
      rm -rf "$garage_root/target"
    fi
    CAIRN_GARAGE="$garage_root/bin/garage"
  fi
fi
export CAIRN_GARAGE

export CAIRN_DATA_DIR=${CAIRN_DATA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cairn-test-data}
data=$(tests/fetch-test-data.sh | tail -n1)
export CAIRN_KERNEL_TREE="$data/linux-6.1"

cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets -- -D warnings
cargo build --release --workspace
cargo test --release --workspace --no-fail-fast -- --include-ignored
