#!/usr/bin/env bash
# Following a live database: how fast captured changes are applied, how far a follower lags
# behind a steady write load, and what a catch-up pass (--incremental) costs against a full
# export. One run each; prints Markdown for benches/RESULTS.md on stdout.
#
#   bash benches/changes.sh
#   ROWS=100000 CHANGES=50000 LOAD_SECS=10 RATES="1000 10000" bash benches/changes.sh
#
# 1. Applied: CHANGES rows updated in a table of ROWS (one statement), then one drain
#    (`ferry-export SRC --changes | ferry-import TGT`), for SQLite and PostgreSQL each way.
# 2. Lag: a writer updates rows at RATE changes/s (batches of 10 per transaction, each row
#    stamped with the time) for LOAD_SECS while `--follow` runs; every 0.25 s the newest stamp
#    in the target is read: lag = now - that stamp. PostgreSQL -> PostgreSQL, and
#    SQLite -> PostgreSQL with SQLite's default rollback journal and in WAL mode.
# 3. Catch-up: 1% of ROWS changed, then `--incremental items.updated_at` against a full export.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${ROWS:-200000}"
CHANGES="${CHANGES:-100000}"
LOAD_SECS="${LOAD_SECS:-15}"
RATES="${RATES:-1000 10000}"
WORK="$PWD/target/bench/changes"
rm -rf "$WORK" && mkdir -p "$WORK"
say() { printf '%s\n' "$*" >&2; }
# shellcheck source=lib/pg-cluster.sh
. benches/lib/pg-cluster.sh
PG_OPTS="-c wal_level=logical -c max_wal_senders=10 -c max_replication_slots=10" pg_cluster "$WORK"
trap pg_stop EXIT
PY=$(bash tests/clients/venv.sh clients)   # psycopg for the PostgreSQL writer

say "building (release)..."
cargo build --release --locked --bins >&2
export PATH="$PWD/target/release:$PATH"

secs() { # secs COMMAND...: wall seconds of a shell pipeline
  local start end
  start=$(date +%s.%N)
  bash -c "$*" > /dev/null
  end=$(date +%s.%N)
  python3 -c "print(round($end - $start, 2))"
}
db() { # db NAME: a new PostgreSQL database's address
  psql -q "$BASE/postgres" -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1"
  echo "$BASE/$1"
}
items_sqlite() {
  python3 - "$1" "$ROWS" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
c.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER, updated_at TEXT NOT NULL)")
c.execute("CREATE INDEX items_updated ON items (updated_at)")
stamp = lambda i: "2026-01-01T%02d:%02d:%02d.000000Z" % (i % 86400 // 3600, i % 3600 // 60, i % 60)
c.executemany("INSERT INTO items VALUES (?, ?, ?, ?)", ((i, f"item {i}", i % 7, stamp(i)) for i in range(1, int(sys.argv[2]) + 1)))
c.commit()
PY
}
items_pg() {
  psql -q "$1" -c "CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, qty integer, updated_at text NOT NULL);
    CREATE INDEX items_updated ON items (updated_at);
    INSERT INTO items SELECT i, 'item ' || i, i % 7, to_char(timestamp '2026-01-01' + (i % 86400) * interval '1 second', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM generate_series(1, $ROWS) i"
}
update_sql="UPDATE items SET qty = qty + 1, name = 'changed ' || id WHERE id <= $CHANGES"

say "1. changes applied per second"
echo "### Changes applied: $CHANGES rows updated in a table of $ROWS, one drain"
echo
echo "| path | seconds | changes/s |"
echo "|---|---:|---:|"
for path in sqlite-postgres sqlite-sqlite postgres-postgres postgres-sqlite; do
  src_kind=${path%-*}; tgt_kind=${path#*-}
  rm -rf "$WORK/.ferry" "$WORK"/*.db
  cd "$WORK"
  if [ "$src_kind" = sqlite ]; then items_sqlite "$WORK/src.db"; SRC="sqlite:$WORK/src.db"; else SRC=$(db src); items_pg "$SRC"; fi
  if [ "$tgt_kind" = sqlite ]; then TGT="sqlite:$WORK/tgt.db"; else TGT=$(db tgt); fi
  RECAST=""; [ "$src_kind" = postgres ] && [ "$tgt_kind" = sqlite ] && RECAST="| ferry-transform --dialect sqlite"
  ferry capture install "$SRC" -q > /dev/null
  bash -c "ferry-export '$SRC' -q $RECAST | ferry-import '$TGT' --create -q" > /dev/null
  if [ "$src_kind" = sqlite ]; then sqlite3 "$WORK/src.db" "$update_sql"; else psql -q "$SRC" -c "$update_sql"; fi
  t=$(secs "ferry-export '$SRC' --changes -q $RECAST | ferry-import '$TGT' -q")
  ferry-validate "$SRC" "$TGT" -q > /dev/null || { say "$path: NOT EQUAL after the drain"; exit 1; }
  echo "| ${src_kind} -> ${tgt_kind} | $t | $(python3 -c "print(round($CHANGES / $t))") |"
  if [ "$src_kind" = postgres ]; then ferry capture remove "$SRC" --confirm -q > /dev/null; fi
  cd - > /dev/null
done
echo

say "2. lag under a steady write load"
echo "### Lag of a follower under a steady write load ($LOAD_SECS s each; sampled every 0.25 s)"
echo
echo "| path | asked changes/s | written changes/s | lag median (s) | lag p95 (s) | lag max (s) | caught up after the load (s) |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for path in postgres-postgres sqlite-postgres sqlite_wal-postgres; do
  for rate in $RATES; do
    src_kind=${path%-*}
    rm -rf "$WORK/.ferry" "$WORK"/*.db*
    cd "$WORK"
    case $src_kind in
      sqlite) items_sqlite "$WORK/src.db"; SRC="sqlite:$WORK/src.db" ;;
      sqlite_wal) items_sqlite "$WORK/src.db"; sqlite3 "$WORK/src.db" "PRAGMA journal_mode=WAL" > /dev/null; SRC="sqlite:$WORK/src.db" ;;
      *) SRC=$(db src); items_pg "$SRC" ;;
    esac
    TGT=$(db tgt)
    ferry capture install "$SRC" -q > /dev/null
    ferry-export "$SRC" -q | ferry-import "$TGT" --create -q > /dev/null
    ferry-export "$SRC" --follow -q 2>> "$WORK/follow.log" | ferry-import "$TGT" -q > /dev/null 2>> "$WORK/follow.log" &
    follower=$!
    res=$("$PY" - "$SRC" "$TGT" "$rate" "$LOAD_SECS" "$ROWS" <<'PY'
import datetime, sqlite3, sys, threading, time
import psycopg
src, tgt, rate, secs, rows = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
fmt = "%Y-%m-%dT%H:%M:%S.%fZ"
def now():
    return datetime.datetime.now(datetime.timezone.utc)
done = threading.Event()
result = {}
def writer():
    if src.startswith("sqlite:"):
        c = sqlite3.connect(src[7:], timeout=60, isolation_level=None)
        cur, mark = c, "?"
    else:
        c = psycopg.connect(src.replace("postgres://", "postgresql://"), autocommit=True)
        cur, mark = c.cursor(), "%s"
    sql = f"UPDATE items SET qty = qty + 1, updated_at = {mark} WHERE id = {mark}"
    start = time.time(); n = 0
    while time.time() - start < secs:
        time.sleep(max(0.0, start + n / rate - time.time()))
        stamp = now().strftime(fmt)
        cur.execute("BEGIN IMMEDIATE" if mark == "?" else "BEGIN")
        cur.executemany(sql, [(stamp, (n + k) % rows + 1) for k in range(10)])
        cur.execute("COMMIT")
        n += 10
        result["last"] = stamp
    result["rate"] = n / (time.time() - start)
def writing():
    try:
        writer()
    finally:
        done.set()
t = threading.Thread(target=writing); t.start()
tc = psycopg.connect(tgt.replace("postgres://", "postgresql://"), autocommit=True)
def newest():
    return tc.execute("SELECT max(updated_at) FROM items").fetchone()[0]
base = newest(); lags = []
while not done.is_set():
    time.sleep(0.25)
    v = newest()
    if v > base:
        lags.append((now() - datetime.datetime.strptime(v, fmt).replace(tzinfo=datetime.timezone.utc)).total_seconds())
t.join()
t0 = time.time()
while newest() < result["last"] and time.time() - t0 < 300:
    time.sleep(0.02)
after = time.time() - t0
lags.sort()
q = lambda p: lags[min(len(lags) - 1, int(p * len(lags)))] if lags else float("nan")
print(f"{round(result['rate'])} {q(0.5):.2f} {q(0.95):.2f} {(max(lags) if lags else float('nan')):.2f} {after:.2f}")
PY
)
    # Told to stop, the follower ends its stream cleanly, and the import with it.
    pkill -INT -f "ferry-export $SRC --follow" || true
    wait $follower || say "the follower ended badly: $(tail -3 "$WORK/follow.log")"
    read -r wrote med p95 mx after <<< "$res"
    echo "| ${src_kind} -> postgres | $rate | $wrote | $med | $p95 | $mx | $after |"
    if [ "$src_kind" = postgres ]; then ferry capture remove "$SRC" --confirm -q > /dev/null; fi
    cd - > /dev/null
  done
done
echo

say "3. a catch-up pass against a full export"
echo "### A catch-up pass (--incremental) after 1% of $ROWS rows changed and 0.1% deleted, against a full export"
echo
echo "| source | full export (s) | first pass, every row (s) | catch-up pass (s) | rows sent | catch-up / full | with --detect-deletes (s) | deletes found |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for src_kind in sqlite postgres; do
  rm -rf "$WORK/.ferry" "$WORK"/*.db
  cd "$WORK"
  if [ "$src_kind" = sqlite ]; then items_sqlite "$WORK/src.db"; SRC="sqlite:$WORK/src.db"; else SRC=$(db src); items_pg "$SRC"; fi
  TGT="sqlite:$WORK/tgt.db"
  RECAST=""; [ "$src_kind" = postgres ] && RECAST="| ferry-transform --dialect sqlite"
  full=$(secs "ferry-export '$SRC' -q")
  first=$(secs "ferry-export '$SRC' --incremental items.updated_at -q $RECAST | ferry-import '$TGT' --create -q")
  changed="UPDATE items SET qty = qty + 1, updated_at = '2026-02-01T00:00:00.000000Z' WHERE id % 100 = 0; DELETE FROM items WHERE id % 1000 = 1"
  if [ "$src_kind" = sqlite ]; then sqlite3 "$WORK/src.db" "$changed"; else psql -q "$SRC" -c "$changed"; fi
  pass=$(secs "ferry-export '$SRC' --incremental items.updated_at -q > '$WORK/pass.ndjson'")
  sent=$(grep -c '"type":"RECORD"' "$WORK/pass.ndjson")
  passd=$(secs "ferry-export '$SRC' --incremental items.updated_at --detect-deletes '$TGT' -q > '$WORK/passd.ndjson'")
  found=$(grep -c '"op":"delete"' "$WORK/passd.ndjson")
  echo "| $src_kind | $full | $first | $pass | $sent | $(python3 -c "print(round($pass / $full, 3))") | $passd | $found |"
  cd - > /dev/null
done
echo
echo "Machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB RAM, $(uname -sr); commit $(git rev-parse --short HEAD)$(git diff --quiet || echo +changes)."
