//! The only code in ordermq that knows RocketMQ.
//!
//! rocketmq-rust speaks in Java's vocabulary (producers, push consumers,
//! synchronous listener callbacks on a blocking pool). This crate keeps all of
//! that behind ordermq's own small async ports from `ordermq_domain::ports`:
//! [`Publisher`](ordermq_domain::ports::Publisher) for the outbox relay and
//! [`Handler`](ordermq_domain::ports::Handler) for consumer groups.
//!
//! Everything runs on the application's Tokio runtime (borrowed through
//! `RuntimeContext::try_from_current`), so ordermq has one runtime, one set of
//! worker threads, and tests can start it from `#[tokio::test]`.
//!
//! # Layout
//! - `embedded` (feature `embedded-broker`, on by default): an in-process
//!   NameServer + broker on loopback, for the one-command default run and for
//!   tests. A build for an external cluster (`--no-default-features`) does
//!   not compile rocketmq-broker, -namesrv or -store.
//! - [`embedded_options`]: what the embedded broker is given, in every build.
//! - [`delay`]: delivering at a due time with timer messages or delay levels.
//! - [`deliveries`]: what each group's handler was given and how it
//!   answered; a group is *settled* when nothing it received can come back.
//! - `producer`: the properties every message carries, an outbox row made a
//!   signed broker message, and the `Publisher` that sends a relay round.
//! - `listener`: the listener bridge, RocketMQ's synchronous listener made
//!   ordermq's async `Handler`: every message verified first (the ones that
//!   fail parked), early delayed ones sent on, outcomes counted; what a
//!   handler did not apply is sent on by the bridge itself (waiting events
//!   soon, failures on RocketMQ's retry schedule, past the last try to the
//!   group's DLQ), never through the client's send-back.
//! - [`client`]: one connection to the cluster (ACL credentials for one
//!   that needs them) with the producer and the push consumers on it.
//! - [`dlq`]: reading a group's dead-letter queue (`ordermq dlq`).
//! - [`cluster`]: a cluster of several brokers: topics created on every
//!   master, a topic's queues per broker, a group's progress per broker.
//! - [`durability`]: what `SEND_OK` promises on the cluster in use (each
//!   broker's `flushDiskType` and `brokerRole`), logged at start.
//! - [`offsets`]: moving a group back to a point in time (`feed replay`).

pub mod client;
pub mod cluster;
pub mod delay;
pub mod deliveries;
pub mod dlq;
pub mod durability;
#[cfg(feature = "embedded-broker")]
pub mod embedded;
pub mod embedded_options;
mod listener;
pub mod offsets;
mod producer;

use thiserror::Error;

pub use client::{AclCredentials, ClientSecurity, DEFAULT_BATCH, MqClient, SubscribeOptions};
pub use cluster::{BrokerQueues, GroupProgress};
pub use delay::{DelayLevels, DelayedDelivery, InvalidLevels, ROCKETMQ_DEFAULT_LEVELS};
pub use deliveries::{Deliveries, GroupDeliveries};
pub use dlq::{DeadLetter, dlq_topic};
pub use durability::BrokerDurability;
#[cfg(feature = "embedded-broker")]
pub use embedded::{EmbeddedBroker, EmbeddedNameServer};
pub use embedded_options::{BrokerFlush, BrokerRole, ClusterMember, EmbeddedOptions};
pub use offsets::QueueReset;

/// RocketMQ could not be started or reached.
#[derive(Debug, Error)]
pub enum MqError {
    #[error("RocketMQ runtime: {0}")]
    Runtime(String),
    #[error("embedded NameServer: {0}")]
    NameServer(String),
    #[error("embedded broker: {0}")]
    Broker(String),
    #[error("RocketMQ client ({what}): {reason}")]
    Client { what: &'static str, reason: String },
    #[error("RocketMQ configuration: {0}")]
    Config(String),
}

impl MqError {
    fn client(what: &'static str, reason: impl ToString) -> Self {
        Self::Client {
            what,
            reason: reason.to_string(),
        }
    }
}
