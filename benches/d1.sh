#!/usr/bin/env bash
# SQLite -> Cloudflare D1 (the double, ferry-d1-double, with D1's limits and rate limit on), and
# back out: requests sent, rows per request, and how much of the rate budget the run used.
#
#   bash benches/d1.sh                  # 100k rows x 10 columns
#   ROWS=20000 bash benches/d1.sh
#
# Two runs of the import:
#   real clock    the rate limit as Cloudflare sets it (1,200 requests per 300 s), default
#                 request size (about 1 MiB of SQL): what a user's migration does;
#   over a window small requests (FERRY_D1_REQUEST_BYTES=8192) with the clock 20 times faster,
#                 so the run sends more than a whole window's budget and has to be paced.
# Then the export back out of D1 and a validation against the source, on the real clock.
# Prints a Markdown report on stdout; copy it into benches/RESULTS.md. Files go to target/bench/d1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${ROWS:-100000}"
. benches/lib/setup.sh
bench_setup d1 fresh
command -v sqlite3 > /dev/null || { [ "$(id -u)" = 0 ] && apt-get install -y -q sqlite3 >&2; }

say "generating $ROWS rows x 10 columns..."
SRC="$WORK/src.db"
sqlite3 "$SRC" <<SQL
CREATE TABLE events (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, kind TEXT NOT NULL, payload TEXT,
  score REAL, big INTEGER, flag BOOLEAN, at TEXT, note TEXT, raw BLOB);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $ROWS)
INSERT INTO events SELECT i, i % 97, CASE i % 3 WHEN 0 THEN 'signup' WHEN 1 THEN 'login' ELSE 'it''s "quoted"' END,
  '{"n": ' || i || ', "tags": ["a", "b"]}', i / 7.0, (1 << 60) + i, i % 2,
  printf('2026-11-%02dT10:00:00Z', i % 28 + 1), CASE WHEN i % 5 = 0 THEN NULL ELSE 'note ' || i END,
  CAST(char(i % 256 + 1, 0, 255) AS BLOB)
FROM n;
SQL

export CLOUDFLARE_API_TOKEN="bench-$(date +%s)"
DOUBLE_PID=""
start_double() { # start_double SCALE
  [ -n "$DOUBLE_PID" ] && kill "$DOUBLE_PID" 2> /dev/null && wait "$DOUBLE_PID" 2> /dev/null || true
  rm -f "$WORK/port"
  "$BIN/ferry-d1-double" --dir "$WORK/d1" --port-file "$WORK/port" --scale "$1" -q &
  DOUBLE_PID=$!
  for _ in $(seq 100); do [ -s "$WORK/port" ] && break; sleep 0.05; done
  export CLOUDFLARE_API_BASE_URL="http://127.0.0.1:$(cat "$WORK/port")/client/v4"
  export FERRY_D1_RATE="1200/$(python3 -c "print(300 / $1)")"
}
trap '[ -n "$DOUBLE_PID" ] && kill "$DOUBLE_PID" 2> /dev/null || true' EXIT
dstat() { curl -s "${CLOUDFLARE_API_BASE_URL%/client/v4}/__double/stats" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
now() { date +%s.%N; }

# One import: import LABEL SCALE DB [env...]; appends a report row.
ROWS_MD=""
import_run() {
  local label=$1 scale=$2 db=$3; shift 3
  start_double "$scale"
  local r0 l0 t0 t1 r1 l1 q1
  r0=$(dstat requests); l0=$(dstat lockouts)
  t0=$(now)
  env "$@" "$BIN/ferry-export" "sqlite:$SRC" --state "$WORK/state-$db.db" -q \
    | env "$@" "$BIN/ferry-import" "d1://bench/$db" --create --state "$WORK/state-$db.db" -q > /dev/null
  t1=$(now)
  r1=$(dstat requests); l1=$(dstat lockouts); q1=$(dstat rate_limited)
  ROWS_MD+=$(python3 - "$label" "$scale" "$t0" "$t1" "$((r1 - r0))" "$((l1 - l0))" "$q1" "$ROWS" <<'PY'
import sys
label, scale, t0, t1, req, lock, limited, rows = sys.argv[1:]
scale, secs, req, rows = float(scale), float(t1) - float(t0), int(req), int(rows)
allowed = 1200 / 300 * scale            # requests per second the budget allows
used = req / (secs * allowed)           # share of the budget the run used
per = rows / req
print(f"| {label} | {scale:g}x | {secs:.2f} | {req} | {per:,.0f} | {rows / secs:,.0f} | "
      f"{per * allowed:,.0f} | {used:.1%} | {limited} | {lock} |")
PY
)$'\n'
}

say "import, real clock..."
import_run "real clock, 1 MiB requests" 1 real
say "import, over a window..."
import_run "8 KiB requests, > 1 window" 20 window FERRY_D1_REQUEST_BYTES=8192

say "export and validate, real clock..."
start_double 1
r0=$(dstat requests); t0=$(now)
"$BIN/ferry-export" d1://bench/real --state "$WORK/state-out.db" -q > "$WORK/out.ndjson"
t1=$(now); r1=$(dstat requests)
EXPORT=$(python3 -c "print(f'{$t1 - $t0:.2f} s, {$r1 - $r0} requests, {$ROWS / ($t1 - $t0):,.0f} rows/s')")
r0=$(dstat requests); t0=$(now)
"$BIN/ferry-validate" "sqlite:$SRC" d1://bench/real -q > /dev/null
t1=$(now); r1=$(dstat requests)
VALIDATE=$(python3 -c "print(f'{$t1 - $t0:.2f} s, {$r1 - $r0} requests')")
LOCKOUTS=$(dstat lockouts)

commit=$(git rev-parse --short HEAD 2> /dev/null || echo unknown)
cat <<EOF
### D1: $ROWS rows x 10 columns into ferry-d1-double ($(date -u +%Y-%m-%d), commit $commit)

Machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr). Reproduce: \`ROWS=$ROWS bash benches/d1.sh\`.
The double enforces D1's limits (100 parameters, 100,000-byte statements, 30 s per request) and
the rate limit (1,200 requests per 300 s, then a 5-minute lockout), its clock sped up by the
scale shown; "budget used" is requests sent / (seconds x requests per second the budget allows).

| run | clock | seconds | requests | rows/request | rows/s | rows/s the budget allows at this size | budget used | 429s | lockouts |
|---|---|---|---|---|---|---|---|---|---|
${ROWS_MD}
Export back out of D1 (real clock, keyset pages of about 2 MiB): $EXPORT.
Validation of the source against D1 (read once through the API): $VALIDATE.
Lockouts over the whole run: $LOCKOUTS.

For scale, from the same budget (arithmetic, not measured): an importer sending 100 bound
values per request (10 rows of 10 columns) needs $((ROWS / 10)) requests, $(python3 -c "print(f'{$ROWS / 10 / 4 / 60:.0f}')") minutes at 4
requests/s; one row per request needs $ROWS requests, $(python3 -c "print(f'{$ROWS / 4 / 3600:.1f}')") hours.
EOF
