//! A refund's row and its `OrderRefundRequested` event, and a payment owed
//! back: the steps a shopper's refund (`refunds`) and a payment that cannot
//! apply (`pay`) share.
//!
//! Step module: it imports only the base and leaves (`history`, `outbox`),
//! and operation modules import it.

use ordermq_domain::event::OrderRefundRequested;
use ordermq_domain::{OrderEvent, OrderStatus, PaymentNotice, RefundId, RefundStatus, UserId};
use sqlx::AnyConnection;

use crate::dialect;
use crate::feed;
use crate::history::record_history;
use crate::outbox;
use crate::sql::Feed;
use ordermq_domain::feed::FeedChange;

/// A stable refund id derived from what it refunds (64-bit FNV-1a of
/// `seed`): the refund of a payment owed back is the same whichever write
/// path (lane, general, PostgreSQL) records it. Not a secret: it names a
/// payment the gateway already identified; shoppers' refunds get random ids.
fn refund_id_for(now: i64, seed: &str) -> RefundId {
    let hash = seed.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    RefundId::generate(now, hash)
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn insert_refund(
    tx: &mut AnyConnection,
    event: &OrderRefundRequested,
    idempotency_key: &str,
    fingerprint: &str,
    reason: Option<&str>,
    now: i64,
) -> Result<(), sqlx::Error> {
    dialect::query(
        "INSERT INTO refunds (refund_id, order_id, payment_id, idempotency_key, fingerprint, amount, \
           full_refund, reverse_effects, status, reason, attempts, requested_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, $11, $11)",
    )
    .bind(event.refund_id.as_str())
    .bind(event.order_id.as_str())
    .bind(event.payment_id.as_str())
    .bind(idempotency_key)
    .bind(fingerprint)
    .bind(event.amount.minor_units())
    .bind(i64::from(event.full))
    .bind(i64::from(event.reverse_effects))
    .bind(RefundStatus::Requested.as_str())
    .bind(reason)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    outbox::enqueue(
        &mut *tx,
        &OrderEvent::OrderRefundRequested(event.clone()),
        None,
        now,
    )
    .await
}

/// A payment that could not be applied (the order was closed, or already paid
/// by another payment) is given back whole. A cancelled order moves to
/// REFUNDING; a paid one keeps its status. Returns the order's status after.
pub(crate) async fn refund_stray_payment_in(
    tx: &mut AnyConnection,
    feed: Feed,
    notice: &PaymentNotice,
    user_id: &UserId,
    status: OrderStatus,
    now: i64,
) -> Result<OrderStatus, sqlx::Error> {
    let key = format!("payment:{}", notice.payment_id);
    let event = OrderRefundRequested {
        refund_id: refund_id_for(now, &key),
        order_id: notice.order_id.clone(),
        user_id: user_id.clone(),
        payment_id: notice.payment_id.clone(),
        amount: notice.amount,
        lines: Vec::new(),
        full: true,
        reverse_effects: false,
        requested_at: now,
    };
    let reason = match status {
        OrderStatus::Cancelled | OrderStatus::Refunding | OrderStatus::Refunded => {
            "paid after the order was closed"
        }
        _ => "a second payment for an order already paid",
    };
    insert_refund(tx, &event, &key, "ALL", Some(reason), now).await?;
    if status == OrderStatus::Cancelled {
        let moved = dialect::query(
            "UPDATE orders SET status = $1, updated_at = $2, order_seq = order_seq + 1 \
             WHERE order_id = $3 AND status = $4",
        )
        .bind(OrderStatus::Refunding.as_str())
        .bind(now)
        .bind(notice.order_id.as_str())
        .bind(OrderStatus::Cancelled.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if moved {
            record_history(
                &mut *tx,
                notice.order_id.as_str(),
                Some(OrderStatus::Cancelled),
                OrderStatus::Refunding,
                now,
            )
            .await?;
            let order_id = notice.order_id.as_str();
            feed::record(tx, feed, order_id, FeedChange::Refunding, now).await?;
            return Ok(OrderStatus::Refunding);
        }
    }
    Ok(status)
}
