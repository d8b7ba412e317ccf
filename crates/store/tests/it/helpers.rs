//! What every store test needs: a fresh store on each backend, and the
//! domain values the tests build.
//!
//! PostgreSQL tests need `ORDERMQ_TEST_POSTGRES_URL`, MariaDB (or MySQL)
//! tests `ORDERMQ_TEST_MYSQL_URL` (`scripts/start-mariadb.sh` prints it):
//! accounts allowed to create databases; each test gets a fresh database.
//! Without the URL a backend's tests are skipped locally and fail in CI
//! (`CI` set), so CI can never pass without exercising every backend.

use ordermq_domain::{
    Amount, NewOrder, OrderId, OrderLine, PaymentId, PaymentNotice, Quantity, Sku, UserId,
};
use ordermq_store::{DemoProduct, Feed, Store, StoreOptions};
use sqlx::Connection;

pub(crate) struct TestDb {
    pub store: Store,
    /// The URL the store was opened with.
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

/// The options of [`sqlite`], [`postgres`] and [`mysql`]: the defaults
/// without the change feed, whose rows the fan-out's tests (which count and
/// claim outbox rows) do not expect. The feed's own tests (`feed`) and the
/// differential test run with it on.
pub(crate) fn fanout_only() -> StoreOptions {
    StoreOptions {
        feed: Feed::Off,
        ..StoreOptions::default()
    }
}

pub(crate) async fn sqlite() -> TestDb {
    sqlite_with(&fanout_only()).await
}

pub(crate) async fn sqlite_with(options: &StoreOptions) -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/orders.db", dir.path().display());
    let store = Store::open(&url, options).await.unwrap();
    TestDb {
        store,
        url,
        _dir: Some(dir),
    }
}

pub(crate) async fn postgres() -> Option<TestDb> {
    postgres_with(&fanout_only()).await
}

pub(crate) async fn postgres_with(options: &StoreOptions) -> Option<TestDb> {
    server("PostgreSQL", "ORDERMQ_TEST_POSTGRES_URL", "", options).await
}

pub(crate) async fn mysql() -> Option<TestDb> {
    mysql_with(&fanout_only()).await
}

pub(crate) async fn mysql_with(options: &StoreOptions) -> Option<TestDb> {
    server(
        "MariaDB",
        "ORDERMQ_TEST_MYSQL_URL",
        " CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
        options,
    )
    .await
}

/// A fresh database on the server `variable` names (created with
/// `create_options`), opened with `options`, or `None` when the variable is
/// unset outside CI.
async fn server(
    backend: &str,
    variable: &str,
    create_options: &str,
    options: &StoreOptions,
) -> Option<TestDb> {
    let url = fresh_database(backend, variable, create_options).await?;
    let store = Store::open(&url, options).await.unwrap();
    Some(TestDb {
        store,
        url,
        _dir: None,
    })
}

/// The URL of a fresh, empty PostgreSQL database of the test server, or
/// `None` when `ORDERMQ_TEST_POSTGRES_URL` is unset outside CI.
pub(crate) async fn fresh_postgres_database() -> Option<String> {
    fresh_database("PostgreSQL", "ORDERMQ_TEST_POSTGRES_URL", "").await
}

/// The URL of a fresh, empty database on the server `variable` names
/// (created with `create_options`), or `None` when the variable is unset
/// outside CI (in CI that fails the test).
async fn fresh_database(backend: &str, variable: &str, create_options: &str) -> Option<String> {
    let Ok(admin_url) = std::env::var(variable) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the store tests on {backend}: set {variable}"
        );
        eprintln!("skipping {backend}: {variable} is not set");
        return None;
    };
    sqlx::any::install_default_drivers();
    let name = format!("ordermq_test_{:016x}", fastrand::u64(..));
    let mut admin = sqlx::AnyConnection::connect(&admin_url).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}{create_options}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let (base, _) = admin_url
        .rsplit_once('/')
        .expect("URL with a database name");
    Some(format!("{base}/{name}"))
}

/// Runs `test` on SQLite, then on PostgreSQL and on MariaDB when available.
macro_rules! on_every_backend {
    ($name:ident, $test:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$test(super::sqlite().await.store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                if let Some(db) = super::postgres().await {
                    super::$test(db.store).await;
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn mysql() {
                if let Some(db) = super::mysql().await {
                    super::$test(db.store).await;
                }
            }
        }
    };
}
pub(crate) use on_every_backend;

pub(crate) fn new_order(user: &str, items: &[(&str, i64)]) -> NewOrder {
    NewOrder::new(
        UserId::parse(user).unwrap(),
        items
            .iter()
            .map(|(sku, q)| OrderLine {
                sku: Sku::parse(sku).unwrap(),
                quantity: Quantity::parse(*q).unwrap(),
            })
            .collect(),
    )
    .unwrap()
}

pub(crate) fn notice(order: &OrderId, payment: &str, amount: i64) -> PaymentNotice {
    PaymentNotice {
        order_id: order.clone(),
        payment_id: PaymentId::parse(payment).unwrap(),
        amount: Amount::parse(amount).unwrap(),
    }
}

pub(crate) async fn seed(store: &Store, sku: &'static str, price: i64, stock: i64) {
    store
        .upsert_product(&DemoProduct {
            sku,
            name: "test product",
            price,
            stock,
        })
        .await
        .unwrap();
}

pub(crate) fn order_id(n: u32) -> OrderId {
    OrderId::generate(1_700_000_000_000, n)
}
