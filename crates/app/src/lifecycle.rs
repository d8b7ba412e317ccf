//! The order service's own consumers: closing unpaid orders when their
//! delayed close arrives, and refunding through the payment gateway.
//!
//! Closing: creating an order wrote an `OrderCloseDue` to the outbox in the
//! same transaction, and the broker delivers it at the order's `close_at` (a
//! delayed message, see `ordermq_messaging::delay`): no table scan finds
//! expired orders. The close is one guarded `UNPAID → CANCELLED` through the
//! group-commit writer, so it races with a payment on the status and exactly
//! one wins. A low-frequency sweep backs this up for a close message that
//! never arrives (see ARCHITECTURE.md): it reads only overdue unpaid orders,
//! through an index.
//!
//! Refunding: `OrderRefundRequested` (and an operator's
//! `RefundRetryRequested`) reach `payment_refund_group`, which calls the
//! gateway with the refund id as idempotency key, a few times with backoff
//! per delivery; then RocketMQ redelivers later (10 s, 30 s, 1 min, …). Every
//! failed attempt is recorded on the refund; when the broker's retries are
//! exhausted the refund is FAILED — visible, and retryable by an operator —
//! never silently dropped. A restart mid-refund simply gets the message again.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use ordermq_domain::ports::{BoxFuture, Delivery, Handler, Outcome, PaymentGateway};
use ordermq_domain::{EventKind, OrderEvent, RefundId, RefundStatus, now_millis};
use ordermq_store::{CloseOutcome, Store};
use tokio_util::sync::CancellationToken;

use crate::writer::OrderWriter;

/// The consumer group that closes unpaid orders.
pub const CLOSE_GROUP: &str = "order_close_group";
/// The consumer group that refunds through the payment gateway.
pub const REFUND_GROUP: &str = "payment_refund_group";

/// `(topic, tags)` of the close group.
pub fn close_subscriptions() -> Vec<(String, String)> {
    vec![(
        EventKind::OrderCloseDue.topic().to_owned(),
        EventKind::OrderCloseDue.tag().to_owned(),
    )]
}

/// `(topic, tags)` of the refund group.
///
/// No spaces around `||`: rocketmq-rust 1.0.0's `FilterAPI` trims each tag
/// for the tag set but hashes the *untrimmed* one for the code set the broker
/// filters the consume queue with, so `"A || B"` silently matches neither
/// `A` nor `B` (Java trims before hashing). `"A||B"` works on both.
pub fn refund_subscriptions() -> Vec<(String, String)> {
    vec![(
        EventKind::OrderRefundRequested.topic().to_owned(),
        format!(
            "{}||{}",
            EventKind::OrderRefundRequested.tag(),
            EventKind::RefundRetryRequested.tag()
        ),
    )]
}

/// Applies due closes.
#[derive(Debug, Clone)]
pub struct CloseHandler {
    writer: OrderWriter,
}

impl CloseHandler {
    pub fn new(writer: OrderWriter) -> Self {
        Self { writer }
    }

    async fn consume(&self, batch: Vec<Delivery>) -> Outcome {
        let closes = batch.iter().map(|delivery| async move {
            let due = match OrderEvent::from_json(&delivery.body) {
                Ok(OrderEvent::OrderCloseDue(due)) => due,
                Ok(other) => {
                    tracing::warn!(kind = ?other.kind(), "unexpected event in the close group; ignored");
                    return None;
                }
                Err(e) => return Some(format!("undecodable close message: {e}")),
            };
            match self.writer.close(due.order_id.clone()).await {
                Ok(CloseOutcome::Closed) => {
                    tracing::debug!(order_id = %due.order_id, late_ms = now_millis() - due.due_at, "unpaid order closed");
                    None
                }
                Ok(CloseOutcome::NotUnpaid(_) | CloseOutcome::NotFound) => None,
                Ok(CloseOutcome::NotDue { close_at }) => Some(format!(
                    "close of {} arrived {} ms early",
                    due.order_id,
                    close_at - now_millis()
                )),
                Err(e) => Some(e.to_string()),
            }
        });
        match join_all(closes).await.into_iter().flatten().next() {
            None => Outcome::Consumed,
            Some(reason) => {
                tracing::warn!(reason, "close failed; RocketMQ will redeliver it");
                Outcome::RetryLater(reason)
            }
        }
    }
}

impl Handler for CloseHandler {
    fn handle(&self, batch: Vec<Delivery>) -> BoxFuture<'_, Outcome> {
        Box::pin(self.consume(batch))
    }
}

/// Closes UNPAID orders overdue by more than one `interval`, every
/// `interval`, until `stop`: the backstop for close messages that never came.
pub async fn sweep_overdue(
    store: Store,
    writer: OrderWriter,
    interval: Duration,
    stop: CancellationToken,
) {
    if interval.is_zero() {
        return;
    }
    let grace = interval.as_millis() as i64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
        let overdue = match store.overdue_unpaid(now_millis(), grace, 500).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "close sweep cannot read overdue orders; will retry");
                continue;
            }
        };
        let mut closed = 0;
        for order_id in overdue {
            if let Ok(CloseOutcome::Closed) = writer.close(order_id).await {
                closed += 1;
            }
        }
        if closed > 0 {
            tracing::warn!(
                closed,
                "close sweep closed overdue orders whose close message did not arrive"
            );
        }
    }
}

/// Refunds through the payment gateway.
#[derive(Clone)]
pub struct RefundHandler {
    store: Store,
    gateway: Arc<dyn PaymentGateway>,
    attempts: u32,
    backoff: Duration,
}

impl std::fmt::Debug for RefundHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefundHandler")
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl RefundHandler {
    /// `attempts` gateway calls per delivery, `backoff` doubling between them.
    pub fn new(
        store: Store,
        gateway: Arc<dyn PaymentGateway>,
        attempts: u32,
        backoff: Duration,
    ) -> Self {
        Self {
            store,
            gateway,
            attempts: attempts.max(1),
            backoff,
        }
    }

    /// Refunds one refund; `None` when done (or nothing to do), else the reason to retry.
    async fn refund(&self, delivery: &Delivery) -> Option<String> {
        let refund_id: RefundId = match OrderEvent::from_json(&delivery.body) {
            Ok(OrderEvent::OrderRefundRequested(r)) => r.refund_id,
            Ok(OrderEvent::RefundRetryRequested(r)) => r.refund_id,
            Ok(other) => {
                tracing::warn!(kind = ?other.kind(), "unexpected event in the refund group; ignored");
                return None;
            }
            Err(e) => return Some(format!("undecodable refund message: {e}")),
        };
        let task = match self.store.refund_task(refund_id.as_str()).await {
            Ok(Some(task)) => task,
            Ok(None) => {
                // Written in the same transaction as its event: cannot happen
                // unless the database was restored without it.
                tracing::error!(refund_id = %refund_id, "refund row missing; message dropped");
                return None;
            }
            Err(e) => return Some(e.to_string()),
        };
        if task.status == RefundStatus::Succeeded {
            return None;
        }
        let mut last_error = String::new();
        for attempt in 0..self.attempts {
            if attempt > 0 {
                tokio::time::sleep(self.backoff * 2u32.pow(attempt - 1)).await;
            }
            match self
                .gateway
                .refund(
                    task.refund_id.as_str(),
                    task.payment_id.as_str(),
                    task.amount,
                )
                .await
            {
                Ok(provider_ref) => {
                    return match self
                        .store
                        .complete_refund(&task.refund_id, &provider_ref, now_millis())
                        .await
                    {
                        Ok(_) => {
                            tracing::info!(refund_id = %task.refund_id, order_id = %task.order_id, "refund succeeded");
                            None
                        }
                        // The gateway refunded (idempotently); recording it is retried.
                        Err(e) => Some(e.to_string()),
                    };
                }
                Err(e) => {
                    last_error = e.to_string();
                    let give_up = delivery.is_last_attempt() && attempt + 1 == self.attempts;
                    if let Err(e) = self
                        .store
                        .refund_attempt_failed(&task.refund_id, &last_error, give_up, now_millis())
                        .await
                    {
                        tracing::error!(error = %e, "cannot record a failed refund attempt");
                    }
                    if give_up {
                        tracing::error!(refund_id = %task.refund_id, order_id = %task.order_id, error = %last_error,
                            "refund FAILED after every retry; retry it with POST /api/refunds/{{id}}/retry");
                    }
                }
            }
        }
        Some(last_error)
    }

    async fn consume(&self, batch: Vec<Delivery>) -> Outcome {
        let results = join_all(batch.iter().map(|d| self.refund(d))).await;
        match results.into_iter().flatten().next() {
            None => Outcome::Consumed,
            Some(reason) => {
                tracing::warn!(reason, "refund not done yet; RocketMQ will redeliver it");
                Outcome::RetryLater(reason)
            }
        }
    }
}

impl Handler for RefundHandler {
    fn handle(&self, batch: Vec<Delivery>) -> BoxFuture<'_, Outcome> {
        Box::pin(self.consume(batch))
    }
}
