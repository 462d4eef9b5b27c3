//! Output for people: tables and messages on stderr. The one module (with the protocol writer)
//! allowed to print.
#![allow(clippy::print_stderr)]

use std::io::{IsTerminal, Write as _};
use std::time::{Duration, Instant};

/// Print a message for people on stderr.
pub(crate) fn say(text: &str) {
    // A stderr nobody reads any more (`2>&1 | head`) is no reason to stop: nothing to tell.
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// Print an error and its causes on stderr, as `ferry-import: error: ...`.
pub(crate) fn error(program: &str, text: &str) {
    let _ = writeln!(std::io::stderr(), "{program}: error: {text}");
}

/// Whether stderr is a terminal (progress bars and colour only then).
pub(crate) fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

static PLAIN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// No progress bars whatever the terminal (`-q`, `--log-format json`).
pub(crate) fn set_plain() {
    PLAIN.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// How a stage shows progress on long work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProgressDisplay {
    /// Log lines every few seconds (stderr is not a terminal: a log file, CI, a script).
    Lines,
    /// A bar on the terminal: the stage at the end of a pipeline (its stdout is not a pipe).
    Bar,
    /// Nothing periodic: a stage feeding a pipe on a terminal, where the last stage's bar is.
    Quiet,
}

pub(crate) fn progress_display() -> ProgressDisplay {
    if !stderr_is_terminal() || PLAIN.load(std::sync::atomic::Ordering::Relaxed) {
        return ProgressDisplay::Lines;
    }
    use std::os::unix::fs::FileTypeExt as _;
    let stdout_is_pipe = std::fs::metadata("/proc/self/fd/1").is_ok_and(|m| m.file_type().is_fifo());
    if stdout_is_pipe {
        ProgressDisplay::Quiet
    } else {
        ProgressDisplay::Bar
    }
}

/// A plain text table: a header row, then rows; numbers right-aligned.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let n = header.len();
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(n) {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let numeric = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || c == '-' || c == '.');
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = width[i].saturating_sub(c.chars().count());
            if i > 0 {
                l.push_str("  ");
            }
            if numeric(c) && i > 0 {
                l.push_str(&" ".repeat(pad));
                l.push_str(c);
            } else {
                l.push_str(c);
                if i + 1 < n {
                    l.push_str(&" ".repeat(pad));
                }
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

/// A duration for people: "2h05m", "4m10s", "12s".
pub(crate) fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// What a progress bar counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unit {
    Rows,
    Files,
    Bytes,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Rows => "rows",
            Unit::Files => "files",
            Unit::Bytes => "bytes",
        }
    }
}

/// Progress lines on stderr for long work, at most every few seconds.
pub(crate) struct Progress {
    started: Instant,
    last: Instant,
    every: Duration,
    /// The last [`Progress::eta`] sample (when, how much done) and the pace since (units/s,
    /// smoothed over samples so a burst of skipped work does not promise too much).
    sample: Option<(Instant, u64)>,
    pace: f64,
    display: ProgressDisplay,
    bar: Option<indicatif::ProgressBar>,
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl Progress {
    pub(crate) fn new() -> Self {
        let now = Instant::now();
        Progress {
            started: now,
            last: now,
            every: crate::tuning::Tuning::get().progress_every,
            sample: None,
            pace: 0.0,
            display: progress_display(),
            bar: None,
        }
    }

    /// On a terminal at the end of a pipeline: show `done` of `total` on the progress bar and
    /// say so (true), so no log line is wanted.
    pub(crate) fn bar(&mut self, what: &str, done: u64, total: Option<u64>, unit: Unit) -> bool {
        use ProgressDisplay as D;
        match self.display {
            D::Lines => false,
            D::Quiet => true,
            D::Bar => {
                let total = total.filter(|t| *t > 0).map(|t| t.max(done));
                let bar = self.bar.get_or_insert_with(|| {
                    indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr_with_hz(8))
                });
                if bar.length() != total || bar.message() != what {
                    bar.set_message(what.to_owned());
                    let bytes = unit == Unit::Bytes;
                    let unit = unit.name();
                    let amount = if bytes {
                        "{binary_bytes}".to_owned()
                    } else {
                        format!("{{human_pos}} {unit}")
                    };
                    let tpl = match total {
                        Some(_) if bytes => {
                            "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} ({rate}, {eta} left)".to_owned()
                        }
                        Some(_) => {
                            format!("{{msg}} [{{bar:30}}] {{human_pos}}/{{human_len}} {unit} ({{rate}}, {{eta}} left)")
                        }
                        None => format!("{{spinner}} {{msg}} {amount} ({{rate}})"),
                    };
                    if let Ok(style) = indicatif::ProgressStyle::with_template(&tpl) {
                        bar.set_style(style.progress_chars("=> ").with_key(
                            "rate",
                            move |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                                let r = s.per_sec();
                                let _ = if bytes {
                                    write!(w, "{}/s", indicatif::BinaryBytes(r as u64))
                                } else {
                                    write!(w, "{}/s", indicatif::HumanCount(r as u64))
                                };
                            },
                        ));
                    }
                    match total {
                        Some(t) => bar.set_length(t),
                        None => bar.unset_length(),
                    }
                }
                bar.set_position(done);
                true
            }
        }
    }

    /// True when it is time for another line (cheap enough to call every row).
    pub(crate) fn due(&mut self) -> bool {
        let now = Instant::now();
        if now.duration_since(self.last) >= self.every {
            self.last = now;
            true
        } else {
            false
        }
    }

    pub(crate) fn rate(&self, n: u64) -> u64 {
        let secs = self.started.elapsed().as_secs_f64();
        if secs > 0.0 { (n as f64 / secs) as u64 } else { 0 }
    }

    /// Time left, for people ("4m10s"), once `done` of `total` units are done, at the recent
    /// pace; "unknown" without a total or a pace yet. Call it once per progress line.
    pub(crate) fn eta(&mut self, done: u64, total: Option<u64>) -> String {
        let now = Instant::now();
        let (since, before) = self.sample.unwrap_or((self.started, 0));
        let dt = now.duration_since(since).as_secs_f64();
        if dt > 0.0 && done >= before {
            let r = (done - before) as f64 / dt;
            self.pace = if self.sample.is_some() {
                0.5 * self.pace + 0.5 * r
            } else {
                r
            };
        }
        self.sample = Some((now, done));
        match total {
            Some(t) if t <= done => "soon".into(),
            Some(t) if self.pace > 0.0 => duration(Duration::from_secs_f64((t - done) as f64 / self.pace)),
            _ => "unknown".into(),
        }
    }
}

/// How far a follower is behind its source, as people read it (`0.42 s, 12.0 KiB`): the time
/// since the newest change it holds was committed, and the log written since.
pub(crate) fn behind(seconds: Option<f64>, bytes: Option<u64>) -> Option<String> {
    let parts: Vec<String> = [
        seconds.map(|s| format!("{s:.2} s")),
        bytes.map(|b| indicatif::HumanBytes(b).to_string()),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_as_people_write_them() {
        use std::time::Duration;
        assert_eq!(super::duration(Duration::from_millis(12_400)), "12s");
        assert_eq!(super::duration(Duration::from_secs(250)), "4m10s");
        assert_eq!(super::duration(Duration::from_secs(2 * 3600 + 5 * 60 + 59)), "2h05m");
    }

    #[test]
    fn table_aligns_numbers_right() {
        let t = super::table(
            &["stream", "rows"],
            &[vec!["main.users".into(), "5".into()], vec!["t".into(), "120".into()]],
        );
        assert_eq!(t, "stream      rows\nmain.users     5\nt            120\n");
    }
}
