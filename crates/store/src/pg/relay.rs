//! The relay's round on PostgreSQL's own path: the acknowledged rows marked
//! sent with one statement (`id = ANY($2)`), and the claim of
//! `sql::CLAIM_OUTBOX_SKIP_LOCKED`, so instances relaying from one database
//! skip each other's rows instead of waiting for them.

use ordermq_domain::OutboxMessage;
use sqlx::{Postgres, Transaction};

use crate::sql;

/// `sql::MARK_SENT` for many rows. `$1` when the broker confirmed them, `$2` ids.
const MARK_MANY_SENT: &str = "UPDATE outbox SET sent_at = $1, lease_owner = NULL, last_error = NULL \
     WHERE id = ANY($2::int8[])";

/// Marks the round's acknowledged rows sent: before the batch's payments,
/// so the batch holds its orders no longer for it.
pub(super) async fn ack(
    tx: &mut Transaction<'_, Postgres>,
    round: &sql::RelayRound,
) -> Result<(), sqlx::Error> {
    if !round.acked.is_empty() {
        sqlx::query(MARK_MANY_SENT)
            .bind(round.acked_at)
            .bind(&round.acked)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Claims the next due rows: after the batch's payments, so it claims their
/// events too.
pub(super) async fn claim(
    tx: &mut Transaction<'_, Postgres>,
    round: &sql::RelayRound,
    now: i64,
) -> Result<Vec<OutboxMessage>, sqlx::Error> {
    let rows = sqlx::query(sql::CLAIM_OUTBOX_SKIP_LOCKED)
        .bind(round.owner.as_str())
        .bind(now + round.lease_ms)
        .bind(now)
        .bind(round.limit as i64)
        .fetch_all(&mut **tx)
        .await?;
    sql::claimed(&rows)
}
