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
pub type RowHash = [u8; 32];

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
        debug_assert_eq!(out.len(), self.columns.len());
        let mut problem = None;
        let mut d = serde_json::Deserializer::from_str(record.get());
        let seed = RowSeed {
            shape: self,
            out,
            problem: &mut problem,
        };
        match seed.deserialize(&mut d) {
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
        let mut h = Sha256::new();
        for (i, prefix) in &self.hash_order {
            h.update(prefix);
            get(*i).hash_into(&mut h);
        }
        h.finalize().into()
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
        let mut out = Vec::from(&b"{"[..]);
        for (n, &i) in cols.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&self.json_keys[i]);
            value::encode(get(i), self.columns[i].codec, &mut out);
        }
        out.push(b'}');
        serde_json::from_slice(&out).unwrap_or(serde_json::Value::Null)
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
        while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
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
}
