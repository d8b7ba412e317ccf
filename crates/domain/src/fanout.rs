//! The four downstream systems and the one effect each applies per paid order.
//!
//! Each system is its own RocketMQ consumer group with its own tables. The
//! rules here decide *what* the effect is (how many points, which coupon);
//! the store decides how it is recorded exactly once.

#![warn(missing_docs)]

use serde::Serialize;

use crate::event::{OrderPaid, OrderRefundRequested};
use crate::lifecycle::CarrierStatus;
use crate::order::{Amount, OrderId, RefundId, UserId};
use crate::signing::Keyring;
use crate::topology::System;

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
    /// Credit awards the shopper points for a paid order.
    Points {
        /// The shopper credited.
        user_id: UserId,
        /// The paid order.
        order_id: OrderId,
        /// Points awarded: one per whole currency unit paid ([`points_for`]).
        points: i64,
    },
    /// Marketing gives the shopper a thank-you coupon for a paid order.
    Coupon {
        /// The shopper who receives the coupon.
        user_id: UserId,
        /// The paid order.
        order_id: OrderId,
        /// The coupon's code ([`coupon_code`]: not derivable from the order id).
        coupon_code: String,
        /// What the coupon is worth, in minor units ([`coupon_value`]).
        value: Amount,
    },
    /// Push sends the shopper a payment-confirmation SMS.
    Sms {
        /// The shopper texted.
        user_id: UserId,
        /// The paid order.
        order_id: OrderId,
        /// The message sent ([`sms_text_for`]).
        text: String,
        /// The SMS provider's reference for the message.
        external_ref: String,
    },
    /// Warehouse books a shipment of the paid order with the logistics system.
    Shipment {
        /// The shopper the parcel goes to.
        user_id: UserId,
        /// The paid order.
        order_id: OrderId,
        /// The carrier's tracking number, returned by the logistics system.
        tracking_no: String,
    },
    /// A refund takes back points: `points` of them, or (`None`) all the
    /// order earned and still has. Never more than the order earned.
    PointsReversal {
        /// The shopper whose points are taken back.
        user_id: UserId,
        /// The refunded order.
        order_id: OrderId,
        /// The refund causing the reversal.
        refund_id: RefundId,
        /// Points to take back (partial refund), or `None` for all (full refund).
        points: Option<i64>,
    },
    /// A full refund revokes the order's coupon if it is still unused.
    CouponRevocation {
        /// The refunded order, whose coupon is revoked.
        order_id: OrderId,
        /// The full refund causing the revocation.
        refund_id: RefundId,
    },
    /// The shopper is told about the refund.
    RefundSms {
        /// The shopper texted.
        user_id: UserId,
        /// The refunded order.
        order_id: OrderId,
        /// The refund the SMS announces.
        refund_id: RefundId,
        /// The message sent ([`refund_sms_text_for`]).
        text: String,
        /// The SMS provider's reference for the message.
        external_ref: String,
    },
    /// A full refund cancels the shipment if the carrier has not picked it up.
    ShipmentCancellation {
        /// The refunded order, whose shipment is cancelled.
        order_id: OrderId,
        /// The full refund causing the cancellation.
        refund_id: RefundId,
    },
    /// The carrier moved the shipment forward.
    ShipmentProgress {
        /// The order whose shipment moved.
        order_id: OrderId,
        /// The carrier's new status; the shipment never moves backwards.
        status: CarrierStatus,
    },
    /// The event asks nothing of this system; only its receipt is recorded.
    Nothing {
        /// The system that received the event.
        system: System,
        /// The order the event is about.
        order_id: OrderId,
    },
}

impl Effect {
    /// The system that records this effect.
    pub fn system(&self) -> System {
        match self {
            Self::Points { .. } | Self::PointsReversal { .. } => System::Credit,
            Self::Coupon { .. } | Self::CouponRevocation { .. } => System::Marketing,
            Self::Sms { .. } | Self::RefundSms { .. } => System::Push,
            Self::Shipment { .. }
            | Self::ShipmentCancellation { .. }
            | Self::ShipmentProgress { .. } => System::Warehouse,
            Self::Nothing { system, .. } => *system,
        }
    }

    /// The order this effect is for.
    pub fn order_id(&self) -> &OrderId {
        match self {
            Self::Points { order_id, .. }
            | Self::Coupon { order_id, .. }
            | Self::Sms { order_id, .. }
            | Self::Shipment { order_id, .. }
            | Self::PointsReversal { order_id, .. }
            | Self::CouponRevocation { order_id, .. }
            | Self::RefundSms { order_id, .. }
            | Self::ShipmentCancellation { order_id, .. }
            | Self::ShipmentProgress { order_id, .. }
            | Self::Nothing { order_id, .. } => order_id,
        }
    }
}

/// Whether `system` calls a third party for `refund`: push sends the SMS,
/// and warehouse cancels the carrier's booking on a full refund (if the
/// carrier has not collected the parcel yet).
pub fn reversal_needs_gateway(system: System, refund: &OrderRefundRequested) -> bool {
    refund.reverse_effects
        && match system {
            System::Push => true,
            System::Warehouse => refund.full,
            System::Credit | System::Marketing => false,
        }
}

/// What `system` does when `refund` is requested. `external_ref` is the SMS
/// provider's reference (push only).
pub fn reversal_for(system: System, refund: &OrderRefundRequested, external_ref: String) -> Effect {
    let order_id = refund.order_id.clone();
    if !refund.reverse_effects {
        return Effect::Nothing { system, order_id };
    }
    let refund_id = refund.refund_id.clone();
    match system {
        System::Credit => Effect::PointsReversal {
            user_id: refund.user_id.clone(),
            order_id,
            refund_id,
            points: (!refund.full).then(|| refund.amount.minor_units() / 100),
        },
        System::Marketing if refund.full => Effect::CouponRevocation {
            order_id,
            refund_id,
        },
        System::Push => Effect::RefundSms {
            user_id: refund.user_id.clone(),
            order_id,
            refund_id,
            text: refund_sms_text_for(refund),
            external_ref,
        },
        System::Warehouse if refund.full => Effect::ShipmentCancellation {
            order_id,
            refund_id,
        },
        System::Marketing | System::Warehouse => Effect::Nothing { system, order_id },
    }
}

/// The SMS text of a refund.
pub fn refund_sms_text_for(refund: &OrderRefundRequested) -> String {
    let amount = refund.amount.minor_units();
    format!(
        "Order {}: we are refunding {}.{:02} to your original payment method.",
        refund.order_id,
        amount / 100,
        amount % 100
    )
}

/// The effect `system` records for `paid`. `external_ref` is what the third
/// party returned (the SMS provider's reference, the carrier's tracking
/// number) or, for marketing, the coupon's code ([`coupon_code`]); credit
/// calls no third party and ignores it.
pub fn effect_for(system: System, paid: &OrderPaid, external_ref: String) -> Effect {
    let (user_id, order_id) = (paid.user_id.clone(), paid.order_id.clone());
    match system {
        System::Credit => Effect::Points {
            user_id,
            order_id,
            points: points_for(paid),
        },
        System::Marketing => Effect::Coupon {
            user_id,
            order_id,
            coupon_code: external_ref,
            value: coupon_value(paid),
        },
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
pub fn coupon_value(paid: &OrderPaid) -> Amount {
    let value = (paid.amount.minor_units() / 20).clamp(100, 2_000);
    Amount::parse(value).expect("clamped to a positive value")
}

/// What [`coupon_code`] signs after the event id: no event body is this text,
/// so a coupon code is never an event's signature, nor one a code.
const COUPON_CODE_BODY: &[u8] = b"coupon-code";

/// The code of the coupon an event earns: `THX-` and 20 hex digits (80 bits)
/// of the HMAC of the event id under the event keys' signing key.
/// Unguessable without the key (a code cannot be derived from the order id,
/// nor from another code), and the same for every delivery of one event, so
/// a redelivery that recomputes it finds the same coupon.
///
/// # Panics
///
/// If `event_id` holds a `.` (ordermq's event ids never do; see
/// [`Keyring::sign`]).
pub fn coupon_code(keys: &Keyring, event_id: &str) -> String {
    let mac = keys.sign(event_id, COUPON_CODE_BODY);
    format!("THX-{}", mac.hex[..20].to_ascii_uppercase())
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
        assert_eq!(coupon_value(&paid(10_000)).minor_units(), 500);
        assert_eq!(coupon_value(&paid(10)).minor_units(), 100);
        assert_eq!(coupon_value(&paid(1_000_000)).minor_units(), 2_000);
    }

    #[test]
    fn coupon_codes_are_keyed_stable_per_event_and_not_the_order_id() {
        let keys = Keyring::new([("k1".to_owned(), b"secret")]).unwrap();
        let other = Keyring::new([("k1".to_owned(), b"other")]).unwrap();
        let code = coupon_code(&keys, "OrderPaid:O1");
        assert_eq!(
            code,
            coupon_code(&keys, "OrderPaid:O1"),
            "same event, same code"
        );
        assert_eq!(code.len(), 24);
        assert!(code.starts_with("THX-"));
        assert!(!code.contains("O1"), "{code}");
        assert_ne!(code, coupon_code(&keys, "OrderPaid:O2"));
        assert_ne!(
            code,
            coupon_code(&other, "OrderPaid:O1"),
            "depends on the key"
        );
        let effect = effect_for(System::Marketing, &paid(10_000), code.clone());
        assert!(matches!(effect, Effect::Coupon { coupon_code, .. } if coupon_code == code));
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

    #[test]
    fn push_texts_every_reversal_and_warehouse_cancels_only_full_refunds() {
        let refund = |full: bool, reverse_effects: bool| OrderRefundRequested {
            refund_id: RefundId::parse("R1").unwrap(),
            order_id: OrderId::parse("O1").unwrap(),
            user_id: UserId::parse("u1").unwrap(),
            payment_id: PaymentId::parse("p1").unwrap(),
            amount: Amount::parse(100).unwrap(),
            lines: vec![],
            full,
            reverse_effects,
            requested_at: 0,
        };
        let calling = |r: &OrderRefundRequested| -> Vec<System> {
            System::ALL
                .into_iter()
                .filter(|s| reversal_needs_gateway(*s, r))
                .collect()
        };
        assert_eq!(
            calling(&refund(true, true)),
            [System::Push, System::Warehouse]
        );
        assert_eq!(calling(&refund(false, true)), [System::Push]);
        assert!(calling(&refund(true, false)).is_empty());
    }
}
