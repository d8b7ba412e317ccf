//! The reconciler's rule: has every group that subscribes to a sent event
//! applied it?
//!
//! A message the broker stored can still be lost to its consumers (a disk
//! replaced, a topic recreated, offsets reset past it, a dead-letter queue
//! never replayed). The downstream systems say what they applied with
//! receipts ([`Receipt`], from their own databases); the order service's
//! own groups leave their mark in the order database instead (a closed
//! order, a refund no longer `REQUESTED`). This module decides, without any
//! I/O, from those facts, which groups still owe an event; the service's
//! reconciler reads the facts and publishes the event again.

#![warn(missing_docs)]

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::{EventKind, OrderEvent};
use crate::lifecycle::RefundStatus;
use crate::order::OrderStatus;
use crate::topology::{self, Consumer, group_of};

/// A consumer group's receipt: "group `consumer_group` applied these
/// events". A group writes one per batch it commits (the events it applied
/// and those it found applied already: they came back, so their earlier
/// receipt may be lost), in the transaction of the effects and their inbox
/// rows, and relays it from its own database to `TopicOrderReceipt`
/// (message kind [`EventKind::EffectsApplied`]). One message per batch,
/// not per event: at thousands of payments a second, a receipt per event
/// would be four more messages per payment through the broker and the
/// order database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "EffectsApplied")]
pub struct Receipt {
    /// The consumer group that applied the events.
    pub consumer_group: String,
    /// The events applied (each an [`OrderEvent::event_id`]).
    pub event_ids: Vec<String>,
    /// Epoch milliseconds when the group committed them.
    pub applied_at: i64,
    /// The shipments the warehouse booked in the batch: order id →
    /// tracking number (empty for the other groups). The order service
    /// keeps them to check a carrier's callback against when the warehouse
    /// runs as its own process, with its own database (`role`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shipments: BTreeMap<String, String>,
}

impl Receipt {
    /// The message body: JSON tagged `"type": "EffectsApplied"`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("receipts serialize")
    }

    /// Parses a message body written by [`Receipt::to_json`].
    ///
    /// # Errors
    ///
    /// The body is not a receipt.
    pub fn from_json(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// The kind of message a receipt travels as.
    pub const KIND: EventKind = EventKind::EffectsApplied;
}

/// What the order database knows about one sent event.
#[derive(Debug, Clone, Default)]
pub struct Facts<'a> {
    /// The groups whose receipt for the event arrived.
    pub receipts: &'a [String],
    /// The status of the event's order (read for `OrderCloseDue`).
    pub order_status: Option<OrderStatus>,
    /// The status of the event's refund (refund events).
    pub refund_status: Option<RefundStatus>,
}

/// The groups that still owe `event`, given `facts`; empty when every
/// subscriber is done with it.
///
/// - `OrderPaid`, `ShipmentUpdated`: each downstream system subscribed
///   ([`topology::receipt_groups`]) without its receipt.
/// - `OrderRefundRequested`: the same, and `payment_refund_group` while the
///   refund is still `REQUESTED`.
/// - `RefundRetryRequested`: `payment_refund_group` while the refund is
///   `REQUESTED`.
/// - `OrderCloseDue`: `order_close_group` while the order is `UNPAID`
///   (asked only once the close is due).
///
/// Receipts ([`Receipt`]) are not events and are never reconciled: a lost
/// receipt is made good by the event's redelivery, which sends it again.
pub fn missing_groups(event: &OrderEvent, facts: &Facts<'_>) -> Vec<&'static str> {
    let kind = event.kind();
    let mut missing: Vec<&'static str> = topology::receipt_groups(kind)
        .into_iter()
        .filter(|group| !facts.receipts.iter().any(|r| r == group))
        .collect();
    let refund_pending = facts.refund_status == Some(RefundStatus::Requested);
    match event {
        OrderEvent::OrderRefundRequested(_) | OrderEvent::RefundRetryRequested(_)
            if refund_pending =>
        {
            missing.push(group_of(Consumer::Refund).name);
        }
        OrderEvent::OrderCloseDue(_) if facts.order_status == Some(OrderStatus::Unpaid) => {
            missing.push(group_of(Consumer::Close).name);
        }
        _ => {}
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{OrderCloseDue, OrderPaid};
    use crate::order::{Amount, OrderId, PaymentId, UserId};

    fn paid() -> OrderEvent {
        OrderEvent::OrderPaid(OrderPaid {
            order_id: OrderId::parse("O1").unwrap(),
            user_id: UserId::parse("u1").unwrap(),
            payment_id: PaymentId::parse("p1").unwrap(),
            amount: Amount::parse(100).unwrap(),
            paid_at: 1,
            lines: Vec::new(),
        })
    }

    #[test]
    fn a_paid_event_owes_each_system_without_a_receipt() {
        let receipts = ["credit_group".to_owned(), "push_group".to_owned()];
        let facts = Facts {
            receipts: &receipts,
            ..Facts::default()
        };
        assert_eq!(
            missing_groups(&paid(), &facts),
            ["marketing_group", "warehouse_group"]
        );
        let all = topology::receipt_groups(paid().kind())
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>();
        let facts = Facts {
            receipts: &all,
            ..Facts::default()
        };
        assert!(missing_groups(&paid(), &facts).is_empty());
    }

    #[test]
    fn a_close_is_owed_while_the_order_is_unpaid() {
        let close = OrderEvent::OrderCloseDue(OrderCloseDue {
            order_id: OrderId::parse("O1").unwrap(),
            due_at: 5,
        });
        let unpaid = Facts {
            order_status: Some(OrderStatus::Unpaid),
            ..Facts::default()
        };
        assert_eq!(missing_groups(&close, &unpaid), ["order_close_group"]);
        let closed = Facts {
            order_status: Some(OrderStatus::Cancelled),
            ..Facts::default()
        };
        assert!(missing_groups(&close, &closed).is_empty());
    }

    #[test]
    fn a_refund_is_owed_by_the_refund_group_while_requested() {
        use crate::event::OrderRefundRequested;
        use crate::order::RefundId;
        let refund = OrderEvent::OrderRefundRequested(OrderRefundRequested {
            refund_id: RefundId::parse("R1").unwrap(),
            order_id: OrderId::parse("O1").unwrap(),
            user_id: UserId::parse("u1").unwrap(),
            payment_id: PaymentId::parse("p1").unwrap(),
            amount: Amount::parse(100).unwrap(),
            lines: Vec::new(),
            full: true,
            reverse_effects: true,
            requested_at: 1,
        });
        let all = topology::receipt_groups(refund.kind())
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>();
        let requested = Facts {
            receipts: &all,
            refund_status: Some(RefundStatus::Requested),
            ..Facts::default()
        };
        assert_eq!(
            missing_groups(&refund, &requested),
            ["payment_refund_group"]
        );
        let done = Facts {
            receipts: &all,
            refund_status: Some(RefundStatus::Succeeded),
            ..Facts::default()
        };
        assert!(missing_groups(&refund, &done).is_empty());
    }
}
