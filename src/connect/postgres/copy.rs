//! PostgreSQL binary COPY: the file header and trailer, and each column type's encoder from a
//! stream value. A value the column's type cannot hold exactly is refused with the reason (the
//! importer puts the row in the reject file); nothing is rounded or truncated silently.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::value::time::{pg_date, pg_time, pg_timestamp};
use crate::value::{self, Codec, Value, ValueRef};

pub(crate) const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
pub(crate) const TRAILER: &[u8] = &[0xff, 0xff];

/// How one column's values are encoded, decided by its PostgreSQL type.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Encoder {
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
    /// An array, from a JSON array or PostgreSQL's array text (text format only); `json` when its
    /// elements are json/jsonb.
    Array {
        json: bool,
    },
    /// `interval`: its text (text format only). A number is refused: it does not say its unit
    /// (Django keeps a DurationField as microseconds, PostgreSQL would read seconds).
    Interval,
    /// Any other type (timetz, inet, enums, money...): the value's text, which the type's own
    /// input reads (text format only).
    Textual,
}

impl Encoder {
    /// Whether values of this encoder have a binary form (else the table is copied as text).
    pub(crate) fn binary(&self) -> bool {
        !matches!(self, Encoder::Array { .. } | Encoder::Interval | Encoder::Textual)
    }

    /// The encoder for a type as `format_type()` prints it (`numeric(12,2)`, `timestamp without
    /// time zone`, `character varying(20)`, `integer[]`...); `None` for a type ferry has no
    /// binary form for (its values then go as text: [`Encoder::Textual`]).
    pub(crate) fn for_type(formatted: &str) -> Option<Encoder> {
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
            _ if base.ends_with("[]") => Encoder::Array {
                json: base.starts_with("json"),
            },
            "text" | "character varying" | "varchar" | "name" | "citext" | "character" | "char" | "bpchar" => {
                Encoder::Text
            }
            "bytea" => Encoder::Bytea,
            "date" => Encoder::Date,
            "timestamp without time zone" | "timestamp" => Encoder::Timestamp,
            "timestamp with time zone" | "timestamptz" => Encoder::TimestampTz,
            "time without time zone" | "time" => Encoder::Time,
            "uuid" => Encoder::Uuid,
            "json" => Encoder::Json,
            "jsonb" => Encoder::Jsonb,
            "interval" => Encoder::Interval,
            _ => return None,
        })
    }

    /// The encoder for a stream column (property `prop`) going into a column of `pg_type`: a
    /// jsonb column of values of several kinds takes each in its self-describing form.
    pub(crate) fn for_column(pg_type: &str, prop: &serde_json::Value) -> Encoder {
        if pg_type == "jsonb" && Codec::from_property(prop) == Codec::Any {
            return Encoder::Dynamic;
        }
        Encoder::for_type(pg_type).unwrap_or(Encoder::Textual)
    }
}

/// Why the import would refuse `v` for a column encoded by `enc`, if it would (what `ferry
/// assess --to postgres` reports).
pub(crate) fn refusal(v: &Value, enc: &Encoder) -> Option<String> {
    let (mut out, mut scratch) = (Vec::new(), Vec::new());
    match enc.binary() {
        true => encode(v, enc, &mut out).err(),
        false => encode_text(v, enc, &mut out, &mut scratch).err(),
    }
}

/// Append one field (length, then bytes; -1 for NULL).
pub(crate) fn encode(v: &Value, enc: &Encoder, out: &mut Vec<u8>) -> Result<(), String> {
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
            out.extend_from_slice(&pg_date(s)?.to_be_bytes());
        }
        (Encoder::Timestamp | Encoder::TimestampTz, Value::Text(t)) => {
            let s = std::str::from_utf8(t).map_err(|_| wrong("timestamp"))?;
            out.extend_from_slice(&pg_timestamp(s)?.to_be_bytes());
        }
        (Encoder::Time, Value::Text(t)) => {
            let s = std::str::from_utf8(t).map_err(|_| wrong("time"))?;
            out.extend_from_slice(&pg_time(s)?.to_be_bytes());
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
        (Encoder::Array { .. } | Encoder::Interval | Encoder::Textual, _) => return Err("has no binary form".into()),
    }
    Ok(())
}

/// Append one field in COPY text format, refused for the same reasons as its binary form
/// (`scratch` holds that check's output).
pub(crate) fn encode_text(v: &Value, enc: &Encoder, out: &mut Vec<u8>, scratch: &mut Vec<u8>) -> Result<(), String> {
    let text_of = |t: &[u8]| -> Result<(), String> {
        let s = std::str::from_utf8(t).map_err(|_| "the text is not valid UTF-8".to_string())?;
        if s.contains('\0') {
            return Err("the text contains a NUL byte, which PostgreSQL cannot hold".into());
        }
        Ok(())
    };
    match (enc, v) {
        (_, Value::Null) => out.extend_from_slice(b"\\N"),
        // PostgreSQL's own array text (`{...}`, how an array of composites travels) goes as it is.
        (Encoder::Array { .. }, Value::Text(t)) if t.trim_ascii_start().starts_with(b"{") => {
            text_of(t)?;
            escape_text(t, out);
        }
        (Encoder::Array { json }, Value::Text(t)) => {
            text_of(t)?;
            let lit = array_literal(std::str::from_utf8(t).unwrap_or(""), *json)?;
            escape_text(lit.as_bytes(), out);
        }
        (Encoder::Array { .. }, _) => return Err(format!("{} is not an array", shown(v))),
        (Encoder::Interval, Value::Integer(_) | Value::Real(_)) => {
            return Err(format!(
                "{} is a number, which does not say its unit: an interval column takes an interval's text \
                 ('1 day 02:00:00', or '90061000000 microseconds' for Django's DurationField, which SQLite keeps \
                 as microseconds)",
                shown(v)
            ));
        }
        (Encoder::Interval | Encoder::Textual, Value::Text(t)) => {
            text_of(t)?;
            escape_text(t, out);
        }
        (Encoder::Textual, Value::Integer(i)) => value::write_int(*i, out),
        (Encoder::Textual, Value::Real(f)) => write_real(*f, out),
        (Encoder::Interval | Encoder::Textual, Value::Blob(_)) => {
            return Err(format!("{} is bytes, not text", shown(v)));
        }
        (Encoder::Dynamic, v) => {
            scratch.clear();
            dynamic_json(v.as_ref(), scratch);
            escape_text(scratch, out);
        }
        (enc, v) => {
            scratch.clear();
            body(v, enc, scratch)?;
            match (enc, v) {
                (Encoder::Bool, Value::Integer(i)) => out.push(if *i == 1 { b't' } else { b'f' }),
                (_, Value::Integer(i)) => value::write_int(*i, out),
                (_, Value::Real(f)) => write_real(*f, out),
                (Encoder::Uuid, Value::Blob(b)) => out.extend_from_slice(
                    uuid::Uuid::from_slice(b)
                        .map_err(|e| e.to_string())?
                        .to_string()
                        .as_bytes(),
                ),
                (_, Value::Blob(b)) => {
                    out.extend_from_slice(b"\\\\x");
                    out.extend_from_slice(hex::encode(b).as_bytes());
                }
                (_, Value::Text(t)) => escape_text(t, out),
                (_, Value::Null) => out.extend_from_slice(b"\\N"),
            }
        }
    }
    Ok(())
}

fn write_real(f: f64, out: &mut Vec<u8>) {
    if f.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if f.is_infinite() {
        out.extend_from_slice(if f > 0.0 { b"Infinity" } else { b"-Infinity" });
    } else {
        out.extend_from_slice(ryu::Buffer::new().format_finite(f).as_bytes());
    }
}

/// A PostgreSQL array literal (`{1,NULL,"a b"}`) from a JSON array (`[1,null,"a b"]`), nested
/// arrays as dimensions. Elements are quoted, so any element type reads them; numbers keep
/// every digit. With `json`, elements are JSON values themselves (a json/jsonb array).
pub(crate) fn array_literal(text: &str, json: bool) -> Result<String, String> {
    use serde_json::value::RawValue;
    fn quote(v: &str, out: &mut String) {
        out.push('"');
        for c in v.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    fn walk(raw: &str, json: bool, out: &mut String) -> Result<(), String> {
        let raw = raw.trim();
        if raw.starts_with('[') {
            let items: Vec<&RawValue> = serde_json::from_str(raw).map_err(|e| format!("not a JSON array ({e})"))?;
            out.push('{');
            for (i, it) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                walk(it.get(), json, out)?;
            }
            out.push('}');
        } else if raw == "null" {
            out.push_str("NULL");
        } else if raw.starts_with('"') && !json {
            let s: String = serde_json::from_str(raw).map_err(|e| e.to_string())?;
            quote(&s, out);
        } else {
            quote(raw, out);
        }
        Ok(())
    }
    if !text.trim_start().starts_with('[') {
        return Err(format!("{text:?} is not a JSON array"));
    }
    let mut out = String::new();
    walk(text, json, &mut out)?;
    Ok(out)
}

/// The self-describing JSON of a value, in a form jsonb keeps exactly: integers as numbers
/// (jsonb keeps every digit), everything else tagged (jsonb would rewrite `1e300` as digits).
pub(crate) fn dynamic_json(v: ValueRef<'_>, out: &mut Vec<u8>) {
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

/// Encode a decimal number (`-12.50`, `1e300`, `NaN`, `Infinity`) in PostgreSQL's binary numeric
/// form, refusing what `numeric(precision, scale)` would have to round or could not hold.
pub(crate) fn numeric(text: &str, precision: Option<u32>, scale: Option<u32>, out: &mut Vec<u8>) -> Result<(), String> {
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

/// Split one line of PostgreSQL's COPY text format (without its `\n`) into fields, unescaped into
/// `buf`: each field is its range in `buf`, or `None` for NULL (`\N`).
pub(crate) fn split_text(line: &[u8], buf: &mut Vec<u8>, fields: &mut Vec<Option<std::ops::Range<usize>>>) {
    buf.clear();
    fields.clear();
    for raw in line.split(|b| *b == b'\t') {
        if raw == b"\\N" {
            fields.push(None);
            continue;
        }
        let start = buf.len();
        if !raw.contains(&b'\\') {
            buf.extend_from_slice(raw);
            fields.push(Some(start..buf.len()));
            continue;
        }
        let mut i = 0;
        while i < raw.len() {
            if raw[i] != b'\\' || i + 1 == raw.len() {
                buf.push(raw[i]);
                i += 1;
                continue;
            }
            i += 1;
            match raw[i] {
                b'b' => buf.push(8),
                b'f' => buf.push(12),
                b'n' => buf.push(b'\n'),
                b'r' => buf.push(b'\r'),
                b't' => buf.push(b'\t'),
                b'v' => buf.push(11),
                b'0'..=b'7' => {
                    let mut n = 0u32;
                    let mut k = 0;
                    while k < 3 && i < raw.len() && (b'0'..=b'7').contains(&raw[i]) {
                        n = n * 8 + (raw[i] - b'0') as u32;
                        i += 1;
                        k += 1;
                    }
                    buf.push(n as u8);
                    continue;
                }
                other => buf.push(other),
            }
            i += 1;
        }
        fields.push(Some(start..buf.len()));
    }
}

/// Append a value to a line of COPY text format, escaped.
pub(crate) fn escape_text(v: &[u8], out: &mut Vec<u8>) {
    for &b in v {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::time::{PG_EPOCH_MICROS, timestamp_micros};

    /// The fields of a line of COPY text format, unescaped (`None` for `\\N`).
    fn copy_text_fields(line: &[u8]) -> Vec<Option<Vec<u8>>> {
        let (mut buf, mut fields) = (Vec::new(), Vec::new());
        split_text(line, &mut buf, &mut fields);
        fields.into_iter().map(|f| f.map(|r| buf[r].to_vec())).collect()
    }

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
    fn copy_text_fields_unescape_and_escape_back() {
        let f = copy_text_fields(b"1\t\\N\ta\\tb\\nc\\\\d\t\\\\x00ff\t\\101\t");
        assert_eq!(f[0].as_deref(), Some(&b"1"[..]));
        assert_eq!(f[1], None);
        assert_eq!(f[2].as_deref(), Some(&b"a\tb\nc\\d"[..]));
        assert_eq!(f[3].as_deref(), Some(&b"\\x00ff"[..]));
        assert_eq!(f[4].as_deref(), Some(&b"A"[..]));
        assert_eq!(f[5].as_deref(), Some(&b""[..]));
        let mut line = Vec::new();
        escape_text(b"a\tb\nc\\d\re", &mut line);
        assert_eq!(copy_text_fields(&line)[0].as_deref(), Some(&b"a\tb\nc\\d\re"[..]));
    }

    #[test]
    fn text_format_fields() {
        let t = |v: Value, e: Encoder| {
            let (mut out, mut scratch) = (Vec::new(), Vec::new());
            encode_text(&v, &e, &mut out, &mut scratch).map(|_| String::from_utf8(out).unwrap())
        };
        assert_eq!(t(Value::Integer(1), Encoder::Bool), Ok("t".into()));
        assert_eq!(t(Value::Null, Encoder::Int8), Ok("\\N".into()));
        assert_eq!(t(Value::Blob(vec![0, 255]), Encoder::Bytea), Ok("\\\\x00ff".into()));
        assert_eq!(t(Value::text("a\tb"), Encoder::Textual), Ok("a\\tb".into()));
        // An interval takes its text; a number (Django's microseconds, or seconds?) is refused.
        assert_eq!(
            t(Value::text("1 day 02:00:00"), Encoder::Interval),
            Ok("1 day 02:00:00".into())
        );
        let refused = t(Value::Integer(-268_694_861_168), Encoder::Interval).unwrap_err();
        assert!(refused.contains("does not say its unit"), "{refused}");
        assert!(t(Value::Real(1.5), Encoder::Interval).is_err());
        assert_eq!(t(Value::Real(f64::NAN), Encoder::Float8), Ok("NaN".into()));
        assert!(
            t(
                Value::text("1.234"),
                Encoder::Numeric {
                    precision: Some(4),
                    scale: Some(2)
                }
            )
            .is_err()
        );
        assert_eq!(
            t(
                Value::text("[[1,null],[\"a\\\"b\",\"c,d\"]]"),
                Encoder::Array { json: false }
            ),
            Ok("{{\"1\",NULL},{\"a\\\\\"b\",\"c,d\"}}".into())
        );
        assert_eq!(
            array_literal("[{\"a\": 1}, \"s\"]", true),
            Ok("{\"{\\\"a\\\": 1}\",\"\\\"s\\\"\"}".into())
        );
        assert_eq!(
            t(Value::text("{\"(1,\\\"x\\\")\",NULL}"), Encoder::Array { json: false }),
            Ok("{\"(1,\\\\\"x\\\\\")\",NULL}".into()),
            "PostgreSQL's array text as it is (COPY-escaped)"
        );
        assert!(t(Value::text("1,2"), Encoder::Array { json: false }).is_err());
        assert_eq!(Encoder::for_type("integer[]"), Some(Encoder::Array { json: false }));
        assert_eq!(Encoder::for_type("character(5)"), Some(Encoder::Text));
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
        assert_eq!(Encoder::for_type("interval"), Some(Encoder::Interval));
        assert_eq!(Encoder::for_type("inet"), None);
    }
}
