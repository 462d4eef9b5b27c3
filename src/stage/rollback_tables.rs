//! ferry rollback of tables: put a SQLite target back as it was before an import run, from the
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

use crate::checkpoint::{Checkpoint, JournalRow};
use crate::connect::sqlite::{key_condition, quote, row_values};
use crate::error::{Context, Error, ErrorKind, Result};
use crate::protocol::{Kind, Schema, StreamWriter, now_rfc3339};
use crate::row::RowShape;
use crate::value::{self, Value};

use super::rollback::{Audit, RollbackOutcome};

/// One step of the undo.
enum Step<'a> {
    Delete { row: &'a JournalRow, key: Vec<Value> },
    Restore { row: &'a JournalRow, values: Vec<Value> },
    Drop { row: &'a JournalRow },
}

impl Step<'_> {
    /// The action's name, its journal entry, and the key it concerns (as JSON).
    fn describe(&self, streams: &HashMap<&str, Stream>) -> (&'static str, &JournalRow, Option<Json>) {
        let shape = |row: &JournalRow| streams.get(row.stream.as_str()).map(|s| &s.shape);
        match self {
            Step::Delete { row, key } => {
                let json = shape(row).map(|sh| {
                    let mut full = vec![Value::Null; sh.len()];
                    for (&i, v) in sh.key.iter().zip(key) {
                        full[i] = v.clone();
                    }
                    sh.key_json(|i| full[i].as_ref())
                });
                ("delete", row, json)
            }
            Step::Restore { row, values } => ("restore", row, shape(row).map(|sh| sh.key_json(|i| values[i].as_ref()))),
            Step::Drop { row } => ("drop_table", row, None),
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

/// Values of `cols` (indexes of `shape`) read from a JSON object in the stream's encoding.
fn decode(shape: &RowShape, cols: &[usize], text: &str, what: &str) -> Result<Vec<Value>> {
    let obj: Json = serde_json::from_str(text)
        .map_err(|e| Error::new(ErrorKind::Checkpoint, format!("the journal's {what} is not JSON: {e}")))?;
    cols.iter()
        .map(|&i| {
            let c = &shape.columns[i];
            value::decode_json(obj.get(&c.name).unwrap_or(&Json::Null), c.codec).map_err(|e| {
                Error::new(
                    ErrorKind::Checkpoint,
                    format!("the journal's {what}, column {}: {e}", c.name),
                )
            })
        })
        .collect()
}

pub(crate) fn run<W: Write>(
    cp: &mut Checkpoint,
    run_id: &str,
    journal: &[JournalRow],
    confirm: bool,
    state_path: &Path,
    audit: &mut Audit,
    out: &mut StreamWriter<W>,
) -> Result<RollbackOutcome> {
    let target = journal[0].target.clone();
    let Some(path) = target.strip_prefix("sqlite:").map(PathBuf::from) else {
        return Err(Error::usage(format!(
            "run {run_id} imported into {target}: rolling back tables is done for SQLite targets so far (PostgreSQL and D1 keep no journal yet)"
        )));
    };
    let mut streams: HashMap<&str, Stream> = HashMap::new();
    for r in journal.iter().filter(|r| r.action == "create" || r.action == "stream") {
        let text = r.schema.clone().unwrap_or_default();
        let schema: Schema = serde_json::from_str(&text).map_err(|e| {
            Error::new(
                ErrorKind::Checkpoint,
                format!("the journal's SCHEMA of {}: {e}", r.stream),
            )
        })?;
        streams.insert(
            r.stream.as_str(),
            Stream {
                shape: RowShape::from_schema(&schema)?,
                schema_text: text,
                table: r.table.clone(),
            },
        );
    }
    // The steps, newest first.
    let mut steps: Vec<Step<'_>> = Vec::new();
    let mut refused = Vec::new();
    for r in journal.iter().rev().filter(|r| r.undone_at.is_none()) {
        let Some(s) = streams.get(r.stream.as_str()) else {
            continue;
        };
        match r.action.as_str() {
            "rows" => {
                let all: Vec<usize> = (0..s.shape.len()).collect();
                let list = |text: Option<&str>, what: &str| -> Result<Vec<String>> {
                    let items: Vec<Json> = serde_json::from_str(text.unwrap_or("[]")).map_err(|e| {
                        Error::new(
                            ErrorKind::Checkpoint,
                            format!("the journal's {what} is not a JSON array: {e}"),
                        )
                    })?;
                    Ok(items.iter().map(Json::to_string).collect())
                };
                // Newest first within the batch too.
                for before in list(r.before.as_deref(), "before-images")?.iter().rev() {
                    let values = decode(&s.shape, &all, before, "before-image")?;
                    steps.push(Step::Restore { row: r, values });
                }
                for key in list(r.key.as_deref(), "keys")?.iter().rev() {
                    let key = decode(&s.shape, &s.shape.key, key, "key")?;
                    steps.push(Step::Delete { row: r, key });
                }
            }
            "create" => {
                let later = cp.journal_later_runs(&target, &r.table, run_id, r.id)?;
                if later.is_empty() {
                    steps.push(Step::Drop { row: r });
                } else {
                    refused.push(format!(
                        "table {} was created by this run and written by later runs ({}): roll those back first",
                        r.table,
                        later.join(", ")
                    ));
                }
            }
            _ => {}
        }
    }
    let mut outcome = RollbackOutcome {
        tables: true,
        ..Default::default()
    };
    let act = confirm && refused.is_empty();
    let conn = if path.exists() {
        Some(Connection::open(&path).ctx(ErrorKind::Target, || format!("{target}: opening"))?)
    } else {
        None
    };
    let table_exists = |conn: &Connection, t: &str| -> bool {
        conn.query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [t],
            |_| Ok(()),
        )
        .is_ok()
    };
    // The backup stream of everything the undo changes, written before any change.
    if act && !steps.is_empty() {
        let Some(conn) = conn.as_ref() else {
            return Err(Error::new(
                ErrorKind::Target,
                format!("{target}: the database is not there"),
            ));
        };
        let dir = state_path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let backup = dir.join(format!(
            "rollback-{run_id}-{}.ndjson",
            now_rfc3339().replace([':', '.'], "")
        ));
        let mut w = std::io::BufWriter::new(
            std::fs::File::create(&backup)
                .ctx(ErrorKind::Io, || format!("creating the backup {}", backup.display()))?,
        );
        let io = |e: std::io::Error| Error::new(ErrorKind::Io, format!("writing the backup: {e}"));
        for (name, s) in &streams {
            if !table_exists(conn, &s.table) {
                continue;
            }
            writeln!(w, "{}", s.schema_text).map_err(io)?;
            let cols = s.columns();
            let keyed: Vec<&Vec<Value>> = steps
                .iter()
                .filter_map(|st| match st {
                    Step::Delete { row, key } if row.stream == *name => Some(key),
                    _ => None,
                })
                .collect();
            let dropping = steps
                .iter()
                .any(|st| matches!(st, Step::Drop { row } if row.stream == *name));
            let restoring: Vec<Vec<Value>> = steps
                .iter()
                .filter_map(|st| match st {
                    Step::Restore { row, values } if row.stream == *name => {
                        Some(s.shape.key.iter().map(|&i| values[i].clone()).collect())
                    }
                    _ => None,
                })
                .collect();
            let mut emit = |where_sql: &str, params: &[&Value]| -> Result<()> {
                let sql = format!("SELECT {} FROM {}{where_sql}", cols.join(", "), quote(&s.table));
                let mut st = conn
                    .prepare(&sql)
                    .ctx(ErrorKind::Target, || format!("{target}: {sql}"))?;
                let mut rows = st
                    .query(rusqlite::params_from_iter(params))
                    .ctx(ErrorKind::Target, || format!("{target}: {sql}"))?;
                while let Some(r) = rows.next().ctx(ErrorKind::Target, || format!("{target}: reading"))? {
                    let vals = row_values(r, s.shape.len()).ctx(ErrorKind::Target, || format!("{target}: reading"))?;
                    let all: Vec<usize> = (0..s.shape.len()).collect();
                    let record = s.shape.columns_json(&all, |i| vals[i].as_ref());
                    writeln!(w, "{}", json!({"type": "RECORD", "stream": name, "record": record})).map_err(io)?;
                }
                Ok(())
            };
            if dropping {
                emit("", &[])?;
            } else {
                let cond = s.by_key();
                for key in keyed.iter().copied().chain(restoring.iter()) {
                    let params: Vec<&Value> = key.iter().collect();
                    emit(&format!(" WHERE {cond}"), &params)?;
                }
            }
        }
        w.flush().map_err(io)?;
        w.get_ref().sync_all().map_err(io)?;
        tracing::info!(backup = %backup.display(), "wrote what the rollback changes");
    }

    if act && !steps.is_empty() {
        let Some(conn) = conn.as_ref() else {
            return Err(Error::new(
                ErrorKind::Target,
                format!("{target}: the database is not there"),
            ));
        };
        for st in &steps {
            let (action, r, key) = st.describe(&streams);
            audit.write(&json!({
                "at": now_rfc3339(), "action": action, "run": run_id, "target": target,
                "table": streams.get(r.stream.as_str()).map(|s| s.table.clone()), "key": key,
            }))?;
        }
        let e = || format!("{target}: rolling back run {run_id}");
        // The state being put back held together before the run; the steps between need not
        // (a child row restored before its parent), and no deletion may cascade.
        conn.execute_batch("PRAGMA foreign_keys = OFF; BEGIN IMMEDIATE")
            .ctx(ErrorKind::Target, e)?;
        let applied = (|| -> Result<()> {
            for st in &steps {
                match st {
                    Step::Delete { row, key } => {
                        let s = &streams[row.stream.as_str()];
                        if !table_exists(conn, &s.table) {
                            continue;
                        }
                        conn.execute(
                            &format!("DELETE FROM {} WHERE {}", quote(&s.table), s.by_key()),
                            rusqlite::params_from_iter(key),
                        )
                        .ctx(ErrorKind::Target, e)?;
                        outcome.deleted += 1;
                    }
                    Step::Restore { row, values } => {
                        // An UPDATE in place, never REPLACE: replacing deletes the row first,
                        // which cascades to the rows that reference it.
                        let s = &streams[row.stream.as_str()];
                        let cols = s.columns();
                        let cond = s.by_key();
                        let params: Vec<&Value> =
                            values.iter().chain(s.shape.key.iter().map(|&i| &values[i])).collect();
                        let changed = conn
                            .execute(
                                &format!(
                                    "UPDATE {} SET {} WHERE {cond}",
                                    quote(&s.table),
                                    cols.iter().map(|c| format!("{c} = ?")).collect::<Vec<_>>().join(", ")
                                ),
                                rusqlite::params_from_iter(params),
                            )
                            .ctx(ErrorKind::Target, e)?;
                        if changed == 0 {
                            conn.execute(
                                &format!(
                                    "INSERT INTO {} ({}) VALUES ({})",
                                    quote(&s.table),
                                    cols.join(", "),
                                    vec!["?"; cols.len()].join(", ")
                                ),
                                rusqlite::params_from_iter(values),
                            )
                            .ctx(ErrorKind::Target, e)?;
                        }
                        outcome.restored += 1;
                    }
                    Step::Drop { row } => {
                        let s = &streams[row.stream.as_str()];
                        conn.execute_batch(&format!("DROP TABLE IF EXISTS {}", quote(&s.table)))
                            .ctx(ErrorKind::Target, e)?;
                        outcome.dropped += 1;
                    }
                }
            }
            if table_exists(conn, "_ferry_commits") {
                conn.execute("DELETE FROM _ferry_commits WHERE run_id = ?1", [run_id])
                    .ctx(ErrorKind::Target, e)?;
            }
            Ok(())
        })();
        match applied {
            Ok(()) => conn.execute_batch("COMMIT").ctx(ErrorKind::Target, e)?,
            Err(err) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(err);
            }
        }
        let ids: Vec<i64> = journal.iter().filter(|r| r.undone_at.is_none()).map(|r| r.id).collect();
        cp.journal_undone(&ids)?;
    }

    for st in &steps {
        let (action, r, key) = st.describe(&streams);
        if !act {
            match action {
                "delete" => outcome.would_delete += 1,
                "restore" => outcome.would_restore += 1,
                _ => outcome.would_drop += 1,
            }
        }
        let shown = match (act, action) {
            (false, a) => a,
            (true, "delete") => "deleted",
            (true, "restore") => "restored",
            (true, _) => "dropped",
        };
        let table = streams.get(r.stream.as_str()).map(|s| s.table.clone());
        let line =
            json!({"type": "PLAN", "action": shown, "target": target, "stream": r.stream, "table": table, "key": key});
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
