//! New effects on the SQLite lane: the inbox rows, the effects' rows and
//! the batch's receipt from the statements the general path (`effects::write`)
//! uses too.
//!
//! Operation module: it imports only the base and leaves.

use ordermq_domain::Effect;
use rusqlite::{Connection, params};

use crate::effects::{Applied, EffectRecord, Value, as_new_row, receipt_row};
use crate::fail::LaneResult;
use crate::sql;

/// Records each new event's effect with its inbox row, in one transaction;
/// events already in the inbox are skipped (see `Store::apply_effects`).
/// Only for records `effects::lane_handles` accepts.
pub(crate) fn apply_effects(
    conn: &mut Connection,
    group: &str,
    records: &[EffectRecord],
    now: i64,
) -> LaneResult<Vec<Applied>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(records.len());
    {
        let mut inbox = tx.prepare_cached(sql::INSERT_INBOX)?;
        for record in records {
            let fresh = inbox.execute(params![
                group,
                record.event_id,
                record.effect.order_id().as_str(),
                record.msg_id,
                now
            ])? == 1;
            if !fresh {
                outcomes.push(Applied::Already);
                continue;
            }
            insert_effect(&tx, &record.effect, now)?;
            outcomes.push(Applied::Now);
        }
        // One receipt for the batch, seen before or not: see `receipt_row`.
        if let Some(row) = receipt_row(group, records, now) {
            tx.prepare_cached(sql::INSERT_RECEIPT)?.execute(params![
                row.topic,
                row.tag,
                row.key,
                row.event_id,
                row.body,
                now
            ])?;
        }
    }
    tx.commit()?;
    Ok(outcomes)
}

fn insert_effect(tx: &rusqlite::Transaction<'_>, effect: &Effect, now: i64) -> LaneResult<()> {
    // Anything else is only the inbox row: the event needed nothing of this system.
    let Some((row, values)) = as_new_row(effect) else {
        return Ok(());
    };
    let mut statement = tx.prepare_cached(row.insert_one)?;
    for (i, value) in values.iter().enumerate() {
        match value {
            Value::Text(text) => statement.raw_bind_parameter(i + 1, text)?,
            Value::Int(int) => statement.raw_bind_parameter(i + 1, int)?,
        }
    }
    statement.raw_bind_parameter(values.len() + 1, now)?;
    statement.raw_execute()?;
    Ok(())
}
