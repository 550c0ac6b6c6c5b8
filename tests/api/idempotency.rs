//! `idempotency-key`: replays, mismatches, workspace scoping, concurrent requests with one key,
//! retried submits, and keys released by failed requests.

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PROCESS, TestApp, error_body, is_replay, kinds, spawn_app, starts_between};

fn new_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn start_body(reference: &str) -> Value {
    json!({"data": {"reference": reference}})
}

fn valid_payload() -> Value {
    json!({"company_name": "Acme", "country_of_incorporation": "DK"})
}

/// How many payloads the execution behind `token` has accepted.
async fn received_count(app: &TestApp, token: &str) -> usize {
    let activity = app.activity(&app.execution_id(token).await).await;
    kinds(&activity)
        .iter()
        .filter(|kind| *kind == "external_data_received")
        .count()
}

/// A response read whole: its status, whether it was replayed, and its JSON body.
struct Answer {
    status: StatusCode,
    replayed: bool,
    body: Value,
}

async fn read(response: reqwest::Response) -> Answer {
    let status = response.status();
    let replayed = is_replay(&response);
    let body = response.json().await.expect("json body");
    Answer {
        status,
        replayed,
        body,
    }
}

#[tokio::test]
async fn a_repeated_start_with_the_same_key_replays_the_first_answer() {
    let app = spawn_app().await;
    let key = new_key();
    let before = app.event_mark().await;

    let first = read(app.start_with_key(PROCESS, &start_body("c-1"), &key).await).await;
    let second = read(app.start_with_key(PROCESS, &start_body("c-1"), &key).await).await;

    let after = app.event_mark().await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert!(!first.replayed, "the first answer is not a replay");
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.body);
    assert!(
        second.replayed,
        "the second answer must carry idempotent-replayed: true"
    );
    assert_eq!(second.body, first.body);
    assert_eq!(starts_between(&before, &after), 1);
}

#[tokio::test]
async fn a_replayed_start_matches_regardless_of_whitespace_and_key_order() {
    let app = spawn_app().await;
    let key = new_key();
    let first = read(
        app.start_with_key(
            PROCESS,
            &json!({"data": {"reference": "c-1", "segment": "smb"}}),
            &key,
        )
        .await,
    )
    .await;

    let second = app
        .client
        .post(app.url(&TestApp::start_path(PROCESS)))
        .header("x-api-key", &app.api_key)
        .header("idempotency-key", &key)
        .header("content-type", "application/json")
        .body("{ \"data\" : {\n  \"segment\": \"smb\",\n  \"reference\": \"c-1\" } }")
        .send()
        .await
        .expect("start");

    let second = read(second).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.body);
    assert!(second.replayed);
    assert_eq!(second.body, first.body);
}

#[tokio::test]
async fn the_same_key_with_a_different_start_is_refused_with_422() {
    let app = spawn_app().await;
    let key = new_key();
    let before = app.event_mark().await;
    let first = read(app.start_with_key(PROCESS, &start_body("c-1"), &key).await).await;

    let other = app.start_with_key(PROCESS, &start_body("c-2"), &key).await;

    let error = error_body(other, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(error["errorCode"], "UNPROCESSABLE_ENTITY_ERROR");
    let after = app.event_mark().await;
    assert_eq!(starts_between(&before, &after), 1);
    let again = read(app.start_with_key(PROCESS, &start_body("c-1"), &key).await).await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert!(again.replayed, "the original request still replays");
    assert_eq!(again.body, first.body);
}

#[tokio::test]
async fn idempotency_keys_are_scoped_to_their_workspace() {
    let app = spawn_app().await;
    let other_key = app.other_workspace("ws-other").await;
    let key = new_key();

    let here = read(app.start_with_key(PROCESS, &start_body("c-1"), &key).await).await;
    let there = app
        .client
        .post(app.url(&format!(
            "/v2/public/actions/processId/{PROCESS}/workspaceId/ws-other"
        )))
        .header("x-api-key", &other_key)
        .header("idempotency-key", &key)
        .json(&start_body("c-1"))
        .send()
        .await
        .expect("start");

    let there = read(there).await;
    assert_eq!(here.status, StatusCode::CREATED, "{}", here.body);
    assert_eq!(there.status, StatusCode::CREATED, "{}", there.body);
    assert!(
        !here.replayed && !there.replayed,
        "neither answer is a replay"
    );
    assert_ne!(here.body["token"], there.body["token"]);
    assert_ne!(here.body["spektrId"], there.body["spektrId"]);
    let there_token = there.body["token"].as_str().expect("token");
    let step = app
        .client
        .get(app.url(&format!("/v2/public/actions/{there_token}")))
        .header("x-api-key", &other_key)
        .send()
        .await
        .expect("current step");
    assert_eq!(step.status(), StatusCode::OK);
    let here_token = here.body["token"].as_str().expect("token");
    assert_eq!(
        app.current_step_json(here_token).await["execution"]["status"],
        "pending"
    );
}

/// How many starts with one key race in each round, and how many rounds run.
const RACERS: usize = 3;
const ROUNDS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_with_one_key_create_exactly_one_execution() {
    let app = spawn_app().await;
    let before = app.event_mark().await;

    for round in 0..ROUNDS {
        let key = new_key();
        let body = start_body(&format!("racer-{round}"));

        let responses =
            join_all((0..RACERS).map(|_| app.start_with_key(PROCESS, &body, &key))).await;

        let mut tokens = Vec::new();
        for response in responses {
            let status = response.status();
            if status == StatusCode::CREATED {
                let body: Value = response.json().await.expect("json");
                tokens.push(body["token"].as_str().expect("token").to_owned());
            } else {
                let error = error_body(response, StatusCode::CONFLICT).await;
                assert_eq!(error["errorCode"], "CONFLICT_ERROR", "round {round}");
            }
        }
        assert!(!tokens.is_empty(), "round {round}: no start succeeded");
        assert!(
            tokens.iter().all(|token| *token == tokens[0]),
            "round {round}: different executions {tokens:?}"
        );
        let retry = read(app.start_with_key(PROCESS, &body, &key).await).await;
        assert_eq!(
            retry.status,
            StatusCode::CREATED,
            "round {round}: {}",
            retry.body
        );
        assert!(retry.replayed, "round {round}: the retry is a replay");
        assert_eq!(retry.body["token"], tokens[0].as_str());
    }

    let after = app.event_mark().await;
    assert_eq!(starts_between(&before, &after), ROUNDS as i64);
}

#[tokio::test]
async fn a_submit_retried_with_the_same_key_replays_completed() {
    let app = spawn_app().await;
    let token = app.start_token(PROCESS, "c-1").await;
    let key = new_key();
    let first = read(
        app.submit_with_key(&token, &valid_payload(), Some(&key))
            .await,
    )
    .await;

    let retry = read(
        app.submit_with_key(&token, &valid_payload(), Some(&key))
            .await,
    )
    .await;

    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert!(!first.replayed);
    assert_eq!(retry.status, StatusCode::OK, "{}", retry.body);
    assert!(
        retry.replayed,
        "the retry must carry idempotent-replayed: true"
    );
    assert_eq!(retry.body, json!({"status": "completed"}));
    let received = received_count(&app, &token).await;
    assert_eq!(received, 1);
    let without_key = app.submit_with_key(&token, &valid_payload(), None).await;
    let error = error_body(without_key, StatusCode::BAD_REQUEST).await;
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not currently waiting"),
        "{error}"
    );
}

#[tokio::test]
async fn a_submit_key_reused_with_a_different_payload_is_refused_with_422() {
    let app = spawn_app().await;
    let token = app.start_token(PROCESS, "c-1").await;
    let key = new_key();
    let first = app
        .submit_with_key(&token, &valid_payload(), Some(&key))
        .await;
    assert_eq!(first.status(), StatusCode::OK);

    let other = app
        .submit_with_key(
            &token,
            &json!({"company_name": "Other", "country_of_incorporation": "SE"}),
            Some(&key),
        )
        .await;

    error_body(other, StatusCode::UNPROCESSABLE_ENTITY).await;
}

#[tokio::test]
async fn a_failed_submit_does_not_consume_its_key() {
    let app = spawn_app().await;
    let started = app.start(PROCESS, "c-1").await;
    let token = started["token"].as_str().expect("token");
    let key = new_key();
    let invalid = json!({"company_name": "Acme", "country_of_incorporation": "Denmark"});
    let refused = app.submit_with_key(token, &invalid, Some(&key)).await;
    error_body(refused, StatusCode::BAD_REQUEST).await;
    let refused_again = app.submit_with_key(token, &invalid, Some(&key)).await;
    assert!(
        !is_replay(&refused_again),
        "errors are not stored for replay"
    );
    error_body(refused_again, StatusCode::BAD_REQUEST).await;

    let fixed = read(
        app.submit_with_key(token, &valid_payload(), Some(&key))
            .await,
    )
    .await;

    assert_eq!(fixed.status, StatusCode::OK, "{}", fixed.body);
    assert!(!fixed.replayed, "the fixed request ran afresh");
    assert_eq!(fixed.body, json!({"status": "completed"}));
    let customer = app
        .customer(started["spektrId"].as_str().expect("id"))
        .await;
    assert_eq!(customer["fields"]["country_of_incorporation"], "DK");
    let retry = read(
        app.submit_with_key(token, &valid_payload(), Some(&key))
            .await,
    )
    .await;
    assert_eq!(retry.status, StatusCode::OK);
    assert!(retry.replayed, "now the key holds the successful answer");
}

#[tokio::test]
async fn a_failed_start_does_not_consume_its_key() {
    let app = spawn_app().await;
    let key = new_key();
    let before = app.event_mark().await;
    let refused = app
        .start_with_key(PROCESS, &json!({"data": {"reference": "  "}}), &key)
        .await;
    error_body(refused, StatusCode::BAD_REQUEST).await;
    let unknown = app
        .start_with_key("no-such-process", &start_body("c-1"), &key)
        .await;
    error_body(unknown, StatusCode::NOT_FOUND).await;

    let fixed = read(app.start_with_key(PROCESS, &start_body("c-1"), &key).await).await;

    assert_eq!(fixed.status, StatusCode::CREATED, "{}", fixed.body);
    assert!(!fixed.replayed);
    let after = app.event_mark().await;
    assert_eq!(starts_between(&before, &after), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submits_on_one_token_complete_it_exactly_once() {
    let app = spawn_app().await;

    for round in 0..5 {
        let started = app.start(PROCESS, &format!("c-{round}")).await;
        let token = started["token"].as_str().expect("token");
        let (key_a, key_b) = (new_key(), new_key());
        let keys = [None, Some(key_a.as_str()), Some(key_b.as_str()), None];
        let payload = valid_payload();

        let responses = join_all(
            keys.iter()
                .map(|key| app.submit_with_key(token, &payload, *key)),
        )
        .await;

        let mut completed = 0;
        for response in responses {
            if response.status() == StatusCode::OK {
                completed += 1;
                continue;
            }
            let error = error_body(response, StatusCode::BAD_REQUEST).await;
            assert!(
                error["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("not currently waiting"),
                "round {round}: {error}"
            );
        }
        assert_eq!(completed, 1, "round {round}");
        let received = received_count(&app, token).await;
        assert_eq!(received, 1, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submits_with_one_key_complete_the_step_once() {
    let app = spawn_app().await;

    for round in 0..5 {
        let token = app.start_token(PROCESS, &format!("c-{round}")).await;
        let key = new_key();
        let payload = valid_payload();

        let responses =
            join_all((0..RACERS).map(|_| app.submit_with_key(&token, &payload, Some(&key)))).await;

        let mut completed = 0;
        for response in responses {
            if response.status() == StatusCode::OK {
                assert_eq!(
                    response.json::<Value>().await.expect("json"),
                    json!({"status": "completed"})
                );
                completed += 1;
            } else {
                error_body(response, StatusCode::CONFLICT).await;
            }
        }
        assert!(completed >= 1, "round {round}: no submit succeeded");
        let received = received_count(&app, &token).await;
        assert_eq!(received, 1, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_with_different_keys_for_one_new_reference_share_one_customer() {
    let app = spawn_app().await;

    for round in 0..ROUNDS {
        let body = start_body(&format!("shared-{round}"));
        let keys: Vec<String> = (0..RACERS).map(|_| new_key()).collect();

        let responses = join_all(
            keys.iter()
                .map(|key| app.start_with_key(PROCESS, &body, key)),
        )
        .await;

        let mut spektr_ids = Vec::new();
        for response in responses {
            let answer = read(response).await;
            assert_eq!(
                answer.status,
                StatusCode::CREATED,
                "round {round}: {}",
                answer.body
            );
            spektr_ids.push(answer.body["spektrId"].clone());
        }
        assert!(
            spektr_ids.iter().all(|id| *id == spektr_ids[0]),
            "round {round}: {spektr_ids:?}"
        );
    }
}

#[tokio::test]
async fn a_start_key_reused_with_another_query_string_is_refused_with_422() {
    let app = crate::helpers::spawn_app().await;
    let body = serde_json::json!({"data": {"reference": "query-check"}});
    let first = app
        .start_with_key(crate::helpers::PROCESS, &body, "query-key")
        .await;
    assert_eq!(first.status(), reqwest::StatusCode::CREATED);

    let path = format!(
        "{}?x=1",
        crate::helpers::TestApp::start_path(crate::helpers::PROCESS)
    );
    let second = app
        .client
        .post(app.url(&path))
        .header("x-api-key", &app.api_key)
        .header("idempotency-key", "query-key")
        .json(&body)
        .send()
        .await
        .expect("start");

    crate::helpers::error_body(second, reqwest::StatusCode::UNPROCESSABLE_ENTITY).await;
}
