//! After creation and payment: closing unpaid orders, refunds, carrier updates.
//!
//! Every change here is a guarded update in one transaction with its history
//! row and, where others must hear of it, its outbox event — the same rules
//! as payment. Closing and paying race on `status = 'UNPAID'`: whichever
//! commits first wins, the other finds the guard false and changes nothing.

use ordermq_domain::event::{
    OrderRefundRequested, PaidLine, RefundRetryRequested, ShipmentUpdated,
};
use ordermq_domain::ports::StorageError;
use ordermq_domain::view::{CarrierReceipt, RefundView};
use ordermq_domain::{
    Amount, CarrierUpdate, CarrierUpdateError, OrderEvent, OrderId, OrderStatus, PaymentId,
    PaymentNotice, RefundError, RefundId, RefundRequest, RefundStatus, RetryRefundError, Sku,
    System, UserId,
};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::{Store, corrupt, status_of, storage};

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
const CLOSE_EARLY_TOLERANCE_MS: i64 = 1_000;

/// A status change that has a `from`: every transition after creation.
async fn record_history(
    conn: &mut AnyConnection,
    order_id: &str,
    from: OrderStatus,
    to: OrderStatus,
    at: i64,
) -> Result<(), sqlx::Error> {
    crate::orders::record_history(conn, order_id, Some(from), to, at).await
}

/// Closes `order_id` if it is still UNPAID and due: one guarded update, the
/// reservation released, a history row — in the caller's transaction.
pub(crate) async fn close_order_in(
    tx: &mut AnyConnection,
    order_id: &OrderId,
    now: i64,
) -> Result<CloseOutcome, sqlx::Error> {
    let closed = sqlx::query(
        "UPDATE orders SET status = $1, updated_at = $2 \
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
        let row = sqlx::query("SELECT status, close_at FROM orders WHERE order_id = $1")
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
        sqlx::query("SELECT sku, quantity FROM order_lines WHERE order_id = $1 ORDER BY sku")
            .bind(order_id.as_str())
            .fetch_all(&mut *tx)
            .await?;
    for line in &lines {
        let sku: String = line.try_get("sku")?;
        let quantity: i64 = line.try_get("quantity")?;
        let released = sqlx::query(
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
    record_history(
        tx,
        order_id.as_str(),
        OrderStatus::Unpaid,
        OrderStatus::Cancelled,
        now,
    )
    .await?;
    Ok(CloseOutcome::Closed)
}

/// A stable refund id derived from what it refunds (FNV-1a of `seed`).
fn refund_id_for(now: i64, seed: &str) -> RefundId {
    let hash = seed.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    RefundId::generate(now, hash)
}

#[allow(clippy::too_many_arguments)]
async fn insert_refund(
    tx: &mut AnyConnection,
    event: &OrderRefundRequested,
    idempotency_key: &str,
    fingerprint: &str,
    reason: Option<&str>,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
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
    crate::outbox::enqueue(
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
        let moved = sqlx::query(
            "UPDATE orders SET status = $1, updated_at = $2 WHERE order_id = $3 AND status = $4",
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
                tx,
                notice.order_id.as_str(),
                OrderStatus::Cancelled,
                OrderStatus::Refunding,
                now,
            )
            .await?;
            return Ok(OrderStatus::Refunding);
        }
    }
    Ok(status)
}

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
        reason: row.try_get("reason").map_err(storage)?,
        attempts: row.try_get("attempts").map_err(storage)?,
        last_error: row.try_get("last_error").map_err(storage)?,
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
        let fail = |e: sqlx::Error| RefundError::Storage(e.to_string());
        let _gate = self.write_gate(crate::Db::Orders).await;
        let mut tx = self.orders.begin().await.map_err(fail)?;
        // A write first, so SQLite takes its write lock before anything is read.
        sqlx::query("UPDATE orders SET updated_at = updated_at WHERE order_id = $1")
            .bind(request.order_id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
        let existing = sqlx::query(&format!(
            "SELECT {REFUND_COLUMNS}, fingerprint FROM refunds WHERE order_id = $1 AND idempotency_key = $2"
        ))
        .bind(request.order_id.as_str())
        .bind(request.key.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(fail)?;
        if let Some(row) = existing {
            let fingerprint: String = row.try_get("fingerprint").map_err(fail)?;
            if fingerprint != request.fingerprint() {
                return Err(RefundError::KeyReused {
                    key: request.key.to_string(),
                });
            }
            let mut view = refund_view(&row).map_err(|e| RefundError::Storage(e.0))?;
            view.duplicate = true;
            return Ok(view);
        }
        let Some(order) =
            sqlx::query("SELECT status, user_id, payment_id FROM orders WHERE order_id = $1")
                .bind(request.order_id.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(fail)?
        else {
            return Err(RefundError::OrderNotFound(request.order_id.to_string()));
        };
        let raw_status: String = order.try_get("status").map_err(fail)?;
        let status = status_of(&raw_status).map_err(|e| RefundError::Storage(e.0))?;
        let not_refundable = || RefundError::NotRefundable {
            order_id: request.order_id.to_string(),
            status: raw_status.clone(),
        };
        if !status.is_paid() {
            return Err(not_refundable());
        }
        let user_id: String = order.try_get("user_id").map_err(fail)?;
        let payment_id: Option<String> = order.try_get("payment_id").map_err(fail)?;
        let payment_id = payment_id.ok_or_else(not_refundable)?;

        let rows = sqlx::query(
            "SELECT sku, quantity, refunded, unit_price FROM order_lines WHERE order_id = $1 ORDER BY sku",
        )
        .bind(request.order_id.as_str())
        .fetch_all(&mut *tx)
        .await
        .map_err(fail)?;
        // (sku, refundable now, unit price)
        let mut refundable = Vec::with_capacity(rows.len());
        for row in &rows {
            let sku: String = row.try_get("sku").map_err(fail)?;
            let quantity: i64 = row.try_get("quantity").map_err(fail)?;
            let refunded: i64 = row.try_get("refunded").map_err(fail)?;
            let price: i64 = row.try_get("unit_price").map_err(fail)?;
            refundable.push((sku, quantity - refunded, price));
        }
        let wanted: Vec<(String, i64)> = match &request.lines {
            None => refundable
                .iter()
                .filter(|(_, left, _)| *left > 0)
                .map(|(sku, left, _)| (sku.clone(), *left))
                .collect(),
            Some(lines) => {
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
                wanted
            }
        };
        if wanted.is_empty() {
            return Err(not_refundable());
        }
        let mut amount: i64 = 0;
        let mut lines = Vec::with_capacity(wanted.len());
        for (sku, quantity) in &wanted {
            let price = refundable
                .iter()
                .find(|(s, _, _)| s == sku)
                .map(|(_, _, p)| *p)
                .unwrap_or(0);
            // Guarded: a concurrent refund of the same units finds nothing left.
            let taken = sqlx::query(
                "UPDATE order_lines SET refunded = refunded + $1 \
                 WHERE order_id = $2 AND sku = $3 AND quantity - refunded >= $1",
            )
            .bind(*quantity)
            .bind(request.order_id.as_str())
            .bind(sku.as_str())
            .execute(&mut *tx)
            .await
            .map_err(fail)?
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
                .ok_or_else(|| RefundError::Storage("refund amount overflows".into()))?;
            lines.push(PaidLine {
                sku: Sku::parse(sku).map_err(|e| RefundError::Storage(e.to_string()))?,
                quantity: *quantity as u32,
                unit_price: Amount::parse(price)
                    .map_err(|e| RefundError::Storage(e.to_string()))?,
            });
        }
        let left: i64 = refundable.iter().map(|(_, left, _)| *left).sum::<i64>()
            - wanted.iter().map(|(_, q)| *q).sum::<i64>();
        let full = left == 0;
        if full {
            let moved = sqlx::query(
                "UPDATE orders SET status = $1, updated_at = $2 WHERE order_id = $3 AND status = $4",
            )
            .bind(OrderStatus::Refunding.as_str())
            .bind(now)
            .bind(request.order_id.as_str())
            .bind(status.as_str())
            .execute(&mut *tx)
            .await
            .map_err(fail)?
            .rows_affected();
            if moved != 1 {
                return Err(not_refundable());
            }
            record_history(
                &mut tx,
                request.order_id.as_str(),
                status,
                OrderStatus::Refunding,
                now,
            )
            .await
            .map_err(fail)?;
        }
        let event = OrderRefundRequested {
            refund_id: refund_id.clone(),
            order_id: request.order_id.clone(),
            user_id: UserId::parse(&user_id).map_err(|e| RefundError::Storage(e.to_string()))?,
            payment_id: PaymentId::parse(&payment_id)
                .map_err(|e| RefundError::Storage(e.to_string()))?,
            amount: Amount::parse(amount).map_err(|e| RefundError::Storage(e.to_string()))?,
            lines,
            full,
            reverse_effects: true,
            requested_at: now,
        };
        insert_refund(
            &mut tx,
            &event,
            request.key.as_str(),
            &request.fingerprint(),
            request.reason.as_deref(),
            now,
        )
        .await
        .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
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
        let Some(row) = sqlx::query(&format!(
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
        sqlx::query(&format!(
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
        let _gate = self.write_gate(crate::Db::Orders).await;
        sqlx::query(
            "UPDATE refunds SET attempts = attempts + 1, last_error = $1, updated_at = $2, \
               status = CASE WHEN $3 = 1 THEN 'FAILED' ELSE status END \
             WHERE refund_id = $4 AND status <> 'SUCCEEDED'",
        )
        .bind(error)
        .bind(now)
        .bind(i64::from(give_up))
        .bind(refund_id.as_str())
        .execute(&self.orders)
        .await
        .map_err(storage)?;
        Ok(())
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
        let _gate = self.write_gate(crate::Db::Orders).await;
        let mut tx = self.orders.begin().await.map_err(storage)?;
        let done = sqlx::query(
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
            let order_id: String = sqlx::query("SELECT order_id FROM refunds WHERE refund_id = $1")
                .bind(refund_id.as_str())
                .fetch_one(&mut *tx)
                .await
                .and_then(|r| r.try_get("order_id"))
                .map_err(storage)?;
            let finished = sqlx::query(
                "UPDATE orders SET status = $1, updated_at = $2 \
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
                    OrderStatus::Refunding,
                    OrderStatus::Refunded,
                    now,
                )
                .await
                .map_err(storage)?;
            }
        }
        tx.commit().await.map_err(storage)?;
        Ok(done)
    }

    /// An operator retries a FAILED refund: back to REQUESTED, and a
    /// `RefundRetryRequested` event sends it to the gateway consumer again.
    pub async fn retry_refund(
        &self,
        refund_id: &RefundId,
        now: i64,
    ) -> Result<RefundView, RetryRefundError> {
        let fail = |e: sqlx::Error| RetryRefundError::Storage(e.to_string());
        let _gate = self.write_gate(crate::Db::Orders).await;
        let mut tx = self.orders.begin().await.map_err(fail)?;
        let reopened = sqlx::query(
            "UPDATE refunds SET status = 'REQUESTED', retries = retries + 1, updated_at = $1 \
             WHERE refund_id = $2 AND status = 'FAILED'",
        )
        .bind(now)
        .bind(refund_id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(fail)?
        .rows_affected()
            == 1;
        let row = sqlx::query(&format!(
            "SELECT {REFUND_COLUMNS}, retries FROM refunds WHERE refund_id = $1"
        ))
        .bind(refund_id.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(fail)?
        .ok_or_else(|| RetryRefundError::NotFound(refund_id.to_string()))?;
        let view = refund_view(&row).map_err(|e| RetryRefundError::Storage(e.0))?;
        if !reopened {
            return Err(RetryRefundError::NotRetryable {
                refund_id: refund_id.to_string(),
                status: view.status.to_string(),
            });
        }
        let event = OrderEvent::RefundRetryRequested(RefundRetryRequested {
            refund_id: refund_id.clone(),
            order_id: view.order_id.clone(),
            retry: row.try_get("retries").map_err(fail)?,
        });
        crate::outbox::enqueue(&mut tx, &event, None, now)
            .await
            .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        Ok(view)
    }

    /// The tracking number of the order's shipment, if the warehouse booked one.
    pub async fn tracking_no_of(&self, order_id: &OrderId) -> Result<Option<String>, StorageError> {
        sqlx::query("SELECT tracking_no FROM warehouse_shipments WHERE order_id = $1")
            .bind(order_id.as_str())
            .fetch_optional(self.system_pool(System::Warehouse))
            .await
            .map_err(storage)?
            .map(|r| r.try_get("tracking_no").map_err(storage))
            .transpose()
    }

    /// Applies a carrier's update: the shipment must be the order's; a repeated
    /// update changes nothing; the order only moves forward (PAID → SHIPPED →
    /// DELIVERED, guarded); a `ShipmentUpdated` event tells the warehouse.
    pub async fn carrier_update(
        &self,
        update: &CarrierUpdate,
        now: i64,
    ) -> Result<CarrierReceipt, CarrierUpdateError> {
        let fail = |e: sqlx::Error| CarrierUpdateError::Storage(e.to_string());
        let order_id = update.order_id.as_str();
        match self
            .tracking_no_of(&update.order_id)
            .await
            .map_err(|e| CarrierUpdateError::Storage(e.0))?
        {
            Some(tracking) if tracking == update.tracking_no.as_str() => {}
            Some(_) => {
                return Err(CarrierUpdateError::TrackingMismatch {
                    order_id: order_id.to_owned(),
                    given: update.tracking_no.to_string(),
                });
            }
            None => {
                let exists = sqlx::query("SELECT 1 AS one FROM orders WHERE order_id = $1")
                    .bind(order_id)
                    .fetch_optional(&self.orders)
                    .await
                    .map_err(fail)?
                    .is_some();
                return Err(if exists {
                    CarrierUpdateError::ShipmentNotFound(order_id.to_owned())
                } else {
                    CarrierUpdateError::OrderNotFound(order_id.to_owned())
                });
            }
        }
        let _gate = self.write_gate(crate::Db::Orders).await;
        let mut tx = self.orders.begin().await.map_err(fail)?;
        let fresh = sqlx::query(
            "INSERT INTO carrier_events (order_id, status, tracking_no, received_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (order_id, status) DO NOTHING",
        )
        .bind(order_id)
        .bind(update.status.as_str())
        .bind(update.tracking_no.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(fail)?
        .rows_affected()
            == 1;
        let raw: String = sqlx::query("SELECT status FROM orders WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(fail)?
            .ok_or_else(|| CarrierUpdateError::OrderNotFound(order_id.to_owned()))?
            .try_get("status")
            .map_err(fail)?;
        let current = status_of(&raw).map_err(|e| CarrierUpdateError::Storage(e.0))?;
        if !fresh {
            return Ok(CarrierReceipt {
                order_id: update.order_id.clone(),
                status: current,
                applied: false,
                duplicate: true,
            });
        }
        let target = update.status.order_status();
        let mut status = current;
        if current != target && current.can_become(target) {
            let moved = sqlx::query(
                "UPDATE orders SET status = $1, updated_at = $2 WHERE order_id = $3 AND status = $4",
            )
            .bind(target.as_str())
            .bind(now)
            .bind(order_id)
            .bind(current.as_str())
            .execute(&mut *tx)
            .await
            .map_err(fail)?
            .rows_affected()
                == 1;
            if moved {
                record_history(&mut tx, order_id, current, target, now)
                    .await
                    .map_err(fail)?;
                status = target;
            }
        }
        let event = OrderEvent::ShipmentUpdated(ShipmentUpdated {
            order_id: update.order_id.clone(),
            tracking_no: update.tracking_no.clone(),
            status: update.status,
            at: now,
        });
        crate::outbox::enqueue(&mut tx, &event, None, now)
            .await
            .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        Ok(CarrierReceipt {
            order_id: update.order_id.clone(),
            status,
            applied: true,
            duplicate: false,
        })
    }

    /// UNPAID orders whose close is overdue by at least `grace_ms`, oldest
    /// first: the backstop sweep's work list, read through the
    /// `(status, close_at)` index, never a full scan.
    pub async fn overdue_unpaid(
        &self,
        now: i64,
        grace_ms: i64,
        limit: usize,
    ) -> Result<Vec<OrderId>, StorageError> {
        sqlx::query(
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
