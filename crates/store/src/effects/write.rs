//! Recording effects through sqlx (every backend; on SQLite, what the lane
//! hands back: reversals, carrier progress), and remembering failed
//! deliveries. A batch takes a few multi-row statements: statements, not
//! rows, are what costs.
//!
//! Operation module: it imports only the base, leaves and the handle.

use std::collections::HashSet;

use ordermq_domain::ports::StorageError;
use ordermq_domain::{CarrierStatus, Effect, System};
use sqlx::{AnyConnection, Row};

use super::{Applied, EffectRecord, Value, as_new_row, receipt_row};
use crate::dialect;
use crate::fail::storage;
use crate::mysql;
use crate::sql::{self, NewRow};
use crate::store::{Db, Store};

/// An effect that changes existing rows (reversals, carrier progress).
async fn insert_effect(
    conn: &mut sqlx::AnyConnection,
    effect: &Effect,
    now: i64,
) -> Result<(), sqlx::Error> {
    let statement = match effect {
        // Never more than the order earned and still has: the remainder is
        // computed in the statement itself, inside this transaction.
        Effect::PointsReversal {
            user_id,
            order_id,
            refund_id,
            points,
        } => dialect::query(
            "INSERT INTO credit_point_reversals (refund_id, user_id, order_id, points, created_at) \
             SELECT $1, $2, $3, \
               CASE WHEN $4 < 0 OR $4 > left_now THEN left_now ELSE $4 END, $5 \
             FROM (SELECT COALESCE((SELECT points FROM credit_points WHERE order_id = $3), 0) \
                        - COALESCE((SELECT SUM(points) FROM credit_point_reversals WHERE order_id = $3), 0) \
                        AS left_now) AS remaining",
        )
        .bind(refund_id.as_str())
        .bind(user_id.as_str())
        .bind(order_id.as_str())
        .bind(points.unwrap_or(-1))
        .bind(now),
        Effect::CouponRevocation { order_id, .. } => dialect::query(
            "UPDATE marketing_coupons SET status = 'REVOKED', revoked_at = $1 \
             WHERE order_id = $2 AND status = 'ACTIVE'",
        )
        .bind(now)
        .bind(order_id.as_str()),
        Effect::RefundSms {
            user_id,
            order_id,
            refund_id,
            text,
            external_ref,
        } => dialect::query(
            "INSERT INTO push_refund_sms (refund_id, user_id, order_id, text, provider_ref, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(refund_id.as_str())
        .bind(user_id.as_str())
        .bind(order_id.as_str())
        .bind(text.as_str())
        .bind(external_ref.as_str())
        .bind(now),
        // Only a shipment the carrier has not picked up can be cancelled.
        Effect::ShipmentCancellation { order_id, .. } => dialect::query(
            "UPDATE warehouse_shipments SET status = 'CANCELLED', updated_at = $1 \
             WHERE order_id = $2 AND status = 'CREATED'",
        )
        .bind(now)
        .bind(order_id.as_str()),
        // Forward only: a late IN_TRANSIT never undoes DELIVERED, and a
        // cancelled shipment stays cancelled.
        Effect::ShipmentProgress { order_id, status } => {
            let earlier: &[&str] = match status {
                CarrierStatus::PickedUp => &["CREATED"],
                CarrierStatus::InTransit => &["CREATED", "PICKED_UP"],
                CarrierStatus::Delivered => &["CREATED", "PICKED_UP", "IN_TRANSIT"],
            };
            let sql = format!(
                "UPDATE warehouse_shipments SET status = $1, updated_at = $2 \
                 WHERE order_id = $3 AND status IN ({})",
                earlier
                    .iter()
                    .map(|s| format!("'{s}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            return dialect::query(&sql)
                .bind(status.shipment_status())
                .bind(now)
                .bind(order_id.as_str())
                .execute(conn)
                .await
                .map(|_| ());
        }
        // New rows (see `as_new_row`), or nothing at all.
        _ => return Ok(()),
    };
    statement.execute(conn).await?;
    Ok(())
}

/// Inbox rows per multi-row insert (3 parameters each, well under every
/// backend's parameter limit).
const INBOX_ROWS_PER_STATEMENT: usize = 200;
/// Effect rows per multi-row insert.
const EFFECT_ROWS_PER_STATEMENT: usize = 100;

/// Records `effects`: new rows of one table as multi-row inserts (the common
/// case: a batch of `OrderPaid` effects), everything else one by one.
async fn insert_effects(
    conn: &mut sqlx::AnyConnection,
    effects: &[&Effect],
    now: i64,
) -> Result<(), sqlx::Error> {
    let mut rows: Vec<(NewRow, Vec<Value<'_>>)> = Vec::new();
    for effect in effects {
        match as_new_row(effect) {
            Some(row) => rows.push(row),
            None => insert_effect(conn, effect, now).await?,
        }
    }
    rows.sort_by_key(|(row, _)| row.target);
    for same_table in rows.chunk_by(|a, b| a.0.target == b.0.target) {
        for chunk in same_table.chunks(EFFECT_ROWS_PER_STATEMENT) {
            let (row, _) = &chunk[0];
            let width = row.width;
            // Every row's trailing columns (the time, the status) are
            // shared by the whole statement: the time is `$1`.
            let tail = row.tail.replace("$t", "$1");
            let values = (0..chunk.len())
                .map(|i| {
                    let params = (0..width)
                        .map(|c| format!("${}", 2 + i * width + c))
                        .collect::<Vec<_>>()
                        .join(", ");
                    format!("({params}, {tail})")
                })
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!("INSERT INTO {} VALUES {values}", row.target);
            let mut query = dialect::query(&sql).bind(now);
            for (_, row) in chunk {
                for value in row {
                    query = match value {
                        Value::Text(text) => query.bind(*text),
                        Value::Int(int) => query.bind(*int),
                    };
                }
            }
            query.execute(&mut *conn).await?;
        }
    }
    Ok(())
}

/// Records many effects of one system's consumer group, each with its
/// inbox row, in the caller's transaction; events already in the inbox are
/// skipped.
pub(crate) async fn apply_effects_in(
    tx: &mut AnyConnection,
    group: &str,
    records: &[EffectRecord],
    now: i64,
) -> Result<Vec<Applied>, StorageError> {
    // Statements, not rows, are what costs (each one is a round trip to
    // the database's worker thread), so a batch takes a few multi-row
    // statements: the inbox rows, telling which events are new...
    let mut fresh = HashSet::new();
    for chunk in records.chunks(INBOX_ROWS_PER_STATEMENT) {
        if dialect::is_mysql(tx) {
            let events: Vec<_> = chunk
                .iter()
                .map(|r| {
                    let order = r.effect.order_id().as_str();
                    (r.event_id.as_str(), order, r.msg_id.as_str())
                })
                .collect();
            let new = mysql::insert_inbox(&mut *tx, group, &events, now).await;
            fresh.extend(new.map_err(storage)?);
            continue;
        }
        let values = (0..chunk.len())
            .map(|i| format!("($1, ${}, ${}, ${}, $2)", 3 * i + 3, 3 * i + 4, 3 * i + 5))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "{}{values}{} RETURNING event_id",
            sql::INBOX_INSERT,
            sql::INBOX_ON_CONFLICT
        );
        let mut query = dialect::query(&sql).bind(group).bind(now);
        for record in chunk {
            query = query
                .bind(record.event_id.as_str())
                .bind(record.effect.order_id().as_str())
                .bind(record.msg_id.as_str());
        }
        for row in query.fetch_all(&mut *tx).await.map_err(storage)? {
            fresh.insert(row.try_get::<String, _>("event_id").map_err(storage)?);
        }
    }
    // ...then the new events' effects (the first occurrence of each: a
    // batch may carry one event twice).
    let mut outcomes = Vec::with_capacity(records.len());
    let mut new_effects = Vec::with_capacity(records.len());
    for record in records {
        if fresh.remove(&record.event_id) {
            outcomes.push(Applied::Now);
            new_effects.push(&record.effect);
        } else {
            outcomes.push(Applied::Already);
        }
    }
    insert_effects(tx, &new_effects, now)
        .await
        .map_err(storage)?;
    // Earlier failures of these events stay recorded (the order's page
    // shows "done after N failed attempts"); an inbox row outranks them
    // everywhere they are read, so nothing is deleted on the hot path.
    enqueue_receipts_in(tx, group, records, now).await?;
    Ok(outcomes)
}

/// Writes the group's receipt of the batch (see `receipt_row`) to its
/// outbox (`receipt_outbox`) in the caller's transaction.
async fn enqueue_receipts_in(
    tx: &mut AnyConnection,
    group: &str,
    records: &[EffectRecord],
    now: i64,
) -> Result<(), StorageError> {
    let Some(row) = receipt_row(group, records, now) else {
        return Ok(());
    };
    dialect::query(sql::INSERT_RECEIPT)
        .bind(row.topic)
        .bind(row.tag)
        .bind(row.key)
        .bind(row.event_id)
        .bind(row.body)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(storage)?;
    Ok(())
}

impl Store {
    /// Remembers that a delivery failed, and whether the broker is giving up on it
    /// (the message goes to the group's dead-letter queue).
    ///
    /// Nothing is recorded if the group has applied the event already: a
    /// redelivered duplicate failing after another delivery applied it must not
    /// leave a failure behind (it would count as dead-lettered in the stats and
    /// `ordermq dlq list` forever). A failure recorded just before the event
    /// is applied stays as history; every reader lets the inbox row outrank it.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_failure(
        &self,
        system: System,
        event_id: &str,
        order_id: &str,
        attempts: i64,
        error: &str,
        dead_lettered: bool,
        now: i64,
    ) -> Result<(), StorageError> {
        let mut tx = self
            .begin_write(Db::System(system))
            .await
            .map_err(storage)?;
        dialect::query(
            "INSERT INTO consumer_failures (consumer_group, event_id, order_id, attempts, last_error, dead_lettered, updated_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7 \
             WHERE NOT EXISTS (SELECT 1 FROM inbox WHERE consumer_group = $1 AND event_id = $2) \
             ON CONFLICT (consumer_group, event_id) DO UPDATE SET \
               attempts = $4, last_error = $5, dead_lettered = $6, updated_at = $7",
        )
        .bind(system.consumer_group())
        .bind(event_id)
        .bind(order_id)
        .bind(attempts)
        .bind(error)
        .bind(i64::from(dead_lettered))
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(storage)?;
        tx.commit().await.map_err(storage)
    }
}
