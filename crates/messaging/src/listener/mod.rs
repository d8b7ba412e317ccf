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
//! moment behind. A retry would put it on RocketMQ's growing schedule
//! (level 3 + n: 10 s, 30 s, 1 min, 2 min … hours), so under load a
//! follow-up effect would lag by minutes. So the bridge acknowledges a
//! waiting message and sends it on itself, due [`WAIT_RETRY_MS`] later (the
//! shortest delay level), marked for this group alone (other groups
//! acknowledge it unseen) and with its count of waits. After [`MAX_WAITS`]
//! of them it is retried like any failure.
//!
//! **Failures are retried by the bridge, not the client.** A handler's
//! "retry later" is answered by sending the failed messages on, due after
//! RocketMQ's delay for their try, and a message past its last try to the
//! group's dead-letter queue: the client's own send-back dead-letters a
//! message at once whenever the client or broker is busy (`send_on` says
//! why). The client is asked to redeliver a batch only when the bridge
//! cannot send (the process stopping).

use std::sync::Arc;

use ordermq_domain::now_millis;
use ordermq_domain::parked::{MAX_PARKED_BODY, ParkedMessage, Unverified, clip, verify_event};
use ordermq_domain::ports::{Delivery, Handler, Outcome, ParkingLot};
use ordermq_domain::signing::Keyring;
use rocketmq_client_rust::{
    ClientResult, ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus, DefaultMQProducer,
    MessageListenerConcurrently,
};
use rocketmq_model::common::message::message_ext::MessageExt;

use crate::delay::{DelayLevels, DelayedDelivery};
use crate::deliveries::GroupCounters;
use crate::producer::{
    DELIVER_AT_PROPERTY, EVENT_ID_PROPERTY, KEY_ID_PROPERTY, SIGNATURE_PROPERTY,
};

mod send_on;

pub(crate) use send_on::HOP_PERMITS;
use send_on::Hop;

/// Names the one consumer group a message sent on for waiting is for; every
/// other group acknowledges it without handling it.
pub(crate) const FOR_GROUP_PROPERTY: &str = "ordermq_for_group";
/// How many times a message was sent on because it waited for an earlier event.
pub(crate) const WAITS_PROPERTY: &str = "ordermq_waits";
/// How many times a message was sent on because its handler answered
/// "retry later" (the bridge's retries; the broker counts its own in
/// `reconsume_times`).
pub(crate) const RETRIES_PROPERTY: &str = "ordermq_retries";
/// How soon a waiting message is tried again: with delay levels the
/// shortest level that is at least this (RocketMQ's default: 1 s), with
/// timer messages exactly this.
pub(crate) const WAIT_RETRY_MS: i64 = 1_000;
/// How many times a message is sent on for waiting before it is retried on
/// RocketMQ's growing schedule (and, at its end, dead-lettered): about a
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
    /// The broker's delay levels: a retry waits level 3 + tries.
    pub(crate) retry_levels: DelayLevels,
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
        // Tries so far: the broker's redeliveries and the bridge's retries.
        reconsume_times: tries_of(m),
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

/// How many times this bridge retried `m` (see [`RETRIES_PROPERTY`]).
fn retries_of(m: &MessageExt) -> i32 {
    property(m, RETRIES_PROPERTY)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// How many times `m` was tried and failed: retried by the broker or by
/// this bridge.
fn tries_of(m: &MessageExt) -> i32 {
    m.reconsume_times().saturating_add(retries_of(m))
}

/// `m` came back: retried by the broker or this bridge, or sent on for waiting.
fn is_returning(m: &MessageExt) -> bool {
    tries_of(m) > 0 || waits_of(m) > 0
}

/// What the client is told about a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Acknowledged: every message handled, parked, or sent on by the bridge.
    Done,
    /// Not acknowledged: something had to come back and the bridge could
    /// not send it on (the client is stopping); the client's redelivery
    /// takes the batch.
    Redeliver,
}

/// When `m` is due, if it carries a due time.
fn deliver_at(m: &MessageExt) -> Option<i64> {
    m.get_user_property(DELIVER_AT_PROPERTY)?.parse().ok()
}

impl ListenerBridge {
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
    async fn consume(&self, msgs: &[&MessageExt]) -> Answer {
        let now = now_millis();
        // Sent on by another group for waiting or a retry: not this group's
        // (it had the original already).
        let mine: Vec<&MessageExt> = msgs
            .iter()
            .copied()
            .filter(|m| property(m, FOR_GROUP_PROPERTY).is_none_or(|g| g == self.group))
            .collect();
        if mine.is_empty() {
            return Answer::Done;
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
                let answer = self.consume_verified(&verified, now).await;
                // Acknowledged, the parked ones stay parked.
                let comes_back = answer == Answer::Redeliver;
                self.counters
                    .park(new, redelivered, if comes_back { returning } else { 0 });
                answer
            }
            Err(e) => {
                // Nothing was handed to the handler: the whole batch is
                // retried, to be verified and parked again.
                tracing::warn!(group = %self.group, error = %e, "the batch will be retried");
                let redelivered = msgs.iter().filter(|m| is_returning(m)).count() as u64;
                match self.retry(msgs, now_millis()).await {
                    Ok(_) => {
                        // The retries were owed as they were sent.
                        self.counters.park(0, redelivered, 0);
                        Answer::Done
                    }
                    Err(e) => {
                        tracing::warn!(group = %self.group, error = %e, "RocketMQ will redeliver the batch");
                        let back = msgs
                            .iter()
                            .filter(|m| m.reconsume_times() < self.max_reconsume_times)
                            .count() as u64;
                        self.counters.park(0, redelivered, back);
                        Answer::Redeliver
                    }
                }
            }
        }
    }

    /// Hands verified messages on: early ones hop (delay levels), due ones
    /// go to the handler, and what it did not apply is sent on to come back
    /// ([`Self::send_waiting_on`], [`Self::retry`]).
    async fn consume_verified(&self, msgs: &[&MessageExt], now: i64) -> Answer {
        // Only delay levels deliver early; a timer message is never held back.
        // Nor is one coming back from a wait or a retry: its due time only
        // spaced the tries, and it was stamped by its sender's wall clock,
        // which may have been ahead (a step since put right, another host):
        // held to it, it would wait as long as the step. The handler sees
        // it, and a close still checks its own due time.
        let hops = matches!(self.delayed.as_ref(), DelayedDelivery::Levels(_));
        let (early, due): (Vec<_>, Vec<_>) = msgs
            .iter()
            .map(|&m| {
                let held = hops && !is_returning(m);
                (m, deliver_at(m).filter(|&at| held && at > now))
            })
            .partition(|(_, early)| early.is_some());
        if !early.is_empty() {
            let early: Vec<_> = early
                .into_iter()
                .filter_map(|(m, at)| Some((m, at?)))
                .collect();
            if let Err(e) = self.hop(&early, Hop::Early, now).await {
                // Nothing was handed to the handler: the whole batch comes back.
                tracing::warn!(error = %e, "could not send an early delayed message on; RocketMQ will redeliver it");
                return Answer::Redeliver;
            }
            tracing::trace!(messages = early.len(), "sent early delayed messages on");
        }
        if due.is_empty() {
            return Answer::Done;
        }
        let due: Vec<&MessageExt> = due.into_iter().map(|(m, _)| m).collect();
        let batch: Vec<Delivery> = due
            .iter()
            .map(|m| to_delivery(m, self.max_reconsume_times))
            .collect();
        let messages = batch.len() as u64;
        let returning = due.iter().filter(|m| is_returning(m)).count() as u64;
        self.counters.enter(messages, returning);
        let mut stopping = self.stopping.clone();
        let outcome = tokio::select! {
            outcome = self.handler.handle(batch) => outcome,
            // A handler waiting out a backoff must not outlive the runtime
            // its timers belong to (tokio panics then).
            Ok(_) = stopping.wait_for(|stopping| *stopping) => {
                return self.redeliver(&due, "ordermq is shutting down");
            }
        };
        match outcome {
            Outcome::Consumed => {
                self.counters.leave(messages, messages, 0);
                Answer::Done
            }
            Outcome::Waiting(waiting) => self.send_waiting_on(&due, waiting).await,
            Outcome::RetryLater(reason) => match self.retry(&due, now_millis()).await {
                Ok(owed) => {
                    tracing::debug!(group = %self.group, messages, owed, %reason,
                        "a batch failed; retried on RocketMQ's schedule");
                    // The retries were owed as they were sent.
                    self.counters.leave(messages, 0, 0);
                    Answer::Done
                }
                Err(e) => self.redeliver(&due, &e.0),
            },
        }
    }

    /// Leaves `due` to the client's redelivery: the bridge could not send
    /// on what has to come back.
    fn redeliver(&self, due: &[&MessageExt], reason: &str) -> Answer {
        tracing::warn!(group = %self.group, reason, "RocketMQ will redeliver the batch");
        // Below the broker's last try a redelivery comes back; on it, the
        // broker moves the message to the group's DLQ instead.
        let back = due
            .iter()
            .filter(|m| m.reconsume_times() < self.max_reconsume_times)
            .count() as u64;
        self.counters.leave(due.len() as u64, 0, back);
        Answer::Redeliver
    }

    /// Sends the waiting messages of `due` on to come back in
    /// [`WAIT_RETRY_MS`], and retries those that have waited [`MAX_WAITS`]
    /// times already (RocketMQ's schedule from here); the others of the
    /// batch were applied.
    async fn send_waiting_on(
        &self,
        due: &[&MessageExt],
        waiting: ordermq_domain::ports::Waiting,
    ) -> Answer {
        let messages = due.len() as u64;
        let (tired, waits): (Vec<&MessageExt>, Vec<&MessageExt>) = due
            .iter()
            .copied()
            .filter(|m| waiting.msg_ids.contains(&msg_id_of(m)))
            .partition(|m| waits_of(m) >= MAX_WAITS);
        for m in &tired {
            tracing::warn!(group = %self.group, msg_id = %msg_id_of(m), reason = %waiting.reason,
                "an event waited {MAX_WAITS} times; retried on RocketMQ's schedule from here");
        }
        let now = now_millis();
        let hops: Vec<(&MessageExt, i64)> =
            waits.iter().map(|&m| (m, now + WAIT_RETRY_MS)).collect();
        let sent = async {
            self.hop(&hops, Hop::Wait, now).await?;
            self.retry(&tired, now).await
        };
        match sent.await {
            Ok(_) => {
                tracing::debug!(group = %self.group, messages = hops.len(), reason = %waiting.reason,
                    "events waiting for an earlier one; tried again soon");
                let not_applied = (waits.len() + tired.len()) as u64;
                // What comes back was owed as it was sent.
                self.counters.leave(messages, messages - not_applied, 0);
                Answer::Done
            }
            Err(e) => self.redeliver(due, &e.0),
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
            Answer::Done => ConsumeConcurrentlyStatus::ConsumeSuccess,
            Answer::Redeliver => ConsumeConcurrentlyStatus::ReconsumeLater,
        })
    }
}
