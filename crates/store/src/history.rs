//! The order's status history: one row per transition, written in the
//! transaction that makes it, so the history can never disagree with the
//! status; and beside it, who asked for each refund and retry
//! (`order_actions`), written in the transaction that records the request.
//!
//! Leaf module: it imports only the base (`sql`).

use ordermq_domain::{Actor, OrderStatus, RefundId};
use sqlx::AnyConnection;

use crate::dialect;
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
    dialect::query(sql::INSERT_HISTORY)
        .bind(order_id)
        .bind(from.map(OrderStatus::as_str))
        .bind(to.as_str())
        .bind(at)
        .execute(conn)
        .await?;
    Ok(())
}

/// What an operator can ask for on an order.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Action {
    /// A refund.
    Refund,
    /// A FAILED refund sent again.
    RefundRetry,
}

impl Action {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Refund => "refund",
            Self::RefundRetry => "refund_retry",
        }
    }
}

/// Records that `actor` asked for `action` on `refund_id` of `order_id`,
/// inside the caller's transaction.
pub(crate) async fn record_action(
    conn: &mut AnyConnection,
    order_id: &str,
    action: Action,
    refund_id: &RefundId,
    actor: &Actor,
    at: i64,
) -> Result<(), sqlx::Error> {
    dialect::query(sql::INSERT_ACTION)
        .bind(order_id)
        .bind(action.as_str())
        .bind(refund_id.as_str())
        .bind(actor.as_str())
        .bind(at)
        .execute(conn)
        .await?;
    Ok(())
}
