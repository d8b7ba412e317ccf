//! The transactional outbox: events committed with the state change they
//! describe, then handed to the relay.
//!
//! The relay *claims* due rows with a lease (owner + time), so several
//! ordermq instances can relay from one database without sending the same
//! row at the same time; a crashed instance's lease simply expires. A row is
//! marked sent only after the broker confirmed it stored the message.

use ordermq_domain::ports::StorageError;
use ordermq_domain::{OrderEvent, OutboxMessage};
use sqlx::{AnyConnection, Row};

use crate::{Backend, Store, placeholders, storage};

/// Writes `event` to the outbox inside the caller's transaction.
pub(crate) async fn enqueue(
    conn: &mut AnyConnection,
    event: &OrderEvent,
    deliver_at: Option<i64>,
    now: i64,
) -> Result<(), sqlx::Error> {
    let kind = event.kind();
    sqlx::query(
        "INSERT INTO outbox (topic, tag, msg_key, event_id, body, deliver_at, created_at, attempts, next_attempt_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $7)",
    )
    .bind(kind.topic())
    .bind(kind.tag())
    .bind(event.order_id().as_str())
    .bind(event.event_id())
    .bind(event.to_json())
    .bind(deliver_at)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

async fn mark_sent_in(conn: &mut AnyConnection, ids: &[i64], now: i64) -> Result<(), sqlx::Error> {
    for chunk in ids.chunks(500) {
        let sql = format!(
            "UPDATE outbox SET sent_at = $1, lease_owner = NULL, last_error = NULL \
             WHERE id IN ({})",
            placeholders(1, chunk.len())
        );
        let mut query = sqlx::query(&sql).bind(now);
        for id in chunk {
            query = query.bind(*id);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Writes many immediate events to the outbox with one statement.
pub(crate) async fn enqueue_many(
    conn: &mut AnyConnection,
    events: &[OrderEvent],
    now: i64,
) -> Result<(), sqlx::Error> {
    for chunk in events.chunks(100) {
        let values = (0..chunk.len())
            .map(|i| {
                let p = 2 + i * 5;
                format!(
                    "(${}, ${}, ${}, ${}, ${}, NULL, $1, 0, $1)",
                    p,
                    p + 1,
                    p + 2,
                    p + 3,
                    p + 4
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO outbox (topic, tag, msg_key, event_id, body, deliver_at, created_at, attempts, next_attempt_at) \
             VALUES {values}"
        );
        let mut query = sqlx::query(&sql).bind(now);
        for event in chunk {
            let kind = event.kind();
            query = query
                .bind(kind.topic())
                .bind(kind.tag())
                .bind(event.order_id().as_str().to_owned())
                .bind(event.event_id())
                .bind(event.to_json());
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

impl Store {
    /// Claims up to `limit` due, unsent rows for `lease_ms`, oldest first.
    pub async fn claim_outbox(
        &self,
        owner: &str,
        limit: usize,
        lease_ms: i64,
        now: i64,
    ) -> Result<Vec<OutboxMessage>, StorageError> {
        self.ack_and_claim_outbox(owner, &[], limit, lease_ms, now)
            .await
    }

    /// Marks `acked` rows sent (the broker stored them) and claims the next
    /// rows, in **one** transaction: the relay's round costs one commit (one
    /// fsync) instead of two. The same path as the relay's
    /// [`WriteOp::RelayOutbox`](crate::WriteOp::RelayOutbox), as a batch of one.
    pub async fn ack_and_claim_outbox(
        &self,
        owner: &str,
        acked: &[i64],
        limit: usize,
        lease_ms: i64,
        now: i64,
    ) -> Result<Vec<OutboxMessage>, StorageError> {
        let round = crate::WriteOp::RelayOutbox {
            owner: owner.to_owned(),
            acked: acked.to_vec(),
            limit,
            lease_ms,
        };
        match self.write_batch(&[round], now).await.pop() {
            Some(crate::WriteResult::Relayed(claimed)) => claimed,
            _ => Err(StorageError(
                "a relay round is answered with a relay result".into(),
            )),
        }
    }

    /// Marks rows as confirmed stored by the broker.
    pub async fn mark_sent(&self, ids: &[i64], now: i64) -> Result<(), StorageError> {
        let _gate = self.write_gate(crate::Db::Orders).await;
        let mut conn = self.orders.acquire().await.map_err(storage)?;
        mark_sent_in(&mut conn, ids, now).await.map_err(storage)
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
        let _gate = self.write_gate(crate::Db::Orders).await;
        let mut tx = self.orders.begin().await.map_err(storage)?;
        for (id, error) in failed {
            sqlx::query(
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
        sqlx::query("SELECT COUNT(*) AS n FROM outbox WHERE sent_at IS NULL")
            .fetch_one(&self.orders)
            .await
            .map_err(storage)?
            .try_get("n")
            .map_err(storage)
    }
}

/// Marks `acked` rows sent and claims up to `limit` due rows for `lease_ms`,
/// inside the caller's transaction: the relay's round rides on a payment
/// batch's commit (see `WriteOp::RelayOutbox`) or on its own.
pub(crate) async fn ack_and_claim_in(
    tx: &mut AnyConnection,
    backend: Backend,
    owner: &str,
    acked: &[i64],
    limit: usize,
    lease_ms: i64,
    now: i64,
) -> Result<Vec<OutboxMessage>, sqlx::Error> {
    let skip_locked = match backend {
        Backend::Postgres => "FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    mark_sent_in(&mut *tx, acked, now).await?;
    let sql = format!(
        "UPDATE outbox SET lease_owner = $1, next_attempt_at = $2, attempts = attempts + 1 \
         WHERE id IN (SELECT id FROM outbox WHERE sent_at IS NULL AND next_attempt_at <= $3 \
                      ORDER BY next_attempt_at, id LIMIT $4 {skip_locked}) \
         RETURNING id, topic, tag, msg_key, event_id, body, deliver_at"
    );
    let rows = sqlx::query(&sql)
        .bind(owner)
        .bind(now + lease_ms)
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?;
    let mut claimed = rows
        .iter()
        .map(|r| {
            Ok(OutboxMessage {
                id: r.try_get("id")?,
                topic: r.try_get("topic")?,
                tag: r.try_get("tag")?,
                key: r.try_get("msg_key")?,
                event_id: r.try_get("event_id")?,
                body: r.try_get("body")?,
                deliver_at: r.try_get("deliver_at")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    claimed.sort_by_key(|m| m.id);
    Ok(claimed)
}
