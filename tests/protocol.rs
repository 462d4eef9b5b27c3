//! The stream is the public API: every line each stage writes must match the documented shapes
//! exactly. These deserialisers refuse unknown fields, so any drift fails here first.

#![allow(clippy::unwrap_used)] // tests fail loudly by design
#![allow(dead_code)] // the fields are there so that parsing requires them

mod common;

use std::collections::BTreeMap;

use common::{Dir, all_ok};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Producer {
    name: String,
    version: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Store {
    kind: String,
    address: String,
    #[serde(default)]
    selection: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Begin {
    protocol: String,
    run_id: String,
    producer: Producer,
    source: Store,
    started_at: String,
    #[serde(default)]
    target: Option<Store>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Bookmark {
    #[serde(default)]
    after: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    rowid: Option<i64>,
    rows: u64,
    #[serde(default)]
    complete: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateValue {
    run_id: String,
    seq: u64,
    bookmarks: BTreeMap<String, Bookmark>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    value: StateValue,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Property {
    #[serde(rename = "type", default)]
    type_: Option<Value>,
    #[serde(rename = "x-sql-type", default)]
    sql_type: Option<String>,
    #[serde(rename = "contentEncoding", default)]
    content_encoding: Option<String>,
    #[serde(rename = "x-sqlite-dynamic", default)]
    dynamic: Option<bool>,
    #[serde(rename = "x-sqlite-default", default)]
    default: Option<String>,
    #[serde(rename = "x-sqlite-collate", default)]
    collate: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ObjectSchema {
    #[serde(rename = "type")]
    type_: String,
    properties: serde_json::Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct References {
    stream: String,
    columns: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForeignKey {
    columns: Vec<String>,
    references: References,
    #[serde(default)]
    on_delete: Option<String>,
    #[serde(default)]
    on_update: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Unique {
    columns: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Index {
    name: String,
    columns: Vec<String>,
    #[serde(default)]
    unique: bool,
    #[serde(rename = "where", default)]
    where_sql: Option<String>,
    #[serde(default)]
    sql: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableRef {
    schema: String,
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SqliteTable {
    #[serde(default)]
    sql: Option<String>,
    #[serde(default)]
    strict: bool,
    #[serde(default)]
    without_rowid: bool,
    #[serde(default)]
    autoincrement: bool,
    #[serde(default)]
    checks: Vec<String>,
    #[serde(default)]
    sequence: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Schema {
    stream: String,
    schema: ObjectSchema,
    key_properties: Vec<String>,
    #[serde(default)]
    source_stream: Option<String>,
    table: TableRef,
    #[serde(default)]
    foreign_keys: Vec<ForeignKey>,
    #[serde(default)]
    unique: Vec<Unique>,
    #[serde(default)]
    indexes: Vec<Index>,
    row_estimate: u64,
    #[serde(rename = "x-sqlite")]
    sqlite: SqliteTable,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    stream: String,
    record: serde_json::Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Digest {
    algo: String,
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamEnd {
    stream: String,
    status: String,
    rows: u64,
    digest: Digest,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct End {
    run_id: String,
    status: String,
    streams: u64,
    rows: u64,
    finished_at: String,
    #[serde(default)]
    rejected: Option<u64>,
    #[serde(default)]
    skipped: Option<u64>,
    #[serde(default)]
    written: Option<u64>,
    #[serde(default)]
    already_imported: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
enum Message {
    Begin(Begin),
    State(State),
    Schema(Box<Schema>),
    Record(Record),
    StreamEnd(StreamEnd),
    End(End),
}

fn strict(text: &str) -> Vec<Message> {
    text.lines()
        .enumerate()
        .map(|(i, l)| serde_json::from_str::<Message>(l).unwrap_or_else(|e| panic!("line {}: {e}\n{l}", i + 1)))
        .collect()
}

#[test]
fn export_output_matches_the_documented_shapes() {
    let d = Dir::new();
    let r = d.run("ferry-export", &[&d.sample()], b"");
    r.ok();
    let msgs = strict(&r.stdout());
    assert!(
        matches!(msgs.first(), Some(Message::Begin(b)) if b.protocol == "ferry/1" && b.producer.name == "ferry-export")
    );
    assert!(
        matches!(msgs.get(1), Some(Message::State(s)) if s.value.bookmarks.is_empty()),
        "a resume point right after BEGIN"
    );
    assert!(matches!(msgs.last(), Some(Message::End(e)) if e.status == "ok" && e.rows == 680));
    for m in &msgs {
        match m {
            Message::Schema(s) => {
                for (name, p) in &s.schema.properties {
                    let p: Property =
                        serde_json::from_value(p.clone()).unwrap_or_else(|e| panic!("{}.{name}: {e}", s.stream));
                    assert!(p.type_.is_some() || p.dynamic == Some(true), "{}.{name}", s.stream);
                }
                assert_eq!(s.schema.type_, "object");
                assert!(s.sqlite.sql.as_deref().unwrap_or("").starts_with("CREATE TABLE"));
            }
            Message::StreamEnd(e) => {
                assert_eq!(e.digest.algo, "rows-sha256");
                assert_eq!(e.digest.value.len(), 64);
            }
            _ => {}
        }
    }
    // Every STREAM_END follows a STATE that marks its stream complete.
    for w in msgs.windows(2) {
        if let [Message::State(s), Message::StreamEnd(e)] = w {
            assert!(s.value.bookmarks[&e.stream].complete, "{}", e.stream);
        } else if let [_, Message::StreamEnd(e)] = w {
            panic!("STREAM_END of {} without a STATE just before it", e.stream);
        }
    }
}

#[test]
fn import_and_transform_output_match_the_documented_shapes() {
    let d = Dir::new();
    let src = d.sample();
    let ops: &[&str] = &["--rename-stream", "main.tags=labels"];
    let runs = d.pipe(
        &[
            ("ferry-export", &[&src]),
            ("ferry-transform", ops),
            ("ferry-import", &[&d.db("c.db"), "--create"]),
        ],
        b"",
    );
    all_ok(&runs);
    let msgs = strict(&runs[2].stdout());
    assert!(matches!(msgs.first(), Some(Message::Begin(b)) if b.producer.name == "ferry-import" && b.target.is_some()));
    assert!(matches!(msgs.last(), Some(Message::End(e)) if e.written == Some(680) && e.rejected == Some(0)));

    let t = d.pipe(&[("ferry-export", &[&src]), ("ferry-transform", ops)], b"");
    all_ok(&t);
    let msgs = strict(&t[1].stdout());
    let labels = msgs
        .iter()
        .find_map(|m| {
            if let Message::Schema(s) = m {
                (s.stream == "labels").then_some(s)
            } else {
                None
            }
        })
        .unwrap();
    assert_eq!(labels.source_stream.as_deref(), Some("main.tags"));
    assert!(
        msgs.iter()
            .any(|m| matches!(m, Message::StreamEnd(e) if e.stream == "labels"))
    );
}
