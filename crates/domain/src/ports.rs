//! Ports: the traits adapters implement, so the rest of ordermq never names
//! RocketMQ, a payment provider or an SMS vendor.
//!
//! They return boxed futures so they can be used as trait objects
//! (`Arc<dyn Publisher>`), which keeps the wiring in the app simple.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use thiserror::Error;

use crate::event::{OrderPaid, OutboxMessage};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The broker did not confirm a message as stored; the outbox keeps it.
#[derive(Debug, Clone, Error)]
#[error("publish failed: {0}")]
pub struct PublishError(pub String);

/// Sends outbox messages to the message broker.
pub trait Publisher: Send + Sync + 'static {
    /// Sends every message of `batch` and returns one outcome per message, in
    /// order. `Ok` means the broker acknowledged it as stored (SEND_OK).
    fn publish<'a>(
        &'a self,
        batch: &'a [OutboxMessage],
    ) -> BoxFuture<'a, Vec<Result<(), PublishError>>>;
}

/// A message delivered to a consumer group.
#[derive(Clone, PartialEq, Eq)]
pub struct Delivery {
    pub msg_id: String,
    pub topic: String,
    pub tag: String,
    pub key: String,
    pub body: Vec<u8>,
    /// How many times the broker redelivered it after a "reconsume later".
    pub reconsume_times: i32,
    /// The retry budget of the group: on a failure at this count the message goes to the DLQ.
    pub max_reconsume_times: i32,
}

impl Delivery {
    /// Whether a failure now sends the message to the dead-letter queue.
    pub fn is_last_attempt(&self) -> bool {
        self.reconsume_times >= self.max_reconsume_times
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("msg_id", &self.msg_id)
            .field("topic", &self.topic)
            .field("tag", &self.tag)
            .field("key", &self.key)
            .field("body_len", &self.body.len())
            .field("reconsume_times", &self.reconsume_times)
            .finish()
    }
}

/// What a consumer tells the broker about one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Applied (or already applied before): acknowledge.
    Consumed,
    /// Not applied: redeliver later, and dead-letter after the retry budget.
    RetryLater(String),
}

/// Handles deliveries for one consumer group, a batch at a time (so a system
/// can commit a whole batch with one fsync).
pub trait Handler: Send + Sync + 'static {
    /// `Consumed` acknowledges the whole batch; `RetryLater` has the broker
    /// redeliver the whole batch, so deliveries already applied must be
    /// recognised and skipped (they are: every effect has an inbox row).
    fn handle(&self, batch: Vec<Delivery>) -> BoxFuture<'_, Outcome>;
}

/// A third party failed or timed out.
#[derive(Debug, Clone, Error)]
#[error("{system} failed: {reason}")]
pub struct GatewayError {
    pub system: &'static str,
    pub reason: String,
}

/// The SMS provider. `idempotency_key` lets the provider drop a repeated
/// request, as real providers do with a client reference.
pub trait SmsGateway: Send + Sync + 'static {
    /// Sends the text; returns the provider's message reference.
    fn send<'a>(
        &'a self,
        idempotency_key: &'a str,
        to_user: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, Result<String, GatewayError>>;
}

/// The logistics company (carrier) and warehouse system.
pub trait LogisticsGateway: Send + Sync + 'static {
    /// Books the shipment; returns the carrier's tracking number.
    fn create_shipment<'a>(
        &'a self,
        idempotency_key: &'a str,
        order: &'a OrderPaid,
    ) -> BoxFuture<'a, Result<String, GatewayError>>;
}

/// The payment provider, for giving money back.
pub trait PaymentGateway: Send + Sync + 'static {
    /// Refunds `amount` of `payment_id`; `idempotency_key` (the refund id)
    /// makes a repeated call return the first refund instead of paying twice.
    /// Returns the provider's refund reference.
    fn refund<'a>(
        &'a self,
        idempotency_key: &'a str,
        payment_id: &'a str,
        amount: crate::Amount,
    ) -> BoxFuture<'a, Result<String, GatewayError>>;
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

/// The order service as the HTTP API sees it.
pub trait OrderService: Send + Sync + 'static {
    fn products(&self) -> BoxFuture<'_, Result<Vec<crate::Product>, StorageError>>;
    fn create_order(
        &self,
        order: crate::NewOrder,
    ) -> BoxFuture<'_, Result<crate::view::OrderView, crate::CreateOrderError>>;
    fn pay(
        &self,
        notice: crate::PaymentNotice,
    ) -> BoxFuture<'_, Result<crate::view::PaymentReceipt, crate::PayOrderError>>;
    fn order(
        &self,
        id: crate::OrderId,
    ) -> BoxFuture<'_, Result<Option<crate::view::OrderView>, StorageError>>;
    fn user_activity(
        &self,
        user: crate::UserId,
    ) -> BoxFuture<'_, Result<crate::view::UserActivity, StorageError>>;
    fn stats(&self) -> BoxFuture<'_, Result<crate::view::Stats, StorageError>>;
    fn refund(
        &self,
        request: crate::RefundRequest,
    ) -> BoxFuture<'_, Result<crate::view::RefundView, crate::RefundError>>;
    fn retry_refund(
        &self,
        refund_id: crate::RefundId,
    ) -> BoxFuture<'_, Result<crate::view::RefundView, crate::RetryRefundError>>;
    fn carrier_update(
        &self,
        update: crate::CarrierUpdate,
    ) -> BoxFuture<'_, Result<crate::view::CarrierReceipt, crate::CarrierUpdateError>>;
}
