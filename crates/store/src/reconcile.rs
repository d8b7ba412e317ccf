//! Receipts and reconciliation in the order database: the groups' receipts
//! recorded once each, the sent outbox rows not yet settled (oldest first),
//! and the reconciler's two writes: settle a row every subscriber is done
//! with, or put it back for the relay.
//!
//! Why receipts rather than reading the systems' inboxes: the downstream
//! systems may run as their own processes with their own databases, and a
//! receipt travels the same way as the event (outbox, relay, broker, inbox),
//! so it survives the same faults and needs no access to their data.
//!
//! Operation module: it imports only the base, leaves and the handle.

use std::collections::HashMap;

use ordermq_domain::ports::StorageError;
use ordermq_domain::{OrderStatus, RefundStatus};

use crate::dialect;
use crate::fail::{get, storage};
use crate::sql::placeholders;
use crate::store::{Db, Store};

/// One group's receipt: it applied `event_id` at `applied_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub event_id: String,
    pub consumer_group: String,
    pub applied_at: i64,
}

/// A sent outbox row not yet settled: what the reconciler examines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentRow {
    pub id: i64,
    pub tag: String,
    pub key: String,
    pub event_id: String,
    pub body: String,
    pub deliver_at: Option<i64>,
    pub created_at: i64,
    pub sent_at: i64,
    /// How often the reconciler has put it back so far.
    pub republished: i64,
}

/// Unsettled sent rows sent at or before a time: how many, and the oldest's send time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Unsettled {
    pub rows: i64,
    pub oldest_sent_at: Option<i64>,
}

/// Rows per multi-row insert of receipts (at most 3 parameters each).
const RECEIPTS_PER_STATEMENT: usize = 200;

/// Event ids (or order ids) per `IN (…)` list.
const IN_LIST: usize = 400;

const SENT_COLUMNS: &str =
    "id, tag, msg_key, event_id, body, deliver_at, created_at, sent_at, republished";

fn sent_row(r: &sqlx::any::AnyRow) -> Result<SentRow, StorageError> {
    Ok(SentRow {
        id: get(r, "id")?,
        tag: get(r, "tag")?,
        key: get(r, "msg_key")?,
        event_id: get(r, "event_id")?,
        body: get(r, "body")?,
        deliver_at: get(r, "deliver_at")?,
        created_at: get(r, "created_at")?,
        sent_at: get(r, "sent_at")?,
        republished: get(r, "republished")?,
    })
}

impl Store {
    /// Records receipts, each (event, group) once: a receipt delivered or
    /// sent twice inserts nothing. Returns how many were new.
    ///
    /// # Errors
    ///
    /// The order database could not be written.
    pub async fn record_receipts(
        &self,
        receipts: &[Receipt],
        now: i64,
    ) -> Result<u64, StorageError> {
        self.insert_new(
            "event_receipts",
            &["event_id", "consumer_group", "applied_at"],
            "event_id, consumer_group",
            receipts,
            now,
            |query, r| {
                query
                    .bind(r.event_id.as_str())
                    .bind(r.consumer_group.as_str())
                    .bind(r.applied_at)
            },
        )
        .await
    }

    /// Records the tracking numbers the warehouse's receipts carried
    /// (`order id → tracking number`; see `Receipt::shipments`): the first
    /// one of each order stays (a receipt delivered twice changes nothing).
    ///
    /// # Errors
    ///
    /// The receipts' database could not be written.
    pub async fn record_shipments(
        &self,
        shipments: &[(String, String)],
        now: i64,
    ) -> Result<u64, StorageError> {
        self.insert_new(
            "shipment_receipts",
            &["order_id", "tracking_no"],
            "order_id",
            shipments,
            now,
            |query, (order_id, tracking_no)| {
                query.bind(order_id.as_str()).bind(tracking_no.as_str())
            },
        )
        .await
    }

    /// Inserts `rows` into `table` (`columns`, bound by `bind`, and
    /// `received_at` = `now`), a row whose `conflict` key is there already
    /// inserting nothing. One statement per [`RECEIPTS_PER_STATEMENT`] rows
    /// (each statement is a round trip), all in one write of the receipts'
    /// database: on SQLite a file (and a write lock) of its own, so this
    /// never holds up the order writer's payments. Returns how many were new.
    async fn insert_new<R>(
        &self,
        table: &str,
        columns: &[&str],
        conflict: &str,
        rows: &[R],
        now: i64,
        bind: impl for<'q> Fn(dialect::Query<'q>, &'q R) -> dialect::Query<'q>,
    ) -> Result<u64, StorageError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let width = columns.len();
        let mut tx = self.begin_write(Db::Receipts).await.map_err(storage)?;
        let mut inserted = 0;
        for chunk in rows.chunks(RECEIPTS_PER_STATEMENT) {
            let values = (0..chunk.len())
                .map(|i| {
                    let marks: Vec<String> = (0..width)
                        .map(|c| format!("${}", width * i + c + 2))
                        .collect();
                    format!("({}, $1)", marks.join(", "))
                })
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO {table} ({}, received_at) VALUES {values} \
                 ON CONFLICT ({conflict}) DO NOTHING",
                columns.join(", ")
            );
            let mut query = dialect::query(&sql).bind(now);
            for row in chunk {
                query = bind(query, row);
            }
            inserted += query
                .execute(&mut *tx)
                .await
                .map_err(storage)?
                .rows_affected();
        }
        tx.commit().await.map_err(storage)?;
        Ok(inserted)
    }

    /// The receipts of `event_ids`, in no particular order.
    ///
    /// # Errors
    ///
    /// The receipts' database could not be read.
    pub async fn receipts_of(&self, event_ids: &[String]) -> Result<Vec<Receipt>, StorageError> {
        let mut receipts = Vec::new();
        for chunk in event_ids.chunks(IN_LIST) {
            let sql = format!(
                "SELECT event_id, consumer_group, applied_at FROM event_receipts \
                 WHERE event_id IN ({})",
                placeholders(0, chunk.len())
            );
            let mut query = dialect::query(&sql);
            for id in chunk {
                query = query.bind(id.as_str());
            }
            for r in query.fetch_all(&self.receipts).await.map_err(storage)? {
                receipts.push(Receipt {
                    event_id: get(&r, "event_id")?,
                    consumer_group: get(&r, "consumer_group")?,
                    applied_at: get(&r, "applied_at")?,
                });
            }
        }
        Ok(receipts)
    }

    /// Up to `limit` sent rows not yet settled, sent at or before
    /// `sent_before`, after `(after_sent_at, after_id)` in send order
    /// (keyset paging: `(i64::MIN, 0)` starts at the oldest).
    ///
    /// # Errors
    ///
    /// The order database could not be read.
    pub async fn unsettled_outbox(
        &self,
        sent_before: i64,
        after: (i64, i64),
        limit: i64,
    ) -> Result<Vec<SentRow>, StorageError> {
        let sql = format!(
            "SELECT {SENT_COLUMNS} FROM outbox WHERE settled_at IS NULL AND sent_at IS NOT NULL \
             AND sent_at <= $1 AND (sent_at > $2 OR (sent_at = $2 AND id > $3)) \
             ORDER BY sent_at, id LIMIT $4"
        );
        dialect::query(&sql)
            .bind(sent_before)
            .bind(after.0)
            .bind(after.1)
            .bind(limit)
            .fetch_all(&self.orders)
            .await
            .map_err(storage)?
            .iter()
            .map(sent_row)
            .collect()
    }

    /// How many sent rows are unsettled since at least `sent_before`, and
    /// the oldest one's send time: the events some group still owes.
    ///
    /// # Errors
    ///
    /// The order database could not be read.
    pub async fn unsettled(&self, sent_before: i64) -> Result<Unsettled, StorageError> {
        let row = dialect::query(
            "SELECT COUNT(*) AS n, MIN(sent_at) AS oldest FROM outbox \
             WHERE settled_at IS NULL AND sent_at IS NOT NULL AND sent_at <= $1",
        )
        .bind(sent_before)
        .fetch_one(&self.orders)
        .await
        .map_err(storage)?;
        Ok(Unsettled {
            rows: get(&row, "n")?,
            oldest_sent_at: get(&row, "oldest")?,
        })
    }

    /// Unsettled rows the reconciler put back at least `republished` times
    /// (left for an operator), oldest first, at most `limit`.
    ///
    /// # Errors
    ///
    /// The order database could not be read.
    pub async fn missing_outbox(
        &self,
        republished: i64,
        limit: i64,
    ) -> Result<Vec<SentRow>, StorageError> {
        let sql = format!(
            "SELECT {SENT_COLUMNS} FROM outbox WHERE settled_at IS NULL AND sent_at IS NOT NULL \
             AND republished >= $1 ORDER BY sent_at, id LIMIT $2"
        );
        dialect::query(&sql)
            .bind(republished)
            .bind(limit)
            .fetch_all(&self.orders)
            .await
            .map_err(storage)?
            .iter()
            .map(sent_row)
            .collect()
    }

    /// Settles rows every subscriber is done with (the reconciler reads
    /// them no more), and puts `republish` back for the relay: unsent, due
    /// now, attempts from zero, `republished` one more. A row sent again
    /// meanwhile by nobody else is the only kind touched (`sent_at IS NOT
    /// NULL`). One transaction; returns how many were put back.
    ///
    /// # Errors
    ///
    /// The order database could not be written.
    pub async fn reconcile_rows(
        &self,
        settle: &[i64],
        republish: &[i64],
        now: i64,
    ) -> Result<u64, StorageError> {
        if settle.is_empty() && republish.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin_write(Db::Orders).await.map_err(storage)?;
        for chunk in settle.chunks(IN_LIST) {
            let sql = format!(
                "UPDATE outbox SET settled_at = $1 WHERE settled_at IS NULL AND id IN ({})",
                placeholders(1, chunk.len())
            );
            let mut query = dialect::query(&sql).bind(now);
            for id in chunk {
                query = query.bind(*id);
            }
            query.execute(&mut *tx).await.map_err(storage)?;
        }
        let mut put_back = 0;
        for chunk in republish.chunks(IN_LIST) {
            let sql = format!(
                "UPDATE outbox SET sent_at = NULL, attempts = 0, next_attempt_at = $1, \
                 lease_owner = NULL, last_error = NULL, republished = republished + 1 \
                 WHERE sent_at IS NOT NULL AND settled_at IS NULL AND id IN ({})",
                placeholders(1, chunk.len())
            );
            let mut query = dialect::query(&sql).bind(now);
            for id in chunk {
                query = query.bind(*id);
            }
            put_back += query
                .execute(&mut *tx)
                .await
                .map_err(storage)?
                .rows_affected();
        }
        tx.commit().await.map_err(storage)?;
        Ok(put_back)
    }

    /// The status of each of `order_ids` that exists.
    ///
    /// # Errors
    ///
    /// The order database could not be read, or holds a status it does not know.
    pub async fn order_statuses(
        &self,
        order_ids: &[String],
    ) -> Result<HashMap<String, OrderStatus>, StorageError> {
        let mut statuses = HashMap::new();
        for chunk in order_ids.chunks(IN_LIST) {
            let sql = format!(
                "SELECT order_id, status FROM orders WHERE order_id IN ({})",
                placeholders(0, chunk.len())
            );
            let mut query = dialect::query(&sql);
            for id in chunk {
                query = query.bind(id.as_str());
            }
            for r in query.fetch_all(&self.orders).await.map_err(storage)? {
                let raw: String = get(&r, "status")?;
                let status = OrderStatus::parse(&raw).ok_or_else(|| {
                    StorageError::corrupt(format!("unknown order status {raw:?}"))
                })?;
                statuses.insert(get(&r, "order_id")?, status);
            }
        }
        Ok(statuses)
    }

    /// The status of each of `refund_ids` that exists.
    ///
    /// # Errors
    ///
    /// The order database could not be read, or holds a status it does not know.
    pub async fn refund_statuses(
        &self,
        refund_ids: &[String],
    ) -> Result<HashMap<String, RefundStatus>, StorageError> {
        let mut statuses = HashMap::new();
        for chunk in refund_ids.chunks(IN_LIST) {
            let sql = format!(
                "SELECT refund_id, status FROM refunds WHERE refund_id IN ({})",
                placeholders(0, chunk.len())
            );
            let mut query = dialect::query(&sql);
            for id in chunk {
                query = query.bind(id.as_str());
            }
            for r in query.fetch_all(&self.orders).await.map_err(storage)? {
                let raw: String = get(&r, "status")?;
                let status = RefundStatus::parse(&raw).ok_or_else(|| {
                    StorageError::corrupt(format!("unknown refund status {raw:?}"))
                })?;
                statuses.insert(get(&r, "refund_id")?, status);
            }
        }
        Ok(statuses)
    }
}
