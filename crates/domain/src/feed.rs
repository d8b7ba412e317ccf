//! The order change feed for the data team: one event per order state
//! change, as CloudEvents 1.0 JSON, with the order's full state after the
//! change and a gap-free per-order sequence number.
//!
//! Why a feed and not reports against the order database: the data team's
//! queries would compete with payments for the order database, and a
//! binlog feed (Canal) leaks the schema and reorders on key changes. This
//! feed is written to the outbox in the transaction that makes the change
//! (store), so it is exactly as durable as the change, and is published to
//! [`TOPIC_ORDER_CHANGE_FEED`] keyed by order id, as RocketMQ ordered
//! messages (one queue per order id, chosen by hash).
//!
//! Everything here is pure: the envelope is built from an [`OrderState`]
//! the store read (or already had) inside the transaction, and the sink's
//! rule — apply, skip a duplicate, or park until the predecessor arrives —
//! is [`FeedEvent::admit`]. Fields are only ever added, never renamed or
//! retyped: `schemas/feed/` holds each type's JSON Schema and a test
//! compares it with the committed copy.

use serde::{Deserialize, Serialize};

use crate::event::PaidLine;
use crate::order::{OrderStatus, PaymentNotice};

/// The topic of the change feed.
pub const TOPIC_ORDER_CHANGE_FEED: &str = "TopicOrderChangeFeed";
/// The data team's consumer group (`ordermq feed sink`).
pub const FEED_SINK_GROUP: &str = "order_feed_sink_group";
/// The CloudEvents `source` of every feed event.
pub const FEED_SOURCE: &str = "/ordermq/orders";
/// The prefix of every feed event id (`OrderChanged:<order id>:<order_seq>`).
pub const FEED_EVENT_PREFIX: &str = "OrderChanged:";
/// The prefix of every snapshot event id (`OrderSnapshot:<order id>:<order_seq>`).
pub const FEED_SNAPSHOT_PREFIX: &str = "OrderSnapshot:";

/// What changed. Each has its own CloudEvents `type` and JSON Schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedChange {
    /// The order was created (UNPAID), flash-sale orders included.
    Created,
    /// UNPAID → PAID.
    Paid,
    /// UNPAID → CANCELLED (closed unpaid).
    Cancelled,
    /// A refund was requested (the status may stay as it was: a partial refund).
    RefundRequested,
    /// → REFUNDING (nothing more to refund, or a payment after the close).
    Refunding,
    /// REFUNDING → REFUNDED.
    Refunded,
    /// PAID → SHIPPED.
    Shipped,
    /// → DELIVERED.
    Delivered,
    /// Not a change: the order as it stood at `order_seq`, sent by `ordermq
    /// feed snapshot`. A sink applies it only over an older state, so it may
    /// skip the changes before it (see [`FeedEvent::admit`]).
    Snapshot,
}

impl FeedChange {
    /// Every event type: the changes in the order of an order's life, then
    /// the snapshot.
    pub const ALL: [FeedChange; 9] = [
        Self::Created,
        Self::Paid,
        Self::Cancelled,
        Self::RefundRequested,
        Self::Refunding,
        Self::Refunded,
        Self::Shipped,
        Self::Delivered,
        Self::Snapshot,
    ];

    /// The name in the event's type, tag and schema file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Paid => "paid",
            Self::Cancelled => "cancelled",
            Self::RefundRequested => "refund_requested",
            Self::Refunding => "refunding",
            Self::Refunded => "refunded",
            Self::Shipped => "shipped",
            Self::Delivered => "delivered",
            Self::Snapshot => "snapshot",
        }
    }

    /// The CloudEvents `type`: `ordermq.order.<change>.v1`.
    pub fn event_type(self) -> String {
        format!("ordermq.order.{}.v1", self.as_str())
    }

    /// The RocketMQ tag (so a consumer can take only some changes).
    pub fn tag(self) -> &'static str {
        match self {
            Self::Created => "OrderCreated",
            Self::Paid => "OrderPaidChange",
            Self::Cancelled => "OrderCancelled",
            Self::RefundRequested => "OrderRefundRequestedChange",
            Self::Refunding => "OrderRefunding",
            Self::Refunded => "OrderRefunded",
            Self::Shipped => "OrderShipped",
            Self::Delivered => "OrderDelivered",
            Self::Snapshot => "OrderSnapshot",
        }
    }

    /// The schema file under `schemas/feed/`, also the `dataschema` path.
    pub fn schema_file(self) -> String {
        format!("order.{}.v1.json", self.as_str())
    }

    /// The change whose [`event_type`](Self::event_type) is `raw`.
    pub fn from_event_type(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.event_type() == raw)
    }
}

/// One line of the order, with what of it was refunded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedLine {
    /// The product.
    pub sku: String,
    /// Units ordered.
    pub quantity: i64,
    /// Price of one unit when ordered, in minor units.
    pub unit_price: i64,
    /// Units refunded so far.
    pub refunded: i64,
}

/// The order's full state after a change: what the sink's `orders` row holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderState {
    /// The order.
    pub order_id: String,
    /// The shopper.
    pub user_id: String,
    /// `UNPAID`, `PAID`, … (the order status machine's names).
    pub status: String,
    /// Total, in minor units.
    pub amount: i64,
    /// The payment that paid it, once paid.
    pub payment_id: Option<String>,
    /// Epoch milliseconds.
    pub created_at: i64,
    /// Epoch milliseconds of the last change.
    pub updated_at: i64,
    /// Lines, by SKU.
    pub lines: Vec<FeedLine>,
}

impl FeedLine {
    /// `lines` as a JSON array (the sink keeps them so, denormalized).
    pub fn list_to_json(lines: &[FeedLine]) -> String {
        serde_json::to_string(lines).expect("lines serialize")
    }

    /// Decodes [`list_to_json`](Self::list_to_json)'s text.
    pub fn list_from_json(text: &str) -> Result<Vec<FeedLine>, serde_json::Error> {
        serde_json::from_str(text)
    }
}

impl OrderState {
    /// The order as a payment that applies leaves it, from what the
    /// payment path already holds: its user, its lines (nothing refunded
    /// yet: an UNPAID order has no refund) and when it was created.
    pub fn paid(
        notice: &PaymentNotice,
        user_id: &str,
        lines: &[PaidLine],
        created_at: i64,
        now: i64,
    ) -> Self {
        Self {
            order_id: notice.order_id.as_str().to_owned(),
            user_id: user_id.to_owned(),
            status: OrderStatus::Paid.as_str().to_owned(),
            amount: notice.amount.minor_units(),
            payment_id: Some(notice.payment_id.as_str().to_owned()),
            created_at,
            updated_at: now,
            lines: lines
                .iter()
                .map(|l| FeedLine {
                    sku: l.sku.as_str().to_owned(),
                    quantity: i64::from(l.quantity),
                    unit_price: l.unit_price.minor_units(),
                    refunded: 0,
                })
                .collect(),
        }
    }
}

/// The event's `data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedData {
    /// 1 for the order's creation, then 2, 3 … without gaps.
    pub order_seq: i64,
    /// What changed.
    pub change: FeedChange,
    /// The order after the change.
    pub order: OrderState,
}

/// A CloudEvents 1.0 event (structured mode, JSON).
///
/// `orderseq` repeats `data.order_seq` as an extension attribute
/// (CloudEvents attribute names are lower-case letters and digits only, so
/// it cannot be spelled `order_seq` there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedEvent {
    /// Always `1.0`.
    pub specversion: String,
    /// `OrderChanged:<order id>:<order_seq>` (a snapshot:
    /// `OrderSnapshot:<order id>:<order_seq>`).
    pub id: String,
    /// [`FEED_SOURCE`].
    pub source: String,
    /// `ordermq.order.<change>.v1`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The order id.
    pub subject: String,
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    /// Always `application/json`.
    pub datacontenttype: String,
    /// The schema of `data`: `urn:ordermq:schemas:feed:order.<change>.v1.json`.
    pub dataschema: String,
    /// Extension attribute: `data.order_seq`.
    pub orderseq: i64,
    /// The change and the order after it.
    pub data: FeedData,
}

/// What a sink does with an event, given the last `order_seq` it applied
/// for the order (0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The next one: apply it.
    Apply,
    /// Applied before (a redelivery): skip it.
    Duplicate,
    /// Its predecessor has not arrived: park it, for this order only.
    Park,
}

impl FeedEvent {
    /// The event of `change` that made `order` what it is, the
    /// `order_seq`-th of the order, at `at` (epoch ms).
    pub fn new(change: FeedChange, order_seq: i64, order: OrderState, at: i64) -> Self {
        Self {
            specversion: "1.0".to_owned(),
            id: if change == FeedChange::Snapshot {
                format!("{FEED_SNAPSHOT_PREFIX}{}:{order_seq}", order.order_id)
            } else {
                Self::id_of(&order.order_id, order_seq)
            },
            source: FEED_SOURCE.to_owned(),
            event_type: change.event_type(),
            subject: order.order_id.clone(),
            time: rfc3339_millis(at),
            datacontenttype: "application/json".to_owned(),
            dataschema: format!("urn:ordermq:schemas:feed:{}", change.schema_file()),
            orderseq: order_seq,
            data: FeedData {
                order_seq,
                change,
                order,
            },
        }
    }

    /// The id of an order's `order_seq`-th event: stable, so the outbox's
    /// UNIQUE event id refuses a second row for one change.
    pub fn id_of(order_id: &str, order_seq: i64) -> String {
        format!("{FEED_EVENT_PREFIX}{order_id}:{order_seq}")
    }

    /// The message body.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("feed events serialize")
    }

    /// Decodes a body written by [`to_json`](Self::to_json).
    pub fn from_json(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// The order as it stands at its `order_seq`-th change, as `ordermq feed
    /// snapshot` sends it, at `at` (epoch ms).
    pub fn snapshot(order: OrderState, order_seq: i64, at: i64) -> Self {
        Self::new(FeedChange::Snapshot, order_seq, order, at)
    }

    /// Whether this is a snapshot, not a change.
    pub fn is_snapshot(&self) -> bool {
        self.data.change == FeedChange::Snapshot
    }

    /// What a sink that applied up to `applied_seq` of this order does with it.
    ///
    /// A change is applied only right after its predecessor. A snapshot
    /// carries the whole state, so it is applied over any older one (the
    /// changes between are then duplicates: they are already in it) and
    /// skipped over a newer or equal one: a live event always wins over an
    /// older snapshot, and a snapshot never waits, so it never parks.
    pub fn admit(&self, applied_seq: i64) -> Admission {
        let seq = self.data.order_seq;
        if self.is_snapshot() {
            return if seq > applied_seq {
                Admission::Apply
            } else {
                Admission::Duplicate
            };
        }
        if seq <= applied_seq {
            Admission::Duplicate
        } else if seq == applied_seq + 1 {
            Admission::Apply
        } else {
            Admission::Park
        }
    }
}

/// Parses a point in time given on a command line: epoch milliseconds, or
/// RFC 3339 in UTC (`2026-12-05T14:21:58Z`, fraction optional, `Z` or
/// `+00:00`), as [`rfc3339_millis`] writes it. `None` for anything else.
pub fn parse_time_millis(raw: &str) -> Option<i64> {
    let raw = raw.trim();
    if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
        return raw.parse().ok();
    }
    let rest = raw
        .strip_suffix('Z')
        .or_else(|| raw.strip_suffix("+00:00"))?;
    let (date, time) = rest.split_once(['T', ' '])?;
    let num = |s: &str, len: usize| -> Option<i64> {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let mut d = date.split('-');
    let (year, month, day) = (num(d.next()?, 4)?, num(d.next()?, 2)?, num(d.next()?, 2)?);
    if d.next().is_some() || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let (clock, fraction) = match time.split_once('.') {
        Some((c, f)) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
            (c, f)
        }
        Some(_) => return None,
        None => (time, ""),
    };
    let mut t = clock.split(':');
    let (h, m, s) = (num(t.next()?, 2)?, num(t.next()?, 2)?, num(t.next()?, 2)?);
    if t.next().is_some() || h > 23 || m > 59 || s > 59 {
        return None;
    }
    let millis = format!("{fraction:0<3}")[..3].parse::<i64>().ok()?;
    // Days since 1970-01-01 (the inverse of rfc3339_millis's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    // A day that does not exist in its month (31 April) comes back as another date.
    if !rfc3339_millis(days * 86_400_000).starts_with(date) {
        return None;
    }
    Some(((days * 86_400 + h * 3600 + m * 60 + s) * 1000) + millis)
}

/// `at` (epoch ms) as RFC 3339 in UTC, e.g. `2026-12-05T14:21:58.123Z`.
pub fn rfc3339_millis(at: i64) -> String {
    let secs = at.div_euclid(1000);
    let millis = at.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> OrderState {
        OrderState {
            order_id: "O1".into(),
            user_id: "u1".into(),
            status: "PAID".into(),
            amount: 17800,
            payment_id: Some("pay-1".into()),
            created_at: 1_795_000_000_000,
            updated_at: 1_795_000_000_500,
            lines: vec![FeedLine {
                sku: "SKU-1".into(),
                quantity: 2,
                unit_price: 8900,
                refunded: 0,
            }],
        }
    }

    #[test]
    fn envelope_is_cloudevents_with_stable_id_and_type() {
        let event = FeedEvent::new(FeedChange::Paid, 2, state(), 1_795_000_000_500);
        assert_eq!(event.id, "OrderChanged:O1:2");
        assert_eq!(event.event_type, "ordermq.order.paid.v1");
        assert_eq!(event.subject, "O1");
        assert_eq!(event.time, "2026-11-18T11:06:40.500Z");
        let json: serde_json::Value = serde_json::from_str(&event.to_json()).unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["type"], "ordermq.order.paid.v1");
        assert_eq!(json["data"]["order_seq"], 2);
        assert_eq!(json["data"]["change"], "paid");
        assert_eq!(
            FeedEvent::from_json(event.to_json().as_bytes()).unwrap(),
            event
        );
    }

    #[test]
    fn time_is_utc_rfc3339() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_782_400_001), "2000-02-29T00:00:00.001Z");
    }

    #[test]
    fn admission_applies_next_skips_seen_and_parks_after_a_gap() {
        let event = FeedEvent::new(FeedChange::Paid, 2, state(), 0);
        assert_eq!(event.admit(1), Admission::Apply);
        assert_eq!(event.admit(2), Admission::Duplicate);
        assert_eq!(event.admit(5), Admission::Duplicate);
        assert_eq!(event.admit(0), Admission::Park);
    }

    #[test]
    fn a_snapshot_applies_over_any_older_state_and_never_parks() {
        let snapshot = FeedEvent::snapshot(state(), 4, 0);
        assert_eq!(snapshot.id, "OrderSnapshot:O1:4");
        assert_eq!(snapshot.event_type, "ordermq.order.snapshot.v1");
        assert_eq!(snapshot.admit(0), Admission::Apply);
        assert_eq!(snapshot.admit(2), Admission::Apply);
        assert_eq!(snapshot.admit(4), Admission::Duplicate);
        assert_eq!(snapshot.admit(5), Admission::Duplicate);
    }

    #[test]
    fn times_parse_as_rfc3339_or_epoch_millis() {
        for at in [0, 951_782_400_001, 1_795_000_000_500, 4_102_444_799_999] {
            assert_eq!(parse_time_millis(&rfc3339_millis(at)), Some(at));
        }
        assert_eq!(parse_time_millis("1795000000500"), Some(1_795_000_000_500));
        assert_eq!(
            parse_time_millis("2026-11-18T11:06:40+00:00"),
            Some(1_795_000_000_000)
        );
        assert_eq!(
            parse_time_millis("2026-11-18T11:06:40.5Z"),
            Some(1_795_000_000_500)
        );
        for bad in [
            "",
            "yesterday",
            "2026-11-18",
            "2026-11-18T11:06:40",
            "2026-11-18T11:06:40+08:00",
            "2026-04-31T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-18T24:00:00Z",
            "2026-11-18T11:06:40.Z",
            "-5",
        ] {
            assert_eq!(parse_time_millis(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_change_has_a_distinct_type_and_tag() {
        let mut seen = std::collections::HashSet::new();
        for change in FeedChange::ALL {
            assert!(seen.insert(change.tag()));
            assert_eq!(
                FeedChange::from_event_type(&change.event_type()),
                Some(change)
            );
        }
    }
}
