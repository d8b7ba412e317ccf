//! PostgreSQL for a benchmark: a throwaway server with durable settings
//! (`fsync`, `synchronous_commit` and `full_page_writes` on:
//! `ordermq_testkit::postgres`), and the
//! yardsticks measured on it in the same run, pgbench-style: one row per
//! transaction with 1 and with 8 connections, and a naive payment loop (one
//! transaction per payment: guarded order update, stock deduction, outbox
//! insert) with 8 connections.
//!
//! The store tests' server (`scripts/start-postgres.sh`) runs with
//! `fsync=off`: fine for tests, meaningless for a benchmark.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, Executor, PgConnection};

use ordermq_testkit::postgres::PgServer;

use futures_util::future::BoxFuture;

use super::BenchResult;
use super::target::{Database, TargetArgs};
use super::yardstick::{Loop, Server, loop_rate};

/// Starts the run's own PostgreSQL server when `--database postgres` is
/// asked without `--database-url`, and points `target` at it; the server
/// lives as long as the returned guard.
pub async fn prepare(target: &mut TargetArgs) -> BenchResult<Option<PgServer>> {
    if target.database != Database::Postgres
        || target.database_url.is_some()
        || !target.url.is_empty()
    {
        return Ok(None);
    }
    eprintln!("  starting a throwaway PostgreSQL server (fsync=on, synchronous_commit=on)...");
    let server = PgServer::start(target.postgres_dir.as_deref()).map_err(|e| e.to_string())?;
    target.database_url = Some(
        server
            .create_database("ordermq")
            .await
            .map_err(|e| e.to_string())?,
    );
    Ok(Some(server))
}

/// Starts counting statements afresh (`pg_stat_statements`, when the server
/// has it loaded: the throwaway server does); false if it cannot.
pub async fn reset_statements(url: &str) -> bool {
    let Ok(mut conn) = PgConnection::connect(url).await else {
        return false;
    };
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .await
        .is_ok()
        && conn
            .execute("SELECT pg_stat_statements_reset()")
            .await
            .is_ok()
}

/// Where the server's time went since [`reset_statements`]: the statements
/// with the most execution time, with their calls, rows and mean time.
pub async fn top_statements(url: &str, limit: i64) -> Option<serde_json::Value> {
    let mut conn = PgConnection::connect(url).await.ok()?;
    let rows: Vec<(String, i64, i64, f64, f64)> = sqlx::query_as(
        "SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 160), calls, rows, \
           mean_exec_time, total_exec_time \
         FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         ORDER BY total_exec_time DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(&mut conn)
    .await
    .ok()?;
    Some(serde_json::Value::Array(
        rows.into_iter()
            .map(|(query, calls, rows, mean, total)| {
                serde_json::json!({
                    "query": query,
                    "calls": calls,
                    "rows": rows,
                    "mean_ms": mean,
                    "total_ms": total,
                })
            })
            .collect(),
    ))
}

/// PostgreSQL's own rates, on the server ordermq runs on.
#[derive(Debug, Clone, Copy)]
pub struct PgYardsticks {
    /// One `INSERT` per transaction, one connection (pgbench-style).
    pub insert_1_per_s: f64,
    /// The same with 8 connections.
    pub insert_8_per_s: f64,
    /// One transaction per payment (guarded order update, stock deduction
    /// of one hot SKU, outbox insert), 8 connections.
    pub naive_pay_8_per_s: f64,
    /// The server's settings, as read.
    pub fsync: bool,
    pub synchronous_commit: bool,
}

const SETUP: &str = "DROP TABLE IF EXISTS ordermq_yardstick_rows, ordermq_yardstick_orders, \
       ordermq_yardstick_products, ordermq_yardstick_outbox; \
     CREATE TABLE ordermq_yardstick_rows (id BIGSERIAL PRIMARY KEY, v BIGINT NOT NULL); \
     CREATE TABLE ordermq_yardstick_orders (order_id TEXT PRIMARY KEY, status TEXT NOT NULL, \
       amount BIGINT NOT NULL, payment_id TEXT, paid_at BIGINT); \
     CREATE TABLE ordermq_yardstick_products (sku TEXT PRIMARY KEY, on_hand BIGINT NOT NULL \
       CHECK (on_hand >= 0), reserved BIGINT NOT NULL CHECK (reserved >= 0 AND reserved <= on_hand)); \
     CREATE TABLE ordermq_yardstick_outbox (id BIGSERIAL PRIMARY KEY, msg_key TEXT NOT NULL, \
       body TEXT NOT NULL, created_at BIGINT NOT NULL, sent_at BIGINT); \
     INSERT INTO ordermq_yardstick_orders (order_id, status, amount) \
       SELECT 'Y' || g, 'UNPAID', 1000 FROM generate_series(1, 300000) g; \
     INSERT INTO ordermq_yardstick_products VALUES ('Y', 1000000000, 1000000000)";

const TEARDOWN: &str = "DROP TABLE IF EXISTS ordermq_yardstick_rows, ordermq_yardstick_orders, \
       ordermq_yardstick_products, ordermq_yardstick_outbox";

impl PgYardsticks {
    /// Measures each loop for `duration` on the database at `url` (its own
    /// tables, dropped afterwards).
    pub async fn measure(url: &str, duration: Duration) -> BenchResult<Self> {
        let e = |e: sqlx::Error| format!("PostgreSQL yardstick: {e}");
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect(url)
            .await
            .map_err(e)?;
        pool.execute(SETUP).await.map_err(e)?;
        let settings: (String, String) = sqlx::query_as(
            "SELECT current_setting('fsync'), current_setting('synchronous_commit')",
        )
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
            fsync: settings.0 == "on",
            synchronous_commit: settings.1 != "off",
        })
    }
}

impl Server for sqlx::Postgres {
    const NAME: &'static str = "PostgreSQL";

    fn insert_row(conn: &mut PgConnection) -> BoxFuture<'_, Result<(), sqlx::Error>> {
        Box::pin(async move {
            sqlx::query("INSERT INTO ordermq_yardstick_rows (v) VALUES ($1)")
                .bind(1_i64)
                .execute(conn)
                .await
                .map(drop)
        })
    }

    fn naive_payment(
        conn: &mut PgConnection,
        order_id: String,
    ) -> BoxFuture<'_, Result<(), sqlx::Error>> {
        Box::pin(naive_payment(conn, order_id))
    }
}

/// [`Server::naive_payment`] on this server.
async fn naive_payment(conn: &mut PgConnection, order_id: String) -> Result<(), sqlx::Error> {
    let order_id = order_id.as_str();
    let now = ordermq_domain::now_millis();
    let mut tx = conn.begin().await?;
    let paid = sqlx::query(
        "UPDATE ordermq_yardstick_orders SET status = 'PAID', payment_id = $1, paid_at = $2 \
         WHERE order_id = $3 AND status = 'UNPAID' AND amount = $4",
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
            "INSERT INTO ordermq_yardstick_outbox (msg_key, body, created_at) VALUES ($1, $2, $3)",
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
