#!/usr/bin/env bash
# One shard of a sharded migration, for whichever scheduler runs it (the README's "Beyond one
# machine"): GNU parallel, a Kubernetes Indexed Job, a Slurm array.
#
#   deploy/shard.sh load K       export part K of N, import it (resumes where a killed try stopped);
#                                what the import reports goes to $FERRY_STATE_DIR/load-K.ndjson
#   deploy/shard.sh validate K   prove part K equal, report in $FERRY_STATE_DIR/validate-K.json
#
# K is from 1; without it, the scheduler's index: JOB_COMPLETION_INDEX (Kubernetes, from 0) or
# SLURM_ARRAY_TASK_ID (Slurm, give --array=1-N). Validate once every shard has loaded (a row may
# reference one in another shard's part), then `ferry-validate --merge $FERRY_STATE_DIR/validate-*.json`.
#
# Environment: FERRY_SOURCE, FERRY_TARGET (addresses; passwords through PGPASSWORD or the
# like, never on a command line), FERRY_SHARDS (N), FERRY_STATE_DIR (default .: one state file
# per shard, shard-K.db, kept between tries so a retry resumes), FERRY_IMPORT_ARGS (default --create).
set -euo pipefail
what=${1:?usage: shard.sh load|validate [K]}
: "${FERRY_SOURCE:?set FERRY_SOURCE}" "${FERRY_TARGET:?set FERRY_TARGET}" "${FERRY_SHARDS:?set FERRY_SHARDS (N)}"
k=${2:-}
if [ -z "$k" ] && [ -n "${JOB_COMPLETION_INDEX:-}" ]; then k=$((JOB_COMPLETION_INDEX + 1)); fi
if [ -z "$k" ] && [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then k=$SLURM_ARRAY_TASK_ID; fi
if [ -z "$k" ]; then
  echo "shard.sh: give K, or run it where JOB_COMPLETION_INDEX or SLURM_ARRAY_TASK_ID is set" >&2
  exit 2
fi
n=$FERRY_SHARDS
dir=${FERRY_STATE_DIR:-.}
mkdir -p "$dir"
# A state directory holds one split: shard-K.db of N shards is another part than of M.
if [ -f "$dir/shards" ] && [ "$(cat "$dir/shards")" != "$n" ]; then
  echo "shard.sh: $dir holds the state of $(cat "$dir/shards") shards, not $n: use another FERRY_STATE_DIR (or the same FERRY_SHARDS)" >&2
  exit 2
fi
if [ ! -f "$dir/shards" ]; then
  # Written whole, then moved in: shards starting at once never read it half-written.
  echo "$n" > "$dir/shards.$$" && mv "$dir/shards.$$" "$dir/shards"
fi
state="$dir/shard-$k.db"
case $what in
  load)
    # A retry goes on after what its last try committed.
    resume=()
    if [ -f "$state" ]; then resume=(--resume); fi
    # shellcheck disable=SC2086 # FERRY_IMPORT_ARGS is a list of flags
    ferry-export "$FERRY_SOURCE" --shard "$k/$n" --state "$state" "${resume[@]}" \
      | ferry-import "$FERRY_TARGET" --state "$state" ${FERRY_IMPORT_ARGS---create} > "$dir/load-$k.ndjson"
    ;;
  validate)
    ferry-validate "$FERRY_SOURCE" "$FERRY_TARGET" --shard "$k/$n" \
      --report "$dir/validate-$k.json" > "$dir/findings-$k.ndjson"
    ;;
  *)
    echo "shard.sh: load or validate, not $what" >&2
    exit 2
    ;;
esac
