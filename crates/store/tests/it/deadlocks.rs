//! A batch that loses a lock race anyway — another session takes the same
//! orders in the other order (an operator's statement, an instance of an
//! older version) and the server fails the batch as a deadlock's victim —
//! runs again, transparently, and nothing of its first try stays. And a
//! payment takes no product's lock: it is answered while another session
//! holds its product's row. On PostgreSQL (SQLite has one writer; the
//! MariaDB form of these tests is not written yet: the batch's wait did not
//! show where it was looked for).

use std::time::{Duration, Instant};

use ordermq_store::{Backend, WriteOp, WriteResult};
use sqlx::{Connection, Executor, Row};

use super::helpers::{TestDb, new_order, notice, order_id, postgres, seed};

/// Waits (polling) until a session of this test's database (MySQL: of the
/// server) waits for a lock.
async fn until_a_session_waits_for_a_lock(conn: &mut sqlx::AnyConnection, backend: Backend) {
    let waiting = match backend {
        Backend::Postgres => {
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'"
        }
        _ => {
            "SELECT CAST(COUNT(*) AS SIGNED) AS n FROM information_schema.INNODB_TRX \
             WHERE trx_state = 'LOCK WAIT'"
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n: i64 = sqlx::query(waiting)
            .fetch_one(&mut *conn)
            .await
            .unwrap()
            .get("n");
        if n > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the batch never waited for a lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn a_batch_that_loses_a_deadlock_runs_again(db: TestDb) {
    let store = db.store.clone();
    seed(&store, "SKU-A", 100, 1_000).await;
    let (first, second) = (order_id(1), order_id(2));
    for (order, user) in [(&first, "u1"), (&second, "u2")] {
        store
            .create_order(&new_order(user, &[("SKU-A", 1)]), order, 1, None)
            .await
            .unwrap();
    }

    // Another session holds the second order, with more work done than the
    // batch will have (PostgreSQL fails the transaction whose
    // deadlock_timeout runs out first: the batch, which waits first).
    let mut other = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    let mut watcher = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    other.execute("BEGIN").await.unwrap();
    for _ in 0..20 {
        sqlx::query("UPDATE orders SET updated_at = updated_at WHERE order_id = $1")
            .bind(second.as_str())
            .execute(&mut other)
            .await
            .unwrap();
    }
    let paying = tokio::spawn({
        let store = store.clone();
        let pays = [
            WriteOp::Pay(notice(&second, "pay-2", 100)),
            WriteOp::Pay(notice(&first, "pay-1", 100)),
        ];
        async move { store.write_batch(&pays, 2).await }
    });
    // The batch holds the first order (orders are locked in id order,
    // whatever the batch's order) and waits for the second; this
    // connection now asks for the first: a deadlock, the batch its victim.
    until_a_session_waits_for_a_lock(&mut watcher, store.backend()).await;
    sqlx::query("SELECT order_id FROM orders WHERE order_id = $1 FOR UPDATE")
        .bind(first.as_str())
        .execute(&mut other)
        .await
        .expect("the batch, not this connection, is the deadlock's victim");
    other.execute("COMMIT").await.unwrap();

    let paid = paying.await.unwrap();
    assert!(
        matches!(
            paid[..],
            [WriteResult::Paid(Ok(_)), WriteResult::Paid(Ok(_))]
        ),
        "{paid:?}"
    );
    assert_eq!(store.stock("SKU-A").await.unwrap(), Some((1_000, 2)));
    let history: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM order_history WHERE to_status = 'PAID'")
            .fetch_one(&mut watcher)
            .await
            .unwrap()
            .get("n");
    assert_eq!(history, 2, "the lost try left nothing behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_that_loses_a_deadlock_runs_again_on_postgres() {
    if let Some(db) = postgres().await {
        a_batch_that_loses_a_deadlock_runs_again(db).await;
    }
}

/// A payment locks its orders and no product: it is answered while another
/// session holds its product's row (before migration 12 a payment deducted
/// its units, and every batch paying orders of one hot SKU — of every
/// writer and every instance — took turns on that row). On PostgreSQL,
/// whose batch is one statement.
async fn a_payment_waits_for_no_product(db: TestDb) {
    let store = db.store.clone();
    seed(&store, "SKU-A", 100, 1_000).await;
    let order = order_id(1);
    store
        .create_order(&new_order("u1", &[("SKU-A", 1)]), &order, 1, None)
        .await
        .unwrap();
    let mut other = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    other.execute("BEGIN").await.unwrap();
    other
        .execute("SELECT sku FROM products WHERE sku = 'SKU-A' FOR UPDATE")
        .await
        .unwrap();
    let pay = [WriteOp::Pay(notice(&order, "pay-1", 100))];
    let paid = tokio::time::timeout(Duration::from_secs(20), store.write_batch(&pay, 2)).await;
    other.execute("COMMIT").await.unwrap();
    let paid = paid.expect("the payment waited for its product's row");
    assert!(matches!(paid[..], [WriteResult::Paid(Ok(_))]), "{paid:?}");
    assert_eq!(store.stock("SKU-A").await.unwrap(), Some((1_000, 1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payment_waits_for_no_product_on_postgres() {
    if let Some(db) = postgres().await {
        a_payment_waits_for_no_product(db).await;
    }
}
