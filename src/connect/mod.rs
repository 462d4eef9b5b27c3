//! Connectors: each store behind two small traits. A [`Source`] yields streams and their rows in
//! key order; a [`Target`] applies batches inside a transaction and commits them together with its
//! commit markers. Adding a store means adding a file here, not touching the stages.

pub(crate) mod compare;
pub(crate) mod d1;
pub(crate) mod journal;
pub(crate) mod objects;
pub(crate) mod postgres;
pub(crate) mod sql;
pub(crate) mod sqlite;

use std::collections::HashMap;

use serde::Serialize;

use crate::address::Address;
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{Bookmark, Schema, SourceInfo};
use crate::row::RowShape;
use crate::shard::{Range, Shard};
use crate::value::{Value, ValueRef};

/// Which tables an export (or a validation) covers.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only these (by table or stream name); empty means all.
    pub tables: Vec<String>,
    pub exclude: Vec<String>,
    /// Per-table row filters, as SQL conditions.
    pub filters: Vec<(String, String)>,
}

impl Selection {
    /// Whether a stream (`main.users`) or its table (`users`) is selected.
    pub fn includes(&self, stream: &str, table: &str) -> bool {
        let named = |list: &[String]| list.iter().any(|n| n == stream || n == table);
        (self.tables.is_empty() || named(&self.tables)) && !named(&self.exclude)
    }

    pub fn filter_for(&self, stream: &str, table: &str) -> Option<&str> {
        self.filters
            .iter()
            .find(|(n, _)| n == stream || n == table)
            .map(|(_, w)| w.as_str())
    }

    /// The selection in command-line form, or `None` for everything.
    pub fn describe(&self) -> Option<String> {
        let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
        let mut parts: Vec<String> = Vec::new();
        parts.extend(self.tables.iter().map(|t| format!("--table {}", quote(t))));
        parts.extend(self.exclude.iter().map(|t| format!("--exclude {}", quote(t))));
        parts.extend(
            self.filters
                .iter()
                .map(|(t, w)| format!("--where {}", quote(&format!("{t}={w}")))),
        );
        (!parts.is_empty()).then(|| parts.join(" "))
    }

    /// Names given to --table/--where that match nothing: almost always a typo.
    pub fn unmatched<'a>(&'a self, streams: &[(String, String)]) -> Vec<&'a str> {
        let known = |n: &str| streams.iter().any(|(s, t)| s == n || t == n);
        self.tables
            .iter()
            .chain(self.filters.iter().map(|(n, _)| n))
            .map(String::as_str)
            .filter(|n| !known(n))
            .collect()
    }
}

/// One stream an export will produce.
#[derive(Debug, Clone)]
pub struct StreamPlan {
    pub schema: Schema,
    /// The row filter (`--where`), if any.
    pub filter: Option<String>,
    /// Whether rows can be resumed after a cursor (false only for odd keyless tables).
    pub resumable: bool,
}

/// Access to the current row of a scan, without copying.
pub trait RowAccess {
    fn get(&self, i: usize) -> ValueRef<'_>;
    /// The row's rowid, for sources ordered by rowid.
    fn rowid(&self) -> Option<i64>;
}

pub trait Source {
    fn info(&self) -> SourceInfo;
    /// The streams to export, parents before children.
    fn discover(&mut self, selection: &Selection) -> Result<Vec<StreamPlan>>;
    /// Rows of one stream in key order, strictly after `after` when given.
    fn scan(
        &mut self,
        plan: &StreamPlan,
        shape: &RowShape,
        after: Option<&Bookmark>,
        row: &mut dyn FnMut(&dyn RowAccess) -> Result<()>,
    ) -> Result<()>;
    /// Its captured changes, if it keeps any.
    fn changes(&mut self) -> Option<&mut dyn ChangeSource> {
        None
    }
    /// A shard's part of a stream (see [`crate::shard`]), and that part as a condition on the
    /// table's rows in the source's SQL (None: all of them).
    fn shard_range(&mut self, plan: &StreamPlan, shard: Shard) -> Result<(Range, Option<String>)> {
        let _ = (plan, shard);
        Err(Error::usage(format!(
            "{}: --shard is not supported for this kind of source (SQLite and PostgreSQL tables, directories and buckets are)",
            self.info().address
        )))
    }
}

/// A table's first key column in key order, as a shard's bounds are read from it.
pub(crate) trait KeyOrder {
    /// Its least and greatest values (None: no row has one).
    fn ends(&mut self) -> Result<Option<(Value, Value)>>;
    /// How many rows have one.
    fn count(&mut self) -> Result<u64>;
    /// Its value at a position (from 0) in its order.
    fn at(&mut self, position: u64) -> Result<Option<Value>>;
}

/// The range of a stream's first key column that `shard` takes: equal steps between its ends for
/// integers, else the keys at the shard's row positions.
pub(crate) fn shard_range_of(column: &str, shard: Shard, order: &mut dyn KeyOrder) -> Result<Range> {
    let keys = |from, to| Range::Keys {
        column: column.to_owned(),
        from,
        to,
        nulls: shard.k == 1,
    };
    if shard.n == 1 {
        return Ok(Range::All);
    }
    Ok(match order.ends()? {
        // Empty, or every key NULL: the first shard takes the table.
        None if shard.k == 1 => Range::All,
        None => Range::Nothing,
        Some((Value::Integer(min), Value::Integer(max))) => {
            let (from, to) = shard.integer_range(min, max);
            keys(from.map(Value::Integer), to.map(Value::Integer))
        }
        Some(_) => {
            let (from, to) = shard.positions(order.count()?);
            let from = match from {
                Some(p) => order.at(p)?,
                None => None,
            };
            let to = match to {
                Some(p) => order.at(p)?,
                None => None,
            };
            keys(from, to)
        }
    })
}

/// What installing change capture does: the statements, the tables it covers, and those it
/// cannot (with why).
#[derive(Debug, Default)]
pub(crate) struct CapturePlan {
    pub statements: Vec<String>,
    pub tables: Vec<String>,
    pub left_out: Vec<(String, String)>,
}

/// A source whose changes ferry captures (SQLite: [`sqlite::capture`]): positions that only
/// grow, the keys each change touched, and the rows as they are now.
pub trait ChangeSource {
    /// Get ready to read the changes after position `from` (0: from the first recorded);
    /// `follow`: they will be read as they come, for as long as it takes.
    fn start(&mut self, _from: u64, _follow: bool) -> Result<()> {
        Ok(())
    }
    /// Start a new snapshot, and say the newest change's position in it (0: none yet). A
    /// follower's source may wait a moment for one.
    fn latest_change(&mut self) -> Result<u64>;
    /// The keys changed after `after` up to `upto`, in the order they changed: each one's stream
    /// and its key values (in key order).
    fn changed_keys(
        &mut self,
        after: u64,
        upto: u64,
        each: &mut dyn FnMut(&str, Vec<Value>) -> Result<()>,
    ) -> Result<()>;
    /// The rows under `keys` in the snapshot (every column of `shape`), in their order; None
    /// where there is none (it was deleted).
    fn rows_now(&mut self, plan: &StreamPlan, shape: &RowShape, keys: &[Vec<Value>])
    -> Result<Vec<Option<Vec<Value>>>>;
    /// Forget the changes up to `upto`: the target has them. How many went.
    fn trim(&mut self, upto: u64) -> Result<u64>;
    /// End the snapshot: between passes the source's writers must not wait for the reader.
    fn pause(&mut self) -> Result<()>;
    /// How long ago the newest change read was committed, in seconds, if the source says.
    fn lag(&self) -> Option<f64> {
        None
    }
    /// How many bytes of the source's log lie past the position reached, if the source says.
    fn lag_bytes(&mut self) -> Option<u64> {
        None
    }
    /// Whether the last [`ChangeSource::latest_change`] reached the newest change (a source that
    /// reads its passes in windows says no while more wait: the next pass comes at once).
    fn caught_up(&self) -> bool {
        true
    }
}

/// What to do with a row whose key is already in the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OnConflict {
    /// Stop the import with an error naming the key.
    Fail,
    /// Keep the row already there.
    Skip,
    /// Replace it (upsert by key).
    Overwrite,
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub create: bool,
    pub on_conflict: OnConflict,
    pub dry_run: bool,
    /// The producer's source identity (redacted) and run: what commit markers are kept under.
    pub source: String,
    pub run_id: String,
    /// The producer's kind of store (`sqlite`, `postgres`...), when it said.
    pub source_kind: Option<String>,
    /// Keep what a rollback needs (a target that journals in itself: its undo table).
    pub journal: bool,
    /// Date-times without an offset are UTC: new PostgreSQL columns for them are `timestamptz`.
    pub naive_utc: bool,
    /// The stream is one shard of an export (`--shard K/N`): the shard, and the identity every
    /// shard of it shares. Shards write into one table at once; what waits for the data (keys,
    /// foreign keys) is built by the last shard to finish.
    pub shard: Option<(crate::shard::Shard, String)>,
}

/// Rows of one stream waiting to be written: `ncols` values per row, flat.
#[derive(Debug, Default)]
pub struct RowBatch {
    pub ncols: usize,
    pub values: Vec<Value>,
    /// Input line of each row, for errors and rejects.
    pub lines: Vec<u64>,
    /// The stream position of the first row, when the producer gives positions; the rows of a
    /// batch are consecutive (a target that commits in pieces marks how far each piece got).
    pub first_position: Option<u64>,
}

impl RowBatch {
    pub fn new(ncols: usize) -> Self {
        RowBatch {
            ncols,
            values: Vec::new(),
            lines: Vec::new(),
            first_position: None,
        }
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    pub fn row(&self, i: usize) -> &[Value] {
        &self.values[i * self.ncols..(i + 1) * self.ncols]
    }

    /// Make room for one more row (all NULL) and return it.
    pub fn push_row(&mut self, line: u64) -> &mut [Value] {
        let start = self.values.len();
        self.values.resize(start + self.ncols, Value::Null);
        self.lines.push(line);
        &mut self.values[start..]
    }

    /// Take back the last row pushed.
    pub fn pop_row(&mut self) {
        if self.lines.pop().is_some() {
            self.values.truncate(self.values.len() - self.ncols);
        }
    }

    pub fn clear(&mut self) {
        self.values.clear();
        self.lines.clear();
        self.first_position = None;
    }
}

/// A row the target refused, with what the reject file says of it.
#[derive(Debug, Clone)]
pub struct Reject {
    pub line: u64,
    pub key: serde_json::Value,
    pub record: serde_json::Value,
    pub reason: String,
}

impl Reject {
    /// Row `r` of a batch, refused for `reason`.
    pub fn of(shape: &RowShape, batch: &RowBatch, r: usize, reason: String) -> Reject {
        let row = batch.row(r);
        let mut rec = Vec::new();
        shape.encode_record(|i| row[i].as_ref(), &mut rec);
        Reject {
            line: batch.lines[r],
            key: shape.key_json(|i| row[i].as_ref()),
            record: serde_json::from_slice(&rec).unwrap_or(serde_json::Value::Null),
            reason,
        }
    }
}

/// What a target did with some rows of one stream.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub stream: String,
    pub written: u64,
    /// Rows left alone because their key was already there (`--on-conflict skip`).
    pub skipped: u64,
    /// A change stream's deletes applied, whether their rows were there or already gone (so the
    /// closing line adds up: every line read is written, skipped, deleted or rejected).
    pub deleted: u64,
    pub rejects: Vec<Reject>,
}

/// What a dry run found for some rows.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct PlanCounts {
    pub insert: u64,
    pub skip: u64,
    pub overwrite: u64,
    pub conflict: u64,
    /// Rows refused before they reach the target (a NULL in the key).
    pub reject: u64,
    /// A change stream's deletes (each removes its key's row, if there).
    pub delete: u64,
}

impl PlanCounts {
    /// Count one row: new (`found` false), or at a key already there, where `on_found` says
    /// what an insert does with it.
    pub fn count(&mut self, found: bool, on_found: OnConflict) {
        match (found, on_found) {
            (false, _) => self.insert += 1,
            (true, OnConflict::Skip) => self.skip += 1,
            (true, OnConflict::Overwrite) => self.overwrite += 1,
            (true, OnConflict::Fail) => self.conflict += 1,
        }
    }
}

/// What a target knows it committed for one stream of one source, kept in the target itself.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Marker {
    pub source: String,
    /// The stream's bookmark name (the producer's name for it).
    pub stream: String,
    pub run_id: String,
    /// Rows of the stream committed, counted from its beginning (see protocol: positions).
    pub position: Option<u64>,
    pub complete: bool,
    pub bookmark: Option<String>,
}

/// What preparing a stream did or would do.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    pub table: String,
    /// DDL run (or, in a dry run, that would run) to create the table.
    pub created: Vec<String>,
    /// DDL deferred until the stream is complete (secondary indexes).
    pub deferred: Vec<String>,
    pub existed: bool,
    /// It existed and held no rows: undoing the run empties it again.
    pub empty: bool,
    /// The table's name as the target's SQL spells it (quoted, schema-qualified), when the
    /// target's rollback needs it.
    pub sql_name: Option<String>,
    /// The target keeps this stream's rollback journal itself, in this table (its SQL name):
    /// the key of every row the run inserts, the before-image of every row it overwrites.
    pub undo: Option<String>,
    /// The table was made by an unfinished run of the same source, whose load this run goes on
    /// with: undoing this run drops it, as undoing that one would.
    pub continued: bool,
    /// The table keeps a NULL in the stream's key as the NULL it is (SQLite's rowid tables
    /// whose key is not the rowid). Elsewhere such a row is rejected: the target would invent a
    /// key for it (an INTEGER PRIMARY KEY's rowid) or refuse the key only when it is built.
    pub null_key: bool,
}

/// How often a target wants to commit: at the first STATE past any of these since the last
/// commit (all zero: at every STATE).
#[derive(Debug, Clone, Copy, Default)]
pub struct CommitEvery {
    pub rows: u64,
    pub bytes: u64,
    pub interval: std::time::Duration,
}

pub trait Target {
    /// The redacted address, for messages and the checkpoint.
    fn address(&self) -> String;
    /// Commit markers this target holds for streams of `source`.
    fn markers(&mut self, source: &str) -> Result<HashMap<String, Marker>>;
    /// The run is one shard of an export (`LoadOptions::shard`), said before anything else is
    /// asked: what waits for the data is then the last shard's to build, even for a stream an
    /// earlier attempt finished.
    fn shard(&mut self, _shard: Option<(Shard, String)>) {}
    /// Get ready to receive a stream: create its table when asked (recording the DDL deferred to
    /// the stream's end in the same transaction), check it fits otherwise.
    fn prepare(&mut self, schema: &Schema, shape: &RowShape, opts: &LoadOptions) -> Result<Prepared>;
    /// Write rows inside the open transaction. What comes back may concern rows of earlier calls
    /// (a target may still be writing them when this returns); rows it refuses come back as
    /// rejects, and a key conflict under `--on-conflict fail` is an error.
    fn write(&mut self, stream: &str, shape: &RowShape, batch: RowBatch) -> Result<Vec<Report>>;
    /// Delete, inside the open transaction and after every row written before, the rows under
    /// the keys of `batch` (a change stream's deletes: only the key columns are set). A key not
    /// there is no error: the row is gone either way.
    fn delete(&mut self, stream: &str, _shape: &RowShape, _batch: RowBatch) -> Result<Vec<Report>> {
        Err(Error::new(
            ErrorKind::Target,
            format!("{}: this target cannot apply deletes (stream {stream})", self.address()),
        ))
    }
    /// Finish whatever is still being written and say what it did (before markers are written).
    fn flush(&mut self) -> Result<Vec<Report>> {
        Ok(vec![])
    }
    /// For the rollback journal: the row now in the target under each row's key of `batch`
    /// (`None`: no row there), read before the batch is written. `Ok(None)`: this target keeps
    /// no journal.
    fn current_rows(
        &mut self,
        _stream: &str,
        _shape: &RowShape,
        _batch: &RowBatch,
    ) -> Result<Option<Vec<Option<Vec<crate::value::Value>>>>> {
        Ok(None)
    }
    /// Classify rows for a dry run, writing nothing.
    fn plan(&mut self, stream: &str, shape: &RowShape, batch: &RowBatch) -> Result<PlanCounts>;
    /// Make everything written so far durable together with these markers, atomically.
    fn commit(&mut self, markers: &[Marker]) -> Result<()>;
    /// [`Target::commit`], where the target can without waiting for the server to confirm: the
    /// next transaction's writes queue behind the commit. [`Target::landed`] says when it is
    /// durable; until then nothing of it may be acknowledged. At most one is on its way: every
    /// other call settles it first.
    fn commit_pipelined(&mut self, markers: &[Marker]) -> Result<()> {
        self.commit(markers)
    }
    /// Whether the last [`Target::commit_pipelined`] has landed (waiting for it when `wait`). An
    /// error when it failed for good: the importer stops, and it is not acknowledged.
    fn landed(&mut self, _wait: bool) -> Result<bool> {
        Ok(true)
    }
    /// Forget everything written since the last commit.
    fn rollback(&mut self) -> Result<()>;
    /// After a stream's last row is committed: build what was deferred. Idempotent.
    fn finish_stream(&mut self, source: &str, bookmark_name: &str) -> Result<Vec<String>>;
    /// At the end of a run: build what had to wait for every stream (foreign keys). Idempotent.
    fn finish_run(&mut self, _source: &str) -> Result<Vec<String>> {
        Ok(vec![])
    }
    /// How often to commit.
    fn commit_every(&self) -> CommitEvery {
        CommitEvery::default()
    }
}

/// The name of the table where a target that journals in itself keeps `run_id`'s undo journal
/// for `table` (its name as the target spells it): one per run and table, found again by a
/// resumed run.
pub fn undo_table_name(run_id: &str, table: &str) -> String {
    use sha2::Digest as _;
    let h = sha2::Sha256::digest(format!("{run_id}\0{table}").as_bytes());
    let tag: String = h[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("_ferry_undo_{tag}")
}

/// A stream's table is not in the target and `--create` was not given.
pub fn no_table(address: &str, table: &str, stream: &str) -> Error {
    Error::new(
        ErrorKind::Target,
        format!(
            "{address}: there is no table {table} for stream {stream}; pass --create to create it from the stream's SCHEMA"
        ),
    )
}

/// A stream has fields its table lacks.
pub fn missing_columns(address: &str, table: &str, stream: &str, missing: &[&str]) -> Error {
    Error::new(
        ErrorKind::Target,
        format!(
            "{address}: table {table} (stream {stream}) has no column {}; add it, or drop the field with ferry-transform --drop-field {stream}.FIELD",
            missing.join(", ")
        ),
    )
}

/// Row `r` of a batch has a key already in the table, under `--on-conflict fail`; `detail` is
/// what the engine said, when worth showing.
pub fn key_conflict(shape: &RowShape, batch: &RowBatch, r: usize, table: &str, detail: Option<&str>) -> Error {
    let key = shape.key_json(|i| batch.row(r)[i].as_ref());
    let detail = detail.map(|d| format!(" ({d})")).unwrap_or_default();
    Error::new(
        ErrorKind::Data,
        format!(
            "line {}: key {key} of stream {} is already in table {table} (--on-conflict fail); use --on-conflict skip to keep it or overwrite to replace it{detail}",
            batch.lines[r], shape.stream
        ),
    )
}

/// The table `discover` found for a stream, for its scan.
pub(crate) fn discovered<'a, T>(tables: &'a HashMap<String, T>, address: &str, stream: &str) -> Result<&'a T> {
    tables.get(stream).ok_or_else(|| {
        Error::new(
            ErrorKind::Source,
            format!("{address}: stream {stream} was not discovered"),
        )
    })
}

/// Open a source by address.
pub fn open_source(address: &Address) -> Result<Box<dyn Source>> {
    match address {
        Address::Sqlite(path) => Ok(Box::new(sqlite::source::SqliteSource::open(path)?)),
        Address::Postgres(url) => Ok(Box::new(postgres::source::PgSource::open(url)?)),
        Address::D1(url) => Ok(Box::new(d1::source::D1Source::open(url)?)),
        other => Err(other.unsupported("a source")),
    }
}

/// Open a target by address; `schema` is where streams without one go (PostgreSQL).
pub fn open_target(address: &Address, dry_run: bool, schema: Option<&str>) -> Result<Box<dyn Target>> {
    match address {
        Address::Sqlite(path) => Ok(Box::new(sqlite::target::SqliteTarget::open(path, dry_run)?)),
        Address::Postgres(url) => Ok(Box::new(postgres::target::PgTarget::open(url, dry_run, schema)?)),
        Address::D1(url) => Ok(Box::new(d1::target::D1Target::open(url, dry_run)?)),
        other => Err(other.unsupported("a target")),
    }
}

/// Order tables (given in name order, each with the names it references) so that every table
/// comes after the tables it references. Returns the order and the tables caught in cycles, which
/// keep name order among themselves and come last.
pub fn parents_first(names: &[&str], refs: &[Vec<&str>]) -> (Vec<usize>, Vec<String>) {
    let index: HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let mut deps: Vec<std::collections::BTreeSet<usize>> = refs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            r.iter()
                .filter_map(|n| index.get(n).copied())
                .filter(|&p| p != i)
                .collect()
        })
        .collect();
    let mut order = Vec::with_capacity(names.len());
    let mut done = vec![false; names.len()];
    // Picking the first ready one keeps name order wherever the keys allow.
    while let Some(next) = (0..names.len()).find(|&i| !done[i] && deps[i].is_empty()) {
        done[next] = true;
        order.push(next);
        for d in deps.iter_mut() {
            d.remove(&next);
        }
    }
    let cycle: Vec<String> = (0..names.len())
        .filter(|&i| !done[i])
        .map(|i| names[i].to_owned())
        .collect();
    order.extend((0..names.len()).filter(|&i| !done[i]));
    (order, cycle)
}

/// The table name a stream lands in: the part after the first `.` (`main.users` -> `users`).
pub fn table_name_for(stream: &str) -> &str {
    stream.split_once('.').map_or(stream, |(_, t)| t)
}

/// Open the database an import run journaled into itself, for `ferry rollback` to undo
/// (`None`: the store keeps no journal of its own; SQLite's is in the state file).
pub(crate) fn open_in_place_journal(address: &Address) -> Result<Option<Box<dyn journal::InPlaceJournal>>> {
    match address {
        Address::Postgres(url) => Ok(Some(Box::new(postgres::journal::PgJournal::open(url)?))),
        Address::D1(url) => Ok(Some(Box::new(d1::journal::D1Journal::open(url)?))),
        _ => Ok(None),
    }
}

/// Open a table store for a validation to read (`role`: whether it is the source or the
/// target side, for the errors); `schema`: where PostgreSQL tables of streams that name none are.
pub(crate) fn open_comparable(
    address: &Address,
    role: crate::error::ErrorKind,
    schema: Option<&str>,
) -> Result<Box<dyn compare::Comparable>> {
    match address {
        Address::Sqlite(path) => Ok(Box::new(sqlite::compare::SqliteTables::open(path, role)?)),
        Address::Postgres(url) => Ok(Box::new(postgres::compare::PgTables::open(url, schema)?)),
        Address::D1(url) => Ok(Box::new(d1::source::D1Source::comparable(url)?)),
        other => Err(other.unsupported("a validation side")),
    }
}

/// Open the object store at an address.
pub fn open_store(address: &Address, s3: &objects::s3::S3Settings) -> Result<Box<dyn objects::ObjectStore>> {
    match address {
        Address::Dir(p) => Ok(Box::new(objects::dir::DirStore::open(p)?)),
        Address::S3(url) => Ok(Box::new(objects::s3::S3Store::open(url, s3)?)),
        other => Err(other.unsupported("an object store")),
    }
}

/// Whether a stream's `x-sql-type`s are PostgreSQL's: its SCHEMA says so (`x-sql-dialect`), or,
/// when it does not, its producer read PostgreSQL.
pub(crate) fn postgres_types(schema: &Schema, opts: &LoadOptions) -> bool {
    match schema.extra.get("x-sql-dialect").and_then(serde_json::Value::as_str) {
        Some(d) => d == "postgres",
        None => opts.source_kind.as_deref() == Some("postgres"),
    }
}
