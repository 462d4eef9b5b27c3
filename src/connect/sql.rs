//! SQL text that every SQL store writes the same way: quoted identifiers, string literals, a
//! row found by its key, and the `ON CONFLICT` clause (SQLite, PostgreSQL and D1 share the
//! upsert syntax).

use crate::connect::OnConflict;
use crate::row::RowShape;

/// Quote an identifier: double quotes, inner ones doubled (SQLite, PostgreSQL and D1 alike).
pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A SQL string literal (or NULL).
pub(crate) fn literal(s: Option<&str>) -> String {
    match s {
        Some(s) => format!("'{}'", s.replace('\'', "''")),
        None => "NULL".into(),
    }
}

/// `"k1" IS ? AND "k2" IS ?` over quoted column names: a row found by its key, NULLs included.
pub(crate) fn key_condition(quoted: &[String]) -> String {
    quoted
        .iter()
        .map(|k| format!("{k} IS ?"))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// The `ON CONFLICT` clause an insert of `shape`'s rows ends with (with a leading space), or
/// nothing: under `--on-conflict fail`, or without a key to match on.
pub(crate) fn conflict_clause(shape: &RowShape, on_conflict: OnConflict) -> String {
    let keys: Vec<String> = shape.key_names().into_iter().map(quote).collect();
    match (on_conflict, keys.is_empty()) {
        (OnConflict::Fail, _) | (_, true) => String::new(),
        (OnConflict::Skip, false) => format!(" ON CONFLICT ({}) DO NOTHING", keys.join(", ")),
        (OnConflict::Overwrite, false) => {
            let sets: Vec<String> = shape
                .columns
                .iter()
                .enumerate()
                .filter(|(i, _)| !shape.key.contains(i))
                .map(|(_, c)| format!("{0} = excluded.{0}", quote(&c.name)))
                .collect();
            if sets.is_empty() {
                format!(" ON CONFLICT ({}) DO NOTHING", keys.join(", "))
            } else {
                format!(" ON CONFLICT ({}) DO UPDATE SET {}", keys.join(", "), sets.join(", "))
            }
        }
    }
}
