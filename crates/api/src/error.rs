//! The one error shape every endpoint answers with:
//! `{"code": "STABLE_CODE", "message": "human text"}` and the right status.
//!
//! A storage failure answers 503 `STORAGE_UNAVAILABLE` with a fixed message:
//! the driver's text (table names, SQL, file paths) stays in the log, which
//! gets the whole chain of causes.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ordermq_domain::ports::{StorageError, StorageErrorKind};
use ordermq_domain::{
    AttemptRefusal, CarrierUpdateError, CreateOrderError, CreateSaleError, ErrorCode,
    PayOrderError, RefundError, RetryRefundError, ValidationError,
};
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = %self.code, message = %self.message, "request failed");
        }
        let body = Body {
            code: self.code.as_str(),
            message: &self.message,
        };
        let mut response = (self.status, Json(body)).into_response();
        if matches!(
            self.status,
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNSUPPORTED_MEDIA_TYPE
        ) {
            // These are answered without reading the request body, so the
            // server cannot take another request on this connection. Say so:
            // without it a keep-alive client reuses the connection and its
            // next request fails ("connection closed before message completed").
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidRequest,
            e.to_string(),
        )
    }
}

/// What a client is told when the storage failed, whatever the cause.
pub const STORAGE_UNAVAILABLE_MESSAGE: &str = "the order database is unavailable; try again later";

impl ApiError {
    /// 401 `UNAUTHENTICATED`: the route needs a credential that did not come
    /// (or that ordermq does not know).
    pub(crate) fn unauthenticated(message: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthenticated,
            message,
        )
    }

    /// 503 with a fixed message; the error and its causes go to the log
    /// (an error if someone must look, a warning if a retry may do).
    pub fn storage(e: &StorageError) -> Self {
        let chain = error_chain(e);
        match e.kind() {
            StorageErrorKind::Corrupt => {
                tracing::error!(kind = %e.kind(), error = %chain, "storage failed");
            }
            StorageErrorKind::Unavailable | StorageErrorKind::Conflict => {
                tracing::warn!(kind = %e.kind(), error = %chain, "storage failed");
            }
        }
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::StorageUnavailable,
            STORAGE_UNAVAILABLE_MESSAGE,
        )
    }
}

/// `error: cause: cause…`, each cause once (an error whose text already
/// ends with its source's text is not repeated).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        Self::storage(&e)
    }
}

impl From<CreateOrderError> for ApiError {
    fn from(e: CreateOrderError) -> Self {
        let status = match &e {
            CreateOrderError::UnknownSku(_) | CreateOrderError::AmountOverflow => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            // 409, not 429: the refusal is about what the user holds, not
            // how fast it asks; it lasts until an order is paid or closes,
            // so no Retry-After could be honest.
            CreateOrderError::OutOfStock { .. }
            | CreateOrderError::TooManyUnpaidOrders { .. }
            | CreateOrderError::SkuLimitExceeded { .. } => StatusCode::CONFLICT,
            CreateOrderError::Storage(e) => return Self::storage(e),
        };
        Self::new(status, e.code(), e.to_string())
    }
}

impl From<CreateSaleError> for ApiError {
    fn from(e: CreateSaleError) -> Self {
        let status = match &e {
            CreateSaleError::UnknownSku(_) => StatusCode::UNPROCESSABLE_ENTITY,
            CreateSaleError::OutOfStock { .. } => StatusCode::CONFLICT,
            CreateSaleError::Storage(e) => return Self::storage(e),
        };
        Self::new(status, e.code(), e.to_string())
    }
}

impl From<AttemptRefusal> for ApiError {
    fn from(e: AttemptRefusal) -> Self {
        let status = match &e {
            AttemptRefusal::SaleNotFound(_) => StatusCode::NOT_FOUND,
            AttemptRefusal::OverUserLimit { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            AttemptRefusal::SaleNotActive { .. }
            | AttemptRefusal::SoldOut
            | AttemptRefusal::AlreadyAttempted => StatusCode::CONFLICT,
            AttemptRefusal::Storage(e) => return Self::storage(e),
        };
        Self::new(status, e.code(), e.to_string())
    }
}

impl From<PayOrderError> for ApiError {
    fn from(e: PayOrderError) -> Self {
        let status = match &e {
            PayOrderError::OrderNotFound(_) => StatusCode::NOT_FOUND,
            PayOrderError::AmountMismatch { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            PayOrderError::PaymentIdReused { .. } => StatusCode::CONFLICT,
            PayOrderError::Storage(e) => return Self::storage(e),
        };
        Self::new(status, e.code(), e.to_string())
    }
}

impl From<RefundError> for ApiError {
    fn from(e: RefundError) -> Self {
        let status = match &e {
            RefundError::OrderNotFound(_) => StatusCode::NOT_FOUND,
            RefundError::UnknownLine(_) | RefundError::ExceedsPaid { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            RefundError::NotRefundable { .. } | RefundError::KeyReused { .. } => {
                StatusCode::CONFLICT
            }
            RefundError::Storage(e) => return Self::storage(e),
        };
        Self::new(status, e.code(), e.to_string())
    }
}

impl From<RetryRefundError> for ApiError {
    fn from(e: RetryRefundError) -> Self {
        let status = match &e {
            RetryRefundError::NotFound(_) => StatusCode::NOT_FOUND,
            RetryRefundError::NotRetryable { .. } => StatusCode::CONFLICT,
            RetryRefundError::Storage(e) => return Self::storage(e),
        };
        Self::new(status, e.code(), e.to_string())
    }
}

impl From<CarrierUpdateError> for ApiError {
    fn from(e: CarrierUpdateError) -> Self {
        let status = match &e {
            CarrierUpdateError::OrderNotFound(_) => StatusCode::NOT_FOUND,
            CarrierUpdateError::ShipmentNotFound(_)
            | CarrierUpdateError::TrackingMismatch { .. } => StatusCode::CONFLICT,
            CarrierUpdateError::Storage(e) => return Self::storage(e),
        };
        Self::new(status, e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use super::*;

    /// A driver error with text a client must never see.
    #[derive(Debug)]
    struct DriverError;

    impl std::fmt::Display for DriverError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("SQLITE_BUSY: database is locked at /srv/ordermq/data/orders.db (UPDATE orders SET ...)")
        }
    }

    impl std::error::Error for DriverError {}

    fn body_of(response: Response) -> String {
        let mut body = pin!(axum::body::to_bytes(response.into_body(), usize::MAX));
        let mut context = Context::from_waker(Waker::noop());
        // A JSON response is one buffer, ready at once.
        match body.as_mut().poll(&mut context) {
            Poll::Ready(bytes) => String::from_utf8(bytes.unwrap().to_vec()).unwrap(),
            Poll::Pending => panic!("the body was not ready"),
        }
    }

    #[test]
    fn a_storage_error_answers_503_without_driver_text() {
        let storage = || StorageError::unavailable(DriverError);
        let errors: Vec<ApiError> = vec![
            storage().into(),
            CreateOrderError::from(storage()).into(),
            PayOrderError::from(storage()).into(),
            RefundError::from(storage()).into(),
            RetryRefundError::from(storage()).into(),
            CarrierUpdateError::from(StorageError::corrupt(DriverError)).into(),
        ];
        for error in errors {
            let response = error.into_response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            let body = body_of(response);
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(json["code"], "STORAGE_UNAVAILABLE");
            assert_eq!(json["message"], STORAGE_UNAVAILABLE_MESSAGE);
            for leak in ["SQLITE", "locked", "orders.db", "UPDATE", "/srv"] {
                assert!(!body.contains(leak), "{leak:?} in {body}");
            }
        }
    }

    #[test]
    fn the_chain_names_every_cause_once() {
        let e = StorageError::unavailable(DriverError);
        let chain = error_chain(&e);
        assert_eq!(chain.matches("SQLITE_BUSY").count(), 1, "{chain}");
        assert!(chain.starts_with("storage unavailable"), "{chain}");
    }
}
