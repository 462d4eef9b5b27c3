//! SQLite, as a source and as a target.
//!
//! Source: one read transaction covers the whole export (a consistent snapshot). Each table is
//! scanned once first to learn which storage classes its columns really hold (so the SCHEMA tells
//! the truth about dynamic columns, and gives an exact row count), then read in key order by a
//! single streaming statement: primary key order (plus rowid as a tie-break where the key may hold
//! NULLs), or rowid order for a table without a key.
//!
//! Target: rows go in through prepared multi-row INSERTs inside one transaction per STATE; the
//! commit markers (`_ferry_commits`) are written in the same transaction, so what is in the table
//! and what the marker says can never disagree. Foreign keys are not enforced while loading (the
//! validator checks them after); secondary indexes are built once a stream is complete.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use rusqlite::types::{ToSqlOutput, ValueRef as SqlRef};
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params};
use serde_json::{Map, Value as Json, json};

use super::{
    LoadOptions, Marker, OnConflict, PlanCounts, Prepared, Reject, Report, RowAccess, RowBatch, Selection, Source,
    StreamPlan, Target, table_name_for,
};
use crate::connect::sql::{conflict_clause, key_condition, quote};
use crate::error::{Context, Error, ErrorKind, Result};
use crate::protocol::{
    Bookmark, ForeignKey, Index, ObjectSchema, References, Schema, SourceInfo, SqliteTable, TableRef, Unique,
    now_rfc3339,
};
use crate::row::RowShape;
use crate::value::{self, Codec, Value, ValueRef};

/// The table in a target that holds ferry's commit markers.
pub const MARKER_TABLE: &str = "_ferry_commits";

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => SqlRef::Null,
            Value::Integer(i) => SqlRef::Integer(*i),
            Value::Real(f) => SqlRef::Real(*f),
            Value::Text(t) => SqlRef::Text(t),
            Value::Blob(b) => SqlRef::Blob(b),
        }))
    }
}

pub fn from_sql(v: SqlRef<'_>) -> ValueRef<'_> {
    match v {
        SqlRef::Null => ValueRef::Null,
        SqlRef::Integer(i) => ValueRef::Integer(i),
        SqlRef::Real(f) => ValueRef::Real(f),
        SqlRef::Text(t) => ValueRef::Text(t),
        SqlRef::Blob(b) => ValueRef::Blob(b),
    }
}

/// The first `n` columns of a result row, owned.
pub(crate) fn row_values(r: &rusqlite::Row<'_>, n: usize) -> rusqlite::Result<Vec<Value>> {
    (0..n).map(|i| Ok(from_sql(r.get_ref(i)?).to_owned())).collect()
}

/// Whether the database has a table of that name.
pub(crate) fn table_exists(conn: &Connection, table: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = ?1",
        [table],
        |r| r.get(0),
    )
}

// ---------------------------------------------------------------------------------------------
// Introspection

/// SQLite's type affinity of a declared type (datatype3.html, section 3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Affinity {
    Integer,
    Text,
    Blob,
    Real,
    Numeric,
}

pub fn affinity(declared: &str) -> Affinity {
    let t = declared.to_ascii_uppercase();
    if t.contains("INT") {
        Affinity::Integer
    } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
        Affinity::Text
    } else if t.contains("BLOB") || t.trim().is_empty() {
        Affinity::Blob
    } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
        Affinity::Real
    } else {
        Affinity::Numeric
    }
}

#[derive(Debug, Clone)]
pub struct ColumnInfo {
    pub name: String,
    pub decl_type: String,
    pub notnull: bool,
    pub default: Option<String>,
    /// 1-based position in the primary key, 0 if not part of it.
    pub pk: i64,
    /// 0 normal; 2 or 3 generated (virtual / stored).
    pub hidden: i64,
}

impl ColumnInfo {
    pub fn generated(&self) -> bool {
        self.hidden == 2 || self.hidden == 3
    }
}

#[derive(Debug, Clone)]
pub struct TableInfo {
    pub name: String,
    pub without_rowid: bool,
    pub strict: bool,
    pub sql: Option<String>,
    pub columns: Vec<ColumnInfo>,
    pub pk: Vec<String>,
    pub foreign_keys: Vec<ForeignKey>,
    pub unique: Vec<Unique>,
    pub indexes: Vec<Index>,
    pub sequence: Option<i64>,
    /// A name by which the rowid can be selected (`rowid`, `oid` or `_rowid_` unless shadowed).
    pub rowid_name: Option<&'static str>,
}

impl TableInfo {
    /// Columns that hold data a row can be inserted with (generated columns are left out).
    pub fn stored_columns(&self) -> impl Iterator<Item = &ColumnInfo> {
        self.columns.iter().filter(|c| !c.generated())
    }

    /// Whether the primary key is the rowid itself (a single `INTEGER PRIMARY KEY`).
    pub fn pk_is_rowid(&self) -> bool {
        !self.without_rowid
            && self.pk.len() == 1
            && self
                .columns
                .iter()
                .any(|c| c.pk == 1 && c.decl_type.eq_ignore_ascii_case("INTEGER"))
    }

    /// Key columns that may hold NULL (SQLite allows NULL in a non-integer key of a rowid table).
    pub(crate) fn pk_nullable(&self) -> bool {
        !self.without_rowid && !self.pk_is_rowid() && self.columns.iter().any(|c| c.pk > 0 && !c.notnull)
    }
}

fn sql_err(what: impl Into<String>) -> impl FnOnce() -> String {
    let what = what.into();
    move || what
}

/// Tables of the main database, in name order, without SQLite's own, ferry's, and virtual tables
/// (and their shadow tables).
pub fn list_tables(conn: &Connection, address: &str) -> Result<Vec<String>> {
    let mut st = conn
        .prepare("SELECT name, type FROM pragma_table_list WHERE schema = 'main' ORDER BY name")
        .ctx(ErrorKind::Source, sql_err(format!("{address}: listing tables")))?;
    let rows = st
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
        .ctx(
            ErrorKind::Source,
            sql_err(format!("{address}: listing tables (is it a SQLite database?)")),
        )?;
    Ok(rows
        .into_iter()
        .filter(|(name, kind)| kind == "table" && !name.starts_with("sqlite_") && !name.starts_with("_ferry_"))
        .map(|(name, _)| name)
        .collect())
}

pub fn describe(conn: &Connection, table: &str, address: &str) -> Result<TableInfo> {
    let e = |what: &str| sql_err(format!("{address}: reading the definition of table {table} ({what})"));
    let (without_rowid, strict): (bool, bool) = conn
        .query_row(
            "SELECT wr, strict FROM pragma_table_list WHERE schema = 'main' AND name = ?1",
            [table],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .ctx(ErrorKind::Source, e("table list"))?
        .ok_or_else(|| Error::new(ErrorKind::Source, format!("{address}: there is no table {table}")))?;
    let sql: Option<String> = conn
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?1",
            [table],
            |r| r.get(0),
        )
        .optional()
        .ctx(ErrorKind::Source, e("schema"))?
        .flatten();
    let mut st = conn
        .prepare("SELECT name, type, \"notnull\", dflt_value, pk, hidden FROM pragma_table_xinfo(?1) ORDER BY cid")
        .ctx(ErrorKind::Source, e("columns"))?;
    let columns = st
        .query_map([table], |r| {
            Ok(ColumnInfo {
                name: r.get(0)?,
                decl_type: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                notnull: r.get(2)?,
                default: r.get(3)?,
                pk: r.get(4)?,
                hidden: r.get(5)?,
            })
        })
        .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
        .ctx(ErrorKind::Source, e("columns"))?;
    let mut pk: Vec<&ColumnInfo> = columns.iter().filter(|c| c.pk > 0).collect();
    pk.sort_by_key(|c| c.pk);
    let pk: Vec<String> = pk.into_iter().map(|c| c.name.clone()).collect();

    // Foreign keys: rows grouped by id, ordered by seq.
    let mut st = conn
        .prepare("SELECT id, seq, \"table\", \"from\", \"to\", on_update, on_delete FROM pragma_foreign_key_list(?1) ORDER BY id, seq")
        .ctx(ErrorKind::Source, e("foreign keys"))?;
    #[allow(clippy::type_complexity)]
    let fk_rows: Vec<(i64, String, String, Option<String>, String, String)> = st
        .query_map([table], |r| {
            Ok((r.get(0)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
        })
        .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
        .ctx(ErrorKind::Source, e("foreign keys"))?;
    let mut fks: BTreeMap<i64, ForeignKey> = BTreeMap::new();
    let mut to_missing: BTreeSet<i64> = BTreeSet::new();
    for (id, parent, from, to, on_update, on_delete) in fk_rows {
        let fk = fks.entry(id).or_insert_with(|| ForeignKey {
            name: None,
            columns: vec![],
            references: References {
                stream: format!("main.{parent}"),
                columns: vec![],
            },
            on_delete: action(&on_delete),
            on_update: action(&on_update),
            deferrable: false,
        });
        fk.columns.push(from);
        match to {
            Some(t) => fk.references.columns.push(t),
            None => {
                to_missing.insert(id);
            }
        }
    }
    for id in to_missing {
        // `REFERENCES parent` with no columns means the parent's primary key.
        if let Some(fk) = fks.get_mut(&id) {
            let parent = table_name_for(&fk.references.stream).to_owned();
            let mut st = conn
                .prepare("SELECT name FROM pragma_table_info(?1) WHERE pk > 0 ORDER BY pk")
                .ctx(ErrorKind::Source, e("foreign key parent"))?;
            fk.references.columns = st
                .query_map([&parent], |r| r.get(0))
                .and_then(|it| it.collect::<rusqlite::Result<Vec<String>>>())
                .ctx(ErrorKind::Source, e("foreign key parent"))?;
        }
    }

    // Unique constraints and secondary indexes.
    let mut st = conn
        .prepare("SELECT name, \"unique\", origin, partial FROM pragma_index_list(?1) ORDER BY name")
        .ctx(ErrorKind::Source, e("indexes"))?;
    let index_rows: Vec<(String, bool, String, bool)> = st
        .query_map([table], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
        .ctx(ErrorKind::Source, e("indexes"))?;
    let mut unique = Vec::new();
    let mut indexes = Vec::new();
    for (name, is_unique, origin, partial) in index_rows {
        let mut st = conn
            .prepare("SELECT name FROM pragma_index_xinfo(?1) WHERE key = 1 ORDER BY seqno")
            .ctx(ErrorKind::Source, e("index columns"))?;
        let cols: Vec<Option<String>> = st
            .query_map([&name], |r| r.get(0))
            .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
            .ctx(ErrorKind::Source, e("index columns"))?;
        let on_expressions = cols.iter().any(Option::is_none);
        let cols: Vec<String> = cols.into_iter().flatten().collect();
        match origin.as_str() {
            "u" => unique.push(Unique {
                name: None,
                columns: cols,
            }),
            "c" => {
                let sql: Option<String> = conn
                    .query_row(
                        "SELECT sql FROM sqlite_schema WHERE type = 'index' AND name = ?1",
                        [&name],
                        |r| r.get(0),
                    )
                    .optional()
                    .ctx(ErrorKind::Source, e("index sql"))?
                    .flatten();
                let where_sql = if partial {
                    sql.as_deref().and_then(partial_condition)
                } else {
                    None
                };
                indexes.push(Index {
                    name,
                    columns: if on_expressions { vec![] } else { cols },
                    unique: is_unique,
                    where_sql,
                    sql,
                });
            }
            _ => {} // "pk": the primary key itself
        }
    }
    let sequence: Option<i64> = {
        let has_seq: bool = conn
            .query_row(
                "SELECT count(*) > 0 FROM sqlite_schema WHERE name = 'sqlite_sequence'",
                [],
                |r| r.get(0),
            )
            .ctx(ErrorKind::Source, e("sequence"))?;
        if has_seq {
            conn.query_row("SELECT seq FROM sqlite_sequence WHERE name = ?1", [table], |r| r.get(0))
                .optional()
                .ctx(ErrorKind::Source, e("sequence"))?
        } else {
            None
        }
    };
    let rowid_name = if without_rowid {
        None
    } else {
        ["rowid", "oid", "_rowid_"]
            .into_iter()
            .find(|n| !columns.iter().any(|c| c.name.eq_ignore_ascii_case(n)))
    };
    Ok(TableInfo {
        name: table.to_owned(),
        without_rowid,
        strict,
        sql,
        columns,
        pk,
        foreign_keys: fks.into_values().collect(),
        unique,
        indexes,
        sequence,
        rowid_name,
    })
}

fn action(a: &str) -> Option<String> {
    let a = a.trim().to_ascii_uppercase();
    (!a.is_empty() && a != "NO ACTION").then_some(a)
}

/// The bytes of some SQL text that are outside string literals, quoted names and comments, each
/// with its index and the parenthesis depth it stands at (a `)` is at the depth of its `(`).
struct SqlBytes<'a> {
    b: &'a [u8],
    i: usize,
    depth: i32,
}

fn sql_bytes(sql: &str) -> SqlBytes<'_> {
    SqlBytes {
        b: sql.as_bytes(),
        i: 0,
        depth: 0,
    }
}

impl Iterator for SqlBytes<'_> {
    type Item = (usize, u8, i32);

    fn next(&mut self) -> Option<(usize, u8, i32)> {
        let b = self.b;
        while self.i < b.len() {
            let (i, c) = (self.i, b[self.i]);
            // Where the quoted or commented span ends (exclusive), if one starts here.
            let skip_to = match c {
                b'\'' | b'"' | b'`' => {
                    let mut j = i + 1;
                    // A doubled quote is the quote character itself.
                    while j < b.len() && (b[j] != c || b.get(j + 1) == Some(&c)) {
                        j += if b[j] == c { 2 } else { 1 };
                    }
                    Some(j + 1)
                }
                b'[' => Some(b[i..].iter().position(|&x| x == b']').map_or(b.len(), |p| i + p + 1)),
                b'-' if b.get(i + 1) == Some(&b'-') => {
                    Some(b[i..].iter().position(|&x| x == b'\n').map_or(b.len(), |p| i + p + 1))
                }
                b'/' if b.get(i + 1) == Some(&b'*') => Some(
                    b[i + 2..]
                        .windows(2)
                        .position(|w| w == b"*/")
                        .map_or(b.len(), |p| i + 2 + p + 2),
                ),
                _ => None,
            };
            if let Some(j) = skip_to {
                self.i = j.min(b.len());
                continue;
            }
            self.i += 1;
            let depth = match c {
                b'(' => {
                    self.depth += 1;
                    self.depth - 1
                }
                b')' => {
                    self.depth -= 1;
                    self.depth
                }
                _ => self.depth,
            };
            return Some((i, c, depth));
        }
        None
    }
}

/// Positions in `s` where the keyword `kw` (upper case) stands as a word, outside strings and
/// parentheses.
fn keyword_at(s: &str, kw: &str) -> Vec<usize> {
    let b = s.as_bytes();
    let word = |c: &u8| c.is_ascii_alphanumeric() || *c == b'_';
    sql_bytes(s)
        .filter(|&(i, c, depth)| {
            depth == 0
                && c.eq_ignore_ascii_case(&kw.as_bytes()[0])
                && b.get(i..i + kw.len())
                    .is_some_and(|w| w.eq_ignore_ascii_case(kw.as_bytes()))
                && (i == 0 || !word(&b[i - 1]))
                && b.get(i + kw.len()).is_none_or(|c| !word(c))
        })
        .map(|(i, _, _)| i)
        .collect()
}

/// The balanced parenthesised text starting at the first `(` of `s`, without the parentheses.
fn parenthesised(s: &str) -> Option<&str> {
    let mut open = None;
    for (i, c, depth) in sql_bytes(s) {
        match (c, depth, open) {
            (b'(', 0, None) => open = Some(i),
            (b')', 0, Some(o)) => return Some(s[o + 1..i].trim()),
            _ => {}
        }
    }
    None
}

/// The condition of a partial index, from its statement: the text after the last top-level WHERE.
fn partial_condition(sql: &str) -> Option<String> {
    keyword_at(sql, "WHERE")
        .last()
        .map(|&i| sql[i + "WHERE".len()..].trim().to_owned())
}

/// What a `CREATE TABLE` statement says that the PRAGMAs do not: CHECK constraints, AUTOINCREMENT,
/// and each column's collation.
#[derive(Debug, Default, PartialEq)]
pub struct TableSqlParts {
    pub checks: Vec<String>,
    pub autoincrement: bool,
    pub collations: Vec<(String, String)>,
}

/// The column definitions and table constraints of a `CREATE TABLE` (its top-level list).
fn column_list_pieces(sql: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = None;
    for (i, c, depth) in sql_bytes(sql) {
        match (c, depth, start) {
            (b'(', 0, None) => start = Some(i + 1),
            (b',', 1, Some(s)) => {
                pieces.push(&sql[s..i]);
                start = Some(i + 1);
            }
            (b')', 0, Some(s)) => {
                pieces.push(&sql[s..i]);
                break;
            }
            _ => {}
        }
    }
    pieces
}

/// The word at the start of `s` (an identifier, possibly quoted, after any comments), unquoted,
/// and the rest.
fn first_word(s: &str) -> (String, &str) {
    let mut s = s.trim_start();
    while let Some(rest) = s.strip_prefix("--").or_else(|| s.strip_prefix("/*")) {
        let end = if s.starts_with("--") {
            rest.find('\n').map(|p| p + 1)
        } else {
            rest.find("*/").map(|p| p + 2)
        };
        s = rest[end.unwrap_or(rest.len())..].trim_start();
    }
    if s.starts_with(['"', '`', '[']) {
        return quoted_word(s);
    }
    let end = s
        .find(|ch: char| !(ch.is_alphanumeric() || ch == '_' || ch == '$'))
        .unwrap_or(s.len());
    (s[..end].to_owned(), &s[end..])
}

/// A quoted identifier at the start of `s` ("x", `x`, [x]), unquoted, and the rest.
fn quoted_word(s: &str) -> (String, &str) {
    let (open, close) = match s.as_bytes().first() {
        Some(b'"') => ('"', '"'),
        Some(b'`') => ('`', '`'),
        Some(b'[') => ('[', ']'),
        _ => return (String::new(), s),
    };
    let body = &s[open.len_utf8()..];
    let mut out = String::new();
    let mut chars = body.char_indices().peekable();
    while let Some((i, ch)) = chars.next() {
        if ch == close {
            if close != ']' && chars.peek().map(|(_, n)| *n) == Some(close) {
                out.push(close);
                chars.next();
                continue;
            }
            return (out, &body[i + 1..]);
        }
        out.push(ch);
    }
    (out, "")
}

/// The CHECK constraints, AUTOINCREMENT and collations of a `CREATE TABLE` statement.
pub fn table_sql_parts(sql: &str) -> TableSqlParts {
    let mut parts = TableSqlParts::default();
    for piece in column_list_pieces(sql) {
        let (word, rest) = first_word(piece);
        let table_constraint = ["CONSTRAINT", "PRIMARY", "UNIQUE", "CHECK", "FOREIGN"]
            .iter()
            .any(|k| word.eq_ignore_ascii_case(k));
        for at in keyword_at(piece, "CHECK") {
            if let Some(expr) = parenthesised(&piece[at..]) {
                parts.checks.push(expr.to_owned());
            }
        }
        if table_constraint {
            continue;
        }
        if !keyword_at(rest, "AUTOINCREMENT").is_empty() {
            parts.autoincrement = true;
        }
        if let Some(&at) = keyword_at(rest, "COLLATE").first() {
            let (coll, _) = first_word(&rest[at + "COLLATE".len()..]);
            if !coll.is_empty() && !coll.eq_ignore_ascii_case("BINARY") {
                parts.collations.push((word.clone(), coll));
            }
        }
    }
    parts
}

/// Storage classes present in one column, from the pre-scan.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Classes {
    integer: bool,
    real: bool,
    text: bool,
    blob: bool,
}

/// JSON Schema property for a column, from its declaration and the classes it holds.
fn column_property(
    col: &ColumnInfo,
    classes: Classes,
    strict: bool,
    nullable: bool,
    collate: Option<&str>,
) -> Map<String, Json> {
    let mut types: Vec<&str> = Vec::new();
    let mut dynamic = false;
    let mut base64 = false;
    let present = [classes.integer, classes.real, classes.text, classes.blob];
    match present {
        [false, false, false, false] => {
            // No values to look at: go by the declaration.
            let any = strict && col.decl_type.eq_ignore_ascii_case("ANY");
            match affinity(&col.decl_type) {
                _ if any => dynamic = true,
                Affinity::Integer => types.push("integer"),
                // Names that hold text although their affinity is NUMERIC (dates, UUIDs, JSON...).
                Affinity::Numeric if textual_name(&col.decl_type) => types.push("string"),
                Affinity::Numeric if boolean_name(&col.decl_type) => types.push("integer"),
                Affinity::Real | Affinity::Numeric => types.push("number"),
                Affinity::Text => types.push("string"),
                Affinity::Blob if col.decl_type.trim().is_empty() => dynamic = true,
                Affinity::Blob => {
                    types.push("string");
                    base64 = true;
                }
            }
        }
        [true, false, false, false] => types.push("integer"),
        [_, true, false, false] => types.push("number"),
        [false, false, true, false] => types.push("string"),
        [false, false, false, true] => {
            types.push("string");
            base64 = true;
        }
        _ => {
            dynamic = true;
            if classes.integer {
                types.push("integer");
            }
            if classes.real {
                types.push("number");
            }
            if classes.text || classes.blob {
                types.push("string");
            }
        }
    }
    let mut p = Map::new();
    if nullable {
        types.push("null");
    }
    if !types.is_empty() {
        p.insert(
            "type".into(),
            if types.len() == 1 {
                json!(types[0])
            } else {
                json!(types)
            },
        );
    }
    if base64 {
        p.insert("contentEncoding".into(), json!("base64"));
    }
    if !col.decl_type.is_empty() {
        p.insert("x-sql-type".into(), json!(col.decl_type));
    }
    if dynamic {
        p.insert("x-sqlite-dynamic".into(), json!(true));
    }
    if let Some(d) = &col.default {
        p.insert("x-sqlite-default".into(), json!(d));
    }
    if let Some(c) = collate {
        p.insert("x-sqlite-collate".into(), json!(c));
    }
    p
}

/// Declared types whose values are text though SQLite gives them NUMERIC affinity.
fn textual_name(decl: &str) -> bool {
    let d = decl.trim().to_ascii_uppercase();
    let first = d.split(['(', ' ']).next().unwrap_or("");
    matches!(
        first,
        "DATE"
            | "DATETIME"
            | "TIMESTAMP"
            | "TIMESTAMPTZ"
            | "TIME"
            | "TIMETZ"
            | "UUID"
            | "INTERVAL"
            | "INET"
            | "CIDR"
            | "MACADDR"
            | "MACADDR8"
            | "JSON"
            | "JSONB"
    )
}

fn boolean_name(decl: &str) -> bool {
    matches!(decl.trim().to_ascii_uppercase().as_str(), "BOOL" | "BOOLEAN")
}

/// Order tables so that every table comes after the tables it references. Returns the order and
/// the tables caught in cycles (which keep name order among themselves).
fn fk_order(tables: &[TableInfo]) -> (Vec<usize>, Vec<String>) {
    let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    let refs: Vec<Vec<&str>> = tables
        .iter()
        .map(|t| {
            t.foreign_keys
                .iter()
                .map(|fk| table_name_for(&fk.references.stream))
                .collect()
        })
        .collect();
    super::parents_first(&names, &refs)
}

// ---------------------------------------------------------------------------------------------
// Source

pub struct SqliteSource {
    conn: Connection,
    address: String,
    in_snapshot: bool,
    /// Per stream: the table definition found by discover.
    tables: HashMap<String, TableInfo>,
}

impl SqliteSource {
    pub fn open(path: &Path) -> Result<SqliteSource> {
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
                let flags = (0..q.columns * 4)
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
    /// One row of 0/1 flags, four per column (integer, real, text, blob); None without columns.
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
        for (i, q) in cols.iter().enumerate() {
            for (k, class) in ["integer", "real", "text", "blob"].iter().enumerate() {
                if i + k > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("coalesce(max(typeof({q}) = '{class}'), 0)"));
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
            .chunks(4)
            .map(|f| Classes {
                integer: f[0],
                real: f[1],
                text: f[2],
                blob: f[3],
            })
            .collect()
    }
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
        let t = super::discovered(&self.tables, &self.address, stream)?;
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
            props.insert(
                c.name.clone(),
                Json::Object(column_property(c, cls, t.strict, nullable, collate)),
            );
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
fn after_condition(
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

// ---------------------------------------------------------------------------------------------
// Target

struct TargetStream {
    table: String,
    /// `INSERT ... VALUES (...)` for `chunk` rows, and for one row.
    insert_many: String,
    insert_one: String,
    chunk: usize,
    key_lookup: Option<String>,
    /// `SELECT <every column> FROM table WHERE <key> IS ...`: a row's before-image.
    row_lookup: Option<String>,
    /// `SELECT <every column> FROM table WHERE (<key>) IN (VALUES `: many rows' before-images.
    rows_lookup: Option<String>,
}

pub struct SqliteTarget {
    conn: Connection,
    /// One writer at a time (none for a dry run): held until the target is dropped.
    _lock: Option<crate::lock::FileLock>,
    address: String,
    dry_run: bool,
    in_tx: bool,
    streams: HashMap<String, TargetStream>,
}

pub(crate) const MARKER_DDL: &str = "CREATE TABLE IF NOT EXISTS _ferry_commits (
    source      TEXT NOT NULL,
    stream      TEXT NOT NULL,
    run_id      TEXT NOT NULL,
    position    INTEGER,
    complete    INTEGER NOT NULL DEFAULT 0,
    bookmark    TEXT,
    pending_ddl TEXT,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (source, stream)
)";

impl SqliteTarget {
    pub fn open(path: &Path, dry_run: bool) -> Result<SqliteTarget> {
        // Named by its absolute path, as sources are: the state file records it, and a rollback
        // run from another directory must find this database, not one of the same name there.
        let path = &std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let address = format!("sqlite:{}", path.display());
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            return Err(Error::new(
                ErrorKind::Target,
                format!("{address}: directory {} does not exist", dir.display()),
            ));
        }
        let lock = match dry_run {
            true => None,
            false => Some(lock_database(path, &address)?),
        };
        let conn = if dry_run {
            if path.exists() {
                Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            } else {
                Connection::open_in_memory()
            }
        } else {
            Connection::open(path)
        }
        .ctx(ErrorKind::Target, || format!("{address}: cannot open"))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .ctx(ErrorKind::Target, || address.clone())?;
        if !dry_run {
            conn.execute_batch(
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=OFF; PRAGMA cache_size=-16384;",
            )
            .ctx(ErrorKind::Target, || format!("{address}: configuring (is it a SQLite database?)"))?;
        }
        Ok(SqliteTarget {
            conn,
            _lock: lock,
            address,
            dry_run,
            in_tx: false,
            streams: HashMap::new(),
        })
    }

    fn begin(&mut self) -> Result<()> {
        if !self.in_tx && !self.dry_run {
            self.conn.execute_batch("BEGIN IMMEDIATE").ctx(ErrorKind::Target, || {
                format!("{}: starting a transaction", self.address)
            })?;
            self.in_tx = true;
        }
        Ok(())
    }

    fn table_exists(&self, table: &str) -> Result<bool> {
        table_exists(&self.conn, table).ctx(ErrorKind::Target, || {
            format!("{}: looking up table {table}", self.address)
        })
    }

    fn target_err(&self, stream: &str, what: &str) -> impl FnOnce() -> String {
        let m = format!("{}: stream {stream}: {what}", self.address);
        move || m
    }

    /// Execute one insert; a constraint failure is returned as `Ok(Err(message))`.
    fn exec_insert(&self, sql: &str, rows: &[Value]) -> Result<Result<usize, (String, bool)>> {
        let mut st = self
            .conn
            .prepare_cached(sql)
            .ctx(ErrorKind::Target, || format!("{}: preparing {sql}", self.address))?;
        for (i, v) in rows.iter().enumerate() {
            st.raw_bind_parameter(i + 1, v)
                .ctx(ErrorKind::Target, || format!("{}: binding a value", self.address))?;
        }
        match st.raw_execute() {
            Ok(n) => Ok(Ok(n)),
            Err(rusqlite::Error::SqliteFailure(f, msg)) if f.code == ErrorCode::ConstraintViolation => {
                // 1555 PRIMARYKEY, 2579 ROWID, 2067 UNIQUE: a uniqueness failure (maybe the key).
                let unique = matches!(f.extended_code, 1555 | 2579 | 2067);
                Ok(Err((msg.unwrap_or_else(|| f.to_string()), unique)))
            }
            Err(e) => Err(Error::new(ErrorKind::Target, format!("{}: writing rows", self.address)).with_source(e)),
        }
    }

    fn key_exists(&self, lookup: &str, shape: &RowShape, row: &[Value]) -> Result<bool> {
        let mut st = self
            .conn
            .prepare_cached(lookup)
            .ctx(ErrorKind::Target, || format!("{}: {lookup}", self.address))?;
        let keys: Vec<&Value> = shape.key.iter().map(|&i| &row[i]).collect();
        st.exists(rusqlite::params_from_iter(keys))
            .ctx(ErrorKind::Target, || format!("{}: {lookup}", self.address))
    }
}

/// Take the lock that lets one ferry process at a time write the database at `path` (`what`:
/// its address, for the message the second comer gets).
pub(crate) fn lock_database(path: &Path, what: &str) -> Result<crate::lock::FileLock> {
    crate::lock::FileLock::acquire(
        &crate::lock::sqlite_lock_path(path),
        what,
        &crate::lock::Holder::this_process(),
    )
}

/// A column's declared type when the SCHEMA gives none from SQLite.
fn sqlite_type_for(prop: &Json) -> String {
    if let Some(t) = prop.get("x-sql-type").and_then(Json::as_str) {
        return t.to_owned();
    }
    match Codec::from_property(prop) {
        Codec::Integer => "INTEGER",
        Codec::Number => "REAL",
        Codec::Text => "TEXT",
        Codec::Bytes(_) => "BLOB",
        Codec::Boolean => "BOOLEAN",
        Codec::Json => "TEXT",
        Codec::Any => "",
    }
    .to_owned()
}

/// `CREATE TABLE` for a stream, from its SCHEMA.
pub fn create_table_sql(schema: &Schema, table: &str) -> String {
    let sq = schema.sqlite.clone().unwrap_or_default();
    // Same name as at the source and no transform touched it: the source's own statement.
    if let (Some(sql), Some(t)) = (&sq.sql, &schema.table)
        && t.name == table
    {
        return sql.clone();
    }
    let mut parts = Vec::new();
    // AUTOINCREMENT can only be said inline, on a single INTEGER PRIMARY KEY column.
    let inline_key = match schema.key_properties.as_slice() {
        [k] if sq.autoincrement && !sq.without_rowid => Some(k.as_str()),
        _ => None,
    };
    for (name, prop) in &schema.schema.properties {
        let mut col = quote(name);
        let ty = sqlite_type_for(prop);
        if inline_key == Some(name.as_str()) {
            col.push_str(" INTEGER PRIMARY KEY AUTOINCREMENT");
        } else if !ty.is_empty() {
            col.push(' ');
            col.push_str(&ty);
        }
        if !value::property_nullable(prop) {
            col.push_str(" NOT NULL");
        }
        if let Some(d) = prop.get("x-sqlite-default").and_then(Json::as_str) {
            col.push_str(&format!(" DEFAULT ({d})"));
        }
        if let Some(c) = prop.get("x-sqlite-collate").and_then(Json::as_str) {
            col.push_str(&format!(" COLLATE {}", quote(c)));
        }
        parts.push(col);
    }
    let list = |cols: &[String]| cols.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ");
    if !schema.key_properties.is_empty() && inline_key.is_none() {
        parts.push(format!("PRIMARY KEY ({})", list(&schema.key_properties)));
    }
    for u in &schema.unique {
        parts.push(format!("UNIQUE ({})", list(&u.columns)));
    }
    for fk in &schema.foreign_keys {
        let mut c = format!(
            "FOREIGN KEY ({}) REFERENCES {} ({})",
            list(&fk.columns),
            quote(table_name_for(&fk.references.stream)),
            list(&fk.references.columns)
        );
        if let Some(a) = &fk.on_delete {
            c.push_str(&format!(" ON DELETE {a}"));
        }
        if let Some(a) = &fk.on_update {
            c.push_str(&format!(" ON UPDATE {a}"));
        }
        if fk.deferrable {
            c.push_str(" DEFERRABLE INITIALLY DEFERRED");
        }
        parts.push(c);
    }
    for check in &sq.checks {
        parts.push(format!("CHECK ({check})"));
    }
    let mut sql = format!("CREATE TABLE {} (\n  {}\n)", quote(table), parts.join(",\n  "));
    let mut options = Vec::new();
    if sq.without_rowid && !schema.key_properties.is_empty() {
        options.push("WITHOUT ROWID");
    }
    let strict_types = ["INT", "INTEGER", "REAL", "TEXT", "BLOB", "ANY"];
    if sq.strict
        && schema
            .schema
            .properties
            .values()
            .all(|p| strict_types.iter().any(|t| sqlite_type_for(p).eq_ignore_ascii_case(t)))
    {
        options.push("STRICT");
    }
    if !options.is_empty() {
        sql.push(' ');
        sql.push_str(&options.join(", "));
    }
    sql
}

/// `CREATE INDEX IF NOT EXISTS` statements for a stream's secondary indexes.
pub fn index_sql(schema: &Schema, table: &str) -> Vec<String> {
    let same_table = schema.table.as_ref().is_some_and(|t| t.name == table)
        && schema.sqlite.as_ref().is_some_and(|s| s.sql.is_some());
    let mut out = Vec::new();
    for ix in &schema.indexes {
        if same_table && let Some(sql) = &ix.sql {
            let upper = sql.to_ascii_uppercase();
            for prefix in ["CREATE UNIQUE INDEX ", "CREATE INDEX "] {
                if upper.starts_with(prefix) && !upper[prefix.len()..].trim_start().starts_with("IF NOT EXISTS") {
                    out.push(format!(
                        "{}IF NOT EXISTS {}",
                        &sql[..prefix.len()],
                        &sql[prefix.len()..]
                    ));
                    break;
                } else if upper.starts_with(prefix) {
                    out.push(sql.clone());
                    break;
                }
            }
            continue;
        }
        if ix.columns.is_empty() || ix.columns.iter().any(|c| !schema.schema.properties.contains_key(c)) {
            tracing::warn!(stream = %schema.stream, index = %ix.name, "index on expressions or on columns the stream no longer has: not created");
            continue;
        }
        let mut s = format!(
            "CREATE {}INDEX IF NOT EXISTS {} ON {} ({})",
            if ix.unique { "UNIQUE " } else { "" },
            quote(&ix.name),
            quote(table),
            ix.columns.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ")
        );
        if let Some(w) = &ix.where_sql {
            s.push_str(&format!(" WHERE {w}"));
        }
        out.push(s);
    }
    out
}

impl Target for SqliteTarget {
    fn address(&self) -> String {
        self.address.clone()
    }

    fn markers(&mut self, source: &str) -> Result<HashMap<String, Marker>> {
        if !self.table_exists(MARKER_TABLE)? {
            return Ok(HashMap::new());
        }
        let mut st = self
            .conn
            .prepare("SELECT stream, run_id, position, complete, bookmark FROM _ferry_commits WHERE source = ?1")
            .ctx(ErrorKind::Target, || {
                format!("{}: reading commit markers", self.address)
            })?;
        let rows = st
            .query_map([source], |r| {
                Ok(Marker {
                    source: source.to_owned(),
                    stream: r.get(0)?,
                    run_id: r.get(1)?,
                    position: r.get::<_, Option<i64>>(2)?.map(|p| p as u64),
                    complete: r.get(3)?,
                    bookmark: r.get(4)?,
                })
            })
            .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
            .ctx(ErrorKind::Target, || {
                format!("{}: reading commit markers", self.address)
            })?;
        Ok(rows.into_iter().map(|m| (m.stream.clone(), m)).collect())
    }

    fn prepare(&mut self, schema: &Schema, shape: &RowShape, opts: &LoadOptions) -> Result<Prepared> {
        let stream = schema.stream.as_str();
        if super::postgres_types(schema, opts) {
            return Err(Error::usage(format!(
                "stream {stream} carries PostgreSQL types and values; recast it for SQLite first: ... | ferry-transform --dialect sqlite | ferry-import {}",
                self.address
            )));
        }
        let table = table_name_for(stream).to_owned();
        let mut prepared = Prepared {
            table: table.clone(),
            ..Default::default()
        };
        let exists = self.table_exists(&table)?;
        prepared.existed = exists;
        if exists {
            prepared.empty = !self
                .conn
                .query_row(&format!("SELECT EXISTS (SELECT 1 FROM {})", quote(&table)), [], |r| {
                    r.get::<_, bool>(0)
                })
                .ctx(ErrorKind::Target, self.target_err(stream, "looking at the table"))?;
            // A table an unfinished run of the same source made: this run goes on with that
            // load, undone with it, with no row-by-row journal.
            prepared.continued =
                !prepared.empty && !self.dry_run && self.unfinished_by(&opts.source, schema.bookmark_name())?;
            let have: BTreeSet<String> = {
                let mut st = self.conn.prepare("SELECT name FROM pragma_table_info(?1)").ctx(
                    ErrorKind::Target,
                    self.target_err(stream, "reading the table's columns"),
                )?;
                st.query_map([&table], |r| r.get(0))
                    .and_then(|it| it.collect::<rusqlite::Result<_>>())
                    .ctx(
                        ErrorKind::Target,
                        self.target_err(stream, "reading the table's columns"),
                    )?
            };
            let missing: Vec<&str> = shape
                .columns
                .iter()
                .map(|c| c.name.as_str())
                .filter(|c| !have.contains(*c))
                .collect();
            if !missing.is_empty() && opts.create && !self.dry_run {
                // --create makes what is missing: a SCHEMA that gained columns adds them.
                self.begin()?;
                for name in &missing {
                    let prop = &schema.schema.properties[*name];
                    let ty = sqlite_type_for(prop);
                    let ddl = format!("ALTER TABLE {} ADD COLUMN {} {ty}", quote(&table), quote(name));
                    tracing::warn!(stream, table = %table, column = %name, "adding a column the stream has and the table lacks");
                    self.conn.execute_batch(&ddl).ctx(
                        ErrorKind::Target,
                        self.target_err(stream, &format!("adding column {name}")),
                    )?;
                    prepared.created.push(ddl);
                }
            } else if !missing.is_empty() {
                return Err(super::missing_columns(&self.address, &table, stream, &missing));
            }
        } else if !opts.create {
            return Err(super::no_table(&self.address, &table, stream));
        } else {
            let ddl = create_table_sql(schema, &table);
            if !self.dry_run {
                self.begin()?;
                self.conn.execute_batch(&ddl).ctx(
                    ErrorKind::Target,
                    self.target_err(stream, &format!("creating table {table} with:\n{ddl}\n")),
                )?;
                if let Some(seq) = schema.sqlite.as_ref().and_then(|s| s.sequence)
                    && self.table_exists("sqlite_sequence")?
                {
                    self.conn
                        .execute(
                            "INSERT INTO sqlite_sequence (name, seq) SELECT ?1, ?2 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = ?1)",
                            params![table, seq],
                        )
                        .ctx(ErrorKind::Target, self.target_err(stream, "setting the AUTOINCREMENT sequence"))?;
                }
            }
            prepared.created.push(ddl);
            prepared.deferred = index_sql(schema, &table);
            // Recorded even when there is no index to build: a marker with work pending also
            // says that an unfinished run made the table.
            self.set_pending(&opts.source, schema.bookmark_name(), &opts.run_id, &prepared.deferred)?;
        }

        if !self.dry_run || exists {
            let t = describe(&self.conn, &table, &self.address)?;
            prepared.null_key = t.pk_nullable() && t.pk == shape.key_names();
        }
        let cols: Vec<String> = shape.columns.iter().map(|c| quote(&c.name)).collect();
        let keys: Vec<String> = shape.key_names().into_iter().map(quote).collect();
        let conflict = conflict_clause(shape, opts.on_conflict);
        if keys.is_empty() && opts.on_conflict != OnConflict::Fail {
            tracing::warn!(
                stream,
                "the stream has no key: --on-conflict has nothing to match on, rows are appended"
            );
        }
        let ncols = shape.len().max(1);
        let chunk = (32_000 / ncols).clamp(1, 100);
        let placeholders = format!("({})", vec!["?"; shape.len()].join(", "));
        let head = if shape.is_empty() {
            format!("INSERT INTO {} DEFAULT VALUES", quote(&table))
        } else {
            format!("INSERT INTO {} ({}) VALUES ", quote(&table), cols.join(", "))
        };
        let insert_many = if shape.is_empty() {
            head.clone()
        } else {
            format!("{head}{}{conflict}", vec![placeholders.as_str(); chunk].join(", "))
        };
        let insert_one = if shape.is_empty() {
            head.clone()
        } else {
            format!("{head}{placeholders}{conflict}")
        };
        let row_lookup = (!keys.is_empty() && !cols.is_empty()).then(|| {
            format!(
                "SELECT {} FROM {} WHERE {}",
                cols.join(", "),
                quote(&table),
                key_condition(&keys)
            )
        });
        let rows_lookup = (!keys.is_empty() && !cols.is_empty()).then(|| {
            format!(
                "SELECT {} FROM {} WHERE ({}) IN (VALUES ",
                cols.join(", "),
                quote(&table),
                keys.join(", ")
            )
        });
        let key_lookup =
            (!keys.is_empty()).then(|| format!("SELECT 1 FROM {} WHERE {}", quote(&table), key_condition(&keys)));
        if !self.dry_run && !shape.is_empty() {
            // Prepare now so that a mismatch (say, ON CONFLICT with no matching key) fails before any row.
            self.conn.prepare_cached(&insert_one).ctx(
                ErrorKind::Target,
                self.target_err(
                    stream,
                    "preparing the insert (does the table's primary key match the stream's key_properties?)",
                ),
            )?;
        }
        self.streams.insert(
            stream.to_owned(),
            TargetStream {
                table,
                insert_many,
                insert_one,
                chunk,
                key_lookup,
                row_lookup,
                rows_lookup,
            },
        );
        Ok(prepared)
    }

    fn write(&mut self, stream: &str, shape: &RowShape, batch: RowBatch) -> Result<Vec<Report>> {
        let batch = &batch;
        self.begin()?;
        let ts = self
            .streams
            .get(stream)
            .ok_or_else(|| Error::new(ErrorKind::Target, format!("stream {stream} was not prepared")))?;
        let n = batch.ncols;
        let mut report = Report {
            stream: stream.to_owned(),
            ..Default::default()
        };
        let total = batch.len();
        // SQLite stores a NaN as NULL: such rows are refused, never silently changed.
        let nan_row = |r: usize| batch.row(r).iter().any(|v| matches!(v, Value::Real(f) if f.is_nan()));
        let has_nan = batch.values.iter().any(|v| matches!(v, Value::Real(f) if f.is_nan()));
        let mut start = 0;
        while start < total {
            let take = if total - start >= ts.chunk && n > 0 {
                ts.chunk
            } else {
                1
            };
            if has_nan && (start..start + take).any(nan_row) {
                for r in start..start + take {
                    if nan_row(r) {
                        let msg = "a NaN floating-point value, which SQLite cannot store (it would become NULL)";
                        report.rejects.push(Reject::of(shape, batch, r, msg.into()));
                    } else {
                        self.write_one(ts, shape, batch, r, &mut report)?;
                    }
                }
                start += take;
                continue;
            }
            let sql = if take == ts.chunk && take > 1 {
                &ts.insert_many
            } else {
                &ts.insert_one
            };
            let values = &batch.values[start * n..(start + take) * n];
            match self.exec_insert(sql, values)? {
                Ok(changed) => {
                    report.written += changed as u64;
                    report.skipped += (take - changed) as u64;
                }
                Err(_) if take > 1 => {
                    // Find the rows at fault one by one; the failed statement changed nothing.
                    for r in start..start + take {
                        self.write_one(ts, shape, batch, r, &mut report)?;
                    }
                }
                Err(_) => self.write_one(ts, shape, batch, start, &mut report)?,
            }
            start += take;
        }
        Ok(vec![report])
    }

    fn current_rows(
        &mut self,
        stream: &str,
        shape: &RowShape,
        batch: &RowBatch,
    ) -> Result<Option<Vec<Option<Vec<Value>>>>> {
        let Some((lookup, head)) = self
            .streams
            .get(stream)
            .and_then(|t| t.row_lookup.clone().zip(t.rows_lookup.clone()))
        else {
            return Ok(None);
        };
        let address = self.address.clone();
        let e = || format!("{address}: reading a row's before-image");
        let print = |vals: &mut dyn Iterator<Item = &Value>| format!("{:?}", vals.collect::<Vec<_>>());
        let per = (500 / shape.key.len().max(1)).max(1);
        let tuple = format!("({})", vec!["?"; shape.key.len()].join(", "));
        let mut out: Vec<Option<Vec<Value>>> = Vec::with_capacity(batch.len());
        for start in (0..batch.len()).step_by(per) {
            let end = (start + per).min(batch.len());
            let sql = format!("{head}{})", vec![tuple.as_str(); end - start].join(", "));
            let params: Vec<&Value> = (start..end)
                .flat_map(|r| shape.key.iter().map(move |&i| &batch.row(r)[i]))
                .collect();
            let mut found: HashMap<String, Vec<Value>> = HashMap::new();
            {
                let mut st = self.conn.prepare_cached(&sql).ctx(ErrorKind::Target, e)?;
                let mut rows = st.query(rusqlite::params_from_iter(params)).ctx(ErrorKind::Target, e)?;
                while let Some(got) = rows.next().ctx(ErrorKind::Target, e)? {
                    let vals = row_values(got, shape.len()).ctx(ErrorKind::Target, e)?;
                    found.insert(print(&mut shape.key.iter().map(|&i| &vals[i])), vals);
                }
            }
            let printed: Vec<String> = (start..end)
                .map(|r| print(&mut shape.key.iter().map(|&i| &batch.row(r)[i])))
                .collect();
            // A row found under a key spelled otherwise (by the column's affinity or collation),
            // or a null in a key (which IN never matches): those rows are looked up one by one.
            let asked: std::collections::HashSet<&String> = printed.iter().collect();
            let odd = found.keys().any(|k| !asked.contains(k));
            for (r, key) in (start..end).zip(&printed) {
                let row = batch.row(r);
                let has_null = shape.key.iter().any(|&i| matches!(row[i], Value::Null));
                match found.get(key) {
                    Some(v) => out.push(Some(v.clone())),
                    None if odd || has_null => {
                        let mut st = self.conn.prepare_cached(&lookup).ctx(ErrorKind::Target, e)?;
                        let keys: Vec<&Value> = shape.key.iter().map(|&i| &row[i]).collect();
                        out.push(
                            st.query_row(rusqlite::params_from_iter(keys), |got| row_values(got, shape.len()))
                                .optional()
                                .ctx(ErrorKind::Target, e)?,
                        );
                    }
                    None => out.push(None),
                }
            }
        }
        Ok(Some(out))
    }

    fn plan(&mut self, stream: &str, shape: &RowShape, batch: &RowBatch) -> Result<PlanCounts> {
        let mut counts = PlanCounts::default();
        let Some(ts) = self.streams.get(stream) else {
            return Ok(counts);
        };
        let exists = self.table_exists(&ts.table)?;
        for r in 0..batch.len() {
            let found = match (&ts.key_lookup, exists) {
                (Some(lookup), true) => self.key_exists(lookup, shape, batch.row(r))?,
                _ => false,
            };
            if !found {
                counts.insert += 1;
            } else if ts.insert_one.contains("DO NOTHING") {
                counts.skip += 1;
            } else if ts.insert_one.contains("DO UPDATE") {
                counts.overwrite += 1;
            } else {
                counts.conflict += 1;
            }
        }
        Ok(counts)
    }

    fn commit(&mut self, markers: &[Marker]) -> Result<()> {
        if self.dry_run {
            return Ok(());
        }
        self.begin()?;
        let address = self.address.clone();
        let e = || format!("{address}: committing");
        self.conn.execute_batch(MARKER_DDL).ctx(ErrorKind::Target, e)?;
        {
            let mut st = self
                .conn
                .prepare_cached(
                    "INSERT INTO _ferry_commits (source, stream, run_id, position, complete, bookmark, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (source, stream) DO UPDATE SET run_id = excluded.run_id,
                         position = max(coalesce(position, 0), coalesce(excluded.position, 0)),
                         complete = max(complete, excluded.complete),
                         bookmark = coalesce(excluded.bookmark, bookmark), updated_at = excluded.updated_at",
                )
                .ctx(ErrorKind::Target, e)?;
            let now = now_rfc3339();
            for m in markers {
                st.execute(params![
                    m.source,
                    m.stream,
                    m.run_id,
                    m.position.map(|p| p as i64),
                    m.complete,
                    m.bookmark,
                    now
                ])
                .ctx(ErrorKind::Target, e)?;
            }
        }
        self.conn.execute_batch("COMMIT").ctx(ErrorKind::Target, e)?;
        self.in_tx = false;
        Ok(())
    }

    fn rollback(&mut self) -> Result<()> {
        if self.in_tx {
            self.in_tx = false;
            // A COMMIT that failed for a full disk (or I/O) was rolled back by SQLite already.
            if self.conn.is_autocommit() {
                return Ok(());
            }
            self.conn
                .execute_batch("ROLLBACK")
                .ctx(ErrorKind::Target, || format!("{}: rolling back", self.address))?;
        }
        Ok(())
    }

    fn finish_stream(&mut self, source: &str, bookmark_name: &str) -> Result<Vec<String>> {
        if self.dry_run || !self.table_exists(MARKER_TABLE)? {
            return Ok(vec![]);
        }
        let pending: Option<String> = self
            .conn
            .query_row(
                "SELECT pending_ddl FROM _ferry_commits WHERE source = ?1 AND stream = ?2",
                [source, bookmark_name],
                |r| r.get(0),
            )
            .optional()
            .ctx(ErrorKind::Target, || {
                format!("{}: reading deferred indexes", self.address)
            })?
            .flatten();
        let Some(pending) = pending else {
            return Ok(vec![]);
        };
        let statements: Vec<String> = serde_json::from_str(&pending).unwrap_or_default();
        if !statements.is_empty() {
            tracing::info!(
                stream = bookmark_name,
                statements = statements.len(),
                "building keys and indexes"
            );
        }
        self.begin()?;
        for s in &statements {
            self.conn.execute_batch(s).ctx(ErrorKind::Target, || {
                format!(
                    "{}: stream {bookmark_name}: building an index with:\n{s}\n",
                    self.address
                )
            })?;
        }
        self.conn
            .execute(
                "UPDATE _ferry_commits SET pending_ddl = NULL WHERE source = ?1 AND stream = ?2",
                [source, bookmark_name],
            )
            .ctx(ErrorKind::Target, || {
                format!("{}: recording built indexes", self.address)
            })?;
        self.conn
            .execute_batch("COMMIT")
            .ctx(ErrorKind::Target, || format!("{}: committing indexes", self.address))?;
        self.in_tx = false;
        Ok(statements)
    }
}

impl SqliteTarget {
    fn write_one(
        &self,
        ts: &TargetStream,
        shape: &RowShape,
        batch: &RowBatch,
        r: usize,
        report: &mut Report,
    ) -> Result<()> {
        match self.exec_insert(&ts.insert_one, batch.row(r))? {
            Ok(changed) => {
                report.written += changed as u64;
                report.skipped += (1 - changed.min(1)) as u64;
            }
            Err((msg, unique)) => {
                let is_key = unique
                    && match &ts.key_lookup {
                        Some(lookup) => self.key_exists(lookup, shape, batch.row(r))?,
                        None => false,
                    };
                if is_key {
                    return Err(super::key_conflict(shape, batch, r, &ts.table, None));
                }
                report.rejects.push(Reject::of(shape, batch, r, msg));
            }
        }
        Ok(())
    }

    /// Record (in the open transaction) the deferred DDL of a stream, so that it is built even if
    /// the stream's SCHEMA is never seen again.
    /// Whether an unfinished run of `source` made the stream's table: its marker still has work
    /// pending (set when the table is made) and the stream is not complete.
    fn unfinished_by(&self, source: &str, bookmark_name: &str) -> Result<bool> {
        if !self.table_exists(MARKER_TABLE)? {
            return Ok(false);
        }
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM _ferry_commits WHERE source = ?1 AND stream = ?2
                     AND pending_ddl IS NOT NULL AND NOT complete)",
                [source, bookmark_name],
                |r| r.get(0),
            )
            .ctx(ErrorKind::Target, || {
                format!("{}: reading commit markers", self.address)
            })
    }

    fn set_pending(&mut self, source: &str, bookmark_name: &str, run_id: &str, ddl: &[String]) -> Result<()> {
        if self.dry_run {
            return Ok(());
        }
        self.begin()?;
        let e = || format!("{}: recording deferred indexes", self.address);
        self.conn.execute_batch(MARKER_DDL).ctx(ErrorKind::Target, e)?;
        let text = serde_json::to_string(ddl).unwrap_or_else(|_| "[]".into());
        self.conn
            .execute(
                "INSERT INTO _ferry_commits (source, stream, run_id, position, complete, pending_ddl, updated_at)
                 VALUES (?1, ?2, ?3, NULL, 0, ?4, ?5)
                 ON CONFLICT (source, stream) DO UPDATE SET pending_ddl = excluded.pending_ddl",
                params![source, bookmark_name, run_id, text, now_rfc3339()],
            )
            .ctx(ErrorKind::Target, e)?;
        Ok(())
    }
}

/// Open a SQLite database for reading (validate, assess).
pub fn open_read_only(path: &Path, role: ErrorKind) -> Result<(Connection, String)> {
    let address = format!("sqlite:{}", path.display());
    if !path.is_file() {
        return Err(Error::new(role, format!("{address}: no such database file")));
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .ctx(role, || format!("{address}: cannot open"))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .ctx(role, || address.clone())?;
    Ok((conn, address))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_rules() {
        assert_eq!(affinity("BIGINT"), Affinity::Integer);
        assert_eq!(affinity("VARCHAR(20)"), Affinity::Text);
        assert_eq!(affinity(""), Affinity::Blob);
        assert_eq!(affinity("DOUBLE PRECISION"), Affinity::Real);
        assert_eq!(affinity("DECIMAL(10,2)"), Affinity::Numeric);
        assert_eq!(affinity("DATETIME"), Affinity::Numeric);
    }

    #[test]
    fn before_images_are_found_by_key_as_sqlite_compares_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TABLE t (k TEXT PRIMARY KEY COLLATE NOCASE, v INTEGER);
                 INSERT INTO t VALUES ('A', 1), ('B', 2);
                 CREATE TABLE p (a INTEGER, b TEXT, v INTEGER, PRIMARY KEY (a, b));
                 INSERT INTO p VALUES (1, 'x', 10), (2, 'y', 20);",
            )
            .unwrap();
        let mut target = SqliteTarget::open(&path, false).unwrap();
        let opts = LoadOptions {
            create: false,
            on_conflict: OnConflict::Overwrite,
            dry_run: false,
            source: "s".into(),
            run_id: "r".into(),
            source_kind: None,
            journal: true,
        };
        let lookup = |target: &mut SqliteTarget, schema: &str, keys: &[&[Value]]| {
            let schema: Schema = serde_json::from_str(schema).unwrap();
            let shape = RowShape::from_schema(&schema).unwrap();
            target.prepare(&schema, &shape, &opts).unwrap();
            let mut batch = RowBatch::new(shape.len());
            for (n, k) in keys.iter().enumerate() {
                let row = batch.push_row(n as u64 + 1);
                for (j, &i) in shape.key.iter().enumerate() {
                    row[i] = k[j].clone();
                }
            }
            let got = target.current_rows(&schema.stream, &shape, &batch).unwrap().unwrap();
            got.into_iter()
                .map(|r| r.map(|v| v.last().cloned().unwrap()))
                .collect::<Vec<_>>()
        };
        let t = r#"{"type":"SCHEMA","stream":"t","key_properties":["k"],"schema":{"properties":{"k":{"type":["string"]},"v":{"type":["integer","null"]}}}}"#;
        // 'a' finds 'A' (the key's collation), which the lookup by many keys cannot tell.
        assert_eq!(
            lookup(
                &mut target,
                t,
                &[&[Value::text("a")], &[Value::text("B")], &[Value::text("c")]]
            ),
            vec![Some(Value::Integer(1)), Some(Value::Integer(2)), None]
        );
        let p = r#"{"type":"SCHEMA","stream":"p","key_properties":["a","b"],"schema":{"properties":{"a":{"type":["integer"]},"b":{"type":["string"]},"v":{"type":["integer","null"]}}}}"#;
        let many: Vec<Vec<Value>> = (0..1200)
            .map(|i| vec![Value::Integer(i % 3), Value::text("y")])
            .collect();
        let keys: Vec<&[Value]> = many.iter().map(Vec::as_slice).collect();
        let got = lookup(&mut target, p, &keys);
        assert_eq!(got.len(), 1200);
        for (i, v) in got.iter().enumerate() {
            assert_eq!(v, &(i % 3 == 2).then_some(Value::Integer(20)), "row {i}");
        }
    }

    #[test]
    fn quoting_doubles_quotes() {
        assert_eq!(quote("a\"b; DROP TABLE x"), "\"a\"\"b; DROP TABLE x\"");
    }

    #[test]
    fn create_table_parts_the_pragmas_do_not_show() {
        let sql = "CREATE TABLE \"odd, name\" (\n  id INTEGER PRIMARY KEY AUTOINCREMENT, -- a comment, with (parens)\n  \"e,mail\" TEXT COLLATE NOCASE CHECK (length(\"e,mail\") > 3),\n  [n] TEXT collate rtrim default 'x,(y' check (n <> ')'),\n  CONSTRAINT c CHECK (id > 0 AND (id < 10))\n)";
        let p = table_sql_parts(sql);
        assert!(p.autoincrement);
        assert_eq!(
            p.checks,
            vec!["length(\"e,mail\") > 3", "n <> ')'", "id > 0 AND (id < 10)"]
        );
        assert_eq!(
            p.collations,
            vec![
                ("e,mail".to_string(), "NOCASE".to_string()),
                ("n".to_string(), "rtrim".to_string())
            ]
        );
        assert_eq!(
            table_sql_parts("CREATE TABLE t (autoincrement_count INT)"),
            TableSqlParts::default()
        );
        let p = table_sql_parts("CREATE TABLE t (a TEXT CHECK (a <> 'it''s (CHECK'), \"b\"\"q\" INT COLLATE NOCASE)");
        assert_eq!(p.checks, vec!["a <> 'it''s (CHECK'"]);
        assert_eq!(p.collations, vec![("b\"q".to_string(), "NOCASE".to_string())]);
    }

    #[test]
    fn partial_index_condition_is_the_top_level_where() {
        assert_eq!(
            partial_condition("CREATE INDEX i ON t(a) WHERE a > 0").as_deref(),
            Some("a > 0")
        );
        assert_eq!(
            partial_condition("CREATE INDEX i ON t(somewhere) where (x in (select 1 where 1))").as_deref(),
            Some("(x in (select 1 where 1))")
        );
        assert_eq!(partial_condition("CREATE INDEX i ON t(a)"), None);
    }

    #[test]
    fn foreign_key_order_puts_parents_first_and_reports_cycles() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE c (id INTEGER PRIMARY KEY, b_id INT REFERENCES b(id));
             CREATE TABLE b (id INTEGER PRIMARY KEY, a_id INT REFERENCES a(id));
             CREATE TABLE a (id INTEGER PRIMARY KEY, parent INT REFERENCES a(id));
             CREATE TABLE x (id INTEGER PRIMARY KEY, y_id INT REFERENCES y(id));
             CREATE TABLE y (id INTEGER PRIMARY KEY, x_id INT REFERENCES x(id));",
        )
        .unwrap();
        let tables: Vec<TableInfo> = list_tables(&conn, "t")
            .unwrap()
            .iter()
            .map(|t| describe(&conn, t, "t").unwrap())
            .collect();
        let (order, cycle) = fk_order(&tables);
        let names: Vec<&str> = order.iter().map(|&i| tables[i].name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "x", "y"]);
        assert_eq!(cycle, ["x", "y"]);
    }

    #[test]
    fn after_condition_handles_nulls_and_composite_keys() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (a TEXT, b INT, v, PRIMARY KEY (a, b))")
            .unwrap();
        let t = describe(&conn, "t", "t").unwrap();
        assert!(t.pk_nullable());
        let cols = vec![
            crate::row::Column {
                name: "a".into(),
                codec: Codec::Text,
                nullable: true,
                sql_type: None,
            },
            crate::row::Column {
                name: "b".into(),
                codec: Codec::Integer,
                nullable: true,
                sql_type: None,
            },
            crate::row::Column {
                name: "v".into(),
                codec: Codec::Any,
                nullable: true,
                sql_type: None,
            },
        ];
        let shape = RowShape::new("main.t", cols, &["a".into(), "b".into()]).unwrap();
        let b: Bookmark = serde_json::from_value(json!({"after": {"a": null, "b": 3}, "rowid": 7})).unwrap();
        let (key, tie) = scan_order(&t);
        let (sql, binds) = after_condition(&t, &shape, &key, tie, &b).unwrap();
        assert_eq!(
            sql,
            "((\"a\" IS NOT NULL) OR (\"a\" IS NULL AND \"b\" > ?) OR (\"a\" IS NULL AND \"b\" = ? AND rowid > ?))"
        );
        assert_eq!(binds, vec![Value::Integer(3), Value::Integer(3), Value::Integer(7)]);
    }
}
