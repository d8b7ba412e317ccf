//! How [`FeedSink::apply`](super::FeedSink::apply) decides and writes a
//! batch: the orders' applied `order_seq`s and parked events read in one
//! statement each, every event's fate decided in memory ([`Plan`]), and the
//! history, the orders' rows and any parking written in a few multi-row
//! statements.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use ordermq_domain::feed::{Admission, FeedEvent, FeedLine};
use ordermq_domain::ports::StorageError;
use sqlx::AnyConnection;

use super::SinkReport;
use crate::dialect;
use crate::fail::{get, storage};

/// Orders (or events) per `IN (…)` list or multi-row statement.
pub(super) const IN_LIST: usize = 400;
/// Rows per multi-row insert into `order_events` (7 values each).
const EVENTS_PER_STATEMENT: usize = 400;
/// Rows per multi-row upsert of `orders` (15 values each).
const ORDERS_PER_STATEMENT: usize = 200;

/// `$1, …, $n` for an `IN (…)` list.
fn in_list(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `order_seq` the sink holds for each of `orders` (absent: none yet).
pub(super) async fn applied_seqs(
    tx: &mut AnyConnection,
    orders: &[&str],
) -> Result<HashMap<String, i64>, StorageError> {
    let mut seqs = HashMap::with_capacity(orders.len());
    for chunk in orders.chunks(IN_LIST) {
        let sql = format!(
            "SELECT order_id, order_seq FROM orders WHERE order_id IN ({})",
            in_list(chunk.len())
        );
        let mut query = dialect::query(&sql);
        for order in chunk {
            query = query.bind(*order);
        }
        for row in query.fetch_all(&mut *tx).await.map_err(storage)? {
            seqs.insert(get(&row, "order_id")?, get(&row, "order_seq")?);
        }
    }
    Ok(seqs)
}

/// The events parked for each of `orders`, by `order_seq` (the first
/// parked of a seq, as a lookup by seq would find it).
pub(super) async fn parked_of(
    tx: &mut AnyConnection,
    orders: &[&str],
) -> Result<HashMap<String, BTreeMap<i64, FeedEvent>>, StorageError> {
    let mut parked: HashMap<String, BTreeMap<i64, FeedEvent>> = HashMap::new();
    for chunk in orders.chunks(IN_LIST) {
        let sql = format!(
            "SELECT order_id, order_seq, body FROM parked_events WHERE order_id IN ({}) \
             ORDER BY order_id, order_seq, parked_at",
            in_list(chunk.len())
        );
        let mut query = dialect::query(&sql);
        for order in chunk {
            query = query.bind(*order);
        }
        for row in query.fetch_all(&mut *tx).await.map_err(storage)? {
            let body: String = get(&row, "body")?;
            let event = FeedEvent::from_json(body.as_bytes()).map_err(StorageError::corrupt)?;
            parked
                .entry(get(&row, "order_id")?)
                .or_default()
                .entry(get(&row, "order_seq")?)
                .or_insert(event);
        }
    }
    Ok(parked)
}

/// What one batch writes, decided in memory before anything is written.
#[derive(Default)]
pub(super) struct Plan<'e> {
    /// Events for the history, in the order they were applied.
    history: Vec<Cow<'e, FeedEvent>>,
    /// Each order's row as its last applied event says (an index into `history`).
    rows: Vec<usize>,
    /// New parked events and the `order_seq` each waits for.
    park: Vec<(&'e FeedEvent, i64)>,
    /// Orders whose older parked events are done (`order_seq` below the
    /// second value) and whose others now wait for it.
    unpark: Vec<(&'e str, i64)>,
}

impl<'e> Plan<'e> {
    /// Decides the fate of one order's `events` (sorted by `order_seq`),
    /// the sink holding it at `seq` and `waiting` parked, as applying them
    /// one by one would: a duplicate is skipped, the next one applied with
    /// every parked one that then follows, one ahead of its predecessor
    /// parked.
    pub(super) fn order(
        &mut self,
        order_id: &'e str,
        mut seq: i64,
        events: Vec<&'e FeedEvent>,
        mut waiting: BTreeMap<i64, FeedEvent>,
        report: &mut SinkReport,
    ) {
        let parked_before = !waiting.is_empty();
        let mut parked_ids: HashSet<String> = waiting.values().map(|e| e.id.clone()).collect();
        let mut new_parked = Vec::new();
        let mut moved = false;
        let mut last = None;
        for event in events {
            match event.admit(seq) {
                Admission::Duplicate => report.duplicates += 1,
                Admission::Park => {
                    report.parked += 1;
                    if parked_ids.insert(event.id.clone()) {
                        new_parked.push(event);
                        waiting
                            .entry(event.data.order_seq)
                            .or_insert_with(|| event.clone());
                    }
                }
                Admission::Apply => {
                    report.applied += 1;
                    self.history.push(Cow::Borrowed(event));
                    seq = event.data.order_seq;
                    while let Some(next) = waiting.remove(&(seq + 1)) {
                        report.unparked += 1;
                        self.history.push(Cow::Owned(next));
                        seq += 1;
                    }
                    // Parked copies of what is now applied are done.
                    waiting.retain(|&s, _| s > seq);
                    last = Some(self.history.len() - 1);
                    moved = true;
                }
            }
        }
        self.rows.extend(last);
        // New parked events that something later in the batch covered are
        // not written at all.
        self.park.extend(
            new_parked
                .into_iter()
                .filter(|e| e.data.order_seq > seq)
                .map(|e| (e, seq + 1)),
        );
        if moved && parked_before {
            self.unpark.push((order_id, seq + 1));
        }
    }

    /// Writes the plan: the history and the orders' rows in multi-row
    /// statements, then the parking (rare: events of one order come in
    /// order on one queue).
    pub(super) async fn write(&self, tx: &mut AnyConnection, now: i64) -> Result<(), StorageError> {
        for chunk in self.history.chunks(EVENTS_PER_STATEMENT) {
            insert_history(tx, chunk, now).await?;
        }
        for chunk in self.rows.chunks(ORDERS_PER_STATEMENT) {
            let events: Vec<&FeedEvent> = chunk.iter().map(|&i| self.history[i].as_ref()).collect();
            upsert_orders(tx, &events, now).await?;
        }
        for (order_id, next) in &self.unpark {
            dialect::query("DELETE FROM parked_events WHERE order_id = $1 AND order_seq < $2")
                .bind(*order_id)
                .bind(*next)
                .execute(&mut *tx)
                .await
                .map_err(storage)?;
            dialect::query("UPDATE parked_events SET waiting_for = $1 WHERE order_id = $2")
                .bind(*next)
                .bind(*order_id)
                .execute(&mut *tx)
                .await
                .map_err(storage)?;
        }
        for (event, waiting_for) in &self.park {
            dialect::query(
                "INSERT INTO parked_events (event_id, order_id, order_seq, waiting_for, body, parked_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING",
            )
            .bind(event.id.as_str())
            .bind(event.subject.as_str())
            .bind(event.data.order_seq)
            .bind(*waiting_for)
            .bind(event.to_json())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(storage)?;
        }
        Ok(())
    }
}

/// `(…), (…)`: `rows` tuples of `width` numbered parameters.
fn tuples(rows: usize, width: usize) -> String {
    (0..rows)
        .map(|r| {
            let marks: Vec<String> = (1..=width).map(|c| format!("${}", r * width + c)).collect();
            format!("({})", marks.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The events into the history (an id already there is skipped).
async fn insert_history(
    tx: &mut AnyConnection,
    events: &[Cow<'_, FeedEvent>],
    now: i64,
) -> Result<(), StorageError> {
    let sql = format!(
        "INSERT INTO order_events (event_id, order_id, order_seq, type, time, body, applied_at) \
         VALUES {} ON CONFLICT (event_id) DO NOTHING",
        tuples(events.len(), 7)
    );
    let bodies: Vec<String> = events.iter().map(|e| e.to_json()).collect();
    let mut query = dialect::query(&sql);
    for (event, body) in events.iter().zip(&bodies) {
        query = query
            .bind(event.id.as_str())
            .bind(event.data.order.order_id.as_str())
            .bind(event.data.order_seq)
            .bind(event.event_type.as_str())
            .bind(event.time.as_str())
            .bind(body.as_str())
            .bind(now);
    }
    query.execute(&mut *tx).await.map_err(storage)?;
    Ok(())
}

/// Each order's row as `events` (one per order) say.
async fn upsert_orders(
    tx: &mut AnyConnection,
    events: &[&FeedEvent],
    now: i64,
) -> Result<(), StorageError> {
    let sql = format!(
        "INSERT INTO orders (order_id, user_id, status, amount, payment_id, created_at, updated_at, \
           order_seq, line_count, units, refunded_units, lines, last_event_id, last_change, applied_at) \
         VALUES {} \
         ON CONFLICT (order_id) DO UPDATE SET user_id = excluded.user_id, status = excluded.status, \
           amount = excluded.amount, payment_id = excluded.payment_id, \
           created_at = excluded.created_at, updated_at = excluded.updated_at, \
           order_seq = excluded.order_seq, line_count = excluded.line_count, \
           units = excluded.units, refunded_units = excluded.refunded_units, \
           lines = excluded.lines, last_event_id = excluded.last_event_id, \
           last_change = excluded.last_change, applied_at = excluded.applied_at",
        tuples(events.len(), 15)
    );
    let lines: Vec<String> = events
        .iter()
        .map(|e| FeedLine::list_to_json(&e.data.order.lines))
        .collect();
    let mut query = dialect::query(&sql);
    for (event, lines) in events.iter().zip(&lines) {
        let order = &event.data.order;
        let units: i64 = order.lines.iter().map(|l| l.quantity).sum();
        let refunded: i64 = order.lines.iter().map(|l| l.refunded).sum();
        query = query
            .bind(order.order_id.as_str())
            .bind(order.user_id.as_str())
            .bind(order.status.as_str())
            .bind(order.amount)
            .bind(order.payment_id.as_deref())
            .bind(order.created_at)
            .bind(order.updated_at)
            .bind(event.data.order_seq)
            .bind(order.lines.len() as i64)
            .bind(units)
            .bind(refunded)
            .bind(lines.as_str())
            .bind(event.id.as_str())
            .bind(event.data.change.as_str())
            .bind(now);
    }
    query.execute(&mut *tx).await.map_err(storage)?;
    Ok(())
}
