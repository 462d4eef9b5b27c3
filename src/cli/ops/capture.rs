//! `ferry capture`: record a database's changes, for catch-up and cutover.

use crate::address::Address;
use crate::error::{ExitStatus, Result};
use crate::protocol::StreamWriter;
use crate::stage::capture::{self, CaptureAction};

const CAPTURE_EXAMPLES: &str = "\
Examples:
  ferry capture install sqlite:app.db            # triggers record every change from now on
  ferry capture install postgres://app@db/app    # a publication and a replication slot (ferry_app)
  ferry capture install d1://ACCOUNT_ID/DATABASE_ID   # D1: the same triggers, through its API
  ferry-export sqlite:app.db | ferry-import postgres://app@db/app --create      # the copy
  ferry-export sqlite:app.db --changes | ferry-import postgres://app@db/app     # what changed since
  ferry-export sqlite:app.db --follow | ferry-import postgres://app@db/app      # ...as it changes
  ferry capture status sqlite:app.db             # changes recorded and not yet trimmed
  ferry capture remove sqlite:app.db             # what removing capture would drop
  ferry capture remove sqlite:app.db --confirm   # drop it (only _ferry_changes and ferry's triggers)";

#[derive(Debug, clap::Args)]
#[command(after_long_help = CAPTURE_EXAMPLES)]
pub struct CaptureArgs {
    /// install, remove or status
    #[arg(value_enum)]
    pub action: Action,
    /// The database: sqlite:PATH or d1://ACCOUNT_ID/DATABASE_ID (triggers into _ferry_changes),
    /// or postgres://... (a publication and a logical replication slot; needs wal_level = logical)
    pub source: String,
    /// remove: act; without it, only print what would be dropped
    #[arg(long)]
    pub confirm: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Action {
    /// Start recording every insert, update and delete (SQLite, D1: triggers into
    /// _ferry_changes; PostgreSQL: a publication and a replication slot); run again after adding
    /// tables
    Install,
    /// Stop, and drop what capture made (the slot holds the server's WAL until then)
    Remove,
    /// Whether changes are captured, and how many wait
    Status,
}

pub(super) fn run_capture(c: &CaptureArgs) -> Result<ExitStatus> {
    let action = match c.action {
        Action::Install => CaptureAction::Install,
        Action::Remove => CaptureAction::Remove { confirm: c.confirm },
        Action::Status => CaptureAction::Status,
    };
    let mut out = StreamWriter::stdout()?;
    let address = Address::parse(&c.source)?;
    capture::run(&address, action, &mut out)?;
    if action == CaptureAction::Install {
        let src = address.redacted();
        tracing::info!(
            "next: copy the tables (ferry-export {src} | ferry-import TARGET --create), then follow the changes (ferry-export {src} --follow | ferry-import TARGET)"
        );
    }
    Ok(ExitStatus::Ok)
}
