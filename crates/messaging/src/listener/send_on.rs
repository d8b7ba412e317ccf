//! Messages the bridge sends on itself instead of asking the client to.
//!
//! Four kinds, one path: an early delayed message (a delay-level hop), an
//! event that waits for an earlier one, a message its handler answered
//! "retry later", and one that failed its last try (to the group's
//! dead-letter queue). Each is the delivered message itself, signature
//! included, so a group verifies it as it verified the first delivery.
//!
//! **Why not the client's "reconsume later".** rocketmq-client-rust answers
//! it by sending the message back to the broker (`CONSUMER_SEND_MSG_BACK`);
//! when that is refused — the client's own request table full
//! (`transport.admission.queue_saturated`) or the broker answering
//! SYSTEM_BUSY, the moments a retry matters most — it falls back to sending
//! the message to `%RETRY%<group>` as a producer would, and the 1.0.0
//! broker stores every such message straight in `%DLQ%<group>` (its send
//! path inverts Java's `isLockAllExpire` check; docs/reliability.md, defect
//! 4). One failed try of one effect was then a dead letter. So the bridge
//! acknowledges the batch and sends each failed message on to its own
//! topic, marked for this group, with its count of retries, due after the
//! delay RocketMQ would have given it (level 3 + tries, see
//! [`crate::DelayLevels::retry_delay_ms`]); and a message past its last try
//! is sent to `%RETRY%<group>` marked past `max_reconsume_times`, which
//! every broker (Java's and rocketmq-rust's) stores in `%DLQ%<group>`.
//!
//! **Sent or the process stops.** Each send is tried until the broker takes
//! it, the pause doubling from [`HOP_BACKOFF`] up to [`HOP_BACKOFF_MAX`],
//! its lane held meanwhile (the backpressure a busy broker asks for); and
//! all the groups of one client share [`HOP_PERMITS`] sends in flight, so a
//! few thousand early messages never swamp the client's request table at
//! once. Only a stopping client gives up: the batch is then not
//! acknowledged and comes back from the group's consume offset.

use std::time::Duration;

use cheetah_string::CheetahString;
use futures_util::future::join_all;
use ordermq_domain::OutboxMessage;
use ordermq_domain::ports::PublishError;
use ordermq_domain::signing::Signature;
use rocketmq_model::common::message::MessageConst;
use rocketmq_model::common::message::message_accessor::MessageAccessor;
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_single::Message;

use super::{FOR_GROUP_PROPERTY, ListenerBridge, RETRIES_PROPERTY, WAITS_PROPERTY};
use super::{first_key, msg_id_of, property, retries_of, tries_of, waits_of};
use crate::producer::{
    EVENT_ID_PROPERTY, KEY_ID_PROPERTY, SIGNATURE_PROPERTY, send_outcome, to_message,
};

/// How many hops the groups of one client may have in flight at once:
/// below the client's table of pending requests (1,024 per connection), with
/// room for the relay's own sends.
pub(crate) const HOP_PERMITS: usize = 256;
/// The pause after a send's first refusal; doubled after each, up to
/// [`HOP_BACKOFF_MAX`].
const HOP_BACKOFF: Duration = Duration::from_millis(100);
/// The longest pause between two tries of a refused send.
const HOP_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// After this many refusals of one send, each further one is logged as a
/// warning (before: at debug level).
const HOP_WARN_AFTER: u32 = 5;

/// Why a message is sent on, and so how it is marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hop {
    /// It arrived before its due time: the marks it has, kept.
    Early,
    /// It waits for an earlier event: for this group, one more wait.
    Wait,
    /// Its handler answered "retry later": for this group, one more retry.
    Retry,
}

impl ListenerBridge {
    /// The ordermq marks `m` goes on with: the group it is for and its
    /// counts of waits and retries (none for a message every group takes).
    fn marks(&self, m: &MessageExt, hop: Hop) -> Vec<(&'static str, String)> {
        let (mut waits, mut retries) = (waits_of(m), retries_of(m));
        let group = match hop {
            Hop::Early => match property(m, FOR_GROUP_PROPERTY) {
                Some(group) => group,
                None => return Vec::new(),
            },
            Hop::Wait => {
                waits += 1;
                self.group.clone()
            }
            Hop::Retry => {
                retries += 1;
                self.group.clone()
            }
        };
        let mut marks = vec![(FOR_GROUP_PROPERTY, group)];
        if waits > 0 {
            marks.push((WAITS_PROPERTY, waits.to_string()));
        }
        if retries > 0 {
            marks.push((RETRIES_PROPERTY, retries.to_string()));
        }
        marks
    }

    /// Sends each of `messages` on to its topic, due at its time: the same
    /// message (topic, tag, key, body, event id, message id, and its
    /// original key id and signature: verified, never re-signed) built the way the relay
    /// builds it, so it gets the delay level that fits the rest from `now`,
    /// marked as `hop` says.
    ///
    /// Each is tried until it is sent ([`Self::send_until_sent`]): an error
    /// means a message could not be built, or the client is stopping.
    pub(super) async fn hop(
        &self,
        messages: &[(&MessageExt, i64)],
        hop: Hop,
        now: i64,
    ) -> Result<(), PublishError> {
        let sends = messages.iter().map(|&(m, at)| async move {
            let outbox = OutboxMessage {
                id: 0,
                topic: m.topic().to_string(),
                tag: m.get_tags().map(|t| t.to_string()).unwrap_or_default(),
                key: first_key(m),
                event_id: property(m, EVENT_ID_PROPERTY).unwrap_or_default(),
                body: String::from_utf8(m.body_slice().to_vec())
                    .map_err(|e| PublishError(format!("message body: {e}")))?,
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
            let marks = self.marks(m, hop);
            let mut message = to_message(&outbox, &self.delayed, now, signature.as_ref(), &marks)?;
            // The id the group sees stays the same through every hop.
            MessageAccessor::put_property(
                &mut message,
                CheetahString::from_static_str(
                    MessageConst::PROPERTY_UNIQ_CLIENT_MESSAGE_ID_KEYIDX,
                ),
                CheetahString::from(msg_id_of(m)),
            );
            // Owed from before its send: it may be back before the batch
            // that sends it has left its handler call.
            let returns = matches!(hop, Hop::Wait | Hop::Retry);
            if returns {
                self.counters.owe();
            }
            let sent = self.send_until_sent(message).await;
            if returns && sent.is_err() {
                self.counters.forgive();
            }
            sent
        });
        join_all(sends).await.into_iter().collect()
    }

    /// Answers a handler's "retry later" for `failed`: each one below its
    /// last try is sent on to come back after RocketMQ's delay for its try
    /// (owed as it is sent); each on its last try goes to the dead-letter
    /// queue ([`Self::dead_letter`]). `Ok(n)`: `n` of them come back.
    ///
    /// # Errors
    ///
    /// As [`Self::hop`]: the client is stopping (nothing of the batch may be
    /// acknowledged then).
    pub(super) async fn retry(
        &self,
        failed: &[&MessageExt],
        now: i64,
    ) -> Result<u64, PublishError> {
        let (back, dead): (Vec<&MessageExt>, Vec<&MessageExt>) = failed
            .iter()
            .partition(|m| tries_of(m) < self.max_reconsume_times);
        let hops: Vec<(&MessageExt, i64)> = back
            .iter()
            .map(|&m| {
                let delay = self.retry_levels.retry_delay_ms(tries_of(m));
                (
                    m,
                    now.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX)),
                )
            })
            .collect();
        self.hop(&hops, Hop::Retry, now).await?;
        join_all(dead.iter().map(|m| self.dead_letter(m)))
            .await
            .into_iter()
            .collect::<Result<(), _>>()?;
        Ok(back.len() as u64)
    }

    /// Moves `m` to `%DLQ%<group>` as RocketMQ does after the last try: a
    /// send to `%RETRY%<group>` that says it is past `max_reconsume_times`
    /// (the headers a client's send-back fallback carries), every property
    /// of `m` kept (event id, signature, ordermq's marks) so `ordermq dlq`
    /// reads and replays it like any dead letter.
    async fn dead_letter(&self, m: &MessageExt) -> Result<(), PublishError> {
        let tries = tries_of(m);
        tracing::warn!(group = %self.group, msg_id = %msg_id_of(m), key = %first_key(m),
            event_id = property(m, EVENT_ID_PROPERTY).as_deref().unwrap_or("-"), tries = tries + 1,
            "a message failed its last try; moved to the group's dead-letter queue");
        let retry_topic = format!("%RETRY%{}", self.group);
        let mut message = Message::builder()
            .topic(retry_topic.as_str())
            .body(m.body_slice().to_vec())
            .build()
            .map_err(|e| PublishError(format!("dead letter of {}: {e}", msg_id_of(m))))?;
        MessageAccessor::set_properties(&mut message, m.properties().clone());
        // A delay or timer the delivered message came with would hold the
        // dead letter back; it is stored at once.
        for held in [
            MessageConst::PROPERTY_DELAY_TIME_LEVEL,
            MessageConst::PROPERTY_TIMER_DELIVER_MS,
            MessageConst::PROPERTY_TIMER_DELAY_SEC,
            MessageConst::PROPERTY_TIMER_DELAY_MS,
            MessageConst::PROPERTY_TRANSACTION_PREPARED,
        ] {
            MessageAccessor::clear_property(&mut message, held);
        }
        MessageAccessor::put_property(
            &mut message,
            CheetahString::from_static_str(MessageConst::PROPERTY_RETRY_TOPIC),
            CheetahString::from(m.topic().as_str()),
        );
        // Past the last try: the broker's send path dead-letters it.
        MessageAccessor::set_reconsume_time(
            &mut message,
            CheetahString::from((self.max_reconsume_times.max(tries) + 1).to_string()),
        );
        MessageAccessor::set_max_reconsume_times(
            &mut message,
            CheetahString::from(self.max_reconsume_times.to_string()),
        );
        self.send_until_sent(message).await
    }

    /// Sends one message, trying again after each refusal (the pause
    /// doubling from [`HOP_BACKOFF`] to [`HOP_BACKOFF_MAX`]) until it is
    /// sent; gives up only when the client stops (the message then comes
    /// back from the group's consume offset, as any unacknowledged one).
    pub(super) async fn send_until_sent(&self, message: Message) -> Result<(), PublishError> {
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
}
