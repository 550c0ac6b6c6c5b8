//! Every error path answers in the envelope with a fitting status, never a 500, and a refused
//! request changes nothing.

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{
    ADMIN_TOKEN, PROCESS, TestApp, assert_untouched, error_body, pending_execution, spawn_app,
    spawn_app_with, starts_between,
};

/// The reference every refused start names, with a field it would prefill.
const REFUSED_REFERENCE: &str = "refused-customer";

const JSON: Option<&str> = Some("application/json");

/// A valid start body, as text.
fn start_text() -> String {
    json!({"data": {"reference": REFUSED_REFERENCE, "segment": "smb"}}).to_string()
}

/// A valid submit payload for the guide's process, as text.
fn submit_text() -> String {
    json!({"company_name": "Acme", "country_of_incorporation": "DK"}).to_string()
}

/// The `errorCode` the envelope carries for `status`.
fn expected_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "BAD_REQUEST_ERROR",
        StatusCode::UNAUTHORIZED => "UNAUTHORIZED_ERROR",
        StatusCode::NOT_FOUND => "NOT_FOUND_ERROR",
        StatusCode::METHOD_NOT_ALLOWED => "METHOD_NOT_ALLOWED_ERROR",
        StatusCode::PAYLOAD_TOO_LARGE => "PAYLOAD_TOO_LARGE_ERROR",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "UNSUPPORTED_MEDIA_TYPE_ERROR",
        other => panic!("no error code expected for {other}"),
    }
}

/// Checks the envelope of an error response and returns its body.
async fn envelope(response: Response, status: StatusCode) -> Value {
    let body = error_body(response, status).await;
    assert_eq!(body["errorCode"], expected_code(status), "{body}");
    let keys: Vec<&String> = body.as_object().expect("object").keys().collect();
    assert!(
        keys.iter()
            .all(|key| ["errorCode", "message", "details"].contains(&key.as_str())),
        "unexpected keys in {body}"
    );
    body
}

/// A POST with the app's API key, an optional content type and a raw body.
async fn post_raw(
    app: &TestApp,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> Response {
    let mut request = app
        .client
        .post(app.url(path))
        .header("x-api-key", &app.api_key)
        .body(body);
    if let Some(content_type) = content_type {
        request = request.header(CONTENT_TYPE, content_type);
    }
    request.send().await.expect("post")
}

/// Submits `body` raw to a fresh execution, expects `status` in the envelope and checks the
/// execution is untouched.
async fn refused_submit(
    app: &TestApp,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
    status: StatusCode,
) -> Value {
    let (token, spektr_id) = pending_execution(app).await;

    let response = post_raw(
        app,
        &format!("/v3/public/actions/{token}"),
        content_type,
        body,
    )
    .await;

    let error = envelope(response, status).await;
    assert_untouched(app, &token, &spektr_id).await;
    error
}

/// Starts with `body` raw, expects `status` in the envelope and checks that no execution was
/// started and no customer fields were prefilled.
async fn refused_start(
    app: &TestApp,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
    status: StatusCode,
) -> Value {
    let before = app.event_mark().await;

    let response = post_raw(app, &TestApp::start_path(PROCESS), content_type, body).await;

    let error = envelope(response, status).await;
    let after = app.event_mark().await;
    assert_eq!(starts_between(&before, &after), 0, "{error}");
    let started = app.start(PROCESS, REFUSED_REFERENCE).await;
    let customer = app
        .customer(started["spektrId"].as_str().expect("id"))
        .await;
    assert_eq!(customer["fields"], json!({}), "{error}");
    error
}

#[tokio::test]
async fn malformed_json_is_refused_with_400() {
    let app = spawn_app().await;

    for body in [
        r#"{"company_name": "Acme", "country_of_incorporation": "DK""#,
        r#"{"company_name": 'Acme'}"#,
        r#"{"company_name": "Acme",}"#,
        r#"{"company_name": "Acme"} {"more": 1}"#,
        "not json",
    ] {
        refused_submit(&app, JSON, body, StatusCode::BAD_REQUEST).await;
        refused_start(&app, JSON, body, StatusCode::BAD_REQUEST).await;
    }
}

#[tokio::test]
async fn an_empty_body_is_refused_with_400() {
    let app = spawn_app().await;

    for body in ["", "  \n\t "] {
        refused_submit(&app, JSON, body, StatusCode::BAD_REQUEST).await;
        refused_start(&app, JSON, body, StatusCode::BAD_REQUEST).await;
    }
}

#[tokio::test]
async fn a_body_starting_with_a_byte_order_mark_is_refused_with_400() {
    let app = spawn_app().await;
    let with_bom = |text: String| [b"\xEF\xBB\xBF".as_slice(), text.as_bytes()].concat();

    refused_submit(&app, JSON, with_bom(submit_text()), StatusCode::BAD_REQUEST).await;
    refused_start(&app, JSON, with_bom(start_text()), StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn a_duplicate_key_in_the_payload_is_refused() {
    let app = spawn_app().await;

    for body in [
        r#"{"company_name": "Acme", "company_name": "Evil", "country_of_incorporation": "DK"}"#,
        r#"{"company_name": "Acme", "country_of_incorporation": "DK", "x": {"a": 1, "a": 2}}"#,
    ] {
        refused_submit(&app, JSON, body, StatusCode::BAD_REQUEST).await;
    }
    for body in [
        r#"{"data": {"reference": "refused-customer", "reference": "other"}}"#,
        r#"{"data": {"reference": "refused-customer", "segment": "a"}, "data": {}}"#,
    ] {
        refused_start(&app, JSON, body, StatusCode::BAD_REQUEST).await;
    }
}

#[tokio::test]
async fn invalid_utf8_bytes_are_refused_with_400() {
    let app = spawn_app().await;
    let submit = b"{\"company_name\": \"Ac\xFFme\", \"country_of_incorporation\": \"DK\"}";
    let start = b"{\"data\": {\"reference\": \"refused-customer\", \"segment\": \"\xC3\x28\"}}";
    let outside_strings = b"{\"company_name\": \"Acme\", \xFE: 1}";

    refused_submit(&app, JSON, submit.to_vec(), StatusCode::BAD_REQUEST).await;
    refused_submit(
        &app,
        JSON,
        outside_strings.to_vec(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    refused_start(&app, JSON, start.to_vec(), StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn a_body_that_is_not_declared_as_json_is_refused_with_415() {
    let app = spawn_app().await;

    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        refused_submit(
            &app,
            content_type,
            submit_text(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        )
        .await;
        refused_start(
            &app,
            content_type,
            start_text(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        )
        .await;
    }
}

#[tokio::test]
async fn a_json_content_type_with_a_charset_is_accepted() {
    let app = spawn_app().await;
    let (token, _) = pending_execution(&app).await;

    let response = post_raw(
        &app,
        &format!("/v3/public/actions/{token}"),
        Some("application/json; charset=utf-8"),
        submit_text(),
    )
    .await;

    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_body_over_the_configured_limit_is_refused_with_413() {
    let app = spawn_app_with(|config| config.max_body_bytes = 1024).await;
    let name = "A".repeat(2048);
    let submit = json!({"company_name": name, "country_of_incorporation": "DK"}).to_string();
    let start = json!({"data": {"reference": REFUSED_REFERENCE, "segment": name}}).to_string();

    refused_submit(&app, JSON, submit, StatusCode::PAYLOAD_TOO_LARGE).await;
    refused_start(&app, JSON, start, StatusCode::PAYLOAD_TOO_LARGE).await;
}

#[tokio::test]
async fn a_body_just_under_the_configured_limit_is_accepted() {
    let app = spawn_app_with(|config| config.max_body_bytes = 1024).await;
    let (token, _) = pending_execution(&app).await;
    let name = "A".repeat(900);
    let body = json!({"company_name": name, "country_of_incorporation": "DK"}).to_string();
    assert!(body.len() < 1024);

    let response = post_raw(&app, &format!("/v3/public/actions/{token}"), JSON, body).await;

    assert_eq!(response.status(), StatusCode::OK);
}

/// Sends `body` with chunked transfer encoding (so no Content-Length announces its size) and
/// returns the raw response head.
async fn post_chunked(app: &TestApp, path: &str, body: &str) -> String {
    let address = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: {address}\r\nx-api-key: {}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\
         connection: close\r\n\r\n",
        app.api_key
    );
    for chunk in body.as_bytes().chunks(256) {
        request.push_str(&format!("{:x}\r\n", chunk.len()));
        request.push_str(std::str::from_utf8(chunk).expect("ascii body"));
        request.push_str("\r\n");
    }
    request.push_str("0\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write request");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .expect("read response");
    let response = String::from_utf8_lossy(&response);
    response
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

#[tokio::test]
async fn a_chunked_body_over_the_configured_limit_is_refused_with_413() {
    let app = spawn_app_with(|config| config.max_body_bytes = 1024).await;
    let (token, spektr_id) = pending_execution(&app).await;
    let name = "A".repeat(4096);
    let body = json!({"company_name": name, "country_of_incorporation": "DK"}).to_string();

    let head = post_chunked(&app, &format!("/v3/public/actions/{token}"), &body).await;

    assert!(head.starts_with("http/1.1 413"), "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    assert_untouched(&app, &token, &spektr_id).await;
}

#[tokio::test]
async fn unknown_routes_answer_404_in_the_envelope() {
    let app = spawn_app().await;

    for (method, path) in [
        (Method::GET, "/"),
        (Method::GET, "/v9/public/actions/token"),
        (Method::POST, "/v3/public/actions"),
        (Method::POST, "/v3/public/actions/token/extra"),
        (Method::GET, "/admin/v1/nothing"),
    ] {
        let response = app
            .client
            .request(method.clone(), app.url(path))
            .header("x-api-key", &app.api_key)
            .json(&json!({}))
            .send()
            .await
            .expect("request");

        envelope(response, StatusCode::NOT_FOUND).await;
    }
}

#[tokio::test]
async fn a_wrong_method_answers_405_in_the_envelope_with_the_allowed_methods() {
    let app = spawn_app().await;
    let (token, spektr_id) = pending_execution(&app).await;

    for (method, path, allowed) in [
        (Method::GET, format!("/v3/public/actions/{token}"), "POST"),
        (Method::PUT, format!("/v3/public/actions/{token}"), "POST"),
        (Method::DELETE, format!("/v2/public/actions/{token}"), "GET"),
        (Method::GET, TestApp::start_path(PROCESS), "POST"),
    ] {
        let response = app
            .client
            .request(method.clone(), app.url(&path))
            .header("x-api-key", &app.api_key)
            .json(&json!({"company_name": "Acme", "country_of_incorporation": "DK"}))
            .send()
            .await
            .expect("request");

        let allow = response
            .headers()
            .get("allow")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        envelope(response, StatusCode::METHOD_NOT_ALLOWED).await;
        assert!(allow.contains(allowed), "{method} {path}: allow {allow:?}");
    }
    assert_untouched(&app, &token, &spektr_id).await;
}

/// Sends the three public requests with `headers` in place of the API key and expects 401 for
/// each; checks nothing changed.
async fn assert_public_api_refuses(app: &TestApp, headers: &[(&str, HeaderValue)]) {
    let (token, spektr_id) = pending_execution(app).await;
    let before = app.event_mark().await;
    let with_headers = |mut request: reqwest::RequestBuilder| {
        for (name, value) in headers {
            request = request.header(*name, value.clone());
        }
        request
    };

    let start = with_headers(app.client.post(app.url(&TestApp::start_path(PROCESS))))
        .json(&json!({"data": {"reference": REFUSED_REFERENCE}}))
        .send()
        .await
        .expect("start");
    let step = with_headers(
        app.client
            .get(app.url(&format!("/v2/public/actions/{token}"))),
    )
    .send()
    .await
    .expect("current step");
    let submit = with_headers(
        app.client
            .post(app.url(&format!("/v3/public/actions/{token}"))),
    )
    .json(&json!({"company_name": "Acme", "country_of_incorporation": "DK"}))
    .send()
    .await
    .expect("submit");

    for response in [start, step, submit] {
        let body = envelope(response, StatusCode::UNAUTHORIZED).await;
        assert!(!body["message"].as_str().unwrap_or_default().is_empty());
    }
    let after = app.event_mark().await;
    assert_eq!(starts_between(&before, &after), 0);
    assert_untouched(app, &token, &spektr_id).await;
}

#[tokio::test]
async fn a_missing_api_key_answers_401() {
    let app = spawn_app().await;

    assert_public_api_refuses(&app, &[]).await;
}

#[tokio::test]
async fn an_invalid_api_key_answers_401() {
    let app = spawn_app().await;
    let wrong = format!("{}x", app.api_key);
    let long = "k".repeat(4096);

    for key in [wrong.as_str(), "not-a-key", long.as_str()] {
        let header = HeaderValue::from_str(key).expect("header");
        assert_public_api_refuses(&app, &[("x-api-key", header.clone())]).await;
        let bearer = HeaderValue::from_str(&format!("Bearer {key}")).expect("header");
        assert_public_api_refuses(&app, &[(AUTHORIZATION.as_str(), bearer)]).await;
    }
}

#[tokio::test]
async fn a_malformed_authorization_header_answers_401() {
    let app = spawn_app().await;
    let basic = HeaderValue::from_static("Basic dXNlcjpwYXNz");
    let no_token = HeaderValue::from_static("Bearer");
    let other_scheme = HeaderValue::from_str(&format!("Token {}", app.api_key)).expect("header");
    let not_utf8 = HeaderValue::from_bytes(b"Bearer \xFF\xFE").expect("opaque header");

    for value in [basic, no_token, other_scheme, not_utf8.clone()] {
        assert_public_api_refuses(&app, &[(AUTHORIZATION.as_str(), value)]).await;
    }
    assert_public_api_refuses(&app, &[("x-api-key", not_utf8)]).await;
}

/// `depth` nested arrays around nothing: `[[[...]]]`.
fn nested_arrays(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

#[tokio::test]
async fn json_nested_ten_thousand_levels_deep_is_refused_without_a_crash() {
    let app = spawn_app().await;
    let deep_value = nested_arrays(10_000);
    let deep_objects = format!("{}1{}", r#"{"a":"#.repeat(10_000), "}".repeat(10_000));
    let submit = format!(
        r#"{{"company_name": "Acme", "country_of_incorporation": "DK", "x": {deep_value}}}"#
    );
    let start = format!(r#"{{"data": {{"reference": "{REFUSED_REFERENCE}", "x": {deep_value}}}}}"#);

    refused_submit(&app, JSON, submit, StatusCode::BAD_REQUEST).await;
    refused_submit(&app, JSON, deep_objects.clone(), StatusCode::BAD_REQUEST).await;
    refused_submit(&app, JSON, deep_value, StatusCode::BAD_REQUEST).await;
    refused_start(&app, JSON, start, StatusCode::BAD_REQUEST).await;
    refused_start(&app, JSON, deep_objects, StatusCode::BAD_REQUEST).await;

    app.assert_still_serving().await;
}

/// `levels` nested objects `{"a": ... 1 ...}`.
fn nested_objects(levels: usize) -> Value {
    (0..levels).fold(json!(1), |inner, _| json!({ "a": inner }))
}

#[tokio::test]
async fn a_payload_at_the_nesting_limit_is_stored_and_read_back_everywhere_one_deeper_is_refused() {
    let app = spawn_app().await;
    let process = crate::helpers::process_expecting(json!([
        {"spektrDataField": "profile", "type": "object", "required": true}
    ]));
    app.put_process("deep", process).await;
    let started = app.start("deep", "deep-customer").await;
    let token = started["token"].as_str().expect("token");
    let spektr_id = started["spektrId"].as_str().expect("spektrId");

    // The body is level 1, so `profile` may hold 63 levels.
    let too_deep = json!({"profile": nested_objects(64)});
    let refused = app.submit(token, too_deep).await;
    let error = envelope(refused, StatusCode::BAD_REQUEST).await;
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .contains("64 levels"),
        "{error}"
    );
    let deepest = nested_objects(63);
    let accepted = app.submit(token, json!({"profile": deepest})).await;
    assert_eq!(accepted.status(), StatusCode::OK);

    // Everything that shows the stored value reads it back whole.
    assert_eq!(app.customer(spektr_id).await["fields"]["profile"], deepest);
    let activity = app.activity(&app.execution_id(token).await).await;
    let received = activity
        .iter()
        .find(|event| event["type"] == "external_data_received")
        .expect("received event");
    assert_eq!(received["eventData"]["data"]["profile"], deepest);
    let feed = app.wait_for_feed(&app.api_key, "0", activity.len()).await;
    assert!(
        feed["data"]
            .as_array()
            .expect("data")
            .iter()
            .any(|event| event["eventData"]["data"]["profile"] == deepest),
        "{feed}"
    );
    let found = app.find_executions("reference=deep-customer").await;
    assert_eq!(found.len(), 1);
}

/// Starts with the raw JSON `body` (asserting 201) and returns the customer as stored.
async fn start_raw_and_read_customer(app: &TestApp, body: impl Into<reqwest::Body>) -> Value {
    let response = post_raw(app, &TestApp::start_path(PROCESS), JSON, body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let started: Value = response.json().await.expect("json");
    app.customer(started["spektrId"].as_str().expect("spektrId"))
        .await
}

#[tokio::test]
async fn integers_are_kept_exactly_and_negative_zero_is_stored_as_zero_on_every_backend() {
    let app = spawn_app().await;
    let body = r#"{"data": {"reference": "numbers", "big": 9007199254740993,
                   "negative": -9223372036854775808, "zero": -0, "float_zero": -0.0}}"#;

    let customer = start_raw_and_read_customer(&app, body).await;

    let fields = &customer["fields"];
    assert_eq!(
        fields["big"].as_u64(),
        Some(9_007_199_254_740_993),
        "{fields}"
    );
    assert_eq!(fields["negative"].as_i64(), Some(i64::MIN), "{fields}");
    assert_eq!(fields["zero"].to_string(), "0.0", "{fields}");
    assert_eq!(fields["float_zero"].to_string(), "0.0", "{fields}");
}

/// Doubles whose shortest decimal form a parser that is not correctly rounded gets wrong,
/// and the extremes (Postgres writes the largest as a 309-digit integer).
const EXACT_DOUBLES: [&str; 8] = [
    "1.7976931348623157e308",
    "-1.7976931348623157e308",
    "0.45110218428522253",
    "-5.988180159386011e243",
    "7.370437700706684e208",
    "5e-324",
    "2.2250738585072014e-308",
    "0.1",
];

#[tokio::test]
async fn doubles_are_stored_and_read_back_bit_for_bit_on_every_backend() {
    let app = spawn_app().await;
    let prefill: Vec<String> = EXACT_DOUBLES
        .iter()
        .enumerate()
        .map(|(index, number)| format!(r#""d{index}": {number}"#))
        .collect();
    let body = format!(
        r#"{{"data": {{"reference": "doubles", {}}}}}"#,
        prefill.join(", ")
    );

    let customer = start_raw_and_read_customer(&app, body).await;

    for (index, number) in EXACT_DOUBLES.iter().enumerate() {
        let expected: f64 = number.parse().expect("a double");
        let stored = customer["fields"][format!("d{index}")]
            .as_f64()
            .expect("a number");
        assert_eq!(
            stored.to_bits(),
            expected.to_bits(),
            "{number} came back as {stored}"
        );
    }
    // The customer stays readable for later starts and the feed.
    app.start(PROCESS, "doubles").await;
    let feed = app.wait_for_feed(&app.api_key, "0", 4).await;
    assert_eq!(feed["data"].as_array().map(Vec::len), Some(4), "{feed}");
}

#[tokio::test]
async fn a_route_on_a_double_matches_the_same_literal() {
    let app = spawn_app().await;
    let number = json!(7.370437700706684e208);
    app.put_process(
        "routed",
        json!({
            "name": "Routed on a number",
            "type": "onboarding",
            "steps": [
                {"id": "collect", "type": "externalData", "title": "Collect",
                 "expectedFields": [{"spektrDataField": "n", "type": "number", "required": true}],
                 "routes": [{"when": {"field": "n", "equals": number}, "goto": "match"}]},
                {"id": "nomatch", "type": "end", "outcome": "nomatch"},
                {"id": "match", "type": "end", "outcome": "match"}
            ]
        }),
    )
    .await;
    let token = app.start_token("routed", "routed-customer").await;

    let response = post_raw(
        &app,
        &format!("/v3/public/actions/{token}"),
        JSON,
        r#"{"n": 7.370437700706684e208}"#,
    )
    .await;

    assert_eq!(response.status(), StatusCode::OK);
    let step = app.current_step_json(&token).await;
    assert_eq!(step["execution"]["outcome"], "match", "{step}");
}

#[tokio::test]
async fn a_number_too_large_for_a_double_is_refused_with_400() {
    let app = spawn_app().await;

    for number in ["1e400", "-1e400", &format!("1{}", "0".repeat(400))] {
        let submit = format!(
            r#"{{"company_name": "Acme", "country_of_incorporation": "DK", "revenue": {number}}}"#
        );
        let start =
            format!(r#"{{"data": {{"reference": "{REFUSED_REFERENCE}", "revenue": {number}}}}}"#);

        refused_submit(&app, JSON, submit, StatusCode::BAD_REQUEST).await;
        refused_start(&app, JSON, start, StatusCode::BAD_REQUEST).await;
    }
}

#[tokio::test]
async fn an_idempotency_key_outside_1_to_255_characters_is_refused_with_400() {
    let app = spawn_app().await;
    let (token, spektr_id) = pending_execution(&app).await;
    let before = app.event_mark().await;

    for key in [String::new(), "k".repeat(256), "k".repeat(10_000)] {
        let start = app
            .start_with_key(
                PROCESS,
                &json!({"data": {"reference": REFUSED_REFERENCE}}),
                &key,
            )
            .await;
        let submit = app
            .submit_with_key(
                &token,
                &json!({"company_name": "Acme", "country_of_incorporation": "DK"}),
                Some(&key),
            )
            .await;

        envelope(start, StatusCode::BAD_REQUEST).await;
        envelope(submit, StatusCode::BAD_REQUEST).await;
    }

    let after = app.event_mark().await;
    assert_eq!(starts_between(&before, &after), 0);
    assert_untouched(&app, &token, &spektr_id).await;
}

#[tokio::test]
async fn an_idempotency_key_of_255_characters_is_accepted() {
    let app = spawn_app().await;

    let response = app
        .start_with_key(
            PROCESS,
            &json!({"data": {"reference": "customer-1"}}),
            &"k".repeat(255),
        )
        .await;

    assert_eq!(response.status(), StatusCode::CREATED);
}

// NUL (U+0000) is legal inside JSON strings and URLs but cannot be kept in Postgres text or
// jsonb. Whether the server stores it or refuses it, it must never answer with a 500.

#[tokio::test]
async fn a_token_containing_a_nul_character_is_an_unknown_token() {
    let app = spawn_app().await;
    let (token, spektr_id) = pending_execution(&app).await;

    for path in [
        "/v2/public/actions/%00".to_owned(),
        format!("/v2/public/actions/{token}%00"),
    ] {
        let read = app
            .client
            .get(app.url(&path))
            .header("x-api-key", &app.api_key)
            .send()
            .await
            .expect("current step");
        let submit = post_raw(&app, &path, JSON, submit_text()).await;

        envelope(read, StatusCode::NOT_FOUND).await;
        envelope(submit, StatusCode::NOT_FOUND).await;
    }
    assert_untouched(&app, &token, &spektr_id).await;
}

#[tokio::test]
async fn a_nul_character_in_a_submitted_value_is_stored_intact_or_refused() {
    let app = spawn_app().await;
    let (token, spektr_id) = pending_execution(&app).await;

    let response = app
        .submit(
            &token,
            json!({"company_name": "Ac\u{0}me", "country_of_incorporation": "DK"}),
        )
        .await;

    if response.status() == StatusCode::OK {
        let fields = &app.customer(&spektr_id).await["fields"];
        assert_eq!(fields["company_name"], "Ac\u{0}me");
    } else {
        envelope(response, StatusCode::BAD_REQUEST).await;
        assert_untouched(&app, &token, &spektr_id).await;
    }
}

#[tokio::test]
async fn a_nul_character_in_a_start_is_stored_intact_or_refused() {
    let app = spawn_app().await;

    for (data, expected_fields) in [
        (json!({"reference": "nul\u{0}ref"}), json!({})),
        (
            json!({"reference": "nul-value", "segment": "s\u{0}mb"}),
            json!({"segment": "s\u{0}mb"}),
        ),
        (
            json!({"reference": "nul-key", "seg\u{0}ment": "smb"}),
            json!({"seg\u{0}ment": "smb"}),
        ),
    ] {
        let before = app.event_mark().await;

        let response = app.start_raw(PROCESS, json!({ "data": data })).await;

        if response.status() == StatusCode::CREATED {
            let started: Value = response.json().await.expect("json");
            let customer = app
                .customer(started["spektrId"].as_str().expect("id"))
                .await;
            assert_eq!(customer["reference"], data["reference"]);
            assert_eq!(customer["fields"], expected_fields);
        } else {
            envelope(response, StatusCode::BAD_REQUEST).await;
            let after = app.event_mark().await;
            assert_eq!(starts_between(&before, &after), 0, "{data}");
        }
    }
}

#[tokio::test]
async fn a_nul_character_in_filled_by_is_recorded_intact_or_refused() {
    let app = spawn_app().await;
    let (token, spektr_id) = pending_execution(&app).await;

    let response = post_raw(
        &app,
        &format!("/v3/public/actions/{token}?filledBy=crm%00sync"),
        JSON,
        submit_text(),
    )
    .await;

    if response.status() == StatusCode::OK {
        let activity = app.activity(&app.execution_id(&token).await).await;
        let received = activity
            .iter()
            .find(|entry| entry["type"] == "external_data_received")
            .expect("external_data_received");
        assert_eq!(received["eventData"]["filledBy"], "crm\u{0}sync");
    } else {
        envelope(response, StatusCode::BAD_REQUEST).await;
        assert_untouched(&app, &token, &spektr_id).await;
    }
}

#[tokio::test]
async fn admin_paths_naming_a_workspace_with_a_nul_character_are_not_found() {
    let app = spawn_app().await;
    let (token, spektr_id) = pending_execution(&app).await;
    let execution_id = app.execution_id(&token).await;

    let customer = app
        .admin_get(&format!("/admin/v1/workspaces/%00/customers/{spektr_id}"))
        .await;
    let activity = app
        .admin_get(&format!(
            "/admin/v1/workspaces/%00/executions/{execution_id}/activity"
        ))
        .await;
    let api_key = app
        .client
        .post(app.url("/admin/v1/workspaces/%00/api-keys"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("create api key");

    envelope(customer, StatusCode::NOT_FOUND).await;
    envelope(activity, StatusCode::NOT_FOUND).await;
    envelope(api_key, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn a_workspace_name_with_a_nul_character_is_stored_intact_or_refused() {
    let app = spawn_app().await;

    let response = app
        .client
        .put(app.url("/admin/v1/workspaces/ws-nul"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "Ac\u{0}me"}))
        .send()
        .await
        .expect("put workspace");

    if response.status() == StatusCode::CREATED {
        let body: Value = response.json().await.expect("json");
        assert_eq!(body, json!({"id": "ws-nul", "name": "Ac\u{0}me"}));
    } else {
        envelope(response, StatusCode::BAD_REQUEST).await;
        let key = app
            .client
            .post(app.url("/admin/v1/workspaces/ws-nul/api-keys"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("create api key");
        envelope(key, StatusCode::NOT_FOUND).await;
    }
}

/// A start body for the refused reference that prefills `fields`.
fn start_with_fields(fields: &serde_json::Map<String, Value>) -> String {
    let mut data = fields.clone();
    data.insert("reference".to_owned(), json!(REFUSED_REFERENCE));
    json!({ "data": data }).to_string()
}

/// `count` fields named `{prefix}0`, `{prefix}1`, … each set to `true`.
fn numbered_fields(prefix: &str, count: usize) -> serde_json::Map<String, Value> {
    (0..count)
        .map(|index| (format!("{prefix}{index}"), json!(true)))
        .collect()
}

#[tokio::test]
async fn start_data_with_a_bad_key_or_too_many_fields_is_refused_with_400() {
    let app = spawn_app().await;
    let one = |key: String| serde_json::Map::from_iter([(key, json!("x"))]);

    for (fields, expected) in [
        (one(String::new()), "1 to 255 bytes"),
        (one("k".repeat(256)), "1 to 255 bytes"),
        (one("a\u{1}".to_owned()), "control characters"),
        (one("line\nbreak".to_owned()), "control characters"),
        (numbered_fields("f", 201), "at most 200 fields"),
    ] {
        let error = refused_start(
            &app,
            JSON,
            start_with_fields(&fields),
            StatusCode::BAD_REQUEST,
        )
        .await;
        let message = error["message"].as_str().expect("message");
        assert!(message.contains(expected), "{message}");
    }
}

#[tokio::test]
async fn start_data_at_the_per_request_limits_is_accepted() {
    let app = spawn_app().await;
    let mut fields = numbered_fields("f", 199);
    fields.insert("k".repeat(255), json!("long key"));

    let response = start_prefilling(&app, &fields).await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let started: Value = response.json().await.expect("json");
    let customer = app
        .customer(started["spektrId"].as_str().expect("id"))
        .await;
    assert_eq!(customer["fields"], Value::Object(fields));
}

/// Starts the refused reference with `fields`.
async fn start_prefilling(app: &TestApp, fields: &serde_json::Map<String, Value>) -> Response {
    post_raw(
        app,
        &TestApp::start_path(PROCESS),
        JSON,
        start_with_fields(fields),
    )
    .await
}

/// Starts the refused reference with `fields`; asserts 201.
async fn prefill(app: &TestApp, fields: &serde_json::Map<String, Value>) -> String {
    let response = start_prefilling(app, fields).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let started: Value = response.json().await.expect("json");
    started["spektrId"].as_str().expect("id").to_owned()
}

/// Asserts that a start prefilling `fields` is refused with 400 and starts nothing.
async fn refused_prefill(app: &TestApp, fields: &serde_json::Map<String, Value>) {
    let before = app.event_mark().await;
    let response = start_prefilling(app, fields).await;
    let error = envelope(response, StatusCode::BAD_REQUEST).await;
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .contains("more than 1000 fields"),
        "{error}"
    );
    let after = app.event_mark().await;
    assert_eq!(starts_between(&before, &after), 0);
}

#[tokio::test]
async fn a_prefill_that_would_give_the_customer_over_1000_fields_is_refused() {
    let app = spawn_app().await;
    let mut spektr_id = String::new();
    for round in 0..5 {
        spektr_id = prefill(&app, &numbered_fields(&format!("r{round}-"), 200)).await;
    }

    refused_prefill(&app, &numbered_fields("extra-", 1)).await;

    let fields = app.customer(&spektr_id).await["fields"].clone();
    assert_eq!(fields.as_object().expect("fields").len(), 1000);
    assert!(fields.get("extra-0").is_none());
    // Overwriting stored fields does not grow the customer, and a start without a prefill
    // still works.
    prefill(&app, &numbered_fields("r0-", 200)).await;
    app.start(PROCESS, REFUSED_REFERENCE).await;
}

#[tokio::test]
async fn a_customer_at_the_field_cap_can_still_submit_and_be_prefilled() {
    let app = spawn_app().await;
    let mut spektr_id = String::new();
    for round in 0..5 {
        let count = if round == 4 { 198 } else { 200 };
        spektr_id = prefill(&app, &numbered_fields(&format!("r{round}-"), count)).await;
    }
    let token = app.start_token(PROCESS, REFUSED_REFERENCE).await;

    // 998 fields and the payload's two make 1,000; the server's own `external_data_failure`
    // is not counted against the cap.
    let submitted = app
        .submit(
            &token,
            json!({"company_name": "Acme", "country_of_incorporation": "DK"}),
        )
        .await;
    assert_eq!(submitted.status(), StatusCode::OK);
    let fields = app.customer(&spektr_id).await["fields"].clone();
    assert_eq!(fields.as_object().expect("fields").len(), 1001);
    assert_eq!(fields["external_data_failure"], false);

    // Overwriting a stored field is still allowed; a new one is not.
    prefill(&app, &numbered_fields("r0-", 1)).await;
    refused_prefill(&app, &numbered_fields("extra-", 1)).await;
}

#[tokio::test]
async fn a_prefill_that_would_give_the_customer_over_256_kib_of_fields_is_refused() {
    let app = spawn_app().await;
    let big = |key: &str, bytes: usize| {
        serde_json::Map::from_iter([(key.to_owned(), json!("x".repeat(bytes)))])
    };
    let spektr_id = prefill(&app, &big("first", 200 * 1024)).await;

    refused_prefill(&app, &big("second", 100 * 1024)).await;

    let fields = app.customer(&spektr_id).await["fields"].clone();
    assert_eq!(
        fields
            .as_object()
            .expect("fields")
            .keys()
            .collect::<Vec<_>>(),
        ["first"]
    );
}

#[tokio::test]
async fn a_charset_other_than_utf_8_is_refused_with_415() {
    let app = spawn_app().await;

    for content_type in [
        "application/json; charset=latin1",
        "application/json; charset=\"iso-8859-1\"",
        "application/json;charset=utf-16",
    ] {
        refused_submit(
            &app,
            Some(content_type),
            submit_text(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        )
        .await;
        let error = refused_start(
            &app,
            Some(content_type),
            start_text(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        )
        .await;
        assert!(
            error["message"]
                .as_str()
                .expect("message")
                .contains("UTF-8")
        );
    }
}

#[tokio::test]
async fn a_utf_8_charset_in_any_case_is_accepted() {
    let app = spawn_app().await;

    for content_type in [
        "application/json; charset=UTF-8",
        "application/vnd.x+json;Charset=\"utf-8\"",
    ] {
        let response = post_raw(
            &app,
            &TestApp::start_path(PROCESS),
            Some(content_type),
            start_text(),
        )
        .await;
        assert_eq!(response.status(), StatusCode::CREATED, "{content_type}");
    }
}

#[tokio::test]
async fn a_compressed_body_is_refused_with_415() {
    let app = spawn_app().await;
    let (token, spektr_id) = pending_execution(&app).await;

    for encoding in ["gzip", "br", "identity, deflate"] {
        let response = app
            .client
            .post(app.url(&format!("/v3/public/actions/{token}")))
            .header("x-api-key", &app.api_key)
            .header(CONTENT_TYPE, "application/json")
            .header("content-encoding", encoding)
            .body(submit_text())
            .send()
            .await
            .expect("post");

        let error = envelope(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
        let message = error["message"].as_str().expect("message");
        assert!(message.contains("Content-Encoding"), "{message}");
        assert_untouched(&app, &token, &spektr_id).await;
    }

    let identity = app
        .client
        .post(app.url(&format!("/v3/public/actions/{token}")))
        .header("x-api-key", &app.api_key)
        .header(CONTENT_TYPE, "application/json")
        .header("content-encoding", "identity")
        .body(submit_text())
        .send()
        .await
        .expect("post");
    assert_eq!(identity.status(), StatusCode::OK);
}
