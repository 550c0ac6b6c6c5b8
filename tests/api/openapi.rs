//! The served OpenAPI document and docs page, and real answers checked against the document.

use reqwest::header::{CONTENT_TYPE, LOCATION};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, PROCESS, TestApp, WORKSPACE, guide_process, spawn_app};

/// Every route the server answers, as the document must list it.
const ROUTES: [(&str, &str); 23] = [
    ("get", "/healthz"),
    ("get", "/readyz"),
    (
        "post",
        "/v2/public/actions/processId/{processId}/workspaceId/{workspaceId}",
    ),
    ("get", "/v2/public/actions/{token}"),
    ("post", "/v2/public/actions/{token}"),
    ("post", "/v3/public/actions/{token}"),
    ("get", "/v2/public/events"),
    ("get", "/v2/public/executions"),
    ("put", "/admin/v1/workspaces/{workspaceId}"),
    ("post", "/admin/v1/workspaces/{workspaceId}/api-keys"),
    ("get", "/admin/v1/workspaces/{workspaceId}/api-keys"),
    (
        "delete",
        "/admin/v1/workspaces/{workspaceId}/api-keys/{keyId}",
    ),
    (
        "put",
        "/admin/v1/workspaces/{workspaceId}/processes/{processId}",
    ),
    (
        "get",
        "/admin/v1/workspaces/{workspaceId}/customers/{spektrId}",
    ),
    (
        "get",
        "/admin/v1/workspaces/{workspaceId}/executions/{executionId}/activity",
    ),
    ("post", "/admin/v1/workspaces/{workspaceId}/webhooks"),
    ("get", "/admin/v1/workspaces/{workspaceId}/webhooks"),
    (
        "get",
        "/admin/v1/workspaces/{workspaceId}/webhooks/{webhookId}",
    ),
    (
        "patch",
        "/admin/v1/workspaces/{workspaceId}/webhooks/{webhookId}",
    ),
    (
        "delete",
        "/admin/v1/workspaces/{workspaceId}/webhooks/{webhookId}",
    ),
    (
        "post",
        "/admin/v1/workspaces/{workspaceId}/webhooks/{webhookId}/rotate-secret",
    ),
    (
        "get",
        "/admin/v1/workspaces/{workspaceId}/webhooks/{webhookId}/deliveries",
    ),
    (
        "post",
        "/admin/v1/workspaces/{workspaceId}/events/{eventId}/redeliver",
    ),
];

/// The body of a response that says it is JSON.
async fn json_body(response: Response) -> Value {
    let content_type = response.headers()[CONTENT_TYPE].to_str().unwrap();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    response.json().await.expect("json body")
}

async fn document(app: &TestApp) -> Value {
    let response = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("openapi.json");
    assert_eq!(response.status(), StatusCode::OK);
    json_body(response).await
}

#[tokio::test]
async fn openapi_json_is_an_openapi_3_1_document_of_every_route() {
    let app = spawn_app().await;

    let doc = document(&app).await;

    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    for (method, path) in ROUTES {
        assert!(
            paths.get(path).and_then(|item| item.get(method)).is_some(),
            "{method} {path} is not documented"
        );
    }
    let documented: usize = paths
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    assert_eq!(
        documented,
        ROUTES.len(),
        "a route is documented that the test does not know"
    );
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["apiKey"]["in"], "header");
    assert_eq!(schemes["apiKey"]["name"], "x-api-key");
    assert_eq!(schemes["adminToken"]["scheme"], "bearer");
    assert_eq!(schemes["apiKeyBearer"]["scheme"], "bearer");
}

#[tokio::test]
async fn every_operation_documents_its_security_and_error_answers() {
    let app = spawn_app().await;

    let doc = document(&app).await;

    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let security = operation["security"].to_string();
            let expected = if path.starts_with("/admin/") {
                r#"[{"adminToken":[]}]"#
            } else if path.starts_with("/v") {
                r#"[{"apiKey":[]},{"apiKeyBearer":[]}]"#
            } else {
                "null"
            };
            assert_eq!(security, expected, "{method} {path}");
            let responses = operation["responses"].as_object().unwrap();
            // Checks before routing, the request timeout and a caught panic apply everywhere.
            let mut errors = vec!["400", "413", "500", "503"];
            if security != "null" {
                errors.push("401");
            }
            for status in errors {
                let schema = &responses[status]["content"]["application/json"]["schema"];
                assert_eq!(
                    schema["$ref"], "#/components/schemas/ErrorEnvelope",
                    "{method} {path} {status}"
                );
            }
            if operation.get("requestBody").is_some() {
                for status in ["400", "413", "415"] {
                    assert!(responses.contains_key(status), "{method} {path} {status}");
                }
            }
        }
    }
}

#[tokio::test]
async fn the_docs_page_and_all_its_assets_load_from_the_server() {
    let app = spawn_app().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let redirect = client.get(app.url("/docs")).send().await.unwrap();
    let page = client.get(app.url("/docs/")).send().await.unwrap();

    assert!(redirect.status().is_redirection());
    assert_eq!(redirect.headers()[LOCATION], "/docs/");
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    let assets: Vec<&str> = html
        .split(['"', '\''])
        .filter(|part| part.ends_with(".js") || part.ends_with(".css") || part.ends_with(".png"))
        .collect();
    assert!(assets.len() >= 4, "{assets:?}");
    for asset in assets {
        let url = app.url(&format!("/docs/{}", asset.trim_start_matches("./")));
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{url}");
        let body = response.bytes().await.unwrap();
        assert!(!body.is_empty(), "{url}");
    }
    let initializer = client
        .get(app.url("/docs/swagger-initializer.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(initializer.contains("/openapi.json"), "{initializer}");
    // Swagger UI's default validator would send the document's address to an outside service.
    assert!(
        initializer.contains(r#""validatorUrl": "none""#),
        "{initializer}"
    );
}

/// Checks real answers against the served document.
struct Contract {
    doc: Value,
}

impl Contract {
    /// Asserts that `response` is documented for `method template` with its status, carries
    /// `x-request-id`, and that its JSON body matches the documented schema; returns the body.
    async fn check(&self, method: &str, template: &str, response: Response) -> Value {
        let status = response.status().as_u16();
        let documented =
            &self.doc["paths"][template][method]["responses"][status.to_string().as_str()];
        assert!(
            documented.is_object(),
            "{method} {template} answered {status}, which is not documented"
        );
        assert!(response.headers().contains_key("x-request-id"));
        if status == 204 {
            return Value::Null;
        }
        let body = json_body(response).await;
        let errors = self.mismatches(documented, &body);
        assert!(
            errors.is_empty(),
            "{method} {template} {status}: {body}\ndoes not match the document: {errors:#?}"
        );
        body
    }

    /// How `body` differs from the JSON schema of a documented response.
    fn mismatches(&self, documented: &Value, body: &Value) -> Vec<String> {
        let schema = &documented["content"]["application/json"]["schema"];
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "allOf": [schema],
            "components": self.doc["components"],
        });
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&root)
            .expect("the documented schema compiles");
        validator
            .iter_errors(body)
            .map(|error| format!("{error} at {}", error.instance_path()))
            .collect()
    }
}

#[tokio::test]
async fn the_contract_check_refuses_a_body_the_document_does_not_allow() {
    let app = spawn_app().await;
    let contract = Contract {
        doc: document(&app).await,
    };
    let created = &contract.doc["paths"]["/v2/public/actions/processId/{processId}/workspaceId/{workspaceId}"]
        ["post"]["responses"]["201"];

    let wrong = contract.mismatches(
        created,
        &json!({"token": 1, "availableLanguages": ["en-GB"], "spektrId": "not-a-uuid"}),
    );
    let right = contract.mismatches(
        created,
        &json!({"token": "t", "availableLanguages": ["en-GB"],
                "spektrId": "0190d5a4-8a3e-7c2e-9b1a-1f2e3d4c5b6a"}),
    );

    assert_eq!(wrong.len(), 2, "{wrong:#?}");
    assert!(right.is_empty(), "{right:#?}");
}

#[tokio::test]
async fn answers_of_a_whole_flow_match_the_documented_schemas() {
    let app = spawn_app().await;
    let contract = Contract {
        doc: document(&app).await,
    };
    let ws = format!("/admin/v1/workspaces/{WORKSPACE}");

    // Health and admin set-up.
    let healthz = app.client.get(app.url("/healthz")).send().await.unwrap();
    contract.check("get", "/healthz", healthz).await;
    let readyz = app.client.get(app.url("/readyz")).send().await.unwrap();
    contract.check("get", "/readyz", readyz).await;
    let oversized = app
        .client
        .get(app.url("/healthz"))
        .body(vec![b' '; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(oversized.status(), StatusCode::PAYLOAD_TOO_LARGE);
    contract.check("get", "/healthz", oversized).await;
    let workspace = app
        .admin_request(Method::PUT, &ws, Some(json!({"name": "Renamed"})))
        .await;
    contract
        .check("put", "/admin/v1/workspaces/{workspaceId}", workspace)
        .await;
    let key = app
        .admin_request(Method::POST, &format!("{ws}/api-keys"), None)
        .await;
    let key = contract
        .check("post", "/admin/v1/workspaces/{workspaceId}/api-keys", key)
        .await;
    let keys = app
        .admin_request(Method::GET, &format!("{ws}/api-keys"), None)
        .await;
    contract
        .check("get", "/admin/v1/workspaces/{workspaceId}/api-keys", keys)
        .await;
    let revoke_path = "/admin/v1/workspaces/{workspaceId}/api-keys/{keyId}";
    for id in [key["id"].as_str().expect("key id"), "unknown"] {
        let revoked = app
            .admin_request(Method::DELETE, &format!("{ws}/api-keys/{id}"), None)
            .await;
        contract.check("delete", revoke_path, revoked).await;
    }
    let process_path = "/admin/v1/workspaces/{workspaceId}/processes/{processId}";
    let timed = app
        .admin_request(
            Method::PUT,
            &format!("{ws}/processes/timed"),
            Some(guide_process(Some(3600.0))),
        )
        .await;
    contract.check("put", process_path, timed).await;
    let refused = app
        .admin_request(
            Method::PUT,
            &format!("{ws}/processes/broken"),
            Some(json!({"name": "", "steps": []})),
        )
        .await;
    let refused = contract.check("put", process_path, refused).await;
    assert!(refused["details"]["problems"].is_array());
    let hook = app
        .admin_request(
            Method::POST,
            &format!("{ws}/webhooks"),
            Some(json!({"url": "http://127.0.0.1:9/hook", "eventTypes": ["process_completed"]})),
        )
        .await;
    let hook = contract
        .check("post", "/admin/v1/workspaces/{workspaceId}/webhooks", hook)
        .await;
    let hook_path = format!("{ws}/webhooks/{}", hook["id"].as_str().unwrap());

    // The guide's flow, with a deadline, a refused payload and an accepted one.
    let start_template = "/v2/public/actions/processId/{processId}/workspaceId/{workspaceId}";
    let started = app
        .start_raw("timed", json!({"data": {"reference": "flow-1", "tier": 2}}))
        .await;
    let started = contract.check("post", start_template, started).await;
    let token = started["token"].as_str().unwrap();
    let waiting = contract
        .check(
            "get",
            "/v2/public/actions/{token}",
            app.current_step(token).await,
        )
        .await;
    assert!(waiting["node"]["expiresAt"].is_i64());
    let invalid = app
        .submit(token, json!({"country_of_incorporation": "Denmark"}))
        .await;
    let invalid = contract
        .check("post", "/v3/public/actions/{token}", invalid)
        .await;
    assert!(invalid["details"]["typeErrors"].is_array());
    let accepted = app
        .client
        .post(app.url(&format!("/v2/public/actions/{token}?filledBy=ops")))
        .header("x-api-key", &app.api_key)
        .json(&json!({"company_name": "Ltd", "country_of_incorporation": "dk"}))
        .send()
        .await
        .unwrap();
    contract
        .check("post", "/v2/public/actions/{token}", accepted)
        .await;
    let done = contract
        .check(
            "get",
            "/v2/public/actions/{token}",
            app.current_step(token).await,
        )
        .await;
    assert_eq!(done["node"], Value::Null);
    assert_eq!(done["execution"]["outcome"], "approved");
    let second = app.start(PROCESS, "flow-2").await;

    // What the integration and the operator read back.
    let feed = contract
        .check(
            "get",
            "/v2/public/events",
            app.feed_raw(&app.api_key, "limit=1000").await,
        )
        .await;
    let kinds: Vec<&str> = feed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["type"].as_str().unwrap())
        .collect();
    for kind in [
        "process_started",
        "external_data_waiting",
        "external_data_received",
        "process_completed",
    ] {
        assert!(kinds.contains(&kind), "{kinds:?}");
    }
    let found = app
        .find_executions_raw(&app.api_key, "reference=flow-1")
        .await;
    let found = contract.check("get", "/v2/public/executions", found).await;
    let execution_id = found["data"][0]["id"].as_str().unwrap().to_owned();
    let spektr_id = started["spektrId"].as_str().unwrap();
    let customer = app.admin_get(&format!("{ws}/customers/{spektr_id}")).await;
    contract
        .check(
            "get",
            "/admin/v1/workspaces/{workspaceId}/customers/{spektrId}",
            customer,
        )
        .await;
    let activity = app
        .admin_get(&format!("{ws}/executions/{execution_id}/activity"))
        .await;
    contract
        .check(
            "get",
            "/admin/v1/workspaces/{workspaceId}/executions/{executionId}/activity",
            activity,
        )
        .await;

    // Webhook administration.
    let hook_template = "/admin/v1/workspaces/{workspaceId}/webhooks/{webhookId}";
    let list = app.admin_get(&format!("{ws}/webhooks")).await;
    contract
        .check("get", "/admin/v1/workspaces/{workspaceId}/webhooks", list)
        .await;
    contract
        .check("get", hook_template, app.admin_get(&hook_path).await)
        .await;
    let patched = app
        .admin_request(
            Method::PATCH,
            &hook_path,
            Some(json!({"eventTypes": null, "description": "all", "enabled": true})),
        )
        .await;
    contract.check("patch", hook_template, patched).await;
    let rotated = app
        .admin_request(Method::POST, &format!("{hook_path}/rotate-secret"), None)
        .await;
    let rotated = contract
        .check("post", &format!("{hook_template}/rotate-secret"), rotated)
        .await;
    assert!(rotated["secret"].is_string());
    let event_id = feed["data"][0]["id"].as_str().unwrap();
    let redelivered = app
        .admin_request(
            Method::POST,
            &format!("{ws}/events/{event_id}/redeliver"),
            None,
        )
        .await;
    contract
        .check(
            "post",
            "/admin/v1/workspaces/{workspaceId}/events/{eventId}/redeliver",
            redelivered,
        )
        .await;
    let deliveries = app.admin_get(&format!("{hook_path}/deliveries")).await;
    contract
        .check("get", &format!("{hook_template}/deliveries"), deliveries)
        .await;
    let deleted = app.admin_request(Method::DELETE, &hook_path, None).await;
    contract.check("delete", hook_template, deleted).await;

    // Errors: every one in the envelope the document describes.
    let step_template = "/v2/public/actions/{token}";
    let unknown = app.current_step("no-such-token").await;
    contract.check("get", step_template, unknown).await;
    let unauthorized = app
        .client
        .get(app.url(&format!(
            "/v2/public/actions/{}",
            second["token"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    contract.check("get", step_template, unauthorized).await;
    let not_json = app
        .client
        .post(app.url(&format!("/v3/public/actions/{token}")))
        .header("x-api-key", &app.api_key)
        .body("{}")
        .send()
        .await
        .unwrap();
    contract
        .check("post", "/v3/public/actions/{token}", not_json)
        .await;
    let bad_limit = app.feed_raw(&app.api_key, "limit=0").await;
    contract.check("get", "/v2/public/events", bad_limit).await;
    let keyed = || {
        app.client
            .post(app.url(&TestApp::start_path(PROCESS)))
            .header("x-api-key", &app.api_key)
            .header("idempotency-key", "flow-key")
    };
    let first = keyed()
        .json(&json!({"data": {"reference": "flow-3"}}))
        .send()
        .await
        .unwrap();
    contract.check("post", start_template, first).await;
    let replayed = keyed()
        .json(&json!({"data": {"reference": "flow-3"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    contract.check("post", start_template, replayed).await;
    let reused = keyed()
        .json(&json!({"data": {"reference": "flow-4"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(reused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    contract.check("post", start_template, reused).await;
    let wrong_admin = app
        .client
        .get(app.url(&format!("{ws}/webhooks")))
        .bearer_auth(format!("{ADMIN_TOKEN}-wrong"))
        .send()
        .await
        .unwrap();
    contract
        .check(
            "get",
            "/admin/v1/workspaces/{workspaceId}/webhooks",
            wrong_admin,
        )
        .await;
}
