//! Rolling back an import into SQLite from its journal: the rows it inserted deleted, the rows
//! it overwrote put back, the tables it created dropped; byte for byte what was there before.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use crate::common;
use std::collections::BTreeMap;

use crate::common::{Dir, all_ok};

const TABLES: [(&str, &str); 7] = [
    ("users", "id"),
    ("saved_files", "id"),
    ("notifications", "id"),
    ("tags", "name"),
    ("file_tags", "file_id, tag"),
    ("app_settings", "key"),
    ("audit_log", "rowid"),
];

/// What changes in the source before run B: rows overwritten (renamed users, a setting) and
/// rows added (two users, a tag).
const RUN_B_CHANGES: &str = "UPDATE users SET name = 'renamed ' || id WHERE id <= 5;
     INSERT INTO users (id, email, password_hash) VALUES (1000, 'new1@example.com', 'x'), (1001, 'new2@example.com', 'y');
     INSERT INTO tags VALUES ('brand-new', 'pink');
     UPDATE app_settings SET value = 42 WHERE key = (SELECT min(key) FROM app_settings);";

/// The text of the backup stream a rollback saved next to the state file.
fn rollback_backup(d: &Dir) -> String {
    let backup = std::fs::read_dir(d.path(".ferry"))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("rollback-"))
        .expect("a backup stream")
        .path();
    std::fs::read_to_string(backup).unwrap()
}

/// Every table of a database, row by row, as exact bytes.
fn snapshot(d: &Dir, db: &str) -> BTreeMap<&'static str, Vec<Vec<u8>>> {
    let c = d.open(db);
    TABLES
        .iter()
        .filter(|(t, _)| {
            c.query_row("SELECT count(*) FROM sqlite_master WHERE name = ?1", [t], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap()
                > 0
        })
        .map(|(t, order)| (*t, common::dump(&c, t, order)))
        .collect()
}

/// A copy of the sample as `src.db`, imported whole into `copy.db` (creating it). The source.
fn first_run(d: &Dir) -> String {
    std::fs::copy(d.sample().strip_prefix("sqlite:").unwrap(), d.path("src.db")).unwrap();
    let src = d.db("src.db");
    all_ok(&d.pipe(
        &[
            ("ferry-export", &[src.as_str()][..]),
            ("ferry-import", &["sqlite:copy.db", "--create"]),
        ],
        b"",
    ));
    src
}

fn import(d: &Dir, src: &str, args: &[&str]) -> Vec<common::Run> {
    let mut ia = vec!["sqlite:copy.db"];
    ia.extend_from_slice(args);
    d.pipe(
        &[
            ("ferry-export", &[src, "--exclude", "audit_log"][..]),
            ("ferry-import", &ia[..]),
        ],
        b"",
    )
}

#[test]
fn an_import_that_overwrote_and_added_rows_is_undone_byte_for_byte() {
    let d = Dir::new();
    // Run A creates the copy (with the keyless audit log too).
    let src = first_run(&d);
    let before = snapshot(&d, "copy.db");

    // The source changes, and run B overwrites the copy with it and adds rows.
    d.open("src.db").execute_batch(RUN_B_CHANGES).unwrap();
    all_ok(&import(&d, &src, &["--on-conflict", "overwrite", "--fresh"]));
    assert_ne!(snapshot(&d, "copy.db"), before, "run B changed the copy");

    // A dry run says what it would do, and does nothing.
    let plan = d.run("ferry", &["rollback", "--last"], b"");
    plan.ok().stderr_has("(dry run)");
    let actions: Vec<String> = plan
        .lines()
        .iter()
        .map(|l| l["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        actions.iter().filter(|a| *a == "delete").count(),
        3,
        "two users and a tag were added"
    );
    assert!(
        actions.iter().filter(|a| *a == "restore").count() > 600,
        "every overwritten row"
    );
    assert!(!actions.iter().any(|a| a == "drop_table"), "run B created no table");
    assert_ne!(snapshot(&d, "copy.db"), before);

    let done = d.run("ferry", &["rollback", "--last", "--confirm"], b"");
    done.ok().stderr_has("deleted 3 rows");
    assert_eq!(snapshot(&d, "copy.db"), before, "the copy is as it was before run B");
    // What it changed was saved first: the rows run B left under the keys it touched.
    let text = rollback_backup(&d);
    assert!(
        text.contains("new1@example.com") && text.contains("renamed 3"),
        "{}",
        &text[..300.min(text.len())]
    );
    let audit = std::fs::read_to_string(d.path(".ferry/audit.ndjson")).unwrap();
    assert!(audit.lines().count() > 600);
    // Again: nothing left to do.
    let again = d.run("ferry", &["rollback", "--last", "--confirm"], b"");
    again.ok();
    assert!(again.lines().is_empty(), "{:?}", again.lines());

    // Run B forgotten by the copy's markers: the same import writes its rows again.
    let redo = import(&d, &src, &["--on-conflict", "overwrite", "--fresh"]);
    all_ok(&redo);
    d.run(
        "ferry-validate",
        &[&src, "sqlite:copy.db", "--exclude", "audit_log"],
        b"",
    )
    .ok();

    // Run A created the tables; it cannot be undone while the redo's rows sit on top of it.
    let runs = d.run("ferry", &["status", "--json"], b"");
    let first = runs.lines()[0]["run"]["run_id"].as_str().unwrap().to_owned();
    d.run("ferry", &["rollback", "--batch", &first, "--confirm"], b"")
        .expect_code(2)
        .stderr_has("roll those back first");
    assert_eq!(common::count(&d.open("copy.db"), "users"), 49);
    d.run("ferry", &["rollback", "--last", "--confirm"], b"").ok();
    d.run("ferry", &["rollback", "--batch", &first, "--confirm"], b"")
        .ok()
        .stderr_has("dropped 7 tables");
    let left: i64 = d
        .open("copy.db")
        .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_ferry%' ESCAPE '\\' AND name <> 'sqlite_sequence'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0, "the tables run A created are gone");
    let ferrys: Vec<String> = common::column(
        &d.open("copy.db"),
        "SELECT name FROM sqlite_master WHERE name LIKE '\\_ferry%' ESCAPE '\\'",
    );
    assert!(
        ferrys.is_empty(),
        "no commit markers left, so no table of them: {ferrys:?}"
    );
}

#[test]
fn an_import_killed_part_way_is_undone_to_exactly_what_was_there_before() {
    let d = Dir::new();
    d.open("src.db")
        .execute_batch(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER);
             WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 20000)
               INSERT INTO items SELECT i, 'item ' || i, i % 7 FROM s;",
        )
        .unwrap();
    let src = d.db("src.db");
    all_ok(&d.pipe(
        &[
            ("ferry-export", &[src.as_str()][..]),
            ("ferry-import", &["sqlite:copy.db", "--create"]),
        ],
        b"",
    ));
    let before = common::dump(&d.open("copy.db"), "items", "id");
    d.open("src.db")
        .execute_batch(
            "UPDATE items SET qty = qty + 100;
             WITH RECURSIVE s(i) AS (SELECT 20001 UNION ALL SELECT i + 1 FROM s WHERE i < 30000)
               INSERT INTO items SELECT i, 'new ' || i, 0 FROM s;",
        )
        .unwrap();
    // Killed after a few commits: part of the overwrite and none of the new rows landed, and
    // the journal holds entries written ahead of a commit that never came.
    d.pipe_killed_after(
        &[
            ("ferry-export", &[src.as_str(), "--state-every", "2000"][..]),
            (
                "ferry-import",
                &["sqlite:copy.db", "--on-conflict", "overwrite", "--fresh"][..],
            ),
        ],
        3,
    );
    let c = d.open("copy.db");
    let changed: i64 = c
        .query_row("SELECT count(*) FROM items WHERE qty >= 100", [], |r| r.get(0))
        .unwrap();
    assert!(changed > 0 && changed < 20_000, "the kill landed part way: {changed}");
    drop(c);
    d.run("ferry", &["rollback", "--last", "--confirm"], b"").ok();
    assert_eq!(common::dump(&d.open("copy.db"), "items", "id"), before);
}

#[test]
fn a_whole_migration_is_undone_newest_first_databases_and_objects_apart() {
    let d = Dir::new();
    let src = first_run(&d);
    d.open("src.db")
        .execute_batch("UPDATE users SET name = 'changed' WHERE id = 1")
        .unwrap();
    all_ok(&import(&d, &src, &["--on-conflict", "overwrite", "--fresh"]));
    let media = d.path("media");
    for i in 0..5 {
        common::write_file(&media, format!("f{i}.txt"), format!("file {i}").as_bytes());
    }
    all_ok(&common::put_tree(
        &d,
        &media,
        &format!("dir:{}", d.path("bucket").display()),
        &[],
    ));
    let objects = || {
        std::fs::read_dir(d.path("bucket"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_file())
            .count()
    };
    assert_eq!(objects(), 5);

    // Databases only: the overwrite undone, then the tables the first run created dropped.
    let plan = d.run("ferry", &["rollback", "--full", "--db-only"], b"");
    plan.ok();
    let actions: Vec<String> = plan
        .lines()
        .iter()
        .map(|l| l["action"].as_str().unwrap().to_owned())
        .collect();
    let first_drop = actions.iter().position(|a| a == "drop_table").unwrap();
    let last_restore = actions.iter().rposition(|a| a == "restore").unwrap();
    assert!(last_restore < first_drop, "newest run first");
    // The plan shown is the plan carried out: the later run is undone first, so the tables the
    // first one made are dropped, not refused as written by a later run.
    assert!(!actions.iter().any(|a| a == "refuse"), "{actions:?}");
    let done = d.run("ferry", &["rollback", "--full", "--db-only", "--confirm"], b"");
    let shown: Vec<String> = done
        .ok()
        .lines()
        .iter()
        .map(|l| l["action"].as_str().unwrap().to_owned())
        .collect();
    fn past(a: &str) -> &str {
        match a {
            "delete" => "deleted",
            "restore" => "restored",
            "drop_table" => "dropped",
            "empty_table" => "emptied",
            other => other,
        }
    }
    let planned: Vec<&str> = actions.iter().map(|a| past(a)).collect();
    assert_eq!(shown, planned, "the dry run and --confirm agree, action for action");
    let users: i64 = d
        .open("copy.db")
        .query_row("SELECT count(*) FROM sqlite_master WHERE name = 'users'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(users, 0, "the tables are gone");
    assert_eq!(objects(), 5, "objects untouched");
    // Then the objects.
    d.run("ferry", &["rollback", "--full", "--objects-only", "--confirm"], b"")
        .ok();
    assert_eq!(objects(), 0);
    d.run("ferry", &["rollback", "--full", "--db-only", "--objects-only"], b"")
        .expect_code(2);
}

/// Every row of every table ferry made in a PostgreSQL database, in its own text form (exact:
/// `row::text` spells each value out in full), table by table.
fn pg_snapshot(url: &str) -> BTreeMap<String, Vec<String>> {
    let mut c = common::pg::connect(url);
    let tables: Vec<String> = c
        .query(
            "SELECT relname::text FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' AND relname NOT LIKE '\\_ferry\\_%'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    tables
        .into_iter()
        .map(|t| {
            let rows = c
                .query(&format!("SELECT x::text FROM public.\"{t}\" x ORDER BY 1") as &str, &[])
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            (t, rows)
        })
        .collect()
}

fn pg_undo_tables(url: &str) -> i64 {
    common::pg::connect(url)
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname LIKE '\\_ferry\\_undo\\_%' AND relkind = 'r'",
            &[],
        )
        .unwrap()
        .get(0)
}

#[test]
fn an_import_into_postgres_is_undone_from_the_journal_it_kept_in_the_database() {
    let d = Dir::new();
    let url = common::pg::cluster().database("rollback");
    std::fs::copy(d.sample().strip_prefix("sqlite:").unwrap(), d.path("src.db")).unwrap();
    let src = d.db("src.db");
    // Run A creates the tables (rows PostgreSQL text cannot hold are rejected, as always).
    common::ok_but_rejects(&d.pipe(
        &[
            ("ferry-export", &[src.as_str()][..]),
            ("ferry-import", &[url.as_str(), "--create", "--reject-file", "a.ndjson"]),
        ],
        b"",
    ));
    let before = pg_snapshot(&url);
    assert!(before["users"].len() > 40);
    assert_eq!(
        pg_undo_tables(&url),
        0,
        "a run that created its tables journals nothing there"
    );

    d.open("src.db").execute_batch(RUN_B_CHANGES).unwrap();
    let run_b = || {
        d.pipe(
            &[
                ("ferry-export", &[src.as_str(), "--exclude", "audit_log"][..]),
                (
                    "ferry-import",
                    &[
                        url.as_str(),
                        "--on-conflict",
                        "overwrite",
                        "--fresh",
                        "--reject-file",
                        "b.ndjson",
                    ][..],
                ),
            ],
            b"",
        )
    };
    common::ok_but_rejects(&run_b());
    assert_ne!(pg_snapshot(&url), before, "run B changed the database");
    assert!(pg_undo_tables(&url) > 0, "run B journaled into the database");

    // The state file keeps the address without its password: PGPASSWORD, or --target.
    let plan = d.run("ferry", &["rollback", "--last", "--target", &url], b"");
    plan.ok().stderr_has("(dry run)");
    let actions: Vec<String> = plan
        .lines()
        .iter()
        .map(|l| l["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(actions.iter().filter(|a| *a == "delete").count(), 3, "{actions:?}");
    assert!(actions.iter().filter(|a| *a == "restore").count() > 300);
    assert_ne!(pg_snapshot(&url), before, "a dry run changes nothing");
    // Another database's address is refused.
    let other = common::pg::cluster().database("other");
    d.run("ferry", &["rollback", "--last", "--target", &other, "--confirm"], b"")
        .expect_code(2)
        .stderr_has("is not the database run");

    let done = d.run("ferry", &["rollback", "--last", "--target", &url, "--confirm"], b"");
    done.ok().stderr_has("deleted 3 rows");
    assert_eq!(pg_snapshot(&url), before, "the database is as it was before run B");
    assert_eq!(pg_undo_tables(&url), 0, "the undo tables went with the rollback");
    let text = rollback_backup(&d);
    assert!(text.contains("new1@example.com") && text.contains("renamed 3"));
    assert!(!text.contains(common::pg::PASSWORD), "no password in the backup");
    let audit = std::fs::read_to_string(d.path(".ferry/audit.ndjson")).unwrap();
    assert!(audit.lines().count() > 300);
    let again = d.run("ferry", &["rollback", "--last", "--target", &url, "--confirm"], b"");
    again.ok();
    assert!(again.lines().is_empty(), "{:?}", again.lines());

    // The markers forgot run B: it writes its rows again, and the result validates.
    common::ok_but_rejects(&run_b());
    d.run(
        "ferry-validate",
        &[&src, &url, "--table", "tags", "--table", "app_settings"],
        b"",
    )
    .ok();
    assert_eq!(pg_snapshot(&url)["users"].len(), before["users"].len() + 2);
    // Run A's tables go only after the redo is undone.
    let runs = d.run("ferry", &["status", "--json"], b"");
    let first = runs.lines()[0]["run"]["run_id"].as_str().unwrap().to_owned();
    d.run(
        "ferry",
        &["rollback", "--batch", &first, "--target", &url, "--confirm"],
        b"",
    )
    .expect_code(2)
    .stderr_has("roll those back first");
    d.run("ferry", &["rollback", "--last", "--target", &url, "--confirm"], b"")
        .ok();
    d.run(
        "ferry",
        &["rollback", "--batch", &first, "--target", &url, "--confirm"],
        b"",
    )
    .ok()
    .stderr_has("dropped 7 tables");
    assert!(pg_snapshot(&url).is_empty(), "the tables run A created are gone");
    assert_eq!(pg_undo_tables(&url), 0);
}

/// Into tables that were there and empty (the schema made beforehand, as in many production
/// migrations): run A fills them, run B overwrites part of `items` and is killed; undoing B puts
/// A's rows back exactly, and undoing A empties the tables again, the keyless one too, and
/// leaves them in place.
fn into_existing_empty_tables<S: PartialEq + std::fmt::Debug>(
    d: &Dir,
    target: &str,
    snapshot: impl Fn() -> S,
    counts: impl Fn() -> (i64, i64),
    rollback_args: &[&str],
) {
    let src = common::items_and_events(d, 20_000);
    all_ok(&d.pipe(
        &[("ferry-export", &[src.as_str()][..]), ("ferry-import", &[target][..])],
        b"",
    ));
    assert_eq!(counts(), (20_000, 5_000));
    let after_a = snapshot();
    d.open("src.db")
        .execute_batch(
            "UPDATE items SET amount = amount + 100, name = 'changed';
             WITH RECURSIVE s(i) AS (SELECT 20001 UNION ALL SELECT i + 1 FROM s WHERE i < 30000)
               INSERT INTO items SELECT i, 'new ' || i, 0, NULL FROM s;",
        )
        .unwrap();
    d.pipe_killed_after(
        &[
            (
                "ferry-export",
                &[src.as_str(), "--table", "items", "--state-every", "2000"][..],
            ),
            ("ferry-import", &[target, "--on-conflict", "overwrite", "--fresh"][..]),
        ],
        3,
    );
    assert_ne!(snapshot(), after_a, "the kill landed after some commits");
    // Run B never completed: it is what --failed-only undoes.
    let mut args = vec!["rollback", "--last", "--failed-only", "--confirm"];
    args.extend_from_slice(rollback_args);
    d.run("ferry", &args, b"").ok();
    assert_eq!(snapshot(), after_a, "run B undone");

    let runs = d.run("ferry", &["status", "--json"], b"");
    let first = runs.lines()[0]["run"]["run_id"].as_str().unwrap().to_owned();
    let mut args = vec!["rollback", "--batch", first.as_str()];
    args.extend_from_slice(rollback_args);
    // Run A completed: --failed-only leaves it.
    let mut kept = args.clone();
    kept.extend(["--failed-only", "--confirm"]);
    let keep = d.run("ferry", &kept, b"");
    keep.ok();
    assert_eq!(keep.lines()[0]["action"], "keep", "{:?}", keep.lines());
    assert_eq!(counts(), (20_000, 5_000));
    let plan = d.run("ferry", &args, b"");
    plan.ok().stderr_has("empty 2 tables");
    args.push("--confirm");
    d.run("ferry", &args, b"").ok().stderr_has("deleted 25000 rows");
    assert_eq!(counts(), (0, 0), "both tables empty again, and still there");
}

/// [`into_existing_empty_tables`] into the SQLite file `file` (reached at `target`), its tables
/// made first.
fn into_existing_empty_sqlite_tables(d: &Dir, file: &str, target: &str) {
    d.open(file)
        .execute_batch(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, amount REAL, data BLOB);
             CREATE TABLE events (at TEXT, n INTEGER);",
        )
        .unwrap();
    let count = |t: &str| common::count(&d.open(file), t);
    into_existing_empty_tables(
        d,
        target,
        || common::dump(&d.open(file), "items", "id"),
        || (count("items"), count("events")),
        &[],
    );
}

#[test]
fn an_import_into_existing_empty_sqlite_tables_is_undone_and_they_are_empty_again() {
    let d = Dir::new();
    into_existing_empty_sqlite_tables(&d, "copy.db", "sqlite:copy.db");
}

#[test]
fn an_import_into_existing_postgres_tables_killed_part_way_is_undone() {
    let d = Dir::new();
    let url = common::pg::cluster().database("rollback_existing");
    common::pg::connect(&url)
        .batch_execute(
            "CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, amount double precision, data bytea);
             CREATE TABLE events (at text, n bigint);",
        )
        .unwrap();
    let count = |t: &str| -> i64 {
        common::pg::connect(&url)
            .query_one(&format!("SELECT count(*) FROM {t}") as &str, &[])
            .unwrap()
            .get(0)
    };
    into_existing_empty_tables(
        &d,
        &url,
        || pg_snapshot(&url),
        || (count("items"), count("events")),
        &["--target", &url],
    );
    assert_eq!(pg_undo_tables(&url), 0);
}

#[test]
fn an_import_into_d1_is_undone_from_the_journal_it_kept_in_the_database() {
    let d = Dir::new();
    let _dbl = common::d1::double(&d, 60.0, 1200);
    std::fs::copy(d.sample().strip_prefix("sqlite:").unwrap(), d.path("src.db")).unwrap();
    let src = d.db("src.db");
    let import = |args: &[&str]| {
        let mut ia = vec!["d1://acct/app"];
        ia.extend_from_slice(args);
        // The sample's orphan notification: D1 enforces foreign keys and rejects it.
        common::ok_but_rejects(&d.pipe(
            &[
                ("ferry-export", &[src.as_str(), "--exclude", "audit_log"][..]),
                ("ferry-import", &ia[..]),
            ],
            b"",
        ));
    };
    // D1's file is the double's SQLite database: compared byte for byte.
    let snap = || snapshot(&d, "d1/app.sqlite3");
    import(&["--create"]);
    let before = snap();
    d.open("src.db")
        .execute_batch(
            "UPDATE users SET name = 'renamed ' || id WHERE id <= 5;
             INSERT INTO users (id, email, password_hash) VALUES (1000, 'new1@example.com', 'x');
             INSERT INTO tags VALUES ('brand-new', 'pink');",
        )
        .unwrap();
    import(&["--on-conflict", "overwrite", "--fresh"]);
    assert_ne!(snap(), before);
    let plan = d.run("ferry", &["rollback", "--last"], b"");
    plan.ok();
    let deletes = plan.lines().iter().filter(|l| l["action"] == "delete").count();
    assert_eq!(deletes, 2, "a user and a tag were added");
    d.run("ferry", &["rollback", "--last", "--confirm"], b"")
        .ok()
        .stderr_has("deleted 2 rows");
    assert_eq!(snap(), before, "D1 is as it was before the overwrite");
    let undo: i64 = d
        .open("d1/app.sqlite3")
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name LIKE '\\_ferry\\_undo%' ESCAPE '\\'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(undo, 0, "the undo tables went with the rollback");
    // Forgotten by the markers: the overwrite runs again.
    import(&["--on-conflict", "overwrite", "--fresh"]);
    assert_eq!(snap()["users"].len(), before["users"].len() + 1);
}

#[test]
fn an_import_into_existing_d1_tables_killed_part_way_is_undone() {
    let d = Dir::new();
    // D1's 30 s per request at a scale of 20 is 1.5 s: the undo of the killed run is one request
    // (one transaction), which a loaded machine can take more than 0.5 s over.
    let _dbl = common::d1::double(&d, 20.0, 1200);
    // The double keeps database `pre` in d1/pre.sqlite3.
    std::fs::create_dir_all(d.path("d1")).unwrap();
    into_existing_empty_sqlite_tables(&d, "d1/pre.sqlite3", "d1://acct/pre");
}

#[test]
fn without_the_journal_a_run_into_full_tables_is_left_as_it_is_and_says_so() {
    let d = Dir::new();
    let src = first_run(&d);
    d.open("src.db")
        .execute_batch("UPDATE users SET name = 'renamed' WHERE id = 1")
        .unwrap();
    let runs = import(
        &d,
        &src,
        &["--on-conflict", "overwrite", "--fresh", "--no-rollback-journal"],
    );
    all_ok(&runs);
    runs[1].stderr_has("--no-rollback-journal: a rollback of this run cannot undo its rows");
    let after = snapshot(&d, "copy.db");
    let plan = d.run("ferry", &["rollback", "--last"], b"");
    plan.ok();
    assert!(
        !plan
            .lines()
            .iter()
            .any(|l| l["action"] == "restore" || l["action"] == "delete"),
        "{:?}",
        plan.lines()
    );
    // The plan says which tables keep the run's rows, and the closing line says it too.
    assert!(
        plan.lines()
            .iter()
            .any(|l| l["action"] == "cannot_undo" && l["table"] == "users"),
        "{:?}",
        plan.lines()
    );
    plan.stderr_has("existing tables without a journal stay");
    d.run("ferry", &["rollback", "--last", "--confirm"], b"")
        .ok()
        .stderr_has("existing tables without a journal stay");
    assert_eq!(
        snapshot(&d, "copy.db"),
        after,
        "nothing was journaled, nothing is undone"
    );
}

#[test]
fn a_d1_table_too_wide_for_an_undo_table_is_still_written_and_the_import_says_it_cannot_be_undone() {
    let d = Dir::new();
    let _dbl = common::d1::double(&d, 60.0, 1200);
    std::fs::create_dir_all(d.path("d1")).unwrap();
    // 98 columns: D1 holds the table (100 at most), not an undo table with three more.
    let cols: Vec<String> = (1..98).map(|i| format!("c{i} INTEGER")).collect();
    let ddl = format!("CREATE TABLE wide (id INTEGER PRIMARY KEY, {})", cols.join(", "));
    let values = |id: i64, v: i64| {
        format!(
            "INSERT INTO wide VALUES ({id}{})",
            ", ".to_owned() + &vec![v.to_string(); 97].join(", ")
        )
    };
    d.open("d1/w.sqlite3")
        .execute_batch(&format!("{ddl}; {};", values(1, 0)))
        .unwrap();
    d.open("src.db")
        .execute_batch(&format!("{ddl}; {}; {};", values(1, 5), values(2, 5)))
        .unwrap();
    let runs = d.pipe(
        &[
            ("ferry-export", &[d.db("src.db").as_str()][..]),
            ("ferry-import", &["d1://acct/w", "--on-conflict", "overwrite"][..]),
        ],
        b"",
    );
    all_ok(&runs);
    runs[1].stderr_has("too wide for D1 to keep its rollback journal");
    let sum: i64 = d
        .open("d1/w.sqlite3")
        .query_row("SELECT sum(c97) FROM wide", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sum, 10, "both rows written, the first overwritten");
}

#[test]
fn a_commit_marker_of_rows_a_table_no_longer_holds_skips_nothing() {
    let d = Dir::new();
    let src = first_run(&d);
    let tags = common::count(&d.open("src.db"), "tags");
    assert!(tags > 0);
    // The stream now goes to a table of another name: a new table, where no earlier run wrote.
    let renamed = d.pipe(
        &[
            ("ferry-export", &[src.as_str()][..]),
            ("ferry-transform", &["--rename-stream", "main.tags=labels"]),
            ("ferry-import", &["sqlite:copy.db", "--create"]),
        ],
        b"",
    );
    all_ok(&renamed);
    renamed[2].stderr_has("importing the stream from its start");
    assert_eq!(common::count(&d.open("copy.db"), "labels"), tags);
    // A table dropped by hand since: the same pipeline loads it again rather than skipping it.
    d.open("copy.db")
        .execute_batch("PRAGMA foreign_keys = OFF; DROP TABLE tags")
        .unwrap();
    let again = d.pipe(
        &[
            ("ferry-export", &[src.as_str()][..]),
            ("ferry-import", &["sqlite:copy.db", "--create"]),
        ],
        b"",
    );
    all_ok(&again);
    again[1].stderr_has("importing the stream from its start");
    assert_eq!(common::count(&d.open("copy.db"), "tags"), tags);
}

#[test]
fn a_rollback_run_from_another_directory_undoes_the_database_the_import_wrote() {
    let d = Dir::new();
    first_run(&d);
    // A database of the same name in the directory the rollback runs from: not the import's.
    std::fs::create_dir(d.path("elsewhere")).unwrap();
    std::fs::copy(d.path("copy.db"), d.path("elsewhere/copy.db")).unwrap();
    let state = d.path(".ferry/state.db");
    let out = d
        .cmd(
            "ferry",
            &["rollback", "--last", "--confirm", "--state", &state.to_string_lossy()],
        )
        .current_dir(d.path("elsewhere"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tables = |db: &str| -> i64 {
        d.open(db)
            .query_row("SELECT count(*) FROM sqlite_master WHERE name = 'users'", [], |r| {
                r.get(0)
            })
            .unwrap()
    };
    assert_eq!(tables("copy.db"), 0, "the import's database is undone");
    assert_eq!(tables("elsewhere/copy.db"), 1, "the other one is untouched");
}

#[test]
fn one_stream_file_imported_into_two_targets_is_undone_in_each() {
    let d = Dir::new();
    std::fs::copy(d.sample().strip_prefix("sqlite:").unwrap(), d.path("src.db")).unwrap();
    let stream = d.run("ferry-export", &[&d.db("src.db")], b"").stdout();
    for db in ["a.db", "b.db"] {
        all_ok(&[d.run("ferry-import", &[&d.db(db), "--create"], stream.as_bytes())]);
    }
    let tables = |db: &str| -> i64 {
        d.open(db)
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_ferry%' ESCAPE '\\'
                   AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    let made = tables("a.db");
    assert!(made > 3 && tables("b.db") == made);
    // A row the application added since, in a table the run made: it goes with the table, and
    // the plan counts it among the rows the tables hold.
    d.open("a.db")
        .execute("INSERT INTO tags (name, color) VALUES ('added-later', 'red')", [])
        .unwrap();
    let tags = common::count(&d.open("a.db"), "tags");
    // One run (the stream's), two targets: the plan names each target's own tables.
    let plan = d.run("ferry", &["rollback", "--last"], b"");
    plan.ok().stderr_has("the tables dropped or emptied held ");
    let tags_plan = plan
        .lines()
        .into_iter()
        .find(|l| l["table"] == "tags" && l["target"].as_str().unwrap().ends_with("a.db"))
        .unwrap();
    assert_eq!(tags_plan["rows"].as_i64(), Some(tags), "{tags_plan}");
    for db in ["a.db", "b.db"] {
        let drops = plan
            .lines()
            .iter()
            .filter(|l| l["action"] == "drop_table" && l["target"].as_str().unwrap().ends_with(db))
            .count();
        assert_eq!(drops as i64, made, "{db}: {:?}", plan.lines());
    }
    d.run("ferry", &["rollback", "--last", "--confirm"], b"")
        .ok()
        .stderr_has(&format!("dropped {} tables", 2 * made));
    assert_eq!((tables("a.db"), tables("b.db")), (0, 0));
    // Each target's markers went with its rows: the same file loads into each again, once.
    for db in ["a.db", "b.db"] {
        all_ok(&[d.run("ferry-import", &[&d.db(db), "--create"], stream.as_bytes())]);
        d.run("ferry-validate", &[&d.db("src.db"), &d.db(db)], b"").ok();
    }
}

#[test]
fn a_rollback_the_target_refuses_says_so_in_the_audit_log_and_changes_nothing() {
    let d = Dir::new();
    let url = common::pg::cluster().database("rbaudit");
    all_ok(&d.pipe(
        &[
            ("ferry-export", &[d.sample().as_str(), "--table", "tags"][..]),
            ("ferry-import", &[url.as_str(), "--create"]),
        ],
        b"",
    ));
    // The application put a view on the table ferry made: PostgreSQL will not drop it.
    let mut c = common::pg::connect(&url);
    c.batch_execute("CREATE VIEW tag_names AS SELECT name FROM tags")
        .unwrap();
    d.run("ferry", &["rollback", "--last", "--confirm", "--target", &url], b"")
        .expect_code(2)
        .stderr_has("depend");
    let audit = std::fs::read_to_string(d.path(".ferry/audit.ndjson")).unwrap();
    let last: serde_json::Value = serde_json::from_str(audit.lines().last().unwrap()).unwrap();
    assert_eq!(last["action"], "failed", "{audit}");
    let tags: i64 = c.query_one("SELECT count(*) FROM tags", &[]).unwrap().get(0);
    assert!(tags > 0, "the table and its rows are still there");
}

#[test]
fn a_run_that_wrote_nothing_is_nothing_to_undo_and_says_so() {
    let d = Dir::new();
    std::fs::copy(d.sample().strip_prefix("sqlite:").unwrap(), d.path("src.db")).unwrap();
    // A selection of no rows: the run writes nothing into the table it finds there.
    all_ok(&d.pipe(
        &[
            ("ferry-export", &[d.db("src.db").as_str()][..]),
            ("ferry-import", &["sqlite:copy.db", "--create"]),
        ],
        b"",
    ));
    let none = d.pipe(
        &[
            (
                "ferry-export",
                &[d.db("src.db").as_str(), "--table", "tags", "--where", "tags=0"][..],
            ),
            ("ferry-import", &["sqlite:copy.db"]),
        ],
        b"",
    );
    all_ok(&none);
    let plan = d.run("ferry", &["rollback", "--last"], b"");
    plan.ok().stderr_has("nothing to undo");
    assert!(
        plan.lines().iter().any(|l| l["action"] == "nothing"),
        "{:?}",
        plan.lines()
    );
}

#[test]
fn a_rollback_leaves_alone_a_row_at_a_key_whose_insert_the_target_refused() {
    // Found by a new-user trial: a refused row's key was journaled as inserted, so the rollback
    // deleted whatever was later put at that key by someone else.
    let d = Dir::new();
    common::import_tags_refusing_red(&d);
    assert!(d.reject_text().contains("\"urgent\""), "the red tag was refused");
    // The application puts its own row at the refused key.
    d.open("copy.db")
        .execute("INSERT INTO tags VALUES ('urgent', 'orange')", [])
        .unwrap();
    let plan = d.run("ferry", &["rollback", "--last"], b"");
    plan.ok();
    let deletes: Vec<String> = plan
        .lines()
        .iter()
        .filter(|l| l["action"] == "delete")
        .map(|l| l["key"]["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(deletes.len(), 4, "the four tags the run put: {deletes:?}");
    assert!(!deletes.contains(&"urgent".to_owned()), "{deletes:?}");
    d.run("ferry", &["rollback", "--last", "--confirm"], b"").ok();
    let left: Vec<(String, String)> = {
        let c = d.open("copy.db");
        let mut st = c.prepare("SELECT name, color FROM tags ORDER BY name").unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(
        left,
        [
            ("there before".to_owned(), "green".to_owned()),
            ("urgent".to_owned(), "orange".to_owned())
        ]
    );
}

/// A plan read only in part (`2>&1 | head -1`): the rollback stops quietly, without a crash,
/// when its reader goes away.
#[test]
fn a_plan_whose_reader_goes_away_ends_without_a_crash() {
    let d = Dir::new();
    first_run(&d);
    let ferry = common::bin("ferry").display().to_string();
    let r = d.run(
        "/bin/bash",
        &[
            "-c",
            &format!("'{ferry}' rollback --last 2>&1 | head -1; exit ${{PIPESTATUS[0]}}"),
        ],
        b"",
    );
    assert_ne!(r.code(), Some(101), "a panic: {}", r.stderr());
    assert!(!r.stderr().contains("panicked"), "{}", r.stderr());
}
