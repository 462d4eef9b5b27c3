#!/usr/bin/env bash
# The JSON parsers on ferry's own lines (issue 25): serde_json (what ferry uses) against sonic-rs
# and simd-json, each decoding every RECORD of the bench's 1M-row stream the way ferry-import
# does (a serde seed into typed cells). One thread, so the seconds are CPU-seconds.
#
#   bash benches/codec.sh              # 1,010,000 records, best of 5
#   ROWS=100000 ROUNDS=3 bash benches/codec.sh
#
# The harness (benches/codec/) is its own small crate, outside ferry's build and lock file.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${ROWS:-1000000}"
ROUNDS="${ROUNDS:-5}"
. benches/lib/setup.sh
bench_setup "" gen-db
db="$WORK/src-$ROWS.db"
stream="$WORK/stream-$ROWS.ndjson"
[ -f "$db" ] || { say "generating $ROWS rows..."; "$BIN/examples/gen-db" "$db" "$ROWS"; }
[ -f "$stream" ] || "$BIN/ferry-export" "sqlite:$db" -q > "$stream"
say "building the harness (release)..."
CARGO_TARGET_DIR="$PWD/target/codec" cargo build --release --manifest-path benches/codec/Cargo.toml >&2
commit=$(git rev-parse --short HEAD)
echo "## JSON parsers on ferry's RECORD lines, $(date -u +%Y-%m-%dT%H:%MZ), commit $commit"
echo
echo "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), generic x86-64 build (as ferry ships). $ROWS items rows + 10,000 parents from benches/pg.sh's generator."
echo
"$PWD/target/codec/release/ferry-codec-bench" "$stream" "$ROUNDS"
