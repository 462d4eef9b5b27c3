//! Interruptions: a stage killed at any instant, then the same pipeline run again, finishes the job
//! with nothing lost and nothing duplicated; `--resume` continues after the last acknowledged STATE.

#![allow(clippy::unwrap_used, clippy::print_stderr)] // tests fail loudly and report what they did

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Dir, all_ok, count, written_and_already};

/// A database with a parent table, a keyed child table with a blob, and a keyless log with
/// duplicate rows (the case where a replayed batch would show).
fn build_source(d: &Dir, items: i64) -> String {
    let c = d.open("src.db");
    c.execute_batch(&format!(
        "CREATE TABLE parents (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         CREATE TABLE items (id INTEGER PRIMARY KEY, parent_id INTEGER NOT NULL REFERENCES parents (id),
                             name TEXT NOT NULL, amount REAL, qty INTEGER, blob BLOB);
         CREATE INDEX items_parent ON items (parent_id);
         CREATE TABLE events (at TEXT, what TEXT, n);
         WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 200)
           INSERT INTO parents SELECT i, 'parent ' || i FROM s;
         WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {items})
           INSERT INTO items SELECT i, 1 + i % 200, 'item ' || i, i / 7.0, i % 13, CASE WHEN i % 3 = 0 THEN zeroblob(i % 50) END FROM s;
         WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {events})
           INSERT INTO events SELECT '2024-01-01', CASE i % 4 WHEN 0 THEN 'a' WHEN 1 THEN 'b' ELSE 'c' END, i % 10 FROM s;",
        events = items / 4
    ))
    .unwrap();
    d.db("src.db")
}

/// export | import as two processes joined by a pipe.
fn spawn_pipeline(d: &Dir, src: &str, dst: &str, export_args: &[&str]) -> (Child, Child) {
    let mut ea = vec![src, "--state-every", "500", "-q"];
    ea.extend_from_slice(export_args);
    let mut export = d
        .cmd("ferry-export", &ea)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let import = d
        .cmd("ferry-import", &[dst, "--create", "-q"])
        .stdin(Stdio::from(export.stdout.take().unwrap()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (export, import)
}

/// Run the same pipeline to the end; the importer's END line.
fn finish_pipeline(d: &Dir, src: &str, dst: &str) -> serde_json::Value {
    let runs = d.pipe(
        &[
            ("ferry-export", &[src, "--state-every", "500"]),
            ("ferry-import", &[dst, "--create"]),
        ],
        b"",
    );
    all_ok(&runs);
    runs[1].lines().pop().unwrap()
}

/// Rows in the target's tables (0 for a table not created yet).
fn rows_in(d: &Dir, db: &str) -> i64 {
    if !d.path(db).exists() {
        return 0;
    }
    let c = d.open(db);
    ["parents", "items", "events"]
        .iter()
        .map(|t| {
            c.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get::<_, i64>(0))
                .unwrap_or(0)
        })
        .sum()
}

/// A small deterministic generator, seeded from the clock unless FERRY_TEST_SEED says otherwise.
struct Rng(u64);
impl Rng {
    fn new() -> (Rng, u64) {
        let seed = std::env::var("FERRY_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        (Rng(seed), seed)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[test]
fn sigkill_at_random_instants_then_the_same_pipeline_finishes_equal() {
    let (mut rng, seed) = Rng::new();
    let trials = 8;
    // How long a whole run takes here, to spread the kills over it.
    // Fast builds finish a small source before the kills can land, so grow it until a run takes
    // long enough (half a second) to have a middle.
    let mut items = 30_000;
    let mut full;
    loop {
        let probe = Dir::new();
        let src = build_source(&probe, items);
        let t0 = Instant::now();
        finish_pipeline(&probe, &src, &probe.db("dst.db"));
        full = t0.elapsed();
        if full >= Duration::from_millis(500) || items >= 480_000 {
            break;
        }
        items *= 2;
    }
    let total = items + 200 + items / 4;

    let mut report = Vec::new();
    let mut partial = 0;
    for trial in 0..trials {
        let d = Dir::new();
        let src = build_source(&d, items);
        let dst = d.db("dst.db");
        // Kill the importer, the exporter, or both stages, once or twice in a row, at instants
        // spread over the run (one stratum of it per trial, a random point inside).
        let victim = ["import", "export", "import", "import"][trial % 4];
        let kills = 1 + (trial % 3 == 2) as usize;
        let mut at = Vec::new();
        for _ in 0..kills {
            let stratum = full.as_micros() as u64 / trials as u64;
            let delay = Duration::from_micros(stratum * trial as u64 + rng.below(stratum));
            at.push(delay);
            let (mut export, mut import) = spawn_pipeline(&d, &src, &dst, &[]);
            std::thread::sleep(delay);
            match victim {
                "export" => {
                    let _ = export.kill();
                }
                _ => {
                    let _ = import.kill();
                }
            }
            let _ = export.wait();
            let _ = import.wait();
        }
        let before = rows_in(&d, "dst.db");
        partial += usize::from(before > 0 && before < total);
        let end = finish_pipeline(&d, &src, &dst);
        // Exactly once: every row already in the target is skipped, every other row written.
        assert_eq!(
            end["already_imported"].as_i64(),
            Some(before),
            "trial {trial} (seed {seed}, {victim} killed at {at:?}): {end}"
        );
        assert_eq!(
            end["written"].as_i64(),
            Some(total - before),
            "trial {trial} (seed {seed}): {end}"
        );
        let v = d.run("ferry-validate", &[&src, &dst], b"");
        assert_eq!(
            v.code(),
            Some(0),
            "trial {trial} (seed {seed}, {victim} killed at {at:?}):{v:?}"
        );
        let (a, b) = (d.open("src.db"), d.open("dst.db"));
        for t in ["parents", "items", "events"] {
            assert_eq!(count(&a, t), count(&b, t), "trial {trial} (seed {seed}): table {t}");
        }
        let indexes: i64 = b
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND name = 'items_parent'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexes, 1, "trial {trial} (seed {seed}): the deferred index is built");
        report.push(format!("{victim} x{kills} at {at:?}: {before} rows in"));
    }
    assert!(
        partial >= 2,
        "most kills should land mid-import (seed {seed}): {report:?}"
    );
    eprintln!("seed {seed}; full run {full:?}; kills: {report:?}");
}

#[test]
fn sigkill_of_the_transform_in_the_middle() {
    let d = Dir::new();
    let src = build_source(&d, 20_000);
    let dst = d.db("dst.db");
    let mut export = d
        .cmd("ferry-export", &[&src, "--state-every", "500"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut transform = d
        .cmd("ferry-transform", &["--rename-stream", "main.items=things"])
        .stdin(Stdio::from(export.stdout.take().unwrap()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut import = d
        .cmd("ferry-import", &[&dst, "--create"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Relay the transform's output ourselves so the kill lands mid-stream on any machine: pass on
    // a few thousand lines, kill the transform, then hand the import what was already in flight.
    let mut from = std::io::BufReader::new(transform.stdout.take().unwrap());
    let mut to = import.stdin.take().unwrap();
    let mut line = Vec::new();
    for _ in 0..3_000 {
        line.clear();
        if std::io::BufRead::read_until(&mut from, b'\n', &mut line).unwrap() == 0 {
            break;
        }
        std::io::Write::write_all(&mut to, &line).unwrap();
    }
    let _ = transform.kill();
    let _ = std::io::copy(&mut from, &mut to);
    drop(to);
    let _ = export.wait();
    let _ = transform.wait();
    let status = import.wait().unwrap();
    // Whether it got far or not, an import that lost its input without END fails.
    assert_ne!(status.code(), Some(0));
    let ops: &[&str] = &["--rename-stream", "main.items=things"];
    all_ok(&d.pipe(
        &[
            ("ferry-export", &[&src]),
            ("ferry-transform", ops),
            ("ferry-import", &[&dst, "--create"]),
        ],
        b"",
    ));
    all_ok(&d.pipe(
        &[
            ("ferry-export", &[&src]),
            ("ferry-transform", ops),
            ("ferry-validate", &[&dst]),
        ],
        b"",
    ));
}

#[test]
fn export_resume_continues_the_interrupted_run_after_its_last_acknowledged_state() {
    let d = Dir::new();
    let src = build_source(&d, 10_000);
    let dst = d.db("dst.db");
    let full = d.run("ferry-export", &[&src, "--state-every", "1000"], b"");
    full.ok();
    let lines: Vec<&[u8]> = full.output.stdout.split(|b| *b == b'\n').collect();
    // Feed the import the first 6,000 lines only: it stops without END.
    let cut: Vec<u8> = lines[..6000]
        .join(&b'\n')
        .into_iter()
        .chain(b"\n".iter().copied())
        .collect();
    let first = d.run("ferry-import", &[&dst, "--create"], &cut);
    first.expect_code(4).stderr_has("without END");
    let committed = count(&d.open("dst.db"), "items");
    assert!(committed > 0 && committed < 10_000, "{committed}");

    let resumed = d.run("ferry-export", &[&src, "--resume", "--state-every", "1000"], b"");
    resumed.ok().stderr_has("resuming run");
    let rl = resumed.lines();
    let begin = &rl[0];
    let full_begin: serde_json::Value = serde_json::from_slice(lines[0]).unwrap();
    assert_eq!(begin["run_id"], full_begin["run_id"], "the same run continues");
    let first_state = &rl[1]["value"];
    assert!(
        first_state["seq"].as_u64().unwrap() > 0,
        "state numbering continues: {first_state}"
    );
    let items_records = rl
        .iter()
        .filter(|l| l["type"] == "RECORD" && l["stream"] == "main.items")
        .count() as i64;
    assert_eq!(
        items_records,
        10_000 - committed,
        "exactly the rows after the acknowledged STATE"
    );
    assert!(
        !rl.iter()
            .any(|l| l["type"] == "SCHEMA" && l["stream"] == "main.parents"),
        "completed streams are skipped"
    );

    let second = d.run("ferry-import", &[&dst, "--create"], &resumed.output.stdout);
    second.ok();
    let end = second.lines().pop().unwrap();
    assert_eq!(end["already_imported"], 0, "{second:?}");
    d.run("ferry-validate", &[&src, &dst], b"").ok();

    // The status shows one run, complete, after two attempts.
    let s = d.run("ferry", &["status", "--json"], b"");
    let runs: Vec<_> = s.lines().into_iter().filter(|l| l["type"] == "RUN").collect();
    assert_eq!(runs.len(), 1, "{s:?}");
    assert_eq!(runs[0]["run"]["status"], "complete");
    assert_eq!(runs[0]["run"]["attempts"], 2);
    // And --resume after completion has nothing left to send.
    let again = d.run("ferry-export", &[&src, "--resume"], b"");
    again.ok();
    assert_eq!(again.lines().iter().filter(|l| l["type"] == "RECORD").count(), 0);
}

#[test]
fn resume_without_a_state_file_starts_from_the_beginning() {
    let d = Dir::new();
    let src = build_source(&d, 100);
    let r = d.run("ferry-export", &[&src, "--resume"], b"");
    r.ok().stderr_has("starting from the beginning");
    assert_eq!(
        r.lines().iter().filter(|l| l["type"] == "RECORD").count(),
        100 + 200 + 25
    );
}

#[test]
fn resume_finds_the_run_however_the_source_path_is_written() {
    let d = Dir::new();
    build_source(&d, 2_000);
    let full = d.run("ferry-export", &["sqlite:src.db", "--state-every", "500"], b"");
    let text = full.stdout();
    let cut: String = text.lines().take(900).map(|l| format!("{l}\n")).collect();
    d.run("ferry-import", &["sqlite:dst.db", "--create"], cut.as_bytes())
        .expect_code(4);
    // Absolute this time, with a detour through ".".
    let abs = format!("sqlite:{}/./src.db", d.root().display());
    let resumed = d.run("ferry-export", &[&abs, "--resume", "--state-every", "500"], b"");
    resumed.ok().stderr_has("resuming run");
    d.run("ferry-import", &["sqlite:dst.db", "--create"], &resumed.output.stdout)
        .ok();
    d.run("ferry-validate", &["sqlite:src.db", "sqlite:dst.db"], b"").ok();
}

#[test]
fn exports_of_different_rows_are_different_migrations() {
    // Active users first, inactive ones later, into the same table: the second import must not
    // take the first one's commit markers for its own.
    let d = Dir::new();
    let src = d.sample();
    let dst = d.db("dst.db");
    let active: &[&str] = &[&src, "--table", "users", "--where", "users=is_active = 1"];
    let inactive: &[&str] = &[&src, "--table", "users", "--where", "users=is_active = 0"];
    all_ok(&d.pipe(&[("ferry-export", active), ("ferry-import", &[&dst, "--create"])], b""));
    let second = d.pipe(
        &[("ferry-export", inactive), ("ferry-import", &[&dst, "--create"])],
        b"",
    );
    all_ok(&second);
    assert_eq!(written_and_already(&second[1]), (14, 0));
    assert_eq!(count(&d.open("dst.db"), "users"), 47);
    // Each is its own run in the state file, and --resume picks the one with the same selection.
    let r = d.run(
        "ferry-export",
        &[&src, "--table", "users", "--where", "users=is_active = 1", "--resume"],
        b"",
    );
    r.ok();
    assert_eq!(
        r.lines().iter().filter(|l| l["type"] == "RECORD").count(),
        0,
        "that one is complete"
    );
    let other = d.run("ferry-export", &[&src, "--table", "users", "--resume"], b"");
    other.ok().stderr_has("starting from the beginning");
}

#[test]
fn a_rerun_after_the_source_changed_under_the_rows_it_would_skip_refuses_and_says_what_to_do() {
    let d = Dir::new();
    let src = build_source(&d, 6_000);
    let dst = d.db("dst.db");
    // A first run, killed after it committed part of the items.
    d.pipe_killed_after(
        &[
            ("ferry-export", &[src.as_str(), "--state-every", "500"][..]),
            ("ferry-import", &[dst.as_str(), "--create"][..]),
        ],
        12,
    );
    let committed = rows_in(&d, "dst.db");
    let done: i64 = d
        .open("dst.db")
        .query_row("SELECT coalesce(max(id), 0) FROM items", [], |r| r.get(0))
        .unwrap();
    assert!(done > 10 && done < 6_000, "{done}");
    // Rows change before where that run got to in the items.
    let c = d.open("src.db");
    let before = done / 2;
    c.execute("DELETE FROM items WHERE id = ?1", [before + 3]).unwrap();
    c.execute(
        "INSERT INTO items VALUES (?1, 1, 'inserted meanwhile', 0, 0, NULL)",
        [before + 3],
    )
    .unwrap();
    c.execute(
        "UPDATE items SET name = 'changed meanwhile' WHERE id = ?1",
        [before + 1],
    )
    .unwrap();
    drop(c);
    // The same pipeline would skip the first rows by position, and lose that one: refused.
    let runs = d.pipe(
        &[
            ("ferry-export", &[src.as_str()][..]),
            ("ferry-import", &[dst.as_str(), "--create", "--on-conflict", "skip"][..]),
        ],
        b"",
    );
    runs[1]
        .expect_code(2)
        .stderr_has("the source changed since run ")
        .stderr_has("ferry rollback --batch");
    // Resuming after the committed rows would trust them unchanged: not offered here.
    assert!(!runs[1].stderr().contains("--resume"), "{:?}", runs[1]);
    assert_eq!(rows_in(&d, "dst.db"), committed, "nothing written");
    // As it says: that run rolled back (the refused run, which wrote nothing, does not stand in
    // its way), then the same command.
    let stderr = runs[1].stderr();
    let advice = stderr.split("(ferry rollback ").nth(1).unwrap();
    let advice: Vec<&str> = advice.split(')').next().unwrap().split(' ').collect();
    assert_eq!((advice[0], advice[2]), ("--batch", "--confirm"), "{stderr}");
    d.run("ferry", &["rollback", advice[0], advice[1], advice[2]], b"").ok();
    let items: i64 = d
        .open("dst.db")
        .query_row("SELECT count(*) FROM sqlite_master WHERE name = 'items'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(items, 0, "the run's table is dropped");
    let runs = d.pipe(
        &[
            ("ferry-export", &[src.as_str()][..]),
            ("ferry-import", &[dst.as_str(), "--create"][..]),
        ],
        b"",
    );
    all_ok(&runs);
    d.run("ferry-validate", &[&src, &dst], b"").ok();
    // Unchanged since: the same command again skips everything, as before.
    let again = d.pipe(
        &[
            ("ferry-export", &[src.as_str()][..]),
            ("ferry-import", &[dst.as_str(), "--create"][..]),
        ],
        b"",
    );
    all_ok(&again);
    // And a source that grew after a complete import is not taken as done.
    d.open("src.db")
        .execute("INSERT INTO events VALUES ('2025-01-01', 'late', 1)", [])
        .unwrap();
    let grown = d.pipe(
        &[
            ("ferry-export", &[src.as_str()][..]),
            ("ferry-import", &[dst.as_str(), "--create"][..]),
        ],
        b"",
    );
    grown[1].expect_code(2).stderr_has("the source changed since run ");
}

#[test]
fn export_resume_of_a_run_the_target_does_not_hold_is_refused_never_done() {
    let d = Dir::new();
    let src = build_source(&d, 2_000);
    let load = |target: &str, resume: bool| {
        let mut ea = vec![src.as_str()];
        if resume {
            ea.push("--resume");
        }
        d.pipe(
            &[("ferry-export", &ea[..]), ("ferry-import", &[target, "--create"][..])],
            b"",
        )
    };
    all_ok(&load(&d.db("b.db"), false));
    // The last import from this source went into b.db: resumed into a.db, the export would send
    // nothing of the streams that run completed.
    let into_a = load(&d.db("a.db"), true);
    into_a[1]
        .expect_code(2)
        .stderr_has("does not hold them complete")
        .stderr_has("run the export without --resume");
    // That run rolled back, then resumed into its own target: nothing of it is there any more.
    d.run("ferry", &["rollback", "--last", "--confirm"], b"").ok();
    let status = d.run("ferry", &["status", "--json"], b"");
    assert!(
        status
            .lines()
            .iter()
            .any(|l| l["type"] == "RUN" && l["run"]["status"] == "rolled_back"),
        "ferry status says the run was rolled back: {:?}",
        status.lines()
    );
    // Resumed after its rollback, the export starts over (nothing of that run is left to go on
    // from), and says so.
    let again = load(&d.db("b.db"), true);
    all_ok(&again);
    again[0].stderr_has("was rolled back; starting from the beginning");
    d.run("ferry-validate", &[&src, &d.db("b.db")], b"").ok();
    // As the refusal said: without --resume, everything goes in.
    for db in ["a.db", "b.db"] {
        all_ok(&load(&d.db(db), false));
        d.run("ferry-validate", &[&src, &d.db(db)], b"").ok();
    }
}
