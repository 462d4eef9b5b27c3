#!/usr/bin/env bash
# The SQLite target's settings against their durability (issue 25): ferry-import of the 1M-row
# bench stream into a fresh SQLite file on disk under each FERRY_SQLITE_PRAGMAS, and under
# streams with more or fewer resume points (transactions). Rounds interleave the settings, so
# drift weighs on all alike.
#
#   bash benches/sqlite.sh               # 1,010,000 rows, 3 rounds
#   ROWS=100000 RUNS=1 bash benches/sqlite.sh
#
# Prints a Markdown table (median wall, CPU, peak RSS, database size, rate against the default)
# on stdout; copy it into benches/RESULTS.md. Works in target/bench/sqlite.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${ROWS:-1000000}"
RUNS="${RUNS:-3}"
. benches/lib/setup.sh
bench_setup sqlite gen-db
db="$WORK/src-$ROWS.db"
[ -f "$db" ] || { say "generating $ROWS rows..."; "$BIN/examples/gen-db" "$db" "$ROWS"; }
# The streams: STATEs as ferry-export writes them by default (every 10,000 rows or second), every
# 1,000 rows, and only at each stream's end.
[ -f "$WORK/default.ndjson" ] || "$BIN/ferry-export" "sqlite:$db" -q > "$WORK/default.ndjson"
[ -f "$WORK/every1000.ndjson" ] || "$BIN/ferry-export" "sqlite:$db" -q --state-every 1000 > "$WORK/every1000.ndjson"
[ -f "$WORK/ends.ndjson" ] || "$BIN/ferry-export" "sqlite:$db" -q --state-every 1000000000 --state-interval 1000000 > "$WORK/ends.ndjson"

# name|stream|FERRY_SQLITE_PRAGMAS
CASES=(
  "default (WAL, synchronous=NORMAL)|default|"
  "synchronous=FULL|default|synchronous=FULL"
  "synchronous=OFF|default|synchronous=OFF"
  "journal_mode=DELETE, synchronous=FULL (SQLite's own defaults)|default|journal_mode=DELETE;synchronous=FULL"
  "page_size=16384|default|page_size=16384"
  "page_size=65536|default|page_size=65536"
  "cache_size=-65536 (64 MiB)|default|cache_size=-65536"
  "mmap_size=256 MiB|default|mmap_size=268435456"
  "STATE every 1,000 rows|every1000|"
  "STATEs only at stream ends|ends|"
)
declare -A WALL CPU RSS SIZE
for round in $(seq "$RUNS"); do
  for i in "${!CASES[@]}"; do
    IFS='|' read -r name stream pragmas <<< "${CASES[$i]}"
    say "[round $round] $name"
    rm -f "$WORK/t.db"* "$WORK/t.state"*
    sync
    FERRY_SQLITE_PRAGMAS="$pragmas" /usr/bin/time -f "%e %U %S %M" -o "$WORK/time" \
      "$BIN/ferry-import" "sqlite:$WORK/t.db" --create --state "$WORK/t.state" -q < "$WORK/$stream.ndjson" > /dev/null
    read -r w u s m < "$WORK/time"
    WALL[$i]+="$w "
    CPU[$i]+="$(python3 -c "print(round($u + $s, 2))") "
    RSS[$i]=$m
    SIZE[$i]=$(du -cm "$WORK/t.db"* | tail -1 | cut -f1)
  done
done
# The median of a list of numbers, and the CPU of the run with the median time.
median() { python3 -c "import sys; v=sorted(float(x) for x in sys.argv[1:]); print(v[len(v)//2])" $1; }
at_median() { python3 -c "
import sys
w=[float(x) for x in sys.argv[1].split()]; c=sys.argv[2].split()
i=sorted(range(len(w)), key=lambda k: w[k])[len(w)//2]; print(c[i])" "$1" "$2"; }
commit=$(git rev-parse --short HEAD)$(git status --porcelain | grep -q . && echo ' (with uncommitted changes)' || true)
echo "## SQLite target settings, $(date -u +%Y-%m-%dT%H:%MZ), commit $commit"
echo
echo "ferry-import of $((ROWS + 10000)) rows from a file into a fresh SQLite file on $(df -h "$WORK" | awk 'NR==2 {print $1}') (not tmpfs), median of $RUNS interleaved rounds. Machine: $(nproc) cores, $(uname -sr), SQLite bundled with rusqlite."
echo
echo "| setting | seconds | CPU s | peak RSS MiB | database MiB | rate vs default | rounds (s) |"
echo "|---|---:|---:|---:|---:|---:|---|"
base=$(median "${WALL[0]}")
for i in "${!CASES[@]}"; do
  IFS='|' read -r name _ _ <<< "${CASES[$i]}"
  m=$(median "${WALL[$i]}")
  echo "| $name | $m | $(at_median "${WALL[$i]}" "${CPU[$i]}") | $((RSS[$i] / 1024)) | ${SIZE[$i]} | $(python3 -c "print(f'{$base / $m:.2f}x')") | ${WALL[$i]% } |"
done
