//! Postgres going away and coming back while the server runs.
//!
//! The server reaches Postgres through a TCP proxy inside the test. "Taking Postgres away"
//! cuts every proxied connection and closes the proxy's port, so new connections are refused,
//! as when the database host restarts; "bringing it back" opens the port again. Nothing else
//! (other tests, the database itself) notices. SQLite is a file inside the process and has no
//! such outage, so these tests run on Postgres only.

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, Row};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use spektr_server::config::Config;

use crate::helpers::{
    PROCESS, TestApp, WORKSPACE, error_body, fresh_database_url, guide_process, is_replay, kinds,
    on_postgres, start_server,
};
use crate::receiver::Receiver;
use crate::timeouts::wait_until_settled;

/// How long a test waits for recovery before it fails.
const PATIENCE: Duration = Duration::from_secs(30);

/// A TCP proxy in front of Postgres that the test can switch off and on.
struct PostgresProxy {
    address: SocketAddr,
    upstream: String,
    accepting: Option<JoinHandle<()>>,
    /// Cancelled to cut every connection opened since the proxy last came up.
    links: CancellationToken,
}

impl PostgresProxy {
    /// A proxy to the host and port of `database_url`.
    async fn start(database_url: &str) -> PostgresProxy {
        let url = url::Url::parse(database_url).expect("TEST_DATABASE_URL is a URL");
        let host = url
            .host_str()
            .expect("the outage tests need TEST_DATABASE_URL to name a TCP host");
        let upstream = format!("{host}:{}", url.port().unwrap_or(5432));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let mut proxy = PostgresProxy {
            address: listener.local_addr().expect("proxy address"),
            upstream,
            accepting: None,
            links: CancellationToken::new(),
        };
        proxy.accept_on(listener);
        proxy
    }

    /// `database_url` with its host and port replaced by the proxy's.
    fn url_for(&self, database_url: &str) -> String {
        let mut url = url::Url::parse(database_url).expect("URL");
        url.set_host(Some(&self.address.ip().to_string()))
            .expect("set host");
        url.set_port(Some(self.address.port())).expect("set port");
        url.to_string()
    }

    fn accept_on(&mut self, listener: TcpListener) {
        let upstream = self.upstream.clone();
        let links = self.links.clone();
        self.accepting = Some(tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                let (upstream, links) = (upstream.clone(), links.clone());
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    // Returning drops both sockets: the server and Postgres each see their
                    // side of the connection close.
                    tokio::select! {
                        _ = links.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    }
                });
            }
        }));
    }

    /// Postgres "goes away": every connection through the proxy is cut, and new ones are
    /// refused.
    async fn take_down(&mut self) {
        if let Some(accepting) = self.accepting.take() {
            accepting.abort();
            let _ = accepting.await;
        }
        self.links.cancel();
        self.links = CancellationToken::new();
    }

    /// Postgres "comes back" on the same address.
    async fn bring_back(&mut self) {
        let listener = TcpListener::bind(self.address)
            .await
            .expect("bind the proxy's port again");
        self.accept_on(listener);
    }
}

impl Drop for PostgresProxy {
    fn drop(&mut self) {
        if let Some(accepting) = self.accepting.take() {
            accepting.abort();
        }
        self.links.cancel();
    }
}

/// A server whose only way to Postgres is the proxy.
struct Outage {
    app: TestApp,
    proxy: PostgresProxy,
    /// The test's database, reached without the proxy.
    direct_url: String,
}

impl Outage {
    /// The server on a fresh database behind a proxy, or `None` (after saying so) on SQLite.
    async fn start(adjust: impl FnOnce(&mut Config)) -> Option<Outage> {
        if !on_postgres() {
            // The harness names each test's thread after the test. Straight to stderr: the
            // harness swallows `eprintln!` output of passing tests.
            let test = std::thread::current().name().unwrap_or("outage").to_owned();
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: needs Postgres (set TEST_DATABASE_URL)"
            );
            return None;
        }
        let direct_url = fresh_database_url().await;
        let proxy = PostgresProxy::start(&direct_url).await;
        let mut app = start_server(&proxy.url_for(&direct_url), |config| {
            // Short waits, so that an outage is answered at once rather than after the
            // defaults; the request timeout bounds anything the pool timeout does not.
            config.db_acquire_timeout_ms = 500;
            config.request_timeout_secs = 5;
            adjust(config);
        })
        .await;
        app.api_key = app.other_workspace(WORKSPACE).await;
        Some(Outage {
            app,
            proxy,
            direct_url,
        })
    }

    /// A connection to the test's database that does not go through the proxy.
    async fn direct(&self) -> PgConnection {
        PgConnection::connect(&self.direct_url)
            .await
            .expect("connect to Postgres directly")
    }

    /// Waits (bounded) until `/readyz` answers 200 again.
    async fn wait_until_ready(&self) {
        let started = Instant::now();
        loop {
            let ready = self.app.client.get(self.app.url("/readyz")).send().await;
            if ready.is_ok_and(|response| response.status() == StatusCode::OK) {
                return;
            }
            assert!(started.elapsed() < PATIENCE, "the server did not recover");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Checks a 503 in the error envelope.
async fn assert_unavailable(response: Response) {
    let body = error_body(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body["errorCode"], "SERVICE_UNAVAILABLE_ERROR", "{body}");
}

fn company() -> Value {
    json!({"company_name": "Outage Ltd", "country_of_incorporation": "DK"})
}

async fn submitted(app: &TestApp, token: &str) {
    let response = app.submit(token, company()).await;
    assert_eq!(response.status(), StatusCode::OK);
}

/// The references of every customer, sorted, read without the proxy.
async fn stored_references(connection: &mut PgConnection) -> Vec<String> {
    sqlx::query("select reference from customers order by reference")
        .fetch_all(connection)
        .await
        .expect("customers")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test]
async fn a_postgres_outage_answers_503_and_the_server_recovers_without_losing_writes() {
    let Some(mut outage) = Outage::start(|_| {}).await else {
        return;
    };
    let receiver = Receiver::start().await;
    outage
        .app
        .create_webhook(json!({"url": receiver.url}))
        .await;
    outage
        .app
        .put_process("expiring", guide_process(Some(2.0)))
        .await;
    let app = &outage.app;
    let waiting = app.start_token(PROCESS, "acknowledged-waiting").await;
    let completed = app.start_token(PROCESS, "acknowledged-completed").await;
    submitted(app, &completed).await;
    let expiring = app.start_token("expiring", "expires-during-outage").await;
    let deadline_passed = Instant::now() + Duration::from_millis(2_500);
    let retried = json!({"data": {"reference": "retried-after-outage"}});

    outage.proxy.take_down().await;

    // Every request is answered, with a 503 in the envelope (the server's request timeout is
    // 5 s here, the test client's 30 s).
    assert_unavailable(
        app.start_raw(
            PROCESS,
            json!({"data": {"reference": "refused-during-outage"}}),
        )
        .await,
    )
    .await;
    assert_unavailable(app.start_with_key(PROCESS, &retried, "retry-me").await).await;
    assert_unavailable(app.current_step(&waiting).await).await;
    assert_unavailable(app.submit(&waiting, company()).await).await;
    let ready = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz answers");
    assert_unavailable(ready).await;
    app.assert_still_serving().await;
    // The expiring step's deadline passes while Postgres is away.
    tokio::time::sleep_until(deadline_passed.into()).await;

    outage.proxy.bring_back().await;
    outage.wait_until_ready().await;

    // The same requests now succeed, on the same server process.
    let retry = app.start_with_key(PROCESS, &retried, "retry-me").await;
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert!(!is_replay(&retry), "nothing was stored under the key");
    let retried_token = retry.json::<Value>().await.expect("json")["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let after = app.start_token(PROCESS, "acknowledged-after").await;
    assert_eq!(
        app.current_step_json(&waiting).await["execution"]["status"],
        "pending"
    );
    submitted(app, &waiting).await;
    // The sweeper survived: the deadline that passed during the outage is acted on.
    let expired = wait_until_settled(app, &expiring).await;
    assert_eq!(
        expired["execution"]["outcome"], "manual_review",
        "{expired}"
    );

    // Every acknowledged write is there, and the refused start is not.
    for token in [&waiting, &completed] {
        let step = app.current_step_json(token).await;
        assert_eq!(step["execution"]["outcome"], "approved", "{step}");
        let activity = app
            .activity(step["execution"]["id"].as_str().expect("id"))
            .await;
        assert!(kinds(&activity).contains(&"external_data_received".to_owned()));
    }
    for token in [&retried_token, &after] {
        assert_eq!(
            app.current_step_json(token).await["execution"]["status"],
            "pending"
        );
    }
    let mut direct = outage.direct().await;
    assert_eq!(
        stored_references(&mut direct).await,
        [
            "acknowledged-after",
            "acknowledged-completed",
            "acknowledged-waiting",
            "expires-during-outage",
            "retried-after-outage",
        ]
    );
    // The delivery worker survived: every event, including those written after the outage,
    // reaches the receiver.
    let (events,): (i64,) = sqlx::query_as("select count(*) from events")
        .fetch_one(&mut direct)
        .await
        .expect("count events");
    let delivered = receiver
        .wait_until("every event delivered", |requests| {
            requests.len() as i64 >= events
        })
        .await;
    assert!(
        delivered
            .iter()
            .any(|request| request.event_type() == "external_data_timed_out")
    );
}

/// Sends `request` (a start), cuts Postgres away while the start's transaction has written
/// the customer and the execution but not yet its events' deliveries, and brings Postgres back
/// once that transaction is over; returns the answer to the start.
async fn cut_off_mid_start(outage: &mut Outage, request: reqwest::RequestBuilder) -> Response {
    // A start's last insert queues a delivery for every endpoint of the workspace, and the
    // delivery's foreign key must share-lock the endpoint row. Holding that row stops the start
    // there, mid-transaction, after it has written the customer and the execution.
    let endpoint = outage
        .app
        .create_webhook(json!({"url": "http://127.0.0.1:9/never-answers"}))
        .await;
    let mut holder = outage.direct().await;
    sqlx::query("begin")
        .execute(&mut holder)
        .await
        .expect("begin");
    sqlx::query("select 1 from webhook_endpoints where id = $1::uuid for update")
        .bind(endpoint["id"].as_str().expect("endpoint id"))
        .execute(&mut holder)
        .await
        .expect("lock the endpoint");
    let (holder_pid,): (i32,) = sqlx::query_as("select pg_backend_pid()")
        .fetch_one(&mut holder)
        .await
        .expect("pid");
    let start = tokio::spawn(request.send());
    let mut watcher = outage.direct().await;
    let blocked_pid = wait_for_row(
        &mut watcher,
        "select pid from pg_stat_activity where $1 = any(pg_blocking_pids(pid))",
        holder_pid,
        "the start to reach the lock",
    )
    .await;

    outage.proxy.take_down().await;
    let response = start
        .await
        .expect("request task")
        .expect("the start is answered");
    // Released, the cut-off transaction runs on until it waits for its next command from a
    // connection that is gone; Postgres then ends it.
    sqlx::query("rollback")
        .execute(&mut holder)
        .await
        .expect("rollback");
    wait_for_row(
        &mut watcher,
        "select 1 where not exists (select from pg_stat_activity where pid = $1)",
        blocked_pid,
        "the cut-off backend to end",
    )
    .await;
    outage.proxy.bring_back().await;
    outage.wait_until_ready().await;
    response
}

/// Waits (bounded) until `query`, given `pid`, returns a row; returns its first column.
async fn wait_for_row(
    connection: &mut PgConnection,
    query: &'static str,
    pid: i32,
    what: &str,
) -> i32 {
    let started = Instant::now();
    loop {
        let row: Option<(i32,)> = sqlx::query_as(query)
            .bind(pid)
            .fetch_optional(&mut *connection)
            .await
            .expect("pg_stat_activity");
        if let Some((value,)) = row {
            return value;
        }
        assert!(started.elapsed() < PATIENCE, "waited too long for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many customers, executions and events the reference `reference` has.
async fn stored_for(outage: &Outage, reference: &str) -> (i64, i64, i64) {
    let row = sqlx::query(
        r#"select count(distinct c.spektr_id), count(distinct e.id), count(v.id)
           from customers c
           left join executions e using (spektr_id)
           left join events v on v.execution_id = e.id
           where c.reference = $1"#,
    )
    .bind(reference)
    .fetch_one(&mut outage.direct().await)
    .await
    .expect("counts");
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test]
async fn a_start_cut_off_mid_transaction_is_stored_completely_or_not_at_all() {
    let Some(mut outage) = Outage::start(|_| {}).await else {
        return;
    };
    let request = outage
        .app
        .client
        .post(outage.app.url(&TestApp::start_path(PROCESS)))
        .header("x-api-key", &outage.app.api_key)
        .json(&json!({"data": {"reference": "cut-off", "segment": "smb"}}));

    let response = cut_off_mid_start(&mut outage, request).await;

    assert_unavailable(response).await;
    let stored = stored_for(&outage, "cut-off").await;
    // Unanswered is not unwritten in general (a cut can fall between commit and answer), but
    // nothing is ever half-written; here the commit was never sent.
    assert!(
        stored == (0, 0, 0) || (stored.0 == 1 && stored.1 == 1 && stored.2 > 0),
        "customers, executions, events: {stored:?}"
    );
    assert_eq!(stored, (0, 0, 0), "the transaction never committed");
    let retry = outage.app.start(PROCESS, "cut-off").await;
    let customer = outage
        .app
        .customer(retry["spektrId"].as_str().expect("spektrId"))
        .await;
    assert_eq!(customer["fields"], json!({}), "{customer}");
}

#[tokio::test]
async fn a_retry_after_an_outage_runs_under_the_key_of_a_start_it_cut_off() {
    let Some(mut outage) = Outage::start(|_| {}).await else {
        return;
    };
    let body = json!({"data": {"reference": "cut-off-with-key"}});
    let request = outage
        .app
        .client
        .post(outage.app.url(&TestApp::start_path(PROCESS)))
        .header("x-api-key", &outage.app.api_key)
        .header("idempotency-key", "cut-off-key")
        .json(&body);
    // The key was claimed before the cut, and the failed start could not give it up while
    // Postgres was away.
    assert_unavailable(cut_off_mid_start(&mut outage, request).await).await;

    // Claims last two minutes; the retry must not have to wait for that (while the key is
    // being given up, 409 is the documented answer).
    let started = Instant::now();
    let retry = loop {
        let retry = outage
            .app
            .start_with_key(PROCESS, &body, "cut-off-key")
            .await;
        if retry.status() != StatusCode::CONFLICT {
            break retry;
        }
        assert!(started.elapsed() < PATIENCE, "the key stayed claimed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    assert_eq!(retry.status(), StatusCode::CREATED);
    assert!(!is_replay(&retry));
    let stored = stored_for(&outage, "cut-off-with-key").await;
    assert_eq!((stored.0, stored.1), (1, 1), "{stored:?}");
}

#[tokio::test]
async fn the_deadline_listener_reconnects_and_catches_up_after_an_outage() {
    // This server's sweeper sleeps a minute between regular passes, so only an announcement
    // from the other server (or the listener's catch-up after reconnecting) can make it time
    // a step out within the wait below.
    let long_sleep = |config: &mut Config| config.sweeper_interval_ms = 60_000;
    let Some(mut outage) = Outage::start(long_sleep).await else {
        return;
    };
    outage
        .app
        .put_process("expiring", guide_process(Some(1.0)))
        .await;
    // A second server, reaching Postgres directly, that starts executions but sweeps nothing.
    let mut other = start_server(&outage.direct_url, |config| {
        long_sleep(config);
        config.sweeper_enabled = false;
        config.delivery_enabled = false;
    })
    .await;
    other.api_key = outage.app.api_key.clone();
    // Let the sweeper settle into its long sleep, and the listener listen.
    tokio::time::sleep(Duration::from_millis(300)).await;

    outage.proxy.take_down().await;
    // Announced while this server cannot hear it.
    let during = other.start_token("expiring", "started-during-outage").await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    outage.proxy.bring_back().await;
    outage.wait_until_ready().await;

    let step = wait_until_settled(&other, &during).await;
    assert_eq!(step["execution"]["outcome"], "manual_review", "{step}");
    // And the listener hears new announcements again.
    let after = other.start_token("expiring", "started-after-outage").await;
    let step = wait_until_settled(&other, &after).await;
    assert_eq!(step["execution"]["outcome"], "manual_review", "{step}");
}
