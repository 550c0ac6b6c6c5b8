//! Timeouts: `expiresAt`, the sweeper, submits after the deadline, races and restarts.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    ChildProcess, PROCESS, TestApp, error_body, guide_process, kinds, on_postgres, spawn_app_with,
    start_server,
};

/// Polls the execution behind `token` until it is no longer pending (bounded).
pub(crate) async fn wait_until_settled(app: &TestApp, token: &str) -> Value {
    let started = Instant::now();
    loop {
        let step = app.current_step_json(token).await;
        if step["execution"]["status"] != "pending" {
            return step;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "still pending: {step}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn execution_id(app: &TestApp, token: &str) -> String {
    app.current_step_json(token).await["execution"]["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

#[tokio::test]
async fn expires_at_is_the_wait_start_plus_the_timeout_in_milliseconds() {
    let app = spawn_app_with(|config| config.sweeper_enabled = false).await;
    app.put_process(PROCESS, guide_process(Some(90.5))).await;
    let token = app.start_token(PROCESS, "customer-1").await;

    let step = app.current_step_json(&token).await;
    let activity = app.activity(&execution_id(&app, &token).await).await;

    let waiting = &activity[1];
    assert_eq!(waiting["type"], "external_data_waiting");
    let expires_at = step["node"]["expiresAt"].as_i64().expect("expiresAt in ms");
    assert_eq!(
        expires_at,
        waiting["createdAt"].as_i64().expect("ms") + 90_500
    );
    assert_eq!(waiting["eventData"]["expiresAt"], expires_at);
}

#[tokio::test]
async fn a_timed_out_step_sets_the_failure_flag_and_takes_the_failure_route() {
    let app = spawn_app_with(|config| config.sweeper_interval_ms = 5_000).await;
    app.put_process(PROCESS, guide_process(Some(0.2))).await;
    let started = app.start(PROCESS, "customer-1").await;
    let token = started["token"].as_str().expect("token");

    let settled = wait_until_settled(&app, token).await;

    assert_eq!(settled["execution"]["status"], "completed");
    assert_eq!(settled["execution"]["outcome"], "manual_review");
    assert!(settled["node"].is_null());
    let customer = app
        .customer(started["spektrId"].as_str().expect("id"))
        .await;
    assert_eq!(customer["fields"]["external_data_failure"], true);
    let activity = app.activity(&execution_id(&app, token).await).await;
    assert_eq!(
        kinds(&activity),
        [
            "process_started",
            "external_data_waiting",
            "external_data_timed_out",
            "process_completed"
        ]
    );
    let deadline = activity[1]["eventData"]["expiresAt"]
        .as_i64()
        .expect("deadline");
    assert_eq!(activity[2]["eventData"]["expiresAt"], deadline);
    assert!(activity[2]["createdAt"].as_i64().expect("ms") >= deadline);
}

#[tokio::test]
async fn a_submit_after_the_deadline_is_refused_and_times_the_step_out_at_once() {
    let app = spawn_app_with(|config| config.sweeper_enabled = false).await;
    app.put_process(PROCESS, guide_process(Some(0.2))).await;
    let started = app.start(PROCESS, "customer-1").await;
    let token = started["token"].as_str().expect("token");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.current_step_json(token).await["execution"]["status"],
        "pending"
    );

    let response = app
        .submit(
            token,
            json!({"company_name": "Late Ltd", "country_of_incorporation": "DK"}),
        )
        .await;

    let body = error_body(response, StatusCode::BAD_REQUEST).await;
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("timeout has already elapsed")
    );
    let step = app.current_step_json(token).await;
    assert_eq!(step["execution"]["status"], "completed");
    assert_eq!(step["execution"]["outcome"], "manual_review");
    let customer = app
        .customer(started["spektrId"].as_str().expect("id"))
        .await;
    assert_eq!(customer["fields"], json!({"external_data_failure": true}));
    let activity = kinds(&app.activity(&execution_id(&app, token).await).await);
    assert!(
        activity.contains(&"external_data_timed_out".to_owned()),
        "{activity:?}"
    );
    assert!(
        !activity.contains(&"external_data_received".to_owned()),
        "{activity:?}"
    );
}

#[tokio::test]
async fn a_submit_racing_the_timeout_has_exactly_one_outcome() {
    let app = spawn_app_with(|config| config.sweeper_interval_ms = 1_000).await;
    let timeout_ms = 300;
    app.put_process(PROCESS, guide_process(Some(timeout_ms as f64 / 1000.0)))
        .await;
    let mut tokens = Vec::new();
    for index in 0..24 {
        let token = app.start_token(PROCESS, &format!("racer-{index}")).await;
        tokens.push((token, Instant::now()));
    }

    // Each submit is aimed at a moment around its own deadline, some before and some after.
    let submits = tokens.iter().enumerate().map(|(index, (token, started))| {
        let app = &app;
        async move {
            let aim = Duration::from_millis(timeout_ms - 30 + (index as u64 % 8) * 10);
            tokio::time::sleep(aim.saturating_sub(started.elapsed())).await;
            let payload = json!({"company_name": "Racer", "country_of_incorporation": "DK"});
            app.submit(token, payload).await.status()
        }
    });
    let statuses = futures::future::join_all(submits).await;

    for ((token, _), status) in tokens.iter().zip(statuses) {
        let step = wait_until_settled(&app, token).await;
        let activity = kinds(&app.activity(&execution_id(&app, token).await).await);
        let received = activity
            .iter()
            .filter(|kind| *kind == "external_data_received")
            .count();
        let timed_out = activity
            .iter()
            .filter(|kind| *kind == "external_data_timed_out")
            .count();
        assert_eq!(received + timed_out, 1, "{status} {activity:?}");
        if status == StatusCode::OK {
            assert_eq!(received, 1, "{activity:?}");
            assert_eq!(step["execution"]["outcome"], "approved");
        } else {
            assert_eq!(status, StatusCode::BAD_REQUEST);
            assert_eq!(timed_out, 1, "{activity:?}");
            assert_eq!(step["execution"]["outcome"], "manual_review");
        }
    }
}

#[tokio::test]
async fn deadlines_that_passed_while_no_server_ran_time_out_at_the_next_start() {
    let app = spawn_app_with(|config| config.sweeper_enabled = false).await;
    app.put_process(PROCESS, guide_process(Some(0.2))).await;
    let mut tokens = Vec::new();
    for index in 0..5 {
        tokens.push(app.start_token(PROCESS, &format!("customer-{index}")).await);
    }
    let (database_url, api_key) = (app.database_url.clone(), app.api_key.clone());
    app.stop().await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut restarted = start_server(&database_url, |_| {}).await;
    restarted.api_key = api_key;

    for token in &tokens {
        let step = wait_until_settled(&restarted, token).await;
        assert_eq!(step["execution"]["outcome"], "manual_review");
    }
}

#[tokio::test]
async fn several_server_processes_time_out_each_step_exactly_once() {
    // SQLite is for one process (see the README): there the test server sweeps alone.
    let processes = if on_postgres() { 3 } else { 0 };
    let steps = 1_000;
    // Small batches, several at once: every sweeper runs parallel batches against the others.
    let app = spawn_app_with(|config| {
        config.sweeper_enabled = processes == 0;
        config.sweeper_batch_size = 25;
        config.sweeper_parallelism = 4;
    })
    .await;
    app.put_process(PROCESS, guide_process(Some(3.0))).await;
    let mut sweepers: Vec<_> = (0..processes)
        .map(|_| ChildProcess(spawn_sweeper_process(&app.database_url)))
        .collect();

    let starts = futures::future::join_all((0..16).map(|worker| {
        let app = &app;
        async move {
            let mut tokens = Vec::new();
            for index in (worker..steps).step_by(16) {
                tokens.push(app.start_token(PROCESS, &format!("bulk-{index}")).await);
            }
            tokens
        }
    }))
    .await;
    let tokens: Vec<String> = starts.into_iter().flatten().collect();
    assert_eq!(tokens.len(), steps);
    let counts = wait_for_timed_out_events(&app.database_url, steps).await;

    for sweeper in &mut sweepers {
        let exited = sweeper.0.try_wait().expect("wait");
        assert!(exited.is_none(), "a sweeper process died");
    }
    assert_eq!(
        counts,
        (steps as i64, steps as i64),
        "(events, distinct executions)"
    );
}

/// A real `spektr-server` process on the same database, left to run its sweeper.
fn spawn_sweeper_process(database_url: &str) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_spektr-server"))
        .env("DATABASE_URL", database_url)
        .env("BIND_ADDR", "127.0.0.1:0")
        .env("SPEKTR_SWEEPER_INTERVAL_MS", "200")
        .env("SPEKTR_SWEEPER_BATCH_SIZE", "25")
        .env("SPEKTR_SWEEPER_PARALLELISM", "4")
        .env("SPEKTR_DB_MAX_CONNECTIONS", "5")
        .env("RUST_LOG", "error")
        .env_remove("ADMIN_TOKEN")
        .env_remove("BOOTSTRAP_FILE")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn spektr-server")
}

/// Waits (bounded) until `expected` timeouts are recorded; returns the number of timeout
/// events and of distinct executions they belong to.
async fn wait_for_timed_out_events(database_url: &str, expected: usize) -> (i64, i64) {
    let store = spektr_server::store::connect(
        database_url,
        &spektr_server::store::StoreOptions {
            max_connections: 1,
            acquire_timeout: Duration::from_secs(5),
            announce_deadlines_within_ms: 0,
        },
    )
    .await
    .expect("connect");
    let started = Instant::now();
    loop {
        let counts = store
            .count_events("external_data_timed_out")
            .await
            .expect("count");
        if counts.0 >= expected as i64 || started.elapsed() > Duration::from_secs(60) {
            // Give a double timeout, if there were one, the chance to show itself.
            tokio::time::sleep(Duration::from_millis(500)).await;
            return store
                .count_events("external_data_timed_out")
                .await
                .expect("count");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_new_short_deadline_wakes_a_sleeping_sweeper() {
    // The sweeper's regular pass is a minute away, so only the wake-up can time the step
    // out within the wait below: in-process on SQLite, across processes on Postgres. Every
    // process has the same interval, as the README asks: a writer announces the deadlines
    // due sooner than its own interval.
    let sweeper_interval = |config: &mut spektr_server::config::Config| {
        config.sweeper_interval_ms = 60_000;
    };
    let (app, _sweeping_replica) = if on_postgres() {
        let app = spawn_app_with(|config| {
            sweeper_interval(config);
            config.sweeper_enabled = false;
        })
        .await;
        let replica = start_server(&app.database_url, sweeper_interval).await;
        (app, Some(replica))
    } else {
        (spawn_app_with(sweeper_interval).await, None)
    };
    app.put_process(PROCESS, guide_process(Some(0.3))).await;
    // Let the sweeper settle into its long sleep first.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let token = app.start_token(PROCESS, "customer-1").await;

    let step = wait_until_settled(&app, &token).await;
    assert_eq!(step["execution"]["outcome"], "manual_review");
}
