//! The timeout sweeper: a loop in every server process that times out External Steps whose
//! deadline has passed.
//!
//! It sleeps until the earliest stored deadline, as the database clock sees it, and is woken
//! early when this process stores a new deadline, so steps time out within milliseconds of
//! their deadline. Deadlines stored by other processes are found at the latest after
//! `max_interval`. Each pass locks its batch with SKIP LOCKED on Postgres, so any number of
//! processes can sweep at once without timing a step out twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::Engine;

/// The sweeper's alarm clock: writers ring it when they store a deadline, but while the
/// sweeper sleeps it only wakes for a deadline due before the time it already means to wake
/// (a start with a 30-minute timeout does not cost a sweeper pass).
pub struct Alarm {
    notify: Arc<Notify>,
    base: Instant,
    /// Nanoseconds after `base` at which the sweeper will wake by itself, plus one; 0 while it
    /// is awake, when every new deadline rings (it may have read the deadlines already).
    sleeping_until: AtomicU64,
}

impl Alarm {
    pub fn new() -> Self {
        Alarm {
            notify: Arc::new(Notify::new()),
            base: Instant::now(),
            sleeping_until: AtomicU64::new(0),
        }
    }

    /// The bell itself, for signals that always wake (another replica's announcement).
    pub fn bell(&self) -> Arc<Notify> {
        self.notify.clone()
    }

    /// A deadline `in_ms` milliseconds away (by the database clock) was committed.
    pub fn deadline_stored(&self, in_ms: i64) {
        let until = self.sleeping_until.load(Ordering::Acquire);
        let due = self.base.elapsed() + Duration::from_millis(in_ms.max(0) as u64);
        if until == 0 || (due.as_nanos() as u64) < until {
            self.notify.notify_one();
        }
    }

    fn sleeping_for(&self, wait: Duration) {
        let until = (self.base.elapsed() + wait).as_nanos() as u64;
        self.sleeping_until.store(until.max(1), Ordering::Release);
    }

    fn awake(&self) {
        self.sleeping_until.store(0, Ordering::Release);
    }

    async fn rung(&self) {
        self.notify.notified().await;
    }
}

impl Default for Alarm {
    fn default() -> Self {
        Alarm::new()
    }
}

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
    let alarm = engine.alarm();
    while !shutdown.is_cancelled() {
        alarm.awake();
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
        // A deadline committed after `until_next_deadline` read them rang the alarm while it
        // was still marked awake, and the bell keeps that ring for `rung`.
        alarm.sleeping_for(wait);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
            _ = alarm.rung() => {}
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
