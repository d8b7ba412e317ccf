//! Events that leave the order database through the outbox.
//!
//! An event is written in the same transaction as the state change it
//! describes, then relayed to RocketMQ. Its JSON body is the contract with
//! every consumer group, so fields are only ever added, never renamed.

#![warn(missing_docs)]

use serde::{Deserialize, Serialize};

use crate::lifecycle::CarrierStatus;
use crate::order::{
    Amount, AttemptId, OrderId, PaymentId, RefundId, SaleId, Sku, TrackingNo, UserId,
};

/// What an event says happened; its RocketMQ topic and tag are in the
/// `topology` module (above this one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// An order was paid ([`OrderPaid`]).
    OrderPaid,
    /// An order's unpaid timeout is due ([`OrderCloseDue`]).
    OrderCloseDue,
    /// A refund was requested ([`OrderRefundRequested`]).
    OrderRefundRequested,
    /// An operator retried a failed gateway refund ([`RefundRetryRequested`]).
    RefundRetryRequested,
    /// The carrier reported shipment progress ([`ShipmentUpdated`]).
    ShipmentUpdated,
    /// A consumer group applied a batch of events: its receipt (the
    /// reconcile module's `Receipt`, not an [`OrderEvent`]: it is about
    /// many orders).
    EffectsApplied,
    /// A flash-sale attempt was admitted; its order is to be created
    /// ([`FlashAttemptQueued`]).
    FlashAttemptQueued,
}

/// One line of a paid order, as consumers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaidLine {
    /// The product paid for.
    pub sku: Sku,
    /// Units of it.
    pub quantity: u32,
    /// Price of one unit when the order was placed, in minor units.
    pub unit_price: Amount,
}

/// "This order was paid": the message of `TopicOrderPaySuccess`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPaid {
    /// The order that was paid.
    pub order_id: OrderId,
    /// The shopper who placed it (and earns the points, coupon and SMS).
    pub user_id: UserId,
    /// The gateway's id of the payment that paid it.
    pub payment_id: PaymentId,
    /// The order's total paid, in minor units.
    pub amount: Amount,
    /// Epoch milliseconds when the payment was applied.
    pub paid_at: i64,
    /// What was bought.
    pub lines: Vec<PaidLine>,
}

/// "Close this order now if it is still unpaid": published with the order,
/// delivered by the broker at `due_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCloseDue {
    /// The order to close if it is still unpaid.
    pub order_id: OrderId,
    /// Epoch milliseconds when the order times out (the delivery time).
    pub due_at: i64,
}

/// "Give this money back": a refund the shopper (or ordermq, for a payment
/// that could not be applied) asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRefundRequested {
    /// The refund asked for; the event's id is built from it.
    pub refund_id: RefundId,
    /// The order refunded (in part or whole).
    pub order_id: OrderId,
    /// The shopper whose points, coupon and SMS are affected.
    pub user_id: UserId,
    /// The payment to give the money back to.
    pub payment_id: PaymentId,
    /// How much to give back, in minor units.
    pub amount: Amount,
    /// The units given back; empty for a payment refunded whole (never applied).
    pub lines: Vec<PaidLine>,
    /// The whole order is refunded: coupon revoked, shipment cancelled.
    pub full: bool,
    /// Downstream systems reverse what they did for the order. False for a
    /// payment that never paid the order (it arrived after the close, or twice).
    pub reverse_effects: bool,
    /// Epoch milliseconds when the refund was requested.
    pub requested_at: i64,
}

/// An operator asked to try a failed gateway refund again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRetryRequested {
    /// The failed refund to send to the gateway again.
    pub refund_id: RefundId,
    /// The order it refunds.
    pub order_id: OrderId,
    /// Distinguishes successive retries of one refund.
    pub retry: i64,
}

/// The carrier reported progress of an order's shipment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentUpdated {
    /// The order whose parcel moved.
    pub order_id: OrderId,
    /// The carrier's tracking number of the shipment.
    pub tracking_no: TrackingNo,
    /// Where the parcel is now.
    pub status: CarrierStatus,
    /// Epoch milliseconds of the update.
    pub at: i64,
}

/// "Create the order of this admitted flash-sale attempt": written with the
/// attempt, consumed at a paced rate by the flash-sale order group. The
/// order's id is drawn at admission, so a redelivery finds the order made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlashAttemptQueued {
    /// The attempt (the message's key).
    pub attempt_id: AttemptId,
    /// The sale attempted.
    pub sale_id: SaleId,
    /// The shopper.
    pub user_id: UserId,
    /// The product sold.
    pub sku: Sku,
    /// Units taken.
    pub quantity: u32,
    /// The id the order will have.
    pub order_id: OrderId,
    /// Epoch milliseconds when the attempt was admitted.
    pub queued_at: i64,
}

/// Every event, tagged by kind in its JSON form (`{"type":"OrderPaid",...}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum OrderEvent {
    /// See [`OrderPaid`].
    OrderPaid(OrderPaid),
    /// See [`OrderCloseDue`].
    OrderCloseDue(OrderCloseDue),
    /// See [`OrderRefundRequested`].
    OrderRefundRequested(OrderRefundRequested),
    /// See [`RefundRetryRequested`].
    RefundRetryRequested(RefundRetryRequested),
    /// See [`ShipmentUpdated`].
    ShipmentUpdated(ShipmentUpdated),
    /// See [`FlashAttemptQueued`].
    FlashAttemptQueued(FlashAttemptQueued),
}

impl OrderEvent {
    /// What kind of event this is (and so its topic and tag).
    pub fn kind(&self) -> EventKind {
        match self {
            Self::OrderPaid(_) => EventKind::OrderPaid,
            Self::OrderCloseDue(_) => EventKind::OrderCloseDue,
            Self::OrderRefundRequested(_) => EventKind::OrderRefundRequested,
            Self::RefundRetryRequested(_) => EventKind::RefundRetryRequested,
            Self::ShipmentUpdated(_) => EventKind::ShipmentUpdated,
            Self::FlashAttemptQueued(_) => EventKind::FlashAttemptQueued,
        }
    }

    /// The order the event is about; also its RocketMQ message key.
    pub fn order_id(&self) -> &OrderId {
        match self {
            Self::OrderPaid(e) => &e.order_id,
            Self::OrderCloseDue(e) => &e.order_id,
            Self::OrderRefundRequested(e) => &e.order_id,
            Self::RefundRetryRequested(e) => &e.order_id,
            Self::ShipmentUpdated(e) => &e.order_id,
            Self::FlashAttemptQueued(e) => &e.order_id,
        }
    }

    /// The RocketMQ message key: the order id, except for a flash-sale
    /// attempt, whose messages are looked up by attempt.
    pub fn key(&self) -> &str {
        match self {
            Self::FlashAttemptQueued(e) => e.attempt_id.as_str(),
            other => other.order_id().as_str(),
        }
    }

    /// Identifies this event among all events ever published; consumers
    /// deduplicate on it. At most one `OrderPaid` and one `OrderCloseDue`
    /// exist per order, one `OrderRefundRequested` per refund, one
    /// `ShipmentUpdated` per (order, carrier status), one
    /// `FlashAttemptQueued` per attempt.
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
            Self::FlashAttemptQueued(e) => format!("{tag}:{}", e.attempt_id),
        }
    }

    /// The event id of the `OrderPaid` event of `order_id`.
    pub fn paid_event_id(order_id: &OrderId) -> String {
        format!("{}:{order_id}", EventKind::OrderPaid.tag())
    }

    /// The message body: JSON tagged with `"type"`, the contract with consumers.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("events serialize")
    }

    /// Decodes a message body written by [`to_json`](Self::to_json).
    pub fn from_json(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }
}

/// A row of the outbox, ready to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    /// The outbox row's id; the relay confirms (or fails) the row by it.
    pub id: i64,
    /// The RocketMQ topic to publish to.
    pub topic: String,
    /// The RocketMQ tag consumers filter on.
    pub tag: String,
    /// The RocketMQ message key: the order id, so messages can be queried by order.
    pub key: String,
    /// The event's [`OrderEvent::event_id`], which consumers deduplicate on.
    pub event_id: String,
    /// The event as JSON ([`OrderEvent::to_json`]).
    pub body: String,
    /// When set, the broker holds the message until this time (delayed delivery).
    pub deliver_at: Option<i64>,
    /// How many times the relay has claimed the row, this claim included
    /// (0 for a message that is not an outbox row's): a row that failed
    /// before waits longer before its next try and is parked after
    /// `relay_park_after_attempts`.
    pub attempts: i64,
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
