//! Reading a D1 database through its HTTP API: `ferry-export d1://ACCOUNT_ID/DATABASE_ID`, and the
//! D1 side of a validation.
//!
//! Contract:
//! - MUST describe tables exactly as a SQLite file's: the database's `CREATE` statements (tables,
//!   indexes) and `sqlite_sequence` are replayed into an empty in-memory SQLite, which the SQLite
//!   introspection then reads (keys, foreign keys, unique, indexes, STRICT, AUTOINCREMENT).
//! - MUST read rows in key order (the rowid breaking ties, as for SQLite) in keyset pages, each
//!   one request of about `FERRY_D1_PAGE_BYTES` (2 MiB) of answer, well inside 30 s.
//! - MUST read every value exactly: the API turns integers into JavaScript numbers (above 2^53
//!   they are rounded) and loses the storage class of a whole REAL, so each value comes tagged
//!   with its class as text (`i…` integer digits, `t…` text, `x…` BLOB hex, `r±inf`), only finite
//!   REALs as numbers (exact: the shortest form that reads back as the same double). Text the API
//!   could not carry as UTF-8 (it arrives with U+FFFD in it) is read again as hex.
//! - Pages are separate requests, so an export is not one snapshot of a database written to
//!   meanwhile (D1 has no read transaction across requests): stop writers for an exact copy.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension as _};
use serde_json::Value as Json;

use super::client::D1Client;
use super::literals;
use crate::connect::sql::quote;
use crate::connect::sqlite::catalog::{Classes, TableInfo, describe, list_tables};
use crate::connect::sqlite::source::{PreScan, after_position, bookmark_position, discover_tables, scan_order};
use crate::connect::{RowAccess, Selection, Source, StreamPlan};
use crate::error::{Context, Error, ErrorKind, Result};
use crate::protocol::{Bookmark, SourceInfo};
use crate::row::{Column, RowShape};
use crate::value::Codec;
use crate::value::{Value, ValueRef};

/// Rows in the first page of a table, and the bounds of later ones.
const FIRST_PAGE: usize = 500;
const MAX_PAGE: usize = 50_000;

pub(crate) struct D1Source {
    pub(super) client: D1Client,
    /// The database's schema, replayed into an empty SQLite.
    mirror: Option<Connection>,
    pub(super) tables: HashMap<String, TableInfo>,
    page_bytes: usize,
    /// The pass of captured changes last read (`super::capture`).
    pub(super) pass: Option<Pass>,
}

/// What one request read: the keys changed after `after` up to `upto`, and the rows under them.
#[derive(Default)]
pub(crate) struct Pass {
    pub(super) after: u64,
    pub(super) upto: u64,
    /// The newest change then: above `upto`, another pass follows at once.
    pub(super) newest: u64,
    pub(super) keys: Vec<(String, Vec<Value>)>,
    /// When it was read (a pass that found nothing holds the next back: `capture::POLL`).
    pub(super) read_at: Option<std::time::Instant>,
    /// By stream, the rows read.
    pub(super) rows: HashMap<String, Rows>,
}

/// A table's rows under the changed keys: its columns, and each row by its key's canonical bytes.
pub(super) struct Rows {
    pub(super) columns: Vec<String>,
    pub(super) by_key: HashMap<Vec<u8>, Vec<Value>>,
}

/// One decoded row.
struct D1Row {
    values: Vec<Value>,
    rowid: Option<i64>,
}

impl RowAccess for D1Row {
    fn get(&self, i: usize) -> ValueRef<'_> {
        self.values[i].as_ref()
    }
    fn rowid(&self) -> Option<i64> {
        self.rowid
    }
}

impl D1Source {
    pub(crate) fn open(url: &str) -> Result<D1Source> {
        let page_bytes = crate::tuning::Tuning::get().d1_page_bytes;
        Ok(D1Source {
            client: D1Client::open(url, ErrorKind::Source)?,
            mirror: None,
            tables: HashMap::new(),
            page_bytes,
            pass: None,
        })
    }

    pub(crate) fn address(&self) -> &str {
        self.client.address()
    }

    /// The database's schema in an empty SQLite (read once).
    pub(crate) fn schema(&mut self) -> Result<&Connection> {
        if self.mirror.is_none() {
            let conn = Connection::open_in_memory().ctx(ErrorKind::Io, || "opening an in-memory database")?;
            self.replay_schema(&conn)?;
            self.mirror = Some(conn);
        }
        Ok(self.mirror.as_ref().expect("just set"))
    }

    /// Replay the database's tables and indexes (not D1's `_cf_` tables nor ferry's markers)
    /// into `conn`, with `sqlite_sequence`.
    fn replay_schema(&mut self, conn: &Connection) -> Result<()> {
        let address = self.client.address().to_owned();
        let sql = "SELECT type, name, sql FROM sqlite_master WHERE type IN ('table', 'index') AND sql IS NOT NULL \
                   AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_cf\\_%' ESCAPE '\\' \
                   AND name NOT LIKE '\\_ferry\\_%' ESCAPE '\\' ORDER BY rowid";
        let found = self.client.raw(&[sql.to_owned()])?.pop().unwrap_or_default();
        let mut skipped: Vec<String> = Vec::new();
        for row in &found {
            let (Some(kind), Some(name), Some(ddl)) = (row[0].as_str(), row[1].as_str(), row[2].as_str()) else {
                continue;
            };
            // The shadow tables of a virtual table come with it.
            let exists: Option<i64> = conn
                .query_row("SELECT 1 FROM sqlite_master WHERE name = ?1", [name], |r| r.get(0))
                .optional()
                .ctx(ErrorKind::Io, || "reading the schema copy")?;
            if exists.is_some() {
                continue;
            }
            if let Err(e) = conn.execute_batch(ddl) {
                if kind == "table" {
                    tracing::warn!(source = %address, table = name, error = %e, "this table cannot be described here and is not exported");
                }
                skipped.push(name.to_owned());
            }
        }
        let has_sequence = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_sequence'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .ctx(ErrorKind::Io, || "reading the schema copy")?
            > 0;
        if has_sequence {
            let seqs = self
                .client
                .raw(&["SELECT name, CAST(seq AS TEXT) FROM sqlite_sequence".to_owned()])?
                .pop()
                .unwrap_or_default();
            for s in seqs {
                if let (Some(name), Some(seq)) = (s[0].as_str(), s[1].as_str()) {
                    conn.execute(
                        "INSERT INTO sqlite_sequence (name, seq) VALUES (?1, CAST(?2 AS INTEGER))",
                        [name, seq],
                    )
                    .ctx(ErrorKind::Io, || "copying sqlite_sequence")?;
                }
            }
        }
        Ok(())
    }

    /// Count a table's rows and sample its classes: both queries in one request. A table too big
    /// to count inside D1's time limit is read without an estimate, described by its declared
    /// types (values of other classes are still carried exactly, tagged).
    fn pre_scan(client: &mut D1Client, t: &TableInfo, filter: Option<&str>) -> Result<(Option<u64>, Vec<Classes>)> {
        let q = PreScan::new(t, filter);
        let mut sqls = vec![q.count.clone()];
        sqls.extend(q.classes.clone());
        let answers = match client.try_raw(&sqls)? {
            Ok(a) => a,
            Err(m) if m.contains("code 7429") => {
                tracing::warn!(source = %client.address(), table = %t.name, "counting the table took longer than D1 allows a request: reading it without a row estimate");
                return Ok((None, vec![Classes::default(); q.columns]));
            }
            Err(m) => return Err(client.refused(&q.count, &m)),
        };
        let count = answers
            .first()
            .and_then(|rows| rows.first())
            .and_then(|r| r.first())
            .and_then(Json::as_u64);
        let classes = match answers.get(1).and_then(|rows| rows.first()) {
            Some(flags) => PreScan::classes(&flags.iter().map(|f| f.as_i64() == Some(1)).collect::<Vec<_>>()),
            None => vec![],
        };
        Ok((count, classes))
    }

    /// The rows of one table in key order, strictly after `after`, a page at a time.
    pub(crate) fn scan_table(
        &mut self,
        t: &TableInfo,
        shape: &RowShape,
        filter: Option<&str>,
        after: Option<&Bookmark>,
        row: &mut dyn FnMut(&dyn RowAccess) -> Result<()>,
    ) -> Result<()> {
        let address = self.client.address().to_owned();
        let (key, tie) = scan_order(t);
        if key.is_empty() && tie.is_none() {
            return Err(Error::new(
                ErrorKind::Source,
                format!(
                    "{address}: table {} has neither a key nor a rowid to read it in pages by",
                    t.name
                ),
            ));
        }
        let mut position = match after {
            Some(b) => Some(bookmark_position(t, shape, &key, tie, b).map_err(|e| {
                Error::new(
                    ErrorKind::Source,
                    format!(
                        "table {}: cannot resume: {e}; run without --resume to start over",
                        t.name
                    ),
                )
            })?),
            None => None,
        };
        let key_index: Vec<usize> = key
            .iter()
            .map(|k| {
                shape.column_index(k).ok_or_else(|| {
                    Error::new(
                        ErrorKind::Source,
                        format!("{address}: key column {k} of table {} is not read", t.name),
                    )
                })
            })
            .collect::<Result<_>>()?;
        let mut select: Vec<String> = tie.map(|r| format!("CAST({r} AS TEXT)")).into_iter().collect();
        select.extend(shape.columns.iter().map(|c| tagged(&quote(&c.name))));
        if select.is_empty() {
            select.push("NULL".into());
        }
        let mut order: Vec<String> = key.iter().map(|k| quote(k)).collect();
        order.extend(tie.map(str::to_owned));
        let head = format!("SELECT {} FROM main.{}", select.join(", "), quote(&t.name));
        let offset = usize::from(tie.is_some());
        let mut page = FIRST_PAGE;
        let mut ceiling = MAX_PAGE;
        loop {
            let mut conds: Vec<String> = filter.map(|f| format!("({f})")).into_iter().collect();
            if let Some(p) = &position {
                conds.push(keyset(p)?);
            }
            let mut sql = head.clone();
            if !conds.is_empty() {
                sql.push_str(" WHERE ");
                sql.push_str(&conds.join(" AND "));
            }
            sql.push_str(&format!(" ORDER BY {} LIMIT {page}", order.join(", ")));
            let rows = match self.client.try_raw(std::slice::from_ref(&sql))? {
                Ok(mut answers) => answers.pop().unwrap_or_default(),
                // A page D1 could not read inside its time limit (a busy database, wide rows) is
                // read again in halves: a read changes nothing, so asking again is safe.
                Err(m) if m.contains("code 7429") && page > 1 => {
                    page /= 2;
                    ceiling = page;
                    tracing::warn!(source = %address, table = %t.name, page, "a page took longer than D1 allows a request: reading smaller pages");
                    continue;
                }
                Err(m) => return Err(self.client.refused(&sql, &m)),
            };
            let mut bytes = 0usize;
            let got = rows.len();
            for r in &rows {
                let mut decoded = D1Row {
                    values: Vec::with_capacity(shape.len()),
                    rowid: None,
                };
                if tie.is_some() {
                    decoded.rowid = r.first().and_then(Json::as_str).and_then(|s| s.parse().ok());
                }
                let mut unreadable = Vec::new();
                for (i, v) in r.iter().skip(offset).enumerate() {
                    bytes += v.as_str().map_or(8, str::len);
                    let value = untag(v).map_err(|e| {
                        Error::new(
                            ErrorKind::Source,
                            format!("{address}: table {} column {}: {e}", t.name, shape.columns[i].name),
                        )
                    })?;
                    if garbled(&value) {
                        unreadable.push(i);
                    }
                    decoded.values.push(value);
                }
                let mut here: Vec<(String, Value)> = key
                    .iter()
                    .zip(&key_index)
                    .map(|(k, &i)| (quote(k), decoded.values[i].clone()))
                    .collect();
                if let (Some(r), Some(id)) = (tie, decoded.rowid) {
                    here.push((r.to_owned(), Value::Integer(id)));
                }
                if !unreadable.is_empty() {
                    self.reread_text(t, shape, &here, &unreadable, &mut decoded.values)?;
                }
                row(&decoded)?;
                position = Some(here);
            }
            if got < page {
                return Ok(());
            }
            let per_row = (bytes / got.max(1)).max(1);
            page = (self.page_bytes / per_row).clamp(ceiling.min(100), ceiling);
        }
    }

    /// Read text columns of one row again as hex: the API replaced bytes that are not UTF-8.
    fn reread_text(
        &mut self,
        t: &TableInfo,
        shape: &RowShape,
        at: &[(String, Value)],
        columns: &[usize],
        values: &mut [Value],
    ) -> Result<()> {
        let list: Vec<String> = columns
            .iter()
            .map(|&i| format!("hex({})", quote(&shape.columns[i].name)))
            .collect();
        let mut conds = Vec::new();
        for (c, v) in at {
            if *v == Value::Null {
                conds.push(format!("{c} IS NULL"));
            } else {
                conds.push(format!("{c} = {}", sql_literal(v)?));
            }
        }
        let sql = format!(
            "SELECT {} FROM main.{} WHERE {}",
            list.join(", "),
            quote(&t.name),
            conds.join(" AND ")
        );
        let rows = self.client.raw(&[sql])?.pop().unwrap_or_default();
        let Some(r) = rows.first() else {
            return Ok(());
        };
        for (&i, h) in columns.iter().zip(r) {
            if let Some(bytes) = h.as_str().and_then(|h| hex::decode(h).ok()) {
                values[i] = Value::Text(bytes);
            }
        }
        Ok(())
    }
}

impl D1Source {
    /// A D1 database as a validation reads it: copied once into a private temporary SQLite file
    /// (deleted on close), then checked as any SQLite database is: D1 is SQLite behind an HTTP API.
    pub(crate) fn comparable(url: &str) -> Result<crate::connect::sqlite::compare::SqliteTables> {
        let mut d1 = D1Source::open(url)?;
        let conn = crate::connect::compare::temporary_db()?;
        d1.copy_into(&conn)?;
        Ok(crate::connect::sqlite::compare::SqliteTables::new(
            conn,
            d1.address().to_owned(),
        ))
    }

    /// Copy the whole database (schema and rows, exactly) into `conn`, an empty SQLite: the D1
    /// side of a validation is read once, then checked as a SQLite file is.
    pub(crate) fn copy_into(&mut self, conn: &Connection) -> Result<()> {
        self.replay_schema(conn)?;
        let address = self.address().to_owned();
        let address = address.as_str();
        // The rows come table by table, not parents first.
        conn.execute_batch("PRAGMA foreign_keys = OFF; BEGIN")
            .ctx(ErrorKind::Io, || format!("copying {address}"))?;
        for table in list_tables(conn, self.address())? {
            let t = describe(conn, &table, self.address())?;
            let columns: Vec<Column> = t
                .stored_columns()
                .map(|c| Column {
                    name: c.name.clone(),
                    codec: Codec::Any,
                    nullable: true,
                    sql_type: None,
                })
                .collect();
            let names: Vec<String> = columns.iter().map(|c| quote(&c.name)).collect();
            let shape = RowShape::new(&format!("main.{table}"), columns, &t.pk)
                .map_err(|m| Error::new(ErrorKind::Source, format!("{}: table {table}: {m}", self.address())))?;
            let marks = vec!["?"; names.len()].join(", ");
            let mut insert = conn
                .prepare(&format!(
                    "INSERT INTO main.{} ({}) VALUES ({marks})",
                    quote(&table),
                    names.join(", ")
                ))
                .ctx(ErrorKind::Io, || format!("copying table {table} from {address}"))?;
            let started = std::time::Instant::now();
            let mut n = 0u64;
            self.scan_table(&t, &shape, None, None, &mut |r| {
                let values: Vec<Value> = (0..names.len()).map(|i| r.get(i).to_owned()).collect();
                insert
                    .execute(rusqlite::params_from_iter(values.iter()))
                    .ctx(ErrorKind::Io, || format!("copying table {table} from {address}"))?;
                n += 1;
                Ok(())
            })?;
            tracing::info!(source = %self.address(), table = %table, rows = n, secs = started.elapsed().as_secs_f64(), "read from D1");
        }
        conn.execute_batch("COMMIT")
            .ctx(ErrorKind::Io, || format!("copying {address}"))?;
        Ok(())
    }
}

/// The value of column expression `c` tagged with its storage class (see the module's contract).
pub(super) fn tagged(c: &str) -> String {
    format!(
        "CASE typeof({c}) WHEN 'integer' THEN 'i' || {c} WHEN 'text' THEN 't' || {c} WHEN 'blob' THEN 'x' || hex({c}) \
         WHEN 'real' THEN CASE WHEN {c} > 1.7976931348623157e308 THEN 'r+inf' WHEN {c} < -1.7976931348623157e308 \
         THEN 'r-inf' ELSE {c} END END"
    )
}

/// Text the API could not carry as UTF-8: it arrives with U+FFFD in it.
pub(super) fn garbled(v: &Value) -> bool {
    matches!(v, Value::Text(s) if String::from_utf8_lossy(s).contains('\u{FFFD}'))
}

/// A tagged value back.
pub(super) fn untag(v: &Json) -> std::result::Result<Value, String> {
    match v {
        Json::Null => Ok(Value::Null),
        Json::Number(n) => n
            .as_f64()
            .map(Value::Real)
            .ok_or_else(|| format!("number {n} out of range")),
        Json::String(s) => {
            let (tag, rest) = s.split_at(s.char_indices().nth(1).map_or(s.len(), |(i, _)| i));
            match tag {
                "i" => rest
                    .parse()
                    .map(Value::Integer)
                    .map_err(|_| format!("integer {rest:?} unreadable")),
                "t" => Ok(Value::Text(rest.as_bytes().to_vec())),
                "x" => hex::decode(rest).map(Value::Blob).map_err(|e| format!("BLOB hex: {e}")),
                "r" if rest == "+inf" => Ok(Value::Real(f64::INFINITY)),
                "r" if rest == "-inf" => Ok(Value::Real(f64::NEG_INFINITY)),
                _ => Err(format!("unexpected answer {s:?}")),
            }
        }
        other => Err(format!("unexpected answer {other}")),
    }
}

fn sql_literal(v: &Value) -> Result<String> {
    literals::sql_literal(v).map_err(|e| Error::new(ErrorKind::Source, e))
}

/// The condition for rows after `position`, with the values as literals (D1 binds parameters as
/// text only, which would compare differently from the values themselves).
fn keyset(position: &[(String, Value)]) -> Result<String> {
    let mut failed = None;
    let cond = after_position(position, &mut |v| match sql_literal(v) {
        Ok(s) => s,
        Err(e) => {
            failed = Some(e);
            "NULL".into()
        }
    });
    match failed {
        Some(e) => Err(e),
        None => Ok(cond),
    }
}

impl Source for D1Source {
    fn info(&self) -> SourceInfo {
        SourceInfo {
            kind: "d1".into(),
            address: self.client.address().to_owned(),
            selection: None,
            shard: None,
        }
    }

    fn discover(&mut self, selection: &Selection) -> Result<Vec<StreamPlan>> {
        self.schema()?;
        let D1Source {
            client, mirror, tables, ..
        } = self;
        let conn = mirror.as_ref().expect("read above");
        let address = client.address().to_owned();
        discover_tables(conn, &address, selection, tables, &mut |t, f| {
            Self::pre_scan(client, t, f)
        })
    }

    fn scan(
        &mut self,
        plan: &StreamPlan,
        shape: &RowShape,
        after: Option<&Bookmark>,
        row: &mut dyn FnMut(&dyn RowAccess) -> Result<()>,
    ) -> Result<()> {
        let stream = &plan.schema.stream;
        let t = crate::connect::discovered(&self.tables, self.address(), stream)?.clone();
        self.scan_table(&t, shape, plan.filter.as_deref(), after, row)
    }

    fn changes(&mut self) -> Option<&mut dyn crate::connect::ChangeSource> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tagged_values_come_back_exact() {
        // Through real SQLite: the tagged expression, then JSON as the API sends it.
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE t (v); INSERT INTO t VALUES (9223372036854775807), (-9007199254740993), (1.0), (0.1), \
             (9e999), (-9e999), ('héllo'), ('i42'), (X'00FF'), (NULL), ('');",
        )
        .unwrap();
        let mut st = conn
            .prepare(&format!("SELECT {} FROM t ORDER BY rowid", tagged("v")))
            .unwrap();
        let got: Vec<Value> = st
            .query_map([], |r| {
                Ok(match r.get_ref(0)? {
                    rusqlite::types::ValueRef::Null => Json::Null,
                    rusqlite::types::ValueRef::Real(f) => json!(f),
                    rusqlite::types::ValueRef::Text(t) => json!(String::from_utf8_lossy(t)),
                    other => panic!("{other:?}"),
                })
            })
            .unwrap()
            .map(|j| untag(&j.unwrap()).unwrap())
            .collect();
        assert_eq!(
            got,
            vec![
                Value::Integer(i64::MAX),
                Value::Integer(-9007199254740993),
                Value::Real(1.0),
                Value::Real(0.1),
                Value::Real(f64::INFINITY),
                Value::Real(f64::NEG_INFINITY),
                Value::text("héllo"),
                Value::text("i42"),
                Value::Blob(vec![0, 255]),
                Value::Null,
                Value::text(""),
            ]
        );
        assert!(untag(&json!("q1")).is_err());
        assert!(untag(&json!("iabc")).is_err());
    }

    #[test]
    fn keyset_conditions_use_exact_literals() {
        let p = vec![
            ("\"a\"".to_owned(), Value::text("it's")),
            ("rowid".to_owned(), Value::Integer(i64::MAX)),
        ];
        assert_eq!(
            keyset(&p).unwrap(),
            "((\"a\" > 'it''s') OR (\"a\" = 'it''s' AND rowid > 9223372036854775807))"
        );
    }
}
