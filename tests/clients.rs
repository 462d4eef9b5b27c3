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
fn python(name: &str) -> Option<String> {
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
    let runs = d.pipe(
        &[
            ("ferry-export", &[&src]),
            ("ferry-import", &[&url, "--on-conflict", "overwrite"]),
        ],
        b"",
    );
    all_ok(&runs);
    d.run("ferry-validate", &[&src, &url], b"").ok();
    assert_eq!(checks(&d, &py, &url), expected);
}

#[test]
fn a_django_app_loaded_into_tables_ferry_made_answers_every_orm_query_alike() {
    let Some(py) = python("clients") else { return };
    let d = app_dir();
    let (src, expected) = seeded_app(&d, &py, None);
    let url = pg::cluster().database("django_created");
    let runs = d.pipe(
        &[
            ("ferry-export", &[&src]),
            ("ferry-import", &[&url, "--create", "--naive-utc"]),
        ],
        b"",
    );
    all_ok(&runs);
    d.run("ferry-validate", &[&src, &url], b"").ok();
    // JSON lookups, UUID lookups, aware times, booleans, decimals, the sequences of every table.
    assert_eq!(checks(&d, &py, &url), expected);
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
