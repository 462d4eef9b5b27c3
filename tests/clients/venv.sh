#!/usr/bin/env bash
# The Python of a virtualenv holding tests/clients/requirements-NAME.txt (pinned), made on first use
# and kept (keyed by the file's hash) under $FERRY_CLIENTS_CACHE, by default
# ~/.cache/ferry/clients, so later runs start at once. Prints its path; the real-client tests
# (tests/clients.rs) run the applications' own programs with it.
#   tests/clients/venv.sh clients   # Django, django-storages, boto3, psycopg, target-jsonl
#   tests/clients/venv.sh meltano   # MeltanoLabs target-postgres and tap-postgres
set -euo pipefail
name=${1:?usage: venv.sh NAME}
here=$(cd "$(dirname "$0")" && pwd)
req="$here/requirements-$name.txt"
[ -f "$req" ] || { echo "venv.sh: there is no $req" >&2; exit 2; }
cache=${FERRY_CLIENTS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry/clients}
dir="$cache/$name-$(sha256sum "$req" | cut -c1-16)"
mkdir -p "$cache"
# One maker at a time (tests ask for it in parallel); a half-made one (no .complete) is remade.
exec 9>"$cache/.lock-$name"
flock 9
if [ ! -f "$dir/.complete" ]; then
  rm -rf "$dir"
  echo "venv.sh: making $dir from $req" >&2
  python3 -m venv "$dir" >&2
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$req" >&2
  touch "$dir/.complete"
fi
echo "$dir/bin/python"
