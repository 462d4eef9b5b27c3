//! SQLite, as a source and as a target.
//!
//! - [`catalog`]: tables, columns and constraints, and how a column becomes a stream property;
//! - [`parse`]: SQLite's own SQL text (column definitions, an index's WHERE);
//! - [`source`]: `ferry-export sqlite:PATH`;
//! - [`ddl`]: CREATE TABLE and indexes from a SCHEMA (D1 uses it too);
//! - [`target`]: `ferry-import sqlite:PATH`;
//! - [`capture`]: the triggers that record its changes, and reading them;
//! - here: values in and out of rusqlite, and opening a database to read.

pub(crate) mod capture;
pub(crate) mod catalog;
pub(crate) mod compare;
pub(crate) mod ddl;
pub(crate) mod parse;
pub(crate) mod source;
pub(crate) mod target;

use std::path::Path;

use rusqlite::types::{ToSqlOutput, ValueRef as SqlRef};
use rusqlite::{Connection, OpenFlags};

use crate::error::{Context, Error, ErrorKind, Result};
use crate::value::{Value, ValueRef};

/// The table in a target that holds ferry's commit markers.
pub(crate) const MARKER_TABLE: &str = "_ferry_commits";

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

pub(crate) fn from_sql(v: SqlRef<'_>) -> ValueRef<'_> {
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

/// Open a SQLite database for reading (validate, assess).
pub(crate) fn open_read_only(path: &Path, role: ErrorKind) -> Result<(Connection, String)> {
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
    use serde_json::json;

    use super::catalog::*;
    use super::parse::*;
    use super::source::*;
    use super::target::*;
    use super::*;
    use crate::connect::sql::quote;
    use crate::connect::{LoadOptions, OnConflict, RowBatch, Target as _};
    use crate::protocol::{Bookmark, Schema};
    use crate::row::RowShape;
    use crate::value::Codec;

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
            naive_utc: false,
            shard: None,
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
    fn json_and_uuid_columns_are_told_by_their_checks_and_declared_sizes() {
        let p = table_sql_parts(
            "CREATE TABLE t (\"prefs\" text NOT NULL CHECK ((JSON_VALID(\"prefs\") OR \"prefs\" IS NULL)), \
             meta TEXT CHECK (json_valid( meta )), [b] TEXT CHECK (json_valid([b], 0)), note TEXT CHECK (note <> 'json_valid(x)'), \
             prefs_old TEXT)",
        );
        assert!(p.json_checked("prefs") && p.json_checked("PREFS") && p.json_checked("meta") && p.json_checked("b"));
        assert!(!p.json_checked("note") && !p.json_checked("prefs_old") && !p.json_checked("x"));
        for t in ["char(32)", "CHAR(36)", "character (32)", "varchar(36)"] {
            assert!(catalog::uuid_candidate(t), "{t}");
        }
        for t in ["char(31)", "text", "varchar", "uuid", "char"] {
            assert!(!catalog::uuid_candidate(t), "{t}");
        }
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
