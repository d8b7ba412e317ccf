//! The payment gateway's refunds over HTTP: `POST /payments/refunds`.
//!
//! Why apart: the payment provider is usually another vendor than the SMS
//! or carrier one, with its own URL, keys and timeouts.

use std::time::Duration;

use ordermq_domain::Amount;
use ordermq_domain::ports::{BoxFuture, GatewayError, PaymentGateway};
use serde::{Deserialize, Serialize};

use super::client::{HttpOptions, HttpSetupError, ProviderClient};

/// The path of a refund.
pub const REFUND: &str = "/payments/refunds";

/// The payment gateway (refunds), reached over HTTP.
#[derive(Debug, Clone)]
pub struct HttpPayments {
    client: ProviderClient,
}

#[derive(Serialize)]
struct Refund<'a> {
    idempotency_key: &'a str,
    payment_id: &'a str,
    amount: i64,
}

#[derive(Deserialize)]
struct Refunded {
    provider_refund_id: String,
}

impl HttpPayments {
    /// An adapter for the gateway at `options.base_url`.
    ///
    /// # Errors
    ///
    /// [`HttpSetupError`] if the base URL is not http(s) or the client cannot be built.
    pub fn new(options: HttpOptions) -> Result<Self, HttpSetupError> {
        ProviderClient::new("payment gateway", options).map(|client| Self { client })
    }

    /// The longest one refund call can take, retries included.
    pub fn deadline(&self) -> Duration {
        self.client.deadline()
    }
}

impl PaymentGateway for HttpPayments {
    fn refund<'a>(
        &'a self,
        idempotency_key: &'a str,
        payment_id: &'a str,
        amount: Amount,
    ) -> BoxFuture<'a, Result<String, GatewayError>> {
        Box::pin(async move {
            let body = Refund {
                idempotency_key,
                payment_id,
                amount: amount.minor_units(),
            };
            let refunded: Refunded = self.client.post(REFUND, idempotency_key, &body).await?;
            super::reference(
                &self.client,
                REFUND,
                refunded.provider_refund_id,
                "provider_refund_id",
            )
        })
    }
}
