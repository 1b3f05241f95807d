#!/usr/bin/env python3
"""Small files compressed one by one (as cairn stores them: one zstd frame per
blob, with the repository's dictionary) against small files compressed
together in groups (one frame per run of consecutive blobs), on one thread.

Every file of the tree below 256 KiB (cairn's single-blob, dictionary range)
is read in walk order (sorted names, depth first, as a backup meets them).
The dictionary is trained as cairn trains it: fastCover, k = 1024, d = 8, at
most 112 KiB, on the first 8 MiB of files below 64 KiB. Prints a markdown
table: best CPU time of REPS passes and the compressed bytes of each scheme.

    apt-get install python3-zstandard
    benches/groups.py [TREE]       # default: $CAIRN_DATA_DIR/linux-6.1

Environment: REPS (default 3), LEVEL (default 3).
"""
import os
import sys
import time

import zstandard as zs

DATA = os.environ.get("CAIRN_DATA_DIR", os.path.expanduser("~/.cache/cairn-test-data"))
ROOT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(DATA, "linux-6.1")
REPS = int(os.environ.get("REPS", "3"))
LEVEL = int(os.environ.get("LEVEL", "3"))
KIB = 1024


def small_files(top):
    """Contents of the regular files below 256 KiB, in walk order."""
    out = []

    def walk(d):
        try:
            names = sorted(os.listdir(d))
        except OSError:
            return
        for n in names:
            p = os.path.join(d, n)
            if os.path.islink(p):
                continue
            if os.path.isdir(p):
                walk(p)
            elif os.path.isfile(p) and 0 < os.path.getsize(p) < 256 * KIB:
                with open(p, "rb") as f:
                    out.append(f.read())

    walk(top)
    return out


def per_blob(blobs, c):
    return sum(min(len(c.compress(b)), len(b)) for b in blobs)


def grouped(blobs, group, below, c_group, c_alone):
    """Blobs under `below` bytes go into groups of about `group` bytes (a
    group closes once it reaches that size); the others stay alone."""
    out, cur, n = 0, [], 0
    for b in blobs:
        if len(b) >= below:
            out += min(len(c_alone.compress(b)), len(b))
            continue
        cur.append(b)
        n += len(b)
        if n >= group:
            out += len(c_group.compress(b"".join(cur)))
            cur, n = [], 0
    if cur:
        out += len(c_group.compress(b"".join(cur)))
    return out


def main():
    blobs = small_files(ROOT)
    total = sum(map(len, blobs))
    samples, s = [], 0
    for b in blobs:
        if len(b) < 64 * KIB:
            samples.append(b)
            s += len(b)
            if s >= 8 << 20:
                break
    d = zs.train_dictionary(112 * KIB, samples, k=1024, d=8, f=20, steps=0, level=LEVEL, threads=1)
    plain = zs.ZstdCompressor(level=LEVEL, write_checksum=False)
    with_dict = zs.ZstdCompressor(level=LEVEL, dict_data=d, write_checksum=False)
    schemes = [("each blob alone, with the dictionary (cairn today)", lambda: per_blob(blobs, with_dict)),
               ("each blob alone, no dictionary", lambda: per_blob(blobs, plain))]
    for g in (64, 128, 256):
        schemes.append((f"groups of {g} KiB of blobs < 64 KiB, larger alone with the dictionary",
                        lambda g=g: grouped(blobs, g * KIB, 64 * KIB, plain, with_dict)))
        schemes.append((f"groups of {g} KiB of blobs < 64 KiB, larger alone, no dictionary",
                        lambda g=g: grouped(blobs, g * KIB, 64 * KIB, plain, plain)))
        schemes.append((f"groups of {g} KiB of every blob < 256 KiB, no dictionary",
                        lambda g=g: grouped(blobs, g * KIB, 256 * KIB, plain, plain)))
    print(f"{len(blobs)} files below 256 KiB, {total / 1e6:.1f} MB, zstd {zs.ZSTD_VERSION} level {LEVEL}, "
          f"best of {REPS} passes on one thread\n")
    print("| scheme | CPU (s) | compressed (MB) | vs today |")
    print("|---|---|---|---|")
    base = None
    for name, fn in schemes:
        best, size = None, None
        for _ in range(REPS):
            t = time.process_time()
            size = fn()
            dt = time.process_time() - t
            best = dt if best is None else min(best, dt)
        base = base or size
        print(f"| {name} | {best:.2f} | {size / 1e6:.2f} | {100 * (size - base) / base:+.1f} % |")


if __name__ == "__main__":
    main()
