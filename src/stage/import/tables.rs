//! The import into a table store (SQLite, PostgreSQL, D1): the [`Importer`] that batches rows
//! per stream, writes them with the commit markers at each STATE, and journals them for rollback.
//!
//! One concern, kept whole (over 800 lines): the tables import, whose batching, commits and journal
//! share one state.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};

use serde_json::{Map, Value as Json, json};

use super::ingest::{Rejects, parse_begin, producer_error, record_failure};
use super::{ImportConfig, ImportOutcome};
use crate::checkpoint::{BatchRow, Checkpoint, JournalAction, NewRun, RunStatus};
use crate::connect::{self, LoadOptions, Marker, OnConflict, PlanCounts, Prepared, Reject, Report, RowBatch, Target};
use crate::error::{Error, ErrorKind, Result};
use crate::human::{Progress, Unit};
use crate::protocol::side::{Action, LoadCounts, Plan, RowReject};
use crate::protocol::{
    Begin, DIGEST_ALGO, End, Kind, Line, Message, PROTOCOL, Schema, SourceInfo, StateValue, StreamEnd, StreamReader,
    StreamWriter, new_run_id, now_rfc3339, producer,
};
use crate::row::{RowShape, StreamDigest};
use crate::value::Value;

struct InStream {
    schema: Schema,
    shape: RowShape,
    batch: RowBatch,
    /// The batch holds a change stream's deletes (its keys), not rows to write.
    deletes: bool,
    /// The table held rows before this run.
    had_rows: bool,
    /// Input bytes of the rows in `batch`.
    batch_bytes: usize,
    /// Position of the stream's first row after the last STATE (None: positions unknown).
    base: Option<u64>,
    since: u64,
    /// Rows below this position are already in the target (from its commit marker).
    committed: Option<u64>,
    received: u64,
    already: u64,
    digest: StreamDigest,
    ended: bool,
    /// Counts since the last commit, for the checkpoint's batch rows.
    pending: BatchRow,
    touched: bool,
    plan: PlanCounts,
    table: String,
    /// The table keeps a NULL in the key as NULL (else such a row is rejected).
    null_key: bool,
    /// The table is one an unfinished run of the same source made (`Prepared::continued`).
    continued: bool,
    /// Positions count from the stream's first row in this run (not an `export --resume`): the
    /// digest of the rows so far is the digest of a prefix of the stream.
    from_start: bool,
    /// The digest of every row, once the stream has ended (`digest` starts over then).
    final_digest: Option<String>,
    /// A row went to the target (or the reject file) in this run, not skipped as already there.
    wrote: bool,
    /// The rows an earlier run committed and this one skips by position: how many, the digest
    /// the earlier run recorded for the first `.1` of them, and that run. They must be the same
    /// rows, or skipping them loses or doubles rows.
    skipping: Option<Skipping>,
}

/// What an earlier run committed of a stream, checked as this run skips it.
#[derive(Debug, Clone)]
struct Skipping {
    run_id: String,
    /// Rows committed (`u64::MAX`: the stream is complete; `total` says how many it had).
    committed: u64,
    total: Option<u64>,
    /// The longest prefix whose digest was recorded, and that digest.
    check: Option<(u64, String)>,
}

struct Importer<'w, W: Write> {
    cfg: ImportConfig,
    out: &'w mut StreamWriter<W>,
    target: Box<dyn Target>,
    checkpoint: Option<Checkpoint>,
    run_id: String,
    attempt: i64,
    source: String,
    began: bool,
    singer: bool,
    /// Singer streams named `schema-table` (as Singer SDK taps name them), and the stream each
    /// is imported as (`schema.table`, so into the table).
    singer_names: HashMap<String, String>,
    positions: bool,
    markers: HashMap<String, Marker>,
    /// `rows` of each bookmark in the last STATE.
    bookmark_rows: HashMap<String, u64>,
    streams: HashMap<String, InStream>,
    order: Vec<String>,
    last_ack_line: Option<(u64, u64)>,
    /// Rows written by the commits acknowledged so far.
    written_committed: u64,
    source_kind: Option<String>,
    /// The export's shard and the identity its shards share, when it is one.
    shard: Option<(crate::shard::Shard, String)>,
    /// The latest STATE received, and the STATE lines not yet acknowledged (echoed after the
    /// commit that covers them).
    last_state: Option<(StateValue, String, u64)>,
    unacked: Vec<String>,
    since_commit: (u64, u64, std::time::Instant),
    rejects: Rejects,
    outcome: ImportOutcome,
    progress: Progress,
    /// Rows the streams' SCHEMAs said to expect, for the progress bar.
    expected: Option<u64>,
    uncommitted: bool,
    /// Rollback journal entries of the open transaction, written before it commits.
    journal: Vec<crate::checkpoint::JournalEntry>,
    /// How each stream's writes are journaled, and its table.
    journaling: HashMap<String, (Journaling, String)>,
    /// The journal entry of a stream into a table this run did not make, held back until the
    /// stream writes its first row there: a run that writes nothing into a table (it only
    /// skipped rows done before, or was refused because the source changed) has nothing there
    /// to undo, and must not stand in the way of undoing the run that wrote it.
    held_journal: HashMap<String, crate::checkpoint::JournalEntry>,
    /// A commit on its way to the target (`Target::commit_pipelined`): what to acknowledge once
    /// it has landed.
    pending_ack: Option<Ack>,
    /// The change stream whose rows came last.
    changing: Option<String>,
}

/// What a commit acknowledges: the STATE it covers (seq and text) in the checkpoint with the
/// batches it finished, the STATE lines to echo, and the line of the last of them.
struct Ack {
    state: Option<(u64, String)>,
    batches: Vec<BatchRow>,
    lines: Vec<String>,
    line: Option<(u64, u64)>,
    /// Rows written by the run up to and including this commit.
    written: u64,
}

/// What the rollback journal keeps for a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Journaling {
    /// The run created the table: undoing it drops the table.
    Created,
    /// The table was there and empty: undoing the run empties it.
    Emptied,
    /// Each row's key, and the row it replaced.
    Keys,
    /// The same, kept by the target itself (in its undo table, committed with the rows).
    InTarget,
    /// Nothing more (no key to find rows by, or a target that keeps no journal).
    Off,
}

/// Import a stream into a table store, counting into `outcome` whether it finishes or not.
pub(super) fn run_counted<R: BufRead, W: Write>(
    cfg: &ImportConfig,
    input: R,
    out: &mut StreamWriter<W>,
    outcome: &mut ImportOutcome,
) -> Result<()> {
    let target = connect::open_target(&cfg.target, cfg.dry_run, cfg.schema.as_deref())?;
    let checkpoint = if cfg.dry_run {
        None
    } else {
        Some(Checkpoint::open(&cfg.state_path)?)
    };
    let mut imp = Importer {
        cfg: cfg.clone(),
        out,
        target,
        checkpoint,
        run_id: String::new(),
        attempt: 1,
        source: String::new(),
        began: false,
        singer: false,
        singer_names: HashMap::new(),
        positions: false,
        markers: HashMap::new(),
        bookmark_rows: HashMap::new(),
        streams: HashMap::new(),
        order: Vec::new(),
        last_ack_line: None,
        written_committed: 0,
        source_kind: None,
        shard: None,
        last_state: None,
        unacked: Vec::new(),
        since_commit: (0, 0, std::time::Instant::now()),
        // Named once BEGIN gives the run id.
        rejects: Rejects::default(),
        outcome: ImportOutcome::default(),
        progress: Progress::new(),
        expected: None,
        journal: Vec::new(),
        journaling: HashMap::new(),
        held_journal: HashMap::new(),
        pending_ack: None,
        changing: None,
        uncommitted: false,
    };
    let mut reader = StreamReader::new(input, cfg.max_line);
    let result = imp.consume(&mut reader);
    if let Err(e) = &result {
        imp.abort(RunStatus::after(e), e);
    }
    imp.outcome.run_id = imp.run_id.clone();
    imp.outcome.reject_path = (imp.rejects.count > 0).then(|| imp.rejects.path.clone());
    imp.outcome.acknowledged = imp.last_ack_line;
    *outcome = std::mem::take(&mut imp.outcome);
    result
}

/// What a batch does to the rows under its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writes {
    /// Inserts; a row already there stays (skipped, or refused).
    Insert,
    /// Inserts that replace the row under their key.
    Overwrite,
    /// Deletes.
    Delete,
}

/// What a batch's rows will do to a table whose rollback journal ferry keeps: each row's input
/// line, and either the key it inserts or the row it overwrites (as it was), in the stream's JSON
/// encoding.
struct RowChanges {
    inserted: Vec<(u64, Vec<u8>)>,
    replaced: Vec<(u64, Vec<u8>)>,
}

impl RowChanges {
    /// The journal entry for the rows the target took (those whose line is not in `refused`),
    /// if they changed anything: JSON arrays of the inserted keys and the replaced rows.
    fn entry(self, stream: &str, table: &str, refused: &HashSet<u64>) -> Option<crate::checkpoint::JournalEntry> {
        let array = |rows: Vec<(u64, Vec<u8>)>| {
            let taken: Vec<Vec<u8>> = rows
                .into_iter()
                .filter(|(line, _)| !refused.contains(line))
                .map(|(_, json)| json)
                .collect();
            let mut out = b"[".to_vec();
            out.extend(taken.join(&b","[..]));
            out.push(b']');
            // The stream's encoding is JSON text, UTF-8 throughout.
            String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
        };
        let (inserted, replaced) = (array(self.inserted), array(self.replaced));
        (inserted.len() > 2 || replaced.len() > 2).then(|| crate::checkpoint::JournalEntry {
            stream: stream.to_owned(),
            table: table.to_owned(),
            action: JournalAction::Rows,
            key: Some(inserted),
            before: Some(replaced),
            schema: None,
        })
    }
}

/// What each row of `batch` will change, from the rows now under its keys (`current`): a key
/// it inserts, or (overwriting) the row it replaces; a skipped row, or one refused under
/// `--on-conflict fail`, changes nothing. A delete removes the row there (the whole row is kept
/// to put back), or nothing.
fn row_changes(shape: &RowShape, batch: &RowBatch, current: Vec<Option<Vec<Value>>>, writes: Writes) -> RowChanges {
    let all: Vec<usize> = (0..shape.len()).collect();
    let mut changes = RowChanges {
        inserted: Vec::new(),
        replaced: Vec::new(),
    };
    for (r, before) in current.into_iter().enumerate() {
        let line = batch.lines[r];
        match before {
            None if writes == Writes::Delete => {}
            None => {
                let row = batch.row(r);
                let mut key = Vec::new();
                shape.write_columns(&shape.key, |i| row[i].as_ref(), &mut key);
                changes.inserted.push((line, key));
            }
            Some(b) if writes != Writes::Insert => {
                let mut image = Vec::new();
                shape.write_columns(&all, |i| b[i].as_ref(), &mut image);
                changes.replaced.push((line, image));
            }
            Some(_) => {}
        }
    }
    changes
}

impl<W: Write> Importer<'_, W> {
    fn consume<R: BufRead>(&mut self, reader: &mut StreamReader<R>) -> Result<()> {
        let mut ended = false;
        while let Some(line) = reader.next_line()? {
            if ended {
                return Err(line.error("a message after END: the stream must end with END"));
            }
            if !self.began && line.kind != Kind::Begin {
                self.begin_singer(&line)?;
            }
            match line.kind {
                Kind::Begin => self.on_begin(&line)?,
                Kind::Schema => self.on_schema(&line)?,
                Kind::Record => self.on_record(&line)?,
                Kind::State => self.on_state(&line)?,
                Kind::StreamEnd => self.on_stream_end(&line)?,
                Kind::End => {
                    self.on_end(&line)?;
                    ended = true;
                }
                Kind::File => {
                    return Err(line.error(format!(
                        "FILE messages go to an object store, not to {} (try a dir: or s3:// target)",
                        self.target.address()
                    )));
                }
                Kind::Error => self.on_error(&line)?,
                Kind::Other => {
                    tracing::debug!(line = line.no, kind = %line.head.kind, "unknown message kind ignored")
                }
            }
        }
        if ended {
            // END committed everything; success is declared only once nothing follows it.
            return self.finish();
        }
        if self.singer {
            // A Singer stream has no END: end of input ends it.
            tracing::info!("input ended (a Singer stream has no END): committing what arrived");
            return self.finish();
        }
        // A commit still on its way is acknowledged first, so the message names the last STATE
        // that is really in the target (if it fails, the one before is still true).
        let _ = self.acknowledge(true);
        let since = match self.last_ack_line {
            Some((line, seq)) => format!("the STATE at line {line} (seq {seq})"),
            None => "the start (no STATE was acknowledged)".into(),
        };
        Err(Error::new(
            ErrorKind::Truncated,
            format!(
                "input ended after line {} without END: the producer stopped early; nothing after {since} was committed; re-run the pipeline to finish",
                reader.line_no()
            ),
        ))
    }

    fn load_options(&self) -> LoadOptions {
        LoadOptions {
            create: self.cfg.create,
            on_conflict: self.on_conflict(),
            dry_run: self.cfg.dry_run,
            source: self.source.clone(),
            run_id: self.run_id.clone(),
            source_kind: self.source_kind.clone(),
            journal: !self.cfg.dry_run && self.checkpoint.is_some() && self.cfg.journal_rows,
            naive_utc: self.cfg.naive_utc,
            shard: self.shard.clone(),
        }
    }

    fn start(&mut self, begin: Begin) -> Result<()> {
        self.began = true;
        self.run_id = begin.run_id.clone();
        self.source = begin.source.as_ref().map(SourceInfo::identity).unwrap_or_default();
        self.shard = begin
            .source
            .as_ref()
            .and_then(|s| s.shard.map(|k| (k, s.whole_identity())));
        self.target.shard(self.shard.clone());
        self.positions = begin.producer.as_ref().is_some_and(|p| p.name == "ferry-export");
        self.source_kind = begin.source.as_ref().map(|s| s.kind.clone());
        let target = self.target.address();
        self.rejects = Rejects::for_run(&self.cfg, &self.run_id);
        if let Some(cp) = &mut self.checkpoint {
            self.attempt = cp.start_run(&NewRun {
                run_id: &self.run_id,
                stage: "import",
                source: Some(&self.source),
                source_kind: begin.source.as_ref().map(|s| s.kind.as_str()),
                target: &target,
            })?;
        }
        if !self.cfg.fresh {
            self.markers = self.target.markers(&self.source)?;
            // A stream completed by an earlier run whose indexes were not built yet (a crash
            // right after its last commit): build them now.
            let done: Vec<String> = self
                .markers
                .values()
                .filter(|m| m.complete)
                .map(|m| m.stream.clone())
                .collect();
            for stream in done {
                for ddl in self.target.finish_stream(&self.source, &stream)? {
                    tracing::info!(stream = %stream, sql = %ddl, "built a deferred index");
                }
            }
        }
        if !self.cfg.dry_run {
            let mut extra = Map::new();
            extra.insert(
                "target".into(),
                json!({"kind": self.cfg.target.kind(), "address": target}),
            );
            self.announce(&Message::Begin(Begin {
                protocol: PROTOCOL.into(),
                run_id: self.run_id.clone(),
                producer: Some(producer("ferry-import")),
                source: begin.source,
                started_at: Some(now_rfc3339()),
                extra,
            }))?;
        }
        Ok(())
    }

    fn begin_singer(&mut self, line: &Line<'_>) -> Result<()> {
        tracing::warn!(
            line = line.no,
            "the input has no BEGIN: reading it as a Singer stream (end of input ends it)"
        );
        self.singer = true;
        self.start(Begin {
            protocol: PROTOCOL.into(),
            run_id: new_run_id(),
            producer: None,
            source: None,
            started_at: None,
            extra: Map::new(),
        })
    }

    fn on_begin(&mut self, line: &Line<'_>) -> Result<()> {
        let begin = parse_begin(line, self.began)?;
        self.start(begin)
    }

    /// The rollback journal's entry for a stream: how its writes will be undone (the table
    /// dropped or emptied, the rows by key, the target's own undo table, or not at all).
    fn journal_stream(&mut self, name: &str, prepared: &Prepared, shape: &RowShape, schema_text: &str) {
        let created = !prepared.created.is_empty() || prepared.continued;
        let mode = if created {
            Journaling::Created
        } else if prepared.empty {
            Journaling::Emptied
        } else if prepared.undo.is_some() {
            Journaling::InTarget
        } else if self.shard.is_some() {
            // A table the shards share: undone only as a whole (`ferry rollback` says so).
            Journaling::Off
        } else if !self.cfg.journal_rows {
            tracing::warn!(stream = %name, "--no-rollback-journal: a rollback of this run cannot undo its rows in the existing table {}", prepared.table);
            Journaling::Off
        } else if shape.key.is_empty() {
            tracing::warn!(stream = %name, "the stream has no key: a rollback of this run cannot undo its rows in the existing table {}", prepared.table);
            Journaling::Off
        } else {
            Journaling::Keys
        };
        self.journaling.insert(name.to_owned(), (mode, prepared.table.clone()));
        let entry = crate::checkpoint::JournalEntry {
            stream: name.to_owned(),
            table: prepared.table.clone(),
            action: match mode {
                Journaling::Created => JournalAction::Create,
                Journaling::Emptied => JournalAction::Empty,
                Journaling::InTarget => JournalAction::Undo,
                // Its rows stay when the run is undone, and the rollback plan says so.
                Journaling::Off => JournalAction::Unjournaled,
                // The stream's shape, for the rows entries that follow.
                Journaling::Keys => JournalAction::Stream,
            },
            // Where the target keeps the table (and its undo journal), in its own SQL.
            key: prepared
                .sql_name
                .as_ref()
                .map(|sql| json!({"sql": sql, "undo": prepared.undo}).to_string()),
            before: None,
            schema: Some(schema_text.to_owned()),
        };
        // The target's own undo table is made now, whatever the stream writes.
        if prepared.created.is_empty() && mode != Journaling::InTarget {
            self.held_journal.insert(name.to_owned(), entry);
        } else {
            self.journal.push(entry);
        }
    }

    fn on_schema(&mut self, line: &Line<'_>) -> Result<()> {
        let mut schema: Schema = line.parse()?;
        let renamed = self.singer_rename(&mut schema);
        let schema_text = renamed.as_deref().unwrap_or(line.text);
        let shape = RowShape::from_schema(&schema).map_err(|e| e.context(format!("line {}", line.no)))?;
        let name = schema.stream.clone();
        reserved(&name).map_err(|e| line.error(e))?;
        if let Some(s) = self.streams.get(&name) {
            if s.schema == schema {
                return Ok(());
            }
            if s.ended {
                return Err(line.error("a SCHEMA after the stream's STREAM_END"));
            }
            if s.schema.key_properties != schema.key_properties {
                return Err(line.error(key_changed(&s.schema, &schema)));
            }
            // The shape changed: rows already buffered go in under the old one.
            self.flush_stream(&name)?;
        }
        if !self.streams.contains_key(&name)
            && let Some(rows) = schema.row_estimate
        {
            self.expected = Some(self.expected.unwrap_or(0) + rows);
            if let Some(cp) = self.checkpoint.as_mut() {
                cp.expect_rows(&self.run_id, rows)?;
            }
        }
        let mut opts = self.load_options();
        if schema.changes {
            opts.on_conflict = self.changes_conflict(&schema, line)?;
        }
        let prepared = self
            .target
            .prepare(&schema, &shape, &opts)
            .map_err(|e| e.context(format!("line {}", line.no)))?;
        self.uncommitted |= !prepared.created.is_empty();
        if self.cfg.fresh && prepared.continued {
            return Err(line.error(fresh_over_continued(&prepared.table)));
        }
        if !self.cfg.dry_run && self.checkpoint.is_some() && !self.journaling.contains_key(&name) {
            self.journal_stream(&name, &prepared, &shape, schema_text);
        }
        if self.cfg.dry_run {
            let statements = (prepared.created.iter().map(|sql| (Action::CreateTable, sql)))
                .chain(prepared.deferred.iter().map(|sql| (Action::CreateIndex, sql)));
            for (action, sql) in statements {
                let mut line = Plan::new(action);
                line.stream = Some(name.clone());
                line.table = Some(prepared.table.clone());
                line.sql = Some(sql.clone());
                self.out.write_json(&line, Kind::Other)?;
            }
        } else if !prepared.created.is_empty() {
            tracing::info!(stream = %name, table = %prepared.table, "created table");
        }
        let bookmark = schema.bookmark_name().to_owned();
        let marker = self.marker_for(&schema, &prepared);
        let marker = marker.as_ref();
        let committed = match marker {
            Some(m) if m.complete => Some(u64::MAX),
            Some(m) => m.position,
            None => None,
        };
        let base = self
            .positions
            .then(|| self.bookmark_rows.get(&bookmark).copied().unwrap_or(0));
        let skipping = match (marker, committed, base) {
            (Some(m), Some(c), Some(0)) if !self.cfg.fresh => Some(self.skipping(m, c, &name)?),
            _ => None,
        };
        // A stream that starts after rows the target does not have: an `export --resume` from
        // further than the target got (it lost rows it had committed, or its markers changed).
        let first_schema = !self.streams.contains_key(&name);
        if let (Some(b), true, false, false) = (base, first_schema, self.cfg.fresh, schema.changes) {
            let has = committed.unwrap_or(0);
            if b > has {
                return Err(line.error(format!(
                    "the stream starts at row {b}, but the target holds only the first {has} rows of it: the target lost rows it had committed, or its _ferry_commits table was changed; re-run the export without --resume (or import with --fresh)"
                )));
            }
        }
        let ncols = shape.len();
        match self.streams.get_mut(&name) {
            Some(s) => {
                s.schema = schema;
                s.shape = shape;
                s.batch = RowBatch::new(ncols);
                s.table = prepared.table;
                s.null_key = prepared.null_key;
                s.continued = prepared.continued;
            }
            None => {
                self.order.push(name.clone());
                self.streams.insert(
                    name.clone(),
                    InStream {
                        schema,
                        shape,
                        batch: RowBatch::new(ncols),
                        deletes: false,
                        had_rows: prepared.existed && !prepared.empty,
                        batch_bytes: 0,
                        base,
                        since: 0,
                        committed,
                        received: 0,
                        already: 0,
                        digest: StreamDigest::default(),
                        ended: false,
                        pending: BatchRow {
                            stream: name,
                            started_at: now_rfc3339(),
                            ..Default::default()
                        },
                        touched: true,
                        plan: PlanCounts::default(),
                        table: prepared.table,
                        null_key: prepared.null_key,
                        continued: prepared.continued,
                        from_start: base == Some(0),
                        final_digest: None,
                        wrote: false,
                        skipping,
                    },
                );
            }
        }
        Ok(())
    }

    /// The commit marker an earlier run left for the stream of `schema`, if it still says what
    /// is in its table (`prepared`), said in the log.
    fn marker_for(&self, schema: &Schema, prepared: &Prepared) -> Option<Marker> {
        let name = &schema.stream;
        // A change stream is applied whole, never skipped by position: a change applied again
        // changes nothing (the row as it is, or a delete), and a resumed pass may send other
        // changes than the first attempt did (what it reads is the source as it is now).
        let mut marker = self.markers.get(schema.bookmark_name()).filter(|_| !schema.changes);
        // A marker says rows are in the table; a table that is new or empty holds none of them
        // (it was dropped or emptied since, or the stream now goes to another table): the marker
        // no longer describes anything, and skipping by it would lose rows.
        if let Some(m) = marker
            && (!prepared.existed || prepared.empty)
            && (m.complete || m.position.unwrap_or(0) > 0)
        {
            tracing::warn!(stream = %name, table = %prepared.table, run = %m.run_id, "an earlier run's commit marker counts rows this table does not hold (it is new or empty): importing the stream from its start");
            marker = None;
        }
        let m = marker?;
        let what = if m.complete {
            "complete".to_string()
        } else {
            format!("{} rows", m.position.unwrap_or(0))
        };
        if self.positions {
            tracing::info!(stream = %name, already = %what, run = %m.run_id, "already imported by an earlier run: skipping those rows (--fresh to import them again)");
        } else if self.singer {
            // A Singer tap's next (incremental) run: its rows are upserted by key.
            tracing::info!(stream = %name, on_conflict = ?self.on_conflict(), "imported before by an earlier run; the Singer stream's rows are written by key");
        } else {
            tracing::warn!(stream = %name, "an earlier run imported part of this stream, but the producer gives no positions: rows are written again (by key)");
        }
        Some(m.clone())
    }

    /// How a change stream's upserts meet the row under their key: they replace it. A change
    /// stream needs a key, and refuses an `--on-conflict` that would lose its updates.
    fn changes_conflict(&self, schema: &Schema, line: &Line<'_>) -> Result<OnConflict> {
        if schema.key_properties.is_empty() {
            return Err(line.error(format!(
                "stream {} carries changes but has no key: a change names its row by key (give the table a primary key, or export it whole)",
                schema.stream
            )));
        }
        match self.cfg.on_conflict {
            Some(c) if c != OnConflict::Overwrite => Err(line.error(format!(
                "stream {} carries changes, whose upserts replace the row under their key: --on-conflict {} would lose updates (leave it out)",
                schema.stream,
                format!("{c:?}").to_lowercase()
            ))),
            _ => Ok(OnConflict::Overwrite),
        }
    }

    /// What this run will skip of a stream an earlier run committed `committed` rows of (as
    /// its marker `m` says), with the digest to check them by: they must be the same rows.
    fn skipping(&self, m: &Marker, committed: u64, stream: &str) -> Result<Skipping> {
        let total = m.complete.then_some(m.position).flatten();
        let rows = if m.complete { total.unwrap_or(0) } else { committed };
        let check = match &self.checkpoint {
            Some(cp) => cp.prefix_digest(&self.source, &self.target.address(), stream, rows)?,
            None => None,
        };
        Ok(Skipping {
            run_id: m.run_id.clone(),
            committed,
            total,
            check,
        })
    }

    /// A Singer stream named the SDK's way (`public-orders`) goes on as its table's stream
    /// (`public.orders`), its RECORDs with it: the SCHEMA as it now reads, if renamed.
    fn singer_rename(&mut self, schema: &mut Schema) -> Option<String> {
        if !self.singer {
            return None;
        }
        let table = singer_stream_table(&schema.stream)?;
        tracing::info!(stream = %schema.stream, table = %connect::table_name_for(&table), "a Singer stream named schema-table: imported into its table");
        self.singer_names.insert(schema.stream.clone(), table.clone());
        schema.stream = table;
        Some(serde_json::to_string(&schema).unwrap_or_default())
    }

    fn on_record(&mut self, line: &Line<'_>) -> Result<()> {
        let singer_name = self.singer_names.get(line.stream()).cloned();
        let name = singer_name.as_deref().unwrap_or(line.stream());
        let record = line.record_text()?;
        let delete = match line.head.op.as_deref() {
            None => false,
            Some(op) if op.eq_ignore_ascii_case("upsert") => false,
            Some(op) if op.eq_ignore_ascii_case("delete") => true,
            Some(op) => return Err(line.error(format!("op {op:?} is not a change ferry knows (upsert or delete)"))),
        };
        let (write_rows, write_bytes) = (self.cfg.write_rows, self.cfg.write_bytes);
        let Some(s) = self.streams.get_mut(name) else {
            return Err(line.error("a RECORD before its stream's SCHEMA"));
        };
        if s.ended {
            return Err(line.error("a RECORD after its stream's STREAM_END"));
        }
        if delete && !s.schema.changes {
            return Err(line.error(format!(
                "a delete in stream {name}, whose SCHEMA does not declare \"changes\": true (only a change stream carries deletes)"
            )));
        }
        if s.schema.changes && self.changing.as_deref() != Some(name) {
            // Changes to several tables go in the order they came (a parent's row before its
            // children's, their deletes before the parent's).
            if let Some(other) = self.changing.replace(name.to_owned()) {
                self.flush_stream(&other)?;
                return self.on_record(line);
            }
        }
        if s.deletes != delete && !s.batch.is_empty() {
            // Upserts and deletes go to the target in the order they came.
            let name = name.to_owned();
            self.flush_stream(&name)?;
            return self.on_record(line);
        }
        s.deletes = delete;
        let slot = s.batch.push_row(line.no);
        if let Err(e) = s.shape.decode_text(record, slot) {
            s.batch.pop_row();
            // Read on the fast path, the text may hold more than the record: read it in full.
            return match line.is_fast() {
                true => self.on_record(&line.full()?),
                false => Err(line.error(e)),
            };
        }
        let position = s.base.map(|b| b + s.since);
        s.since += 1;
        s.received += 1;
        s.touched = true;
        let n = s.batch.len();
        let row = s.batch.row(n - 1);
        match delete {
            true => s.digest.add_delete(&s.shape, row),
            false => s.digest.add_row(&s.shape, row),
        }
        if let (Some(k), Some(p)) = (&s.skipping, position)
            && let Some((rows, digest)) = &k.check
            && p + 1 == *rows
        {
            if s.digest.peek_hex() != *digest {
                return Err(line.error(source_changed(
                    &k.run_id,
                    *rows,
                    !s.shape.key.is_empty() && !s.continued,
                )));
            }
            tracing::debug!(stream = %name, rows, "the rows an earlier run committed are the same rows");
        }
        s.pending.rows += 1;
        s.pending.bytes += line.text.len() as u64 + 1;
        let already = matches!((position, s.committed), (Some(p), Some(c)) if p < c);
        let null_key = !s.null_key && shape_has_null_key(&s.shape, row);
        s.wrote |= !already;
        if already {
            s.already += 1;
            s.pending.skipped += 1;
            s.batch.pop_row();
        } else if delete && shape_has_null_key(&s.shape, row) {
            return Err(line.error(format!(
                "a delete without its whole key ({}): a delete names the row it removes by every key column",
                s.shape.key_names().join(", ")
            )));
        } else if null_key {
            // The target would invent a key for it (SQLite's rowid) or refuse the key only once
            // it is built, after every row: refused here, with its line.
            let reason = format!(
                "the key ({}) holds a NULL: a row needs its whole key (the target would invent one, or refuse the key when it is built)",
                s.shape.key_names().join(", ")
            );
            let reject = Reject::of(&s.shape, &s.batch, n - 1, reason);
            s.batch.pop_row();
            self.outcome.received += 1;
            if self.cfg.dry_run {
                s.plan.reject += 1;
                return Ok(());
            }
            if let Some(p) = position {
                s.pending.first_position.get_or_insert(p);
                s.pending.last_position = Some(p);
            }
            // A batch's rows are consecutive in the stream: the rows before this one go first.
            let name = name.to_owned();
            self.flush_stream(&name)?;
            self.apply(vec![Report {
                stream: name,
                rejects: vec![reject],
                ..Default::default()
            }])?;
            return Ok(());
        } else {
            s.batch_bytes += line.text.len();
            if s.batch.len() == 1 {
                s.batch.first_position = position;
            }
            if let Some(p) = position {
                s.pending.first_position.get_or_insert(p);
                s.pending.last_position = Some(p);
            }
        }
        self.outcome.received += 1;
        self.since_commit.0 += 1;
        self.since_commit.1 += line.text.len() as u64;
        if s.batch.len() >= write_rows || s.batch_bytes >= write_bytes {
            let name = name.to_owned();
            self.flush_stream(&name)?;
        }
        if self.outcome.received.is_multiple_of(1024)
            && !self.progress.bar(
                "importing",
                self.outcome.received,
                self.cfg
                    .input_totals
                    .map(|t| t.rows)
                    .filter(|r| *r > 0)
                    .or(self.expected),
                Unit::Rows,
            )
            && self.progress.due()
        {
            tracing::info!(
                rows = self.outcome.received,
                written = self.outcome.written,
                rows_per_s = self.progress.rate(self.outcome.received),
                "importing"
            );
        }
        Ok(())
    }

    /// Hand a stream's buffered rows to the target (inside the open transaction).
    fn flush_stream(&mut self, name: &str) -> Result<()> {
        let overwrite = self.on_conflict() == OnConflict::Overwrite;
        let Some(s) = self.streams.get_mut(name) else {
            return Ok(());
        };
        if s.batch.is_empty() {
            return Ok(());
        }
        if self.cfg.dry_run && s.deletes {
            // Each delete removes the row under its key, if it is there.
            s.plan.delete += s.batch.len() as u64;
            s.batch.clear();
            s.batch_bytes = 0;
            return Ok(());
        }
        if self.cfg.dry_run {
            let c = self.target.plan(name, &s.shape, &s.batch)?;
            s.plan.insert += c.insert;
            s.plan.skip += c.skip;
            s.plan.overwrite += c.overwrite;
            s.plan.conflict += c.conflict;
            s.plan.reject += c.reject;
            s.batch.clear();
            s.batch_bytes = 0;
            return Ok(());
        }
        let ncols = s.batch.ncols;
        let batch = std::mem::replace(&mut s.batch, RowBatch::new(ncols));
        tracing::debug!(stream = %name, rows = batch.len(), bytes = s.batch_bytes, "writing a batch");
        s.batch_bytes = 0;
        if let Some(entry) = self.held_journal.remove(name) {
            self.journal.push(entry);
        }
        // The rollback journal of this batch (a target whose journal ferry keeps): what each row
        // will change, read before the write, kept for the rows the target then takes.
        let mut journal = None;
        if let Some((Journaling::Keys, table)) = self.journaling.get(name).cloned() {
            match self.target.current_rows(name, &s.shape, &batch)? {
                Some(current) => {
                    let writes = match (s.deletes, overwrite || s.schema.changes) {
                        (true, _) => Writes::Delete,
                        (false, true) => Writes::Overwrite,
                        (false, false) => Writes::Insert,
                    };
                    journal = Some((table, row_changes(&s.shape, &batch, current, writes)));
                }
                None => {
                    tracing::warn!(stream = %name, "this target keeps no rollback journal: a rollback of this run cannot undo its rows");
                    self.journaling.insert(name.to_owned(), (Journaling::Off, table));
                }
            }
        }
        let reports = match s.deletes {
            true => self.target.delete(name, &s.shape, batch)?,
            false => self.target.write(name, &s.shape, batch)?,
        };
        self.uncommitted = true;
        if let Some((table, changes)) = journal {
            // A row the target refused changed nothing: it is not in the journal, or a rollback
            // would delete (or put back) a row this run never wrote.
            let refused: HashSet<u64> = reports
                .iter()
                .filter(|r| r.stream == name)
                .flat_map(|r| r.rejects.iter().map(|j| j.line))
                .collect();
            if let Some(entry) = changes.entry(name, &table, &refused) {
                self.journal.push(entry);
            }
        }
        self.apply(reports)?;
        self.acknowledge(false)
    }

    /// Count what the target did and put what it refused in the reject file.
    fn apply(&mut self, reports: Vec<Report>) -> Result<()> {
        for report in reports {
            let name = report.stream.as_str();
            if let Some(s) = self.streams.get_mut(name) {
                s.pending.written += report.written;
                s.pending.deleted += report.deleted;
                s.pending.skipped += report.skipped;
                s.pending.rejected += report.rejects.len() as u64;
            }
            self.outcome.written += report.written;
            self.outcome.deleted += report.deleted;
            self.outcome.skipped += report.skipped;
            for r in &report.rejects {
                let entry = RowReject {
                    stream: name,
                    line: r.line,
                    key: &r.key,
                    reason: &r.reason,
                    record: &r.record,
                    run_id: &self.run_id,
                    at: now_rfc3339(),
                };
                self.rejects.write(&entry)?;
                tracing::warn!(stream = %name, line = r.line, reason = %r.reason, "row rejected");
                if self.rejects.count > self.cfg.max_rejects {
                    return Err(Error::data(format!(
                        "more than {} rows rejected (--max-rejects); the last: line {} of stream {name}: {}; see {}",
                        self.cfg.max_rejects,
                        r.line,
                        r.reason,
                        self.rejects.path.display()
                    )));
                }
            }
            self.outcome.rejected = self.rejects.count;
        }
        Ok(())
    }

    /// Commit everything received so far with the markers, then record it in the checkpoint and
    /// acknowledge the STATEs it covers (echoing them).
    fn commit(&mut self, complete: Option<&str>) -> Result<()> {
        self.commit_with(complete, false)
    }

    /// Commit what was written, then acknowledge it. `pipelined`: the target may confirm the
    /// commit later (the importer reads on meanwhile) and the acknowledgement waits for it.
    fn commit_with(&mut self, complete: Option<&str>, pipelined: bool) -> Result<()> {
        // One commit on its way at a time, acknowledged in order.
        self.acknowledge(true)?;
        let names = self.order.clone();
        for name in &names {
            self.flush_stream(name)?;
        }
        // What the target is still writing is settled before the markers say it is there.
        let late = self.target.flush()?;
        self.apply(late)?;
        self.rejects.sync()?;
        let state = self.last_state.as_ref().map(|(v, text, _)| (v.clone(), text.clone()));
        let mut markers = Vec::new();
        let mut batches = Vec::new();
        for name in &names {
            let Some(s) = self.streams.get_mut(name) else {
                continue;
            };
            let bookmark = s.schema.bookmark_name().to_owned();
            let is_complete = complete == Some(name.as_str());
            // A stream whose rows so far were all an earlier run's keeps that run's marker: it
            // says as much, and a rollback of this run must not forget rows it did not write.
            let nothing_new = s.committed.is_some() && !s.wrote && !(is_complete && s.committed != Some(u64::MAX));
            if (s.touched || is_complete) && !nothing_new {
                markers.push(Marker {
                    source: self.source.clone(),
                    stream: bookmark.clone(),
                    run_id: self.run_id.clone(),
                    position: if self.positions {
                        s.base.map(|b| b + s.since)
                    } else {
                        None
                    },
                    complete: is_complete,
                    bookmark: state
                        .as_ref()
                        .and_then(|(v, _)| v.bookmarks.get(&bookmark))
                        .map(|b| b.to_string()),
                });
            }
            if s.pending.rows > 0 || s.pending.written > 0 || s.pending.deleted > 0 {
                // The digest of every row up to the batch's last, for a later run that skips
                // them by position (only when it ends at the last row received).
                let received = s.base.map(|b| b + s.since);
                if s.from_start && received.is_some() && s.pending.last_position.map(|p| p + 1) == received {
                    s.pending.prefix_digest = Some(s.final_digest.clone().unwrap_or_else(|| s.digest.peek_hex()));
                }
                let fresh = BatchRow {
                    stream: name.clone(),
                    started_at: now_rfc3339(),
                    ..Default::default()
                };
                batches.push(std::mem::replace(&mut s.pending, fresh));
            }
            s.touched = false;
        }
        self.since_commit = (0, 0, std::time::Instant::now());
        if self.cfg.dry_run {
            self.unacked.clear();
            return Ok(());
        }
        if !self.journal.is_empty()
            && let Some(cp) = self.checkpoint.as_mut()
        {
            // Written ahead: an entry whose commit never lands has nothing to undo.
            cp.journal_add(&self.run_id, &self.target.address(), &self.journal)?;
            self.journal.clear();
        }
        let ack = Ack {
            state: state
                .filter(|_| !self.unacked.is_empty())
                .map(|(v, text)| (v.seq, text)),
            batches,
            lines: std::mem::take(&mut self.unacked),
            line: self.last_state.as_ref().map(|(v, _, line)| (*line, v.seq)),
            written: self.outcome.written,
        };
        if self.uncommitted || !markers.is_empty() {
            self.uncommitted = false;
            if pipelined {
                self.target.commit_pipelined(&markers)?;
                self.pending_ack = Some(ack);
                return self.acknowledge(false);
            }
            self.target.commit(&markers)?;
        }
        self.ack(ack)
    }

    /// Acknowledge the commit on its way once the target says it landed (waiting when `wait`).
    fn acknowledge(&mut self, wait: bool) -> Result<()> {
        if self.pending_ack.is_some()
            && self.target.landed(wait)?
            && let Some(ack) = self.pending_ack.take()
        {
            self.ack(ack)?;
        }
        Ok(())
    }

    /// Record a landed commit in the checkpoint and echo the STATEs it covers.
    fn ack(&mut self, ack: Ack) -> Result<()> {
        // The rows are in the target from here on, whatever happens to the echo below (a reader
        // gone, an interrupt): the closing line counts them.
        if ack.line.is_some() {
            self.last_ack_line = ack.line;
        }
        self.written_committed = ack.written;
        if let Some(cp) = &mut self.checkpoint
            && (ack.state.is_some() || !ack.batches.is_empty())
        {
            let state = ack.state.as_ref().map(|(seq, text)| (*seq, text.as_str()));
            cp.ack(&self.run_id, self.attempt, state, &ack.batches)?;
        }
        for line in ack.lines {
            if self.cfg.singer_output {
                // What a Singer target prints: the STATE's value alone.
                let value = serde_json::from_str::<Json>(&line).map(|mut l| l["value"].take());
                self.out.write_json(&value.unwrap_or(Json::Null), Kind::State)?;
            } else {
                self.out.write_line(line.as_bytes(), Kind::State)?;
            }
        }
        Ok(())
    }

    /// BEGIN, STREAM_END and END on stdout (not with `--singer`, where only STATE values go).
    fn announce(&mut self, m: &Message) -> Result<()> {
        match self.cfg.singer_output {
            true => Ok(()),
            false => self.out.write_message(m),
        }
    }

    /// What to do with a row whose key is there: as asked, else stop, but for a Singer stream,
    /// which Singer targets upsert by key (a full-table tap run again is not an error).
    fn on_conflict(&self) -> OnConflict {
        self.cfg.on_conflict.unwrap_or(if self.singer {
            OnConflict::Overwrite
        } else {
            OnConflict::Fail
        })
    }

    /// A catch-up pass starts from the watermark an earlier pass from the same source reached
    /// (its bookmark's `replication_key_start`): the target must hold what those passes
    /// brought (rows in its table, or this source's commit marker for the stream), or every row
    /// below the watermark would be missing with nothing said: the earlier passes went into
    /// another target (the state file is the export's, not the target's).
    fn check_watermarks(&self, value: &StateValue, line: &Line<'_>) -> Result<()> {
        for s in self.streams.values().filter(|s| s.schema.changes) {
            let name = s.schema.bookmark_name();
            let start = value.bookmarks.get(name).and_then(|b| b.get("replication_key_start"));
            if let Some(start) = start
                && !s.had_rows
                && !self.markers.contains_key(name)
            {
                return Err(line.error(format!(
                    "stream {name}: this catch-up pass sends only the rows from {start} on, where an earlier pass from this source got to, but {} holds nothing of this stream from this source: the earlier passes went into another target. Give each target its own state file (--state on both stages) so its first pass sends every row",
                    self.target.address()
                )));
            }
        }
        Ok(())
    }

    /// The first STATE of an `export --resume` is the resumed run's last acknowledged one: the
    /// streams it has complete, the export sends nothing of. The target must hold each of them
    /// complete (this source's commit markers say so), or their rows would be missing with
    /// nothing said: the run resumed imported into another target, or was rolled back since.
    fn check_resume_point(&self, value: &StateValue, line: &Line<'_>) -> Result<()> {
        let missing: Vec<&str> = value
            .bookmarks
            .keys()
            .filter(|name| value.bookmark(name).is_some_and(|b| b.complete))
            .filter(|name| !self.markers.get(*name).is_some_and(|m| m.complete))
            .map(String::as_str)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(line.error(format!(
            "this stream resumes run {}, which had {} complete, so the export sends none of their rows; but {} does not hold them complete (that run imported into another target, or was rolled back since{}): nothing was written; run the export without --resume",
            value.run_id,
            missing.join(", "),
            self.target.address(),
            if self.cfg.fresh { ", or --fresh ignores what it holds" } else { "" }
        )))
    }

    fn on_state(&mut self, line: &Line<'_>) -> Result<()> {
        #[derive(serde::Deserialize)]
        struct StateLine {
            value: Json,
        }
        let state: StateLine = line.parse()?;
        let value_text = state.value.to_string();
        let value: StateValue = serde_json::from_value(state.value).unwrap_or_default();
        if self.positions && self.last_state.is_none() && self.streams.is_empty() {
            self.check_resume_point(&value, line)?;
        }
        self.check_watermarks(&value, line)?;
        // Positions move at every STATE, committed or not.
        for s in self.streams.values_mut() {
            let from_state = value.bookmark(s.schema.bookmark_name()).and_then(|b| b.rows);
            s.base = match (from_state, s.base) {
                (Some(rows), _) => Some(rows),
                (None, Some(base)) => Some(base + s.since),
                (None, None) => None,
            };
            s.since = 0;
        }
        for (name, b) in &value.bookmarks {
            if let Some(rows) = b.get("rows").and_then(Json::as_u64) {
                self.bookmark_rows.insert(name.clone(), rows);
            }
        }
        self.last_state = Some((value, value_text, line.no));
        self.unacked.push(line.text.to_owned());
        let every = self.target.commit_every();
        let (rows, bytes, since) = self.since_commit;
        // Changes are committed at every STATE: a follower's STATE ends a pass over the source,
        // and the next may be long in coming; the target should not lag behind it meanwhile.
        let changes = self.streams.values().any(|s| s.schema.changes);
        if changes || rows >= every.rows || bytes >= every.bytes || since.elapsed() >= every.interval {
            self.commit_with(None, true)?;
        }
        Ok(())
    }

    fn on_stream_end(&mut self, line: &Line<'_>) -> Result<()> {
        let end: StreamEnd = line.parse()?;
        let verify = self.cfg.verify_stream_end;
        let Some(s) = self.streams.get_mut(&end.stream) else {
            return Err(line.error("STREAM_END for a stream that had no SCHEMA"));
        };
        if s.ended {
            return Err(line.error("a second STREAM_END for the stream"));
        }
        let digest = s.digest.take_hex();
        if verify {
            if let Some(rows) = end.rows
                && rows != s.received
            {
                return Err(line.error(format!(
                    "STREAM_END says {rows} rows but {} arrived: rows were lost or added on the way (a stage in between that changes rows must recompute STREAM_END; --no-verify skips this check)",
                    s.received
                )));
            }
            if let Some(d) = &end.digest
                && d.algo == DIGEST_ALGO
                && d.value != digest
            {
                return Err(line.error(format!(
                    "STREAM_END digest {} differs from the {} rows that arrived ({digest}): rows were changed on the way (--no-verify skips this check)",
                    d.value, s.received
                )));
            }
        }
        // Fewer rows than an earlier run committed, or (the stream was complete) not as many as
        // it had: the source changed under the positions this run skipped by.
        if let Some(k) = &s.skipping {
            let short = s.received < k.committed.min(k.total.unwrap_or(u64::MAX));
            let other_total = k.total.is_some_and(|t| t != s.received);
            let unchecked = k.check.as_ref().is_some_and(|(rows, _)| s.received < *rows);
            if short || other_total || unchecked {
                let had = k.total.unwrap_or(k.committed);
                return Err(line.error(format!(
                    "{} (it had {had} rows where this run has {})",
                    source_changed(&k.run_id, had, !s.shape.key.is_empty() && !s.continued),
                    s.received
                )));
            }
        }
        self.complete_stream(&end.stream, digest)
    }

    /// A stream's last row has arrived: commit it as complete, build what waited for its end
    /// (keys, indexes) and say so downstream.
    fn complete_stream(&mut self, name: &str, digest: String) -> Result<()> {
        let Some(s) = self.streams.get_mut(name) else {
            return Ok(());
        };
        s.ended = true;
        s.final_digest = Some(digest.clone());
        let name = name.to_owned();
        self.commit(Some(&name))?;
        let s = self.streams.get(&name).map(|s| {
            (
                s.schema.bookmark_name().to_owned(),
                s.received,
                s.already,
                s.plan,
                s.table.clone(),
            )
        });
        let Some((bookmark, received, already, plan, table)) = s else {
            return Ok(());
        };
        if self.cfg.dry_run {
            let mut line = Plan::new(Action::Load);
            line.stream = Some(name.clone());
            line.table = Some(table);
            line.rows = Some(received);
            line.load = Some(LoadCounts {
                already_imported: already,
                insert: plan.insert,
                skip: plan.skip,
                overwrite: plan.overwrite,
                conflict: plan.conflict,
                reject: plan.reject,
                delete: plan.delete,
            });
            self.out.write_json(&line, Kind::Other)?;
        } else {
            for ddl in self.target.finish_stream(&self.source, &bookmark)? {
                tracing::info!(stream = %name, sql = %ddl, "built after the data (keys, indexes, sequences)");
            }
            self.announce(&Message::StreamEnd(StreamEnd::complete_rows(&name, received, digest)))?;
        }
        self.outcome.streams += 1;
        self.outcome.already += already;
        Ok(())
    }

    fn on_end(&mut self, line: &Line<'_>) -> Result<()> {
        let end: End = line.parse()?;
        if end.status != "ok" {
            return Err(line.error(format!(
                "the producer ended with status {:?}: nothing after the last STATE was committed",
                end.status
            )));
        }
        // END is the last barrier: everything before it is committed.
        self.commit(None)
    }

    fn finish(&mut self) -> Result<()> {
        // The producer is done (END, or a Singer stream's end of input): a stream that had no
        // STREAM_END is complete all the same, and what waited for its end is built now.
        let open: Vec<String> = self
            .order
            .iter()
            .filter(|n| self.streams.get(*n).is_some_and(|s| !s.ended))
            .cloned()
            .collect();
        if !open.is_empty() && !self.singer {
            tracing::warn!(streams = %open.join(", "), "streams without STREAM_END: complete at END");
        }
        for name in open {
            let digest = self
                .streams
                .get_mut(&name)
                .map(|s| s.digest.take_hex())
                .unwrap_or_default();
            self.complete_stream(&name, digest)?;
        }
        // What had to wait for every stream (foreign keys between them).
        for ddl in self.target.finish_run(&self.source)? {
            tracing::info!(sql = %ddl, "built a deferred constraint");
        }
        let written = self.outcome.written;
        if let Some(cp) = &mut self.checkpoint {
            cp.finish_run(&self.run_id, RunStatus::Complete, None)?;
        }
        self.outcome.run_id = self.run_id.clone();
        self.outcome.reject_path = (self.rejects.count > 0).then(|| self.rejects.path.clone());
        let mut extra = Map::new();
        extra.insert("written".into(), json!(written));
        extra.insert("already_imported".into(), json!(self.outcome.already));
        if self.cfg.dry_run {
            extra.insert("dry_run".into(), json!(true));
        }
        self.announce(&Message::End(End {
            run_id: self.run_id.clone(),
            status: "ok".into(),
            streams: Some(self.outcome.streams),
            rows: Some(self.outcome.received),
            files: None,
            bytes: None,
            errors: None,
            rejected: Some(self.outcome.rejected),
            skipped: Some(self.outcome.skipped),
            finished_at: Some(now_rfc3339()),
            extra,
        }))?;
        self.out.flush()?;
        tracing::info!(
            rows = self.outcome.received,
            written,
            skipped = self.outcome.skipped,
            already_imported = self.outcome.already,
            rejected = self.outcome.rejected,
            rows_per_s = self.progress.rate(self.outcome.received),
            "import complete"
        );
        if let Some(p) = &self.outcome.reject_path {
            tracing::warn!(rejected = self.outcome.rejected, file = %p.display(), "some rows were rejected");
        }
        Ok(())
    }

    fn on_error(&mut self, line: &Line<'_>) -> Result<()> {
        producer_error(line, self.checkpoint.as_mut(), &self.run_id)
    }

    /// Undo the open transaction and record how the run ended. Errors here are logged: the
    /// original error is what the user needs to see.
    fn abort(&mut self, status: RunStatus, e: &Error) {
        // A commit that landed is acknowledged, so a re-run starts after it.
        let _ = self.acknowledge(true);
        if let Err(re) = self.target.rollback() {
            tracing::error!(error = %re, "rolling back the target failed");
        }
        // The rows of the transaction rolled back are not in the target: not written.
        self.outcome.written = self.written_committed;
        let _ = self.rejects.sync();
        if self.began {
            record_failure(self.checkpoint.as_mut(), &self.run_id, status, e);
        }
        let _ = self.out.flush();
    }
}

/// Why `--fresh` is refused into a table an unfinished run of the same source made: it is loaded
/// on after the rows that run committed, with no check of keys (PostgreSQL builds them at the
/// end), so loaded again from its start, its rows would go in twice.
fn shape_has_null_key(shape: &RowShape, row: &[Value]) -> bool {
    shape.key.iter().any(|&i| row[i] == Value::Null)
}

fn fresh_over_continued(table: &str) -> String {
    format!(
        "table {table} was made by an unfinished run of this source, and its load goes on after the rows that run committed, keys unchecked until the end: --fresh would load those rows a second time; run the same command without --fresh to finish that load, or roll that run back first (ferry status names it; ferry rollback --batch RUN --confirm)"
    )
}

/// Why a SCHEMA that changes its stream's key is refused.
fn key_changed(was: &Schema, now: &Schema) -> String {
    format!(
        "a SCHEMA that changes the stream's key from ({}) to ({}): rows already read were keyed by the first; a key cannot change mid-stream (send the rows under the new key as a stream of their own)",
        was.key_properties.join(", "),
        now.key_properties.join(", ")
    )
}

/// Why a re-run stops when the rows it would skip by position are not the ones an earlier run
/// committed.
fn source_changed(run_id: &str, rows: u64, keyed: bool) -> String {
    // Only a stream with a key can be loaded again over its own rows: a keyless one would get
    // them twice.
    let or_again = if keyed {
        " (or import this stream again from its start with --fresh --on-conflict overwrite: it has a key)"
    } else {
        ""
    };
    format!(
        "the source changed since run {run_id} imported the first {rows} rows of this stream: they are not the same rows any more (rows were added, removed or changed before where that run got to), so skipping them by position would lose rows or write some twice; nothing of the stream was written by this run; roll that run back (ferry rollback --batch {run_id} --confirm), then run the same command again{or_again}"
    )
}

/// The prefix of the tables ferry keeps in a target for itself (commit markers, undo journals,
/// staging tables).
pub(crate) const RESERVED_PREFIX: &str = "_ferry_";

/// Refuse a stream whose table would be one of ferry's own: writing into `_ferry_commits` would
/// corrupt the markers every resume relies on.
pub(crate) fn reserved(stream: &str) -> std::result::Result<(), String> {
    let table = connect::table_name_for(stream);
    if table.to_ascii_lowercase().starts_with(RESERVED_PREFIX) {
        return Err(format!(
            "tables named {RESERVED_PREFIX}* are ferry's own (commit markers, undo journals, staging), in every target; rename the stream on the way: ferry-transform --rename-stream {stream}=NEW_NAME"
        ));
    }
    Ok(())
}

/// The stream a Singer stream named the Singer SDK's way (`public-orders`, or
/// `db-public-orders`) is imported as: `public.orders`, its table with the schema apart. None for
/// any other name.
fn singer_stream_table(stream: &str) -> Option<String> {
    if stream.contains('.') {
        return None;
    }
    let parts: Vec<&str> = stream.split('-').collect();
    match parts.as_slice() {
        [.., schema, table] if (2..=3).contains(&parts.len()) && parts.iter().all(|p| !p.is_empty()) => {
            Some(format!("{schema}.{table}"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod singer_tests {
    use super::singer_stream_table;

    #[test]
    fn singer_sdk_stream_names_are_their_tables() {
        assert_eq!(singer_stream_table("public-orders").as_deref(), Some("public.orders"));
        assert_eq!(
            singer_stream_table("app-public-orders").as_deref(),
            Some("public.orders")
        );
        assert_eq!(singer_stream_table("orders"), None);
        assert_eq!(singer_stream_table("main.orders"), None);
        assert_eq!(singer_stream_table("a-b-c-d"), None);
        assert_eq!(singer_stream_table("-orders"), None);
    }
}
