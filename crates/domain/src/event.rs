//! Events that leave the order database through the outbox.
//!
//! An event is written in the same transaction as the state change it
//! describes, then relayed to RocketMQ. Its JSON body is the contract with
//! every consumer group, so fields are only ever added, never renamed.

use serde::{Deserialize, Serialize};

use crate::order::{Amount, OrderId, PaymentId, Sku, UserId};

/// The topic the design names for "order paid" messages.
pub const TOPIC_ORDER_PAY_SUCCESS: &str = "TopicOrderPaySuccess";

/// The RocketMQ tag of each event kind; consumers subscribe by tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    OrderPaid,
}

impl EventKind {
    pub fn tag(self) -> &'static str {
        match self {
            Self::OrderPaid => "OrderPaid",
        }
    }

    pub fn topic(self) -> &'static str {
        match self {
            Self::OrderPaid => TOPIC_ORDER_PAY_SUCCESS,
        }
    }
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

/// Every event, tagged by kind in its JSON form (`{"type":"OrderPaid",...}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum OrderEvent {
    OrderPaid(OrderPaid),
}

impl OrderEvent {
    pub fn kind(&self) -> EventKind {
        match self {
            Self::OrderPaid(_) => EventKind::OrderPaid,
        }
    }

    pub fn order_id(&self) -> &OrderId {
        match self {
            Self::OrderPaid(e) => &e.order_id,
        }
    }

    /// Identifies this event among all events ever published: at most one
    /// event of each kind exists per order. Consumers deduplicate on it.
    pub fn event_id(&self) -> String {
        format!("{}:{}", self.kind().tag(), self.order_id())
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
