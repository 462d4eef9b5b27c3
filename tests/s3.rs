//! Files into a real S3-protocol server on 127.0.0.1 (s3s-fs, SigV4 on): uploads verified by the
//! server against the export's SHA-256, multipart, re-runs that send nothing, conflicts, wrong
//! credentials, and the server going away mid-run.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use crate::common;
use std::collections::BTreeMap;
use std::path::Path;

use crate::common::s3::S3Server;
use crate::common::{Dir, all_ok, end_of, put_tree, upload_results, write_file};

const BUCKET: &str = "media-bucket";

/// `n` small files in nested directories plus an empty file and unicode names.
fn make_tree(root: &Path, n: usize) -> usize {
    for i in 0..n {
        write_file(
            root,
            format!("uploads/{:02}/file-{i}.txt", i % 9),
            format!("file {i}\n").repeat(i % 40 + 1).as_bytes(),
        );
    }
    write_file(root, "empty", b"");
    write_file(root, "caf\u{e9}/r\u{e9}sum\u{e9} \u{1f4c4}.pdf", b"%PDF-1.4 unicode");
    n + 2
}

fn server(d: &Dir) -> S3Server {
    let s = S3Server::start(&d.path("s3-root"), BUCKET);
    for (k, v) in s.env() {
        d.set_env(k, &v);
    }
    d.set_env("FERRY_RETRIES", "2");
    s
}

fn statuses(run: &common::Run) -> BTreeMap<String, String> {
    upload_results(run)
        .into_iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap().to_owned(),
                r["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_tree_goes_into_a_bucket_verified_and_a_rerun_sends_no_request() {
    let d = Dir::new();
    let s3 = server(&d);
    let src = d.path("src");
    let n = make_tree(&src, 200);
    let dst = format!("s3://{BUCKET}/media");
    let runs = put_tree(&d, &src, &dst, &[]);
    all_ok(&runs);
    let end = end_of(&runs[1]);
    assert_eq!(end["uploaded"], n, "{end}");
    // The objects hold the very bytes, under the prefix.
    assert_eq!(
        std::fs::read(s3.object_path(BUCKET, "media/uploads/03/file-3.txt")).unwrap(),
        std::fs::read(src.join("uploads/03/file-3.txt")).unwrap()
    );
    assert!(s3.object_path(BUCKET, "media/empty").exists());
    // Each result names the object by its full key in the bucket (what an application keeps),
    // beside the file's path in the tree.
    let result = upload_results(&runs[1])
        .into_iter()
        .find(|r| r["path"] == "uploads/03/file-3.txt")
        .unwrap();
    assert_eq!(result["key"], "media/uploads/03/file-3.txt", "{result}");
    let v = d.run("ferry-validate", &[&format!("dir:{}", src.display()), &dst], b"");
    v.ok();
    assert_eq!(v.lines().pop().unwrap()["files_target"], n);

    let before = s3.requests();
    let again = put_tree(&d, &src, &dst, &["-v"]);
    all_ok(&again);
    let end = end_of(&again[1]);
    assert_eq!(end["already_done"], n, "{end}");
    // The secret key is in no output and no file ferry wrote.
    let secret = common::s3::SECRET_KEY;
    for r in runs.iter().chain(&again).chain([&v]) {
        assert!(!r.stdout().contains(secret) && !r.stderr().contains(secret), "{r:?}");
    }
    for e in walkdir::WalkDir::new(d.path(".ferry")) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let bytes = std::fs::read(e.path()).unwrap();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{}",
                e.path().display()
            );
        }
    }
    assert_eq!(
        s3.requests(),
        before,
        "a re-run with nothing changed sends no request at all"
    );
}

#[test]
fn a_big_sparse_file_goes_up_in_parts_and_is_checked_whole() {
    let d = Dir::new();
    let s3 = server(&d);
    let src = d.path("src");
    std::fs::create_dir_all(&src).unwrap();
    // 1 GiB, sparse on disk, with a few real bytes so the parts differ.
    let f = std::fs::File::create(src.join("big.img")).unwrap();
    f.set_len(1 << 30).unwrap();
    use std::os::unix::fs::FileExt as _;
    for (i, off) in [0u64, 300 << 20, (1 << 30) - 5].into_iter().enumerate() {
        f.write_all_at(format!("mark{i}").as_bytes(), off).unwrap();
    }
    drop(f);
    let dst = format!("s3://{BUCKET}/");
    let runs = put_tree(&d, &src, &dst, &[]);
    all_ok(&runs);
    assert_eq!(statuses(&runs[1])["big.img"], "uploaded");
    assert_eq!(
        std::fs::metadata(s3.object_path(BUCKET, "big.img")).unwrap().len(),
        1 << 30
    );
    d.run("ferry-validate", &[&format!("dir:{}", src.display()), &dst], b"")
        .ok();
    let state = rusqlite::Connection::open(d.path(".ferry/state.db")).unwrap();
    let part: i64 = state
        .query_row("SELECT part_size FROM files WHERE key = 'big.img'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(part, 16 << 20, "the part size is recorded");
}

#[test]
fn an_object_already_there_with_other_bytes_is_a_conflict_unless_overwriting() {
    let d = Dir::new();
    let _s3 = server(&d);
    let src = d.path("src");
    write_file(&src, "a.txt", b"ours");
    write_file(&src, "b.txt", b"same");
    let other = d.path("other");
    write_file(&other, "a.txt", b"theirs, longer");
    write_file(&other, "b.txt", b"same");
    let dst = format!("s3://{BUCKET}/x");
    all_ok(&put_tree(&d, &other, &dst, &["--state", "other.db"]));

    let first = put_tree(&d, &src, &dst, &[]);
    common::ok_but_rejects(&first);
    let st = statuses(&first[1]);
    assert_eq!((st["a.txt"].as_str(), st["b.txt"].as_str()), ("conflict", "present"));
    d.run("ferry-validate", &[&format!("dir:{}", src.display()), &dst], b"")
        .expect_code(1);

    let over = put_tree(&d, &src, &dst, &["--on-conflict", "overwrite"]);
    all_ok(&over);
    assert_eq!(statuses(&over[1])["a.txt"], "overwritten");
    d.run("ferry-validate", &[&format!("dir:{}", src.display()), &dst], b"")
        .ok();
}

#[test]
fn wrong_credentials_stop_with_a_clear_error_and_nothing_recorded_as_done() {
    let d = Dir::new();
    let s3 = server(&d);
    let src = d.path("src");
    make_tree(&src, 5);
    d.set_env("AWS_SECRET_ACCESS_KEY", "not-the-secret");
    let runs = put_tree(&d, &src, &format!("s3://{BUCKET}/m"), &[]);
    runs[1].expect_code(2).stderr_has("credentials");
    assert!(
        !runs[1].stderr().contains("not-the-secret"),
        "the secret is never printed"
    );
    assert!(statuses(&runs[1]).is_empty());
    let state = rusqlite::Connection::open(d.path(".ferry/state.db")).unwrap();
    let done: i64 = state
        .query_row("SELECT count(*) FROM files WHERE status <> 'uploading'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(done, 0);
    assert!(!s3.object_path(BUCKET, "m/empty").exists());

    d.set_env("AWS_ACCESS_KEY_ID", "");
    let runs = put_tree(&d, &src, &format!("s3://{BUCKET}/m"), &[]);
    runs[1].expect_code(2).stderr_has("AWS_ACCESS_KEY_ID");
}

#[test]
fn the_server_going_away_mid_run_stops_clearly_and_a_rerun_sends_only_the_rest() {
    let d = Dir::new();
    let mut s3 = server(&d);
    let src = d.path("src");
    let n = make_tree(&src, 1500);
    let dst = format!("s3://{BUCKET}/m");
    let addr = format!("dir:{}", src.display());
    let mut export = d
        .cmd("ferry-export", &[&addr, "-q"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let import = d
        .cmd("ferry-import", &[&dst, "--jobs", "4"])
        .stdin(std::process::Stdio::from(export.stdout.take().unwrap()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Drain its output all along (a full pipe would stall it), and take the server away once
    // some objects are in.
    let import = std::thread::spawn(move || import.wait_with_output().unwrap());
    let t0 = std::time::Instant::now();
    while s3.requests() < 700 && t0.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    s3.down();
    let out = import.join().unwrap();
    let _ = export.wait();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("re-run the same command"), "{stderr}");
    let acked = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(r#""stream":"uploads""#) && l.contains(r#""status":"uploaded""#))
        .count();
    assert!(acked < n, "the outage landed mid-run ({acked} of {n})");

    s3.up();
    let before = s3.requests();
    let again = put_tree(&d, &src, &dst, &["--jobs", "4"]);
    all_ok(&again);
    let end = end_of(&again[1]);
    let sum = ["uploaded", "present", "already_done"]
        .iter()
        .map(|k| end[k].as_u64().unwrap())
        .sum::<u64>();
    assert_eq!(sum, n as u64, "{end}");
    assert!(end["already_done"].as_u64().unwrap() > 0, "{end}");
    assert!(
        s3.requests() - before < 2 * (n as u64 - end["already_done"].as_u64().unwrap()) + 10,
        "files done before the outage cost no request"
    );
    d.run("ferry-validate", &[&addr, &dst], b"").ok();
}

#[test]
fn rollback_deletes_the_objects_a_run_put_in_the_bucket() {
    let d = Dir::new();
    let s3 = server(&d);
    let src = d.path("src");
    let n = make_tree(&src, 20);
    let dst = format!("s3://{BUCKET}/r");
    let runs = put_tree(&d, &src, &dst, &[]);
    all_ok(&runs);
    let batch = runs[1].lines().into_iter().find(|l| l["type"] == "RECORD").unwrap()["record"]["batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let plan = d.run("ferry", &["rollback", "--batch", &batch], b"");
    plan.ok().stderr_has(&format!("would delete {n} objects"));
    assert!(s3.object_path(BUCKET, "r/empty").exists());
    d.run("ferry", &["rollback", "--batch", &batch, "--confirm"], b"").ok();
    assert!(!s3.object_path(BUCKET, "r/empty").exists());
    assert!(!s3.object_path(BUCKET, "r/uploads/03/file-3.txt").exists());
    let v = d.run("ferry-validate", &[&format!("dir:{}", src.display()), &dst], b"");
    v.expect_code(1);
    assert_eq!(v.lines().pop().unwrap()["files_target"], 0);
}

#[test]
fn a_name_that_is_not_utf8_is_refused_by_key_and_a_dry_run_sends_nothing() {
    use std::os::unix::ffi::OsStrExt as _;
    let d = Dir::new();
    let s3 = server(&d);
    let src = d.path("src");
    write_file(&src, "ok.txt", b"fine");
    std::fs::write(src.join(std::ffi::OsStr::from_bytes(b"bad-\xff.bin")), b"bytes").unwrap();
    let dst = format!("s3://{BUCKET}/n");

    let before = s3.requests();
    let plan = put_tree(&d, &src, &dst, &["--dry-run"]);
    all_ok(&plan);
    let summary = plan[1].lines().pop().unwrap();
    assert_eq!(summary["upload"], 2, "{summary}");
    assert!(s3.requests() - before <= 2, "a dry run only looks (one HEAD per file)");
    assert!(!s3.object_path(BUCKET, "n/ok.txt").exists());

    let runs = put_tree(&d, &src, &dst, &[]);
    common::ok_but_rejects(&runs);
    let bad = runs[1]
        .lines()
        .into_iter()
        .find(|l| l["type"] == "RECORD" && l["record"]["status"] == "refused")
        .expect("the non-UTF-8 name is refused");
    assert!(bad["record"]["reason"].as_str().unwrap().contains("UTF-8"), "{bad}");
    assert!(s3.object_path(BUCKET, "n/ok.txt").exists());
}

#[test]
fn a_bucket_exports_as_file_lines_that_match_the_tree_it_came_from() {
    let d = Dir::new();
    let _s3 = server(&d);
    let src = d.path("src");
    let n = make_tree(&src, 60);
    let dst = format!("s3://{BUCKET}/inv");
    all_ok(&put_tree(&d, &src, &dst, &[]));
    let shas = |r: &common::Run| -> Vec<(String, String, u64)> {
        r.lines()
            .iter()
            .filter(|l| l["type"] == "FILE")
            .map(|l| {
                (
                    l["path"].as_str().unwrap().to_owned(),
                    l["sha256"].as_str().unwrap().to_owned(),
                    l["size"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let inventory = d.run("ferry-export", &[&dst], b"");
    inventory.ok();
    let tree = d.run("ferry-export", &[&format!("dir:{}", src.display())], b"");
    assert_eq!(shas(&inventory).len(), n);
    assert_eq!(
        shas(&inventory),
        shas(&tree),
        "same keys in the same order, same sizes and hashes"
    );
    let first = inventory.lines().into_iter().find(|l| l["type"] == "FILE").unwrap();
    assert!(
        first["content"]["uri"]
            .as_str()
            .unwrap()
            .starts_with("s3://media-bucket/inv/")
    );
    // The inventory is a side for the validator.
    d.run(
        "ferry-validate",
        &[&format!("dir:{}", src.display())],
        &inventory.output.stdout,
    )
    .ok();
}

#[test]
fn objects_move_back_from_the_bucket_into_a_directory_verified() {
    let d = Dir::new();
    let s3 = server(&d);
    let src = d.path("src");
    make_tree(&src, 40);
    let bucket = format!("s3://{BUCKET}/out");
    all_ok(&put_tree(&d, &src, &bucket, &[]));
    let back = format!("dir:{}", d.path("back").display());
    let runs = d.pipe(
        &[
            ("ferry-export", &[&bucket]),
            ("ferry-import", &[&back, "--state", "back.db"]),
        ],
        b"",
    );
    all_ok(&runs);
    d.run("ferry-validate", &[&format!("dir:{}", src.display()), &back], b"")
        .ok();
    let left = std::fs::read_dir(d.path("fetch")).map(|r| r.count()).unwrap_or(0);
    assert_eq!(left, 0, "nothing downloaded is left behind");

    // The endpoint given to the export only: the stream carries it, and the import fetches
    // from there (not from AWS's public endpoint).
    d.set_env("AWS_ENDPOINT_URL", "");
    let back2 = format!("dir:{}", d.path("back2").display());
    let runs = d.pipe(
        &[
            ("ferry-export", &[&bucket, "--endpoint", &s3.endpoint()]),
            ("ferry-import", &[&back2, "--state", "back2.db"]),
        ],
        b"",
    );
    all_ok(&runs);
    d.run("ferry-validate", &[&format!("dir:{}", src.display()), &back2], b"")
        .ok();
}

/// The multipart uploads the server holds open (s3s-fs keeps one `.upload-ID.json` per upload).
fn open_uploads(s3: &S3Server) -> usize {
    std::fs::read_dir(&s3.root)
        .unwrap()
        .filter(|e| {
            let n = e.as_ref().unwrap().file_name();
            let n = n.to_string_lossy();
            n.starts_with(".upload-") && n.ends_with(".json")
        })
        .count()
}

/// Start an import of `src` (one big file) and SIGKILL it once parts are arriving.
fn kill_mid_multipart(d: &Dir, s3: &S3Server, src: &Path, dst: &str) {
    let export = d.run("ferry-export", &[&format!("dir:{}", src.display()), "-q"], b"");
    export.ok();
    let mut import = d
        .cmd("ferry-import", &[dst])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut stdin = import.stdin.take().unwrap();
        stdin.write_all(export.stdout().as_bytes()).unwrap();
    }
    let part_there = || {
        std::fs::read_dir(&s3.root)
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().starts_with(".upload_id-"))
    };
    let t0 = std::time::Instant::now();
    while !part_there() && t0.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    import.kill().unwrap();
    import.wait().unwrap();
    assert!(part_there(), "the kill landed mid-upload");
}

#[test]
fn multipart_uploads_a_killed_run_left_are_aborted_by_rollback_and_by_the_next_run() {
    let d = Dir::new();
    let s3 = server(&d);
    let src = d.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let f = std::fs::File::create(src.join("video.mp4")).unwrap();
    f.set_len(600 << 20).unwrap();
    use std::os::unix::fs::FileExt as _;
    f.write_all_at(b"moov", 7 << 20).unwrap();
    drop(f);
    let dst = format!("s3://{BUCKET}/v");
    let state = || rusqlite::Connection::open(d.path(".ferry/state.db")).unwrap();

    kill_mid_multipart(&d, &s3, &src, &dst);
    assert_eq!(open_uploads(&s3), 1);
    let run: String = state()
        .query_row("SELECT run_id FROM multipart", [], |r| r.get(0))
        .unwrap();
    let plan = d.run("ferry", &["rollback", "--batch", &run, "--failed-only"], b"");
    plan.ok().stderr_has("abort 1 unfinished multipart uploads");
    assert!(plan.stdout().contains(r#""action":"abort""#), "{}", plan.stdout());
    assert_eq!(open_uploads(&s3), 1, "a dry run changes nothing");
    d.run(
        "ferry",
        &["rollback", "--batch", &run, "--failed-only", "--confirm"],
        b"",
    )
    .ok()
    .stderr_has("aborted 1 unfinished multipart uploads");
    assert_eq!(open_uploads(&s3), 0, "the parts are gone");
    let left: i64 = state()
        .query_row("SELECT count(*) FROM multipart", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0);
    let audit = std::fs::read_to_string(d.path(".ferry/audit.ndjson")).unwrap();
    assert!(audit.contains(r#""action":"abort-multipart""#), "{audit}");

    // Killed again; this time the next run itself aborts what the killed one left, then puts
    // the file whole.
    kill_mid_multipart(&d, &s3, &src, &dst);
    assert_eq!(open_uploads(&s3), 1);
    let runs = put_tree(&d, &src, &dst, &[]);
    all_ok(&runs);
    assert_eq!(statuses(&runs[1])["video.mp4"], "uploaded");
    assert_eq!(open_uploads(&s3), 0, "no parts left behind");
    let left: i64 = state()
        .query_row("SELECT count(*) FROM multipart", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0);
    d.run("ferry-validate", &[&format!("dir:{}", src.display()), &dst], b"")
        .ok();
}

#[test]
fn a_file_edited_while_its_parts_go_up_is_not_recorded_and_leaves_no_parts() {
    let d = Dir::new();
    let s3 = server(&d);
    let src = d.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let f = std::fs::File::create(src.join("db.dump")).unwrap();
    f.set_len(600 << 20).unwrap();
    drop(f);
    let export = d.run("ferry-export", &[&format!("dir:{}", src.display()), "-q"], b"");
    export.ok();
    let stream = d.path("files.ndjson");
    std::fs::write(&stream, export.stdout()).unwrap();
    let import = d
        .cmd("ferry-import", &[&format!("s3://{BUCKET}/e")])
        .stdin(std::fs::File::open(&stream).unwrap())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let import = std::thread::spawn(move || import.wait_with_output().unwrap());
    let t0 = std::time::Instant::now();
    while !std::fs::read_dir(&s3.root)
        .unwrap()
        .any(|e| e.unwrap().file_name().to_string_lossy().starts_with(".upload_id-"))
    {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(60),
            "no part ever arrived"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    // Same size, other bytes, mid-upload.
    use std::os::unix::fs::FileExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .open(src.join("db.dump"))
        .unwrap()
        .write_all_at(b"edited", 590 << 20)
        .unwrap();
    let out = import.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "the changed file is not put: {stderr}");
    let results: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["type"] == "RECORD")
        .collect();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["record"]["status"], "changed", "{}", results[0]);
    assert!(!s3.object_path(BUCKET, "e/db.dump").exists(), "nothing is at the key");
    assert_eq!(open_uploads(&s3), 0, "the parts sent were dropped");
}

#[test]
fn several_big_files_go_up_in_parts_at_once_without_waiting_for_each_other() {
    let d = Dir::new();
    let s3 = server(&d);
    let src = d.path("src");
    std::fs::create_dir_all(&src).unwrap();
    // Six files of 1.5 parts each, hashed and sent at once, with small files around them: their
    // parts together want more memory than the upload budget (64 MiB) allows in flight.
    use std::os::unix::fs::FileExt as _;
    for i in 0..6 {
        let f = std::fs::File::create(src.join(format!("big{i}.bin"))).unwrap();
        f.set_len(24 << 20).unwrap();
        f.write_all_at(format!("big {i}").as_bytes(), 20 << 20).unwrap();
    }
    make_tree(&src.join("small"), 40);
    let mut export = d
        .cmd("ferry-export", &[&format!("dir:{}", src.display()), "-q"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut import = d
        .cmd("ferry-import", &[&format!("s3://{BUCKET}/"), "-q"])
        .stdin(std::process::Stdio::from(export.stdout.take().unwrap()))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(s) = import.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > std::time::Duration::from_secs(180) {
            let _ = import.kill();
            panic!("the import made no progress for 3 minutes: the uploads wait for each other");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success());
    assert!(export.wait().unwrap().success());
    for i in 0..6 {
        assert_eq!(
            std::fs::metadata(s3.object_path(BUCKET, &format!("big{i}.bin")))
                .unwrap()
                .len(),
            24 << 20
        );
    }
    d.run(
        "ferry-validate",
        &[&format!("dir:{}", src.display()), &format!("s3://{BUCKET}/")],
        b"",
    )
    .ok();
}

#[test]
fn an_object_rewritten_under_its_old_metadata_is_caught_by_its_etag_or_by_deep() {
    let d = Dir::new();
    let s3 = server(&d);
    let src = d.path("src");
    for i in 0..5 {
        write_file(&src, format!("f{i}.txt"), format!("the bytes of file {i}").as_bytes());
    }
    let bucket = format!("s3://{BUCKET}/rw");
    all_ok(&put_tree(&d, &src, &bucket, &[]));
    let tree = format!("dir:{}", src.display());
    d.run("ferry-validate", &[&tree, &bucket], b"").ok();
    // Another program rewrites one object: other bytes, same size, the old SHA-256 metadata.
    let old = d.run("ferry-export", &[&tree], b"");
    let sha = old.lines().into_iter().find(|l| l["path"] == "f2.txt").unwrap()["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    s3.put_raw(BUCKET, "rw/f2.txt", b"THE BYTES OF FILE 2", &[("sha256", &sha)]);
    // Against the directory: its single-part ETag is the MD5 of the bytes, checked for free.
    let v = d.run("ferry-validate", &[&tree, &bucket], b"");
    v.expect_code(1);
    let changed: Vec<serde_json::Value> = v.lines().into_iter().filter(|l| l["kind"] == "changed").collect();
    assert_eq!(changed.len(), 1, "{v:?}");
    assert_eq!(changed[0]["key"]["path"], "f2.txt");
    assert!(changed[0]["message"].as_str().unwrap().contains("ETag"), "{v:?}");
    // Against the export's stream there is no MD5 to compare: it passes on the metadata, and
    // says that it did; --deep reads the objects and finds it.
    let v = d.run("ferry-validate", &[&bucket], &old.output.stdout);
    v.ok().stderr_has("taken from their metadata").stderr_has("--deep");
    assert_eq!(v.lines().pop().unwrap()["trusted_metadata"], 5, "{v:?}");
    let v = d.run("ferry-validate", &[&bucket, "--deep"], &old.output.stdout);
    v.expect_code(1);
    assert_eq!(v.lines().pop().unwrap()["findings"]["changed"], 1, "{v:?}");
    d.run("ferry-validate", &[&tree, &bucket, "--deep"], b"").expect_code(1);
}

#[test]
fn a_multipart_upload_a_run_was_killed_starting_is_said_not_left_unseen() {
    let d = Dir::new();
    let _s3 = server(&d);
    let src = d.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let f = std::fs::File::create(src.join("big.bin")).unwrap();
    f.set_len(20 << 20).unwrap();
    drop(f);
    let dst = format!("s3://{BUCKET}/m");
    let runs = put_tree(&d, &src, &dst, &[]);
    all_ok(&runs);
    let state = || rusqlite::Connection::open(d.path(".ferry/state.db")).unwrap();
    // The intent recorded before the upload was asked for went with its id, and the id with
    // the upload's end: nothing is left in the journal of a run that finished.
    let left: i64 = state()
        .query_row("SELECT count(*) FROM multipart", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0);
    // A kill between the store's answer and the record of its id leaves the intent alone.
    let (target, run): (String, String) = state()
        .query_row("SELECT target, run_id FROM files WHERE path = 'big.bin'", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    state()
        .execute(
            "INSERT INTO multipart (target, key, upload_id, run_id, started_at) VALUES (?1, 'big.bin', '', ?2, '2026-01-01T00:00:00Z')",
            [&target, &run],
        )
        .unwrap();
    // The rollback of that run says so, and what to do, rather than finding nothing.
    let plan = d.run("ferry", &["rollback", "--batch", &run, "--failed-only"], b"");
    let unknown = plan
        .ok()
        .lines()
        .into_iter()
        .find(|l| l["action"] == "unknown_upload")
        .unwrap_or_else(|| panic!("{plan:?}"));
    assert_eq!(unknown["key"], "m/big.bin", "the full key in the bucket");
    assert!(
        unknown["why"]
            .as_str()
            .unwrap()
            .contains("AbortIncompleteMultipartUpload"),
        "{unknown}"
    );
    // So does the next import of the same target; once it put the file again, the intent is
    // settled.
    std::fs::write(src.join("big.bin"), vec![7u8; 20 << 20]).unwrap();
    let again = put_tree(&d, &src, &dst, &["--on-conflict", "overwrite"]);
    all_ok(&again);
    again[1].stderr_has("ferry cannot name it");
    let left: i64 = state()
        .query_row("SELECT count(*) FROM multipart", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0);
}
