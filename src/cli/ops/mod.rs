//! `ferry`: operations on a migration, one file per subcommand (status, rollback, assess,
//! backup and restore, completions and man); the demo is `cli::demo`.

mod assess;
mod backup;
mod capture;
mod cutover;
mod docs;
mod rollback;
mod serve;
mod status;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use self::assess::{AssessArgs, run_assess};
use self::backup::{BackupArgs, RestoreArgs, run_backup, run_restore};
use self::capture::{CaptureArgs, run_capture};
use self::cutover::{CutoverArgs, run_cutover};
use self::docs::{CompletionsArgs, ManArgs, run_completions, run_man};
use self::rollback::{RollbackArgs, run_rollback};
use self::serve::{ServeArgs, run_serve};
use self::status::{StatusArgs, run_status};
use crate::cli::{LogArgs, finish, init_logging};

const EXAMPLES: &str = "\
Examples:
  ferry demo                        # the whole pipeline on the bundled sample data (tables and files)
  ferry status                      # runs in .ferry/state.db
  ferry status --run 0193a5c2-7f1e  # one run's batches
  ferry status --json               # as NDJSON
  ferry rollback --batch 0193a5c2-7f1e            # what deleting that run's objects would do
  ferry rollback --batch 0193a5c2-7f1e --confirm  # do it (audit log: .ferry/audit.ndjson)
  ferry rollback --last                           # what undoing the last import would do
  ferry rollback --full --db-only --confirm       # undo every import into databases, newest first
  ferry rollback --last --target postgres://app:PASSWORD@db/app --confirm   # PostgreSQL: give the password
  ferry assess sqlite:app.db --to d1     # rows, bytes, value kinds, what D1 will refuse, time
  ferry assess dir:/srv/media --json     # sizes, types, duplicates, unreadable files, as JSON
  ferry backup sqlite:app.db --name before-upgrade   # .ferry/backups/before-upgrade/
  ferry backup --list
  ferry restore before-upgrade sqlite:restored.db --create   # then validated against the backup
  ferry backup --prune --keep 5 --older-than 30d --confirm
  ferry capture install sqlite:app.db    # record every change, to follow the app while it runs
  ferry cutover sqlite:app.db postgres://app@new/app   # writes stopped: drain, prove, GO or NO-GO
  ferry completions bash > ~/.local/share/bash-completion/completions/ferry
  ferry completions zsh --dir ~/.zfunc   # one _ferry* file per program
  ferry man /usr/local/share/man/man1    # ferry.1, ferry-export.1, ferry-import.1, ...
  ferry serve --config ferry-serve.toml  # runs, progress and metrics over HTTP (tokens)

The stages themselves are separate programs: ferry-export, ferry-transform, ferry-import,
ferry-validate (each has --help with examples).";

/// ferry: move data between stores and prove nothing was lost.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, after_long_help = crate::cli::with_tuning(EXAMPLES))]
pub struct FerryArgs {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs and batches recorded in the state file
    Status(StatusArgs),
    /// Run export | transform | import | validate on the bundled sample database
    Demo(crate::cli::demo::DemoArgs),
    /// Undo an import run: the objects it created, or the rows it inserted and overwrote and
    /// the tables it created (dry run unless --confirm)
    Rollback(RollbackArgs),
    /// What a migration is getting into: sizes, value kinds, duplicates, what the target will
    /// refuse, and a time estimate
    Assess(AssessArgs),
    /// Named backups: write one (a compressed stream and a manifest), list them, prune them
    Backup(BackupArgs),
    /// Load a named backup into a target, then validate the target against it
    Restore(RestoreArgs),
    /// Record a database's changes (install, remove, status), to follow it while it runs
    Capture(CaptureArgs),
    /// The switch of a move made while the application ran: drain its changes, check the source
    /// is quiet, compare every row: GO or NO-GO
    Cutover(CutoverArgs),
    /// Shell completions for every ferry program
    Completions(CompletionsArgs),
    /// Write man pages for every ferry program (and each `ferry` subcommand) into a directory
    Man(ManArgs),
    /// Serve the runs, their progress and Prometheus metrics over HTTP, behind bearer tokens
    Serve(ServeArgs),
}

pub fn main() -> ExitCode {
    let args = crate::cli::args_or_exit("ferry", FerryArgs::try_parse());
    init_logging(&args.log);
    let result = match &args.command {
        Command::Status(s) => run_status(s),
        Command::Demo(d) => crate::cli::demo::run(d),
        Command::Rollback(r) => run_rollback(r),
        Command::Assess(a) => run_assess(a),
        Command::Backup(b) => run_backup(b),
        Command::Restore(r) => run_restore(r),
        Command::Capture(c) => run_capture(c),
        Command::Cutover(c) => run_cutover(c),
        Command::Completions(c) => run_completions(c),
        Command::Man(m) => run_man(m),
        Command::Serve(s) => run_serve(s),
    };
    finish("ferry", result)
}
