//! Webhook delivery through a real HTTP receiver: the admin API of endpoints, the guide's
//! events with their fields, Standard Webhooks signatures, filters, retries, redelivery, a
//! server killed mid-delivery, and several server processes sharing one database.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    ADMIN_TOKEN, PROCESS, TestApp, WORKSPACE, error_body, free_local_address, guide_process,
    on_postgres, spawn_app, spawn_app_with, spawn_server_process, wait_until_serving,
    webhooks_path,
};
use crate::receiver::{Received, Receiver, Reply};

const TIMED_PROCESS: &str = "kyb-timed";

fn valid_payload() -> Value {
    json!({"company_name": "External Company Ltd", "country_of_incorporation": "DK"})
}

fn text(value: &Value) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"))
        .to_owned()
}

/// Starts the guide's process for `reference` and submits a valid payload; returns the
/// execution id.
async fn start_and_submit(app: &TestApp, reference: &str) -> String {
    let token = app.start_token(PROCESS, reference).await;
    let execution_id = app.execution_id(&token).await;
    let response = app.submit(&token, valid_payload()).await;
    assert_eq!(response.status(), StatusCode::OK);
    execution_id
}

/// The requests about one execution (by `eventData.contextId`).
fn about<'a>(requests: &'a [Received], execution_id: &str) -> Vec<&'a Received> {
    requests
        .iter()
        .filter(|request| request.json()["eventData"]["contextId"] == execution_id)
        .collect()
}

/// The distinct `webhook-id`s of `requests`.
fn ids(requests: &[Received]) -> HashSet<String> {
    requests.iter().map(Received::webhook_id).collect()
}

/// An activity entry as a webhook carries it: the event body without `id` and `seq`.
fn body_of(entry: &Value) -> Value {
    let mut body = entry.clone();
    let object = body.as_object_mut().expect("object");
    object.remove("id");
    object.remove("seq");
    body
}

/// Polls `path` with the admin token on another server until `done` holds (bounded).
async fn wait_for_admin_json(
    client: &reqwest::Client,
    url: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let response = client
            .get(url)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("admin get");
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.expect("json");
        if done(&body) {
            return body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "waited for {what}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn settled(deliveries: &[Value], count: usize) -> bool {
    deliveries.len() >= count
        && deliveries
            .iter()
            .all(|delivery| delivery["status"] != "pending")
}

#[tokio::test]
async fn an_endpoint_is_registered_listed_read_updated_and_deleted() {
    let app = spawn_app().await;

    let created = app
        .create_webhook(json!({
            "url": "http://127.0.0.1:9/hook",
            "eventTypes": ["external_data_waiting"],
            "description": "Our integration"
        }))
        .await;

    let id = text(&created["id"]);
    assert_eq!(created["url"], "http://127.0.0.1:9/hook");
    assert_eq!(created["description"], "Our integration");
    assert_eq!(created["eventTypes"], json!(["external_data_waiting"]));
    assert_eq!(created["enabled"], true);
    assert!(created["createdAt"].is_i64(), "{created}");
    assert!(created["updatedAt"].is_i64(), "{created}");
    let secret = text(&created["secret"]);
    let key = secret.strip_prefix("whsec_").expect("whsec_ prefix");
    let key = base64::engine::general_purpose::STANDARD
        .decode(key)
        .expect("base64 key");
    assert!(key.len() >= 24, "a {}-byte key", key.len());

    let listed = app.admin_get(&webhooks_path(WORKSPACE)).await;
    assert_eq!(listed.status(), StatusCode::OK);
    let listed: Value = listed.json().await.expect("json");
    let mut expected = created.clone();
    expected.as_object_mut().expect("object").remove("secret");
    assert_eq!(listed, json!({"data": [expected.clone()]}));

    let path = format!("{}/{id}", webhooks_path(WORKSPACE));
    let read = app.admin_get(&path).await;
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(read.json::<Value>().await.expect("json"), expected);

    let updated = app
        .patch_webhook(
            &id,
            json!({"url": "http://127.0.0.1:10/other", "eventTypes": null,
                   "description": "Renamed", "enabled": false}),
        )
        .await;
    assert_eq!(updated["id"], created["id"]);
    assert_eq!(updated["url"], "http://127.0.0.1:10/other");
    assert_eq!(updated["eventTypes"], Value::Null);
    assert_eq!(updated["description"], "Renamed");
    assert_eq!(updated["enabled"], false);
    assert_eq!(updated["createdAt"], created["createdAt"]);
    assert!(updated["updatedAt"].as_i64() >= created["updatedAt"].as_i64());
    assert!(updated.get("secret").is_none(), "{updated}");
    let read: Value = app.admin_get(&path).await.json().await.expect("json");
    assert_eq!(read, updated);

    let partial = app.patch_webhook(&id, json!({"enabled": true})).await;
    assert_eq!(partial["enabled"], true);
    assert_eq!(partial["url"], "http://127.0.0.1:10/other");
    assert_eq!(partial["description"], "Renamed");

    let deleted = app.admin_request(Method::DELETE, &path, None).await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    error_body(app.admin_get(&path).await, StatusCode::NOT_FOUND).await;
    let listed: Value = app
        .admin_get(&webhooks_path(WORKSPACE))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(listed, json!({"data": []}));
}

#[tokio::test]
async fn an_endpoint_url_is_stored_as_it_was_parsed_so_listings_show_where_deliveries_go() {
    let app = spawn_app().await;

    // A backslash is a path separator in http URLs: this host is 127.0.0.1, not evil.example.
    let created = app
        .create_webhook(json!({"url": "HTTP://127.0.0.1:9\\@evil.example/h"}))
        .await;
    assert_eq!(created["url"], "http://127.0.0.1:9/@evil.example/h");
    let id = text(&created["id"]);
    let read: Value = app
        .admin_get(&format!("{}/{id}", webhooks_path(WORKSPACE)))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(read["url"], "http://127.0.0.1:9/@evil.example/h");

    let updated = app
        .patch_webhook(&id, json!({"url": "http://LOCALHOST:80/a/../b?x=1"}))
        .await;
    assert_eq!(updated["url"], "http://localhost/b?x=1");
}

#[tokio::test]
async fn invalid_urls_and_unknown_event_types_are_refused_with_400() {
    let app = spawn_app().await;
    let path = webhooks_path(WORKSPACE);

    for body in [
        json!({}),
        json!({"url": "not a url"}),
        json!({"url": "ftp://127.0.0.1/hook"}),
        json!({"url": 42}),
        json!({"url": "http://127.0.0.1:9/hook", "eventTypes": ["no_such_event"]}),
        json!({"url": "http://127.0.0.1:9/hook", "eventTypes": "external_data_waiting"}),
        json!({"url": "http://127.0.0.1:9/hook", "secret": "whsec_AAAA"}),
        json!({"url": "http://user:password@127.0.0.1:9/hook"}),
        json!({"url": "http://user@127.0.0.1:9/hook"}),
    ] {
        let response = app
            .admin_request(Method::POST, &path, Some(body.clone()))
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        error_body(response, StatusCode::BAD_REQUEST).await;
    }

    let created = app
        .create_webhook(json!({"url": "http://127.0.0.1:9/hook"}))
        .await;
    let endpoint = format!("{path}/{}", text(&created["id"]));
    for body in [
        json!({"url": "not a url"}),
        json!({"url": "http://user:password@127.0.0.1:9/hook"}),
        json!({"eventTypes": ["no_such_event"]}),
        json!({"enabled": "yes"}),
    ] {
        let response = app
            .admin_request(Method::PATCH, &endpoint, Some(body.clone()))
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
    }
    let unchanged: Value = app.admin_get(&endpoint).await.json().await.expect("json");
    assert_eq!(unchanged["url"], "http://127.0.0.1:9/hook");
    assert_eq!(unchanged["eventTypes"], Value::Null);
}

#[tokio::test]
async fn repeated_event_types_are_kept_once_in_the_order_given() {
    let app = spawn_app().await;
    let waiting = "external_data_waiting";
    let started = "process_started";

    let created = app
        .create_webhook(json!({"url": "http://127.0.0.1:9/hook",
                               "eventTypes": [waiting, started, waiting, started]}))
        .await;
    assert_eq!(created["eventTypes"], json!([waiting, started]));

    let patched = app
        .patch_webhook(
            &text(&created["id"]),
            json!({"eventTypes": [started, started, waiting]}),
        )
        .await;
    assert_eq!(patched["eventTypes"], json!([started, waiting]));
}

#[tokio::test]
async fn the_operators_host_lists_refuse_endpoints_at_registration() {
    let app = spawn_app_with(|config| {
        config.webhook_denied_hosts = "127.0.0.2".to_owned();
        config.webhook_allowed_hosts = "127.0.0.1,127.0.0.2,.example.com".to_owned();
    })
    .await;
    let path = webhooks_path(WORKSPACE);

    for url in ["http://127.0.0.2/hook", "https://example.org/hook"] {
        let response = app
            .admin_request(Method::POST, &path, Some(json!({"url": url})))
            .await;
        error_body(response, StatusCode::BAD_REQUEST).await;
    }
    for url in ["http://127.0.0.1:9/hook", "https://hooks.example.com/hook"] {
        app.create_webhook(json!({"url": url})).await;
    }
}

#[tokio::test]
async fn webhook_routes_answer_404_for_unknown_workspaces_endpoints_and_events() {
    let app = spawn_app().await;
    let other_key = app.other_workspace("ws-other").await;
    let theirs = app
        .admin_request(
            Method::POST,
            &webhooks_path("ws-other"),
            Some(json!({"url": "http://127.0.0.1:9/hook"})),
        )
        .await;
    assert_eq!(theirs.status(), StatusCode::CREATED);
    let theirs: Value = theirs.json().await.expect("json");
    let their_id = text(&theirs["id"]);
    let unknown = uuid::Uuid::new_v4().to_string();

    let create = app
        .admin_request(
            Method::POST,
            &webhooks_path("ws-missing"),
            Some(json!({"url": "http://127.0.0.1:9/hook"})),
        )
        .await;
    error_body(create, StatusCode::NOT_FOUND).await;

    let ours = webhooks_path(WORKSPACE);
    for id in [their_id.as_str(), unknown.as_str(), "not-a-uuid"] {
        let endpoint = format!("{ours}/{id}");
        for (method, path, body) in [
            (Method::GET, endpoint.clone(), None),
            (
                Method::PATCH,
                endpoint.clone(),
                Some(json!({"enabled": false})),
            ),
            (Method::POST, format!("{endpoint}/rotate-secret"), None),
            (Method::GET, format!("{endpoint}/deliveries"), None),
            (Method::DELETE, endpoint.clone(), None),
        ] {
            let response = app.admin_request(method.clone(), &path, body).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{method} {path}");
        }
    }
    // The other workspace's endpoint is untouched.
    let read = app
        .admin_get(&format!("{}/{their_id}", webhooks_path("ws-other")))
        .await;
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(read.json::<Value>().await.expect("json")["enabled"], true);

    // Another workspace's event cannot be redelivered from this one.
    let started = app
        .client
        .post(app.url("/v2/public/actions/processId/kyb-onboarding/workspaceId/ws-other"))
        .header("x-api-key", &other_key)
        .json(&json!({"data": {"reference": "theirs"}}))
        .send()
        .await
        .expect("start");
    assert_eq!(started.status(), StatusCode::CREATED);
    let feed = app.wait_for_feed(&other_key, "0", 2).await;
    let their_event = text(&feed["data"][0]["id"]);
    for event in [their_event.as_str(), unknown.as_str(), "not-a-uuid"] {
        let path = format!("/admin/v1/workspaces/{WORKSPACE}/events/{event}/redeliver");
        let response = app.admin_request(Method::POST, &path, None).await;
        error_body(response, StatusCode::NOT_FOUND).await;
    }

    // Listing the endpoints of a workspace that does not exist is a 404 too, as creating one.
    let listed = app.admin_get(&webhooks_path("ws-missing")).await;
    assert_eq!(
        listed.status(),
        StatusCode::NOT_FOUND,
        "GET {} of a missing workspace",
        webhooks_path("ws-missing")
    );
    error_body(listed, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn webhook_admin_routes_require_the_admin_token() {
    let app = spawn_app().await;
    let path = webhooks_path(WORKSPACE);

    let without = app
        .client
        .post(app.url(&path))
        .json(&json!({"url": "http://127.0.0.1:9/hook"}))
        .send()
        .await
        .expect("post");
    error_body(without, StatusCode::UNAUTHORIZED).await;
    let with_api_key = app
        .client
        .get(app.url(&path))
        .header("x-api-key", &app.api_key)
        .send()
        .await
        .expect("get");
    error_body(with_api_key, StatusCode::UNAUTHORIZED).await;
    let wrong = app
        .client
        .get(app.url(&path))
        .bearer_auth("not-the-admin-token-0123456789")
        .send()
        .await
        .expect("get");
    error_body(wrong, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn all_three_guide_events_and_the_lifecycle_events_arrive_with_the_guides_fields() {
    let app = spawn_app().await;
    app.put_process(TIMED_PROCESS, guide_process(Some(0.3)))
        .await;
    let receiver = Receiver::start().await;
    app.create_webhook(json!({"url": receiver.url})).await;

    let started = app.start(PROCESS, "customer-1").await;
    let token = text(&started["token"]);
    let submitted_id = app.execution_id(&token).await;
    let response = app.submit(&token, valid_payload()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let timed = app.start(TIMED_PROCESS, "customer-2").await;
    let timed_out_id = app.execution_id(&text(&timed["token"])).await;

    let requests = receiver
        .wait_until("eight distinct events", |requests| ids(requests).len() >= 8)
        .await;

    assert_eq!(requests.len(), 8, "each event once");
    let mut activity = app.activity(&submitted_id).await;
    activity.extend(app.activity(&timed_out_id).await);
    let by_id: HashMap<String, &Value> = activity
        .iter()
        .map(|entry| (text(&entry["id"]), entry))
        .collect();
    assert_eq!(ids(&requests), by_id.keys().cloned().collect());
    for request in &requests {
        assert_eq!(request.method, Method::POST);
        assert_eq!(request.path, "/hook");
        assert!(
            request
                .header("content-type")
                .starts_with("application/json"),
            "{:?}",
            request.headers
        );
        assert!(
            request.header("webhook-timestamp").parse::<i64>().is_ok(),
            "{:?}",
            request.headers
        );
        assert!(
            request.header("webhook-signature").starts_with("v1,"),
            "{:?}",
            request.headers
        );
        assert_eq!(request.json(), body_of(by_id[&request.webhook_id()]));
    }

    let common = |execution_id: &str, process: &str, reference: &str, spektr_id: &Value| {
        let requests = about(&requests, execution_id);
        let mut types = Vec::new();
        for request in &requests {
            let body = request.json();
            assert_eq!(body["workspaceId"], WORKSPACE);
            assert_eq!(&body["spektrId"], spektr_id);
            assert!(body["createdAt"].is_i64(), "{body}");
            let data = &body["eventData"];
            assert_eq!(data["contextId"], execution_id);
            assert_eq!(data["processId"], process);
            assert_eq!(data["processName"], "KYB onboarding");
            assert_eq!(data["processType"], "onboarding");
            assert_eq!(data["reference"], reference);
            types.push((body["type"].as_str().unwrap_or_default().to_owned(), body));
        }
        types
    };
    let of_type = |events: &[(String, Value)], kind: &str| -> Value {
        let matching: Vec<&Value> = events
            .iter()
            .filter(|(event_type, _)| event_type == kind)
            .map(|(_, body)| body)
            .collect();
        assert_eq!(matching.len(), 1, "one {kind}: {matching:?}");
        matching[0].clone()
    };
    let expected_fields = json!([
        {"spektrDataField": "company_name", "type": "string", "required": true},
        {"spektrDataField": "country_of_incorporation", "type": "country", "required": true}
    ]);
    let step = json!({
        "stepType": "externalData",
        "stepId": "company-payload",
        "stepTitle": "Wait for company payload",
    });
    let with_step = |data: &Value, extra: Value| {
        for (key, value) in step.as_object().expect("object") {
            assert_eq!(&data[key], value, "{key} in {data}");
        }
        for (key, value) in extra.as_object().expect("object") {
            assert_eq!(&data[key], value, "{key} in {data}");
        }
    };

    let submitted = common(&submitted_id, PROCESS, "customer-1", &started["spektrId"]);
    assert_eq!(submitted.len(), 4);
    of_type(&submitted, "process_started");
    let waiting = of_type(&submitted, "external_data_waiting");
    with_step(
        &waiting["eventData"],
        json!({"expectedFields": expected_fields}),
    );
    assert!(
        waiting["eventData"].get("expiresAt").is_none(),
        "no timeout: {waiting}"
    );
    let received = of_type(&submitted, "external_data_received");
    with_step(&received["eventData"], json!({"data": valid_payload()}));
    let completed = of_type(&submitted, "process_completed");
    assert_eq!(completed["eventData"]["outcome"], "approved");

    let timed_out = common(
        &timed_out_id,
        TIMED_PROCESS,
        "customer-2",
        &timed["spektrId"],
    );
    assert_eq!(timed_out.len(), 4);
    of_type(&timed_out, "process_started");
    let waiting = of_type(&timed_out, "external_data_waiting");
    with_step(
        &waiting["eventData"],
        json!({"expectedFields": expected_fields}),
    );
    let expires_at = waiting["eventData"]["expiresAt"]
        .as_i64()
        .expect("expiresAt");
    assert_eq!(
        expires_at,
        waiting["createdAt"].as_i64().expect("createdAt") + 300
    );
    let expired = of_type(&timed_out, "external_data_timed_out");
    with_step(&expired["eventData"], json!({"expiresAt": expires_at}));
    let completed = of_type(&timed_out, "process_completed");
    assert_eq!(completed["eventData"]["outcome"], "manual_review");
}

#[tokio::test]
async fn deliveries_verify_with_an_independent_standard_webhooks_implementation() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let endpoint = app.create_webhook(json!({"url": receiver.url})).await;
    let secret = text(&endpoint["secret"]);

    start_and_submit(&app, "customer-1").await;
    let requests = receiver.wait_for(4).await;

    for request in &requests {
        request
            .verify(&secret)
            .unwrap_or_else(|error| panic!("{error}: {:?} {}", request.headers, request.body));
        let mut tampered = request.clone();
        tampered.body = tampered.body.replace("customer-1", "customer-2");
        assert_ne!(tampered.body, request.body);
        assert!(tampered.verify(&secret).is_err(), "a changed body verifies");
    }
    let other_secret = text(
        &app.create_webhook(json!({"url": "http://127.0.0.1:9/hook"}))
            .await["secret"],
    );
    assert!(requests[0].verify(&other_secret).is_err());
}

#[tokio::test]
async fn after_rotating_the_secret_new_deliveries_verify_with_the_new_secret_only() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let endpoint = app
        .create_webhook(json!({"url": receiver.url, "eventTypes": ["external_data_waiting"]}))
        .await;
    let id = text(&endpoint["id"]);
    let old_secret = text(&endpoint["secret"]);
    let first = app.start_token(PROCESS, "customer-1").await;
    let first = app.execution_id(&first).await;
    let before = receiver.wait_for(1).await;
    before[0].verify(&old_secret).expect("verifies");

    let rotated = app
        .admin_request(
            Method::POST,
            &format!("{}/{id}/rotate-secret", webhooks_path(WORKSPACE)),
            None,
        )
        .await;
    assert_eq!(rotated.status(), StatusCode::OK);
    let rotated: Value = rotated.json().await.expect("json");
    let new_secret = text(&rotated["secret"]);
    assert!(new_secret.starts_with("whsec_"), "{new_secret}");
    assert_ne!(new_secret, old_secret);
    assert_eq!(rotated["id"], endpoint["id"]);
    assert_eq!(rotated["url"], endpoint["url"]);
    let read: Value = app
        .admin_get(&format!("{}/{id}", webhooks_path(WORKSPACE)))
        .await
        .json()
        .await
        .expect("json");
    assert!(read.get("secret").is_none(), "{read}");

    let second = app.start_token(PROCESS, "customer-2").await;
    let second = app.execution_id(&second).await;
    let requests = receiver.wait_for(2).await;

    assert_eq!(about(&requests, &first).len(), 1);
    let after = about(&requests, &second);
    assert_eq!(after.len(), 1, "{requests:?}");
    after[0]
        .verify(&new_secret)
        .expect("verifies with the new secret");
    assert!(
        after[0].verify(&old_secret).is_err(),
        "still verifies with the old secret"
    );
}

#[tokio::test]
async fn an_endpoint_subscribed_to_waiting_events_receives_only_those() {
    let app = spawn_app().await;
    let (everything, waiting_only) = (Receiver::start().await, Receiver::start().await);
    app.create_webhook(json!({"url": everything.url})).await;
    let filtered = app
        .create_webhook(json!({"url": waiting_only.url, "eventTypes": ["external_data_waiting"]}))
        .await;
    let filtered_id = text(&filtered["id"]);

    let first = start_and_submit(&app, "customer-1").await;
    everything.wait_for(4).await;
    let got = waiting_only.wait_for(1).await;

    assert_eq!(got[0].event_type(), "external_data_waiting");
    assert_eq!(got[0].json()["eventData"]["contextId"], first);
    // Deliveries are queued with the event, so all of them exist by now.
    let queued = app.deliveries(&filtered_id).await;
    assert_eq!(queued.len(), 1, "{}", Value::from(queued.clone()));
    assert_eq!(queued[0]["eventType"], "external_data_waiting");

    // Changing the filter applies to later events.
    app.patch_webhook(
        &filtered_id,
        json!({"eventTypes": ["external_data_received", "process_completed"]}),
    )
    .await;
    let second = start_and_submit(&app, "customer-2").await;
    everything.wait_for(8).await;
    let got = waiting_only.wait_for(3).await;
    let later: Vec<String> = about(&got, &second)
        .iter()
        .map(|request| request.event_type())
        .collect();
    assert_eq!(
        later.iter().collect::<HashSet<_>>(),
        HashSet::from([
            &"external_data_received".to_owned(),
            &"process_completed".to_owned()
        ])
    );
    assert_eq!(app.deliveries(&filtered_id).await.len(), 3);
    assert_eq!(waiting_only.requests().len(), 3);
}

#[tokio::test]
async fn disabled_and_deleted_endpoints_receive_nothing() {
    let app = spawn_app().await;
    let control = Receiver::start().await;
    let (disabled, deleted) = (Receiver::start().await, Receiver::start().await);
    app.create_webhook(json!({"url": control.url})).await;
    let disabled_endpoint = app.create_webhook(json!({"url": disabled.url})).await;
    let disabled_id = text(&disabled_endpoint["id"]);
    let deleted_endpoint = app.create_webhook(json!({"url": deleted.url})).await;
    app.patch_webhook(&disabled_id, json!({"enabled": false}))
        .await;
    let response = app
        .admin_request(
            Method::DELETE,
            &format!(
                "{}/{}",
                webhooks_path(WORKSPACE),
                text(&deleted_endpoint["id"])
            ),
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    start_and_submit(&app, "customer-1").await;
    control.wait_for(4).await;

    // Deliveries are queued in the event's transaction: none were queued for these two.
    assert!(app.deliveries(&disabled_id).await.is_empty());
    assert!(disabled.requests().is_empty());
    assert!(deleted.requests().is_empty());

    // Enabled again, it receives later events (only).
    app.patch_webhook(&disabled_id, json!({"enabled": true}))
        .await;
    let token = app.start_token(PROCESS, "customer-2").await;
    let second = app.execution_id(&token).await;
    control.wait_for(6).await;
    let got = disabled.wait_for(2).await;
    assert_eq!(about(&got, &second).len(), 2, "{got:?}");
    assert_eq!(got.len(), 2);
    assert!(deleted.requests().is_empty());
}

#[tokio::test]
async fn a_receiver_that_fails_twice_then_recovers_gets_the_event_again_with_the_same_webhook_id() {
    let app = spawn_app_with(|config| config.webhook_retry_schedule = "0.2,0.2,0.2".into()).await;
    let receiver = Receiver::failing_first(2).await;
    let endpoint = app
        .create_webhook(json!({"url": receiver.url, "eventTypes": ["external_data_waiting"]}))
        .await;
    let endpoint_id = text(&endpoint["id"]);
    let secret = text(&endpoint["secret"]);

    let token = app.start_token(PROCESS, "customer-1").await;
    let activity = app.activity(&app.execution_id(&token).await).await;
    let event_id = text(&activity[1]["id"]);
    let requests = receiver.wait_for(3).await;

    assert_eq!(requests.len(), 3);
    for request in &requests {
        assert_eq!(request.webhook_id(), event_id);
        assert_eq!(request.json(), body_of(&activity[1]));
        request.verify(&secret).expect("every attempt verifies");
    }
    let deliveries = app
        .wait_for_deliveries(&endpoint_id, "the delivery to settle", |deliveries| {
            settled(deliveries, 1)
        })
        .await;
    assert_eq!(deliveries.len(), 1);
    let delivery = &deliveries[0];
    assert_eq!(delivery["eventId"], event_id.as_str());
    assert_eq!(delivery["eventType"], "external_data_waiting");
    assert_eq!(delivery["status"], "succeeded");
    assert_eq!(delivery["nextAttemptAt"], Value::Null);
    assert_eq!(delivery["lastError"], Value::Null);
    let attempts = delivery["attempts"].as_array().expect("attempts");
    let numbers: Vec<&Value> = attempts.iter().map(|attempt| &attempt["attempt"]).collect();
    assert_eq!(numbers, [&json!(1), &json!(2), &json!(3)]);
    let statuses: Vec<&Value> = attempts
        .iter()
        .map(|attempt| &attempt["responseStatus"])
        .collect();
    assert_eq!(statuses, [&json!(500), &json!(500), &json!(200)]);
    assert!(attempts[0]["error"].is_string(), "{delivery}");
    assert_eq!(attempts[2]["error"], Value::Null);
    for attempt in attempts {
        assert!(attempt["startedAt"].is_i64(), "{attempt}");
        assert!(attempt["durationMs"].as_i64().is_some_and(|ms| ms >= 0));
    }
    assert!(attempts[0]["startedAt"].as_i64() <= attempts[1]["startedAt"].as_i64());
    assert!(attempts[1]["startedAt"].as_i64() <= attempts[2]["startedAt"].as_i64());
    assert_eq!(receiver.requests().len(), 3, "no attempt after the success");
}

#[tokio::test]
async fn a_receiver_that_always_fails_ends_failed_after_the_last_scheduled_retry() {
    let app = spawn_app_with(|config| config.webhook_retry_schedule = "0.1,0.1".into()).await;
    let receiver = Receiver::scripted(|_| Reply::Status(500)).await;
    let endpoint = app
        .create_webhook(json!({"url": receiver.url, "eventTypes": ["external_data_waiting"]}))
        .await;
    let endpoint_id = text(&endpoint["id"]);

    app.start_token(PROCESS, "customer-1").await;
    let deliveries = app
        .wait_for_deliveries(&endpoint_id, "the delivery to settle", |deliveries| {
            settled(deliveries, 1)
        })
        .await;

    let delivery = &deliveries[0];
    assert_eq!(delivery["status"], "failed", "{delivery}");
    assert_eq!(delivery["nextAttemptAt"], Value::Null);
    assert!(
        delivery["lastError"]
            .as_str()
            .is_some_and(|error| error.contains("500")),
        "{delivery}"
    );
    let attempts = delivery["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 3, "{delivery}");
    assert!(
        attempts
            .iter()
            .all(|attempt| attempt["responseStatus"] == 500)
    );
    let requests = receiver.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(ids(&requests).len(), 1);
}

#[tokio::test]
async fn unreachable_and_silent_receivers_are_retried_and_their_errors_recorded() {
    let app = spawn_app_with(|config| {
        config.webhook_retry_schedule = "0.1,0.1".into();
        config.webhook_timeout_ms = 500;
    })
    .await;
    // A bound socket that does not listen: its port stays reserved and refuses connections.
    let reserved = tokio::net::TcpSocket::new_v4().expect("socket");
    reserved
        .bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind");
    let closed = format!("http://{}/hook", reserved.local_addr().expect("address"));
    let unreachable = app
        .create_webhook(json!({"url": closed, "eventTypes": ["external_data_waiting"]}))
        .await;
    let silent_receiver = Receiver::hanging_first().await;
    let silent = app
        .create_webhook(
            json!({"url": silent_receiver.url, "eventTypes": ["external_data_waiting"]}),
        )
        .await;

    app.start_token(PROCESS, "customer-1").await;

    let deliveries = app
        .wait_for_deliveries(&text(&unreachable["id"]), "failure", |deliveries| {
            settled(deliveries, 1)
        })
        .await;
    assert_eq!(deliveries[0]["status"], "failed");
    let attempts = deliveries[0]["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 3);
    for attempt in attempts {
        assert_eq!(attempt["responseStatus"], Value::Null, "{attempt}");
        assert!(
            attempt["error"]
                .as_str()
                .is_some_and(|error| !error.is_empty()),
            "{attempt}"
        );
    }

    let deliveries = app
        .wait_for_deliveries(&text(&silent["id"]), "success", |deliveries| {
            settled(deliveries, 1)
        })
        .await;
    assert_eq!(deliveries[0]["status"], "succeeded");
    let attempts = deliveries[0]["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2, "{}", deliveries[0]);
    assert_eq!(attempts[0]["responseStatus"], Value::Null);
    assert!(
        attempts[0]["error"]
            .as_str()
            .is_some_and(|error| error.contains("timed out")),
        "{}",
        attempts[0]
    );
    assert_eq!(attempts[1]["responseStatus"], 200);
    let requests = silent_receiver.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(ids(&requests).len(), 1);
}

#[tokio::test]
async fn redelivering_an_event_sends_it_again_with_the_same_webhook_id() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let endpoint = app
        .create_webhook(json!({"url": receiver.url, "eventTypes": ["external_data_waiting"]}))
        .await;
    let endpoint_id = text(&endpoint["id"]);
    let token = app.start_token(PROCESS, "customer-1").await;
    let activity = app.activity(&app.execution_id(&token).await).await;
    let (started_id, waiting_id) = (text(&activity[0]["id"]), text(&activity[1]["id"]));
    receiver.wait_for(1).await;
    app.wait_for_deliveries(&endpoint_id, "the first delivery", |deliveries| {
        settled(deliveries, 1)
    })
    .await;

    let path = format!("/admin/v1/workspaces/{WORKSPACE}/events/{waiting_id}/redeliver");
    let response = app.admin_request(Method::POST, &path, None).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(
        response.json::<Value>().await.expect("json"),
        json!({"queued": 1})
    );
    let requests = receiver.wait_for(2).await;

    assert_eq!(requests[1].webhook_id(), waiting_id);
    assert_eq!(requests[1].body, requests[0].body);
    requests[1]
        .verify(&text(&endpoint["secret"]))
        .expect("verifies");
    let deliveries = app
        .wait_for_deliveries(&endpoint_id, "the redelivery", |deliveries| {
            settled(deliveries, 2)
        })
        .await;
    assert!(
        deliveries
            .iter()
            .all(|delivery| delivery["eventId"] == waiting_id.as_str()
                && delivery["status"] == "succeeded"),
        "{}",
        Value::from(deliveries)
    );

    // An event the endpoint does not subscribe to queues nothing.
    let path = format!("/admin/v1/workspaces/{WORKSPACE}/events/{started_id}/redeliver");
    let response = app.admin_request(Method::POST, &path, None).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(
        response.json::<Value>().await.expect("json"),
        json!({"queued": 0})
    );
    assert_eq!(app.deliveries(&endpoint_id).await.len(), 2);
}

#[tokio::test]
async fn a_hanging_receiver_does_not_hold_up_deliveries_to_another_endpoint() {
    let app = spawn_app_with(|config| {
        config.webhook_concurrency = 4;
        config.webhook_endpoint_concurrency = 2;
        config.webhook_timeout_ms = 60_000;
    })
    .await;
    let hanging = Receiver::scripted(|_| Reply::Hang).await;
    let healthy = Receiver::start().await;
    app.create_webhook(json!({"url": hanging.url})).await;
    app.create_webhook(json!({"url": healthy.url})).await;

    for index in 0..10 {
        app.start_token(PROCESS, &format!("customer-{index}")).await;
    }

    let requests = healthy
        .wait_until("every event at the healthy receiver", |requests| {
            ids(requests).len() >= 20
        })
        .await;
    assert_eq!(ids(&requests).len(), 20);
    assert!(
        hanging.requests().len() <= 2,
        "{} requests in flight to one endpoint",
        hanging.requests().len()
    );
}

#[tokio::test]
async fn a_server_killed_mid_delivery_loses_nothing() {
    let app = spawn_app_with(|config| config.delivery_enabled = false).await;
    let receiver = Receiver::hanging_first().await;
    let endpoint = app
        .create_webhook(json!({"url": receiver.url, "eventTypes": ["external_data_waiting"]}))
        .await;
    let (endpoint_id, secret) = (text(&endpoint["id"]), text(&endpoint["secret"]));
    let token = app.start_token(PROCESS, "customer-1").await;
    let activity = app.activity(&app.execution_id(&token).await).await;
    let event_id = text(&activity[1]["id"]);
    let database_url = app.database_url.clone();
    // SQLite serves one process at a time (see the README): there the test server steps aside
    // before the delivering processes start; on Postgres it keeps running beside them.
    let _app = if on_postgres() {
        Some(app)
    } else {
        app.stop().await;
        None
    };
    // A lease of 2 × 2 s + 5 s.
    let env = [("SPEKTR_WEBHOOK_TIMEOUT_MS", "2000")];

    let mut first = spawn_server_process(&database_url, "127.0.0.1:0", &env);
    let requests = receiver.wait_for(1).await;
    assert!(first.is_running(), "the first server died by itself");
    first.kill();
    let address = free_local_address();
    let _second = spawn_server_process(&database_url, &address, &env);
    let requests_after = receiver.wait_for(2).await;

    assert_eq!(requests[0].webhook_id(), event_id);
    assert_eq!(requests_after[1].webhook_id(), event_id);
    assert_eq!(requests_after[1].body, requests[0].body);
    assert_eq!(requests_after[1].json(), body_of(&activity[1]));
    requests_after[1].verify(&secret).expect("verifies");
    let base = format!("http://{address}");
    let client = reqwest::Client::new();
    wait_until_serving(&client, &base).await;
    let deliveries = wait_for_admin_json(
        &client,
        &format!(
            "{base}{}/{endpoint_id}/deliveries",
            webhooks_path(WORKSPACE)
        ),
        "the delivery to succeed",
        |body| body["data"][0]["status"] == "succeeded",
    )
    .await;
    let attempts = deliveries["data"][0]["attempts"]
        .as_array()
        .expect("attempts");
    assert_eq!(attempts.len(), 2, "{deliveries}");
    assert_eq!(attempts[0]["attempt"], 1);
    let abandoned = attempts[0]["error"].as_str().unwrap_or_default();
    assert!(abandoned.starts_with("abandoned"), "{deliveries}");
    assert_eq!(attempts[1]["attempt"], 2);
    assert_eq!(attempts[1]["responseStatus"], 200, "{deliveries}");
    assert_eq!(receiver.requests().len(), 2);
}

#[tokio::test]
async fn two_server_processes_deliver_each_event_to_each_endpoint_once() {
    // SQLite is for one process (see the README): there the test server delivers alone.
    let processes = if on_postgres() { 2 } else { 0 };
    let app = spawn_app_with(|config| config.delivery_enabled = processes == 0).await;
    let receivers = [Receiver::start().await, Receiver::start().await];
    let mut endpoints = Vec::new();
    for receiver in &receivers {
        let endpoint = app.create_webhook(json!({"url": receiver.url})).await;
        endpoints.push(text(&endpoint["id"]));
    }
    let mut workers: Vec<_> = (0..processes)
        .map(|_| spawn_server_process(&app.database_url, "127.0.0.1:0", &[]))
        .collect();

    let executions = 40;
    futures::future::join_all((0..8).map(|worker| {
        let app = &app;
        async move {
            for index in (worker..executions).step_by(8) {
                let token = app.start_token(PROCESS, &format!("bulk-{index}")).await;
                if index % 2 == 0 {
                    let response = app.submit(&token, valid_payload()).await;
                    assert_eq!(response.status(), StatusCode::OK);
                }
            }
        }
    }))
    .await;
    let feed = app
        .wait_for_feed(&app.api_key, "0", executions * 2 + executions)
        .await;
    let events: HashSet<String> = feed["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|event| text(&event["id"]))
        .collect();
    assert_eq!(events.len(), executions * 2 + executions);

    for (receiver, endpoint_id) in receivers.iter().zip(&endpoints) {
        receiver
            .wait_until("every event", |requests| ids(requests).is_superset(&events))
            .await;
        let deliveries = app
            .wait_for_deliveries(endpoint_id, "every delivery to settle", |deliveries| {
                settled(deliveries, events.len())
            })
            .await;
        assert_eq!(deliveries.len(), events.len());
        for delivery in &deliveries {
            assert_eq!(delivery["status"], "succeeded", "{delivery}");
            assert_eq!(
                delivery["attempts"].as_array().map(Vec::len),
                Some(1),
                "{delivery}"
            );
        }
        let mut counts: HashMap<String, usize> = HashMap::new();
        for request in receiver.requests() {
            *counts.entry(request.webhook_id()).or_default() += 1;
        }
        let twice: Vec<_> = counts.iter().filter(|(_, count)| **count > 1).collect();
        assert!(twice.is_empty(), "delivered more than once: {twice:?}");
        assert_eq!(counts.keys().cloned().collect::<HashSet<_>>(), events);
    }
    for worker in &mut workers {
        assert!(worker.is_running(), "a server process died");
    }
}
