//! Metrics: every name this server exports, the process-wide Prometheus recorder, and the
//! figures read from the database when `/metrics` is scraped.
//!
//! Counters and histograms go through the `metrics` facade. Its recorder is global to the
//! process, so it is installed once, however many servers a process builds (the tests build
//! many). Figures that describe one server's own database (its pools and how many steps wait)
//! are not recorded at all: each scrape reads them from that server's store and appends them
//! to the text, so servers sharing a process never overwrite each other's gauges.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use metrics::{counter, histogram};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::engine::model::ExecutionStatus;
use crate::store::{Change, PoolStats, Store};

// Metric names; the README's Metrics section lists their types and labels.
pub const HTTP_REQUESTS: &str = "spektr_http_requests_total";
pub const HTTP_DURATION: &str = "spektr_http_request_duration_seconds";
pub const EXECUTIONS_STARTED: &str = "spektr_executions_started_total";
pub const EXECUTIONS_COMPLETED: &str = "spektr_executions_completed_total";
pub const TIMEOUTS: &str = "spektr_timeouts_total";
pub const SWEEPER_LATENESS: &str = "spektr_sweeper_lateness_seconds";
pub const WEBHOOK_ATTEMPTS: &str = "spektr_webhook_attempts_total";
pub const STEPS_WAITING: &str = "spektr_steps_waiting";
pub const DB_POOL_SIZE: &str = "spektr_db_pool_size";
pub const DB_POOL_IDLE: &str = "spektr_db_pool_idle";
pub const DB_POOL_MAX: &str = "spektr_db_pool_max";

/// The route label of requests that matched no route, so that unknown paths (and the tokens
/// in them) never become label values.
pub const UNMATCHED_ROUTE: &str = "unmatched";

const HTTP_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const LATENESS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// How long a count of waiting steps is served before it is read again. The count reads an
/// index of every waiting step (about 50 ms per million on Postgres), so scrapes from
/// several Prometheus servers or a short scrape interval do not repeat it.
const WAITING_MAX_AGE: Duration = Duration::from_secs(10);

/// How often histogram samples are folded into their buckets between scrapes, which bounds
/// the memory they hold when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's Prometheus recorder, installed on the first call; `None` when something
/// else installed a recorder first (then nothing is exported).
pub fn recorder() -> Option<&'static PrometheusHandle> {
    RECORDER
        .get_or_init(|| match install() {
            Ok(handle) => Some(handle),
            Err(error) => {
                tracing::warn!(error = %error, "metrics recorder not installed");
                None
            }
        })
        .as_ref()
}

fn install() -> Result<PrometheusHandle, String> {
    let builder = || -> Result<PrometheusBuilder, BuildError> {
        PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.to_owned()), HTTP_BUCKETS)?
            .set_buckets_for_metric(Matcher::Full(SWEEPER_LATENESS.to_owned()), LATENESS_BUCKETS)
    };
    let recorder = builder()
        .map_err(|error| error.to_string())?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|error| error.to_string())?;
    describe();
    register_at_zero();
    Ok(handle)
}

/// Creates every series whose labels are known in advance, so that a fresh server already
/// exports them (at zero) and alerts and rates work before the first event. Completions are
/// labelled by the outcomes that definitions name, so they appear with their first one.
fn register_at_zero() {
    counter!(EXECUTIONS_STARTED).increment(0);
    for trigger in ["sweeper", "submit"] {
        counter!(TIMEOUTS, "trigger" => trigger).increment(0);
    }
    for outcome in WEBHOOK_OUTCOMES {
        counter!(WEBHOOK_ATTEMPTS, "outcome" => *outcome).increment(0);
    }
    let _registered = histogram!(SWEEPER_LATENESS);
}

fn describe() {
    use metrics::{describe_counter, describe_histogram};
    describe_counter!(HTTP_REQUESTS, "HTTP requests answered");
    describe_histogram!(
        HTTP_DURATION,
        metrics::Unit::Seconds,
        "Time from request to response head"
    );
    describe_counter!(EXECUTIONS_STARTED, "Executions started");
    describe_counter!(EXECUTIONS_COMPLETED, "Executions completed, by outcome");
    describe_counter!(
        TIMEOUTS,
        "External Steps timed out, by what noticed the deadline"
    );
    describe_histogram!(
        SWEEPER_LATENESS,
        metrics::Unit::Seconds,
        "How long after its deadline the sweeper timed a step out, by the database clock"
    );
    describe_counter!(WEBHOOK_ATTEMPTS, "Webhook delivery attempts, by outcome");
}

/// Folds histogram samples into buckets every few seconds until `shutdown`.
pub async fn run_upkeep(handle: &'static PrometheusHandle, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(UPKEEP_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => handle.run_upkeep(),
        }
    }
}

/// Records one answered HTTP request; `route` is the matched route template.
pub fn http_request(route: &str, method: &str, status: u16, elapsed: Duration) {
    let labels = [
        ("route", route.to_owned()),
        ("method", method.to_owned()),
        ("status", status.to_string()),
    ];
    counter!(HTTP_REQUESTS, &labels).increment(1);
    histogram!(HTTP_DURATION, &labels).record(elapsed.as_secs_f64());
}

/// Records a committed start.
pub fn execution_started() {
    counter!(EXECUTIONS_STARTED).increment(1);
}

/// The outcome label of an execution that `change` completes, if it does: the end step's
/// outcome, or `none` when it ran past the last step.
pub fn completion(change: &Change) -> Option<String> {
    (change.status == ExecutionStatus::Completed)
        .then(|| change.outcome.clone().unwrap_or_else(|| "none".to_owned()))
}

/// Records a committed completion (see `completion`).
pub fn execution_completed(outcome: String) {
    counter!(EXECUTIONS_COMPLETED, "outcome" => outcome).increment(1);
}

/// What noticed that a step's deadline had passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutTrigger {
    /// The sweeper, this long after the deadline by the database clock.
    Sweeper { lateness_ms: i64 },
    /// A submit that arrived after the deadline, before the sweeper.
    Submit,
}

/// Records a committed timeout.
pub fn step_timed_out(trigger: TimeoutTrigger) {
    match trigger {
        TimeoutTrigger::Sweeper { lateness_ms } => {
            counter!(TIMEOUTS, "trigger" => "sweeper").increment(1);
            histogram!(SWEEPER_LATENESS).record(lateness_ms.max(0) as f64 / 1000.0);
        }
        TimeoutTrigger::Submit => counter!(TIMEOUTS, "trigger" => "submit").increment(1),
    }
}

/// The outcomes of a webhook attempt: it succeeded; it failed and is tried again later; it
/// failed and the retry schedule is used up.
pub const WEBHOOK_OUTCOMES: &[&str] = &["success", "retry", "failed"];

/// Records one webhook attempt, with one of `WEBHOOK_OUTCOMES`.
pub fn webhook_attempt(outcome: &'static str) {
    counter!(WEBHOOK_ATTEMPTS, "outcome" => outcome).increment(1);
}

/// What one server's `/metrics` answers.
pub struct Scrape {
    handle: &'static PrometheusHandle,
    store: Arc<dyn Store>,
    /// The last count of waiting steps and when it was read.
    waiting: Mutex<Option<(Instant, i64)>>,
}

impl Scrape {
    pub fn new(handle: &'static PrometheusHandle, store: Arc<dyn Store>) -> Self {
        Scrape {
            handle,
            store,
            waiting: Mutex::new(None),
        }
    }

    /// The metrics in the Prometheus text format.
    pub async fn render(&self) -> String {
        let mut text = self.handle.render();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        let pools = self.store.pool_stats();
        let figures: [(&str, &str, PoolFigure); 3] = [
            (DB_POOL_SIZE, "Open connections", |pool| pool.size),
            (DB_POOL_IDLE, "Idle connections", |pool| pool.idle),
            (DB_POOL_MAX, "Most connections", |pool| pool.max),
        ];
        for (name, help, figure) in figures {
            gauge_head(&mut text, name, help);
            for pool in &pools {
                let _ = writeln!(text, "{name}{{pool=\"{}\"}} {}", pool.pool, figure(pool));
            }
        }
        if let Some(waiting) = self.waiting().await {
            gauge_head(
                &mut text,
                STEPS_WAITING,
                "Executions waiting on an External Step, in the whole database",
            );
            let _ = writeln!(text, "{STEPS_WAITING} {waiting}");
        }
        text
    }

    /// The number of waiting steps, read at most once per `WAITING_MAX_AGE`; `None` when the
    /// database cannot say (the gauge is then left out rather than reported wrong).
    async fn waiting(&self) -> Option<i64> {
        // Held across the count, so concurrent scrapes wait for one count instead of each
        // starting their own.
        let mut cached = self.waiting.lock().await;
        if let Some((read_at, count)) = *cached
            && read_at.elapsed() < WAITING_MAX_AGE
        {
            return Some(count);
        }
        match self.store.count_waiting().await {
            Ok(count) => {
                *cached = Some((Instant::now(), count));
                Some(count)
            }
            Err(error) => {
                tracing::warn!(error = %error, "cannot count waiting steps for metrics");
                None
            }
        }
    }
}

fn gauge_head(text: &mut String, name: &str, help: &str) {
    let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} gauge");
}

type PoolFigure = fn(&PoolStats) -> u32;

#[cfg(test)]
mod tests {
    use super::*;

    fn change(status: ExecutionStatus, outcome: Option<&str>) -> Change {
        Change {
            status,
            step_index: 1,
            deadline_ms: None,
            outcome: outcome.map(str::to_owned),
            customer_fields: None,
            events: Vec::new(),
            idempotent_response: None,
        }
    }

    #[test]
    fn only_completing_changes_have_an_outcome_label() {
        let ended = change(ExecutionStatus::Completed, Some("approved"));
        let ran_past_the_end = change(ExecutionStatus::Completed, None);
        let waiting = change(ExecutionStatus::Pending, None);

        assert_eq!(completion(&ended).as_deref(), Some("approved"));
        assert_eq!(completion(&ran_past_the_end).as_deref(), Some("none"));
        assert_eq!(completion(&waiting), None);
    }
}
