//! `ferry status`: the runs in the state file, and one run's batches.

use std::path::PathBuf;

use crate::checkpoint::DEFAULT_STATE_PATH;
use crate::error::{ExitStatus, Result};
use crate::protocol::StreamWriter;
use crate::stage::status::{self, StatusConfig};

const STATUS_EXAMPLES: &str = "\
Examples:
  ferry status                          # every run in .ferry/state.db: status, rows, rate, time left
  ferry status --run 0193a5c2-7f1e      # one run's batches (the id or the short form shown)
  ferry status --json                   # as NDJSON, for scripts
  ferry status --state /srv/moves/state.db";

#[derive(Debug, clap::Args)]
#[command(after_long_help = STATUS_EXAMPLES)]
pub struct StatusArgs {
    /// The state file
    #[arg(long, value_name = "PATH", default_value = DEFAULT_STATE_PATH)]
    pub state: PathBuf,
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
    let cfg = StatusConfig {
        state_path: s.state.clone(),
        run: s.run.clone(),
        batch: s.batch,
        json: s.json,
    };
    let mut out = StreamWriter::stdout()?;
    status::run(&cfg, &mut out)?;
    Ok(ExitStatus::Ok)
}
