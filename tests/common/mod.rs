//! Test support: run the real binaries in a private directory, through real pipes.
#![allow(dead_code)]

pub mod d1;
pub mod pg;
pub mod proxy;
pub mod s3;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use rusqlite::Connection;

/// Path of one of this package's binaries (built by cargo for integration tests), or of another
/// program given by its path (a real client's, from a virtualenv).
pub fn bin(name: &str) -> PathBuf {
    match name {
        path if path.starts_with('/') => PathBuf::from(path),
        "ferry-export" => PathBuf::from(env!("CARGO_BIN_EXE_ferry-export")),
        "ferry-transform" => PathBuf::from(env!("CARGO_BIN_EXE_ferry-transform")),
        "ferry-import" => PathBuf::from(env!("CARGO_BIN_EXE_ferry-import")),
        "ferry-validate" => PathBuf::from(env!("CARGO_BIN_EXE_ferry-validate")),
        "ferry" => PathBuf::from(env!("CARGO_BIN_EXE_ferry")),
        "ferry-d1-double" => PathBuf::from(env!("CARGO_BIN_EXE_ferry-d1-double")),
        other => panic!("no binary {other}"),
    }
}

/// A private working directory for one test.
pub struct Dir {
    pub tmp: tempfile::TempDir,
    /// Environment every command run here gets (an S3 server's endpoint and keys, say).
    env: std::cell::RefCell<Vec<(String, String)>>,
}

impl Dir {
    pub fn new() -> Dir {
        Dir {
            tmp: tempfile::tempdir().expect("temp dir"),
            env: Default::default(),
        }
    }

    /// Give every command run from here on `name=value`.
    pub fn set_env(&self, name: &str, value: &str) {
        let mut env = self.env.borrow_mut();
        env.retain(|(n, _)| n != name);
        env.push((name.to_owned(), value.to_owned()));
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// The text of the reject file an import wrote next to the default state file.
    #[track_caller]
    pub fn reject_text(&self) -> String {
        let path = std::fs::read_dir(self.path(".ferry"))
            .expect("the state directory")
            .map(|e| e.expect("an entry").path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("rejects-"))
            })
            .expect("a reject file");
        std::fs::read_to_string(path).expect("the reject file")
    }

    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    /// `sqlite:<dir>/<name>`
    pub fn db(&self, name: &str) -> String {
        format!("sqlite:{}", self.path(name).display())
    }

    /// `big.db` with `n` rows in `items (id INTEGER PRIMARY KEY, name TEXT)`.
    pub fn items_db(&self, n: u32) {
        self.open("big.db")
            .execute_batch(&format!(
                "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT);
                 WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n})
                   INSERT INTO items SELECT i, 'item ' || i FROM s;"
            ))
            .unwrap();
    }

    /// The bundled sample database, built into this directory.
    pub fn sample(&self) -> String {
        let p = self.path("sample.db");
        if !p.exists() {
            ferry::sample::create(&p).expect("sample db");
        }
        format!("sqlite:{}", p.display())
    }

    /// A command for one of our binaries, run in this directory.
    pub fn cmd(&self, name: &str, args: &[&str]) -> Command {
        let mut c = Command::new(bin(name));
        c.args(args).current_dir(self.root()).env_remove("FERRY_LOG");
        // libpq's TLS settings of whoever runs the tests do not reach the private servers.
        for v in ["PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY"] {
            c.env_remove(v);
        }
        for (n, v) in self.env.borrow().iter() {
            c.env(n, v);
        }
        c
    }

    /// Run one binary with `stdin` written on its own thread (a pipe stage can never deadlock).
    pub fn run(&self, name: &str, args: &[&str], stdin: &[u8]) -> Run {
        let mut c = self.cmd(name, args);
        c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let mut input = child.stdin.take().expect("stdin");
        let data = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&data);
        });
        let output = child.wait_with_output().expect("waiting");
        let _ = writer.join();
        Run {
            what: format!("{name} {}", args.join(" ")),
            cwd: self.root().to_owned(),
            output,
        }
    }

    /// Run stages connected by OS pipes; the first reads `stdin`. Returns each stage's result.
    pub fn pipe(&self, stages: &[(&str, &[&str])], stdin: &[u8]) -> Vec<Run> {
        let mut children: Vec<(String, Child)> = Vec::new();
        let mut prev: Option<std::process::ChildStdout> = None;
        let mut first_in = None;
        for (i, (name, args)) in stages.iter().enumerate() {
            let mut c = self.cmd(name, args);
            match prev.take() {
                Some(out) => {
                    c.stdin(Stdio::from(out));
                }
                None => {
                    c.stdin(Stdio::piped());
                }
            }
            c.stdout(Stdio::piped()).stderr(Stdio::piped());
            let mut child = c.spawn().unwrap_or_else(|e| panic!("starting {name}: {e}"));
            if i == 0 {
                first_in = child.stdin.take();
            }
            if i + 1 < stages.len() {
                prev = child.stdout.take();
            }
            children.push((format!("{name} {}", args.join(" ")), child));
        }
        let data = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            if let Some(mut w) = first_in {
                let _ = w.write_all(&data);
            }
        });
        // Drain every stage at once: waiting on them in turn would leave a later stage blocked
        // on a full stdout pipe while an earlier one waits for it.
        let cwd = self.root().to_owned();
        let waiters: Vec<_> = children
            .into_iter()
            .map(|(what, c)| {
                let cwd = cwd.clone();
                std::thread::spawn(move || Run {
                    what,
                    cwd,
                    output: c.wait_with_output().expect("waiting"),
                })
            })
            .collect();
        let runs = waiters.into_iter().map(|w| w.join().expect("stage thread")).collect();
        let _ = writer.join();
        runs
    }

    /// Run stages connected by OS pipes (no input) and SIGKILL them all once the last one has
    /// acknowledged `states` STATEs: a pipeline killed mid-run, with some work committed.
    pub fn pipe_killed_after(&self, stages: &[(&str, &[&str])], states: usize) {
        let mut children: Vec<Child> = Vec::new();
        let mut prev: Option<std::process::ChildStdout> = None;
        for (name, args) in stages {
            let mut c = self.cmd(name, args);
            c.stdin(prev.take().map_or_else(Stdio::null, Stdio::from))
                .stdout(Stdio::piped())
                .stderr(std::fs::File::create(self.path(&format!("{name}.stderr"))).unwrap());
            let mut child = c.spawn().unwrap_or_else(|e| panic!("starting {name}: {e}"));
            prev = child.stdout.take();
            children.push(child);
        }
        let acks = std::io::BufReader::new(prev.expect("a stage"));
        let mut seen = 0;
        for line in std::io::BufRead::lines(acks) {
            if line.expect("reading acknowledgements").contains(r#""type":"STATE""#) {
                seen += 1;
                if seen == states {
                    break;
                }
            }
        }
        if seen < states {
            for mut c in children {
                let _ = c.wait();
            }
            let said: Vec<String> = stages
                .iter()
                .map(|(name, _)| {
                    let text = std::fs::read_to_string(self.path(&format!("{name}.stderr"))).unwrap_or_default();
                    format!("--- {name}:\n{text}")
                })
                .collect();
            panic!(
                "the pipeline ended after {seen} of {states} STATEs:\n{}",
                said.join("\n")
            );
        }
        for mut c in children.into_iter().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn open(&self, name: &str) -> Connection {
        Connection::open(self.path(name)).expect("open db")
    }
}

/// What a finished command did, printed in full when an expectation fails.
pub struct Run {
    pub what: String,
    pub cwd: PathBuf,
    pub output: Output,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "\n$ {}\ncwd: {}\nstatus: {:?}\n--- stdout ({} bytes, last 3000 shown) ---\n{}\n--- stderr ---\n{}\n",
            self.what,
            self.cwd.display(),
            self.output.status.code(),
            self.output.stdout.len(),
            tail(&self.stdout(), 3000),
            self.stderr()
        )
    }
}

fn tail(s: &str, n: usize) -> &str {
    let start = s.len().saturating_sub(n);
    let start = (start..s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(s.len());
    &s[start..]
}

impl Run {
    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// Assert the exit code, showing everything otherwise.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code(), Some(code), "{self:?}");
        self
    }

    #[track_caller]
    pub fn ok(&self) -> &Self {
        self.expect_code(0)
    }

    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Self {
        assert!(self.stderr().contains(needle), "stderr lacks {needle:?}:{self:?}");
        self
    }

    /// stdout as JSON lines.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        self.stdout()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout line {l:?} is not JSON: {e}{self:?}")))
            .collect()
    }
}

/// Every stage of a pipeline ran fine. The last is looked at first: a stage that stopped
/// because the one after it went away has that one's error as its cause.
#[track_caller]
pub fn all_ok(runs: &[Run]) {
    for r in runs.iter().rev() {
        r.ok();
    }
}

/// A pipeline ending in an import that rejected rows or files: every other stage ran fine, and
/// the import did everything else (exit 3).
#[track_caller]
pub fn ok_but_rejects(runs: &[Run]) {
    let (last, rest) = runs.split_last().expect("a stage");
    all_ok(rest);
    last.expect_code(3);
}

/// The sample's `tags` imported into `copy.db`, whose own `tags` table (one row there before)
/// refuses the red one by a CHECK: the import finishes with that row rejected (exit 3).
pub fn import_tags_refusing_red(d: &Dir) {
    d.open("copy.db")
        .execute_batch(
            "CREATE TABLE tags (name TEXT PRIMARY KEY, color TEXT NOT NULL CHECK (color <> 'red'));
             INSERT INTO tags VALUES ('there before', 'green');",
        )
        .unwrap();
    let runs = d.pipe(
        &[
            ("ferry-export", &[&d.sample(), "--table", "tags"]),
            ("ferry-import", &[&d.db("copy.db")]),
        ],
        b"",
    );
    ok_but_rejects(&runs);
}

/// One value per row, in order, for comparing tables exactly (storage class and bytes).
pub fn dump(conn: &Connection, table: &str, order: &str) -> Vec<Vec<u8>> {
    let q = |n: &str| format!("\"{}\"", n.replace('"', "\"\""));
    let cols: Vec<String> = conn
        .prepare(&format!(
            "SELECT name FROM pragma_table_info('{}')",
            table.replace('\'', "''")
        ))
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let exprs: Vec<String> = cols
        .iter()
        .map(|c| format!("typeof({0}) || ':' || quote({0})", q(c)))
        .collect();
    let sql = format!(
        "SELECT CAST({} AS BLOB) FROM {} ORDER BY {order}",
        exprs.join(" || ' | ' || "),
        q(table)
    );
    column(conn, &sql)
}

/// The first column of every row a query returns.
pub fn column<T: rusqlite::types::FromSql>(conn: &Connection, sql: &str) -> Vec<T> {
    conn.prepare(sql)
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// An import's END line: (rows written, rows found already imported).
#[track_caller]
pub fn written_and_already(import: &Run) -> (u64, u64) {
    let end = import.lines().pop().unwrap_or_default();
    assert_eq!(end["type"], "END", "{import:?}");
    (
        end["written"].as_u64().unwrap_or(u64::MAX),
        end["already_imported"].as_u64().unwrap_or(u64::MAX),
    )
}

pub fn count(conn: &Connection, table: &str) -> i64 {
    conn.query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |r| r.get(0))
        .unwrap()
}

/// `src.db` with a keyed table (`items`, `rows` rows) and a keyless one (`events`, a quarter as
/// many): big enough for an import to take a moment. Its address.
pub fn items_and_events(d: &Dir, rows: i64) -> String {
    d.open("src.db")
        .execute_batch(&format!(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, amount REAL, data BLOB);
             CREATE TABLE events (at TEXT, n INTEGER);
             WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {rows})
               INSERT INTO items SELECT i, 'item ' || i, i / 7.0, CASE WHEN i % 3 = 0 THEN zeroblob(i % 40) END FROM s;
             WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {rows} / 4)
               INSERT INTO events SELECT '2024-01-01', i % 10 FROM s;"
        ))
        .expect("the source database");
    d.db("src.db")
}

/// A stream of one FILE line (`fields` spliced in: its path and key) for the file at `uri` with
/// that SHA-256 and 7 bytes, between BEGIN, SCHEMA and END.
pub fn one_file_stream(fields: &str, sha: &str, uri: &str) -> String {
    format!(
        concat!(
            r#"{{"type":"BEGIN","protocol":"ferry/1","run_id":"r1"}}"#,
            "\n",
            r#"{{"type":"SCHEMA","stream":"files","schema":{{"properties":{{}}}},"key_properties":["path"]}}"#,
            "\n",
            r#"{{"type":"FILE","stream":"files",{},"size":7,"sha256":"{}","content":{{"uri":"{}"}}}}"#,
            "\n",
            r#"{{"type":"END","run_id":"r1","status":"ok"}}"#,
            "\n"
        ),
        fields, sha, uri
    )
}

/// Write `bytes` to `root/rel` (the exact bytes of the name), making directories on the way.
pub fn write_file(root: &Path, rel: impl AsRef<[u8]>, bytes: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt as _;
    let p = root.join(std::ffi::OsStr::from_bytes(rel.as_ref()));
    std::fs::create_dir_all(p.parent().expect("a parent")).expect("mkdir");
    std::fs::write(&p, bytes).expect("write");
    p
}

/// `ferry-export dir:SRC | ferry-import DST IMPORT_ARGS...`.
pub fn put_tree(d: &Dir, src: &Path, dst: &str, import_args: &[&str]) -> Vec<Run> {
    let src = format!("dir:{}", src.display());
    let mut ia = vec![dst];
    ia.extend_from_slice(import_args);
    d.pipe(&[("ferry-export", &[&src]), ("ferry-import", &ia)], b"")
}

/// A stage's END line.
#[track_caller]
pub fn end_of(run: &Run) -> serde_json::Value {
    let end = run.lines().pop().unwrap_or_default();
    assert_eq!(end["type"], "END", "{run:?}");
    end
}

/// The records of the `uploads` stream a file import writes, in order.
pub fn upload_results(run: &Run) -> Vec<serde_json::Value> {
    run.lines()
        .into_iter()
        .filter(|l| l["type"] == "RECORD" && l["stream"] == "uploads")
        .map(|l| l["record"].clone())
        .collect()
}
