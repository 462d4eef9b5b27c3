//! The export of captured changes (`ferry-export SOURCE --changes [--follow]`): every table as a
//! change stream, carrying the rows whose keys the source's capture recorded since the last
//! change the target acknowledged.
//!
//! Each pass takes one snapshot of the source: the newest change in it, the keys changed up to
//! it, and each key's row as it is in that snapshot (an upsert), or a delete where it is gone. A
//! key changed many times goes once. Upserts go parents first and deletes children first, so a
//! target that checks foreign keys as each statement runs accepts them. The STATE at the end of
//! a pass holds the position it reached (`bookmarks._ferry_changes.seq`): once a target commits
//! it, the target holds exactly what the source held in that snapshot.
//!
//! Where to start is read from the state file (the position of the newest acknowledged STATE of
//! an import of this source's changes), so running the same command again goes on from there; a
//! pass the target committed but whose acknowledgement was lost is sent again, which changes
//! nothing (a row's current image, or a delete of a row gone). Changes up to what the target
//! acknowledged are trimmed from the source's change table as the export goes.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

use super::emit::{Emitter, begin};
use super::{ExportConfig, ExportOutcome};
use crate::checkpoint::Checkpoint;
use crate::connect::{self, ChangeSource, StreamPlan};
use crate::error::{Error, Result};
use crate::protocol::{Message, StreamEnd, StreamWriter};
use crate::row::{RowShape, StreamDigest};
use crate::value::{self, Value};

/// The bookmark under which a STATE keeps the change position reached.
pub(crate) const CHANGES_BOOKMARK: &str = "_ferry_changes";

/// How often a follower looks for new changes, and how often it trims what the target has.
const POLL: Duration = Duration::from_millis(100);
const TRIM_EVERY: Duration = Duration::from_secs(2);
/// Changed rows looked up at once.
const LOOKUP_BATCH: usize = 500;

struct Out {
    plan: StreamPlan,
    shape: RowShape,
    upsert: Vec<u8>,
    delete: Vec<u8>,
    digest: StreamDigest,
    rows: u64,
}

pub(super) fn run<W: Write>(cfg: &ExportConfig, out: &mut StreamWriter<W>) -> Result<ExportOutcome> {
    let mut source = connect::open_source(&cfg.source)?;
    let info = source.info();
    let plans = source.discover(&cfg.selection)?;
    let mut from = acknowledged(cfg, &info.identity())?;
    let address = info.address.clone();
    let Some(changes) = source.changes() else {
        return Err(Error::usage(format!(
            "{address}: ferry cannot capture this store's changes (SQLite can: ferry capture install sqlite:PATH)"
        )));
    };
    // A table without a key cannot take changes: left out, said.
    let mut outs = Vec::new();
    for mut plan in plans {
        if plan.schema.key_properties.is_empty() {
            tracing::warn!(stream = %plan.schema.stream, "no primary key: its changes cannot be named by key, so it is not followed (copy it whole)");
            continue;
        }
        plan.schema.changes = true;
        // The table's size says nothing of how many changes come: no time left from it (a
        // follower has none).
        plan.schema.row_estimate = None;
        let shape = RowShape::from_schema(&plan.schema)?;
        let prefix = |op: &str| {
            let mut p = Vec::from(&br#"{"type":"RECORD","stream":"#[..]);
            value::write_str(&plan.schema.stream, &mut p);
            p.extend_from_slice(format!(r#","op":"{op}","record":"#).as_bytes());
            p
        };
        outs.push(Out {
            upsert: prefix("upsert"),
            delete: prefix("delete"),
            shape,
            plan,
            digest: StreamDigest::default(),
            rows: 0,
        });
    }
    if outs.is_empty() {
        return Err(Error::usage(format!(
            "{address}: no table with a primary key to follow"
        )));
    }
    changes.start(from, cfg.follow)?;
    let trimmed = changes.trim(from)?;
    if trimmed > 0 {
        tracing::info!(
            changes = trimmed,
            upto = from,
            "trimmed the changes the target already has"
        );
    }
    let mut em = begin(cfg, &info, out)?;
    if cfg.follow {
        // A follower ends when told to: it finishes its pass and closes the stream, rather
        // than stopping at the next line.
        em.out.ending();
    }
    em.bookmarks.insert(CHANGES_BOOKMARK.into(), json!({ "seq": from }));
    for o in &outs {
        em.message(&Message::Schema(Box::new(o.plan.schema.clone())))?;
    }
    em.state()?;
    let mut outcome = ExportOutcome {
        run_id: em.run_id.clone(),
        streams: outs.len() as u64,
        ..Default::default()
    };
    let mut last_trim = Instant::now();
    let mut progress = crate::human::Progress::new();
    loop {
        let upto = changes.latest_change()?;
        if upto > from {
            outcome.rows += pass(changes, &mut outs, from, upto, &mut em)?;
            from = upto;
            // The position, and (where the source says) how far behind the source it is: `ferry
            // status` shows it for the import that acknowledges this STATE.
            let mut position = json!({ "seq": from });
            let (lag, lag_bytes) = (changes.lag(), changes.lag_bytes());
            if let Some(lag) = lag {
                position["lag_seconds"] = json!((lag * 1000.0).round() / 1000.0);
            }
            if let Some(b) = lag_bytes {
                position["lag_bytes"] = json!(b);
            }
            em.bookmarks.insert(CHANGES_BOOKMARK.into(), position);
            for o in &outs {
                em.bookmarks
                    .insert(o.plan.schema.stream.clone(), json!({ "rows": o.rows }));
            }
            em.state()?;
            if progress.due() {
                let rate = progress.rate(outcome.rows);
                match crate::human::behind(lag, lag_bytes) {
                    Some(behind) => {
                        tracing::info!(upto, rows = outcome.rows, rows_per_s = rate, %behind, "changes sent")
                    }
                    None => tracing::info!(upto, rows = outcome.rows, rows_per_s = rate, "changes sent"),
                }
            }
        }
        changes.pause()?;
        let more = !changes.caught_up();
        if (!cfg.follow && !more) || crate::interrupt::requested() {
            break;
        }
        if last_trim.elapsed() >= TRIM_EVERY {
            last_trim = Instant::now();
            let acked = acknowledged(cfg, &info.identity())?;
            changes.trim(acked)?;
        }
        if !more {
            std::thread::sleep(POLL);
        }
    }
    if crate::interrupt::requested() {
        tracing::info!(
            upto = from,
            "stopped following: the changes up to here are in the stream"
        );
    }
    finish(&mut em, &mut outs, &outcome)?;
    Ok(outcome)
}

/// One pass over the changes after `from` up to `upto` (one snapshot): each changed key once,
/// upserts parents first, then deletes children first. The rows (changes) sent.
fn pass<W: Write>(
    changes: &mut dyn ChangeSource,
    outs: &mut [Out],
    from: u64,
    upto: u64,
    em: &mut Emitter<'_, W>,
) -> Result<u64> {
    let at: HashMap<String, usize> = outs
        .iter()
        .enumerate()
        .map(|(i, o)| (o.plan.schema.stream.clone(), i))
        .collect();
    let mut keys: Vec<Vec<Vec<Value>>> = vec![Vec::new(); outs.len()];
    let mut seen: HashSet<(usize, Vec<u8>)> = HashSet::new();
    changes.changed_keys(from, upto, &mut |stream, key| {
        if let Some(&i) = at.get(stream)
            && seen.insert((i, value::canonical_key(&key)))
        {
            keys[i].push(key);
        }
        Ok(())
    })?;
    let mut sent = 0;
    let mut gone: Vec<Vec<Vec<Value>>> = vec![Vec::new(); outs.len()];
    for (i, o) in outs.iter_mut().enumerate() {
        let asked = std::mem::take(&mut keys[i]);
        for chunk in asked.chunks(LOOKUP_BATCH) {
            let found = changes.rows_now(&o.plan, &o.shape, chunk)?;
            for (key, row) in chunk.iter().zip(found) {
                let Some(row) = row else {
                    gone[i].push(key.clone());
                    continue;
                };
                em.record(&o.upsert, |line| o.shape.encode_record(|c| row[c].as_ref(), line))?;
                o.digest.add_row(&o.shape, &row);
                o.rows += 1;
                sent += 1;
            }
        }
    }
    for (i, o) in outs.iter_mut().enumerate().rev() {
        for key in std::mem::take(&mut gone[i]) {
            let mut full = vec![Value::Null; o.shape.len()];
            for (&c, v) in o.shape.key.iter().zip(key) {
                full[c] = v;
            }
            em.record(&o.delete, |line| {
                o.shape.write_columns(&o.shape.key, |c| full[c].as_ref(), line)
            })?;
            o.digest.add_delete(&o.shape, &full);
            o.rows += 1;
            sent += 1;
        }
    }
    Ok(sent)
}

/// Each stream's STREAM_END, then END.
fn finish<W: Write>(em: &mut Emitter<'_, W>, outs: &mut [Out], outcome: &ExportOutcome) -> Result<()> {
    for o in outs.iter_mut() {
        let end = StreamEnd::complete_rows(&o.plan.schema.stream, o.rows, o.digest.take_hex());
        em.message(&Message::StreamEnd(end))?;
    }
    em.end_ok(outcome)
}

/// The change position the target has acknowledged for this source: the newest acknowledged
/// STATE of an import of its changes, in the state file (0: none yet, every captured change).
fn acknowledged(cfg: &ExportConfig, identity: &str) -> Result<u64> {
    let Some(cp) = Checkpoint::open_existing(&cfg.state_path)? else {
        return Ok(0);
    };
    let marks = cp.watermarks_of(identity, CHANGES_BOOKMARK)?;
    Ok(marks.and_then(|b| b.get("seq").and_then(Json::as_u64)).unwrap_or(0))
}
