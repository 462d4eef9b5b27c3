//! Rollback of a database that journals into itself, PostgreSQL and D1 (each through its
//! [`InPlaceJournal`]): put its tables back as they were before an import run. For each existing table the run wrote into, the
//! import kept an undo table in the database (see `Undo` in `connect::postgres::target` and
//! `connect::d1::target`), written in the same transaction as the rows: the key of every row it inserted
//! and the before-image of every row it overwrote. The state file says which tables the run
//! created or found empty, and where each undo table is.
//!
//! Contract (the same as for SQLite, [`super::sqlite`]):
//! - MUST change nothing without `confirm`: the plan is printed as NDJSON, a line per row to
//!   delete or restore and per table to drop or empty.
//! - MUST, before acting, write a backup stream of everything it will change (an export of the
//!   rows under the journaled keys, and of every table it will drop or empty), and an audit line
//!   per action.
//! - MUST undo in one transaction, newest entry first; for each key, the oldest entry of the run
//!   decides (the row it first replaced, or a delete when the run inserted it). Restores are
//!   UPDATEs in place: a delete-and-insert would cascade.
//! - MUST forget the run's commit markers, refuse to drop or empty a table a later run wrote
//!   into, and be idempotent: the undo tables go in the same transaction, and entries are marked
//!   undone after.

use std::io::Write;
use std::path::Path;

use serde_json::Value as Json;

use super::{Audit, RollbackOutcome, Undoing, backup_path, later_runs, refusals, shape_of};
use crate::address::Address;
use crate::checkpoint::{JournalAction, JournalRow};
use crate::connect::Selection;
use crate::connect::journal::InPlaceJournal;
use crate::connect::sql::quote;
use crate::error::{Context, Error, ErrorKind, Result};
use crate::protocol::side::{Action, AuditEntry, Plan};
use crate::protocol::{Kind, StreamWriter};
use crate::row::RowShape;

/// What one journal entry asks for, newest first.
enum Step<'a> {
    /// Put back what the run changed in an existing table, from its undo table.
    Undo {
        row: &'a JournalRow,
        table: String,
        undo: String,
        shape: Box<RowShape>,
    },
    /// Drop a table the run created.
    Drop { row: &'a JournalRow, table: String },
    /// Delete every row of a table that was empty before the run.
    Empty { row: &'a JournalRow, table: String },
}

/// A key the undo will delete (`inserted`) or restore, for the plan and the audit log.
struct KeyAction {
    step: usize,
    inserted: bool,
    key: Json,
}

/// The table's SQL name and its undo table's, as the import recorded them.
fn names(r: &JournalRow) -> Result<(String, Option<String>)> {
    let bad = || {
        Error::new(
            ErrorKind::Checkpoint,
            format!("the journal's entry for {} does not say where the table is", r.table),
        )
    };
    let v: Json = serde_json::from_str(r.key.as_deref().ok_or_else(bad)?).map_err(|_| bad())?;
    let sql = v.get("sql").and_then(Json::as_str).ok_or_else(bad)?.to_owned();
    Ok((sql, v.get("undo").and_then(Json::as_str).map(str::to_owned)))
}

/// The subquery (`b`) giving each key's oldest entry in an undo table.
fn first_entries(shape: &RowShape, undo: &str) -> String {
    let keys = key_columns(shape).join(", ");
    format!(
        "(SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY {keys} ORDER BY _ferry_seq) AS _ferry_rn FROM {undo}) AS f \
         WHERE _ferry_rn = 1) AS b"
    )
}

fn key_columns(shape: &RowShape) -> Vec<String> {
    shape.key.iter().map(|&i| quote(&shape.columns[i].name)).collect()
}

/// The statements undoing one step, and which of them count restored, deleted and dropped rows.
fn statements(db: &dyn InPlaceJournal, st: &Step<'_>) -> Vec<(String, Count)> {
    match st {
        Step::Undo { table, undo, shape, .. } => {
            let sub = first_entries(shape, undo);
            let keys = key_columns(shape);
            let matched: Vec<String> = keys.iter().map(|k| format!("t.{k} = b.{k}")).collect();
            let matched = matched.join(" AND ");
            let cols: Vec<String> = shape.columns.iter().map(|c| quote(&c.name)).collect();
            let others: Vec<&String> = cols.iter().filter(|c| !keys.contains(c)).collect();
            let mut out = Vec::new();
            if !others.is_empty() {
                let sets: Vec<String> = others.iter().map(|c| format!("{c} = b.{c}")).collect();
                out.push((
                    format!(
                        "UPDATE {table} AS t SET {} FROM {sub} WHERE NOT b._ferry_inserted AND {matched}",
                        sets.join(", ")
                    ),
                    Count::Restored,
                ));
            }
            // A replaced row deleted since: put back.
            let from_b: Vec<String> = cols.iter().map(|c| format!("b.{c}")).collect();
            out.push((
                format!(
                    "INSERT INTO {table} ({}){} SELECT {} FROM {sub} \
                     WHERE NOT b._ferry_inserted AND NOT EXISTS (SELECT 1 FROM {table} AS t WHERE {matched})",
                    cols.join(", "),
                    db.insert_keeping_identity(),
                    from_b.join(", ")
                ),
                if others.is_empty() {
                    Count::Restored
                } else {
                    Count::None
                },
            ));
            let from_b: Vec<String> = keys.iter().map(|k| format!("b.{k}")).collect();
            out.push((
                format!(
                    "DELETE FROM {table} WHERE ({}) IN (SELECT {} FROM {sub} WHERE b._ferry_inserted)",
                    keys.join(", "),
                    from_b.join(", ")
                ),
                Count::Deleted,
            ));
            out.push((format!("DROP TABLE {undo}"), Count::None));
            out
        }
        Step::Drop { table, .. } => vec![(format!("DROP TABLE IF EXISTS {table}"), Count::Dropped)],
        Step::Empty { table, .. } => vec![(format!("DELETE FROM {table}"), Count::Deleted)],
    }
}

/// What a statement's changed rows count as.
#[derive(Clone, Copy, PartialEq)]
enum Count {
    Restored,
    Deleted,
    Dropped,
    None,
}

/// Undo run `run_id` (its journal entries `journal`) as `cfg` says.
pub(crate) fn run<W: Write>(
    u: Undoing<'_>,
    journal: &[JournalRow],
    out: &mut StreamWriter<W>,
) -> Result<RollbackOutcome> {
    let Undoing {
        cp,
        run_id,
        before,
        cfg,
        audit,
    } = u;
    let (confirm, state_path) = (cfg.confirm, cfg.state_path.as_path());
    let target = journal[0].target.clone();
    // The recorded address has no password: PGPASSWORD, or --target with the full address.
    let url = match cfg.target.as_deref() {
        Some(a) => {
            let given = Address::parse(a)?.redacted();
            if given != target {
                return Err(Error::usage(format!(
                    "--target {given} is not the database run {run_id} imported into ({target})"
                )));
            }
            a.to_owned()
        }
        None => target.clone(),
    };
    let source = Address::parse(&url)?;
    let Some(mut db) = crate::connect::open_in_place_journal(&source)? else {
        return Err(Error::usage(format!(
            "run {run_id} imported into {target}, which keeps no rollback journal of its own"
        )));
    };

    let mut steps: Vec<Step<'_>> = Vec::new();
    let mut refused = Vec::new();
    for r in journal.iter().rev().filter(|r| r.undone_at.is_none()) {
        match r.action {
            JournalAction::Undo => {
                let (table, undo) = names(r)?;
                let Some(undo) = undo else { continue };
                // Gone: undone already (the state file was not told), nothing to do.
                if db.exists(&undo)? {
                    steps.push(Step::Undo {
                        row: r,
                        table,
                        undo,
                        shape: Box::new(shape_of(r)?),
                    });
                }
            }
            JournalAction::Create | JournalAction::Empty => {
                let (table, _) = names(r)?;
                let later = cp.journal_later_runs(&target, &r.table, run_id, r.id, before)?;
                if !later.is_empty() {
                    refused.push(later_runs(r, &later));
                } else if r.action == JournalAction::Create {
                    steps.push(Step::Drop { row: r, table });
                } else {
                    steps.push(Step::Empty { row: r, table });
                }
            }
            // `stream`: a table the run wrote into with no key to journal by (warned at import).
            _ => {}
        }
    }

    // Every key the undo touches, newest first.
    let mut keys: Vec<KeyAction> = Vec::new();
    for (at, st) in steps.iter().enumerate() {
        let Step::Undo { undo, shape, .. } = st else { continue };
        for (inserted, key) in db.keys(shape, &first_entries(shape, undo))? {
            keys.push(KeyAction {
                step: at,
                inserted,
                key,
            });
        }
    }

    let mut outcome = RollbackOutcome {
        tables: true,
        already_undone: journal.iter().filter(|r| r.undone_at.is_some()).count() as u64,
        ..Default::default()
    };
    // What the tables to drop or empty hold now: rows put in since by others go with them (the
    // backup keeps them), and the plan says how many.
    let mut held = Vec::new();
    for st in &steps {
        held.push(match table_action(st) {
            Some(_) => db.count(&table_sql(st))?,
            None => 0,
        });
    }
    outcome.table_rows = held.iter().sum();
    let act = confirm && refused.is_empty();
    if act && !steps.is_empty() {
        // Not while an import writes into them.
        let tables: Vec<String> = steps.iter().map(table_sql).collect();
        db.lock(&tables)?;
        let backup = write_backup(source, &steps, run_id, state_path)?;
        tracing::info!(backup = %backup.display(), "wrote what the rollback changes");
        audit_ahead(audit, run_id, &target, &keys, &steps)?;
        let undone = undo_all(db.as_mut(), run_id, &steps, &mut outcome);
        db.unlock();
        if let Err(e) = &undone {
            audit.failed(run_id, &target, e)?;
        }
        undone?;
        let ids: Vec<i64> = journal.iter().filter(|r| r.undone_at.is_none()).map(|r| r.id).collect();
        cp.journal_undone(&ids)?;
    }

    plan_lines(&target, &steps, &keys, &held, act, &mut outcome, out)?;
    refusals(journal, &refused, run_id, confirm, outcome, out)
}

/// A PLAN line for every key the undo touches and every table it drops or empties (carried out
/// when `act`), counted in `outcome`.
fn plan_lines<W: Write>(
    target: &str,
    steps: &[Step<'_>],
    keys: &[KeyAction],
    held: &[u64],
    act: bool,
    outcome: &mut RollbackOutcome,
    out: &mut StreamWriter<W>,
) -> Result<()> {
    for k in keys {
        let action = if k.inserted { Action::Delete } else { Action::Restore };
        if !act {
            if k.inserted {
                outcome.would_delete_rows += 1;
            } else {
                outcome.would_restore += 1;
            }
        }
        let (table, stream) = table_of(&steps[k.step]);
        let mut line = Plan::on_table(action.shown(act), target, stream, table);
        line.key = Some(k.key.clone());
        out.write_json(&line, Kind::Other)?;
    }
    for (st, rows) in steps.iter().zip(held) {
        let Some(action) = table_action(st) else { continue };
        if !act && action == Action::DropTable {
            outcome.would_drop += 1;
        } else if !act {
            outcome.would_empty += 1;
        }
        let (table, stream) = table_of(st);
        let mut line = Plan::on_table(action.shown(act), target, stream, table);
        line.rows = Some(*rows);
        out.write_json(&line, Kind::Other)?;
    }
    Ok(())
}

/// An audit line for every action of the undo, written before any is carried out.
fn audit_ahead(audit: &mut Audit, run_id: &str, target: &str, keys: &[KeyAction], steps: &[Step<'_>]) -> Result<()> {
    for k in keys {
        let action = if k.inserted { Action::Delete } else { Action::Restore };
        let mut entry = AuditEntry::now(action, run_id, target);
        entry.table = Some(table_of(&steps[k.step]).0.to_owned());
        entry.key = Some(k.key.clone());
        audit.write(&entry)?;
    }
    for st in steps {
        if let Some(action) = table_action(st) {
            let mut entry = AuditEntry::now(action, run_id, target);
            entry.table = Some(table_of(st).0.to_owned());
            audit.write(&entry)?;
        }
    }
    Ok(())
}

/// The SQL name of the table a step works on.
fn table_sql(st: &Step<'_>) -> String {
    match st {
        Step::Undo { table, .. } | Step::Drop { table, .. } | Step::Empty { table, .. } => table.clone(),
    }
}

/// The table's name as the journal shows it, and its stream.
fn table_of<'a>(st: &'a Step<'_>) -> (&'a str, &'a str) {
    let r = match st {
        Step::Undo { row, .. } | Step::Drop { row, .. } | Step::Empty { row, .. } => row,
    };
    (&r.table, &r.stream)
}

/// What a step does to a whole table, if that is what it does.
fn table_action(st: &Step<'_>) -> Option<Action> {
    match st {
        Step::Undo { .. } => None,
        Step::Drop { .. } => Some(Action::DropTable),
        Step::Empty { .. } => Some(Action::EmptyTable),
    }
}

/// Save, as a ferry stream, every row the steps will change: an export of the rows under the
/// undo tables' keys, and of every table to be dropped. Its path.
fn write_backup(source: Address, steps: &[Step<'_>], run_id: &str, state_path: &Path) -> Result<std::path::PathBuf> {
    let mut selection = Selection::default();
    for st in steps {
        match st {
            Step::Undo { row, undo, shape, .. } => {
                let keys = key_columns(shape).join(", ");
                selection.tables.push(row.table.clone());
                selection
                    .filters
                    .push((row.table.clone(), format!("({keys}) IN (SELECT {keys} FROM {undo})")));
            }
            Step::Drop { row, .. } | Step::Empty { row, .. } => selection.tables.push(row.table.clone()),
        }
    }
    let path = backup_path(state_path, run_id);
    let e = || format!("writing the backup {}", path.display());
    let file = std::fs::File::create(&path).ctx(ErrorKind::Io, e)?;
    let mut w = StreamWriter::new(std::io::BufWriter::new(file));
    let cfg = crate::stage::export::ExportConfig::of(source, selection, state_path.to_path_buf());
    crate::stage::export::run(&cfg, &mut w)?;
    let file = w
        .into_inner()?
        .into_inner()
        .map_err(|err| Error::new(ErrorKind::Io, e()).with_source(err.into_error()))?;
    file.sync_all().ctx(ErrorKind::Io, e)?;
    Ok(path)
}

/// Every step in one transaction, and the run's commit markers forgotten (the same import
/// may run again).
fn undo_all(
    db: &mut dyn InPlaceJournal,
    run_id: &str,
    steps: &[Step<'_>],
    outcome: &mut RollbackOutcome,
) -> Result<()> {
    let mut stmts: Vec<(String, Count)> = steps.iter().flat_map(|st| statements(db, st)).collect();
    for sql in db.forget_markers(run_id)? {
        stmts.push((sql, Count::None));
    }
    let sqls: Vec<String> = stmts.iter().map(|(s, _)| s.clone()).collect();
    let changed = db.apply(&format!("rolling back run {run_id}"), &sqls)?;
    for ((_, count), n) in stmts.iter().zip(changed) {
        match count {
            Count::Restored => outcome.restored += n,
            Count::Deleted => outcome.rows_deleted += n,
            Count::Dropped => outcome.dropped += 1,
            Count::None => {}
        }
    }
    Ok(())
}
