//! Ctrl-C and SIGTERM: stop at the next safe point rather than die mid-write.
//!
//! The first signal only raises a flag; the stream reader and writer look at it on every line,
//! so a stage stops within a line: an import rolls back its open transaction and records the run
//! as interrupted, and every stage says how far it got and how to continue. A second signal ends
//! the process at once (exit 130), for whatever does not come back to a line soon enough.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, ErrorKind, Result};

static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// The exit status of a process that a second signal ends (128 + SIGINT, as shells report it).
const HARD_EXIT: i32 = 130;

/// Catch SIGINT and SIGTERM for this process (the binaries call this once at start).
pub(crate) fn install() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)));
    for sig in [SIGINT, SIGTERM] {
        // The shutdown goes first: armed only once the flag is up, so the second signal ends it.
        let armed = signal_hook::flag::register_conditional_shutdown(sig, HARD_EXIT, Arc::clone(flag))
            .and_then(|_| signal_hook::flag::register(sig, Arc::clone(flag)));
        if let Err(e) = armed {
            tracing::debug!(error = %e, "cannot catch signal {sig}: it ends the process at once");
        }
    }
}

/// Whether a signal asked this process to stop.
pub(crate) fn requested() -> bool {
    FLAG.get().is_some_and(|f| f.load(Ordering::Relaxed))
}

/// An `Interrupted` error once a signal asked this process to stop.
pub(crate) fn check() -> Result<()> {
    if requested() {
        return Err(Error::new(
            ErrorKind::Interrupted,
            "interrupted (Ctrl-C or SIGTERM): stopped at the next line, nothing after the last acknowledged STATE was committed; run the same command again to continue",
        ));
    }
    Ok(())
}
