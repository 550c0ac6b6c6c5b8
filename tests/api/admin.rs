//! The admin API and tenancy.

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{
    ADMIN_TOKEN, PROCESS, TestApp, WORKSPACE, error_body, guide_process, spawn_app, spawn_app_with,
};

#[tokio::test]
async fn workspaces_are_created_then_updated_idempotently() {
    let app = spawn_app().await;
    let url = app.url("/admin/v1/workspaces/acme");

    let first = app
        .client
        .put(&url)
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "Acme"}))
        .send()
        .await
        .expect("put");
    let second = app
        .client
        .put(&url)
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "Acme 2"}))
        .send()
        .await
        .expect("put");

    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(
        second.json::<Value>().await.expect("json"),
        json!({"id": "acme", "name": "Acme 2"})
    );
}

#[tokio::test]
async fn a_workspace_body_with_unknown_properties_or_a_control_character_is_refused() {
    let app = spawn_app().await;
    let path = "/admin/v1/workspaces/acme";
    app.admin_put(path, json!({"name": "Acme"})).await;

    for body in [
        json!({"name": "Acme 2", "apiKeys": ["k"]}),
        json!(["Acme 2"]),
        json!({"name": "Acme\nInc"}),
    ] {
        let response = app
            .client
            .put(app.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("put");
        let error = error_body(response, StatusCode::BAD_REQUEST).await;
        assert!(error["message"].as_str().unwrap().len() > 10, "{error}");
    }
    let unchanged = app
        .client
        .put(app.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "Acme"}))
        .send()
        .await
        .expect("put");
    assert_eq!(unchanged.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_admin_api_needs_the_admin_token() {
    let app = spawn_app().await;
    let url = app.url(&format!("/admin/v1/workspaces/{WORKSPACE}/api-keys"));

    let missing = app.client.post(&url).send().await.expect("post");
    error_body(missing, StatusCode::UNAUTHORIZED).await;
    let wrong = app
        .client
        .post(&url)
        .bearer_auth("wrong-token-0123456789")
        .send()
        .await
        .expect("post");
    error_body(wrong, StatusCode::UNAUTHORIZED).await;
    let api_key = app
        .client
        .post(&url)
        .bearer_auth(&app.api_key)
        .send()
        .await
        .expect("post");
    error_body(api_key, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn without_an_admin_token_the_admin_api_does_not_exist() {
    let app = spawn_app_with(|_| {}).await;
    let disabled = crate::helpers::start_server(&app.database_url, |config| {
        config.admin_token = None;
    })
    .await;

    let response = disabled
        .client
        .put(disabled.url("/admin/v1/workspaces/x"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "x"}))
        .send()
        .await
        .expect("put");

    error_body(response, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn api_keys_for_unknown_workspaces_are_refused() {
    let app = spawn_app().await;

    let response = app
        .client
        .post(app.url("/admin/v1/workspaces/nope/api-keys"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("post");

    error_body(response, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn invalid_definitions_are_refused_naming_each_problem() {
    let app = spawn_app().await;
    let definition = json!({
        "name": "Broken",
        "type": "onboarding",
        "steps": [
            {"id": "a", "type": "externalData", "title": "A", "expectedFields": []},
            {"id": "b", "type": "externalData", "title": "B", "expectedFields": [
                {"spektrDataField": "x", "type": "string", "required": true},
                {"spektrDataField": "x", "type": "colour", "required": true}
            ], "routes": [{"when": {"field": "x", "equals": 1}, "goto": "missing"}]},
            {"id": "c", "type": "teleport"}
        ]
    });

    let response = app
        .client
        .put(app.url(&format!(
            "/admin/v1/workspaces/{WORKSPACE}/processes/broken"
        )))
        .bearer_auth(ADMIN_TOKEN)
        .json(&definition)
        .send()
        .await
        .expect("put");

    let body = error_body(response, StatusCode::BAD_REQUEST).await;
    let problems = body["details"]["problems"].to_string();
    for expected in [
        "steps[0]: 'expectedFields' must be a non-empty array",
        "duplicate field key 'x'",
        "unknown field type 'colour'",
        "route to unknown step 'missing'",
        "unknown step type 'teleport'",
    ] {
        assert!(
            problems.contains(expected),
            "missing {expected:?} in {problems}"
        );
    }
}

#[tokio::test]
async fn a_changed_definition_applies_to_new_executions_only() {
    let app = spawn_app().await;
    let old_token = app.start_token(PROCESS, "before").await;
    let mut changed = guide_process(None);
    changed["steps"][0]["expectedFields"] =
        json!([{"spektrDataField": "vat_number", "type": "string", "required": true}]);

    let put = app.put_process(PROCESS, changed.clone()).await;
    let again = app.put_process(PROCESS, changed).await;
    let new_token = app.start_token(PROCESS, "after").await;

    assert_eq!(put["version"], 2);
    assert_eq!(again["version"], 2);
    let old = app.current_step_json(&old_token).await;
    assert_eq!(
        old["node"]["expectedFields"][0]["spektrDataField"],
        "company_name"
    );
    let new = app.current_step_json(&new_token).await;
    assert_eq!(
        new["node"]["expectedFields"][0]["spektrDataField"],
        "vat_number"
    );

    // A restarted server knows no definition yet and reads each version it is asked for.
    let (database_url, api_key) = (app.database_url.clone(), app.api_key.clone());
    app.stop().await;
    let mut restarted = crate::helpers::start_server(&database_url, |_| {}).await;
    restarted.api_key = api_key;
    for (token, field) in [(&old_token, "company_name"), (&new_token, "vat_number")] {
        let step = restarted.current_step_json(token).await;
        assert_eq!(step["node"]["expectedFields"][0]["spektrDataField"], field);
    }
}

#[tokio::test]
async fn another_workspaces_key_sees_nothing() {
    let app = spawn_app().await;
    let started = app.start(PROCESS, "customer-1").await;
    let token = started["token"].as_str().expect("token");
    app.admin_put("/admin/v1/workspaces/intruder", json!({"name": "Other"}))
        .await;
    let other_key: Value = app
        .client
        .post(app.url("/admin/v1/workspaces/intruder/api-keys"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("key")
        .json()
        .await
        .expect("json");
    let other_key = other_key["key"].as_str().expect("key");

    let read = app
        .client
        .get(app.url(&format!("/v2/public/actions/{token}")))
        .header("x-api-key", other_key)
        .send()
        .await
        .expect("get");
    let read = error_body(read, StatusCode::NOT_FOUND).await;
    let unknown = error_body(
        app.current_step("unknown-token").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(
        read, unknown,
        "another workspace's token must look like an unknown one"
    );

    let submit = app
        .client
        .post(app.url(&format!("/v3/public/actions/{token}")))
        .header("x-api-key", other_key)
        .json(&json!({"company_name": "Evil", "country_of_incorporation": "DK"}))
        .send()
        .await
        .expect("submit");
    error_body(submit, StatusCode::NOT_FOUND).await;
    let start = app
        .client
        .post(app.url(&format!(
            "/v2/public/actions/processId/{PROCESS}/workspaceId/{WORKSPACE}"
        )))
        .header("x-api-key", other_key)
        .json(&json!({"data": {"reference": "x"}}))
        .send()
        .await
        .expect("start");
    error_body(start, StatusCode::NOT_FOUND).await;
    assert_eq!(
        app.current_step_json(token).await["execution"]["status"],
        "pending"
    );
}

#[tokio::test]
async fn customers_and_activity_of_other_workspaces_are_not_found() {
    let app = spawn_app().await;
    let started = app.start(PROCESS, "customer-1").await;
    let spektr_id = started["spektrId"].as_str().expect("id");
    let execution_id = app
        .current_step_json(started["token"].as_str().expect("token"))
        .await["execution"]["id"]
        .as_str()
        .expect("id")
        .to_owned();

    for path in [
        format!("/admin/v1/workspaces/other/customers/{spektr_id}"),
        format!("/admin/v1/workspaces/other/executions/{execution_id}/activity"),
        format!("/admin/v1/workspaces/{WORKSPACE}/customers/not-a-uuid"),
        format!(
            "/admin/v1/workspaces/{WORKSPACE}/executions/{}/activity",
            uuid::Uuid::new_v4()
        ),
    ] {
        error_body(app.admin_get(&path).await, StatusCode::NOT_FOUND).await;
    }
}

/// PUTs a process definition expected to be refused; checks the envelope, that every
/// `expected` problem is listed, and that no process was stored under `id`.
async fn refused_process(app: &TestApp, id: &str, definition: Value, expected: &[&str]) {
    let response = app
        .admin_request(
            reqwest::Method::PUT,
            &format!("/admin/v1/workspaces/{WORKSPACE}/processes/{id}"),
            Some(definition),
        )
        .await;

    let body = error_body(response, StatusCode::BAD_REQUEST).await;
    assert_eq!(body["errorCode"], "BAD_REQUEST_ERROR");
    let problems = body["details"]["problems"].to_string();
    for expected in expected {
        assert!(
            problems.contains(expected),
            "missing {expected:?} in {problems}"
        );
    }
    let start = app
        .start_raw(id, json!({"data": {"reference": "after-refusal"}}))
        .await;
    let error = error_body(start, StatusCode::NOT_FOUND).await;
    assert_eq!(error["errorCode"], "NOT_FOUND_ERROR");
}

#[tokio::test]
async fn overlong_names_titles_and_control_characters_in_field_keys_are_all_reported() {
    let app = spawn_app().await;
    let mut definition = guide_process(None);
    definition["name"] = json!("n".repeat(256));
    definition["steps"][0]["title"] = json!("t".repeat(1001));
    definition["steps"][0]["expectedFields"][0]["spektrDataField"] = json!("a\u{1}");
    definition["steps"][1]["title"] = json!("e".repeat(1001));
    definition["steps"][2]["outcome"] = json!("o".repeat(256));

    refused_process(
        &app,
        "overlong",
        definition,
        &[
            "'name' must be at most 255 characters",
            "steps[0]: 'title' must be at most 1000 characters",
            "steps[0].expectedFields[0]: 'spektrDataField' must not contain control characters",
            "steps[1]: 'title' must be at most 1000 characters",
            "steps[2]: 'outcome' must be at most 255 characters",
        ],
    )
    .await;
}

#[tokio::test]
async fn names_and_titles_at_their_limits_are_accepted() {
    let app = spawn_app().await;
    let mut definition = guide_process(None);
    // Characters, not bytes: 255 two-byte characters are 510 bytes.
    definition["name"] = json!("é".repeat(255));
    definition["steps"][0]["title"] = json!("t".repeat(1000));

    app.put_process("at-limits", definition).await;
    app.start("at-limits", "customer").await;
}

/// Sends a request with `path` exactly as written (HTTP clients would collapse `.` and `..`
/// segments); asserts the status and error code of the answer and returns its message.
async fn raw_admin_error(
    app: &TestApp,
    (method, path, body): (&str, &str, &str),
    status: u16,
    code: &str,
) -> String {
    let address = app.address.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.expect("connect");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {ADMIN_TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let response = String::from_utf8(response).expect("utf-8 response");
    let (head, body) = response.split_once("\r\n\r\n").expect("response head");
    let body: Value = serde_json::from_str(body).expect("json body");
    assert!(
        head.starts_with(&format!("HTTP/1.1 {status} ")),
        "{head}\n{body}"
    );
    assert_eq!(body["errorCode"], code, "{body}");
    body["message"].as_str().expect("message").to_owned()
}

#[tokio::test]
async fn dot_segment_ids_are_refused_for_workspaces_and_processes() {
    let app = spawn_app().await;
    let process = guide_process(None).to_string();

    for id in [".", ".."] {
        let workspace = format!("/admin/v1/workspaces/{id}");
        let message = raw_admin_error(
            &app,
            ("PUT", &workspace, r#"{"name": "Dots"}"#),
            400,
            "BAD_REQUEST_ERROR",
        )
        .await;
        assert!(message.contains("'..'"), "{message}");
        let api_keys = format!("{workspace}/api-keys");
        raw_admin_error(&app, ("POST", &api_keys, ""), 404, "NOT_FOUND_ERROR").await;

        let process_path = format!("/admin/v1/workspaces/{WORKSPACE}/processes/{id}");
        let message = raw_admin_error(
            &app,
            ("PUT", &process_path, &process),
            400,
            "BAD_REQUEST_ERROR",
        )
        .await;
        assert!(message.contains("'..'"), "{message}");
    }
    let mut dotted = guide_process(None);
    dotted["steps"][1]["id"] = json!("..");
    refused_process(&app, "dotted-step", dotted, &["steps[1]: 'id' must be"]).await;
}

/// The workspace's keys as the admin API lists them.
async fn listed_keys(app: &TestApp, workspace: &str) -> Vec<Value> {
    let response = app
        .admin_get(&format!("/admin/v1/workspaces/{workspace}/api-keys"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    body["data"].as_array().expect("data").clone()
}

async fn revoke(app: &TestApp, workspace: &str, key_id: &str) -> reqwest::Response {
    app.admin_request(
        reqwest::Method::DELETE,
        &format!("/admin/v1/workspaces/{workspace}/api-keys/{key_id}"),
        None,
    )
    .await
}

async fn start_with(app: &TestApp, workspace: &str, process: &str, key: &str) -> StatusCode {
    app.client
        .post(app.url(&format!(
            "/v2/public/actions/processId/{process}/workspaceId/{workspace}"
        )))
        .header("x-api-key", key)
        .json(&json!({"data": {"reference": "revocation"}}))
        .send()
        .await
        .expect("start")
        .status()
}

#[tokio::test]
async fn a_revoked_key_is_refused_at_once_and_listed_as_revoked() {
    let app = spawn_app().await;
    let other_key = app.other_workspace("other-ws").await;
    let keys = listed_keys(&app, WORKSPACE).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let key_id = keys[0]["id"].as_str().expect("id").to_owned();
    assert_eq!(keys[0]["revokedAt"], Value::Null);
    assert!(keys[0]["createdAt"].as_i64().expect("createdAt") > 0);
    assert!(keys[0].get("key").is_none() && keys[0].get("keyHash").is_none());
    assert_eq!(
        start_with(&app, WORKSPACE, PROCESS, &app.api_key).await,
        StatusCode::CREATED
    );

    // Another workspace's key id, an unknown id and a malformed one are not found here.
    let other_id = listed_keys(&app, "other-ws").await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    for id in [
        other_id.as_str(),
        &uuid::Uuid::new_v4().to_string(),
        "not-a-uuid",
    ] {
        error_body(revoke(&app, WORKSPACE, id).await, StatusCode::NOT_FOUND).await;
    }
    error_body(
        revoke(&app, "no-such-workspace", &key_id).await,
        StatusCode::NOT_FOUND,
    )
    .await;

    assert_eq!(
        revoke(&app, WORKSPACE, &key_id).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        start_with(&app, WORKSPACE, PROCESS, &app.api_key).await,
        StatusCode::UNAUTHORIZED
    );
    let revoked_at = listed_keys(&app, WORKSPACE).await[0]["revokedAt"].clone();
    assert!(revoked_at.as_i64().is_some(), "{revoked_at}");
    // Revoking again keeps the first time.
    assert_eq!(
        revoke(&app, WORKSPACE, &key_id).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        listed_keys(&app, WORKSPACE).await[0]["revokedAt"],
        revoked_at
    );
    // The other workspace's key is untouched.
    assert_eq!(
        start_with(&app, "other-ws", PROCESS, &other_key).await,
        StatusCode::CREATED
    );
    error_body(
        app.admin_get("/admin/v1/workspaces/no-such-workspace/api-keys")
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn a_key_revoked_through_another_server_stops_working_there_within_the_cache_time() {
    let first = spawn_app().await;
    let second = crate::helpers::start_server(&first.database_url, |config| {
        config.api_key_cache_secs = 1;
    })
    .await;
    // The second server has the key in its cache.
    assert_eq!(
        start_with(&second, WORKSPACE, PROCESS, &first.api_key).await,
        StatusCode::CREATED
    );
    let key_id = listed_keys(&first, WORKSPACE).await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();

    assert_eq!(
        revoke(&first, WORKSPACE, &key_id).await.status(),
        StatusCode::NO_CONTENT
    );

    let waited = std::time::Instant::now();
    while start_with(&second, WORKSPACE, PROCESS, &first.api_key).await != StatusCode::UNAUTHORIZED
    {
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(20),
            "the revoked key still works on the other server"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_revoked_bootstrap_key_stays_revoked_after_a_restart_with_the_same_file() {
    let database_url = crate::helpers::fresh_database_url().await;
    let bootstrap = || {
        Some(std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/bootstrap.json"
        )))
    };
    let demo_key = "demo-api-key-change-me-0123456789";
    let app = crate::helpers::start_server(&database_url, |config| {
        config.bootstrap_file = bootstrap();
    })
    .await;
    let keys = listed_keys(&app, "demo-workspace").await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let key_id = keys[0]["id"].as_str().expect("id").to_owned();
    assert_eq!(
        revoke(&app, "demo-workspace", &key_id).await.status(),
        StatusCode::NO_CONTENT
    );
    app.stop().await;

    let restarted = crate::helpers::start_server(&database_url, |config| {
        config.bootstrap_file = bootstrap();
    })
    .await;

    assert_eq!(
        start_with(&restarted, "demo-workspace", "kyb-onboarding", demo_key).await,
        StatusCode::UNAUTHORIZED
    );
    let keys = listed_keys(&restarted, "demo-workspace").await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0]["revokedAt"].as_i64().is_some(), "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_revoked_during_its_first_uses_is_refused_once_the_revocation_answers() {
    // A long cache time: a use that read the key just before the revocation committed must
    // not leave it cached as valid.
    let app = spawn_app_with(|config| config.api_key_cache_secs = 3600).await;
    let uses = |key: String| {
        let app = &app;
        async move {
            app.client
                .get(app.url("/v2/public/events?limit=1"))
                .header("x-api-key", key)
                .send()
                .await
                .expect("feed")
                .status()
        }
    };

    for round in 0..100 {
        let created: Value = app
            .admin_request(
                reqwest::Method::POST,
                &format!("/admin/v1/workspaces/{WORKSPACE}/api-keys"),
                None,
            )
            .await
            .json()
            .await
            .expect("json");
        let key = created["key"].as_str().expect("key").to_owned();
        let id = created["id"].as_str().expect("id").to_owned();

        let (statuses, revoked) = tokio::join!(
            futures::future::join_all((0..16).map(|_| uses(key.clone()))),
            async {
                tokio::time::sleep(std::time::Duration::from_millis(round % 3)).await;
                revoke(&app, WORKSPACE, &id).await.status()
            }
        );

        assert_eq!(revoked, StatusCode::NO_CONTENT);
        assert!(
            statuses
                .iter()
                .all(|status| [StatusCode::OK, StatusCode::UNAUTHORIZED].contains(status)),
            "{statuses:?}"
        );
        assert_eq!(
            uses(key).await,
            StatusCode::UNAUTHORIZED,
            "round {round}: the revoked key still works"
        );
    }
}

#[tokio::test]
async fn a_bootstrap_file_giving_one_workspace_another_workspaces_key_is_refused_at_start_up() {
    let database_url = crate::helpers::fresh_database_url().await;
    let demo = crate::helpers::start_server(&database_url, |config| {
        config.bootstrap_file = Some(std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/bootstrap.json"
        )));
    })
    .await;
    demo.stop().await;
    let file = std::env::temp_dir().join(format!("bootstrap-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(
        &file,
        r#"{"workspaces": [{"id": "w1", "name": "Second",
                            "apiKeys": ["demo-api-key-change-me-0123456789"]}]}"#,
    )
    .expect("write bootstrap file");

    let mut config = crate::helpers::test_config(&database_url);
    config.bootstrap_file = Some(file.clone());
    let error = spektr_server::Server::build(config)
        .await
        .err()
        .expect("start-up refused");
    std::fs::remove_file(&file).ok();

    let message = format!("{error:#}");
    assert!(
        message.contains("key #1 of workspace 'w1' belongs to workspace 'demo-workspace'"),
        "{message}"
    );
    assert!(
        !message.contains("demo-api-key-change-me"),
        "the key is not printed: {message}"
    );
}
