//! Hostile names and secrets: table, column, index and constraint names with quotes, semicolons,
//! spaces, unicode and SQL keywords go through every engine quoted (nothing injected, everything
//! equal); object keys that differ only in case or normalisation land apart, keys that could
//! escape or that S3 cannot take are refused; and a password in an address, a D1 token or an S3
//! secret key appears in no output of a run.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use crate::common;
use crate::common::d1::{TOKEN, double};
use crate::common::pg::{self, PASSWORD};
use crate::common::{Dir, all_ok};

/// A source whose every name is an attack or a trap, with values that look like SQL.
fn hostile_source(d: &Dir) -> String {
    d.open("src.db")
        .execute_batch(
            r#"
            CREATE TABLE sentinel (id INTEGER PRIMARY KEY);
            INSERT INTO sentinel VALUES (1);
            CREATE TABLE "we""ird; DROP TABLE sentinel; --" (
                "select" INTEGER PRIMARY KEY,
                "col ""quoted""" TEXT NOT NULL,
                "semi;colon" REAL,
                "space name" BLOB,
                "ünïcødé 名前" TEXT UNIQUE,
                "MixedCase" INTEGER
            );
            CREATE INDEX "idx'); DROP TABLE sentinel; --" ON "we""ird; DROP TABLE sentinel; --" ("MixedCase");
            CREATE TABLE "order" (
                "from" INTEGER PRIMARY KEY,
                "where" INTEGER REFERENCES "we""ird; DROP TABLE sentinel; --" ("select"),
                "group by" TEXT
            );
            WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 300)
              INSERT INTO "we""ird; DROP TABLE sentinel; --"
              SELECT i, 'x''); DROP TABLE sentinel; -- ' || i, i / 4.0,
                     CASE WHEN i % 2 = 0 THEN x'00275c22' END, '名前 ' || i || ' "\''', i % 7
              FROM s;
            WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 200)
              INSERT INTO "order" SELECT i, i, '$$; DROP TABLE sentinel; $$ \. ' || i FROM s;
            "#,
        )
        .unwrap();
    d.db("src.db")
}

fn sentinel_sqlite(d: &Dir, name: &str) -> i64 {
    common::count(&d.open(name), "sentinel")
}

#[test]
fn hostile_names_go_through_sqlite_and_postgresql_quoted_and_equal() {
    let d = Dir::new();
    let src = hostile_source(&d);

    // SQLite to SQLite, with an upsert re-run through the same names.
    let copy = d.db("copy.db");
    all_ok(&d.pipe(
        &[("ferry-export", &[&src]), ("ferry-import", &[&copy, "--create"])],
        b"",
    ));
    all_ok(&d.pipe(
        &[
            ("ferry-export", &[&src]),
            ("ferry-import", &[&copy, "--fresh", "--on-conflict", "overwrite"]),
        ],
        b"",
    ));
    d.run("ferry-validate", &[&src, &copy], b"").ok();
    assert_eq!(sentinel_sqlite(&d, "copy.db"), 1);

    // SQLite to PostgreSQL: created, then upserted through a staging table.
    let url = pg::cluster().database("hostile");
    all_ok(&d.pipe(&[("ferry-export", &[&src]), ("ferry-import", &[&url, "--create"])], b""));
    all_ok(&d.pipe(
        &[
            ("ferry-export", &[&src]),
            ("ferry-import", &[&url, "--fresh", "--on-conflict", "overwrite"]),
        ],
        b"",
    ));
    d.run("ferry-validate", &[&src, &url], b"").ok();
    let mut c = pg::connect(&url);
    let tables: Vec<String> = c
        .query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(tables.contains(&"sentinel".to_owned()), "{tables:?}");
    assert!(
        tables.contains(&"we\"ird; DROP TABLE sentinel; --".to_owned()),
        "{tables:?}"
    );
    let n: i64 = c
        .query_one("SELECT count(*) FROM \"we\"\"ird; DROP TABLE sentinel; --\"", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 300);
    let fk: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = '\"order\"'::regclass AND contype = 'f' AND convalidated",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(fk, 1, "the foreign key between hostile names was created and validated");

    // PostgreSQL back to SQLite, and equal to where it started.
    let back = d.db("back.db");
    all_ok(&d.pipe(
        &[
            ("ferry-export", &[&url]),
            ("ferry-transform", &["--dialect", "sqlite"]),
            ("ferry-import", &[&back, "--create"]),
        ],
        b"",
    ));
    d.run("ferry-validate", &[&url, &back], b"").ok();
    let n: i64 = d
        .open("back.db")
        .query_row("SELECT count(*) FROM \"we\"\"ird; DROP TABLE sentinel; --\"", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(n, 300);
    assert_eq!(sentinel_sqlite(&d, "back.db"), 1);
    assert_eq!(sentinel_sqlite(&d, "src.db"), 1);
}

#[test]
fn hostile_names_go_through_d1_quoted_and_equal_and_its_token_is_never_shown() {
    let d = Dir::new();
    let _dbl = double(&d, 60.0, 1200);
    let src = hostile_source(&d);
    let runs = d.pipe(
        &[
            ("ferry-export", &[&src]),
            ("ferry-import", &["d1://acct/hostile", "--create"]),
        ],
        b"",
    );
    all_ok(&runs);
    d.run("ferry-validate", &[&src, "d1://acct/hostile"], b"").ok();
    // And back out through the API, equal again.
    let back = d.db("back.db");
    let out = d.pipe(
        &[
            ("ferry-export", &["d1://acct/hostile"]),
            ("ferry-import", &[&back, "--create"]),
        ],
        b"",
    );
    all_ok(&out);
    d.run("ferry-validate", &[&src, &back], b"").ok();
    let db = rusqlite::Connection::open(d.path("d1/hostile.sqlite3")).unwrap();
    assert_eq!(common::count(&db, "sentinel"), 1, "nothing was injected");
    let n: i64 = db
        .query_row("SELECT count(*) FROM \"we\"\"ird; DROP TABLE sentinel; --\"", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(n, 300);
    for r in runs.iter().chain(&out) {
        assert!(!r.stdout().contains(TOKEN) && !r.stderr().contains(TOKEN));
    }
}

#[test]
fn a_password_in_an_address_appears_in_no_output() {
    let d = Dir::new();
    let src = hostile_source(&d);
    // A row PostgreSQL refuses (text cannot hold NUL), so a reject file is written too.
    d.open("src.db")
        .execute_batch("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes VALUES (1, 'ok'), (2, 'nul ' || char(0));")
        .unwrap();
    let url = pg::cluster().database("secret");
    assert!(url.contains(PASSWORD));
    let mut outputs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut keep = |runs: &[common::Run]| {
        for r in runs {
            outputs.push((format!("{} stdout", r.what), r.output.stdout.clone()));
            outputs.push((format!("{} stderr", r.what), r.output.stderr.clone()));
        }
    };

    // Into PostgreSQL, with a row the server refuses (a reject file), debug logging on.
    let runs = d.pipe(
        &[
            ("ferry-export", &[&src]),
            (
                "ferry-import",
                &[&url, "--create", "-v", "--reject-file", "rejects.ndjson"],
            ),
        ],
        b"",
    );
    runs[0].ok();
    runs[1].expect_code(3);
    keep(&runs);
    // Out of PostgreSQL and into it again, upserting.
    let runs = d.pipe(
        &[
            ("ferry-export", &[&url, "-v"]),
            ("ferry-import", &[&url, "--on-conflict", "overwrite", "-v"]),
        ],
        b"",
    );
    all_ok(&runs);
    keep(&runs);
    assert!(d.path("rejects.ndjson").exists());
    // Validate with a report (it finds the rejected row missing), status, a dry run.
    let r = d.run("ferry-validate", &[&src, &url, "--report", "report.json", "-v"], b"");
    r.expect_code(1);
    keep(std::slice::from_ref(&r));
    for args in [&["status"][..], &["status", "--json"][..]] {
        let r = d.run("ferry", args, b"");
        r.ok();
        keep(std::slice::from_ref(&r));
    }
    let stream = d.run("ferry-export", &[&src], b"");
    let r = d.run("ferry-import", &[&url, "--dry-run", "-v"], &stream.output.stdout);
    r.ok();
    keep(std::slice::from_ref(&r));
    // Errors: a wrong database, a wrong password with the right one elsewhere in the address,
    // a server that is not there.
    let wrong_db = format!("{}/no_such_database_here", pg::cluster().base);
    let dead = format!("postgres://postgres:{PASSWORD}@127.0.0.1:1/x");
    for target in [&wrong_db, &dead] {
        let r = d
            .cmd("ferry-import", &[target.as_str(), "--create"])
            .env("FERRY_RETRIES", "0")
            .output();
        let r = r.unwrap();
        assert_eq!(r.status.code(), Some(2));
        outputs.push((format!("import {target} stderr"), r.stderr));
        let r = d
            .cmd("ferry-export", &[target.as_str()])
            .env("FERRY_RETRIES", "0")
            .output()
            .unwrap();
        assert_eq!(r.status.code(), Some(2));
        outputs.push((format!("export {target} stderr"), r.stderr));
    }

    // Every file the runs left behind (state file, reports, reject files), and every output.
    assert_nowhere(&d, &mut outputs, &[PASSWORD], |p| p.ends_with("src.db"));
    // And the runs did name the server, redacted, so the check above looked at real output.
    assert!(
        outputs
            .iter()
            .any(|(_, b)| String::from_utf8_lossy(b).contains("postgres://postgres@127.0.0.1")),
        "no output names the server"
    );
}

/// Add every file the runs left in `d` (but those `skip` says are data) to `outputs`, check the
/// state file and a report are among them, and that no secret appears in any.
fn assert_nowhere(
    d: &Dir,
    outputs: &mut Vec<(String, Vec<u8>)>,
    secrets: &[&str],
    skip: impl Fn(&std::path::Path) -> bool,
) {
    for entry in walk(d.root()) {
        if !skip(&entry) {
            outputs.push((entry.display().to_string(), std::fs::read(&entry).unwrap()));
        }
    }
    assert!(
        outputs.iter().any(|(w, _)| w.contains("state.db")),
        "the state file was checked"
    );
    assert!(
        outputs.iter().any(|(w, _)| w.ends_with("report.json")),
        "the report was checked"
    );
    for (what, bytes) in outputs.iter() {
        for s in secrets {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                "a secret appears in {what}: {}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

const BUCKET: &str = "hostile-bucket";

/// An S3 server with the environment pointing every command at it.
fn s3(d: &Dir) -> common::s3::S3Server {
    let s = common::s3::S3Server::start(&d.path("s3-root"), BUCKET);
    for (k, v) in s.env() {
        d.set_env(k, &v);
    }
    d.set_env("FERRY_RETRIES", "1");
    s
}

/// Every file under `root`, by its path relative to it, with its bytes.
fn files_under(root: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    walk(root)
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            (rel, std::fs::read(&p).unwrap())
        })
        .collect()
}

#[test]
fn names_that_differ_only_in_case_or_normalisation_or_look_dangerous_land_as_distinct_keys() {
    let d = Dir::new();
    let _s3 = s3(&d);
    let src = d.path("tree");
    let names = [
        "README",
        "Readme",
        "readme",
        "caf\u{e9}.txt",       // NFC
        "cafe\u{301}.txt",     // NFD: the same to a person, another key
        r"back\slash\..\name", // backslashes are bytes of one segment, not separators
        "quote'\"; DROP TABLE x;--",
        "%2e%2e/percent",
        "sp ace/ trailing space ",
        "-leading-dash",
        "q?uery#frag&amp=1",
        "\u{202e}rtl-override.txt",
        "emoji \u{1f4c4}/\u{1f600}",
    ];
    for (i, n) in names.iter().enumerate() {
        common::write_file(&src, n, format!("content {i} of {n}").as_bytes());
    }
    // A control character: a valid file name, refused as an object key by its name, with why.
    common::write_file(&d.path("ctl"), "tab\there", b"tab");
    let runs = common::put_tree(&d, &d.path("ctl"), &format!("s3://{BUCKET}/c"), &[]);
    runs[0].ok();
    runs[1].expect_code(3);
    let r = common::upload_results(&runs[1]).pop().unwrap();
    assert_eq!(
        (r["path"].as_str(), r["status"].as_str()),
        (Some("tab\there"), Some("refused")),
        "{r}"
    );
    assert!(r["reason"].as_str().unwrap().contains("illegal character"), "{r}");
    let addr = format!("dir:{}", src.display());
    let dst = format!("s3://{BUCKET}/h");
    let runs = common::put_tree(&d, &src, &dst, &[]);
    all_ok(&runs);
    let failed: Vec<_> = common::upload_results(&runs[1])
        .into_iter()
        .filter(|r| r["status"] != "uploaded")
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    let end = common::end_of(&runs[1]);
    assert_eq!(end["uploaded"], names.len(), "{end}");
    d.run("ferry-validate", &[&addr, &dst], b"").ok();
    // Back out of the bucket into a directory: the same names, byte for byte, the same bytes.
    let back = format!("dir:{}", d.path("back").display());
    all_ok(&d.pipe(&[("ferry-export", &[&dst]), ("ferry-import", &[&back])], b""));
    assert_eq!(files_under(&d.path("back")), files_under(&src));
    // Nothing outside the bucket's prefix.
    let stored = files_under(&d.path("s3-root"));
    assert!(
        stored.keys().all(|k| k.starts_with(&format!("{BUCKET}/h/"))
            || k.starts_with(&format!("{BUCKET}/."))
            || k.starts_with('.')),
        "{:?}",
        stored.keys().collect::<Vec<_>>()
    );
}

#[test]
fn unsafe_and_over_long_keys_are_refused_and_nothing_lands_outside_the_prefix() {
    let d = Dir::new();
    let s3 = s3(&d);
    common::write_file(&d.path("src"), "f", b"payload");
    let uri = format!("file://{}", d.path("src/f").display());
    let sha = "239f59ed55e737c77147cf55ad0c1b030b6d7ee748a7426952f9b852d5a935e5";
    let stream = |extra: &str| common::one_file_stream(extra, sha, &uri);
    let dst = format!("s3://{BUCKET}/inner");
    let before = s3.requests();
    // A path or key that could escape stops the import at its line, before anything is sent.
    for (why, extra) in [
        ("`..`", r#""path":"../escaped""#),
        ("absolute", r#""path":"/etc/passwd""#),
        ("`..`", r#""path":"ok","key":"../../escaped""#),
        ("NUL", r#""path":"nul\u0000byte""#),
        ("empty segment", r#""path":"a//b""#),
    ] {
        let imp = d.run("ferry-import", &[&dst], stream(extra).as_bytes());
        imp.expect_code(2).stderr_has("line 3").stderr_has(why);
    }
    assert_eq!(s3.requests(), before, "no unsafe key was sent");
    // A key longer than S3 and R2 take is refused by its name, before it is sent.
    let long = format!(r#""path":"{}x""#, "k/".repeat(520));
    let imp = d.run("ferry-import", &[&dst], stream(&long).as_bytes());
    imp.expect_code(3);
    let r = common::upload_results(&imp).pop().unwrap();
    assert_eq!(r["status"], "refused", "{r}");
    assert!(r["reason"].as_str().unwrap().contains("at most 1024"), "{r}");
    assert_eq!(s3.requests(), before, "the long key was not sent");
    let stored = files_under(&d.path("s3-root"));
    assert!(
        stored.keys().all(|k| !k.contains("escaped") && !k.contains("passwd")),
        "{:?}",
        stored.keys().collect::<Vec<_>>()
    );
    assert!(!d.path("escaped").exists());
}

#[test]
fn s3_keys_appear_in_no_output_of_uploads_exports_validation_status_or_errors() {
    let d = Dir::new();
    let _s3 = s3(&d);
    let secret = common::s3::SECRET_KEY;
    let wrong = "ferry-wrong-secret-that-must-never-be-printed";
    let src = d.path("tree");
    for i in 0..20 {
        common::write_file(&src, format!("d/{i}.txt"), format!("file {i}").as_bytes());
    }
    let addr = format!("dir:{}", src.display());
    let dst = format!("s3://{BUCKET}/s");
    let mut outputs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut keep = |runs: &[common::Run]| {
        for r in runs {
            outputs.push((format!("{} stdout", r.what), r.output.stdout.clone()));
            outputs.push((format!("{} stderr", r.what), r.output.stderr.clone()));
        }
    };
    // Up (most verbose logging), again (nothing to send), back out, validated with a report.
    d.set_env("FERRY_LOG", "trace");
    let runs = d.pipe(&[("ferry-export", &[&addr]), ("ferry-import", &[&dst, "-v"])], b"");
    all_ok(&runs);
    let batch = common::upload_results(&runs[1])[0]["batch"]
        .as_str()
        .unwrap()
        .to_owned();
    keep(&runs);
    let runs = common::put_tree(&d, &src, &dst, &["-v"]);
    all_ok(&runs);
    keep(&runs);
    let back = format!("dir:{}", d.path("back").display());
    let runs = d.pipe(&[("ferry-export", &[&dst, "-v"]), ("ferry-import", &[&back])], b"");
    all_ok(&runs);
    keep(&runs);
    let r = d.run("ferry-validate", &[&addr, &dst, "--report", "report.json", "-v"], b"");
    r.ok();
    keep(std::slice::from_ref(&r));
    for args in [
        &["status"][..],
        &["status", "--json"][..],
        &["rollback", "--batch", &batch, "-v"][..],
    ] {
        let r = d.run("ferry", args, b"");
        r.ok();
        keep(std::slice::from_ref(&r));
    }
    // A secret the server refuses.
    d.set_env("AWS_SECRET_ACCESS_KEY", wrong);
    let runs = common::put_tree(&d, &src, &format!("s3://{BUCKET}/w"), &["-v"]);
    runs[1].expect_code(2);
    keep(&runs);
    let r = d.run("ferry-validate", &[&addr, &dst], b"");
    r.expect_code(2);
    keep(std::slice::from_ref(&r));

    let data = [d.path("tree"), d.path("back"), d.path("s3-root")];
    assert_nowhere(&d, &mut outputs, &[secret, wrong], |p| {
        data.iter().any(|r| p.starts_with(r))
    });
    // The runs did log requests and name the store, so the check looked at real output.
    assert!(
        outputs
            .iter()
            .any(|(_, b)| String::from_utf8_lossy(b).contains("127.0.0.1")),
        "no output names the store"
    );
}
