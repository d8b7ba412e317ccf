//! A flash sale's units going back to the sale: when an admitted attempt
//! is rejected, and when a sale order closes unpaid.
//!
//! Why a leaf of its own: both the close of an order (`close`) and the
//! flash-sale operations (`flash`) return units, and neither may import
//! the other. The rule lives once, here: an attempt's units return at most
//! once (`returned_at`), and they return to the sale (`allocated`), not to
//! the product, whose stock they left when the sale was created.
//!
//! Leaf module: it imports only the base (`sql`).

use sqlx::{AnyConnection, Row};

/// If `order_id` is a flash-sale order whose units have not gone back yet,
/// takes them out of the product again (the order's close has just
/// released them into its stock) and gives them back to the sale. Run in
/// the close's transaction, after the reservation was released.
pub(crate) async fn return_units_of_order_in(
    tx: &mut AnyConnection,
    order_id: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    let row = sqlx::query(
        "UPDATE sale_attempts SET returned_at = $1, updated_at = $1 \
         WHERE order_id = $2 AND returned_at IS NULL RETURNING sale_id, quantity",
    )
    .bind(now)
    .bind(order_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(());
    };
    let sale_id: String = row.try_get("sale_id")?;
    let quantity: i64 = row.try_get("quantity")?;
    let taken = sqlx::query(
        "UPDATE products SET on_hand = on_hand - $1 \
         WHERE sku = (SELECT sku FROM sales WHERE sale_id = $2) AND on_hand - reserved >= $1",
    )
    .bind(quantity)
    .bind(sale_id.as_str())
    .execute(&mut *tx)
    .await?;
    if taken.rows_affected() != 1 {
        return Err(sqlx::Error::Protocol(format!(
            "the {quantity} units of sale order {order_id} are not in its product's stock"
        )));
    }
    give_back_in(tx, &sale_id, quantity).await
}

/// Gives `quantity` units back to the sale: admissions may take them again.
pub(crate) async fn give_back_in(
    tx: &mut AnyConnection,
    sale_id: &str,
    quantity: i64,
) -> Result<(), sqlx::Error> {
    let returned = sqlx::query(
        "UPDATE sales SET allocated = allocated - $1 WHERE sale_id = $2 AND allocated >= $1",
    )
    .bind(quantity)
    .bind(sale_id)
    .execute(&mut *tx)
    .await?;
    if returned.rows_affected() != 1 {
        return Err(sqlx::Error::Protocol(format!(
            "sale {sale_id} has fewer than {quantity} units allocated to give back"
        )));
    }
    Ok(())
}
