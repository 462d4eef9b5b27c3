//! An import asked for over HTTP. The upload is kept whole in `imports/ID.ndjson` before any
//! row is written (a cut upload writes nothing), then `import::run` reads it, as `ferry-import`
//! reads a file: commit markers, resume, rejects and the rollback journal all as on the command
//! line, the run recorded in the state file.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::jobs::{Done, JobStatus, Jobs};
use crate::address::Address;
use crate::connect::OnConflict;
use crate::error::{Error, ErrorKind, Result};
use crate::stage::import::{self, ImportConfig, ImportOutcome};

/// `POST /api/v1/import`'s query string.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImportRequest {
    /// A store named in the server's config (`[stores]`).
    pub store: String,
    /// A row whose key is there already: `fail` (the default), `skip` or `overwrite`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_conflict: Option<Conflict>,
    /// Create missing tables.
    #[serde(default)]
    pub create: bool,
    /// Only say what would be done: the plan.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Conflict {
    Fail,
    Skip,
    Overwrite,
}

impl From<Conflict> for OnConflict {
    fn from(c: Conflict) -> OnConflict {
        match c {
            Conflict::Fail => OnConflict::Fail,
            Conflict::Skip => OnConflict::Skip,
            Conflict::Overwrite => OnConflict::Overwrite,
        }
    }
}

fn config(r: &ImportRequest, target: Address, state: &Path, input: &Path) -> ImportConfig {
    let mut cfg = ImportConfig::new(target, state.to_owned());
    cfg.create = r.create;
    cfg.on_conflict = r.on_conflict.map(OnConflict::from);
    cfg.dry_run = r.dry_run;
    cfg.input_totals = std::fs::File::open(input)
        .ok()
        .and_then(|f| crate::protocol::reader::totals_at_end(&f));
    cfg
}

fn open(input: &Path) -> Result<std::io::BufReader<std::fs::File>> {
    let f = std::fs::File::open(input)
        .map_err(|e| Error::new(ErrorKind::Io, format!("opening {}: {e}", input.display())))?;
    Ok(std::io::BufReader::with_capacity(256 * 1024, f))
}

/// The plan of importing `input`: the PLAN lines `ferry-import --dry-run` prints.
pub(crate) fn plan(r: &ImportRequest, target: Address, state: &Path, input: &Path) -> Result<Vec<serde_json::Value>> {
    let cfg = config(r, target, state, input);
    let input = open(input)?;
    super::jobs::captured(|out| import::run(&cfg, input, out)).map(|(_, plan)| plan)
}

/// Run import `id` of `input` into `target` (blocking), and record how it ended.
pub(crate) fn run(jobs: &Jobs, state: &Path, id: &str, r: &ImportRequest, target: Address, input: &Path) {
    let cfg = config(r, target, state, input);
    let mut o = ImportOutcome::default();
    let result = open(input).and_then(|i| {
        import::run_counted(
            &cfg,
            i,
            &mut crate::protocol::StreamWriter::new(std::io::sink()),
            &mut o,
        )
    });
    let done = Done {
        streams: o.streams,
        rows: o.received,
        bytes: std::fs::metadata(input).map(|m| m.len()).unwrap_or(0),
        written: Some(o.written),
        skipped: Some(o.skipped),
        already_done: Some(o.already),
        rejected: Some(o.rejected),
        run: (!o.run_id.is_empty()).then(|| o.run_id.clone()),
    };
    match result {
        Err(e) => {
            tracing::warn!(import = %id, error = %e, "an import failed");
            jobs.finish(id, JobStatus::Failed, done, Some(e.to_string()));
        }
        Ok(()) if o.rejected > 0 => {
            let why = format!(
                "{} rows were rejected, the rest written: the reject file beside the server's state file names each, with its reason",
                o.rejected
            );
            jobs.finish(id, JobStatus::CompleteWithRejects, done, Some(why));
        }
        Ok(()) => jobs.finish(id, JobStatus::Complete, done, None),
    }
}

/// `ferry-validate` over a kept upload: checked on its own (`target` `None`), or compared with
/// a store. The report as `--report` writes it, and the FINDING lines.
pub(crate) fn validate(input: &Path, target: Option<Address>) -> Result<serde_json::Value> {
    let cfg = crate::stage::validate::ValidateConfig::for_stream(target);
    let input = open(input)?;
    let (report, mut findings) = super::jobs::captured(|out| crate::stage::validate::run(&cfg, input, out))?;
    findings.retain(|l| l["type"] == "FINDING");
    Ok(serde_json::json!({"status": report.status, "report": report, "findings": findings}))
}
