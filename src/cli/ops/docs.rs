//! `ferry completions` and `ferry man`: shell completions and man pages for every program.

use std::path::PathBuf;

use super::FerryArgs;
use super::assess::print_lines;
use crate::error::{Context as _, Error, ErrorKind, ExitStatus, Result};
use crate::protocol::StreamWriter;

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

/// The command line of every program a user runs, from their definitions.
fn programs() -> Vec<clap::Command> {
    use clap::CommandFactory as _;
    vec![
        FerryArgs::command(),
        crate::cli::export::ExportArgs::command(),
        crate::cli::transform::TransformArgs::command(),
        crate::cli::import::ImportArgs::command(),
        crate::cli::validate::ValidateArgs::command(),
    ]
}

pub(super) fn run_completions(c: &CompletionsArgs) -> Result<ExitStatus> {
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

pub(super) fn run_man(m: &ManArgs) -> Result<ExitStatus> {
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
