#!/usr/bin/env bash
# Fuzz the stream reader and value decoder (fuzz/fuzz_targets/stream.rs) for a set time.
#
#   bash benches/fuzz.sh              # 10 minutes
#   SECS=3600 bash benches/fuzz.sh    # an hour
#
# Needs nightly Rust and cargo-fuzz (installed here if missing). New inputs go to
# target/fuzz-corpus (the committed seeds in fuzz/corpus/stream are read, not written). A crash
# leaves its input in fuzz/artifacts/stream/: fix the bug, then copy the input into
# fuzz/corpus/stream/ so `cargo test --test suite fuzz_corpus::` keeps it fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${SECS:-600}"
command -v cargo-fuzz > /dev/null || cargo install cargo-fuzz --locked >&2
mkdir -p target/fuzz-corpus
cd fuzz
cargo +nightly fuzz run stream ../target/fuzz-corpus corpus/stream -- \
  -max_total_time="$SECS" -max_len=65536 -timeout=10 -print_final_stats=1 2>&1 | tee ../target/fuzz.log | tail -25 >&2
cd ..
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' target/fuzz.log | tail -1)
secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' target/fuzz.log | tail -1)
commit=$(git rev-parse --short HEAD 2> /dev/null || echo unknown)
echo "Fuzzed \`stream\` for ${secs:-?} s at commit $commit on $(nproc) cores: ${execs:-?} inputs, corpus $(ls target/fuzz-corpus | wc -l) entries, crashes: $(ls fuzz/artifacts/stream 2> /dev/null | wc -l)."
