//! The relay's round on the SQLite lane: the statements of the general
//! path's `outbox::ack_and_claim_in`.
//!
//! Operation module: it imports only the base.

use ordermq_domain::OutboxMessage;
use rusqlite::params;

use crate::fail::LaneResult;
use crate::sql;

/// Marks the relay's acknowledged rows sent and claims the next due rows.
pub(crate) fn relay_round(
    tx: &rusqlite::Transaction<'_>,
    round: &sql::RelayRound,
    now: i64,
) -> LaneResult<Vec<OutboxMessage>> {
    {
        let mut mark = tx.prepare_cached(sql::MARK_ONE_SENT)?;
        for id in &round.acked {
            mark.execute(params![round.acked_at, id])?;
        }
    }
    let mut claim = tx.prepare_cached(sql::CLAIM_OUTBOX)?;
    let mut claimed = claim
        .query_map(
            params![round.owner, now + round.lease_ms, now, round.limit as i64],
            |r| {
                Ok(OutboxMessage {
                    id: r.get(0)?,
                    topic: r.get(1)?,
                    tag: r.get(2)?,
                    key: r.get(3)?,
                    event_id: r.get(4)?,
                    body: r.get(5)?,
                    deliver_at: r.get(6)?,
                    attempts: r.get(7)?,
                })
            },
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    claimed.sort_by_key(|m| m.id);
    Ok(claimed)
}
