//! The export of a database's tables: each stream's SCHEMA, its rows in key order from one
//! snapshot, STATEs, STREAM_END with the count and digest.

use std::io::Write;
use std::time::Instant;

use serde_json::{Map, Value as Json};

use super::emit::begin;
use super::{ExportConfig, ExportOutcome};
use crate::connect::{self, RowAccess, Selection};
use crate::error::Result;
use crate::human::{Progress, Unit};
use crate::protocol::{Bookmark, DIGEST_ALGO, Digest, End, Message, StreamEnd, StreamWriter, now_rfc3339};
use crate::row::{RowShape, StreamDigest};
use crate::value::{self, Value};

pub(super) fn run<W: Write>(cfg: &ExportConfig, out: &mut StreamWriter<W>) -> Result<ExportOutcome> {
    let mut source = connect::open_source(&cfg.source)?;
    let mut info = source.info();
    let selection = if cfg.roots.is_empty() {
        cfg.selection.clone()
    } else {
        let all = source.discover(&Selection {
            exclude: cfg.selection.exclude.clone(),
            ..Default::default()
        })?;
        let subset = crate::stage::entity::selection(&all, &cfg.roots, cfg.follow_fks)?;
        tracing::info!(
            tables = subset.tables.len(),
            "entity export: {}",
            subset.tables.join(", ")
        );
        subset
    };
    info.selection = selection.describe();

    // Where to start: fresh, or after the last acknowledged STATE of the last run from here.
    let plans = source.discover(&selection)?;
    let mut em = begin(cfg, &info, out)?;
    let run_id = em.run_id.clone();
    // A table that cannot resume after a cursor starts over, and says so in its bookmark.
    for plan in &plans {
        if !plan.resumable && em.bookmarks.contains_key(&plan.schema.stream) {
            em.bookmarks.remove(&plan.schema.stream);
        }
    }
    em.state()?;

    let mut outcome = ExportOutcome {
        run_id: run_id.clone(),
        ..Default::default()
    };
    let mut progress = Progress::new();
    let expected: Option<u64> = plans.iter().map(|p| p.schema.row_estimate).sum();
    for plan in &plans {
        let stream = plan.schema.stream.clone();
        let prior: Option<Bookmark> = em
            .bookmarks
            .get(&stream)
            .and_then(|b| serde_json::from_value(b.clone()).ok());
        if prior.as_ref().is_some_and(|b| b.complete) {
            tracing::info!(stream = %stream, "already complete in the resumed run; skipped");
            continue;
        }
        let after = prior.as_ref().filter(|b| b.after.is_some() || b.rowid.is_some());
        let base = prior.as_ref().and_then(|b| b.rows).unwrap_or(0);
        let shape = RowShape::from_schema(&plan.schema)?;
        em.message(&Message::Schema(Box::new(plan.schema.clone())))?;

        let mut prefix = Vec::from(&br#"{"type":"RECORD","stream":"#[..]);
        value::write_str(&stream, &mut prefix);
        prefix.extend_from_slice(br#","record":"#);

        let mut digest = StreamDigest::default();
        let mut rows: u64 = 0;
        let mut since_state: u64 = 0;
        let mut last_state = Instant::now();
        // The cursor: the last row's key values (at their columns' positions) and rowid.
        let mut last_row: Vec<Value> = vec![Value::Null; shape.len()];
        let mut last_rowid: Option<i64> = None;
        let mut has_cursor = false;
        let bookmark = |rows: u64, last: &[Value], rowid: Option<i64>, has_cursor: bool, complete: bool| -> Json {
            let after = match shape.key_json(|i| last[i].as_ref()) {
                Json::Object(m) if has_cursor && !shape.key.is_empty() => Some(m),
                _ => None,
            };
            let b = Bookmark {
                after,
                rowid,
                rows: Some(base + rows),
                complete,
                extra: Map::new(),
            };
            serde_json::to_value(b).unwrap_or(Json::Null)
        };
        // A resumed stream keeps its cursor until a row moves it.
        if let Some(b) = after {
            last_rowid = b.rowid;
            for &i in &shape.key {
                if let Some(v) = b.after.as_ref().and_then(|a| a.get(&shape.columns[i].name)) {
                    last_row[i] = value::decode_json(v, shape.columns[i].codec).unwrap_or(Value::Null);
                    has_cursor = true;
                }
            }
        }

        source.scan(plan, &shape, after, &mut |row: &dyn RowAccess| {
            em.record(&prefix, |line| shape.encode_record(|i| row.get(i), line))?;
            digest.add(&shape, |i| row.get(i));
            for &i in &shape.key {
                last_row[i] = row.get(i).to_owned();
            }
            last_rowid = row.rowid();
            has_cursor = true;
            rows += 1;
            since_state += 1;
            if since_state >= cfg.state_every || (rows % 256 == 0 && last_state.elapsed() >= cfg.state_interval) {
                let b = bookmark(rows, &last_row, last_rowid, has_cursor, false);
                em.bookmarks.insert(stream.clone(), b);
                em.state()?;
                since_state = 0;
                last_state = Instant::now();
            }
            if rows % 1024 == 0
                && !progress.bar("exporting", outcome.rows + rows, expected, Unit::Rows)
                && progress.due()
            {
                tracing::info!(stream = %stream, rows = base + rows, rows_per_s = progress.rate(outcome.rows + rows), "exporting");
            }
            Ok(())
        })?;

        let b = bookmark(rows, &last_row, last_rowid, has_cursor, true);
        em.bookmarks.insert(stream.clone(), b);
        em.state()?;
        em.message(&Message::StreamEnd(StreamEnd {
            stream: stream.clone(),
            status: "complete".into(),
            rows: Some(rows),
            files: None,
            bytes: None,
            errors: None,
            digest: Some(Digest {
                algo: DIGEST_ALGO.into(),
                value: digest.take_hex(),
            }),
            extra: Map::new(),
        }))?;
        tracing::debug!(stream = %stream, rows, after = base, "stream exported");
        outcome.streams += 1;
        outcome.rows += rows;
    }
    em.message(&Message::End(End {
        run_id,
        status: "ok".into(),
        streams: Some(outcome.streams),
        rows: Some(outcome.rows),
        files: None,
        bytes: None,
        errors: None,
        rejected: None,
        skipped: None,
        finished_at: Some(now_rfc3339()),
        extra: Map::new(),
    }))?;
    em.out.flush()?;
    tracing::info!(
        streams = outcome.streams,
        rows = outcome.rows,
        rows_per_s = progress.rate(outcome.rows),
        "export complete"
    );
    Ok(outcome)
}
