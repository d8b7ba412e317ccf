//! MySQL or MariaDB for a benchmark: the server `--database-url mysql://…`
//! names (`scripts/start-mariadb.sh` starts a durable one:
//! `innodb_flush_log_at_trx_commit=1`), and the yardsticks measured on it in
//! the same run, as on PostgreSQL (`postgres`): one row per transaction
//! with 1 and with 8 connections, and a naive payment loop (one transaction
//! per payment: guarded order update, stock deduction, outbox insert) with
//! 8 connections.
//!
//! The server's durability is read and stated in the report: a figure from
//! a server that does not flush its log at every commit is not comparable.

use std::time::Duration;

use sqlx::mysql::{MySqlConnection, MySqlPoolOptions};
use sqlx::{Connection, Executor};

use futures_util::future::BoxFuture;

use super::BenchResult;
use super::target::{Database, TargetArgs};
use super::yardstick::{Loop, Server, loop_rate};

/// Refuses `--database mysql` without a server to run on: this benchmark
/// does not start one of its own.
pub fn check(target: &TargetArgs) -> BenchResult<()> {
    let named = target.database_url.as_deref().is_some_and(is_mysql_url);
    if target.database == Database::Mysql && !named && target.url.is_empty() {
        return Err(
            "--database mysql needs --database-url mysql://USER@HOST:PORT/DB \
                    (eval \"$(scripts/start-mariadb.sh)\" starts a durable MariaDB and \
                    prints one as ORDERMQ_TEST_MYSQL_URL)"
                .into(),
        );
    }
    Ok(())
}

/// Whether `url` names a MySQL or MariaDB server.
pub fn is_mysql_url(url: &str) -> bool {
    url.starts_with("mysql://") || url.starts_with("mariadb://")
}

/// MySQL's or MariaDB's own rates, on the server ordermq runs on.
#[derive(Debug, Clone)]
pub struct MysqlYardsticks {
    /// One `INSERT` per transaction, one connection.
    pub insert_1_per_s: f64,
    /// The same with 8 connections.
    pub insert_8_per_s: f64,
    /// One transaction per payment (guarded order update, stock deduction
    /// of one hot SKU, outbox insert), 8 connections.
    pub naive_pay_8_per_s: f64,
    /// `VERSION()`, as read.
    pub version: String,
    /// `innodb_flush_log_at_trx_commit`, as read (1: durable).
    pub flush_log_at_trx_commit: i64,
}

const SETUP: &[&str] = &[
    "DROP TABLE IF EXISTS ordermq_yardstick_rows, ordermq_yardstick_orders, \
       ordermq_yardstick_products, ordermq_yardstick_outbox",
    "CREATE TABLE ordermq_yardstick_rows (id BIGINT AUTO_INCREMENT PRIMARY KEY, \
       v BIGINT NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE ordermq_yardstick_orders (order_id VARCHAR(64) PRIMARY KEY, \
       status VARCHAR(16) NOT NULL, amount BIGINT NOT NULL, payment_id VARCHAR(64), \
       paid_at BIGINT) ENGINE=InnoDB",
    "CREATE TABLE ordermq_yardstick_products (sku VARCHAR(64) PRIMARY KEY, \
       on_hand BIGINT NOT NULL CHECK (on_hand >= 0), reserved BIGINT NOT NULL, \
       CHECK (reserved >= 0 AND reserved <= on_hand)) ENGINE=InnoDB",
    "CREATE TABLE ordermq_yardstick_outbox (id BIGINT AUTO_INCREMENT PRIMARY KEY, \
       msg_key VARCHAR(64) NOT NULL, body TEXT NOT NULL, created_at BIGINT NOT NULL, \
       sent_at BIGINT) ENGINE=InnoDB",
    "INSERT INTO ordermq_yardstick_orders (order_id, status, amount) \
       SELECT CONCAT('Y', seq), 'UNPAID', 1000 FROM seq_1_to_300000",
    "INSERT INTO ordermq_yardstick_products VALUES ('Y', 1000000000, 1000000000)",
];

const TEARDOWN: &str = "DROP TABLE IF EXISTS ordermq_yardstick_rows, ordermq_yardstick_orders, \
       ordermq_yardstick_products, ordermq_yardstick_outbox";

impl MysqlYardsticks {
    /// Measures each loop for `duration` on the database at `url` (its own
    /// tables, dropped afterwards). The orders are generated with MariaDB's
    /// `seq_1_to_N` table.
    pub async fn measure(url: &str, duration: Duration) -> BenchResult<Self> {
        let e = |e: sqlx::Error| format!("MySQL yardstick: {e}");
        let url = url.replacen("mariadb://", "mysql://", 1);
        let pool = MySqlPoolOptions::new()
            .max_connections(8)
            .connect(&url)
            .await
            .map_err(e)?;
        for statement in SETUP {
            pool.execute(*statement).await.map_err(e)?;
        }
        let (version, flush_log_at_trx_commit): (String, i64) =
            sqlx::query_as("SELECT VERSION(), CAST(@@innodb_flush_log_at_trx_commit AS SIGNED)")
                .fetch_one(&pool)
                .await
                .map_err(e)?;
        let insert_1_per_s = loop_rate(&pool, 1, duration, Loop::Insert).await?;
        let insert_8_per_s = loop_rate(&pool, 8, duration, Loop::Insert).await?;
        let naive_pay_8_per_s = loop_rate(&pool, 8, duration, Loop::Pay).await?;
        pool.execute(TEARDOWN).await.map_err(e)?;
        pool.close().await;
        Ok(Self {
            insert_1_per_s,
            insert_8_per_s,
            naive_pay_8_per_s,
            version,
            flush_log_at_trx_commit,
        })
    }
}

impl Server for sqlx::MySql {
    const NAME: &'static str = "MySQL";

    fn insert_row(conn: &mut MySqlConnection) -> BoxFuture<'_, Result<(), sqlx::Error>> {
        Box::pin(async move {
            sqlx::query("INSERT INTO ordermq_yardstick_rows (v) VALUES (?)")
                .bind(1_i64)
                .execute(conn)
                .await
                .map(drop)
        })
    }

    fn naive_payment(
        conn: &mut MySqlConnection,
        order_id: String,
    ) -> BoxFuture<'_, Result<(), sqlx::Error>> {
        Box::pin(naive_payment(conn, order_id))
    }
}

/// [`Server::naive_payment`] on this server.
async fn naive_payment(conn: &mut MySqlConnection, order_id: String) -> Result<(), sqlx::Error> {
    let order_id = order_id.as_str();
    let now = ordermq_domain::now_millis();
    let mut tx = conn.begin().await?;
    let paid = sqlx::query(
        "UPDATE ordermq_yardstick_orders SET status = 'PAID', payment_id = ?, paid_at = ? \
         WHERE order_id = ? AND status = 'UNPAID' AND amount = ?",
    )
    .bind(format!("pay-{order_id}"))
    .bind(now)
    .bind(order_id)
    .bind(1_000_i64)
    .execute(&mut *tx)
    .await?;
    if paid.rows_affected() == 1 {
        sqlx::query(
            "UPDATE ordermq_yardstick_products SET on_hand = on_hand - 1, reserved = reserved - 1 \
             WHERE sku = 'Y' AND reserved >= 1 AND on_hand >= 1",
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO ordermq_yardstick_outbox (msg_key, body, created_at) VALUES (?, ?, ?)",
        )
        .bind(order_id)
        .bind(format!(
            "{{\"OrderPaid\":{{\"order_id\":\"{order_id}\",\"user_id\":\"bench-user\",\
             \"payment_id\":\"pay-{order_id}\",\"amount\":1000,\"paid_at\":{now},\
             \"lines\":[{{\"sku\":\"BENCH-1\",\"quantity\":1,\"unit_price\":1000}}]}}}}"
        ))
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}
