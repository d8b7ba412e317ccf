//! The transactional outbox's statements on a connection: events committed
//! with the state change they describe, then handed to the relay.
//!
//! The relay *claims* due rows with a lease (owner + time), so several
//! ordermq instances can relay from one database without sending the same
//! row at the same time; a crashed instance's lease simply expires. A row is
//! marked sent only after the broker confirmed it stored the message. The
//! relay's `Store` methods are in `relay` and `batch`; the SQLite lane's
//! form of the round is `lane::relay`, from the same statements.
//!
//! Leaf module: it imports only the base (`sql`).

use ordermq_domain::{OrderEvent, OutboxMessage};
use sqlx::AnyConnection;

use crate::sql::{self, Backend};

/// Writes `event` to the outbox inside the caller's transaction.
pub(crate) async fn enqueue(
    conn: &mut AnyConnection,
    event: &OrderEvent,
    deliver_at: Option<i64>,
    now: i64,
) -> Result<(), sqlx::Error> {
    let kind = event.kind();
    sqlx::query(sql::INSERT_OUTBOX)
        .bind(kind.topic())
        .bind(kind.tag())
        .bind(event.key())
        .bind(event.event_id())
        .bind(event.to_json())
        .bind(deliver_at)
        .bind(now)
        .execute(conn)
        .await?;
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
        let sql = format!("{}{values}", sql::OUTBOX_COLUMNS);
        let mut query = sqlx::query(&sql).bind(now);
        for event in chunk {
            let kind = event.kind();
            query = query
                .bind(kind.topic())
                .bind(kind.tag())
                .bind(event.key().to_owned())
                .bind(event.event_id())
                .bind(event.to_json());
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Marks rows sent (the broker stored them).
pub(crate) async fn mark_sent_in(
    conn: &mut AnyConnection,
    ids: &[i64],
    now: i64,
) -> Result<(), sqlx::Error> {
    for chunk in ids.chunks(500) {
        let sql = format!(
            "{}WHERE id IN ({})",
            sql::MARK_SENT,
            sql::placeholders(1, chunk.len())
        );
        let mut query = sqlx::query(&sql).bind(now);
        for id in chunk {
            query = query.bind(*id);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
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
    let claim = match backend {
        Backend::Postgres => sql::CLAIM_OUTBOX_SKIP_LOCKED,
        Backend::Sqlite => sql::CLAIM_OUTBOX,
    };
    mark_sent_in(&mut *tx, acked, now).await?;
    let rows = sqlx::query(claim)
        .bind(owner)
        .bind(now + lease_ms)
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?;
    sql::claimed(&rows)
}
