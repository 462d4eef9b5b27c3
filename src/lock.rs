//! Who may write a target: one import (or rollback) at a time, and the second comer told who
//! holds it.
//!
//! Locks are the store's own where it has them, so they go away with the process that took
//! them, however it ends (a kill included) and never need clearing by hand: a file lock (`flock`)
//! for a SQLite database (on a file beside it) and for an object store (beside the state file),
//! and session advisory locks, per table, in PostgreSQL. Each says who holds it: the program,
//! its process id, its host and since when.

use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

use crate::error::{Context as _, Error, ErrorKind, Result};

/// Who holds (or asks for) a lock.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Holder {
    pub program: String,
    pub pid: u32,
    pub host: String,
    pub since: String,
}

impl Holder {
    /// This process, named as it was run (`ferry-import`, `ferry rollback`).
    pub(crate) fn this_process() -> Holder {
        let args: Vec<String> = std::env::args().take(2).collect();
        let exe = args
            .first()
            .map(|a| {
                Path::new(a)
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .unwrap_or_else(|| "ferry".into());
        let program = match args.get(1) {
            Some(sub) if exe == "ferry" && !sub.starts_with('-') => format!("{exe} {sub}"),
            _ => exe,
        };
        Holder::me(&program)
    }

    /// This process, as `program`.
    pub(crate) fn me(program: &str) -> Holder {
        Holder {
            program: program.to_owned(),
            pid: std::process::id(),
            host: hostname(),
            since: crate::protocol::now_rfc3339(),
        }
    }

    /// `ferry-import (pid 1234 on host-a, since 2026-12-06T23:59:00Z)`
    pub(crate) fn describe(&self) -> String {
        format!(
            "{} (pid {} on {}, since {})",
            self.program, self.pid, self.host, self.since
        )
    }

    fn line(&self) -> String {
        format!("{}\t{}\t{}\t{}\n", self.program, self.pid, self.host, self.since)
    }

    fn parse(text: &str) -> Option<Holder> {
        let mut f = text.trim_end().split('\t');
        Some(Holder {
            program: f.next()?.to_owned(),
            pid: f.next()?.parse().ok()?,
            host: f.next()?.to_owned(),
            since: f.next()?.to_owned(),
        })
    }
}

/// This machine's name, as `hostname` prints it.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Whether process `pid` of this machine is still there.
pub(crate) fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// An exclusive lock on a local file, held until it is dropped or the process ends.
#[derive(Debug)]
pub(crate) struct FileLock {
    _file: std::fs::File,
}

impl FileLock {
    /// Take the lock at `path` for `me`, or say who holds it; `what` names what it guards (the
    /// target's address).
    pub(crate) fn acquire(path: &Path, what: &str, me: &Holder) -> Result<FileLock> {
        let e = || format!("taking the lock {} on {what}", path.display());
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .ctx(ErrorKind::Io, e)?;
        use rustix::fs::{FlockOperation, flock};
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let who = Holder::parse(&text).map_or_else(|| "another ferry process".to_owned(), |h| h.describe());
                return Err(busy(what, &who));
            }
            Err(err) => return Err(Error::new(ErrorKind::Io, e()).with_source(std::io::Error::from(err))),
        }
        // Ours now: say who we are, for the next comer.
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(me.line().as_bytes()))
            .ctx(ErrorKind::Io, e)?;
        Ok(FileLock { _file: file })
    }
}

/// The error for a lock on `what` that `who` holds.
pub(crate) fn busy(what: &str, who: &str) -> Error {
    Error::new(
        ErrorKind::Usage,
        format!(
            "another ferry process is writing {what}: {who}; wait for it to finish (or stop it), then run this again"
        ),
    )
}

/// The lock file of a SQLite database: beside it, named after it.
pub(crate) fn sqlite_lock_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push("-ferry-lock");
    db.with_file_name(name)
}

/// The lock file of a target kept by a state file (an object store): beside the state file,
/// named after the target.
pub(crate) fn target_lock_path(state_path: &Path, target: &str) -> PathBuf {
    use sha2::Digest as _;
    let tag: String = sha2::Sha256::digest(target.as_bytes())[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut name = state_path.file_name().unwrap_or_default().to_os_string();
    name.push(format!("-lock-{tag}"));
    state_path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_taker_is_told_who_holds_the_lock_and_a_dropped_lock_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db-ferry-lock");
        let me = Holder::me("ferry-import");
        let held = FileLock::acquire(&path, "sqlite:app.db", &me).unwrap();
        let e = FileLock::acquire(&path, "sqlite:app.db", &Holder::me("ferry rollback")).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("another ferry process is writing sqlite:app.db: ferry-import (pid "),
            "{text}"
        );
        assert!(
            text.contains(&format!("pid {} on {}", std::process::id(), hostname())),
            "{text}"
        );
        drop(held);
        FileLock::acquire(&path, "sqlite:app.db", &me).unwrap();
        assert!(alive(std::process::id()));
        assert_eq!(
            sqlite_lock_path(Path::new("/d/app.db")),
            Path::new("/d/app.db-ferry-lock")
        );
    }
}
