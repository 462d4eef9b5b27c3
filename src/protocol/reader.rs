//! Reading the stream: one line at a time, with line numbers, a length limit and clear errors.
//!
//! Each line is parsed once into a [`Head`]: the kind, the stream and, for RECORD, the record as raw
//! JSON (validated but not built), so a stage decides what to do with a line before paying for a
//! full parse, and passes untouched lines on byte for byte.

use std::borrow::Cow;
use std::io::{BufRead, Read};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::Kind;
use crate::error::{Error, ErrorKind, Result};

/// The fields every stage looks at first.
#[derive(Debug, Deserialize)]
pub struct Head<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow, default)]
    pub stream: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub record: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub op: Option<Cow<'a, str>>,
}

/// One line of input.
#[derive(Debug)]
pub struct Line<'a> {
    /// 1-based line number in the input.
    pub no: u64,
    /// The line without its terminator.
    pub text: &'a str,
    pub kind: Kind,
    pub head: Head<'a>,
    /// A RECORD line in the writer's own shape (`{"type":"RECORD","stream":"s","record":{...}}`,
    /// with `"op":"upsert"` or `"op":"delete"` before the record in a change stream): the text
    /// that should be its record, read without a JSON pass (see [`Line::record_text`]).
    fast: Option<&'a str>,
}

/// The record text of a line in the writer's own shape, its stream name and its op; `None` for
/// any other line. The text is not checked: it is the record only if it decodes as exactly one
/// object.
fn fast_record(text: &str) -> Option<(&str, Option<&'static str>, &str)> {
    let rest = text.strip_prefix(r#"{"type":"RECORD","stream":""#)?;
    let q = rest.find('"')?;
    let name = &rest[..q];
    if name.contains('\\') {
        return None;
    }
    let mut rest = &rest[q + 1..];
    let mut op = None;
    for (spelt, o) in [(r#","op":"upsert""#, "upsert"), (r#","op":"delete""#, "delete")] {
        if let Some(r) = rest.strip_prefix(spelt) {
            (rest, op) = (r, Some(o));
        }
    }
    let rec = rest.strip_prefix(r#","record":"#)?.strip_suffix('}')?;
    rec.starts_with('{').then_some((name, op, rec))
}

impl<'a> Line<'a> {
    /// The stream named by the line, or "" when it has none.
    pub fn stream(&self) -> &str {
        self.head.stream.as_deref().unwrap_or("")
    }

    /// Whether the line was read on the fast path: its record text is unchecked, and if it does
    /// not decode as exactly one object, [`Line::full`] reads the line properly.
    pub fn is_fast(&self) -> bool {
        self.fast.is_some()
    }

    /// The record's JSON text (on the fast path, unchecked).
    pub fn record_text(&self) -> Result<&'a str> {
        match (self.fast, self.head.record) {
            (Some(t), _) => Ok(t),
            (None, Some(r)) => Ok(r.get()),
            (None, None) => Err(self.error("RECORD has no \"record\" object")),
        }
    }

    /// The line parsed in full.
    pub fn full(&self) -> Result<Line<'a>> {
        let head: Head<'a> = serde_json::from_str(self.text)
            .map_err(|e| Error::input(format!("line {} is not a valid protocol message: {e}", self.no)))?;
        Ok(Line {
            no: self.no,
            text: self.text,
            kind: Kind::parse(&head.kind),
            head,
            fast: None,
        })
    }

    /// Parse the whole line as a typed message body. `type` is taken out first: the body types
    /// keep unknown fields for passing on, and the kind is written back by the writer.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T> {
        let bad = |e: serde_json::Error| self.error(format!("not a valid {} message: {}", self.kind.as_str(), e));
        let mut fields: serde_json::Map<String, serde_json::Value> = serde_json::from_str(self.text).map_err(bad)?;
        fields.remove("type");
        serde_json::from_value(serde_json::Value::Object(fields)).map_err(bad)
    }

    /// An input error naming this line (and its stream, if any).
    pub fn error(&self, message: impl AsRef<str>) -> Error {
        match self.head.stream.as_deref() {
            Some(s) if !s.is_empty() => Error::input(format!("line {} (stream {s}): {}", self.no, message.as_ref())),
            _ => Error::input(format!("line {}: {}", self.no, message.as_ref())),
        }
    }

    /// The `record` object, required on RECORD lines.
    pub fn record(&self) -> Result<&'a RawValue> {
        if let Some(t) = self.fast {
            return match serde_json::from_str::<&'a RawValue>(t) {
                Ok(r) => Ok(r),
                Err(_) => self.full()?.record(),
            };
        }
        self.head
            .record
            .ok_or_else(|| self.error("RECORD has no \"record\" object"))
    }
}

/// Reads protocol lines from any `BufRead`.
pub struct StreamReader<R> {
    inner: R,
    buf: Vec<u8>,
    line_no: u64,
    bytes: u64,
    max_line: usize,
}

impl<R: BufRead> StreamReader<R> {
    pub fn new(inner: R, max_line: usize) -> Self {
        StreamReader {
            inner,
            buf: Vec::with_capacity(64 * 1024),
            line_no: 0,
            bytes: 0,
            max_line,
        }
    }

    /// Number of the last line read.
    pub fn line_no(&self) -> u64 {
        self.line_no
    }

    /// Bytes consumed so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Append the next line (with its newline, if it has one) to `buf`, reading at most `limit`
    /// bytes: `BufRead::read_until` with the `memchr` crate's vectorised search, which the import
    /// of every row goes through.
    fn read_line(&mut self, limit: usize) -> std::io::Result<usize> {
        let mut n = 0;
        while n < limit {
            let available = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                break;
            }
            let window = &available[..available.len().min(limit - n)];
            let (take, done) = match memchr::memchr(b'\n', window) {
                Some(i) => (i + 1, true),
                None => (window.len(), false),
            };
            self.buf.extend_from_slice(&window[..take]);
            self.inner.consume(take);
            n += take;
            if done {
                break;
            }
        }
        Ok(n)
    }

    /// The next non-empty line, or `None` at end of input.
    pub fn next_line(&mut self) -> Result<Option<Line<'_>>> {
        // A stage asked to stop (Ctrl-C) stops here, between lines: at a line it has not
        // started, or at an end of input that came only because the producer was stopped too.
        crate::interrupt::check()?;
        let terminated = loop {
            self.buf.clear();
            // Read at most the limit plus "\r\n": a longer line is refused without being held.
            let n = self.read_line(self.max_line + 2).map_err(|e| {
                Error::new(ErrorKind::Io, format!("reading input after line {}", self.line_no)).with_source(e)
            })?;
            if n == 0 {
                crate::interrupt::check()?;
                return Ok(None);
            }
            self.line_no += 1;
            self.bytes += n as u64;
            let terminated = self.buf.last() == Some(&b'\n');
            if terminated {
                self.buf.pop();
                if self.buf.last() == Some(&b'\r') {
                    self.buf.pop();
                }
            }
            if self.buf.len() > self.max_line {
                return Err(Error::input(format!(
                    "line {} is longer than the limit of {} bytes (raise it with --max-line-bytes)",
                    self.line_no, self.max_line
                )));
            }
            if !self.buf.iter().all(u8::is_ascii_whitespace) {
                break terminated;
            }
        };
        let no = self.line_no;
        let text = std::str::from_utf8(&self.buf)
            .map_err(|e| Error::input(format!("line {no} is not valid UTF-8 (byte {})", e.valid_up_to())))?;
        if terminated && let Some((name, op, rec)) = fast_record(text) {
            let head = Head {
                kind: Cow::Borrowed("RECORD"),
                stream: Some(Cow::Borrowed(name)),
                record: None,
                op: op.map(Cow::Borrowed),
            };
            return Ok(Some(Line {
                no,
                text,
                kind: Kind::Record,
                head,
                fast: Some(rec),
            }));
        }
        let head: Head<'_> = serde_json::from_str(text).map_err(|e| {
            let cut = if terminated {
                ""
            } else {
                " (the line has no newline: the stream was cut off)"
            };
            let what = if e.to_string().contains("missing field `type`") {
                "has no \"type\" field".to_string()
            } else {
                format!("is not a valid protocol message: {e}")
            };
            let message = format!("line {no} {what}{cut}");
            // A last line cut short is a stream that stopped early (exit 4), not a malformed one.
            if terminated {
                Error::input(message)
            } else {
                Error::new(ErrorKind::Truncated, message)
            }
        })?;
        let kind = Kind::parse(&head.kind);
        Ok(Some(Line {
            no,
            text,
            kind,
            head,
            fast: None,
        }))
    }
}

/// Input read ahead by a thread, in chunks, into a bounded queue: the stage upstream keeps writing
/// while this one is busy (committing, say) instead of stalling on a full 64 KiB pipe. At most
/// `chunks` chunks of `chunk_size` bytes wait in memory.
pub(crate) struct ReadAhead {
    rx: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
    done: bool,
}

/// Whether stdin has input waiting right now (a zero-timeout poll).
fn stdin_waiting() -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let stdin = std::io::stdin();
    let mut fds = [PollFd::new(&stdin, PollFlags::IN)];
    let now = Timespec { tv_sec: 0, tv_nsec: 0 };
    poll(&mut fds, Some(&now)).is_ok_and(|n| n > 0)
}

impl ReadAhead {
    /// Read ahead on `inner`, in chunks filled to a quarter of `chunk_size` at least.
    #[cfg(test)]
    pub(crate) fn new<R: Read + Send + 'static>(inner: R, chunk_size: usize, chunks: usize) -> ReadAhead {
        Self::spawn(inner, chunk_size, chunks, None)
    }

    /// Read ahead on this process's stdin. A chunk is handed over as soon as the producer
    /// pauses: a STATE it sent is acknowledged now, not once more input has filled the chunk.
    pub(crate) fn stdin(chunk_size: usize, chunks: usize) -> ReadAhead {
        Self::spawn(std::io::stdin(), chunk_size, chunks, Some(stdin_waiting))
    }

    /// `waiting`: whether more input is there right now; when it is not, a chunk goes as it is.
    fn spawn<R: Read + Send + 'static>(
        mut inner: R,
        chunk_size: usize,
        chunks: usize,
        waiting: Option<fn() -> bool>,
    ) -> ReadAhead {
        let (tx, rx) = std::sync::mpsc::sync_channel(chunks);
        std::thread::spawn(move || {
            loop {
                let mut buf = vec![0u8; chunk_size];
                let mut filled = 0;
                // Fill the chunk unless the input pauses or ends, so chunks stay large.
                let result = loop {
                    match inner.read(&mut buf[filled..]) {
                        Ok(0) => break Ok(filled),
                        Ok(n) => {
                            filled += n;
                            let paused = waiting.is_some_and(|w| !w());
                            if filled == buf.len() || filled >= chunk_size / 4 || paused {
                                break Ok(filled);
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(e),
                    }
                };
                match result {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.send(Ok(buf)).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        break;
                    }
                }
            }
        });
        ReadAhead {
            rx,
            chunk: Vec::new(),
            pos: 0,
            done: false,
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = {
            let available = self.fill_buf()?;
            let n = available.len().min(out.len());
            out[..n].copy_from_slice(&available[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ReadAhead {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        use std::sync::mpsc::RecvTimeoutError;
        while self.pos >= self.chunk.len() && !self.done {
            // Waiting on a producer that may never send again, a stage asked to stop (Ctrl-C)
            // takes the input as ended; the reader then says it was interrupted.
            match self.rx.recv_timeout(std::time::Duration::from_millis(200)) {
                Ok(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(RecvTimeoutError::Timeout) => self.done = crate::interrupt::requested(),
                Err(RecvTimeoutError::Disconnected) => self.done = true,
            }
        }
        Ok(&self.chunk[self.pos.min(self.chunk.len())..])
    }

    fn consume(&mut self, amt: usize) {
        self.pos += amt;
    }
}

/// What the STREAM_END lines at the end of a stream file say it holds (files, bytes, rows, summed
/// over streams), read from its last 64 KiB without moving its offset: totals for an ETA when the
/// input is a regular file (`ferry-import ... < files.ndjson`). `None` for a pipe, or a file
/// that does not end with them (still being written, or cut short).
pub(crate) fn totals_at_end(file: &std::fs::File) -> Option<Totals> {
    use std::os::unix::fs::FileExt as _;
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    let len = meta.len();
    let from = len.saturating_sub(64 << 10);
    let mut buf = vec![0u8; (len - from) as usize];
    file.read_exact_at(&mut buf, from).ok()?;
    let mut t = Totals::default();
    let mut found = false;
    // Whole lines only: the first may be cut by the window.
    for l in buf.split(|b| *b == b'\n').skip(usize::from(from > 0)) {
        if !l.windows(12).any(|w| w == b"\"STREAM_END\"") {
            continue;
        }
        let Ok(end) = serde_json::from_slice::<super::StreamEnd>(l) else {
            continue;
        };
        found = true;
        t.files += end.files.unwrap_or(0);
        t.bytes += end.bytes.unwrap_or(0);
        t.rows += end.rows.unwrap_or(0);
    }
    found.then_some(t)
}

/// Sizes of a whole stream, as its producer counted them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub files: u64,
    pub bytes: u64,
    pub rows: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_ahead_delivers_every_byte_in_order() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("{{\"type\":\"RECORD\",\"n\":{i}}}\n").into_bytes())
            .collect();
        let mut r = StreamReader::new(ReadAhead::new(std::io::Cursor::new(data.clone()), 4096, 2), 1 << 20);
        let mut n = 0u64;
        while let Some(line) = r.next_line().unwrap() {
            assert_eq!(line.kind, Kind::Record);
            n += 1;
        }
        assert_eq!(n, 200_000);
        assert_eq!(r.bytes(), data.len() as u64);
    }

    fn reader(s: &str) -> StreamReader<&[u8]> {
        StreamReader::new(s.as_bytes(), 100)
    }

    #[test]
    fn reads_lines_with_numbers_and_skips_blank_ones() {
        let mut r = reader("{\"type\":\"begin\"}\r\n\n{\"type\":\"RECORD\",\"stream\":\"s\",\"record\":{\"a\":1}}\n");
        let l = r.next_line().unwrap().unwrap();
        assert_eq!((l.no, l.kind), (1, Kind::Begin));
        let l = r.next_line().unwrap().unwrap();
        assert_eq!((l.no, l.kind, l.stream()), (3, Kind::Record, "s"));
        assert_eq!(l.record().unwrap().get(), "{\"a\":1}");
        assert!(r.next_line().unwrap().is_none());
    }

    #[test]
    fn lines_split_across_reads_come_out_whole() {
        // A 7-byte buffer: every line spans several reads, and a newline falls at each offset.
        let lines: Vec<String> = (0..40)
            .map(|i| format!("{{\"type\":\"STATE\",\"value\":\"{}\"}}", "x".repeat(i)))
            .collect();
        let mut text = lines.join("\n");
        text.push_str("\r\n\n  \n");
        text.push_str(&lines[3]);
        let mut r = StreamReader::new(std::io::BufReader::with_capacity(7, text.as_bytes()), 100);
        for (i, want) in lines.iter().chain(std::iter::once(&lines[3])).enumerate() {
            let l = r.next_line().unwrap().unwrap();
            assert_eq!(l.text, want.as_str(), "line {i}");
        }
        assert_eq!(r.line_no(), 43);
        assert!(r.next_line().unwrap().is_none());
        assert_eq!(r.bytes(), text.len() as u64);
    }

    #[test]
    fn errors_name_the_line() {
        let mut r = reader("{\"type\":\"BEGIN\"}\n{\"type\":\n");
        r.next_line().unwrap();
        let e = r.next_line().unwrap_err();
        assert!(e.message().starts_with("line 2 is not a valid protocol message"), "{e}");

        let mut r = reader("{\"stream\":\"x\"}\n");
        let e = r.next_line().unwrap_err();
        assert_eq!(e.message(), "line 1 has no \"type\" field");

        let mut r = reader("[1,2]\n");
        assert!(
            r.next_line()
                .unwrap_err()
                .message()
                .starts_with("line 1 is not a valid")
        );
    }

    #[test]
    fn over_long_line_is_refused_by_number() {
        let long = format!("{{\"type\":\"RECORD\",\"x\":\"{}\"}}\n", "a".repeat(200));
        let mut r = reader(&long);
        let e = r.next_line().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Input);
        assert!(
            e.message().contains("line 1 is longer than the limit of 100 bytes"),
            "{e}"
        );
    }

    #[test]
    fn cut_off_last_line_says_so() {
        let mut r = reader("{\"type\":\"RECORD\",\"stream\":\"s\",\"rec");
        let e = r.next_line().unwrap_err();
        assert!(e.message().contains("the stream was cut off"), "{e}");
        assert_eq!(e.kind(), ErrorKind::Truncated);
    }

    #[test]
    fn invalid_utf8_is_an_input_error() {
        let bytes = b"{\"type\":\"RECORD\",\"s\":\"\xff\"}\n";
        let mut r = StreamReader::new(&bytes[..], 100);
        let e = r.next_line().unwrap_err();
        assert!(e.message().contains("not valid UTF-8"), "{e}");
    }
    #[test]
    fn the_totals_at_the_end_of_a_stream_file_are_read_without_reading_it_all() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.ndjson");
        let mut f = std::fs::File::create(&path).unwrap();
        for i in 0..5000 {
            writeln!(
                f,
                r#"{{"type":"FILE","stream":"files","path":"f{i}","size":1,"sha256":"x"}}"#
            )
            .unwrap();
        }
        writeln!(
            f,
            r#"{{"type":"STREAM_END","stream":"files","status":"ok","files":5000,"bytes":5000}}"#
        )
        .unwrap();
        writeln!(
            f,
            r#"{{"type":"STREAM_END","stream":"more","status":"ok","files":2,"bytes":7}}"#
        )
        .unwrap();
        writeln!(f, r#"{{"type":"END","run_id":"r","status":"ok"}}"#).unwrap();
        drop(f);
        let t = totals_at_end(&std::fs::File::open(&path).unwrap()).unwrap();
        assert_eq!((t.files, t.bytes), (5002, 5007));
        // Cut short: nothing to go by.
        let cut = dir.path().join("cut.ndjson");
        let all = std::fs::read(&path).unwrap();
        std::fs::write(&cut, &all[..all.len() / 2]).unwrap();
        assert_eq!(totals_at_end(&std::fs::File::open(&cut).unwrap()), None);
    }
}
