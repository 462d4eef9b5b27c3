//! What a SQLite database says about its tables: columns, declared types and their affinity,
//! keys, unique constraints, indexes, checks and foreign keys, read into a [`TableInfo`]; and
//! how each column becomes a stream property.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{Connection, OptionalExtension};
use serde_json::{Map, Value as Json, json};

use super::parse::{action, partial_condition};
use crate::connect::table_name_for;
use crate::error::{Context, Error, ErrorKind, Result};
use crate::protocol::{ForeignKey, Index, References, Unique};

/// SQLite's type affinity of a declared type (datatype3.html, section 3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Affinity {
    Integer,
    Text,
    Blob,
    Real,
    Numeric,
}

pub(crate) fn affinity(declared: &str) -> Affinity {
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
pub(crate) struct ColumnInfo {
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
    pub(crate) fn generated(&self) -> bool {
        self.hidden == 2 || self.hidden == 3
    }
}

#[derive(Debug, Clone)]
pub(crate) struct TableInfo {
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
    pub(crate) fn stored_columns(&self) -> impl Iterator<Item = &ColumnInfo> {
        self.columns.iter().filter(|c| !c.generated())
    }

    /// Whether the primary key is the rowid itself (a single `INTEGER PRIMARY KEY`).
    pub(crate) fn pk_is_rowid(&self) -> bool {
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
pub(crate) fn list_tables(conn: &Connection, address: &str) -> Result<Vec<String>> {
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

pub(crate) fn describe(conn: &Connection, table: &str, address: &str) -> Result<TableInfo> {
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
    let columns = columns(conn, table, address)?;
    let mut pk: Vec<&ColumnInfo> = columns.iter().filter(|c| c.pk > 0).collect();
    pk.sort_by_key(|c| c.pk);
    let pk: Vec<String> = pk.into_iter().map(|c| c.name.clone()).collect();

    let fks = foreign_keys(conn, table, address)?;

    let (unique, indexes) = indexes(conn, table, address)?;
    let sequence = sequence(conn, table, address)?;
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
        foreign_keys: fks,
        unique,
        indexes,
        sequence,
        rowid_name,
    })
}

/// A table's columns, hidden ones (generated) too, in order.
fn columns(conn: &Connection, table: &str, address: &str) -> Result<Vec<ColumnInfo>> {
    let e = |what: &str| sql_err(format!("{address}: reading the definition of table {table} ({what})"));
    let mut st = conn
        .prepare("SELECT name, type, \"notnull\", dflt_value, pk, hidden FROM pragma_table_xinfo(?1) ORDER BY cid")
        .ctx(ErrorKind::Source, e("columns"))?;
    st.query_map([table], |r| {
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
    .ctx(ErrorKind::Source, e("columns"))
}

/// A table's foreign keys, in the order they were declared.
fn foreign_keys(conn: &Connection, table: &str, address: &str) -> Result<Vec<ForeignKey>> {
    let e = |what: &str| sql_err(format!("{address}: reading the definition of table {table} ({what})"));
    // Rows grouped by id, ordered by seq.
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
    Ok(fks.into_values().collect())
}

/// A table's unique constraints, and its own indexes (those `CREATE INDEX` made).
fn indexes(conn: &Connection, table: &str, address: &str) -> Result<(Vec<Unique>, Vec<Index>)> {
    let e = |what: &str| sql_err(format!("{address}: reading the definition of table {table} ({what})"));
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
    Ok((unique, indexes))
}

/// The AUTOINCREMENT counter of a table, if it has one.
fn sequence(conn: &Connection, table: &str, address: &str) -> Result<Option<i64>> {
    let e = |what: &str| sql_err(format!("{address}: reading the definition of table {table} ({what})"));
    let has_seq: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_schema WHERE name = 'sqlite_sequence'",
            [],
            |r| r.get(0),
        )
        .ctx(ErrorKind::Source, e("sequence"))?;
    if !has_seq {
        return Ok(None);
    }
    conn.query_row("SELECT seq FROM sqlite_sequence WHERE name = ?1", [table], |r| r.get(0))
        .optional()
        .ctx(ErrorKind::Source, e("sequence"))
}

/// Storage classes present in one column, from the pre-scan.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Classes {
    pub(super) integer: bool,
    pub(super) real: bool,
    pub(super) text: bool,
    pub(super) blob: bool,
    /// A column declared as a UUID's text (see [`uuid_candidate`]) whose every value seen is one.
    pub(super) uuids: bool,
}

/// Whether a declared type is sized for a UUID's text: `char(32)` (Django's UUIDField and
/// SQLAlchemy's Uuid on SQLite: 32 hex digits), `char(36)` (with hyphens), and their varchar
/// forms. Such a column whose values are all UUIDs is described as one (`format: uuid`), so
/// PostgreSQL gets a `uuid` column.
pub(crate) fn uuid_candidate(declared: &str) -> bool {
    let d = declared.trim().to_ascii_uppercase().replace(' ', "");
    ["CHAR", "CHARACTER", "VARCHAR", "CHARACTERVARYING"]
        .iter()
        .any(|base| d == format!("{base}(32)") || d == format!("{base}(36)"))
}

/// JSON Schema property for a column, from its declaration and the classes it holds.
pub(super) fn column_property(
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
    if classes.uuids && types.first() == Some(&"string") && !dynamic && !base64 {
        p.insert("format".into(), json!("uuid"));
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
pub(super) fn fk_order(tables: &[TableInfo]) -> (Vec<usize>, Vec<String>) {
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
    crate::connect::parents_first(&names, &refs)
}
