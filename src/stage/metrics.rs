//! A state file's runs as Prometheus metrics, in the OpenMetrics text format that Prometheus
//! scrapes: `ferry serve`'s `/metrics`.
//!
//! Totals are per stage and target (a label set per place data goes, not per run, so the series
//! do not grow with every run); the figures only a running run has (its rate, its time left, how
//! long since it last moved) are per running run.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::status::RunNow;
use crate::checkpoint::RunStatus;

/// The content type of [`render`]'s text.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByStatus {
    stage: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByTarget {
    stage: String,
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByRow {
    stage: String,
    target: String,
    /// written, skipped, deleted or rejected
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByRun {
    run: String,
    stage: String,
    target: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The metrics of these runs, as OpenMetrics text.
pub(crate) fn render(runs: &[RunNow]) -> String {
    let runs_by_status = Family::<ByStatus, Gauge>::default();
    let rows = Family::<ByRow, Gauge>::default();
    let last_end = Family::<ByTarget, FloatGauge>::default();
    let rate = Family::<ByRun, FloatGauge>::default();
    let left = Family::<ByRun, FloatGauge>::default();
    let idle = Family::<ByRun, FloatGauge>::default();
    for now in runs {
        let r = &now.run;
        let target = r.target.clone().unwrap_or_default();
        runs_by_status
            .get_or_create(&ByStatus {
                stage: r.stage.clone(),
                status: r.status.to_string(),
            })
            .inc();
        for (outcome, n) in [
            ("written", r.rows_written),
            ("skipped", r.rows_skipped),
            ("deleted", r.rows_deleted),
            ("rejected", r.rows_rejected),
        ] {
            rows.get_or_create(&ByRow {
                stage: r.stage.clone(),
                target: target.clone(),
                outcome: outcome.into(),
            })
            .inc_by(n);
        }
        if r.status != RunStatus::Running
            && let Some(end) = r.finished_at.as_deref().and_then(|t| t.parse::<jiff::Timestamp>().ok())
        {
            let g = last_end.get_or_create(&ByTarget {
                stage: r.stage.clone(),
                target: target.clone(),
            });
            g.set(g.get().max(end.as_millisecond() as f64 / 1000.0));
        }
        if r.status == RunStatus::Running {
            let labels = ByRun {
                run: r.run_id.clone(),
                stage: r.stage.clone(),
                target,
            };
            for (family, value) in [
                (&rate, now.rows_per_s()),
                (&left, now.seconds_left()),
                (&idle, now.idle_s()),
            ] {
                if let Some(v) = value {
                    family.get_or_create(&labels).set(v);
                }
            }
        }
    }
    let mut registry = Registry::with_prefix("ferry");
    registry.register("runs", "Runs in the state file, by stage and status", runs_by_status);
    registry.register(
        "rows",
        "Rows the runs handled, by stage, target and outcome (written, skipped, deleted, rejected)",
        rows,
    );
    registry.register(
        "last_finished_timestamp_seconds",
        "When the last run into each target ended (any way it ended), Unix seconds",
        last_end,
    );
    registry.register("run_rows_per_second", "A running run's rate so far", rate);
    registry.register(
        "run_seconds_left",
        "A running run's time left at its rate (when its input said how many rows to expect)",
        left,
    );
    registry.register(
        "run_last_progress_age_seconds",
        "Seconds since a running run last recorded progress: a large value is a stall",
        idle,
    );
    let mut text = String::new();
    encode(&mut text, &registry).expect("writing to a String does not fail");
    text
}

/// Write the metrics of the runs in `state` to `path`, whole: a temporary file beside it, then
/// renamed over it, so a collector never reads half of one.
pub(crate) fn write_file(state: &std::path::Path, path: &std::path::Path) -> crate::error::Result<()> {
    use crate::error::Context as _;
    let text = render(&super::status::runs_now(state)?);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .ctx(crate::error::ErrorKind::Io, || {
            format!("writing the metrics file {}", path.display())
        })
}
