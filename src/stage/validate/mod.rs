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
mod db;
mod files;
mod findings;
mod merge;
mod spill;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Value as Json, json};

use self::db::Db;
use self::findings::{Findings, WARNING_KINDS};
use self::merge::{check_alone, check_stream};
use self::spill::{StreamSide, spill};
use crate::address::Address;
use crate::connect::sqlite as sq;
use crate::connect::{Selection, table_name_for};
use crate::error::{Context, Error, ErrorKind, Result};
use crate::protocol::{ForeignKey, Kind, Schema, StreamWriter, now_rfc3339};
use crate::row::{Column, RowShape};
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
    pub status: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub status: String,
    pub source: String,
    pub target: String,
    pub started_at: String,
    pub finished_at: String,
    pub streams: Vec<StreamReport>,
    pub findings: BTreeMap<String, u64>,
    pub unverified: Vec<String>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.status == "pass"
    }
}

/// Table metadata as either side describes it.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    stream: String,
    columns: Vec<String>,
    key: Vec<String>,
    unique: Vec<Vec<String>>,
    fks: Vec<ForeignKey>,
}

impl Meta {
    pub(crate) fn from_table(t: &sq::catalog::TableInfo) -> Meta {
        Meta {
            stream: format!("main.{}", t.name),
            columns: t.stored_columns().map(|c| c.name.clone()).collect(),
            key: t.pk.clone(),
            unique: t
                .unique
                .iter()
                .map(|u| u.columns.clone())
                .chain(
                    t.indexes
                        .iter()
                        .filter(|i| i.unique && i.where_sql.is_none() && !i.columns.is_empty())
                        .map(|i| i.columns.clone()),
                )
                .collect(),
            fks: t.foreign_keys.clone(),
        }
    }

    fn from_schema(s: &Schema) -> Meta {
        Meta {
            stream: s.stream.clone(),
            columns: s.schema.properties.keys().cloned().collect(),
            key: s.key_properties.clone(),
            unique: s
                .unique
                .iter()
                .map(|u| u.columns.clone())
                .chain(
                    s.indexes
                        .iter()
                        .filter(|i| i.unique && i.where_sql.is_none() && !i.columns.is_empty())
                        .map(|i| i.columns.clone()),
                )
                .collect(),
            fks: s.foreign_keys.clone(),
        }
    }

    /// Columns worth keeping for a stream spilled to disk: key, constrained and referenced ones.
    fn constrained(&self) -> Vec<String> {
        let mut cols: Vec<String> = Vec::new();
        let mut add = |c: &String| {
            if !cols.contains(c) && self.columns.contains(c) {
                cols.push(c.clone());
            }
        };
        self.key.iter().for_each(&mut add);
        self.unique.iter().flatten().for_each(&mut add);
        self.fks.iter().flat_map(|f| &f.columns).for_each(&mut add);
        if self.key.is_empty() {
            self.columns.iter().for_each(&mut add);
        }
        cols
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
        let summary = json!({"type": "SUMMARY", "status": "error", "message": e.chain()});
        let _ = out.write_line(summary.to_string().as_bytes(), Kind::End);
        let _ = out.flush();
    }
    result
}

fn run_tables<R: BufRead, W: Write>(cfg: &ValidateConfig, input: R, out: &mut StreamWriter<W>) -> Result<Report> {
    let started_at = now_rfc3339();
    let mut findings = Findings {
        out,
        listed: HashMap::new(),
        max_listed: cfg.max_listed,
        counts: BTreeMap::new(),
    };
    let mut report = Report {
        started_at,
        ..Default::default()
    };
    let schema = cfg.schema.as_deref();

    let target = match &cfg.target {
        Some(a) => Some(Db::open(a, ErrorKind::Target, schema)?),
        None => None,
    };
    if let Some(t) = &target {
        report.target = t.address().to_owned();
    }

    // The source side: a database, or the stream spilled to a temporary database.
    let mut stream_side: Option<StreamSide> = None;
    let source_db: Option<Db> = match &cfg.source {
        Some(Address::Stream(path)) => {
            let side = match path {
                Some(p) => {
                    let f = std::fs::File::open(p).ctx(ErrorKind::Source, || format!("opening {}", p.display()))?;
                    spill(cfg, std::io::BufReader::new(f), target.as_ref())?
                }
                None => spill(cfg, input, target.as_ref())?,
            };
            report.source = side.source_address.clone();
            stream_side = Some(side);
            None
        }
        Some(a) => {
            let db = Db::open(a, ErrorKind::Source, None)?;
            report.source = db.address().to_owned();
            Some(db)
        }
        None => {
            let side = spill(cfg, input, target.as_ref())?;
            report.source = side.source_address.clone();
            stream_side = Some(side);
            None
        }
    };

    // Which streams, each with where its source side's rows are.
    let mut plan: Vec<(Meta, Side)> = Vec::new();
    let src: &Db = match (&source_db, &stream_side) {
        (Some(db @ Db::Pg { .. }), _) => {
            // The streams an export would produce, with their keys and constraints.
            let Some(Address::Postgres(url)) = &cfg.source else {
                return Err(Error::usage("nothing to validate"));
            };
            let plans = crate::connect::Source::discover(
                &mut crate::connect::postgres::source::PgSource::open(url)?,
                &cfg.selection,
            )?;
            for p in &plans {
                let meta = Meta::from_schema(&p.schema);
                let side = Side::Table {
                    table: db.table_expr(&p.schema.stream),
                    columns: meta.columns.clone(),
                };
                plan.push((meta, side));
            }
            db
        }
        (Some(db), _) => {
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
            if let Some(tc) = &target {
                for t in tc.tables()? {
                    if !tables.contains(&t) && cfg.selection.includes(&format!("main.{t}"), &t) {
                        report.notes.push(format!("table {t} is in the target only"));
                    }
                }
            }
            db
        }
        (None, Some(side)) => {
            for m in &side.metas {
                if cfg.selection.includes(&m.stream, table_name_for(&m.stream))
                    && let Some(s) = side.sides.get(&m.stream)
                {
                    plan.push((m.clone(), s.clone()));
                }
            }
            for (stream, kind, d) in &side.problems {
                let sev = if kind == "unverified" && cfg.allow_unverified {
                    "warning"
                } else {
                    "fail"
                };
                findings.add(stream, kind, sev, d.clone())?;
                if sev == "fail" && kind == "unverified" {
                    report.unverified.push(format!(
                        "{stream}: {}",
                        d.get("message").and_then(Json::as_str).unwrap_or("")
                    ));
                }
            }
            &side.db
        }
        (None, None) => return Err(Error::usage("nothing to validate")),
    };
    if plan.is_empty() {
        let what = match &stream_side {
            Some(_) => "the stream has no SCHEMA".to_owned(),
            None => format!("{} has no tables", report.source),
        };
        let selected = if cfg.selection.tables.is_empty() && cfg.selection.exclude.is_empty() {
            ""
        } else {
            " that --table/--exclude select"
        };
        return Err(Error::input(format!(
            "nothing was compared: {what}{selected}; a validation passes only on something proved equal"
        )));
    }

    for (meta, side) in &plan {
        let mut sr = StreamReport {
            stream: meta.stream.clone(),
            ..Default::default()
        };
        sr.table = table_name_for(&meta.stream).to_owned();
        if let Some(problems) = stream_side.as_ref().map(|s| {
            s.problems
                .iter()
                .filter(|p| p.0 == meta.stream && p.1 != "unverified")
                .count()
        }) {
            sr.problems
                .extend((problems > 0).then(|| format!("{problems} problems in the stream itself")));
        }
        match &target {
            Some(tgt) => check_stream(
                cfg,
                src,
                tgt,
                meta,
                side,
                &plan,
                &mut sr,
                &mut findings,
                &mut report.unverified,
            )?,
            None => check_alone(
                cfg,
                src,
                meta,
                side,
                &plan,
                &mut sr,
                &mut findings,
                &mut report.unverified,
            )?,
        }
        if let Some(ss) = &stream_side {
            sr.source_rows = ss.rows.get(&meta.stream).copied().unwrap_or(sr.source_rows);
        }
        let bad =
            sr.missing + sr.extra + sr.changed + sr.duplicate + sr.key_null + sr.unique_violations + sr.fk_orphans;
        sr.status = if bad == 0 && sr.problems.is_empty() {
            "pass".into()
        } else {
            "fail".into()
        };
        report.streams.push(sr);
    }
    let failing_kinds = findings
        .counts
        .iter()
        .any(|(k, n)| *n > 0 && k != "unverified" && !WARNING_KINDS.contains(&k.as_str()));
    let unverified = !report.unverified.is_empty() && !cfg.allow_unverified;
    let any_stream_failed = report.streams.iter().any(|s| s.status != "pass");
    report.status = if failing_kinds || any_stream_failed {
        "fail".into()
    } else if unverified {
        "unverified".into()
    } else {
        "pass".into()
    };
    report.findings = findings.counts.clone();
    report.finished_at = now_rfc3339();

    let summary = json!({
        "type": "SUMMARY",
        "status": report.status,
        "source": report.source,
        "target": report.target,
        "streams": report.streams.len(),
        "rows_source": report.streams.iter().map(|s| s.source_rows).sum::<u64>(),
        "rows_target": report.streams.iter().map(|s| s.target_rows).sum::<u64>(),
        "findings": report.findings,
        "unverified": report.unverified,
    });
    findings.out.write_line(summary.to_string().as_bytes(), Kind::End)?;
    if let Some(path) = &cfg.report {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        std::fs::write(path, text + "\n").ctx(ErrorKind::Io, || format!("writing the report {}", path.display()))?;
    }
    Ok(report)
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
