#!/usr/bin/env bash
# ferry serve against the command line (issue 26): a whole store exported and imported through
# the HTTP API beside the same work by ferry-export and ferry-import, and many small per-user
# exports at once.
#
#   bash benches/serve.sh                    # 1,010,000 rows; 100 per-user exports at once
#   ROWS=100000 USERS=20 bash benches/serve.sh
#
# Prints a Markdown report on stdout; copy it into benches/RESULTS.md. Works in target/bench/serve.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${ROWS:-1000000}"
USERS="${USERS:-100}"
. benches/lib/setup.sh
bench_setup serve fresh gen-db
db="$WORK/src.db"
say "generating $ROWS rows..."
"$BIN/examples/gen-db" "$db" "$ROWS"
# As an application's database has it (Django indexes every foreign key): a user's rows found by
# the index, not by reading the whole table.
python3 -c "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('CREATE INDEX items_parent_id ON items (parent_id)'); c.commit()" "$db"
cd "$WORK"
cat > ferry-serve.toml << TOML
max_runs = $((USERS + 2))
max_upload_bytes = 10000000000
[stores]
big = "sqlite:$db"
copy = "sqlite:$WORK/api-copy.db"
TOML
"$BIN/ferry" serve --new-token bench --scope admin >> ferry-serve.toml 2> token.txt
TOKEN=$(grep '^ferry_' token.txt)
"$BIN/ferry" serve --config ferry-serve.toml --listen 127.0.0.1:0 2> serve.log &
SERVER=$!
trap 'kill $SERVER 2> /dev/null || true' EXIT
for _ in $(seq 200); do grep -q 'listening on' serve.log && break; sleep 0.05; done
URL=$(grep -o 'http://127.0.0.1:[0-9]*' serve.log | head -1)

# The command line: the same export into a file, the same file imported.
t0=$(date +%s.%N)
"$BIN/ferry-export" "sqlite:$db" -q > cli.ndjson
t1=$(date +%s.%N)
"$BIN/ferry-import" "sqlite:$WORK/cli-copy.db" --create -q < cli.ndjson > /dev/null
t2=$(date +%s.%N)

# The per-user exports by the command line, USERS of them, two at a time (the cores).
t3=$(date +%s.%N)
seq 1 "$USERS" | xargs -P 2 -I K sh -c "'$BIN/ferry-export' 'sqlite:$db' -q --root parents:id=K --follow-fks > user-K.ndjson"
t4=$(date +%s.%N)
CLI_USERS=$(python3 -c "print(f'{$t4 - $t3:.2f}')")

# The API, timed by a client as an application would see it (python's standard library).
python3 - "$URL" "$TOKEN" "$t0" "$t1" "$t2" "$ROWS" "$USERS" "$CLI_USERS" << 'PY'
import concurrent.futures, json, subprocess, sys, time, urllib.request
url, token, t0, t1, t2, rows, users = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:6]), int(sys.argv[6]), int(sys.argv[7])
cli_users = float(sys.argv[8])
H = {"Authorization": f"Bearer {token}"}

def call(method, path, body=None, ctype="application/json"):
    req = urllib.request.Request(url + path, data=body, method=method, headers=dict(H, **({"Content-Type": ctype} if body is not None else {})))
    with urllib.request.urlopen(req) as r:
        return json.load(r)

def wait(kind, id, every=0.02):
    while True:
        job = call("GET", f"/api/v1/{kind}/{id}")
        if job["status"] != "running":
            assert job["status"] == "complete", job
            return job
        time.sleep(every)

total = rows + 10000
s = time.time()
job = call("POST", "/api/v1/export", json.dumps({"store": "big"}).encode())
job = wait("export", job["id"])
exported = time.time()
subprocess.run(["curl", "-sS", "-H", f"Authorization: Bearer {token}", "-o", "api.ndjson", url + job["download"]], check=True)
downloaded = time.time()
imp = subprocess.run(["curl", "-sS", "-H", f"Authorization: Bearer {token}", "-H", "Content-Type: application/x-ndjson",
                      "--data-binary", "@api.ndjson", url + "/api/v1/import?store=copy&create=true"], check=True, capture_output=True)
imp = wait("import", json.loads(imp.stdout)["id"])
imported = time.time()
assert imp["written"] == total, imp

cli_exp, cli_imp = t1 - t0, t2 - t1
api_exp, api_dl, api_imp = exported - s, downloaded - exported, imported - downloaded
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
print(f"## ferry serve against the command line, {time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())}, commit {commit}")
print()
print("SQLite to SQLite on this machine (2 cores); the server and its client share the cores. The API times are a client's: from the POST to the job's record saying complete (polled every 20 ms), and the transfer by curl.")
print()
print(f"| work | command line s | API s | API rate / CLI rate |")
print(f"|---|---:|---:|---:|")
print(f"| export {total:,} rows (API: POST, poll to complete) | {cli_exp:.2f} | {api_exp:.2f} | {cli_exp / api_exp:.2f} |")
print(f"| export and download (curl) | {cli_exp:.2f} | {api_exp + api_dl:.2f} | {cli_exp / (api_exp + api_dl):.2f} |")
print(f"| import the file (API: upload by curl, poll to complete) | {cli_imp:.2f} | {api_imp:.2f} | {cli_imp / api_imp:.2f} |")

# Many users at once: each export one parent and its items, follow_fks.
def one(k):
    a = time.time()
    job = call("POST", "/api/v1/export", json.dumps({"store": "big", "root": f"parents:id={k}", "follow_fks": True}).encode())
    job = wait("export", job["id"], every=0.01)
    return time.time() - a, job["rows"]
s = time.time()
with concurrent.futures.ThreadPoolExecutor(users) as pool:
    done = list(pool.map(one, range(1, users + 1)))
wall = time.time() - s
lat = sorted(d for d, _ in done)
print()
print(f"{users} per-user exports at once (one parent and its ~{done[0][1] - 1} items each, `follow_fks`, the foreign key indexed): "
      f"all done in {wall:.2f} s ({users / wall:.1f} exports/s); from POST to complete, median {lat[len(lat)//2]:.2f} s, "
      f"p95 {lat[int(len(lat) * 0.95) - 1]:.2f} s, slowest {lat[-1]:.2f} s. The same {users} by `ferry-export --root`, "
      f"two processes at a time: {cli_users} s ({cli_users / wall:.2f}x the API's time).")
PY
