"""Run SQL statements in one in-memory DuckDB with the extensions in a directory loaded.

    python duckdb_sql.py EXTENSION_DIR "ATTACH ..." "CREATE TABLE ..." ...
"""

import glob
import sys

import duckdb

con = duckdb.connect()
for extension in sorted(glob.glob(sys.argv[1] + "/*.duckdb_extension")):
    con.execute(f"LOAD '{extension}'")
for statement in sys.argv[2:]:
    con.execute(statement)
