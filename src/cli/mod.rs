//! Command lines: one module per command, holding its flags (whose doc comments are the `--help`
//! text), worked examples, and the mapping from flags to the stage's config. The binaries in
//! `stages/` only call `main()` here.

pub mod d1double;
pub mod demo;
pub mod export;
pub mod import;
pub mod ops;
pub mod transform;
pub mod validate;

use std::process::ExitCode;

use clap::{ArgAction, Args, ValueEnum};
use tracing_subscriber::EnvFilter;

use crate::connect::Selection;
use crate::error::{Error, ExitStatus, Result};
use crate::human;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines
    Text,
    /// One JSON object per line
    Json,
}

/// Logging flags shared by every command. Logs go to stderr, never to stdout.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// More detail in the log (-v debug, -vv trace)
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only warnings and errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Log format on stderr
    #[arg(long, value_enum, default_value = "text", global = true)]
    pub log_format: LogFormat,
}

/// Set up logging on stderr. `FERRY_LOG` (an `EnvFilter` directive) overrides the level.
pub fn init_logging(log: &LogArgs) {
    let level = match (log.quiet, log.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| EnvFilter::new(format!("ferry={level}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match log.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.with_ansi(human::stderr_is_terminal()).try_init(),
    };
}

/// Map a stage's result to an exit code, printing the error (with its causes) for people.
pub fn finish(program: &str, result: Result<ExitStatus>) -> ExitCode {
    match result {
        Ok(status) => ExitCode::from(status.code()),
        Err(e) => {
            let status = ExitStatus::for_error(&e);
            if status != ExitStatus::Ok {
                human::error(program, &e.chain());
            }
            ExitCode::from(status.code())
        }
    }
}

/// Build a table selection from --table, --exclude and --where TABLE=CONDITION.
pub fn selection(tables: &[String], exclude: &[String], filters: &[String]) -> Result<Selection> {
    let filters = filters
        .iter()
        .map(|f| match f.split_once('=') {
            Some((t, c)) if !t.trim().is_empty() && !c.trim().is_empty() => Ok((t.trim().to_owned(), c.to_owned())),
            _ => Err(Error::usage(format!(
                "--where {f:?}: expected TABLE=CONDITION, e.g. --where 'users=is_active = 1'"
            ))),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Selection {
        tables: tables.to_vec(),
        exclude: exclude.to_vec(),
        filters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_needs_table_and_condition() {
        let s = selection(&[], &[], &["users=is_active = 1".into()]).unwrap();
        assert_eq!(s.filters, vec![("users".to_string(), "is_active = 1".to_string())]);
        assert!(selection(&[], &[], &["is_active".into()]).is_err());
    }
}
