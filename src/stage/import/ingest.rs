//! What every import does with its input, into tables or files: the BEGIN it takes, the
//! producer's ERROR lines, the reject file, and how a failed run is recorded.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use super::ImportConfig;
use crate::checkpoint::{Checkpoint, RunStatus};
use crate::error::{Context, Error, ErrorKind, Result};
use crate::protocol::{Begin, ErrorMsg, Line, PROTOCOL};

/// The reject file of a run, opened at the first reject.
#[derive(Default)]
pub(crate) struct Rejects {
    pub(crate) path: PathBuf,
    file: Option<BufWriter<File>>,
    pub(crate) count: u64,
}

impl Rejects {
    /// The reject file of a run: `path`, or `rejects-RUN_ID.ndjson` next to the state file.
    pub(crate) fn for_run(cfg: &ImportConfig, run_id: &str) -> Rejects {
        let path = cfg.reject_path.clone().unwrap_or_else(|| {
            let dir = cfg.state_path.parent().map(PathBuf::from).unwrap_or_default();
            dir.join(format!("rejects-{run_id}.ndjson"))
        });
        Rejects {
            path,
            file: None,
            count: 0,
        }
    }

    pub(crate) fn write(&mut self, entry: &impl serde::Serialize) -> Result<()> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).ctx(ErrorKind::Io, || format!("creating {}", dir.display()))?;
            }
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .ctx(ErrorKind::Io, || {
                    format!("opening the reject file {}", self.path.display())
                })?;
            self.file = Some(BufWriter::new(f));
        }
        if let Some(f) = &mut self.file {
            serde_json::to_writer(&mut *f, entry)
                .map_err(std::io::Error::from)
                .and_then(|_| f.write_all(b"\n"))
                .ctx(ErrorKind::Io, || {
                    format!("writing the reject file {}", self.path.display())
                })?;
        }
        self.count += 1;
        Ok(())
    }

    /// Make rejects durable before the rows around them are acknowledged.
    pub(crate) fn sync(&mut self) -> Result<()> {
        if let Some(f) = &mut self.file {
            f.flush().ctx(ErrorKind::Io, || {
                format!("writing the reject file {}", self.path.display())
            })?;
            f.get_ref().sync_data().ctx(ErrorKind::Io, || {
                format!("syncing the reject file {}", self.path.display())
            })?;
        }
        Ok(())
    }
}

/// A BEGIN line, refused when one came already or its protocol is not ours.
pub(crate) fn parse_begin(line: &Line<'_>, began: bool) -> Result<Begin> {
    if began {
        return Err(line.error("a second BEGIN: one stream per input"));
    }
    let begin: Begin = line.parse()?;
    if begin.protocol != PROTOCOL {
        return Err(line.error(format!("protocol {:?} is not {PROTOCOL:?}", begin.protocol)));
    }
    Ok(begin)
}

/// An ERROR line from upstream: a fatal one stops the import; another is logged and recorded
/// (with the path it names, if any).
pub(crate) fn producer_error(line: &Line<'_>, checkpoint: Option<&mut Checkpoint>, run_id: &str) -> Result<()> {
    let e: ErrorMsg = line.parse()?;
    if e.fatal {
        return Err(line.error(format!("the producer failed ({}): {}", e.failure_type, e.message)));
    }
    let (stream, path) = (e.stream.as_deref().unwrap_or(""), e.path.as_deref().unwrap_or(""));
    match e.left_out() {
        // Left out on purpose (a symbolic link, a special file): a result, not a failure.
        Some(status) => tracing::info!(stream, path, %status, message = %e.message, "left out by the producer"),
        None => tracing::warn!(stream, path, message = %e.message, "the producer reported an error"),
    }
    if let Some(cp) = checkpoint {
        cp.record_error(
            run_id,
            e.stream.as_deref(),
            Some(line.no),
            e.path.as_deref(),
            &e.message,
        )?;
    }
    Ok(())
}

/// Record how a run ended badly. Errors here are logged: the original error is what the user
/// needs to see.
pub(crate) fn record_failure(checkpoint: Option<&mut Checkpoint>, run_id: &str, status: RunStatus, e: &Error) {
    if let Some(cp) = checkpoint {
        let message = e.chain();
        if let Err(ce) = cp.finish_run(run_id, status, Some(&message)) {
            tracing::error!(error = %ce, "recording the failure in the state file failed");
        }
        let _ = cp.record_error(run_id, None, None, None, &message);
    }
}
