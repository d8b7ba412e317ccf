//! The producer's side of an event: the properties a message carries, how
//! an outbox row becomes a signed broker message, and the [`Publisher`]
//! that sends a relay round.
//!
//! Its own module because two senders build messages the same way: the
//! relay's publisher, and the listener bridge when it sends an early
//! delayed message on (a hop, in `listener`). The properties are the
//! contract with every consumer (and with `ordermq dlq`), so they are
//! written once, here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use ordermq_domain::ports::{BoxFuture, PublishError, Publisher};
use ordermq_domain::signing::{Keyring, Signature};
use ordermq_domain::{OutboxMessage, now_millis};
use rocketmq_client_rust::{ClientError, ClientResult, DefaultMQProducer, SendResult, SendStatus};
use rocketmq_model::common::message::message_queue::MessageQueue;
use rocketmq_model::common::message::message_single::Message;
use tokio::task::JoinSet;

use crate::delay::DelayedDelivery;

/// The user property carrying the event id, so consumers can deduplicate
/// without parsing the body and operators can find an event in the broker.
pub const EVENT_ID_PROPERTY: &str = "ordermq_event_id";
/// The user property carrying a delayed message's due time (ms since the
/// epoch), so a message delivered early by a delay level can be sent on.
pub const DELIVER_AT_PROPERTY: &str = "ordermq_deliver_at";
/// The user property naming the event key that signed the message.
pub const KEY_ID_PROPERTY: &str = "ordermq_key_id";
/// The user property carrying the signature: lowercase hex HMAC-SHA256 of
/// `event id "." body` under the key [`KEY_ID_PROPERTY`] names.
pub const SIGNATURE_PROPERTY: &str = "ordermq_signature";

/// Brokers left out of the queue choice, by name, each until when.
pub(crate) type Isolated = Arc<Mutex<HashMap<String, Instant>>>;

/// Sends outbox messages, hashing each order id to one queue so that one
/// order's events keep their order.
pub(crate) struct ProducerPublisher {
    producer: DefaultMQProducer,
    /// Each topic's writable queues and when they were looked up.
    queues: Mutex<HashMap<String, (Instant, Vec<MessageQueue>)>>,
    /// One route lookup at a time: after a failure forgets a topic's queues,
    /// concurrent sends wait for one lookup instead of each asking the
    /// NameServer (5,000 sends at once made 3,900 lookups the client refused).
    lookup: tokio::sync::Mutex<()>,
    /// Brokers a send failed on lately, by name, and until when the queue
    /// choice leaves them out (see [`ISOLATION`]).
    isolated: Isolated,
    delayed: Arc<DelayedDelivery>,
    /// Signs each event (the first key); `None` sends them unsigned.
    keys: Option<Keyring>,
}

impl ProducerPublisher {
    /// A publisher on `producer`, delaying the `delayed` way and signing
    /// with `keys` (unsigned when `None`).
    pub(crate) fn new(
        producer: DefaultMQProducer,
        delayed: Arc<DelayedDelivery>,
        keys: Option<Keyring>,
        isolated: Isolated,
    ) -> Self {
        Self {
            producer,
            queues: Mutex::new(HashMap::new()),
            lookup: tokio::sync::Mutex::new(()),
            isolated,
            delayed,
            keys,
        }
    }
}

fn queue_for(queues: &[MessageQueue], key: &str) -> Option<MessageQueue> {
    if queues.is_empty() {
        return None;
    }
    // Stable across processes and versions (unlike std's randomized hasher).
    let hash = key
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    Some(queues[hash as usize % queues.len()].clone())
}

/// The signature of an outbox message under `keys`' signing key.
///
/// # Errors
///
/// A [`PublishError`] if the event id is empty or holds a `.` (never the
/// case for ordermq's events): it could not be a signed context.
fn sign(keys: &Keyring, m: &OutboxMessage) -> Result<Signature, PublishError> {
    if m.event_id.is_empty() || m.event_id.contains('.') {
        return Err(PublishError(format!(
            "event id {:?} cannot be signed (empty, or holds a '.')",
            m.event_id
        )));
    }
    Ok(keys.sign(&m.event_id, m.body.as_bytes()))
}

/// The broker message of `m`, carrying `signature` (if any) and `extra`
/// (name, value) as properties.
pub(crate) fn to_message(
    m: &OutboxMessage,
    delayed: &DelayedDelivery,
    now_ms: i64,
    signature: Option<&Signature>,
    extra: &[(&str, String)],
) -> Result<Message, PublishError> {
    let invalid = |e: &dyn std::fmt::Display| PublishError(format!("message {}: {e}", m.event_id));
    let mut builder = Message::builder()
        .topic(m.topic.as_str())
        .tags(m.tag.as_str())
        .key(m.key.as_str())
        .body(m.body.clone().into_bytes())
        .raw_property(EVENT_ID_PROPERTY, m.event_id.as_str())
        .map_err(|e| invalid(&e))?;
    if let Some(signature) = signature {
        builder = builder
            .raw_property(KEY_ID_PROPERTY, signature.key_id.as_str())
            .map_err(|e| invalid(&e))?
            .raw_property(SIGNATURE_PROPERTY, signature.hex.as_str())
            .map_err(|e| invalid(&e))?;
    }
    for (name, value) in extra {
        builder = builder
            .raw_property(*name, value.as_str())
            .map_err(|e| invalid(&e))?;
    }
    if let Some(at) = m.deliver_at {
        builder = builder
            .raw_property(DELIVER_AT_PROPERTY, at.to_string())
            .map_err(|e| invalid(&e))?;
        builder = match delayed {
            DelayedDelivery::Timer => builder.deliver_time_ms(at.max(0) as u64),
            DelayedDelivery::Levels(levels) if at > now_ms => {
                builder.delay_level(levels.level_for(at - now_ms))
            }
            // Due already: deliver now.
            DelayedDelivery::Levels(_) => builder,
        };
    }
    builder.build().map_err(|e| invalid(&e))
}

/// Most messages in one batch send (the broker also caps a batch at 4 MiB).
const MAX_BATCH: usize = 64;

/// How long a topic's queue list is used before it is looked up again.
///
/// Failures refresh it at once (a dead broker's queues drop out); this is
/// for the other direction: a broker that joins or comes back gets its
/// share of the sends again within this time instead of never.
const ROUTE_TTL: Duration = Duration::from_secs(5);

/// How long a broker that failed a send is left out of the queue choice.
///
/// The NameServers keep listing a broker that died until its connection
/// drops, and list it again as soon as it registers after a restart; but a
/// client that failed to connect to it five times in a row refuses every
/// new connection to it for the next 30 s (rocketmq-rust 1.0.0's transport
/// circuit breaker, not configurable). Sends hashed to its queues would fail
/// over and over for that long, each failure holding its rows back. Left
/// out, its share of the orders hashes over the other brokers' queues;
/// after this time it is tried again (one failed batch, failed over at once,
/// if it still cannot be reached).
const ISOLATION: Duration = Duration::from_secs(10);

impl ProducerPublisher {
    /// Leaves `broker` out of the queue choice for [`ISOLATION`].
    fn isolate(&self, broker: &str) {
        let mut isolated = self.isolated.lock().expect("isolated brokers");
        if !isolated.contains_key(broker) {
            tracing::warn!(
                broker,
                seconds = ISOLATION.as_secs(),
                "a send to this broker failed; its share of the orders goes to the other brokers' queues for a while"
            );
        }
        isolated.insert(broker.to_owned(), Instant::now() + ISOLATION);
    }

    /// `queues` without those of isolated brokers; all of them if every
    /// broker is isolated (the sends then fail or succeed as they will, and
    /// the relay's outage handling takes over).
    fn available(&self, queues: Vec<MessageQueue>) -> Vec<MessageQueue> {
        let mut isolated = self.isolated.lock().expect("isolated brokers");
        let now = Instant::now();
        isolated.retain(|_, until| *until > now);
        if isolated.is_empty() {
            return queues;
        }
        let open: Vec<MessageQueue> = queues
            .iter()
            .filter(|q| !isolated.contains_key(q.broker_name().as_str()))
            .cloned()
            .collect();
        if open.is_empty() { queues } else { open }
    }

    /// The topic's writable queues, cached; refreshed after a failure and
    /// every [`ROUTE_TTL`]. A refresh the NameServers do not answer keeps
    /// the list it was to replace.
    async fn queues(&self, topic: &str) -> Result<Vec<MessageQueue>, PublishError> {
        if let Some(queues) = self.cached_queues(topic, ROUTE_TTL) {
            return Ok(queues);
        }
        let _lookup = self.lookup.lock().await;
        // Whoever held the lock before may have looked it up already.
        if let Some(queues) = self.cached_queues(topic, ROUTE_TTL) {
            return Ok(queues);
        }
        let mut producer = self.producer.clone();
        let looked_up = producer
            .fetch_publish_message_queues(topic)
            .await
            .map_err(|e| PublishError(format!("route of {topic}: {e}")))
            .and_then(|queues| match queues.is_empty() {
                true => Err(PublishError(format!("topic {topic} has no writable queue"))),
                false => Ok(queues),
            });
        let queues = match (looked_up, self.cached_queues(topic, Duration::MAX)) {
            (Ok(queues), _) => queues,
            (Err(_), Some(stale)) => return Ok(stale),
            (Err(e), None) => return Err(e),
        };
        self.queues
            .lock()
            .expect("queue cache")
            .insert(topic.to_owned(), (Instant::now(), queues.clone()));
        Ok(queues)
    }

    /// The topic's queues if they were looked up less than `max_age` ago.
    fn cached_queues(&self, topic: &str, max_age: Duration) -> Option<Vec<MessageQueue>> {
        self.queues
            .lock()
            .expect("queue cache")
            .get(topic)
            .filter(|(at, _)| at.elapsed() < max_age)
            .map(|(_, queues)| queues.clone())
    }

    /// Makes the next [`Self::queues`] look the topic's route up again,
    /// keeping the list it has in case the NameServers do not answer.
    fn forget_queues(&self, topic: &str) {
        if let Some((at, _)) = self.queues.lock().expect("queue cache").get_mut(topic) {
            *at = Instant::now()
                .checked_sub(ROUTE_TTL)
                .unwrap_or_else(Instant::now);
        }
    }
}

pub(crate) fn send_outcome(sent: ClientResult<Option<SendResult>>) -> Result<(), PublishError> {
    match sent {
        Ok(Some(r)) if r.send_status == SendStatus::SendOk => Ok(()),
        Ok(Some(r)) => Err(PublishError(format!("broker answered {:?}", r.send_status))),
        Ok(None) => Err(PublishError("no send result".into())),
        Err(e) => Err(PublishError(describe(&e))),
    }
}

/// A client error as ordermq reports it: the client's code and message,
/// and, when the broker answered, its response code (named where it is
/// one a send meets) and address. The client's own text says only "Broker
/// operation failed" for any answer, which leaves an operator guessing
/// whether the broker was busy, out of disk, missing the topic or refusing
/// a flush.
pub(crate) fn describe(error: &ClientError) -> String {
    let Some(code) = error.broker_response_code() else {
        return error.to_string();
    };
    // RocketMQ's remoting response codes (`ResponseCode` in its Java client).
    let name = match code {
        1 => " SYSTEM_ERROR",
        2 => " SYSTEM_BUSY",
        10 => " FLUSH_DISK_TIMEOUT",
        11 => " SLAVE_NOT_AVAILABLE",
        12 => " FLUSH_SLAVE_TIMEOUT",
        13 => " MESSAGE_ILLEGAL",
        14 => " SERVICE_NOT_AVAILABLE",
        16 => " NO_PERMISSION",
        17 => " TOPIC_NOT_EXIST",
        _ => "",
    };
    match error.broker_addr() {
        Some(addr) => format!("{error} (broker {addr} answered {code}{name})"),
        None => format!("{error} (broker answered {code}{name})"),
    }
}

/// The results of one publish, by the index of the message in the batch.
type Results = Vec<Result<(), PublishError>>;

impl ProducerPublisher {
    /// Sends the messages of `batch` at `indexes`, writing each one's result
    /// into `results`. Returns the ones a queue-bound send failed for, each
    /// with the broker it failed on (that broker is isolated by then).
    async fn send_pass(
        &self,
        batch: &[OutboxMessage],
        indexes: &[usize],
        results: &mut Results,
    ) -> Vec<(usize, String)> {
        // (topic, queue) → indexes of the messages bound there.
        let mut groups: HashMap<(String, Option<MessageQueue>), Vec<usize>> = HashMap::new();
        for &index in indexes {
            let outbox = &batch[index];
            let queue = if outbox.deliver_at.is_some() {
                None
            } else {
                match self.queues(&outbox.topic).await {
                    Ok(queues) => queue_for(&self.available(queues), &outbox.key),
                    Err(e) => {
                        results[index] = Err(e);
                        continue;
                    }
                }
            };
            groups
                .entry((outbox.topic.clone(), queue))
                .or_default()
                .push(index);
        }
        let mut sends = JoinSet::new();
        for ((topic, queue), indexes) in groups {
            for chunk in indexes.chunks(MAX_BATCH) {
                let mut messages = Vec::with_capacity(chunk.len());
                let now = now_millis();
                for &index in chunk {
                    let signed = match &self.keys {
                        Some(keys) => sign(keys, &batch[index]).map(Some),
                        None => Ok(None),
                    };
                    match signed.and_then(|signature| {
                        to_message(&batch[index], &self.delayed, now, signature.as_ref(), &[])
                    }) {
                        Ok(m) => messages.push((index, m)),
                        Err(e) => results[index] = Err(e),
                    }
                }
                let producer = self.producer.clone();
                let (queue, topic) = (queue.clone(), topic.clone());
                sends.spawn(async move {
                    let broker = queue.as_ref().map(|q| q.broker_name().to_string());
                    let outcomes: Vec<(usize, Result<(), PublishError>)> = match queue {
                        Some(queue) => {
                            let (indexes, messages): (Vec<_>, Vec<_>) =
                                messages.into_iter().unzip();
                            let outcome = send_outcome(
                                producer
                                    .send_batch_to_queue(messages, queue)
                                    .await
                                    .map(Some),
                            );
                            indexes.into_iter().map(|i| (i, outcome.clone())).collect()
                        }
                        // Each delayed message is a send of its own:
                        // all of the chunk at once, not one after the
                        // other. Under SYNC_FLUSH a send is answered only
                        // after the broker's group commit, so sent in
                        // turn each would wait for a flush of its own (a
                        // relay round of 512 rows, half of them orders'
                        // close timers, took up to 8 s behind a busy
                        // broker); sent together they share the flushes.
                        // The client picks their queues and fails them
                        // over to another broker itself.
                        None => {
                            join_all(messages.into_iter().map(|(index, message)| {
                                let producer = producer.clone();
                                async move { (index, send_outcome(producer.send(message).await)) }
                            }))
                            .await
                        }
                    };
                    (topic, broker, outcomes)
                });
            }
        }
        let mut failed_on = Vec::new();
        while let Some(joined) = sends.join_next().await {
            match joined {
                Ok((topic, broker, outcomes)) => {
                    if outcomes.iter().any(|(_, r)| r.is_err()) {
                        self.forget_queues(&topic);
                        if let Some(broker) = &broker {
                            self.isolate(broker);
                        }
                    }
                    for (index, outcome) in outcomes {
                        if let (Err(_), Some(broker)) = (&outcome, &broker) {
                            failed_on.push((index, broker.clone()));
                        }
                        results[index] = outcome;
                    }
                }
                Err(e) => tracing::error!(error = %e, "send task failed"),
            }
        }
        failed_on
    }
}

impl Publisher for ProducerPublisher {
    /// Immediate messages go out as batch sends, one per (topic, queue), with
    /// each order's messages on the queue its id hashes to — so one order's
    /// events stay in order and a whole relay round costs a few round trips.
    /// Delayed messages (batches cannot carry a delivery time) go one per
    /// send, all of a chunk concurrently.
    ///
    /// A batch send that fails isolates its broker (see [`ISOLATION`]) and
    /// its messages are sent again at once, hashed over the other brokers'
    /// queues: a broker that died or cannot be reached yet costs the relay
    /// one failed send, not a backoff per row. While it is isolated, one
    /// order's later events may take another queue than its earlier ones;
    /// the consumers accept events out of order (a reversal waits for the
    /// effect it reverses).
    fn publish<'a>(
        &'a self,
        batch: &'a [OutboxMessage],
    ) -> BoxFuture<'a, Vec<Result<(), PublishError>>> {
        Box::pin(async move {
            let mut results: Results = vec![Err(PublishError("not attempted".into())); batch.len()];
            let all: Vec<usize> = (0..batch.len()).collect();
            let failed = self.send_pass(batch, &all, &mut results).await;
            // Once more, for those whose queue now lies on another broker
            // than the one they failed on (none if every broker is isolated).
            let mut again = Vec::new();
            for (index, broker) in failed {
                let moved = match self.queues(&batch[index].topic).await {
                    Ok(queues) => queue_for(&self.available(queues), &batch[index].key)
                        .is_some_and(|q| q.broker_name().as_str() != broker),
                    Err(_) => false,
                };
                if moved {
                    again.push(index);
                }
            }
            if !again.is_empty() {
                tracing::debug!(messages = again.len(), "sending again on another broker");
                self.send_pass(batch, &again, &mut results).await;
            }
            results
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_choice_is_stable_per_key() {
        let queues: Vec<MessageQueue> = (0..8)
            .map(|i| MessageQueue::from_parts("T", "b", i))
            .collect();
        let a = queue_for(&queues, "O1").unwrap();
        assert_eq!(queue_for(&queues, "O1").unwrap(), a);
        assert!(queue_for(&[], "O1").is_none());
    }
}
