//! The refund consumer (`payment_refund_group`): refunds through the payment
//! gateway.
//!
//! `OrderRefundRequested` (and an operator's `RefundRetryRequested`) reach
//! this group, which calls the gateway with the refund id as idempotency key,
//! a few times with backoff per delivery, each call bounded by a timeout (a
//! gateway that hangs must not pin the group's listener threads); then
//! RocketMQ redelivers later
//! (10 s, 30 s, 1 min, …). Every failed attempt is recorded on the refund;
//! when the broker's retries are exhausted the refund is FAILED — visible,
//! and retryable by an operator — never silently dropped. A restart
//! mid-refund simply gets the message again.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use ordermq_domain::ports::{BoxFuture, Delivery, Handler, Outcome, PaymentGateway};
use ordermq_domain::topology::{Consumer, group_of};
use ordermq_domain::{OrderEvent, RefundId, RefundStatus, now_millis};
use ordermq_store::Store;

use super::park_undecodable;

/// Refunds through the payment gateway.
#[derive(Clone)]
pub struct RefundHandler {
    store: Store,
    gateway: Arc<dyn PaymentGateway>,
    attempts: u32,
    backoff: Duration,
    timeout: Duration,
}

impl std::fmt::Debug for RefundHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefundHandler")
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl RefundHandler {
    /// `attempts` gateway calls per delivery, `backoff` doubling between
    /// them, each call given at most `timeout` (retries of an adapter included).
    pub fn new(
        store: Store,
        gateway: Arc<dyn PaymentGateway>,
        attempts: u32,
        backoff: Duration,
        timeout: Duration,
    ) -> Self {
        Self {
            store,
            gateway,
            attempts: attempts.max(1),
            backoff,
            timeout,
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
            // Parked on its own: it would fail every retry, and its batch with it.
            Err(e) => {
                let group = group_of(Consumer::Refund).name;
                return park_undecodable(&self.store, group, delivery, &e.to_string())
                    .await
                    .err();
            }
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
            let call = self.gateway.refund(
                task.refund_id.as_str(),
                task.payment_id.as_str(),
                task.amount,
            );
            let answered = match tokio::time::timeout(self.timeout, call).await {
                Ok(answered) => answered.map_err(|e| e.to_string()),
                Err(_) => Err(format!(
                    "payment gateway did not answer within {} ms",
                    self.timeout.as_millis()
                )),
            };
            match answered {
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
                    last_error = e;
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use ordermq_domain::ports::{GatewayError, OrderService};
    use ordermq_domain::view::RefundView;
    use ordermq_domain::{
        Amount, EventKind, IdempotencyKey, OrderId, OutboxMessage, RefundRequest,
    };

    use super::*;
    use crate::testing::{Fixture, delivery_of, relay_all};

    /// A payment gateway that fails its first `failures` calls, then refunds;
    /// it records every call's `(idempotency key, payment, amount)`.
    struct ScriptedPayments {
        failures: AtomicUsize,
        calls: Mutex<Vec<(String, String, i64)>>,
    }

    impl ScriptedPayments {
        fn failing(failures: usize) -> Arc<Self> {
            Arc::new(Self {
                failures: AtomicUsize::new(failures),
                calls: Mutex::new(Vec::new()),
            })
        }

        fn calls(&self) -> Vec<(String, String, i64)> {
            self.calls.lock().expect("not poisoned").clone()
        }
    }

    impl PaymentGateway for ScriptedPayments {
        fn refund<'a>(
            &'a self,
            idempotency_key: &'a str,
            payment_id: &'a str,
            amount: Amount,
        ) -> BoxFuture<'a, Result<String, GatewayError>> {
            self.calls.lock().expect("not poisoned").push((
                idempotency_key.to_owned(),
                payment_id.to_owned(),
                amount.minor_units(),
            ));
            let fail = self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            Box::pin(async move {
                if fail {
                    Err(GatewayError {
                        system: "payment gateway",
                        reason: "the provider answered 503 (test)".into(),
                    })
                } else {
                    Ok(format!("re-{idempotency_key}"))
                }
            })
        }
    }

    /// A paid order, a full refund of it, and every message published so
    /// far (its `OrderPaid`, its close, the refund's `OrderRefundRequested`).
    async fn refund_with_messages(fixture: &Fixture) -> (RefundView, Vec<OutboxMessage>) {
        let order = fixture.paid_order("u1", 2).await;
        let refund = fixture
            .orders
            .refund(
                RefundRequest::new(
                    order.order_id.clone(),
                    IdempotencyKey::parse("refund-1").expect("key"),
                    None,
                    Some("changed my mind".into()),
                )
                .expect("valid request"),
            )
            .await
            .expect("refund recorded");
        (refund, relay_all(fixture).await)
    }

    /// The first of `messages` tagged `kind`, as a consumer group receives it.
    fn delivery_of_kind(messages: &[OutboxMessage], kind: EventKind) -> Delivery {
        let message = messages
            .iter()
            .find(|m| m.tag == kind.tag())
            .unwrap_or_else(|| panic!("a {kind:?} was published"));
        delivery_of(message)
    }

    /// A paid order, a full refund of it, and the refund's message as the
    /// refund group would receive it.
    async fn requested_refund(fixture: &Fixture) -> (RefundView, Delivery) {
        let (refund, messages) = refund_with_messages(fixture).await;
        let delivery = delivery_of_kind(&messages, EventKind::OrderRefundRequested);
        (refund, delivery)
    }

    async fn refund_now(fixture: &Fixture, order: &OrderId) -> RefundView {
        let view = fixture.orders.order(order.clone()).await.unwrap().unwrap();
        view.refunds.into_iter().next().expect("one refund")
    }

    #[tokio::test]
    async fn a_refund_gets_through_gateway_failures_within_one_delivery() {
        let fixture = Fixture::new().await;
        let (refund, delivery) = requested_refund(&fixture).await;
        let gateway = ScriptedPayments::failing(2);
        let handler = RefundHandler::new(
            fixture.store.clone(),
            gateway.clone(),
            3,
            Duration::from_millis(1),
            Duration::from_secs(5),
        );
        assert_eq!(
            handler.handle(vec![delivery.clone()]).await,
            Outcome::Consumed
        );
        let calls = gateway.calls();
        assert_eq!(calls.len(), 3, "two failures, then the refund");
        for (key, payment, amount) in &calls {
            assert_eq!(
                key,
                refund.refund_id.as_str(),
                "the refund id is the idempotency key"
            );
            assert_eq!(payment, refund.payment_id.as_str());
            assert_eq!(*amount, refund.amount.minor_units());
        }
        let now = refund_now(&fixture, &refund.order_id).await;
        assert_eq!(now.status, RefundStatus::Succeeded);
        assert_eq!(
            now.attempts, 3,
            "every gateway attempt is counted, the last one too"
        );
        assert!(now.completed_at.is_some());

        // A redelivery of a refund that succeeded calls nobody.
        assert_eq!(handler.handle(vec![delivery]).await, Outcome::Consumed);
        assert_eq!(gateway.calls().len(), 3);
    }

    #[tokio::test]
    async fn a_refund_the_gateway_keeps_refusing_fails_only_on_the_last_delivery() {
        let fixture = Fixture::new().await;
        let (refund, mut delivery) = requested_refund(&fixture).await;
        let gateway = ScriptedPayments::failing(usize::MAX);
        let handler = RefundHandler::new(
            fixture.store.clone(),
            gateway.clone(),
            2,
            Duration::from_millis(1),
            Duration::from_secs(5),
        );
        // Not the last delivery: RocketMQ will bring it back; still requested.
        assert!(matches!(
            handler.handle(vec![delivery.clone()]).await,
            Outcome::RetryLater(_)
        ));
        let now = refund_now(&fixture, &refund.order_id).await;
        assert_eq!(now.status, RefundStatus::Requested);
        assert_eq!(now.attempts, 2);
        assert!(now.last_error.as_deref().unwrap().contains("503"));

        // The last delivery: the refund is FAILED, for an operator to retry.
        delivery.reconsume_times = delivery.max_reconsume_times;
        assert!(matches!(
            handler.handle(vec![delivery]).await,
            Outcome::RetryLater(_)
        ));
        let now = refund_now(&fixture, &refund.order_id).await;
        assert_eq!(now.status, RefundStatus::Failed);
        assert_eq!(now.attempts, 4);
        assert_eq!(gateway.calls().len(), 4);
    }

    /// A payment gateway that never answers.
    struct HangingPayments;

    impl PaymentGateway for HangingPayments {
        fn refund<'a>(
            &'a self,
            _idempotency_key: &'a str,
            _payment_id: &'a str,
            _amount: Amount,
        ) -> BoxFuture<'a, Result<String, GatewayError>> {
            Box::pin(std::future::pending())
        }
    }

    #[tokio::test]
    async fn a_gateway_that_never_answers_is_given_up_after_the_timeout() {
        let fixture = Fixture::new().await;
        let (refund, delivery) = requested_refund(&fixture).await;
        let handler = RefundHandler::new(
            fixture.store.clone(),
            Arc::new(HangingPayments),
            2,
            Duration::from_millis(1),
            Duration::from_millis(50),
        );
        let Outcome::RetryLater(reason) = handler.handle(vec![delivery]).await else {
            panic!("a refund nobody answered is not done");
        };
        assert!(reason.contains("did not answer within 50 ms"), "{reason}");
        let now = refund_now(&fixture, &refund.order_id).await;
        assert_eq!((now.status, now.attempts), (RefundStatus::Requested, 2));
    }

    #[tokio::test]
    async fn an_undecodable_message_is_parked_and_another_event_is_ignored() {
        let fixture = Fixture::new().await;
        let (refund, messages) = refund_with_messages(&fixture).await;
        let gateway = ScriptedPayments::failing(0);
        let handler = RefundHandler::new(
            fixture.store.clone(),
            gateway.clone(),
            1,
            Duration::ZERO,
            Duration::from_secs(5),
        );
        let garbage = Delivery {
            body: b"{not json".to_vec(),
            ..delivery_of_kind(&messages, EventKind::OrderRefundRequested)
        };
        assert_eq!(
            handler.handle(vec![garbage.clone()]).await,
            Outcome::Consumed
        );
        let parked = fixture
            .store
            .parked(Some("payment_refund_group"))
            .await
            .unwrap();
        assert_eq!(parked.len(), 1, "{parked:?}");
        assert_eq!(parked[0].msg_id, garbage.msg_id);
        assert_eq!(parked[0].reason, ordermq_domain::parked::UNDECODABLE);
        let paid = delivery_of_kind(&messages, EventKind::OrderPaid);
        assert_eq!(handler.handle(vec![paid]).await, Outcome::Consumed);
        assert!(gateway.calls().is_empty(), "nothing was refunded");
        let now = refund_now(&fixture, &refund.order_id).await;
        assert_eq!((now.status, now.attempts), (RefundStatus::Requested, 0));
    }
}
