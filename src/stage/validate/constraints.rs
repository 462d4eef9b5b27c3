//! Constraints checked on the target after the rows compare: foreign keys resolve (in the plan
//! or in the target), unique constraints hold.

use std::io::Write;

use serde_json::json;

use super::findings::{Findings, detail, key_json};
use super::{Side, StreamReport};
use crate::connect::compare::Comparable;
use crate::connect::compare::TableMeta;
use crate::connect::sql::quote;
use crate::connect::table_name_for;
use crate::error::Result;
use crate::protocol::ForeignKey;
use crate::protocol::side::{FindingKind, Severity};

/// Rows whose constraints are checked, and how to find the table a foreign key refers to (or why
/// it cannot be checked).
pub(super) struct Checked<'a> {
    pub(super) db: &'a dyn Comparable,
    pub(super) side: &'a Side,
    pub(super) parent: &'a dyn Fn(&ForeignKey) -> std::result::Result<Side, String>,
}

/// The referenced stream's side, among the streams being validated.
pub(super) fn parent_in_plan(plan: &[(TableMeta, Side)], fk: &ForeignKey) -> std::result::Result<Side, String> {
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
pub(super) fn parent_in_target(tgt: &dyn Comparable, fk: &ForeignKey) -> std::result::Result<Side, String> {
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
pub(super) fn constraints<W: Write>(
    meta: &TableMeta,
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
            f.add(stream, FindingKind::KeyNullInSource, Severity::Warning, d)?;
        } else if n > 0 {
            sr.key_null = n;
            f.add(stream, FindingKind::KeyNull, Severity::Fail, d)?;
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
            f.add(stream, FindingKind::UniqueViolationInSource, Severity::Warning, d)?;
            continue;
        }
        for (vals, n) in groups {
            sr.unique_violations += 1;
            let d = detail(&[
                ("columns", json!(u)),
                ("values", key_json(u, &vals)),
                ("count", json!(n)),
            ]);
            f.add(stream, FindingKind::UniqueViolation, Severity::Fail, d)?;
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
                let severity = if allow_unverified {
                    Severity::Warning
                } else {
                    Severity::Fail
                };
                f.add(
                    stream,
                    FindingKind::Unverified,
                    severity,
                    detail(&[("message", json!(msg))]),
                )?;
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
            f.add(stream, FindingKind::FkOrphansInSource, Severity::Warning, d)?;
        } else {
            sr.fk_orphans += n;
            f.add(stream, FindingKind::FkOrphans, Severity::Fail, d)?;
        }
    }
    Ok(())
}

/// The target's counters (its sequences, SQLite's AUTOINCREMENT) against its own rows and, with
/// a `source` read whole, against the numbers the source's counters handed out: a counter the
/// next insert would collide with a row from, or that would give a number again, is a
/// `counter_behind` failure naming the statement that moves it; where the target has no counter
/// to move, a `counter_not_kept` warning.
pub(super) fn counters<W: Write>(
    stream: &str,
    table: &str,
    source: Option<&dyn Comparable>,
    tgt: &dyn Comparable,
    sr: &mut StreamReport,
    f: &mut Findings<'_, W>,
) -> Result<()> {
    let given = match source {
        Some(src) => src.counters(&src.table_for(stream))?,
        None => vec![],
    };
    for t in tgt.counters(table)? {
        let handed = given.iter().find(|s| s.column == t.column).and_then(|s| s.last);
        let (Some(n), last) = (t.max.max(handed), t.last) else {
            continue;
        };
        if last.is_some_and(|l| l >= n) {
            continue;
        }
        let next = last.map_or("its start".to_owned(), |l| (l + 1).to_string());
        let why = if t.max == Some(n) {
            format!("the table holds {n} already: the application's next insert collides")
        } else {
            format!("the source handed out numbers up to {n}: the application would be given them again")
        };
        let column = &t.column;
        let (kind, severity, message) = match &t.fix {
            Some(fix) => (
                FindingKind::CounterBehind,
                Severity::Fail,
                format!(
                    "{table}.{column}: the next row is numbered {next} but {why}; move the counter on the target: {}",
                    fix.replace("{n}", &n.to_string())
                ),
            ),
            None => (
                FindingKind::CounterNotKept,
                Severity::Warning,
                format!(
                    "{table}.{column}: the next row is numbered {next} (the largest + 1) but {why}, and the target keeps no counter to move (an SQLite table does with AUTOINCREMENT)"
                ),
            ),
        };
        if severity == Severity::Fail {
            sr.problems.push(message.clone());
        }
        f.add(
            stream,
            kind,
            severity,
            detail(&[
                ("column", json!(column)),
                ("source", json!(handed)),
                ("target", json!(last)),
                ("message", json!(message)),
            ]),
        )?;
    }
    Ok(())
}
