//! ferry-validate: prove that the target holds what the source holds.
//!
//! Three forms: `SOURCE TARGET` (two stores), `- TARGET` (the stream on stdin is the source side,
//! e.g. after a transform), and `STREAM` alone (a stream file checked on its own).
//!
//! For each stream it counts rows, checks the target's key (not null, unique), unique constraints
//! and foreign keys, and runs a full ordered merge of both sides in key order (SQLite's BINARY
//! order), comparing each row's hash over the columns both sides have: every key is classified as
//! missing, extra, changed or duplicate (listed up to a cap, counted exactly). A stream's side is
//! first spilled into a private temporary SQLite file (its keys, constrained columns and row
//! hashes), so memory stays flat whatever the size and the stream need not be in key order.
//!
//! When one side is PostgreSQL, each column is compared in the canonical form of its PostgreSQL
//! type (see `canon`), and PostgreSQL orders text keys with `COLLATE "C"` (SQLite's BINARY order).
//!
//! Contract: findings go to stdout as NDJSON (`FINDING` lines, then one `SUMMARY`), a human table
//! to stderr, a JSON report to `--report`. Exit 0 when equal, 1 when they differ or something could
//! not be verified (unless `--allow-unverified`), 2 on error.

mod constraints;
mod files;
mod findings;
mod merge;
pub mod shards;
mod spill;

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value as Json;

use self::findings::Findings;
use self::merge::{check_alone, check_stream};
use self::spill::{StreamSide, spill};
use crate::address::Address;
use crate::connect::compare::{Comparable, TableMeta};
use crate::connect::open_comparable;
use crate::connect::{Selection, table_name_for};
use crate::error::{Context, Error, ErrorKind, Result};
use crate::protocol::side::{FindingKind, Severity, Summary, Verdict};
use crate::protocol::{Kind, StreamWriter, now_rfc3339};
use crate::row::{Column, RowShape};
use crate::shard::{Range, Shard};
use crate::value::Codec;

#[derive(Debug, Clone)]
pub struct ValidateConfig {
    /// `None`: the stream on the input is the source side.
    pub source: Option<Address>,
    /// `None`: check the stream on its own.
    pub target: Option<Address>,
    pub selection: Selection,
    pub report: Option<PathBuf>,
    pub max_listed: usize,
    pub allow_unverified: bool,
    pub max_line: usize,
    /// PostgreSQL: the schema of tables for streams that do not name one [default: public].
    pub schema: Option<String>,
    /// S3: endpoint and region (the environment gives the rest).
    pub s3: crate::connect::objects::s3::S3Settings,
    /// Objects: read and hash every object, rather than trust its metadata's SHA-256.
    pub deep: bool,
    /// Compare only this part of every table (the rows `ferry-export --shard` sends).
    pub shard: Option<Shard>,
}

impl ValidateConfig {
    /// The stream on the input checked against `target` (`None`: on its own), with the command
    /// line's defaults.
    pub fn for_stream(target: Option<Address>) -> ValidateConfig {
        ValidateConfig {
            source: None,
            target,
            selection: Selection::default(),
            report: None,
            max_listed: 20,
            allow_unverified: false,
            max_line: crate::protocol::DEFAULT_MAX_LINE_BYTES,
            schema: None,
            s3: Default::default(),
            deep: false,
            shard: None,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamReport {
    pub stream: String,
    pub table: String,
    pub source_rows: u64,
    pub target_rows: u64,
    pub missing: u64,
    pub extra: u64,
    pub changed: u64,
    pub duplicate: u64,
    pub key_null: u64,
    pub unique_violations: u64,
    pub fk_orphans: u64,
    pub columns_compared: Vec<String>,
    pub problems: Vec<String>,
    pub status: Verdict,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub status: Verdict,
    pub source: String,
    pub target: String,
    pub started_at: String,
    pub finished_at: String,
    pub streams: Vec<StreamReport>,
    pub findings: BTreeMap<FindingKind, u64>,
    pub unverified: Vec<String>,
    pub notes: Vec<String>,
    /// A shard's validation: which, and the part of each table it compared (what
    /// `ferry-validate --merge` checks the shards tile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardPart>,
}

/// The part of the source one shard's validation compared.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ShardPart {
    pub shard: Shard,
    /// Each stream's range (see [`crate::shard::Range::to_json`]).
    pub ranges: BTreeMap<String, Json>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.status == Verdict::Pass
    }

    /// Write the report, pretty, to `path` (`--report`).
    fn write_to(&self, path: Option<&std::path::Path>) -> Result<()> {
        let Some(path) = path else { return Ok(()) };
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        std::fs::write(path, text + "\n").ctx(ErrorKind::Io, || format!("writing the report {}", path.display()))
    }
}

/// Where one side's rows of a stream can be read, ordered.
#[derive(Debug, Clone)]
enum Side {
    /// A table in a database: all columns available.
    Table { table: String, columns: Vec<String> },
    /// A spilled stream: some columns, the row hash (over the columns the target has) and the
    /// input line.
    Spill { table: String, columns: Vec<String> },
}

impl Side {
    fn table(&self) -> &str {
        match self {
            Side::Table { table, .. } | Side::Spill { table, .. } => table,
        }
    }

    fn has(&self, cols: &[String]) -> bool {
        let avail = match self {
            Side::Table { columns, .. } | Side::Spill { columns, .. } => columns,
        };
        cols.iter().all(|c| avail.contains(c))
    }
}

/// Validate as `cfg` says. A validation that could not finish still ends its output with a
/// SUMMARY, of status `error`, saying why.
pub fn run<R: BufRead, W: Write>(cfg: &ValidateConfig, input: R, out: &mut StreamWriter<W>) -> Result<Report> {
    let result = if files::applies(cfg) {
        files::run(cfg, input, out)
    } else {
        run_tables(cfg, input, out)
    };
    if let Err(e) = &result
        && e.kind() != ErrorKind::BrokenPipe
    {
        let _ = out.write_json(&Summary::error(e.chain()), Kind::End);
        let _ = out.flush();
    }
    result
}

fn run_tables<R: BufRead, W: Write>(cfg: &ValidateConfig, input: R, out: &mut StreamWriter<W>) -> Result<Report> {
    let mut findings = Findings::new(out, cfg.max_listed);
    let mut report = Report {
        started_at: now_rfc3339(),
        ..Default::default()
    };
    let sides = Sides::open(cfg, input, &mut report)?;
    let plan = sides.plan(cfg, &mut findings, &mut report)?;
    // Change streams are checked on their own (or said to be unverifiable against a target):
    // the verdict is their findings'.
    let changes = sides.stream.as_ref().is_some_and(|s| !s.changes.is_empty());
    if plan.is_empty() && !changes {
        return Err(nothing_compared(cfg, &sides, &report));
    }
    for (meta, side) in &plan {
        let sr = sides.compare(cfg, meta, side, &plan, &mut findings, &mut report.unverified)?;
        report.streams.push(sr);
    }
    let failing_kinds = findings
        .counts
        .iter()
        .any(|(k, n)| *n > 0 && *k != FindingKind::Unverified && !k.is_warning());
    let unverified = !report.unverified.is_empty() && !cfg.allow_unverified;
    let any_stream_failed = report.streams.iter().any(|s| s.status != Verdict::Pass);
    report.status = if failing_kinds || any_stream_failed {
        Verdict::Fail
    } else if unverified {
        Verdict::Unverified
    } else {
        Verdict::Pass
    };
    report.findings = findings.counts.clone();
    report.finished_at = now_rfc3339();
    let summary = Summary {
        status: report.status,
        source: Some(report.source.clone()),
        target: Some(report.target.clone()),
        streams: Some(report.streams.len()),
        rows_source: Some(report.streams.iter().map(|s| s.source_rows).sum()),
        rows_target: Some(report.streams.iter().map(|s| s.target_rows).sum()),
        findings: Some(report.findings.clone()),
        unverified: Some(report.unverified.clone()),
        ..Default::default()
    };
    findings.out.write_json(&summary, Kind::End)?;
    report.write_to(cfg.report.as_deref())?;
    Ok(report)
}

/// Each stream's range in a shard's validation, as the source computes it for `ferry-export
/// --shard` (and recorded in the report).
fn shard_ranges(
    cfg: &ValidateConfig,
    shard: Shard,
    report: &mut Report,
) -> Result<BTreeMap<String, (Range, Option<String>)>> {
    let source = match &cfg.source {
        Some(a @ (Address::Sqlite(_) | Address::Postgres(_))) if cfg.target.is_some() => a,
        _ => {
            return Err(Error::usage(
                "--shard compares a part of two databases: give SOURCE and TARGET (SQLite or PostgreSQL source)",
            ));
        }
    };
    let mut db = crate::connect::open_source(source)?;
    let mut ranges = BTreeMap::new();
    let mut part = ShardPart {
        shard,
        ranges: BTreeMap::new(),
    };
    for plan in db.discover(&cfg.selection)? {
        let (range, cond) = db.shard_range(&plan, shard)?;
        part.ranges.insert(plan.schema.stream.clone(), range.to_json());
        ranges.insert(plan.schema.stream.clone(), (range, cond));
    }
    report.shard = Some(part);
    Ok(ranges)
}

/// Why a validation that found no stream to compare fails: what was empty, and what selected.
fn nothing_compared(cfg: &ValidateConfig, sides: &Sides, report: &Report) -> Error {
    let what = match &sides.stream {
        Some(_) => "the stream has no SCHEMA".to_owned(),
        None => format!("{} has no tables", report.source),
    };
    let selected = if cfg.selection.tables.is_empty() && cfg.selection.exclude.is_empty() {
        ""
    } else {
        " that --table/--exclude select"
    };
    Error::input(format!(
        "nothing was compared: {what}{selected}; a validation passes only on something proved equal"
    ))
}

/// The two sides of a validation of tables, open: the target (if any), and the source as a
/// database or as the stream spilled to a temporary one.
struct Sides {
    target: Option<Box<dyn Comparable>>,
    source: Option<Box<dyn Comparable>>,
    stream: Option<StreamSide>,
    /// A shard's validation: each stream's range, and its condition in the source's SQL.
    ranges: BTreeMap<String, (Range, Option<String>)>,
}

impl Sides {
    fn open<R: BufRead>(cfg: &ValidateConfig, input: R, report: &mut Report) -> Result<Sides> {
        let target = match &cfg.target {
            Some(a) => Some(open_comparable(a, ErrorKind::Target, cfg.schema.as_deref())?),
            None => None,
        };
        if let Some(t) = &target {
            report.target = t.address().to_owned();
        }
        let spilled = |input: Box<dyn BufRead + '_>, report: &mut Report| -> Result<Sides> {
            let side = spill(cfg, input, target.as_deref())?;
            report.source = side.source_address.clone();
            Ok(Sides {
                target: None,
                source: None,
                stream: Some(side),
                ranges: BTreeMap::new(),
            })
        };
        let mut sides = match &cfg.source {
            Some(Address::Stream(Some(p))) => {
                let f = std::fs::File::open(p).ctx(ErrorKind::Source, || format!("opening {}", p.display()))?;
                spilled(Box::new(std::io::BufReader::new(f)), report)?
            }
            Some(Address::Stream(None)) | None => spilled(Box::new(input), report)?,
            Some(a) => {
                let db = open_comparable(a, ErrorKind::Source, None)?;
                report.source = db.address().to_owned();
                Sides {
                    target: None,
                    source: Some(db),
                    stream: None,
                    ranges: BTreeMap::new(),
                }
            }
        };
        sides.target = target;
        if let Some(shard) = cfg.shard {
            sides.ranges = shard_ranges(cfg, shard, report)?;
        }
        Ok(sides)
    }

    /// The side the rows come from.
    fn source(&self) -> &dyn Comparable {
        match (&self.source, &self.stream) {
            (Some(db), _) => db.as_ref(),
            (None, Some(side)) => side.db.as_ref(),
            (None, None) => unreachable!("a source side is always opened"),
        }
    }

    /// Which streams to compare, each with where its source side's rows are. The stream side's
    /// own problems become findings here.
    fn plan<W: Write>(
        &self,
        cfg: &ValidateConfig,
        findings: &mut Findings<'_, W>,
        report: &mut Report,
    ) -> Result<Vec<(TableMeta, Side)>> {
        let mut plan = Vec::new();
        match (&self.source, &self.stream) {
            (Some(db), _) if db.typed() => {
                // The streams an export would produce, with their keys and constraints.
                let Some(address) = &cfg.source else {
                    return Err(Error::usage("nothing to validate"));
                };
                let plans = crate::connect::open_source(address)?.discover(&cfg.selection)?;
                for p in &plans {
                    let meta = TableMeta::from_schema(&p.schema);
                    let side = Side::Table {
                        table: db.table_expr(&p.schema.stream),
                        columns: meta.columns.clone(),
                    };
                    plan.push((meta, side));
                }
            }
            (Some(db), _) => self.plan_tables(cfg, db.as_ref(), &mut plan, report)?,
            (None, Some(side)) => {
                for m in &side.metas {
                    if cfg.selection.includes(&m.stream, table_name_for(&m.stream))
                        && let Some(s) = side.sides.get(&m.stream)
                    {
                        plan.push((m.clone(), s.clone()));
                    }
                }
                for (stream, kind, d) in &side.problems {
                    let unverified = *kind == FindingKind::Unverified;
                    let severity = if unverified && cfg.allow_unverified {
                        Severity::Warning
                    } else {
                        Severity::Fail
                    };
                    findings.add(stream, *kind, severity, d.clone())?;
                    if severity == Severity::Fail && unverified {
                        report.unverified.push(format!(
                            "{stream}: {}",
                            d.get("message").and_then(Json::as_str).unwrap_or("")
                        ));
                    }
                }
            }
            (None, None) => return Err(Error::usage("nothing to validate")),
        }
        Ok(plan)
    }

    /// The tables of a source database that the selection takes; the target's other tables are
    /// noted.
    fn plan_tables(
        &self,
        cfg: &ValidateConfig,
        db: &dyn Comparable,
        plan: &mut Vec<(TableMeta, Side)>,
        report: &mut Report,
    ) -> Result<()> {
        let tables = db.tables()?;
        let pairs: Vec<(String, String)> = tables.iter().map(|t| (format!("main.{t}"), t.clone())).collect();
        let unmatched = cfg.selection.unmatched(&pairs);
        if !unmatched.is_empty() {
            return Err(Error::usage(format!(
                "{}: no table named {}",
                report.source,
                unmatched.join(", ")
            )));
        }
        for t in &tables {
            if cfg.selection.includes(&format!("main.{t}"), t)
                && let Some(d) = db.describe(t)?
                && let Some(meta) = d.meta
            {
                let side = Side::Table {
                    table: db.table_expr(t),
                    columns: meta.columns.clone(),
                };
                plan.push((meta, side));
            }
        }
        if let Some(tc) = &self.target {
            for t in tc.tables()? {
                if !tables.contains(&t) && cfg.selection.includes(&format!("main.{t}"), &t) {
                    report.notes.push(format!("table {t} is in the target only"));
                }
            }
        }
        Ok(())
    }

    /// Compare one stream (against the target, or on its own) and say whether it passed.
    fn compare<W: Write>(
        &self,
        cfg: &ValidateConfig,
        meta: &TableMeta,
        side: &Side,
        plan: &[(TableMeta, Side)],
        findings: &mut Findings<'_, W>,
        unverified: &mut Vec<String>,
    ) -> Result<StreamReport> {
        let mut sr = StreamReport {
            stream: meta.stream.clone(),
            table: table_name_for(&meta.stream).to_owned(),
            ..Default::default()
        };
        if let Some(s) = &self.stream {
            let problems = s
                .problems
                .iter()
                .filter(|p| p.0 == meta.stream && p.1 != FindingKind::Unverified)
                .count();
            sr.problems
                .extend((problems > 0).then(|| format!("{problems} problems in the stream itself")));
        }
        let src = self.source();
        let range = self.ranges.get(&meta.stream);
        let restricted = match range {
            Some((_, Some(cond))) => Side::Table {
                table: src.restricted(side.table(), cond)?,
                columns: meta.columns.clone(),
            },
            _ => side.clone(),
        };
        let side = &restricted;
        match &self.target {
            Some(tgt) => check_stream(
                cfg,
                src,
                tgt.as_ref(),
                meta,
                side,
                plan,
                range.map(|(r, _)| r),
                &mut sr,
                findings,
                unverified,
            )?,
            None => check_alone(cfg, src, meta, side, plan, &mut sr, findings, unverified)?,
        }
        if let Some(ss) = &self.stream {
            sr.source_rows = ss.rows.get(&meta.stream).copied().unwrap_or(sr.source_rows);
        }
        let bad =
            sr.missing + sr.extra + sr.changed + sr.duplicate + sr.key_null + sr.unique_violations + sr.fk_orphans;
        sr.status = if bad == 0 && sr.problems.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail
        };
        Ok(sr)
    }
}

/// A row hash over canonical values of `columns` (sorted by name, as every row hash is).
pub(super) fn hasher(stream: &str, columns: &[String]) -> Result<RowShape> {
    let cols = columns.iter().map(|c| Column {
        name: c.clone(),
        codec: Codec::Any,
        nullable: true,
        sql_type: None,
    });
    RowShape::new(stream, cols.collect(), &[])
        .map_err(|e| Error::new(ErrorKind::Source, format!("stream {stream}: {e}")))
}
