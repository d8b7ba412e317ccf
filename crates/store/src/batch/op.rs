//! The vocabulary of a batch: the operations [`Store::write_batch`] takes
//! ([`WriteOp`]), their outcomes ([`WriteResult`]), and every operation's
//! answer when the whole transaction fails ([`fail_all`]).
//!
//! Apart from the dispatch because callers (the group-commit writer, the
//! relay, the flash sale's admission) only need these types, not how a
//! batch runs.
//!
//! [`Store::write_batch`]: crate::Store::write_batch

use ordermq_domain::event::FlashAttemptQueued;
use ordermq_domain::ports::StorageError;
use ordermq_domain::view::{OrderView, PaymentReceipt};
use ordermq_domain::{
    AttemptId, AttemptState, CreateOrderError, NewOrder, OrderId, OutboxMessage, PayOrderError,
    PaymentNotice, RejectReason, SaleId, UserLimits,
};

use crate::close::CloseOutcome;
use crate::fail::{storage, storage_lost_lock_race};
use crate::flash::{Admitted, AttemptWrite};

/// One write of the order database, for [`Store::write_batch`](crate::Store::write_batch).
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Creates an order that closes itself `close_after_ms` after creation if
    /// unpaid (`None`: never; tools that load data only), if its user stays
    /// within `limits` (`UserLimits::OFF`: tools that load data only).
    Create {
        order: NewOrder,
        order_id: OrderId,
        close_after_ms: Option<i64>,
        limits: UserLimits,
    },
    Pay(PaymentNotice),
    /// Closes the order if it is still unpaid and due.
    Close(OrderId),
    /// The outbox relay's round: marks `acked` rows sent and claims up to
    /// `limit` due rows for `lease_ms`. Riding in a batch, it shares the
    /// payments' commit (and fsync) instead of taking turns with them for the
    /// database's one write lock; it runs after the batch's other operations,
    /// so it already claims the events they wrote.
    RelayOutbox {
        owner: String,
        acked: Vec<i64>,
        /// When the broker confirmed `acked` (the relay's clock after its
        /// last SEND_OK among them): their `sent_at`, rather than the time
        /// this round commits, one linger later.
        acked_at: i64,
        limit: usize,
        lease_ms: i64,
    },
    /// An admitted flash-sale attempt with its message, its units taken
    /// from its instance's lease: durable before the shopper hears `QUEUED`.
    Attempt(AttemptWrite),
    /// Creates the order of a queued attempt (an ordinary UNPAID order that
    /// closes `close_after_ms` after creation) and marks the attempt
    /// `CREATED`; an attempt no longer queued is answered with its state.
    CreateSaleOrder {
        event: FlashAttemptQueued,
        close_after_ms: i64,
    },
    /// Rejects a queued attempt and gives its units back to the sale.
    RejectAttempt {
        sale_id: SaleId,
        attempt_id: AttemptId,
        reason: RejectReason,
    },
}

/// The outcome of one [`WriteOp`].
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "moved once per operation into its caller's oneshot; boxing the order view would cost every create an allocation"
)]
pub enum WriteResult {
    Created(Result<OrderView, CreateOrderError>),
    Paid(Result<PaymentReceipt, PayOrderError>),
    Closed(Result<CloseOutcome, StorageError>),
    Relayed(Result<Vec<OutboxMessage>, StorageError>),
    Attempted(Result<Admitted, StorageError>),
    /// The attempt's state after a `CreateSaleOrder` or a `RejectAttempt`.
    SaleOrder(Result<AttemptState, StorageError>),
}

impl WriteResult {
    /// `Err` with the database's error when this operation lost a lock
    /// race (see `fail::lost_lock_race`): its whole transaction is lost.
    pub(super) fn or_lost_race(self) -> Result<Self, StorageError> {
        let lost = match &self {
            Self::Created(Err(CreateOrderError::Storage(e)))
            | Self::Paid(Err(PayOrderError::Storage(e)))
            | Self::Closed(Err(e))
            | Self::Relayed(Err(e))
            | Self::Attempted(Err(e))
            | Self::SaleOrder(Err(e)) => storage_lost_lock_race(e),
            _ => false,
        };
        if !lost {
            return Ok(self);
        }
        match self {
            Self::Created(Err(CreateOrderError::Storage(e)))
            | Self::Paid(Err(PayOrderError::Storage(e)))
            | Self::Closed(Err(e))
            | Self::Relayed(Err(e))
            | Self::Attempted(Err(e))
            | Self::SaleOrder(Err(e)) => Err(e),
            other => Ok(other),
        }
    }

    pub(super) fn is_ok(&self) -> bool {
        match self {
            Self::Created(r) => r.is_ok(),
            Self::Paid(r) => r.is_ok(),
            Self::Closed(r) => r.is_ok(),
            Self::Relayed(r) => r.is_ok(),
            Self::Attempted(r) => matches!(r, Ok(Admitted::Queued)),
            Self::SaleOrder(r) => r.is_ok(),
        }
    }
}

impl WriteOp {
    /// This operation's answer when the whole transaction failed.
    pub(super) fn failed(&self, e: StorageError) -> WriteResult {
        match self {
            Self::Create { .. } => WriteResult::Created(Err(e.into())),
            Self::Pay(_) => WriteResult::Paid(Err(e.into())),
            Self::Close(_) => WriteResult::Closed(Err(e)),
            Self::RelayOutbox { .. } => WriteResult::Relayed(Err(e)),
            Self::Attempt(_) => WriteResult::Attempted(Err(e)),
            Self::CreateSaleOrder { .. } | Self::RejectAttempt { .. } => {
                WriteResult::SaleOrder(Err(e))
            }
        }
    }
}

/// Every operation's answer when the transaction failed with `e`: the first
/// keeps the driver's error as its source, the others (sqlx errors are not
/// `Clone`) its kind and its text.
pub(super) fn fail_all(ops: &[WriteOp], e: sqlx::Error) -> Vec<WriteResult> {
    fail_all_with(ops, storage(e))
}

/// [`fail_all`] with the error as the ports report it.
pub(super) fn fail_all_with(ops: &[WriteOp], first: StorageError) -> Vec<WriteResult> {
    let kind = first.kind();
    let text = std::error::Error::source(&first).map_or_else(String::new, |s| s.to_string());
    let mut first = Some(first);
    ops.iter()
        .map(|op| {
            op.failed(
                first
                    .take()
                    .unwrap_or_else(|| StorageError::new(kind, text.clone())),
            )
        })
        .collect()
}
