//! Cloudflare D1 through the double (`ferry::d1double`, real SQLite behind D1's HTTP API) with
//! D1's real limits on and its rate limit scaled: schema and rows land, values D1 cannot hold
//! are rejected with their key, a 429 storm and the lockout are handled, a bad token stops the
//! run, and a double killed mid-load then restarted resumes to an equal copy.

#![allow(clippy::unwrap_used)] // tests fail loudly by design
mod common;

use std::sync::atomic::Ordering;

use common::Dir;
use ferry::d1double::{self, Config};

const TOKEN: &str = "d1-test-token-that-must-never-be-printed";

/// A double over `d`'s `d1/` at `scale` times real speed, and the environment pointing at it
/// (the client paced for the same scaled budget).
fn double(d: &Dir, scale: f64, rate_limit: u64) -> d1double::Running {
    let mut cfg = Config::new(d.path("d1"), TOKEN.into());
    cfg.scale = scale;
    cfg.rate_limit = rate_limit;
    let running = d1double::serve(cfg, 0).unwrap();
    d.set_env("CLOUDFLARE_API_BASE_URL", &running.base_url());
    d.set_env("CLOUDFLARE_API_TOKEN", TOKEN);
    d.set_env("FERRY_D1_RATE", &format!("{rate_limit}/{}", 300.0 / scale));
    d.set_env("FERRY_RETRIES", "2");
    running
}

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

fn validate_equal(d: &Dir, src: &str, db: &str) {
    let v = d.run(
        "ferry-validate",
        &[
            src,
            &format!("sqlite:{}", d.path(&format!("d1/{db}.sqlite3")).display()),
        ],
        b"",
    );
    v.ok();
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
    runs[1].ok();
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
    let v = d.run(
        "ferry-validate",
        &[&src, &format!("sqlite:{}", d.path("d1/app.sqlite3").display())],
        b"",
    );
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
    runs[1].ok();
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
    server.kill().unwrap();
    server.wait().unwrap();
    validate_equal(&d, &addr, "killed");
}
