//! The order database's batch on the SQLite lane: its payments, its
//! flash-sale admissions, then the relay's rounds, in one transaction (one
//! fsync).
//!
//! Dispatcher: it imports the lane's operation modules (`pay`, `flash`,
//! `relay`).

use std::time::{Duration, Instant};

use ordermq_domain::{OutboxMessage, PaymentNotice};
use rusqlite::Connection;

use super::flash::{FastAdmit, admit_all, admit_one};
use super::pay::{FastPay, insert_feed_rows, pay_one};
use super::relay::relay_round;
use super::savepoint;
use crate::fail::LaneResult;
use crate::flash::{Admitted, AttemptWrite};
use crate::sql::{Feed, RelayRound};

/// What [`pay_batch`] committed: per payment, and per relay round (the rows it claimed).
#[derive(Debug)]
pub(crate) struct PayBatch {
    pub payments: Vec<FastPay>,
    /// Per admission: what it came to, `None` if a statement failed (rolled
    /// back: the general path decides it).
    pub attempts: Vec<Option<Admitted>>,
    pub relay: Vec<LaneResult<Vec<OutboxMessage>>>,
    /// Statements, then `COMMIT` (the WAL write and its fsync): where a slow batch spent its time.
    pub statements: Duration,
    pub commit: Duration,
}

/// Applies `payments`, admits `attempts` and runs the relay's rounds (after
/// them, so they see these events) in one transaction. `Err` means the
/// transaction failed as a whole and nothing was written.
pub(crate) fn pay_batch(
    conn: &mut Connection,
    feed: Feed,
    payments: &[PaymentNotice],
    attempts: &[AttemptWrite],
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
    let admitted = admit(&tx, attempts, now)?;
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
        attempts: admitted,
        relay: rounds,
        statements,
        commit: begun.elapsed() - statements,
    })
}

/// Per admission: what it came to, `None` if it is left to the general
/// path. All of them together ([`admit_all`]), or, when that cannot decide
/// them all (a lease short of their units, a failed statement), each in a
/// savepoint of its own.
fn admit(
    tx: &rusqlite::Transaction<'_>,
    attempts: &[AttemptWrite],
    now: i64,
) -> LaneResult<Vec<Option<Admitted>>> {
    if attempts.is_empty() {
        return Ok(Vec::new());
    }
    let admitted = |a: FastAdmit| match a {
        FastAdmit::Queued => Admitted::Queued,
        FastAdmit::LeaseLost => Admitted::LeaseLost,
        FastAdmit::AlreadyAttempted => Admitted::AlreadyAttempted,
    };
    let together: Vec<_> = attempts
        .iter()
        .map(|w| (&w.event, w.owner.as_str(), w.lease_ttl_ms))
        .collect();
    savepoint(tx, "SAVEPOINT admit")?;
    match admit_all(tx, &together, now) {
        Ok(Some(outcomes)) => {
            savepoint(tx, "RELEASE admit")?;
            return Ok(outcomes.into_iter().map(|a| Some(admitted(a))).collect());
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = %e, attempts = attempts.len(), "admitting a batch together failed; admitting each alone");
        }
    }
    savepoint(tx, "ROLLBACK TO admit")?;
    savepoint(tx, "RELEASE admit")?;
    let mut outcomes = Vec::with_capacity(attempts.len());
    for write in attempts {
        savepoint(tx, "SAVEPOINT admit")?;
        let outcome = admit_one(tx, &write.event, &write.owner, write.lease_ttl_ms, now);
        match &outcome {
            Ok(FastAdmit::Queued) => {}
            Ok(_) => savepoint(tx, "ROLLBACK TO admit")?,
            Err(e) => {
                tracing::warn!(error = %e, attempt_id = %write.event.attempt_id, "fast admission failed; retrying on the general path");
                savepoint(tx, "ROLLBACK TO admit")?;
            }
        }
        savepoint(tx, "RELEASE admit")?;
        outcomes.push(outcome.ok().map(admitted));
    }
    Ok(outcomes)
}
