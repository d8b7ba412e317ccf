//! Ports: the traits adapters implement, so the rest of ordermq never names
//! RocketMQ, a payment provider or an SMS vendor.
//!
//! They return boxed futures so they can be used as trait objects
//! (`Arc<dyn Publisher>`), which keeps the wiring in the app simple.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use thiserror::Error;

pub use crate::error::{StorageError, StorageErrorKind};
use crate::event::{OrderPaid, OutboxMessage};

/// The future every port method returns: boxed, `Send`, borrowing for `'a`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The broker did not confirm a message as stored; the outbox keeps it.
#[derive(Debug, Clone, Error)]
#[error("publish failed: {0}")]
pub struct PublishError(
    /// Why, for the log and the outbox row's last error.
    pub String,
);

/// Sends outbox messages to the message broker.
pub trait Publisher: Send + Sync + 'static {
    /// Sends every message of `batch` and returns one outcome per message, in
    /// order. `Ok` means the broker acknowledged it as stored (SEND_OK).
    ///
    /// # Errors
    ///
    /// The call itself never fails: it answers `batch.len()` results, and
    /// each message that was not confirmed gets a [`PublishError`]:
    /// - if its topic's route could not be fetched or has no writable queue;
    /// - if it could not be turned into a broker message (an invalid property);
    /// - if the send failed (network, timeout) or gave no result;
    /// - if the broker answered a status other than SEND_OK (it may then have
    ///   stored the message anyway).
    ///
    /// A failed message stays in the outbox and is sent again later, so it
    /// may be delivered twice; consumers drop repeats by event id.
    fn publish<'a>(
        &'a self,
        batch: &'a [OutboxMessage],
    ) -> BoxFuture<'a, Vec<Result<(), PublishError>>>;
}

/// A message delivered to a consumer group.
#[derive(Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The broker's message id (differs between a message and its resend).
    pub msg_id: String,
    /// The topic it was published to.
    pub topic: String,
    /// Its tag: the event's kind.
    pub tag: String,
    /// Its key: the order id.
    pub key: String,
    /// The event, as JSON.
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
    /// Every delivery applied (or needing nothing) except those named, which
    /// wait for an earlier event: a refund's reversal or a carrier update
    /// that arrived before the order's `OrderPaid` effect, a close before
    /// its order's due time. Nothing failed: the event it waits for is
    /// usually a moment behind, so the consumer tries these again soon (a
    /// short fixed delay, a bounded number of times) instead of on the
    /// broker's growing retry schedule (10 s, 30 s, 1 min, … hours).
    Waiting(Waiting),
}

/// The deliveries of a batch that wait for an earlier event ([`Outcome::Waiting`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// The waiting deliveries' [`Delivery::msg_id`]s.
    pub msg_ids: Vec<String>,
    /// What the first of them waits for.
    pub reason: String,
}

impl Outcome {
    /// `Consumed` if nothing failed or waits; else `Waiting` for `waiting`
    /// (their message ids and the first reason) unless something failed
    /// (`failure`): a failure sends the whole batch back on the broker's
    /// schedule, the waiting deliveries with it.
    pub fn of_batch(failure: Option<String>, waiting: Vec<(String, String)>) -> Self {
        if let Some(reason) = failure {
            return Self::RetryLater(reason);
        }
        let Some(reason) = waiting.first().map(|(_, reason)| reason.clone()) else {
            return Self::Consumed;
        };
        Self::Waiting(Waiting {
            msg_ids: waiting.into_iter().map(|(id, _)| id).collect(),
            reason,
        })
    }

    /// Why the batch was not acknowledged whole, if it was not.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Consumed => None,
            Self::RetryLater(reason) => Some(reason),
            Self::Waiting(waiting) => Some(&waiting.reason),
        }
    }
}

/// Handles deliveries for one consumer group, a batch at a time (so a system
/// can commit a whole batch with one fsync).
pub trait Handler: Send + Sync + 'static {
    /// `Consumed` acknowledges the whole batch; `RetryLater` has the broker
    /// redeliver the whole batch, so deliveries already applied must be
    /// recognised and skipped (they are: every effect has an inbox row).
    ///
    /// # Errors
    ///
    /// Failures are answered as an [`Outcome`], never as an error:
    /// - [`Outcome::Consumed`] if every delivery was applied, was applied
    ///   before, or needs nothing (e.g. the close of an order already paid):
    ///   the broker forgets the batch.
    /// - [`Outcome::RetryLater`] with the first reason if any delivery was not
    ///   applied (the storage or a third party failed, or the service is
    ///   shutting down): the broker redelivers the whole batch later, and
    ///   moves a delivery to the group's dead-letter queue when this was its
    ///   last attempt ([`Delivery::is_last_attempt`]).
    /// - [`Outcome::Waiting`] if nothing failed but some deliveries wait for
    ///   an earlier event or their due time: the others are acknowledged,
    ///   these are tried again soon.
    fn handle(&self, batch: Vec<Delivery>) -> BoxFuture<'_, Outcome>;
}

/// Where consumer groups record messages that fail verification
/// ([`crate::parked`]): operators list them, `GET /api/stats` counts them.
pub trait ParkingLot: Send + Sync + 'static {
    /// Records `message`; `true` if it is new, `false` if this group had
    /// already parked this message id (a redelivery changes nothing).
    ///
    /// # Errors
    ///
    /// - [`StorageError`] if the database failed (any kind). The message is
    ///   then not acknowledged: the broker redelivers it, it fails
    ///   verification again and is recorded then. It is never applied.
    fn park(
        &self,
        message: crate::parked::ParkedMessage,
    ) -> BoxFuture<'_, Result<bool, StorageError>>;
}

/// What this instance's consumer groups were handed and hold now, as the
/// messaging adapter counts it (`GET /api/stats` shows it). In memory:
/// reading it cannot fail.
pub trait DeliveryCounts: fmt::Debug + Send + Sync + 'static {
    /// Each subscribed group's counts now, by group name.
    fn by_group(&self) -> std::collections::BTreeMap<String, crate::view::GroupDeliveries>;
}

/// A third party failed or timed out.
#[derive(Debug, Clone, Error)]
#[error("{system} failed: {reason}")]
pub struct GatewayError {
    /// Which third party failed, by the gateway's name (`"sms gateway"`, …).
    pub system: &'static str,
    /// What it answered, or why it could not be reached.
    pub reason: String,
}

/// The SMS provider. `idempotency_key` lets the provider drop a repeated
/// request, as real providers do with a client reference.
pub trait SmsGateway: Send + Sync + 'static {
    /// Sends the text; returns the provider's message reference.
    ///
    /// # Errors
    ///
    /// - [`GatewayError`] if the provider refused the request, failed or could
    ///   not be reached. The text may or may not have been sent: retry with
    ///   the same `idempotency_key`, so it is sent at most once.
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
    ///
    /// # Errors
    ///
    /// - [`GatewayError`] if the carrier refused the request, failed or could
    ///   not be reached. The shipment may or may not have been booked: retry
    ///   with the same `idempotency_key`, which returns the first booking's
    ///   tracking number.
    fn create_shipment<'a>(
        &'a self,
        idempotency_key: &'a str,
        order: &'a OrderPaid,
    ) -> BoxFuture<'a, Result<String, GatewayError>>;

    /// Cancels the booking `tracking_no` of `order_id` (a full refund of an
    /// order the carrier has not collected yet). `idempotency_key` (the
    /// refund's event id) makes a repeated call return the first answer.
    ///
    /// # Errors
    ///
    /// - [`GatewayError`] if the carrier refused the request, failed or could
    ///   not be reached. The booking may or may not have been cancelled:
    ///   retry with the same `idempotency_key`.
    ///
    /// A carrier that already collected the parcel is not an error: it
    /// answers [`Cancellation::TooLate`].
    fn cancel_shipment<'a>(
        &'a self,
        idempotency_key: &'a str,
        order_id: &'a str,
        tracking_no: &'a str,
    ) -> BoxFuture<'a, Result<Cancellation, GatewayError>>;
}

/// What the carrier answered to a cancellation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancellation {
    /// The booking is cancelled: nothing will be collected.
    Cancelled,
    /// The carrier has the parcel already: the booking stands.
    TooLate,
}

/// The payment provider, for giving money back.
pub trait PaymentGateway: Send + Sync + 'static {
    /// Refunds `amount` of `payment_id`; `idempotency_key` (the refund id)
    /// makes a repeated call return the first refund instead of paying twice.
    /// Returns the provider's refund reference.
    ///
    /// # Errors
    ///
    /// - [`GatewayError`] if the provider refused the refund, failed or could
    ///   not be reached. The money may or may not have been given back: retry
    ///   with the same `idempotency_key`, so it is given back at most once.
    fn refund<'a>(
        &'a self,
        idempotency_key: &'a str,
        payment_id: &'a str,
        amount: crate::Amount,
    ) -> BoxFuture<'a, Result<String, GatewayError>>;
}

/// The order service as the HTTP API sees it.
///
/// Times are epoch milliseconds and amounts minor units (cents) throughout.
/// Every write runs in one transaction: an error means it was rolled back.
pub trait OrderService: Send + Sync + 'static {
    /// The catalog: every product with its price and stock.
    ///
    /// # Errors
    ///
    /// - [`StorageError`] if the database failed: [`StorageErrorKind::Unavailable`]
    ///   (busy, out of connections, unreachable) or [`StorageErrorKind::Corrupt`]
    ///   (a row that does not decode).
    fn products(&self) -> BoxFuture<'_, Result<Vec<crate::Product>, StorageError>>;

    /// Creates an `UNPAID` order with a new id, reserves its stock and
    /// schedules its close (it closes itself if not paid in time).
    ///
    /// # Errors
    ///
    /// Nothing is reserved or stored in any of these cases.
    /// - [`CreateOrderError::UnknownSku`] if a line's SKU is not in the catalog.
    /// - [`CreateOrderError::OutOfStock`] if a line asks for more units than
    ///   are on hand and not reserved.
    /// - [`CreateOrderError::AmountOverflow`] if the total does not fit in an
    ///   [`Amount`](crate::Amount).
    /// - [`CreateOrderError::TooManyUnpaidOrders`] if the user already has as
    ///   many unpaid orders as the service's
    ///   [`UserLimits`](crate::UserLimits) allow.
    /// - [`CreateOrderError::SkuLimitExceeded`] if a line would take the
    ///   user's units of its SKU in unpaid orders over the limit.
    /// - [`CreateOrderError::Storage`] if the database failed (see
    ///   [`StorageError::kind`]): any kind; `Unavailable` too if the order
    ///   writer has stopped.
    ///
    /// [`CreateOrderError::TooManyUnpaidOrders`]: crate::CreateOrderError::TooManyUnpaidOrders
    /// [`CreateOrderError::SkuLimitExceeded`]: crate::CreateOrderError::SkuLimitExceeded
    /// [`CreateOrderError::UnknownSku`]: crate::CreateOrderError::UnknownSku
    /// [`CreateOrderError::OutOfStock`]: crate::CreateOrderError::OutOfStock
    /// [`CreateOrderError::AmountOverflow`]: crate::CreateOrderError::AmountOverflow
    /// [`CreateOrderError::Storage`]: crate::CreateOrderError::Storage
    fn create_order(
        &self,
        order: crate::NewOrder,
    ) -> BoxFuture<'_, Result<crate::view::OrderView, crate::CreateOrderError>>;

    /// Applies a payment notice: `UNPAID` → `PAID` (the units the order
    /// reserved are sold) and an `OrderPaid` event goes to the outbox. A notice
    /// already applied is answered again as a duplicate; money for an order
    /// that can no longer take it (closed, or paid by another payment) is
    /// recorded and owed back (`refund_required` in the receipt).
    ///
    /// # Errors
    ///
    /// Nothing is changed in any of these cases.
    /// - [`PayOrderError::OrderNotFound`] if no order has this id.
    /// - [`PayOrderError::AmountMismatch`] if the amount is not the order's.
    /// - [`PayOrderError::PaymentIdReused`] if this payment id already paid
    ///   another order.
    /// - [`PayOrderError::Storage`] if the database failed (see
    ///   [`StorageError::kind`]): any kind; `Unavailable` too if the order
    ///   writer has stopped. Retrying the same notice is safe.
    ///
    /// A payment for an order that can no longer take it (closed, or paid by
    /// another payment) is not an error: it is recorded, owed back and
    /// answered with `refund_required`.
    ///
    /// [`PayOrderError::OrderNotFound`]: crate::PayOrderError::OrderNotFound
    /// [`PayOrderError::AmountMismatch`]: crate::PayOrderError::AmountMismatch
    /// [`PayOrderError::PaymentIdReused`]: crate::PayOrderError::PaymentIdReused
    /// [`PayOrderError::Storage`]: crate::PayOrderError::Storage
    fn pay(
        &self,
        notice: crate::PaymentNotice,
    ) -> BoxFuture<'_, Result<crate::view::PaymentReceipt, crate::PayOrderError>>;

    /// The order with its lines, history, fan-out, consumers' progress and
    /// refunds; `None` if no order has this id.
    ///
    /// # Errors
    ///
    /// - [`StorageError`] if a database failed: [`StorageErrorKind::Unavailable`]
    ///   or [`StorageErrorKind::Corrupt`] (a stored value that does not decode).
    fn order(
        &self,
        id: crate::OrderId,
    ) -> BoxFuture<'_, Result<Option<crate::view::OrderView>, StorageError>>;

    /// What the downstream systems hold for the user: points, coupons, SMS
    /// and shipments (empty for a user they never saw).
    ///
    /// # Errors
    ///
    /// - [`StorageError`] if a system's database failed:
    ///   [`StorageErrorKind::Unavailable`] or [`StorageErrorKind::Corrupt`].
    fn user_activity(
        &self,
        user: crate::UserId,
    ) -> BoxFuture<'_, Result<crate::view::UserActivity, StorageError>>;

    /// Counters for operators: orders by status, outbox backlog, consumer
    /// groups' progress, refunds, and this instance's group commits.
    ///
    /// # Errors
    ///
    /// - [`StorageError`] if a database failed: [`StorageErrorKind::Unavailable`]
    ///   or [`StorageErrorKind::Corrupt`].
    fn stats(&self) -> BoxFuture<'_, Result<crate::view::Stats, StorageError>>;

    /// Records a refund (`REQUESTED`) and its event, and who asked for it
    /// ([`RefundRequest::requested_by`](crate::RefundRequest::requested_by));
    /// the payment gateway is called later, by a consumer. The same idempotency key with the same
    /// request returns the first refund, marked as a duplicate.
    ///
    /// # Errors
    ///
    /// Nothing is changed in any of these cases.
    /// - [`RefundError::KeyReused`] if the key was already used on this order
    ///   for a different request.
    /// - [`RefundError::OrderNotFound`] if no order has this id.
    /// - [`RefundError::NotRefundable`] if the order is not `PAID`, `SHIPPED`
    ///   or `DELIVERED`, has no payment, or has nothing left to refund.
    /// - [`RefundError::UnknownLine`] if a requested SKU is not a line of the order.
    /// - [`RefundError::ExceedsPaid`] if a line asks for more units than were
    ///   paid and not yet refunded.
    /// - [`RefundError::Storage`] if the database failed (see [`StorageError::kind`]).
    ///
    /// [`RefundError::KeyReused`]: crate::RefundError::KeyReused
    /// [`RefundError::OrderNotFound`]: crate::RefundError::OrderNotFound
    /// [`RefundError::NotRefundable`]: crate::RefundError::NotRefundable
    /// [`RefundError::UnknownLine`]: crate::RefundError::UnknownLine
    /// [`RefundError::ExceedsPaid`]: crate::RefundError::ExceedsPaid
    /// [`RefundError::Storage`]: crate::RefundError::Storage
    fn refund(
        &self,
        request: crate::RefundRequest,
    ) -> BoxFuture<'_, Result<crate::view::RefundView, crate::RefundError>>;

    /// An operator (`actor`, recorded with the order) retries a `FAILED`
    /// refund: it becomes `REQUESTED` again and goes back to the payment
    /// gateway's consumer.
    ///
    /// # Errors
    ///
    /// Nothing is changed in any of these cases.
    /// - [`RetryRefundError::NotFound`] if no refund has this id.
    /// - [`RetryRefundError::NotRetryable`] if the refund is not `FAILED`.
    /// - [`RetryRefundError::Storage`] if the database failed (see
    ///   [`StorageError::kind`]).
    ///
    /// [`RetryRefundError::NotFound`]: crate::RetryRefundError::NotFound
    /// [`RetryRefundError::NotRetryable`]: crate::RetryRefundError::NotRetryable
    /// [`RetryRefundError::Storage`]: crate::RetryRefundError::Storage
    fn retry_refund(
        &self,
        refund_id: crate::RefundId,
        actor: crate::Actor,
    ) -> BoxFuture<'_, Result<crate::view::RefundView, crate::RetryRefundError>>;

    /// Applies a carrier's update: the order only moves forward (`PAID` →
    /// `SHIPPED` → `DELIVERED`) and a `ShipmentUpdated` event tells the
    /// warehouse. A repeated update changes nothing and is answered as a
    /// duplicate.
    ///
    /// # Errors
    ///
    /// Nothing is changed in any of these cases.
    /// - [`CarrierUpdateError::OrderNotFound`] if no order has this id.
    /// - [`CarrierUpdateError::ShipmentNotFound`] if the order exists but the
    ///   warehouse has not booked its shipment yet.
    /// - [`CarrierUpdateError::TrackingMismatch`] if the order's shipment has
    ///   another tracking number.
    /// - [`CarrierUpdateError::Storage`] if the order or warehouse database
    ///   failed (see [`StorageError::kind`]).
    ///
    /// [`CarrierUpdateError::OrderNotFound`]: crate::CarrierUpdateError::OrderNotFound
    /// [`CarrierUpdateError::ShipmentNotFound`]: crate::CarrierUpdateError::ShipmentNotFound
    /// [`CarrierUpdateError::TrackingMismatch`]: crate::CarrierUpdateError::TrackingMismatch
    /// [`CarrierUpdateError::Storage`]: crate::CarrierUpdateError::Storage
    fn carrier_update(
        &self,
        update: crate::CarrierUpdate,
    ) -> BoxFuture<'_, Result<crate::view::CarrierReceipt, crate::CarrierUpdateError>>;
}

/// Flash sales as the HTTP API sees them: an operator creates a sale, a
/// shopper's attempt is admitted (`QUEUED`) or refused at once, and the
/// attempt's state is read until its order is created or it is rejected.
pub trait FlashSaleService: Send + Sync + 'static {
    /// Creates a sale; its units leave the product's stock at once.
    ///
    /// # Errors
    ///
    /// Nothing is taken from stock in any of these cases.
    /// - [`CreateSaleError::UnknownSku`](crate::CreateSaleError::UnknownSku)
    ///   if the SKU is not in the catalog.
    /// - [`CreateSaleError::OutOfStock`](crate::CreateSaleError::OutOfStock)
    ///   if fewer units are on hand and not reserved.
    /// - [`CreateSaleError::Storage`](crate::CreateSaleError::Storage) if the
    ///   database failed (see [`StorageError::kind`]).
    fn create_sale(
        &self,
        sale: crate::NewSale,
    ) -> BoxFuture<'_, Result<crate::Sale, crate::CreateSaleError>>;

    /// Admits `user`'s attempt at `sale` for `quantity` units: answered only
    /// once the attempt and its message are committed (`QUEUED`). A refused
    /// attempt writes nothing, and most refusals read nothing either.
    ///
    /// # Errors
    ///
    /// Nothing is written in any of these cases.
    /// - [`AttemptRefusal::SaleNotFound`](crate::AttemptRefusal::SaleNotFound),
    ///   [`SaleNotActive`](crate::AttemptRefusal::SaleNotActive),
    ///   [`SoldOut`](crate::AttemptRefusal::SoldOut),
    ///   [`AlreadyAttempted`](crate::AttemptRefusal::AlreadyAttempted),
    ///   [`OverUserLimit`](crate::AttemptRefusal::OverUserLimit): see each.
    /// - [`AttemptRefusal::Storage`](crate::AttemptRefusal::Storage) if the
    ///   database failed (see [`StorageError::kind`]); the shopper may retry.
    fn attempt(
        &self,
        sale: crate::SaleId,
        user: crate::UserId,
        quantity: u32,
    ) -> BoxFuture<'_, Result<crate::Attempt, crate::AttemptRefusal>>;

    /// The attempt with this id and its state, if there is one.
    ///
    /// # Errors
    ///
    /// - [`StorageError`] if the database failed: `Unavailable`, or
    ///   `Corrupt` for a row that does not decode.
    fn attempt_state(
        &self,
        attempt: crate::AttemptId,
    ) -> BoxFuture<'_, Result<Option<crate::Attempt>, StorageError>>;

    /// Sales not ended longer than an hour ago, the latest first, each with
    /// where its units and attempts are (the dashboard, `GET /api/sales`).
    ///
    /// # Errors
    ///
    /// - [`StorageError`] if the database failed: `Unavailable`, or
    ///   `Corrupt` for a row that does not decode.
    fn sales(&self) -> BoxFuture<'_, Result<Vec<crate::SaleProgress>, StorageError>>;

    /// The sale with this id and its progress, if there is one.
    ///
    /// # Errors
    ///
    /// - [`StorageError`] if the database failed: `Unavailable`, or
    ///   `Corrupt` for a row that does not decode.
    fn sale(
        &self,
        sale: crate::SaleId,
    ) -> BoxFuture<'_, Result<Option<crate::SaleProgress>, StorageError>>;
}
