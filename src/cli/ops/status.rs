//! `ferry status`: the runs in the state file, and one run's batches.

use std::path::PathBuf;

use crate::checkpoint::DEFAULT_STATE_PATH;
use crate::error::{Error, ExitStatus, Result};
use crate::protocol::StreamWriter;
use crate::stage::status::{self, StatusConfig};

const STATUS_EXAMPLES: &str = "\
Examples:
  # Every run in .ferry/state.db: status, rows, rate, time left
  ferry status
  # One run's batches (the id or the short form shown), or NDJSON for scripts
  ferry status --run 0193a5c2-7f1e
  ferry status --json
  ferry status --state /srv/moves/state.db
  # A sharded migration: every shard's runs, and their sum
  ferry status --state 'shards/*.db'
  ferry status --state s1.db --state s2.db --json";

#[derive(Debug, clap::Args)]
#[command(after_long_help = STATUS_EXAMPLES)]
pub struct StatusArgs {
    /// The state file; repeat it (or give a quoted glob) for the shards of one migration, each
    /// with its own: their runs are listed together, then summed
    #[arg(long, value_name = "PATH", default_value = DEFAULT_STATE_PATH)]
    pub state: Vec<String>,
    /// Show the batches of this run (a unique prefix of its id is enough)
    #[arg(long, value_name = "RUN_ID")]
    pub run: Option<String>,
    /// Show one batch
    #[arg(long, value_name = "ID")]
    pub batch: Option<i64>,
    /// NDJSON instead of a table
    #[arg(long)]
    pub json: bool,
}

pub(super) fn run_status(s: &StatusArgs) -> Result<ExitStatus> {
    let mut states = Vec::new();
    for s in &s.state {
        states.extend(state_files(s)?);
    }
    let cfg = StatusConfig {
        state_path: states.remove(0),
        more_states: states,
        run: s.run.clone(),
        batch: s.batch,
        json: s.json,
    };
    let mut out = StreamWriter::stdout()?;
    status::run(&cfg, &mut out)?;
    Ok(ExitStatus::Ok)
}

/// A `--state` value: a path, or a glob (`shards/*.db`) naming at least one file.
fn state_files(pattern: &str) -> Result<Vec<PathBuf>> {
    if !pattern.contains(['*', '?', '[']) {
        return Ok(vec![PathBuf::from(pattern)]);
    }
    let bad = |e: String| Error::usage(format!("--state {pattern}: {e}"));
    let found: Vec<PathBuf> = glob::glob(pattern)
        .map_err(|e| bad(e.to_string()))?
        .filter_map(std::result::Result::ok)
        .collect();
    if found.is_empty() {
        return Err(bad("no file matches".into()));
    }
    Ok(found)
}
