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

/// A process of two External Steps and an end: the first times out after `timeout_seconds`
/// and has no routes, the second has no timeout.
fn two_external_steps(timeout_seconds: f64) -> Value {
    json!({
        "name": "Two payloads",
        "type": "onboarding",
        "steps": [
            {"id": "company-payload", "type": "externalData", "title": "Company payload",
             "expectedFields": [
                 {"spektrDataField": "company_name", "type": "string", "required": true}
             ],
             "timeoutSeconds": timeout_seconds},
            {"id": "director-payload", "type": "externalData", "title": "Director payload",
             "expectedFields": [
                 {"spektrDataField": "director_name", "type": "string", "required": true}
             ]},
            {"id": "approved", "type": "end", "outcome": "approved"}
        ]
    })
}

/// Polls the execution behind `token` until it no longer waits on step `node_id` (bounded).
async fn wait_until_past_step(app: &TestApp, token: &str, node_id: &str) -> Value {
    let started = Instant::now();
    loop {
        let step = app.current_step_json(token).await;
        if step["node"]["nodeId"] != node_id {
            return step;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "still at {node_id}: {step}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn a_timeout_without_a_failure_route_continues_at_the_next_external_step() {
    let app = spawn_app_with(|_| {}).await;
    app.put_process("two-payloads", two_external_steps(0.2))
        .await;
    let started = app.start("two-payloads", "customer-1").await;
    let token = started["token"].as_str().expect("token");
    let spektr_id = started["spektrId"].as_str().expect("spektrId");
    let first = app.current_step_json(token).await;
    assert_eq!(first["node"]["nodeId"], "company-payload", "{first}");
    assert_eq!(first["execution"]["currentStep"], 1, "{first}");

    let step = wait_until_past_step(&app, token, "company-payload").await;

    assert_eq!(step["execution"]["status"], "pending", "{step}");
    assert_eq!(step["execution"]["currentStep"], 2, "{step}");
    assert_eq!(step["node"]["type"], "externalData", "{step}");
    assert_eq!(step["node"]["nodeId"], "director-payload", "{step}");
    assert_eq!(
        step["node"]["expectedFields"][0]["spektrDataField"], "director_name",
        "{step}"
    );
    // The first step's deadline does not carry over to a step without a timeout.
    assert!(step["node"].get("expiresAt").is_none(), "{step}");
    assert_eq!(
        app.customer(spektr_id).await["fields"],
        json!({"external_data_failure": true})
    );
    let activity = app.activity(&execution_id(&app, token).await).await;
    assert_eq!(
        kinds(&activity),
        [
            "process_started",
            "external_data_waiting",
            "external_data_timed_out",
            "external_data_waiting"
        ]
    );
    let step_ids: Vec<&Value> = activity
        .iter()
        .map(|entry| &entry["eventData"]["stepId"])
        .collect();
    assert_eq!(
        step_ids,
        [
            &Value::Null,
            &json!("company-payload"),
            &json!("company-payload"),
            &json!("director-payload")
        ]
    );
    assert!(activity[3]["eventData"].get("expiresAt").is_none());

    // The second step still takes its payload, and a received payload clears the flag.
    let submitted = app
        .submit(token, json!({"director_name": "Ada Director"}))
        .await;
    assert_eq!(submitted.status(), StatusCode::OK);
    let done = app.current_step_json(token).await;
    assert_eq!(done["execution"]["status"], "completed", "{done}");
    assert_eq!(done["execution"]["outcome"], "approved", "{done}");
    assert_eq!(
        app.customer(spektr_id).await["fields"],
        json!({"director_name": "Ada Director", "external_data_failure": false})
    );
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

/// How a submit racing its step's timeout was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RaceAnswer {
    /// 200 `{"status":"completed"}`: the submit won.
    Accepted,
    /// 400 "timeout has already elapsed": the submit came after the deadline and timed out
    /// the step itself.
    TimedOutBySubmit,
    /// 400 "not currently waiting": the sweeper timed the step out first.
    NotWaiting,
}

/// One race: starts an execution of the guide's process, submits a valid payload
/// `offset_ms` from its deadline (negative: before it) and classifies the answer. Returns the
/// token, the spektrId and the answer.
async fn race_the_timeout(
    app: &TestApp,
    reference: String,
    timeout_ms: u64,
    offset_ms: i64,
) -> (String, String, RaceAnswer) {
    let started = app.start(PROCESS, &reference).await;
    let at = Instant::now();
    let token = started["token"].as_str().expect("token").to_owned();
    let spektr_id = started["spektrId"].as_str().expect("spektrId").to_owned();
    let aim = Duration::from_millis(timeout_ms.saturating_add_signed(offset_ms));
    tokio::time::sleep(aim.saturating_sub(at.elapsed())).await;
    let response = app
        .submit(
            &token,
            json!({"company_name": "Racer", "country_of_incorporation": "DK"}),
        )
        .await;
    let status = response.status();
    let body = response.text().await.expect("submit body");
    let answer = if status == StatusCode::OK {
        assert_eq!(body, r#"{"status":"completed"}"#, "{reference}");
        RaceAnswer::Accepted
    } else {
        assert_eq!(status, StatusCode::BAD_REQUEST, "{reference}: {body}");
        let error: Value = serde_json::from_str(&body).expect("json error");
        assert_eq!(
            error["errorCode"], "BAD_REQUEST_ERROR",
            "{reference}: {error}"
        );
        let message = error["message"].as_str().expect("message");
        if message.contains("timeout has already elapsed") {
            RaceAnswer::TimedOutBySubmit
        } else if message.contains("not currently waiting") {
            RaceAnswer::NotWaiting
        } else {
            panic!("{reference}: unexpected refusal {error}");
        }
    };
    (token, spektr_id, answer)
}

/// Checks that what is stored for one raced execution agrees with the submit's answer:
/// its status and outcome, the customer's fields and failure flag, and each event exactly
/// once.
async fn assert_stored_state_agrees(
    app: &TestApp,
    token: &str,
    spektr_id: &str,
    answer: RaceAnswer,
) {
    let step = wait_until_settled(app, token).await;
    let activity = kinds(&app.activity(&execution_id(app, token).await).await);
    let fields = app.customer(spektr_id).await["fields"].clone();
    let (outcome, middle_event, expected_fields) = match answer {
        RaceAnswer::Accepted => (
            "approved",
            "external_data_received",
            json!({"company_name": "Racer", "country_of_incorporation": "DK",
                   "external_data_failure": false}),
        ),
        RaceAnswer::TimedOutBySubmit | RaceAnswer::NotWaiting => (
            "manual_review",
            "external_data_timed_out",
            json!({"external_data_failure": true}),
        ),
    };
    let context = format!("{answer:?}: {step} {activity:?} {fields}");
    assert_eq!(step["execution"]["status"], "completed", "{context}");
    assert_eq!(step["execution"]["outcome"], outcome, "{context}");
    assert_eq!(fields, expected_fields, "{context}");
    // The whole history, so each event type is counted exactly: one start, one wait, exactly
    // one of received / timed out (never both, never twice) and one completion.
    assert_eq!(
        activity,
        [
            "process_started",
            "external_data_waiting",
            middle_event,
            "process_completed"
        ],
        "{context}"
    );
}

#[tokio::test]
async fn hundreds_of_submits_racing_the_timeout_each_have_one_outcome_the_state_agrees_with() {
    let app = spawn_app_with(|config| config.sweeper_interval_ms = 1_000).await;
    let timeout_ms = 300;
    app.put_process(PROCESS, guide_process(Some(timeout_ms as f64 / 1000.0)))
        .await;
    let (waves, per_wave) = (5, 50);
    let mut answers = Vec::new();

    for wave in 0..waves {
        // Each submit is aimed between 60 ms before and 60 ms after its own deadline.
        let races = (0..per_wave).map(|index| {
            let offset_ms = (index as i64 % 25) * 5 - 60;
            race_the_timeout(&app, format!("racer-{wave}-{index}"), timeout_ms, offset_ms)
        });
        let raced = futures::future::join_all(races).await;
        futures::future::join_all(raced.iter().map(|(token, spektr_id, answer)| {
            assert_stored_state_agrees(&app, token, spektr_id, *answer)
        }))
        .await;
        answers.extend(raced.into_iter().map(|(_, _, answer)| answer));
    }

    assert_eq!(answers.len(), waves * per_wave);
    let count = |kind: RaceAnswer| answers.iter().filter(|answer| **answer == kind).count();
    let (accepted, by_submit, not_waiting) = (
        count(RaceAnswer::Accepted),
        count(RaceAnswer::TimedOutBySubmit),
        count(RaceAnswer::NotWaiting),
    );
    // Aimed around the deadline, the races are decided both ways: neither side always wins.
    assert!(
        accepted > 0 && by_submit + not_waiting > 0,
        "accepted {accepted}, timed out by the submit {by_submit}, by the sweeper {not_waiting}"
    );
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

/// Whether the execution of the guide's process behind `token` timed out completely (true)
/// or is untouched (false); fails on anything in between.
async fn timed_out_completely_or_untouched(app: &TestApp, token: &str, spektr_id: &str) -> bool {
    let step = app.current_step_json(token).await;
    let id = step["execution"]["id"].as_str().expect("execution id");
    let activity = kinds(&app.activity(id).await);
    let fields = app.customer(spektr_id).await["fields"].clone();
    let execution = &step["execution"];
    let timed_out = execution["status"] == "completed"
        && execution["outcome"] == "manual_review"
        && step["node"].is_null()
        && fields == json!({"external_data_failure": true})
        && activity
            == [
                "process_started",
                "external_data_waiting",
                "external_data_timed_out",
                "process_completed",
            ];
    let untouched = execution["status"] == "pending"
        && step["node"]["nodeId"] == "company-payload"
        && fields == json!({})
        && activity == ["process_started", "external_data_waiting"];
    assert!(
        timed_out || untouched,
        "half timed out: {step} {activity:?} {fields}"
    );
    timed_out
}

/// Checks every execution with at most 16 of them at a time; returns how many timed out.
async fn count_timed_out_completely(app: &TestApp, executions: &[(String, String)]) -> usize {
    use futures::StreamExt;
    futures::stream::iter(executions)
        .map(|(token, spektr_id)| timed_out_completely_or_untouched(app, token, spektr_id))
        .buffer_unordered(16)
        .filter(|timed_out| std::future::ready(*timed_out))
        .count()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_during_a_large_sweep_leaves_no_step_half_timed_out() {
    let (steps, batch_size) = (600, 200);
    let app = spawn_app_with(|config| config.sweeper_enabled = false).await;
    let timeout = Duration::from_millis(100);
    app.put_process(PROCESS, guide_process(Some(timeout.as_secs_f64())))
        .await;
    let starts = futures::future::join_all((0..8).map(|worker| {
        let app = &app;
        async move {
            let mut executions = Vec::new();
            for index in (worker..steps).step_by(8) {
                let started = app.start(PROCESS, &format!("swept-{index}")).await;
                executions.push((
                    started["token"].as_str().expect("token").to_owned(),
                    started["spektrId"].as_str().expect("spektrId").to_owned(),
                ));
            }
            executions
        }
    }))
    .await;
    let executions: Vec<(String, String)> = starts.into_iter().flatten().collect();
    assert_eq!(executions.len(), steps);
    let (database_url, api_key) = (app.database_url.clone(), app.api_key.clone());
    app.stop().await;
    // Every deadline is at most `timeout` after its start answered: afterwards all are due.
    tokio::time::sleep(timeout + Duration::from_millis(50)).await;
    let counter = event_counter(&database_url).await;
    let timed_out_events = || timed_out_events(counter.as_ref());

    // A sweeper with large batches, stopped as soon as its first batch has committed, while
    // the rest of the sweep is still in hand.
    let sweeping = start_server(&database_url, |config| {
        config.sweeper_batch_size = batch_size;
        config.sweeper_parallelism = 2;
    })
    .await;
    let waited = Instant::now();
    while timed_out_events().await.0 == 0 {
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "the sweeper never swept"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    sweeping.stop().await;

    let (events, distinct) = timed_out_events().await;
    let mut checker = start_server(&database_url, |config| config.sweeper_enabled = false).await;
    checker.api_key = api_key.clone();
    let timed_out = count_timed_out_completely(&checker, &executions).await;
    assert!(timed_out > 0, "nothing timed out before the stop");
    assert_eq!((events, distinct), (timed_out as i64, timed_out as i64));
    // Still the same: the stopped sweeper left nothing running behind it.
    assert_eq!(timed_out_events().await, (events, distinct));
    checker.stop().await;

    // A restarted sweeper finishes the rest, each step exactly once.
    let mut restarted = start_server(&database_url, |config| {
        config.sweeper_batch_size = batch_size;
    })
    .await;
    restarted.api_key = api_key;
    let counts = wait_for_timed_out_events(&database_url, steps).await;
    assert_eq!(counts, (steps as i64, steps as i64), "(events, executions)");
    assert_eq!(
        count_timed_out_completely(&restarted, &executions).await,
        steps
    );
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

/// A store of its own on `database_url`, for counting events beside the servers.
async fn event_counter(database_url: &str) -> std::sync::Arc<dyn spektr_server::store::Store> {
    spektr_server::store::connect(
        database_url,
        &spektr_server::store::StoreOptions {
            max_connections: 1,
            acquire_timeout: Duration::from_secs(5),
            announce_deadlines_within_ms: 0,
        },
    )
    .await
    .expect("connect")
}

/// How many timeout events are recorded, and for how many distinct executions.
async fn timed_out_events(store: &dyn spektr_server::store::Store) -> (i64, i64) {
    store
        .count_events("external_data_timed_out")
        .await
        .expect("count")
}

/// Waits (bounded) until `expected` timeouts are recorded; returns the number of timeout
/// events and of distinct executions they belong to.
async fn wait_for_timed_out_events(database_url: &str, expected: usize) -> (i64, i64) {
    let store = event_counter(database_url).await;
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

/// Makes the stored fields of customer `reference` unreadable, as a row damaged outside the
/// server would be: on Postgres a number beyond a double's range (jsonb takes any numeric),
/// on SQLite text that is not JSON.
async fn damage_customer_fields(database_url: &str, reference: &str) {
    use sqlx::Connection;
    if crate::helpers::on_postgres() {
        let mut connection = sqlx::PgConnection::connect(database_url)
            .await
            .expect("connect");
        sqlx::query(r#"update customers set fields = '{"n": 1e999}'::jsonb where reference = $1"#)
            .bind(reference)
            .execute(&mut connection)
            .await
            .expect("damage");
    } else {
        let mut connection = sqlx::SqliteConnection::connect(database_url)
            .await
            .expect("connect");
        sqlx::query("update customers set fields = '{not json' where reference = ?1")
            .bind(reference)
            .execute(&mut connection)
            .await
            .expect("damage");
        connection.close().await.expect("close");
    }
}

#[tokio::test]
async fn a_due_step_whose_stored_data_cannot_be_read_does_not_hold_back_the_others() {
    let app = spawn_app_with(|config| config.sweeper_enabled = false).await;
    app.put_process(PROCESS, guide_process(Some(0.1))).await;
    let damaged = app.start_token(PROCESS, "damaged").await;
    let mut healthy = Vec::new();
    for index in 0..5 {
        healthy.push(app.start_token(PROCESS, &format!("healthy-{index}")).await);
    }
    let (database_url, api_key) = (app.database_url.clone(), app.api_key.clone());
    app.stop().await;
    damage_customer_fields(&database_url, "damaged").await;
    tokio::time::sleep(Duration::from_millis(150)).await;

    // The damaged step, due first, is in every batch the sweeper reads.
    let mut sweeping = start_server(&database_url, |_| {}).await;
    sweeping.api_key = api_key;

    for token in &healthy {
        let step = wait_until_settled(&sweeping, token).await;
        assert_eq!(step["execution"]["outcome"], "manual_review", "{step}");
    }
    let step = sweeping.current_step_json(&damaged).await;
    assert_eq!(step["execution"]["status"], "pending", "{step}");
}
