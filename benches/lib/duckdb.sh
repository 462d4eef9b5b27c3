# Sourced by the bench scripts: DuckDB from PyPI, with its sqlite and postgres extensions from
# PyPI too (duckdb-extension-sqlite, duckdb-extension-postgres) loaded from the packages' files,
# so nothing is fetched while a bench runs. The virtualenv is kept in ~/.cache/ferry.
#
#   duckdb_setup     sets DUCKDB (a command: DUCKDB SQL... runs the statements in one in-memory
#                    DuckDB with both extensions loaded) and DUCKDB_VERSION
duckdb_setup() {
  local cache="${XDG_CACHE_HOME:-$HOME/.cache}/ferry"
  local venv="$cache/duckdb-venv" ext="$cache/duckdb-ext"
  if ! "$venv/bin/python" -c "import duckdb" 2> /dev/null; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q duckdb duckdb-extension-sqlite duckdb-extension-postgres >&2
  fi
  # The packages name the files after the extension (sqlite, postgres); DuckDB finds a file's
  # entry point by its name, which for these is sqlite_scanner and postgres_scanner.
  local site
  site=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  mkdir -p "$ext"
  cp "$site"/duckdb_extension_sqlite/extensions/*/sqlite.duckdb_extension "$ext/sqlite_scanner.duckdb_extension"
  cp "$site"/duckdb_extension_postgres/extensions/*/postgres.duckdb_extension "$ext/postgres_scanner.duckdb_extension"
  DUCKDB="$venv/bin/python $PWD/benches/lib/duckdb_sql.py $ext"
  DUCKDB_VERSION=$("$venv/bin/python" -c "import duckdb; print(duckdb.__version__)")
}
