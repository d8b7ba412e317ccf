//! Group-commit batches as PostgreSQL runs them: several at once, each
//! payment run set-based. A hot SKU is never oversold however the batches
//! interleave, and a batch mixing good and bad payments decides each one
//! exactly as paying them one by one does (same answers, same rows).

use futures_util::future::join_all;
use ordermq_domain::{OrderId, PaymentNotice, UserLimits};
use ordermq_store::{Store, WriteOp, WriteResult};

use super::differential::tables;
use super::helpers::{
    TestDb, fanout_only, mysql, new_order, notice, on_every_backend, order_id, postgres,
    postgres_with, seed, sqlite,
};

fn create(n: u32, user: &str, items: &[(&str, i64)]) -> WriteOp {
    WriteOp::Create {
        order: new_order(user, items),
        order_id: order_id(n),
        close_after_ms: None,
        limits: UserLimits::OFF,
    }
}

/// Four batches at once, as four order writers run them.
async fn concurrently(store: &Store, batches: Vec<Vec<WriteOp>>, now: i64) -> Vec<WriteResult> {
    join_all(batches.iter().map(|ops| store.write_batch(ops, now)))
        .await
        .into_iter()
        .flatten()
        .collect()
}

async fn concurrent_batches_never_oversell_a_hot_sku(store: Store) {
    seed(&store, "HOT", 100, 30).await;
    // 40 one-unit orders in four concurrent batches: exactly 30 fit.
    let creates = (0..4)
        .map(|b| {
            (0..10)
                .map(|i| create(b * 10 + i + 1, &format!("u{b}-{i}"), &[("HOT", 1)]))
                .collect()
        })
        .collect();
    let created: Vec<OrderId> = concurrently(&store, creates, 1)
        .await
        .into_iter()
        .filter_map(|r| match r {
            WriteResult::Created(Ok(view)) => Some(view.order_id),
            WriteResult::Created(Err(_)) => None,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(created.len(), 30);
    assert_eq!(store.stock("HOT").await.unwrap(), Some((30, 30)));

    // Each paid in one of four concurrent batches, and notified again in
    // the next one: the copies race their originals.
    let pay = |id: &OrderId| WriteOp::Pay(notice(id, &format!("p-{id}"), 100));
    let mut batches: Vec<Vec<WriteOp>> = vec![Vec::new(); 4];
    for (i, id) in created.iter().enumerate() {
        batches[i % 4].push(pay(id));
        batches[(i + 1) % 4].push(pay(id));
    }
    let results = concurrently(&store, batches, 2).await;
    let mut fresh = 0;
    for result in results {
        match result {
            WriteResult::Paid(Ok(receipt)) => {
                assert!(!receipt.refund_required, "{receipt:?}");
                fresh += usize::from(!receipt.duplicate);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(fresh, 30, "each order paid exactly once");
    // Sold: still counted as taken (`catalog`), never released.
    assert_eq!(store.stock("HOT").await.unwrap(), Some((30, 30)));
    assert_eq!(store.outbox_backlog().await.unwrap(), 30);
}
on_every_backend!(hot_sku, concurrent_batches_never_oversell_a_hot_sku);

/// Two batches at once touching two SKUs in opposite orders, over and over:
/// creates, then payments, then closes. Each batch locks its products in
/// one order first, so neither ever waits for the other's second product
/// while holding its first (PostgreSQL would fail one of them with
/// "deadlock detected" after `deadlock_timeout`).
async fn batches_touching_skus_in_opposite_orders_never_deadlock(store: Store) {
    seed(&store, "SKU-A", 100, 100_000).await;
    seed(&store, "SKU-B", 100, 100_000).await;
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    for round in 0..30 {
        let (a1, b1, b2, a2) = (next(), next(), next(), next());
        let creates = vec![
            vec![
                create(a1, &format!("a{round}"), &[("SKU-A", 1)]),
                create(b1, &format!("b{round}"), &[("SKU-B", 1)]),
            ],
            vec![
                create(b2, &format!("c{round}"), &[("SKU-B", 1)]),
                create(a2, &format!("d{round}"), &[("SKU-A", 1)]),
            ],
        ];
        for result in concurrently(&store, creates, 1).await {
            assert!(matches!(result, WriteResult::Created(Ok(_))), "{result:?}");
        }
        let pay = |n: u32| WriteOp::Pay(notice(&order_id(n), &format!("p-{n}"), 100));
        let pays = vec![vec![pay(a1), pay(b1)], vec![pay(b2), pay(a2)]];
        for result in concurrently(&store, pays, 2).await {
            assert!(matches!(result, WriteResult::Paid(Ok(_))), "{result:?}");
        }
        let (a3, b3, b4, a4) = (next(), next(), next(), next());
        let unpaid = vec![
            vec![
                create(a3, &format!("e{round}"), &[("SKU-A", 1)]),
                create(b3, &format!("f{round}"), &[("SKU-B", 1)]),
            ],
            vec![
                create(b4, &format!("g{round}"), &[("SKU-B", 1)]),
                create(a4, &format!("h{round}"), &[("SKU-A", 1)]),
            ],
        ];
        for result in concurrently(&store, unpaid, 3).await {
            assert!(matches!(result, WriteResult::Created(Ok(_))), "{result:?}");
        }
        let close = |n: u32| WriteOp::Close(order_id(n));
        let closes = vec![vec![close(a3), close(b3)], vec![close(b4), close(a4)]];
        for result in concurrently(&store, closes, 4).await {
            assert!(matches!(result, WriteResult::Closed(Ok(_))), "{result:?}");
        }
    }
    // 60 paid of each, still taken; the closed orders' units are back.
    assert_eq!(store.stock("SKU-A").await.unwrap(), Some((100_000, 60)));
    assert_eq!(store.stock("SKU-B").await.unwrap(), Some((100_000, 60)));
}
on_every_backend!(
    opposite_orders,
    batches_touching_skus_in_opposite_orders_never_deadlock
);

/// Orders 1–6 on A (100) and B (50): 5 closed, 6 already paid (`p6`).
async fn mixed_setup(store: &Store) {
    seed(store, "A", 100, 10).await;
    seed(store, "B", 50, 10).await;
    for (n, items) in [
        (1, &[("A", 1)][..]),
        (2, &[("A", 2)]),
        (3, &[("B", 1)]),
        (4, &[("A", 1), ("B", 2)]),
        (6, &[("B", 1)]),
    ] {
        let op = create(n, &format!("u{n}"), items);
        assert!(matches!(
            &store.write_batch(&[op], 1).await[..],
            [WriteResult::Created(Ok(_))]
        ));
    }
    let closing = WriteOp::Create {
        order: new_order("u5", &[("A", 1)]),
        order_id: order_id(5),
        close_after_ms: Some(0),
        limits: UserLimits::OFF,
    };
    store.write_batch(&[closing], 1).await;
    assert!(matches!(
        &store.write_batch(&[WriteOp::Close(order_id(5))], 2).await[..],
        [WriteResult::Closed(Ok(_))]
    ));
    store
        .pay_order(&notice(&order_id(6), "p6", 50), 2)
        .await
        .unwrap();
}

/// Good payments among a duplicate in the batch, a wrong amount, a payment
/// id reused for another order, an unknown order, a closed order, a
/// duplicate of an earlier payment and a second payment of a paid order.
fn mixed_notices() -> Vec<PaymentNotice> {
    vec![
        notice(&order_id(1), "p1", 100),
        notice(&order_id(2), "p2", 999),
        notice(&order_id(1), "p1", 100),
        notice(&order_id(3), "p1", 50),
        notice(&order_id(99), "p99", 100),
        notice(&order_id(5), "p5", 100),
        notice(&order_id(6), "p6", 50),
        notice(&order_id(6), "p6b", 50),
        notice(&order_id(4), "p4", 200),
        notice(&order_id(3), "p3", 50),
        notice(&order_id(2), "p2", 200),
    ]
}

async fn mixed_batch_is_decided_as_one_by_one(batched: TestDb, one_by_one: TestDb) {
    mixed_setup(&batched.store).await;
    mixed_setup(&one_by_one.store).await;
    let ops: Vec<WriteOp> = mixed_notices().into_iter().map(WriteOp::Pay).collect();
    let in_batch: Vec<String> = batched
        .store
        .write_batch(&ops, 3)
        .await
        .into_iter()
        .map(|r| match r {
            WriteResult::Paid(r) => format!("{r:?}"),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    let mut alone = Vec::new();
    for notice in mixed_notices() {
        alone.push(format!(
            "{:?}",
            one_by_one.store.pay_order(&notice, 3).await
        ));
    }
    assert_eq!(in_batch, alone);
    assert_eq!(tables(&batched).await, tables(&one_by_one).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mixed_batch_is_decided_as_one_by_one_on_sqlite() {
    mixed_batch_is_decided_as_one_by_one(sqlite().await, sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mixed_batch_is_decided_as_one_by_one_on_postgres() {
    let options = fanout_only();
    if let (Some(batched), Some(alone)) =
        (postgres_with(&options).await, postgres_with(&options).await)
    {
        mixed_batch_is_decided_as_one_by_one(batched, alone).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mixed_batch_is_decided_as_one_by_one_on_mysql() {
    if let (Some(batched), Some(alone)) = (mysql().await, mysql().await) {
        mixed_batch_is_decided_as_one_by_one(batched, alone).await;
    }
}
