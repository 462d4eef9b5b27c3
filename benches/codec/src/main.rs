//! How fast each JSON parser turns ferry's RECORD lines into rows, decoded the way
//! `ferry-import` decodes them: a serde `DeserializeSeed` over the record object, fields in
//! SCHEMA order, each value straight into a typed cell (no intermediate JSON tree), text copied
//! into the row. Only the parser changes between the runs.
//!
//!   cargo run --release --manifest-path benches/codec/Cargo.toml -- STREAM.ndjson [ROUNDS]
//!
//! Prints one Markdown row per parser: best-of-ROUNDS seconds, ns per row, CPU-s per million rows
//! (one thread, so wall = CPU), and the ratio to serde_json.

use std::borrow::Cow;
use std::fmt;
use std::time::Instant;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, Visitor};

/// A cell, as ferry's `Value` holds it.
#[derive(Debug, PartialEq)]
enum Cell {
    Null,
    Integer(i64),
    Real(f64),
    Text(Vec<u8>),
}

struct CellVisitor;

impl<'de> Visitor<'de> for CellVisitor {
    type Value = Cell;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value")
    }
    fn visit_unit<E>(self) -> Result<Cell, E> {
        Ok(Cell::Null)
    }
    fn visit_none<E>(self) -> Result<Cell, E> {
        Ok(Cell::Null)
    }
    fn visit_i64<E>(self, i: i64) -> Result<Cell, E> {
        Ok(Cell::Integer(i))
    }
    fn visit_u64<E: serde::de::Error>(self, u: u64) -> Result<Cell, E> {
        i64::try_from(u).map(Cell::Integer).map_err(E::custom)
    }
    fn visit_f64<E>(self, f: f64) -> Result<Cell, E> {
        Ok(Cell::Real(f))
    }
    fn visit_str<E>(self, s: &str) -> Result<Cell, E> {
        Ok(Cell::Text(s.as_bytes().to_vec()))
    }
}

struct CellSeed;

impl<'de> DeserializeSeed<'de> for CellSeed {
    type Value = Cell;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cell, D::Error> {
        d.deserialize_any(CellVisitor)
    }
}

/// A field name, borrowed when the parser can.
struct Name<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// The record object into `out`, one slot per column of `names`.
struct RowSeed<'s> {
    names: &'s [String],
    out: &'s mut Vec<Cell>,
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
        let mut expect = 0;
        while let Some(Name(name)) = map.next_key::<Name<'de>>()? {
            let i = if self.names.get(expect).is_some_and(|n| *n == name) {
                expect
            } else {
                self.names
                    .iter()
                    .position(|n| *n == name)
                    .ok_or_else(|| serde::de::Error::custom("unknown field"))?
            };
            expect = i + 1;
            self.out[i] = map.next_value_seed(CellSeed)?;
        }
        Ok(())
    }
}

/// A RECORD line's stream name and record text, as ferry's fast path slices them.
fn record_of(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix(r#"{"type":"RECORD","stream":""#)?;
    let (stream, rest) = rest.split_once('"')?;
    let rec = rest.strip_prefix(r#","record":"#)?.strip_suffix('}')?;
    Some((stream, rec))
}

/// Each stream's field names, in SCHEMA order.
fn schemas(text: &str) -> std::collections::HashMap<String, Vec<String>> {
    let mut out = std::collections::HashMap::new();
    for line in text.lines().filter(|l| l.starts_with(r#"{"type":"SCHEMA""#)) {
        let v: serde_json::Value = serde_json::from_str(line).expect("a SCHEMA line");
        let props = v["schema"]["properties"].as_object().expect("properties");
        let names = props.keys().cloned().collect();
        out.insert(v["stream"].as_str().expect("stream").to_owned(), names);
    }
    out
}

type Decode = fn(&[String], &str, &mut Vec<Cell>, &mut Vec<u8>) -> Result<(), String>;

fn with_serde_json(names: &[String], rec: &str, out: &mut Vec<Cell>, _: &mut Vec<u8>) -> Result<(), String> {
    let mut d = serde_json::Deserializer::from_str(rec);
    RowSeed { names, out }.deserialize(&mut d).map_err(|e| e.to_string())?;
    d.end().map_err(|e| e.to_string())
}

fn with_sonic_rs(names: &[String], rec: &str, out: &mut Vec<Cell>, _: &mut Vec<u8>) -> Result<(), String> {
    let mut d = sonic_rs::Deserializer::from_str(rec);
    RowSeed { names, out }.deserialize(&mut d).map_err(|e| e.to_string())?;
    d.end().map_err(|e| e.to_string())
}

/// simd-json parses in place: the record is copied into a reused buffer first.
fn with_simd_json(names: &[String], rec: &str, out: &mut Vec<Cell>, buf: &mut Vec<u8>) -> Result<(), String> {
    buf.clear();
    buf.extend_from_slice(rec.as_bytes());
    let mut d = simd_json::Deserializer::from_slice(buf).map_err(|e| e.to_string())?;
    RowSeed { names, out }.deserialize(&mut d).map_err(|e| e.to_string())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: ferry-codec-bench STREAM.ndjson [ROUNDS]");
    let rounds: usize = args.next().map_or(3, |r| r.parse().expect("ROUNDS is a number"));
    let text = std::fs::read_to_string(&path).expect("reading the stream");
    let schemas = schemas(&text);
    let records: Vec<(&[String], &str)> = text
        .lines()
        .filter_map(record_of)
        .map(|(stream, rec)| (schemas[stream].as_slice(), rec))
        .collect();
    let bytes: usize = records.iter().map(|(_, r)| r.len()).sum();
    eprintln!(
        "{} records, {} MB of record text, from {path}",
        records.len(),
        bytes / 1_000_000
    );

    let parsers: [(&str, Decode); 3] = [
        ("serde_json", with_serde_json),
        ("sonic-rs", with_sonic_rs),
        ("simd-json (copy, then in place)", with_simd_json),
    ];
    // Every parser must give the same rows before any is timed.
    let mut first: Vec<Vec<Cell>> = Vec::new();
    for (name, decode) in parsers {
        let mut buf = Vec::new();
        for (k, (names, rec)) in records.iter().enumerate().step_by(997) {
            let mut out: Vec<Cell> = names.iter().map(|_| Cell::Null).collect();
            decode(names, rec, &mut out, &mut buf).unwrap_or_else(|e| panic!("{name}: {e} in {rec}"));
            match first.get(k / 997) {
                Some(want) => assert_eq!(&out, want, "{name} decoded {rec} otherwise"),
                None => first.push(out),
            }
        }
    }
    let mut base = None;
    println!("| parser | best of {rounds} s | ns/row | CPU-s per M rows | MB/s | vs serde_json |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, decode) in parsers {
        let mut best = f64::MAX;
        for _ in 0..rounds {
            let mut buf = Vec::new();
            let mut out = Vec::new();
            let t = Instant::now();
            for (names, rec) in &records {
                out.clear();
                out.resize_with(names.len(), || Cell::Null);
                decode(names, rec, &mut out, &mut buf).expect("decoded before");
                std::hint::black_box(&out);
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        let base = *base.get_or_insert(best);
        let n = records.len() as f64;
        println!(
            "| {name} | {best:.3} | {:.0} | {:.2} | {:.0} | {:.2}x |",
            best * 1e9 / n,
            best * 1e6 / n,
            bytes as f64 / best / 1e6,
            base / best
        );
    }
}
