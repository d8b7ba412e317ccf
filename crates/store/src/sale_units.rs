//! A flash sale's units going back to the sale: when an admitted attempt
//! is rejected, and when a sale order closes unpaid.
//!
//! Why a leaf of its own: both the close of an order (`close`) and the
//! flash-sale operations (`flash`) return units, and neither may import
//! the other. The rule lives once, here: an attempt's units return at most
//! once (`returned_at`), and they return to the sale (`allocated`), not to
//! the product, whose stock they left when the sale was created.
//!
//! MySQL has no `UPDATE … RETURNING` and MySQL 8 no `DELETE … RETURNING`:
//! there the rows a guarded statement is about to change are read first
//! with `FOR UPDATE`, and the statement must change exactly those.
//!
//! Leaf module: it imports only the base (`dialect`).

use sqlx::{AnyConnection, Row};

use crate::dialect::{self, is_mysql};

/// If `order_id` is a flash-sale order whose units have not gone back yet,
/// takes them out of the product again (the order's close has just
/// released them into its stock) and gives them back to the sale. Run in
/// the close's transaction, after the reservation was released.
pub(crate) async fn return_units_of_order_in(
    tx: &mut AnyConnection,
    order_id: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    let taken = take_attempt_units_in(
        tx,
        "returned_at = $2, updated_at = $2",
        "order_id = $3 AND returned_at IS NULL",
        (None, now, order_id),
    )
    .await?;
    let Some((sale_id, quantity)) = taken else {
        return Ok(());
    };
    let taken = dialect::query(
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
    let returned = dialect::query(
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

/// Runs `UPDATE sale_attempts SET {set} WHERE {guard}` for at most one
/// attempt and answers the sale and units of the attempt it changed, if
/// any. Parameters: `$1` the text of `values.0` (or NULL), `$2` the time
/// `values.1`, `$3` the key `values.2`; `set` and `guard` name them.
pub(crate) async fn take_attempt_units_in(
    tx: &mut AnyConnection,
    set: &str,
    guard: &str,
    values: (Option<&str>, i64, &str),
) -> Result<Option<(String, i64)>, sqlx::Error> {
    let (text, now, key) = values;
    let update = format!("UPDATE sale_attempts SET {set} WHERE {guard}");
    let row = if is_mysql(tx) {
        // `$1`, `$2` may be absent from the guard: MySQL binds only the
        // marks a statement has.
        let row = dialect::query(&format!(
            "SELECT sale_id, quantity FROM sale_attempts WHERE {guard} FOR UPDATE"
        ))
        .bind(text)
        .bind(now)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
        if row.is_some() {
            let changed = dialect::query(&update)
                .bind(text)
                .bind(now)
                .bind(key)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if changed != 1 {
                return Err(sqlx::Error::Protocol(format!(
                    "an attempt read for update was not updated ({changed} rows)"
                )));
            }
        }
        row
    } else {
        dialect::query(&format!("{update} RETURNING sale_id, quantity"))
            .bind(text)
            .bind(now)
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?
    };
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(Some((row.try_get("sale_id")?, row.try_get("quantity")?)))
}

/// Deletes the leases of `sale_id` that expired before `now`, except
/// `owner`'s, and answers the units each held. Run with the sale's row
/// locked, so no lease of it changes meanwhile.
pub(crate) async fn expired_leases_in(
    tx: &mut AnyConnection,
    sale_id: &str,
    owner: &str,
    now: i64,
) -> Result<Vec<i64>, sqlx::Error> {
    let guard = "sale_id = $1 AND owner <> $2 AND expires_at < $3";
    let rows = if is_mysql(tx) {
        let rows = dialect::query(&format!(
            "SELECT units_left FROM sale_leases WHERE {guard} FOR UPDATE"
        ))
        .bind(sale_id)
        .bind(owner)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let deleted = dialect::query(&format!("DELETE FROM sale_leases WHERE {guard}"))
            .bind(sale_id)
            .bind(owner)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted != rows.len() as u64 {
            return Err(sqlx::Error::Protocol(format!(
                "{} expired leases read for update, {deleted} deleted",
                rows.len()
            )));
        }
        rows
    } else {
        dialect::query(&format!(
            "DELETE FROM sale_leases WHERE {guard} RETURNING units_left"
        ))
        .bind(sale_id)
        .bind(owner)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?
    };
    rows.iter().map(|row| row.try_get("units_left")).collect()
}
