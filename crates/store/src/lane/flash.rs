//! A flash-sale admission on the SQLite lane: the statements of the general
//! path's `flash::admit_in`, a few microseconds each instead of a thread
//! hand-off each. The first units of a sale are admitted in a burst (every
//! attempt wins until the budget runs out), and each winner's answer waits
//! for its admission's commit: here a batch of them costs one job, and
//! its admissions are written together (`admit_all`: two statements each,
//! against `admit_one`'s four and a savepoint's three), falling back to one
//! at a time when that cannot decide them all.
//!
//! Operation module: it imports only the base.

use ordermq_domain::OrderEvent;
use ordermq_domain::event::FlashAttemptQueued;
use ordermq_domain::ports::StorageError;
use rusqlite::{OptionalExtension, Statement, params};

use crate::fail::{LaneError, LaneResult};
use crate::sql;

/// What one admission came to (the general path's `flash::Admitted`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FastAdmit {
    /// The attempt and its message are written.
    Queued,
    /// The lease no longer holds the units: nothing written.
    LeaseLost,
    /// The user already has an attempt at this sale: nothing written.
    AlreadyAttempted,
}

/// An admission's attempt, the owner whose lease its units come from, and
/// how long that lease is renewed for (`flash::AttemptWrite`'s fields).
pub(crate) type AdmitWrite<'a> = (&'a FlashAttemptQueued, &'a str, i64);

/// Admits `writes` together, inside the caller's transaction and
/// savepoint: each attempt's row (a user's second attempt is refused by the
/// table's `UNIQUE (sale_id, user_id)` as it is written, not by a read
/// before), then one lease take per sale and owner for the units of every
/// attempt written, then their messages. Per admission that is two
/// statements where [`admit_one`] runs four and the caller a savepoint's
/// three: a burst of winners is this path's whole load, and each winner's
/// answer waits for it. Nothing but statements is repeated per attempt (each
/// statement prepared once for the batch).
///
/// `Ok(None)`: a lease does not hold the units of all its attempts (some of
/// them may still fit), and `Err`: a statement failed. Either way the caller
/// rolls the savepoint back and admits them one by one with [`admit_one`],
/// which tells each attempt's fate.
pub(crate) fn admit_all(
    tx: &rusqlite::Transaction<'_>,
    writes: &[AdmitWrite<'_>],
    now: i64,
) -> LaneResult<Option<Vec<FastAdmit>>> {
    let mut outcomes = Vec::with_capacity(writes.len());
    // (sale, owner, units, the lease's new expiry): one sale, one owner in
    // practice.
    let mut takes: Vec<(&str, &str, i64, i64)> = Vec::new();
    let mut insert = tx.prepare_cached(sql::INSERT_ATTEMPT)?;
    for &(e, owner, lease_ttl_ms) in writes {
        if insert_attempt(&mut insert, e)? != 1 {
            outcomes.push(FastAdmit::AlreadyAttempted);
            continue;
        }
        outcomes.push(FastAdmit::Queued);
        let sale = e.sale_id.as_str();
        let expiry = now + lease_ttl_ms;
        match takes.iter_mut().find(|t| t.0 == sale && t.1 == owner) {
            Some(take) => {
                take.2 += i64::from(e.quantity);
                take.3 = take.3.max(expiry);
            }
            None => takes.push((sale, owner, i64::from(e.quantity), expiry)),
        }
    }
    let mut take = tx.prepare_cached(sql::TAKE_LEASED_UNITS)?;
    for (sale, owner, units, expiry) in takes {
        if take.execute(params![units, expiry, sale, owner])? != 1 {
            return Ok(None);
        }
    }
    let mut enqueue = tx.prepare_cached(sql::INSERT_OUTBOX)?;
    for (&(e, _, _), outcome) in writes.iter().zip(&outcomes) {
        if *outcome != FastAdmit::Queued {
            continue;
        }
        enqueue_attempt(&mut enqueue, e, now)?;
    }
    Ok(Some(outcomes))
}

/// Admits the attempt `e`, its units taken from `owner`'s lease (renewed
/// for `lease_ttl_ms`), inside the caller's transaction (and savepoint: on
/// anything but `Queued` the caller rolls it back, as the general path
/// does). `Err`: a statement failed, or the attempt's row could not be
/// written after its check (impossible with SQLite's one writer): the
/// caller rolls back and the general path decides it.
pub(crate) fn admit_one(
    tx: &rusqlite::Transaction<'_>,
    e: &FlashAttemptQueued,
    owner: &str,
    lease_ttl_ms: i64,
    now: i64,
) -> LaneResult<FastAdmit> {
    let earlier: Option<i64> = tx
        .prepare_cached(sql::ATTEMPT_OF_USER)?
        .query_row(params![e.sale_id.as_str(), e.user_id.as_str()], |r| {
            r.get(0)
        })
        .optional()?;
    if earlier.is_some() {
        return Ok(FastAdmit::AlreadyAttempted);
    }
    let taken = tx.prepare_cached(sql::TAKE_LEASED_UNITS)?.execute(params![
        i64::from(e.quantity),
        now + lease_ttl_ms,
        e.sale_id.as_str(),
        owner
    ])?;
    if taken != 1 {
        return Ok(FastAdmit::LeaseLost);
    }
    if insert_attempt(&mut *tx.prepare_cached(sql::INSERT_ATTEMPT)?, e)? != 1 {
        return Err(LaneError(StorageError::corrupt(format!(
            "the attempt of {} at sale {} appeared after its check",
            e.user_id, e.sale_id
        ))));
    }
    enqueue_attempt(&mut *tx.prepare_cached(sql::INSERT_OUTBOX)?, e, now)?;
    Ok(FastAdmit::Queued)
}

/// Writes the attempt's row with `insert` ([`sql::INSERT_ATTEMPT`]): 1
/// written, 0 if the user already has an attempt at the sale.
fn insert_attempt(insert: &mut Statement<'_>, e: &FlashAttemptQueued) -> rusqlite::Result<usize> {
    insert.execute(params![
        e.attempt_id.as_str(),
        e.sale_id.as_str(),
        e.user_id.as_str(),
        i64::from(e.quantity),
        e.order_id.as_str(),
        e.queued_at
    ])
}

/// Writes the attempt's message with `enqueue` ([`sql::INSERT_OUTBOX`]).
fn enqueue_attempt(
    enqueue: &mut Statement<'_>,
    e: &FlashAttemptQueued,
    now: i64,
) -> rusqlite::Result<()> {
    let event = OrderEvent::FlashAttemptQueued(e.clone());
    let kind = event.kind();
    enqueue.execute(params![
        kind.topic(),
        kind.tag(),
        event.key(),
        event.event_id(),
        event.to_json(),
        None::<i64>,
        now
    ])?;
    Ok(())
}
