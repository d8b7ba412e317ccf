//! `ordermq outbox parked|requeue`: the operator's hands on outbox rows the
//! relay parked.
//!
//! The relay parks a row the broker refused on every one of
//! `relay_park_after_attempts` claims while it was taking other rows (a
//! poison row), so that it stops costing a send each round and the operator
//! sees it (`outbox_parked` in `/api/stats`, the dashboard). Once the cause
//! is fixed (a topic created, a cluster's limit raised), `requeue` hands it
//! back to the relay with its attempts counted from zero. Both read and
//! write the order database only; a running ordermq picks requeued rows up
//! on its next round.

use ordermq_domain::now_millis;
use ordermq_store::{ParkedOutboxRow, Store};
use serde_json::{Value, json};

use crate::Config;
use crate::dlq::DlqError;

/// Most rows `parked` lists.
pub const LIST_LIMIT: i64 = 1_000;

/// Parked outbox rows, oldest parked first (at most [`LIST_LIMIT`]).
///
/// # Errors
/// The database cannot be opened or read.
pub async fn parked(config: &Config) -> Result<Vec<ParkedOutboxRow>, DlqError> {
    let store = Store::open(&config.database_url(), &config.store_options()).await?;
    let parked = store.parked_outbox(LIST_LIMIT).await;
    store.close().await;
    Ok(parked?)
}

/// Puts the parked row `id` (or every parked row, `None`) back for the
/// relay; how many were parked and are queued now.
///
/// # Errors
/// The database cannot be opened or written.
pub async fn requeue(config: &Config, id: Option<i64>) -> Result<u64, DlqError> {
    let store = Store::open(&config.database_url(), &config.store_options()).await?;
    let requeued = store.requeue_outbox(id, now_millis()).await;
    store.close().await;
    Ok(requeued?)
}

/// `parked` as JSON.
pub fn parked_json(rows: &[ParkedOutboxRow]) -> Value {
    Value::Array(
        rows.iter()
            .map(|r| {
                json!({
                    "id": r.id, "topic": r.topic, "tag": r.tag, "key": r.key,
                    "event_id": r.event_id, "attempts": r.attempts,
                    "last_error": r.last_error, "created_at": r.created_at,
                    "parked_at": r.parked_at,
                })
            })
            .collect(),
    )
}

/// `parked` as a table.
pub fn render_parked(rows: &[ParkedOutboxRow]) -> String {
    let mut out = format!(
        "{:>8}  {:<24}  {:<40}  {:>8}  {:<13}  last error\n",
        "id", "tag", "event id", "attempts", "parked at"
    );
    for r in rows {
        out.push_str(&format!(
            "{:>8}  {:<24}  {:<40}  {:>8}  {:<13}  {}\n",
            r.id,
            r.tag,
            r.event_id,
            r.attempts,
            r.parked_at,
            r.last_error.as_deref().unwrap_or("-")
        ));
    }
    out.push_str(&format!(
        "{} parked outbox row(s): the broker refused each on every attempt; \
         `ordermq outbox requeue <id>` or `--all` hands them back to the relay\n",
        rows.len()
    ));
    out
}
