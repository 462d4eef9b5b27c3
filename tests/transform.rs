//! ferry-transform: what it changes, what it must leave alone, and that its output imports and
//! validates.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use crate::common::{Dir, all_ok, count};
use serde_json::Value;

fn export(d: &Dir) -> Vec<u8> {
    let r = d.run("ferry-export", &[&d.sample()], b"");
    r.ok();
    r.output.stdout
}

fn schema_of<'a>(lines: &'a [Value], stream: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["type"] == "SCHEMA" && l["stream"] == stream)
        .unwrap_or_else(|| panic!("no SCHEMA for {stream}"))
}

#[test]
fn untouched_lines_pass_byte_for_byte() {
    let d = Dir::new();
    let input = export(&d);
    let r = d.run("ferry-transform", &["--rename-stream", "main.tags=labels"], &input);
    r.ok();
    let (inp, out) = (String::from_utf8(input).unwrap(), r.stdout());
    let untouched = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.contains("main.tags") && !l.contains("\"labels\""))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        untouched(&inp),
        untouched(&out),
        "lines of other streams, STATE and END are unchanged"
    );
    // The renamed stream's records keep their bytes after the envelope.
    let tail = |t: &str, prefix: &str| -> Vec<String> {
        t.lines()
            .filter_map(|l| l.strip_prefix(prefix).map(str::to_owned))
            .collect()
    };
    assert_eq!(
        tail(&inp, r#"{"type":"RECORD","stream":"main.tags","record":"#),
        tail(&out, r#"{"type":"RECORD","stream":"labels","record":"#)
    );
    assert_eq!(inp.lines().count(), out.lines().count());
}

#[test]
fn renames_follow_keys_and_references_into_other_streams() {
    let d = Dir::new();
    let input = export(&d);
    let r = d.run(
        "ferry-transform",
        &[
            "--rename-stream",
            "main.users=people",
            "--rename-field",
            "people.id=person_id",
            "--drop-field",
            "people.password_hash",
        ],
        &input,
    );
    r.ok();
    let lines = r.lines();
    let people = schema_of(&lines, "people");
    assert_eq!(people["key_properties"], serde_json::json!(["person_id"]));
    assert_eq!(people["source_stream"], "main.users");
    assert!(people["schema"]["properties"].get("password_hash").is_none());
    assert!(
        people["x-sqlite"].get("sql").is_none(),
        "the source's DDL no longer fits"
    );
    let files = schema_of(&lines, "main.saved_files");
    assert_eq!(
        files["foreign_keys"][0]["references"],
        serde_json::json!({"stream": "people", "columns": ["person_id"]})
    );
    // Bookmarks stay under the producer's names, for export --resume.
    assert!(
        lines
            .iter()
            .any(|l| l["type"] == "STATE" && l["value"]["bookmarks"].get("main.users").is_some())
    );
    assert!(
        !lines
            .iter()
            .any(|l| l["type"] == "STATE" && l["value"]["bookmarks"].get("people").is_some())
    );
    // Records carry the new field name; the import accepts the recomputed STREAM_END.
    assert!(
        lines
            .iter()
            .any(|l| l["type"] == "RECORD" && l["stream"] == "people" && l["record"]["person_id"] == 1)
    );
    let runs = d.pipe(&[("ferry-import", &[&d.db("c.db"), "--create"])], r.stdout().as_bytes());
    all_ok(&runs);
    let c = d.open("c.db");
    let sql: String = c
        .query_row("SELECT sql FROM sqlite_schema WHERE name = 'saved_files'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(sql.contains(r#"REFERENCES "people" ("person_id")"#), "{sql}");
}

#[test]
fn a_key_field_cannot_be_dropped() {
    let d = Dir::new();
    let r = d.run("ferry-transform", &["--drop-field", "main.tags.name"], &export(&d));
    r.expect_code(2)
        .stderr_has("cannot drop field \"name\" of stream main.tags: it is part of the key");
}

#[test]
fn filter_set_and_jq_change_rows_and_the_import_verifies_the_new_digests() {
    let d = Dir::new();
    let input = export(&d);
    let ops: &[&str] = &[
        "--filter",
        "main.users=.is_active == 1",
        "--set",
        "main.users.origin=legacy",
        "--jq",
        r#"if .stream == "main.notifications" then .record.kind |= ascii_upcase else . end"#,
    ];
    let runs = d.pipe(
        &[("ferry-transform", ops), ("ferry-import", &[&d.db("c.db"), "--create"])],
        &input,
    );
    all_ok(&runs);
    let c = d.open("c.db");
    let active = count(&d.open("sample.db"), "users") - 14;
    assert_eq!(count(&c, "users"), active, "inactive users filtered out");
    let origins: i64 = c
        .query_row("SELECT count(*) FROM users WHERE origin = 'legacy'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(origins, active);
    let kinds: i64 = c
        .query_row(
            "SELECT count(*) FROM notifications WHERE kind <> upper(kind)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(kinds, 0);
    // And the same transformed stream validates against the target.
    all_ok(&d.pipe(
        &[
            ("ferry-export", &[&d.sample()]),
            ("ferry-transform", ops),
            ("ferry-validate", &[&d.db("c.db")]),
        ],
        b"",
    ));
}

#[test]
fn a_middle_stage_that_changes_rows_without_saying_so_is_caught() {
    let d = Dir::new();
    let input = String::from_utf8(export(&d)).unwrap();
    // As if a `sed` in the middle changed a value: the STREAM_END digest no longer matches.
    let changed = input.replacen(r#""color":"red""#, r#""color":"RED""#, 1);
    let r = d.run("ferry-import", &[&d.db("c.db"), "--create"], changed.as_bytes());
    r.expect_code(2)
        .stderr_has("STREAM_END digest")
        .stderr_has("rows were changed on the way");
    d.run(
        "ferry-import",
        &[&d.db("c2.db"), "--create", "--no-verify"],
        changed.as_bytes(),
    )
    .ok();
}

#[test]
fn jq_can_make_a_new_stream_and_the_schema_follows() {
    let d = Dir::new();
    let input = export(&d);
    let program = r#"if .stream == "main.saved_files" then ., {type: "RECORD", stream: "file_sizes", record: {path: .record.path, size: .record.size}} else . end"#;
    let r = d.run("ferry-transform", &["--jq", program], &input);
    r.ok();
    let lines = r.lines();
    let s = schema_of(&lines, "file_sizes");
    assert_eq!(
        s["schema"]["properties"]["size"]["type"],
        serde_json::json!(["integer", "null"])
    );
    let end = lines
        .iter()
        .find(|l| l["type"] == "STREAM_END" && l["stream"] == "file_sizes")
        .unwrap();
    assert_eq!(end["rows"], 202);
    let final_end = lines.last().unwrap();
    assert_eq!(final_end["type"], "END");
    assert_eq!(final_end["rows"], 680 + 202);
    let runs = d.pipe(&[("ferry-import", &[&d.db("c.db"), "--create"])], r.stdout().as_bytes());
    all_ok(&runs);
    assert_eq!(count(&d.open("c.db"), "file_sizes"), 202);
}

#[test]
fn singer_mode_sends_only_schema_record_and_state() {
    let d = Dir::new();
    let r = d.run("ferry-export", &[&d.sample(), "--singer", "--table", "tags"], b"");
    r.ok();
    let kinds: std::collections::BTreeSet<String> = r
        .lines()
        .iter()
        .map(|l| l["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds.into_iter().collect::<Vec<_>>(), ["RECORD", "SCHEMA", "STATE"]);
    let t = d.run(
        "ferry-transform",
        &["--singer"],
        &d.run("ferry-export", &[&d.sample(), "--table", "tags"], b"")
            .output
            .stdout,
    );
    t.ok();
    assert!(
        t.lines()
            .iter()
            .all(|l| ["RECORD", "SCHEMA", "STATE"].contains(&l["type"].as_str().unwrap()))
    );
}
