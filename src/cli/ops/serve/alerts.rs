//! Alerts: a JSON message posted to a webhook when a run ends (complete, failed, stopped,
//! interrupted), when a running run stalls (no progress recorded for `stall_seconds`), and when a
//! validation over the API finds differences. The runs are watched in the state file, so the
//! command line's runs are alerted on as well as the server's. Messages go through a queue to
//! one sender that retries with backoff: an alert never holds up a run or a request, and the
//! webhook's address (a Slack URL is a secret) is never logged.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use crate::checkpoint::RunStatus;

/// `[alerts]` in the server's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlertConfig {
    /// Where messages are posted.
    pub webhook: String,
    /// A running run with no progress for this long is stalled [default: 600].
    pub stall_seconds: Option<u64>,
    /// Post Slack's body (`{"text": ...}`) instead of ferry's JSON.
    #[serde(default)]
    pub slack: bool,
}

/// How often the state file is looked at.
const EVERY: Duration = Duration::from_secs(1);
/// Messages waiting for the sender at most; beyond, the newest are dropped (said in the log).
const QUEUE: usize = 1000;

/// The sending side of the alerts, for the handlers (a validation's differences).
#[derive(Clone)]
pub(crate) struct Alerts {
    tx: mpsc::Sender<serde_json::Value>,
}

impl Alerts {
    /// Queue a message; never waits.
    pub(crate) fn send(&self, event: &str, text: String, details: serde_json::Value) {
        let message = json!({"event": event, "text": text, "at": crate::protocol::now_rfc3339(), "details": details});
        if self.tx.try_send(message).is_err() {
            tracing::warn!(event, "the alert queue is full: this alert is dropped");
        }
    }
}

/// Start the sender and the watcher of `state` (on the current tokio runtime).
pub(crate) fn start(config: AlertConfig, state: PathBuf) -> Alerts {
    let (tx, rx) = mpsc::channel(QUEUE);
    let alerts = Alerts { tx };
    tokio::spawn(send_all(config.clone(), rx));
    tokio::spawn(watch(
        alerts.clone(),
        state,
        Duration::from_secs(config.stall_seconds.unwrap_or(600)),
    ));
    alerts
}

/// Post each message, retried with backoff; one that still fails is logged and dropped.
async fn send_all(config: AlertConfig, mut rx: mpsc::Receiver<serde_json::Value>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client");
    let host = reqwest::Url::parse(&config.webhook)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    while let Some(message) = rx.recv().await {
        let body = body(&config, &message);
        let mut delays = backon::BackoffBuilder::build(crate::retry::policy());
        loop {
            let outcome = client.post(&config.webhook).json(&body).send().await;
            let failure = match outcome {
                Ok(r) if r.status().is_success() => break,
                Ok(r) => format!("answered {}", r.status()),
                Err(e) => format!("unreachable ({})", e.without_url()),
            };
            match delays.next() {
                Some(wait) => tokio::time::sleep(wait).await,
                None => {
                    tracing::warn!(webhook_host = %host, event = %message["event"], %failure, "an alert could not be delivered: dropped");
                    break;
                }
            }
        }
    }
}

/// What was last seen of a run: its status, and whether its stall was alerted.
struct Seen {
    status: RunStatus,
    stalled: bool,
}

/// Look at the runs every [`EVERY`]: a run that ended since it was last seen running, or that
/// stalls, is alerted on. Runs already ended when the server started are not.
async fn watch(alerts: Alerts, state: PathBuf, stall: Duration) {
    let mut seen: Option<HashMap<String, Seen>> = None;
    loop {
        let path = state.clone();
        let runs = tokio::task::spawn_blocking(move || crate::stage::status::runs_now(&path)).await;
        let Ok(Ok(runs)) = runs else {
            tokio::time::sleep(EVERY).await;
            continue;
        };
        let first = seen.is_none();
        let before = seen.get_or_insert_with(HashMap::new);
        for now in &runs {
            let r = &now.run;
            let was = before.get(&r.run_id);
            let was_running = was.is_some_and(|w| w.status == RunStatus::Running);
            let was_stalled = was.is_some_and(|w| w.stalled);
            let is_new = was.is_none() && !first;
            let target = r.target.as_deref().unwrap_or("?");
            // Ended since it was last seen running, or begun and ended between two looks.
            if r.status != RunStatus::Running && (was_running || is_new) {
                let event = if r.status == RunStatus::Complete {
                    "completed"
                } else {
                    "failed"
                };
                let why = r.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
                let text = format!("ferry: {} run {} into {target} {}{why}", r.stage, r.run_id, r.status);
                alerts.send(event, text, now.json());
            }
            // Alerted once per stall: again only after it has moved in between.
            let idle = now.idle_s().filter(|_| r.status == RunStatus::Running);
            let stalled = idle.is_some_and(|i| i >= stall.as_secs_f64());
            if stalled && !was_stalled {
                let text = format!(
                    "ferry: {} run {} into {target} has recorded no progress for {:.0} s",
                    r.stage,
                    r.run_id,
                    idle.unwrap_or_default()
                );
                alerts.send("stalled", text, now.json());
            }
            before.insert(
                r.run_id.clone(),
                Seen {
                    status: r.status,
                    stalled,
                },
            );
        }
        tokio::time::sleep(EVERY).await;
    }
}

/// What is posted for `message`: ferry's JSON, or Slack's `{"text": ...}`.
fn body(config: &AlertConfig, message: &serde_json::Value) -> serde_json::Value {
    if config.slack {
        json!({"text": message["text"]})
    } else {
        message.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_gets_the_text_and_others_the_whole_message() {
        let message = json!({"event": "failed", "text": "ferry: import run R failed", "details": {"x": 1}});
        let mut config = AlertConfig {
            webhook: "http://127.0.0.1:1/".into(),
            stall_seconds: None,
            slack: false,
        };
        assert_eq!(body(&config, &message), message);
        config.slack = true;
        assert_eq!(body(&config, &message), json!({"text": "ferry: import run R failed"}));
    }
}
