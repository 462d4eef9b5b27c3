//! Comparing one stream with its table: both sides read in the same order and merged, each key
//! (or row hash) found missing, extra, changed or duplicated.

use std::io::Write;

use serde_json::{Value as Json, json};

use super::constraints::{Checked, constraints, counters, parent_in_plan, parent_in_target};
use super::findings::{Findings, detail, key_json};
use super::hasher;
use super::{Side, StreamReport, ValidateConfig};
use crate::canon::Canon;
use crate::connect::compare::TableMeta;
use crate::connect::compare::{Comparable, Described, MergeRow, Scan};
use crate::connect::sqlite as sq;
use crate::connect::table_name_for;
use crate::error::{Context, Error, ErrorKind, Result};
use crate::protocol::side::{FindingKind, Severity};
use crate::row::RowHash;
use crate::shard::Range;
use crate::value::{Value, compare_keys};

/// Compare one stream of the source side with its table in the target.
#[allow(clippy::too_many_arguments)]
pub(super) fn check_stream<W: Write>(
    cfg: &ValidateConfig,
    src: &dyn Comparable,
    tgt: &dyn Comparable,
    meta: &TableMeta,
    side: &Side,
    plan: &[(TableMeta, Side)],
    shard: Option<&Range>,
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
            FindingKind::TableMissing,
            Severity::Fail,
            detail(&[("table", json!(table)), ("message", json!(msg))]),
        )?;
        return Ok(());
    };
    let tcols = described.names();
    let common = columns_compared(stream, table, meta, &tcols, sr, f)?;
    sr.columns_compared = common.clone();
    // A shard's validation reads its part of the table (the referenced tables stay whole).
    let texpr = match shard.and_then(|r| tgt.range_condition(&described, r)) {
        Some(cond) => tgt.restricted(&tgt.table_expr(table), &cond)?,
        None => tgt.table_expr(table),
    };
    let tside = Side::Table {
        table: texpr,
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
            FindingKind::Unverified,
            if cfg.allow_unverified {
                Severity::Warning
            } else {
                Severity::Fail
            },
            detail(&[("message", json!(msg))]),
        )?;
        unverified.push(format!("{stream}: {msg}"));
        sr.source_rows = src.count(side.table())?;
        sr.target_rows = tgt.count(tside.table())?;
        return Ok(());
    }
    // A PostgreSQL side decides each column's canonical form: the target's, else the source's.
    let source_described = match src {
        _ if src.typed() && matches!(side, Side::Table { .. }) => src.describe(stream)?,
        _ => None,
    };
    let canon_of = |c: &str| described.canon_against(source_described.as_ref(), c);
    let canons: Vec<Canon> = common.iter().map(|c| canon_of(c)).collect();
    say_numbers_held_as_text(stream, &common, &described, source_described.as_ref(), f)?;
    let key_canons: Vec<Canon> = key.iter().map(|c| canon_of(c)).collect();
    let shape = hasher(stream, &common)?;
    let hash = |vals: &[Value]| shape.row_hash(vals);
    let spilled = matches!(side, Side::Spill { .. });
    let sd = source_described.as_ref();
    if meta.key.is_empty() {
        // No key: the rows are compared as multisets, each side sorted by its rows' hashes.
        // Sorting by the values instead needs both engines to order every type (and NULL)
        // alike, which they do not.
        let sorted = crate::connect::compare::temporary_db()?;
        let read = |name: &str, db: &dyn Comparable, table: &str, spilled: bool, d: Option<&Described>| {
            let scan = Scan {
                table,
                key: &[],
                key_canon: &[],
                cols: &common,
                canons: &canons,
                hasher: &hash,
                spilled,
                described: d,
            };
            db.scan(&scan, |rows| sort_by_hash(&sorted, name, common.len(), rows))
        };
        read("a", src, side.table(), spilled, sd)?;
        read("b", tgt, tside.table(), false, Some(&described))?;
        by_hash(&sorted, "a", common.len(), |a| {
            by_hash(&sorted, "b", common.len(), |b| {
                merge(a, b, stream, &key, &common, false, sr, f)
            })
        })?;
    } else {
        let source = Scan {
            table: side.table(),
            key: &key,
            key_canon: &key_canons,
            cols: &common,
            canons: &canons,
            hasher: &hash,
            spilled,
            described: sd,
        };
        let target = Scan {
            table: tside.table(),
            spilled: false,
            described: Some(&described),
            ..source
        };
        src.scan(&source, |a| {
            tgt.scan(&target, |b| merge(a, b, stream, &key, &common, true, sr, f))
        })?;
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
    )?;
    let source_counted =
        matches!(side, Side::Table { .. }) && cfg.selection.filter_for(stream, table_name_for(stream)).is_none();
    let source = if source_counted { Some(src) } else { None };
    counters(stream, table, source, tgt, sr, f)
}

/// A `compared_as_text` FINDING for each column of numbers that SQLite holds as text.
fn say_numbers_held_as_text<W: Write>(
    stream: &str,
    common: &[String],
    target: &Described,
    source: Option<&Described>,
    f: &mut Findings<'_, W>,
) -> Result<()> {
    for c in common {
        if let Some(message) = numbers_held_as_text(c, target, source) {
            f.add(
                stream,
                FindingKind::ComparedAsText,
                Severity::Warning,
                detail(&[("column", json!(c)), ("message", json!(message))]),
            )?;
        }
    }
    Ok(())
}

/// What to say when one side holds column `c` as numbers (a PostgreSQL numeric, integer or
/// floating type) and the other, SQLite, as text (a declared type of TEXT affinity, such as the
/// `NUMERIC TEXT(p,s)` of `--numeric text`): equal values that compare and sort otherwise.
fn numbers_held_as_text(c: &str, target: &Described, source: Option<&Described>) -> Option<String> {
    let type_of = |d: &Described| {
        d.columns
            .iter()
            .find(|(n, _)| n == c)
            .map(|(_, t)| (t.to_ascii_lowercase(), d.meta.is_some()))
    };
    let (t, s) = (type_of(target)?, type_of(source?)?);
    let number = |pg: &str| {
        !pg.ends_with("[]")
            && [
                "numeric",
                "smallint",
                "integer",
                "bigint",
                "real",
                "double precision",
                "money",
            ]
            .iter()
            .any(|n| pg.starts_with(n))
    };
    [(&t, &s, "target"), (&s, &t, "source")]
        .into_iter()
        .find(|((lite, lite_is_sqlite), (pg, pg_is_sqlite), _)| {
            *lite_is_sqlite && !*pg_is_sqlite && number(pg) && sq::catalog::affinity(lite) == sq::catalog::Affinity::Text
        })
        .map(|((lite, _), (pg, _), which)| {
            format!(
                "column {c} is {pg} on one side and `{lite}` (text) in SQLite, the {which}: the values are equal, but SQLite compares, orders and sums them as text (SQLite keeps a number exactly only up to 15 significant digits; ferry-transform --numeric real makes numbers of them, rounded)"
            )
        })
}

/// The columns both sides have, in the stream's order; a FINDING for each column only one side
/// has (missing in the target fails, extra in it warns).
fn columns_compared<W: Write>(
    stream: &str,
    table: &str,
    meta: &TableMeta,
    tcols: &[String],
    sr: &mut StreamReport,
    f: &mut Findings<'_, W>,
) -> Result<Vec<String>> {
    let common: Vec<String> = meta.columns.iter().filter(|c| tcols.contains(c)).cloned().collect();
    for c in meta.columns.iter().filter(|c| !tcols.contains(c)) {
        f.add(
            stream,
            FindingKind::ColumnMissing,
            Severity::Fail,
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
            FindingKind::ColumnExtra,
            Severity::Warning,
            detail(&[
                ("column", json!(c)),
                (
                    "message",
                    json!(format!("the target table {table} has a column {c} the source does not")),
                ),
            ]),
        )?;
    }
    Ok(common)
}

/// Check a stream on its own: keys unique and not null, unique constraints, references resolvable.
#[allow(clippy::too_many_arguments)]
pub(super) fn check_alone<W: Write>(
    cfg: &ValidateConfig,
    db: &dyn Comparable,
    meta: &TableMeta,
    side: &Side,
    plan: &[(TableMeta, Side)],
    sr: &mut StreamReport,
    f: &mut Findings<'_, W>,
    unverified: &mut Vec<String>,
) -> Result<()> {
    sr.source_rows = db.count(side.table())?;
    if !meta.key.is_empty() && side.has(&meta.key) {
        for (vals, n) in db.duplicates(side.table(), &meta.key, 20)? {
            sr.duplicate += n - 1;
            let d = detail(&[("key", key_json(&meta.key, &vals)), ("count", json!(n))]);
            f.add(&meta.stream, FindingKind::Duplicate, Severity::Fail, d)?;
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
                        FindingKind::Duplicate,
                        Severity::Fail,
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
            let kind = if n < changed {
                FindingKind::Changed
            } else {
                FindingKind::Missing
            };
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
                Severity::Fail,
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
                FindingKind::Extra,
                Severity::Fail,
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
