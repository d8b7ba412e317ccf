//! The catalog: products, their prices and their stock counters.
//!
//! Stock has two counters per product: `on_hand`, the units the shop has
//! had to sell, sold ones included (an operator sets it; a flash sale takes
//! units out of it and gives back the ones it did not sell), and `reserved`,
//! the units orders hold: every order not cancelled, paid or not. Creating an
//! order reserves; closing an unpaid one releases; paying changes neither
//! (the order's status tells a unit held from a unit sold), so a payment
//! never waits on its products' rows. What can still be ordered is
//! `on_hand − reserved`; the units sold are `reserved` minus what unpaid
//! orders hold. A CHECK keeps `0 <= reserved <= on_hand`, so no interleaving
//! can oversell.
//!
//! Until migration 12 a payment deducted its units from both counters; the
//! migration adds every paid order's units back to both, which leaves what
//! can be ordered unchanged.
//!
//! Operation module: it imports only the base, leaves and the handle.

use ordermq_domain::ports::StorageError;
use ordermq_domain::{Amount, Product, Sku};

use crate::dialect;
use crate::fail::{corrupt, get, storage};
use crate::store::{Db, Store};

/// A product of the demo catalog seeded on first start.
#[derive(Debug, Clone, Copy)]
pub struct DemoProduct {
    pub sku: &'static str,
    pub name: &'static str,
    pub price: i64,
    pub stock: i64,
}

impl Store {
    /// Inserts the products that are not there yet; existing rows are untouched.
    pub async fn seed_catalog(&self, products: &[DemoProduct]) -> Result<usize, StorageError> {
        let mut tx = self.begin_write(Db::Orders).await.map_err(storage)?;
        let mut inserted = 0;
        for p in products {
            let done = dialect::query(
                "INSERT INTO products (sku, name, price, on_hand, reserved) VALUES ($1, $2, $3, $4, 0) \
                 ON CONFLICT (sku) DO NOTHING",
            )
            .bind(p.sku)
            .bind(p.name)
            .bind(p.price)
            .bind(p.stock)
            .execute(&mut *tx)
            .await
            .map_err(storage)?;
            inserted += done.rows_affected() as usize;
        }
        tx.commit().await.map_err(storage)?;
        Ok(inserted)
    }

    /// Sets a product's stock outright (tests and operators); reservations are cleared.
    pub async fn upsert_product(&self, product: &DemoProduct) -> Result<(), StorageError> {
        let mut tx = self.begin_write(Db::Orders).await.map_err(storage)?;
        dialect::query(
            "INSERT INTO products (sku, name, price, on_hand, reserved) VALUES ($1, $2, $3, $4, 0) \
             ON CONFLICT (sku) DO UPDATE SET name = $2, price = $3, on_hand = $4, reserved = 0",
        )
        .bind(product.sku)
        .bind(product.name)
        .bind(product.price)
        .bind(product.stock)
        .execute(&mut *tx)
        .await
        .map_err(storage)?;
        tx.commit().await.map_err(storage)
    }

    pub async fn products(&self) -> Result<Vec<Product>, StorageError> {
        let rows = dialect::query(
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

    /// Stock of one SKU as `(on_hand, reserved)`: the units it has had to
    /// sell, and those its orders hold, unpaid or paid (see the module).
    pub async fn stock(&self, sku: &str) -> Result<Option<(i64, i64)>, StorageError> {
        let row = dialect::query("SELECT on_hand, reserved FROM products WHERE sku = $1")
            .bind(sku)
            .fetch_optional(&self.orders)
            .await
            .map_err(storage)?;
        row.map(|r| Ok((get(&r, "on_hand")?, get(&r, "reserved")?)))
            .transpose()
    }
}
