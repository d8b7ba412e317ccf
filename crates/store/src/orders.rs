//! Orders: creating one (its lines, its reservation, its scheduled close,
//! and the per-user limits on what a user may hold unpaid) and listing
//! orders by status. The order page and the counters, which read from every
//! module, are in `views`.
//!
//! Operation module: it imports only the base, leaves and the handle.

use ordermq_domain::event::OrderCloseDue;
use ordermq_domain::ports::StorageError;
use ordermq_domain::view::{OrderLineView, OrderView, StatusChange};
use ordermq_domain::{
    Amount, CreateOrderError, FanoutState, NewOrder, OrderEvent, OrderId, OrderStatus, System,
    UserId, UserLimits,
};
use sqlx::{AnyConnection, Row};

use crate::dialect;
use crate::fail::{corrupt, get, storage};
use crate::feed;
use crate::history::record_history;
use crate::mysql;
use crate::outbox;
use crate::sql::Backend;
use crate::sql::Feed;
use crate::store::{Db, Store};
use ordermq_domain::feed::FeedChange;

/// The class of the per-user advisory locks on PostgreSQL (the first of the
/// two keys; the second is the user id's hash). The two-key form never
/// meets the migrations' one-key lock.
const USER_LOCK_CLASS: i32 = 7_401;

impl Store {
    /// Creates an UNPAID order and reserves its stock, all or nothing; its
    /// close, `close_after_ms` later, is scheduled in the same transaction.
    /// No per-user limit (tools and tests that load data); the order
    /// service creates through [`Store::create_order_limited`] or its batch.
    pub async fn create_order(
        &self,
        order: &NewOrder,
        order_id: &OrderId,
        now: i64,
        close_after_ms: Option<i64>,
    ) -> Result<OrderView, CreateOrderError> {
        self.create_order_limited(order, order_id, now, close_after_ms, UserLimits::OFF)
            .await
    }

    /// [`Store::create_order`] within `limits`: the user's unpaid orders and
    /// units per SKU are counted in the transaction that reserves the
    /// stock, so two concurrent orders of one user cannot both pass.
    pub async fn create_order_limited(
        &self,
        order: &NewOrder,
        order_id: &OrderId,
        now: i64,
        close_after_ms: Option<i64>,
        limits: UserLimits,
    ) -> Result<OrderView, CreateOrderError> {
        let mut tx = self.begin_write(Db::Orders).await.map_err(storage)?;
        let view = create_order_in(
            &mut tx,
            self.backend,
            self.feed,
            order,
            order_id,
            now,
            close_after_ms,
            limits,
        )
        .await?;
        tx.commit().await.map_err(storage)?;
        Ok(view)
    }

    /// Orders whose status is `status`, oldest first (tests, checkers, operators).
    pub async fn order_ids_with_status(
        &self,
        status: OrderStatus,
    ) -> Result<Vec<OrderId>, StorageError> {
        dialect::query("SELECT order_id FROM orders WHERE status = $1 ORDER BY order_id")
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
}

/// Reserves the lines' stock, checks the user's `limits` and records the
/// order, inside the caller's transaction (a refusal leaves the caller to
/// roll back what was reserved).
// The transaction, its dialect and feed setting, then the order's own facts.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn create_order_in(
    tx: &mut AnyConnection,
    backend: Backend,
    feed: Feed,
    order: &NewOrder,
    order_id: &OrderId,
    now: i64,
    close_after_ms: Option<i64>,
    limits: UserLimits,
) -> Result<OrderView, CreateOrderError> {
    let mut amount = Amount::ZERO;
    let mut lines = Vec::with_capacity(order.lines().len());
    // Lines are sorted by SKU, so concurrent orders lock rows in one order.
    for line in order.lines() {
        let quantity = i64::from(line.quantity.get());
        // One statement reserves and reads the price; only a refusal needs a
        // second one, to tell an unknown SKU from too little stock.
        let price = if backend == Backend::Mysql {
            mysql::reserve(&mut *tx, quantity, line.sku.as_str()).await
        } else {
            dialect::query(
                "UPDATE products SET reserved = reserved + $1 \
                 WHERE sku = $2 AND on_hand - reserved >= $1 RETURNING price",
            )
            .bind(quantity)
            .bind(line.sku.as_str())
            .fetch_optional(&mut *tx)
            .await
            .and_then(|row| row.map(|row| row.try_get("price")).transpose())
        };
        let Some(price): Option<i64> = price.map_err(storage)? else {
            let row = dialect::query(
                "SELECT on_hand - reserved AS available FROM products WHERE sku = $1",
            )
            .bind(line.sku.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(storage)?;
            return Err(match row {
                None => CreateOrderError::UnknownSku(line.sku.to_string()),
                Some(row) => CreateOrderError::OutOfStock {
                    sku: line.sku.to_string(),
                    available: row.try_get("available").map_err(storage)?,
                    requested: line.quantity.get(),
                },
            });
        };
        let unit_price = Amount::parse(price).map_err(StorageError::corrupt)?;
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
    // After the reservations: a write transaction starts with its write (see
    // the crate's rules), and a shopper short of stock hears OUT_OF_STOCK.
    check_user_limits(&mut *tx, backend, order, limits).await?;
    let close_at = close_after_ms.map(|after| now.saturating_add(after.max(0)));
    dialect::query(
            "INSERT INTO orders (order_id, user_id, status, amount, payment_id, created_at, paid_at, updated_at, close_at, order_seq) \
             VALUES ($1, $2, $3, $4, NULL, $5, NULL, $5, $6, 1)",
        )
        .bind(order_id.as_str())
        .bind(order.user_id().as_str())
        .bind(OrderStatus::Unpaid.as_str())
        .bind(amount.minor_units())
        .bind(now)
        .bind(close_at)
        .execute(&mut *tx)
        .await
        .map_err(storage)?;
    for line in &lines {
        dialect::query(
            "INSERT INTO order_lines (order_id, sku, quantity, unit_price) VALUES ($1, $2, $3, $4)",
        )
        .bind(order_id.as_str())
        .bind(line.sku.as_str())
        .bind(i64::from(line.quantity))
        .bind(line.unit_price.minor_units())
        .execute(&mut *tx)
        .await
        .map_err(storage)?;
    }
    record_history(&mut *tx, order_id.as_str(), None, OrderStatus::Unpaid, now)
        .await
        .map_err(storage)?;
    feed::record(&mut *tx, feed, order_id.as_str(), FeedChange::Created, now)
        .await
        .map_err(storage)?;
    // The close travels with the order: the broker delivers it at `close_at`.
    if let Some(close_at) = close_at {
        let close = OrderEvent::OrderCloseDue(OrderCloseDue {
            order_id: order_id.clone(),
            due_at: close_at,
        });
        outbox::enqueue(&mut *tx, &close, Some(close_at), now)
            .await
            .map_err(storage)?;
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
        actions: Vec::new(),
        consumers: Vec::new(),
        refunds: Vec::new(),
    })
}

/// Counts what the user holds in unpaid orders and asks `limits` whether
/// `order` fits. On PostgreSQL the user's advisory lock (on MySQL the
/// user's row in `user_locks`; either held to the end of the transaction)
/// makes concurrent creates of one user take turns, so the
/// second counts the first's order once it commits; SQLite has one writer
/// at a time (the store's gate), so the count is already the latest.
async fn check_user_limits(
    tx: &mut AnyConnection,
    backend: Backend,
    order: &NewOrder,
    limits: UserLimits,
) -> Result<(), CreateOrderError> {
    if !limits.any() {
        return Ok(());
    }
    if backend == Backend::Postgres {
        dialect::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(USER_LOCK_CLASS)
            .bind(order.user_id().as_str())
            .execute(&mut *tx)
            .await
            .map_err(storage)?;
    }
    if backend == Backend::Mysql {
        mysql::lock_user(&mut *tx, order.user_id().as_str())
            .await
            .map_err(storage)?;
    }
    let held = unpaid_holdings(&mut *tx, order.user_id()).await?;
    limits.check_unpaid_orders(held.orders)?;
    for line in order.lines() {
        let units = held
            .units
            .iter()
            .find(|(sku, _)| sku == line.sku.as_str())
            .map_or(0, |(_, units)| *units);
        limits.check_units(&line.sku, units, line.quantity.get())?;
    }
    Ok(())
}

/// What a user holds in unpaid orders.
struct Holdings {
    /// How many unpaid orders.
    orders: u64,
    /// Units per SKU across them.
    units: Vec<(String, u64)>,
}

/// The user's unpaid orders and their units per SKU, through `orders_by_user`:
/// one read of the user's unpaid lines (at most the limits' worth).
async fn unpaid_holdings(
    tx: &mut AnyConnection,
    user: &UserId,
) -> Result<Holdings, CreateOrderError> {
    let rows = dialect::query(
        "SELECT o.order_id, l.sku, l.quantity FROM orders o \
         JOIN order_lines l ON l.order_id = o.order_id \
         WHERE o.user_id = $1 AND o.status = $2 ORDER BY o.order_id",
    )
    .bind(user.as_str())
    .bind(OrderStatus::Unpaid.as_str())
    .fetch_all(&mut *tx)
    .await
    .map_err(storage)?;
    let mut held = Holdings {
        orders: 0,
        units: Vec::new(),
    };
    let mut last_order: Option<String> = None;
    for row in &rows {
        let order_id: String = get(row, "order_id")?;
        let sku: String = get(row, "sku")?;
        let quantity: i64 = get(row, "quantity")?;
        let quantity =
            u64::try_from(quantity).map_err(|_| corrupt("line quantity", &quantity.to_string()))?;
        if last_order.as_deref() != Some(order_id.as_str()) {
            held.orders += 1;
            last_order = Some(order_id);
        }
        match held.units.iter_mut().find(|(s, _)| *s == sku) {
            Some((_, units)) => *units = units.saturating_add(quantity),
            None => held.units.push((sku, quantity)),
        }
    }
    Ok(held)
}
