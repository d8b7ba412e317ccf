//! A payment on the SQLite lane: the statements of the general path's
//! `pay::pay_order_in`, for a payment that applies; anything else is handed
//! back undecided, with nothing written.
//!
//! Operation module: it imports only the base and leaves.

use ordermq_domain::event::PaidLine;
use ordermq_domain::feed::{FeedChange, FeedEvent, OrderState, TOPIC_ORDER_CHANGE_FEED};
use ordermq_domain::ports::StorageError;
use ordermq_domain::view::PaymentReceipt;
use ordermq_domain::{OrderEvent, OrderPaid, OrderStatus, PayOrderError, PaymentNotice, UserId};
use rusqlite::{OptionalExtension, params};

use crate::fail::{LaneError, LaneResult};
use crate::sql;

/// What one payment of a fast batch came to.
#[derive(Debug)]
pub(crate) enum FastPay {
    Paid(Result<PaymentReceipt, PayOrderError>),
    /// Not payable as notified (duplicate, closed, wrong amount, unknown…):
    /// nothing was written; the general path decides and explains it.
    Undecided,
}

/// Applies one payment inside the caller's transaction (and savepoint: on
/// `Paid(Err)` the caller rolls it back).
pub(crate) fn pay_one(
    tx: &rusqlite::Transaction<'_>,
    feed_rows: Option<&mut Vec<FeedEvent>>,
    notice: &PaymentNotice,
    now: i64,
) -> LaneResult<FastPay> {
    let order_id = notice.order_id.as_str();
    let paid: Option<(String, i64, i64)> = tx
        .prepare_cached(sql::PAY_ORDER)?
        .query_row(
            params![
                OrderStatus::Paid.as_str(),
                notice.payment_id.as_str(),
                now,
                order_id,
                OrderStatus::Unpaid.as_str(),
                notice.amount.minor_units()
            ],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .optional()?;
    let Some((user_id, order_seq, created_at)) = paid else {
        return Ok(FastPay::Undecided);
    };
    let recorded = tx
        .prepare_cached(sql::RECORD_APPLIED_PAYMENT)?
        .execute(params![
            notice.payment_id.as_str(),
            order_id,
            notice.amount.minor_units(),
            now
        ])?;
    if recorded == 0 {
        // This payment id already paid another order; the caller rolls back.
        return Ok(FastPay::Paid(Err(PayOrderError::PaymentIdReused {
            payment_id: notice.payment_id.to_string(),
        })));
    }
    let lines = paid_lines(tx, order_id)?;
    tx.prepare_cached(sql::INSERT_HISTORY)?.execute(params![
        order_id,
        OrderStatus::Unpaid.as_str(),
        OrderStatus::Paid.as_str(),
        now
    ])?;
    let event = OrderEvent::OrderPaid(OrderPaid {
        order_id: notice.order_id.clone(),
        user_id: UserId::parse(&user_id).map_err(|e| corrupt(format!("stored user id: {e}")))?,
        payment_id: notice.payment_id.clone(),
        amount: notice.amount,
        paid_at: now,
        lines: lines.clone(),
    });
    let kind = event.kind();
    tx.prepare_cached(sql::INSERT_OUTBOX)?.execute(params![
        kind.topic(),
        kind.tag(),
        order_id,
        event.event_id(),
        event.to_json(),
        None::<i64>,
        now
    ])?;
    if let Some(feed_rows) = feed_rows {
        // Built from what this payment already read: no statement here;
        // the batch inserts them after its payments (`insert_feed_rows`).
        let state = OrderState::paid(notice, &user_id, &lines, created_at, now);
        feed_rows.push(FeedEvent::new(FeedChange::Paid, order_seq, state, now));
    }
    Ok(FastPay::Paid(Ok(PaymentReceipt {
        order_id: notice.order_id.clone(),
        status: OrderStatus::Paid,
        duplicate: false,
        refund_required: false,
    })))
}

/// The change-feed rows of the batch's applied payments, after all of
/// them (as the general path's set-based run writes them: its `OrderPaid`
/// rows, then its feed rows), with the shared prepared insert.
pub(crate) fn insert_feed_rows(
    tx: &rusqlite::Transaction<'_>,
    events: &[FeedEvent],
    now: i64,
) -> LaneResult<()> {
    let mut insert = tx.prepare_cached(sql::INSERT_OUTBOX)?;
    for event in events {
        insert.execute(params![
            TOPIC_ORDER_CHANGE_FEED,
            event.data.change.tag(),
            event.subject,
            event.id,
            event.to_json(),
            None::<i64>,
            now
        ])?;
    }
    Ok(())
}

fn corrupt(message: String) -> LaneError {
    LaneError(StorageError::corrupt(message))
}

/// The order's lines, for its `OrderPaid` event (a payment leaves the stock
/// as the order's creation reserved it: `pay`).
fn paid_lines(tx: &rusqlite::Transaction<'_>, order_id: &str) -> LaneResult<Vec<PaidLine>> {
    let mut select = tx.prepare_cached(sql::PAID_LINES)?;
    let mut rows = select.query([order_id])?;
    let mut lines = Vec::new();
    while let Some(row) = rows.next()? {
        let sku: String = row.get(0)?;
        lines.push(
            sql::paid_line(&sku, row.get(1)?, row.get(2)?)
                .map_err(|e| corrupt(format!("stored line of {order_id}: {e}")))?,
        );
    }
    Ok(lines)
}
