//! Exports asked for over HTTP: each runs in the background through the same `export::run` as
//! `ferry-export`, into `exports/ID.ndjson` beside the state file (written as `.partial` and
//! renamed when whole, so a download never gets half a stream), with its record in `ID.json`.
//! A server that stopped during an export finds it on restart and marks it failed (an export
//! is asked for again; nothing of it was handed out).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::address::Address;
use crate::error::{Context as _, Error, ErrorKind, Result};
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum JobStatus {
    Running,
    Complete,
    Failed,
}

/// An export's record, as `GET /api/v1/export/ID` gives it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Job {
    pub id: String,
    pub status: JobStatus,
    /// The token that asked for it: only it (or an admin) may download it.
    pub caller: String,
    pub request: ExportRequest,
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    pub streams: u64,
    pub rows: u64,
    /// The stream file's size, once complete.
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub download: String,
}

/// The exports of this server.
pub(crate) struct Exports {
    dir: PathBuf,
    state: PathBuf,
    jobs: Mutex<HashMap<String, Job>>,
}

impl Exports {
    /// The exports kept in `dir` (made if missing); any a stopped server left running failed.
    pub(crate) fn open(dir: PathBuf, state: PathBuf) -> Result<Exports> {
        std::fs::create_dir_all(&dir).ctx(ErrorKind::Io, || format!("creating {}", dir.display()))?;
        let mut jobs = HashMap::new();
        let entries = std::fs::read_dir(&dir).ctx(ErrorKind::Io, || format!("reading {}", dir.display()))?;
        for entry in entries.filter_map(std::result::Result::ok) {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let Some(mut job) = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Job>(&b).ok())
            else {
                tracing::warn!(file = %path.display(), "not an export record: left alone");
                continue;
            };
            if job.status == JobStatus::Running {
                job.status = JobStatus::Failed;
                job.error = Some("the server stopped during this export: ask for it again".into());
                job.finished_at = Some(crate::protocol::now_rfc3339());
                let _ = std::fs::remove_file(partial(&dir, &job.id));
                write_record(&dir, &job)?;
            }
            jobs.insert(job.id.clone(), job);
        }
        Ok(Exports {
            dir,
            state,
            jobs: Mutex::new(jobs),
        })
    }

    pub(crate) fn get(&self, id: &str) -> Option<Job> {
        self.lock().get(id).cloned()
    }

    /// The complete stream file of an export.
    pub(crate) fn file(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.ndjson"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Job>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record a new export as running; the caller then runs it with [`Exports::run`].
    pub(crate) fn start(&self, id: &str, caller: &str, request: ExportRequest) -> Result<Job> {
        let id = id.to_owned();
        let job = Job {
            download: format!("/api/v1/export/{id}/download"),
            id: id.clone(),
            status: JobStatus::Running,
            caller: caller.to_owned(),
            request,
            started_at: crate::protocol::now_rfc3339(),
            finished_at: None,
            streams: 0,
            rows: 0,
            bytes: 0,
            error: None,
        };
        write_record(&self.dir, &job)?;
        self.lock().insert(id, job.clone());
        Ok(job)
    }

    /// Run the export `job` from `source` (blocking: the caller gives it a thread), and record
    /// how it ended.
    pub(crate) fn run(&self, job: &Job, source: Address) {
        let result = self.export(job, source);
        let mut jobs = self.lock();
        let Some(j) = jobs.get_mut(&job.id) else { return };
        j.finished_at = Some(crate::protocol::now_rfc3339());
        match result {
            Ok((streams, rows, bytes)) => {
                j.status = JobStatus::Complete;
                (j.streams, j.rows, j.bytes) = (streams, rows, bytes);
            }
            Err(e) => {
                tracing::warn!(export = %job.id, error = %e, "an export failed");
                j.status = JobStatus::Failed;
                j.error = Some(e.to_string());
            }
        }
        if let Err(e) = write_record(&self.dir, j) {
            tracing::error!(export = %job.id, error = %e, "the export's record could not be written");
        }
    }

    fn export(&self, job: &Job, source: Address) -> Result<(u64, u64, u64)> {
        let r = &job.request;
        let selection = crate::cli::selection(&r.tables, &[], &[])?;
        let mut cfg = ExportConfig::of(source, selection, self.state.clone());
        cfg.roots = r
            .root
            .as_deref()
            .map(crate::stage::entity::Root::parse)
            .transpose()?
            .into_iter()
            .collect();
        cfg.follow_fks = r.follow_fks;
        let partial = partial(&self.dir, &job.id);
        let io = |e: std::io::Error| Error::new(ErrorKind::Io, format!("writing {}: {e}", partial.display()));
        let file = std::fs::File::create(&partial).map_err(io)?;
        let mut out = crate::protocol::StreamWriter::new(std::io::BufWriter::new(file));
        let result = export::run(&cfg, &mut out).and_then(|o| out.flush().map(|()| o));
        let sent = out.counts();
        drop(out);
        if let Err(e) = result {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
        std::fs::File::open(&partial).and_then(|f| f.sync_all()).map_err(io)?;
        let whole = self.file(&job.id);
        std::fs::rename(&partial, &whole).map_err(io)?;
        let bytes = std::fs::metadata(&whole).map_err(io)?.len();
        Ok((sent.stream_ends, sent.records, bytes))
    }
}

fn partial(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.ndjson.partial"))
}

/// Write an export's record whole (a temporary file renamed over the old one).
fn write_record(dir: &Path, job: &Job) -> Result<()> {
    let path = dir.join(format!("{}.json", job.id));
    let tmp = dir.join(format!("{}.json.tmp", job.id));
    let text = serde_json::to_vec_pretty(job).expect("a job serializes");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .ctx(ErrorKind::Io, || format!("writing {}", path.display()))
}
