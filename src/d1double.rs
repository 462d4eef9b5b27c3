//! A faithful double of Cloudflare D1's HTTP API, backed by real SQLite, for tests and for trying
//! ferry without an account. This module is the one place its behaviour is written down, so it can
//! be checked against the real service (facts from Cloudflare's documentation and workerd):
//!
//! - `POST {base}/accounts/{account}/d1/database/{database}/query` (rows as objects) and `/raw`
//!   (`{"columns": [...], "rows": [[...]]}`), base `/client/v4`. Body `{"sql": "...", "params":
//!   [...]}` or `{"batch": [{"sql": ..., "params": [...]}, ...]}`. Params are bound as text (the API
//!   takes strings; a number or boolean is bound as its text, `null` as NULL). Without params the
//!   sql may hold several statements.
//! - The whole request is one transaction: a failing statement rolls back everything before it.
//! - The v4 envelope: `{"success", "errors": [{"code", "message"}], "messages", "result"}`, one
//!   `result` entry per statement with `results` and `meta` (`changes`, `duration`, `last_row_id`,
//!   `rows_read`, `rows_written`).
//! - SQL errors: HTTP 400, code 7500, `"<SQLite message>: SQLITE_ERROR"` (the SQLite code name).
//! - `Authorization: Bearer TOKEN`: missing -> 401, wrong -> 403 (code 10000).
//! - Limits as workerd sets them with `sqlite3_limit`: 100 bound parameters per statement,
//!   100,000 bytes per statement, 2,000,000 bytes per string, BLOB or row, 100 columns.
//!   `foreign_keys` is always on (`PRAGMA defer_foreign_keys` works).
//! - 30 s per request: a request still running then is interrupted and rolled back (HTTP 400,
//!   code 7429, "D1 DB ... timeout").
//! - Integers come back as JSON numbers, so those beyond 2^53 lose precision, as through the real
//!   API (read them `CAST(... AS TEXT)`). BLOBs come back as arrays of byte values.
//! - Rate limit: 1,200 requests per 5 minutes per token, counted over a sliding window. The
//!   request that goes over it gets 429 with `Retry-After` and starts a lockout: every call is
//!   refused (429) for 5 minutes. `scale` divides every duration (window, lockout, time limit) so
//!   tests can run the real limits fast.
//!
//! Differences (deliberate): a database id never seen before is created empty on first use; there
//! is no `/import` endpoint; `GET /__double/stats` reports what the double saw (requests, rows
//! written, 429s, lockouts), `inject_429` answers the next N requests with 429 and a short
//! `Retry-After` (another client eating the budget), and `lose_answers` commits the next N
//! requests that change the database but answers 502 (an answer lost between the database and the client: a retry must
//! not apply the request twice).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response, StatusCode};
use rusqlite::limits::Limit;
use rusqlite::types::ValueRef as SqlRef;
use serde_json::{Map, Value as Json, json};

use crate::error::{Error, ErrorKind, Result};

/// How the double behaves.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where databases live: `DIR/DATABASE_ID.sqlite3`.
    pub dir: PathBuf,
    /// The one token it accepts.
    pub token: String,
    /// Requests per window (1,200) over the window (300 s), then a lockout (300 s).
    pub rate_limit: u64,
    pub window: Duration,
    pub lockout: Duration,
    /// Time per request (30 s).
    pub request_time: Duration,
    /// Every duration above is divided by this (1: real time).
    pub scale: f64,
    /// The SQLite limits above switched on (always, unless a test wants to see them off).
    pub limits: bool,
}

impl Config {
    pub fn new(dir: PathBuf, token: String) -> Config {
        Config {
            dir,
            token,
            rate_limit: 1200,
            window: Duration::from_secs(300),
            lockout: Duration::from_secs(300),
            request_time: Duration::from_secs(30),
            scale: 1.0,
            limits: true,
        }
    }

    fn scaled(&self, d: Duration) -> Duration {
        d.div_f64(self.scale.max(1e-9))
    }
}

/// What the double saw.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub ok: AtomicU64,
    pub sql_errors: AtomicU64,
    pub rate_limited: AtomicU64,
    pub lockouts: AtomicU64,
    pub statements: AtomicU64,
    pub rows_written: AtomicU64,
    /// Answer this many coming requests with 429 (not a lockout).
    pub inject_429: AtomicU64,
    /// Commit this many coming requests that change the database, then answer 502 as if the
    /// answer was lost on the way back.
    pub lose_answers: AtomicU64,
    /// Answer this many coming requests, unapplied, with HTTP 400 and code 7500 saying the
    /// database's storage was reset: the shape of D1's retryable errors, which look like an SQL
    /// error by status and code and differ only by message.
    pub inject_resets: AtomicU64,
}

impl Stats {
    pub fn to_json(&self) -> Json {
        let g = |a: &AtomicU64| a.load(Ordering::SeqCst);
        json!({
            "requests": g(&self.requests), "ok": g(&self.ok), "sql_errors": g(&self.sql_errors),
            "rate_limited": g(&self.rate_limited), "lockouts": g(&self.lockouts),
            "statements": g(&self.statements), "rows_written": g(&self.rows_written),
        })
    }
}

struct Limiter {
    /// When each request of the window arrived.
    seen: VecDeque<Instant>,
    locked_until: Option<Instant>,
}

pub struct Double {
    cfg: Config,
    stats: Arc<Stats>,
    limiter: Mutex<Limiter>,
    /// One connection per database, used by one request at a time (D1 serialises writes).
    dbs: Mutex<HashMap<String, Arc<Mutex<rusqlite::Connection>>>>,
}

fn envelope(status: StatusCode, code: u64, message: &str) -> Response<Full<Bytes>> {
    let body =
        json!({"success": false, "errors": [{"code": code, "message": message}], "messages": [], "result": null});
    respond(status, &body)
}

fn respond(status: StatusCode, body: &Json) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn code_name(e: &rusqlite::Error) -> &'static str {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::ConstraintViolation) => "SQLITE_CONSTRAINT",
        Some(rusqlite::ErrorCode::TooBig) => "SQLITE_TOOBIG",
        Some(rusqlite::ErrorCode::TypeMismatch) => "SQLITE_MISMATCH",
        Some(rusqlite::ErrorCode::OperationInterrupted) => "SQLITE_INTERRUPT",
        _ => "SQLITE_ERROR",
    }
}

fn sql_message(e: &rusqlite::Error) -> String {
    let m = match e {
        rusqlite::Error::SqliteFailure(_, Some(m)) => m.clone(),
        rusqlite::Error::SqlInputError { msg, .. } => msg.clone(),
        other => other.to_string(),
    };
    format!("{m}: {}", code_name(e))
}

fn to_json(v: SqlRef<'_>) -> Json {
    match v {
        SqlRef::Null => Json::Null,
        // Numbers are doubles on the way out, as through the real API.
        SqlRef::Integer(i) if i.unsigned_abs() <= 1 << 53 => json!(i),
        SqlRef::Integer(i) => json!(i as f64),
        SqlRef::Real(f) if f.is_finite() => json!(f),
        SqlRef::Real(_) => Json::Null,
        SqlRef::Text(t) => json!(String::from_utf8_lossy(t)),
        SqlRef::Blob(b) => json!(b),
    }
}

impl Double {
    pub fn new(cfg: Config) -> Result<Double> {
        std::fs::create_dir_all(&cfg.dir)
            .map_err(|e| Error::new(ErrorKind::Io, format!("creating {}: {e}", cfg.dir.display())))?;
        Ok(Double {
            cfg,
            stats: Arc::new(Stats::default()),
            limiter: Mutex::new(Limiter {
                seen: VecDeque::new(),
                locked_until: None,
            }),
            dbs: Mutex::new(HashMap::new()),
        })
    }

    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    fn db(&self, id: &str) -> std::result::Result<Arc<Mutex<rusqlite::Connection>>, String> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(format!("{id:?} is not a database id"));
        }
        let mut dbs = self.dbs.lock().map_err(|_| "poisoned".to_owned())?;
        if let Some(c) = dbs.get(id) {
            return Ok(Arc::clone(c));
        }
        let conn = rusqlite::Connection::open(self.cfg.dir.join(format!("{id}.sqlite3"))).map_err(|e| e.to_string())?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON;")
            .map_err(|e| e.to_string())?;
        // D1 runs one request at a time; a test standing in for the application's Worker writes
        // to the file itself, and a request waits for it as a Worker's query would queue.
        conn.busy_timeout(self.cfg.scaled(self.cfg.request_time))
            .map_err(|e| e.to_string())?;
        if self.cfg.limits {
            let _ = conn.set_limit(Limit::SQLITE_LIMIT_VARIABLE_NUMBER, 100);
            let _ = conn.set_limit(Limit::SQLITE_LIMIT_SQL_LENGTH, 100_000);
            let _ = conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, 2_000_000);
            let _ = conn.set_limit(Limit::SQLITE_LIMIT_COLUMN, 100);
        }
        let c = Arc::new(Mutex::new(conn));
        dbs.insert(id.to_owned(), Arc::clone(&c));
        Ok(c)
    }

    /// The rate limit: `Some(retry_after)` when this request is refused.
    fn admit(&self) -> Option<Duration> {
        let now = Instant::now();
        if self.stats.inject_429.load(Ordering::SeqCst) > 0 {
            self.stats.inject_429.fetch_sub(1, Ordering::SeqCst);
            return Some(Duration::from_secs(1));
        }
        let mut l = match self.limiter.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        if let Some(until) = l.locked_until {
            if now < until {
                return Some(until - now);
            }
            l.locked_until = None;
        }
        let window = self.cfg.scaled(self.cfg.window);
        while l.seen.front().is_some_and(|t| now.duration_since(*t) >= window) {
            l.seen.pop_front();
        }
        if l.seen.len() as u64 >= self.cfg.rate_limit {
            let lockout = self.cfg.scaled(self.cfg.lockout);
            l.locked_until = Some(now + lockout);
            self.stats.lockouts.fetch_add(1, Ordering::SeqCst);
            return Some(lockout);
        }
        l.seen.push_back(now);
        None
    }

    /// Answer one HTTP request.
    pub async fn handle(self: Arc<Self>, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        if path == "/__double/stats" {
            return respond(StatusCode::OK, &self.stats.to_json());
        }
        self.stats.requests.fetch_add(1, Ordering::SeqCst);
        let auth = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match auth.as_deref().and_then(|a| a.strip_prefix("Bearer ")) {
            None => return envelope(StatusCode::UNAUTHORIZED, 10000, "Authentication error"),
            Some(t) if t != self.cfg.token => return envelope(StatusCode::FORBIDDEN, 10000, "Authentication error"),
            Some(_) => {}
        }
        if self
            .stats
            .inject_resets
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return envelope(
                StatusCode::BAD_REQUEST,
                7500,
                "D1_ERROR: Internal error in D1 DB storage caused object to be reset.",
            );
        }
        if let Some(wait) = self.admit() {
            self.stats.rate_limited.fetch_add(1, Ordering::SeqCst);
            let mut r = envelope(
                StatusCode::TOO_MANY_REQUESTS,
                971,
                "Please wait and consider throttling your request speed",
            );
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(v) = hyper::header::HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(hyper::header::RETRY_AFTER, v);
            }
            return r;
        }
        // /client/v4/accounts/{account}/d1/database/{database}/{query|raw}
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (db_id, raw) = match parts.as_slice() {
            [
                "client",
                "v4",
                "accounts",
                _,
                "d1",
                "database",
                db,
                kind @ ("query" | "raw"),
            ] => ((*db).to_owned(), *kind == "raw"),
            _ => return envelope(StatusCode::NOT_FOUND, 7000, "No route for that URI"),
        };
        if req.method() != hyper::Method::POST {
            return envelope(StatusCode::METHOD_NOT_ALLOWED, 10405, "Method not allowed");
        }
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return envelope(StatusCode::BAD_REQUEST, 7400, &format!("reading the body: {e}")),
        };
        let parsed: Json = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return envelope(StatusCode::BAD_REQUEST, 7400, &format!("The request is malformed: {e}")),
        };
        let stmts: Vec<(String, Vec<Json>)> = match statements_of(&parsed) {
            Ok(s) => s,
            Err(m) => return envelope(StatusCode::BAD_REQUEST, 7400, &m),
        };
        let db = match self.db(&db_id) {
            Ok(d) => d,
            Err(m) => return envelope(StatusCode::NOT_FOUND, 7404, &m),
        };
        let me = Arc::clone(&self);
        let deadline = self.cfg.scaled(self.cfg.request_time);
        let outcome = tokio::task::spawn_blocking(move || me.run(&db, &stmts, raw, deadline)).await;
        match outcome {
            Ok(Ok(results))
                if results.iter().any(|r| r["meta"]["changed_db"] == true)
                    && self
                        .stats
                        .lose_answers
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok() =>
            {
                envelope(
                    StatusCode::BAD_GATEWAY,
                    7502,
                    "Bad gateway (the answer was lost; the request was applied)",
                )
            }
            Ok(Ok(results)) => {
                self.stats.ok.fetch_add(1, Ordering::SeqCst);
                respond(
                    StatusCode::OK,
                    &json!({"success": true, "errors": [], "messages": [], "result": results}),
                )
            }
            Ok(Err((code, m))) => {
                self.stats.sql_errors.fetch_add(1, Ordering::SeqCst);
                envelope(StatusCode::BAD_REQUEST, code, &m)
            }
            Err(e) => envelope(StatusCode::INTERNAL_SERVER_ERROR, 7500, &format!("internal error: {e}")),
        }
    }

    /// Run the statements in one transaction.
    fn run(
        &self,
        db: &Mutex<rusqlite::Connection>,
        stmts: &[(String, Vec<Json>)],
        raw: bool,
        time: Duration,
    ) -> std::result::Result<Vec<Json>, (u64, String)> {
        let mut conn = db.lock().map_err(|_| (7500, "database poisoned".to_owned()))?;
        let deadline = Instant::now() + time;
        let _ = conn.progress_handler(1000, Some(move || Instant::now() > deadline));
        let result = (|| {
            conn.execute_batch("BEGIN IMMEDIATE")
                .map_err(|e| (7500, sql_message(&e)))?;
            let mut out = Vec::new();
            for (sql, params) in stmts {
                let r = if params.is_empty() {
                    run_many(&conn, sql, raw, &self.stats)
                } else {
                    run_one(&conn, sql, params, raw, &self.stats)
                };
                match r {
                    Ok(mut v) => out.append(&mut v),
                    Err(e) => {
                        let _ = conn.execute_batch("ROLLBACK");
                        if Instant::now() > deadline {
                            return Err((
                                7429,
                                "D1 DB storage operation exceeded timeout which caused object to be reset.".to_owned(),
                            ));
                        }
                        return Err((7500, sql_message(&e)));
                    }
                }
            }
            conn.execute_batch("COMMIT").map_err(|e| {
                let _ = conn.execute_batch("ROLLBACK");
                (7500, sql_message(&e))
            })?;
            Ok(out)
        })();
        let _ = conn.progress_handler(0, None::<fn() -> bool>);
        result
    }
}

fn statements_of(body: &Json) -> std::result::Result<Vec<(String, Vec<Json>)>, String> {
    let one = |v: &Json| -> std::result::Result<(String, Vec<Json>), String> {
        let sql = v
            .get("sql")
            .and_then(Json::as_str)
            .ok_or("a statement needs \"sql\" (a string)")?;
        let params = match v.get("params") {
            None | Some(Json::Null) => vec![],
            Some(Json::Array(a)) => a.clone(),
            Some(_) => return Err("\"params\" must be an array".into()),
        };
        Ok((sql.to_owned(), params))
    };
    match body.get("batch") {
        Some(Json::Array(items)) => items.iter().map(one).collect(),
        Some(_) => Err("\"batch\" must be an array".into()),
        None => Ok(vec![one(body)?]),
    }
}

fn meta(conn: &rusqlite::Connection, changes: u64, started: Instant, rows_read: u64, changed_db: bool) -> Json {
    json!({
        "changes": changes, "duration": started.elapsed().as_secs_f64() * 1000.0,
        "last_row_id": conn.last_insert_rowid(), "rows_read": rows_read, "rows_written": changes,
        "changed_db": changed_db,
    })
}

fn collect(
    conn: &rusqlite::Connection,
    st: &mut rusqlite::Statement<'_>,
    raw: bool,
    stats: &Stats,
) -> rusqlite::Result<Json> {
    let started = Instant::now();
    let names: Vec<String> = st.column_names().map(str::to_owned).collect();
    let before = conn.total_changes();
    let mut rows_json = Vec::new();
    let readonly = st.readonly();
    let mut rows = st.raw_query();
    let mut n = 0u64;
    while let Some(r) = rows.next()? {
        n += 1;
        let vals: Vec<Json> = (0..names.len())
            .map(|i| r.get_ref(i).map(to_json))
            .collect::<rusqlite::Result<_>>()?;
        if raw {
            rows_json.push(Json::Array(vals));
        } else {
            let mut m = Map::new();
            for (k, v) in names.iter().zip(vals) {
                m.insert(k.clone(), v);
            }
            rows_json.push(Json::Object(m));
        }
    }
    let changes = conn.total_changes().saturating_sub(before);
    stats.statements.fetch_add(1, Ordering::SeqCst);
    stats.rows_written.fetch_add(changes, Ordering::SeqCst);
    let results = if raw {
        json!({"columns": names, "rows": rows_json})
    } else {
        Json::Array(rows_json)
    };
    let changed_db = changes > 0 || !readonly;
    Ok(json!({"success": true, "results": results, "meta": meta(conn, changes, started, n, changed_db)}))
}

fn run_one(
    conn: &rusqlite::Connection,
    sql: &str,
    params: &[Json],
    raw: bool,
    stats: &Stats,
) -> rusqlite::Result<Vec<Json>> {
    let mut st = conn.prepare(sql)?;
    for (i, p) in params.iter().enumerate() {
        match p {
            Json::Null => st.raw_bind_parameter(i + 1, rusqlite::types::Null)?,
            Json::String(s) => st.raw_bind_parameter(i + 1, s.as_str())?,
            other => st.raw_bind_parameter(i + 1, other.to_string())?,
        }
    }
    Ok(vec![collect(conn, &mut st, raw, stats)?])
}

fn run_many(conn: &rusqlite::Connection, sql: &str, raw: bool, stats: &Stats) -> rusqlite::Result<Vec<Json>> {
    let mut out = Vec::new();
    use rusqlite::fallible_iterator::FallibleIterator as _;
    let mut batch = rusqlite::Batch::new(conn, sql);
    while let Some(mut st) = batch.next()? {
        out.push(collect(conn, &mut st, raw, stats)?);
    }
    Ok(out)
}

/// A running double on 127.0.0.1.
pub struct Running {
    pub port: u16,
    pub stats: Arc<Stats>,
    rt: tokio::runtime::Runtime,
}

impl Running {
    /// `CLOUDFLARE_API_BASE_URL` for this double.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/client/v4", self.port)
    }

    /// Stop serving (connections dropped, the port refusing).
    pub fn stop(self) {
        self.rt.shutdown_timeout(Duration::from_secs(1));
    }
}

/// Serve the double on 127.0.0.1:`port` (0: a free one) on threads of its own.
pub fn serve(cfg: Config, port: u16) -> Result<Running> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::new(ErrorKind::Io, format!("starting the D1 double: {e}")))?;
    let double = Arc::new(Double::new(cfg)?);
    let stats = double.stats();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
        .map_err(|e| Error::new(ErrorKind::Io, format!("binding 127.0.0.1:{port}: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| Error::new(ErrorKind::Io, e.to_string()))?
        .port();
    rt.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let double = Arc::clone(&double);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let d = Arc::clone(&double);
                    async move { Ok::<_, std::convert::Infallible>(d.handle(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(Running { port, stats, rt })
}
