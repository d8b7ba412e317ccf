//! Payment: UNPAID → PAID, the payment recorded and an `OrderPaid` event in
//! the outbox, one transaction.
//!
//! A payment does not touch its products' stock: the units its order
//! reserved at creation stay counted in `reserved`, which holds the units
//! of every order that is not cancelled, paid or not (`catalog` explains
//! the counters). The guarded UNPAID → PAID transition alone decides
//! between a payment and a close, which releases an unpaid order's units.
//! So payments of orders of one hot SKU do not queue on its product's row:
//! they lock only their own orders.
//!
//! Two forms of one rule, from the same statements (`sql`): one payment at a
//! time ([`pay_order_in`], which also explains a payment that does not
//! apply), and a run of payments set-based ([`pay_run_set_based`]: a few
//! statements for the whole run, for group commit through sqlx). The SQLite
//! lane's form is `lane::pay`. Neither form writes a transition outside
//! `OrderStatus::can_become`: what the set-based form cannot apply for sure
//! it leaves undecided, before writing, for [`pay_order_in`].
//!
//! Operation module: it imports only the base, leaves and the handle.

use std::collections::{BTreeMap, HashSet};

use ordermq_domain::event::PaidLine;
use ordermq_domain::ports::StorageError;
use ordermq_domain::view::PaymentReceipt;
use ordermq_domain::{OrderEvent, OrderPaid, OrderStatus, PayOrderError, PaymentNotice, UserId};
use sqlx::{AnyConnection, Row};

use crate::dialect;
use crate::fail::{status_of, storage};
use crate::feed;
use crate::history::record_history;
use crate::mysql;
use crate::outbox;
use crate::refund_rows::refund_stray_payment_in;
use crate::sql::Feed;
use crate::sql::{self, parameter_table, placeholders};
use crate::store::{Db, Store};
use ordermq_domain::feed::FeedChange;

impl Store {
    /// Applies a payment notice in one transaction: UNPAID → PAID, the
    /// payment recorded and an `OrderPaid` event in the outbox.
    ///
    /// The same payment notified again changes nothing. A different payment for
    /// an order that can no longer take one is recorded as owed back
    /// (`refund_required`), never dropped.
    pub async fn pay_order(
        &self,
        notice: &PaymentNotice,
        now: i64,
    ) -> Result<PaymentReceipt, PayOrderError> {
        let mut tx = self.begin_write(Db::Orders).await.map_err(storage)?;
        let receipt = pay_order_in(&mut tx, self.feed, notice, now).await?;
        tx.commit().await.map_err(storage)?;
        Ok(receipt)
    }
}

fn receipt(notice: &PaymentNotice, status: OrderStatus) -> PaymentReceipt {
    PaymentReceipt {
        order_id: notice.order_id.clone(),
        status,
        duplicate: false,
        refund_required: false,
    }
}

/// One payment inside the caller's transaction. On `Err` the caller rolls
/// back what it wrote (its savepoint, or the transaction).
pub(crate) async fn pay_order_in(
    tx: &mut AnyConnection,
    feed: Feed,
    notice: &PaymentNotice,
    now: i64,
) -> Result<PaymentReceipt, PayOrderError> {
    let order_id = notice.order_id.as_str();
    let user_id = if dialect::is_mysql(tx) {
        let payment_id = notice.payment_id.as_str();
        mysql::pay_order(tx, payment_id, now, order_id, notice.amount.minor_units()).await
    } else {
        let transitioned = dialect::query(sql::PAY_ORDER)
            .bind(OrderStatus::Paid.as_str())
            .bind(notice.payment_id.as_str())
            .bind(now)
            .bind(order_id)
            .bind(OrderStatus::Unpaid.as_str())
            .bind(notice.amount.minor_units())
            .fetch_optional(&mut *tx)
            .await;
        transitioned.and_then(|row| row.map(|row| row.try_get("user_id")).transpose())
    };
    let Some(user_id): Option<String> = user_id.map_err(storage)? else {
        return explain_unapplied_payment(tx, feed, notice, now).await;
    };

    let recorded = dialect::query(sql::RECORD_APPLIED_PAYMENT)
        .bind(notice.payment_id.as_str())
        .bind(order_id)
        .bind(notice.amount.minor_units())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(storage)?;
    if recorded.rows_affected() == 0 {
        // This payment id already paid another order: the caller rolls the
        // transition back.
        return Err(PayOrderError::PaymentIdReused {
            payment_id: notice.payment_id.to_string(),
        });
    }
    let lines = paid_lines(tx, order_id).await?;
    record_history(
        &mut *tx,
        order_id,
        Some(OrderStatus::Unpaid),
        OrderStatus::Paid,
        now,
    )
    .await
    .map_err(storage)?;
    let event = OrderEvent::OrderPaid(OrderPaid {
        order_id: notice.order_id.clone(),
        user_id: UserId::parse(&user_id).map_err(StorageError::corrupt)?,
        payment_id: notice.payment_id.clone(),
        amount: notice.amount,
        paid_at: now,
        lines,
    });
    outbox::enqueue(&mut *tx, &event, None, now)
        .await
        .map_err(storage)?;
    feed::record(&mut *tx, feed, order_id, FeedChange::Paid, now)
        .await
        .map_err(storage)?;
    Ok(receipt(notice, OrderStatus::Paid))
}

/// The order's lines, for its `OrderPaid` event.
async fn paid_lines(tx: &mut AnyConnection, order_id: &str) -> Result<Vec<PaidLine>, StorageError> {
    let line_rows = dialect::query(sql::PAID_LINES)
        .bind(order_id)
        .fetch_all(&mut *tx)
        .await
        .map_err(storage)?;
    let mut lines = Vec::with_capacity(line_rows.len());
    for row in &line_rows {
        let sku: String = row.try_get("sku").map_err(storage)?;
        lines.push(
            sql::paid_line(
                &sku,
                row.try_get("quantity").map_err(storage)?,
                row.try_get("unit_price").map_err(storage)?,
            )
            .map_err(|e| StorageError::corrupt(format!("stored line of {order_id}: {e}")))?,
        );
    }
    Ok(lines)
}

/// The guarded update matched nothing: find out why, inside the same transaction.
async fn explain_unapplied_payment(
    tx: &mut AnyConnection,
    feed: Feed,
    notice: &PaymentNotice,
    now: i64,
) -> Result<PaymentReceipt, PayOrderError> {
    let row = dialect::query(
        "SELECT status, amount, payment_id, user_id FROM orders WHERE order_id = $1",
    )
    .bind(notice.order_id.as_str())
    .fetch_optional(&mut *tx)
    .await
    .map_err(storage)?;
    let Some(row) = row else {
        return Err(PayOrderError::OrderNotFound(notice.order_id.to_string()));
    };
    let status_raw: String = row.try_get("status").map_err(storage)?;
    let status = status_of(&status_raw)?;
    let expected: i64 = row.try_get("amount").map_err(storage)?;
    let applied: Option<String> = row.try_get("payment_id").map_err(storage)?;
    if expected != notice.amount.minor_units() {
        return Err(PayOrderError::AmountMismatch {
            expected,
            notified: notice.amount.minor_units(),
        });
    }
    if applied.as_deref() == Some(notice.payment_id.as_str()) {
        return Ok(PaymentReceipt {
            duplicate: true,
            ..receipt(notice, status)
        });
    }
    // Money was taken for an order that cannot take it (paid by another
    // payment, or no longer payable): keep the record, owed back.
    let recorded = dialect::query(sql::RECORD_OWED_PAYMENT)
        .bind(notice.payment_id.as_str())
        .bind(notice.order_id.as_str())
        .bind(notice.amount.minor_units())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(storage)?;
    if recorded.rows_affected() == 1 {
        // Newly recorded: give it back through the refund machinery, so the
        // gateway's refund is retried until it succeeds and stays visible.
        let user_id: String = row.try_get("user_id").map_err(storage)?;
        let user_id = UserId::parse(&user_id).map_err(StorageError::corrupt)?;
        let status = refund_stray_payment_in(tx, feed, notice, &user_id, status, now)
            .await
            .map_err(storage)?;
        return Ok(PaymentReceipt {
            refund_required: true,
            ..receipt(notice, status)
        });
    }
    let owner: String = dialect::query("SELECT order_id FROM payments WHERE payment_id = $1")
        .bind(notice.payment_id.as_str())
        .fetch_one(&mut *tx)
        .await
        .map_err(storage)?
        .try_get("order_id")
        .map_err(storage)?;
    if owner != notice.order_id.as_str() {
        return Err(PayOrderError::PaymentIdReused {
            payment_id: notice.payment_id.to_string(),
        });
    }
    Ok(PaymentReceipt {
        duplicate: true,
        refund_required: true,
        ..receipt(notice, status)
    })
}

/// Most payments in one set-based run (bounded by the backends' parameter limits).
pub(crate) const PAYMENTS_PER_RUN: usize = 200;

/// What the set-based path decided for each notice of its run: the receipt
/// of a payment applied here, or `None` for one it leaves to
/// [`pay_order_in`] (not payable as notified, or not the first notice of its
/// order or payment id in the run).
pub(crate) type RunOutcome = Vec<Option<Result<PaymentReceipt, PayOrderError>>>;

/// Applies a run of payments with a handful of statements, inside a savepoint
/// (an error rolls the whole run back and the caller applies it one by one).
pub(crate) async fn pay_run_set_based(
    tx: &mut AnyConnection,
    feed: Feed,
    notices: &[&PaymentNotice],
    now: i64,
) -> Result<RunOutcome, sqlx::Error> {
    dialect::query("SAVEPOINT run").execute(&mut *tx).await?;
    match pay_run_statements(tx, feed, notices, now).await {
        Ok(decided) => {
            dialect::query("RELEASE SAVEPOINT run")
                .execute(&mut *tx)
                .await?;
            Ok(decided)
        }
        // The transaction is lost (MySQL: already rolled back): the caller
        // runs it again.
        Err(e) if crate::fail::lost_lock_race(&e) => Err(e),
        Err(e) => {
            dialect::query("ROLLBACK TO SAVEPOINT run")
                .execute(&mut *tx)
                .await?;
            dialect::query("RELEASE SAVEPOINT run")
                .execute(&mut *tx)
                .await?;
            Err(e)
        }
    }
}

/// The notices the set-based path tries: the first of each order and of each
/// payment id in the run. The others wait for the one-by-one path, which
/// sees what the first did and explains them (a duplicate, a second payment,
/// a payment id reused), as it would for concurrent requests.
fn candidates(notices: &[&PaymentNotice]) -> Vec<usize> {
    let mut orders = HashSet::new();
    let mut payments = HashSet::new();
    (0..notices.len())
        .filter(|&i| {
            let n = notices[i];
            let fresh_order = orders.insert(n.order_id.as_str());
            let fresh_payment = payments.insert(n.payment_id.as_str());
            fresh_order && fresh_payment
        })
        .collect()
}

async fn pay_run_statements(
    tx: &mut AnyConnection,
    feed: Feed,
    notices: &[&PaymentNotice],
    now: i64,
) -> Result<RunOutcome, sqlx::Error> {
    let mut decided: RunOutcome = (0..notices.len()).map(|_| None).collect();
    let tried = candidates(notices);
    let paid = transition_run(tx, notices, &tried, now).await?;
    let applied: Vec<usize> = tried
        .into_iter()
        .filter(|&i| paid.contains_key(notices[i].order_id.as_str()))
        .collect();
    if applied.is_empty() {
        return Ok(decided);
    }
    record_run_payments(tx, notices, &applied, now).await?;
    let mut lines = run_lines(tx, notices, &applied).await?;
    history_and_events(tx, notices, &applied, &paid, &mut lines, now).await?;
    // 6. The feed rows, read back one order at a time (this path serves
    // MySQL and SQLite without lanes; the lane and PostgreSQL's own path
    // build them from what they already hold).
    for &i in &applied {
        let order_id = notices[i].order_id.as_str();
        feed::record(&mut *tx, feed, order_id, FeedChange::Paid, now).await?;
    }
    for i in applied {
        decided[i] = Some(Ok(receipt(notices[i], OrderStatus::Paid)));
    }
    Ok(decided)
}

/// 1. Every guarded UNPAID → PAID at once, for payment ids not recorded yet
///    (a recorded one is a duplicate or a reuse: the one-by-one path decides
///    it, and nothing has to be undone). Returns order id → user id.
async fn transition_run(
    tx: &mut AnyConnection,
    notices: &[&PaymentNotice],
    tried: &[usize],
    now: i64,
) -> Result<BTreeMap<String, String>, sqlx::Error> {
    if tried.is_empty() {
        return Ok(BTreeMap::new());
    }
    if dialect::is_mysql(tx) {
        let run: Vec<_> = tried
            .iter()
            .map(|&i| {
                let n = notices[i];
                (
                    n.order_id.as_str(),
                    n.payment_id.as_str(),
                    n.amount.minor_units(),
                )
            })
            .collect();
        return mysql::transition_run(tx, &run, now).await;
    }
    let sql = format!(
        "UPDATE orders SET status = $1, payment_id = v.pid, paid_at = $2, updated_at = $2, \
         order_seq = order_seq + 1 FROM {} AS v \
         WHERE orders.order_id = v.oid AND orders.status = $3 AND orders.amount = v.amt \
           AND NOT EXISTS (SELECT 1 FROM payments WHERE payments.payment_id = v.pid) \
         RETURNING orders.order_id, orders.user_id",
        parameter_table(3, tried.len(), &["oid", "pid", "amt"])
    );
    let mut query = dialect::query(&sql)
        .bind(OrderStatus::Paid.as_str())
        .bind(now)
        .bind(OrderStatus::Unpaid.as_str());
    for &i in tried {
        query = query
            .bind(notices[i].order_id.as_str())
            .bind(notices[i].payment_id.as_str())
            .bind(notices[i].amount.minor_units());
    }
    let mut paid = BTreeMap::new();
    for row in query.fetch_all(&mut *tx).await? {
        paid.insert(row.try_get("order_id")?, row.try_get("user_id")?);
    }
    Ok(paid)
}

/// 2. The payments, once each. A payment id recorded meanwhile (another
///    transaction, on PostgreSQL) fails the run: it is rolled back whole and
///    applied one by one.
async fn record_run_payments(
    tx: &mut AnyConnection,
    notices: &[&PaymentNotice],
    applied: &[usize],
    now: i64,
) -> Result<(), sqlx::Error> {
    let values = (0..applied.len())
        .map(|i| {
            format!(
                "(${}, ${}, ${}, 'APPLIED', $1)",
                2 + 3 * i,
                3 + 3 * i,
                4 + 3 * i
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "INSERT INTO payments (payment_id, order_id, amount, outcome, received_at) VALUES {values} \
         ON CONFLICT (payment_id) DO NOTHING"
    );
    let mut query = dialect::query(&sql).bind(now);
    for &i in applied {
        query = query
            .bind(notices[i].payment_id.as_str())
            .bind(notices[i].order_id.as_str())
            .bind(notices[i].amount.minor_units());
    }
    let recorded = query.execute(&mut *tx).await?.rows_affected();
    if recorded != applied.len() as u64 {
        return Err(sqlx::Error::Protocol(format!(
            "{} of {} payment ids were recorded meanwhile",
            applied.len() as u64 - recorded,
            applied.len()
        )));
    }
    Ok(())
}

/// 3. The paid orders' lines, for their events.
async fn run_lines(
    tx: &mut AnyConnection,
    notices: &[&PaymentNotice],
    applied: &[usize],
) -> Result<BTreeMap<String, Vec<PaidLine>>, sqlx::Error> {
    let sql = format!(
        "SELECT order_id, sku, quantity, unit_price FROM order_lines WHERE order_id IN ({}) \
         ORDER BY order_id, sku",
        placeholders(0, applied.len())
    );
    let mut query = dialect::query(&sql);
    for &i in applied {
        query = query.bind(notices[i].order_id.as_str());
    }
    let mut lines: BTreeMap<String, Vec<PaidLine>> = BTreeMap::new();
    let bad = |e: String| sqlx::Error::Decode(e.into());
    for row in query.fetch_all(&mut *tx).await? {
        let order: String = row.try_get("order_id")?;
        let sku: String = row.try_get("sku")?;
        let line = sql::paid_line(&sku, row.try_get("quantity")?, row.try_get("unit_price")?)
            .map_err(|e| bad(format!("stored line of {order}: {e}")))?;
        lines.entry(order).or_default().push(line);
    }
    Ok(lines)
}

/// 4. History rows and 5. the `OrderPaid` events, one statement each.
async fn history_and_events(
    tx: &mut AnyConnection,
    notices: &[&PaymentNotice],
    applied: &[usize],
    paid: &BTreeMap<String, String>,
    lines: &mut BTreeMap<String, Vec<PaidLine>>,
    now: i64,
) -> Result<(), sqlx::Error> {
    let values = (0..applied.len())
        .map(|i| format!("(${}, $1, $2, $3)", 4 + i))
        .collect::<Vec<_>>()
        .join(", ");
    let sql =
        format!("INSERT INTO order_history (order_id, from_status, to_status, at) VALUES {values}");
    let mut query = dialect::query(&sql)
        .bind(OrderStatus::Unpaid.as_str())
        .bind(OrderStatus::Paid.as_str())
        .bind(now);
    for &i in applied {
        query = query.bind(notices[i].order_id.as_str());
    }
    query.execute(&mut *tx).await?;
    let mut events = Vec::with_capacity(applied.len());
    for &i in applied {
        let notice = notices[i];
        let user_id = &paid[notice.order_id.as_str()];
        events.push(OrderEvent::OrderPaid(OrderPaid {
            order_id: notice.order_id.clone(),
            user_id: UserId::parse(user_id)
                .map_err(|e| sqlx::Error::Decode(e.to_string().into()))?,
            payment_id: notice.payment_id.clone(),
            amount: notice.amount,
            paid_at: now,
            lines: lines.remove(notice.order_id.as_str()).unwrap_or_default(),
        }));
    }
    outbox::enqueue_many(&mut *tx, &events, now).await
}
