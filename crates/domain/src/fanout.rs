//! The four downstream systems and the one effect each applies per paid order.
//!
//! Each system is its own RocketMQ consumer group with its own tables. The
//! rules here decide *what* the effect is (how many points, which coupon);
//! the store decides how it is recorded exactly once.

use serde::Serialize;

use crate::event::OrderPaid;
use crate::order::{Amount, OrderId, UserId};

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

    /// The RocketMQ consumer group, as the design names it.
    pub fn consumer_group(self) -> &'static str {
        match self {
            Self::Credit => "credit_group",
            Self::Marketing => "marketing_group",
            Self::Push => "push_group",
            Self::Warehouse => "warehouse_group",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == raw)
    }
}

/// Where one system stands with one order's event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FanoutState {
    /// Not applied yet (in flight, or being retried).
    Pending,
    /// Applied, exactly once.
    Done,
    /// Gave up after the maximum retries: the message is in the group's DLQ.
    Failed,
}

/// What a system records for a paid order. The third-party reference
/// (`external_ref`) is filled in by the gateway call before recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Points {
        user_id: UserId,
        order_id: OrderId,
        points: i64,
    },
    Coupon {
        user_id: UserId,
        order_id: OrderId,
        coupon_code: String,
        value: Amount,
    },
    Sms {
        user_id: UserId,
        order_id: OrderId,
        text: String,
        external_ref: String,
    },
    Shipment {
        user_id: UserId,
        order_id: OrderId,
        tracking_no: String,
    },
}

/// The effect `system` records for `paid`. `external_ref` is what the third
/// party returned (the SMS provider's reference, the carrier's tracking
/// number); credit and marketing call no third party and ignore it.
pub fn effect_for(system: System, paid: &OrderPaid, external_ref: String) -> Effect {
    let (user_id, order_id) = (paid.user_id.clone(), paid.order_id.clone());
    match system {
        System::Credit => Effect::Points {
            user_id,
            order_id,
            points: points_for(paid),
        },
        System::Marketing => {
            let (coupon_code, value) = coupon_for(paid);
            Effect::Coupon {
                user_id,
                order_id,
                coupon_code,
                value,
            }
        }
        System::Push => Effect::Sms {
            user_id,
            order_id,
            text: sms_text_for(paid),
            external_ref,
        },
        System::Warehouse => Effect::Shipment {
            user_id,
            order_id,
            tracking_no: external_ref,
        },
    }
}

/// One point per whole currency unit paid (amounts are in minor units).
pub fn points_for(paid: &OrderPaid) -> i64 {
    paid.amount.minor_units() / 100
}

/// A thank-you coupon worth 5 % of the order, at least 1.00 and at most 20.00.
pub fn coupon_for(paid: &OrderPaid) -> (String, Amount) {
    let value = (paid.amount.minor_units() / 20).clamp(100, 2_000);
    let code = format!("THX-{}", paid.order_id);
    (
        code,
        Amount::parse(value).expect("clamped to a positive value"),
    )
}

/// The SMS text sent to the shopper.
pub fn sms_text_for(paid: &OrderPaid) -> String {
    let amount = paid.amount.minor_units();
    format!(
        "Thank you! Order {} is paid ({}.{:02}). We will tell you when it ships.",
        paid.order_id,
        amount / 100,
        amount % 100
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order::PaymentId;

    fn paid(amount: i64) -> OrderPaid {
        OrderPaid {
            order_id: OrderId::parse("O1").unwrap(),
            user_id: UserId::parse("u1").unwrap(),
            payment_id: PaymentId::parse("p1").unwrap(),
            amount: Amount::parse(amount).unwrap(),
            paid_at: 0,
            lines: vec![],
        }
    }

    #[test]
    fn points_are_whole_currency_units() {
        assert_eq!(points_for(&paid(1999)), 19);
        assert_eq!(points_for(&paid(99)), 0);
    }

    #[test]
    fn coupon_is_five_percent_clamped() {
        assert_eq!(coupon_for(&paid(10_000)).1.minor_units(), 500);
        assert_eq!(coupon_for(&paid(10)).1.minor_units(), 100);
        assert_eq!(coupon_for(&paid(1_000_000)).1.minor_units(), 2_000);
        assert_eq!(coupon_for(&paid(1)).0, "THX-O1");
    }

    #[test]
    fn sms_formats_minor_units() {
        assert!(sms_text_for(&paid(1905)).contains("(19.05)"));
    }

    #[test]
    fn groups_are_the_design_names() {
        let groups: Vec<_> = System::ALL.iter().map(|s| s.consumer_group()).collect();
        assert_eq!(
            groups,
            [
                "credit_group",
                "marketing_group",
                "push_group",
                "warehouse_group"
            ]
        );
        assert_eq!(System::parse("push"), Some(System::Push));
    }
}
