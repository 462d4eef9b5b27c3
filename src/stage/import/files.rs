//! ferry-import into an object store: FILE messages become objects, put by `jobs` threads.
//!
//! Contract:
//! - MUST put each file create-only (see [`crate::connect::objects`]) and verify the bytes sent
//!   are the bytes hashed at export; a file is recorded as done only once the store has it.
//! - MUST record each file in the state file's manifest as `uploading` before any request for
//!   it, and its outcome when the STATE after it is acknowledged: a re-run sends nothing for a
//!   file the manifest has as done with the same size and SHA-256.
//! - MUST treat STATE as a barrier: acknowledge it (manifest, checkpoint, then echo) only once
//!   every file before it has its outcome.
//! - MUST write one RECORD per file to the `uploads` stream on stdout (path, key, size, sha256,
//!   status, reason, etag, batch, migrated_at), each before the STATE that covers it, so the
//!   results can be piped into a table import.
//! - MUST stop at the first store-wide failure (full, read-only, unreachable) with nothing after
//!   the last acknowledged STATE recorded as done; per-file failures go to the reject file.
//!
//! One concern, kept whole (over 800 lines): the files import, whose segments, workers and results
//! share one state.

use crate::outcome::FileStatus;
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::SystemTime;

use serde_json::{Map, Value as Json, json};

use super::ingest::{Rejects, parse_begin, producer_error, record_failure};
use super::{ImportConfig, ImportOutcome};
use crate::checkpoint::RESULTS_RUN_SUFFIX;
use crate::checkpoint::{BatchRow, Checkpoint, FileRow, NewRun, RunStatus};
use crate::connect::OnConflict;
use crate::connect::objects::s3::S3Store;
use crate::connect::objects::{self, ObjectStore, PutOutcome, PutRequest};
use crate::error::{Error, ErrorKind, Result};
use crate::human::{Progress, Unit};
use crate::protocol::side::{Action, FileCounts, FileKey, FileReject, Plan};
use crate::protocol::{
    Begin, Digest, End, ErrorMsg, FileMsg, Kind, Line, Message, ObjectSchema, PROTOCOL, Schema, SourceInfo, State,
    StateValue, StreamEnd, StreamReader, StreamWriter, now_rfc3339, producer,
};
use crate::row::{Column, RowShape, StreamDigest};
use crate::tree::{self, FileDigest};
use crate::value::{Codec, ValueRef};

/// The stream of upload results on stdout.
pub const UPLOADS_STREAM: &str = "uploads";

/// What to say of a multipart upload a killed run may have left with no id recorded.
pub(crate) const UNKNOWN_UPLOAD: &str = "a run was killed as it started a multipart upload of this key, before the store's upload id was recorded: if the store had started it, its parts are stored (and billed) until aborted, and ferry cannot name it; let the bucket abort it (an AbortIncompleteMultipartUpload lifecycle rule) or abort it with the store's own tools";

const UPLOAD_COLUMNS: [(&str, Codec, bool); 9] = [
    ("path", Codec::Text, false),
    ("key", Codec::Text, false),
    // Unknown (null) for a file the export could not read or left out.
    ("size", Codec::Integer, true),
    ("sha256", Codec::Text, true),
    ("status", Codec::Text, false),
    ("reason", Codec::Text, true),
    ("etag", Codec::Text, true),
    ("batch", Codec::Text, false),
    ("migrated_at", Codec::Text, true),
];

fn uploads_schema() -> Schema {
    let mut props = Map::new();
    for (name, codec, nullable) in UPLOAD_COLUMNS {
        let t = if codec == Codec::Integer { "integer" } else { "string" };
        let mut p = if nullable {
            json!({"type": [t, "null"]})
        } else {
            json!({"type": t})
        };
        if name == "migrated_at" {
            // An instant (UTC, to the microsecond, which every table store keeps): a table made
            // from the stream gets PostgreSQL's timestamptz.
            p["format"] = json!("date-time");
            p["x-sql-type"] = json!("TIMESTAMPTZ");
        }
        props.insert(name.into(), p);
    }
    let mut s = Schema::new(UPLOADS_STREAM);
    s.schema = ObjectSchema {
        type_: json!("object"),
        properties: props,
        extra: Map::new(),
    };
    s.key_properties = vec!["path".into()];
    s
}

fn uploads_shape() -> RowShape {
    let columns = UPLOAD_COLUMNS
        .iter()
        .map(|(name, codec, nullable)| Column {
            name: (*name).into(),
            codec: *codec,
            nullable: *nullable,
            sql_type: None,
        })
        .collect();
    RowShape::new(UPLOADS_STREAM, columns, &["path".to_owned()]).unwrap_or_else(|e| unreachable!("{e}"))
}

/// One file to put, as a worker sees it.
struct Job {
    seg: u64,
    line: u64,
    stream: String,
    /// For people (lossy when the name is not UTF-8)...
    path: String,
    /// ...and exactly.
    rel: Vec<u8>,
    key: Vec<u8>,
    /// Where the bytes are: a local file, or (`fetch`) an object to download into it first.
    src: PathBuf,
    fetch: Option<(Arc<S3Store>, String)>,
    size: u64,
    sha256: String,
    content_type: Option<String>,
    mtime: Option<SystemTime>,
    mode: Option<u32>,
    overwrite: bool,
    /// Multipart uploads an earlier run started at this key and never ended: aborted first.
    stale: Vec<String>,
}

impl Job {
    /// The manifest row of this file once the store answered.
    fn row(&self, o: &PutOutcome, run_id: &str) -> FileRow {
        FileRow {
            key: self.key.clone(),
            path: self.rel.clone(),
            size: self.size,
            sha256: self.sha256.clone(),
            etag: o.etag.clone(),
            part_size: o.part_size,
            status: o.status,
            reason: o.reason.clone(),
            run_id: run_id.to_owned(),
        }
    }
}

struct Done {
    job: Job,
    outcome: Result<PutOutcome>,
}

/// The workers' record of multipart uploads in the state file, on a connection of its own
/// (opened at the first one): written before any part is sent, so an upload a kill leaves behind
/// can be aborted by `ferry rollback --failed-only`.
struct Journal {
    state_path: PathBuf,
    target: String,
    run_id: std::sync::OnceLock<String>,
    cp: std::sync::Mutex<Option<Checkpoint>>,
    /// Files the store now has (or refused) that the manifest does not say yet, and since when.
    settled: std::sync::Mutex<(Vec<FileRow>, Option<std::time::Instant>)>,
}

impl Journal {
    /// A put is done: its row goes into the manifest within a second (sooner once 64 wait, or
    /// when the workers run out of work), whatever the importer is waiting for, so a run killed
    /// before the next STATE leaves it recorded and the next one sends nothing for it. The
    /// STATE's acknowledgement records it again, with its batch.
    fn settled(&self, row: FileRow) {
        let due = match self.settled.lock() {
            Ok(mut s) => {
                s.0.push(row);
                let since = *s.1.get_or_insert_with(std::time::Instant::now);
                s.0.len() >= 64 || since.elapsed() >= std::time::Duration::from_secs(1)
            }
            Err(_) => false,
        };
        if due {
            self.flush_settled();
        }
    }

    fn flush_settled(&self) {
        let rows = match self.settled.lock() {
            Ok(mut s) => {
                s.1 = None;
                std::mem::take(&mut s.0)
            }
            Err(_) => return,
        };
        if rows.is_empty() {
            return;
        }
        if let Err(e) = self.with(|cp, _| cp.files_settled(&self.target, &rows)) {
            tracing::warn!(error = %e, "could not record settled files yet; they are recorded at the next STATE");
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Checkpoint, &str) -> Result<T>) -> Result<T> {
        let mut cp = self
            .cp
            .lock()
            .map_err(|_| Error::new(ErrorKind::Checkpoint, "the multipart journal was poisoned"))?;
        let cp = match cp.as_mut() {
            Some(c) => c,
            None => cp.insert(Checkpoint::open(&self.state_path)?),
        };
        f(cp, self.run_id.get().map_or("", String::as_str))
    }
}

impl objects::UploadJournal for Journal {
    fn starting(&self, key: &[u8]) -> Result<()> {
        self.with(|cp, run| cp.multipart_started(&self.target, key, objects::INTENT, run))
    }

    fn started(&self, key: &[u8], upload_id: &str) -> Result<()> {
        self.with(|cp, run| cp.multipart_started(&self.target, key, upload_id, run))
    }

    fn ended(&self, key: &[u8], upload_id: &str) {
        if let Err(e) = self.with(|cp, _| cp.multipart_ended(&self.target, key, upload_id)) {
            tracing::warn!(error = %e, "could not record the end of a multipart upload; `ferry rollback --failed-only` will try to abort it again");
        }
    }
}

/// The files between two STATEs, and the STATE that closes them.
struct Segment {
    id: u64,
    pending: usize,
    /// Results finished while an earlier segment was still open: written once it is acknowledged.
    held: Vec<Finished>,
    /// Manifest rows to record with the acknowledgement.
    files: Vec<FileRow>,
    batches: HashMap<String, BatchRow>,
    /// The STATE closing it: its seq, value text, and bookmarks (for the echo).
    state: Option<(u64, String, Map<String, Json>)>,
    /// No more files come into it (a STATE or END closed it).
    closed: bool,
}

struct Finished {
    row: FileRow,
    at: String,
}

struct InStream {
    files: u64,
    digest: FileDigest,
    ended: bool,
}

struct Uploader<'w, W: Write> {
    cfg: ImportConfig,
    out: &'w mut StreamWriter<W>,
    store: Arc<dyn ObjectStore>,
    target: String,
    checkpoint: Option<Checkpoint>,
    run_id: String,
    attempt: i64,
    began: bool,
    jobs: Option<mpsc::SyncSender<Job>>,
    journal: Arc<Journal>,
    /// Multipart uploads at this target that earlier runs left open, by key.
    stale: HashMap<Vec<u8>, Vec<String>>,
    results: mpsc::Receiver<Done>,
    workers: Vec<JoinHandle<()>>,
    in_flight: usize,
    /// Jobs read but not sent yet: their manifest rows are written in one transaction first.
    to_send: Vec<Job>,
    segs: VecDeque<Segment>,
    streams: HashMap<String, InStream>,
    shape: RowShape,
    out_digest: StreamDigest,
    out_rows: u64,
    rejects: Rejects,
    outcome: ImportOutcome,
    bytes: u64,
    progress: Progress,
    /// Files (and their bytes) with an outcome, of any kind: the progress made...
    settled: (u64, u64),
    /// ...and of how much: from the input's own totals, else the SCHEMA estimates.
    estimate: (Option<u64>, Option<u64>),
    plan: FileCounts,
    /// Buckets that FILE lines' bytes come from (`content.uri` s3://).
    sources: HashMap<String, Arc<S3Store>>,
    /// The endpoint of the store the stream was exported from, as its BEGIN says
    /// (`s3://bucket/prefix at ENDPOINT`): where those bytes are fetched.
    source_endpoint: Option<String>,
    fetches: u64,
}

/// The import of files, counting into `outcome` whether it finishes or not.
pub fn run_counted<R: BufRead, W: Write>(
    cfg: &ImportConfig,
    input: R,
    out: &mut StreamWriter<W>,
    outcome: &mut ImportOutcome,
) -> Result<()> {
    let store: Arc<dyn ObjectStore> = Arc::from(crate::connect::open_store(&cfg.target, &cfg.s3)?);
    let target = store.address();
    let checkpoint = if cfg.dry_run {
        None
    } else {
        Some(Checkpoint::open(&cfg.state_path)?)
    };
    // One import (or rollback) of this store per state file at a time: an object store has no
    // lock of its own, so the state file's directory keeps it.
    let _lock = match cfg.dry_run {
        true => None,
        false => Some(lock_store(&cfg.state_path, &target)?),
    };
    let (job_tx, job_rx) = mpsc::sync_channel::<Job>(cfg.jobs * 2);
    let (done_tx, done_rx) = mpsc::channel::<Done>();
    let job_rx = Arc::new(std::sync::Mutex::new(job_rx));
    let mut workers = Vec::new();
    let journal = Arc::new(Journal {
        state_path: cfg.state_path.clone(),
        target: target.clone(),
        run_id: std::sync::OnceLock::new(),
        cp: std::sync::Mutex::new(None),
        settled: std::sync::Mutex::new((Vec::new(), None)),
    });
    if !cfg.dry_run {
        for i in 0..cfg.jobs {
            let rx = Arc::clone(&job_rx);
            let tx = done_tx.clone();
            let store = Arc::clone(&store);
            let journal = Arc::clone(&journal);
            let h = std::thread::Builder::new()
                .name(format!("ferry-put-{i}"))
                .spawn(move || worker(&*store, &journal, &rx, &tx))
                .map_err(|e| Error::new(ErrorKind::Io, format!("starting an upload thread: {e}")))?;
            workers.push(h);
        }
    }
    drop(done_tx);
    let mut up = Uploader {
        cfg: cfg.clone(),
        out,
        store,
        target,
        checkpoint,
        run_id: String::new(),
        attempt: 1,
        began: false,
        jobs: Some(job_tx),
        journal,
        stale: HashMap::new(),
        results: done_rx,
        workers,
        in_flight: 0,
        to_send: Vec::new(),
        segs: VecDeque::from([Segment::new(0)]),
        streams: HashMap::new(),
        shape: uploads_shape(),
        out_digest: StreamDigest::default(),
        out_rows: 0,
        rejects: Rejects::for_run(cfg, "unknown"),
        outcome: ImportOutcome::default(),
        bytes: 0,
        progress: Progress::new(),
        settled: (0, 0),
        estimate: (None, None),
        plan: FileCounts::default(),
        sources: HashMap::new(),
        source_endpoint: None,
        fetches: 0,
    };
    let mut reader = StreamReader::new(input, cfg.max_line);
    let result = up.consume(&mut reader);
    up.stop_workers();
    if let Err(e) = &result {
        up.abort(RunStatus::after(e), e);
    }
    up.outcome.run_id = up.run_id.clone();
    up.outcome.reject_path = (up.rejects.count > 0).then(|| up.rejects.path.clone());
    up.outcome.files = true;
    *outcome = std::mem::take(&mut up.outcome);
    result
}

/// Take the lock that lets one ferry process at a time write the object store `target` with the
/// state file at `state_path`.
pub(crate) fn lock_store(state_path: &std::path::Path, target: &str) -> Result<crate::lock::FileLock> {
    crate::lock::FileLock::acquire(
        &crate::lock::target_lock_path(state_path, target),
        target,
        &crate::lock::Holder::this_process(),
    )
}

fn worker(
    store: &dyn ObjectStore,
    journal: &Journal,
    jobs: &std::sync::Mutex<mpsc::Receiver<Job>>,
    done: &mpsc::Sender<Done>,
) {
    loop {
        // A worker waiting for work holds the queue: then there is none queued either.
        let next = match jobs.try_lock() {
            Ok(rx) => rx.try_recv(),
            Err(std::sync::TryLockError::WouldBlock) => Err(mpsc::TryRecvError::Empty),
            Err(std::sync::TryLockError::Poisoned(_)) => return,
        };
        let job = match next {
            Ok(j) => j,
            Err(mpsc::TryRecvError::Disconnected) => {
                journal.flush_settled();
                return;
            }
            // Nothing to do for now: what is done goes into the manifest before waiting.
            Err(mpsc::TryRecvError::Empty) => {
                journal.flush_settled();
                match jobs.lock().map(|rx| rx.recv()) {
                    Ok(Ok(j)) => j,
                    _ => return,
                }
            }
        };
        // An object elsewhere comes down to a local file first; the put checks its bytes against
        // the SHA-256 the listing gave, like any file's.
        let fetched = match &job.fetch {
            Some((from, key)) => from.fetch(key, &job.src).map(Some),
            None => Ok(None),
        };
        // Parts a killed run left at this key go before new ones are sent (best effort: what
        // cannot be aborted now stays recorded for `ferry rollback --failed-only`).
        for id in &job.stale {
            match store.abort_upload(&job.key, id) {
                Ok(()) => objects::UploadJournal::ended(journal, &job.key, id),
                Err(e) => {
                    tracing::warn!(path = %job.path, error = %e, "could not abort a multipart upload an earlier run left")
                }
            }
        }
        let outcome = fetched.and_then(|_| {
            store.put(&PutRequest {
                key: &job.key,
                src: &job.src,
                size: job.size,
                sha256: &job.sha256,
                content_type: job.content_type.as_deref(),
                mtime: job.mtime,
                mode: job.mode,
                overwrite: job.overwrite,
                journal: Some(journal),
            })
        });
        if job.fetch.is_some() {
            let _ = std::fs::remove_file(&job.src);
        }
        if let (Ok(o), Some(run)) = (&outcome, journal.run_id.get()) {
            journal.settled(job.row(o, run));
        }
        if done.send(Done { job, outcome }).is_err() {
            return;
        }
    }
}

impl Segment {
    fn new(id: u64) -> Segment {
        Segment {
            id,
            pending: 0,
            held: Vec::new(),
            files: Vec::new(),
            batches: HashMap::new(),
            state: None,
            closed: false,
        }
    }
}

impl<W: Write> Uploader<'_, W> {
    fn consume<R: BufRead>(&mut self, reader: &mut StreamReader<R>) -> Result<()> {
        let mut ended = false;
        while let Some(line) = reader.next_line()? {
            if ended {
                return Err(line.error("a message after END: the stream must end with END"));
            }
            if !self.began && line.kind != Kind::Begin {
                return Err(line.error(
                    "the stream does not start with BEGIN: files come from ferry-export dir:... (or a saved stream of it)",
                ));
            }
            match line.kind {
                Kind::Begin => self.on_begin(&line)?,
                Kind::Schema => self.on_schema(&line)?,
                Kind::File => self.on_file(&line)?,
                Kind::Record => {
                    return Err(line.error(format!(
                        "a RECORD: {} takes FILE lines (from ferry-export dir:...); rows go to a database target",
                        self.target
                    )));
                }
                Kind::State => self.on_state(&line)?,
                Kind::StreamEnd => self.on_stream_end(&line)?,
                Kind::End => {
                    self.on_end()?;
                    ended = true;
                }
                Kind::Error => self.on_error(&line)?,
                Kind::Other => tracing::debug!(line = line.no, kind = %line.head.kind, "unknown message kind ignored"),
            }
            self.collect(false)?;
        }
        if ended {
            return Ok(());
        }
        // Settle what was sent and acknowledge the STATEs it completes; files after the last
        // STATE stay unsettled (`uploading`) and are not recorded as done.
        self.to_send.clear();
        self.collect(true)?;
        Err(Error::new(
            ErrorKind::Truncated,
            format!(
                "input ended after line {} without END: the producer stopped early; files after the last acknowledged STATE are not recorded as done (a re-run finds any that arrived); re-run the pipeline to finish",
                reader.line_no()
            ),
        ))
    }

    fn on_begin(&mut self, line: &Line<'_>) -> Result<()> {
        let begin = parse_begin(line, self.began)?;
        self.began = true;
        self.run_id = begin.run_id.clone();
        let _ = self.journal.run_id.set(self.run_id.clone());
        if let Some(cp) = &self.checkpoint {
            for u in cp.multipart_open()? {
                if u.target != self.target || u.run_id == self.run_id {
                    continue;
                }
                if u.upload_id == objects::INTENT {
                    tracing::warn!(
                        key = %String::from_utf8_lossy(&u.key),
                        run = %u.run_id,
                        "{UNKNOWN_UPLOAD}"
                    );
                } else {
                    self.stale.entry(u.key).or_default().push(u.upload_id);
                }
            }
        }
        self.rejects = Rejects::for_run(&self.cfg, &self.run_id);
        self.source_endpoint = begin
            .source
            .as_ref()
            .filter(|s| s.kind == "s3")
            .and_then(|s| s.address.split_once(" at "))
            .map(|(_, endpoint)| endpoint.to_owned());
        let source = begin.source.as_ref().map(SourceInfo::identity).unwrap_or_default();
        if let Some(cp) = &mut self.checkpoint {
            self.attempt = cp.start_run(&NewRun {
                run_id: &self.run_id,
                stage: "import",
                source: Some(&source),
                source_kind: begin.source.as_ref().map(|s| s.kind.as_str()),
                target: &self.target,
            })?;
        }
        if self.cfg.dry_run {
            return Ok(());
        }
        // The results are a stream of their own, from the store: a downstream import keeps its
        // own run for them.
        self.out.write_message(&Message::Begin(Begin {
            protocol: PROTOCOL.into(),
            run_id: self.uploads_run_id(),
            producer: Some(producer("ferry-import")),
            source: Some(SourceInfo {
                kind: self.cfg.target.kind().into(),
                address: self.target.clone(),
                selection: None,
                shard: None,
            }),
            started_at: Some(now_rfc3339()),
            extra: Map::new(),
        }))?;
        self.out.write_message(&Message::Schema(Box::new(uploads_schema())))
    }

    fn uploads_run_id(&self) -> String {
        format!("{}{RESULTS_RUN_SUFFIX}", self.run_id)
    }

    fn on_schema(&mut self, line: &Line<'_>) -> Result<()> {
        let schema: Schema = line.parse()?;
        if !self.streams.contains_key(&schema.stream) {
            let add = |a: Option<u64>, b: Option<u64>| b.map(|b| a.unwrap_or(0) + b);
            self.estimate = (
                add(self.estimate.0, schema.row_estimate),
                add(self.estimate.1, schema.byte_estimate),
            );
        }
        self.streams.entry(schema.stream.clone()).or_insert_with(|| InStream {
            files: 0,
            digest: FileDigest::default(),
            ended: false,
        });
        Ok(())
    }

    fn on_file(&mut self, line: &Line<'_>) -> Result<()> {
        let f: FileMsg = line.parse()?;
        let bad = |m: String| line.error(format!("FILE {:?}: {m}", f.path));
        if !tree::is_sha256_hex(&f.sha256) {
            return Err(bad("sha256 must be 64 lowercase hex digits".into()));
        }
        let rel = f.path_bytes().map_err(&bad)?;
        tree::check_relative(&rel).map_err(&bad)?;
        let key = match &f.key {
            Some(k) => {
                tree::check_relative(k.as_bytes()).map_err(|e| bad(format!("key {k:?}: {e}")))?;
                k.as_bytes().to_vec()
            }
            None => rel.clone(),
        };
        let (src, fetch) = match tree::path_of_uri(&f.content.uri) {
            Some(p) => (p, None),
            None if f.content.uri.starts_with("s3://") => {
                let (from, key) = self
                    .source_bucket(&f.content.uri)
                    .map_err(|e| e.context(format!("line {}", line.no)))?;
                (self.fetch_path(), Some((from, key)))
            }
            None => {
                return Err(bad(format!(
                    "content.uri {:?} is neither file:// nor s3://",
                    f.content.uri
                )));
            }
        };
        let s = self.streams.entry(f.stream.clone()).or_insert_with(|| InStream {
            files: 0,
            digest: FileDigest::default(),
            ended: false,
        });
        if s.ended {
            return Err(line.error("a FILE after its stream's STREAM_END"));
        }
        s.files += 1;
        s.digest.add(&rel, f.size, &f.sha256);
        self.outcome.received += 1;
        let mtime = f
            .mtime
            .as_deref()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(SystemTime::from);
        let job = Job {
            seg: self.open_seg(),
            line: line.no,
            stream: f.stream.clone(),
            path: f.path.clone(),
            rel: rel.clone(),
            key: key.clone(),
            src,
            fetch,
            size: f.size,
            sha256: f.sha256.clone(),
            content_type: f.content_type.clone(),
            mtime,
            mode: f.mode,
            overwrite: self.cfg.on_conflict == Some(OnConflict::Overwrite),
            stale: self.stale.remove(&key).unwrap_or_default(),
        };
        if self.cfg.dry_run {
            return self.plan_file(&job);
        }
        // Done by an earlier run, with these very bytes: no request at all.
        if !self.cfg.fresh
            && let Some(cp) = &self.checkpoint
            && let Some(row) = cp.file(&self.target, &job.key)?
            && row.is_done()
            && row.size == job.size
            && row.sha256 == job.sha256
        {
            self.outcome.already += 1;
            let seg = job.seg;
            self.seg_mut(seg).pending += 1;
            let at = now_rfc3339();
            return self.finished(seg, job.line, job.stream, row, at, true);
        }
        self.seg_mut(job.seg).pending += 1;
        self.to_send.push(job);
        if self.to_send.len() >= 64 {
            self.send()?;
        }
        Ok(())
    }

    /// The bucket an `s3://bucket/key` URI names (opened once per bucket), and the key in it.
    fn source_bucket(&mut self, uri: &str) -> Result<(Arc<S3Store>, String)> {
        let rest = uri.strip_prefix("s3://").unwrap_or(uri);
        let (bucket, key) = rest
            .split_once('/')
            .ok_or_else(|| Error::input(format!("content.uri {uri:?} names no object")))?;
        let url = format!("s3://{bucket}");
        if !self.sources.contains_key(&url) {
            // The bytes are where the export read them: its endpoint, not this import's.
            let settings = crate::connect::objects::s3::S3Settings {
                endpoint: self.source_endpoint.clone().or_else(|| self.cfg.s3.endpoint.clone()),
                region: self.cfg.s3.region.clone(),
            };
            let store = S3Store::open(&url, &settings)?;
            self.sources.insert(url.clone(), Arc::new(store));
        }
        let store = self
            .sources
            .get(&url)
            .map(Arc::clone)
            .ok_or_else(|| Error::input("unreachable"))?;
        Ok((store, key.to_owned()))
    }

    /// A private file for an object on its way down.
    fn fetch_path(&mut self) -> PathBuf {
        self.fetches += 1;
        let dir = self
            .cfg
            .state_path
            .parent()
            .map_or_else(|| PathBuf::from("fetch"), |d| d.join("fetch"));
        dir.join(format!("{}-{}", std::process::id(), self.fetches))
    }

    fn open_seg(&self) -> u64 {
        self.segs.back().map_or(0, |s| s.id)
    }

    fn seg_mut(&mut self, id: u64) -> &mut Segment {
        let front = self.segs.front().map_or(0, |s| s.id);
        &mut self.segs[(id - front) as usize]
    }

    /// Record the waiting jobs as `uploading` in the manifest, then hand them to the workers.
    fn send(&mut self) -> Result<()> {
        if self.to_send.is_empty() {
            return Ok(());
        }
        if let Some(cp) = &mut self.checkpoint {
            let rows: Vec<FileRow> = self
                .to_send
                .iter()
                .map(|j| FileRow {
                    key: j.key.clone(),
                    path: j.rel.clone(),
                    size: j.size,
                    sha256: j.sha256.clone(),
                    etag: None,
                    part_size: None,
                    status: FileStatus::Uploading,
                    reason: None,
                    run_id: self.run_id.clone(),
                })
                .collect();
            cp.files_started(&self.target, &rows)?;
        }
        let stopped = || Error::new(ErrorKind::Target, "the upload threads stopped");
        for mut job in std::mem::take(&mut self.to_send) {
            loop {
                let tx = self.jobs.as_ref().ok_or_else(stopped)?;
                match tx.try_send(job) {
                    Ok(()) => {
                        self.in_flight += 1;
                        break;
                    }
                    // The queue is full: take a result (never block on both ends at once).
                    Err(mpsc::TrySendError::Full(j)) => {
                        job = j;
                        let done = self.results.recv().map_err(|_| stopped())?;
                        self.on_done(done)?;
                    }
                    Err(mpsc::TrySendError::Disconnected(_)) => return Err(stopped()),
                }
            }
        }
        Ok(())
    }

    /// Take the results that are in; with `all`, wait for every file sent.
    fn collect(&mut self, all: bool) -> Result<()> {
        loop {
            let next = if all && self.in_flight > 0 {
                Some(
                    self.results
                        .recv()
                        .map_err(|_| Error::new(ErrorKind::Target, "the upload threads stopped"))?,
                )
            } else {
                self.results.try_recv().ok()
            };
            match next {
                Some(done) => self.on_done(done)?,
                None => break,
            }
        }
        self.ack_ready()
    }

    fn on_done(&mut self, done: Done) -> Result<()> {
        self.in_flight -= 1;
        let Done { job, outcome } = done;
        let outcome = outcome.map_err(|e| {
            e.context(format!(
                "putting {:?} (line {}); nothing after the last acknowledged STATE is recorded as done: re-run the same command once the store is fixed",
                job.path, job.line
            ))
        })?;
        let row = job.row(&outcome, &self.run_id);
        match outcome.status {
            FileStatus::Uploaded | FileStatus::Overwritten => {
                self.outcome.written += 1;
                self.bytes += row.size;
            }
            FileStatus::Present => self.outcome.skipped += 1,
            _ => {}
        }
        self.finished(job.seg, job.line, job.stream, row, now_rfc3339(), false)?;
        self.report();
        Ok(())
    }

    /// A progress line, when one is due: files and bytes settled, pace, and time left.
    fn report(&mut self) {
        let (files, bytes) = match self.cfg.input_totals {
            Some(t) => (Some(t.files), Some(t.bytes)),
            None => self.estimate,
        };
        let shown = match bytes {
            Some(b) => self.progress.bar("putting files", self.settled.1, Some(b), Unit::Bytes),
            None => self.progress.bar("putting files", self.settled.0, files, Unit::Files),
        };
        if !shown && self.progress.due() {
            // Time left goes by bytes when their total is known (big files take longer), else
            // by files.
            let (files, bytes) = match self.cfg.input_totals {
                Some(t) => (Some(t.files), Some(t.bytes)),
                None => self.estimate,
            };
            let eta = match (bytes, files) {
                (Some(b), _) => self.progress.eta(self.settled.1, Some(b)),
                (None, f) => self.progress.eta(self.settled.0, f),
            };
            tracing::info!(
                files = self.settled.0,
                of = %files.map_or_else(|| "?".to_owned(), |f| f.to_string()),
                files_per_s = self.progress.rate(self.outcome.written + self.outcome.skipped),
                mb_per_s = self.progress.rate(self.bytes) / 1_000_000,
                eta = %eta,
                "putting files"
            );
        }
    }

    /// A file's outcome is known: write its result now if its segment is the oldest open one,
    /// else hold it until the segments before are acknowledged.
    fn finished(&mut self, seg: u64, line: u64, stream: String, row: FileRow, at: String, earlier: bool) -> Result<()> {
        self.settled.0 += 1;
        self.settled.1 += row.size;
        let left_out = row.status.is_left_out();
        if left_out {
            self.outcome.left_out += 1;
        } else if !row.is_done() {
            self.reject(line, &stream, &row)?;
        }
        let s = self.seg_mut(seg);
        s.pending -= 1;
        let b = s.batches.entry(stream.clone()).or_insert_with(|| BatchRow {
            stream: stream.clone(),
            started_at: at.clone(),
            ..Default::default()
        });
        b.rows += 1;
        match row.status {
            _ if earlier || left_out => b.skipped += 1,
            FileStatus::Uploaded | FileStatus::Overwritten => {
                b.written += 1;
                b.bytes += row.size;
            }
            FileStatus::Present => b.skipped += 1,
            _ => b.rejected += 1,
        }
        // What never reached the store (unreadable at export, left out) is a result, not a
        // manifest entry: a key's entry says what is at the key.
        if !earlier && row.status != FileStatus::Unreadable && !left_out {
            s.files.push(row.clone());
        }
        let f = Finished { row, at };
        if self.segs.front().map(|s| s.id) == Some(seg) {
            self.write_result(&f)
        } else {
            self.seg_mut(seg).held.push(f);
            Ok(())
        }
    }

    fn reject(&mut self, line: u64, stream: &str, row: &FileRow) -> Result<()> {
        self.outcome.rejected += 1;
        let path = String::from_utf8_lossy(&row.path).into_owned();
        tracing::warn!(path = %path, status = %row.status, reason = ?row.reason, "file not put");
        self.rejects.write(&FileReject {
            line,
            stream,
            key: FileKey { path: path.clone() },
            object_key: String::from_utf8_lossy(&row.key).into_owned(),
            status: row.status.as_str(),
            reason: row.reason.as_deref(),
        })?;
        if self.rejects.count > self.cfg.max_rejects {
            return Err(Error::data(format!(
                "more than {} files could not be put (the last: {:?}, {}); they are listed in {}",
                self.cfg.max_rejects,
                path,
                row.reason.as_deref().unwrap_or(row.status.as_str()),
                self.rejects.path.display()
            )));
        }
        Ok(())
    }

    fn write_result(&mut self, f: &Finished) -> Result<()> {
        let key = self.store.full_key(&f.row.key);
        let path = String::from_utf8_lossy(&f.row.path);
        let size = f.row.size as i64;
        // The run that put the file (an earlier one, for a file it left done): the batch whose
        // rollback deletes it.
        let run = if f.row.run_id.is_empty() {
            self.run_id.clone()
        } else {
            f.row.run_id.clone()
        };
        // A file that never came to be read has no size or hash to say.
        let unread = f.row.status == FileStatus::Unreadable || f.row.status.is_left_out();
        let values: [ValueRef<'_>; 9] = [
            ValueRef::Text(path.as_bytes()),
            ValueRef::Text(key.as_bytes()),
            if unread {
                ValueRef::Null
            } else {
                ValueRef::Integer(size)
            },
            if unread {
                ValueRef::Null
            } else {
                ValueRef::Text(f.row.sha256.as_bytes())
            },
            ValueRef::Text(f.row.status.as_str().as_bytes()),
            f.row
                .reason
                .as_deref()
                .map_or(ValueRef::Null, |r| ValueRef::Text(r.as_bytes())),
            f.row
                .etag
                .as_deref()
                .map_or(ValueRef::Null, |r| ValueRef::Text(r.as_bytes())),
            ValueRef::Text(run.as_bytes()),
            if f.row.is_done() {
                ValueRef::Text(f.at.as_bytes())
            } else {
                ValueRef::Null
            },
        ];
        self.out_digest.add(&self.shape, |i| values[i]);
        self.out_rows += 1;
        let mut line = Vec::with_capacity(256);
        line.extend_from_slice(br#"{"type":"RECORD","stream":"uploads","record":"#);
        self.shape.encode_record(|i| values[i], &mut line);
        line.push(b'}');
        self.out.write_line(&line, Kind::Record)
    }

    fn on_state(&mut self, line: &Line<'_>) -> Result<()> {
        let state: State = line.parse()?;
        let value: StateValue = serde_json::from_value(state.value.clone())
            .map_err(|e| line.error(format!("STATE value is not a ferry state: {e}")))?;
        if self.cfg.dry_run {
            return Ok(());
        }
        self.send()?;
        let text = state.value.to_string();
        let open = self.open_seg();
        let seg = self.seg_mut(open);
        seg.state = Some((value.seq, text, value.bookmarks));
        seg.closed = true;
        self.segs.push_back(Segment::new(open + 1));
        self.collect(false)
    }

    /// Acknowledge every closed segment whose files all have their outcome, oldest first.
    fn ack_ready(&mut self) -> Result<()> {
        loop {
            let ready = self
                .segs
                .front()
                .is_some_and(|s| s.pending == 0 && s.closed && self.segs.len() > 1);
            if !ready {
                return Ok(());
            }
            let Some(seg) = self.segs.pop_front() else {
                return Ok(());
            };
            self.ack(seg)?;
            // The next segment's results that finished early go out now, in front of its STATE.
            let held = self
                .segs
                .front_mut()
                .map(|s| std::mem::take(&mut s.held))
                .unwrap_or_default();
            for f in &held {
                self.write_result(f)?;
            }
        }
    }

    fn ack(&mut self, seg: Segment) -> Result<()> {
        self.rejects.sync()?;
        let batches: Vec<BatchRow> = seg.batches.into_values().collect();
        if let Some(cp) = &mut self.checkpoint {
            let state = seg.state.as_ref().map(|(seq, text, _)| (*seq, text.as_str()));
            self.store.sync()?;
            cp.ack_files(&self.run_id, self.attempt, state, &batches, &self.target, &seg.files)?;
        }
        if let Some((seq, _, bookmarks)) = seg.state {
            let value = StateValue {
                run_id: self.uploads_run_id(),
                seq,
                bookmarks,
                extra: Map::new(),
            };
            self.out.write_message(&Message::State(State {
                value: serde_json::to_value(value).unwrap_or(Json::Null),
            }))?;
        }
        Ok(())
    }

    fn on_stream_end(&mut self, line: &Line<'_>) -> Result<()> {
        let end: StreamEnd = line.parse()?;
        let Some(s) = self.streams.get_mut(&end.stream) else {
            return Err(line.error(format!("STREAM_END of {:?}, a stream that never started", end.stream)));
        };
        s.ended = true;
        self.outcome.streams += 1;
        if !self.cfg.verify_stream_end {
            return Ok(());
        }
        if let Some(n) = end.files.or(end.rows)
            && n != s.files
        {
            return Err(line.error(format!(
                "stream {} ended saying {n} files, but {} arrived: the stream lost lines on the way",
                end.stream, s.files
            )));
        }
        if let Some(d) = &end.digest
            && d.algo == tree::FILES_DIGEST_ALGO
        {
            let ours = s.digest.take_hex();
            if ours != d.value {
                return Err(line.error(format!(
                    "stream {}: the files that arrived (paths, sizes, SHA-256) do not match the producer's digest",
                    end.stream
                )));
            }
        }
        Ok(())
    }

    /// An ERROR from the export: fatal, it stops the import; about one file (unreadable, or left
    /// out on purpose), that file gets a result saying so, so the application's table can be
    /// marked rather than left pending with nothing saying why.
    fn on_error(&mut self, line: &Line<'_>) -> Result<()> {
        producer_error(line, self.checkpoint.as_mut(), &self.run_id)?;
        let e: ErrorMsg = line.parse()?;
        let Some(path) = e.path.clone() else {
            return Ok(());
        };
        let status = e.left_out().unwrap_or(FileStatus::Unreadable);
        let seg = self.open_seg();
        self.seg_mut(seg).pending += 1;
        let row = FileRow {
            key: path.clone().into_bytes(),
            path: path.into_bytes(),
            size: 0,
            sha256: String::new(),
            etag: None,
            part_size: None,
            status,
            reason: Some(e.message),
            run_id: self.run_id.clone(),
        };
        let stream = e.stream.unwrap_or_else(|| "files".into());
        self.finished(seg, line.no, stream, row, now_rfc3339(), false)
    }

    fn on_end(&mut self) -> Result<()> {
        if self.cfg.dry_run {
            return self.plan_summary();
        }
        self.send()?;
        // Everything sent must have its outcome; what follows the last STATE is acknowledged
        // without one (a producer that ends without a final STATE).
        let open = self.open_seg();
        self.seg_mut(open).closed = true;
        self.segs.push_back(Segment::new(open + 1));
        self.collect(true)?;
        debug_assert_eq!(self.segs.len(), 1);
        self.store.finish();
        if let Some(cp) = &mut self.checkpoint {
            cp.finish_run(&self.run_id, RunStatus::Complete, None)?;
        }
        self.outcome.run_id = self.run_id.clone();
        self.outcome.reject_path = (self.rejects.count > 0).then(|| self.rejects.path.clone());
        self.out.write_message(&Message::StreamEnd(StreamEnd {
            stream: UPLOADS_STREAM.into(),
            status: "complete".into(),
            rows: Some(self.out_rows),
            files: None,
            bytes: None,
            errors: (self.outcome.rejected > 0).then_some(self.outcome.rejected),
            digest: Some(Digest {
                algo: crate::protocol::DIGEST_ALGO.into(),
                value: self.out_digest.take_hex(),
            }),
            extra: Map::new(),
        }))?;
        let mut extra = Map::new();
        extra.insert("uploaded".into(), json!(self.outcome.written));
        extra.insert("present".into(), json!(self.outcome.skipped));
        extra.insert("already_done".into(), json!(self.outcome.already));
        extra.insert("left_out".into(), json!(self.outcome.left_out));
        self.out.write_message(&Message::End(End {
            run_id: self.uploads_run_id(),
            status: "ok".into(),
            streams: Some(1),
            rows: Some(self.out_rows),
            files: Some(self.outcome.received),
            bytes: Some(self.bytes),
            errors: None,
            rejected: Some(self.outcome.rejected),
            skipped: Some(self.outcome.skipped + self.outcome.already),
            finished_at: Some(now_rfc3339()),
            extra,
        }))?;
        self.out.flush()?;
        tracing::info!(
            files = self.outcome.received,
            uploaded = self.outcome.written,
            present = self.outcome.skipped,
            already_done = self.outcome.already,
            not_put = self.outcome.rejected,
            bytes = self.bytes,
            files_per_s = self.progress.rate(self.outcome.written + self.outcome.skipped),
            "import complete"
        );
        if self.outcome.rejected > 0 {
            tracing::warn!(
                files = self.outcome.rejected,
                reject_file = %self.rejects.path.display(),
                "some files were not put"
            );
        }
        Ok(())
    }

    /// A dry run: what would happen to this file, asking the store but changing nothing.
    fn plan_file(&mut self, job: &Job) -> Result<()> {
        let action = match self.store.head(&job.key)? {
            None => Action::Upload,
            Some(info) if info.size == job.size && info.sha256.as_deref() == Some(job.sha256.as_str()) => {
                Action::Present
            }
            Some(_) if job.overwrite => Action::Overwrite,
            Some(_) => Action::Conflict,
        };
        let counts = &mut self.plan;
        match action {
            Action::Upload => counts.upload += 1,
            Action::Present => counts.present += 1,
            Action::Overwrite => counts.overwrite += 1,
            _ => counts.conflict += 1,
        }
        if action != Action::Present {
            counts.bytes_to_send += job.size;
        }
        let mut line = Plan::new(action);
        line.path = Some(job.path.clone());
        line.key = Some(Json::String(String::from_utf8_lossy(&job.key).into_owned()));
        line.size = Some(job.size);
        self.out.write_json(&line, Kind::Other)
    }

    fn plan_summary(&mut self) -> Result<()> {
        let mut line = Plan::new(Action::Summary);
        line.target = Some(self.target.clone());
        line.files = Some(self.plan);
        self.out.write_json(&line, Kind::Other)?;
        self.out.flush()
    }

    fn stop_workers(&mut self) {
        self.jobs = None;
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }

    fn abort(&mut self, status: RunStatus, e: &Error) {
        let _ = self.rejects.sync();
        if self.began {
            record_failure(self.checkpoint.as_mut(), &self.run_id, status, e);
        }
        let _ = self.out.flush();
    }
}
