//! Catch-up passes (`--incremental TABLE.COLUMN`): every stream of the export goes out as
//! changes (upserts by key, see the protocol's "Changes"), and a table given a watermark column
//! (an `updated_at`, or a key that only grows) sends only the rows whose column is at or past the
//! value the last complete pass from this source reached. Rows at the watermark itself go again:
//! an upsert of a row the target has changes nothing, and a row changed within the same instant
//! as the last one seen is not missed.
//!
//! The watermark of a stream is kept in its bookmark, Singer's way: `replication_key` (the
//! column) and, once the stream is complete, `replication_key_value` (the largest value read);
//! and `replication_key_start` (where this pass started), so that `--resume` continues the same
//! pass and an importer can refuse a pass whose earlier rows its target lacks. A pass reads the rows in key order like any export, so its largest
//! value is known only at the end; a pass that stopped part-way leaves the watermark where it was.
//!
//! What a watermark cannot see: a row whose column a writer sets to a value below the watermark
//! (a clock behind, a transaction that committed long after it began), and deleted rows. Change
//! capture sees both; at cutover, with writes stopped, `ferry-validate SOURCE TARGET` proves
//! the copy whole either way.

use std::collections::HashMap;

use serde_json::{Map, Value as Json};

use crate::connect::StreamPlan;
use crate::error::{Error, Result};
use crate::row::RowShape;
use crate::value::{self, Value, ValueRef};

/// `--incremental TABLE.COLUMN`, as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incremental {
    /// The table, by table name (`users`) or stream name (`main.users`).
    pub table: String,
    pub column: String,
}

impl Incremental {
    pub fn parse(text: &str) -> Result<Incremental> {
        match text.rsplit_once('.') {
            Some((table, column)) if !table.is_empty() && !column.is_empty() => Ok(Incremental {
                table: table.to_owned(),
                column: column.to_owned(),
            }),
            _ => Err(Error::usage(format!(
                "--incremental {text:?}: give TABLE.COLUMN, the column whose value grows when a row changes (users.updated_at)"
            ))),
        }
    }
}

/// One stream's watermark in this pass: its column, where the pass started, and the largest
/// value read so far.
#[derive(Debug, Clone)]
pub(super) struct Watermark {
    column: String,
    index: usize,
    start: Option<Value>,
    max: Option<Value>,
}

impl Watermark {
    /// The column's place in the stream's rows.
    pub(super) fn index(&self) -> usize {
        self.index
    }

    /// A row read: its value may move the watermark on.
    pub(super) fn see(&mut self, v: ValueRef<'_>) {
        if !matches!(v, ValueRef::Null) && self.max.as_ref().is_none_or(|m| later(v, m.as_ref())) {
            self.max = Some(v.to_owned());
        }
    }

    /// Write the watermark into a stream's bookmark: the column, and where the pass started or
    /// (complete) where the next pass starts.
    pub(super) fn mark(&self, shape: &RowShape, bookmark: &mut Json, complete: bool) {
        let Some(b) = bookmark.as_object_mut() else {
            return;
        };
        let codec = shape.columns[self.index].codec;
        let json = |v: &Value| {
            let mut out = Vec::new();
            value::encode(v.as_ref(), codec, &mut out);
            serde_json::from_slice::<Json>(&out).unwrap_or(Json::Null)
        };
        b.insert("replication_key".into(), Json::from(self.column.clone()));
        let reached = match (&self.start, &self.max) {
            (Some(s), Some(m)) if later(s.as_ref(), m.as_ref()) => Some(s),
            (_, Some(m)) => Some(m),
            (s, None) => s.as_ref(),
        };
        // Where the pass started, always: a target that lacks what came before refuses it.
        if let Some(s) = &self.start {
            b.insert("replication_key_start".into(), json(s));
        }
        if let (true, Some(v)) = (complete, reached) {
            b.insert("replication_key_value".into(), json(v));
        }
    }
}

/// Whether `a` comes after `b` as a watermark: times (RFC 3339 text) by their instant, whatever
/// their spelling; anything else in SQLite's order (numbers by value, text by bytes).
fn later(a: ValueRef<'_>, b: ValueRef<'_>) -> bool {
    if let (ValueRef::Text(x), ValueRef::Text(y)) = (a, b)
        && let (Ok(x), Ok(y)) = (std::str::from_utf8(x), std::str::from_utf8(y))
        && let (Ok(x), Ok(y)) = (value::time::timestamp_micros(x), value::time::timestamp_micros(y))
    {
        return x > y;
    }
    value::compare(a, b) == std::cmp::Ordering::Greater
}

/// Make every stream a change stream, and give each table named by `--incremental` its
/// watermark: from `resumed` (the bookmarks of the pass `--resume` continues) or `reached` (what
/// the last complete passes from this source reached, by stream). A watermark's condition joins
/// the table's `--where`.
pub(super) fn prepare(
    plans: &mut [StreamPlan],
    asked: &[Incremental],
    resumed: &Map<String, Json>,
    reached: &HashMap<String, Json>,
    source: &str,
) -> Result<HashMap<String, Watermark>> {
    let mut out = HashMap::new();
    for inc in asked {
        let named = |p: &&mut StreamPlan| {
            p.schema.stream == inc.table || p.schema.table.as_ref().is_some_and(|t| t.name == inc.table)
        };
        let Some(plan) = plans.iter_mut().find(named) else {
            let tables: Vec<&str> = plans.iter().map(|p| p.schema.stream.as_str()).collect();
            return Err(Error::usage(format!(
                "--incremental {}.{}: {source} exports no table {} (it exports {})",
                inc.table,
                inc.column,
                inc.table,
                tables.join(", ")
            )));
        };
        let stream = plan.schema.stream.clone();
        let shape = RowShape::from_schema(&plan.schema)?;
        let Some(index) = shape.column_index(&inc.column) else {
            let columns: Vec<&str> = shape.columns.iter().map(|c| c.name.as_str()).collect();
            return Err(Error::usage(format!(
                "--incremental {}.{}: table {stream} has no column {} (it has {})",
                inc.table,
                inc.column,
                inc.column,
                columns.join(", ")
            )));
        };
        let codec = shape.columns[index].codec;
        let from_json = |b: &Json, field: &str| -> Result<Option<Value>> {
            let same_column = b.get("replication_key").and_then(Json::as_str) == Some(inc.column.as_str());
            match b.get(field) {
                Some(v) if same_column => value::decode_json(v, codec).map(Some).map_err(|e| {
                    Error::usage(format!(
                        "stream {stream}: the watermark {v} in the state file is unreadable: {e}"
                    ))
                }),
                _ => Ok(None),
            }
        };
        let start = match resumed.get(&stream) {
            Some(b) => from_json(b, "replication_key_start")?,
            None => match reached.get(&stream) {
                Some(b) => from_json(b, "replication_key_value")?,
                None => None,
            },
        };
        match &start {
            Some(v) => {
                let cond = format!(
                    "{} >= {}",
                    crate::connect::sql::quote(&inc.column),
                    literal(v, &stream)?
                );
                tracing::info!(stream = %stream, since = %cond, "catch-up pass: only the rows changed since the last one");
                // The table's size says nothing of how many changed: no time left from it.
                plan.schema.row_estimate = None;
                plan.filter = Some(match plan.filter.take() {
                    Some(f) => format!("({f}) AND {cond}"),
                    None => cond,
                });
            }
            None => {
                tracing::info!(stream = %stream, column = %inc.column, "no earlier pass from this source reached a watermark: every row, the watermark kept for the next pass")
            }
        }
        out.insert(
            stream,
            Watermark {
                column: inc.column.clone(),
                index,
                start,
                max: None,
            },
        );
    }
    for plan in plans.iter_mut() {
        plan.schema.changes = true;
    }
    Ok(out)
}

/// A watermark as an SQL literal both SQLite and PostgreSQL read (a number, or a string that
/// PostgreSQL reads as the column's own type).
fn literal(v: &Value, stream: &str) -> Result<String> {
    match v {
        Value::Integer(i) => Ok(i.to_string()),
        Value::Real(f) if f.is_finite() => Ok(format!("{f:e}")),
        Value::Text(t) => match std::str::from_utf8(t) {
            Ok(s) => Ok(crate::connect::sql::literal(Some(s))),
            Err(_) => Err(Error::usage(format!(
                "stream {stream}: a watermark is a number or text; this one is not UTF-8"
            ))),
        },
        _ => Err(Error::usage(format!(
            "stream {stream}: a watermark column holds numbers or text (times); this one held {v:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_compared_by_their_instant_and_numbers_by_value() {
        let t = |s: &str| Value::text(s);
        assert!(later(
            t("2026-01-01T10:00:00.5Z").as_ref(),
            t("2026-01-01T10:00:00Z").as_ref()
        ));
        assert!(!later(
            t("2026-01-01T10:00:00+01:00").as_ref(),
            t("2026-01-01T09:30:00Z").as_ref()
        ));
        assert!(later(Value::Integer(10).as_ref(), Value::Integer(9).as_ref()));
        assert!(later(Value::Real(2.5).as_ref(), Value::Integer(2).as_ref()));
    }

    #[test]
    fn a_watermark_names_its_table_and_column() {
        assert_eq!(
            Incremental::parse("main.users.updated_at").unwrap(),
            Incremental {
                table: "main.users".into(),
                column: "updated_at".into()
            }
        );
        assert!(Incremental::parse("updated_at").is_err());
        assert!(Incremental::parse("users.").is_err());
    }
}
