//! The guide's API flow: start, current step, submit.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PROCESS, TestApp, WORKSPACE, error_body, kinds, spawn_app};

#[tokio::test]
async fn the_guide_flow_works_verbatim() {
    let app = spawn_app().await;

    let started = app
        .client
        .post(app.url(&TestApp::start_path(PROCESS)))
        .header("x-api-key", &app.api_key)
        .header("Content-Type", "application/json")
        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
        .body(r#"{"data": {"reference": "customer-123"}}"#)
        .send()
        .await
        .expect("start");
    assert_eq!(started.status(), StatusCode::CREATED);
    let started: Value = started.json().await.expect("json");
    let token = started["token"].as_str().expect("token");
    assert_eq!(started["availableLanguages"], json!(["en-GB"]));
    assert!(started["spektrId"].is_string());
    assert_eq!(started.as_object().expect("object").len(), 3, "{started}");

    let step = app.current_step_json(token).await;
    assert_eq!(step["node"]["type"], "externalData");
    assert_eq!(step["node"]["nodeId"], "company-payload");
    assert_eq!(step["node"]["submitUrl"], format!("public/actions/{token}"));
    assert_eq!(
        step["node"]["expectedFields"],
        json!([
            {"spektrDataField": "company_name", "type": "string", "required": true},
            {"spektrDataField": "country_of_incorporation", "type": "country", "required": true}
        ])
    );
    assert!(
        step["node"].get("expiresAt").is_none(),
        "no timeout configured: {step}"
    );
    assert_eq!(step["execution"]["status"], "pending");
    assert_eq!(step["execution"]["token"], token);
    assert_eq!(step["execution"]["currentStep"], 1);
    assert_eq!(step["execution"]["minStep"], 1);
    assert_eq!(step["execution"]["maxStep"], 3);
    assert!(step["execution"]["parentId"].is_null());
    assert!(step["execution"]["error"].is_null());

    let submitted = app
        .client
        .post(app.url(&format!("/v3/public/actions/{token}")))
        .header("x-api-key", &app.api_key)
        .header("Content-Type", "application/json")
        .body(r#"{"company_name": "External Company Ltd", "country_of_incorporation": "RO"}"#)
        .send()
        .await
        .expect("submit");
    assert_eq!(submitted.status(), StatusCode::OK);
    assert_eq!(
        submitted.json::<Value>().await.expect("json"),
        json!({"status": "completed"})
    );

    let customer = app
        .customer(started["spektrId"].as_str().expect("id"))
        .await;
    assert_eq!(customer["reference"], "customer-123");
    assert_eq!(
        customer["fields"],
        json!({
            "company_name": "External Company Ltd",
            "country_of_incorporation": "RO",
            "external_data_failure": false
        })
    );
}

#[tokio::test]
async fn after_submission_the_execution_completes_at_the_next_step() {
    let app = spawn_app().await;
    let token = app.start_token(PROCESS, "customer-1").await;
    let execution_id = app.current_step_json(&token).await["execution"]["id"].clone();

    let response = app
        .submit(
            &token,
            json!({"company_name": "Acme", "country_of_incorporation": "DK"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    let step = app.current_step_json(&token).await;
    assert!(step["node"].is_null(), "{step}");
    assert_eq!(step["execution"]["status"], "completed");
    assert_eq!(step["execution"]["outcome"], "approved");
    assert_eq!(step["execution"]["currentStep"], 2);
    assert_eq!(step["execution"]["id"], execution_id);
}

#[tokio::test]
async fn activity_records_waiting_then_received_with_their_data() {
    let app = spawn_app().await;
    let token = app.start_token(PROCESS, "customer-1").await;
    let execution_id = app.current_step_json(&token).await["execution"]["id"]
        .as_str()
        .expect("id")
        .to_owned();

    let response = app
        .client
        .post(app.url(&format!("/v3/public/actions/{token}?filledBy=crm-sync")))
        .header("x-api-key", &app.api_key)
        .json(&json!({"company_name": "Acme", "country_of_incorporation": "dk", "extra": 1}))
        .send()
        .await
        .expect("submit");
    assert_eq!(response.status(), StatusCode::OK);

    let activity = app.activity(&execution_id).await;
    assert_eq!(
        kinds(&activity),
        [
            "process_started",
            "external_data_waiting",
            "external_data_received",
            "process_completed"
        ]
    );
    let waiting = &activity[1];
    assert_eq!(waiting["workspaceId"], WORKSPACE);
    assert_eq!(waiting["eventData"]["stepType"], "externalData");
    assert_eq!(waiting["eventData"]["stepId"], "company-payload");
    assert_eq!(
        waiting["eventData"]["stepTitle"],
        "Wait for company payload"
    );
    assert_eq!(waiting["eventData"]["contextId"], execution_id);
    assert_eq!(waiting["eventData"]["processId"], PROCESS);
    assert_eq!(waiting["eventData"]["processName"], "KYB onboarding");
    assert_eq!(waiting["eventData"]["processType"], "onboarding");
    assert_eq!(waiting["eventData"]["reference"], "customer-1");
    assert_eq!(
        waiting["eventData"]["expectedFields"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    let received = &activity[2];
    assert_eq!(
        received["eventData"]["data"],
        json!({"company_name": "Acme", "country_of_incorporation": "DK"})
    );
    assert_eq!(received["eventData"]["filledBy"], "crm-sync");
    let times: Vec<i64> = activity
        .iter()
        .map(|a| a["createdAt"].as_i64().expect("ms"))
        .collect();
    assert!(times.windows(2).all(|pair| pair[0] <= pair[1]), "{times:?}");
}

#[tokio::test]
async fn the_same_reference_is_the_same_customer_and_prefills_fields() {
    let app = spawn_app().await;

    let first = app
        .start_raw(
            PROCESS,
            json!({"data": {"reference": "acme", "segment": "smb"}}),
        )
        .await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.expect("json");
    let second = app.start(PROCESS, "acme").await;
    let other = app.start(PROCESS, "globex").await;

    assert_eq!(first["spektrId"], second["spektrId"]);
    assert_ne!(first["spektrId"], other["spektrId"]);
    assert_ne!(first["token"], second["token"]);
    let customer = app.customer(first["spektrId"].as_str().expect("id")).await;
    assert_eq!(customer["fields"], json!({"segment": "smb"}));
}

#[tokio::test]
async fn the_v2_submit_path_behaves_like_v3() {
    let app = spawn_app().await;
    let token = app.start_token(PROCESS, "customer-1").await;

    let response = app
        .client
        .post(app.url(&format!("/v2/public/actions/{token}")))
        .header("x-api-key", &app.api_key)
        .json(&json!({"company_name": "Acme", "country_of_incorporation": "DK"}))
        .send()
        .await
        .expect("submit");

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        app.current_step_json(&token).await["execution"]["status"],
        "completed"
    );
}

#[tokio::test]
async fn a_bearer_api_key_and_the_block_until_ready_header_are_accepted() {
    let app = spawn_app().await;

    let response = app
        .client
        .post(app.url(&TestApp::start_path(PROCESS)))
        .bearer_auth(&app.api_key)
        .header("x-spektr-block-until-ready", "true")
        .json(&json!({"data": {"reference": "customer-1"}}))
        .send()
        .await
        .expect("start");

    assert_eq!(response.status(), StatusCode::CREATED);
    let token = response.json::<Value>().await.expect("json")["token"].clone();
    let step = app.current_step_json(token.as_str().expect("token")).await;
    assert_eq!(step["execution"]["status"], "pending");
}

#[tokio::test]
async fn submitting_twice_is_refused_as_not_waiting() {
    let app = spawn_app().await;
    let token = app.start_token(PROCESS, "customer-1").await;
    let payload = json!({"company_name": "Acme", "country_of_incorporation": "DK"});
    assert_eq!(
        app.submit(&token, payload.clone()).await.status(),
        StatusCode::OK
    );

    let body = error_body(app.submit(&token, payload).await, StatusCode::BAD_REQUEST).await;

    assert_eq!(body["errorCode"], "BAD_REQUEST_ERROR");
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("not currently waiting")
    );
}

#[tokio::test]
async fn an_invalid_payload_changes_nothing() {
    let app = spawn_app().await;
    let started = app.start(PROCESS, "customer-1").await;
    let token = started["token"].as_str().expect("token");

    let body = error_body(
        app.submit(token, json!({"country_of_incorporation": "Denmark"}))
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;

    assert_eq!(body["message"], "External data payload validation failed");
    assert_eq!(
        body["details"]["missingRequiredFields"],
        json!(["company_name"])
    );
    assert_eq!(
        body["details"]["typeErrors"],
        json!([
            "Field 'country_of_incorporation' expected a valid ISO Alpha-2 country code. \
             Received: \"Denmark\""
        ])
    );
    assert_eq!(
        app.current_step_json(token).await["execution"]["status"],
        "pending"
    );
    let customer = app
        .customer(started["spektrId"].as_str().expect("id"))
        .await;
    assert_eq!(customer["fields"], json!({}));
}

#[tokio::test]
async fn unknown_tokens_processes_and_workspaces_answer_404() {
    let app = spawn_app().await;

    let step = app.current_step("no-such-token").await;
    error_body(step, StatusCode::NOT_FOUND).await;
    let submit = app.submit("no-such-token", json!({})).await;
    error_body(submit, StatusCode::NOT_FOUND).await;
    let process = app
        .start_raw("no-such-process", json!({"data": {"reference": "r"}}))
        .await;
    error_body(process, StatusCode::NOT_FOUND).await;
    let workspace = app
        .client
        .post(app.url("/v2/public/actions/processId/kyb-onboarding/workspaceId/other"))
        .header("x-api-key", &app.api_key)
        .json(&json!({"data": {"reference": "r"}}))
        .send()
        .await
        .expect("start");
    error_body(workspace, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn a_start_without_a_reference_is_refused() {
    let app = spawn_app().await;

    for body in [
        json!({}),
        json!({"data": {}}),
        json!({"data": {"reference": "  "}}),
        json!({"data": {"reference": 12}}),
        json!({"data": []}),
    ] {
        let response = app.start_raw(PROCESS, body.clone()).await;
        let error = error_body(response, StatusCode::BAD_REQUEST).await;
        assert_eq!(error["errorCode"], "BAD_REQUEST_ERROR", "{body}");
    }
}

#[tokio::test]
async fn the_configured_backend_is_the_one_in_use() {
    let app = spawn_app().await;

    let ready: Value = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");

    let expected = if crate::helpers::on_postgres() {
        "postgres"
    } else {
        "sqlite"
    };
    assert_eq!(ready["backend"], expected);
    assert_eq!(ready["status"], "ready");
}

#[tokio::test]
async fn a_start_cannot_prefill_the_failure_flag() {
    let app = spawn_app().await;

    let response = app
        .start_raw(
            PROCESS,
            json!({"data": {"reference": "edf", "external_data_failure": "yes"}}),
        )
        .await;

    let body = error_body(response, StatusCode::BAD_REQUEST).await;
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("external_data_failure")
    );
}
