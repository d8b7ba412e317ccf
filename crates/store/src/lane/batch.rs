//! The order database's batch on the SQLite lane: its payments, then the
//! relay's rounds, in one transaction (one fsync).
//!
//! Dispatcher: it imports the lane's operation modules (`pay`, `relay`).

use std::time::{Duration, Instant};

use ordermq_domain::{OutboxMessage, PaymentNotice};
use rusqlite::Connection;

use super::pay::{FastPay, insert_feed_rows, pay_one};
use super::relay::relay_round;
use super::savepoint;
use crate::fail::LaneResult;
use crate::sql::{Feed, RelayRound};

/// What [`pay_batch`] committed: per payment, and per relay round (the rows it claimed).
#[derive(Debug)]
pub(crate) struct PayBatch {
    pub payments: Vec<FastPay>,
    pub relay: Vec<LaneResult<Vec<OutboxMessage>>>,
    /// Statements, then `COMMIT` (the WAL write and its fsync): where a slow batch spent its time.
    pub statements: Duration,
    pub commit: Duration,
}

/// Applies `payments` and runs the relay's rounds (after them, so they see
/// these payments' events) in one transaction. `Err` means the transaction
/// failed as a whole and nothing was written.
pub(crate) fn pay_batch(
    conn: &mut Connection,
    feed: Feed,
    payments: &[PaymentNotice],
    relay: &[RelayRound],
    now: i64,
) -> LaneResult<PayBatch> {
    let begun = Instant::now();
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(payments.len());
    let mut feed_rows = Vec::new();
    for notice in payments {
        savepoint(&tx, "SAVEPOINT pay")?;
        let rows = (feed == Feed::On).then_some(&mut feed_rows);
        match pay_one(&tx, rows, notice, now) {
            Ok(outcome) => {
                if matches!(outcome, FastPay::Undecided | FastPay::Paid(Err(_))) {
                    savepoint(&tx, "ROLLBACK TO pay")?;
                }
                savepoint(&tx, "RELEASE pay")?;
                outcomes.push(outcome);
            }
            Err(e) => {
                // This payment alone is undone; the general path retries it
                // and reports what went wrong.
                tracing::warn!(error = %e, order_id = %notice.order_id, "fast payment path failed; retrying on the general path");
                savepoint(&tx, "ROLLBACK TO pay")?;
                savepoint(&tx, "RELEASE pay")?;
                outcomes.push(FastPay::Undecided);
            }
        }
    }
    insert_feed_rows(&tx, &feed_rows, now)?;
    let mut rounds = Vec::with_capacity(relay.len());
    for round in relay {
        savepoint(&tx, "SAVEPOINT relay")?;
        let claimed = relay_round(&tx, round, now);
        if claimed.is_err() {
            savepoint(&tx, "ROLLBACK TO relay")?;
        }
        savepoint(&tx, "RELEASE relay")?;
        rounds.push(claimed);
    }
    let statements = begun.elapsed();
    tx.commit()?;
    Ok(PayBatch {
        payments: outcomes,
        relay: rounds,
        statements,
        commit: begun.elapsed() - statements,
    })
}
