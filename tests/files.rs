//! Files: a directory tree exported as FILE lines, put into a directory acting as an object store,
//! validated byte for byte; re-runs, kills, conflicts, changed files and unsafe names.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use crate::common;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::common::{Dir, all_ok, end_of, put_tree, upload_results, write_file};

/// Every regular file under `root` (outside `.ferry-partial`), by relative path bytes.
fn contents(root: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap();
        if rel.starts_with(".ferry-partial") || !e.file_type().is_file() {
            continue;
        }
        out.insert(rel.as_os_str().as_bytes().to_vec(), std::fs::read(e.path()).unwrap());
    }
    out
}

/// A tree of `n` small files in nested directories, plus an empty file, a 3 MB file, unicode and
/// non-UTF-8 names and names that sort differently by byte and by component.
fn make_tree(root: &Path, n: usize) -> usize {
    for i in 0..n {
        let rel = format!("uploads/{:02}/{:03}/file-{i}.txt", i % 7, i % 13);
        write_file(
            root,
            rel.as_bytes(),
            format!("content of file {i}\n").repeat(i % 50 + 1).as_bytes(),
        );
    }
    write_file(root, b"empty", b"");
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    write_file(root, b"media/big.bin", &big);
    write_file(
        root,
        "caf\u{e9}/\u{fc}n\u{ef}c\u{f6}d\u{e9} \u{1f600}.txt".as_bytes(),
        b"unicode",
    );
    write_file(root, b"raw/\xff\xfe-not-utf8", b"bytes name");
    write_file(root, b"a.txt", b"dot sorts before slash");
    write_file(root, b"a/b", b"inside a");
    write_file(root, b"a-b", b"dash");
    n + 7
}

#[test]
fn a_tree_goes_into_a_directory_validates_equal_and_a_rerun_sends_nothing() {
    let d = Dir::new();
    let src = d.path("src");
    let n = make_tree(&src, 300);
    std::fs::set_permissions(src.join("empty"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let dst = format!("dir:{}", d.path("dst").display());
    let runs = put_tree(&d, &src, &dst, &[]);
    all_ok(&runs);
    let end = end_of(&runs[1]);
    assert_eq!(end["files"], n, "{end}");
    assert_eq!(end["uploaded"], n, "{end}");
    assert_eq!(end["rejected"], 0, "{end}");
    assert_eq!(
        contents(&src),
        contents(&d.path("dst")),
        "every byte and every name arrives"
    );
    assert!(!d.path("dst/.ferry-partial").exists(), "nothing half-written is left");
    // Modes and modification times come along.
    let (a, b) = (
        std::fs::metadata(src.join("empty")).unwrap(),
        std::fs::metadata(d.path("dst/empty")).unwrap(),
    );
    assert_eq!(b.mode() & 0o777, 0o600);
    assert_eq!((a.mtime(), a.mtime_nsec()), (b.mtime(), b.mtime_nsec()));

    // One result per file, ready for a table import.
    let ups = upload_results(&runs[1]);
    assert_eq!(ups.len(), n);
    let big = ups
        .iter()
        .find(|u| u["path"] == "media/big.bin")
        .expect("big.bin result");
    assert_eq!(big["status"], "uploaded");
    assert_eq!(big["size"], 3_000_000);
    assert_eq!(big["key"], "media/big.bin");
    assert!(big["migrated_at"].as_str().is_some_and(|t| t.ends_with('Z')));
    let expected = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(std::fs::read(src.join("media/big.bin")).unwrap()))
    };
    assert_eq!(big["sha256"], expected.as_str());

    let v = d.run("ferry-validate", &[&format!("dir:{}", src.display()), &dst], b"");
    v.ok();
    let summary = v.lines().pop().unwrap();
    assert_eq!(summary["files_source"], n);
    assert_eq!(summary["files_target"], n);

    // The same pipeline again: the manifest says every file is done; nothing is written.
    let ino = std::fs::metadata(d.path("dst/media/big.bin")).unwrap().ino();
    let again = put_tree(&d, &src, &dst, &[]);
    all_ok(&again);
    let end = end_of(&again[1]);
    assert_eq!(end["already_done"], n, "{end}");
    assert_eq!(end["uploaded"], 0, "{end}");
    assert_eq!(std::fs::metadata(d.path("dst/media/big.bin")).unwrap().ino(), ino);
    assert_eq!(
        upload_results(&again[1]).len(),
        n,
        "results are given again for a downstream import"
    );
}

#[test]
fn the_export_lists_files_in_byte_order_with_exact_names_and_a_digest() {
    let d = Dir::new();
    let src = d.path("src");
    let n = make_tree(&src, 20);
    let out = d.run("ferry-export", &[&format!("dir:{}", src.display())], b"");
    out.ok();
    let lines = out.lines();
    let files: Vec<&serde_json::Value> = lines.iter().filter(|l| l["type"] == "FILE").collect();
    assert_eq!(files.len(), n);
    let names: Vec<Vec<u8>> = files
        .iter()
        .map(|f| match f["path_b64"].as_str() {
            Some(b) => {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD.decode(b).unwrap()
            }
            None => f["path"].as_str().unwrap().as_bytes().to_vec(),
        })
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "byte order of whole paths");
    assert!(names.contains(&b"raw/\xff\xfe-not-utf8".to_vec()));
    let txt = files.iter().find(|f| f["path"] == "a.txt").unwrap();
    assert_eq!(txt["content_type"], "text/plain");
    assert_eq!(txt["size"], 22);
    assert!(txt["content"]["uri"].as_str().unwrap().starts_with("file:///"));
    let end = lines.iter().find(|l| l["type"] == "STREAM_END").unwrap();
    assert_eq!(end["files"], n);
    assert_eq!(end["digest"]["algo"], "files-sha256");
    // A STATE after the last file says the stream is complete, with the last path as cursor.
    let state = lines.iter().rev().find(|l| l["type"] == "STATE").unwrap();
    assert_eq!(state["value"]["bookmarks"]["files"]["complete"], true);
}

#[test]
fn symlinks_are_skipped_unless_asked_and_never_followed_out_of_the_tree() {
    let d = Dir::new();
    let src = d.path("src");
    write_file(&src, b"real/data.txt", b"data");
    write_file(&d.path("outside"), b"secret.txt", b"not yours");
    std::os::unix::fs::symlink(src.join("real"), src.join("inside-link")).unwrap();
    std::os::unix::fs::symlink(d.path("outside"), src.join("outside-link")).unwrap();
    std::os::unix::fs::symlink(d.path("outside/secret.txt"), src.join("file-link")).unwrap();
    let addr = format!("dir:{}", src.display());

    let plain = d.run("ferry-export", &[&addr], b"");
    plain.ok().stderr_has("not followed");
    let paths: Vec<String> = plain
        .lines()
        .iter()
        .filter(|l| l["type"] == "FILE")
        .map(|l| l["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(paths, ["real/data.txt"]);
    // Each link left out has a result saying so: the application's row for it is not left
    // pending with nothing saying why. Leaving a link out is what was asked: not a failure.
    let dst = format!("dir:{}", d.path("dst").display());
    let imp = d.run("ferry-import", &[&dst], &plain.output.stdout);
    imp.ok();
    let mut results: Vec<(String, String)> = common::upload_results(&imp)
        .iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap().to_owned(),
                r["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    results.sort();
    let status = |s: &str| s.to_owned();
    assert_eq!(
        results,
        [
            ("file-link".into(), status("skipped-symlink")),
            ("inside-link".into(), status("skipped-symlink")),
            ("outside-link".into(), status("skipped-symlink")),
            ("real/data.txt".into(), status("uploaded")),
        ]
    );
    assert_eq!(end_of(&imp)["left_out"], 3, "{imp:?}");
    imp.stderr_has("3 left out");
    // The validator leaves them out as the walk does.
    d.run("ferry-validate", &[&dst], &plain.output.stdout).ok();

    let follow = d.run("ferry-export", &[&addr, "--follow-symlinks"], b"");
    follow.ok();
    let lines = follow.lines();
    let paths: Vec<&str> = lines
        .iter()
        .filter(|l| l["type"] == "FILE")
        .map(|l| l["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["inside-link/data.txt", "real/data.txt"]);
    let errors: Vec<&str> = lines
        .iter()
        .filter(|l| l["type"] == "ERROR")
        .map(|l| l["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        errors,
        ["file-link", "outside-link"],
        "links out of the tree are reported, not followed"
    );
    assert!(!follow.stdout().contains("not yours"));
    assert!(!follow.stdout().contains("secret.txt"));
}

#[test]
fn a_file_changed_after_export_is_not_recorded_as_done_and_a_new_export_puts_it() {
    let d = Dir::new();
    let src = d.path("src");
    let n = make_tree(&src, 10);
    let addr = format!("dir:{}", src.display());
    let stream = d.run("ferry-export", &[&addr], b"");
    stream.ok();
    // Same size, other bytes; and a file that disappeared.
    std::fs::write(src.join("a-b"), b"DASH").unwrap();
    std::fs::remove_file(src.join("a/b")).unwrap();
    let dst = format!("dir:{}", d.path("dst").display());
    let imp = d.run("ferry-import", &[&dst], &stream.output.stdout);
    imp.expect_code(3);
    let end = end_of(&imp);
    assert_eq!(end["uploaded"], n - 2, "{end}");
    assert_eq!(end["rejected"], 2, "{end}");
    let ups = upload_results(&imp);
    let status = |p: &str| ups.iter().find(|u| u["path"] == p).unwrap()["status"].clone();
    assert_eq!(status("a-b"), "changed");
    assert_eq!(status("a/b"), "failed");
    assert!(!d.path("dst/a-b").exists(), "changed bytes are never put");
    let text = d.reject_text();
    assert!(
        text.contains("\"a-b\"") && text.contains("not what was hashed"),
        "{text}"
    );

    // A new export sees the new bytes; the re-run puts exactly that file.
    let again = put_tree(&d, &src, &dst, &[]);
    all_ok(&again);
    let end = end_of(&again[1]);
    assert_eq!(end["uploaded"], 1, "{end}");
    assert_eq!(end["already_done"], n - 2, "{end}");
    d.run("ferry-validate", &[&addr, &dst], b"").ok();
}

#[test]
fn an_object_already_there_with_other_bytes_is_a_conflict_unless_overwriting() {
    let d = Dir::new();
    let src = d.path("src");
    write_file(&src, b"x/same.txt", b"same");
    write_file(&src, b"x/other.txt", b"ours");
    write_file(&d.path("dst"), b"x/same.txt", b"same");
    write_file(&d.path("dst"), b"x/other.txt", b"theirs!");
    let dst = format!("dir:{}", d.path("dst").display());
    let addr = format!("dir:{}", src.display());

    let plan = put_tree(&d, &src, &dst, &["--dry-run"]);
    all_ok(&plan);
    let summary = plan[1].lines().pop().unwrap();
    assert_eq!(summary["action"], "summary");
    assert_eq!(
        (summary["present"].as_u64(), summary["conflict"].as_u64()),
        (Some(1), Some(1))
    );
    // A dry run records nothing (the export's hash cache aside).
    let state = d.open(".ferry/state.db");
    let recorded: i64 = state
        .query_row(
            "SELECT (SELECT count(*) FROM runs) + (SELECT count(*) FROM files)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(recorded, 0);
    drop(state);

    let first = put_tree(&d, &src, &dst, &[]);
    first[0].ok();
    first[1].expect_code(3).stderr_has("1 not put");
    let ups = upload_results(&first[1]);
    let status = |p: &str| ups.iter().find(|u| u["path"] == p).unwrap()["status"].clone();
    assert_eq!(status("x/same.txt"), "present");
    assert_eq!(status("x/other.txt"), "conflict");
    assert_eq!(std::fs::read(d.path("dst/x/other.txt")).unwrap(), b"theirs!");
    d.run("ferry-validate", &[&addr, &dst], b"").expect_code(1);

    let over = put_tree(&d, &src, &dst, &["--on-conflict", "overwrite"]);
    all_ok(&over);
    let ups = upload_results(&over[1]);
    let status = |p: &str| ups.iter().find(|u| u["path"] == p).unwrap()["status"].clone();
    assert_eq!(status("x/other.txt"), "overwritten");
    assert_eq!(std::fs::read(d.path("dst/x/other.txt")).unwrap(), b"ours");
    d.run("ferry-validate", &[&addr, &dst], b"").ok();
}

#[test]
fn unsafe_paths_and_keys_in_a_stream_are_refused_and_nothing_lands_outside() {
    let d = Dir::new();
    write_file(&d.path("src"), b"f", b"payload");
    let uri = format!("file://{}", d.path("src/f").display());
    let sha = "239f59ed55e737c77147cf55ad0c1b030b6d7ee748a7426952f9b852d5a935e5";
    let dst = format!("dir:{}", d.path("dst/inner").display());
    for (what, extra) in [
        ("path", r#""path":"../escaped""#.to_owned()),
        ("path", r#""path":"/tmp/abs""#.to_owned()),
        ("key", r#""path":"ok","key":"../../escaped""#.to_owned()),
        ("path", r#""path":"a//b""#.to_owned()),
    ] {
        let stream = common::one_file_stream(&extra, sha, &uri);
        let imp = d.run("ferry-import", &[&dst], stream.as_bytes());
        imp.expect_code(2).stderr_has("line 3").stderr_has(what);
    }
    assert!(!d.path("dst/escaped").exists() && !d.path("escaped").exists());
    assert!(contents(&d.path("dst")).is_empty(), "nothing was written");

    // A directory in the target that is a link out of it: the key is refused before anything
    // is made or read through the link.
    std::fs::create_dir_all(d.path("elsewhere")).unwrap();
    std::os::unix::fs::symlink(d.path("elsewhere"), d.path("dst/inner/uploads")).unwrap();
    let stream = common::one_file_stream(r#""path":"uploads/new/deeper/f""#, sha, &uri);
    let imp = d.run("ferry-import", &[&dst], stream.as_bytes());
    imp.expect_code(3);
    let result = common::upload_results(&imp).pop().unwrap();
    assert!(
        result["reason"].as_str().unwrap().contains("is a symbolic link"),
        "{result}"
    );
    assert_eq!(
        std::fs::read_dir(d.path("elsewhere")).unwrap().count(),
        0,
        "no directory was made through the link"
    );
}

#[test]
fn every_file_input_check_names_the_line_and_refuses_before_putting() {
    let d = Dir::new();
    write_file(&d.path("src"), b"f", b"payload");
    let uri = format!("file://{}", d.path("src/f").display());
    let sha = "239f59ed55e737c77147cf55ad0c1b030b6d7ee748a7426952f9b852d5a935e5";
    let dst = format!("dir:{}", d.path("dst").display());
    let good = common::one_file_stream(r#""path":"f""#, sha, &uri);
    let lines: Vec<&str> = good.lines().collect();
    let stream_end = r#"{"type":"STREAM_END","stream":"files","status":"complete","rows":1}"#;
    for (stream, line, says) in [
        (
            common::one_file_stream(r#""path":"f""#, &sha.to_uppercase(), &uri),
            "line 3",
            "FILE \"f\": sha256 must be 64 lowercase hex digits",
        ),
        (
            common::one_file_stream(r#""path":"f""#, sha, "https://example.com/f"),
            "line 3",
            "content.uri \"https://example.com/f\" is neither file:// nor s3://",
        ),
        (
            [lines[0], lines[1], lines[2], stream_end, lines[2], lines[3], ""].join("\n"),
            "line 5",
            "a FILE after its stream's STREAM_END",
        ),
        (
            [lines[1], lines[2], lines[3], ""].join("\n"),
            "line 1",
            "the stream does not start with BEGIN",
        ),
    ] {
        let imp = d.run("ferry-import", &[&dst], stream.as_bytes());
        imp.expect_code(2).stderr_has(line).stderr_has(says);
        // Refused before anything is put (the FILE after STREAM_END follows one that may be).
        if line == "line 3" || line == "line 1" {
            assert!(
                !d.path("dst").exists() || contents(&d.path("dst")).is_empty(),
                "nothing was put after: {says}"
            );
        }
    }
    // The same stream, well formed, goes in.
    d.run("ferry-import", &[&dst], good.as_bytes()).ok();
    assert_eq!(contents(&d.path("dst")).len(), 1);
}

#[test]
fn status_names_a_files_run_and_its_results_run_apart_and_shows_both_rolled_back() {
    let d = Dir::new();
    let src = d.path("src");
    make_tree(&src, 5);
    let dst = format!("dir:{}", d.path("dst").display());
    let runs = d.pipe(
        &[
            ("ferry-export", &[&format!("dir:{}", src.display())]),
            ("ferry-import", &[&dst, "--state", "s.db"]),
            ("ferry-import", &[&d.db("app.db"), "--create", "--state", "s.db"]),
        ],
        b"",
    );
    all_ok(&runs);
    // The results' run is the files run's id with `.uploads`.
    let results = runs[2].lines().into_iter().find(|l| l["type"] == "BEGIN").unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let run = results.strip_suffix(".uploads").unwrap().to_owned();
    let short = &run[..13];
    let table = d.run("ferry", &["status", "--state", "s.db"], b"");
    table.ok();
    let text = table.stdout();
    let shown: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.starts_with(short))
        .collect();
    assert_eq!(shown, [short.to_owned(), format!("{short}.uploads")], "{table:?}");
    // Each by what the table shows, and by its full id; the prefix alone is the files run.
    for (wanted, stream) in [
        (short.to_owned(), "files"),
        (run.clone(), "files"),
        (format!("{short}.uploads"), "uploads"),
        (format!("{run}.uploads"), "uploads"),
    ] {
        let one = d.run("ferry", &["status", "--state", "s.db", "--run", &wanted, "--json"], b"");
        one.ok();
        let batches: Vec<_> = one.lines().into_iter().filter(|l| l["type"] == "BATCH").collect();
        assert!(!batches.is_empty(), "{wanted}: {one:?}");
        assert!(
            batches.iter().all(|b| b["batch"]["stream"] == stream),
            "{wanted}: {one:?}"
        );
    }
    d.run("ferry", &["rollback", "--state", "s.db", "--last", "--confirm"], b"")
        .ok();
    let after = d.run("ferry", &["status", "--state", "s.db", "--json"], b"");
    let statuses: Vec<String> = after
        .lines()
        .into_iter()
        .filter(|l| l["type"] == "RUN" && l["run"]["stage"] == "import")
        .map(|l| l["run"]["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(statuses, ["rolled_back", "rolled_back"], "{after:?}");
}

#[test]
fn uploads_pipe_into_a_table_import() {
    let d = Dir::new();
    let src = d.path("src");
    let n = make_tree(&src, 30);
    let dst = format!("dir:{}", d.path("dst").display());
    let runs = d.pipe(
        &[
            ("ferry-export", &[&format!("dir:{}", src.display())]),
            ("ferry-import", &[&dst, "--state", "files-state.db"]),
            (
                "ferry-import",
                &[&d.db("app.db"), "--create", "--on-conflict", "overwrite"],
            ),
        ],
        b"",
    );
    all_ok(&runs);
    let app = d.open("app.db");
    let (rows, uploaded): (i64, i64) = app
        .query_row(
            "SELECT count(*), sum(status = 'uploaded' AND migrated_at IS NOT NULL) FROM uploads",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((rows, uploaded), (n as i64, n as i64));
    // Run again, the files it finds done keep the batch of the run that put them: the one whose
    // rollback deletes them.
    let first: String = app
        .query_row("SELECT DISTINCT batch FROM uploads", [], |r| r.get(0))
        .unwrap();
    let again = d.pipe(
        &[
            ("ferry-export", &[&format!("dir:{}", src.display())]),
            ("ferry-import", &[&dst, "--state", "files-state.db"]),
        ],
        b"",
    );
    all_ok(&again);
    let results: Vec<serde_json::Value> = again[1]
        .lines()
        .into_iter()
        .filter(|l| l["type"] == "RECORD" && l["stream"] == "uploads")
        .collect();
    assert_eq!(results.len(), n);
    assert!(
        results.iter().all(|r| r["record"]["batch"] == first.as_str()),
        "{:?}",
        results[0]
    );
}

#[test]
fn sigkill_of_the_import_at_any_instant_then_the_same_pipeline_finishes_equal() {
    let d = Dir::new();
    let src = d.path("src");
    let n = make_tree(&src, 3000);
    let addr = format!("dir:{}", src.display());
    let dst = format!("dir:{}", d.path("dst").display());
    let mut partial = 0;
    for (trial, ms) in [40u64, 120, 250, 400, 5].into_iter().enumerate() {
        let mut export = d
            .cmd("ferry-export", &[&addr, "-q"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut import = d
            .cmd("ferry-import", &[&dst, "-q", "--jobs", "4"])
            .stdin(Stdio::from(export.stdout.take().unwrap()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        let _ = import.kill();
        let _ = import.wait();
        let _ = export.kill();
        let _ = export.wait();
        // (A kill that came before the import made its target leaves nothing to look at.)
        let landed = if d.path("dst").exists() {
            contents(&d.path("dst"))
        } else {
            BTreeMap::new()
        };
        let there = landed.len();
        partial += usize::from(there > 0 && there < n);
        // Every file at a key is whole: a kill never leaves a torn object in place.
        for (k, v) in landed {
            assert_eq!(
                v,
                std::fs::read(src.join(OsStr::from_bytes(&k))).unwrap(),
                "trial {trial}"
            );
        }
        if trial % 2 == 1 {
            continue; // two kills in a row before the next finish
        }
        let again = put_tree(&d, &src, &dst, &["--jobs", "4"]);
        all_ok(&again);
        let end = end_of(&again[1]);
        let accounted = end["uploaded"].as_u64().unwrap()
            + end["present"].as_u64().unwrap()
            + end["already_done"].as_u64().unwrap();
        assert_eq!(accounted, n as u64, "trial {trial}: {end}");
        assert!(
            end["uploaded"].as_u64().unwrap() <= (n - there) as u64,
            "trial {trial}: nothing put twice"
        );
        d.run("ferry-validate", &[&addr, &dst], b"").ok();
        std::fs::remove_dir_all(d.path("dst")).unwrap();
        std::fs::remove_dir_all(d.path(".ferry")).unwrap();
    }
    assert!(partial >= 1, "some kill should land mid-import");
}

#[test]
fn after_a_kill_and_a_finishing_rerun_failed_only_has_nothing_to_undo_and_says_so() {
    let d = Dir::new();
    let src = d.path("src");
    let n = make_tree(&src, 1500);
    let addr = format!("dir:{}", src.display());
    let dst = format!("dir:{}", d.path("dst").display());
    d.pipe_killed_after(&[("ferry-export", &[&addr, "-q"]), ("ferry-import", &[&dst, "-q"])], 1);
    all_ok(&put_tree(&d, &src, &dst, &[]));
    assert_eq!(contents(&d.path("dst")).len(), n);
    // The killed run's files were finished by the re-run: nothing failed is left to undo.
    let plan = d.run("ferry", &["rollback", "--full", "--failed-only"], b"");
    assert!(plan.ok().lines().iter().all(|l| l["action"] != "delete"), "{plan:?}");
    d.run("ferry", &["rollback", "--full", "--failed-only", "--confirm"], b"")
        .ok();
    assert_eq!(contents(&d.path("dst")).len(), n, "what completed stays");
}

#[test]
fn files_put_between_states_are_recorded_so_a_run_killed_before_the_next_state_still_gains() {
    use std::io::Write as _;
    let d = Dir::new();
    let src = d.path("src");
    let n = make_tree(&src, 400);
    let addr = format!("dir:{}", src.display());
    let dst = format!("dir:{}", d.path("dst").display());
    // A STATE every 250 files (and no sooner): the 157 after the one at 250 are put (but for a
    // last partial batch of 64) with no STATE after them.
    let full = d.run("ferry-export", &[&addr, "--state-interval", "3600"], b"");
    let text = full.ok().stdout();
    let lines: Vec<&str> = text.lines().collect();
    let last_file = lines.iter().rposition(|l| l.contains(r#""type":"FILE""#)).unwrap();
    let mut import = d
        .cmd("ferry-import", &[&dst, "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut input = import.stdin.take().unwrap();
    input
        .write_all((lines[..=last_file].join("\n") + "\n").as_bytes())
        .unwrap();
    input.flush().unwrap();
    // Files go in batches of 64: all but the last partial one are put, then it waits.
    let landed = || {
        if d.path("dst").exists() {
            contents(&d.path("dst")).len()
        } else {
            0
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while landed() < 250 + (n - 250) / 64 * 64 {
        assert!(
            std::time::Instant::now() < deadline,
            "the files never landed: {} of {n}",
            landed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let put = landed();
    assert!(put > 250, "{put}");
    // Killed before the STATE that would acknowledge them.
    import.kill().unwrap();
    import.wait().unwrap();
    drop(input);
    // The same command: every file put is known done, and no request is sent for it.
    let again = d.run("ferry-import", &[&dst], text.as_bytes());
    again.ok();
    let end = end_of(&again);
    assert_eq!(end["already_done"], put as u64, "{end}");
    assert_eq!(end["uploaded"], (n - put) as u64, "{end}");
}

#[test]
fn an_interrupted_export_resumes_after_its_last_acknowledged_path() {
    let d = Dir::new();
    let src = d.path("src");
    let n = make_tree(&src, 1500);
    let addr = format!("dir:{}", src.display());
    let dst = format!("dir:{}", d.path("dst").display());
    // A stream cut short after some STATE lines: the import acknowledges up to the last one.
    let full = d.run("ferry-export", &[&addr, "--state-every", "100"], b"");
    full.ok();
    let text = full.stdout();
    let cut: String = text.lines().take(700).map(|l| format!("{l}\n")).collect();
    let first = d.run("ferry-import", &[&dst], cut.as_bytes());
    first.expect_code(4).stderr_has("without END");
    let acked = contents(&d.path("dst")).len();
    assert!(acked > 0 && acked < n, "{acked}");

    let runs = d.pipe(
        &[("ferry-export", &[&addr, "--resume"]), ("ferry-import", &[&dst])],
        b"",
    );
    all_ok(&runs);
    let sent = runs[0].lines().iter().filter(|l| l["type"] == "FILE").count();
    assert!(
        sent < n - 500,
        "the resumed export starts after the acknowledged path ({sent} of {n})"
    );
    d.run("ferry-validate", &[&addr, &dst], b"").ok();
}

#[test]
fn the_validator_names_missing_extra_and_changed_files() {
    let d = Dir::new();
    let (a, b) = (d.path("a"), d.path("b"));
    write_file(&a, b"same", b"1");
    write_file(&b, b"same", b"1");
    write_file(&a, b"gone", b"2");
    write_file(&b, b"more", b"3");
    write_file(&a, b"diff", b"4");
    write_file(&b, b"diff", b"5");
    let v = d.run(
        "ferry-validate",
        &[&format!("dir:{}", a.display()), &format!("dir:{}", b.display())],
        b"",
    );
    v.expect_code(1);
    let found: Vec<(String, String)> = v
        .lines()
        .iter()
        .filter(|l| l["type"] == "FINDING")
        .map(|l| {
            (
                l["kind"].as_str().unwrap().to_owned(),
                l["key"]["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            ("changed".to_owned(), "diff".to_owned()),
            ("missing".to_owned(), "gone".to_owned()),
            ("extra".to_owned(), "more".to_owned())
        ]
    );
    // The stream an export wrote is a side too.
    let stream = d.run("ferry-export", &[&format!("dir:{}", a.display())], b"");
    d.run(
        "ferry-validate",
        &[&format!("dir:{}", a.display())],
        &stream.output.stdout,
    )
    .ok();
}

#[test]
fn an_unreadable_file_is_an_error_naming_it_and_the_rest_goes_on() {
    use std::os::unix::fs::PermissionsExt as _;
    let d = Dir::new();
    let src = d.path("src");
    write_file(&src, b"ok-1", b"one");
    write_file(&src, b"locked/secret", b"no");
    write_file(&src, b"ok-2", b"two");
    std::fs::set_permissions(src.join("locked/secret"), std::fs::Permissions::from_mode(0o000)).unwrap();
    for p in [d.root(), &src, &src.join("locked")] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let addr = format!("dir:{}", src.display());
    // Root reads everything: run the export as nobody then.
    let root = std::process::Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    let out = if root {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(common::bin("ferry-export"))
            .arg(&addr)
            .current_dir(d.root());
        c.output().unwrap()
    } else {
        d.cmd("ferry-export", &[&addr]).output().unwrap()
    };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}\n{stderr}");
    assert!(
        stderr.contains("ferry-export: done: ") && stderr.contains(", 1 left out in "),
        "the closing line counts what was left out: {stderr}"
    );
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let files: Vec<&str> = lines
        .iter()
        .filter(|l| l["type"] == "FILE")
        .map(|l| l["path"].as_str().unwrap())
        .collect();
    assert_eq!(files, ["ok-1", "ok-2"]);
    let err = lines.iter().find(|l| l["type"] == "ERROR").expect("an ERROR line");
    assert_eq!(err["path"], "locked/secret");
    assert_eq!(err["fatal"], false);
    assert!(err["message"].as_str().unwrap().contains("ermission denied"), "{err}");
    let end = lines.iter().find(|l| l["type"] == "STREAM_END").unwrap();
    assert_eq!((end["files"].as_u64(), end["errors"].as_u64()), (Some(2), Some(1)));
    // Into the store: the two files are put, and the unreadable one has a result saying so
    // (no size or hash: it was never read), counted as not put.
    let dst = format!("dir:{}", d.path("dst").display());
    let imp = d.run("ferry-import", &[&dst], text.as_bytes());
    imp.expect_code(3).stderr_has("1 not put");
    let results = common::upload_results(&imp);
    let secret = results.iter().find(|r| r["path"] == "locked/secret").unwrap();
    assert_eq!(secret["status"], "unreadable", "{secret}");
    assert!(
        secret["reason"].as_str().unwrap().contains("ermission denied"),
        "{secret}"
    );
    assert!(secret["size"].is_null() && secret["sha256"].is_null(), "{secret}");
    assert_eq!(results.iter().filter(|r| r["status"] == "uploaded").count(), 2);
    assert_eq!(end_of(&imp)["rejected"], 1);
}

#[test]
fn the_savedfile_recipe_updates_the_applications_table_from_the_results() {
    let d = Dir::new();
    let app = d.sample();
    let media = d.path("media");
    let n = ferry::sample::create_media(&d.path("sample.db"), &media).unwrap();
    assert!(n > 100);
    let runs = d.pipe(
        &[
            ("ferry-export", &[&format!("dir:{}", media.display())]),
            ("ferry-import", &[&format!("dir:{}", d.path("bucket").display())]),
            ("ferry-transform", &["--rename-stream", "uploads=ferry_uploads"]),
            ("ferry-import", &[&app, "--create", "--on-conflict", "overwrite"]),
        ],
        b"",
    );
    all_ok(&runs);
    let db = d.open("sample.db");
    let updated = db
        .execute(
            "UPDATE saved_files SET sha256 = u.sha256, status = 'migrated', uploaded_at = u.migrated_at
             FROM ferry_uploads u WHERE u.path = saved_files.path AND u.status IN ('uploaded', 'present')",
            [],
        )
        .unwrap();
    assert_eq!(updated, n);
    // Every migrated row now names the SHA-256 of the bytes at its key in the bucket.
    let rows: Vec<(String, String)> = db
        .prepare("SELECT path, sha256 FROM saved_files WHERE uploaded_at LIKE '%Z'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), n);
    for (path, sha) in rows {
        use sha2::Digest as _;
        let bytes = std::fs::read(d.path("bucket").join(&path)).unwrap();
        assert_eq!(hex::encode(sha2::Sha256::digest(bytes)), sha, "{path}");
    }

    // Undoing it: the files run and the run that loaded its results into a table are two runs,
    // and each plan names the objects and the rows.
    let objects = || contents(&d.path("bucket")).len();
    assert_eq!(objects(), n);
    let actions = |run: &common::Run| -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for l in run.lines() {
            *counts.entry(l["action"].as_str().unwrap().to_owned()).or_default() += 1;
        }
        counts
    };
    let status = d.run("ferry", &["status", "--json"], b"");
    let files_run = status
        .ok()
        .lines()
        .into_iter()
        .find(|l| l["type"] == "RUN" && l["run"]["target"].as_str().unwrap().starts_with("dir:"))
        .map(|l| l["run"]["run_id"].as_str().unwrap().to_owned())
        .unwrap();
    for plan in [
        d.run("ferry", &["rollback", "--last"], b""),
        d.run("ferry", &["rollback", "--batch", &files_run[..13]], b""),
        d.run("ferry", &["rollback", "--full"], b""),
    ] {
        let a = actions(plan.ok());
        assert_eq!((a.get("delete"), a.get("drop_table")), (Some(&n), Some(&1)), "{plan:?}");
        plan.stderr_has(&format!("would delete {n} objects"));
    }
    let a = actions(d.run("ferry", &["rollback", "--full", "--objects-only"], b"").ok());
    assert_eq!((a.get("delete"), a.get("drop_table")), (Some(&n), None));
    let a = actions(d.run("ferry", &["rollback", "--full", "--db-only"], b"").ok());
    assert_eq!((a.get("delete"), a.get("drop_table")), (None, Some(&1)));
    d.run("ferry", &["rollback", "--full", "--confirm"], b"")
        .ok()
        .stderr_has(&format!("deleted {n} objects"));
    assert_eq!(objects(), 0, "every object the run put is gone");
    let left: i64 = db
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'ferry_uploads'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 0, "the results table ferry created is gone");
    // Run again: nothing left to do, and it says so.
    d.run("ferry", &["rollback", "--full", "--confirm"], b"")
        .ok()
        .stderr_has("nothing to undo: already rolled back");
}

#[test]
fn rollback_deletes_exactly_the_objects_a_run_created_after_checking_the_originals() {
    let d = Dir::new();
    let src = d.path("src");
    let n = make_tree(&src, 40);
    let bucket = d.path("bucket");
    write_file(&bucket, b"keep/theirs.txt", b"not ours");
    write_file(&bucket, b"a.txt", b"dot sorts before slash"); // the same bytes as ours: present
    let before = contents(&bucket);
    let dst = format!("dir:{}", bucket.display());
    let runs = put_tree(&d, &src, &dst, &[]);
    all_ok(&runs);
    let ups = upload_results(&runs[1]);
    let batch = ups[0]["batch"].as_str().unwrap().to_owned();
    assert_eq!(ups.iter().filter(|u| u["status"] == "uploaded").count(), n - 1);

    // A dry run by default: the plan, and nothing changes.
    let plan = d.run("ferry", &["rollback", "--batch", &batch[..13]], b"");
    plan.ok();
    let actions: Vec<(String, String)> = plan
        .lines()
        .iter()
        .map(|l| {
            (
                l["key"].as_str().unwrap().to_owned(),
                l["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(actions.iter().filter(|(_, a)| a == "delete").count(), n - 1);
    assert!(
        actions.contains(&("a.txt".to_owned(), "keep".to_owned())),
        "{actions:?}"
    );
    assert_eq!(contents(&bucket).len(), before.len() + n - 1);

    // An original missing from the source: refused as a whole, nothing deleted.
    let moved = d.path("moved");
    std::fs::rename(src.join("a-b"), &moved).unwrap();
    let refused = d.run("ferry", &["rollback", "--batch", &batch, "--confirm"], b"");
    refused.expect_code(2).stderr_has("--force");
    assert_eq!(contents(&bucket).len(), before.len() + n - 1);
    std::fs::rename(&moved, src.join("a-b")).unwrap();

    let done = d.run("ferry", &["rollback", "--batch", &batch, "--confirm"], b"");
    done.ok();
    assert_eq!(contents(&bucket), before, "exactly what the run created is gone");
    let audit = std::fs::read_to_string(d.path(".ferry/audit.ndjson")).unwrap();
    assert_eq!(audit.lines().count(), n - 1);
    // Again: nothing left to do.
    let again = d.run("ferry", &["rollback", "--batch", &batch, "--confirm"], b"");
    again.ok();
    assert!(again.lines().iter().all(|l| l["action"] != "deleted"));
    // And the files can be put again.
    let redo = put_tree(&d, &src, &dst, &[]);
    all_ok(&redo);
    d.run("ferry-validate", &[&format!("dir:{}", src.display()), &dst], b"")
        .expect_code(1)
        .stdout()
        .contains("keep/theirs.txt")
        .then_some(())
        .expect("the object that was there before is extra, and only it");
}

#[test]
fn since_a_run_exports_only_what_is_new_or_changed_since_it_started() {
    let d = Dir::new();
    let src = d.path("src");
    make_tree(&src, 30);
    let dst = format!("dir:{}", d.path("dst").display());
    let first = put_tree(&d, &src, &dst, &[]);
    all_ok(&first);
    let run = first[1].lines()[0]["run_id"]
        .as_str()
        .unwrap()
        .trim_end_matches(".uploads")
        .to_owned();
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(src.join("a.txt"), b"edited after the first pass").unwrap();
    write_file(&src, b"new/late.txt", b"arrived late");
    std::fs::rename(src.join("a-b"), src.join("uploads/moved-in")).unwrap();
    let addr = format!("dir:{}", src.display());
    let catch_up = d.run("ferry-export", &[&addr, "--since", &run[..13]], b"");
    catch_up.ok();
    let mut paths: Vec<String> = catch_up
        .lines()
        .iter()
        .filter(|l| l["type"] == "FILE")
        .map(|l| l["path"].as_str().unwrap().to_owned())
        .collect();
    paths.sort();
    assert_eq!(paths, ["a.txt", "new/late.txt", "uploads/moved-in"]);
    let imp = d.run(
        "ferry-import",
        &[&dst, "--on-conflict", "overwrite"],
        &catch_up.output.stdout,
    );
    imp.ok();
    assert_eq!(
        std::fs::read(d.path("dst/a.txt")).unwrap(),
        b"edited after the first pass"
    );
    // What is left to tell: the old name of the moved file.
    let v = d.run("ferry-validate", &[&addr, &dst], b"");
    v.expect_code(1);
    let findings: Vec<String> = v
        .lines()
        .iter()
        .filter(|l| l["type"] == "FINDING")
        .map(|l| format!("{} {}", l["kind"].as_str().unwrap(), l["key"]["path"].as_str().unwrap()))
        .collect();
    assert_eq!(findings, ["extra a-b"]);
    d.run("ferry-export", &[&addr, "--since", "yesterday"], b"")
        .expect_code(2)
        .stderr_has("RFC 3339");
}

#[test]
fn a_file_unchanged_since_it_was_hashed_is_not_read_again_and_any_change_is_seen() {
    let d = Dir::new();
    let src = d.path("src");
    let n = make_tree(&src, 50);
    let addr = format!("dir:{}", src.display());
    let first = d.run("ferry-export", &[&addr], b"");
    first.ok();
    let again = d.run("ferry-export", &[&addr], b"");
    again.ok().stderr_has(&format!("files={n}"));
    assert_eq!(first.lines()[3..].len(), again.lines()[3..].len());
    let shas = |r: &common::Run| -> BTreeMap<String, String> {
        r.lines()
            .iter()
            .filter(|l| l["type"] == "FILE")
            .map(|l| {
                (
                    l["path"].as_str().unwrap().to_owned(),
                    l["sha256"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(shas(&first), shas(&again), "the cache gives the same hashes");

    // Same size, modification time put back: the status change time still tells.
    let p = src.join("a.txt");
    let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
    std::fs::write(&p, b"DOT SORTS BEFORE SLASH").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let third = d.run("ferry-export", &[&addr], b"");
    third.ok().stderr_has(&format!("files={}", n - 1));
    let (before, after) = (shas(&first), shas(&third));
    assert_ne!(before["a.txt"], after["a.txt"]);
    assert_eq!(before.len(), after.len());

    let rehash = d.run("ferry-export", &[&addr, "--rehash"], b"");
    rehash.ok();
    assert!(!rehash.stderr().contains("not read"), "{rehash:?}");
    assert_eq!(shas(&rehash), after);
}

#[test]
fn rollback_failed_only_cleans_up_what_an_interrupted_run_left_unsettled() {
    let d = Dir::new();
    let src = d.path("src");
    make_tree(&src, 400);
    let addr = format!("dir:{}", src.display());
    let dst = format!("dir:{}", d.path("dst").display());
    let full = d.run("ferry-export", &[&addr], b"");
    full.ok();
    // Cut the stream 150 files after its second STATE (one every 250 files): those files are
    // sent (in batches of 64) but never settled.
    let text = full.stdout();
    let mut states = 0;
    let mut cut = String::new();
    let mut after = 0;
    for l in text.lines() {
        cut.push_str(l);
        cut.push('\n');
        states += usize::from(l.contains(r#""type":"STATE""#));
        after += usize::from(states >= 2 && l.contains(r#""type":"FILE""#));
        if after == 150 {
            break;
        }
    }
    let imp = d.run("ferry-import", &[&dst], cut.as_bytes());
    imp.expect_code(4);
    let batch = imp.lines()[0]["run_id"]
        .as_str()
        .unwrap()
        .trim_end_matches(".uploads")
        .to_owned();
    let state = d.open(".ferry/state.db");
    let count = |status: &str| -> i64 {
        state
            .query_row("SELECT count(*) FROM files WHERE status = ?1", [status], |r| r.get(0))
            .unwrap()
    };
    // Every file sent was put and recorded as such (within a second of the store having it,
    // not only at the next STATE).
    assert_eq!((count("uploaded"), count("uploading")), (378, 0));
    // A kill between a put and its record leaves the file `uploading`: as for the last 128.
    state
        .execute_batch(
            "UPDATE files SET status = 'uploading', finished_at = NULL
             WHERE key IN (SELECT key FROM files ORDER BY key DESC LIMIT 128)",
        )
        .unwrap();
    let (settled, unsettled) = (count("uploaded"), count("uploading"));
    assert_eq!((settled, unsettled), (250, 128));
    let there = contents(&d.path("dst")).len() as i64;

    let done = d.run(
        "ferry",
        &["rollback", "--batch", &batch, "--failed-only", "--confirm"],
        b"",
    );
    done.ok();
    let deleted = done.lines().iter().filter(|l| l["action"] == "deleted").count() as i64;
    assert!(deleted > 0 && deleted <= unsettled, "{deleted} of {unsettled}");
    assert_eq!(contents(&d.path("dst")).len() as i64, there - deleted);
    assert_eq!(count("uploaded"), settled, "what completed stays");
    assert_eq!(count("rolled_back"), deleted);
}

/// The progress lines of a stage's stderr with `message`.
fn progress_lines(stderr: &str, message: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.contains(message))
        .map(str::to_owned)
        .collect()
}

#[test]
fn progress_lines_tell_the_time_left_from_the_input_totals_or_the_last_export() {
    let d = Dir::new();
    let src = d.path("src");
    let n = make_tree(&src, 300);
    d.set_env("FERRY_PROGRESS_MS", "0");
    let addr = format!("dir:{}", src.display());
    let export = d.run("ferry-export", &[&addr], b"");
    export.ok();
    let hashing = progress_lines(&export.stderr(), "hashing");
    assert!(!hashing.is_empty(), "{}", export.stderr());
    assert!(
        hashing.iter().all(|l| l.contains("eta=unknown")),
        "a first export cannot know the size of the tree: {:?}",
        &hashing[..1]
    );
    let stream = d.path("files.ndjson");
    std::fs::write(&stream, export.stdout()).unwrap();

    // `< files.ndjson`: the file's STREAM_END says how much there is.
    let out = d
        .cmd("ferry-import", &[&format!("dir:{}", d.path("dst").display())])
        .stdin(std::fs::File::open(&stream).unwrap())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let putting = progress_lines(&stderr, "putting files");
    assert!(!putting.is_empty(), "{stderr}");
    time_left_known_once_files_settle(&putting, n);

    // Through a pipe: the export's SCHEMA carries the tree as it was last exported, which both
    // the export and the import use.
    let runs = put_tree(&d, &src, &format!("dir:{}", d.path("dst2").display()), &[]);
    all_ok(&runs);
    let hashing = progress_lines(&runs[0].stderr(), "hashing");
    assert!(
        !hashing.is_empty() && hashing.iter().all(|l| !l.contains("eta=unknown")),
        "{:?}",
        &hashing[..1]
    );
    let putting = progress_lines(&runs[1].stderr(), "putting files");
    assert!(!putting.is_empty(), "{}", runs[1].stderr());
    time_left_known_once_files_settle(&putting, n);
}

/// Every "putting files" line counts against the whole tree, and tells the time left once there
/// is a pace: not before the first file settles (a loaded machine), nor when the only one settled
/// is the tree's empty file (time left goes by bytes).
fn time_left_known_once_files_settle(putting: &[String], n: usize) {
    for l in putting {
        let paced = !l.contains("files=0 ") && !l.contains("files=1 ");
        assert!(
            l.contains(&format!("of={n}")) && (!paced || !l.contains("eta=unknown")),
            "{l}"
        );
    }
    assert!(putting.iter().any(|l| !l.contains("eta=unknown")), "{putting:?}");
}
