#!/usr/bin/env bash
# Shards on one machine: SQLite -> PostgreSQL with N = 1, 2, 4 shards running at once (each
# `ferry-export --shard K/N | ferry-import` with its own state file), then each shard validated
# and the reports merged. Per N: wall time, rows/s, and CPU-seconds per million rows of the
# exports, the imports and the PostgreSQL server, the figures the scaling model in RESULTS.md
# is built from.
#
#   bash benches/shards.sh                  # 1M rows, N = 1 2 4
#   ROWS=5000000 SHARDS="1 2 4 8" bash benches/shards.sh
#
# Prints a Markdown report on stdout; everything it makes goes to target/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${ROWS:-1000000}"
SHARDS="${SHARDS:-1 2 4}"
. benches/lib/setup.sh
bench_setup "" gen-db
command -v psql > /dev/null || apt-get install -y -q postgresql-client >&2
. benches/lib/duckdb.sh
duckdb_setup
. benches/lib/pg-cluster.sh
pg_cluster "$WORK"
trap pg_stop EXIT
sql() { psql -q -v ON_ERROR_STOP=1 "$BASE/${1}" -c "$2" > /dev/null 2>&1; }
fresh() { sql postgres "DROP DATABASE IF EXISTS $1" && sql postgres "CREATE DATABASE $1" && sql postgres "CHECKPOINT"; }

# CPU-seconds (user + system) the PostgreSQL server has used: its live processes, and the
# backends that have exited (counted into the postmaster's children's times).
server_cpu() {
  python3 - <<'PY'
import os
tick = os.sysconf("SC_CLK_TCK")
total = 0
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        continue
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    if name != "postgres":
        continue
    utime, stime, cutime, cstime = map(int, fields[11:15])
    total += utime + stime + cutime + cstime
print(total / tick)
PY
}

db="$WORK/src-$ROWS.db"
[ -f "$db" ] || { say "generating $ROWS rows..."; "$BIN/examples/gen-db" "$db" "$ROWS"; }
total=$((ROWS + 10000))
cd "$WORK"
commit=$(git -C "$OLDPWD" rev-parse --short HEAD)
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo "## Shards run of $(date -u +%Y-%m-%dT%H:%MZ), commit $commit"
echo
echo "SQLite -> PostgreSQL, $total rows (items $ROWS with a foreign key to parents 10,000), N shards at once on one machine: $(nproc) cores ($cpu), PostgreSQL $(psql -Atq "$BASE/postgres" -c 'SHOW server_version') on the same machine (default settings). CPU-s per million rows are user + system, summed over the N processes of each stage."
echo
echo "| shards | seconds, median (each round) | rows/s | speed-up | export CPU-s/Mrow | import CPU-s/Mrow | server CPU-s/Mrow | WAL bytes/row | validate (all shards at once), s | merged verdict |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
RUNS="${RUNS:-3}"
declare -A rows=()
duck=""
for round in $(seq "$RUNS"); do
for n in $SHARDS; do
  say "[round $round, $n shards] load"
  fresh shards_$n
  rm -f shard-*.db* time-*.txt v-*.json
  before=$(server_cpu)
  wal0=$(psql -Atq "$BASE/postgres" -c "SELECT pg_current_wal_lsn()")
  start=$(date +%s.%N)
  for k in $(seq "$n"); do
    bash -o pipefail -c "/usr/bin/time -f '%U %S' -o time-e$k.txt '$BIN/ferry-export' 'sqlite:$db' --shard $k/$n --state shard-$k.db -q \
      | /usr/bin/time -f '%U %S' -o time-i$k.txt '$BIN/ferry-import' '$BASE/shards_$n' --create --state shard-$k.db -q > /dev/null" &
  done
  wait
  end=$(date +%s.%N)
  after=$(server_cpu)
  wal=$(psql -Atq "$BASE/postgres" -c "SELECT round(pg_wal_lsn_diff(pg_current_wal_lsn(), '$wal0') / $total)")
  secs=$(python3 -c "print(round($end - $start, 2))")
  cpu_of() { cat time-"$1"*.txt | awk -v m="$total" '{s += $1 + $2} END {printf "%.2f", s / (m / 1e6)}'; }
  e=$(cpu_of e) i=$(cpu_of i)
  s=$(python3 -c "print(f'{($after - $before) / ($total / 1e6):.2f}')")
  say "[$n shards] validate each, merge"
  vstart=$(date +%s.%N)
  for k in $(seq "$n"); do
    "$BIN/ferry-validate" "sqlite:$db" "$BASE/shards_$n" --shard "$k/$n" --report "v-$k.json" -q > /dev/null &
  done
  wait
  vend=$(date +%s.%N)
  verdict=$("$BIN/ferry-validate" --merge v-*.json -q | python3 -c "import json,sys; print(json.load(sys.stdin)['status'])")
  [ "$verdict" = pass ] || { say "the merged validation did not pass: see $WORK/v-*.json"; exit 1; }
  rows[$n]+="$secs $e $i $s $wal $(python3 -c "print(round(($vend - $vstart), 2))") $verdict
"
done
  # DuckDB in the same round, as benches/pg.sh runs it: CREATE TABLE AS, then the keys and the FK.
  say "[round $round] DuckDB"
  fresh duck
  dstart=$(date +%s.%N)
  # shellcheck disable=SC2086
  $DUCKDB "ATTACH '$db' AS s (TYPE sqlite, READ_ONLY)" "ATTACH '$BASE/duck' AS pg (TYPE postgres)" \
    "CREATE TABLE pg.public.parents AS SELECT * FROM s.parents" "CREATE TABLE pg.public.items AS SELECT * FROM s.items" \
    "CALL postgres_execute('pg', 'ALTER TABLE parents ADD PRIMARY KEY (id); ALTER TABLE items ADD PRIMARY KEY (id); ALTER TABLE items ADD FOREIGN KEY (parent_id) REFERENCES parents (id)')" > /dev/null
  duck+="$(python3 -c "print(round($(date +%s.%N) - $dstart, 2))") "
done
base=""
best=""
for n in $SHARDS; do
  # The round whose load time is the median.
  read -r secs e i s wal v verdict <<< "$(printf '%s' "${rows[$n]}" | sort -n | awk '{a[NR]=$0} END {print a[int((NR+1)/2)]}')"
  all=$(printf '%s' "${rows[$n]}" | awk '{printf "%s%s", (NR>1?", ":""), $1}')
  [ -n "$base" ] || base=$secs
  if [ -z "$best" ] || python3 -c "import sys; sys.exit(0 if $secs < $best else 1)"; then best=$secs; fi
  echo "| $n | $secs ($all) | $(python3 -c "print(f'{$total / $secs:,.0f}')") | $(python3 -c "print(f'{$base / $secs:.2f}x')") | $e | $i | $s | $wal | $v | $verdict |"
done
# shellcheck disable=SC2086
dk=$(printf '%s\n' $duck | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo
echo "DuckDB $DUCKDB_VERSION in the same rounds (CREATE TABLE AS, then primary keys and the FK): $dk s median ($duck). ferry's best N against DuckDB: **$(python3 -c "print(f'{$dk / $best:.2f}x')")** its rate; one shard: **$(python3 -c "print(f'{$dk / $base:.2f}x')")**."
