//! Moving a consumer group back to a point in time (`ordermq feed replay
//! --from`): RocketMQ's own "reset offset by timestamp", what `mqadmin
//! resetOffsetByTime` does.
//!
//! Why the broker's and not a copy of the events kept by the consumer: the
//! broker still holds every message its retention keeps, the reset is one
//! admin request per broker, and the group then reads the real messages
//! again, through the same listener, signature check and handler: a replay
//! exercises exactly what the live path does. The consumer must be
//! idempotent (the feed sink skips what it has by `order_seq`).
//!
//! The broker-side reset (`INVOKE_BROKER_TO_RESET_OFFSET`) is tried first;
//! a broker that answers "no consumer online" gets the older per-queue
//! form, which sets each queue's committed offset directly. A running push
//! consumer may later commit the offset it holds in memory over the reset,
//! so the group should be stopped while its offsets move.

use std::time::Duration;

use rocketmq_client_rust::{DefaultMQAdminExt, OffsetAdmin};

use crate::{MqClient, MqError};

/// One queue moved back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueReset {
    /// The broker that holds the queue.
    pub broker: String,
    /// The queue.
    pub queue_id: i64,
    /// The group's offset in it now: the first message stored at or after the time.
    pub offset: i64,
}

/// How long one reset may take.
const RESET_TIMEOUT: Duration = Duration::from_secs(15);

impl MqClient {
    /// Moves `group`'s offsets in `topic` back (or forward) to the first
    /// message each queue stored at or after `at_millis`.
    ///
    /// # Errors
    ///
    /// [`MqError::Client`] if the admin client cannot start, the topic has
    /// no route, a broker refuses the reset, or it takes longer than 15 s.
    pub async fn reset_offsets_to_time(
        &self,
        group: &str,
        topic: &str,
        at_millis: u64,
    ) -> Result<Vec<QueueReset>, MqError> {
        let mut admin = match &self.rpc_hook {
            Some(hook) => DefaultMQAdminExt::with_rpc_hook_and_timeout(
                self.runtime.clone(),
                hook.clone(),
                RESET_TIMEOUT,
            ),
            None => DefaultMQAdminExt::with_timeout(self.runtime.clone(), RESET_TIMEOUT),
        };
        admin.set_namesrv_addr(self.namesrv_addr.as_str());
        // Boxed for the same reason as in `durability`: the admin futures are deep.
        Box::pin(admin.start())
            .await
            .map_err(|e| MqError::client("admin start", e))?;
        let reset = tokio::time::timeout(
            RESET_TIMEOUT,
            Box::pin(reset(&admin, group, topic, at_millis)),
        )
        .await;
        Box::pin(admin.shutdown()).await;
        reset.map_err(|_| MqError::client("reset offset", "no answer within 15 s"))?
    }
}

async fn reset(
    admin: &DefaultMQAdminExt,
    group: &str,
    topic: &str,
    at: u64,
) -> Result<Vec<QueueReset>, MqError> {
    let moved = match OffsetAdmin::reset_offset_by_timestamp(
        admin,
        None,
        topic.into(),
        group.into(),
        at,
        true,
    )
    .await
    {
        Ok(table) => table
            .into_iter()
            .map(|(queue, offset)| QueueReset {
                broker: queue.broker_name().to_string(),
                queue_id: i64::from(queue.queue_id()),
                offset: i64::try_from(offset).unwrap_or(i64::MAX),
            })
            .collect::<Vec<_>>(),
        Err(first) => {
            tracing::debug!(error = %first, "broker-side reset refused; setting each queue's offset");
            OffsetAdmin::reset_offset_by_timestamp_old(
                admin,
                None,
                group.into(),
                topic.into(),
                at,
                true,
            )
            .await
            .map_err(|e| MqError::client("reset offset", format!("{first}; then {e}")))?
            .into_iter()
            .map(|s| QueueReset {
                broker: s.broker_name.to_string(),
                queue_id: s.queue_id,
                offset: s.rollback_offset,
            })
            .collect()
        }
    };
    let mut moved = moved;
    moved.sort_by(|a, b| (&a.broker, a.queue_id).cmp(&(&b.broker, b.queue_id)));
    Ok(moved)
}
