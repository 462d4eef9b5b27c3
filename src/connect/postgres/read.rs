//! A blocking handle on one PostgreSQL connection, for the stages that read (export, validate)
//! and for rollback.
//!
//! The statements run on the asynchronous client over a private single-thread runtime, so a
//! reader gets what the importer has: with `FERRY_TIMEOUT` set, a request left unanswered that
//! long fails (the watched socket of [`PgAddress::connect_async`], for a single TCP host), and the
//! rows of a `COPY ... TO STDOUT` come in batches. The batches matter twice:
//! - speed: the blocking `postgres` client entered its runtime once per COPY message, that is
//!   once per row; this enters it once per batch of whatever the connection has received;
//! - a stall in the middle of a COPY: the server has answered, so the socket has nothing asked
//!   and no limit; the reader holds its own, `FERRY_TIMEOUT` for each wait for more rows.

use std::ops::Range;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use futures_util::Stream;
use tokio::runtime::Runtime;
use tokio_postgres::types::ToSql;
use tokio_postgres::{CopyOutStream, Row};

use super::conn::PgAddress;
use super::copy as pgcopy;
use crate::error::{Error, ErrorKind, Result};
use crate::retry;

/// The batch a COPY reader takes at once at most (it takes less when less has arrived).
const BATCH: usize = 256 * 1024;

pub(crate) struct PgConn {
    rt: Runtime,
    client: tokio_postgres::Client,
    limit: Option<Duration>,
}

impl PgConn {
    /// Connect, retrying while the server is unreachable or starting (see `connect_async`).
    pub(crate) fn open(address: &PgAddress) -> Result<PgConn> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::new(ErrorKind::Io, "starting the PostgreSQL client").with_source(e))?;
        let client = address.connect_async(&rt)?;
        Ok(PgConn {
            rt,
            client,
            limit: retry::answer_timeout(None),
        })
    }

    pub(crate) fn batch_execute(&self, sql: &str) -> std::result::Result<(), tokio_postgres::Error> {
        self.rt.block_on(self.client.batch_execute(sql))
    }

    pub(crate) fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<Vec<Row>, tokio_postgres::Error> {
        self.rt.block_on(self.client.query(sql, params))
    }

    pub(crate) fn query_one(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<Row, tokio_postgres::Error> {
        self.rt.block_on(self.client.query_one(sql, params))
    }

    /// Run `stmts` in one transaction; the rows each changed. Rolled back on the first error.
    pub(crate) fn execute_in_transaction(
        &mut self,
        stmts: &[String],
    ) -> std::result::Result<Vec<u64>, tokio_postgres::Error> {
        self.rt.block_on(async {
            let tx = self.client.transaction().await?;
            let mut changed = Vec::with_capacity(stmts.len());
            for sql in stmts {
                changed.push(tx.execute(sql.as_str(), &[]).await?);
            }
            tx.commit().await?;
            Ok(changed)
        })
    }

    /// Start `COPY (...) TO STDOUT`; its rows are read through [`std::io::BufRead`].
    pub(crate) fn copy_out(&self, sql: &str) -> std::result::Result<CopyLines<'_>, tokio_postgres::Error> {
        let stream = self.rt.block_on(self.client.copy_out(sql))?;
        Ok(CopyLines {
            rt: &self.rt,
            stream: Box::pin(stream),
            limit: self.limit,
            buf: Vec::with_capacity(BATCH),
            pos: 0,
            line: Vec::new(),
            done: false,
            failed: None,
            broken: None,
        })
    }
}

/// The text of a COPY's rows, read a batch at a time. Once the COPY has ended it reads nothing
/// more (the connection has moved on).
pub(crate) struct CopyLines<'a> {
    rt: &'a Runtime,
    stream: Pin<Box<CopyOutStream>>,
    limit: Option<Duration>,
    buf: Vec<u8>,
    pos: usize,
    /// The row being read, reused for every row.
    line: Vec<u8>,
    done: bool,
    /// An error that came after rows of the last batch: reported once those are read.
    failed: Option<tokio_postgres::Error>,
    /// The error the COPY ended with, repeated to every later read (never taken for its end).
    broken: Option<(std::io::ErrorKind, String)>,
}

impl CopyLines<'_> {
    /// The next row: its fields unescaped into `buf`, each field's place in it (`None` for NULL).
    /// False at the end of the COPY.
    pub(crate) fn next_row(
        &mut self,
        buf: &mut Vec<u8>,
        fields: &mut Vec<Option<Range<usize>>>,
    ) -> std::io::Result<bool> {
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        let got = std::io::BufRead::read_until(self, b'\n', &mut line);
        let more = matches!(got, Ok(n) if n > 0);
        if more {
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            pgcopy::split_text(&line, buf, fields);
        }
        self.line = line;
        got.map(|_| more)
    }

    /// Wait for at least one message, then take every one already received, up to [`BATCH`].
    fn fetch(&mut self) -> std::io::Result<()> {
        self.buf.clear();
        self.pos = 0;
        let got = match self.failed.take() {
            Some(e) => Err(std::io::Error::other(e)),
            None => self.take(),
        };
        if let Err(e) = &got {
            self.broken = Some((e.kind(), e.to_string()));
        }
        got
    }

    fn take(&mut self) -> std::io::Result<()> {
        let (stream, buf, done, failed) = (&mut self.stream, &mut self.buf, &mut self.done, &mut self.failed);
        let batch = std::future::poll_fn(|cx| {
            loop {
                match stream.as_mut().poll_next(cx) {
                    Poll::Ready(Some(Ok(b))) => {
                        buf.extend_from_slice(&b);
                        if buf.len() >= BATCH {
                            return Poll::Ready(Ok(()));
                        }
                    }
                    Poll::Ready(Some(Err(e))) if buf.is_empty() => return Poll::Ready(Err(e)),
                    Poll::Ready(Some(Err(e))) => {
                        *failed = Some(e);
                        return Poll::Ready(Ok(()));
                    }
                    Poll::Ready(None) => {
                        *done = true;
                        return Poll::Ready(Ok(()));
                    }
                    Poll::Pending if buf.is_empty() => return Poll::Pending,
                    Poll::Pending => return Poll::Ready(Ok(())),
                }
            }
        });
        match self.limit {
            None => self.rt.block_on(batch).map_err(std::io::Error::other),
            Some(limit) => match self.rt.block_on(async { tokio::time::timeout(limit, batch).await }) {
                Ok(got) => got.map_err(std::io::Error::other),
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "no more rows from the server in {:.0} s (FERRY_TIMEOUT)",
                        limit.as_secs_f64()
                    ),
                )),
            },
        }
    }
}

impl std::io::Read for CopyLines<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = {
            let have = std::io::BufRead::fill_buf(self)?;
            let n = have.len().min(out.len());
            out[..n].copy_from_slice(&have[..n]);
            n
        };
        std::io::BufRead::consume(self, n);
        Ok(n)
    }
}

impl std::io::BufRead for CopyLines<'_> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.pos == self.buf.len() {
            if let Some((kind, message)) = &self.broken {
                return Err(std::io::Error::new(*kind, message.clone()));
            }
            if !self.done {
                self.fetch()?;
            }
        }
        Ok(&self.buf[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
    }
}
