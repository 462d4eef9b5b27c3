//! Cloudflare D1 through the double (`ferry::d1double`, real SQLite behind D1's HTTP API) with
//! D1's real limits on and its rate limit scaled: schema and rows land, values D1 cannot hold
//! are rejected with their key, a 429 storm and the lockout are handled, a bad token stops the
//! run, and a double killed mid-load then restarted resumes to an equal copy.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use crate::common;
use std::sync::atomic::Ordering;

use crate::common::d1::{TOKEN, double};
use crate::common::pg;
use crate::common::{Dir, all_ok};

/// `n` rows of 10 columns in `table` of a new SQLite database.
fn wide_table(path: &std::path::Path, n: usize) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(
        "CREATE TABLE events (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, kind TEXT NOT NULL,
            payload TEXT, score REAL, big INTEGER, flag BOOLEAN, at TEXT, note TEXT, raw BLOB);
         BEGIN;",
    )
    .unwrap();
    for i in 0..n as i64 {
        c.execute(
            "INSERT INTO events VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            rusqlite::params![
                i + 1,
                i % 97,
                ["signup", "login", "it's \"quoted\""][i as usize % 3],
                format!("{{\"n\": {i}, \"tags\": [\"a\", \"b\"]}}"),
                i as f64 / 7.0,
                (1i64 << 60) + i,
                i % 2,
                format!("2026-11-{:02}T10:00:00Z", i % 28 + 1),
                if i % 5 == 0 {
                    None
                } else {
                    Some(format!("note {i} \u{1f600}"))
                },
                vec![(i % 256) as u8, 0, 255],
            ],
        )
        .unwrap();
    }
    c.execute_batch("COMMIT").unwrap();
}

/// Validate `src` against D1 database `db`, read through the API.
fn validate_equal(d: &Dir, src: &str, db: &str) {
    d.run("ferry-validate", &[src, &format!("d1://acct/{db}")], b"").ok();
}

#[test]
fn the_sample_goes_into_d1_with_its_keys_and_indexes_and_the_orphan_is_rejected_by_key() {
    let d = Dir::new();
    let dbl = double(&d, 60.0, 1200);
    let src = d.sample();
    let runs = d.pipe(
        &[
            ("ferry-export", &[&src]),
            ("ferry-import", &["d1://acct/app", "--create"]),
        ],
        b"",
    );
    runs[0].ok();
    runs[1].expect_code(3).stderr_has("1 rejected");
    let end = runs[1].lines().pop().unwrap();
    assert_eq!(end["rejected"], 1, "{end}");
    // D1 enforces foreign keys: the sample's orphan is refused, with its key and the reason.
    let text = d.reject_text();
    assert!(
        text.contains("FOREIGN KEY constraint failed") && text.contains(r#""key":{"id":1006}"#),
        "{text}"
    );
    let db = rusqlite::Connection::open(d.path("d1/app.sqlite3")).unwrap();
    let idx: i64 = db
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'users_created'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(idx, 1, "secondary indexes are built after the data");
    let v = d.run("ferry-validate", &[&src, "d1://acct/app"], b"");
    v.expect_code(1);
    let summary = v.lines().pop().unwrap();
    assert_eq!(summary["findings"], serde_json::json!({"missing": 1}), "{summary}");
    assert_eq!(dbl.stats.lockouts.load(Ordering::SeqCst), 0);
    // The token is in no output and no file ferry wrote.
    for r in &runs {
        assert!(!r.stdout().contains(TOKEN) && !r.stderr().contains(TOKEN));
    }
    for e in walkdir::WalkDir::new(d.path(".ferry")) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let bytes = std::fs::read(e.path()).unwrap();
            assert!(!bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()));
        }
    }
    // A re-run sends no row again.
    let before = dbl.stats.rows_written.load(Ordering::SeqCst);
    let again = d.pipe(
        &[
            ("ferry-export", &[&src]),
            ("ferry-import", &["d1://acct/app", "--create"]),
        ],
        b"",
    );
    again[1].ok();
    let end = again[1].lines().pop().unwrap();
    assert_eq!(end["written"], 0, "{end}");
    assert!(
        dbl.stats.rows_written.load(Ordering::SeqCst) - before < 10,
        "only markers are written"
    );
}

#[test]
fn values_d1_cannot_hold_are_rejected_by_key_and_big_rows_and_big_integers_land_exactly() {
    let d = Dir::new();
    let dbl = double(&d, 60.0, 1200);
    let src = d.path("src.db");
    wide_table(&src, 3000);
    let c = rusqlite::Connection::open(&src).unwrap();
    // 150 KB of text: a statement over D1's 100,000 bytes if inlined; 3 MB: over 2,000,000.
    c.execute("UPDATE events SET note = ?1 WHERE id = 10", ["x".repeat(150_000)])
        .unwrap();
    c.execute("UPDATE events SET note = ?1 WHERE id = 20", ["y".repeat(3_000_000)])
        .unwrap();
    c.execute("UPDATE events SET big = ?1 WHERE id = 30", [i64::MAX])
        .unwrap();
    drop(c);
    let addr = format!("sqlite:{}", src.display());
    let runs = d.pipe(
        &[
            ("ferry-export", &[&addr]),
            ("ferry-import", &["d1://acct/events", "--create"]),
        ],
        b"",
    );
    runs[1].expect_code(3);
    let end = runs[1].lines().pop().unwrap();
    assert_eq!(end["written"], 2999, "{end}");
    assert_eq!(end["rejected"], 1, "{end}");
    let text = d.reject_text();
    assert!(
        text.contains(r#""key":{"id":20}"#) && text.contains("2000000 bytes"),
        "{}",
        &text[..300]
    );
    let db = rusqlite::Connection::open(d.path("d1/events.sqlite3")).unwrap();
    let (note_len, big): (i64, i64) = db
        .query_row(
            "SELECT (SELECT length(note) FROM events WHERE id = 10), (SELECT big FROM events WHERE id = 30)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((note_len, big), (150_000, i64::MAX));
    // Every other value is exactly the source's: drop the rejected row at the source and compare.
    rusqlite::Connection::open(&src)
        .unwrap()
        .execute("DELETE FROM events WHERE id = 20", [])
        .unwrap();
    validate_equal(&d, &addr, "events");
    // Dense requests: far more rows than requests.
    let requests = dbl.stats.requests.load(Ordering::SeqCst);
    assert!(requests < 40, "{requests} requests for 3000 rows");
}

#[test]
fn a_429_storm_is_waited_out_and_the_pacer_never_trips_the_lockout() {
    let d = Dir::new();
    // 40 requests per 300 s, 100 times faster: 40 per 3 s.
    let dbl = double(&d, 100.0, 40);
    d.set_env("FERRY_D1_REQUEST_BYTES", "8000");
    d.set_env("FERRY_PROGRESS_MS", "500");
    let src = d.path("src.db");
    wide_table(&src, 4000);
    dbl.stats.inject_429.store(5, Ordering::SeqCst);
    let addr = format!("sqlite:{}", src.display());
    let runs = d.pipe(
        &[
            ("ferry-export", &[&addr]),
            ("ferry-import", &["d1://acct/paced", "--create"]),
        ],
        b"",
    );
    runs[1]
        .ok()
        .stderr_has("rate-limited (429)")
        .stderr_has("requests in the rate window");
    let s = &dbl.stats;
    assert!(
        s.requests.load(Ordering::SeqCst) > 60,
        "the load needed more than one window's budget"
    );
    assert_eq!(s.rate_limited.load(Ordering::SeqCst), 5, "only the injected 429s");
    assert_eq!(s.lockouts.load(Ordering::SeqCst), 0, "never locked out");
    validate_equal(&d, &addr, "paced");
}

#[test]
fn a_missing_or_wrong_token_stops_with_a_clear_error_and_records_nothing() {
    let d = Dir::new();
    let _dbl = double(&d, 60.0, 1200);
    let src = d.sample();
    d.set_env("CLOUDFLARE_API_TOKEN", "");
    let runs = d.pipe(
        &[
            ("ferry-export", &[&src]),
            ("ferry-import", &["d1://acct/app", "--create"]),
        ],
        b"",
    );
    runs[1].expect_code(2).stderr_has("set CLOUDFLARE_API_TOKEN");
    d.set_env("CLOUDFLARE_API_TOKEN", "not-the-token");
    let runs = d.pipe(
        &[
            ("ferry-export", &[&src]),
            ("ferry-import", &["d1://acct/app", "--create"]),
        ],
        b"",
    );
    runs[1].stderr_has("refused the token (403");
    assert_ne!(runs[1].code(), Some(0));
    assert!(!runs[1].stderr().contains("not-the-token"));
    let db = rusqlite::Connection::open(d.path("d1/app.sqlite3")).unwrap();
    let tables: i64 = db
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tables, 0, "nothing was created");
}

#[test]
fn the_double_killed_mid_load_then_restarted_and_the_same_command_finishes_equal() {
    let d = Dir::new();
    let src = d.path("src.db");
    wide_table(&src, 20_000);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let start = || {
        d.cmd(
            "ferry-d1-double",
            &[
                "--dir",
                &d.path("d1").display().to_string(),
                "--token",
                TOKEN,
                "--port",
                &port.to_string(),
                "--scale",
                "100",
                "-q",
            ],
        )
        .spawn()
        .unwrap()
    };
    let wait_up = || {
        let t0 = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(20),
                "the double did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let mut server = start();
    wait_up();
    d.set_env("CLOUDFLARE_API_BASE_URL", &format!("http://127.0.0.1:{port}/client/v4"));
    d.set_env("CLOUDFLARE_API_TOKEN", TOKEN);
    d.set_env("FERRY_D1_RATE", "1200/3");
    d.set_env("FERRY_D1_REQUEST_BYTES", "100000");
    d.set_env("FERRY_RETRIES", "1");
    let addr = format!("sqlite:{}", src.display());
    let mut export = d
        .cmd("ferry-export", &[&addr, "-q"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let import = d
        .cmd("ferry-import", &["d1://acct/killed", "--create"])
        .stdin(std::process::Stdio::from(export.stdout.take().unwrap()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let import = std::thread::spawn(move || import.wait_with_output().unwrap());
    // Kill the double once some rows are in.
    let db = d.path("d1/killed.sqlite3");
    let t0 = std::time::Instant::now();
    loop {
        let n: i64 = rusqlite::Connection::open(&db)
            .and_then(|c| c.query_row("SELECT count(*) FROM events", [], |r| r.get(0)))
            .unwrap_or(0);
        if n > 3000 {
            break;
        }
        assert!(t0.elapsed() < std::time::Duration::from_secs(60), "no rows arrived");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    server.kill().unwrap();
    server.wait().unwrap();
    let out = import.join().unwrap();
    let _ = export.wait();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let landed: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert!(landed < 20_000, "the kill landed mid-load ({landed})");

    let mut server = start();
    wait_up();
    let runs = d.pipe(
        &[
            ("ferry-export", &[&addr]),
            ("ferry-import", &["d1://acct/killed", "--create"]),
        ],
        b"",
    );
    runs[1].ok();
    let end = runs[1].lines().pop().unwrap();
    assert_eq!(
        end["already_imported"].as_i64().unwrap() + end["written"].as_i64().unwrap(),
        20_000,
        "{end}"
    );
    assert!(end["already_imported"].as_i64().unwrap() >= landed - 1, "{end}");
    validate_equal(&d, &addr, "killed");
    server.kill().unwrap();
    server.wait().unwrap();
}

/// The records, schemas and stream ends of an export (not BEGIN, STATE, END: run ids, addresses,
/// times).
fn content(stream: &str) -> Vec<String> {
    stream
        .lines()
        .filter(|l| {
            !l.contains(r#""type":"BEGIN""#) && !l.contains(r#""type":"STATE""#) && !l.contains(r#""type":"END""#)
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn d1_exports_exactly_what_its_sqlite_file_gives_and_validates_on_either_side() {
    let d = Dir::new();
    let dbl = double(&d, 60.0, 1200);
    // Small pages: the 3,000 users come in about 30 requests.
    d.set_env("FERRY_D1_PAGE_BYTES", "4096");
    std::fs::create_dir_all(d.path("d1")).unwrap();
    let file = d.path("d1/src.sqlite3");
    let c = rusqlite::Connection::open(&file).unwrap();
    c.execute_batch(
        "CREATE TABLE users (id INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT NOT NULL UNIQUE COLLATE NOCASE,
            n INTEGER, r REAL, t TEXT, b BLOB, anyv);
         CREATE INDEX users_n ON users (n);
         CREATE TABLE pairs (a TEXT, k INT, v, PRIMARY KEY (a, k));
         CREATE TABLE tags (user_id INTEGER REFERENCES users (id), tag TEXT);
         CREATE TABLE wr (code TEXT PRIMARY KEY, v INTEGER) WITHOUT ROWID;
         BEGIN;",
    )
    .unwrap();
    for i in 1..=3000i64 {
        let anyv: rusqlite::types::Value = match i % 5 {
            0 => i.into(),
            1 => (i as f64).into(),
            2 => i.to_string().into(),
            3 => vec![1u8, 0].into(),
            _ => rusqlite::types::Value::Null,
        };
        c.execute(
            "INSERT INTO users VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            rusqlite::params![
                i,
                format!("u{i}@x"),
                (i << 50) + 1,
                i as f64 / 7.0,
                format!("it's {i} \u{e9}"),
                vec![(i % 256) as u8, 0],
                anyv
            ],
        )
        .unwrap();
    }
    c.execute_batch(
        "INSERT INTO pairs VALUES (NULL, 1, 'a'), ('x', NULL, 'b'), ('x', 2, 'c'), (NULL, NULL, 'd');
         INSERT INTO tags VALUES (1, 'a'), (2, 'b'), (1, 'a');
         INSERT INTO wr VALUES ('b', 9223372036854775807), ('a', -9223372036854775808);
         -- Text that is not UTF-8 (the API cannot carry it as text), infinity, NUL, a whole REAL.
         UPDATE users SET t = CAST(X'FF41' AS TEXT), r = 9e999 WHERE id = 7;
         UPDATE users SET t = 'nul' || char(0) || 'x', r = -9e999, anyv = 1.0 WHERE id = 8;
         COMMIT;",
    )
    .unwrap();
    drop(c);

    // Through the API, the same stream as from the file itself.
    let from_d1 = d.run("ferry-export", &["d1://acct/src"], b"");
    from_d1.ok();
    let local = format!("sqlite:{}", file.display());
    let from_file = d.run("ferry-export", &[&local], b"");
    from_file.ok();
    let (a, b) = (content(&from_d1.stdout()), content(&from_file.stdout()));
    assert_eq!(a.len(), 3000 + 9 + 4 * 2, "records, schemas, stream ends");
    assert_eq!(a, b);
    assert!(dbl.stats.requests.load(Ordering::SeqCst) > 30, "read in keyset pages");

    // Into SQLite and back compared, with D1 on either side.
    let copy = d.db("copy.db");
    all_ok(&d.pipe(
        &[
            ("ferry-export", &["d1://acct/src"]),
            ("ferry-import", &[&copy, "--create"]),
        ],
        b"",
    ));
    d.run("ferry-validate", &["d1://acct/src", &copy], b"").ok();
    d.run("ferry-validate", &[&copy, "d1://acct/src"], b"").ok();
    // Differences made on each side are found, with their keys.
    d.open("copy.db")
        .execute("UPDATE users SET r = 0.5 WHERE id = 42", [])
        .unwrap();
    rusqlite::Connection::open(&file)
        .unwrap()
        .execute_batch(
            "PRAGMA foreign_keys = OFF; DELETE FROM users WHERE id = 2999; INSERT INTO tags VALUES (99999, 'orphan');",
        )
        .unwrap();
    let v = d.run("ferry-validate", &[&copy, "d1://acct/src"], b"");
    v.expect_code(1);
    let findings: Vec<serde_json::Value> = v.lines().into_iter().filter(|l| l["type"] == "FINDING").collect();
    let has = |kind: &str, key: serde_json::Value| findings.iter().any(|f| f["kind"] == kind && f["key"] == key);
    assert!(has("changed", serde_json::json!({"id": 42})), "{findings:?}");
    assert!(has("missing", serde_json::json!({"id": 2999})), "{findings:?}");
    assert!(
        findings
            .iter()
            .any(|f| f["stream"] == "main.tags" && f["kind"] == "extra"),
        "{findings:?}"
    );
    assert!(
        findings
            .iter()
            .any(|f| f["stream"] == "main.tags" && f["kind"] == "fk_orphans"),
        "{findings:?}"
    );
}

#[test]
fn a_django_shaped_postgresql_database_goes_to_d1_and_back_out_equal() {
    let d = Dir::new();
    let dbl = double(&d, 60.0, 1200);
    let url = pg::cluster().database("django");
    pg::connect(&url)
        .batch_execute(
            "CREATE TABLE users (id bigserial PRIMARY KEY, email varchar(254) NOT NULL UNIQUE,
                is_active boolean NOT NULL DEFAULT true, date_joined timestamptz NOT NULL);
             CREATE TABLE email_subscriptions (id bigserial PRIMARY KEY,
                user_id bigint NOT NULL REFERENCES users (id), list text NOT NULL, subscribed boolean NOT NULL,
                created_at timestamp NOT NULL, UNIQUE (user_id, list));
             CREATE TABLE notification_logs (id bigserial PRIMARY KEY,
                user_id bigint NOT NULL REFERENCES users (id), payload jsonb NOT NULL, sent boolean NOT NULL,
                sent_at timestamptz, external_id bigint, amount numeric(12, 2));
             CREATE INDEX notification_logs_user ON notification_logs (user_id, sent_at);
             INSERT INTO users (email, is_active, date_joined)
               SELECT 'user' || i || '@example.com', i % 7 <> 0,
                      timestamptz '2024-01-01 00:00:00+00' + i * interval '37 minutes 0.25 seconds'
               FROM generate_series(1, 1500) i;
             INSERT INTO email_subscriptions (user_id, list, subscribed, created_at)
               SELECT u, l, (u + length(l)) % 3 <> 0, timestamp '2024-02-01 12:00:00' + u * interval '1 hour'
               FROM generate_series(1, 1500) u, unnest(ARRAY['news', 'product', 'O''Reilly digest']) l;
             INSERT INTO notification_logs (user_id, payload, sent, sent_at, external_id, amount)
               SELECT 1 + i % 1500,
                      jsonb_build_object('kind', 'welcome', 'n', i, 'tags', jsonb_build_array('a', 'b'),
                                         'text', 'café \"quoted\"'),
                      i % 4 <> 0,
                      CASE WHEN i % 4 <> 0 THEN timestamptz '2024-03-01 08:00:00.123456+02' + i * interval '1 minute' END,
                      9007199254740993 + i, (i * 1.25)::numeric(12, 2)
               FROM generate_series(1, 4000) i;",
        )
        .unwrap();
    let runs = d.pipe(
        &[
            ("ferry-export", &[&url]),
            ("ferry-transform", &["--dialect", "d1"]),
            ("ferry-import", &["d1://acct/app", "--create"]),
        ],
        b"",
    );
    all_ok(&runs);
    let end = runs[2].lines().pop().unwrap();
    assert_eq!(end["written"], 1500 + 4500 + 4000, "{end}");
    assert_eq!(dbl.stats.lockouts.load(Ordering::SeqCst), 0);
    // Equal across engines, read back through the API.
    d.run("ferry-validate", &[&url, "d1://acct/app"], b"").ok();
    // D1's own types and values: 0/1, SQLite datetime text, JSON text, integers beyond 2^53 exact.
    let db = rusqlite::Connection::open(d.path("d1/app.sqlite3")).unwrap();
    let (sent, at, payload, ext): (i64, String, String, i64) = db
        .query_row(
            "SELECT sent, sent_at, payload, external_id FROM notification_logs WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(
        (sent, at.as_str(), ext),
        (1, "2024-03-01 06:01:00.123456", 9007199254740994)
    );
    assert!(payload.contains(r#""kind": "welcome""#), "{payload}");
    let fks: i64 = db
        .query_row(
            "SELECT count(*) FROM pragma_foreign_key_list('email_subscriptions')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(fks, 1);

    // And back out: the backup holds every row, and validates equal to D1 and to PostgreSQL.
    let backup = d.path("d1-backup.ndjson");
    let out = d.run("ferry-export", &["d1://acct/app"], b"");
    out.ok();
    std::fs::write(&backup, out.stdout()).unwrap();
    let backup = backup.display().to_string();
    d.run("ferry-validate", &[&backup, "d1://acct/app"], b"").ok();
    let lite = d.db("from-backup.db");
    all_ok(&[d.run("ferry-import", &[&lite, "--create", "--input", &backup], b"")]);
    d.run("ferry-validate", &[&url, &lite], b"").ok();
}

#[test]
fn a_killed_export_from_d1_resumes_after_the_last_acknowledged_key() {
    let d = Dir::new();
    let _dbl = double(&d, 60.0, 1200);
    d.set_env("FERRY_D1_PAGE_BYTES", "20000");
    std::fs::create_dir_all(d.path("d1")).unwrap();
    wide_table(&d.path("d1/big.sqlite3"), 20_000);
    let dst = d.db("dst.db");
    d.pipe_killed_after(
        &[
            ("ferry-export", &["d1://acct/big", "--state-every", "1000"]),
            ("ferry-import", &[&dst, "--create"]),
        ],
        4,
    );
    let before = common::count(&d.open("dst.db"), "events");
    assert!(before > 0 && before < 20_000, "killed mid-way: {before} rows in");
    let runs = d.pipe(
        &[
            ("ferry-export", &["d1://acct/big", "--resume", "--state-every", "1000"]),
            ("ferry-import", &[&dst, "--create"]),
        ],
        b"",
    );
    all_ok(&runs);
    let (written, _) = common::written_and_already(&runs[1]);
    assert_eq!(written + before as u64, 20_000, "nothing twice, nothing lost");
    d.run("ferry-validate", &["d1://acct/big", &dst], b"").ok();
}

#[test]
fn pages_d1_cannot_read_inside_its_time_limit_are_read_again_smaller() {
    // A busy D1 interrupts a long read (code 7429): the reader halves its page and goes on, and
    // a validation against it still compares every row.
    let d = Dir::new();
    let mut cfg = ferry::d1double::Config::new(d.path("d1"), TOKEN.into());
    cfg.request_time = std::time::Duration::from_millis(2);
    cfg.rate_limit = 100_000;
    let dbl = ferry::d1double::serve(cfg, 0).unwrap();
    d.set_env("CLOUDFLARE_API_BASE_URL", &dbl.base_url());
    d.set_env("CLOUDFLARE_API_TOKEN", TOKEN);
    d.set_env("FERRY_D1_RATE", "100000/300");
    std::fs::create_dir_all(d.path("d1")).unwrap();
    wide_table(&d.path("d1/slow.sqlite3"), 3_000);
    let dst = d.db("dst.db");
    let runs = d.pipe(
        &[
            ("ferry-export", &["d1://acct/slow"]),
            ("ferry-import", &[&dst, "--create"]),
        ],
        b"",
    );
    all_ok(&runs);
    runs[0].stderr_has("reading smaller pages");
    assert_eq!(common::count(&d.open("dst.db"), "events"), 3_000);
    d.run("ferry-validate", &[&dst, "d1://acct/slow"], b"").ok();
}

#[test]
fn reading_d1_fails_clearly_on_a_dead_server_and_an_unknown_table() {
    let d = Dir::new();
    let _dbl = double(&d, 60.0, 1200);
    std::fs::create_dir_all(d.path("d1")).unwrap();
    wide_table(&d.path("d1/small.sqlite3"), 10);
    d.run("ferry-export", &["d1://acct/small", "--table", "nope"], b"")
        .expect_code(2)
        .stderr_has("no table named nope (tables: events)");
    // Nothing listens on the port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    d.set_env("CLOUDFLARE_API_BASE_URL", &format!("http://127.0.0.1:{port}/client/v4"));
    d.set_env("FERRY_RETRIES", "1");
    for args in [
        &["ferry-export", "d1://acct/small"][..],
        &["ferry-validate", "d1://acct/small", "d1://acct/small"],
    ] {
        let r = d.run(args[0], &args[1..], b"");
        r.stderr_has("d1://acct/small: a request").stderr_has("failed");
        assert_eq!(r.code(), Some(2), "{}", r.stderr());
        assert!(!r.stdout().contains(r#""type":"RECORD""#));
    }
}

#[test]
fn answers_lost_after_the_commit_are_not_applied_twice() {
    let d = Dir::new();
    let dbl = double(&d, 60.0, 1200);
    d.set_env("FERRY_D1_REQUEST_BYTES", "20000");
    let src = d.path("src.db");
    wide_table(&src, 2000);
    // The table's creation and the first rows' requests commit, but their answers never arrive:
    // sent again blindly, the table would exist already and the keys clash. (The lock's table is
    // there already, so taking the lock changes the database once: one more lost answer, and
    // that request is sent again too.)
    std::fs::create_dir_all(d.path("d1")).unwrap();
    rusqlite::Connection::open(d.path("d1/lost.sqlite3"))
        .unwrap()
        .execute_batch(
            "CREATE TABLE _ferry_lock (name TEXT PRIMARY KEY, token TEXT NOT NULL, holder TEXT NOT NULL,
             host TEXT NOT NULL, pid INTEGER NOT NULL, expires INTEGER NOT NULL)",
        )
        .unwrap();
    dbl.stats.lose_answers.store(5, Ordering::SeqCst);
    let addr = format!("sqlite:{}", src.display());
    let runs = d.pipe(
        &[
            ("ferry-export", &[&addr]),
            ("ferry-import", &["d1://acct/lost", "--create"]),
        ],
        b"",
    );
    runs[1].ok().stderr_has("had been applied before its answer was lost");
    assert_eq!(
        dbl.stats.lose_answers.load(Ordering::SeqCst),
        0,
        "every lost answer was used"
    );
    let end = runs[1].lines().pop().unwrap();
    assert_eq!(
        (end["written"].as_u64(), end["rejected"].as_u64()),
        (Some(2000), Some(0)),
        "{end}"
    );
    validate_equal(&d, &addr, "lost");
}

#[test]
fn a_dry_run_against_d1_counts_the_keys_already_there_and_changes_nothing() {
    let d = Dir::new();
    let dbl = double(&d, 60.0, 1200);
    let src = d.path("src.db");
    wide_table(&src, 3000);
    let addr = format!("sqlite:{}", src.display());
    let stream = d.run("ferry-export", &[&addr], b"").output.stdout.clone();
    let load = |args: &[&str]| {
        let plan = d.run("ferry-import", args, &stream);
        plan.ok();
        plan.lines()
            .into_iter()
            .find(|l| l["action"] == "load" && l["table"] == "events")
            .unwrap()
    };
    let fresh = load(&["d1://acct/dry", "--create", "--dry-run"]);
    assert_eq!(fresh["insert"], 3000, "{fresh}");
    // (The double creates an empty database on first use, as D1 has one before any table.)
    let db = rusqlite::Connection::open(d.path("d1/dry.sqlite3")).unwrap();
    assert_eq!(common::count(&db, "sqlite_master"), 0, "a dry run creates nothing");
    d.run("ferry-import", &["d1://acct/dry", "--create"], &stream).ok();
    db.execute("DELETE FROM events WHERE id > 2000", []).unwrap();
    let written = dbl.stats.rows_written.load(Ordering::SeqCst);
    let plan = load(&["d1://acct/dry", "--on-conflict", "skip", "--dry-run", "--fresh"]);
    assert_eq!(
        (plan["insert"].as_u64(), plan["skip"].as_u64()),
        (Some(1000), Some(2000)),
        "{plan}"
    );
    let plan = load(&["d1://acct/dry", "--dry-run", "--fresh"]);
    assert_eq!(
        (plan["insert"].as_u64(), plan["conflict"].as_u64()),
        (Some(1000), Some(2000)),
        "{plan}"
    );
    assert_eq!(
        dbl.stats.rows_written.load(Ordering::SeqCst),
        written,
        "a dry run writes nothing"
    );
    assert_eq!(common::count(&db, "events"), 2000);
}

#[test]
fn one_writer_at_a_time_holds_a_d1_database_and_a_killed_one_lets_go() {
    use std::io::Write as _;
    let d = Dir::new();
    let _dbl = double(&d, 60.0, 1200);
    wide_table(&d.path("src.db"), 4_000);
    let src = format!("sqlite:{}", d.path("src.db").display());
    let text = d
        .run("ferry-export", &[&src, "--state-every", "500"], b"")
        .ok()
        .stdout();
    let lines: Vec<&str> = text.lines().collect();
    // An import that took half the stream and waits for more, once it holds database `db`.
    let start = |d: &Dir, db: &str| {
        let mut import = d
            .cmd("ferry-import", &[&format!("d1://acct/{db}"), "--create"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut input = import.stdin.take().unwrap();
        input
            .write_all((lines[..lines.len() / 2].join("\n") + "\n").as_bytes())
            .unwrap();
        input.flush().unwrap();
        let file = d.path(&format!("d1/{db}.sqlite3"));
        let mine = format!("pid {} on ", import.id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !rusqlite::Connection::open(&file)
            .and_then(|c| c.query_row("SELECT holder FROM _ferry_lock", [], |r| r.get::<_, String>(0)))
            .is_ok_and(|h| h.contains(&mine))
        {
            assert!(std::time::Instant::now() < deadline, "the import never took the lock");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        (import, input)
    };
    // A first import, done; then one that holds the database while it waits for more.
    d.run("ferry-import", &["d1://acct/locked", "--create"], text.as_bytes())
        .ok();
    let done = d.run("ferry", &["status", "--json"], b"").lines()[0]["run"]["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (mut first, input) = start(&d, "locked");
    let me = format!("ferry-import (pid {} on ", first.id());
    // Another import, or a rollback of the first, meanwhile: refused, naming the one at work.
    d.run("ferry-import", &["d1://acct/locked", "--create"], text.as_bytes())
        .expect_code(2)
        .stderr_has("another ferry process is writing d1://acct/locked: ")
        .stderr_has(&me);
    d.run("ferry", &["rollback", "--batch", &done, "--confirm"], b"")
        .expect_code(2)
        .stderr_has(&me);
    // It ends (its producer stopped): it lets go, and the next one goes ahead.
    drop(input);
    assert_eq!(first.wait().unwrap().code(), Some(4));
    d.run("ferry-import", &["d1://acct/locked", "--create"], text.as_bytes())
        .ok();
    validate_equal(&d, &src, "locked");
    // A holder killed where it stood: this machine's process is gone, so it is taken over.
    let (mut second, input) = start(&d, "other");
    second.kill().unwrap();
    second.wait().unwrap();
    drop(input);
    d.run("ferry-import", &["d1://acct/other", "--create"], text.as_bytes())
        .ok();
    validate_equal(&d, &src, "other");
}

#[test]
fn the_savedfile_recipe_into_d1_lands_every_result_with_an_instant_d1_keeps() {
    // The README's files recipe with D1 as the application's database: the results land in a
    // table, and the app's table is updated from them in D1's SQL (SQLite's).
    let d = Dir::new();
    let _dbl = common::d1::double(&d, 60.0, 1200);
    std::fs::create_dir_all(d.path("d1")).unwrap();
    let media = d.path("media");
    for i in 0..30 {
        common::write_file(&media, format!("uploads/{i}.txt"), format!("file {i}").as_bytes());
    }
    let app = rusqlite::Connection::open(d.path("d1/app.sqlite3")).unwrap();
    app.execute_batch(
        "CREATE TABLE savedfile (id INTEGER PRIMARY KEY, file TEXT NOT NULL UNIQUE, r2_key TEXT, checksum TEXT,
           migrated_at TEXT, migration_status TEXT, migration_batch TEXT);
         WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < 29)
           INSERT INTO savedfile (file) SELECT 'uploads/' || i || '.txt' FROM s;",
    )
    .unwrap();
    let runs = d.pipe(
        &[
            ("ferry-export", &[&format!("dir:{}", media.display())]),
            ("ferry-import", &[&format!("dir:{}", d.path("bucket").display())]),
            ("ferry-transform", &["--rename-stream", "uploads=ferry_uploads"]),
            (
                "ferry-import",
                &["d1://acct/app", "--create", "--on-conflict", "overwrite"],
            ),
        ],
        b"",
    );
    common::all_ok(&runs);
    let updated = app
        .execute(
            "UPDATE savedfile SET migration_status = u.status,
               r2_key = CASE WHEN u.stored THEN u.key ELSE savedfile.r2_key END,
               checksum = CASE WHEN u.stored THEN u.sha256 ELSE savedfile.checksum END,
               migrated_at = CASE WHEN u.stored THEN u.migrated_at ELSE savedfile.migrated_at END,
               migration_batch = CASE WHEN u.stored THEN u.batch ELSE savedfile.migration_batch END
             FROM (SELECT *, status IN ('uploaded', 'present', 'overwritten') AS stored FROM ferry_uploads) u
             WHERE u.path = savedfile.file",
            [],
        )
        .unwrap();
    assert_eq!(updated, 30);
    let times: Vec<String> = common::column(
        &app,
        "SELECT migrated_at FROM savedfile WHERE r2_key = file ORDER BY id",
    );
    assert_eq!(times.len(), 30);
    for t in &times {
        // An instant in UTC to the microsecond: what PostgreSQL, SQLite and D1 all keep.
        let at: jiff::Timestamp = t.parse().unwrap_or_else(|e| panic!("{t}: {e}"));
        assert!(t.ends_with('Z') && at.subsec_nanosecond() % 1000 == 0, "{t}");
    }
}
