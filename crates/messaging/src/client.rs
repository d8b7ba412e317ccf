//! The RocketMQ client: connecting to a cluster (ACL credentials
//! included), the producer behind [`Publisher`], and push consumers that
//! drive [`Handler`]s.
//!
//! Events are signed and checked under the event keys: the producer adds
//! the HMAC of the event id and body (properties [`KEY_ID_PROPERTY`] and
//! [`SIGNATURE_PROPERTY`]; how a message is built is in `producer`), and
//! every group's listener bridge (in `listener`) verifies each delivery and
//! parks the ones that fail. This module wires both to one connection and
//! stops them in order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ordermq_domain::ports::{Handler, ParkingLot, Publisher};
use ordermq_domain::signing::Keyring;
use rocketmq_client_rust::{
    AclClientRPCHook, ClientRuntime, ClientRuntimeConfig, DefaultMQProducer, DefaultMQPushConsumer,
    MQPushConsumer, SessionCredentials, TelemetryHandle,
};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_runtime::{BlockingPoolPolicy, RuntimeContext};
use rocketmq_transport::api::RPCHook;

use crate::MqError;
use crate::delay::{DelayLevels, DelayedDelivery};
use crate::deliveries::Deliveries;
use crate::listener::{ListenerBridge, Verifier};
pub use crate::producer::{
    DELIVER_AT_PROPERTY, EVENT_ID_PROPERTY, KEY_ID_PROPERTY, SIGNATURE_PROPERTY,
};
use crate::producer::{Isolated, ProducerPublisher};

/// How long one send may take before it counts as failed (the outbox retries it).
const SEND_TIMEOUT_MS: u32 = 3_000;
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
    /// Most messages in one handler call ([`DEFAULT_BATCH`] unless a group
    /// gains from more: one database commit covers each call).
    pub batch: u32,
    /// The broker's delay levels (its `messageDelayLevel`): the `n`-th retry
    /// of a failed message waits level 3 + `n`, as RocketMQ's own would.
    pub retry_levels: DelayLevels,
}

/// Most messages in one handler call, unless a group says otherwise: one
/// database commit for up to this many.
pub const DEFAULT_BATCH: u32 = 64;

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
    /// The brokers every publisher of this client leaves out for a while
    /// (one failed send tells them all; see `producer::ISOLATION`).
    isolated: Isolated,
    /// The hops in flight of all this client's groups (see the listener's
    /// `HOP_PERMITS`).
    hop_permits: Arc<tokio::sync::Semaphore>,
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
            isolated: Isolated::default(),
            hop_permits: Arc::new(tokio::sync::Semaphore::new(crate::listener::HOP_PERMITS)),
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

    /// Creates `topic` with `queues` queues on every master broker of the
    /// cluster, if the cluster allows it. A failure is only logged:
    /// production clusters often manage topics themselves.
    ///
    /// Every master, not one: with several brokers, a topic on one of them
    /// puts every event there, and that broker's death stops them all.
    /// Where the NameServers cannot list the masters (an ACL without the
    /// permission), the producer's `createTopic` is the fallback: it
    /// creates the topic on every broker that carries the default topic
    /// `TBW102` (brokers with autoCreateTopicEnable).
    pub async fn ensure_topic(&self, topic: &str, queues: i32) -> Result<(), MqError> {
        let count = u32::try_from(queues.max(1)).unwrap_or(1);
        match self.create_topic_on_every_master(topic, count).await {
            Ok(brokers) if !brokers.is_empty() => {
                tracing::debug!(topic, queues, ?brokers, "topic created on every master");
                return Ok(());
            }
            Ok(_) => tracing::warn!(
                topic,
                "no master took the topic; trying the producer's createTopic"
            ),
            Err(e) => {
                tracing::warn!(topic, error = %e, "could not list the masters; trying the producer's createTopic")
            }
        }
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
        Arc::new(ProducerPublisher::new(
            self.producer.clone(),
            Arc::clone(&self.delayed),
            self.event_keys.clone(),
            Arc::clone(&self.isolated),
        ))
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
            // Up to `batch` messages per listener call: one database commit
            // for all. Pulls of up to 256 (brokers cap them: the embedded
            // one at 256, RocketMQ's default is 32).
            .consume_message_batch_max_size(options.batch.clamp(1, 1_024))
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
            retry_levels: options.retry_levels.clone(),
            stopping: self.stopping.subscribe(),
            counters: self.deliveries.group(&options.group),
            hop_permits: Arc::clone(&self.hop_permits),
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
