//! ferry rollback: undo an import run, as the state file recorded it, and nothing else.
//!
//! - Files into an object store: [`objects`] deletes exactly the objects the run created, as
//!   its manifest says.
//! - Rows into a table store, from the run's journal: [`sqlite`] for SQLite (the journal is in
//!   the state file), [`in_target`] for PostgreSQL and D1 (they journal into themselves).
//!
//! Every kind shows its plan first (NDJSON PLAN lines), changes nothing without `confirm`, writes
//! each action to the audit log before taking it, and can be run again (idempotent). Here: the
//! runs a rollback takes, the dispatch by what each run left, and what the kinds share.

mod in_target;
mod objects;
mod sqlite;

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::checkpoint::{Checkpoint, JournalAction, JournalRow, RESULTS_RUN_SUFFIX, RunStatus, named_run};
use crate::connect::objects::s3::S3Settings;
use crate::error::{Context, Error, ErrorKind, Result};
use crate::protocol::side::{Action, AuditEntry, Plan};
use crate::protocol::{Kind, Schema, StreamWriter, now_rfc3339};
use crate::row::RowShape;

#[derive(Debug, Clone)]
pub(crate) struct RollbackConfig {
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

#[derive(Debug, Clone, Default, serde::Serialize)]
pub(crate) struct RollbackOutcome {
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
    /// Journal entries and objects an earlier rollback undid already.
    pub already_undone: u64,
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
        self.already_undone += o.already_undone;
    }
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
        let mut entry = AuditEntry::now(Action::Failed, run_id, target);
        entry.why = Some(format!(
            "{error}; the actions above for this run were not carried out: the target was left as it was"
        ));
        self.write(&entry)
    }

    pub(crate) fn write(&mut self, entry: &AuditEntry) -> Result<()> {
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
        let line = serde_json::to_string(entry).unwrap_or_default();
        writeln!(f, "{line}")
            .and_then(|()| f.sync_data())
            .ctx(ErrorKind::Io, || format!("writing the audit log {}", path.display()))
    }
}

pub(crate) fn run<W: Write>(cfg: &RollbackConfig, out: &mut StreamWriter<W>) -> Result<RollbackOutcome> {
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
        let base = run.strip_suffix(RESULTS_RUN_SUFFIX).unwrap_or(run);
        [base.to_owned(), format!("{base}{RESULTS_RUN_SUFFIX}")]
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
        let wanted = cfg.batch.as_str();
        let ids: Vec<&str> = imports.iter().map(String::as_str).collect();
        let named = match named_run(&ids, wanted) {
            Ok(id) => id.to_owned(),
            Err(hits) if hits.is_empty() => {
                return Err(Error::usage(format!(
                    "no import run {wanted}* in {state} (`ferry status` lists the runs)"
                )));
            }
            Err(hits) => {
                return Err(Error::usage(format!(
                    "{wanted} matches several runs: {}",
                    hits.join(", ")
                )));
            }
        };
        if named.ends_with(RESULTS_RUN_SUFFIX) {
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

/// Undo a run's tables from its journal, target by target: one stream file imported into
/// several targets is one run in each, and each target's part is undone in that target. With
/// `confirm`, no part is touched unless every part can be undone.
fn undo_tables<W: Write>(
    cp: &mut Checkpoint,
    run_id: &str,
    journal: &[JournalRow],
    before: &[String],
    cfg: &RollbackConfig,
    audit: &mut Audit,
    out: &mut StreamWriter<W>,
) -> Result<RollbackOutcome> {
    let mut parts: Vec<Vec<JournalRow>> = Vec::new();
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
            let u = Undoing {
                cp: &mut *cp,
                run_id,
                before,
                cfg: &dry,
                audit: &mut *audit,
            };
            blocked |= tables_of_target(u, part, &mut sink)?.refused > 0;
        }
    }
    let acting = if blocked { &dry } else { cfg };
    let mut total = RollbackOutcome::default();
    for part in &parts {
        let u = Undoing {
            cp: &mut *cp,
            run_id,
            before,
            cfg: acting,
            audit: &mut *audit,
        };
        total.add(&tables_of_target(u, part, out)?);
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
        let source = cp.run_source(run_id)?;
        if let Some((whole, Some(shard))) = source.as_deref().map(crate::shard::split_identity) {
            // The shards' rows share tables (one shard made each, the last built its keys):
            // undoing one shard's journal would drop or empty what the others wrote.
            return Err(Error::usage(format!(
                "run {run_id} was shard {shard} of a sharded export of {whole}: its rows share tables with the other \
                 shards', and ferry does not undo one shard alone. Nothing was changed. An unfinished shard is finished by \
                 running it again; the whole migration is undone by dropping the tables it made"
            )));
        }
        if cfg.failed_only {
            // A run into tables fails or stops as a whole: kept when it completed.
            let completed = cp
                .runs()?
                .iter()
                .any(|r| r.run_id == run_id && r.stage == "import" && r.status == RunStatus::Complete);
            if completed {
                let mut line = Plan::new(Action::Keep);
                line.run = Some(run_id.to_owned());
                line.why = Some("completed (--failed-only)".into());
                out.write_json(&line, Kind::Other)?;
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
    objects::undo_run(cp, cfg, run_id, &mut audit, out)
}

/// Undo a run's entries in one table target, by the kind of store its address names: SQLite's
/// journal is in the state file, PostgreSQL and D1 keep theirs in the database.
fn tables_of_target<W: Write>(
    u: Undoing<'_>,
    journal: &[JournalRow],
    out: &mut StreamWriter<W>,
) -> Result<RollbackOutcome> {
    match crate::address::Address::parse(&journal[0].target)? {
        crate::address::Address::Sqlite(path) => sqlite::run(u, &path, journal, out),
        _ => in_target::run(u, journal, out),
    }
}

/// What undoing one run in a table target needs besides its journal: the state file, the run,
/// the runs this plan undoes first (`before`), how (`cfg`), and the audit log.
pub(crate) struct Undoing<'a> {
    pub(crate) cp: &'a mut Checkpoint,
    pub(crate) run_id: &'a str,
    pub(crate) before: &'a [String],
    pub(crate) cfg: &'a RollbackConfig,
    pub(crate) audit: &'a mut Audit,
}

/// The row shape of the stream a journal entry (`create`, `empty`, `stream`, `undo`) records
/// the SCHEMA of.
pub(crate) fn shape_of(r: &JournalRow) -> Result<RowShape> {
    let schema: Schema = serde_json::from_str(r.schema.as_deref().unwrap_or_default()).map_err(|e| {
        Error::new(
            ErrorKind::Checkpoint,
            format!("the journal's SCHEMA of {}: {e}", r.stream),
        )
    })?;
    RowShape::from_schema(&schema)
}

/// Why a table the run created (or found empty) cannot be put back: later runs wrote into it.
pub(crate) fn later_runs(r: &JournalRow, later: &[String]) -> String {
    let how = if r.action == JournalAction::Create {
        "created"
    } else {
        "found empty"
    };
    format!(
        "table {} was {how} by this run and written by later runs ({}): roll those back first",
        r.table,
        later.join(", ")
    )
}

/// Where a rollback of `run_id` saves what it changes: next to the state file.
pub(crate) fn backup_path(state_path: &Path, run_id: &str) -> PathBuf {
    let dir = state_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    dir.join(format!(
        "rollback-{run_id}-{}.ndjson",
        now_rfc3339().replace([':', '.'], "")
    ))
}

/// The plan's last lines: the tables whose rows stay (the run wrote into them with no journal),
/// and what the rollback refused; an error when it was to act.
pub(crate) fn refusals<W: Write>(
    journal: &[JournalRow],
    refused: &[String],
    run_id: &str,
    confirm: bool,
    mut outcome: RollbackOutcome,
    out: &mut StreamWriter<W>,
) -> Result<RollbackOutcome> {
    let target = journal[0].target.as_str();
    for r in journal
        .iter()
        .filter(|r| r.action == JournalAction::Unjournaled && r.undone_at.is_none())
    {
        let mut line = Plan::on_table(Action::CannotUndo, target, &r.stream, &r.table);
        line.why = Some("the run wrote into this table, which existed, without a rollback journal (the stream has no key, or --no-rollback-journal): its rows there stay".into());
        out.write_json(&line, Kind::Other)?;
        outcome.unjournaled += 1;
    }
    for why in refused {
        let mut line = Plan::new(Action::Refuse);
        line.target = Some(target.to_owned());
        line.why = Some(why.clone());
        out.write_json(&line, Kind::Other)?;
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
