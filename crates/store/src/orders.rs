//! Catalog, order creation and payment: the order system's own tables.
//!
//! Stock has two counters per product: `on_hand` (physically there) and
//! `reserved` (held by unpaid orders). Creating an order reserves; paying
//! turns the reservation into a deduction. A CHECK keeps
//! `0 <= reserved <= on_hand`, so no interleaving can oversell.

use std::collections::BTreeMap;

use ordermq_domain::event::{OrderCloseDue, PaidLine};
use ordermq_domain::ports::StorageError;
use ordermq_domain::view::{
    OrderLineView, OrderView, PaymentReceipt, Stats, StatusChange, SystemStats,
};
use ordermq_domain::{
    Amount, CreateOrderError, EventKind, FanoutState, NewOrder, OrderEvent, OrderId, OrderPaid,
    OrderStatus, OutboxMessage, PayOrderError, PaymentId, PaymentNotice, Product, Sku, System,
    UserId,
};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::lifecycle::CloseOutcome;
use crate::{Backend, Store, corrupt, status_of, storage};

/// A product of the demo catalog seeded on first start.
#[derive(Debug, Clone, Copy)]
pub struct DemoProduct {
    pub sku: &'static str,
    pub name: &'static str,
    pub price: i64,
    pub stock: i64,
}

fn get<T>(row: &AnyRow, column: &str) -> Result<T, StorageError>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get(column).map_err(storage)
}

pub(crate) async fn record_history(
    conn: &mut AnyConnection,
    order_id: &str,
    from: Option<OrderStatus>,
    to: OrderStatus,
    at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO order_history (order_id, from_status, to_status, at) VALUES ($1, $2, $3, $4)",
    )
    .bind(order_id)
    .bind(from.map(OrderStatus::as_str))
    .bind(to.as_str())
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

impl Store {
    /// Inserts the products that are not there yet; existing rows are untouched.
    pub async fn seed_catalog(&self, products: &[DemoProduct]) -> Result<usize, StorageError> {
        let _gate = self.write_gate(crate::Db::Orders).await;
        let mut inserted = 0;
        for p in products {
            let done = sqlx::query(
                "INSERT INTO products (sku, name, price, on_hand, reserved) VALUES ($1, $2, $3, $4, 0) \
                 ON CONFLICT (sku) DO NOTHING",
            )
            .bind(p.sku)
            .bind(p.name)
            .bind(p.price)
            .bind(p.stock)
            .execute(&self.orders)
            .await
            .map_err(storage)?;
            inserted += done.rows_affected() as usize;
        }
        Ok(inserted)
    }

    /// Sets a product's stock outright (tests and operators); reservations are cleared.
    pub async fn upsert_product(&self, product: &DemoProduct) -> Result<(), StorageError> {
        let _gate = self.write_gate(crate::Db::Orders).await;
        sqlx::query(
            "INSERT INTO products (sku, name, price, on_hand, reserved) VALUES ($1, $2, $3, $4, 0) \
             ON CONFLICT (sku) DO UPDATE SET name = $2, price = $3, on_hand = $4, reserved = 0",
        )
        .bind(product.sku)
        .bind(product.name)
        .bind(product.price)
        .bind(product.stock)
        .execute(&self.orders)
        .await
        .map_err(storage)?;
        Ok(())
    }

    pub async fn products(&self) -> Result<Vec<Product>, StorageError> {
        let rows = sqlx::query(
            "SELECT sku, name, price, on_hand - reserved AS available FROM products ORDER BY sku",
        )
        .fetch_all(&self.orders)
        .await
        .map_err(storage)?;
        rows.iter()
            .map(|row| {
                let sku: String = get(row, "sku")?;
                Ok(Product {
                    sku: Sku::parse(&sku).map_err(|_| corrupt("sku", &sku))?,
                    name: get(row, "name")?,
                    price: Amount::parse(get(row, "price")?).map_err(|_| corrupt("price", &sku))?,
                    stock: get(row, "available")?,
                })
            })
            .collect()
    }

    /// Stock of one SKU as `(on_hand, reserved)`.
    pub async fn stock(&self, sku: &str) -> Result<Option<(i64, i64)>, StorageError> {
        let row = sqlx::query("SELECT on_hand, reserved FROM products WHERE sku = $1")
            .bind(sku)
            .fetch_optional(&self.orders)
            .await
            .map_err(storage)?;
        row.map(|r| Ok((get(&r, "on_hand")?, get(&r, "reserved")?)))
            .transpose()
    }

    /// Creates an UNPAID order and reserves its stock, all or nothing; its
    /// close, `close_after_ms` later, is scheduled in the same transaction.
    pub async fn create_order(
        &self,
        order: &NewOrder,
        order_id: &OrderId,
        now: i64,
        close_after_ms: Option<i64>,
    ) -> Result<OrderView, CreateOrderError> {
        let fail = |e: sqlx::Error| CreateOrderError::Storage(e.to_string());
        let _gate = self.write_gate(crate::Db::Orders).await;
        let mut tx = self.orders.begin().await.map_err(fail)?;
        let view = create_order_in(&mut tx, order, order_id, now, close_after_ms).await?;
        tx.commit().await.map_err(fail)?;
        Ok(view)
    }

    /// Applies a payment notice in one transaction: UNPAID → PAID, reservation →
    /// deduction, the payment recorded and an `OrderPaid` event in the outbox.
    ///
    /// The same payment notified again changes nothing. A different payment for
    /// an order that can no longer take one is recorded as owed back
    /// (`refund_required`), never dropped.
    pub async fn pay_order(
        &self,
        notice: &PaymentNotice,
        now: i64,
    ) -> Result<PaymentReceipt, PayOrderError> {
        let fail = |e: sqlx::Error| PayOrderError::Storage(e.to_string());
        let _gate = self.write_gate(crate::Db::Orders).await;
        let mut tx = self.orders.begin().await.map_err(fail)?;
        let receipt = pay_order_in(&mut tx, notice, now).await?;
        tx.commit().await.map_err(fail)?;
        Ok(receipt)
    }

    /// Runs many creates and payments in **one** transaction (group commit): one
    /// fsync for the whole batch instead of one per request. Each operation runs
    /// inside its own savepoint, so a rejected one (out of stock, amount
    /// mismatch, …) is rolled back alone and the others still commit. Results
    /// come back in order; if the commit itself fails, every operation fails.
    ///
    /// On SQLite, the payments that apply and the relay's rounds run first, on
    /// the order database's lane (see `sqlite_lane`) in one transaction; the
    /// rest (creates, closes, payments that need explaining) follow through
    /// the general path in a second one.
    pub async fn write_batch(&self, ops: &[WriteOp], now: i64) -> Vec<WriteResult> {
        /// A fast-path batch slower than this is logged with where its time went.
        const SLOW_COMMIT: std::time::Duration = std::time::Duration::from_millis(50);
        let Some(lanes) = &self.lanes else {
            return self.write_batch_general(ops, now).await;
        };
        let fast: Vec<usize> = (0..ops.len())
            .filter(|&i| matches!(ops[i], WriteOp::Pay(_) | WriteOp::RelayOutbox { .. }))
            .collect();
        if fast.is_empty() {
            return self.write_batch_general(ops, now).await;
        }
        let payments: Vec<PaymentNotice> = fast
            .iter()
            .filter_map(|&i| match &ops[i] {
                WriteOp::Pay(notice) => Some(notice.clone()),
                _ => None,
            })
            .collect();
        let rounds: Vec<crate::sqlite_lane::RelayRound> = fast
            .iter()
            .filter_map(|&i| match &ops[i] {
                WriteOp::RelayOutbox {
                    owner,
                    acked,
                    limit,
                    lease_ms,
                } => Some(crate::sqlite_lane::RelayRound {
                    owner: owner.clone(),
                    acked: acked.clone(),
                    limit: *limit,
                    lease_ms: *lease_ms,
                }),
                _ => None,
            })
            .collect();
        let asked = std::time::Instant::now();
        let (outcome, gated) = {
            let _gate = self.write_gate(crate::Db::Orders).await;
            let gated = asked.elapsed();
            let sent = std::time::Instant::now();
            let outcome = lanes
                .orders
                .run(move |conn| {
                    let queued = sent.elapsed();
                    crate::sqlite_lane::pay_batch(conn, &payments, &rounds, now)
                        .map(|mut batch| {
                            batch.timing.queued = queued;
                            batch
                        })
                        .map_err(|e| e.to_string())
                })
                .await;
            (outcome, gated)
        };
        let took = asked.elapsed();
        if let Ok(Ok(batch)) = &outcome
            && took > SLOW_COMMIT
        {
            // Which part was slow tells disk (commit) from CPU (statements,
            // or a lane thread waiting to be scheduled) from other writers
            // (the gate).
            tracing::warn!(
                took_ms = took.as_millis() as u64,
                gate_ms = gated.as_millis() as u64,
                lane_queue_ms = batch.timing.queued.as_millis() as u64,
                statements_ms = batch.timing.statements.as_millis() as u64,
                commit_ms = batch.timing.commit.as_millis() as u64,
                payments = batch.payments.len(),
                "slow order-database commit"
            );
        }
        let mut results: Vec<Option<WriteResult>> = (0..ops.len()).map(|_| None).collect();
        match outcome {
            Ok(Ok(batch)) => {
                let mut paid = batch.payments.into_iter();
                let mut claimed = batch.relay.into_iter();
                for &i in &fast {
                    results[i] = match &ops[i] {
                        WriteOp::Pay(_) => match paid.next() {
                            Some(crate::sqlite_lane::FastPay::Paid(r)) => {
                                Some(WriteResult::Paid(r))
                            }
                            _ => None,
                        },
                        _ => claimed.next().map(|r| {
                            WriteResult::Relayed(r.map_err(|e| StorageError(e.to_string())))
                        }),
                    };
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "fast write path failed; retrying on the general path")
            }
            Err(e) => {
                tracing::warn!(error = %e, "fast write path unavailable; using the general path")
            }
        }
        let rest: Vec<usize> = (0..ops.len()).filter(|&i| results[i].is_none()).collect();
        if !rest.is_empty() {
            let rest_ops: Vec<WriteOp> = rest.iter().map(|&i| ops[i].clone()).collect();
            for (i, result) in rest
                .into_iter()
                .zip(self.write_batch_general(&rest_ops, now).await)
            {
                results[i] = Some(result);
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every operation was decided"))
            .collect()
    }

    /// [`Store::write_batch`] through sqlx, for every backend and operation.
    async fn write_batch_general(&self, ops: &[WriteOp], now: i64) -> Vec<WriteResult> {
        let storage_failure = |ops: &[WriteOp], reason: String| -> Vec<WriteResult> {
            ops.iter().map(|op| op.failed(reason.clone())).collect()
        };
        let _gate = self.write_gate(crate::Db::Orders).await;
        let mut tx = match self.orders.begin().await {
            Ok(tx) => tx,
            Err(e) => return storage_failure(ops, e.to_string()),
        };
        // A batch of one needs no savepoint: the transaction is its savepoint.
        if let [op] = ops {
            let result = apply_op(&mut tx, self.backend, op, now).await;
            if !result.is_ok() {
                // Rejected: nothing of it may stay.
                let _ = tx.rollback().await;
                return vec![result];
            }
            return match tx.commit().await {
                Ok(()) => vec![result],
                Err(e) => storage_failure(ops, e.to_string()),
            };
        }
        let mut results: Vec<Option<WriteResult>> = (0..ops.len()).map(|_| None).collect();
        // Runs of consecutive payments are applied set-based first: a few
        // statements for the whole run instead of several per payment (every
        // statement is a round trip to the database's worker thread). What
        // the fast path cannot decide goes through the one-by-one path below.
        let mut start = 0;
        while start < ops.len() {
            let run = ops[start..]
                .iter()
                .take_while(|op| matches!(op, WriteOp::Pay(_)))
                .count()
                .min(PAYMENTS_PER_RUN);
            if run < 2 {
                start += 1;
                continue;
            }
            let notices: Vec<&PaymentNotice> = ops[start..start + run]
                .iter()
                .filter_map(|op| match op {
                    WriteOp::Pay(notice) => Some(notice),
                    _ => None,
                })
                .collect();
            match pay_run_set_based(&mut tx, &notices, now).await {
                Ok(decided) => {
                    for (offset, outcome) in decided.into_iter().enumerate() {
                        results[start + offset] = outcome.map(WriteResult::Paid);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "set-based payment run failed; applying one by one");
                }
            }
            start += run;
        }
        // The relay's claims last, so they see the events written before them.
        let relay_last = (0..ops.len())
            .filter(|&i| !matches!(ops[i], WriteOp::RelayOutbox { .. }))
            .chain((0..ops.len()).filter(|&i| matches!(ops[i], WriteOp::RelayOutbox { .. })));
        for index in relay_last {
            let op = &ops[index];
            if results[index].is_some() {
                continue;
            }
            if let Err(e) = sqlx::query("SAVEPOINT op").execute(&mut *tx).await {
                return storage_failure(ops, e.to_string());
            }
            let result = apply_op(&mut tx, self.backend, op, now).await;
            let end = if result.is_ok() {
                "RELEASE SAVEPOINT op"
            } else {
                "ROLLBACK TO SAVEPOINT op"
            };
            if let Err(e) = sqlx::query(end).execute(&mut *tx).await {
                return storage_failure(ops, e.to_string());
            }
            if !result.is_ok()
                && let Err(e) = sqlx::query("RELEASE SAVEPOINT op").execute(&mut *tx).await
            {
                return storage_failure(ops, e.to_string());
            }
            results[index] = Some(result);
        }
        let committing = std::time::Instant::now();
        let committed = tx.commit().await;
        let took = committing.elapsed();
        if took > std::time::Duration::from_millis(100) {
            // The disk's flush, almost always: worth knowing when payments slow down.
            tracing::warn!(
                took_ms = took.as_millis() as u64,
                operations = ops.len(),
                "slow commit"
            );
        }
        match committed {
            Ok(()) => results
                .into_iter()
                .map(|r| r.expect("every operation was decided"))
                .collect(),
            Err(e) => storage_failure(ops, e.to_string()),
        }
    }
}

/// Most payments in one set-based run (bounded by the backends' parameter limits).
const PAYMENTS_PER_RUN: usize = 200;

/// `(SELECT $a AS c1, $b AS c2 UNION ALL SELECT $c, $d ...)`: a parameter
/// table both SQLite and PostgreSQL accept in `FROM`, starting after `offset`
/// parameters, `rows` rows of `columns`.
fn parameter_table(offset: usize, rows: usize, columns: &[&str]) -> String {
    let mut p = offset;
    let selects = (0..rows)
        .map(|row| {
            let cells = columns
                .iter()
                .map(|name| {
                    p += 1;
                    if row == 0 {
                        format!("${p} AS {name}")
                    } else {
                        format!("${p}")
                    }
                })
                .collect::<Vec<_>>()
                .join(", ");
            format!("SELECT {cells}")
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    format!("({selects})")
}

/// Applies a run of payments with a handful of statements, inside a savepoint
/// (an error rolls the whole run back and the caller applies it one by one).
/// Returns, per notice, the receipt of a payment applied here, or `None` for
/// one this path does not decide (not payable as notified, a duplicate in the
/// run): those go through [`pay_order_in`], which explains them.
async fn pay_run_set_based(
    tx: &mut AnyConnection,
    notices: &[&PaymentNotice],
    now: i64,
) -> Result<Vec<Option<Result<PaymentReceipt, PayOrderError>>>, sqlx::Error> {
    sqlx::query("SAVEPOINT run").execute(&mut *tx).await?;
    match pay_run_statements(tx, notices, now).await {
        Ok(decided) => {
            sqlx::query("RELEASE SAVEPOINT run")
                .execute(&mut *tx)
                .await?;
            Ok(decided)
        }
        Err(e) => {
            sqlx::query("ROLLBACK TO SAVEPOINT run")
                .execute(&mut *tx)
                .await?;
            sqlx::query("RELEASE SAVEPOINT run")
                .execute(&mut *tx)
                .await?;
            Err(e)
        }
    }
}

async fn pay_run_statements(
    tx: &mut AnyConnection,
    notices: &[&PaymentNotice],
    now: i64,
) -> Result<Vec<Option<Result<PaymentReceipt, PayOrderError>>>, sqlx::Error> {
    // 1. Every guarded UNPAID → PAID at once. Where several notices name one
    //    order, the database applies one of them; RETURNING says which.
    let sql = format!(
        "UPDATE orders SET status = $1, payment_id = v.pid, paid_at = $2, updated_at = $2 \
         FROM {} AS v \
         WHERE orders.order_id = v.oid AND orders.status = $3 AND orders.amount = v.amt \
         RETURNING orders.order_id, orders.user_id, orders.payment_id",
        parameter_table(3, notices.len(), &["oid", "pid", "amt"])
    );
    let mut query = sqlx::query(&sql)
        .bind(OrderStatus::Paid.as_str())
        .bind(now)
        .bind(OrderStatus::Unpaid.as_str());
    for notice in notices {
        query = query
            .bind(notice.order_id.as_str())
            .bind(notice.payment_id.as_str())
            .bind(notice.amount.minor_units());
    }
    // order id → (user id, the payment applied)
    let mut paid: BTreeMap<String, (String, String)> = BTreeMap::new();
    for row in query.fetch_all(&mut *tx).await? {
        paid.insert(
            row.try_get("order_id")?,
            (row.try_get("user_id")?, row.try_get("payment_id")?),
        );
    }
    // The notice each transition belongs to (the first matching one).
    let mut winner: Vec<bool> = vec![false; notices.len()];
    let mut claimed = std::collections::HashSet::new();
    for (i, notice) in notices.iter().enumerate() {
        if let Some((_, payment)) = paid.get(notice.order_id.as_str())
            && payment == notice.payment_id.as_str()
            && claimed.insert(notice.order_id.as_str())
        {
            winner[i] = true;
        }
    }
    let winners: Vec<&PaymentNotice> = notices
        .iter()
        .zip(&winner)
        .filter(|(_, w)| **w)
        .map(|(n, _)| *n)
        .collect();
    let mut decided: Vec<Option<Result<PaymentReceipt, PayOrderError>>> =
        (0..notices.len()).map(|_| None).collect();
    if winners.is_empty() {
        return Ok(decided);
    }

    // 2. The payments, once each: a payment id that already paid another
    //    order is refused and its transition undone.
    let values = (0..winners.len())
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
         ON CONFLICT (payment_id) DO NOTHING RETURNING payment_id, order_id"
    );
    let mut query = sqlx::query(&sql).bind(now);
    for notice in &winners {
        query = query
            .bind(notice.payment_id.as_str())
            .bind(notice.order_id.as_str())
            .bind(notice.amount.minor_units());
    }
    let mut recorded = std::collections::HashSet::new();
    for row in query.fetch_all(&mut *tx).await? {
        let order: String = row.try_get("order_id")?;
        recorded.insert(order);
    }
    let mut applied: Vec<&PaymentNotice> = Vec::with_capacity(winners.len());
    for notice in &winners {
        if recorded.contains(notice.order_id.as_str()) {
            applied.push(notice);
            continue;
        }
        sqlx::query(
            "UPDATE orders SET status = $1, payment_id = NULL, paid_at = NULL WHERE order_id = $2",
        )
        .bind(OrderStatus::Unpaid.as_str())
        .bind(notice.order_id.as_str())
        .execute(&mut *tx)
        .await?;
        let i = notices
            .iter()
            .position(|n| std::ptr::eq(*n, *notice))
            .expect("a winner is one of the notices");
        decided[i] = Some(Err(PayOrderError::PaymentIdReused {
            payment_id: notice.payment_id.to_string(),
        }));
    }
    if applied.is_empty() {
        return Ok(decided);
    }

    // 3. Their lines, and 4. every reservation turned into a deduction, one
    //    row per SKU (the CHECK constraints refuse anything negative).
    let sql = format!(
        "SELECT order_id, sku, quantity, unit_price FROM order_lines WHERE order_id IN ({}) \
         ORDER BY order_id, sku",
        crate::placeholders(0, applied.len())
    );
    let mut query = sqlx::query(&sql);
    for notice in &applied {
        query = query.bind(notice.order_id.as_str());
    }
    let mut lines: BTreeMap<String, Vec<PaidLine>> = BTreeMap::new();
    let mut per_sku: BTreeMap<String, i64> = BTreeMap::new();
    for row in query.fetch_all(&mut *tx).await? {
        let order: String = row.try_get("order_id")?;
        let sku: String = row.try_get("sku")?;
        let quantity: i64 = row.try_get("quantity")?;
        let unit_price: i64 = row.try_get("unit_price")?;
        *per_sku.entry(sku.clone()).or_default() += quantity;
        let bad = |e: ordermq_domain::ValidationError| sqlx::Error::Decode(e.to_string().into());
        lines.entry(order).or_default().push(PaidLine {
            sku: Sku::parse(&sku).map_err(bad)?,
            quantity: u32::try_from(quantity)
                .map_err(|e| sqlx::Error::Decode(e.to_string().into()))?,
            unit_price: Amount::parse(unit_price).map_err(bad)?,
        });
    }
    let sql = format!(
        "UPDATE products SET on_hand = on_hand - v.q, reserved = reserved - v.q FROM {} AS v \
         WHERE products.sku = v.s AND products.reserved >= v.q AND products.on_hand >= v.q",
        parameter_table(0, per_sku.len(), &["s", "q"])
    );
    let mut query = sqlx::query(&sql);
    for (sku, quantity) in &per_sku {
        query = query.bind(sku.as_str()).bind(*quantity);
    }
    let deducted = query.execute(&mut *tx).await?.rows_affected();
    if deducted != per_sku.len() as u64 {
        return Err(sqlx::Error::Protocol(format!(
            "reservations missing: {deducted} of {} SKUs deducted",
            per_sku.len()
        )));
    }

    // 5. History rows and 6. the OrderPaid events, one statement each.
    let values = (0..applied.len())
        .map(|i| format!("(${}, $1, $2, $3)", 4 + i))
        .collect::<Vec<_>>()
        .join(", ");
    let sql =
        format!("INSERT INTO order_history (order_id, from_status, to_status, at) VALUES {values}");
    let mut query = sqlx::query(&sql)
        .bind(OrderStatus::Unpaid.as_str())
        .bind(OrderStatus::Paid.as_str())
        .bind(now);
    for notice in &applied {
        query = query.bind(notice.order_id.as_str());
    }
    query.execute(&mut *tx).await?;
    let mut events = Vec::with_capacity(applied.len());
    for notice in &applied {
        let (user_id, _) = &paid[notice.order_id.as_str()];
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
    crate::outbox::enqueue_many(&mut *tx, &events, now).await?;
    for (i, notice) in notices.iter().enumerate() {
        if winner[i] && decided[i].is_none() {
            decided[i] = Some(Ok(PaymentReceipt {
                order_id: notice.order_id.clone(),
                status: OrderStatus::Paid,
                duplicate: false,
                refund_required: false,
            }));
        }
    }
    Ok(decided)
}

/// Runs one operation inside the caller's transaction.
async fn apply_op(tx: &mut AnyConnection, backend: Backend, op: &WriteOp, now: i64) -> WriteResult {
    match op {
        WriteOp::Create {
            order,
            order_id,
            close_after_ms,
        } => WriteResult::Created(
            create_order_in(&mut *tx, order, order_id, now, *close_after_ms).await,
        ),
        WriteOp::Pay(notice) => WriteResult::Paid(pay_order_in(&mut *tx, notice, now).await),
        WriteOp::Close(order_id) => WriteResult::Closed(
            crate::lifecycle::close_order_in(&mut *tx, order_id, now)
                .await
                .map_err(storage),
        ),
        WriteOp::RelayOutbox {
            owner,
            acked,
            limit,
            lease_ms,
        } => WriteResult::Relayed(
            crate::outbox::ack_and_claim_in(
                &mut *tx, backend, owner, acked, *limit, *lease_ms, now,
            )
            .await
            .map_err(storage),
        ),
    }
}

/// One write of the order database, for [`Store::write_batch`].
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Creates an order that closes itself `close_after_ms` after creation if
    /// unpaid (`None`: never; tools that load data only).
    Create {
        order: NewOrder,
        order_id: OrderId,
        close_after_ms: Option<i64>,
    },
    Pay(PaymentNotice),
    /// Closes the order if it is still unpaid and due.
    Close(OrderId),
    /// The outbox relay's round: marks `acked` rows sent and claims up to
    /// `limit` due rows for `lease_ms`. Riding in a batch, it shares the
    /// payments' commit (and fsync) instead of taking turns with them for the
    /// database's one write lock; it runs after the batch's other operations,
    /// so it already claims the events they wrote.
    RelayOutbox {
        owner: String,
        acked: Vec<i64>,
        limit: usize,
        lease_ms: i64,
    },
}

/// The outcome of one [`WriteOp`].
#[derive(Debug)]
pub enum WriteResult {
    Created(Result<OrderView, CreateOrderError>),
    Paid(Result<PaymentReceipt, PayOrderError>),
    Closed(Result<CloseOutcome, StorageError>),
    Relayed(Result<Vec<OutboxMessage>, StorageError>),
}

impl WriteResult {
    fn is_ok(&self) -> bool {
        match self {
            Self::Created(r) => r.is_ok(),
            Self::Paid(r) => r.is_ok(),
            Self::Closed(r) => r.is_ok(),
            Self::Relayed(r) => r.is_ok(),
        }
    }
}

impl WriteOp {
    fn failed(&self, reason: String) -> WriteResult {
        match self {
            Self::Create { .. } => WriteResult::Created(Err(CreateOrderError::Storage(reason))),
            Self::Pay(_) => WriteResult::Paid(Err(PayOrderError::Storage(reason))),
            Self::Close(_) => WriteResult::Closed(Err(StorageError(reason))),
            Self::RelayOutbox { .. } => WriteResult::Relayed(Err(StorageError(reason))),
        }
    }
}

async fn create_order_in(
    tx: &mut AnyConnection,
    order: &NewOrder,
    order_id: &OrderId,
    now: i64,
    close_after_ms: Option<i64>,
) -> Result<OrderView, CreateOrderError> {
    let fail = |e: sqlx::Error| CreateOrderError::Storage(e.to_string());
    let mut amount = Amount::ZERO;
    let mut lines = Vec::with_capacity(order.lines().len());
    // Lines are sorted by SKU, so concurrent orders lock rows in one order.
    for line in order.lines() {
        let quantity = i64::from(line.quantity.get());
        // One statement reserves and reads the price; only a refusal needs a
        // second one, to tell an unknown SKU from too little stock.
        let reserved = sqlx::query(
            "UPDATE products SET reserved = reserved + $1 \
                 WHERE sku = $2 AND on_hand - reserved >= $1 RETURNING price",
        )
        .bind(quantity)
        .bind(line.sku.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(fail)?;
        let Some(reserved) = reserved else {
            let row =
                sqlx::query("SELECT on_hand - reserved AS available FROM products WHERE sku = $1")
                    .bind(line.sku.as_str())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(fail)?;
            return Err(match row {
                None => CreateOrderError::UnknownSku(line.sku.to_string()),
                Some(row) => CreateOrderError::OutOfStock {
                    sku: line.sku.to_string(),
                    available: row.try_get("available").map_err(fail)?,
                    requested: line.quantity.get(),
                },
            });
        };
        let unit_price = Amount::parse(reserved.try_get("price").map_err(fail)?)
            .map_err(|e| CreateOrderError::Storage(e.to_string()))?;
        amount = unit_price
            .checked_mul(line.quantity)
            .and_then(|line_total| amount.checked_add(line_total))
            .ok_or(CreateOrderError::AmountOverflow)?;
        lines.push(OrderLineView {
            sku: line.sku.clone(),
            quantity: line.quantity.get(),
            unit_price,
            refunded: 0,
        });
    }
    let close_at = close_after_ms.map(|after| now.saturating_add(after.max(0)));
    sqlx::query(
            "INSERT INTO orders (order_id, user_id, status, amount, payment_id, created_at, paid_at, updated_at, close_at) \
             VALUES ($1, $2, $3, $4, NULL, $5, NULL, $5, $6)",
        )
        .bind(order_id.as_str())
        .bind(order.user_id().as_str())
        .bind(OrderStatus::Unpaid.as_str())
        .bind(amount.minor_units())
        .bind(now)
        .bind(close_at)
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
    for line in &lines {
        sqlx::query(
            "INSERT INTO order_lines (order_id, sku, quantity, unit_price) VALUES ($1, $2, $3, $4)",
        )
        .bind(order_id.as_str())
        .bind(line.sku.as_str())
        .bind(i64::from(line.quantity))
        .bind(line.unit_price.minor_units())
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
    }
    record_history(&mut *tx, order_id.as_str(), None, OrderStatus::Unpaid, now)
        .await
        .map_err(fail)?;
    // The close travels with the order: the broker delivers it at `close_at`.
    if let Some(close_at) = close_at {
        let close = OrderEvent::OrderCloseDue(OrderCloseDue {
            order_id: order_id.clone(),
            due_at: close_at,
        });
        crate::outbox::enqueue(&mut *tx, &close, Some(close_at), now)
            .await
            .map_err(fail)?;
    }
    Ok(OrderView {
        order_id: order_id.clone(),
        user_id: order.user_id().clone(),
        status: OrderStatus::Unpaid,
        amount,
        payment_id: None,
        created_at: now,
        paid_at: None,
        close_at,
        lines,
        fanout: System::ALL
            .into_iter()
            .map(|s| (s, FanoutState::Pending))
            .collect(),
        history: vec![StatusChange {
            from: None,
            to: OrderStatus::Unpaid,
            at: now,
        }],
        consumers: Vec::new(),
        refunds: Vec::new(),
    })
}

async fn pay_order_in(
    tx: &mut AnyConnection,
    notice: &PaymentNotice,
    now: i64,
) -> Result<PaymentReceipt, PayOrderError> {
    let fail = |e: sqlx::Error| PayOrderError::Storage(e.to_string());
    let order_id = notice.order_id.as_str();
    let transitioned = sqlx::query(
        "UPDATE orders SET status = $1, payment_id = $2, paid_at = $3, updated_at = $3 \
             WHERE order_id = $4 AND status = $5 AND amount = $6 RETURNING user_id",
    )
    .bind(OrderStatus::Paid.as_str())
    .bind(notice.payment_id.as_str())
    .bind(now)
    .bind(order_id)
    .bind(OrderStatus::Unpaid.as_str())
    .bind(notice.amount.minor_units())
    .fetch_optional(&mut *tx)
    .await
    .map_err(fail)?;
    let Some(transitioned) = transitioned else {
        return explain_unapplied_payment(tx, notice, now).await;
    };
    let user_id: String = transitioned.try_get("user_id").map_err(fail)?;

    let recorded = sqlx::query(
        "INSERT INTO payments (payment_id, order_id, amount, outcome, received_at) \
             VALUES ($1, $2, $3, 'APPLIED', $4) ON CONFLICT (payment_id) DO NOTHING",
    )
    .bind(notice.payment_id.as_str())
    .bind(order_id)
    .bind(notice.amount.minor_units())
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(fail)?;
    if recorded.rows_affected() == 0 {
        // This payment id already paid another order; roll the transition back.
        return Err(PayOrderError::PaymentIdReused {
            payment_id: notice.payment_id.to_string(),
        });
    }

    let line_rows = sqlx::query(
        "SELECT sku, quantity, unit_price FROM order_lines WHERE order_id = $1 ORDER BY sku",
    )
    .bind(order_id)
    .fetch_all(&mut *tx)
    .await
    .map_err(fail)?;
    let mut lines = Vec::with_capacity(line_rows.len());
    for row in &line_rows {
        let sku: String = row.try_get("sku").map_err(fail)?;
        let quantity: i64 = row.try_get("quantity").map_err(fail)?;
        let deducted = sqlx::query(
            "UPDATE products SET on_hand = on_hand - $1, reserved = reserved - $1 \
                 WHERE sku = $2 AND reserved >= $1 AND on_hand >= $1",
        )
        .bind(quantity)
        .bind(sku.as_str())
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
        if deducted.rows_affected() != 1 {
            return Err(PayOrderError::Storage(format!(
                "reservation of {quantity} x {sku} for order {order_id} is missing"
            )));
        }
        lines.push(PaidLine {
            sku: Sku::parse(&sku).map_err(|e| PayOrderError::Storage(e.to_string()))?,
            quantity: quantity as u32,
            unit_price: Amount::parse(row.try_get("unit_price").map_err(fail)?)
                .map_err(|e| PayOrderError::Storage(e.to_string()))?,
        });
    }
    record_history(
        &mut *tx,
        order_id,
        Some(OrderStatus::Unpaid),
        OrderStatus::Paid,
        now,
    )
    .await
    .map_err(fail)?;
    let event = OrderEvent::OrderPaid(OrderPaid {
        order_id: notice.order_id.clone(),
        user_id: UserId::parse(&user_id).map_err(|e| PayOrderError::Storage(e.to_string()))?,
        payment_id: notice.payment_id.clone(),
        amount: notice.amount,
        paid_at: now,
        lines,
    });
    crate::outbox::enqueue(&mut *tx, &event, None, now)
        .await
        .map_err(fail)?;
    Ok(PaymentReceipt {
        order_id: notice.order_id.clone(),
        status: OrderStatus::Paid,
        duplicate: false,
        refund_required: false,
    })
}

/// The guarded update matched nothing: find out why, inside the same transaction.
async fn explain_unapplied_payment(
    tx: &mut AnyConnection,
    notice: &PaymentNotice,
    now: i64,
) -> Result<PaymentReceipt, PayOrderError> {
    let fail = |e: sqlx::Error| PayOrderError::Storage(e.to_string());
    let row =
        sqlx::query("SELECT status, amount, payment_id, user_id FROM orders WHERE order_id = $1")
            .bind(notice.order_id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(fail)?;
    let Some(row) = row else {
        return Err(PayOrderError::OrderNotFound(notice.order_id.to_string()));
    };
    let status_raw: String = row.try_get("status").map_err(fail)?;
    let status = status_of(&status_raw).map_err(|e| PayOrderError::Storage(e.to_string()))?;
    let expected: i64 = row.try_get("amount").map_err(fail)?;
    let applied: Option<String> = row.try_get("payment_id").map_err(fail)?;
    if expected != notice.amount.minor_units() {
        return Err(PayOrderError::AmountMismatch {
            expected,
            notified: notice.amount.minor_units(),
        });
    }
    if applied.as_deref() == Some(notice.payment_id.as_str()) {
        return Ok(PaymentReceipt {
            order_id: notice.order_id.clone(),
            status,
            duplicate: true,
            refund_required: false,
        });
    }
    // Money was taken for an order that cannot take it (paid by another
    // payment, or no longer payable): keep the record, owed back.
    let recorded = sqlx::query(
        "INSERT INTO payments (payment_id, order_id, amount, outcome, received_at) \
             VALUES ($1, $2, $3, 'REFUND_REQUIRED', $4) ON CONFLICT (payment_id) DO NOTHING",
    )
    .bind(notice.payment_id.as_str())
    .bind(notice.order_id.as_str())
    .bind(notice.amount.minor_units())
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(fail)?;
    if recorded.rows_affected() == 1 {
        // Newly recorded: give it back through the refund machinery, so the
        // gateway's refund is retried until it succeeds and stays visible.
        let user_id: String = row.try_get("user_id").map_err(fail)?;
        let user_id = UserId::parse(&user_id).map_err(|e| PayOrderError::Storage(e.to_string()))?;
        let status = crate::lifecycle::refund_stray_payment_in(tx, notice, &user_id, status, now)
            .await
            .map_err(fail)?;
        return Ok(PaymentReceipt {
            order_id: notice.order_id.clone(),
            status,
            duplicate: false,
            refund_required: true,
        });
    }
    {
        let owner: String = sqlx::query("SELECT order_id FROM payments WHERE payment_id = $1")
            .bind(notice.payment_id.as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(fail)?
            .try_get("order_id")
            .map_err(fail)?;
        if owner != notice.order_id.as_str() {
            return Err(PayOrderError::PaymentIdReused {
                payment_id: notice.payment_id.to_string(),
            });
        }
    }
    Ok(PaymentReceipt {
        order_id: notice.order_id.clone(),
        status,
        duplicate: true,
        refund_required: true,
    })
}

impl Store {
    /// An order with its lines, history and each system's progress.
    pub async fn order(&self, order_id: &OrderId) -> Result<Option<OrderView>, StorageError> {
        let Some(row) = sqlx::query(
            "SELECT order_id, user_id, status, amount, payment_id, created_at, paid_at, close_at \
             FROM orders WHERE order_id = $1",
        )
        .bind(order_id.as_str())
        .fetch_optional(&self.orders)
        .await
        .map_err(storage)?
        else {
            return Ok(None);
        };
        let lines = sqlx::query(
            "SELECT sku, quantity, refunded, unit_price FROM order_lines WHERE order_id = $1 ORDER BY sku",
        )
        .bind(order_id.as_str())
        .fetch_all(&self.orders)
        .await
        .map_err(storage)?
        .iter()
        .map(|r| {
            let sku: String = get(r, "sku")?;
            Ok(OrderLineView {
                sku: Sku::parse(&sku).map_err(|_| corrupt("sku", &sku))?,
                quantity: u32::try_from(get::<i64>(r, "quantity")?)
                    .map_err(|_| corrupt("quantity", &sku))?,
                unit_price: Amount::parse(get(r, "unit_price")?)
                    .map_err(|_| corrupt("unit price", &sku))?,
                refunded: u32::try_from(get::<i64>(r, "refunded")?)
                    .map_err(|_| corrupt("refunded quantity", &sku))?,
            })
        })
        .collect::<Result<Vec<_>, StorageError>>()?;
        let history = sqlx::query(
            "SELECT from_status, to_status, at FROM order_history WHERE order_id = $1 ORDER BY id",
        )
        .bind(order_id.as_str())
        .fetch_all(&self.orders)
        .await
        .map_err(storage)?
        .iter()
        .map(|r| {
            let from: Option<String> = get(r, "from_status")?;
            Ok(StatusChange {
                from: from.as_deref().map(status_of).transpose()?,
                to: status_of(&get::<String>(r, "to_status")?)?,
                at: get(r, "at")?,
            })
        })
        .collect::<Result<Vec<_>, StorageError>>()?;

        let user_id: String = get(&row, "user_id")?;
        let payment_id: Option<String> = get(&row, "payment_id")?;
        let paid_at: Option<i64> = get(&row, "paid_at")?;
        let refunds = self.refunds_of(order_id).await?;
        // The events each group is expected to handle, so one not delivered
        // yet shows as pending rather than missing.
        let paid_event = OrderEvent::paid_event_id(order_id);
        let mut expected: Vec<(System, String)> = Vec::new();
        if paid_at.is_some() {
            expected.extend(System::ALL.map(|s| (s, paid_event.clone())));
        }
        for refund in &refunds {
            let id = format!(
                "{}:{}",
                EventKind::OrderRefundRequested.tag(),
                refund.refund_id
            );
            expected.extend(System::ALL.map(|s| (s, id.clone())));
        }
        for carrier in sqlx::query("SELECT status FROM carrier_events WHERE order_id = $1")
            .bind(order_id.as_str())
            .fetch_all(&self.orders)
            .await
            .map_err(storage)?
        {
            let status: String = get(&carrier, "status")?;
            expected.push((
                System::Warehouse,
                format!("{}:{order_id}:{status}", EventKind::ShipmentUpdated.tag()),
            ));
        }
        let consumers = self.consumer_progress(order_id, &expected).await?;
        let fanout = System::ALL
            .into_iter()
            .map(|system| {
                let state = consumers
                    .iter()
                    .find(|p| p.group == system.consumer_group() && p.event_id == paid_event)
                    .map_or(FanoutState::Pending, |p| p.state);
                (system, state)
            })
            .collect::<BTreeMap<_, _>>();
        Ok(Some(OrderView {
            order_id: order_id.clone(),
            user_id: UserId::parse(&user_id).map_err(|_| corrupt("user id", &user_id))?,
            status: status_of(&get::<String>(&row, "status")?)?,
            amount: Amount::parse(get(&row, "amount")?)
                .map_err(|_| corrupt("amount", order_id.as_str()))?,
            payment_id: payment_id
                .as_deref()
                .map(|p| PaymentId::parse(p).map_err(|_| corrupt("payment id", p)))
                .transpose()?,
            created_at: get(&row, "created_at")?,
            paid_at,
            close_at: get(&row, "close_at")?,
            lines,
            fanout,
            history,
            consumers,
            refunds,
        }))
    }

    /// Orders whose status is `status`, oldest first (tests, checkers, operators).
    pub async fn order_ids_with_status(
        &self,
        status: OrderStatus,
    ) -> Result<Vec<OrderId>, StorageError> {
        sqlx::query("SELECT order_id FROM orders WHERE status = $1 ORDER BY order_id")
            .bind(status.as_str())
            .fetch_all(&self.orders)
            .await
            .map_err(storage)?
            .iter()
            .map(|r| {
                let id: String = get(r, "order_id")?;
                OrderId::parse(&id).map_err(|_| corrupt("order id", &id))
            })
            .collect()
    }

    /// Counters for the dashboard.
    pub async fn stats(&self) -> Result<Stats, StorageError> {
        let mut orders_by_status = BTreeMap::new();
        for row in sqlx::query("SELECT status, COUNT(*) AS n FROM orders GROUP BY status")
            .fetch_all(&self.orders)
            .await
            .map_err(storage)?
        {
            orders_by_status.insert(get::<String>(&row, "status")?, get::<i64>(&row, "n")?);
        }
        let outbox_backlog = self.outbox_backlog().await?;
        let payments_refund_required: i64 = get(
            &sqlx::query("SELECT COUNT(*) AS n FROM payments WHERE outcome = 'REFUND_REQUIRED'")
                .fetch_one(&self.orders)
                .await
                .map_err(storage)?,
            "n",
        )?;
        let mut systems = BTreeMap::new();
        for system in System::ALL {
            let (applied, failed) = self.system_counts(system).await?;
            systems.insert(system, SystemStats { applied, failed });
        }
        let mut refunds_by_status = BTreeMap::new();
        for row in sqlx::query("SELECT status, COUNT(*) AS n FROM refunds GROUP BY status")
            .fetch_all(&self.orders)
            .await
            .map_err(storage)?
        {
            refunds_by_status.insert(get::<String>(&row, "status")?, get::<i64>(&row, "n")?);
        }
        Ok(Stats {
            orders_by_status,
            outbox_backlog,
            systems,
            payments_refund_required,
            refunds_by_status,
            // The writer in front of the store fills this in.
            group_commit: Default::default(),
        })
    }
}
