//! The close consumer (`order_close_group`): closes an unpaid order when its
//! delayed close arrives.
//!
//! Creating an order wrote an `OrderCloseDue` to the outbox in the same
//! transaction, and the broker delivers it at the order's `close_at` (a
//! delayed message, see `ordermq_messaging::delay`): no table scan finds
//! expired orders. The close is one guarded `UNPAID → CANCELLED` through the
//! group-commit writer, so it races with a payment on the status and exactly
//! one wins. [`crate::sweep`] backs this up for a close message that never
//! arrives.

use futures_util::future::join_all;
use ordermq_domain::ports::{BoxFuture, Delivery, Handler, Outcome};
use ordermq_domain::topology::{Consumer, group_of};
use ordermq_domain::{OrderEvent, deadline_millis, now_millis};
use ordermq_store::{CLOSE_EARLY_TOLERANCE_MS, CloseOutcome, Store};

use super::park_undecodable;
use crate::group_commit::OrderWriter;

/// What became of one close message.
enum Close {
    /// Closed, or nothing to close.
    Done,
    /// Not due yet.
    Waits(String),
    /// The storage failed (or the message does not decode).
    Failed(String),
}

/// Applies due closes.
#[derive(Debug, Clone)]
pub struct CloseHandler {
    writer: OrderWriter,
    /// Where a message that is not an event is parked.
    store: Store,
}

impl CloseHandler {
    pub fn new(writer: OrderWriter, store: Store) -> Self {
        Self { writer, store }
    }

    async fn consume(&self, batch: Vec<Delivery>) -> Outcome {
        let closes = batch.iter().map(|delivery| async move {
            let due = match OrderEvent::from_json(&delivery.body) {
                Ok(OrderEvent::OrderCloseDue(due)) => due,
                Ok(other) => {
                    tracing::warn!(kind = ?other.kind(), "unexpected event in the close group; ignored");
                    return Close::Done;
                }
                // Parked on its own: it would fail every retry, and its batch with it.
                Err(e) => {
                    let group = group_of(Consumer::Close).name;
                    return match park_undecodable(&self.store, group, delivery, &e.to_string())
                        .await
                    {
                        Ok(()) => Close::Done,
                        Err(reason) => Close::Failed(reason),
                    };
                }
            };
            // Not due on the deadline clock (the wall clock stepped
            // ahead, or the relay's was when it sent this): it waits.
            let counted = deadline_millis();
            if due.due_at > counted + CLOSE_EARLY_TOLERANCE_MS {
                return Close::Waits(format!(
                    "close of {} due in {} ms of the time counted",
                    due.order_id,
                    due.due_at - counted
                ));
            }
            match self.writer.close(due.order_id.clone()).await {
                Ok(CloseOutcome::Closed) => {
                    tracing::debug!(order_id = %due.order_id, late_ms = now_millis() - due.due_at, "unpaid order closed");
                    Close::Done
                }
                Ok(CloseOutcome::NotUnpaid(_) | CloseOutcome::NotFound) => Close::Done,
                // Its due time has not come (the clock of whoever sent it
                // on ran ahead): it waits, and is tried again soon.
                Ok(CloseOutcome::NotDue { close_at }) => Close::Waits(format!(
                    "close of {} arrived {} ms early",
                    due.order_id,
                    close_at - now_millis()
                )),
                Err(e) => Close::Failed(e.to_string()),
            }
        });
        let mut failure = None;
        let mut waiting = Vec::new();
        for (delivery, answer) in batch.iter().zip(join_all(closes).await) {
            match answer {
                Close::Done => {}
                Close::Failed(reason) => {
                    failure.get_or_insert(reason);
                }
                Close::Waits(reason) => waiting.push((delivery.msg_id.clone(), reason)),
            }
        }
        let outcome = Outcome::of_batch(failure, waiting);
        if let Outcome::RetryLater(reason) = &outcome {
            tracing::warn!(reason, "close failed; RocketMQ will redeliver it");
        }
        outcome
    }
}

impl Handler for CloseHandler {
    fn handle(&self, batch: Vec<Delivery>) -> BoxFuture<'_, Outcome> {
        Box::pin(self.consume(batch))
    }
}

#[cfg(test)]
mod tests {
    use ordermq_domain::ports::OrderService;
    use ordermq_domain::{EventKind, OrderStatus};

    use super::*;
    use crate::testing::{Fixture, delivery_of, relay_all};

    /// Every close the relay publishes (creating an order writes one).
    async fn relayed_closes(fixture: &Fixture) -> Vec<ordermq_domain::OutboxMessage> {
        let closes: Vec<_> = relay_all(fixture)
            .await
            .into_iter()
            .filter(|m| m.tag == EventKind::OrderCloseDue.tag())
            .collect();
        assert!(!closes.is_empty(), "no close was published");
        closes
    }

    async fn status(fixture: &Fixture, order: &ordermq_domain::OrderId) -> OrderStatus {
        fixture
            .orders
            .order(order.clone())
            .await
            .unwrap()
            .expect("the order exists")
            .status
    }

    #[tokio::test]
    async fn a_due_close_cancels_an_unpaid_order_and_spares_a_paid_one() {
        let fixture = Fixture::closing_after(0).await;
        let unpaid = fixture.unpaid_order("u1", 1).await;
        let paid = fixture.paid_order("u2", 1).await;
        let closes = relayed_closes(&fixture).await;
        assert_eq!(closes.len(), 2);
        let handler = CloseHandler::new(fixture.writer.clone(), fixture.store.clone());
        let batch: Vec<_> = closes.iter().map(delivery_of).collect();
        assert_eq!(handler.handle(batch.clone()).await, Outcome::Consumed);
        assert_eq!(
            status(&fixture, &unpaid.order_id).await,
            OrderStatus::Cancelled
        );
        assert_eq!(status(&fixture, &paid.order_id).await, OrderStatus::Paid);
        // A redelivery changes nothing.
        assert_eq!(handler.handle(batch).await, Outcome::Consumed);
        assert_eq!(
            status(&fixture, &unpaid.order_id).await,
            OrderStatus::Cancelled
        );
    }

    #[tokio::test]
    async fn an_undecodable_close_is_parked_alone_and_its_batch_applied() {
        let fixture = Fixture::closing_after(0).await;
        let unpaid = fixture.unpaid_order("u1", 1).await;
        let close = relayed_closes(&fixture).await.remove(0);
        let good = delivery_of(&close);
        let broken = Delivery {
            msg_id: "broken-close".into(),
            body: b"{not json".to_vec(),
            ..good.clone()
        };
        let handler = CloseHandler::new(fixture.writer.clone(), fixture.store.clone());
        assert_eq!(
            handler.handle(vec![broken.clone(), good]).await,
            Outcome::Consumed
        );
        assert_eq!(
            status(&fixture, &unpaid.order_id).await,
            OrderStatus::Cancelled
        );
        let parked = fixture
            .store
            .parked(Some("order_close_group"))
            .await
            .unwrap();
        assert_eq!(parked.len(), 1, "{parked:?}");
        assert_eq!(parked[0].msg_id, "broken-close");
        assert_eq!(parked[0].reason, ordermq_domain::parked::UNDECODABLE);
        // Delivered again: parked once, nothing else changes.
        assert_eq!(handler.handle(vec![broken]).await, Outcome::Consumed);
        assert_eq!(
            fixture
                .store
                .parked(Some("order_close_group"))
                .await
                .unwrap()
                .len(),
            1
        );
    }

    /// The order is due in the database (it closes at once), but the
    /// message says an hour from now: what a relay whose clock was ahead
    /// would not send, and a wall clock stepped ahead would call due. The
    /// deadline clock says wait.
    #[tokio::test]
    async fn a_close_not_due_on_the_deadline_clock_waits_whatever_the_database_says() {
        let fixture = Fixture::closing_after(0).await;
        let unpaid = fixture.unpaid_order("u1", 1).await;
        let close = relayed_closes(&fixture).await.remove(0);
        let later = OrderEvent::OrderCloseDue(ordermq_domain::event::OrderCloseDue {
            order_id: unpaid.order_id.clone(),
            due_at: now_millis() + 3_600_000,
        });
        let early = Delivery {
            body: later.to_json().into_bytes(),
            ..delivery_of(&close)
        };
        let handler = CloseHandler::new(fixture.writer.clone(), fixture.store.clone());
        assert!(matches!(
            handler.handle(vec![early]).await,
            Outcome::Waiting(_)
        ));
        assert_eq!(
            status(&fixture, &unpaid.order_id).await,
            OrderStatus::Unpaid
        );
        // The close as sent, due now: applied.
        assert_eq!(
            handler.handle(vec![delivery_of(&close)]).await,
            Outcome::Consumed
        );
        assert_eq!(
            status(&fixture, &unpaid.order_id).await,
            OrderStatus::Cancelled
        );
    }

    #[tokio::test]
    async fn a_close_that_arrives_early_is_retried_and_closes_nothing() {
        let fixture = Fixture::new().await;
        let unpaid = fixture.unpaid_order("u1", 1).await;
        let close = relayed_closes(&fixture).await.remove(0);
        let handler = CloseHandler::new(fixture.writer.clone(), fixture.store.clone());
        assert!(matches!(
            handler.handle(vec![delivery_of(&close)]).await,
            Outcome::Waiting(_)
        ));
        assert_eq!(
            status(&fixture, &unpaid.order_id).await,
            OrderStatus::Unpaid
        );
    }
}
