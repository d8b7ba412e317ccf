//! The receipt consumer (`order_receipt_group`): records that a downstream
//! group applied an event.
//!
//! Each group writes one receipt per batch (`EffectsApplied`: the events it
//! applied) with its effects and inbox rows and relays it from its own
//! database; here the order service records it in `event_receipts`, once
//! per (event, group), so a receipt delivered twice changes nothing. A
//! whole batch of receipt messages is one multi-row insert. The warehouse's
//! receipts also carry the tracking number of each shipment it booked,
//! kept in `shipment_receipts`: what a carrier's callback is checked
//! against when the warehouse runs as its own process. The reconciler ([`crate::reconcile`]) reads them:
//! a sent event without every subscribed group's receipt is published again.

use ordermq_domain::now_millis;
use ordermq_domain::ports::{BoxFuture, Delivery, Handler, Outcome};
use ordermq_domain::reconcile::Receipt as ReceiptMessage;
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
        let mut shipments = Vec::new();
        for delivery in &batch {
            match ReceiptMessage::from_json(&delivery.body) {
                Ok(message) => {
                    shipments.extend(message.shipments);
                    receipts.extend(message.event_ids.into_iter().map(|event_id| Receipt {
                        event_id,
                        consumer_group: message.consumer_group.clone(),
                        applied_at: message.applied_at,
                    }));
                }
                // Never readable: the reconciler publishes its events again,
                // and the group's next receipt takes its place.
                Err(e) => {
                    tracing::warn!(error = %e, msg_id = %delivery.msg_id, "undecodable receipt; ignored");
                }
            }
        }
        // The tracking numbers first: once a receipt is recorded, nothing
        // asks for it again; both writes change nothing when repeated.
        let now = now_millis();
        if let Err(e) = self.store.record_shipments(&shipments, now).await {
            return Outcome::RetryLater(e.to_string());
        }
        match self.store.record_receipts(&receipts, now).await {
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
