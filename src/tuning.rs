//! The tuning variables (`FERRY_*`), read from the environment once per process and listed in
//! every program's `--help` ([`HELP`]). A program checks them as it starts ([`Tuning::init`]): a
//! value it cannot read is an error naming the variable, never a silent default. Connectors and
//! stages ask [`Tuning::get`].

use std::sync::OnceLock;
use std::time::Duration;

use crate::error::{Error, Result};

/// The variables, as `--help` lists them (after each program's examples).
pub(crate) const HELP: &str = "\
Environment (tuning; credentials are named where they are used):
  FERRY_LOG=DIRECTIVE         log filter, e.g. ferry=debug (overrides -v/-q)
  FERRY_PROGRESS_MS=MS        how often a progress line is logged [default: 5000]
  FERRY_RETRIES=N             retries of a transient fault (backoff 200 ms doubling to 5 s) [default: 6]
  FERRY_TIMEOUT=SECONDS       longest wait for any one answer from a server; 0 for no limit
                              [default: none for PostgreSQL, 300 for S3, 90 for D1]
  FERRY_D1_RATE=REQ/SECONDS   D1's request budget, paced at 95% [default: 1200/300]
  FERRY_D1_REQUEST_BYTES=N    SQL text per D1 write request [default: 1048576]
  FERRY_D1_PAGE_BYTES=N       answer per D1 read request (at least 1024) [default: 2097152]
  FERRY_SLOT_WARN_BYTES=N     WAL a PostgreSQL capture slot may hold with no follower reading it
                              before reads of that database warn [default: 1073741824]
  FERRY_SQLITE_PRAGMAS=LIST   a SQLite target's settings, e.g. synchronous=FULL;page_size=16384
                              (journal_mode, synchronous, page_size, cache_size, mmap_size)
                              [default: journal_mode=WAL;synchronous=NORMAL;cache_size=-16384]";

/// Every tuning variable's value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Tuning {
    pub retries: usize,
    pub timeout: Timeout,
    pub progress_every: Duration,
    /// D1's budget: this many requests in this long.
    pub d1_rate: (u64, Duration),
    pub d1_request_bytes: usize,
    pub d1_page_bytes: usize,
    /// WAL a capture slot no follower reads may hold before reads of its database warn.
    pub slot_warn_bytes: u64,
    pub sqlite: SqlitePragmas,
}

/// `FERRY_SQLITE_PRAGMAS`: how a SQLite target is set up. Only settings that keep a committed
/// transaction whole through a killed process are offered (no `journal_mode=OFF` or `MEMORY`);
/// `synchronous=OFF` is allowed, and the target says what it risks.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SqlitePragmas {
    /// Bytes per page, for a database ferry creates (an existing one keeps its own).
    pub page_size: Option<u32>,
    pub journal_mode: &'static str,
    pub synchronous: &'static str,
    /// As SQLite reads it: pages, or KiB when negative.
    pub cache_size: i64,
    pub mmap_size: Option<u64>,
}

impl Default for SqlitePragmas {
    fn default() -> SqlitePragmas {
        SqlitePragmas {
            page_size: None,
            journal_mode: "WAL",
            synchronous: "NORMAL",
            cache_size: -16384,
            mmap_size: None,
        }
    }
}

impl SqlitePragmas {
    /// Read `synchronous=FULL;page_size=16384` (`;` or `,` between settings): each setting
    /// named replaces the default; a name or value not offered is an error saying what is.
    fn parse(text: &str) -> std::result::Result<SqlitePragmas, String> {
        let mut p = SqlitePragmas::default();
        let one_of = |name: &str, v: &str, allowed: &[&'static str]| {
            allowed
                .iter()
                .find(|a| a.eq_ignore_ascii_case(v))
                .copied()
                .ok_or_else(|| format!("{name} is one of {}", allowed.join(", ")))
        };
        for setting in text.split([';', ',']).map(str::trim).filter(|s| !s.is_empty()) {
            let (name, v) = setting
                .split_once('=')
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim()))
                .ok_or_else(|| format!("NAME=VALUE pairs; {setting:?} has no ="))?;
            match name.as_str() {
                "journal_mode" => {
                    p.journal_mode = one_of("journal_mode", v, &["WAL", "DELETE", "TRUNCATE", "PERSIST"])?
                }
                "synchronous" => p.synchronous = one_of("synchronous", v, &["OFF", "NORMAL", "FULL", "EXTRA"])?,
                "page_size" => {
                    let n = v
                        .parse::<u32>()
                        .ok()
                        .filter(|n| n.is_power_of_two() && (512..=65536).contains(n));
                    p.page_size = Some(n.ok_or("page_size is a power of two from 512 to 65536")?);
                }
                "cache_size" => p.cache_size = v.parse().map_err(|_| "cache_size is pages, or KiB when negative")?,
                "mmap_size" => p.mmap_size = Some(v.parse().map_err(|_| "mmap_size is bytes")?),
                _ => {
                    return Err(format!(
                        "settings among journal_mode, synchronous, page_size, cache_size, mmap_size; {name:?} is not one"
                    ));
                }
            }
        }
        Ok(p)
    }

    /// The PRAGMA statements, in the order SQLite needs them (the page size before the
    /// journal mode writes the first page).
    pub(crate) fn sql(&self) -> String {
        let mut sql = String::new();
        if let Some(n) = self.page_size {
            sql += &format!("PRAGMA page_size={n}; ");
        }
        sql += &format!(
            "PRAGMA journal_mode={}; PRAGMA synchronous={}; PRAGMA cache_size={};",
            self.journal_mode, self.synchronous, self.cache_size
        );
        if let Some(n) = self.mmap_size {
            sql += &format!(" PRAGMA mmap_size={n};");
        }
        sql
    }
}

/// `FERRY_TIMEOUT`: how long to wait for an answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Timeout {
    /// Not set: each connector's own default.
    Default,
    /// `0`: no limit.
    Never,
    After(Duration),
}

impl Timeout {
    /// The limit, given the connector's default (`None`: no limit).
    pub(crate) fn or(self, default: Option<Duration>) -> Option<Duration> {
        match self {
            Timeout::Default => default,
            Timeout::Never => None,
            Timeout::After(d) => Some(d),
        }
    }
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            retries: 6,
            timeout: Timeout::Default,
            progress_every: Duration::from_secs(5),
            d1_rate: (1200, Duration::from_secs(300)),
            d1_request_bytes: 1 << 20,
            d1_page_bytes: 2 << 20,
            slot_warn_bytes: 1 << 30,
            sqlite: SqlitePragmas::default(),
        }
    }
}

static TUNING: OnceLock<Tuning> = OnceLock::new();

impl Tuning {
    /// Read the variables from `var` (the environment, or a test's map).
    pub(crate) fn read(var: impl Fn(&str) -> Option<String>) -> Result<Tuning> {
        let mut t = Tuning::default();
        let get = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let bad = |name: &str, v: &str, want: &str| Error::usage(format!("{name}={v:?}: write {want}"));
        // Read by the logging set-up itself; checked here so a typo is not silently ignored.
        if let Some(v) = get("FERRY_LOG")
            && tracing_subscriber::EnvFilter::builder().parse(&v).is_err()
        {
            return Err(bad(
                "FERRY_LOG",
                &v,
                "a log filter, e.g. ferry=debug or ferry::connect=trace",
            ));
        }
        let number = |name: &str, v: &str| v.trim().parse::<u64>().map_err(|_| bad(name, v, "a whole number"));
        if let Some(v) = get("FERRY_RETRIES") {
            t.retries = number("FERRY_RETRIES", &v)? as usize;
        }
        if let Some(v) = get("FERRY_TIMEOUT") {
            let s = v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .ok_or_else(|| bad("FERRY_TIMEOUT", &v, "seconds, e.g. 30 or 0.5 (0: no limit)"))?;
            t.timeout = if s == 0.0 {
                Timeout::Never
            } else {
                Timeout::After(Duration::from_secs_f64(s))
            };
        }
        if let Some(v) = get("FERRY_PROGRESS_MS") {
            t.progress_every = Duration::from_millis(number("FERRY_PROGRESS_MS", &v)?);
        }
        if let Some(v) = get("FERRY_D1_RATE") {
            let parsed = v
                .split_once('/')
                .and_then(|(n, s)| Some((n.trim().parse::<u64>().ok()?, s.trim().parse::<f64>().ok()?)))
                .filter(|(n, s)| *n > 0 && s.is_finite() && *s > 0.0);
            let (n, secs) = parsed.ok_or_else(|| bad("FERRY_D1_RATE", &v, "REQUESTS/SECONDS, e.g. 1200/300"))?;
            t.d1_rate = (n, Duration::from_secs_f64(secs));
        }
        if let Some(v) = get("FERRY_D1_REQUEST_BYTES") {
            t.d1_request_bytes = number("FERRY_D1_REQUEST_BYTES", &v)?.max(1) as usize;
        }
        if let Some(v) = get("FERRY_D1_PAGE_BYTES") {
            let n = number("FERRY_D1_PAGE_BYTES", &v)?;
            if n < 1024 {
                return Err(bad("FERRY_D1_PAGE_BYTES", &v, "at least 1024 bytes"));
            }
            t.d1_page_bytes = n as usize;
        }
        if let Some(v) = get("FERRY_SLOT_WARN_BYTES") {
            t.slot_warn_bytes = number("FERRY_SLOT_WARN_BYTES", &v)?;
        }
        if let Some(v) = get("FERRY_SQLITE_PRAGMAS") {
            t.sqlite = SqlitePragmas::parse(&v).map_err(|want| bad("FERRY_SQLITE_PRAGMAS", &v, &want))?;
        }
        Ok(t)
    }

    /// Read the environment, once, as a program starts: an unreadable value is an error.
    pub(crate) fn init() -> Result<&'static Tuning> {
        if let Some(t) = TUNING.get() {
            return Ok(t);
        }
        let t = Tuning::read(|name| std::env::var(name).ok())?;
        Ok(TUNING.get_or_init(|| t))
    }

    /// The tuning of this process. Without [`Tuning::init`] (the library used on its own), the
    /// environment is read on first use and an unreadable value is left at its default, with a
    /// warning.
    pub(crate) fn get() -> &'static Tuning {
        TUNING.get_or_init(|| {
            Tuning::read(|name| std::env::var(name).ok()).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "tuning variables left at their defaults");
                Tuning::default()
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read(pairs: &[(&str, &str)]) -> Result<Tuning> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        Tuning::read(|k| map.get(k).cloned())
    }

    #[test]
    fn values_read_as_documented_and_unset_or_empty_ones_keep_the_defaults() {
        assert_eq!(read(&[]).unwrap(), Tuning::default());
        assert_eq!(read(&[("FERRY_RETRIES", "")]).unwrap(), Tuning::default());
        let t = read(&[
            ("FERRY_RETRIES", "0"),
            ("FERRY_TIMEOUT", "2.5"),
            ("FERRY_PROGRESS_MS", "1"),
            ("FERRY_D1_RATE", "10/3"),
            ("FERRY_D1_REQUEST_BYTES", "4096"),
            ("FERRY_D1_PAGE_BYTES", "1024"),
        ])
        .unwrap();
        assert_eq!(t.retries, 0);
        assert_eq!(t.timeout.or(None), Some(Duration::from_millis(2500)));
        assert_eq!(t.progress_every, Duration::from_millis(1));
        assert_eq!(t.d1_rate, (10, Duration::from_secs(3)));
        assert_eq!((t.d1_request_bytes, t.d1_page_bytes), (4096, 1024));
        let s = read(&[(
            "FERRY_SQLITE_PRAGMAS",
            " synchronous=full; page_size=16384, mmap_size=0 ;",
        )])
        .unwrap()
        .sqlite;
        assert_eq!(
            s.sql(),
            "PRAGMA page_size=16384; PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA cache_size=-16384; PRAGMA mmap_size=0;"
        );
        let never = read(&[("FERRY_TIMEOUT", "0")]).unwrap().timeout;
        assert_eq!(never.or(Some(Duration::from_secs(9))), None);
        assert_eq!(
            Timeout::Default.or(Some(Duration::from_secs(9))),
            Some(Duration::from_secs(9))
        );
    }

    #[test]
    fn an_unreadable_value_is_an_error_naming_the_variable() {
        for (name, value) in [
            ("FERRY_RETRIES", "six"),
            ("FERRY_RETRIES", "-1"),
            ("FERRY_TIMEOUT", "soon"),
            ("FERRY_TIMEOUT", "-3"),
            ("FERRY_PROGRESS_MS", "1.5"),
            ("FERRY_D1_RATE", "1200"),
            ("FERRY_D1_RATE", "0/300"),
            ("FERRY_D1_PAGE_BYTES", "10"),
            ("FERRY_LOG", "ferry=notalevel"),
            ("FERRY_SQLITE_PRAGMAS", "journal_mode=OFF"),
            ("FERRY_SQLITE_PRAGMAS", "journal_mode=memory"),
            ("FERRY_SQLITE_PRAGMAS", "synchronous"),
            ("FERRY_SQLITE_PRAGMAS", "page_size=1000"),
            ("FERRY_SQLITE_PRAGMAS", "foreign_keys=ON"),
            ("FERRY_SQLITE_PRAGMAS", "cache_size=big"),
        ] {
            let e = read(&[(name, value)]).unwrap_err();
            assert!(e.message().starts_with(&format!("{name}=")), "{name}={value}: {e}");
        }
    }

    #[test]
    fn help_lists_every_variable_read() {
        let src = include_str!("tuning.rs");
        // The first of each is the function's (this test's own text comes after).
        let read_fn = &src[src.find("pub(crate) fn read(").unwrap()..src.find("pub(crate) fn init(").unwrap()];
        let names: Vec<&str> = read_fn.split('"').filter(|s| s.starts_with("FERRY_")).collect();
        assert!(names.len() >= 9, "found only {names:?}");
        for name in names {
            assert!(HELP.contains(&format!("{name}=")), "{name} is not in HELP");
        }
    }
}
