//! The outbox relay: moves committed events from the order database to RocketMQ.
//!
//! A payment answers as soon as its transaction commits; this task then
//! claims due outbox rows (with a lease, so several instances can relay from
//! one database), publishes them, and marks each sent only after the broker
//! confirmed it stored the message. While the broker is down, rows stay in the
//! outbox and payments go on; the relay probes the broker with backoff capped
//! at one second, and every row it refused is due again at the next probe,
//! whatever its attempts, so the first probe after the broker's return
//! drains at full speed.
//!
//! A row the broker refuses while it takes others (a poison row) must not
//! hold the rest back: the batch it failed with is sent again row by row at
//! once, so only it fails; it is retried on its own backoff (by its
//! attempts), which does not pause the relay; and once it has been claimed
//! `park_after` times while the broker was taking other rows, it is parked:
//! no longer claimed, counted in `/api/stats`, put back by `ordermq outbox
//! requeue`. During an outage (nothing taken) nothing is parked.
//!
//! The same relay drains each downstream system's receipts
//! ([`run_receipts`]): one relay per outbox, the rules above for each, so
//! receipts survive a broker outage the way events do.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ordermq_domain::ports::Publisher;
use ordermq_domain::{OutboxMessage, System, now_millis};
use ordermq_store::{Outbox, OutboxRetry, Store};

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
    /// round (unless a full batch is waiting), counted from the round's
    /// start: larger sends, and larger pulls for every consumer group, for
    /// at most this much more fan-out delay.
    pub linger: Duration,
    /// Claims a row may fail, while the broker takes other rows, before it
    /// is parked.
    pub park_after: u32,
}

/// How recently the broker must have taken a message for a failure to count
/// as the row's fault rather than an outage: two of the longest backoffs.
const BROKER_UP_WITHIN: Duration = Duration::from_secs(20);

/// Capped exponential backoff: 100 ms, 200 ms, … up to `MAX_BACKOFF` (10 s).
pub fn backoff(consecutive_failures: u32) -> Duration {
    let exp = consecutive_failures.saturating_sub(1).min(10);
    (Duration::from_millis(100) * 2u32.pow(exp)).min(MAX_BACKOFF)
}

/// Longest pause between two probes of a broker that takes nothing: the
/// longest the relay lets pass between the broker's return and its drain.
const MAX_PROBE: Duration = Duration::from_secs(1);

/// The relay's pause after `outage_rounds` rounds in a row the broker took
/// nothing: [`backoff`], capped at `MAX_PROBE` (1 s). The rows of such a
/// round are due again when the relay next probes, whatever their attempts.
pub fn probe(outage_rounds: u32) -> Duration {
    backoff(outage_rounds).min(MAX_PROBE)
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
    /// Nothing was taken and a row never tried before was refused: the
    /// broker is down (or full). The rows are rescheduled with backoff and
    /// the relay pauses.
    BrokerDown { sent: usize, failed: usize },
    /// The broker took `sent` rows (or refused only rows that had failed
    /// before): the `failed` ones wait on their own backoff, `parked` of
    /// them for an operator; the relay goes on.
    Refused {
        sent: usize,
        failed: usize,
        parked: usize,
    },
}

/// Where a relay's rounds run: the order database's events ride in the
/// order writer's batches; a system's receipts take a transaction of their
/// own on its database.
enum Source {
    Events(OrderWriter),
    Receipts(System),
}

/// The relay's state between rounds: its failure streak and the rows the
/// broker confirmed that are not yet marked sent.
pub struct Relay {
    store: Store,
    source: Source,
    publisher: Arc<dyn Publisher>,
    options: RelayOptions,
    failures: u32,
    /// Rows the broker confirmed, marked sent in the same transaction as the
    /// next claim, which itself rides in the order writer's next batch: under
    /// load the relay adds no commit of its own (at most one idle poll
    /// later). Until then their lease keeps other relays off them; after a
    /// crash they are sent again, and consumers' inboxes drop the duplicates.
    confirmed: Vec<i64>,
    /// When the broker confirmed the last of `confirmed` (epoch ms): their
    /// `sent_at`, so the outbox says when each event reached the broker, not
    /// when the relay got round to writing it down.
    confirmed_at: i64,
    /// When the broker last took a message from this relay.
    last_taken: Option<Instant>,
    /// The earliest retry (epoch ms) of the rows the last refusing round
    /// rescheduled: the shutdown drain waits for it rather than stopping
    /// while those rows are not yet due.
    retry_at: Option<i64>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("outbox", &self.outbox())
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
        Self::of(store, Source::Events(writer), publisher, options)
    }

    /// A relay of `system`'s receipts (`TopicOrderReceipt`).
    pub fn for_receipts(
        store: Store,
        system: System,
        publisher: Arc<dyn Publisher>,
        options: RelayOptions,
    ) -> Self {
        Self::of(store, Source::Receipts(system), publisher, options)
    }

    fn of(
        store: Store,
        source: Source,
        publisher: Arc<dyn Publisher>,
        options: RelayOptions,
    ) -> Self {
        Self {
            store,
            source,
            publisher,
            options,
            failures: 0,
            confirmed: Vec::new(),
            confirmed_at: 0,
            last_taken: None,
            retry_at: None,
        }
    }

    /// The outbox this relay drains.
    pub fn outbox(&self) -> Outbox {
        match self.source {
            Source::Events(_) => Outbox::Events,
            Source::Receipts(system) => Outbox::Receipts(system),
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
        let claim = match &self.source {
            Source::Events(writer) => {
                writer
                    .relay_outbox(
                        &self.options.owner,
                        self.confirmed.clone(),
                        self.confirmed_at,
                        self.options.batch_size,
                        LEASE_MS,
                    )
                    .await
            }
            Source::Receipts(system) => {
                self.store
                    .relay_receipts(
                        *system,
                        &self.options.owner,
                        &self.confirmed,
                        self.options.batch_size,
                        LEASE_MS,
                        now_millis(),
                    )
                    .await
            }
        };
        let claimed = match claim {
            Ok(rows) => {
                self.confirmed.clear();
                rows
            }
            Err(e) => {
                tracing::warn!(error = %e, outbox = self.outbox().name(), "relay cannot read the outbox");
                self.failures += 1;
                return RoundOutcome::OutboxUnavailable;
            }
        };
        if claimed.is_empty() {
            return RoundOutcome::Idle;
        }
        let backlog = claimed.len() >= self.options.batch_size;
        let mut failed = self.publish(&claimed).await;
        let sent = claimed.len() - failed.len();
        // Rows that failed together may have failed only for sharing a batch
        // with a poison row: unless this looks like an outage (nothing taken
        // and a row never tried before refused), each is sent again alone,
        // now. With nothing taken yet, two refusals in a row end it: the
        // broker is more likely down than holding two poison rows.
        let fresh_refused = failed.iter().any(|(m, _)| m.attempts <= 1);
        if failed.len() > 1 && (sent > 0 || !fresh_refused) {
            let (mut alone, mut taken, mut refused_in_a_row) = (Vec::new(), sent, 0);
            for (message, error) in failed {
                if taken == 0 && refused_in_a_row >= 2 {
                    alone.push((message, error));
                    continue;
                }
                let again = self.publish(std::slice::from_ref(message)).await;
                if again.is_empty() {
                    taken += 1;
                    refused_in_a_row = 0;
                } else {
                    refused_in_a_row += 1;
                }
                alone.extend(again);
            }
            failed = alone;
        }
        let sent = claimed.len() - failed.len();
        let now = now_millis();
        if sent > 0 {
            self.last_taken = Some(Instant::now());
        }
        let broker_up = self
            .last_taken
            .is_some_and(|at| at.elapsed() < BROKER_UP_WITHIN);
        // Nothing taken, and a row never tried before refused or every one
        // of two or more rows refused (each alone, above): an outage. A row
        // that failed before, refused alone, is only suspect.
        let outage = sent == 0 && (fresh_refused || failed.len() > 1);
        if outage && self.failures == 0 {
            tracing::warn!(error = %failed[0].1, "broker unavailable; events stay in the outbox and will be retried");
        }
        let retries: Vec<OutboxRetry> = failed
            .iter()
            .map(|(m, error)| {
                // During an outage a row waits for the relay's next probe,
                // not for a backoff of its own grown with its attempts: once
                // the broker is back, every row goes out with that probe.
                let wait = if outage {
                    probe(self.failures + 1)
                } else {
                    backoff(u32::try_from(m.attempts).unwrap_or(u32::MAX))
                };
                OutboxRetry {
                    id: m.id,
                    error: error.clone(),
                    retry_at: now + wait.as_millis() as i64,
                }
            })
            .collect();
        self.retry_at = retries.iter().map(|r| r.retry_at).min().or(self.retry_at);
        // During an outage nothing counts against a row: it is never parked.
        let park_after = if broker_up && !outage {
            i64::from(self.options.park_after)
        } else {
            i64::MAX
        };
        let parked = match self
            .store
            .retry_outbox_of(self.outbox(), &retries, park_after, now)
            .await
        {
            Ok(parked) => parked,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reschedule outbox rows; their lease will expire");
                Vec::new()
            }
        };
        for (message, error) in failed.iter().filter(|(m, _)| parked.contains(&m.id)) {
            tracing::warn!(
                outbox_id = message.id,
                event_id = %message.event_id,
                attempts = message.attempts,
                error = %error,
                "outbox row parked: the broker refused it on every attempt while taking others; \
                 `ordermq outbox parked` lists it, `ordermq outbox requeue` puts it back"
            );
        }
        if outage {
            self.failures += 1;
            return RoundOutcome::BrokerDown {
                sent,
                failed: failed.len(),
            };
        }
        if self.failures > 0 {
            tracing::info!("broker reachable again; outbox draining");
        }
        self.failures = 0;
        if failed.is_empty() {
            RoundOutcome::Published { sent, backlog }
        } else {
            RoundOutcome::Refused {
                sent,
                failed: failed.len(),
                parked: parked.len(),
            }
        }
    }

    /// Publishes `messages`: the ones the broker confirmed join `confirmed`;
    /// the others come back with the reason.
    async fn publish<'m>(
        &mut self,
        messages: &'m [OutboxMessage],
    ) -> Vec<(&'m OutboxMessage, String)> {
        let started = Instant::now();
        let results = self.publisher.publish(messages).await;
        let mut failed = Vec::new();
        for (message, result) in messages.iter().zip(results) {
            match result {
                Ok(()) => self.confirmed.push(message.id),
                Err(e) => failed.push((message, e.to_string())),
            }
        }
        if failed.len() < messages.len() {
            self.confirmed_at = now_millis();
        }
        tracing::debug!(
            outbox = self.outbox().name(),
            rows = messages.len(),
            failed = failed.len(),
            took_ms = started.elapsed().as_millis() as u64,
            first_error = failed.first().map(|(_, e)| e.as_str()).unwrap_or("-"),
            "relay send"
        );
        failed
    }

    /// Marks what the broker confirmed as sent (at shutdown: there is no next round).
    pub async fn finish(self) {
        if !self.confirmed.is_empty()
            && let Err(e) = self
                .store
                .mark_sent_of(self.outbox(), &self.confirmed, self.confirmed_at)
                .await
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
    let relay = Relay::new(store, writer, publisher, options);
    drive(relay, &wake, linger, &shutdown).await;
}

/// How long a system's receipts gather between its relay's rounds.
/// Receipts are not urgent (the reconciler looks for them `reconcile_after`
/// a send, 5 minutes by default), and every round is a commit of its own
/// on the system's database: a round at each 20 ms of load took four
/// systems' relays to some 200 commits a second, each an fsync on the disk
/// the payments commit on. Once a second, each round takes what gathered
/// (and goes again at once while a full batch waits).
pub const RECEIPT_LINGER: Duration = Duration::from_secs(1);

/// Runs rounds of `system`'s receipt relay until `shutdown` is cancelled
/// (nothing wakes it: it looks for due receipts every idle poll, 200 ms,
/// and after a round that published, waits [`RECEIPT_LINGER`]; the
/// options' `linger` is not used).
pub async fn run_receipts(
    store: Store,
    system: System,
    publisher: Arc<dyn Publisher>,
    options: RelayOptions,
    shutdown: CancellationToken,
) {
    let linger = RECEIPT_LINGER;
    let relay = Relay::for_receipts(store, system, publisher, options);
    drive(relay, &Notify::new(), linger, &shutdown).await;
}

async fn drive(mut relay: Relay, wake: &Notify, linger: Duration, shutdown: &CancellationToken) {
    while !shutdown.is_cancelled() {
        let started = Instant::now();
        match relay.round().await {
            RoundOutcome::OutboxUnavailable => {
                pause(backoff(relay.failures()), wake, shutdown, false).await;
            }
            RoundOutcome::BrokerDown { .. } => {
                pause(probe(relay.failures()), wake, shutdown, false).await;
            }
            RoundOutcome::Idle | RoundOutcome::Refused { sent: 0, .. } => {
                pause(IDLE_POLL, wake, shutdown, true).await;
            }
            // Unless draining a backlog, the next round lets events gather
            // for the linger, counted from this round's start (its claim):
            // the events committed while this round sent are gathering
            // already, and waiting the whole linger after the send made each
            // event wait for the send's time on top (at 1,000 payments/s the
            // send of a round took about as long as the linger). Then it
            // waits for the next payment commit:
            // submitted then, it joins the writer's next batch together with
            // the payments queued meanwhile, and shares their commit. Going
            // again at once would make it a batch (and an fsync) of its own,
            // every other commit, and spread each round's few events over
            // every queue: many tiny sends, and as many tiny pulls in each
            // consumer group.
            RoundOutcome::Published { backlog: true, .. } => {}
            RoundOutcome::Published { backlog: false, .. } | RoundOutcome::Refused { .. } => {
                let rest = linger.saturating_sub(started.elapsed());
                if !rest.is_zero() {
                    pause(rest, wake, shutdown, false).await;
                }
                pause(ACK_DELAY, wake, shutdown, true).await;
            }
        }
    }
    drain(&mut relay).await;
    relay.finish().await;
}

/// At shutdown, the longest the relay goes on sending what is committed.
const DRAIN: Duration = Duration::from_secs(5);

/// Sends what is due until nothing is, or [`DRAIN`] has passed. Shutdown
/// cancels the relay once the HTTP listeners have stopped and answered their
/// last requests, so nothing new is committed: without this, the events of
/// the payments answered during the relay's last pause waited in the outbox
/// for the next start (a stopped instance that never starts again would hold
/// them until another instance's relay took them after their lease). A round
/// the broker refused (down, or this process not yet knowing its route)
/// does not end the drain: the refused rows are rescheduled, and the drain
/// waits for them to come due and tries again while its time lasts.
async fn drain(relay: &mut Relay) {
    let until = Instant::now() + DRAIN;
    while Instant::now() < until {
        let wait = match relay.round().await {
            RoundOutcome::Published { .. } | RoundOutcome::Refused { sent: 1.., .. } => continue,
            RoundOutcome::OutboxUnavailable => backoff(relay.failures()),
            RoundOutcome::BrokerDown { .. } | RoundOutcome::Refused { .. } | RoundOutcome::Idle => {
                // Nothing due and nothing rescheduled: everything committed is sent.
                let Some(at) = relay.retry_at.take() else {
                    break;
                };
                Duration::from_millis(u64::try_from(at - now_millis()).unwrap_or(0))
            }
        };
        if wait > until.saturating_duration_since(Instant::now()) {
            break;
        }
        tokio::time::sleep(wait.max(DRAIN_STEP)).await;
    }
}

/// The shortest wait between two of the drain's rounds that found nothing due.
const DRAIN_STEP: Duration = Duration::from_millis(10);

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
                park_after: 3,
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

    /// An order's feed events go out one round after another, each only
    /// once its predecessor was confirmed; the fan-out's are not held back.
    #[tokio::test]
    async fn an_orders_feed_events_go_out_in_order_one_round_after_another() {
        use ordermq_domain::feed::{FeedEvent, TOPIC_ORDER_CHANGE_FEED};
        let fixture = Fixture::with_feed().await;
        let order = fixture.paid_order("u1", 2).await;
        let publisher = Arc::new(RecordingPublisher::default());
        let mut relay = relay(&fixture, &publisher, 64);
        let feed_sent = |publisher: &RecordingPublisher| -> Vec<i64> {
            publisher
                .sent
                .lock()
                .unwrap()
                .iter()
                .filter(|m| m.topic == TOPIC_ORDER_CHANGE_FEED)
                .map(|m| {
                    assert_eq!(m.key, order.order_id.as_str());
                    FeedEvent::from_json(m.body.as_bytes())
                        .unwrap()
                        .data
                        .order_seq
                })
                .collect()
        };
        // Created's feed row, the close and OrderPaid; paid's feed row waits.
        assert_eq!(
            relay.round().await,
            RoundOutcome::Published {
                sent: 3,
                backlog: false
            }
        );
        assert_eq!(feed_sent(&publisher), [1]);
        assert_eq!(
            relay.round().await,
            RoundOutcome::Published {
                sent: 1,
                backlog: false
            }
        );
        assert_eq!(feed_sent(&publisher), [1, 2]);
        assert_eq!(relay.round().await, RoundOutcome::Idle);
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

    /// At shutdown the broker refuses (down for a moment, or its route not
    /// yet known to this process): the drain waits for the rescheduled rows
    /// to come due and sends them once the broker takes them, within its
    /// time, instead of leaving them for the next start.
    #[tokio::test]
    async fn the_drain_outlasts_a_refusal_and_sends_every_event() {
        let fixture = Fixture::new().await;
        fixture.paid_order("u1", 1).await;
        let publisher = Arc::new(RecordingPublisher::default());
        publisher.down.store(true, Ordering::SeqCst);
        let mut relay = relay(&fixture, &publisher, 64);
        assert_eq!(
            relay.round().await,
            RoundOutcome::BrokerDown { sent: 0, failed: 2 }
        );
        let back = {
            let publisher = publisher.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(150)).await;
                publisher.down.store(false, Ordering::SeqCst);
            })
        };
        let started = Instant::now();
        drain(&mut relay).await;
        relay.finish().await;
        back.await.unwrap();
        assert_eq!(fixture.store.outbox_backlog().await.unwrap(), 0);
        assert_eq!(publisher.sent.lock().unwrap().len(), 2);
        assert!(started.elapsed() < DRAIN, "{:?}", started.elapsed());
    }

    /// A row the broker refuses (and every row sent in one batch with it) is
    /// found out row by row; the others go out, later payments' events are
    /// not held back, the relay never pauses for it, and on its third claim
    /// (`park_after: 3`) it is parked.
    #[tokio::test]
    async fn a_poison_row_holds_nothing_back_and_is_parked() {
        let fixture = Fixture::new().await;
        let poisoned = fixture.paid_order("u1", 1).await;
        fixture.paid_order("u2", 1).await;
        let publisher = Arc::new(RecordingPublisher::default());
        let poison = format!("OrderPaid:{}", poisoned.order_id.as_str());
        publisher.poison.lock().unwrap().push(poison.clone());
        let mut relay = relay(&fixture, &publisher, 64);

        // All four in one batch, all fresh: indistinguishable from an outage.
        assert_eq!(
            relay.round().await,
            RoundOutcome::BrokerDown { sent: 0, failed: 4 }
        );
        tokio::time::sleep(backoff(1) + Duration::from_millis(50)).await;
        // Tried before: each alone, so only the poison row fails.
        assert_eq!(
            relay.round().await,
            RoundOutcome::Refused {
                sent: 3,
                failed: 1,
                parked: 0
            }
        );
        assert_eq!(relay.failures(), 0, "the relay does not pause for it");
        let later = fixture.paid_order("u3", 1).await;
        assert_eq!(
            relay.round().await,
            RoundOutcome::Published {
                sent: 2,
                backlog: false
            },
            "a later payment's events go out while the poison row waits"
        );
        tokio::time::sleep(backoff(2) + Duration::from_millis(50)).await;
        assert_eq!(
            relay.round().await,
            RoundOutcome::Refused {
                sent: 0,
                failed: 1,
                parked: 1
            }
        );
        relay.finish().await;
        let sent = publisher.sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 5);
        assert!(sent.iter().all(|m| m.event_id != poison));
        assert!(sent.iter().any(|m| m.key == later.order_id.as_str()));
        assert_eq!(fixture.store.outbox_backlog().await.unwrap(), 0);
        assert_eq!(fixture.store.outbox_parked().await.unwrap(), 1);
        let parked = fixture.store.parked_outbox(10).await.unwrap();
        assert_eq!(parked[0].event_id, poison);
        assert_eq!(
            parked[0].last_error.as_deref(),
            Some("publish failed: message refused (test)")
        );
    }

    /// An outage with no new payment (every row claimed has been tried
    /// before) is still an outage: the relay probes at most every second,
    /// the rows are due at each probe whatever their attempts, and the first
    /// probe after the broker's return sends them all.
    #[tokio::test]
    async fn after_an_outage_the_next_probe_sends_every_row() {
        let fixture = Fixture::new().await;
        fixture.paid_order("u1", 1).await;
        let publisher = Arc::new(RecordingPublisher::default());
        publisher.down.store(true, Ordering::SeqCst);
        let mut relay = relay(&fixture, &publisher, 64);
        for round in 1..=5 {
            assert_eq!(
                relay.round().await,
                RoundOutcome::BrokerDown { sent: 0, failed: 2 },
                "round {round}"
            );
            assert_eq!(relay.failures(), round);
            tokio::time::sleep(probe(round) + Duration::from_millis(50)).await;
        }
        assert_eq!(probe(relay.failures()), MAX_PROBE);
        publisher.down.store(false, Ordering::SeqCst);
        assert_eq!(
            relay.round().await,
            RoundOutcome::Published {
                sent: 2,
                backlog: false
            }
        );
        relay.finish().await;
        assert_eq!(fixture.store.outbox_backlog().await.unwrap(), 0);
    }

    /// While the broker takes nothing, rows are retried but never parked,
    /// however many claims they fail.
    #[tokio::test]
    async fn an_outage_parks_nothing() {
        let fixture = Fixture::new().await;
        fixture.paid_order("u1", 1).await;
        let publisher = Arc::new(RecordingPublisher::default());
        publisher.down.store(true, Ordering::SeqCst);
        let mut relay = relay(&fixture, &publisher, 64);
        for claim in 1..=4 {
            let outcome = relay.round().await;
            assert!(
                matches!(
                    outcome,
                    RoundOutcome::BrokerDown { sent: 0, failed: 2 }
                        | RoundOutcome::Refused {
                            sent: 0,
                            failed: 2,
                            parked: 0
                        }
                ),
                "claim {claim}: {outcome:?}"
            );
            // Past the longest wait a row or the streak can ask for.
            tokio::time::sleep(backoff(claim + 1) + Duration::from_millis(50)).await;
        }
        assert_eq!(fixture.store.outbox_parked().await.unwrap(), 0);
        assert_eq!(fixture.store.outbox_backlog().await.unwrap(), 2);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(30), MAX_BACKOFF);
    }
}
