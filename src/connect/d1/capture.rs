//! Change capture for a D1 database, through its API: the triggers and change table of a SQLite
//! file's capture (`connect::sqlite::capture`: D1 is SQLite), installed and removed in one
//! request each (one transaction).
//!
//! D1 has no read transaction across requests, so a follower's pass reads everything it sends in
//! one request: the newest change's position, the keys changed in a window after the last pass,
//! and, table by table, the rows under those keys as they are in that same instant. The pass is
//! one snapshot, as a SQLite file's is: a parent written after the pass's position cannot reach
//! the stream ahead of the child pointing at it. A window is at most [`WINDOW`] changes (a
//! request must stay inside D1's 30 s and its answer small); a drain takes as many passes as it
//! needs to reach the newest change.

use std::collections::HashMap;

use serde_json::Value as Json;

use super::client::Stmt;
use super::source::{D1Source, Pass, Rows, garbled, tagged, untag};
use crate::connect::sql::{literal, quote};
use crate::connect::sqlite::capture::{self as lite, CHANGES_TABLE, MAX_KEY};
use crate::connect::{CapturePlan, ChangeSource, StreamPlan};
use crate::error::{Error, ErrorKind, Result};
use crate::row::RowShape;
use crate::value::{Value, canonical_key};

/// The most changes one pass reads.
const WINDOW: u64 = 2_000;
/// A follower that found nothing asks again after this long: each look is a request, and a
/// token's budget is 1,200 per 5 minutes (this takes an eighth of it).
const POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// A captured table a pass reads.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Captured {
    stream: String,
    table: String,
    key: Vec<String>,
    columns: Vec<String>,
}

/// The statements that start capturing every keyed table.
pub(crate) fn install_plan(src: &mut D1Source) -> Result<CapturePlan> {
    let address = src.address().to_owned();
    lite::install_plan(src.schema()?, &address)
}

/// The statements that take away everything capture made.
pub(crate) fn remove_plan(src: &mut D1Source) -> Result<Vec<String>> {
    let names: Vec<String> = triggers(src)?.into_iter().map(|(name, _)| name).collect();
    Ok(lite::removal(&names, has_changes_table(src)?))
}

/// Run statements in one request: all of them, or none.
pub(crate) fn apply(src: &mut D1Source, statements: &[String]) -> Result<()> {
    src.client.raw(statements).map(|_| ())
}

/// Changes recorded and not yet trimmed, and the newest one's position; None without capture.
pub(crate) fn pending(src: &mut D1Source) -> Result<Option<(u64, u64)>> {
    if !has_changes_table(src)? {
        return Ok(None);
    }
    let sql = format!("SELECT count(*), {} FROM {CHANGES_TABLE}", lite::newest_sql());
    let row = first_row(src, &sql)?;
    let n = |i: usize| row.get(i).and_then(Json::as_u64).unwrap_or(0);
    Ok(Some((n(0), n(1))))
}

/// Capture's triggers, with their tables.
fn triggers(src: &mut D1Source) -> Result<Vec<(String, String)>> {
    let rows = src.client.raw(&[lite::triggers_sql()])?.pop().unwrap_or_default();
    Ok(rows
        .iter()
        .filter_map(|r| Some((r.first()?.as_str()?.to_owned(), r.get(1)?.as_str()?.to_owned())))
        .collect())
}

fn has_changes_table(src: &mut D1Source) -> Result<bool> {
    let sql = format!("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '{CHANGES_TABLE}'");
    Ok(first_row(src, &sql)?.first().and_then(Json::as_i64) == Some(1))
}

fn first_row(src: &mut D1Source, sql: &str) -> Result<Vec<Json>> {
    Ok(src
        .client
        .raw(&[sql.to_owned()])?
        .pop()
        .and_then(|rows| rows.into_iter().next())
        .unwrap_or_default())
}

/// The one request of a pass after `after`: its position (`min(newest, after + WINDOW)`) and the
/// newest change's, the keys in between (tagged, so they come back exact), then for each table
/// in `tables` its rows under those keys.
fn pass_sql(after: u64, tables: &[Captured]) -> Vec<String> {
    let newest = lite::newest_sql();
    let upto = format!("min({newest}, {after} + {WINDOW})");
    let window = format!("seq > {after} AND seq <= {upto}");
    let slots = lite::key_columns();
    let keys: Vec<String> = slots.iter().map(|k| tagged(k)).collect();
    let mut sqls = vec![
        format!("SELECT {upto}, {newest}"),
        format!(
            "SELECT tbl, {} FROM {CHANGES_TABLE} WHERE {window} ORDER BY seq",
            keys.join(", ")
        ),
    ];
    for Captured {
        table, key, columns, ..
    } in tables
    {
        let select: Vec<String> = columns.iter().map(|c| tagged(&quote(c))).collect();
        let key_list: Vec<String> = key.iter().map(|k| quote(k)).collect();
        sqls.push(format!(
            "SELECT {} FROM main.{} WHERE ({}) IN (SELECT {} FROM {CHANGES_TABLE} WHERE tbl = {} AND {window})",
            if select.is_empty() {
                "NULL".to_owned()
            } else {
                select.join(", ")
            },
            quote(table),
            key_list.join(", "),
            slots[..key.len()].join(", "),
            literal(Some(table)),
        ));
    }
    sqls
}

impl D1Source {
    /// Read the next pass after `after` ([`pass_sql`]) in one request.
    fn read_pass(&mut self, after: u64) -> Result<Pass> {
        let address = self.address().to_owned();
        let mut tables: Vec<Captured> = self
            .tables
            .iter()
            .filter(|(_, t)| !t.pk.is_empty() && t.pk.len() <= MAX_KEY)
            .map(|(stream, t)| Captured {
                stream: stream.clone(),
                table: t.name.clone(),
                key: t.pk.clone(),
                columns: t.stored_columns().map(|c| c.name.clone()).collect(),
            })
            .collect();
        tables.sort();
        let answers = match self.client.try_raw(&pass_sql(after, &tables))? {
            Ok(a) => a,
            Err(m) if m.contains("no such table: _ferry_changes") => return Err(lite::not_installed(&address)),
            Err(m) => return Err(self.client.refused("reading the changes", &m)),
        };
        let bad = |what: &str, e: String| Error::new(ErrorKind::Source, format!("{address}: {what}: {e}"));
        let mut answers = answers.into_iter();
        let head = answers
            .next()
            .and_then(|rows| rows.into_iter().next())
            .unwrap_or_default();
        let position = |i: usize| head.get(i).and_then(Json::as_u64).unwrap_or(0);
        let mut pass = Pass {
            after,
            upto: position(0).max(after),
            newest: position(1),
            read_at: Some(std::time::Instant::now()),
            ..Pass::default()
        };
        for r in answers.next().unwrap_or_default() {
            let table = r.first().and_then(Json::as_str).unwrap_or_default().to_owned();
            let key = r
                .get(1..)
                .unwrap_or_default()
                .iter()
                .map(untag)
                .collect::<std::result::Result<Vec<Value>, String>>()
                .map_err(|e| bad(&format!("a key of {table} in {CHANGES_TABLE}"), e))?;
            pass.keys.push((table, key));
        }
        for (
            Captured {
                stream,
                table,
                key,
                columns,
            },
            rows,
        ) in tables.into_iter().zip(answers)
        {
            let at: Vec<usize> = key.iter().filter_map(|k| columns.iter().position(|c| c == k)).collect();
            let mut found = HashMap::new();
            for r in rows {
                let values = r
                    .iter()
                    .map(untag)
                    .collect::<std::result::Result<Vec<Value>, String>>()
                    .map_err(|e| bad(&format!("a changed row of {table}"), e))?;
                if values.iter().any(garbled) {
                    return Err(bad(
                        &format!("a changed row of {table}"),
                        "it holds text that is not UTF-8, which D1's API cannot carry in a pass; copy that table whole (ferry-export --table)".into(),
                    ));
                }
                found.insert(canonical_key(at.iter().map(|&i| &values[i])), values);
            }
            pass.rows.insert(stream, Rows { columns, by_key: found });
        }
        Ok(pass)
    }
}

impl ChangeSource for D1Source {
    fn start(&mut self, from: u64, _follow: bool) -> Result<()> {
        if !has_changes_table(self)? {
            return Err(lite::not_installed(self.address()));
        }
        let captured: Vec<String> = triggers(self)?.into_iter().map(|(_, table)| table).collect();
        for t in self.tables.values().filter(|t| !t.pk.is_empty()) {
            if captured.iter().filter(|c| **c == t.name).count() < lite::TRIGGERS_PER_TABLE {
                lite::warn_uncaptured(&t.name, self.address());
            }
        }
        self.pass = Some(Pass {
            after: from,
            upto: from,
            newest: from,
            ..Pass::default()
        });
        Ok(())
    }

    fn latest_change(&mut self) -> Result<u64> {
        if let Some(p) = &self.pass
            && let Some(at) = p.read_at
            && p.upto == p.after
        {
            std::thread::sleep(POLL.saturating_sub(at.elapsed()));
        }
        let after = self.pass.as_ref().map_or(0, |p| p.upto);
        let pass = self.read_pass(after)?;
        let upto = pass.upto;
        self.pass = Some(pass);
        Ok(upto)
    }

    fn caught_up(&self) -> bool {
        self.pass.as_ref().is_none_or(|p| p.upto >= p.newest)
    }

    fn changed_keys(
        &mut self,
        after: u64,
        upto: u64,
        each: &mut dyn FnMut(&str, Vec<Value>) -> Result<()>,
    ) -> Result<()> {
        let Some(pass) = self.pass.as_mut().filter(|p| p.after == after && p.upto == upto) else {
            return Err(Error::new(
                ErrorKind::Source,
                format!("the changes after {after} up to {upto} were not read in one pass"),
            ));
        };
        let streams: HashMap<&str, (&str, usize)> = self
            .tables
            .iter()
            .map(|(stream, t)| (t.name.as_str(), (stream.as_str(), t.pk.len())))
            .collect();
        for (table, mut key) in std::mem::take(&mut pass.keys) {
            // A table the export does not take (or made after it started) is left alone.
            if let Some(&(stream, n)) = streams.get(table.as_str()) {
                key.truncate(n);
                each(stream, key)?;
            }
        }
        Ok(())
    }

    fn rows_now(
        &mut self,
        plan: &StreamPlan,
        shape: &RowShape,
        keys: &[Vec<Value>],
    ) -> Result<Vec<Option<Vec<Value>>>> {
        let stream = &plan.schema.stream;
        let Some(Rows { columns, by_key }) = self.pass.as_ref().and_then(|p| p.rows.get(stream)) else {
            return Ok(vec![None; keys.len()]);
        };
        let at: Vec<Option<usize>> = shape
            .columns
            .iter()
            .map(|c| columns.iter().position(|n| *n == c.name))
            .collect();
        Ok(keys
            .iter()
            .map(|k| {
                by_key.get(&canonical_key(k)).map(|values| {
                    at.iter()
                        .map(|i| i.map_or(Value::Null, |i| values[i].clone()))
                        .collect()
                })
            })
            .collect())
    }

    fn trim(&mut self, upto: u64) -> Result<u64> {
        let sql = format!("DELETE FROM {CHANGES_TABLE} WHERE seq <= {upto}");
        let done = self.client.exec(&[Stmt::plain(sql.as_str())])?;
        Ok(done
            .first()
            .and_then(|r| r.pointer("/meta/changes"))
            .and_then(Json::as_u64)
            .unwrap_or(0))
    }

    fn pause(&mut self) -> Result<()> {
        Ok(())
    }
}
