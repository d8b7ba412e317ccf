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
use ordermq_domain::topology::{Consumer, group_of};
use ordermq_store::{Receipt, Store};

use super::park_undecodable;

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
                // Never readable: parked, for an operator to see (`ordermq dlq
                // parked`); the reconciler publishes its events again, and
                // the group's next receipt takes its place.
                Err(e) => {
                    let group = group_of(Consumer::Receipt).name;
                    if let Err(reason) =
                        park_undecodable(&self.store, group, delivery, &e.to_string()).await
                    {
                        return Outcome::RetryLater(reason);
                    }
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

#[cfg(test)]
mod tests {
    use ordermq_domain::{OrderEvent, OrderId};

    use super::*;
    use crate::testing::Fixture;

    fn receipt(msg_id: &str, body: Vec<u8>) -> Delivery {
        Delivery {
            msg_id: msg_id.to_owned(),
            topic: ReceiptMessage::KIND.topic().to_owned(),
            tag: ReceiptMessage::KIND.tag().to_owned(),
            key: "credit_group".to_owned(),
            body,
            reconsume_times: 0,
            max_reconsume_times: 16,
        }
    }

    #[tokio::test]
    async fn an_undecodable_receipt_is_parked_and_its_batch_recorded() {
        let fixture = Fixture::new().await;
        let event_id = OrderEvent::paid_event_id(&OrderId::generate(1_700_000_000_000, 1u64));
        let good = ReceiptMessage {
            consumer_group: "credit_group".to_owned(),
            event_ids: vec![event_id.clone()],
            applied_at: 7,
            shipments: Default::default(),
        };
        let handler = ReceiptHandler::new(fixture.store.clone());
        let batch = vec![
            receipt("broken-receipt", b"{not json".to_vec()),
            receipt("good-receipt", good.to_json().into_bytes()),
        ];
        assert_eq!(handler.handle(batch.clone()).await, Outcome::Consumed);
        let recorded = fixture.store.receipts_of(&[event_id]).await.unwrap();
        assert_eq!(recorded.len(), 1, "{recorded:?}");
        let parked = fixture
            .store
            .parked(Some("order_receipt_group"))
            .await
            .unwrap();
        assert_eq!(parked.len(), 1, "{parked:?}");
        assert_eq!(parked[0].msg_id, "broken-receipt");
        assert_eq!(parked[0].reason, ordermq_domain::parked::UNDECODABLE);
        // Delivered again: parked once, recorded once.
        assert_eq!(handler.handle(batch).await, Outcome::Consumed);
        let parked = fixture.store.parked(None).await.unwrap();
        assert_eq!(parked.len(), 1, "{parked:?}");
    }
}
