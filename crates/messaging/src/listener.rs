//! The listener bridge: where every consumer group's messages enter ordermq.
//!
//! rocketmq-client-rust calls listeners synchronously on its blocking lanes.
//! The bridge blocks that lane thread on the async [`Handler`] (never an
//! async worker), and maps [`Outcome`] to `ConsumeSuccess` / `ReconsumeLater`
//! so the broker's retry → `%RETRY%<group>` → `%DLQ%<group>` machinery applies.
//! With [`DelayedDelivery::Levels`] it also holds back messages that arrive
//! before their due time and sends them on for the rest (see [`crate::delay`]).
//!
//! It is the one place every consumer group's messages pass, before any
//! handler, before a hop, and where the delivery counters live; so it
//! verifies each message's signature there and parks the ones that fail
//! (see [`ordermq_domain::parked`]): recorded through the [`ParkingLot`],
//! counted, logged, acknowledged, never handed to the handler or sent on.
//! Its own module because this is a concern of its own: what happens to a
//! delivered message, apart from how the client connects and subscribes.
//!
//! **Waiting events come back soon.** An event that arrives before the one
//! it depends on (a refund before its order's `OrderPaid` effect,
//! [`Outcome::Waiting`]) has not failed: what it waits for is usually a
//! moment behind. "Reconsume later" would put it on the broker's growing
//! schedule (level 3 + n: 10 s, 30 s, 1 min, 2 min … hours), so under load a
//! follow-up effect would lag by minutes. rocketmq-client-rust 1.0.0 gives
//! the listener its `ConsumeConcurrentlyContext` by shared reference (its
//! `delay_level_when_next_consume` cannot be set), and a message sent to
//! `%RETRY%<group>` by a producer goes straight to the DLQ on the 1.0.0
//! broker (its send path inverts Java's `isLockAllExpire` check). So the
//! bridge acknowledges a waiting message and sends it on itself, like a
//! delay-level hop: the same message (signature included) on its topic,
//! due [`WAIT_RETRY_MS`] later (the shortest delay level), marked for this
//! group alone (other groups acknowledge it unseen) and with its count of
//! waits. After [`MAX_WAITS`] of them it is answered "reconsume later" and
//! takes the broker's schedule to the DLQ like any failure.
//!
//! **A hop is sent or the process stops.** A refused hop is a moment's
//! refusal (the client's request table or send queue full —
//! `transport.admission.queue_saturated` — or the broker answering
//! SYSTEM_BUSY), and answering "reconsume later" then is what loses a
//! message: the client's send-back is refused too, and its fallback, a send
//! to `%RETRY%<group>`, is dead-lettered at once by the 1.0.0 broker. So the
//! bridge keeps trying a hop, the pause doubling from [`HOP_BACKOFF`] up to
//! [`HOP_BACKOFF_MAX`], holding its lane meanwhile (the backpressure a busy
//! broker asks for), until it is sent or the client stops; and all the
//! groups of one client share [`HOP_PERMITS`] sends in flight, so a few
//! thousand early messages never swamp the client's request table at once.

use std::sync::Arc;

use futures_util::future::join_all;
use ordermq_domain::parked::{MAX_PARKED_BODY, ParkedMessage, Unverified, clip, verify_event};
use ordermq_domain::ports::{Delivery, Handler, Outcome, ParkingLot, PublishError};
use ordermq_domain::signing::{Keyring, Signature};
use ordermq_domain::{OutboxMessage, now_millis};
use rocketmq_client_rust::{
    ClientResult, ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus, DefaultMQProducer,
    MessageListenerConcurrently,
};
use rocketmq_model::common::message::message_ext::MessageExt;

use crate::delay::DelayedDelivery;
use crate::deliveries::GroupCounters;
use crate::producer::{
    DELIVER_AT_PROPERTY, EVENT_ID_PROPERTY, KEY_ID_PROPERTY, SIGNATURE_PROPERTY, send_outcome,
    to_message,
};

/// How many hops the groups of one client may have in flight at once:
/// below the client's table of pending requests (1,024 per connection), with
/// room for the relay's own sends.
pub(crate) const HOP_PERMITS: usize = 256;
/// The pause after a hop's first refusal; doubled after each, up to
/// [`HOP_BACKOFF_MAX`].
const HOP_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);
/// The longest pause between two tries of a refused hop.
const HOP_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(2);
/// After this many refusals of one hop, each further one is logged as a
/// warning (before: at debug level).
const HOP_WARN_AFTER: u32 = 5;

/// Names the one consumer group a message sent on for waiting is for; every
/// other group acknowledges it without handling it.
pub(crate) const FOR_GROUP_PROPERTY: &str = "ordermq_for_group";
/// How many times a message was sent on because it waited for an earlier event.
pub(crate) const WAITS_PROPERTY: &str = "ordermq_waits";
/// How soon a waiting message is tried again: with delay levels the
/// shortest level that is at least this (RocketMQ's default: 1 s), with
/// timer messages exactly this.
pub(crate) const WAIT_RETRY_MS: i64 = 1_000;
/// How many times a message is sent on for waiting before it takes the
/// broker's growing retry schedule (and, at its end, the DLQ): about a
/// minute of tries at the default shortest level.
pub(crate) const MAX_WAITS: u32 = 60;

/// The event keys and where to park what they refuse.
pub(crate) struct Verifier {
    pub(crate) keys: Keyring,
    pub(crate) parking: Arc<dyn ParkingLot>,
}

/// Adapts a synchronous RocketMQ listener callback to an async [`Handler`],
/// verifying every message first.
pub(crate) struct ListenerBridge {
    /// The consumer group's name.
    pub(crate) group: String,
    pub(crate) handler: Arc<dyn Handler>,
    /// Verifies every message before anything else happens to it (`None`:
    /// a client without event keys).
    pub(crate) verifier: Option<Verifier>,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) max_reconsume_times: i32,
    /// Sends on messages that a delay level delivered before their due time.
    pub(crate) producer: DefaultMQProducer,
    pub(crate) delayed: Arc<DelayedDelivery>,
    pub(crate) stopping: tokio::sync::watch::Receiver<bool>,
    /// This group's delivery counts.
    pub(crate) counters: Arc<GroupCounters>,
    /// The hops in flight of all this client's groups ([`HOP_PERMITS`]).
    pub(crate) hop_permits: Arc<tokio::sync::Semaphore>,
}

/// The message id the group sees: the producer's unique key, stable across
/// retries, or the broker's id.
fn msg_id_of(m: &MessageExt) -> String {
    m.get_user_property("UNIQ_KEY")
        .map(|id| id.to_string())
        .unwrap_or_else(|| m.msg_id().to_string())
}

fn property(m: &MessageExt, name: &str) -> Option<String> {
    m.get_user_property(name).map(|v| v.to_string())
}

/// Checks `m`'s signature under `keys` (see [`verify_event`]).
fn verify(keys: &Keyring, m: &MessageExt) -> Result<(), Unverified> {
    verify_event(
        keys,
        property(m, EVENT_ID_PROPERTY).as_deref(),
        property(m, KEY_ID_PROPERTY).as_deref(),
        property(m, SIGNATURE_PROPERTY).as_deref(),
        m.body_slice(),
    )
}

/// What is kept of a message `group` refused.
fn parked_message(group: &str, m: &MessageExt, reason: &Unverified, now: i64) -> ParkedMessage {
    ParkedMessage {
        group: group.to_owned(),
        msg_id: msg_id_of(m),
        topic: m.topic().to_string(),
        tag: m.get_tags().map(|t| t.to_string()).unwrap_or_default(),
        key: first_key(m),
        event_id: property(m, EVENT_ID_PROPERTY),
        key_id: property(m, KEY_ID_PROPERTY),
        reason: reason.code().to_owned(),
        detail: reason.to_string(),
        body: clip(&String::from_utf8_lossy(m.body_slice()), MAX_PARKED_BODY),
        parked_at: now,
    }
}

fn to_delivery(m: &MessageExt, max_reconsume_times: i32) -> Delivery {
    Delivery {
        msg_id: msg_id_of(m),
        topic: m.topic().to_string(),
        tag: m.get_tags().map(|t| t.to_string()).unwrap_or_default(),
        key: first_key(m),
        body: m.body_slice().to_vec(),
        reconsume_times: m.reconsume_times(),
        max_reconsume_times,
    }
}

fn first_key(m: &MessageExt) -> String {
    m.keys()
        .and_then(|keys| keys.into_iter().next())
        .unwrap_or_default()
}

/// How many times `m` was sent on for waiting.
fn waits_of(m: &MessageExt) -> u32 {
    property(m, WAITS_PROPERTY)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// `m` came back: a broker retry, or a message this bridge sent on for waiting.
fn is_returning(m: &MessageExt) -> bool {
    m.reconsume_times() > 0 || waits_of(m) > 0
}

/// When `m` is due, if it carries a due time.
fn deliver_at(m: &MessageExt) -> Option<i64> {
    m.get_user_property(DELIVER_AT_PROPERTY)?.parse().ok()
}

impl ListenerBridge {
    /// Sends `early` on for what remains of each one's wait: the same message
    /// (topic, tag, key, body, event id, due time, and its original key id
    /// and signature: verified, never re-signed) built the way the relay
    /// builds it, so it gets the delay level that fits the rest.
    ///
    /// `wait`: these wait for an earlier event; each is marked for this group
    /// alone, with its count of waits raised by one.
    ///
    /// Each is tried until it is sent ([`Self::send_until_sent`]): an error
    /// means a message could not be built, or the client is stopping.
    async fn hop(&self, early: &[(&MessageExt, i64)], wait: bool) -> Result<(), PublishError> {
        let now = now_millis();
        let sends = early.iter().map(|&(m, at)| {
            async move {
                let outbox = OutboxMessage {
                    id: 0,
                    topic: m.topic().to_string(),
                    tag: m.get_tags().map(|t| t.to_string()).unwrap_or_default(),
                    key: first_key(m),
                    event_id: m
                        .get_user_property(EVENT_ID_PROPERTY)
                        .map(|id| id.to_string())
                        .unwrap_or_default(),
                    body: String::from_utf8(m.body_slice().to_vec())
                        .map_err(|e| PublishError(format!("delayed message body: {e}")))?,
                    deliver_at: Some(at),
                    attempts: 0,
                };
                // Verified already (unless this client has no keys): its own
                // signature goes with it.
                let signature = match (
                    property(m, KEY_ID_PROPERTY),
                    property(m, SIGNATURE_PROPERTY),
                ) {
                    (Some(key_id), Some(hex)) => Some(Signature { key_id, hex }),
                    _ => None,
                };
                let marks = if wait {
                    vec![
                        (FOR_GROUP_PROPERTY, self.group.clone()),
                        (WAITS_PROPERTY, (waits_of(m) + 1).to_string()),
                    ]
                } else if let Some(group) = property(m, FOR_GROUP_PROPERTY) {
                    // A waiting message that also hops keeps its marks.
                    vec![
                        (FOR_GROUP_PROPERTY, group),
                        (WAITS_PROPERTY, waits_of(m).to_string()),
                    ]
                } else {
                    Vec::new()
                };
                let message = to_message(&outbox, &self.delayed, now, signature.as_ref(), &marks)?;
                self.send_until_sent(message).await
            }
        });
        join_all(sends).await.into_iter().collect()
    }

    /// Sends one hop, trying again after each refusal (the pause doubling
    /// from [`HOP_BACKOFF`] to [`HOP_BACKOFF_MAX`]) until it is sent; gives
    /// up only when the client stops (the message then comes back from the
    /// group's consume offset or its broker retry, as any unacknowledged one).
    async fn send_until_sent(
        &self,
        message: rocketmq_model::common::message::message_single::Message,
    ) -> Result<(), PublishError> {
        let mut stopping = self.stopping.clone();
        let mut backoff = HOP_BACKOFF;
        let mut refusals = 0u32;
        loop {
            let sent = {
                let _permit = self
                    .hop_permits
                    .acquire()
                    .await
                    .map_err(|_| PublishError("the client is stopping".into()))?;
                send_outcome(self.producer.clone().send(message.clone()).await)
            };
            let Err(e) = sent else { return Ok(()) };
            refusals += 1;
            if refusals >= HOP_WARN_AFTER {
                tracing::warn!(group = %self.group, error = %e, refusals,
                    "a message sent on is still refused; trying again until it is sent");
            } else {
                tracing::debug!(group = %self.group, error = %e, refusals,
                    "a message sent on was refused; trying again");
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                Ok(_) = stopping.wait_for(|stopping| *stopping) => {
                    return Err(PublishError(format!("ordermq is shutting down; the last refusal: {}", e.0)));
                }
            }
            backoff = (backoff * 2).min(HOP_BACKOFF_MAX);
        }
    }

    /// Records, logs and counts the messages that failed verification.
    /// `Ok(new)`: how many were recorded for the first time.
    async fn park(
        &self,
        parking: &dyn ParkingLot,
        refused: &[(&MessageExt, Unverified)],
        now: i64,
    ) -> Result<u64, String> {
        let mut new = 0;
        for (m, reason) in refused {
            let parked = parked_message(&self.group, m, reason, now);
            tracing::warn!(
                group = %self.group,
                msg_id = %parked.msg_id,
                topic = %parked.topic,
                tag = %parked.tag,
                key = %parked.key,
                event_id = parked.event_id.as_deref().unwrap_or("-"),
                key_id = parked.key_id.as_deref().unwrap_or("-"),
                reason = %parked.reason,
                "parked a message that failed verification ({reason}); it is not applied"
            );
            match parking.park(parked).await {
                Ok(fresh) => new += u64::from(fresh),
                Err(e) => return Err(format!("could not record a parked message: {e}")),
            }
        }
        Ok(new)
    }

    /// Verifies every message, parks the ones that fail, and hands the
    /// others on ([`Self::consume_verified`]). The counters see parked
    /// messages as part of the batch: if the batch comes back, so do they.
    async fn consume(&self, msgs: &[&MessageExt]) -> Outcome {
        let now = now_millis();
        // Sent on by another group for waiting: not this group's (it had
        // the original already).
        let mine: Vec<&MessageExt> = msgs
            .iter()
            .copied()
            .filter(|m| property(m, FOR_GROUP_PROPERTY).is_none_or(|g| g == self.group))
            .collect();
        if mine.is_empty() {
            return Outcome::Consumed;
        }
        let msgs = mine.as_slice();
        let Some(verifier) = &self.verifier else {
            return self.consume_verified(msgs, now).await;
        };
        let (verified, refused): (Vec<_>, Vec<_>) = msgs
            .iter()
            .map(|&m| (m, verify(&verifier.keys, m).err()))
            .partition(|(_, refused)| refused.is_none());
        let verified: Vec<&MessageExt> = verified.into_iter().map(|(m, _)| m).collect();
        let refused: Vec<(&MessageExt, Unverified)> = refused
            .into_iter()
            .filter_map(|(m, reason)| Some((m, reason?)))
            .collect();
        if refused.is_empty() {
            return self.consume_verified(&verified, now).await;
        }
        let redelivered = refused.iter().filter(|(m, _)| is_returning(m)).count() as u64;
        let returning = refused
            .iter()
            .filter(|(m, _)| m.reconsume_times() < self.max_reconsume_times)
            .count() as u64;
        match self.park(verifier.parking.as_ref(), &refused, now).await {
            Ok(new) => {
                let outcome = self.consume_verified(&verified, now).await;
                // A waiting answer acknowledges the batch: parked ones stay.
                let comes_back = matches!(outcome, Outcome::RetryLater(_));
                self.counters
                    .park(new, redelivered, if comes_back { returning } else { 0 });
                outcome
            }
            Err(e) => {
                // Nothing was handed to the handler: the whole batch comes back.
                tracing::warn!(group = %self.group, error = %e, "RocketMQ will redeliver the batch");
                self.counters.park(0, redelivered, returning);
                let due = verified.iter().filter(|m| is_returning(m)).count() as u64;
                let back = verified
                    .iter()
                    .filter(|m| m.reconsume_times() < self.max_reconsume_times)
                    .count() as u64;
                self.counters.enter(0, due);
                self.counters.leave(0, false, back);
                Outcome::RetryLater(e)
            }
        }
    }

    /// Hands verified messages on: early ones hop (delay levels), due ones
    /// go to the handler.
    async fn consume_verified(&self, msgs: &[&MessageExt], now: i64) -> Outcome {
        // Only delay levels deliver early; a timer message is never held back.
        let hops = matches!(self.delayed.as_ref(), DelayedDelivery::Levels(_));
        let (early, due): (Vec<_>, Vec<_>) = msgs
            .iter()
            .map(|&m| (m, deliver_at(m).filter(|&at| hops && at > now)))
            .partition(|(_, early)| early.is_some());
        if !early.is_empty() {
            let early: Vec<_> = early
                .into_iter()
                .filter_map(|(m, at)| Some((m, at?)))
                .collect();
            if let Err(e) = self.hop(&early, false).await {
                // Nothing was handed to the handler: the whole batch comes back.
                tracing::warn!(error = %e, "could not send an early delayed message on; RocketMQ will redeliver it");
                return Outcome::RetryLater(e.0);
            }
            tracing::trace!(messages = early.len(), "sent early delayed messages on");
        }
        if due.is_empty() {
            return Outcome::Consumed;
        }
        let due: Vec<&MessageExt> = due.into_iter().map(|(m, _)| m).collect();
        let batch: Vec<Delivery> = due
            .iter()
            .map(|m| to_delivery(m, self.max_reconsume_times))
            .collect();
        let messages = batch.len() as u64;
        // Below the last try a "retry later" comes back; on it, the broker
        // moves the message to the group's DLQ instead.
        let will_return = batch
            .iter()
            .filter(|d| d.reconsume_times < d.max_reconsume_times)
            .count() as u64;
        let returning = due.iter().filter(|m| is_returning(m)).count() as u64;
        self.counters.enter(messages, returning);
        let mut stopping = self.stopping.clone();
        let outcome = tokio::select! {
            outcome = self.handler.handle(batch) => outcome,
            // A handler waiting out a backoff must not outlive the runtime
            // its timers belong to (tokio panics then).
            Ok(_) = stopping.wait_for(|stopping| *stopping) => {
                Outcome::RetryLater("ordermq is shutting down".into())
            }
        };
        let outcome = match outcome {
            Outcome::Waiting(waiting) => self.send_waiting_on(&due, waiting).await,
            other => other,
        };
        match &outcome {
            Outcome::Waiting(waiting) => self
                .counters
                .leave_waiting(messages, waiting.msg_ids.len() as u64),
            other => {
                let consumed = matches!(other, Outcome::Consumed);
                self.counters.leave(messages, consumed, will_return);
            }
        }
        outcome
    }

    /// Sends the waiting messages of `due` on to come back in
    /// [`WAIT_RETRY_MS`]. `Waiting` if they were (the batch is acknowledged);
    /// "retry later" for the whole batch if one has waited [`MAX_WAITS`]
    /// times already (the broker's schedule from here), or a send failed.
    async fn send_waiting_on(
        &self,
        due: &[&MessageExt],
        waiting: ordermq_domain::ports::Waiting,
    ) -> Outcome {
        let waits: Vec<&MessageExt> = due
            .iter()
            .copied()
            .filter(|m| waiting.msg_ids.contains(&msg_id_of(m)))
            .collect();
        if let Some(m) = waits.iter().find(|m| waits_of(m) >= MAX_WAITS) {
            tracing::warn!(group = %self.group, msg_id = %msg_id_of(m), reason = %waiting.reason,
                "an event waited {MAX_WAITS} times; RocketMQ's retry schedule takes it from here");
            return Outcome::RetryLater(waiting.reason);
        }
        let at = now_millis() + WAIT_RETRY_MS;
        let hops: Vec<(&MessageExt, i64)> = waits.iter().map(|&m| (m, at)).collect();
        match self.hop(&hops, true).await {
            Ok(()) => {
                tracing::debug!(group = %self.group, messages = hops.len(), reason = %waiting.reason,
                    "events waiting for an earlier one; tried again soon");
                Outcome::Waiting(waiting)
            }
            Err(e) => {
                tracing::warn!(group = %self.group, error = %e, "could not send a waiting event on; RocketMQ will redeliver its batch");
                Outcome::RetryLater(waiting.reason)
            }
        }
    }
}

impl MessageListenerConcurrently for ListenerBridge {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        _context: &ConsumeConcurrentlyContext,
    ) -> ClientResult<ConsumeConcurrentlyStatus> {
        // This runs on a client blocking-lane thread, never an async worker,
        // so blocking it on the handler is allowed and starves nothing.
        Ok(match self.runtime.block_on(self.consume(msgs)) {
            // The waiting ones were sent on already (`send_waiting_on`).
            Outcome::Consumed | Outcome::Waiting(_) => ConsumeConcurrentlyStatus::ConsumeSuccess,
            Outcome::RetryLater(_) => ConsumeConcurrentlyStatus::ReconsumeLater,
        })
    }
}
