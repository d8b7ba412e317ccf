//! One error enum per operation, each variant mapped to a stable code, and
//! the storage failure every operation can end in.
//!
//! Codes are part of the public API: clients match on them. A code is never
//! renamed or reused for a different meaning; new failures get new codes.
//!
//! This module refers to no other of the crate (the modules above it name
//! their errors here), so operations' errors defined further up, such as
//! `RefundError`, are named in plain text.

use std::fmt;

use thiserror::Error;

/// The machine-readable codes every error response carries, in one place so
/// that no two meanings can share one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 422: a field of the request breaks a rule (see [`ValidationError`]).
    InvalidRequest,
    /// 400: the body is not JSON, or not the JSON the endpoint expects.
    MalformedJson,
    /// 413: the body is over the size limit (64 KiB).
    PayloadTooLarge,
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
    /// 422: a SKU is not in the catalog ([`CreateOrderError::UnknownSku`]) or
    /// not a line of the order being refunded (`RefundError::UnknownLine`).
    ///
    UnknownSku,
    /// 409: not enough stock left to reserve ([`CreateOrderError::OutOfStock`]).
    OutOfStock,
    /// 422: the order's total does not fit in an amount
    /// ([`CreateOrderError::AmountOverflow`]).
    AmountOverflow,
    /// 404: no order has this id.
    OrderNotFound,
    /// 401: the signature of a payment or carrier callback is missing or
    /// wrong, its `X-Timestamp` is missing or not a number, or its `X-Key-Id`
    /// names a key ordermq does not hold (never held, or rotated out).
    InvalidSignature,
    /// 422: a payment notice's amount is not the order's
    /// ([`PayOrderError::AmountMismatch`]).
    AmountMismatch,
    /// 409: reserved, never returned: a payment for an order that can no
    /// longer take it is recorded and owed back instead (see
    /// `PaymentReceipt::refund_required`).
    /// Kept so that the code is never reused for another meaning.
    OrderNotPayable,
    /// 409: the payment id already paid another order
    /// ([`PayOrderError::PaymentIdReused`]).
    PaymentConflict,
    /// 404: no route matches the request's path.
    NotFound,
    /// 405: the route exists but not with this method.
    MethodNotAllowed,
    /// 503: the database failed (any [`StorageError`]); the client may retry.
    StorageUnavailable,
    /// 500: reserved for an unexpected server error; no endpoint answers it today.
    Internal,
    /// 400: a refund was asked for without an `Idempotency-Key` header.
    IdempotencyKeyRequired,
    /// 409: the `Idempotency-Key` was already used on this order for a different
    /// refund (`RefundError::KeyReused`).
    IdempotencyKeyReused,
    /// 409: the order is not paid, or nothing is left to refund
    /// (`RefundError::NotRefundable`).
    OrderNotRefundable,
    /// 422: more units than were paid and not yet refunded
    /// (`RefundError::ExceedsPaid`).
    RefundExceedsPaid,
    /// 404: no refund has this id (`RetryRefundError::NotFound`).
    RefundNotFound,
    /// 409: only a `FAILED` refund can be retried (`RetryRefundError::NotRetryable`).
    RefundNotRetryable,
    /// 409: the warehouse has not booked the order's shipment yet; the carrier
    /// should retry later (`CarrierUpdateError::ShipmentNotFound`).
    ShipmentNotFound,
    /// 409: the tracking number is not the order's shipment's
    /// (`CarrierUpdateError::TrackingMismatch`).
    TrackingMismatch,
    /// 408: the request (its body included) was not completed within the
    /// server's request timeout; send it again.
    RequestTimeout,
    /// 401: a route that needs a caller's credential got none, or one
    /// ordermq does not know (`Authorization: Bearer`, or the dashboard's
    /// session cookie).
    Unauthenticated,
    /// 403: the caller is known but its role may not use this route (a
    /// `shop` token on an operator route), or a cookie-authenticated change
    /// came without the dashboard's CSRF header or from another origin.
    Forbidden,
    /// 401: a callback's signature holds, but its `X-Timestamp` is further
    /// from now than the accepted window (`callback_max_age`): a replay, or
    /// a sender's clock that is off.
    SignatureExpired,
    /// 409: the user already has as many unpaid orders as a user may
    /// ([`CreateOrderError::TooManyUnpaidOrders`]); pay one or wait until
    /// one closes.
    TooManyUnpaidOrders,
    /// 409: the order would take the user's units of one SKU in unpaid
    /// orders over the limit ([`CreateOrderError::SkuLimitExceeded`]).
    SkuLimitExceeded,
    /// 429: too many requests from this caller in a short time (orders and
    /// flash-sale attempts per token and user, or failed dashboard sign-ins
    /// per address); the answer's `Retry-After` says how many seconds to wait.
    RateLimited,
    /// 404: no flash sale has this id (`AttemptRefusal::SaleNotFound`).
    SaleNotFound,
    /// 409: the flash sale has not started yet or has ended
    /// (`AttemptRefusal::SaleNotActive`).
    SaleNotActive,
    /// 409: every unit of the flash sale is taken (`AttemptRefusal::SoldOut`);
    /// units of orders that close unpaid come back, so a later attempt may
    /// still be admitted.
    SoldOut,
    /// 409: this user already has an attempt at this flash sale
    /// (`AttemptRefusal::AlreadyAttempted`): one shot per user.
    AlreadyAttempted,
    /// 422: the attempt asks for more units than the sale's per-user limit
    /// (`AttemptRefusal::OverUserLimit`).
    SaleLimitExceeded,
    /// 404: no flash-sale attempt has this id.
    AttemptNotFound,
    /// 501: reserved, never returned: a carrier callback used to be
    /// refused by an order service whose warehouse runs as its own process;
    /// the warehouse's receipts now carry the shipments into the order
    /// database, so the callback is checked there.
    /// Kept so that the code is never reused for another meaning.
    ShipmentsElsewhere,
}

impl ErrorCode {
    /// Every code, for documentation and tests.
    pub const ALL: [ErrorCode; 38] = [
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
        Self::RequestTimeout,
        Self::Unauthenticated,
        Self::Forbidden,
        Self::SignatureExpired,
        Self::TooManyUnpaidOrders,
        Self::SkuLimitExceeded,
        Self::RateLimited,
        Self::SaleNotFound,
        Self::SaleNotActive,
        Self::SoldOut,
        Self::AlreadyAttempted,
        Self::SaleLimitExceeded,
        Self::AttemptNotFound,
        Self::ShipmentsElsewhere,
    ];

    /// The code as clients see it, in SCREAMING_SNAKE_CASE (`"ORDER_NOT_FOUND"`).
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
            Self::RequestTimeout => "REQUEST_TIMEOUT",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Forbidden => "FORBIDDEN",
            Self::SignatureExpired => "SIGNATURE_EXPIRED",
            Self::TooManyUnpaidOrders => "TOO_MANY_UNPAID_ORDERS",
            Self::SkuLimitExceeded => "SKU_LIMIT_EXCEEDED",
            Self::RateLimited => "RATE_LIMITED",
            Self::SaleNotFound => "SALE_NOT_FOUND",
            Self::SaleNotActive => "SALE_NOT_ACTIVE",
            Self::SoldOut => "SOLD_OUT",
            Self::AlreadyAttempted => "ALREADY_ATTEMPTED",
            Self::SaleLimitExceeded => "SALE_LIMIT_EXCEEDED",
            Self::AttemptNotFound => "ATTEMPT_NOT_FOUND",
            Self::ShipmentsElsewhere => "SHIPMENTS_ELSEWHERE",
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
    /// The request field at fault, as the client named it (`"lines"`).
    pub field: &'static str,
    /// The rule it breaks, phrased to follow the field (`"must not be empty"`).
    pub rule: String,
}

impl ValidationError {
    /// `field` breaks `rule`.
    pub fn new(field: &'static str, rule: impl Into<String>) -> Self {
        Self {
            field,
            rule: rule.into(),
        }
    }
}

/// What a storage failure means for the caller: retry, give up, or page someone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StorageErrorKind {
    /// Busy, locked, out of connections, unreachable: the same request may
    /// succeed if retried later.
    Unavailable,
    /// A constraint or a serialization failure: the write met another one.
    Conflict,
    /// Anything else, and stored data that cannot be decoded: retrying will
    /// not help; someone has to look.
    Corrupt,
}

impl StorageErrorKind {
    /// The kind as logs show it (`"unavailable"`, `"conflict"`, `"corrupt"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::Conflict => "conflict",
            Self::Corrupt => "corrupt",
        }
    }
}

impl fmt::Display for StorageErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The storage failed. The store classifies its driver's errors (the domain
/// names no driver) and keeps the driver's error as the source, so a log
/// shows the whole chain while an answer to a client shows none of it.
///
/// Its `Display` includes the source's text, for logs that print one line
/// (`%e`); a client must never be shown it.
#[derive(Debug, Error)]
#[error("storage {kind}: {source}")]
pub struct StorageError {
    kind: StorageErrorKind,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl StorageError {
    /// A failure of `kind` caused by `source` (an error, or a message).
    pub fn new(
        kind: StorageErrorKind,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Self {
            kind,
            source: source.into(),
        }
    }

    /// Busy, locked or unreachable: retry later.
    pub fn unavailable(
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Self::new(StorageErrorKind::Unavailable, source)
    }

    /// Stored data (or a driver answer) that makes no sense: page someone.
    pub fn corrupt(source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Self::new(StorageErrorKind::Corrupt, source)
    }

    /// What the failure means for the caller: retry, give up, or page someone.
    pub fn kind(&self) -> StorageErrorKind {
        self.kind
    }

    /// Whether the same request may succeed if retried.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            StorageErrorKind::Unavailable | StorageErrorKind::Conflict
        )
    }
}

/// Why an order could not be created. Nothing was reserved in any of these cases.
#[derive(Debug, Error)]
pub enum CreateOrderError {
    /// A line names a SKU (the field) that is not in the catalog.
    #[error("unknown SKU {0}")]
    UnknownSku(String),
    /// A line asks for more units than are in stock and not reserved.
    #[error("not enough stock for SKU {sku}: {available} available, {requested} requested")]
    OutOfStock {
        /// The SKU short of stock.
        sku: String,
        /// Units on hand and not reserved when the order was refused.
        available: i64,
        /// Units the line asked for.
        requested: u32,
    },
    /// The order's total (in minor units) does not fit in an `Amount`.
    #[error("order total overflows")]
    AmountOverflow,
    /// The user already has `limit` unpaid orders, the most a user may
    /// have (`limits::UserLimits`).
    #[error(
        "this user already has {limit} unpaid orders, the most allowed: pay one, \
         or wait until an unpaid order closes, then order again"
    )]
    TooManyUnpaidOrders {
        /// The most unpaid orders a user may have.
        limit: u32,
    },
    /// The order would take the user's units of one SKU in unpaid orders
    /// over the limit (`limits::UserLimits`).
    #[error(
        "at most {limit} units of SKU {sku} may be held in a user's unpaid orders: \
         {held} held, {requested} requested; pay, or wait until an unpaid order closes"
    )]
    SkuLimitExceeded {
        /// The SKU over the limit.
        sku: String,
        /// The most units of one SKU a user may hold in unpaid orders.
        limit: u32,
        /// Units of it in the user's unpaid orders before this one.
        held: u64,
        /// Units this order asks for.
        requested: u32,
    },
    /// The database failed (see [`StorageError::kind`]).
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl CreateOrderError {
    /// The code the API answers this error with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::UnknownSku(_) => ErrorCode::UnknownSku,
            Self::OutOfStock { .. } => ErrorCode::OutOfStock,
            Self::AmountOverflow => ErrorCode::AmountOverflow,
            Self::TooManyUnpaidOrders { .. } => ErrorCode::TooManyUnpaidOrders,
            Self::SkuLimitExceeded { .. } => ErrorCode::SkuLimitExceeded,
            Self::Storage(_) => ErrorCode::StorageUnavailable,
        }
    }
}

/// Why a payment notice was refused. Nothing changed in any of these cases.
#[derive(Debug, Error)]
pub enum PayOrderError {
    /// No order has this id (the field).
    #[error("order {0} not found")]
    OrderNotFound(String),
    /// The notified amount is not the order's.
    #[error("amount {notified} does not match the order's amount {expected}")]
    AmountMismatch {
        /// The order's amount, in minor units.
        expected: i64,
        /// The amount the payment notice carried, in minor units.
        notified: i64,
    },
    /// This payment id was already applied to another order.
    #[error("payment {payment_id} was already applied to another order")]
    PaymentIdReused {
        /// The payment id of the notice.
        payment_id: String,
    },
    /// The database failed (see [`StorageError::kind`]).
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl PayOrderError {
    /// The code the API answers this error with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::OrderNotFound(_) => ErrorCode::OrderNotFound,
            Self::AmountMismatch { .. } => ErrorCode::AmountMismatch,
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
