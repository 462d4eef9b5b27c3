//! `ferry assess`: a database or a directory looked at before a migration, on real stores.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use crate::common;
use serde_json::Value as Json;

use crate::common::{Dir, pg, write_file};

fn assess(d: &Dir, args: &[&str]) -> Json {
    let mut a = vec!["assess"];
    a.extend_from_slice(args);
    a.push("--json");
    let r = d.run("ferry", &a, b"");
    r.ok();
    serde_json::from_str(&r.stdout()).unwrap()
}

fn table<'a>(report: &'a Json, stream: &str) -> &'a Json {
    report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["stream"] == stream)
        .unwrap_or_else(|| panic!("no {stream} in {report}"))
}

/// The problems of a table whose description contains `what`.
fn problem<'a>(t: &'a Json, what: &str) -> Option<&'a Json> {
    t["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["what"].as_str().unwrap().contains(what))
}

#[test]
fn a_sqlite_database_is_counted_and_what_postgresql_or_d1_would_refuse_is_named_by_key() {
    let d = Dir::new();
    let src = d.sample();
    // The sample, as is, for PostgreSQL: its NUL and non-UTF-8 names are refused by key.
    let r = assess(&d, &[&src, "--to", "postgres"]);
    let users = table(&r, "main.users");
    assert_eq!(users["rows"], 47);
    assert_eq!(users["key"], serde_json::json!(["id"]));
    // Each value is put through the import's own encoder for the column's type: the refusals
    // are the import's, with its reasons.
    let refused = problem(users, "column name (text): values the PostgreSQL import refuses").unwrap();
    assert_eq!(refused["severity"], "refused");
    assert_eq!(refused["count"], 2, "{refused}");
    let why = |i: usize| refused["examples"][i]["why"].as_str().unwrap().to_owned();
    assert_eq!(refused["examples"][0]["key"], serde_json::json!({"id": 41}));
    assert!(why(0).contains("NUL"), "{refused}");
    assert_eq!(refused["examples"][1]["key"], serde_json::json!({"id": 42}));
    assert!(why(1).contains("not valid UTF-8"), "{refused}");
    assert!(
        problem(users, "column balance holds values of several kinds").is_some(),
        "{users}"
    );
    let total: u64 = r["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["rows"].as_u64().unwrap())
        .sum();
    assert_eq!(r["rows"], total);
    assert_eq!(total, 680);
    let no_key = &r["problems"][0];
    assert!(no_key["what"].as_str().unwrap().contains("no primary key"), "{r}");
    assert_eq!(no_key["examples"], serde_json::json!(["main.audit_log"]));
    // For SQLite the same database has nothing refused.
    let r = assess(&d, &[&src]);
    for t in r["tables"].as_array().unwrap() {
        assert!(t["problems"].as_array().unwrap().is_empty(), "{t}");
    }

    // Values over D1's limits, and integers JavaScript rounds.
    d.open("big.db")
        .execute_batch(
            "CREATE TABLE docs (id INTEGER PRIMARY KEY, body TEXT, raw BLOB, n INTEGER);
             INSERT INTO docs VALUES (1, 'small', x'00', 1);
             INSERT INTO docs VALUES (2, printf('%.2100000c', 'x'), NULL, 2);
             INSERT INTO docs VALUES (3, 'ok', zeroblob(1200000), 3);
             INSERT INTO docs VALUES (4, 'ok', NULL, 9007199254740993);",
        )
        .unwrap();
    let r = assess(&d, &[&d.db("big.db"), "--to", "d1"]);
    let docs = table(&r, "main.docs");
    let over = problem(docs, "over D1's 2000000-byte limit").unwrap();
    assert_eq!(
        over["examples"][0],
        serde_json::json!({"key": {"id": 2}, "column": "body"})
    );
    let hex = problem(docs, "BLOB over about 1 MB").unwrap();
    assert_eq!(hex["examples"][0]["key"], serde_json::json!({"id": 3}));
    let js = problem(docs, "beyond 2^53").unwrap();
    assert_eq!(
        (js["severity"].as_str(), js["count"].as_u64()),
        (Some("warning"), Some(1))
    );
    assert_eq!(docs["columns"][1]["max_bytes"], 2_100_000);
    // The table for people says the same.
    let human = d.run("ferry", &["assess", &d.db("big.db"), "--to", "d1"], b"");
    human.ok();
    assert!(
        human.stdout().contains("refused: main.docs: a value over D1's"),
        "{}",
        human.stdout()
    );
    assert!(human.stdout().contains("estimated time:"), "{}", human.stdout());
}

#[test]
fn a_postgresql_database_is_assessed_through_the_same_reader_as_an_export() {
    let d = Dir::new();
    let url = pg::cluster().database("assess");
    pg::connect(&url)
        .batch_execute(
            "CREATE TABLE accounts (id bigint PRIMARY KEY, email text NOT NULL, balance numeric, fee numeric(8,2), cash money);
             INSERT INTO accounts SELECT i, 'user' || i || '@example.com', i * 1.5 FROM generate_series(1, 1200) i;
             CREATE TABLE events (at timestamptz, what text);
             INSERT INTO events SELECT now(), 'e' FROM generate_series(1, 30);",
        )
        .unwrap();
    let r = assess(&d, &[&url, "--to", "sqlite"]);
    assert_eq!(table(&r, "public.accounts")["rows"], 1200);
    assert_eq!(table(&r, "public.events")["rows"], 30);
    assert_eq!(r["rows"], 1230);
    assert!(r["problems"][0]["examples"][0] == "public.events", "{r}");
    assert!(!r.to_string().contains(pg::PASSWORD), "the address is redacted");
    // An unbounded numeric cannot be both exact and a number in SQLite; numeric(8,2) can.
    let accounts = table(&r, "public.accounts");
    let warned = problem(
        accounts,
        "column balance (numeric) can hold more than the 15 significant digits",
    )
    .unwrap();
    assert_eq!(warned["severity"], "warning");
    assert!(problem(accounts, "column fee").is_none(), "{accounts}");
    assert!(
        problem(accounts, "column cash (money) can hold more than").is_some(),
        "{accounts}"
    );
}

#[test]
fn a_directory_is_counted_by_size_and_type_with_duplicates_and_names_s3_cannot_take() {
    use std::os::unix::ffi::OsStrExt as _;
    let d = Dir::new();
    let root = d.path("media");
    write_file(&root, "a/photo.jpg", &vec![1u8; 100_000]);
    write_file(&root, "b/copy-of-photo.jpg", &vec![1u8; 100_000]);
    write_file(&root, "c/again.jpg", &vec![1u8; 100_000]);
    write_file(&root, "d/same-size-other-bytes.jpg", &vec![2u8; 100_000]);
    write_file(&root, "notes.txt", b"hello");
    write_file(&root, "empty", b"");
    write_file(&root, "Report.pdf", b"%PDF-1.4 a");
    write_file(&root, "report.pdf", b"%PDF-1.4 b");
    write_file(&root, "tab\there", b"x");
    std::fs::write(root.join(std::ffi::OsStr::from_bytes(b"bad-\xff.bin")), b"bytes").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
    let addr = format!("dir:{}", root.display());
    let r = assess(&d, &[&addr]);
    assert_eq!(r["to"], "s3", "object storage is the default for a directory");
    assert_eq!(r["files"], 10);
    assert_eq!(r["bytes"], 400_000 + 5 + 10 + 10 + 1 + 5);
    assert_eq!(r["largest"], 100_000);
    let dups = &r["duplicates"];
    assert_eq!(
        (dups["groups"].as_u64(), dups["extra_files"].as_u64()),
        (Some(1), Some(2)),
        "{dups}"
    );
    assert_eq!(dups["extra_bytes"], 200_000);
    let sizes = r["sizes"].as_array().unwrap();
    assert!(
        sizes.contains(&serde_json::json!({"size": "empty", "files": 1})),
        "{sizes:?}"
    );
    assert!(
        sizes.contains(&serde_json::json!({"size": "up to 1 MiB", "files": 4})),
        "{sizes:?}"
    );
    assert_eq!(r["types"][0]["type"], "image/jpeg");
    let text = r["problems"].to_string();
    for what in [
        "not UTF-8",
        "control characters",
        "differ only in letter case",
        "left out by the walk",
    ] {
        assert!(text.contains(what), "{what}: {text}");
    }

    // After an upload into a directory, the estimate comes from that run's measured rate.
    for i in 0..1500 {
        write_file(&d.path("many"), format!("f{i}"), b"x");
    }
    let many = format!("dir:{}", d.path("many").display());
    let out = format!("dir:{}", d.path("out").display());
    common::all_ok(&d.pipe(&[("ferry-export", &[&many]), ("ferry-import", &[&out])], b""));
    let r = assess(&d, &[&many, "--to", "dir"]);
    assert!(
        r["estimate"]["basis"].as_str().unwrap().starts_with("the rate of run"),
        "{r}"
    );
    // A run into a directory says nothing about how fast object storage will be.
    let r = assess(&d, &[&many, "--to", "s3"]);
    assert!(
        r["estimate"]["basis"].as_str().unwrap().starts_with("the benchmark"),
        "{r}"
    );
}

#[test]
fn a_d1_database_is_assessed_through_its_api() {
    let d = Dir::new();
    let _dbl = common::d1::double(&d, 60.0, 1200);
    let src = d.sample();
    let load = d.pipe(
        &[
            (
                "ferry-export",
                &[src.as_str(), "--table", "users", "--table", "tags"][..],
            ),
            ("ferry-import", &["d1://acct/assessed", "--create"][..]),
        ],
        b"",
    );
    common::all_ok(&load);
    let r = assess(&d, &["d1://acct/assessed", "--to", "postgres"]);
    assert_eq!(table(&r, "main.users")["rows"], 47);
    assert_eq!(table(&r, "main.tags")["rows"], 5);
    // The NUL and non-UTF-8 names survived into D1, and are named for PostgreSQL.
    let refused = problem(
        table(&r, "main.users"),
        "column name (text): values the PostgreSQL import refuses",
    );
    assert!(refused.is_some_and(|p| p.to_string().contains("NUL byte")), "{r}");
    assert!(!r.to_string().contains(common::d1::TOKEN));
}
