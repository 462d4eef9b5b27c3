//! A connection to PostgreSQL: the parsed address (libpq's environment, TLS), the socket that
//! times out a server that stopped answering, the session settings every ferry connection
//! uses, and how a driver error is told to people (transient, configuration, refused).

use std::str::FromStr;
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::MakeTlsConnect;

use crate::error::{Error, ErrorKind, Result};
use crate::retry;

/// A socket that fails a read with `TimedOut` once the server has left something sent to it
/// unanswered for `limit` (nothing read since the last write), or has not taken a write for
/// that long. An idle connection, with nothing asked, never times out.
struct Watched {
    inner: tokio::net::TcpStream,
    limit: Duration,
    /// When the last write went out with no byte read since.
    asked: Option<tokio::time::Instant>,
    /// When a write started waiting for room.
    blocked: Option<tokio::time::Instant>,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl Watched {
    fn new(inner: tokio::net::TcpStream, limit: Duration) -> Watched {
        Watched {
            inner,
            limit,
            asked: None,
            blocked: None,
            timer: Box::pin(tokio::time::sleep(limit)),
        }
    }

    /// Pending, or the error for a wait that began at `since` and has run out.
    fn expired(
        &mut self,
        since: tokio::time::Instant,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Error> {
        let deadline = since + self.limit;
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        match self.timer.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => std::task::Poll::Ready(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no answer from the server in {:.0} s (FERRY_TIMEOUT)",
                    self.limit.as_secs_f64()
                ),
            )),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

impl tokio::io::AsyncRead for Watched {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let me = self.get_mut();
        match std::pin::Pin::new(&mut me.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                me.asked = None;
                Poll::Ready(r)
            }
            Poll::Pending => match me.asked {
                Some(since) => me.expired(since, cx).map(Err),
                None => Poll::Pending,
            },
        }
    }
}

impl tokio::io::AsyncWrite for Watched {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        let me = self.get_mut();
        match std::pin::Pin::new(&mut me.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                me.blocked = None;
                let now = tokio::time::Instant::now();
                me.asked = Some(now);
                // Arm the timer now: tokio-postgres polls its read before its write, so the read
                // that would arm it may already have come back Pending, and a server that never
                // answers never wakes the connection to read again.
                // (Ready only with a zero limit: the next read reports it.)
                let _ = me.expired(now, cx);
                Poll::Ready(r)
            }
            Poll::Pending => {
                let since = *me.blocked.get_or_insert_with(tokio::time::Instant::now);
                me.expired(since, cx).map(Err)
            }
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A parsed `postgres://` address, with defaults from the libpq environment (`PGHOST`, `PGPORT`,
/// `PGUSER`, `PGPASSWORD`, `PGDATABASE`) and the password file (`PGPASSFILE`, or `~/.pgpass`).
#[derive(Clone)]
pub(crate) struct PgAddress {
    pub config: tokio_postgres::Config,
    /// Never holds the password.
    pub redacted: String,
    /// How the connection is encrypted and the server checked (`sslmode` and friends).
    tls: super::tls::Tls,
}

impl PgAddress {
    /// The settings of a replication connection to the same server, as the same user, with
    /// the same TLS, reading `slot` through `publication` from `start` on.
    pub(crate) fn replication(
        &self,
        slot: &str,
        publication: &str,
        start: u64,
    ) -> Result<pgwire_replication::ReplicationConfig> {
        use pgwire_replication::{Lsn, SslMode, TlsConfig};
        let host = match self.config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let mode = match self.tls.mode {
            super::tls::Mode::Disable => SslMode::Disable,
            super::tls::Mode::Allow | super::tls::Mode::Prefer => SslMode::Prefer,
            super::tls::Mode::Require => SslMode::Require,
            super::tls::Mode::VerifyCa => SslMode::VerifyCa,
            super::tls::Mode::VerifyFull => SslMode::VerifyFull,
        };
        let tls = TlsConfig {
            mode: if host.starts_with('/') { SslMode::Disable } else { mode },
            ca_pem_path: self.tls.root_file.clone(),
            sni_hostname: None,
            client_cert_pem_path: self.tls.client.as_ref().map(|c| c.0.clone()),
            client_key_pem_path: self.tls.client.as_ref().map(|c| c.1.clone()),
        };
        let mut cfg = pgwire_replication::ReplicationConfig::default();
        cfg.host = host;
        cfg.port = self.config.get_ports().first().copied().unwrap_or(5432);
        cfg.user = self.config.get_user().unwrap_or("postgres").to_owned();
        cfg.password = self
            .config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        cfg.database = self.config.get_dbname().unwrap_or("postgres").to_owned();
        cfg.tls = tls;
        cfg.slot = slot.to_owned();
        cfg.publication = publication.into();
        cfg.start_lsn = Lsn(start);
        cfg.ack_lsn = Some(Lsn(start));
        cfg.status_interval = std::time::Duration::from_secs(1);
        cfg.idle_wakeup_interval = std::time::Duration::from_secs(1);
        cfg.application_name = Some("ferry-export --follow".into());
        Ok(cfg)
    }
}

/// Shows the redacted address only: the configuration holds the password.
impl std::fmt::Debug for PgAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgAddress({})", self.redacted)
    }
}

/// The password libpq's password file gives for this address, if the file is there, is not
/// readable by others (libpq ignores it then, and so does ferry, saying why), and has a line
/// for it: `hostname:port:database:username:password`, `*` for any, `\:` and `\\` escaped, the
/// first line that matches wins. The file is `path`, or `~/.pgpass`.
fn password_from_file(config: &tokio_postgres::Config, path: Option<String>) -> Option<String> {
    let path = match path {
        Some(p) => std::path::PathBuf::from(p),
        None => std::path::PathBuf::from(std::env::var_os("HOME")?).join(".pgpass"),
    };
    let meta = std::fs::metadata(&path).ok()?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = %path.display(), "the password file is readable by others: ignored, as libpq does (chmod 0600 it)");
            return None;
        }
    }
    let text = std::fs::read_to_string(&path).ok()?;
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        // A Unix socket is `localhost` in the file, as libpq has it.
        _ => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432).to_string();
    let user = config.get_user().unwrap_or_default();
    let db = config.get_dbname().unwrap_or(user);
    pgpass_lookup(&text, [host.as_str(), port.as_str(), db, user])
}

/// The password of the first line of a password file matching `want` (host, port, database,
/// user).
fn pgpass_lookup(text: &str, want: [&str; 4]) -> Option<String> {
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        // Fields split on unescaped colons, escapes undone.
        let mut fields = vec![String::new()];
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => fields.last_mut()?.push(chars.next().unwrap_or('\\')),
                ':' if fields.len() < 5 => fields.push(String::new()),
                c => fields.last_mut()?.push(c),
            }
        }
        let Ok([h, p, d, u, password]) = <[String; 5]>::try_from(fields) else {
            continue;
        };
        let matches = [h, p, d, u]
            .iter()
            .zip(want)
            .all(|(field, want)| field == "*" || field == want);
        if matches {
            return Some(password);
        }
    }
    None
}

/// The settings of connection service `name` (`[name]` in libpq's service file: `PGSERVICEFILE`
/// or `~/.pg_service.conf`, then `pg_service.conf` in `PGSYSCONFDIR`, or Debian's
/// `/etc/postgresql-common`), as `key=value` pairs; an error naming the files when no file has it.
fn service_settings(name: &str, redacted: &str) -> Result<Vec<(String, String)>> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut files = Vec::new();
    match env("PGSERVICEFILE") {
        Some(f) => files.push(std::path::PathBuf::from(f)),
        None => files.extend(env("HOME").map(|h| std::path::PathBuf::from(h).join(".pg_service.conf"))),
    }
    files.push(
        std::path::PathBuf::from(env("PGSYSCONFDIR").unwrap_or_else(|| "/etc/postgresql-common".into()))
            .join("pg_service.conf"),
    );
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        if let Some(settings) = service_section(&text, name) {
            tracing::debug!(service = name, file = %file.display(), "connection service");
            return Ok(settings);
        }
    }
    let looked: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    Err(Error::usage(format!(
        "{redacted}: there is no connection service {name:?} (looked in {}; PGSERVICEFILE names another file)",
        looked.join(", ")
    )))
}

/// The `key=value` lines of section `[name]` of a service file, if it has one.
fn service_section(text: &str, name: &str) -> Option<Vec<(String, String)>> {
    let mut section: Option<Vec<(String, String)>> = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            if section.is_some() {
                break;
            }
            if header.trim() == name {
                section = Some(Vec::new());
            }
        } else if let (Some(s), Some((k, v))) = (section.as_mut(), line.split_once('=')) {
            s.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    section
}

/// Fill what the address leaves out from connection service `name`, as libpq does: the address
/// wins over the service, the service over the environment.
fn apply_service(
    config: &mut tokio_postgres::Config,
    tls: &mut super::tls::Params,
    name: &str,
    redacted: &str,
) -> Result<()> {
    for (k, v) in service_settings(name, redacted)? {
        match k.as_str() {
            "host" if config.get_hosts().is_empty() => {
                config.host(&v);
            }
            "port" if config.get_ports().is_empty() => match v.parse() {
                Ok(p) => {
                    config.port(p);
                }
                Err(_) => {
                    return Err(Error::usage(format!(
                        "connection service {name:?}: port={v} is not a port number"
                    )));
                }
            },
            "dbname" if config.get_dbname().is_none() => {
                config.dbname(&v);
            }
            "user" if config.get_user().is_none() => {
                config.user(&v);
            }
            "password" if config.get_password().is_none() => {
                config.password(v);
            }
            "sslmode" => tls.mode = tls.mode.take().or(Some(v)),
            "sslrootcert" => tls.root_cert = tls.root_cert.take().or(Some(v)),
            "sslcert" => tls.cert = tls.cert.take().or(Some(v)),
            "sslkey" => tls.key = tls.key.take().or(Some(v)),
            "host" | "port" | "dbname" | "user" | "password" => {}
            other => tracing::debug!(service = name, setting = other, "a service setting ferry does not use"),
        }
    }
    Ok(())
}

impl PgAddress {
    pub(crate) fn parse(url: &str, application: &str) -> Result<PgAddress> {
        let redacted = crate::address::Address::Postgres(url.to_owned()).redacted();
        let (url, mut tls) = super::tls::split(url);
        let mut config = tokio_postgres::Config::from_str(&url)
            .map_err(|e| Error::usage(format!("{redacted}: not a PostgreSQL address ({e})")))?;
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if let Some(name) = tls.service.take().or_else(|| env("PGSERVICE")) {
            apply_service(&mut config, &mut tls, &name, &redacted)?;
        }
        if config.get_hosts().is_empty() {
            config.host(env("PGHOST").as_deref().unwrap_or("localhost"));
        }
        if config.get_ports().is_empty()
            && let Some(p) = env("PGPORT").and_then(|p| p.parse().ok())
        {
            config.port(p);
        }
        if config.get_user().is_none() {
            let user = env("PGUSER")
                .or_else(|| env("USER"))
                .unwrap_or_else(|| "postgres".into());
            config.user(&user);
        }
        if config.get_password().is_none()
            && let Some(p) = env("PGPASSWORD")
        {
            config.password(p);
        }
        if config.get_dbname().is_none()
            && let Some(d) = env("PGDATABASE")
        {
            config.dbname(&d);
        }
        if config.get_password().is_none()
            && let Some(p) = password_from_file(&config, env("PGPASSFILE"))
        {
            config.password(p);
        }
        let tls = super::tls::Tls::new(tls, &redacted)?;
        config.ssl_mode(tls.mode.ssl_mode());
        // Who this is, for pg_stat_activity and for an import that finds a table locked.
        config.application_name(format!(
            "{application} pid {} on {}",
            std::process::id(),
            crate::lock::hostname()
        ));
        config.connect_timeout(Duration::from_secs(10));
        // A host or network that dies under an open connection is noticed in about a minute
        // (probes after 30 s of silence, then every 10 s; data unacknowledged for 60 s), not
        // after the system's two hours.
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .keepalives_interval(Duration::from_secs(10))
            .keepalives_retries(3)
            .tcp_user_timeout(Duration::from_secs(60));
        Ok(PgAddress { config, redacted, tls })
    }

    /// The single TCP host of the address (its name, for TLS), where to connect (`hostaddr` if
    /// given, else the host) and the port, if that is what the address names.
    fn tcp(&self) -> Option<(String, String, u16)> {
        match (self.config.get_hosts(), self.config.get_ports()) {
            ([tokio_postgres::config::Host::Tcp(h)], ports) => {
                let at = match self.config.get_hostaddrs() {
                    [a] => a.to_string(),
                    _ => h.clone(),
                };
                Some((h.clone(), at, ports.first().copied().unwrap_or(5432)))
            }
            _ => None,
        }
    }

    /// Connect (asynchronous client, its connection driven by `rt`), retrying the same way.
    /// With `FERRY_TIMEOUT` set (and one TCP host), the connection is watched: a request the
    /// server leaves unanswered that long fails as a lost connection, so it is retried on a new
    /// one (replaying the open transaction) instead of waiting forever. No limit by default:
    /// building an index on a big table can rightly keep the server silent for a long time.
    pub(crate) fn connect_async(&self, rt: &Runtime) -> Result<tokio_postgres::Client> {
        retry::run(
            &format!("{}: connecting", self.redacted),
            |_| {
                rt.block_on(async {
                    let client = match (retry::answer_timeout(None), self.tcp()) {
                        (Some(limit), Some((host, at, port))) => {
                            let connect_timeout = self
                                .config
                                .get_connect_timeout()
                                .copied()
                                .unwrap_or(Duration::from_secs(10));
                            let stream = tokio::time::timeout(
                                connect_timeout,
                                tokio::net::TcpStream::connect((at.as_str(), port)),
                            )
                            .await
                            .map_err(|_| {
                                Error::new(
                                    ErrorKind::Transient,
                                    format!("{}: cannot connect: timed out", self.redacted),
                                )
                            })?
                            .map_err(|e| {
                                Error::new(ErrorKind::Transient, format!("{}: cannot connect: {e}", self.redacted))
                            })?;
                            let tls =
                                MakeTlsConnect::<Watched>::make_tls_connect(&mut self.tls.connector.clone(), &host)
                                    .map_err(|e| Error::usage(format!("{}: TLS: {e}", self.redacted)))?;
                            let (client, connection) = self
                                .config
                                .connect_raw(Watched::new(stream, limit), tls)
                                .await
                                .map_err(|e| pg_error(&self.redacted, "cannot connect", e))?;
                            drive(connection);
                            client
                        }
                        _ => {
                            let (client, connection) = self
                                .config
                                .connect(self.tls.connector.clone())
                                .await
                                .map_err(|e| pg_error(&self.redacted, "cannot connect", e))?;
                            drive(connection);
                            client
                        }
                    };
                    client
                        .batch_execute(SESSION)
                        .await
                        .map_err(|e| pg_error(&self.redacted, "setting up the session", e))?;
                    Ok(client)
                })
            },
            |e| e.kind() == ErrorKind::Transient,
            std::thread::sleep,
        )
    }
}

/// Drive a connection's I/O on the runtime until it closes (its client reports the errors).
fn drive(connection: impl std::future::Future + Send + 'static) {
    tokio::spawn(async move {
        let _ = connection.await;
    });
}

/// Session settings that make text output exact and unambiguous: UTC, ISO dates, shortest-exact
/// floats, UTF-8.
const SESSION: &str = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'iso_8601'; SET extra_float_digits = 3; SET client_encoding = 'UTF8'";

/// Whether a PostgreSQL error is worth retrying: the connection dropped, the server is starting or
/// shutting down, or a transaction lost a serialization race.
pub(crate) fn is_transient(e: &tokio_postgres::Error) -> bool {
    if is_config(e) || super::tls::refusal(e).is_some() {
        return false;
    }
    if e.is_closed() || (e.as_db_error().is_none() && e.code().is_none()) {
        return true;
    }
    e.code().is_some_and(|c| {
        let c = c.code();
        c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01")
    })
}

/// A connection the client could not even try: something missing from the address (no password
/// where the server asks for one), which no retry fixes.
fn is_config(e: &tokio_postgres::Error) -> bool {
    e.to_string().starts_with("invalid configuration")
}

/// A PostgreSQL error as a ferry error: transient faults are `Transient`; a refused login is a
/// usage error; the server's message (and its detail) is kept, never the password.
pub(crate) fn pg_error(address: &str, what: &str, e: tokio_postgres::Error) -> Error {
    if let Some(why) = super::tls::refusal(&e) {
        return Error::usage(format!("{address}: {what}: {why}"));
    }
    let kind = if is_transient(&e) {
        ErrorKind::Transient
    } else if is_config(&e)
        || e.code() == Some(&SqlState::INVALID_PASSWORD)
        || e.code() == Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION)
    {
        ErrorKind::Usage
    } else {
        ErrorKind::Target
    };
    let detail = match e.as_db_error() {
        Some(db) => {
            let mut m = db.message().to_owned();
            if let Some(d) = db.detail() {
                m.push_str(&format!(" ({d})"));
            }
            m
        }
        None => {
            let mut m = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                m.push_str(&format!(": {s}"));
                src = s.source();
            }
            m
        }
    };
    let hint = if detail.contains("password missing") {
        " (give it in the address, postgres://user:PASSWORD@host/db, in PGPASSWORD, or in the password file, PGPASSFILE or ~/.pgpass)"
    } else if detail.contains("requires a valid client certificate") {
        " (name the certificate and its key in the address, sslcert=PATH&sslkey=PATH, or in PGSSLCERT and PGSSLKEY)"
    } else if detail.contains("no pg_hba.conf entry") && detail.ends_with("no encryption") {
        " (the server takes this login over TLS only: connect without sslmode=disable)"
    } else {
        ""
    };
    Error::new(kind, format!("{address}: {what}: {detail}{hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_section_is_read_as_libpq_reads_it() {
        let text = "# comment\n[a]\nhost=h1\n[app]\n  host = db.example.com \nport=6432\n\n# inside\ndbname=shop\n[later]\nhost=h3\n";
        assert_eq!(
            service_section(text, "app").unwrap(),
            [("host", "db.example.com"), ("port", "6432"), ("dbname", "shop")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert!(service_section(text, "missing").is_none());
        assert_eq!(service_section("[empty]\n", "empty").unwrap(), vec![]);
    }

    /// A server that takes every byte and never answers. The connection reads before it writes
    /// (as tokio-postgres does) and then waits to be woken: the write must arm the timer, or
    /// nothing ever wakes it.
    #[test]
    fn a_request_into_silence_times_out_though_the_read_was_polled_first() {
        use std::task::Poll;
        use tokio::io::{AsyncRead, AsyncWrite};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = hole.local_addr().unwrap();
            tokio::spawn(async move {
                let (mut s, _) = hole.accept().await.unwrap();
                let _ = tokio::io::copy(&mut s, &mut tokio::io::sink()).await;
            });
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut w = Watched::new(stream, Duration::from_millis(200));
            let mut wrote = false;
            // A task of its own, woken only by what the socket registered.
            let waited = tokio::spawn(std::future::poll_fn(move |cx| {
                let mut space = [0u8; 64];
                let mut buf = tokio::io::ReadBuf::new(&mut space);
                let read = std::pin::Pin::new(&mut w).poll_read(cx, &mut buf);
                if !wrote {
                    assert!(read.is_pending(), "nothing asked yet");
                    let sent = std::pin::Pin::new(&mut w).poll_write(cx, b"a request");
                    assert!(matches!(sent, Poll::Ready(Ok(9))), "{sent:?}");
                    wrote = true;
                    return Poll::Pending;
                }
                read
            }));
            let out = tokio::time::timeout(Duration::from_secs(5), waited).await;
            let e = out.expect("woken by the timer, not left waiting").unwrap().unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
            assert!(e.to_string().contains("no answer from the server in 0 s"), "{e}");
        });
    }

    #[test]
    fn addresses_take_libpq_defaults_and_never_show_the_password() {
        let a = PgAddress::parse(
            "postgres://app:s3cret@db.example:6543/app?sslmode=require&connect_timeout=5",
            "t",
        )
        .unwrap();
        // How to connect is not part of what the database is: the same address with other TLS
        // settings still finds the commit markers and checkpoints of earlier runs.
        assert_eq!(a.redacted, "postgres://app@db.example:6543/app?connect_timeout=5");
        assert_eq!(a.config.get_password(), Some(&b"s3cret"[..]));
        assert_eq!(a.config.get_ssl_mode(), tokio_postgres::config::SslMode::Require);
        let full = PgAddress::parse(
            "postgres://app@db/app?sslmode=verify-full&sslrootcert=/no/such/ca.pem",
            "t",
        );
        let e = full.unwrap_err();
        assert!(
            e.message().contains("sslrootcert /no/such/ca.pem: cannot read it"),
            "{e}"
        );
    }

    #[test]
    fn the_password_file_gives_the_first_matching_line_with_wildcards_and_escapes() {
        let file = "# a comment\n\
                    db.example:5432:app:app:first\n\
                    *:5432:*:app:second\n\
                    localhost:*:shop:sh\\:op:c\\:o\\\\lon\n\
                    too:few:fields\n";
        assert_eq!(
            pgpass_lookup(file, ["db.example", "5432", "app", "app"]).as_deref(),
            Some("first")
        );
        assert_eq!(
            pgpass_lookup(file, ["other", "5432", "x", "app"]).as_deref(),
            Some("second")
        );
        assert_eq!(
            pgpass_lookup(file, ["localhost", "6000", "shop", "sh:op"]).as_deref(),
            Some("c:o\\lon")
        );
        assert_eq!(pgpass_lookup(file, ["other", "6000", "x", "app"]), None);
    }
}
