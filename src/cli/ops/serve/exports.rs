//! An export asked for over HTTP: `export::run` into `exports/ID.ndjson.partial`, synced and
//! renamed to `ID.ndjson` when whole, so a download never gets half a stream.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::jobs::{Done, JobStatus, Jobs};
use crate::address::Address;
use crate::error::{Error, ErrorKind, Result};
use crate::stage::export::{self, ExportConfig};

/// `POST /api/v1/export`'s body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExportRequest {
    /// A store named in the server's config (`[stores]`).
    pub store: String,
    /// One entity's rows, `TABLE:COLUMN=VALUE` (`users:id=42`)...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// ...and every row that references them, transitively.
    #[serde(default)]
    pub follow_fks: bool,
    /// Only these tables (whole); neither this nor `root`: every table.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
}

/// Run export `id` of `source` (blocking), and record how it ended.
pub(crate) fn run(jobs: &Jobs, state: &Path, id: &str, request: &ExportRequest, source: Address) {
    let (done, result) = export(jobs, state, id, request, source);
    match result {
        Ok(()) => jobs.finish(id, JobStatus::Complete, done, None),
        Err(e) => {
            tracing::warn!(export = %id, error = %e, "an export failed");
            jobs.finish(id, JobStatus::Failed, done, Some(e.to_string()));
        }
    }
}

/// What the export sent, and whether its whole stream is kept.
fn export(jobs: &Jobs, state: &Path, id: &str, r: &ExportRequest, source: Address) -> (Done, Result<()>) {
    let mut done = Done::default();
    let cfg = match config(state, r, source) {
        Ok(cfg) => cfg,
        Err(e) => return (done, Err(e)),
    };
    let partial = jobs.file(id, "ndjson.partial");
    let io = |e: std::io::Error| Error::new(ErrorKind::Io, format!("writing {}: {e}", partial.display()));
    let file = match super::jobs::private_file(&partial) {
        Ok(f) => f,
        Err(e) => return (done, Err(io(e))),
    };
    let mut out = crate::protocol::StreamWriter::new(std::io::BufWriter::new(file));
    let result = export::run(&cfg, &mut out).and_then(|_| out.flush());
    let sent = out.counts();
    drop(out);
    (done.streams, done.rows) = (sent.stream_ends, sent.records);
    let whole = jobs.file(id, "ndjson");
    let kept = result.and_then(|()| {
        std::fs::File::open(&partial)
            .and_then(|f| f.sync_all())
            .and_then(|()| std::fs::rename(&partial, &whole))
            .and_then(|()| std::fs::metadata(&whole))
            .map_err(io)
    });
    match kept {
        Ok(meta) => {
            done.bytes = meta.len();
            (done, Ok(()))
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            (done, Err(e))
        }
    }
}

/// The export a request asks for: the store's tables, or one entity's rows.
fn config(state: &Path, r: &ExportRequest, source: Address) -> Result<ExportConfig> {
    let selection = crate::cli::selection(&r.tables, &[], &[])?;
    let mut cfg = ExportConfig::of(source, selection, state.to_owned());
    cfg.roots = r
        .root
        .as_deref()
        .map(crate::stage::entity::Root::parse)
        .transpose()?
        .into_iter()
        .collect();
    cfg.follow_fks = r.follow_fks;
    Ok(cfg)
}
