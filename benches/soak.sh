#!/usr/bin/env bash
# Crash-consistency soak (issue 7): pipelines into SQLite, the D1 double, PostgreSQL and a local
# S3 server, each SIGKILLed at random instants (a random stage: export, transform or import, so
# also the state-file writer mid-commit), re-run with the same command, then validated.
#
#   bash benches/soak.sh                       # 40 trials x 3 kills per target (120 kill points)
#   TRIALS=5 TARGETS="sqlite d1" bash benches/soak.sh
#   SEED=42 bash benches/soak.sh               # the same kill points again
#
# Prints a Markdown report (kill points per stage, rows/files lost and duplicated, validate exit
# codes) on stdout; copy it into benches/RESULTS.md. Files go to target/soak/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${ROWS:-200000}"
WORK="$PWD/target/soak"
rm -rf "$WORK" && mkdir -p "$WORK"
say() { printf '%s\n' "$*" >&2; }
export TARGETS="${TARGETS:-sqlite d1 postgres s3}"
export TRIALS="${TRIALS:-40}" KILLS="${KILLS:-3}" SEED="${SEED:-$(date +%s)}"

say "building (release)..."
cargo build --release --locked --bins --example gen-db --example s3-server >&2
export FERRY_BIN="$PWD/target/release" SOAK_WORK="$WORK"
"$FERRY_BIN/examples/gen-db" "$WORK/src.db" "$ROWS" >&2
export SOAK_SQLITE_SRC="$WORK/src.db"

STOP=()
cleanup() { for c in "${STOP[@]}"; do eval "$c" || true; done; }
trap cleanup EXIT

case " $TARGETS " in *" d1 "*)
  # The rate limit 100 times faster, the client paced for it.
  "$FERRY_BIN/ferry-d1-double" --dir "$WORK/d1" --token soak --port-file "$WORK/d1.port" --scale 100 -q &
  STOP+=("kill $!")
  for _ in $(seq 100); do [ -s "$WORK/d1.port" ] && break; sleep 0.05; done
  export CLOUDFLARE_API_TOKEN=soak CLOUDFLARE_API_BASE_URL="http://127.0.0.1:$(cat "$WORK/d1.port")/client/v4"
  export FERRY_D1_RATE=1200/3
  ;;
esac
case " $TARGETS " in *" postgres "*)
  . benches/lib/pg-cluster.sh
  pg_cluster "$WORK"
  STOP+=("pg_stop")
  export SOAK_PG="$BASE"
  ;;
esac
case " $TARGETS " in *" s3 "*)
  # 300 files of 64 KiB and two of 24 MiB (multipart uploads).
  python3 - "$WORK/tree" <<'PY'
import os, random, sys
root = sys.argv[1]
r = random.Random(7)
for i in range(300):
    d = os.path.join(root, f"d{i % 10}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i}.bin"), "wb") as f:
        f.write(r.randbytes(65536))
for i in range(2):
    with open(os.path.join(root, f"big{i}.bin"), "wb") as f:
        f.write(r.randbytes(24 << 20))
PY
  export SOAK_TREE="$WORK/tree"
  "$FERRY_BIN/examples/s3-server" "$WORK/s3" soak > "$WORK/s3.port" &
  STOP+=("kill $!")
  for _ in $(seq 100); do [ -s "$WORK/s3.port" ] && break; sleep 0.05; done
  export AWS_ENDPOINT_URL="http://127.0.0.1:$(head -1 "$WORK/s3.port")" AWS_ACCESS_KEY_ID=FERRYTESTACCESSKEY01 AWS_REGION=auto
  AWS_SECRET_ACCESS_KEY=$(sed -n 's/^pub const SECRET_KEY: &str = "\(.*\)";/\1/p' tests/common/s3.rs)
  export AWS_SECRET_ACCESS_KEY
  unset AWS_CA_BUNDLE
  ;;
esac

started=$(date +%s)
python3 benches/soak.py > "$WORK/result.json"
secs=$(( $(date +%s) - started ))

commit=$(git rev-parse --short HEAD 2> /dev/null || echo unknown)
python3 - "$WORK/result.json" "$commit" "$secs" "$ROWS" <<'PY'
import json, os, platform, sys
r = json.load(open(sys.argv[1]))
commit, secs, rows = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
print(f"## Soak of commit {commit}: {r['trials_per_target']} trials x {r['kills_per_trial']} kills per target, seed {r['seed']}")
print()
print(f"Machine: {os.cpu_count()} cores, {platform.system()} {platform.release()}; {secs} s in all. "
      f"Source: {rows:,} items + 10,000 parents (SQLite); files: 300 x 64 KiB + 2 x 24 MiB. "
      f"Reproduce: `SEED={r['seed']} TRIALS={r['trials_per_target']} KILLS={r['kills_per_trial']} bash benches/soak.sh`.")
print()
print("| target | clean run | trials | kill points | kills per stage | kills after the end | lost | duplicated | other findings | validate exit codes | re-runs that failed |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for t in r["results"]:
    stages = ", ".join(f"{k} {v}" for k, v in t["kills_per_stage"].items())
    codes = ", ".join(f"{k}: {v}" for k, v in sorted(t["validate_exit_codes"].items()))
    print(f"| {t['target']} | {t['clean_run_s']} s | {t['trials']} | {t['kill_points']} | {stages} | "
          f"{t['kills_after_the_end']} | {t['lost']} | {t['duplicated']} | {t['other_findings']} | {codes} | {t['rerun_failures']} |")
PY
