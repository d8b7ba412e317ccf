//! Closing an unpaid order when its time is up: UNPAID → CANCELLED, its
//! reservation released (a flash-sale order's units back to its sale), one
//! transaction. Closing and paying race on
//! `status = 'UNPAID'`: whichever commits first wins, the other finds the
//! guard false and changes nothing. A close travels through the batch
//! (`WriteOp::Close`); the sweep's work list is here.
//!
//! Operation module: it imports only the base, leaves and the handle.

use ordermq_domain::ports::StorageError;
use ordermq_domain::{OrderId, OrderStatus};
use sqlx::{AnyConnection, Row};

use crate::dialect;
use crate::fail::{corrupt, storage};
use crate::feed;
use crate::history::record_history;
use crate::sale_units::return_units_of_order_in;
use crate::sql::Feed;
use crate::store::Store;
use ordermq_domain::feed::FeedChange;

/// What a due close did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseOutcome {
    /// UNPAID → CANCELLED, reservation released.
    Closed,
    /// The order was no longer unpaid (paid, or closed before): nothing changed.
    NotUnpaid(OrderStatus),
    /// The close came before its time (clock skew): nothing changed.
    NotDue {
        close_at: i64,
    },
    NotFound,
}

/// How early a close may arrive and still apply (the broker's timer has
/// sub-second precision; clocks of two hosts may differ a little).
pub const CLOSE_EARLY_TOLERANCE_MS: i64 = 1_000;

/// Closes `order_id` if it is still UNPAID and due: one guarded update, the
/// reservation released, a history row — in the caller's transaction.
pub(crate) async fn close_order_in(
    tx: &mut AnyConnection,
    feed: Feed,
    order_id: &OrderId,
    now: i64,
) -> Result<CloseOutcome, sqlx::Error> {
    let closed = dialect::query(
        "UPDATE orders SET status = $1, updated_at = $2, order_seq = order_seq + 1 \
         WHERE order_id = $3 AND status = $4 AND (close_at IS NULL OR close_at <= $5)",
    )
    .bind(OrderStatus::Cancelled.as_str())
    .bind(now)
    .bind(order_id.as_str())
    .bind(OrderStatus::Unpaid.as_str())
    .bind(now + CLOSE_EARLY_TOLERANCE_MS)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !closed {
        let row = dialect::query("SELECT status, close_at FROM orders WHERE order_id = $1")
            .bind(order_id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(CloseOutcome::NotFound);
        };
        let raw: String = row.try_get("status")?;
        let status = OrderStatus::parse(&raw)
            .ok_or_else(|| sqlx::Error::Decode(format!("status {raw:?}").into()))?;
        return Ok(match status {
            OrderStatus::Unpaid => CloseOutcome::NotDue {
                close_at: row.try_get::<Option<i64>, _>("close_at")?.unwrap_or(0),
            },
            other => CloseOutcome::NotUnpaid(other),
        });
    }
    let lines =
        dialect::query("SELECT sku, quantity FROM order_lines WHERE order_id = $1 ORDER BY sku")
            .bind(order_id.as_str())
            .fetch_all(&mut *tx)
            .await?;
    for line in &lines {
        let sku: String = line.try_get("sku")?;
        let quantity: i64 = line.try_get("quantity")?;
        let released = dialect::query(
            "UPDATE products SET reserved = reserved - $1 WHERE sku = $2 AND reserved >= $1",
        )
        .bind(quantity)
        .bind(sku.as_str())
        .execute(&mut *tx)
        .await?;
        if released.rows_affected() != 1 {
            return Err(sqlx::Error::Protocol(format!(
                "reservation of {quantity} x {sku} for order {order_id} is missing"
            )));
        }
    }
    // A flash-sale order's units go back to its sale, not to the product.
    return_units_of_order_in(tx, order_id.as_str(), now).await?;
    record_history(
        &mut *tx,
        order_id.as_str(),
        Some(OrderStatus::Unpaid),
        OrderStatus::Cancelled,
        now,
    )
    .await?;
    feed::record(tx, feed, order_id.as_str(), FeedChange::Cancelled, now).await?;
    Ok(CloseOutcome::Closed)
}

impl Store {
    /// UNPAID orders whose close is overdue by at least `grace_ms`, oldest
    /// first: the backstop sweep's work list, read through the
    /// `(status, close_at)` index, never a full scan.
    pub async fn overdue_unpaid(
        &self,
        now: i64,
        grace_ms: i64,
        limit: usize,
    ) -> Result<Vec<OrderId>, StorageError> {
        dialect::query(
            "SELECT order_id FROM orders WHERE status = $1 AND close_at <= $2 ORDER BY close_at LIMIT $3",
        )
        .bind(OrderStatus::Unpaid.as_str())
        .bind(now - grace_ms)
        .bind(limit as i64)
        .fetch_all(&self.orders)
        .await
        .map_err(storage)?
        .iter()
        .map(|r| {
            let id: String = r.try_get("order_id").map_err(storage)?;
            OrderId::parse(&id).map_err(|_| corrupt("order id", &id))
        })
        .collect()
    }
}
