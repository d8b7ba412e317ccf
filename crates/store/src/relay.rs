//! The relay's writes outside a batch: confirming rows sent, giving failed
//! ones back for a later attempt or parking them after too many, the
//! operator's list and requeue of parked rows, and the backlog. Its round
//! (ack + claim) rides on the order database's batch (`batch`).
//!
//! The same relay drains each downstream system's receipts
//! (`receipt_outbox`, same columns): [`Outbox`] names which outbox a call
//! is about, and the receipts' round is a transaction of its own on the
//! system's database.
//!
//! Operation module: it imports only the base, leaves and the handle.

use std::collections::HashMap;

use ordermq_domain::ports::StorageError;
use ordermq_domain::{OutboxMessage, System};
use sqlx::Row;

use crate::dialect;
use crate::fail::{get, storage};
use crate::outbox::{claim_outbox_mysql, mark_sent_in};
use crate::sql::{self, Backend};
use crate::store::{Db, Store};

/// Which outbox the relay drains: the order database's events, or one
/// downstream system's receipts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outbox {
    /// `outbox` in the order database.
    Events,
    /// `receipt_outbox` in the system's database.
    Receipts(System),
}

impl Outbox {
    fn db(self) -> Db {
        match self {
            Self::Events => Db::Orders,
            Self::Receipts(system) => Db::System(system),
        }
    }

    /// Its marking statement, without the `WHERE`.
    fn mark_sent(self) -> &'static str {
        match self {
            Self::Events => sql::MARK_SENT,
            Self::Receipts(_) => sql::MARK_RECEIPTS_SENT,
        }
    }

    fn table(self) -> &'static str {
        match self {
            Self::Events => "outbox",
            Self::Receipts(_) => "receipt_outbox",
        }
    }

    /// A name for log lines: `orders`, or the system's consumer group.
    pub fn name(self) -> &'static str {
        match self {
            Self::Events => "orders",
            Self::Receipts(system) => system.consumer_group(),
        }
    }
}

/// A row the broker did not take: when to try again and why it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRetry {
    pub id: i64,
    pub error: String,
    pub retry_at: i64,
}

/// An outbox row parked after failing every attempt (`ordermq outbox parked`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedOutboxRow {
    pub id: i64,
    pub topic: String,
    pub tag: String,
    pub key: String,
    pub event_id: String,
    /// Claims it failed since it was written or last put back.
    pub attempts: i64,
    /// The broker's or the client's last answer.
    pub last_error: Option<String>,
    pub created_at: i64,
    pub parked_at: i64,
}

impl Store {
    /// Marks rows as confirmed stored by the broker.
    pub async fn mark_sent(&self, ids: &[i64], now: i64) -> Result<(), StorageError> {
        self.mark_sent_of(Outbox::Events, ids, now).await
    }

    /// [`Store::mark_sent`] for the rows of `outbox`.
    pub async fn mark_sent_of(
        &self,
        outbox: Outbox,
        ids: &[i64],
        now: i64,
    ) -> Result<(), StorageError> {
        let mut tx = self.begin_write(outbox.db()).await.map_err(storage)?;
        mark_sent_in(&mut tx, outbox.mark_sent(), ids, now)
            .await
            .map_err(storage)?;
        tx.commit().await.map_err(storage)
    }

    /// The relay's round on a system's receipts, in a transaction of its
    /// own: marks `acked` sent and claims up to `limit` due rows for
    /// `owner`, leased for `lease_ms`, oldest first.
    ///
    /// # Errors
    ///
    /// The system's database could not be written.
    pub async fn relay_receipts(
        &self,
        system: System,
        owner: &str,
        acked: &[i64],
        limit: usize,
        lease_ms: i64,
        now: i64,
    ) -> Result<Vec<OutboxMessage>, StorageError> {
        let mut tx = self
            .begin_write(Db::System(system))
            .await
            .map_err(storage)?;
        mark_sent_in(&mut tx, sql::MARK_RECEIPTS_SENT, acked, now)
            .await
            .map_err(storage)?;
        let claim = match self.backend {
            Backend::Postgres => sql::CLAIM_RECEIPTS_SKIP_LOCKED,
            Backend::Sqlite => sql::CLAIM_RECEIPTS,
            Backend::Mysql => {
                let claimed = claim_outbox_mysql(
                    &mut tx,
                    "receipt_outbox",
                    owner,
                    limit,
                    now + lease_ms,
                    now,
                )
                .await
                .map_err(storage)?;
                tx.commit().await.map_err(storage)?;
                return Ok(claimed);
            }
        };
        let rows = dialect::query(claim)
            .bind(owner)
            .bind(now + lease_ms)
            .bind(now)
            .bind(limit as i64)
            .fetch_all(&mut *tx)
            .await
            .map_err(storage)?;
        let claimed = sql::claimed(&rows).map_err(storage)?;
        tx.commit().await.map_err(storage)?;
        Ok(claimed)
    }

    /// Receipts a system has not yet had confirmed by the broker, parked ones aside.
    pub async fn receipt_backlog(&self, system: System) -> Result<i64, StorageError> {
        dialect::query(
            "SELECT COUNT(*) AS n FROM receipt_outbox WHERE sent_at IS NULL AND parked_at IS NULL",
        )
        .fetch_one(self.system_pool(system))
        .await
        .map_err(storage)?
        .try_get("n")
        .map_err(storage)
    }

    /// Gives rows back for another attempt, each at its own `retry_at` and
    /// keeping the reason its send failed; a row already claimed
    /// `park_after` times (or more) is parked instead: never claimed again
    /// until an operator puts it back. One transaction for all: a relay
    /// round the broker refused (down, or its disk full) costs one commit,
    /// not one per row beside the payments' own. Returns the ids parked.
    pub async fn retry_outbox(
        &self,
        failed: &[OutboxRetry],
        park_after: i64,
        now: i64,
    ) -> Result<Vec<i64>, StorageError> {
        self.retry_outbox_of(Outbox::Events, failed, park_after, now)
            .await
    }

    /// [`Store::retry_outbox`] for the rows of `outbox`.
    pub async fn retry_outbox_of(
        &self,
        outbox: Outbox,
        failed: &[OutboxRetry],
        park_after: i64,
        now: i64,
    ) -> Result<Vec<i64>, StorageError> {
        if failed.is_empty() {
            return Ok(Vec::new());
        }
        let mut parked = Vec::new();
        let mut tx = self.begin_write(outbox.db()).await.map_err(storage)?;
        let statement = format!(
            "UPDATE {} SET next_attempt_at = $1, last_error = $2, lease_owner = NULL, \
             parked_at = CASE WHEN attempts >= $4 THEN $5 ELSE NULL END \
             WHERE id = $3 AND sent_at IS NULL",
            outbox.table()
        );
        let returning = format!("{statement} RETURNING parked_at");
        let read_back = format!(
            "SELECT parked_at FROM {} WHERE id = $1 AND sent_at IS NULL",
            outbox.table()
        );
        for retry in failed {
            let retried = |sql| {
                dialect::query(sql)
                    .bind(retry.retry_at)
                    .bind(retry.error.as_str())
                    .bind(retry.id)
                    .bind(park_after)
                    .bind(now)
            };
            let row = if self.backend == Backend::Mysql {
                // No `RETURNING`: the row read back in the same transaction.
                retried(&statement)
                    .execute(&mut *tx)
                    .await
                    .map_err(storage)?;
                dialect::query(&read_back)
                    .bind(retry.id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(storage)?
            } else {
                retried(&returning)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(storage)?
            };
            if let Some(row) = row
                && get::<Option<i64>>(&row, "parked_at")?.is_some()
            {
                parked.push(retry.id);
            }
        }
        tx.commit().await.map_err(storage)?;
        Ok(parked)
    }

    /// Parked outbox rows, oldest parked first, at most `limit`.
    pub async fn parked_outbox(&self, limit: i64) -> Result<Vec<ParkedOutboxRow>, StorageError> {
        let rows = dialect::query(
            "SELECT id, topic, tag, msg_key, event_id, attempts, last_error, created_at, parked_at \
             FROM outbox WHERE parked_at IS NOT NULL ORDER BY parked_at, id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.orders)
        .await
        .map_err(storage)?;
        rows.iter()
            .map(|r| {
                Ok(ParkedOutboxRow {
                    id: get(r, "id")?,
                    topic: get(r, "topic")?,
                    tag: get(r, "tag")?,
                    key: get(r, "msg_key")?,
                    event_id: get(r, "event_id")?,
                    attempts: get(r, "attempts")?,
                    last_error: get(r, "last_error")?,
                    created_at: get(r, "created_at")?,
                    parked_at: get(r, "parked_at")?,
                })
            })
            .collect()
    }

    /// Puts parked rows back for the relay, due at `now` with their attempts
    /// counted from zero: the row `id`, or every parked row (`None`).
    /// Returns how many were parked and are now queued.
    pub async fn requeue_outbox(&self, id: Option<i64>, now: i64) -> Result<u64, StorageError> {
        let mut tx = self.begin_write(Db::Orders).await.map_err(storage)?;
        let requeued = dialect::query(
            "UPDATE outbox SET parked_at = NULL, attempts = 0, next_attempt_at = $1, \
             lease_owner = NULL WHERE parked_at IS NOT NULL AND sent_at IS NULL \
             AND ($2 < 0 OR id = $2)",
        )
        .bind(now)
        .bind(id.unwrap_or(-1))
        .execute(&mut *tx)
        .await
        .map_err(storage)?
        .rows_affected();
        tx.commit().await.map_err(storage)?;
        Ok(requeued)
    }

    /// Outbox rows parked after failing every attempt.
    pub async fn outbox_parked(&self) -> Result<i64, StorageError> {
        dialect::query("SELECT COUNT(*) AS n FROM outbox WHERE parked_at IS NOT NULL")
            .fetch_one(&self.orders)
            .await
            .map_err(storage)?
            .try_get("n")
            .map_err(storage)
    }

    /// Events committed but not yet confirmed by the broker, parked ones aside.
    pub async fn outbox_backlog(&self) -> Result<i64, StorageError> {
        dialect::query(
            "SELECT COUNT(*) AS n FROM outbox WHERE sent_at IS NULL AND parked_at IS NULL",
        )
        .fetch_one(&self.orders)
        .await
        .map_err(storage)?
        .try_get("n")
        .map_err(storage)
    }

    /// When the broker took each of `topic`'s events created at or after
    /// `since` (epoch ms): event id → `sent_at`, the relay's clock once the
    /// broker answered SEND_OK. Events not sent yet are left out. With the
    /// change's own time and the consumer's, it splits a delivery's delay
    /// into the relay's part and the rest (`ordermq-bench feed`). Reads
    /// the whole outbox: a tool's query, not the relay's.
    ///
    /// # Errors
    ///
    /// The database could not be read.
    pub async fn sent_times(
        &self,
        topic: &str,
        since: i64,
    ) -> Result<HashMap<String, i64>, StorageError> {
        dialect::query(
            "SELECT event_id, sent_at FROM outbox \
             WHERE topic = $1 AND created_at >= $2 AND sent_at IS NOT NULL",
        )
        .bind(topic)
        .bind(since)
        .fetch_all(&self.orders)
        .await
        .map_err(storage)?
        .iter()
        .map(|r| Ok((get(r, "event_id")?, get(r, "sent_at")?)))
        .collect()
    }
}
