//! The four downstream systems as RocketMQ consumers: credit (points),
//! marketing (coupons), push (SMS) and warehouse (shipments).
//!
//! Each handler turns a batch of deliveries — `OrderPaid`, and later
//! `OrderRefundRequested` (reverse what was done) and, for the warehouse,
//! `ShipmentUpdated` (the carrier's progress) — into its system's effects and
//! records them, each with an inbox row, in one transaction, so a
//! redelivery changes nothing. A reversal or a carrier update that overtakes
//! the order's `OrderPaid` in this group waits (retry later) until the paid
//! effect is there: effects are never reversed before they exist.
//! Third-party calls carry the event id as an idempotency key. Any failure
//! answers "reconsume later": the broker retries with backoff and, after
//! `max_reconsume_times`, moves the message to `%DLQ%<group>`; the last
//! failure is recorded so the order's page shows the group as `failed`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use ordermq_domain::fanout::coupon_code;
use ordermq_domain::fanout::{effect_for, reversal_for, reversal_needs_gateway, sms_text_for};
use ordermq_domain::ports::{BoxFuture, Delivery, Handler, LogisticsGateway, Outcome, SmsGateway};
use ordermq_domain::signing::Keyring;
use ordermq_domain::{Effect, OrderEvent, OrderPaid, System, now_millis};
use ordermq_store::{Applied, EffectRecord, Store};

use crate::group_commit::EffectWriter;

/// The consumer logic of one downstream system.
#[derive(Clone)]
pub struct SystemHandler {
    system: System,
    store: Store,
    writer: EffectWriter,
    sms: Arc<dyn SmsGateway>,
    logistics: Arc<dyn LogisticsGateway>,
    logistics_timeout: Duration,
    /// The event keys: marketing derives each coupon's code from the event
    /// id under them ([`coupon_code`]).
    event_keys: Keyring,
}

impl std::fmt::Debug for SystemHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemHandler")
            .field("system", &self.system)
            .finish_non_exhaustive()
    }
}

impl SystemHandler {
    /// `event_keys`: the keys events are signed with; marketing's coupon
    /// codes are keyed with the signing one.
    pub fn new(
        system: System,
        store: Store,
        writer: EffectWriter,
        sms: Arc<dyn SmsGateway>,
        logistics: Arc<dyn LogisticsGateway>,
        logistics_timeout: Duration,
        event_keys: Keyring,
    ) -> Self {
        Self {
            system,
            store,
            writer,
            sms,
            logistics,
            logistics_timeout,
            event_keys,
        }
    }

    /// The effect of `paid` in this system, calling the third party where there is one.
    async fn effect(&self, event_id: &str, paid: &OrderPaid) -> Result<Effect, String> {
        let external_ref = match self.system {
            System::Credit => String::new(),
            // Keyed by the event: a redelivery derives the same code.
            System::Marketing => coupon_code(&self.event_keys, event_id),
            System::Push => self
                .sms
                .send(event_id, paid.user_id.as_str(), &sms_text_for(paid))
                .await
                .map_err(|e| e.to_string())?,
            System::Warehouse => {
                // A carrier that hangs must not hold this consumer thread for ever.
                match tokio::time::timeout(
                    self.logistics_timeout,
                    self.logistics.create_shipment(event_id, paid),
                )
                .await
                {
                    Ok(booked) => booked.map_err(|e| e.to_string())?,
                    Err(_) => {
                        return Err(format!(
                            "logistics system did not answer within {} ms",
                            self.logistics_timeout.as_millis()
                        ));
                    }
                }
            }
        };
        Ok(effect_for(self.system, paid, external_ref))
    }

    /// The effect of any event this group receives. `paid_here`: the order's
    /// `OrderPaid` effect is already recorded in this system.
    async fn effect_of(
        &self,
        event_id: &str,
        event: &OrderEvent,
        paid_here: bool,
    ) -> Result<Effect, String> {
        let waiting = || {
            Err(format!(
                "waiting for order {}'s OrderPaid effect in {} first",
                event.order_id(),
                self.system.consumer_group()
            ))
        };
        match event {
            OrderEvent::OrderPaid(paid) => self.effect(event_id, paid).await,
            OrderEvent::OrderRefundRequested(refund) => {
                if refund.reverse_effects && !paid_here {
                    return waiting();
                }
                let external_ref = if reversal_needs_gateway(self.system, refund) {
                    self.sms
                        .send(
                            event_id,
                            refund.user_id.as_str(),
                            &ordermq_domain::fanout::refund_sms_text_for(refund),
                        )
                        .await
                        .map_err(|e| e.to_string())?
                } else {
                    String::new()
                };
                Ok(reversal_for(self.system, refund, external_ref))
            }
            OrderEvent::ShipmentUpdated(update) if self.system == System::Warehouse => {
                if !paid_here {
                    return waiting();
                }
                Ok(Effect::ShipmentProgress {
                    order_id: update.order_id.clone(),
                    status: update.status,
                })
            }
            other => Ok(Effect::Nothing {
                system: self.system,
                order_id: other.order_id().clone(),
            }),
        }
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
                Ok(event) => {
                    let event_id = event.event_id();
                    events.push((delivery, event_id, event));
                }
                Err(e) => {
                    // Unreadable now means unreadable on every retry: let it
                    // reach the DLQ, where an operator can inspect it.
                    tracing::error!(group, msg_id = %delivery.msg_id, error = %e, "undecodable message");
                    first_failure.get_or_insert(format!("undecodable message: {e}"));
                }
            }
        }
        // Push and warehouse skip what they already applied before calling
        // their third party again. Credit and marketing call nobody: the
        // inbox insert alone drops a redelivery, one statement fewer per batch.
        let mut skipped = 0;
        if matches!(self.system, System::Push | System::Warehouse) {
            let ids: Vec<String> = events.iter().map(|(_, id, _)| id.clone()).collect();
            let applied = match self.store.applied_among(self.system, &ids).await {
                Ok(applied) => applied,
                Err(e) => return Outcome::RetryLater(e.to_string()),
            };
            let before = events.len();
            events.retain(|(_, id, _)| !applied.contains(id));
            skipped = before - events.len();
        }
        // Which orders already have their paid effect here (reversals and
        // carrier updates wait for it).
        let paid_ids: Vec<String> = events
            .iter()
            .filter(|(_, _, e)| !matches!(e, OrderEvent::OrderPaid(_)))
            .map(|(_, _, e)| OrderEvent::paid_event_id(e.order_id()))
            .collect();
        let paid_here: HashSet<String> = if paid_ids.is_empty() {
            HashSet::new()
        } else {
            match self.store.applied_among(self.system, &paid_ids).await {
                Ok(applied) => applied,
                Err(e) => return Outcome::RetryLater(e.to_string()),
            }
        };

        let attempts = join_all(events.iter().map(|(_, event_id, event)| {
            let paid = paid_here.contains(&OrderEvent::paid_event_id(event.order_id()));
            self.effect_of(event_id, event, paid)
        }))
        .await;
        let mut records = Vec::with_capacity(events.len());
        for ((delivery, event_id, event), attempt) in events.iter().zip(attempts) {
            match attempt {
                Ok(effect) => records.push(EffectRecord {
                    event_id: event_id.clone(),
                    msg_id: delivery.msg_id.clone(),
                    effect,
                }),
                Err(reason) => {
                    self.note_failure(delivery, event_id, event.order_id().as_str(), &reason)
                        .await;
                    first_failure.get_or_insert(reason);
                }
            }
        }
        let outcomes = match self.writer.apply(records).await {
            Ok(outcomes) => outcomes,
            Err(reason) => {
                for (delivery, event_id, event) in &events {
                    self.note_failure(delivery, event_id, event.order_id().as_str(), &reason)
                        .await;
                }
                return Outcome::RetryLater(reason);
            }
        };
        skipped += outcomes.iter().filter(|o| **o == Applied::Already).count();
        if skipped > 0 {
            // Operators (and the fault suite) count these: redeliveries are normal.
            tracing::debug!(
                group,
                skipped,
                "redelivered events already applied; skipped"
            );
        }
        let applied = outcomes.iter().filter(|o| **o == Applied::Now).count();
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use ordermq_domain::ports::OrderService;
    use ordermq_domain::{EventKind, UserId};

    use super::*;
    use crate::testing::{CountingGateway, Fixture, PRICE, delivery_of, relay_all};

    fn handler(fixture: &Fixture, system: System, gateway: &Arc<CountingGateway>) -> SystemHandler {
        let (effects, _task) = EffectWriter::spawn(fixture.store.clone());
        SystemHandler::new(
            system,
            fixture.store.clone(),
            effects,
            gateway.clone(),
            gateway.clone(),
            Duration::from_secs(5),
            crate::testing::event_keys(),
        )
    }

    #[tokio::test]
    async fn each_system_applies_a_paid_order_once_however_often_it_is_delivered() {
        let fixture = Fixture::new().await;
        let order = fixture.paid_order("u1", 2).await;
        let paid = relay_all(&fixture)
            .await
            .into_iter()
            .find(|m| m.tag == EventKind::OrderPaid.tag())
            .expect("an OrderPaid was published");
        let gateway = Arc::new(CountingGateway::default());
        for system in System::ALL {
            let handler = handler(&fixture, system, &gateway);
            for attempt in 0..3 {
                let batch = vec![delivery_of(&paid), delivery_of(&paid)];
                assert_eq!(
                    handler.handle(batch).await,
                    Outcome::Consumed,
                    "{system:?}, delivery {attempt}"
                );
            }
        }
        let user = UserId::parse("u1").unwrap();
        let activity = fixture.orders.user_activity(user).await.unwrap();
        assert_eq!(activity.points.len(), 1);
        assert_eq!(activity.points_total, 2 * PRICE / 100);
        assert_eq!(activity.coupons.len(), 1);
        assert_eq!(activity.sms.len(), 1);
        assert_eq!(activity.shipments.len(), 1);
        assert!(
            activity.shipments[0].order_id == order.order_id,
            "the shipment is the order's"
        );
        // The third party may be called again on a redelivery (the idempotency
        // key makes that harmless); the first delivery called SMS and logistics.
        assert!(gateway.calls.load(Ordering::SeqCst) >= 2);
    }

    #[tokio::test]
    async fn an_undecodable_message_is_retried_not_acknowledged() {
        let fixture = Fixture::new().await;
        fixture.paid_order("u1", 1).await;
        let mut paid = relay_all(&fixture)
            .await
            .into_iter()
            .find(|m| m.tag == EventKind::OrderPaid.tag())
            .expect("an OrderPaid was published");
        paid.body = "{not json".into();
        let gateway = Arc::new(CountingGateway::default());
        let handler = handler(&fixture, System::Credit, &gateway);
        assert!(matches!(
            handler.handle(vec![delivery_of(&paid)]).await,
            Outcome::RetryLater(_)
        ));
        let user = UserId::parse("u1").unwrap();
        let activity = fixture.orders.user_activity(user).await.unwrap();
        assert!(activity.points.is_empty());
    }
}
