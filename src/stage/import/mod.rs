//! ferry-import: a stream into a store.
//!
//! Contract:
//! - MUST treat STATE as a barrier: commit everything received before it to the target together
//!   with the commit markers, then record the state in the checkpoint, then echo the STATE line.
//! - MUST NOT commit anything received after the last STATE when the input ends without END, or on
//!   any error; the run is recorded as interrupted or failed and the command exits non-zero.
//! - MUST skip rows whose position the target's commit marker says are already there, so that
//!   re-running the same pipeline after a crash at any instant loses and duplicates nothing.
//! - MUST put rows the target refuses (constraint failures) in the reject file with the reason and
//!   the key, and go on, up to `max_rejects`; a key conflict under `--on-conflict fail` stops it.
//! - MUST check each STREAM_END's row count and digest against what arrived.
//! - With `dry_run`, MUST write the plan as NDJSON and change nothing (target or state file).

pub mod files;
pub(crate) mod ingest;
mod tables;

use std::io::{BufRead, Write};
use std::path::PathBuf;

use crate::address::Address;
use crate::connect::OnConflict;
use crate::error::Result;
use crate::protocol::StreamWriter;

#[derive(Debug, Clone)]
pub struct ImportConfig {
    pub target: Address,
    pub create: bool,
    /// What to do with a row whose key is there; None: stop, but overwrite for a Singer stream.
    pub on_conflict: Option<OnConflict>,
    pub dry_run: bool,
    pub state_path: PathBuf,
    /// Default: `rejects-RUN_ID.ndjson` next to the state file.
    pub reject_path: Option<PathBuf>,
    pub max_rejects: u64,
    /// Ignore what the target's commit markers say is already imported.
    pub fresh: bool,
    pub verify_stream_end: bool,
    pub max_line: usize,
    /// Where streams without a schema of their own go (PostgreSQL; default `public`).
    pub schema: Option<String>,
    /// Rows buffered per stream before they are written (inside the open transaction)...
    pub write_rows: usize,
    /// ...or input bytes, whichever comes first: memory stays bounded whatever the row size.
    pub write_bytes: usize,
    /// Object stores: files put at once.
    pub jobs: usize,
    /// S3: endpoint and region (the environment gives the rest).
    pub s3: crate::connect::objects::s3::S3Settings,
    /// What the input holds in all, when it can be told before reading it (a file ending in
    /// STREAM_ENDs): for the time left in progress lines.
    pub input_totals: Option<crate::protocol::reader::Totals>,
    /// Journal the rows written into existing, non-empty tables, so a rollback can undo them
    /// (`--no-rollback-journal` turns it off; created and empty tables are recorded either way).
    pub journal_rows: bool,
    /// Date-times without an offset are UTC (`--naive-utc`).
    pub naive_utc: bool,
    /// Write on stdout only each acknowledged STATE's value, as Singer targets do (`--singer`).
    pub singer_output: bool,
}

/// The defaults an import has unless told otherwise (the flags' defaults are these).
pub mod defaults {
    /// Rows rejected before the import stops.
    pub const MAX_REJECTS: u64 = 1000;
    /// Object stores: files put at once.
    pub const JOBS: usize = 16;
    /// Rows buffered per stream before they are written...
    pub const WRITE_ROWS: usize = 5000;
    /// ...or input bytes, whichever comes first.
    pub const WRITE_BYTES: usize = 8 << 20;
}

impl ImportConfig {
    /// An import into `target` with every other setting at its default: no `--create`, stop at a
    /// key conflict, verify STREAM_ENDs, journal for rollback.
    pub fn new(target: Address, state_path: PathBuf) -> ImportConfig {
        ImportConfig {
            target,
            create: false,
            on_conflict: None,
            dry_run: false,
            state_path,
            reject_path: None,
            max_rejects: defaults::MAX_REJECTS,
            fresh: false,
            verify_stream_end: true,
            max_line: crate::protocol::DEFAULT_MAX_LINE_BYTES,
            schema: None,
            write_rows: defaults::WRITE_ROWS,
            write_bytes: defaults::WRITE_BYTES,
            jobs: defaults::JOBS,
            s3: Default::default(),
            input_totals: None,
            journal_rows: true,
            naive_utc: false,
            singer_output: false,
        }
    }
}

/// What an import did, whether it finished or not.
#[derive(Debug, Clone, Default)]
pub struct ImportOutcome {
    pub run_id: String,
    /// Streams completed.
    pub streams: u64,
    /// Rows (files) read from the input.
    pub received: u64,
    /// Rows written (files uploaded).
    pub written: u64,
    /// Rows a change stream's deletes removed.
    pub deleted: u64,
    /// Rows left as they were under `--on-conflict skip` (files already present at their key).
    pub skipped: u64,
    /// Rows (files) an earlier run already committed.
    pub already: u64,
    /// Rows (files) refused, in the reject file.
    pub rejected: u64,
    pub reject_path: Option<PathBuf>,
    /// The line and seq of the last STATE acknowledged.
    pub acknowledged: Option<(u64, u64)>,
    /// Files into an object store, not rows.
    pub files: bool,
    /// Files the export left out on purpose (links not followed, sockets): a result says so.
    pub left_out: u64,
}

pub fn run<R: BufRead, W: Write>(cfg: &ImportConfig, input: R, out: &mut StreamWriter<W>) -> Result<ImportOutcome> {
    let mut outcome = ImportOutcome::default();
    run_counted(cfg, input, out, &mut outcome).map(|()| outcome)
}

/// [`run`], counting into `outcome` whether it finishes or not: files into an object store,
/// rows into a table store.
pub fn run_counted<R: BufRead, W: Write>(
    cfg: &ImportConfig,
    input: R,
    out: &mut StreamWriter<W>,
    outcome: &mut ImportOutcome,
) -> Result<()> {
    match cfg.target {
        Address::Dir(_) | Address::S3(_) => files::run_counted(cfg, input, out, outcome),
        _ => tables::run_counted(cfg, input, out, outcome),
    }
}
