//! The stream's side of a table comparison: its rows hashed and spilled to disk in key order (or
//! hash order for a keyless table), with the STREAM_END checks, so memory stays bounded.

use super::hasher;
use std::collections::HashMap;
use std::io::BufRead;

use serde_json::{Value as Json, json};

use super::findings::detail;
use super::{Side, ValidateConfig};
use crate::canon::Canon;
use crate::connect::compare::Comparable;
use crate::connect::compare::TableMeta;
use crate::connect::sql::quote;
use crate::connect::sqlite::compare::SqliteTables;
use crate::error::{Context, Error, ErrorKind, Result};
use crate::protocol::side::FindingKind;
use crate::protocol::{DIGEST_ALGO, Kind, Line, Schema, StreamEnd, StreamReader};
use crate::row::{RowHash, RowShape, StreamDigest};
use crate::value::Value;

/// What a validation must see of a stream before it can prove anything from it: a BEGIN, an END
/// with status ok, and no fatal ERROR. A stream without them (empty input from a producer that
/// failed, a Singer tap's output, a truncated file) cannot say it is whole, so comparing it would
/// prove nothing.
#[derive(Debug, Default)]
pub(crate) struct Whole {
    began: bool,
    ended: bool,
    failed: Option<String>,
}

impl Whole {
    /// Note what a line says of the stream's wholeness.
    pub(crate) fn see(&mut self, line: &crate::protocol::Line<'_>) -> Result<()> {
        match line.kind {
            Kind::Begin => self.began = true,
            Kind::End => {
                let end: crate::protocol::End = line.parse()?;
                self.ended = true;
                if end.status != "ok" && self.failed.is_none() {
                    self.failed = Some(format!("its END (line {}) says status {:?}", line.no, end.status));
                }
            }
            Kind::Error => {
                let e: crate::protocol::ErrorMsg = line.parse()?;
                if e.fatal && self.failed.is_none() {
                    self.failed = Some(format!("line {}: {}", line.no, e.message));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// An error unless the stream was whole; `lines` is how many lines the input had.
    pub(crate) fn check(&self, lines: u64) -> Result<()> {
        let problem = if lines == 0 {
            "the input is empty: the command that should have produced the stream sent nothing (its error is above, or it was not run)".to_owned()
        } else if !self.began {
            "the input has no BEGIN: it is not a whole ferry stream (a Singer tap's output cannot say it is complete); validate the output of ferry-export".to_owned()
        } else if let Some(why) = &self.failed {
            format!("the producer failed ({why}): a stream from a failed run proves nothing")
        } else if !self.ended {
            format!(
                "the input ended after line {lines} without END: the producer stopped early (its error is above); a truncated stream proves nothing"
            )
        } else {
            return Ok(());
        };
        Err(Error::input(format!("{problem}; nothing was compared")))
    }
}

/// What reading the stream found wrong with one of its streams: (stream, kind, detail).
pub(super) type Problem = (String, FindingKind, serde_json::Map<String, Json>);

/// The stream side after reading the input: spill tables, schemas and what the stream said.
pub(super) struct StreamSide {
    pub(super) db: Box<dyn Comparable>,
    pub(super) metas: Vec<TableMeta>,
    pub(super) sides: HashMap<String, Side>,
    pub(super) source_address: String,
    /// Per stream: rows read, and the problems found while reading.
    pub(super) rows: HashMap<String, u64>,
    pub(super) problems: Vec<Problem>,
    /// Change streams: checked on their own (counts, digest), never compared as tables.
    pub(super) changes: Vec<String>,
}

/// Read the stream, checking it as it goes, into a temporary database: keys, constrained columns,
/// and each row's hash over the columns the target has (in their canonical forms).
pub(super) fn spill<R: BufRead>(cfg: &ValidateConfig, input: R, target: Option<&dyn Comparable>) -> Result<StreamSide> {
    let conn = crate::connect::compare::temporary_db()?;
    conn.execute_batch("BEGIN")
        .ctx(ErrorKind::Io, || "configuring a temporary database")?;
    let mut spiller = Spiller {
        conn,
        target,
        metas: vec![],
        sides: HashMap::new(),
        source_address: "-".to_owned(),
        problems: vec![],
        streams: HashMap::new(),
        row: Vec::new(),
    };
    let mut reader = StreamReader::new(input, cfg.max_line);
    let mut whole = Whole::default();
    while let Some(line) = reader.next_line()? {
        whole.see(&line)?;
        match line.kind {
            Kind::Begin => spiller.on_begin(&line)?,
            Kind::Schema => spiller.on_schema(&line)?,
            Kind::Record => spiller.on_record(&line)?,
            Kind::StreamEnd => spiller.on_stream_end(&line)?,
            _ => {}
        }
    }
    whole.check(reader.line_no())?;
    spiller.finish()
}

/// One stream being spilled.
struct Spilling {
    shape: RowShape,
    /// The shape rows are hashed with: the columns the target has (none to hash: no hash).
    common: Option<RowShape>,
    /// Indexes (in the stream's shape) of the spilled columns, and of the hashed ones with
    /// their canonical forms.
    spilled: Vec<usize>,
    hashed: Vec<(usize, Canon)>,
    insert: String,
    digest: StreamDigest,
    rows: u64,
    ended: bool,
    /// A change stream: its digest and counts are checked, its rows are not the table's.
    changes: bool,
}

/// The stream side being read: the temporary database, and what each stream said so far.
struct Spiller<'t> {
    conn: rusqlite::Connection,
    /// The target, whose columns and types decide what is hashed (none: checking alone).
    target: Option<&'t dyn Comparable>,
    metas: Vec<TableMeta>,
    sides: HashMap<String, Side>,
    source_address: String,
    problems: Vec<Problem>,
    streams: HashMap<String, Spilling>,
    /// The row being decoded, reused.
    row: Vec<Value>,
}

impl Spiller<'_> {
    fn problem(&mut self, stream: String, kind: FindingKind, pairs: &[(&str, Json)]) {
        self.problems.push((stream, kind, detail(pairs)));
    }

    fn on_begin(&mut self, line: &Line<'_>) -> Result<()> {
        let b: crate::protocol::Begin = line.parse()?;
        if let Some(s) = b.source {
            self.source_address = format!("{} (stream)", s.address);
        }
        Ok(())
    }

    /// A stream's SCHEMA: its spill table, and which columns are hashed, in which canonical form.
    fn on_schema(&mut self, line: &Line<'_>) -> Result<()> {
        let schema: Schema = line.parse()?;
        let shape = RowShape::from_schema(&schema)?;
        let meta = TableMeta::from_schema(&schema);
        let name = schema.stream.clone();
        if self.streams.contains_key(&name) {
            let message = "the SCHEMA changed mid-stream: rows are compared under the first one";
            self.problem(
                name,
                FindingKind::Unverified,
                &[("message", json!(message)), ("line", json!(line.no))],
            );
            return Ok(());
        }
        if schema.changes {
            return self.on_changes(schema, shape, line);
        }
        // Hash over the columns the target has (all of them when checking alone), each in the
        // canonical form the target's type gives it.
        let described = match self.target {
            Some(t) => t.describe(&t.table_for(&name))?,
            None => None,
        };
        let hashed: Vec<(usize, Canon)> = (0..shape.len())
            .filter_map(|i| {
                let col = &shape.columns[i].name;
                match (&described, self.target) {
                    (Some(d), _) if d.columns.iter().any(|(n, _)| n == col) => Some((i, d.canon_of(col))),
                    (Some(_), _) | (None, Some(_)) => None,
                    (None, None) => Some((i, Canon::Exact)),
                }
            })
            .collect();
        let hashed_names: Vec<String> = hashed.iter().map(|&(i, _)| shape.columns[i].name.clone()).collect();
        let common = hasher(&name, &hashed_names).ok();
        let cols = meta.constrained();
        let spilled: Vec<usize> = cols.iter().filter_map(|c| shape.column_index(c)).collect();
        let table = format!("s{}", self.sides.len());
        let mut ddl = format!("CREATE TABLE {table} (");
        for c in &cols {
            ddl.push_str(&quote(c));
            ddl.push_str(", ");
        }
        ddl.push_str("_ferry_h BLOB, _ferry_line INTEGER)");
        self.conn
            .execute_batch(&ddl)
            .ctx(ErrorKind::Io, || "writing a temporary database")?;
        let insert = format!("INSERT INTO {table} VALUES ({})", vec!["?"; cols.len() + 2].join(", "));
        self.sides.insert(name.clone(), Side::Spill { table, columns: cols });
        self.metas.push(meta);
        self.streams.insert(
            name,
            Spilling {
                shape,
                common,
                spilled,
                hashed,
                insert,
                digest: StreamDigest::default(),
                rows: 0,
                ended: false,
                changes: false,
            },
        );
        Ok(())
    }

    /// A change stream's SCHEMA: its changes are not the table, so there is nothing to compare
    /// the target's rows with (said, against a target); its STREAM_END is still checked.
    fn on_changes(&mut self, schema: Schema, shape: RowShape, line: &Line<'_>) -> Result<()> {
        let name = schema.stream.clone();
        if self.target.is_some() {
            let message = format!(
                "stream {name} carries changes, not the table's rows: compare the two stores themselves (ferry-validate SOURCE TARGET)"
            );
            self.problem(
                name.clone(),
                FindingKind::Unverified,
                &[("message", json!(message)), ("line", json!(line.no))],
            );
        }
        self.streams.insert(
            name,
            Spilling {
                shape,
                common: None,
                spilled: vec![],
                hashed: vec![],
                insert: String::new(),
                digest: StreamDigest::default(),
                rows: 0,
                ended: false,
                changes: true,
            },
        );
        Ok(())
    }

    /// A RECORD: into the stream's digest, and spilled with its hash and line.
    fn on_record(&mut self, line: &Line<'_>) -> Result<()> {
        let name = line.stream().to_owned();
        let Some(s) = self.streams.get_mut(&name) else {
            let message = json!("a RECORD before its stream's SCHEMA");
            self.problem(
                name,
                FindingKind::InvalidStream,
                &[("line", json!(line.no)), ("message", message)],
            );
            return Ok(());
        };
        let record = line.record()?;
        let row = &mut self.row;
        row.clear();
        row.resize(s.shape.len(), Value::Null);
        if let Err(e) = s.shape.decode_into(record, row) {
            self.problem(
                name,
                FindingKind::InvalidRecord,
                &[("line", json!(line.no)), ("message", json!(e))],
            );
            return Ok(());
        }
        let after_end = s.ended;
        s.rows += 1;
        if s.changes {
            let op = match line.is_fast() {
                true => line.full()?.head.op.map(|o| o.into_owned()),
                false => line.head.op.as_deref().map(str::to_owned),
            };
            match op.is_some_and(|o| o.eq_ignore_ascii_case("delete")) {
                true => s.digest.add_delete(&s.shape, row),
                false => s.digest.add_row(&s.shape, row),
            }
            return Ok(());
        }
        s.digest.add_row(&s.shape, row);
        let h: RowHash = match &s.common {
            Some(c) => {
                let vals: Vec<Value> = s
                    .hashed
                    .iter()
                    .map(|&(i, canon)| canon.of_value(row[i].clone()))
                    .collect();
                c.row_hash(&vals)
            }
            None => [0; 32],
        };
        let mut st = self
            .conn
            .prepare_cached(&s.insert)
            .ctx(ErrorKind::Io, || "writing a temporary database")?;
        let mut vals: Vec<&dyn rusqlite::ToSql> = s.spilled.iter().map(|&i| &row[i] as &dyn rusqlite::ToSql).collect();
        let line_no = line.no as i64;
        vals.push(&h);
        vals.push(&line_no);
        st.execute(&vals[..])
            .ctx(ErrorKind::Io, || "writing a temporary database")?;
        drop(st);
        if after_end {
            let message = json!("a RECORD after the stream's STREAM_END");
            self.problem(
                name,
                FindingKind::InvalidStream,
                &[("line", json!(line.no)), ("message", message)],
            );
        }
        Ok(())
    }

    /// A STREAM_END: its row count and digest against the rows that came.
    fn on_stream_end(&mut self, line: &Line<'_>) -> Result<()> {
        let end: StreamEnd = line.parse()?;
        let Some(s) = self.streams.get_mut(&end.stream) else {
            return Ok(());
        };
        s.ended = true;
        let (rows, digest) = (s.rows, s.digest.take_hex());
        if let Some(said) = end.rows
            && said != rows
        {
            let message = json!(format!("STREAM_END says {said} rows, the stream has {rows}"));
            self.problem(
                end.stream.clone(),
                FindingKind::StreamEndMismatch,
                &[("line", json!(line.no)), ("message", message)],
            );
        }
        if let Some(d) = &end.digest
            && d.algo == DIGEST_ALGO
            && d.value != digest
        {
            let message = json!(format!(
                "STREAM_END digest {} differs from the rows' digest {digest}",
                d.value
            ));
            self.problem(
                end.stream.clone(),
                FindingKind::StreamEndMismatch,
                &[("line", json!(line.no)), ("message", message)],
            );
        }
        Ok(())
    }

    /// The input is read: streams that never ended are problems; the spills are committed and
    /// indexed by key, so the ordered reads and foreign-key probes are cheap.
    fn finish(mut self) -> Result<StreamSide> {
        let mut rows = HashMap::new();
        let mut unended = Vec::new();
        for (name, s) in &self.streams {
            rows.insert(name.clone(), s.rows);
            if !s.ended {
                unended.push(name.clone());
            }
        }
        for name in unended {
            self.problem(
                name,
                FindingKind::StreamIncomplete,
                &[("message", json!("the stream has no STREAM_END"))],
            );
        }
        self.conn
            .execute_batch("COMMIT")
            .ctx(ErrorKind::Io, || "writing a temporary database")?;
        for m in &self.metas {
            if let Some(Side::Spill { table, columns }) = self.sides.get(&m.stream) {
                let key: &[String] = if m.key.is_empty() { columns } else { &m.key };
                if !key.is_empty() {
                    let cols = key
                        .iter()
                        .map(|c| format!("{} COLLATE BINARY", quote(c)))
                        .collect::<Vec<_>>()
                        .join(", ");
                    self.conn
                        .execute_batch(&format!("CREATE INDEX {table}_k ON {table} ({cols})"))
                        .ctx(ErrorKind::Io, || "indexing a temporary database")?;
                }
            }
        }
        let mut changes: Vec<String> = self
            .streams
            .iter()
            .filter(|(_, s)| s.changes)
            .map(|(n, _)| n.clone())
            .collect();
        changes.sort();
        Ok(StreamSide {
            changes,
            db: Box::new(SqliteTables::new(self.conn, self.source_address.clone())),
            metas: self.metas,
            sides: self.sides,
            source_address: self.source_address,
            rows,
            problems: self.problems,
        })
    }
}
