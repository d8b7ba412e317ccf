//! `ordermq outbox parked|requeue|missing`: the operator's hands on outbox
//! rows the relay parked, and a view of the events the reconciler gave up on.
//!
//! The relay parks a row the broker refused on every one of
//! `relay_park_after_attempts` claims while it was taking other rows (a
//! poison row), so that it stops costing a send each round and the operator
//! sees it (`outbox_parked` in `/api/stats`, the dashboard). Once the cause
//! is fixed (a topic created, a cluster's limit raised), `requeue` hands it
//! back to the relay with its attempts counted from zero. Both read and
//! write the order database only; a running ordermq picks requeued rows up
//! on its next round.
//!
//! `missing` lists sent events some subscribed group has still not
//! acknowledged after the reconciler published them again `reconcile_max`
//! times, with the groups that owe them: what is left for an operator
//! (a group's dead-letter queue, a consumer that refuses the event).

use ordermq_domain::now_millis;
use ordermq_service::reconcile::owed_by;
use ordermq_store::{ParkedOutboxRow, SentRow, Store, StoreOptions};
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

/// A sent event the reconciler left for an operator, and who owes it.
#[derive(Debug, Clone)]
pub struct MissingRow {
    pub row: SentRow,
    /// The groups that still owe it (empty: acknowledged since the
    /// reconciler's last pass, which settles it next time).
    pub owed_by: Vec<&'static str>,
}

/// Sent events re-published `reconcile_max` times and still owed, oldest
/// sent first (at most [`LIST_LIMIT`]).
///
/// # Errors
/// The database cannot be opened or read.
pub async fn missing(config: &Config) -> Result<Vec<MissingRow>, DlqError> {
    let store = Store::open(&config.database_url(), &StoreOptions::default()).await?;
    let listed = async {
        let rows = store
            .missing_outbox(i64::from(config.reconcile_max), LIST_LIMIT)
            .await?;
        let owed = owed_by(&store, &rows).await?;
        Ok::<_, ordermq_domain::ports::StorageError>(
            rows.into_iter()
                .zip(owed)
                .map(|(row, owed)| MissingRow {
                    row,
                    owed_by: owed.unwrap_or_default(),
                })
                .collect::<Vec<_>>(),
        )
    }
    .await;
    store.close().await;
    Ok(listed?)
}

/// `missing` as JSON.
pub fn missing_json(rows: &[MissingRow]) -> Value {
    Value::Array(
        rows.iter()
            .map(|m| {
                let r = &m.row;
                json!({
                    "id": r.id, "tag": r.tag, "key": r.key, "event_id": r.event_id,
                    "created_at": r.created_at, "sent_at": r.sent_at,
                    "republished": r.republished, "owed_by": m.owed_by,
                })
            })
            .collect(),
    )
}

/// `missing` as a table.
pub fn render_missing(rows: &[MissingRow]) -> String {
    let mut out = format!(
        "{:>8}  {:<22}  {:<44}  {:>11}  {:<13}  owed by\n",
        "id", "tag", "event id", "republished", "last sent"
    );
    for m in rows {
        let r = &m.row;
        out.push_str(&format!(
            "{:>8}  {:<22}  {:<44}  {:>11}  {:<13}  {}\n",
            r.id,
            r.tag,
            r.event_id,
            r.republished,
            r.sent_at,
            m.owed_by.join(",")
        ));
    }
    out.push_str(&format!(
        "{} event(s) still not acknowledged by every subscribed group after being \
         published again reconcile_max times: see each group's dead-letter queue \
         (`ordermq dlq list`)\n",
        rows.len()
    ));
    out
}
