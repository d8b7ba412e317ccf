//! The order's status history: one row per transition, written in the
//! transaction that makes it, so the history can never disagree with the
//! status.
//!
//! Leaf module: it imports only the base (`sql`).

use ordermq_domain::OrderStatus;
use sqlx::AnyConnection;

use crate::sql;

/// Records `from → to` (`from` is `None` at creation) inside the caller's transaction.
pub(crate) async fn record_history(
    conn: &mut AnyConnection,
    order_id: &str,
    from: Option<OrderStatus>,
    to: OrderStatus,
    at: i64,
) -> Result<(), sqlx::Error> {
    debug_assert!(
        from.is_none_or(|from| from.can_become(to)),
        "{from:?} → {to}"
    );
    sqlx::query(sql::INSERT_HISTORY)
        .bind(order_id)
        .bind(from.map(OrderStatus::as_str))
        .bind(to.as_str())
        .bind(at)
        .execute(conn)
        .await?;
    Ok(())
}
