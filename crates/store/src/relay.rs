//! The relay's writes outside a batch: confirming rows sent, giving failed
//! ones back for a later attempt, and the backlog. Its round (ack + claim)
//! rides on the order database's batch (`batch`).
//!
//! Operation module: it imports only the base, leaves and the handle.

use ordermq_domain::ports::StorageError;
use sqlx::Row;

use crate::dialect;
use crate::fail::storage;
use crate::outbox::mark_sent_in;
use crate::store::{Db, Store};

impl Store {
    /// Marks rows as confirmed stored by the broker.
    pub async fn mark_sent(&self, ids: &[i64], now: i64) -> Result<(), StorageError> {
        let mut tx = self.begin_write(Db::Orders).await.map_err(storage)?;
        mark_sent_in(&mut tx, ids, now).await.map_err(storage)?;
        tx.commit().await.map_err(storage)
    }

    /// Gives rows back for another attempt at `retry_at`, each keeping the
    /// reason its send failed. One transaction for all: a relay round the
    /// broker refused (down, or its disk full) costs one commit, not one per
    /// row beside the payments' own.
    pub async fn retry_outbox(
        &self,
        failed: &[(i64, String)],
        retry_at: i64,
    ) -> Result<(), StorageError> {
        if failed.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write(Db::Orders).await.map_err(storage)?;
        for (id, error) in failed {
            dialect::query(
                "UPDATE outbox SET next_attempt_at = $1, last_error = $2, lease_owner = NULL \
                 WHERE id = $3 AND sent_at IS NULL",
            )
            .bind(retry_at)
            .bind(error.as_str())
            .bind(*id)
            .execute(&mut *tx)
            .await
            .map_err(storage)?;
        }
        tx.commit().await.map_err(storage)
    }

    /// Events committed but not yet confirmed by the broker.
    pub async fn outbox_backlog(&self) -> Result<i64, StorageError> {
        dialect::query("SELECT COUNT(*) AS n FROM outbox WHERE sent_at IS NULL")
            .fetch_one(&self.orders)
            .await
            .map_err(storage)?
            .try_get("n")
            .map_err(storage)
    }
}
