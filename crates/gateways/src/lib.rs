//! Adapters behind the domain's third-party ports: the SMS gateway, the
//! logistics system and the payment gateway's refunds.
//!
//! The consumers see only the traits in `ordermq_domain::ports`
//! (`SmsGateway`, `LogisticsGateway`, `PaymentGateway`), so a real provider
//! is one more module here, chosen at startup; nothing else changes.
//!
//! # Layout
//! - [`fake`]: in-process fakes with the seed document's latencies, spikes,
//!   failure rates and idempotency keys (the default; the tests' providers).

pub mod fake;

pub use fake::{FakeGateway, Profile};
