//! ferry-export: a store out as a stream.
//!
//! Contract:
//! - MUST write BEGIN, then a STATE (the resume point: empty bookmarks for a fresh run), then for
//!   each stream, parents before children: SCHEMA, its RECORDs in key order, a STATE whose bookmark
//!   is marked complete, STREAM_END with the row count and digest; then END.
//! - MUST emit a STATE every `state_every` rows or `state_interval`, whichever comes first.
//! - MUST read the whole export from one snapshot of the source.
//! - With `resume`, MUST continue the last import run from this source recorded in the state file,
//!   with the same run id, starting strictly after its last acknowledged STATE.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Map, Value as Json};

use crate::address::Address;
use crate::checkpoint::Checkpoint;
use crate::connect::{self, RowAccess, Selection};
use crate::error::Result;
use crate::human::{Progress, Unit};
use crate::protocol::{
    Begin, Bookmark, DIGEST_ALGO, Digest, End, Kind, Message, PROTOCOL, SourceInfo, State, StateValue, StreamEnd,
    StreamWriter, new_run_id, now_rfc3339, producer,
};
use crate::row::{RowShape, StreamDigest};
use crate::value::{self, Value};

#[derive(Debug, Clone)]
pub struct ExportConfig {
    pub source: Address,
    pub selection: Selection,
    pub state_every: u64,
    pub state_interval: Duration,
    pub resume: bool,
    pub state_path: PathBuf,
    /// Emit only SCHEMA, RECORD and STATE, for Singer targets.
    pub singer: bool,
    /// For a directory: how to walk and hash it.
    pub files: FilesOptions,
    /// An entity export: the rows these pick out (and, with `follow_fks`, every row that
    /// references them, transitively) instead of `selection`.
    pub roots: Vec<crate::stage::entity::Root>,
    pub follow_fks: bool,
}

impl ExportConfig {
    /// An export of `selection` from `source` with every other setting at its default.
    pub fn of(source: Address, selection: Selection, state_path: PathBuf) -> ExportConfig {
        ExportConfig {
            source,
            selection,
            state_every: 10_000,
            state_interval: Duration::from_secs(1),
            resume: false,
            state_path,
            singer: false,
            files: FilesOptions::default(),
            roots: Vec::new(),
            follow_fks: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct FilesOptions {
    /// The stream's name.
    pub stream: String,
    pub follow_symlinks: bool,
    /// Files hashed at once.
    pub jobs: usize,
    /// Only files created, changed or moved in since this instant (their modification or status
    /// change time): the catch-up pass before a cutover.
    pub since: Option<std::time::SystemTime>,
    /// Read every file, ignoring the hash cache in the state file.
    pub rehash: bool,
    /// S3: endpoint and region (the environment gives the rest).
    pub s3: crate::connect::objects::s3::S3Settings,
}

impl Default for FilesOptions {
    fn default() -> Self {
        FilesOptions {
            stream: "files".into(),
            follow_symlinks: false,
            jobs: 8,
            since: None,
            rehash: false,
            s3: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ExportOutcome {
    pub run_id: String,
    pub streams: u64,
    pub rows: u64,
}

/// The stream an export writes: messages (filtered for Singer), STATEs with the bookmarks so far.
pub(crate) struct Emitter<'w, W: Write> {
    pub(crate) out: &'w mut StreamWriter<W>,
    pub(crate) singer: bool,
    pub(crate) run_id: String,
    seq: u64,
    pub(crate) bookmarks: Map<String, Json>,
    line: Vec<u8>,
}

/// Start an export's stream: a new run, or with `--resume` the last import run from this source,
/// continuing after its last acknowledged STATE. Writes BEGIN.
pub(crate) fn begin<'w, W: Write>(
    cfg: &ExportConfig,
    info: &SourceInfo,
    out: &'w mut StreamWriter<W>,
) -> Result<Emitter<'w, W>> {
    let mut run_id = new_run_id();
    let mut resumed: Option<StateValue> = None;
    if cfg.resume {
        let point = Checkpoint::open_existing(&cfg.state_path)?
            .map(|cp| cp.resume_point(&info.identity()))
            .transpose()?
            .flatten();
        match point {
            None => tracing::warn!(
                source = %info.address,
                state = %cfg.state_path.display(),
                "--resume: no earlier import from this source in the state file; starting from the beginning"
            ),
            Some(p) => {
                tracing::info!(run = %p.run_id, status = %p.status, "resuming run");
                run_id = p.run_id;
                resumed = p.state;
            }
        }
    }
    let mut em = Emitter {
        out,
        singer: cfg.singer,
        run_id: run_id.clone(),
        seq: resumed.as_ref().map_or(0, |s| s.seq + 1),
        bookmarks: resumed.map(|s| s.bookmarks).unwrap_or_default(),
        line: Vec::with_capacity(4096),
    };
    em.message(&Message::Begin(Begin {
        protocol: PROTOCOL.into(),
        run_id,
        producer: Some(producer("ferry-export")),
        source: Some(info.clone()),
        started_at: Some(now_rfc3339()),
        extra: Map::new(),
    }))?;
    Ok(em)
}

impl<W: Write> Emitter<'_, W> {
    pub(crate) fn message(&mut self, m: &Message) -> Result<()> {
        if self.singer && !matches!(m.kind(), Kind::Schema | Kind::Record | Kind::State) {
            tracing::info!(message = %serde_json::to_string(m).unwrap_or_default(), "not sent in Singer mode");
            return Ok(());
        }
        self.out.write_message(m)
    }

    pub(crate) fn state(&mut self) -> Result<()> {
        let value = StateValue {
            run_id: self.run_id.clone(),
            seq: self.seq,
            bookmarks: self.bookmarks.clone(),
            extra: Map::new(),
        };
        self.seq += 1;
        let value = serde_json::to_value(value).unwrap_or(Json::Null);
        self.message(&Message::State(State { value }))
    }
}

pub fn run<W: Write>(cfg: &ExportConfig, out: &mut StreamWriter<W>) -> Result<ExportOutcome> {
    match &cfg.source {
        Address::Dir(root) => {
            return crate::stage::export_files::run(cfg, crate::stage::export_files::Files::Dir(root), out);
        }
        Address::S3(url) => {
            return crate::stage::export_files::run(cfg, crate::stage::export_files::Files::Bucket(url), out);
        }
        _ => {}
    }
    let mut source = connect::open_source(&cfg.source)?;
    let mut info = source.info();
    let selection = if cfg.roots.is_empty() {
        cfg.selection.clone()
    } else {
        let all = source.discover(&Selection {
            exclude: cfg.selection.exclude.clone(),
            ..Default::default()
        })?;
        let subset = crate::stage::entity::selection(&all, &cfg.roots, cfg.follow_fks)?;
        tracing::info!(
            tables = subset.tables.len(),
            "entity export: {}",
            subset.tables.join(", ")
        );
        subset
    };
    info.selection = selection.describe();

    // Where to start: fresh, or after the last acknowledged STATE of the last run from here.
    let plans = source.discover(&selection)?;
    let mut em = begin(cfg, &info, out)?;
    let run_id = em.run_id.clone();
    // A table that cannot resume after a cursor starts over, and says so in its bookmark.
    for plan in &plans {
        if !plan.resumable && em.bookmarks.contains_key(&plan.schema.stream) {
            em.bookmarks.remove(&plan.schema.stream);
        }
    }
    em.state()?;

    let mut outcome = ExportOutcome {
        run_id: run_id.clone(),
        ..Default::default()
    };
    let mut progress = Progress::new();
    let expected: Option<u64> = plans.iter().map(|p| p.schema.row_estimate).sum();
    for plan in &plans {
        let stream = plan.schema.stream.clone();
        let prior: Option<Bookmark> = em
            .bookmarks
            .get(&stream)
            .and_then(|b| serde_json::from_value(b.clone()).ok());
        if prior.as_ref().is_some_and(|b| b.complete) {
            tracing::info!(stream = %stream, "already complete in the resumed run; skipped");
            continue;
        }
        let after = prior.as_ref().filter(|b| b.after.is_some() || b.rowid.is_some());
        let base = prior.as_ref().and_then(|b| b.rows).unwrap_or(0);
        let shape = RowShape::from_schema(&plan.schema)?;
        em.message(&Message::Schema(Box::new(plan.schema.clone())))?;

        let mut prefix = Vec::from(&br#"{"type":"RECORD","stream":"#[..]);
        value::write_str(&stream, &mut prefix);
        prefix.extend_from_slice(br#","record":"#);

        let mut digest = StreamDigest::default();
        let mut rows: u64 = 0;
        let mut since_state: u64 = 0;
        let mut last_state = Instant::now();
        // The cursor: the last row's key values (at their columns' positions) and rowid.
        let mut last_row: Vec<Value> = vec![Value::Null; shape.len()];
        let mut last_rowid: Option<i64> = None;
        let mut has_cursor = false;
        let bookmark = |rows: u64, last: &[Value], rowid: Option<i64>, has_cursor: bool, complete: bool| -> Json {
            let after = match shape.key_json(|i| last[i].as_ref()) {
                Json::Object(m) if has_cursor && !shape.key.is_empty() => Some(m),
                _ => None,
            };
            let b = Bookmark {
                after,
                rowid,
                rows: Some(base + rows),
                complete,
                extra: Map::new(),
            };
            serde_json::to_value(b).unwrap_or(Json::Null)
        };
        // A resumed stream keeps its cursor until a row moves it.
        if let Some(b) = after {
            last_rowid = b.rowid;
            for &i in &shape.key {
                if let Some(v) = b.after.as_ref().and_then(|a| a.get(&shape.columns[i].name)) {
                    last_row[i] = value::decode_json(v, shape.columns[i].codec).unwrap_or(Value::Null);
                    has_cursor = true;
                }
            }
        }

        source.scan(plan, &shape, after, &mut |row: &dyn RowAccess| {
            em.line.clear();
            em.line.extend_from_slice(&prefix);
            shape.encode_record(|i| row.get(i), &mut em.line);
            em.line.push(b'}');
            em.out.write_line(&em.line, Kind::Record)?;
            digest.add(&shape, |i| row.get(i));
            for &i in &shape.key {
                last_row[i] = row.get(i).to_owned();
            }
            last_rowid = row.rowid();
            has_cursor = true;
            rows += 1;
            since_state += 1;
            if since_state >= cfg.state_every || (rows % 256 == 0 && last_state.elapsed() >= cfg.state_interval) {
                let b = bookmark(rows, &last_row, last_rowid, has_cursor, false);
                em.bookmarks.insert(stream.clone(), b);
                em.state()?;
                since_state = 0;
                last_state = Instant::now();
            }
            if rows % 1024 == 0
                && !progress.bar("exporting", outcome.rows + rows, expected, Unit::Rows)
                && progress.due()
            {
                tracing::info!(stream = %stream, rows = base + rows, rows_per_s = progress.rate(outcome.rows + rows), "exporting");
            }
            Ok(())
        })?;

        let b = bookmark(rows, &last_row, last_rowid, has_cursor, true);
        em.bookmarks.insert(stream.clone(), b);
        em.state()?;
        em.message(&Message::StreamEnd(StreamEnd {
            stream: stream.clone(),
            status: "complete".into(),
            rows: Some(rows),
            files: None,
            bytes: None,
            errors: None,
            digest: Some(Digest {
                algo: DIGEST_ALGO.into(),
                value: digest.take_hex(),
            }),
            extra: Map::new(),
        }))?;
        tracing::debug!(stream = %stream, rows, after = base, "stream exported");
        outcome.streams += 1;
        outcome.rows += rows;
    }
    em.message(&Message::End(End {
        run_id,
        status: "ok".into(),
        streams: Some(outcome.streams),
        rows: Some(outcome.rows),
        files: None,
        bytes: None,
        errors: None,
        rejected: None,
        skipped: None,
        finished_at: Some(now_rfc3339()),
        extra: Map::new(),
    }))?;
    em.out.flush()?;
    tracing::info!(
        streams = outcome.streams,
        rows = outcome.rows,
        rows_per_s = progress.rate(outcome.rows),
        "export complete"
    );
    Ok(outcome)
}
