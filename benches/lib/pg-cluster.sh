# Sourced by the bench scripts: a private throwaway PostgreSQL cluster (as the postgres user when
# root), unless FERRY_BENCH_PG names a server.
#
#   pg_cluster DIR     sets BASE=postgres://USER:PW@127.0.0.1:PORT (no database); pg_stop stops it.
#   PG_OPTS="-c wal_level=logical" pg_cluster DIR    with more server settings
pg_stop() { :; }
pg_cluster() {
  local work=$1
  if [ -n "${FERRY_BENCH_PG:-}" ]; then
    BASE="$FERRY_BENCH_PG"
    return
  fi
  PGBIN=$(dirname "$(command -v initdb 2> /dev/null || ls /usr/lib/postgresql/*/bin/initdb | tail -1)")
  PGDATA_DIR="$work/pg"
  local port pw
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  pw="bench-$(date +%s)"
  as_pg() { if [ "$(id -u)" = 0 ]; then setpriv --reuid=postgres --regid=postgres --init-groups "$@"; else "$@"; fi; }
  rm -rf "$PGDATA_DIR" && mkdir -p "$PGDATA_DIR" && echo "$pw" > "$work/pgpw"
  [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$PGDATA_DIR" "$work/pgpw"
  as_pg "$PGBIN/initdb" -D "$PGDATA_DIR/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    --pwfile="$work/pgpw" --encoding=UTF8 --no-locale > /dev/null
  as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR/data" -l "$PGDATA_DIR/log" -w \
    -o "-p $port -k $PGDATA_DIR -c listen_addresses=127.0.0.1 ${PG_OPTS:-}" start > /dev/null
  pg_stop() { as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR/data" -m fast stop > /dev/null 2>&1 || true; }
  BASE="postgres://postgres:$pw@127.0.0.1:$port"
}
