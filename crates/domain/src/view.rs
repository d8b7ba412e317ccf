//! What the outside world reads: orders with their fan-out progress, a user's
//! points, coupons, SMS and shipments, and system-wide counters.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::fanout::{FanoutState, System};
use crate::order::{Amount, OrderId, OrderStatus, PaymentId, Sku, UserId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderLineView {
    pub sku: Sku,
    pub quantity: u32,
    pub unit_price: Amount,
}

/// One transition of an order's status, with its time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusChange {
    pub from: Option<OrderStatus>,
    pub to: OrderStatus,
    pub at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderView {
    pub order_id: OrderId,
    pub user_id: UserId,
    pub status: OrderStatus,
    pub amount: Amount,
    pub payment_id: Option<PaymentId>,
    pub created_at: i64,
    pub paid_at: Option<i64>,
    pub lines: Vec<OrderLineView>,
    /// Per downstream system: has its effect for this order been applied?
    pub fanout: BTreeMap<System, FanoutState>,
    pub history: Vec<StatusChange>,
}

/// The answer to a payment notice that was accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PaymentReceipt {
    pub order_id: OrderId,
    pub status: OrderStatus,
    /// This notice changed nothing: the same payment was already applied.
    pub duplicate: bool,
    /// Money was taken for an order that cannot take it (already paid by
    /// another payment, or cancelled): recorded, and owed back to the payer.
    pub refund_required: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PointsEntry {
    pub order_id: OrderId,
    pub points: i64,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Coupon {
    pub code: String,
    pub order_id: OrderId,
    pub value: Amount,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SmsMessage {
    pub order_id: OrderId,
    pub text: String,
    pub provider_ref: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shipment {
    pub order_id: OrderId,
    pub tracking_no: String,
    pub status: String,
    pub created_at: i64,
}

/// Everything the downstream systems did for one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserActivity {
    pub user_id: UserId,
    pub points_total: i64,
    pub points: Vec<PointsEntry>,
    pub coupons: Vec<Coupon>,
    pub sms: Vec<SmsMessage>,
    pub shipments: Vec<Shipment>,
}

/// Per-system progress counters for the dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SystemStats {
    pub applied: i64,
    pub failed: i64,
}

/// Counters for the dashboard and for operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub orders_by_status: BTreeMap<String, i64>,
    /// Events committed but not yet confirmed stored by the broker.
    pub outbox_backlog: i64,
    pub systems: BTreeMap<System, SystemStats>,
    pub payments_refund_required: i64,
}
