//! SQLite as a validation side ([`Comparable`]): a database file, read only, or the temporary
//! file a stream (or a D1 database) is read into. Rows come back in SQLite's BINARY order.

use rusqlite::Connection;

use super::{catalog, from_sql};
use crate::connect::compare::{
    Comparable, Counter, Described, MergeRow, RowSink, Scan, TableMeta, duplicates_sql, view_name,
};
use crate::connect::sql::{literal, quote};
use crate::error::{Context, Error, ErrorKind, Result};
use crate::shard::Range;
use crate::value::Value;

/// An SQLite database a validation reads.
pub(crate) struct SqliteTables {
    conn: Connection,
    address: String,
}

impl SqliteTables {
    /// The database at `conn`, shown as `address`.
    pub(crate) fn new(conn: Connection, address: String) -> SqliteTables {
        SqliteTables { conn, address }
    }

    /// The database file at `path`, read only.
    pub(crate) fn open(path: &std::path::Path, role: ErrorKind) -> Result<SqliteTables> {
        let (conn, address) = super::open_read_only(path, role)?;
        Ok(SqliteTables { conn, address })
    }
}

impl Comparable for SqliteTables {
    fn range_condition(&self, _described: &Described, range: &Range) -> Option<String> {
        range.condition(&|c| quote(c), &super::source::bound_literal)
    }

    fn restricted(&self, expr: &str, cond: &str) -> Result<String> {
        let view = view_name();
        let sql = format!("CREATE TEMP VIEW {view} AS SELECT * FROM {expr} WHERE {cond}");
        self.conn
            .execute_batch(&sql)
            .ctx(ErrorKind::Source, || format!("{}: validating: {sql}", self.address))?;
        Ok(format!("temp.{view}"))
    }

    fn address(&self) -> &str {
        &self.address
    }

    fn tables(&self) -> Result<Vec<String>> {
        catalog::list_tables(&self.conn, &self.address)
    }

    fn table_expr(&self, table: &str) -> String {
        format!("main.{}", quote(table))
    }

    fn describe(&self, table: &str) -> Result<Option<Described>> {
        let (conn, address) = (&self.conn, self.address.as_str());
        if !catalog::list_tables(conn, address)?.iter().any(|t| t == table) {
            return Ok(None);
        }
        let info = catalog::describe(conn, table, address)?;
        let columns = info
            .stored_columns()
            .map(|c| (c.name.clone(), c.decl_type.clone()))
            .collect();
        Ok(Some(Described {
            columns,
            dynamic: vec![],
            meta: Some(TableMeta::from_table(&info)),
        }))
    }

    /// The rowid of a table keyed by it (`INTEGER PRIMARY KEY`): the next row gets the largest
    /// rowid + 1, or with AUTOINCREMENT one past the larger of that and its counter (which
    /// `sqlite_sequence` holds and can be moved).
    fn counters(&self, table: &str) -> Result<Vec<Counter>> {
        let (conn, address) = (&self.conn, self.address.as_str());
        if !catalog::list_tables(conn, address)?.iter().any(|t| t == table) {
            return Ok(vec![]);
        }
        let info = catalog::describe(conn, table, address)?;
        let ([column], true) = (info.pk.as_slice(), info.pk_is_rowid()) else {
            return Ok(vec![]);
        };
        let sql = format!("SELECT max({}) FROM {}", quote(column), self.table_expr(table));
        let max: Option<i64> = conn
            .query_row(&sql, [], |r| r.get(0))
            .ctx(ErrorKind::Source, || format!("validating: {sql}"))?;
        let autoincrement = info
            .sql
            .as_deref()
            .is_some_and(|s| s.to_ascii_uppercase().contains("AUTOINCREMENT"));
        let name = literal(Some(table));
        Ok(vec![Counter {
            column: column.clone(),
            last: if autoincrement { max.max(info.sequence) } else { max },
            max,
            fix: autoincrement.then(|| {
                format!("DELETE FROM sqlite_sequence WHERE name = {name}; INSERT INTO sqlite_sequence (name, seq) VALUES ({name}, {{n}})")
            }),
        }])
    }

    fn count_where(&self, table: &str, cond: &str) -> Result<u64> {
        let sql = format!("SELECT count(*) FROM {table} WHERE {cond}");
        self.conn
            .query_row(&sql, [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .ctx(ErrorKind::Source, || format!("validating: {sql}"))
    }

    fn duplicates(&self, table: &str, cols: &[String], limit: usize) -> Result<Vec<(Vec<Value>, u64)>> {
        let sql = duplicates_sql(table, cols, limit, quote);
        let mut st = self
            .conn
            .prepare(&sql)
            .ctx(ErrorKind::Source, || format!("validating: {sql}"))?;
        st.query_map([], |r| {
            let vals = (0..cols.len())
                .map(|i| r.get_ref(i).map(|v| from_sql(v).to_owned()))
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((vals, r.get::<_, i64>(cols.len())? as u64))
        })
        .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
        .ctx(ErrorKind::Source, || format!("validating: {sql}"))
    }

    /// In SQLite's BINARY order, read through rusqlite.
    fn scan_rows(&self, s: &Scan<'_>, f: RowSink<'_>) -> Result<()> {
        let conn = &self.conn;
        let Scan {
            table,
            key,
            key_canon,
            cols,
            canons,
            hasher,
            spilled,
            ..
        } = *s;
        let keys = key.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ");
        let nk = key.len();
        let canonical_key = |raw: Vec<Value>| -> Vec<Value> {
            raw.into_iter()
                .zip(key_canon)
                .map(|(v, c)| c.key_order(c.of_value(v)))
                .collect()
        };
        let order = key
            .iter()
            .map(|k| format!("{} COLLATE BINARY", quote(k)))
            .collect::<Vec<_>>()
            .join(", ");
        let what = if spilled {
            "_ferry_h, _ferry_line".to_owned()
        } else {
            cols.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ")
        };
        // No key: the rows in any order (the caller sorts them by their hash).
        let sql = if nk == 0 {
            format!("SELECT {what} FROM {table}")
        } else {
            format!("SELECT {keys}, {what} FROM {table} ORDER BY {order}")
        };
        let mut st = conn
            .prepare(&sql)
            .ctx(ErrorKind::Source, || format!("validating: {sql}"))?;
        let mut rows = st.query([]).ctx(ErrorKind::Source, || format!("validating: {sql}"))?;
        let mut it = std::iter::from_fn(|| {
            let r = match rows.next() {
                Ok(Some(r)) => r,
                Ok(None) => return None,
                Err(e) => {
                    return Some(Err(
                        Error::new(ErrorKind::Source, "validating: reading rows").with_source(e)
                    ));
                }
            };
            let read = || -> rusqlite::Result<MergeRow> {
                let k = (0..nk)
                    .map(|i| r.get_ref(i).map(|v| from_sql(v).to_owned()))
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let k = canonical_key(k);
                if spilled {
                    let h: Vec<u8> = r.get(nk)?;
                    let mut hash = [0u8; 32];
                    if h.len() == 32 {
                        hash.copy_from_slice(&h);
                    }
                    Ok((k, hash, r.get(nk + 1)?, None))
                } else {
                    let vals = (0..cols.len())
                        .map(|i| r.get_ref(nk + i).map(|v| canons[i].of_value(from_sql(v).to_owned())))
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    let h = hasher(&vals);
                    Ok((k, h, None, Some(vals)))
                }
            };
            Some(read().map_err(|e| Error::new(ErrorKind::Source, "validating: reading rows").with_source(e)))
        })
        .fuse();
        f(&mut it)
    }
}
