//! The logistics system over HTTP: `POST /logistics/shipments` books,
//! `POST /logistics/shipments/cancel` cancels a booking.
//!
//! Why a cancel call: a full refund of an order the carrier has not
//! collected must not leave a parcel on its way; a carrier that has it
//! already says so (`"cancelled": false`), which is an answer, not a failure.

use std::time::Duration;

use ordermq_domain::OrderPaid;
use ordermq_domain::ports::{BoxFuture, Cancellation, GatewayError, LogisticsGateway};
use serde::{Deserialize, Serialize};

use super::client::{HttpOptions, HttpSetupError, ProviderClient};

/// The path of a booking.
pub const BOOK: &str = "/logistics/shipments";
/// The path of a cancellation.
pub const CANCEL: &str = "/logistics/shipments/cancel";

/// The logistics system, reached over HTTP.
#[derive(Debug, Clone)]
pub struct HttpLogistics {
    client: ProviderClient,
}

#[derive(Serialize)]
struct Line<'a> {
    sku: &'a str,
    quantity: u32,
}

#[derive(Serialize)]
struct Book<'a> {
    idempotency_key: &'a str,
    order_id: &'a str,
    user_id: &'a str,
    lines: Vec<Line<'a>>,
}

#[derive(Deserialize)]
struct Booked {
    tracking_no: String,
}

#[derive(Serialize)]
struct Cancel<'a> {
    idempotency_key: &'a str,
    order_id: &'a str,
    tracking_no: &'a str,
}

#[derive(Deserialize)]
struct Cancelled {
    cancelled: bool,
}

impl HttpLogistics {
    /// An adapter for the system at `options.base_url`.
    ///
    /// # Errors
    ///
    /// [`HttpSetupError`] if the base URL is not http(s) or the client cannot be built.
    pub fn new(options: HttpOptions) -> Result<Self, HttpSetupError> {
        ProviderClient::new("logistics system", options).map(|client| Self { client })
    }

    /// The longest one call can take, retries included.
    pub fn deadline(&self) -> Duration {
        self.client.deadline()
    }
}

impl LogisticsGateway for HttpLogistics {
    fn create_shipment<'a>(
        &'a self,
        idempotency_key: &'a str,
        order: &'a OrderPaid,
    ) -> BoxFuture<'a, Result<String, GatewayError>> {
        Box::pin(async move {
            let body = Book {
                idempotency_key,
                order_id: order.order_id.as_str(),
                user_id: order.user_id.as_str(),
                lines: order
                    .lines
                    .iter()
                    .map(|l| Line {
                        sku: l.sku.as_str(),
                        quantity: l.quantity,
                    })
                    .collect(),
            };
            let booked: Booked = self.client.post(BOOK, idempotency_key, &body).await?;
            super::reference(&self.client, BOOK, booked.tracking_no, "tracking_no")
        })
    }

    fn cancel_shipment<'a>(
        &'a self,
        idempotency_key: &'a str,
        order_id: &'a str,
        tracking_no: &'a str,
    ) -> BoxFuture<'a, Result<Cancellation, GatewayError>> {
        Box::pin(async move {
            let body = Cancel {
                idempotency_key,
                order_id,
                tracking_no,
            };
            let answer: Cancelled = self.client.post(CANCEL, idempotency_key, &body).await?;
            Ok(if answer.cancelled {
                Cancellation::Cancelled
            } else {
                Cancellation::TooLate
            })
        })
    }
}
