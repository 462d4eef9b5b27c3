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
    /// Log format on stderr (and in --log-file)
    #[arg(long, value_enum, default_value = "text", global = true)]
    pub log_format: LogFormat,
    /// Also append the log to this file (at the same level, without colours): a record of a run
    /// made by a script at 3 a.m.
    #[arg(long, value_name = "PATH", global = true)]
    pub log_file: Option<std::path::PathBuf>,
}

/// The log target of the line recording how a stage ended (in the log file only).
const END_TARGET: &str = "ferry_end";

/// Set up logging on stderr (and in `--log-file`). `FERRY_LOG` (an `EnvFilter` directive)
/// overrides the level. A log file that cannot be opened is said on stderr, and the run goes on.
pub fn init_logging(log: &LogArgs) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    type Boxed = Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;
    if log.quiet || log.log_format == LogFormat::Json {
        human::set_plain();
    }
    let level = match (log.quiet, log.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    let filter = || EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| EnvFilter::new(format!("ferry={level}")));
    let layer = |writer: tracing_subscriber::fmt::writer::BoxMakeWriter, ansi: bool, filter: EnvFilter| -> Boxed {
        let fmt = tracing_subscriber::fmt::layer().with_writer(writer).with_target(false);
        match log.log_format {
            LogFormat::Json => fmt.json().with_filter(filter).boxed(),
            LogFormat::Text => fmt.with_ansi(ansi).with_filter(filter).boxed(),
        }
    };
    // The error that ends a stage is printed on stderr for people by `finish`, and logged for
    // the log file only (`END_TARGET`).
    let stderr_filter = filter().add_directive(format!("{END_TARGET}=off").parse().expect("a directive"));
    let mut layers = vec![layer(
        tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr),
        human::stderr_is_terminal(),
        stderr_filter,
    )];
    if let Some(path) = &log.log_file {
        match std::fs::OpenOptions::new().create(true).append(true).open(path) {
            Ok(file) => layers.push(layer(
                tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::sync::Mutex::new(file)),
                false,
                filter().add_directive(format!("{END_TARGET}=info").parse().expect("a directive")),
            )),
            Err(e) => human::say(&format!(
                "warning: cannot open the log file {}: {e}; logging on stderr only",
                path.display()
            )),
        }
    }
    let _ = tracing_subscriber::registry().with(layers).try_init();
}

/// Map a stage's result to an exit code, printing the error (with its causes) for people.
pub fn finish(program: &str, result: Result<ExitStatus>) -> ExitCode {
    match result {
        Ok(status) => {
            tracing::info!(target: END_TARGET, program, exit = status.code(), "finished");
            ExitCode::from(status.code())
        }
        Err(e) => {
            let status = ExitStatus::for_error(&e);
            if status != ExitStatus::Ok {
                tracing::error!(target: END_TARGET, program, exit = status.code(), error = %e.chain(), "stopped");
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
