//! The four downstream systems as RocketMQ consumers: credit (points),
//! marketing (coupons), push (SMS) and warehouse (shipments).
//!
//! Each handler turns an `OrderPaid` delivery into its system's effect and
//! records it with an inbox row in one transaction, so a redelivery changes
//! nothing. Third-party calls carry the event id as an idempotency key. Any
//! failure answers "reconsume later": the broker retries with backoff and,
//! after `max_reconsume_times`, moves the message to `%DLQ%<group>`; the last
//! failure is recorded so the order's page shows the group as `failed`.

use std::sync::Arc;

use ordermq_domain::fanout::{coupon_for, points_for, sms_text_for};
use ordermq_domain::ports::{BoxFuture, Delivery, Handler, LogisticsGateway, Outcome, SmsGateway};
use ordermq_domain::{Effect, OrderEvent, OrderPaid, System, now_millis};
use ordermq_store::{Applied, Store};

/// The consumer logic of one downstream system.
#[derive(Clone)]
pub struct SystemHandler {
    system: System,
    store: Store,
    sms: Arc<dyn SmsGateway>,
    logistics: Arc<dyn LogisticsGateway>,
}

impl std::fmt::Debug for SystemHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemHandler")
            .field("system", &self.system)
            .finish_non_exhaustive()
    }
}

impl SystemHandler {
    pub fn new(
        system: System,
        store: Store,
        sms: Arc<dyn SmsGateway>,
        logistics: Arc<dyn LogisticsGateway>,
    ) -> Self {
        Self {
            system,
            store,
            sms,
            logistics,
        }
    }

    /// The effect of `paid` in this system, calling the third party where there is one.
    async fn effect(&self, event_id: &str, paid: &OrderPaid) -> Result<Effect, String> {
        let user_id = paid.user_id.clone();
        let order_id = paid.order_id.clone();
        Ok(match self.system {
            System::Credit => Effect::Points {
                user_id,
                order_id,
                points: points_for(paid),
            },
            System::Marketing => {
                let (coupon_code, value) = coupon_for(paid);
                Effect::Coupon {
                    user_id,
                    order_id,
                    coupon_code,
                    value,
                }
            }
            System::Push => {
                let text = sms_text_for(paid);
                let external_ref = self
                    .sms
                    .send(event_id, paid.user_id.as_str(), &text)
                    .await
                    .map_err(|e| e.to_string())?;
                Effect::Sms {
                    user_id,
                    order_id,
                    text,
                    external_ref,
                }
            }
            System::Warehouse => {
                let tracking_no = self
                    .logistics
                    .create_shipment(event_id, paid)
                    .await
                    .map_err(|e| e.to_string())?;
                Effect::Shipment {
                    user_id,
                    order_id,
                    tracking_no,
                }
            }
        })
    }

    async fn consume(&self, delivery: Delivery) -> Outcome {
        let event = match OrderEvent::from_json(&delivery.body) {
            Ok(event) => event,
            Err(e) => {
                // Unreadable now means unreadable on every retry: let it reach
                // the DLQ, where an operator can inspect it.
                tracing::error!(group = self.system.consumer_group(), msg_id = %delivery.msg_id, error = %e, "undecodable message");
                return Outcome::RetryLater(format!("undecodable message: {e}"));
            }
        };
        let OrderEvent::OrderPaid(paid) = &event;
        let event_id = event.event_id();
        let result = async {
            if self
                .store
                .is_applied(self.system, &event_id)
                .await
                .map_err(|e| e.to_string())?
            {
                return Ok(Applied::Already);
            }
            let effect = self.effect(&event_id, paid).await?;
            self.store
                .apply_effect(&event_id, &delivery.msg_id, &effect, now_millis())
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        match result {
            Ok(applied) => {
                tracing::debug!(group = self.system.consumer_group(), %event_id, ?applied, "consumed");
                Outcome::Consumed
            }
            Err(reason) => {
                let dead = delivery.is_last_attempt();
                tracing::warn!(
                    group = self.system.consumer_group(),
                    %event_id,
                    attempt = delivery.reconsume_times + 1,
                    dead_lettered = dead,
                    %reason,
                    "delivery failed; RocketMQ will retry"
                );
                if let Err(e) = self
                    .store
                    .record_failure(
                        self.system,
                        &event_id,
                        paid.order_id.as_str(),
                        i64::from(delivery.reconsume_times) + 1,
                        &reason,
                        dead,
                        now_millis(),
                    )
                    .await
                {
                    tracing::error!(error = %e, "cannot record the failure");
                }
                Outcome::RetryLater(reason)
            }
        }
    }
}

impl Handler for SystemHandler {
    fn handle(&self, delivery: Delivery) -> BoxFuture<'_, Outcome> {
        Box::pin(self.consume(delivery))
    }
}
