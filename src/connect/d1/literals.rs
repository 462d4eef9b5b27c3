//! Values written into D1's SQL as literals (or bound as text, when too big to inline).

use super::MAX_VALUE_BYTES;
use crate::value::Value;

/// Text as an SQL literal.
pub(super) fn sql_text(s: &str) -> String {
    // Text always has a literal.
    sql_literal(&Value::text(s)).unwrap_or_default()
}

/// [`literal`] as a string of its own.
pub(super) fn sql_literal(v: &Value) -> std::result::Result<String, String> {
    let mut out = String::new();
    literal(v, &mut out)?;
    Ok(out)
}

/// A value as an SQL literal; `Err` says why it cannot go to D1 at all.
pub(super) fn literal(v: &Value, out: &mut String) -> std::result::Result<(), String> {
    if let Value::Text(b) | Value::Blob(b) = v
        && b.len() > MAX_VALUE_BYTES
    {
        return Err(too_big(b.len()));
    }
    crate::connect::sql::sqlite_literal(v, out)
}

/// `(v1, v2, ...)` of the values as SQL literals onto `out`; the first value that has none says
/// why (and what was written is then of no use).
pub(super) fn literal_tuple<'a>(
    values: impl Iterator<Item = &'a Value>,
    out: &mut String,
) -> std::result::Result<(), String> {
    out.push('(');
    for (i, v) in values.enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        literal(v, out)?;
    }
    out.push(')');
    Ok(())
}

fn too_big(n: usize) -> String {
    format!("a value of {n} bytes, over D1's limit of {MAX_VALUE_BYTES} bytes per value")
}

/// A value bound as text and cast back in SQL (for rows too big to inline): the placeholder.
pub(super) fn bound(v: &Value, params: &mut Vec<Option<String>>) -> std::result::Result<String, String> {
    Ok(match v {
        Value::Null => "NULL".into(),
        Value::Integer(i) => {
            params.push(Some(i.to_string()));
            "CAST(? AS INTEGER)".into()
        }
        Value::Real(f) if f.is_finite() => {
            params.push(Some(format!("{f:e}")));
            "CAST(? AS REAL)".into()
        }
        Value::Real(_) => {
            let mut s = String::new();
            literal(v, &mut s)?;
            s
        }
        Value::Text(t) => match std::str::from_utf8(t) {
            Ok(s) if !s.contains('\0') => {
                params.push(Some(s.to_owned()));
                "?".into()
            }
            _ => {
                if t.len() * 2 > MAX_VALUE_BYTES {
                    return Err(format!(
                        "{} bytes of text that is not UTF-8, too big to send through D1's API (as hex, over {MAX_VALUE_BYTES} bytes)",
                        t.len()
                    ));
                }
                params.push(Some(hex::encode_upper(t)));
                "CAST(unhex(?) AS TEXT)".into()
            }
        },
        Value::Blob(b) => {
            if b.len() * 2 > MAX_VALUE_BYTES {
                return Err(format!(
                    "a BLOB of {} bytes: too big to send through D1's API (as hex, over {MAX_VALUE_BYTES} bytes)",
                    b.len()
                ));
            }
            params.push(Some(hex::encode_upper(b)));
            "unhex(?)".into()
        }
    })
}
