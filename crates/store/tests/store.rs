//! The store's rules, checked on SQLite and on a real PostgreSQL server.
//!
//! Every test runs once per backend. PostgreSQL tests need
//! `ORDERMQ_TEST_POSTGRES_URL` (an account allowed to create databases); each
//! test gets a fresh database. Without it they are skipped locally and fail
//! in CI (`CI` set), so CI can never pass without exercising PostgreSQL.

use std::sync::Arc;

use ordermq_domain::{
    Amount, CreateOrderError, Effect, FanoutState, NewOrder, OrderId, OrderLine, OrderStatus,
    PayOrderError, PaymentId, PaymentNotice, Quantity, Sku, System, UserId,
};
use ordermq_store::{Applied, DemoProduct, Store, StoreOptions};
use sqlx::Connection;

struct TestDb {
    store: Store,
    _dir: Option<tempfile::TempDir>,
}

async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/orders.db", dir.path().display());
    let store = Store::open(&url, &StoreOptions::default()).await.unwrap();
    TestDb {
        store,
        _dir: Some(dir),
    }
}

async fn postgres() -> Option<TestDb> {
    let Ok(admin_url) = std::env::var("ORDERMQ_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the store tests on PostgreSQL: set ORDERMQ_TEST_POSTGRES_URL"
        );
        eprintln!("skipping PostgreSQL: ORDERMQ_TEST_POSTGRES_URL is not set");
        return None;
    };
    sqlx::any::install_default_drivers();
    let name = format!("ordermq_test_{:016x}", fastrand::u64(..));
    let mut admin = sqlx::AnyConnection::connect(&admin_url).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let (base, _) = admin_url
        .rsplit_once('/')
        .expect("URL with a database name");
    let url = format!("{base}/{name}");
    let store = Store::open(&url, &StoreOptions::default()).await.unwrap();
    Some(TestDb { store, _dir: None })
}

/// Runs `test` on SQLite, then on PostgreSQL when available.
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
        }
    };
}

fn new_order(user: &str, items: &[(&str, i64)]) -> NewOrder {
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

fn notice(order: &OrderId, payment: &str, amount: i64) -> PaymentNotice {
    PaymentNotice {
        order_id: order.clone(),
        payment_id: PaymentId::parse(payment).unwrap(),
        amount: Amount::parse(amount).unwrap(),
    }
}

async fn seed(store: &Store, sku: &'static str, price: i64, stock: i64) {
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

fn order_id(n: u32) -> OrderId {
    OrderId::generate(1_700_000_000_000, n)
}

async fn reserve_then_pay_moves_stock_and_writes_one_event(store: Store) {
    seed(&store, "A", 250, 10).await;
    seed(&store, "B", 1000, 5).await;
    let id = order_id(1);
    let order = store
        .create_order(&new_order("u1", &[("B", 1), ("A", 3)]), &id, 1)
        .await
        .unwrap();
    assert_eq!(order.amount.minor_units(), 3 * 250 + 1000);
    assert_eq!(order.status, OrderStatus::Unpaid);
    assert_eq!(store.stock("A").await.unwrap(), Some((10, 3)));
    let available: Vec<_> = store
        .products()
        .await
        .unwrap()
        .iter()
        .map(|p| p.stock)
        .collect();
    assert_eq!(available, vec![7, 4]);
    assert_eq!(
        store.outbox_backlog().await.unwrap(),
        0,
        "creating publishes nothing yet"
    );

    let receipt = store.pay_order(&notice(&id, "p1", 1750), 2).await.unwrap();
    assert_eq!(receipt.status, OrderStatus::Paid);
    assert!(!receipt.duplicate && !receipt.refund_required);
    assert_eq!(store.stock("A").await.unwrap(), Some((7, 0)));
    assert_eq!(store.stock("B").await.unwrap(), Some((4, 0)));
    assert_eq!(store.outbox_backlog().await.unwrap(), 1);

    let again = store.pay_order(&notice(&id, "p1", 1750), 3).await.unwrap();
    assert!(again.duplicate && !again.refund_required);
    assert_eq!(
        store.outbox_backlog().await.unwrap(),
        1,
        "a duplicate notice publishes nothing"
    );
    assert_eq!(store.stock("A").await.unwrap(), Some((7, 0)));

    let view = store.order(&id).await.unwrap().unwrap();
    assert_eq!(view.status, OrderStatus::Paid);
    assert_eq!(view.paid_at, Some(2));
    assert_eq!(view.history.len(), 2);
    assert!(view.fanout.values().all(|s| *s == FanoutState::Pending));
}
on_every_backend!(
    reserve_then_pay,
    reserve_then_pay_moves_stock_and_writes_one_event
);

async fn rejected_orders_reserve_nothing(store: Store) {
    seed(&store, "A", 100, 2).await;
    let err = store
        .create_order(&new_order("u1", &[("A", 1), ("ZZZ", 1)]), &order_id(1), 1)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CreateOrderError::UnknownSku(ref s) if s == "ZZZ"),
        "{err}"
    );
    let err = store
        .create_order(&new_order("u1", &[("A", 3)]), &order_id(2), 1)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            CreateOrderError::OutOfStock {
                available: 2,
                requested: 3,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(store.stock("A").await.unwrap(), Some((2, 0)));
    assert!(store.order(&order_id(1)).await.unwrap().is_none());
}
on_every_backend!(rejected_orders, rejected_orders_reserve_nothing);

async fn bad_payments_change_nothing_and_second_payment_is_owed_back(store: Store) {
    seed(&store, "A", 100, 5).await;
    let id = order_id(1);
    store
        .create_order(&new_order("u1", &[("A", 2)]), &id, 1)
        .await
        .unwrap();

    let err = store
        .pay_order(&notice(&id, "p1", 199), 2)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        PayOrderError::AmountMismatch {
            expected: 200,
            notified: 199
        }
    ));
    let err = store
        .pay_order(&notice(&order_id(9), "p1", 200), 2)
        .await
        .unwrap_err();
    assert!(matches!(err, PayOrderError::OrderNotFound(_)));
    assert_eq!(
        store.order(&id).await.unwrap().unwrap().status,
        OrderStatus::Unpaid
    );
    assert_eq!(store.stock("A").await.unwrap(), Some((5, 2)));
    assert_eq!(store.outbox_backlog().await.unwrap(), 0);

    store.pay_order(&notice(&id, "p1", 200), 3).await.unwrap();
    let second = store.pay_order(&notice(&id, "p2", 200), 4).await.unwrap();
    assert!(second.refund_required, "a second payment must be owed back");
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.payments_refund_required, 1);
    assert_eq!(store.outbox_backlog().await.unwrap(), 1);
    assert_eq!(store.stock("A").await.unwrap(), Some((3, 0)));

    // A payment id that paid one order cannot pay another.
    let other = order_id(2);
    store
        .create_order(&new_order("u1", &[("A", 1)]), &other, 5)
        .await
        .unwrap();
    let err = store
        .pay_order(&notice(&other, "p1", 100), 6)
        .await
        .unwrap_err();
    assert!(
        matches!(err, PayOrderError::PaymentIdReused { .. }),
        "{err}"
    );
    assert_eq!(
        store.order(&other).await.unwrap().unwrap().status,
        OrderStatus::Unpaid
    );
}
on_every_backend!(
    bad_payments,
    bad_payments_change_nothing_and_second_payment_is_owed_back
);

async fn concurrent_payments_of_one_order_transition_once(store: Store) {
    seed(&store, "A", 100, 3).await;
    let id = order_id(1);
    store
        .create_order(&new_order("u1", &[("A", 1)]), &id, 1)
        .await
        .unwrap();
    let store = Arc::new(store);
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let (store, id) = (store.clone(), id.clone());
            // Half repeat payment p0, half are distinct payments.
            let payment = if i % 2 == 0 {
                "p0".to_owned()
            } else {
                format!("p{i}")
            };
            tokio::spawn(async move { store.pay_order(&notice(&id, &payment, 100), 2).await })
        })
        .collect();
    let mut fresh = 0;
    for task in tasks {
        let receipt = task.await.unwrap().unwrap();
        if !receipt.duplicate && !receipt.refund_required {
            fresh += 1;
        }
    }
    assert_eq!(fresh, 1, "exactly one notice transitions the order");
    assert_eq!(store.stock("A").await.unwrap(), Some((2, 0)));
    assert_eq!(store.outbox_backlog().await.unwrap(), 1);
}
on_every_backend!(
    concurrent_payments,
    concurrent_payments_of_one_order_transition_once
);

async fn last_unit_has_exactly_one_winner(store: Store) {
    seed(&store, "LAST", 100, 1).await;
    let store = Arc::new(store);
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .create_order(&new_order("u1", &[("LAST", 1)]), &order_id(i), 1)
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => won += 1,
            Err(CreateOrderError::OutOfStock { .. }) => {}
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(store.stock("LAST").await.unwrap(), Some((1, 1)));
}
on_every_backend!(last_unit, last_unit_has_exactly_one_winner);

async fn outbox_rows_are_leased_acknowledged_and_retried(store: Store) {
    seed(&store, "A", 100, 5).await;
    for i in 0..3 {
        let id = order_id(i);
        store
            .create_order(&new_order("u1", &[("A", 1)]), &id, 1)
            .await
            .unwrap();
        store
            .pay_order(&notice(&id, &format!("p{i}"), 100), 2)
            .await
            .unwrap();
    }
    let claimed = store.claim_outbox("relay-a", 2, 10_000, 100).await.unwrap();
    assert_eq!(claimed.len(), 2);
    assert_eq!(claimed[0].tag, "OrderPaid");
    assert_eq!(claimed[0].topic, "TopicOrderPaySuccess");
    assert_eq!(claimed[0].key, order_id(0).to_string());
    assert_eq!(claimed[0].event_id, format!("OrderPaid:{}", order_id(0)));
    let others = store
        .claim_outbox("relay-b", 10, 10_000, 101)
        .await
        .unwrap();
    assert_eq!(
        others.len(),
        1,
        "leased rows are not handed to another relay"
    );
    store.mark_sent(&[claimed[0].id], 102).await.unwrap();
    store
        .retry_outbox(claimed[1].id, "broker down", 5_000)
        .await
        .unwrap();
    assert_eq!(store.outbox_backlog().await.unwrap(), 2);
    assert!(
        store
            .claim_outbox("relay-a", 10, 10_000, 4_999)
            .await
            .unwrap()
            .is_empty()
    );
    let retried = store
        .claim_outbox("relay-a", 10, 10_000, 5_000)
        .await
        .unwrap();
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0].id, claimed[1].id);
    // relay-b crashed holding its row: the lease expires and it is claimed again.
    let expired = store
        .claim_outbox("relay-a", 10, 10_000, 10_101)
        .await
        .unwrap();
    assert_eq!(
        expired.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![others[0].id]
    );
}
on_every_backend!(
    outbox_leases,
    outbox_rows_are_leased_acknowledged_and_retried
);

async fn effects_apply_once_and_report_fanout(store: Store) {
    seed(&store, "A", 100, 5).await;
    let id = order_id(1);
    store
        .create_order(&new_order("u1", &[("A", 1)]), &id, 1)
        .await
        .unwrap();
    store.pay_order(&notice(&id, "p1", 100), 2).await.unwrap();
    let event_id = format!("OrderPaid:{id}");
    let user = UserId::parse("u1").unwrap();
    let points = Effect::Points {
        user_id: user.clone(),
        order_id: id.clone(),
        points: 1,
    };
    assert_eq!(
        store
            .apply_effect(&event_id, "m1", &points, 3)
            .await
            .unwrap(),
        Applied::Now
    );
    assert_eq!(
        store
            .apply_effect(&event_id, "m2", &points, 4)
            .await
            .unwrap(),
        Applied::Already
    );
    assert!(store.is_applied(System::Credit, &event_id).await.unwrap());
    assert!(
        !store
            .is_applied(System::Marketing, &event_id)
            .await
            .unwrap()
    );

    store
        .record_failure(
            System::Warehouse,
            &event_id,
            id.as_str(),
            17,
            "carrier down",
            true,
            5,
        )
        .await
        .unwrap();
    store
        .record_failure(
            System::Push,
            &event_id,
            id.as_str(),
            1,
            "sms timeout",
            false,
            5,
        )
        .await
        .unwrap();
    let view = store.order(&id).await.unwrap().unwrap();
    assert_eq!(view.fanout[&System::Credit], FanoutState::Done);
    assert_eq!(view.fanout[&System::Marketing], FanoutState::Pending);
    assert_eq!(view.fanout[&System::Push], FanoutState::Pending);
    assert_eq!(view.fanout[&System::Warehouse], FanoutState::Failed);

    let shipment = Effect::Shipment {
        user_id: user.clone(),
        order_id: id.clone(),
        tracking_no: "T1".into(),
    };
    store
        .apply_effect(&event_id, "m3", &shipment, 6)
        .await
        .unwrap();
    let view = store.order(&id).await.unwrap().unwrap();
    assert_eq!(
        view.fanout[&System::Warehouse],
        FanoutState::Done,
        "a replay heals a failure"
    );

    let activity = store.user_activity(&user).await.unwrap();
    assert_eq!(activity.points_total, 1);
    assert_eq!(activity.shipments.len(), 1);
    assert!(activity.coupons.is_empty());
    let counts = store.effect_counts_by_order(System::Credit).await.unwrap();
    assert_eq!(counts.get(id.as_str()), Some(&1));
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.systems[&System::Credit].applied, 1);
    assert_eq!(stats.systems[&System::Warehouse].failed, 0);
    assert_eq!(stats.orders_by_status.get("PAID"), Some(&1));
}
on_every_backend!(effects, effects_apply_once_and_report_fanout);

#[tokio::test]
async fn reopening_keeps_data_and_seeding_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/sub/orders.db", dir.path().display());
    let catalog = [DemoProduct {
        sku: "A",
        name: "a",
        price: 1,
        stock: 3,
    }];
    let store = Store::open(&url, &StoreOptions::default()).await.unwrap();
    assert_eq!(store.seed_catalog(&catalog).await.unwrap(), 1);
    store
        .create_order(&new_order("u1", &[("A", 1)]), &order_id(1), 1)
        .await
        .unwrap();
    store.close().await;
    let store = Store::open(&url, &StoreOptions::default()).await.unwrap();
    assert_eq!(store.seed_catalog(&catalog).await.unwrap(), 0);
    assert_eq!(store.stock("A").await.unwrap(), Some((3, 1)));
    assert!(dir.path().join("sub/warehouse.db").exists());
}

async fn group_commit_rolls_back_only_the_rejected_operations(store: Store) {
    use ordermq_store::{WriteOp, WriteResult};
    seed(&store, "A", 100, 3).await;
    let create = |n: u32, q: i64| WriteOp::Create {
        order: new_order("u1", &[("A", q)]),
        order_id: order_id(n),
    };
    let results = store
        .write_batch(
            &[
                create(1, 2),
                create(2, 2), // only 1 left: out of stock
                create(3, 1),
                WriteOp::Pay(notice(&order_id(1), "p1", 999)), // wrong amount
            ],
            1,
        )
        .await;
    assert!(matches!(results[0], WriteResult::Created(Ok(_))));
    assert!(matches!(
        results[1],
        WriteResult::Created(Err(CreateOrderError::OutOfStock { .. }))
    ));
    assert!(matches!(results[2], WriteResult::Created(Ok(_))));
    assert!(matches!(
        results[3],
        WriteResult::Paid(Err(PayOrderError::AmountMismatch { .. }))
    ));
    assert_eq!(store.stock("A").await.unwrap(), Some((3, 3)));
    assert!(store.order(&order_id(2)).await.unwrap().is_none());

    let results = store
        .write_batch(
            &[
                WriteOp::Pay(notice(&order_id(1), "p1", 200)),
                WriteOp::Pay(notice(&order_id(3), "p3", 100)),
                WriteOp::Pay(notice(&order_id(1), "p1", 200)), // the same notice again, same batch
            ],
            2,
        )
        .await;
    let receipts: Vec<_> = results
        .into_iter()
        .map(|r| match r {
            WriteResult::Paid(Ok(receipt)) => receipt,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert!(!receipts[0].duplicate && !receipts[1].duplicate);
    assert!(receipts[2].duplicate);
    assert_eq!(store.stock("A").await.unwrap(), Some((0, 0)));
    assert_eq!(store.outbox_backlog().await.unwrap(), 2);
}
on_every_backend!(
    group_commit,
    group_commit_rolls_back_only_the_rejected_operations
);

async fn batched_effects_skip_what_was_applied(store: Store) {
    use ordermq_store::EffectRecord;
    let record = |n: u32| EffectRecord {
        event_id: format!("OrderPaid:{}", order_id(n)),
        msg_id: format!("m{n}"),
        effect: Effect::Points {
            user_id: UserId::parse("u1").unwrap(),
            order_id: order_id(n),
            points: 5,
        },
    };
    store
        .apply_effect(&record(2).event_id, "m2", &record(2).effect, 1)
        .await
        .unwrap();
    let outcomes = store
        .apply_effects(&[record(1), record(2), record(3)], 2)
        .await
        .unwrap();
    assert_eq!(outcomes, vec![Applied::Now, Applied::Already, Applied::Now]);
    let applied = store
        .applied_among(
            System::Credit,
            &[record(1).event_id, "OrderPaid:nope".into()],
        )
        .await
        .unwrap();
    assert_eq!(applied.len(), 1);
    assert_eq!(store.applied_times(System::Credit).await.unwrap().len(), 3);
    let mixed = EffectRecord {
        effect: Effect::Shipment {
            user_id: UserId::parse("u1").unwrap(),
            order_id: order_id(9),
            tracking_no: "T".into(),
        },
        ..record(9)
    };
    assert!(store.apply_effects(&[record(4), mixed], 3).await.is_err());
    assert_eq!(
        store
            .effect_counts_by_order(System::Credit)
            .await
            .unwrap()
            .len(),
        3
    );
}
on_every_backend!(batched_effects, batched_effects_skip_what_was_applied);
