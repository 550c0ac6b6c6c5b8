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

use tokio::task::JoinSet;
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
    /// Batches run at once while full batches keep coming.
    pub parallelism: usize,
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

/// Sweeps until a batch comes back short; returns how many steps timed out. While batches
/// come back full, `parallelism` of them run at once: SKIP LOCKED gives each its own rows.
async fn drain(engine: &Arc<Engine>, options: SweeperOptions) -> Result<usize, super::EngineError> {
    let mut total = 0;
    let mut width = 1;
    loop {
        let mut batches = JoinSet::new();
        for _ in 0..width {
            let engine = engine.clone();
            batches.spawn(async move { engine.sweep_once(options.batch_size).await });
        }
        let mut all_full = true;
        let mut failure = None;
        // Every batch is awaited, even after one fails, so none is left running unobserved.
        while let Some(joined) = batches.join_next().await {
            match joined {
                Ok(Ok(timed_out)) => {
                    total += timed_out;
                    all_full &= timed_out as i64 >= options.batch_size;
                }
                Ok(Err(error)) => failure = Some(error),
                Err(panic) => {
                    tracing::error!(error = %panic, "sweeper batch panicked");
                    all_full = false;
                }
            }
        }
        if let Some(error) = failure {
            return Err(error);
        }
        if total > 0 && !all_full {
            tracing::info!(timed_out = total, "timed out external steps");
        }
        if !all_full {
            return Ok(total);
        }
        width = options.parallelism;
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
