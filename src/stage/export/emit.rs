//! The stream an export writes, table or file: BEGIN (a new run, or the resumed one), then
//! messages and STATEs with the bookmarks so far.

use std::io::Write;

use serde_json::{Map, Value as Json};

use super::ExportConfig;
use crate::checkpoint::Checkpoint;
use crate::error::{Context, Error, ErrorKind, Result};
use crate::protocol::{
    Begin, Bookmark, Kind, Message, PROTOCOL, SourceInfo, State, StateValue, StreamWriter, new_run_id, now_rfc3339,
    producer,
};

/// The stream an export writes: messages (filtered for Singer), STATEs with the bookmarks so far.
pub(crate) struct Emitter<'w, W: Write> {
    pub(crate) out: &'w mut StreamWriter<W>,
    pub(crate) singer: bool,
    pub(crate) run_id: String,
    seq: u64,
    pub(crate) bookmarks: Map<String, Json>,
    line: Vec<u8>,
}

/// Start an export's stream: a new run, or with `--resume` the last import run from this source,
/// continuing after its last acknowledged STATE, or with `--state-json` after the bookmarks of a
/// Singer state (the streams it has complete start again: a Singer full-table sync). Writes BEGIN.
pub(crate) fn begin<'w, W: Write>(
    cfg: &ExportConfig,
    info: &SourceInfo,
    out: &'w mut StreamWriter<W>,
) -> Result<Emitter<'w, W>> {
    let mut run_id = new_run_id();
    let mut resumed: Option<StateValue> = None;
    if cfg.resume {
        let cp = Checkpoint::open_existing(&cfg.state_path)?;
        let mut point = cp
            .as_ref()
            .map(|cp| cp.resume_point(&info.identity()))
            .transpose()?
            .flatten();
        // What a rolled-back run brought is gone: going on after it would bring nothing back.
        if let (Some(cp), Some(p)) = (&cp, &point)
            && cp.undone(&p.run_id)?.is_some()
        {
            tracing::info!(run = %p.run_id, "--resume: the last run from this source was rolled back; starting from the beginning");
            point = None;
        } else if point.is_none() {
            tracing::warn!(
                source = %info.address,
                state = %cfg.state_path.display(),
                "--resume: no earlier import from this source in the state file; starting from the beginning"
            );
        }
        if let Some(p) = point {
            tracing::info!(run = %p.run_id, status = %p.status, "resuming run");
            run_id = p.run_id;
            resumed = p.state;
        }
    }
    if let Some(path) = &cfg.state_json {
        resumed = Some(singer_state(path)?);
    }
    let mut em = Emitter {
        out,
        singer: cfg.singer,
        run_id: run_id.clone(),
        seq: resumed.as_ref().map_or(0, |s| s.seq + 1),
        bookmarks: resumed.map(|s| s.bookmarks).unwrap_or_default(),
        line: Vec::with_capacity(4096),
    };
    em.message(&Message::Begin(Begin {
        protocol: PROTOCOL.into(),
        run_id,
        producer: Some(producer("ferry-export")),
        source: Some(info.clone()),
        started_at: Some(now_rfc3339()),
        extra: Map::new(),
    }))?;
    Ok(em)
}

/// The bookmarks of a Singer state file to go on from: its unfinished streams' (a complete
/// stream's bookmark is dropped, so it is read again in full).
fn singer_state(path: &std::path::Path) -> Result<StateValue> {
    let what = || format!("reading the Singer state {}", path.display());
    let text = std::fs::read_to_string(path).ctx(ErrorKind::Usage, what)?;
    // A file of several states (a target's whole output): the last is the one that counts.
    let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    let mut value: Json = serde_json::from_str(&text)
        .or_else(|_| serde_json::from_str(last))
        .ctx(ErrorKind::Usage, what)?;
    if let Some(inner) = value.get_mut("singer_state") {
        value = inner.take();
    }
    let Some(bookmarks) = value.get("bookmarks").and_then(Json::as_object) else {
        return Err(Error::usage(format!(
            "{}: a Singer state has a \"bookmarks\" object (the last STATE value a target printed); this has none",
            path.display()
        )));
    };
    let mut kept = Map::new();
    for (stream, b) in bookmarks {
        match serde_json::from_value::<Bookmark>(b.clone()) {
            Ok(mark) if mark.complete => {
                tracing::info!(stream = %stream, "complete in the Singer state: read again in full")
            }
            Ok(mark) if mark.after.is_none() && mark.rowid.is_none() => {
                tracing::warn!(stream = %stream, bookmark = %b, "the Singer state's bookmark is not a position ferry-export wrote (no \"after\"): read in full")
            }
            Ok(_) => {
                tracing::info!(stream = %stream, bookmark = %b, "going on after the Singer state's bookmark");
                kept.insert(stream.clone(), b.clone());
            }
            Err(e) => {
                return Err(Error::usage(format!(
                    "{}: the bookmark of stream {stream} is not one ferry-export wrote ({e}): {b}",
                    path.display()
                )));
            }
        }
    }
    Ok(StateValue {
        run_id: new_run_id(),
        seq: 0,
        bookmarks: kept,
        extra: Map::new(),
    })
}

impl<W: Write> Emitter<'_, W> {
    pub(crate) fn message(&mut self, m: &Message) -> Result<()> {
        if self.singer && !matches!(m.kind(), Kind::Schema | Kind::Record | Kind::State) {
            tracing::info!(message = %serde_json::to_string(m).unwrap_or_default(), "not sent in Singer mode");
            return Ok(());
        }
        self.out.write_message(m)
    }

    /// A RECORD line: `prefix` (up to the record's opening brace), what `encode` writes, `}`.
    /// The line's buffer is reused, so a row costs no allocation.
    pub(crate) fn record(&mut self, prefix: &[u8], encode: impl FnOnce(&mut Vec<u8>)) -> Result<()> {
        self.line.clear();
        self.line.extend_from_slice(prefix);
        encode(&mut self.line);
        self.line.push(b'}');
        self.out.write_line(&self.line, Kind::Record)
    }

    /// END with status ok and the export's counts, then everything flushed.
    pub(crate) fn end_ok(&mut self, outcome: &super::ExportOutcome) -> Result<()> {
        self.message(&Message::End(crate::protocol::End {
            run_id: outcome.run_id.clone(),
            status: "ok".into(),
            streams: Some(outcome.streams),
            rows: Some(outcome.rows),
            files: None,
            bytes: None,
            errors: None,
            rejected: None,
            skipped: None,
            finished_at: Some(crate::protocol::now_rfc3339()),
            extra: Map::new(),
        }))?;
        self.out.flush()
    }

    pub(crate) fn state(&mut self) -> Result<()> {
        let value = StateValue {
            run_id: self.run_id.clone(),
            seq: self.seq,
            bookmarks: self.bookmarks.clone(),
            extra: Map::new(),
        };
        self.seq += 1;
        let value = serde_json::to_value(value).unwrap_or(Json::Null);
        self.message(&Message::State(State { value }))
    }
}
