//! The malformed-input corpus (testdata/malformed): each case fails with an error that names the
//! line (and stream), exits 2, and leaves the target exactly as the last acknowledged STATE left it.
//! The cases run in-process (the import stage's function, as the binary calls it), so the corpus
//! costs no process per case; the binaries meet bad input in the other tests here.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use crate::common::{Dir, column, written_and_already};
use ferry::ExitStatus;
use ferry::address::Address;
use ferry::protocol::StreamWriter;
use ferry::stage::import::{self, ImportConfig};

/// (case, expected message fragments, ids in the target afterwards, exit code)
const CASES: &[(&str, &[&str], &[i64], i32)] = &[
    ("ok", &[], &[1, 2, 3, 4], 0),
    ("bad_json", &["line 8 is not a valid protocol message"], &[1, 2], 2),
    (
        "wrong_type",
        &["line 8 (stream main.t): field \"id\": expected integer, found the string \"four\""],
        &[1, 2],
        2,
    ),
    (
        "wrong_type_boolean",
        &["line 8 (stream main.t): field \"id\": expected integer, found the boolean true"],
        &[1, 2],
        2,
    ),
    (
        "schema_key_changed",
        &["line 8 (stream main.t): a SCHEMA that changes the stream's key from (id) to (name)"],
        &[1, 2],
        2,
    ),
    (
        "reserved_stream_name",
        &["line 3 (stream main._ferry_commits): tables named _ferry_* are ferry's own"],
        &[],
        2,
    ),
    (
        "wrong_type_bytes",
        &["line 8 (stream main.t): field \"data\": invalid base64"],
        &[1, 2],
        2,
    ),
    (
        "integer_too_big",
        &["line 8 (stream main.t): field \"id\": the integer 18446744073709551615 does not fit"],
        &[1, 2],
        2,
    ),
    (
        "unknown_stream",
        &["line 8 (stream main.nope): a RECORD before its stream's SCHEMA"],
        &[1, 2],
        2,
    ),
    (
        "unknown_field",
        &["line 8 (stream main.t): field \"email\" is not in the stream's SCHEMA"],
        &[1, 2],
        2,
    ),
    ("missing_type", &["line 8 has no \"type\" field"], &[1, 2], 2),
    ("not_an_object", &["line 8 is not a valid protocol message"], &[1, 2], 2),
    (
        "record_not_object",
        &["line 8 (stream main.t)", "expected a record object"],
        &[1, 2],
        2,
    ),
    (
        "over_long_line",
        &["line 8 is longer than the limit of 250 bytes"],
        &[1, 2],
        2,
    ),
    (
        "duplicate_key",
        &["line 8: key {\"id\":2} of stream main.t is already in table t (--on-conflict fail)"],
        &[1, 2],
        2,
    ),
    (
        "truncated",
        &[
            "input ended after line 7 without END",
            "nothing after the STATE at line 6 (seq 1) was committed",
        ],
        &[1, 2],
        4,
    ),
    (
        "truncated_mid_line",
        &["line 8 is not a valid protocol message", "the stream was cut off"],
        &[1, 2],
        4,
    ),
    ("invalid_utf8", &["line 8 is not valid UTF-8"], &[1, 2], 2),
    (
        "stream_end_count",
        &["line 10 (stream main.t): STREAM_END says 5 rows but 4 arrived"],
        &[1, 2, 3, 4],
        2,
    ),
    (
        "record_after_stream_end",
        &["line 11 (stream main.t): a RECORD after its stream's STREAM_END"],
        &[1, 2, 3, 4],
        2,
    ),
    (
        "schema_after_stream_end",
        &["line 11 (stream main.t): a SCHEMA after the stream's STREAM_END"],
        &[1, 2, 3, 4],
        2,
    ),
    (
        "second_stream_end",
        &["line 11 (stream main.t): a second STREAM_END for the stream"],
        &[1, 2, 3, 4],
        2,
    ),
    (
        "file_into_table",
        &["line 11", "FILE messages go to an object store"],
        &[1, 2, 3, 4],
        2,
    ),
    // An `export --resume` whose stream starts past what the target holds (it lost rows).
    (
        "resume_past_target",
        &["line 3 (stream main.t): the stream starts at row 2, but the target holds only the first 0 rows"],
        &[],
        2,
    ),
    (
        "message_after_end",
        &["line 12 (stream main.t): a message after END"],
        &[1, 2, 3, 4],
        2,
    ),
    (
        "producer_failed",
        &["line 8: the producer failed (system): disk read error on the source"],
        &[1, 2],
        2,
    ),
    (
        "end_failed",
        &["line 8: the producer ended with status \"failed\""],
        &[1, 2],
        2,
    ),
    ("second_begin", &["line 8: a second BEGIN"], &[1, 2], 2),
    // Lines that start like the writer's own RECORDs but hold more after the record.
    (
        "op_after_record",
        &["line 8 (stream main.t): a delete in stream main.t, whose SCHEMA does not declare \"changes\": true"],
        &[1, 2],
        2,
    ),
    (
        "trailing_brace",
        &["line 8 is not a valid protocol message"],
        &[1, 2],
        2,
    ),
    (
        "wrong_protocol",
        &["line 1: protocol \"ferry/99\" is not \"ferry/1\""],
        &[],
        2,
    ),
    (
        "schema_key_not_a_column",
        &["line 2", "key property \"uuid\" is not a column"],
        &[],
        2,
    ),
];

fn corpus(case: &str) -> Vec<u8> {
    let path = format!("{}/testdata/malformed/{case}.ndjson", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn ids(d: &Dir) -> Vec<i64> {
    if !d.path("t.db").exists() {
        return vec![];
    }
    let c = d.open("t.db");
    let exists: bool = c
        .query_row("SELECT count(*) > 0 FROM sqlite_schema WHERE name = 't'", [], |r| {
            r.get(0)
        })
        .unwrap();
    if !exists {
        return vec![];
    }
    column(&c, "SELECT id FROM t ORDER BY id")
}

/// One case imported in-process, by the stage function `ferry-import` runs, as the binary would
/// with `--create --max-line-bytes 250` in this directory: its exit status, its error (with
/// causes) and its stdout. The binary's own handling of bad input is tested below and in
/// `pipeline::`.
fn import_in_process(d: &Dir, case: &str) -> (u8, String, String) {
    let target = Address::parse(&d.db("t.db")).unwrap();
    let cfg = ImportConfig {
        create: true,
        max_line: 250,
        ..ImportConfig::new(target, d.path(".ferry/state.db"))
    };
    let mut out = StreamWriter::new(Vec::new());
    let result = import::run(&cfg, corpus(case).as_slice(), &mut out);
    let stdout = String::from_utf8_lossy(&out.into_inner().unwrap()).into_owned();
    match result {
        Ok(o) if o.rejected > 0 => (ExitStatus::Rejected.code(), String::new(), stdout),
        Ok(_) => (ExitStatus::Ok.code(), String::new(), stdout),
        Err(e) => (ExitStatus::for_error(&e).code(), e.chain(), stdout),
    }
}

#[test]
fn every_malformed_case_fails_clearly_and_commits_only_what_was_acknowledged() {
    let files: std::collections::BTreeSet<String> =
        std::fs::read_dir(format!("{}/testdata/malformed", env!("CARGO_MANIFEST_DIR")))
            .unwrap()
            .map(|e| {
                e.unwrap()
                    .file_name()
                    .to_string_lossy()
                    .trim_end_matches(".ndjson")
                    .to_owned()
            })
            .collect();
    let listed: std::collections::BTreeSet<String> = CASES.iter().map(|c| c.0.to_owned()).collect();
    assert_eq!(
        files, listed,
        "every corpus file has an expectation here, and every expectation a file"
    );

    for (case, messages, expected_ids, code) in CASES {
        let d = Dir::new();
        let (status, error, out) = import_in_process(&d, case);
        assert_eq!(i32::from(status), *code, "case {case}: {error}");
        for m in *messages {
            assert!(error.contains(m), "case {case}: the error lacks {m:?}: {error}");
        }
        assert_eq!(ids(&d), *expected_ids, "case {case}: rows in the target");
        if *code != 0 {
            // Nothing on stdout past the last acknowledged STATE, and no END.
            assert!(!out.contains("\"type\":\"END\""), "case {case}: {out}");
            // The run is recorded with its reason, for `ferry status`.
            if d.path(".ferry/state.db").exists() && !["wrong_protocol"].contains(case) {
                let s = d.run("ferry", &["status", "--json"], b"");
                let runs = s.lines();
                let run = runs
                    .iter()
                    .find(|l| l["type"] == "RUN")
                    .unwrap_or_else(|| panic!("case {case}:{s:?}"));
                assert_eq!(run["run"]["status"], "failed", "case {case}:{s:?}");
                assert!(
                    run["run"]["message"].as_str().unwrap().contains(messages[0]),
                    "case {case}:{s:?}"
                );
            }
        }
    }
}

#[test]
fn a_fixed_stream_resumes_after_a_malformed_one() {
    // The truncated stream committed rows 1 and 2; the whole stream then finishes the job.
    let d = Dir::new();
    d.run("ferry-import", &[&d.db("t.db"), "--create"], &corpus("truncated"))
        .expect_code(4);
    let r = d.run("ferry-import", &[&d.db("t.db"), "--create"], &corpus("ok"));
    r.ok();
    assert_eq!(ids(&d), [1, 2, 3, 4]);
    assert_eq!(written_and_already(&r), (2, 2));
}

#[test]
fn transform_rejects_what_it_cannot_read_and_truncation() {
    for (case, message) in [
        ("bad_json", "line 8 is not a valid protocol message"),
        ("missing_type", "line 8 has no \"type\" field"),
        ("invalid_utf8", "line 8 is not valid UTF-8"),
        ("truncated", "input ended after line 7 without END"),
        (
            "unknown_stream",
            "line 8 (stream main.nope): a RECORD before its stream's SCHEMA",
        ),
    ] {
        let d = Dir::new();
        let r = d.run("ferry-transform", &["--rename-stream", "main.t=u"], &corpus(case));
        r.expect_code(if case == "truncated" { 4 } else { 2 })
            .stderr_has(message);
    }
    // No input at all is not a stream passed through: the producer sent nothing.
    let d = Dir::new();
    d.run("ferry-transform", &["--rename-stream", "main.t=u"], b"")
        .expect_code(4)
        .stderr_has("the input was empty");
    // With a field operation, records are decoded, so wrong types are caught here too.
    let d = Dir::new();
    let r = d.run(
        "ferry-transform",
        &["--drop-field", "main.t.name"],
        &corpus("wrong_type"),
    );
    r.expect_code(2).stderr_has("expected integer");
}
