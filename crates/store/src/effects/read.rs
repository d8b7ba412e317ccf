//! What the systems' databases say: whether an event was applied, each
//! group's progress with an order, counts for the dashboard and checkers,
//! and a user's activity. Nothing here writes.
//!
//! Operation module: it imports only the base and the handle.

use std::collections::HashMap;

use futures_util::TryStreamExt;
use ordermq_domain::ports::StorageError;
use ordermq_domain::view::{
    ConsumerProgress, Coupon, PointsEntry, Shipment, SmsMessage, UserActivity,
};
use ordermq_domain::{Amount, FanoutState, OrderId, System, UserId};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::dialect;
use crate::fail::{corrupt, get, storage};
use crate::sql::{Backend, placeholders};
use crate::store::Store;

fn order_id_of(row: &AnyRow) -> Result<OrderId, StorageError> {
    let raw: String = row.try_get("order_id").map_err(storage)?;
    OrderId::parse(&raw).map_err(|_| corrupt("order id", &raw))
}

impl Store {
    /// Whether `system` already applied `event_id` (lets a consumer skip a
    /// third-party call on redelivery).
    pub async fn is_applied(&self, system: System, event_id: &str) -> Result<bool, StorageError> {
        let row = dialect::query(
            "SELECT 1 AS one FROM inbox WHERE consumer_group = $1 AND event_id = $2",
        )
        .bind(system.consumer_group())
        .bind(event_id)
        .fetch_optional(self.system_pool(system))
        .await
        .map_err(storage)?;
        Ok(row.is_some())
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
                placeholders(1, chunk.len())
            );
            let mut query = dialect::query(&sql).bind(system.consumer_group());
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
        let sql = dialect::in_order(
            self.backend == Backend::Mysql,
            "SELECT order_id, MAX(applied_at) AS at FROM inbox \
             WHERE consumer_group = $1 AND applied_at >= $2 GROUP BY order_id",
        );
        let mut rows = sqlx::query(&sql)
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
                        receipt_at: None,
                    });
                    progress.len() - 1
                }
            }
        };
        for (system, event_id) in expected {
            entry(&mut progress, *system, event_id);
        }
        // A system whose database is elsewhere is known by its receipts
        // (the order view adds them): pending here until one comes.
        for system in System::ALL.into_iter().filter(|s| self.holds(*s)) {
            let pool = self.system_pool(system);
            let failures = dialect::query(
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
                p.last_error = get(row, "last_error")?;
                p.updated_at = row.try_get("updated_at").map_err(storage)?;
                if row.try_get::<i64, _>("dead_lettered").map_err(storage)? != 0 {
                    p.state = FanoutState::Failed;
                }
            }
            let applied = dialect::query(
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
    /// A system whose database is elsewhere: the events its receipts name
    /// (its dead letters are its own to count).
    pub(crate) async fn system_counts(&self, system: System) -> Result<(i64, i64), StorageError> {
        let group = system.consumer_group();
        if !self.holds(system) {
            let receipted: i64 = dialect::query(
                "SELECT COUNT(*) AS n FROM event_receipts WHERE consumer_group = $1",
            )
            .bind(group)
            .fetch_one(&self.receipts)
            .await
            .and_then(|r| r.try_get("n"))
            .map_err(storage)?;
            return Ok((receipted, 0));
        }
        let pool = self.system_pool(system);
        let applied: i64 =
            dialect::query("SELECT COUNT(*) AS n FROM inbox WHERE consumer_group = $1")
                .bind(group)
                .fetch_one(pool)
                .await
                .and_then(|r| r.try_get("n"))
                .map_err(storage)?;
        let failed: i64 = dialect::query(
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
        let rows = dialect::query(&sql)
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
        // A system whose database is elsewhere answers for itself (`role`).
        let by_user = |sql: &'static str, system: System| async move {
            if !self.holds(system) {
                return Ok(Vec::new());
            }
            dialect::query(sql)
                .bind(user.as_str())
                .fetch_all(self.system_pool(system))
                .await
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
                    .map_err(StorageError::corrupt)?,
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
                text: get(r, "text")?,
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
            systems: System::ALL.into_iter().filter(|s| self.holds(*s)).collect(),
        })
    }
}
