//! ordermq: an order system whose payment path is fast because everything
//! that can wait goes through RocketMQ.
//!
//! A payment callback runs one database transaction (order UNPAID → PAID,
//! stock reservation → deduction, an `OrderPaid` event into the outbox) and
//! answers. The relay publishes the event to `TopicOrderPaySuccess`; the
//! credit, marketing, push and warehouse systems consume it, each in its own
//! consumer group, each applying its effect exactly once.
//!
//! # Layout
//! - [`config`]: layered settings (defaults → file → `ORDERMQ_*`).
//! - [`app`]: builds and runs everything ([`Application`]).
//! - [`background`]: the fan-out's own runtime, below the payment path's priority.
//! - [`harness`]: a whole ordermq in-process on a temp dir (benchmarks, tests).
//! - [`bench`]: `ordermq bench`, the benchmark scenarios and their reports.
//! - [`chaos`]: the fault-injection suite (`cargo run --release --bin chaos`).
//! - [`dlq`]: `ordermq dlq list|replay`, dead-lettered messages.
//! - [`service`]: the order service the HTTP API calls.
//! - [`lifecycle`]: closing unpaid orders (delayed messages) and gateway refunds.
//! - [`relay`]: outbox → RocketMQ.
//! - [`systems`]: the four consumer groups' logic.
//! - [`thirdparty`]: fake SMS gateway, logistics system and payment gateway.
//! - [`writer`]: group commit of creates and payments.

pub mod app;
pub mod background;
pub mod bench;
pub mod chaos;
pub mod config;
pub mod dlq;
pub mod harness;
pub mod lifecycle;
pub mod relay;
pub mod service;
pub mod systems;
pub mod thirdparty;
pub mod writer;

pub use app::{Application, StartError};
pub use config::Config;
