//! Each downstream system's effect, recorded exactly once.
//!
//! RocketMQ delivers at least once, so a message can arrive twice (a lost
//! ack, a rebalance, a crash before the offset was committed). The effect row
//! and an inbox row keyed by (consumer group, event id) commit in one
//! transaction: the second delivery finds the inbox row and changes nothing.
//! A UNIQUE order id on every effect table is a second, independent guard.
//!
//! This file holds the types both writers share (the general path in
//! [`write`], the SQLite lane in `lane::effects`), and the split of effects
//! into new rows and changes: a leaf, importing only the base (`sql`). Its
//! children are operation modules: `write` (the general path and failure
//! records) and `read` (what the order page, stats and checkers read).

pub(crate) mod read;
pub(crate) mod write;

use ordermq_domain::Effect;
use ordermq_domain::reconcile::Receipt;

use crate::sql::{self, NewRow};

/// Whether a delivery changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The effect was recorded by this call.
    Now,
    /// The inbox already had this event: a redelivery, nothing changed.
    Already,
}

/// One effect to record, with the event it comes from and the broker's message id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectRecord {
    pub event_id: String,
    pub msg_id: String,
    pub effect: Effect,
}

/// A bound value of an effect's row.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value<'a> {
    Text(&'a str),
    Int(i64),
}

/// The table and own values of an effect that is one new row (the effects of
/// `OrderPaid`); `None` for effects that change existing rows (reversals,
/// carrier progress), which only the general path applies.
pub(crate) fn as_new_row(effect: &Effect) -> Option<(NewRow, Vec<Value<'_>>)> {
    use Value::{Int, Text};
    Some(match effect {
        Effect::Points {
            user_id,
            order_id,
            points,
        } => (
            sql::CREDIT_POINTS,
            vec![
                Text(user_id.as_str()),
                Text(order_id.as_str()),
                Int(*points),
            ],
        ),
        Effect::Coupon {
            user_id,
            order_id,
            coupon_code,
            value,
        } => (
            sql::MARKETING_COUPONS,
            vec![
                Text(coupon_code.as_str()),
                Text(user_id.as_str()),
                Text(order_id.as_str()),
                Int(value.minor_units()),
            ],
        ),
        Effect::Sms {
            user_id,
            order_id,
            text,
            external_ref,
        } => (
            sql::PUSH_SMS,
            vec![
                Text(user_id.as_str()),
                Text(order_id.as_str()),
                Text(text.as_str()),
                Text(external_ref.as_str()),
            ],
        ),
        Effect::Shipment {
            user_id,
            order_id,
            tracking_no,
        } => (
            sql::WAREHOUSE_SHIPMENTS,
            vec![
                Text(user_id.as_str()),
                Text(order_id.as_str()),
                Text(tracking_no.as_str()),
            ],
        ),
        _ => return None,
    })
}

/// The receipt row of a batch `group` committed at `now` (see
/// [`ordermq_domain::reconcile::Receipt`]): every record's event, new or
/// seen before (an event that came back may have lost its receipt), once
/// each. `None` for an empty batch. Its message key is the group (the
/// receipt is about many orders) and its event id is drawn at random:
/// each batch's receipt is a row of its own.
pub(crate) struct ReceiptRow {
    pub topic: &'static str,
    pub tag: &'static str,
    pub key: String,
    pub event_id: String,
    pub body: String,
}

pub(crate) fn receipt_row(group: &str, records: &[EffectRecord], now: i64) -> Option<ReceiptRow> {
    let mut seen = std::collections::HashSet::new();
    let event_ids: Vec<String> = records
        .iter()
        .filter(|r| seen.insert(r.event_id.as_str()))
        .map(|r| r.event_id.clone())
        .collect();
    if event_ids.is_empty() {
        return None;
    }
    let shipments = records
        .iter()
        .filter_map(|r| match &r.effect {
            Effect::Shipment {
                order_id,
                tracking_no,
                ..
            } => Some((order_id.as_str().to_owned(), tracking_no.clone())),
            _ => None,
        })
        .collect();
    let receipt = Receipt {
        consumer_group: group.to_owned(),
        event_ids,
        applied_at: now,
        shipments,
    };
    let kind = Receipt::KIND;
    Some(ReceiptRow {
        topic: kind.topic(),
        tag: kind.tag(),
        key: group.to_owned(),
        event_id: format!("{}:{group}:{now}:{:016x}", kind.tag(), fastrand::u64(..)),
        body: receipt.to_json(),
    })
}

/// Whether the SQLite lane can record every one of `records`: new rows, or
/// nothing but the inbox row; reversals and the like take the general path.
pub(crate) fn lane_handles(records: &[EffectRecord]) -> bool {
    records
        .iter()
        .all(|r| matches!(r.effect, Effect::Nothing { .. }) || as_new_row(&r.effect).is_some())
}
