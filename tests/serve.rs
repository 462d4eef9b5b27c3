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
    let mut args = vec!["serve", "--new-token", name];
    for s in scopes {
        args.extend(["--scope", s]);
    }
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
