//! Retrying transient faults: one shared policy (capped exponential backoff with full jitter),
//! kept apart from each connector's judgement of which errors are transient.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use crate::error::{Error, ErrorKind, Result};

/// The policy: 6 retries (`FERRY_RETRIES` sets how many), from 200 ms doubling to at most 5 s
/// each, jittered.
pub(crate) fn policy() -> ExponentialBuilder {
    let times = crate::tuning::Tuning::get().retries;
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(times)
        .with_jitter()
}

/// How long to wait for any one answer from a server before taking the connection for dead
/// (and retrying on a new one): `FERRY_TIMEOUT` seconds when set, else `default` (None: no
/// limit). A hung server or a proxy that swallows traffic then ends in a clear error instead of
/// a run that never ends.
pub(crate) fn answer_timeout(default: Option<Duration>) -> Option<Duration> {
    crate::tuning::Tuning::get().timeout.or(default)
}

/// Run `op` until it succeeds, fails with an error `transient` does not accept, or the policy
/// runs out; `sleep` waits between attempts (a real sleep, or a recorder in tests).
pub(crate) fn run<T>(
    what: &str,
    mut op: impl FnMut(u32) -> Result<T>,
    transient: impl Fn(&Error) -> bool,
    mut sleep: impl FnMut(Duration),
) -> Result<T> {
    let mut delays = policy().build();
    let mut attempt = 0u32;
    let mut waited = Duration::ZERO;
    loop {
        attempt += 1;
        match op(attempt) {
            Ok(v) => return Ok(v),
            Err(e) if transient(&e) => match delays.next() {
                Some(d) => {
                    tracing::warn!(what, attempt, retry_in_ms = d.as_millis() as u64, error = %e.chain(), "transient failure, retrying");
                    sleep(d);
                    waited += d;
                }
                None => {
                    return Err(Error::new(
                        ErrorKind::Transient,
                        format!(
                            "{what}: still failing after {attempt} attempts over {:.1} s",
                            waited.as_secs_f64()
                        ),
                    )
                    .with_source(e));
                }
            },
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transient_error() -> Error {
        Error::new(ErrorKind::Transient, "connection reset")
    }

    #[test]
    fn retries_transient_errors_with_capped_growing_delays() {
        let mut slept = Vec::new();
        let mut calls = 0;
        let r: Result<()> = run(
            "connecting",
            |_| {
                calls += 1;
                Err(transient_error())
            },
            |e| e.kind() == ErrorKind::Transient,
            |d| slept.push(d),
        );
        let e = r.unwrap_err();
        assert_eq!(calls, 7, "one try and six retries");
        assert_eq!(slept.len(), 6);
        assert!(
            slept
                .iter()
                .all(|d| *d <= Duration::from_secs(5) + Duration::from_secs(5)),
            "{slept:?}"
        );
        assert!(e.message().contains("still failing after 7 attempts"), "{e}");
        assert_eq!(e.kind(), ErrorKind::Transient);
    }

    #[test]
    fn stops_at_success_and_at_a_permanent_error() {
        let mut slept = 0;
        let v = run(
            "x",
            |n| if n < 3 { Err(transient_error()) } else { Ok(n) },
            |_| true,
            |_| slept += 1,
        )
        .unwrap();
        assert_eq!((v, slept), (3, 2));
        let mut calls = 0;
        let e = run::<()>(
            "x",
            |_| {
                calls += 1;
                Err(Error::usage("bad password"))
            },
            |e| e.kind() == ErrorKind::Transient,
            |_| {},
        )
        .unwrap_err();
        assert_eq!((calls, e.kind()), (1, ErrorKind::Usage));
    }
}
