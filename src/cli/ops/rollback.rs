//! `ferry rollback`: undo an import run, plan first.

use std::path::PathBuf;

use crate::checkpoint::DEFAULT_STATE_PATH;
use crate::error::{ExitStatus, Result};
use crate::protocol::StreamWriter;
use crate::stage::rollback::{self, RollbackConfig};

const ROLLBACK_EXAMPLES: &str = "\
Examples:
  ferry rollback --last                           # the plan for the last import: nothing changes
  ferry rollback --last --confirm                 # do it; the audit log is .ferry/audit.ndjson
  ferry rollback --batch 0193a5c2-7f1e --confirm  # one run, by the id `ferry status` shows
  ferry rollback --batch 0193a5c2-7f1e --failed-only --confirm   # only what it left unfinished
  ferry rollback --full --db-only                 # every import into databases, newest first
  ferry rollback --last --target postgres://app:PASSWORD@db/app --confirm   # give the password";

#[derive(Debug, clap::Args)]
#[command(after_long_help = ROLLBACK_EXAMPLES)]
pub struct RollbackArgs {
    /// The run to undo (its id, or a unique prefix; the `batch` of its upload results)
    #[arg(long, value_name = "RUN_ID", required_unless_present_any = ["last", "full"], conflicts_with_all = ["last", "full"])]
    pub batch: Option<String>,
    /// The most recent import run
    #[arg(long, conflicts_with = "full")]
    pub last: bool,
    /// Every import run in the state file, newest first: the whole migration
    #[arg(long)]
    pub full: bool,
    /// With --full: only runs into databases
    #[arg(long, requires = "full", conflicts_with = "objects_only")]
    pub db_only: bool,
    /// With --full: only runs into object stores
    #[arg(long, requires = "full")]
    pub objects_only: bool,
    /// Act; without it, only print what would happen
    #[arg(long)]
    pub confirm: bool,
    /// Delete objects even when their original file is gone from the source directory
    #[arg(long)]
    pub force: bool,
    /// Only what failed or was left unfinished (objects of files not completed, multipart
    /// uploads a killed run left; a run into tables that did not complete), not what completed
    #[arg(long)]
    pub failed_only: bool,
    /// The state file
    #[arg(long, value_name = "PATH", default_value = DEFAULT_STATE_PATH)]
    pub state: PathBuf,
    /// S3: the endpoint URL, when not the one recorded [env: AWS_ENDPOINT_URL]
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// PostgreSQL: the database's full address with its password, when PGPASSWORD does not
    /// give it (the state file keeps addresses without passwords)
    #[arg(long, value_name = "ADDRESS")]
    pub target: Option<String>,
}

pub(super) fn run_rollback(r: &RollbackArgs) -> Result<ExitStatus> {
    let cfg = RollbackConfig {
        state_path: r.state.clone(),
        batch: r.batch.clone().unwrap_or_default(),
        last: r.last,
        full: r.full,
        db_only: r.db_only,
        objects_only: r.objects_only,
        confirm: r.confirm,
        force: r.force,
        failed_only: r.failed_only,
        s3: crate::connect::objects::s3::S3Settings {
            endpoint: r.endpoint.clone(),
            region: None,
        },
        target: r.target.clone(),
    };
    let mut out = StreamWriter::stdout()?;
    let o = rollback::run(&cfg, &mut out)?;
    crate::human::say(&rollback_summary(&o, r.confirm));
    Ok(ExitStatus::Ok)
}

/// What the tables a rollback drops or empties held, when they held anything.
fn tables_holding(rows: u64) -> String {
    if rows == 0 {
        String::new()
    } else {
        format!(" (the tables dropped or emptied held {rows} rows, whoever wrote them; the backup keeps them)")
    }
}

/// The closing line of a rollback: what it did (or, as a dry run, would do) to rows and objects.
fn rollback_summary(o: &rollback::RollbackOutcome, confirm: bool) -> String {
    let objects = o.deleted + o.would_delete + o.aborted + o.would_abort + o.kept + o.refused > 0;
    let rows =
        o.rows_deleted + o.restored + o.dropped + o.would_delete_rows + o.would_restore + o.would_drop + o.would_empty;
    if !objects && o.unknown_uploads == 0 && rows == 0 && o.already_undone > 0 {
        return format!(
            "ferry rollback: nothing to undo: already rolled back ({} journal entries and objects undone by an earlier rollback; `ferry status` shows the run)",
            o.already_undone
        );
    }
    if !o.tables && !objects && o.unknown_uploads == 0 {
        return "ferry rollback: nothing to undo (the plan on stdout says why)".into();
    }
    let mut parts = Vec::new();
    if confirm {
        if o.tables {
            parts.push(format!(
                "deleted {} rows, restored {}, dropped {} tables{}",
                o.rows_deleted,
                o.restored,
                o.dropped,
                tables_holding(o.table_rows)
            ));
        }
        if objects || !o.tables {
            let left = match o.kept {
                0 => "left none".to_owned(),
                n => format!("left {n} (see why on stdout)"),
            };
            parts.push(format!(
                "deleted {} objects, aborted {} unfinished multipart uploads, {left}",
                o.deleted, o.aborted
            ));
        }
    } else {
        if o.tables {
            parts.push(format!(
                "would delete {} rows, restore {}, drop {} tables, empty {} tables{}",
                o.would_delete_rows,
                o.would_restore,
                o.would_drop,
                o.would_empty,
                tables_holding(o.table_rows)
            ));
        }
        if objects || !o.tables {
            parts.push(format!(
                "would delete {} objects, abort {} unfinished multipart uploads, leave {}",
                o.would_delete, o.would_abort, o.kept
            ));
        }
    }
    let head = if confirm {
        "ferry rollback"
    } else {
        "ferry rollback (dry run)"
    };
    let tail = if confirm {
        if o.tables && o.rows_deleted + o.restored + o.dropped > 0 {
            "; what changed was saved first (rollback-*.ndjson next to the state file)"
        } else {
            ""
        }
    } else {
        "; --confirm to act"
    };
    if o.unjournaled > 0 {
        parts.push(format!(
            "the rows the run wrote into {} existing tables without a journal stay (cannot_undo on stdout)",
            o.unjournaled
        ));
    }
    let refused = if o.refused > 0 {
        format!("; refused {}", o.refused)
    } else {
        String::new()
    };
    format!("{head}: {}{refused}{tail}", parts.join("; "))
}
