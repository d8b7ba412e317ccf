//! What the outside world reads: orders with their fan-out progress, a user's
//! points, coupons, SMS and shipments, and system-wide counters.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::fanout::{FanoutState, System};
use crate::lifecycle::RefundStatus;
use crate::order::{Amount, OrderId, OrderStatus, PaymentId, RefundId, Sku, UserId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderLineView {
    pub sku: Sku,
    pub quantity: u32,
    pub unit_price: Amount,
    /// Units given back by refunds so far.
    pub refunded: u32,
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
    /// When the order closes itself if still unpaid.
    pub close_at: Option<i64>,
    pub lines: Vec<OrderLineView>,
    /// Per downstream system: has its effect of the payment been applied?
    pub fanout: BTreeMap<System, FanoutState>,
    /// Every status change, oldest first.
    pub history: Vec<StatusChange>,
    /// Every consumer group's progress with each of the order's events, with times.
    pub consumers: Vec<ConsumerProgress>,
    pub refunds: Vec<RefundView>,
}

/// One consumer group's progress with one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsumerProgress {
    pub group: String,
    pub event_id: String,
    pub state: FanoutState,
    /// When the group applied it (`done`).
    pub applied_at: Option<i64>,
    /// Failed deliveries so far (0 when it went through first time).
    pub attempts: i64,
    pub last_error: Option<String>,
    pub updated_at: Option<i64>,
}

/// A refund of (part of) an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefundView {
    pub refund_id: RefundId,
    pub order_id: OrderId,
    pub payment_id: PaymentId,
    pub amount: Amount,
    pub status: RefundStatus,
    /// The whole order (or a whole stray payment) was refunded.
    pub full: bool,
    pub reason: Option<String>,
    /// Gateway attempts so far, and the last failure.
    pub attempts: i64,
    pub last_error: Option<String>,
    pub requested_at: i64,
    pub completed_at: Option<i64>,
    /// The answer was the refund an earlier request with the same key created.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

/// The answer to a carrier update that was accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CarrierReceipt {
    pub order_id: OrderId,
    /// The order's status after the update.
    pub status: OrderStatus,
    /// The update moved the order or its shipment forward.
    pub applied: bool,
    /// The same update was received before; nothing changed.
    pub duplicate: bool,
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
    /// Negative for points taken back by a refund.
    pub points: i64,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Coupon {
    pub code: String,
    pub order_id: OrderId,
    pub value: Amount,
    /// `ACTIVE`, or `REVOKED` after the order was refunded.
    pub status: String,
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
    pub refunds_by_status: BTreeMap<String, i64>,
    /// This instance's order-database writer since it started.
    pub group_commit: GroupCommitStats,
}

/// How the order database's group commit is doing: `operations / commits`
/// writes share each commit (and its fsync); `busy_ms` over wall time is how
/// close the one writer is to saturation. Counted since this instance started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GroupCommitStats {
    /// Transactions committed (or attempted) by the writer.
    pub commits: u64,
    /// Creates, payments, closes and relay rounds they carried.
    pub operations: u64,
    /// Milliseconds the writer spent running them.
    pub busy_ms: u64,
    /// Commits that took longer than 100 ms (each one held every write in
    /// it that long), and their total milliseconds: a stalled disk shows here.
    pub slow_commits: u64,
    pub slow_commit_ms: u64,
}
