//! `ferry`: operations on a migration (status) and the demo.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use super::{LogArgs, finish, init_logging};
use crate::checkpoint::DEFAULT_STATE_PATH;
use crate::error::{Context as _, Error, ErrorKind, ExitStatus, Result};
use crate::protocol::StreamWriter;
use crate::stage::rollback::{self, RollbackConfig};
use crate::stage::status::{self, StatusConfig};

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
  ferry completions bash > ~/.local/share/bash-completion/completions/ferry
  ferry completions zsh --dir ~/.zfunc   # one _ferry* file per program
  ferry man /usr/local/share/man/man1    # ferry.1, ferry-export.1, ferry-import.1, ...

The stages themselves are separate programs: ferry-export, ferry-transform, ferry-import,
ferry-validate (each has --help with examples).";

/// ferry: move data between stores and prove nothing was lost.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, after_long_help = EXAMPLES)]
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
    Demo(super::demo::DemoArgs),
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
    /// Shell completions for every ferry program
    Completions(CompletionsArgs),
    /// Write man pages for every ferry program (and each `ferry` subcommand) into a directory
    Man(ManArgs),
}

#[derive(Debug, clap::Args)]
pub struct AssessArgs {
    /// What to assess: sqlite:PATH, postgres://..., d1://ACCOUNT/DB or dir:PATH
    #[arg(value_name = "SOURCE")]
    pub source: String,
    /// Where it is going, which decides what counts as a problem [default: s3 for a directory,
    /// sqlite otherwise]
    #[arg(long, value_enum)]
    pub to: Option<crate::stage::assess::Destination>,
    /// One JSON document instead of a table
    #[arg(long)]
    pub json: bool,
    /// Rows or files named as examples of each problem
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub examples: usize,
    /// The state file whose last import gives the time estimate its rate
    #[arg(long, value_name = "PATH", default_value = DEFAULT_STATE_PATH)]
    pub state: PathBuf,
}

/// Where named backups live unless --backups says otherwise.
const BACKUPS_DIR: &str = ".ferry/backups";

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// What to back up: sqlite:PATH, postgres://..., d1://ACCOUNT/DB
    #[arg(value_name = "SOURCE", required_unless_present_any = ["list", "prune"])]
    pub source: Option<String>,
    /// The backup's name
    #[arg(long, value_name = "NAME", required_unless_present_any = ["list", "prune"])]
    pub name: Option<String>,
    /// Only this table (repeatable)
    #[arg(long = "table", value_name = "TABLE")]
    pub tables: Vec<String>,
    /// Only these rows and, with --follow-fks, what references them (as ferry-export --root)
    #[arg(long = "root", value_name = "TABLE:COLUMN=VALUE")]
    pub roots: Vec<String>,
    /// With --root: every row that references the root rows, transitively
    #[arg(long, requires = "roots")]
    pub follow_fks: bool,
    /// List the backups (oldest first)
    #[arg(long, conflicts_with_all = ["source", "prune"])]
    pub list: bool,
    /// With --list: one JSON manifest per line
    #[arg(long, requires = "list")]
    pub json: bool,
    /// Remove old backups: those beyond the --keep newest and older than --older-than
    #[arg(long, conflicts_with = "source")]
    pub prune: bool,
    /// With --prune: keep this many of the newest
    #[arg(long, value_name = "N", requires = "prune")]
    pub keep: Option<usize>,
    /// With --prune: only remove backups older than this (30d, 12h, 90m, 3600s, 2w)
    #[arg(long, value_name = "AGE", requires = "prune")]
    pub older_than: Option<String>,
    /// With --prune: act; without it, only say what would go
    #[arg(long, requires = "prune")]
    pub confirm: bool,
    /// Where the backups are
    #[arg(long = "backups", value_name = "DIR", default_value = BACKUPS_DIR)]
    pub dir: PathBuf,
    /// The state file
    #[arg(long, value_name = "PATH", default_value = DEFAULT_STATE_PATH)]
    pub state: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The backup's name (ferry backup --list)
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Where to load it: sqlite:PATH, postgres://..., d1://ACCOUNT/DB
    #[arg(value_name = "TARGET")]
    pub target: String,
    /// Create missing tables
    #[arg(long)]
    pub create: bool,
    /// What to do with a row whose key is already in the target
    #[arg(long, value_enum, default_value = "fail")]
    pub on_conflict: crate::connect::OnConflict,
    /// Do not validate the target against the backup afterwards
    #[arg(long)]
    pub no_validate: bool,
    /// Where the backups are
    #[arg(long = "backups", value_name = "DIR", default_value = BACKUPS_DIR)]
    pub dir: PathBuf,
    /// The state file
    #[arg(long, value_name = "PATH", default_value = DEFAULT_STATE_PATH)]
    pub state: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
    /// Write one file per program into this directory (named as the shell looks for them)
    /// instead of all of them to stdout; zsh needs it
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Where the pages go (created if missing)
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The run to undo (its id, or a unique prefix; the `batch` of its upload results)
    #[arg(long, value_name = "RUN_ID", required_unless_present_any = ["last", "full"], conflicts_with_all = ["last", "full"])]
    pub batch: Option<String>,
    /// The most recent import run
    #[arg(long, conflicts_with = "full")]
    pub last: bool,
    /// Every import run in the state file, newest first: the whole migration
    #[arg(long)]
    pub full: bool,
    /// With --full: only runs into databases
    #[arg(long, requires = "full", conflicts_with = "objects_only")]
    pub db_only: bool,
    /// With --full: only runs into object stores
    #[arg(long, requires = "full")]
    pub objects_only: bool,
    /// Act; without it, only print what would happen
    #[arg(long)]
    pub confirm: bool,
    /// Delete objects even when their original file is gone from the source directory
    #[arg(long)]
    pub force: bool,
    /// Only what failed or was left unfinished (objects of files not completed, multipart
    /// uploads a killed run left; a run into tables that did not complete), not what completed
    #[arg(long)]
    pub failed_only: bool,
    /// The state file
    #[arg(long, value_name = "PATH", default_value = DEFAULT_STATE_PATH)]
    pub state: PathBuf,
    /// S3: the endpoint URL, when not the one recorded [env: AWS_ENDPOINT_URL]
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// PostgreSQL: the database's full address with its password, when PGPASSWORD does not
    /// give it (the state file keeps addresses without passwords)
    #[arg(long, value_name = "ADDRESS")]
    pub target: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The state file
    #[arg(long, value_name = "PATH", default_value = DEFAULT_STATE_PATH)]
    pub state: PathBuf,
    /// Show the batches of this run (a unique prefix of its id is enough)
    #[arg(long, value_name = "RUN_ID")]
    pub run: Option<String>,
    /// Show one batch
    #[arg(long, value_name = "ID")]
    pub batch: Option<i64>,
    /// NDJSON instead of a table
    #[arg(long)]
    pub json: bool,
}

pub fn main() -> ExitCode {
    let args = FerryArgs::parse();
    init_logging(&args.log);
    let result = match &args.command {
        Command::Status(s) => run_status(s),
        Command::Demo(d) => super::demo::run(d),
        Command::Rollback(r) => run_rollback(r),
        Command::Assess(a) => run_assess(a),
        Command::Backup(b) => run_backup(b),
        Command::Restore(r) => run_restore(r),
        Command::Completions(c) => run_completions(c),
        Command::Man(m) => run_man(m),
    };
    finish("ferry", result)
}

fn run_status(s: &StatusArgs) -> Result<ExitStatus> {
    let cfg = StatusConfig {
        state_path: s.state.clone(),
        run: s.run.clone(),
        batch: s.batch,
        json: s.json,
    };
    let mut out = StreamWriter::stdout()?;
    status::run(&cfg, &mut out)?;
    Ok(ExitStatus::Ok)
}

fn run_rollback(r: &RollbackArgs) -> Result<ExitStatus> {
    let cfg = RollbackConfig {
        state_path: r.state.clone(),
        batch: r.batch.clone().unwrap_or_default(),
        last: r.last,
        full: r.full,
        db_only: r.db_only,
        objects_only: r.objects_only,
        confirm: r.confirm,
        force: r.force,
        failed_only: r.failed_only,
        s3: crate::connect::objects::s3::S3Settings {
            endpoint: r.endpoint.clone(),
            region: None,
        },
        target: r.target.clone(),
    };
    let mut out = StreamWriter::stdout()?;
    let o = rollback::run(&cfg, &mut out)?;
    crate::human::say(&rollback_summary(&o, r.confirm));
    Ok(ExitStatus::Ok)
}

/// What the tables a rollback drops or empties held, when they held anything.
fn tables_holding(rows: u64) -> String {
    if rows == 0 {
        String::new()
    } else {
        format!(" (the tables dropped or emptied held {rows} rows, whoever wrote them; the backup keeps them)")
    }
}

/// The closing line of a rollback: what it did (or, as a dry run, would do) to rows and objects.
fn rollback_summary(o: &rollback::RollbackOutcome, confirm: bool) -> String {
    let objects = o.deleted + o.would_delete + o.aborted + o.would_abort + o.kept + o.refused > 0;
    if !o.tables && !objects && o.unknown_uploads == 0 {
        return "ferry rollback: nothing to undo (the plan on stdout says why)".into();
    }
    let mut parts = Vec::new();
    if confirm {
        if o.tables {
            parts.push(format!(
                "deleted {} rows, restored {}, dropped {} tables{}",
                o.rows_deleted,
                o.restored,
                o.dropped,
                tables_holding(o.table_rows)
            ));
        }
        if objects || !o.tables {
            parts.push(format!(
                "deleted {} objects, aborted {} unfinished multipart uploads, left {} (see why on stdout)",
                o.deleted, o.aborted, o.kept
            ));
        }
    } else {
        if o.tables {
            parts.push(format!(
                "would delete {} rows, restore {}, drop {} tables, empty {} tables{}",
                o.would_delete_rows,
                o.would_restore,
                o.would_drop,
                o.would_empty,
                tables_holding(o.table_rows)
            ));
        }
        if objects || !o.tables {
            parts.push(format!(
                "would delete {} objects, abort {} unfinished multipart uploads, leave {}",
                o.would_delete, o.would_abort, o.kept
            ));
        }
    }
    let head = if confirm {
        "ferry rollback"
    } else {
        "ferry rollback (dry run)"
    };
    let tail = if confirm {
        if o.tables && o.rows_deleted + o.restored + o.dropped > 0 {
            "; what changed was saved first (rollback-*.ndjson next to the state file)"
        } else {
            ""
        }
    } else {
        "; --confirm to act"
    };
    if o.unjournaled > 0 {
        parts.push(format!(
            "the rows the run wrote into {} existing tables without a journal stay (cannot_undo on stdout)",
            o.unjournaled
        ));
    }
    let refused = if o.refused > 0 {
        format!("; refused {}", o.refused)
    } else {
        String::new()
    };
    format!("{head}: {}{refused}{tail}", parts.join("; "))
}

fn run_assess(a: &AssessArgs) -> Result<ExitStatus> {
    use crate::stage::assess::{self, AssessConfig, Destination};
    let source = crate::address::Address::parse(&a.source)?;
    let to = a.to.unwrap_or(match source {
        crate::address::Address::Dir(_) => Destination::S3,
        _ => Destination::Sqlite,
    });
    let cfg = AssessConfig {
        source,
        to,
        state_path: a.state.clone(),
        examples: a.examples,
    };
    let mut buf = Vec::new();
    assess::run(&cfg, a.json, &mut buf)?;
    let mut out = StreamWriter::stdout()?;
    print_lines(&mut out, &buf)?;
    out.flush()?;
    Ok(ExitStatus::Ok)
}

/// Text for people on stdout, through the stream writer, a line at a time.
fn print_lines<W: std::io::Write>(out: &mut StreamWriter<W>, text: &[u8]) -> Result<()> {
    for line in text.trim_ascii_end().split(|&b| b == b'\n') {
        out.write_line(line, crate::protocol::Kind::Other)?;
    }
    Ok(())
}

/// `30d`, `12h`, `90m`, `3600s`, `2w`.
fn age(text: &str) -> Result<std::time::Duration> {
    let bad = || {
        Error::usage(format!(
            "--older-than {text:?}: expected a number and a unit: 30d, 12h, 90m, 3600s, 2w"
        ))
    };
    let unit = text.chars().last().ok_or_else(bad)?;
    let n: f64 = text[..text.len() - unit.len_utf8()].parse().map_err(|_| bad())?;
    let secs = match unit {
        's' => 1.0,
        'm' => 60.0,
        'h' => 3600.0,
        'd' => 86400.0,
        'w' => 7.0 * 86400.0,
        _ => return Err(bad()),
    };
    if !(n.is_finite() && n >= 0.0) {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs_f64(n * secs))
}

fn run_backup(b: &BackupArgs) -> Result<ExitStatus> {
    use crate::stage::backup;
    let say = crate::human::say;
    if b.list {
        let all = backup::list(&b.dir)?;
        let mut out = StreamWriter::stdout()?;
        if b.json {
            for m in &all {
                out.write_line(
                    serde_json::to_string(m).unwrap_or_default().as_bytes(),
                    crate::protocol::Kind::Other,
                )?;
            }
        } else {
            let head = format!(
                "{:<24} {:<28} {:>12} {:>12}  source",
                "name", "created", "rows", "bytes"
            );
            out.write_line(head.as_bytes(), crate::protocol::Kind::Other)?;
            for m in &all {
                let line = format!(
                    "{:<24} {:<28} {:>12} {:>12}  {}",
                    m.name, m.created_at, m.rows, m.bytes, m.source
                );
                out.write_line(line.as_bytes(), crate::protocol::Kind::Other)?;
            }
        }
        out.flush()?;
        return Ok(ExitStatus::Ok);
    }
    if b.prune {
        if b.keep.is_none() && b.older_than.is_none() {
            return Err(Error::usage("--prune needs --keep N, --older-than AGE, or both"));
        }
        let older = b.older_than.as_deref().map(age).transpose()?;
        let gone = backup::prune(&b.dir, b.keep, older, b.confirm)?;
        for m in &gone {
            say(&format!(
                "ferry backup: {} {} ({}, {} rows)",
                if b.confirm { "removed" } else { "would remove" },
                m.name,
                m.created_at,
                m.rows
            ));
        }
        if !b.confirm {
            say(&format!(
                "ferry backup --prune (dry run): {} would go; --confirm to remove them",
                gone.len()
            ));
        }
        return Ok(ExitStatus::Ok);
    }
    let (Some(source), Some(name)) = (&b.source, &b.name) else {
        return Err(Error::usage("ferry backup SOURCE --name NAME (or --list, or --prune)"));
    };
    let cfg = crate::stage::export::ExportConfig {
        roots: b
            .roots
            .iter()
            .map(|r| crate::stage::entity::Root::parse(r))
            .collect::<Result<_>>()?,
        follow_fks: b.follow_fks,
        ..crate::stage::export::ExportConfig::of(
            crate::address::Address::parse(source)?,
            super::selection(&b.tables, &[], &[])?,
            b.state.clone(),
        )
    };
    let redacted = cfg.source.redacted();
    let m = backup::create(&b.dir, name, &redacted, |out| {
        crate::stage::export::run(&cfg, out).map(|_| ())
    })?;
    say(&format!(
        "ferry backup: {} of {} written: {} streams, {} rows, {} bytes compressed, in {}",
        m.name,
        m.source,
        m.streams.len(),
        m.rows,
        m.bytes,
        b.dir.join(&m.name).display()
    ));
    Ok(ExitStatus::Ok)
}

fn run_restore(r: &RestoreArgs) -> Result<ExitStatus> {
    use crate::stage::backup;
    let (m, path) = backup::open(&r.dir, &r.name)?;
    let cfg = crate::stage::import::ImportConfig {
        create: r.create,
        on_conflict: r.on_conflict,
        ..crate::stage::import::ImportConfig::new(crate::address::Address::parse(&r.target)?, r.state.clone())
    };
    let mut sink = StreamWriter::new(std::io::sink());
    let outcome = crate::stage::import::run(&cfg, backup::open_stream(&path)?, &mut sink)?;
    crate::human::say(&format!(
        "ferry restore: {} ({} rows from {}) loaded into {}: {} rows written, {} already there, {} rejected",
        m.name,
        m.rows,
        m.source,
        cfg.target.redacted(),
        outcome.written,
        outcome.already,
        outcome.rejected
    ));
    if r.no_validate {
        return Ok(ExitStatus::Ok);
    }
    let vcfg = crate::stage::validate::ValidateConfig::for_stream(Some(cfg.target.clone()));
    let mut out = StreamWriter::stdout()?;
    let report = crate::stage::validate::run(&vcfg, backup::open_stream(&path)?, &mut out)?;
    out.flush()?;
    Ok(if report.passed() {
        crate::human::say(&format!(
            "ferry restore: {} validated equal to backup {}",
            cfg.target.redacted(),
            m.name
        ));
        ExitStatus::Ok
    } else {
        crate::human::say(&format!(
            "ferry restore: {} differs from backup {} (findings on stdout)",
            cfg.target.redacted(),
            m.name
        ));
        ExitStatus::Differences
    })
}

/// The command line of every program a user runs, from their definitions.
fn programs() -> Vec<clap::Command> {
    use clap::CommandFactory as _;
    vec![
        FerryArgs::command(),
        super::export::ExportArgs::command(),
        super::transform::TransformArgs::command(),
        super::import::ImportArgs::command(),
        super::validate::ValidateArgs::command(),
    ]
}

fn run_completions(c: &CompletionsArgs) -> Result<ExitStatus> {
    use clap_complete::Generator as _;
    match &c.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).ctx(ErrorKind::Io, || format!("creating {}", dir.display()))?;
            for mut cmd in programs() {
                let name = cmd.get_name().to_owned();
                let path = dir.join(c.shell.file_name(&name));
                let mut buf = Vec::new();
                clap_complete::generate(c.shell, &mut cmd, name, &mut buf);
                std::fs::write(&path, buf).ctx(ErrorKind::Io, || format!("writing {}", path.display()))?;
                crate::human::say(&format!("ferry completions: wrote {}", path.display()));
            }
        }
        None if c.shell == clap_complete::Shell::Zsh => {
            return Err(Error::usage(
                "zsh loads one completion file per program: give --dir (a directory on $fpath, e.g. ~/.zfunc)",
            ));
        }
        None => {
            let mut out = StreamWriter::stdout()?;
            for mut cmd in programs() {
                let name = cmd.get_name().to_owned();
                let mut buf = Vec::new();
                clap_complete::generate(c.shell, &mut cmd, name, &mut buf);
                print_lines(&mut out, &buf)?;
            }
            out.flush()?;
        }
    }
    Ok(ExitStatus::Ok)
}

fn run_man(m: &ManArgs) -> Result<ExitStatus> {
    std::fs::create_dir_all(&m.dir).ctx(ErrorKind::Io, || format!("creating {}", m.dir.display()))?;
    let mut pages: Vec<(String, clap::Command)> = Vec::new();
    for cmd in programs() {
        let cmd = cmd.version(env!("CARGO_PKG_VERSION"));
        let name = cmd.get_name().to_owned();
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            pages.push((
                format!("{name}-{}", sub.get_name()),
                sub.clone().name(format!("{name}-{}", sub.get_name())),
            ));
        }
        pages.push((name, cmd));
    }
    let written = pages.len();
    for (name, cmd) in pages {
        let path = m.dir.join(format!("{name}.1"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd)
            .render(&mut buf)
            .ctx(ErrorKind::Io, || format!("rendering {name}.1"))?;
        std::fs::write(&path, buf).ctx(ErrorKind::Io, || format!("writing {}", path.display()))?;
    }
    crate::human::say(&format!("ferry man: wrote {written} pages into {}", m.dir.display()));
    Ok(ExitStatus::Ok)
}
