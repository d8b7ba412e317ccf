//! The SMS gateway over HTTP: `POST /sms/send`.
//!
//! Why a module per provider: each owns its paths, its request and answer
//! bodies and its checks of the answer; the client does the rest.

use std::time::Duration;

use ordermq_domain::ports::{BoxFuture, GatewayError, SmsGateway};
use serde::{Deserialize, Serialize};

use super::client::{HttpOptions, HttpSetupError, ProviderClient};

/// The path of a send.
pub const SEND: &str = "/sms/send";

/// The SMS gateway, reached over HTTP.
#[derive(Debug, Clone)]
pub struct HttpSms {
    client: ProviderClient,
}

#[derive(Serialize)]
struct SendSms<'a> {
    idempotency_key: &'a str,
    to_user: &'a str,
    text: &'a str,
}

#[derive(Deserialize)]
struct Sent {
    message_id: String,
}

impl HttpSms {
    /// An adapter for the gateway at `options.base_url`.
    ///
    /// # Errors
    ///
    /// [`HttpSetupError`] if the base URL is not http(s) or the client cannot be built.
    pub fn new(options: HttpOptions) -> Result<Self, HttpSetupError> {
        ProviderClient::new("sms gateway", options).map(|client| Self { client })
    }

    /// The longest one send can take, retries included.
    pub fn deadline(&self) -> Duration {
        self.client.deadline()
    }
}

impl SmsGateway for HttpSms {
    fn send<'a>(
        &'a self,
        idempotency_key: &'a str,
        to_user: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, Result<String, GatewayError>> {
        Box::pin(async move {
            let body = SendSms {
                idempotency_key,
                to_user,
                text,
            };
            let sent: Sent = self.client.post(SEND, idempotency_key, &body).await?;
            super::reference(&self.client, SEND, sent.message_id, "message_id")
        })
    }
}
