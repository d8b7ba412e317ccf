//! Reading a consumer group's dead-letter queue, `%DLQ%<group>`.
//!
//! RocketMQ moves a message there once a group has failed it
//! `max_reconsume_times` times, and never delivers it again by itself: an
//! operator has to look at it (`ordermq dlq list`) and, once the cause is
//! fixed, replay it (`ordermq dlq replay`). This module only *reads*: a lite
//! pull consumer assigned every queue of the DLQ topic, rewound to the first
//! offset, polled until it has seen every message up to the queues' current
//! end. It commits no offset, so reading twice shows the same messages — a
//! DLQ is a record, replays are made idempotent by the consumers' inboxes.

use std::time::{Duration, Instant};

use ordermq_domain::parked::{Unverified, verify_event};
use ordermq_domain::ports::Delivery;
use ordermq_domain::signing::Keyring;
use rocketmq_client_rust::DefaultLitePullConsumerBuilder;
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::message_ext::MessageExt;

use crate::MqError;
use crate::client::{EVENT_ID_PROPERTY, KEY_ID_PROPERTY, MqClient, SIGNATURE_PROPERTY};

/// The dead-letter topic of `group`, as RocketMQ names it.
pub fn dlq_topic(group: &str) -> String {
    format!("%DLQ%{group}")
}

/// One message of a dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The message id the group saw (the producer's unique key), stable across retries.
    pub msg_id: String,
    /// The DLQ topic it was read from.
    pub topic: String,
    /// ordermq's event id (`OrderPaid:<order>`), when the message carries one.
    pub event_id: Option<String>,
    /// The event key that signed it, if any.
    pub key_id: Option<String>,
    /// Its signature, if any.
    pub signature: Option<String>,
    /// The message key (the order id for ordermq's events).
    pub key: String,
    pub tag: String,
    pub body: Vec<u8>,
    /// How many times the group had been redelivered the message when it gave up.
    pub reconsume_times: i32,
    /// When the broker stored it in the DLQ (epoch ms).
    pub stored_at: i64,
    /// Position in the DLQ: `(queue id, offset)`.
    pub position: (i32, i64),
}

impl DeadLetter {
    /// Checks its signature as the group's listener did (a replay applies
    /// only what a delivery would have).
    ///
    /// # Errors
    ///
    /// [`Unverified`] if it carries no event id or its signature does not
    /// hold under `keys` (see [`verify_event`]).
    pub fn verify(&self, keys: &Keyring) -> Result<(), Unverified> {
        verify_event(
            keys,
            self.event_id.as_deref(),
            self.key_id.as_deref(),
            self.signature.as_deref(),
            &self.body,
        )
    }

    /// The message as a fresh delivery to its group's handler (a replay).
    pub fn to_delivery(&self) -> Delivery {
        Delivery {
            msg_id: self.msg_id.clone(),
            topic: self.topic.clone(),
            tag: self.tag.clone(),
            key: self.key.clone(),
            body: self.body.clone(),
            reconsume_times: 0,
            max_reconsume_times: 0,
        }
    }
}

fn dead_letter(m: &MessageExt) -> DeadLetter {
    let msg_id = m
        .get_user_property("UNIQ_KEY")
        .map(|id| id.to_string())
        .unwrap_or_else(|| m.msg_id().to_string());
    DeadLetter {
        msg_id,
        topic: m.topic().to_string(),
        event_id: m
            .get_user_property(EVENT_ID_PROPERTY)
            .map(|v| v.to_string()),
        key_id: m.get_user_property(KEY_ID_PROPERTY).map(|v| v.to_string()),
        signature: m
            .get_user_property(SIGNATURE_PROPERTY)
            .map(|v| v.to_string()),
        key: m
            .keys()
            .and_then(|keys| keys.into_iter().next())
            .unwrap_or_default(),
        tag: m.get_tags().map(|t| t.to_string()).unwrap_or_default(),
        body: m.body().map(|b| b.to_vec()).unwrap_or_default(),
        reconsume_times: m.reconsume_times(),
        stored_at: m.store_timestamp(),
        position: (m.queue_id(), m.queue_offset()),
    }
}

impl MqClient {
    /// Every message currently in `%DLQ%<group>`, oldest first. A group that
    /// never dead-lettered anything has no DLQ topic yet: that is an empty list.
    /// Gives up with an error if the broker does not hand over every message
    /// within `timeout`.
    pub async fn dead_letters(
        &self,
        group: &str,
        timeout: Duration,
    ) -> Result<Vec<DeadLetter>, MqError> {
        let topic = dlq_topic(group);
        // rocketmq-client-rust answers "Argument is invalid" both for a topic
        // without a route and for a NameServer it cannot reach: tell them
        // apart first, or an unreachable cluster would read as an empty DLQ.
        self.probe_nameserver().await?;
        let mut builder = DefaultLitePullConsumerBuilder::new(self.runtime.clone());
        if let Some(hook) = &self.rpc_hook {
            builder = builder.rpc_hook(std::sync::Arc::clone(hook));
        }
        let consumer = builder
            .consumer_group(format!("ordermq_dlq_reader_{group}"))
            .name_server_addr(self.namesrv_addr.as_str())
            .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
            .auto_commit(false)
            .pull_batch_size(64)
            .build()
            .map_err(|e| MqError::client("DLQ reader", e))?;
        consumer
            .start()
            .await
            .map_err(|e| MqError::client("DLQ reader start", e))?;
        let result = async {
            let queues = match consumer.fetch_message_queues(&topic).await {
                Ok(queues) => queues,
                // No route: nothing was ever dead-lettered for this group.
                Err(e) => {
                    tracing::debug!(topic, error = %e, "no DLQ topic route; treating as empty");
                    return Ok(Vec::new());
                }
            };
            let mut expected = 0i64;
            for queue in &queues {
                let max = consumer
                    .max_offset(queue)
                    .await
                    .map_err(|e| MqError::client("DLQ max offset", e))?;
                let min = consumer
                    .min_offset(queue)
                    .await
                    .map_err(|e| MqError::client("DLQ min offset", e))?;
                expected += (max - min).max(0);
            }
            if expected == 0 {
                return Ok(Vec::new());
            }
            consumer
                .assign(queues.clone())
                .await
                .map_err(|e| MqError::client("DLQ assign", e))?;
            for queue in &queues {
                consumer
                    .seek_to_begin(queue)
                    .await
                    .map_err(|e| MqError::client("DLQ seek", e))?;
            }
            let deadline = Instant::now() + timeout;
            let mut letters: Vec<DeadLetter> = Vec::new();
            while (letters.len() as i64) < expected {
                if Instant::now() >= deadline {
                    return Err(MqError::client(
                        "DLQ read",
                        format!(
                            "{topic}: read {} of {expected} messages within {timeout:?}",
                            letters.len()
                        ),
                    ));
                }
                for m in consumer.poll_with_timeout(500).await {
                    let letter = dead_letter(&m);
                    if !letters.iter().any(|l| l.position == letter.position) {
                        letters.push(letter);
                    }
                }
            }
            letters.sort_by_key(|l| (l.stored_at, l.position));
            Ok(letters)
        }
        .await;
        consumer.shutdown().await;
        result
    }
}

impl MqClient {
    /// Fails unless at least one configured NameServer accepts a connection.
    async fn probe_nameserver(&self) -> Result<(), MqError> {
        let mut errors = Vec::new();
        for addr in self.namesrv_addr.split(';').map(str::trim) {
            match tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr))
                .await
            {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => errors.push(format!("{addr}: {e}")),
                Err(_) => errors.push(format!("{addr}: no answer within 3 s")),
            }
        }
        Err(MqError::client(
            "NameServer",
            format!("cannot connect ({})", errors.join("; ")),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dlq_topic_follows_rocketmq_naming() {
        assert_eq!(dlq_topic("credit_group"), "%DLQ%credit_group");
    }
}
