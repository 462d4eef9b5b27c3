//! The counters that number an application's new rows (PostgreSQL sequences of serial and
//! identity columns, SQLite's AUTOINCREMENT) go past every number the source handed out, through
//! a copy, a re-run into existing tables and a cutover; `ferry-validate` fails a counter that is
//! behind and names the statement that moves it.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use crate::common::{self, Dir, pg};

/// The findings of kind `kind` a validation printed.
fn findings(run: &common::Run, kind: &str) -> Vec<serde_json::Value> {
    run.lines()
        .into_iter()
        .filter(|l| l["type"] == "FINDING" && l["kind"] == kind)
        .collect()
}

#[test]
fn postgresql_sequences_go_past_what_the_source_handed_out_and_one_behind_is_named() {
    let d = Dir::new();
    let cluster = pg::cluster();
    let src = cluster.database("counters_src");
    let dst = cluster.database("counters_dst");
    let mut s = pg::connect(&src);
    // Five numbers handed out each, the last two rows deleted since: the sequences stand at 5,
    // the rows end at 3.
    s.batch_execute(
        "CREATE TABLE serials (id serial PRIMARY KEY, v text);
         CREATE TABLE idents (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);
         INSERT INTO serials (v) SELECT 'r' || i FROM generate_series(1, 5) i;
         INSERT INTO idents (v) SELECT 'r' || i FROM generate_series(1, 5) i;
         DELETE FROM serials WHERE id > 3; DELETE FROM idents WHERE id > 3;",
    )
    .unwrap();
    common::all_ok(&d.pipe(&[("ferry-export", &[&src]), ("ferry-import", &[&dst, "--create"])], b""));
    d.run("ferry-validate", &[&src, &dst], b"").ok();

    // A counter set back behind ferry's back: validation fails and says what to run.
    let mut t = pg::connect(&dst);
    t.batch_execute("SELECT setval(pg_get_serial_sequence('public.serials', 'id'), 3)")
        .unwrap();
    let v = d.run("ferry-validate", &[&src, &dst], b"");
    v.expect_code(1);
    let behind = findings(&v, "counter_behind");
    assert_eq!(behind.len(), 1, "{}", v.stdout());
    assert_eq!(behind[0]["source"], 5);
    assert_eq!(behind[0]["target"], 3);
    let message = behind[0]["message"].as_str().unwrap();
    assert!(message.contains("would be given them again"), "{message}");
    let fix = message.split("move the counter on the target: ").nth(1).unwrap();
    t.batch_execute(fix).unwrap();
    d.run("ferry-validate", &[&src, &dst], b"").ok();

    // The application's next rows, through its own inserts, take new numbers.
    for table in ["serials", "idents"] {
        let id: i64 = t
            .query_one(
                &format!("INSERT INTO {table} (v) VALUES ('new') RETURNING id::bigint"),
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(id, 6, "{table}");
    }

    // Into SQLite, whose rowid tables number the next row after their largest: said, not failed.
    let lite = d.db("copy.db");
    common::all_ok(&d.pipe(
        &[
            ("ferry-export", &[&src]),
            ("ferry-transform", &["--dialect", "sqlite"]),
            ("ferry-import", &[&lite, "--create"]),
        ],
        b"",
    ));
    let v = d.run("ferry-validate", &[&src, &lite], b"");
    v.ok();
    let not_kept = findings(&v, "counter_not_kept");
    assert!(!not_kept.is_empty(), "{}", v.stdout());
    assert_eq!(not_kept[0]["severity"], "warning");
}

#[test]
fn an_autoincrement_counter_goes_through_a_rerun_and_a_cutover() {
    let d = Dir::new();
    let app = d.open("app.db");
    app.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE notes (id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL);
         INSERT INTO notes (body) VALUES ('a'), ('b'), ('c'), ('d');
         DELETE FROM notes WHERE id = 4;",
    )
    .unwrap();
    let src = d.db("app.db");
    let counter = |c: &rusqlite::Connection| -> i64 {
        c.query_row("SELECT seq FROM sqlite_sequence WHERE name = 'notes'", [], |r| r.get(0))
            .unwrap()
    };

    // SQLite into SQLite: a copy, then the app hands out and deletes more, then a fresh run into
    // the table that is there now.
    let lite = d.db("copy.db");
    let copy = |extra: &[&str]| {
        let mut import = vec![lite.as_str(), "--create"];
        import.extend(extra);
        common::all_ok(&d.pipe(&[("ferry-export", &[&src]), ("ferry-import", &import)], b""));
    };
    copy(&[]);
    assert_eq!(counter(&d.open("copy.db")), 4);
    app.execute_batch("INSERT INTO notes (body) VALUES ('e'), ('f'); DELETE FROM notes WHERE id > 4;")
        .unwrap();
    copy(&["--on-conflict", "overwrite", "--fresh"]);
    assert_eq!(counter(&d.open("copy.db")), 6);
    d.run("ferry-validate", &[&src, &lite], b"").ok();
    d.open("copy.db")
        .execute_batch("UPDATE sqlite_sequence SET seq = 3 WHERE name = 'notes'")
        .unwrap();
    let v = d.run("ferry-validate", &[&src, &lite], b"");
    v.expect_code(1);
    assert_eq!(findings(&v, "counter_behind").len(), 1, "{}", v.stdout());

    // SQLite into PostgreSQL while the app runs, then the switch: the identity the target made
    // goes past what the app handed out after the copy, and the proof says so.
    let target = pg::cluster().database("counters_cutover");
    d.run("ferry", &["capture", "install", &src], b"").ok();
    common::all_ok(&d.pipe(
        &[("ferry-export", &[&src]), ("ferry-import", &[&target, "--create"])],
        b"",
    ));
    app.execute_batch("INSERT INTO notes (body) VALUES ('g'), ('h'), ('i'); DELETE FROM notes WHERE id > 7;")
        .unwrap();
    assert_eq!(counter(&app), 9);
    d.run("ferry", &["cutover", &src, &target, "--quiet-for", "0.2"], b"")
        .ok()
        .stderr_has("GO: ");
    let id: i64 = pg::connect(&target)
        .query_one("INSERT INTO notes (body) VALUES ('after') RETURNING id", &[])
        .unwrap()
        .get(0);
    assert_eq!(id, 10, "the first number the source never gave");
}

/// A table whose data holds the largest id a sequence can give (SQLite's rowid 2^63-1): the
/// import says the sequence stands at its end and that PostgreSQL, unlike SQLite, cannot number
/// another row after it; the application's insert indeed fails.
#[test]
fn a_sequence_the_data_moved_to_its_end_is_said() {
    let d = Dir::new();
    d.open("top.db")
        .execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a'), (9223372036854775807, 'top');")
        .unwrap();
    let dst = pg::cluster().database("counters_top");
    let runs = d.pipe(
        &[
            ("ferry-export", &[&d.db("top.db")]),
            ("ferry-import", &[&dst, "--create"]),
        ],
        b"",
    );
    common::all_ok(&runs);
    let said = runs[1].stderr();
    assert!(said.contains("the largest number its sequence"), "{said}");
    let e = pg::connect(&dst)
        .batch_execute("INSERT INTO t (v) VALUES ('next')")
        .unwrap_err();
    assert!(
        e.as_db_error().unwrap().message().contains("reached maximum value"),
        "{e}"
    );
}
