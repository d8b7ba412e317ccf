//! Read-only queries for auditors: the fault suite's invariant checker and
//! the `ordermq dlq` operator tool.
//!
//! They read whole tables at once and are meant for a quiet database (after a
//! run, or while an operator looks at a handful of failures), never for the
//! request path. Nothing here writes.
//!
//! Operation module: it imports only the base and the handle.

use std::collections::HashMap;

use ordermq_domain::System;
use ordermq_domain::feed::{FeedLine, OrderState};
use ordermq_domain::ports::StorageError;
use sqlx::Row;

use crate::dialect;
use crate::fail::{get, storage};
use crate::sql::{Backend, placeholders};
use crate::store::Store;

/// An order as the checker sees it: status, the payment applied, its lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditOrder {
    pub order_id: String,
    pub status: String,
    pub payment_id: Option<String>,
    pub amount: i64,
    /// `(sku, quantity)`.
    pub lines: Vec<(String, i64)>,
}

/// A row of `payments`: every distinct payment the gateway notified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPayment {
    pub payment_id: String,
    pub order_id: String,
    pub amount: i64,
    /// `APPLIED` or `REFUND_REQUIRED`.
    pub outcome: String,
}

/// A row of `refunds`: a shopper's refund, or one ordermq made for a
/// payment it could not apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRefund {
    pub refund_id: String,
    pub order_id: String,
    /// `REQUESTED`, `SUCCEEDED` or `FAILED`.
    pub status: String,
    pub full_refund: bool,
    /// Whether the downstream systems take their effects back (a shopper's
    /// refund of a paid order; not a payment owed back).
    pub reverse_effects: bool,
}

/// What the downstream systems took back for refunds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditReversals {
    /// refund id → points reversals (credit).
    pub points: HashMap<String, i64>,
    /// refund id → refund SMS (push).
    pub sms: HashMap<String, i64>,
    /// Orders whose coupon was revoked (marketing).
    pub revoked_coupons: std::collections::HashSet<String>,
    /// Orders whose shipment was cancelled (warehouse).
    pub cancelled_shipments: std::collections::HashSet<String>,
}

impl AuditReversals {
    /// Adds `other`'s reversals (another system's part) to these.
    pub fn extend(&mut self, other: AuditReversals) {
        self.points.extend(other.points);
        self.sms.extend(other.sms);
        self.revoked_coupons.extend(other.revoked_coupons);
        self.cancelled_shipments.extend(other.cancelled_shipments);
    }
}

/// What carriers reported and what the warehouse did with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditCarrier {
    /// order id → the carrier statuses recorded (`carrier_events`:
    /// `PICKED_UP`, `IN_TRANSIT`, `DELIVERED`).
    pub events: HashMap<String, Vec<String>>,
    /// order id → its shipment's status in the warehouse (`CREATED`,
    /// `PICKED_UP`, `IN_TRANSIT`, `DELIVERED`, `CANCELLED`).
    pub shipments: HashMap<String, String>,
    /// `ShipmentUpdated` event id → warehouse inbox rows for it.
    pub applied: HashMap<String, i64>,
}

/// A product's stock counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditStock {
    pub sku: String,
    pub on_hand: i64,
    pub reserved: i64,
}

/// The last recorded failure of one event in one consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureRecord {
    pub event_id: String,
    pub order_id: String,
    pub attempts: i64,
    pub last_error: String,
    pub dead_lettered: bool,
    pub updated_at: i64,
}

/// What one system recorded for each order: effect rows and inbox rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemAudit {
    /// order id → effect rows (points entries, coupons, SMS, shipments).
    pub effects: HashMap<String, i64>,
    /// order id → inbox rows of this system's group for the order's
    /// `OrderPaid` (later events — refunds, carrier updates — have their own).
    pub inbox: HashMap<String, i64>,
    /// Events whose delivery failed and were not applied since.
    pub failures: Vec<FailureRecord>,
}

impl Store {
    /// A page of orders as the change feed describes them, with their
    /// `order_seq`: those after `after` (by order id) that have a feed
    /// (`order_seq > 0`; orders older than the feed have none until they
    /// change), at most `limit`, by order id. `ordermq feed verify` reads
    /// the order database through it.
    pub async fn feed_states(
        &self,
        after: &str,
        limit: i64,
    ) -> Result<Vec<(OrderState, i64)>, StorageError> {
        self.feed_states_since(after, i64::MIN, limit).await
    }

    /// As [`Self::feed_states`], only the orders changed at or after
    /// `since` (epoch ms, by `updated_at`, which every change moves), each
    /// page read in one transaction so an order's lines and its `order_seq`
    /// agree (PostgreSQL: `REPEATABLE READ`; SQLite and InnoDB read one
    /// snapshot per transaction anyway). `ordermq feed snapshot` pages
    /// through it: never more than `limit` orders in memory.
    pub async fn feed_states_since(
        &self,
        after: &str,
        since: i64,
        limit: i64,
    ) -> Result<Vec<(OrderState, i64)>, StorageError> {
        let mut tx = self.orders.begin().await.map_err(storage)?;
        if self.backend == Backend::Postgres {
            dialect::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .execute(&mut *tx)
                .await
                .map_err(storage)?;
        }
        let rows = dialect::query(
            "SELECT order_id, user_id, status, amount, payment_id, created_at, updated_at, order_seq \
             FROM orders WHERE order_id > $1 AND order_seq > 0 AND updated_at >= $2 \
             ORDER BY order_id LIMIT $3",
        )
        .bind(after)
        .bind(since)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await
        .map_err(storage)?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT order_id, sku, quantity, unit_price, refunded FROM order_lines \
             WHERE order_id IN ({}) ORDER BY order_id, sku",
            placeholders(0, rows.len())
        );
        let mut query = dialect::query(&sql);
        let mut ids = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = get(row, "order_id")?;
            query = query.bind(id.clone());
            ids.push(id);
        }
        let mut lines: HashMap<String, Vec<FeedLine>> = HashMap::new();
        let line_rows = query.fetch_all(&mut *tx).await.map_err(storage)?;
        tx.commit().await.map_err(storage)?;
        for row in line_rows {
            lines
                .entry(get(&row, "order_id")?)
                .or_default()
                .push(FeedLine {
                    sku: get(&row, "sku")?,
                    quantity: row.try_get("quantity").map_err(storage)?,
                    unit_price: row.try_get("unit_price").map_err(storage)?,
                    refunded: row.try_get("refunded").map_err(storage)?,
                });
        }
        rows.iter()
            .zip(ids)
            .map(|(row, order_id)| {
                let state = OrderState {
                    lines: lines.remove(&order_id).unwrap_or_default(),
                    order_id,
                    user_id: get(row, "user_id")?,
                    status: get(row, "status")?,
                    amount: row.try_get("amount").map_err(storage)?,
                    payment_id: get(row, "payment_id")?,
                    created_at: row.try_get("created_at").map_err(storage)?,
                    updated_at: row.try_get("updated_at").map_err(storage)?,
                };
                Ok((state, row.try_get("order_seq").map_err(storage)?))
            })
            .collect()
    }

    /// Every order with its lines.
    pub async fn audit_orders(&self) -> Result<Vec<AuditOrder>, StorageError> {
        let mut lines: HashMap<String, Vec<(String, i64)>> = HashMap::new();
        for row in
            dialect::query("SELECT order_id, sku, quantity FROM order_lines ORDER BY order_id, sku")
                .fetch_all(&self.orders)
                .await
                .map_err(storage)?
        {
            lines
                .entry(row.try_get("order_id").map_err(storage)?)
                .or_default()
                .push((
                    row.try_get("sku").map_err(storage)?,
                    row.try_get("quantity").map_err(storage)?,
                ));
        }
        dialect::query("SELECT order_id, status, payment_id, amount FROM orders ORDER BY order_id")
            .fetch_all(&self.orders)
            .await
            .map_err(storage)?
            .iter()
            .map(|row| {
                let order_id: String = row.try_get("order_id").map_err(storage)?;
                Ok(AuditOrder {
                    lines: lines.remove(&order_id).unwrap_or_default(),
                    order_id,
                    status: row.try_get("status").map_err(storage)?,
                    payment_id: row.try_get("payment_id").map_err(storage)?,
                    amount: row.try_get("amount").map_err(storage)?,
                })
            })
            .collect()
    }

    /// Every payment notified, applied or owed back.
    pub async fn audit_payments(&self) -> Result<Vec<AuditPayment>, StorageError> {
        dialect::query(
            "SELECT payment_id, order_id, amount, outcome FROM payments ORDER BY order_id, payment_id",
        )
        .fetch_all(&self.orders)
        .await
        .map_err(storage)?
        .iter()
        .map(|row| {
            Ok(AuditPayment {
                payment_id: row.try_get("payment_id").map_err(storage)?,
                order_id: row.try_get("order_id").map_err(storage)?,
                amount: row.try_get("amount").map_err(storage)?,
                outcome: row.try_get("outcome").map_err(storage)?,
            })
        })
        .collect()
    }

    /// Every order's status history, oldest transition first: order id →
    /// `(from, to)` (`from` is `None` for the creation).
    pub async fn audit_history(
        &self,
    ) -> Result<HashMap<String, Vec<(Option<String>, String)>>, StorageError> {
        let mut history: HashMap<String, Vec<(Option<String>, String)>> = HashMap::new();
        for row in sqlx::query(
            "SELECT order_id, from_status, to_status FROM order_history ORDER BY order_id, id",
        )
        .fetch_all(&self.orders)
        .await
        .map_err(storage)?
        {
            history
                .entry(row.try_get("order_id").map_err(storage)?)
                .or_default()
                .push((
                    row.try_get("from_status").map_err(storage)?,
                    row.try_get("to_status").map_err(storage)?,
                ));
        }
        Ok(history)
    }

    /// Every refund, by order.
    pub async fn audit_refunds(&self) -> Result<Vec<AuditRefund>, StorageError> {
        sqlx::query(
            "SELECT refund_id, order_id, status, full_refund, reverse_effects FROM refunds \
             ORDER BY order_id, refund_id",
        )
        .fetch_all(&self.orders)
        .await
        .map_err(storage)?
        .iter()
        .map(|row| {
            Ok(AuditRefund {
                refund_id: row.try_get("refund_id").map_err(storage)?,
                order_id: row.try_get("order_id").map_err(storage)?,
                status: row.try_get("status").map_err(storage)?,
                full_refund: row.try_get::<i64, _>("full_refund").map_err(storage)? != 0,
                reverse_effects: row.try_get::<i64, _>("reverse_effects").map_err(storage)? != 0,
            })
        })
        .collect()
    }

    /// What each downstream system took back for refunds (every system's
    /// part of [`Store::audit_reversals_of`]).
    pub async fn audit_reversals(&self) -> Result<AuditReversals, StorageError> {
        let mut all = AuditReversals::default();
        for system in System::ALL {
            all.extend(self.audit_reversals_of(system).await?);
        }
        Ok(all)
    }

    /// What `system` took back for refunds, from its database alone: its
    /// part of [`AuditReversals`], the others' parts empty. A store of that
    /// system only ([`Databases::System`](crate::Databases::System)) can
    /// answer it.
    pub async fn audit_reversals_of(&self, system: System) -> Result<AuditReversals, StorageError> {
        let sql = match system {
            System::Credit => {
                "SELECT refund_id AS k, COUNT(*) AS n FROM credit_point_reversals GROUP BY refund_id"
            }
            System::Push => {
                "SELECT refund_id AS k, COUNT(*) AS n FROM push_refund_sms GROUP BY refund_id"
            }
            System::Marketing => {
                "SELECT order_id AS k, COUNT(*) AS n FROM marketing_coupons \
                 WHERE status = 'REVOKED' GROUP BY order_id"
            }
            System::Warehouse => {
                "SELECT order_id AS k, COUNT(*) AS n FROM warehouse_shipments \
                 WHERE status = 'CANCELLED' GROUP BY order_id"
            }
        };
        let counts = sqlx::query(sql)
            .fetch_all(self.system_pool(system))
            .await
            .map_err(storage)?
            .iter()
            .map(|r| Ok((r.try_get("k")?, r.try_get("n")?)))
            .collect::<Result<HashMap<String, i64>, sqlx::Error>>()
            .map_err(storage)?;
        let mut part = AuditReversals::default();
        match system {
            System::Credit => part.points = counts,
            System::Push => part.sms = counts,
            System::Marketing => part.revoked_coupons = counts.into_keys().collect(),
            System::Warehouse => part.cancelled_shipments = counts.into_keys().collect(),
        }
        Ok(part)
    }

    /// Carrier events, the warehouse's shipments and its `ShipmentUpdated`
    /// inbox rows: [`Store::audit_carrier_events`] beside
    /// [`Store::audit_warehouse_carrier`].
    pub async fn audit_carrier(&self) -> Result<AuditCarrier, StorageError> {
        Ok(AuditCarrier {
            events: self.audit_carrier_events().await?,
            ..self.audit_warehouse_carrier().await?
        })
    }

    /// order id → the carrier statuses the order service recorded, from the
    /// order database.
    pub async fn audit_carrier_events(&self) -> Result<HashMap<String, Vec<String>>, StorageError> {
        let mut events: HashMap<String, Vec<String>> = HashMap::new();
        for row in sqlx::query(
            "SELECT order_id, status FROM carrier_events ORDER BY order_id, received_at, status",
        )
        .fetch_all(&self.orders)
        .await
        .map_err(storage)?
        {
            events
                .entry(row.try_get("order_id").map_err(storage)?)
                .or_default()
                .push(row.try_get("status").map_err(storage)?);
        }
        Ok(events)
    }

    /// The warehouse's shipments and its `ShipmentUpdated` inbox rows, from
    /// the warehouse's database alone (`events` left empty).
    pub async fn audit_warehouse_carrier(&self) -> Result<AuditCarrier, StorageError> {
        let warehouse = self.system_pool(System::Warehouse);
        let shipments = sqlx::query("SELECT order_id, status FROM warehouse_shipments")
            .fetch_all(warehouse)
            .await
            .map_err(storage)?
            .iter()
            .map(|r| Ok((r.try_get("order_id")?, r.try_get("status")?)))
            .collect::<Result<HashMap<String, String>, sqlx::Error>>()
            .map_err(storage)?;
        let applied = dialect::query(
            "SELECT event_id, COUNT(*) AS n FROM inbox \
             WHERE consumer_group = $1 AND event_id LIKE 'ShipmentUpdated:%' GROUP BY event_id",
        )
        .bind(System::Warehouse.consumer_group())
        .fetch_all(warehouse)
        .await
        .map_err(storage)?
        .iter()
        .map(|r| Ok((r.try_get("event_id")?, r.try_get("n")?)))
        .collect::<Result<HashMap<String, i64>, sqlx::Error>>()
        .map_err(storage)?;
        Ok(AuditCarrier {
            events: HashMap::new(),
            shipments,
            applied,
        })
    }

    /// Every product's `on_hand` and `reserved`.
    pub async fn audit_stock(&self) -> Result<Vec<AuditStock>, StorageError> {
        dialect::query("SELECT sku, on_hand, reserved FROM products ORDER BY sku")
            .fetch_all(&self.orders)
            .await
            .map_err(storage)?
            .iter()
            .map(|row| {
                Ok(AuditStock {
                    sku: row.try_get("sku").map_err(storage)?,
                    on_hand: row.try_get("on_hand").map_err(storage)?,
                    reserved: row.try_get("reserved").map_err(storage)?,
                })
            })
            .collect()
    }

    /// Effect rows, inbox rows and open failures of one system.
    pub async fn audit_system(&self, system: System) -> Result<SystemAudit, StorageError> {
        let effects = self.effect_counts_by_order(system).await?;
        let pool = self.system_pool(system);
        let inbox = dialect::query(
            "SELECT order_id, COUNT(*) AS n FROM inbox \
             WHERE consumer_group = $1 AND event_id LIKE 'OrderPaid:%' GROUP BY order_id",
        )
        .bind(system.consumer_group())
        .fetch_all(pool)
        .await
        .map_err(storage)?
        .iter()
        .map(|r| Ok((r.try_get("order_id")?, r.try_get("n")?)))
        .collect::<Result<HashMap<String, i64>, sqlx::Error>>()
        .map_err(storage)?;
        Ok(SystemAudit {
            effects,
            inbox,
            failures: self.failures(system).await?,
        })
    }

    /// The recorded failures of one system's group, oldest first.
    pub async fn failures(&self, system: System) -> Result<Vec<FailureRecord>, StorageError> {
        dialect::query(
            "SELECT event_id, order_id, attempts, last_error, dead_lettered, updated_at \
             FROM consumer_failures WHERE consumer_group = $1 ORDER BY updated_at, event_id",
        )
        .bind(system.consumer_group())
        .fetch_all(self.system_pool(system))
        .await
        .map_err(storage)?
        .iter()
        .map(|r| {
            Ok(FailureRecord {
                event_id: r.try_get("event_id").map_err(storage)?,
                order_id: r.try_get("order_id").map_err(storage)?,
                attempts: r.try_get("attempts").map_err(storage)?,
                last_error: get(r, "last_error")?,
                dead_lettered: r.try_get::<i64, _>("dead_lettered").map_err(storage)? != 0,
                updated_at: r.try_get("updated_at").map_err(storage)?,
            })
        })
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use ordermq_domain::{Effect, OrderId, UserId};

    use super::*;
    use crate::StoreOptions;

    #[tokio::test]
    async fn a_failure_after_the_event_was_applied_is_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/orders.db", dir.path().display());
        let store = Store::open(&url, &StoreOptions::default()).await.unwrap();
        let shipment = Effect::Shipment {
            user_id: UserId::parse("u1").unwrap(),
            order_id: OrderId::parse("O1").unwrap(),
            tracking_no: "T1".into(),
        };
        // One delivery applies the event; a duplicate racing it fails at the
        // carrier on its last attempt and reports the failure afterwards.
        store
            .apply_effect("OrderPaid:O1", "m1", &shipment, 1)
            .await
            .unwrap();
        store
            .record_failure(
                System::Warehouse,
                "OrderPaid:O1",
                "O1",
                17,
                "carrier down",
                true,
                2,
            )
            .await
            .unwrap();
        assert!(store.failures(System::Warehouse).await.unwrap().is_empty());
        assert_eq!(
            store.system_counts(System::Warehouse).await.unwrap(),
            (1, 0)
        );

        // A failure of an event not applied is recorded, and applying clears it.
        store
            .record_failure(
                System::Warehouse,
                "OrderPaid:O2",
                "O2",
                1,
                "carrier down",
                false,
                3,
            )
            .await
            .unwrap();
        let failures = store.failures(System::Warehouse).await.unwrap();
        assert_eq!(failures.len(), 1);
        assert_eq!(
            (
                failures[0].order_id.as_str(),
                failures[0].last_error.as_str(),
                failures[0].dead_lettered
            ),
            ("O2", "carrier down", false)
        );
        let audit = store.audit_system(System::Warehouse).await.unwrap();
        assert_eq!(audit.effects.get("O1"), Some(&1));
        assert_eq!(audit.inbox.get("O1"), Some(&1));
        store.close().await;
    }
}
