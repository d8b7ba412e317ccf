//! The one error shape every endpoint answers with:
//! `{"code": "STABLE_CODE", "message": "human text"}` and the right status.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ordermq_domain::ports::StorageError;
use ordermq_domain::{
    CarrierUpdateError, CreateOrderError, ErrorCode, PayOrderError, RefundError, RetryRefundError,
    ValidationError,
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

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::StorageUnavailable,
            e.to_string(),
        )
    }
}

impl From<CreateOrderError> for ApiError {
    fn from(e: CreateOrderError) -> Self {
        let status = match e {
            CreateOrderError::UnknownSku(_) | CreateOrderError::AmountOverflow => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            CreateOrderError::OutOfStock { .. } => StatusCode::CONFLICT,
            CreateOrderError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, e.code(), e.to_string())
    }
}

impl From<PayOrderError> for ApiError {
    fn from(e: PayOrderError) -> Self {
        let status = match e {
            PayOrderError::OrderNotFound(_) => StatusCode::NOT_FOUND,
            PayOrderError::AmountMismatch { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            PayOrderError::NotPayable { .. } | PayOrderError::PaymentIdReused { .. } => {
                StatusCode::CONFLICT
            }
            PayOrderError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, e.code(), e.to_string())
    }
}

impl From<RefundError> for ApiError {
    fn from(e: RefundError) -> Self {
        let status = match e {
            RefundError::OrderNotFound(_) => StatusCode::NOT_FOUND,
            RefundError::UnknownLine(_) | RefundError::ExceedsPaid { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            RefundError::NotRefundable { .. } | RefundError::KeyReused { .. } => {
                StatusCode::CONFLICT
            }
            RefundError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, e.code(), e.to_string())
    }
}

impl From<RetryRefundError> for ApiError {
    fn from(e: RetryRefundError) -> Self {
        let status = match e {
            RetryRefundError::NotFound(_) => StatusCode::NOT_FOUND,
            RetryRefundError::NotRetryable { .. } => StatusCode::CONFLICT,
            RetryRefundError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, e.code(), e.to_string())
    }
}

impl From<CarrierUpdateError> for ApiError {
    fn from(e: CarrierUpdateError) -> Self {
        let status = match e {
            CarrierUpdateError::OrderNotFound(_) => StatusCode::NOT_FOUND,
            CarrierUpdateError::ShipmentNotFound(_)
            | CarrierUpdateError::TrackingMismatch { .. } => StatusCode::CONFLICT,
            CarrierUpdateError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, e.code(), e.to_string())
    }
}
