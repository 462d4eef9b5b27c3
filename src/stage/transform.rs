//! ferry-transform: per-message operations on the stream, applied in the order given.
//!
//! Contract:
//! - MUST pass lines it does not change through byte for byte: BEGIN, STATE (in order; no item
//!   ever moves across a STATE), ERROR, unknown kinds, and RECORDs of streams no operation touches.
//! - MUST re-emit a stream's SCHEMA when an operation changes it (names, fields, keys, foreign keys
//!   and indexes that mention renamed or dropped things), and record the producer's name of a
//!   renamed stream in `source_stream` so bookmarks stay readable by `export --resume`.
//! - MUST recompute STREAM_END (rows and digest) for every stream whose records it may change.
//! - MUST exit non-zero when its input ends without END (after passing everything through).
//! - With a dialect, MUST recast every SCHEMA and the records whose JSON form changes after all
//!   other operations (see [`crate::dialect`]), and recompute STREAM_END where values change.
//!
//! One concern, kept whole (over 800 lines): the transform stage, one function per operation.

use std::collections::HashMap;
use std::fmt;
use std::io::{BufRead, Write};

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value as Json, json};

use crate::dialect::{self, Converted, Dialect, NumericAs};
use crate::error::{Error, ErrorKind, Result};
use crate::jq::JqProgram;
use crate::protocol::{DIGEST_ALGO, Digest, End, Kind, Line, Message, Schema, StreamEnd, StreamReader, StreamWriter};
use crate::row::{RowShape, StreamDigest};
use crate::value;

/// One operation. Stream names are the names as they are at that point of the pipeline (after
/// earlier renames).
#[derive(Debug)]
pub enum Op {
    RenameStream {
        from: String,
        to: String,
    },
    DropStream {
        stream: String,
    },
    RenameField {
        stream: String,
        from: String,
        to: String,
    },
    DropField {
        stream: String,
        field: String,
    },
    /// Set a field to a constant (JSON text).
    SetField {
        stream: String,
        field: String,
        value: String,
    },
    /// Keep only records for which the jq condition, run on the record object, is true.
    Filter {
        stream: String,
        program: JqProgram,
    },
    /// Run a jq program on every RECORD and FILE message (the whole message); its outputs replace it.
    Jq {
        program: JqProgram,
    },
    /// Change one key value (`users.id` 42 -> 1077) in its stream and in every column whose
    /// foreign key references it, so references stay whole. Applied first, to the input's names.
    Remap {
        stream: String,
        column: String,
        from: Json,
        to: Json,
    },
}

impl Op {
    /// `OLD=NEW`
    pub fn rename_stream(spec: &str) -> Result<Op> {
        let (from, to) = split_eq(spec, "--rename-stream OLD=NEW")?;
        Ok(Op::RenameStream { from, to })
    }

    pub fn drop_stream(spec: &str) -> Result<Op> {
        Ok(Op::DropStream {
            stream: spec.to_owned(),
        })
    }

    /// `STREAM.OLD=NEW`
    pub fn rename_field(spec: &str) -> Result<Op> {
        let (path, to) = split_eq(spec, "--rename-field STREAM.OLD=NEW")?;
        let (stream, from) = split_field(&path, "--rename-field STREAM.OLD=NEW")?;
        Ok(Op::RenameField { stream, from, to })
    }

    /// `STREAM.FIELD`
    pub fn drop_field(spec: &str) -> Result<Op> {
        let (stream, field) = split_field(spec, "--drop-field STREAM.FIELD")?;
        Ok(Op::DropField { stream, field })
    }

    /// `STREAM.FIELD=JSON` (a value that is not JSON is taken as a string)
    pub fn set_field(spec: &str) -> Result<Op> {
        let (path, value) = split_eq(spec, "--set STREAM.FIELD=VALUE")?;
        let (stream, field) = split_field(&path, "--set STREAM.FIELD=VALUE")?;
        let value = match serde_json::from_str::<Json>(&value) {
            Ok(v) => v.to_string(),
            Err(_) => Json::String(value).to_string(),
        };
        Ok(Op::SetField { stream, field, value })
    }

    /// `STREAM=JQ_CONDITION`
    pub fn filter(spec: &str) -> Result<Op> {
        let (stream, code) = split_eq(spec, "--filter STREAM=JQ_CONDITION")?;
        Ok(Op::Filter {
            stream,
            program: JqProgram::compile(&code)?,
        })
    }

    /// `STREAM.COLUMN:OLD=NEW` (values as JSON, anything else a string)
    pub fn remap(spec: &str) -> Result<Op> {
        let form = "--remap STREAM.COLUMN:OLD=NEW (main.users.id:42=1077)";
        let (path, values) = spec
            .split_once(':')
            .ok_or_else(|| Error::usage(format!("{spec:?}: expected {form}")))?;
        let (stream, column) = split_field(path, form)?;
        let (from, to) = split_eq(values, form)?;
        let json = |v: String| serde_json::from_str::<Json>(&v).unwrap_or(Json::String(v));
        let (from, to) = (json(from), json(to));
        if from == to {
            return Err(Error::usage(format!(
                "--remap {spec}: the old and new values are the same"
            )));
        }
        Ok(Op::Remap {
            stream,
            column,
            from,
            to,
        })
    }

    pub fn jq(code: &str) -> Result<Op> {
        Ok(Op::Jq {
            program: JqProgram::compile(code)?,
        })
    }
}

fn split_eq(spec: &str, form: &str) -> Result<(String, String)> {
    match spec.split_once('=') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.to_owned(), b.to_owned())),
        _ => Err(Error::usage(format!("{spec:?}: expected {form}"))),
    }
}

/// `main.users.email` -> (`main.users`, `email`): the field is after the last dot.
fn split_field(spec: &str, form: &str) -> Result<(String, String)> {
    match spec.rsplit_once('.') {
        Some((s, f)) if !s.is_empty() && !f.is_empty() => Ok((s.to_owned(), f.to_owned())),
        _ => Err(Error::usage(format!("{spec:?}: expected {form}"))),
    }
}

#[derive(Debug)]
pub struct TransformConfig {
    pub ops: Vec<Op>,
    /// Recast for this engine, after every other operation.
    pub dialect: Option<(Dialect, NumericAs)>,
    pub singer: bool,
    pub max_line: usize,
}

#[derive(Debug, Clone, Default)]
pub struct TransformOutcome {
    pub records_in: u64,
    pub records_out: u64,
    /// Values changed by `--remap`.
    pub remapped: u64,
}

/// What the static operations (everything but jq and filters) do to one input stream.
#[derive(Debug, Default)]
struct StaticView {
    name: String,
    dropped: bool,
    renamed: bool,
    /// Field operations, in order: (from, Some(to)) renames, (field, None) drops.
    fields: Vec<(String, Option<String>)>,
    sets: Vec<(String, String)>,
    filtered: bool,
}

impl StaticView {
    fn field_image(&self, field: &str) -> Option<String> {
        let mut name = field.to_owned();
        for (from, to) in &self.fields {
            if *from == name {
                match to {
                    Some(t) => name = t.clone(),
                    None => return None,
                }
            }
        }
        Some(name)
    }

    fn changes_records(&self) -> bool {
        !self.fields.is_empty() || !self.sets.is_empty() || self.filtered
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Pass,
    Rename,
    Full,
    Dropped,
}

struct InStream {
    mode: Mode,
    /// Key values to change in this stream's records: (field, old, new as JSON text).
    remaps: Vec<(String, Json, String)>,
    out_name: String,
    /// `{"type":"RECORD","stream":"<in>","record":` and the same with the output name.
    in_prefix: Vec<u8>,
    out_prefix: Vec<u8>,
}

struct OutStream {
    schema: Schema,
    shape: RowShape,
    /// Whether this stage computes the stream's STREAM_END (records may differ from the input's).
    recompute: bool,
    rows: u64,
    digest: StreamDigest,
    ended: bool,
}

/// A message being transformed: its top-level fields in order, the record parsed on demand.
struct Msg {
    fields: Vec<(String, Box<RawValue>)>,
    record: Option<Vec<(String, Box<RawValue>)>>,
}

impl Msg {
    fn get(&self, key: &str) -> Option<&RawValue> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_ref())
    }

    fn get_str(&self, key: &str) -> Option<String> {
        self.get(key).and_then(|v| serde_json::from_str::<String>(v.get()).ok())
    }

    fn set(&mut self, key: &str, value: Box<RawValue>) {
        match self.fields.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.fields.push((key.to_owned(), value)),
        }
    }

    fn kind(&self) -> Kind {
        self.get_str("type").map_or(Kind::Other, |t| Kind::parse(&t))
    }

    /// The `op` of a change stream's RECORD, if it has one.
    fn op(&self) -> Option<String> {
        self.get_str("op")
    }

    fn stream(&self) -> String {
        self.get_str("stream").unwrap_or_default()
    }

    fn record_mut(&mut self) -> Result<&mut Vec<(String, Box<RawValue>)>, String> {
        if self.record.is_none() {
            let raw = self.get("record").ok_or("the message has no \"record\"")?;
            self.record = Some(parse_object(raw.get()).map_err(|e| format!("\"record\" is not an object: {e}"))?);
        }
        Ok(self.record.get_or_insert_with(Vec::new))
    }

    /// Write any parsed record back into `fields`.
    fn settle(&mut self) {
        if let Some(rec) = self.record.take() {
            self.set("record", raw(&object_text(&rec)));
        }
    }

    fn text(&mut self) -> String {
        self.settle();
        object_text(&self.fields)
    }
}

/// A RECORD's fields say it is a change stream's delete.
fn is_delete(fields: &[(String, Box<RawValue>)]) -> bool {
    fields
        .iter()
        .find(|(k, _)| k == "op")
        .and_then(|(_, v)| serde_json::from_str::<String>(v.get()).ok())
        .is_some_and(|op| op.eq_ignore_ascii_case("delete"))
}

fn raw(text: &str) -> Box<RawValue> {
    RawValue::from_string(text.to_owned()).unwrap_or_else(|_| RawValue::from_string("null".into()).unwrap_or_default())
}

fn object_text(fields: &[(String, Box<RawValue>)]) -> String {
    let mut out = Vec::with_capacity(256);
    out.push(b'{');
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        value::write_str(k, &mut out);
        out.push(b':');
        out.extend_from_slice(v.get().as_bytes());
    }
    out.push(b'}');
    String::from_utf8(out).unwrap_or_default()
}

/// Parse a JSON object into its fields in order, each value kept as raw text.
fn parse_object(text: &str) -> Result<Vec<(String, Box<RawValue>)>, String> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<(String, Box<RawValue>)>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(k) = map.next_key::<String>()? {
                let v: Box<RawValue> = map.next_value()?;
                if out.iter().any(|(e, _): &(String, Box<RawValue>)| *e == k) {
                    return Err(de::Error::custom(format!("field {k:?} appears twice")));
                }
                out.push((k, v));
            }
            Ok(out)
        }
    }
    let mut d = serde_json::Deserializer::from_str(text);
    d.deserialize_map(V).map_err(|e| e.to_string())
}

/// A JSON Schema property for a value seen in a record (for fields only jq or --set introduce).
fn infer_property(v: &RawValue) -> Json {
    let t = v.get().trim_start();
    let ty = match t.as_bytes().first() {
        Some(b'"') => "string",
        Some(b'{') => "object",
        Some(b'[') => "array",
        Some(b't' | b'f') => "boolean",
        Some(b'n') => return json!({}),
        _ if t.contains(['.', 'e', 'E']) => "number",
        _ => "integer",
    };
    json!({"type": [ty, "null"]})
}

fn record_prefix(stream: &str) -> Vec<u8> {
    let mut p = Vec::from(&br#"{"type":"RECORD","stream":"#[..]);
    value::write_str(stream, &mut p);
    p.extend_from_slice(br#","record":"#);
    p
}

/// Where the transformer's output goes: to the writer, through the dialect when there is one.
struct Sink<'w, W: Write> {
    out: &'w mut StreamWriter<W>,
    dialect: Option<Recaster>,
}

/// The dialect's view of each output stream.
struct Recaster {
    to: Dialect,
    numeric: NumericAs,
    streams: HashMap<String, Recast>,
}

struct Recast {
    conv: Converted,
    from: RowShape,
    to: RowShape,
    prefix: Vec<u8>,
    rows: u64,
    digest: StreamDigest,
}

impl<W: Write> Sink<'_, W> {
    fn flush(&mut self) -> Result<()> {
        self.out.flush()
    }

    fn write_message(&mut self, m: &Message) -> Result<()> {
        if self.dialect.is_none() {
            return self.out.write_message(m);
        }
        let text = serde_json::to_string(m).map_err(|e| Error::input(e.to_string()))?;
        self.write_line(text.as_bytes(), m.kind())
    }

    fn write_line(&mut self, text: &[u8], kind: Kind) -> Result<()> {
        let Some(d) = &mut self.dialect else {
            return self.out.write_line(text, kind);
        };
        let body = |text: &[u8]| -> Result<Map<String, Json>> {
            let mut m: Map<String, Json> = serde_json::from_slice(text).map_err(|e| Error::input(e.to_string()))?;
            m.remove("type");
            Ok(m)
        };
        match kind {
            Kind::Schema => {
                let schema: Schema =
                    serde_json::from_value(Json::Object(body(text)?)).map_err(|e| Error::input(e.to_string()))?;
                let conv = dialect::convert(&schema, d.to, d.numeric);
                let from = RowShape::from_schema(&schema)?;
                let to = RowShape::from_schema(&conv.schema)?;
                let changed = conv.schema != schema;
                let out = conv.schema.clone();
                d.streams.insert(
                    schema.stream.clone(),
                    Recast {
                        prefix: record_prefix(&schema.stream),
                        conv,
                        from,
                        to,
                        rows: 0,
                        digest: StreamDigest::default(),
                    },
                );
                if changed {
                    self.out.write_message(&Message::Schema(Box::new(out)))
                } else {
                    self.out.write_line(text, kind)
                }
            }
            Kind::Record => {
                let mut hit = d.streams.values_mut().find(|r| text.starts_with(&r.prefix));
                let mut fields = None;
                if hit.is_none() {
                    let f = parse_object(std::str::from_utf8(text).unwrap_or("")).map_err(Error::input)?;
                    let name = f
                        .iter()
                        .find(|(k, _)| k == "stream")
                        .and_then(|(_, v)| serde_json::from_str::<String>(v.get()).ok())
                        .unwrap_or_default();
                    hit = d.streams.get_mut(&name);
                    fields = Some(f);
                }
                let Some(r) = hit.filter(|r| r.conv.records_change) else {
                    return self.out.write_line(text, kind);
                };
                let mut fields = match fields {
                    Some(f) => f,
                    None => parse_object(std::str::from_utf8(text).unwrap_or("")).map_err(Error::input)?,
                };
                let stream = r.conv.schema.stream.clone();
                let Some(slot) = fields.iter_mut().find(|(k, _)| k == "record") else {
                    return Err(Error::input(format!("stream {stream}: a RECORD without \"record\"")));
                };
                let mut row = r
                    .from
                    .decode(&slot.1)
                    .map_err(|e| Error::input(format!("stream {stream}: {e}")))?;
                r.conv
                    .convert_row(&mut row)
                    .map_err(|e| Error::input(format!("stream {stream}, --dialect {:?}: {e}", d.to)))?;
                let mut rec = Vec::with_capacity(text.len());
                r.to.encode_record(|i| row[i].as_ref(), &mut rec);
                slot.1 = raw(std::str::from_utf8(&rec).unwrap_or("null"));
                if r.conv.values_change {
                    r.rows += 1;
                    match is_delete(&fields) {
                        true => r.digest.add_delete(&r.to, &row),
                        false => r.digest.add_row(&r.to, &row),
                    }
                }
                self.out.write_line(object_text(&fields).as_bytes(), kind)
            }
            Kind::StreamEnd => {
                let mut end: StreamEnd =
                    serde_json::from_value(Json::Object(body(text)?)).map_err(|e| Error::input(e.to_string()))?;
                match d.streams.get_mut(&end.stream) {
                    Some(r) if r.conv.values_change => {
                        end.rows = Some(r.rows);
                        end.digest = Some(Digest {
                            algo: DIGEST_ALGO.into(),
                            value: r.digest.take_hex(),
                        });
                        r.rows = 0;
                        self.out.write_message(&Message::StreamEnd(end))
                    }
                    _ => self.out.write_line(text, kind),
                }
            }
            _ => self.out.write_line(text, kind),
        }
    }
}

struct Transformer<'w, W: Write> {
    cfg: TransformConfig,
    out: Sink<'w, W>,
    has_jq: bool,
    ins: HashMap<String, InStream>,
    outs: HashMap<String, OutStream>,
    out_order: Vec<String>,
    outcome: TransformOutcome,
    rows_changed: bool,
}

pub fn run<R: BufRead, W: Write>(
    cfg: TransformConfig,
    input: R,
    out: &mut StreamWriter<W>,
) -> Result<TransformOutcome> {
    let mut outcome = TransformOutcome::default();
    run_counted(cfg, input, out, &mut outcome).map(|()| outcome)
}

/// [`run`], counting into `outcome` whether it finishes or not.
pub fn run_counted<R: BufRead, W: Write>(
    cfg: TransformConfig,
    input: R,
    out: &mut StreamWriter<W>,
    outcome: &mut TransformOutcome,
) -> Result<()> {
    let has_jq = cfg.ops.iter().any(|o| matches!(o, Op::Jq { .. }));
    let rows_changed = cfg
        .ops
        .iter()
        .any(|o| matches!(o, Op::Jq { .. } | Op::Filter { .. } | Op::DropStream { .. }));
    let max_line = cfg.max_line;
    let dialect = cfg.dialect.map(|(to, numeric)| Recaster {
        to,
        numeric,
        streams: HashMap::new(),
    });
    let mut t = Transformer {
        cfg,
        out: Sink { out, dialect },
        has_jq,
        ins: HashMap::new(),
        outs: HashMap::new(),
        out_order: Vec::new(),
        outcome: TransformOutcome::default(),
        rows_changed,
    };
    let mut reader = StreamReader::new(input, max_line);
    let result = t.consume(&mut reader);
    *outcome = std::mem::take(&mut t.outcome);
    result
}

impl<W: Write> Transformer<'_, W> {
    fn consume<R: BufRead>(&mut self, reader: &mut StreamReader<R>) -> Result<()> {
        let t = self;
        let mut began = false;
        let mut ended = false;
        while let Some(line) = reader.next_line()? {
            began |= line.kind == Kind::Begin;
            match line.kind {
                Kind::Schema => t.on_schema(&line)?,
                Kind::Record | Kind::File => t.on_item(&line)?,
                Kind::StreamEnd => t.on_stream_end(&line)?,
                Kind::End => {
                    t.on_end(&line)?;
                    ended = true;
                }
                Kind::Begin | Kind::Error | Kind::Other if t.cfg.singer => {
                    tracing::info!(line = line.no, kind = line.kind.as_str(), "not sent in Singer mode");
                }
                kind => t.out.write_line(line.text.as_bytes(), kind)?,
            }
        }
        t.out.flush()?;
        if t.outcome.remapped > 0 {
            tracing::info!(
                values = t.outcome.remapped,
                "remapped key values and the references to them"
            );
        }
        if reader.line_no() == 0 {
            return Err(Error::new(
                ErrorKind::Truncated,
                "the input was empty: the producer sent nothing (did it fail? its own message says why)",
            ));
        }
        if began && !ended {
            return Err(Error::new(
                ErrorKind::Truncated,
                format!(
                    "input ended after line {} without END: the producer stopped early (everything received was passed on)",
                    reader.line_no()
                ),
            ));
        }
        Ok(())
    }
}

impl<W: Write> Transformer<'_, W> {
    /// The `--remap`s that touch a stream: its own key column, and its columns whose one-column
    /// foreign keys reference a remapped column.
    fn remaps_for(&self, input: &Schema) -> Vec<(String, Json, String)> {
        let mut out = Vec::new();
        for op in &self.cfg.ops {
            let Op::Remap {
                stream,
                column,
                from,
                to,
            } = op
            else {
                continue;
            };
            let is = |s: &str| s == stream || s.rsplit_once('.').is_some_and(|(_, t)| t == stream);
            if is(&input.stream) {
                out.push((column.clone(), from.clone(), to.to_string()));
            }
            for fk in &input.foreign_keys {
                if let ([c], [r]) = (fk.columns.as_slice(), fk.references.columns.as_slice())
                    && is(&fk.references.stream)
                    && r == column
                {
                    out.push((c.clone(), from.clone(), to.to_string()));
                }
            }
        }
        out
    }

    fn static_view(&self, input: &str) -> StaticView {
        let mut v = StaticView {
            name: input.to_owned(),
            ..Default::default()
        };
        for op in &self.cfg.ops {
            match op {
                Op::RenameStream { from, to } if *from == v.name => {
                    v.name = to.clone();
                    v.renamed = true;
                }
                Op::DropStream { stream } if *stream == v.name => v.dropped = true,
                Op::RenameField { stream, from, to } if *stream == v.name => {
                    v.fields.push((from.clone(), Some(to.clone())))
                }
                Op::DropField { stream, field } if *stream == v.name => v.fields.push((field.clone(), None)),
                Op::SetField { stream, field, value } if *stream == v.name => {
                    v.sets.push((field.clone(), value.clone()))
                }
                Op::Filter { stream, .. } if *stream == v.name => v.filtered = true,
                _ => {}
            }
        }
        v
    }

    fn on_schema(&mut self, line: &Line<'_>) -> Result<()> {
        let input: Schema = line.parse()?;
        let view = self.static_view(&input.stream);
        let remaps = self.remaps_for(&input);
        let mode = if view.dropped && !self.has_jq {
            Mode::Dropped
        } else if self.has_jq || view.changes_records() || !remaps.is_empty() {
            Mode::Full
        } else if view.renamed {
            Mode::Rename
        } else {
            Mode::Pass
        };
        self.ins.insert(
            input.stream.clone(),
            InStream {
                mode,
                remaps,
                out_name: view.name.clone(),
                in_prefix: record_prefix(&input.stream),
                out_prefix: record_prefix(&view.name),
            },
        );
        if view.dropped {
            return Ok(());
        }
        let schema = self.transform_schema(&input, &view).map_err(|e| line.error(e))?;
        let changed = schema != input;
        let shape = RowShape::from_schema(&schema).map_err(|e| e.context(format!("line {}", line.no)))?;
        if changed {
            self.out.write_message(&Message::Schema(Box::new(schema.clone())))?;
        } else {
            self.out.write_line(line.text.as_bytes(), Kind::Schema)?;
        }
        let recompute = mode == Mode::Full;
        let name = schema.stream.clone();
        match self.outs.get_mut(&name) {
            Some(o) => {
                o.schema = schema;
                o.shape = shape;
                o.recompute |= recompute;
            }
            None => {
                self.out_order.push(name.clone());
                self.outs.insert(
                    name,
                    OutStream {
                        schema,
                        shape,
                        recompute,
                        rows: 0,
                        digest: StreamDigest::default(),
                        ended: false,
                    },
                );
            }
        }
        Ok(())
    }

    /// The SCHEMA after the static operations.
    fn transform_schema(&self, input: &Schema, view: &StaticView) -> Result<Schema, String> {
        let mut s = input.clone();
        if view.renamed {
            s.stream = view.name.clone();
            if s.source_stream.is_none() {
                s.source_stream = Some(input.stream.clone());
            }
        }
        if !view.fields.is_empty() || !view.sets.is_empty() {
            let mut props = Map::new();
            for (name, prop) in &input.schema.properties {
                if let Some(n) = view.field_image(name) {
                    props.insert(n, prop.clone());
                }
            }
            for (field, value) in &view.sets {
                if !props.contains_key(field) {
                    props.insert(field.clone(), infer_property(&raw(value)));
                }
            }
            s.schema.properties = props;
            let mut key = Vec::new();
            for k in &input.key_properties {
                key.push(view.field_image(k).ok_or_else(|| {
                    format!(
                        "cannot drop field {k:?} of stream {}: it is part of the key",
                        input.stream
                    )
                })?);
            }
            s.key_properties = key;
            let image = |cols: &[String]| -> Option<Vec<String>> { cols.iter().map(|c| view.field_image(c)).collect() };
            s.unique = input
                .unique
                .iter()
                .filter_map(|u| {
                    Some(crate::protocol::Unique {
                        name: u.name.clone(),
                        columns: image(&u.columns)?,
                    })
                })
                .collect();
            s.indexes = input
                .indexes
                .iter()
                .filter_map(|ix| {
                    let mut ix = ix.clone();
                    ix.columns = image(&ix.columns)?;
                    Some(ix)
                })
                .collect();
            s.foreign_keys.retain(|fk| image(&fk.columns).is_some());
            // CHECK expressions may name fields that were renamed or dropped: leave them out.
            if let Some(sq) = &mut s.sqlite
                && !sq.checks.is_empty()
                && !view.fields.is_empty()
            {
                tracing::warn!(stream = %s.stream, checks = sq.checks.len(), "fields were renamed or dropped: CHECK constraints are not carried");
                sq.checks.clear();
            }
            for fk in &mut s.foreign_keys {
                fk.columns = image(&fk.columns).unwrap_or_default();
            }
        }
        // References to streams that were renamed, or whose fields were.
        let mut fks = Vec::new();
        for mut fk in std::mem::take(&mut s.foreign_keys) {
            let parent = if fk.references.stream == input.stream {
                StaticView {
                    name: s.stream.clone(),
                    fields: view.fields.clone(),
                    ..Default::default()
                }
            } else {
                self.static_view(&fk.references.stream)
            };
            if parent.dropped {
                tracing::warn!(stream = %s.stream, references = %fk.references.stream, "the referenced stream is dropped: foreign key left out");
                continue;
            }
            let cols: Option<Vec<String>> = fk.references.columns.iter().map(|c| parent.field_image(c)).collect();
            let Some(cols) = cols else {
                tracing::warn!(stream = %s.stream, references = %fk.references.stream, "a referenced field is dropped: foreign key left out");
                continue;
            };
            fk.references.stream = parent.name;
            fk.references.columns = cols;
            fks.push(fk);
        }
        s.foreign_keys = fks;
        if s != *input {
            // The source's own DDL no longer describes this stream.
            if let Some(sq) = &mut s.sqlite {
                sq.sql = None;
            }
            for ix in &mut s.indexes {
                ix.sql = None;
            }
        }
        Ok(s)
    }

    fn on_item(&mut self, line: &Line<'_>) -> Result<()> {
        self.outcome.records_in += u64::from(line.kind == Kind::Record);
        let name = line.stream();
        let mode = match self.ins.get(name) {
            Some(s) => s.mode,
            None if line.kind == Kind::File => {
                if self.has_jq {
                    Mode::Full
                } else {
                    Mode::Pass
                }
            }
            None => return Err(line.error("a RECORD before its stream's SCHEMA")),
        };
        match mode {
            Mode::Dropped => Ok(()),
            Mode::Pass => {
                self.count_passthrough(name);
                self.out.write_line(line.text.as_bytes(), line.kind)
            }
            Mode::Rename => {
                let s = &self.ins[name];
                let out_name = s.out_name.clone();
                if line.text.as_bytes().starts_with(&s.in_prefix) {
                    let mut text = s.out_prefix.clone();
                    text.extend_from_slice(&line.text.as_bytes()[s.in_prefix.len()..]);
                    self.out.write_line(&text, Kind::Record)?;
                } else {
                    let mut m = Msg {
                        fields: parse_object(line.text).map_err(|e| line.error(e))?,
                        record: None,
                    };
                    m.set("stream", raw(&Json::String(out_name.clone()).to_string()));
                    self.out.write_line(m.text().as_bytes(), Kind::Record)?;
                }
                self.count_passthrough(&out_name);
                Ok(())
            }
            Mode::Full => {
                let mut msg = Msg {
                    fields: parse_object(line.text).map_err(|e| line.error(e))?,
                    record: None,
                };
                let remaps = self.ins.get(name).map(|s| s.remaps.as_slice()).unwrap_or_default();
                if line.kind == Kind::Record && !remaps.is_empty() {
                    let rec = msg.record_mut().map_err(|e| line.error(e))?;
                    for (field, from, to) in remaps {
                        if let Some(slot) = rec.iter_mut().find(|(k, _)| k == field)
                            && serde_json::from_str::<Json>(slot.1.get()).is_ok_and(|v| v == *from)
                        {
                            slot.1 = raw(to);
                            self.outcome.remapped += 1;
                        }
                    }
                }
                let mut outputs = Vec::new();
                self.apply(msg, 0, &mut outputs).map_err(|e| line.error(e))?;
                for mut m in outputs {
                    self.emit(&mut m).map_err(|e| e.context(format!("line {}", line.no)))?;
                }
                Ok(())
            }
        }
    }

    fn count_passthrough(&mut self, out_name: &str) {
        self.outcome.records_out += 1;
        if let Some(o) = self.outs.get_mut(out_name) {
            o.rows += 1;
        }
    }

    /// Apply operations `from..` to a message; surviving messages go to `out`.
    fn apply(&self, mut msg: Msg, from: usize, out: &mut Vec<Msg>) -> Result<(), String> {
        for (i, op) in self.cfg.ops.iter().enumerate().skip(from) {
            let kind = msg.kind();
            let is_record = kind == Kind::Record;
            let on = |s: &str| is_record && msg.stream() == s;
            match op {
                Op::RenameStream { from, to } if msg.stream() == *from && matches!(kind, Kind::Record | Kind::File) => {
                    msg.set("stream", raw(&Json::String(to.clone()).to_string()));
                }
                Op::DropStream { stream } if msg.stream() == *stream => return Ok(()),
                Op::RenameField { stream, from, to } if on(stream) => {
                    let rec = msg.record_mut()?;
                    if rec.iter().any(|(k, _)| k == to) {
                        return Err(format!(
                            "cannot rename field {from:?} to {to:?}: the record already has {to:?}"
                        ));
                    }
                    if let Some(slot) = rec.iter_mut().find(|(k, _)| k == from) {
                        slot.0 = to.clone();
                    }
                }
                Op::DropField { stream, field } if on(stream) => msg.record_mut()?.retain(|(k, _)| k != field),
                Op::SetField { stream, field, value } if on(stream) => {
                    let rec = msg.record_mut()?;
                    match rec.iter_mut().find(|(k, _)| k == field) {
                        Some(slot) => slot.1 = raw(value),
                        None => rec.push((field.clone(), raw(value))),
                    }
                }
                Op::Filter { stream, program } if on(stream) => {
                    // A change stream's deletes all pass (a row the target does not hold is
                    // deleted as nothing); its upserts that fail the condition become deletes,
                    // so a row that leaves the selection leaves the target too.
                    let op = msg.op();
                    let delete = op.as_deref().is_some_and(|o| o.eq_ignore_ascii_case("delete"));
                    let text = object_text(msg.record_mut()?);
                    if !delete && !program.test(&text)? {
                        if op.is_none() {
                            return Ok(());
                        }
                        msg.set("op", raw("\"delete\""));
                    }
                }
                Op::Jq { program } if matches!(kind, Kind::Record | Kind::File) => {
                    for text in program.run_json(&msg.text())? {
                        let fields =
                            parse_object(&text).map_err(|_| format!("jq output is not a message object: {text}"))?;
                        let m = Msg { fields, record: None };
                        if m.get("type").is_none() {
                            return Err(format!("jq output has no \"type\": {text}"));
                        }
                        self.apply(m, i + 1, out)?;
                    }
                    return Ok(());
                }
                _ => {}
            }
        }
        out.push(msg);
        Ok(())
    }

    /// Write a transformed message, announcing a new or changed SCHEMA first when needed.
    fn emit(&mut self, m: &mut Msg) -> Result<()> {
        let kind = m.kind();
        if kind != Kind::Record {
            let text = m.text();
            return self.out.write_line(text.as_bytes(), kind);
        }
        let stream = m.stream();
        let record = m.record_mut().map_err(Error::input)?.clone();
        // A stream or fields that only jq introduced: describe them before the record.
        let new_fields: Vec<&(String, Box<RawValue>)> = match self.outs.get(&stream) {
            Some(o) => record
                .iter()
                .filter(|(k, _)| !o.schema.schema.properties.contains_key(k))
                .collect(),
            None => record.iter().collect(),
        };
        if !new_fields.is_empty() || !self.outs.contains_key(&stream) {
            let mut schema = match self.outs.get(&stream) {
                Some(o) => o.schema.clone(),
                None => Schema::new(stream.clone()),
            };
            for (k, v) in &new_fields {
                schema.schema.properties.insert(k.clone(), infer_property(v));
            }
            if let Some(sq) = &mut schema.sqlite {
                sq.sql = None;
            }
            let shape = RowShape::from_schema(&schema)?;
            self.out.write_message(&Message::Schema(Box::new(schema.clone())))?;
            match self.outs.get_mut(&stream) {
                Some(o) => {
                    o.schema = schema;
                    o.shape = shape;
                    o.recompute = true;
                }
                None => {
                    self.out_order.push(stream.clone());
                    self.outs.insert(
                        stream.clone(),
                        OutStream {
                            schema,
                            shape,
                            recompute: true,
                            rows: 0,
                            digest: StreamDigest::default(),
                            ended: false,
                        },
                    );
                }
            }
        }
        let text = m.text();
        if let Some(o) = self.outs.get_mut(&stream) {
            if o.ended {
                return Err(Error::input(format!(
                    "a record for stream {stream} after its STREAM_END"
                )));
            }
            let rec_text = object_text(&record);
            let row = o.shape.decode(&raw(&rec_text)).map_err(|e| {
                Error::input(format!(
                    "stream {stream}: the transformed record does not fit its SCHEMA: {e}"
                ))
            })?;
            match is_delete(&m.fields) {
                true => o.digest.add_delete(&o.shape, &row),
                false => o.digest.add_row(&o.shape, &row),
            }
            o.rows += 1;
        }
        self.outcome.records_out += 1;
        self.out.write_line(text.as_bytes(), Kind::Record)
    }

    fn on_stream_end(&mut self, line: &Line<'_>) -> Result<()> {
        let name = line.stream();
        let Some(s) = self.ins.get(name) else {
            return self.out.write_line(line.text.as_bytes(), Kind::StreamEnd);
        };
        if self.cfg.singer {
            return Ok(());
        }
        match s.mode {
            Mode::Dropped => Ok(()),
            Mode::Pass => {
                self.mark_ended(name);
                self.out.write_line(line.text.as_bytes(), Kind::StreamEnd)
            }
            Mode::Rename => {
                let out_name = s.out_name.clone();
                let mut end: StreamEnd = line.parse()?;
                end.stream = out_name.clone();
                self.mark_ended(&out_name);
                self.out.write_message(&Message::StreamEnd(end))
            }
            // With jq, records of one input stream may land in any output stream: every
            // STREAM_END waits for END.
            Mode::Full if self.has_jq => Ok(()),
            Mode::Full => {
                let out_name = s.out_name.clone();
                let end: StreamEnd = line.parse()?;
                self.end_stream(&out_name, Some(end))
            }
        }
    }

    fn mark_ended(&mut self, out_name: &str) {
        if let Some(o) = self.outs.get_mut(out_name) {
            o.ended = true;
        }
    }

    /// Write a recomputed STREAM_END for an output stream.
    fn end_stream(&mut self, out_name: &str, input: Option<StreamEnd>) -> Result<()> {
        let Some(o) = self.outs.get_mut(out_name) else {
            return Ok(());
        };
        if o.ended {
            return Ok(());
        }
        o.ended = true;
        let digest = o.digest.take_hex();
        let mut end = input.unwrap_or(StreamEnd {
            stream: String::new(),
            status: "complete".into(),
            rows: None,
            files: None,
            bytes: None,
            errors: None,
            digest: None,
            extra: Map::new(),
        });
        end.stream = out_name.to_owned();
        end.rows = Some(o.rows);
        end.bytes = None;
        end.digest = Some(Digest {
            algo: DIGEST_ALGO.into(),
            value: digest,
        });
        self.out.write_message(&Message::StreamEnd(end))
    }

    fn on_end(&mut self, line: &Line<'_>) -> Result<()> {
        if self.cfg.singer {
            return Ok(());
        }
        let names: Vec<String> = self
            .out_order
            .iter()
            .filter(|n| self.outs.get(*n).is_some_and(|o| o.recompute && !o.ended))
            .cloned()
            .collect();
        for n in names {
            self.end_stream(&n, None)?;
        }
        if !self.rows_changed {
            return self.out.write_line(line.text.as_bytes(), Kind::End);
        }
        let mut end: End = line.parse()?;
        end.rows = Some(self.outcome.records_out);
        end.streams = Some(self.outs.len() as u64);
        self.out.write_message(&Message::End(end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_specs_parse_and_refuse_bad_forms() {
        assert!(
            matches!(Op::rename_stream("main.users=people").unwrap(), Op::RenameStream { from, to } if from == "main.users" && to == "people")
        );
        assert!(
            matches!(Op::drop_field("main.users.password_hash").unwrap(), Op::DropField { stream, field } if stream == "main.users" && field == "password_hash")
        );
        assert!(
            matches!(Op::set_field("people.status=active").unwrap(), Op::SetField { value, .. } if value == "\"active\"")
        );
        assert!(matches!(Op::set_field("people.n=3").unwrap(), Op::SetField { value, .. } if value == "3"));
        assert!(Op::rename_stream("nope").is_err());
        assert!(Op::drop_field("nodot").is_err());
        assert!(Op::filter("s=.x |||").is_err());
    }

    #[test]
    fn parse_object_keeps_order_and_raw_values() {
        let f = parse_object(r#"{"b":1.50,"a":{"x":[1, 2]}}"#).unwrap();
        assert_eq!(object_text(&f), r#"{"b":1.50,"a":{"x":[1, 2]}}"#);
        assert!(parse_object(r#"{"a":1,"a":2}"#).unwrap_err().contains("twice"));
    }

    #[test]
    fn inferred_types() {
        assert_eq!(infer_property(&raw("3")), json!({"type":["integer","null"]}));
        assert_eq!(infer_property(&raw("3.5")), json!({"type":["number","null"]}));
        assert_eq!(infer_property(&raw("\"x\"")), json!({"type":["string","null"]}));
        assert_eq!(infer_property(&raw("null")), json!({}));
    }
}
