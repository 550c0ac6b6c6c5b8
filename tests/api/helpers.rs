//! `spawn_app()`: a server built exactly as `main` builds it, on a port chosen by the OS and
//! a fresh database (a new SQLite file, or a new schema in the Postgres database named by
//! `TEST_DATABASE_URL`), with one workspace, one API key and the guide's process.

// Not every test module uses every helper.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use spektr_server::Server;
use spektr_server::config::Config;
use spektr_server::engine::Engine;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const WORKSPACE: &str = "ws-test";
pub const PROCESS: &str = "kyb-onboarding";

/// A running test server.
pub struct TestApp {
    pub address: String,
    pub client: Client,
    pub api_key: String,
    pub database_url: String,
    pub engine: Arc<Engine>,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

/// Whether the tests run against Postgres.
pub fn on_postgres() -> bool {
    std::env::var("TEST_DATABASE_URL").is_ok_and(|url| url.starts_with("postgres"))
}

/// A fresh, empty database URL for one test.
pub async fn fresh_database_url() -> String {
    match std::env::var("TEST_DATABASE_URL") {
        Ok(base) if base.starts_with("postgres") => {
            let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
            let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(&base)
                .await
                .expect("connect to TEST_DATABASE_URL");
            sqlx::query(sqlx::AssertSqlSafe(format!("create schema {schema}")))
                .execute(&mut connection)
                .await
                .expect("create test schema");
            let separator = if base.contains('?') { '&' } else { '?' };
            format!("{base}{separator}options=-c%20search_path%3D{schema}")
        }
        _ => {
            let path =
                std::env::temp_dir().join(format!("spektr-test-{}.db", uuid::Uuid::new_v4()));
            format!("sqlite://{}", path.display())
        }
    }
}

/// Settings every test server shares; `adjust` changes them per test.
pub fn test_config(database_url: &str) -> Config {
    Config::parse_from([
        "spektr-server",
        "--database-url",
        database_url,
        "--admin-token",
        ADMIN_TOKEN,
        "--db-max-connections",
        "5",
        "--sweeper-interval-ms",
        "200",
        "--log-level",
        "warn",
    ])
}

/// A server with the guide's process and no timeout.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A server whose configuration `adjust` may change.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let database_url = fresh_database_url().await;
    let mut app = start_server(&database_url, adjust).await;
    app.api_key = app.other_workspace(WORKSPACE).await;
    app
}

/// Starts a server on an existing database (for restarts and several replicas).
pub async fn start_server(database_url: &str, adjust: impl FnOnce(&mut Config)) -> TestApp {
    spektr_server::events::client::install_crypto_provider();
    let mut config = test_config(database_url);
    adjust(&mut config);
    let server = Server::build(config).await.expect("server builds");
    let engine = server.engine().clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("address"));
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(server.serve(listener, shutdown.clone()));
    TestApp {
        address,
        client: Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client"),
        api_key: String::new(),
        database_url: database_url.to_owned(),
        engine,
        shutdown,
        handle: Some(handle),
    }
}

/// The guide's process: one External Step (company_name string, country_of_incorporation
/// country), routing to manual review when it fails.
pub fn guide_process(timeout_seconds: Option<f64>) -> Value {
    let mut step = json!({
        "id": "company-payload",
        "type": "externalData",
        "title": "Wait for company payload",
        "expectedFields": [
            {"spektrDataField": "company_name", "type": "string", "required": true},
            {"spektrDataField": "country_of_incorporation", "type": "country", "required": true}
        ],
        "routes": [{"when": {"field": "external_data_failure", "equals": true},
                    "goto": "manual-review"}]
    });
    if let Some(timeout) = timeout_seconds {
        step["timeoutSeconds"] = json!(timeout);
    }
    json!({
        "name": "KYB onboarding",
        "type": "onboarding",
        "availableLanguages": ["en-GB"],
        "steps": [
            step,
            {"id": "approved", "type": "end", "outcome": "approved"},
            {"id": "manual-review", "type": "end", "outcome": "manual_review"}
        ]
    })
}

/// A process with one External Step expecting `fields`.
pub fn process_expecting(fields: Value) -> Value {
    json!({
        "name": "Fields",
        "type": "onboarding",
        "steps": [{"id": "collect", "type": "externalData", "title": "Collect",
                   "expectedFields": fields}]
    })
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub fn start_path(process: &str) -> String {
        format!("/v2/public/actions/processId/{process}/workspaceId/{WORKSPACE}")
    }

    /// PUT with the admin token; asserts success.
    pub async fn admin_put(&self, path: &str, body: Value) -> Value {
        let response = self
            .client
            .put(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("admin put");
        let status = response.status();
        let body: Value = response.json().await.expect("json");
        assert!(status.is_success(), "PUT {path} answered {status}: {body}");
        body
    }

    /// GET with the admin token.
    pub async fn admin_get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("admin get")
    }

    pub async fn put_process(&self, id: &str, definition: Value) -> Value {
        self.admin_put(
            &format!("/admin/v1/workspaces/{WORKSPACE}/processes/{id}"),
            definition,
        )
        .await
    }

    /// Starts `process` for `reference`; returns the raw response.
    pub async fn start_raw(&self, process: &str, body: Value) -> Response {
        self.client
            .post(self.url(&Self::start_path(process)))
            .header("x-api-key", &self.api_key)
            .json(&body)
            .send()
            .await
            .expect("start")
    }

    /// Starts `process` for `reference`; asserts 201 and returns the body.
    pub async fn start(&self, process: &str, reference: &str) -> Value {
        let response = self
            .start_raw(process, json!({"data": {"reference": reference}}))
            .await;
        let status = response.status();
        let body: Value = response.json().await.expect("json");
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// Starts `process` and returns the token.
    pub async fn start_token(&self, process: &str, reference: &str) -> String {
        self.start(process, reference).await["token"]
            .as_str()
            .expect("token")
            .to_owned()
    }

    pub async fn current_step(&self, token: &str) -> Response {
        self.client
            .get(self.url(&format!("/v2/public/actions/{token}")))
            .header("x-api-key", &self.api_key)
            .send()
            .await
            .expect("current step")
    }

    /// The current-step body; asserts 200.
    pub async fn current_step_json(&self, token: &str) -> Value {
        let response = self.current_step(token).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("json")
    }

    pub async fn submit(&self, token: &str, payload: Value) -> Response {
        self.client
            .post(self.url(&format!("/v3/public/actions/{token}")))
            .header("x-api-key", &self.api_key)
            .json(&payload)
            .send()
            .await
            .expect("submit")
    }

    /// The stored customer (admin view).
    pub async fn customer(&self, spektr_id: &str) -> Value {
        let response = self
            .admin_get(&format!(
                "/admin/v1/workspaces/{WORKSPACE}/customers/{spektr_id}"
            ))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("json")
    }

    /// The execution's activity types, oldest first.
    pub async fn activity(&self, execution_id: &str) -> Vec<Value> {
        let response = self
            .admin_get(&format!(
                "/admin/v1/workspaces/{WORKSPACE}/executions/{execution_id}/activity"
            ))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.expect("json");
        body["activity"].as_array().expect("activity").clone()
    }

    /// Asserts that the server still answers `/healthz`.
    pub async fn assert_still_serving(&self) {
        let health = self
            .client
            .get(self.url("/healthz"))
            .send()
            .await
            .expect("healthz");
        assert_eq!(health.status(), StatusCode::OK);
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            handle
                .await
                .expect("server task")
                .expect("server stopped cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The `type`s of activity entries.
pub fn kinds(activity: &[Value]) -> Vec<String> {
    activity
        .iter()
        .map(|entry| entry["type"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Reads an error envelope and checks its shape.
pub async fn error_body(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "content type {content_type}"
    );
    let body: Value = response.json().await.expect("json error body");
    assert!(body["errorCode"].is_string(), "{body}");
    assert!(body["message"].is_string(), "{body}");
    body
}

/// Where one throwaway execution's events sit in the event sequence (the `seq` of activity
/// entries counts every event recorded in a test's database: per workspace on SQLite, from one
/// sequence on Postgres; a gap would need a transaction that rolled back after writing events).
#[derive(Debug, Clone, Copy)]
pub struct EventMark {
    first: i64,
    last: i64,
}

/// How many starts of the guide's process happened between two marks, judged by the events
/// recorded between them; each start records as many events as the mark's own start did.
/// Only meaningful when nothing but starts (and refused requests) happened in between.
pub fn starts_between(before: &EventMark, after: &EventMark) -> i64 {
    let per_start = before.last - before.first + 1;
    let between = after.first - before.last - 1;
    assert_eq!(
        between % per_start,
        0,
        "{between} events between the marks is not a whole number of starts"
    );
    between / per_start
}

impl TestApp {
    /// Starts a throwaway execution of the guide's process and returns where its events sit
    /// in the workspace's event sequence, so tests can count the executions started around it.
    pub async fn event_mark(&self) -> EventMark {
        let token = self
            .start_token(PROCESS, &format!("mark-{}", uuid::Uuid::new_v4()))
            .await;
        let activity = self.activity(&self.execution_id(&token).await).await;
        let seq = |entry: Option<&Value>| {
            entry
                .and_then(|entry| entry["seq"].as_i64())
                .expect("activity entry with a seq")
        };
        EventMark {
            first: seq(activity.first()),
            last: seq(activity.last()),
        }
    }

    /// The id of the execution behind `token`.
    pub async fn execution_id(&self, token: &str) -> String {
        self.current_step_json(token).await["execution"]["id"]
            .as_str()
            .expect("execution id")
            .to_owned()
    }

    /// Starts `process` with `body`, sending `key` as the `idempotency-key`.
    pub async fn start_with_key(&self, process: &str, body: &Value, key: &str) -> Response {
        self.client
            .post(self.url(&Self::start_path(process)))
            .header("x-api-key", &self.api_key)
            .header("idempotency-key", key)
            .json(body)
            .send()
            .await
            .expect("start")
    }

    /// Submits `payload` to `token`, sending `key` as the `idempotency-key` when given.
    pub async fn submit_with_key(
        &self,
        token: &str,
        payload: &Value,
        key: Option<&str>,
    ) -> Response {
        let mut request = self
            .client
            .post(self.url(&format!("/v3/public/actions/{token}")))
            .header("x-api-key", &self.api_key)
            .json(payload);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request.send().await.expect("submit")
    }

    /// Creates a workspace (`other_workspace(WORKSPACE)` is the test's own) with an API key and the guide's process; returns the key.
    pub async fn other_workspace(&self, workspace: &str) -> String {
        self.admin_put(
            &format!("/admin/v1/workspaces/{workspace}"),
            json!({"name": workspace}),
        )
        .await;
        let key = self
            .client
            .post(self.url(&format!("/admin/v1/workspaces/{workspace}/api-keys")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("create api key");
        assert_eq!(key.status(), StatusCode::CREATED);
        let key: Value = key.json().await.expect("api key json");
        self.admin_put(
            &format!("/admin/v1/workspaces/{workspace}/processes/{PROCESS}"),
            guide_process(None),
        )
        .await;
        key["key"].as_str().expect("key").to_owned()
    }
}

/// Whether a response carries `idempotent-replayed: true`.
pub fn is_replay(response: &Response) -> bool {
    response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|value| value == "true")
}

/// A child process that is killed when the test ends, even by a failed assertion.
pub struct ChildProcess(pub std::process::Child);

impl ChildProcess {
    /// Kills the process at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.0.try_wait().expect("wait").is_none()
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A real `spektr-server` process on `database_url`, listening on `bind_addr`, with the admin
/// token of the tests and `env` on top of its defaults.
pub fn spawn_server_process(
    database_url: &str,
    bind_addr: &str,
    env: &[(&str, &str)],
) -> ChildProcess {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_spektr-server"));
    command
        .env("DATABASE_URL", database_url)
        .env("BIND_ADDR", bind_addr)
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("SPEKTR_SWEEPER_INTERVAL_MS", "200")
        .env("SPEKTR_DB_MAX_CONNECTIONS", "3")
        .env("RUST_LOG", "error")
        .env_remove("BOOTSTRAP_FILE")
        .stdout(std::process::Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    ChildProcess(command.spawn().expect("spawn spektr-server"))
}

/// A loopback address with a port that was free a moment ago, for a child server.
pub fn free_local_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").to_string()
}

/// Waits (bounded) until the server at `base_url` answers `/healthz`.
pub async fn wait_until_serving(client: &Client, base_url: &str) {
    let started = std::time::Instant::now();
    loop {
        let answer = client.get(format!("{base_url}/healthz")).send().await;
        if answer.is_ok_and(|response| response.status().is_success()) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{base_url} did not start serving"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The admin path of a workspace's webhook endpoints.
pub fn webhooks_path(workspace: &str) -> String {
    format!("/admin/v1/workspaces/{workspace}/webhooks")
}

impl TestApp {
    /// A request with the admin token.
    pub async fn admin_request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Response {
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("admin request")
    }

    /// Registers a webhook endpoint in the test workspace; asserts 201 and returns it.
    pub async fn create_webhook(&self, body: Value) -> Value {
        let response = self
            .admin_request(reqwest::Method::POST, &webhooks_path(WORKSPACE), Some(body))
            .await;
        let status = response.status();
        let body: Value = response.json().await.expect("json");
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// PATCHes a webhook endpoint of the test workspace; asserts 200 and returns it.
    pub async fn patch_webhook(&self, id: &str, body: Value) -> Value {
        let path = format!("{}/{id}", webhooks_path(WORKSPACE));
        let response = self
            .admin_request(reqwest::Method::PATCH, &path, Some(body))
            .await;
        let status = response.status();
        let body: Value = response.json().await.expect("json");
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// An endpoint's deliveries, newest first; asserts 200.
    pub async fn deliveries(&self, endpoint_id: &str) -> Vec<Value> {
        let path = format!(
            "{}/{endpoint_id}/deliveries?limit=500",
            webhooks_path(WORKSPACE)
        );
        let response = self.admin_get(&path).await;
        let status = response.status();
        let body: Value = response.json().await.expect("json");
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"].as_array().expect("data").clone()
    }

    /// Waits (bounded) until `done` holds for an endpoint's deliveries; returns them.
    pub async fn wait_for_deliveries(
        &self,
        endpoint_id: &str,
        what: &str,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let started = std::time::Instant::now();
        loop {
            let deliveries = self.deliveries(endpoint_id).await;
            if done(&deliveries) {
                return deliveries;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "waited for {what}: {}",
                Value::from(deliveries)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One page of the event feed, with `query` (e.g. `after=3&limit=2`); returns the raw
    /// response.
    pub async fn feed_raw(&self, api_key: &str, query: &str) -> Response {
        self.client
            .get(self.url(&format!("/v2/public/events?{query}")))
            .header("x-api-key", api_key)
            .send()
            .await
            .expect("feed")
    }

    /// One page of the test workspace's event feed; asserts 200.
    pub async fn feed(&self, query: &str) -> Value {
        let response = self.feed_raw(&self.api_key, query).await;
        let status = response.status();
        let body: Value = response.json().await.expect("json");
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Waits until the feed of `api_key`'s workspace lists `total` events after `after` (at
    /// most 1000) and returns that page. On Postgres an event is listed once every
    /// transaction that began before it has ended, and other tests' transactions run beside
    /// ours, so a read right after a write may not list it yet.
    pub async fn wait_for_feed(&self, api_key: &str, after: &str, total: usize) -> Value {
        let started = std::time::Instant::now();
        loop {
            let query = format!("after={after}&limit=1000");
            let response = self.feed_raw(api_key, &query).await;
            assert_eq!(response.status(), StatusCode::OK);
            let page: Value = response.json().await.expect("json");
            let listed = page["data"].as_array().expect("data").len();
            assert!(listed <= total, "more events than written: {page}");
            if listed == total {
                return page;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the feed lists {listed} of {total} events: {page}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The execution look-up with `query` (e.g. `reference=x`) and `api_key`; raw response.
    pub async fn find_executions_raw(&self, api_key: &str, query: &str) -> Response {
        self.client
            .get(self.url(&format!("/v2/public/executions?{query}")))
            .header("x-api-key", api_key)
            .send()
            .await
            .expect("find executions")
    }

    /// The test workspace's executions matching `query`; asserts 200 and returns `data`.
    pub async fn find_executions(&self, query: &str) -> Vec<Value> {
        let response = self.find_executions_raw(&self.api_key, query).await;
        let status = response.status();
        let body: Value = response.json().await.expect("json");
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"].as_array().expect("data").clone()
    }
}

/// A pending execution of the guide's process: its token and spektrId.
pub async fn pending_execution(app: &TestApp) -> (String, String) {
    let started = app
        .start(PROCESS, &format!("customer-{}", uuid::Uuid::new_v4()))
        .await;
    (
        started["token"].as_str().expect("token").to_owned(),
        started["spektrId"].as_str().expect("spektrId").to_owned(),
    )
}

/// Checks that an execution still waits with nothing received and nothing stored.
pub async fn assert_untouched(app: &TestApp, token: &str, spektr_id: &str) {
    let step = app.current_step_json(token).await;
    assert_eq!(step["execution"]["status"], "pending", "{step}");
    assert_eq!(app.customer(spektr_id).await["fields"], json!({}));
    let activity = app.activity(&app.execution_id(token).await).await;
    assert_eq!(
        kinds(&activity),
        ["process_started", "external_data_waiting"]
    );
}
