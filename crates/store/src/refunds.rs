//! Refunds: a shopper's request (the lines' refunded quantities, never past
//! what was paid), the gateway's outcome, an operator's retry, and reading
//! them. Every change is a guarded update in one transaction with its
//! history row and its outbox event.
//!
//! Operation module: it imports only the base, leaves, the `refund_rows`
//! step and the handle.

use ordermq_domain::event::{OrderRefundRequested, PaidLine, RefundRetryRequested};
use ordermq_domain::ports::StorageError;
use ordermq_domain::view::RefundView;
use ordermq_domain::{
    Actor, Amount, OrderEvent, OrderId, OrderStatus, PaymentId, RefundError, RefundId,
    RefundRequest, RefundStatus, RetryRefundError, UserId,
};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::dialect;
use crate::fail::{corrupt, get, status_of, storage};
use crate::feed;
use crate::history::{Action, record_action, record_history};
use crate::outbox;
use crate::refund_rows::insert_refund;
use crate::sql;
use crate::store::{Db, Store};
use ordermq_domain::feed::FeedChange;

const REFUND_COLUMNS: &str = "refund_id, order_id, payment_id, amount, status, full_refund, reason, \
     attempts, last_error, requested_at, completed_at";

fn refund_view(row: &AnyRow) -> Result<RefundView, StorageError> {
    let get_str = |c: &str| -> Result<String, StorageError> { row.try_get(c).map_err(storage) };
    let refund_id = get_str("refund_id")?;
    let order_id = get_str("order_id")?;
    let payment_id = get_str("payment_id")?;
    let status = get_str("status")?;
    Ok(RefundView {
        refund_id: RefundId::parse(&refund_id).map_err(|_| corrupt("refund id", &refund_id))?,
        order_id: OrderId::parse(&order_id).map_err(|_| corrupt("order id", &order_id))?,
        payment_id: PaymentId::parse(&payment_id)
            .map_err(|_| corrupt("payment id", &payment_id))?,
        amount: Amount::parse(row.try_get("amount").map_err(storage)?)
            .map_err(|_| corrupt("refund amount", &refund_id))?,
        status: RefundStatus::parse(&status).ok_or_else(|| corrupt("refund status", &status))?,
        full: row.try_get::<i64, _>("full_refund").map_err(storage)? != 0,
        reason: get(row, "reason")?,
        attempts: row.try_get("attempts").map_err(storage)?,
        last_error: get(row, "last_error")?,
        requested_at: row.try_get("requested_at").map_err(storage)?,
        completed_at: row.try_get("completed_at").map_err(storage)?,
        duplicate: false,
    })
}

/// What the refund consumer needs to call the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundTask {
    pub refund_id: RefundId,
    pub order_id: OrderId,
    pub payment_id: PaymentId,
    pub amount: Amount,
    pub status: RefundStatus,
}

/// A line of a paid order: `(sku, refundable now, unit price)`.
type Refundable = (String, i64, i64);

impl Store {
    /// Records a refund the shopper asked for, in one transaction: the lines'
    /// refunded quantities (never past what was paid), PAID/SHIPPED/DELIVERED →
    /// REFUNDING when nothing is left to refund, the refund row and its
    /// `OrderRefundRequested` event. The same idempotency key with the same
    /// request returns the first refund; with another request it is refused.
    pub async fn request_refund(
        &self,
        request: &RefundRequest,
        refund_id: &RefundId,
        now: i64,
    ) -> Result<RefundView, RefundError> {
        let mut tx = self.begin_write(Db::Orders).await.map_err(storage)?;
        // A write first, so SQLite takes its write lock before anything is read.
        dialect::query("UPDATE orders SET updated_at = updated_at WHERE order_id = $1")
            .bind(request.order_id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(storage)?;
        if let Some(view) = existing_refund(&mut tx, request).await? {
            return Ok(view);
        }
        let (status, user_id, payment_id) = refundable_order(&mut tx, request).await?;
        let refundable = refundable_lines(&mut tx, &request.order_id).await?;
        let wanted = wanted_lines(request, &refundable)?;
        if wanted.is_empty() {
            return Err(not_refundable(request, status));
        }
        let (amount, lines) = take_lines(&mut tx, request, &refundable, &wanted).await?;
        let left: i64 = refundable.iter().map(|(_, left, _)| *left).sum::<i64>()
            - wanted.iter().map(|(_, q)| *q).sum::<i64>();
        let full = left == 0;
        if full {
            let moved = dialect::query(
                "UPDATE orders SET status = $1, updated_at = $2, order_seq = order_seq + 1 \
                 WHERE order_id = $3 AND status = $4",
            )
            .bind(OrderStatus::Refunding.as_str())
            .bind(now)
            .bind(request.order_id.as_str())
            .bind(status.as_str())
            .execute(&mut *tx)
            .await
            .map_err(storage)?
            .rows_affected();
            if moved != 1 {
                return Err(not_refundable(request, status));
            }
            let order_id = request.order_id.as_str();
            record_history(&mut tx, order_id, Some(status), OrderStatus::Refunding, now)
                .await
                .map_err(storage)?;
        }
        // The feed: a refund that leaves nothing is the move to REFUNDING; a
        // partial one changes the lines' refunded units only, and counts too.
        let change = if full {
            FeedChange::Refunding
        } else {
            feed::bump(&mut tx, request.order_id.as_str(), now)
                .await
                .map_err(storage)?;
            FeedChange::RefundRequested
        };
        feed::record(&mut tx, self.feed, request.order_id.as_str(), change, now)
            .await
            .map_err(storage)?;
        let event = OrderRefundRequested {
            refund_id: refund_id.clone(),
            order_id: request.order_id.clone(),
            user_id: UserId::parse(&user_id).map_err(StorageError::corrupt)?,
            payment_id: PaymentId::parse(&payment_id).map_err(StorageError::corrupt)?,
            amount: Amount::parse(amount).map_err(StorageError::corrupt)?,
            lines,
            full,
            reverse_effects: true,
            requested_at: now,
        };
        let (key, fingerprint) = (request.key.as_str(), request.fingerprint());
        let reason = request.reason.as_deref();
        insert_refund(&mut tx, &event, key, &fingerprint, reason, now)
            .await
            .map_err(storage)?;
        if let Some(actor) = &request.requested_by {
            let order_id = request.order_id.as_str();
            record_action(&mut tx, order_id, Action::Refund, refund_id, actor, now)
                .await
                .map_err(storage)?;
        }
        tx.commit().await.map_err(storage)?;
        Ok(RefundView {
            refund_id: event.refund_id,
            order_id: event.order_id,
            payment_id: event.payment_id,
            amount: event.amount,
            status: RefundStatus::Requested,
            full,
            reason: request.reason.clone(),
            attempts: 0,
            last_error: None,
            requested_at: now,
            completed_at: None,
            duplicate: false,
        })
    }

    /// The refund, as the gateway consumer needs it.
    pub async fn refund_task(&self, refund_id: &str) -> Result<Option<RefundTask>, StorageError> {
        let Some(row) = dialect::query(&format!(
            "SELECT {REFUND_COLUMNS} FROM refunds WHERE refund_id = $1"
        ))
        .bind(refund_id)
        .fetch_optional(&self.orders)
        .await
        .map_err(storage)?
        else {
            return Ok(None);
        };
        let view = refund_view(&row)?;
        Ok(Some(RefundTask {
            refund_id: view.refund_id,
            order_id: view.order_id,
            payment_id: view.payment_id,
            amount: view.amount,
            status: view.status,
        }))
    }

    /// Every refund of an order, oldest first.
    pub async fn refunds_of(&self, order_id: &OrderId) -> Result<Vec<RefundView>, StorageError> {
        self.refunds_where("order_id", order_id.as_str()).await
    }

    /// Refunds in `status`, oldest first (operators, checkers).
    pub async fn refunds_with_status(
        &self,
        status: RefundStatus,
    ) -> Result<Vec<RefundView>, StorageError> {
        self.refunds_where("status", status.as_str()).await
    }

    /// Refunds whose `column` (a fixed column name, never input) equals `value`.
    async fn refunds_where(
        &self,
        column: &'static str,
        value: &str,
    ) -> Result<Vec<RefundView>, StorageError> {
        dialect::query(&format!(
            "SELECT {REFUND_COLUMNS} FROM refunds WHERE {column} = $1 ORDER BY requested_at, refund_id"
        ))
        .bind(value)
        .fetch_all(&self.orders)
        .await
        .map_err(storage)?
        .iter()
        .map(refund_view)
        .collect()
    }

    /// Records a failed gateway attempt; `give_up` marks the refund FAILED
    /// (retries exhausted: an operator must retry it). A refund that already
    /// succeeded is left alone.
    pub async fn refund_attempt_failed(
        &self,
        refund_id: &RefundId,
        error: &str,
        give_up: bool,
        now: i64,
    ) -> Result<(), StorageError> {
        let mut tx = self.begin_write(Db::Orders).await.map_err(storage)?;
        dialect::query(
            "UPDATE refunds SET attempts = attempts + 1, last_error = $1, updated_at = $2, \
               status = CASE WHEN $3 = 1 THEN 'FAILED' ELSE status END \
             WHERE refund_id = $4 AND status <> 'SUCCEEDED'",
        )
        .bind(error)
        .bind(now)
        .bind(i64::from(give_up))
        .bind(refund_id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(storage)?;
        tx.commit().await.map_err(storage)
    }

    /// The gateway refunded the money: SUCCEEDED and, once every refund of a
    /// REFUNDING order has succeeded, REFUNDING → REFUNDED — one transaction.
    /// Returns whether this call changed anything (false for a repeat).
    pub async fn complete_refund(
        &self,
        refund_id: &RefundId,
        provider_ref: &str,
        now: i64,
    ) -> Result<bool, StorageError> {
        let mut tx = self.begin_write(Db::Orders).await.map_err(storage)?;
        let done = dialect::query(
            "UPDATE refunds SET status = 'SUCCEEDED', attempts = attempts + 1, provider_ref = $1, \
               completed_at = $2, updated_at = $2 \
             WHERE refund_id = $3 AND status <> 'SUCCEEDED'",
        )
        .bind(provider_ref)
        .bind(now)
        .bind(refund_id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(storage)?
        .rows_affected()
            == 1;
        if done {
            let order_id: String =
                dialect::query("SELECT order_id FROM refunds WHERE refund_id = $1")
                    .bind(refund_id.as_str())
                    .fetch_one(&mut *tx)
                    .await
                    .and_then(|r| r.try_get("order_id"))
                    .map_err(storage)?;
            let finished = dialect::query(
                "UPDATE orders SET status = $1, updated_at = $2, order_seq = order_seq + 1 \
                 WHERE order_id = $3 AND status = $4 \
                   AND NOT EXISTS (SELECT 1 FROM refunds WHERE order_id = $3 AND status <> 'SUCCEEDED')",
            )
            .bind(OrderStatus::Refunded.as_str())
            .bind(now)
            .bind(order_id.as_str())
            .bind(OrderStatus::Refunding.as_str())
            .execute(&mut *tx)
            .await
            .map_err(storage)?
            .rows_affected()
                == 1;
            if finished {
                record_history(
                    &mut tx,
                    &order_id,
                    Some(OrderStatus::Refunding),
                    OrderStatus::Refunded,
                    now,
                )
                .await
                .map_err(storage)?;
                feed::record(&mut tx, self.feed, &order_id, FeedChange::Refunded, now)
                    .await
                    .map_err(storage)?;
            }
        }
        tx.commit().await.map_err(storage)?;
        Ok(done)
    }

    /// An operator (`actor`, recorded with the order) retries a FAILED
    /// refund: back to REQUESTED, and a `RefundRetryRequested` event sends it
    /// to the gateway consumer again.
    pub async fn retry_refund(
        &self,
        refund_id: &RefundId,
        actor: Option<&Actor>,
        now: i64,
    ) -> Result<RefundView, RetryRefundError> {
        let mut tx = self.begin_write(Db::Orders).await.map_err(storage)?;
        let reopened = dialect::query(
            "UPDATE refunds SET status = 'REQUESTED', retries = retries + 1, updated_at = $1 \
             WHERE refund_id = $2 AND status = 'FAILED'",
        )
        .bind(now)
        .bind(refund_id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(storage)?
        .rows_affected()
            == 1;
        let row = dialect::query(&format!(
            "SELECT {REFUND_COLUMNS}, retries FROM refunds WHERE refund_id = $1"
        ))
        .bind(refund_id.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(storage)?
        .ok_or_else(|| RetryRefundError::NotFound(refund_id.to_string()))?;
        let view = refund_view(&row)?;
        if !reopened {
            return Err(RetryRefundError::NotRetryable {
                refund_id: refund_id.to_string(),
                status: view.status.to_string(),
            });
        }
        let event = OrderEvent::RefundRetryRequested(RefundRetryRequested {
            refund_id: refund_id.clone(),
            order_id: view.order_id.clone(),
            retry: row.try_get("retries").map_err(storage)?,
        });
        outbox::enqueue(&mut tx, &event, None, now)
            .await
            .map_err(storage)?;
        if let Some(actor) = actor {
            let order_id = view.order_id.as_str();
            record_action(
                &mut tx,
                order_id,
                Action::RefundRetry,
                refund_id,
                actor,
                now,
            )
            .await
            .map_err(storage)?;
        }
        tx.commit().await.map_err(storage)?;
        Ok(view)
    }
}

fn not_refundable(request: &RefundRequest, status: OrderStatus) -> RefundError {
    RefundError::NotRefundable {
        order_id: request.order_id.to_string(),
        status: status.to_string(),
    }
}

/// The refund this idempotency key already made: the same one again, or a
/// refusal if the request differs.
async fn existing_refund(
    tx: &mut AnyConnection,
    request: &RefundRequest,
) -> Result<Option<RefundView>, RefundError> {
    let existing = dialect::query(&format!(
        "SELECT {REFUND_COLUMNS}, fingerprint FROM refunds WHERE order_id = $1 AND idempotency_key = $2"
    ))
    .bind(request.order_id.as_str())
    .bind(request.key.as_str())
    .fetch_optional(&mut *tx)
    .await
    .map_err(storage)?;
    let Some(row) = existing else {
        return Ok(None);
    };
    let fingerprint: String = get(&row, "fingerprint")?;
    if fingerprint != request.fingerprint() {
        return Err(RefundError::KeyReused {
            key: request.key.to_string(),
        });
    }
    let mut view = refund_view(&row)?;
    view.duplicate = true;
    Ok(Some(view))
}

/// The order's status, user and payment, if money was taken for it.
async fn refundable_order(
    tx: &mut AnyConnection,
    request: &RefundRequest,
) -> Result<(OrderStatus, String, String), RefundError> {
    let Some(order) =
        dialect::query("SELECT status, user_id, payment_id FROM orders WHERE order_id = $1")
            .bind(request.order_id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(storage)?
    else {
        return Err(RefundError::OrderNotFound(request.order_id.to_string()));
    };
    let raw_status: String = order.try_get("status").map_err(storage)?;
    let status = status_of(&raw_status)?;
    if !status.is_paid() {
        return Err(not_refundable(request, status));
    }
    let user_id: String = order.try_get("user_id").map_err(storage)?;
    let payment_id: Option<String> = order.try_get("payment_id").map_err(storage)?;
    let payment_id = payment_id.ok_or_else(|| not_refundable(request, status))?;
    Ok((status, user_id, payment_id))
}

async fn refundable_lines(
    tx: &mut AnyConnection,
    order_id: &OrderId,
) -> Result<Vec<Refundable>, StorageError> {
    let rows = dialect::query(
        "SELECT sku, quantity, refunded, unit_price FROM order_lines WHERE order_id = $1 ORDER BY sku",
    )
    .bind(order_id.as_str())
    .fetch_all(&mut *tx)
    .await
    .map_err(storage)?;
    let mut refundable = Vec::with_capacity(rows.len());
    for row in &rows {
        let sku: String = row.try_get("sku").map_err(storage)?;
        let quantity: i64 = row.try_get("quantity").map_err(storage)?;
        let refunded: i64 = row.try_get("refunded").map_err(storage)?;
        let price: i64 = row.try_get("unit_price").map_err(storage)?;
        refundable.push((sku, quantity - refunded, price));
    }
    Ok(refundable)
}

/// `(sku, quantity)` to refund: what is left of every line, or the lines
/// asked for if each is a line with that much left.
fn wanted_lines(
    request: &RefundRequest,
    refundable: &[Refundable],
) -> Result<Vec<(String, i64)>, RefundError> {
    let Some(lines) = &request.lines else {
        return Ok(refundable
            .iter()
            .filter(|(_, left, _)| *left > 0)
            .map(|(sku, left, _)| (sku.clone(), *left))
            .collect());
    };
    let mut wanted = Vec::with_capacity(lines.len());
    for line in lines {
        let Some((_, left, _)) = refundable
            .iter()
            .find(|(sku, _, _)| sku == line.sku.as_str())
        else {
            return Err(RefundError::UnknownLine(line.sku.to_string()));
        };
        if i64::from(line.quantity.get()) > *left {
            return Err(RefundError::ExceedsPaid {
                sku: line.sku.to_string(),
                requested: line.quantity.get(),
                refundable: *left,
            });
        }
        wanted.push((line.sku.to_string(), i64::from(line.quantity.get())));
    }
    Ok(wanted)
}

/// Marks the wanted units refunded (guarded: a concurrent refund of the same
/// units finds nothing left); returns the amount and the refunded lines.
async fn take_lines(
    tx: &mut AnyConnection,
    request: &RefundRequest,
    refundable: &[Refundable],
    wanted: &[(String, i64)],
) -> Result<(i64, Vec<PaidLine>), RefundError> {
    let mut amount: i64 = 0;
    let mut lines = Vec::with_capacity(wanted.len());
    for (sku, quantity) in wanted {
        let price = refundable
            .iter()
            .find(|(s, _, _)| s == sku)
            .map(|(_, _, p)| *p)
            .unwrap_or(0);
        let taken = dialect::query(
            "UPDATE order_lines SET refunded = refunded + $1 \
             WHERE order_id = $2 AND sku = $3 AND quantity - refunded >= $1",
        )
        .bind(*quantity)
        .bind(request.order_id.as_str())
        .bind(sku.as_str())
        .execute(&mut *tx)
        .await
        .map_err(storage)?
        .rows_affected();
        if taken != 1 {
            return Err(RefundError::ExceedsPaid {
                sku: sku.clone(),
                requested: *quantity as u32,
                refundable: 0,
            });
        }
        amount = price
            .checked_mul(*quantity)
            .and_then(|line| amount.checked_add(line))
            .ok_or_else(|| StorageError::corrupt("refund amount overflows"))?;
        lines.push(sql::paid_line(sku, *quantity, price).map_err(StorageError::corrupt)?);
    }
    Ok((amount, lines))
}
