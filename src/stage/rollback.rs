//! ferry rollback of files: delete exactly the objects a run created, as its manifest says. (A
//! run into a table store is undone from its journal: `rollback_tables`.)
//!
//! Contract:
//! - MUST change nothing without `confirm`: the plan (every object it would delete, and what it
//!   would leave and why) is printed as NDJSON.
//! - MUST delete only objects the run created (`uploaded`, or `uploading` when the object at the
//!   key holds exactly the bytes the run was sending), and only while they still hold those bytes;
//!   an object the run overwrote is left (its earlier bytes are gone) and reported.
//! - MUST refuse, unless `force`, while the original file is missing from the source directory:
//!   deleting the only copy is never the default.
//! - MUST write every action to the audit log before taking it and mark the file `rolled_back`
//!   after, so a rollback can be interrupted and run again (idempotent).

use std::io::Write;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::address::Address;
use crate::checkpoint::{Checkpoint, FileRow};
use crate::connect::objects::s3::S3Settings;
use crate::connect::objects::{self, ObjectStore};
use crate::error::{Context, Error, ErrorKind, Result};
use crate::protocol::{Kind, StreamWriter, now_rfc3339};

#[derive(Debug, Clone)]
pub struct RollbackConfig {
    pub state_path: PathBuf,
    /// The run (batch) whose objects go: a unique prefix of its id.
    pub batch: String,
    /// Instead of `batch`: the most recent import run.
    pub last: bool,
    /// Instead of `batch`: every import run in the state file, newest first.
    pub full: bool,
    /// With `full`: only runs into tables, or only runs into object stores.
    pub db_only: bool,
    pub objects_only: bool,
    pub confirm: bool,
    /// Delete even when the original file is no longer in the source directory.
    pub force: bool,
    /// Only what failed or was left unfinished (`uploading`), not what completed.
    pub failed_only: bool,
    pub s3: S3Settings,
    /// A database's full address (with its password), when the recorded one (redacted) is not
    /// enough to connect.
    pub target: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct RollbackOutcome {
    /// Objects deleted.
    pub deleted: u64,
    /// Multipart uploads the run left unfinished, aborted (or, without `confirm`, to abort).
    pub aborted: u64,
    /// Multipart uploads a killed run may have started with no id recorded: said, not aborted.
    pub unknown_uploads: u64,
    pub would_abort: u64,
    pub would_delete: u64,
    pub kept: u64,
    pub refused: u64,
    /// Tables: rows put back as they were, tables dropped (or, without `confirm`, to be).
    pub restored: u64,
    /// Tables: rows deleted (or, without `confirm`, to be).
    pub rows_deleted: u64,
    pub would_delete_rows: u64,
    pub dropped: u64,
    pub would_restore: u64,
    /// Tables found empty by the run, emptied again (or, without `confirm`, to be).
    pub would_empty: u64,
    pub would_drop: u64,
    /// Tables the run wrote into without a journal (existing, keyless, or
    /// `--no-rollback-journal`): their rows stay.
    pub unjournaled: u64,
    /// Rows in the tables to drop or empty, as they stand when the plan is made.
    pub table_rows: u64,
    /// The run was undone from its table journal (not a manifest of objects).
    pub tables: bool,
}

impl RollbackOutcome {
    fn add(&mut self, o: &RollbackOutcome) {
        self.deleted += o.deleted;
        self.aborted += o.aborted;
        self.unknown_uploads += o.unknown_uploads;
        self.would_abort += o.would_abort;
        self.would_delete += o.would_delete;
        self.kept += o.kept;
        self.refused += o.refused;
        self.restored += o.restored;
        self.rows_deleted += o.rows_deleted;
        self.would_delete_rows += o.would_delete_rows;
        self.dropped += o.dropped;
        self.would_restore += o.would_restore;
        self.would_drop += o.would_drop;
        self.would_empty += o.would_empty;
        self.unjournaled += o.unjournaled;
        self.table_rows += o.table_rows;
        self.tables |= o.tables;
    }
}

/// The store a manifest row names: `dir:PATH`, or `s3://BUCKET/PREFIX [at ENDPOINT]`.
fn open_target(target: &str, s3: &S3Settings) -> Result<Box<dyn ObjectStore>> {
    let (addr, endpoint) = match target.split_once(" at ") {
        Some((a, e)) => (a, Some(e.to_owned())),
        None => (target, None),
    };
    let settings = S3Settings {
        endpoint: s3.endpoint.clone().or(endpoint),
        region: s3.region.clone(),
    };
    crate::connect::open_store(&Address::parse(addr)?, &settings)
}

/// What the plan does with one file, and why.
fn decide(
    row: &FileRow,
    cfg: &RollbackConfig,
    store: &dyn ObjectStore,
    source_root: Option<&Path>,
) -> Result<(&'static str, String)> {
    let ours_if_present = match row.status.as_str() {
        "uploaded" if cfg.failed_only => return Ok(("keep", "completed (--failed-only)".into())),
        "uploaded" | "uploading" => true,
        "overwritten" => {
            return Ok((
                "keep",
                "this run replaced an earlier object, whose bytes are gone: it cannot be put back".into(),
            ));
        }
        "rolled_back" => return Ok(("done", "already rolled back".into())),
        other => return Ok(("keep", format!("the run did not create it ({other})"))),
    };
    debug_assert!(ours_if_present);
    match store.head(&row.key)? {
        None => return Ok(("done", "not there".into())),
        Some(info) if info.size != row.size || info.sha256.as_deref() != Some(row.sha256.as_str()) => {
            return Ok((
                "keep",
                "the object at the key now holds other bytes: someone else's".into(),
            ));
        }
        Some(_) => {}
    }
    if !cfg.force {
        match source_root {
            Some(root) => {
                let original = root.join(std::ffi::OsStr::from_bytes(&row.path));
                if !original.is_file() {
                    return Ok((
                        "refuse",
                        format!(
                            "the original {} is gone: this object may be the only copy (--force deletes it anyway)",
                            original.display()
                        ),
                    ));
                }
            }
            None => {
                return Ok((
                    "refuse",
                    "the run's source is not a local directory, so the original cannot be checked (--force deletes it anyway)"
                        .into(),
                ));
            }
        }
    }
    Ok(("delete", String::new()))
}

/// The audit log: one JSON line per action, synced before the action is taken.
pub(crate) struct Audit {
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl Audit {
    /// The actions written ahead did not happen: the undo failed and its transaction was rolled
    /// back, the target left as it was.
    pub(crate) fn failed(&mut self, run_id: &str, target: &str, error: &Error) -> Result<()> {
        self.write(&json!({
            "at": now_rfc3339(), "action": "failed", "run": run_id, "target": target,
            "why": format!("{error}; the actions above for this run were not carried out: the target was left as it was"),
        }))
    }

    pub(crate) fn write(&mut self, entry: &serde_json::Value) -> Result<()> {
        let path = &self.path;
        let f = match self.file.as_mut() {
            Some(f) => f,
            None => self.file.insert(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .ctx(ErrorKind::Io, || format!("opening the audit log {}", path.display()))?,
            ),
        };
        writeln!(f, "{entry}")
            .and_then(|()| f.sync_data())
            .ctx(ErrorKind::Io, || format!("writing the audit log {}", path.display()))
    }
}

pub fn run<W: Write>(cfg: &RollbackConfig, out: &mut StreamWriter<W>) -> Result<RollbackOutcome> {
    let Some(mut cp) = Checkpoint::open_existing(&cfg.state_path)? else {
        return Err(Error::usage(format!(
            "no state file at {} (point --state at the one the import used)",
            cfg.state_path.display()
        )));
    };
    let runs = runs_to_undo(&cp, cfg)?;
    let mut total = RollbackOutcome::default();
    // The runs this plan undoes before the one at hand: a dry run counts them as undone, as
    // `--confirm` will have by then, so the plan shown is the plan carried out.
    let mut before: Vec<String> = Vec::new();
    for run in runs {
        let o = run_one(&mut cp, cfg, &run, &before, out)?;
        before.push(run);
        total.add(&o);
    }
    out.flush()?;
    Ok(total)
}

/// The import runs to undo, newest first, by their exact ids. A run of files into an object store
/// and the run that loaded its upload results into a table (`RUN.uploads`) are two runs: `--batch
/// RUN` and `--last` take both (objects first), `--full` takes every run, and `--db-only` /
/// `--objects-only` pick among them by what each left.
fn runs_to_undo(cp: &Checkpoint, cfg: &RollbackConfig) -> Result<Vec<String>> {
    let imports: Vec<String> = cp
        .runs()?
        .into_iter()
        .filter(|r| r.stage == "import")
        .map(|r| r.run_id)
        .collect();
    let state = cfg.state_path.display();
    // A run and its results' run, objects first.
    let with_results = |run: &str| -> Vec<String> {
        let base = run.strip_suffix(UPLOADS).unwrap_or(run);
        [base.to_owned(), format!("{base}{UPLOADS}")]
            .into_iter()
            .filter(|r| imports.contains(r))
            .collect()
    };
    let chosen: Vec<String> = if cfg.full {
        imports.iter().rev().cloned().collect()
    } else if cfg.last {
        let last = imports
            .last()
            .ok_or_else(|| Error::usage(format!("no import run in {state}")))?;
        with_results(last)
    } else {
        let prefix = cfg.batch.as_str();
        let matching: Vec<&String> = imports.iter().filter(|r| r.starts_with(prefix)).collect();
        let named = match matching.as_slice() {
            _ if imports.iter().any(|r| r == prefix) => prefix.to_owned(),
            [] => {
                return Err(Error::usage(format!(
                    "no import run {prefix}* in {state} (`ferry status` lists the runs)"
                )));
            }
            [one] => (*one).clone(),
            // A files run and its results' run share the prefix: both are meant.
            [a, b] if b.strip_suffix(UPLOADS) == Some(a.as_str()) || a.strip_suffix(UPLOADS) == Some(b.as_str()) => {
                a.strip_suffix(UPLOADS).unwrap_or(a).to_owned()
            }
            many => {
                let ids: Vec<&str> = many.iter().map(|r| r.as_str()).collect();
                return Err(Error::usage(format!(
                    "{prefix} matches several runs: {}",
                    ids.join(", ")
                )));
            }
        };
        if named.ends_with(UPLOADS) {
            vec![named]
        } else {
            with_results(&named)
        }
    };
    let mut runs = Vec::new();
    for run in chosen {
        let tables = !cp.journal_of(&run)?.is_empty();
        let objects = !cp.files_of_run(&run)?.is_empty() || cp.multipart_open()?.iter().any(|u| u.run_id == run);
        if (cfg.db_only && objects && !tables) || (cfg.objects_only && tables && !objects) {
            continue;
        }
        runs.push(run);
    }
    Ok(runs)
}

/// The suffix of the run that loads a files run's upload results into a table.
const UPLOADS: &str = ".uploads";

/// Undo a run's tables from its journal, target by target: one stream file imported into
/// several targets is one run in each, and each target's part is undone in that target. With
/// `confirm`, no part is touched unless every part can be undone.
fn undo_tables<W: Write>(
    cp: &mut Checkpoint,
    run_id: &str,
    journal: &[crate::checkpoint::JournalRow],
    before: &[String],
    cfg: &RollbackConfig,
    audit: &mut Audit,
    out: &mut StreamWriter<W>,
) -> Result<RollbackOutcome> {
    let mut parts: Vec<Vec<crate::checkpoint::JournalRow>> = Vec::new();
    for r in journal {
        match parts.iter_mut().find(|p| p[0].target == r.target) {
            Some(part) => part.push(r.clone()),
            None => parts.push(vec![r.clone()]),
        }
    }
    let dry = RollbackConfig {
        confirm: false,
        ..cfg.clone()
    };
    let mut blocked = false;
    if cfg.confirm && parts.len() > 1 {
        let mut sink = StreamWriter::new(std::io::sink());
        for part in &parts {
            blocked |= super::rollback_tables::run(cp, run_id, part, before, &dry, audit, &mut sink)?.refused > 0;
        }
    }
    let acting = if blocked { &dry } else { cfg };
    let mut total = RollbackOutcome::default();
    for part in &parts {
        total.add(&super::rollback_tables::run(
            cp, run_id, part, before, acting, audit, out,
        )?);
    }
    if blocked {
        return Err(Error::usage(format!(
            "run {run_id} cannot be rolled back as it stands in every target it imported into (the refusals above say why); nothing was changed"
        )));
    }
    Ok(total)
}

/// Undo one run, by its exact id; `before`: the runs this plan undoes first.
fn run_one<W: Write>(
    cp: &mut Checkpoint,
    cfg: &RollbackConfig,
    run_id: &str,
    before: &[String],
    out: &mut StreamWriter<W>,
) -> Result<RollbackOutcome> {
    let audit_path = cfg
        .state_path
        .parent()
        .map_or_else(|| PathBuf::from("audit.ndjson"), |d| d.join("audit.ndjson"));
    let mut audit = Audit {
        path: audit_path,
        file: None,
    };
    // A run into a table store: undone from its journal.
    let journal = cp.journal_of(run_id)?;
    if !journal.is_empty() {
        if cfg.objects_only {
            return Ok(RollbackOutcome::default());
        }
        if cfg.failed_only {
            // A run into tables fails or stops as a whole: kept when it completed.
            let completed = cp
                .runs()?
                .iter()
                .any(|r| r.run_id == run_id && r.stage == "import" && r.status == "complete");
            if completed {
                let line = json!({"type": "PLAN", "action": "keep", "run": run_id, "why": "completed (--failed-only)"});
                out.write_line(line.to_string().as_bytes(), Kind::Other)?;
                return Ok(RollbackOutcome {
                    tables: true,
                    kept: 1,
                    ..Default::default()
                });
            }
        }
        return undo_tables(cp, run_id, &journal, before, cfg, &mut audit, out);
    }
    if cfg.db_only {
        return Ok(RollbackOutcome::default());
    }
    let rows = cp.files_of_run(run_id)?;
    let uploads: Vec<_> = cp
        .multipart_open()?
        .into_iter()
        .filter(|u| u.run_id == run_id)
        .collect();
    if rows.is_empty() && uploads.is_empty() {
        // Killed before it put anything, or every file it put was put again by a later run
        // (which now owns it): nothing of this run's own to undo.
        let line = json!({"type": "PLAN", "action": "nothing", "run": run_id,
            "why": "the run left nothing of its own: no table journal, no file recorded as its, no unfinished upload"});
        out.write_line(line.to_string().as_bytes(), Kind::Other)?;
        return Ok(RollbackOutcome::default());
    }
    let source_root = cp
        .run_source(run_id)?
        .and_then(|s| s.strip_prefix("dir:").map(PathBuf::from));
    let mut stores: Vec<(String, Box<dyn ObjectStore>)> = Vec::new();
    let mut plan: Vec<(usize, &'static str, String)> = Vec::new();
    for (target, row) in &rows {
        let at = match stores.iter().position(|(t, _)| t == target) {
            Some(at) => at,
            None => {
                stores.push((target.clone(), open_target(target, &cfg.s3)?));
                stores.len() - 1
            }
        };
        let (action, why) = decide(row, cfg, stores[at].1.as_ref(), source_root.as_deref())?;
        plan.push((at, action, why));
    }
    let refused = plan.iter().filter(|p| p.1 == "refuse").count();
    // Not while an import puts objects there.
    let mut locks = Vec::new();
    if cfg.confirm {
        for (target, _) in &stores {
            locks.push(super::import::files::lock_store(&cfg.state_path, target)?);
        }
    }
    let mut outcome = RollbackOutcome::default();
    for ((target, row), (at, action, why)) in rows.iter().zip(plan) {
        let key = String::from_utf8_lossy(&row.key).into_owned();
        let act = cfg.confirm && refused == 0;
        match action {
            "delete" if act => {
                let entry = json!({
                    "at": now_rfc3339(), "action": "delete", "run": run_id, "target": target,
                    "key": key, "size": row.size, "sha256": row.sha256,
                });
                audit.write(&entry)?;
                stores[at].1.delete(&row.key)?;
                let note = format!("rolled back at {}", now_rfc3339());
                cp.set_file_status(target, &row.key, "rolled_back", Some(&note))?;
                outcome.deleted += 1;
            }
            "delete" => outcome.would_delete += 1,
            "refuse" => outcome.refused += 1,
            "keep" => outcome.kept += 1,
            _ => {}
        }
        let shown = if action == "delete" && act { "deleted" } else { action };
        let line = json!({
            "type": "PLAN", "action": shown, "target": target, "key": key, "path": String::from_utf8_lossy(&row.path),
            "size": row.size, "status": row.status, "why": if why.is_empty() { None } else { Some(why) },
        });
        out.write_line(line.to_string().as_bytes(), Kind::Other)?;
    }
    // Multipart uploads the run started and never completed or aborted (killed mid-file, or the
    // store went away): their parts are stored, and billed, until aborted. Nothing of them is an
    // object, so this is safe whatever else the plan refuses.
    for u in uploads {
        let key = String::from_utf8_lossy(&u.key).into_owned();
        if u.upload_id == objects::INTENT {
            // No id to abort by: said, not acted on.
            let line = json!({
                "type": "PLAN", "action": "unknown_upload", "target": u.target, "key": key,
                "why": super::import::files::UNKNOWN_UPLOAD,
            });
            out.write_line(line.to_string().as_bytes(), Kind::Other)?;
            outcome.unknown_uploads += 1;
            continue;
        }
        let at = match stores.iter().position(|(t, _)| *t == u.target) {
            Some(at) => at,
            None => {
                stores.push((u.target.clone(), open_target(&u.target, &cfg.s3)?));
                stores.len() - 1
            }
        };
        let shown = if cfg.confirm {
            audit.write(&json!({
                "at": now_rfc3339(), "action": "abort-multipart", "run": run_id, "target": u.target,
                "key": key, "upload_id": u.upload_id,
            }))?;
            stores[at].1.abort_upload(&u.key, &u.upload_id)?;
            cp.multipart_ended(&u.target, &u.key, &u.upload_id)?;
            outcome.aborted += 1;
            "aborted"
        } else {
            outcome.would_abort += 1;
            "abort"
        };
        let line = json!({
            "type": "PLAN", "action": shown, "target": u.target, "key": key, "upload_id": u.upload_id,
            "why": "a multipart upload the run left unfinished",
        });
        out.write_line(line.to_string().as_bytes(), Kind::Other)?;
    }
    out.flush()?;
    if cfg.confirm && refused > 0 {
        return Err(Error::usage(format!(
            "{refused} objects would be deleted while their originals are missing (listed on stdout as \"refuse\"); nothing was deleted; restore the originals, or use --force"
        )));
    }
    Ok(outcome)
}
