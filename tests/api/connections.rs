//! Hostile connections: a client that sends its headers too slowly, and headers too large to
//! read, spoken over raw TCP because a well-behaved HTTP client cannot misbehave this way.

use std::time::Duration;

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{PROCESS, TestApp, error_body, guide_process, spawn_app, spawn_app_with};

/// How long a test waits for the server to act before it fails; far above the timeouts the
/// tests configure, so it only ends a test that would otherwise hang.
const PATIENCE: Duration = Duration::from_secs(20);

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .expect("connect")
}

/// Reads until the server closes the connection (or resets it); returns what it sent.
async fn read_until_closed(stream: &mut tokio::net::tcp::OwnedReadHalf) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let reading = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => received.extend_from_slice(&buffer[..read]),
            }
        }
    };
    tokio::time::timeout(PATIENCE, reading)
        .await
        .expect("the server should have closed the connection by now");
    received
}

#[tokio::test]
async fn a_client_sending_its_headers_too_slowly_is_disconnected() {
    let app = spawn_app_with(|config| config.header_read_timeout_secs = 1).await;
    let (mut reader, mut writer) = connect(&app).await.into_split();
    // A request head that never ends: one more header byte every 100 ms, for longer than the
    // test's patience, unless the server hangs up first.
    let trickle = tokio::spawn(async move {
        let head = b"GET /healthz HTTP/1.1\r\nhost: spektr\r\nx-slow: ";
        let mut written = writer.write_all(head).await;
        for _ in 0..400 {
            if written.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            written = writer.write_all(b"a").await;
        }
    });

    let received = read_until_closed(&mut reader).await;

    let text = String::from_utf8_lossy(&received);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "the server answered a request it never fully received: {text}"
    );
    trickle.abort();
    app.assert_still_serving().await;
}

#[tokio::test]
async fn a_client_sending_its_headers_in_time_is_answered() {
    let app = spawn_app_with(|config| config.header_read_timeout_secs = 5).await;
    let (mut reader, mut writer) = connect(&app).await.into_split();

    for part in [
        &b"GET /healthz HTTP/1.1\r\n"[..],
        b"host: spektr\r\n",
        b"connection: close\r\n\r\n",
    ] {
        writer.write_all(part).await.expect("write");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let received = read_until_closed(&mut reader).await;

    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains(r#"{"status":"ok"}"#), "{text}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_read_timeout() {
    let app = spawn_app_with(|config| config.header_read_timeout_secs = 1).await;
    let (mut reader, mut writer) = connect(&app).await.into_split();
    writer
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: spektr\r\n\r\n")
        .await
        .expect("write");

    // The answer comes, then the connection, kept alive but sent nothing more, is closed.
    let received = read_until_closed(&mut reader).await;

    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with(r#"{"status":"ok"}"#), "{text}");
}

#[tokio::test]
async fn header_values_too_large_to_read_are_refused_with_431() {
    let app = spawn_app().await;
    let (mut reader, mut writer) = connect(&app).await.into_split();
    let huge = "k".repeat(512 * 1024);
    // The server answers before it has read everything, so the rest may fail to send.
    let sending = tokio::spawn(async move {
        let head = format!(
            "GET /v2/public/actions/some-token HTTP/1.1\r\nhost: spektr\r\n\
             x-api-key: {huge}\r\nconnection: close\r\n\r\n"
        );
        let _ = writer.write_all(head.as_bytes()).await;
    });

    let received = read_until_closed(&mut reader).await;

    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    sending.await.expect("sending task");
}

#[tokio::test]
async fn a_long_header_value_the_server_can_read_gets_a_4xx_in_the_envelope() {
    let app = spawn_app().await;
    let long_key = "k".repeat(64 * 1024);

    let response = app
        .client
        .get(app.url("/v2/public/actions/some-token"))
        .header("x-api-key", long_key)
        .send()
        .await
        .expect("request");

    let body = error_body(response, StatusCode::UNAUTHORIZED).await;
    assert_eq!(body["errorCode"], "UNAUTHORIZED_ERROR");
}

#[tokio::test]
async fn a_request_head_of_300_kilobytes_is_refused_with_431_and_nothing_stored() {
    let app = spawn_app().await;
    app.put_process(PROCESS, guide_process(None)).await;

    let response = app
        .client
        .post(app.url(&TestApp::start_path(PROCESS)))
        .header("x-api-key", &app.api_key)
        .header("x-padding", "p".repeat(300 * 1024))
        .json(&serde_json::json!({"data": {"reference": "padded"}}))
        .send()
        .await
        .expect("request");

    assert_eq!(
        response.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    let found = app
        .client
        .get(app.url("/v2/public/executions?reference=padded"))
        .header("x-api-key", &app.api_key)
        .send()
        .await
        .expect("look-up");
    let found: serde_json::Value = found.json().await.expect("json");
    assert_eq!(found["data"], serde_json::json!([]));
}

#[tokio::test]
async fn a_server_whose_log_reader_went_away_starts_serves_and_stops_on_sigterm() {
    use crate::helpers::{
        ADMIN_TOKEN, ChildProcess, free_local_address, fresh_database_url, wait_until_serving,
    };
    let database_url = fresh_database_url().await;
    let address = free_local_address();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_spektr-server"))
        .env("DATABASE_URL", &database_url)
        .env("BIND_ADDR", &address)
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env(
            "BOOTSTRAP_FILE",
            concat!(env!("CARGO_MANIFEST_DIR"), "/examples/bootstrap.json"),
        )
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn spektr-server");
    // The log reader (a shipper that restarted, `| head`) is gone before the first line.
    drop(child.stdout.take());
    drop(child.stderr.take());
    let mut server = ChildProcess(child);
    let base_url = format!("http://{address}");
    spektr_server::events::client::install_crypto_provider();
    let client = reqwest::Client::new();
    wait_until_serving(&client, &base_url).await;
    let started = client
        .post(format!(
            "{base_url}/v2/public/actions/processId/kyb-onboarding/workspaceId/demo-workspace"
        ))
        .header("x-api-key", "demo-api-key-change-me-0123456789")
        .json(&serde_json::json!({"data": {"reference": "nobody-reads-the-logs"}}))
        .send()
        .await
        .expect("start");
    assert_eq!(started.status(), StatusCode::CREATED);

    let signalled = std::process::Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(signalled.success());
    let waited = std::time::Instant::now();
    let status = loop {
        if let Some(status) = server.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            waited.elapsed() < PATIENCE,
            "SIGTERM did not stop the server"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
}
