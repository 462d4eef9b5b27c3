//! D1 as a target: rows packed into multi-row INSERTs, many statements per request, each
//! request one transaction with the commit markers and the rollback journal; the one-writer lock.
//!
//! One concern, kept whole (over 800 lines): writing into D1 within its request, statement and
//! value limits.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value as Json;

use super::client::{D1Client, Sent, Stmt};
use super::literals::{bound, literal, literal_tuple, sql_text};
use super::{MAX_COLUMNS, STATEMENT_TARGET};
use crate::connect::sql::{conflict_clause, quote};
use crate::connect::sqlite::ddl::{MARKER_DDL, create_table_sql, index_sql};
use crate::connect::{
    CommitEvery, LoadOptions, Marker, OnConflict, PlanCounts, Prepared, Reject, Report, RowBatch, Target,
    table_name_for,
};
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{Schema, now_rfc3339};
use crate::row::RowShape;

struct D1Stream {
    table: String,
    /// `INSERT INTO "t" ("a", "b") VALUES `.
    head: String,
    conflict: String,
    /// Key column names (a refused row naming them all is a key conflict).
    keys: Vec<String>,
    bookmark: String,
    source: String,
    run_id: String,
    on_conflict: OnConflict,
    /// The table was there before this run (a dry run of `--create` leaves it absent).
    existed: bool,
    /// The run's rollback journal of an existing table, kept in the database.
    undo: Option<Undo>,
}

/// What journals a request's rows of one stream, in the same request, before they are written:
/// the keys they insert and (overwriting) the rows they replace, into the run's undo table.
struct Undo {
    /// The undo table, quoted.
    table: String,
    /// Positions of the key columns in the stream's rows, and their quoted names.
    key_at: Vec<usize>,
    keys: Vec<String>,
    /// Every column, quoted and joined.
    cols: String,
    before: bool,
    /// The last request's number in this run (a resumed run goes on from the table's largest).
    seq: u64,
}

/// Rows waiting to be sent: one statement's worth.
struct Piece {
    stream: Arc<str>,
    stmt: Stmt,
    batch: Arc<RowBatch>,
    rows: std::ops::Range<usize>,
    /// A change stream's deletes of these rows' keys, not inserts.
    delete: bool,
}

/// Rows' tuples packed into statements (`head`, the tuples joined by commas, `tail`) of at most
/// `limit` bytes; each statement goes to `done` with the rows it carries.
struct Packing<'a> {
    head: &'a str,
    tail: &'a str,
    limit: usize,
    sql: String,
    /// The first row of the statement being packed.
    first: usize,
}

impl<'a> Packing<'a> {
    fn new(head: &'a str, tail: &'a str, limit: usize, first: usize) -> Packing<'a> {
        Packing {
            head,
            tail,
            limit,
            sql: String::new(),
            first,
        }
    }

    /// Row `r`'s tuple, in the statement being packed or (too long with it) in the next.
    fn push(&mut self, r: usize, tuple: &str, done: &mut dyn FnMut(String, std::ops::Range<usize>)) {
        if !self.sql.is_empty() && self.sql.len() + 2 + tuple.len() + self.tail.len() > self.limit {
            self.close(r, done);
            self.first = r;
        }
        if self.sql.is_empty() {
            self.sql.push_str(self.head);
        } else {
            self.sql.push_str(", ");
        }
        self.sql.push_str(tuple);
    }

    /// Row `r` goes elsewhere (refused, or alone): the statement so far ends before it.
    fn skip(&mut self, r: usize, done: &mut dyn FnMut(String, std::ops::Range<usize>)) {
        self.close(r, done);
        self.first = r + 1;
    }

    /// The statement packed so far, ending before row `end`.
    fn close(&mut self, end: usize, done: &mut dyn FnMut(String, std::ops::Range<usize>)) {
        if end > self.first && !self.sql.is_empty() {
            self.sql.push_str(self.tail);
            done(std::mem::take(&mut self.sql), self.first..end);
        }
        self.sql.clear();
    }
}

pub(crate) struct D1Target {
    client: D1Client,
    /// This process's hold on the database (none for a dry run): released when dropped.
    lock: Option<String>,
    dry_run: bool,
    streams: HashMap<String, D1Stream>,
    pending: Vec<Piece>,
    pending_bytes: usize,
    request_bytes: usize,
    reports: HashMap<String, Report>,
    marker_table: bool,
    shapes: HashMap<String, RowShape>,
    /// Rows sent in requests that committed, and the progress line's clock.
    rows_sent: u64,
    progress: crate::human::Progress,
}

/// How long a hold on a D1 database lasts unless renewed (every request renews it). D1 keeps no
/// session to end with a process: a holder killed on another machine is let go after this.
const LOCK_SECONDS: u32 = 900;

/// Take this process's hold on a D1 database (one writer at a time: an import or a rollback),
/// in a row of `_ferry_lock`; its token. Refused, naming the holder, while another process holds
/// it; taken over when the holder is gone (its time is up, or it was a process of this machine
/// that is no more).
pub(crate) fn take_lock(client: &mut D1Client) -> Result<String> {
    let me = crate::lock::Holder::this_process();
    let token = format!("{} {} {}", me.host, me.pid, me.since);
    let read = "SELECT token, holder, host, pid, expires, unixepoch() AS now FROM _ferry_lock WHERE name = 'writer'";
    // Read first, writing only what must be written: a request that changes nothing can be
    // sent again freely.
    let there = client.rows(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_ferry_lock'",
        &[],
    )?;
    if there.is_empty() {
        client.exec(&[Stmt::plain(
            "CREATE TABLE IF NOT EXISTS _ferry_lock (name TEXT PRIMARY KEY, token TEXT NOT NULL, holder TEXT NOT NULL,
             host TEXT NOT NULL, pid INTEGER NOT NULL, expires INTEGER NOT NULL)",
        )])?;
    }
    let held = client.exec(&[Stmt::plain(read)])?;
    let row = |results: &[Json], at: usize| results.get(at).and_then(|r| r.pointer("/results/0")).cloned();
    let was = row(&held, 0);
    if let Some(w) = &was {
        let (host, pid) = (w["host"].as_str().unwrap_or(""), w["pid"].as_u64().unwrap_or(0) as u32);
        let expired = w["expires"].as_i64() < w["now"].as_i64();
        let gone = host == me.host && !crate::lock::alive(pid);
        if !expired && !gone {
            return Err(crate::lock::busy(
                &client.address,
                &format!(
                    "{} (held until it ends, or {} s after its last request)",
                    w["holder"].as_str().unwrap_or("?"),
                    LOCK_SECONDS
                ),
            ));
        }
    }
    // Taken only if it is still as it was read: of two takers, one wins.
    let was_token = was.as_ref().and_then(|w| w["token"].as_str()).map(str::to_owned);
    let take = Stmt {
        sql: format!(
            "INSERT INTO _ferry_lock (name, token, holder, host, pid, expires)
             VALUES ('writer', ?1, ?2, ?3, CAST(?4 AS INTEGER), unixepoch() + {LOCK_SECONDS})
             ON CONFLICT (name) DO UPDATE SET token = excluded.token, holder = excluded.holder,
                 host = excluded.host, pid = excluded.pid, expires = excluded.expires
             WHERE _ferry_lock.token IS ?5"
        ),
        params: vec![
            Some(token.clone()),
            Some(me.describe()),
            Some(me.host.clone()),
            Some(me.pid.to_string()),
            was_token,
        ],
    };
    // An answer lost on the way back: whether it was taken says whether to send it again.
    let probe = format!(
        "SELECT 1 FROM _ferry_lock WHERE name = 'writer' AND token = {}",
        sql_text(&token)
    );
    client.exec_probed(&[take], Some(&probe))?;
    let now = client.exec(&[Stmt::plain(read)])?;
    match row(&now, 0) {
        Some(r) if r["token"].as_str() == Some(token.as_str()) => Ok(token),
        Some(r) => Err(crate::lock::busy(&client.address, r["holder"].as_str().unwrap_or("?"))),
        None => Err(Error::new(
            ErrorKind::Target,
            format!("{}: the lock row went away as it was taken", client.address),
        )),
    }
}

/// Keep this process's hold (its token) for another while: a statement in every request.
pub(crate) fn renew_lock(token: &str) -> Stmt {
    Stmt {
        sql: format!(
            "UPDATE _ferry_lock SET expires = unixepoch() + {LOCK_SECONDS} WHERE name = 'writer' AND token = ?1"
        ),
        params: vec![Some(token.to_owned())],
    }
}

/// Let go of this process's hold (best effort: it expires anyway).
pub(crate) fn release_lock(client: &mut D1Client, token: &str) {
    let stmt = Stmt {
        sql: "DELETE FROM _ferry_lock WHERE name = 'writer' AND token = ?1".into(),
        params: vec![Some(token.to_owned())],
    };
    if let Err(e) = client.exec(&[stmt]) {
        tracing::debug!(error = %e, "could not release the lock on the D1 database; it expires by itself");
    }
}

impl Drop for D1Target {
    fn drop(&mut self) {
        if let Some(token) = self.lock.take() {
            release_lock(&mut self.client, &token);
        }
    }
}

fn marker_stmt(m: &Marker) -> Stmt {
    Stmt {
        sql: "INSERT INTO _ferry_commits (source, stream, run_id, position, complete, bookmark, updated_at)
              VALUES (?1, ?2, ?3, CAST(?4 AS INTEGER), CAST(?5 AS INTEGER), ?6, ?7)
              ON CONFLICT (source, stream) DO UPDATE SET run_id = excluded.run_id,
                  position = max(coalesce(position, 0), coalesce(excluded.position, 0)),
                  complete = max(complete, excluded.complete),
                  bookmark = coalesce(excluded.bookmark, bookmark), updated_at = excluded.updated_at"
            .into(),
        params: vec![
            Some(m.source.clone()),
            Some(m.stream.clone()),
            Some(m.run_id.clone()),
            m.position.map(|p| p.to_string()),
            Some(u8::from(m.complete).to_string()),
            m.bookmark.clone(),
            Some(now_rfc3339()),
        ],
    }
}

/// Whether a refusal is about rows (isolate them) rather than the statement or the table.
fn about_rows(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "constraint failed",
        "too big",
        "datatype mismatch",
        "sqlite_constraint",
        "sqlite_toobig",
        "sqlite_mismatch",
    ]
    .iter()
    .any(|s| m.contains(s))
}

impl D1Target {
    /// Carry an AUTOINCREMENT table's counter: set to the last number the source's counter handed out,
    /// or moved forward to it (never back), so the application is not given a number again. One
    /// D1 refuses (it guards its own tables) is a warning with the statement to run.
    fn counter_past(&mut self, schema: &Schema, table: &str) -> Result<()> {
        let Some(sq) = schema.sqlite.as_ref().filter(|s| s.autoincrement) else {
            return Ok(());
        };
        let Some(seq) = sq.sequence else { return Ok(()) };
        let name = sql_text(table);
        let sqls = [
            format!(
                "INSERT INTO sqlite_sequence (name, seq) SELECT {name}, {seq} WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = {name})"
            ),
            format!("UPDATE sqlite_sequence SET seq = {seq} WHERE name = {name} AND seq < {seq}"),
        ];
        if let Err(m) = self.client.try_raw(&sqls)?
            && !m.contains("no such table: sqlite_sequence")
        {
            tracing::warn!(
                table,
                "the AUTOINCREMENT counter was not carried ({m}); the application may be given numbers the source gave out: run {}",
                sqls.join("; ")
            );
        }
        Ok(())
    }
    pub(crate) fn open(url: &str, dry_run: bool) -> Result<D1Target> {
        let request_bytes = crate::tuning::Tuning::get().d1_request_bytes;
        let mut client = D1Client::open(url, ErrorKind::Target)?;
        let lock = match dry_run {
            true => None,
            false => Some(take_lock(&mut client)?),
        };
        Ok(D1Target {
            client,
            lock,
            dry_run,
            streams: HashMap::new(),
            pending: Vec::new(),
            pending_bytes: 0,
            request_bytes,
            reports: HashMap::new(),
            marker_table: false,
            shapes: HashMap::new(),
            rows_sent: 0,
            progress: crate::human::Progress::new(),
        })
    }

    /// Create the run's undo table for an existing table (its columns, no constraint: a key's
    /// row holds nulls elsewhere).
    fn undo_for(&mut self, shape: &RowShape, opts: &LoadOptions, table: &str) -> Result<Undo> {
        let name = quote(&crate::connect::undo_table_name(&opts.run_id, &quote(table)));
        let cols: Vec<String> = shape.columns.iter().map(|c| quote(&c.name)).collect();
        let cols = cols.join(", ");
        self.client.exec(&[Stmt::plain(format!(
            "CREATE TABLE IF NOT EXISTS {name} AS SELECT 0 AS _ferry_seq, 0 AS _ferry_inserted, {cols} FROM {} WHERE 0",
            quote(table)
        ))])?;
        let seq = self
            .client
            .rows(&format!("SELECT coalesce(max(_ferry_seq), 0) AS s FROM {name}"), &[])?
            .first()
            .and_then(|r| r["s"].as_u64())
            .unwrap_or(0);
        Ok(Undo {
            table: name,
            key_at: shape.key.clone(),
            keys: shape.key.iter().map(|&i| quote(&shape.columns[i].name)).collect(),
            cols,
            before: opts.on_conflict == OnConflict::Overwrite,
            seq,
        })
    }

    fn table_exists(&mut self, table: &str) -> Result<bool> {
        Ok(!self
            .client
            .rows(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?1",
                &[table],
            )?
            .is_empty())
    }

    fn report(&mut self, stream: &str) -> &mut Report {
        self.reports.entry(stream.to_owned()).or_insert_with(|| Report {
            stream: stream.to_owned(),
            ..Default::default()
        })
    }

    /// Statements for rows `rows` of a batch, packed under the statement limit; rows D1 cannot
    /// hold are rejected here.
    fn pieces(&mut self, stream: &Arc<str>, batch: &Arc<RowBatch>, rows: std::ops::Range<usize>) -> Vec<Piece> {
        let Some(ts) = self.streams.get(&**stream) else {
            return vec![];
        };
        let (head, conflict) = (ts.head.clone(), ts.conflict.clone());
        let mut pack = Packing::new(&head, &conflict, STATEMENT_TARGET.min(self.request_bytes), rows.start);
        let mut out: Vec<Piece> = Vec::new();
        let mut rejects = Vec::new();
        // In row order, packed or alone.
        let mut piece = |stmt: Stmt, rows: std::ops::Range<usize>| {
            out.push(Piece {
                stream: Arc::clone(stream),
                stmt,
                batch: Arc::clone(batch),
                rows,
                delete: false,
            })
        };
        let shape = self.shapes.get(&**stream);
        for r in rows.clone() {
            let mut tuple = String::new();
            if let Err(why) = literal_tuple(batch.row(r).iter(), &mut tuple) {
                pack.skip(r, &mut |sql, rows| piece(Stmt::plain(sql), rows));
                if let Some(shape) = shape {
                    rejects.push(Reject::of(shape, batch, r, why));
                }
                continue;
            }
            if head.len() + tuple.len() + conflict.len() > STATEMENT_TARGET {
                // Too big to inline: alone, with its values bound.
                pack.skip(r, &mut |sql, rows| piece(Stmt::plain(sql), rows));
                let mut params = Vec::new();
                let marks: std::result::Result<Vec<String>, String> =
                    batch.row(r).iter().map(|v| bound(v, &mut params)).collect();
                match marks {
                    Ok(marks) => {
                        let sql = format!("{head}({}){conflict}", marks.join(", "));
                        piece(Stmt { sql, params }, r..r + 1);
                    }
                    Err(why) => {
                        if let Some(shape) = shape {
                            rejects.push(Reject::of(shape, batch, r, why));
                        }
                    }
                }
                continue;
            }
            pack.push(r, &tuple, &mut |sql, rows| piece(Stmt::plain(sql), rows));
        }
        pack.close(rows.end, &mut |sql, rows| piece(Stmt::plain(sql), rows));
        if !rejects.is_empty() {
            self.report(stream).rejects.extend(rejects);
        }
        out
    }

    /// Statements deleting the rows under the keys of rows `rows` of a batch (a change stream's
    /// deletes), packed under the statement limit; a key D1 cannot hold is refused here.
    fn delete_pieces(&mut self, stream: &Arc<str>, batch: &Arc<RowBatch>, rows: std::ops::Range<usize>) -> Vec<Piece> {
        let (Some(ts), Some(shape)) = (self.streams.get(&**stream), self.shapes.get(&**stream)) else {
            return vec![];
        };
        let keys: Vec<String> = ts.keys.iter().map(|k| quote(k)).collect();
        let head = format!(
            "DELETE FROM {} WHERE ({}) IN (VALUES ",
            quote(&ts.table),
            keys.join(", ")
        );
        let mut pack = Packing::new(&head, ")", STATEMENT_TARGET.min(self.request_bytes), rows.start);
        let (mut out, mut rejects) = (Vec::new(), Vec::new());
        let mut piece = |sql: String, rows: std::ops::Range<usize>| {
            out.push(Piece {
                stream: Arc::clone(stream),
                stmt: Stmt::plain(sql),
                batch: Arc::clone(batch),
                rows,
                delete: true,
            })
        };
        for r in rows.clone() {
            let mut tuple = String::new();
            match literal_tuple(shape.key.iter().map(|&i| &batch.row(r)[i]), &mut tuple) {
                Ok(()) => pack.push(r, &tuple, &mut piece),
                Err(why) => {
                    pack.skip(r, &mut piece);
                    rejects.push(Reject::of(shape, batch, r, why));
                }
            }
        }
        pack.close(rows.end, &mut piece);
        if !rejects.is_empty() {
            self.report(stream).rejects.extend(rejects);
        }
        out
    }

    /// The markers moving each stream's position to the end of what `pieces` carry.
    fn partial_markers(&self, pieces: &[Piece]) -> Vec<Marker> {
        let mut last: HashMap<&str, u64> = HashMap::new();
        for p in pieces {
            if let Some(first) = p.batch.first_position {
                let end = first + p.rows.end as u64;
                let e = last.entry(&*p.stream).or_insert(end);
                *e = (*e).max(end);
            }
        }
        last.into_iter()
            .filter_map(|(stream, position)| {
                let ts = self.streams.get(stream)?;
                Some(Marker {
                    source: ts.source.clone(),
                    stream: ts.bookmark.clone(),
                    run_id: ts.run_id.clone(),
                    position: Some(position),
                    complete: false,
                    bookmark: None,
                })
            })
            .collect()
    }

    /// The statements journaling the pieces' rows of the streams that keep an undo table.
    fn journal_stmts(&mut self, pieces: &[Piece]) -> Vec<Stmt> {
        let mut out = Vec::new();
        let mut numbered: Vec<&str> = Vec::new();
        for p in pieces {
            let Some(ts) = self.streams.get_mut(&*p.stream) else {
                continue;
            };
            let Some(u) = ts.undo.as_mut() else { continue };
            if !numbered.contains(&&*p.stream) {
                numbered.push(&p.stream);
                u.seq += 1;
            }
            let mut values = String::new();
            for r in p.rows.clone() {
                let row = p.batch.row(r);
                let mut tuple = String::new();
                if literal_tuple(u.key_at.iter().map(|&i| &row[i]), &mut tuple).is_ok() {
                    if !values.is_empty() {
                        values.push_str(", ");
                    }
                    values.push_str(&tuple);
                }
            }
            if values.is_empty() {
                continue;
            }
            let (undo, table, keys, seq) = (&u.table, quote(&ts.table), u.keys.join(", "), u.seq);
            let picked: Vec<String> = (1..=u.keys.len()).map(|n| format!("v.column{n}")).collect();
            let matched: Vec<String> = u
                .keys
                .iter()
                .zip(&picked)
                .map(|(k, v)| format!("t.{k} = {v}"))
                .collect();
            if !p.delete {
                out.push(Stmt::plain(format!(
                    "INSERT INTO {undo} (_ferry_seq, _ferry_inserted, {keys}) SELECT {seq}, 1, {} FROM (VALUES {values}) AS v \
                     WHERE NOT EXISTS (SELECT 1 FROM {table} AS t WHERE {})",
                    picked.join(", "),
                    matched.join(" AND ")
                )));
            }
            // A delete takes away the whole row: kept to put back, as an overwrite's.
            if u.before || p.delete {
                out.push(Stmt::plain(format!(
                    "INSERT INTO {undo} (_ferry_seq, _ferry_inserted, {cols}) SELECT {seq}, 0, {cols} FROM {table} \
                     WHERE ({keys}) IN (VALUES {values})",
                    cols = u.cols
                )));
            }
        }
        out
    }

    /// Send pieces as one request with their markers; on a refusal about rows, split until the
    /// refused rows are alone and reject them.
    fn send_pieces(&mut self, pieces: Vec<Piece>) -> Result<()> {
        if pieces.is_empty() {
            return Ok(());
        }
        let mut stmts = vec![Stmt::plain("PRAGMA defer_foreign_keys = on")];
        stmts.extend(self.lock.as_deref().map(renew_lock));
        if !self.marker_table {
            stmts.push(Stmt::plain(MARKER_DDL));
        }
        // The journal reads the tables as they are before any row of the request is written.
        stmts.extend(self.journal_stmts(&pieces));
        let rows_from = stmts.len();
        stmts.extend(pieces.iter().map(|p| p.stmt.clone()));
        let markers = self.partial_markers(&pieces);
        stmts.extend(markers.iter().map(marker_stmt));
        // The request is there when every marker it moves has reached its position.
        let probe = (!markers.is_empty()).then(|| {
            let each: Vec<String> = markers
                .iter()
                .map(|m| {
                    format!(
                        "(source = {} AND stream = {} AND run_id = {} AND position >= {})",
                        sql_text(&m.source),
                        sql_text(&m.stream),
                        sql_text(&m.run_id),
                        m.position.unwrap_or(0)
                    )
                })
                .collect();
            format!(
                "SELECT count(*) = {} FROM _ferry_commits WHERE {}",
                markers.len(),
                each.join(" OR ")
            )
        });
        match self.client.send_probed(&stmts, "query", probe.as_deref())? {
            Sent::Ok(results) => {
                self.marker_table = true;
                for (i, p) in pieces.iter().enumerate() {
                    let changes = results
                        .get(rows_from + i)
                        .and_then(|r| r["meta"]["changes"].as_u64())
                        .unwrap_or(p.rows.len() as u64)
                        .min(p.rows.len() as u64);
                    let r = self.report(&p.stream);
                    if p.delete {
                        // Applied, whether their rows were there or already gone.
                        r.deleted += p.rows.len() as u64;
                    } else {
                        r.written += changes;
                        r.skipped += p.rows.len() as u64 - changes;
                    }
                    self.rows_sent += p.rows.len() as u64;
                }
                Ok(())
            }
            Sent::Refused(m) if !about_rows(&m) => Err(Error::new(
                ErrorKind::Target,
                format!(
                    "{}: stream {}: the database refused the rows: {m}",
                    self.client.address(),
                    pieces[0].stream
                ),
            )),
            Sent::Refused(m) => {
                if pieces.len() > 1 {
                    let mut a = pieces;
                    let b = a.split_off(a.len() / 2);
                    self.send_pieces(a)?;
                    return self.send_pieces(b);
                }
                let Some(p) = pieces.into_iter().next() else {
                    return Ok(());
                };
                if p.rows.len() > 1 {
                    // One statement per row, then the same halving.
                    let singles: Vec<Piece> = p
                        .rows
                        .clone()
                        .flat_map(|r| {
                            let stream = Arc::clone(&p.stream);
                            let batch = Arc::clone(&p.batch);
                            match p.delete {
                                true => self.delete_pieces(&stream, &batch, r..r + 1),
                                false => self.pieces(&stream, &batch, r..r + 1),
                            }
                        })
                        .collect();
                    return self.send_pieces(singles);
                }
                let ts = self
                    .streams
                    .get(&*p.stream)
                    .ok_or_else(|| Error::new(ErrorKind::Target, format!("stream {} was not prepared", p.stream)))?;
                let is_key = ts.on_conflict == OnConflict::Fail
                    && m.contains("UNIQUE constraint failed")
                    && !ts.keys.is_empty()
                    && ts.keys.iter().all(|k| m.contains(&format!("{}.{k}", ts.table)));
                let Some(shape) = self.shapes.get(&*p.stream) else {
                    return Ok(());
                };
                if is_key {
                    return Err(crate::connect::key_conflict(
                        shape,
                        &p.batch,
                        p.rows.start,
                        &ts.table,
                        None,
                    ));
                }
                let reject = Reject::of(shape, &p.batch, p.rows.start, m);
                // Its position is passed: the next request (or the commit) moves the marker on.
                self.report(&p.stream).rejects.push(reject);
                Ok(())
            }
        }
    }

    /// Send whole requests while enough is pending (`all`: everything).
    fn drain(&mut self, all: bool) -> Result<()> {
        while !self.pending.is_empty() && (all || self.pending_bytes >= self.request_bytes) {
            let mut take = 0;
            let mut bytes = 0;
            while take < self.pending.len()
                && (take == 0 || bytes + self.pending[take].stmt.bytes() <= self.request_bytes)
            {
                bytes += self.pending[take].stmt.bytes();
                take += 1;
            }
            let rest = self.pending.split_off(take);
            let now = std::mem::replace(&mut self.pending, rest);
            self.pending_bytes -= bytes;
            self.send_pieces(now)?;
            if self.progress.due() {
                let (used, limit) = self.client.budget();
                tracing::info!(
                    requests = self.client.requests,
                    rows = self.rows_sent,
                    rows_per_s = self.progress.rate(self.rows_sent),
                    budget = %format!("{used}/{limit} requests in the rate window"),
                    "sending to D1"
                );
            }
        }
        Ok(())
    }

    /// A batch's statements (its rows' inserts, or with `delete` its keys' deletes) queued for
    /// the next requests, and whole requests sent; what came back so far.
    fn queue(&mut self, stream: &str, batch: RowBatch, delete: bool) -> Result<Vec<Report>> {
        let n = batch.len();
        let name: Arc<str> = Arc::from(stream);
        let batch = Arc::new(batch);
        let pieces = match delete {
            true => self.delete_pieces(&name, &batch, 0..n),
            false => self.pieces(&name, &batch, 0..n),
        };
        self.pending_bytes += pieces.iter().map(|p| p.stmt.bytes()).sum::<usize>();
        self.pending.extend(pieces);
        self.drain(false)?;
        Ok(self.take_reports())
    }

    fn take_reports(&mut self) -> Vec<Report> {
        self.reports.drain().map(|(_, r)| r).collect()
    }
}

impl Target for D1Target {
    fn address(&self) -> String {
        self.client.address().to_owned()
    }

    fn markers(&mut self, source: &str) -> Result<HashMap<String, Marker>> {
        if !self.table_exists("_ferry_commits")? {
            return Ok(HashMap::new());
        }
        self.marker_table = true;
        let rows = self.client.rows(
            "SELECT stream, run_id, CAST(position AS TEXT) AS position, complete, bookmark FROM _ferry_commits WHERE source = ?1",
            &[source],
        )?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let m = Marker {
                    source: source.to_owned(),
                    stream: r["stream"].as_str().unwrap_or_default().to_owned(),
                    run_id: r["run_id"].as_str().unwrap_or_default().to_owned(),
                    position: r["position"].as_str().and_then(|p| p.parse().ok()),
                    complete: r["complete"].as_i64().unwrap_or(0) != 0,
                    bookmark: r["bookmark"].as_str().map(str::to_owned),
                };
                (m.stream.clone(), m)
            })
            .collect())
    }

    fn prepare(&mut self, schema: &Schema, shape: &RowShape, opts: &LoadOptions) -> Result<Prepared> {
        let stream = schema.stream.as_str();
        if crate::connect::postgres_types(schema, opts) {
            return Err(Error::usage(format!(
                "stream {stream} carries PostgreSQL types and values; recast it for D1 first: ... | ferry-transform --dialect d1 | ferry-import {}",
                self.client.address()
            )));
        }
        let table = table_name_for(stream).to_owned();
        let mut prepared = Prepared {
            table: table.clone(),
            ..Default::default()
        };
        prepared.existed = self.table_exists(&table)?;
        prepared.sql_name = Some(quote(&table));
        let mut undo = None;
        if prepared.existed {
            let have: Vec<String> = self
                .client
                .rows("SELECT name FROM pragma_table_info(?1)", &[&table])?
                .into_iter()
                .filter_map(|r| r["name"].as_str().map(str::to_owned))
                .collect();
            let missing: Vec<&str> = shape
                .columns
                .iter()
                .map(|c| c.name.as_str())
                .filter(|c| !have.iter().any(|h| h == c))
                .collect();
            if !missing.is_empty() {
                return Err(crate::connect::missing_columns(
                    self.client.address(),
                    &table,
                    stream,
                    &missing,
                ));
            }
            prepared.empty = self
                .client
                .rows(
                    &format!("SELECT NOT EXISTS (SELECT 1 FROM {}) AS e", quote(&table)),
                    &[],
                )?
                .first()
                .is_some_and(|r| r["e"].as_i64() == Some(1));
            if opts.journal && !self.dry_run && !prepared.empty && !shape.key.is_empty() {
                // The undo table has two columns more, and undoing reads it with a third.
                if shape.len() + 3 > MAX_COLUMNS {
                    tracing::warn!(stream, table = %table, "the table is too wide for D1 to keep its rollback journal ({MAX_COLUMNS} columns at most): a rollback of this run cannot undo its rows");
                } else {
                    undo = Some(self.undo_for(shape, opts, &table)?);
                    prepared.undo = undo.as_ref().map(|u| u.table.clone());
                }
            }
        } else if !opts.create {
            return Err(crate::connect::no_table(self.client.address(), &table, stream));
        } else {
            let ddl = create_table_sql(schema, &table);
            prepared.deferred = index_sql(schema, &table);
            if !self.dry_run {
                // The table and the record of its deferred indexes in one request.
                let mut stmts = vec![Stmt::plain(MARKER_DDL), Stmt::plain(ddl.clone())];
                if !prepared.deferred.is_empty() {
                    stmts.push(Stmt {
                        sql: "INSERT INTO _ferry_commits (source, stream, run_id, position, complete, pending_ddl, updated_at)
                              VALUES (?1, ?2, ?3, NULL, 0, ?4, ?5)
                              ON CONFLICT (source, stream) DO UPDATE SET pending_ddl = excluded.pending_ddl"
                            .into(),
                        params: vec![
                            Some(opts.source.clone()),
                            Some(schema.bookmark_name().to_owned()),
                            Some(opts.run_id.clone()),
                            Some(serde_json::to_string(&prepared.deferred).unwrap_or_else(|_| "[]".into())),
                            Some(now_rfc3339()),
                        ],
                    });
                }
                let probe = format!(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = {}",
                    sql_text(&table)
                );
                self.client.exec_probed(&stmts, Some(&probe))?;
                self.marker_table = true;
            }
            prepared.created.push(ddl);
        }
        if !self.dry_run {
            self.counter_past(schema, &table)?;
        }
        let cols: Vec<String> = shape.columns.iter().map(|c| quote(&c.name)).collect();
        let keys: Vec<String> = shape.key_names().into_iter().map(str::to_owned).collect();
        let conflict = conflict_clause(shape, opts.on_conflict);
        self.streams.insert(
            stream.to_owned(),
            D1Stream {
                head: format!("INSERT INTO {} ({}) VALUES ", quote(&table), cols.join(", ")),
                table,
                conflict,
                keys,
                bookmark: schema.bookmark_name().to_owned(),
                source: opts.source.clone(),
                run_id: opts.run_id.clone(),
                on_conflict: opts.on_conflict,
                existed: prepared.existed,
                undo,
            },
        );
        self.shapes.insert(stream.to_owned(), shape.clone());
        Ok(prepared)
    }

    fn write(&mut self, stream: &str, _shape: &RowShape, batch: RowBatch) -> Result<Vec<Report>> {
        self.queue(stream, batch, false)
    }

    fn delete(&mut self, stream: &str, _shape: &RowShape, batch: RowBatch) -> Result<Vec<Report>> {
        self.queue(stream, batch, true)
    }

    fn flush(&mut self) -> Result<Vec<Report>> {
        self.drain(true)?;
        Ok(self.take_reports())
    }

    fn plan(&mut self, stream: &str, shape: &RowShape, batch: &RowBatch) -> Result<PlanCounts> {
        let mut counts = PlanCounts {
            insert: batch.len() as u64,
            ..Default::default()
        };
        let Some(ts) = self.streams.get(stream) else {
            return Ok(counts);
        };
        if !ts.existed || ts.keys.is_empty() || batch.is_empty() {
            return Ok(counts);
        }
        // The keys already there, counted a statement of literals at a time, in one request.
        let key_index: Vec<usize> = ts.keys.iter().filter_map(|k| shape.column_index(k)).collect();
        let list = ts.keys.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ");
        let head = format!("SELECT count(*) FROM {} WHERE ({list}) IN (VALUES ", quote(&ts.table));
        let mut sqls = Vec::new();
        let mut sql = head.clone();
        let mut tuple = String::new();
        for r in 0..batch.len() {
            tuple.clear();
            tuple.push('(');
            for (j, &i) in key_index.iter().enumerate() {
                if j > 0 {
                    tuple.push_str(", ");
                }
                // A key D1 could not hold cannot be there: NULL matches nothing.
                let v = &batch.row(r)[i];
                if literal(v, &mut tuple).is_err() {
                    tuple.push_str("NULL");
                }
            }
            tuple.push(')');
            if sql.len() > head.len() && sql.len() + tuple.len() + 2 > STATEMENT_TARGET {
                sql.push(')');
                sqls.push(std::mem::replace(&mut sql, head.clone()));
            }
            if sql.len() > head.len() {
                sql.push_str(", ");
            }
            sql.push_str(&tuple);
        }
        sql.push(')');
        sqls.push(sql);
        let on_conflict = ts.on_conflict;
        let found: u64 = self
            .client
            .raw(&sqls)?
            .iter()
            .filter_map(|rows| rows.first()?.first()?.as_u64())
            .sum();
        let found = found.min(counts.insert);
        counts.insert -= found;
        match on_conflict {
            OnConflict::Skip => counts.skip = found,
            OnConflict::Overwrite => counts.overwrite = found,
            OnConflict::Fail => counts.conflict = found,
        }
        Ok(counts)
    }

    fn commit(&mut self, markers: &[Marker]) -> Result<()> {
        if self.dry_run {
            return Ok(());
        }
        self.drain(true)?;
        if markers.is_empty() {
            return Ok(());
        }
        let mut stmts = Vec::new();
        if !self.marker_table {
            stmts.push(Stmt::plain(MARKER_DDL));
        }
        stmts.extend(markers.iter().map(marker_stmt));
        stmts.extend(self.lock.as_deref().map(renew_lock));
        self.client.exec(&stmts)?;
        self.marker_table = true;
        Ok(())
    }

    fn rollback(&mut self) -> Result<()> {
        // What was sent is committed with its markers; what was not is dropped.
        self.pending.clear();
        self.pending_bytes = 0;
        Ok(())
    }

    fn finish_stream(&mut self, source: &str, bookmark_name: &str) -> Result<Vec<String>> {
        if self.dry_run || !self.marker_table && !self.table_exists("_ferry_commits")? {
            return Ok(vec![]);
        }
        let rows = self.client.rows(
            "SELECT pending_ddl FROM _ferry_commits WHERE source = ?1 AND stream = ?2 AND pending_ddl IS NOT NULL",
            &[source, bookmark_name],
        )?;
        let Some(text) = rows.first().and_then(|r| r["pending_ddl"].as_str()) else {
            return Ok(vec![]);
        };
        let statements: Vec<String> = serde_json::from_str(text).unwrap_or_default();
        let mut stmts: Vec<Stmt> = statements.iter().map(|s| Stmt::plain(s.clone())).collect();
        stmts.push(Stmt {
            sql: "UPDATE _ferry_commits SET pending_ddl = NULL WHERE source = ?1 AND stream = ?2".into(),
            params: vec![Some(source.to_owned()), Some(bookmark_name.to_owned())],
        });
        self.client.exec(&stmts)?;
        Ok(statements)
    }

    fn commit_every(&self) -> CommitEvery {
        // Each request already commits with its marker; STATEs are acknowledged in groups.
        CommitEvery {
            rows: 50_000,
            bytes: 8 << 20,
            interval: Duration::from_secs(10),
        }
    }
}
