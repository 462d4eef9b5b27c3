//! ferry rollback of a PostgreSQL target: put its tables back as they were before an import run.
//! The run journaled into the database itself (see `connect::postgres`, `Undo`): for each
//! existing table it wrote into, an undo table holding the key of every row it inserted and the
//! before-image of every row it overwrote, committed with those rows; the state file says which
//! tables the run created and where each undo table is.
//!
//! Contract (the same as for SQLite, `rollback_tables`):
//! - MUST change nothing without `confirm`: the plan is printed as NDJSON, a line per row to
//!   delete or restore and per table to drop.
//! - MUST, before acting, write a backup stream of everything it will change (an export of the
//!   rows under the journaled keys, and of every table it will drop), and an audit line per action.
//! - MUST undo in one transaction, newest entry first; for each key, the oldest entry of the run
//!   decides (the row it first replaced, or a delete when the run inserted it). Restores are
//!   UPDATEs in place: a delete-and-insert would cascade.
//! - MUST forget the run's commit markers, refuse to drop a table a later run wrote into, and be
//!   idempotent: the undo tables go in the same transaction, and entries are marked undone after.

use std::io::Write;
use std::path::Path;

use postgres::Client;
use serde_json::{Value as Json, json};

use crate::address::Address;
use crate::checkpoint::{Checkpoint, JournalRow};
use crate::connect::Selection;
use crate::connect::postgres::{PgAddress, pg_error};
use crate::connect::sqlite::quote;
use crate::error::{Context, Error, ErrorKind, Result};
use crate::protocol::{Kind, Schema, StreamWriter, now_rfc3339};
use crate::row::RowShape;

use super::rollback::{Audit, RollbackOutcome};
use super::rollback_tables::shown;

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

fn shape_of(r: &JournalRow) -> Result<RowShape> {
    let schema: Schema = serde_json::from_str(r.schema.as_deref().unwrap_or_default()).map_err(|e| {
        Error::new(
            ErrorKind::Checkpoint,
            format!("the journal's SCHEMA of {}: {e}", r.stream),
        )
    })?;
    RowShape::from_schema(&schema)
}

fn exists(client: &mut impl postgres::GenericClient, address: &str, name: &str) -> Result<bool> {
    client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
        .map(|r| r.get(0))
        .map_err(|e| pg_error(address, "looking up a table", e))
}

/// Quoted key columns, and the subquery giving each key's oldest entry (`b`).
fn first_entries(shape: &RowShape, undo: &str) -> (Vec<String>, String) {
    let keys: Vec<String> = shape.key.iter().map(|&i| quote(&shape.columns[i].name)).collect();
    let list = keys.join(", ");
    let sub = format!("(SELECT DISTINCT ON ({list}) * FROM {undo} ORDER BY {list}, _ferry_seq) b");
    (keys, sub)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn run<W: Write>(
    cp: &mut Checkpoint,
    run_id: &str,
    journal: &[JournalRow],
    confirm: bool,
    state_path: &Path,
    address: Option<&str>,
    audit: &mut Audit,
    out: &mut StreamWriter<W>,
) -> Result<RollbackOutcome> {
    let target = journal[0].target.clone();
    // The recorded address has no password: PGPASSWORD, or --target with the full address.
    let url = match address {
        Some(a) if Address::Postgres(a.to_owned()).redacted() != target => {
            return Err(Error::usage(format!(
                "--target {} is not the database run {run_id} imported into ({target})",
                Address::Postgres(a.to_owned()).redacted()
            )));
        }
        Some(a) => a.to_owned(),
        None => target.clone(),
    };
    let pg = PgAddress::parse(&url, "ferry-rollback")?;
    let mut client = pg.connect()?;

    let mut steps: Vec<Step<'_>> = Vec::new();
    let mut refused = Vec::new();
    for r in journal.iter().rev().filter(|r| r.undone_at.is_none()) {
        match r.action.as_str() {
            "undo" => {
                let (table, undo) = names(r)?;
                let Some(undo) = undo else { continue };
                // Gone: undone already (the state file was not told), nothing to do.
                if exists(&mut client, &target, &undo)? {
                    steps.push(Step::Undo {
                        row: r,
                        table,
                        undo,
                        shape: Box::new(shape_of(r)?),
                    });
                }
            }
            "create" | "empty" => {
                let (table, _) = names(r)?;
                let later = cp.journal_later_runs(&target, &r.table, run_id, r.id)?;
                if !later.is_empty() {
                    refused.push(super::rollback_tables::later_runs(r, &later));
                } else if r.action == "create" {
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
        let (cols, sub) = first_entries(shape, undo);
        let pairs: Vec<String> = shape
            .key
            .iter()
            .zip(&cols)
            .map(|(&i, q)| {
                format!(
                    "{}, b.{q}",
                    crate::connect::postgres::literal(Some(&shape.columns[i].name))
                )
            })
            .collect();
        let sql = format!(
            "SELECT b._ferry_inserted, json_build_object({})::text FROM {sub} ORDER BY b._ferry_seq DESC",
            pairs.join(", ")
        );
        for r in client
            .query(&sql, &[])
            .map_err(|e| pg_error(&target, "reading the rollback journal", e))?
        {
            let text: String = r.get(1);
            keys.push(KeyAction {
                step: at,
                inserted: r.get(0),
                key: serde_json::from_str(&text).unwrap_or(Json::String(text)),
            });
        }
    }

    let mut outcome = RollbackOutcome {
        tables: true,
        ..Default::default()
    };
    let act = confirm && refused.is_empty();
    if act && !steps.is_empty() {
        let backup = write_backup(&url, &steps, run_id, state_path)?;
        tracing::info!(backup = %backup.display(), "wrote what the rollback changes");
        for k in &keys {
            audit.write(&json!({
                "at": now_rfc3339(), "action": if k.inserted { "delete" } else { "restore" }, "run": run_id,
                "target": target, "table": table_of(&steps[k.step]).0, "key": k.key,
            }))?;
        }
        for st in &steps {
            if let Some(action) = table_action(st) {
                audit.write(&json!({
                    "at": now_rfc3339(), "action": action, "run": run_id, "target": target,
                    "table": table_of(st).0,
                }))?;
            }
        }
        undo_all(&mut client, &target, run_id, &steps, &mut outcome)?;
        let ids: Vec<i64> = journal.iter().filter(|r| r.undone_at.is_none()).map(|r| r.id).collect();
        cp.journal_undone(&ids)?;
    }

    for k in &keys {
        let action = if k.inserted { "delete" } else { "restore" };
        if !act {
            if k.inserted {
                outcome.would_delete += 1;
            } else {
                outcome.would_restore += 1;
            }
        }
        let (table, stream) = table_of(&steps[k.step]);
        let line = json!({"type": "PLAN", "action": shown(act, action), "target": target, "stream": stream, "table": table, "key": k.key});
        out.write_line(line.to_string().as_bytes(), Kind::Other)?;
    }
    for st in &steps {
        let Some(action) = table_action(st) else { continue };
        if !act && action == "drop_table" {
            outcome.would_drop += 1;
        } else if !act {
            outcome.would_empty += 1;
        }
        let (table, stream) = table_of(st);
        let line =
            json!({"type": "PLAN", "action": shown(act, action), "target": target, "stream": stream, "table": table});
        out.write_line(line.to_string().as_bytes(), Kind::Other)?;
    }
    for why in &refused {
        let line = json!({"type": "PLAN", "action": "refuse", "target": target, "why": why});
        out.write_line(line.to_string().as_bytes(), Kind::Other)?;
    }
    out.flush()?;
    outcome.refused = refused.len() as u64;
    if confirm && !refused.is_empty() {
        return Err(Error::usage(format!(
            "run {run_id} cannot be rolled back as it stands: {}; nothing was changed",
            refused.join("; ")
        )));
    }
    Ok(outcome)
}

/// The table's name as the journal shows it, and its stream.
fn table_of<'a>(st: &'a Step<'_>) -> (&'a str, &'a str) {
    let r = match st {
        Step::Undo { row, .. } | Step::Drop { row, .. } | Step::Empty { row, .. } => row,
    };
    (&r.table, &r.stream)
}

/// What a step does to a whole table, if that is what it does.
fn table_action(st: &Step<'_>) -> Option<&'static str> {
    match st {
        Step::Undo { .. } => None,
        Step::Drop { .. } => Some("drop_table"),
        Step::Empty { .. } => Some("empty_table"),
    }
}

/// Save, as a ferry stream, every row the steps will change: an export of the rows under the
/// undo tables' keys, and of every table to be dropped. Its path.
fn write_backup(url: &str, steps: &[Step<'_>], run_id: &str, state_path: &Path) -> Result<std::path::PathBuf> {
    let mut selection = Selection::default();
    for st in steps {
        match st {
            Step::Undo { row, undo, shape, .. } => {
                let (keys, _) = first_entries(shape, undo);
                let keys = keys.join(", ");
                selection.tables.push(row.table.clone());
                selection
                    .filters
                    .push((row.table.clone(), format!("({keys}) IN (SELECT {keys} FROM {undo})")));
            }
            Step::Drop { row, .. } | Step::Empty { row, .. } => selection.tables.push(row.table.clone()),
        }
    }
    let path = super::rollback_tables::backup_path(state_path, run_id);
    let e = || format!("writing the backup {}", path.display());
    let file = std::fs::File::create(&path).ctx(ErrorKind::Io, e)?;
    let mut w = StreamWriter::new(std::io::BufWriter::new(file));
    let cfg = super::export::ExportConfig::of(Address::Postgres(url.to_owned()), selection, state_path.to_path_buf());
    super::export::run(&cfg, &mut w)?;
    let file = w
        .into_inner()?
        .into_inner()
        .map_err(|err| Error::new(ErrorKind::Io, e()).with_source(err.into_error()))?;
    file.sync_all().ctx(ErrorKind::Io, e)?;
    Ok(path)
}

/// Every step in one transaction, foreign keys and triggers off where the role may do that.
fn undo_all(
    client: &mut Client,
    target: &str,
    run_id: &str,
    steps: &[Step<'_>],
    outcome: &mut RollbackOutcome,
) -> Result<()> {
    let e = |err| pg_error(target, &format!("rolling back run {run_id}"), err);
    // Replica mode fires no foreign-key triggers: no cascade, no order between tables. Only a
    // superuser may set it; otherwise the keys hold, and undoing newest first keeps them.
    if client.batch_execute("SET session_replication_role = replica").is_err() {
        tracing::info!("not allowed to set session_replication_role: foreign keys stay checked during the rollback");
    }
    let mut tx = client.transaction().map_err(e)?;
    for st in steps {
        match st {
            Step::Undo { table, undo, shape, .. } => {
                let (keys, sub) = first_entries(shape, undo);
                let matched: Vec<String> = keys.iter().map(|k| format!("t.{k} = b.{k}")).collect();
                let matched = matched.join(" AND ");
                let others: Vec<String> = shape
                    .columns
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !shape.key.contains(i))
                    .map(|(_, c)| quote(&c.name))
                    .collect();
                if !others.is_empty() {
                    let sets: Vec<String> = others.iter().map(|c| format!("{c} = b.{c}")).collect();
                    outcome.restored += tx
                        .execute(
                            &format!(
                                "UPDATE {table} AS t SET {} FROM {sub} WHERE NOT b._ferry_inserted AND {matched}",
                                sets.join(", ")
                            ),
                            &[],
                        )
                        .map_err(e)?;
                }
                // A replaced row deleted since: put it back.
                let cols: Vec<String> = shape.columns.iter().map(|c| quote(&c.name)).collect();
                let from_b: Vec<String> = cols.iter().map(|c| format!("b.{c}")).collect();
                let reinserted = tx
                    .execute(
                        &format!(
                            "INSERT INTO {table} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {sub} \
                             WHERE NOT b._ferry_inserted AND NOT EXISTS (SELECT 1 FROM {table} t WHERE {matched})",
                            cols.join(", "),
                            from_b.join(", ")
                        ),
                        &[],
                    )
                    .map_err(e)?;
                if others.is_empty() {
                    outcome.restored += reinserted;
                }
                outcome.deleted += tx
                    .execute(
                        &format!("DELETE FROM {table} AS t USING {sub} WHERE b._ferry_inserted AND {matched}"),
                        &[],
                    )
                    .map_err(e)?;
                tx.batch_execute(&format!("DROP TABLE {undo}")).map_err(e)?;
            }
            Step::Drop { table, .. } => {
                tx.batch_execute(&format!("DROP TABLE IF EXISTS {table}")).map_err(e)?;
                outcome.dropped += 1;
            }
            Step::Empty { table, .. } => {
                if exists(&mut tx, target, table)? {
                    outcome.deleted += tx.execute(&format!("DELETE FROM {table}"), &[]).map_err(e)?;
                }
            }
        }
    }
    // The run's commit markers, wherever the import kept them: the same import may run again.
    let markers: Vec<String> = tx
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relname = '_ferry_commits' AND c.relkind = 'r'",
            &[],
        )
        .map_err(e)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for m in markers {
        tx.execute(&format!("DELETE FROM {m} WHERE run_id = $1"), &[&run_id])
            .map_err(e)?;
    }
    tx.commit().map_err(e)?;
    let _ = client.batch_execute("RESET session_replication_role");
    Ok(())
}
