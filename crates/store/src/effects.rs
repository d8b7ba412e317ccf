//! Each downstream system's effect, recorded exactly once.
//!
//! RocketMQ delivers at least once, so a message can arrive twice (a lost
//! ack, a rebalance, a crash before the offset was committed). The effect row
//! and an inbox row keyed by (consumer group, event id) commit in one
//! transaction: the second delivery finds the inbox row and changes nothing.
//! A UNIQUE order id on every effect table is a second, independent guard.

use std::collections::HashMap;

use ordermq_domain::ports::StorageError;
use ordermq_domain::view::{Coupon, PointsEntry, Shipment, SmsMessage, UserActivity};
use ordermq_domain::{Amount, Effect, FanoutState, OrderId, System, UserId};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::Store;

/// Whether a delivery changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The effect was recorded by this call.
    Now,
    /// The inbox already had this event: a redelivery, nothing changed.
    Already,
}

fn storage(e: sqlx::Error) -> StorageError {
    StorageError(e.to_string())
}

fn system_of(effect: &Effect) -> System {
    match effect {
        Effect::Points { .. } => System::Credit,
        Effect::Coupon { .. } => System::Marketing,
        Effect::Sms { .. } => System::Push,
        Effect::Shipment { .. } => System::Warehouse,
    }
}

fn order_id_of_effect(effect: &Effect) -> &str {
    match effect {
        Effect::Points { order_id, .. }
        | Effect::Coupon { order_id, .. }
        | Effect::Sms { order_id, .. }
        | Effect::Shipment { order_id, .. } => order_id.as_str(),
    }
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
    let insert = match effect {
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
            "INSERT INTO warehouse_shipments (user_id, order_id, tracking_no, status, created_at) VALUES ($1, $2, $3, 'CREATED', $4)",
        )
        .bind(user_id.as_str())
        .bind(order_id.as_str())
        .bind(tracking_no.as_str())
        .bind(now),
    };
    insert.execute(conn).await?;
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
        let system = system_of(&first.effect);
        if records.iter().any(|r| system_of(&r.effect) != system) {
            return Err(StorageError(
                "a batch of effects must belong to one system".into(),
            ));
        }
        let group = system.consumer_group();
        let mut tx = self.system_pool(system).begin().await.map_err(storage)?;
        let mut outcomes = Vec::with_capacity(records.len());
        for record in records {
            let order_id = order_id_of_effect(&record.effect);
            let fresh = sqlx::query(
                "INSERT INTO inbox (consumer_group, event_id, order_id, msg_id, applied_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (consumer_group, event_id) DO NOTHING",
            )
            .bind(group)
            .bind(record.event_id.as_str())
            .bind(order_id)
            .bind(record.msg_id.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(storage)?
            .rows_affected()
                == 1;
            if !fresh {
                outcomes.push(Applied::Already);
                continue;
            }
            insert_effect(&mut tx, &record.effect, now)
                .await
                .map_err(storage)?;
            outcomes.push(Applied::Now);
        }
        // Applied now, so no longer failed: one statement for the whole batch
        // (every statement is a round trip to the database's worker thread).
        for chunk in records.chunks(200) {
            let sql = format!(
                "DELETE FROM consumer_failures WHERE consumer_group = $1 AND event_id IN ({})",
                crate::placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(&sql).bind(group);
            for record in chunk {
                query = query.bind(record.event_id.as_str());
            }
            query.execute(&mut *tx).await.map_err(storage)?;
        }
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

    /// When `system` applied each order's events: order id → latest applied_at
    /// (benchmarks measure end-to-end time with it).
    pub async fn applied_times(
        &self,
        system: System,
    ) -> Result<HashMap<String, i64>, StorageError> {
        let rows = sqlx::query(
            "SELECT order_id, MAX(applied_at) AS at FROM inbox WHERE consumer_group = $1 GROUP BY order_id",
        )
        .bind(system.consumer_group())
        .fetch_all(self.system_pool(system))
        .await
        .map_err(storage)?;
        rows.iter()
            .map(|r| Ok((r.try_get("order_id")?, r.try_get("at")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(storage)
    }

    /// Remembers that a delivery failed, and whether the broker is giving up on it
    /// (the message goes to the group's dead-letter queue).
    ///
    /// Nothing is recorded if the group has applied the event already: a
    /// redelivered duplicate failing after another delivery applied it must not
    /// leave a failure behind (it would count as dead-lettered in the stats and
    /// `ordermq dlq list` forever). Applying deletes the failure in the same
    /// transaction, so whichever of the two commits first, none is left.
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

    pub(crate) async fn fanout_state(
        &self,
        system: System,
        event_id: &str,
    ) -> Result<FanoutState, StorageError> {
        if self.is_applied(system, event_id).await? {
            return Ok(FanoutState::Done);
        }
        let dead = sqlx::query(
            "SELECT 1 AS one FROM consumer_failures \
             WHERE consumer_group = $1 AND event_id = $2 AND dead_lettered = 1",
        )
        .bind(system.consumer_group())
        .bind(event_id)
        .fetch_optional(self.system_pool(system))
        .await
        .map_err(storage)?;
        Ok(if dead.is_some() {
            FanoutState::Failed
        } else {
            FanoutState::Pending
        })
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
            "SELECT COUNT(*) AS n FROM consumer_failures WHERE consumer_group = $1 AND dead_lettered = 1",
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
            "SELECT order_id, points, created_at FROM credit_points WHERE user_id = $1 ORDER BY id DESC",
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
            "SELECT code, order_id, value, created_at FROM marketing_coupons WHERE user_id = $1 ORDER BY created_at DESC",
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
                created_at: r.try_get("created_at").map_err(storage)?,
            })
        })
        .collect::<Result<Vec<_>, StorageError>>()?;
        let sms = by_user(
            "SELECT order_id, text, provider_ref, created_at FROM push_sms WHERE user_id = $1 ORDER BY id DESC",
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
