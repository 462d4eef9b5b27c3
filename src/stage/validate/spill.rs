//! The stream's side of a table comparison: its rows hashed and spilled to disk in key order (or
//! hash order for a keyless table), with the STREAM_END checks, so memory stays bounded.

use super::hasher;
use std::collections::HashMap;
use std::io::BufRead;

use serde_json::{Value as Json, json};

use super::db::Db;
use super::findings::detail;
use super::{Meta, Side, ValidateConfig};
use crate::canon::Canon;
use crate::connect::sql::quote;
use crate::error::{Context, Error, ErrorKind, Result};
use crate::protocol::{DIGEST_ALGO, Kind, Schema, StreamEnd, StreamReader};
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

/// The stream side after reading the input: spill tables, schemas and what the stream said.
pub(super) struct StreamSide {
    pub(super) db: Db,
    pub(super) metas: Vec<Meta>,
    pub(super) sides: HashMap<String, Side>,
    pub(super) source_address: String,
    /// Per stream: rows read, and the problems found while reading.
    pub(super) rows: HashMap<String, u64>,
    pub(super) problems: Vec<(String, String, serde_json::Map<String, Json>)>,
}

/// Read the stream, checking it as it goes, into a temporary database: keys, constrained columns,
/// and each row's hash over the columns the target has (in their canonical forms).
pub(super) fn spill<R: BufRead>(cfg: &ValidateConfig, input: R, target: Option<&Db>) -> Result<StreamSide> {
    let conn = super::db::temporary_db()?;
    conn.execute_batch("BEGIN")
        .ctx(ErrorKind::Io, || "configuring a temporary database")?;
    struct Spilling {
        shape: RowShape,
        common: Option<RowShape>,
        /// Indexes (in the stream's shape) of the spilled columns, and of the hashed ones with
        /// their canonical forms.
        spilled: Vec<usize>,
        hashed: Vec<(usize, Canon)>,
        insert: String,
        digest: StreamDigest,
        rows: u64,
        ended: bool,
    }
    let mut metas = vec![];
    let mut sides = HashMap::new();
    let mut source_address = "-".to_owned();
    let mut problems = vec![];
    let mut streams: HashMap<String, Spilling> = HashMap::new();
    let mut reader = StreamReader::new(input, cfg.max_line);
    let mut whole = Whole::default();
    let mut row = Vec::new();
    while let Some(line) = reader.next_line()? {
        whole.see(&line)?;
        match line.kind {
            Kind::Begin => {
                let b: crate::protocol::Begin = line.parse()?;
                if let Some(s) = b.source {
                    source_address = format!("{} (stream)", s.address);
                }
            }
            Kind::Schema => {
                let schema: Schema = line.parse()?;
                let shape = RowShape::from_schema(&schema)?;
                let meta = Meta::from_schema(&schema);
                let name = schema.stream.clone();
                if streams.contains_key(&name) {
                    problems.push((
                        name.clone(),
                        "unverified".into(),
                        detail(&[
                            (
                                "message",
                                json!("the SCHEMA changed mid-stream: rows are compared under the first one"),
                            ),
                            ("line", json!(line.no)),
                        ]),
                    ));
                    continue;
                }
                // Hash over the columns the target has (all of them when checking alone), each
                // in the canonical form the target's type gives it.
                let described = match target {
                    Some(t) => t.describe(&t.table_for(&name))?,
                    None => None,
                };
                let hashed: Vec<(usize, Canon)> = (0..shape.len())
                    .filter_map(|i| {
                        let col = &shape.columns[i].name;
                        match (&described, target) {
                            (Some(d), _) if d.columns.iter().any(|(n, _)| n == col) => Some((i, d.canon_of(col))),
                            (Some(_), _) | (None, Some(_)) => None,
                            (None, None) => Some((i, Canon::Exact)),
                        }
                    })
                    .collect();
                let common = hasher(
                    &name,
                    &hashed
                        .iter()
                        .map(|&(i, _)| shape.columns[i].name.clone())
                        .collect::<Vec<_>>(),
                )
                .ok();
                let cols = meta.constrained();
                let spilled: Vec<usize> = cols.iter().filter_map(|c| shape.column_index(c)).collect();
                let table = format!("s{}", sides.len());
                let mut ddl = format!("CREATE TABLE {table} (");
                for c in &cols {
                    ddl.push_str(&quote(c));
                    ddl.push_str(", ");
                }
                ddl.push_str("_ferry_h BLOB, _ferry_line INTEGER)");
                conn.execute_batch(&ddl)
                    .ctx(ErrorKind::Io, || "writing a temporary database")?;
                let insert = format!("INSERT INTO {table} VALUES ({})", vec!["?"; cols.len() + 2].join(", "));
                sides.insert(name.clone(), Side::Spill { table, columns: cols });
                metas.push(meta);
                streams.insert(
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
                    },
                );
            }
            Kind::Record => {
                let name = line.stream().to_owned();
                let Some(s) = streams.get_mut(&name) else {
                    problems.push((
                        name,
                        "invalid_stream".into(),
                        detail(&[
                            ("line", json!(line.no)),
                            ("message", json!("a RECORD before its stream's SCHEMA")),
                        ]),
                    ));
                    continue;
                };
                let record = line.record()?;
                row.clear();
                row.resize(s.shape.len(), Value::Null);
                if let Err(e) = s.shape.decode_into(record, &mut row) {
                    problems.push((
                        name,
                        "invalid_record".into(),
                        detail(&[("line", json!(line.no)), ("message", json!(e))]),
                    ));
                    continue;
                }
                if s.ended {
                    problems.push((
                        name.clone(),
                        "invalid_stream".into(),
                        detail(&[
                            ("line", json!(line.no)),
                            ("message", json!("a RECORD after the stream's STREAM_END")),
                        ]),
                    ));
                }
                s.digest.add_row(&s.shape, &row);
                s.rows += 1;
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
                let mut st = conn
                    .prepare_cached(&s.insert)
                    .ctx(ErrorKind::Io, || "writing a temporary database")?;
                let mut vals: Vec<&dyn rusqlite::ToSql> =
                    s.spilled.iter().map(|&i| &row[i] as &dyn rusqlite::ToSql).collect();
                let line_no = line.no as i64;
                vals.push(&h);
                vals.push(&line_no);
                st.execute(&vals[..])
                    .ctx(ErrorKind::Io, || "writing a temporary database")?;
            }
            Kind::StreamEnd => {
                let end: StreamEnd = line.parse()?;
                let Some(s) = streams.get_mut(&end.stream) else {
                    continue;
                };
                s.ended = true;
                if let Some(rows) = end.rows
                    && rows != s.rows
                {
                    problems.push((
                        end.stream.clone(),
                        "stream_end_mismatch".into(),
                        detail(&[
                            ("line", json!(line.no)),
                            (
                                "message",
                                json!(format!("STREAM_END says {rows} rows, the stream has {}", s.rows)),
                            ),
                        ]),
                    ));
                }
                let digest = s.digest.take_hex();
                if let Some(d) = &end.digest
                    && d.algo == DIGEST_ALGO
                    && d.value != digest
                {
                    problems.push((
                        end.stream.clone(),
                        "stream_end_mismatch".into(),
                        detail(&[
                            ("line", json!(line.no)),
                            (
                                "message",
                                json!(format!(
                                    "STREAM_END digest {} differs from the rows' digest {digest}",
                                    d.value
                                )),
                            ),
                        ]),
                    ));
                }
            }
            _ => {}
        }
    }
    whole.check(reader.line_no())?;
    let mut rows = HashMap::new();
    for (name, s) in &streams {
        rows.insert(name.clone(), s.rows);
        if !s.ended {
            problems.push((
                name.clone(),
                "stream_incomplete".into(),
                detail(&[("message", json!("the stream has no STREAM_END"))]),
            ));
        }
    }
    conn.execute_batch("COMMIT")
        .ctx(ErrorKind::Io, || "writing a temporary database")?;
    // Index the spills by key so the ordered reads and foreign-key probes are cheap.
    for m in &metas {
        if let Some(Side::Spill { table, columns }) = sides.get(&m.stream) {
            let key: Vec<String> = if m.key.is_empty() {
                columns.clone()
            } else {
                m.key.clone()
            };
            if !key.is_empty() {
                let cols = key
                    .iter()
                    .map(|c| format!("{} COLLATE BINARY", quote(c)))
                    .collect::<Vec<_>>()
                    .join(", ");
                conn.execute_batch(&format!("CREATE INDEX {table}_k ON {table} ({cols})"))
                    .ctx(ErrorKind::Io, || "indexing a temporary database")?;
            }
        }
    }
    Ok(StreamSide {
        db: Db::Sqlite {
            conn,
            address: source_address.clone(),
        },
        metas,
        sides,
        source_address,
        rows,
        problems,
    })
}
