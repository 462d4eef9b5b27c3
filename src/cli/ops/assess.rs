//! `ferry assess`: what a migration will meet, before it starts.

use std::path::PathBuf;

use crate::checkpoint::DEFAULT_STATE_PATH;
use crate::error::{ExitStatus, Result};
use crate::protocol::StreamWriter;

const ASSESS_EXAMPLES: &str = "\
Examples:
  ferry assess sqlite:app.db --to postgres   # rows, bytes, value kinds, the PostgreSQL types
                                             # --create makes, the values they refuse, time
  ferry assess sqlite:app.db --to d1         # and what D1 will refuse
  ferry assess dir:/srv/media --json         # sizes, types, duplicates, unreadable files";

#[derive(Debug, clap::Args)]
#[command(after_long_help = ASSESS_EXAMPLES)]
pub struct AssessArgs {
    /// What to assess: sqlite:PATH, postgres://..., d1://ACCOUNT/DB or dir:PATH
    #[arg(value_name = "SOURCE")]
    pub source: String,
    /// Where it is going, which decides what counts as a problem [default: s3 for a directory,
    /// sqlite otherwise]
    #[arg(long, value_enum)]
    pub to: Option<crate::stage::assess::Destination>,
    /// With --to postgres: date-times without an offset are UTC, as `ferry-import --naive-utc`
    /// takes them (their columns become timestamptz)
    #[arg(long)]
    pub naive_utc: bool,
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

pub(super) fn run_assess(a: &AssessArgs) -> Result<ExitStatus> {
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
        naive_utc: a.naive_utc,
    };
    let mut buf = Vec::new();
    assess::run(&cfg, a.json, &mut buf)?;
    let mut out = StreamWriter::stdout()?;
    print_lines(&mut out, &buf)?;
    out.flush()?;
    Ok(ExitStatus::Ok)
}

/// Text for people on stdout, through the stream writer, a line at a time.
pub(super) fn print_lines<W: std::io::Write>(out: &mut StreamWriter<W>, text: &[u8]) -> Result<()> {
    for line in text.trim_ascii_end().split(|&b| b == b'\n') {
        out.write_line(line, crate::protocol::Kind::Other)?;
    }
    Ok(())
}
