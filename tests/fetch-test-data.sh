#!/usr/bin/env bash
# Fetches the real-world data sets the test suite and benchmarks use, once,
# into $CAIRN_DATA_DIR (default: ~/.cache/cairn-test-data):
#   linux-6.1/   the Linux 6.1 source tree from Debian's linux-source-6.1 package
#   linux-6.12/  (only when asked: `tests/fetch-test-data.sh 6.1 6.12`) the 6.12 tree
#                from linux-source-6.12 (bookworm-security), used by benches/peers.sh
# Arguments: the kernel versions to fetch (default: 6.1). Next to each tree,
# linux-$v.source names the .deb it came from. Prints progress on stderr and
# the data directory on stdout; safe to run again (it skips what is there).
set -euo pipefail

data=${CAIRN_DATA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cairn-test-data}
mkdir -p "$data"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need_pkg() { # need_pkg COMMAND PACKAGE
  command -v "$1" >/dev/null 2>&1 && return 0
  as_root apt-get install -y -q "$2" >/dev/null
}

fetch_kernel() { # fetch_kernel VERSION
  local v=$1 dest="$data/linux-$1"
  [ -f "$dest/.complete" ] && return 0
  echo "fetching linux-source-$v from Debian into $dest" >&2
  local tmp; tmp=$(mktemp -d "$data/.fetch-XXXXXX")
  ( cd "$tmp"
    if ! apt-get download "linux-source-$v" >/dev/null 2>&1; then
      as_root apt-get update -q >/dev/null
      apt-get download "linux-source-$v" >/dev/null
    fi
    ls linux-source-"$v"_*.deb > "$data/linux-$v.source"
    dpkg-deb -x linux-source-"$v"_*.deb pkg
    need_pkg xz xz-utils
    mkdir tree
    tar -xf pkg/usr/src/linux-source-"$v".tar.* -C tree --strip-components=1 )
  rm -rf "$dest"
  mv "$tmp/tree" "$dest"
  rm -rf "$tmp"
  touch "$dest/.complete"
}

[ $# -gt 0 ] || set -- 6.1
for v in "$@"; do fetch_kernel "$v"; done
echo "$data"
