//! ferry-export of a directory tree: one FILE message per regular file.
//!
//! Contract (besides the table export's):
//! - MUST list files in byte order of their relative paths, so the resume cursor is a path.
//! - MUST read each file once, hashing it on a pool of `jobs` threads (many small files are
//!   latency-bound: several reads are kept in flight), and emit in path order.
//! - MUST NOT emit a FILE whose bytes changed while being hashed; unreadable files and such
//!   changes are non-fatal ERROR messages naming the path.
//! - MUST NOT follow symbolic links unless asked, and never ones leading out of the tree.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::mpsc;
use std::time::Instant;

use serde_json::{Map, Value as Json, json};

use super::emit::{Emitter, begin};
use super::{ExportConfig, ExportOutcome};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, ErrorKind, Result};
use crate::human::{Progress, Unit};
use crate::protocol::{
    Bookmark, Content, Digest, End, ErrorMsg, FileMsg, Message, ObjectSchema, Record, Schema, SourceInfo, StreamEnd,
    StreamWriter, now_rfc3339,
};
use crate::tree::{self, Entry, FileDigest, FileName, Hashed, LeftOut, WalkOptions, Walked};

/// At most this many files between two STATEs: an upload acknowledges (and a re-run skips
/// without a request) in steps this size.
pub const FILES_PER_STATE: u64 = 250;

/// The SCHEMA of a file stream: what a FILE carries, as columns (key: `path`), so that a
/// transform or a Singer target can treat files as rows.
pub fn files_schema(stream: &str) -> Schema {
    let s = |fmt: Option<&str>| {
        let mut p = json!({"type": ["string", "null"]});
        if let Some(f) = fmt {
            p["format"] = json!(f);
        }
        p
    };
    let mut props = Map::new();
    props.insert("path".into(), json!({"type": "string"}));
    props.insert("size".into(), json!({"type": "integer"}));
    props.insert("sha256".into(), json!({"type": "string"}));
    props.insert("mtime".into(), s(Some("date-time")));
    props.insert("mode".into(), json!({"type": ["integer", "null"]}));
    props.insert("content_type".into(), s(None));
    props.insert("path_b64".into(), s(None));
    let mut extra = Map::new();
    extra.insert("x-ferry-files".into(), json!(true));
    let mut schema = Schema::new(stream);
    schema.schema = ObjectSchema {
        type_: json!("object"),
        properties: props,
        extra,
    };
    schema.key_properties = vec!["path".into()];
    schema
}

/// A file's cursor in a bookmark: `{"path": ...}`, or `{"path_b64": ...}` for a non-UTF-8 name.
fn cursor(rel: &[u8]) -> Map<String, Json> {
    let name = FileName::of(rel);
    let mut m = Map::new();
    match name.path_b64 {
        Some(b) => m.insert("path_b64".into(), json!(b)),
        None => m.insert("path".into(), json!(name.path)),
    };
    m
}

fn cursor_bytes(after: &Map<String, Json>) -> Option<Vec<u8>> {
    use base64::Engine as _;
    if let Some(b) = after.get("path_b64").and_then(Json::as_str) {
        return base64::engine::general_purpose::STANDARD.decode(b).ok();
    }
    after.get("path").and_then(Json::as_str).map(|s| s.as_bytes().to_vec())
}

/// Where the files come from.
pub enum Files<'a> {
    Dir(&'a std::path::Path),
    /// `s3://bucket/prefix`: the listing, with each object's SHA-256 from its metadata.
    Bucket(&'a str),
}

/// Export a directory tree or a bucket's listing.
pub fn run<W: Write>(cfg: &ExportConfig, from: Files<'_>, out: &mut StreamWriter<W>) -> Result<ExportOutcome> {
    let stream = cfg.files.stream.clone();
    let (info, root, bucket) = match from {
        Files::Dir(p) => {
            let root = tree::open_root(p)?;
            let info = SourceInfo {
                kind: "dir".into(),
                address: format!("dir:{}", root.display()),
                selection: None,
                shard: None,
            };
            (info, Some(root), None)
        }
        Files::Bucket(url) => {
            let store = crate::connect::objects::s3::S3Store::open(url, &cfg.files.s3)?;
            let info = SourceInfo {
                kind: "s3".into(),
                address: crate::connect::objects::ObjectStore::address(&store),
                selection: None,
                shard: None,
            };
            (info, None, Some((store, url.trim_end_matches('/').to_owned())))
        }
    };
    let info = SourceInfo {
        shard: cfg.shard,
        ..info
    };
    let mut em = begin(cfg, &info, out)?;
    let run_id = em.run_id.clone();
    em.state()?;

    let prior: Option<Bookmark> = em
        .bookmarks
        .get(&stream)
        .and_then(|b| serde_json::from_value(b.clone()).ok());
    let mut outcome = ExportOutcome {
        run_id: run_id.clone(),
        ..Default::default()
    };
    let mut totals = (0u64, 0u64, 0u64); // files, bytes, errors
    if prior.as_ref().is_some_and(|b| b.complete) {
        tracing::info!(stream = %stream, "already complete in the resumed run; nothing to export");
    } else {
        let after = prior.as_ref().and_then(|b| b.after.as_ref()).and_then(cursor_bytes);
        let base = prior.as_ref().and_then(|b| b.rows).unwrap_or(0);
        let mut schema = files_schema(&stream);
        // The tree as it was last exported, for the time left downstream (not for a catch-up
        // pass, which sends only what changed).
        let estimate = match &root {
            Some(r) if cfg.files.since.is_none() => Checkpoint::open_existing(&cfg.state_path)
                .ok()
                .flatten()
                .and_then(|cp| cp.cached_tree_size(&r.display().to_string()).ok().flatten()),
            _ => None,
        };
        if let Some((n, b)) = estimate {
            schema.row_estimate = Some(n);
            schema.byte_estimate = Some(b);
        }
        em.message(&Message::Schema(Box::new(schema)))?;
        totals = match (&root, &bucket) {
            (Some(root), _) => export_tree(cfg, root, &stream, (after, base), estimate, &mut em)?,
            (None, Some((store, url))) => export_bucket(cfg, store, url, &stream, after, base, &mut em)?,
            (None, None) => unreachable!("a source is either"),
        };
        outcome.streams = 1;
        outcome.rows = totals.0;
    }
    em.message(&Message::End(End {
        run_id,
        status: "ok".into(),
        streams: Some(outcome.streams),
        rows: None,
        files: Some(totals.0),
        bytes: Some(totals.1),
        errors: (totals.2 > 0).then_some(totals.2),
        rejected: None,
        skipped: None,
        finished_at: Some(now_rfc3339()),
        extra: Map::new(),
    }))?;
    em.out.flush()?;
    Ok(outcome)
}

/// Whether a file was modified, or changed status (renamed, moved in, permissions), at or after
/// `since`; always true without it.
fn changed_since(meta: Option<&std::fs::Metadata>, since: Option<std::time::SystemTime>) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let Some(since) = since else { return true };
    let Some(m) = meta else {
        return true; // let the read report it
    };
    let at = |secs: i64, nanos: i64| {
        std::time::UNIX_EPOCH + std::time::Duration::new(secs.max(0) as u64, nanos.clamp(0, 999_999_999) as u32)
    };
    at(m.mtime(), m.mtime_nsec()) >= since || at(m.ctime(), m.ctime_nsec()) >= since
}

type Hashed2 = std::result::Result<Hashed, tree::ReadError>;
/// A file's place in the stream, the file, what reading it found, and whether that came from the
/// hash cache (no read).
type Hashing = (u64, Entry, Hashed2, bool);

fn export_tree<W: Write>(
    cfg: &ExportConfig,
    root: &std::path::Path,
    stream: &str,
    (after, base): (Option<Vec<u8>>, u64),
    estimate: Option<(u64, u64)>,
    em: &mut Emitter<'_, W>,
) -> Result<(u64, u64, u64)> {
    let mut hashers = Hashers::start(cfg.files.jobs.max(1))?;
    let mut st = Emit {
        stream: stream.to_owned(),
        digest: FileDigest::default(),
        files: 0,
        bytes: 0,
        errors: 0,
        base,
        since_state: 0,
        last_state: Instant::now(),
        last_rel: after.clone(),
        progress: Progress::new(),
        estimate,
        cache: hash_cache(cfg),
        root_key: root.display().to_string(),
        to_cache: Vec::new(),
        cached: 0,
    };
    let mut skipped_old: u64 = 0;
    let window = hashers.window;
    tree::walk(
        root,
        WalkOptions {
            follow_symlinks: cfg.files.follow_symlinks,
        },
        after.as_deref(),
        |w| {
            let rel = match &w {
                Walked::File(e) => &e.rel,
                Walked::Skipped { rel, .. } | Walked::Problem { rel, .. } => rel,
            };
            if cfg.shard.is_some_and(|s| !s.owns_path(rel)) {
                return Ok(());
            }
            match w {
                Walked::File(entry) => {
                    let meta = std::fs::metadata(&entry.abs).ok();
                    if !changed_since(meta.as_ref(), cfg.files.since) {
                        skipped_old += 1;
                        return Ok(());
                    }
                    let cached = st.cached_version(&entry, meta.as_ref())?;
                    hashers.submit(entry, cached);
                    hashers.drain(window, &mut st, cfg, em)?;
                }
                Walked::Skipped { rel, why, what } => {
                    hashers.drain(0, &mut st, cfg, em)?;
                    st.left_out(em, &rel, &why, what)?;
                }
                Walked::Problem { rel, message } => {
                    // Keep the stream in path order: what was sent before it goes first.
                    hashers.drain(0, &mut st, cfg, em)?;
                    st.problem(em, &rel, &message, "system")?;
                }
            }
            Ok(())
        },
    )?;
    hashers.drain(0, &mut st, cfg, em)?;
    if skipped_old > 0 {
        tracing::info!(files = skipped_old, "unchanged since --since: not read");
    }
    st.flush_cache()?;
    if st.cached > 0 {
        tracing::info!(
            files = st.cached,
            "unchanged since they were last hashed: not read (--rehash reads them)"
        );
    }
    st.end(em)
}

/// The hash cache: a file whose size, times, inode and device are exactly as when it was last
/// hashed is not read again (`--rehash` reads everything).
fn hash_cache(cfg: &ExportConfig) -> Option<Checkpoint> {
    if cfg.files.rehash {
        return None;
    }
    Checkpoint::open(&cfg.state_path)
        .inspect_err(|e| tracing::warn!(error = %e, "no hash cache: every file is read"))
        .ok()
}

/// Files hashed on a pool of threads, their results put back in path order.
struct Hashers {
    pool: rayon::ThreadPool,
    tx: mpsc::Sender<Hashing>,
    rx: mpsc::Receiver<Hashing>,
    /// Reads in flight at most: several per thread, so cold disks always have work queued.
    window: u64,
    /// Files handed over, and the next one to emit, by their order in the walk.
    sent: u64,
    next: u64,
    ready: BTreeMap<u64, (Entry, Hashed2, bool)>,
}

impl Hashers {
    fn start(jobs: usize) -> Result<Hashers> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(jobs)
            .thread_name(|i| format!("ferry-hash-{i}"))
            .build()
            .map_err(|e| Error::new(ErrorKind::Source, format!("starting {jobs} hashing threads: {e}")))?;
        let (tx, rx) = mpsc::channel::<Hashing>();
        Ok(Hashers {
            pool,
            tx,
            rx,
            window: (jobs * 4) as u64,
            sent: 0,
            next: 0,
            ready: BTreeMap::new(),
        })
    }

    /// The next file of the walk: its cached hash, or read and hashed on the pool.
    fn submit(&mut self, entry: Entry, cached: Option<Hashed>) {
        let i = self.sent;
        self.sent += 1;
        match cached {
            Some(h) => {
                self.ready.insert(i, (entry, Ok(h), true));
            }
            None => {
                let tx = self.tx.clone();
                self.pool.spawn(move || {
                    let res = tree::hash_file(&entry.abs);
                    let _ = tx.send((i, entry, res, false));
                });
            }
        }
        while let Ok((i, e, r, c)) = self.rx.try_recv() {
            self.ready.insert(i, (e, r, c));
        }
    }

    /// Emit everything that is ready, in order, waiting for results while more than `limit`
    /// files are in flight.
    fn drain<W: Write>(
        &mut self,
        limit: u64,
        st: &mut Emit,
        cfg: &ExportConfig,
        em: &mut Emitter<'_, W>,
    ) -> Result<()> {
        while self.sent - self.next > limit {
            self.emit_ready(st, cfg, em)?;
            if self.sent - self.next <= limit {
                break;
            }
            let (i, e, r, c) = self
                .rx
                .recv()
                .map_err(|_| Error::new(ErrorKind::Source, "a hashing thread stopped unexpectedly"))?;
            self.ready.insert(i, (e, r, c));
        }
        self.emit_ready(st, cfg, em)
    }

    fn emit_ready<W: Write>(&mut self, st: &mut Emit, cfg: &ExportConfig, em: &mut Emitter<'_, W>) -> Result<()> {
        while let Some((entry, res, cached)) = self.ready.remove(&self.next) {
            st.emit(cfg, em, entry, res, cached)?;
            self.next += 1;
        }
        Ok(())
    }
}

/// A bucket's objects as FILE messages, in key order, strictly after `after`.
fn export_bucket<W: Write>(
    cfg: &ExportConfig,
    store: &crate::connect::objects::s3::S3Store,
    url: &str,
    stream: &str,
    after: Option<Vec<u8>>,
    base: u64,
    em: &mut Emitter<'_, W>,
) -> Result<(u64, u64, u64)> {
    let mut digest = FileDigest::default();
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut since_state = 0u64;
    let mut last_state = Instant::now();
    let mut last: Option<Vec<u8>> = after.clone();
    let bookmark = |files: u64, last: &Option<Vec<u8>>, complete: bool| Bookmark {
        after: last.as_deref().map(cursor),
        rowid: None,
        rows: Some(base + files),
        complete,
        extra: Map::new(),
    };
    for o in store.list(16, false)? {
        if after.as_deref().is_some_and(|a| o.key.as_bytes() <= a)
            || cfg.shard.is_some_and(|s| !s.owns_path(o.key.as_bytes()))
        {
            continue;
        }
        let Some(sha) = o.sha256 else { continue };
        digest.add(o.key.as_bytes(), o.size, &sha);
        let file = FileMsg {
            stream: stream.to_owned(),
            path: o.key.clone(),
            path_b64: None,
            size: o.size,
            sha256: sha,
            content: Content {
                uri: format!("{url}/{}", o.key),
                extra: Map::new(),
            },
            mtime: o.modified,
            mode: None,
            content_type: mime_guess::from_path(&o.key).first_raw().map(str::to_owned),
            etag: o.etag,
            key: None,
            extra: Map::new(),
        };
        emit_file(em, file)?;
        files += 1;
        bytes += o.size;
        last = Some(o.key.into_bytes());
        since_state += 1;
        if since_state >= cfg.state_every.min(FILES_PER_STATE) || last_state.elapsed() >= cfg.state_interval {
            let b = bookmark(files, &last, false);
            em.bookmarks
                .insert(stream.to_owned(), serde_json::to_value(b).unwrap_or(Json::Null));
            em.state()?;
            since_state = 0;
            last_state = Instant::now();
        }
    }
    let end = Ended {
        files,
        bytes,
        errors: 0,
        digest: digest.take_hex(),
    };
    end_stream(em, stream, bookmark(files, &last, true), &end)?;
    Ok((files, bytes, 0))
}

/// What a files stream ended with.
struct Ended {
    files: u64,
    bytes: u64,
    errors: u64,
    /// The stream's digest, hex.
    digest: String,
}

/// The end of a files stream: its complete bookmark in a STATE, then STREAM_END with the
/// counts and the digest.
fn end_stream<W: Write>(em: &mut Emitter<'_, W>, stream: &str, complete: Bookmark, end: &Ended) -> Result<()> {
    em.bookmarks
        .insert(stream.to_owned(), serde_json::to_value(complete).unwrap_or(Json::Null));
    em.state()?;
    em.message(&Message::StreamEnd(StreamEnd {
        stream: stream.to_owned(),
        status: "complete".into(),
        rows: None,
        files: Some(end.files),
        bytes: Some(end.bytes),
        errors: (end.errors > 0).then_some(end.errors),
        digest: Some(Digest {
            algo: tree::FILES_DIGEST_ALGO.into(),
            value: end.digest.clone(),
        }),
        extra: Map::new(),
    }))
}

struct Emit {
    stream: String,
    digest: FileDigest,
    files: u64,
    bytes: u64,
    errors: u64,
    base: u64,
    since_state: u64,
    last_state: Instant,
    last_rel: Option<Vec<u8>>,
    progress: Progress,
    /// Files and bytes the tree held when last exported, for the time left.
    estimate: Option<(u64, u64)>,
    cache: Option<Checkpoint>,
    root_key: String,
    /// Freshly hashed files, to remember.
    to_cache: Vec<(Vec<u8>, tree::Stamp, String)>,
    cached: u64,
}

impl Emit {
    /// The stream is done: its complete bookmark, a STATE, STREAM_END with the counts and digest.
    /// (files, bytes, errors)
    fn end<W: Write>(mut self, em: &mut Emitter<'_, W>) -> Result<(u64, u64, u64)> {
        let stream = self.stream.clone();
        let end = Ended {
            files: self.files,
            bytes: self.bytes,
            errors: self.errors,
            digest: self.digest.take_hex(),
        };
        end_stream(em, &stream, self.bookmark(true), &end)?;
        tracing::info!(
            stream = %stream,
            files = self.files,
            bytes = self.bytes,
            errors = self.errors,
            files_per_s = self.progress.rate(self.files),
            "export complete"
        );
        Ok((self.files, self.bytes, self.errors))
    }

    /// The file as last hashed, when nothing about it moved since.
    fn cached_version(&mut self, entry: &Entry, meta: Option<&std::fs::Metadata>) -> Result<Option<Hashed>> {
        use std::os::unix::fs::MetadataExt as _;
        let (Some(cp), Some(m)) = (&self.cache, meta) else {
            return Ok(None);
        };
        if !m.is_file() {
            return Ok(None);
        }
        let stamp = tree::Stamp::of(m);
        let Some(sha) = cp.cached_hash(&self.root_key, &entry.rel, &stamp)? else {
            return Ok(None);
        };
        let mut raw = [0u8; 32];
        if hex::decode_to_slice(&sha, &mut raw).is_err() {
            return Ok(None);
        }
        self.cached += 1;
        Ok(Some(Hashed {
            size: stamp.size,
            sha256: raw,
            mtime: m.modified().ok(),
            mode: m.mode() & 0o7777,
            stamp,
        }))
    }

    fn flush_cache(&mut self) -> Result<()> {
        if let Some(cp) = &mut self.cache
            && !self.to_cache.is_empty()
        {
            cp.cache_hashes(&self.root_key, &self.to_cache)?;
        }
        self.to_cache.clear();
        Ok(())
    }

    fn bookmark(&self, complete: bool) -> Bookmark {
        Bookmark {
            after: self.last_rel.as_deref().map(cursor),
            rowid: None,
            rows: Some(self.base + self.files),
            complete,
            extra: Map::new(),
        }
    }

    fn emit<W: Write>(
        &mut self,
        cfg: &ExportConfig,
        em: &mut Emitter<'_, W>,
        entry: Entry,
        res: Hashed2,
        cached: bool,
    ) -> Result<()> {
        match res {
            Ok(h) => {
                let name = FileName::of(&entry.rel);
                let sha = h.sha256_hex();
                if !cached && self.cache.is_some() {
                    self.to_cache.push((entry.rel.clone(), h.stamp, sha.clone()));
                    if self.to_cache.len() >= 1000 {
                        self.flush_cache()?;
                    }
                }
                self.digest.add(&entry.rel, h.size, &sha);
                let content_type = mime_guess::from_path(std::path::Path::new(&name.path))
                    .first_raw()
                    .map(str::to_owned);
                let file = FileMsg {
                    stream: self.stream.clone(),
                    path: name.path,
                    path_b64: name.path_b64,
                    size: h.size,
                    sha256: sha,
                    content: Content {
                        uri: tree::file_uri(&entry.abs),
                        extra: Map::new(),
                    },
                    mtime: h.mtime_rfc3339(),
                    mode: Some(h.mode),
                    content_type,
                    etag: None,
                    key: None,
                    extra: Map::new(),
                };
                emit_file(em, file)?;
                self.files += 1;
                self.bytes += h.size;
            }
            Err(e) => {
                let kind = match e {
                    tree::ReadError::Changed(_) => "data",
                    tree::ReadError::Unreadable(_) => "system",
                };
                self.problem(em, &entry.rel, &e.to_string(), kind)?;
            }
        }
        self.last_rel = Some(entry.rel);
        self.since_state += 1;
        if self.since_state >= cfg.state_every.min(FILES_PER_STATE) || self.last_state.elapsed() >= cfg.state_interval {
            // The hashes read so far are kept at every STATE: an export killed next does not
            // read those files again.
            self.flush_cache()?;
            let b = self.bookmark(false);
            em.bookmarks
                .insert(self.stream.clone(), serde_json::to_value(b).unwrap_or(Json::Null));
            em.state()?;
            self.since_state = 0;
            self.last_state = Instant::now();
        }
        let total = self.estimate.map(|(n, _)| n);
        if !self.progress.bar("hashing", self.base + self.files, total, Unit::Files) && self.progress.due() {
            // Files hashed go at the pace of their bytes, cached ones at the pace of the walk:
            // by files is the fairer measure of what is left.
            let eta = self.progress.eta(self.base + self.files, total);
            tracing::info!(
                stream = %self.stream,
                files = self.base + self.files,
                bytes = self.bytes,
                files_per_s = self.progress.rate(self.files),
                mb_per_s = self.progress.rate(self.bytes) / 1_000_000,
                eta = %eta,
                "hashing"
            );
        }
        Ok(())
    }

    /// A file left out on purpose: an ERROR that is not an error, so the import can say so in
    /// its results (`file_status`), and nothing counts it as a failure.
    fn left_out<W: Write>(&mut self, em: &mut Emitter<'_, W>, rel: &[u8], why: &str, what: LeftOut) -> Result<()> {
        tracing::info!(path = %String::from_utf8_lossy(rel), "skipped: {why}");
        let mut extra = Map::new();
        extra.insert(crate::protocol::FILE_STATUS.into(), json!(what.status().as_str()));
        self.file_error(em, rel, why, "data", extra)
    }

    fn problem<W: Write>(&mut self, em: &mut Emitter<'_, W>, rel: &[u8], message: &str, kind: &str) -> Result<()> {
        tracing::warn!(path = %String::from_utf8_lossy(rel), "{message}");
        self.errors += 1;
        self.file_error(em, rel, message, kind, Map::new())
    }

    /// A non-fatal ERROR about one file, naming it.
    fn file_error<W: Write>(
        &self,
        em: &mut Emitter<'_, W>,
        rel: &[u8],
        message: &str,
        failure_type: &str,
        extra: Map<String, Json>,
    ) -> Result<()> {
        let path = String::from_utf8_lossy(rel).into_owned();
        em.message(&Message::Error(ErrorMsg {
            failure_type: failure_type.into(),
            message: format!("{path}: {message}"),
            fatal: false,
            stream: Some(self.stream.clone()),
            scope: Some("record".into()),
            key: None,
            path: Some(path),
            stage: Some("export".into()),
            extra,
        }))
    }
}

/// A FILE message, or for Singer targets the RECORD that stands for it.
fn emit_file<W: Write>(em: &mut Emitter<'_, W>, file: FileMsg) -> Result<()> {
    if em.singer {
        em.message(&Message::Record(singer_record(&file)))
    } else {
        em.message(&Message::File(Box::new(file)))
    }
}

/// A FILE as a RECORD of its stream, for Singer targets.
fn singer_record(f: &FileMsg) -> Record {
    let record = serde_json::Map::from_iter([
        ("path".to_owned(), json!(f.path)),
        ("size".to_owned(), json!(f.size)),
        ("sha256".to_owned(), json!(f.sha256)),
        ("mtime".to_owned(), json!(f.mtime)),
        ("mode".to_owned(), json!(f.mode)),
        ("content_type".to_owned(), json!(f.content_type)),
        ("path_b64".to_owned(), json!(f.path_b64)),
    ]);
    Record {
        stream: f.stream.clone(),
        record,
        op: None,
        time_extracted: None,
        extra: Map::new(),
    }
}
