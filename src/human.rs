//! Output for people: tables and messages on stderr. The one module (with the protocol writer)
//! allowed to print.
#![allow(clippy::print_stderr)]

use std::io::IsTerminal;

/// Print a message for people on stderr.
pub fn say(text: &str) {
    eprintln!("{text}");
}

/// Print an error and its causes on stderr, as `ferry-import: error: ...`.
pub fn error(program: &str, text: &str) {
    eprintln!("{program}: error: {text}");
}

/// Whether stderr is a terminal (progress bars and colour only then).
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

static PLAIN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// No progress bars whatever the terminal (`-q`, `--log-format json`).
pub fn set_plain() {
    PLAIN.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// How a stage shows progress on long work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressDisplay {
    /// Log lines every few seconds (stderr is not a terminal: a log file, CI, a script).
    Lines,
    /// A bar on the terminal: the stage at the end of a pipeline (its stdout is not a pipe).
    Bar,
    /// Nothing periodic: a stage feeding a pipe on a terminal, where the last stage's bar is.
    Quiet,
}

pub fn progress_display() -> ProgressDisplay {
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
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
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
pub fn duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
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
