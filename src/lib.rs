//! Spektr External Step server: a self-hosted backend for Spektr's public External Step API.
//!
//! `Server::build` wires the store, the engine and the router from a `Config`; `main` and the
//! integration tests both go through it.

pub mod api;
pub mod bootstrap;
pub mod config;
pub mod engine;
pub mod events;
mod http;
pub mod monitoring;
pub mod store;
pub mod telemetry;
pub mod validation;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::metrics::MetricsEndpoint;
use crate::api::{AppState, HttpLimits};
use crate::config::Config;
use crate::engine::sweeper::{self, SweeperOptions};
use crate::engine::{Engine, EngineOptions};
use crate::events::delivery::{self, DeliveryOptions};
use crate::store::{IdempotencyTimes, StoreOptions};

/// A configured server, ready to serve.
pub struct Server {
    config: Config,
    engine: Arc<Engine>,
}

/// How long a request owns its idempotency key before another may take it over; longer than
/// any request may run.
const IDEMPOTENCY_LEASE: Duration = Duration::from_secs(120);

impl Server {
    /// Connects and migrates the database and applies the bootstrap file.
    pub async fn build(config: Config) -> anyhow::Result<Server> {
        config.validate().map_err(anyhow::Error::msg)?;
        let options = StoreOptions {
            max_connections: config.db_max_connections,
            acquire_timeout: Duration::from_millis(config.db_acquire_timeout_ms),
            announce_deadlines_within_ms: config.sweeper_interval_ms as i64,
        };
        let store = store::connect(&config.database_url, &options)
            .await
            .with_context(|| format!("cannot open database {}", config.redacted_database_url()))?;
        let engine = Arc::new(Engine::new(
            store,
            EngineOptions {
                idempotency: IdempotencyTimes {
                    ttl_ms: (config.idempotency_ttl_secs * 1000) as i64,
                    lease_ms: IDEMPOTENCY_LEASE.as_millis() as i64,
                },
                hosts: config.host_policy(),
                api_key_cache_ttl: Duration::from_secs(config.api_key_cache_secs),
            },
        ));
        if let Some(path) = &config.bootstrap_file {
            bootstrap::apply(&engine, path).await?;
        }
        Ok(Server { config, engine })
    }

    /// The engine, for tests that drive it directly.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Serves on `listener` until `shutdown` is cancelled, then finishes in-flight requests
    /// and the sweeper's batch in hand.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let store = self.engine.store();
        let address = listener.local_addr()?;
        let schema_version = store.schema_version().await?;
        tracing::info!(
            address = %address,
            backend = store.backend().as_str(),
            schema_version,
            sweeper = self.config.sweeper_enabled,
            "spektr-server listening"
        );
        let tasks = TaskTracker::new();
        if self.config.sweeper_enabled {
            let options = SweeperOptions {
                max_interval: Duration::from_millis(self.config.sweeper_interval_ms),
                batch_size: self.config.sweeper_batch_size,
                parallelism: self.config.sweeper_parallelism,
            };
            self.engine.listen_for_deadlines(shutdown.clone());
            tasks.spawn(sweeper::run_sweeper(
                self.engine.clone(),
                options,
                shutdown.clone(),
            ));
        }
        if self.config.delivery_enabled {
            let options = DeliveryOptions {
                retry_schedule: self.config.retry_schedule().map_err(anyhow::Error::msg)?,
                timeout: Duration::from_millis(self.config.webhook_timeout_ms),
                concurrency: self.config.webhook_concurrency,
                endpoint_concurrency: self.config.webhook_endpoint_concurrency,
                poll_interval: Duration::from_secs(1),
                hosts: self.config.host_policy(),
            };
            let client = events::client::build_client(options.timeout)?;
            tasks.spawn(delivery::run_delivery(
                self.engine.store().clone(),
                client,
                options,
                self.engine.events_written(),
                shutdown.clone(),
            ));
        }
        let metrics = self.metrics_endpoint(&tasks, &shutdown);
        tasks.close();

        let state = AppState {
            engine: self.engine.clone(),
            admin_token: self.config.admin_token.as_deref().map(Arc::from),
            metrics,
        };
        let limits = HttpLimits {
            max_body_bytes: self.config.max_body_bytes,
            request_timeout: self.config.request_timeout(),
        };
        let app = api::router(state, limits);
        let served = http::serve(
            listener,
            app,
            self.config.header_read_timeout(),
            shutdown.clone(),
        )
        .await;
        shutdown.cancel();
        tasks.wait().await;
        tracing::info!("spektr-server stopped");
        served.context("HTTP server failed")
    }

    /// What `/metrics` serves, with the recorder's upkeep running; `None` when disabled.
    fn metrics_endpoint(
        &self,
        tasks: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Option<Arc<MetricsEndpoint>> {
        if !self.config.metrics_enabled {
            return None;
        }
        let handle = monitoring::recorder()?;
        tasks.spawn(monitoring::run_upkeep(handle, shutdown.clone()));
        Some(Arc::new(MetricsEndpoint {
            scrape: monitoring::Scrape::new(handle, self.engine.store().clone()),
            token: self.config.metrics_token.clone(),
        }))
    }
}
