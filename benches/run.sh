#!/usr/bin/env bash
# SQLite -> SQLite benchmark, side by side with DuckDB, sqlite-utils and SQLite's own INSERT ... SELECT.
#
#   bash benches/run.sh            # 1M and 5M rows
#   ROWS="100000" bash benches/run.sh
#
# Prints a Markdown report (machine, commit, rows/s, ratios, peak RSS of each stage) on stdout;
# copy it into benches/RESULTS.md. Everything it makes goes to target/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${ROWS:-1000000 5000000}"
. benches/lib/setup.sh
bench_setup "" gen-db

# Peers: DuckDB with its sqlite extension (benches/lib/duckdb.sh); sqlite-utils from PyPI in a
# private venv (pinned).
. benches/lib/duckdb.sh
duckdb_setup
VENV="$WORK/venv"
if [ ! -x "$VENV/bin/sqlite-utils" ]; then
  say "installing sqlite-utils 4.2.1 into $VENV..."
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install --quiet "sqlite-utils==4.2.1" >&2
fi

# Run a command, recording wall seconds and peak RSS (KiB) into the named variables.
measure() { # measure SECS_VAR RSS_VAR -- command...
  local sv=$1 rv=$2; shift 3
  local t="$WORK/time.$$"
  /usr/bin/time -f "%e %M" -o "$t" "$@"
  read -r "${sv?}" "${rv?}" < "$t"
}

rate() { python3 -c "print(f'{$1 / $2:,.0f}')"; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
mib() { python3 -c "print(f'{$1 / 1024:.1f}')"; }

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git status --porcelain 2>/dev/null | grep -q . && echo " (with uncommitted changes)" || true)
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
mem=$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)
echo "## Run of $(date -u +%Y-%m-%dT%H:%MZ), commit $commit$dirty"
echo
echo "Machine: $(nproc) cores ($cpu), $mem RAM, $(uname -sr). sqlite-utils 4.2.1, SQLite $(python3 -c 'import sqlite3; print(sqlite3.sqlite_version)') (Python), ferry's bundled SQLite $("$BIN/examples/gen-db" --sqlite-version 2>&1)."
echo

for n in $ROWS; do
  db="$WORK/src-$n.db"
  [ -f "$db" ] || { say "generating $n rows..."; "$BIN/examples/gen-db" "$db" "$n"; }
  total=$((n + 10000)) # items + parents
  cd "$WORK"

  # The full pipeline, each stage's own time and peak RSS.
  rm -rf "dst-$n.db"* .ferry
  say "[$n] ferry-export | ferry-import"
  start=$(date +%s.%N)
  /usr/bin/time -f "%e %M" -o exp.t "$BIN/ferry-export" "sqlite:$db" -q \
    | /usr/bin/time -f "%e %M" -o imp.t "$BIN/ferry-import" "sqlite:dst-$n.db" --create -q > /dev/null
  end=$(date +%s.%N)
  pipe_s=$(python3 -c "print(round($end - $start, 2))")
  read -r _ pipe_exp_rss < exp.t
  read -r _ pipe_imp_rss < imp.t

  say "[$n] stages alone"
  measure exp_s exp_rss -- sh -c "'$BIN/ferry-export' 'sqlite:$db' -q > stream-$n.ndjson"
  bytes=$(stat -c %s "stream-$n.ndjson")
  measure tr_s tr_rss -- sh -c "'$BIN/ferry-transform' --rename-stream main.items=things < stream-$n.ndjson > /dev/null"
  rm -rf "alone-$n.db"* .ferry
  measure imp_s imp_rss -- sh -c "'$BIN/ferry-import' 'sqlite:alone-$n.db' --create -q < stream-$n.ndjson > /dev/null"
  measure val_s val_rss -- sh -c "'$BIN/ferry-validate' 'sqlite:$db' 'sqlite:dst-$n.db' -q --report report-$n.json > /dev/null"
  grep -q '"status": "pass"' "report-$n.json" || { say "validation failed: see $WORK/report-$n.json"; exit 1; }

  say "[$n] sqlite-utils insert --nl"
  "$VENV/bin/sqlite-utils" rows "$db" items --nl > "items-$n.nl"
  "$VENV/bin/sqlite-utils" rows "$db" parents --nl > "parents-$n.nl"
  rm -f "su-$n.db"
  measure su_s su_rss -- sh -c "'$VENV/bin/sqlite-utils' insert su-$n.db parents parents-$n.nl --nl --pk id && '$VENV/bin/sqlite-utils' insert su-$n.db items items-$n.nl --nl --pk id"

  say "[$n] SQLite INSERT ... SELECT across ATTACH"
  rm -f "attach-$n.db"
  measure at_s at_rss -- python3 - "$db" "attach-$n.db" <<'PY'
import sqlite3, sys
src, dst = sys.argv[1], sys.argv[2]
c = sqlite3.connect(dst, isolation_level=None)
c.execute("ATTACH ? AS s", (src,))
c.execute("PRAGMA journal_mode=WAL")
c.execute("BEGIN")
for (sql,) in c.execute("SELECT sql FROM s.sqlite_schema WHERE type = 'table'").fetchall():
    c.execute(sql)
c.execute("INSERT INTO parents SELECT * FROM s.parents")
c.execute("INSERT INTO items SELECT * FROM s.items")
c.execute("COMMIT")
PY

  say "[$n] DuckDB: ATTACH both, CREATE TABLE AS"
  rm -f "duck-$n.db"
  # shellcheck disable=SC2086
  measure dk_s dk_rss -- $DUCKDB "ATTACH '$db' AS s (TYPE sqlite, READ_ONLY)" "ATTACH 'duck-$n.db' AS d (TYPE sqlite)" \
    "CREATE TABLE d.parents AS SELECT * FROM s.parents" "CREATE TABLE d.items AS SELECT * FROM s.items"
  cd - > /dev/null

  echo "### $n rows (+10,000 parents): $(python3 -c "print(f'{$total:,}')") rows, stream $(mib $((bytes / 1024))) MiB"
  echo
  echo "| what | seconds | rows/s | vs sqlite-utils | share of ATTACH limit | peak RSS MiB |"
  echo "|---|---:|---:|---:|---:|---:|"
  echo "| ferry-export \\| ferry-import | $pipe_s | $(rate $total "$pipe_s") | $(ratio "$su_s" "$pipe_s")x | $(ratio "$at_s" "$pipe_s") | export $(mib "$pipe_exp_rss"), import $(mib "$pipe_imp_rss") |"
  echo "| ferry-export alone (to a file) | $exp_s | $(rate $total "$exp_s") | | | $(mib "$exp_rss") |"
  echo "| ferry-transform alone (rename) | $tr_s | $(rate $total "$tr_s") | | | $(mib "$tr_rss") |"
  echo "| ferry-import alone (from a file) | $imp_s | $(rate $total "$imp_s") | | | $(mib "$imp_rss") |"
  echo "| ferry-validate (both databases) | $val_s | $(rate $total "$val_s") | | | $(mib "$val_rss") |"
  echo "| sqlite-utils insert --nl | $su_s | $(rate $total "$su_s") | 1.00x | $(ratio "$at_s" "$su_s") | $(mib "$su_rss") |"
  echo "| SQLite INSERT ... SELECT (ATTACH) | $at_s | $(rate $total "$at_s") | $(ratio "$su_s" "$at_s")x | 1.00 | $(mib "$at_rss") |"
  echo "| DuckDB $DUCKDB_VERSION (sqlite extension: CREATE TABLE AS, no keys, no NOT NULL) | $dk_s | $(rate $total "$dk_s") | $(ratio "$su_s" "$dk_s")x | $(ratio "$at_s" "$dk_s") | $(mib "$dk_rss") |"
  echo
  echo "ferry against DuckDB: **$(ratio "$dk_s" "$pipe_s")x** its rate (the aim is 1.2x)."
  echo
done
rm -f "$WORK/time.$$"
