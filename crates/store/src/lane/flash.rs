//! A flash-sale admission on the SQLite lane: the statements of the general
//! path's `flash::admit_in`, a few microseconds each instead of a thread
//! hand-off each. The first units of a sale are admitted in a burst (every
//! attempt wins until the budget runs out), and each winner's answer waits
//! for its admission's commit: here a batch of them costs one job.
//!
//! Operation module: it imports only the base.

use ordermq_domain::OrderEvent;
use ordermq_domain::event::FlashAttemptQueued;
use ordermq_domain::ports::StorageError;
use rusqlite::{OptionalExtension, params};

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
    let inserted = tx.prepare_cached(sql::INSERT_ATTEMPT)?.execute(params![
        e.attempt_id.as_str(),
        e.sale_id.as_str(),
        e.user_id.as_str(),
        i64::from(e.quantity),
        e.order_id.as_str(),
        e.queued_at
    ])?;
    if inserted != 1 {
        return Err(LaneError(StorageError::corrupt(format!(
            "the attempt of {} at sale {} appeared after its check",
            e.user_id, e.sale_id
        ))));
    }
    let event = OrderEvent::FlashAttemptQueued(e.clone());
    let kind = event.kind();
    tx.prepare_cached(sql::INSERT_OUTBOX)?.execute(params![
        kind.topic(),
        kind.tag(),
        event.key(),
        event.event_id(),
        event.to_json(),
        None::<i64>,
        now
    ])?;
    Ok(FastAdmit::Queued)
}
