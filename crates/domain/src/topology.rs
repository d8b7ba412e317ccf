//! ordermq's RocketMQ topology in one table: every topic, tag, producer
//! group, consumer group, subscription expression and listener concurrency.
//!
//! Other teams run the consumers of a shared cluster, and operators grep the
//! broker for these names, so they are written once, here, and everything
//! else — the startup wiring, the dead-letter tool, the order page, the store's
//! inbox rows — reads them from this module. Adding a downstream system means
//! a [`System`] variant, its row in [`CONSUMER_GROUPS`] and its effect rules in
//! the `fanout` module (above this one); nothing else names a group.

#![warn(missing_docs)]

use serde::Serialize;

use crate::event::EventKind;

/// The topic the design names for "order paid" messages.
pub const TOPIC_ORDER_PAY_SUCCESS: &str = "TopicOrderPaySuccess";
/// Delayed "close this order if still unpaid" messages.
pub const TOPIC_ORDER_TIMEOUT: &str = "TopicOrderTimeout";
/// Refund requests (and operator retries of failed gateway refunds).
pub const TOPIC_ORDER_REFUND: &str = "TopicOrderRefund";
/// Carrier updates of shipments.
pub const TOPIC_ORDER_LOGISTICS: &str = "TopicOrderLogistics";

/// Receipts: each consumer group that applies an event says so here (from
/// its own database's outbox), and the order service's reconciler counts them.
pub const TOPIC_ORDER_RECEIPT: &str = "TopicOrderReceipt";
/// Admitted flash-sale attempts, whose orders are created at a paced rate.
pub const TOPIC_FLASH_SALE_ATTEMPT: &str = "TopicFlashSaleAttempt";

/// Every topic ordermq publishes to (created at start where the cluster allows).
pub const TOPICS: [&str; 7] = [
    TOPIC_ORDER_PAY_SUCCESS,
    TOPIC_ORDER_TIMEOUT,
    TOPIC_ORDER_REFUND,
    TOPIC_ORDER_LOGISTICS,
    TOPIC_ORDER_RECEIPT,
    TOPIC_FLASH_SALE_ATTEMPT,
    crate::feed::TOPIC_ORDER_CHANGE_FEED,
];

/// The producer group the design names; the relay publishes every event with it.
pub const PRODUCER_GROUP: &str = "order_producer_group";

impl EventKind {
    /// The RocketMQ tag of this kind; consumers subscribe by tag.
    pub fn tag(self) -> &'static str {
        match self {
            Self::OrderPaid => "OrderPaid",
            Self::OrderCloseDue => "OrderCloseDue",
            Self::OrderRefundRequested => "OrderRefundRequested",
            Self::RefundRetryRequested => "RefundRetryRequested",
            Self::ShipmentUpdated => "ShipmentUpdated",
            Self::EffectsApplied => "EffectsApplied",
            Self::FlashAttemptQueued => "FlashAttemptQueued",
        }
    }

    /// The topic events of this kind are published to.
    pub fn topic(self) -> &'static str {
        match self {
            Self::OrderPaid => TOPIC_ORDER_PAY_SUCCESS,
            Self::OrderCloseDue => TOPIC_ORDER_TIMEOUT,
            Self::OrderRefundRequested | Self::RefundRetryRequested => TOPIC_ORDER_REFUND,
            Self::ShipmentUpdated => TOPIC_ORDER_LOGISTICS,
            Self::EffectsApplied => TOPIC_ORDER_RECEIPT,
            Self::FlashAttemptQueued => TOPIC_FLASH_SALE_ATTEMPT,
        }
    }

    /// The kind whose [`tag`](Self::tag) is `tag`, if any.
    pub fn from_tag(tag: &str) -> Option<Self> {
        [
            Self::OrderPaid,
            Self::OrderCloseDue,
            Self::OrderRefundRequested,
            Self::RefundRetryRequested,
            Self::ShipmentUpdated,
            Self::EffectsApplied,
        ]
        .into_iter()
        .find(|kind| kind.tag() == tag)
    }
}

/// A downstream system: one consumer group of `TopicOrderPaySuccess`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    /// Points.
    Credit,
    /// Coupons.
    Marketing,
    /// SMS, through a third-party gateway.
    Push,
    /// Shipments, through a third-party logistics system.
    Warehouse,
}

impl System {
    /// All four systems, in the order [`CONSUMER_GROUPS`] lists them.
    pub const ALL: [System; 4] = [Self::Credit, Self::Marketing, Self::Push, Self::Warehouse];

    /// The name used in the API and in database rows.
    pub fn name(self) -> &'static str {
        match self {
            Self::Credit => "credit",
            Self::Marketing => "marketing",
            Self::Push => "push",
            Self::Warehouse => "warehouse",
        }
    }

    /// The RocketMQ consumer group, as the design names it (its row in [`CONSUMER_GROUPS`]).
    pub fn consumer_group(self) -> &'static str {
        group_of(Consumer::System(self)).name
    }

    /// The system whose [`name`](Self::name) is `raw`, if any.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == raw)
    }
}

/// Who consumes a group's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Consumer {
    /// A downstream system (credit, marketing, push, warehouse).
    System(System),
    /// The order service's close of unpaid orders.
    Close,
    /// The order service's refunds through the payment gateway.
    Refund,
    /// The order service's record of the groups' receipts.
    Receipt,
    /// The order service's creation of flash-sale orders, paced.
    FlashSale,
}

/// How many listener calls of one group may run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    /// The `consumer_concurrency` setting (the downstream systems).
    Configured,
    /// A fixed number, for the order service's own groups.
    Fixed(u32),
}

/// One topic a group subscribes to, and the tags it takes from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    /// Every kind here must be published to the same topic.
    pub kinds: &'static [EventKind],
}

impl Subscription {
    /// The topic, from the first kind (every kind shares it: a unit test checks).
    pub fn topic(&self) -> &'static str {
        self.kinds[0].topic()
    }

    /// The tag expression: `"A||B"`.
    ///
    /// No spaces around `||`: rocketmq-rust 1.0.0's `FilterAPI` trims each tag
    /// for the tag set but hashes the *untrimmed* one for the code set the
    /// broker filters the consume queue with, so `"A || B"` silently matches
    /// neither `A` nor `B` (Java trims before hashing). `"A||B"` works on both.
    pub fn expression(&self) -> String {
        self.kinds
            .iter()
            .map(|kind| kind.tag())
            .collect::<Vec<_>>()
            .join("||")
    }
}

/// One consumer group: its name, what it subscribes to and how wide it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerGroup {
    /// Who handles the group's messages.
    pub consumer: Consumer,
    /// The RocketMQ consumer group, as the design names it.
    pub name: &'static str,
    /// The topics (and tags of each) the group subscribes to.
    pub subscriptions: &'static [Subscription],
    /// How many of its listener calls may run at once.
    pub concurrency: Concurrency,
}

impl ConsumerGroup {
    /// `(topic, tag expression)` pairs, as the RocketMQ client takes them.
    pub fn subscription_pairs(&self) -> Vec<(String, String)> {
        self.subscriptions
            .iter()
            .map(|s| (s.topic().to_owned(), s.expression()))
            .collect()
    }
}

const PAID_AND_REFUNDS: [Subscription; 2] = [
    Subscription {
        kinds: &[EventKind::OrderPaid],
    },
    Subscription {
        kinds: &[EventKind::OrderRefundRequested],
    },
];

const WAREHOUSE: [Subscription; 3] = [
    PAID_AND_REFUNDS[0],
    PAID_AND_REFUNDS[1],
    Subscription {
        kinds: &[EventKind::ShipmentUpdated],
    },
];

/// Every consumer group ordermq runs, downstream systems first in
/// [`System::ALL`] order.
pub const CONSUMER_GROUPS: [ConsumerGroup; 8] = [
    ConsumerGroup {
        consumer: Consumer::System(System::Credit),
        name: "credit_group",
        subscriptions: &PAID_AND_REFUNDS,
        concurrency: Concurrency::Configured,
    },
    ConsumerGroup {
        consumer: Consumer::System(System::Marketing),
        name: "marketing_group",
        subscriptions: &PAID_AND_REFUNDS,
        concurrency: Concurrency::Configured,
    },
    ConsumerGroup {
        consumer: Consumer::System(System::Push),
        name: "push_group",
        subscriptions: &PAID_AND_REFUNDS,
        concurrency: Concurrency::Configured,
    },
    ConsumerGroup {
        consumer: Consumer::System(System::Warehouse),
        name: "warehouse_group",
        subscriptions: &WAREHOUSE,
        concurrency: Concurrency::Configured,
    },
    ConsumerGroup {
        consumer: Consumer::Close,
        name: "order_close_group",
        subscriptions: &[Subscription {
            kinds: &[EventKind::OrderCloseDue],
        }],
        concurrency: Concurrency::Fixed(8),
    },
    ConsumerGroup {
        consumer: Consumer::Refund,
        name: "payment_refund_group",
        subscriptions: &[Subscription {
            kinds: &[
                EventKind::OrderRefundRequested,
                EventKind::RefundRetryRequested,
            ],
        }],
        concurrency: Concurrency::Fixed(16),
    },
    ConsumerGroup {
        consumer: Consumer::Receipt,
        name: "order_receipt_group",
        subscriptions: &[Subscription {
            kinds: &[EventKind::EffectsApplied],
        }],
        concurrency: Concurrency::Fixed(4),
    },
    // Pacing, not the listener, sets its rate: the calls wait their turn.
    ConsumerGroup {
        consumer: Consumer::FlashSale,
        name: "flash_sale_order_group",
        subscriptions: &[Subscription {
            kinds: &[EventKind::FlashAttemptQueued],
        }],
        concurrency: Concurrency::Fixed(16),
    },
];

/// The row of `consumer` in [`CONSUMER_GROUPS`].
pub fn group_of(consumer: Consumer) -> &'static ConsumerGroup {
    CONSUMER_GROUPS
        .iter()
        .find(|group| group.consumer == consumer)
        .expect("every consumer has a row in CONSUMER_GROUPS (checked by a unit test)")
}

/// The downstream systems subscribed to events of `kind`: the groups
/// whose receipts (`EffectsApplied`) the reconciler expects for such an
/// event. The order service's own groups send none; the reconciler reads
/// their work from the order database (an order's close, a refund's status).
pub fn receipt_groups(kind: EventKind) -> Vec<&'static str> {
    CONSUMER_GROUPS
        .iter()
        .filter(|group| matches!(group.consumer, Consumer::System(_)))
        .filter(|group| group.subscriptions.iter().any(|s| s.kinds.contains(&kind)))
        .map(|group| group.name)
        .collect()
}

/// Every group's name, comma-separated (log lines).
pub fn group_names() -> String {
    CONSUMER_GROUPS
        .iter()
        .map(|group| group.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_consumer_has_exactly_one_group_and_names_are_unique() {
        let consumers = System::ALL.map(Consumer::System).into_iter().chain([
            Consumer::Close,
            Consumer::Refund,
            Consumer::Receipt,
            Consumer::FlashSale,
        ]);
        for consumer in consumers {
            let rows = CONSUMER_GROUPS
                .iter()
                .filter(|g| g.consumer == consumer)
                .count();
            assert_eq!(rows, 1, "{consumer:?}");
        }
        let mut names: Vec<_> = CONSUMER_GROUPS.iter().map(|g| g.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CONSUMER_GROUPS.len());
        assert!(!names.contains(&PRODUCER_GROUP));
    }

    #[test]
    fn a_subscription_takes_kinds_of_one_topic_only() {
        for group in &CONSUMER_GROUPS {
            for subscription in group.subscriptions {
                assert!(!subscription.kinds.is_empty(), "{}", group.name);
                for kind in subscription.kinds {
                    assert_eq!(kind.topic(), subscription.topic(), "{}", group.name);
                }
            }
        }
    }

    #[test]
    fn expressions_join_tags_without_spaces() {
        let refund = group_of(Consumer::Refund);
        assert_eq!(
            refund.subscription_pairs(),
            vec![(
                TOPIC_ORDER_REFUND.to_owned(),
                "OrderRefundRequested||RefundRetryRequested".to_owned()
            )]
        );
        let warehouse = group_of(Consumer::System(System::Warehouse));
        assert_eq!(warehouse.subscriptions.len(), 3);
        assert_eq!(
            group_of(Consumer::System(System::Credit)).subscription_pairs(),
            vec![
                (TOPIC_ORDER_PAY_SUCCESS.to_owned(), "OrderPaid".to_owned()),
                (
                    TOPIC_ORDER_REFUND.to_owned(),
                    "OrderRefundRequested".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn receipts_are_expected_from_the_subscribed_systems_only() {
        assert_eq!(
            receipt_groups(EventKind::OrderPaid),
            [
                "credit_group",
                "marketing_group",
                "push_group",
                "warehouse_group"
            ]
        );
        assert_eq!(
            receipt_groups(EventKind::ShipmentUpdated),
            ["warehouse_group"]
        );
        assert!(receipt_groups(EventKind::OrderCloseDue).is_empty());
        assert!(receipt_groups(EventKind::EffectsApplied).is_empty());
        assert_eq!(
            EventKind::from_tag("EffectsApplied"),
            Some(EventKind::EffectsApplied)
        );
    }

    #[test]
    fn every_published_topic_is_subscribed_by_someone() {
        for topic in TOPICS {
            // The change feed's group is the data team's (`ordermq feed
            // sink`, `FEED_SINK_GROUP`), not one the server runs.
            if topic == crate::feed::TOPIC_ORDER_CHANGE_FEED {
                continue;
            }
            assert!(
                CONSUMER_GROUPS
                    .iter()
                    .flat_map(|g| g.subscriptions)
                    .any(|s| s.topic() == topic),
                "{topic}"
            );
        }
    }
}
