//! A stream's row shape, compiled once from its SCHEMA: column codecs, where each field goes,
//! the key columns, and the pieces of the row hash. Decoding goes straight from the record's JSON
//! text into column values without building a JSON tree.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::protocol::Schema;
use crate::value::{self, Codec, Value, ValueRef, ValueSeed};

/// A row hash (see the protocol docs: STREAM_END digest).
pub(crate) type RowHash = [u8; 32];

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub codec: Codec,
    pub nullable: bool,
    pub sql_type: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RowShape {
    pub stream: String,
    pub columns: Vec<Column>,
    index: HashMap<String, usize>,
    /// Indexes of the key columns, in key order.
    pub key: Vec<usize>,
    /// Column indexes sorted by name, with each name's hash prefix (u32 length + bytes).
    hash_order: Vec<(usize, Vec<u8>)>,
    /// `"name":` for each column, JSON-escaped, for writing records.
    json_keys: Vec<Vec<u8>>,
    /// The column names in hash order, each as u32 length and bytes (the digest's header).
    names_header: Vec<u8>,
    /// Tells shapes apart cheaply (a digest checks its header only when the shape changes).
    id: u64,
}

impl RowShape {
    pub fn from_schema(schema: &Schema) -> Result<RowShape> {
        let mut columns = Vec::with_capacity(schema.schema.properties.len());
        for (name, prop) in &schema.schema.properties {
            columns.push(Column {
                name: name.clone(),
                codec: Codec::from_property(prop),
                nullable: value::property_nullable(prop),
                sql_type: prop.get("x-sql-type").and_then(|t| t.as_str()).map(str::to_owned),
            });
        }
        let names: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
        RowShape::new(&schema.stream, columns, &schema.key_properties).map_err(|e| {
            Error::input(format!(
                "SCHEMA of stream {}: {e} (columns: {})",
                schema.stream,
                names.join(", ")
            ))
        })
    }

    pub fn new(stream: &str, columns: Vec<Column>, key: &[String]) -> Result<RowShape, String> {
        let index: HashMap<String, usize> = columns.iter().enumerate().map(|(i, c)| (c.name.clone(), i)).collect();
        if index.len() != columns.len() {
            return Err("a column name appears twice".into());
        }
        let key = key
            .iter()
            .map(|k| {
                index
                    .get(k)
                    .copied()
                    .ok_or_else(|| format!("key property {k:?} is not a column"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut hash_order: Vec<(usize, Vec<u8>)> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut prefix = (c.name.len() as u32).to_be_bytes().to_vec();
                prefix.extend_from_slice(c.name.as_bytes());
                (i, prefix)
            })
            .collect();
        hash_order.sort_by(|a, b| columns[a.0].name.cmp(&columns[b.0].name));
        let names_header = hash_order.iter().flat_map(|(_, p)| p.iter().copied()).collect();
        let json_keys = columns
            .iter()
            .map(|c| {
                let mut k = Vec::new();
                value::write_str(&c.name, &mut k);
                k.push(b':');
                k
            })
            .collect();
        Ok(RowShape {
            stream: stream.to_owned(),
            columns,
            index,
            key,
            hash_order,
            json_keys,
            names_header,
            id: {
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            },
        })
    }

    pub fn len(&self) -> usize {
        self.columns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    pub fn key_names(&self) -> Vec<&str> {
        self.key.iter().map(|&i| self.columns[i].name.as_str()).collect()
    }

    /// Decode a record object into `out` (one slot per column, in column order, all NULL on entry).
    /// A field missing from the record stays NULL; a field the SCHEMA does not name is an error.
    pub fn decode_into(&self, record: &RawValue, out: &mut [Value]) -> Result<(), String> {
        self.decode_text(record.get(), out)
    }

    /// Decode a record from its JSON text, which must be exactly one object.
    pub fn decode_text(&self, record: &str, out: &mut [Value]) -> Result<(), String> {
        debug_assert_eq!(out.len(), self.columns.len());
        let mut problem = None;
        let mut d = serde_json::Deserializer::from_str(record);
        let seed = RowSeed {
            shape: self,
            out,
            problem: &mut problem,
        };
        match seed.deserialize(&mut d).and_then(|()| d.end()) {
            Ok(()) => Ok(()),
            Err(e) => Err(problem.unwrap_or_else(|| e.to_string())),
        }
    }

    pub fn decode(&self, record: &RawValue) -> Result<Vec<Value>, String> {
        let mut out = vec![Value::Null; self.columns.len()];
        self.decode_into(record, &mut out)?;
        Ok(out)
    }

    /// The row hash: SHA-256 over the columns sorted by name, each name then canonical value.
    pub fn row_hash(&self, row: &[Value]) -> RowHash {
        self.row_hash_ref(|i| row[i].as_ref())
    }

    pub fn row_hash_ref<'a>(&self, get: impl Fn(usize) -> ValueRef<'a>) -> RowHash {
        let mut buf = Vec::with_capacity(self.names_header.len() + 16 * self.columns.len());
        for (i, prefix) in &self.hash_order {
            buf.extend_from_slice(prefix);
            get(*i).canonical_into(&mut buf);
        }
        Sha256::digest(&buf).into()
    }

    /// Write the record object (`{"a":1,...}`) for a row.
    pub fn encode_record<'a>(&self, get: impl Fn(usize) -> ValueRef<'a>, out: &mut Vec<u8>) {
        out.push(b'{');
        for (i, c) in self.columns.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&self.json_keys[i]);
            value::encode(get(i), c.codec, out);
        }
        out.push(b'}');
    }

    /// The key of a row as a JSON object (for findings, rejects and bookmarks).
    pub fn key_json<'a>(&self, get: impl Fn(usize) -> ValueRef<'a>) -> serde_json::Value {
        self.columns_json(&self.key, get)
    }

    /// Some columns of a row as a JSON object, each under its codec.
    pub fn columns_json<'a>(&self, cols: &[usize], get: impl Fn(usize) -> ValueRef<'a>) -> serde_json::Value {
        let mut out = Vec::new();
        self.write_columns(cols, get, &mut out);
        serde_json::from_slice(&out).unwrap_or(serde_json::Value::Null)
    }

    /// [`RowShape::columns_json`] written as JSON text onto `out`.
    pub fn write_columns<'a>(&self, cols: &[usize], get: impl Fn(usize) -> ValueRef<'a>, out: &mut Vec<u8>) {
        out.push(b'{');
        for (n, &i) in cols.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&self.json_keys[i]);
            value::encode(get(i), self.columns[i].codec, out);
        }
        out.push(b'}');
    }
}

/// The STREAM_END digest, `values-sha256` (see the protocol docs): one SHA-256 over the stream's
/// rows in order, each row its columns' canonical values in name order, with the column names
/// (a `ff` byte, then each name as u32 length and bytes) before the first row and again wherever
/// the columns change. No hash per row: a single pass over the values.
#[derive(Clone, Default)]
pub(crate) struct StreamDigest {
    h: Sha256,
    header: Option<Vec<u8>>,
    /// The shape whose header was checked last.
    shape: u64,
    /// Rows gathered before hashing: one large update costs less than many small ones.
    buf: Vec<u8>,
}

impl StreamDigest {
    pub(crate) fn add<'a>(&mut self, shape: &RowShape, get: impl Fn(usize) -> ValueRef<'a>) {
        self.add_header(shape);
        for (i, _) in &shape.hash_order {
            get(*i).canonical_into(&mut self.buf);
        }
        if self.buf.len() >= 16 * 1024 {
            self.h.update(&self.buf);
            self.buf.clear();
        }
    }

    pub(crate) fn add_row(&mut self, shape: &RowShape, row: &[Value]) {
        self.add(shape, |i| row[i].as_ref())
    }

    /// A delete of a change stream: a `fd` byte, then its key columns in key order.
    pub(crate) fn add_delete(&mut self, shape: &RowShape, row: &[Value]) {
        self.add_header(shape);
        self.buf.push(0xfd);
        for &i in &shape.key {
            row[i].as_ref().canonical_into(&mut self.buf);
        }
    }

    /// The column names before the first row, and again wherever the columns change.
    fn add_header(&mut self, shape: &RowShape) {
        if self.shape != shape.id && self.header.as_deref() != Some(shape.names_header.as_slice()) {
            self.buf.push(0xff);
            self.buf.extend_from_slice(&shape.names_header);
            self.header = Some(shape.names_header.clone());
        }
        self.shape = shape.id;
    }

    /// The digest so far, in hex; it goes on.
    pub(crate) fn peek_hex(&self) -> String {
        let mut h = self.h.clone();
        h.update(&self.buf);
        hex::encode(h.finalize())
    }

    /// The digest so far, in hex; the digest starts over.
    pub(crate) fn take_hex(&mut self) -> String {
        let mut d = std::mem::take(self);
        d.h.update(&d.buf);
        hex::encode(d.h.finalize())
    }
}

/// Streams a record object into a row, reporting the field that went wrong.
struct RowSeed<'s> {
    shape: &'s RowShape,
    out: &'s mut [Value],
    problem: &'s mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a record object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let columns = &self.shape.columns;
        // Which fields were seen: a bit mask for up to 128 columns, a vector beyond.
        let mut seen_mask = 0u128;
        let mut seen_vec = if columns.len() > 128 {
            vec![false; columns.len()]
        } else {
            Vec::new()
        };
        // Writers put fields in SCHEMA order: try the next column before looking the name up.
        let mut expect = 0usize;
        while let Some(value::Str(name)) = map.next_key::<value::Str<'de>>()? {
            let guess = columns.get(expect).filter(|c| c.name == name.as_ref()).map(|_| expect);
            let Some(i) = guess.or_else(|| self.shape.index.get(name.as_ref()).copied()) else {
                *self.problem = Some(format!(
                    "field {name:?} is not in the stream's SCHEMA (add it to the SCHEMA, or drop it with ferry-transform --drop-field)"
                ));
                return Err(de::Error::custom("unknown field"));
            };
            expect = i + 1;
            let twice = if i < 128 {
                let bit = 1u128 << i;
                let was = seen_mask & bit != 0;
                seen_mask |= bit;
                was
            } else {
                std::mem::replace(&mut seen_vec[i], true)
            };
            if twice {
                *self.problem = Some(format!("field {name:?} appears twice"));
                return Err(de::Error::custom("duplicate field"));
            }
            let column = &self.shape.columns[i];
            match map.next_value_seed(ValueSeed(column.codec)) {
                Ok(v) => self.out[i] = v,
                Err(e) => {
                    let msg = e.to_string();
                    let msg = msg.split(" at line ").next().unwrap_or(&msg);
                    *self.problem = Some(format!("field {name:?}: {msg}"));
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shape() -> RowShape {
        let props = json!({
            "id": {"type": "integer"},
            "name": {"type": ["string", "null"]},
            "avatar": {"type": ["string", "null"], "contentEncoding": "base64"},
            "score": {"type": ["number", "null"]},
        });
        let mut schema = Schema::new("main.users");
        schema.schema.properties = props.as_object().unwrap().clone();
        schema.key_properties = vec!["id".into()];
        RowShape::from_schema(&schema).unwrap()
    }

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn field_names_written_with_escapes_find_their_column() {
        let s = shape();
        // "name" with an escaped letter, "id" in \u form, and a tagged value whose tag is escaped.
        let row = s
            .decode(&raw(r#"{"\u0069d":7,"n\u0061me":"x","score":{"re\u0061l":"NaN"}}"#))
            .unwrap();
        assert_eq!(row[0], Value::Integer(7));
        assert_eq!(row[1], Value::Text(b"x".to_vec()));
        assert!(matches!(row[3], Value::Real(f) if f.is_nan()), "{:?}", row[3]);
        let e = s.decode(&raw(r#"{"id":1,"n\u0061mes":"x"}"#)).unwrap_err();
        assert!(e.contains("\"names\" is not in the stream's SCHEMA"), "{e}");
    }

    #[test]
    fn decodes_in_column_order_with_missing_as_null() {
        let s = shape();
        let row = s.decode(&raw(r#"{"score":1.5,"id":7,"avatar":"aGk="}"#)).unwrap();
        assert_eq!(
            row,
            vec![
                Value::Integer(7),
                Value::Null,
                Value::Blob(b"hi".to_vec()),
                Value::Real(1.5)
            ]
        );
    }

    #[test]
    fn names_the_field_that_is_wrong() {
        let s = shape();
        let e = s.decode(&raw(r#"{"id":"seven"}"#)).unwrap_err();
        assert_eq!(e, "field \"id\": expected integer, found the string \"seven\"");
        let e = s.decode(&raw(r#"{"id":1,"email":"x"}"#)).unwrap_err();
        assert!(e.starts_with("field \"email\" is not in the stream's SCHEMA"), "{e}");
        let e = s.decode(&raw(r#"{"id":1,"id":2}"#)).unwrap_err();
        assert_eq!(e, "field \"id\" appears twice");
        assert!(s.decode(&raw("[1]")).is_err());
    }

    #[test]
    fn encode_then_decode_is_identity_and_hash_ignores_field_order() {
        let s = shape();
        let row = vec![
            Value::Integer(1),
            Value::text("Zoë"),
            Value::Blob(vec![0, 255]),
            Value::Real(-0.0),
        ];
        let mut out = Vec::new();
        s.encode_record(|i| row[i].as_ref(), &mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, r#"{"id":1,"name":"Zoë","avatar":"AP8=","score":-0.0}"#);
        let back = s.decode(&raw(&text)).unwrap();
        assert_eq!(s.row_hash(&back), s.row_hash(&row));
        let shuffled = s
            .decode(&raw(r#"{"score":-0.0,"avatar":"AP8=","name":"Zoë","id":1}"#))
            .unwrap();
        assert_eq!(s.row_hash(&shuffled), s.row_hash(&row));
        let changed = s
            .decode(&raw(r#"{"score":0.0,"avatar":"AP8=","name":"Zoë","id":1}"#))
            .unwrap();
        assert_ne!(s.row_hash(&changed), s.row_hash(&row));
        assert_eq!(s.key_json(|i| row[i].as_ref()), json!({"id": 1}));
    }

    #[test]
    fn the_stream_digest_depends_on_values_order_and_columns_only() {
        let s = shape();
        let digest = |rows: &[Vec<Value>], shape: &RowShape| {
            let mut d = StreamDigest::default();
            for r in rows {
                d.add_row(shape, r);
            }
            d.take_hex()
        };
        let a = vec![Value::Integer(1), Value::text("a"), Value::Null, Value::Real(0.5)];
        let b = vec![Value::Integer(2), Value::Null, Value::Blob(vec![1]), Value::Null];
        let ab = digest(&[a.clone(), b.clone()], &s);
        assert_eq!(ab, digest(&[a.clone(), b.clone()], &s));
        assert_ne!(ab, digest(&[b.clone(), a.clone()], &s), "order matters");
        let mut a2 = a.clone();
        a2[3] = Value::Real(-0.5);
        assert_ne!(ab, digest(&[a2, b.clone()], &s), "values matter");
        // The same values under another column name are another stream.
        let mut renamed = Schema::new("main.users");
        renamed.schema.properties = json!({
            "id": {"type": "integer"}, "label": {"type": ["string", "null"]},
            "avatar": {"type": ["string", "null"], "contentEncoding": "base64"}, "score": {"type": ["number", "null"]}
        })
        .as_object()
        .unwrap()
        .clone();
        let r = RowShape::from_schema(&renamed).unwrap();
        assert_ne!(ab, digest(&[a.clone(), b.clone()], &r));
        // No rows: the digest of nothing.
        assert_eq!(
            digest(&[], &s),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        // JSON spelling does not matter: the same record written two ways decodes equal.
        let raw = |t: &str| serde_json::value::RawValue::from_string(t.into()).unwrap();
        let x = s.decode(&raw(r#"{"id":1,"name":"a","score":0.5}"#)).unwrap();
        let y = s
            .decode(&raw(r#"{ "score" : 5e-1, "name":"\u0061", "id":1.0 }"#))
            .unwrap();
        assert_eq!(digest(&[x], &s), digest(&[y], &s));
    }
}
