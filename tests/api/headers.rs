//! Requests whose headers or query are ambiguous or hostile: a declared body size over the
//! limit, repeated credentials, keys and content types, client request ids, undecodable
//! query text. Each gets a clear 4xx in the envelope at once and changes nothing.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{
    ADMIN_TOKEN, PROCESS, TestApp, WORKSPACE, assert_untouched, error_body, pending_execution,
    spawn_app, spawn_app_with, starts_between, webhooks_path,
};

const REQUEST_ID: &str = "x-request-id";

fn valid_payload() -> Value {
    json!({"company_name": "Acme", "country_of_incorporation": "DK"})
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_refused_before_the_body_arrives() {
    // With a request timeout far longer than the client waits, only a refusal made from the
    // header alone can arrive in time.
    let app = spawn_app_with(|config| {
        config.max_body_bytes = 1024;
        config.request_timeout_secs = 120;
    })
    .await;
    let (token, spektr_id) = pending_execution(&app).await;
    let address = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let head = format!(
        "POST /v3/public/actions/{token} HTTP/1.1\r\nhost: {address}\r\nx-api-key: {}\r\n\
         content-type: application/json\r\ncontent-length: 1048577\r\n\r\n{{}}",
        app.api_key
    );
    stream.write_all(head.as_bytes()).await.expect("write");

    let mut response = vec![0; 4096];
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut response))
        .await
        .expect("the server waited for a body it had to refuse")
        .expect("read");
    let response = String::from_utf8_lossy(&response[..read]).to_ascii_lowercase();

    assert!(response.starts_with("http/1.1 413"), "{response}");
    assert!(
        response.contains("content-type: application/json"),
        "{response}"
    );
    assert!(response.contains("payload_too_large_error"), "{response}");
    drop(stream);
    assert_untouched(&app, &token, &spektr_id).await;
}

#[tokio::test]
async fn two_idempotency_keys_on_one_request_are_refused_and_nothing_starts() {
    let app = spawn_app().await;
    let reference = "two-keys";

    let response = app
        .client
        .post(app.url(&TestApp::start_path(PROCESS)))
        .header("x-api-key", &app.api_key)
        .header("idempotency-key", "key-a")
        .header("idempotency-key", "key-b")
        .json(&json!({"data": {"reference": reference}}))
        .send()
        .await
        .expect("start");

    let body = error_body(response, StatusCode::BAD_REQUEST).await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("idempotency-key"),
        "{body}"
    );
    assert_eq!(
        app.find_executions(&format!("reference={reference}")).await,
        Vec::<Value>::new()
    );
    // Either key alone still works afterwards: neither was claimed.
    let first = app
        .start_with_key(PROCESS, &json!({"data": {"reference": reference}}), "key-a")
        .await;
    assert_eq!(first.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn an_api_key_and_a_bearer_naming_different_keys_are_refused() {
    let app = spawn_app().await;
    let other_key = app.other_workspace("other-workspace").await;
    let (token, spektr_id) = pending_execution(&app).await;
    let path = format!("/v3/public/actions/{token}");

    let different = app
        .client
        .post(app.url(&path))
        .header("x-api-key", &app.api_key)
        .bearer_auth(&other_key)
        .json(&valid_payload())
        .send()
        .await
        .expect("submit");
    let body = error_body(different, StatusCode::UNAUTHORIZED).await;
    assert!(
        body["message"].as_str().unwrap().contains("different keys"),
        "{body}"
    );
    let two_keys = app
        .client
        .get(app.url(&format!("/v2/public/actions/{token}")))
        .header("x-api-key", &app.api_key)
        .header("x-api-key", &other_key)
        .send()
        .await
        .expect("current step");
    error_body(two_keys, StatusCode::UNAUTHORIZED).await;
    assert_untouched(&app, &token, &spektr_id).await;

    // A proxy's Basic credentials beside the key are not ours to judge.
    let basic = app
        .client
        .get(app.url(&format!("/v2/public/actions/{token}")))
        .header("x-api-key", &app.api_key)
        .basic_auth("proxy-user", Some("proxy-password"))
        .send()
        .await
        .expect("current step");
    assert_eq!(basic.status(), StatusCode::OK);
    // The same key in both headers is no ambiguity.
    let same = app
        .client
        .post(app.url(&path))
        .header("x-api-key", &app.api_key)
        .bearer_auth(&app.api_key)
        .json(&valid_payload())
        .send()
        .await
        .expect("submit");
    assert_eq!(same.status(), StatusCode::OK);
}

#[tokio::test]
async fn two_content_types_are_refused() {
    let app = spawn_app().await;
    let (token, spektr_id) = pending_execution(&app).await;

    let response = app
        .client
        .post(app.url(&format!("/v3/public/actions/{token}")))
        .header("x-api-key", &app.api_key)
        .header(CONTENT_TYPE, "application/json")
        .header(CONTENT_TYPE, "text/plain")
        .body(valid_payload().to_string())
        .send()
        .await
        .expect("submit");

    error_body(response, StatusCode::BAD_REQUEST).await;
    assert_untouched(&app, &token, &spektr_id).await;
}

#[tokio::test]
async fn a_plain_client_request_id_is_kept_and_anything_else_replaced() {
    let app = spawn_app().await;
    let get = |request_id: Vec<&'static str>| {
        let mut request = app.client.get(app.url("/healthz"));
        for value in request_id {
            request = request.header(REQUEST_ID, value);
        }
        async move {
            let response = request.send().await.expect("healthz");
            assert_eq!(response.status(), StatusCode::OK);
            let ids: Vec<String> = response
                .headers()
                .get_all(REQUEST_ID)
                .iter()
                .map(|value| value.to_str().expect("ascii").to_owned())
                .collect();
            assert_eq!(ids.len(), 1, "{ids:?}");
            ids[0].clone()
        }
    };

    assert_eq!(get(vec!["trace-42:abc.DEF_9"]).await, "trace-42:abc.DEF_9");
    let long: &'static str = "a".repeat(129).leak();
    for sent in [
        vec![r#"fake id" route=/spoofed status=200"#],
        vec![long],
        vec!["one", "two"],
    ] {
        let answered = get(sent.clone()).await;
        assert!(!sent.contains(&answered.as_str()), "{answered}");
        uuid::Uuid::parse_str(&answered).expect("a generated id is a UUID");
    }
}

#[tokio::test]
async fn filled_by_must_be_decodable_text_without_control_characters() {
    let app = spawn_app().await;

    for query in ["filledBy=%FF%FE", "filledBy=ann%01", "filledBy=%0Aforged"] {
        let (token, spektr_id) = pending_execution(&app).await;
        let response = app
            .client
            .post(app.url(&format!("/v3/public/actions/{token}?{query}")))
            .header("x-api-key", &app.api_key)
            .json(&valid_payload())
            .send()
            .await
            .expect("submit");

        let body = error_body(response, StatusCode::BAD_REQUEST).await;
        assert!(
            body["message"].as_str().unwrap().contains("filledBy"),
            "{query}: {body}"
        );
        assert_untouched(&app, &token, &spektr_id).await;
    }

    let (token, _) = pending_execution(&app).await;
    let response = app
        .client
        .post(app.url(&format!(
            "/v3/public/actions/{token}?filledBy=J%C3%BCrgen+K."
        )))
        .header("x-api-key", &app.api_key)
        .json(&valid_payload())
        .send()
        .await
        .expect("submit");
    assert_eq!(response.status(), StatusCode::OK);
    let activity = app.activity(&app.execution_id(&token).await).await;
    let received = activity
        .iter()
        .find(|entry| entry["type"] == "external_data_received")
        .expect("received entry");
    assert!(received.to_string().contains("Jürgen K."), "{received}");
}

#[tokio::test]
async fn a_reference_with_control_characters_is_refused() {
    let app = spawn_app().await;
    let before = app.event_mark().await;

    let response = app
        .start_raw(PROCESS, json!({"data": {"reference": "a\u{1}b"}}))
        .await;

    let body = error_body(response, StatusCode::BAD_REQUEST).await;
    assert!(
        body["message"].as_str().unwrap().contains("data.reference"),
        "{body}"
    );
    assert_eq!(starts_between(&before, &app.event_mark().await), 0);
}

#[tokio::test]
async fn the_admin_token_is_refused_when_sent_twice() {
    let app = spawn_app().await;

    let response = app
        .client
        .get(app.url(&webhooks_path(WORKSPACE)))
        .header(AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
        .header(AUTHORIZATION, "Bearer wrong")
        .send()
        .await
        .expect("list");

    error_body(response, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn a_query_parameter_given_twice_is_refused() {
    let app = spawn_app().await;
    let (token, spektr_id) = pending_execution(&app).await;

    let feed = app
        .feed_raw(&app.api_key.clone(), "limit=1&limit=500")
        .await;
    let body = error_body(feed, StatusCode::BAD_REQUEST).await;
    assert!(
        body["message"].as_str().unwrap().contains("'limit'"),
        "{body}"
    );
    let submit = app
        .client
        .post(app.url(&format!(
            "/v3/public/actions/{token}?filledBy=ann&filled%42y=bob"
        )))
        .header("x-api-key", &app.api_key)
        .json(&valid_payload())
        .send()
        .await
        .expect("submit");
    error_body(submit, StatusCode::BAD_REQUEST).await;
    assert_untouched(&app, &token, &spektr_id).await;

    let distinct = app.feed_raw(&app.api_key.clone(), "limit=1&after=0").await;
    assert_eq!(distinct.status(), StatusCode::OK);
}
