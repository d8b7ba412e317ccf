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
//! Leaf module: it imports only the base (`sql`, `dialect`).

use ordermq_domain::{OrderEvent, OutboxMessage};
use sqlx::{AnyConnection, Row};

use crate::dialect;
use crate::fail;
use crate::sql::{self, Backend, placeholders};

/// Writes `event` to the outbox inside the caller's transaction.
pub(crate) async fn enqueue(
    conn: &mut AnyConnection,
    event: &OrderEvent,
    deliver_at: Option<i64>,
    now: i64,
) -> Result<(), sqlx::Error> {
    let kind = event.kind();
    dialect::query(sql::INSERT_OUTBOX)
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
        let mut query = dialect::query(&sql).bind(now);
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

/// Marks rows sent (the broker stored them), 500 to a statement: `mark` is
/// the table's [`sql::MARK_SENT`] or [`sql::MARK_RECEIPTS_SENT`].
pub(crate) async fn mark_sent_in(
    conn: &mut AnyConnection,
    mark: &str,
    ids: &[i64],
    now: i64,
) -> Result<(), sqlx::Error> {
    for chunk in ids.chunks(500) {
        let sql = format!("{mark}WHERE id IN ({})", sql::placeholders(1, chunk.len()));
        let mut query = dialect::query(&sql).bind(now);
        for id in chunk {
            query = query.bind(*id);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Marks `acked` rows sent (at the time given with them: when the broker
/// confirmed them) and claims up to `limit` due rows for `lease_ms`,
/// inside the caller's transaction: the relay's round rides on a payment
/// batch's commit (see `WriteOp::RelayOutbox`) or on its own.
pub(crate) async fn ack_and_claim_in(
    tx: &mut AnyConnection,
    backend: Backend,
    owner: &str,
    (acked, acked_at): (&[i64], i64),
    limit: usize,
    lease_ms: i64,
    now: i64,
) -> Result<Vec<OutboxMessage>, sqlx::Error> {
    let claim = match backend {
        Backend::Postgres => sql::CLAIM_OUTBOX_SKIP_LOCKED,
        Backend::Sqlite => sql::CLAIM_OUTBOX,
        Backend::Mysql => "",
    };
    mark_sent_in(&mut *tx, sql::MARK_SENT, acked, acked_at).await?;
    if backend == Backend::Mysql {
        return claim_outbox_mysql(&mut *tx, "outbox", owner, limit, now + lease_ms, now).await;
    }
    let rows = dialect::query(claim)
        .bind(owner)
        .bind(now + lease_ms)
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?;
    sql::claimed(&rows)
}

/// [`sql::CLAIM_OUTBOX_SKIP_LOCKED`] on MySQL, whose `UPDATE` can neither
/// return rows nor read its own table in a subquery: the due rows, not
/// parked, locked first (rows another instance is claiming are skipped),
/// then leased by id. Returns the messages as the claim's `RETURNING` does
/// (attempts counting this one), oldest first.
///
/// MySQL has no partial index: `outbox_unsent` leads with `sent_at`, then
/// `parked_at`, so the claim reads the unsent, unparked rows in due order
/// from the index, never the sent ones (see `schema::mysql`).
/// `table` is `outbox` or a system's `receipt_outbox` (the same columns).
pub(crate) async fn claim_outbox_mysql(
    tx: &mut AnyConnection,
    table: &str,
    owner: &str,
    limit: usize,
    lease_until: i64,
    now: i64,
) -> Result<Vec<OutboxMessage>, sqlx::Error> {
    let rule = if table == "outbox" {
        sql::FEED_CLAIM_RULE
    } else {
        ""
    };
    let due = sql::DUE_RULE_1;
    let select = format!(
        "SELECT id, topic, tag, msg_key, event_id, body, deliver_at, attempts FROM {table} c \
         WHERE c.sent_at IS NULL AND c.parked_at IS NULL AND {due}{rule} \
         ORDER BY c.next_attempt_at, c.id LIMIT $2 FOR UPDATE SKIP LOCKED"
    );
    let rows = dialect::query(&select)
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "UPDATE {table} SET lease_owner = $1, next_attempt_at = $2, attempts = attempts + 1 \
         WHERE id IN ({})",
        placeholders(2, rows.len())
    );
    let mut query = dialect::query(&sql).bind(owner).bind(lease_until);
    for row in &rows {
        query = query.bind(row.try_get::<i64, _>("id")?);
    }
    let leased = query.execute(&mut *tx).await?.rows_affected();
    if leased != rows.len() as u64 {
        return Err(sqlx::Error::Protocol(format!(
            "outbox rows leased: expected {}, got {leased}",
            rows.len()
        )));
    }
    let mut claimed = rows
        .iter()
        .map(|r| {
            Ok(OutboxMessage {
                id: r.try_get("id")?,
                topic: fail::column(r, "topic")?,
                tag: fail::column(r, "tag")?,
                key: fail::column(r, "msg_key")?,
                event_id: fail::column(r, "event_id")?,
                body: fail::column(r, "body")?,
                deliver_at: r.try_get("deliver_at")?,
                attempts: r.try_get::<i64, _>("attempts")? + 1,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    claimed.sort_by_key(|m| m.id);
    Ok(claimed)
}
