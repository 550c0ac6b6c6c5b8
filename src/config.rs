//! Configuration: one clap struct, every field a flag and an environment variable, so
//! `spektr-server --help` is the complete reference.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser, ValueEnum};

/// The longest webhook retry delay accepted, in seconds (a week).
pub const MAX_RETRY_DELAY_SECS: f64 = 7.0 * 24.0 * 3600.0;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Server configuration.
#[derive(Clone, Parser)]
#[command(
    name = "spektr-server",
    version,
    about = "Self-hosted Spektr External Step API"
)]
pub struct Config {
    /// Database: `sqlite://path/to/file.db` (created if missing) or `postgres://…`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/spektr.db")]
    pub database_url: String,

    /// Address to listen on.
    #[arg(long, env = "BIND_ADDR", default_value = "127.0.0.1:8080")]
    pub bind_addr: SocketAddr,

    /// Bearer token for the admin API; the admin API is disabled when unset.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// JSON file of workspaces, API keys and processes applied idempotently at start-up.
    #[arg(long, env = "BOOTSTRAP_FILE")]
    pub bootstrap_file: Option<PathBuf>,

    /// Log filter, in `RUST_LOG` syntax.
    #[arg(long = "log-level", env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Most database connections in the pool.
    #[arg(long, env = "SPEKTR_DB_MAX_CONNECTIONS", default_value_t = 10)]
    pub db_max_connections: u32,

    /// Longest wait for a database connection, in milliseconds; a request that waits longer
    /// (database down, or every connection busy) is answered with 503.
    #[arg(long, env = "SPEKTR_DB_ACQUIRE_TIMEOUT_MS", default_value_t = 5000)]
    pub db_acquire_timeout_ms: u64,

    /// Whether this process runs the timeout sweeper (turn off for request-only replicas).
    #[arg(long, env = "SPEKTR_SWEEPER_ENABLED", default_value_t = true, action = ArgAction::Set)]
    pub sweeper_enabled: bool,

    /// Longest sleep of the sweeper between passes, in milliseconds.
    #[arg(long, env = "SPEKTR_SWEEPER_INTERVAL_MS", default_value_t = 1000)]
    pub sweeper_interval_ms: u64,

    /// Steps the sweeper times out per transaction.
    #[arg(long, env = "SPEKTR_SWEEPER_BATCH_SIZE", default_value_t = 500)]
    pub sweeper_batch_size: i64,

    /// Batches the sweeper runs at once while many steps are due, 1 to 64 (a backlog drains
    /// faster on Postgres, up to its cores; SQLite runs them one after another).
    #[arg(long, env = "SPEKTR_SWEEPER_PARALLELISM", default_value_t = 2)]
    pub sweeper_parallelism: usize,

    /// Seconds an authenticated API key is trusted without asking the database again: how
    /// long a key revoked through another server process may still work here (0 asks every
    /// time).
    #[arg(long, env = "SPEKTR_API_KEY_CACHE_SECS", default_value_t = 10)]
    pub api_key_cache_secs: u64,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "SPEKTR_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Requests running longer than this many seconds are answered with 503.
    #[arg(long, env = "SPEKTR_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,

    /// Connections that take longer than this many seconds to send a request's headers (or
    /// stay idle between requests longer) are closed.
    #[arg(long, env = "SPEKTR_HEADER_READ_TIMEOUT_SECS", default_value_t = 30)]
    pub header_read_timeout_secs: u64,

    /// How long a response is replayed for a repeated idempotency-key, in seconds.
    #[arg(long, env = "SPEKTR_IDEMPOTENCY_TTL_SECS", default_value_t = 24 * 3600)]
    pub idempotency_ttl_secs: u64,

    /// Whether this process delivers webhooks.
    #[arg(long, env = "SPEKTR_DELIVERY_ENABLED", default_value_t = true, action = ArgAction::Set)]
    pub delivery_enabled: bool,

    /// Timeout of one webhook request, in milliseconds.
    #[arg(long, env = "SPEKTR_WEBHOOK_TIMEOUT_MS", default_value_t = 10_000)]
    pub webhook_timeout_ms: u64,

    /// Delays before each webhook retry, in seconds, comma-separated (fractions allowed).
    #[arg(
        long,
        env = "SPEKTR_WEBHOOK_RETRY_SCHEDULE",
        default_value = "5,30,120,600,1800,3600,7200,14400,28800,28800"
    )]
    pub webhook_retry_schedule: String,

    /// Webhook requests in flight per process.
    #[arg(long, env = "SPEKTR_WEBHOOK_CONCURRENCY", default_value_t = 32)]
    pub webhook_concurrency: usize,

    /// Webhook requests in flight to one endpoint per process.
    #[arg(long, env = "SPEKTR_WEBHOOK_ENDPOINT_CONCURRENCY", default_value_t = 4)]
    pub webhook_endpoint_concurrency: usize,

    /// If set, webhook hosts allowed (comma-separated; `.example.com` matches subdomains).
    #[arg(long, env = "SPEKTR_WEBHOOK_ALLOWED_HOSTS", default_value = "")]
    pub webhook_allowed_hosts: String,

    /// Webhook hosts refused (comma-separated; `.example.com` matches subdomains).
    #[arg(long, env = "SPEKTR_WEBHOOK_DENIED_HOSTS", default_value = "")]
    pub webhook_denied_hosts: String,

    /// Whether `GET /metrics` serves Prometheus metrics (404 when off).
    #[arg(long, env = "SPEKTR_METRICS_ENABLED", default_value_t = true, action = ArgAction::Set)]
    pub metrics_enabled: bool,

    /// If set, `GET /metrics` requires `Authorization: Bearer` with this token.
    #[arg(long, env = "SPEKTR_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
}

impl Config {
    /// Checks values that clap cannot, with a message naming the setting.
    pub fn validate(&self) -> Result<(), String> {
        let url = self.database_url.as_str();
        if !["postgres://", "postgresql://", "sqlite:"]
            .iter()
            .any(|p| url.starts_with(p))
        {
            return Err("DATABASE_URL must start with postgres:// or sqlite://".to_owned());
        }
        let tokens = [
            ("ADMIN_TOKEN", &self.admin_token),
            ("SPEKTR_METRICS_TOKEN", &self.metrics_token),
        ];
        for (name, token) in tokens {
            if token.as_deref().is_some_and(|token| token.len() < 16) {
                return Err(format!("{name} must be at least 16 characters"));
            }
        }
        if self.db_max_connections == 0 {
            return Err("SPEKTR_DB_MAX_CONNECTIONS must be at least 1".to_owned());
        }
        if !(1..=10_000).contains(&self.sweeper_batch_size) {
            return Err("SPEKTR_SWEEPER_BATCH_SIZE must be between 1 and 10000".to_owned());
        }
        if self.api_key_cache_secs > 3600 {
            return Err("SPEKTR_API_KEY_CACHE_SECS must be at most 3600".to_owned());
        }
        if !(1..=64).contains(&self.sweeper_parallelism) {
            return Err("SPEKTR_SWEEPER_PARALLELISM must be between 1 and 64".to_owned());
        }
        if self.sweeper_interval_ms == 0
            || self.request_timeout_secs == 0
            || self.header_read_timeout_secs == 0
            || self.db_acquire_timeout_ms == 0
        {
            return Err("intervals and timeouts must be greater than 0".to_owned());
        }
        if self.webhook_timeout_ms == 0
            || self.webhook_concurrency == 0
            || self.webhook_endpoint_concurrency == 0
        {
            return Err("webhook timeout and concurrency must be greater than 0".to_owned());
        }
        if self.max_body_bytes < 1024 {
            return Err("SPEKTR_MAX_BODY_BYTES must be at least 1024".to_owned());
        }
        if self.idempotency_ttl_secs == 0 {
            return Err("SPEKTR_IDEMPOTENCY_TTL_SECS must be at least 1".to_owned());
        }
        self.retry_schedule()?;
        Ok(())
    }

    /// The webhook retry delays.
    /// Empty means no retries; otherwise every comma-separated item is a number of seconds
    /// from 0 to [`MAX_RETRY_DELAY_SECS`].
    pub fn retry_schedule(&self) -> Result<Vec<Duration>, String> {
        if self.webhook_retry_schedule.trim().is_empty() {
            return Ok(Vec::new());
        }
        self.webhook_retry_schedule
            .split(',')
            .map(str::trim)
            .map(|item| {
                item.parse::<f64>()
                    .ok()
                    .filter(|seconds| (0.0..=MAX_RETRY_DELAY_SECS).contains(seconds))
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| {
                        format!(
                            "SPEKTR_WEBHOOK_RETRY_SCHEDULE: '{item}' is not a number of seconds \
                             from 0 to {MAX_RETRY_DELAY_SECS}"
                        )
                    })
            })
            .collect()
    }

    /// The webhook host policy.
    pub fn host_policy(&self) -> crate::events::client::HostPolicy {
        let list = |text: &str| {
            text.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(str::to_owned)
                .collect()
        };
        crate::events::client::HostPolicy {
            allowed: list(&self.webhook_allowed_hosts),
            denied: list(&self.webhook_denied_hosts),
        }
    }

    /// The request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// How long a client may take to send a request's headers.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs)
    }

    /// The database URL with any password replaced, for logs.
    pub fn redacted_database_url(&self) -> String {
        redact_password(&self.database_url)
    }
}

fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((credentials, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &self.redacted_database_url())
            .field("bind_addr", &self.bind_addr)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "***"))
            .field("bootstrap_file", &self.bootstrap_file)
            .field("log_filter", &self.log_filter)
            .field("log_format", &self.log_format)
            .field("db_max_connections", &self.db_max_connections)
            .field("db_acquire_timeout_ms", &self.db_acquire_timeout_ms)
            .field("sweeper_enabled", &self.sweeper_enabled)
            .field("sweeper_interval_ms", &self.sweeper_interval_ms)
            .field("sweeper_batch_size", &self.sweeper_batch_size)
            .field("sweeper_parallelism", &self.sweeper_parallelism)
            .field("api_key_cache_secs", &self.api_key_cache_secs)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("request_timeout_secs", &self.request_timeout_secs)
            .field("header_read_timeout_secs", &self.header_read_timeout_secs)
            .field("idempotency_ttl_secs", &self.idempotency_ttl_secs)
            .field("delivery_enabled", &self.delivery_enabled)
            .field("webhook_timeout_ms", &self.webhook_timeout_ms)
            .field("webhook_retry_schedule", &self.webhook_retry_schedule)
            .field("webhook_concurrency", &self.webhook_concurrency)
            .field(
                "webhook_endpoint_concurrency",
                &self.webhook_endpoint_concurrency,
            )
            .field("webhook_allowed_hosts", &self.webhook_allowed_hosts)
            .field("webhook_denied_hosts", &self.webhook_denied_hosts)
            .field("metrics_enabled", &self.metrics_enabled)
            .field("metrics_token", &self.metrics_token.as_ref().map(|_| "***"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_secrets() {
        let config = Config::parse_from([
            "spektr-server",
            "--database-url",
            "postgres://app:hunter2@db:5432/spektr",
            "--admin-token",
            "a-very-secret-admin-token",
            "--metrics-token",
            "a-very-secret-metrics-token",
        ]);

        let text = format!("{config:?}");

        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("a-very-secret-admin-token"), "{text}");
        assert!(!text.contains("a-very-secret-metrics-token"), "{text}");
        assert!(text.contains("postgres://app:***@db:5432/spektr"), "{text}");
    }

    #[test]
    fn a_short_metrics_token_is_refused() {
        let config = Config::parse_from(["spektr-server", "--metrics-token", "short"]);

        let error = config.validate().expect_err("too short");

        assert!(error.contains("SPEKTR_METRICS_TOKEN"), "{error}");
    }

    #[test]
    fn out_of_range_settings_are_refused_not_panicked_on() {
        for (flag, value, named) in [
            (
                "--webhook-retry-schedule",
                "1e300",
                "SPEKTR_WEBHOOK_RETRY_SCHEDULE",
            ),
            (
                "--webhook-retry-schedule",
                "1,,2",
                "SPEKTR_WEBHOOK_RETRY_SCHEDULE",
            ),
            (
                "--webhook-retry-schedule=-1",
                "",
                "SPEKTR_WEBHOOK_RETRY_SCHEDULE",
            ),
            ("--max-body-bytes", "0", "SPEKTR_MAX_BODY_BYTES"),
            ("--idempotency-ttl-secs", "0", "SPEKTR_IDEMPOTENCY_TTL_SECS"),
        ] {
            let args = if value.is_empty() {
                vec!["spektr-server", flag]
            } else {
                vec!["spektr-server", flag, value]
            };
            let config = Config::parse_from(args);

            let error = config.validate().expect_err(flag);

            assert!(error.contains(named), "{flag} {value}: {error}");
        }
        for schedule in ["", " ", "0,0.5,604800"] {
            let config =
                Config::parse_from(["spektr-server", "--webhook-retry-schedule", schedule]);
            assert!(config.validate().is_ok(), "{schedule:?}");
        }
    }

    #[test]
    fn defaults_run_on_sqlite_on_localhost() {
        let config = Config::parse_from(["spektr-server"]);

        assert!(config.validate().is_ok());
        assert!(config.database_url.starts_with("sqlite://"));
        assert_eq!(config.bind_addr.to_string(), "127.0.0.1:8080");
        assert!(config.metrics_enabled);
        assert!(config.metrics_token.is_none());
    }
}
