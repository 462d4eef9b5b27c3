#!/usr/bin/env bash
# What the rollback journal costs: ROWS rows (3 columns) overwritten in an existing, full table,
# with the journal (the default) and without (`--no-rollback-journal`), into SQLite, PostgreSQL
# and the D1 double (real limits on, no pacing wait: FERRY_D1_RATE high). One run each.
#
#   bash benches/journal.sh
#   ROWS=100000 TARGETS="sqlite postgres" bash benches/journal.sh
#
# Prints a Markdown table on stdout; copy it into benches/RESULTS.md. Work goes to target/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${ROWS:-300000}"
TARGETS="${TARGETS:-sqlite postgres d1}"
. benches/lib/setup.sh
bench_setup journal fresh
export PATH="$BIN:$PATH"

# The source, and the stream that overwrites every row of it.
python3 - "$WORK/src.db" "$ROWS" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
c.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER)")
c.executemany("INSERT INTO items VALUES (?, ?, ?)", ((i, f"item {i}", i % 7) for i in range(1, int(sys.argv[2]) + 1)))
c.commit()
PY
ferry-export "sqlite:$WORK/src.db" -q > "$WORK/first.ndjson"
sqlite3 "$WORK/src.db" "UPDATE items SET qty = qty + 100, name = 'changed ' || id"
ferry-export "sqlite:$WORK/src.db" -q > "$WORK/overwrite.ndjson"

secs() { # secs COMMAND...: wall seconds
  local start end
  start=$(date +%s.%N)
  "$@" > /dev/null
  end=$(date +%s.%N)
  python3 -c "print(round($end - $start, 2))"
}

declare -A ADDR
for t in $TARGETS; do
  case $t in
    postgres)
      . benches/lib/pg-cluster.sh
      pg_cluster "$WORK"
      trap pg_stop EXIT
      for db in with without; do
        psql -q "$BASE/postgres" -c "CREATE DATABASE j_$db" > /dev/null
      done
      ;;
    d1)
      ferry-d1-double --dir "$WORK/d1" --token bench --port-file "$WORK/d1.port" --rate-limit 1000000 2> "$WORK/d1.log" &
      D1PID=$!
      for _ in $(seq 50); do [ -s "$WORK/d1.port" ] && break; sleep 0.1; done
      export CLOUDFLARE_API_BASE_URL="http://127.0.0.1:$(cat "$WORK/d1.port")/client/v4" CLOUDFLARE_API_TOKEN=bench
      export FERRY_D1_RATE=1000000/300
      ;;
  esac
done

echo "| target | rows | with the journal | without | ratio |"
echo "|---|---|---|---|---|"
for t in $TARGETS; do
  declare -A took
  for mode in with without; do
    case $t in
      sqlite) addr="sqlite:$WORK/$mode.db" ;;
      postgres) addr="$BASE/j_$mode" ;;
      d1) addr="d1://bench/$mode" ;;
    esac
    state="$WORK/$t-$mode.state.db"
    ferry-import "$addr" --create --state "$state" -q < "$WORK/first.ndjson" > /dev/null
    flags=(--on-conflict overwrite --fresh --state "$state" -q)
    [ $mode = without ] && flags+=(--no-rollback-journal)
    took[$mode]=$(secs ferry-import "$addr" "${flags[@]}" < "$WORK/overwrite.ndjson")
  done
  ratio=$(python3 -c "print(round(${took[with]} / ${took[without]}, 2))")
  echo "| $t | $ROWS | ${took[with]} s | ${took[without]} s | ${ratio}x |"
  unset took
done
[ -n "${D1PID:-}" ] && kill "$D1PID"
say "machine: $(nproc) cores, $(free -g | awk '/Mem/ {print $2}') GiB; commit $(git rev-parse --short HEAD)"
