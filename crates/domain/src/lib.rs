//! The order system's vocabulary and rules, free of I/O.
//!
//! Everything the other crates agree on lives here: identifiers and amounts
//! parsed once at the edge, the order state machine, the events that travel
//! through RocketMQ, the downstream systems that consume them, and the ports
//! (traits) that the store, messaging and third-party adapters implement.
//!
//! # Layout
//!
//! Modules refer one way, down this list: each names (in code and in doc
//! links) only modules listed before it, so the crate reads top to bottom
//! without a circle (a workspace test checks it).
//!
//! - [`clock`]: the wall clock every stored time is read from, and the
//!   clock deadlines are decided on (never ahead of the time counted).
//! - [`error`]: the stable codes, validation failures, the storage failure
//!   every operation can end in, and the one error type per operation of
//!   orders and payments.
//! - [`signing`]: HMAC-SHA256 under named keys, for callbacks, requests to
//!   third parties and events; several keys at once for rotation.
//! - [`order`]: identifiers and amounts, products, orders, the status
//!   machine, payment notices.
//! - [`limits`]: how many unpaid orders, and units of one SKU in them, a
//!   user may hold (no hoarding).
//! - [`flash`]: flash sales: a sale's rules, an attempt's states, why an
//!   attempt is refused, how many units an instance leases at once.
//! - [`lifecycle`]: refunds and carrier updates, after the payment.
//! - [`event`]: the events published through the outbox and their wire form.
//! - [`feed`]: the data team's change feed: one CloudEvents 1.0 event per
//!   order state change, with the order's full state and a gap-free
//!   per-order sequence, and the sink's apply/skip/park rule.
//! - [`topology`]: every topic, tag, producer and consumer group (the four
//!   downstream [`System`]s among them), subscription and listener
//!   concurrency, in one table.
//! - [`fanout`]: what each downstream system does with an event.
//! - [`reconcile`]: which subscribed groups still owe a sent event, from
//!   their receipts and the order database's state.
//! - [`parked`]: messages that fail verification (forged, unsigned, under an
//!   unknown key): why, what is kept of them, and the check every group runs.
//! - [`view`]: read models returned by the API.
//! - [`ports`]: traits for storage, messaging and third parties, so adapters
//!   stay swappable.

#![warn(missing_docs)]

pub mod clock;
pub mod error;
pub mod event;
pub mod fanout;
pub mod feed;
pub mod flash;
pub mod lifecycle;
pub mod limits;
pub mod order;
pub mod parked;
pub mod ports;
pub mod reconcile;
pub mod signing;
pub mod topology;
pub mod view;

pub use clock::{deadline_millis, now_millis};
pub use error::{CreateOrderError, ErrorCode, PayOrderError, ValidationError};
pub use event::{EventKind, OrderEvent, OrderPaid, OutboxMessage};
pub use fanout::{Effect, FanoutState};
pub use flash::{
    Attempt, AttemptRefusal, AttemptState, CreateSaleError, NewSale, RejectReason, Sale,
    SaleProgress, SaleStatus,
};
pub use lifecycle::{
    Actor, CarrierStatus, CarrierUpdate, CarrierUpdateError, RefundError, RefundRequest,
    RefundStatus, RetryRefundError,
};
pub use limits::UserLimits;
pub use order::{
    Amount, AttemptId, IdempotencyKey, NewOrder, OrderId, OrderLine, OrderStatus, PaymentId,
    PaymentNotice, Product, Quantity, RefundId, SaleId, Sku, TrackingNo, UserId,
};
pub use topology::{
    CONSUMER_GROUPS, Consumer, ConsumerGroup, PRODUCER_GROUP, System, TOPIC_FLASH_SALE_ATTEMPT,
    TOPIC_ORDER_LOGISTICS, TOPIC_ORDER_PAY_SUCCESS, TOPIC_ORDER_RECEIPT, TOPIC_ORDER_REFUND,
    TOPIC_ORDER_TIMEOUT, TOPICS,
};
