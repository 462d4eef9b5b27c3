//! SQLite as a source: one read transaction covers the whole export (a consistent snapshot).
//! Each table is scanned once first to learn which storage classes its columns really hold (so
//! the SCHEMA tells the truth about dynamic columns, and gives an exact row count), then read in
//! key order by a single streaming statement: primary key order (plus rowid as a tie-break where
//! the key may hold NULLs), or rowid order for a table without a key.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{Connection, OpenFlags};
use serde_json::{Map, Value as Json};

use super::catalog::{Classes, TableInfo, column_property, describe, fk_order, list_tables, uuid_candidate};
use super::from_sql;
use super::parse::table_sql_parts;
use super::{capture, row_values};
use crate::connect::sql::quote;
use crate::connect::{RowAccess, Selection, Source, StreamPlan};
use crate::error::{Context, Error, ErrorKind, Result};
use crate::protocol::{Bookmark, ObjectSchema, Schema, SourceInfo, SqliteTable, TableRef};
use crate::row::RowShape;
use crate::shard::{Range, Shard};
use crate::value::{self, Value, ValueRef};
use rusqlite::OptionalExtension as _;

pub(crate) struct SqliteSource {
    conn: Connection,
    path: std::path::PathBuf,
    /// For trimming captured changes, opened when first needed.
    writer: Option<Connection>,
    address: String,
    in_snapshot: bool,
    /// Per stream: the table definition found by discover.
    tables: HashMap<String, TableInfo>,
}

impl SqliteSource {
    pub(crate) fn open(path: &Path) -> Result<SqliteSource> {
        let address = format!("sqlite:{}", path.display());
        if !path.is_file() {
            return Err(Error::new(
                ErrorKind::Source,
                format!("{address}: no such database file (check the path; ferry never creates a source)"),
            ));
        }
        // The source is named by its absolute path: `--resume` and the target's commit markers
        // recognise it however the path was written.
        let address = match std::fs::canonicalize(path) {
            Ok(p) => format!("sqlite:{}", p.display()),
            Err(_) => address,
        };
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .ctx(ErrorKind::Source, || format!("{address}: cannot open"))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .ctx(ErrorKind::Source, || address.clone())?;
        Ok(SqliteSource {
            conn,
            path: path.to_owned(),
            writer: None,
            address,
            in_snapshot: false,
            tables: HashMap::new(),
        })
    }

    fn snapshot(&mut self) -> Result<()> {
        if !self.in_snapshot {
            // A deferred transaction whose first read fixes the snapshot for the whole export.
            self.conn
                .execute_batch("BEGIN; SELECT count(*) FROM sqlite_schema;")
                .ctx(ErrorKind::Source, || {
                    format!("{}: starting a read transaction", self.address)
                })?;
            self.in_snapshot = true;
        }
        Ok(())
    }
}

/// A table's exact row count, and the storage classes its columns hold (see [`PreScan`]).
fn pre_scan(conn: &Connection, address: &str, t: &TableInfo, filter: Option<&str>) -> Result<(u64, Vec<Classes>)> {
    let e = || format!("{address}: scanning table {}", t.name);
    let q = PreScan::new(t, filter);
    let count: i64 = conn.query_row(&q.count, [], |r| r.get(0)).ctx(ErrorKind::Source, e)?;
    let classes = match &q.classes {
        None => vec![],
        Some(sql) => conn
            .query_row(sql, [], |r| {
                let flags = (0..q.columns * FLAGS)
                    .map(|i| r.get::<_, bool>(i))
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(PreScan::classes(&flags))
            })
            .ctx(ErrorKind::Source, e)?,
    };
    Ok((count as u64, classes))
}

/// The queries that learn a table's exact row count and the storage classes its columns hold in a
/// sample: the first and last [`CLASS_SAMPLE`] rows in key order (every row of a smaller table).
/// The sample only decides how the SCHEMA describes each column; a value of a class it did not
/// see is still written exactly, in a tagged form (see `value`).
pub(crate) struct PreScan {
    pub count: String,
    /// One row of 0/1 flags, [`FLAGS`] per column; None without columns.
    pub classes: Option<String>,
    pub columns: usize,
}

impl PreScan {
    pub(crate) fn new(t: &TableInfo, filter: Option<&str>) -> PreScan {
        let table = format!("main.{}", quote(&t.name));
        let filter = filter.map(|f| format!(" WHERE ({f})")).unwrap_or_default();
        let count = format!("SELECT count(*) FROM {table}{filter}");
        let cols: Vec<String> = t.stored_columns().map(|c| quote(&c.name)).collect();
        if cols.is_empty() {
            return PreScan {
                count,
                classes: None,
                columns: 0,
            };
        }
        let list = cols.join(", ");
        let (key, tie) = scan_order(t);
        let mut order: Vec<String> = key.iter().map(|k| quote(k)).collect();
        order.extend(tie.map(str::to_owned));
        // Both ends of the key order; a table of fewer rows is read whole (twice, at most).
        let rows = if order.is_empty() {
            format!("SELECT {list} FROM {table}{filter}")
        } else {
            let asc = order.join(", ");
            let desc = order.iter().map(|o| format!("{o} DESC")).collect::<Vec<_>>().join(", ");
            format!(
                "SELECT * FROM (SELECT {list} FROM {table}{filter} ORDER BY {asc} LIMIT {CLASS_SAMPLE}) \
                 UNION ALL SELECT * FROM (SELECT {list} FROM {table}{filter} ORDER BY {desc} LIMIT {CLASS_SAMPLE})"
            )
        };
        let mut sql = String::from("SELECT ");
        for (i, (q, c)) in cols.iter().zip(t.stored_columns()).enumerate() {
            for (k, class) in ["integer", "real", "text", "blob"].iter().enumerate() {
                if i + k > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("coalesce(max(typeof({q}) = '{class}'), 0)"));
            }
            // The fifth flag: some value is not a UUID's text (always, for other columns).
            match uuid_candidate(&c.decl_type) {
                true => sql.push_str(&format!(
                    ", coalesce(max({q} IS NOT NULL AND NOT ({})), 0)",
                    is_uuid_text(q)
                )),
                false => sql.push_str(", 1"),
            }
        }
        sql.push_str(&format!(" FROM ({rows})"));
        PreScan {
            count,
            classes: Some(sql),
            columns: cols.len(),
        }
    }

    /// The classes of each column from the flags the classes query returned.
    pub(crate) fn classes(flags: &[bool]) -> Vec<Classes> {
        flags
            .chunks(FLAGS)
            .map(|f| Classes {
                integer: f[0],
                real: f[1],
                text: f[2],
                blob: f[3],
                uuids: !f[4],
            })
            .collect()
    }
}

/// Flags per column in the classes query: integer, real, text, blob, not a UUID.
pub(crate) const FLAGS: usize = 5;

/// SQL true when `q` (a quoted column) holds a UUID's text: 32 hex digits, or 36 characters with
/// the hyphens where a UUID has them.
fn is_uuid_text(q: &str) -> String {
    let hex = |e: &str| format!("{e} NOT GLOB '*[^0-9a-fA-F]*'");
    format!(
        "typeof({q}) = 'text' AND ((length({q}) = 32 AND {}) OR (length({q}) = 36 AND \
         substr({q}, 9, 1) = '-' AND substr({q}, 14, 1) = '-' AND substr({q}, 19, 1) = '-' AND \
         substr({q}, 24, 1) = '-' AND length(replace({q}, '-', '')) = 32 AND {}))",
        hex(q),
        hex(&format!("replace({q}, '-', '')"))
    )
}

/// Rows read at each end of a table to learn the storage classes of its columns.
const CLASS_SAMPLE: u64 = 10_000;

/// The ORDER BY columns of a table's export, and whether the rowid is appended to the key.
pub(crate) fn scan_order(t: &TableInfo) -> (Vec<String>, Option<&'static str>) {
    if !t.pk.is_empty() {
        let tie = if t.pk_nullable() { t.rowid_name } else { None };
        (t.pk.clone(), tie)
    } else {
        (vec![], t.rowid_name)
    }
}

/// One row of a scan, each column read from SQLite once (the exporter looks at a value several
/// times: to write it, to hash it, to remember the key).
struct SqliteRow<'a> {
    values: Vec<ValueRef<'a>>,
    rowid: Option<i64>,
}

impl<'a> SqliteRow<'a> {
    fn read(row: &'a rusqlite::Row<'_>, offset: usize, columns: usize) -> SqliteRow<'a> {
        let values = (0..columns)
            .map(|i| row.get_ref(i + offset).map(from_sql).unwrap_or(ValueRef::Null))
            .collect();
        let rowid = if offset == 1 { row.get(0).ok() } else { None };
        SqliteRow { values, rowid }
    }
}

impl RowAccess for SqliteRow<'_> {
    fn get(&self, i: usize) -> ValueRef<'_> {
        self.values[i]
    }
    fn rowid(&self) -> Option<i64> {
        self.rowid
    }
}

impl Source for SqliteSource {
    fn info(&self) -> SourceInfo {
        SourceInfo {
            kind: "sqlite".into(),
            address: self.address.clone(),
            selection: None,
            shard: None,
        }
    }

    fn discover(&mut self, selection: &Selection) -> Result<Vec<StreamPlan>> {
        self.snapshot()?;
        let SqliteSource {
            conn, address, tables, ..
        } = self;
        discover_tables(conn, address, selection, tables, &mut |t, f| {
            pre_scan(conn, address, t, f).map(|(n, c)| (Some(n), c))
        })
    }

    fn scan(
        &mut self,
        plan: &StreamPlan,
        shape: &RowShape,
        after: Option<&Bookmark>,
        row: &mut dyn FnMut(&dyn RowAccess) -> Result<()>,
    ) -> Result<()> {
        self.snapshot()?;
        let stream = &plan.schema.stream;
        let t = crate::connect::discovered(&self.tables, &self.address, stream)?;
        let (key, tie) = scan_order(t);
        let cols: Vec<String> = shape.columns.iter().map(|c| quote(&c.name)).collect();
        let mut sql = String::from("SELECT ");
        if let Some(r) = tie {
            sql.push_str(r);
            sql.push_str(", ");
        }
        sql.push_str(if cols.is_empty() { "NULL" } else { "" });
        sql.push_str(&cols.join(", "));
        sql.push_str(&format!(" FROM main.{}", quote(&t.name)));
        let mut conds = Vec::new();
        if let Some(f) = &plan.filter {
            conds.push(format!("({f})"));
        }
        let mut binds: Vec<Value> = Vec::new();
        if let Some(b) = after {
            let (cond, vals) = after_condition(t, shape, &key, tie, b).map_err(|e| {
                Error::new(
                    ErrorKind::Source,
                    format!("stream {stream}: cannot resume: {e}; run without --resume to start over"),
                )
            })?;
            conds.push(cond);
            binds = vals;
        }
        if !conds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conds.join(" AND "));
        }
        let mut order: Vec<String> = key.iter().map(|k| quote(k)).collect();
        order.extend(tie.map(str::to_owned));
        if order.is_empty() {
            // Keyless and no rowid to order by: order by every column so repeated runs agree.
            order = cols.clone();
        }
        if !order.is_empty() {
            sql.push_str(" ORDER BY ");
            sql.push_str(&order.join(", "));
        }
        let address = &self.address;
        let e = || format!("{address}: reading table {}", t.name);
        let mut st = self.conn.prepare(&sql).ctx(ErrorKind::Source, e)?;
        let mut rows = st
            .query(rusqlite::params_from_iter(binds.iter()))
            .ctx(ErrorKind::Source, e)?;
        let offset = usize::from(tie.is_some());
        let columns = shape.len();
        while let Some(r) = rows.next().ctx(ErrorKind::Source, e)? {
            row(&SqliteRow::read(r, offset, columns))?;
        }
        Ok(())
    }

    fn changes(&mut self) -> Option<&mut dyn crate::connect::ChangeSource> {
        Some(self)
    }

    fn shard_range(&mut self, plan: &StreamPlan, shard: Shard) -> Result<(Range, Option<String>)> {
        self.snapshot()?;
        let t = crate::connect::discovered(&self.tables, &self.address, &plan.schema.stream)?;
        let Some(column) = t.pk.first() else {
            let whole = shard.n == 1 || shard.owns_whole(&plan.schema.stream);
            let range = if whole { Range::All } else { Range::Nothing };
            let cond = range.condition(&|c| quote(c), &bound_literal);
            return Ok((range, cond));
        };
        let mut order = SqliteKeyOrder {
            conn: &self.conn,
            table: format!("main.{}", quote(&t.name)),
            column: quote(column),
            filter: plan.filter.as_ref().map(|f| format!(" AND ({f})")).unwrap_or_default(),
            what: format!("{}: splitting table {} into shards", self.address, t.name),
        };
        let range = crate::connect::shard_range_of(column, shard, &mut order)?;
        let cond = range.condition(&|c| quote(c), &bound_literal);
        Ok((range, cond))
    }
}

/// A table's first key column, read for a shard's bounds.
struct SqliteKeyOrder<'c> {
    conn: &'c Connection,
    table: String,
    /// Quoted.
    column: String,
    /// ` AND (--where)`, or nothing.
    filter: String,
    what: String,
}

impl SqliteKeyOrder<'_> {
    /// The first row of a query on the column's rows that have one, as values.
    fn first(&self, select: &str, tail: &str, params: &[&dyn rusqlite::ToSql]) -> Result<Vec<Value>> {
        let (c, table, filter) = (&self.column, &self.table, &self.filter);
        let sql = format!("SELECT {select} FROM {table} WHERE {c} IS NOT NULL{filter}{tail}");
        self.conn
            .query_row(&sql, params, |r| {
                Ok((0..r.as_ref().column_count())
                    .map(|i| r.get_ref(i).map(|v| from_sql(v).to_owned()).unwrap_or(Value::Null))
                    .collect())
            })
            .optional()
            .ctx(ErrorKind::Source, || self.what.clone())
            .map(Option::unwrap_or_default)
    }
}

impl crate::connect::KeyOrder for SqliteKeyOrder<'_> {
    fn ends(&mut self) -> Result<Option<(Value, Value)>> {
        let c = &self.column;
        Ok(match self.first(&format!("min({c}), max({c})"), "", &[])?.as_slice() {
            [Value::Null, _] => None,
            [a, b] => Some((a.clone(), b.clone())),
            _ => None,
        })
    }

    fn count(&mut self) -> Result<u64> {
        Ok(match self.first(&format!("count({})", self.column), "", &[])?.first() {
            Some(Value::Integer(n)) => *n as u64,
            _ => 0,
        })
    }

    fn at(&mut self, position: u64) -> Result<Option<Value>> {
        let tail = format!(" ORDER BY {} LIMIT 1 OFFSET ?", self.column);
        Ok(self
            .first(&self.column, &tail, &[&(position as i64)])?
            .into_iter()
            .next())
    }
}

/// A shard's bound as an SQLite literal. A NaN (which no SQLite row holds: it stores NULL) is NULL.
pub(crate) fn bound_literal(v: &Value) -> String {
    let mut out = String::new();
    match crate::connect::sql::sqlite_literal(v, &mut out) {
        Ok(()) => out,
        Err(_) => "NULL".into(),
    }
}

impl crate::connect::ChangeSource for SqliteSource {
    fn start(&mut self, _from: u64, _follow: bool) -> Result<()> {
        for t in self.tables.values().filter(|t| !t.pk.is_empty()) {
            if !capture::is_captured(&self.conn, &self.address, &t.name)? {
                capture::warn_uncaptured(&t.name, &self.address);
            }
        }
        Ok(())
    }

    fn latest_change(&mut self) -> Result<u64> {
        self.pause()?;
        self.snapshot()?;
        capture::latest(&self.conn, &self.address)
    }

    fn pause(&mut self) -> Result<()> {
        if self.in_snapshot {
            self.conn.execute_batch("COMMIT").ctx(ErrorKind::Source, || {
                format!("{}: ending a read transaction", self.address)
            })?;
            self.in_snapshot = false;
        }
        Ok(())
    }

    fn changed_keys(
        &mut self,
        after: u64,
        upto: u64,
        each: &mut dyn FnMut(&str, Vec<Value>) -> Result<()>,
    ) -> Result<()> {
        let tables = &self.tables;
        capture::changed_keys(&self.conn, &self.address, after, upto, &mut |table, mut key| {
            let stream = format!("main.{table}");
            // A table the export does not take (or made after it started) is left alone.
            let Some(t) = tables.get(&stream) else {
                return Ok(());
            };
            key.truncate(t.pk.len());
            each(&stream, key)
        })
    }

    fn rows_now(
        &mut self,
        plan: &StreamPlan,
        shape: &RowShape,
        keys: &[Vec<Value>],
    ) -> Result<Vec<Option<Vec<Value>>>> {
        let stream = &plan.schema.stream;
        let t = crate::connect::discovered(&self.tables, &self.address, stream)?;
        let cols: Vec<String> = shape.columns.iter().map(|c| quote(&c.name)).collect();
        let key_cols: Vec<String> = t.pk.iter().map(|k| quote(k)).collect();
        let sql = format!(
            "SELECT {} FROM main.{} WHERE {}",
            if cols.is_empty() {
                "NULL".to_owned()
            } else {
                cols.join(", ")
            },
            quote(&t.name),
            crate::connect::sql::key_condition(&key_cols)
        );
        let address = &self.address;
        let e = || format!("{address}: reading a changed row of table {}", t.name);
        let mut st = self.conn.prepare_cached(&sql).ctx(ErrorKind::Source, e)?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let mut rows = st.query(rusqlite::params_from_iter(key)).ctx(ErrorKind::Source, e)?;
            out.push(match rows.next().ctx(ErrorKind::Source, e)? {
                Some(r) => Some(row_values(r, shape.len()).ctx(ErrorKind::Source, e)?),
                None => None,
            });
        }
        Ok(out)
    }

    fn trim(&mut self, upto: u64) -> Result<u64> {
        // (A write waits for every reader of a database not in WAL mode, this one's too.)
        self.pause()?;
        if self.writer.is_none() {
            self.writer = Some(capture::open_for_writing(&self.path, &self.address)?);
        }
        match &self.writer {
            Some(w) => capture::trim(w, &self.address, upto),
            None => Ok(0),
        }
    }
}

/// The streams of a database's tables, parents first, described through `conn` (each table's
/// definition kept in `tables` under its stream, for the scans); `pre_scan` counts each table's
/// rows (None: not known) and samples their classes (see [`PreScan`]) wherever the rows are: in
/// `conn`, or in the D1 database whose schema `conn` mirrors.
#[allow(clippy::type_complexity)]
pub(crate) fn discover_tables(
    conn: &Connection,
    address: &str,
    selection: &Selection,
    tables: &mut HashMap<String, TableInfo>,
    pre_scan: &mut dyn FnMut(&TableInfo, Option<&str>) -> Result<(Option<u64>, Vec<Classes>)>,
) -> Result<Vec<StreamPlan>> {
    let all = list_tables(conn, address)?;
    let pairs: Vec<(String, String)> = all.iter().map(|t| (format!("main.{t}"), t.clone())).collect();
    let unmatched = selection.unmatched(&pairs);
    if !unmatched.is_empty() {
        return Err(Error::usage(format!(
            "{}: no table named {} (tables: {})",
            address,
            unmatched.join(", "),
            all.join(", ")
        )));
    }
    let mut infos = Vec::new();
    for t in &all {
        if selection.includes(&format!("main.{t}"), t) {
            infos.push(describe(conn, t, address)?);
        }
    }
    let (order, cycle) = fk_order(&infos);
    if !cycle.is_empty() {
        tracing::warn!(
            tables = %cycle.join(", "),
            "foreign keys form a cycle: these tables are exported in name order; targets load them with constraints deferred"
        );
    }
    let mut plans = Vec::with_capacity(infos.len());
    for i in order {
        let t = &infos[i];
        let stream = format!("main.{}", t.name);
        let filter = selection.filter_for(&stream, &t.name).map(str::to_owned);
        let (rows, classes) = pre_scan(t, filter.as_deref())?;
        let parts = t.sql.as_deref().map(table_sql_parts).unwrap_or_default();
        let mut props = Map::new();
        for (c, cls) in t.stored_columns().zip(classes) {
            let nullable = !c.notnull && !(c.pk > 0 && (t.without_rowid || t.pk_is_rowid()));
            let collate = parts
                .collations
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(&c.name))
                .map(|(_, k)| k.as_str());
            let mut prop = Json::Object(column_property(c, cls, t.strict, nullable, collate));
            if parts.json_checked(&c.name)
                && value::Codec::from_property(&prop) == value::Codec::Text
                && let Some(p) = prop.as_object_mut()
            {
                p.insert("contentMediaType".into(), Json::from(value::JSON_MEDIA_TYPE));
            }
            props.insert(c.name.clone(), prop);
        }
        let generated: Vec<&str> = t
            .columns
            .iter()
            .filter(|c| c.generated())
            .map(|c| c.name.as_str())
            .collect();
        if !generated.is_empty() {
            tracing::info!(stream = %stream, columns = %generated.join(", "), "generated columns are not exported (the target computes them)");
        }
        let (_, tie) = scan_order(t);
        let resumable = !t.pk.is_empty() || tie.is_some();
        let schema = Schema {
            stream: stream.clone(),
            schema: ObjectSchema {
                properties: props,
                ..Default::default()
            },
            key_properties: t.pk.clone(),
            source_stream: None,
            table: Some(TableRef {
                schema: Some("main".into()),
                name: t.name.clone(),
            }),
            foreign_keys: t.foreign_keys.clone(),
            unique: t.unique.clone(),
            indexes: t.indexes.clone(),
            row_estimate: rows,
            byte_estimate: None,
            changes: false,
            sqlite: Some(SqliteTable {
                sql: t.sql.clone(),
                strict: t.strict,
                without_rowid: t.without_rowid,
                autoincrement: parts.autoincrement,
                checks: parts.checks,
                sequence: t.sequence,
            }),
            extra: Map::new(),
        };
        tables.insert(stream, t.clone());
        plans.push(StreamPlan {
            schema,
            filter,
            resumable,
        });
    }
    Ok(plans)
}

/// `WHERE` condition selecting rows strictly after a bookmark, in scan order, NULL-aware, with
/// the values to bind to its `?`s.
pub(super) fn after_condition(
    t: &TableInfo,
    shape: &RowShape,
    key: &[String],
    tie: Option<&'static str>,
    b: &Bookmark,
) -> Result<(String, Vec<Value>), String> {
    let position = bookmark_position(t, shape, key, tie, b)?;
    let mut binds = Vec::new();
    let cond = after_position(&position, &mut |v| {
        binds.push(v.clone());
        "?".to_owned()
    });
    Ok((cond, binds))
}

/// A bookmark as a scan position: each ORDER BY expression (quoted key columns, then the rowid
/// when it breaks ties) with its value.
pub(crate) fn bookmark_position(
    t: &TableInfo,
    shape: &RowShape,
    key: &[String],
    tie: Option<&'static str>,
    b: &Bookmark,
) -> Result<Vec<(String, Value)>, String> {
    let mut cols: Vec<(String, Value)> = Vec::new();
    for k in key {
        let i = shape
            .column_index(k)
            .ok_or_else(|| format!("key column {k} is not exported"))?;
        let v = b
            .after
            .as_ref()
            .and_then(|a| a.get(k))
            .ok_or_else(|| format!("the bookmark has no value for key column {k}"))?;
        cols.push((quote(k), value::decode_json(v, shape.columns[i].codec)?));
    }
    if let Some(r) = tie {
        let id = b.rowid.ok_or("the bookmark has no rowid")?;
        cols.push((r.to_owned(), Value::Integer(id)));
    }
    if cols.is_empty() {
        return Err(format!("table {} has no key or rowid to resume by", t.name));
    }
    Ok(cols)
}

/// The condition for rows strictly after `position` in its order; `render` writes a value into
/// the SQL (a `?` it will bind, or a literal).
pub(crate) fn after_position(position: &[(String, Value)], render: &mut dyn FnMut(&Value) -> String) -> String {
    // (c1 > v1) OR (c1 = v1 AND c2 > v2) OR ...; NULL sorts first and compares with IS.
    let mut ors = Vec::new();
    for i in 0..position.len() {
        let mut ands = Vec::new();
        for (c, v) in &position[..i] {
            if *v == Value::Null {
                ands.push(format!("{c} IS NULL"));
            } else {
                ands.push(format!("{c} = {}", render(v)));
            }
        }
        let (c, v) = &position[i];
        if *v == Value::Null {
            ands.push(format!("{c} IS NOT NULL"));
        } else {
            ands.push(format!("{c} > {}", render(v)));
        }
        ors.push(format!("({})", ands.join(" AND ")));
    }
    format!("({})", ors.join(" OR "))
}
