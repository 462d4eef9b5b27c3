//! ferry status: runs and batches from the state file, as a table or as NDJSON.
//!
//! Reading never blocks an import that is writing the same file (WAL readers do not block writers).

use std::io::Write;
use std::path::PathBuf;

use serde_json::json;

use crate::checkpoint::Checkpoint;
use crate::error::{Error, ErrorKind, Result};
use crate::human;
use crate::protocol::{Kind, StreamWriter};

#[derive(Debug, Clone)]
pub struct StatusConfig {
    pub state_path: PathBuf,
    /// Show this run's batches (a prefix of the run id is enough).
    pub run: Option<String>,
    pub batch: Option<i64>,
    pub json: bool,
}

pub fn run<W: Write>(cfg: &StatusConfig, out: &mut StreamWriter<W>) -> Result<()> {
    let Some(cp) = Checkpoint::open_existing(&cfg.state_path)? else {
        return Err(Error::new(
            ErrorKind::Checkpoint,
            format!(
                "no state file at {} (run an import first, or point --state at one)",
                cfg.state_path.display()
            ),
        ));
    };
    let runs = cp.runs()?;
    let run_id = match &cfg.run {
        None => None,
        Some(prefix) => {
            let hits: Vec<&str> = runs
                .iter()
                .filter(|r| r.run_id.starts_with(prefix.as_str()))
                .map(|r| r.run_id.as_str())
                .collect();
            match hits.as_slice() {
                [one] => Some(one.to_string()),
                [] => {
                    return Err(Error::usage(format!("no run {prefix} in {}", cfg.state_path.display())));
                }
                _ => {
                    return Err(Error::usage(format!(
                        "{prefix} matches several runs: {}",
                        hits.join(", ")
                    )));
                }
            }
        }
    };
    let line = |out: &mut StreamWriter<W>, text: &str| out.write_line(text.as_bytes(), Kind::Other);

    if cfg.batch.is_some() || run_id.is_some() {
        let batches = cp.batches(run_id.as_deref(), cfg.batch)?;
        if cfg.batch.is_some() && batches.is_empty() {
            return Err(Error::usage(format!(
                "no batch {} in {}",
                cfg.batch.unwrap_or(0),
                cfg.state_path.display()
            )));
        }
        if cfg.json {
            for b in &batches {
                line(out, &json!({"type": "BATCH", "batch": b}).to_string())?;
            }
        } else {
            let rows: Vec<Vec<String>> = batches
                .iter()
                .map(|b| {
                    vec![
                        b.batch_id.to_string(),
                        short(&b.run_id),
                        b.stream.clone(),
                        b.rows.to_string(),
                        b.written.to_string(),
                        b.skipped.to_string(),
                        b.rejected.to_string(),
                        b.last_position.map(|p| p.to_string()).unwrap_or_default(),
                        b.status.clone(),
                        b.committed_at.clone(),
                    ]
                })
                .collect();
            let t = human::table(
                &[
                    "batch",
                    "run",
                    "stream",
                    "rows",
                    "written",
                    "skipped",
                    "rejected",
                    "position",
                    "status",
                    "committed",
                ],
                &rows,
            );
            for l in t.lines() {
                line(out, l)?;
            }
        }
        return out.flush();
    }

    if cfg.json {
        for r in &runs {
            line(out, &json!({"type": "RUN", "run": r}).to_string())?;
        }
        for e in cp.errors(None)? {
            line(out, &json!({"type": "RUN_ERROR", "error": e}).to_string())?;
        }
        return out.flush();
    }
    if runs.is_empty() {
        line(out, &format!("no runs in {}", cfg.state_path.display()))?;
        return out.flush();
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                short(&r.run_id),
                r.stage.clone(),
                r.status.clone(),
                r.source.clone().unwrap_or_default(),
                r.target.clone().unwrap_or_default(),
                r.rows_written.to_string(),
                r.rows_skipped.to_string(),
                r.rows_rejected.to_string(),
                r.batches.to_string(),
                r.attempts.to_string(),
                r.updated_at.clone(),
            ]
        })
        .collect();
    let t = human::table(
        &[
            "run", "stage", "status", "source", "target", "written", "skipped", "rejected", "batches", "attempts",
            "updated",
        ],
        &rows,
    );
    for l in t.lines() {
        line(out, l)?;
    }
    for r in runs.iter().filter(|r| r.message.is_some()) {
        line(
            out,
            &format!("run {}: {}", short(&r.run_id), r.message.as_deref().unwrap_or("")),
        )?;
    }
    out.flush()
}

/// The first part of a run id: enough to tell runs apart and to pass back to --run.
fn short(run_id: &str) -> String {
    run_id.chars().take(13).collect()
}
