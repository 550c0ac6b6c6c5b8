//! Webhook delivery: a loop in every server process that claims due deliveries from the
//! outbox, sends them signed the Standard Webhooks way, records each attempt, and schedules
//! retries with exponential backoff and jitter until the schedule is used up.
//!
//! Claims carry a lease: a process that crashes mid-delivery loses nothing, because another
//! takes the delivery over once the lease runs out, and sends it with the same `webhook-id`.
//! Concurrency is bounded per process and per endpoint, so one slow receiver cannot hold all
//! the senders.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::header::RETRY_AFTER;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::instrument;
use uuid::Uuid;

use super::client::HostPolicy;
use super::signing;
use crate::store::{AttemptRecord, DeliveryNext, DueDelivery, Store};

/// How deliveries are paced.
#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    /// Delay before each retry; attempts beyond its length mark the delivery failed.
    pub retry_schedule: Vec<Duration>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Deliveries in flight in this process.
    pub concurrency: usize,
    /// Deliveries in flight to one endpoint from this process.
    pub endpoint_concurrency: usize,
    /// Longest sleep between looks at the outbox.
    pub poll_interval: Duration,
    pub hosts: HostPolicy,
}

impl DeliveryOptions {
    /// How long a claim lasts: longer than any attempt can take.
    pub fn lease(&self) -> Duration {
        self.timeout * 2 + Duration::from_secs(5)
    }
}

/// The default retry schedule: 10 retries spanning about a day.
pub fn default_retry_schedule() -> Vec<Duration> {
    [5, 30, 120, 600, 1_800, 3_600, 7_200, 14_400, 28_800, 28_800]
        .into_iter()
        .map(Duration::from_secs)
        .collect()
}

/// What the loop shares with its sending tasks.
struct Sender {
    store: Arc<dyn Store>,
    client: reqwest::Client,
    options: DeliveryOptions,
}

/// Runs until `shutdown`; attempts in flight then finish (each is bounded by the timeout).
pub async fn run_delivery(
    store: Arc<dyn Store>,
    client: reqwest::Client,
    options: DeliveryOptions,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    tracing::info!(concurrency = options.concurrency, "delivery worker started");
    let in_flight = Arc::new(Semaphore::new(options.concurrency));
    let mut endpoints: HashMap<Uuid, Arc<Semaphore>> = HashMap::new();
    let sender = Arc::new(Sender {
        store,
        client,
        options,
    });
    let tasks = TaskTracker::new();
    while !shutdown.is_cancelled() {
        let capacity = in_flight.available_permits();
        let claimed = match deliver_due(&sender, &in_flight, &mut endpoints, &tasks, &wake).await {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::error!(error = %error, "delivery pass failed");
                0
            }
        };
        if capacity > 0 && claimed == capacity {
            continue;
        }
        // Overdue deliveries that could not be claimed belong to endpoints at their limit here
        // (a finishing attempt wakes the loop) or held by another process (whose lease the
        // poll interval outlasts), so only a future due time shortens the sleep.
        let wait = match sender.store.next_delivery_in().await {
            Ok(Some(ms)) if ms > 0 => Duration::from_millis(ms as u64),
            _ => sender.options.poll_interval,
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait.min(sender.options.poll_interval)) => {}
            _ = wake.notified() => {}
        }
    }
    tasks.close();
    tasks.wait().await;
    tracing::info!("delivery worker stopped");
}

/// Claims what this process has room for and starts sending it; returns how many it claimed.
async fn deliver_due(
    sender: &Arc<Sender>,
    in_flight: &Arc<Semaphore>,
    endpoints: &mut HashMap<Uuid, Arc<Semaphore>>,
    tasks: &TaskTracker,
    wake: &Arc<Notify>,
) -> Result<usize, crate::store::StoreError> {
    let capacity = in_flight.available_permits();
    if capacity == 0 {
        return Ok(0);
    }
    let busy: Vec<Uuid> = endpoints
        .iter()
        .filter(|(_, permits)| permits.available_permits() == 0)
        .map(|(id, _)| *id)
        .collect();
    let lease_ms = sender.options.lease().as_millis() as i64;
    let claimed = sender
        .store
        .claim_deliveries(capacity as i64, lease_ms, &busy)
        .await?;
    let count = claimed.len();
    for delivery in claimed {
        let endpoint = endpoints
            .entry(delivery.endpoint_id)
            .or_insert_with(|| Arc::new(Semaphore::new(sender.options.endpoint_concurrency)))
            .clone();
        let (Ok(endpoint_permit), Ok(permit)) = (
            endpoint.try_acquire_owned(),
            in_flight.clone().try_acquire_owned(),
        ) else {
            // This endpoint is at its limit: hand the delivery back for a later pass.
            sender.store.release_delivery(&delivery).await?;
            continue;
        };
        let (sender, wake) = (sender.clone(), wake.clone());
        tasks.spawn(async move {
            deliver_once(&sender, &delivery).await;
            drop((permit, endpoint_permit));
            wake.notify_one();
        });
    }
    Ok(count)
}

/// Sends one claimed delivery and records the attempt.
#[instrument(skip_all, fields(event_id = %delivery.event_id, attempt = delivery.attempt))]
async fn deliver_once(sender: &Sender, delivery: &DueDelivery) {
    let started_at_ms = chrono::Utc::now().timestamp_millis();
    let started = Instant::now();
    let (response_status, retry_after, error) = match send(sender, delivery).await {
        Ok((status, retry_after)) => {
            let error = (!(200..300).contains(&status)).then(|| format!("HTTP {status}"));
            (Some(status), retry_after, error)
        }
        Err(error) => (None, None, Some(error)),
    };
    let record = AttemptRecord {
        attempt: delivery.attempt,
        started_at_ms,
        duration_ms: started.elapsed().as_millis() as i64,
        response_status,
        error: error.clone(),
    };
    let next = match error {
        None => DeliveryNext::Succeeded,
        Some(_) => next_after_failure(&sender.options, delivery.attempt, retry_after),
    };
    crate::monitoring::webhook_attempt(match next {
        DeliveryNext::Succeeded => "success",
        DeliveryNext::RetryIn(_) => "retry",
        DeliveryNext::Failed => "failed",
    });
    match (&next, &record.error) {
        (DeliveryNext::Failed, Some(error)) => {
            tracing::error!(error = %error, "webhook delivery given up");
        }
        (DeliveryNext::RetryIn(ms), Some(error)) => {
            tracing::warn!(error = %error, retry_in_ms = ms, "webhook attempt failed");
        }
        _ => tracing::debug!("webhook delivered"),
    }
    if let Err(error) = sender.store.finish_attempt(delivery, &record, next).await {
        // The lease runs out and the delivery is tried again: at least once, never lost.
        tracing::error!(error = %error, "could not record a webhook attempt");
    }
}

/// Posts the event; returns the status and any `Retry-After`, or why nothing was answered.
async fn send(sender: &Sender, delivery: &DueDelivery) -> Result<(u16, Option<Duration>), String> {
    sender.options.hosts.check(&delivery.url)?;
    let id = delivery.event_id.to_string();
    let timestamp = chrono::Utc::now().timestamp();
    let signature = signing::sign(&delivery.secret, &id, timestamp, &delivery.body)?;
    let response = sender
        .client
        .post(&delivery.url)
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(delivery.body.clone())
        .send()
        .await
        .map_err(|error| describe(&error))?;
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    Ok((response.status().as_u16(), retry_after))
}

fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        format!("connection failed: {error}")
    } else {
        error.to_string()
    }
}

/// The next step after failed attempt `attempt` (from 1): a retry after the scheduled delay
/// with ±20% jitter (or the receiver's `Retry-After`, if longer), or failure.
pub fn next_after_failure(
    options: &DeliveryOptions,
    attempt: i32,
    retry_after: Option<Duration>,
) -> DeliveryNext {
    let Some(delay) = usize::try_from(attempt - 1)
        .ok()
        .and_then(|index| options.retry_schedule.get(index))
    else {
        return DeliveryNext::Failed;
    };
    let jittered = delay.mul_f64(rand::rng().random_range(0.8..1.2));
    let delay = retry_after
        .map_or(jittered, |asked| asked.max(jittered))
        .min(Duration::from_secs(24 * 3600));
    DeliveryNext::RetryIn(delay.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(schedule: &[u64]) -> DeliveryOptions {
        DeliveryOptions {
            retry_schedule: schedule.iter().copied().map(Duration::from_secs).collect(),
            timeout: Duration::from_secs(1),
            concurrency: 1,
            endpoint_concurrency: 1,
            poll_interval: Duration::from_secs(1),
            hosts: HostPolicy::default(),
        }
    }

    #[test]
    fn retries_follow_the_schedule_with_jitter_then_fail() {
        let options = options(&[10, 100]);

        let DeliveryNext::RetryIn(first) = next_after_failure(&options, 1, None) else {
            panic!("first failure is retried");
        };
        let DeliveryNext::RetryIn(second) = next_after_failure(&options, 2, None) else {
            panic!("second failure is retried");
        };

        assert!((8_000..=12_000).contains(&first), "{first}");
        assert!((80_000..=120_000).contains(&second), "{second}");
        assert_eq!(next_after_failure(&options, 3, None), DeliveryNext::Failed);
    }

    #[test]
    fn a_longer_retry_after_is_honoured() {
        let options = options(&[1]);

        let next = next_after_failure(&options, 1, Some(Duration::from_secs(60)));

        assert_eq!(next, DeliveryNext::RetryIn(60_000));
    }

    #[test]
    fn the_default_schedule_spans_about_a_day() {
        let total: Duration = default_retry_schedule().iter().sum();

        assert!(total > Duration::from_secs(20 * 3600), "{total:?}");
        assert!(total < Duration::from_secs(28 * 3600), "{total:?}");
    }
}
