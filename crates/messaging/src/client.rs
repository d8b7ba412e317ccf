//! The RocketMQ client adapter: a producer behind [`Publisher`] and push
//! consumers that drive [`Handler`]s.
//!
//! rocketmq-client-rust calls listeners synchronously on its blocking lanes.
//! The bridge here blocks that lane thread on the async handler (never an
//! async worker), and maps [`Outcome`] to `ConsumeSuccess` / `ReconsumeLater`
//! so the broker's retry → `%RETRY%<group>` → `%DLQ%<group>` machinery applies.
//! With [`DelayedDelivery::Levels`] it also holds back messages that arrive
//! before their due time and sends them on for the rest (see [`crate::delay`]).
//!
//! Events are signed here and checked here. The producer adds the HMAC of
//! the event id and body under the event keys (properties
//! [`KEY_ID_PROPERTY`] and [`SIGNATURE_PROPERTY`]). The listener bridge is
//! the one place every consumer group's messages pass, before any handler,
//! before a hop, and where the delivery counters live; so it verifies each
//! message there and parks the ones that fail (see
//! [`ordermq_domain::parked`]): recorded through the [`ParkingLot`],
//! counted, logged, acknowledged, never handed to the handler or sent on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use ordermq_domain::parked::{MAX_PARKED_BODY, ParkedMessage, Unverified, clip, verify_event};
use ordermq_domain::ports::{
    BoxFuture, Delivery, Handler, Outcome, ParkingLot, PublishError, Publisher,
};
use ordermq_domain::signing::{Keyring, Signature};
use ordermq_domain::{OutboxMessage, now_millis};
use rocketmq_client_rust::{
    AclClientRPCHook, ClientResult, ClientRuntime, ClientRuntimeConfig, ConsumeConcurrentlyContext,
    ConsumeConcurrentlyStatus, DefaultMQProducer, DefaultMQPushConsumer, MQPushConsumer,
    MessageListenerConcurrently, SendResult, SendStatus, SessionCredentials, TelemetryHandle,
};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_queue::MessageQueue;
use rocketmq_model::common::message::message_single::Message;
use rocketmq_runtime::{BlockingPoolPolicy, RuntimeContext};
use rocketmq_transport::api::RPCHook;
use tokio::task::JoinSet;

use crate::MqError;
use crate::delay::DelayedDelivery;
use crate::deliveries::{Deliveries, GroupCounters};

/// How long one send may take before it counts as failed (the outbox retries it).
const SEND_TIMEOUT_MS: u32 = 3_000;
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

/// RocketMQ ACL credentials (an access key and its secret key) for a
/// cluster that requires them; every request the client sends is signed
/// with them (rocketmq-client-rust's `AclClientRPCHook`, as the Java client).
#[derive(Clone)]
pub struct AclCredentials {
    /// The access key (an account name; printed).
    pub access_key: String,
    /// The secret key (never printed).
    pub secret_key: String,
}

impl std::fmt::Debug for AclCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AclCredentials")
            .field("access_key", &self.access_key)
            .field("secret_key", &"[redacted]")
            .finish()
    }
}

/// Who the client is to the cluster and to ordermq's consumers.
#[derive(Clone, Default)]
pub struct ClientSecurity {
    /// Signs every published event (the first key) and verifies every
    /// delivered one (any key). `None`: events go out unsigned and consumer
    /// groups hand every message on unverified — only for tools that read,
    /// a raw-broker benchmark, or a foreign producer in tests. ordermq's
    /// server always has keys.
    pub event_keys: Option<Keyring>,
    /// Where consumer groups record the messages that fail verification;
    /// needed to subscribe when there are event keys.
    pub parking: Option<Arc<dyn ParkingLot>>,
    /// ACL credentials for the cluster, if it requires them.
    pub acl: Option<AclCredentials>,
}

impl std::fmt::Debug for ClientSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSecurity")
            .field("event_keys", &self.event_keys)
            .field("parking", &self.parking.is_some())
            .field("acl", &self.acl)
            .finish()
    }
}

impl ClientSecurity {
    fn rpc_hook(&self) -> Option<Arc<dyn RPCHook>> {
        self.acl.as_ref().map(|acl| {
            Arc::new(AclClientRPCHook::new(SessionCredentials::with_keys(
                acl.access_key.as_str(),
                acl.secret_key.as_str(),
            ))) as Arc<dyn RPCHook>
        })
    }
}

/// One consumer group's subscription.
#[derive(Debug, Clone)]
pub struct SubscribeOptions {
    pub group: String,
    /// `(topic, tag expression)` pairs, e.g. `("TopicOrderPaySuccess", "OrderPaid")`;
    /// a tag expression may list several tags: `A||B` — without spaces, see
    /// [`subscribe`](MqClient::subscribe).
    pub subscriptions: Vec<(String, String)>,
    /// Redeliveries before the broker moves a failing message to `%DLQ%<group>`.
    pub max_reconsume_times: i32,
    /// Listener calls in flight at once. A group whose handler waits on a slow
    /// third party needs rate × latency of them (Little's law): 50/s at 600 ms is 30.
    pub concurrency: u32,
}

/// A connected producer plus the consumer groups started through it.
pub struct MqClient {
    pub(crate) runtime: Arc<ClientRuntime>,
    producer: DefaultMQProducer,
    consumers: Mutex<Vec<DefaultMQPushConsumer>>,
    delayed: Arc<DelayedDelivery>,
    /// Set when shutting down: listener calls still running give up (their
    /// messages are redelivered) before the runtime they block on stops.
    stopping: tokio::sync::watch::Sender<bool>,
    pub(crate) namesrv_addr: String,
    /// What each group's handler was given and how it answered.
    deliveries: Deliveries,
    /// The event keys (sign and verify).
    event_keys: Option<Keyring>,
    /// Where groups park what fails verification.
    parking: Option<Arc<dyn ParkingLot>>,
    /// Signs every request with the ACL credentials, if any.
    pub(crate) rpc_hook: Option<Arc<dyn RPCHook>>,
}

impl std::fmt::Debug for MqClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqClient")
            .field("namesrv_addr", &self.namesrv_addr)
            .finish_non_exhaustive()
    }
}

impl MqClient {
    /// Starts a producer of `producer_group` against the NameServer list `namesrv_addr`
    /// (`host:port;host:port`), delaying messages that have a due time the
    /// `delayed` way; no event keys, no ACL (see [`Self::connect_with`]).
    /// Must be called inside the application's Tokio runtime.
    pub async fn connect(
        namesrv_addr: &str,
        producer_group: &str,
        delayed: DelayedDelivery,
    ) -> Result<Self, MqError> {
        Self::connect_with(
            namesrv_addr,
            producer_group,
            delayed,
            ClientSecurity::default(),
        )
        .await
    }

    /// As [`Self::connect`], signing events, verifying deliveries and
    /// authenticating to the cluster as `security` says.
    pub async fn connect_with(
        namesrv_addr: &str,
        producer_group: &str,
        delayed: DelayedDelivery,
        security: ClientSecurity,
    ) -> Result<Self, MqError> {
        // Listeners block a lane thread while a handler awaits I/O (SMS,
        // logistics, database): give the lanes room for every consumer thread.
        let lanes = BlockingPoolPolicy {
            name: "ordermq-mq".into(),
            // Four groups of up to 64 listener calls each, plus the client's own I/O.
            max_concurrency: 320,
            max_queue_depth: 4_096,
            queue_timeout: Duration::from_secs(60),
            task_timeout: Duration::from_secs(60),
            ..BlockingPoolPolicy::default()
        };
        let context = RuntimeContext::try_from_current_with_blocking_policy("ordermq-mq", lanes)
            .map_err(|e| MqError::Runtime(e.to_string()))?;
        let runtime = ClientRuntime::try_new(
            context.service_context("client"),
            ClientRuntimeConfig::default(),
            TelemetryHandle::noop(),
        )
        .map_err(|e| MqError::client("runtime", e))?;
        let rpc_hook = security.rpc_hook();
        let mut builder = DefaultMQProducer::builder(runtime.clone())
            .producer_group(producer_group)
            .name_server_addr(namesrv_addr)
            .send_msg_timeout(SEND_TIMEOUT_MS)
            .retry_times_when_send_failed(2)
            .default_topic_queue_nums(8);
        if let Some(hook) = &rpc_hook {
            builder = builder.rpc_hook(Arc::clone(hook));
        }
        let mut producer = builder.build();
        producer
            .start()
            .await
            .map_err(|e| MqError::client("producer start", e))?;
        Ok(Self {
            runtime,
            producer,
            consumers: Mutex::new(Vec::new()),
            delayed: Arc::new(delayed),
            stopping: tokio::sync::watch::Sender::new(false),
            namesrv_addr: namesrv_addr.to_owned(),
            deliveries: Deliveries::default(),
            event_keys: security.event_keys,
            parking: security.parking,
            rpc_hook,
        })
    }

    /// Creates `topic` with `queues` queues if the cluster allows it. A failure is
    /// only logged: production clusters often manage topics themselves.
    pub async fn ensure_topic(&self, topic: &str, queues: i32) -> Result<(), MqError> {
        let mut producer = self.producer.clone();
        if let Err(e) = producer
            .create_topic("TBW102", topic, queues, HashMap::new())
            .await
        {
            tracing::warn!(topic, error = %e, "could not create the topic; assuming it exists or is auto-created");
        }
        Ok(())
    }

    /// The outbox relay's port onto this producer.
    pub fn publisher(&self) -> Arc<dyn Publisher> {
        Arc::new(ProducerPublisher {
            producer: self.producer.clone(),
            queues: Mutex::new(HashMap::new()),
            lookup: tokio::sync::Mutex::new(()),
            delayed: Arc::clone(&self.delayed),
            keys: self.event_keys.clone(),
        })
    }

    /// Starts a push consumer of `options.group` that verifies each delivery
    /// under the event keys, parks the ones that fail, and hands the others
    /// to `handler` (a client without event keys hands every one on).
    ///
    /// # Errors
    ///
    /// [`MqError::Config`] if the client has event keys but nowhere to park,
    /// or a tag expression is malformed; [`MqError::Client`] if the consumer
    /// cannot subscribe or start.
    pub async fn subscribe(
        &self,
        options: SubscribeOptions,
        handler: Arc<dyn Handler>,
    ) -> Result<(), MqError> {
        let verifier = match (&self.event_keys, &self.parking) {
            (Some(keys), Some(parking)) => Some(Verifier {
                keys: keys.clone(),
                parking: Arc::clone(parking),
            }),
            (Some(_), None) => {
                return Err(MqError::Config(format!(
                    "{}: the client verifies events but has nowhere to park the ones that fail",
                    options.group
                )));
            }
            (None, _) => None,
        };
        let mut consumer = DefaultMQPushConsumer::builder(self.runtime.clone())
            .rpc_hook(self.rpc_hook.clone())
            .consumer_group(options.group.as_str())
            .name_server_addr(self.namesrv_addr.as_str())
            // A new group starts from the beginning of the topic: events
            // published before the group first connected are not skipped.
            .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
            .max_reconsume_times(options.max_reconsume_times)
            // Up to 64 messages per listener call: one database commit for
            // all. Pulls of up to 256 (brokers cap them: the embedded one
            // at 256, RocketMQ's default is 32).
            .consume_message_batch_max_size(64)
            .pull_batch_size(256)
            .consume_thread_min(options.concurrency.max(1))
            .consume_thread_max(options.concurrency.max(1))
            .build();
        for (topic, tags) in &options.subscriptions {
            // rocketmq-rust 1.0.0 hashes each tag of `A || B` untrimmed, so
            // the broker's tag-code filter matches nothing: refuse the form.
            if tags.contains("|| ") || tags.contains(" ||") {
                return Err(MqError::Config(format!(
                    "tag expression {tags:?}: write it without spaces around '||'"
                )));
            }
            consumer
                .subscribe(topic.as_str(), tags.as_str())
                .await
                .map_err(|e| MqError::client("subscribe", e))?;
        }
        consumer.register_message_listener_concurrently(ListenerBridge {
            group: options.group.clone(),
            handler,
            verifier,
            runtime: tokio::runtime::Handle::current(),
            max_reconsume_times: options.max_reconsume_times,
            producer: self.producer.clone(),
            delayed: Arc::clone(&self.delayed),
            stopping: self.stopping.subscribe(),
            counters: self.deliveries.group(&options.group),
        });
        consumer
            .start()
            .await
            .map_err(|e| MqError::client("consumer start", e))?;
        self.consumers
            .lock()
            .expect("consumer list lock")
            .push(consumer);
        Ok(())
    }

    /// Each subscribed group's delivery counts (see [`crate::deliveries`]).
    pub fn deliveries(&self) -> Deliveries {
        self.deliveries.clone()
    }

    /// Stops consumers (in-flight deliveries are abandoned and redelivered
    /// later: every handler is idempotent), then the producer, then the client
    /// runtime.
    pub async fn shutdown(self) {
        self.stopping.send_replace(true);
        let consumers = std::mem::take(&mut *self.consumers.lock().expect("consumer list lock"));
        for mut consumer in consumers {
            consumer.shutdown().await;
        }
        let mut producer = self.producer;
        producer.shutdown().await;
        let report = self.runtime.shutdown().await;
        tracing::debug!(healthy = report.is_healthy(), "RocketMQ client stopped");
    }
}

/// Sends outbox messages, hashing each order id to one queue so that one
/// order's events keep their order.
struct ProducerPublisher {
    producer: DefaultMQProducer,
    queues: Mutex<HashMap<String, Vec<MessageQueue>>>,
    /// One route lookup at a time: after a failure forgets a topic's queues,
    /// concurrent sends wait for one lookup instead of each asking the
    /// NameServer (5,000 sends at once made 3,900 lookups the client refused).
    lookup: tokio::sync::Mutex<()>,
    delayed: Arc<DelayedDelivery>,
    /// Signs each event (the first key); `None` sends them unsigned.
    keys: Option<Keyring>,
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

/// The broker message of `m`, carrying `signature` (if any) as properties.
fn to_message(
    m: &OutboxMessage,
    delayed: &DelayedDelivery,
    now_ms: i64,
    signature: Option<&Signature>,
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

impl ProducerPublisher {
    /// The topic's writable queues, cached; refreshed after a failure.
    async fn queues(&self, topic: &str) -> Result<Vec<MessageQueue>, PublishError> {
        if let Some(queues) = self.cached_queues(topic) {
            return Ok(queues);
        }
        let _lookup = self.lookup.lock().await;
        // Whoever held the lock before may have looked it up already.
        if let Some(queues) = self.cached_queues(topic) {
            return Ok(queues);
        }
        let mut producer = self.producer.clone();
        let queues = producer
            .fetch_publish_message_queues(topic)
            .await
            .map_err(|e| PublishError(format!("route of {topic}: {e}")))?;
        if queues.is_empty() {
            return Err(PublishError(format!("topic {topic} has no writable queue")));
        }
        self.queues
            .lock()
            .expect("queue cache")
            .insert(topic.to_owned(), queues.clone());
        Ok(queues)
    }

    fn cached_queues(&self, topic: &str) -> Option<Vec<MessageQueue>> {
        self.queues.lock().expect("queue cache").get(topic).cloned()
    }

    fn forget_queues(&self, topic: &str) {
        self.queues.lock().expect("queue cache").remove(topic);
    }
}

fn send_outcome(sent: ClientResult<Option<SendResult>>) -> Result<(), PublishError> {
    match sent {
        Ok(Some(r)) if r.send_status == SendStatus::SendOk => Ok(()),
        Ok(Some(r)) => Err(PublishError(format!("broker answered {:?}", r.send_status))),
        Ok(None) => Err(PublishError("no send result".into())),
        Err(e) => Err(PublishError(e.to_string())),
    }
}

impl Publisher for ProducerPublisher {
    /// Immediate messages go out as batch sends, one per (topic, queue), with
    /// each order's messages on the queue its id hashes to — so one order's
    /// events stay in order and a whole relay round costs a few round trips.
    /// Delayed messages (batches cannot carry a delivery time) go one by one.
    fn publish<'a>(
        &'a self,
        batch: &'a [OutboxMessage],
    ) -> BoxFuture<'a, Vec<Result<(), PublishError>>> {
        Box::pin(async move {
            let mut results: Vec<Result<(), PublishError>> =
                vec![Err(PublishError("not attempted".into())); batch.len()];
            // (topic, queue) → indexes of the messages bound there.
            let mut groups: HashMap<(String, Option<MessageQueue>), Vec<usize>> = HashMap::new();
            for (index, outbox) in batch.iter().enumerate() {
                let queue = if outbox.deliver_at.is_some() {
                    None
                } else {
                    match self.queues(&outbox.topic).await {
                        Ok(queues) => queue_for(&queues, &outbox.key),
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
                            to_message(&batch[index], &self.delayed, now, signature.as_ref())
                        }) {
                            Ok(m) => messages.push((index, m)),
                            Err(e) => results[index] = Err(e),
                        }
                    }
                    let producer = self.producer.clone();
                    let (queue, topic) = (queue.clone(), topic.clone());
                    sends.spawn(async move {
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
                            None => {
                                let mut outcomes = Vec::with_capacity(messages.len());
                                for (index, message) in messages {
                                    outcomes
                                        .push((index, send_outcome(producer.send(message).await)));
                                }
                                outcomes
                            }
                        };
                        (topic, outcomes)
                    });
                }
            }
            while let Some(joined) = sends.join_next().await {
                match joined {
                    Ok((topic, outcomes)) => {
                        if outcomes.iter().any(|(_, r)| r.is_err()) {
                            self.forget_queues(&topic);
                        }
                        for (index, outcome) in outcomes {
                            results[index] = outcome;
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "send task failed"),
                }
            }
            results
        })
    }
}

/// The event keys and where to park what they refuse.
struct Verifier {
    keys: Keyring,
    parking: Arc<dyn ParkingLot>,
}

/// Adapts a synchronous RocketMQ listener callback to an async [`Handler`],
/// verifying every message first.
struct ListenerBridge {
    /// The consumer group's name.
    group: String,
    handler: Arc<dyn Handler>,
    /// Verifies every message before anything else happens to it (`None`:
    /// a client without event keys).
    verifier: Option<Verifier>,
    runtime: tokio::runtime::Handle,
    max_reconsume_times: i32,
    /// Sends on messages that a delay level delivered before their due time.
    producer: DefaultMQProducer,
    delayed: Arc<DelayedDelivery>,
    stopping: tokio::sync::watch::Receiver<bool>,
    /// This group's delivery counts.
    counters: Arc<GroupCounters>,
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

/// When `m` is due, if it carries a due time.
fn deliver_at(m: &MessageExt) -> Option<i64> {
    m.get_user_property(DELIVER_AT_PROPERTY)?.parse().ok()
}

impl ListenerBridge {
    /// Sends `early` on for what remains of each one's wait: the same message
    /// (topic, tag, key, body, event id, due time, and its original key id
    /// and signature: verified, never re-signed) built the way the relay
    /// builds it, so it gets the delay level that fits the rest.
    async fn hop(&self, early: &[(&MessageExt, i64)]) -> Result<(), PublishError> {
        let now = now_millis();
        let sends = early.iter().map(|&(m, at)| {
            let producer = self.producer.clone();
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
                let message = to_message(&outbox, &self.delayed, now, signature.as_ref())?;
                send_outcome(producer.send(message).await)
            }
        });
        join_all(sends).await.into_iter().collect()
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
        let redelivered = refused
            .iter()
            .filter(|(m, _)| m.reconsume_times() > 0)
            .count() as u64;
        let returning = refused
            .iter()
            .filter(|(m, _)| m.reconsume_times() < self.max_reconsume_times)
            .count() as u64;
        match self.park(verifier.parking.as_ref(), &refused, now).await {
            Ok(new) => {
                let outcome = self.consume_verified(&verified, now).await;
                let comes_back = matches!(outcome, Outcome::RetryLater(_));
                self.counters
                    .park(new, redelivered, if comes_back { returning } else { 0 });
                outcome
            }
            Err(e) => {
                // Nothing was handed to the handler: the whole batch comes back.
                tracing::warn!(group = %self.group, error = %e, "RocketMQ will redeliver the batch");
                self.counters.park(0, redelivered, returning);
                let due = verified.iter().filter(|m| m.reconsume_times() > 0).count() as u64;
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
            if let Err(e) = self.hop(&early).await {
                // Nothing was handed to the handler: the whole batch comes back.
                tracing::warn!(error = %e, "could not send an early delayed message on; RocketMQ will redeliver it");
                return Outcome::RetryLater(e.0);
            }
            tracing::trace!(messages = early.len(), "sent early delayed messages on");
        }
        if due.is_empty() {
            return Outcome::Consumed;
        }
        let batch: Vec<Delivery> = due
            .into_iter()
            .map(|(m, _)| to_delivery(m, self.max_reconsume_times))
            .collect();
        let count = |pick: fn(&Delivery) -> bool| batch.iter().filter(|d| pick(d)).count() as u64;
        let messages = batch.len() as u64;
        // Below the last try a "retry later" comes back; on it, the broker
        // moves the message to the group's DLQ instead.
        let will_return = count(|d| d.reconsume_times < d.max_reconsume_times);
        self.counters
            .enter(messages, count(|d| d.reconsume_times > 0));
        let mut stopping = self.stopping.clone();
        let outcome = tokio::select! {
            outcome = self.handler.handle(batch) => outcome,
            // A handler waiting out a backoff must not outlive the runtime
            // its timers belong to (tokio panics then).
            Ok(_) = stopping.wait_for(|stopping| *stopping) => {
                Outcome::RetryLater("ordermq is shutting down".into())
            }
        };
        let consumed = matches!(outcome, Outcome::Consumed);
        self.counters.leave(messages, consumed, will_return);
        outcome
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
            Outcome::Consumed => ConsumeConcurrentlyStatus::ConsumeSuccess,
            Outcome::RetryLater(_) => ConsumeConcurrentlyStatus::ReconsumeLater,
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
