//! ordermq's use cases, between the HTTP API and the adapters: what happens
//! when an order is created or paid, how events leave the order database, and
//! what every consumer group does with them.
//!
//! Everything here talks to the outside through the domain's ports and the
//! store: no HTTP, no RocketMQ client, no third party's wire format. That is
//! why the consumers and the relay can be driven in unit tests with a
//! temporary SQLite and fakes, without a broker.
//!
//! # Layout
//! - [`orders`]: the order service behind the HTTP API ([`Orders`]), holding
//!   the per-user limits every create is checked against.
//! - [`flash`]: flash-sale admission: a budget per sale leased from the
//!   database in chunks, one attempt per user, the admitted attempt durable
//!   with its message before it is answered ([`FlashSales`]).
//! - [`group_commit`]: one transaction for every create and payment that
//!   arrived during the previous commit ([`OrderWriter`], [`EffectWriter`]).
//! - [`relay`]: outbox → RocketMQ, with leases and backoff.
//! - [`sweep`]: the backstop that closes overdue orders whose close never came.
//! - [`reconcile`]: sent events some subscribed group has not acknowledged
//!   (receipts, closes, refunds) are published again.
//! - [`consumers`]: the handlers of the eight consumer groups: the four
//!   downstream systems, the close, the refund, the receipts and the
//!   flash-sale orders (paced).

pub mod consumers;
pub mod flash;
pub mod group_commit;
pub mod orders;
pub mod reconcile;
pub mod relay;
pub mod sweep;

#[cfg(test)]
mod testing;

pub use flash::{FlashSales, FlashSettings};
pub use group_commit::{EffectWriter, OrderWriter};
pub use orders::Orders;
