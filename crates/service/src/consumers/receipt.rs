//! The receipt consumer (`order_receipt_group`): records that a downstream
//! group applied an event.
//!
//! Each group writes a receipt (`EffectApplied`) with its effect and inbox
//! row and relays it from its own database; here the order service records
//! it in `event_receipts`, once per (event, group), so a receipt delivered
//! twice changes nothing. The reconciler ([`crate::reconcile`]) reads them:
//! a sent event without every subscribed group's receipt is published again.

use ordermq_domain::ports::{BoxFuture, Delivery, Handler, Outcome};
use ordermq_domain::{OrderEvent, now_millis};
use ordermq_store::{Receipt, Store};

/// Records receipts.
#[derive(Debug, Clone)]
pub struct ReceiptHandler {
    store: Store,
}

impl ReceiptHandler {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    async fn consume(&self, batch: Vec<Delivery>) -> Outcome {
        let mut receipts = Vec::with_capacity(batch.len());
        for delivery in &batch {
            match OrderEvent::from_json(&delivery.body) {
                Ok(OrderEvent::EffectApplied(applied)) => receipts.push(Receipt {
                    event_id: applied.event_id,
                    consumer_group: applied.consumer_group,
                    applied_at: applied.applied_at,
                }),
                // Never readable: the reconciler publishes its event again,
                // and the group's next receipt takes its place.
                Ok(other) => {
                    tracing::warn!(kind = ?other.kind(), "unexpected event in the receipt group; ignored");
                }
                Err(e) => {
                    tracing::warn!(error = %e, msg_id = %delivery.msg_id, "undecodable receipt; ignored");
                }
            }
        }
        match self.store.record_receipts(&receipts, now_millis()).await {
            Ok(_) => Outcome::Consumed,
            Err(e) => Outcome::RetryLater(e.to_string()),
        }
    }
}

impl Handler for ReceiptHandler {
    fn handle(&self, batch: Vec<Delivery>) -> BoxFuture<'_, Outcome> {
        Box::pin(self.consume(batch))
    }
}
