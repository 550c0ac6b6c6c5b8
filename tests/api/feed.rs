//! The event feed (`GET /v2/public/events`) and the execution look-up
//! (`GET /v2/public/executions`): pagination, tenancy and validation.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PROCESS, TestApp, error_body, guide_process, spawn_app};

const TIMED_PROCESS: &str = "kyb-timed";

fn text(value: &Value) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"))
        .to_owned()
}

fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

fn valid_payload() -> Value {
    json!({"company_name": "External Company Ltd", "country_of_incorporation": "DK"})
}

/// Starts `count` executions of the guide's process and submits every other one; returns the
/// execution ids.
async fn make_events(app: &TestApp, prefix: &str, count: usize) -> Vec<String> {
    let mut executions = Vec::new();
    for index in 0..count {
        let token = app.start_token(PROCESS, &format!("{prefix}-{index}")).await;
        executions.push(app.execution_id(&token).await);
        if index % 2 == 0 {
            let response = app.submit(&token, valid_payload()).await;
            assert_eq!(response.status(), StatusCode::OK);
        }
    }
    executions
}

/// Every activity entry of `executions`, in `seq` order.
async fn activity_of(app: &TestApp, executions: &[String]) -> Vec<Value> {
    let mut entries = Vec::new();
    for execution in executions {
        entries.extend(app.activity(execution).await);
    }
    entries.sort_by_key(|entry| entry["seq"].as_i64());
    entries
}

/// Reads the whole feed with pages of `limit`, checking each page's cursor and `hasMore`;
/// returns the events in order and the last cursor.
async fn read_feed(app: &TestApp, limit: usize, total: usize) -> (Vec<Value>, String) {
    app.wait_for_feed(&app.api_key, "0", total).await;
    let mut events: Vec<Value> = Vec::new();
    let mut query = format!("limit={limit}");
    loop {
        let page = app.feed(&query).await;
        let data = page["data"].as_array().expect("data").clone();
        assert!(data.len() <= limit, "{page}");
        events.extend(data.iter().cloned());
        let cursor = text(&page["nextCursor"]);
        assert!(!cursor.is_empty(), "{page}");
        let more = events.len() < total;
        assert_eq!(
            page["hasMore"],
            more,
            "page '{query}' of {} events, nextCursor {}: {} of {total} events read",
            data.len(),
            page["nextCursor"],
            events.len()
        );
        if !more {
            return (events, cursor);
        }
        assert!(!data.is_empty(), "an empty page before the end: {page}");
        query = format!("after={}&limit={limit}", encode(&cursor));
    }
}

fn seqs(events: &[Value]) -> Vec<i64> {
    events
        .iter()
        .map(|event| event["seq"].as_i64().expect("seq"))
        .collect()
}

/// Event ids, sorted, to compare sets of events whatever their order.
fn sorted_ids(events: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = events.iter().map(|event| text(&event["id"])).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn the_feed_pages_through_the_workspaces_events_in_order_without_gaps() {
    let app = spawn_app().await;
    let executions = make_events(&app, "customer", 5).await;
    let expected = activity_of(&app, &executions).await;
    assert_eq!(expected.len(), 5 * 2 + 3 * 2);

    let (events, last) = read_feed(&app, 3, expected.len()).await;

    // One writer at a time: the feed's order is the order the events were written.
    assert_eq!(events, expected);
    assert_eq!(seqs(&events), (1..=16).collect::<Vec<i64>>());
    for event in &events {
        assert!(event["id"].is_string(), "{event}");
        assert!(event["type"].is_string(), "{event}");
        assert!(event["eventData"].is_object(), "{event}");
    }
    let end = app.feed(&format!("after={}&limit=3", encode(&last))).await;
    assert_eq!(
        end,
        json!({"data": [], "nextCursor": last, "hasMore": false})
    );
    let everything = app.feed("").await;
    assert_eq!(everything["data"], Value::from(expected));
    assert_eq!(everything["hasMore"], false);
}

#[tokio::test]
async fn has_more_is_false_on_the_page_that_ends_at_the_last_event() {
    let app = spawn_app().await;
    let executions = make_events(&app, "customer", 3).await;
    let total = activity_of(&app, &executions).await.len();
    assert_eq!(total, 10);

    // Pages of 5 end exactly at the last event, as does one page of 10.
    let (by_five, _) = read_feed(&app, 5, total).await;
    let (by_ten, _) = read_feed(&app, 10, total).await;
    assert_eq!(by_five, by_ten);
}

#[tokio::test]
async fn the_feed_resumes_after_a_cursor_with_the_events_written_later() {
    let app = spawn_app().await;
    make_events(&app, "early", 2).await;
    let first = app.wait_for_feed(&app.api_key, "0", 6).await;
    let cursor = text(&first["nextCursor"]);

    let later = make_events(&app, "late", 1).await;
    let page = app.wait_for_feed(&app.api_key, &encode(&cursor), 4).await;

    let expected = activity_of(&app, &later).await;
    assert_eq!(page["data"], Value::from(expected));
    let last = page["data"][3]["seq"].as_i64().expect("seq");
    assert!(seqs(page["data"].as_array().expect("data")).is_sorted());
    assert!(last > first["data"][5]["seq"].as_i64().expect("seq"));
    assert_ne!(page["nextCursor"], cursor);
    assert_eq!(page["hasMore"], false);
    let again = app
        .feed(&format!("after={}", encode(&text(&page["nextCursor"]))))
        .await;
    assert_eq!(again["data"], json!([]));
}

#[tokio::test]
async fn the_feed_shows_only_the_callers_workspace() {
    let app = spawn_app().await;
    let other_key = app.other_workspace("ws-other").await;
    make_events(&app, "ours", 2).await;
    let started = app
        .client
        .post(app.url(&format!(
            "/v2/public/actions/processId/{PROCESS}/workspaceId/ws-other"
        )))
        .header("x-api-key", &other_key)
        .json(&json!({"data": {"reference": "theirs"}}))
        .send()
        .await
        .expect("start");
    assert_eq!(started.status(), StatusCode::CREATED);

    let ours = app.wait_for_feed(&app.api_key, "0", 6).await;
    let theirs_page = app.wait_for_feed(&other_key, "0", 2).await;

    let ours = ours["data"].as_array().expect("data");
    assert_eq!(ours.len(), 6);
    assert!(ours.iter().all(|event| event["workspaceId"] == "ws-test"));
    let theirs = theirs_page["data"].as_array().expect("data");
    assert_eq!(theirs.len(), 2, "{theirs:?}");
    assert!(
        theirs
            .iter()
            .all(|event| event["workspaceId"] == "ws-other")
    );
    assert!(
        theirs
            .iter()
            .all(|event| event["eventData"]["reference"] == "theirs")
    );
    let their_cursor = text(&theirs_page["nextCursor"]);
    let past_theirs = app
        .feed_raw(&other_key, &format!("after={}", encode(&their_cursor)))
        .await;
    let past_theirs: Value = past_theirs.json().await.expect("json");
    assert_eq!(past_theirs["data"], json!([]));
}

#[tokio::test]
async fn the_feed_refuses_bad_cursors_and_limits_and_requests_without_a_key() {
    let app = spawn_app().await;

    for query in [
        "after=-1",
        "after=abc",
        "after=1.5",
        "after=1-",
        "after=-",
        "after=1-2-3",
        "after=+5",
        "after=%205",
        "limit=0",
        "limit=1001",
        "limit=ten",
        "limit=-5",
    ] {
        let response = app.feed_raw(&app.api_key, query).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        error_body(response, StatusCode::BAD_REQUEST).await;
    }
    let without = app
        .client
        .get(app.url("/v2/public/events"))
        .send()
        .await
        .expect("feed");
    error_body(without, StatusCode::UNAUTHORIZED).await;
    let wrong = app.feed_raw("not-a-key", "").await;
    error_body(wrong, StatusCode::UNAUTHORIZED).await;
    assert_eq!(app.feed("limit=1000").await["data"], json!([]));
}

#[tokio::test]
async fn an_execution_is_found_by_context_id_spektr_id_or_reference_and_its_token_submits() {
    let app = spawn_app().await;
    app.put_process(TIMED_PROCESS, guide_process(Some(3600.0)))
        .await;
    let by_context = app.start(PROCESS, "customer-1").await;
    let by_spektr = app.start(TIMED_PROCESS, "customer-2").await;
    let odd_reference = "customer 3&x=ü/?";
    let by_reference = app.start(PROCESS, odd_reference).await;
    let feed = app.wait_for_feed(&app.api_key, "0", 6).await;
    let waiting: Vec<Value> = feed["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter(|event| event["type"] == "external_data_waiting")
        .cloned()
        .collect();
    assert_eq!(waiting.len(), 3);

    // As an integration would: from each waiting event to a token, then a submit.
    let cases = [
        (
            &by_context,
            &waiting[0],
            format!("contextId={}", text(&waiting[0]["eventData"]["contextId"])),
        ),
        (
            &by_spektr,
            &waiting[1],
            format!("spektrId={}", text(&waiting[1]["spektrId"])),
        ),
        (
            &by_reference,
            &waiting[2],
            format!("reference={}", encode(odd_reference)),
        ),
    ];
    for (started, event, query) in cases {
        let found = app.find_executions(&query).await;
        assert_eq!(found.len(), 1, "{query}: {found:?}");
        let execution = &found[0];
        assert_eq!(execution["token"], started["token"], "{query}");
        let token = text(&execution["token"]);
        let step = app.current_step_json(&token).await;
        assert_eq!(execution["id"], event["eventData"]["contextId"]);
        assert_eq!(execution["id"], step["execution"]["id"]);
        assert_eq!(execution["status"], "pending");
        assert_eq!(execution["processId"], event["eventData"]["processId"]);
        assert_eq!(execution["spektrId"], started["spektrId"]);
        assert_eq!(execution["reference"], event["eventData"]["reference"]);
        assert_eq!(execution["currentStep"], step["execution"]["currentStep"]);
        assert_eq!(
            execution["expiresAt"],
            event["eventData"]
                .get("expiresAt")
                .cloned()
                .unwrap_or(Value::Null),
            "{query}"
        );
        assert!(execution["createdAt"].is_i64(), "{execution}");
        assert!(execution["updatedAt"].is_i64(), "{execution}");

        let response = app.submit(&token, valid_payload()).await;
        assert_eq!(response.status(), StatusCode::OK, "{query}");

        let found = app.find_executions(&query).await;
        assert_eq!(found[0]["status"], "completed", "{query}");
        assert!(
            found[0]["updatedAt"].as_i64() >= execution["updatedAt"].as_i64(),
            "{query}"
        );
    }
    assert_eq!(
        app.find_executions(&format!("contextId={}", uuid::Uuid::new_v4()))
            .await,
        Vec::<Value>::new()
    );
    assert_eq!(
        app.find_executions("reference=nobody").await,
        Vec::<Value>::new()
    );
}

#[tokio::test]
async fn executions_of_one_reference_are_listed_newest_first() {
    let app = spawn_app().await;
    let first = app.start(PROCESS, "customer-1").await;
    let second = app.start(PROCESS, "customer-1").await;
    app.start(PROCESS, "customer-2").await;

    let found = app.find_executions("reference=customer-1").await;

    let tokens: Vec<&Value> = found.iter().map(|execution| &execution["token"]).collect();
    assert_eq!(tokens, [&second["token"], &first["token"]]);
    let by_customer = app
        .find_executions(&format!("spektrId={}", text(&first["spektrId"])))
        .await;
    assert_eq!(by_customer, found);
}

#[tokio::test]
async fn looking_up_executions_needs_exactly_one_valid_filter() {
    let app = spawn_app().await;
    let started = app.start(PROCESS, "customer-1").await;
    let spektr_id = text(&started["spektrId"]);
    let context_id = app.execution_id(&text(&started["token"])).await;

    for query in [
        String::new(),
        "limit=5".to_owned(),
        "reference=".to_owned(),
        format!("reference=customer-1&spektrId={spektr_id}"),
        format!("spektrId={spektr_id}&contextId={context_id}"),
        format!("reference=customer-1&contextId={context_id}"),
        format!("reference=customer-1&spektrId={spektr_id}&contextId={context_id}"),
        "spektrId=not-a-uuid".to_owned(),
        "contextId=123".to_owned(),
        "spektrId=".to_owned(),
    ] {
        let response = app.find_executions_raw(&app.api_key, &query).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "'{query}'");
        error_body(response, StatusCode::BAD_REQUEST).await;
    }
    let without = app
        .client
        .get(app.url("/v2/public/executions?reference=customer-1"))
        .send()
        .await
        .expect("look-up");
    error_body(without, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn a_look_up_says_when_more_executions_match_than_its_limit_and_trims_the_reference() {
    let app = spawn_app().await;
    let mut tokens = Vec::new();
    for _ in 0..3 {
        tokens.push(app.start_token(PROCESS, " repeat-customer ").await);
    }

    let page = |query: &'static str| {
        let app = &app;
        async move {
            let response = app.find_executions_raw(&app.api_key, query).await;
            assert_eq!(response.status(), StatusCode::OK, "{query}");
            response.json::<Value>().await.expect("json")
        }
    };
    let two = page("reference=repeat-customer&limit=2").await;
    assert_eq!(two["hasMore"], true);
    let listed: Vec<String> = two["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|found| text(&found["token"]))
        .collect();
    assert_eq!(
        listed,
        vec![tokens[2].clone(), tokens[1].clone()],
        "newest first"
    );

    let all = page("reference=%20repeat-customer%20&limit=3").await;
    assert_eq!(all["hasMore"], false);
    assert_eq!(all["data"].as_array().map(Vec::len), Some(3));
    let whitespace = app
        .find_executions_raw(&app.api_key, "reference=%20%20")
        .await;
    let error = error_body(whitespace, StatusCode::BAD_REQUEST).await;
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .contains("'reference' must not be empty"),
        "{error}"
    );
}

#[tokio::test]
async fn looking_up_executions_shows_only_the_callers_workspace() {
    let app = spawn_app().await;
    let other_key = app.other_workspace("ws-other").await;
    let ours = app.start(PROCESS, "shared-reference").await;
    let theirs = app
        .client
        .post(app.url(&format!(
            "/v2/public/actions/processId/{PROCESS}/workspaceId/ws-other"
        )))
        .header("x-api-key", &other_key)
        .json(&json!({"data": {"reference": "shared-reference"}}))
        .send()
        .await
        .expect("start");
    assert_eq!(theirs.status(), StatusCode::CREATED);
    let theirs: Value = theirs.json().await.expect("json");
    let their_feed = app.wait_for_feed(&other_key, "0", 2).await;
    let their_context = text(&their_feed["data"][0]["eventData"]["contextId"]);

    let found = app.find_executions("reference=shared-reference").await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["token"], ours["token"]);
    for query in [
        format!("spektrId={}", text(&theirs["spektrId"])),
        format!("contextId={their_context}"),
    ] {
        assert_eq!(app.find_executions(&query).await, Vec::<Value>::new());
    }
    let response = app
        .find_executions_raw(&other_key, "reference=shared-reference")
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["data"][0]["token"], theirs["token"]);
}

#[tokio::test]
async fn a_reader_following_the_feed_during_concurrent_writes_misses_nothing() {
    let app = spawn_app().await;
    let writers_done = std::sync::atomic::AtomicBool::new(false);
    let executions = 48;
    let total = executions * 4;

    let writers = async {
        futures::future::join_all((0..8).map(|worker| {
            let app = &app;
            async move {
                for index in (worker..executions).step_by(8) {
                    let token = app.start_token(PROCESS, &format!("busy-{index}")).await;
                    let response = app.submit(&token, valid_payload()).await;
                    assert_eq!(response.status(), StatusCode::OK);
                }
            }
        }))
        .await;
        writers_done.store(true, std::sync::atomic::Ordering::SeqCst);
    };
    let reader = async {
        let mut events: Vec<Value> = Vec::new();
        let mut cursor = "0".to_owned();
        let started = std::time::Instant::now();
        loop {
            let done = writers_done.load(std::sync::atomic::Ordering::SeqCst);
            let page = app
                .feed(&format!("after={}&limit=7", encode(&cursor)))
                .await;
            let data = page["data"].as_array().expect("data");
            events.extend(data.iter().cloned());
            cursor = text(&page["nextCursor"]);
            if done && events.len() >= total {
                return (events, cursor);
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(60),
                "the reader did not catch up: {} of {total} events",
                events.len()
            );
            if data.is_empty() {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    };
    let ((), (events, cursor)) = tokio::join!(writers, reader);

    let listed = sorted_ids(&events);
    let mut unique = listed.clone();
    unique.dedup();
    assert_eq!(unique, listed, "the reader saw an event twice");
    assert_eq!(listed.len(), total, "the reader skipped events");
    let after_all = app.feed(&format!("after={}", encode(&cursor))).await;
    assert_eq!(
        after_all["data"],
        json!([]),
        "events appeared behind the cursor"
    );
    if !crate::helpers::on_postgres() {
        assert_eq!(seqs(&events), (1..=total as i64).collect::<Vec<i64>>());
    }
}

#[tokio::test]
async fn a_cursor_taken_while_an_older_transaction_runs_does_not_pass_its_events() {
    if !crate::helpers::on_postgres() {
        eprintln!("skipped: SQLite writers take turns, so no transaction can commit out of order");
        return;
    }
    use sqlx::Connection;
    let app = spawn_app().await;
    let mut connection = sqlx::PgConnection::connect(&app.database_url)
        .await
        .expect("connect");
    let mut older = connection.begin().await.expect("begin");
    // Takes a transaction id now, older than the start's below.
    sqlx::query("select pg_current_xact_id()")
        .execute(&mut *older)
        .await
        .expect("xid");

    app.start_token(PROCESS, "behind-an-open-transaction").await;
    // The start's events are committed, but the older transaction could still write events
    // that sort before them: the feed holds them back rather than let a cursor pass it.
    let held = app.feed("").await;
    assert_eq!(held["data"], json!([]), "{held}");
    assert_eq!(held["nextCursor"], "0");

    sqlx::query(
        r#"insert into events (id, workspace_id, type, created_at_ms, body)
           values (gen_random_uuid(), 'ws-test', 'late_marker', 0, '{"type":"late_marker"}')"#,
    )
    .execute(&mut *older)
    .await
    .expect("insert");
    older.commit().await.expect("commit");

    let page = app.wait_for_feed(&app.api_key, "0", 3).await;
    let kinds: Vec<&str> = page["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|event| event["type"].as_str().expect("type"))
        .collect();
    assert_eq!(
        kinds,
        ["late_marker", "process_started", "external_data_waiting"]
    );
}
