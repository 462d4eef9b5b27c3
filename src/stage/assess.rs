//! `ferry assess`: what a migration is getting into, before it starts.
//!
//! A database (SQLite, PostgreSQL, D1) is read the way an export reads it, every row, so the
//! figures are what the stream will carry: rows and bytes per table, the kinds of value each
//! column holds, tables with no key, and the values the chosen target will refuse or change
//! (with the keys of the first few rows that hold them). A directory is walked and its files
//! counted by size and type; files of the same size are hashed to find duplicates; unreadable
//! files and names object storage cannot take are listed. Both end with a time estimate, from the
//! last import recorded in the state file when there is one, else from the benchmark figures.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Value as Json, json};

use crate::address::Address;
use crate::connect::postgres::copy::{self, Encoder};
use crate::connect::{self, RowAccess, Selection};
use crate::dialect::{self, PgTyping};
use crate::error::Result;
use crate::row::RowShape;
use crate::value::ValueRef;

/// Where the data is going: decides which values are problems.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Destination {
    Sqlite,
    Postgres,
    D1,
    /// Object storage (S3, R2)
    S3,
    /// A directory
    Dir,
}

impl Destination {
    /// How addresses of this kind of store begin.
    fn scheme(self) -> &'static str {
        match self {
            Destination::Sqlite => "sqlite:",
            Destination::Postgres => "postgres",
            Destination::D1 => "d1://",
            Destination::S3 => "s3://",
            Destination::Dir => "dir:",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct AssessConfig {
    pub source: Address,
    pub to: Destination,
    pub state_path: PathBuf,
    /// Examples kept per problem.
    pub examples: usize,
    /// To PostgreSQL: date-times without an offset are UTC (`ferry-import --naive-utc`).
    pub naive_utc: bool,
}

/// D1's limit on one string, BLOB or row, in bytes.
const D1_VALUE_LIMIT: usize = 2_000_000;
/// Integers beyond this lose precision in JavaScript (and D1's JSON answers).
const JS_SAFE: i64 = (1 << 53) - 1;
/// The longest S3 / R2 object key.
const MAX_KEY: usize = 1024;

/// One kind of trouble, how often it was seen, and where first.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Problem {
    /// `refused` (the target will not take it), `changed` (it arrives, differently), `warning`.
    pub severity: &'static str,
    pub what: String,
    pub count: u64,
    pub examples: Vec<Json>,
}

#[derive(Debug, Default)]
struct Problems {
    list: Vec<Problem>,
    index: HashMap<String, usize>,
}

impl Problems {
    fn add(&mut self, severity: &'static str, what: &str, example: impl FnOnce() -> Json, keep: usize) {
        let i = *self.index.entry(what.to_owned()).or_insert_with(|| {
            self.list.push(Problem {
                severity,
                what: what.to_owned(),
                count: 0,
                examples: Vec::new(),
            });
            self.list.len() - 1
        });
        let p = &mut self.list[i];
        p.count += 1;
        if p.examples.len() < keep {
            p.examples.push(example());
        }
    }
}

#[derive(Debug, Default, Serialize)]
struct ColumnStats {
    name: String,
    /// Values by kind: null, integer, real, text, blob.
    kinds: BTreeMap<&'static str, u64>,
    /// The longest text or BLOB, in bytes.
    max_bytes: usize,
    /// To PostgreSQL: the column's type as `ferry-import --create` makes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    postgres_type: Option<String>,
    #[serde(skip)]
    encoder: Option<Encoder>,
}

/// Assess `cfg.source`, writing the result to `out`: a table for people, or one JSON document.
pub(crate) fn run(cfg: &AssessConfig, json_out: bool, out: &mut dyn std::io::Write) -> Result<()> {
    let report = match &cfg.source {
        Address::Dir(root) => assess_dir(cfg, root)?,
        _ => assess_db(cfg)?,
    };
    if json_out {
        writeln!(out, "{report}")?;
    } else {
        out.write_all(human(&report).as_bytes())?;
    }
    Ok(())
}

fn assess_db(cfg: &AssessConfig) -> Result<Json> {
    let mut source = connect::open_source(&cfg.source)?;
    let plans = source.discover(&Selection::default())?;
    let mut tables = Vec::new();
    let (mut all_rows, mut all_bytes) = (0u64, 0u64);
    let mut no_key = Vec::new();
    for plan in &plans {
        let shape = RowShape::from_schema(&plan.schema)?;
        let typing = PgTyping {
            from_postgres: dialect::dialect_of(&plan.schema) == "postgres",
            naive_utc: cfg.naive_utc,
        };
        let mut cols: Vec<ColumnStats> = shape
            .columns
            .iter()
            .map(|c| {
                let prop = &plan.schema.schema.properties[&c.name];
                let postgres_type = (cfg.to == Destination::Postgres).then(|| dialect::pg_type_for(prop, typing));
                ColumnStats {
                    name: c.name.clone(),
                    encoder: postgres_type.as_deref().map(|t| Encoder::for_column(t, prop)),
                    postgres_type,
                    ..Default::default()
                }
            })
            .collect();
        let mut problems = Problems::default();
        if matches!(cfg.to, Destination::Sqlite | Destination::D1) && typing.from_postgres {
            for c in &shape.columns {
                let prop = &plan.schema.schema.properties[&c.name];
                if dialect::numeric_only_exact_as_text(prop) {
                    problems.list.push(Problem {
                        severity: "warning",
                        what: format!(
                            "column {} ({}) can hold more than the 15 significant digits SQLite keeps exactly in a number: ferry-transform --dialect keeps its exact digits as text, which SQLite compares and orders as text (--numeric real: numbers, rounded)",
                            c.name,
                            prop.get("x-sql-type").and_then(Json::as_str).unwrap_or("numeric")
                        ),
                        count: 1,
                        examples: Vec::new(),
                    });
                }
            }
        }
        let (mut rows, mut bytes) = (0u64, 0u64);
        let keep = cfg.examples;
        source.scan(plan, &shape, None, &mut |row: &dyn RowAccess| {
            rows += 1;
            let mut row_bytes = 0usize;
            let key = || {
                if shape.key.is_empty() {
                    json!({"row": rows})
                } else {
                    shape.key_json(|i| row.get(i))
                }
            };
            for (i, col) in cols.iter_mut().enumerate() {
                let v = row.get(i);
                let (kind, len) = match v {
                    ValueRef::Null => ("null", 0),
                    ValueRef::Integer(_) => ("integer", 8),
                    ValueRef::Real(_) => ("real", 8),
                    ValueRef::Text(t) => ("text", t.len()),
                    ValueRef::Blob(b) => ("blob", b.len()),
                };
                *col.kinds.entry(kind).or_default() += 1;
                col.max_bytes = col.max_bytes.max(if matches!(kind, "text" | "blob") { len } else { 0 });
                row_bytes += len;
                value_problems(cfg.to, &col.name, v, &mut problems, &key, keep);
                if let (Some(enc), Some(t)) = (&col.encoder, &col.postgres_type)
                    && let Some(why) = copy::refusal(&v.to_owned(), enc)
                {
                    let what = format!("column {} ({t}): values the PostgreSQL import refuses", col.name);
                    problems.add("refused", &what, || json!({"key": key(), "why": why}), keep);
                }
            }
            if cfg.to == Destination::D1 && row_bytes > D1_VALUE_LIMIT {
                problems.add(
                    "refused",
                    &format!("a row over D1's {D1_VALUE_LIMIT}-byte limit"),
                    key,
                    keep,
                );
            }
            bytes += row_bytes as u64;
            Ok(())
        })?;
        for col in &cols {
            let kinds: Vec<&str> = col.kinds.keys().copied().filter(|k| *k != "null").collect();
            if kinds.len() > 1 && col.encoder == Some(Encoder::Dynamic) {
                problems.list.push(Problem {
                    severity: "changed",
                    what: format!(
                        "column {} holds values of several kinds ({}): PostgreSQL stores it as jsonb, each value in its self-describing form",
                        col.name,
                        kinds.join(", ")
                    ),
                    count: 1,
                    examples: Vec::new(),
                });
            }
        }
        if plan.schema.key_properties.is_empty() {
            no_key.push(plan.schema.stream.clone());
        }
        all_rows += rows;
        all_bytes += bytes;
        tables.push(json!({
            "stream": plan.schema.stream,
            "rows": rows,
            "bytes": bytes,
            "key": plan.schema.key_properties,
            "columns": cols,
            "problems": problems.list,
        }));
    }
    let mut problems = Vec::new();
    if !no_key.is_empty() {
        problems.push(Problem {
            severity: "warning",
            what: "tables with no primary key: re-runs and validation match whole rows, and identical rows cannot be told apart".into(),
            count: no_key.len() as u64,
            examples: no_key.into_iter().map(Json::from).collect(),
        });
    }
    Ok(json!({
        "type": "ASSESSMENT",
        "source": cfg.source.redacted(),
        "to": cfg.to,
        "tables": tables,
        "rows": all_rows,
        "bytes": all_bytes,
        "problems": problems,
        "estimate": estimate(cfg, all_rows, all_bytes, None),
    }))
}

/// What `to` will do with value `v` of column `col`.
fn value_problems(to: Destination, col: &str, v: ValueRef<'_>, p: &mut Problems, key: &dyn Fn() -> Json, keep: usize) {
    use std::borrow::Cow;
    let not_utf8 = |t: &[u8]| std::str::from_utf8(t).is_err();
    let (severity, what): (&'static str, Cow<'static, str>) = match (to, v) {
        (Destination::D1, ValueRef::Text(t) | ValueRef::Blob(t)) if t.len() > D1_VALUE_LIMIT => (
            "refused",
            format!("a value over D1's {D1_VALUE_LIMIT}-byte limit").into(),
        ),
        (Destination::D1, ValueRef::Blob(b)) if b.len() * 2 + 3 > D1_VALUE_LIMIT => (
            "refused",
            "a BLOB over about 1 MB: it travels to D1 as hex, which passes the 2,000,000-byte limit".into(),
        ),
        (Destination::D1, ValueRef::Text(t)) if not_utf8(t) && t.len() * 2 + 3 > D1_VALUE_LIMIT => (
            "refused",
            "text that is not UTF-8 and over about 1 MB: it travels to D1 as hex, which passes the 2,000,000-byte limit".into(),
        ),
        (Destination::D1, ValueRef::Integer(i)) if !(-JS_SAFE..=JS_SAFE).contains(&i) => (
            "warning",
            "integers beyond 2^53: exact in D1 and through ferry, but rounded by JavaScript clients (Workers) that read them as numbers".into(),
        ),
        (Destination::Postgres | Destination::Sqlite | Destination::D1, ValueRef::Real(f)) if f.is_nan() => {
            ("changed", "a NaN float: SQLite and D1 store NULL instead".into())
        }
        _ => return,
    };
    p.add(severity, &what, || json!({"key": key(), "column": col}), keep);
}

/// Size classes for the distribution of file sizes.
const SIZE_CLASSES: [(u64, &str); 8] = [
    (0, "empty"),
    (4 << 10, "up to 4 KiB"),
    (64 << 10, "up to 64 KiB"),
    (1 << 20, "up to 1 MiB"),
    (16 << 20, "up to 16 MiB"),
    (256 << 20, "up to 256 MiB"),
    (1 << 30, "up to 1 GiB"),
    (u64::MAX, "over 1 GiB"),
];

fn assess_dir(cfg: &AssessConfig, root: &std::path::Path) -> Result<Json> {
    let root = crate::tree::open_root(root)?;
    let keep = cfg.examples;
    let mut problems = Problems::default();
    let mut by_size: HashMap<u64, Vec<crate::tree::Entry>> = HashMap::new();
    let mut classes = [0u64; SIZE_CLASSES.len()];
    let mut types: HashMap<String, (u64, u64)> = HashMap::new();
    let (mut files, mut bytes, mut largest) = (0u64, 0u64, 0u64);
    let mut lower: HashMap<String, Vec<u8>> = HashMap::new();
    let name = |rel: &[u8]| Json::from(String::from_utf8_lossy(rel).into_owned());
    crate::tree::walk(&root, Default::default(), None, |w| {
        match w {
            crate::tree::Walked::File(e) => {
                // Opened, to find the files that cannot be read.
                let size = match std::fs::File::open(&e.abs).and_then(|f| f.metadata()) {
                    Ok(m) => m.len(),
                    Err(err) => {
                        problems.add(
                            "refused",
                            "unreadable files",
                            || json!({"path": name(&e.rel), "error": err.to_string()}),
                            keep,
                        );
                        return Ok(());
                    }
                };
                files += 1;
                bytes += size;
                largest = largest.max(size);
                let class = SIZE_CLASSES.iter().position(|(max, _)| size <= *max).unwrap_or(0);
                classes[class] += 1;
                let text = std::str::from_utf8(&e.rel).ok();
                let mime = match text {
                    Some(s) => mime_guess::from_path(s)
                        .first_or_octet_stream()
                        .essence_str()
                        .to_owned(),
                    None => "application/octet-stream".to_owned(),
                };
                let t = types.entry(mime).or_default();
                t.0 += 1;
                t.1 += size;
                key_problems(cfg.to, &e.rel, &mut problems, keep);
                if let Some(s) = text {
                    let folded = s.to_lowercase();
                    if let Some(other) = lower.insert(folded, e.rel.clone())
                        && other != e.rel
                    {
                        problems.add(
                            "warning",
                            "names that differ only in letter case: distinct keys in S3 and R2, one file on a case-insensitive disk",
                            || json!([name(&other), name(&e.rel)]),
                            keep,
                        );
                    }
                }
                by_size.entry(size).or_default().push(e);
            }
            crate::tree::Walked::Skipped { rel, why, .. } => {
                problems.add(
                    "warning",
                    "left out by the walk",
                    || json!({"path": name(&rel), "why": why}),
                    keep,
                );
            }
            crate::tree::Walked::Problem { rel, message } => {
                problems.add(
                    "refused",
                    "unreadable files",
                    || json!({"path": name(&rel), "error": message}),
                    keep,
                );
            }
        }
        Ok(())
    })?;
    // Duplicates: only files sharing a size can be equal, so only they are read.
    let candidates: Vec<(u64, crate::tree::Entry)> = by_size
        .into_iter()
        .filter(|(size, v)| *size > 0 && v.len() > 1)
        .flat_map(|(size, v)| v.into_iter().map(move |e| (size, e)))
        .collect();
    use rayon::prelude::*;
    let hashed: Vec<(u64, [u8; 32], Vec<u8>)> = candidates
        .par_iter()
        .filter_map(|(size, e)| {
            crate::tree::hash_file(&e.abs)
                .ok()
                .map(|h| (*size, h.sha256, e.rel.clone()))
        })
        .collect();
    let mut groups: BTreeMap<[u8; 32], (u64, Vec<Vec<u8>>)> = BTreeMap::new();
    for (size, sha, rel) in hashed {
        let g = groups.entry(sha).or_insert((size, Vec::new()));
        g.1.push(rel);
    }
    let dup_groups: Vec<(u64, Vec<Vec<u8>>)> = groups.into_values().filter(|(_, v)| v.len() > 1).collect();
    let dup_files: u64 = dup_groups.iter().map(|(_, v)| v.len() as u64 - 1).sum();
    let dup_bytes: u64 = dup_groups.iter().map(|(s, v)| s * (v.len() as u64 - 1)).sum();
    let mut types: Vec<(String, (u64, u64))> = types.into_iter().collect();
    types.sort_by(|a, b| b.1.1.cmp(&a.1.1).then_with(|| a.0.cmp(&b.0)));
    Ok(json!({
        "type": "ASSESSMENT",
        "source": cfg.source.redacted(),
        "to": cfg.to,
        "files": files,
        "bytes": bytes,
        "largest": largest,
        "sizes": SIZE_CLASSES.iter().zip(classes).filter(|(_, n)| *n > 0).map(|((_, label), n)| json!({"size": label, "files": n})).collect::<Vec<_>>(),
        "types": types.iter().take(20).map(|(t, (n, b))| json!({"type": t, "files": n, "bytes": b})).collect::<Vec<_>>(),
        "duplicates": {
            "groups": dup_groups.len(),
            "extra_files": dup_files,
            "extra_bytes": dup_bytes,
            "examples": dup_groups
                .iter()
                .take(keep)
                .map(|(size, v)| json!({"size": size, "files": v.len(), "paths": v.iter().take(keep).map(|r| name(r)).collect::<Vec<_>>()}))
                .collect::<Vec<_>>(),
        },
        "problems": problems.list,
        "estimate": estimate(cfg, files, bytes, Some(files)),
    }))
}

/// What object storage will make of a relative path as a key.
fn key_problems(to: Destination, rel: &[u8], p: &mut Problems, keep: usize) {
    if to != Destination::S3 {
        return;
    }
    let why = match std::str::from_utf8(rel) {
        Err(_) => "names that are not UTF-8: object keys are UTF-8 (give them keys in a transform)",
        Ok(s) if s.chars().any(char::is_control) => "names with control characters, which object keys here cannot hold",
        Ok(_) if rel.len() > MAX_KEY => "names longer than S3's 1,024-byte keys (before any prefix)",
        Ok(_) => return,
    };
    p.add(
        "refused",
        why,
        || Json::from(String::from_utf8_lossy(rel).into_owned()),
        keep,
    );
}

/// How long the migration should take: from the last finished import in the state file, else
/// from the benchmark figures (2 cores, benches/RESULTS.md).
fn estimate(cfg: &AssessConfig, items: u64, bytes: u64, files: Option<u64>) -> Json {
    let measured = crate::checkpoint::Checkpoint::open_existing(&cfg.state_path)
        .ok()
        .flatten()
        .and_then(|c| c.runs().ok())
        .and_then(|runs| {
            runs.into_iter()
                .filter(|r| {
                    r.stage == "import" && r.status == crate::checkpoint::RunStatus::Complete && r.rows_written > 1000
                })
                // Only a run into the same kind of store says how fast this one will go.
                .filter(|r| r.target.as_deref().is_some_and(|t| t.starts_with(cfg.to.scheme())))
                .filter_map(|r| {
                    let secs = r.seconds().filter(|s| *s > 0.0)?;
                    Some((r.rows_written as f64 / secs, r.run_id))
                })
                .next_back()
        });
    if let Some((rate, run)) = measured {
        return json!({
            "seconds": (items as f64 / rate * 10.0).round() / 10.0,
            "basis": format!("the rate of run {run} in {}: {rate:.0} per second", cfg.state_path.display()),
        });
    }
    let (seconds, basis) = match (cfg.to, files) {
        (Destination::S3 | Destination::Dir, Some(n)) => (
            n as f64 * 0.3e-3 + bytes as f64 / 190e6,
            "the benchmark on 2 cores: 0.3 ms per file plus 190 MB/s",
        ),
        (Destination::D1, _) => (
            items as f64 / 17_000.0,
            "the benchmark: 17,000 rows/s, what D1's request budget allows",
        ),
        (Destination::Postgres, _) => (items as f64 / 575_000.0, "the benchmark on 2 cores: 575,000 rows/s"),
        _ => (items as f64 / 625_000.0, "the benchmark on 2 cores: 625,000 rows/s"),
    };
    json!({"seconds": (seconds * 10.0).round() / 10.0, "basis": basis})
}

/// The report as a few lines for people.
fn human(r: &Json) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let to = r["to"].as_str().unwrap_or("");
    let _ = writeln!(s, "Assessment of {} for {to}", r["source"].as_str().unwrap_or(""));
    if let Some(tables) = r["tables"].as_array() {
        let _ = writeln!(s, "\n{:<32} {:>12} {:>14}  key", "table", "rows", "bytes");
        for t in tables {
            let key = t["key"]
                .as_array()
                .map(|k| k.iter().filter_map(Json::as_str).collect::<Vec<_>>().join(", "));
            let _ = writeln!(
                s,
                "{:<32} {:>12} {:>14}  {}",
                t["stream"].as_str().unwrap_or(""),
                t["rows"].to_string(),
                t["bytes"].to_string(),
                key.filter(|k| !k.is_empty()).unwrap_or_else(|| "(none)".into())
            );
        }
        let _ = writeln!(
            s,
            "{:<32} {:>12} {:>14}",
            "total",
            r["rows"].to_string(),
            r["bytes"].to_string()
        );
        let typed = |t: &Json| -> Vec<String> {
            let cols = t["columns"].as_array().into_iter().flatten();
            cols.filter_map(|c| Some(format!("{} {}", c["name"].as_str()?, c["postgres_type"].as_str()?)))
                .collect()
        };
        if tables.iter().any(|t| !typed(t).is_empty()) {
            let _ = writeln!(s, "\nPostgreSQL columns, as ferry-import --create makes them:");
            for t in tables {
                let _ = writeln!(s, "  {}: {}", t["stream"].as_str().unwrap_or(""), typed(t).join(", "));
            }
        }
        for t in tables {
            for p in t["problems"].as_array().into_iter().flatten() {
                problem_line(&mut s, &format!("{}: ", t["stream"].as_str().unwrap_or("")), p);
            }
        }
    } else {
        let _ = writeln!(
            s,
            "\n{} files, {} bytes (largest {})",
            r["files"], r["bytes"], r["largest"]
        );
        for c in r["sizes"].as_array().into_iter().flatten() {
            let _ = writeln!(
                s,
                "  {:<16} {:>10}",
                c["size"].as_str().unwrap_or(""),
                c["files"].to_string()
            );
        }
        let _ = writeln!(s, "types (by bytes):");
        for t in r["types"].as_array().into_iter().flatten().take(8) {
            let _ = writeln!(
                s,
                "  {:<32} {:>10} files {:>14} bytes",
                t["type"].as_str().unwrap_or(""),
                t["files"].to_string(),
                t["bytes"].to_string()
            );
        }
        let d = &r["duplicates"];
        let _ = writeln!(
            s,
            "duplicates: {} groups, {} extra files, {} extra bytes",
            d["groups"], d["extra_files"], d["extra_bytes"]
        );
    }
    for p in r["problems"].as_array().into_iter().flatten() {
        problem_line(&mut s, "", p);
    }
    let e = &r["estimate"];
    let _ = writeln!(
        s,
        "\nestimated time: {} s ({})",
        e["seconds"],
        e["basis"].as_str().unwrap_or("")
    );
    s
}

fn problem_line(s: &mut String, prefix: &str, p: &Json) {
    use std::fmt::Write as _;
    let examples: Vec<String> = p["examples"]
        .as_array()
        .into_iter()
        .flatten()
        .map(Json::to_string)
        .collect();
    let _ = writeln!(
        s,
        "{}: {prefix}{} ({}){}",
        p["severity"].as_str().unwrap_or(""),
        p["what"].as_str().unwrap_or(""),
        p["count"],
        if examples.is_empty() {
            String::new()
        } else {
            format!(", e.g. {}", examples.join(" "))
        }
    );
}
