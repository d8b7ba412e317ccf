//! The refund consumer (`payment_refund_group`): refunds through the payment
//! gateway.
//!
//! `OrderRefundRequested` (and an operator's `RefundRetryRequested`) reach
//! this group, which calls the gateway with the refund id as idempotency key,
//! a few times with backoff per delivery; then RocketMQ redelivers later
//! (10 s, 30 s, 1 min, …). Every failed attempt is recorded on the refund;
//! when the broker's retries are exhausted the refund is FAILED — visible,
//! and retryable by an operator — never silently dropped. A restart
//! mid-refund simply gets the message again.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use ordermq_domain::ports::{BoxFuture, Delivery, Handler, Outcome, PaymentGateway};
use ordermq_domain::{OrderEvent, RefundId, RefundStatus, now_millis};
use ordermq_store::Store;

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
