//! The databases a validation reads, behind one interface: SQLite (including the temporary file a
//! stream is spilled into) and PostgreSQL. The SQL the checks run is the same on both; what
//! differs is how it is executed and how rows come back (SQLite values, PostgreSQL text output
//! read through the column's canonical form).

use rusqlite::Connection;

use super::Meta;
use crate::address::Address;
use crate::canon::Canon;
use crate::connect::postgres::conn::{PgAddress, pg_error};
use crate::connect::postgres::read::PgConn;
use crate::connect::sql::quote;
use crate::connect::sqlite::{self as sq, from_sql};
use crate::connect::table_name_for;
use crate::error::{Context, Error, ErrorKind, Result};
use crate::row::RowHash;
use crate::value::Value;

/// One row as the merge sees it: its canonical key, its hash, its input line (a stream's), and
/// its canonical values when the side has them (to name the columns of a changed row).
pub(super) type MergeRow = (Vec<Value>, RowHash, Option<i64>, Option<Vec<Value>>);

pub(super) enum Db {
    Sqlite {
        conn: Connection,
        address: String,
    },
    Pg {
        client: Box<PgConn>,
        address: String,
        schema: String,
        /// `--schema` named it: every stream is looked for there.
        explicit: bool,
    },
}

/// A table as one side has it.
pub(super) struct Described {
    /// Column names and types (declared for SQLite, `format_type()` for PostgreSQL), in order.
    pub columns: Vec<(String, String)>,
    /// Columns marked as holding an SQLite dynamic column (PostgreSQL jsonb).
    pub dynamic: Vec<String>,
    /// Keys and constraints (SQLite; PostgreSQL reading comes with PostgreSQL export).
    pub meta: Option<Meta>,
}

impl Described {
    /// The canonical form of each named column when this side is the one that decides it.
    pub(super) fn canon_of(&self, column: &str) -> Canon {
        match self.columns.iter().find(|(n, _)| n == column) {
            Some((n, t)) if self.meta.is_none() => Canon::for_pg_type(t, self.dynamic.contains(n)),
            _ => Canon::Exact,
        }
    }

    /// The expression that reads a column of this (PostgreSQL) table in its canonical form.
    pub(super) fn select(&self, column: &str) -> String {
        match self.columns.iter().find(|(n, _)| n == column) {
            Some((n, t)) => Canon::for_pg_type(t, self.dynamic.contains(n)).pg_select(&quote(n)),
            None => quote(column),
        }
    }

    pub(super) fn names(&self) -> Vec<String> {
        self.columns.iter().map(|(n, _)| n.clone()).collect()
    }
}

/// A private on-disk database that SQLite deletes on close (an empty path), set up for bulk
/// writes nobody needs to survive a crash.
pub(super) fn temporary_db() -> Result<Connection> {
    let conn = Connection::open("").ctx(ErrorKind::Io, || "opening a temporary database")?;
    conn.execute_batch("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-16384;")
        .ctx(ErrorKind::Io, || "configuring a temporary database")?;
    Ok(conn)
}

impl Db {
    pub(super) fn open(address: &Address, role: ErrorKind, schema: Option<&str>) -> Result<Db> {
        match address {
            Address::Sqlite(p) => {
                let (conn, address) = sq::open_read_only(p, role)?;
                Ok(Db::Sqlite { conn, address })
            }
            Address::Postgres(url) => {
                let a = PgAddress::parse(url, "ferry-validate")?;
                let client = PgConn::open(&a)?;
                Ok(Db::Pg {
                    client: Box::new(client),
                    address: a.redacted,
                    schema: schema.unwrap_or("public").to_owned(),
                    explicit: schema.is_some(),
                })
            }
            Address::D1(url) => {
                // Read once into a private temporary SQLite file (deleted on close), then checked
                // as any SQLite database: D1 is SQLite behind an HTTP API.
                let mut d1 = crate::connect::d1::source::D1Source::open(url)?;
                let conn = temporary_db()?;
                d1.copy_into(&conn)?;
                Ok(Db::Sqlite {
                    conn,
                    address: d1.address().to_owned(),
                })
            }
            other => Err(other.unsupported("a validation side")),
        }
    }

    pub(super) fn address(&self) -> &str {
        match self {
            Db::Sqlite { address, .. } | Db::Pg { address, .. } => address,
        }
    }

    fn pg_err(&self, what: &str, e: tokio_postgres::Error) -> Error {
        pg_error(self.address(), what, e)
    }

    /// Tables, without SQLite's and ferry's own.
    pub(super) fn tables(&self) -> Result<Vec<String>> {
        match self {
            Db::Sqlite { conn, address } => sq::catalog::list_tables(conn, address),
            Db::Pg { client, schema, .. } => crate::connect::postgres::catalog::list_tables(client, schema)
                .map(|s| s.into_iter().collect())
                .map_err(|e| self.pg_err("listing tables", e)),
        }
    }

    /// The table a stream is in: its table name, or for PostgreSQL, `schema.table` when the stream
    /// came from a PostgreSQL schema (and `--schema` did not say where to look).
    pub(super) fn table_for(&self, stream: &str) -> String {
        match (self, stream.split_once('.')) {
            (Db::Pg { explicit: false, .. }, Some((s, _))) if s != "main" => stream.to_owned(),
            _ => table_name_for(stream).to_owned(),
        }
    }

    /// A table's expression in SQL (`main."t"`, `"public"."t"`).
    pub(super) fn table_expr(&self, table: &str) -> String {
        match self {
            Db::Sqlite { .. } => format!("main.{}", quote(table)),
            Db::Pg { schema, .. } => match table.split_once('.') {
                Some((s, t)) => format!("{}.{}", quote(s), quote(t)),
                None => format!("{}.{}", quote(schema), quote(table)),
            },
        }
    }

    pub(super) fn describe(&self, table: &str) -> Result<Option<Described>> {
        match self {
            Db::Sqlite { conn, address } => {
                if !sq::catalog::list_tables(conn, address)?.iter().any(|t| t == table) {
                    return Ok(None);
                }
                let info = sq::catalog::describe(conn, table, address)?;
                let columns = info
                    .stored_columns()
                    .map(|c| (c.name.clone(), c.decl_type.clone()))
                    .collect();
                Ok(Some(Described {
                    columns,
                    dynamic: vec![],
                    meta: Some(Meta::from_table(&info)),
                }))
            }
            Db::Pg { client, .. } => {
                let qualified = self.table_expr(table);
                let Some(columns) = crate::connect::postgres::catalog::table_columns(client, &qualified)
                    .map_err(|e| self.pg_err(&format!("describing {qualified}"), e))?
                else {
                    return Ok(None);
                };
                let rows = client
                    .query(
                        "SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0
                         AND col_description(a.attrelid, a.attnum) LIKE 'ferry: x-sqlite-dynamic%'",
                        &[&qualified],
                    )
                    .map_err(|e| self.pg_err(&format!("describing {qualified}"), e))?;
                let dynamic = rows.iter().map(|r| r.get(0)).collect();
                Ok(Some(Described {
                    columns,
                    dynamic,
                    meta: None,
                }))
            }
        }
    }

    pub(super) fn count_where(&self, table: &str, cond: &str) -> Result<u64> {
        let sql = format!("SELECT count(*) FROM {table} WHERE {cond}");
        match self {
            Db::Sqlite { conn, .. } => conn
                .query_row(&sql, [], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
                .ctx(ErrorKind::Source, || format!("validating: {sql}")),
            Db::Pg { client, .. } => client
                .query_one(sql.as_str(), &[])
                .map(|r| r.get::<_, i64>(0) as u64)
                .map_err(|e| self.pg_err(&format!("validating: {sql}"), e)),
        }
    }

    pub(super) fn count(&self, table: &str) -> Result<u64> {
        self.count_where(table, "true")
    }

    /// Groups of rows sharing the same non-null values in `cols`, with their sizes (at most
    /// `limit` groups).
    pub(super) fn duplicates(&self, table: &str, cols: &[String], limit: usize) -> Result<Vec<(Vec<Value>, u64)>> {
        let list = cols.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ");
        let notnull = cols
            .iter()
            .map(|c| format!("{} IS NOT NULL", quote(c)))
            .collect::<Vec<_>>()
            .join(" AND ");
        match self {
            Db::Sqlite { conn, .. } => {
                let sql = format!(
                    "SELECT {list}, count(*) FROM {table} WHERE {notnull} GROUP BY {list} HAVING count(*) > 1 LIMIT {limit}"
                );
                let mut st = conn
                    .prepare(&sql)
                    .ctx(ErrorKind::Source, || format!("validating: {sql}"))?;
                let rows = st
                    .query_map([], |r| {
                        let vals = (0..cols.len())
                            .map(|i| r.get_ref(i).map(|v| from_sql(v).to_owned()))
                            .collect::<rusqlite::Result<Vec<_>>>()?;
                        Ok((vals, r.get::<_, i64>(cols.len())? as u64))
                    })
                    .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
                    .ctx(ErrorKind::Source, || format!("validating: {sql}"))?;
                Ok(rows)
            }
            Db::Pg { client, .. } => {
                let texts = cols
                    .iter()
                    .map(|c| format!("{}::text", quote(c)))
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!(
                    "SELECT {texts}, count(*) FROM {table} WHERE {notnull} GROUP BY {list} HAVING count(*) > 1 LIMIT {limit}"
                );
                let rows = client
                    .query(sql.as_str(), &[])
                    .map_err(|e| self.pg_err(&format!("validating: {sql}"), e))?;
                Ok(rows
                    .iter()
                    .map(|r| {
                        let vals = (0..cols.len())
                            .map(|i| r.get::<_, Option<String>>(i).map_or(Value::Null, |s| Value::text(&s)))
                            .collect();
                        (vals, r.get::<_, i64>(cols.len()) as u64)
                    })
                    .collect())
            }
        }
    }

    /// Rows of `child` whose non-null reference finds no row in `parent`.
    pub(super) fn orphans(&self, child: &str, cols: &[String], parent: &str, pcols: &[String]) -> Result<u64> {
        let notnull = cols
            .iter()
            .map(|c| format!("c.{} IS NOT NULL", quote(c)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let join = cols
            .iter()
            .zip(pcols)
            .map(|(c, p)| format!("p.{} = c.{}", quote(p), quote(c)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let cond = format!("{notnull} AND NOT EXISTS (SELECT 1 FROM {parent} AS p WHERE {join})");
        self.count_where(&format!("{child} AS c"), &cond)
    }

    /// Read a table (or a spill) as `s` says, handing `f` an iterator of rows with canonical
    /// keys and row hashes.
    pub(super) fn scan<R>(
        &self,
        s: &Scan<'_>,
        f: impl FnOnce(&mut dyn Iterator<Item = Result<MergeRow>>) -> Result<R>,
    ) -> Result<R> {
        match self {
            Db::Sqlite { conn, .. } => scan_sqlite(conn, s, f),
            Db::Pg { client, .. } => scan_pg(client, self.address(), s, f),
        }
    }
}

/// What a scan reads: `cols` of `table` (or the spill's `_ferry_h`/`_ferry_line` when
/// `spilled`) ordered by `key`, each key made canonical by `key_canon`, each row hashed by
/// `hasher` over the values made canonical by `canons`.
#[derive(Clone, Copy)]
pub(super) struct Scan<'a> {
    pub table: &'a str,
    pub key: &'a [String],
    pub key_canon: &'a [Canon],
    pub cols: &'a [String],
    pub canons: &'a [Canon],
    pub hasher: &'a dyn Fn(&[Value]) -> RowHash,
    pub spilled: bool,
    /// How the PostgreSQL side describes its columns (how to select each).
    pub described: Option<&'a Described>,
}

/// A scan of an SQLite table: in SQLite's BINARY order, read through rusqlite.
fn scan_sqlite<R>(
    conn: &Connection,
    s: &Scan<'_>,
    f: impl FnOnce(&mut dyn Iterator<Item = Result<MergeRow>>) -> Result<R>,
) -> Result<R> {
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

/// A scan of a PostgreSQL table: in SQLite's order (`COLLATE "C"`, NULL first), read through
/// `COPY TO` in text form, each column as its own type needs.
fn scan_pg<R>(
    client: &PgConn,
    address: &str,
    s: &Scan<'_>,
    f: impl FnOnce(&mut dyn Iterator<Item = Result<MergeRow>>) -> Result<R>,
) -> Result<R> {
    let Scan {
        table,
        key,
        key_canon,
        cols,
        canons,
        hasher,
        described,
        ..
    } = *s;
    let nk = key.len();
    let order = key
        .iter()
        .zip(key_canon)
        .map(|(k, c)| {
            // SQLite's order: bytes for text, NULL first.
            if matches!(c, Canon::Text | Canon::Exact) {
                format!("{} COLLATE \"C\" NULLS FIRST", quote(k))
            } else {
                format!("{} NULLS FIRST", quote(k))
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    // Each column read the way its own type needs (an array as JSON, money as numeric),
    // whatever the other side's type.
    let select = |c: &String, canon: &Canon| match described {
        Some(d) => d.select(c),
        None => canon.pg_select(&quote(c)),
    };
    let list = cols
        .iter()
        .zip(canons)
        .map(|(c, canon)| select(c, canon))
        .collect::<Vec<_>>()
        .join(", ");
    let pkeys = key
        .iter()
        .zip(key_canon)
        .map(|(k, c)| select(k, c))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = if nk == 0 {
        format!("COPY (SELECT {list} FROM {table}) TO STDOUT")
    } else {
        format!("COPY (SELECT {pkeys}, {list} FROM {table} ORDER BY {order}) TO STDOUT")
    };
    let mut lines = client
        .copy_out(sql.as_str())
        .map_err(|e| pg_error(address, &format!("validating: {sql}"), e))?;
    let address = address.to_owned();
    // One row's unescaped fields and their places, reused for every row.
    let (mut buf, mut fields) = (Vec::new(), Vec::new());
    let mut it = std::iter::from_fn(|| {
        match lines.next_row(&mut buf, &mut fields) {
            Ok(false) => return None,
            Ok(true) => {}
            Err(e) => {
                return Some(Err(Error::new(
                    ErrorKind::Target,
                    format!("{address}: validating: reading rows"),
                )
                .with_source(e)));
            }
        }
        if fields.len() != nk + cols.len() {
            return Some(Err(Error::new(
                ErrorKind::Target,
                format!("{address}: validating: a row with {} fields", fields.len()),
            )));
        }
        let field = |i: usize| fields[i].clone().map(|r| &buf[r]);
        let k = (0..nk)
            .map(|i| key_canon[i].key_order(key_canon[i].of_pg_text(field(i))))
            .collect();
        let vals: Vec<Value> = (0..cols.len()).map(|i| canons[i].of_pg_text(field(nk + i))).collect();
        let h = hasher(&vals);
        Some(Ok((k, h, None, Some(vals))))
    })
    // Once COPY has ended, the connection has moved on: never read past the end.
    .fuse();
    f(&mut it)
}
