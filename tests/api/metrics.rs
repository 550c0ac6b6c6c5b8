//! `/metrics`: the Prometheus text, its switch and token, and the counters and histograms
//! moving after starts, submits, timeouts and webhook attempts.
//!
//! The recorder is global to the test process and other tests run at the same time, so
//! counters shared by every test (routes, triggers) are checked for growing by at least this
//! test's count, and exact values only for labels this test alone produces (a unique end-step
//! outcome) or for figures read from this test's own database (pools, waiting steps).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    PROCESS, TestApp, error_body, free_local_address, guide_process, on_postgres, spawn_app,
    spawn_app_with, spawn_server_process, wait_until_serving,
};
use crate::receiver::Receiver;

const START_ROUTE: &str = "/v2/public/actions/processId/{processId}/workspaceId/{workspaceId}";
const STEP_ROUTE: &str = "/v2/public/actions/{token}";
const SUBMIT_ROUTE: &str = "/v3/public/actions/{token}";
const METRICS_TOKEN: &str = "test-metrics-token-0123456789";

/// One scrape: every sample by metric name and label set.
struct Scraped {
    text: String,
    samples: BTreeMap<(String, BTreeMap<String, String>), f64>,
}

impl Scraped {
    fn parse(text: String) -> Scraped {
        let mut samples = BTreeMap::new();
        for line in text.lines() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once("=\"").expect("label pair");
                    (key.to_owned(), value.trim_end_matches('"').to_owned())
                })
                .collect();
            samples.insert((name.to_owned(), labels), value);
        }
        Scraped { text, samples }
    }

    /// The sample with exactly these labels, 0 when absent (a counter not yet touched).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let labels = labels
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        self.samples
            .get(&(name.to_owned(), labels))
            .copied()
            .unwrap_or(0.0)
    }

    fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        let labels = labels
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        self.samples.contains_key(&(name.to_owned(), labels))
    }

    fn requests(&self, route: &str, method: &str, status: &str) -> f64 {
        let labels = [("route", route), ("method", method), ("status", status)];
        self.value("spektr_http_requests_total", &labels)
    }

    fn request_durations(&self, route: &str, method: &str, status: &str) -> f64 {
        let labels = [("route", route), ("method", method), ("status", status)];
        self.value("spektr_http_request_duration_seconds_count", &labels)
    }
}

async fn scrape(app: &TestApp) -> Scraped {
    scrape_url(&app.client, &app.url("/metrics")).await
}

async fn scrape_url(client: &reqwest::Client, url: &str) -> Scraped {
    let response = client.get(url).send().await.expect("metrics");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().expect("text");
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    Scraped::parse(response.text().await.expect("body"))
}

/// Scrapes until `done` holds (bounded): counters of background work (the sweeper, webhook
/// attempts) move just after the change they count is visible through the API.
async fn scrape_until(app: &TestApp, what: &str, done: impl Fn(&Scraped) -> bool) -> Scraped {
    scrape_url_until(&app.client, &app.url("/metrics"), what, done).await
}

async fn scrape_url_until(
    client: &reqwest::Client,
    url: &str,
    what: &str,
    done: impl Fn(&Scraped) -> bool,
) -> Scraped {
    let started = Instant::now();
    loop {
        let scraped = scrape_url(client, url).await;
        if done(&scraped) {
            return scraped;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "waited in vain for {what}:\n{}",
            scraped.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The guide's process with end-step outcomes no other test uses; returns the outcomes
/// (approved, manual review).
async fn put_process_with_unique_outcomes(
    app: &TestApp,
    timeout_seconds: Option<f64>,
) -> (String, String) {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let outcomes = (format!("approved-{unique}"), format!("review-{unique}"));
    let mut definition = guide_process(timeout_seconds);
    definition["steps"][1]["outcome"] = json!(outcomes.0);
    definition["steps"][2]["outcome"] = json!(outcomes.1);
    app.put_process(PROCESS, definition).await;
    outcomes
}

fn valid_payload() -> Value {
    json!({"company_name": "Metrics Ltd", "country_of_incorporation": "DK"})
}

#[tokio::test]
async fn metrics_are_prometheus_text_served_without_an_api_key() {
    let app = spawn_app().await;
    app.put_process(PROCESS, guide_process(None)).await;
    app.start(PROCESS, "customer-1").await;
    app.start(PROCESS, "customer-2").await;

    let scraped = scrape(&app).await;

    assert!(
        scraped
            .text
            .contains("# TYPE spektr_http_requests_total counter")
    );
    assert!(
        scraped
            .text
            .contains("# TYPE spektr_http_request_duration_seconds histogram")
    );
    assert!(scraped.text.contains("# TYPE spektr_steps_waiting gauge"));
    assert_eq!(scraped.value("spektr_steps_waiting", &[]), 2.0);
    let pool = if on_postgres() { "main" } else { "reader" };
    assert_eq!(scraped.value("spektr_db_pool_max", &[("pool", pool)]), 5.0);
    let size = scraped.value("spektr_db_pool_size", &[("pool", pool)]);
    let idle = scraped.value("spektr_db_pool_idle", &[("pool", pool)]);
    assert!(
        (1.0..=5.0).contains(&size) && idle <= size,
        "{}",
        scraped.text
    );
}

#[tokio::test]
async fn a_start_and_a_submit_are_counted_under_their_route_templates() {
    let app = spawn_app().await;
    let (approved, review) = put_process_with_unique_outcomes(&app, None).await;
    let before = scrape(&app).await;

    let token = app.start_token(PROCESS, "customer-1").await;
    app.current_step_json(&token).await;
    let response = app.submit(&token, valid_payload()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let refused = app.submit(&token, valid_payload()).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let after = scrape(&app).await;

    let grew = |figure: fn(&Scraped) -> f64| figure(&after) - figure(&before);
    assert!(grew(|s| s.requests(START_ROUTE, "POST", "201")) >= 1.0);
    assert!(grew(|s| s.request_durations(START_ROUTE, "POST", "201")) >= 1.0);
    assert!(grew(|s| s.requests(STEP_ROUTE, "GET", "200")) >= 1.0);
    assert!(grew(|s| s.requests(SUBMIT_ROUTE, "POST", "200")) >= 1.0);
    assert!(grew(|s| s.request_durations(SUBMIT_ROUTE, "POST", "200")) >= 1.0);
    assert!(grew(|s| s.requests(SUBMIT_ROUTE, "POST", "400")) >= 1.0);
    assert!(grew(|s| s.value("spektr_executions_started_total", &[])) >= 1.0);
    let completed =
        |outcome: &str| after.value("spektr_executions_completed_total", &[("outcome", outcome)]);
    assert_eq!(completed(&approved), 1.0);
    assert_eq!(completed(&review), 0.0);
    assert!(
        !after.text.contains(&token),
        "a token leaked into the labels"
    );
}

#[tokio::test]
async fn paths_that_match_no_route_share_one_label_and_never_appear() {
    let app = spawn_app().await;
    let before = scrape(&app).await;

    for path in ["/v9/secret-path-a1b2c3", "/v9/secret-path-d4e5f6"] {
        let response = app.client.get(app.url(path)).send().await.expect("get");
        error_body(response, StatusCode::NOT_FOUND).await;
    }
    let after = scrape(&app).await;

    let unmatched = |s: &Scraped| s.requests("unmatched", "GET", "404");
    assert!(unmatched(&after) - unmatched(&before) >= 2.0);
    assert!(!after.text.contains("secret-path"), "{}", after.text);
}

#[tokio::test]
async fn a_fresh_server_process_exports_its_series_at_zero_then_counts_exactly() {
    // A server process of its own: no other test's traffic reaches its counters, so they
    // must start at zero and end at exactly what this test did.
    let app = spawn_app_with(|config| config.sweeper_enabled = false).await;
    let (_, review) = put_process_with_unique_outcomes(&app, Some(0.2)).await;
    let address = free_local_address();
    let _server = spawn_server_process(&app.database_url, &address, &[]);
    let base = format!("http://{address}");
    wait_until_serving(&app.client, &base).await;
    let metrics = format!("{base}/metrics");

    let fresh = scrape_url(&app.client, &metrics).await;
    let zero_series: [(&str, &[(&str, &str)]); 8] = [
        ("spektr_executions_started_total", &[]),
        ("spektr_timeouts_total", &[("trigger", "sweeper")]),
        ("spektr_timeouts_total", &[("trigger", "submit")]),
        ("spektr_webhook_attempts_total", &[("outcome", "success")]),
        ("spektr_webhook_attempts_total", &[("outcome", "retry")]),
        ("spektr_webhook_attempts_total", &[("outcome", "failed")]),
        ("spektr_sweeper_lateness_seconds_count", &[]),
        ("spektr_steps_waiting", &[]),
    ];
    for (name, labels) in zero_series {
        assert!(
            fresh.has(name, labels),
            "{name} {labels:?} missing:\n{}",
            fresh.text
        );
        assert_eq!(fresh.value(name, labels), 0.0, "{name} {labels:?}");
    }

    for reference in ["customer-1", "customer-2"] {
        let response = app
            .client
            .post(format!("{base}{}", TestApp::start_path(PROCESS)))
            .header("x-api-key", &app.api_key)
            .json(&json!({"data": {"reference": reference}}))
            .send()
            .await
            .expect("start");
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let done = |s: &Scraped| s.value("spektr_executions_completed_total", &[("outcome", &review)]);
    let after = scrape_url_until(&app.client, &metrics, "both timeouts", |s| done(s) >= 2.0).await;

    assert_eq!(done(&after), 2.0);
    assert_eq!(after.value("spektr_executions_started_total", &[]), 2.0);
    assert_eq!(
        after.value("spektr_timeouts_total", &[("trigger", "sweeper")]),
        2.0
    );
    assert_eq!(
        after.value("spektr_timeouts_total", &[("trigger", "submit")]),
        0.0
    );
    assert_eq!(
        after.value("spektr_sweeper_lateness_seconds_count", &[]),
        2.0
    );
    assert_eq!(after.requests(START_ROUTE, "POST", "201"), 2.0);
    assert_eq!(after.value("spektr_steps_waiting", &[]), 0.0);
}

#[tokio::test]
async fn a_sweeper_timeout_is_counted_with_its_lateness_and_outcome() {
    let app = spawn_app().await;
    let (_, review) = put_process_with_unique_outcomes(&app, Some(0.2)).await;
    let before = scrape(&app).await;

    app.start(PROCESS, "customer-1").await;
    let after = scrape_until(&app, "the timeout's completion", |s| {
        s.value("spektr_executions_completed_total", &[("outcome", &review)]) == 1.0
    })
    .await;

    let timeouts = |s: &Scraped| s.value("spektr_timeouts_total", &[("trigger", "sweeper")]);
    assert!(timeouts(&after) - timeouts(&before) >= 1.0);
    let lateness = |s: &Scraped| s.value("spektr_sweeper_lateness_seconds_count", &[]);
    assert!(lateness(&after) - lateness(&before) >= 1.0);
    assert!(
        after.value("spektr_sweeper_lateness_seconds_bucket", &[("le", "+Inf")])
            >= lateness(&after)
    );
}

#[tokio::test]
async fn a_submit_after_the_deadline_counts_a_timeout_noticed_by_the_submit() {
    let app = spawn_app_with(|config| config.sweeper_enabled = false).await;
    let (_, review) = put_process_with_unique_outcomes(&app, Some(0.1)).await;
    let token = app.start_token(PROCESS, "customer-1").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = scrape(&app).await;

    let response = app.submit(&token, valid_payload()).await;

    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let after = scrape(&app).await;
    let timeouts = |s: &Scraped| s.value("spektr_timeouts_total", &[("trigger", "submit")]);
    assert!(timeouts(&after) - timeouts(&before) >= 1.0);
    let completed = after.value("spektr_executions_completed_total", &[("outcome", &review)]);
    assert_eq!(completed, 1.0);
}

#[tokio::test]
async fn webhook_attempts_are_counted_by_outcome() {
    let app = spawn_app_with(|config| config.webhook_retry_schedule = "0.2".into()).await;
    app.put_process(PROCESS, guide_process(None)).await;
    let recovering = Receiver::failing_first(1).await;
    let only_waiting = json!(["external_data_waiting"]);
    app.create_webhook(json!({"url": recovering.url, "eventTypes": only_waiting}))
        .await;
    app.create_webhook(json!({"url": "http://127.0.0.1:9/hook", "eventTypes": only_waiting}))
        .await;
    let before = scrape(&app).await;
    let attempts = |s: &Scraped, outcome: &str| {
        s.value("spektr_webhook_attempts_total", &[("outcome", outcome)])
    };

    app.start(PROCESS, "customer-1").await;

    // The recovering receiver: a retry, then a success. The refused address: a retry, then
    // the schedule is used up.
    scrape_until(&app, "two retries, a success and a failure", |after| {
        let grew = |outcome, by| attempts(after, outcome) - attempts(&before, outcome) >= by;
        grew("retry", 2.0) && grew("success", 1.0) && grew("failed", 1.0)
    })
    .await;
    assert_eq!(recovering.wait_for(2).await.len(), 2);
}

#[tokio::test]
async fn metrics_can_be_switched_off() {
    let app = spawn_app_with(|config| config.metrics_enabled = false).await;

    let response = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("get");

    error_body(response, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn a_metrics_token_when_set_is_required_as_a_bearer_token() {
    let app = spawn_app_with(|config| config.metrics_token = Some(METRICS_TOKEN.into())).await;
    let get = || app.client.get(app.url("/metrics"));

    let missing = get().send().await.expect("get");
    let wrong = get()
        .bearer_auth("not-the-metrics-token")
        .send()
        .await
        .expect("get");
    let api_key = get()
        .header("x-api-key", &app.api_key)
        .send()
        .await
        .expect("get");
    let right = get().bearer_auth(METRICS_TOKEN).send().await.expect("get");

    error_body(missing, StatusCode::UNAUTHORIZED).await;
    error_body(wrong, StatusCode::UNAUTHORIZED).await;
    error_body(api_key, StatusCode::UNAUTHORIZED).await;
    assert_eq!(right.status(), StatusCode::OK);
    let text = right.text().await.expect("body");
    assert!(text.contains("spektr_db_pool_max"), "{text}");
}
