//! Named backups: written whole or not at all, listed, restored into SQLite and PostgreSQL and
//! validated there, refused when damaged, pruned by count and age.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use crate::common;
use crate::common::{Dir, pg};

fn names(d: &Dir) -> Vec<String> {
    let r = d.run("ferry", &["backup", "--list", "--json"], b"");
    r.ok();
    r.lines()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_backup_restores_into_a_new_database_validated_equal_and_a_damaged_one_is_refused() {
    let d = Dir::new();
    let src = d.sample();
    d.run("ferry", &["backup", &src, "--name", "before-upgrade"], b"")
        .ok()
        .stderr_has("7 streams, 680 rows");
    let list = d.run("ferry", &["backup", "--list", "--json"], b"");
    let m = &list.lines()[0];
    assert_eq!(
        (m["name"].as_str(), m["rows"].as_u64()),
        (Some("before-upgrade"), Some(680)),
        "{m}"
    );
    assert_eq!(m["streams"].as_array().unwrap().len(), 7);
    assert_eq!(m["sha256"].as_str().unwrap().len(), 64);
    // The same name again is refused; the backup is untouched.
    d.run("ferry", &["backup", &src, "--name", "before-upgrade"], b"")
        .expect_code(2)
        .stderr_has("exists already");

    let r = d.run(
        "ferry",
        &["restore", "before-upgrade", "sqlite:restored.db", "--create"],
        b"",
    );
    r.ok().stderr_has("validated equal to backup before-upgrade");
    d.run("ferry-validate", &[&src, "sqlite:restored.db"], b"").ok();
    for t in ["users", "saved_files", "app_settings", "audit_log"] {
        let order = if t == "audit_log" { "rowid" } else { "1" };
        assert_eq!(
            common::dump(&d.open("sample.db"), t, order),
            common::dump(&d.open("restored.db"), t, order),
            "{t} byte for byte"
        );
    }
    // Restoring again over it: every row is already there.
    d.run("ferry", &["restore", "before-upgrade", "sqlite:restored.db"], b"")
        .ok()
        .stderr_has("0 rows written, 680 already there");

    // One byte changed in the file: refused before anything is read into the target.
    let file = d.path(".ferry/backups/before-upgrade/stream.ndjson.zst");
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&file, bytes).unwrap();
    d.run(
        "ferry",
        &["restore", "before-upgrade", "sqlite:fresh.db", "--create"],
        b"",
    )
    .expect_code(2)
    .stderr_has("is damaged");
    assert!(!d.path("fresh.db").exists(), "nothing was loaded");
    d.run("ferry", &["restore", "no-such", "sqlite:fresh.db"], b"")
        .expect_code(2)
        .stderr_has("backups: before-upgrade");
}

#[test]
fn a_backup_of_postgresql_restores_into_postgresql_and_a_failed_backup_leaves_nothing() {
    let d = Dir::new();
    let url = pg::cluster().database("backup_src");
    let dst = pg::cluster().database("backup_dst");
    pg::connect(&url)
        .batch_execute(
            "CREATE TABLE accounts (id bigint PRIMARY KEY, email text NOT NULL UNIQUE, balance numeric(12,2), meta jsonb);
             INSERT INTO accounts SELECT i, 'u' || i || '@example.com', i * 1.25, jsonb_build_object('n', i) FROM generate_series(1, 2000) i;
             CREATE TABLE moves (id bigint PRIMARY KEY, account_id bigint REFERENCES accounts (id), at timestamptz NOT NULL);
             INSERT INTO moves SELECT i, 1 + i % 2000, '2026-01-01'::timestamptz + i * interval '1 minute' FROM generate_series(1, 5000) i;",
        )
        .unwrap();
    d.run("ferry", &["backup", &url, "--name", "pg-nightly"], b"").ok();
    d.run("ferry", &["restore", "pg-nightly", &dst, "--create"], b"")
        .ok()
        .stderr_has("validated equal");
    d.run("ferry-validate", &[&url, &dst], b"").ok();
    // The password never reaches the manifest.
    let manifest = std::fs::read_to_string(d.path(".ferry/backups/pg-nightly/manifest.json")).unwrap();
    assert!(!manifest.contains(pg::PASSWORD), "{manifest}");

    // A backup that fails part way (a table that is not there) leaves no backup behind.
    d.run("ferry", &["backup", &url, "--name", "broken", "--table", "nope"], b"")
        .expect_code(2);
    assert_eq!(names(&d), ["pg-nightly"]);
    let leftovers: Vec<_> = std::fs::read_dir(d.path(".ferry/backups"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
}

#[test]
fn old_backups_are_pruned_by_count_and_age_and_only_when_confirmed() {
    let d = Dir::new();
    let src = d.sample();
    for n in ["b1", "b2", "b3"] {
        d.run("ferry", &["backup", &src, "--name", n, "-q"], b"").ok();
    }
    assert_eq!(names(&d), ["b1", "b2", "b3"]);
    d.run("ferry", &["backup", "--prune", "--keep", "1"], b"")
        .ok()
        .stderr_has("would remove b1")
        .stderr_has("2 would go");
    assert_eq!(names(&d), ["b1", "b2", "b3"], "a dry run removes nothing");
    d.run(
        "ferry",
        &["backup", "--prune", "--keep", "1", "--older-than", "1h", "--confirm"],
        b"",
    )
    .ok();
    assert_eq!(names(&d), ["b1", "b2", "b3"], "none is an hour old");
    d.run("ferry", &["backup", "--prune", "--keep", "1", "--confirm"], b"")
        .ok();
    assert_eq!(names(&d), ["b3"]);
    d.run("ferry", &["backup", "--prune"], b"")
        .expect_code(2)
        .stderr_has("--keep");
    d.run("ferry", &["backup", "--prune", "--older-than", "soon"], b"")
        .expect_code(2);
    d.run("ferry", &["backup", &src, "--name", "../escape"], b"")
        .expect_code(2)
        .stderr_has("backup name");
}
