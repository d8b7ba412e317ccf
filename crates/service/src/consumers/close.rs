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
use ordermq_domain::{OrderEvent, now_millis};
use ordermq_store::CloseOutcome;

use crate::group_commit::OrderWriter;

/// Applies due closes.
#[derive(Debug, Clone)]
pub struct CloseHandler {
    writer: OrderWriter,
}

impl CloseHandler {
    pub fn new(writer: OrderWriter) -> Self {
        Self { writer }
    }

    async fn consume(&self, batch: Vec<Delivery>) -> Outcome {
        let closes = batch.iter().map(|delivery| async move {
            let due = match OrderEvent::from_json(&delivery.body) {
                Ok(OrderEvent::OrderCloseDue(due)) => due,
                Ok(other) => {
                    tracing::warn!(kind = ?other.kind(), "unexpected event in the close group; ignored");
                    return None;
                }
                Err(e) => return Some(format!("undecodable close message: {e}")),
            };
            match self.writer.close(due.order_id.clone()).await {
                Ok(CloseOutcome::Closed) => {
                    tracing::debug!(order_id = %due.order_id, late_ms = now_millis() - due.due_at, "unpaid order closed");
                    None
                }
                Ok(CloseOutcome::NotUnpaid(_) | CloseOutcome::NotFound) => None,
                Ok(CloseOutcome::NotDue { close_at }) => Some(format!(
                    "close of {} arrived {} ms early",
                    due.order_id,
                    close_at - now_millis()
                )),
                Err(e) => Some(e.to_string()),
            }
        });
        match join_all(closes).await.into_iter().flatten().next() {
            None => Outcome::Consumed,
            Some(reason) => {
                tracing::warn!(reason, "close failed; RocketMQ will redeliver it");
                Outcome::RetryLater(reason)
            }
        }
    }
}

impl Handler for CloseHandler {
    fn handle(&self, batch: Vec<Delivery>) -> BoxFuture<'_, Outcome> {
        Box::pin(self.consume(batch))
    }
}
