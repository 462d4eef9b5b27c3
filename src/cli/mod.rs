//! Command lines: one module per command, holding its flags (whose doc comments are the `--help`
//! text), worked examples, and the mapping from flags to the stage's config. The binaries in
//! `stages/` only call `main()` here.

pub mod d1double;
pub(crate) mod demo;
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

/// The closing line of a stage, printed whatever the outcome: how it ended, what it did and
/// how long it took. Text on stderr (`-q` keeps only a closing line that is not "done"); one JSON
/// object in the log's envelope with `--log-format json`; and in the `--log-file`.
#[derive(Debug)]
pub struct Closing {
    program: &'static str,
    started: std::time::Instant,
    /// (key, count) in the order shown.
    counts: Vec<(&'static str, u64)>,
    notes: Vec<String>,
    /// What a successful end is called (validate: EQUAL).
    verdict: Option<String>,
}

/// The command line, or the end: `--help` and `--version` print and exit 0; a command line that
/// cannot work gets clap's message, then the closing line every stage ends with (exit 2).
/// A program's examples, then the tuning variables it reads (`--help`).
pub fn with_tuning(examples: &str) -> String {
    format!("{examples}\n\n{}", crate::tuning::HELP)
}

pub fn args_or_exit<T>(program: &'static str, parsed: std::result::Result<T, clap::Error>) -> T {
    match parsed.map(|args| (crate::tuning::Tuning::init(), args)) {
        Ok((Ok(_), args)) => args,
        Ok((Err(e), _)) => {
            crate::human::error(program, &e.chain());
            let mut closing = Closing::new(program);
            closing.note("the environment was not understood (above): nothing was done");
            crate::human::say(&closing.text(ExitStatus::Error, None));
            std::process::exit(i32::from(ExitStatus::Error.code()))
        }
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let _ = e.print();
            let mut closing = Closing::new(program);
            closing.note("the command line was not understood (above): nothing was done");
            crate::human::say(&closing.text(ExitStatus::Error, None));
            std::process::exit(i32::from(ExitStatus::Error.code()))
        }
    }
}

impl Closing {
    pub fn new(program: &'static str) -> Closing {
        Closing {
            program,
            started: std::time::Instant::now(),
            counts: Vec::new(),
            notes: Vec::new(),
            verdict: None,
        }
    }

    /// A count, shown as `N key` (underscores as spaces) and kept as `key` in JSON.
    pub fn count(&mut self, key: &'static str, n: u64) -> &mut Self {
        self.counts.push((key, n));
        self
    }

    /// More to say: where the rejects are, how far it was acknowledged.
    pub fn note(&mut self, text: impl Into<String>) -> &mut Self {
        self.notes.push(text.into());
        self
    }

    pub fn verdict(&mut self, text: impl Into<String>) -> &mut Self {
        self.verdict = Some(text.into());
        self
    }

    /// How the stage ended, in words.
    fn how(&self, status: ExitStatus, error: Option<&Error>) -> String {
        let how = match (status, error.map(Error::kind)) {
            (ExitStatus::Ok, _) => "done",
            (ExitStatus::Rejected, _) => "done, with rejects",
            (ExitStatus::Differences, _) => "done",
            (ExitStatus::Incomplete, Some(crate::ErrorKind::BrokenPipe)) => {
                "stopped early: the reader of its output went away before everything was delivered"
            }
            (ExitStatus::Incomplete, _) => "stopped early: the input ended without END",
            (ExitStatus::Interrupted, _) => "interrupted",
            (ExitStatus::Error, _) => "failed",
        };
        match &self.verdict {
            Some(v) => format!("{how}: {v}"),
            None => how.to_owned(),
        }
    }

    /// The line for people.
    fn text(&self, status: ExitStatus, error: Option<&Error>) -> String {
        let counts: Vec<String> = self
            .counts
            .iter()
            .map(|(k, n)| format!("{n} {}", k.replace('_', " ")))
            .collect();
        let mut line = format!("{}: {}", self.program, self.how(status, error));
        if !counts.is_empty() {
            line.push_str(": ");
            line.push_str(&counts.join(", "));
        }
        line.push_str(&format!(" in {:.1} s", self.started.elapsed().as_secs_f64()));
        for n in &self.notes {
            line.push_str("; ");
            line.push_str(n);
        }
        line
    }

    /// The line for machines: the log's JSON envelope with the counts as fields.
    fn json(&self, status: ExitStatus, error: Option<&Error>) -> String {
        let mut fields = serde_json::Map::new();
        fields.insert("message".into(), "summary".into());
        fields.insert("program".into(), self.program.into());
        fields.insert("status".into(), self.how(status, error).into());
        fields.insert("exit".into(), status.code().into());
        fields.insert(
            "seconds".into(),
            serde_json::json!((self.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0),
        );
        for (k, n) in &self.counts {
            fields.insert((*k).into(), (*n).into());
        }
        if !self.notes.is_empty() {
            fields.insert("notes".into(), self.notes.clone().into());
        }
        if let Some(e) = error {
            fields.insert("error".into(), e.chain().into());
        }
        let level = match status {
            ExitStatus::Ok => "INFO",
            ExitStatus::Rejected | ExitStatus::Differences | ExitStatus::Incomplete | ExitStatus::Interrupted => "WARN",
            ExitStatus::Error => "ERROR",
        };
        serde_json::json!({"timestamp": crate::protocol::now_rfc3339(), "level": level, "fields": fields}).to_string()
    }
}

/// End a stage: its error (if any) for people, then its closing line; the exit code.
pub fn finish_stage(log: &LogArgs, closing: &Closing, result: Result<ExitStatus>) -> ExitCode {
    let (status, error) = match &result {
        Ok(s) => (*s, None),
        Err(e) => (ExitStatus::for_error(e), Some(e)),
    };
    if let Some(e) = error
        && e.kind() != crate::ErrorKind::BrokenPipe
    {
        human::error(closing.program, &e.chain());
    }
    let text = closing.text(status, error);
    let (program, exit) = (closing.program, status.code());
    match error {
        None => tracing::info!(target: END_TARGET, program, exit, summary = %text, "finished"),
        Some(e) => tracing::error!(target: END_TARGET, program, exit, error = %e.chain(), summary = %text, "stopped"),
    }
    match log.log_format {
        LogFormat::Json if !(log.quiet && status == ExitStatus::Ok) => human::say(&closing.json(status, error)),
        LogFormat::Text if !(log.quiet && status == ExitStatus::Ok) => human::say(&text),
        _ => {}
    }
    ExitCode::from(status.code())
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
            tracing::error!(target: END_TARGET, program, exit = status.code(), error = %e.chain(), "stopped");
            human::error(program, &e.chain());
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
