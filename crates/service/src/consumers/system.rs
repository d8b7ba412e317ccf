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
//! Third-party calls carry the event id as an idempotency key and are bounded
//! by a timeout (a provider that hangs must not pin this group's listener
//! threads); a full refund cancels the carrier's booking if the parcel is
//! not collected yet. Any failure
//! answers "reconsume later": the broker retries with backoff and, after
//! `max_reconsume_times`, moves the message to `%DLQ%<group>`; the last
//! failure is recorded so the order's page shows the group as `failed`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use ordermq_domain::event::OrderRefundRequested;
use ordermq_domain::fanout::coupon_code;
use ordermq_domain::fanout::{effect_for, reversal_for, reversal_needs_gateway, sms_text_for};

use ordermq_domain::ports::{
    BoxFuture, Cancellation, Delivery, GatewayError, Handler, LogisticsGateway, Outcome, SmsGateway,
};
use ordermq_domain::signing::Keyring;
use ordermq_domain::{Effect, OrderEvent, OrderPaid, System, now_millis};
use ordermq_store::{Applied, EffectRecord, Store};

use super::park_undecodable;
use crate::group_commit::EffectWriter;

/// The consumer logic of one downstream system.
#[derive(Clone)]
pub struct SystemHandler {
    system: System,
    store: Store,
    writer: EffectWriter,
    gateways: SystemGateways,
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

/// The third parties a downstream system may call, each with how long one
/// call may take (an adapter's own retries included).
#[derive(Clone)]
pub struct SystemGateways {
    /// Push's SMS gateway.
    pub sms: Arc<dyn SmsGateway>,
    /// The longest one SMS call may take.
    pub sms_timeout: Duration,
    /// The warehouse's logistics system (book, cancel).
    pub logistics: Arc<dyn LogisticsGateway>,
    /// The longest one logistics call may take.
    pub logistics_timeout: Duration,
}

impl std::fmt::Debug for SystemGateways {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemGateways")
            .field("sms_timeout", &self.sms_timeout)
            .field("logistics_timeout", &self.logistics_timeout)
            .finish_non_exhaustive()
    }
}

/// Waits for a third party at most `timeout`; a call that takes longer fails.
async fn bounded<T>(
    timeout: Duration,
    system: &str,
    call: impl Future<Output = Result<T, GatewayError>>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, call).await {
        Ok(answered) => answered.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "{system} did not answer within {} ms",
            timeout.as_millis()
        )),
    }
}

/// Why an event's effect was not produced this time.
#[derive(Debug)]
enum NotApplied {
    /// It waits for an earlier event (the order's `OrderPaid` effect here).
    Waits(String),
    /// A third party or the storage failed.
    Failed(String),
}

impl From<String> for NotApplied {
    fn from(reason: String) -> Self {
        Self::Failed(reason)
    }
}

impl SystemHandler {
    /// `gateways`: the third parties and their timeouts. `event_keys`: the
    /// keys events are signed with; marketing's coupon codes are keyed with
    /// the signing one.
    pub fn new(
        system: System,
        store: Store,
        writer: EffectWriter,
        gateways: SystemGateways,
        event_keys: Keyring,
    ) -> Self {
        Self {
            system,
            store,
            writer,
            gateways,
            event_keys,
        }
    }

    /// Sends an SMS, within the SMS timeout.
    async fn send_sms(&self, event_id: &str, user: &str, text: &str) -> Result<String, String> {
        bounded(
            self.gateways.sms_timeout,
            "sms gateway",
            self.gateways.sms.send(event_id, user, text),
        )
        .await
    }

    /// A full refund's reversal in the warehouse: the carrier's booking is
    /// cancelled if the parcel is still here (`CREATED`). A carrier that has
    /// it already answers "too late", and the shipment stays as it is.
    async fn cancel_booking(
        &self,
        event_id: &str,
        refund: &OrderRefundRequested,
    ) -> Result<Effect, String> {
        let cancel = ordermq_domain::fanout::reversal_for(self.system, refund, String::new());
        let tracking_no = self
            .store
            .cancellable_tracking_no(&refund.order_id)
            .await
            .map_err(|e| e.to_string())?;
        let Some(tracking_no) = tracking_no else {
            // Collected or cancelled already: recording the reversal changes no row.
            return Ok(cancel);
        };
        let answer = bounded(
            self.gateways.logistics_timeout,
            "logistics system",
            self.gateways.logistics.cancel_shipment(
                event_id,
                refund.order_id.as_str(),
                &tracking_no,
            ),
        )
        .await?;
        Ok(match answer {
            Cancellation::Cancelled => cancel,
            Cancellation::TooLate => Effect::Nothing {
                system: self.system,
                order_id: refund.order_id.clone(),
            },
        })
    }

    /// The effect of `paid` in this system, calling the third party where there is one.
    async fn effect(&self, event_id: &str, paid: &OrderPaid) -> Result<Effect, String> {
        let external_ref = match self.system {
            System::Credit => String::new(),
            // Keyed by the event: a redelivery derives the same code.
            System::Marketing => coupon_code(&self.event_keys, event_id),
            System::Push => {
                self.send_sms(event_id, paid.user_id.as_str(), &sms_text_for(paid))
                    .await?
            }
            // A carrier that hangs must not hold this consumer thread for ever.
            System::Warehouse => {
                bounded(
                    self.gateways.logistics_timeout,
                    "logistics system",
                    self.gateways.logistics.create_shipment(event_id, paid),
                )
                .await?
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
    ) -> Result<Effect, NotApplied> {
        let waiting = || {
            Err(NotApplied::Waits(format!(
                "waiting for order {}'s OrderPaid effect in {} first",
                event.order_id(),
                self.system.consumer_group()
            )))
        };
        match event {
            OrderEvent::OrderPaid(paid) => Ok(self.effect(event_id, paid).await?),
            OrderEvent::OrderRefundRequested(refund) => {
                if refund.reverse_effects && !paid_here {
                    return waiting();
                }
                if !reversal_needs_gateway(self.system, refund) {
                    return Ok(reversal_for(self.system, refund, String::new()));
                }
                match self.system {
                    System::Warehouse => Ok(self.cancel_booking(event_id, refund).await?),
                    _ => {
                        let external_ref = self
                            .send_sms(
                                event_id,
                                refund.user_id.as_str(),
                                &ordermq_domain::fanout::refund_sms_text_for(refund),
                            )
                            .await?;
                        Ok(reversal_for(self.system, refund, external_ref))
                    }
                }
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
                    // Unreadable now means unreadable on every retry: parked
                    // on its own (acknowledged, kept for operators), so it
                    // neither comes back nor holds its batch back.
                    if let Err(reason) =
                        park_undecodable(&self.store, group, &delivery, &e.to_string()).await
                    {
                        first_failure.get_or_insert(reason);
                    }
                }
            }
        }
        // Push and warehouse skip what they already applied before calling
        // their third party again. Credit and marketing call nobody: the
        // inbox insert alone drops a redelivery, one statement fewer per batch.
        // What they skip still goes to the writer as "nothing to do": its
        // inbox row is there, so it changes nothing but the group's receipt,
        // queued again (the event came back: its receipt may have been lost).
        let mut seen_before = Vec::new();
        if matches!(self.system, System::Push | System::Warehouse) {
            let ids: Vec<String> = events.iter().map(|(_, id, _)| id.clone()).collect();
            let applied = match self.store.applied_among(self.system, &ids).await {
                Ok(applied) => applied,
                Err(e) => return Outcome::RetryLater(e.to_string()),
            };
            events.retain(|(delivery, id, event)| {
                let fresh = !applied.contains(id);
                if !fresh {
                    seen_before.push(EffectRecord {
                        event_id: id.clone(),
                        msg_id: delivery.msg_id.clone(),
                        effect: Effect::Nothing {
                            system: self.system,
                            order_id: event.order_id().clone(),
                        },
                    });
                }
                fresh
            });
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
        let mut records = seen_before;
        let mut waiting = Vec::new();
        for ((delivery, event_id, event), attempt) in events.iter().zip(attempts) {
            match attempt {
                Ok(effect) => records.push(EffectRecord {
                    event_id: event_id.clone(),
                    msg_id: delivery.msg_id.clone(),
                    effect,
                }),
                // Not a failure: tried again soon, never dead-lettered for it.
                Err(NotApplied::Waits(reason)) => {
                    tracing::debug!(group, event_id = %event_id, reason = %reason, "event waits for an earlier one");
                    waiting.push((delivery.msg_id.clone(), reason));
                }
                Err(NotApplied::Failed(reason)) => {
                    self.note_failure(delivery, event_id, event.order_id().as_str(), &reason)
                        .await;
                    first_failure.get_or_insert(reason);
                }
            }
        }
        let answers = self.writer.apply(records.clone()).await;
        let mut outcomes = Vec::with_capacity(answers.len());
        for (record, answer) in records.iter().zip(answers) {
            match answer {
                Ok(applied) => outcomes.push(applied),
                // Only this record failed: the others are committed, and
                // are skipped when the batch comes back.
                Err(reason) => {
                    if let Some((delivery, event_id, event)) =
                        events.iter().find(|(_, id, _)| *id == record.event_id)
                    {
                        self.note_failure(delivery, event_id, event.order_id().as_str(), &reason)
                            .await;
                    }
                    first_failure.get_or_insert(reason);
                }
            }
        }
        let skipped = outcomes.iter().filter(|o| **o == Applied::Already).count();
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
        Outcome::of_batch(first_failure, waiting)
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

    use ordermq_domain::parked::UNDECODABLE;
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
            SystemGateways {
                sms: gateway.clone(),
                sms_timeout: Duration::from_secs(5),
                logistics: gateway.clone(),
                logistics_timeout: Duration::from_secs(5),
            },
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
        // One receipt per group and batch (three deliveries: three
        // receipts, each naming the event once), and once sent, another by
        // the next delivery (push and warehouse skip the event before their
        // writer).
        let named = |row: &ordermq_domain::OutboxMessage| {
            ordermq_domain::reconcile::Receipt::from_json(row.body.as_bytes())
                .unwrap()
                .event_ids
        };
        let paid_id = [OrderEvent::paid_event_id(&order.order_id)];
        for system in System::ALL {
            let claim = |acked: Vec<i64>| {
                let store = fixture.store.clone();
                async move {
                    store
                        .relay_receipts(system, "r", &acked, 10, 1_000, now_millis())
                        .await
                        .unwrap()
                }
            };
            let receipts = claim(Vec::new()).await;
            assert_eq!(receipts.len(), 3, "{system:?}");
            for receipt in &receipts {
                assert_eq!(named(receipt), paid_id, "{system:?}");
            }
            assert!(
                claim(receipts.iter().map(|r| r.id).collect())
                    .await
                    .is_empty()
            );
            let handler = handler(&fixture, system, &gateway);
            assert_eq!(
                handler.handle(vec![delivery_of(&paid)]).await,
                Outcome::Consumed
            );
            let again = claim(Vec::new()).await;
            assert_eq!(again.len(), 1, "{system:?}: a new receipt names it again");
            assert_eq!(named(&again[0]), paid_id);
        }
    }

    /// A carrier that books at once and records each cancellation's
    /// `(idempotency key, order, tracking number)`; answers `answer` to them.
    struct RecordingCarrier {
        answer: Cancellation,
        cancels: std::sync::Mutex<Vec<(String, String, String)>>,
    }

    impl RecordingCarrier {
        fn answering(answer: Cancellation) -> Arc<Self> {
            Arc::new(Self {
                answer,
                cancels: std::sync::Mutex::new(Vec::new()),
            })
        }

        fn cancels(&self) -> Vec<(String, String, String)> {
            self.cancels.lock().expect("not poisoned").clone()
        }
    }

    impl LogisticsGateway for RecordingCarrier {
        fn create_shipment<'a>(
            &'a self,
            idempotency_key: &'a str,
            _order: &'a OrderPaid,
        ) -> BoxFuture<'a, Result<String, GatewayError>> {
            Box::pin(async move { Ok(format!("TRK-{}", idempotency_key.len())) })
        }

        fn cancel_shipment<'a>(
            &'a self,
            idempotency_key: &'a str,
            order_id: &'a str,
            tracking_no: &'a str,
        ) -> BoxFuture<'a, Result<Cancellation, GatewayError>> {
            self.cancels.lock().expect("not poisoned").push((
                idempotency_key.to_owned(),
                order_id.to_owned(),
                tracking_no.to_owned(),
            ));
            let answer = self.answer;
            Box::pin(async move { Ok(answer) })
        }
    }

    /// An SMS gateway that never answers.
    struct HangingSms;

    impl SmsGateway for HangingSms {
        fn send<'a>(
            &'a self,
            _idempotency_key: &'a str,
            _to_user: &'a str,
            _text: &'a str,
        ) -> BoxFuture<'a, Result<String, GatewayError>> {
            Box::pin(std::future::pending())
        }
    }

    /// A paid order booked by the warehouse, then refunded whole: the
    /// refund's delivery, the order and the warehouse's handler.
    async fn booked_then_refunded(
        fixture: &Fixture,
        carrier: &Arc<RecordingCarrier>,
    ) -> (Delivery, ordermq_domain::view::OrderView, SystemHandler) {
        let order = fixture.paid_order("u1", 1).await;
        let (effects, _task) = EffectWriter::spawn(fixture.store.clone());
        let handler = SystemHandler::new(
            System::Warehouse,
            fixture.store.clone(),
            effects,
            SystemGateways {
                sms: Arc::new(CountingGateway::default()),
                sms_timeout: Duration::from_secs(5),
                logistics: carrier.clone(),
                logistics_timeout: Duration::from_secs(5),
            },
            crate::testing::event_keys(),
        );
        let paid = relay_all(fixture)
            .await
            .into_iter()
            .find(|m| m.tag == EventKind::OrderPaid.tag())
            .expect("an OrderPaid was published");
        assert_eq!(
            handler.handle(vec![delivery_of(&paid)]).await,
            Outcome::Consumed
        );
        fixture
            .orders
            .refund(
                ordermq_domain::RefundRequest::new(
                    order.order_id.clone(),
                    ordermq_domain::IdempotencyKey::parse("refund-1").expect("key"),
                    None,
                    None,
                )
                .expect("valid request"),
            )
            .await
            .expect("refund recorded");
        let refund = relay_all(fixture)
            .await
            .into_iter()
            .find(|m| m.tag == EventKind::OrderRefundRequested.tag())
            .expect("an OrderRefundRequested was published");
        (delivery_of(&refund), order, handler)
    }

    async fn shipment_status(fixture: &Fixture) -> (String, String) {
        let user = UserId::parse("u1").unwrap();
        let activity = fixture.orders.user_activity(user).await.unwrap();
        let shipment = &activity.shipments[0];
        (shipment.tracking_no.clone(), shipment.status.clone())
    }

    #[tokio::test]
    async fn a_full_refund_cancels_the_booking_once_however_often_it_is_delivered() {
        let fixture = Fixture::new().await;
        let carrier = RecordingCarrier::answering(Cancellation::Cancelled);
        let (refund, order, handler) = booked_then_refunded(&fixture, &carrier).await;
        let (tracking_no, _) = shipment_status(&fixture).await;
        for _ in 0..3 {
            assert_eq!(
                handler.handle(vec![refund.clone()]).await,
                Outcome::Consumed
            );
        }
        let event_id = OrderEvent::from_json(&refund.body).unwrap().event_id();
        assert_eq!(
            carrier.cancels(),
            [(event_id, order.order_id.to_string(), tracking_no)],
            "one cancellation, keyed by the refund's event"
        );
        assert_eq!(shipment_status(&fixture).await.1, "CANCELLED");
    }

    #[tokio::test]
    async fn a_carrier_that_has_the_parcel_already_keeps_the_shipment() {
        let fixture = Fixture::new().await;
        let carrier = RecordingCarrier::answering(Cancellation::TooLate);
        let (refund, _order, handler) = booked_then_refunded(&fixture, &carrier).await;
        assert_eq!(handler.handle(vec![refund]).await, Outcome::Consumed);
        assert_eq!(carrier.cancels().len(), 1);
        assert_eq!(shipment_status(&fixture).await.1, "CREATED");
    }

    #[tokio::test]
    async fn an_sms_gateway_that_never_answers_is_given_up_after_the_timeout() {
        let fixture = Fixture::new().await;
        fixture.paid_order("u1", 1).await;
        let paid = relay_all(&fixture)
            .await
            .into_iter()
            .find(|m| m.tag == EventKind::OrderPaid.tag())
            .expect("an OrderPaid was published");
        let (effects, _task) = EffectWriter::spawn(fixture.store.clone());
        let handler = SystemHandler::new(
            System::Push,
            fixture.store.clone(),
            effects,
            SystemGateways {
                sms: Arc::new(HangingSms),
                sms_timeout: Duration::from_millis(50),
                logistics: Arc::new(CountingGateway::default()),
                logistics_timeout: Duration::from_secs(5),
            },
            crate::testing::event_keys(),
        );
        let Outcome::RetryLater(reason) = handler.handle(vec![delivery_of(&paid)]).await else {
            panic!("an SMS nobody answered is not sent");
        };
        assert!(reason.contains("did not answer within 50 ms"), "{reason}");
        let user = UserId::parse("u1").unwrap();
        assert!(
            fixture
                .orders
                .user_activity(user)
                .await
                .unwrap()
                .sms
                .is_empty()
        );
    }

    /// A message whose body is not an event is parked on its own (kept,
    /// acknowledged, never retried); the batch it came with is applied.
    #[tokio::test]
    async fn an_undecodable_message_is_parked_alone_and_its_batch_applied() {
        let fixture = Fixture::new().await;
        fixture.paid_order("u1", 1).await;
        fixture.paid_order("u2", 1).await;
        let paid: Vec<_> = relay_all(&fixture)
            .await
            .into_iter()
            .filter(|m| m.tag == EventKind::OrderPaid.tag())
            .collect();
        let mut broken = paid[0].clone();
        broken.body = "{not json".into();
        let gateway = Arc::new(CountingGateway::default());
        let handler = handler(&fixture, System::Credit, &gateway);
        assert_eq!(
            handler
                .handle(vec![delivery_of(&broken), delivery_of(&paid[1])])
                .await,
            Outcome::Consumed
        );
        let parked = fixture.store.parked(Some("credit_group")).await.unwrap();
        assert_eq!(parked.len(), 1);
        assert_eq!(parked[0].reason, UNDECODABLE);
        assert_eq!(parked[0].msg_id, delivery_of(&broken).msg_id);
        assert_eq!(parked[0].body, "{not json");
        let points = |user: &str| {
            let user = UserId::parse(user).unwrap();
            let orders = fixture.orders.clone();
            async move { orders.user_activity(user).await.unwrap().points.len() }
        };
        assert_eq!(points("u1").await, 0, "the broken copy applied nothing");
        assert_eq!(points("u2").await, 1, "the rest of its batch applied");
    }
}
