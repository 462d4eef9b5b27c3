//! `ferry capture install|remove|status`: start, stop and look at the capture of a database's
//! changes (SQLite: triggers into `_ferry_changes`, see [`crate::connect::sqlite::capture`]).
//! Installing is one transaction and can be repeated; removing takes away only what capture
//! made, and shows its plan unless told to act.

use std::io::Write;

use crate::address::Address;
use crate::connect::sqlite::capture;
use crate::error::{Error, Result};
use crate::protocol::{Kind, StreamWriter};

/// What `ferry capture` is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CaptureAction {
    Install,
    /// Remove; acting only when `confirm`.
    Remove {
        confirm: bool,
    },
    Status,
}

/// Do `action` on the database at `address`, saying what on `out` (one line each).
pub(crate) fn run<W: Write>(address: &Address, action: CaptureAction, out: &mut StreamWriter<W>) -> Result<()> {
    let Address::Sqlite(path) = address else {
        return Err(Error::usage(format!(
            "{}: ferry captures the changes of SQLite databases (a PostgreSQL source is followed through logical replication instead)",
            address.redacted()
        )));
    };
    let name = address.redacted();
    if !path.is_file() {
        return Err(Error::usage(format!("{name}: no such database file")));
    }
    let mut conn = capture::open_for_writing(path, &name)?;
    let say = |out: &mut StreamWriter<W>, line: String| out.write_line(line.as_bytes(), Kind::Other);
    match action {
        CaptureAction::Install => {
            let plan = capture::install_plan(&conn, &name)?;
            capture::apply(&mut conn, &name, &plan.statements)?;
            for t in &plan.tables {
                say(out, format!("capturing {t}"))?;
            }
            for (t, why) in &plan.left_out {
                say(out, format!("not capturing {t}: {why}"))?;
                tracing::warn!(table = %t, "not captured: {why}");
            }
            tracing::info!(
                tables = plan.tables.len(),
                "capture installed: every change is recorded from now on; copy the tables now, then export the changes (ferry-export {name} --changes)"
            );
        }
        CaptureAction::Remove { confirm } => {
            let statements = capture::remove_plan(&conn, &name)?;
            if let Some((pending, _)) = capture::pending(&conn, &name)?
                && pending > 0
            {
                tracing::warn!(
                    pending,
                    "changes not yet trimmed go with the change table (those a target acknowledged are in it already)"
                );
            }
            for s in &statements {
                say(out, s.clone())?;
            }
            if statements.is_empty() {
                tracing::info!("nothing to remove: no capture installed");
            } else if confirm {
                capture::apply(&mut conn, &name, &statements)?;
                tracing::info!(statements = statements.len(), "capture removed");
            } else {
                tracing::info!("what removing capture would do; --confirm to do it");
            }
        }
        CaptureAction::Status => match capture::pending(&conn, &name)? {
            None => say(out, "not capturing (ferry capture install to start)".into())?,
            Some((pending, latest)) => say(
                out,
                format!("capturing: {pending} changes recorded and not yet trimmed, newest at {latest}"),
            )?,
        },
    }
    out.flush()
}
