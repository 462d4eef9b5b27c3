//! Canonical forms for comparing values across engines.
//!
//! Between two SQLite databases values are compared exactly (storage class and bytes). When one
//! side is PostgreSQL, each column is compared in the form its PostgreSQL type gives it, applied
//! to both sides, so that equal data hashes equal and unequal data never does:
//!
//! | PostgreSQL type | canonical form |
//! |---|---|
//! | smallint, integer, bigint | the integer |
//! | real, double precision | the IEEE double, bit for bit (a `real` widened exactly: its text read as a 4-byte float) |
//! | numeric, money | the decimal value, normalised (`1.50` = `1.5`; SQLite's REAL by its shortest round-trip digits, its INTEGER by its digits; money read as numeric) |
//! | boolean | 0 or 1 |
//! | text, varchar | the UTF-8 bytes |
//! | bytea | the bytes |
//! | date, timestamp, timestamptz, time | days or microseconds (SQLite's ISO-8601 text read the way the importer writes it) |
//! | uuid | the 16 bytes (any spelling of the same UUID is equal) |
//! | json, jsonb, arrays | the JSON value with object keys sorted (whitespace and key order do not matter; an array read through `array_to_json`) |
//! | jsonb holding an SQLite dynamic column | the exact value it stands for (see `connect::postgres::copy::dynamic_json`) |
//!
//! A value that does not read as its column's type (SQLite text `n/a` in a timestamp column) gets
//! a form of its own that equals nothing else.

use serde_json::Value as Json;

use crate::value::time;
use crate::value::{self, Codec, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Canon {
    /// SQLite against SQLite: storage class and bytes.
    Exact,
    Int,
    Float,
    /// `real`: text reads as a 4-byte float, widened.
    Float4,
    Decimal,
    /// `money`: read as numeric, compared as a decimal.
    Money,
    Bool,
    Text,
    Bytes,
    Date,
    Timestamp,
    Time,
    Uuid,
    Json,
    /// A PostgreSQL array, read as JSON.
    Array,
    /// An SQLite dynamic column kept in jsonb.
    Dynamic,
}

impl Canon {
    /// The canonical form for a PostgreSQL column (`format_type()` spelling); `dynamic` when the
    /// column is marked as holding an SQLite dynamic column.
    pub(crate) fn for_pg_type(formatted: &str, dynamic: bool) -> Canon {
        let t = formatted.to_ascii_lowercase();
        let base = t.split('(').next().unwrap_or("").trim();
        match base {
            // `numeric(10,2)[]`: the typmod comes before the brackets.
            _ if t.trim_end().ends_with("[]") => Canon::Array,
            "smallint" | "integer" | "bigint" => Canon::Int,
            "real" => Canon::Float4,
            "double precision" => Canon::Float,
            "numeric" => Canon::Decimal,
            "money" => Canon::Money,
            "boolean" => Canon::Bool,
            "bytea" => Canon::Bytes,
            "date" => Canon::Date,
            "time without time zone" | "time" => Canon::Time,
            "uuid" => Canon::Uuid,
            "jsonb" if dynamic => Canon::Dynamic,
            "json" | "jsonb" => Canon::Json,
            _ if base.starts_with("timestamp") => Canon::Timestamp,
            _ => Canon::Text,
        }
    }

    /// A value read from SQLite or decoded from a stream, in this form.
    pub(crate) fn of_value(self, v: Value) -> Value {
        if v == Value::Null || self == Canon::Exact || self == Canon::Dynamic {
            return v;
        }
        let text = |v: &Value| match v {
            Value::Text(t) => std::str::from_utf8(t).ok().map(str::to_owned),
            _ => None,
        };
        let got = match self {
            Canon::Int => match &v {
                Value::Integer(_) => Some(v.clone()),
                _ => text(&v).and_then(|s| s.trim().parse::<i64>().ok()).map(Value::Integer),
            },
            Canon::Float => match &v {
                Value::Real(f) => Some(Value::Real(*f)),
                Value::Integer(i) if i.unsigned_abs() <= 1 << 53 => Some(Value::Real(*i as f64)),
                _ => text(&v).and_then(|s| parse_float(&s)).map(Value::Real),
            },
            Canon::Float4 => match &v {
                Value::Text(_) => text(&v)
                    .and_then(|s| parse_float(&s))
                    .map(|f| Value::Real(f as f32 as f64)),
                _ => return Canon::Float.of_value(v),
            },
            Canon::Money => return Canon::Decimal.of_value(v),
            Canon::Decimal => match &v {
                Value::Integer(i) => decimal(&i.to_string()),
                Value::Real(f) if f.is_finite() => decimal(ryu::Buffer::new().format_finite(*f)),
                Value::Real(f) => Some(Value::text(if f.is_nan() {
                    "NaN"
                } else if *f > 0.0 {
                    "Infinity"
                } else {
                    "-Infinity"
                })),
                _ => text(&v).and_then(|s| decimal(&s)),
            },
            Canon::Bool => match &v {
                Value::Integer(i @ (0 | 1)) => Some(Value::Integer(*i)),
                _ => text(&v).and_then(|s| match s.trim() {
                    "t" | "true" | "1" => Some(Value::Integer(1)),
                    "f" | "false" | "0" => Some(Value::Integer(0)),
                    _ => None,
                }),
            },
            Canon::Text => matches!(v, Value::Text(_)).then(|| v.clone()),
            Canon::Bytes => matches!(v, Value::Blob(_)).then(|| v.clone()),
            Canon::Date => text(&v).and_then(|s| date_days(&s)).map(Value::Integer),
            Canon::Timestamp => text(&v).and_then(|s| time::pg_timestamp(&s).ok()).map(Value::Integer),
            Canon::Time => text(&v).and_then(|s| time_micros(&s)).map(Value::Integer),
            Canon::Uuid => match &v {
                Value::Blob(b) if b.len() == 16 => Some(v.clone()),
                _ => text(&v)
                    .and_then(|s| uuid::Uuid::parse_str(s.trim()).ok())
                    .map(|u| Value::Blob(u.as_bytes().to_vec())),
            },
            Canon::Json | Canon::Array => text(&v).and_then(|s| json_sorted(&s)).map(Value::Text),
            Canon::Exact | Canon::Dynamic => Some(v.clone()),
        };
        got.unwrap_or_else(|| unreadable(&v))
    }

    /// A field of PostgreSQL's text output (`COPY ... TO STDOUT`, with the session settings ferry
    /// uses: ISO dates in UTC, shortest-exact floats, hex bytea), in this form.
    pub(crate) fn of_pg_text(self, field: Option<&[u8]>) -> Value {
        let Some(raw) = field else { return Value::Null };
        let s = String::from_utf8_lossy(raw);
        let got = match self {
            Canon::Bytes => s.strip_prefix("\\x").and_then(|h| hex::decode(h).ok()).map(Value::Blob),
            Canon::Dynamic => serde_json::from_slice::<Json>(raw)
                .ok()
                .and_then(|j| value::decode_json(&j, Codec::Any).ok()),
            Canon::Text | Canon::Exact => Some(Value::Text(raw.to_vec())),
            other => return other.of_value(Value::Text(raw.to_vec())),
        };
        got.unwrap_or_else(|| unreadable(&Value::Text(raw.to_vec())))
    }

    /// The expression that reads a PostgreSQL column in this form.
    pub(crate) fn pg_select(self, quoted: &str) -> String {
        match self {
            Canon::Array => format!("array_to_json({quoted})"),
            Canon::Money => format!("{quoted}::numeric"),
            // Widened exactly, so the text is the double's own (whatever the other side holds).
            Canon::Float4 => format!("{quoted}::float8"),
            _ => quoted.to_owned(),
        }
    }

    /// A canonical key value that sorts the way the key sorts on both sides.
    pub(crate) fn key_order(self, v: Value) -> Value {
        let number = match (self, &v) {
            (Canon::Decimal | Canon::Money, Value::Text(t)) => {
                let s = String::from_utf8_lossy(t).into_owned();
                s.parse::<i64>()
                    .map(Value::Integer)
                    .or_else(|_| s.parse::<f64>().map(Value::Real))
                    .ok()
            }
            _ => None,
        };
        number.unwrap_or(v)
    }
}

/// A value that did not read as its column's type: tagged so it equals no readable value.
fn unreadable(v: &Value) -> Value {
    let mut out = b"\x00unreadable:".to_vec();
    value::write_tagged(v.as_ref(), &mut out);
    Value::Blob(out)
}

fn parse_float(s: &str) -> Option<f64> {
    match s.trim() {
        "NaN" => Some(f64::NAN),
        "Infinity" | "inf" => Some(f64::INFINITY),
        "-Infinity" | "-inf" => Some(f64::NEG_INFINITY),
        t => t.parse().ok(),
    }
}

fn decimal(s: &str) -> Option<Value> {
    canonical_decimal(s).map(|d| Value::Text(d.into_bytes()))
}

/// A decimal number as `[-]D.DDDeN` with no leading or trailing zero digits (`0` for zero), so
/// `1.50`, `1.5` and `15e-1` all read `1.5e0`; `NaN`, `Infinity`, `-Infinity` as they are.
pub(crate) fn canonical_decimal(s: &str) -> Option<String> {
    let t = s.trim();
    if matches!(t, "NaN" | "Infinity" | "-Infinity") {
        return Some(t.to_owned());
    }
    let (neg, rest) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], rest[i + 1..].parse::<i64>().ok()?),
        None => (rest, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() && frac.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: Vec<u8> = int.bytes().chain(frac.bytes()).collect();
    let Some(first) = digits.iter().position(|&d| d != b'0') else {
        return Some("0".into());
    };
    let last = digits.iter().rposition(|&d| d != b'0').unwrap_or(first);
    // Exponent of the first significant digit.
    let e = int.len() as i64 - 1 - first as i64 + exp;
    let sig = &digits[first..=last];
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    out.push(sig[0] as char);
    if sig.len() > 1 {
        out.push('.');
        out.push_str(std::str::from_utf8(&sig[1..]).ok()?);
    }
    out.push_str(&format!("e{e}"));
    Some(out)
}

fn date_days(s: &str) -> Option<i64> {
    if let Ok(d) = time::pg_date(s) {
        return Some(d as i64);
    }
    // A date with a time part reads as a date only at midnight.
    let micros = time::pg_timestamp(s).ok()?;
    (micros % 86_400_000_000 == 0).then(|| micros.div_euclid(86_400_000_000))
}

fn time_micros(s: &str) -> Option<i64> {
    time::pg_time(s).ok()
}

/// JSON text with every object's keys sorted, compact.
fn json_sorted(s: &str) -> Option<Vec<u8>> {
    fn sort(v: Json) -> Json {
        match v {
            Json::Object(m) => {
                let mut pairs: Vec<(String, Json)> = m.into_iter().map(|(k, v)| (k, sort(v))).collect();
                pairs.sort_by(|a, b| a.0.cmp(&b.0));
                Json::Object(pairs.into_iter().collect())
            }
            Json::Array(a) => Json::Array(a.into_iter().map(sort).collect()),
            other => other,
        }
    }
    serde_json::to_vec(&sort(serde_json::from_str(s).ok()?)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_compare_by_value() {
        assert_eq!(canonical_decimal("1.50").as_deref(), Some("1.5e0"));
        assert_eq!(canonical_decimal("15e-1").as_deref(), Some("1.5e0"));
        assert_eq!(canonical_decimal("-0.00120").as_deref(), Some("-1.2e-3"));
        assert_eq!(
            canonical_decimal("1e300").as_deref(),
            canonical_decimal(&format!("1{}", "0".repeat(300))).as_deref()
        );
        assert_eq!(canonical_decimal("000").as_deref(), Some("0"));
        assert_eq!(
            Canon::Decimal.of_value(Value::Real(1234.5)),
            Canon::Decimal.of_pg_text(Some(b"1234.50"))
        );
        assert_eq!(
            Canon::Decimal.of_value(Value::Integer(10)),
            Canon::Decimal.of_pg_text(Some(b"10.00"))
        );
        assert_ne!(
            Canon::Decimal.of_value(Value::Real(0.125)),
            Canon::Decimal.of_pg_text(Some(b"0.13"))
        );
    }

    #[test]
    fn postgresql_exports_read_back_equal() {
        // A real as exported (widened exactly) against PostgreSQL's shortest text.
        assert_eq!(
            Canon::Float4.of_value(Value::Real(1.1f32 as f64)),
            Canon::Float4.of_pg_text(Some(b"1.1"))
        );
        assert_ne!(
            Canon::Float4.of_value(Value::Real(1.1)),
            Canon::Float4.of_pg_text(Some(b"1.1"))
        );
        assert_eq!(
            Canon::Array.of_value(Value::text("[1,null,3]")),
            Canon::Array.of_pg_text(Some(b"[1, null, 3]"))
        );
        assert_eq!(
            Canon::Money.of_value(Value::text("1234.5")),
            Canon::Money.of_pg_text(Some(b"1234.50"))
        );
        assert_eq!(Canon::for_pg_type("text[]", false), Canon::Array);
        assert_eq!(Canon::for_pg_type("numeric(10,2)[]", false), Canon::Array);
        assert_eq!(Canon::for_pg_type("character varying(20)[]", false), Canon::Array);
        assert_eq!(Canon::Array.pg_select("\"a\""), "array_to_json(\"a\")");
        assert_eq!(
            Canon::Timestamp.of_value(Value::text("0044-03-15T12:00:00 BC")),
            Canon::Timestamp.of_pg_text(Some(b"0044-03-15 12:00:00 BC"))
        );
        assert_ne!(
            Canon::Timestamp.of_value(Value::text("0044-03-15T12:00:00")),
            Canon::Timestamp.of_pg_text(Some(b"0044-03-15 12:00:00 BC"))
        );
    }

    #[test]
    fn sqlite_text_reads_as_postgresql_types() {
        assert_eq!(
            Canon::Timestamp.of_value(Value::text("2000-01-01T00:00:00.123456Z")),
            Canon::Timestamp.of_pg_text(Some(b"2000-01-01 00:00:00.123456"))
        );
        assert_eq!(
            Canon::Bool.of_value(Value::Integer(1)),
            Canon::Bool.of_pg_text(Some(b"t"))
        );
        assert_eq!(
            Canon::Bytes.of_value(Value::Blob(vec![0, 255])),
            Canon::Bytes.of_pg_text(Some(b"\\x00ff"))
        );
        assert_eq!(
            Canon::Uuid.of_value(Value::text("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11")),
            Canon::Uuid.of_pg_text(Some(b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"))
        );
        assert_eq!(
            Canon::Json.of_value(Value::text("{\"b\": 1, \"a\": [1, 2]}")),
            Canon::Json.of_pg_text(Some(b"{\"a\": [1, 2], \"b\": 1}"))
        );
        assert_eq!(
            Canon::Float.of_value(Value::Real(f64::INFINITY)),
            Canon::Float.of_pg_text(Some(b"Infinity"))
        );
        assert_eq!(
            Canon::Dynamic.of_value(Value::Real(1e300)),
            Canon::Dynamic.of_pg_text(Some(b"{\"real\": \"1e300\"}"))
        );
    }

    #[test]
    fn unreadable_values_equal_nothing_readable() {
        let bad = Canon::Timestamp.of_value(Value::text("n/a"));
        assert_ne!(bad, Canon::Timestamp.of_value(Value::text("2000-01-01 00:00:00")));
        assert_eq!(bad, Canon::Timestamp.of_value(Value::text("n/a")));
        assert_ne!(
            Canon::Text.of_value(Value::Integer(42)),
            Canon::Text.of_pg_text(Some(b"42"))
        );
    }
}
