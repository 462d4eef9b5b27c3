//! `ferry cutover SOURCE TARGET`: the last step of a move made while the application ran.
//!
//! Before it: capture installed on SOURCE, the tables copied, the changes followed. Then the
//! application stops writing to SOURCE (its job: maintenance mode, a read-only user, the old
//! service stopped), and `ferry cutover`:
//!
//! 1. drains the changes captured since the last the target acknowledged into TARGET;
//! 2. waits `quiet` and drains again, which must find nothing: SOURCE is no longer written to
//!    (otherwise the switch would lose what is written after it);
//! 3. compares every row of every table, with keys, unique constraints, foreign keys and
//!    counters (`ferry-validate SOURCE TARGET`), unless step 2 found changes;
//! 4. says GO (exit 0) only if all of that holds, else NO-GO with the reason (exit 1);
//! 5. on GO, with `reverse`, starts capturing TARGET, so the writes the application makes there
//!    can be followed back into SOURCE during the rollback window
//!    (`ferry-export TARGET --follow | ferry-import SOURCE`); with `drop_capture`, removes
//!    SOURCE's capture (its triggers, or the slot that holds its WAL).
//!
//! The drains run the same export and import as the command line, in this process, with the
//! same state file: each is a run that `ferry status` shows and `ferry rollback` can undo.

use std::io::{BufReader, Write};
use std::time::Duration;

use crate::address::Address;
use crate::connect::Selection;
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::StreamWriter;
use crate::stage::capture::{self, CaptureAction};
use crate::stage::export::{self, ExportConfig};
use crate::stage::import::{self, ImportConfig};
use crate::stage::validate::{self, Report, ValidateConfig};

#[derive(Debug, Clone)]
pub(crate) struct CutoverConfig {
    pub source: Address,
    pub target: Address,
    pub state_path: std::path::PathBuf,
    /// How long SOURCE must stay without a change before the switch.
    pub quiet: Duration,
    pub reverse: bool,
    pub drop_capture: bool,
}

/// What a cutover found.
#[derive(Debug)]
pub(crate) struct CutoverOutcome {
    /// Rows (changes) the drain brought.
    pub drained: u64,
    pub report: Report,
    /// Why not, if NO-GO.
    pub no_go: Option<String>,
}

/// Drain SOURCE's captured changes into TARGET: `ferry-export SOURCE --changes | ferry-import
/// TARGET`, joined by a pipe in this process. The rows it brought.
fn drain(cfg: &CutoverConfig) -> Result<u64> {
    let mut ecfg = ExportConfig::of(cfg.source.clone(), Selection::default(), cfg.state_path.clone());
    ecfg.changes = true;
    let icfg = ImportConfig::new(cfg.target.clone(), cfg.state_path.clone());
    let (reader, writer) = std::io::pipe().map_err(|e| Error::new(ErrorKind::Io, "making a pipe").with_source(e))?;
    let exporting = std::thread::spawn(move || {
        let mut out = StreamWriter::new(writer);
        export::run(&ecfg, &mut out)
    });
    let mut acks = StreamWriter::new(std::io::sink());
    let imported = import::run(&icfg, BufReader::new(reader), &mut acks);
    let exported = exporting
        .join()
        .map_err(|_| Error::new(ErrorKind::Io, "the export of the changes panicked"))?;
    let exported = exported.map_err(|e| e.context("draining the changes (export)"))?;
    let imported = imported.map_err(|e| {
        e.context("draining the changes into the copy (ferry cutover moves the changes since the copy: make the copy first, ferry-export SOURCE | ferry-import TARGET --create; the --create in this message is for that import)")
    })?;
    if imported.rejected > 0 {
        return Err(Error::data(format!(
            "draining the changes: {} rows rejected by {} (see the reject file); nothing may be left behind at a cutover",
            imported.rejected,
            cfg.target.redacted()
        )));
    }
    Ok(exported.rows)
}

pub(crate) fn run<W: Write>(cfg: &CutoverConfig, out: &mut StreamWriter<W>) -> Result<CutoverOutcome> {
    let say = |s: &str| crate::human::say(&format!("ferry cutover: {s}"));
    if cfg.reverse && !matches!(cfg.target, Address::Sqlite(_) | Address::Postgres(_) | Address::D1(_)) {
        return Err(Error::usage(format!(
            "--reverse: ferry captures the changes of SQLite, PostgreSQL and D1 databases, not of {}; keep a backup for the way back instead (ferry backup {} --name before-cutover)",
            cfg.target.redacted(),
            cfg.source.redacted()
        )));
    }
    say(&format!(
        "draining the changes of {} into {}",
        cfg.source.redacted(),
        cfg.target.redacted()
    ));
    let drained = drain(cfg)?;
    say(&format!(
        "{drained} changes applied; waiting {:?} for the source to stay quiet",
        cfg.quiet
    ));
    std::thread::sleep(cfg.quiet);
    let late = drain(cfg)?;
    if late > 0 {
        // A comparison of a source still written to proves nothing, and its findings (a counter
        // behind, rows missing) would send people after what the next drain puts right.
        return Ok(CutoverOutcome {
            drained: drained + late,
            report: Report::default(),
            no_go: Some(format!(
                "{late} changes arrived after the drain: the source is still written to; stop the application's writes, then run ferry cutover again (nothing was compared)"
            )),
        });
    }
    let mut no_go = None;
    say("comparing every row, key, foreign key and counter");
    let mut vcfg = ValidateConfig::for_stream(Some(cfg.target.clone()));
    vcfg.source = Some(cfg.source.clone());
    let report = validate::run(&vcfg, std::io::empty(), out)?;
    if no_go.is_none() && !report.passed() {
        no_go = Some(format!(
            "the target differs from the source ({:?}; the findings are on stdout)",
            report.status
        ));
    }
    if no_go.is_none() {
        // (Their lines are not the findings: stdout stays the validation's.)
        let mut quiet = StreamWriter::new(std::io::sink());
        if cfg.reverse {
            let recast = match (&cfg.target, &cfg.source) {
                (Address::Postgres(_), Address::Sqlite(_) | Address::D1(_)) => " | ferry-transform --dialect sqlite",
                _ => "",
            };
            say(&format!(
                "capturing {} for the way back: follow it with ferry-export {} --follow{recast} | ferry-import {}",
                cfg.target.redacted(),
                cfg.target.redacted(),
                cfg.source.redacted()
            ));
            capture::run(&cfg.target, CaptureAction::Install, &mut quiet)?;
        }
        if cfg.drop_capture {
            say(&format!("removing the capture of {}", cfg.source.redacted()));
            capture::run(&cfg.source, CaptureAction::Remove { confirm: true }, &mut quiet)?;
        }
    }
    Ok(CutoverOutcome { drained, report, no_go })
}
