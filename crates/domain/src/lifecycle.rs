//! After the payment: refunds and the carrier's shipping updates.
//!
//! A refund is asked for with an `Idempotency-Key`, so a client that retries
//! after a timeout gets the same refund instead of a second one. It never
//! gives back more than was paid: each line keeps a refunded quantity. The
//! carrier's updates only move an order forward (`PAID → SHIPPED →
//! DELIVERED`); a repeated or late update changes nothing.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::error::{ErrorCode, StorageError, ValidationError};
use crate::order::{IdempotencyKey, OrderId, OrderLine, OrderStatus, TrackingNo};

/// Longest free-text reason accepted with a refund.
pub const MAX_REASON_LEN: usize = 200;

/// Who asked for an operator action (a refund, a retry): the name of the
/// API token that authenticated the request. Recorded with the order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Actor(String);

/// The longest actor name (token names are at most this long).
pub const MAX_ACTOR_LEN: usize = 64;

impl Actor {
    /// A token's name: 1 to [`MAX_ACTOR_LEN`] of `A-Z a-z 0-9 _ -`.
    ///
    /// # Errors
    ///
    /// A [`ValidationError`] for anything else.
    pub fn parse(name: &str) -> Result<Self, ValidationError> {
        let valid = (1..=MAX_ACTOR_LEN).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if valid {
            Ok(Self(name.to_owned()))
        } else {
            Err(ValidationError::new(
                "actor",
                format!("must be 1 to {MAX_ACTOR_LEN} of A-Z a-z 0-9 _ -"),
            ))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A refund as the shopper (or support) asks for it, parsed at the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    /// The order to refund.
    pub order_id: OrderId,
    /// The `Idempotency-Key` header: the same key and request again returns
    /// the first refund.
    pub key: IdempotencyKey,
    /// `None`: everything not refunded yet. `Some`: these units only.
    pub lines: Option<Vec<OrderLine>>,
    /// Free text from the shopper or support, at most [`MAX_REASON_LEN`] characters.
    pub reason: Option<String>,
    /// Who asked for it (an operator's token name); `None` for the refunds
    /// ordermq makes itself (a payment it could not apply).
    pub requested_by: Option<Actor>,
}

impl RefundRequest {
    /// Checks the request and sorts its lines by SKU.
    ///
    /// # Errors
    ///
    /// A [`ValidationError`] if `lines` is `Some` but empty or repeats a SKU,
    /// or if `reason` is longer than [`MAX_REASON_LEN`] characters or holds a
    /// control character.
    pub fn new(
        order_id: OrderId,
        key: IdempotencyKey,
        lines: Option<Vec<OrderLine>>,
        reason: Option<String>,
    ) -> Result<Self, ValidationError> {
        let lines = match lines {
            None => None,
            Some(mut lines) => {
                if lines.is_empty() {
                    return Err(ValidationError::new(
                        "lines",
                        "must not be empty (omit it to refund the whole order)",
                    ));
                }
                lines.sort_by(|a, b| a.sku.cmp(&b.sku));
                if lines.windows(2).any(|w| w[0].sku == w[1].sku) {
                    return Err(ValidationError::new("lines", "must not repeat a SKU"));
                }
                Some(lines)
            }
        };
        if let Some(reason) = &reason
            && (reason.chars().count() > MAX_REASON_LEN || reason.chars().any(char::is_control))
        {
            return Err(ValidationError::new(
                "reason",
                format!("must be at most {MAX_REASON_LEN} printable characters"),
            ));
        }
        Ok(Self {
            order_id,
            key,
            lines,
            reason,
            requested_by: None,
        })
    }

    /// The same request, asked for by `actor`.
    #[must_use]
    pub fn by(mut self, actor: Actor) -> Self {
        self.requested_by = Some(actor);
        self
    }

    /// What makes two requests "the same request" for an idempotency key.
    pub fn fingerprint(&self) -> String {
        match &self.lines {
            None => "ALL".to_owned(),
            Some(lines) => lines
                .iter()
                .map(|l| format!("{}x{}", l.sku, l.quantity.get()))
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

/// Where a refund stands with the payment gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RefundStatus {
    /// Asked for; the gateway has not confirmed it yet (attempts may have failed).
    Requested,
    /// The gateway gave the money back.
    Succeeded,
    /// Every attempt failed and retries are exhausted: an operator must act
    /// (`POST /api/refunds/{id}/retry`). Never silently dropped.
    Failed,
}

impl RefundStatus {
    /// The status as stored and shown (`"REQUESTED"`, `"SUCCEEDED"`, `"FAILED"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "REQUESTED",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
        }
    }

    /// The status [`as_str`](Self::as_str) spells `raw`, if any.
    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Requested, Self::Succeeded, Self::Failed]
            .into_iter()
            .find(|s| s.as_str() == raw)
    }
}

impl fmt::Display for RefundStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a carrier reports about a shipment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CarrierStatus {
    /// The carrier collected the parcel: the order becomes `SHIPPED`.
    PickedUp,
    /// The parcel is on its way: the order is (or becomes) `SHIPPED`.
    InTransit,
    /// The parcel reached the shopper: the order becomes `DELIVERED`.
    Delivered,
}

impl CarrierStatus {
    /// Every status, in order of progress.
    pub const ALL: [CarrierStatus; 3] = [Self::PickedUp, Self::InTransit, Self::Delivered];

    /// The status as the carrier sends it (`"PICKED_UP"`, `"IN_TRANSIT"`, `"DELIVERED"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PickedUp => "PICKED_UP",
            Self::InTransit => "IN_TRANSIT",
            Self::Delivered => "DELIVERED",
        }
    }

    /// The status [`as_str`](Self::as_str) spells `raw`.
    ///
    /// # Errors
    ///
    /// A [`ValidationError`] on field `status` if `raw` is none of them.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == raw)
            .ok_or_else(|| {
                ValidationError::new("status", "must be PICKED_UP, IN_TRANSIT or DELIVERED")
            })
    }

    /// The order status this update moves an order to.
    pub fn order_status(self) -> OrderStatus {
        match self {
            Self::PickedUp | Self::InTransit => OrderStatus::Shipped,
            Self::Delivered => OrderStatus::Delivered,
        }
    }

    /// Shipment statuses in the warehouse's table, in order of progress.
    pub fn shipment_status(self) -> &'static str {
        self.as_str()
    }
}

/// A carrier's callback, parsed at the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarrierUpdate {
    /// The order the shipment belongs to.
    pub order_id: OrderId,
    /// The carrier's tracking number; must be the order's shipment's.
    pub tracking_no: TrackingNo,
    /// What happened to the shipment.
    pub status: CarrierStatus,
}

/// Why a refund was refused. Nothing changed in any of these cases.
#[derive(Debug, Error)]
pub enum RefundError {
    /// No order has this id (the field).
    #[error("order {0} not found")]
    OrderNotFound(String),
    /// The order is not `PAID`, `SHIPPED` or `DELIVERED` (or has no payment),
    /// or nothing of it is left to refund.
    #[error(
        "order {order_id} is {status}: only a paid, shipped or delivered order can be refunded"
    )]
    NotRefundable {
        /// The order.
        order_id: String,
        /// Its status when the refund was refused.
        status: String,
    },
    /// A requested SKU (the field) is not a line of this order.
    #[error("SKU {0} is not a line of this order")]
    UnknownLine(String),
    /// A line asks for more units than were paid and not yet refunded.
    #[error("cannot refund {requested} x {sku}: only {refundable} paid and not yet refunded")]
    ExceedsPaid {
        /// The line's SKU.
        sku: String,
        /// Units asked for.
        requested: u32,
        /// Units paid and not yet refunded (0 if a concurrent refund took them).
        refundable: i64,
    },
    /// The idempotency key was already used on this order for a different refund.
    #[error("Idempotency-Key {key:?} was already used on this order for a different refund")]
    KeyReused {
        /// The reused key.
        key: String,
    },
    /// The database failed (see [`StorageError::kind`]).
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl RefundError {
    /// The code the API answers this error with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::OrderNotFound(_) => ErrorCode::OrderNotFound,
            Self::NotRefundable { .. } => ErrorCode::OrderNotRefundable,
            Self::UnknownLine(_) => ErrorCode::UnknownSku,
            Self::ExceedsPaid { .. } => ErrorCode::RefundExceedsPaid,
            Self::KeyReused { .. } => ErrorCode::IdempotencyKeyReused,
            Self::Storage(_) => ErrorCode::StorageUnavailable,
        }
    }
}

/// Why an operator's retry of a refund was refused.
#[derive(Debug, Error)]
pub enum RetryRefundError {
    /// No refund has this id (the field).
    #[error("refund {0} not found")]
    NotFound(String),
    /// The refund is not [`RefundStatus::Failed`].
    #[error("refund {refund_id} is {status}: only a FAILED refund can be retried")]
    NotRetryable {
        /// The refund.
        refund_id: String,
        /// Its status (`"REQUESTED"` or `"SUCCEEDED"`).
        status: String,
    },
    /// The database failed (see [`StorageError::kind`]).
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl RetryRefundError {
    /// The code the API answers this error with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound(_) => ErrorCode::RefundNotFound,
            Self::NotRetryable { .. } => ErrorCode::RefundNotRetryable,
            Self::Storage(_) => ErrorCode::StorageUnavailable,
        }
    }
}

/// Why a carrier update was refused. Nothing changed in any of these cases.
#[derive(Debug, Error)]
pub enum CarrierUpdateError {
    /// No order has this id (the field).
    #[error("order {0} not found")]
    OrderNotFound(String),
    /// The order (the field) exists but the warehouse has not booked its
    /// shipment yet; the carrier should retry later.
    #[error("order {0} has no shipment yet; the carrier should retry")]
    ShipmentNotFound(String),
    /// The order's shipment has another tracking number.
    #[error("tracking number {given} does not belong to order {order_id}")]
    TrackingMismatch {
        /// The order.
        order_id: String,
        /// The tracking number the carrier sent.
        given: String,
    },
    /// The database failed (see [`StorageError::kind`]).
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl CarrierUpdateError {
    /// The code the API answers this error with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::OrderNotFound(_) => ErrorCode::OrderNotFound,
            Self::ShipmentNotFound(_) => ErrorCode::ShipmentNotFound,
            Self::TrackingMismatch { .. } => ErrorCode::TrackingMismatch,
            Self::Storage(_) => ErrorCode::StorageUnavailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order::{Quantity, Sku};

    fn line(sku: &str, q: i64) -> OrderLine {
        OrderLine {
            sku: Sku::parse(sku).unwrap(),
            quantity: Quantity::parse(q).unwrap(),
        }
    }

    fn request(lines: Option<Vec<OrderLine>>) -> Result<RefundRequest, ValidationError> {
        RefundRequest::new(
            OrderId::parse("O1").unwrap(),
            IdempotencyKey::parse("k1").unwrap(),
            lines,
            None,
        )
    }

    #[test]
    fn fingerprint_ignores_line_order() {
        let a = request(Some(vec![line("B", 1), line("A", 2)])).unwrap();
        let b = request(Some(vec![line("A", 2), line("B", 1)])).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(request(None).unwrap().fingerprint(), "ALL");
    }

    #[test]
    fn empty_or_repeated_lines_are_refused() {
        assert!(request(Some(vec![])).is_err());
        assert!(request(Some(vec![line("A", 1), line("A", 2)])).is_err());
    }

    #[test]
    fn carrier_statuses_map_forward() {
        assert_eq!(
            CarrierStatus::parse("PICKED_UP").unwrap().order_status(),
            OrderStatus::Shipped
        );
        assert_eq!(
            CarrierStatus::Delivered.order_status(),
            OrderStatus::Delivered
        );
        assert!(CarrierStatus::parse("LOST").is_err());
        assert!(CarrierStatus::PickedUp < CarrierStatus::Delivered);
    }
}
