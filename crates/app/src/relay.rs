//! The outbox relay: moves committed events from the order database to RocketMQ.
//!
//! A payment answers as soon as its transaction commits; this task then
//! claims due outbox rows (with a lease, so several instances can relay from
//! one database), publishes them, and marks each sent only after the broker
//! confirmed it stored the message. While the broker is down, rows stay in the
//! outbox and are retried with capped exponential backoff; payments go on.

use std::sync::Arc;
use std::time::Duration;

use ordermq_domain::now_millis;
use ordermq_domain::ports::Publisher;
use ordermq_store::Store;

use crate::writer::OrderWriter;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How long a claimed row stays reserved for this relay before another may take it.
const LEASE_MS: i64 = 30_000;
/// How often the relay looks for due rows when nothing wakes it (rows of other
/// instances, retries coming due).
const IDLE_POLL: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Longest wait for a payment commit to ride along with, after a round that
/// published something (its acknowledgements go with the next round).
const ACK_DELAY: Duration = Duration::from_millis(20);

#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// Identifies this relay in lease columns.
    pub owner: String,
    pub batch_size: usize,
    /// After a round that published, how long events gather before the next
    /// round (unless a full batch is waiting): larger sends, and larger pulls
    /// for every consumer group, for at most this much more fan-out delay.
    pub linger: Duration,
}

/// Capped exponential backoff: 100 ms, 200 ms, … up to [`MAX_BACKOFF`].
pub fn backoff(consecutive_failures: u32) -> Duration {
    let exp = consecutive_failures.saturating_sub(1).min(10);
    (Duration::from_millis(100) * 2u32.pow(exp)).min(MAX_BACKOFF)
}

/// Runs until `shutdown` is cancelled. `wake` is notified after each payment commit.
pub async fn run(
    store: Store,
    writer: OrderWriter,
    publisher: Arc<dyn Publisher>,
    wake: Arc<Notify>,
    options: RelayOptions,
    shutdown: CancellationToken,
) {
    let mut failures: u32 = 0;
    // Rows the broker confirmed, marked sent in the same transaction as the
    // next claim, which itself rides in the order writer's next batch: under
    // load the relay adds no commit of its own (at most one idle poll later). Until
    // then their lease keeps other relays off them; after a crash they are
    // sent again, and consumers' inboxes drop the duplicates.
    let mut confirmed: Vec<i64> = Vec::new();
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        let claimed = match writer
            .relay_outbox(
                &options.owner,
                confirmed.clone(),
                options.batch_size,
                LEASE_MS,
            )
            .await
        {
            Ok(rows) => {
                confirmed.clear();
                rows
            }
            Err(e) => {
                tracing::warn!(error = %e, "relay cannot read the outbox");
                failures += 1;
                pause(backoff(failures), &wake, &shutdown, false).await;
                continue;
            }
        };
        if claimed.is_empty() {
            pause(IDLE_POLL, &wake, &shutdown, true).await;
            continue;
        }
        let backlog = claimed.len() >= options.batch_size;
        let results = publisher.publish(&claimed).await;
        let now = now_millis();
        let mut failed = Vec::new();
        for (message, result) in claimed.iter().zip(results) {
            match result {
                Ok(()) => confirmed.push(message.id),
                Err(e) => {
                    if failures == 0 && failed.is_empty() {
                        tracing::warn!(error = %e, "broker unavailable; events stay in the outbox and will be retried");
                    }
                    failed.push((message.id, e.to_string()));
                }
            }
        }
        let retry_at = now + backoff(failures + 1).as_millis() as i64;
        if let Err(e) = store.retry_outbox(&failed, retry_at).await {
            tracing::warn!(error = %e, "cannot reschedule outbox rows; their lease will expire");
        }
        match failed.first() {
            Some(_) => {
                failures += 1;
                pause(backoff(failures), &wake, &shutdown, false).await;
            }
            None => {
                if failures > 0 {
                    tracing::info!("broker reachable again; outbox draining");
                }
                failures = 0;
                // Unless draining a backlog, the next round lets events
                // gather for the linger, then waits for the next payment
                // commit: submitted then, it joins the writer's next batch
                // together with the payments queued meanwhile, and shares
                // their commit. Going again at once would make it a batch (and
                // an fsync) of its own, every other commit, and spread each
                // round's few events over every queue: many tiny sends, and
                // as many tiny pulls in each consumer group.
                if !backlog {
                    if !options.linger.is_zero() {
                        pause(options.linger, &wake, &shutdown, false).await;
                    }
                    pause(ACK_DELAY, &wake, &shutdown, true).await;
                }
            }
        }
    }
    if !confirmed.is_empty()
        && let Err(e) = store.mark_sent(&confirmed, now_millis()).await
    {
        // The broker has them; they will be sent again after the lease.
        tracing::warn!(error = %e, "cannot mark outbox rows sent at shutdown");
    }
}

/// Sleeps for `duration`, or until shutdown, or (if `wakeable`) until woken.
async fn pause(duration: Duration, wake: &Notify, shutdown: &CancellationToken, wakeable: bool) {
    tokio::select! {
        _ = tokio::time::sleep(duration) => {}
        _ = shutdown.cancelled() => {}
        _ = wake.notified(), if wakeable => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(30), MAX_BACKOFF);
    }
}
