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

/// The columns a CHECK keeps valid JSON with `json_valid(col)` (as Django writes for a
/// JSONField: `(JSON_VALID("prefs") OR "prefs" IS NULL)`), as named there, unquoted. A call
/// spelt inside a string literal is not one.
pub(crate) fn json_valid_columns(check: &str) -> Vec<String> {
    // Strings blanked out (their quotes kept), so nothing inside one is seen.
    let mut quoted = false;
    let check: String = check
        .chars()
        .map(|c| match c {
            '\'' => {
                quoted = !quoted;
                c
            }
            _ if quoted => ' ',
            _ => c,
        })
        .collect();
    let lower = check.to_ascii_lowercase();
    lower
        .match_indices("json_valid(")
        .map(|(at, call)| {
            let arg = check[at + call.len()..].trim_start();
            let name = match arg.chars().next() {
                Some(open @ ('"' | '`' | '[')) => {
                    let close = if open == '[' { ']' } else { open };
                    arg[1..].split(close).next().unwrap_or("")
                }
                _ => arg.split([')', ',', ' ']).next().unwrap_or(""),
            };
            name.to_owned()
        })
        .collect()
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
