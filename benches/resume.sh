#!/usr/bin/env bash
# A resumed load against a fresh one: the import killed (SIGKILL) half-way through, then the same
# command; how fast the re-run loads the rows that are left, against a fresh load of them all.
# Into PostgreSQL (whose keys are built after the data) and into SQLite.
#
#   bash benches/resume.sh                # 2M items rows (plus 10,000 parents)
#   ROWS=500000 bash benches/resume.sh
#   FERRY_BENCH_PG=postgres://user:pw@host:port bash benches/resume.sh
#
# Prints a Markdown report (machine, commit, seconds, rows/s, ratio) on stdout; copy it into
# benches/RESULTS.md. Everything it makes goes to target/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${ROWS:-2000000}"
. benches/lib/setup.sh
bench_setup resume gen-db
. benches/lib/pg-cluster.sh
pg_cluster "$WORK"
trap pg_stop EXIT
sql() { psql -q -v ON_ERROR_STOP=1 "$BASE/${1}" -c "$2" > /dev/null 2>&1; }
fresh_db() { sql postgres "DROP DATABASE IF EXISTS $1" && sql postgres "CREATE DATABASE $1" && sql postgres "CHECKPOINT"; }

db="$WORK/src-$ROWS.db"
[ -f "$db" ] || { say "generating $ROWS rows..."; "$BIN/examples/gen-db" "$db" "$ROWS"; }
total=$((ROWS + 10000))
cd "$WORK"
now() { date +%s.%N; }
secs() { python3 -c "print(round($2 - $1, 2))"; }

# The seconds an import (its JSON log in import.log) spent building the keys, indexes and
# foreign keys that wait for the data, from the last "building keys and indexes" (the big
# table's, which comes last) to its end: work over the whole table, the same for a fresh and a
# resumed load.
after_load() { # after_load END-TIME -> seconds
  python3 - "$1" <<'PY'
import json, sys, datetime
end = float(sys.argv[1])
first = None
for line in open("import.log"):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if e.get("fields", {}).get("message") == "building keys and indexes":
        first = datetime.datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp()
print(round(end - first, 2) if first else 0)
PY
}

# A fresh load: export | import, timed ($t), and the part of it after the rows ($after).
fresh_load() { # fresh_load TARGET
  rm -rf .ferry
  local a b
  a=$(now)
  "$BIN/ferry-export" "sqlite:$db" -q | "$BIN/ferry-import" "$1" --create --log-format json 2> import.log > /dev/null
  b=$(now)
  t=$(secs "$a" "$b")
  after=$(after_load "$b")
}

# The same, SIGKILLed once the state file says half the rows are in, then the same command again,
# timed; how many rows the first run had committed (as the re-run found them) and it wrote.
resumed_load() { # resumed_load TARGET [EXPORT-FLAG] -> $t (re-run seconds), $kept, $wrote
  rm -rf .ferry pipe.fifo
  mkfifo pipe.fifo
  "$BIN/ferry-export" "sqlite:$db" -q > pipe.fifo &
  local e=$!
  "$BIN/ferry-import" "$1" --create -q < pipe.fifo > /dev/null &
  local i=$!
  local acked
  while :; do
    acked=$({ "$BIN/ferry" status --json 2> /dev/null || true; } | python3 -c "import sys, json; print(sum(json.loads(l)['run']['rows_written'] for l in sys.stdin if '\"RUN\"' in l))")
    [ "$acked" -ge $((total / 2)) ] && break
    sleep 0.1
  done
  kill -9 "$i" "$e" 2> /dev/null || true
  wait "$i" "$e" 2> /dev/null || true
  rm -f pipe.fifo
  local a b
  a=$(now)
  # The END line: what it wrote, and what it found already there (the target's own markers).
  read -r wrote kept < <("$BIN/ferry-export" "sqlite:$db" -q ${2:-} | "$BIN/ferry-import" "$1" --create --log-format json 2> import.log \
    | python3 -c "import sys, json; e = [json.loads(l) for l in sys.stdin][-1]; print(e['written'], e['already_imported'])")
  b=$(now)
  t=$(secs "$a" "$b")
  after=$(after_load "$b")
}

rate() { python3 -c "print(f'{$1 / $2:,.0f}')"; }
ratio() { python3 -c "print(f'{$1:.2f}')"; }

report() { # report LABEL TARGET RESET-COMMAND
  local label=$1 target=$2 reset=$3
  say "[$label] fresh load"
  $reset
  fresh_load "$target"
  local f_t=$t
  "$BIN/ferry-validate" "sqlite:$db" "$target" -q > /dev/null || { say "[$label] the fresh load is not equal"; exit 1; }
  local f_after=$after fresh_rate
  # Rows per second of loading: the keys and indexes built after the rows are left out (they
  # are work over the whole table, as long for a re-run as for a fresh load: shown apart).
  fresh_rate=$(python3 -c "print($total / ($f_t - $f_after))")
  local how flag
  for how in "the same command" "export --resume"; do
    flag=""
    [ "$how" = "export --resume" ] && flag="--resume"
    say "[$label] killed half-way, then $how"
    $reset
    resumed_load "$target" $flag
    "$BIN/ferry-validate" "sqlite:$db" "$target" -q > /dev/null || { say "[$label] the resumed load is not equal"; exit 1; }
    # Equal, so what the re-run did not write the killed run had (with --resume the re-run does
    # not even read those rows, and counts only the ones past its last acknowledged STATE).
    [ "$how" = "export --resume" ] || [ $((kept + wrote)) -eq "$total" ] || { say "[$label] rows lost or doubled: $kept + $wrote != $total"; exit 1; }
    kept=$((total - wrote))
    local load=$(python3 -c "print(round($t - $after, 2))") f_load=$(python3 -c "print(round($f_t - $f_after, 2))")
    echo "| $label | $f_t s ($f_load s loading, $(rate "$total" "$f_load") rows/s; then $f_after s of keys and indexes) | $how | $kept | $t s ($load s loading $wrote rows, $(rate "$wrote" "$load") rows/s; then $after s) | **$(ratio "$(python3 -c "print(($wrote / $load) / $fresh_rate)")")** |"
  done
}

commit=$(git -C "$OLDPWD" rev-parse --short HEAD 2> /dev/null || echo unknown)
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo "## Resumed load of $(date -u +%Y-%m-%dT%H:%MZ), commit $commit"
echo
echo "$total rows (items $ROWS, parents 10,000). Machine: $(nproc) cores ($cpu), $(uname -sr). The import SIGKILLed once the state file counts half the rows committed, then the same command (which reads the done rows again and skips them), or the export with --resume (which starts after the last acknowledged key): the re-run's loading rate over the rows it writes against a fresh load's over all of them. Loading ends where the import starts building the keys, indexes and foreign keys that wait for the data (its log's first \"building keys and indexes\"): that work is over the whole table, as long after a re-run as after a fresh load, and is shown apart."
echo
echo "| target | fresh load | re-run | rows kept from the killed run | the re-run | resumed loading rate / fresh |"
echo "|---|---|---|---:|---|---:|"
report PostgreSQL "$BASE/resume" "fresh_db resume"
report SQLite "sqlite:$WORK/copy.db" "rm -f $WORK/copy.db $WORK/copy.db-wal $WORK/copy.db-shm"
