//! `ferry capture install|remove|status`: start, stop and look at the capture of a database's
//! changes: SQLite through triggers into `_ferry_changes` ([`crate::connect::sqlite::capture`]),
//! PostgreSQL through a publication and a logical replication slot
//! ([`crate::connect::postgres::source::follow`]), D1 through the same triggers as SQLite, over
//! its API ([`crate::connect::d1::capture`]). Installing can be repeated; removing takes
//! away only what capture made, and shows its plan unless told to act.

use std::io::Write;

use crate::address::Address;
use crate::connect::d1::capture as d1_capture;
use crate::connect::d1::source::D1Source;
use crate::connect::postgres::source::{PgSource, follow};
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

/// What capture covers, or would drop: the lines `ferry capture` prints.
struct Said<'a, W: Write>(&'a mut StreamWriter<W>);

impl<W: Write> Said<'_, W> {
    fn line(&mut self, text: impl AsRef<str>) -> Result<()> {
        self.0.write_line(text.as_ref().as_bytes(), Kind::Other)
    }

    fn installed(&mut self, tables: &[String], left_out: &[(String, String)]) -> Result<()> {
        for t in tables {
            self.line(format!("capturing {t}"))?;
        }
        for (t, why) in left_out {
            self.line(format!("not capturing {t}: {why}"))?;
            tracing::warn!(table = %t, "not captured: {why}");
        }
        Ok(())
    }

    /// A change table's status: (changes waiting, the newest's position), or none.
    fn change_table(&mut self, pending: Option<(u64, u64)>) -> Result<()> {
        match pending {
            None => self.line("not capturing (ferry capture install to start)"),
            Some((pending, latest)) => self.line(format!(
                "capturing: {pending} changes recorded and not yet trimmed, newest at {latest}"
            )),
        }
    }

    /// A removal's statements; acted on by `act` when confirmed.
    fn remove(&mut self, statements: &[String], confirm: bool, act: impl FnOnce() -> Result<()>) -> Result<()> {
        let how = if confirm { "run" } else { "would run" };
        for s in statements {
            self.line(format!("{how}: {s}"))?;
        }
        if statements.is_empty() {
            tracing::info!("nothing to remove: no capture installed");
        } else if confirm {
            act()?;
            tracing::info!(statements = statements.len(), "capture removed");
        } else {
            tracing::info!("what removing capture would do; --confirm to do it");
        }
        Ok(())
    }
}

/// Before a change table goes: say what waits in it.
fn untrimmed(pending: Option<(u64, u64)>) {
    if let Some((pending, _)) = pending
        && pending > 0
    {
        tracing::warn!(
            pending,
            "changes not yet trimmed go with the change table (those a target acknowledged are in it already)"
        );
    }
}

/// Do `action` on the database at `address`, saying what on `out` (one line each).
pub(crate) fn run<W: Write>(address: &Address, action: CaptureAction, out: &mut StreamWriter<W>) -> Result<()> {
    let mut said = Said(out);
    match address {
        Address::Sqlite(path) => sqlite(path, &address.redacted(), action, &mut said)?,
        Address::Postgres(url) => postgres(url, action, &mut said)?,
        Address::D1(url) => d1(url, action, &mut said)?,
        other => {
            return Err(Error::usage(format!(
                "{}: ferry captures the changes of SQLite, PostgreSQL and D1 databases",
                other.redacted()
            )));
        }
    }
    said.0.flush()
}

fn sqlite<W: Write>(path: &std::path::Path, name: &str, action: CaptureAction, said: &mut Said<'_, W>) -> Result<()> {
    if !path.is_file() {
        return Err(Error::usage(format!("{name}: no such database file")));
    }
    let mut conn = capture::open_for_writing(path, name)?;
    match action {
        CaptureAction::Install => {
            let plan = capture::install_plan(&conn, name)?;
            capture::apply(&mut conn, name, &plan.statements)?;
            said.installed(&plan.tables, &plan.left_out)?;
            if !capture::is_wal(&conn, name)? {
                tracing::warn!(
                    "{name} is not in WAL mode: while a follower reads it, the application's writes wait (and the other way round), so a busy application sees pauses and the follower falls behind; `sqlite3 {} 'PRAGMA journal_mode=WAL'` lets them run together (it stays set)",
                    path.display()
                );
            }
            tracing::info!(
                tables = plan.tables.len(),
                "capture installed: every change is recorded from now on"
            );
        }
        CaptureAction::Remove { confirm } => {
            let statements = capture::remove_plan(&conn, name)?;
            untrimmed(capture::pending(&conn, name)?);
            said.remove(&statements, confirm, || capture::apply(&mut conn, name, &statements))?;
        }
        CaptureAction::Status => said.change_table(capture::pending(&conn, name)?)?,
    }
    Ok(())
}

fn d1<W: Write>(url: &str, action: CaptureAction, said: &mut Said<'_, W>) -> Result<()> {
    let mut src = D1Source::open(url)?;
    match action {
        CaptureAction::Install => {
            let plan = d1_capture::install_plan(&mut src)?;
            d1_capture::apply(&mut src, &plan.statements)?;
            said.installed(&plan.tables, &plan.left_out)?;
            tracing::info!(
                tables = plan.tables.len(),
                "capture installed: every change is recorded from now on"
            );
        }
        CaptureAction::Remove { confirm } => {
            let statements = d1_capture::remove_plan(&mut src)?;
            untrimmed(d1_capture::pending(&mut src)?);
            said.remove(&statements, confirm, || d1_capture::apply(&mut src, &statements))?;
        }
        CaptureAction::Status => said.change_table(d1_capture::pending(&mut src)?)?,
    }
    Ok(())
}

fn postgres<W: Write>(url: &str, action: CaptureAction, said: &mut Said<'_, W>) -> Result<()> {
    let mut src = PgSource::open(url)?;
    match action {
        CaptureAction::Install => {
            let plan = follow::install_plan(&mut src)?;
            follow::apply(&mut src, &plan.statements)?;
            said.installed(&plan.tables, &plan.left_out)?;
            tracing::info!(
                slot = %follow::slot_name(&src),
                "capture installed: the slot keeps every change from now on (and the WAL they are in, until a follower confirms them or capture is removed)"
            );
        }
        CaptureAction::Remove { confirm } => {
            let statements = follow::remove_plan(&mut src)?;
            said.remove(&statements, confirm, || follow::apply(&mut src, &statements))?;
        }
        CaptureAction::Status => match follow::status(&mut src)? {
            None => said.line("not capturing (ferry capture install to start)")?,
            Some((confirmed, retained, active)) => said.line(format!(
                "capturing: slot {} {}, confirmed up to {confirmed}, holding {retained} bytes of WAL",
                follow::slot_name(&src),
                if active { "in use" } else { "idle" }
            ))?,
        },
    }
    Ok(())
}
