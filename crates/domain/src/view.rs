//! What the outside world reads: orders with their fan-out progress, a user's
//! points, coupons, SMS and shipments, and system-wide counters.

#![warn(missing_docs)]

use std::collections::BTreeMap;

use serde::Serialize;

use crate::fanout::FanoutState;
use crate::lifecycle::{Actor, RefundStatus};
use crate::order::{Amount, OrderId, OrderStatus, PaymentId, RefundId, Sku, UserId};
use crate::topology::System;

/// One line of an order as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderLineView {
    /// The product ordered.
    pub sku: Sku,
    /// Units ordered.
    pub quantity: u32,
    /// Price of one unit when the order was placed, in minor units.
    pub unit_price: Amount,
    /// Units given back by refunds so far.
    pub refunded: u32,
}

/// An operator's action on an order: who asked for which refund or retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OperatorAction {
    /// `refund` (a refund was asked for) or `refund_retry` (a FAILED refund
    /// was sent again).
    pub action: String,
    /// The refund it was about.
    pub refund_id: RefundId,
    /// The name of the token that asked.
    pub actor: Actor,
    /// Epoch milliseconds of the action.
    pub at: i64,
}

/// One transition of an order's status, with its time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusChange {
    /// The status before; `None` for the order's creation.
    pub from: Option<OrderStatus>,
    /// The status after.
    pub to: OrderStatus,
    /// Epoch milliseconds of the change.
    pub at: i64,
}

/// An order as `GET /api/orders/{id}` returns it: its state, lines, history,
/// refunds and how far each downstream system has got with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderView {
    /// The order.
    pub order_id: OrderId,
    /// The shopper who placed it.
    pub user_id: UserId,
    /// Where the order is in its life now.
    pub status: OrderStatus,
    /// The order's total, in minor units.
    pub amount: Amount,
    /// The payment applied to the order; `None` until it is paid.
    pub payment_id: Option<PaymentId>,
    /// Epoch milliseconds when the order was created.
    pub created_at: i64,
    /// Epoch milliseconds when the order was paid; `None` if never paid.
    pub paid_at: Option<i64>,
    /// When the order closes itself if still unpaid (epoch milliseconds).
    pub close_at: Option<i64>,
    /// What was ordered, sorted by SKU.
    pub lines: Vec<OrderLineView>,
    /// Per downstream system: has its effect of the payment been applied?
    pub fanout: BTreeMap<System, FanoutState>,
    /// Every status change, oldest first.
    pub history: Vec<StatusChange>,
    /// What operators asked for on the order (refunds, retries) and who,
    /// oldest first.
    pub actions: Vec<OperatorAction>,
    /// Every consumer group's progress with each of the order's events, with times.
    pub consumers: Vec<ConsumerProgress>,
    /// Every refund of the order.
    pub refunds: Vec<RefundView>,
}

/// One consumer group's progress with one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsumerProgress {
    /// The RocketMQ consumer group (e.g. `credit_group`).
    pub group: String,
    /// The event's id ([`crate::event::OrderEvent::event_id`]).
    pub event_id: String,
    /// Pending, done, or failed (dead-lettered).
    pub state: FanoutState,
    /// When the group applied it (`done`).
    pub applied_at: Option<i64>,
    /// Failed deliveries so far (0 when it went through first time).
    pub attempts: i64,
    /// Why the latest failed delivery failed, if any did.
    pub last_error: Option<String>,
    /// Epoch milliseconds of the latest change (failure or application).
    pub updated_at: Option<i64>,
    /// When the group's receipt (`EffectsApplied`) says it applied the event,
    /// as the order service recorded it: what the reconciler goes by.
    pub receipt_at: Option<i64>,
}

/// A refund of (part of) an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefundView {
    /// The refund.
    pub refund_id: RefundId,
    /// The order refunded.
    pub order_id: OrderId,
    /// The payment the money goes back to.
    pub payment_id: PaymentId,
    /// How much is given back, in minor units.
    pub amount: Amount,
    /// Requested, succeeded, or failed (an operator must retry).
    pub status: RefundStatus,
    /// The whole order (or a whole stray payment) was refunded.
    pub full: bool,
    /// Why: the shopper's words, or ordermq's for a stray payment.
    pub reason: Option<String>,
    /// Gateway attempts so far, and the last failure.
    pub attempts: i64,
    /// The gateway's error on the latest failed attempt, if any.
    pub last_error: Option<String>,
    /// Epoch milliseconds when the refund was requested.
    pub requested_at: i64,
    /// Epoch milliseconds when the gateway confirmed it; `None` until then.
    pub completed_at: Option<i64>,
    /// The answer was the refund an earlier request with the same key created.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

/// The answer to a carrier update that was accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CarrierReceipt {
    /// The order the update was for.
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
    /// The order the notice was for.
    pub order_id: OrderId,
    /// The order's status after the notice.
    pub status: OrderStatus,
    /// This notice changed nothing: the same payment was already applied.
    pub duplicate: bool,
    /// Money was taken for an order that cannot take it (already paid by
    /// another payment, or cancelled): recorded, and owed back to the payer.
    pub refund_required: bool,
}

/// Points credit awarded (or took back) for one order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PointsEntry {
    /// The order the points are for.
    pub order_id: OrderId,
    /// Negative for points taken back by a refund.
    pub points: i64,
    /// Epoch milliseconds when credit recorded the entry.
    pub created_at: i64,
}

/// A thank-you coupon marketing gave for a paid order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Coupon {
    /// The code the shopper redeems (`THX-` and 20 hex digits: [`crate::fanout::coupon_code`]).
    pub code: String,
    /// The paid order that earned it.
    pub order_id: OrderId,
    /// What it is worth, in minor units.
    pub value: Amount,
    /// `ACTIVE`, or `REVOKED` after the order was refunded.
    pub status: String,
    /// Epoch milliseconds when marketing issued it.
    pub created_at: i64,
}

/// An SMS push sent to the shopper (payment confirmation or refund notice).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SmsMessage {
    /// The order the message is about.
    pub order_id: OrderId,
    /// The message text.
    pub text: String,
    /// The SMS provider's reference for the message.
    pub provider_ref: String,
    /// Epoch milliseconds when push recorded it.
    pub created_at: i64,
}

/// A shipment warehouse booked for a paid order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shipment {
    /// The order shipped.
    pub order_id: OrderId,
    /// The carrier's tracking number.
    pub tracking_no: String,
    /// `CREATED`, `PICKED_UP`, `IN_TRANSIT`, `DELIVERED`, or `CANCELLED` by a full refund.
    pub status: String,
    /// Epoch milliseconds when warehouse booked it.
    pub created_at: i64,
}

/// Everything the downstream systems did for one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserActivity {
    /// The shopper.
    pub user_id: UserId,
    /// The user's point balance: the sum of `points`.
    pub points_total: i64,
    /// Points awarded and taken back, newest first.
    pub points: Vec<PointsEntry>,
    /// Coupons received, newest first.
    pub coupons: Vec<Coupon>,
    /// SMS sent, newest first.
    pub sms: Vec<SmsMessage>,
    /// Shipments booked, newest first.
    pub shipments: Vec<Shipment>,
    /// The systems whose records this answer holds: all four when one
    /// process runs them all; when each runs as its own process (`role`),
    /// only the one whose database answered (the order service holds none).
    pub systems: Vec<System>,
}

/// Per-system progress counters for the dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SystemStats {
    /// Events the system has applied (exactly once each).
    pub applied: i64,
    /// Events dead-lettered after the maximum retries and not applied since.
    pub failed: i64,
}

/// Counters for the dashboard and for operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Number of orders in each status (`"PAID"` → n).
    pub orders_by_status: BTreeMap<String, i64>,
    /// Events committed but not yet confirmed stored by the broker.
    pub outbox_backlog: i64,
    /// Events the relay failed to publish on every attempt
    /// (`relay_park_after_attempts`): no longer tried, waiting for an
    /// operator (`ordermq outbox parked`, `ordermq outbox requeue`).
    pub outbox_parked: i64,
    /// Each downstream system's applied and failed counts.
    pub systems: BTreeMap<System, SystemStats>,
    /// Payments that could not pay their order (late or duplicate) and are owed back.
    pub payments_refund_required: i64,
    /// Number of refunds in each status (`"REQUESTED"` → n).
    pub refunds_by_status: BTreeMap<String, i64>,
    /// Messages each consumer group refused because they failed verification
    /// (forged, unsigned, under an unknown key; see [`crate::parked`]), by
    /// group name; every group of the topology is listed, 0 if none.
    pub parked: BTreeMap<String, i64>,
    /// This instance's order-database writer since it started.
    pub group_commit: GroupCommitStats,
    /// The reconciler: events published again, and events some subscribed
    /// group still owes.
    pub reconcile: ReconcileStats,
    /// What each of this instance's consumer groups was handed since it
    /// started, and what it holds now (by group name; empty where the
    /// instance consumes nothing). A group with nothing in flight and no
    /// retry owed is settled: nothing it received comes back by itself.
    pub deliveries: BTreeMap<String, GroupDeliveries>,
}

/// One consumer group's deliveries in this instance, counted by the
/// messaging adapter as its listener hands them to the group's handler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GroupDeliveries {
    /// Messages whose handler call answered "consumed".
    pub handled: u64,
    /// Messages whose handler call answered "retry later" (each try counts).
    pub retried: u64,
    /// Messages inside a handler call right now.
    pub in_flight: u64,
    /// Retries the broker still owes: answered "retry later" (a failure, or
    /// a wait for an earlier event) before the last try, not delivered
    /// again yet. Counted by this instance since it started: a retry owed
    /// to an instance that stopped is not here.
    pub retries_owed: u64,
    /// Messages that failed verification and were parked (first time each),
    /// never handed to the handler.
    pub parked: u64,
}

impl GroupDeliveries {
    /// Nothing in flight and no retry owed: no message this group already
    /// received will come back by itself.
    pub fn is_settled(&self) -> bool {
        self.in_flight == 0 && self.retries_owed == 0
    }
}

/// What the reconciler found on its latest pass, and what it re-published
/// since this instance started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReconcileStats {
    /// Events put back for the relay because a subscribed group had not
    /// acknowledged them (since this instance started).
    pub republished: u64,
    /// Sent events older than `reconcile_after` that some subscribed group
    /// still owes (a receipt, a close, a refund's outcome).
    pub missing: i64,
    /// Of those, events re-published `reconcile_max` times (or first sent
    /// before `reconcile_window`): left for an operator (`ordermq outbox missing`).
    pub left_for_operator: i64,
    /// How long ago the oldest of the missing events was sent, in ms.
    pub oldest_missing_age_ms: Option<i64>,
    /// Epoch milliseconds of the latest pass; `None` before the first.
    pub checked_at: Option<i64>,
}

/// How the order database's group commit is doing: `operations / commits`
/// writes share each commit (and its fsync); `busy_ms` over wall time is how
/// close the writer is to saturation (summed over its writers: several on
/// PostgreSQL). Counted since this instance started.
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
    /// Total milliseconds spent in those slow commits.
    pub slow_commit_ms: u64,
}
