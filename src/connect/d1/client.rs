//! D1's HTTP API: statements, requests paced inside the rate budget, answers and their errors,
//! retries of what is safe to retry.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

use super::DEFAULT_BASE;
use crate::error::{Error, ErrorKind, Result};

/// One statement of a request.
#[derive(Debug, Clone)]
pub(crate) struct Stmt {
    pub sql: String,
    pub params: Vec<Option<String>>,
}

impl Stmt {
    pub(crate) fn plain(sql: impl Into<String>) -> Stmt {
        Stmt {
            sql: sql.into(),
            params: Vec::new(),
        }
    }

    pub(super) fn bytes(&self) -> usize {
        self.sql.len()
            + self
                .params
                .iter()
                .map(|p| p.as_ref().map_or(4, String::len) + 3)
                .sum::<usize>()
    }
}

/// Requests spaced evenly inside the rate budget.
struct Pacer {
    interval: Duration,
    last: Option<Instant>,
    /// Requests this run has sent in the current window (for progress).
    sent: VecDeque<Instant>,
    window: Duration,
    limit: u64,
}

impl Pacer {
    /// Paced as `FERRY_D1_RATE` says.
    fn from_tuning() -> Pacer {
        let (limit, window) = crate::tuning::Tuning::get().d1_rate;
        Pacer {
            interval: window.div_f64(limit as f64 * 0.95),
            last: None,
            sent: VecDeque::new(),
            window,
            limit,
        }
    }

    fn wait(&mut self) {
        if let Some(last) = self.last {
            let next = last + self.interval;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
        }
        let now = Instant::now();
        self.last = Some(now);
        while self.sent.front().is_some_and(|t| now.duration_since(*t) >= self.window) {
            self.sent.pop_front();
        }
        self.sent.push_back(now);
    }
}

/// A D1 database's HTTP API.
pub(crate) struct D1Client {
    http: reqwest::blocking::Client,
    url: String,
    token: String,
    pub(super) address: String,
    pacer: Pacer,
    pub requests: u64,
    /// Whose failure an error is: the target's, or the source's when reading.
    kind: ErrorKind,
}

/// `d1://ACCOUNT_ID/DATABASE_ID` split.
pub(crate) fn parse_address(url: &str) -> Result<(String, String)> {
    let rest = url
        .strip_prefix("d1://")
        .ok_or_else(|| Error::usage(format!("{url:?} is not a d1:// address")))?;
    let ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    match rest.trim_end_matches('/').split_once('/') {
        Some((a, d)) if ok(a) && ok(d) => Ok((a.to_owned(), d.to_owned())),
        _ => Err(Error::usage(format!(
            "{url:?}: write d1://ACCOUNT_ID/DATABASE_ID (both from the Cloudflare dashboard or `wrangler d1 list`)"
        ))),
    }
}

/// How one request went.
pub(super) enum Sent {
    Ok(Vec<Json>),
    /// The server refused the SQL (HTTP 400): nothing of the request happened.
    Refused(String),
}

impl D1Client {
    /// A client for the database at `url`; its errors are of `kind` (target or source).
    pub(crate) fn open(url: &str, kind: ErrorKind) -> Result<D1Client> {
        let (account, database) = parse_address(url)?;
        let address = format!("d1://{account}/{database}");
        let token = std::env::var("CLOUDFLARE_API_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Error::usage(format!(
                    "{address}: set CLOUDFLARE_API_TOKEN to an API token with D1 edit rights"
                ))
            })?;
        let base = std::env::var("CLOUDFLARE_API_BASE_URL")
            .ok()
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| DEFAULT_BASE.into());
        if base.starts_with("http://") && !crate::connect::objects::s3::is_loopback(&base) {
            return Err(Error::usage(format!(
                "CLOUDFLARE_API_BASE_URL={base}: plain http is only for a local double (127.0.0.1); the token would travel in the clear"
            )));
        }
        let http = reqwest::blocking::Client::builder()
            .timeout(crate::retry::answer_timeout(Some(ANSWER_TIMEOUT)))
            .build()
            .map_err(|e| Error::new(kind, format!("{address}: starting an HTTP client: {e}")))?;
        Ok(D1Client {
            http,
            url: format!(
                "{}/accounts/{account}/d1/database/{database}",
                base.trim_end_matches('/')
            ),
            token,
            address,
            pacer: Pacer::from_tuning(),
            requests: 0,
            kind,
        })
    }

    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    /// Requests sent in the last rate window, and the budget.
    pub(crate) fn budget(&self) -> (usize, u64) {
        (self.pacer.sent.len(), self.pacer.limit)
    }

    /// Send statements as one request (one transaction) to `/query` (rows as objects) or `/raw`
    /// (rows as arrays), paced and retried.
    fn send(&mut self, stmts: &[Stmt], endpoint: &str) -> Result<Sent> {
        self.send_probed(stmts, endpoint, None)
    }

    /// [`D1Client::send`] for a request that must not be applied twice: after an attempt whose
    /// outcome is unknown (a dropped connection, a 5xx: the database may have committed it and
    /// the answer been lost), `probe` (a query answering 1 when the request's effects are there)
    /// decides between sending it again and taking it as done.
    pub(super) fn send_probed(&mut self, stmts: &[Stmt], endpoint: &str, probe: Option<&str>) -> Result<Sent> {
        let kind = self.kind;
        let body = if stmts.len() == 1 {
            json!({"sql": stmts[0].sql, "params": stmts[0].params})
        } else {
            json!({"batch": stmts.iter().map(|s| json!({"sql": s.sql, "params": s.params})).collect::<Vec<_>>()})
        };
        let body = body.to_string();
        let address = self.address.clone();
        let mut limited_for = Duration::ZERO;
        loop {
            let attempt = crate::retry::run(
                &format!("{address}: a request"),
                |attempt| {
                    if attempt > 1
                        && let Some(p) = probe
                        && self.applied(p)?
                    {
                        tracing::info!(target_db = %address, "the request had been applied before its answer was lost: not sending it again");
                        return Ok(None);
                    }
                    self.pacer.wait();
                    self.requests += 1;
                    let r = self
                        .http
                        .post(format!("{}/{endpoint}", self.url))
                        .bearer_auth(&self.token)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .map_err(|e| Error::new(ErrorKind::Transient, format!("{address}: {}", http_failure(&e))))?;
                    let status = r.status().as_u16();
                    let retry_after = r
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<f64>().ok());
                    let text = r.text().unwrap_or_default();
                    if status >= 500 || (!(200..300).contains(&status) && retryable(&first_error(&text))) {
                        return Err(Error::new(
                            ErrorKind::Transient,
                            format!("{address}: the API answered {status}: {}", first_error(&text)),
                        ));
                    }
                    Ok(Some((status, retry_after, text)))
                },
                |e| e.kind() == ErrorKind::Transient,
                std::thread::sleep,
            )
            .map_err(|e| {
                if e.kind() == ErrorKind::Transient && !e.chain().contains(AGAIN) {
                    e.context(AGAIN)
                } else {
                    e
                }
            })?;
            let Some((status, retry_after, text)) = attempt else {
                return Ok(Sent::Ok(Vec::new()));
            };
            match status {
                200..=299 => {
                    let v: Json = serde_json::from_str(&text)
                        .map_err(|e| Error::new(kind, format!("{address}: an answer that is not JSON: {e}")))?;
                    let results = v.get("result").and_then(Json::as_array).cloned().unwrap_or_default();
                    return Ok(Sent::Ok(results));
                }
                429 => {
                    let wait = Duration::from_secs_f64(retry_after.unwrap_or(60.0).clamp(0.05, 900.0));
                    limited_for += wait;
                    if limited_for > Duration::from_secs(1800) {
                        return Err(Error::new(
                            ErrorKind::Transient,
                            format!(
                                "{address}: rate-limited for {} s in all; another client is using this token's budget; re-run the same command later",
                                limited_for.as_secs()
                            ),
                        ));
                    }
                    tracing::warn!(target_db = %address, wait_s = wait.as_secs_f64(), "rate-limited (429): waiting as Retry-After says");
                    std::thread::sleep(wait);
                    // The wait counts as spacing too.
                    self.pacer.last = Some(Instant::now());
                }
                401 | 403 => {
                    return Err(Error::new(
                        kind,
                        format!(
                            "{address}: the API refused the token ({status}: {}); check CLOUDFLARE_API_TOKEN (it needs D1 edit rights on this account)",
                            first_error(&text)
                        ),
                    ));
                }
                404 => {
                    return Err(Error::new(
                        kind,
                        format!(
                            "{address}: no such database or account ({}); check the ids in the address",
                            first_error(&text)
                        ),
                    ));
                }
                _ => return Ok(Sent::Refused(first_error(&text))),
            }
        }
    }

    /// Whether `probe` answers 1 (no table yet: not applied).
    fn applied(&mut self, probe: &str) -> Result<bool> {
        Ok(match self.try_raw(&[probe.to_owned()])? {
            Ok(rows) => {
                rows.first()
                    .and_then(|r| r.first())
                    .and_then(|r| r.first())
                    .and_then(Json::as_i64)
                    == Some(1)
            }
            Err(_) => false,
        })
    }

    /// Run statements; an SQL error is an error naming the first statement.
    pub(crate) fn exec(&mut self, stmts: &[Stmt]) -> Result<Vec<Json>> {
        self.exec_probed(stmts, None)
    }

    /// [`D1Client::exec`] of a request that must not be applied twice (see `send_probed`).
    pub(crate) fn exec_probed(&mut self, stmts: &[Stmt], probe: Option<&str>) -> Result<Vec<Json>> {
        match self.send_probed(stmts, "query", probe)? {
            Sent::Ok(r) => Ok(r),
            Sent::Refused(m) => Err(self.refused(stmts.first().map_or("", |s| s.sql.as_str()), &m)),
        }
    }

    /// The error for SQL the database refused (`sql`: the request's first statement).
    pub(crate) fn refused(&self, sql: &str, message: &str) -> Error {
        Error::new(
            self.kind,
            format!("{}: the database refused {sql}: {message}", self.address),
        )
    }

    /// The rows of one query, as JSON objects.
    pub(crate) fn rows(&mut self, sql: &str, params: &[&str]) -> Result<Vec<Json>> {
        let stmt = Stmt {
            sql: sql.into(),
            params: params.iter().map(|p| Some((*p).to_owned())).collect(),
        };
        let r = self.exec(&[stmt])?;
        Ok(r.first()
            .and_then(|x| x.get("results"))
            .and_then(Json::as_array)
            .cloned()
            .unwrap_or_default())
    }

    /// The rows of each query, as arrays in the order of its columns (`/raw`), from one request.
    pub(crate) fn raw(&mut self, sqls: &[String]) -> Result<Vec<Vec<Vec<Json>>>> {
        match self.try_raw(sqls)? {
            Ok(rows) => Ok(rows),
            Err(m) => Err(self.refused(sqls.first().map_or("", String::as_str), &m)),
        }
    }

    /// [`D1Client::raw`], with the server's message when it refused the SQL (HTTP 400).
    #[allow(clippy::type_complexity)]
    pub(crate) fn try_raw(&mut self, sqls: &[String]) -> Result<std::result::Result<Vec<Vec<Vec<Json>>>, String>> {
        let stmts: Vec<Stmt> = sqls.iter().map(|s| Stmt::plain(s.as_str())).collect();
        let results = match self.send(&stmts, "raw")? {
            Sent::Ok(r) => r,
            Sent::Refused(m) => return Ok(Err(m)),
        };
        Ok(Ok(results
            .iter()
            .map(|r| {
                r.pointer("/results/rows")
                    .and_then(Json::as_array)
                    .map(|rows| {
                        rows.iter()
                            .map(|row| row.as_array().cloned().unwrap_or_default())
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect()))
    }
}

fn first_error(text: &str) -> String {
    serde_json::from_str::<Json>(text)
        .ok()
        .and_then(|v| {
            v.get("errors")?
                .as_array()?
                .first()
                .map(|e| format!("{} (code {})", e["message"].as_str().unwrap_or(""), e["code"]))
        })
        .unwrap_or_else(|| text.chars().take(300).collect())
}

/// How long a request waits for its answer unless `FERRY_TIMEOUT` says otherwise (D1 itself
/// gives up on a query after 30 s).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(90);

/// What to do when D1 stopped answering for longer than the retries wait.
const AGAIN: &str = "D1 could not be reached or did not answer; nothing after the last acknowledged STATE is recorded as done: once it answers again, re-run the same command to continue";

/// A request that got no answer, in words: a timeout says which setting bounds it, anything
/// else gives its cause (the client's own message hides it).
fn http_failure(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        let limit = crate::retry::answer_timeout(Some(ANSWER_TIMEOUT)).unwrap_or_default();
        return format!(
            "no answer in {:.0} s (FERRY_TIMEOUT sets how long to wait)",
            limit.as_secs_f64()
        );
    }
    let mut text = String::from("the request failed");
    for c in crate::error::causes(e) {
        text.push_str(&format!(": {c}"));
    }
    text
}

/// D1's errors that say the database, not the SQL, failed: they come with any status (often 400
/// and code 7500, like an SQL error) and differ only by message. Cloudflare's guidance is to
/// retry them; taken for refusals, they would reject good rows.
const RETRYABLE: &[&str] = &[
    "Network connection lost",
    "storage caused object to be reset",
    "reset because its code was updated",
    "D1 DB is overloaded",
    "Too many requests queued",
];

fn retryable(answer: &str) -> bool {
    RETRYABLE.iter().any(|m| answer.contains(m))
}
