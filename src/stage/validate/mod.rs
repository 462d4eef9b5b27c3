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

mod db;
mod files;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Value as Json, json};

use self::db::{Db, Described, MergeRow};
use crate::address::Address;
use crate::canon::Canon;
use crate::connect::sql::quote;
use crate::connect::sqlite as sq;
use crate::connect::{Selection, table_name_for};
use crate::error::{Context, Error, ErrorKind, Result};
use crate::protocol::{DIGEST_ALGO, ForeignKey, Kind, Schema, StreamEnd, StreamReader, StreamWriter, now_rfc3339};
use crate::row::{Column, RowHash, RowShape, StreamDigest};
use crate::value::{Codec, Value, compare_keys};

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

struct Findings<'w, W: Write> {
    out: &'w mut StreamWriter<W>,
    listed: HashMap<(String, String), usize>,
    max_listed: usize,
    counts: BTreeMap<String, u64>,
}

impl<W: Write> Findings<'_, W> {
    /// Record a finding; it is listed on stdout while under the cap for its stream and kind.
    fn add(
        &mut self,
        stream: &str,
        kind: &str,
        severity: &str,
        mut detail: serde_json::Map<String, Json>,
    ) -> Result<()> {
        *self.counts.entry(kind.to_owned()).or_default() += 1;
        let n = self.listed.entry((stream.to_owned(), kind.to_owned())).or_default();
        *n += 1;
        if *n > self.max_listed {
            return Ok(());
        }
        let mut line = serde_json::Map::new();
        line.insert("type".into(), json!("FINDING"));
        line.insert("stream".into(), json!(stream));
        line.insert("kind".into(), json!(kind));
        line.insert("severity".into(), json!(severity));
        line.append(&mut detail);
        let text = Json::Object(line).to_string();
        self.out.write_line(text.as_bytes(), Kind::Other)
    }
}

/// A finding's fields; null ones (a line number the side does not have) are left out.
fn detail(pairs: &[(&str, Json)]) -> serde_json::Map<String, Json> {
    pairs
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// What a validation must see of a stream before it can prove anything from it: a BEGIN, an END
/// with status ok, and no fatal ERROR. A stream without them (empty input from a producer that
/// failed, a Singer tap's output, a truncated file) cannot say it is whole, so comparing it would
/// prove nothing.
#[derive(Debug, Default)]
pub(crate) struct Whole {
    began: bool,
    ended: bool,
    failed: Option<String>,
}

impl Whole {
    /// Note what a line says of the stream's wholeness.
    pub(crate) fn see(&mut self, line: &crate::protocol::Line<'_>) -> Result<()> {
        match line.kind {
            Kind::Begin => self.began = true,
            Kind::End => {
                let end: crate::protocol::End = line.parse()?;
                self.ended = true;
                if end.status != "ok" && self.failed.is_none() {
                    self.failed = Some(format!("its END (line {}) says status {:?}", line.no, end.status));
                }
            }
            Kind::Error => {
                let e: crate::protocol::ErrorMsg = line.parse()?;
                if e.fatal && self.failed.is_none() {
                    self.failed = Some(format!("line {}: {}", line.no, e.message));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// An error unless the stream was whole; `lines` is how many lines the input had.
    pub(crate) fn check(&self, lines: u64) -> Result<()> {
        let problem = if lines == 0 {
            "the input is empty: the command that should have produced the stream sent nothing (its error is above, or it was not run)".to_owned()
        } else if !self.began {
            "the input has no BEGIN: it is not a whole ferry stream (a Singer tap's output cannot say it is complete); validate the output of ferry-export".to_owned()
        } else if let Some(why) = &self.failed {
            format!("the producer failed ({why}): a stream from a failed run proves nothing")
        } else if !self.ended {
            format!(
                "the input ended after line {lines} without END: the producer stopped early (its error is above); a truncated stream proves nothing"
            )
        } else {
            return Ok(());
        };
        Err(Error::input(format!("{problem}; nothing was compared")))
    }
}

/// The stream side after reading the input: spill tables, schemas and what the stream said.
struct StreamSide {
    db: Db,
    metas: Vec<Meta>,
    sides: HashMap<String, Side>,
    source_address: String,
    /// Per stream: rows read, and the problems found while reading.
    rows: HashMap<String, u64>,
    problems: Vec<(String, String, serde_json::Map<String, Json>)>,
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

/// Finding kinds that are reported but do not fail a validation by themselves.
const WARNING_KINDS: &[&str] = &[
    "column_extra",
    "fk_orphans_in_source",
    "unique_violation_in_source",
    "key_null_in_source",
];

/// A row hash over canonical values of `columns` (sorted by name, as every row hash is).
fn hasher(stream: &str, columns: &[String]) -> Result<RowShape> {
    let cols = columns.iter().map(|c| Column {
        name: c.clone(),
        codec: Codec::Any,
        nullable: true,
        sql_type: None,
    });
    RowShape::new(stream, cols.collect(), &[])
        .map_err(|e| Error::new(ErrorKind::Source, format!("stream {stream}: {e}")))
}

/// Read the stream, checking it as it goes, into a temporary database: keys, constrained columns,
/// and each row's hash over the columns the target has (in their canonical forms).
fn spill<R: BufRead>(cfg: &ValidateConfig, input: R, target: Option<&Db>) -> Result<StreamSide> {
    let conn = db::temporary_db()?;
    conn.execute_batch("BEGIN")
        .ctx(ErrorKind::Io, || "configuring a temporary database")?;
    struct Spilling {
        shape: RowShape,
        common: Option<RowShape>,
        /// Indexes (in the stream's shape) of the spilled columns, and of the hashed ones with
        /// their canonical forms.
        spilled: Vec<usize>,
        hashed: Vec<(usize, Canon)>,
        insert: String,
        digest: StreamDigest,
        rows: u64,
        ended: bool,
    }
    let mut metas = vec![];
    let mut sides = HashMap::new();
    let mut source_address = "-".to_owned();
    let mut problems = vec![];
    let mut streams: HashMap<String, Spilling> = HashMap::new();
    let mut reader = StreamReader::new(input, cfg.max_line);
    let mut whole = Whole::default();
    let mut row = Vec::new();
    while let Some(line) = reader.next_line()? {
        whole.see(&line)?;
        match line.kind {
            Kind::Begin => {
                let b: crate::protocol::Begin = line.parse()?;
                if let Some(s) = b.source {
                    source_address = format!("{} (stream)", s.address);
                }
            }
            Kind::Schema => {
                let schema: Schema = line.parse()?;
                let shape = RowShape::from_schema(&schema)?;
                let meta = Meta::from_schema(&schema);
                let name = schema.stream.clone();
                if streams.contains_key(&name) {
                    problems.push((
                        name.clone(),
                        "unverified".into(),
                        detail(&[
                            (
                                "message",
                                json!("the SCHEMA changed mid-stream: rows are compared under the first one"),
                            ),
                            ("line", json!(line.no)),
                        ]),
                    ));
                    continue;
                }
                // Hash over the columns the target has (all of them when checking alone), each
                // in the canonical form the target's type gives it.
                let described = match target {
                    Some(t) => t.describe(&t.table_for(&name))?,
                    None => None,
                };
                let hashed: Vec<(usize, Canon)> = (0..shape.len())
                    .filter_map(|i| {
                        let col = &shape.columns[i].name;
                        match (&described, target) {
                            (Some(d), _) if d.columns.iter().any(|(n, _)| n == col) => Some((i, d.canon_of(col))),
                            (Some(_), _) | (None, Some(_)) => None,
                            (None, None) => Some((i, Canon::Exact)),
                        }
                    })
                    .collect();
                let common = hasher(
                    &name,
                    &hashed
                        .iter()
                        .map(|&(i, _)| shape.columns[i].name.clone())
                        .collect::<Vec<_>>(),
                )
                .ok();
                let cols = meta.constrained();
                let spilled: Vec<usize> = cols.iter().filter_map(|c| shape.column_index(c)).collect();
                let table = format!("s{}", sides.len());
                let mut ddl = format!("CREATE TABLE {table} (");
                for c in &cols {
                    ddl.push_str(&quote(c));
                    ddl.push_str(", ");
                }
                ddl.push_str("_ferry_h BLOB, _ferry_line INTEGER)");
                conn.execute_batch(&ddl)
                    .ctx(ErrorKind::Io, || "writing a temporary database")?;
                let insert = format!("INSERT INTO {table} VALUES ({})", vec!["?"; cols.len() + 2].join(", "));
                sides.insert(name.clone(), Side::Spill { table, columns: cols });
                metas.push(meta);
                streams.insert(
                    name,
                    Spilling {
                        shape,
                        common,
                        spilled,
                        hashed,
                        insert,
                        digest: StreamDigest::default(),
                        rows: 0,
                        ended: false,
                    },
                );
            }
            Kind::Record => {
                let name = line.stream().to_owned();
                let Some(s) = streams.get_mut(&name) else {
                    problems.push((
                        name,
                        "invalid_stream".into(),
                        detail(&[
                            ("line", json!(line.no)),
                            ("message", json!("a RECORD before its stream's SCHEMA")),
                        ]),
                    ));
                    continue;
                };
                let record = line.record()?;
                row.clear();
                row.resize(s.shape.len(), Value::Null);
                if let Err(e) = s.shape.decode_into(record, &mut row) {
                    problems.push((
                        name,
                        "invalid_record".into(),
                        detail(&[("line", json!(line.no)), ("message", json!(e))]),
                    ));
                    continue;
                }
                if s.ended {
                    problems.push((
                        name.clone(),
                        "invalid_stream".into(),
                        detail(&[
                            ("line", json!(line.no)),
                            ("message", json!("a RECORD after the stream's STREAM_END")),
                        ]),
                    ));
                }
                s.digest.add_row(&s.shape, &row);
                s.rows += 1;
                let h: RowHash = match &s.common {
                    Some(c) => {
                        let vals: Vec<Value> = s
                            .hashed
                            .iter()
                            .map(|&(i, canon)| canon.of_value(row[i].clone()))
                            .collect();
                        c.row_hash(&vals)
                    }
                    None => [0; 32],
                };
                let mut st = conn
                    .prepare_cached(&s.insert)
                    .ctx(ErrorKind::Io, || "writing a temporary database")?;
                let mut vals: Vec<&dyn rusqlite::ToSql> =
                    s.spilled.iter().map(|&i| &row[i] as &dyn rusqlite::ToSql).collect();
                let line_no = line.no as i64;
                vals.push(&h);
                vals.push(&line_no);
                st.execute(&vals[..])
                    .ctx(ErrorKind::Io, || "writing a temporary database")?;
            }
            Kind::StreamEnd => {
                let end: StreamEnd = line.parse()?;
                let Some(s) = streams.get_mut(&end.stream) else {
                    continue;
                };
                s.ended = true;
                if let Some(rows) = end.rows
                    && rows != s.rows
                {
                    problems.push((
                        end.stream.clone(),
                        "stream_end_mismatch".into(),
                        detail(&[
                            ("line", json!(line.no)),
                            (
                                "message",
                                json!(format!("STREAM_END says {rows} rows, the stream has {}", s.rows)),
                            ),
                        ]),
                    ));
                }
                let digest = s.digest.take_hex();
                if let Some(d) = &end.digest
                    && d.algo == DIGEST_ALGO
                    && d.value != digest
                {
                    problems.push((
                        end.stream.clone(),
                        "stream_end_mismatch".into(),
                        detail(&[
                            ("line", json!(line.no)),
                            (
                                "message",
                                json!(format!(
                                    "STREAM_END digest {} differs from the rows' digest {digest}",
                                    d.value
                                )),
                            ),
                        ]),
                    ));
                }
            }
            _ => {}
        }
    }
    whole.check(reader.line_no())?;
    let mut rows = HashMap::new();
    for (name, s) in &streams {
        rows.insert(name.clone(), s.rows);
        if !s.ended {
            problems.push((
                name.clone(),
                "stream_incomplete".into(),
                detail(&[("message", json!("the stream has no STREAM_END"))]),
            ));
        }
    }
    conn.execute_batch("COMMIT")
        .ctx(ErrorKind::Io, || "writing a temporary database")?;
    // Index the spills by key so the ordered reads and foreign-key probes are cheap.
    for m in &metas {
        if let Some(Side::Spill { table, columns }) = sides.get(&m.stream) {
            let key: Vec<String> = if m.key.is_empty() {
                columns.clone()
            } else {
                m.key.clone()
            };
            if !key.is_empty() {
                let cols = key
                    .iter()
                    .map(|c| format!("{} COLLATE BINARY", quote(c)))
                    .collect::<Vec<_>>()
                    .join(", ");
                conn.execute_batch(&format!("CREATE INDEX {table}_k ON {table} ({cols})"))
                    .ctx(ErrorKind::Io, || "indexing a temporary database")?;
            }
        }
    }
    Ok(StreamSide {
        db: Db::Sqlite {
            conn,
            address: source_address.clone(),
        },
        metas,
        sides,
        source_address,
        rows,
        problems,
    })
}

/// Compare one stream of the source side with its table in the target.
#[allow(clippy::too_many_arguments)]
fn check_stream<W: Write>(
    cfg: &ValidateConfig,
    src: &Db,
    tgt: &Db,
    meta: &Meta,
    side: &Side,
    plan: &[(Meta, Side)],
    sr: &mut StreamReport,
    f: &mut Findings<'_, W>,
    unverified: &mut Vec<String>,
) -> Result<()> {
    let stream = meta.stream.as_str();
    let table = &tgt.table_for(stream);
    let Some(described) = tgt.describe(table)? else {
        sr.source_rows = src.count(side.table())?;
        sr.missing = sr.source_rows;
        let msg = format!("the target has no table {}", tgt.table_expr(table));
        f.add(
            stream,
            "table_missing",
            "fail",
            detail(&[("table", json!(table)), ("message", json!(msg))]),
        )?;
        return Ok(());
    };
    let tcols = described.names();
    let common: Vec<String> = meta.columns.iter().filter(|c| tcols.contains(c)).cloned().collect();
    for c in meta.columns.iter().filter(|c| !tcols.contains(c)) {
        f.add(
            stream,
            "column_missing",
            "fail",
            detail(&[
                ("column", json!(c)),
                ("message", json!(format!("the target table {table} has no column {c}"))),
            ]),
        )?;
        sr.problems.push(format!("column {c} missing in target"));
    }
    for c in tcols.iter().filter(|c| !meta.columns.contains(c)) {
        f.add(
            stream,
            "column_extra",
            "warning",
            detail(&[
                ("column", json!(c)),
                (
                    "message",
                    json!(format!("the target table {table} has a column {c} the source does not")),
                ),
            ]),
        )?;
    }
    sr.columns_compared = common.clone();
    let tside = Side::Table {
        table: tgt.table_expr(table),
        columns: tcols,
    };
    let key: Vec<String> = if meta.key.is_empty() {
        common.clone()
    } else {
        meta.key.clone()
    };
    if !key.iter().all(|k| common.contains(k)) || !side.has(&key) {
        let msg = format!(
            "rows not compared: key columns {} are not on both sides",
            key.join(", ")
        );
        f.add(
            stream,
            "unverified",
            if cfg.allow_unverified { "warning" } else { "fail" },
            detail(&[("message", json!(msg))]),
        )?;
        unverified.push(format!("{stream}: {msg}"));
        sr.source_rows = src.count(side.table())?;
        sr.target_rows = tgt.count(tside.table())?;
        return Ok(());
    }
    // A PostgreSQL side decides each column's canonical form: the target's, else the source's.
    let source_described = match src {
        Db::Pg { .. } if matches!(side, Side::Table { .. }) => src.describe(stream)?,
        _ => None,
    };
    let canon_of = |c: &str| match (described.canon_of(c), source_described.as_ref().map(|s| s.canon_of(c))) {
        (Canon::Exact, Some(s)) => s,
        // Money is compared as the decimal it is, whatever the other side's type.
        (_, Some(Canon::Money)) => Canon::Money,
        (canon, _) => canon,
    };
    let canons: Vec<Canon> = common.iter().map(|c| canon_of(c)).collect();
    let key_canons: Vec<Canon> = key.iter().map(|c| canon_of(c)).collect();
    let shape = hasher(stream, &common)?;
    let hash = |vals: &[Value]| shape.row_hash(vals);
    let spilled = matches!(side, Side::Spill { .. });
    let sd = source_described.as_ref();
    if meta.key.is_empty() {
        // No key: the rows are compared as multisets, each side sorted by its rows' hashes.
        // Sorting by the values instead needs both engines to order every type (and NULL)
        // alike, which they do not.
        let sorted = db::temporary_db()?;
        let read = |name: &str, db: &Db, table: &str, spilled: bool, d: Option<&Described>| {
            db.scan(table, &[], &[], &common, &canons, &hash, spilled, d, |rows| {
                sort_by_hash(&sorted, name, common.len(), rows)
            })
        };
        read("a", src, side.table(), spilled, sd)?;
        read("b", tgt, tside.table(), false, Some(&described))?;
        by_hash(&sorted, "a", common.len(), |a| {
            by_hash(&sorted, "b", common.len(), |b| {
                merge(a, b, stream, &key, &common, false, sr, f)
            })
        })?;
    } else {
        src.scan(
            side.table(),
            &key,
            &key_canons,
            &common,
            &canons,
            &hash,
            spilled,
            sd,
            |a| {
                tgt.scan(
                    tside.table(),
                    &key,
                    &key_canons,
                    &common,
                    &canons,
                    &hash,
                    false,
                    Some(&described),
                    |b| merge(a, b, stream, &key, &common, true, sr, f),
                )
            },
        )?;
    }
    let target = Checked {
        db: tgt,
        side: &tside,
        parent: &|fk| parent_in_target(tgt, fk),
    };
    let source = Checked {
        db: src,
        side,
        parent: &|fk| parent_in_plan(plan, fk),
    };
    constraints(
        meta,
        &common,
        &target,
        Some(&source),
        sr,
        f,
        unverified,
        cfg.allow_unverified,
    )
}

/// Check a stream on its own: keys unique and not null, unique constraints, references resolvable.
#[allow(clippy::too_many_arguments)]
fn check_alone<W: Write>(
    cfg: &ValidateConfig,
    db: &Db,
    meta: &Meta,
    side: &Side,
    plan: &[(Meta, Side)],
    sr: &mut StreamReport,
    f: &mut Findings<'_, W>,
    unverified: &mut Vec<String>,
) -> Result<()> {
    sr.source_rows = db.count(side.table())?;
    if !meta.key.is_empty() && side.has(&meta.key) {
        for (vals, n) in db.duplicates(side.table(), &meta.key, 20)? {
            sr.duplicate += n - 1;
            let d = detail(&[("key", key_json(&meta.key, &vals)), ("count", json!(n))]);
            f.add(&meta.stream, "duplicate", "fail", d)?;
        }
    }
    let checked = Checked {
        db,
        side,
        parent: &|fk| parent_in_plan(plan, fk),
    };
    constraints(
        meta,
        &meta.columns,
        &checked,
        None,
        sr,
        f,
        unverified,
        cfg.allow_unverified,
    )
}

fn key_json(cols: &[String], vals: &[Value]) -> Json {
    match hasher("", cols) {
        Ok(s) => s.columns_json(&(0..cols.len()).collect::<Vec<_>>(), |i| vals[i].as_ref()),
        Err(_) => Json::Null,
    }
}

/// One row of a key group: its hash, input line and canonical values.
type GroupRow = (RowHash, Option<i64>, Option<Vec<Value>>);

/// A key and the rows that have it.
type KeyGroup = (Vec<Value>, Vec<GroupRow>);

/// Reads one side of a merge in key order, a group of rows sharing a key at a time.
struct GroupReader<'a> {
    rows: &'a mut dyn Iterator<Item = Result<MergeRow>>,
    next: Option<MergeRow>,
}

impl GroupReader<'_> {
    fn advance(&mut self) -> Result<Option<MergeRow>> {
        let next = self.rows.next().transpose()?;
        Ok(std::mem::replace(&mut self.next, next))
    }

    /// The next group of rows with equal keys, or `None` at the end.
    fn group(&mut self) -> Result<Option<KeyGroup>> {
        let Some((key, h, line, vals)) = self.advance()? else {
            return Ok(None);
        };
        let mut rows = vec![(h, line, vals)];
        while self.next.as_ref().is_some_and(|(k, ..)| compare_keys(k, &key).is_eq()) {
            if let Some((_, h, line, vals)) = self.advance()? {
                rows.push((h, line, vals));
            }
        }
        Ok(Some((key, rows)))
    }
}

/// The ordered merge of both sides of a stream. Rows are compared a key group at a time, as
/// multisets of row hashes: a unique key gives groups of one (missing, extra or changed); a key
/// seen twice on one side is a duplicate; NULL keys (SQLite allows them) and keyless tables (the
/// whole row is the key) compare as multisets without being duplicates.
#[allow(clippy::too_many_arguments)]
fn merge<W: Write>(
    a: &mut dyn Iterator<Item = Result<MergeRow>>,
    b: &mut dyn Iterator<Item = Result<MergeRow>>,
    stream: &str,
    key: &[String],
    columns: &[String],
    keyed: bool,
    sr: &mut StreamReport,
    f: &mut Findings<'_, W>,
) -> Result<()> {
    let mut a = GroupReader { rows: a, next: None };
    let mut b = GroupReader { rows: b, next: None };
    a.advance()?;
    b.advance()?;
    let kj = |k: &[Value]| key_json(key, k);
    let what = if keyed { "key" } else { "row" };
    // A keyed row is named by its key; a keyless one (grouped by its hash) by its values, when
    // this side has them.
    let named = |k: &[Value], vals: Option<&Vec<Value>>| match (keyed, vals) {
        (true, _) => kj(k),
        (false, Some(v)) => key_json(columns, v),
        (false, None) => Json::Null,
    };
    let (mut ga, mut gb) = (a.group()?, b.group()?);
    loop {
        let order = match (&ga, &gb) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some((ka, _)), Some((kb, _))) => compare_keys(ka, kb),
        };
        let (k, mut sa, mut sb) = match order {
            std::cmp::Ordering::Less => {
                let (k, rows) = ga.take().unwrap_or_default();
                ga = a.group()?;
                (k, rows, vec![])
            }
            std::cmp::Ordering::Greater => {
                let (k, rows) = gb.take().unwrap_or_default();
                gb = b.group()?;
                (k, vec![], rows)
            }
            std::cmp::Ordering::Equal => {
                let (k, ra) = ga.take().unwrap_or_default();
                let (_, rb) = gb.take().unwrap_or_default();
                (ga, gb) = (a.group()?, b.group()?);
                (k, ra, rb)
            }
        };
        sr.source_rows += sa.len() as u64;
        sr.target_rows += sb.len() as u64;
        if keyed && !k.contains(&Value::Null) {
            for (side, rows) in [("source", &sa), ("target", &sb)] {
                for (_, line, _) in rows.iter().skip(1) {
                    sr.duplicate += 1;
                    f.add(
                        stream,
                        "duplicate",
                        "fail",
                        detail(&[("side", json!(side)), ("key", kj(&k)), ("line", json!(line))]),
                    )?;
                }
            }
            sa.truncate(1);
            sb.truncate(1);
        }
        // Take out the rows both sides have; what is left differs.
        sa.sort_by_key(|(h, ..)| *h);
        sb.sort_by_key(|(h, ..)| *h);
        let (mut i, mut j) = (0, 0);
        let (mut only_a, mut only_b) = (Vec::new(), Vec::new());
        while i < sa.len() || j < sb.len() {
            match (sa.get(i), sb.get(j)) {
                (Some(x), Some(y)) if x.0 == y.0 => (i, j) = (i + 1, j + 1),
                (Some(x), Some(y)) if x.0 < y.0 => {
                    only_a.push(x);
                    i += 1;
                }
                (Some(x), None) => {
                    only_a.push(x);
                    i += 1;
                }
                (_, y) => {
                    only_b.extend(y);
                    j += 1;
                }
            }
        }
        let changed = only_a.len().min(only_b.len());
        for (n, (_, line, vals)) in only_a.iter().enumerate() {
            let kind = if n < changed { "changed" } else { "missing" };
            *(if n < changed { &mut sr.changed } else { &mut sr.missing }) += 1;
            // Which columns differ, when both sides have their values.
            let differ = match (vals, only_b.get(n).and_then(|r| r.2.as_ref())) {
                (Some(x), Some(y)) if n < changed && keyed => json!(
                    columns
                        .iter()
                        .zip(x.iter().zip(y))
                        .filter(|(_, (p, q))| !same(p, q))
                        .map(|(c, _)| c.as_str())
                        .collect::<Vec<_>>()
                ),
                _ => Json::Null,
            };
            f.add(
                stream,
                kind,
                "fail",
                detail(&[
                    (what, named(&k, vals.as_ref())),
                    ("line", json!(line)),
                    ("columns", differ),
                ]),
            )?;
        }
        for (_, line, vals) in &only_b[changed..] {
            sr.extra += 1;
            f.add(
                stream,
                "extra",
                "fail",
                detail(&[(what, named(&k, vals.as_ref())), ("line", json!(line))]),
            )?;
        }
    }
    Ok(())
}

/// Keep one side's rows (hash, input line, canonical values when it has them) in table `name` of
/// `sorted`, to read back in hash order.
fn sort_by_hash(
    sorted: &rusqlite::Connection,
    name: &str,
    ncols: usize,
    rows: &mut dyn Iterator<Item = Result<MergeRow>>,
) -> Result<()> {
    let e = || "sorting rows by hash in a temporary database";
    let cols: String = (0..ncols).map(|i| format!(", c{i}")).collect();
    sorted
        .execute_batch(&format!(
            "CREATE TABLE {name} (h BLOB, line INTEGER, has_vals INTEGER{cols}); BEGIN"
        ))
        .ctx(ErrorKind::Io, e)?;
    {
        let insert = format!("INSERT INTO {name} VALUES (?, ?, ?{})", ", ?".repeat(ncols));
        let mut st = sorted.prepare(&insert).ctx(ErrorKind::Io, e)?;
        let none = vec![Value::Null; ncols];
        for row in rows {
            let (_, h, line, vals) = row?;
            let mut params: Vec<&dyn rusqlite::ToSql> = vec![&h, &line];
            let has = vals.is_some();
            params.push(&has);
            params.extend(vals.as_ref().unwrap_or(&none).iter().map(|v| v as &dyn rusqlite::ToSql));
            st.execute(&params[..]).ctx(ErrorKind::Io, e)?;
        }
    }
    sorted
        .execute_batch(&format!("COMMIT; CREATE INDEX {name}_h ON {name} (h)"))
        .ctx(ErrorKind::Io, e)
}

/// Read back a side kept by [`sort_by_hash`], in hash order: each row's key is its hash.
fn by_hash<R>(
    sorted: &rusqlite::Connection,
    name: &str,
    ncols: usize,
    f: impl FnOnce(&mut dyn Iterator<Item = Result<MergeRow>>) -> Result<R>,
) -> Result<R> {
    let e = || "reading rows by hash from a temporary database";
    let mut st = sorted
        .prepare(&format!("SELECT * FROM {name} ORDER BY h"))
        .ctx(ErrorKind::Io, e)?;
    let mut rows = st.query([]).ctx(ErrorKind::Io, e)?;
    let mut it = std::iter::from_fn(|| {
        let r = match rows.next() {
            Ok(Some(r)) => r,
            Ok(None) => return None,
            Err(err) => return Some(Err(Error::new(ErrorKind::Io, e()).with_source(err))),
        };
        let read = || -> rusqlite::Result<MergeRow> {
            let bytes: Vec<u8> = r.get(0)?;
            let mut h: RowHash = [0; 32];
            if bytes.len() == 32 {
                h.copy_from_slice(&bytes);
            }
            let vals = if r.get::<_, bool>(2)? {
                let v = (3..3 + ncols).map(|i| Ok(sq::from_sql(r.get_ref(i)?).to_owned()));
                Some(v.collect::<rusqlite::Result<Vec<Value>>>()?)
            } else {
                None
            };
            Ok((vec![Value::Blob(bytes)], h, r.get(1)?, vals))
        };
        Some(read().map_err(|err| Error::new(ErrorKind::Io, e()).with_source(err)))
    })
    .fuse();
    f(&mut it)
}

/// Two canonical values are the same value (a NaN is itself; -0.0 is not 0.0).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Real(x), Value::Real(y)) => x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
        _ => a == b,
    }
}

/// Rows whose constraints are checked, and how to find the table a foreign key refers to (or why
/// it cannot be checked).
struct Checked<'a> {
    db: &'a Db,
    side: &'a Side,
    parent: &'a dyn Fn(&ForeignKey) -> std::result::Result<Side, String>,
}

/// The referenced stream's side, among the streams being validated.
fn parent_in_plan(plan: &[(Meta, Side)], fk: &ForeignKey) -> std::result::Result<Side, String> {
    plan.iter()
        .find(|(m, _)| {
            m.stream == fk.references.stream || table_name_for(&m.stream) == table_name_for(&fk.references.stream)
        })
        .map(|(_, s)| s.clone())
        .ok_or_else(|| {
            format!(
                "references to {} not checked: that stream is not being validated",
                fk.references.stream
            )
        })
}

/// The referenced table in a target database.
fn parent_in_target(tgt: &Db, fk: &ForeignKey) -> std::result::Result<Side, String> {
    let parent = &tgt.table_for(&fk.references.stream);
    match tgt.describe(parent) {
        Ok(Some(d)) => Ok(Side::Table {
            table: tgt.table_expr(parent),
            columns: d.names(),
        }),
        _ => Err(format!(
            "references to {} not checked: the target has no table {parent}",
            fk.references.stream
        )),
    }
}

/// Key not null, unique constraints and foreign keys of `checked`, over the constraints whose
/// columns are all in `columns`. With a `baseline` (the source side), a problem the baseline has
/// at least as often is the source's own, carried over faithfully: reported as a warning
/// (`..._in_source`), not failed.
#[allow(clippy::too_many_arguments)]
fn constraints<W: Write>(
    meta: &Meta,
    columns: &[String],
    checked: &Checked<'_>,
    baseline: Option<&Checked<'_>>,
    sr: &mut StreamReport,
    f: &mut Findings<'_, W>,
    unverified: &mut Vec<String>,
    allow_unverified: bool,
) -> Result<()> {
    let stream = meta.stream.as_str();
    let present = |cols: &[String]| cols.iter().all(|c| columns.contains(c)) && checked.side.has(cols);
    let on_baseline = |cols: &[String]| baseline.filter(|b| b.side.has(cols));
    if !meta.key.is_empty() && present(&meta.key) {
        let cond = meta
            .key
            .iter()
            .map(|k| format!("{} IS NULL", quote(k)))
            .collect::<Vec<_>>()
            .join(" OR ");
        let n = checked.db.count_where(checked.side.table(), &cond)?;
        let base = match on_baseline(&meta.key) {
            Some(b) => b.db.count_where(b.side.table(), &cond)?,
            None => 0,
        };
        let d = detail(&[
            ("count", json!(n)),
            ("columns", json!(meta.key)),
            ("at_source", json!(base)),
        ]);
        if n > 0 && n <= base {
            // SQLite allows NULL in the key of a rowid table; a faithful copy has the same ones.
            f.add(stream, "key_null_in_source", "warning", d)?;
        } else if n > 0 {
            sr.key_null = n;
            f.add(stream, "key_null", "fail", d)?;
        }
    }
    for u in meta.unique.iter().filter(|u| present(u)) {
        let groups = checked.db.duplicates(checked.side.table(), u, 20)?;
        let base = match on_baseline(u) {
            Some(b) => b.db.duplicates(b.side.table(), u, 20)?.len(),
            None => 0,
        };
        if !groups.is_empty() && groups.len() <= base {
            let d = detail(&[("columns", json!(u)), ("groups", json!(groups.len()))]);
            f.add(stream, "unique_violation_in_source", "warning", d)?;
            continue;
        }
        for (vals, n) in groups {
            sr.unique_violations += 1;
            let d = detail(&[
                ("columns", json!(u)),
                ("values", key_json(u, &vals)),
                ("count", json!(n)),
            ]);
            f.add(stream, "unique_violation", "fail", d)?;
        }
    }
    for fk in meta.fks.iter().filter(|fk| present(&fk.columns)) {
        let parent = (checked.parent)(fk).and_then(|p| {
            p.has(&fk.references.columns).then_some(p).ok_or_else(|| {
                format!(
                    "references to {} not checked: it lacks {}",
                    fk.references.stream,
                    fk.references.columns.join(", ")
                )
            })
        });
        let parent = match parent {
            Ok(p) => p,
            Err(msg) => {
                let severity = if allow_unverified { "warning" } else { "fail" };
                f.add(stream, "unverified", severity, detail(&[("message", json!(msg))]))?;
                unverified.push(format!("{stream}: {msg}"));
                continue;
            }
        };
        let n = checked.db.orphans(
            checked.side.table(),
            &fk.columns,
            parent.table(),
            &fk.references.columns,
        )?;
        if n == 0 {
            continue;
        }
        let base = match on_baseline(&fk.columns).and_then(|b| Some((b, (b.parent)(fk).ok()?))) {
            Some((b, p)) if p.has(&fk.references.columns) => {
                b.db.orphans(b.side.table(), &fk.columns, p.table(), &fk.references.columns)?
            }
            _ => 0,
        };
        let d = detail(&[
            ("columns", json!(fk.columns)),
            ("references", json!(fk.references.stream)),
            ("count", json!(n)),
            ("at_source", json!(base)),
        ]);
        if n <= base {
            f.add(stream, "fk_orphans_in_source", "warning", d)?;
        } else {
            sr.fk_orphans += n;
            f.add(stream, "fk_orphans", "fail", d)?;
        }
    }
    Ok(())
}
