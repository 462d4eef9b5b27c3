//! Faults in the network and the server, injected in front of real servers: a loopback proxy
//! (tests/common/proxy.rs) that resets connections, cuts answers short, slows every packet or
//! swallows everything, in front of PostgreSQL, the S3 server and the D1 double; and the servers'
//! own errors (S3 500/503 SlowDown, D1's "storage was reset" 400s). Every run either completes
//! and validates equal, or stops with a clear error and a re-run completes it; nothing is
//! recorded as done that was not.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use crate::common;
use std::process::{Child, Output, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::common::proxy::Proxy;
use crate::common::s3::{Fault, S3Server};
use crate::common::{Dir, all_ok, end_of, pg, put_tree, write_file};

/// Wait for a stage (draining its output all along), failing the test and killing it if it has
/// not ended in `secs`: a fault must end in completion or a clear error, never in a hang.
fn ends_within(child: Child, secs: u64, what: &str) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output().unwrap()));
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(out) => out,
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
            let out = rx.recv().unwrap();
            panic!(
                "{what} was still running after {secs} s: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// `ferry-export SRC | ferry-import DST ARGS` started with the importer's stderr captured (its
/// stdout, the results, is drained by the waiting thread so it never stalls).
fn start_pipeline(d: &Dir, src: &str, dst: &str, args: &[&str]) -> (Child, Child) {
    let mut export = d
        .cmd("ferry-export", &[src, "--state-every", "100", "-q"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ia = vec![dst];
    ia.extend_from_slice(args);
    let import = d
        .cmd("ferry-import", &ia)
        .stdin(Stdio::from(export.stdout.take().unwrap()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (export, import)
}

/// Run the pipeline to its end (at most `secs`): the importer's output.
fn pipeline(d: &Dir, src: &str, dst: &str, args: &[&str], secs: u64) -> Output {
    let (mut export, import) = start_pipeline(d, src, dst, args);
    let out = ends_within(import, secs, "the import");
    let _ = export.wait();
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The END line's rows `written` and `already_imported` of a table import's output.
fn written(out: &Output) -> (u64, u64) {
    let text = String::from_utf8_lossy(&out.stdout);
    let end: serde_json::Value = serde_json::from_str(text.lines().last().unwrap_or("{}")).unwrap();
    assert_eq!(end["type"], "END", "{text}");
    (
        end["written"].as_u64().unwrap(),
        end["already_imported"].as_u64().unwrap(),
    )
}

/// Wait until the proxy has injected `n` faults (the test arms them one after another).
#[track_caller]
fn await_faults(proxy: &Proxy, n: u64, import: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.faults() < n {
        assert!(Instant::now() < deadline, "fault {n} never happened");
        if import.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn postgresql_behind_resets_cut_answers_and_a_slow_link_gets_every_row_once() {
    let d = Dir::new();
    let src = common::items_and_events(&d, 60_000);
    let url = pg::cluster().database("faults");
    let proxy = Proxy::start(pg::cluster().port);
    let via = proxy.url(&url);
    // A slow link all along, a reset part way through the rows, then an answer cut short.
    proxy.delay(Duration::from_millis(2));
    proxy.reset_after(2 << 20);
    let (mut export, mut import) = start_pipeline(&d, &src, &via, &["--create"]);
    await_faults(&proxy, 1, &mut import);
    proxy.truncate_after(300);
    await_faults(&proxy, 2, &mut import);
    let out = ends_within(import, 180, "the import");
    let _ = export.wait();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(proxy.faults(), 2, "both faults landed mid-run");
    assert!(stderr(&out).contains("reconnecting and replaying"), "{}", stderr(&out));
    assert_eq!(written(&out), (75_000, 0));
    let mut c = pg::connect(&url);
    let n: i64 = c.query_one("SELECT count(*) FROM items", &[]).unwrap().get(0);
    assert_eq!(n, 60_000);
    d.run("ferry-validate", &[&src, &url], b"").ok();
}

#[test]
fn postgresql_swallowing_everything_stops_within_the_timeout_and_a_rerun_finishes() {
    let d = Dir::new();
    let src = common::items_and_events(&d, 60_000);
    let url = pg::cluster().database("blackhole");
    let proxy = Proxy::start(pg::cluster().port);
    let via = proxy.url(&url);
    d.set_env("FERRY_TIMEOUT", "1");
    d.set_env("FERRY_RETRIES", "1");
    proxy.blackhole_after(3 << 20);
    let out = pipeline(&d, &src, &via, &["--create"], 120);
    let err = stderr(&out);
    assert!(proxy.faults() > 0, "the blackhole opened mid-run: {err}");
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no answer from the server in 1 s"), "{err}");
    assert!(err.contains("re-run the same command"), "{err}");
    assert!(!err.contains(pg::PASSWORD), "{err}");

    proxy.up();
    let mut c = pg::connect(&url);
    let before: i64 = c
        .query_one("SELECT count(*) FROM items", &[])
        .map(|r| r.get(0))
        .unwrap_or(0);
    assert!(before < 60_000, "the run stopped before the end: {before}");
    let events_before: i64 = c
        .query_one("SELECT count(*) FROM events", &[])
        .map(|r| r.get(0))
        .unwrap_or(0);
    let out = pipeline(&d, &src, &via, &["--create"], 120);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (w, already) = written(&out);
    assert_eq!(w + already, 75_000, "every row once");
    assert_eq!(
        already as i64,
        before + events_before,
        "what landed is not written again"
    );
    d.run("ferry-validate", &[&src, &url], b"").ok();
}

/// A source server that stops sending in the middle of a table's COPY (the request long
/// answered, so the socket itself has nothing outstanding): the export stops within
/// FERRY_TIMEOUT, says how to resume, and writes no END.
#[test]
fn postgresql_source_stalling_mid_copy_stops_within_the_timeout() {
    let d = Dir::new();
    let url = pg::big_table("stall", 300_000, 200);
    let proxy = Proxy::start(pg::cluster().port);
    let via = proxy.url(&url);
    d.set_env("FERRY_TIMEOUT", "1");
    let (export, line) = pg::MidExport::start(&d, &[&via, "-q"], 1000);
    assert!(line.contains("\"RECORD\""), "the rows are flowing: {line}");
    // The rest of the table is on its way when the link goes silent.
    proxy.blackhole();
    let (code, err, text) = export.finish(60);
    assert!(proxy.faults() > 0, "the blackhole caught the COPY: {err}");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("no more rows from the server in 1 s (FERRY_TIMEOUT)"),
        "{err}"
    );
    assert!(err.contains("reading public.big"), "{err}");
    assert!(err.contains("--resume"), "{err}");
    assert!(!err.contains(pg::PASSWORD), "{err}");
    assert!(text.lines().count() < 300_000, "stopped part way");
    assert!(!text.contains("\"type\":\"END\""), "no END after a failure");
}

const BUCKET: &str = "fault-bucket";

fn tree(d: &Dir, n: usize) -> std::path::PathBuf {
    let root = d.path("tree");
    for i in 0..n {
        write_file(
            &root,
            format!("d{}/f-{i}.bin", i % 7),
            format!("object {i} ").repeat(i % 300 + 1).as_bytes(),
        );
    }
    root
}

/// An S3 server behind a proxy, with the environment pointing ferry at the proxy.
fn s3_behind_proxy(d: &Dir) -> (S3Server, Proxy) {
    let s3 = S3Server::start(&d.path("s3-root"), BUCKET);
    let proxy = Proxy::start(s3.port);
    for (k, v) in s3.env() {
        d.set_env(k, &v);
    }
    d.set_env("AWS_ENDPOINT_URL", &format!("http://127.0.0.1:{}", proxy.port));
    (s3, proxy)
}

#[test]
fn s3_behind_server_errors_resets_and_cut_answers_gets_every_file_verified() {
    let d = Dir::new();
    let (s3, proxy) = s3_behind_proxy(&d);
    let src = tree(&d, 400);
    let dst = format!("s3://{BUCKET}/t");
    d.set_env("FERRY_RETRIES", "4");
    s3.faults.lock().unwrap().extend(
        [(503, "SlowDown"), (500, "InternalError"), (503, "ServiceUnavailable")].map(|(s, c)| Fault::new(s, c)),
    );
    proxy.reset_after(300 << 10);
    let addr = format!("dir:{}", src.display());
    let (mut export, mut import) = start_pipeline(&d, &addr, &dst, &["--jobs", "4"]);
    await_faults(&proxy, 1, &mut import);
    // Cut an answer short: the object may be in and the client not know it.
    proxy.truncate_after(700);
    await_faults(&proxy, 2, &mut import);
    let out = ends_within(import, 120, "the upload");
    let _ = export.wait();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(proxy.faults(), 2, "both faults landed mid-run");
    assert!(s3.faults.lock().unwrap().is_empty(), "every server error was answered");
    let end: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(
        end["uploaded"].as_u64().unwrap() + end["present"].as_u64().unwrap(),
        400,
        "{end}"
    );
    d.run("ferry-validate", &[&addr, &dst], b"").ok();
}

#[test]
fn s3_swallowing_everything_stops_within_the_timeout_and_a_rerun_sends_the_rest() {
    let d = Dir::new();
    let (s3, proxy) = s3_behind_proxy(&d);
    let src = tree(&d, 400);
    let dst = format!("s3://{BUCKET}/t");
    d.set_env("FERRY_TIMEOUT", "1");
    d.set_env("FERRY_RETRIES", "1");
    proxy.blackhole_after(400 << 10);
    let addr = format!("dir:{}", src.display());
    let out = pipeline(&d, &addr, &dst, &["--jobs", "4"], 120);
    let err = stderr(&out);
    assert!(proxy.faults() > 0, "the blackhole opened mid-run: {err}");
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("re-run the same command"), "{err}");
    assert!(err.contains("timed out"), "{err}");
    assert!(!err.contains(common::s3::SECRET_KEY), "{err}");

    proxy.up();
    let before = s3.requests();
    let again = put_tree(&d, &src, &dst, &["--jobs", "4"]);
    all_ok(&again);
    let end = end_of(&again[1]);
    let done = end["already_done"].as_u64().unwrap();
    assert!(
        done > 0 && done < 400,
        "what the first run finished is not sent again: {end}"
    );
    assert_eq!(
        end["uploaded"].as_u64().unwrap() + end["present"].as_u64().unwrap() + done,
        400,
        "{end}"
    );
    assert!(s3.requests() > before);
    d.run("ferry-validate", &[&addr, &dst], b"").ok();
}

#[test]
fn d1_behind_resets_cut_answers_and_storage_resets_gets_every_row_once() {
    let d = Dir::new();
    let dbl = common::d1::double(&d, 60.0, 1200);
    let proxy = Proxy::start(dbl.port);
    d.set_env("CLOUDFLARE_API_BASE_URL", &proxy.url(&dbl.base_url()));
    d.set_env("FERRY_D1_REQUEST_BYTES", "20000");
    d.set_env("FERRY_RETRIES", "4");
    let src = common::items_and_events(&d, 4000);
    dbl.stats.inject_resets.store(2, Ordering::SeqCst);
    proxy.reset_after(60_000);
    let (mut export, mut import) = start_pipeline(&d, &src, "d1://acct/faults", &["--create"]);
    await_faults(&proxy, 1, &mut import);
    // An answer cut short after D1 applied the request: sent again blindly, the rows would clash.
    proxy.truncate_after(100);
    await_faults(&proxy, 2, &mut import);
    let out = ends_within(import, 120, "the import");
    let _ = export.wait();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(proxy.faults(), 2, "both faults landed mid-run");
    assert_eq!(dbl.stats.inject_resets.load(Ordering::SeqCst), 0);
    assert!(
        err.contains("storage caused object to be reset"),
        "retried, not rejected: {err}"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let end: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(
        (end["written"].as_u64(), end["rejected"].as_u64()),
        (Some(5000), Some(0)),
        "{end}"
    );
    d.run("ferry-validate", &[&src, "d1://acct/faults"], b"").ok();
}

#[test]
fn d1_swallowing_everything_stops_within_the_timeout_and_a_rerun_finishes() {
    let d = Dir::new();
    let dbl = common::d1::double(&d, 60.0, 1200);
    let proxy = Proxy::start(dbl.port);
    d.set_env("CLOUDFLARE_API_BASE_URL", &proxy.url(&dbl.base_url()));
    d.set_env("FERRY_D1_REQUEST_BYTES", "20000");
    d.set_env("FERRY_TIMEOUT", "1");
    d.set_env("FERRY_RETRIES", "1");
    let src = common::items_and_events(&d, 4000);
    proxy.blackhole_after(100_000);
    let out = pipeline(&d, &src, "d1://acct/hole", &["--create"], 120);
    let err = stderr(&out);
    assert!(proxy.faults() > 0, "the blackhole opened mid-run: {err}");
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("re-run the same command"), "{err}");
    assert!(err.contains("no answer in 1 s (FERRY_TIMEOUT"), "{err}");
    assert!(!err.contains(common::d1::TOKEN), "{err}");

    proxy.up();
    let out = pipeline(&d, &src, "d1://acct/hole", &["--create"], 120);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (w, already) = written(&out);
    assert!(already > 0, "what landed before is not sent again");
    assert_eq!(w + already, 5000);
    d.run("ferry-validate", &[&src, "d1://acct/hole"], b"").ok();
}

#[test]
fn a_create_only_put_whose_connection_closes_unanswered_is_settled_by_what_is_at_the_key() {
    let d = Dir::new();
    let (s3, _proxy) = s3_behind_proxy(&d);
    let src = d.path("big");
    // Big enough that the client is still sending when the server answers and hangs up.
    write_file(&src, "a.bin", &vec![42u8; 6 << 20]);
    let dst = format!("s3://{BUCKET}/r");
    all_ok(&put_tree(&d, &src, &dst, &[]));
    // Another state file: this run does not know the object is there, and sends it
    // create-only; the server refuses it by its headers and closes the connection before the
    // answer is read (the client library does not resend a PUT).
    s3.faults.lock().unwrap().push_back(Fault {
        status: 412,
        code: "PreconditionFailed",
        hang_up: true,
    });
    let runs = put_tree(&d, &src, &dst, &["--state", "other.db"]);
    all_ok(&runs);
    assert!(
        s3.faults.lock().unwrap().is_empty(),
        "the connection was closed on the PUT"
    );
    let r = common::upload_results(&runs[1]).pop().unwrap();
    assert_eq!(r["status"], "present", "{r}");
    d.run("ferry-validate", &[&format!("dir:{}", src.display()), &dst], b"")
        .ok();
}
