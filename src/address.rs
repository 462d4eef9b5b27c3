//! Store addresses: one URL-like argument names a store, the same in every stage.
//!
//! | store       | address |
//! |-------------|---------|
//! | SQLite      | `sqlite:path/to/app.db`, or a path ending in `.db`, `.sqlite`, `.sqlite3` |
//! | NDJSON file | `-` (stdin/stdout) or a path ending in `.ndjson` |
//! | PostgreSQL  | `postgres://user[:password]@host:port/db` (or `postgresql://`; libpq's `PG*` variables fill gaps) |
//! | D1          | `d1://ACCOUNT_ID/DATABASE_ID` (`CLOUDFLARE_API_TOKEN`, `CLOUDFLARE_API_BASE_URL`) |
//! | directory   | `dir:/srv/media` |
//! | S3 / R2     | `s3://bucket/prefix` |
//!
//! [`Address::redacted`] is the only form ever printed or recorded: passwords and tokens never
//! appear in it.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Sqlite(PathBuf),
    /// An NDJSON stream file; `None` is stdin/stdout.
    Stream(Option<PathBuf>),
    Postgres(String),
    D1(String),
    Dir(PathBuf),
    S3(String),
}

impl Address {
    pub fn parse(s: &str) -> Result<Address> {
        if s.is_empty() {
            return Err(Error::usage("an empty address: give e.g. sqlite:app.db"));
        }
        if s == "-" {
            return Ok(Address::Stream(None));
        }
        if let Some(p) = s.strip_prefix("sqlite:") {
            let p = p.strip_prefix("//").unwrap_or(p);
            if p.is_empty() {
                return Err(Error::usage("sqlite: needs a path, e.g. sqlite:app.db"));
            }
            return Ok(Address::Sqlite(PathBuf::from(p)));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(Address::Postgres(s.to_owned()));
        }
        if s.starts_with("d1://") {
            return Ok(Address::D1(s.to_owned()));
        }
        if s.starts_with("s3://") {
            return Ok(Address::S3(s.to_owned()));
        }
        if let Some(p) = s.strip_prefix("dir:") {
            return Ok(Address::Dir(PathBuf::from(p)));
        }
        let lower = s.to_ascii_lowercase();
        if [".db", ".sqlite", ".sqlite3"].iter().any(|e| lower.ends_with(e)) {
            return Ok(Address::Sqlite(PathBuf::from(s)));
        }
        if lower.ends_with(".ndjson") || lower.ends_with(".jsonl") {
            return Ok(Address::Stream(Some(PathBuf::from(s))));
        }
        if Path::new(s).is_dir() {
            return Ok(Address::Dir(PathBuf::from(s)));
        }
        // Whatever it is, it may hold a password: only its redacted form is ever shown.
        if let Some((scheme, _)) = s.split_once("://") {
            let known = ["sqlite", "postgres", "postgresql", "d1", "s3", "dir"];
            let close = known.iter().find(|k| near(&scheme.to_ascii_lowercase(), k));
            let hint = close.map(|k| format!(" (did you mean {k}://?)")).unwrap_or_default();
            return Err(Error::usage(format!(
                "cannot tell what store {:?} is: unknown scheme {scheme:?}{hint}; stores are sqlite:PATH, postgres://, d1://, s3://, dir:PATH, a .ndjson file or -",
                redact_url(s)
            )));
        }
        Err(Error::usage(format!(
            "cannot tell what store {s:?} is: write sqlite:PATH, a .db/.sqlite path, a .ndjson file or -"
        )))
    }

    /// The store's kind, as in BEGIN's `source.kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Address::Sqlite(_) => "sqlite",
            Address::Stream(_) => "stream",
            Address::Postgres(_) => "postgres",
            Address::D1(_) => "d1",
            Address::Dir(_) => "dir",
            Address::S3(_) => "s3",
        }
    }

    /// The address with any secret removed; the only form that is printed or recorded.
    pub fn redacted(&self) -> String {
        match self {
            Address::Sqlite(p) => format!("sqlite:{}", p.display()),
            Address::Stream(None) => "-".into(),
            Address::Stream(Some(p)) => p.display().to_string(),
            // How to connect (TLS) is not part of which database it is.
            Address::Postgres(u) => redact_url(&split_tls(u).0),
            Address::D1(u) | Address::S3(u) => redact_url(u),
            Address::Dir(p) => format!("dir:{}", p.display()),
        }
    }

    /// An error for a store this build cannot use in this role yet.
    pub fn unsupported(&self, role: &str) -> Error {
        Error::usage(format!(
            "{} as {role} is not supported yet in ferry {} (supported: sqlite:PATH)",
            self.redacted(),
            env!("CARGO_PKG_VERSION")
        ))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Whether `a` is `b` misspelt: at most two letters added, dropped or changed.
fn near(a: &str, b: &str) -> bool {
    // Levenshtein distance, one row at a time.
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(row[j + 1] + 1);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    !a.is_empty() && row[b.len()] <= 2 && row[b.len()] < b.len()
}

/// `scheme://user:secret@host/...` -> `scheme://user@host/...`; query parameters that look like
/// secrets are dropped.
pub fn redact_url(u: &str) -> String {
    let Some((scheme, rest)) = u.split_once("://") else {
        return u.to_owned();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{user}@{host}")
        }
        None => authority.to_owned(),
    };
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let mut out = format!("{scheme}://{authority}{path}");
    if let Some(q) = query {
        let kept: Vec<&str> = q
            .split('&')
            .filter(|kv| {
                let k = kv.split('=').next().unwrap_or("").to_ascii_lowercase();
                !["password", "pass", "pwd", "token", "secret", "key", "sslpassword"]
                    .iter()
                    .any(|s| k.contains(s))
            })
            .collect();
        if !kept.is_empty() {
            out.push('?');
            out.push_str(&kept.join("&"));
        }
    }
    out
}

/// The parameters of one PostgreSQL address that libpq takes and tokio-postgres does not: TLS
/// (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`) and the connection `service`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsParams {
    pub mode: Option<String>,
    pub root_cert: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    /// A section of the connection service file (`pg_service.conf`).
    pub service: Option<String>,
}

/// The address without the parameters tokio-postgres would refuse ([`TlsParams`]), and those
/// parameters. Values are percent-decoded.
pub fn split_tls(url: &str) -> (String, TlsParams) {
    let mut params = TlsParams::default();
    let Some((head, query)) = url.split_once('?') else {
        return (url.to_owned(), params);
    };
    let mut kept = Vec::new();
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let value = || percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned();
        match k {
            "sslmode" => params.mode = Some(value()),
            "sslrootcert" => params.root_cert = Some(value()),
            "sslcert" => params.cert = Some(value()),
            "sslkey" => params.key = Some(value()),
            "service" => params.service = Some(value()),
            _ => kept.push(kv),
        }
    }
    let url = if kept.is_empty() {
        head.to_owned()
    } else {
        format!("{head}?{}", kept.join("&"))
    };
    (url, params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_form() {
        assert_eq!(
            Address::parse("sqlite:a/b.db").unwrap(),
            Address::Sqlite("a/b.db".into())
        );
        assert_eq!(
            Address::parse("sqlite:///tmp/x").unwrap(),
            Address::Sqlite("/tmp/x".into())
        );
        assert_eq!(
            Address::parse("app.SQLITE").unwrap(),
            Address::Sqlite("app.SQLITE".into())
        );
        assert_eq!(Address::parse("-").unwrap(), Address::Stream(None));
        assert_eq!(
            Address::parse("x.ndjson").unwrap(),
            Address::Stream(Some("x.ndjson".into()))
        );
        assert_eq!(Address::parse("postgres://u@h/db").unwrap().kind(), "postgres");
        let e = Address::parse("mystery").unwrap_err();
        assert!(e.message().contains("cannot tell what store"), "{e}");
        assert!(Address::parse("sqlite:").is_err());
    }

    #[test]
    fn secrets_never_survive_redaction() {
        let a = Address::parse("postgres://app:hunter2@db:5432/app?application_name=x&password=hunter2").unwrap();
        let r = a.redacted();
        assert_eq!(r, "postgres://app@db:5432/app?application_name=x");
        assert!(!r.contains("hunter2"));
        assert!(!a.unsupported("target").message().contains("hunter2"));
        // A misspelt scheme is not recognised, and its password is not shown either.
        let e = Address::parse("postgress://app:hunter2@db/app").unwrap_err();
        assert!(!e.chain().contains("hunter2"), "{e}");
        assert!(e.chain().contains("postgress://app@db/app"), "{e}");
        assert!(e.chain().contains("did you mean postgres://"), "{e}");
        let e = Address::parse("mysql://root:hunter2@db/app").unwrap_err();
        assert!(
            !e.chain().contains("hunter2") && !e.chain().contains("did you mean"),
            "{e}"
        );
    }
}
