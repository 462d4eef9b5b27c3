//! Following a PostgreSQL database through logical replication: `ferry capture install` makes a
//! publication of its keyed tables ([`SLOT`]) and a `pgoutput` slot ([`slot_name`]); the follower
//! reads the slot with the replication protocol (`pgwire-replication`), decodes from each change
//! only the table and the key, and reads the rows themselves in a snapshot taken after the
//! changes arrived, as the SQLite capture does: a row as it is now, or a delete where it is gone.
//! The same row read twice is the same upsert, so a snapshot copy taken after the slot was made
//! and the changes since join without a gap, and what overlaps changes nothing (ferry chose this
//! over the slot's exported snapshot: one way for every source, and no transaction held open for
//! the length of the copy).
//!
//! A position is an LSN: the end of the last transaction read, or (draining, without
//! `--follow`) a logical message ferry commits into the WAL to know it has read everything
//! committed before it. The slot is told a position only once the target acknowledged it
//! (`trim`), so the server keeps every change the target may still need, and a follower killed
//! anywhere starts again after what the target has.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use pgwire_replication::{Lsn, ReplicationClient, ReplicationEvent};

use super::{Kind, PgSource, PgTable, key_literal, read_field};
use crate::connect::{ChangeSource, StreamPlan};
use crate::error::{Error, ErrorKind, Result};
use crate::row::RowShape;
use crate::value::{Value, canonical_key};

/// The publication ferry makes (a database's own), and the prefix of its replication slot (the
/// server's: one per database, `ferry_` and the database's name).
pub(crate) const SLOT: &str = "ferry_changes";

/// The name of the replication slot for the database `src` reads.
pub(crate) fn slot_name(src: &PgSource) -> String {
    let db = src.address.config.get_dbname().unwrap_or("postgres");
    let clean: String = db
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("ferry_{clean}").chars().take(63).collect()
}
/// How long a follower waits for changes before a pass with none.
const WAIT: Duration = Duration::from_millis(200);
/// How long a drain waits for its marker to come back through the slot.
const FENCE_WAIT: Duration = Duration::from_secs(120);

/// A table as the slot describes it: its stream, and where its key columns are in a change.
struct Relation {
    stream: String,
    key: Vec<(usize, Kind)>,
}

/// The replication session and what it has read.
pub(crate) struct Follow {
    rt: tokio::runtime::Runtime,
    repl: ReplicationClient,
    relations: HashMap<u32, Option<Relation>>,
    /// Keys of the transaction being read.
    txn: Vec<(String, Vec<Value>)>,
    /// Keys of transactions read in full, with their commit's end.
    ready: VecDeque<(u64, String, Vec<Value>)>,
    last_commit: u64,
    /// When the last transaction read was committed (for the lag).
    last_commit_time: Option<i64>,
    follow: bool,
    fences: u64,
    /// The fence's message was read: its transaction's commit ends the drain.
    fenced: bool,
}

fn repl_err(address: &str, what: &str, e: pgwire_replication::PgWireError) -> Error {
    Error::new(ErrorKind::Source, format!("{address}: {what}: {e}"))
}

/// The statements that start capture: a publication of the keyed tables, then the slot (made
/// on its own: a slot cannot be made in a transaction that wrote).
pub(crate) fn install_plan(src: &mut PgSource) -> Result<crate::connect::CapturePlan> {
    let level = src.query("reading wal_level", "SHOW wal_level", &[])?;
    let level: String = level.first().map(|r| r.get(0)).unwrap_or_default();
    if level != "logical" {
        return Err(Error::new(
            ErrorKind::Source,
            format!(
                "{}: wal_level is {level}: following changes needs logical replication; run ALTER SYSTEM SET wal_level = logical; then restart the server",
                src.address.redacted
            ),
        ));
    }
    let plans = crate::connect::Source::discover(src, &crate::connect::Selection::default())?;
    let (mut tables, mut left_out) = (Vec::new(), Vec::new());
    for p in &plans {
        let t = &src.tables[&p.schema.stream];
        if t.key.is_empty() {
            left_out.push((
                p.schema.stream.clone(),
                "it has no primary key: a change names its row by key".to_owned(),
            ));
        } else {
            tables.push(t.qualified());
        }
    }
    src.pause_snapshot()?;
    let exists = !src
        .query(
            "looking for the publication",
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&SLOT],
        )?
        .is_empty();
    let mut statements = Vec::new();
    if !exists && !tables.is_empty() {
        statements.push(format!("CREATE PUBLICATION {SLOT} FOR TABLE {}", tables.join(", ")));
    }
    let slot = slot_name(src);
    let exists = !src
        .query(
            "looking for the slot",
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )?
        .is_empty();
    if !exists {
        statements.push(format!(
            "SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')"
        ));
    }
    let names = plans
        .iter()
        .filter(|p| !src.tables[&p.schema.stream].key.is_empty())
        .map(|p| p.schema.stream.clone())
        .collect();
    Ok(crate::connect::CapturePlan {
        statements,
        tables: names,
        left_out,
    })
}

/// The statements that stop capture: the slot (which holds WAL until dropped) and the
/// publication, those that exist.
pub(crate) fn remove_plan(src: &mut PgSource) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let name = slot_name(src);
    let slot = src.query(
        "looking for the slot",
        "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
        &[&name],
    )?;
    if let Some(r) = slot.first() {
        if r.get::<_, bool>(0) {
            return Err(Error::new(
                ErrorKind::Source,
                format!(
                    "{}: the slot {name} is in use (a ferry-export --follow is reading it): stop it first",
                    src.address.redacted
                ),
            ));
        }
        out.push(format!("SELECT pg_drop_replication_slot('{name}')"));
    }
    if !src
        .query(
            "looking for the publication",
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&SLOT],
        )?
        .is_empty()
    {
        out.push(format!("DROP PUBLICATION {SLOT}"));
    }
    Ok(out)
}

/// Whether capture is installed, and the WAL its slot holds back: (confirmed position, bytes
/// retained, active).
pub(crate) fn status(src: &mut PgSource) -> Result<Option<(String, i64, bool)>> {
    let slot = slot_name(src);
    let rows = src.query(
        "reading the slot",
        "SELECT coalesce(confirmed_flush_lsn::text, ''), coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::bigint, active
         FROM pg_replication_slots WHERE slot_name = $1",
        &[&slot],
    )?;
    Ok(rows.first().map(|r| (r.get(0), r.get(1), r.get(2))))
}

/// Warn when this database's capture slot holds more WAL than `FERRY_SLOT_WARN_BYTES` and no
/// follower reads it: one left after a migration keeps every change from then on, until the
/// server's disk is full. Said by every read of the database (an export, a validation), so the
/// people who made it see it; a slot that cannot be read is left unsaid.
pub(crate) fn warn_if_forgotten(src: &mut PgSource) {
    let limit = crate::tuning::Tuning::get().slot_warn_bytes;
    if let Ok(Some((_, retained, false))) = status(src)
        && retained as u64 > limit
    {
        tracing::warn!(
            slot = %slot_name(src),
            wal = %indicatif::HumanBytes(retained as u64),
            "ferry's capture slot on {} holds this much WAL and no follower is reading it: it keeps every change until the disk is full; follow it (ferry-export {} --follow | ferry-import TARGET) or, when the migration is over, remove it (ferry capture remove {} --confirm)",
            src.address.redacted,
            src.address.redacted,
            src.address.redacted
        );
    }
}

/// Run capture's statements, each on its own.
pub(crate) fn apply(src: &mut PgSource, statements: &[String]) -> Result<()> {
    src.pause_snapshot()?;
    for s in statements {
        src.client
            .batch_execute(s)
            .map_err(|e| src.err(&format!("running {s}"), e))?;
    }
    Ok(())
}

/// pgoutput's messages, read field by field.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("a change message ends early".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> std::result::Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> std::result::Result<u16, String> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().unwrap_or_default()))
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap_or_default()))
    }
    fn cstr(&mut self) -> std::result::Result<String, String> {
        let end = self.0.iter().position(|&b| b == 0).ok_or("a name without its end")?;
        let s = String::from_utf8_lossy(&self.0[..end]).into_owned();
        self.0 = &self.0[end + 1..];
        Ok(s)
    }
    /// A tuple's columns: None for NULL, Some(text) for a value; an unchanged TOASTed value is
    /// an empty marker the key never is.
    fn tuple(&mut self) -> std::result::Result<Vec<Option<&'a [u8]>>, String> {
        let n = self.u16()?;
        let mut out = Vec::with_capacity(n as usize);
        for _ in 0..n {
            out.push(match self.u8()? {
                b'n' | b'u' => None,
                b't' | b'b' => {
                    let len = self.u32()? as usize;
                    Some(self.take(len)?)
                }
                other => return Err(format!("a column of unknown kind {:?}", other as char)),
            });
        }
        Ok(out)
    }
}

impl Follow {
    /// One pgoutput message of the transaction being read: a table described, or a row's key.
    fn decode(&mut self, data: &[u8], tables: &HashMap<String, PgTable>) -> std::result::Result<(), String> {
        let mut r = Reader(data);
        let tag = r.u8()?;
        match tag {
            b'R' => {
                let id = r.u32()?;
                let (ns, name) = (r.cstr()?, r.cstr()?);
                let _identity = r.u8()?;
                let n = r.u16()?;
                let mut cols = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    let _flags = r.u8()?;
                    cols.push(r.cstr()?);
                    let _type = r.u32()?;
                    let _typmod = r.u32()?;
                }
                let stream = format!("{ns}.{name}");
                let rel = match tables.get(&stream) {
                    None => None,
                    Some(t) => {
                        let mut key = Vec::new();
                        for &k in &t.key {
                            let c = &t.columns[k];
                            let at = cols
                                .iter()
                                .position(|n| *n == c.name)
                                .ok_or_else(|| format!("{stream}: key column {} is not in its changes", c.name))?;
                            key.push((at, c.kind));
                        }
                        Some(Relation { stream, key })
                    }
                };
                self.relations.insert(id, rel);
            }
            b'I' | b'U' | b'D' => {
                let id = r.u32()?;
                let mut kind = r.u8()?;
                if tag != b'I' && (kind == b'K' || kind == b'O') {
                    let old = r.tuple()?;
                    self.key_of(id, &old)?;
                    if tag == b'D' {
                        return Ok(());
                    }
                    kind = r.u8()?;
                }
                if kind != b'N' {
                    return Err(format!("a change of kind {:?} without its new row", kind as char));
                }
                let new = r.tuple()?;
                self.key_of(id, &new)?;
            }
            b'T' => {
                let n = r.u32()?;
                let _options = r.u8()?;
                let mut names = Vec::new();
                for _ in 0..n {
                    let id = r.u32()?;
                    if let Some(Some(rel)) = self.relations.get(&id) {
                        names.push(rel.stream.clone());
                    }
                }
                if !names.is_empty() {
                    return Err(format!(
                        "{} truncated: a TRUNCATE cannot be followed row by row; copy the table again (ferry-export --table ... | ferry-import --fresh)",
                        names.join(", ")
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The key of a changed row of table `id`, kept for its transaction.
    fn key_of(&mut self, id: u32, tuple: &[Option<&[u8]>]) -> std::result::Result<(), String> {
        let rel = match self.relations.get(&id) {
            Some(Some(rel)) => rel,
            Some(None) => return Ok(()),
            None => return Err(format!("a change to table {id} before its description")),
        };
        let mut key = Vec::with_capacity(rel.key.len());
        for &(at, kind) in &rel.key {
            key.push(match tuple.get(at).copied().flatten() {
                Some(text) => read_field(kind, text)?,
                None => Value::Null,
            });
        }
        self.txn.push((rel.stream.clone(), key));
        Ok(())
    }

    /// The next event from the slot, waiting up to `wait` (None: nothing came).
    fn next_event(&mut self, wait: Duration, address: &str) -> Result<Option<ReplicationEvent>> {
        let repl = &mut self.repl;
        match self
            .rt
            .block_on(async { tokio::time::timeout(wait, repl.recv()).await })
        {
            Err(_) => Ok(None),
            Ok(Err(e)) => Err(repl_err(address, "reading the replication slot", e)),
            Ok(Ok(None)) => Err(Error::new(
                ErrorKind::Source,
                format!("{address}: the replication stream ended"),
            )),
            Ok(Ok(Some(ev))) => Ok(Some(ev)),
        }
    }

    /// Take one event: a transaction's end moves its keys to those ready. True for the fence
    /// `nonce` coming back.
    fn take(
        &mut self,
        ev: ReplicationEvent,
        tables: &HashMap<String, PgTable>,
        nonce: &str,
    ) -> std::result::Result<bool, String> {
        match ev {
            ReplicationEvent::XLogData { data, .. } => self.decode(&data, tables)?,
            ReplicationEvent::Begin { .. } => self.txn.clear(),
            ReplicationEvent::Commit {
                end_lsn,
                commit_time_micros,
                ..
            } => {
                let end = end_lsn.as_u64();
                for (stream, key) in self.txn.drain(..) {
                    self.ready.push_back((end, stream, key));
                }
                self.last_commit = self.last_commit.max(end);
                self.last_commit_time = Some(commit_time_micros);
                // The position is the fence's commit: the next drain starts after all of it.
                if std::mem::take(&mut self.fenced) {
                    return Ok(true);
                }
            }
            ReplicationEvent::Message { prefix, content, .. }
                if prefix == SLOT && !nonce.is_empty() && content.as_ref() == nonce.as_bytes() =>
            {
                self.fenced = true;
            }
            _ => {}
        }
        Ok(false)
    }
}

impl PgSource {
    /// End the read snapshot, if one is open (the next read starts a new one).
    fn pause_snapshot(&mut self) -> Result<()> {
        if self.in_snapshot {
            self.client
                .batch_execute("COMMIT")
                .map_err(|e| self.err("ending a snapshot", e))?;
            self.in_snapshot = false;
        }
        Ok(())
    }

    fn follow_mut(&mut self) -> Result<&mut Follow> {
        let address = self.address.redacted.clone();
        self.follow.as_mut().ok_or_else(|| {
            Error::new(
                ErrorKind::Source,
                format!("{address}: changes read before the follower started"),
            )
        })
    }

    /// Write a marker into the WAL and read the slot until it comes back: every transaction
    /// committed before it has then been read.
    fn fence(&mut self) -> Result<()> {
        let follow = self.follow_mut()?;
        follow.fences += 1;
        // Unique to this drain: a later drain that starts before this marker's commit reads it
        // again, and must not take it for its own.
        let nonce = format!(
            "{}-{}-{}",
            std::process::id(),
            jiff::Timestamp::now().as_nanosecond(),
            follow.fences
        );
        // In a transaction of its own: its commit flushes the WAL, which the server sends only
        // once flushed (a message outside one could wait for the next flush).
        self.pause_snapshot()?;
        self.client
            .batch_execute(&format!(
                "BEGIN; SELECT pg_logical_emit_message(true, '{SLOT}', '{nonce}'); COMMIT"
            ))
            .map_err(|e| self.err("marking the WAL", e))?;
        let address = self.address.redacted.clone();
        let deadline = Instant::now() + FENCE_WAIT;
        let Some(follow) = self.follow.as_mut() else {
            return Ok(());
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(ev) = follow.next_event(left, &address)? else {
                return Err(Error::new(
                    ErrorKind::Source,
                    format!("{address}: the replication slot did not deliver the changes within {FENCE_WAIT:?}"),
                ));
            };
            if follow
                .take(ev, &self.tables, &nonce)
                .map_err(|e| Error::new(ErrorKind::Source, format!("{address}: {e}")))?
            {
                return Ok(());
            }
        }
    }

    /// Read what the slot has now, waiting up to [`WAIT`] for the first of it.
    fn gather(&mut self) -> Result<()> {
        let address = self.address.redacted.clone();
        let Some(follow) = self.follow.as_mut() else {
            return Ok(());
        };
        let mut wait = WAIT;
        loop {
            let Some(ev) = follow.next_event(wait, &address)? else {
                return Ok(());
            };
            follow
                .take(ev, &self.tables, "")
                .map_err(|e| Error::new(ErrorKind::Source, format!("{address}: {e}")))?;
            // Once changes come, take what is there and go: the pass is not held up.
            wait = Duration::from_millis(1);
            if follow.ready.len() > 50_000 {
                return Ok(());
            }
        }
    }
}

impl ChangeSource for PgSource {
    fn start(&mut self, from: u64, follow: bool) -> Result<()> {
        let address = self.address.redacted.clone();
        if status(self)?.is_none() {
            return Err(Error::new(
                ErrorKind::Source,
                format!(
                    "{address}: no changes are being captured (no replication slot {}): run `ferry capture install {address}` first, then copy the tables, then export the changes",
                    slot_name(self)
                ),
            ));
        }
        let cfg = self.address.replication(&slot_name(self), SLOT, from)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::new(ErrorKind::Io, "starting the replication client").with_source(e))?;
        let repl = rt
            .block_on(ReplicationClient::connect(cfg))
            .map_err(|e| repl_err(&address, "starting logical replication", e))?;
        self.follow = Some(Follow {
            rt,
            repl,
            relations: HashMap::new(),
            txn: Vec::new(),
            ready: VecDeque::new(),
            last_commit: from,
            last_commit_time: None,
            follow,
            fences: 0,
            fenced: false,
        });
        Ok(())
    }

    fn latest_change(&mut self) -> Result<u64> {
        let follow = self.follow_mut()?.follow;
        if follow {
            self.gather()?;
        } else {
            self.fence()?;
        }
        // The rows are read in a snapshot taken after the changes arrived.
        self.pause_snapshot()?;
        self.snapshot()?;
        Ok(self.follow_mut()?.last_commit)
    }

    fn changed_keys(
        &mut self,
        after: u64,
        upto: u64,
        each: &mut dyn FnMut(&str, Vec<Value>) -> Result<()>,
    ) -> Result<()> {
        let f = self.follow_mut()?;
        while let Some((lsn, _, _)) = f.ready.front() {
            if *lsn > upto {
                break;
            }
            let Some((lsn, stream, key)) = f.ready.pop_front() else {
                break;
            };
            if lsn > after {
                each(&stream, key)?;
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
        let t = crate::connect::discovered(&self.tables, &self.address.redacted, stream)?.clone();
        let names: Vec<String> = t
            .key
            .iter()
            .map(|&k| crate::connect::sql::quote(&t.columns[k].name))
            .collect();
        let tuples: Vec<String> = keys
            .iter()
            .map(|key| {
                let lits: Vec<String> = t
                    .key
                    .iter()
                    .zip(key)
                    .map(|(&k, v)| key_literal(v, &t.columns[k]))
                    .collect();
                format!("({})", lits.join(", "))
            })
            .collect();
        let mut lookup = plan.clone();
        let cond = format!("({}) IN ({})", names.join(", "), tuples.join(", "));
        lookup.filter = Some(match &plan.filter {
            Some(f) => format!("({f}) AND {cond}"),
            None => cond,
        });
        let at: Vec<usize> = t
            .key
            .iter()
            .filter_map(|&k| shape.column_index(&t.columns[k].name))
            .collect();
        let mut found: HashMap<Vec<u8>, Vec<Value>> = HashMap::new();
        crate::connect::Source::scan(self, &lookup, shape, None, &mut |row| {
            let values: Vec<Value> = (0..shape.len()).map(|i| row.get(i).to_owned()).collect();
            found.insert(canonical_key(at.iter().map(|&i| &values[i])), values);
            Ok(())
        })?;
        Ok(keys.iter().map(|k| found.remove(&canonical_key(k))).collect())
    }

    fn trim(&mut self, upto: u64) -> Result<u64> {
        // The slot keeps every change until told the target has it.
        if let Some(f) = self.follow.as_ref()
            && upto > 0
        {
            f.repl.update_applied_lsn(Lsn(upto));
        }
        Ok(0)
    }

    fn pause(&mut self) -> Result<()> {
        self.pause_snapshot()
    }

    /// The WAL written since the position reached (a failed look is no answer: the follower's
    /// work does not stop for it).
    fn lag_bytes(&mut self) -> Option<u64> {
        let at = self.follow.as_ref()?.last_commit;
        let lsn = Lsn(at).to_pg_string();
        let rows = self
            .query(
                "measuring the lag",
                "SELECT greatest(pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn), 0)::bigint",
                &[&lsn],
            )
            .ok()?;
        rows.first().map(|r| r.get::<_, i64>(0) as u64)
    }

    fn lag(&self) -> Option<f64> {
        let t = self.follow.as_ref()?.last_commit_time?;
        // Microseconds since 2000-01-01, PostgreSQL's epoch.
        let now = jiff::Timestamp::now().as_microsecond() - 946_684_800_000_000;
        Some((now - t) as f64 / 1e6)
    }
}
