//! ferry status: runs and batches from the state file, as a table or as NDJSON.
//!
//! Reading never blocks an import that is writing the same file (WAL readers do not block writers).

use crate::checkpoint::{RunStatus, Undone};
use std::io::Write;
use std::path::PathBuf;

use serde_json::json;

use crate::checkpoint::{Checkpoint, RESULTS_RUN_SUFFIX, named_run};
use crate::error::{Error, ErrorKind, Result};
use crate::human;
use crate::protocol::{Kind, StreamWriter};

#[derive(Debug, Clone)]
pub(crate) struct StatusConfig {
    pub state_path: PathBuf,
    /// More state files (the shards of one migration, each with its own): their runs are listed
    /// together and summed.
    pub more_states: Vec<PathBuf>,
    /// Show this run's batches (a prefix of the run id is enough).
    pub run: Option<String>,
    pub batch: Option<i64>,
    pub json: bool,
}

pub(crate) fn run<W: Write>(cfg: &StatusConfig, out: &mut StreamWriter<W>) -> Result<()> {
    if !cfg.more_states.is_empty() {
        return run_many(cfg, out);
    }
    let Some(cp) = Checkpoint::open_existing(&cfg.state_path)? else {
        return Err(Error::new(
            ErrorKind::Checkpoint,
            format!(
                "no state file at {} (run an import first, or point --state at one)",
                cfg.state_path.display()
            ),
        ));
    };
    let runs = runs_as_they_are(&cp)?;
    let run_id = match &cfg.run {
        None => None,
        Some(wanted) => Some(run_named(&runs, wanted, &cfg.state_path.display().to_string())?),
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

    let paces = paces_of(&cp, &runs)?;
    if cfg.json {
        for (r, p) in runs.iter().zip(&paces) {
            line(out, &run_json(r, p, None).to_string())?;
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
    let rows: Vec<Vec<String>> = runs.iter().zip(&paces).map(|(r, p)| cells(r, p, None)).collect();
    let t = human::table(
        &[
            "run", "stage", "status", "source", "target", "written", "skipped", "deleted", "rejected", "batches",
            "attempts", "rows/s", "left", "updated",
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

/// Each run's pace, now.
fn paces_of(cp: &Checkpoint, runs: &[crate::checkpoint::RunRow]) -> Result<Vec<Pace>> {
    let now = jiff::Timestamp::now();
    runs.iter().map(|r| Ok(pace(r, now, following(cp, r)?))).collect()
}

/// A run as it is now, for the server and the metrics: `ferry status --json`'s RUN object, and
/// the figures behind it.
pub(crate) struct RunNow {
    pub run: crate::checkpoint::RunRow,
    pace: Pace,
}

impl RunNow {
    /// The RUN object `ferry status --json` prints.
    pub(crate) fn json(&self) -> serde_json::Value {
        run_json(&self.run, &self.pace, None)
    }
    pub(crate) fn rows_per_s(&self) -> Option<f64> {
        self.pace.rate
    }
    pub(crate) fn seconds_left(&self) -> Option<f64> {
        self.pace.left
    }
    /// Seconds since a running run last recorded progress.
    pub(crate) fn idle_s(&self) -> Option<f64> {
        self.pace.idle
    }
}

/// Every run in the state file at `path` as it is now (a run whose process is gone is
/// stopped); none when there is no state file yet.
pub(crate) fn runs_now(path: &std::path::Path) -> Result<Vec<RunNow>> {
    match Checkpoint::open_existing(path)? {
        Some(cp) => runs_now_in(&cp),
        None => Ok(Vec::new()),
    }
}

/// [`runs_now`] of an open state file.
fn runs_now_in(cp: &Checkpoint) -> Result<Vec<RunNow>> {
    let runs = runs_as_they_are(cp)?;
    let paces = paces_of(cp, &runs)?;
    Ok(runs
        .into_iter()
        .zip(paces)
        .map(|(run, pace)| RunNow { run, pace })
        .collect())
}

/// Every run in the state file, each [`as_it_is`].
fn runs_as_they_are(cp: &Checkpoint) -> Result<Vec<crate::checkpoint::RunRow>> {
    cp.runs()?.into_iter().map(|r| as_it_is(cp, r)).collect()
}

/// One run (its full id) as it is now, with its batches and errors, as JSON; `None` when the
/// state file holds no such run.
pub(crate) fn run_detail(path: &std::path::Path, run_id: &str) -> Result<Option<serde_json::Value>> {
    let Some(cp) = Checkpoint::open_existing(path)? else {
        return Ok(None);
    };
    let Some(now) = runs_now_in(&cp)?.into_iter().find(|r| r.run.run_id == run_id) else {
        return Ok(None);
    };
    let mut j = now.json();
    j["batches"] = json!(cp.batches(Some(run_id), None)?);
    j["errors"] = json!(cp.errors(Some(run_id))?);
    Ok(Some(j))
}

/// Several state files (a sharded migration's): every run of each, then their sum. `--run` and
/// `--batch` look in the one file that holds the run.
fn run_many<W: Write>(cfg: &StatusConfig, out: &mut StreamWriter<W>) -> Result<()> {
    let paths: Vec<&PathBuf> = std::iter::once(&cfg.state_path).chain(&cfg.more_states).collect();
    let mut all = Vec::new();
    for path in &paths {
        if !path.exists() {
            return Err(Error::new(
                ErrorKind::Checkpoint,
                format!("no state file at {} (each shard's --state)", path.display()),
            ));
        }
        for RunNow { run, pace } in runs_now(path)? {
            all.push((path.display().to_string(), run, pace));
        }
    }
    if let Some(wanted) = &cfg.run {
        let holder = paths.iter().find(|p| {
            Checkpoint::open_existing(p)
                .ok()
                .flatten()
                .and_then(|cp| cp.runs().ok())
                .is_some_and(|runs| run_named(&runs, wanted, "").is_ok())
        });
        let Some(holder) = holder else {
            return Err(Error::usage(format!(
                "no run {wanted} in any of the {} state files",
                paths.len()
            )));
        };
        let one = StatusConfig {
            state_path: (*holder).clone(),
            more_states: vec![],
            ..cfg.clone()
        };
        return run(&one, out);
    }
    let line = |out: &mut StreamWriter<W>, text: &str| out.write_line(text.as_bytes(), Kind::Other);
    let total = Total::of(all.iter().map(|(_, r, p)| (r, p)));
    if cfg.json {
        for (state, r, p) in &all {
            line(out, &run_json(r, p, Some(state)).to_string())?;
        }
        line(
            out,
            &json!({"type": "TOTAL", "state_files": paths.len(), "total": total}).to_string(),
        )?;
        return out.flush();
    }
    let rows: Vec<Vec<String>> = all.iter().map(|(state, r, p)| cells(r, p, Some(state))).collect();
    let t = human::table(
        &[
            "state", "run", "stage", "status", "written", "skipped", "deleted", "rejected", "rows/s", "left", "updated",
        ],
        &rows,
    );
    for l in t.lines() {
        line(out, l)?;
    }
    for (state, r, _) in all.iter().filter(|(_, r, _)| r.message.is_some()) {
        line(
            out,
            &format!(
                "{state}: run {}: {}",
                short(&r.run_id),
                r.message.as_deref().unwrap_or("")
            ),
        )?;
    }
    line(out, &total.describe(paths.len()))?;
    out.flush()
}

/// A run as a `RUN` line of `--json`, with the state file it is in when there are several.
fn run_json(r: &crate::checkpoint::RunRow, p: &Pace, state: Option<&str>) -> serde_json::Value {
    let mut j = json!({"type": "RUN", "run": r, "rows_per_s": p.rate, "seconds_left": p.left, "idle_s": p.idle, "following": p.following});
    if let Some(s) = state {
        j["state"] = json!(s);
    }
    j
}

/// A run's row of the table: with its source and target, or (several state files) with the
/// state file in their place.
fn cells(r: &crate::checkpoint::RunRow, p: &Pace, state: Option<&str>) -> Vec<String> {
    let (written, skipped, deleted, rejected) = (r.rows_written, r.rows_skipped, r.rows_deleted, r.rows_rejected);
    let rate = p.rate.map(|v| format!("{v:.0}")).unwrap_or_default();
    let mut row = vec![short(&r.run_id), r.stage.clone(), r.status.to_string()];
    match state {
        Some(s) => row.insert(0, s.to_owned()),
        None => row.extend([
            r.source.clone().unwrap_or_default(),
            r.target.clone().unwrap_or_default(),
        ]),
    }
    row.extend([written, skipped, deleted, rejected].map(|n| n.to_string()));
    if state.is_none() {
        row.extend([r.batches.to_string(), r.attempts.to_string()]);
    }
    row.extend([rate, p.left_text(), r.updated_at.clone()]);
    row
}

/// The sum of many runs: what a sharded migration has done as a whole.
#[derive(Debug, Default, serde::Serialize)]
struct Total {
    runs: u64,
    /// Runs by status (`complete`, `running`, `failed`...).
    statuses: std::collections::BTreeMap<String, u64>,
    rows_written: i64,
    rows_skipped: i64,
    rows_deleted: i64,
    rows_rejected: i64,
    /// The running runs' rates added up: the migration's pace now.
    rows_per_s: f64,
    /// The longest time left of a running run: when the last shard should finish.
    seconds_left: Option<f64>,
}

impl Total {
    fn of<'a>(runs: impl Iterator<Item = (&'a crate::checkpoint::RunRow, &'a Pace)>) -> Total {
        let mut t = Total::default();
        for (r, p) in runs {
            t.runs += 1;
            *t.statuses.entry(r.status.to_string()).or_default() += 1;
            if r.status == RunStatus::RolledBack {
                // What it brought is gone from the target.
                continue;
            }
            t.rows_written += r.rows_written;
            t.rows_skipped += r.rows_skipped;
            t.rows_deleted += r.rows_deleted;
            t.rows_rejected += r.rows_rejected;
            if r.status == RunStatus::Running {
                t.rows_per_s += p.rate.unwrap_or(0.0);
                if let Some(l) = p.left {
                    t.seconds_left = Some(t.seconds_left.map_or(l, |m| m.max(l)));
                }
            }
        }
        t
    }

    /// `total of 4 state files: 8 runs (6 complete, 2 running), 1000000 written, ...`
    fn describe(&self, files: usize) -> String {
        let statuses: Vec<String> = self.statuses.iter().map(|(s, n)| format!("{n} {s}")).collect();
        let mut s = format!(
            "total of {files} state files: {} runs ({}), {} written, {} skipped, {} deleted, {} rejected",
            self.runs,
            statuses.join(", "),
            self.rows_written,
            self.rows_skipped,
            self.rows_deleted,
            self.rows_rejected
        );
        if self.rows_per_s > 0.0 {
            s.push_str(&format!(", {:.0} rows/s now", self.rows_per_s));
        }
        if let Some(left) = self.seconds_left {
            s.push_str(&format!(
                ", the last done in {}",
                human::duration(std::time::Duration::from_secs_f64(left))
            ));
        }
        s
    }
}

/// A run as it is: one recorded as running whose process is gone (killed) is not running; it
/// stopped without saying so, and shows no time left. An import into tables whose every journal
/// entry was undone is rolled back, however it had ended.
fn as_it_is(cp: &Checkpoint, mut r: crate::checkpoint::RunRow) -> Result<crate::checkpoint::RunRow> {
    if r.status == RunStatus::Running && !r.is_running() {
        r.status = RunStatus::Stopped;
        r.message = Some(format!(
            "its process (pid {}) is gone without saying how it ended (killed?): run the same command again to continue",
            r.pid.unwrap_or_default()
        ));
    } else if r.stage == "import" && r.status != RunStatus::Running {
        let message = match cp.undone(&r.run_id)? {
            None => return Ok(r),
            Some(Undone::Tables) => format!("was {}; undone by ferry rollback", r.status),
            Some(Undone::Files { deleted, kept }) => {
                let also = if kept > 0 {
                    format!(" ({kept} files it did not create are left: see the rollback's plan)")
                } else {
                    String::new()
                };
                format!(
                    "was {}; its {deleted} objects deleted by ferry rollback{also}",
                    r.status
                )
            }
        };
        r.message = Some(message);
        r.status = RunStatus::RolledBack;
    }
    Ok(r)
}

/// How fast a run went, and for one still running, how long it has left.
struct Pace {
    /// Rows per second over the run so far.
    rate: Option<f64>,
    /// Seconds left at that rate, for a running run whose input said how many rows to expect.
    left: Option<f64>,
    /// Seconds since the run last recorded progress (running runs): a large value means it
    /// stopped without saying (killed).
    idle: Option<f64>,
    /// For a running import of a follower's changes: the position its target holds and, where
    /// the source says, how far behind the source that is.
    following: Option<serde_json::Value>,
}

/// What a running import of captured changes last acknowledged (`_ferry_changes`), if it is one.
fn following(cp: &Checkpoint, r: &crate::checkpoint::RunRow) -> Result<Option<serde_json::Value>> {
    if r.stage != "import" || r.status != RunStatus::Running {
        return Ok(None);
    }
    cp.acknowledged_bookmark(&r.run_id, crate::stage::export::CHANGES_BOOKMARK)
}

impl Pace {
    fn left_text(&self) -> String {
        let behind = self.following.as_ref().map(|f| {
            human::behind(
                f.get("lag_seconds").and_then(serde_json::Value::as_f64),
                f.get("lag_bytes").and_then(serde_json::Value::as_u64),
            )
        });
        match (self.left, self.idle) {
            (_, Some(idle)) if idle > 300.0 => {
                format!("stalled {}", human::duration(std::time::Duration::from_secs_f64(idle)))
            }
            _ if behind.is_some() => match behind.flatten() {
                Some(b) => format!("following, {b} behind"),
                None => "following".into(),
            },
            (Some(l), _) => human::duration(std::time::Duration::from_secs_f64(l)),
            _ => String::new(),
        }
    }
}

fn pace(r: &crate::checkpoint::RunRow, now: jiff::Timestamp, following: Option<serde_json::Value>) -> Pace {
    let done = (r.rows_written + r.rows_skipped + r.rows_deleted) as f64;
    let rate = r
        .seconds()
        .filter(|secs| *secs > 0.0 && done > 0.0)
        .map(|secs| done / secs);
    let running = r.status == RunStatus::Running;
    let idle = if running {
        r.last_seen().map(|l| now.duration_since(l).as_secs_f64().max(0.0))
    } else {
        None
    };
    let left = match (running, rate, r.rows_expected) {
        (true, Some(rate), Some(expected)) => Some(((expected as f64 - done).max(0.0)) / rate),
        _ => None,
    };
    Pace {
        rate,
        left,
        idle,
        following,
    }
}

/// The first part of a run id, with the suffix of a files run's results (`.uploads`): enough to
/// tell runs apart and to pass back to --run.
fn short(run_id: &str) -> String {
    let (id, suffix) = split_results(run_id);
    id.chars().take(13).chain(suffix.chars()).collect()
}

/// A run id, and the suffix that makes it a files run's results run (`.uploads`, or nothing).
fn split_results(run_id: &str) -> (&str, &str) {
    match run_id.strip_suffix(RESULTS_RUN_SUFFIX) {
        Some(id) => (id, RESULTS_RUN_SUFFIX),
        None => (run_id, ""),
    }
}

/// The run `--run` names ([`named_run`]), or an error saying why none is.
fn run_named(runs: &[crate::checkpoint::RunRow], wanted: &str, state: &str) -> Result<String> {
    let ids: Vec<&str> = runs.iter().map(|r| r.run_id.as_str()).collect();
    match named_run(&ids, wanted) {
        Ok(id) => Ok(id.to_owned()),
        Err(hits) if hits.is_empty() => Err(Error::usage(format!(
            "no run {wanted} in {state} (`ferry status` lists them)"
        ))),
        Err(hits) => Err(Error::usage(format!(
            "{wanted} matches several runs: {}",
            hits.join(", ")
        ))),
    }
}
