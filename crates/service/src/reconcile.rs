//! The reconciler: every sent event must be seen applied by every group
//! that subscribes to it; what is not is published again.
//!
//! The broker's `SEND_OK` marks an outbox row sent, and the relay forgets
//! it; a message lost after that (a broker disk replaced, a topic recreated,
//! offsets reset past it, a dead-letter queue never replayed) would leave a
//! paid order without its points, a refund `REQUESTED` for ever. Each pass
//! ([`Reconciler::step`]) reads the sent rows not yet settled that were sent
//! at least `after` ago, oldest first, and decides with the domain's rule
//! ([`ordermq_domain::reconcile::missing_groups`]) from the groups' receipts
//! and the order database's state: a row nobody owes any more is settled
//! (never read again); a row some group owes is put back for the relay
//! (inboxes make the second delivery harmless where the first arrived), at
//! most `batch` per pass, until it has been put back `max` times or was
//! first written longer than `window` ago: then it is left for an operator
//! (`ordermq outbox missing`). A close is owed only once it is due (its
//! delivery time plus `after`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ordermq_domain::feed::FEED_EVENT_PREFIX;
use ordermq_domain::ports::StorageError;
use ordermq_domain::reconcile::{Facts, missing_groups};
use ordermq_domain::view::ReconcileStats;
use ordermq_domain::{OrderEvent, now_millis};
use ordermq_store::{SentRow, Store};
use tokio_util::sync::CancellationToken;

/// The reconciler's settings (`reconcile_*`).
#[derive(Debug, Clone, Copy)]
pub struct ReconcileOptions {
    /// How long after its send an event must be acknowledged by every
    /// subscribed group before it is published again.
    pub after: Duration,
    /// Time between passes.
    pub interval: Duration,
    /// Events first written longer ago than this are no longer published again.
    pub window: Duration,
    /// Most events put back per pass.
    pub batch: usize,
    /// Times one event is put back before it is left for an operator.
    pub max: u32,
}

/// Rows read per page of a pass.
const PAGE: i64 = 500;
/// How long one pass may read pages; the rest waits for the next pass. A
/// count of pages would cap what a pass settles (40 pages of 500 a minute
/// settle 333 rows/s, less than a shop sending 1,000 payments/s writes), so
/// the backlog of unsettled rows would grow without end; a time budget lets
/// a pass settle as fast as the database answers, and still ends.
const PASS_BUDGET: Duration = Duration::from_secs(20);

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepOutcome {
    /// Unsettled sent rows read.
    pub examined: usize,
    /// Rows every subscriber is done with, now settled.
    pub settled: usize,
    /// Rows put back for the relay.
    pub republished: usize,
    /// Rows some group owes that were not put back: over `max`, older
    /// than `window`, or past this pass's `batch`.
    pub left: usize,
    /// Closes not due yet (the order is unpaid and its close time is near).
    pub not_due: usize,
}

/// The reconciler's counts, shared with `/api/stats`.
#[derive(Debug, Default)]
pub struct ReconcileCounters {
    stats: Mutex<ReconcileStats>,
}

impl ReconcileCounters {
    /// The latest pass's counts and the total put back since start.
    pub fn snapshot(&self) -> ReconcileStats {
        *self.stats.lock().expect("reconcile stats lock")
    }
}

/// One reconciler: its store, settings and counts.
#[derive(Debug, Clone)]
pub struct Reconciler {
    store: Store,
    options: ReconcileOptions,
    counters: Arc<ReconcileCounters>,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Reconciler {
    pub fn new(store: Store, options: ReconcileOptions, counters: Arc<ReconcileCounters>) -> Self {
        Self {
            store,
            options,
            counters,
        }
    }

    /// One pass at `now` (epoch ms): settle what is done, put back what is
    /// owed (at most `batch`), and refresh the counts.
    ///
    /// # Errors
    ///
    /// The order database could not be read or written; what the pass
    /// wrote before stays written.
    pub async fn step(&self, now: i64) -> Result<StepOutcome, StorageError> {
        let after = millis(self.options.after);
        let oldest_created = now.saturating_sub(millis(self.options.window));
        let sent_before = now.saturating_sub(after);
        let mut outcome = StepOutcome::default();
        let mut left_for_operator = 0;
        let mut cursor = (i64::MIN, 0);
        let started = std::time::Instant::now();
        while started.elapsed() < PASS_BUDGET {
            let rows = self
                .store
                .unsettled_outbox(sent_before, cursor, PAGE)
                .await?;
            let Some(last) = rows.last() else { break };
            cursor = (last.sent_at, last.id);
            outcome.examined += rows.len();
            let owed = owed_by(&self.store, &rows).await?;
            let (mut settle, mut republish) = (Vec::new(), Vec::new());
            for (row, missing) in rows.iter().zip(owed) {
                let Some(missing) = missing else {
                    tracing::warn!(outbox_id = row.id, event_id = %row.event_id, "outbox row does not decode; not reconciled");
                    outcome.left += 1;
                    continue;
                };
                if missing.is_empty() {
                    settle.push(row.id);
                } else if row
                    .deliver_at
                    .is_some_and(|at| at.saturating_add(after) > now)
                {
                    outcome.not_due += 1;
                } else if row.republished >= i64::from(self.options.max)
                    || row.created_at < oldest_created
                {
                    left_for_operator += 1;
                    outcome.left += 1;
                } else if outcome.republished + republish.len() >= self.options.batch {
                    outcome.left += 1;
                } else {
                    tracing::info!(
                        outbox_id = row.id,
                        event_id = %row.event_id,
                        missing = %missing.join(","),
                        republished = row.republished,
                        "event not acknowledged by every subscribed group; publishing it again"
                    );
                    republish.push(row.id);
                }
            }
            outcome.settled += settle.len();
            let put_back = self.store.reconcile_rows(&settle, &republish, now).await?;
            outcome.republished += usize::try_from(put_back).unwrap_or(usize::MAX);
            if (rows.len() as i64) < PAGE {
                break;
            }
        }
        let unsettled = self.store.unsettled(sent_before).await?;
        let mut stats = self.counters.stats.lock().expect("reconcile stats lock");
        stats.republished += outcome.republished as u64;
        // Closes not yet due are unsettled but owed by nobody yet.
        stats.missing = (unsettled.rows - outcome.not_due as i64).max(0);
        stats.left_for_operator = left_for_operator;
        stats.oldest_missing_age_ms = unsettled
            .oldest_sent_at
            .filter(|_| stats.missing > 0)
            .map(|at| now - at);
        stats.checked_at = Some(now);
        Ok(outcome)
    }
}

/// The groups that still owe each of `rows` (`None`: the row's body is not
/// an event), from their receipts and the order database's state.
///
/// # Errors
///
/// The order database could not be read.
pub async fn owed_by(
    store: &Store,
    rows: &[SentRow],
) -> Result<Vec<Option<Vec<&'static str>>>, StorageError> {
    let events: Vec<Option<OrderEvent>> = rows
        .iter()
        .map(|r| OrderEvent::from_json(r.body.as_bytes()).ok())
        .collect();
    let event_ids: Vec<String> = rows.iter().map(|r| r.event_id.clone()).collect();
    let mut receipts: HashMap<String, Vec<String>> = HashMap::new();
    for receipt in store.receipts_of(&event_ids).await? {
        receipts
            .entry(receipt.event_id)
            .or_default()
            .push(receipt.consumer_group);
    }
    let order_ids: Vec<String> = events
        .iter()
        .flatten()
        .filter(|e| matches!(e, OrderEvent::OrderCloseDue(_)))
        .map(|e| e.order_id().as_str().to_owned())
        .collect();
    let orders = store.order_statuses(&order_ids).await?;
    let refund_ids: Vec<String> = events
        .iter()
        .flatten()
        .filter_map(refund_of)
        .map(str::to_owned)
        .collect();
    let refunds = store.refund_statuses(&refund_ids).await?;
    Ok(rows
        .iter()
        .zip(&events)
        .map(|(row, event)| {
            // The change feed is the data team's: no group of the order
            // service owes it, and its sink checks itself (`feed verify`).
            if row.event_id.starts_with(FEED_EVENT_PREFIX) {
                return Some(Vec::new());
            }
            let event = event.as_ref()?;
            let facts = Facts {
                receipts: receipts.get(&row.event_id).map_or(&[], Vec::as_slice),
                order_status: orders.get(event.order_id().as_str()).copied(),
                refund_status: refund_of(event).and_then(|id| refunds.get(id).copied()),
            };
            Some(missing_groups(event, &facts))
        })
        .collect())
}

fn refund_of(event: &OrderEvent) -> Option<&str> {
    match event {
        OrderEvent::OrderRefundRequested(r) => Some(r.refund_id.as_str()),
        OrderEvent::RefundRetryRequested(r) => Some(r.refund_id.as_str()),
        _ => None,
    }
}

/// Runs a pass every `interval` until `shutdown` is cancelled.
pub async fn run(reconciler: Reconciler, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(reconciler.options.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match reconciler.step(now_millis()).await {
            Ok(outcome) if outcome.republished > 0 || outcome.left > 0 => {
                tracing::info!(?outcome, "reconciler pass");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "reconciler pass failed; trying again next interval")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use ordermq_domain::ports::{Delivery, Handler, Outcome};
    use ordermq_domain::reconcile::Receipt;
    use ordermq_domain::topology::receipt_groups;
    use ordermq_domain::{EventKind, OrderId};

    use super::*;
    use crate::consumers::ReceiptHandler;
    use crate::testing::{Fixture, relay_all};

    fn reconciler(fixture: &Fixture, max: u32) -> (Reconciler, Arc<ReconcileCounters>) {
        let counters = Arc::new(ReconcileCounters::default());
        let options = ReconcileOptions {
            after: Duration::ZERO,
            interval: Duration::from_secs(60),
            window: Duration::from_secs(3600),
            batch: 10,
            max,
        };
        (
            Reconciler::new(fixture.store.clone(), options, counters.clone()),
            counters,
        )
    }

    fn receipt(order: &OrderId, group: &str, n: u32) -> Delivery {
        let receipt = Receipt {
            consumer_group: group.to_owned(),
            event_ids: vec![OrderEvent::paid_event_id(order)],
            applied_at: 7,
            shipments: Default::default(),
        };
        Delivery {
            msg_id: format!("receipt-{n}"),
            topic: Receipt::KIND.topic().to_owned(),
            tag: Receipt::KIND.tag().to_owned(),
            key: group.to_owned(),
            body: receipt.to_json().into_bytes(),
            reconsume_times: 0,
            max_reconsume_times: 16,
        }
    }

    /// A paid order's event without its receipts is put back once (its
    /// close, the order being paid, is settled); the relay sends it again;
    /// with every subscribed group's receipt (one of them twice) it is
    /// settled, and nothing is owed.
    #[tokio::test]
    async fn an_event_without_its_receipts_goes_out_again_until_they_arrive() {
        let fixture = Fixture::new().await;
        let order = fixture.paid_order("u1", 1).await;
        assert_eq!(relay_all(&fixture).await.len(), 2);
        let (reconciler, counters) = reconciler(&fixture, 5);
        let later = now_millis();

        let first = reconciler.step(later).await.unwrap();
        assert_eq!(
            first,
            StepOutcome {
                examined: 2,
                settled: 1,
                republished: 1,
                ..StepOutcome::default()
            }
        );
        let again = relay_all(&fixture).await;
        assert_eq!(again.len(), 1);
        assert_eq!(
            again[0].event_id,
            OrderEvent::paid_event_id(&order.order_id)
        );

        let handler = ReceiptHandler::new(fixture.store.clone());
        let mut batch: Vec<Delivery> = receipt_groups(EventKind::OrderPaid)
            .into_iter()
            .enumerate()
            .map(|(n, group)| receipt(&order.order_id, group, n as u32))
            .collect();
        // One group's receipt, delivered twice.
        batch.push(receipt(&order.order_id, "credit_group", 9));
        assert_eq!(handler.handle(batch).await, Outcome::Consumed);

        let later = now_millis();
        let second = reconciler.step(later).await.unwrap();
        assert_eq!(
            second,
            StepOutcome {
                examined: 1,
                settled: 1,
                ..StepOutcome::default()
            }
        );
        assert!(relay_all(&fixture).await.is_empty(), "nothing sent again");
        let stats = counters.snapshot();
        assert_eq!((stats.republished, stats.missing), (1, 0));
        assert_eq!(stats.oldest_missing_age_ms, None);
    }

    /// Put back `max` times without its receipts, an event is left for an
    /// operator: counted, never sent again.
    #[tokio::test]
    async fn an_event_put_back_max_times_is_left_for_an_operator() {
        let fixture = Fixture::new().await;
        fixture.paid_order("u1", 1).await;
        relay_all(&fixture).await;
        let (reconciler, counters) = reconciler(&fixture, 1);
        let first = reconciler.step(now_millis()).await.unwrap();
        assert_eq!(first.republished, 1);
        assert_eq!(relay_all(&fixture).await.len(), 1);
        let second = reconciler.step(now_millis()).await.unwrap();
        assert_eq!((second.republished, second.left), (0, 1));
        assert!(relay_all(&fixture).await.is_empty());
        let stats = counters.snapshot();
        assert_eq!(
            (stats.republished, stats.missing, stats.left_for_operator),
            (1, 1, 1)
        );
        assert!(stats.oldest_missing_age_ms.is_some_and(|age| age >= 0));
        assert_eq!(
            fixture.store.missing_outbox(1, 10).await.unwrap().len(),
            1,
            "listed by `ordermq outbox missing`"
        );
    }

    /// A close is owed only once due (its delivery time plus `after`) and
    /// only while the order is unpaid: not due, it is left alone; due, it
    /// goes out again; once the order is closed, it is settled.
    #[tokio::test]
    async fn a_close_goes_out_again_only_when_due_and_the_order_still_unpaid() {
        let options = |after| ReconcileOptions {
            after,
            interval: Duration::from_secs(60),
            window: Duration::from_secs(7 * 24 * 3600),
            batch: 10,
            max: 5,
        };
        // Due in ten minutes; looked at two minutes after its send.
        let fixture = Fixture::closing_after(600_000).await;
        fixture.unpaid_order("u1", 1).await;
        assert_eq!(relay_all(&fixture).await.len(), 1);
        let counters = Arc::new(ReconcileCounters::default());
        let waiting = Reconciler::new(
            fixture.store.clone(),
            options(Duration::from_secs(60)),
            counters.clone(),
        );
        let outcome = waiting.step(now_millis() + 120_000).await.unwrap();
        assert_eq!((outcome.examined, outcome.not_due), (1, 1), "{outcome:?}");
        assert_eq!(outcome.republished, 0);
        assert_eq!(counters.snapshot().missing, 0, "owed by nobody yet");

        // Due now, the order still unpaid: it goes out again; once the
        // order is closed, it is settled.
        let fixture = Fixture::closing_after(0).await;
        let unpaid = fixture.unpaid_order("u1", 1).await;
        let close = relay_all(&fixture).await;
        let due = Reconciler::new(fixture.store.clone(), options(Duration::ZERO), counters);
        assert_eq!(due.step(now_millis()).await.unwrap().republished, 1);
        let again = relay_all(&fixture).await;
        assert_eq!(again[0].event_id, close[0].event_id);
        fixture.writer.close(unpaid.order_id.clone()).await.unwrap();
        assert_eq!(
            due.step(now_millis()).await.unwrap(),
            StepOutcome {
                examined: 1,
                settled: 1,
                ..StepOutcome::default()
            }
        );
    }
}
