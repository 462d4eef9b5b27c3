//! `ferry serve` through a real HTTP client against the running binary: tokens and scopes, the
//! runs and one run as `ferry status --json` gives them, Prometheus metrics, JSON errors, and a
//! clean stop on SIGTERM.

use std::io::BufRead as _;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::Dir;

/// A running `ferry serve`, killed when dropped.
struct Server {
    child: Child,
    base: String,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    fn start(d: &Dir, args: &[&str]) -> Server {
        let mut all = vec!["serve", "--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let mut child = d
            .cmd("ferry", &all)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting ferry serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("stderr");
        let keep = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = keep.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = stderr.lock().unwrap().clone();
            if let Some(at) = text.find("listening on http://") {
                let rest = &text[at + "listening on ".len()..];
                let base = rest.split_whitespace().next().unwrap().to_owned();
                return Server { child, base, stderr };
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("ferry serve ended ({status}) before listening: {text}");
            }
            assert!(Instant::now() < deadline, "ferry serve did not start: {text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn get(&self, path: &str, token: Option<&str>) -> (u16, String, String) {
        let mut req = reqwest::blocking::Client::new().get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().expect("the server answers");
        let status = r.status().as_u16();
        let ctype = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, ctype, r.text().unwrap())
    }

    fn json(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let (status, ctype, body) = self.get(path, token);
        assert!(ctype.starts_with("application/json"), "{path}: {ctype}: {body}");
        (status, serde_json::from_str(&body).unwrap())
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A new token with `scopes`, appended to the config file `ferry-serve.toml`: the token.
fn new_token(d: &Dir, name: &str, scopes: &[&str]) -> String {
    new_token_limited(d, name, scopes, &[])
}

/// [`new_token`], with limits (`--entity ROOT`, `--store NAME`).
fn new_token_limited(d: &Dir, name: &str, scopes: &[&str], limits: &[&str]) -> String {
    let mut args = vec!["serve", "--new-token", name];
    for s in scopes {
        args.extend(["--scope", s]);
    }
    args.extend_from_slice(limits);
    let r = d.run("ferry", &args, b"");
    r.ok();
    let token = r
        .stderr()
        .lines()
        .find(|l| l.starts_with("ferry_"))
        .expect("the token on stderr")
        .to_owned();
    assert!(
        !r.stdout().contains(&token),
        "the config lines hold the hash, not the token"
    );
    let path = d.path("ferry-serve.toml");
    let mut config = std::fs::read_to_string(&path).unwrap_or_default();
    config.push_str(&r.stdout());
    std::fs::write(path, config).unwrap();
    token
}

fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or_default()
}

#[test]
fn with_no_config_every_call_but_health_is_refused_on_loopback() {
    let d = Dir::new();
    let s = Server::start(&d, &[]);
    assert!(s.base.starts_with("http://127.0.0.1:"), "{}", s.base);
    assert!(s.stderr().contains("no tokens configured"), "{}", s.stderr());
    let (status, v) = s.json("/healthz", None);
    assert_eq!((status, v["status"].as_str()), (200, Some("ok")));
    for path in ["/api/v1/runs", "/api/v1/runs/x", "/metrics"] {
        let (status, v) = s.json(path, None);
        assert_eq!(status, 401, "{path}: {v}");
        assert_eq!(error_code(&v), "unauthorized");
        let (status, _) = s.json(path, Some("ferry_guess"));
        assert_eq!(status, 401, "{path} with a token no config names");
    }
}

#[test]
fn runs_and_metrics_are_served_to_a_token_with_the_read_scope_only() {
    let d = Dir::new();
    let src = d.sample();
    let stream = d.run("ferry-export", &[&src], b"").output.stdout.clone();
    d.run("ferry-import", &[&d.db("copy.db"), "--create"], &stream).ok();
    let reader = new_token(&d, "grafana", &["read"]);
    let importer = new_token(&d, "app", &["import"]);
    let admin = new_token(&d, "root", &["admin"]);
    let s = Server::start(&d, &["--config", "ferry-serve.toml"]);
    assert!(s.stderr().contains("3 tokens"), "{}", s.stderr());

    // The runs, as ferry status --json gives them.
    let (status, v) = s.json("/api/v1/runs", Some(&reader));
    assert_eq!(status, 200, "{v}");
    let runs = v["runs"].as_array().unwrap();
    let cli = d.run("ferry", &["status", "--json"], b"");
    let cli_runs: Vec<Value> = cli
        .stdout()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["type"] == "RUN")
        .collect();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["run"], cli_runs[0]["run"]);
    assert_eq!(runs[0]["run"]["rows_written"], 680);
    let id = runs[0]["run"]["run_id"].as_str().unwrap();

    // One run, with its batches.
    let (status, one) = s.json(&format!("/api/v1/runs/{id}"), Some(&admin));
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["run"]["run_id"], id);
    let batches = one["batches"].as_array().unwrap();
    assert!(!batches.is_empty());
    let rows: i64 = batches.iter().map(|b| b["written"].as_i64().unwrap()).sum();
    assert_eq!(rows, 680);
    let (status, v) = s.json("/api/v1/runs/01a00000-0000-7000-8000-000000000000", Some(&reader));
    assert_eq!((status, error_code(&v)), (404, "not_found"), "{v}");

    // A token without the scope is known, and refused.
    let (status, v) = s.json("/api/v1/runs", Some(&importer));
    assert_eq!((status, error_code(&v)), (403, "forbidden"), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("\"app\""), "{v}");

    // Prometheus text: the rows the run wrote, into its target.
    let (status, ctype, text) = s.get("/metrics", Some(&reader));
    assert_eq!(status, 200);
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    let target = format!("sqlite:{}", d.path("copy.db").display());
    let written = format!("ferry_rows{{stage=\"import\",target=\"{target}\",outcome=\"written\"}} 680");
    assert!(text.contains(&written), "{text}");
    assert!(
        text.contains("ferry_runs{stage=\"import\",status=\"complete\"} 1"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    let (status, _, _) = s.get("/metrics", Some(&importer));
    assert_eq!(status, 403);

    // An endpoint that does not exist says so in JSON.
    let (status, v) = s.json("/api/v2/nothing", Some(&reader));
    assert_eq!((status, error_code(&v)), (404, "not_found"));

    // No token reaches the server's log.
    for t in [&reader, &importer, &admin] {
        assert!(!s.stderr().contains(t.as_str()));
    }
}

#[test]
fn a_run_killed_mid_import_is_served_as_stopped_and_its_rows_counted() {
    let d = Dir::new();
    let src = crate::common::items_and_events(&d, 30_000);
    let stream = d.run("ferry-export", &[&src], b"").output.stdout.clone();
    let reader = new_token(&d, "grafana", &["read"]);
    // An import whose input stops part way (the writer killed), its process then killed.
    let cut = &stream[..stream.len() / 2];
    let mut import = d
        .cmd("ferry-import", &[&d.db("copy.db"), "--create"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut input = import.stdin.take().unwrap();
    std::io::Write::write_all(&mut input, cut).unwrap();
    // Wait for a committed batch, then kill the importer with its input still open.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = d.run("ferry", &["status", "--json"], b"");
        if status.stdout().contains("\"rows_written\":") && !status.stdout().contains("\"rows_written\":0") {
            break;
        }
        assert!(Instant::now() < deadline, "no batch committed: {status:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    import.kill().unwrap();
    import.wait().unwrap();
    drop(input);

    let s = Server::start(&d, &["--config", "ferry-serve.toml"]);
    let (_, v) = s.json("/api/v1/runs", Some(&reader));
    let run = &v["runs"][0]["run"];
    assert_eq!(run["status"], "stopped", "{v}");
    assert!(run["message"].as_str().unwrap().contains("killed?"), "{v}");
    let (_, _, text) = s.get("/metrics", Some(&reader));
    assert!(
        text.contains("ferry_runs{stage=\"import\",status=\"stopped\"} 1"),
        "{text}"
    );
}

#[test]
fn sigterm_stops_the_server_cleanly_and_bad_settings_stop_it_before_it_listens() {
    let d = Dir::new();
    let s = Server::start(&d, &[]);
    let pid = s.child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let mut s = s;
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "still serving after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{}", s.stderr());

    // A config that cannot be read, or holds what is not a token, names the file and the problem.
    std::fs::write(
        d.path("bad.toml"),
        "[[token]]\nname = \"x\"\nsha256 = \"abc\"\nscopes = [\"read\"]\n",
    )
    .unwrap();
    d.run("ferry", &["serve", "--config", "bad.toml"], b"")
        .expect_code(2)
        .stderr_has("bad.toml: token \"x\": sha256 is the token's SHA-256 as 64 hex digits");
    std::fs::write(d.path("typo.toml"), "listn = \"127.0.0.1:1\"\n").unwrap();
    d.run("ferry", &["serve", "--config", "typo.toml"], b"")
        .expect_code(2)
        .stderr_has("unknown field `listn`");
    std::fs::write(
        d.path("scopes.toml"),
        format!(
            "[[token]]\nname = \"x\"\nsha256 = \"{}\"\nscopes = [\"write\"]\n",
            "ab".repeat(32)
        ),
    )
    .unwrap();
    d.run("ferry", &["serve", "--config", "scopes.toml"], b"")
        .expect_code(2)
        .stderr_has("unknown variant `write`");
    std::fs::write(d.path("hook.toml"), "[alerts]\nwebhook = \"ftp://example\"\n").unwrap();
    d.run("ferry", &["serve", "--config", "hook.toml"], b"")
        .expect_code(2)
        .stderr_has("[alerts] webhook is an http:// or https:// URL");
    d.run("ferry", &["serve", "--config", "missing.toml"], b"")
        .expect_code(2)
        .stderr_has("missing.toml: cannot read it");
    d.run("ferry", &["serve", "--listen", "localhost"], b"")
        .expect_code(2)
        .stderr_has("--listen \"localhost\": write ADDRESS:PORT");
    // A port taken by another server is said, with the address.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = taken.local_addr().unwrap().to_string();
    d.run("ferry", &["serve", "--listen", &at], b"")
        .expect_code(2)
        .stderr_has(&format!("cannot listen on {at}"));
}

/// The RECORD lines of a stream, sorted: what two exports of the same rows share.
fn records(stream: &[u8]) -> Vec<String> {
    let mut r: Vec<String> = String::from_utf8_lossy(stream)
        .lines()
        .filter(|l| l.starts_with("{\"type\":\"RECORD\""))
        .map(str::to_owned)
        .collect();
    r.sort();
    r
}

/// `POST path` with a JSON body (or raw bytes and a content type).
fn post(s: &Server, path: &str, token: &str, body: &[u8], ctype: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::blocking::Client::new()
        .post(format!("{}{path}", s.base))
        .bearer_auth(token)
        .body(body.to_vec());
    if let Some(c) = ctype {
        req = req.header("content-type", c);
    }
    let r = req.send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap())
}

/// Wait for an export to end: its record.
fn finished(s: &Server, id: &str, token: &str) -> Value {
    ended(s, "export", id, token)
}

/// Wait for a job (`export`, `import`) to end: its record.
fn ended(s: &Server, kind: &str, id: &str, token: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, job) = s.json(&format!("/api/v1/{kind}/{id}"), Some(token));
        assert_eq!(status, 200, "{job}");
        if job["status"] != "running" {
            return job;
        }
        assert!(Instant::now() < deadline, "{kind} {id} still running: {job}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn one_users_data_exported_over_http_is_the_clis_entity_export_and_loads() {
    let d = Dir::new();
    let src = d.sample();
    let app_db = d.path("sample.db");
    std::fs::write(
        d.path("ferry-serve.toml"),
        format!("[stores]\napp = \"sqlite:{}\"\n", app_db.display()),
    )
    .unwrap();
    let user = new_token(&d, "user-36", &["export"]);
    // The entity-limited token, written by --entity.
    let only36 = new_token_limited(&d, "only-36", &["export"], &["--entity", "users:id=36"]);
    let reader = new_token(&d, "grafana", &["read"]);
    let s = Server::start(&d, &["--config", "ferry-serve.toml"]);

    let ask = br#"{"store": "app", "root": "users:id=36", "follow_fks": true}"#;
    let (status, job) = post(&s, "/api/v1/export", &only36, ask, Some("application/json"));
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(job["download"], format!("/api/v1/export/{id}/download"));
    let job = finished(&s, &id, &only36);
    assert_eq!(job["status"], "complete", "{job}");
    assert_eq!(job["rows"], 13, "{job}");

    // The download is the CLI's entity export, row for row.
    let r = reqwest::blocking::Client::new()
        .get(format!("{}/api/v1/export/{id}/download", s.base))
        .bearer_auth(&only36)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let body = r.bytes().unwrap().to_vec();
    assert_eq!(body.len() as u64, job["bytes"].as_u64().unwrap());
    let cli = d.run("ferry-export", &[&src, "--root", "users:id=36", "--follow-fks"], b"");
    assert_eq!(records(&body), records(&cli.output.stdout));
    assert_eq!(records(&body).len(), 13);

    // A cut download goes on from where it stopped (HTTP Range).
    let r = reqwest::blocking::Client::new()
        .get(format!("{}/api/v1/export/{id}/download", s.base))
        .bearer_auth(&only36)
        .header("range", "bytes=100-")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 206);
    assert_eq!(r.bytes().unwrap().to_vec(), body[100..].to_vec());

    // The file loads, and proves itself against the target (the shared tags its files point at
    // are not one user's data: not checked, and said).
    std::fs::write(d.path("user-36.ndjson"), &body).unwrap();
    d.run("ferry-import", &[&d.db("user.db"), "--create"], &body).ok();
    d.run(
        "ferry-validate",
        &["user-36.ndjson", &d.db("user.db"), "--allow-unverified"],
        b"",
    )
    .ok()
    .stderr_has("13 source rows, 13 target rows");

    // The token limited to user 36 may export nothing else.
    for other in [
        &br#"{"store": "app", "root": "users:id=0", "follow_fks": true}"#[..],
        br#"{"store": "app", "tables": ["users"]}"#,
        br#"{"store": "app"}"#,
    ] {
        let (status, v) = post(&s, "/api/v1/export", &only36, other, Some("application/json"));
        assert_eq!((status, error_code(&v)), (403, "forbidden"), "{v}");
    }
    // Another token's export is not found; a read token may not export.
    let (status, _) = s.json(&format!("/api/v1/export/{id}"), Some(&user));
    assert_eq!(status, 404);
    let (status, _, _) = s.get(&format!("/api/v1/export/{id}/download"), Some(&user));
    assert_eq!(status, 404);
    let (status, v) = post(&s, "/api/v1/export", &reader, ask, Some("application/json"));
    assert_eq!((status, error_code(&v)), (403, "forbidden"));

    // What is wrong with a request is said, as JSON, and nothing is started.
    for (body, ctype, want_status, want) in [
        (&b"{not json"[..], Some("application/json"), 400, "bad_request"),
        (
            br#"{"store": "app", "rooot": "users:id=1"}"#,
            Some("application/json"),
            422,
            "rooot",
        ),
        (br#"{"root": "users:id=1"}"#, Some("application/json"), 422, "store"),
        (
            br#"{"store": "crm"}"#,
            Some("application/json"),
            400,
            "no store \"crm\" in the server's config (stores: app)",
        ),
        (
            br#"{"store": "app", "root": "users"}"#,
            Some("application/json"),
            400,
            "TABLE:COLUMN=VALUE",
        ),
        (
            br#"{"store": "app", "root": "users:id=1", "tables": ["x"]}"#,
            Some("application/json"),
            400,
            "not both",
        ),
        (
            br#"{"store": "app", "root": "nosuch:id=1"}"#,
            Some("application/json"),
            202,
            "",
        ),
        (br#"{"store": "app"}"#, None, 415, "unsupported_media_type"),
    ] {
        let (status, v) = post(&s, "/api/v1/export", &user, body, ctype);
        assert_eq!(status, want_status, "{}: {v}", String::from_utf8_lossy(body));
        if status == 202 {
            // Accepted, then failed with the reason, and nothing to download.
            let id = v["id"].as_str().unwrap();
            let job = finished(&s, id, &user);
            assert_eq!(job["status"], "failed");
            assert!(job["error"].as_str().unwrap().contains("no table \"nosuch\""), "{job}");
            let (status, v) = s.json(&format!("/api/v1/export/{id}/download"), Some(&user));
            assert_eq!((status, error_code(&v)), (409, "not_ready"));
        } else {
            let said = format!(
                "{} {}",
                error_code(&v),
                v["error"]["message"].as_str().unwrap_or_default()
            );
            assert!(said.contains(want), "{want}: {v}");
        }
    }

    // Each export asked for is in the audit log, by token name, never the token.
    let audit = std::fs::read_to_string(d.path(".ferry/serve-audit.ndjson")).unwrap();
    let lines: Vec<Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{audit}");
    assert_eq!(lines[0]["caller"], "only-36");
    assert_eq!(lines[0]["run"], id.as_str());
    assert_eq!(lines[0]["request"]["root"], "users:id=36");
    for t in [&only36, &user, &reader] {
        assert!(!audit.contains(t.as_str()));
    }
}

#[test]
fn exports_beyond_max_runs_wait_and_one_cut_by_a_stopped_server_is_failed_on_restart() {
    let d = Dir::new();
    let src = crate::common::items_and_events(&d, 300_000);
    let path = src.strip_prefix("sqlite:").unwrap();
    std::fs::write(
        d.path("ferry-serve.toml"),
        format!("max_runs = 1\n[stores]\nbig = \"sqlite:{path}\"\n"),
    )
    .unwrap();
    let token = new_token(&d, "ops", &["export", "read"]);
    let mut s = Server::start(&d, &["--config", "ferry-serve.toml"]);
    let ask = br#"{"store": "big"}"#;
    let (status, first) = post(&s, "/api/v1/export", &token, ask, Some("application/json"));
    assert_eq!(status, 202, "{first}");
    let (status, v) = post(&s, "/api/v1/export", &token, ask, Some("application/json"));
    assert_eq!((status, error_code(&v)), (429, "too_many_runs"), "{v}");
    // The server dies during the export (a crash, not a stop).
    let id = first["id"].as_str().unwrap().to_owned();
    let (_, job) = s.json(&format!("/api/v1/export/{id}"), Some(&token));
    assert_eq!(
        job["status"], "running",
        "the export was still going: make the table bigger"
    );
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    drop(s);

    let s = Server::start(&d, &["--config", "ferry-serve.toml"]);
    assert!(
        s.stderr()
            .contains("1 jobs were running when the server last stopped: marked failed"),
        "{}",
        s.stderr()
    );
    let (status, job) = s.json(&format!("/api/v1/export/{id}"), Some(&token));
    assert_eq!(status, 200);
    assert_eq!(job["status"], "failed", "{job}");
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("the server stopped during this job")
    );
    let left: Vec<_> = std::fs::read_dir(d.path(".ferry/exports"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!left.iter().any(|n| n.contains("partial")), "{left:?}");
    // Asked again, it completes, and the slot is free again after.
    let (status, again) = post(&s, "/api/v1/export", &token, ask, Some("application/json"));
    assert_eq!(status, 202, "{again}");
    let job = finished(&s, again["id"].as_str().unwrap(), &token);
    assert_eq!(job["status"], "complete", "{job}");
    assert_eq!(job["rows"], 375_000);
    let (status, _) = post(
        &s,
        "/api/v1/export",
        &token,
        br#"{"store": "big", "tables": ["events"]}"#,
        Some("application/json"),
    );
    assert_eq!(status, 202);
}

/// `POST` raw bytes (no content type): the import's way of sending a stream.
fn post_raw(s: &Server, path: &str, token: &str, body: &[u8]) -> (u16, Value) {
    post(s, path, token, body, Some("application/x-ndjson"))
}

/// Wait for an import to end: its record.
fn imported(s: &Server, id: &str, token: &str) -> Value {
    ended(s, "import", id, token)
}

#[test]
fn a_stream_uploaded_is_planned_imported_and_skipped_the_second_time() {
    let d = Dir::new();
    let src = d.sample();
    let stream = d
        .run("ferry-export", &[&src, "--root", "users:id=36", "--follow-fks"], b"")
        .output
        .stdout
        .clone();
    std::fs::write(d.path("user-36.ndjson"), &stream).unwrap();
    std::fs::write(
        d.path("ferry-serve.toml"),
        format!(
            "max_upload_bytes = 100000\n[stores]\ncopy = \"sqlite:{}\"\n",
            d.path("copy.db").display()
        ),
    )
    .unwrap();
    let app = new_token(&d, "app", &["import"]);
    let exporter = new_token(&d, "exporter", &["export"]);
    let reader = new_token(&d, "grafana", &["read"]);
    let s = Server::start(&d, &["--config", "ferry-serve.toml"]);

    // The plan first: nothing is written.
    let (status, v) = post_raw(&s, "/api/v1/import?store=copy&create=true&dry_run=true", &app, &stream);
    assert_eq!(status, 200, "{v}");
    let plan = v["plan"].as_array().unwrap();
    let loads: i64 = plan
        .iter()
        .filter(|p| p["action"] == "load")
        .map(|p| p["insert"].as_i64().unwrap())
        .sum();
    assert_eq!(loads, 13, "{v}");
    assert!(!d.path("copy.db").exists(), "a dry run writes nothing");

    // Then the import, in the background; its run is the state file's.
    let (status, job) = post_raw(&s, "/api/v1/import?store=copy&create=true", &app, &stream);
    assert_eq!(status, 202, "{job}");
    // Its run is known at once (the stream's), for GET /api/v1/runs/RUN/events.
    let begin: Value = serde_json::from_slice(stream.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(job["run"], begin["run_id"], "{job}");
    let job = imported(&s, job["id"].as_str().unwrap(), &app);
    assert_eq!(job["status"], "complete", "{job}");
    assert_eq!(
        (job["written"].as_i64(), job["rows"].as_i64()),
        (Some(13), Some(13)),
        "{job}"
    );
    let run = job["run"].as_str().unwrap();
    let (status, r) = s.json(&format!("/api/v1/runs/{run}"), Some(&reader));
    assert_eq!((status, r["run"]["rows_written"].as_i64()), (200, Some(13)), "{r}");
    // The target holds the user's rows, read by SQLite itself.
    let conn = rusqlite::Connection::open(d.path("copy.db")).unwrap();
    assert_eq!(crate::common::count(&conn, "notifications"), 7);
    assert_eq!(crate::common::count(&conn, "users"), 1);
    d.run(
        "ferry-validate",
        &["user-36.ndjson", &d.db("copy.db"), "--allow-unverified"],
        b"",
    )
    .ok();

    // The same file again, as a multipart form (curl -F): found done, nothing written twice.
    let curl = std::process::Command::new("curl")
        .args([
            "-sS",
            "-H",
            &format!("Authorization: Bearer {app}"),
            "-F",
            "file=@user-36.ndjson",
        ])
        .arg(format!("{}/api/v1/import?store=copy&on_conflict=skip", s.base))
        .current_dir(d.root())
        .output();
    let again: Value = match curl {
        Ok(out) if out.status.success() => serde_json::from_slice(&out.stdout).unwrap(),
        Ok(out) => panic!("curl failed: {}", String::from_utf8_lossy(&out.stderr)),
        Err(e) => {
            eprintln!("SKIPPED the multipart upload by curl: {e}; sent by reqwest as a body instead");
            post_raw(&s, "/api/v1/import?store=copy&on_conflict=skip", &app, &stream).1
        }
    };
    let job = imported(&s, again["id"].as_str().expect("an import record"), &app);
    assert_eq!(job["status"], "complete", "{job}");
    assert_eq!(
        (job["written"].as_i64(), job["already_done"].as_i64()),
        (Some(0), Some(13)),
        "{job}"
    );
    assert_eq!(crate::common::count(&conn, "notifications"), 7);

    // Refused before anything is kept or written, each as JSON naming what is wrong.
    for (path, token, body, want_status, want) in [
        ("/api/v1/import?store=copy", &exporter, &stream[..], 403, "forbidden"),
        ("/api/v1/import?store=crm", &app, &stream[..], 400, "no store \"crm\""),
        (
            "/api/v1/import?store=copy&on_conflict=replace",
            &app,
            &stream[..],
            400,
            "unknown variant `replace`",
        ),
        (
            "/api/v1/import?store=copy&crate=true",
            &app,
            &stream[..],
            400,
            "unknown field `crate`",
        ),
        ("/api/v1/import", &app, &stream[..], 400, "missing field `store`"),
        ("/api/v1/import?store=copy", &app, b"", 400, "the upload is empty"),
        (
            "/api/v1/import?store=copy",
            &app,
            &vec![b'x'; 100_001][..],
            413,
            "over 100000 bytes",
        ),
    ] {
        let (status, v) = post_raw(&s, path, token, body);
        assert_eq!(status, want_status, "{path}: {v}");
        let said = format!(
            "{} {}",
            error_code(&v),
            v["error"]["message"].as_str().unwrap_or_default()
        );
        assert!(said.contains(want), "{path}: {want}: {v}");
    }
    let kept: Vec<_> = std::fs::read_dir(d.path(".ferry/imports"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".ndjson") || n.contains("partial"))
        .collect();
    assert!(kept.is_empty(), "an upload is deleted once its import ended: {kept:?}");

    // What does not start as a stream is refused at once; one broken further on is imported up
    // to the break, and its import fails naming the line.
    let (status, v) = post_raw(
        &s,
        "/api/v1/import?store=copy",
        &app,
        b"{\"type\":\"RECORD\"\nnot json\n",
    );
    assert_eq!((status, error_code(&v)), (422, "invalid_stream"), "{v}");
    let broken = [&stream[..stream.len() / 2], b"\nnot json\n"].concat();
    let (status, job) = post_raw(&s, "/api/v1/import?store=copy&on_conflict=skip", &app, &broken);
    assert_eq!(status, 202, "{job}");
    let job = imported(&s, job["id"].as_str().unwrap(), &app);
    assert_eq!(job["status"], "failed", "{job}");
    assert!(job["error"].as_str().unwrap().contains("line "), "{job}");

    // Every import is audited.
    let audit = std::fs::read_to_string(d.path(".ferry/serve-audit.ndjson")).unwrap();
    assert_eq!(
        audit.lines().filter(|l| l.contains("\"action\":\"import\"")).count(),
        3,
        "{audit}"
    );
}

#[test]
fn a_stream_is_validated_on_its_own_and_compared_with_a_store() {
    let d = Dir::new();
    let src = d.sample();
    // The sample's users, tags and the files tagged (the whole sample holds a dangling
    // reference on purpose, which a validation rightly fails).
    let args = [
        src.as_str(),
        "--table",
        "users",
        "--table",
        "tags",
        "--table",
        "saved_files",
        "--table",
        "file_tags",
    ];
    let stream = d.run("ferry-export", &args, b"").output.stdout.clone();
    d.run("ferry-import", &[&d.db("copy.db"), "--create"], &stream).ok();
    // The API's verdicts are ferry-validate's.
    std::fs::write(d.path("s.ndjson"), &stream).unwrap();
    d.run("ferry-validate", &["s.ndjson"], b"").ok();
    d.run("ferry-validate", &["s.ndjson", &d.db("copy.db")], b"").ok();
    std::fs::write(
        d.path("ferry-serve.toml"),
        format!(
            "[stores]\ncopy = \"sqlite:{}\"\napp = \"{src}\"\n",
            d.path("copy.db").display()
        ),
    )
    .unwrap();
    let reader = new_token(&d, "grafana", &["read"]);
    let app = new_token(&d, "app", &["import", "export", "read"]);
    let s = Server::start(&d, &["--config", "ferry-serve.toml"]);

    // On its own: whole, counted and digested as its producer said.
    let (status, v) = post_raw(&s, "/api/v1/validate", &reader, &stream);
    assert_eq!((status, v["status"].as_str()), (200, Some("pass")), "{v}");
    assert_eq!(v["report"]["streams"].as_array().unwrap().len(), 4);
    // A value changed on the way: the digest says so.
    let text = String::from_utf8(stream.clone()).unwrap();
    let tampered = text.replacen("\"name\":\"Ärger\"", "\"name\":\"Aerger\"", 1);
    assert_ne!(tampered, text, "the sample has the tag");
    let (status, v) = post_raw(&s, "/api/v1/validate", &reader, tampered.as_bytes());
    assert_eq!((status, v["status"].as_str()), (200, Some("fail")), "{v}");
    assert!(!v["findings"].as_array().unwrap().is_empty(), "{v}");

    // Compared with the store it was imported into: equal; then a row changed there is found by key.
    let (status, v) = post_raw(&s, "/api/v1/compare?store=copy", &app, &stream);
    assert_eq!((status, v["status"].as_str()), (200, Some("pass")), "{v}");
    let conn = rusqlite::Connection::open(d.path("copy.db")).unwrap();
    conn.execute(
        "UPDATE saved_files SET size = size + 1 WHERE id = (SELECT min(id) FROM saved_files)",
        [],
    )
    .unwrap();
    let (status, v) = post_raw(&s, "/api/v1/compare?store=copy", &app, &stream);
    assert_eq!((status, v["status"].as_str()), (200, Some("fail")), "{v}");
    let changed: Vec<&Value> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "changed")
        .collect();
    assert_eq!(changed.len(), 1, "{v}");
    assert_eq!(changed[0]["stream"], "main.saved_files");

    // An export this token made, validated where it is kept.
    let (status, job) = post(
        &s,
        "/api/v1/export",
        &app,
        br#"{"store": "app", "tables": ["users"]}"#,
        Some("application/json"),
    );
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap();
    assert_eq!(finished(&s, id, &app)["status"], "complete");
    let (status, v) = post_raw(&s, &format!("/api/v1/validate?export={id}"), &app, b"");
    assert_eq!((status, v["status"].as_str()), (200, Some("pass")), "{v}");
    let (status, v) = post_raw(&s, &format!("/api/v1/validate?export={id}"), &reader, b"");
    assert_eq!(
        (status, error_code(&v)),
        (404, "not_found"),
        "another token's export: {v}"
    );

    // Refusals.
    let (status, v) = post_raw(&s, "/api/v1/compare?store=copy", &reader, &stream);
    assert_eq!((status, error_code(&v)), (403, "forbidden"), "{v}");
    let (status, v) = post_raw(&s, "/api/v1/validate", &reader, b"");
    assert_eq!((status, error_code(&v)), (400, "bad_request"), "{v}");
    let (status, v) = post_raw(&s, "/api/v1/compare", &app, &stream);
    assert_eq!((status, error_code(&v)), (400, "bad_request"), "{v}");
    let (status, _) = post_raw(&s, "/api/v1/validate", "ferry_nobody", &stream);
    assert_eq!(status, 401);
    let left: Vec<_> = std::fs::read_dir(d.path(".ferry/imports"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "checked uploads are not kept: {left:?}");
}

#[test]
fn a_runs_progress_comes_as_server_sent_events_until_it_ends() {
    let d = Dir::new();
    let src = crate::common::items_and_events(&d, 30_000);
    let stream = d.run("ferry-export", &[&src], b"").output.stdout.clone();
    let reader = new_token(&d, "grafana", &["read"]);
    // An import fed half its stream, then waiting for the rest.
    let mut import = d
        .cmd("ferry-import", &[&d.db("copy.db"), "--create"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut input = import.stdin.take().unwrap();
    let half = stream.len() / 2;
    std::io::Write::write_all(&mut input, &stream[..half]).unwrap();
    let s = Server::start(&d, &["--config", "ferry-serve.toml"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let run = loop {
        let (_, v) = s.json("/api/v1/runs", Some(&reader));
        if let Some(r) = v["runs"].as_array().and_then(|r| r.first())
            && r["run"]["rows_written"].as_i64().unwrap_or(0) > 0
        {
            break r["run"]["run_id"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "the import did not start: {v}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let (status, v) = s.json("/api/v1/runs/nosuch/events", Some(&reader));
    assert_eq!((status, error_code(&v)), (404, "not_found"));
    let r = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
        .get(format!("{}/api/v1/runs/{run}/events", s.base))
        .bearer_auth(&reader)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut lines = std::io::BufReader::new(r).lines();
    let mut next_event = || -> (String, Value) {
        let mut name = String::new();
        loop {
            let line = lines.next().expect("the stream goes on").unwrap();
            if let Some(n) = line.strip_prefix("event: ") {
                name = n.to_owned();
            } else if let Some(data) = line.strip_prefix("data: ") {
                return (name, serde_json::from_str(data).unwrap());
            }
        }
    };
    let (name, first) = next_event();
    assert_eq!(name, "progress", "{first}");
    assert_eq!(first["run"]["status"], "running");
    // The rest of the stream: the import finishes, and the events end with it.
    std::io::Write::write_all(&mut input, &stream[half..]).unwrap();
    drop(input);
    assert!(import.wait().unwrap().success());
    let (name, last) = loop {
        let (name, v) = next_event();
        if name != "progress" {
            break (name, v);
        }
        assert_eq!(v["run"]["status"], "running");
    };
    assert_eq!(name, "end", "{last}");
    assert_eq!(last["run"]["status"], "complete");
    assert_eq!(last["run"]["rows_written"], 37_500);
    // The stream is closed after the end (a stream left open would time the read out).
    for rest in lines {
        assert_eq!(rest.unwrap().trim(), "", "nothing after the end event");
    }
}

#[test]
fn an_import_is_rolled_back_over_http_after_its_plan_is_shown() {
    let d = Dir::new();
    let src = d.sample();
    let stream = d.run("ferry-export", &[&src], b"").output.stdout.clone();
    let import = d.run("ferry-import", &[&d.db("copy.db"), "--create"], &stream);
    import.ok();
    std::fs::write(
        d.path("ferry-serve.toml"),
        format!("[stores]\ncopy = \"sqlite:{}\"\n", d.path("copy.db").display()),
    )
    .unwrap();
    let reader = new_token(&d, "grafana", &["read"]);
    let ops = new_token(&d, "ops", &["rollback"]);
    let s = Server::start(&d, &["--config", "ferry-serve.toml"]);
    let (_, v) = s.json("/api/v1/runs", Some(&reader));
    let run = v["runs"][0]["run"]["run_id"].as_str().unwrap().to_owned();
    let conn = rusqlite::Connection::open(d.path("copy.db")).unwrap();
    let users = crate::common::count(&conn, "users");
    assert_eq!(users, 47);

    // The plan, and nothing done.
    let url = format!("{}/api/v1/runs/{run}/rollback", s.base);
    let client = reqwest::blocking::Client::new();
    let r = client.post(&url).bearer_auth(&ops).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let plan: Value = r.json().unwrap();
    assert_eq!(plan["confirmed"], false);
    assert!(!plan["plan"].as_array().unwrap().is_empty(), "{plan}");
    assert_eq!(crate::common::count(&conn, "users"), 47, "a plan changes nothing");
    // The CLI's plan is the same plan.
    let cli = d.run("ferry", &["rollback", "--batch", &run], b"");
    cli.ok();
    let cli_plan: Vec<Value> = cli.stdout().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(plan["plan"].as_array().unwrap(), &cli_plan);

    // Refused without the scope, or with a body that is not what it takes.
    let r = client
        .post(&url)
        .bearer_auth(&reader)
        .body("{\"confirm\": true}")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = client
        .post(&url)
        .bearer_auth(&ops)
        .body("{\"confirmed\": true}")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = client
        .post(format!("{}/api/v1/runs/nosuch/rollback", s.base))
        .bearer_auth(&ops)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(crate::common::count(&conn, "users"), 47);

    // Confirmed: done, audited; the run shows as rolled back.
    let r = client
        .post(&url)
        .bearer_auth(&ops)
        .body("{\"confirm\": true}")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let done: Value = r.json().unwrap();
    assert_eq!(done["confirmed"], true, "{done}");
    let left: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name IN ('users', 'tags')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 0, "the tables the run made are dropped: {done}");
    let (_, v) = s.json(&format!("/api/v1/runs/{run}"), Some(&reader));
    assert_eq!(v["run"]["status"], "rolled_back", "{v}");
    let audit = std::fs::read_to_string(d.path(".ferry/serve-audit.ndjson")).unwrap();
    assert!(
        audit.contains("\"action\":\"rollback\"") && audit.contains("\"caller\":\"ops\""),
        "{audit}"
    );
}

#[test]
fn imports_into_one_store_take_turns_and_tokens_keep_to_their_stores() {
    let d = Dir::new();
    let src = d.sample();
    let stream = d.run("ferry-export", &[&src], b"").output.stdout.clone();
    let tags = d
        .run("ferry-export", &[&src, "--table", "tags"], b"")
        .output
        .stdout
        .clone();
    std::fs::write(
        d.path("ferry-serve.toml"),
        format!(
            "[stores]\ncopy = \"sqlite:{}\"\nother = \"sqlite:{}\"\n",
            d.path("copy.db").display(),
            d.path("other.db").display()
        ),
    )
    .unwrap();
    let app = new_token(&d, "app", &["import", "export"]);
    let only_other = new_token_limited(&d, "only-other", &["import"], &["--store", "other"]);
    let s = Server::start(&d, &["--config", "ferry-serve.toml"]);

    // Two imports into one store at once: the second waits for the first, both complete.
    let (a, first) = post_raw(&s, "/api/v1/import?store=copy&create=true", &app, &stream);
    let (b, second) = post_raw(
        &s,
        "/api/v1/import?store=copy&create=true&on_conflict=skip",
        &app,
        &tags,
    );
    assert_eq!((a, b), (202, 202), "{first} {second}");
    for job in [&first, &second] {
        let done = imported(&s, job["id"].as_str().unwrap(), &app);
        assert_eq!(done["status"], "complete", "{done}");
    }

    // A token limited to a store may not name another.
    let (status, v) = post_raw(&s, "/api/v1/import?store=copy", &only_other, &tags);
    assert_eq!((status, error_code(&v)), (403, "forbidden"), "{v}");
    let (status, job) = post_raw(&s, "/api/v1/import?store=other&create=true", &only_other, &tags);
    assert_eq!(status, 202, "{job}");

    // A method a route does not take, and a range outside an export, are JSON errors too.
    let (status, v) = s.json("/api/v1/export", Some(&app));
    assert_eq!((status, error_code(&v)), (405, "method_not_allowed"), "{v}");
    let (status, job) = post(
        &s,
        "/api/v1/export",
        &app,
        br#"{"store": "copy", "tables": ["tags"]}"#,
        Some("application/json"),
    );
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap();
    let job = finished(&s, id, &app);
    let r = reqwest::blocking::Client::new()
        .get(format!("{}/api/v1/export/{id}/download", s.base))
        .bearer_auth(&app)
        .header("range", "bytes=99999999-")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 416);
    let v: Value = r.json().unwrap();
    assert_eq!(error_code(&v), "bad_range", "{v}");
    // What the server keeps of users' data, only its own user may read.
    use std::os::unix::fs::PermissionsExt as _;
    for f in [
        format!(".ferry/exports/{id}.ndjson"),
        format!(".ferry/exports/{id}.json"),
    ] {
        let mode = std::fs::metadata(d.path(&f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}: {mode:o} ({job})");
    }
}

/// A webhook receiver on 127.0.0.1: every JSON body posted to it, the first answered 500 (so the
/// sender's retry is exercised), the rest 200.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Value>>>,
    refused: Arc<Mutex<usize>>,
}

impl Receiver {
    fn start() -> Receiver {
        use std::io::{BufRead as _, Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hooks/T0SECRET/B0SECRET", listener.local_addr().unwrap());
        let got = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(0));
        let (keep, count) = (Arc::clone(&got), Arc::clone(&refused));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                let mut first = count.lock().unwrap();
                let status = if *first == 0 {
                    *first += 1;
                    "500 Internal Server Error"
                } else {
                    keep.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
                    "200 OK"
                };
                let _ = conn.write_all(
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes(),
                );
            }
        });
        Receiver { url, got, refused }
    }

    /// Wait for a message of `event` about `what` (a text it holds).
    fn wait_for(&self, event: &str, what: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(m) = self
                .got
                .lock()
                .unwrap()
                .iter()
                .find(|m| m["event"] == event && m["text"].as_str().unwrap_or_default().contains(what))
            {
                return m.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no {event} alert about {what}: {:?}",
                self.got.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn alerts_are_posted_when_runs_end_or_stall_and_when_a_validation_finds_differences() {
    let d = Dir::new();
    let hook = Receiver::start();
    let src = crate::common::items_and_events(&d, 30_000);
    let stream = d.run("ferry-export", &[&src], b"").output.stdout.clone();
    std::fs::write(
        d.path("ferry-serve.toml"),
        format!(
            "[stores]\ncopy = \"sqlite:{}\"\n[alerts]\nwebhook = \"{}\"\nstall_seconds = 2\n",
            d.path("copy.db").display(),
            hook.url
        ),
    )
    .unwrap();
    let app = new_token(&d, "app", &["import"]);
    let s = Server::start(&d, &["--config", "ferry-serve.toml"]);

    // A run of the command line's, complete.
    d.run("ferry-import", &[&d.db("copy.db"), "--create"], &stream).ok();
    let done = hook.wait_for("completed", "copy.db");
    assert_eq!(done["details"]["run"]["status"], "complete", "{done}");
    assert_eq!(
        *hook.refused.lock().unwrap(),
        1,
        "the first post was refused, and sent again"
    );

    // A run that stops moving: stalled; then killed: failed. (Its own export: a stream imported
    // twice is one run.)
    let second = d.run("ferry-export", &[&src], b"").output.stdout.clone();
    let mut import = d
        .cmd("ferry-import", &[&d.db("other.db"), "--create"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut input = import.stdin.take().unwrap();
    std::io::Write::write_all(&mut input, &second[..second.len() / 2]).unwrap();
    let stalled = hook.wait_for("stalled", "other.db");
    assert!(stalled["text"].as_str().unwrap().contains("no progress"), "{stalled}");
    import.kill().unwrap();
    import.wait().unwrap();
    drop(input);
    let failed = hook.wait_for("failed", "other.db");
    assert_eq!(failed["details"]["run"]["status"], "stopped", "{failed}");

    // A comparison that finds a difference.
    let text = String::from_utf8(stream.clone()).unwrap();
    let changed = text.replacen("\"name\":\"item 1\"", "\"name\":\"item one\"", 1);
    let (status, v) = post_raw(&s, "/api/v1/compare?store=copy", &app, changed.as_bytes());
    assert_eq!((status, v["status"].as_str()), (200, Some("fail")), "{v}");
    let diff = hook.wait_for("differences", "did not pass");
    assert_eq!(diff["details"]["status"], "fail");

    // The webhook's address (a secret, for Slack) is not in the server's log.
    assert!(!s.stderr().contains("T0SECRET"), "{}", s.stderr());
}
