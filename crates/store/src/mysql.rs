//! MySQL's forms of the statements its dialect cannot say as the others do:
//! MySQL 8 has no `RETURNING` (MariaDB has it for `INSERT` and `DELETE`,
//! not for `UPDATE`), no `UPDATE … FROM` (it joins instead), no advisory
//! lock that ends with the transaction, and may not update a table that a
//! subquery of the same statement reads. Each function here keeps the
//! guarantee of the statement it stands in for, in a few more round trips:
//! a guarded update still decides alone which rows change, and what is read
//! back is what that update changed, checked by its count.
//!
//! Leaf module: it imports only the base (`sql`, `dialect`).

use std::collections::{BTreeMap, HashSet};

use sqlx::{AnyConnection, Row};

use crate::dialect;
use crate::sql::{self, parameter_table, placeholders};

/// A count that should have been another: the caller's transaction (or
/// savepoint) is rolled back and the work retried or done one by one.
fn mismatch(what: &str, expected: usize, got: u64) -> sqlx::Error {
    sqlx::Error::Protocol(format!("{what}: expected {expected}, got {got}"))
}

/// A reservation of `quantity` of `sku` if that many are free, and the
/// SKU's price; `None` when the guard matched nothing (the other backends'
/// `UPDATE … RETURNING price`).
pub(crate) async fn reserve(
    tx: &mut AnyConnection,
    quantity: i64,
    sku: &str,
) -> Result<Option<i64>, sqlx::Error> {
    let reserved = dialect::query(
        "UPDATE products SET reserved = reserved + $1 WHERE sku = $2 AND on_hand - reserved >= $1",
    )
    .bind(quantity)
    .bind(sku)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if reserved == 0 {
        return Ok(None);
    }
    let row = dialect::query("SELECT price FROM products WHERE sku = $1")
        .bind(sku)
        .fetch_one(&mut *tx)
        .await?;
    Ok(Some(row.try_get("price")?))
}

/// [`sql::PAY_ORDER`] without its `RETURNING`: the guarded update, then the
/// paid order's user. `None` when the guard matched nothing. Parameters as
/// `PAY_ORDER`'s, in its order.
pub(crate) async fn pay_order(
    tx: &mut AnyConnection,
    payment_id: &str,
    now: i64,
    order_id: &str,
    amount: i64,
) -> Result<Option<String>, sqlx::Error> {
    let paid = dialect::query(sql::PAY_ORDER_UPDATE)
        .bind(ordermq_domain::OrderStatus::Paid.as_str())
        .bind(payment_id)
        .bind(now)
        .bind(order_id)
        .bind(ordermq_domain::OrderStatus::Unpaid.as_str())
        .bind(amount)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if paid == 0 {
        return Ok(None);
    }
    let row = dialect::query("SELECT user_id FROM orders WHERE order_id = $1")
        .bind(order_id)
        .fetch_one(&mut *tx)
        .await?;
    Ok(Some(row.try_get("user_id")?))
}

/// One payment of a set-based run: order, payment id, amount.
pub(crate) type RunPayment<'a> = (&'a str, &'a str, i64);

/// The set-based run's guarded UNPAID → PAID, as a join: the same guard as
/// the other backends' `UPDATE … FROM` (status, amount, payment id not
/// recorded), then the orders it paid (this payment's id, at `now`) with
/// their users, their number checked against the update's.
///
/// The join reads the run's rows first and `orders` through its key
/// (`STRAIGHT_JOIN`, `FORCE INDEX`): only the run's own orders, already
/// locked (`locks`). Left to itself InnoDB scanned `orders` (a small table)
/// or its key, and a multi-table `UPDATE` waits for every row it reads —
/// orders another batch holds while waiting for one of these: a deadlock
/// (seen in the store test `batches::hot_sku` on MariaDB once payments no
/// longer locked their products first).
pub(crate) async fn transition_run(
    tx: &mut AnyConnection,
    payments: &[RunPayment<'_>],
    now: i64,
) -> Result<BTreeMap<String, String>, sqlx::Error> {
    let paid = ordermq_domain::OrderStatus::Paid.as_str();
    let sql = format!(
        "UPDATE {} AS v STRAIGHT_JOIN orders FORCE INDEX (PRIMARY) ON orders.order_id = v.oid \
         SET orders.status = $1, orders.payment_id = v.pid, orders.paid_at = $2, orders.updated_at = $2, \
             orders.order_seq = orders.order_seq + 1 \
         WHERE orders.status = $3 AND orders.amount = v.amt \
           AND NOT EXISTS (SELECT 1 FROM payments WHERE payments.payment_id = v.pid)",
        parameter_table(3, payments.len(), &["oid", "pid", "amt"])
    );
    let mut query = dialect::query(&sql)
        .bind(paid)
        .bind(now)
        .bind(ordermq_domain::OrderStatus::Unpaid.as_str());
    for (order, payment, amount) in payments {
        query = query.bind(*order).bind(*payment).bind(*amount);
    }
    let changed = query.execute(&mut *tx).await?.rows_affected();
    let sql = format!(
        "SELECT orders.order_id, orders.user_id FROM orders JOIN {} AS v \
           ON orders.order_id = v.oid AND orders.payment_id = v.pid \
         WHERE orders.status = $1 AND orders.paid_at = $2",
        parameter_table(2, payments.len(), &["oid", "pid"])
    );
    let mut query = dialect::query(&sql).bind(paid).bind(now);
    for (order, payment, _) in payments {
        query = query.bind(*order).bind(*payment);
    }
    let mut users = BTreeMap::new();
    for row in query.fetch_all(&mut *tx).await? {
        users.insert(row.try_get("order_id")?, row.try_get("user_id")?);
    }
    if users.len() as u64 != changed {
        // An order paid by this payment id earlier in the same millisecond
        // reads as paid now: let the one-by-one path decide.
        return Err(mismatch("orders paid by the run", users.len(), changed));
    }
    Ok(users)
}

/// The inbox rows of a batch, for the effect writer: which of `events`
/// (group `group`; order id and message id each) are new. The ones already
/// in the inbox are read first, then the rest inserted with `INSERT IGNORE`;
/// if another writer inserted one of them in between, the counts differ
/// and the batch is rolled back and redelivered.
pub(crate) async fn insert_inbox(
    tx: &mut AnyConnection,
    group: &str,
    events: &[(&str, &str, &str)],
    now: i64,
) -> Result<HashSet<String>, sqlx::Error> {
    let sql = format!(
        "SELECT event_id FROM inbox WHERE consumer_group = $1 AND event_id IN ({})",
        placeholders(1, events.len())
    );
    let mut query = dialect::query(&sql).bind(group);
    for (event, _, _) in events {
        query = query.bind(*event);
    }
    let mut seen = HashSet::new();
    for row in query.fetch_all(&mut *tx).await? {
        seen.insert(row.try_get::<String, _>("event_id")?);
    }
    let mut fresh = HashSet::new();
    let new: Vec<_> = events
        .iter()
        .filter(|(event, _, _)| !seen.contains(*event) && fresh.insert((*event).to_owned()))
        .collect();
    if new.is_empty() {
        return Ok(fresh);
    }
    let values = (0..new.len())
        .map(|i| format!("($1, ${}, ${}, ${}, $2)", 3 * i + 3, 3 * i + 4, 3 * i + 5))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!("{}{values}{}", sql::INBOX_INSERT, sql::INBOX_ON_CONFLICT);
    let mut query = dialect::query(&sql).bind(group).bind(now);
    for (event, order, msg) in &new {
        query = query.bind(*event).bind(*order).bind(*msg);
    }
    let inserted = query.execute(&mut *tx).await?.rows_affected();
    if inserted != new.len() as u64 {
        return Err(mismatch("new inbox rows", new.len(), inserted));
    }
    Ok(fresh)
}

/// Takes `user`'s row lock until the transaction ends (PostgreSQL's
/// advisory lock, as a row of `user_locks`): concurrent creates of one user
/// take turns.
pub(crate) async fn lock_user(tx: &mut AnyConnection, user: &str) -> Result<(), sqlx::Error> {
    dialect::query(
        "INSERT INTO user_locks (user_id) VALUES ($1) ON DUPLICATE KEY UPDATE user_id = user_id",
    )
    .bind(user)
    .execute(&mut *tx)
    .await
    .map(|_| ())
}
