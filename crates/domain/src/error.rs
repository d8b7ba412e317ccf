//! One error enum per operation, each variant mapped to a stable code.
//!
//! Codes are part of the public API: clients match on them. A code is never
//! renamed or reused for a different meaning; new failures get new codes.

use std::fmt;

use thiserror::Error;

/// The machine-readable codes every error response carries, in one place so
/// that no two meanings can share one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidRequest,
    MalformedJson,
    PayloadTooLarge,
    UnsupportedMediaType,
    UnknownSku,
    OutOfStock,
    AmountOverflow,
    OrderNotFound,
    InvalidSignature,
    AmountMismatch,
    OrderNotPayable,
    PaymentConflict,
    NotFound,
    MethodNotAllowed,
    StorageUnavailable,
    Internal,
    IdempotencyKeyRequired,
    IdempotencyKeyReused,
    OrderNotRefundable,
    RefundExceedsPaid,
    RefundNotFound,
    RefundNotRetryable,
    ShipmentNotFound,
    TrackingMismatch,
}

impl ErrorCode {
    /// Every code, for documentation and tests.
    pub const ALL: [ErrorCode; 24] = [
        Self::InvalidRequest,
        Self::MalformedJson,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::UnknownSku,
        Self::OutOfStock,
        Self::AmountOverflow,
        Self::OrderNotFound,
        Self::InvalidSignature,
        Self::AmountMismatch,
        Self::OrderNotPayable,
        Self::PaymentConflict,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::StorageUnavailable,
        Self::Internal,
        Self::IdempotencyKeyRequired,
        Self::IdempotencyKeyReused,
        Self::OrderNotRefundable,
        Self::RefundExceedsPaid,
        Self::RefundNotFound,
        Self::RefundNotRetryable,
        Self::ShipmentNotFound,
        Self::TrackingMismatch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "INVALID_REQUEST",
            Self::MalformedJson => "MALFORMED_JSON",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Self::UnknownSku => "UNKNOWN_SKU",
            Self::OutOfStock => "OUT_OF_STOCK",
            Self::AmountOverflow => "AMOUNT_OVERFLOW",
            Self::OrderNotFound => "ORDER_NOT_FOUND",
            Self::InvalidSignature => "INVALID_SIGNATURE",
            Self::AmountMismatch => "AMOUNT_MISMATCH",
            Self::OrderNotPayable => "ORDER_NOT_PAYABLE",
            Self::PaymentConflict => "PAYMENT_CONFLICT",
            Self::NotFound => "NOT_FOUND",
            Self::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Self::StorageUnavailable => "STORAGE_UNAVAILABLE",
            Self::Internal => "INTERNAL",
            Self::IdempotencyKeyRequired => "IDEMPOTENCY_KEY_REQUIRED",
            Self::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Self::OrderNotRefundable => "ORDER_NOT_REFUNDABLE",
            Self::RefundExceedsPaid => "REFUND_EXCEEDS_PAID",
            Self::RefundNotFound => "REFUND_NOT_FOUND",
            Self::RefundNotRetryable => "REFUND_NOT_RETRYABLE",
            Self::ShipmentNotFound => "SHIPMENT_NOT_FOUND",
            Self::TrackingMismatch => "TRACKING_MISMATCH",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A field of a request that does not satisfy its rule.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field} {rule}")]
pub struct ValidationError {
    pub field: &'static str,
    pub rule: String,
}

impl ValidationError {
    pub fn new(field: &'static str, rule: impl Into<String>) -> Self {
        Self {
            field,
            rule: rule.into(),
        }
    }
}

/// Why an order could not be created. Nothing was reserved in any of these cases.
#[derive(Debug, Error)]
pub enum CreateOrderError {
    #[error("unknown SKU {0}")]
    UnknownSku(String),
    #[error("not enough stock for SKU {sku}: {available} available, {requested} requested")]
    OutOfStock {
        sku: String,
        available: i64,
        requested: u32,
    },
    #[error("order total overflows")]
    AmountOverflow,
    #[error(transparent)]
    Storage(#[from] crate::ports::StorageError),
}

impl CreateOrderError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::UnknownSku(_) => ErrorCode::UnknownSku,
            Self::OutOfStock { .. } => ErrorCode::OutOfStock,
            Self::AmountOverflow => ErrorCode::AmountOverflow,
            Self::Storage(_) => ErrorCode::StorageUnavailable,
        }
    }
}

/// Why a payment notice was refused. Nothing changed in any of these cases.
#[derive(Debug, Error)]
pub enum PayOrderError {
    #[error("order {0} not found")]
    OrderNotFound(String),
    #[error("amount {notified} does not match the order's amount {expected}")]
    AmountMismatch { expected: i64, notified: i64 },
    #[error("order {order_id} is {status} and cannot be paid")]
    NotPayable { order_id: String, status: String },
    #[error("payment {payment_id} was already applied to another order")]
    PaymentIdReused { payment_id: String },
    #[error(transparent)]
    Storage(#[from] crate::ports::StorageError),
}

impl PayOrderError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::OrderNotFound(_) => ErrorCode::OrderNotFound,
            Self::AmountMismatch { .. } => ErrorCode::AmountMismatch,
            Self::NotPayable { .. } => ErrorCode::OrderNotPayable,
            Self::PaymentIdReused { .. } => ErrorCode::PaymentConflict,
            Self::Storage(_) => ErrorCode::StorageUnavailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_screaming_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "duplicate code {s}");
            assert!(s.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'));
        }
    }
}
