//! Events that leave the order database through the outbox.
//!
//! An event is written in the same transaction as the state change it
//! describes, then relayed to RocketMQ. Its JSON body is the contract with
//! every consumer group, so fields are only ever added, never renamed.

use serde::{Deserialize, Serialize};

use crate::lifecycle::CarrierStatus;
use crate::order::{Amount, OrderId, PaymentId, RefundId, Sku, TrackingNo, UserId};

/// What an event says happened; its RocketMQ topic and tag are in
/// [`crate::topology`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    OrderPaid,
    OrderCloseDue,
    OrderRefundRequested,
    RefundRetryRequested,
    ShipmentUpdated,
}

/// One line of a paid order, as consumers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaidLine {
    pub sku: Sku,
    pub quantity: u32,
    pub unit_price: Amount,
}

/// "This order was paid": the message of `TopicOrderPaySuccess`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPaid {
    pub order_id: OrderId,
    pub user_id: UserId,
    pub payment_id: PaymentId,
    pub amount: Amount,
    pub paid_at: i64,
    pub lines: Vec<PaidLine>,
}

/// "Close this order now if it is still unpaid": published with the order,
/// delivered by the broker at `due_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCloseDue {
    pub order_id: OrderId,
    pub due_at: i64,
}

/// "Give this money back": a refund the shopper (or ordermq, for a payment
/// that could not be applied) asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRefundRequested {
    pub refund_id: RefundId,
    pub order_id: OrderId,
    pub user_id: UserId,
    pub payment_id: PaymentId,
    pub amount: Amount,
    /// The units given back; empty for a payment refunded whole (never applied).
    pub lines: Vec<PaidLine>,
    /// The whole order is refunded: coupon revoked, shipment cancelled.
    pub full: bool,
    /// Downstream systems reverse what they did for the order. False for a
    /// payment that never paid the order (it arrived after the close, or twice).
    pub reverse_effects: bool,
    pub requested_at: i64,
}

/// An operator asked to try a failed gateway refund again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRetryRequested {
    pub refund_id: RefundId,
    pub order_id: OrderId,
    /// Distinguishes successive retries of one refund.
    pub retry: i64,
}

/// The carrier reported progress of an order's shipment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentUpdated {
    pub order_id: OrderId,
    pub tracking_no: TrackingNo,
    pub status: CarrierStatus,
    pub at: i64,
}

/// Every event, tagged by kind in its JSON form (`{"type":"OrderPaid",...}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum OrderEvent {
    OrderPaid(OrderPaid),
    OrderCloseDue(OrderCloseDue),
    OrderRefundRequested(OrderRefundRequested),
    RefundRetryRequested(RefundRetryRequested),
    ShipmentUpdated(ShipmentUpdated),
}

impl OrderEvent {
    pub fn kind(&self) -> EventKind {
        match self {
            Self::OrderPaid(_) => EventKind::OrderPaid,
            Self::OrderCloseDue(_) => EventKind::OrderCloseDue,
            Self::OrderRefundRequested(_) => EventKind::OrderRefundRequested,
            Self::RefundRetryRequested(_) => EventKind::RefundRetryRequested,
            Self::ShipmentUpdated(_) => EventKind::ShipmentUpdated,
        }
    }

    pub fn order_id(&self) -> &OrderId {
        match self {
            Self::OrderPaid(e) => &e.order_id,
            Self::OrderCloseDue(e) => &e.order_id,
            Self::OrderRefundRequested(e) => &e.order_id,
            Self::RefundRetryRequested(e) => &e.order_id,
            Self::ShipmentUpdated(e) => &e.order_id,
        }
    }

    /// Identifies this event among all events ever published; consumers
    /// deduplicate on it. At most one `OrderPaid` and one `OrderCloseDue`
    /// exist per order, one `OrderRefundRequested` per refund, one
    /// `ShipmentUpdated` per (order, carrier status).
    pub fn event_id(&self) -> String {
        let tag = self.kind().tag();
        match self {
            Self::OrderPaid(e) => format!("{tag}:{}", e.order_id),
            Self::OrderCloseDue(e) => format!("{tag}:{}", e.order_id),
            Self::OrderRefundRequested(e) => format!("{tag}:{}", e.refund_id),
            Self::RefundRetryRequested(e) => format!("{tag}:{}:{}", e.refund_id, e.retry),
            Self::ShipmentUpdated(e) => {
                format!("{tag}:{}:{}", e.order_id, e.status.as_str())
            }
        }
    }

    /// The event id of the `OrderPaid` event of `order_id`.
    pub fn paid_event_id(order_id: &OrderId) -> String {
        format!("{}:{order_id}", EventKind::OrderPaid.tag())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("events serialize")
    }

    pub fn from_json(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }
}

/// A row of the outbox, ready to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    pub id: i64,
    pub topic: String,
    pub tag: String,
    /// The RocketMQ message key: the order id, so messages can be queried by order.
    pub key: String,
    pub event_id: String,
    pub body: String,
    /// When set, the broker holds the message until this time (delayed delivery).
    pub deliver_at: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::TOPIC_ORDER_PAY_SUCCESS;

    #[test]
    fn order_paid_round_trips_with_type_tag_and_stable_event_id() {
        let event = OrderEvent::OrderPaid(OrderPaid {
            order_id: OrderId::parse("O1").unwrap(),
            user_id: UserId::parse("u1").unwrap(),
            payment_id: PaymentId::parse("p1").unwrap(),
            amount: Amount::parse(1999).unwrap(),
            paid_at: 5,
            lines: vec![PaidLine {
                sku: Sku::parse("SKU-1").unwrap(),
                quantity: 1,
                unit_price: Amount::parse(1999).unwrap(),
            }],
        });
        let json = event.to_json();
        assert!(json.starts_with(r#"{"type":"OrderPaid""#), "{json}");
        assert_eq!(OrderEvent::from_json(json.as_bytes()).unwrap(), event);
        assert_eq!(event.event_id(), "OrderPaid:O1");
        assert_eq!(event.kind().topic(), TOPIC_ORDER_PAY_SUCCESS);
    }
}
