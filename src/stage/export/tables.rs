//! The export of a database's tables: each stream's SCHEMA, its rows in key order from one
//! snapshot, STATEs, STREAM_END with the count and digest.

use std::io::Write;
use std::time::Instant;

use serde_json::{Map, Value as Json};

use std::collections::HashMap;

use super::deletes::Detector;
use super::emit::{Emitter, begin};
use super::incremental::{self, Watermark};
use super::{ExportConfig, ExportOutcome};
use crate::checkpoint::Checkpoint;
use crate::connect::{self, RowAccess, Selection};
use crate::dialect::{self, PgTyping};
use crate::error::Result;
use crate::human::{Progress, Unit};
use crate::protocol::{Bookmark, Message, Schema, StreamEnd, StreamWriter};
use crate::row::{RowShape, StreamDigest};
use crate::shard::Shard;
use crate::value::{self, Value};

pub(super) fn run<W: Write>(cfg: &ExportConfig, out: &mut StreamWriter<W>) -> Result<ExportOutcome> {
    let mut source = connect::open_source(&cfg.source)?;
    let mut info = source.info();
    let selection = selection(source.as_mut(), cfg)?;
    info.selection = selection.describe();
    info.shard = cfg.shard;

    // Where to start: fresh, or after the last acknowledged STATE of the last run from here.
    let mut plans = source.discover(&selection)?;
    if let Some(shard) = cfg.shard {
        for plan in &mut plans {
            narrow_to_shard(source.as_mut(), plan, shard)?;
        }
    }
    let mut em = begin(cfg, &info, out)?;
    let mut watermarks = HashMap::new();
    if !cfg.incremental.is_empty() {
        let reached = match Checkpoint::open_existing(&cfg.state_path)? {
            Some(cp) => cp.watermarks(&info.identity())?,
            None => HashMap::new(),
        };
        watermarks = incremental::prepare(&mut plans, &cfg.incremental, &em.bookmarks, &reached, &info.address)?;
    }
    let detector = match &cfg.detect_deletes {
        Some(target) => Some(Detector::open(&cfg.source, target, None)?),
        None => None,
    };
    // A table that cannot resume after a cursor starts over, and says so in its bookmark.
    for plan in &plans {
        let stream = stream_name(plan, cfg.singer);
        if !plan.resumable && em.bookmarks.contains_key(&stream) {
            em.bookmarks.remove(&stream);
        }
    }
    em.state()?;

    let mut outcome = ExportOutcome {
        run_id: em.run_id.clone(),
        ..Default::default()
    };
    let mut progress = Progress::new();
    let mut ending = Vec::new();
    let expected: Option<u64> = plans.iter().map(|p| p.schema.row_estimate).sum();
    for plan in &plans {
        let stream = &stream_name(plan, cfg.singer);
        let prior: Option<Bookmark> = em
            .bookmarks
            .get(stream)
            .and_then(|b| serde_json::from_value(b.clone()).ok());
        if prior.as_ref().is_some_and(|b| b.complete) {
            tracing::info!(stream = %stream, "already complete in the resumed run; skipped");
            continue;
        }
        let mut counting = Counting {
            progress: &mut progress,
            done: outcome.rows,
            expected,
        };
        let wm = watermarks.get_mut(&plan.schema.stream);
        let exported = export_rows(source.as_mut(), plan, prior.as_ref(), wm, cfg, &mut em, &mut counting)?;
        match detector {
            // Deletes go after every stream's rows, children first: ends wait for them.
            Some(_) => ending.push((plan.schema.stream.clone(), exported)),
            None => {
                outcome.rows += exported.end(&mut em)?;
                outcome.streams += 1;
            }
        }
    }
    if let Some(d) = &detector {
        for (source_stream, e) in ending.iter_mut().rev() {
            e.deletes(d, source_stream, &mut em)?;
        }
        for (_, e) in ending {
            outcome.rows += e.end(&mut em)?;
            outcome.streams += 1;
        }
    }
    em.end_ok(&outcome)?;
    tracing::info!(
        streams = outcome.streams,
        rows = outcome.rows,
        rows_per_s = progress.rate(outcome.rows),
        "export complete"
    );
    Ok(outcome)
}

/// A stream's plan narrowed to a shard's part of its table: its range ANDed into the filter. The
/// SCHEMA stays the whole table's, so every shard's is the same; its row estimate is dropped
/// (ranges are not equal in rows, and a wrong estimate makes a wrong time left).
fn narrow_to_shard(source: &mut dyn connect::Source, plan: &mut connect::StreamPlan, shard: Shard) -> Result<()> {
    let (range, condition) = source.shard_range(plan, shard)?;
    tracing::info!(stream = %plan.schema.stream, shard = %shard, range = %range.to_json(), "this shard's part");
    if let Some(c) = condition {
        plan.filter = Some(match plan.filter.take() {
            Some(f) => format!("({f}) AND ({c})"),
            None => c,
        });
        plan.schema.row_estimate = None;
    }
    Ok(())
}

/// The tables to export: the selection, or for an entity export the rows its roots pick out.
fn selection(source: &mut dyn connect::Source, cfg: &ExportConfig) -> Result<Selection> {
    if cfg.roots.is_empty() {
        return Ok(cfg.selection.clone());
    }
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
    Ok(subset)
}

/// The progress of the whole export, as one stream's rows add to it.
struct Counting<'p> {
    progress: &'p mut Progress,
    /// Rows of the streams before this one.
    done: u64,
    expected: Option<u64>,
}

/// Where a stream's export stands: the last row's key values (at their columns' positions) and
/// rowid, what its bookmark says.
struct Cursor {
    last_row: Vec<Value>,
    last_rowid: Option<i64>,
    moved: bool,
    /// Rows a resumed run had already exported before this one.
    base: u64,
}

impl Cursor {
    /// At the start of a stream, or where a resumed run's bookmark left it (until a row moves it).
    fn resumed(shape: &RowShape, prior: Option<&Bookmark>) -> Cursor {
        let mut c = Cursor {
            last_row: vec![Value::Null; shape.len()],
            last_rowid: None,
            moved: false,
            base: prior.and_then(|b| b.rows).unwrap_or(0),
        };
        if let Some(b) = prior.filter(|b| b.after.is_some() || b.rowid.is_some()) {
            c.last_rowid = b.rowid;
            for &i in &shape.key {
                if let Some(v) = b.after.as_ref().and_then(|a| a.get(&shape.columns[i].name)) {
                    c.last_row[i] = value::decode_json(v, shape.columns[i].codec).unwrap_or(Value::Null);
                    c.moved = true;
                }
            }
        }
        c
    }

    fn advance(&mut self, shape: &RowShape, row: &dyn RowAccess) {
        for &i in &shape.key {
            self.last_row[i] = row.get(i).to_owned();
        }
        self.last_rowid = row.rowid();
        self.moved = true;
    }

    /// The stream's bookmark after `rows` rows of this run.
    fn bookmark(&self, shape: &RowShape, rows: u64, complete: bool) -> Json {
        let after = match shape.key_json(|i| self.last_row[i].as_ref()) {
            Json::Object(m) if self.moved && !shape.key.is_empty() => Some(m),
            _ => None,
        };
        let b = Bookmark {
            after,
            rowid: self.last_rowid,
            rows: Some(self.base + rows),
            complete,
            extra: Map::new(),
        };
        serde_json::to_value(b).unwrap_or(Json::Null)
    }
}

/// The name a table's stream goes by: ferry's `schema.table`, or for Singer targets the table's
/// name, with its schema in front (`public-orders`, how Singer SDK targets tell a schema apart)
/// where the source has schemas.
fn stream_name(plan: &connect::StreamPlan, singer: bool) -> String {
    match (&plan.schema.table, singer) {
        (Some(t), true) => match t.schema.as_deref() {
            None | Some("main") => t.name.clone(),
            Some(s) => format!("{s}-{}", t.name),
        },
        _ => plan.schema.stream.clone(),
    }
}

/// A SCHEMA as Singer targets read it: under its Singer name, each date and time column with
/// the JSON Schema `format` that makes a target give it a date or time type.
fn singer_schema(schema: &Schema, stream: &str) -> Schema {
    let mut out = schema.clone();
    out.stream = stream.to_owned();
    let typing = PgTyping {
        from_postgres: dialect::dialect_of(schema) == "postgres",
        naive_utc: false,
    };
    for prop in out.schema.properties.values_mut() {
        let t = dialect::pg_type_for(prop, typing);
        let format = match t.as_str() {
            _ if t.ends_with("[]") => continue,
            _ if t.starts_with("timestamp") => "date-time",
            "date" => "date",
            _ if t.starts_with("time") => "time",
            _ => continue,
        };
        if let Some(p) = prop.as_object_mut() {
            p.entry("format").or_insert_with(|| Json::from(format));
        }
    }
    out
}

/// A stream whose rows are out and whose end is still to come: what its end says.
struct Exported {
    stream: String,
    shape: RowShape,
    digest: StreamDigest,
    rows: u64,
    cursor: Cursor,
    /// Its watermark, copied out at the end of its rows.
    wm: Option<Watermark>,
}

impl Exported {
    /// With `--detect-deletes`: a delete for each row the target holds and the source no longer
    /// does (after every stream's upserts, children first: see `run`).
    fn deletes<W: Write>(&mut self, d: &Detector, source_stream: &str, em: &mut Emitter<'_, W>) -> Result<()> {
        if self.shape.key.is_empty() {
            return Ok(());
        }
        let mut prefix = Vec::from(&br#"{"type":"RECORD","stream":"#[..]);
        value::write_str(&self.stream, &mut prefix);
        prefix.extend_from_slice(br#","op":"delete","record":"#);
        let key: Vec<String> = self.shape.key_names().into_iter().map(str::to_owned).collect();
        let mut full = vec![Value::Null; self.shape.len()];
        let Exported {
            shape, digest, rows, ..
        } = self;
        let found = d.deleted(source_stream, &key, &mut |k| {
            for (&c, v) in shape.key.iter().zip(k) {
                full[c] = v;
            }
            em.record(&prefix, |line| {
                shape.write_columns(&shape.key, |c| full[c].as_ref(), line)
            })?;
            digest.add_delete(shape, &full);
            *rows += 1;
            Ok(())
        })?;
        tracing::info!(stream = %self.stream, deleted = found, "rows the target holds and the source no longer does: sent as deletes");
        Ok(())
    }

    /// The stream's complete bookmark, its STATE and its STREAM_END. The rows it exported.
    fn end<W: Write>(mut self, em: &mut Emitter<'_, W>) -> Result<u64> {
        let mut bookmark = self.cursor.bookmark(&self.shape, self.rows, true);
        if let Some(w) = &self.wm {
            w.mark(&self.shape, &mut bookmark, true);
        }
        em.bookmarks.insert(self.stream.clone(), bookmark);
        em.state()?;
        let end = StreamEnd::complete_rows(&self.stream, self.rows, self.digest.take_hex());
        em.message(&Message::StreamEnd(end))?;
        tracing::debug!(stream = %self.stream, rows = self.rows, after = self.cursor.base, "stream exported");
        Ok(self.rows)
    }
}

/// One stream's SCHEMA and its rows from where `prior` left it, a STATE every `state_every` rows
/// or `state_interval`; its end is [`Exported::end`].
fn export_rows<W: Write>(
    source: &mut dyn connect::Source,
    plan: &connect::StreamPlan,
    prior: Option<&Bookmark>,
    mut wm: Option<&mut Watermark>,
    cfg: &ExportConfig,
    em: &mut Emitter<'_, W>,
    counting: &mut Counting<'_>,
) -> Result<Exported> {
    let stream = stream_name(plan, cfg.singer);
    let after = prior.filter(|b| b.after.is_some() || b.rowid.is_some());
    let shape = RowShape::from_schema(&plan.schema)?;
    let schema = match cfg.singer {
        true => singer_schema(&plan.schema, &stream),
        false => plan.schema.clone(),
    };
    em.message(&Message::Schema(Box::new(schema)))?;

    let mut prefix = Vec::from(&br#"{"type":"RECORD","stream":"#[..]);
    value::write_str(&stream, &mut prefix);
    if plan.schema.changes {
        prefix.extend_from_slice(br#","op":"upsert""#);
    }
    prefix.extend_from_slice(br#","record":"#);

    let mut digest = StreamDigest::default();
    let mut rows: u64 = 0;
    let mut since_state: u64 = 0;
    let mut last_state = Instant::now();
    let mut cursor = Cursor::resumed(&shape, prior);
    source.scan(plan, &shape, after, &mut |row: &dyn RowAccess| {
        em.record(&prefix, |line| shape.encode_record(|i| row.get(i), line))?;
        digest.add(&shape, |i| row.get(i));
        cursor.advance(&shape, row);
        if let Some(w) = wm.as_deref_mut() {
            w.see(row.get(w.index()));
        }
        rows += 1;
        since_state += 1;
        if since_state >= cfg.state_every || (rows.is_multiple_of(256) && last_state.elapsed() >= cfg.state_interval) {
            let mut bookmark = cursor.bookmark(&shape, rows, false);
            if let Some(w) = wm.as_deref() {
                w.mark(&shape, &mut bookmark, false);
            }
            em.bookmarks.insert(stream.clone(), bookmark);
            em.state()?;
            since_state = 0;
            last_state = Instant::now();
        }
        let all = counting.done + rows;
        if rows.is_multiple_of(1024)
            && !counting.progress.bar("exporting", all, counting.expected, Unit::Rows)
            && counting.progress.due()
        {
            tracing::info!(stream = %stream, rows = cursor.base + rows, rows_per_s = counting.progress.rate(all), "exporting");
        }
        Ok(())
    })?;
    Ok(Exported {
        stream,
        shape,
        digest,
        rows,
        cursor,
        wm: wm.map(|w| w.clone()),
    })
}
