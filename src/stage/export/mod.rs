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

mod changes;
pub(crate) use changes::CHANGES_BOOKMARK;
mod deletes;
pub(crate) mod emit;
pub mod files;
pub mod incremental;
mod tables;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::address::Address;
use crate::connect::Selection;
use crate::error::Result;
use crate::protocol::writer::StreamWriter;

#[derive(Debug, Clone)]
pub struct ExportConfig {
    pub source: Address,
    pub selection: Selection,
    pub state_every: u64,
    pub state_interval: Duration,
    pub resume: bool,
    pub state_path: PathBuf,
    /// Emit only SCHEMA, RECORD and STATE, for Singer targets: streams named by table
    /// (`schema-table` outside SQLite's `main`), date and time columns with their JSON Schema
    /// `format`.
    pub singer: bool,
    /// Start from a Singer state (the last STATE value a target printed): see [`emit::begin`].
    pub state_json: Option<PathBuf>,
    /// For a directory: how to walk and hash it.
    pub files: FilesOptions,
    /// An entity export: the rows these pick out (and, with `follow_fks`, every row that
    /// references them, transitively) instead of `selection`.
    pub roots: Vec<crate::stage::entity::Root>,
    pub follow_fks: bool,
    /// A catch-up pass: every stream as changes, these tables only from their watermark on
    /// (see [`incremental`]).
    pub incremental: Vec<incremental::Incremental>,
    /// With `incremental`: also find the rows deleted since, by comparing keys with this target
    /// (see [`deletes`]).
    pub detect_deletes: Option<Address>,
    /// Export the changes the source's capture recorded, not its tables (see [`changes`]).
    pub changes: bool,
    /// With `changes`: go on sending changes as they come, until stopped.
    pub follow: bool,
    /// Export only this part of every table, or of the files (see [`crate::shard`]).
    pub shard: Option<crate::shard::Shard>,
}

/// The defaults an export has unless told otherwise (the flags' defaults are these).
pub mod defaults {
    /// A STATE every this many rows...
    pub const STATE_EVERY: u64 = 10_000;
    /// ...and at least every this many seconds.
    pub const STATE_INTERVAL_SECS: f64 = 1.0;
    /// The name of a directory's (or bucket's) file stream.
    pub const FILE_STREAM: &str = "files";
    /// Files read and hashed at once.
    pub const HASH_JOBS: usize = 8;
}

impl ExportConfig {
    /// An export of `selection` from `source` with every other setting at its default.
    pub fn of(source: Address, selection: Selection, state_path: PathBuf) -> ExportConfig {
        ExportConfig {
            source,
            selection,
            state_every: defaults::STATE_EVERY,
            state_interval: Duration::from_secs_f64(defaults::STATE_INTERVAL_SECS),
            resume: false,
            state_path,
            singer: false,
            state_json: None,
            files: FilesOptions::default(),
            roots: Vec::new(),
            follow_fks: false,
            incremental: vec![],
            changes: false,
            follow: false,
            detect_deletes: None,
            shard: None,
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
            stream: defaults::FILE_STREAM.into(),
            follow_symlinks: false,
            jobs: defaults::HASH_JOBS,
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

/// Export `cfg.source`: a directory or a bucket as FILE messages, a database as its tables.
pub fn run<W: Write>(cfg: &ExportConfig, out: &mut StreamWriter<W>) -> Result<ExportOutcome> {
    match &cfg.source {
        Address::Dir(root) => files::run(cfg, files::Files::Dir(root), out),
        Address::S3(url) => files::run(cfg, files::Files::Bucket(url), out),
        _ if cfg.changes => changes::run(cfg, out),
        _ => tables::run(cfg, out),
    }
}
