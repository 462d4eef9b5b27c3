//! The checkpoint: a local SQLite file (default `.ferry/state.db`) shared by the stages of a
//! migration. It holds runs, committed batches, the last acknowledged STATE of each run and errors.
//!
//! Every write is one transaction, so a kill at any instant leaves it consistent (WAL, and
//! `synchronous=NORMAL`: a process crash loses nothing committed; a power cut may lose the last
//! acknowledgements, which the commit markers kept inside the target itself make good on the
//! next run). The schema is versioned with `PRAGMA user_version` and migrated forward on open.
//! Only redacted addresses are stored here.
//!
//! One concern, kept whole (over 800 lines): the state file, its schema and every query on it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Serialize;

use crate::error::{Context, Error, ErrorKind, Result};
use crate::outcome::FileStatus;
use crate::protocol::{StateValue, now_rfc3339};

/// Default location of the state file, relative to the working directory.
pub(crate) const DEFAULT_STATE_PATH: &str = ".ferry/state.db";

/// Schema migrations; entry `i` takes the file from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE runs (
    run_id         TEXT PRIMARY KEY,
    stage          TEXT NOT NULL,
    source         TEXT,
    source_kind    TEXT,
    target         TEXT,
    status         TEXT NOT NULL,
    attempts       INTEGER NOT NULL,
    started_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    finished_at    TEXT,
    rows_written   INTEGER NOT NULL DEFAULT 0,
    rows_skipped   INTEGER NOT NULL DEFAULT 0,
    rows_rejected  INTEGER NOT NULL DEFAULT 0,
    message        TEXT
);
CREATE TABLE batches (
    batch_id       INTEGER PRIMARY KEY,
    run_id         TEXT NOT NULL REFERENCES runs(run_id),
    attempt        INTEGER NOT NULL,
    stream         TEXT NOT NULL,
    state_seq      INTEGER,
    rows           INTEGER NOT NULL,
    written        INTEGER NOT NULL,
    skipped        INTEGER NOT NULL,
    rejected       INTEGER NOT NULL,
    bytes          INTEGER NOT NULL,
    first_position INTEGER,
    last_position  INTEGER,
    status         TEXT NOT NULL,
    started_at     TEXT NOT NULL,
    committed_at   TEXT NOT NULL
);
CREATE INDEX batches_by_run ON batches(run_id, batch_id);
CREATE TABLE acks (
    run_id   TEXT PRIMARY KEY REFERENCES runs(run_id),
    seq      INTEGER NOT NULL,
    value    TEXT NOT NULL,
    acked_at TEXT NOT NULL
);
CREATE TABLE errors (
    error_id INTEGER PRIMARY KEY,
    run_id   TEXT,
    stream   TEXT,
    line     INTEGER,
    key      TEXT,
    message  TEXT NOT NULL,
    at       TEXT NOT NULL
);
"#,
    r#"
CREATE TABLE files (
    target      TEXT NOT NULL,
    key         TEXT NOT NULL,
    path        TEXT NOT NULL,
    size        INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    etag        TEXT,
    part_size   INTEGER,
    run_id      TEXT NOT NULL,
    status      TEXT NOT NULL,
    reason      TEXT,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    PRIMARY KEY (target, key)
) WITHOUT ROWID;
CREATE INDEX files_by_run ON files(run_id, status);
"#,
    r#"
CREATE TABLE hashes (
    root     TEXT NOT NULL,
    path     BLOB NOT NULL,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    ino      INTEGER NOT NULL,
    dev      INTEGER NOT NULL,
    sha256   TEXT NOT NULL,
    PRIMARY KEY (root, path)
) WITHOUT ROWID;
"#,
    r#"
CREATE TABLE multipart (
    target     TEXT NOT NULL,
    key        TEXT NOT NULL,
    upload_id  TEXT NOT NULL,
    run_id     TEXT NOT NULL,
    started_at TEXT NOT NULL,
    PRIMARY KEY (target, key, upload_id)
) WITHOUT ROWID;
"#,
    r#"
ALTER TABLE runs ADD COLUMN rows_expected INTEGER;
"#,
    r#"
CREATE TABLE journal (
    id         INTEGER PRIMARY KEY,
    run_id     TEXT NOT NULL,
    target     TEXT NOT NULL,
    stream     TEXT NOT NULL,
    tbl        TEXT NOT NULL,
    action     TEXT NOT NULL,
    key        TEXT,
    before     TEXT,
    schema     TEXT,
    undone_at  TEXT
);
CREATE INDEX journal_by_run ON journal(run_id, id);
CREATE INDEX journal_by_table ON journal(target, tbl);
"#,
    r#"
ALTER TABLE runs ADD COLUMN pid INTEGER;
ALTER TABLE runs ADD COLUMN host TEXT;
"#,
    r#"
ALTER TABLE batches ADD COLUMN prefix_digest TEXT;
"#,
    r#"
ALTER TABLE runs ADD COLUMN rows_deleted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
"#,
];

/// How a run stands: as the state file records it, or (the last two) as `ferry status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RunStatus {
    Running,
    Complete,
    Failed,
    Interrupted,
    /// Recorded as running, but its process is gone: killed without saying how it ended.
    Stopped,
    /// Undone by `ferry rollback`, however it had ended.
    RolledBack,
}

impl RunStatus {
    /// How a run that stopped with `e` ended: interrupted when its output pipe closed (the stage
    /// downstream went away) or a signal stopped it, failed otherwise.
    pub(crate) fn after(e: &Error) -> RunStatus {
        if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::Interrupted) {
            RunStatus::Interrupted
        } else {
            RunStatus::Failed
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Complete => "complete",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Stopped => "stopped",
            RunStatus::RolledBack => "rolled_back",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state file written by a newer ferry may hold a status this one does not know: an error
/// that names it, never a guess.
impl rusqlite::types::FromSql for RunStatus {
    fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        let stored = [
            RunStatus::Running,
            RunStatus::Complete,
            RunStatus::Failed,
            RunStatus::Interrupted,
        ];
        by_name(v, &stored, RunStatus::as_str, "run status")
    }
}

/// What a new (or continued) run is.
#[derive(Debug, Clone)]
pub(crate) struct NewRun<'a> {
    pub run_id: &'a str,
    pub stage: &'a str,
    pub source: Option<&'a str>,
    pub source_kind: Option<&'a str>,
    pub target: &'a str,
}

/// What a journal entry records an import did to a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum JournalAction {
    /// The run created the table (`schema` holds the stream's SCHEMA): undone by dropping it.
    Create,
    /// It wrote into an existing, empty table: undone by emptying it.
    Empty,
    /// It wrote into an existing table (`schema` too), whose `rows` entries follow.
    Stream,
    /// One batch: `key` the JSON array of the keys it inserted, `before` the JSON array of the
    /// rows it overwrote, as they were, in the stream's encoding.
    Rows,
    /// The target keeps the keys and before-images itself, in the undo table `key` names.
    Undo,
    /// It wrote into an existing table with no journal (no key, or `--no-rollback-journal`): its
    /// rows stay when the run is undone, and the plan says so.
    Unjournaled,
}

impl JournalAction {
    const ALL: [JournalAction; 6] = [
        JournalAction::Create,
        JournalAction::Empty,
        JournalAction::Stream,
        JournalAction::Rows,
        JournalAction::Undo,
        JournalAction::Unjournaled,
    ];

    /// Its name in the state file.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            JournalAction::Create => "create",
            JournalAction::Empty => "empty",
            JournalAction::Stream => "stream",
            JournalAction::Rows => "rows",
            JournalAction::Undo => "undo",
            JournalAction::Unjournaled => "unjournaled",
        }
    }
}

impl rusqlite::types::ToSql for JournalAction {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

/// A state file written by a newer ferry may hold an action this one does not know: an error
/// that names it, never a guess.
impl rusqlite::types::FromSql for JournalAction {
    fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        by_name(v, &JournalAction::ALL, JournalAction::as_str, "journal action")
    }
}

impl rusqlite::types::ToSql for FileStatus {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

/// A state file written by a newer ferry may hold a status this one does not know: an error
/// that names it, never a guess.
impl rusqlite::types::FromSql for FileStatus {
    fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        by_name(v, &FileStatus::ALL, FileStatus::as_str, "file status")
    }
}

/// The one of `all` stored as `v`, by its name (`name`); one the state file holds and this ferry
/// does not know is an error naming it (`what`).
fn by_name<T: Copy>(
    v: rusqlite::types::ValueRef<'_>,
    all: &[T],
    name: fn(T) -> &'static str,
    what: &str,
) -> rusqlite::types::FromSqlResult<T> {
    let text = v.as_str()?;
    all.iter()
        .copied()
        .find(|t| name(*t) == text)
        .ok_or_else(|| rusqlite::types::FromSqlError::Other(format!("unknown {what} {text:?}").into()))
}

/// One entry of the rollback journal: what an import did to a table, written before the target
/// commits it (so a kill between the two leaves an entry whose undo finds nothing to undo).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct JournalEntry {
    pub stream: String,
    pub table: String,
    pub action: JournalAction,
    /// See [`JournalAction`]; for the actions that do not say, the table's SQL name (and its undo
    /// table's), when the target gives one.
    pub key: Option<String>,
    pub before: Option<String>,
    pub schema: Option<String>,
}

/// A journal entry as stored.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct JournalRow {
    pub id: i64,
    pub run_id: String,
    pub target: String,
    pub stream: String,
    pub table: String,
    pub action: JournalAction,
    pub key: Option<String>,
    pub before: Option<String>,
    pub schema: Option<String>,
    pub undone_at: Option<String>,
}

/// One committed batch of one stream.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct BatchRow {
    pub stream: String,
    pub rows: u64,
    pub written: u64,
    pub skipped: u64,
    pub rejected: u64,
    /// A change stream's deletes applied.
    pub deleted: u64,
    pub bytes: u64,
    pub first_position: Option<u64>,
    pub last_position: Option<u64>,
    pub started_at: String,
    /// The digest of the stream's rows from its first to `last_position`, when this run read
    /// them all: what a later run that skips them by position checks they still are.
    pub prefix_digest: Option<String>,
}

/// One file of the manifest: what an import into an object store did with it. `key` is stored as
/// text when it is UTF-8 (always, for S3) and as a BLOB otherwise.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct FileRow {
    pub key: Vec<u8>,
    /// The source's relative path, exactly (stored like `key`).
    pub path: Vec<u8>,
    pub size: u64,
    pub sha256: String,
    pub etag: Option<String>,
    pub part_size: Option<u64>,
    pub status: FileStatus,
    pub reason: Option<String>,
    pub run_id: String,
}

impl FileRow {
    /// Whether the object is at the target with these bytes.
    pub(crate) fn is_done(&self) -> bool {
        self.status.is_done()
    }
}

fn bytes_of(v: rusqlite::types::Value) -> Vec<u8> {
    match v {
        rusqlite::types::Value::Text(t) => t.into_bytes(),
        rusqlite::types::Value::Blob(b) => b,
        _ => Vec::new(),
    }
}

fn key_value(key: &[u8]) -> rusqlite::types::Value {
    match std::str::from_utf8(key) {
        Ok(s) => rusqlite::types::Value::Text(s.to_owned()),
        Err(_) => rusqlite::types::Value::Blob(key.to_vec()),
    }
}

/// A multipart upload started and not (known to be) completed or aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OpenUpload {
    pub target: String,
    pub key: Vec<u8>,
    pub upload_id: String,
    pub run_id: String,
}

/// How a run was undone ([`Checkpoint::undone`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Undone {
    /// Its journal, every entry.
    Tables,
    /// Its objects deleted; `kept` files of the run it had not created are left.
    Files { deleted: u64, kept: u64 },
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct RunRow {
    pub run_id: String,
    pub stage: String,
    pub source: Option<String>,
    pub target: Option<String>,
    pub status: RunStatus,
    pub attempts: i64,
    pub started_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
    pub rows_written: i64,
    pub rows_skipped: i64,
    pub rows_rejected: i64,
    /// A change stream's deletes applied.
    pub rows_deleted: i64,
    pub batches: i64,
    pub last_seq: Option<i64>,
    pub message: Option<String>,
    /// Rows the run's input said it would bring (the streams' estimates), when it said.
    pub rows_expected: Option<i64>,
    /// The process that ran it (its last attempt), and on which host.
    pub pid: Option<u32>,
    pub host: Option<String>,
}

impl RunRow {
    /// Whether the run is really going on: recorded as running, and its process is still there
    /// (on another host it cannot be told, and counts as going on).
    pub(crate) fn is_running(&self) -> bool {
        self.status == RunStatus::Running
            && match (self.pid, &self.host) {
                (Some(pid), Some(host)) if *host == crate::lock::hostname() => crate::lock::alive(pid),
                _ => true,
            }
    }

    /// When the run last recorded anything: its end, or its last update while it runs.
    pub(crate) fn last_seen(&self) -> Option<jiff::Timestamp> {
        self.finished_at.as_deref().unwrap_or(&self.updated_at).parse().ok()
    }

    /// Seconds from its start to [`RunRow::last_seen`].
    pub(crate) fn seconds(&self) -> Option<f64> {
        let started: jiff::Timestamp = self.started_at.parse().ok()?;
        Some(self.last_seen()?.duration_since(started).as_secs_f64())
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct BatchInfo {
    pub batch_id: i64,
    pub run_id: String,
    pub attempt: i64,
    pub stream: String,
    pub state_seq: Option<i64>,
    pub rows: i64,
    pub written: i64,
    pub skipped: i64,
    pub rejected: i64,
    pub bytes: i64,
    pub first_position: Option<i64>,
    pub last_position: Option<i64>,
    pub status: String,
    pub started_at: String,
    pub committed_at: String,
}

/// An error recorded for a run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ErrorRow {
    pub run_id: String,
    pub stream: Option<String>,
    pub line: Option<i64>,
    pub message: String,
    pub at: String,
}

/// Where `export --resume` starts.
#[derive(Debug, Clone)]
pub(crate) struct ResumePoint {
    pub run_id: String,
    pub status: String,
    pub state: Option<StateValue>,
}

pub(crate) struct Checkpoint {
    conn: Connection,
    path: PathBuf,
}

/// The suffix of the run that loads a files run's upload results into a table: `RUN.uploads`.
pub(crate) const RESULTS_RUN_SUFFIX: &str = ".uploads";

/// The run `wanted` names among `ids`: its exact id, a unique prefix of one, or a prefix with
/// the results suffix (`0193a5c2-7f1e.uploads`, the short form `ferry status` shows). A files
/// run and its results' run share their prefix: the prefix alone names the files run. `Err`
/// holds the ids it matched: none, or several.
pub(crate) fn named_run<'a>(ids: &[&'a str], wanted: &str) -> std::result::Result<&'a str, Vec<&'a str>> {
    if let Some(exact) = ids.iter().find(|r| **r == wanted) {
        return Ok(exact);
    }
    let (id, suffix) = match wanted.strip_suffix(RESULTS_RUN_SUFFIX) {
        Some(id) => (id, RESULTS_RUN_SUFFIX),
        None => (wanted, ""),
    };
    let mut hits: Vec<&str> = ids
        .iter()
        .copied()
        .filter(|r| r.starts_with(id) && (suffix.is_empty() || r.ends_with(suffix)))
        .collect();
    if suffix.is_empty() && hits.iter().any(|h| !h.ends_with(RESULTS_RUN_SUFFIX)) {
        hits.retain(|h| !h.ends_with(RESULTS_RUN_SUFFIX));
    }
    match hits.as_slice() {
        [one] => Ok(one),
        _ => Err(hits),
    }
}

impl Checkpoint {
    /// Open (creating if needed) and migrate the state file.
    pub(crate) fn open(path: &Path) -> Result<Checkpoint> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).ctx(ErrorKind::Checkpoint, || {
                format!("creating the state directory {}", dir.display())
            })?;
        }
        let conn = Connection::open(path).ctx(ErrorKind::Checkpoint, || {
            format!("opening the state file {}", path.display())
        })?;
        let mut cp = Checkpoint {
            conn,
            path: path.to_owned(),
        };
        cp.configure()?;
        cp.migrate()?;
        Ok(cp)
    }

    /// Open an existing state file for reading; `None` if there is none.
    pub(crate) fn open_existing(path: &Path) -> Result<Option<Checkpoint>> {
        if !path.exists() {
            return Ok(None);
        }
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
            .or_else(|_| Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY))
            .ctx(ErrorKind::Checkpoint, || {
                format!("opening the state file {}", path.display())
            })?;
        let cp = Checkpoint {
            conn,
            path: path.to_owned(),
        };
        cp.conn
            .busy_timeout(Duration::from_secs(30))
            .ctx(ErrorKind::Checkpoint, || "state file")?;
        let version = cp.version()?;
        if version as usize > MIGRATIONS.len() {
            return Err(cp.too_new(version));
        }
        if version == 0 {
            return Ok(None);
        }
        let mut cp = cp;
        if (version as usize) < MIGRATIONS.len() && !cp.conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(true) {
            // A state file an older ferry wrote: brought up to date (the changes only add).
            cp.migrate()?;
        }
        Ok(Some(cp))
    }

    fn err(&self, what: &str) -> impl FnOnce() -> String + '_ {
        let what = what.to_owned();
        move || format!("state file {}: {what}", self.path.display())
    }

    fn configure(&mut self) -> Result<()> {
        self.conn
            .busy_timeout(Duration::from_secs(30))
            .ctx(ErrorKind::Checkpoint, self.err("configuring"))?;
        // Two stages of one pipeline may open a new state file at the same instant; switching it
        // to WAL can then be refused as busy without the busy handler being asked: tried again.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match self
                .conn
                .execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;")
            {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return other.ctx(ErrorKind::Checkpoint, self.err("configuring")),
            }
        }
    }

    fn version(&self) -> Result<i64> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .ctx(ErrorKind::Checkpoint, self.err("reading the schema version"))
    }

    fn too_new(&self, version: i64) -> Error {
        Error::new(
            ErrorKind::Checkpoint,
            format!(
                "state file {} has schema version {version}, newer than this ferry knows ({}); use a newer ferry",
                self.path.display(),
                MIGRATIONS.len()
            ),
        )
    }

    fn migrate(&mut self) -> Result<()> {
        let path = self.path.display().to_string();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .ctx(ErrorKind::Checkpoint, || format!("state file {path}: migrating"))?;
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .ctx(ErrorKind::Checkpoint, || {
                format!("state file {path}: reading the schema version")
            })?;
        if version as usize > MIGRATIONS.len() {
            drop(tx);
            return Err(self.too_new(version));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(sql).ctx(ErrorKind::Checkpoint, || {
                format!("state file {path}: migrating to version {}", i + 1)
            })?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .ctx(ErrorKind::Checkpoint, || format!("state file {path}: migrating"))?;
        }
        tx.commit()
            .ctx(ErrorKind::Checkpoint, || format!("state file {path}: migrating"))
    }

    /// Record the start of a run, or of another attempt at an existing one. Returns the attempt.
    pub(crate) fn start_run(&mut self, run: &NewRun<'_>) -> Result<i64> {
        let now = now_rfc3339();
        let path = self.path.display().to_string();
        let tx = self
            .conn
            .transaction()
            .ctx(ErrorKind::Checkpoint, || format!("state file {path}"))?;
        tx.execute(
            "INSERT INTO runs (run_id, stage, source, source_kind, target, status, attempts, started_at, updated_at, pid, host)
             VALUES (?1, ?2, ?3, ?4, ?5, ?9, 1, ?6, ?6, ?7, ?8)
             ON CONFLICT (run_id) DO UPDATE SET status = ?9, attempts = attempts + 1,
                 updated_at = excluded.updated_at, finished_at = NULL, message = NULL,
                 pid = excluded.pid, host = excluded.host",
            params![
                run.run_id,
                run.stage,
                run.source,
                run.source_kind,
                run.target,
                now,
                std::process::id(),
                crate::lock::hostname(),
                RunStatus::Running.as_str()
            ],
        )
        .ctx(ErrorKind::Checkpoint, || {
            format!("state file {path}: recording run {}", run.run_id)
        })?;
        let attempt: i64 = tx
            .query_row("SELECT attempts FROM runs WHERE run_id = ?1", [run.run_id], |r| {
                r.get(0)
            })
            .ctx(ErrorKind::Checkpoint, || format!("state file {path}"))?;
        tx.commit()
            .ctx(ErrorKind::Checkpoint, || format!("state file {path}"))?;
        Ok(attempt)
    }

    /// Record journal entries of a run into `target`, in their own transaction.
    pub(crate) fn journal_add(&mut self, run_id: &str, target: &str, entries: &[JournalEntry]) -> Result<()> {
        let path = self.path.display().to_string();
        let e = || format!("state file {path}: writing the rollback journal");
        let tx = self.conn.transaction().ctx(ErrorKind::Checkpoint, e)?;
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO journal (run_id, target, stream, tbl, action, key, before, schema)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .ctx(ErrorKind::Checkpoint, e)?;
            for j in entries {
                st.execute(params![
                    run_id, target, j.stream, j.table, j.action, j.key, j.before, j.schema
                ])
                .ctx(ErrorKind::Checkpoint, e)?;
            }
        }
        tx.commit().ctx(ErrorKind::Checkpoint, e)
    }

    /// A run's journal, oldest first.
    pub(crate) fn journal_of(&self, run_id: &str) -> Result<Vec<JournalRow>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT id, run_id, target, stream, tbl, action, key, before, schema, undone_at FROM journal
                 WHERE run_id = ?1 ORDER BY id",
            )
            .ctx(ErrorKind::Checkpoint, self.err("reading the rollback journal"))?;
        st.query_map([run_id], |r| {
            Ok(JournalRow {
                id: r.get(0)?,
                run_id: r.get(1)?,
                target: r.get(2)?,
                stream: r.get(3)?,
                table: r.get(4)?,
                action: r.get(5)?,
                key: r.get(6)?,
                before: r.get(7)?,
                schema: r.get(8)?,
                undone_at: r.get(9)?,
            })
        })
        .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
        .ctx(ErrorKind::Checkpoint, self.err("reading the rollback journal"))
    }

    /// Runs other than `run_id` (and than those in `undone`) that wrote into `table` of `target`
    /// after it did.
    pub(crate) fn journal_later_runs(
        &self,
        target: &str,
        table: &str,
        run_id: &str,
        after_id: i64,
        undone: &[String],
    ) -> Result<Vec<String>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT DISTINCT run_id FROM journal
                 WHERE target = ?1 AND tbl = ?2 AND run_id <> ?3 AND id > ?4 AND undone_at IS NULL",
            )
            .ctx(ErrorKind::Checkpoint, self.err("reading the rollback journal"))?;
        let later = st
            .query_map(params![target, table, run_id, after_id], |r| r.get(0))
            .and_then(|it| it.collect::<rusqlite::Result<Vec<String>>>())
            .ctx(ErrorKind::Checkpoint, self.err("reading the rollback journal"))?;
        Ok(later.into_iter().filter(|r| !undone.contains(r)).collect())
    }

    /// The longest prefix of `stream`, at most `rows` long, whose digest a run from `source` into
    /// `target` recorded: its length and digest.
    pub(crate) fn prefix_digest(
        &self,
        source: &str,
        target: &str,
        stream: &str,
        rows: u64,
    ) -> Result<Option<(u64, String)>> {
        if self.version()? < 8 {
            return Ok(None);
        }
        self.conn
            .query_row(
                "SELECT b.last_position + 1, b.prefix_digest FROM batches b JOIN runs r USING (run_id)
                 WHERE r.source = ?1 AND r.target = ?2 AND b.stream = ?3 AND b.prefix_digest IS NOT NULL
                   AND b.last_position + 1 <= ?4
                 ORDER BY b.last_position DESC, b.batch_id DESC LIMIT 1",
                params![source, target, stream, rows as i64],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
            )
            .optional()
            .ctx(ErrorKind::Checkpoint, self.err("reading the digests of committed rows"))
    }

    /// Mark journal entries as undone.
    pub(crate) fn journal_undone(&mut self, ids: &[i64]) -> Result<()> {
        let now = now_rfc3339();
        let tx = self
            .conn
            .transaction()
            .ctx(ErrorKind::Checkpoint, || "marking the journal".to_owned())?;
        for id in ids {
            tx.execute("UPDATE journal SET undone_at = ?2 WHERE id = ?1", params![id, now])
                .ctx(ErrorKind::Checkpoint, || "marking the journal".to_owned())?;
        }
        tx.commit()
            .ctx(ErrorKind::Checkpoint, || "marking the journal".to_owned())
    }

    /// Add to the rows a run expects (a stream's estimate, as its SCHEMA arrives), for the time
    /// left that `ferry status` gives.
    pub(crate) fn expect_rows(&mut self, run_id: &str, rows: u64) -> Result<()> {
        self.conn
            .execute(
                "UPDATE runs SET rows_expected = coalesce(rows_expected, 0) + ?2 WHERE run_id = ?1",
                params![run_id, rows as i64],
            )
            .ctx(ErrorKind::Checkpoint, self.err("recording the rows expected"))?;
        Ok(())
    }

    /// Record committed batches and, with `state` (its seq and value), acknowledge that STATE, atomically.
    pub(crate) fn ack(
        &mut self,
        run_id: &str,
        attempt: i64,
        state: Option<(u64, &str)>,
        batches: &[BatchRow],
    ) -> Result<()> {
        self.ack_files(run_id, attempt, state, batches, "", &[])
    }

    /// [`Checkpoint::ack`], recording what became of `files` at `target` in the same transaction.
    pub(crate) fn ack_files(
        &mut self,
        run_id: &str,
        attempt: i64,
        state: Option<(u64, &str)>,
        batches: &[BatchRow],
        target: &str,
        files: &[FileRow],
    ) -> Result<()> {
        let seq = state.map(|(s, _)| s);
        let now = now_rfc3339();
        let path = self.path.display().to_string();
        let e = || format!("state file {path}: acknowledging a STATE of run {run_id}");
        let tx = self.conn.transaction().ctx(ErrorKind::Checkpoint, e)?;
        Self::put_files(&tx, target, files, &now).ctx(ErrorKind::Checkpoint, e)?;
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT INTO batches (run_id, attempt, stream, state_seq, rows, written, skipped, rejected,
                         bytes, first_position, last_position, status, started_at, committed_at, prefix_digest, deleted)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'committed', ?12, ?13, ?14, ?15)",
                )
                .ctx(ErrorKind::Checkpoint, e)?;
            for b in batches {
                ins.execute(params![
                    run_id,
                    attempt,
                    b.stream,
                    seq.map(|s| s as i64),
                    b.rows as i64,
                    b.written as i64,
                    b.skipped as i64,
                    b.rejected as i64,
                    b.bytes as i64,
                    b.first_position.map(|p| p as i64),
                    b.last_position.map(|p| p as i64),
                    b.started_at,
                    now,
                    b.prefix_digest,
                    b.deleted as i64
                ])
                .ctx(ErrorKind::Checkpoint, e)?;
            }
        }
        let (w, s, r, d) = batches.iter().fold((0u64, 0u64, 0u64, 0u64), |a, b| {
            (a.0 + b.written, a.1 + b.skipped, a.2 + b.rejected, a.3 + b.deleted)
        });
        tx.execute(
            "UPDATE runs SET rows_written = rows_written + ?2, rows_skipped = rows_skipped + ?3,
                 rows_rejected = rows_rejected + ?4, rows_deleted = rows_deleted + ?6, updated_at = ?5 WHERE run_id = ?1",
            params![run_id, w as i64, s as i64, r as i64, now, d as i64],
        )
        .ctx(ErrorKind::Checkpoint, e)?;
        if let Some((seq, value)) = state {
            tx.execute(
                "INSERT INTO acks (run_id, seq, value, acked_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (run_id) DO UPDATE SET seq = excluded.seq, value = excluded.value, acked_at = excluded.acked_at",
                params![run_id, seq as i64, value, now],
            )
            .ctx(ErrorKind::Checkpoint, e)?;
        }
        tx.commit().ctx(ErrorKind::Checkpoint, e)
    }

    /// Record what became of `files` at `target`, ahead of the STATE that will acknowledge
    /// them: the store has them (or refused them) whatever happens to this run.
    pub(crate) fn files_settled(&mut self, target: &str, files: &[FileRow]) -> Result<()> {
        let now = now_rfc3339();
        let path = self.path.display().to_string();
        let e = || format!("state file {path}: recording settled files in the manifest");
        let tx = self.conn.transaction().ctx(ErrorKind::Checkpoint, e)?;
        Self::put_files(&tx, target, files, &now).ctx(ErrorKind::Checkpoint, e)?;
        tx.commit().ctx(ErrorKind::Checkpoint, e)
    }

    fn put_files(tx: &rusqlite::Transaction<'_>, target: &str, files: &[FileRow], now: &str) -> rusqlite::Result<()> {
        let mut up = tx.prepare_cached(
            "INSERT INTO files (target, key, path, size, sha256, etag, part_size, run_id, status, reason, started_at, finished_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, CASE WHEN ?9 = 'uploading' THEN NULL ELSE ?11 END)
             ON CONFLICT (target, key) DO UPDATE SET path = excluded.path, size = excluded.size,
                 sha256 = excluded.sha256, etag = excluded.etag, part_size = excluded.part_size,
                 run_id = excluded.run_id, status = excluded.status, reason = excluded.reason,
                 started_at = CASE WHEN excluded.status = 'uploading' THEN excluded.started_at ELSE files.started_at END,
                 finished_at = excluded.finished_at",
        )?;
        for f in files {
            up.execute(params![
                target,
                key_value(&f.key),
                key_value(&f.path),
                f.size as i64,
                f.sha256,
                f.etag,
                f.part_size.map(|p| p as i64),
                f.run_id,
                f.status,
                f.reason,
                now
            ])?;
        }
        Ok(())
    }

    /// Record that these files are about to be sent (status `uploading`), before any request:
    /// whatever happens next, the manifest knows this run may have created them.
    pub(crate) fn files_started(&mut self, target: &str, files: &[FileRow]) -> Result<()> {
        let now = now_rfc3339();
        let path = self.path.display().to_string();
        let e = || format!("state file {path}: recording files about to be sent");
        let tx = self.conn.transaction().ctx(ErrorKind::Checkpoint, e)?;
        Self::put_files(&tx, target, files, &now).ctx(ErrorKind::Checkpoint, e)?;
        tx.commit().ctx(ErrorKind::Checkpoint, e)
    }

    /// What the manifest says of `key` at `target`.
    pub(crate) fn file(&self, target: &str, key: &[u8]) -> Result<Option<FileRow>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT path, size, sha256, etag, part_size, status, reason, run_id FROM files
                 WHERE target = ?1 AND key = ?2",
            )
            .ctx(ErrorKind::Checkpoint, self.err("reading the file manifest"))?;
        st.query_row(params![target, key_value(key)], |r| {
            Ok(FileRow {
                key: key.to_vec(),
                path: bytes_of(r.get(0)?),
                size: r.get::<_, i64>(1)? as u64,
                sha256: r.get(2)?,
                etag: r.get(3)?,
                part_size: r.get::<_, Option<i64>>(4)?.map(|p| p as u64),
                status: r.get(5)?,
                reason: r.get(6)?,
                run_id: r.get(7)?,
            })
        })
        .optional()
        .ctx(ErrorKind::Checkpoint, self.err("reading the file manifest"))
    }

    /// The manifest rows written by run `run_id`, with their target.
    pub(crate) fn files_of_run(&self, run_id: &str) -> Result<Vec<(String, FileRow)>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT target, key, path, size, sha256, etag, part_size, status, reason, run_id FROM files
                 WHERE run_id = ?1 ORDER BY target, key",
            )
            .ctx(ErrorKind::Checkpoint, self.err("reading the file manifest"))?;
        let rows = st
            .query_map([run_id], |r| {
                let key = bytes_of(r.get(1)?);
                Ok((
                    r.get::<_, String>(0)?,
                    FileRow {
                        key,
                        path: bytes_of(r.get(2)?),
                        size: r.get::<_, i64>(3)? as u64,
                        sha256: r.get(4)?,
                        etag: r.get(5)?,
                        part_size: r.get::<_, Option<i64>>(6)?.map(|p| p as u64),
                        status: r.get(7)?,
                        reason: r.get(8)?,
                        run_id: r.get(9)?,
                    },
                ))
            })
            .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
            .ctx(ErrorKind::Checkpoint, self.err("reading the file manifest"))?;
        Ok(rows)
    }

    /// A multipart upload was started at `key`: until [`Checkpoint::multipart_ended`], it may hold
    /// parts that only an abort removes.
    pub(crate) fn multipart_started(&mut self, target: &str, key: &[u8], upload_id: &str, run_id: &str) -> Result<()> {
        let path = self.path.display().to_string();
        let e = || format!("state file {path}: recording a multipart upload");
        let tx = self.conn.transaction().ctx(ErrorKind::Checkpoint, e)?;
        tx.execute(
            "INSERT OR REPLACE INTO multipart (target, key, upload_id, run_id, started_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![target, key_value(key), upload_id, run_id, now_rfc3339()],
        )
        .ctx(ErrorKind::Checkpoint, e)?;
        // The id settles the intent recorded before it was asked for.
        if !upload_id.is_empty() {
            tx.execute(
                "DELETE FROM multipart WHERE target = ?1 AND key = ?2 AND upload_id = ''",
                params![target, key_value(key)],
            )
            .ctx(ErrorKind::Checkpoint, e)?;
        }
        tx.commit().ctx(ErrorKind::Checkpoint, e)
    }

    /// The multipart upload was completed or aborted.
    pub(crate) fn multipart_ended(&mut self, target: &str, key: &[u8], upload_id: &str) -> Result<()> {
        self.conn
            .execute(
                "DELETE FROM multipart WHERE target = ?1 AND key = ?2 AND upload_id = ?3",
                params![target, key_value(key), upload_id],
            )
            .ctx(
                ErrorKind::Checkpoint,
                self.err("recording the end of a multipart upload"),
            )?;
        Ok(())
    }

    /// Multipart uploads started and never ended (the table is small: an upload leaves it when
    /// it is completed or aborted).
    pub(crate) fn multipart_open(&self) -> Result<Vec<OpenUpload>> {
        let mut st = self
            .conn
            .prepare("SELECT target, key, upload_id, run_id FROM multipart ORDER BY target, key, upload_id")
            .ctx(ErrorKind::Checkpoint, self.err("reading the multipart uploads"))?;
        st.query_map([], |r| {
            Ok(OpenUpload {
                target: r.get(0)?,
                key: bytes_of(r.get(1)?),
                upload_id: r.get(2)?,
                run_id: r.get(3)?,
            })
        })
        .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
        .ctx(ErrorKind::Checkpoint, self.err("reading the multipart uploads"))
    }

    /// Record what became of one file of the manifest (a rollback, say).
    pub(crate) fn set_file_status(
        &mut self,
        target: &str,
        key: &[u8],
        status: FileStatus,
        reason: Option<&str>,
    ) -> Result<()> {
        self.conn
            .execute(
                "UPDATE files SET status = ?3, reason = ?4, finished_at = ?5 WHERE target = ?1 AND key = ?2",
                params![target, key_value(key), status, reason, now_rfc3339()],
            )
            .ctx(ErrorKind::Checkpoint, self.err("updating the file manifest"))?;
        Ok(())
    }

    /// When a run (its id, or a unique prefix of it) started, and its full id.
    pub(crate) fn run_started(&self, prefix: &str) -> Result<Option<(String, String)>> {
        let mut st = self
            .conn
            .prepare("SELECT run_id, started_at FROM runs WHERE substr(run_id, 1, length(?1)) = ?1 ORDER BY started_at")
            .ctx(ErrorKind::Checkpoint, self.err("reading runs"))?;
        let rows = st
            .query_map([prefix], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
            .ctx(ErrorKind::Checkpoint, self.err("reading runs"))?;
        Ok(rows.into_iter().next())
    }

    /// The SHA-256 recorded for a file of `root` whose version is exactly `stamp`, if any.
    pub(crate) fn cached_hash(&self, root: &str, path: &[u8], stamp: &crate::tree::Stamp) -> Result<Option<String>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT sha256 FROM hashes WHERE root = ?1 AND path = ?2 AND size = ?3 AND mtime_ns = ?4
                 AND ctime_ns = ?5 AND ino = ?6 AND dev = ?7",
            )
            .ctx(ErrorKind::Checkpoint, self.err("reading the hash cache"))?;
        st.query_row(
            params![
                root,
                path,
                stamp.size as i64,
                stamp.mtime_ns,
                stamp.ctime_ns,
                stamp.ino as i64,
                stamp.dev as i64
            ],
            |r| r.get(0),
        )
        .optional()
        .ctx(ErrorKind::Checkpoint, self.err("reading the hash cache"))
    }

    /// Remember the SHA-256 of these file versions, in one transaction.
    /// How many files of the tree at `root` the hash cache holds, and their bytes: the tree as it
    /// was last exported (an estimate for progress).
    pub(crate) fn cached_tree_size(&self, root: &str) -> Result<Option<(u64, u64)>> {
        let (n, bytes): (i64, i64) = self
            .conn
            .query_row(
                "SELECT count(*), coalesce(sum(size), 0) FROM hashes WHERE root = ?1",
                [root],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ctx(ErrorKind::Checkpoint, self.err("reading the hash cache"))?;
        Ok((n > 0).then_some((n as u64, bytes as u64)))
    }

    pub(crate) fn cache_hashes(&mut self, root: &str, entries: &[(Vec<u8>, crate::tree::Stamp, String)]) -> Result<()> {
        let path = self.path.display().to_string();
        let e = || format!("state file {path}: writing the hash cache");
        let tx = self.conn.transaction().ctx(ErrorKind::Checkpoint, e)?;
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT INTO hashes (root, path, size, mtime_ns, ctime_ns, ino, dev, sha256)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (root, path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns,
                         ctime_ns = excluded.ctime_ns, ino = excluded.ino, dev = excluded.dev, sha256 = excluded.sha256",
                )
                .ctx(ErrorKind::Checkpoint, e)?;
            for (p, s, sha) in entries {
                ins.execute(params![
                    root,
                    p,
                    s.size as i64,
                    s.mtime_ns,
                    s.ctime_ns,
                    s.ino as i64,
                    s.dev as i64,
                    sha
                ])
                .ctx(ErrorKind::Checkpoint, e)?;
            }
        }
        tx.commit().ctx(ErrorKind::Checkpoint, e)
    }

    /// The source a run read from (its redacted address).
    pub(crate) fn run_source(&self, run_id: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT source FROM runs WHERE run_id = ?1", [run_id], |r| {
                r.get::<_, Option<String>>(0)
            })
            .optional()
            .map(Option::flatten)
            .ctx(ErrorKind::Checkpoint, self.err("reading runs"))
    }

    /// How many files of `target` the manifest has, per status.
    /// How many of a run's files are in each status (from the index on run and status).
    pub(crate) fn file_counts_of_run(&self, run_id: &str) -> Result<Vec<(FileStatus, u64)>> {
        let mut st = self
            .conn
            .prepare("SELECT status, count(*) FROM files WHERE run_id = ?1 GROUP BY status ORDER BY status")
            .ctx(ErrorKind::Checkpoint, self.err("reading the file manifest"))?;
        let rows = st
            .query_map([run_id], |r| {
                Ok((r.get::<_, FileStatus>(0)?, r.get::<_, i64>(1)? as u64))
            })
            .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
            .ctx(ErrorKind::Checkpoint, self.err("reading the file manifest"))?;
        Ok(rows)
    }

    pub(crate) fn finish_run(&mut self, run_id: &str, status: RunStatus, message: Option<&str>) -> Result<()> {
        let now = now_rfc3339();
        let path = self.path.display().to_string();
        self.conn
            .execute(
                "UPDATE runs SET status = ?2, message = ?3, updated_at = ?4,
                     finished_at = CASE WHEN ?2 = 'running' THEN NULL ELSE ?4 END WHERE run_id = ?1",
                params![run_id, status.as_str(), message, now],
            )
            .ctx(ErrorKind::Checkpoint, || {
                format!("state file {path}: finishing run {run_id}")
            })?;
        Ok(())
    }

    pub(crate) fn record_error(
        &mut self,
        run_id: &str,
        stream: Option<&str>,
        line: Option<u64>,
        key: Option<&str>,
        message: &str,
    ) -> Result<()> {
        let path = self.path.display().to_string();
        self.conn
            .execute(
                "INSERT INTO errors (run_id, stream, line, key, message, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![run_id, stream, line.map(|l| l as i64), key, message, now_rfc3339()],
            )
            .ctx(ErrorKind::Checkpoint, || {
                format!("state file {path}: recording an error")
            })?;
        Ok(())
    }

    /// How `ferry rollback` undid a run, if it did: every entry of a table run's journal, or (a
    /// files run) some of its objects deleted and none it put left.
    pub(crate) fn undone(&self, run_id: &str) -> Result<Option<Undone>> {
        let journal = self.journal_of(run_id)?;
        if !journal.is_empty() {
            return Ok(journal.iter().all(|j| j.undone_at.is_some()).then_some(Undone::Tables));
        }
        let counts = self.file_counts_of_run(run_id)?;
        let count = |s: FileStatus| counts.iter().find(|(c, _)| *c == s).map_or(0, |(_, n)| *n);
        let (deleted, left) = (count(FileStatus::RolledBack), count(FileStatus::Uploaded));
        Ok((deleted > 0 && left == 0).then(|| Undone::Files {
            deleted,
            kept: counts.iter().map(|(_, n)| n).sum::<u64>() - deleted,
        }))
    }

    /// The most recent import run from `source` and its last acknowledged STATE.
    pub(crate) fn resume_point(&self, source: &str) -> Result<Option<ResumePoint>> {
        let row = self
            .conn
            .query_row(
                "SELECT r.run_id, r.status, a.value FROM runs r LEFT JOIN acks a USING (run_id)
                 WHERE r.source = ?1 AND r.stage = 'import'
                 ORDER BY r.started_at DESC, r.rowid DESC LIMIT 1",
                [source],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                    ))
                },
            )
            .optional()
            .ctx(
                ErrorKind::Checkpoint,
                self.err("looking up the last acknowledged STATE"),
            )?;
        let Some((run_id, status, value)) = row else {
            return Ok(None);
        };
        let state = match value {
            Some(v) => Some(serde_json::from_str::<StateValue>(&v).map_err(|e| {
                Error::new(
                    ErrorKind::Checkpoint,
                    format!(
                        "state file {}: the acknowledged STATE of run {run_id} is unreadable",
                        self.path.display()
                    ),
                )
                .with_source(e)
            })?),
            None => None,
        };
        Ok(Some(ResumePoint { run_id, status, state }))
    }

    /// The watermarks the catch-up passes from `source` reached, by stream: each stream's
    /// bookmark with a `replication_key_value` in the newest acknowledged STATE that has one.
    pub(crate) fn watermarks(&self, source: &str) -> Result<std::collections::HashMap<String, serde_json::Value>> {
        let mut out = std::collections::HashMap::new();
        for state in self.acknowledged_states(source)? {
            for (stream, b) in state.bookmarks {
                if b.get("replication_key_value").is_some() {
                    out.entry(stream).or_insert(b);
                }
            }
        }
        Ok(out)
    }

    /// The bookmark `name` in the newest acknowledged STATE from `source` that has it (runs
    /// rolled back since left out).
    /// Bookmark `name` of the last STATE run `run_id` acknowledged, if any.
    pub(crate) fn acknowledged_bookmark(&self, run_id: &str, name: &str) -> Result<Option<serde_json::Value>> {
        let path = self.path.display().to_string();
        let value: Option<String> = self
            .conn
            .query_row("SELECT value FROM acks WHERE run_id = ?1", [run_id], |r| r.get(0))
            .optional()
            .ctx(ErrorKind::Checkpoint, || {
                format!("state file {path}: reading what run {run_id} acknowledged")
            })?;
        Ok(value
            .and_then(|v| serde_json::from_str::<StateValue>(&v).ok())
            .and_then(|mut s| s.bookmarks.remove(name)))
    }

    pub(crate) fn watermarks_of(&self, source: &str, name: &str) -> Result<Option<serde_json::Value>> {
        Ok(self
            .acknowledged_states(source)?
            .into_iter()
            .find_map(|mut s| s.bookmarks.remove(name)))
    }

    /// The last acknowledged STATE of each import run from `source`, newest first, leaving out
    /// runs rolled back since (what they brought is gone from the target).
    fn acknowledged_states(&self, source: &str) -> Result<Vec<StateValue>> {
        let path = self.path.display().to_string();
        let e = || format!("state file {path}: looking up what earlier runs from this source acknowledged");
        let mut st = self
            .conn
            .prepare(
                "SELECT a.value FROM runs r JOIN acks a USING (run_id)
                 WHERE r.source = ?1 AND r.stage = 'import' AND r.status <> 'rolled_back'
                   AND (NOT EXISTS (SELECT 1 FROM journal j WHERE j.run_id = r.run_id)
                        OR EXISTS (SELECT 1 FROM journal j WHERE j.run_id = r.run_id AND j.undone_at IS NULL))
                 ORDER BY r.started_at DESC, r.rowid DESC",
            )
            .ctx(ErrorKind::Checkpoint, e)?;
        let values = st
            .query_map([source], |r| r.get::<_, String>(0))
            .ctx(ErrorKind::Checkpoint, e)?
            .collect::<rusqlite::Result<Vec<String>>>()
            .ctx(ErrorKind::Checkpoint, e)?;
        Ok(values
            .iter()
            .filter_map(|v| serde_json::from_str::<StateValue>(v).ok())
            .collect())
    }

    pub(crate) fn runs(&self) -> Result<Vec<RunRow>> {
        // A read-only state file of an older ferry has no rows_expected, pid or host.
        let version = self.version()?;
        let expected = if version >= 5 { "r.rows_expected" } else { "NULL" };
        let process = if version >= 7 { "r.pid, r.host" } else { "NULL, NULL" };
        let deleted = if version >= 9 { "r.rows_deleted" } else { "0" };
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT r.run_id, r.stage, r.source, r.target, r.status, r.attempts, r.started_at, r.updated_at,
                        r.finished_at, r.rows_written, r.rows_skipped, r.rows_rejected,
                        (SELECT count(*) FROM batches b WHERE b.run_id = r.run_id), a.seq, r.message,
                        {expected}, {process}, {deleted}
                 FROM runs r LEFT JOIN acks a USING (run_id) ORDER BY r.started_at, r.rowid"
            ))
            .ctx(ErrorKind::Checkpoint, self.err("listing runs"))?;
        let rows = st
            .query_map([], |r| {
                Ok(RunRow {
                    run_id: r.get(0)?,
                    stage: r.get(1)?,
                    source: r.get(2)?,
                    target: r.get(3)?,
                    status: r.get(4)?,
                    attempts: r.get(5)?,
                    started_at: r.get(6)?,
                    updated_at: r.get(7)?,
                    finished_at: r.get(8)?,
                    rows_written: r.get(9)?,
                    rows_skipped: r.get(10)?,
                    rows_rejected: r.get(11)?,
                    batches: r.get(12)?,
                    last_seq: r.get(13)?,
                    message: r.get(14)?,
                    rows_expected: r.get(15)?,
                    pid: r.get(16)?,
                    host: r.get(17)?,
                    rows_deleted: r.get(18)?,
                })
            })
            .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
            .ctx(ErrorKind::Checkpoint, self.err("listing runs"))?;
        Ok(rows)
    }

    /// Batches, of one run or of all; `batch` picks one.
    pub(crate) fn batches(&self, run_id: Option<&str>, batch: Option<i64>) -> Result<Vec<BatchInfo>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT batch_id, run_id, attempt, stream, state_seq, rows, written, skipped, rejected, bytes,
                        first_position, last_position, status, started_at, committed_at
                 FROM batches WHERE (?1 IS NULL OR run_id = ?1) AND (?2 IS NULL OR batch_id = ?2)
                 ORDER BY batch_id",
            )
            .ctx(ErrorKind::Checkpoint, self.err("listing batches"))?;
        let rows = st
            .query_map(params![run_id, batch], |r| {
                Ok(BatchInfo {
                    batch_id: r.get(0)?,
                    run_id: r.get(1)?,
                    attempt: r.get(2)?,
                    stream: r.get(3)?,
                    state_seq: r.get(4)?,
                    rows: r.get(5)?,
                    written: r.get(6)?,
                    skipped: r.get(7)?,
                    rejected: r.get(8)?,
                    bytes: r.get(9)?,
                    first_position: r.get(10)?,
                    last_position: r.get(11)?,
                    status: r.get(12)?,
                    started_at: r.get(13)?,
                    committed_at: r.get(14)?,
                })
            })
            .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
            .ctx(ErrorKind::Checkpoint, self.err("listing batches"))?;
        Ok(rows)
    }

    /// Errors recorded for a run (or all runs).
    pub(crate) fn errors(&self, run_id: Option<&str>) -> Result<Vec<ErrorRow>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT coalesce(run_id, ''), stream, line, message, at FROM errors
                 WHERE (?1 IS NULL OR run_id = ?1) ORDER BY error_id",
            )
            .ctx(ErrorKind::Checkpoint, self.err("listing errors"))?;
        let rows = st
            .query_map(params![run_id], |r| {
                Ok(ErrorRow {
                    run_id: r.get(0)?,
                    stream: r.get(1)?,
                    line: r.get(2)?,
                    message: r.get(3)?,
                    at: r.get(4)?,
                })
            })
            .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
            .ctx(ErrorKind::Checkpoint, self.err("listing errors"))?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_named_by_its_id_a_unique_prefix_or_the_short_form_with_its_suffix() {
        let ids = ["0193a-1", "0193a-1.uploads", "0193b-2", "0193b-20"];
        assert_eq!(named_run(&ids, "0193a-1"), Ok("0193a-1"));
        assert_eq!(
            named_run(&ids, "0193a"),
            Ok("0193a-1"),
            "the files run, not its results' run"
        );
        assert_eq!(named_run(&ids, "0193a.uploads"), Ok("0193a-1.uploads"));
        assert_eq!(
            named_run(&ids, "0193b-2"),
            Ok("0193b-2"),
            "an exact id wins over a prefix"
        );
        assert_eq!(named_run(&ids, "0193b"), Err(vec!["0193b-2", "0193b-20"]));
        assert_eq!(named_run(&ids, "0194"), Err(vec![]));
    }

    #[test]
    fn stages_opening_a_new_state_file_at_once_both_get_it() {
        let dir = tempfile::tempdir().unwrap();
        for n in 0..100 {
            let path = dir.path().join(format!("state-{n}.db"));
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(3));
            let opened: Vec<_> = (0..3)
                .map(|_| {
                    let (path, barrier) = (path.clone(), std::sync::Arc::clone(&barrier));
                    std::thread::spawn(move || {
                        barrier.wait();
                        Checkpoint::open(&path).map(|_| ())
                    })
                })
                .collect();
            for t in opened {
                t.join().unwrap().unwrap();
            }
        }
    }

    #[test]
    fn runs_acks_and_resume_point() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/state.db");
        let mut cp = Checkpoint::open(&path).unwrap();
        let run = NewRun {
            run_id: "r1",
            stage: "import",
            source: Some("sqlite:a.db"),
            source_kind: Some("sqlite"),
            target: "sqlite:b.db",
        };
        assert_eq!(cp.start_run(&run).unwrap(), 1);
        let batch = BatchRow {
            stream: "main.t".into(),
            rows: 10,
            written: 9,
            rejected: 1,
            ..Default::default()
        };
        cp.ack(
            "r1",
            1,
            Some((3, r#"{"run_id":"r1","seq":3,"bookmarks":{"main.t":{"rows":10}}}"#)),
            &[batch],
        )
        .unwrap();
        // Batches committed at a STREAM_END leave the acknowledged STATE as it was.
        cp.ack(
            "r1",
            1,
            None,
            &[BatchRow {
                stream: "main.t".into(),
                rows: 1,
                written: 1,
                ..Default::default()
            }],
        )
        .unwrap();
        let rp = cp.resume_point("sqlite:a.db").unwrap().unwrap();
        assert_eq!(rp.run_id, "r1");
        assert_eq!(rp.state.unwrap().bookmark("main.t").unwrap().rows, Some(10));
        assert!(cp.resume_point("sqlite:other.db").unwrap().is_none());
        assert_eq!(cp.start_run(&run).unwrap(), 2, "a second attempt at the same run");
        cp.finish_run("r1", RunStatus::Complete, None).unwrap();
        let runs = cp.runs().unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(
            (
                runs[0].status.as_str(),
                runs[0].rows_written,
                runs[0].rows_rejected,
                runs[0].batches
            ),
            ("complete", 10, 1, 2)
        );
        drop(cp);
        // Re-opening migrates nothing and keeps the data.
        let cp = Checkpoint::open(&path).unwrap();
        assert_eq!(cp.batches(Some("r1"), None).unwrap().len(), 2);
    }

    #[test]
    fn every_journal_action_reads_back_as_written_and_an_unknown_one_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let mut cp = Checkpoint::open(&path).unwrap();
        let entries: Vec<JournalEntry> = JournalAction::ALL
            .into_iter()
            .map(|action| JournalEntry {
                stream: "main.t".into(),
                table: "t".into(),
                action,
                key: None,
                before: None,
                schema: None,
            })
            .collect();
        cp.journal_add("r1", "sqlite:b.db", &entries).unwrap();
        let read: Vec<JournalAction> = cp.journal_of("r1").unwrap().iter().map(|r| r.action).collect();
        assert_eq!(read, JournalAction::ALL);
        let stored: Vec<String> = cp
            .conn
            .prepare("SELECT action FROM journal ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(stored, ["create", "empty", "stream", "rows", "undo", "unjournaled"]);
        cp.conn
            .execute("UPDATE journal SET action = 'shred' WHERE id = 1", [])
            .unwrap();
        let e = cp.journal_of("r1").err().unwrap();
        assert!(e.chain().contains("unknown journal action \"shred\""), "{e}");
    }

    #[test]
    fn refuses_a_state_file_from_a_newer_ferry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        drop(Checkpoint::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let e = Checkpoint::open(&path).err().unwrap();
        assert!(e.message().contains("newer than this ferry knows"), "{e}");
    }

    #[test]
    fn a_state_file_an_older_ferry_wrote_is_read_and_brought_up_to_date() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        // What the version before rows_expected left: every migration but the last.
        let conn = Connection::open(&path).unwrap();
        for (i, sql) in MIGRATIONS[..MIGRATIONS.len() - 1].iter().enumerate() {
            conn.execute_batch(sql).unwrap();
            conn.pragma_update(None, "user_version", (i + 1) as i64).unwrap();
        }
        conn.execute(
            "INSERT INTO runs (run_id, stage, status, attempts, started_at, updated_at) VALUES ('r1', 'import', 'complete', 1, 'x', 'x')",
            [],
        )
        .unwrap();
        drop(conn);
        // Read only (a copy that cannot be written): listed without the new column.
        let ro = Checkpoint {
            conn: Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap(),
            path: path.clone(),
        };
        let runs = ro.runs().unwrap();
        assert_eq!((runs.len(), runs[0].rows_expected), (1, None));
        drop(ro);
        // Writable: migrated on open.
        let cp = Checkpoint::open_existing(&path).unwrap().unwrap();
        assert_eq!(cp.version().unwrap() as usize, MIGRATIONS.len());
        assert_eq!(cp.runs().unwrap()[0].run_id, "r1");
    }
}
