//! PostgreSQL's own write path for the order database's hot batch: the
//! payments that apply and the relay's rounds, in a handful of round trips.
//!
//! Through sqlx's `Any` driver every payment of a batch cost several
//! statements, each a network round trip, inside a savepoint of its own, and
//! each statement text with a different number of rows was parsed and
//! planned anew. Here, on a native `PgPool`, a whole batch of payments is
//! **one** statement with fixed text (prepared once per connection) whose
//! parameters are arrays: a guarded `UPDATE orders … FROM unnest(…) …
//! RETURNING` decides each payment's fate, and data-modifying CTEs record
//! the payments, the history rows and the `OrderPaid` outbox rows (a
//! payment leaves the stock as the order's creation reserved it:
//! the `pay` module). The relay's rounds
//! follow in the same transaction (`FOR UPDATE SKIP LOCKED` claims,
//! `id = ANY($n)` acknowledgements), then one `COMMIT`.
//!
//! A payment this path does not apply for sure (an unknown order, a
//! duplicate, a closed order, a wrong amount, the second notice of one order
//! or payment id in the batch) writes nothing here and is left to the
//! general sqlx path, which explains it, as the SQLite lane does. If the
//! statement's counts do not add up (a payment id recorded meanwhile by
//! another transaction, a reservation missing) the whole transaction is
//! rolled back and every payment goes the general way: nothing half-done.
//!
//! Several of these run at once on separate connections (the order writer
//! runs several batches concurrently on PostgreSQL): PostgreSQL has its own
//! group commit, and row locks, not a database lock, keep them apart. The
//! statement locks the batch's orders first, in order id order, as every
//! batch does after its products (`sql::lock_orders`); it locks no product,
//! so batches paying orders of one hot SKU commit side by side, and
//! PostgreSQL's group commit flushes them together.
//!
//! Leaf module: it imports only the base (`fail`, `sql`, `server`, `commit`).

mod pay;
mod relay;
mod settings;

use std::time::{Duration, Instant};

use ordermq_domain::view::PaymentReceipt;
use ordermq_domain::{OutboxMessage, PayOrderError, PaymentNotice};
use sqlx::postgres::PgPool;

use crate::commit;

pub(crate) use settings::{connect, durability, session, statements};

/// What [`pay_batch`] committed: per payment, `Some` if it was applied here
/// (`None`: the general path decides it), and per relay round the rows it
/// claimed.
#[derive(Debug)]
pub(crate) struct PgBatch {
    pub payments: Vec<Option<Result<PaymentReceipt, PayOrderError>>>,
    pub relay: Vec<Vec<OutboxMessage>>,
    /// Where the batch's time went: reading the orders, the payment
    /// statement, the relay's statements, `COMMIT`.
    pub timing: Timing,
    /// `COMMIT` went out but its answer never came (`commit`): the
    /// transaction's id and the error. The caller asks the server whether
    /// it committed before trusting anything above.
    pub commit_lost: Option<(i64, sqlx::Error)>,
}

/// Wall time of each part of one batch.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Timing {
    pub acquire: Duration,
    pub read: Duration,
    pub pay: Duration,
    pub relay: Duration,
    pub commit: Duration,
}

/// Applies what it can of `payments` and runs the relay's `rounds` in one
/// transaction: their acknowledgements before the payments, their claims
/// after them (so they claim these payments' events). `Err`:
/// the transaction failed as a whole and nothing was written; `Ok` with
/// [`PgBatch::commit_lost`]: it may have committed.
pub(crate) async fn pay_batch(
    pool: &PgPool,
    feed: crate::sql::Feed,
    payments: &[PaymentNotice],
    rounds: &[crate::sql::RelayRound],
    now: i64,
) -> Result<PgBatch, sqlx::Error> {
    let mut timing = Timing::default();
    let mut clock = Instant::now();
    let mut lap = |slot: &mut Duration| {
        *slot += clock.elapsed();
        clock = Instant::now();
    };
    let mut conn = pool.acquire().await?;
    lap(&mut timing.acquire);
    // Orders' users and lines never change: read before the transaction.
    let prepared = pay::prepare(&mut conn, feed, payments, now).await?;
    lap(&mut timing.read);
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    acknowledge(&mut tx, rounds).await?;
    lap(&mut timing.relay);
    // Its id, to ask what became of it should the commit's answer be lost:
    // read by the payment statement, else by a statement of its own.
    let (decided, txid) = match pay::apply(&mut tx, payments, prepared, now).await? {
        pay::Applied::Ran { decided, txid } => (decided, Some(txid)),
        pay::Applied::Nothing(decided) => (decided, None),
        pay::Applied::Undecided => {
            // The counts did not add up: undo, and let the general path
            // decide every payment.
            tx.rollback().await?;
            tx = sqlx::Connection::begin(&mut *conn).await?;
            acknowledge(&mut tx, rounds).await?;
            ((0..payments.len()).map(|_| None).collect(), None)
        }
    };
    lap(&mut timing.pay);
    let mut relay = Vec::with_capacity(rounds.len());
    for round in rounds {
        relay.push(relay::claim(&mut tx, round, now).await?);
    }
    lap(&mut timing.relay);
    let txid: i64 = match txid {
        Some(txid) => txid,
        None => sqlx::query_scalar(commit::TXID).fetch_one(&mut *tx).await?,
    };
    let commit_lost = match tx.commit().await {
        Ok(()) => None,
        Err(e) if commit::answer_lost(&e) => Some((txid, e)),
        Err(e) => return Err(e),
    };
    lap(&mut timing.commit);
    Ok(PgBatch {
        payments: decided,
        relay,
        timing,
        commit_lost,
    })
}

/// The relay's acknowledgements, every round's.
async fn acknowledge(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    rounds: &[crate::sql::RelayRound],
) -> Result<(), sqlx::Error> {
    for round in rounds {
        relay::ack(tx, round).await?;
    }
    Ok(())
}
