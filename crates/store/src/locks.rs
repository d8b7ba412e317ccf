//! The rows a batch locks first, in one global order, so that concurrent
//! writers (several order writers, several instances) never deadlock: the
//! products it may touch, by SKU, then the existing orders it may change,
//! by order id, before any statement changes one.
//!
//! Without it two batches touching SKU-A and SKU-B in opposite orders could
//! each hold one and wait for the other: PostgreSQL breaks that after
//! `deadlock_timeout` (1 s) and InnoDB at once, by failing one batch. Within
//! one instance an order's payments and closes go to one writer, but the
//! same order's payment and close (or two notices of its payment) may reach
//! two instances at once; payments lock no product, so nothing else would
//! keep two such batches from taking the same orders in opposite orders.
//!
//! Leaf module: it imports only the base (`dialect`, `fail`, `sql`).

use std::collections::BTreeSet;

use sqlx::AnyConnection;

use crate::dialect;
use crate::sql;

/// Locks the products of the orders `orders` (their lines) and the SKUs
/// `skus`, in SKU order (`sql::lock_products`).
///
/// # Errors
///
/// The database's, a lost lock race included (see `fail::lost_lock_race`).
pub(crate) async fn lock_products_in(
    tx: &mut AnyConnection,
    orders: &[&str],
    mut skus: BTreeSet<String>,
) -> Result<(), sqlx::Error> {
    if orders.is_empty() && skus.is_empty() {
        return Ok(());
    }
    let mut orders = orders;
    if dialect::is_mysql(tx) {
        // InnoDB locks rows as it reads them, before an `ORDER BY` sorts
        // them, and may read the orders' lines first: the SKUs are read
        // (lines never change), then locked by one ascending scan of the
        // products' key.
        if !orders.is_empty() {
            let statement = format!(
                "SELECT DISTINCT sku FROM order_lines WHERE order_id IN ({})",
                sql::placeholders(0, orders.len())
            );
            let mut query = dialect::query(&statement);
            for order in orders {
                query = query.bind(*order);
            }
            for row in query.fetch_all(&mut *tx).await? {
                skus.insert(crate::fail::column(&row, "sku")?);
            }
        }
        orders = &[];
    }
    let statement = sql::lock_products(orders.len(), skus.len());
    let mut query = dialect::query(&statement);
    for order in orders {
        query = query.bind(*order);
    }
    for sku in skus {
        query = query.bind(sku);
    }
    query.fetch_all(tx).await?;
    Ok(())
}

/// Locks the existing orders `orders` in order id order (`sql::lock_orders`),
/// after their products.
///
/// # Errors
///
/// The database's, a lost lock race included (see `fail::lost_lock_race`).
pub(crate) async fn lock_orders_in(
    tx: &mut AnyConnection,
    orders: &[&str],
) -> Result<(), sqlx::Error> {
    if orders.is_empty() {
        return Ok(());
    }
    let statement = sql::lock_orders(orders.len());
    let mut query = dialect::query(&statement);
    for order in orders {
        query = query.bind(*order);
    }
    query.fetch_all(tx).await?;
    Ok(())
}
