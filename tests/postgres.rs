//! PostgreSQL as a target, against a real server (a private throwaway cluster, or FERRY_TEST_PG).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use crate::common;
use crate::common::proxy;

use crate::common::pg::{self, PASSWORD};
use crate::common::{Dir, all_ok};

fn count(c: &mut postgres::Client, table: &str) -> i64 {
    c.query_one(&format!("SELECT count(*) FROM {table}") as &str, &[])
        .unwrap()
        .get(0)
}

#[test]
fn sqlite_sample_into_postgres_with_types_keys_and_rejects() {
    let d = Dir::new();
    let url = pg::cluster().database("sample");
    let runs = d.pipe(
        &[
            ("ferry-export", &[&d.sample()]),
            ("ferry-import", &[&url, "--create", "--reject-file", "rejects.ndjson"]),
        ],
        b"",
    );
    common::ok_but_rejects(&runs);
    assert!(
        !runs[1].stderr().contains(PASSWORD),
        "the password never reaches the log:{:?}",
        runs[1]
    );
    let mut c = pg::connect(&url);
    // Types chosen to hold every value exactly.
    let types: Vec<(String, String)> = c
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns WHERE table_name = 'users' ORDER BY ordinal_position",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let t = |n: &str| {
        types
            .iter()
            .find(|(c, _)| c == n)
            .map(|(_, t)| t.as_str())
            .unwrap_or("?")
    };
    assert_eq!(t("id"), "bigint");
    assert_eq!(t("is_active"), "boolean");
    assert_eq!(t("created_at"), "timestamp without time zone");
    assert_eq!(t("avatar"), "bytea");
    assert_eq!(t("balance"), "jsonb", "a column of mixed kinds");
    // Rows PostgreSQL text cannot hold (a NUL byte, bytes that are not UTF-8) are rejected, with why.
    assert_eq!(count(&mut c, "public.users"), 45);
    let rejects = std::fs::read_to_string(d.path("rejects.ndjson")).unwrap();
    assert!(
        rejects.contains("NUL byte") && rejects.contains("not valid UTF-8"),
        "{rejects}"
    );
    assert_eq!(count(&mut c, "public.notifications"), 307);
    assert_eq!(count(&mut c, "public.audit_log"), 11);
    // Keys and indexes after the data; the identity continues after the largest id.
    let pk: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'public.users'::regclass AND contype = 'p'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(pk, 1);
    let next: i64 = c
        .query_one(
            "SELECT nextval(pg_get_serial_sequence('public.saved_files', 'id'))",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(next, 501, "AUTOINCREMENT's sequence (500) carries over");
    // The foreign key to the missing user (as in the source) stays NOT VALID, the others validated.
    let fks: Vec<(String, bool)> = c
        .query(
            "SELECT conname::text, convalidated FROM pg_constraint WHERE contype = 'f' ORDER BY conname",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(
        fks.iter().any(|(n, v)| n.starts_with("notifications_user_id") && !v),
        "{fks:?}"
    );
    assert!(fks.iter().any(|(n, v)| n.starts_with("file_tags_tag") && *v), "{fks:?}");
    // Values exactly: 64-bit extremes, -0.0, infinities, dynamic values through jsonb.
    let edge: (f64, f64) = c
        .query_one("SELECT (SELECT score FROM notifications WHERE id = 1001), (SELECT score FROM notifications WHERE id = 1003)", &[])
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(edge, (1e308, f64::INFINITY));
    let max_id: i64 = c.query_one("SELECT max(id) FROM users", &[]).unwrap().get(0);
    assert_eq!(max_id, i64::MAX);

    // And back into SQLite as the README says, partial index included: its condition comes
    // back from PostgreSQL with casts (`'migrated'::text`) that SQLite cannot read.
    let back = d.pipe(
        &[
            ("ferry-export", &[&url]),
            ("ferry-transform", &["--dialect", "sqlite"]),
            ("ferry-import", &[&d.db("back.db"), "--create"]),
        ],
        b"",
    );
    all_ok(&back);
    d.run("ferry-validate", &[&url, &d.db("back.db")], b"").ok();
    let partial: String = d
        .open("back.db")
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE name = 'saved_files_pending'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(partial.contains("WHERE (status <> 'migrated')"), "{partial}");

    // The same pipeline again: nothing to do.
    let again = d.pipe(
        &[("ferry-export", &[&d.sample()]), ("ferry-import", &[&url, "--create"])],
        b"",
    );
    all_ok(&again);
    assert_eq!(common::written_and_already(&again[1]), (0, 680));
}

#[test]
fn a_wrong_password_or_no_server_is_a_clear_error() {
    let d = Dir::new();
    let c = pg::cluster();
    let stream = d
        .run("ferry-export", &[&d.sample(), "--table", "tags"], b"")
        .output
        .stdout
        .clone();
    let wrong = format!("postgres://{}:not-the-password@{}:{}/postgres", c.user, c.host, c.port);
    let r = d.run("ferry-import", &[&wrong, "--create"], &stream);
    r.expect_code(2).stderr_has("password authentication failed");
    assert!(!r.stderr().contains("not-the-password"), "{r:?}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nobody = format!("postgres://postgres:{PASSWORD}@127.0.0.1:{port}/postgres");
    let mut cmd = d.cmd("ferry-import", &[&nobody, "--create"]);
    cmd.env("FERRY_RETRIES", "1");
    let out = cmd.stdin(std::process::Stdio::null()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot connect") && stderr.contains("still failing after 2 attempts"),
        "{stderr}"
    );
    assert!(!stderr.contains(PASSWORD), "{stderr}");
}

/// A login role `name` (password `name-pw`) that may connect to `c`'s database, after `grants`
/// run there; its address.
fn login_role(c: &mut postgres::Client, name: &str, grants: &str) -> String {
    let db: String = c.query_one("SELECT current_database()::text", &[]).unwrap().get(0);
    c.batch_execute(&format!(
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{name}') THEN CREATE ROLE {name}; END IF; END $$;
         ALTER ROLE {name} LOGIN PASSWORD '{name}-pw'; GRANT CONNECT ON DATABASE \"{db}\" TO {name}; {grants};"
    ))
    .unwrap();
    let cl = pg::cluster();
    format!("postgres://{name}:{name}-pw@{}:{}/{db}", cl.host, cl.port)
}

#[test]
fn missing_tables_permissions_and_values_that_do_not_fit() {
    let d = Dir::new();
    let url = pg::cluster().database("errors");
    let stream = d
        .run("ferry-export", &[&d.sample(), "--table", "tags"], b"")
        .output
        .stdout
        .clone();
    d.run("ferry-import", &[&url], &stream)
        .expect_code(2)
        .stderr_has("there is no table \"public\".\"tags\"")
        .stderr_has("--create");

    // A role that may connect but not create tables.
    let mut c = pg::connect(&url);
    let reader = login_role(&mut c, "ferry_reader", "REVOKE CREATE ON SCHEMA public FROM PUBLIC");
    d.run("ferry-import", &[&reader, "--create"], &stream)
        .expect_code(2)
        .stderr_has("permission denied for schema public");

    // Declared NUMERIC(5,2): PostgreSQL would round 1.234, so the row is rejected instead.
    let s = d.open("money.db");
    s.execute_batch("CREATE TABLE prices (id INTEGER PRIMARY KEY, amount NUMERIC(5,2)); INSERT INTO prices VALUES (1, 1.25), (2, 1.234), (3, 99999.5);").unwrap();
    drop(s);
    let runs = d.pipe(
        &[
            ("ferry-export", &[&d.db("money.db")]),
            ("ferry-import", &[&url, "--create", "--reject-file", "r.ndjson"]),
        ],
        b"",
    );
    common::ok_but_rejects(&runs);
    let rejects = std::fs::read_to_string(d.path("r.ndjson")).unwrap();
    assert!(
        rejects.contains("numeric(5,2) would round it") && rejects.contains("too large for numeric(5,2)"),
        "{rejects}"
    );
    let amount: String = c.query_one("SELECT amount::text FROM prices", &[]).unwrap().get(0);
    assert_eq!(amount, "1.25");
}

#[test]
fn a_table_the_role_may_not_write_ends_the_run_with_the_servers_reason_and_no_rejects() {
    let d = Dir::new();
    let url = pg::cluster().database("denied");
    let mut c = pg::connect(&url);
    // The role may create ferry's own tables and read `tags`, but not write it.
    let writer = login_role(
        &mut c,
        "ferry_writer",
        "GRANT USAGE, CREATE ON SCHEMA public TO ferry_writer;
         CREATE TABLE tags (name text PRIMARY KEY, color text NOT NULL); GRANT SELECT ON tags TO ferry_writer",
    );
    let stream = d
        .run("ferry-export", &[&d.sample(), "--table", "tags"], b"")
        .output
        .stdout
        .clone();
    let refused = |args: &[&str]| {
        let mut all = vec![writer.as_str(), "--reject-file", "r.ndjson"];
        all.extend_from_slice(args);
        let run = d.run("ferry-import", &all, &stream);
        run.expect_code(2)
            .stderr_has("permission denied for table tags")
            .stderr_has("no row was rejected")
            .stderr_has("re-run the same command");
        // One refusal, said once: not taken for a lost connection and retried, nor split per row.
        let stderr = run.stderr();
        assert!(
            !stderr.contains("reconnect") && !stderr.contains("kept failing"),
            "{stderr}"
        );
        let rejects = std::fs::read_to_string(d.path("r.ndjson")).unwrap_or_default();
        assert_eq!(rejects.lines().count(), 0, "{rejects}");
    };
    // Into the empty table: one COPY straight into it, refused before it reads a row.
    refused(&[]);
    assert_eq!(count(&mut c, "tags"), 0);
    // Into a table with rows, overwriting: the COPY into the session's staging table goes in,
    // and the INSERT from it is refused.
    c.batch_execute("INSERT INTO tags VALUES ('urgent', 'old')").unwrap();
    refused(&["--on-conflict", "overwrite"]);
    let color: String = c.query_one("SELECT color FROM tags", &[]).unwrap().get(0);
    assert_eq!((count(&mut c, "tags"), color.as_str()), (1, "old"));

    // Once the privilege is granted, the same command does the work.
    c.batch_execute("GRANT INSERT, UPDATE ON tags TO ferry_writer").unwrap();
    d.run("ferry-import", &[&writer, "--on-conflict", "overwrite"], &stream)
        .ok();
    let color: String = c
        .query_one("SELECT color FROM tags WHERE name = 'urgent'", &[])
        .unwrap()
        .get(0);
    assert_eq!((count(&mut c, "tags"), color.as_str()), (5, "red"));
}

/// Rows of build_source's two tables in the target (0 for a table not created yet).
fn rows_so_far(c: &mut postgres::Client) -> i64 {
    ["items", "events"]
        .iter()
        .map(|t| {
            c.query_one(&format!("SELECT count(*) FROM {t}") as &str, &[])
                .map(|r| r.get::<_, i64>(0))
                .unwrap_or(0)
        })
        .sum()
}

#[test]
fn a_killed_import_rerun_finishes_exactly_once() {
    let d = Dir::new();
    let src = common::items_and_events(&d, 40_000);
    let url = pg::cluster().database("kill");
    for delay_ms in [150u64, 450] {
        let mut export = d
            .cmd("ferry-export", &[&src, "--state-every", "1000", "-q"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut import = d
            .cmd("ferry-import", &[&url, "--create", "-q"])
            .stdin(std::process::Stdio::from(export.stdout.take().unwrap()))
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = import.kill();
        let _ = import.wait();
        let _ = export.wait();
    }
    let mut c = pg::connect(&url);
    let before = rows_so_far(&mut c);
    let runs = d.pipe(
        &[
            ("ferry-export", &[&src, "--state-every", "1000"]),
            ("ferry-import", &[&url, "--create"]),
        ],
        b"",
    );
    all_ok(&runs);
    let (written, already) = common::written_and_already(&runs[1]);
    assert_eq!(already as i64, before, "{:?}", runs[1]);
    assert_eq!(written as i64 + before, 50_000);
    assert_eq!(count(&mut c, "items"), 40_000);
    assert_eq!(count(&mut c, "events"), 10_000, "the keyless table has no duplicate");
    let pk: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'items'::regclass AND contype = 'p'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(pk, 1);
    // The re-runs went on with the load the first run began (its key was still to be built):
    // straight COPY, not through staging and an undo journal that scans the keyless table for
    // every chunk; undoing the runs drops the tables, as undoing the first alone would.
    let undo: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE '\\_ferry\\_undo\\_%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(undo, 0);
    let plan = d.run("ferry", &["rollback", "--full", "--target", &url], b"");
    let drops = plan.ok().lines().iter().filter(|l| l["action"] == "drop_table").count();
    assert!(drops >= 2, "{plan:?}");
    d.run("ferry", &["rollback", "--full", "--confirm", "--target", &url], b"")
        .ok();
    let left: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename IN ('items', 'events')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

#[test]
fn a_dropped_connection_is_retried_and_replayed() {
    let d = Dir::new();
    let src = common::items_and_events(&d, 60_000);
    let url = pg::cluster().database("drop");
    let mut export = d
        .cmd("ferry-export", &[&src, "--state-every", "1000", "-q"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let import = d
        .cmd("ferry-import", &[&url, "--create"])
        .stdin(std::process::Stdio::from(export.stdout.take().unwrap()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Cut the importer's connection in the middle of a COPY.
    let mut admin = pg::cluster().admin();
    // Only this test's importer: other tests run imports on the same cluster at the same time.
    let db = url.rsplit('/').next().unwrap().to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut cut = 0u64;
    // Three cuts, each in the middle of a COPY, so a replay itself gets cut too at times.
    let mut import = import;
    while cut < 3 && std::time::Instant::now() < deadline && import.try_wait().unwrap().is_none() {
        cut += admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE application_name LIKE 'ferry-import %' AND state = 'active' AND query LIKE 'COPY %'
                   AND datname = $1",
                &[&db],
            )
            .map(|r| r.get::<_, i64>(0) as u64)
            .unwrap_or(0);
        std::thread::sleep(std::time::Duration::from_millis(if cut > 0 { 40 } else { 2 }));
    }
    let out = import.wait_with_output().unwrap();
    let _ = export.wait();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(cut > 0, "the connection was never seen busy");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("reconnecting and replaying"), "{stderr}");
    let mut c = pg::connect(&url);
    assert_eq!(count(&mut c, "items"), 60_000);
    assert_eq!(count(&mut c, "events"), 15_000);
}

#[test]
fn upserts_into_a_table_that_has_rows_go_through_staging() {
    let d = Dir::new();
    let url = pg::cluster().database("upsert");
    let stream = d
        .run("ferry-export", &[&d.sample(), "--table", "tags"], b"")
        .output
        .stdout
        .clone();
    d.run("ferry-import", &[&url, "--create"], &stream).ok();
    let mut c = pg::connect(&url);
    c.batch_execute("UPDATE tags SET color = 'changed' WHERE name = 'urgent'; DELETE FROM tags WHERE name = 'z'")
        .unwrap();
    let color = |c: &mut postgres::Client| -> String {
        c.query_one("SELECT color FROM tags WHERE name = 'urgent'", &[])
            .unwrap()
            .get(0)
    };

    let r = d.run("ferry-import", &[&url, "--fresh", "--on-conflict", "skip"], &stream);
    r.ok();
    assert_eq!(color(&mut c), "changed", "skip keeps what was there");
    assert_eq!(count(&mut c, "tags"), 5, "and adds what was missing");
    assert_eq!(common::written_and_already(&r), (1, 0));

    d.run(
        "ferry-import",
        &[&url, "--fresh", "--on-conflict", "overwrite"],
        &stream,
    )
    .ok();
    assert_eq!(color(&mut c), "red", "overwrite replaces it");

    let r = d.run("ferry-import", &[&url, "--fresh"], &stream);
    r.expect_code(2)
        .stderr_has("is already in table \"public\".\"tags\" (--on-conflict fail)");
}

#[test]
fn a_dry_run_plans_against_postgres_and_changes_nothing() {
    let d = Dir::new();
    let url = pg::cluster().database("dry");
    let stream = d
        .run("ferry-export", &[&d.sample(), "--table", "users"], b"")
        .output
        .stdout
        .clone();
    let plan = d.run("ferry-import", &[&url, "--create", "--dry-run"], &stream);
    plan.ok();
    let lines = plan.lines();
    assert!(
        lines.iter().any(|l| l["action"] == "create_table"
            && l["sql"].as_str().unwrap().contains("GENERATED BY DEFAULT AS IDENTITY")),
        "{plan:?}"
    );
    assert!(
        lines.iter().any(|l| l["action"] == "load" && l["insert"] == 47),
        "{plan:?}"
    );
    let mut c = pg::connect(&url);
    let tables: i64 = c
        .query_one("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", &[])
        .unwrap()
        .get(0);
    assert_eq!(tables, 0);
}

#[test]
fn a_singer_stream_gets_its_keys_built_at_end_of_input_and_a_second_load_upserts_by_key() {
    let d = Dir::new();
    let url = pg::cluster().database("singer");
    // A Singer tap's output: no BEGIN, no STREAM_END, no END; a unique column besides the key.
    let stream = [
        r#"{"type":"SCHEMA","stream":"users","schema":{"properties":{"id":{"type":"integer"},"email":{"type":["string","null"]}}},"key_properties":["id"],"unique":[{"columns":["email"]}]}"#,
        r#"{"type":"RECORD","stream":"users","record":{"id":1,"email":"a@x"}}"#,
        r#"{"type":"RECORD","stream":"users","record":{"id":2,"email":"b@x"}}"#,
        r#"{"type":"STATE","value":{"bookmarks":{"users":{"replication_key_value":2}}}}"#,
    ]
    .join("\n");
    d.run("ferry-import", &[&url, "--create"], stream.as_bytes()).ok();
    let mut c = pg::connect(&url);
    let constraints: Vec<String> = c
        .query(
            "SELECT contype::text FROM pg_constraint WHERE conrelid = 'public.users'::regclass ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(constraints, ["p", "u"], "the key and the unique constraint are there");
    // The same stream again, changed: Singer targets upsert by key, so ferry does too by
    // default for a Singer stream (a full-table tap run again is not an error), and prints
    // with --singer what a Singer target prints: the STATE's value alone.
    c.execute("UPDATE users SET email = 'changed@x' WHERE id = 1", &[])
        .unwrap();
    let again = d.run("ferry-import", &[&url, "--singer"], stream.as_bytes());
    again.ok();
    assert_eq!(
        again.stdout().trim(),
        r#"{"bookmarks":{"users":{"replication_key_value":2}}}"#
    );
    assert_eq!(count(&mut c, "users"), 2);
    let email: String = c.query_one("SELECT email FROM users WHERE id = 1", &[]).unwrap().get(0);
    assert_eq!(email, "a@x", "the row was overwritten with the stream's");
    // Asked to stop at a key that is there, it does.
    d.run("ferry-import", &[&url, "--on-conflict", "fail"], stream.as_bytes())
        .expect_code(2)
        .stderr_has("is already in table");
    d.run("ferry-import", &[&url, "--on-conflict", "skip"], stream.as_bytes())
        .ok();
    assert_eq!(count(&mut c, "users"), 2);
}

#[test]
fn the_savedfile_recipe_into_postgres_lands_every_result_and_updates_the_applications_table() {
    let d = Dir::new();
    let url = pg::cluster().database("savedfile");
    let media = d.path("media");
    d.sample();
    let n = ferry::sample::create_media(&d.path("sample.db"), &media).unwrap();
    let mut c = pg::connect(&url);
    // The application's table, made by its framework: one row per file, not migrated yet.
    c.batch_execute(
        "CREATE TABLE savedfile (id bigserial PRIMARY KEY, file text NOT NULL, r2_key text,
           migration_status text, checksum text, migrated_at timestamptz, migration_batch text)",
    )
    .unwrap();
    for e in walkdir::WalkDir::new(&media).into_iter().map(Result::unwrap) {
        if e.file_type().is_file() {
            let path = e.path().strip_prefix(&media).unwrap().to_string_lossy().into_owned();
            c.execute("INSERT INTO savedfile (file) VALUES ($1)", &[&path]).unwrap();
        }
    }
    // One file's key is already taken in the bucket by other bytes: a conflict.
    let taken = walkdir::WalkDir::new(&media)
        .into_iter()
        .map(Result::unwrap)
        .find(|e| e.file_type().is_file())
        .unwrap();
    let taken = taken
        .path()
        .strip_prefix(&media)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    common::write_file(&d.path("bucket"), &taken, b"someone else's bytes");
    c.execute(
        "UPDATE savedfile SET checksum = 'the app''s own' WHERE file = $1",
        &[&taken],
    )
    .unwrap();
    // The README's recipe, with a directory as the bucket.
    let runs = d.pipe(
        &[
            ("ferry-export", &[&format!("dir:{}", media.display())]),
            ("ferry-import", &[&format!("dir:{}", d.path("bucket").display())]),
            ("ferry-transform", &["--rename-stream", "uploads=ferry_uploads"]),
            ("ferry-import", &[&url, "--create", "--on-conflict", "overwrite"]),
        ],
        b"",
    );
    common::ok_but_rejects(&runs[..2]);
    all_ok(&runs[2..]);
    let recipe = "UPDATE savedfile s SET migration_status = u.status,
        r2_key = CASE WHEN u.stored THEN u.key ELSE s.r2_key END,
        checksum = CASE WHEN u.stored THEN u.sha256 ELSE s.checksum END,
        migrated_at = CASE WHEN u.stored THEN u.migrated_at ELSE s.migrated_at END,
        migration_batch = CASE WHEN u.stored THEN u.batch ELSE s.migration_batch END
      FROM (SELECT *, status IN ('uploaded', 'present', 'overwritten') AS stored FROM ferry_uploads) u
      WHERE u.path = s.file";
    assert_eq!(c.execute(recipe, &[]).unwrap() as usize, n);
    let count = |c: &mut postgres::Client, cond: &str| -> usize {
        let n: i64 = c
            .query_one(&format!("SELECT count(*) FROM savedfile WHERE {cond}") as &str, &[])
            .unwrap()
            .get(0);
        n as usize
    };
    // The instant each landed, to the microsecond, within the run.
    assert_eq!(
        count(
            &mut c,
            "migration_status = 'uploaded' AND r2_key = file AND migrated_at > now() - interval '10 minutes' \
             AND migrated_at <= now() AND checksum ~ '^[0-9a-f]{64}$'"
        ),
        n - 1
    );
    // The conflict keeps what the application had: no key, its own checksum.
    assert_eq!(
        count(
            &mut c,
            &format!(
                "file = '{}' AND migration_status = 'conflict' AND r2_key IS NULL AND checksum = 'the app''s own' \
                 AND migrated_at IS NULL",
                taken.replace('\'', "''")
            )
        ),
        1
    );
    // Overwriting it, as the README says: the re-run puts only that file.
    let again = d.pipe(
        &[
            ("ferry-export", &[&format!("dir:{}", media.display())]),
            (
                "ferry-import",
                &[
                    &format!("dir:{}", d.path("bucket").display()),
                    "--on-conflict",
                    "overwrite",
                ],
            ),
            ("ferry-transform", &["--rename-stream", "uploads=ferry_uploads"]),
            ("ferry-import", &[&url, "--create", "--on-conflict", "overwrite"]),
        ],
        b"",
    );
    all_ok(&again);
    again[1].stderr_has(&format!("1 uploaded, 0 present, {} already done", n - 1));
    c.execute(recipe, &[]).unwrap();
    assert_eq!(
        count(
            &mut c,
            "migration_status IN ('uploaded', 'overwritten') AND r2_key = file"
        ),
        n
    );
}

#[test]
fn fresh_into_a_table_an_unfinished_run_is_still_loading_is_refused_not_doubled() {
    let d = Dir::new();
    let url = pg::cluster().database("freshcont");
    d.items_db(300_000);
    // A first run killed once it committed part of the table (its key still to be built).
    d.pipe_killed_after(
        &[
            ("ferry-export", &["sqlite:big.db", "--state-every", "1000"][..]),
            ("ferry-import", &[url.as_str(), "--create"][..]),
        ],
        2,
    );
    let mut c = pg::connect(&url);
    let before = count(&mut c, "items");
    assert!(before > 0 && before < 300000, "{before}");
    let fresh = d.pipe(
        &[
            ("ferry-export", &["sqlite:big.db"][..]),
            (
                "ferry-import",
                &[url.as_str(), "--create", "--fresh", "--on-conflict", "overwrite"][..],
            ),
        ],
        b"",
    );
    fresh[1]
        .expect_code(2)
        .stderr_has("--fresh would load those rows a second time");
    assert_eq!(count(&mut c, "items"), before, "nothing written");
    // As it says: the same command without --fresh finishes the load, once.
    all_ok(&d.pipe(
        &[
            ("ferry-export", &["sqlite:big.db"][..]),
            ("ferry-import", &[url.as_str(), "--create"][..]),
        ],
        b"",
    ));
    d.run("ferry-validate", &["sqlite:big.db", &url], b"").ok();
}

#[test]
fn the_holder_named_is_the_one_in_the_same_database_not_another_databases() {
    let d = Dir::new();
    // Sessions holding ferry's lock on a table of the same name: in three other databases of the
    // cluster first, then in the target database.
    let hold = |url: &str, who: &str| {
        let mut c = pg::connect(url);
        c.batch_execute(&format!(
            "SET application_name = '{who}';
             SELECT pg_advisory_lock(hashtext('ferry'), hashtext('\"public\".\"items\"'))"
        ))
        .unwrap();
        c
    };
    let _others: Vec<_> = (0..3)
        .map(|i| hold(&pg::cluster().database("lockother"), &format!("elsewhere {i}")))
        .collect();
    let url = pg::cluster().database("lockhere");
    let _here = hold(&url, "the one here");
    let stream = [
        r#"{"type":"SCHEMA","stream":"items","schema":{"properties":{"id":{"type":"integer"}}},"key_properties":["id"]}"#,
        r#"{"type":"RECORD","stream":"items","record":{"id":1}}"#,
    ]
    .join("\n");
    d.run("ferry-import", &[&url, "--create"], stream.as_bytes())
        .expect_code(2)
        .stderr_has("another ferry process is writing table \"public\".\"items\" of ")
        .stderr_has("the one here (server pid");
}

#[test]
fn two_imports_into_one_table_and_a_rollback_meanwhile_are_refused_naming_who_writes_it() {
    use std::io::Write as _;
    let d = Dir::new();
    let url = pg::cluster().database("locks");
    d.items_db(20_000);
    let text = d
        .run("ferry-export", &["sqlite:big.db", "--state-every", "1000"], b"")
        .stdout();
    let lines: Vec<&str> = text.lines().collect();
    // The first import takes half the stream, then waits for more (a slow producer).
    let mut first = d
        .cmd("ferry-import", &[&url, "--create"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = first.stdin.take().unwrap();
    let half = lines.len() / 2;
    input.write_all((lines[..half].join("\n") + "\n").as_bytes()).unwrap();
    input.flush().unwrap();
    // A STATE after the 3 s the importer gathers STATEs over: a commit.
    std::thread::sleep(std::time::Duration::from_millis(3200));
    let state = half
        + lines[half..]
            .iter()
            .position(|l| l.contains(r#""type":"STATE""#))
            .unwrap();
    input
        .write_all((lines[half..=state].join("\n") + "\n").as_bytes())
        .unwrap();
    input.flush().unwrap();
    let mut c = pg::connect(&url);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    // Its first commit made the table (and journaled it in the state file).
    while !c
        .query_one("SELECT to_regclass('public.items') IS NOT NULL", &[])
        .unwrap()
        .get::<_, bool>(0)
    {
        if std::time::Instant::now() > deadline || first.try_wait().unwrap().is_some() {
            drop(input);
            let out = first.wait_with_output().unwrap();
            panic!(
                "the first import never committed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let me = format!("ferry-import pid {} on ", first.id());
    d.run("ferry-import", &[&url, "--create"], text.as_bytes())
        .expect_code(2)
        .stderr_has("another ferry process is writing table \"public\".\"items\" of ")
        .stderr_has(&me);
    d.run("ferry", &["rollback", "--last", "--confirm", "--target", &url], b"")
        .expect_code(2)
        .stderr_has(&me);
    drop(input);
    assert_eq!(first.wait().unwrap().code(), Some(4));
    // The lock went with the first import's session: the same command now finishes the job.
    d.run("ferry-import", &[&url, "--create"], text.as_bytes()).ok();
    assert_eq!(count(&mut c, "items"), 20000);
}

/// The sample without the two users PostgreSQL text cannot hold (and what refers to them).
fn representable_sample(d: &Dir) -> String {
    d.sample();
    std::fs::copy(d.path("sample.db"), d.path("pgsafe.db")).unwrap();
    d.open("pgsafe.db")
        .execute_batch(
            "PRAGMA foreign_keys = OFF;
             DELETE FROM users WHERE id IN (41, 42);
             DELETE FROM file_tags WHERE file_id IN (SELECT id FROM saved_files WHERE user_id IN (41, 42));
             DELETE FROM saved_files WHERE user_id IN (41, 42);
             DELETE FROM notifications WHERE user_id IN (41, 42);",
        )
        .unwrap();
    d.db("pgsafe.db")
}

#[test]
fn validate_proves_sqlite_and_postgres_equal_and_names_each_difference() {
    let d = Dir::new();
    let src = representable_sample(&d);
    let url = pg::cluster().database("validate");
    let runs = d.pipe(&[("ferry-export", &[&src]), ("ferry-import", &[&url, "--create"])], b"");
    all_ok(&runs);
    let s = d.open("pgsafe.db");
    let rows: i64 = [
        "users",
        "saved_files",
        "notifications",
        "tags",
        "file_tags",
        "audit_log",
        "app_settings",
    ]
    .iter()
    .map(|t| common::count(&s, t))
    .sum();
    assert_eq!(
        common::written_and_already(&runs[1]),
        (rows as u64, 0),
        "no rejects:{:?}",
        runs[1]
    );
    let v = d.run("ferry-validate", &[&src, &url, "--report", "r.json"], b"");
    v.ok().stderr_has("result: EQUAL");
    assert!(!v.stdout().contains(PASSWORD) && !v.stderr().contains(PASSWORD));
    // The stream form too.
    all_ok(&d.pipe(&[("ferry-export", &[&src]), ("ferry-validate", &[&url])], b""));

    let mut c = pg::connect(&url);
    c.batch_execute(
        "UPDATE users SET name = 'Mallory' WHERE id = 3;
         UPDATE notifications SET score = 0.30000000000000004 WHERE id = 7;
         UPDATE app_settings SET value = '\"10485760\"' WHERE key = 'max_upload';
         DELETE FROM file_tags WHERE file_id = 4;
         ALTER TABLE tags DROP CONSTRAINT tags_pkey CASCADE;
         INSERT INTO tags VALUES ('urgent', 'red');
         ALTER TABLE saved_files DROP CONSTRAINT saved_files_user_id_fkey;
         UPDATE saved_files SET user_id = 424242 WHERE id = 10;",
    )
    .unwrap();
    let v = d.run("ferry-validate", &[&src, &url], b"");
    v.expect_code(1);
    let findings = v.lines();
    let has = |stream: &str, kind: &str, key: serde_json::Value| {
        findings
            .iter()
            .any(|f| f["stream"] == stream && f["kind"] == kind && (key.is_null() || f["key"] == key))
    };
    assert!(has("main.users", "changed", serde_json::json!({"id": 3})), "{v:?}");
    assert!(
        has("main.notifications", "changed", serde_json::json!({"id": 7})),
        "a float off by one ulp:{v:?}"
    );
    assert!(
        has("main.app_settings", "changed", serde_json::json!({"key": "max_upload"})),
        "text for an integer:{v:?}"
    );
    assert!(
        has(
            "main.file_tags",
            "missing",
            serde_json::json!({"file_id": 4, "tag": "Ärger"})
        ),
        "{v:?}"
    );
    assert!(
        has("main.tags", "duplicate", serde_json::json!({"name": "urgent"})),
        "{v:?}"
    );
    assert!(has("main.saved_files", "fk_orphans", serde_json::Value::Null), "{v:?}");
    assert!(
        has("main.saved_files", "changed", serde_json::json!({"id": 10})),
        "{v:?}"
    );
}

#[test]
fn rows_the_server_refuses_mid_transaction_are_isolated_and_the_rest_lands_once() {
    let d = Dir::new();
    let url = pg::cluster().database("refuse");
    // An existing table whose constraints the stream does not know: a CHECK and a UNIQUE.
    pg::connect(&url)
        .batch_execute(
            "CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL UNIQUE, amount double precision CHECK (amount >= 0), data bytea);
             CREATE TABLE events (at text, n bigint);",
        )
        .unwrap();
    let s = d.open("src.db");
    s.execute_batch(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, amount REAL, data BLOB);
         CREATE TABLE events (at TEXT, n INTEGER);
         WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 20000)
           INSERT INTO items SELECT i, 'item ' || i, i / 7.0, NULL FROM s;
         UPDATE items SET amount = -1 WHERE id IN (7, 12345);
         UPDATE items SET name = 'item 3' WHERE id = 19999;",
    )
    .unwrap();
    drop(s);
    // Small chunks and one commit for everything: each refusal comes after several chunks of
    // the same transaction, which are replayed, not lost or doubled.
    let runs = d.pipe(
        &[
            ("ferry-export", &[&d.db("src.db"), "--state-every", "100000"]),
            (
                "ferry-import",
                &[&url, "--reject-file", "r.ndjson", "--write-rows", "1000"],
            ),
        ],
        b"",
    );
    common::ok_but_rejects(&runs);
    let mut c = pg::connect(&url);
    assert_eq!(count(&mut c, "items"), 20000 - 3);
    let missing: Vec<i64> = c
        .query(
            "SELECT g::bigint FROM generate_series(1, 20000) g WHERE NOT EXISTS (SELECT 1 FROM items WHERE id = g) ORDER BY g",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(missing, [7, 12345, 19999]);
    let rejects = std::fs::read_to_string(d.path("r.ndjson")).unwrap();
    assert_eq!(rejects.lines().count(), 3, "{rejects}");
    assert!(
        rejects.contains("items_amount_check") && rejects.contains("items_name_key"),
        "{rejects}"
    );
    assert_eq!(common::written_and_already(&runs[1]).0, 20000 - 3);
}

/// `ferry-export SRC | ferry-import VIA --create` with FERRY_RETRIES set: the importer's output.
fn import_through_proxy(d: &Dir, src: &str, via: &str, retries: &str) -> std::process::Output {
    let mut export = d
        .cmd("ferry-export", &[src, "--state-every", "5000", "-q"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let import = d
        .cmd("ferry-import", &[via, "--create"])
        .env("FERRY_RETRIES", retries)
        .stdin(std::process::Stdio::from(export.stdout.take().unwrap()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = import.wait_with_output().unwrap();
    let _ = export.wait();
    out
}

/// The same pipeline again, once the server is back: it writes exactly what the target lacked
/// (`before` rows were committed) and validates equal.
fn rerun_finishes_exactly_once(d: &Dir, src: &str, via: &str, url: &str, before: i64) {
    let runs = d.pipe(
        &[
            ("ferry-export", &[src, "--state-every", "5000"]),
            ("ferry-import", &[via, "--create"]),
        ],
        b"",
    );
    all_ok(&runs);
    let (written, already) = common::written_and_already(&runs[1]);
    assert_eq!(already as i64, before, "{:?}", runs[1]);
    assert_eq!(written as i64 + before, 375_000);
    d.run("ferry-validate", &[src, url], b"").ok();
}

#[test]
fn a_server_that_stays_down_stops_the_import_clearly_and_a_rerun_finishes() {
    let d = Dir::new();
    let src = common::items_and_events(&d, 300_000);
    let url = pg::cluster().database("down");
    let proxy = proxy::Proxy::start(pg::cluster().port);
    let via = proxy.url(&url);
    // Down for good part way through the rows (after ~12 MB of client traffic: past the first
    // commit, before the end), so the importer's retries run out.
    proxy.down_after(12 << 20);
    let runs = import_through_proxy(&d, &src, &via, "2");
    let stderr = String::from_utf8_lossy(&runs.stderr);
    assert!(
        proxy.is_down(),
        "the import finished before the server went away: {stderr}"
    );
    assert_eq!(runs.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("still failing after 3 attempts"), "{stderr}");
    assert!(
        stderr.contains("re-run the same command"),
        "the error says what to do: {stderr}"
    );
    assert!(!stderr.contains(pg::PASSWORD), "{stderr}");
    let mut c = pg::connect(&url);
    let items = c
        .query_one("SELECT count(*) FROM items", &[])
        .map(|r| r.get::<_, i64>(0))
        .unwrap_or(0);
    assert!(items > 0 && items < 300_000, "committed before the outage: {items}");
    let before = items + count(&mut c, "events");

    proxy.up();
    rerun_finishes_exactly_once(&d, &src, &via, &url, before);
    assert_eq!(count(&mut c, "items"), 300_000);
}

#[test]
fn a_commit_lost_with_the_server_is_settled_by_the_rerun() {
    let d = Dir::new();
    let src = common::items_and_events(&d, 300_000);
    let url = pg::cluster().database("commitlost");
    let proxy = proxy::Proxy::start(pg::cluster().port);
    let via = proxy.url(&url);
    // The server goes away as the second COMMIT during the rows is sent (it never arrives), and
    // stays away. Those COMMITs go without waiting, with the next transaction's BEGIN.
    proxy.down_at(b"COMMIT;\nBEGIN", 1);
    let out = import_through_proxy(&d, &src, &via, "1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(proxy.is_down(), "no second COMMIT was sent: {stderr}");
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("lost during COMMIT and not regained"), "{stderr}");
    assert!(stderr.contains("re-run the same command"), "{stderr}");
    let mut c = pg::connect(&url);
    let before = rows_so_far(&mut c);

    proxy.up();
    rerun_finishes_exactly_once(&d, &src, &via, &url, before);
}

/// The importer does not wait for a COMMIT during the rows: it reads on, and the next
/// transaction's COPYs queue behind the COMMIT on the connection. A connection lost with such a
/// COMMIT on its way is settled within the run: a COMMIT that never reached the server is replayed
/// and committed on a new connection; one that landed but whose answer was lost is found by its
/// token and not written again. Either way every row is there once, the COPYs that were queued
/// behind it are written again, and a re-run finds nothing left to do.
#[test]
fn a_commit_lost_on_its_way_or_after_landing_is_settled_within_the_run() {
    for delivered in [false, true] {
        let d = Dir::new();
        let src = common::items_and_events(&d, 300_000);
        let url = pg::cluster().database(if delivered { "landedlost" } else { "commitreplayed" });
        let proxy = proxy::Proxy::start(pg::cluster().port);
        let via = proxy.url(&url);
        proxy.reset_at(b"COMMIT;\nBEGIN", 1, delivered);
        let out = import_through_proxy(&d, &src, &via, "3");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(proxy.faults(), 1, "the second COMMIT was cut: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        let said = if delivered {
            "the connection dropped during COMMIT, which had landed"
        } else {
            "reconnecting and replaying"
        };
        assert!(stderr.contains(said), "{stderr}");
        let mut c = pg::connect(&url);
        assert_eq!(count(&mut c, "items"), 300_000);
        assert_eq!(count(&mut c, "events"), 75_000, "the keyless table has no duplicate");
        rerun_finishes_exactly_once(&d, &src, &via, &url, 375_000);
        if delivered {
            // Upserts go through a staging table, which belongs to the session: the new
            // session after a lost answer has it again, so no row is refused for want of it.
            proxy.reset_at(b"COMMIT;\nBEGIN", 0, true);
            let runs = d.pipe(
                &[
                    (
                        "ferry-export",
                        &[&src, "--table", "main.items", "--state-every", "5000"],
                    ),
                    ("ferry-import", &[&via, "--fresh", "--on-conflict", "overwrite"]),
                ],
                b"",
            );
            all_ok(&runs);
            assert_eq!(proxy.faults(), 2, "{:?}", runs[1]);
            assert!(runs[1].stderr().contains("which had landed"), "{:?}", runs[1]);
            let end = runs[1].lines().pop().unwrap_or_default();
            assert_eq!(end["rejected"], 0, "{end}");
            assert_eq!(end["written"], 300_000, "{end}");
            assert_eq!(count(&mut c, "items"), 300_000);
        }
    }
}

/// TLS the way libpq does it (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`), against a server
/// that takes TCP connections over TLS only, with a certificate for `localhost` alone: every mode
/// connects or refuses as it should, and a refusal says why and what to do, at once (no retries).
#[test]
fn tls_encrypts_checks_the_server_and_says_what_to_do_when_it_cannot() {
    let (c, pki) = pg::tls_cluster();
    let d = Dir::new();
    // No ~/.postgresql/root.crt of whoever runs the tests.
    d.set_env("HOME", d.root().to_str().unwrap());
    let sample = representable_sample(&d);
    let url = c.database("tls");
    let ca = pki.ca.display().to_string();
    let db = url.rsplit('/').next().unwrap().to_owned();
    let at = |host: &str, query: &str| format!("postgres://postgres:{PASSWORD}@{host}:{}/{db}?{query}", c.port);
    let refused = |r: &common::Run, why: &str| {
        r.expect_code(2).stderr_has(why);
        let e = r.stderr();
        assert!(!e.contains(PASSWORD), "{e}");
        assert!(
            !e.contains("still failing after") && !e.contains("retrying"),
            "retried: {e}"
        );
    };

    // verify-full, by the name the certificate carries (connecting to 127.0.0.1 all the same):
    // the whole pipeline and validate go through.
    let full = at(
        "localhost",
        &format!("hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={ca}"),
    );
    all_ok(&d.pipe(
        &[("ferry-export", &[&sample]), ("ferry-import", &[&full, "--create"])],
        b"",
    ));
    d.run("ferry-validate", &[&sample, &full], b"").ok();
    let tags: i64 = d
        .open("pgsafe.db")
        .query_row("SELECT count(*) FROM tags", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count(&mut c.client(&url), "tags"), tags);

    // Encrypted without checking the server (the default, prefer, and require), or checking its
    // chain only (verify-ca): the server takes nothing but TLS, so these went over TLS.
    for query in ["", "sslmode=require", &format!("sslmode=verify-ca&sslrootcert={ca}")] {
        let r = d.run(
            "ferry-export",
            &[&at("127.0.0.1", query), "--table", "public.tags"],
            b"",
        );
        r.ok();
        assert_eq!(r.lines().iter().filter(|l| l["type"] == "RECORD").count() as i64, tags);
    }

    // Other TLS settings, the same database: a copy out of it is recognised as done.
    let copy = d.db("copy.db");
    for query in ["sslmode=require", &format!("sslmode=verify-ca&sslrootcert={ca}")] {
        let runs = d.pipe(
            &[
                ("ferry-export", &[&at("127.0.0.1", query), "--table", "public.tags"]),
                ("ferry-transform", &["--dialect", "sqlite"]),
                ("ferry-import", &[&copy, "--create"]),
            ],
            b"",
        );
        all_ok(&runs);
        let end = runs[2].lines().into_iter().find(|l| l["type"] == "END").unwrap();
        let first = query == "sslmode=require";
        assert_eq!(end[if first { "written" } else { "already_imported" }], tags, "{end}");
    }

    // The same check by name at 127.0.0.1, which the certificate does not carry.
    let r = d.run(
        "ferry-export",
        &[&at("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={ca}"))],
        b"",
    );
    refused(&r, "not for the host in the address");
    // A CA that did not sign the server's certificate.
    let other = format!("sslmode=verify-ca&sslrootcert={}", pki.other_ca.display());
    refused(
        &d.run("ferry-export", &[&at("127.0.0.1", &other)], b""),
        "name the CA that signed it",
    );
    // Nothing to check against.
    let r = d.run("ferry-export", &[&at("127.0.0.1", "sslmode=verify-full")], b"");
    refused(&r, ".postgresql/root.crt does not exist");
    r.stderr_has("sslrootcert=PATH");
    // No TLS: the server's own refusal.
    let r = d.run("ferry-export", &[&at("127.0.0.1", "sslmode=disable")], b"");
    refused(&r, "no encryption (the server takes this login over TLS only");
    // A mode libpq does not know.
    refused(
        &d.run("ferry-export", &[&at("127.0.0.1", "sslmode=verify")], b""),
        "is not one of disable, allow, prefer, require, verify-ca, verify-full",
    );

    // A role that logs in by client certificate: with it, and without it.
    let cert = format!(
        "postgres://certuser@127.0.0.1:{}/{db}?sslmode=verify-ca&sslrootcert={ca}&sslcert={}&sslkey={}",
        c.port,
        pki.client_cert.display(),
        pki.client_key.display()
    );
    c.client(&url)
        .batch_execute("GRANT SELECT ON tags TO certuser")
        .unwrap();
    d.run("ferry-export", &[&cert, "--table", "public.tags"], b"").ok();
    let bare = format!("postgres://certuser@127.0.0.1:{}/{db}?sslmode=require", c.port);
    refused(
        &d.run("ferry-export", &[&bare], b""),
        "client certificate (name the certificate",
    );

    // And asking for TLS from a server that has none.
    let plain = pg::cluster().database("notls");
    let r = d.run("ferry-export", &[&format!("{plain}?sslmode=require")], b"");
    refused(&r, "the server does not offer TLS");
}

/// A keyless SQLite table of `rows`, copied into a new PostgreSQL database; both addresses.
fn keyless_copy(d: &Dir, rows: &[(Option<i64>, Option<String>, Option<f64>)]) -> (String, String) {
    let lite = d.path("keyless.db");
    let _ = std::fs::remove_file(&lite);
    let c = rusqlite::Connection::open(&lite).unwrap();
    c.execute_batch("CREATE TABLE log (a INTEGER, b TEXT, c REAL)").unwrap();
    for (a, b, r) in rows {
        c.execute("INSERT INTO log VALUES (?1, ?2, ?3)", rusqlite::params![a, b, r])
            .unwrap();
    }
    drop(c);
    let src = format!("sqlite:{}", lite.display());
    let url = pg::cluster().database("keyless");
    all_ok(&d.pipe(
        &[
            ("ferry-export", &[&src]),
            ("ferry-import", &[&url, "--create", "--fresh"]),
        ],
        b"",
    ));
    (src, url)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 10, ..Default::default() })]

    /// A keyless table is compared as a multiset of rows, the same way on both engines whatever
    /// the values (NULLs, repeats, text in any order): a faithful copy is equal (also to its own
    /// export), and one row taken away is one row missing, nothing else.
    #[test]
    fn keyless_tables_compare_alike_across_engines_nulls_and_repeats_included(
        rows in proptest::collection::vec(
            (
                proptest::option::of(-3i64..3),
                proptest::option::of("[a-c\u{e9}\u{1f600} ]{0,3}"),
                proptest::option::of(proptest::prop_oneof![proptest::strategy::Just(0.5f64), -1e300f64..1e300]),
            ),
            0..25,
        )
    ) {
        let d = Dir::new();
        let (src, url) = keyless_copy(&d, &rows);
        d.run("ferry-validate", &[&src, &url], b"").ok();
        let own = d.run("ferry-export", &[&url], b"");
        d.run("ferry-validate", &[&url], &own.ok().output.stdout).ok();
        if !rows.is_empty() {
            pg::connect(&url)
                .batch_execute("DELETE FROM log WHERE ctid = (SELECT max(ctid) FROM log)")
                .unwrap();
            let v = d.run("ferry-validate", &[&src, &url], b"");
            v.expect_code(1);
            let summary = v.lines().pop().unwrap();
            proptest::prop_assert_eq!(&summary["findings"], &serde_json::json!({"missing": 1}), "{:?}", v);
        }
    }
}

#[test]
fn sequences_of_existing_tables_are_set_past_the_loaded_rows_and_never_moved_back() {
    // The usual Django path: the framework made the schema (serial and identity keys), ferry
    // loads the data. The application's next insert must not collide with a loaded row.
    let d = Dir::new();
    let url = pg::cluster().database("sequences");
    pg::connect(&url)
        .batch_execute(
            "CREATE TABLE shop_order (id serial PRIMARY KEY, note text);
             CREATE TABLE tagged (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, name text);
             CREATE SEQUENCE ahead_seq;
             CREATE TABLE ahead (id bigint PRIMARY KEY DEFAULT nextval('ahead_seq'), name text);
             SELECT setval('ahead_seq', 1000);",
        )
        .unwrap();
    d.open("src.db")
        .execute_batch(
            "CREATE TABLE shop_order (id INTEGER PRIMARY KEY, note TEXT);
             CREATE TABLE tagged (id INTEGER PRIMARY KEY, name TEXT);
             CREATE TABLE ahead (id INTEGER PRIMARY KEY, name TEXT);
             WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 2000)
               INSERT INTO shop_order SELECT i, 'order ' || i FROM s;
             WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 30)
               INSERT INTO tagged SELECT i, 'tag ' || i FROM s;
             WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 50)
               INSERT INTO ahead SELECT i, 'row ' || i FROM s;",
        )
        .unwrap();
    let runs = d.pipe(&[("ferry-export", &[&d.db("src.db")]), ("ferry-import", &[&url])], b"");
    all_ok(&runs);
    let log = runs[1].stderr();
    for (table, sequence) in [("shop_order", "shop_order_id_seq"), ("tagged", "tagged_id_seq")] {
        assert!(
            log.lines()
                .any(|l| l.contains("set the sequence past the data") && l.contains(table) && l.contains(sequence)),
            "{table}: {log}"
        );
    }
    assert!(
        !log.lines()
            .any(|l| l.contains("set the sequence past the data") && l.contains("ahead")),
        "a sequence already past the data is left alone: {log}"
    );
    let mut c = pg::connect(&url);
    let next = |c: &mut postgres::Client, sql: &str| -> i64 { c.query_one(sql, &[]).unwrap().get(0) };
    assert_eq!(
        next(
            &mut c,
            "INSERT INTO shop_order (note) VALUES ('new') RETURNING id::bigint"
        ),
        2001
    );
    assert_eq!(
        next(&mut c, "INSERT INTO tagged (name) VALUES ('new') RETURNING id"),
        31
    );
    assert_eq!(
        next(&mut c, "INSERT INTO ahead (name) VALUES ('new') RETURNING id"),
        1001
    );
}

/// A new database of the test cluster holding `t (id, name)` with one row named `name`; its name,
/// and the cluster's password (for tests that give it some other way than in the address).
fn one_row_database(hint: &str, name: &str) -> (String, &'static str) {
    let c = pg::cluster();
    let url = c.database(hint);
    pg::connect(&url)
        .execute("CREATE TABLE t (id int PRIMARY KEY, name text)", &[])
        .unwrap();
    pg::connect(&url)
        .execute("INSERT INTO t VALUES (1, $1)", &[&name])
        .unwrap();
    let db = url.rsplit('/').next().unwrap().to_owned();
    let password = c.base.rsplit_once('@').unwrap().0.rsplit_once(':').unwrap().1;
    (db, password)
}

#[test]
fn a_password_comes_from_the_password_file_as_libpq_reads_it() {
    use std::os::unix::fs::PermissionsExt as _;
    let d = Dir::new();
    let c = pg::cluster();
    let (db, password) = one_row_database("pgpass", "from pgpass");
    let url = format!("postgres://{}@{}:{}/{db}", c.user, c.host, c.port);
    let file = d.path("pgpass");
    std::fs::write(
        &file,
        format!(
            "# ferry's test\nother.host:*:*:*:wrong\n{}:{}:{db}:{}:{password}\n",
            c.host, c.port, c.user
        ),
    )
    .unwrap();
    let export = |mode: u32| {
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        let mut cmd = d.cmd("ferry-export", &[&url]);
        cmd.env_remove("PGPASSWORD")
            .env("PGPASSFILE", &file)
            .env("FERRY_RETRIES", "0");
        cmd.output().unwrap()
    };
    let out = export(0o600);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("from pgpass"), "{stdout}");
    // Readable by others: ignored, as libpq ignores it, and said.
    let out = export(0o644);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("readable by others"), "{stderr}");
    assert!(!stderr.contains(password), "{stderr}");
}

#[test]
fn a_connection_service_gives_what_the_address_leaves_out_as_libpq_reads_it() {
    let d = Dir::new();
    let c = pg::cluster();
    let (db, password) = one_row_database("pgservice", "from the service");
    let file = d.path("pg_service.conf");
    std::fs::write(
        &file,
        format!(
            "# ferry's test\n[other]\nhost=other.invalid\n\n[app]\nhost={}\nport={}\ndbname={db}\nuser={}\npassword={password}\nsslmode=disable\n",
            c.host, c.port, c.user
        ),
    )
    .unwrap();
    let export = |address: &str, service: Option<&str>| {
        let mut cmd = d.cmd("ferry-export", &[address]);
        cmd.env_remove("PGPASSWORD")
            .env("PGSERVICEFILE", &file)
            .env("FERRY_RETRIES", "0");
        if let Some(s) = service {
            cmd.env("PGSERVICE", s);
        }
        cmd.output().unwrap()
    };
    // In the address, or in PGSERVICE; the address wins over the service for what it says.
    for (address, service) in [("postgres://?service=app", None), ("postgres://", Some("app"))] {
        let out = export(address, service);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{address}: {stderr}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("from the service"));
        assert!(!stderr.contains(password), "{stderr}");
    }
    let out = export(&format!("postgres:///{}_elsewhere?service=app", db), None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("_elsewhere"),
        "the address's database is the one tried"
    );
    // A service no file has is named, with where it was looked for.
    let out = export("postgres://?service=nowhere", None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no connection service \"nowhere\"") && stderr.contains("pg_service.conf"),
        "{stderr}"
    );
}

/// The tables Django's `migrate` makes on SQLite (its own DDL, as `sqlite_master` shows it): a
/// JSONField (text kept valid by a CHECK), a UUIDField (char(32)), naive UTC date-times, a
/// BooleanField, DecimalFields, and a many-to-many table.
const DJANGO_SQLITE: &str = r#"
CREATE TABLE "shop_customer" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "uid" char(32) NOT NULL UNIQUE, "name" varchar(100) NOT NULL, "prefs" text NOT NULL CHECK ((JSON_VALID("prefs") OR "prefs" IS NULL)), "active" bool NOT NULL, "joined" datetime NOT NULL, "balance" decimal NOT NULL);
CREATE TABLE "shop_order" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "total" decimal NOT NULL, "placed" datetime NOT NULL, "customer_id" bigint NOT NULL REFERENCES "shop_customer" ("id") DEFERRABLE INITIALLY DEFERRED);
INSERT INTO shop_customer VALUES
  (1, '611244c06c7a45c98e86c4fa978f18a7', 'customer 0', '{"theme": "light", "level": 1, "beta": {"note": "na\u00efve \u2713"}}', 0, '2024-02-16 17:33:24.375473', 7951235966.26),
  (2, '747d0a2b9ec24776b89605fe039a7b88', 'customer 1', '{"theme": "dark", "level": 4, "langs": ["en"]}', 1, '2023-01-20 05:41:23', 100);
INSERT INTO shop_order VALUES (1, 149516.33, '2023-03-05 08:45:48.187295', 2), (2, 5, '2024-06-06 09:26:47', 1);
CREATE TABLE "shop_event" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "pos" integer unsigned NOT NULL CHECK ("pos" >= 0), "at" datetime NOT NULL DEFAULT (datetime('now')));
INSERT INTO shop_event VALUES (1, 3, '2024-01-01 00:00:00');
"#;

#[test]
fn a_django_sqlite_database_gets_json_uuid_and_zoned_time_columns_and_assess_names_the_same_types() {
    let d = Dir::new();
    d.open("django.db").execute_batch(DJANGO_SQLITE).unwrap();
    let url = pg::cluster().database("django_create");
    let runs = d.pipe(
        &[
            ("ferry-export", &[&d.db("django.db")]),
            ("ferry-import", &[&url, "--create", "--naive-utc"]),
        ],
        b"",
    );
    all_ok(&runs);
    // What SQLite's SQL says that PostgreSQL's cannot take as it is is named, not dropped
    // silently; the JSON check is the jsonb type itself.
    let log = runs[1].stderr();
    assert!(
        log.lines()
            .any(|l| l.contains("a CHECK in SQLite's SQL is not carried") && l.contains("\"pos\" >= 0")),
        "{log}"
    );
    // SQLite's clock default is: the application's next row is stamped now, in UTC.
    assert!(!log.contains("a default in SQLite's SQL is not carried"), "{log}");
    assert!(!log.contains("JSON_VALID"), "{log}");
    let mut c = pg::connect(&url);
    let made = |c: &mut postgres::Client, table: &str| -> Vec<(String, String)> {
        c.query(
            "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[&table],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    };
    let mut tx = c.transaction().unwrap();
    let stamped: bool = tx
        .query_one(
            "INSERT INTO shop_event (pos) VALUES (7) RETURNING at > now() - interval '1 minute' AND at <= now()",
            &[],
        )
        .unwrap()
        .get(0);
    tx.rollback().unwrap();
    assert!(stamped, "datetime('now') became the moment of the insert");
    let customer = made(&mut c, "shop_customer");
    let types: Vec<&str> = customer.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "bigint",
            "uuid",
            "character varying(100)",
            "jsonb",
            "boolean",
            "timestamp with time zone",
            "numeric"
        ]
    );
    // What the application's ORM asks of them works, and gives the values back exactly.
    let row = c
        .query_one(
            "SELECT name, prefs->'beta'->>'note', active, joined = '2024-02-16 17:33:24.375473+00', \
             balance::text FROM shop_customer WHERE uid = '611244c0-6c7a-45c9-8e86-c4fa978f18a7'::uuid",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "customer 0");
    assert_eq!(row.get::<_, String>(1), "naïve ✓");
    assert!(!row.get::<_, bool>(2));
    assert!(row.get::<_, bool>(3), "the naive time was taken as UTC");
    assert_eq!(row.get::<_, String>(4), "7951235966.26");
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM shop_customer WHERE prefs @> '{\"theme\": \"dark\"}'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    d.run("ferry-validate", &[&d.db("django.db"), &url], b"").ok();

    // `ferry assess` names the types the import made: one mapping serves both.
    let r = d.run(
        "ferry",
        &[
            "assess",
            &d.db("django.db"),
            "--to",
            "postgres",
            "--naive-utc",
            "--json",
        ],
        b"",
    );
    r.ok();
    let report: serde_json::Value = serde_json::from_str(&r.stdout()).unwrap();
    for table in ["shop_customer", "shop_order"] {
        let assessed = report["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["stream"] == format!("main.{table}"))
            .unwrap();
        let said: Vec<(String, String)> = assessed["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|col| {
                let t: String = c
                    .query_one(
                        "SELECT format_type(oid, NULL) || coalesce(substring($1 from '\\(.*\\)$'), '') \
                         FROM pg_type WHERE oid = $1::text::regtype",
                        &[&col["postgres_type"].as_str().unwrap()],
                    )
                    .unwrap()
                    .get(0);
                (col["name"].as_str().unwrap().to_owned(), t)
            })
            .collect();
        assert_eq!(said, made(&mut c, table), "{table}: assess and the import differ");
        assert!(assessed["problems"].as_array().unwrap().is_empty(), "{assessed}");
    }
    // Without --naive-utc the times stay naive.
    let r = d.run("ferry", &["assess", &d.db("django.db"), "--to", "postgres"], b"");
    assert!(
        r.stdout().contains("joined timestamp,") && r.stdout().contains("prefs jsonb"),
        "{}",
        r.stdout()
    );
}

#[test]
fn values_into_a_frameworks_typed_columns_are_cast_exactly_or_rejected_with_the_row() {
    // The schema is the framework's (as `manage.py migrate` makes it on PostgreSQL); the stream
    // carries SQLite's text, integers and reals.
    let d = Dir::new();
    let url = pg::cluster().database("typed_columns");
    pg::connect(&url)
        .batch_execute(
            "CREATE TABLE item (id bigint PRIMARY KEY, doc jsonb, uid uuid, at timestamptz, flag boolean, \
             price numeric(8,2), n integer);
             CREATE TABLE spans (id bigint PRIMARY KEY, took interval);",
        )
        .unwrap();
    d.open("src.db")
        .execute_batch(
            r#"CREATE TABLE item (id INTEGER PRIMARY KEY, doc TEXT, uid TEXT, at TEXT, flag INTEGER, price, n INTEGER);
             INSERT INTO item VALUES
               (1, '{"b": [1, 2.50], "a": "x"}', '611244c06c7a45c98e86c4fa978f18a7', '2024-02-16 17:33:24.375473', 1, 12.5, 7),
               (2, '[]', '611244C0-6C7A-45C9-8E86-C4FA978F18A7', '2024-02-16T19:33:24+02:00', 0, '999999.99', -2147483648),
               (3, '{"a": ', NULL, NULL, NULL, NULL, NULL),
               (4, NULL, 'not-a-uuid', NULL, NULL, NULL, NULL),
               (5, NULL, NULL, 'yesterday', NULL, NULL, NULL),
               (6, NULL, NULL, NULL, 2, NULL, NULL),
               (7, NULL, NULL, NULL, NULL, 1.005, NULL),
               (8, NULL, NULL, NULL, NULL, NULL, 2147483648),
               (9, NULL, NULL, NULL, NULL, 1000000, NULL);
             CREATE TABLE spans (id INTEGER PRIMARY KEY, took);
             INSERT INTO spans VALUES (1, '1 day 02:00:00'), (2, -268694861168);"#,
        )
        .unwrap();
    let runs = d.pipe(
        &[
            ("ferry-export", &[&d.db("src.db")]),
            ("ferry-import", &[&url, "--reject-file", "r.ndjson"]),
        ],
        b"",
    );
    common::ok_but_rejects(&runs);
    let rejects: Vec<serde_json::Value> = std::fs::read_to_string(d.path("r.ndjson"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let reason = |id: i64| -> String {
        let r = rejects
            .iter()
            .find(|r| r["key"]["id"] == id)
            .unwrap_or_else(|| panic!("row {id} was not rejected: {rejects:?}"));
        r.to_string()
    };
    assert!(reason(3).contains("not valid JSON"), "{}", reason(3));
    assert!(reason(4).contains("is not a UUID"), "{}", reason(4));
    assert!(reason(5).contains("is not a date-time"), "{}", reason(5));
    assert!(reason(6).contains("not a boolean"), "{}", reason(6));
    assert!(reason(7).contains("would round it"), "{}", reason(7));
    assert!(reason(8).contains("out of range for integer"), "{}", reason(8));
    assert!(reason(9).contains("too large for numeric(8,2)"), "{}", reason(9));
    // Django's DurationField is microseconds in SQLite; PostgreSQL would read a bare number as
    // seconds, so a number is refused rather than taken a million times too long.
    let span = rejects
        .iter()
        .find(|r| r["stream"] == "main.spans")
        .unwrap_or_else(|| panic!("{rejects:?}"));
    assert_eq!(span["key"]["id"], 2);
    assert!(span.to_string().contains("does not say its unit"), "{span}");
    assert_eq!(rejects.len(), 8, "{rejects:?}");
    let mut c = pg::connect(&url);
    let rows = c
        .query(
            "SELECT id, doc::text, uid::text, (at AT TIME ZONE 'UTC')::text, flag, price::text, n FROM item ORDER BY id",
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), 2);
    let text = |i: usize, col: usize| -> String { rows[i].get(col) };
    assert_eq!(text(0, 1), r#"{"a": "x", "b": [1, 2.50]}"#);
    assert_eq!(text(0, 2), "611244c0-6c7a-45c9-8e86-c4fa978f18a7");
    assert_eq!(text(1, 2), "611244c0-6c7a-45c9-8e86-c4fa978f18a7");
    assert_eq!(text(0, 3), "2024-02-16 17:33:24.375473");
    assert_eq!(
        text(1, 3),
        "2024-02-16 17:33:24",
        "the offset is kept: the same instant"
    );
    assert_eq!((rows[0].get::<_, bool>(4), rows[1].get::<_, bool>(4)), (true, false));
    assert_eq!((text(0, 5), text(1, 5)), ("12.50".to_owned(), "999999.99".to_owned()));
    assert_eq!(rows[1].get::<_, i32>(6), i32::MIN);
    let took: String = c.query_one("SELECT took::text FROM spans", &[]).unwrap().get(0);
    assert_eq!(took, "1 day 02:00:00");
}
