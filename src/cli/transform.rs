//! `ferry-transform OPS`: per-message operations on a stream, stdin to stdout.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};

use super::{Closing, LogArgs, finish_stage, init_logging};
use crate::dialect::{Dialect, NumericAs};
use crate::error::{Error, ExitStatus, Result};
use crate::protocol::{DEFAULT_MAX_LINE_BYTES, StreamWriter};
use crate::stage::transform::{self, Op, TransformConfig};

const EXAMPLES: &str = "\
Examples:
  # Rename a stream (its table at the target) and leave a column behind
  ferry-transform --rename-stream main.users=people --drop-field people.password_hash < app.ndjson

  # Only active users, with a constant added
  ferry-transform --filter 'main.users=.is_active == 1' --set 'main.users.origin=\"legacy\"'

  # Any jq program over each RECORD (and FILE) message; its outputs replace the message
  ferry-transform --jq 'if .stream == \"main.users\" then .record.email |= ascii_downcase else . end'

  # PostgreSQL to SQLite: types and values recast (timestamps to SQLite datetime text, booleans
  # to 0/1, numeric(p,s) up to 15 digits to numbers and wider numeric to exact TEXT, json/jsonb
  # and arrays to JSON text)
  ferry-export postgres://app@localhost/app | ferry-transform --dialect sqlite \\
    | ferry-import sqlite:app-copy.db --create

  # That user's export into another database where id 42 is taken: the user becomes 1077, and
  # every column whose foreign key references users.id follows
  ferry-transform --remap main.users.id:42=1077 < user-42.ndjson \\
    | ferry-import sqlite:other.db --on-conflict fail

Operations apply in the order given, each to stream names as earlier operations left them
(--remap first, to the streams and foreign keys as they come in).
A field is written STREAM.FIELD, split at the last dot. Records no operation touches pass through
byte for byte; SCHEMA and STREAM_END (row count and digest) are rewritten where the stream changes.
STATE lines pass through in order, bookmarks under the producer's stream names.
Exit status: 0 done; 2 error; 4 stopped early (the input ended without END, or the reader of
stdout went away); 130 interrupted (Ctrl-C, SIGTERM). A closing line on stderr says which.";

/// Transform a ferry stream: rename, drop, set, filter, or any jq program.
#[derive(Debug, Parser)]
#[command(name = "ferry-transform", version, about, after_long_help = super::with_tuning(EXAMPLES))]
pub struct TransformArgs {
    /// Rename a stream
    #[arg(long, value_name = "OLD=NEW")]
    pub rename_stream: Vec<String>,
    /// Leave a stream out
    #[arg(long, value_name = "STREAM")]
    pub drop_stream: Vec<String>,
    /// Rename a field
    #[arg(long, value_name = "STREAM.OLD=NEW")]
    pub rename_field: Vec<String>,
    /// Leave a field out
    #[arg(long, value_name = "STREAM.FIELD")]
    pub drop_field: Vec<String>,
    /// Set a field to a constant (JSON; anything else is taken as a string)
    #[arg(long = "set", value_name = "STREAM.FIELD=VALUE")]
    pub set_field: Vec<String>,
    /// Keep only the records of STREAM for which a jq condition on the record is true
    #[arg(long, value_name = "STREAM=JQ")]
    pub filter: Vec<String>,
    /// Run a jq program on each RECORD and FILE message (the whole message object)
    #[arg(long, value_name = "PROGRAM")]
    pub jq: Vec<String>,
    /// Change a key value in its stream and in every column whose foreign key references it
    /// (e.g. main.users.id:42=1077); applied first, to the streams as they come in
    #[arg(long, value_name = "STREAM.COLUMN:OLD=NEW")]
    pub remap: Vec<String>,
    /// Recast types and values for another engine, after every other operation
    #[arg(long, value_name = "ENGINE")]
    pub dialect: Option<Dialect>,
    /// With --dialect sqlite/d1: PostgreSQL numeric columns as numbers where SQLite keeps them
    /// exactly (numeric(p,s) with p <= 15) and exact TEXT otherwise (auto), always exact TEXT
    /// (compared and ordered as text), or always REAL (rounded)
    #[arg(long, value_name = "AS", default_value = "auto")]
    pub numeric: NumericAs,
    /// Read the stream from FILE instead of stdin
    #[arg(long, short = 'i', value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Emit only SCHEMA, RECORD and STATE, for Singer targets
    #[arg(long)]
    pub singer: bool,
    /// Longest input line accepted, in bytes
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_LINE_BYTES)]
    pub max_line_bytes: usize,
    #[command(flatten)]
    pub log: LogArgs,
}

/// The operations in command-line order (clap keeps each flag's values apart).
pub fn ops_in_order(matches: &ArgMatches) -> Result<Vec<Op>> {
    type Build = fn(&str) -> Result<Op>;
    let kinds: [(&str, Build); 8] = [
        ("rename_stream", Op::rename_stream),
        ("drop_stream", Op::drop_stream),
        ("rename_field", Op::rename_field),
        ("drop_field", Op::drop_field),
        ("set_field", Op::set_field),
        ("filter", Op::filter),
        ("jq", Op::jq),
        ("remap", Op::remap),
    ];
    let mut ops: Vec<(usize, Op)> = Vec::new();
    for (id, build) in kinds {
        if let (Some(values), Some(indices)) = (matches.get_many::<String>(id), matches.indices_of(id)) {
            for (v, i) in values.zip(indices) {
                ops.push((i, build(v)?));
            }
        }
    }
    ops.sort_by_key(|(i, _)| *i);
    Ok(ops.into_iter().map(|(_, op)| op).collect())
}

/// Parse a command line (for tests and for `main`).
pub fn parse<I, T>(argv: I) -> Result<(TransformArgs, TransformConfig)>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = TransformArgs::command()
        .try_get_matches_from(argv)
        .map_err(|e| Error::usage(e.to_string()))?;
    let args = TransformArgs::from_arg_matches(&matches).map_err(|e| Error::usage(e.to_string()))?;
    let cfg = TransformConfig {
        ops: ops_in_order(&matches)?,
        dialect: args.dialect.map(|d| (d, args.numeric)),
        singer: args.singer,
        max_line: args.max_line_bytes,
    };
    Ok((args, cfg))
}

pub fn main() -> ExitCode {
    let matches = super::args_or_exit("ferry-transform", TransformArgs::command().try_get_matches());
    let args = super::args_or_exit("ferry-transform", TransformArgs::from_arg_matches(&matches));
    init_logging(&args.log);
    crate::interrupt::install();
    let mut closing = Closing::new("ferry-transform");
    let mut outcome = transform::TransformOutcome::default();
    let result = ops_in_order(&matches).and_then(|ops| {
        let cfg = TransformConfig {
            ops,
            dialect: args.dialect.map(|d| (d, args.numeric)),
            singer: args.singer,
            max_line: args.max_line_bytes,
        };
        let input = super::import::open_input(args.input.as_ref())?;
        let mut out = StreamWriter::stdout()?;
        transform::run_counted(cfg, input, &mut out, &mut outcome)?;
        Ok(ExitStatus::Ok)
    });
    closing
        .count("records_read", outcome.records_in)
        .count("records_sent", outcome.records_out);
    finish_stage(&args.log, &closing, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_keep_command_line_order() {
        let (_, cfg) = parse([
            "ferry-transform",
            "--drop-field",
            "people.password_hash",
            "--rename-stream",
            "main.users=people",
            "--set",
            "people.x=1",
        ])
        .unwrap();
        let kinds: Vec<&str> = cfg
            .ops
            .iter()
            .map(|o| match o {
                Op::DropField { .. } => "drop",
                Op::RenameStream { .. } => "rename",
                Op::SetField { .. } => "set",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["drop", "rename", "set"]);
    }
}
