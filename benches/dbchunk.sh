#!/bin/sh
# CDC against page-aligned fixed-size chunking for a SQLite database changed
# in place: builds a ~1 GB database, captures it, updates 1% of its rows at
# random (same-size values, one transaction), captures it again, and counts
# what each chunking would add to the repository for the second capture
# (engine/examples/dbchunk.rs). Everything lives in $DIR and is deleted.
#
#   sh benches/dbchunk.sh            # DIR=/work/cache/dbchunk ROWS=4300000
set -eu
DIR=${DIR:-/work/cache/dbchunk}
ROWS=${ROWS:-4300000}
mkdir -p "$DIR"
trap 'rm -rf "$DIR"' EXIT
cd "$(dirname "$0")/.."
python3 - "$DIR" "$ROWS" <<'PY'
import sqlite3, sys, time, shutil
d, rows = sys.argv[1], int(sys.argv[2])
t = time.time()
c = sqlite3.connect(d + "/v1.db")
c.executescript(f"""
PRAGMA page_size = 4096;
PRAGMA journal_mode = WAL;
CREATE TABLE events(id INTEGER PRIMARY KEY, account INTEGER NOT NULL,
                    kind TEXT NOT NULL, payload TEXT NOT NULL);
CREATE INDEX events_account ON events(account);
WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < {rows})
INSERT INTO events SELECT x, abs(random()) % 100000,
    'kind-' || (x % 17), 'event ' || x || ' ' || hex(randomblob(90)) FROM n;
PRAGMA wal_checkpoint(TRUNCATE);
""")
c.close()
shutil.copyfile(d + "/v1.db", d + "/v2.db")
c = sqlite3.connect(d + "/v2.db")
# 1% of rows, picked at random, updated in place with same-size values.
c.executescript(f"""
CREATE TEMP TABLE pick AS SELECT DISTINCT abs(random()) % {rows} + 1 AS id
    FROM (WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < {rows // 100})
          SELECT x FROM n);
UPDATE events SET payload = 'event ' || id || ' ' || hex(randomblob(90))
    WHERE id IN (SELECT id FROM pick);
PRAGMA wal_checkpoint(TRUNCATE);
""")
n = c.execute("SELECT count(*) FROM pick").fetchone()[0]
c.close()
print(f"built {rows} rows, updated {n} ({n / rows:.2%}) in {time.time() - t:.0f} s", flush=True)
PY
ls -l "$DIR"
TMPDIR=$DIR nice cargo run --release -q -p cairn-engine --example dbchunk -- "$DIR/v1.db" "$DIR/v2.db"
