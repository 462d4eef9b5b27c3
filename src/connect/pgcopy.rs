//! PostgreSQL binary COPY: the file header and trailer, and each column type's encoder from a
//! stream value. A value the column's type cannot hold exactly is refused with the reason (the
//! importer puts the row in the reject file); nothing is rounded or truncated silently.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::value::{self, Value, ValueRef};

pub const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
pub const TRAILER: &[u8] = &[0xff, 0xff];

/// Microseconds between 1970-01-01 and 2000-01-01 (PostgreSQL's epoch).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// How one column's values are encoded, decided by its PostgreSQL type.
#[derive(Debug, Clone, PartialEq)]
pub enum Encoder {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    /// `numeric`, or `numeric(precision, scale)`.
    Numeric {
        precision: Option<u32>,
        scale: Option<u32>,
    },
    Text,
    Bytea,
    Date,
    Timestamp,
    TimestampTz,
    Time,
    Uuid,
    Json,
    Jsonb,
    /// `jsonb` holding a column whose values are of several kinds (an SQLite dynamic column): each
    /// value is written in its self-describing form, so it comes back exactly.
    Dynamic,
}

impl Encoder {
    /// The encoder for a type as `format_type()` prints it (`numeric(12,2)`, `timestamp without
    /// time zone`, `character varying(20)`...), if ferry can write it in binary.
    pub fn for_type(formatted: &str) -> Option<Encoder> {
        let t = formatted.trim().to_ascii_lowercase();
        let (base, mods) = match t.split_once('(') {
            Some((b, rest)) => (
                b.trim().to_owned() + rest.split_once(')').map_or("", |(_, tail)| tail),
                Some(rest.split(')').next().unwrap_or("")),
            ),
            None => (t.clone(), None),
        };
        Some(match base.as_str() {
            "boolean" | "bool" => Encoder::Bool,
            "smallint" | "int2" => Encoder::Int2,
            "integer" | "int" | "int4" => Encoder::Int4,
            "bigint" | "int8" => Encoder::Int8,
            "real" | "float4" => Encoder::Float4,
            "double precision" | "float8" => Encoder::Float8,
            "numeric" | "decimal" => {
                let mut it = mods.unwrap_or("").split(',').map(|p| p.trim().parse::<u32>().ok());
                let precision = it.next().flatten();
                let scale = it.next().flatten().or(precision.map(|_| 0));
                Encoder::Numeric { precision, scale }
            }
            "text" | "character varying" | "varchar" | "name" | "citext" => Encoder::Text,
            "bytea" => Encoder::Bytea,
            "date" => Encoder::Date,
            "timestamp without time zone" | "timestamp" => Encoder::Timestamp,
            "timestamp with time zone" | "timestamptz" => Encoder::TimestampTz,
            "time without time zone" | "time" => Encoder::Time,
            "uuid" => Encoder::Uuid,
            "json" => Encoder::Json,
            "jsonb" => Encoder::Jsonb,
            _ => return None,
        })
    }
}

/// Append one field (length, then bytes; -1 for NULL).
pub fn encode(v: &Value, enc: &Encoder, out: &mut Vec<u8>) -> Result<(), String> {
    if *v == Value::Null {
        out.extend_from_slice(&(-1i32).to_be_bytes());
        return Ok(());
    }
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    body(v, enc, out)?;
    let len = (out.len() - at - 4) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

fn shown(v: &Value) -> String {
    let s = v.as_ref().to_string();
    if s.len() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}

fn body(v: &Value, enc: &Encoder, out: &mut Vec<u8>) -> Result<(), String> {
    let wrong = |what: &str| format!("{} does not fit a {what} column", shown(v));
    match (enc, v) {
        (Encoder::Bool, Value::Integer(0 | 1)) => out.push(matches!(v, Value::Integer(1)) as u8),
        (Encoder::Bool, _) => return Err(format!("{} is not a boolean (0 or 1)", shown(v))),
        (Encoder::Int2, Value::Integer(i)) => out.extend_from_slice(
            &i16::try_from(*i)
                .map_err(|_| format!("{i} is out of range for smallint"))?
                .to_be_bytes(),
        ),
        (Encoder::Int4, Value::Integer(i)) => out.extend_from_slice(
            &i32::try_from(*i)
                .map_err(|_| format!("{i} is out of range for integer"))?
                .to_be_bytes(),
        ),
        (Encoder::Int8, Value::Integer(i)) => out.extend_from_slice(&i.to_be_bytes()),
        (Encoder::Int2 | Encoder::Int4 | Encoder::Int8, _) => return Err(wrong("integer")),
        (Encoder::Float8, Value::Real(f)) => out.extend_from_slice(&f.to_be_bytes()),
        (Encoder::Float8, Value::Integer(i)) if i.unsigned_abs() <= 1 << 53 => {
            out.extend_from_slice(&(*i as f64).to_be_bytes())
        }
        (Encoder::Float4, Value::Real(f)) if (*f as f32) as f64 == *f || f.is_nan() => {
            out.extend_from_slice(&(*f as f32).to_be_bytes())
        }
        (Encoder::Float4, Value::Real(f)) => return Err(format!("{f} would lose precision in a real (4-byte) column")),
        (Encoder::Float4 | Encoder::Float8, Value::Text(t)) => {
            let f = match std::str::from_utf8(t).unwrap_or("") {
                "NaN" => f64::NAN,
                "Infinity" => f64::INFINITY,
                "-Infinity" => f64::NEG_INFINITY,
                _ => return Err(wrong("floating-point")),
            };
            if *enc == Encoder::Float4 {
                out.extend_from_slice(&(f as f32).to_be_bytes())
            } else {
                out.extend_from_slice(&f.to_be_bytes())
            }
        }
        (Encoder::Float4 | Encoder::Float8, _) => return Err(wrong("floating-point")),
        (Encoder::Numeric { precision, scale }, v) => {
            let text = match v {
                Value::Integer(i) => i.to_string(),
                Value::Real(f) if f.is_nan() => "NaN".into(),
                Value::Real(f) if f.is_infinite() => if *f > 0.0 { "Infinity" } else { "-Infinity" }.into(),
                Value::Real(f) => ryu::Buffer::new().format_finite(*f).to_owned(),
                Value::Text(t) => String::from_utf8(t.clone()).map_err(|_| wrong("numeric"))?,
                _ => return Err(wrong("numeric")),
            };
            numeric(&text, *precision, *scale, out)?;
        }
        (Encoder::Text, Value::Text(t)) => {
            let s = std::str::from_utf8(t)
                .map_err(|_| "the text is not valid UTF-8, which PostgreSQL text cannot hold".to_string())?;
            if s.contains('\0') {
                return Err("the text contains a NUL byte, which PostgreSQL text cannot hold".into());
            }
            out.extend_from_slice(t);
        }
        (Encoder::Text, _) => return Err(wrong("text")),
        (Encoder::Bytea, Value::Blob(b)) => out.extend_from_slice(b),
        (Encoder::Bytea, _) => return Err(wrong("bytea")),
        (Encoder::Date, Value::Text(t)) => {
            let s = std::str::from_utf8(t).map_err(|_| wrong("date"))?;
            let d: jiff::civil::Date = s.trim().parse().map_err(|e| format!("{s:?} is not a date ({e})"))?;
            let days = d
                .since(jiff::civil::date(2000, 1, 1))
                .map_err(|e| e.to_string())?
                .get_days();
            out.extend_from_slice(&days.to_be_bytes());
        }
        (Encoder::Timestamp | Encoder::TimestampTz, Value::Text(t)) => {
            let s = std::str::from_utf8(t).map_err(|_| wrong("timestamp"))?;
            out.extend_from_slice(&(timestamp_micros(s)? - PG_EPOCH_MICROS).to_be_bytes());
        }
        (Encoder::Time, Value::Text(t)) => {
            let s = std::str::from_utf8(t).map_err(|_| wrong("time"))?;
            let time: jiff::civil::Time = s.trim().parse().map_err(|e| format!("{s:?} is not a time ({e})"))?;
            if time.subsec_nanosecond() % 1000 != 0 {
                return Err(format!("{s:?} has more precision than PostgreSQL keeps (microseconds)"));
            }
            let micros = ((time.hour() as i64 * 60 + time.minute() as i64) * 60 + time.second() as i64) * 1_000_000
                + time.subsec_nanosecond() as i64 / 1000;
            out.extend_from_slice(&micros.to_be_bytes());
        }
        (Encoder::Date | Encoder::Timestamp | Encoder::TimestampTz | Encoder::Time, _) => {
            return Err(wrong("date/time"));
        }
        (Encoder::Uuid, Value::Text(t)) => {
            let s = std::str::from_utf8(t).map_err(|_| wrong("uuid"))?;
            let u = uuid::Uuid::parse_str(s.trim()).map_err(|e| format!("{s:?} is not a UUID ({e})"))?;
            out.extend_from_slice(u.as_bytes());
        }
        (Encoder::Uuid, Value::Blob(b)) if b.len() == 16 => out.extend_from_slice(b),
        (Encoder::Uuid, _) => return Err(wrong("uuid")),
        (Encoder::Json | Encoder::Jsonb, Value::Text(t)) => {
            let s = std::str::from_utf8(t).map_err(|_| wrong("json"))?;
            serde_json::from_str::<serde::de::IgnoredAny>(s).map_err(|e| format!("not valid JSON ({e})"))?;
            if *enc == Encoder::Jsonb {
                out.push(1);
            }
            out.extend_from_slice(t);
        }
        (Encoder::Json | Encoder::Jsonb, _) => return Err(wrong("json")),
        (Encoder::Dynamic, v) => {
            out.push(1);
            dynamic_json(v.as_ref(), out);
        }
    }
    Ok(())
}

/// The self-describing JSON of a value, in a form jsonb keeps exactly: integers as numbers
/// (jsonb keeps every digit), everything else tagged (jsonb would rewrite `1e300` as digits).
pub fn dynamic_json(v: ValueRef<'_>, out: &mut Vec<u8>) {
    match v {
        ValueRef::Integer(i) => value::write_int(i, out),
        ValueRef::Real(f) => {
            out.extend_from_slice(b"{\"real\":");
            if f.is_finite() {
                value::write_str(ryu::Buffer::new().format_finite(f), out);
            } else {
                value::write_str(
                    if f.is_nan() {
                        "NaN"
                    } else if f > 0.0 {
                        "Infinity"
                    } else {
                        "-Infinity"
                    },
                    out,
                );
            }
            out.push(b'}');
        }
        ValueRef::Text(t) => match std::str::from_utf8(t) {
            Ok(s) if !s.contains('\0') => value::write_str(s, out),
            // jsonb cannot hold \u0000 either: carry such text as bytes.
            _ => {
                out.extend_from_slice(b"{\"text_b64\":");
                value::write_str(&BASE64.encode(t), out);
                out.push(b'}');
            }
        },
        v => value::write_tagged(v, out),
    }
}

/// Microseconds since 1970 of an ISO-8601 date-time. With an offset (or `Z`) the instant is kept
/// (converted to UTC); without one the wall-clock time is taken as it is, never reinterpreted in
/// some server's time zone.
pub fn timestamp_micros(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let nanos: i128 = if let Ok(ts) = s.parse::<jiff::Timestamp>() {
        ts.as_nanosecond()
    } else {
        let dt: jiff::civil::DateTime = s.parse().map_err(|e| format!("{s:?} is not a date-time ({e})"))?;
        dt.to_zoned(jiff::tz::TimeZone::UTC)
            .map_err(|e| e.to_string())?
            .timestamp()
            .as_nanosecond()
    };
    if nanos % 1000 != 0 {
        return Err(format!("{s:?} has more precision than PostgreSQL keeps (microseconds)"));
    }
    i64::try_from(nanos / 1000).map_err(|_| format!("{s:?} is out of range"))
}

/// Encode a decimal number (`-12.50`, `1e300`, `NaN`, `Infinity`) in PostgreSQL's binary numeric
/// form, refusing what `numeric(precision, scale)` would have to round or could not hold.
pub fn numeric(text: &str, precision: Option<u32>, scale: Option<u32>, out: &mut Vec<u8>) -> Result<(), String> {
    let t = text.trim();
    let special = match t {
        "NaN" => Some(0xC000u16),
        "Infinity" | "+Infinity" => Some(0xD000),
        "-Infinity" => Some(0xF000),
        _ => None,
    };
    if let Some(sign) = special {
        if precision.is_some() && sign != 0xC000 {
            return Err(format!(
                "{t} does not fit numeric({},{})",
                precision.unwrap_or(0),
                scale.unwrap_or(0)
            ));
        }
        for x in [0u16, 0, sign, 0] {
            out.extend_from_slice(&x.to_be_bytes());
        }
        return Ok(());
    }
    let bad = || format!("{t:?} is not a number");
    let (negative, rest) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], rest[i + 1..].parse::<i64>().map_err(|_| bad())?),
        None => (rest, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int_part.is_empty() && frac_part.is_empty()
        || !int_part.bytes().chain(frac_part.bytes()).all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    // All digits, and where the decimal point falls among them.
    let digits: Vec<u8> = int_part.bytes().chain(frac_part.bytes()).map(|b| b - b'0').collect();
    let point = int_part.len() as i64 + exp;
    let dscale = (digits.len() as i64 - point).max(0);
    if dscale > 16383 || point > 131072 {
        return Err(format!("{t} is beyond what numeric holds"));
    }
    let first_nonzero = digits.iter().position(|&d| d != 0);
    if let (Some(p), Some(s)) = (precision, scale) {
        // Digits after the point beyond the scale must be zero; digits before it must fit.
        let frac_digits: Vec<u8> = (0..dscale)
            .map(|k| {
                let idx = point + k;
                if idx >= 0 {
                    digits.get(idx as usize).copied().unwrap_or(0)
                } else {
                    0
                }
            })
            .collect();
        if frac_digits.iter().skip(s as usize).any(|&d| d != 0) {
            return Err(format!(
                "{t} has more than {s} decimal places: numeric({p},{s}) would round it"
            ));
        }
        let int_digits = match first_nonzero {
            Some(f) if (f as i64) < point => point - f as i64,
            _ => 0,
        };
        if int_digits > (p as i64 - s as i64) {
            return Err(format!("{t} is too large for numeric({p},{s})"));
        }
    }
    let dscale_out = match scale {
        Some(s) => s as i64,
        None => dscale,
    };
    // Base-10000 groups aligned on the decimal point: group g covers decimal positions
    // [4g, 4g + 4) counted from the point (negative g before it).
    let Some(first) = first_nonzero else {
        for x in [0u16, 0, 0, dscale_out as u16] {
            out.extend_from_slice(&x.to_be_bytes());
        }
        return Ok(());
    };
    let last = digits.iter().rposition(|&d| d != 0).unwrap_or(first);
    let digit_at = |pos: i64| -> u16 {
        // pos: index into `digits` of a decimal position (point - k for the k-th before it).
        if pos >= 0 && (pos as usize) < digits.len() {
            digits[pos as usize] as u16
        } else {
            0
        }
    };
    // Decimal position of digit index i, relative to the point: i - point (0 = first after point).
    let rel_first = first as i64 - point;
    let rel_last = last as i64 - point;
    let group_of = |rel: i64| rel.div_euclid(4);
    let (g_first, g_last) = (group_of(rel_first), group_of(rel_last));
    let mut groups: Vec<u16> = Vec::with_capacity((g_last - g_first + 1) as usize);
    for g in g_first..=g_last {
        let mut n = 0u16;
        for k in 0..4 {
            n = n * 10 + digit_at(g * 4 + k + point);
        }
        groups.push(n);
    }
    let weight = -g_first - 1;
    let header = [
        groups.len() as u16,
        weight as i16 as u16,
        if negative { 0x4000 } else { 0 },
        dscale_out as u16,
    ];
    for x in header {
        out.extend_from_slice(&x.to_be_bytes());
    }
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(t: &str) -> Vec<u16> {
        let mut out = Vec::new();
        numeric(t, None, None, &mut out).unwrap();
        out.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect()
    }

    #[test]
    fn numeric_matches_postgresql_binary_form() {
        // [ndigits, weight, sign, dscale, digits...] as PostgreSQL's numeric_send writes them.
        assert_eq!(num("0"), [0, 0, 0, 0]);
        assert_eq!(num("1"), [1, 0, 0, 0, 1]);
        assert_eq!(num("1.50"), [2, 0, 0, 2, 1, 5000]);
        assert_eq!(num("-12345.678"), [3, 1, 0x4000, 3, 1, 2345, 6780]);
        assert_eq!(num("10000"), [1, 1, 0, 0, 1]);
        assert_eq!(num("0.0001"), [1, 0xFFFF, 0, 4, 1]);
        assert_eq!(num("0.00001"), [1, 0xFFFE, 0, 5, 1000]);
        assert_eq!(num("1e300")[..4], [1, 75, 0, 0]);
        assert_eq!(num("1.5e-7"), [1, 0xFFFE, 0, 8, 15]);
        assert_eq!(num("NaN"), [0, 0, 0xC000, 0]);
        assert_eq!(num("9223372036854775807"), [5, 4, 0, 0, 922, 3372, 368, 5477, 5807]);
    }

    #[test]
    fn numeric_refuses_rounding_and_overflow() {
        let mut out = Vec::new();
        assert!(numeric("1234.50", Some(12), Some(2), &mut out).is_ok());
        assert!(
            numeric("0.125", Some(12), Some(2), &mut out)
                .unwrap_err()
                .contains("would round")
        );
        assert!(
            numeric("1e11", Some(12), Some(2), &mut out)
                .unwrap_err()
                .contains("too large")
        );
        assert!(
            numeric("12.3.4", None, None, &mut out)
                .unwrap_err()
                .contains("not a number")
        );
        assert!(numeric("Infinity", Some(5), Some(0), &mut out).is_err());
    }

    #[test]
    fn dates_and_timestamps_count_from_2000() {
        let mut out = Vec::new();
        encode(&Value::text("2000-01-02"), &Encoder::Date, &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 4, 0, 0, 0, 1]);
        assert_eq!(
            timestamp_micros("2000-01-01 00:00:01").unwrap() - PG_EPOCH_MICROS,
            1_000_000
        );
        assert_eq!(
            timestamp_micros("2000-01-01T00:00:00.000001").unwrap() - PG_EPOCH_MICROS,
            1
        );
        // An offset keeps the instant; no offset keeps the wall clock.
        assert_eq!(timestamp_micros("2000-01-01T02:00:00+02:00").unwrap(), PG_EPOCH_MICROS);
        assert_eq!(timestamp_micros("2000-01-01T00:00:00Z").unwrap(), PG_EPOCH_MICROS);
        assert!(
            timestamp_micros("2000-01-01T00:00:00.0000001")
                .unwrap_err()
                .contains("more precision")
        );
        assert!(timestamp_micros("n/a").is_err());
    }

    #[test]
    fn values_that_cannot_fit_say_why() {
        let mut out = Vec::new();
        assert!(
            encode(&Value::text("a\0b"), &Encoder::Text, &mut out)
                .unwrap_err()
                .contains("NUL")
        );
        assert!(
            encode(&Value::Text(vec![0xff]), &Encoder::Text, &mut out)
                .unwrap_err()
                .contains("UTF-8")
        );
        assert!(
            encode(&Value::Integer(2), &Encoder::Bool, &mut out)
                .unwrap_err()
                .contains("not a boolean")
        );
        assert!(
            encode(&Value::Integer(70000), &Encoder::Int2, &mut out)
                .unwrap_err()
                .contains("out of range")
        );
        assert!(
            encode(&Value::text("x"), &Encoder::Jsonb, &mut out)
                .unwrap_err()
                .contains("not valid JSON")
        );
        assert!(
            encode(&Value::Real(0.1), &Encoder::Float4, &mut out)
                .unwrap_err()
                .contains("lose precision")
        );
        assert!(encode(&Value::Integer(1 << 60), &Encoder::Float8, &mut out).is_err());
    }

    #[test]
    fn dynamic_values_survive_jsonb() {
        let json = |v: Value| {
            let mut out = Vec::new();
            dynamic_json(v.as_ref(), &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(json(Value::Integer(42)), "42");
        assert_eq!(json(Value::Real(1e300)), r#"{"real":"1e300"}"#);
        assert_eq!(json(Value::Real(f64::INFINITY)), r#"{"real":"Infinity"}"#);
        assert_eq!(json(Value::text("a")), r#""a""#);
        assert_eq!(json(Value::text("a\0")), r#"{"text_b64":"YQA="}"#);
        assert_eq!(json(Value::Blob(vec![1])), r#"{"b64":"AQ=="}"#);
        // And the Any codec reads every one of them back exactly.
        for v in [
            Value::Integer(42),
            Value::Real(1e300),
            Value::Real(-0.0),
            Value::text("a\0"),
            Value::Blob(vec![1]),
        ] {
            let back = crate::value::decode_json(
                &serde_json::from_str(&json(v.clone())).unwrap(),
                crate::value::Codec::Any,
            )
            .unwrap();
            assert_eq!(format!("{back:?}"), format!("{v:?}"));
        }
    }

    #[test]
    fn types_by_name() {
        assert_eq!(
            Encoder::for_type("numeric(12,2)"),
            Some(Encoder::Numeric {
                precision: Some(12),
                scale: Some(2)
            })
        );
        assert_eq!(Encoder::for_type("character varying(20)"), Some(Encoder::Text));
        assert_eq!(
            Encoder::for_type("timestamp without time zone"),
            Some(Encoder::Timestamp)
        );
        assert_eq!(Encoder::for_type("bigint"), Some(Encoder::Int8));
        assert_eq!(Encoder::for_type("interval"), None);
    }
}
