//! The change feed's outbox rows on the general (sqlx) path: one row of
//! `TopicOrderChangeFeed` per order state change, written in the
//! transaction of the change, after it, with the order's state as it now is.
//!
//! The statement that makes a change also bumps the order's `order_seq`
//! (`sql::PAY_ORDER`, the guarded updates of close, refunds and carrier,
//! the create's insert); [`record`] reads the order back inside the same
//! transaction — so the event says exactly what was committed — and inserts
//! the row with the shared `sql::INSERT_OUTBOX`. Where the caller already
//! holds the state (the SQLite lane's payment), it builds the event itself
//! and reads nothing. With the `feed` setting off nothing is written here;
//! `order_seq` is still counted (it costs no statement).
//!
//! Leaf module: it imports only the base (`sql`, `dialect`, `fail`).

use ordermq_domain::feed::{FeedChange, FeedEvent, FeedLine, OrderState, TOPIC_ORDER_CHANGE_FEED};
use sqlx::{AnyConnection, Row};

use crate::dialect;
use crate::fail;
use crate::sql::{self, Feed};

/// The outbox row's columns for `event` (topic, tag, key, id, body).
pub(crate) fn row_of(event: &FeedEvent, change: FeedChange) -> [String; 5] {
    [
        TOPIC_ORDER_CHANGE_FEED.to_owned(),
        change.tag().to_owned(),
        event.subject.clone(),
        event.id.clone(),
        event.to_json(),
    ]
}

/// Counts a change that moved no status (a partial refund requested) in
/// the order's sequence, inside the caller's transaction.
pub(crate) async fn bump(
    conn: &mut AnyConnection,
    order_id: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    dialect::query(sql::BUMP_ORDER_SEQ)
        .bind(now)
        .bind(order_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Reads `order_id` as it is now, inside the caller's transaction.
pub(crate) async fn order_state(
    conn: &mut AnyConnection,
    order_id: &str,
) -> Result<Option<(OrderState, i64)>, sqlx::Error> {
    let Some(row) = dialect::query(sql::FEED_ORDER_STATE)
        .bind(order_id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let lines = dialect::query(sql::FEED_ORDER_LINES)
        .bind(order_id)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| {
            Ok(FeedLine {
                sku: fail::column(r, "sku")?,
                quantity: r.try_get("quantity")?,
                unit_price: r.try_get("unit_price")?,
                refunded: r.try_get("refunded")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let state = OrderState {
        order_id: order_id.to_owned(),
        user_id: fail::column(&row, "user_id")?,
        status: fail::column(&row, "status")?,
        amount: row.try_get("amount")?,
        payment_id: fail::column(&row, "payment_id")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        lines,
    };
    Ok(Some((state, row.try_get("order_seq")?)))
}

/// Writes the feed row of `change` of `order_id` (already made and
/// counted in `order_seq`) inside the caller's transaction; nothing when
/// `feed` is off.
pub(crate) async fn record(
    conn: &mut AnyConnection,
    feed: Feed,
    order_id: &str,
    change: FeedChange,
    now: i64,
) -> Result<(), sqlx::Error> {
    if feed == Feed::Off {
        return Ok(());
    }
    let Some((state, seq)) = order_state(&mut *conn, order_id).await? else {
        return Err(sqlx::Error::Protocol(format!(
            "order {order_id} vanished inside its own change"
        )));
    };
    let event = FeedEvent::new(change, seq, state, now);
    let [topic, tag, key, id, body] = row_of(&event, change);
    dialect::query(sql::INSERT_OUTBOX)
        .bind(topic)
        .bind(tag)
        .bind(key)
        .bind(id)
        .bind(body)
        .bind(None::<i64>)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}
