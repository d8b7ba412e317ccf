//! The RocketMQ client adapter: a producer behind [`Publisher`] and push
//! consumers that drive [`Handler`]s.
//!
//! rocketmq-client-rust calls listeners synchronously on its blocking lanes.
//! The bridge here blocks that lane thread on the async handler (never an
//! async worker), and maps [`Outcome`] to `ConsumeSuccess` / `ReconsumeLater`
//! so the broker's retry → `%RETRY%<group>` → `%DLQ%<group>` machinery applies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ordermq_domain::OutboxMessage;
use ordermq_domain::ports::{BoxFuture, Delivery, Handler, Outcome, PublishError, Publisher};
use rocketmq_client_rust::{
    ClientResult, ClientRuntime, ClientRuntimeConfig, ConsumeConcurrentlyContext,
    ConsumeConcurrentlyStatus, DefaultMQProducer, DefaultMQPushConsumer, MQPushConsumer,
    MessageListenerConcurrently, SendStatus, TelemetryHandle,
};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_queue::MessageQueue;
use rocketmq_model::common::message::message_single::Message;
use rocketmq_runtime::{BlockingPoolPolicy, RuntimeContext};
use tokio::task::JoinSet;

use crate::MqError;

/// How long one send may take before it counts as failed (the outbox retries it).
const SEND_TIMEOUT_MS: u32 = 3_000;
/// The user property carrying the event id, so consumers can deduplicate
/// without parsing the body and operators can find an event in the broker.
pub const EVENT_ID_PROPERTY: &str = "ordermq_event_id";

/// One consumer group's subscription.
#[derive(Debug, Clone)]
pub struct SubscribeOptions {
    pub group: String,
    pub topic: String,
    /// Tag expression, e.g. `OrderPaid` or `OrderPaid || OrderRefunded`.
    pub tags: String,
    /// Redeliveries before the broker moves a failing message to `%DLQ%<group>`.
    pub max_reconsume_times: i32,
}

/// A connected producer plus the consumer groups started through it.
pub struct MqClient {
    runtime: Arc<ClientRuntime>,
    producer: DefaultMQProducer,
    consumers: Mutex<Vec<DefaultMQPushConsumer>>,
    namesrv_addr: String,
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
    /// (`host:port;host:port`). Must be called inside the application's Tokio runtime.
    pub async fn connect(namesrv_addr: &str, producer_group: &str) -> Result<Self, MqError> {
        // Listeners block a lane thread while a handler awaits I/O (SMS,
        // logistics, database): give the lanes room for every consumer thread.
        let lanes = BlockingPoolPolicy {
            name: "ordermq-mq".into(),
            max_concurrency: 160,
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
        let mut producer = DefaultMQProducer::builder(runtime.clone())
            .producer_group(producer_group)
            .name_server_addr(namesrv_addr)
            .send_msg_timeout(SEND_TIMEOUT_MS)
            .retry_times_when_send_failed(2)
            .default_topic_queue_nums(8)
            .build();
        producer
            .start()
            .await
            .map_err(|e| MqError::client("producer start", e))?;
        Ok(Self {
            runtime,
            producer,
            consumers: Mutex::new(Vec::new()),
            namesrv_addr: namesrv_addr.to_owned(),
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
        })
    }

    /// Starts a push consumer of `options.group` that hands each delivery to `handler`.
    pub async fn subscribe(
        &self,
        options: SubscribeOptions,
        handler: Arc<dyn Handler>,
    ) -> Result<(), MqError> {
        let mut consumer = DefaultMQPushConsumer::builder(self.runtime.clone())
            .consumer_group(options.group.as_str())
            .name_server_addr(self.namesrv_addr.as_str())
            // A new group starts from the beginning of the topic: events
            // published before the group first connected are not skipped.
            .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
            .max_reconsume_times(options.max_reconsume_times)
            .consume_message_batch_max_size(1)
            .consume_thread_min(32)
            .consume_thread_max(64)
            .build();
        consumer
            .subscribe(options.topic.as_str(), options.tags.as_str())
            .await
            .map_err(|e| MqError::client("subscribe", e))?;
        consumer.register_message_listener_concurrently(ListenerBridge {
            handler,
            runtime: tokio::runtime::Handle::current(),
            max_reconsume_times: options.max_reconsume_times,
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

    /// Stops consumers (in-flight deliveries finish or are redelivered later),
    /// then the producer, then the client runtime.
    pub async fn shutdown(self) {
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

fn to_message(m: &OutboxMessage) -> Result<Message, PublishError> {
    let mut builder = Message::builder()
        .topic(m.topic.as_str())
        .tags(m.tag.as_str())
        .key(m.key.as_str())
        .body(m.body.clone().into_bytes());
    builder = builder
        .raw_property(EVENT_ID_PROPERTY, m.event_id.as_str())
        .map_err(|e| PublishError(format!("message {}: {e}", m.event_id)))?;
    if let Some(at) = m.deliver_at {
        builder = builder.deliver_time_ms(at.max(0) as u64);
    }
    builder
        .build()
        .map_err(|e| PublishError(format!("message {}: {e}", m.event_id)))
}

impl Publisher for ProducerPublisher {
    fn publish<'a>(
        &'a self,
        batch: &'a [OutboxMessage],
    ) -> BoxFuture<'a, Vec<Result<(), PublishError>>> {
        Box::pin(async move {
            let mut results: Vec<Result<(), PublishError>> =
                vec![Err(PublishError("not attempted".into())); batch.len()];
            let mut sends = JoinSet::new();
            for (index, outbox) in batch.iter().enumerate() {
                let message = match to_message(outbox) {
                    Ok(message) => message,
                    Err(e) => {
                        results[index] = Err(e);
                        continue;
                    }
                };
                let producer = self.producer.clone();
                let key = outbox.key.clone();
                sends.spawn(async move {
                    let sent = producer
                        .send_with_selector(
                            message,
                            |queues: &[MessageQueue], _m: &Message, key: &String| {
                                queue_for(queues, key)
                            },
                            key,
                        )
                        .await;
                    let result = match sent {
                        Ok(Some(r)) if r.send_status == SendStatus::SendOk => Ok(()),
                        Ok(Some(r)) => {
                            Err(PublishError(format!("broker answered {:?}", r.send_status)))
                        }
                        Ok(None) => Err(PublishError("no send result".into())),
                        Err(e) => Err(PublishError(e.to_string())),
                    };
                    (index, result)
                });
            }
            while let Some(joined) = sends.join_next().await {
                match joined {
                    Ok((index, result)) => results[index] = result,
                    Err(e) => tracing::error!(error = %e, "send task failed"),
                }
            }
            results
        })
    }
}

/// Adapts a synchronous RocketMQ listener callback to an async [`Handler`].
struct ListenerBridge {
    handler: Arc<dyn Handler>,
    runtime: tokio::runtime::Handle,
    max_reconsume_times: i32,
}

fn to_delivery(m: &MessageExt, max_reconsume_times: i32) -> Delivery {
    let uniq = m
        .get_user_property("UNIQ_KEY")
        .map(|id| id.to_string())
        .unwrap_or_else(|| m.msg_id().to_string());
    Delivery {
        msg_id: uniq,
        topic: m.topic().to_string(),
        tag: m.get_tags().map(|t| t.to_string()).unwrap_or_default(),
        key: m
            .keys()
            .and_then(|keys| keys.into_iter().next())
            .unwrap_or_default(),
        body: m.body_slice().to_vec(),
        reconsume_times: m.reconsume_times(),
        max_reconsume_times,
    }
}

impl MessageListenerConcurrently for ListenerBridge {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        _context: &ConsumeConcurrentlyContext,
    ) -> ClientResult<ConsumeConcurrentlyStatus> {
        for message in msgs {
            let delivery = to_delivery(message, self.max_reconsume_times);
            // This runs on a client blocking-lane thread, never an async worker,
            // so blocking it on the handler is allowed and starves nothing.
            if let Outcome::RetryLater(_) = self.runtime.block_on(self.handler.handle(delivery)) {
                return Ok(ConsumeConcurrentlyStatus::ReconsumeLater);
            }
        }
        Ok(ConsumeConcurrentlyStatus::ConsumeSuccess)
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
