# Sourced by the bench scripts (after `cd` to the repository): where a bench works, how it talks,
# and the release binaries it runs.
#
#   bench_setup SUBDIR [fresh] [EXAMPLE...]
#     WORK=target/bench/SUBDIR (made; emptied first with `fresh`), say (a line to stderr),
#     the release binaries built (with the named examples) and BIN, the directory they are in.
say() { printf '%s\n' "$*" >&2; }
bench_setup() {
  WORK="$PWD/target/bench${1:+/$1}"
  shift
  if [ "${1:-}" = fresh ]; then
    rm -rf "$WORK"
    shift
  fi
  mkdir -p "$WORK"
  local examples=()
  for e in "$@"; do examples+=(--example "$e"); done
  say "building (release)..."
  cargo build --release --locked --bins "${examples[@]}" >&2
  BIN="$PWD/target/release"
}
