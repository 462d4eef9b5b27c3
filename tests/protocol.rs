//! The stream is the public API: every line each stage writes must match the documented shapes
//! exactly. These deserialisers refuse unknown fields, so any drift fails here first.

#![allow(clippy::unwrap_used)] // tests fail loudly by design
#![allow(dead_code)] // the fields are there so that parsing requires them

use crate::common;
use std::collections::BTreeMap;

use crate::common::{Dir, all_ok};
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
    #[serde(default)]
    format: Option<String>,
    #[serde(rename = "enum", default)]
    labels: Option<Vec<Value>>,
    #[serde(rename = "x-sql-identity", default)]
    identity: Option<String>,
    #[serde(rename = "x-sql-default", default)]
    sql_default: Option<String>,
    #[serde(rename = "x-sql-domain", default)]
    domain: Option<String>,
    #[serde(rename = "x-sql-collation", default)]
    collation: Option<String>,
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
    #[serde(default)]
    name: Option<String>,
    columns: Vec<String>,
    references: References,
    #[serde(default)]
    on_delete: Option<String>,
    #[serde(default)]
    on_update: Option<String>,
    #[serde(default)]
    deferrable: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Unique {
    #[serde(default)]
    name: Option<String>,
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
    #[serde(default)]
    row_estimate: Option<u64>,
    #[serde(rename = "x-sqlite", default)]
    sqlite: Option<SqliteTable>,
    #[serde(rename = "x-sql-dialect", default)]
    dialect: Option<String>,
    #[serde(rename = "x-sql-types", default)]
    sql_types: Vec<SqlType>,
    #[serde(rename = "x-sql-generated", default)]
    generated: Vec<Generated>,
    #[serde(rename = "x-sql-checks", default)]
    checks: Vec<Check>,
    #[serde(rename = "x-sql-partition", default)]
    partition: Option<Partitioning>,
}

/// How a partitioned table is partitioned, and its partitions.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Partitioning {
    by: String,
    partitions: Vec<Partition>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Partition {
    name: String,
    of: Option<String>,
    bound: String,
    by: Option<String>,
}

/// An enum (labels), a composite (attributes) or a domain a PostgreSQL table's columns use.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlType {
    name: String,
    #[serde(rename = "enum", default)]
    labels: Option<Vec<String>>,
    #[serde(default)]
    attributes: Option<Vec<Attribute>>,
    #[serde(default)]
    domain: Option<Domain>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Domain {
    base: String,
    not_null: bool,
    default: Option<String>,
    collation: Option<String>,
    checks: Vec<DomainCheck>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DomainCheck {
    name: String,
    definition: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Attribute {
    name: String,
    #[serde(rename = "type")]
    sql_type: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Generated {
    name: String,
    #[serde(rename = "type")]
    sql_type: String,
    expression: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Check {
    name: String,
    definition: String,
    valid: bool,
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
                let sq = s.sqlite.as_ref().unwrap();
                assert!(sq.sql.as_deref().unwrap_or("").starts_with("CREATE TABLE"));
            }
            Message::StreamEnd(e) => {
                assert_eq!(e.digest.algo, "values-sha256");
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

#[test]
fn postgres_export_and_dialects_match_the_documented_shapes() {
    let d = Dir::new();
    let url = common::pg::cluster().database("shapes");
    let sql = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/pg_matrix.sql")).unwrap();
    common::pg::connect(&url).batch_execute(&sql).unwrap();
    common::pg::connect(&url)
        .batch_execute("ALTER TABLE matrix ADD CONSTRAINT i2_small CHECK (i2 < 1000) NOT VALID")
        .unwrap();
    let r = d.run("ferry-export", &[&url], b"");
    r.ok();
    let msgs = strict(&r.stdout());
    let matrix = msgs
        .iter()
        .find_map(|m| match m {
            Message::Schema(s) if s.stream == "public.matrix" => Some(s),
            _ => None,
        })
        .unwrap();
    assert_eq!(matrix.dialect.as_deref(), Some("postgres"));
    assert_eq!(matrix.table.schema, "public");
    for (name, p) in &matrix.schema.properties {
        let p: Property = serde_json::from_value(p.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(p.sql_type.is_some(), "{name} says its PostgreSQL type");
    }
    let prop = |n: &str| -> Property { serde_json::from_value(matrix.schema.properties[n].clone()).unwrap() };
    assert_eq!(prop("n").format.as_deref(), Some("x-singer.decimal"));
    assert_eq!(prop("tstz").format.as_deref(), Some("date-time"));
    assert_eq!(prop("id").identity.as_deref(), Some("always"));
    assert_eq!(prop("bo").sql_default.as_deref(), Some("false"));
    assert_eq!(
        prop("m").labels.as_ref().map(Vec::len),
        Some(4),
        "three labels and null"
    );
    assert!(
        !matrix.schema.properties.contains_key("gen"),
        "generated columns stay behind"
    );
    // What the target needs to recreate the table: the enum, the domain, the generated column's
    // definition.
    let types: Vec<(&str, Option<usize>, bool, bool)> = matrix
        .sql_types
        .iter()
        .map(|t| {
            let parts = (
                t.labels.as_ref().map(Vec::len),
                t.attributes.is_some(),
                t.domain.is_some(),
            );
            (t.name.as_str(), parts.0, parts.1, parts.2)
        })
        .collect();
    assert_eq!(
        types,
        [
            ("public.mood", Some(3), false, false),
            ("public.posint", None, false, true)
        ]
    );
    let posint = matrix.sql_types[1].domain.as_ref().unwrap();
    assert_eq!((posint.base.as_str(), posint.not_null), ("integer", false));
    assert_eq!((posint.default.as_deref(), posint.collation.as_deref()), (None, None));
    let checks: Vec<(&str, &str)> = posint
        .checks
        .iter()
        .map(|c| (c.name.as_str(), c.definition.as_str()))
        .collect();
    assert_eq!(checks, [("posint_check", "CHECK ((VALUE > 0))")]);
    assert_eq!(prop("dom").domain.as_deref(), Some("public.posint"));
    assert_eq!(
        prop("dom").sql_type.as_deref(),
        Some("integer"),
        "values travel as the base type"
    );
    assert!(
        matrix.sql_types[0]
            .attributes
            .iter()
            .flatten()
            .all(|a| !a.name.is_empty() && !a.sql_type.is_empty())
    );
    let generated: Vec<(&str, &str, &str)> = matrix
        .generated
        .iter()
        .map(|g| (g.name.as_str(), g.sql_type.as_str(), g.expression.as_str()))
        .collect();
    assert_eq!(generated, [("gen", "bigint", "((i4)::bigint * 2)")]);
    let checks: Vec<(&str, &str, bool)> = matrix
        .checks
        .iter()
        .map(|c| (c.name.as_str(), c.definition.as_str(), c.valid))
        .collect();
    assert_eq!(checks, [("i2_small", "CHECK ((i2 < 1000)) NOT VALID", false)]);
    // Records: the forms the protocol gives each type.
    let rec = msgs
        .iter()
        .find_map(|m| match m {
            Message::Record(r) if r.stream == "public.matrix" && r.record["id"] == 1 => Some(&r.record),
            _ => None,
        })
        .unwrap();
    assert_eq!(rec["i8"].to_string(), "-9223372036854775808");
    assert_eq!(rec["n"], "NaN");
    assert_eq!(rec["b"], "AP8Q");
    assert_eq!(rec["tstz"], "2024-06-30T21:59:59.5Z");
    assert_eq!(rec["ts"], "2024-01-01T12:34:56.123456");
    assert_eq!(rec["iv"], "P1Y2M3DT4H5M6.789S");
    assert_eq!(rec["j"], "{\"b\": 1,   \"a\": [1, 2.50]}", "json keeps its text");
    assert!(rec["jb"].is_object(), "jsonb is the value itself");
    assert_eq!(rec["ai"], serde_json::json!([1, null, 3]));
    assert_eq!(rec["mo"], "1234.56");

    // Through the SQLite dialect, still the documented shapes.
    let t = d.run("ferry-transform", &["--dialect", "sqlite"], &r.output.stdout);
    t.ok();
    let msgs = strict(&t.stdout());
    assert!(
        msgs.iter()
            .any(|m| matches!(m, Message::Schema(s) if s.dialect.as_deref() == Some("sqlite")))
    );
}
