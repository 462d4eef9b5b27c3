//! A disk that fills up under the importer: the target, or the state file, on a small tmpfs.
//! The import must stop with a clear error naming the full disk, leave the state consistent,
//! and finish exactly once the space is back (the tmpfs grown) and the same command runs again.
//!
//! Mounting needs root (as in CI): elsewhere these tests fail saying so, and are left out only
//! by asking (`cargo test --test suite -- --skip diskfull::`), which the harness counts as
//! filtered out, never as passed.

#![allow(clippy::unwrap_used, clippy::print_stderr)] // tests fail loudly and report what they did

use crate::common;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{Dir, write_file};

/// A size-limited tmpfs, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// A tmpfs of `size` (e.g. "1m") at `path`; failing the test where mounting is not permitted.
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "cannot mount a tmpfs at {}: these tests need root (CI runs as root); run them as root, or leave them out visibly: cargo test --test suite -- --skip diskfull::",
            path.display()
        );
        Tmpfs { path: path.to_owned() }
    }

    /// Space is back.
    fn grow(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(ok.success(), "remount {}", self.path.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// 20,000 rows of about 300 bytes: some 6 MB in SQLite.
fn source(d: &Dir) -> String {
    d.open("src.db")
        .execute_batch(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, note TEXT);
             CREATE TABLE events (at TEXT, n INTEGER);
             WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 20000)
               INSERT INTO items SELECT i, 'item ' || i, printf('%.280c', 'x') || i FROM s;
             WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 5000)
               INSERT INTO events SELECT '2024-01-01', i % 10 FROM s;",
        )
        .unwrap();
    d.db("src.db")
}

fn pipeline(d: &Dir, src: &str, import_args: &[&str]) -> Vec<common::Run> {
    d.pipe(
        &[
            ("ferry-export", &[src, "--state-every", "500"]),
            ("ferry-import", import_args),
        ],
        b"",
    )
}

/// The rerun after the space came back: every row once, equal to the source.
fn finishes_equal(d: &Dir, src: &str, dst: &str, import_args: &[&str]) {
    let runs = pipeline(d, src, import_args);
    common::all_ok(&runs);
    let (written, already) = common::written_and_already(&runs[1]);
    assert_eq!(written + already, 25_000, "{:?}", runs[1]);
    d.run("ferry-validate", &[src, dst], b"").ok();
}

#[test]
fn a_target_disk_that_fills_up_stops_the_import_clearly_and_it_finishes_once_space_is_back() {
    let d = Dir::new();
    let src = source(&d);
    let disk = Tmpfs::mount(&d.path("small"), "2m");
    let dst = format!("sqlite:{}", d.path("small/dst.db").display());
    let runs = pipeline(&d, &src, &[&dst, "--create"]);
    runs[1].expect_code(2).stderr_has("full");
    let err = runs[1].stderr();
    assert!(err.contains("re-run the same command"), "{err}");
    // What was committed is whole: every committed marker's rows are there.
    let c = rusqlite::Connection::open(d.path("small/dst.db")).unwrap();
    let rows: i64 = c.query_row("SELECT count(*) FROM items", [], |r| r.get(0)).unwrap_or(0);
    assert!(rows < 20_000, "the disk filled before the end: {rows}");
    drop(c);

    disk.grow("64m");
    finishes_equal(&d, &src, &dst, &[&dst, "--create"]);
}

#[test]
fn a_state_file_disk_that_fills_up_stops_the_import_clearly_and_it_finishes_once_space_is_back() {
    let d = Dir::new();
    let src = source(&d);
    let disk = Tmpfs::mount(&d.path("small"), "1m");
    // Most of the small disk is taken already.
    write_file(&d.path("small"), "filler", &vec![7u8; 900 << 10]);
    let state = d.path("small/state.db");
    let state = state.to_str().unwrap();
    let dst = d.db("dst.db");
    let args = [dst.as_str(), "--create", "--state", state];
    let runs = pipeline(&d, &src, &args);
    runs[1].expect_code(2).stderr_has("full");
    let err = runs[1].stderr();
    assert!(err.contains("state"), "the error names the state file: {err}");
    assert!(err.contains("re-run the same command"), "{err}");

    disk.grow("64m");
    finishes_equal(&d, &src, &dst, &args);
}

#[test]
fn a_directory_target_that_fills_up_stops_clearly_and_every_file_lands_once_space_is_back() {
    let d = Dir::new();
    let tree = d.path("tree");
    for i in 0..300 {
        write_file(&tree, format!("d{}/f{i}.bin", i % 5), &vec![(i % 251) as u8; 20_000]);
    }
    let disk = Tmpfs::mount(&d.path("small"), "2m");
    let src = format!("dir:{}", tree.display());
    let dst = format!("dir:{}", d.path("small/out").display());
    let runs = d.pipe(&[("ferry-export", &[&src]), ("ferry-import", &[&dst])], b"");
    runs[1].expect_code(2).stderr_has("No space left on device");
    let err = runs[1].stderr();
    assert!(err.contains("re-run the same command"), "{err}");

    disk.grow("64m");
    let runs = d.pipe(&[("ferry-export", &[&src]), ("ferry-import", &[&dst])], b"");
    common::all_ok(&runs);
    d.run("ferry-validate", &[&src, &dst], b"").ok();
}
