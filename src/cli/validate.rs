//! `ferry-validate [SOURCE] TARGET`: prove two sides equal.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use super::{Closing, LogArgs, finish_stage, init_logging, selection};
use crate::address::Address;
use crate::error::{Error, ExitStatus, Result};
use crate::human;
use crate::protocol::side::Verdict;
use crate::protocol::{DEFAULT_MAX_LINE_BYTES, StreamWriter};
use crate::stage::validate::{self, Report, ValidateConfig};

const EXAMPLES: &str = "\
Examples:
  # Two databases, or SQLite against PostgreSQL (values compared by the PostgreSQL column's type)
  ferry-validate sqlite:app.db sqlite:copy.db --report report.json
  ferry-validate sqlite:app.db postgres://app@localhost/app
  ferry-validate postgres://app@localhost/app d1://ACCOUNT_ID/DATABASE_ID   # D1 read once through its API

  # The stream (after the same transform the import saw) against the target
  ferry-export sqlite:app.db | ferry-transform --rename-stream main.users=people \\
    | ferry-validate sqlite:copy.db

  # A stream file on its own: complete, keys unique, references resolvable, digests right
  ferry-validate backup.ndjson

  # Files: every file in the bucket (or directory) under its key, same size and SHA-256
  ferry-validate dir:/srv/media s3://bucket/media --endpoint https://ACCOUNT_ID.r2.cloudflarestorage.com

  # A sharded migration: each shard proves its part, then one verdict for the whole
  ferry-validate postgres://app@old/app postgres://app@new/app --shard 2/4 --report v2.json
  ferry-validate --merge v1.json v2.json v3.json v4.json

Compares row counts, primary keys (not null, unique), unique constraints, foreign keys, and every
row (an ordered merge of row hashes in key order): each key that differs is listed as missing,
extra, changed or duplicate. Findings go to stdout as NDJSON, a summary table to stderr.
Passes only on positive proof: an empty input, a stream without BEGIN or END, one whose producer
failed, or a validation that compared nothing is an error (exit 2), never \"equal\".
Exit status: 0 equal, 1 different (or not everything could be verified), 2 error.";

/// Validate a target against its source: counts, keys, constraints and every row.
#[derive(Debug, Parser)]
#[command(name = "ferry-validate", version, about, after_long_help = super::with_tuning(EXAMPLES))]
pub struct ValidateArgs {
    /// SOURCE TARGET; or TARGET alone (the stream on stdin is the source); or STREAM alone
    /// (a .ndjson file, or - for stdin, checked on its own)
    #[arg(num_args = 1..=2, required_unless_present = "merge", value_name = "STORE")]
    pub stores: Vec<String>,
    /// Compare only part K of N: each table's K-th key range (as `ferry-export --shard K/N`
    /// splits it) on both sides, or the files whose path hashes to K. Save each shard's
    /// --report and give them all to --merge for the verdict on the whole
    #[arg(long, value_name = "K/N")]
    pub shard: Option<crate::shard::Shard>,
    /// One verdict from every shard's report: passes only when each shard 1..N passed, once,
    /// against the same source and target, and their parts tile every table
    #[arg(long, value_name = "REPORT", num_args = 1.., conflicts_with_all = ["stores", "shard"])]
    pub merge: Vec<PathBuf>,
    /// Compare only this table (repeatable)
    #[arg(long = "table", value_name = "TABLE")]
    pub tables: Vec<String>,
    /// Leave this table out (repeatable)
    #[arg(long = "exclude", value_name = "TABLE")]
    pub exclude: Vec<String>,
    /// Write a JSON report to PATH
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,
    /// List at most N findings of each kind per stream (counts stay exact)
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub max_listed: usize,
    /// Do not fail because something could not be verified (it is still reported)
    #[arg(long)]
    pub allow_unverified: bool,
    /// PostgreSQL: the schema holding tables for streams that do not name one [default: public]
    #[arg(long, value_name = "NAME")]
    pub schema: Option<String>,
    /// S3: the endpoint URL [env: AWS_ENDPOINT_URL]
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// S3: the region [env: AWS_REGION; default: auto]
    #[arg(long, value_name = "NAME")]
    pub region: Option<String>,
    /// Objects: read and hash every object in the bucket. Without it an object's SHA-256 comes
    /// from its metadata, checked against its bytes only where its ETag is their MD5 (single-part
    /// uploads) and the other side is a directory; the report says how many were taken on trust
    #[arg(long)]
    pub deep: bool,
    /// Longest input line accepted, in bytes
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_LINE_BYTES)]
    pub max_line_bytes: usize,
    #[command(flatten)]
    pub log: LogArgs,
}

impl ValidateArgs {
    pub fn config(&self) -> Result<ValidateConfig> {
        let (source, target) = match self.stores.as_slice() {
            [one] => match Address::parse(one)? {
                a @ Address::Stream(_) => (Some(a), None),
                t => (None, Some(t)),
            },
            [s, t] => (Some(Address::parse(s)?), Some(Address::parse(t)?)),
            _ => return Err(Error::usage("give SOURCE TARGET, TARGET, or a stream file")),
        };
        if matches!(target, Some(Address::Stream(_))) {
            return Err(Error::usage("the target of a validation is a store, not a stream"));
        }
        Ok(ValidateConfig {
            source,
            target,
            selection: selection(&self.tables, &self.exclude, &[])?,
            report: self.report.clone(),
            max_listed: self.max_listed,
            allow_unverified: self.allow_unverified,
            max_line: self.max_line_bytes,
            schema: self.schema.clone(),
            s3: crate::connect::objects::s3::S3Settings {
                endpoint: self.endpoint.clone(),
                region: self.region.clone(),
            },
            deep: self.deep,
            shard: self.shard,
        })
    }
}

pub fn main() -> ExitCode {
    let args = super::args_or_exit("ferry-validate", ValidateArgs::try_parse());
    init_logging(&args.log);
    crate::interrupt::install();
    let mut closing = Closing::new("ferry-validate");
    let result = run(&args, &mut closing);
    finish_stage(&args.log, &closing, result)
}

fn run(args: &ValidateArgs, closing: &mut Closing) -> Result<ExitStatus> {
    if !args.merge.is_empty() {
        return merge(args, closing);
    }
    let cfg = args.config()?;
    let input = crate::protocol::reader::ReadAhead::stdin(1 << 20, 8);
    let mut out = StreamWriter::stdout()?;
    let report = validate::run(&cfg, input, &mut out)?;
    if !args.log.quiet && args.log.log_format == super::LogFormat::Text {
        print_summary(&report);
    }
    closing
        .count("streams", report.streams.len() as u64)
        .count("source_rows", report.streams.iter().map(|s| s.source_rows).sum())
        .count("target_rows", report.streams.iter().map(|s| s.target_rows).sum())
        .count("findings", report.findings.values().sum());
    Ok(closing_verdict(closing, report.status))
}

/// The closing line's verdict, and the exit status that goes with it.
fn closing_verdict(closing: &mut Closing, status: Verdict) -> ExitStatus {
    closing.verdict(match status {
        Verdict::Pass => "EQUAL",
        Verdict::Unverified => "NOT VERIFIED",
        Verdict::Fail | Verdict::Error => "DIFFERENT",
    });
    if status == Verdict::Pass {
        ExitStatus::Ok
    } else {
        ExitStatus::Differences
    }
}

/// `--merge`: the shards' reports as one verdict, a SUMMARY on stdout and a table on stderr.
fn merge(args: &ValidateArgs, closing: &mut Closing) -> Result<ExitStatus> {
    let m = validate::shards::merge(&args.merge)?;
    let mut out = StreamWriter::stdout()?;
    let summary = serde_json::json!({
        "type": "SUMMARY",
        "status": m.status,
        "source": m.source,
        "target": m.target,
        "shards": m.shards,
        "rows_source": m.streams.values().map(|r| r.0).sum::<u64>(),
        "rows_target": m.streams.values().map(|r| r.1).sum::<u64>(),
        "problems": m.problems,
    });
    out.write_json(&summary, crate::protocol::Kind::End)?;
    out.flush()?;
    if !args.log.quiet && args.log.log_format == super::LogFormat::Text {
        let rows: Vec<Vec<String>> = m
            .streams
            .iter()
            .map(|(s, (a, b))| vec![s.clone(), a.to_string(), b.to_string()])
            .collect();
        let mut text = format!(
            "ferry-validate --merge: {} shards of {} -> {}\n",
            m.shards, m.source, m.target
        );
        text.push_str(&human::table(&["stream", "source", "target"], &rows));
        for p in &m.problems {
            text.push_str(&format!("problem: {p}\n"));
        }
        text.push_str(match m.status {
            Verdict::Pass => "result: EQUAL (every shard passed, and together they cover every table or tree)",
            Verdict::Fail => "result: DIFFERENT (a shard found differences: its FINDING lines name them)",
            _ => "result: NOT VERIFIED (the reports do not prove every part: see the problems above)",
        });
        human::say(&text);
    }
    closing
        .count("shards", args.merge.len() as u64)
        .count("problems", m.problems.len() as u64);
    Ok(closing_verdict(closing, m.status))
}

/// The human summary on stderr.
pub fn print_summary(r: &Report) {
    let rows: Vec<Vec<String>> = r
        .streams
        .iter()
        .map(|s| {
            vec![
                s.stream.clone(),
                s.source_rows.to_string(),
                s.target_rows.to_string(),
                s.missing.to_string(),
                s.extra.to_string(),
                s.changed.to_string(),
                s.duplicate.to_string(),
                (s.key_null + s.unique_violations + s.fk_orphans).to_string(),
                if s.status == Verdict::Pass {
                    "ok".into()
                } else {
                    "DIFFERENT".into()
                },
            ]
        })
        .collect();
    let shard = r
        .shard
        .as_ref()
        .map_or(String::new(), |p| format!(" (shard {})", p.shard));
    let mut text = format!(
        "ferry-validate: {} -> {}{shard}\n",
        r.source,
        if r.target.is_empty() {
            "(stream alone)"
        } else {
            &r.target
        }
    );
    text.push_str(&human::table(
        &[
            "stream",
            "source",
            "target",
            "missing",
            "extra",
            "changed",
            "dup",
            "constraints",
            "result",
        ],
        &rows,
    ));
    for n in &r.notes {
        text.push_str(&format!("note: {n}\n"));
    }
    for u in &r.unverified {
        text.push_str(&format!("not verified: {u}\n"));
    }
    for (kind, n) in &r.findings {
        text.push_str(&format!("{kind}: {n}\n"));
    }
    text.push_str(match r.status {
        Verdict::Pass => "result: EQUAL\n",
        Verdict::Unverified => {
            "result: NOT VERIFIED: nothing compared differs, but what is listed as not verified could not be checked (--allow-unverified accepts that)\n"
        }
        Verdict::Fail | Verdict::Error => "result: DIFFERENT (details on stdout)\n",
    });
    human::say(text.trim_end());
}
