//! A real HTTP webhook receiver started inside a test: it records the method, path, headers
//! and body of every request and answers as its script says (a status, or never).

// Not every test module uses every helper.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How long the waits below poll before they fail the test.
pub const WAIT: Duration = Duration::from_secs(30);

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Answer with this status and an empty body.
    Status(u16),
    /// Never answer (until the sender gives up or the test ends).
    Hang,
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: String,
}

impl Received {
    /// A header's value, or "" when it is missing.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    }

    /// The `webhook-id` header.
    pub fn webhook_id(&self) -> String {
        self.header("webhook-id").to_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("body is not JSON ({error}): {}", self.body))
    }

    /// The body's `type`.
    pub fn event_type(&self) -> String {
        self.json()["type"].as_str().unwrap_or_default().to_owned()
    }

    /// Verifies the request with the `standardwebhooks` crate (an implementation independent
    /// of the server's) and the endpoint's `secret`.
    pub fn verify(&self, secret: &str) -> Result<(), standardwebhooks::WebhookError> {
        standardwebhooks::Webhook::new(secret)?.verify(self.body.as_bytes(), &self.headers)
    }
}

type Script = Arc<dyn Fn(usize) -> Reply + Send + Sync>;

struct Shared {
    requests: Mutex<Vec<Received>>,
    script: Script,
}

/// A running receiver; it stops when dropped.
pub struct Receiver {
    /// Where to send webhooks: `http://127.0.0.1:{port}/hook`.
    pub url: String,
    shared: Arc<Shared>,
    handle: JoinHandle<()>,
}

impl Receiver {
    /// A receiver that answers every request with 200.
    pub async fn start() -> Receiver {
        Self::scripted(|_| Reply::Status(200)).await
    }

    /// A receiver that answers the first `failures` requests with 500, then 200.
    pub async fn failing_first(failures: usize) -> Receiver {
        Self::scripted(move |index| {
            if index < failures {
                Reply::Status(500)
            } else {
                Reply::Status(200)
            }
        })
        .await
    }

    /// A receiver that never answers its first request and answers the others with 200.
    pub async fn hanging_first() -> Receiver {
        Self::scripted(|index| {
            if index == 0 {
                Reply::Hang
            } else {
                Reply::Status(200)
            }
        })
        .await
    }

    /// A receiver whose answer to the request numbered `index` (from 0, in arrival order) is
    /// `script(index)`.
    pub async fn scripted(script: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Receiver {
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            script: Arc::new(script),
        });
        let app = Router::new().fallback(record).with_state(shared.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let handle = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("receiver serves");
        });
        Receiver {
            url: format!("http://{address}/hook"),
            shared,
            handle,
        }
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        self.shared.requests.lock().expect("lock").clone()
    }

    /// Waits (bounded by `WAIT`) until `done` holds for the requests received; returns them.
    pub async fn wait_until(
        &self,
        what: &str,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let started = Instant::now();
        loop {
            let requests = self.requests();
            if done(&requests) {
                return requests;
            }
            assert!(
                started.elapsed() < WAIT,
                "waited {WAIT:?} for {what}; got {} requests: {:?}",
                requests.len(),
                requests
                    .iter()
                    .map(|request| (request.webhook_id(), request.event_type()))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (bounded) until at least `count` requests arrived; returns all of them.
    pub async fn wait_for(&self, count: usize) -> Vec<Received> {
        self.wait_until(&format!("{count} requests"), |requests| {
            requests.len() >= count
        })
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

async fn record(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let index = {
        let mut requests = shared.requests.lock().expect("lock");
        requests.push(Received {
            method,
            path: uri.path().to_owned(),
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        requests.len() - 1
    };
    match (shared.script)(index) {
        Reply::Status(status) => StatusCode::from_u16(status)
            .expect("a valid status")
            .into_response(),
        Reply::Hang => std::future::pending().await,
    }
}
