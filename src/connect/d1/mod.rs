//! Cloudflare D1 through its HTTP API: `d1://ACCOUNT_ID/DATABASE_ID`.
//!
//! Contract (see `crate::d1double` for the API and its limits):
//! - MUST stay inside the rate limit: requests are paced evenly at 95% of `FERRY_D1_RATE`
//!   (`1200/300`: requests per seconds), so the lockout a burst would cause never comes; a 429
//!   (someone else used the budget) is waited out as its `Retry-After` says, and 5xx and dropped
//!   connections are retried with the shared backoff policy.
//! - MUST pack rows densely: multi-row INSERTs with the values inlined as SQL literals (no bound
//!   parameters, so no 100-parameter limit), each statement under 100,000 bytes, many statements
//!   per request, each request (about `FERRY_D1_REQUEST_BYTES`, 1 MiB) finishing well inside 30 s.
//!   A row too big to inline goes alone with its values bound as text and cast back.
//! - MUST make every request its own transaction that also moves the stream's commit marker to
//!   the last row it carries, so a kill between requests never leaves rows the marker does not
//!   count (a re-run skips exactly those).
//! - MUST NOT apply a request twice: after an attempt whose outcome is unknown (a dropped
//!   connection or a 5xx, when the database may have committed and the answer been lost), the
//!   markers the request moves (or the table it creates) are read back before it is sent again.
//! - MUST isolate rows the server refuses by splitting the request, then the statement, and put
//!   them in the reject file with the server's message; values D1 cannot hold (over 2,000,000
//!   bytes, NaN) are refused before any request.
//!
//! Here: [`client`] (the API), [`literals`] (values as SQL literals), [`source`] and [`target`].

pub(crate) mod capture;
pub(crate) mod client;
pub(crate) mod journal;
pub(crate) mod literals;
pub(crate) mod source;
pub(crate) mod target;

const DEFAULT_BASE: &str = "https://api.cloudflare.com/client/v4";
/// D1's limits (a statement's 100,000 bytes: `STATEMENT_TARGET` stays under it).
pub(crate) const MAX_VALUE_BYTES: usize = 2_000_000;
pub(crate) const MAX_COLUMNS: usize = 100;
/// What we aim under: room for the statement's head and conflict clause.
const STATEMENT_TARGET: usize = 90_000;

#[cfg(test)]
mod tests {
    use super::client::*;
    use super::literals::*;
    use super::*;
    use crate::value::Value;

    #[test]
    fn addresses_name_an_account_and_a_database() {
        assert_eq!(
            parse_address("d1://acc123/db-456").unwrap(),
            ("acc123".into(), "db-456".into())
        );
        assert!(parse_address("d1://acc123").is_err());
        assert!(parse_address("d1://acc/db/x").is_err());
    }

    #[test]
    fn literals_are_exact_sql() {
        let lit = |v: Value| {
            let mut s = String::new();
            literal(&v, &mut s).map(|()| s)
        };
        assert_eq!(lit(Value::Integer(i64::MAX)).unwrap(), "9223372036854775807");
        assert_eq!(lit(Value::text("it's")).unwrap(), "'it''s'");
        assert_eq!(lit(Value::Real(0.1)).unwrap(), "1e-1");
        assert_eq!(lit(Value::Real(f64::INFINITY)).unwrap(), "9e999");
        assert_eq!(lit(Value::Blob(vec![0, 255])).unwrap(), "X'00FF'");
        assert_eq!(lit(Value::Text(vec![0xff])).unwrap(), "CAST(X'FF' AS TEXT)");
        assert!(lit(Value::Real(f64::NAN)).is_err());
        assert!(lit(Value::Blob(vec![0; MAX_VALUE_BYTES + 1])).is_err());
    }
}
