//! The database yardsticks' loop, written once for every server: so many
//! connections each running one kind of transaction back to back for a
//! while, counted. What differs per server — its placeholders, its payment
//! statements — is the [`Server`] implementation in `postgres` and `mysql`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use super::BenchResult;

/// A database server the yardsticks run on.
pub(crate) trait Server: sqlx::Database {
    /// The server's name in error messages.
    const NAME: &'static str;

    /// One row inserted into `ordermq_yardstick_rows` (autocommit).
    fn insert_row(conn: &mut Self::Connection) -> BoxFuture<'_, Result<(), sqlx::Error>>;

    /// What a straightforward handler does per payment: one transaction
    /// with the guarded order update, the stock deduction and the outbox row.
    fn naive_payment(
        conn: &mut Self::Connection,
        order_id: String,
    ) -> BoxFuture<'_, Result<(), sqlx::Error>>;
}

/// The kind of transaction a loop repeats.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Loop {
    Insert,
    Pay,
}

/// Transactions per second of `kind` with `connections` at once.
pub(crate) async fn loop_rate<DB: Server>(
    pool: &sqlx::Pool<DB>,
    connections: usize,
    duration: Duration,
    kind: Loop,
) -> BenchResult<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let next_order = Arc::new(AtomicU64::new(0));
    let begun = Instant::now();
    let deadline = begun + duration;
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let pool = pool.clone();
            let done = done.clone();
            let next_order = next_order.clone();
            tokio::spawn(async move {
                let mut conn = pool.acquire().await?;
                while Instant::now() < deadline {
                    match kind {
                        Loop::Insert => DB::insert_row(&mut conn).await?,
                        Loop::Pay => {
                            let n = next_order.fetch_add(1, Ordering::Relaxed) + 1;
                            DB::naive_payment(&mut conn, format!("Y{n}")).await?;
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, sqlx::Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("{} yardstick: {e}", <DB as Server>::NAME))?;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / begun.elapsed().as_secs_f64())
}
