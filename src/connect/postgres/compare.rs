//! PostgreSQL as a validation side ([`Comparable`]): each column read in the canonical form of
//! its own type, text keys ordered `COLLATE "C"` (SQLite's BINARY order), rows through
//! `COPY TO` in text form.

use super::conn::{PgAddress, pg_error};
use super::read::PgConn;
use crate::canon::Canon;
use crate::connect::compare::{Comparable, Counter, Described, RowSink, Scan, duplicates_sql, view_name};
use crate::connect::sql::{literal, quote};
use crate::connect::table_name_for;
use crate::error::{Error, ErrorKind, Result};
use crate::shard::Range;
use crate::value::Value;

/// A PostgreSQL database a validation reads.
pub(crate) struct PgTables {
    client: Box<PgConn>,
    address: String,
    schema: String,
    /// `--schema` named it: every stream is looked for there.
    explicit: bool,
}

impl PgTables {
    /// The database at `url`; tables of streams that name no schema are looked for in `schema`
    /// (default `public`).
    pub(crate) fn open(url: &str, schema: Option<&str>) -> Result<PgTables> {
        let a = PgAddress::parse(url, "ferry-validate")?;
        let client = PgConn::open(&a)?;
        Ok(PgTables {
            client: Box::new(client),
            address: a.redacted,
            schema: schema.unwrap_or("public").to_owned(),
            explicit: schema.is_some(),
        })
    }

    fn pg_err(&self, what: &str, e: tokio_postgres::Error) -> Error {
        pg_error(&self.address, what, e)
    }
}

impl Comparable for PgTables {
    fn range_condition(&self, described: &Described, range: &Range) -> Option<String> {
        let Range::Keys { column, .. } = range else {
            return range.condition(&|c| quote(c), &|_| String::new());
        };
        let t = described
            .columns
            .iter()
            .find(|(n, _)| n == column)
            .map_or("text", |(_, t)| t.as_str());
        range.condition(&|c| super::catalog::in_byte_order(&quote(c), t), &|v| {
            super::catalog::literal_of(v, t)
        })
    }

    fn restricted(&self, expr: &str, cond: &str) -> Result<String> {
        let view = view_name();
        let sql = format!("CREATE TEMP VIEW {view} AS SELECT * FROM {expr} WHERE {cond}");
        self.client
            .batch_execute(&sql)
            .map_err(|e| self.pg_err(&format!("validating: {sql}"), e))?;
        Ok(format!("pg_temp.{view}"))
    }

    fn address(&self) -> &str {
        &self.address
    }

    fn tables(&self) -> Result<Vec<String>> {
        super::catalog::list_tables(&self.client, &self.schema)
            .map(|s| s.into_iter().collect())
            .map_err(|e| self.pg_err("listing tables", e))
    }

    /// `schema.table` when the stream came from a PostgreSQL schema (and `--schema` did not
    /// say where to look), else its table name.
    fn table_for(&self, stream: &str) -> String {
        match stream.split_once('.') {
            Some((s, _)) if !self.explicit && s != "main" => stream.to_owned(),
            _ => table_name_for(stream).to_owned(),
        }
    }

    fn table_expr(&self, table: &str) -> String {
        match table.split_once('.') {
            Some((s, t)) => format!("{}.{}", quote(s), quote(t)),
            None => format!("{}.{}", quote(&self.schema), quote(table)),
        }
    }

    fn describe(&self, table: &str) -> Result<Option<Described>> {
        let qualified = self.table_expr(table);
        let Some(columns) = super::catalog::table_columns(&self.client, &qualified)
            .map_err(|e| self.pg_err(&format!("describing {qualified}"), e))?
        else {
            return Ok(None);
        };
        let rows = self
            .client
            .query(
                "SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0
                 AND col_description(a.attrelid, a.attnum) LIKE 'ferry: x-sqlite-dynamic%'",
                &[&qualified],
            )
            .map_err(|e| self.pg_err(&format!("describing {qualified}"), e))?;
        let dynamic = rows.iter().map(|r| r.get(0)).collect();
        Ok(Some(Described {
            columns,
            dynamic,
            meta: None,
        }))
    }

    fn count_where(&self, table: &str, cond: &str) -> Result<u64> {
        let sql = format!("SELECT count(*) FROM {table} WHERE {cond}");
        self.client
            .query_one(sql.as_str(), &[])
            .map(|r| r.get::<_, i64>(0) as u64)
            .map_err(|e| self.pg_err(&format!("validating: {sql}"), e))
    }

    fn duplicates(&self, table: &str, cols: &[String], limit: usize) -> Result<Vec<(Vec<Value>, u64)>> {
        let sql = duplicates_sql(table, cols, limit, |c| format!("{}::text", quote(c)));
        let rows = self
            .client
            .query(sql.as_str(), &[])
            .map_err(|e| self.pg_err(&format!("validating: {sql}"), e))?;
        Ok(rows
            .iter()
            .map(|r| {
                let vals = (0..cols.len())
                    .map(|i| r.get::<_, Option<String>>(i).map_or(Value::Null, |s| Value::text(&s)))
                    .collect();
                (vals, r.get::<_, i64>(cols.len()) as u64)
            })
            .collect())
    }

    /// In SQLite's order (`COLLATE "C"`, NULL first), read through `COPY TO` in text form, each
    /// column as its own type needs.
    fn scan_rows(&self, s: &Scan<'_>, f: RowSink<'_>) -> Result<()> {
        let (client, address) = (&self.client, self.address.as_str());
        let Scan {
            table,
            key,
            key_canon,
            cols,
            canons,
            hasher,
            described,
            ..
        } = *s;
        let nk = key.len();
        let order = key
            .iter()
            .zip(key_canon)
            .map(|(k, c)| {
                // SQLite's order: bytes for text, NULL first.
                if matches!(c, Canon::Text | Canon::Exact) {
                    format!("{} COLLATE \"C\" NULLS FIRST", quote(k))
                } else {
                    format!("{} NULLS FIRST", quote(k))
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        // Each column read the way its own type needs (an array as JSON, money as numeric),
        // whatever the other side's type.
        let select = |c: &String, canon: &Canon| match described {
            Some(d) => d.select(c),
            None => canon.pg_select(&quote(c)),
        };
        let list = cols
            .iter()
            .zip(canons)
            .map(|(c, canon)| select(c, canon))
            .collect::<Vec<_>>()
            .join(", ");
        let pkeys = key
            .iter()
            .zip(key_canon)
            .map(|(k, c)| select(k, c))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = if nk == 0 {
            format!("COPY (SELECT {list} FROM {table}) TO STDOUT")
        } else {
            format!("COPY (SELECT {pkeys}, {list} FROM {table} ORDER BY {order}) TO STDOUT")
        };
        let mut lines = client
            .copy_out(sql.as_str())
            .map_err(|e| pg_error(address, &format!("validating: {sql}"), e))?;
        let address = address.to_owned();
        // One row's unescaped fields and their places, reused for every row.
        let (mut buf, mut fields) = (Vec::new(), Vec::new());
        let mut it = std::iter::from_fn(|| {
            match lines.next_row(&mut buf, &mut fields) {
                Ok(false) => return None,
                Ok(true) => {}
                Err(e) => {
                    return Some(Err(Error::new(
                        ErrorKind::Target,
                        format!("{address}: validating: reading rows"),
                    )
                    .with_source(e)));
                }
            }
            if fields.len() != nk + cols.len() {
                return Some(Err(Error::new(
                    ErrorKind::Target,
                    format!("{address}: validating: a row with {} fields", fields.len()),
                )));
            }
            let field = |i: usize| fields[i].clone().map(|r| &buf[r]);
            let k = (0..nk)
                .map(|i| key_canon[i].key_order(key_canon[i].of_pg_text(field(i))))
                .collect();
            let vals: Vec<Value> = (0..cols.len()).map(|i| canons[i].of_pg_text(field(nk + i))).collect();
            let h = hasher(&vals);
            Some(Ok((k, h, None, Some(vals))))
        })
        // Once COPY has ended, the connection has moved on: never read past the end.
        .fuse();
        f(&mut it)
    }

    fn typed(&self) -> bool {
        true
    }

    /// The sequences the table's columns own (serial, identity), each with its last value (one
    /// that never gave a number stands one step before its start) and the column's largest.
    /// Descending sequences are left out.
    fn counters(&self, table: &str) -> Result<Vec<Counter>> {
        let qualified = self.table_expr(table);
        let what = format!("reading the sequences of {qualified}");
        let rows = self
            .client
            .query(
                "SELECT a.attname::text, s.seq::text, has_sequence_privilege(s.seq, 'SELECT,USAGE'),
                        coalesce(CASE WHEN has_sequence_privilege(s.seq, 'SELECT,USAGE') THEN pg_sequence_last_value(s.seq) END,
                                 p.seqstart - p.seqincrement)
                 FROM pg_attribute a
                 CROSS JOIN LATERAL (SELECT pg_get_serial_sequence(a.attrelid::regclass::text, a.attname)::regclass AS seq) s
                 JOIN pg_sequence p ON p.seqrelid = s.seq
                 WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped AND p.seqincrement > 0
                 ORDER BY a.attnum",
                &[&qualified],
            )
            .map_err(|e| self.pg_err(&what, e))?;
        let mut counters = Vec::new();
        for r in rows {
            let (column, sequence, readable): (String, String, bool) = (r.get(0), r.get(1), r.get(2));
            if !readable {
                tracing::warn!(table = %qualified, column, sequence, "not compared: no privilege to read the sequence");
                continue;
            }
            let max = self
                .client
                .query_one(&format!("SELECT max({})::bigint FROM {qualified}", quote(&column)), &[])
                .map_err(|e| self.pg_err(&what, e))?
                .get(0);
            counters.push(Counter {
                column,
                last: r.get(3),
                max,
                fix: Some(format!("SELECT setval({}, {{n}})", literal(Some(&sequence)))),
            });
        }
        Ok(counters)
    }
}
