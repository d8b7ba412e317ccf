//! The four downstream systems as RocketMQ consumers: credit (points),
//! marketing (coupons), push (SMS) and warehouse (shipments).
//!
//! Each handler turns a batch of `OrderPaid` deliveries into its system's
//! effects and records them, each with an inbox row, in one transaction, so a
//! redelivery changes nothing. Third-party calls carry the event id as an idempotency key. Any
//! failure answers "reconsume later": the broker retries with backoff and,
//! after `max_reconsume_times`, moves the message to `%DLQ%<group>`; the last
//! failure is recorded so the order's page shows the group as `failed`.

use std::sync::Arc;

use futures_util::future::join_all;
use ordermq_domain::fanout::{effect_for, sms_text_for};
use ordermq_domain::ports::{BoxFuture, Delivery, Handler, LogisticsGateway, Outcome, SmsGateway};
use ordermq_domain::{Effect, OrderEvent, OrderPaid, System, now_millis};
use ordermq_store::{EffectRecord, Store};

use crate::writer::EffectWriter;

/// The consumer logic of one downstream system.
#[derive(Clone)]
pub struct SystemHandler {
    system: System,
    store: Store,
    writer: EffectWriter,
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
        writer: EffectWriter,
        sms: Arc<dyn SmsGateway>,
        logistics: Arc<dyn LogisticsGateway>,
    ) -> Self {
        Self {
            system,
            store,
            writer,
            sms,
            logistics,
        }
    }

    /// The effect of `paid` in this system, calling the third party where there is one.
    async fn effect(&self, event_id: &str, paid: &OrderPaid) -> Result<Effect, String> {
        let external_ref = match self.system {
            System::Credit | System::Marketing => String::new(),
            System::Push => self
                .sms
                .send(event_id, paid.user_id.as_str(), &sms_text_for(paid))
                .await
                .map_err(|e| e.to_string())?,
            System::Warehouse => self
                .logistics
                .create_shipment(event_id, paid)
                .await
                .map_err(|e| e.to_string())?,
        };
        Ok(effect_for(self.system, paid, external_ref))
    }

    /// Applies a batch: skip what the inbox already has, call third parties
    /// concurrently, commit every effect that succeeded in one transaction, and
    /// ask for a redelivery if anything failed (the committed ones are skipped then).
    async fn consume(&self, batch: Vec<Delivery>) -> Outcome {
        let group = self.system.consumer_group();
        let mut first_failure: Option<String> = None;
        let mut events = Vec::with_capacity(batch.len());
        for delivery in batch {
            match OrderEvent::from_json(&delivery.body) {
                Ok(OrderEvent::OrderPaid(paid)) => {
                    let event_id = OrderEvent::OrderPaid(paid.clone()).event_id();
                    events.push((delivery, event_id, paid));
                }
                Err(e) => {
                    // Unreadable now means unreadable on every retry: let it
                    // reach the DLQ, where an operator can inspect it.
                    tracing::error!(group, msg_id = %delivery.msg_id, error = %e, "undecodable message");
                    first_failure.get_or_insert(format!("undecodable message: {e}"));
                }
            }
        }
        let ids: Vec<String> = events.iter().map(|(_, id, _)| id.clone()).collect();
        let applied = match self.store.applied_among(self.system, &ids).await {
            Ok(applied) => applied,
            Err(e) => return Outcome::RetryLater(e.to_string()),
        };
        let before = events.len();
        events.retain(|(_, id, _)| !applied.contains(id));
        if events.len() < before {
            tracing::debug!(
                group,
                skipped = before - events.len(),
                "redelivered events already applied; skipped"
            );
        }

        let attempts = join_all(
            events
                .iter()
                .map(|(_, event_id, paid)| self.effect(event_id, paid)),
        )
        .await;
        let mut records = Vec::with_capacity(events.len());
        for ((delivery, event_id, paid), attempt) in events.iter().zip(attempts) {
            match attempt {
                Ok(effect) => records.push(EffectRecord {
                    event_id: event_id.clone(),
                    msg_id: delivery.msg_id.clone(),
                    effect,
                }),
                Err(reason) => {
                    self.note_failure(delivery, event_id, paid.order_id.as_str(), &reason)
                        .await;
                    first_failure.get_or_insert(reason);
                }
            }
        }
        let applied = records.len();
        if let Err(reason) = self.writer.apply(records).await {
            for (delivery, event_id, paid) in &events {
                self.note_failure(delivery, event_id, paid.order_id.as_str(), &reason)
                    .await;
            }
            return Outcome::RetryLater(reason);
        }
        tracing::debug!(group, applied, "batch consumed");
        match first_failure {
            Some(reason) => Outcome::RetryLater(reason),
            None => Outcome::Consumed,
        }
    }

    /// Logs a failed delivery and records it, so the order's page shows the
    /// group as failed once the broker gives up (the DLQ).
    async fn note_failure(
        &self,
        delivery: &Delivery,
        event_id: &str,
        order_id: &str,
        reason: &str,
    ) {
        let dead = delivery.is_last_attempt();
        tracing::warn!(
            group = self.system.consumer_group(),
            event_id,
            attempt = delivery.reconsume_times + 1,
            dead_lettered = dead,
            reason,
            "delivery failed; RocketMQ will retry"
        );
        if let Err(e) = self
            .store
            .record_failure(
                self.system,
                event_id,
                order_id,
                i64::from(delivery.reconsume_times) + 1,
                reason,
                dead,
                now_millis(),
            )
            .await
        {
            tracing::error!(error = %e, "cannot record the failure");
        }
    }
}

impl Handler for SystemHandler {
    fn handle(&self, batch: Vec<Delivery>) -> BoxFuture<'_, Outcome> {
        Box::pin(self.consume(batch))
    }
}
