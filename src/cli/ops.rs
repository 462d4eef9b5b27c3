//! `ferry`: operations on a migration (status) and the demo.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use super::{LogArgs, finish, init_logging};
use crate::checkpoint::DEFAULT_STATE_PATH;
use crate::error::{Error, ErrorKind, ExitStatus, Result};
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
  ferry assess sqlite:app.db --to d1     # rows, bytes, value kinds, what D1 will refuse, time
  ferry assess dir:/srv/media --json     # sizes, types, duplicates, unreadable files, as JSON
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
    /// Delete the objects an import of files created (dry run unless --confirm)
    Rollback(RollbackArgs),
    /// What a migration is getting into: sizes, value kinds, duplicates, what the target will
    /// refuse, and a time estimate
    Assess(AssessArgs),
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
    /// The run whose objects go (its id, or a unique prefix; the `batch` of its upload results)
    #[arg(long, value_name = "RUN_ID")]
    pub batch: String,
    /// Act; without it, only print what would happen
    #[arg(long)]
    pub confirm: bool,
    /// Delete objects even when their original file is gone from the source directory
    #[arg(long)]
    pub force: bool,
    /// Only what failed or was left unfinished (objects of files not completed, multipart
    /// uploads a killed run left), not what completed
    #[arg(long)]
    pub failed_only: bool,
    /// The state file
    #[arg(long, value_name = "PATH", default_value = DEFAULT_STATE_PATH)]
    pub state: PathBuf,
    /// S3: the endpoint URL, when not the one recorded [env: AWS_ENDPOINT_URL]
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
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
        batch: r.batch.clone(),
        confirm: r.confirm,
        force: r.force,
        failed_only: r.failed_only,
        s3: crate::connect::s3::S3Settings {
            endpoint: r.endpoint.clone(),
            region: None,
        },
    };
    let mut out = StreamWriter::stdout()?;
    let o = rollback::run(&cfg, &mut out)?;
    crate::human::say(&if r.confirm {
        format!(
            "ferry rollback: deleted {} objects, aborted {} unfinished multipart uploads; left {} (see why on stdout)",
            o.deleted, o.aborted, o.kept
        )
    } else {
        format!(
            "ferry rollback (dry run): would delete {} objects, abort {} unfinished multipart uploads, leave {}, refuse {}; --confirm to act",
            o.would_delete, o.would_abort, o.kept, o.refused
        )
    });
    Ok(ExitStatus::Ok)
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
    for line in buf.trim_ascii_end().split(|&b| b == b'\n') {
        out.write_line(line, crate::protocol::Kind::Other)?;
    }
    out.flush()?;
    Ok(ExitStatus::Ok)
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
    let io = |what: String| move |e: std::io::Error| Error::new(ErrorKind::Io, format!("{what}: {e}"));
    match &c.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
            for mut cmd in programs() {
                let name = cmd.get_name().to_owned();
                let path = dir.join(c.shell.file_name(&name));
                let mut buf = Vec::new();
                clap_complete::generate(c.shell, &mut cmd, name, &mut buf);
                std::fs::write(&path, buf).map_err(io(format!("writing {}", path.display())))?;
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
                for line in buf.trim_ascii_end().split(|&b| b == b'\n') {
                    out.write_line(line, crate::protocol::Kind::Other)?;
                }
            }
            out.flush()?;
        }
    }
    Ok(ExitStatus::Ok)
}

fn run_man(m: &ManArgs) -> Result<ExitStatus> {
    let io = |what: String| move |e: std::io::Error| Error::new(ErrorKind::Io, format!("{what}: {e}"));
    std::fs::create_dir_all(&m.dir).map_err(io(format!("creating {}", m.dir.display())))?;
    let mut written = 0;
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
    for (name, cmd) in pages {
        let path = m.dir.join(format!("{name}.1"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd)
            .render(&mut buf)
            .map_err(io(format!("rendering {name}.1")))?;
        std::fs::write(&path, buf).map_err(io(format!("writing {}", path.display())))?;
        written += 1;
    }
    crate::human::say(&format!("ferry man: wrote {written} pages into {}", m.dir.display()));
    Ok(ExitStatus::Ok)
}
