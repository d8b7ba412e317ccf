//! ordermq: an order system whose payment path is fast because everything
//! that can wait goes through RocketMQ.
//!
//! A payment callback runs one database transaction (order UNPAID → PAID,
//! which sells the units it reserved, an `OrderPaid` event into the outbox) and
//! answers. The relay publishes the event to `TopicOrderPaySuccess`; the
//! credit, marketing, push and warehouse systems consume it, each in its own
//! consumer group, each applying its effect exactly once.
//!
//! This crate is the server only: configuration, startup and the command
//! line. The rules live in `ordermq-domain`, the use cases in
//! `ordermq-service`, SQL in `ordermq-store`, RocketMQ in `ordermq-messaging`,
//! HTTP in `ordermq-api` and the third parties in `ordermq-gateways`.
//!
//! # Layout
//! - [`config`]: layered settings (defaults → file → `ORDERMQ_*`).
//! - [`startup`]: builds every component, one function each, and runs them
//!   until shutdown ([`Application`]).
//! - [`runtime`]: the fan-out's own runtime, below the payment path's priority.
//! - [`dlq`]: `ordermq dlq list|replay`, dead-lettered messages, and the
//!   messages consumer groups parked because they failed verification.
//! - [`outbox`]: `ordermq outbox parked|requeue`, the outbox rows the relay
//!   parked after the broker refused them on every attempt; `ordermq outbox
//!   missing`, the sent events the reconciler gave up on.
//! - [`feed`]: `ordermq feed sink|parked|verify`, the data team's side of
//!   the change feed: the sink's consumer group, its parked events, and the
//!   comparison of the order database with the sink.
//! - [`event_keys`]: the keys that sign and verify events (configured, or
//!   generated once per data directory).
//! - [`http`]: the HTTP server's accept loop: header, request and idle
//!   timeouts, a cap on connections, and each request's client address.
//! - [`gateways`]: the third parties as configured (fake or HTTP), shared by
//!   the server and `dlq replay`, and the warning about fakes.
//! - [`dlq`]: `ordermq dlq list|replay`, dead-lettered messages.
//! - [`logging`]: the default log filter of every ordermq process.

pub mod config;
pub mod dlq;
pub mod event_keys;
pub mod feed;
pub mod gateways;
pub mod http;
pub mod logging;
pub mod outbox;
pub mod runtime;
pub mod startup;

pub use config::Config;
pub use startup::{Application, StartError};
