//! A kill inside a commit, at exact instants: the importer runs under `strace`, which SIGKILLs it
//! as it enters its N-th `pwrite64` — the calls SQLite writes the state file (and a SQLite
//! target) with, so each kill lands part way through writing a commit. After each kill the same
//! import runs again, must finish with every row exactly once, and validate equal.
//!
//! The suite sweeps a spread of kill points; `FERRY_CRASH_POINTS=all` sweeps every write.

#![allow(clippy::unwrap_used, clippy::print_stderr)] // tests fail loudly and report what they did

use crate::common;
use std::process::Stdio;

use crate::common::{Dir, pg};

/// A keyed table and a keyless one; the stream exported from it, as a file.
fn stream(d: &Dir) -> (String, std::path::PathBuf) {
    d.open("src.db")
        .execute_batch(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, amount REAL, data BLOB);
             CREATE TABLE events (at TEXT, n INTEGER);
             WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 3000)
               INSERT INTO items SELECT i, 'item ' || i, i / 7.0, CASE WHEN i % 3 = 0 THEN zeroblob(i % 40) END FROM s;
             WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 750)
               INSERT INTO events SELECT '2024-01-01', i % 10 FROM s;",
        )
        .unwrap();
    let src = d.db("src.db");
    let out = d.run("ferry-export", &[&src, "--state-every", "200"], b"");
    out.ok();
    let path = d.path("stream.ndjson");
    std::fs::write(&path, &out.output.stdout).unwrap();
    (src, path)
}

/// `ferry-import ARGS < stream` under strace, killed as it enters its `n`-th pwrite64 (counted
/// per thread). Whether the kill landed (false: the import ended first).
fn import_killed_at_write(d: &Dir, args: &[&str], stream: &std::path::Path, n: usize) -> bool {
    let import = d.cmd("ferry-import", args);
    let mut c = std::process::Command::new("strace");
    c.args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=pwrite64", "-e"])
        .arg(format!("inject=pwrite64:signal=KILL:when={n}"))
        .arg(import.get_program())
        .args(import.get_args())
        .current_dir(d.root())
        .env_remove("FERRY_LOG");
    for (k, v) in import.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    let out = c
        .stdin(std::fs::File::open(stream).unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("running strace (install it: apt-get install strace): {e}"));
    match out.status.code() {
        Some(0) => false,
        // strace ends as its tracee did: killed.
        None | Some(137) => true,
        other => panic!(
            "the import failed instead of being killed ({other:?}): {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// The kill points to try: every write when asked, else the first few writes (creating the
/// state file and the first commits) and then a spread over the rest.
fn points() -> impl Iterator<Item = usize> {
    let all = std::env::var("FERRY_CRASH_POINTS").is_ok_and(|v| v == "all");
    (1..).filter(move |n| all || *n <= 12 || n % 23 == 0)
}

/// Kill the import at each point on a fresh target (`reset` clears it), then run it again and
/// check it finishes exactly and validates equal. The number of kill points that landed.
fn sweep(d: &Dir, src: &str, dst: &str, stream: &std::path::Path, reset: &dyn Fn()) -> usize {
    let data = std::fs::read(stream).unwrap();
    let mut landed = 0;
    for n in points() {
        reset();
        let _ = std::fs::remove_dir_all(d.path(".ferry"));
        if !import_killed_at_write(d, &[dst, "--create", "-q"], stream, n) {
            break;
        }
        landed += 1;
        let again = d.run("ferry-import", &[dst, "--create"], &data);
        again.ok();
        let (written, already) = common::written_and_already(&again);
        assert_eq!(written + already, 3750, "killed at write {n}: {again:?}");
        d.run("ferry-validate", &[src, dst], b"").ok();
    }
    landed
}

#[test]
fn a_kill_inside_any_write_of_a_sqlite_import_then_the_same_import_finishes_equal() {
    let d = Dir::new();
    let (src, stream) = stream(&d);
    let dst = d.db("dst.db");
    let landed = sweep(&d, &src, &dst, &stream, &|| {
        for f in ["dst.db", "dst.db-wal", "dst.db-shm"] {
            let _ = std::fs::remove_file(d.path(f));
        }
    });
    eprintln!("sqlite: {landed} kill points");
    assert!(landed >= 15, "only {landed} kill points landed");
}

#[test]
fn a_kill_inside_any_write_of_the_state_file_of_a_postgresql_import_then_it_finishes_equal() {
    let d = Dir::new();
    let (src, stream) = stream(&d);
    let url = pg::cluster().database("crashwrites");
    let landed = sweep(&d, &src, &url, &stream, &|| {
        pg::connect(&url)
            .batch_execute(r#"DROP TABLE IF EXISTS items, events, "_ferry_commits""#)
            .unwrap();
    });
    eprintln!("postgresql: {landed} kill points");
    assert!(landed >= 6, "only {landed} kill points landed");
}
