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
    #[serde(rename = "x-sql-sequence", default)]
    sequence: Option<i64>,
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
    let rows: i64 = common::pg::connect(&url)
        .query_one("SELECT count(*) FROM matrix", &[])
        .unwrap()
        .get(0);
    assert_eq!(prop("id").sequence, Some(rows), "the last number the identity gave");
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

// The lines besides the stream (`protocol::side`): FINDING, SUMMARY, PLAN, reject and audit
// lines, each parsed strictly. Their fields are optional where the line's kind leaves them out,
// and the values of enumerated fields are checked against the documented names.

const FINDING_KINDS: &[&str] = &[
    "changed",
    "counter_behind",
    "counter_not_kept",
    "column_extra",
    "column_missing",
    "compared_as_text",
    "duplicate",
    "extra",
    "fk_orphans",
    "fk_orphans_in_source",
    "invalid_record",
    "invalid_stream",
    "key_null",
    "key_null_in_source",
    "missing",
    "stream_end_mismatch",
    "stream_incomplete",
    "table_missing",
    "unique_violation",
    "unique_violation_in_source",
    "unverified",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Finding {
    #[serde(rename = "type")]
    type_: String,
    stream: String,
    kind: String,
    severity: String,
    #[serde(default)]
    key: Option<Value>,
    #[serde(default)]
    row: Option<Value>,
    #[serde(default)]
    line: Option<u64>,
    #[serde(default)]
    columns: Option<Value>,
    #[serde(default)]
    column: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    count: Option<u64>,
    #[serde(default)]
    groups: Option<u64>,
    #[serde(default)]
    references: Option<Value>,
    #[serde(default)]
    values: Option<Value>,
    #[serde(default)]
    at_source: Option<Value>,
    #[serde(default)]
    side: Option<String>,
    #[serde(default)]
    table: Option<String>,
    #[serde(default)]
    size: Option<Value>,
    #[serde(default)]
    source: Option<Value>,
    #[serde(default)]
    target: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Summary {
    #[serde(rename = "type")]
    type_: String,
    status: String,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    streams: Option<u64>,
    #[serde(default)]
    rows_source: Option<u64>,
    #[serde(default)]
    rows_target: Option<u64>,
    #[serde(default)]
    files_source: Option<u64>,
    #[serde(default)]
    files_target: Option<u64>,
    #[serde(default)]
    findings: Option<BTreeMap<String, u64>>,
    #[serde(default)]
    unverified: Option<Vec<String>>,
    #[serde(default)]
    trusted_metadata: Option<u64>,
}

const PLAN_ACTIONS: &[&str] = &[
    "create_table",
    "create_index",
    "load",
    "upload",
    "present",
    "overwrite",
    "conflict",
    "summary",
    "delete",
    "deleted",
    "restore",
    "restored",
    "drop_table",
    "dropped",
    "empty_table",
    "emptied",
    "abort",
    "aborted",
    "keep",
    "done",
    "refuse",
    "nothing",
    "cannot_undo",
    "unknown_upload",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Plan {
    #[serde(rename = "type")]
    type_: String,
    action: String,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    run: Option<String>,
    #[serde(default)]
    stream: Option<String>,
    #[serde(default)]
    table: Option<String>,
    #[serde(default)]
    key: Option<Value>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    upload_id: Option<String>,
    #[serde(default)]
    sql: Option<String>,
    #[serde(default)]
    rows: Option<u64>,
    // load
    #[serde(default)]
    already_imported: Option<u64>,
    #[serde(default)]
    insert: Option<u64>,
    #[serde(default)]
    skip: Option<u64>,
    #[serde(default)]
    overwrite: Option<u64>,
    #[serde(default)]
    conflict: Option<u64>,
    #[serde(default)]
    reject: Option<u64>,
    // summary (files)
    #[serde(default)]
    upload: Option<u64>,
    #[serde(default)]
    present: Option<u64>,
    #[serde(default)]
    bytes_to_send: Option<u64>,
    #[serde(default)]
    why: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RowReject {
    stream: String,
    line: u64,
    key: Value,
    reason: String,
    record: serde_json::Map<String, Value>,
    run_id: String,
    at: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Audit {
    at: String,
    action: String,
    run: String,
    target: String,
    #[serde(default)]
    table: Option<String>,
    #[serde(default)]
    key: Option<Value>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    upload_id: Option<String>,
    #[serde(default)]
    why: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Content {
    uri: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    stream: String,
    path: String,
    size: u64,
    sha256: String,
    content: Content,
    #[serde(default)]
    mtime: Option<String>,
    #[serde(default)]
    mode: Option<u32>,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    path_b64: Option<String>,
    #[serde(default)]
    etag: Option<String>,
    #[serde(default)]
    key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorLine {
    failure_type: String,
    message: String,
    fatal: bool,
    #[serde(default)]
    stream: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    key: Option<Value>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    stage: Option<String>,
    #[serde(default)]
    file_status: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadResult {
    path: String,
    key: String,
    size: Option<u64>,
    sha256: Option<String>,
    status: String,
    reason: Option<String>,
    etag: Option<String>,
    batch: String,
    migrated_at: Option<String>,
}

/// Each line of `text` parsed strictly as `T`, with the line in the panic.
#[track_caller]
fn each<T: serde::de::DeserializeOwned>(lines: &[&str]) -> Vec<T> {
    lines
        .iter()
        .map(|l| serde_json::from_str::<T>(l).unwrap_or_else(|e| panic!("{e}\n{l}")))
        .collect()
}

fn of_type<'a>(text: &'a str, t: &str) -> Vec<&'a str> {
    let tag = format!(r#"{{"type":"{t}""#);
    text.lines().filter(|l| l.starts_with(&tag)).collect()
}

#[test]
fn validate_findings_and_summary_match_the_documented_shapes() {
    let d = Dir::new();
    let src = d.sample();
    let copy = d.db("copy.db");
    all_ok(&d.pipe(
        &[("ferry-export", &[&src]), ("ferry-import", &[&copy, "--create"])],
        b"",
    ));
    d.open("copy.db")
        .execute_batch(
            "UPDATE users SET name = 'changed' WHERE id = 2;
             DELETE FROM notifications WHERE id = (SELECT min(id) FROM notifications);
             INSERT INTO app_settings SELECT 'only-in-target', value FROM app_settings LIMIT 1;",
        )
        .unwrap();
    let r = d.run("ferry-validate", &[&src, &copy], b"");
    r.expect_code(1);
    let out = r.stdout();
    let findings: Vec<Finding> = each(&of_type(&out, "FINDING"));
    let kinds: Vec<&str> = findings.iter().map(|f| f.kind.as_str()).collect();
    for k in ["changed", "missing", "extra"] {
        assert!(kinds.contains(&k), "{k} in {kinds:?}");
    }
    for f in &findings {
        assert!(FINDING_KINDS.contains(&f.kind.as_str()), "{f:?}");
        assert!(["fail", "warning"].contains(&f.severity.as_str()), "{f:?}");
    }
    let changed = findings.iter().find(|f| f.kind == "changed").unwrap();
    assert_eq!(changed.stream, "main.users");
    assert_eq!(changed.key, Some(serde_json::json!({"id": 2})));
    let summaries: Vec<Summary> = each(&of_type(&out, "SUMMARY"));
    let [s] = summaries.as_slice() else {
        panic!("one SUMMARY: {out}")
    };
    assert_eq!(s.status, "fail");
    assert_eq!(
        out.lines().last(),
        of_type(&out, "SUMMARY").last().copied(),
        "SUMMARY comes last"
    );
    for (kind, n) in s.findings.as_ref().unwrap() {
        assert!(FINDING_KINDS.contains(&kind.as_str()) && *n > 0, "{kind}");
    }
    assert_eq!(s.rows_source, Some(680));

    // A validation that could not be carried out: a SUMMARY of status error, with why.
    let r = d.run("ferry-validate", &[&d.db("missing.db"), &copy], b"");
    r.expect_code(2);
    let out = r.stdout();
    let summaries: Vec<Summary> = each(&of_type(&out, "SUMMARY"));
    assert!(
        matches!(summaries.as_slice(), [s] if s.status == "error" && s.message.is_some() && s.source.is_none()),
        "{out}"
    );
}

#[test]
fn plans_rejects_and_the_audit_log_match_the_documented_shapes() {
    let d = Dir::new();
    let src = d.sample();
    let copy = d.db("copy.db");
    // A dry run into a new database: the tables it would make and the rows it would load.
    let dry = d.pipe(
        &[
            ("ferry-export", &[&src]),
            ("ferry-import", &[&copy, "--create", "--dry-run"]),
        ],
        b"",
    );
    all_ok(&dry);
    let out = dry[1].stdout();
    let plans: Vec<Plan> = each(&of_type(&out, "PLAN"));
    let actions: Vec<&str> = plans.iter().map(|p| p.action.as_str()).collect();
    for a in ["create_table", "create_index", "load"] {
        assert!(actions.contains(&a), "{a} in {actions:?}");
    }
    let load = plans.iter().find(|p| p.action == "load").unwrap();
    assert!(load.insert.is_some() && load.already_imported == Some(0) && load.rows.is_some());
    let ddl = plans.iter().find(|p| p.action == "create_table").unwrap();
    assert!(ddl.sql.as_deref().unwrap().starts_with("CREATE TABLE"), "{ddl:?}");

    // Rows the target refuses go to the reject file.
    common::import_tags_refusing_red(&d);
    let text = d.reject_text();
    let rejects: Vec<RowReject> = each(&text.lines().collect::<Vec<_>>());
    assert!(!rejects.is_empty());
    for r in &rejects {
        assert_eq!(r.stream, "main.tags");
        assert_eq!(r.record["color"], "red", "{r:?}");
        assert!(
            r.key.get("name").is_some() && r.line > 0 && !r.reason.is_empty(),
            "{r:?}"
        );
    }

    // A rollback's plan, then the same carried out, with its audit log.
    let plan = d.run("ferry", &["rollback", "--last"], b"");
    plan.ok();
    let text = plan.stdout();
    let lines: Vec<&str> = text.lines().collect();
    let plans: Vec<Plan> = each(&lines);
    assert!(!plans.is_empty());
    for p in &plans {
        assert_eq!(p.type_, "PLAN");
        assert!(PLAN_ACTIONS.contains(&p.action.as_str()), "{p:?}");
    }
    assert!(plans.iter().any(|p| p.action == "delete" && p.key.is_some()), "{text}");
    let done = d.run("ferry", &["rollback", "--last", "--confirm"], b"");
    done.ok();
    let text = done.stdout();
    let plans: Vec<Plan> = each(&text.lines().collect::<Vec<_>>());
    assert!(plans.iter().any(|p| p.action == "deleted"), "{text}");
    let audit = std::fs::read_to_string(d.path(".ferry/audit.ndjson")).unwrap();
    let entries: Vec<Audit> = each(&audit.lines().collect::<Vec<_>>());
    assert!(
        entries
            .iter()
            .any(|e| e.action == "delete" && e.table.as_deref() == Some("tags"))
    );
    for e in &entries {
        assert!(
            PLAN_ACTIONS.contains(&e.action.as_str()) || e.action == "failed",
            "{e:?}"
        );
        assert!(!e.run.is_empty() && e.target.starts_with("sqlite:") && !e.at.is_empty());
    }
}

#[test]
fn files_lines_match_the_documented_shapes() {
    let d = Dir::new();
    let tree = d.path("tree");
    common::write_file(&tree, "a.txt", b"hello");
    common::write_file(&tree, "sub/b.bin", &[0u8, 1, 2]);
    std::os::unix::fs::symlink("a.txt", tree.join("link")).unwrap();
    let src = format!("dir:{}", tree.display());
    let r = d.run("ferry-export", &[&src], b"");
    r.ok();
    let out = r.stdout();
    let files: Vec<File> = each(
        &of_type(&out, "FILE")
            .iter()
            .map(|l| l.replacen(r#"{"type":"FILE","#, "{", 1))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert_eq!(files.len(), 2);
    assert!(
        files
            .iter()
            .all(|f| f.content.uri.starts_with("file://") && f.sha256.len() == 64)
    );
    let errors: Vec<ErrorLine> = each(
        &of_type(&out, "ERROR")
            .iter()
            .map(|l| l.replacen(r#"{"type":"ERROR","#, "{", 1))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(
        matches!(errors.as_slice(), [e] if !e.fatal && e.path.as_deref() == Some("link") && e.file_status.as_deref() == Some("skipped-symlink")),
        "{errors:?}"
    );

    // A dry run's plan, then the upload results.
    let dst = format!("dir:{}", d.path("out").display());
    let dry = common::put_tree(&d, &tree, &dst, &["--dry-run"]);
    all_ok(&dry);
    let out = dry[1].stdout();
    let plans: Vec<Plan> = each(&of_type(&out, "PLAN"));
    assert_eq!(plans.iter().filter(|p| p.action == "upload").count(), 2, "{out}");
    let summary = plans.iter().find(|p| p.action == "summary").unwrap();
    assert_eq!((summary.upload, summary.bytes_to_send), (Some(2), Some(8)));
    let put = common::put_tree(&d, &tree, &dst, &[]);
    all_ok(&put);
    let results: Vec<UploadResult> = common::upload_results(&put[1])
        .into_iter()
        .map(|v| serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}: {v}")))
        .collect();
    let statuses: Vec<(&str, &str)> = results.iter().map(|r| (r.path.as_str(), r.status.as_str())).collect();
    assert!(statuses.contains(&("a.txt", "uploaded")), "{statuses:?}");
    assert!(statuses.contains(&("link", "skipped-symlink")), "{statuses:?}");
}
