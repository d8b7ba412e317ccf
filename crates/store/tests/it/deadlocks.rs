//! A batch that loses a lock race anyway — another session takes the same
//! products in the other order (an operator's statement, an instance of an
//! older version) and the server fails the batch as a deadlock's victim —
//! runs again, transparently, and nothing of its first try stays. On
//! PostgreSQL (SQLite has one writer; the MariaDB form of this test is not
//! written yet: the batch's wait did not show where it was looked for).

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
    seed(&store, "SKU-B", 100, 1_000).await;
    let order = order_id(1);
    let created = store
        .write_batch(
            &[WriteOp::Create {
                order: new_order("u1", &[("SKU-A", 1), ("SKU-B", 1)]),
                order_id: order.clone(),
                close_after_ms: None,
                limits: ordermq_domain::UserLimits::OFF,
            }],
            1,
        )
        .await;
    assert!(
        matches!(created[..], [WriteResult::Created(Ok(_))]),
        "{created:?}"
    );

    // Another session holds SKU-B, with more work done than the batch will
    // have (InnoDB fails the lighter transaction; PostgreSQL the one whose
    // deadlock_timeout runs out first: the batch, which waits first).
    let mut other = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    let mut watcher = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    other.execute("BEGIN").await.unwrap();
    for _ in 0..20 {
        other
            .execute("UPDATE products SET on_hand = on_hand + 1 WHERE sku = 'SKU-B'")
            .await
            .unwrap();
    }
    let paying = tokio::spawn({
        let store = store.clone();
        let pay = WriteOp::Pay(notice(&order, "pay-1", 200));
        async move { store.write_batch(&[pay], 2).await }
    });
    // The batch holds SKU-A (products are locked in SKU order) and waits for
    // SKU-B; this connection now asks for SKU-A: a deadlock, the batch its victim.
    until_a_session_waits_for_a_lock(&mut watcher, store.backend()).await;
    other
        .execute("SELECT sku FROM products WHERE sku = 'SKU-A' FOR UPDATE")
        .await
        .expect("the batch, not this connection, is the deadlock's victim");
    other.execute("COMMIT").await.unwrap();

    let paid = paying.await.unwrap();
    assert!(matches!(paid[..], [WriteResult::Paid(Ok(_))]), "{paid:?}");
    assert_eq!(store.stock("SKU-A").await.unwrap(), Some((999, 0)));
    assert_eq!(store.stock("SKU-B").await.unwrap(), Some((1_019, 0)));
    let history: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM order_history WHERE to_status = 'PAID'")
            .fetch_one(&mut watcher)
            .await
            .unwrap()
            .get("n");
    assert_eq!(history, 1, "the lost try left nothing behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_that_loses_a_deadlock_runs_again_on_postgres() {
    if let Some(db) = postgres().await {
        a_batch_that_loses_a_deadlock_runs_again(db).await;
    }
}

/// A payment batch locks its products before any order, as every batch
/// does: while it waits for a product another session holds, its order is
/// still free. (Had it updated the order first, a close of that order
/// holding the product would deadlock with it.) On PostgreSQL, whose batch
/// is one statement: the lock order inside it is its plan's, pinned down here.
async fn a_payment_waiting_for_its_products_holds_no_order(db: TestDb) {
    let store = db.store.clone();
    seed(&store, "SKU-A", 100, 1_000).await;
    let order = order_id(1);
    store
        .create_order(&new_order("u1", &[("SKU-A", 1)]), &order, 1, None)
        .await
        .unwrap();
    let mut other = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    let mut watcher = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    other.execute("BEGIN").await.unwrap();
    other
        .execute("SELECT sku FROM products WHERE sku = 'SKU-A' FOR UPDATE")
        .await
        .unwrap();
    let paying = tokio::spawn({
        let store = store.clone();
        let pay = WriteOp::Pay(notice(&order, "pay-1", 100));
        async move { store.write_batch(&[pay], 2).await }
    });
    until_a_session_waits_for_a_lock(&mut watcher, store.backend()).await;
    let free = sqlx::query("SELECT order_id FROM orders WHERE order_id = $1 FOR UPDATE NOWAIT")
        .bind(order.as_str())
        .fetch_one(&mut watcher)
        .await
        .map(|_| ());
    other.execute("COMMIT").await.unwrap();
    assert!(
        free.is_ok(),
        "the batch locked the order before its product: {free:?}"
    );
    let paid = paying.await.unwrap();
    assert!(matches!(paid[..], [WriteResult::Paid(Ok(_))]), "{paid:?}");
    assert_eq!(store.stock("SKU-A").await.unwrap(), Some((999, 0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payment_waiting_for_its_products_holds_no_order_on_postgres() {
    if let Some(db) = postgres().await {
        a_payment_waiting_for_its_products_holds_no_order(db).await;
    }
}
