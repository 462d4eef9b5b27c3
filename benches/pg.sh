#!/usr/bin/env bash
# SQLite -> PostgreSQL and PostgreSQL -> SQLite, side by side with DuckDB, pgloader and psql \copy.
#
#   bash benches/pg.sh              # 1M and 5M rows, a private PostgreSQL cluster
#   ROWS="100000" bash benches/pg.sh
#   FERRY_BENCH_PG=postgres://user:pw@host:port bash benches/pg.sh   # an existing server
#
# Prints a Markdown report (machine, commit, seconds, rows/s, ratios, peak RSS of each stage) on
# stdout; copy it into benches/RESULTS.md. Everything it makes goes to target/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${ROWS:-1000000 5000000}"
. benches/lib/setup.sh
bench_setup "" gen-db

# Peers from Debian.
need() { command -v "$1" > /dev/null || { [ "$(id -u)" = 0 ] && apt-get install -y -q "$2" >&2; } || { say "install $2"; exit 1; }; }
need pgloader pgloader
need sqlite3 sqlite3
need psql postgresql-client
. benches/lib/duckdb.sh
duckdb_setup

# A private cluster (as the postgres user when root), unless FERRY_BENCH_PG names a server.
. benches/lib/pg-cluster.sh
pg_cluster "$WORK"
trap pg_stop EXIT
export PGCONNECT_TIMEOUT=10
sql() { psql -q -v ON_ERROR_STOP=1 "$BASE/${1}" -c "$2" > /dev/null 2>&1; }
fresh() { sql postgres "DROP DATABASE IF EXISTS $1" && sql postgres "CREATE DATABASE $1" && sql postgres "CHECKPOINT"; }

# Run a command, recording wall seconds and peak RSS (KiB) into the named variables.
measure() { # measure SECS_VAR RSS_VAR -- command...
  local sv=$1 rv=$2; shift 3
  local t="$WORK/time.$$"
  /usr/bin/time -f "%e %M" -o "$t" "$@"
  read -r "${sv?}" "${rv?}" < "$t"
}
# A pipeline, its wall time and each stage's peak RSS (KiB): pipe SECS_VAR -- "stage" "stage"...
pipe() {
  local sv=$1; shift 2
  local cmd="" i=0
  for st in "$@"; do
    [ $i -gt 0 ] && cmd+=" | "
    cmd+="/usr/bin/time -f %M -o $WORK/rss.$i $st"
    i=$((i + 1))
  done
  local start end
  start=$(date +%s.%N)
  bash -o pipefail -c "$cmd > /dev/null"
  end=$(date +%s.%N)
  printf -v "$sv" '%s' "$(python3 -c "print(round($end - $start, 2))")"
}
rss() { cat "$WORK/rss.$1"; }
# Steps taken in turn, RUNS rounds of all of them (3 unless set), so a machine whose speed drifts
# over the minutes weighs on every tool alike; each named variable ends as its step's median.
RUNS="${RUNS:-3}"
rounds() { # rounds VAR:step-function ...
  local -A all=()
  local vs var
  for _ in $(seq "$RUNS"); do
    for vs in "$@"; do
      var=${vs%%:*}
      "${vs#*:}"
      all[$var]+="${!var} "
    done
  done
  for vs in "$@"; do
    var=${vs%%:*}
    # shellcheck disable=SC2086
    printf -v "$var" '%s' "$(printf '%s\n' ${all[$var]} | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
    # Every round's value too, in round order (VAR_all), for per-round ratios.
    printf -v "${var}_all" '%s' "${all[$var]}"
  done
}
per_round() { # per_round "A1 A2 .." "B1 B2 .." FORMAT [SUBTRACT]: each round's A/B (minus SUBTRACT)
  python3 -c "import sys; a, b, f, d = sys.argv[1].split(), sys.argv[2].split(), sys.argv[3], float(sys.argv[4]); print(', '.join(f.format(float(x) / float(y) - d) for x, y in zip(a, b)))" "$1" "$2" "$3" "${4:-0}"
}
rate() { python3 -c "print(f'{$1 / $2:,.0f}')"; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
mib() { python3 -c "print(f'{$1 / 1024:.1f}')"; }

commit=$(git rev-parse --short HEAD 2> /dev/null || echo unknown)
dirty=$(git status --porcelain 2> /dev/null | grep -q . && echo " (with uncommitted changes)" || true)
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
mem=$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)
pgv=$(psql -Atq "$BASE/postgres" -c "SHOW server_version")
echo "## PostgreSQL run of $(date -u +%Y-%m-%dT%H:%MZ), commit $commit$dirty"
echo
echo "Each time is the median of $RUNS rounds, each round running every SQLite -> PostgreSQL tool in turn. Machine: $(nproc) cores ($cpu), $mem RAM, $(uname -sr). PostgreSQL $pgv (default settings, fsync on), $(pgloader --version 2>&1 | head -1), $(sqlite3 --version | cut -d' ' -f1-2 | sed 's/^/sqlite3 /')."
echo

for n in $ROWS; do
  db="$WORK/src-$n.db"
  [ -f "$db" ] || { say "generating $n rows..."; "$BIN/examples/gen-db" "$db" "$n"; }
  total=$((n + 10000)) # items + parents
  cd "$WORK"

  # The limit moves the same data: sqlite3 -csv writes REALs with 15 significant digits, which
  # changes a third of the amounts; 17 (printf's %!.17g) read back as the same doubles.
  [ -f "items17-$n.csv" ] || sqlite3 -csv "$db" \
    "SELECT id, parent_id, name, CASE WHEN amount IS NULL THEN NULL ELSE printf('%!.17g', amount) END, qty, created_at FROM items" \
    > "items17-$n.csv"
  [ -f "parents-$n.csv" ] || sqlite3 -csv "$db" "SELECT * FROM parents" > "parents-$n.csv"
  ferry_run() {
    say "[$n] ferry: export | import, checkpoint on"
    fresh ferry_$n
    rm -rf .ferry
    pipe f_s -- "$BIN/ferry-export sqlite:$db -q" "$BIN/ferry-import $BASE/ferry_$n --create -q"
    f_exp=$(rss 0) f_imp=$(rss 1)
  }
  nock_run() {
    say "[$n] ferry: STATEs only at stream ends (checkpoint cost)"
    fresh ferry_nock_$n
    rm -rf .ferry
    pipe nock_s -- "$BIN/ferry-export sqlite:$db -q --state-every 1000000000 --state-interval 1000000" \
      "$BIN/ferry-import $BASE/ferry_nock_$n --create -q"
  }
  pgl_run() {
    say "[$n] pgloader"
    fresh pgl_$n
    measure pgl_s pgl_rss -- sh -c "pgloader --quiet 'sqlite://$db' '$BASE/pgl_$n' > pgloader-$n.log 2>&1"
  }
  copy_into() { # copy_into VAR " PRIMARY KEY" or ""
    fresh copy_$n
    sql "copy_$n" "CREATE TABLE parents (id bigint$2, name text NOT NULL);
                   CREATE TABLE items (id bigint$2, parent_id bigint NOT NULL, name text NOT NULL,
                                       amount double precision NOT NULL, qty bigint NOT NULL, created_at text NOT NULL)"
    measure "$1" c_rss -- psql -q "$BASE/copy_$n" -c "\\copy parents FROM 'parents-$n.csv' CSV" -c "\\copy items FROM 'items17-$n.csv' CSV"
  }
  duck_run() {
    say "[$n] DuckDB: ATTACH both, CREATE TABLE AS, then the keys and the foreign key"
    fresh duck_$n
    # shellcheck disable=SC2086
    measure dk_s dk_rss -- $DUCKDB "ATTACH '$db' AS s (TYPE sqlite, READ_ONLY)" \
      "ATTACH '$BASE/duck_$n' AS pg (TYPE postgres)" \
      "CREATE TABLE pg.public.parents AS SELECT * FROM s.parents" \
      "CREATE TABLE pg.public.items AS SELECT * FROM s.items" \
      "CALL postgres_execute('pg', 'ALTER TABLE parents ADD PRIMARY KEY (id); ALTER TABLE items ADD PRIMARY KEY (id); ALTER TABLE items ADD FOREIGN KEY (parent_id) REFERENCES parents (id)')"
  }
  copy_run() { say "[$n] psql \\copy from CSV, keys"; copy_into copy_s " PRIMARY KEY"; }
  copy_nokey_run() { say "[$n] psql \\copy from CSV, no keys"; copy_into copy_nokey_s ""; }
  rounds f_s:ferry_run nock_s:nock_run dk_s:duck_run pgl_s:pgl_run copy_s:copy_run copy_nokey_s:copy_nokey_run
  measure v_s v_rss -- sh -c "'$BIN/ferry-validate' 'sqlite:$db' '$BASE/ferry_$n' -q --report pg-report-$n.json > /dev/null"
  grep -q '"status": "pass"' "pg-report-$n.json" || { say "validation failed: see $WORK/pg-report-$n.json"; exit 1; }

  say "[$n] ferry: PostgreSQL -> SQLite"
  back_run() {
    rm -rf "back-$n.db"* .ferry
    pipe b_s -- "$BIN/ferry-export $BASE/ferry_$n -q" "$BIN/ferry-transform --dialect sqlite -q" "$BIN/ferry-import sqlite:back-$n.db --create -q"
  }
  duckback_run() {
    say "[$n] DuckDB: PostgreSQL -> SQLite, CREATE TABLE AS"
    rm -f "duckback-$n.db"
    # shellcheck disable=SC2086
    measure dkb_s dkb_rss -- $DUCKDB "ATTACH '$BASE/ferry_$n' AS pg (TYPE postgres, READ_ONLY)" \
      "ATTACH 'duckback-$n.db' AS d (TYPE sqlite)" \
      "CREATE TABLE d.parents AS SELECT * FROM pg.public.parents" \
      "CREATE TABLE d.items AS SELECT * FROM pg.public.items"
  }
  rounds b_s:back_run dkb_s:duckback_run
  b_exp=$(rss 0) b_tr=$(rss 1) b_imp=$(rss 2)
  measure bv_s bv_rss -- sh -c "'$BIN/ferry-validate' '$BASE/ferry_$n' 'sqlite:back-$n.db' -q --report back-report-$n.json > /dev/null"
  grep -q '"status": "pass"' "back-report-$n.json" || { say "validation failed: see $WORK/back-report-$n.json"; exit 1; }

  say "[$n] psql \\copy to CSV + sqlite3 .import"
  csvback_run() {
    rm -f "csvback-$n.db"
    measure cb_s cb_rss -- sh -c "psql -q '$BASE/ferry_$n' -c \"\\copy items TO 'items-out-$n.csv' CSV\" -c \"\\copy parents TO 'parents-out-$n.csv' CSV\" \
    && sqlite3 csvback-$n.db 'CREATE TABLE items (id INTEGER PRIMARY KEY, parent_id INTEGER, name TEXT, amount REAL, qty INTEGER, created_at TEXT)' \
       'CREATE TABLE parents (id INTEGER PRIMARY KEY, name TEXT)' '.import --csv items-out-$n.csv items' '.import --csv parents-out-$n.csv parents'"
  }
  rounds cb_s:csvback_run

  cd - > /dev/null
  echo "### $total rows (items $n with a foreign key to parents 10,000; 6 columns, primary keys)"
  echo
  echo "SQLite -> PostgreSQL:"
  echo
  echo "| tool | seconds | rows/s | rate relative to ferry | peak RSS |"
  echo "|---|---:|---:|---:|---|"
  echo "| **ferry** export \\| import (checkpoint on, then keys, FK validated) | $f_s | $(rate $total "$f_s") | 1.00 | export $(mib "$f_exp") MiB, import $(mib "$f_imp") MiB |"
  echo "| ferry, STATEs only at stream ends | $nock_s | $(rate $total "$nock_s") | $(ratio "$f_s" "$nock_s") | |"
  echo "| DuckDB $DUCKDB_VERSION (sqlite + postgres extensions: CREATE TABLE AS, then primary keys and the FK; no NOT NULL) | $dk_s | $(rate $total "$dk_s") | $(ratio "$f_s" "$dk_s") | $(mib "$dk_rss") MiB |"
  echo "| pgloader $(pgloader --version 2>&1 | head -1 | awk '{print $NF}') (same file, defaults) | $pgl_s | $(rate $total "$pgl_s") | $(ratio "$f_s" "$pgl_s") | $(mib "$pgl_rss") MiB |"
  echo "| psql \\copy from CSV, tables with primary keys (the limit) | $copy_s | $(rate $total "$copy_s") | $(ratio "$f_s" "$copy_s") | |"
  echo "| psql \\copy from CSV, no keys | $copy_nokey_s | $(rate $total "$copy_nokey_s") | $(ratio "$f_s" "$copy_nokey_s") | |"
  echo
  echo "ferry against DuckDB: **$(ratio "$dk_s" "$f_s")x** its rate (the aim is 1.2x); against pgloader: **$(ratio "$pgl_s" "$f_s")x** its rate; against \\copy with keys: **$(python3 -c "print(f'{100 * $copy_s / $f_s:.0f}')")%** of its rate; checkpointing costs $(python3 -c "print(f'{100 * ($f_s - $nock_s) / $nock_s:.1f}')")%. ferry-validate (SQLite against PostgreSQL, every row): $v_s s, $(mib "$v_rss") MiB."
  echo
  # The same ratios within each round (the tools of a round run back to back, so a machine whose
  # speed drifts shows as spread here rather than skewing one tool's median).
  echo "Per round, in order: ferry against pgloader $(per_round "$pgl_s_all" "$f_s_all" '{:.2f}x'); against \\copy with keys $(per_round "$copy_s_all" "$f_s_all" '{:.0%}'); checkpoint cost $(per_round "$f_s_all" "$nock_s_all" '{:+.1%}' 1)."
  echo
  echo "PostgreSQL -> SQLite:"
  echo
  echo "| tool | seconds | rows/s | rate relative to ferry | peak RSS |"
  echo "|---|---:|---:|---:|---|"
  echo "| **ferry** export \\| transform --dialect sqlite \\| import | $b_s | $(rate $total "$b_s") | 1.00 | export $(mib "$b_exp") MiB, transform $(mib "$b_tr") MiB, import $(mib "$b_imp") MiB |"
  echo "| DuckDB $DUCKDB_VERSION (postgres + sqlite extensions: CREATE TABLE AS, no keys, no NOT NULL) | $dkb_s | $(rate $total "$dkb_s") | $(ratio "$b_s" "$dkb_s") | $(mib "$dkb_rss") MiB |"
  echo "| psql \\copy to CSV + sqlite3 .import (untyped CSV, no checks) | $cb_s | $(rate $total "$cb_s") | $(ratio "$b_s" "$cb_s") | |"
  echo
  echo "ferry-validate (PostgreSQL against SQLite): $bv_s s, $(mib "$bv_rss") MiB."
  echo
done
