//! The stages end to end through real pipes, on the bundled sample database.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use crate::common;
use crate::common::{Dir, Run, all_ok, column, count, dump, written_and_already};
use serde_json::{Value, json};

const RENAME: &[&str] = &[
    "--rename-stream",
    "main.users=people",
    "--drop-field",
    "people.password_hash",
];

fn tables(d: &Dir, db: &str) -> Vec<String> {
    column(
        &d.open(db),
        "SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name",
    )
}

#[test]
fn the_issue_pipeline_copies_transforms_and_proves_equal() {
    let d = Dir::new();
    let src = d.sample();
    let dst = d.db("copy.db");
    let export = d.run("ferry-export", &[&src], b"");
    export.ok();
    let stream = export.output.stdout.clone();

    let runs = d.pipe(
        &[("ferry-transform", RENAME), ("ferry-import", &[&dst, "--create"])],
        &stream,
    );
    all_ok(&runs);
    // The importer echoes its BEGIN, every STATE, each STREAM_END and an END with counts.
    let acks = runs[1].lines();
    let end = acks.last().unwrap();
    assert_eq!(end["type"], "END");
    assert_eq!(end["status"], "ok");
    assert_eq!(end["rows"], 680);
    assert_eq!(end["written"], 680);
    let states_in = stream
        .split(|b| *b == b'\n')
        .filter(|l| l.starts_with(br#"{"type":"STATE""#))
        .count();
    assert_eq!(
        acks.iter().filter(|l| l["type"] == "STATE").count(),
        states_in,
        "every STATE is acknowledged"
    );

    assert!(tables(&d, "copy.db").contains(&"people".to_string()));
    let c = d.open("copy.db");
    let cols: Vec<String> = column(&c, "SELECT name FROM pragma_table_info('people')");
    assert!(!cols.contains(&"password_hash".to_string()), "{cols:?}");

    // The transformed stream against the target: equal.
    let v = d.pipe(
        &[
            ("ferry-export", &[&src]),
            ("ferry-transform", RENAME),
            ("ferry-validate", &[&dst, "--report", "r.json"]),
        ],
        b"",
    );
    all_ok(&v);
    let report: Value = serde_json::from_str(&std::fs::read_to_string(d.path("r.json")).unwrap()).unwrap();
    assert_eq!(report["status"], "pass");
    assert_eq!(report["streams"].as_array().unwrap().len(), 7);
    assert!(v[2].stderr().contains("result: EQUAL"), "{:?}", v[2]);
    // The source's own dangling reference is carried over faithfully: reported, not failed.
    assert!(
        v[2].lines()
            .iter()
            .any(|f| f["kind"] == "fk_orphans_in_source" && f["severity"] == "warning"),
        "{:?}",
        v[2]
    );

    // The two databases directly: users became people, so they differ (exit 1), and say how.
    let direct = d.run("ferry-validate", &[&src, &dst], b"");
    direct.expect_code(1);
    assert!(
        direct
            .lines()
            .iter()
            .any(|f| f["kind"] == "table_missing" && f["table"] == "users"),
        "{direct:?}"
    );

    // Status reads the runs and batches back.
    let status = d.run("ferry", &["status"], b"");
    status.ok();
    assert!(status.stdout().contains("complete"), "{status:?}");
    let json = d.run("ferry", &["status", "--json"], b"");
    let run = &json.lines()[0]["run"];
    assert_eq!(run["rows_written"], 680);
    assert_eq!(run["status"], "complete");
}

#[test]
fn an_untransformed_copy_is_byte_for_byte_equal() {
    let d = Dir::new();
    let src = d.sample();
    all_ok(&d.pipe(
        &[
            ("ferry-export", &[&src]),
            ("ferry-import", &[&d.db("copy.db"), "--create"]),
        ],
        b"",
    ));
    d.run("ferry-validate", &[&src, &d.db("copy.db")], b"").ok();
    let (a, b) = (d.open("sample.db"), d.open("copy.db"));
    for (table, order) in [
        ("users", "id"),
        ("saved_files", "id"),
        ("notifications", "id"),
        ("tags", "name"),
        ("file_tags", "file_id, tag"),
        ("audit_log", "rowid"),
        ("app_settings", "key"),
    ] {
        assert_eq!(dump(&a, table, order), dump(&b, table, order), "table {table}");
    }
    // The schema is the source's own, word for word, for tables no transform touched.
    let schema = |c: &rusqlite::Connection| -> Vec<(String, String)> {
        c.prepare("SELECT name, sql FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%' AND name NOT LIKE '_ferry_%' ORDER BY name")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, Option<String>>(1)?.unwrap_or_default())))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let (sa, sb) = (schema(&a), schema(&b));
    assert_eq!(sa.len(), sb.len());
    for ((na, qa), (nb, qb)) in sa.iter().zip(&sb) {
        assert_eq!(na, nb);
        assert_eq!(
            qa.replace("IF NOT EXISTS ", ""),
            qb.replace("IF NOT EXISTS ", ""),
            "{na}"
        );
    }
    let seq: i64 = b
        .query_row("SELECT seq FROM sqlite_sequence WHERE name = 'saved_files'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(seq, 500, "AUTOINCREMENT keeps its sequence");
}

#[test]
fn validate_names_every_kind_of_difference() {
    let d = Dir::new();
    let src = d.sample();
    let dst = d.db("copy.db");
    all_ok(&d.pipe(&[("ferry-export", &[&src]), ("ferry-import", &[&dst, "--create"])], b""));
    let c = d.open("copy.db");
    c.execute_batch(
        "PRAGMA foreign_keys = OFF;
         DELETE FROM users WHERE id = 7;
         UPDATE users SET name = 'Mallory' WHERE id = 8;
         UPDATE notifications SET score = 0.30000000000000004 WHERE id = 1005;
         UPDATE app_settings SET value = '10485760' WHERE key = 'max_upload';
         INSERT INTO saved_files (id, user_id, path, size) VALUES (9000, 424242, 'orphan', 1);
         INSERT INTO audit_log VALUES ('2024-01-01 00:00:01', 'admin', 'login', 42);
         DELETE FROM tags WHERE name = 'Z';",
    )
    .unwrap();
    drop(c);
    let v = d.run("ferry-validate", &[&src, &dst, "--report", "r.json"], b"");
    v.expect_code(1);
    let findings = v.lines();
    let has = |stream: &str, kind: &str, key: Value| {
        findings
            .iter()
            .any(|f| f["stream"] == stream && f["kind"] == kind && (key.is_null() || f["key"] == key))
    };
    assert!(has("main.users", "missing", serde_json::json!({"id": 7})), "{v:?}");
    assert!(has("main.users", "changed", serde_json::json!({"id": 8})), "{v:?}");
    assert!(
        has("main.notifications", "changed", serde_json::json!({"id": 1005})),
        "{v:?}"
    );
    // The same number as text is a different value: a row count would never see it.
    assert!(
        has("main.app_settings", "changed", serde_json::json!({"key": "max_upload"})),
        "{v:?}"
    );
    assert!(
        has("main.saved_files", "extra", serde_json::json!({"id": 9000})),
        "{v:?}"
    );
    assert!(has("main.saved_files", "fk_orphans", Value::Null), "{v:?}");
    assert!(
        has("main.audit_log", "extra", Value::Null),
        "a duplicated row in a keyless table: {v:?}"
    );
    assert!(has("main.tags", "missing", serde_json::json!({"name": "Z"})), "{v:?}");
    // Deleting user 7 orphaned 8 more notifications than the one the source already had.
    let orphans = findings
        .iter()
        .find(|f| f["stream"] == "main.notifications" && f["kind"] == "fk_orphans")
        .unwrap();
    assert_eq!(
        (orphans["count"].as_u64(), orphans["at_source"].as_u64()),
        (Some(9), Some(1)),
        "{v:?}"
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(d.path("r.json")).unwrap()).unwrap();
    let users = report["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stream"] == "main.users")
        .unwrap();
    assert_eq!(
        (users["missing"].as_u64(), users["changed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(users["source_rows"], 47);
    assert_eq!(users["target_rows"], 46);
    assert!(v.stderr().contains("DIFFERENT"), "{v:?}");
}

#[test]
fn validate_fails_on_what_it_cannot_check_unless_allowed() {
    let d = Dir::new();
    let src = d.sample();
    let dst = d.db("copy.db");
    all_ok(&d.pipe(
        &[
            ("ferry-export", &[&src, "--table", "notifications"]),
            ("ferry-import", &[&dst, "--create"]),
        ],
        b"",
    ));
    // The target has no users table: the notifications' references cannot be checked.
    let v = d.run("ferry-validate", &[&src, &dst, "--table", "notifications"], b"");
    v.expect_code(1);
    assert!(v.lines().iter().any(|f| f["kind"] == "unverified"), "{v:?}");
    d.run(
        "ferry-validate",
        &[&src, &dst, "--table", "notifications", "--allow-unverified"],
        b"",
    )
    .ok();
}

#[test]
fn validate_checks_a_stream_file_on_its_own() {
    let d = Dir::new();
    let src = d.sample();
    let export = d.run("ferry-export", &[&src], b"");
    export.ok();
    std::fs::write(d.path("app.ndjson"), &export.output.stdout).unwrap();
    // The sample refers to a user that does not exist (on purpose): a stream on its own cannot
    // resolve that reference, and says so.
    let v = d.run("ferry-validate", &["app.ndjson"], b"");
    v.expect_code(1);
    let kinds: Vec<(String, String)> = v
        .lines()
        .iter()
        .filter(|f| f["type"] == "FINDING")
        .map(|f| {
            (
                f["stream"].as_str().unwrap().to_owned(),
                f["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [("main.notifications".to_string(), "fk_orphans".to_string())],
        "{v:?}"
    );
    d.run("ferry-validate", &["app.ndjson", "--exclude", "notifications"], b"")
        .ok();
    // Its parent stream left out, a reference cannot be checked: a failure unless allowed.
    let v = d.run("ferry-validate", &["app.ndjson", "--table", "notifications"], b"");
    v.expect_code(1).stderr_has("result: NOT VERIFIED");
    assert!(!v.stderr().contains("DIFFERENT"), "{v:?}");
    assert!(v.lines().iter().any(|f| f["kind"] == "unverified"), "{v:?}");
    assert_eq!(v.lines().last().unwrap()["status"], "unverified", "{v:?}");
    d.run(
        "ferry-validate",
        &["app.ndjson", "--table", "notifications", "--allow-unverified"],
        b"",
    )
    .ok();

    // A record changed on the way: its STREAM_END digest no longer matches.
    let text = String::from_utf8(export.output.stdout.clone()).unwrap();
    let tampered = text.replacen(r#""name":"User 3""#, r#""name":"User Three""#, 1);
    assert_ne!(tampered, text);
    std::fs::write(d.path("tampered.ndjson"), tampered).unwrap();
    let v = d.run("ferry-validate", &["tampered.ndjson"], b"");
    v.expect_code(1);
    assert!(
        v.lines()
            .iter()
            .any(|f| f["kind"] == "stream_end_mismatch" && f["stream"] == "main.users"),
        "{v:?}"
    );

    // Cut off before END: a truncated stream proves nothing.
    let cut: String = text.lines().take(300).map(|l| format!("{l}\n")).collect();
    let v = d.run("ferry-validate", &["-"], cut.as_bytes());
    v.expect_code(2).stderr_has("without END");
    assert_eq!(v.lines().last().unwrap()["status"], "error", "{v:?}");

    // A duplicated key and a dangling reference, in a stream that is otherwise complete.
    let mut lines: Vec<&str> = text.lines().collect();
    let dup = lines
        .iter()
        .position(|l| l.contains(r#""stream":"main.tags","record""#))
        .unwrap();
    let dup_line = lines[dup].to_string();
    lines.insert(dup + 1, &dup_line);
    let joined = lines.join("\n") + "\n";
    let v = d.run("ferry-validate", &["-", "--max-listed", "5"], joined.as_bytes());
    v.expect_code(1);
    assert!(
        v.lines()
            .iter()
            .any(|f| f["kind"] == "duplicate" && f["stream"] == "main.tags"),
        "{v:?}"
    );
}

#[test]
fn validate_errors_exit_2() {
    let d = Dir::new();
    let v = d.run("ferry-validate", &["sqlite:nope.db", "sqlite:nope2.db"], b"");
    v.expect_code(2).stderr_has("no such database file");
    let v = d.run("ferry-validate", &["mystery-store"], b"");
    v.expect_code(2).stderr_has("cannot tell what store");
}

#[test]
fn a_validation_that_compared_nothing_is_an_error_never_equal() {
    let d = Dir::new();
    let app = d.sample();
    let refused = |v: &Run, why: &str| {
        v.expect_code(2).stderr_has(why).stderr_has("nothing was compared");
        assert!(!v.stderr().contains("EQUAL"), "{v:?}");
        let summary = v.lines().pop().expect("a SUMMARY line");
        assert_eq!(
            (&summary["type"], &summary["status"]),
            (&json!("SUMMARY"), &json!("error")),
            "{v:?}"
        );
    };
    // A producer that failed sent nothing.
    let runs = d.pipe(
        &[("ferry-export", &["sqlite:typo.db"]), ("ferry-validate", &[&app])],
        b"",
    );
    runs[0].expect_code(2);
    refused(&runs[1], "the input is empty");
    refused(&d.run("ferry-validate", &[&app], b""), "the input is empty");

    let export = d.run("ferry-export", &[&app], b"");
    export.ok();
    let text = export.stdout();
    // A Singer-style stream (no BEGIN, no END) cannot say it is whole.
    let singer: String = text
        .lines()
        .filter(|l| !l.contains(r#""type":"BEGIN""#) && !l.contains(r#""type":"END""#))
        .map(|l| format!("{l}\n"))
        .collect();
    refused(&d.run("ferry-validate", &[&app], singer.as_bytes()), "no BEGIN");
    // A producer that said it failed, at its END or in a fatal ERROR.
    let failed = text.replace(r#""type":"END","run_id""#, r#""type":"END","status":"failed","run_id""#);
    let failed = failed.replacen(r#","status":"ok""#, "", 1);
    assert_ne!(failed, text);
    refused(
        &d.run("ferry-validate", &[&app], failed.as_bytes()),
        "the producer failed",
    );
    let fatal = text.replace(
        r#"{"type":"END""#,
        "{\"type\":\"ERROR\",\"failure_type\":\"system\",\"message\":\"disk on fire\",\"fatal\":true}\n{\"type\":\"END\"",
    );
    refused(&d.run("ferry-validate", &[&app], fatal.as_bytes()), "disk on fire");

    // Whole streams and databases that hold nothing to compare.
    rusqlite::Connection::open(d.path("empty.db"))
        .unwrap()
        .execute_batch("PRAGMA user_version = 1")
        .unwrap();
    let empty = d.db("empty.db");
    refused(&d.run("ferry-validate", &[&empty, &app], b""), "has no tables");
    let nothing = d.run("ferry-export", &[&empty], b"");
    nothing.ok();
    refused(
        &d.run("ferry-validate", &[&app], &nothing.output.stdout),
        "the stream has no SCHEMA",
    );
    std::fs::create_dir_all(d.path("a")).unwrap();
    std::fs::create_dir_all(d.path("b")).unwrap();
    refused(&d.run("ferry-validate", &["dir:a", "dir:b"], b""), "hold no files");
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let d = Dir::new();
    let src = d.sample();
    let dst = d.db("copy.db");
    let export = d.run("ferry-export", &[&src, "--table", "users", "--table", "tags"], b"");
    let stream = export.output.stdout.clone();
    let plan = d.run("ferry-import", &[&dst, "--create", "--dry-run"], &stream);
    plan.ok().stderr_has("ferry-import: done: dry run, nothing changed");
    assert!(!d.path("copy.db").exists(), "a dry run creates nothing");
    assert!(!d.path(".ferry/state.db").exists(), "nor a state file");
    let lines = plan.lines();
    assert!(
        lines
            .iter()
            .any(|l| l["action"] == "create_table" && l["table"] == "users")
    );
    let load = lines
        .iter()
        .find(|l| l["action"] == "load" && l["table"] == "users")
        .unwrap();
    assert_eq!(load["insert"], 47);

    // Against a target holding some of the rows: which would be skipped or overwritten.
    d.run("ferry-import", &[&dst, "--create"], &stream).ok();
    d.open("copy.db")
        .execute_batch("DELETE FROM users WHERE id > 30")
        .unwrap();
    let plan = d.run(
        "ferry-import",
        &[&dst, "--on-conflict", "overwrite", "--dry-run", "--fresh"],
        &stream,
    );
    plan.ok();
    let load = plan
        .lines()
        .into_iter()
        .find(|l| l["action"] == "load" && l["table"] == "users")
        .unwrap();
    // Left: ids 1..=30, 0 and the smallest 64-bit id.
    assert_eq!(
        (load["insert"].as_u64(), load["overwrite"].as_u64()),
        (Some(15), Some(32)),
        "{plan:?}"
    );
    assert_eq!(count(&d.open("copy.db"), "users"), 32, "still unchanged");
}

#[test]
fn on_conflict_fail_skip_overwrite() {
    let d = Dir::new();
    let src = d.sample();
    let dst = d.db("copy.db");
    let stream = d
        .run("ferry-export", &[&src, "--table", "tags"], b"")
        .output
        .stdout
        .clone();
    d.run("ferry-import", &[&dst, "--create"], &stream).ok();
    d.open("copy.db")
        .execute_batch("UPDATE tags SET color = 'changed' WHERE name = 'urgent'")
        .unwrap();

    // --fresh: a new import of the same rows, not a resume. fail stops at the first key.
    let fail = d.run("ferry-import", &[&dst, "--fresh"], &stream);
    fail.expect_code(2)
        .stderr_has("is already in table tags (--on-conflict fail)");
    let color = |d: &Dir| -> String {
        d.open("copy.db")
            .query_row("SELECT color FROM tags WHERE name = 'urgent'", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(color(&d), "changed");

    d.run("ferry-import", &[&dst, "--fresh", "--on-conflict", "skip"], &stream)
        .ok();
    assert_eq!(color(&d), "changed", "skip keeps the row that was there");

    let over = d.run(
        "ferry-import",
        &[&dst, "--fresh", "--on-conflict", "overwrite"],
        &stream,
    );
    over.ok();
    assert_eq!(color(&d), "red", "overwrite replaces it");
    assert_eq!(count(&d.open("copy.db"), "tags"), 5);
}

#[test]
fn a_rerun_of_a_finished_import_changes_nothing() {
    let d = Dir::new();
    let src = d.sample();
    let dst = d.db("copy.db");
    all_ok(&d.pipe(&[("ferry-export", &[&src]), ("ferry-import", &[&dst, "--create"])], b""));
    let again = d.pipe(&[("ferry-export", &[&src]), ("ferry-import", &[&dst, "--create"])], b"");
    all_ok(&again);
    assert_eq!(written_and_already(&again[1]), (0, 680));
    d.run("ferry-validate", &[&src, &dst], b"").ok();
}

#[test]
fn rejected_rows_go_to_the_reject_file_and_the_run_goes_on() {
    let d = Dir::new();
    let dst = d.db("copy.db");
    d.open("copy.db")
        .execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL, n INT CHECK (n < 100))")
        .unwrap();
    let stream = [
        r#"{"type":"BEGIN","protocol":"ferry/1","run_id":"rej"}"#,
        r#"{"type":"SCHEMA","stream":"main.t","schema":{"properties":{"id":{"type":"integer"},"name":{"type":["string","null"]},"n":{"type":["integer","null"]}}},"key_properties":["id"]}"#,
        r#"{"type":"RECORD","stream":"main.t","record":{"id":1,"name":"a","n":1}}"#,
        r#"{"type":"RECORD","stream":"main.t","record":{"id":2,"name":null,"n":2}}"#,
        r#"{"type":"RECORD","stream":"main.t","record":{"id":3,"name":"c","n":300}}"#,
        r#"{"type":"RECORD","stream":"main.t","record":{"id":4,"name":"d","n":4}}"#,
        r#"{"type":"STREAM_END","stream":"main.t","status":"complete","rows":4}"#,
        r#"{"type":"END","run_id":"rej","status":"ok"}"#,
    ]
    .join("\n");
    let r = d.run(
        "ferry-import",
        &[&dst, "--reject-file", "rejects.ndjson"],
        stream.as_bytes(),
    );
    // Everything else done, but not everything: rejects have their own exit status, and the
    // closing line counts them and names the file.
    r.expect_code(3)
        .stderr_has("ferry-import: done, with rejects: 1 streams, 4 rows read, 2 written")
        .stderr_has("2 rejected")
        .stderr_has("rejects in rejects.ndjson");
    assert_eq!(count(&d.open("copy.db"), "t"), 2);
    let rejects: Vec<Value> = std::fs::read_to_string(d.path("rejects.ndjson"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rejects.len(), 2);
    assert_eq!(rejects[0]["key"], serde_json::json!({"id": 2}));
    assert_eq!(rejects[0]["line"], 4);
    assert!(
        rejects[0]["reason"]
            .as_str()
            .unwrap()
            .contains("NOT NULL constraint failed: t.name")
    );
    assert_eq!(rejects[0]["record"]["name"], Value::Null);
    assert_eq!(rejects[1]["key"], serde_json::json!({"id": 3}));
    assert!(
        rejects[1]["reason"]
            .as_str()
            .unwrap()
            .contains("CHECK constraint failed")
    );
    let end = r.lines().pop().unwrap();
    assert_eq!(end["rejected"], 2);

    // Past --max-rejects the import stops, naming the last one, and commits nothing of the batch.
    let d2 = Dir::new();
    d2.open("copy.db")
        .execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL, n INT CHECK (n < 100))")
        .unwrap();
    let r = d2.run(
        "ferry-import",
        &[&d2.db("copy.db"), "--max-rejects", "1"],
        stream.as_bytes(),
    );
    r.expect_code(2)
        .stderr_has("more than 1 rows rejected (--max-rejects)")
        .stderr_has("line 5 of stream main.t");
    assert_eq!(count(&d2.open("copy.db"), "t"), 0);
}

/// Run a shell pipeline of our binaries (named `$EXPORT`, `$IMPORT`...) in `d`, giving back
/// each stage's exit status (bash's PIPESTATUS) and the whole stderr.
fn shell(d: &Dir, script: &str) -> (Vec<i32>, String) {
    let mut c = std::process::Command::new("bash");
    c.arg("-c")
        .arg(format!("{script}; echo \"status: ${{PIPESTATUS[*]}}\" >&2"))
        .current_dir(d.root())
        .env_remove("FERRY_LOG");
    for (var, bin) in [
        ("EXPORT", "ferry-export"),
        ("TRANSFORM", "ferry-transform"),
        ("IMPORT", "ferry-import"),
        ("VALIDATE", "ferry-validate"),
    ] {
        c.env(var, common::bin(bin));
    }
    let out = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let status = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("status: "))
        .unwrap()
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect();
    (status, stderr)
}

#[test]
fn an_import_whose_output_reader_goes_away_is_not_a_success() {
    let d = Dir::new();
    let src = d.sample();
    // `head` takes the first 100 bytes of the acknowledgements and leaves: the import cannot
    // deliver the rest, so it stops, says how far it got, and exits 4; re-run, it finishes.
    let (status, stderr) = shell(
        &d,
        &format!("\"$EXPORT\" {src} | \"$IMPORT\" sqlite:copy.db --create | head -c 100 >/dev/null"),
    );
    assert_eq!(status[1], 4, "{stderr}");
    assert!(
        stderr.contains("ferry-import: stopped early: the reader of its output went away"),
        "{stderr}"
    );
    assert!(stderr.contains("run the same pipeline again"), "{stderr}");
    let (status, stderr) = shell(
        &d,
        &format!("\"$EXPORT\" {src} | \"$IMPORT\" sqlite:copy2.db --create | true"),
    );
    assert_eq!(status[1], 4, "{stderr}");
    assert!(stderr.contains("ferry-import: stopped early"), "{stderr}");
    // Its first commit landed before the first acknowledgement found no reader: the closing
    // line counts it rather than saying nothing was committed.
    assert!(stderr.contains("committed up to the STATE at line"), "{stderr}");
    let runs = d.pipe(
        &[
            ("ferry-export", &[&src]),
            ("ferry-import", &[&d.db("copy.db"), "--create"]),
        ],
        b"",
    );
    all_ok(&runs);
    d.run("ferry-validate", &[&src, &d.db("copy.db")], b"").ok();
}

#[test]
fn every_stage_ends_with_a_summary_line_and_json_with_log_format_json() {
    let d = Dir::new();
    let src = d.sample();
    let runs = d.pipe(
        &[
            ("ferry-export", &[&src]),
            ("ferry-transform", &["--rename-stream", "main.users=people"]),
            ("ferry-import", &[&d.db("copy.db"), "--create"]),
        ],
        b"",
    );
    all_ok(&runs);
    runs[0].stderr_has("ferry-export: done: 7 streams, ");
    runs[1].stderr_has("ferry-transform: done: ");
    runs[2]
        .stderr_has("ferry-import: done: 7 streams, ")
        .stderr_has(" rows read, ")
        .stderr_has(" 0 rejected in ");
    let runs = d.pipe(
        &[
            ("ferry-export", &[&src, "--log-format", "json"]),
            ("ferry-import", &[&d.db("copy2.db"), "--create", "--log-format", "json"]),
        ],
        b"",
    );
    all_ok(&runs);
    for (r, program) in runs.iter().zip(["ferry-export", "ferry-import"]) {
        let last: Value = serde_json::from_str(r.stderr().lines().last().unwrap()).unwrap();
        let f = &last["fields"];
        assert_eq!(
            (&f["message"], &f["program"], &f["exit"]),
            (&json!("summary"), &json!(program), &json!(0)),
            "{r:?}"
        );
        assert_eq!(f["streams"], 7, "{r:?}");
        assert!(f["seconds"].as_f64().is_some(), "{r:?}");
    }
    let f = &serde_json::from_str::<Value>(runs[1].stderr().lines().last().unwrap()).unwrap()["fields"];
    let read = f["rows_read"].as_u64().unwrap();
    assert!(
        read > 0 && f["written"].as_u64().unwrap() == read && f["rejected"] == 0,
        "{f}"
    );
    // Validation ends with its verdict.
    d.run("ferry-validate", &[&src, &d.db("copy2.db")], b"")
        .ok()
        .stderr_has("ferry-validate: done: EQUAL: 7 streams");
}

#[test]
fn every_binary_has_help_with_examples_and_a_version() {
    let d = Dir::new();
    for b in [
        "ferry-export",
        "ferry-transform",
        "ferry-import",
        "ferry-validate",
        "ferry",
    ] {
        let h = d.run(b, &["--help"], b"");
        h.ok();
        assert!(h.stdout().contains("Examples:"), "{h:?}");
        d.run(b, &["--version"], b"").ok();
    }
    let bad = d.run("ferry-import", &["sqlite:x.db", "--on-conflict", "sometimes"], b"");
    bad.expect_code(2);
}

#[test]
fn completions_and_man_pages_come_from_the_command_lines() {
    let d = Dir::new();
    let programs = [
        "ferry",
        "ferry-export",
        "ferry-transform",
        "ferry-import",
        "ferry-validate",
    ];
    // bash: one script for every program, which completes their flags.
    let c = d.run("ferry", &["completions", "bash"], b"");
    c.ok();
    std::fs::write(d.path("ferry.bash"), c.output.stdout.clone()).unwrap();
    let probe = r#"source ferry.bash
        for p in ferry ferry-export ferry-transform ferry-import ferry-validate; do complete -p $p; done
        COMP_WORDS=(ferry-import --on-con); COMP_CWORD=1; COMP_LINE='ferry-import --on-con'; COMP_POINT=${#COMP_LINE}
        $(complete -p ferry-import | sed 's/.* -F \([^ ]*\) .*/\1/') ferry-import --on-con ferry-import
        printf 'offered %s\n' "${COMPREPLY[@]}""#;
    let out = std::process::Command::new("bash")
        .args(["-c", probe])
        .current_dir(d.root())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text} {}", String::from_utf8_lossy(&out.stderr));
    for p in programs {
        assert!(text.contains(&format!(" {p}\n")), "no completion for {p}: {text}");
    }
    assert!(text.contains("offered --on-conflict"), "{text}");
    // zsh: one file per program, so a directory is required.
    d.run("ferry", &["completions", "zsh"], b"")
        .expect_code(2)
        .stderr_has("--dir");
    d.run("ferry", &["completions", "zsh", "--dir", "zsh"], b"").ok();
    for p in programs {
        assert!(d.path(&format!("zsh/_{p}")).exists(), "_{p}");
    }
    // Man pages: one per program and per `ferry` subcommand, with their flags.
    d.run("ferry", &["man", "man"], b"").ok();
    let page = std::fs::read_to_string(d.path("man/ferry-import.1")).unwrap();
    assert!(page.starts_with(".ie") || page.contains(".TH ferry-import 1"), "{page}");
    assert!(page.contains("on\\-conflict"), "{page}");
    for p in [
        "ferry.1",
        "ferry-status.1",
        "ferry-rollback.1",
        "ferry-export.1",
        "ferry-validate.1",
    ] {
        assert!(d.path(&format!("man/{p}")).exists(), "{p}");
    }
}

#[test]
fn a_log_file_records_each_stage_and_how_it_ended() {
    let d = Dir::new();
    let src = d.sample();
    let runs = d.pipe(
        &[
            ("ferry-export", &[&src, "--log-file", "run.log"]),
            ("ferry-import", &["sqlite:copy.db", "--create", "--log-file", "run.log"]),
        ],
        b"",
    );
    all_ok(&runs);
    let failed = d.run("ferry-import", &["sqlite:nowhere/x.db", "--log-file", "run.log"], b"");
    failed.expect_code(2);
    let log = std::fs::read_to_string(d.path("run.log")).unwrap();
    assert!(log.contains("created table"), "the import's log lines: {log}");
    assert!(log.contains(r#"finished program="ferry-export" exit=0"#), "{log}");
    assert!(log.contains(r#"finished program="ferry-import" exit=0"#), "{log}");
    assert!(
        log.contains("stopped program=\"ferry-import\" exit=2 error=sqlite:/") && log.contains("/nowhere/x.db"),
        "{log}"
    );
    assert!(!log.contains('\u{1b}'), "no colour codes in a file");
    // The error is said once on stderr, for people; the log line is for the file.
    assert_eq!(
        failed.stderr().matches("nowhere/x.db").count(),
        1,
        "{}",
        failed.stderr()
    );
    // As JSON, one object per line.
    let r = d.run(
        "ferry-export",
        &[&src, "--log-file", "json.log", "--log-format", "json"],
        b"",
    );
    r.ok();
    let lines = std::fs::read_to_string(d.path("json.log")).unwrap();
    let last: serde_json::Value = serde_json::from_str(lines.lines().last().unwrap()).unwrap();
    assert_eq!(last["fields"]["message"], "finished", "{last}");
}

#[test]
fn ctrl_c_stops_an_import_at_the_next_line_says_how_to_continue_and_status_agrees() {
    let d = Dir::new();
    d.items_db(40_000);
    let stream = d.run("ferry-export", &["sqlite:big.db", "--state-every", "1000"], b"");
    let text = stream.ok().stdout();
    // Half the stream, then a producer that goes quiet without ending (a stalled upstream).
    let (import, input) = import_half_way(&d, &text, "sqlite:copy.db", 10_000);
    let kill = std::process::Command::new("kill")
        .args(["-INT", &import.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = import.wait_with_output().unwrap();
    drop(input);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("ferry-import: interrupted: "), "{stderr}");
    assert!(stderr.contains("run the same pipeline again"), "{stderr}");
    // What it says it wrote is what the target holds: the open transaction was rolled back.
    let held = common::count(&d.open("copy.db"), "items");
    assert!(
        stderr.contains(&format!(" rows read, {held} written, ")),
        "{held} rows held: {stderr}"
    );
    // The state file says so; no "running" with a time left.
    let st = d.run("ferry", &["status", "--json"], b"");
    let run = st.lines().into_iter().find(|l| l["type"] == "RUN").unwrap();
    assert_eq!(run["run"]["status"], "interrupted", "{run}");
    assert!(run["seconds_left"].is_null(), "{run}");
    // And the same command finishes the job, exactly.
    d.run("ferry-import", &["sqlite:copy.db", "--create"], text.as_bytes())
        .ok();
    d.run("ferry-validate", &["sqlite:big.db", "sqlite:copy.db"], b"").ok();
}

/// An import of half of `stream` into `target` that then waits for more input (a slow
/// producer), once it has recorded `rows` rows as written; its stdin, to finish or drop.
fn import_half_way(d: &Dir, stream: &str, target: &str, rows: u64) -> (std::process::Child, std::process::ChildStdin) {
    use std::io::Write as _;
    let lines: Vec<&str> = stream.lines().collect();
    let half = lines.iter().position(|l| l.contains(r#""id":20000,"#)).unwrap();
    let mut import = d
        .cmd("ferry-import", &[target, "--create"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = import.stdin.take().unwrap();
    input.write_all((lines[..half].join("\n") + "\n").as_bytes()).unwrap();
    input.flush().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while d.run("ferry", &["status", "--json"], b"").lines().iter().all(|l| {
        // Recorded by its absolute path.
        let ours = l["run"]["target"]
            .as_str()
            .is_some_and(|t| t.ends_with(&target.replace("sqlite:", "/")));
        l["type"] != "RUN" || !ours || l["run"]["rows_written"].as_u64().unwrap_or(0) < rows
    }) {
        assert!(std::time::Instant::now() < deadline, "no progress recorded");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    (import, input)
}

#[test]
fn a_second_import_or_a_rollback_of_a_target_being_written_stops_and_names_who_writes_it() {
    let d = Dir::new();
    d.items_db(40_000);
    // An earlier run into the same database, done.
    let sample = d.run("ferry-export", &[&d.sample()], b"").stdout();
    d.run("ferry-import", &["sqlite:copy.db", "--create"], sample.as_bytes())
        .ok();
    let text = d
        .run("ferry-export", &["sqlite:big.db", "--state-every", "1000"], b"")
        .stdout();
    let (import, input) = import_half_way(&d, &text, "sqlite:copy.db", 10_000);
    let me = format!("ferry-import (pid {} on ", import.id());
    // A second import into the same database: refused at once, naming the one at work.
    d.run("ferry-import", &["sqlite:copy.db", "--create"], sample.as_bytes())
        .expect_code(2)
        .stderr_has("another ferry process is writing sqlite:/")
        .stderr_has("/copy.db: ")
        .stderr_has(&me);
    // Undoing the running import, or every import, while it writes: refused, nothing dropped.
    for how in ["--last", "--full"] {
        d.run("ferry", &["rollback", how, "--confirm"], b"")
            .expect_code(2)
            .stderr_has(&me);
    }
    let items = count(&d.open("copy.db"), "items");
    assert!(items >= 10_000, "{items}");
    assert_eq!(count(&d.open("copy.db"), "users"), count(&d.open("sample.db"), "users"));
    // Once it has stopped, the next one goes ahead and finishes the job.
    drop(input);
    let out = import.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    d.run("ferry-import", &["sqlite:copy.db", "--create"], text.as_bytes())
        .ok();
    d.run(
        "ferry-validate",
        &["sqlite:big.db", "sqlite:copy.db", "--table", "items"],
        b"",
    )
    .ok();
}

#[test]
fn a_killed_import_shows_as_stopped_in_status_not_running_with_time_left() {
    let d = Dir::new();
    d.items_db(40_000);
    let text = d
        .run("ferry-export", &["sqlite:big.db", "--state-every", "1000"], b"")
        .stdout();
    let (mut import, input) = import_half_way(&d, &text, "sqlite:copy.db", 10_000);
    import.kill().unwrap();
    import.wait().unwrap();
    drop(input);
    let st = d.run("ferry", &["status", "--json"], b"");
    let run = st.lines().into_iter().find(|l| l["type"] == "RUN").unwrap();
    assert_eq!(run["run"]["status"], "stopped", "{run}");
    assert!(run["seconds_left"].is_null(), "{run}");
    assert!(
        run["run"]["message"]
            .as_str()
            .unwrap()
            .contains("run the same command again"),
        "{run}"
    );
    // The kill released its lock with it: the same command finishes the job.
    d.run("ferry-import", &["sqlite:copy.db", "--create"], text.as_bytes())
        .ok();
    d.run("ferry-validate", &["sqlite:big.db", "sqlite:copy.db"], b"").ok();
}

#[test]
fn status_during_a_running_import_shows_its_pace_and_time_left_without_blocking_it() {
    use std::io::Write as _;
    let d = Dir::new();
    d.items_db(40_000);
    let stream = d.run("ferry-export", &["sqlite:big.db", "--state-every", "1000"], b"");
    stream.ok();
    let text = stream.stdout();
    let lines: Vec<&str> = text.lines().collect();
    // Everything up to the middle of the rows goes in now; the rest later.
    let half = lines.iter().position(|l| l.contains(r#""id":20000,"#)).unwrap();
    let mut import = d
        .cmd("ferry-import", &["sqlite:copy.db", "--create", "-q"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut input = import.stdin.take().unwrap();
    input.write_all((lines[..half].join("\n") + "\n").as_bytes()).unwrap();
    input.flush().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let run = loop {
        let st = d.run("ferry", &["status", "--json"], b"");
        if let Some(r) = st.lines().into_iter().find(|l| l["type"] == "RUN")
            && r["run"]["rows_written"].as_u64().unwrap_or(0) >= 10_000
        {
            break r;
        }
        assert!(std::time::Instant::now() < deadline, "no progress recorded");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(run["run"]["status"], "running", "{run}");
    assert_eq!(run["run"]["rows_expected"], 40_000, "{run}");
    assert!(run["rows_per_s"].as_f64().unwrap() > 0.0, "{run}");
    assert!(run["seconds_left"].as_f64().unwrap() > 0.0, "{run}");
    let table = d.run("ferry", &["status"], b"");
    table.ok();
    assert!(table.stdout().contains("running"), "{}", table.stdout());
    // The rest: the import was never blocked by the readings.
    input.write_all((lines[half..].join("\n") + "\n").as_bytes()).unwrap();
    drop(input);
    assert!(import.wait().unwrap().success());
    let done = d.run("ferry", &["status", "--json"], b"");
    let r = done.lines().into_iter().find(|l| l["type"] == "RUN").unwrap();
    assert_eq!(
        (r["run"]["status"].as_str(), r["run"]["rows_written"].as_u64()),
        (Some("complete"), Some(40_000))
    );
    assert!(r["seconds_left"].is_null(), "{r}");
}

#[test]
fn on_a_terminal_the_last_stage_draws_a_progress_bar_and_the_stages_feeding_it_stay_quiet() {
    let d = Dir::new();
    d.items_db(100_000);
    // `script` gives the pipeline a terminal, as a person at a shell has; the progress lines,
    // were they on, would come every millisecond.
    let line = format!(
        "{} sqlite:big.db | {} sqlite:copy.db --create > /dev/null",
        common::bin("ferry-export").display(),
        common::bin("ferry-import").display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .current_dir(d.root())
        .env("FERRY_PROGRESS_MS", "1")
        .env_remove("FERRY_LOG")
        .output()
        .expect("script (util-linux) runs a command on a terminal");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(screen.contains("importing ["), "the import draws a bar: {screen}");
    assert!(screen.contains("/100,000 rows ("), "{screen}");
    assert!(screen.contains(" left)"), "{screen}");
    assert!(
        !screen.contains("exporting"),
        "the export feeding a pipe says nothing periodic: {screen}"
    );
    assert!(screen.contains("import complete"), "{screen}");
    assert_eq!(common::count(&d.open("copy.db"), "items"), 100_000);
}

#[test]
fn the_demo_runs_end_to_end() {
    let d = Dir::new();
    let r = d.run("ferry", &["demo", "--dir", "demo"], b"");
    r.ok().stderr_has("result: EQUAL").stderr_has("proved equal");
    assert!(d.path("demo/report.json").exists());
    // The pipelines it shows run as shown when pasted: a saved stream goes to the first stage.
    let err = r.stderr();
    let shown = err
        .split("$ ferry-transform")
        .nth(1)
        .expect("the transform pipeline is shown");
    let (first, _) = shown.split_once("| ferry-import").expect("into ferry-import");
    assert!(first.contains(" < "), "the input goes to ferry-transform: {shown}");
    // Run again in the same directory: what the demo made is replaced, nothing else is touched.
    std::fs::write(d.path("demo/notes.txt"), "mine").unwrap();
    d.run("ferry", &["demo", "--dir", "demo"], b"").ok();
    assert_eq!(std::fs::read_to_string(d.path("demo/notes.txt")).unwrap(), "mine");
    // A directory it did not make, the current one included, is refused and left alone.
    std::fs::create_dir_all(d.path("mine")).unwrap();
    std::fs::write(d.path("mine/notes.txt"), "mine").unwrap();
    for dir in ["mine", "."] {
        d.run("ferry", &["demo", "--dir", dir], b"")
            .expect_code(2)
            .stderr_has("no ferry demo made it");
    }
    assert_eq!(std::fs::read_to_string(d.path("mine/notes.txt")).unwrap(), "mine");
    assert!(d.path("demo/report.json").exists());
}

#[test]
fn export_selects_tables_and_rows() {
    let d = Dir::new();
    let src = d.sample();
    let r = d.run(
        "ferry-export",
        &[&src, "--table", "users", "--where", "users=is_active = 0"],
        b"",
    );
    r.ok();
    let lines = r.lines();
    let streams: std::collections::BTreeSet<&str> = lines
        .iter()
        .filter(|l| l["type"] == "SCHEMA")
        .map(|l| l["stream"].as_str().unwrap())
        .collect();
    assert_eq!(streams.into_iter().collect::<Vec<_>>(), ["main.users"]);
    let records = lines.iter().filter(|l| l["type"] == "RECORD").count();
    assert_eq!(records, 14);
    assert!(
        lines
            .iter()
            .filter(|l| l["type"] == "RECORD")
            .all(|l| l["record"]["is_active"] == 0)
    );

    let r = d.run(
        "ferry-export",
        &[&src, "--exclude", "audit_log", "--exclude", "main.app_settings"],
        b"",
    );
    r.ok();
    assert_eq!(r.lines().iter().filter(|l| l["type"] == "SCHEMA").count(), 5);

    d.run("ferry-export", &[&src, "--table", "nosuch"], b"")
        .expect_code(2)
        .stderr_has("no table named nosuch");
    d.run("ferry-export", &["sqlite:missing.db"], b"")
        .expect_code(2)
        .stderr_has("no such database file");
    d.run("ferry-export", &[&src, "--where", "users=no_such_column = 1"], b"")
        .expect_code(2)
        .stderr_has("no such column");
}

#[test]
fn streams_come_parents_first() {
    let d = Dir::new();
    let src = d.sample();
    let r = d.run("ferry-export", &[&src], b"");
    let order: Vec<String> = r
        .lines()
        .iter()
        .filter(|l| l["type"] == "SCHEMA")
        .map(|l| l["stream"].as_str().unwrap().to_owned())
        .collect();
    let pos = |s: &str| order.iter().position(|o| o == s).unwrap();
    assert!(pos("main.users") < pos("main.saved_files"));
    assert!(pos("main.users") < pos("main.notifications"));
    assert!(pos("main.saved_files") < pos("main.file_tags"));
    assert!(pos("main.tags") < pos("main.file_tags"));
}

#[test]
fn a_closed_downstream_pipe_stops_export_with_one_line_and_exit_4() {
    let d = Dir::new();
    // Some 2 MB of stream, far beyond what a pipe buffers: the export must meet the closed end.
    d.items_db(50_000);
    let runs = d.pipe(
        &[
            ("ferry-export", &[&d.db("big.db"), "-q"]),
            ("ferry-validate", &["--help"]),
        ],
        b"",
    );
    // Not everything was exported: not a success, but no error either, just how it ended.
    runs[0]
        .expect_code(4)
        .stderr_has("ferry-export: stopped early: the reader of its output went away");
    assert!(!runs[0].stderr().contains("error"), "{:?}", runs[0]);
    assert_eq!(runs[0].stderr().lines().count(), 1, "{:?}", runs[0]);

    // An import that stops at a key already there: the export's closing line points at the
    // import's message, and at --resume only once that is put right.
    d.open("copy.db")
        .execute_batch(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO items VALUES (40000, 'taken');",
        )
        .unwrap();
    let runs = d.pipe(
        &[
            ("ferry-export", &[&d.db("big.db"), "--state-every", "1000"]),
            ("ferry-import", &[&d.db("copy.db")]),
        ],
        b"",
    );
    runs[1].expect_code(2).stderr_has("is already in table");
    runs[0]
        .expect_code(4)
        .stderr_has("before the reader stopped (the import's message says why): once that is put right, `--resume`");
}

#[test]
fn flags_that_cannot_work_are_refused_naming_the_flag_and_a_missing_directory_is_named() {
    let d = Dir::new();
    let src = d.sample();
    for (args, says) in [
        (vec!["--state-every", "0"], "--state-every must be at least 1"),
        (
            vec!["--state-interval", "0"],
            "--state-interval must be a positive number of seconds",
        ),
        (
            vec!["--state-interval", "NaN"],
            "--state-interval must be a positive number of seconds",
        ),
    ] {
        let mut all = vec![src.as_str()];
        all.extend(args);
        d.run("ferry-export", &all, b"").expect_code(2).stderr_has(says);
    }
    let tree = format!("dir:{}", d.path("tree").display());
    std::fs::create_dir_all(d.path("tree")).unwrap();
    d.run("ferry-export", &[&tree, "--since", "last tuesday"], b"")
        .expect_code(2)
        .stderr_has("--since \"last tuesday\": not an RFC 3339 time, and there is no state file");
    // A flag no program has, or a value of the wrong kind: clap's message, then the closing line.
    for (program, args) in [
        ("ferry-export", vec![src.as_str(), "--bogus"]),
        ("ferry-export", vec![src.as_str(), "--state-every", "abc"]),
        ("ferry-import", vec!["sqlite:copy.db", "--max-rejects", "-1"]),
        ("ferry-transform", vec!["--rename-stream"]),
        ("ferry-validate", vec![]),
        ("ferry", vec!["rollback", "--bogus"]),
    ] {
        let r = d.run(program, &args, b"");
        r.expect_code(2);
        let last = r.stderr().lines().last().unwrap_or_default().to_owned();
        assert!(
            last.starts_with(&format!("{program}: failed"))
                && last.ends_with("the command line was not understood (above): nothing was done"),
            "{r:?}"
        );
    }
    for program in [
        "ferry-export",
        "ferry-import",
        "ferry-transform",
        "ferry-validate",
        "ferry",
    ] {
        d.run(program, &["--version"], b"").ok();
        // Every tuning variable is listed at the end of --help.
        let help = d.run(program, &["--help"], b"");
        help.ok();
        for v in [
            "FERRY_RETRIES=",
            "FERRY_TIMEOUT=",
            "FERRY_PROGRESS_MS=",
            "FERRY_D1_RATE=",
        ] {
            assert!(help.stdout().contains(v), "{program} --help lists {v}");
        }
    }
    // A tuning variable a program cannot read stops it before it does anything, naming it.
    for (name, value) in [
        ("FERRY_RETRIES", "six"),
        ("FERRY_TIMEOUT", "soon"),
        ("FERRY_D1_RATE", "fast"),
    ] {
        let mut c = d.cmd("ferry-export", &[&src]);
        c.env(name, value);
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}={value}");
        assert!(out.stdout.is_empty(), "nothing was exported");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("{name}={value:?}: write ")), "{err}");
        assert!(
            err.trim_end()
                .ends_with("the environment was not understood (above): nothing was done"),
            "{err}"
        );
    }
    let stream = d
        .run("ferry-export", &[&src, "--table", "tags"], b"")
        .output
        .stdout
        .clone();
    let nowhere = format!("sqlite:{}", d.path("no/such/dir/copy.db").display());
    d.run("ferry-import", &[&nowhere, "--create"], &stream)
        .expect_code(2)
        .stderr_has(&format!("directory {} does not exist", d.path("no/such/dir").display()));
}

#[test]
fn an_import_that_commits_nothing_leaves_no_database_it_made_and_keeps_one_that_was_there() {
    let d = Dir::new();
    d.run("ferry-import", &[&d.db("new.db"), "--create"], b"")
        .expect_code(4);
    assert!(!d.path("new.db").exists(), "an empty input leaves no database behind");
    d.run("ferry-import", &[&d.db("new.db"), "--create"], b"{not json\n")
        .expect_code(2);
    assert!(
        !d.path("new.db").exists(),
        "nor does a stream refused at its first line"
    );
    // A database that was there stays, whatever the import did not do.
    d.open("old.db")
        .execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        .unwrap();
    d.run("ferry-import", &[&d.db("old.db"), "--create"], b"")
        .expect_code(4);
    assert!(d.path("old.db").exists());
    // One that commits keeps it.
    let stream = d
        .run("ferry-export", &[&d.sample(), "--table", "tags"], b"")
        .output
        .stdout
        .clone();
    d.run("ferry-import", &[&d.db("new.db"), "--create"], &stream).ok();
    assert!(d.path("new.db").exists());
}

#[test]
fn the_committed_sample_database_is_what_the_script_builds() {
    let d = Dir::new();
    let fresh = d.sample();
    let committed = format!("sqlite:{}/testdata/sample.db", env!("CARGO_MANIFEST_DIR"));
    d.run("ferry-validate", &[&committed, &fresh], b"").ok();
    let schema = |path: &str| -> Vec<String> {
        column(
            &rusqlite::Connection::open(path).unwrap(),
            "SELECT coalesce(sql, name) FROM sqlite_schema ORDER BY name",
        )
    };
    assert_eq!(
        schema(&format!("{}/testdata/sample.db", env!("CARGO_MANIFEST_DIR"))),
        schema(&d.path("sample.db").display().to_string()),
        "rebuild it with: cargo run --example gen-db -- --sample testdata/sample.db"
    );
}

#[test]
fn import_needs_create_for_missing_tables_and_names_missing_columns() {
    let d = Dir::new();
    let stream = d
        .run("ferry-export", &[&d.sample(), "--table", "tags"], b"")
        .output
        .stdout
        .clone();
    let r = d.run("ferry-import", &[&d.db("copy.db")], &stream);
    r.expect_code(2)
        .stderr_has("there is no table tags for stream main.tags; pass --create");
    d.open("copy.db")
        .execute_batch("CREATE TABLE tags (name TEXT PRIMARY KEY)")
        .unwrap();
    let r = d.run("ferry-import", &[&d.db("copy.db")], &stream);
    r.expect_code(2)
        .stderr_has("table tags (stream main.tags) has no column color");
    // --create adds what is missing.
    d.run("ferry-import", &[&d.db("copy.db"), "--create"], &stream).ok();
    assert_eq!(count(&d.open("copy.db"), "tags"), 5);
}

#[test]
fn a_singer_stream_without_begin_or_end_is_accepted() {
    let d = Dir::new();
    let stream = [
        r#"{"type":"schema","stream":"users","schema":{"properties":{"id":{"type":"integer"},"balance":{"type":["string","null"],"format":"singer.decimal"},"photo":{"type":["string","null"],"contentEncoding":"base16"}}},"key_properties":["id"]}"#,
        r#"{"type":"record","stream":"users","record":{"id":1,"balance":"1234.50","photo":"00ff"}}"#,
        r#"{"type":"record","stream":"users","record":{"id":2,"balance":null,"photo":null}}"#,
        r#"{"type":"state","value":{"bookmarks":{"users":{"replication_key_value":2}}}}"#,
    ]
    .join("\n");
    let r = d.run("ferry-import", &[&d.db("s.db"), "--create"], stream.as_bytes());
    r.ok().stderr_has("reading it as a Singer stream");
    let c = d.open("s.db");
    let (balance, photo): (String, Vec<u8>) = c
        .query_row("SELECT balance, photo FROM users WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((balance.as_str(), photo), ("1234.50", vec![0x00, 0xff]));
    assert!(
        r.stdout().contains("replication_key_value"),
        "the STATE is echoed: {r:?}"
    );
}

#[test]
fn a_row_with_a_null_key_is_rejected_with_its_line_never_given_an_invented_key() {
    let d = Dir::new();
    let schema = r#"{"type":"SCHEMA","stream":"main.t","schema":{"type":"object","properties":{"id":{"type":["integer","null"]},"name":{"type":["string","null"]}}},"key_properties":["id"]}"#;
    let stream = [
        r#"{"type":"BEGIN","protocol":"ferry/1","run_id":"nullkey"}"#,
        schema,
        r#"{"type":"RECORD","stream":"main.t","record":{"id":1,"name":"a"}}"#,
        r#"{"type":"RECORD","stream":"main.t","record":{"id":null,"name":"no key"}}"#,
        r#"{"type":"RECORD","stream":"main.t","record":{"id":3,"name":"c"}}"#,
        r#"{"type":"STREAM_END","stream":"main.t","status":"complete","rows":3}"#,
        r#"{"type":"END","run_id":"nullkey","status":"ok"}"#,
    ]
    .join("\n");
    // Into an INTEGER PRIMARY KEY, SQLite would make up a rowid for it.
    let r = d.run("ferry-import", &[&d.db("t.db"), "--create"], stream.as_bytes());
    assert_ne!(r.code(), Some(2), "{r:?}");
    let rows: Vec<String> = column(&d.open("t.db"), "SELECT id || ':' || name FROM t ORDER BY id");
    assert_eq!(rows, ["1:a", "3:c"]);
    let rejects = d.reject_text();
    assert!(
        rejects.contains(r#""line":4"#) && rejects.contains("holds a NULL"),
        "{rejects}"
    );
    // A dry run counts it as a reject too.
    let r = d.run(
        "ferry-import",
        &[&d.db("dry.db"), "--create", "--dry-run"],
        stream.as_bytes(),
    );
    let load = r.lines().into_iter().find(|l| l["action"] == "load").unwrap();
    assert_eq!((&load["insert"], &load["reject"]), (&json!(2), &json!(1)), "{r:?}");
}

#[test]
fn huge_rows_are_written_in_batches_bounded_by_bytes() {
    let d = Dir::new();
    let c = d.open("big.db");
    c.execute_batch(
        "CREATE TABLE blobs (id INTEGER PRIMARY KEY, b BLOB);
         WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 40)
         INSERT INTO blobs SELECT i, zeroblob(2000000) FROM s;",
    )
    .unwrap();
    drop(c);
    let runs = d.pipe(
        &[
            ("ferry-export", &[&d.db("big.db"), "-q"]),
            (
                "ferry-import",
                &[&d.db("copy.db"), "--create", "-v", "--log-format", "json"],
            ),
        ],
        b"",
    );
    all_ok(&runs);
    // Each RECORD line is some 2.7 MB (base64): the 8 MiB bound, not the 5,000 rows one, cuts
    // the batches, each at the line that reaches it.
    let line = 2_666_700;
    let batches: Vec<(u64, u64)> = runs[1]
        .stderr()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["fields"]["message"] == "writing a batch")
        .map(|l| {
            (
                l["fields"]["rows"].as_u64().unwrap(),
                l["fields"]["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(batches.iter().map(|b| b.0).sum::<u64>(), 40, "{batches:?}");
    assert!(batches.len() >= 10, "{batches:?}");
    for (rows, bytes) in &batches {
        assert!(
            *rows <= 4 && *bytes < (8 << 20) + line,
            "a batch over the bound: {batches:?}"
        );
    }
    d.run("ferry-validate", &[&d.db("big.db"), &d.db("copy.db")], b"").ok();
}

#[test]
fn foreign_key_cycles_are_reported_and_still_load() {
    let d = Dir::new();
    d.open("cyc.db")
        .execute_batch(
            "PRAGMA foreign_keys = OFF;
             CREATE TABLE teams (id INTEGER PRIMARY KEY, captain_id INTEGER REFERENCES players (id));
             CREATE TABLE players (id INTEGER PRIMARY KEY, team_id INTEGER REFERENCES teams (id));
             INSERT INTO teams VALUES (1, 10), (2, 20);
             INSERT INTO players VALUES (10, 1), (20, 2), (30, 1);",
        )
        .unwrap();
    let runs = d.pipe(
        &[
            ("ferry-export", &[&d.db("cyc.db")]),
            ("ferry-import", &[&d.db("copy.db"), "--create"]),
        ],
        b"",
    );
    all_ok(&runs);
    runs[0].stderr_has("foreign keys form a cycle");
    d.run("ferry-validate", &[&d.db("cyc.db"), &d.db("copy.db")], b"").ok();
}

#[test]
fn on_a_terminal_a_table_import_prints_no_acknowledgements_only_its_closing_line() {
    let d = Dir::new();
    let stream = d.run("ferry-export", &[&d.sample(), "--table", "tags"], b"");
    std::fs::write(d.path("tags.ndjson"), &stream.ok().output.stdout).unwrap();
    // `script` (util-linux) runs the import with a terminal for its stdout and stderr.
    let on_terminal = |target: &str| {
        let cmd = format!(
            "{} {target} --create -i tags.ndjson",
            common::bin("ferry-import").display()
        );
        let out = std::process::Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .current_dir(d.root())
            .output()
            .expect("script, from util-linux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shown = on_terminal(&d.db("copy.db"));
    assert!(
        shown.contains("ferry-import: done: 1 streams, 5 rows read, 5 written"),
        "{shown}"
    );
    assert!(!shown.contains("\"type\":\"STATE\""), "{shown}");
    assert_eq!(common::count(&d.open("copy.db"), "tags"), 5);
    // Into a pipe, the same import acknowledges every STATE.
    let piped = d.run(
        "ferry-import",
        &[&d.db("again.db"), "--create", "-i", "tags.ndjson"],
        b"",
    );
    assert!(piped.ok().stdout().contains("\"type\":\"STATE\""));
}

#[test]
fn a_sqlite_target_takes_its_settings_from_ferry_sqlite_pragmas_and_says_what_it_did_not_take() {
    let d = Dir::new();
    let src = d.sample();
    let stream = d.run("ferry-export", &[&src], b"").output.stdout.clone();
    let pragma = |db: &str, name: &str| -> String {
        let conn = rusqlite::Connection::open(d.path(db)).unwrap();
        conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, rusqlite::types::Value>(0))
            .map(|v| match v {
                rusqlite::types::Value::Integer(i) => i.to_string(),
                rusqlite::types::Value::Text(t) => t,
                other => format!("{other:?}"),
            })
            .unwrap()
    };
    // By default: WAL, on SQLite's default page size.
    d.run("ferry-import", &[&d.db("plain.db"), "--create"], &stream).ok();
    assert_eq!(pragma("plain.db", "journal_mode"), "wal");
    assert_eq!(pragma("plain.db", "page_size"), "4096");

    d.set_env(
        "FERRY_SQLITE_PRAGMAS",
        "journal_mode=DELETE; page_size=16384; synchronous=FULL",
    );
    let r = d.run("ferry-import", &[&d.db("set.db"), "--create"], &stream);
    r.ok();
    assert!(!r.stderr().contains("WARN"), "{r:?}");
    assert_eq!(pragma("set.db", "journal_mode"), "delete");
    assert_eq!(pragma("set.db", "page_size"), "16384");
    d.run("ferry-validate", &[&src, &d.db("set.db")], b"").ok();

    // A page size for a database that exists already is not taken, and that is said.
    d.set_env("FERRY_SQLITE_PRAGMAS", "page_size=65536");
    d.run("ferry-import", &[&d.db("plain.db"), "--create"], &stream)
        .ok()
        .stderr_has("page_size applies to a new database only");
    assert_eq!(pragma("plain.db", "page_size"), "4096");

    // synchronous=OFF is allowed, with what it risks.
    d.set_env("FERRY_SQLITE_PRAGMAS", "synchronous=off");
    d.run("ferry-import", &[&d.db("fast.db"), "--create"], &stream)
        .ok()
        .stderr_has("synchronous=OFF: a power cut or an operating system crash during the import can corrupt");

    // A journal that would not keep a commit whole through a kill is refused before anything.
    d.set_env("FERRY_SQLITE_PRAGMAS", "journal_mode=OFF");
    d.run("ferry-import", &[&d.db("none.db"), "--create"], &stream)
        .expect_code(2)
        .stderr_has(
            "FERRY_SQLITE_PRAGMAS=\"journal_mode=OFF\": write journal_mode is one of WAL, DELETE, TRUNCATE, PERSIST",
        );
    assert!(!d.path("none.db").exists());
}

#[test]
fn an_import_writes_its_runs_as_prometheus_metrics_when_asked_however_it_ends() {
    let d = Dir::new();
    let src = d.sample();
    let stream = d.run("ferry-export", &[&src], b"").output.stdout.clone();
    let prom = d.path("ferry.prom");
    let prom_arg = prom.display().to_string();
    d.run(
        "ferry-import",
        &[&d.db("copy.db"), "--create", "--metrics-file", &prom_arg],
        &stream,
    )
    .ok();
    let text = std::fs::read_to_string(&prom).unwrap();
    let target = format!("sqlite:{}", d.path("copy.db").display());
    assert!(
        text.contains(&format!(
            "ferry_rows{{stage=\"import\",target=\"{target}\",outcome=\"written\"}} 680"
        )),
        "{text}"
    );
    assert!(
        text.contains("ferry_runs{stage=\"import\",status=\"complete\"} 1"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    // A failed import is counted as failed, and the file replaced whole.
    let cut = &stream[..stream.len() / 2];
    d.run(
        "ferry-import",
        &[&d.db("other.db"), "--create", "--metrics-file", &prom_arg],
        cut,
    )
    .expect_code(4);
    let text = std::fs::read_to_string(&prom).unwrap();
    assert!(
        text.contains("ferry_runs{stage=\"import\",status=\"failed\"} 1"),
        "{text}"
    );
    assert!(!d.path("ferry.prom.tmp").exists());
    // A file that cannot be written is an error (exit 2), named: nothing said was not done.
    d.run(
        "ferry-import",
        &[&d.db("copy.db"), "--metrics-file", "no/such/dir/ferry.prom"],
        &stream,
    )
    .expect_code(2)
    .stderr_has("writing the metrics file no/such/dir/ferry.prom");
}
