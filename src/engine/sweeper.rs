//! The timeout sweeper: a loop in every server process that times out External Steps whose
//! deadline has passed.
//!
//! It sleeps until the earliest stored deadline, as the database clock sees it, and is woken
//! early when this process stores a new deadline, so steps time out within milliseconds of
//! their deadline. Deadlines stored by other processes are found at the latest after
//! `max_interval`. Each pass locks its batch with SKIP LOCKED on Postgres, so any number of
//! processes can sweep at once without timing a step out twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::Engine;

/// How the sweeper paces itself.
#[derive(Debug, Clone, Copy)]
pub struct SweeperOptions {
    /// The longest sleep between passes, which bounds how late a deadline stored by another
    /// process can be noticed.
    pub max_interval: Duration,
    /// Steps timed out per transaction.
    pub batch_size: i64,
}

/// How often expired idempotency records are cleared.
const PURGE_EVERY: Duration = Duration::from_secs(60);
/// Pause after a failed pass, so an unreachable database is not hammered.
const ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// Pause when due steps exist but the last pass could time none of them out.
const STUCK_PAUSE: Duration = Duration::from_millis(20);

/// Runs until `shutdown` is cancelled; a pass in progress is finished first.
pub async fn run_sweeper(
    engine: Arc<Engine>,
    options: SweeperOptions,
    shutdown: CancellationToken,
) {
    tracing::info!(
        max_interval_ms = options.max_interval.as_millis() as u64,
        batch_size = options.batch_size,
        "sweeper started"
    );
    let mut last_purge: Option<Instant> = None;
    while !shutdown.is_cancelled() {
        let wait = match drain(&engine, options).await {
            // A due step that could not be timed out (held by a submit that settles it, or
            // unreadable) must not make the loop spin.
            Ok(0) => until_next_deadline(&engine, options).await.max(STUCK_PAUSE),
            Ok(_) => until_next_deadline(&engine, options).await,
            Err(error) => {
                tracing::error!(error = %error, "sweeper pass failed");
                ERROR_BACKOFF
            }
        };
        if last_purge.is_none_or(|at| at.elapsed() >= PURGE_EVERY) {
            last_purge = Some(Instant::now());
            if let Err(error) = engine.purge_idempotency(10_000).await {
                tracing::warn!(error = %error, "idempotency purge failed");
            }
        }
        if wait.is_zero() {
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
            _ = engine.deadline_added() => {}
        }
    }
    tracing::info!("sweeper stopped");
}

/// Sweeps full batches until a batch comes back short; returns how many steps timed out.
async fn drain(engine: &Engine, options: SweeperOptions) -> Result<usize, super::EngineError> {
    let mut total = 0;
    loop {
        let timed_out = engine.sweep_once(options.batch_size).await?;
        total += timed_out;
        if timed_out > 0 {
            tracing::info!(timed_out, "timed out external steps");
        }
        if (timed_out as i64) < options.batch_size {
            return Ok(total);
        }
    }
}

async fn until_next_deadline(engine: &Engine, options: SweeperOptions) -> Duration {
    match engine.next_deadline_in().await {
        Ok(Some(ms)) => Duration::from_millis(ms.max(0) as u64).min(options.max_interval),
        Ok(None) => options.max_interval,
        Err(error) => {
            tracing::error!(error = %error, "sweeper could not read the next deadline");
            ERROR_BACKOFF
        }
    }
}
