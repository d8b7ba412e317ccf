//! The flash-sale order consumer (`flash_sale_order_group`): turns admitted
//! attempts into orders at a configured rate — the peak shaving.
//!
//! A sale admits thousands of attempts in a second; their messages wait in
//! the broker, and this group creates their orders evenly spaced, one every
//! `1 / rate` seconds (uniform pacing, as Sentinel's rate limiter does for
//! RocketMQ consumers), so the order database sees at most that rate of
//! sale orders however big the spike. An attempt whose turn would come
//! later than `max_wait` after its admission is rejected instead, with its
//! units back to the sale: a shopper hears "no" in bounded time rather than
//! waiting without end. Each order is ordinary (UNPAID, closed if unpaid,
//! paid and fanned out as any other) with its own close delay; its id was
//! drawn at admission, so a redelivered message finds it made.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use ordermq_domain::ports::{BoxFuture, Delivery, Handler, Outcome};
use ordermq_domain::topology::{Consumer, group_of};
use ordermq_domain::{OrderEvent, RejectReason, now_millis};
use ordermq_store::{Store, WriteOp};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::park_undecodable;
use crate::group_commit::OrderWriter;

/// Hands out evenly spaced turns: one every `interval`, never two at once,
/// never earlier than asked.
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    /// `per_second` turns a second; 0: every turn is now.
    pub fn new(per_second: u32) -> Self {
        let interval = match per_second {
            0 => Duration::ZERO,
            n => Duration::from_secs(1) / n,
        };
        Self {
            interval,
            next: Mutex::new(None),
        }
    }

    /// The next turn at or after `now`, taken if it comes before
    /// `deadline`; `None` (nothing taken) if it would come later.
    pub fn turn(&self, now: Instant, deadline: Option<Instant>) -> Option<Instant> {
        let mut next = self
            .next
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let turn = next.map_or(now, |n| n.max(now));
        if deadline.is_some_and(|d| turn > d) {
            return None;
        }
        *next = Some(turn + self.interval);
        Some(turn)
    }
}

/// What the flash-sale group needs.
#[derive(Debug, Clone)]
pub struct FlashOrderSettings {
    /// Orders created per second (0: unpaced).
    pub rate: u32,
    /// The longest from admission to an order (zero: no cap).
    pub max_wait: Duration,
    /// A sale order closes if unpaid this long after its creation.
    pub close_after: Duration,
}

/// Creates flash-sale orders, paced.
#[derive(Debug, Clone)]
pub struct FlashOrderHandler {
    writer: OrderWriter,
    store: Store,
    pacer: Arc<Pacer>,
    settings: FlashOrderSettings,
    relay_wake: Arc<Notify>,
}

impl FlashOrderHandler {
    pub fn new(
        writer: OrderWriter,
        store: Store,
        settings: FlashOrderSettings,
        relay_wake: Arc<Notify>,
    ) -> Self {
        Self {
            writer,
            store,
            pacer: Arc::new(Pacer::new(settings.rate)),
            settings,
            relay_wake,
        }
    }

    /// One delivery: `None` when done (created, rejected, or already ended).
    async fn one(&self, delivery: &Delivery) -> Option<String> {
        let queued = match OrderEvent::from_json(&delivery.body) {
            Ok(OrderEvent::FlashAttemptQueued(queued)) => queued,
            Ok(other) => {
                tracing::warn!(kind = ?other.kind(), "unexpected event in the flash-sale group; ignored");
                return None;
            }
            // Parked on its own: it would fail every retry, and its batch with it.
            Err(e) => {
                let group = group_of(Consumer::FlashSale).name;
                return park_undecodable(&self.store, group, delivery, &e.to_string())
                    .await
                    .err();
            }
        };
        let now = Instant::now();
        // The deadline counts from the admission, the broker's wait included.
        let deadline = (!self.settings.max_wait.is_zero()).then(|| {
            let waited = Duration::from_millis((now_millis() - queued.queued_at).max(0) as u64);
            now + self.settings.max_wait.saturating_sub(waited)
        });
        let op = match self.pacer.turn(now, deadline) {
            Some(turn) => {
                tokio::time::sleep_until(turn).await;
                WriteOp::CreateSaleOrder {
                    event: queued.clone(),
                    close_after_ms: self.settings.close_after.as_millis() as i64,
                }
            }
            None => WriteOp::RejectAttempt {
                sale_id: queued.sale_id.clone(),
                attempt_id: queued.attempt_id.clone(),
                reason: RejectReason::QueueTimeout,
            },
        };
        match self.writer.end_attempt(op).await {
            Ok(state) => {
                tracing::debug!(attempt_id = %queued.attempt_id, state = state.name(), "flash-sale attempt ended");
                None
            }
            Err(e) => Some(format!("attempt {}: {e}", queued.attempt_id)),
        }
    }

    async fn consume(&self, batch: Vec<Delivery>) -> Outcome {
        let ends = join_all(batch.iter().map(|delivery| self.one(delivery))).await;
        // Their close messages are in the outbox: hand them to the broker.
        self.relay_wake.notify_one();
        match ends.into_iter().flatten().next() {
            None => Outcome::Consumed,
            Some(reason) => {
                tracing::warn!(
                    reason,
                    "flash-sale order failed; RocketMQ will redeliver it"
                );
                Outcome::RetryLater(reason)
            }
        }
    }
}

impl Handler for FlashOrderHandler {
    fn handle(&self, batch: Vec<Delivery>) -> BoxFuture<'_, Outcome> {
        Box::pin(self.consume(batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_are_evenly_spaced_and_refused_past_the_deadline() {
        let pacer = Pacer::new(10);
        let start = Instant::now();
        let turns: Vec<_> = (0..3).map(|_| pacer.turn(start, None).unwrap()).collect();
        assert_eq!(turns[0], start);
        assert_eq!(turns[1] - turns[0], Duration::from_millis(100));
        assert_eq!(turns[2] - turns[1], Duration::from_millis(100));
        // The next turn is start + 300 ms: a deadline before it takes nothing.
        assert_eq!(
            pacer.turn(start, Some(start + Duration::from_millis(250))),
            None
        );
        assert_eq!(
            pacer.turn(start, Some(start + Duration::from_millis(300))),
            Some(start + Duration::from_millis(300))
        );
        // A late caller is not sent into the past.
        let later = start + Duration::from_secs(5);
        assert_eq!(pacer.turn(later, None), Some(later));
        assert_eq!(Pacer::new(0).turn(later, None), Some(later));
    }

    #[tokio::test]
    async fn an_undecodable_attempt_message_is_parked_not_retried() {
        let fixture = crate::testing::Fixture::new().await;
        let handler = FlashOrderHandler::new(
            fixture.writer.clone(),
            fixture.store.clone(),
            FlashOrderSettings {
                rate: 0,
                max_wait: Duration::ZERO,
                close_after: Duration::from_secs(60),
            },
            Arc::new(Notify::new()),
        );
        let broken = Delivery {
            msg_id: "broken-attempt".into(),
            topic: "TopicFlashSaleAttempt".into(),
            tag: "FlashAttemptQueued".into(),
            key: "attempt-1".into(),
            body: b"{not json".to_vec(),
            reconsume_times: 0,
            max_reconsume_times: 16,
        };
        assert_eq!(
            handler.handle(vec![broken.clone()]).await,
            Outcome::Consumed
        );
        assert_eq!(handler.handle(vec![broken]).await, Outcome::Consumed);
        let parked = fixture
            .store
            .parked(Some("flash_sale_order_group"))
            .await
            .unwrap();
        assert_eq!(parked.len(), 1, "parked once: {parked:?}");
        assert_eq!(parked[0].msg_id, "broken-attempt");
        assert_eq!(parked[0].reason, ordermq_domain::parked::UNDECODABLE);
    }
}
