//! Change streams (`"changes": true`, RECORDs with `op` upsert or delete) applied by every table
//! target, undone by rollback, and refused clearly where they cannot apply.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use crate::common::{self, Dir, pg};

const SCHEMA: &str = r#""schema":{"type":"object","properties":{"id":{"type":"integer"},"name":{"type":["string","null"]}}},"key_properties":["id"]"#;

/// A stream of `users` rows: a snapshot (`changes` false) or changes, one message per entry of
/// `records` (`op` and the record's JSON).
fn stream(run: &str, changes: bool, records: &[(&str, &str)]) -> Vec<u8> {
    let mut s = format!(
        "{{\"type\":\"BEGIN\",\"protocol\":\"ferry/1\",\"run_id\":\"{run}\",\"source\":{{\"kind\":\"sqlite\",\"address\":\"sqlite:app.db\"}}}}\n\
         {{\"type\":\"SCHEMA\",\"stream\":\"main.users\",{SCHEMA}{}}}\n",
        if changes { r#","changes":true"# } else { "" }
    );
    for (op, record) in records {
        s.push_str(&format!(
            "{{\"type\":\"RECORD\",\"stream\":\"main.users\",\"op\":\"{op}\",\"record\":{record}}}\n"
        ));
    }
    s.push_str(&format!(
        "{{\"type\":\"STATE\",\"value\":{{\"run_id\":\"{run}\",\"seq\":1,\"bookmarks\":{{\"main.users\":{{\"rows\":{},\"complete\":true}}}}}}}}\n\
         {{\"type\":\"STREAM_END\",\"stream\":\"main.users\",\"status\":\"complete\",\"rows\":{}}}\n\
         {{\"type\":\"END\",\"run_id\":\"{run}\",\"status\":\"ok\"}}\n",
        records.len(),
        records.len()
    ));
    s.into_bytes()
}

const SNAPSHOT: [(&str, &str); 5] = [
    ("upsert", r#"{"id":1,"name":"Ann"}"#),
    ("upsert", r#"{"id":2,"name":"Bob"}"#),
    ("upsert", r#"{"id":3,"name":"Cid"}"#),
    ("upsert", r#"{"id":4,"name":null}"#),
    ("upsert", r#"{"id":5,"name":"Eve"}"#),
];

/// Updates, deletes, a row inserted then deleted then inserted again, and a delete of a key that
/// is not there: `2 deleted` (Bob, the first 6), the rest as listed in `AFTER`.
const CHANGES: [(&str, &str); 8] = [
    ("upsert", r#"{"id":1,"name":"Ann Two"}"#),
    ("delete", r#"{"id":2}"#),
    ("upsert", r#"{"id":6,"name":"New"}"#),
    ("delete", r#"{"id":6,"name":"ignored"}"#),
    ("upsert", r#"{"id":6,"name":"Again"}"#),
    ("delete", r#"{"id":99}"#),
    ("upsert", r#"{"id":4,"name":"Dee"}"#),
    ("upsert", r#"{"id":4,"name":"Dee Two"}"#),
];

/// The snapshot imported into `copy.db` (made): its address.
fn snapshot_into(d: &Dir) -> String {
    let target = d.db("copy.db");
    d.run(
        "ferry-import",
        &[&target, "--create"],
        &stream("snap", false, &SNAPSHOT),
    )
    .ok();
    target
}

fn before() -> Vec<(i64, Option<String>)> {
    vec![
        (1, Some("Ann".into())),
        (2, Some("Bob".into())),
        (3, Some("Cid".into())),
        (4, None),
        (5, Some("Eve".into())),
    ]
}

fn after() -> Vec<(i64, Option<String>)> {
    vec![
        (1, Some("Ann Two".into())),
        (3, Some("Cid".into())),
        (4, Some("Dee Two".into())),
        (5, Some("Eve".into())),
        (6, Some("Again".into())),
    ]
}

/// The snapshot, then the changes, then a rollback of the changes: each step's table as
/// `read` gives it.
fn apply_and_undo(d: &Dir, target: &str, read: &dyn Fn() -> Vec<(i64, Option<String>)>) {
    d.run("ferry-import", &[target, "--create"], &stream("snap", false, &SNAPSHOT))
        .ok();
    assert_eq!(read(), before());
    let run = d.run("ferry-import", &[target], &stream("chg", true, &CHANGES));
    // Every delete applied counts, the one of a key never there too: the closing line adds up.
    run.ok().stderr_has("3 deleted");
    let runs = d.run("ferry", &["status", "--json"], b"").lines();
    let chg = runs.iter().find(|l| l["run"]["run_id"] == "chg").unwrap();
    assert_eq!(
        (chg["run"]["rows_written"].as_u64(), chg["run"]["rows_deleted"].as_u64()),
        (Some(5), Some(3)),
        "ferry status counts deletes apart: {chg}"
    );
    assert_eq!(read(), after(), "{}", run.stderr());
    // Applied again (the same changes from a new run): the same table.
    d.run("ferry-import", &[target], &stream("chg2", true, &CHANGES)).ok();
    assert_eq!(read(), after());
    // Both change runs undone, newest first: the snapshot as it was.
    for run in ["chg2", "chg"] {
        d.run(
            "ferry",
            &["rollback", "--batch", run, "--confirm", "--target", target],
            b"",
        )
        .ok();
    }
    assert_eq!(read(), before());
}

fn sqlite_rows(d: &Dir, db: &str) -> Vec<(i64, Option<String>)> {
    let c = d.open(db);
    let mut st = c.prepare("SELECT id, name FROM users ORDER BY id").unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn a_change_stream_upserts_and_deletes_in_sqlite_and_a_rollback_undoes_it() {
    let d = Dir::new();
    let target = d.db("copy.db");
    apply_and_undo(&d, &target, &|| sqlite_rows(&d, "copy.db"));
}

#[test]
fn a_change_stream_upserts_and_deletes_in_postgres_and_a_rollback_undoes_it() {
    let d = Dir::new();
    let url = pg::cluster().database("changes");
    let read = || {
        let mut c = pg::connect(&url);
        c.query("SELECT id, name FROM users ORDER BY id", &[])
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    };
    apply_and_undo(&d, &url, &read);
}

#[test]
fn a_change_stream_upserts_and_deletes_in_d1_and_a_rollback_undoes_it() {
    let d = Dir::new();
    let _d1 = common::d1::double(&d, 60.0, 1200);
    apply_and_undo(&d, "d1://acct/app", &|| sqlite_rows(&d, "d1/app.sqlite3"));
}

#[test]
fn a_change_stream_into_a_new_postgres_table_has_its_key_from_the_first_row() {
    let d = Dir::new();
    let url = pg::cluster().database("changes_new");
    // The same key twice before the stream ends: upserted, not a duplicate.
    let mut both: Vec<(&str, &str)> = SNAPSHOT.to_vec();
    both.extend(CHANGES);
    d.run("ferry-import", &[&url, "--create"], &stream("new", true, &both))
        .ok()
        .stderr_has("3 deleted");
    let mut c = pg::connect(&url);
    let rows: Vec<(i64, Option<String>)> = c
        .query("SELECT id, name FROM users ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows, after());
}

#[test]
fn deletes_and_changes_are_refused_where_they_cannot_apply() {
    let d = Dir::new();
    let target = snapshot_into(&d);
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    // A delete in a stream that is not a change stream.
    d.run(
        "ferry-import",
        &[&target],
        &stream("a", false, &[("delete", r#"{"id":1}"#)]),
    )
    .expect_code(2)
    .stderr_has("line 3")
    .stderr_has("does not declare \"changes\": true");
    // An op ferry does not know.
    d.run(
        "ferry-import",
        &[&target],
        &stream("b", true, &[("merge", r#"{"id":1}"#)]),
    )
    .expect_code(2)
    .stderr_has("\"merge\" is not a change ferry knows");
    // A delete without its key.
    d.run(
        "ferry-import",
        &[&target],
        &stream("c", true, &[("delete", r#"{"name":"Ann"}"#)]),
    )
    .expect_code(2)
    .stderr_has("a delete without its whole key (id)");
    // Changes whose upserts would be skipped.
    d.run(
        "ferry-import",
        &[&target, "--on-conflict", "skip"],
        &stream("d", true, &[("upsert", r#"{"id":1,"name":"x"}"#)]),
    )
    .expect_code(2)
    .stderr_has("--on-conflict skip would lose updates");
    // A keyless change stream.
    let keyless = text(stream("e", true, &[("upsert", r#"{"id":1,"name":"x"}"#)]))
        .replace(r#""key_properties":["id"]"#, r#""key_properties":[]"#);
    d.run("ferry-import", &[&target], keyless.as_bytes())
        .expect_code(2)
        .stderr_has("carries changes but has no key");
    // Nothing of any of them changed the table.
    assert_eq!(sqlite_rows(&d, "copy.db"), before());
}

#[test]
fn a_filter_on_a_change_stream_deletes_the_rows_that_leave_the_selection_and_validate_checks_its_digest() {
    let d = Dir::new();
    let target = snapshot_into(&d);
    let changes = stream(
        "chg",
        true,
        &[
            ("upsert", r#"{"id":1,"name":"Ann Two"}"#),
            ("upsert", r#"{"id":3,"name":"hidden"}"#),
            ("delete", r#"{"id":2}"#),
        ],
    );
    let t = d.run(
        "ferry-transform",
        &["--filter", r#"main.users=.name != "hidden""#],
        &changes,
    );
    t.ok();
    // Cid, now outside the selection, goes out as a delete of its key; the stream's digest is
    // the digest of what it now says.
    assert!(t.stdout().contains(r#""op":"delete""#), "{}", t.stdout());
    d.run("ferry-validate", &["-"], t.stdout().as_bytes()).ok();
    let mut tampered = t.stdout().replacen(r#""op":"delete""#, r#""op":"upsert""#, 1);
    tampered.push('\n');
    d.run("ferry-validate", &["-"], tampered.as_bytes())
        .expect_code(1)
        .stderr_has("DIFFERENT");
    d.run("ferry-import", &[&target], t.stdout().as_bytes())
        .ok()
        .stderr_has("2 deleted");
    assert_eq!(
        sqlite_rows(&d, "copy.db"),
        vec![(1, Some("Ann Two".into())), (4, None), (5, Some("Eve".into()))]
    );
    // Against a target, a change stream is not the table: said, not passed.
    d.run("ferry-validate", &[&target], t.stdout().as_bytes())
        .expect_code(1)
        .stderr_has("NOT VERIFIED");
}

/// An app's database: `users` with an `updated_at` the app sets on every write, and `orders`
/// referencing them, with a key that only grows.
fn app_db(d: &Dir, rows: i64) -> String {
    let c = d.open("app.db");
    c.execute_batch(
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, updated_at TEXT NOT NULL);
         CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id), total NUMERIC(10,2));",
    )
    .unwrap();
    c.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
         INSERT INTO users SELECT i, 'user ' || i, strftime('%Y-%m-%dT%H:%M:%fZ', '2026-01-01', '+' || (i % 50) || ' seconds') FROM n",
        [rows],
    )
    .unwrap();
    c.execute_batch("INSERT INTO orders SELECT id, id, id * 1.5 FROM users WHERE id % 3 = 0")
        .unwrap();
    d.db("app.db")
}

/// One catch-up pass from app.db into `target`: the import's run.
fn pass(d: &Dir, src: &str, target: &str, extra: &[&str]) -> Vec<common::Run> {
    let mut export = vec![src, "--incremental", "users.updated_at", "--incremental", "orders.id"];
    export.extend(extra);
    d.pipe(
        &[("ferry-export", &export), ("ferry-import", &[target, "--create"])],
        b"",
    )
}

fn rows_read(import: &common::Run) -> u64 {
    common::end_of(import)["rows"].as_u64().unwrap_or(0)
}

/// Passes from SQLite into `target` (read back by `validate`): the first sends every row, the
/// next only what changed since, and after the app's writes stop the copy is proved whole.
fn catch_up_into(d: &Dir, target: &str) {
    let src = app_db(d, 2000);
    let runs = pass(d, &src, target, &[]);
    common::all_ok(&runs);
    assert_eq!(rows_read(&runs[1]), 2000 + 666);
    d.run("ferry-validate", &[&src, target], b"").ok();
    // Nothing changed: the next pass sends only the rows at the watermarks (re-sent, harmless).
    let runs = pass(d, &src, target, &[]);
    common::all_ok(&runs);
    let at_watermark = 2000 / 50 + 1;
    assert_eq!(rows_read(&runs[1]), at_watermark, "{}", runs[0].stderr());
    // The app writes: updates, new users, a new order.
    let c = d.open("app.db");
    c.execute_batch(
        "UPDATE users SET name = 'renamed', updated_at = '2026-02-01T00:00:00.000Z' WHERE id IN (7, 8, 9);
         INSERT INTO users VALUES (5001, 'new', '2026-02-01T00:00:01.000Z'), (5002, 'newer', '2026-02-01T00:00:02.000Z');
         INSERT INTO orders VALUES (5001, 5001, 12.5);",
    )
    .unwrap();
    let runs = pass(d, &src, target, &[]);
    common::all_ok(&runs);
    // The rows at the watermarks again, the five users written, the new order: nothing more.
    assert_eq!(rows_read(&runs[1]), at_watermark + 5 + 1, "{}", runs[0].stderr());
    d.run("ferry-validate", &[&src, target], b"").ok();
    // That pass undone: its changes are gone from the target, so the next pass starts from the
    // watermark before it and brings them again.
    d.run("ferry", &["rollback", "--last", "--confirm", "--target", target], b"")
        .ok();
    d.run("ferry-validate", &[&src, target], b"").expect_code(1);
    let runs = pass(d, &src, target, &[]);
    common::all_ok(&runs);
    assert_eq!(rows_read(&runs[1]), at_watermark + 5 + 1);
    d.run("ferry-validate", &[&src, target], b"").ok();
    // Rows deleted: a watermark cannot see them, the keys compared can.
    d.open("app.db")
        .execute_batch("DELETE FROM orders WHERE user_id IN (30, 33); DELETE FROM users WHERE id IN (30, 33, 34);")
        .unwrap();
    common::all_ok(&pass(d, &src, target, &[]));
    d.run("ferry-validate", &[&src, target], b"").expect_code(1);
    let runs = pass(d, &src, target, &["--detect-deletes", target]);
    common::all_ok(&runs);
    assert!(runs[0].stderr().contains("deleted=3"), "{}", runs[0].stderr());
    d.run("ferry-validate", &[&src, target], b"").ok();
}

#[test]
fn catch_up_passes_from_sqlite_send_only_what_changed_and_the_copy_validates() {
    let d = Dir::new();
    let target = d.db("copy.db");
    catch_up_into(&d, &target);
}

#[test]
fn catch_up_passes_from_sqlite_into_postgres_send_only_what_changed_and_the_copy_validates() {
    let d = Dir::new();
    let url = pg::cluster().database("catch_up");
    catch_up_into(&d, &url);
}

/// An application writing to app.db: in each transaction a new user and an order, a user
/// renamed, an order deleted, and now and then a user deleted with their orders, so changes to
/// several tables with foreign keys go together. Runs until `stop`; the transactions it made.
fn writer(
    path: std::path::PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let c = rusqlite::Connection::open(path).unwrap();
        c.busy_timeout(std::time::Duration::from_secs(60)).unwrap();
        let mut seed: u64 = 0x5eed;
        let mut next = move |n: i64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 33) % n.max(1) as u64) as i64
        };
        let mut n = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let id = 10_000 + n as i64;
            let (a, b, g) = (next(id), next(id), next(id));
            c.execute_batch(&format!(
                "BEGIN IMMEDIATE;
                 INSERT INTO users VALUES ({id}, 'user {id}', strftime('%Y-%m-%dT%H:%M:%fZ'));
                 INSERT INTO orders SELECT {id}, id, {n} * 0.25 FROM users WHERE id >= {a} ORDER BY id LIMIT 1;
                 UPDATE users SET name = 'renamed {n}', updated_at = strftime('%Y-%m-%dT%H:%M:%fZ') WHERE id = (SELECT min(id) FROM users WHERE id >= {b});
                 DELETE FROM orders WHERE id = (SELECT min(id) FROM orders WHERE id >= {b});
                 {}
                 COMMIT;",
                if n % 7 == 3 {
                    format!("DELETE FROM orders WHERE user_id = (SELECT min(id) FROM users WHERE id >= {g}); DELETE FROM users WHERE id = (SELECT min(id) FROM users WHERE id >= {g});")
                } else {
                    String::new()
                }
            ))
            .unwrap();
            n += 1;
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        n
    })
}

/// Follow app.db into `target` while the writer runs, killing the follower (the export, the
/// import, or both) at random instants and starting it again; then stop the writer, drain the
/// changes, and compare every row of both sides independently of ferry.
fn follow_through_kills(d: &Dir, target: &str, read_target: &dyn Fn(&str) -> Vec<String>) {
    let src = app_db(d, 300);
    let app = App {
        src: src.clone(),
        start: Box::new({
            let path = d.path("app.db");
            move |stop| writer(path.clone(), stop)
        }),
        read: Box::new(|table| sqlite_lines(d, "app.db", table)),
    };
    follow_app_through_kills(d, &app, target, read_target);
}

/// An application's database being written to: its address, how to start its writer, and its
/// rows as `select_lines` reads them.
struct App<'a> {
    src: String,
    start: Box<Writer<'a>>,
    read: Box<Lines<'a>>,
}

/// Starts an app's writer, which runs until told to stop and says how many transactions it made.
type Writer<'a> = dyn Fn(std::sync::Arc<std::sync::atomic::AtomicBool>) -> std::thread::JoinHandle<u64> + 'a;
/// A table's rows, one line each.
type Lines<'a> = dyn Fn(&str) -> Vec<String> + 'a;

fn follow_app_through_kills(d: &Dir, app: &App<'_>, target: &str, read_target: &dyn Fn(&str) -> Vec<String>) {
    let src = app.src.clone();
    d.run("ferry", &["capture", "install", &src], b"").ok();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writing = (app.start)(std::sync::Arc::clone(&stop));
    // The copy, taken while the app writes: what changes meanwhile is captured too.
    common::all_ok(&d.pipe(
        &[("ferry-export", &[&src]), ("ferry-import", &[target, "--create"])],
        b"",
    ));
    let copied = read_target("users").len();
    let mut seed = 7u64;
    for round in 0..6u64 {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        let mut export = d
            .cmd("ferry-export", &[&src, "--follow", "-q"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut import = d
            .cmd("ferry-import", &[target, "-q"])
            .stdin(export.stdout.take().unwrap())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300 + (seed >> 40) % 900));
        match round % 3 {
            0 => import.kill().unwrap(),
            1 => export.kill().unwrap(),
            _ => {
                export.kill().unwrap();
                import.kill().unwrap();
            }
        }
        let _ = export.kill();
        let _ = import.kill();
        export.wait().unwrap();
        import.wait().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let transactions = writing.join().unwrap();
    assert!(transactions > 50, "the writer made only {transactions} transactions");
    // The killed followers had committed changes (each new user grows the table).
    let followed = read_target("users").len();
    assert!(followed > copied + 20, "followed {followed} users, copied {copied}");
    // Writes stopped: drain what is left, then the proof.
    common::all_ok(&d.pipe(
        &[("ferry-export", &[&src, "--changes"]), ("ferry-import", &[target])],
        b"",
    ));
    d.run("ferry-validate", &[&src, target], b"").ok();
    for table in ["users", "orders"] {
        let source = (app.read)(table);
        assert!(source.len() > 20, "{table}: {}", source.len());
        assert_eq!(
            read_target(table),
            source,
            "{table} differs after {transactions} transactions"
        );
    }
}

/// The rows of the app's `users` or `orders`, one line each in key order, read with SQL alone.
fn select_lines(table: &str) -> String {
    match table {
        "users" => "SELECT id, name, updated_at FROM users ORDER BY id".into(),
        _ => "SELECT id, user_id, CAST(total AS DOUBLE PRECISION) FROM orders ORDER BY id".into(),
    }
}

fn sqlite_lines(d: &Dir, db: &str, table: &str) -> Vec<String> {
    let c = d.open(db);
    let sql = select_lines(table).replace("DOUBLE PRECISION", "REAL");
    let mut st = c.prepare(&sql).unwrap();
    st.query_map([], |r| {
        let v: Vec<rusqlite::types::Value> = (0..3).map(|i| r.get(i)).collect::<rusqlite::Result<_>>()?;
        Ok(format!("{v:?}"))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

#[test]
fn a_sqlite_app_followed_into_sqlite_while_it_writes_and_the_follower_is_killed_ends_equal() {
    let d = Dir::new();
    let target = d.db("copy.db");
    follow_through_kills(&d, &target, &|table| sqlite_lines(&d, "copy.db", table));
}

#[test]
fn a_sqlite_app_followed_into_d1_while_it_writes_and_the_follower_is_killed_ends_equal() {
    let d = Dir::new();
    let _d1 = common::d1::double(&d, 60.0, 1200);
    follow_through_kills(&d, "d1://acct/app", &|table| sqlite_lines(&d, "d1/app.sqlite3", table));
}

#[test]
fn a_d1_app_captured_through_its_api_is_followed_one_snapshot_a_pass_and_cut_over() {
    let d = Dir::new();
    let _d1 = common::d1::double(&d, 60.0, 1200);
    let src = "d1://acct/app";
    app_db(&d, 300);
    std::fs::create_dir_all(d.path("d1")).unwrap();
    std::fs::rename(d.path("app.db"), d.path("d1/app.sqlite3")).unwrap();
    let installed = d.run("ferry", &["capture", "install", src], b"");
    installed.ok();
    assert_eq!(installed.stdout(), "capturing orders\ncapturing users\n");
    let target = d.db("copy.db");
    common::all_ok(&d.pipe(
        &[("ferry-export", &[src]), ("ferry-import", &[&target, "--create"])],
        b"",
    ));
    // The application (a Worker, here writing the database file the double serves): more
    // changes than one pass reads, then multi-table transactions while the changes are drained.
    let app = d.open("d1/app.sqlite3");
    for _ in 0..8 {
        app.execute_batch("UPDATE users SET name = name || '.'").unwrap();
    }
    let drain = || {
        let runs = d.pipe(
            &[("ferry-export", &[src, "--changes"]), ("ferry-import", &[&target])],
            b"",
        );
        common::all_ok(&runs);
        runs
    };
    let first = drain();
    let states = first[1].stdout().matches(r#""type":"STATE""#).count();
    assert!(states >= 3, "2,400 changes take two passes: {states} STATEs");
    assert_eq!(
        sqlite_lines(&d, "copy.db", "users"),
        sqlite_lines(&d, "d1/app.sqlite3", "users")
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writing = writer(d.path("d1/app.sqlite3"), std::sync::Arc::clone(&stop));
    for _ in 0..3 {
        std::thread::sleep(std::time::Duration::from_millis(300));
        drain();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(writing.join().unwrap() > 0);
    d.run(
        "ferry",
        &["cutover", src, &target, "--quiet-for", "0.2", "--drop-capture"],
        b"",
    )
    .ok()
    .stderr_has("GO: ");
    for table in ["users", "orders"] {
        assert_eq!(
            sqlite_lines(&d, "copy.db", table),
            sqlite_lines(&d, "d1/app.sqlite3", table),
            "{table}"
        );
    }
    d.run("ferry", &["capture", "status", src], b"")
        .ok()
        .stdout()
        .contains("not capturing")
        .then_some(())
        .expect("capture removed");
    let left: i64 = d
        .open("d1/app.sqlite3")
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name LIKE '\\_ferry\\_%' ESCAPE '\\'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 0, "the triggers and the change table are gone");
}

#[test]
fn a_sqlite_app_followed_into_postgres_while_it_writes_and_the_follower_is_killed_ends_equal() {
    let d = Dir::new();
    let url = pg::cluster().database("follow");
    follow_through_kills(&d, &url, &|table| pg_lines(&url, table));
}

/// `select_lines` read from a PostgreSQL database, in the form `sqlite_lines` gives.
fn pg_lines(url: &str, table: &str) -> Vec<String> {
    use rusqlite::types::Value as V;
    let mut c = pg::connect(url);
    c.query(&select_lines(table), &[])
        .unwrap()
        .iter()
        .map(|r| {
            let v = match table {
                "users" => vec![V::Integer(r.get(0)), V::Text(r.get(1)), V::Text(r.get(2))],
                _ => vec![
                    V::Integer(r.get(0)),
                    V::Integer(r.get(1)),
                    r.get::<_, Option<f64>>(2).map_or(V::Null, V::Real),
                ],
            };
            format!("{v:?}")
        })
        .collect()
}

/// The app of `app_db` in PostgreSQL, and its writer (the same transactions, in its SQL).
fn pg_app(rows: i64) -> App<'static> {
    let url = pg::cluster().database("app");
    let mut c = pg::connect(&url);
    c.batch_execute(&format!(
        "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, updated_at text NOT NULL);
         CREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint NOT NULL REFERENCES users(id), total numeric(10,2));
         INSERT INTO users SELECT i, 'user ' || i, '2026-01-01T00:00:' || lpad((i % 50)::text, 2, '0') || '.000Z' FROM generate_series(1, {rows}) i;
         INSERT INTO orders SELECT id, id, id * 1.5 FROM users WHERE id % 3 = 0;"
    ))
    .unwrap();
    let writer_url = url.clone();
    App {
        src: url.clone(),
        start: Box::new(move |stop| {
            let url = writer_url.clone();
            std::thread::spawn(move || {
                let mut c = pg::connect(&url);
                let mut n = 0u64;
                let now = "to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')";
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let id = 10_000 + n as i64;
                    let (a, b, g) = (
                        (n * 7919) as i64 % id,
                        (n * 104_729) as i64 % id,
                        (n * 1299) as i64 % id,
                    );
                    let gone = if n % 7 == 3 {
                        format!(
                            "DELETE FROM orders WHERE user_id = (SELECT min(id) FROM users WHERE id >= {g}); DELETE FROM users WHERE id = (SELECT min(id) FROM users WHERE id >= {g});"
                        )
                    } else {
                        String::new()
                    };
                    c.batch_execute(&format!(
                        "BEGIN;
                         INSERT INTO users VALUES ({id}, 'user {id}', {now});
                         INSERT INTO orders SELECT {id}, id, {n} * 0.25 FROM users WHERE id >= {a} ORDER BY id LIMIT 1;
                         UPDATE users SET name = 'renamed {n}', updated_at = {now} WHERE id = (SELECT min(id) FROM users WHERE id >= {b});
                         DELETE FROM orders WHERE id = (SELECT min(id) FROM orders WHERE id >= {b});
                         {gone}
                         COMMIT;"
                    ))
                    .unwrap();
                    n += 1;
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                n
            })
        }),
        read: Box::new(move |table| pg_lines(&url, table)),
    }
}

#[test]
fn a_postgres_app_followed_through_logical_replication_while_it_writes_and_the_follower_is_killed_ends_equal() {
    let d = Dir::new();
    let app = pg_app(300);
    let target = pg::cluster().database("copy");
    let read = |table: &str| pg_lines(&target, table);
    follow_app_through_kills(&d, &app, &target, &read);
    // The slot goes with capture, after the plan.
    assert!(
        d.run("ferry", &["capture", "status", &app.src], b"")
            .stdout()
            .contains("capturing: slot ferry_t_app_")
    );
    // A slot no follower reads, holding more WAL than it may: every read of the database says so.
    pg::connect(&app.src)
        .batch_execute("UPDATE users SET name = name || '.'")
        .unwrap();
    d.set_env("FERRY_SLOT_WARN_BYTES", "1");
    let warned = d.run("ferry-export", &[&app.src, "--table", "users"], b"");
    warned
        .ok()
        .stderr_has("no follower is reading it")
        .stderr_has("ferry capture remove");
    assert!(!warned.stderr().contains("ferry-test-Secret"), "{}", warned.stderr());
    d.set_env("FERRY_SLOT_WARN_BYTES", "");
    assert!(
        !d.run("ferry-export", &[&app.src, "--table", "users"], b"")
            .stderr()
            .contains("no follower is reading it")
    );
    d.run("ferry", &["capture", "remove", &app.src, "--confirm"], b"").ok();
    let mut c = pg::connect(&app.src);
    let slots: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()",
            &[],
        )
        .unwrap()
        .get(0);
    let pubs: i64 = c.query_one("SELECT count(*) FROM pg_publication", &[]).unwrap().get(0);
    assert_eq!((slots, pubs), (0, 0));
}

#[test]
fn ferry_status_shows_a_running_follower_and_how_far_behind_postgresql_it_is() {
    let d = Dir::new();
    let app = pg_app(50);
    let target = d.db("copy.db");
    d.run("ferry", &["capture", "install", &app.src], b"").ok();
    common::all_ok(&d.pipe(
        &[
            ("ferry-export", &[&app.src]),
            ("ferry-transform", &["--dialect", "sqlite"]),
            ("ferry-import", &[&target, "--create"]),
        ],
        b"",
    ));
    let mut export = d
        .cmd("ferry-export", &[&app.src, "--follow", "-q"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut transform = d
        .cmd("ferry-transform", &["--dialect", "sqlite"])
        .stdin(export.stdout.take().unwrap())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut import = d
        .cmd("ferry-import", &[&target, "-q"])
        .stdin(transform.stdout.take().unwrap())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    pg::connect(&app.src)
        .batch_execute("UPDATE users SET name = 'seen' WHERE id = 7")
        .unwrap();
    let t0 = std::time::Instant::now();
    let status = loop {
        let s = d.run("ferry", &["status"], b"");
        if s.stdout().contains("behind") {
            break s;
        }
        assert!(t0.elapsed() < std::time::Duration::from_secs(30), "{}", s.stdout());
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let row = status
        .stdout()
        .lines()
        .find(|l| l.contains("running"))
        .unwrap()
        .to_owned();
    // How long ago, and how much WAL since: `following, 0.12 s, 1.2 KiB behind`.
    assert!(
        row.contains("following, ") && row.contains(" s, ") && row.contains("B behind"),
        "{row}"
    );
    let json = d.run("ferry", &["status", "--json"], b"");
    let following: Vec<serde_json::Value> = json
        .lines()
        .into_iter()
        .filter_map(|l| l.get("following").filter(|f| !f.is_null()).cloned())
        .collect();
    assert_eq!(following.len(), 1, "{}", json.stdout());
    assert!(following[0]["seq"].as_u64().unwrap() > 0, "{}", following[0]);
    assert!(following[0]["lag_seconds"].is_number() && following[0]["lag_bytes"].is_u64());
    let sent = std::process::Command::new("kill")
        .args(["-INT", &export.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    for (what, child) in [
        ("export", &mut export),
        ("transform", &mut transform),
        ("import", &mut import),
    ] {
        assert_eq!(child.wait().unwrap().code(), Some(0), "{what}");
    }
    // Ended: no longer following.
    assert!(!d.run("ferry", &["status"], b"").stdout().contains("following"));
    d.run("ferry", &["capture", "remove", &app.src, "--confirm"], b"").ok();
}

#[test]
fn capture_installs_twice_removes_only_its_own_after_showing_the_plan_and_refuses_what_it_cannot() {
    let d = Dir::new();
    let src = app_db(&d, 10);
    d.open("app.db")
        .execute_batch("CREATE TRIGGER app_own AFTER INSERT ON users BEGIN SELECT 1; END;")
        .unwrap();
    // Nothing captured yet: exporting changes says what to do first.
    d.run("ferry-export", &[&src, "--changes"], b"")
        .expect_code(2)
        .stderr_has("run `ferry capture install");
    for _ in 0..2 {
        let run = d.run("ferry", &["capture", "install", &src], b"");
        run.ok();
        assert_eq!(
            run.stdout(),
            "capturing users\ncapturing orders\n".replace("users\ncapturing orders", "orders\ncapturing users")
        );
    }
    d.open("app.db")
        .execute_batch("UPDATE users SET name = 'x' WHERE id < 4")
        .unwrap();
    d.run("ferry", &["capture", "status", &src], b"")
        .ok()
        .stdout()
        .contains("3 changes recorded")
        .then_some(())
        .expect("status counts the changes");
    let plan = d.run("ferry", &["capture", "remove", &src], b"");
    plan.ok().stderr_has("--confirm to do it");
    assert_eq!(plan.stdout().lines().count(), 7, "{}", plan.stdout());
    assert!(!plan.stdout().contains("app_own"));
    d.run("ferry", &["capture", "status", &src], b"")
        .ok()
        .stdout()
        .contains("capturing:")
        .then_some(())
        .unwrap();
    // A table made after capture: the follower says it is not followed.
    d.open("app.db")
        .execute_batch("CREATE TABLE later (id INTEGER PRIMARY KEY, v TEXT)")
        .unwrap();
    d.run("ferry-export", &[&src, "--changes"], b"")
        .ok()
        .stderr_has("not captured (made after `ferry capture install`?)")
        .stderr_has("table=later");
    d.run("ferry", &["capture", "remove", &src, "--confirm"], b"").ok();
    let c = d.open("app.db");
    let names: Vec<String> = c
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'trigger' OR name LIKE '%ferry%' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(names, ["app_own"]);
    assert!(
        d.run("ferry", &["capture", "status", &src], b"")
            .stdout()
            .contains("not capturing")
    );
    d.run("ferry", &["capture", "install", "dir:elsewhere"], b"")
        .expect_code(2)
        .stderr_has("ferry captures the changes of SQLite, PostgreSQL and D1 databases");
    d.run("ferry", &["capture", "install", "sqlite:missing.db"], b"")
        .expect_code(2)
        .stderr_has("no such database file");
}

#[test]
fn a_cutover_says_no_go_while_the_app_writes_or_the_copy_differs_and_go_once_it_is_whole() {
    let d = Dir::new();
    let src = app_db(&d, 200);
    let target = pg::cluster().database("cutover");
    d.run("ferry", &["capture", "install", &src], b"").ok();
    common::all_ok(&d.pipe(
        &[("ferry-export", &[&src]), ("ferry-import", &[&target, "--create"])],
        b"",
    ));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writing = writer(d.path("app.db"), std::sync::Arc::clone(&stop));
    std::thread::sleep(std::time::Duration::from_millis(300));
    // Still written to: no switch.
    d.run("ferry", &["cutover", &src, &target, "--quiet-for", "0.5"], b"")
        .expect_code(1)
        .stderr_has("NO-GO")
        .stderr_has("the source is still written to");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writing.join().unwrap();
    // Writes stopped, but the target lost a row behind ferry's back: no switch either.
    let mut c = pg::connect(&target);
    c.batch_execute("DELETE FROM orders WHERE id = (SELECT min(id) FROM orders)")
        .unwrap();
    let no = d.run("ferry", &["cutover", &src, &target, "--quiet-for", "0.2"], b"");
    no.expect_code(1).stderr_has("NO-GO").stderr_has("differs");
    assert!(no.stdout().contains("\"missing\""), "{}", no.stdout());
    // Put right (a fresh copy of that table), then GO, with the way back ready.
    common::all_ok(&d.pipe(
        &[
            ("ferry-export", &[&src, "--table", "orders"]),
            ("ferry-import", &[&target, "--on-conflict", "overwrite"]),
        ],
        b"",
    ));
    d.run(
        "ferry",
        &[
            "cutover",
            &src,
            &target,
            "--quiet-for",
            "0.2",
            "--reverse",
            "--drop-capture",
        ],
        b"",
    )
    .ok()
    .stderr_has("GO: ");
    assert_eq!(pg_lines(&target, "users"), sqlite_lines(&d, "app.db", "users"));
    assert!(
        d.run("ferry", &["capture", "status", &src], b"")
            .stdout()
            .contains("not capturing")
    );
    // The application now writes to the new store; during the rollback window its changes
    // are followed back into the old one.
    c.batch_execute(
        "UPDATE users SET name = 'after the switch' WHERE id = 5;
         DELETE FROM orders WHERE user_id = 6; DELETE FROM users WHERE id = 6;
         INSERT INTO users VALUES (900001, 'new in the new store', '2026-03-01T00:00:00.000Z');",
    )
    .unwrap();
    let back = d.pipe(
        &[
            ("ferry-export", &[&target, "--changes"]),
            ("ferry-transform", &["--dialect", "sqlite"]),
            ("ferry-import", &[&src]),
        ],
        b"",
    );
    common::all_ok(&back);
    assert_eq!(sqlite_lines(&d, "app.db", "users"), pg_lines(&target, "users"));
    assert_eq!(sqlite_lines(&d, "app.db", "orders"), pg_lines(&target, "orders"));
    d.run("ferry", &["capture", "remove", &target, "--confirm"], b"").ok();
}

#[test]
fn a_catch_up_pass_from_postgres_finds_the_rows_deleted_there() {
    let d = Dir::new();
    let app = pg_app(60);
    let target = d.db("copy.db");
    let pass = |extra: &[&str]| {
        let mut export = vec![
            app.src.as_str(),
            "--incremental",
            "users.updated_at",
            "--incremental",
            "orders.id",
        ];
        export.extend(extra);
        d.pipe(
            &[
                ("ferry-export", &export),
                ("ferry-transform", &["--dialect", "sqlite"]),
                ("ferry-import", &[&target, "--create"]),
            ],
            b"",
        )
    };
    common::all_ok(&pass(&[]));
    d.run("ferry-validate", &[&app.src, &target], b"").ok();
    let mut c = pg::connect(&app.src);
    c.batch_execute("DELETE FROM orders WHERE user_id IN (3, 6); DELETE FROM users WHERE id IN (3, 4, 6);")
        .unwrap();
    let runs = pass(&["--detect-deletes", &target]);
    common::all_ok(&runs);
    assert!(runs[0].stderr().contains("deleted=3"), "{}", runs[0].stderr());
    d.run("ferry-validate", &[&app.src, &target], b"").ok();
}

#[test]
fn a_postgres_cutover_sees_a_write_made_while_it_waits_for_quiet() {
    let d = Dir::new();
    let app = pg_app(40);
    let target = pg::cluster().database("quiet");
    d.run("ferry", &["capture", "install", &app.src], b"").ok();
    common::all_ok(&d.pipe(
        &[("ferry-export", &[&app.src]), ("ferry-import", &[&target, "--create"])],
        b"",
    ));
    // Drained once already (an earlier cutover's drain starts the next one's position).
    common::all_ok(&d.pipe(
        &[("ferry-export", &[&app.src, "--changes"]), ("ferry-import", &[&target])],
        b"",
    ));
    let cutover = d
        .cmd("ferry", &["cutover", &app.src, &target, "--quiet-for", "3"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    pg::connect(&app.src)
        .batch_execute("UPDATE users SET name = 'late' WHERE id = 7")
        .unwrap();
    let out = cutover.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("the source is still written to"), "{err}");
    d.run(
        "ferry",
        &["cutover", &app.src, &target, "--quiet-for", "0.2", "--drop-capture"],
        b"",
    )
    .ok();
    assert_eq!(pg_lines(&target, "users"), pg_lines(&app.src, "users"));
}

#[test]
fn a_catch_up_pass_into_a_target_that_missed_the_earlier_passes_is_refused() {
    let d = Dir::new();
    let src = app_db(&d, 100);
    common::all_ok(&pass(&d, &src, &d.db("first.db"), &[]));
    // The same state file, another target: the watermark is the first target's.
    let runs = pass(&d, &src, &d.db("second.db"), &[]);
    runs[1]
        .expect_code(2)
        .stderr_has("holds nothing of this stream from this source")
        .stderr_has("its own state file");
    // With a state file of its own, its first pass sends every row.
    let export: Vec<&str> = vec![&src, "--incremental", "users.updated_at", "--state", "second.state"];
    common::all_ok(&d.pipe(
        &[
            ("ferry-export", &export),
            (
                "ferry-import",
                &[&d.db("second.db"), "--create", "--state", "second.state"],
            ),
        ],
        b"",
    ));
    d.run("ferry-validate", &[&src, &d.db("second.db"), "--table", "users"], b"")
        .ok();
}
