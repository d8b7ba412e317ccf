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

use crate::group_commit::OrderWriter;
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

/// Capped exponential backoff: 100 ms, 200 ms, … up to `MAX_BACKOFF` (10 s).
pub fn backoff(consecutive_failures: u32) -> Duration {
    let exp = consecutive_failures.saturating_sub(1).min(10);
    (Duration::from_millis(100) * 2u32.pow(exp)).min(MAX_BACKOFF)
}

/// What one relay round did; [`run`] decides from it how long to wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoundOutcome {
    /// The outbox could not be read (the database is busy or down).
    OutboxUnavailable,
    /// Nothing was due.
    Idle,
    /// Every claimed row was confirmed by the broker. `backlog`: the claim
    /// was a full batch, so more are probably waiting.
    Published { sent: usize, backlog: bool },
    /// The broker refused some rows; they are rescheduled with backoff and
    /// the others are confirmed.
    BrokerDown { sent: usize, failed: usize },
}

/// The relay's state between rounds: its failure streak and the rows the
/// broker confirmed that are not yet marked sent.
pub struct Relay {
    store: Store,
    writer: OrderWriter,
    publisher: Arc<dyn Publisher>,
    options: RelayOptions,
    failures: u32,
    /// Rows the broker confirmed, marked sent in the same transaction as the
    /// next claim, which itself rides in the order writer's next batch: under
    /// load the relay adds no commit of its own (at most one idle poll
    /// later). Until then their lease keeps other relays off them; after a
    /// crash they are sent again, and consumers' inboxes drop the duplicates.
    confirmed: Vec<i64>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("options", &self.options)
            .field("failures", &self.failures)
            .field("confirmed", &self.confirmed.len())
            .finish_non_exhaustive()
    }
}

impl Relay {
    pub fn new(
        store: Store,
        writer: OrderWriter,
        publisher: Arc<dyn Publisher>,
        options: RelayOptions,
    ) -> Self {
        Self {
            store,
            writer,
            publisher,
            options,
            failures: 0,
            confirmed: Vec::new(),
        }
    }

    /// Consecutive failed rounds (0 after a round that published everything).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// One round: acknowledge what the broker confirmed last round and claim
    /// due rows (one write through the order writer), publish them, and
    /// reschedule those the broker refused.
    pub async fn round(&mut self) -> RoundOutcome {
        let claimed = match self
            .writer
            .relay_outbox(
                &self.options.owner,
                self.confirmed.clone(),
                self.options.batch_size,
                LEASE_MS,
            )
            .await
        {
            Ok(rows) => {
                self.confirmed.clear();
                rows
            }
            Err(e) => {
                tracing::warn!(error = %e, "relay cannot read the outbox");
                self.failures += 1;
                return RoundOutcome::OutboxUnavailable;
            }
        };
        if claimed.is_empty() {
            return RoundOutcome::Idle;
        }
        let backlog = claimed.len() >= self.options.batch_size;
        let results = self.publisher.publish(&claimed).await;
        let now = now_millis();
        let mut failed = Vec::new();
        for (message, result) in claimed.iter().zip(results) {
            match result {
                Ok(()) => self.confirmed.push(message.id),
                Err(e) => {
                    if self.failures == 0 && failed.is_empty() {
                        tracing::warn!(error = %e, "broker unavailable; events stay in the outbox and will be retried");
                    }
                    failed.push((message.id, e.to_string()));
                }
            }
        }
        let retry_at = now + backoff(self.failures + 1).as_millis() as i64;
        if let Err(e) = self.store.retry_outbox(&failed, retry_at).await {
            tracing::warn!(error = %e, "cannot reschedule outbox rows; their lease will expire");
        }
        let sent = claimed.len() - failed.len();
        if failed.is_empty() {
            if self.failures > 0 {
                tracing::info!("broker reachable again; outbox draining");
            }
            self.failures = 0;
            RoundOutcome::Published { sent, backlog }
        } else {
            self.failures += 1;
            RoundOutcome::BrokerDown {
                sent,
                failed: failed.len(),
            }
        }
    }

    /// Marks what the broker confirmed as sent (at shutdown: there is no next round).
    pub async fn finish(self) {
        if !self.confirmed.is_empty()
            && let Err(e) = self.store.mark_sent(&self.confirmed, now_millis()).await
        {
            // The broker has them; they will be sent again after the lease.
            tracing::warn!(error = %e, "cannot mark outbox rows sent at shutdown");
        }
    }
}

/// Runs rounds until `shutdown` is cancelled. `wake` is notified after each payment commit.
pub async fn run(
    store: Store,
    writer: OrderWriter,
    publisher: Arc<dyn Publisher>,
    wake: Arc<Notify>,
    options: RelayOptions,
    shutdown: CancellationToken,
) {
    let linger = options.linger;
    let mut relay = Relay::new(store, writer, publisher, options);
    while !shutdown.is_cancelled() {
        match relay.round().await {
            RoundOutcome::OutboxUnavailable | RoundOutcome::BrokerDown { .. } => {
                pause(backoff(relay.failures()), &wake, &shutdown, false).await;
            }
            RoundOutcome::Idle => pause(IDLE_POLL, &wake, &shutdown, true).await,
            // Unless draining a backlog, the next round lets events gather
            // for the linger, then waits for the next payment commit:
            // submitted then, it joins the writer's next batch together with
            // the payments queued meanwhile, and shares their commit. Going
            // again at once would make it a batch (and an fsync) of its own,
            // every other commit, and spread each round's few events over
            // every queue: many tiny sends, and as many tiny pulls in each
            // consumer group.
            RoundOutcome::Published { backlog: true, .. } => {}
            RoundOutcome::Published { backlog: false, .. } => {
                if !linger.is_zero() {
                    pause(linger, &wake, &shutdown, false).await;
                }
                pause(ACK_DELAY, &wake, &shutdown, true).await;
            }
        }
    }
    relay.finish().await;
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
    use std::sync::atomic::Ordering;

    use ordermq_domain::EventKind;

    use super::*;
    use crate::testing::{Fixture, RecordingPublisher};

    fn relay(fixture: &Fixture, publisher: &Arc<RecordingPublisher>, batch_size: usize) -> Relay {
        Relay::new(
            fixture.store.clone(),
            fixture.writer.clone(),
            publisher.clone(),
            RelayOptions {
                owner: "relay-test".into(),
                batch_size,
                linger: Duration::ZERO,
            },
        )
    }

    #[tokio::test]
    async fn a_round_publishes_due_events_and_the_next_marks_them_sent() {
        let fixture = Fixture::new().await;
        let order = fixture.paid_order("u1", 2).await;
        let publisher = Arc::new(RecordingPublisher::default());
        let mut relay = relay(&fixture, &publisher, 64);

        assert_eq!(
            relay.round().await,
            RoundOutcome::Published {
                sent: 2,
                backlog: false
            }
        );
        let sent = publisher.sent.lock().unwrap().clone();
        let tags: Vec<_> = sent.iter().map(|m| m.tag.as_str()).collect();
        assert_eq!(
            tags,
            [EventKind::OrderCloseDue.tag(), EventKind::OrderPaid.tag()]
        );
        assert!(sent.iter().all(|m| m.key == order.order_id.as_str()));
        // Confirmed, but acknowledged only with the next claim.
        assert_eq!(fixture.store.outbox_backlog().await.unwrap(), 2);

        assert_eq!(relay.round().await, RoundOutcome::Idle);
        assert_eq!(fixture.store.outbox_backlog().await.unwrap(), 0);
        assert_eq!(
            publisher.sent.lock().unwrap().len(),
            2,
            "nothing sent twice"
        );
    }

    #[tokio::test]
    async fn a_full_claim_reports_a_backlog() {
        let fixture = Fixture::new().await;
        fixture.paid_order("u1", 1).await;
        fixture.paid_order("u2", 1).await;
        let publisher = Arc::new(RecordingPublisher::default());
        let mut relay = relay(&fixture, &publisher, 3);
        assert_eq!(
            relay.round().await,
            RoundOutcome::Published {
                sent: 3,
                backlog: true
            }
        );
        assert_eq!(
            relay.round().await,
            RoundOutcome::Published {
                sent: 1,
                backlog: false
            }
        );
    }

    #[tokio::test]
    async fn refused_events_stay_in_the_outbox_and_go_out_after_the_backoff() {
        let fixture = Fixture::new().await;
        fixture.paid_order("u1", 1).await;
        let publisher = Arc::new(RecordingPublisher::default());
        publisher.down.store(true, Ordering::SeqCst);
        let mut relay = relay(&fixture, &publisher, 64);

        assert_eq!(
            relay.round().await,
            RoundOutcome::BrokerDown { sent: 0, failed: 2 }
        );
        assert_eq!(relay.failures(), 1);
        assert_eq!(fixture.store.outbox_backlog().await.unwrap(), 2);
        // Rescheduled past now: the next round finds nothing due.
        assert_eq!(relay.round().await, RoundOutcome::Idle);

        publisher.down.store(false, Ordering::SeqCst);
        // The rows come due after backoff(1) = 100 ms (wall clock: the store's time).
        tokio::time::sleep(backoff(1) + Duration::from_millis(50)).await;
        assert_eq!(
            relay.round().await,
            RoundOutcome::Published {
                sent: 2,
                backlog: false
            }
        );
        assert_eq!(relay.failures(), 0);
        relay.finish().await;
        assert_eq!(fixture.store.outbox_backlog().await.unwrap(), 0);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(30), MAX_BACKOFF);
    }
}
