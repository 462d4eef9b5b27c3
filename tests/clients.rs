//! The applications' own clients, from PyPI, on what ferry moved: a Django project's ORM on its
//! SQLite database copied to PostgreSQL (into the schema Django's `migrate` made, and into one
//! ferry's `--create` made), django-storages over boto3 reading every migrated file from the test
//! S3 server, and Singer targets (`target-jsonl`, MeltanoLabs' `target-postgres`) fed by
//! `ferry-export --singer`. Each checks the far side with the client's own reads.
//!
//! The clients live in virtualenvs that `tests/clients/venv.sh` makes from pinned requirements
//! and keeps between runs. A machine that cannot make them (no PyPI) fails these tests, saying
//! why, unless `FERRY_SKIP_CLIENTS=1` skips them (never under CI).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::Path;

use serde_json::Value as Json;

use crate::common::pg;
use crate::common::s3::S3Server;
use crate::common::{Dir, Run, all_ok, write_file};

const APP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/django");

/// The Python of the virtualenv `name` (see `tests/clients/venv.sh`), or None when skipped.
pub(crate) fn python(name: &str) -> Option<String> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if !ci && std::env::var("FERRY_SKIP_CLIENTS").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED: the real-client tests ({name}): FERRY_SKIP_CLIENTS=1");
        return None;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/venv.sh");
    let out = std::process::Command::new(script).arg(name).output().unwrap();
    assert!(
        out.status.success(),
        "could not make the {name} virtualenv of the real-client tests (it needs PyPI once; FERRY_SKIP_CLIENTS=1 skips these tests): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap().trim().to_owned())
}

/// A directory whose commands reach the Django project's database `db`.
fn app_dir() -> Dir {
    let d = Dir::new();
    d.set_env("PYTHONDONTWRITEBYTECODE", "1");
    d
}

/// Run one of the Django project's scripts (`manage.py migrate`, `seed.py`...) on database `db`.
fn django(d: &Dir, py: &str, db: &str, script: &str, args: &[&str]) -> Run {
    d.set_env("FERRY_DJANGO_DB", db);
    let path = format!("{APP}/{script}");
    let mut all = vec![path.as_str()];
    all.extend_from_slice(args);
    let r = d.run(py, &all, b"");
    r.ok();
    r
}

/// A Django shop on SQLite, made by its own migrations and filled through its ORM (with a
/// SavedFile per file under `media`, if given); and what the app's ORM checks say of it (run
/// on a copy: the checks write).
fn seeded_app(d: &Dir, py: &str, media: Option<&Path>) -> (String, Json) {
    let src = d.db("app.db");
    django(d, py, &src, "manage.py", &["migrate", "-v0"]);
    let media = media.map(|m| m.display().to_string());
    let args: Vec<&str> = media.iter().map(String::as_str).collect();
    django(d, py, &src, "seed.py", &args);
    std::fs::copy(d.path("app.db"), d.path("reference.db")).unwrap();
    let expected = checks(d, py, &d.db("reference.db"));
    (src, expected)
}

/// The ORM's answers on database `db` (tests/clients/django/check.py).
fn checks(d: &Dir, py: &str, db: &str) -> Json {
    let r = django(d, py, db, "check.py", &[]);
    serde_json::from_str(&r.stdout()).unwrap_or_else(|e| panic!("{e}: {r:?}"))
}

#[test]
fn a_django_app_loaded_into_the_schema_its_own_migrate_made_answers_every_orm_query_alike() {
    let Some(py) = python("clients") else { return };
    let d = app_dir();
    let (src, expected) = seeded_app(&d, &py, None);
    let url = pg::cluster().database("django_migrated");
    django(&d, &py, &url, "manage.py", &["migrate", "-v0"]);
    // The README's recipe: the framework's own rows (content types, permissions, migrations)
    // are there already, so the load overwrites by key.
    load_and_ask(&d, &py, &src, &url, &["--on-conflict", "overwrite"], &expected);
}

/// Move the app's database `src` into `url` (ferry-import with `args`), prove the copy equal, and
/// ask the app's ORM on the copy what it asked of the original (`expected`).
fn load_and_ask(d: &Dir, py: &str, src: &str, url: &str, args: &[&str], expected: &Json) {
    let mut import = vec![url];
    import.extend_from_slice(args);
    all_ok(&d.pipe(&[("ferry-export", &[src]), ("ferry-import", &import)], b""));
    d.run("ferry-validate", &[src, url], b"").ok();
    assert_eq!(&checks(d, py, url), expected);
}

#[test]
fn a_django_app_loaded_into_tables_ferry_made_answers_every_orm_query_alike() {
    let Some(py) = python("clients") else { return };
    let d = app_dir();
    let (src, expected) = seeded_app(&d, &py, None);
    let url = pg::cluster().database("django_created");
    // JSON lookups, UUID lookups, aware times, booleans, decimals, the sequences of every table.
    load_and_ask(&d, &py, &src, &url, &["--create", "--naive-utc"], &expected);
}

#[test]
fn every_migrated_file_is_read_back_through_django_storages_by_the_key_the_app_keeps() {
    let Some(py) = python("clients") else { return };
    let d = app_dir();
    let media = d.path("media");
    for i in 0..40 {
        write_file(
            &media,
            format!("uploads/{:02}/photo-{i}.jpg", i % 7),
            format!("bytes of photo {i}").as_bytes(),
        );
    }
    write_file(&media, "avatars/caf\u{e9} \u{1f600}.png", b"unicode name");
    write_file(&media, "empty.txt", b"");
    write_file(&media, "big.bin", &vec![7u8; 3 << 20]);
    let (src, _) = seeded_app(&d, &py, Some(&media));
    let url = pg::cluster().database("django_files");
    django(&d, &py, &url, "manage.py", &["migrate", "-v0"]);
    all_ok(&d.pipe(
        &[
            ("ferry-export", &[&src]),
            ("ferry-import", &[&url, "--on-conflict", "overwrite"]),
        ],
        b"",
    ));
    let s3 = S3Server::start(&d.path("s3"), "media");
    for (k, v) in s3.env() {
        d.set_env(k, &v);
    }
    // The README's files recipe, into the bucket `media` under the prefix `media/`.
    all_ok(&d.pipe(
        &[
            ("ferry-export", &[&format!("dir:{}", media.display())]),
            ("ferry-import", &["s3://media/media"]),
            ("ferry-transform", &["--rename-stream", "uploads=ferry_uploads"]),
            ("ferry-import", &[&url, "--create", "--on-conflict", "overwrite"]),
        ],
        b"",
    ));
    let r = django(&d, &py, &url, "files.py", &[]);
    let summary: Json = serde_json::from_str(&r.stdout()).unwrap();
    assert_eq!(
        summary,
        serde_json::json!({"updated": 43, "files": 43, "read": 43, "wrong": [], "missing": [], "migrated_at_set": 43})
    );
}

/// A SQLite database with one table of `n` rows: a key, text, a date-time and a decimal.
fn items_db(d: &Dir, n: u32) -> String {
    d.open("items.db")
        .execute_batch(&format!(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, at DATETIME NOT NULL, price NUMERIC(10,2));
             WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n})
               INSERT INTO items SELECT i, 'item ' || i || ' ✓', datetime(1700000000 + i * 3600, 'unixepoch'), i * 1.25 FROM s;"
        ))
        .unwrap();
    d.db("items.db")
}

/// A program of the virtualenv whose Python is `py`.
fn program(py: &str, name: &str) -> String {
    Path::new(py).with_file_name(name).display().to_string()
}

#[test]
fn target_jsonl_takes_a_singer_export_whole_and_its_state_resumes_the_export() {
    let Some(py) = python("clients") else { return };
    let d = Dir::new();
    let src = items_db(&d, 250);
    let out = d.path("out");
    std::fs::create_dir_all(&out).unwrap();
    let config = d.path("target.json");
    std::fs::write(
        &config,
        serde_json::json!({"destination_path": out, "do_timestamp_file": false}).to_string(),
    )
    .unwrap();
    let runs = d.pipe(
        &[
            ("ferry-export", &[&src, "--singer", "--state-every", "100"]),
            (&program(&py, "target-jsonl"), &["--config", config.to_str().unwrap()]),
        ],
        b"",
    );
    all_ok(&runs);
    runs[0].stderr_has("ferry-export: done: 1 streams, 250 rows");
    // The stream is named by its table, so the target's file is items.jsonl; every row is there
    // as SQLite holds it.
    let written: Vec<Json> = std::fs::read_to_string(out.join("items.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(written.len(), 250);
    let c = d.open("items.db");
    let row: (String, String, f64) = c
        .query_row("SELECT name, at, price FROM items WHERE id = 137", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!(
        written[136],
        serde_json::json!({"id": 137, "name": row.0, "at": row.1, "price": row.2})
    );
    // The state the target printed last says every stream is complete: given back, the export
    // reads them again in full, as a Singer full-table sync does.
    let state = runs[1].stdout().lines().last().unwrap().to_owned();
    std::fs::write(d.path("state.json"), &state).unwrap();
    let again = d.run("ferry-export", &[&src, "--singer", "--state-json", "state.json"], b"");
    again.ok();
    let records = |r: &Run| {
        r.lines()
            .into_iter()
            .filter(|l| l["type"] == "RECORD")
            .collect::<Vec<_>>()
    };
    assert_eq!(records(&again).len(), 250);
    // A state from the middle of the table (the export was stopped after 100 rows): the export
    // goes on after its bookmark.
    let schema = again.lines().into_iter().find(|l| l["type"] == "SCHEMA").unwrap();
    assert_eq!(schema["stream"], "items");
    assert_eq!(schema["schema"]["properties"]["at"]["format"], "date-time");
    let first = d.run("ferry-export", &[&src, "--singer", "--state-every", "100"], b"");
    let middle = first
        .lines()
        .into_iter()
        .find(|l| l["type"] == "STATE" && l["value"]["bookmarks"]["items"]["rows"] == 100)
        .unwrap();
    std::fs::write(d.path("middle.json"), middle["value"].to_string()).unwrap();
    let rest = d.run("ferry-export", &[&src, "--singer", "--state-json", "middle.json"], b"");
    rest.ok();
    let rest = records(&rest);
    assert_eq!(rest.len(), 150);
    assert_eq!(rest[0]["record"]["id"], 101);
    // The target's whole output: the last state counts.
    std::fs::write(d.path("all.json"), runs[1].stdout()).unwrap();
    let all = d.run("ferry-export", &[&src, "--singer", "--state-json", "all.json"], b"");
    assert_eq!(records(all.ok()).len(), 250);
    // Another tool's bookmark is no position of ferry's: read in full, and said.
    std::fs::write(
        d.path("other.json"),
        r#"{"bookmarks": {"items": {"replication_key": "id", "replication_key_value": 100}}}"#,
    )
    .unwrap();
    let other = d.run("ferry-export", &[&src, "--singer", "--state-json", "other.json"], b"");
    assert_eq!(records(other.ok()).len(), 250);
    other.stderr_has("not a position ferry-export wrote");
    // A file that is not a Singer state is refused, naming what it lacks.
    std::fs::write(d.path("bad.json"), "{\"value\": 1}").unwrap();
    d.run("ferry-export", &[&src, "--singer", "--state-json", "bad.json"], b"")
        .expect_code(2)
        .stderr_has("has a \"bookmarks\" object");
}

#[test]
fn meltanos_target_postgres_takes_a_singer_export_and_a_second_run_upserts_by_key() {
    let Some(py) = python("meltano") else { return };
    let d = Dir::new();
    let src = items_db(&d, 300);
    let url = pg::cluster().database("target_postgres");
    let config = d.path("target.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "sqlalchemy_url": url.replacen("postgres://", "postgresql+psycopg://", 1),
            "add_record_metadata": false,
            "activate_version": false,
            "default_target_schema": "public",
        })
        .to_string(),
    )
    .unwrap();
    let target = program(&py, "target-postgres");
    for _ in 0..2 {
        let runs = d.pipe(
            &[
                ("ferry-export", &[&src, "--singer"]),
                (&target, &["--config", config.to_str().unwrap()]),
            ],
            b"",
        );
        all_ok(&runs);
    }
    let mut c = pg::connect(&url);
    let rows = c
        .query(
            "SELECT id, name, to_char(at, 'YYYY-MM-DD HH24:MI:SS'), price::float8, \
             pg_typeof(at)::text FROM items ORDER BY id",
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), 300, "the second run upserted by the stream's key");
    let s = d.open("items.db");
    let mut st = s.prepare("SELECT id, name, at, price FROM items ORDER BY id").unwrap();
    let source: Vec<(i64, String, String, f64)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (row, want) in rows.iter().zip(&source) {
        let got: (i64, String, String, f64) = (row.get(0), row.get(1), row.get(2), row.get(3));
        assert_eq!(&got, want);
    }
    let at_type: String = rows[0].get(4);
    assert!(
        at_type.starts_with("timestamp"),
        "format date-time made a timestamp: {at_type}"
    );
}

#[test]
fn meltanos_tap_postgres_feeds_ferry_import_and_the_state_ferry_prints_drives_its_next_incremental_run() {
    let Some(py) = python("meltano") else { return };
    let d = Dir::new();
    let url = pg::cluster().database("tap_postgres");
    let mut c = pg::connect(&url);
    c.batch_execute(
        "CREATE TABLE orders (id bigint PRIMARY KEY, note text, total numeric(10,2), revision bigint NOT NULL);
         INSERT INTO orders SELECT i, 'order ' || i, i * 1.5, i FROM generate_series(1, 200) i;",
    )
    .unwrap();
    let config = d.path("tap.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "sqlalchemy_url": url.replacen("postgres://", "postgresql+psycopg://", 1),
            "filter_schemas": ["public"],
        })
        .to_string(),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let tap = program(&py, "tap-postgres");
    // The catalog the tap discovers, with the table selected for incremental replication by
    // its revision (tap-postgres 0.10 cannot compare a timestamp bookmark: it casts it to text).
    let discovered = d.run(&tap, &["--config", config, "--discover"], b"");
    discovered.ok();
    let mut catalog: Json = serde_json::from_str(&discovered.stdout()).unwrap();
    for s in catalog["streams"].as_array_mut().unwrap() {
        for m in s["metadata"].as_array_mut().unwrap() {
            if m["breadcrumb"] == serde_json::json!([]) {
                let meta = m["metadata"].as_object_mut().unwrap();
                meta.insert("selected".into(), true.into());
                meta.insert("replication-method".into(), "INCREMENTAL".into());
                meta.insert("replication-key".into(), "revision".into());
            }
        }
    }
    std::fs::write(d.path("catalog.json"), catalog.to_string()).unwrap();
    let copy = d.db("copy.db");
    let sync = |state: Option<&str>, import: &[&str]| -> Vec<Run> {
        let mut args = vec!["--config", config, "--catalog", "catalog.json"];
        args.extend(state.map(|s| ["--state", s]).into_iter().flatten());
        let runs = d.pipe(&[(&tap, &args), ("ferry-import", import)], b"");
        all_ok(&runs);
        runs
    };
    let first = sync(None, &[&copy, "--create", "--singer"]);
    // What ferry prints is what a Singer target prints: the state, bare, the last line the one
    // to give the tap next time.
    let state = first[1].stdout().lines().last().unwrap().to_owned();
    let value: Json = serde_json::from_str(&state).unwrap();
    assert_eq!(
        value["bookmarks"]["public-orders"]["replication_key_value"], 200,
        "{state}"
    );
    std::fs::write(d.path("state.json"), &state).unwrap();

    // The source moves on; the next run reads only what changed since the state, and ferry
    // upserts it by key (the row at the bookmark comes again, as Singer taps send it).
    c.batch_execute(
        "UPDATE orders SET note = note || ' (changed)', revision = 300 + id WHERE id % 20 = 0;
         INSERT INTO orders SELECT i, 'order ' || i, i * 1.5, 1000 + i FROM generate_series(201, 205) i;",
    )
    .unwrap();
    let second = sync(Some("state.json"), &[&copy, "--singer"]);
    second[1].stderr_has("15 rows read");
    let source: Vec<(i64, String, f64)> = c
        .query("SELECT id, note, total::float8 FROM orders ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let s = d.open("copy.db");
    // The tap names its stream `public-orders` (schema-table, as Singer SDK taps do): it lands
    // in the table `orders`.
    let mut st = s.prepare("SELECT id, note, total FROM orders ORDER BY id").unwrap();
    let copied: Vec<(i64, String, f64)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(copied.len(), 205);
    assert_eq!(copied, source);
}
