#!/usr/bin/env bash
# Two builds of ferry side by side: an earlier commit (BEFORE) against the working tree, on the
# paths a refactoring must not slow down. Each round runs every path with both builds in turn, so
# drift over the minutes weighs on both alike; a ratio above 1.00 means the working tree is slower.
#
#   BEFORE=13085a9 bash benches/ab.sh            # SQLite -> SQLite and -> PostgreSQL at 1M, files small
#   BEFORE=HEAD~3 ROWS=100000 FILES=2000 RUNS=5 bash benches/ab.sh
#
# Prints a Markdown report (machine, both commits, medians, per-round ratios) on stdout; copy it
# into benches/RESULTS.md. BEFORE is built in a worktree under target/bench/ab/.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${BEFORE:?BEFORE=COMMIT names the build to compare against}"
ROWS="${ROWS:-1000000}"
FILES="${FILES:-10000}"
RUNS="${RUNS:-3}"
WORK="$PWD/target/bench/ab"
mkdir -p "$WORK"
say() { printf '%s\n' "$*" >&2; }

before=$(git rev-parse --short "$BEFORE")
after="$(git rev-parse --short HEAD)$(git status --porcelain | grep -q . && echo '+changes' || true)"
say "building the working tree and $before (release)..."
cargo build --release --locked --bins --example gen-db >&2
if [ ! -x "$WORK/tree/target/release/ferry-import" ] || [ "$(git -C "$WORK/tree" rev-parse --short HEAD 2> /dev/null)" != "$before" ]; then
  git worktree remove --force "$WORK/tree" 2> /dev/null || rm -rf "$WORK/tree"
  git worktree add --detach "$WORK/tree" "$before" >&2
fi
(cd "$WORK/tree" && CARGO_TARGET_DIR="$WORK/tree/target" cargo build --release --locked --bins >&2)
declare -A BIN=([before]="$WORK/tree/target/release" [after]="$PWD/target/release")

. benches/lib/pg-cluster.sh
pg_cluster "$WORK"
trap pg_stop EXIT
sql() { psql -q -v ON_ERROR_STOP=1 "$BASE/${1}" -c "$2" > /dev/null 2>&1; }

db="$WORK/src-$ROWS.db"
[ -f "$db" ] || { say "generating $ROWS rows..."; "${BIN[after]}/examples/gen-db" "$db" "$ROWS"; }
files="$WORK/files-$FILES"
if [ ! -f "$files.done" ]; then
  say "generating $FILES files of 64 KiB..."
  rm -rf "$files" && mkdir -p "$files"
  python3 -c "
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f'd{i % 100:02d}')
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, f'f{i:06d}.bin'), 'wb').write(os.urandom(65536))
" "$files" "$FILES"
  touch "$files.done"
fi

# One path with one build: wall seconds of the whole pipeline (state file and target fresh).
timed() { # timed BUILD PATH
  local b=${BIN[$1]} st="$WORK/state-$1.db" start end
  rm -f "$st" "$st"-* "$WORK/out-$1.db"
  rm -rf "$WORK/out-$1"
  case $2 in
    sqlite) local cmd="'$b/ferry-export' 'sqlite:$db' -q | '$b/ferry-import' 'sqlite:$WORK/out-$1.db' --create --state '$st' -q" ;;
    pg)
      sql postgres "DROP DATABASE IF EXISTS ab_$1" && sql postgres "CREATE DATABASE ab_$1"
      local cmd="'$b/ferry-export' 'sqlite:$db' -q | '$b/ferry-import' '$BASE/ab_$1' --create --state '$st' -q" ;;
    files) local cmd="'$b/ferry-export' 'dir:$files' --state '$st' -q | '$b/ferry-import' 'dir:$WORK/out-$1' --state '$st' -q" ;;
  esac
  sync
  start=$(date +%s.%N)
  bash -o pipefail -c "$cmd > /dev/null"
  end=$(date +%s.%N)
  python3 -c "print(round($end - $start, 2))"
}

declare -A T=()
for round in $(seq "$RUNS"); do
  for path in sqlite pg files; do
    for build in before after; do
      s=$(timed "$build" "$path")
      say "round $round, $path, $build: $s s"
      T[$path.$build]+="$s "
    done
  done
done

median() { printf '%s\n' $1 | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
mem=$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)
echo "## Before/after of $(date -u +%Y-%m-%dT%H:%MZ): $before against $after"
echo
echo "Median of $RUNS rounds, each round running every path with both builds in turn. Machine: $(nproc) cores ($cpu), $mem RAM, $(uname -sr). Reproduce: \`BEFORE=$before bash benches/ab.sh\`."
echo
echo "| path | $before (s) | $after (s) | after / before | per round |"
echo "|---|---:|---:|---:|---|"
for path in sqlite pg files; do
  case $path in
    sqlite) name="SQLite -> SQLite, $ROWS rows" ;;
    pg) name="SQLite -> PostgreSQL, $ROWS rows" ;;
    files) name="$FILES x 64 KiB -> dir:" ;;
  esac
  b=$(median "${T[$path.before]}")
  a=$(median "${T[$path.after]}")
  rounds=$(python3 -c "import sys; print(', '.join(f'{float(y) / float(x):.2f}' for x, y in zip(sys.argv[1].split(), sys.argv[2].split())))" "${T[$path.before]}" "${T[$path.after]}")
  echo "| $name | $b | $a | $(python3 -c "print(f'{$a / $b:.2f}')") | $rounds |"
done
