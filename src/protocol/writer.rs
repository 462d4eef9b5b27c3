//! Writing the stream. This is the only code that touches stdout.

use std::fs::File;
use std::io::{BufWriter, Write};

use super::{Kind, Message};
use crate::error::{Context, ErrorKind, Result};

/// A buffered protocol writer: one JSON object per line, flushed at STATE, STREAM_END and END.
pub struct StreamWriter<W: Write> {
    out: BufWriter<W>,
    lines: u64,
    counts: Written,
    /// A signal stops the writer at its next barrier (not once a stage is ending its stream
    /// because of one: see [`StreamWriter::ending`]).
    stops: bool,
}

/// Lines written, by kind: what a stage's closing line says it sent on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Written {
    pub records: u64,
    pub files: u64,
    pub states: u64,
    pub stream_ends: u64,
    pub errors: u64,
}

impl Written {
    fn add(&mut self, kind: Kind) {
        match kind {
            Kind::Record => self.records += 1,
            Kind::File => self.files += 1,
            Kind::State => self.states += 1,
            Kind::StreamEnd => self.stream_ends += 1,
            Kind::Error => self.errors += 1,
            _ => {}
        }
    }
}

impl StreamWriter<File> {
    /// A writer on this process's stdout, bypassing the standard library's line buffering.
    pub fn stdout() -> Result<Self> {
        use std::os::fd::AsFd;
        #[allow(clippy::disallowed_methods)] // the one sanctioned use: the protocol writer
        let fd = std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .ctx(ErrorKind::Io, || "opening stdout")?;
        Ok(StreamWriter::new(File::from(fd)))
    }

    /// Whether this process's stdout is a terminal (a person, not a program, would read it).
    pub fn stdout_is_terminal() -> bool {
        use std::io::IsTerminal as _;
        #[allow(clippy::disallowed_methods)] // only asked what it is; nothing is written
        std::io::stdout().is_terminal()
    }
}

impl<W: Write> StreamWriter<W> {
    pub fn new(inner: W) -> Self {
        StreamWriter {
            out: BufWriter::with_capacity(256 * 1024, inner),
            lines: 0,
            counts: Written::default(),
            stops: true,
        }
    }

    /// The stage is ending its stream in answer to a signal (a follower told to stop): the
    /// closing lines go out.
    pub fn ending(&mut self) {
        self.stops = false;
    }

    /// Lines written so far.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Write a message built by this stage.
    pub fn write_message(&mut self, m: &Message) -> Result<()> {
        serde_json::to_writer(&mut self.out, m)
            .map_err(std::io::Error::from)
            .ctx(ErrorKind::Io, || "writing the stream")?;
        self.end_line(m.kind())
    }

    /// Write a line besides the stream ([`super::side`]: PLAN, FINDING, SUMMARY); `kind`
    /// decides whether to flush.
    pub fn write_json<T: serde::Serialize>(&mut self, line: &T, kind: Kind) -> Result<()> {
        serde_json::to_writer(&mut self.out, line)
            .map_err(std::io::Error::from)
            .ctx(ErrorKind::Io, || "writing the stream")?;
        self.end_line(kind)
    }

    /// Write one line as it is (no newline in `line`); `kind` decides whether to flush.
    pub fn write_line(&mut self, line: &[u8], kind: Kind) -> Result<()> {
        debug_assert!(!line.contains(&b'\n'));
        self.out.write_all(line).ctx(ErrorKind::Io, || "writing the stream")?;
        self.end_line(kind)
    }

    fn end_line(&mut self, kind: Kind) -> Result<()> {
        self.out.write_all(b"\n").ctx(ErrorKind::Io, || "writing the stream")?;
        self.lines += 1;
        self.counts.add(kind);
        if kind.is_flush_point() {
            self.flush()?;
            // A stage that only writes (an export) stops here when asked to, with everything
            // up to this barrier delivered.
            if self.stops {
                crate::interrupt::check()?;
            }
        }
        Ok(())
    }

    /// How many lines of each kind were written so far.
    pub fn counts(&self) -> Written {
        self.counts
    }

    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().ctx(ErrorKind::Io, || "writing the stream")
    }

    /// Flush and give back the inner writer.
    pub fn into_inner(mut self) -> Result<W> {
        self.flush()?;
        self.out
            .into_inner()
            .map_err(|e| e.into_error())
            .ctx(ErrorKind::Io, || "writing the stream")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{State, StateValue};
    use std::sync::{Arc, Mutex};

    /// A sink that records what reached it, to observe flushing.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn flushes_at_state_not_at_record() {
        let sink = Sink::default();
        let mut w = StreamWriter::new(sink.clone());
        w.write_line(br#"{"type":"RECORD","stream":"s","record":{}}"#, Kind::Record)
            .unwrap();
        assert!(sink.0.lock().unwrap().is_empty(), "a RECORD alone stays buffered");
        let state = Message::State(State {
            value: serde_json::to_value(StateValue::default()).unwrap(),
        });
        w.write_message(&state).unwrap();
        let got = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(got.lines().count(), 2);
        assert!(got.ends_with("\"bookmarks\":{}}}\n"), "{got}");
    }

    struct ClosedPipe;
    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn closed_pipe_is_a_broken_pipe_error() {
        let mut w = StreamWriter::new(ClosedPipe);
        w.write_line(b"{}", Kind::Other).unwrap();
        let e = w.flush().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BrokenPipe);
    }
}
