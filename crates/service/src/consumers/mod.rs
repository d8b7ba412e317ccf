//! ordermq's consumers, one file each: every consumer group of
//! [`ordermq_domain::topology::CONSUMER_GROUPS`] has its handler here, and
//! the data team's change-feed sink (`feed`), which `ordermq feed sink` runs.
//!
//! A handler turns a batch of deliveries into an [`Outcome`]: `Consumed`
//! when every message is applied (or was applied before: each is
//! idempotent), `RetryLater` otherwise, and the broker redelivers the batch.
//!
//! A message whose body is not an event is the same on every retry: every
//! group that decodes events parks it on its own (`park_undecodable`),
//! so it neither comes back nor fails the batch it came with.
//!
//! [`Outcome`]: ordermq_domain::ports::Outcome

pub mod close;
pub mod feed;
pub mod flash;
pub mod receipt;
pub mod refund;
pub mod system;

use ordermq_domain::now_millis;
use ordermq_domain::parked::{MAX_PARKED_BODY, ParkedMessage, UNDECODABLE, clip};
use ordermq_domain::ports::Delivery;
use ordermq_store::Store;

pub use close::CloseHandler;
pub use feed::FeedSinkHandler;
pub use flash::{FlashOrderHandler, FlashOrderSettings};
pub use receipt::ReceiptHandler;
pub use refund::RefundHandler;
pub use system::{SystemGateways, SystemHandler};

/// Parks `delivery`, whose body is not an event (`parked_messages`, reason
/// `UNDECODABLE`), for `group`: it would fail every redelivery, and with it
/// its batch. Logged as an error: an operator sees it with `ordermq dlq
/// parked`.
///
/// # Errors
///
/// The database could not record it (the reason, for a retry: it is then
/// delivered again and parked then).
pub(crate) async fn park_undecodable(
    store: &Store,
    group: &str,
    delivery: &Delivery,
    error: &str,
) -> Result<(), String> {
    tracing::error!(group, msg_id = %delivery.msg_id, error, "undecodable message parked");
    let parked = ParkedMessage {
        group: group.to_owned(),
        msg_id: delivery.msg_id.clone(),
        topic: delivery.topic.clone(),
        tag: delivery.tag.clone(),
        key: delivery.key.clone(),
        event_id: None,
        key_id: None,
        reason: UNDECODABLE.to_owned(),
        detail: error.to_owned(),
        body: clip(&String::from_utf8_lossy(&delivery.body), MAX_PARKED_BODY),
        parked_at: now_millis(),
    };
    store
        .park(&parked)
        .await
        .map(|_| ())
        .map_err(|e| format!("undecodable message, not parked: {e}"))
}
