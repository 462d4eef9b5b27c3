//! What the fuzz targets in `fuzz/` run, kept in the library so the committed corpus also runs as
//! a test (`tests/fuzz_corpus.rs`) on stable Rust. Each entry point takes any bytes; returning an
//! error for bad input is right, a panic is a bug.

use std::collections::HashMap;

use crate::protocol::{Kind, Schema, StreamReader};
use crate::row::RowShape;
use crate::value::Value;

/// Longest line the stream entry point reads (the reader's own limit is what is exercised).
const MAX_LINE: usize = 1 << 20;

/// Read `data` as a ferry stream the way the importer does: every line through the reader,
/// SCHEMAs into row shapes, RECORDs decoded under their stream's shape. A record that decodes
/// must encode and decode back to the same values (bit for bit). Returns how many records did.
pub fn stream(data: &[u8]) -> usize {
    let mut round_trips = 0;
    let mut reader = StreamReader::new(data, MAX_LINE);
    let mut shapes: HashMap<String, RowShape> = HashMap::new();
    while let Ok(Some(line)) = reader.next_line() {
        match line.kind {
            Kind::Schema => {
                if let Ok(schema) = line.parse::<Schema>()
                    && let Ok(shape) = RowShape::from_schema(&schema)
                {
                    shapes.insert(schema.stream, shape);
                }
            }
            Kind::Record => {
                let (Some(shape), Ok(text)) = (shapes.get(line.stream()), line.record_text()) else {
                    continue;
                };
                let mut row = vec![Value::Null; shape.len()];
                if shape.decode_text(text, &mut row).is_err() {
                    continue;
                }
                let mut out = Vec::new();
                shape.encode_record(|i| row[i].as_ref(), &mut out);
                let text = String::from_utf8(out).expect("an encoded record is UTF-8");
                let mut again = vec![Value::Null; shape.len()];
                if let Err(e) = shape.decode_text(&text, &mut again) {
                    panic!("a record ferry wrote does not read back: {e}: {text}");
                }
                for (a, b) in row.iter().zip(&again) {
                    let same = match (a, b) {
                        (Value::Real(x), Value::Real(y)) => x.to_bits() == y.to_bits(),
                        _ => a == b,
                    };
                    assert!(same, "{a:?} came back as {b:?} through {text}");
                }
                round_trips += 1;
            }
            _ => {
                let _ = line.full();
            }
        }
    }
    round_trips
}
