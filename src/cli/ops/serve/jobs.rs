//! Long work asked for over HTTP (exports, imports): each runs in the background through the
//! same library as the stages, its files in a directory of its kind beside the state file
//! (`exports/`, `imports/`) and its record in `ID.json` there, rewritten whole at each change.
//! A server that stopped during a job finds it on restart and marks it failed: an export is asked
//! for again, an import (whose rows are committed with markers) sent again, and finds its rows
//! already done.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{Context as _, ErrorKind, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum JobStatus {
    Running,
    Complete,
    /// An import that wrote what it could and rejected some rows (`error` says how many).
    CompleteWithRejects,
    Failed,
}

/// What a job did, as far as it got.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Done {
    pub streams: u64,
    /// Rows read (an import) or sent (an export).
    pub rows: u64,
    /// The stream file's size: the export's, or the import's upload.
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub already_done: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<u64>,
    /// The import's run in the state file (`GET /api/v1/runs/RUN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
}

/// A job's record, as `GET /api/v1/export/ID` or `/api/v1/import/ID` gives it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Job {
    pub id: String,
    pub status: JobStatus,
    /// The token that asked for it: only it (or an admin) may see it.
    pub caller: String,
    /// The request, as understood.
    pub request: serde_json::Value,
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(flatten)]
    pub done: Done,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Where an export's stream is fetched from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download: Option<String>,
}

/// The jobs of one kind.
pub(crate) struct Jobs {
    dir: PathBuf,
    jobs: Mutex<HashMap<String, Job>>,
    /// Jobs a stopped server had left running, failed when these were opened.
    pub failed_on_open: usize,
}

impl Jobs {
    /// The jobs kept in `dir` (made if missing); any a stopped server left running failed, and
    /// their partial files are removed.
    pub(crate) fn open(dir: PathBuf) -> Result<Jobs> {
        std::fs::create_dir_all(&dir).ctx(ErrorKind::Io, || format!("creating {}", dir.display()))?;
        let mut jobs = HashMap::new();
        let mut failed_on_open = 0;
        let entries = std::fs::read_dir(&dir).ctx(ErrorKind::Io, || format!("reading {}", dir.display()))?;
        for entry in entries.filter_map(std::result::Result::ok) {
            let path = entry.path();
            if path.to_string_lossy().ends_with(".partial") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let Some(mut job) = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Job>(&b).ok())
            else {
                tracing::warn!(file = %path.display(), "not a job record: left alone");
                continue;
            };
            if job.status == JobStatus::Running {
                job.status = JobStatus::Failed;
                job.error = Some("the server stopped during this job: ask for it again".into());
                job.finished_at = Some(crate::protocol::now_rfc3339());
                write_record(&dir, &job)?;
                failed_on_open += 1;
            }
            jobs.insert(job.id.clone(), job);
        }
        Ok(Jobs {
            dir,
            jobs: Mutex::new(jobs),
            failed_on_open,
        })
    }

    pub(crate) fn get(&self, id: &str) -> Option<Job> {
        self.lock().get(id).cloned()
    }

    /// A file of job `id`, by its suffix (`ndjson`, `ndjson.partial`).
    pub(crate) fn file(&self, id: &str, suffix: &str) -> PathBuf {
        self.dir.join(format!("{id}.{suffix}"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Job>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record a new job as running (`run`: its run in the state file, when known already).
    pub(crate) fn start(
        &self,
        id: &str,
        caller: &str,
        request: serde_json::Value,
        download: Option<String>,
        run: Option<String>,
    ) -> Result<Job> {
        let job = Job {
            id: id.to_owned(),
            status: JobStatus::Running,
            caller: caller.to_owned(),
            request,
            started_at: crate::protocol::now_rfc3339(),
            finished_at: None,
            done: Done { run, ..Done::default() },
            error: None,
            download,
        };
        write_record(&self.dir, &job)?;
        self.lock().insert(id.to_owned(), job.clone());
        Ok(job)
    }

    /// Record how job `id` ended: what it did, and what went wrong if anything did.
    pub(crate) fn finish(&self, id: &str, status: JobStatus, done: Done, error: Option<String>) {
        let mut jobs = self.lock();
        let Some(j) = jobs.get_mut(id) else { return };
        j.finished_at = Some(crate::protocol::now_rfc3339());
        j.status = status;
        let run = done.run.clone().or(j.done.run.take());
        j.done = Done { run, ..done };
        j.error = error;
        if let Err(e) = write_record(&self.dir, j) {
            tracing::error!(job = %id, error = %e, "the job's record could not be written");
        }
    }
}

/// Run a stage writing into memory: what it returned, and the JSON lines it wrote (its PLAN or
/// FINDING lines), for an answer.
pub(crate) fn captured<T>(
    stage: impl FnOnce(&mut crate::protocol::StreamWriter<Vec<u8>>) -> Result<T>,
) -> Result<(T, Vec<serde_json::Value>)> {
    let mut out = crate::protocol::StreamWriter::new(Vec::new());
    let returned = stage(&mut out)?;
    let text = out.into_inner()?;
    let lines = String::from_utf8_lossy(&text)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    Ok((returned, lines))
}

/// A new file only the server's user may read: uploads, exports and job records hold users' data.
pub(crate) fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// Write a job's record whole (a temporary file renamed over the old one).
fn write_record(dir: &Path, job: &Job) -> Result<()> {
    use std::io::Write as _;
    let path = dir.join(format!("{}.json", job.id));
    let tmp = dir.join(format!("{}.json.tmp", job.id));
    let text = serde_json::to_vec_pretty(job).expect("a job serializes");
    private_file(&tmp)
        .and_then(|mut f| f.write_all(&text))
        .and_then(|()| std::fs::rename(&tmp, &path))
        .ctx(ErrorKind::Io, || format!("writing {}", path.display()))
}
