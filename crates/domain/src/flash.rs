//! Flash sales (秒杀): a number of units of one SKU sold in a time window to
//! many more shoppers than there are units, and the rules of a shopper's
//! attempt.
//!
//! Why a module of its own: a flash sale is not an ordinary order. Its
//! units leave the product's stock when the sale is created, an attempt is
//! admitted or refused in memory (so the losers never reach the database),
//! and an admitted attempt becomes an order later, at a paced rate, through
//! RocketMQ. What is decided here, free of I/O: whether a sale's fields make
//! sense, whether a sale is open at a moment, how many units an instance
//! leases at once, and the states an attempt moves through.

#![warn(missing_docs)]

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::error::{ErrorCode, StorageError, ValidationError};
use crate::order::{AttemptId, OrderId, SaleId, Sku, UserId};

/// Most units one sale may offer.
pub const MAX_SALE_UNITS: u32 = 1_000_000;
/// Most units one shopper may take in one attempt.
pub const MAX_PER_USER: u32 = 100;
/// The longest a sale may last: seven days, in milliseconds.
pub const MAX_SALE_MS: i64 = 7 * 24 * 3_600 * 1_000;

/// A sale as an operator asks for it, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSale {
    /// The product sold.
    pub sku: Sku,
    /// Units offered; they leave the product's stock when the sale is created.
    pub units: u32,
    /// Epoch milliseconds from which attempts are admitted.
    pub start: i64,
    /// Epoch milliseconds from which attempts are refused.
    pub end: i64,
    /// The most units one shopper may take (in their one attempt).
    pub per_user_limit: u32,
}

impl NewSale {
    /// A sale of `units` of `sku` open from `start` until `end`, at most
    /// `per_user_limit` units a shopper.
    ///
    /// # Errors
    /// The field that breaks its rule: `units` 1..=[`MAX_SALE_UNITS`],
    /// `end` after `start` and at most [`MAX_SALE_MS`] later,
    /// `per_user_limit` 1..=[`MAX_PER_USER`], times not negative.
    pub fn new(
        sku: Sku,
        units: i64,
        start: i64,
        end: i64,
        per_user_limit: i64,
    ) -> Result<Self, ValidationError> {
        let units = u32::try_from(units)
            .ok()
            .filter(|u| (1..=MAX_SALE_UNITS).contains(u))
            .ok_or_else(|| {
                ValidationError::new("units", format!("must be 1 to {MAX_SALE_UNITS}"))
            })?;
        let per_user_limit = u32::try_from(per_user_limit)
            .ok()
            .filter(|u| (1..=MAX_PER_USER).contains(u))
            .ok_or_else(|| {
                ValidationError::new("per_user_limit", format!("must be 1 to {MAX_PER_USER}"))
            })?;
        if start < 0 {
            return Err(ValidationError::new("start", "must not be negative"));
        }
        if end <= start || end - start > MAX_SALE_MS {
            return Err(ValidationError::new(
                "end",
                "must be after start, by at most seven days",
            ));
        }
        Ok(Self {
            sku,
            units,
            start,
            end,
            per_user_limit,
        })
    }
}

/// Where a sale stands in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SaleStatus {
    /// Before its start: attempts are refused `SALE_NOT_ACTIVE`.
    Scheduled,
    /// Between its start and its end.
    Running,
    /// After its end.
    Ended,
}

/// A sale and where its units and attempts are: what the dashboard and
/// `GET /api/sales` show an operator while it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SaleProgress {
    /// The sale.
    #[serde(flatten)]
    pub sale: Sale,
    /// Scheduled, running or ended, at the time of reading.
    pub status: SaleStatus,
    /// Units not held by an attempt (neither queued nor sold): what can
    /// still be admitted.
    pub units_left: i64,
    /// Attempts admitted whose order is not created yet.
    pub queued: i64,
    /// Attempts whose order was created.
    pub created: i64,
    /// Attempts rejected after admission, in all.
    pub rejected: i64,
    /// Rejected attempts per reason ([`RejectReason::as_str`]).
    pub rejected_by_reason: std::collections::BTreeMap<String, i64>,
    /// Orders created per second over the last ten seconds: the paced
    /// creation rate the order database sees.
    pub created_per_s: f64,
    /// Attempts refused at admission by the instance answering, since it
    /// started, per code ([`AttemptRefusal::code`]: `SOLD_OUT`,
    /// `ALREADY_ATTEMPTED`, `SALE_NOT_ACTIVE`, `SALE_LIMIT_EXCEEDED`). A
    /// refusal writes nothing, so it is counted in memory, each instance
    /// its own (`RATE_LIMITED`, answered by the API's limits before
    /// admission, is not among them).
    #[serde(default)]
    pub refused_here: std::collections::BTreeMap<String, i64>,
}

impl SaleStatus {
    /// Where `sale` stands at `now`.
    pub fn of(sale: &Sale, now: i64) -> Self {
        if now < sale.start {
            Self::Scheduled
        } else if now < sale.end {
            Self::Running
        } else {
            Self::Ended
        }
    }
}

/// A sale as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sale {
    /// The sale's id.
    pub sale_id: SaleId,
    /// The product sold.
    pub sku: Sku,
    /// Units offered.
    pub units: u32,
    /// Epoch milliseconds from which attempts are admitted.
    pub start: i64,
    /// Epoch milliseconds from which attempts are refused.
    pub end: i64,
    /// The most units one shopper may take.
    pub per_user_limit: u32,
}

impl Sale {
    /// Whether an attempt at `now` falls inside the sale's window.
    pub fn is_open(&self, now: i64) -> bool {
        self.start <= now && now < self.end
    }

    /// Checks an attempt of `quantity` units at `now` against the window and
    /// the per-user limit (the budget and the one-shot rule are checked by
    /// the admission, which holds them).
    ///
    /// # Errors
    /// [`AttemptRefusal::SaleNotActive`] outside the window,
    /// [`AttemptRefusal::OverUserLimit`] above the limit.
    pub fn check(&self, quantity: u32, now: i64) -> Result<(), AttemptRefusal> {
        if !self.is_open(now) {
            return Err(AttemptRefusal::SaleNotActive {
                start: self.start,
                end: self.end,
            });
        }
        if quantity == 0 || quantity > self.per_user_limit {
            return Err(AttemptRefusal::OverUserLimit {
                limit: self.per_user_limit,
            });
        }
        Ok(())
    }
}

/// How many units an instance leases from the database at once: `chunk`,
/// but never more than `left` (units not yet leased by anyone), and at
/// least what the attempt that asked needs (`need`), if there is that much.
/// Zero: the sale has nothing left to lease.
pub fn lease_size(left: u32, chunk: u32, need: u32) -> u32 {
    chunk.max(need).min(left)
}

/// Why an admitted attempt ended without an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RejectReason {
    /// Creating its order would have waited longer than the queue cap
    /// (`flash_sale_max_wait`): peak shaving turned it away.
    QueueTimeout,
    /// The sale ended before its order could be created.
    SaleEnded,
}

impl RejectReason {
    /// The reason as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::QueueTimeout => "QUEUE_TIMEOUT",
            Self::SaleEnded => "SALE_ENDED",
        }
    }

    /// The reason whose [`as_str`](Self::as_str) is `raw`.
    pub fn parse(raw: &str) -> Option<Self> {
        [Self::QueueTimeout, Self::SaleEnded]
            .into_iter()
            .find(|r| r.as_str() == raw)
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an admitted attempt is: `QUEUED` → `CREATED` (with its order) or
/// `REJECTED` (with a reason). Nothing else moves it, and neither end moves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AttemptState {
    /// Durable, with its message on the attempt topic; its order is coming.
    Queued,
    /// Its order exists (an ordinary UNPAID order, to be paid as any other).
    Created {
        /// The order created for the attempt.
        order_id: OrderId,
    },
    /// It ended without an order; its units went back to the sale.
    Rejected {
        /// Why.
        reason: RejectReason,
    },
}

impl AttemptState {
    /// The state's name as stored and shown (`QUEUED`, `CREATED`, `REJECTED`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Queued => "QUEUED",
            Self::Created { .. } => "CREATED",
            Self::Rejected { .. } => "REJECTED",
        }
    }

    /// Whether the attempt will not move any more.
    pub fn is_final(&self) -> bool {
        !matches!(self, Self::Queued)
    }
}

/// An admitted attempt, as stored and as its state is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// The attempt's id (the key of its message).
    pub attempt_id: AttemptId,
    /// The sale attempted.
    pub sale_id: SaleId,
    /// The shopper.
    pub user_id: UserId,
    /// Units taken.
    pub quantity: u32,
    /// Where it is.
    #[serde(flatten)]
    pub state: AttemptState,
    /// Epoch milliseconds when it was admitted.
    pub queued_at: i64,
}

/// Why an attempt was refused. Nothing was written in any of these cases
/// except [`Storage`](Self::Storage), which wrote nothing either.
#[derive(Debug, Error)]
pub enum AttemptRefusal {
    /// No sale has this id.
    #[error("sale {0} not found")]
    SaleNotFound(String),
    /// The sale has not started or has ended.
    #[error("the sale is open from {start} until {end} (epoch ms); not now")]
    SaleNotActive {
        /// When it opens.
        start: i64,
        /// When it closes.
        end: i64,
    },
    /// Every unit is taken (some may come back if orders close unpaid).
    #[error("sold out: every unit of this sale is taken")]
    SoldOut,
    /// This shopper already has an attempt at this sale.
    #[error("this user already has an attempt at this sale")]
    AlreadyAttempted,
    /// More units than a shopper may take.
    #[error("at most {limit} units per user in this sale")]
    OverUserLimit {
        /// The sale's per-user limit.
        limit: u32,
    },
    /// The database failed (see [`StorageError::kind`]).
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl AttemptRefusal {
    /// The code the API answers this refusal with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::SaleNotFound(_) => ErrorCode::SaleNotFound,
            Self::SaleNotActive { .. } => ErrorCode::SaleNotActive,
            Self::SoldOut => ErrorCode::SoldOut,
            Self::AlreadyAttempted => ErrorCode::AlreadyAttempted,
            Self::OverUserLimit { .. } => ErrorCode::SaleLimitExceeded,
            Self::Storage(_) => ErrorCode::StorageUnavailable,
        }
    }
}

/// Why a sale could not be created. Nothing was taken from stock.
#[derive(Debug, Error)]
pub enum CreateSaleError {
    /// The SKU (the field) is not in the catalog.
    #[error("unknown SKU {0}")]
    UnknownSku(String),
    /// The product has fewer units on hand and not reserved than the sale offers.
    #[error("not enough stock for a sale of {requested} units: {available} available")]
    OutOfStock {
        /// Units on hand and not reserved.
        available: i64,
        /// Units the sale asked for.
        requested: u32,
    },
    /// The database failed (see [`StorageError::kind`]).
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl CreateSaleError {
    /// The code the API answers this error with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::UnknownSku(_) => ErrorCode::UnknownSku,
            Self::OutOfStock { .. } => ErrorCode::OutOfStock,
            Self::Storage(_) => ErrorCode::StorageUnavailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sale(start: i64, end: i64, limit: u32) -> Sale {
        Sale {
            sale_id: SaleId::parse("S1").unwrap(),
            sku: Sku::parse("FLASH-1").unwrap(),
            units: 10,
            start,
            end,
            per_user_limit: limit,
        }
    }

    #[test]
    fn a_sale_is_open_from_its_start_until_just_before_its_end() {
        let s = sale(100, 200, 1);
        assert!(!s.is_open(99));
        assert!(s.is_open(100));
        assert!(s.is_open(199));
        assert!(!s.is_open(200));
        assert!(matches!(
            s.check(1, 200),
            Err(AttemptRefusal::SaleNotActive { .. })
        ));
        assert!(matches!(
            s.check(2, 150),
            Err(AttemptRefusal::OverUserLimit { limit: 1 })
        ));
        assert!(s.check(1, 150).is_ok());
    }

    #[test]
    fn new_sales_are_checked_field_by_field() {
        let sku = || Sku::parse("FLASH-1").unwrap();
        assert!(NewSale::new(sku(), 10, 0, 1, 1).is_ok());
        assert_eq!(NewSale::new(sku(), 0, 0, 1, 1).unwrap_err().field, "units");
        assert_eq!(NewSale::new(sku(), -1, 0, 1, 1).unwrap_err().field, "units");
        assert_eq!(NewSale::new(sku(), 1, 5, 5, 1).unwrap_err().field, "end");
        assert_eq!(
            NewSale::new(sku(), 1, 0, MAX_SALE_MS + 1, 1)
                .unwrap_err()
                .field,
            "end"
        );
        assert_eq!(
            NewSale::new(sku(), 1, 0, 1, 0).unwrap_err().field,
            "per_user_limit"
        );
        assert_eq!(NewSale::new(sku(), 1, -1, 1, 1).unwrap_err().field, "start");
    }

    #[test]
    fn a_lease_takes_a_chunk_at_most_what_is_left_at_least_what_is_needed() {
        assert_eq!(lease_size(1_000, 50, 1), 50);
        assert_eq!(lease_size(7, 50, 1), 7);
        assert_eq!(lease_size(0, 50, 1), 0);
        assert_eq!(lease_size(1_000, 1, 3), 3);
    }

    #[test]
    fn states_serialize_with_their_name_and_detail() {
        let created = AttemptState::Created {
            order_id: OrderId::parse("O1").unwrap(),
        };
        assert_eq!(
            serde_json::to_string(&created).unwrap(),
            r#"{"state":"CREATED","order_id":"O1"}"#
        );
        let rejected = AttemptState::Rejected {
            reason: RejectReason::QueueTimeout,
        };
        assert_eq!(
            serde_json::to_string(&rejected).unwrap(),
            r#"{"state":"REJECTED","reason":"QUEUE_TIMEOUT"}"#
        );
        assert_eq!(
            RejectReason::parse("SALE_ENDED"),
            Some(RejectReason::SaleEnded)
        );
        assert!(AttemptState::Queued.name() == "QUEUED" && !AttemptState::Queued.is_final());
    }
}
