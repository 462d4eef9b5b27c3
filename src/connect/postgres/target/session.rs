//! The PostgreSQL target's session: one connection, the open transaction and its replay log,
//! the COPYs in flight and the COMMIT on its way.
//!
//! # One transaction at a time, one COMMIT on its way: one transaction at a time, one COMMIT on its way
//!
//! The importer and this target share one protocol (the importer's side is `commit_with`,
//! `pending_ack` and `acknowledge` in `stage::import::tables`). A session is in one of three
//! states (`in_tx`, `committing`); the fields each step uses are named in it.
//!
//! ```text
//! Idle ----- the first write: BEGIN -----------------------------------------> Open
//! Open ----- commit: markers and COMMIT, waited for ---------------------------> Idle
//! Open ----- commit_pipelined: markers, COMMIT and the next BEGIN, one message -> Committing
//! Open ----- a chunk refused: ROLLBACK, replay `ops`, `careful` until the next commit -> Open
//! Committing -- land (`landed(wait)`, or first thing in any other call):
//!     answered ok   -> Open (the next transaction); the importer acknowledges: checkpoint, echo
//!     connection lost -> `settle_lost_commit`: the marker rows its `token` names say whether
//!                      it landed; if not, its `ops` are replayed and committed again
//!     refused, fatal -> `commit_failed`: nothing of it is acknowledged, the run stops
//! ```
//!
//! - **Open** keeps every operation in `ops` (up to `REPLAY_LIMIT`; past it `replayable` is
//!   false: every chunk then goes inside a savepoint, and a fault ends the run instead of
//!   replaying). Chunks are COPYs `in_flight`, at most
//!   `IN_FLIGHT` queued on the connection, settled in order (`settle`) before anything that needs
//!   their outcome.
//! - **Committing**: the next transaction's COPYs queue behind the COMMIT on the connection, so
//!   the server flushes its WAL while the importer reads on. At most one COMMIT is on its way.
//! - A transient fault anywhere (the connection dropped, the server restarted) reconnects with
//!   backoff and replays the open transaction (`with_retry`); a COMMIT whose answer was lost is
//!   settled by the marker rows its `token` names, never by guessing.
//!
//! One concern, kept whole (over 800 lines): the session's state machine, whose steps share its
//! fields.

use std::time::Duration;

use tokio_postgres::error::SqlState;

use super::super::conn::{is_transient, pg_error};
use super::super::copy as pgcopy;
use super::{Path, PgTarget};
use crate::connect::sql::literal;
use crate::connect::{Marker, OnConflict, Reject, Report, RowBatch};
use crate::error::{Error, ErrorKind, Result};
use crate::row::RowShape;
use bytes::Bytes;
use futures_util::SinkExt;

/// Chunks whose COPY may be on its way at once (one being read by the server, one queued).
pub(super) const IN_FLIGHT: usize = 2;

/// Operations of the open transaction kept for replay after a transient fault, at most this many
/// bytes; beyond it a fault in that transaction is reported instead of retried.
pub(super) const REPLAY_LIMIT: usize = 32 << 20;

/// What a user is told when the server went away for good in the middle of a run.
pub(super) const GONE: &str = "nothing after the last commit is in the target; once the server is back, re-run the same command to continue from there";

/// Why a COPY did not go in.
pub(super) enum CopyFailure {
    /// Refused before it read a row: the table, a column or a privilege, so no row is at fault.
    /// tokio-postgres cannot use the connection after this (it sent two Syncs, and the second
    /// answer arrives with nothing waiting for it), so it is never retried on it.
    Start(tokio_postgres::Error),
    /// While the rows went in: a value or a constraint, or the connection.
    Rows(tokio_postgres::Error),
}

/// Whether a refusal is about the statement rather than its rows: SQLSTATE class 42 (a missing
/// privilege, table or column, a type mismatch), which isolating rows would only repeat per row.
pub(super) fn refuses_every_row(code: Option<&SqlState>) -> bool {
    code.is_some_and(|c| c.code().starts_with("42"))
}

/// One `COPY ... FROM STDIN` with `data` as its whole input.
pub(super) async fn copy_in(
    client: &tokio_postgres::Client,
    sql: &str,
    data: Bytes,
) -> std::result::Result<u64, CopyFailure> {
    let sink = client.copy_in::<_, Bytes>(sql).await.map_err(CopyFailure::Start)?;
    let mut sink = Box::pin(sink);
    sink.send(data).await.map_err(CopyFailure::Rows)?;
    sink.as_mut().finish().await.map_err(CopyFailure::Rows)
}

/// One operation of the open transaction, kept for replay.
pub(super) enum Op {
    Sql(String),
    Copy { sql: String, data: Bytes },
}

/// A failure while talking to the server, sorted by what to do about it.
pub(super) enum Fail {
    /// The connection (or server) went away: reconnect and replay.
    Transient(Error),
    /// The server refused a statement (a constraint, a type): isolate and reject. With the
    /// error's code and the constraint it names.
    Refused(String, Option<SqlState>, Option<String>),
    Fatal(Error),
}

/// A chunk whose COPY is still running on the server while the importer reads on.
pub(super) struct InFlight {
    stream: String,
    shape: RowShape,
    batch: RowBatch,
    /// Row of the batch, and its tuple's bytes within `data` (after the COPY header).
    rows: Vec<(usize, std::ops::Range<usize>)>,
    /// The COPY payload as sent; `rows` are ranges in it.
    data: Bytes,
    /// The chunk's savepoint, when it was written carefully.
    savepoint: Option<String>,
    done: tokio::task::JoinHandle<std::result::Result<u64, CopyFailure>>,
}

/// A COMMIT sent without waiting for its answer (`Target::commit_pipelined`). The transaction's
/// operations are kept until it has landed: if the connection goes first, they are replayed.
pub(super) struct Committing {
    /// The token its marker rows carry: on a new connection, it says whether the COMMIT landed.
    token: String,
    ops: Vec<Op>,
    replayable: bool,
    done: tokio::task::JoinHandle<std::result::Result<(), tokio_postgres::Error>>,
}

impl PgTarget {
    pub(super) fn err(&self, what: &str, e: tokio_postgres::Error) -> Error {
        pg_error(&self.address.redacted, what, e)
    }

    pub(super) fn classify(&self, what: &str, e: tokio_postgres::Error) -> Fail {
        if is_transient(&e) {
            return Fail::Transient(self.err(what, e));
        }
        match e.as_db_error() {
            Some(db) => {
                let mut m = db.message().to_owned();
                if let Some(d) = db.detail() {
                    m.push_str(&format!(" ({d})"));
                }
                Fail::Refused(m, e.code().cloned(), db.constraint().map(str::to_owned))
            }
            None => Fail::Fatal(self.err(what, e)),
        }
    }

    /// Run one statement of the open transaction (logged for replay when `log`).
    pub(super) fn sql(&mut self, sql: &str, log: bool) -> std::result::Result<u64, Fail> {
        match self.rt.block_on(self.client.execute(sql, &[])) {
            Ok(n) => {
                if log {
                    self.keep(Op::Sql(sql.to_owned()));
                }
                Ok(n)
            }
            Err(e) => Err(self.classify(sql, e)),
        }
    }

    /// One COPY of `stream`'s rows, waited for.
    pub(super) fn copy(&mut self, stream: &str, sql: &str, data: Bytes) -> std::result::Result<u64, Fail> {
        match self.rt.block_on(copy_in(&self.client, sql, data.clone())) {
            Ok(n) => {
                self.keep(Op::Copy {
                    sql: sql.to_owned(),
                    data,
                });
                Ok(n)
            }
            Err(e) => Err(self.copy_fail(stream, sql, e)),
        }
    }

    /// A COPY that failed, as a `Fail`. One the server refused before reading a row is not the
    /// rows' fault, so splitting the chunk would only reject every row: it ends the run.
    pub(super) fn copy_fail(&self, stream: &str, sql: &str, f: CopyFailure) -> Fail {
        match f {
            CopyFailure::Start(e) => match self.classify(sql, e) {
                Fail::Refused(m, ..) => Fail::Fatal(self.refused_outright(stream, &m)),
                other => other,
            },
            CopyFailure::Rows(e) => self.classify(sql, e),
        }
    }

    /// The error for a statement of `stream` the server refused whatever its rows held (a missing
    /// privilege, table or column): its reason, and what to do.
    pub(super) fn refused_outright(&self, stream: &str, message: &str) -> Error {
        let table = self.streams.get(stream).map_or(stream, |s| s.qualified.as_str());
        Error::new(
            ErrorKind::Target,
            format!(
                "{}: writing the rows of stream \"{stream}\" into {table}: {message}; the server refused the statement itself, not a row, so no row was rejected; nothing after the last commit is in the target; once that is put right, re-run the same command to continue from there",
                self.address.redacted
            ),
        )
    }

    pub(super) fn keep(&mut self, op: Op) {
        if !self.replayable {
            return;
        }
        self.ops_bytes += match &op {
            Op::Sql(s) => s.len(),
            Op::Copy { sql, data } => sql.len() + data.len(),
        };
        if self.ops_bytes > REPLAY_LIMIT {
            self.replayable = false;
            self.ops.clear();
            tracing::debug!("transaction too large to replay after a fault: a fault in it will be reported");
        } else {
            self.ops.push(op);
        }
    }

    pub(super) fn begin(&mut self) -> Result<()> {
        if self.in_tx || self.dry_run {
            return Ok(());
        }
        self.with_retry("starting a transaction", |t| t.sql("BEGIN", false).map(|_| ()))?;
        self.in_tx = true;
        Ok(())
    }

    /// Reconnect and replay the open transaction's operations.
    pub(super) fn recover(&mut self, cause: Error) -> Result<()> {
        if !self.replayable {
            return Err(cause.context("the connection failed in a transaction too large to replay; nothing after the last acknowledged STATE was committed, re-run to resume"));
        }
        tracing::warn!(error = %cause.chain(), "connection lost: reconnecting and replaying the open transaction");
        self.replay(true)
            .map_err(|e| e.context(format!("the connection was lost and not regained; {GONE}")))
    }

    /// After the server refused a chunk written without a savepoint (the transaction is aborted):
    /// roll back, replay what came before it, and write carefully until the next commit.
    pub(super) fn restart_after_refusal(&mut self) -> Result<()> {
        self.careful = true;
        if !self.replayable {
            return Err(Error::new(
                ErrorKind::Target,
                format!(
                    "{}: the server refused rows in a transaction too large to replay; nothing after the last acknowledged STATE was committed, re-run to resume",
                    self.address.redacted
                ),
            ));
        }
        tracing::debug!("a chunk was refused: replaying the open transaction, then isolating the refused rows");
        let _ = self.rt.block_on(self.client.batch_execute("ROLLBACK"));
        self.replay(false)
    }

    /// Run the open transaction's operations again, on a new connection or on this one.
    pub(super) fn replay(&mut self, reconnect: bool) -> Result<()> {
        let stages = self.stage_creates();
        let ops = std::mem::take(&mut self.ops);
        let mut attempt = 0;
        let mut first = true;
        let result = loop {
            // A replay cut short is started again on a new connection, like any other operation.
            let fresh = reconnect || !first;
            first = false;
            if fresh {
                self.client = match self.address.connect_async(&self.rt) {
                    Ok(c) => c.into(),
                    Err(e) => break Err(e),
                };
            }
            let client = &self.client;
            let in_tx = self.in_tx;
            let replay = self.rt.block_on(async {
                if fresh {
                    for create in &stages {
                        client.batch_execute(create).await?;
                    }
                }
                if in_tx {
                    client.batch_execute("BEGIN").await?;
                }
                for op in &ops {
                    match op {
                        Op::Sql(s) => client.batch_execute(s).await?,
                        Op::Copy { sql, data } => {
                            copy_in(client, sql, data.clone())
                                .await
                                .map_err(|(CopyFailure::Start(e) | CopyFailure::Rows(e))| e)?;
                        }
                    }
                }
                Ok::<(), tokio_postgres::Error>(())
            });
            match replay {
                Ok(()) => break Ok(()),
                Err(e) if is_transient(&e) && attempt < 5 => {
                    attempt += 1;
                    tracing::warn!(attempt, "the replay was cut short: reconnecting again");
                    std::thread::sleep(Duration::from_millis(200 << attempt));
                }
                Err(e) => break Err(self.err("replaying the open transaction", e)),
            }
        };
        self.ops = ops;
        result
    }

    /// What makes a new session ready for the streams: their staging tables (temporary tables
    /// belong to a session).
    pub(super) fn stage_creates(&self) -> Vec<String> {
        // The tables' locks first: a session's locks go with it.
        let stages = self.streams.values().filter_map(|s| match &s.path {
            Path::Staging { create, .. } => Some(create.clone()),
            Path::Direct => None,
        });
        self.relock_sql().into_iter().chain(stages).collect()
    }

    /// On a new session, take the tables' locks again. The session that held them may still be
    /// alive on the server (it notices a cut connection late): it is this process's own (same
    /// application name), so it is ended, which also settles anything it was still doing.
    pub(super) fn relock_sql(&self) -> Option<String> {
        if self.locked.is_empty() {
            return None;
        }
        let tables: Vec<String> = self.locked.iter().map(|q| literal(Some(q))).collect();
        Some(format!(
            "DO $ferry$
            DECLARE t text; tries int := 0;
            BEGIN
              FOREACH t IN ARRAY ARRAY[{}]::text[] LOOP
                WHILE NOT pg_try_advisory_lock(hashtext('ferry'), hashtext(t)) LOOP
                  PERFORM pg_terminate_backend(a.pid) FROM pg_stat_activity a
                    WHERE a.application_name = current_setting('application_name') AND a.pid <> pg_backend_pid()
                      AND a.datname = current_database();
                  tries := tries + 1;
                  IF tries > 300 THEN
                    RAISE EXCEPTION 'another ferry process took the lock on table % while the connection was down', t;
                  END IF;
                  PERFORM pg_sleep(0.1);
                END LOOP;
              END LOOP;
            END$ferry$",
            tables.join(", ")
        ))
    }

    /// Run `op`, recovering from transient faults with the shared retry policy.
    pub(super) fn with_retry<T>(
        &mut self,
        what: &str,
        mut op: impl FnMut(&mut Self) -> std::result::Result<T, Fail>,
    ) -> Result<T> {
        // Whatever runs now waits for its answer: the COMMIT ahead of it is settled first.
        self.land()?;
        let mut faults = 0;
        loop {
            // An operation is all or nothing in the replay log: if it fails part-way (say, after
            // a COPY went in but before its savepoint was released), what it logged goes, so the
            // replay restores the state before it and the retry does it once.
            let mark = self.ops.len();
            match op(self) {
                Ok(v) => return Ok(v),
                Err(Fail::Transient(e)) if faults < 6 => {
                    self.ops.truncate(mark);
                    faults += 1;
                    std::thread::sleep(Duration::from_millis(200 << faults.min(5)));
                    self.recover(e)?;
                }
                Err(Fail::Transient(e)) => return Err(e.context(format!("{what}: the server kept failing; {GONE}"))),
                Err(Fail::Refused(m, ..)) => {
                    return Err(Error::new(
                        ErrorKind::Target,
                        format!("{}: {what}: {m}", self.address.redacted),
                    ));
                }
                Err(Fail::Fatal(e)) => return Err(e),
            }
        }
    }

    pub(super) fn ensure_markers_sql(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {} (
                source text NOT NULL, stream text NOT NULL, run_id text NOT NULL, position bigint,
                complete boolean NOT NULL DEFAULT false, bookmark text, pending_ddl text, pending_fk text,
                commit_token text, updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (source, stream))",
            self.markers_table
        )
    }

    pub(super) fn ensure_markers(&mut self) -> Result<()> {
        let sql = self.ensure_markers_sql();
        self.with_retry("creating the commit marker table", |t| t.sql(&sql, true).map(|_| ()))
    }

    /// The statement that records `markers` with a fresh commit token (and the token): if the
    /// connection drops during COMMIT, the token says whether it landed.
    pub(super) fn marker_rows(&self, markers: &[Marker]) -> (String, String) {
        let token = uuid::Uuid::now_v7().to_string();
        let source = markers.first().map_or("", |m| m.source.as_str()).to_owned();
        let mut rows: Vec<String> = markers
            .iter()
            .map(|m| {
                format!(
                    "({}, {}, {}, {}, {}, {}, {})",
                    literal(Some(&m.source)),
                    literal(Some(&m.stream)),
                    literal(Some(&m.run_id)),
                    m.position.map_or("NULL".into(), |p| p.to_string()),
                    m.complete,
                    literal(m.bookmark.as_deref()),
                    literal(Some(&token))
                )
            })
            .collect();
        if rows.is_empty() {
            // Nothing to mark (DDL only): the token goes on a row of its own.
            rows.push(format!(
                "({}, '', '', NULL, false, NULL, {})",
                literal(Some(&source)),
                literal(Some(&token))
            ));
        }
        let sql = format!(
            "INSERT INTO {0} (source, stream, run_id, position, complete, bookmark, commit_token) VALUES {1}
             ON CONFLICT (source, stream) DO UPDATE SET run_id = excluded.run_id,
                 position = GREATEST(coalesce({0}.position, 0), coalesce(excluded.position, 0)),
                 complete = {0}.complete OR excluded.complete,
                 bookmark = coalesce(excluded.bookmark, {0}.bookmark),
                 commit_token = excluded.commit_token, updated_at = now()",
            self.markers_table,
            rows.join(", ")
        );
        (token, sql)
    }

    /// The connection went while a COMMIT was on its way (`self.ops` hold its transaction): on a
    /// new connection, find out from its token whether it landed; if not, replay the transaction
    /// and commit it again. Either way the new session is ready (staging tables), outside any
    /// transaction.
    pub(super) fn settle_lost_commit(&mut self, token: &str, cause: Error) -> Result<()> {
        self.client = self
            .address
            .connect_async(&self.rt)
            .map_err(|e| {
                e.context(
                    "the connection was lost during COMMIT and not regained (a re-run reads from the target whether that commit landed); once the server is back, re-run the same command to continue",
                )
            })?
            .into();
        // The session the COMMIT went on is ended first (taking the locks back does it), so
        // whatever the check below finds stays true.
        if let Some(relock) = self.relock_sql() {
            self.rt
                .block_on(self.client.batch_execute(&relock))
                .map_err(|e| self.err("taking the tables' locks again", e))?;
        }
        let check = format!(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE commit_token = $1)",
            self.markers_table
        );
        let landed: bool = self
            .rt
            .block_on(self.client.query_one(check.as_str(), &[&token]))
            .map_err(|e| self.err("checking whether a commit landed", e))?
            .get(0);
        if landed {
            tracing::warn!("the connection dropped during COMMIT, which had landed");
            self.ops.clear();
            self.ops_bytes = 0;
            self.in_tx = false;
            for create in self.stage_creates() {
                self.rt
                    .block_on(self.client.batch_execute(&create))
                    .map_err(|e| self.err("creating a staging table again", e))?;
            }
            return Ok(());
        }
        self.in_tx = true;
        self.recover(cause)?;
        self.commit_now("committing again")
    }

    /// Wait for the COMMIT on its way, if any. When the connection went before it landed, it is
    /// settled on a new one (`settle_lost_commit`), and the next transaction begun again there:
    /// the COPYs queued behind the COMMIT failed with the old connection, and settle as lost.
    pub(super) fn land(&mut self) -> Result<()> {
        let Some(c) = self.committing.take() else {
            return Ok(());
        };
        let outcome = match self.rt.block_on(c.done) {
            Err(e) => Err(Error::new(ErrorKind::Target, "the COMMIT task failed").with_source(e)),
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) if is_transient(&e) => {
                // Nothing of the next transaction is logged yet: its chunks are still in flight.
                debug_assert!(self.ops.is_empty());
                self.ops = c.ops;
                self.replayable = c.replayable;
                self.in_tx = false;
                let cause = self.err("committing", e);
                self.settle_lost_commit(&c.token, cause).and_then(|()| {
                    self.with_retry("starting a transaction", |t| t.sql("BEGIN", false).map(|_| ()))?;
                    self.in_tx = true;
                    Ok(())
                })
            }
            Ok(Err(e)) => Err(self.err("committing", e)),
        };
        if outcome.is_err() {
            self.commit_failed = true;
        }
        outcome
    }

    /// Write rows in one COPY (inside a savepoint) and wait for it; if the server refuses them,
    /// split until the refused rows are isolated. `rows` are (row of the batch, its tuple's bytes
    /// in `tuples`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send(
        &mut self,
        stream: &str,
        rows: &[(usize, std::ops::Range<usize>)],
        tuples: &[u8],
        report: &mut Report,
        shape: &RowShape,
        batch: &RowBatch,
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let ps = self.streams.get_mut(stream).expect("prepared");
        // The chunk's journal statements, numbered after every earlier chunk of the run.
        let journal: Vec<String> = match ps.undo.as_mut() {
            Some(u) => {
                u.seq += 1;
                let seq = u.seq.to_string();
                std::iter::once(&u.inserted)
                    .chain(u.before.as_ref())
                    .map(|sql| sql.replace("{seq}", &seq))
                    .collect()
            }
            None => Vec::new(),
        };
        let (copy, path, on_conflict, key) = (ps.copy.clone(), ps.path.clone(), ps.on_conflict, ps.key.clone());
        let table = ps.qualified.clone();
        let data = payload(ps.binary, rows.iter().map(|(_, r)| &tuples[r.clone()]));
        self.savepoints += 1;
        let sp = format!("ferry_{}", self.savepoints);
        let attempt = self.with_retry("writing rows", |t| {
            t.sql(&format!("SAVEPOINT {sp}"), true)?;
            let result = (|| -> std::result::Result<(u64, u64), Fail> {
                match &path {
                    Path::Direct => {
                        let n = t.copy(stream, &copy, data.clone())?;
                        Ok((n, 0))
                    }
                    Path::Staging { insert, stage, .. } => {
                        t.copy(stream, &copy, data.clone())?;
                        for sql in &journal {
                            t.sql(sql, true)?;
                        }
                        let n = t.sql(insert, true)?;
                        t.sql(&format!("TRUNCATE {stage}"), true)?;
                        Ok((n, rows.len() as u64 - n))
                    }
                }
            })();
            match result {
                Ok(counts) => {
                    t.sql(&format!("RELEASE SAVEPOINT {sp}"), true)?;
                    Ok(Ok(counts))
                }
                Err(Fail::Refused(m, code, _)) if refuses_every_row(code.as_ref()) => {
                    Err(Fail::Fatal(t.refused_outright(stream, &m)))
                }
                Err(Fail::Refused(m, code, constraint)) => {
                    // Undo this chunk only; the ops it logged go too.
                    t.sql(&format!("ROLLBACK TO SAVEPOINT {sp}"), false)?;
                    t.sql(&format!("RELEASE SAVEPOINT {sp}"), false)?;
                    t.forget_since(&sp);
                    Ok(Err((m, code, constraint)))
                }
                Err(other) => Err(other),
            }
        })?;
        match attempt {
            Ok((written, skipped)) => {
                report.written += written;
                report.skipped += skipped;
                Ok(())
            }
            Err((message, code, constraint)) if rows.len() == 1 => {
                let r = rows[0].0;
                // A duplicate of the key itself (another unique constraint refuses the row).
                let unique = code == Some(SqlState::UNIQUE_VIOLATION)
                    && constraint.is_some()
                    && constraint == self.streams[stream].key_constraint;
                if unique && on_conflict == OnConflict::Fail && !key.is_empty() {
                    return Err(crate::connect::key_conflict(shape, batch, r, &table, Some(&message)));
                }
                if unique && on_conflict == OnConflict::Skip && matches!(path, Path::Direct) {
                    report.skipped += 1;
                    return Ok(());
                }
                report.rejects.push(Reject::of(shape, batch, r, message));
                Ok(())
            }
            Err(_) => {
                let (a, b) = rows.split_at(rows.len() / 2);
                self.send(stream, a, tuples, report, shape, batch)?;
                self.send(stream, b, tuples, report, shape, batch)
            }
        }
    }

    /// Start a chunk's COPY and let it run on the server while the importer goes on; the next
    /// call settles it. Optimistic: no savepoint unless an earlier chunk of the transaction was
    /// refused (or it is too large to replay). Upserts through staging go the careful way, `send`.
    pub(super) fn launch(
        &mut self,
        stream: &str,
        shape: &RowShape,
        batch: RowBatch,
        rows: Vec<(usize, std::ops::Range<usize>)>,
        tuples: Vec<u8>,
    ) -> Result<()> {
        if !matches!(self.streams[stream].path, Path::Direct) {
            self.settle()?;
            let mut report = Report {
                stream: stream.to_owned(),
                ..Default::default()
            };
            self.send(stream, &rows, &tuples, &mut report, shape, &batch)?;
            self.reports.push(report);
            return Ok(());
        }
        let ps = &self.streams[stream];
        let (sql, binary) = (ps.copy.clone(), ps.binary);
        let careful = self.careful || !self.replayable;
        if careful || self.in_flight.len() >= IN_FLIGHT {
            self.settle()?;
        }
        // Settling may have found a refusal: the rest of the transaction is written carefully.
        let savepoint = if self.careful || !self.replayable {
            self.savepoints += 1;
            let sp = format!("ferry_{}", self.savepoints);
            self.with_retry("writing rows", |t| t.sql(&format!("SAVEPOINT {sp}"), true).map(|_| ()))?;
            Some(sp)
        } else {
            None
        };
        let mut tuples = tuples;
        if binary {
            tuples.extend_from_slice(pgcopy::TRAILER);
        }
        // Sent, kept for replay and kept to split or resend the chunk: one buffer.
        let data = Bytes::from(tuples);
        let sent = data.clone();
        // The whole COPY (its start too) runs on the connection's worker: the importer does not
        // wait for a round trip.
        let client = std::sync::Arc::clone(&self.client);
        let done = self.rt.spawn(async move { copy_in(&client, &sql, sent).await });
        self.in_flight.push_back(InFlight {
            stream: stream.to_owned(),
            shape: shape.clone(),
            batch,
            rows,
            data,
            savepoint,
            done,
        });
        Ok(())
    }

    /// Wait for the chunks in flight; one the server refused, or lost with the connection, is
    /// written again the careful way, and so is every chunk after it. What they did goes to
    /// `self.reports`.
    pub(super) fn settle(&mut self) -> Result<()> {
        // A COMMIT is ahead of every chunk in flight on the connection.
        self.land()?;
        while let Some(f) = self.in_flight.pop_front() {
            self.settle_one(f)?;
        }
        Ok(())
    }

    pub(super) fn settle_one(&mut self, f: InFlight) -> Result<()> {
        let sql = self.streams[&f.stream].copy.clone();
        let joined = self
            .rt
            .block_on(f.done)
            .map_err(|e| Error::new(ErrorKind::Target, "the COPY task failed").with_source(e))?;
        let mut report = Report {
            stream: f.stream.clone(),
            ..Default::default()
        };
        let outcome = match joined {
            Ok(n) => {
                self.keep(Op::Copy {
                    sql: sql.clone(),
                    data: f.data.clone(),
                });
                match &f.savepoint {
                    Some(sp) => self.sql(&format!("RELEASE SAVEPOINT {sp}"), true).map(|_| n),
                    None => Ok(n),
                }
            }
            Err(e) => Err(self.copy_fail(&f.stream, &sql, e)),
        };
        match outcome {
            Ok(n) => {
                report.written += n;
                self.reports.push(report);
            }
            Err(fail) => {
                // The chunks queued behind this one ran in a transaction it broke: wait for them
                // to end, then write them again too.
                let later: Vec<InFlight> = self.in_flight.drain(..).collect();
                let mut redo = Vec::with_capacity(later.len());
                for l in later {
                    let _ = self.rt.block_on(l.done);
                    redo.push((l.stream, l.rows, l.data, l.shape, l.batch));
                }
                match (&f.savepoint, fail) {
                    (Some(sp), fail) => self.undo_chunk(sp, fail)?,
                    (None, Fail::Refused(..)) => self.restart_after_refusal()?,
                    (None, Fail::Transient(e)) => self.recover(e)?,
                    (None, Fail::Fatal(e)) => return Err(e),
                }
                self.send(&f.stream, &f.rows, &f.data, &mut report, &f.shape, &f.batch)?;
                self.reports.push(report);
                for (stream, rows, data, shape, batch) in redo {
                    let mut report = Report {
                        stream: stream.clone(),
                        ..Default::default()
                    };
                    self.send(&stream, &rows, &data, &mut report, &shape, &batch)?;
                    self.reports.push(report);
                }
            }
        }
        Ok(())
    }

    /// Take back a chunk that went wrong: after a refusal, roll back to its savepoint; after a
    /// lost connection, reconnect and replay what came before it.
    pub(super) fn undo_chunk(&mut self, savepoint: &str, fail: Fail) -> Result<()> {
        match fail {
            Fail::Refused(..) => {
                let back = format!("ROLLBACK TO SAVEPOINT {savepoint}");
                let release = format!("RELEASE SAVEPOINT {savepoint}");
                self.with_retry("undoing a chunk", |t| {
                    t.sql(&back, false)?;
                    t.sql(&release, false).map(|_| ())
                })?;
                self.forget_since(savepoint);
                Ok(())
            }
            Fail::Transient(e) => {
                self.forget_since(savepoint);
                self.recover(e)
            }
            Fail::Fatal(e) => Err(e),
        }
    }

    /// Drop the logged operations from `SAVEPOINT sp` on (its chunk was rolled back).
    pub(super) fn forget_since(&mut self, sp: &str) {
        let marker = format!("SAVEPOINT {sp}");
        if let Some(i) = self.ops.iter().rposition(|op| matches!(op, Op::Sql(s) if *s == marker)) {
            self.ops.truncate(i);
        }
    }

    /// Run deferred statements in one transaction; a failing key or unique constraint is an
    /// error, anything else a warning (left for the user, said in the log).
    pub(super) fn run_deferred(&mut self, what: &str, statements: &[String]) -> Result<Vec<String>> {
        let mut done = Vec::new();
        for (n, s) in statements.iter().enumerate() {
            let sp = format!("ferry_ddl_{n}");
            self.sql(&format!("SAVEPOINT {sp}"), true)
                .map_err(|f| self.fail_error(what, f))?;
            match self.sql(s, true) {
                Ok(_) => {
                    self.sql(&format!("RELEASE SAVEPOINT {sp}"), true)
                        .map_err(|f| self.fail_error(what, f))?;
                    done.push(s.clone());
                }
                Err(Fail::Refused(m, ..)) => {
                    self.sql(&format!("ROLLBACK TO SAVEPOINT {sp}"), false)
                        .map_err(|f| self.fail_error(what, f))?;
                    self.forget_since(&sp);
                    if s.contains(" PRIMARY KEY ") || s.contains(" UNIQUE ") {
                        return Err(Error::new(
                            ErrorKind::Target,
                            format!("{}: {what}: {s}: {m}", self.address.redacted),
                        ));
                    }
                    let w = format!("{what}: {s}: {m}");
                    tracing::warn!(warning = %w, "left as it is");
                    self.warnings.push(w);
                }
                Err(f) => return Err(self.fail_error(what, f)),
            }
        }
        Ok(done)
    }

    pub(super) fn fail_error(&self, what: &str, f: Fail) -> Error {
        match f {
            Fail::Transient(e) | Fail::Fatal(e) => e,
            Fail::Refused(m, ..) => Error::new(ErrorKind::Target, format!("{}: {what}: {m}", self.address.redacted)),
        }
    }

    pub(super) fn commit_now(&mut self, what: &str) -> Result<()> {
        match self.rt.block_on(self.client.batch_execute("COMMIT")) {
            Ok(()) => {
                self.in_tx = false;
                self.ops.clear();
                self.ops_bytes = 0;
                self.replayable = true;
                self.careful = false;
                Ok(())
            }
            Err(e) => {
                self.in_tx = false;
                Err(self.err(what, e))
            }
        }
    }

    /// Record `markers` and COMMIT, waiting for it (`Target::commit`).
    pub(super) fn commit_markers(&mut self, markers: &[Marker]) -> Result<()> {
        self.settle()?;
        if self.dry_run || (!self.in_tx && markers.is_empty()) {
            return Ok(());
        }
        self.begin()?;
        self.ensure_markers()?;
        let (token, sql) = self.marker_rows(markers);
        self.with_retry("recording commit markers", |t| t.sql(&sql, true).map(|_| ()))?;
        match self.commit_now("committing") {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::Transient => self.settle_lost_commit(&token, e),
            Err(e) => Err(e),
        }
    }

    /// Record `markers` and send COMMIT and the next BEGIN without waiting (`Target::commit_pipelined`).
    pub(super) fn send_commit(&mut self, markers: &[Marker]) -> Result<()> {
        self.settle()?;
        if self.dry_run || (!self.in_tx && markers.is_empty()) {
            return Ok(());
        }
        self.begin()?;
        let ensure = self.ensure_markers_sql();
        let (token, sql) = self.marker_rows(markers);
        self.keep(Op::Sql(ensure.clone()));
        self.keep(Op::Sql(sql.clone()));
        // One message: the markers, COMMIT, and BEGIN of the next transaction, whose COPYs queue
        // behind it on the connection while the server flushes its WAL.
        let message = format!("{ensure};\n{sql};\nCOMMIT;\nBEGIN");
        let client = std::sync::Arc::clone(&self.client);
        let done = self
            .rt
            .spawn(async move { client.batch_execute(message.as_str()).await });
        self.committing = Some(Committing {
            token,
            ops: std::mem::take(&mut self.ops),
            replayable: self.replayable,
            done,
        });
        self.ops_bytes = 0;
        self.replayable = true;
        self.careful = false;
        Ok(())
    }

    /// Whether the COMMIT on its way has landed; with `wait`, wait for it (`Target::landed`).
    pub(super) fn commit_landed(&mut self, wait: bool) -> Result<bool> {
        if self.commit_failed {
            return Err(Error::new(
                ErrorKind::Target,
                format!("{}: the last COMMIT did not land", self.address.redacted),
            ));
        }
        match &self.committing {
            None => Ok(true),
            Some(c) if !wait && !c.done.is_finished() => Ok(false),
            Some(_) => self.land().map(|()| true),
        }
    }

    /// Abandon the open transaction and whatever is in flight (`Target::rollback`).
    pub(super) fn roll_back(&mut self) -> Result<()> {
        // A COMMIT on its way lands or not; what it did is what `landed` reports.
        let _ = self.land();
        for f in self.in_flight.drain(..).collect::<Vec<_>>() {
            // Let the COPY end (it is rolled back with the rest) so the connection is usable.
            let _ = self.rt.block_on(f.done);
        }
        self.reports.clear();
        if self.in_tx {
            self.in_tx = false;
            self.ops.clear();
            self.ops_bytes = 0;
            self.replayable = true;
            self.careful = false;
            let _ = self.rt.block_on(self.client.batch_execute("ROLLBACK"));
        }
        Ok(())
    }
}

/// A COPY payload: the tuples, between the header and the trailer when binary.
pub(super) fn payload<'a>(binary: bool, tuples: impl Iterator<Item = &'a [u8]>) -> Bytes {
    let mut data = if binary { Vec::from(pgcopy::HEADER) } else { Vec::new() };
    for t in tuples {
        data.extend_from_slice(t);
    }
    if binary {
        data.extend_from_slice(pgcopy::TRAILER);
    }
    Bytes::from(data)
}
