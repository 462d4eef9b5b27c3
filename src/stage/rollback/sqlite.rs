//! Rollback of a SQLite target: put it back as it was before an import run, from the
//! run's journal in the state file (the keys it inserted, the before-image of every row it
//! overwrote, the tables it created).
//!
//! Contract:
//! - MUST change nothing without `confirm`: the plan (each row it would delete or restore, each
//!   table it would drop) is printed as NDJSON.
//! - MUST, before acting, write a backup stream of everything it will change (the rows now under
//!   the journaled keys, every row of a table it will drop), and an audit line per action.
//! - MUST undo in one transaction, newest entry first, and forget the run's commit markers in
//!   the target, so the same import run again writes its rows again.
//! - MUST refuse to drop a table the run created while a later run wrote into it.
//! - MUST be idempotent: entries undone are marked, and a second rollback has nothing to do.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use rusqlite::Connection;
use serde_json::{Value as Json, json};

use super::{RollbackOutcome, Undoing, backup_path, later_runs, refusals, shape_of};
use crate::checkpoint::{Checkpoint, JournalAction, JournalRow};
use crate::connect::sql::{key_condition, quote};
use crate::connect::sqlite::{row_values, table_exists};
use crate::error::{Context, Error, ErrorKind, Result};
use crate::protocol::side::{Action, AuditEntry, Plan};
use crate::protocol::{Kind, StreamWriter};
use crate::row::RowShape;
use crate::value::{self, Value};

/// One step of the undo. `values` is a row of the stream's shape: a whole before-image to
/// restore, or (to delete) the key's columns, the others null.
enum Step<'a> {
    Delete {
        row: &'a JournalRow,
        values: Vec<Value>,
    },
    Restore {
        row: &'a JournalRow,
        values: Vec<Value>,
    },
    Drop {
        row: &'a JournalRow,
    },
    /// Delete every row of a table that was empty before the run.
    Empty {
        row: &'a JournalRow,
    },
}

impl Step<'_> {
    fn row(&self) -> &JournalRow {
        match self {
            Step::Delete { row, .. } | Step::Restore { row, .. } | Step::Drop { row } | Step::Empty { row } => row,
        }
    }

    /// The action's name, and the row's key (as JSON) for a delete or a restore.
    fn describe(&self, streams: &HashMap<&str, Stream>) -> (Action, Option<Json>) {
        let key = |values: &[Value]| {
            streams
                .get(self.row().stream.as_str())
                .map(|s| s.shape.key_json(|i| values[i].as_ref()))
        };
        match self {
            Step::Delete { values, .. } => (Action::Delete, key(values)),
            Step::Restore { values, .. } => (Action::Restore, key(values)),
            Step::Drop { .. } => (Action::DropTable, None),
            Step::Empty { .. } => (Action::EmptyTable, None),
        }
    }
}

struct Stream {
    shape: RowShape,
    schema_text: String,
    table: String,
}

impl Stream {
    /// The quoted names of every column.
    fn columns(&self) -> Vec<String> {
        self.shape.columns.iter().map(|c| quote(&c.name)).collect()
    }

    /// The key's values of a row of this stream, in key order.
    fn key_of<'v>(&self, values: &'v [Value]) -> Vec<&'v Value> {
        self.shape.key.iter().map(|&i| &values[i]).collect()
    }

    /// `WHERE` condition finding a row by its key.
    fn by_key(&self) -> String {
        let keys: Vec<String> = self
            .shape
            .key
            .iter()
            .map(|&i| quote(&self.shape.columns[i].name))
            .collect();
        key_condition(&keys)
    }
}

/// A row of `shape` whose columns `cols` are read from a JSON object in the stream's encoding
/// (the others null).
fn decode(shape: &RowShape, cols: &[usize], obj: &Json, what: &str) -> Result<Vec<Value>> {
    let mut row = vec![Value::Null; shape.len()];
    for &i in cols {
        let c = &shape.columns[i];
        row[i] = value::decode_json(obj.get(&c.name).unwrap_or(&Json::Null), c.codec).map_err(|e| {
            Error::new(
                ErrorKind::Checkpoint,
                format!("the journal's {what}, column {}: {e}", c.name),
            )
        })?;
    }
    Ok(row)
}

/// The rows now under the keys the steps touch (every row of a table they drop), saved as a
/// stream before anything changes. Its path.
fn write_backup(
    conn: &Connection,
    streams: &HashMap<&str, Stream>,
    steps: &[Step<'_>],
    run_id: &str,
    state_path: &Path,
) -> Result<PathBuf> {
    let backup = backup_path(state_path, run_id);
    let e = || format!("writing the backup {}", backup.display());
    let mut w = std::io::BufWriter::new(std::fs::File::create(&backup).ctx(ErrorKind::Io, e)?);
    for (name, s) in streams {
        if !table_exists(conn, &s.table).ctx(ErrorKind::Target, e)? {
            continue;
        }
        writeln!(w, "{}", s.schema_text).ctx(ErrorKind::Io, e)?;
        let all: Vec<usize> = (0..s.shape.len()).collect();
        let mut emit = |where_sql: &str, params: &[&Value]| -> Result<()> {
            let sql = format!("SELECT {} FROM {}{where_sql}", s.columns().join(", "), quote(&s.table));
            let mut st = conn.prepare_cached(&sql).ctx(ErrorKind::Target, || sql.clone())?;
            let mut rows = st
                .query(rusqlite::params_from_iter(params))
                .ctx(ErrorKind::Target, || sql.clone())?;
            while let Some(r) = rows.next().ctx(ErrorKind::Target, e)? {
                let vals = row_values(r, s.shape.len()).ctx(ErrorKind::Target, e)?;
                let record = s.shape.columns_json(&all, |i| vals[i].as_ref());
                writeln!(w, "{}", json!({"type": "RECORD", "stream": name, "record": record})).ctx(ErrorKind::Io, e)?;
            }
            Ok(())
        };
        let mine = steps.iter().filter(|st| st.row().stream == *name);
        if mine
            .clone()
            .any(|st| matches!(st, Step::Drop { .. } | Step::Empty { .. }))
        {
            emit("", &[])?;
            continue;
        }
        let cond = format!(" WHERE {}", s.by_key());
        for st in mine {
            if let Step::Delete { values, .. } | Step::Restore { values, .. } = st {
                emit(&cond, &s.key_of(values))?;
            }
        }
    }
    w.flush().ctx(ErrorKind::Io, e)?;
    w.get_ref().sync_all().ctx(ErrorKind::Io, e)?;
    Ok(backup)
}

/// Undo run `run_id` in a SQLite target (its journal entries `journal`) as `cfg` says; `before`: runs the same
/// plan undoes first.
pub(crate) fn run<W: Write>(
    u: Undoing<'_>,
    path: &Path,
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
    let mut streams: HashMap<&str, Stream> = HashMap::new();
    for r in journal.iter().filter(|r| r.action != JournalAction::Rows) {
        streams.insert(
            r.stream.as_str(),
            Stream {
                shape: shape_of(r)?,
                schema_text: r.schema.clone().unwrap_or_default(),
                table: r.table.clone(),
            },
        );
    }
    let (steps, refused) = steps_of(cp, &target, run_id, journal, before, &streams)?;
    let mut outcome = RollbackOutcome {
        tables: true,
        already_undone: journal.iter().filter(|r| r.undone_at.is_some()).count() as u64,
        ..Default::default()
    };
    // What the tables to drop or empty hold now: rows put in since by others go with them (the
    // backup keeps them), and the plan says how many.
    let held = table_rows(path, &target, &streams, &steps)?;
    outcome.table_rows = held.values().sum();
    let act = confirm && refused.is_empty();
    if act && !steps.is_empty() {
        if !path.exists() {
            return Err(Error::new(
                ErrorKind::Target,
                format!("{target}: the database is not there"),
            ));
        }
        // Not while an import writes into it.
        let _lock = crate::connect::sqlite::target::lock_database(path, &target)?;
        let conn = Connection::open(path).ctx(ErrorKind::Target, || format!("{target}: opening"))?;
        let backup = write_backup(&conn, &streams, &steps, run_id, state_path)?;
        tracing::info!(backup = %backup.display(), "wrote what the rollback changes");
        for st in &steps {
            let (action, key) = st.describe(&streams);
            let mut entry = AuditEntry::now(action, run_id, &target);
            entry.table = streams.get(st.row().stream.as_str()).map(|s| s.table.clone());
            entry.key = key;
            audit.write(&entry)?;
        }
        let e = || format!("{target}: rolling back run {run_id}");
        // The state being put back held together before the run; the steps between need not
        // (a child row restored before its parent), and no deletion may cascade.
        conn.execute_batch("PRAGMA foreign_keys = OFF; BEGIN IMMEDIATE")
            .ctx(ErrorKind::Target, e)?;
        let applied = undo_steps(&conn, &streams, &steps, run_id, &mut outcome);
        match applied {
            Ok(()) => conn.execute_batch("COMMIT").ctx(ErrorKind::Target, e)?,
            Err(err) => {
                let _ = conn.execute_batch("ROLLBACK");
                audit.failed(run_id, &target, &err)?;
                return Err(err);
            }
        }
        let ids: Vec<i64> = journal.iter().filter(|r| r.undone_at.is_none()).map(|r| r.id).collect();
        cp.journal_undone(&ids)?;
    }

    plan_lines(&steps, &streams, &held, &target, act, &mut outcome, out)?;
    refusals(journal, &refused, run_id, confirm, outcome, out)
}

/// The steps, newest first, in the open transaction; the run's commit markers forgotten.
fn undo_steps(
    conn: &Connection,
    streams: &HashMap<&str, Stream>,
    steps: &[Step<'_>],
    run_id: &str,
    outcome: &mut RollbackOutcome,
) -> Result<()> {
    let target = steps.first().map_or("", |st| st.row().target.as_str());
    let e = || format!("{target}: rolling back run {run_id}");
    for st in steps {
        let s = &streams[st.row().stream.as_str()];
        match st {
            Step::Delete { values, .. } => {
                if !table_exists(conn, &s.table).ctx(ErrorKind::Target, e)? {
                    continue;
                }
                conn.execute(
                    &format!("DELETE FROM {} WHERE {}", quote(&s.table), s.by_key()),
                    rusqlite::params_from_iter(s.key_of(values)),
                )
                .ctx(ErrorKind::Target, e)?;
                outcome.rows_deleted += 1;
            }
            Step::Restore { values, .. } => {
                // An UPDATE in place, never REPLACE: replacing deletes the row first, which
                // cascades to the rows that reference it.
                let cols = s.columns();
                let params: Vec<&Value> = values.iter().chain(s.key_of(values)).collect();
                let set = cols.iter().map(|c| format!("{c} = ?")).collect::<Vec<_>>().join(", ");
                let changed = conn
                    .execute(
                        &format!("UPDATE {} SET {set} WHERE {}", quote(&s.table), s.by_key()),
                        rusqlite::params_from_iter(params),
                    )
                    .ctx(ErrorKind::Target, e)?;
                if changed == 0 {
                    let marks = vec!["?"; cols.len()].join(", ");
                    conn.execute(
                        &format!("INSERT INTO {} ({}) VALUES ({marks})", quote(&s.table), cols.join(", ")),
                        rusqlite::params_from_iter(values),
                    )
                    .ctx(ErrorKind::Target, e)?;
                }
                outcome.restored += 1;
            }
            Step::Drop { .. } => {
                conn.execute_batch(&format!("DROP TABLE IF EXISTS {}", quote(&s.table)))
                    .ctx(ErrorKind::Target, e)?;
                outcome.dropped += 1;
            }
            Step::Empty { .. } => {
                if table_exists(conn, &s.table).ctx(ErrorKind::Target, e)? {
                    outcome.rows_deleted += conn
                        .execute(&format!("DELETE FROM {}", quote(&s.table)), [])
                        .ctx(ErrorKind::Target, e)? as u64;
                }
            }
        }
    }
    if table_exists(conn, "_ferry_commits").ctx(ErrorKind::Target, e)? {
        conn.execute("DELETE FROM _ferry_commits WHERE run_id = ?1", [run_id])
            .ctx(ErrorKind::Target, e)?;
        // The markers' table is ferry's: with no run's markers left, it goes too.
        let left: i64 = conn
            .query_row("SELECT count(*) FROM _ferry_commits", [], |r| r.get(0))
            .ctx(ErrorKind::Target, e)?;
        if left == 0 {
            conn.execute_batch("DROP TABLE _ferry_commits")
                .ctx(ErrorKind::Target, e)?;
        }
    }
    Ok(())
}

/// A PLAN line per step (what it did, with `act`), counting what a dry run would do.
fn plan_lines<W: Write>(
    steps: &[Step<'_>],
    streams: &HashMap<&str, Stream>,
    held: &HashMap<String, u64>,
    target: &str,
    act: bool,
    outcome: &mut RollbackOutcome,
    out: &mut StreamWriter<W>,
) -> Result<()> {
    for st in steps {
        let (action, key) = st.describe(streams);
        let r = st.row();
        if !act {
            match action {
                Action::Delete => outcome.would_delete_rows += 1,
                Action::Restore => outcome.would_restore += 1,
                Action::EmptyTable => outcome.would_empty += 1,
                _ => outcome.would_drop += 1,
            }
        }
        let table = streams.get(r.stream.as_str()).map(|s| s.table.clone());
        let mut line = Plan::new(action.shown(act));
        line.target = Some(target.to_owned());
        line.stream = Some(r.stream.clone());
        line.key = key;
        if matches!(st, Step::Drop { .. } | Step::Empty { .. }) {
            line.rows = Some(table.as_ref().and_then(|t| held.get(t)).copied().unwrap_or(0));
        }
        line.table = table;
        out.write_json(&line, Kind::Other)?;
    }
    Ok(())
}

/// What undoing the journal's entries takes, newest first, and why any of it is refused (a table
/// the run made that a later run wrote into).
fn steps_of<'a>(
    cp: &Checkpoint,
    target: &str,
    run_id: &str,
    journal: &'a [JournalRow],
    before: &[String],
    streams: &HashMap<&str, Stream>,
) -> Result<(Vec<Step<'a>>, Vec<String>)> {
    let mut steps: Vec<Step<'_>> = Vec::new();
    let mut refused = Vec::new();
    for r in journal.iter().rev().filter(|r| r.undone_at.is_none()) {
        let Some(s) = streams.get(r.stream.as_str()) else {
            continue;
        };
        match r.action {
            JournalAction::Rows => {
                let all: Vec<usize> = (0..s.shape.len()).collect();
                let list = |text: Option<&str>, what: &str| -> Result<Vec<Json>> {
                    serde_json::from_str(text.unwrap_or("[]")).map_err(|e| {
                        Error::new(
                            ErrorKind::Checkpoint,
                            format!("the journal's {what} is not a JSON array: {e}"),
                        )
                    })
                };
                // Newest first within the batch too.
                for before in list(r.before.as_deref(), "before-images")?.iter().rev() {
                    let values = decode(&s.shape, &all, before, "before-image")?;
                    steps.push(Step::Restore { row: r, values });
                }
                for key in list(r.key.as_deref(), "keys")?.iter().rev() {
                    let values = decode(&s.shape, &s.shape.key, key, "key")?;
                    steps.push(Step::Delete { row: r, values });
                }
            }
            JournalAction::Create | JournalAction::Empty => {
                let later = cp.journal_later_runs(target, &r.table, run_id, r.id, before)?;
                if !later.is_empty() {
                    refused.push(later_runs(r, &later));
                } else if r.action == JournalAction::Create {
                    steps.push(Step::Drop { row: r });
                } else {
                    steps.push(Step::Empty { row: r });
                }
            }
            _ => {}
        }
    }
    Ok((steps, refused))
}

/// The rows each table to drop or empty holds now, by table name.
fn table_rows(
    path: &Path,
    target: &str,
    streams: &HashMap<&str, Stream>,
    steps: &[Step<'_>],
) -> Result<HashMap<String, u64>> {
    let mut held = HashMap::new();
    let tables: Vec<&str> = steps
        .iter()
        .filter(|st| matches!(st, Step::Drop { .. } | Step::Empty { .. }))
        .filter_map(|st| streams.get(st.row().stream.as_str()).map(|s| s.table.as_str()))
        .collect();
    if tables.is_empty() || !path.exists() {
        return Ok(held);
    }
    let e = || format!("{target}: counting the rows of the tables to undo");
    let conn =
        Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).ctx(ErrorKind::Target, e)?;
    for table in tables {
        if table_exists(&conn, table).ctx(ErrorKind::Target, e)? {
            let n: i64 = conn
                .query_row(&format!("SELECT count(*) FROM {}", quote(table)), [], |r| r.get(0))
                .ctx(ErrorKind::Target, e)?;
            held.insert(table.to_owned(), n as u64);
        }
    }
    Ok(held)
}
