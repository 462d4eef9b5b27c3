//! `ferry cutover`: drain, prove, and say whether to switch.

use std::path::PathBuf;
use std::time::Duration;

use crate::address::Address;
use crate::checkpoint::DEFAULT_STATE_PATH;
use crate::error::{ExitStatus, Result};
use crate::protocol::StreamWriter;
use crate::stage::cutover::{self, CutoverConfig};

const CUTOVER_EXAMPLES: &str = "\
Before it, while the application runs:
  ferry capture install postgres://app@old/app                      # record every change from now on
  ferry-export postgres://app@old/app | ferry-import postgres://app@new/app --create   # the copy
  ferry-export postgres://app@old/app --follow | ferry-import postgres://app@new/app   # keep up

Then stop the application's writes to the old store (and the follower), and:
  ferry cutover postgres://app@old/app postgres://app@new/app       # drain, check quiet, compare: GO or NO-GO
  ferry cutover sqlite:app.db postgres://app@new/app --reverse      # GO also starts capturing the new
                                                                    # store, for the way back
  ferry cutover sqlite:app.db postgres://app@new/app --drop-capture # GO also removes the old store's capture

Exit status: 0 GO (the target holds every row of the source, and the source is quiet), 1 NO-GO
(the reason on stderr, the findings on stdout), 2 an error.";

#[derive(Debug, clap::Args)]
#[command(after_long_help = CUTOVER_EXAMPLES)]
pub struct CutoverArgs {
    /// The store the application is leaving (its changes captured: ferry capture install)
    pub source: String,
    /// The store it moves to
    pub target: String,
    /// The state file the copy and the follower used
    #[arg(long, value_name = "PATH", default_value = DEFAULT_STATE_PATH)]
    pub state: PathBuf,
    /// How long the source must stay without a change after the drain
    #[arg(long, value_name = "SECONDS", default_value_t = 2.0)]
    pub quiet_for: f64,
    /// On GO, start capturing the target, so what the application writes there can be followed
    /// back into the source during the rollback window
    #[arg(long)]
    pub reverse: bool,
    /// On GO, remove the source's capture (its triggers, or the replication slot holding WAL)
    #[arg(long)]
    pub drop_capture: bool,
}

pub(super) fn run_cutover(c: &CutoverArgs) -> Result<ExitStatus> {
    let cfg = CutoverConfig {
        source: Address::parse(&c.source)?,
        target: Address::parse(&c.target)?,
        state_path: c.state.clone(),
        quiet: Duration::from_secs_f64(c.quiet_for.max(0.0)),
        reverse: c.reverse,
        drop_capture: c.drop_capture,
    };
    let mut out = StreamWriter::stdout()?;
    let o = cutover::run(&cfg, &mut out)?;
    out.flush()?;
    let rows: u64 = o.report.streams.iter().map(|s| s.source_rows).sum();
    Ok(match &o.no_go {
        None => {
            crate::human::say(&format!(
                "ferry cutover: GO: {} holds every row of {} ({} tables, {rows} rows, keys, foreign keys and counters checked); {} changes drained, none since; point the application at {}",
                cfg.target.redacted(),
                cfg.source.redacted(),
                o.report.streams.len(),
                o.drained,
                cfg.target.redacted()
            ));
            if !cfg.drop_capture {
                crate::human::say(&format!(
                    "ferry cutover: the capture of {} stays (its triggers or slot go on recording, and a slot holds WAL until removed): when the rollback window closes, ferry capture remove {} --confirm",
                    cfg.source.redacted(),
                    cfg.source.redacted()
                ));
            }
            ExitStatus::Ok
        }
        Some(why) => {
            crate::human::say(&format!("ferry cutover: NO-GO: {why}"));
            ExitStatus::Differences
        }
    })
}
