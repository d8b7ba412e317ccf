//! The relay's writes outside a batch: confirming rows sent, giving failed
//! ones back for a later attempt or parking them after too many, the
//! operator's list and requeue of parked rows, and the backlog. Its round
//! (ack + claim) rides on the order database's batch (`batch`).
//!
//! Operation module: it imports only the base, leaves and the handle.

use ordermq_domain::ports::StorageError;
use sqlx::Row;

use crate::dialect;
use crate::fail::{get, storage};
use crate::outbox::mark_sent_in;
use crate::sql::Backend;
use crate::store::{Db, Store};

macro_rules! retry_outbox {
    () => {
        "UPDATE outbox SET next_attempt_at = $1, last_error = $2, lease_owner = NULL, \
         parked_at = CASE WHEN attempts >= $4 THEN $5 ELSE NULL END \
         WHERE id = $3 AND sent_at IS NULL"
    };
}

/// A failed row given back for `$1` with its error `$2` (`$3` its id), or
/// parked at `$5` once claimed `$4` times.
const RETRY_OUTBOX: &str = retry_outbox!();

/// [`RETRY_OUTBOX`] saying whether it parked the row.
const RETRY_OUTBOX_RETURNING: &str = concat!(retry_outbox!(), " RETURNING parked_at");

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
        let mut tx = self.begin_write(Db::Orders).await.map_err(storage)?;
        mark_sent_in(&mut tx, ids, now).await.map_err(storage)?;
        tx.commit().await.map_err(storage)
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
        if failed.is_empty() {
            return Ok(Vec::new());
        }
        let mut parked = Vec::new();
        let mut tx = self.begin_write(Db::Orders).await.map_err(storage)?;
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
                retried(RETRY_OUTBOX)
                    .execute(&mut *tx)
                    .await
                    .map_err(storage)?;
                dialect::query("SELECT parked_at FROM outbox WHERE id = $1 AND sent_at IS NULL")
                    .bind(retry.id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(storage)?
            } else {
                retried(RETRY_OUTBOX_RETURNING)
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
}
