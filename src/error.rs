//! Errors: one struct with a kind a user (or a script) can act on.
//!
//! Every error carries a message written for the person running the migration: what happened,
//! where (stream, key, line, redacted address) and, where there is one, what to do. The kind decides
//! the exit status, the protocol's `failure_type`, and whether a retry can help.

use std::fmt;

/// What sort of failure this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Bad flags, address or configuration: fix the command line.
    Usage,
    /// The input stream is malformed (bad JSON, wrong types for its SCHEMA, truncated...).
    Input,
    /// A value or row the target cannot hold as it is.
    Data,
    /// The source store failed (cannot open, missing table, SQL error).
    Source,
    /// The target store failed.
    Target,
    /// The state file (checkpoint) could not be read or written.
    Checkpoint,
    /// An I/O error on a local file or pipe.
    Io,
    /// A fault that went away on retry before, and did not this time (network, server restart).
    Transient,
    /// The process reading our stdout went away before the stage was done.
    BrokenPipe,
    /// The input ended without END: the producer stopped early.
    Truncated,
    /// A signal (Ctrl-C, SIGTERM) asked the stage to stop.
    Interrupted,
}

impl ErrorKind {
    /// The protocol's `failure_type` for an ERROR message.
    pub fn failure_type(self) -> &'static str {
        match self {
            ErrorKind::Usage => "config",
            ErrorKind::Input | ErrorKind::Data | ErrorKind::Truncated => "data",
            ErrorKind::Transient => "transient",
            ErrorKind::Source
            | ErrorKind::Target
            | ErrorKind::Checkpoint
            | ErrorKind::Io
            | ErrorKind::BrokenPipe
            | ErrorKind::Interrupted => "system",
        }
    }
}

/// A ferry error: a kind, a message for people, and the underlying cause if any.
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Usage, message)
    }

    pub fn input(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Input, message)
    }

    pub fn data(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Data, message)
    }

    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefix the message with more context (outermost first, as a user reads it).
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// The message followed by each underlying cause, `: `-separated.
    pub fn chain(&self) -> String {
        let mut out = self.message.clone();
        let first = self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static));
        for c in first.into_iter().flat_map(causes) {
            let text = c.to_string();
            if !out.contains(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
        }
        out
    }
}

/// `e` and the errors beneath it, outermost first.
pub fn causes<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |c| c.source())
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.chain())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.chain())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        let kind = if e.kind() == std::io::ErrorKind::BrokenPipe {
            ErrorKind::BrokenPipe
        } else {
            ErrorKind::Io
        };
        Error::new(kind, "I/O error").with_source(e)
    }
}

/// What a user is told when a disk filled up under a write.
const FULL: &str = " (the disk is full: free space on it, then re-run the same command to continue; nothing after the last acknowledged STATE is recorded as done)";

/// Whether `e` says a disk is full: ENOSPC, or SQLite's SQLITE_FULL.
fn disk_full(e: &(dyn std::error::Error + 'static)) -> bool {
    causes(e).any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::StorageFull)
            || matches!(
                c.downcast_ref::<rusqlite::Error>(),
                Some(rusqlite::Error::SqliteFailure(f, _)) if f.code == rusqlite::ErrorCode::DiskFull
            )
    })
}

/// Attach a kind and a message to any error, lazily.
pub trait Context<T> {
    fn ctx<M: Into<String>>(self, kind: ErrorKind, message: impl FnOnce() -> M) -> Result<T>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> Context<T> for std::result::Result<T, E> {
    fn ctx<M: Into<String>>(self, kind: ErrorKind, message: impl FnOnce() -> M) -> Result<T> {
        self.map_err(|e| {
            // A broken pipe stays a broken pipe whatever the caller thought it was doing.
            let is_pipe = (&e as &dyn std::error::Error)
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe);
            let kind = if is_pipe { ErrorKind::BrokenPipe } else { kind };
            let mut message = message().into();
            if disk_full(&e) {
                message.push_str(FULL);
            }
            Error::new(kind, message).with_source(e)
        })
    }
}

/// Exit statuses shared by every binary (the README lists them, as `--help` does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Done: everything asked was done; for validate, the two sides proved equal.
    Ok = 0,
    /// validate only: the sides differ (or something could not be verified).
    Differences = 1,
    /// An error stopped the stage; what was acknowledged before it stays.
    Error = 2,
    /// import: everything else was done, but rows or files were rejected (see the reject file).
    Rejected = 3,
    /// Stopped before the end, and can be continued: the input ended without END (the producer
    /// stopped early), or the reader of stdout went away before the results were delivered.
    Incomplete = 4,
    /// A signal (Ctrl-C, SIGTERM) stopped it at the next line; run the same command to continue.
    Interrupted = 130,
}

impl ExitStatus {
    /// The status an error ends a stage with.
    pub fn for_error(e: &Error) -> ExitStatus {
        match e.kind() {
            ErrorKind::BrokenPipe | ErrorKind::Truncated => ExitStatus::Incomplete,
            ErrorKind::Interrupted => ExitStatus::Interrupted,
            _ => ExitStatus::Error,
        }
    }

    pub fn code(self) -> u8 {
        self as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_the_documented_numbers() {
        assert_eq!(ExitStatus::Ok.code(), 0);
        assert_eq!(ExitStatus::Differences.code(), 1);
        assert_eq!(ExitStatus::Error.code(), 2);
        assert_eq!(ExitStatus::Rejected.code(), 3);
        assert_eq!(ExitStatus::Incomplete.code(), 4);
        assert_eq!(ExitStatus::Interrupted.code(), 130);
        let pipe = Error::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert_eq!(ExitStatus::for_error(&pipe), ExitStatus::Incomplete);
        let cut = Error::new(ErrorKind::Truncated, "no END");
        assert_eq!(ExitStatus::for_error(&cut), ExitStatus::Incomplete);
        assert_eq!(ExitStatus::for_error(&Error::input("x")), ExitStatus::Error);
    }

    #[test]
    fn chain_shows_causes_once() {
        let io = std::io::Error::other("disk on fire");
        let e: Result<()> = Err(io).ctx(ErrorKind::Io, || "writing reject file");
        let e = e.unwrap_err().context("stream main.users");
        assert_eq!(e.chain(), "stream main.users: writing reject file: disk on fire");
        assert_eq!(e.kind().failure_type(), "system");
    }

    #[test]
    fn a_full_disk_says_what_to_do() {
        let io = std::io::Error::from(std::io::ErrorKind::StorageFull);
        let e: Result<()> = Err(io).ctx(ErrorKind::Io, || "writing a.bin");
        assert!(
            e.unwrap_err()
                .chain()
                .starts_with("writing a.bin (the disk is full: free space on it, then re-run")
        );
        let full = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL), None);
        let e: Result<()> = Err(full).ctx(ErrorKind::Checkpoint, || "state file");
        assert!(e.unwrap_err().chain().contains("the disk is full"));
        let other = std::io::Error::from(std::io::ErrorKind::NotFound);
        let e: Result<()> = Err(other).ctx(ErrorKind::Io, || "reading");
        assert!(!e.unwrap_err().chain().contains("full"));
    }

    #[test]
    fn broken_pipe_is_recognised_through_context() {
        let io = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        let e: Result<()> = Err(io).ctx(ErrorKind::Io, || "writing stdout");
        assert_eq!(e.unwrap_err().kind(), ErrorKind::BrokenPipe);
    }
}
