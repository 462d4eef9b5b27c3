//! SQL text that every SQL store writes the same way: quoted identifiers, string literals, a
//! row found by its key, and the `ON CONFLICT` clause (SQLite, PostgreSQL and D1 share the
//! upsert syntax).

use crate::connect::OnConflict;
use crate::row::RowShape;
use crate::value::Value;

/// Quote an identifier: double quotes, inner ones doubled (SQLite, PostgreSQL and D1 alike).
pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A value as an SQLite literal that reads back as exactly it (text that is not UTF-8, or holds
/// NUL, by its bytes); `Err` for a NaN, which SQLite cannot store.
pub(crate) fn sqlite_literal(v: &Value, out: &mut String) -> std::result::Result<(), String> {
    use std::fmt::Write as _;
    match v {
        Value::Null => out.push_str("NULL"),
        Value::Integer(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Real(f) if f.is_nan() => return Err("a NaN floating-point value, which SQLite cannot store".into()),
        Value::Real(f) if f.is_infinite() => out.push_str(if *f > 0.0 { "9e999" } else { "-9e999" }),
        Value::Real(f) => {
            let _ = write!(out, "{f:e}");
        }
        Value::Text(t) => match std::str::from_utf8(t) {
            Ok(s) if !s.contains('\0') => {
                out.push('\'');
                for c in s.chars() {
                    if c == '\'' {
                        out.push('\'');
                    }
                    out.push(c);
                }
                out.push('\'');
            }
            _ => {
                out.push_str("CAST(X'");
                out.push_str(&hex::encode_upper(t));
                out.push_str("' AS TEXT)");
            }
        },
        Value::Blob(b) => {
            out.push_str("X'");
            out.push_str(&hex::encode_upper(b));
            out.push('\'');
        }
    }
    Ok(())
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
