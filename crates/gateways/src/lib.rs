//! Adapters behind the domain's third-party ports: the SMS gateway, the
//! logistics system and the payment gateway's refunds.
//!
//! The consumers see only the traits in `ordermq_domain::ports`
//! (`SmsGateway`, `LogisticsGateway`, `PaymentGateway`), so which adapter
//! serves each port — a fake or a real provider over HTTP — is chosen at
//! startup (`gateways.*.mode`); nothing else changes.
//!
//! # Layout
//! - [`fake`]: in-process fakes with the seed document's latencies, spikes,
//!   failure rates and idempotency keys (the zero-configuration default).
//! - [`http`]: [`HttpSms`], [`HttpLogistics`], [`HttpPayments`]: the
//!   providers over HTTP, signed, idempotent, with timeouts and retries
//!   (the protocol is `docs/gateways.md`).

pub mod fake;
pub mod http;

pub use fake::{FakeGateway, Profile};
pub use http::{HttpLogistics, HttpOptions, HttpPayments, HttpSetupError, HttpSms};
