//! The SQL that makes a stream's table in SQLite (and in D1, which is SQLite): CREATE TABLE from
//! the SCHEMA, its indexes, and the commit markers' table.

use serde_json::Value as Json;

use crate::connect::sql::quote;
use crate::connect::table_name_for;
use crate::protocol::Schema;
use crate::value::{self, Codec};

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

/// A column's declared type when the SCHEMA gives none from SQLite.
pub(super) fn sqlite_type_for(prop: &Json) -> String {
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
pub(crate) fn create_table_sql(schema: &Schema, table: &str) -> String {
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
pub(crate) fn index_sql(schema: &Schema, table: &str) -> Vec<String> {
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
