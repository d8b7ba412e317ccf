//! Each downstream system's effect, recorded exactly once.
//!
//! RocketMQ delivers at least once, so a message can arrive twice (a lost
//! ack, a rebalance, a crash before the offset was committed). The effect row
//! and an inbox row keyed by (consumer group, event id) commit in one
//! transaction: the second delivery finds the inbox row and changes nothing.
//! A UNIQUE order id on every effect table is a second, independent guard.

use std::collections::{HashMap, HashSet};

use futures_util::TryStreamExt;
use ordermq_domain::ports::StorageError;
use ordermq_domain::view::{
    ConsumerProgress, Coupon, PointsEntry, Shipment, SmsMessage, UserActivity,
};
use ordermq_domain::{Amount, CarrierStatus, Effect, FanoutState, OrderId, System, UserId};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Store, storage};

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

async fn insert_effect(
    conn: &mut sqlx::AnyConnection,
    effect: &Effect,
    now: i64,
) -> Result<(), sqlx::Error> {
    let statement = match effect {
        Effect::Points {
            user_id,
            order_id,
            points,
        } => sqlx::query(
            "INSERT INTO credit_points (user_id, order_id, points, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(user_id.as_str())
        .bind(order_id.as_str())
        .bind(*points)
        .bind(now),
        Effect::Coupon {
            user_id,
            order_id,
            coupon_code,
            value,
        } => sqlx::query(
            "INSERT INTO marketing_coupons (code, user_id, order_id, value, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(coupon_code.as_str())
        .bind(user_id.as_str())
        .bind(order_id.as_str())
        .bind(value.minor_units())
        .bind(now),
        Effect::Sms {
            user_id,
            order_id,
            text,
            external_ref,
        } => sqlx::query(
            "INSERT INTO push_sms (user_id, order_id, text, provider_ref, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(user_id.as_str())
        .bind(order_id.as_str())
        .bind(text.as_str())
        .bind(external_ref.as_str())
        .bind(now),
        Effect::Shipment {
            user_id,
            order_id,
            tracking_no,
        } => sqlx::query(
            "INSERT INTO warehouse_shipments (user_id, order_id, tracking_no, status, created_at, updated_at) VALUES ($1, $2, $3, 'CREATED', $4, $4)",
        )
        .bind(user_id.as_str())
        .bind(order_id.as_str())
        .bind(tracking_no.as_str())
        .bind(now),
        // Never more than the order earned and still has: the remainder is
        // computed in the statement itself, inside this transaction.
        Effect::PointsReversal {
            user_id,
            order_id,
            refund_id,
            points,
        } => sqlx::query(
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
        Effect::CouponRevocation { order_id, .. } => sqlx::query(
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
        } => sqlx::query(
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
        Effect::ShipmentCancellation { order_id, .. } => sqlx::query(
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
            return sqlx::query(&sql)
                .bind(status.shipment_status())
                .bind(now)
                .bind(order_id.as_str())
                .execute(conn)
                .await
                .map(|_| ());
        }
        Effect::Nothing { .. } => return Ok(()),
    };
    statement.execute(conn).await?;
    Ok(())
}

/// Inbox rows per multi-row insert (3 parameters each, well under every
/// backend's parameter limit).
const INBOX_ROWS_PER_STATEMENT: usize = 200;
/// Effect rows per multi-row insert.
const EFFECT_ROWS_PER_STATEMENT: usize = 100;

/// A bound value of a multi-row insert.
enum Value<'a> {
    Text(&'a str),
    Int(i64),
}

/// The table, columns and values of an effect that is one new row; `None`
/// for effects that change existing rows (reversals, carrier progress).
fn as_new_row(effect: &Effect) -> Option<(&'static str, Vec<Value<'_>>)> {
    use Value::{Int, Text};
    Some(match effect {
        Effect::Points {
            user_id,
            order_id,
            points,
        } => (
            "credit_points (user_id, order_id, points, created_at)",
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
            "marketing_coupons (code, user_id, order_id, value, created_at)",
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
            "push_sms (user_id, order_id, text, provider_ref, created_at)",
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
            "warehouse_shipments (user_id, order_id, tracking_no, created_at, updated_at, status)",
            vec![
                Text(user_id.as_str()),
                Text(order_id.as_str()),
                Text(tracking_no.as_str()),
            ],
        ),
        _ => return None,
    })
}

/// Records `effects`: new rows of one table as multi-row inserts (the common
/// case: a batch of `OrderPaid` effects), everything else one by one.
async fn insert_effects(
    conn: &mut sqlx::AnyConnection,
    effects: &[&Effect],
    now: i64,
) -> Result<(), sqlx::Error> {
    let mut rows: Vec<(&'static str, Vec<Value<'_>>)> = Vec::new();
    for effect in effects {
        match as_new_row(effect) {
            Some(row) => rows.push(row),
            None => insert_effect(conn, effect, now).await?,
        }
    }
    rows.sort_by_key(|(table, _)| *table);
    for same_table in rows.chunk_by(|a, b| a.0 == b.0) {
        for chunk in same_table.chunks(EFFECT_ROWS_PER_STATEMENT) {
            let (table, first) = &chunk[0];
            let width = first.len();
            // Shipments start CREATED; every row's trailing columns are the
            // time (and the status), shared by the whole statement.
            let tail = if table.starts_with("warehouse_shipments") {
                "$1, $1, 'CREATED'"
            } else {
                "$1"
            };
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
            let sql = format!("INSERT INTO {table} VALUES {values}");
            let mut query = sqlx::query(&sql).bind(now);
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

fn order_id_of(row: &AnyRow) -> Result<OrderId, StorageError> {
    let raw: String = row.try_get("order_id").map_err(storage)?;
    OrderId::parse(&raw).map_err(|_| StorageError(format!("stored order id {raw:?} is not valid")))
}

impl Store {
    /// Whether `system` already applied `event_id` (lets a consumer skip a
    /// third-party call on redelivery).
    pub async fn is_applied(&self, system: System, event_id: &str) -> Result<bool, StorageError> {
        let row =
            sqlx::query("SELECT 1 AS one FROM inbox WHERE consumer_group = $1 AND event_id = $2")
                .bind(system.consumer_group())
                .bind(event_id)
                .fetch_optional(self.system_pool(system))
                .await
                .map_err(storage)?;
        Ok(row.is_some())
    }

    /// Records `effect` and the inbox row for `event_id` in one transaction.
    pub async fn apply_effect(
        &self,
        event_id: &str,
        msg_id: &str,
        effect: &Effect,
        now: i64,
    ) -> Result<Applied, StorageError> {
        let applied = self
            .apply_effects(
                &[EffectRecord {
                    event_id: event_id.to_owned(),
                    msg_id: msg_id.to_owned(),
                    effect: effect.clone(),
                }],
                now,
            )
            .await?;
        Ok(applied[0])
    }

    /// Records many effects of **one** system, each with its inbox row, in one
    /// transaction (one fsync for a whole consumed batch). Effects whose event
    /// is already in the inbox are skipped. All records must belong to the same
    /// system.
    pub async fn apply_effects(
        &self,
        records: &[EffectRecord],
        now: i64,
    ) -> Result<Vec<Applied>, StorageError> {
        let Some(first) = records.first() else {
            return Ok(Vec::new());
        };
        let system = first.effect.system();
        if records.iter().any(|r| r.effect.system() != system) {
            return Err(StorageError(
                "a batch of effects must belong to one system".into(),
            ));
        }
        let group = system.consumer_group();
        let _gate = self.write_gate(crate::Db::System(system)).await;
        if let Some(lanes) = &self.lanes
            && crate::sqlite_lane::handles(records)
        {
            // SQLite, new effects only (the hot path): one job on the lane.
            let records = records.to_vec();
            return lanes.systems[crate::system_index(system)]
                .run(move |conn| crate::sqlite_lane::apply_effects(conn, group, &records, now))
                .await?
                .map_err(|e| StorageError(e.to_string()));
        }
        let mut tx = self.system_pool(system).begin().await.map_err(storage)?;
        // Statements, not rows, are what costs (each one is a round trip to
        // the database's worker thread), so a batch takes a few multi-row
        // statements: the inbox rows, telling which events are new...
        let mut fresh = HashSet::new();
        for chunk in records.chunks(INBOX_ROWS_PER_STATEMENT) {
            let values = (0..chunk.len())
                .map(|i| format!("($1, ${}, ${}, ${}, $2)", 3 * i + 3, 3 * i + 4, 3 * i + 5))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO inbox (consumer_group, event_id, order_id, msg_id, applied_at) \
                 VALUES {values} ON CONFLICT (consumer_group, event_id) DO NOTHING RETURNING event_id"
            );
            let mut query = sqlx::query(&sql).bind(group).bind(now);
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
        insert_effects(&mut tx, &new_effects, now)
            .await
            .map_err(storage)?;
        // Earlier failures of these events stay recorded (the order's page
        // shows "done after N failed attempts"); an inbox row outranks them
        // everywhere they are read, so nothing is deleted on the hot path.
        tx.commit().await.map_err(storage)?;
        Ok(outcomes)
    }

    /// Which of `event_ids` `system` has already applied (one query for a batch).
    pub async fn applied_among(
        &self,
        system: System,
        event_ids: &[String],
    ) -> Result<std::collections::HashSet<String>, StorageError> {
        let mut applied = std::collections::HashSet::new();
        for chunk in event_ids.chunks(200) {
            let sql = format!(
                "SELECT event_id FROM inbox WHERE consumer_group = $1 AND event_id IN ({})",
                crate::placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(&sql).bind(system.consumer_group());
            for id in chunk {
                query = query.bind(id.as_str());
            }
            for row in query
                .fetch_all(self.system_pool(system))
                .await
                .map_err(storage)?
            {
                applied.insert(row.try_get("event_id").map_err(storage)?);
            }
        }
        Ok(applied)
    }

    /// When `system` applied each order's events, for events applied at or
    /// after `since` (ms): order id → latest applied_at. Benchmarks measure
    /// end-to-end time with it, one step at a time; rows are streamed, so a
    /// long run's inbox is never held in memory at once.
    pub async fn applied_times(
        &self,
        system: System,
        since: i64,
    ) -> Result<HashMap<String, i64>, StorageError> {
        let mut rows = sqlx::query(
            "SELECT order_id, MAX(applied_at) AS at FROM inbox \
             WHERE consumer_group = $1 AND applied_at >= $2 GROUP BY order_id",
        )
        .bind(system.consumer_group())
        .bind(since)
        .fetch(self.system_pool(system));
        let mut times = HashMap::new();
        while let Some(row) = rows.try_next().await.map_err(storage)? {
            times.insert(
                row.try_get("order_id").map_err(storage)?,
                row.try_get("at").map_err(storage)?,
            );
        }
        Ok(times)
    }

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
        let _gate = self.write_gate(crate::Db::System(system)).await;
        sqlx::query(
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
        .execute(self.system_pool(system))
        .await
        .map_err(storage)?;
        Ok(())
    }

    /// Each consumer group's progress with the events of one order: applied
    /// (with its time), failing (attempts, last error), dead-lettered, or
    /// pending. `expected` lists events a group should see even if it has not yet.
    pub(crate) async fn consumer_progress(
        &self,
        order_id: &OrderId,
        expected: &[(System, String)],
    ) -> Result<Vec<ConsumerProgress>, StorageError> {
        let mut progress: Vec<ConsumerProgress> = Vec::new();
        let entry = |progress: &mut Vec<ConsumerProgress>, system: System, event_id: &str| {
            let group = system.consumer_group();
            match progress
                .iter()
                .position(|p| p.group == group && p.event_id == event_id)
            {
                Some(i) => i,
                None => {
                    progress.push(ConsumerProgress {
                        group: group.to_owned(),
                        event_id: event_id.to_owned(),
                        state: FanoutState::Pending,
                        applied_at: None,
                        attempts: 0,
                        last_error: None,
                        updated_at: None,
                    });
                    progress.len() - 1
                }
            }
        };
        for (system, event_id) in expected {
            entry(&mut progress, *system, event_id);
        }
        for system in System::ALL {
            let pool = self.system_pool(system);
            let failures = sqlx::query(
                "SELECT event_id, attempts, last_error, dead_lettered, updated_at FROM consumer_failures \
                 WHERE consumer_group = $1 AND order_id = $2",
            )
            .bind(system.consumer_group())
            .bind(order_id.as_str())
            .fetch_all(pool)
            .await
            .map_err(storage)?;
            for row in &failures {
                let event_id: String = row.try_get("event_id").map_err(storage)?;
                let i = entry(&mut progress, system, &event_id);
                let p = &mut progress[i];
                p.attempts = row.try_get("attempts").map_err(storage)?;
                p.last_error = row.try_get("last_error").map_err(storage)?;
                p.updated_at = row.try_get("updated_at").map_err(storage)?;
                if row.try_get::<i64, _>("dead_lettered").map_err(storage)? != 0 {
                    p.state = FanoutState::Failed;
                }
            }
            let applied = sqlx::query(
                "SELECT event_id, applied_at FROM inbox WHERE consumer_group = $1 AND order_id = $2",
            )
            .bind(system.consumer_group())
            .bind(order_id.as_str())
            .fetch_all(pool)
            .await
            .map_err(storage)?;
            for row in &applied {
                let event_id: String = row.try_get("event_id").map_err(storage)?;
                let i = entry(&mut progress, system, &event_id);
                let p = &mut progress[i];
                p.state = FanoutState::Done;
                p.applied_at = row.try_get("applied_at").map_err(storage)?;
                p.updated_at = p.applied_at;
            }
        }
        Ok(progress)
    }

    /// `(applied, dead-lettered)` events of one system.
    pub(crate) async fn system_counts(&self, system: System) -> Result<(i64, i64), StorageError> {
        let pool = self.system_pool(system);
        let group = system.consumer_group();
        let applied: i64 = sqlx::query("SELECT COUNT(*) AS n FROM inbox WHERE consumer_group = $1")
            .bind(group)
            .fetch_one(pool)
            .await
            .and_then(|r| r.try_get("n"))
            .map_err(storage)?;
        let failed: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM consumer_failures f \
             WHERE f.consumer_group = $1 AND f.dead_lettered = 1 AND NOT EXISTS \
               (SELECT 1 FROM inbox i WHERE i.consumer_group = f.consumer_group AND i.event_id = f.event_id)",
        )
        .bind(group)
        .fetch_one(pool)
        .await
        .and_then(|r| r.try_get("n"))
        .map_err(storage)?;
        Ok((applied, failed))
    }

    /// How many effect rows each order has in `system` (checkers and tests).
    pub async fn effect_counts_by_order(
        &self,
        system: System,
    ) -> Result<HashMap<String, i64>, StorageError> {
        let table = match system {
            System::Credit => "credit_points",
            System::Marketing => "marketing_coupons",
            System::Push => "push_sms",
            System::Warehouse => "warehouse_shipments",
        };
        let sql = format!("SELECT order_id, COUNT(*) AS n FROM {table} GROUP BY order_id");
        let rows = sqlx::query(&sql)
            .fetch_all(self.system_pool(system))
            .await
            .map_err(storage)?;
        rows.iter()
            .map(|r| Ok((r.try_get("order_id")?, r.try_get("n")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(storage)
    }

    /// Points, coupons, SMS and shipments of one user, newest first.
    pub async fn user_activity(&self, user: &UserId) -> Result<UserActivity, StorageError> {
        let by_user = |sql: &'static str, system: System| {
            sqlx::query(sql)
                .bind(user.as_str())
                .fetch_all(self.system_pool(system))
        };
        let points = by_user(
            "SELECT order_id, points, created_at FROM ( \
               SELECT order_id, points, created_at FROM credit_points WHERE user_id = $1 \
               UNION ALL \
               SELECT order_id, -points AS points, created_at FROM credit_point_reversals WHERE user_id = $1 \
             ) AS entries ORDER BY created_at DESC",
            System::Credit,
        )
        .await
        .map_err(storage)?
        .iter()
        .map(|r| {
            Ok(PointsEntry {
                order_id: order_id_of(r)?,
                points: r.try_get("points").map_err(storage)?,
                created_at: r.try_get("created_at").map_err(storage)?,
            })
        })
        .collect::<Result<Vec<_>, StorageError>>()?;
        let coupons = by_user(
            "SELECT code, order_id, value, status, created_at FROM marketing_coupons WHERE user_id = $1 ORDER BY created_at DESC",
            System::Marketing,
        )
        .await
        .map_err(storage)?
        .iter()
        .map(|r| {
            Ok(Coupon {
                code: r.try_get("code").map_err(storage)?,
                order_id: order_id_of(r)?,
                value: Amount::parse(r.try_get("value").map_err(storage)?)
                    .map_err(|e| StorageError(e.to_string()))?,
                status: r.try_get("status").map_err(storage)?,
                created_at: r.try_get("created_at").map_err(storage)?,
            })
        })
        .collect::<Result<Vec<_>, StorageError>>()?;
        let sms = by_user(
            "SELECT order_id, text, provider_ref, created_at FROM ( \
               SELECT order_id, text, provider_ref, created_at FROM push_sms WHERE user_id = $1 \
               UNION ALL \
               SELECT order_id, text, provider_ref, created_at FROM push_refund_sms WHERE user_id = $1 \
             ) AS messages ORDER BY created_at DESC",
            System::Push,
        )
        .await
        .map_err(storage)?
        .iter()
        .map(|r| {
            Ok(SmsMessage {
                order_id: order_id_of(r)?,
                text: r.try_get("text").map_err(storage)?,
                provider_ref: r.try_get("provider_ref").map_err(storage)?,
                created_at: r.try_get("created_at").map_err(storage)?,
            })
        })
        .collect::<Result<Vec<_>, StorageError>>()?;
        let shipments = by_user(
            "SELECT order_id, tracking_no, status, created_at FROM warehouse_shipments WHERE user_id = $1 ORDER BY id DESC",
            System::Warehouse,
        )
        .await
        .map_err(storage)?
        .iter()
        .map(|r| {
            Ok(Shipment {
                order_id: order_id_of(r)?,
                tracking_no: r.try_get("tracking_no").map_err(storage)?,
                status: r.try_get("status").map_err(storage)?,
                created_at: r.try_get("created_at").map_err(storage)?,
            })
        })
        .collect::<Result<Vec<_>, StorageError>>()?;
        Ok(UserActivity {
            user_id: user.clone(),
            points_total: points.iter().map(|p| p.points).sum(),
            points,
            coupons,
            sms,
            shipments,
        })
    }
}
