//! Values, losslessly: how a stored value becomes JSON in the stream and back, decided by the
//! column's schema, plus the canonical encoding used for hashing and the order used for keys.
//!
//! # How a value is written (the column's [`Codec`], read from its JSON Schema property)
//!
//! | codec     | schema                                   | plain form in the stream |
//! |-----------|------------------------------------------|---------------------------|
//! | `Integer` | `type` integer                           | number with exact digits (never through f64) |
//! | `Number`  | `type` number (or integer + number)      | integer digits for INTEGER, shortest round-trip float (always with `.` or `e`) for REAL; `"NaN"`, `"Infinity"`, `"-Infinity"` as strings |
//! | `Text`    | `type` string                            | string |
//! | `Bytes`   | `type` string, `contentEncoding` base64 (or base16) | padded standard base64 (or hex) |
//! | `Boolean` | `type` boolean                           | `true`/`false` (stored as 1/0 in SQLite) |
//! | `Json`    | `type` includes object or array, or `x-sql-type` json/jsonb without a `type` | the JSON value itself (a SQL NULL is `null`; a JSON `null`, or an object whose only key is `x-jsonb`, is written `{"x-jsonb": "<its JSON text>"}`) |
//! | `Any`     | `x-sqlite-dynamic: true`, or no/mixed `type` | self-describing: integer digits, float with `.`/`e`, string, tagged forms below |
//!
//! `null` is NULL under every codec. A column holding JSON as text (a SQLite `JSON` column, a
//! PostgreSQL `json` column, whose exact text matters) has `type` string and the `Text` codec.
//!
//! A value whose storage class is not the codec's plain one is written in a **tagged form**: a JSON
//! object with exactly one of these keys, accepted under every codec but `Json`:
//!
//! | tag          | meaning |
//! |--------------|---------|
//! | `{"b64": s}` | a BLOB, base64 |
//! | `{"text_b64": s}` | a TEXT value whose bytes are not valid UTF-8, base64 |
//! | `{"int": n}` | an INTEGER |
//! | `{"real": x}` | a REAL; `x` a number or `"NaN"`/`"Infinity"`/`"-Infinity"` |
//! | `{"text": s}` | a TEXT value |
//!
//! SQLite's export scans each table first, so a column's schema names exactly the storage classes
//! it holds; tags then only appear in `Any` columns (BLOBs, non-finite REALs) and for non-UTF-8 text.
//!
//! # Canonical encoding (hashing) and order (keys)
//!
//! [`Value::hash_into`] feeds a tag byte and the exact payload to a hasher: NULL `00`; INTEGER `01`
//! then the i64 big-endian; REAL `02` then the IEEE bits big-endian (every NaN as
//! `7ff8000000000000`); TEXT `03` then the u64 length and the bytes; BLOB `04` then the u64 length
//! and the bytes. [`compare`] is SQLite's order with BINARY
//! collation: NULL < numbers (INTEGER and REAL compared by value) < TEXT (bytewise) < BLOB (bytewise).
//!
//! One concern, kept whole (over 800 lines): every value kind's JSON form, canonical encoding and
//! order, side by side so they cannot drift apart.

pub(crate) mod time;

use std::cmp::Ordering;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value as Json;
use sha2::Digest as _;

/// A stored value, by storage class.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    /// Text as bytes: SQLite can hold TEXT that is not valid UTF-8, and we carry it exactly.
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

/// A borrowed [`Value`], as read from a database row without copying.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    Null,
    Integer(i64),
    Real(f64),
    Text(&'a [u8]),
    Blob(&'a [u8]),
}

impl Value {
    pub fn as_ref(&self) -> ValueRef<'_> {
        match self {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(t) => ValueRef::Text(t),
            Value::Blob(b) => ValueRef::Blob(b),
        }
    }

    pub fn text(s: &str) -> Value {
        Value::Text(s.as_bytes().to_vec())
    }

    /// Feed the canonical encoding of this value to a hasher.
    pub fn hash_into(&self, h: &mut sha2::Sha256) {
        self.as_ref().hash_into(h)
    }
}

impl ValueRef<'_> {
    pub fn to_owned(self) -> Value {
        match self {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Integer(i),
            ValueRef::Real(f) => Value::Real(f),
            ValueRef::Text(t) => Value::Text(t.to_vec()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        }
    }

    /// Append the canonical encoding (what [`ValueRef::hash_into`] hashes) to a buffer.
    pub fn canonical_into(self, out: &mut Vec<u8>) {
        match self {
            ValueRef::Null => out.push(0),
            ValueRef::Integer(i) => {
                out.push(1);
                out.extend_from_slice(&i.to_be_bytes());
            }
            ValueRef::Real(f) => {
                let bits = if f.is_nan() { 0x7ff8_0000_0000_0000 } else { f.to_bits() };
                out.push(2);
                out.extend_from_slice(&bits.to_be_bytes());
            }
            ValueRef::Text(t) => {
                out.push(3);
                out.extend_from_slice(&(t.len() as u64).to_be_bytes());
                out.extend_from_slice(t);
            }
            ValueRef::Blob(b) => {
                out.push(4);
                out.extend_from_slice(&(b.len() as u64).to_be_bytes());
                out.extend_from_slice(b);
            }
        }
    }

    pub fn hash_into(self, h: &mut sha2::Sha256) {
        match self {
            ValueRef::Null => h.update([0u8]),
            ValueRef::Integer(i) => {
                h.update([1u8]);
                h.update(i.to_be_bytes());
            }
            ValueRef::Real(f) => {
                let bits = if f.is_nan() { 0x7ff8_0000_0000_0000 } else { f.to_bits() };
                h.update([2u8]);
                h.update(bits.to_be_bytes());
            }
            ValueRef::Text(t) => {
                h.update([3u8]);
                h.update((t.len() as u64).to_be_bytes());
                h.update(t);
            }
            ValueRef::Blob(b) => {
                h.update([4u8]);
                h.update((b.len() as u64).to_be_bytes());
                h.update(b);
            }
        }
    }

    fn class_rank(self) -> u8 {
        match self {
            ValueRef::Null => 0,
            ValueRef::Integer(_) | ValueRef::Real(_) => 1,
            ValueRef::Text(_) => 2,
            ValueRef::Blob(_) => 3,
        }
    }
}

/// Display for people (error messages, findings): text as text, blobs as hex.
impl fmt::Display for ValueRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueRef::Null => f.write_str("NULL"),
            ValueRef::Integer(i) => write!(f, "{i}"),
            ValueRef::Real(x) => write!(f, "{x:?}"),
            ValueRef::Text(t) => write!(f, "{:?}", String::from_utf8_lossy(t)),
            ValueRef::Blob(b) => write!(f, "x'{}'", hex::encode(b)),
        }
    }
}

/// SQLite's ordering of values under BINARY collation.
pub(crate) fn compare(a: ValueRef<'_>, b: ValueRef<'_>) -> Ordering {
    match (a, b) {
        (ValueRef::Integer(x), ValueRef::Integer(y)) => x.cmp(&y),
        // -0.0 and 0.0 are equal keys, as in SQLite; NaN (which SQLite never stores) sorts last.
        (ValueRef::Real(x), ValueRef::Real(y)) => x.partial_cmp(&y).unwrap_or_else(|| x.total_cmp(&y)),
        (ValueRef::Integer(x), ValueRef::Real(y)) => compare_int_real(x, y),
        (ValueRef::Real(x), ValueRef::Integer(y)) => compare_int_real(y, x).reverse(),
        (ValueRef::Text(x), ValueRef::Text(y)) | (ValueRef::Blob(x), ValueRef::Blob(y)) => x.cmp(y),
        (ValueRef::Null, ValueRef::Null) => Ordering::Equal,
        _ => a.class_rank().cmp(&b.class_rank()),
    }
}

fn compare_int_real(i: i64, r: f64) -> Ordering {
    if r.is_nan() {
        return Ordering::Greater;
    }
    // 2^63 as f64 is exact; every i64 is below it.
    if r >= 9_223_372_036_854_775_808.0 {
        return Ordering::Less;
    }
    if r < -9_223_372_036_854_775_808.0 {
        return Ordering::Greater;
    }
    let t = r.trunc();
    let ti = t as i64; // exact: |t| < 2^63 and t is integral
    match i.cmp(&ti) {
        Ordering::Equal => 0.0f64.partial_cmp(&(r - t)).unwrap_or(Ordering::Equal),
        o => o,
    }
}

/// A key's (tuple's) canonical bytes, each value's [`ValueRef::canonical_into`] in turn: equal
/// keys, and only they, give equal bytes (to find a row again by its key).
pub(crate) fn canonical_key<'a>(values: impl IntoIterator<Item = &'a Value>) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        v.as_ref().canonical_into(&mut out);
    }
    out
}

/// Compare two keys (tuples) column by column.
pub(crate) fn compare_keys(a: &[Value], b: &[Value]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        match compare(x.as_ref(), y.as_ref()) {
            Ordering::Equal => {}
            o => return o,
        }
    }
    a.len().cmp(&b.len())
}

/// How a column's values are written in the stream (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Integer,
    Number,
    Text,
    Bytes(BytesEncoding),
    Boolean,
    Json,
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BytesEncoding {
    Base64,
    Base16,
}

/// `contentMediaType` of a text column whose values are JSON documents (JSON Schema's own
/// keyword for encoded content): a JSON column of a store with no JSON type.
pub(crate) const JSON_MEDIA_TYPE: &str = "application/json";

/// The JSON types a property allows, without "null".
pub(crate) fn property_types(prop: &Json) -> Vec<&str> {
    match prop.get("type") {
        Some(Json::String(s)) => vec![s.as_str()].into_iter().filter(|t| *t != "null").collect(),
        Some(Json::Array(a)) => a.iter().filter_map(Json::as_str).filter(|t| *t != "null").collect(),
        _ => Vec::new(),
    }
}

/// Whether a property allows null (an absent `type` allows anything).
pub(crate) fn property_nullable(prop: &Json) -> bool {
    match prop.get("type") {
        Some(Json::String(s)) => s == "null",
        Some(Json::Array(a)) => a.iter().any(|t| t == "null"),
        _ => true,
    }
}

impl Codec {
    /// The codec for one column's JSON Schema property.
    pub fn from_property(prop: &Json) -> Codec {
        if prop.get("x-sqlite-dynamic").and_then(Json::as_bool) == Some(true) {
            return Codec::Any;
        }
        let sql_type = prop
            .get("x-sql-type")
            .and_then(Json::as_str)
            .map(str::to_ascii_lowercase);
        let types = property_types(prop);
        let has = |t: &str| types.contains(&t);
        match types.as_slice() {
            [] if matches!(sql_type.as_deref(), Some("json" | "jsonb")) => Codec::Json,
            [] => Codec::Any,
            ["integer"] => Codec::Integer,
            ["boolean"] => Codec::Boolean,
            ["string"] => match prop.get("contentEncoding").and_then(Json::as_str) {
                Some(e) if e.eq_ignore_ascii_case("base64") => Codec::Bytes(BytesEncoding::Base64),
                Some(e) if e.eq_ignore_ascii_case("base16") => Codec::Bytes(BytesEncoding::Base16),
                _ => Codec::Text,
            },
            _ if types.iter().all(|t| matches!(*t, "integer" | "number")) => Codec::Number,
            _ if has("object") || has("array") => Codec::Json,
            _ => Codec::Any,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Codec::Integer => "integer",
            Codec::Number => "number",
            Codec::Text => "string",
            Codec::Bytes(_) => "bytes (string, base64)",
            Codec::Boolean => "boolean",
            Codec::Json => "JSON",
            Codec::Any => "any",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding: value -> JSON text

/// Append the JSON form of `v` under `codec` to `out`.
pub(crate) fn encode(v: ValueRef<'_>, codec: Codec, out: &mut Vec<u8>) {
    match (v, codec) {
        (ValueRef::Null, _) => out.extend_from_slice(b"null"),
        (ValueRef::Integer(i), Codec::Integer | Codec::Number | Codec::Any) => write_int(i, out),
        (ValueRef::Integer(i @ (0 | 1)), Codec::Boolean) => {
            out.extend_from_slice(if i == 1 { b"true" } else { b"false" })
        }
        (ValueRef::Real(f), Codec::Number) if !f.is_finite() => write_str(non_finite(f), out),
        (ValueRef::Real(f), Codec::Number | Codec::Any) if f.is_finite() => write_float(f, out),
        (ValueRef::Text(t), Codec::Text | Codec::Any) => match std::str::from_utf8(t) {
            Ok(s) => write_str(s, out),
            Err(_) => write_tag("text_b64", |o| write_str(&BASE64.encode(t), o), out),
        },
        (ValueRef::Text(t), Codec::Json) => write_json(t, out),
        (ValueRef::Integer(i), Codec::Json) => write_int(i, out),
        (ValueRef::Real(f), Codec::Json) if f.is_finite() => write_float(f, out),
        (ValueRef::Blob(b), Codec::Bytes(BytesEncoding::Base64)) => write_str(&BASE64.encode(b), out),
        (ValueRef::Blob(b), Codec::Bytes(BytesEncoding::Base16)) => write_str(&hex::encode(b), out),
        // Everything else is a value whose class the column's schema does not name: tag it.
        (v, _) => write_tagged(v, out),
    }
}

/// Write a value in its tagged form (valid under every codec but `Json`).
pub(crate) fn write_tagged(v: ValueRef<'_>, out: &mut Vec<u8>) {
    match v {
        ValueRef::Null => out.extend_from_slice(b"null"),
        ValueRef::Integer(i) => write_tag("int", |o| write_int(i, o), out),
        ValueRef::Real(f) if f.is_finite() => write_tag("real", |o| write_float(f, o), out),
        ValueRef::Real(f) => write_tag("real", |o| write_str(non_finite(f), o), out),
        ValueRef::Text(t) => match std::str::from_utf8(t) {
            Ok(s) => write_tag("text", |o| write_str(s, o), out),
            Err(_) => write_tag("text_b64", |o| write_str(&BASE64.encode(t), o), out),
        },
        ValueRef::Blob(b) => write_tag("b64", |o| write_str(&BASE64.encode(b), o), out),
    }
}

/// The key of the escape for JSON values that would otherwise be ambiguous (see the module docs).
const JSON_ESCAPE: &str = "x-jsonb";

/// A JSON value itself, under the `Json` codec. Text that is not JSON (which no source of this
/// codec produces) is written as a string rather than corrupting the line.
fn write_json(t: &[u8], out: &mut Vec<u8>) {
    let Ok(s) = std::str::from_utf8(t) else {
        return write_tag("text_b64", |o| write_str(&BASE64.encode(t), o), out);
    };
    match serde_json::from_str::<&serde_json::value::RawValue>(s) {
        Ok(raw) if needs_json_escape(raw.get()) => write_tag(JSON_ESCAPE, |o| write_str(raw.get(), o), out),
        Ok(raw) => out.extend_from_slice(raw.get().as_bytes()),
        Err(_) => write_str(s, out),
    }
}

/// JSON `null` (which would read back as SQL NULL) and objects shaped like the escape itself.
fn needs_json_escape(raw: &str) -> bool {
    raw == "null" || (raw.starts_with('{') && raw.contains(JSON_ESCAPE) && unescape_json(raw).is_some())
}

/// The JSON text inside `{"x-jsonb": "<text>"}`, if `raw` is exactly that.
fn unescape_json(raw: &str) -> Option<String> {
    match serde_json::from_str::<serde_json::Map<String, Json>>(raw) {
        Ok(m) if m.len() == 1 => match m.get(JSON_ESCAPE) {
            Some(Json::String(s)) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// Read a value under the `Json` codec from its raw JSON text.
fn json_value(raw: &str) -> Value {
    match raw {
        "null" => Value::Null,
        _ if raw.starts_with('{') && raw.contains(JSON_ESCAPE) => {
            unescape_json(raw).map_or_else(|| Value::text(raw), |s| Value::Text(s.into_bytes()))
        }
        _ => Value::text(raw),
    }
}

fn non_finite(f: f64) -> &'static str {
    if f.is_nan() {
        "NaN"
    } else if f > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    }
}

fn write_tag(tag: &str, body: impl FnOnce(&mut Vec<u8>), out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"");
    out.extend_from_slice(tag.as_bytes());
    out.extend_from_slice(b"\":");
    body(out);
    out.push(b'}');
}

pub(crate) fn write_int(i: i64, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
}

/// Shortest round-trip form; always has a `.` or an exponent, so it reads back as REAL.
pub(crate) fn write_float(f: f64, out: &mut Vec<u8>) {
    out.extend_from_slice(ryu::Buffer::new().format_finite(f).as_bytes());
}

/// A JSON string literal.
pub(crate) fn write_str(s: &str, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

// ---------------------------------------------------------------------------------------------
// Decoding: JSON -> value

/// A JSON string borrowed from the input when it has no escapes, copied only when it has.
/// (serde's own `Cow<str>` always copies: every field name of every row was an allocation.)
pub(crate) struct Str<'de>(pub std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'de>, E> {
                Ok(Str(std::borrow::Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Deserialize one value under a codec, straight from the parser (no intermediate JSON tree).
#[derive(Clone, Copy)]
pub(crate) struct ValueSeed(pub Codec);

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        if self.0 == Codec::Json {
            // Exactly as written: numbers keep every digit.
            let raw: Box<serde_json::value::RawValue> = serde::Deserialize::deserialize(d)?;
            return Ok(json_value(raw.get()));
        }
        d.deserialize_any(ValueVisitor(self.0))
    }
}

/// Decode a value already held as JSON.
pub(crate) fn decode_json(v: &Json, codec: Codec) -> Result<Value, String> {
    ValueSeed(codec).deserialize(v).map_err(|e| e.to_string())
}

struct ValueVisitor(Codec);

impl ValueVisitor {
    fn wrong<E: de::Error>(&self, found: &str) -> E {
        E::custom(format!("expected {}, found {found}", self.0.name()))
    }
}

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a value of type {}", self.0.name())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        match self.0 {
            // Not into integer or number columns: a boolean there is a stream at odds with its
            // SCHEMA, and taken as 1/0 it could make two keys one.
            Codec::Boolean | Codec::Any => Ok(Value::Integer(b as i64)),
            _ => Err(self.wrong(&format!("the boolean {b}"))),
        }
    }

    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Value, E> {
        match self.0 {
            Codec::Integer | Codec::Number | Codec::Any | Codec::Boolean => Ok(Value::Integer(i)),
            _ => Err(self.wrong(&format!("the number {i}"))),
        }
    }

    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Value, E> {
        match i64::try_from(u) {
            Ok(i) => self.visit_i64(i),
            Err(_) => Err(E::custom(format!(
                "the integer {u} does not fit a 64-bit signed integer (send it as a decimal string)"
            ))),
        }
    }

    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Value, E> {
        match self.0 {
            Codec::Number | Codec::Any => Ok(Value::Real(f)),
            // JSON Schema counts 1.0 as an integer; anything with a fraction is not.
            Codec::Integer if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Value::Integer(f as i64)),
            _ => Err(self.wrong(&format!("the number {f}"))),
        }
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        match self.0 {
            Codec::Text | Codec::Any => Ok(Value::text(s)),
            Codec::Bytes(BytesEncoding::Base64) => BASE64
                .decode(s)
                .map(Value::Blob)
                .map_err(|e| E::custom(format!("invalid base64 ({e})"))),
            Codec::Bytes(BytesEncoding::Base16) => hex::decode(s)
                .map(Value::Blob)
                .map_err(|e| E::custom(format!("invalid hex ({e})"))),
            Codec::Number => match s {
                "NaN" => Ok(Value::Real(f64::NAN)),
                "Infinity" => Ok(Value::Real(f64::INFINITY)),
                "-Infinity" => Ok(Value::Real(f64::NEG_INFINITY)),
                _ => Err(self.wrong(&format!("the string {s:?}"))),
            },
            // Integers beyond 2^53 travel as decimal text from some sources (D1).
            Codec::Integer => s
                .parse::<i64>()
                .map(Value::Integer)
                .map_err(|_| self.wrong(&format!("the string {s:?}"))),
            Codec::Boolean | Codec::Json => Err(self.wrong(&format!("the string {s:?}"))),
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _seq: A) -> Result<Value, A::Error> {
        Err(self.wrong("an array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let Some(tag) = map.next_key::<Str<'de>>()?.map(|s| s.0) else {
            return Err(self.wrong("an empty object"));
        };
        let value = match tag.as_ref() {
            "b64" => {
                let s = map.next_value::<Str<'de>>()?.0;
                Value::Blob(
                    BASE64
                        .decode(s.as_bytes())
                        .map_err(|e| de::Error::custom(format!("invalid base64 in {{\"b64\"}} ({e})")))?,
                )
            }
            "text_b64" => {
                let s = map.next_value::<Str<'de>>()?.0;
                Value::Text(
                    BASE64
                        .decode(s.as_bytes())
                        .map_err(|e| de::Error::custom(format!("invalid base64 in {{\"text_b64\"}} ({e})")))?,
                )
            }
            "int" => Value::Integer(map.next_value()?),
            "real" => match map.next_value::<Json>()? {
                Json::Number(n) => Value::Real(n.as_f64().ok_or_else(|| de::Error::custom("bad {\"real\"} number"))?),
                // A string: "NaN"/"Infinity"/"-Infinity", or digits kept from rewriting (jsonb).
                Json::String(s) => match ValueVisitor(Codec::Number).visit_str::<A::Error>(&s) {
                    Ok(Value::Real(f)) => Value::Real(f),
                    _ => Value::Real(
                        s.parse::<f64>()
                            .map_err(|_| de::Error::custom("bad {\"real\"} value"))?,
                    ),
                },
                _ => return Err(de::Error::custom("bad {\"real\"} value")),
            },
            "text" => Value::Text(map.next_value::<String>()?.into_bytes()),
            other => {
                return Err(de::Error::custom(format!(
                    "expected {}, found an object with key {other:?} (tagged values are {{\"b64\"}}, {{\"text_b64\"}}, {{\"int\"}}, {{\"real\"}}, {{\"text\"}})",
                    self.0.name()
                )));
            }
        };
        if map.next_key::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::custom("a tagged value has exactly one key"));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn enc(v: &Value, c: Codec) -> String {
        let mut out = Vec::new();
        encode(v.as_ref(), c, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn dec(s: &str, c: Codec) -> Result<Value, String> {
        let mut d = serde_json::Deserializer::from_str(s);
        ValueSeed(c).deserialize(&mut d).map_err(|e| e.to_string())
    }

    fn round_trip(v: Value, c: Codec) {
        let s = enc(&v, c);
        let back = dec(&s, c).unwrap_or_else(|e| panic!("{s}: {e}"));
        match (&v, &back) {
            (Value::Real(a), Value::Real(b)) => assert_eq!(a.to_bits(), b.to_bits(), "{s}"),
            _ => assert_eq!(v, back, "{s}"),
        }
    }

    #[test]
    fn codecs_from_schema() {
        assert_eq!(
            Codec::from_property(&json!({"type":["integer","null"]})),
            Codec::Integer
        );
        assert_eq!(
            Codec::from_property(&json!({"type":["integer","number"]})),
            Codec::Number
        );
        assert_eq!(Codec::from_property(&json!({"type":"string"})), Codec::Text);
        assert_eq!(
            Codec::from_property(&json!({"type":"string","contentEncoding":"base64"})),
            Codec::Bytes(BytesEncoding::Base64)
        );
        assert_eq!(
            Codec::from_property(&json!({"type":"string","x-sqlite-dynamic":true})),
            Codec::Any
        );
        assert_eq!(Codec::from_property(&json!({})), Codec::Any);
        assert_eq!(
            Codec::from_property(&json!({"type":"string","x-sql-type":"jsonb"})),
            Codec::Text
        );
        assert!(property_nullable(&json!({"type":["string","null"]})));
        assert!(!property_nullable(&json!({"type":"string"})));
    }

    #[test]
    fn edge_values_round_trip_under_their_codec_and_under_any() {
        let values = [
            (Value::Integer(i64::MIN), Codec::Integer),
            (Value::Integer(i64::MAX), Codec::Integer),
            (Value::Integer(9_007_199_254_740_993), Codec::Number),
            (Value::Real(-0.0), Codec::Number),
            (Value::Real(1e308), Codec::Number),
            (Value::Real(5e-324), Codec::Number),
            (Value::Real(0.1 + 0.2), Codec::Number),
            (Value::Real(f64::INFINITY), Codec::Number),
            (Value::Real(f64::NEG_INFINITY), Codec::Number),
            (Value::Real(1.0), Codec::Number),
            (Value::text("emoji 🦀 and NUL \0 and \"quotes\"\n"), Codec::Text),
            (Value::text(""), Codec::Text),
            (Value::Text(vec![0xff, 0xfe, b'a']), Codec::Text),
            (Value::Blob(vec![]), Codec::Bytes(BytesEncoding::Base64)),
            (Value::Blob((0..=255).collect()), Codec::Bytes(BytesEncoding::Base64)),
            (Value::Blob(vec![1, 2, 3]), Codec::Bytes(BytesEncoding::Base16)),
            (Value::Null, Codec::Integer),
        ];
        for (v, c) in values {
            round_trip(v.clone(), c);
            round_trip(v.clone(), Codec::Any);
            // And a value in a column whose schema names another class comes back exactly too.
            round_trip(v.clone(), Codec::Text);
            round_trip(v, Codec::Integer);
        }
    }

    #[test]
    fn plain_forms_are_what_singer_consumers_expect() {
        assert_eq!(enc(&Value::Integer(42), Codec::Integer), "42");
        assert_eq!(enc(&Value::Real(1.0), Codec::Number), "1.0");
        assert_eq!(enc(&Value::Real(1e300), Codec::Number), "1e300");
        assert_eq!(enc(&Value::Real(f64::INFINITY), Codec::Number), "\"Infinity\"");
        assert_eq!(
            enc(&Value::Blob(b"hi".to_vec()), Codec::Bytes(BytesEncoding::Base64)),
            "\"aGk=\""
        );
        assert_eq!(enc(&Value::Blob(b"hi".to_vec()), Codec::Any), "{\"b64\":\"aGk=\"}");
        assert_eq!(enc(&Value::Text(vec![0xff]), Codec::Text), "{\"text_b64\":\"/w==\"}");
        assert_eq!(enc(&Value::Integer(7), Codec::Text), "{\"int\":7}");
        assert_eq!(enc(&Value::Integer(1), Codec::Boolean), "true");
    }

    #[test]
    fn wrong_types_are_refused_with_what_was_expected() {
        assert!(
            dec("\"abc\"", Codec::Integer)
                .unwrap_err()
                .starts_with("expected integer, found the string \"abc\"")
        );
        assert!(dec("1.5", Codec::Integer).unwrap_err().contains("expected integer"));
        assert!(
            dec("12", Codec::Text)
                .unwrap_err()
                .contains("expected string, found the number 12")
        );
        assert!(
            dec("\"%%%\"", Codec::Bytes(BytesEncoding::Base64))
                .unwrap_err()
                .contains("invalid base64")
        );
        assert!(dec("[1]", Codec::Integer).unwrap_err().contains("an array"));
        assert!(dec("{\"x\":1}", Codec::Text).unwrap_err().contains("key \"x\""));
        assert!(
            dec("{\"int\":1,\"text\":\"a\"}", Codec::Any)
                .unwrap_err()
                .contains("exactly one key")
        );
        assert!(
            dec("18446744073709551615", Codec::Integer)
                .unwrap_err()
                .contains("does not fit")
        );
    }

    #[test]
    fn json_codec_carries_the_value_itself_exactly() {
        assert_eq!(
            dec("{\"b64\":\"x\"}", Codec::Json).unwrap(),
            Value::text("{\"b64\":\"x\"}")
        );
        assert_eq!(dec("[1, 2]", Codec::Json).unwrap(), Value::text("[1, 2]"));
        assert_eq!(dec("\"{}\"", Codec::Json).unwrap(), Value::text("\"{}\""));
        // Digits beyond any float survive.
        let big = "123456789012345678901234567890.000000000000000000001";
        assert_eq!(dec(big, Codec::Json).unwrap(), Value::text(big));
        assert_eq!(dec("null", Codec::Json).unwrap(), Value::Null);
        assert_eq!(
            decode_json(&json!({"a": [1]}), Codec::Json).unwrap(),
            Value::text("{\"a\":[1]}")
        );
        for text in [
            "null",
            "{\"x-jsonb\": \"null\"}",
            "{\"x-jsonb\": 1}",
            "{\"a\": {\"x-jsonb\": \"y\"}}",
            "\"x-jsonb\"",
            "[null]",
            "1e400",
            "-0",
        ] {
            round_trip(Value::text(text), Codec::Json);
        }
        assert_eq!(enc(&Value::text("null"), Codec::Json), "{\"x-jsonb\":\"null\"}");
        assert_eq!(enc(&Value::text("{\"a\": 1}"), Codec::Json), "{\"a\": 1}");
        // And a column holding JSON as text keeps the text.
        assert_eq!(
            Codec::from_property(&json!({"type":["string","null"],"x-sql-type":"json"})),
            Codec::Text
        );
        assert_eq!(Codec::from_property(&json!({"x-sql-type":"jsonb"})), Codec::Json);
        assert_eq!(
            Codec::from_property(&json!({"type":["object","array","string","number","boolean","null"]})),
            Codec::Json
        );
    }

    #[test]
    fn order_is_sqlite_order() {
        use Ordering::*;
        let n = Value::Null;
        let i = Value::Integer(2);
        let r = Value::Real(2.5);
        let t = Value::text("a");
        let b = Value::Blob(vec![0]);
        let seq = [&n, &i, &r, &t, &b];
        for (x, a) in seq.iter().enumerate() {
            for (y, c) in seq.iter().enumerate() {
                assert_eq!(compare(a.as_ref(), c.as_ref()), x.cmp(&y));
            }
        }
        assert_eq!(compare(ValueRef::Integer(2), ValueRef::Real(2.0)), Equal);
        assert_eq!(compare(ValueRef::Integer(i64::MAX), ValueRef::Real(9.3e18)), Less);
        assert_eq!(compare(ValueRef::Integer(-3), ValueRef::Real(-2.5)), Less);
        assert_eq!(compare(ValueRef::Real(-0.0), ValueRef::Real(0.0)), Equal);
        assert_eq!(compare(ValueRef::Text(b"B"), ValueRef::Text(b"a")), Less);
    }

    #[test]
    fn canonical_hash_separates_classes() {
        let h = |v: Value| {
            let mut s = sha2::Sha256::new();
            v.hash_into(&mut s);
            s.finalize().to_vec()
        };
        assert_ne!(h(Value::Integer(1)), h(Value::Real(1.0)));
        assert_ne!(h(Value::text("a")), h(Value::Blob(b"a".to_vec())));
        assert_ne!(h(Value::Real(0.0)), h(Value::Real(-0.0)));
        assert_eq!(h(Value::Real(f64::NAN)), h(Value::Real(-f64::NAN)));
    }

    proptest! {
        #[test]
        fn any_value_round_trips_under_any_codec(
            v in prop_oneof![
                Just(Value::Null),
                any::<i64>().prop_map(Value::Integer),
                any::<f64>().prop_filter("SQLite holds no NaN", |f| !f.is_nan()).prop_map(Value::Real),
                any::<Vec<u8>>().prop_map(Value::Text),
                any::<String>().prop_map(|s| Value::Text(s.into_bytes())),
                any::<Vec<u8>>().prop_map(Value::Blob),
            ],
            c in prop_oneof![
                Just(Codec::Integer),
                Just(Codec::Number),
                Just(Codec::Text),
                Just(Codec::Bytes(BytesEncoding::Base64)),
                Just(Codec::Any),
            ],
        ) {
            round_trip(v, c);
        }
    }
}
