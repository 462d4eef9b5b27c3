//! `--shard K/N`: the parts of an export never overlap and together are everything (tables by
//! key ranges the source computes, files by a hash of their path), and N shards run at once as
//! separate pipelines into one PostgreSQL and one S3 server, each with its own state file, make
//! a target the whole-source validation finds equal, with its keys and foreign keys built once.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::BTreeMap;
use std::process::{Child, Stdio};

use crate::common::{self, Dir, pg, s3::S3Server};

/// A source with every kind of key a split meets: integers spread unevenly, text, a composite
/// key, a nullable SQLite key, no key at all, and a child pointing at its parent.
const SOURCE_SQL: &str = "
    CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL);
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
      INSERT INTO items SELECT CASE WHEN i % 7 = 0 THEN i * 1000 ELSE i END, 'item ' || i, i / 4.0 FROM n;
    CREATE TABLE tags (code TEXT PRIMARY KEY, label TEXT);
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 400)
      INSERT INTO tags SELECT printf('%s-%04d', char(65 + i % 26), i), 'tag ' || i FROM n;
    CREATE TABLE pairs (a TEXT NOT NULL, b INTEGER NOT NULL, v TEXT, PRIMARY KEY (a, b));
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)
      INSERT INTO pairs SELECT char(97 + i % 3), i, 'p' || i FROM n;
    CREATE TABLE notes (body TEXT);
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50)
      INSERT INTO notes SELECT 'note ' || i FROM n;
    CREATE TABLE lines (id INTEGER PRIMARY KEY, item_id INTEGER NOT NULL REFERENCES items (id), qty INTEGER);
    INSERT INTO lines SELECT id, id, id % 5 FROM items;
";

fn source(d: &Dir) -> String {
    let src = d.db("shop.db");
    d.open("shop.db").execute_batch(SOURCE_SQL).unwrap();
    src
}

/// Each stream's records by key (or, keyless, by the whole record), with how many times they came.
fn keys_of(stream_lines: &[serde_json::Value]) -> BTreeMap<String, BTreeMap<String, u32>> {
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut out: BTreeMap<String, BTreeMap<String, u32>> = BTreeMap::new();
    for l in stream_lines {
        match l["type"].as_str() {
            Some("SCHEMA") => {
                let k = l["key_properties"]
                    .as_array()
                    .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
                    .unwrap_or_default();
                keys.insert(l["stream"].as_str().unwrap().to_owned(), k);
            }
            Some("RECORD") => {
                let stream = l["stream"].as_str().unwrap();
                let key = match keys[stream].as_slice() {
                    [] => l["record"].to_string(),
                    cols => cols
                        .iter()
                        .map(|c| l["record"][c].to_string())
                        .collect::<Vec<_>>()
                        .join("|"),
                };
                *out.entry(stream.to_owned()).or_default().entry(key).or_default() += 1;
            }
            _ => {}
        }
    }
    out
}

/// Every shard's stream of `src` (N of them) and the whole export's: each key in exactly one
/// shard, the union the whole, each shard's STREAM_END counting its own rows.
fn shards_tile(d: &Dir, src: &str, n: u32) {
    let whole = d.run("ferry-export", &[src], b"");
    whole.ok();
    let whole = keys_of(&whole.lines());
    let mut union: BTreeMap<String, BTreeMap<String, u32>> = BTreeMap::new();
    for k in 1..=n {
        let shard = format!("{k}/{n}");
        let run = d.run("ferry-export", &[src, "--shard", &shard], b"");
        run.ok();
        let lines = run.lines();
        let begin = &lines[0];
        assert_eq!(begin["source"]["shard"], serde_json::json!({"k": k, "n": n}), "{begin}");
        let got = keys_of(&lines);
        for l in lines.iter().filter(|l| l["type"] == "STREAM_END") {
            let stream = l["stream"].as_str().unwrap();
            let rows: u32 = got.get(stream).map_or(0, |m| m.values().sum());
            assert_eq!(l["rows"], rows, "shard {shard}, {stream}");
        }
        for (stream, keys) in got {
            for (key, count) in keys {
                *union.entry(stream.clone()).or_default().entry(key).or_default() += count;
            }
        }
    }
    assert_eq!(union, whole, "the shards together are the whole export, each key once");
}

#[test]
fn sqlite_tables_split_into_shards_that_never_overlap_and_together_are_everything() {
    let d = Dir::new();
    let src = source(&d);
    for n in [1, 3, 4] {
        shards_tile(&d, &src, n);
    }
    // Wrong shards are refused before anything is read.
    for bad in ["0/3", "4/3", "3", "x/y"] {
        d.run("ferry-export", &[&src, "--shard", bad], b"")
            .expect_code(2)
            .stderr_has("--shard");
    }
}

#[test]
fn postgresql_tables_split_into_shards_that_never_overlap_and_together_are_everything() {
    let d = Dir::new();
    let src = source(&d);
    let pg = pg::cluster().database("shards_src");
    common::all_ok(&d.pipe(&[("ferry-export", &[&src]), ("ferry-import", &[&pg, "--create"])], b""));
    shards_tile(&d, &pg, 3);
    // Shards of a validation split text keys by their bytes on both sides: PostgreSQL's parts
    // of each table are SQLite's.
    let reports = validate_shards(&d, &pg, &src, 3);
    merge(&d, &reports).ok();
}

/// N pipelines `ferry-export SRC --shard K/N | ferry-import DST ARGS --state sK.db` at once; each
/// one's import stderr once all have ended (asserting every stage exited 0).
fn run_shards(d: &Dir, src: &str, dst: &str, n: u32, import_args: &[&str]) -> Vec<String> {
    run_some_shards(d, src, dst, n, 1, import_args)
}

/// Shards `from..=n` of `n`, at once, into `dst` with `--create`.
fn run_shards_from(d: &Dir, src: &str, dst: &str, n: u32, from: u32) -> Vec<String> {
    run_some_shards(d, src, dst, n, from, &["--create"])
}

fn run_some_shards(d: &Dir, src: &str, dst: &str, n: u32, from: u32, import_args: &[&str]) -> Vec<String> {
    let mut running: Vec<(Child, Child)> = Vec::new();
    for k in from..=n {
        let (shard, state) = (format!("{k}/{n}"), format!("shard-{k}.db"));
        let mut export = d
            .cmd("ferry-export", &[src, "--shard", &shard, "--state", &state])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut args = vec![dst, "--state", &state];
        args.extend_from_slice(import_args);
        let import = d
            .cmd("ferry-import", &args)
            .stdin(export.stdout.take().unwrap())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        running.push((export, import));
    }
    let mut stderrs = Vec::new();
    for (k, (export, import)) in (from..).zip(running) {
        let (e, i) = (export.wait_with_output().unwrap(), import.wait_with_output().unwrap());
        let said = format!(
            "shard {k}: export {:?}: {}\nimport {:?}: {}",
            e.status,
            String::from_utf8_lossy(&e.stderr),
            i.status,
            String::from_utf8_lossy(&i.stderr)
        );
        assert!(e.status.success() && i.status.success(), "{said}");
        stderrs.push(said);
    }
    stderrs
}

/// `ferry-validate --merge REPORTS...`.
fn merge(d: &Dir, reports: &[String]) -> common::Run {
    let mut args = vec!["--merge"];
    args.extend(reports.iter().map(String::as_str));
    d.run("ferry-validate", &args, b"")
}

/// `ferry-validate SRC DST --shard K/N --report vK.json` for every K (each passing); the reports.
fn validate_shards(d: &Dir, src: &str, dst: &str, n: u32) -> Vec<String> {
    (1..=n)
        .map(|k| {
            let report = format!("v{k}.json");
            let shard = format!("{k}/{n}");
            let v = d.run(
                "ferry-validate",
                &[src, dst, "--shard", &shard, "--report", &report],
                b"",
            );
            v.ok();
            report
        })
        .collect()
}

#[test]
fn shards_loaded_at_once_into_one_postgresql_make_the_whole_with_its_keys_built_once() {
    let d = Dir::new();
    let src = source(&d);
    let dst = pg::cluster().database("shards_dst");
    let said = run_shards(&d, &src, &dst, 3, &["--create"]).join("\n");
    assert!(!said.contains("deadlock"), "{said}");
    // One shard made each table, one (the last to finish it) built its key, one its foreign key.
    for once in [
        "created table stream=main.items",
        r#"ALTER TABLE "public"."items" ADD PRIMARY KEY ("id")"#,
        r#"ADD CONSTRAINT "lines_item_id_fkey" FOREIGN KEY"#,
    ] {
        assert_eq!(said.matches(once).count(), 1, "{once}:\n{said}");
    }

    // The whole source against the target: every row, key and reference.
    let v = d.run("ferry-validate", &[&src, &dst], b"");
    v.ok();
    // The keys and the foreign key were built, once, after every shard's rows were in.
    let mut c = pg::connect(&dst);
    let constraints: Vec<(String, String)> = c
        .query(
            "SELECT conrelid::regclass::text, contype::text FROM pg_constraint
             WHERE connamespace = 'public'::regnamespace AND contype IN ('p', 'f')
               AND conrelid::regclass::text NOT LIKE '\\_ferry%' ORDER BY 1, 2",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let want: Vec<(String, String)> = [
        ("items", "p"),
        ("lines", "f"),
        ("lines", "p"),
        ("pairs", "p"),
        ("tags", "p"),
    ]
    .iter()
    .map(|(t, k)| (t.to_string(), k.to_string()))
    .collect();
    assert_eq!(constraints, want);
    let pending: i64 = c
        .query_one(
            "SELECT count(*) FROM _ferry_commits WHERE pending_ddl IS NOT NULL OR pending_fk IS NOT NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(pending, 0, "nothing left waiting");
    // The application's next item takes a number past every loaded one.
    let next: i64 = c
        .query_one("INSERT INTO items (name) VALUES ('new') RETURNING id", &[])
        .unwrap()
        .get(0);
    assert_eq!(next, 19_999_001, "past the largest loaded id, 19999 * 1000");
    c.batch_execute("DELETE FROM items WHERE name = 'new'").unwrap();

    // `ferry status` over the shards' state files sums them.
    let status = d.run("ferry", &["status", "--state", "shard-*.db", "--json"], b"");
    status.ok();
    let lines = status.lines();
    let total = lines.iter().find(|l| l["type"] == "TOTAL").unwrap();
    assert_eq!(total["state_files"], 3);
    let rows: i64 = [20_000, 400, 300, 50, 20_000].iter().sum();
    assert_eq!(total["total"]["rows_written"], rows, "{}", status.stdout());
    assert_eq!(total["total"]["statuses"]["complete"], 3);
    let table = d.run(
        "ferry",
        &[
            "status",
            "--state",
            "shard-1.db",
            "--state",
            "shard-2.db",
            "--state",
            "shard-3.db",
        ],
        b"",
    );
    table.ok();
    assert!(
        table.stdout().contains("total of 3 state files: 3 runs (3 complete)"),
        "{}",
        table.stdout()
    );

    // Each shard proves its part; merged, the parts prove the whole.
    let reports = validate_shards(&d, &src, &dst, 3);
    let merged = merge(&d, &reports);
    merged.ok();
    let summary = merged.lines().pop().unwrap();
    assert_eq!(summary["status"], "pass", "{}", merged.stdout());
    assert_eq!(summary["rows_source"], rows);
    // Two shards of three prove nothing about the third's part.
    let two = d.run("ferry-validate", &["--merge", &reports[0], &reports[2]], b"");
    two.expect_code(1);
    assert!(two.stdout().contains("no report for shard 2/3"), "{}", two.stdout());
    // A row changed in the target's part of shard 2: that shard fails, and so does the whole.
    c.batch_execute("UPDATE tags SET label = 'changed' WHERE code = (SELECT min(code COLLATE \"C\") FROM tags WHERE code COLLATE \"C\" >= 'J')")
        .unwrap();
    let v2 = d.run(
        "ferry-validate",
        &[&src, &dst, "--shard", "2/3", "--report", "v2.json"],
        b"",
    );
    v2.expect_code(1);
    assert!(v2.stdout().contains(r#""kind":"changed""#), "{}", v2.stdout());
    for k in [1, 3] {
        d.run("ferry-validate", &[&src, &dst, "--shard", &format!("{k}/3")], b"")
            .ok();
    }
    let failed = merge(&d, &reports);
    failed.expect_code(1);
    assert!(
        failed.stdout().contains("shard 2/3 did not pass"),
        "{}",
        failed.stdout()
    );
    c.batch_execute("UPDATE tags SET label = 'tag ' || substr(code, 3)::int WHERE label = 'changed'")
        .unwrap();

    // A shard cannot be undone alone (its rows share tables with the others'): refused, nothing changed.
    let r = d.run(
        "ferry",
        &["rollback", "--state", "shard-2.db", "--last", "--confirm"],
        b"",
    );
    r.expect_code(2).stderr_has("shard 2/3");
    d.run("ferry-validate", &[&src, &dst], b"").ok();

    // Run again, the shards find their work done.
    run_shards(&d, &src, &dst, 3, &["--create"]);
    d.run("ferry-validate", &[&src, &dst], b"").ok();
}

#[test]
fn file_shards_uploaded_at_once_into_one_bucket_make_the_whole_tree() {
    let d = Dir::new();
    let s3 = S3Server::start(&d.path("s3-root"), "media");
    for (k, v) in s3.env() {
        d.set_env(k, &v);
    }
    let tree = d.path("tree");
    for i in 0..90 {
        common::write_file(
            &tree,
            format!("d{}/f{i}.bin", i % 4),
            format!("file {i}").repeat(i + 1).as_bytes(),
        );
    }
    let src = format!("dir:{}", tree.display());
    let stderrs = run_shards(&d, &src, "s3://media/m", 3, &[]);
    // Each shard sent its own part.
    for s in &stderrs {
        assert!(!s.contains("files=90"), "{s}");
    }
    d.run("ferry-validate", &[&src, "s3://media/m"], b"").ok();
    let reports = validate_shards(&d, &src, "s3://media/m", 3);
    merge(&d, &reports).ok();
    let status = d.run("ferry", &["status", "--state", "shard-*.db", "--json"], b"");
    status.ok();
    let total = status.lines().into_iter().find(|l| l["type"] == "TOTAL").unwrap();
    assert_eq!(total["total"]["statuses"]["complete"], 3, "{}", status.stdout());

    // Each shard's files are its own: one shard is undone alone, its originals found in the
    // directory, and the validation then misses exactly them.
    let plan = d.run("ferry", &["rollback", "--state", "shard-1.db", "--last"], b"");
    plan.ok();
    let actions: Vec<String> = plan
        .lines()
        .iter()
        .filter(|l| l["type"] == "PLAN")
        .map(|l| l["action"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        !actions.is_empty() && actions.iter().all(|a| a == "delete"),
        "{}",
        plan.stdout()
    );
    d.run(
        "ferry",
        &["rollback", "--state", "shard-1.db", "--last", "--confirm"],
        b"",
    )
    .ok();
    let v = d.run("ferry-validate", &[&src, "s3://media/m"], b"");
    v.expect_code(1);
    let missing = v.lines().into_iter().find(|l| l["type"] == "SUMMARY").unwrap();
    assert_eq!(missing["findings"]["missing"], actions.len(), "{}", v.stdout());

    // Loaded again as a retry would (`--resume`, the state file there): the rolled-back run is
    // not gone on from (it would bring nothing back), the shard starts over and its files return.
    let again = d.pipe(
        &[
            (
                "ferry-export",
                &[&src, "--shard", "1/3", "--state", "shard-1.db", "--resume"],
            ),
            ("ferry-import", &["s3://media/m", "--state", "shard-1.db"]),
        ],
        b"",
    );
    common::all_ok(&again);
    again[0].stderr_has("was rolled back; starting from the beginning");
    d.run("ferry-validate", &[&src, "s3://media/m"], b"").ok();
}

/// Whether GNU parallel is here: CI has it (`.ci/run` installs it); elsewhere its absence skips
/// the recipe, saying so.
fn gnu_parallel() -> bool {
    let here = std::process::Command::new("parallel")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(
        here || !ci,
        "GNU parallel is missing (apt-get install parallel; .ci/run does)"
    );
    if !here {
        eprintln!("SKIPPED: the GNU parallel recipe: no `parallel` on this machine");
    }
    here
}

/// The README's recipes, as written: GNU parallel runs `deploy/shard.sh` for each shard (one of
/// them killed part way first, as a scheduler's retry would find it), the same script under a
/// Kubernetes index and a Slurm array task id proves each part, and the merge proves the whole.
#[test]
fn the_recipes_load_prove_and_merge_shards_and_a_killed_shard_resumes() {
    if !gnu_parallel() {
        return;
    }
    let d = Dir::new();
    let src = source(&d);
    let dst = pg::cluster().database("shards_recipe");
    let bins = common::bin("ferry").parent().unwrap().display().to_string();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/shard.sh");
    let path = format!("{bins}:{}", std::env::var("PATH").unwrap_or_default());
    for (k, v) in [
        ("PATH", path.as_str()),
        ("FERRY_SOURCE", &src),
        ("FERRY_TARGET", &dst),
        ("FERRY_SHARDS", "3"),
        ("FERRY_STATE_DIR", "state"),
    ] {
        d.set_env(k, v);
    }
    // Shard 2's first try, killed after its second STATE.
    std::fs::create_dir_all(d.path("state")).unwrap();
    d.pipe_killed_after(
        &[
            (
                "ferry-export",
                &[
                    &src,
                    "--shard",
                    "2/3",
                    "--state",
                    "state/shard-2.db",
                    "--state-every",
                    "500",
                ],
            ),
            ("ferry-import", &[&dst, "--create", "--state", "state/shard-2.db"]),
        ],
        2,
    );
    let sh = |cmd: &str| {
        let r = d.run("/bin/bash", &["-c", cmd], b"");
        r.ok();
        r
    };
    let load = sh(&format!("parallel -j 3 --halt now,fail=1 {script} load ::: 1 2 3"));
    assert!(
        load.stderr().contains("resuming run"),
        "shard 2 goes on: {}",
        load.stderr()
    );
    // Validation under the schedulers' own indexes: Kubernetes counts from 0, Slurm from 1.
    sh(&format!("JOB_COMPLETION_INDEX=0 {script} validate"));
    sh(&format!("SLURM_ARRAY_TASK_ID=2 {script} validate"));
    sh(&format!("SLURM_ARRAY_TASK_ID=3 {script} validate"));
    let merged = sh("ferry-validate --merge state/validate-*.json");
    assert!(merged.stderr().contains("result: EQUAL"), "{}", merged.stderr());
    d.run("ferry-validate", &[&src, &dst], b"").ok();
    let status = sh("ferry status --state 'state/shard-*.db'");
    assert!(
        status.stdout().contains("total of 3 state files"),
        "{}",
        status.stdout()
    );
    // A shard loaded again finds its work done.
    sh(&format!("{script} load 2"));
    d.run("ferry-validate", &[&src, &dst], b"").ok();
    // The same state directory with another number of shards is refused (shard-2.db of 3 is
    // another part than of 2).
    d.run("/bin/bash", &["-c", &format!("FERRY_SHARDS=2 {script} load 2")], b"")
        .expect_code(2)
        .stderr_has("holds the state of 3 shards, not 2");
    // Without a shard number nor a scheduler's index, the script says what it needs.
    d.run("/bin/bash", &["-c", &format!("{script} load")], b"")
        .expect_code(2)
        .stderr_has("give K");
}

/// The Kubernetes manifests pass the API's schema (strict: no unknown field), and the script
/// their ConfigMap carries is `deploy/shard.sh`, byte for byte.
#[test]
fn the_kubernetes_manifests_are_valid_and_carry_the_tested_script() {
    let Some(py) = crate::clients::python("recipes") else {
        return;
    };
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes");
    let d = Dir::new();
    let validate = std::path::Path::new(&py).with_file_name("kubernetes-validate");
    let files: Vec<String> = ["ferry-shards.yaml", "ferry-validate.yaml", "ferry-merge.yaml"]
        .iter()
        .map(|f| format!("{dir}/{f}"))
        .collect();
    let mut args = vec!["--strict"];
    args.extend(files.iter().map(String::as_str));
    let v = d.run(validate.to_str().unwrap(), &args, b"");
    v.ok();
    assert_eq!(v.stdout().matches("passed for resource").count(), 5, "{}", v.stdout());
    let extract = "import sys, yaml\nfor doc in yaml.safe_load_all(open(sys.argv[1])):\n    if doc and doc['kind'] == 'ConfigMap':\n        sys.stdout.write(doc['data']['shard.sh'])\n";
    let carried = d.run(&py, &["-c", extract, &files[0]], b"");
    carried.ok();
    let script = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/shard.sh")).unwrap();
    assert_eq!(carried.stdout(), script, "the ConfigMap's shard.sh is deploy/shard.sh");
}

/// A shard killed after it finished a table, run again before the others started: the keys of
/// that table wait for the other shards (the last to finish builds them), as on a first run.
#[test]
fn a_shard_resumed_alone_leaves_the_keys_to_the_last_shard() {
    let d = Dir::new();
    let src = source(&d);
    let dst = pg::cluster().database("shards_resumed");
    d.pipe_killed_after(
        &[
            (
                "ferry-export",
                &[&src, "--shard", "1/3", "--state", "shard-1.db", "--state-every", "500"],
            ),
            ("ferry-import", &[&dst, "--create", "--state", "shard-1.db"]),
        ],
        45,
    );
    let mut c = pg::connect(&dst);
    let complete: i64 = c
        .query_one(
            "SELECT count(*) FROM _ferry_commits WHERE stream = 'main.items' AND complete",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(complete, 1, "the kill came after shard 1 finished items");
    common::all_ok(&d.pipe(
        &[
            (
                "ferry-export",
                &[&src, "--shard", "1/3", "--state", "shard-1.db", "--resume"],
            ),
            ("ferry-import", &[&dst, "--create", "--state", "shard-1.db"]),
        ],
        b"",
    ));
    let keys = |c: &mut postgres::Client| -> i64 {
        c.query_one(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'public.items'::regclass AND contype = 'p'",
            &[],
        )
        .unwrap()
        .get(0)
    };
    assert_eq!(keys(&mut c), 0, "items' key waits for shards 2 and 3");
    run_shards_from(&d, &src, &dst, 3, 2);
    assert_eq!(keys(&mut c), 1, "the last shard built it");
    d.run("ferry-validate", &[&src, &dst], b"").ok();
}
