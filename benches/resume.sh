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
WORK="$PWD/target/bench/resume"
mkdir -p "$WORK"
say() { printf '%s\n' "$*" >&2; }

say "building (release)..."
cargo build --release --locked --bins --example gen-db >&2
BIN="$PWD/target/release"
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

# A fresh load: export | import, timed.
fresh_load() { # fresh_load TARGET -> seconds in $t
  rm -rf .ferry
  local a b
  a=$(now)
  "$BIN/ferry-export" "sqlite:$db" -q | "$BIN/ferry-import" "$1" --create -q > /dev/null
  b=$(now)
  t=$(secs "$a" "$b")
}

# The same, SIGKILLed once the state file says half the rows are in, then the same command again,
# timed; how many rows the first run had committed and the re-run wrote.
resumed_load() { # resumed_load TARGET -> $t (re-run seconds), $kept, $wrote
  rm -rf .ferry pipe.fifo
  mkfifo pipe.fifo
  "$BIN/ferry-export" "sqlite:$db" -q > pipe.fifo &
  local e=$!
  "$BIN/ferry-import" "$1" --create -q < pipe.fifo > /dev/null &
  local i=$!
  while :; do
    kept=$("$BIN/ferry" status --json 2> /dev/null | python3 -c "import sys, json; print(sum(json.loads(l)['run']['rows_written'] for l in sys.stdin if '\"RUN\"' in l))" || echo 0)
    [ "$kept" -ge $((total / 2)) ] && break
    sleep 0.1
  done
  kill -9 "$i" "$e" 2> /dev/null || true
  wait "$i" "$e" 2> /dev/null || true
  rm -f pipe.fifo
  local a b
  a=$(now)
  wrote=$("$BIN/ferry-export" "sqlite:$db" -q | "$BIN/ferry-import" "$1" --create -q | python3 -c "import sys, json; print([json.loads(l) for l in sys.stdin][-1]['written'])")
  b=$(now)
  t=$(secs "$a" "$b")
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
  say "[$label] killed half-way, then the same command"
  $reset
  resumed_load "$target"
  local r_t=$t r_kept=$kept r_wrote=$wrote
  "$BIN/ferry-validate" "sqlite:$db" "$target" -q > /dev/null || { say "[$label] the resumed load is not equal"; exit 1; }
  [ $((r_kept + r_wrote)) -ge "$total" ] || { say "[$label] rows missing: $r_kept + $r_wrote < $total"; exit 1; }
  local fresh_rate resumed_rate
  fresh_rate=$(python3 -c "print($total / $f_t)")
  resumed_rate=$(python3 -c "print($r_wrote / $r_t)")
  echo "| $label | $f_t s, $(rate "$total" "$f_t") rows/s | $r_kept | $r_wrote rows in $r_t s, $(rate "$r_wrote" "$r_t") rows/s | $(ratio "$(python3 -c "print($resumed_rate / $fresh_rate)")") |"
}

commit=$(git -C "$OLDPWD" rev-parse --short HEAD 2> /dev/null || echo unknown)
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo "## Resumed load of $(date -u +%Y-%m-%dT%H:%MZ), commit $commit"
echo
echo "$total rows (items $ROWS, parents 10,000). Machine: $(nproc) cores ($cpu), $(uname -sr). The import SIGKILLed once the state file counts half the rows committed, then the same command: its rate over the rows it writes (it reads and skips the others) against a fresh load's rate over all of them."
echo
echo "| target | fresh load | rows kept from the killed run | the re-run | resumed rate / fresh rate |"
echo "|---|---|---:|---|---:|"
report PostgreSQL "$BASE/resume" "fresh_db resume"
report SQLite "sqlite:$WORK/copy.db" "rm -f $WORK/copy.db $WORK/copy.db-wal $WORK/copy.db-shm"
