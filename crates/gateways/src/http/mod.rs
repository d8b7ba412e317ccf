//! HTTP adapters for the three third parties, speaking the protocol of
//! `docs/gateways.md`: JSON bodies, an `Idempotency-Key` (the event or
//! refund id), a signature over the timestamp and the body under a named
//! key, a timeout per attempt, retries with backoff, an overall deadline.
//!
//! Why a protocol of ordermq's own rather than one vendor's API: each team
//! puts its real provider (an SMS vendor, a carrier, a payment service)
//! behind a small translating service, and ordermq's side — retries,
//! idempotency, signing — stays one tested piece. `ordermq-fake-provider`
//! speaks the same protocol for tests and demos.
//!
//! # Layout
//! - [`client`]: signing, timeouts, retries and errors, shared by the three.
//! - [`sms`]: [`HttpSms`], `POST /sms/send`.
//! - [`logistics`]: [`HttpLogistics`], `POST /logistics/shipments` and
//!   `POST /logistics/shipments/cancel`.
//! - [`payments`]: [`HttpPayments`], `POST /payments/refunds`.

pub mod client;
pub mod logistics;
pub mod payments;
pub mod sms;

pub use client::{HttpOptions, HttpSetupError};
pub use logistics::HttpLogistics;
pub use payments::HttpPayments;
pub use sms::HttpSms;

use ordermq_domain::ports::GatewayError;

use client::ProviderClient;

/// The longest reference (message id, tracking number, refund id) stored.
pub const MAX_REFERENCE_LEN: usize = 64;

/// A provider's reference as ordermq stores it: 1 to [`MAX_REFERENCE_LEN`]
/// visible ASCII characters; anything else is an answer outside the protocol.
fn reference(
    client: &ProviderClient,
    path: &str,
    value: String,
    field: &str,
) -> Result<String, GatewayError> {
    if (1..=MAX_REFERENCE_LEN).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic())
    {
        Ok(value)
    } else {
        Err(client.error(
            path,
            format!(
                "the answer's {field} is not 1 to {MAX_REFERENCE_LEN} visible ASCII characters"
            ),
        ))
    }
}
