//! The store's rules, checked on SQLite and on a real PostgreSQL server.

use std::sync::Arc;

use ordermq_domain::view::RefundView;
use ordermq_domain::{
    Amount, CreateOrderError, Effect, FanoutState, OrderEvent, OrderId, OrderLine, OrderStatus,
    PayOrderError, Quantity, RefundError, RefundId, RefundStatus, Sku, System, UserId,
};
use ordermq_store::{Applied, DemoProduct, OutboxRetry, Store, StoreOptions};
use sqlx::Connection;

use crate::helpers::*;

/// What can still be ordered of each product, by SKU.
async fn available(store: &Store) -> Vec<i64> {
    store
        .products()
        .await
        .unwrap()
        .iter()
        .map(|p| p.stock)
        .collect()
}

async fn reserve_then_pay_keeps_the_units_and_writes_one_event(store: Store) {
    seed(&store, "A", 250, 10).await;
    seed(&store, "B", 1000, 5).await;
    let id = order_id(1);
    let order = store
        .create_order(&new_order("u1", &[("B", 1), ("A", 3)]), &id, 1, None)
        .await
        .unwrap();
    assert_eq!(order.amount.minor_units(), 3 * 250 + 1000);
    assert_eq!(order.status, OrderStatus::Unpaid);
    assert_eq!(store.stock("A").await.unwrap(), Some((10, 3)));
    assert_eq!(available(&store).await, vec![7, 4]);
    assert_eq!(
        store.outbox_backlog().await.unwrap(),
        0,
        "creating publishes nothing yet"
    );

    let receipt = store.pay_order(&notice(&id, "p1", 1750), 2).await.unwrap();
    assert_eq!(receipt.status, OrderStatus::Paid);
    assert!(!receipt.duplicate && !receipt.refund_required);
    // The paid order's units stay reserved: sold, not available again.
    assert_eq!(store.stock("A").await.unwrap(), Some((10, 3)));
    assert_eq!(store.stock("B").await.unwrap(), Some((5, 1)));
    assert_eq!(available(&store).await, vec![7, 4]);
    assert_eq!(store.outbox_backlog().await.unwrap(), 1);

    let again = store.pay_order(&notice(&id, "p1", 1750), 3).await.unwrap();
    assert!(again.duplicate && !again.refund_required);
    assert_eq!(
        store.outbox_backlog().await.unwrap(),
        1,
        "a duplicate notice publishes nothing"
    );
    assert_eq!(store.stock("A").await.unwrap(), Some((10, 3)));

    let view = store.order(&id).await.unwrap().unwrap();
    assert_eq!(view.status, OrderStatus::Paid);
    assert_eq!(view.paid_at, Some(2));
    assert_eq!(view.history.len(), 2);
    assert!(view.fanout.values().all(|s| *s == FanoutState::Pending));
}
on_every_backend!(
    reserve_then_pay,
    reserve_then_pay_keeps_the_units_and_writes_one_event
);

async fn rejected_orders_reserve_nothing(store: Store) {
    seed(&store, "A", 100, 2).await;
    let err = store
        .create_order(
            &new_order("u1", &[("A", 1), ("ZZZ", 1)]),
            &order_id(1),
            1,
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, CreateOrderError::UnknownSku(ref s) if s == "ZZZ"),
        "{err}"
    );
    let err = store
        .create_order(&new_order("u1", &[("A", 3)]), &order_id(2), 1, None)
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
        .create_order(&new_order("u1", &[("A", 2)]), &id, 1, None)
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
    assert_eq!(stats.refunds_by_status.get("REQUESTED"), Some(&1));
    // OrderPaid, and the refund of the second payment.
    assert_eq!(store.outbox_backlog().await.unwrap(), 2);
    assert_eq!(store.stock("A").await.unwrap(), Some((5, 2)));

    // A payment id that paid one order cannot pay another.
    let other = order_id(2);
    store
        .create_order(&new_order("u1", &[("A", 1)]), &other, 5, None)
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
        .create_order(&new_order("u1", &[("A", 1)]), &id, 1, None)
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
    assert_eq!(store.stock("A").await.unwrap(), Some((3, 1)));
    // One OrderPaid, and one refund per distinct other payment (p1, p3, …, p15).
    assert_eq!(store.outbox_backlog().await.unwrap(), 9);
    let order = store.order(&id).await.unwrap().unwrap();
    assert_eq!(order.refunds.len(), 8);
    assert!(
        order
            .refunds
            .iter()
            .all(|r| r.full && r.amount.minor_units() == 100)
    );
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
                    .create_order(&new_order("u1", &[("LAST", 1)]), &order_id(i), 1, None)
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

/// A relay round riding in a batch of payments claims their events (it runs
/// after them) next to older due rows; a rejected payment's event exists
/// nowhere; the claimed rows are leased to the round's relay.
async fn a_batch_hands_its_payments_events_to_its_relay_round(store: Store) {
    use ordermq_store::{WriteOp, WriteResult};
    seed(&store, "A", 100, 5).await;
    for i in 0..3 {
        store
            .create_order(&new_order("u1", &[("A", 1)]), &order_id(i), 1, None)
            .await
            .unwrap();
    }
    // Paid before the batch: due, unclaimed.
    store
        .pay_order(&notice(&order_id(0), "p0", 100), 2)
        .await
        .unwrap();
    let results = store
        .write_batch(
            &[
                WriteOp::Pay(notice(&order_id(1), "p1", 100)),
                WriteOp::Pay(notice(&order_id(2), "p2", 999)),
                WriteOp::RelayOutbox {
                    owner: "relay-a".into(),
                    acked: Vec::new(),
                    acked_at: 3,
                    limit: 10,
                    lease_ms: 10_000,
                },
            ],
            3,
        )
        .await;
    assert!(matches!(results[0], WriteResult::Paid(Ok(_))));
    assert!(matches!(
        results[1],
        WriteResult::Paid(Err(PayOrderError::AmountMismatch { .. }))
    ));
    let WriteResult::Relayed(Ok(claimed)) = &results[2] else {
        panic!("relay round: {:?}", results[2]);
    };
    assert_eq!(
        claimed
            .iter()
            .map(|m| m.event_id.as_str())
            .collect::<Vec<_>>(),
        vec![
            format!("OrderPaid:{}", order_id(0)),
            format!("OrderPaid:{}", order_id(1))
        ],
        "the older row and the batch's own event, in outbox order"
    );
    assert!(claimed[0].id < claimed[1].id);
    assert_eq!(claimed[1].topic, "TopicOrderPaySuccess");
    assert_eq!(claimed[1].key, order_id(1).to_string());
    let event = OrderEvent::from_json(claimed[1].body.as_bytes()).unwrap();
    assert_eq!(event.event_id(), claimed[1].event_id);
    // Both are reserved for relay-a until the lease ends, then anyone's.
    assert!(
        store
            .claim_outbox("relay-b", 10, 10_000, 4)
            .await
            .unwrap()
            .is_empty()
    );
    let expired = store
        .claim_outbox("relay-b", 10, 10_000, 10_003)
        .await
        .unwrap();
    assert_eq!(
        expired.iter().map(|m| m.id).collect::<Vec<_>>(),
        claimed.iter().map(|m| m.id).collect::<Vec<_>>()
    );
    store
        .mark_sent(&expired.iter().map(|m| m.id).collect::<Vec<_>>(), 10_004)
        .await
        .unwrap();
    assert_eq!(store.outbox_backlog().await.unwrap(), 0);
}
on_every_backend!(
    batch_relay,
    a_batch_hands_its_payments_events_to_its_relay_round
);

/// Orders `range` of `u1`, one unit of `A` each, created at `created` and
/// paid (payment `p<i>`, 100) at `paid`: each leaves its events in the outbox.
async fn paid_orders(store: &Store, range: std::ops::Range<u32>, created: i64, paid: i64) {
    for i in range {
        let id = order_id(i);
        store
            .create_order(&new_order("u1", &[("A", 1)]), &id, created, None)
            .await
            .unwrap();
        store
            .pay_order(&notice(&id, &format!("p{i}"), 100), paid)
            .await
            .unwrap();
    }
}

async fn outbox_rows_are_leased_acknowledged_and_retried(store: Store) {
    seed(&store, "A", 100, 5).await;
    paid_orders(&store, 0..3, 1, 2).await;
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
        .retry_outbox(&[retry(claimed[1].id, "broker down", 5_000)], 20, 103)
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
    // The relay acknowledges a round's rows together with its next claim.
    let after = store
        .ack_and_claim_outbox(
            "relay-a",
            &[retried[0].id, others[0].id],
            10,
            10_000,
            10_200,
        )
        .await
        .unwrap();
    assert!(after.is_empty());
    assert_eq!(store.outbox_backlog().await.unwrap(), 0);

    // A round the broker refused goes back whole, in one transaction.
    paid_orders(&store, 3..5, 20_000, 20_000).await;
    let refused = store
        .claim_outbox("relay-a", 10, 10_000, 20_000)
        .await
        .unwrap();
    assert_eq!(refused.len(), 2);
    let failed: Vec<OutboxRetry> = refused
        .iter()
        .map(|m| retry(m.id, "disk full", 25_000))
        .collect();
    store.retry_outbox(&failed, 20, 20_001).await.unwrap();
    store.retry_outbox(&[], 20, 20_001).await.unwrap();
    assert!(
        store
            .claim_outbox("relay-b", 10, 10_000, 24_999)
            .await
            .unwrap()
            .is_empty(),
        "both rows wait for their retry time"
    );
    let again = store
        .claim_outbox("relay-b", 10, 10_000, 25_000)
        .await
        .unwrap();
    assert_eq!(
        again.iter().map(|m| m.id).collect::<Vec<_>>(),
        refused.iter().map(|m| m.id).collect::<Vec<_>>(),
        "and then go to any relay, the lease released"
    );
}
on_every_backend!(
    outbox_leases,
    outbox_rows_are_leased_acknowledged_and_retried
);

/// A relay killed while its wall clock was stepped ahead left its rows
/// leased until then: they are claimed again at once, not after the step.
async fn a_lease_stamped_by_a_clock_far_ahead_is_claimed_at_once(store: Store) {
    seed(&store, "A", 100, 5).await;
    paid_orders(&store, 0..2, 1, 2).await;
    // relay-a's clock is two minutes ahead; relay-b's is right.
    let ahead = store
        .claim_outbox("relay-a", 1, 30_000, 120_000)
        .await
        .unwrap();
    let right = store.claim_outbox("relay-b", 1, 30_000, 10).await.unwrap();
    assert_eq!((ahead.len(), right.len()), (1, 1));
    // Both die. A lease within what the relay grants waits for its end…
    let at_once = store.claim_outbox("relay-c", 10, 30_000, 20).await.unwrap();
    assert_eq!(
        at_once.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![ahead[0].id],
        "the lease from the clock ahead is void; the other one holds"
    );
    assert!(
        store
            .claim_outbox("relay-c", 10, 30_000, 30_009)
            .await
            .unwrap()
            .is_empty()
    );
    let later = store
        .claim_outbox("relay-c", 10, 30_000, 30_010)
        .await
        .unwrap();
    assert_eq!(
        later.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![right[0].id]
    );
}
on_every_backend!(
    void_leases,
    a_lease_stamped_by_a_clock_far_ahead_is_claimed_at_once
);

fn retry(id: i64, error: &str, retry_at: i64) -> OutboxRetry {
    OutboxRetry {
        id,
        error: error.to_owned(),
        retry_at,
    }
}

/// A row that fails its `park_after`-th claim is parked: never claimed
/// again, out of the backlog, counted and listed with its last error, and
/// back in the relay's hands when an operator requeues it (one, or all).
async fn outbox_rows_failing_every_attempt_are_parked_and_requeued(store: Store) {
    seed(&store, "A", 100, 5).await;
    paid_orders(&store, 0..3, 1, 1).await;
    let first = store.claim_outbox("r", 10, 1_000, 10).await.unwrap();
    assert_eq!(first.len(), 3);
    assert!(first.iter().all(|m| m.attempts == 1));
    let poison = first[0].id;
    // Claimed once: below a limit of 2, rescheduled; the others were sent.
    let parked = store
        .retry_outbox(&[retry(poison, "refused", 20)], 2, 11)
        .await
        .unwrap();
    assert!(parked.is_empty());
    store
        .mark_sent(&[first[1].id, first[2].id], 12)
        .await
        .unwrap();
    let second = store.claim_outbox("r", 10, 1_000, 20).await.unwrap();
    assert_eq!(
        second
            .iter()
            .map(|m| (m.id, m.attempts))
            .collect::<Vec<_>>(),
        [(poison, 2)]
    );
    let parked = store
        .retry_outbox(&[retry(poison, "refused again", 30)], 2, 21)
        .await
        .unwrap();
    assert_eq!(parked, [poison]);
    assert!(
        store
            .claim_outbox("r", 10, 1_000, 100_000)
            .await
            .unwrap()
            .is_empty(),
        "a parked row is never claimed"
    );
    assert_eq!(store.outbox_backlog().await.unwrap(), 0);
    assert_eq!(store.outbox_parked().await.unwrap(), 1);
    assert_eq!(store.stats().await.unwrap().outbox_parked, 1);
    let listed = store.parked_outbox(10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, poison);
    assert_eq!(listed[0].attempts, 2);
    assert_eq!(listed[0].last_error.as_deref(), Some("refused again"));
    assert_eq!(listed[0].parked_at, 21);
    assert_eq!(listed[0].event_id, first[0].event_id);

    assert_eq!(
        store.requeue_outbox(Some(poison + 100), 40).await.unwrap(),
        0
    );
    assert_eq!(store.requeue_outbox(Some(poison), 40).await.unwrap(), 1);
    assert_eq!(store.outbox_parked().await.unwrap(), 0);
    assert_eq!(store.outbox_backlog().await.unwrap(), 1);
    let back = store.claim_outbox("r", 10, 1_000, 40).await.unwrap();
    assert_eq!(
        back.iter().map(|m| (m.id, m.attempts)).collect::<Vec<_>>(),
        [(poison, 1)],
        "its attempts start again"
    );
    store
        .retry_outbox(&[retry(poison, "still refused", 50)], 1, 41)
        .await
        .unwrap();
    assert_eq!(store.requeue_outbox(None, 60).await.unwrap(), 1, "--all");
    assert_eq!(
        store.claim_outbox("r", 10, 1_000, 60).await.unwrap().len(),
        1
    );
}
on_every_backend!(
    outbox_parking,
    outbox_rows_failing_every_attempt_are_parked_and_requeued
);

async fn effects_apply_once_and_report_fanout(store: Store) {
    seed(&store, "A", 100, 5).await;
    let id = order_id(1);
    store
        .create_order(&new_order("u1", &[("A", 1)]), &id, 1, None)
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
        .create_order(&new_order("u1", &[("A", 1)]), &order_id(1), 1, None)
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
        close_after_ms: None,
        limits: ordermq_domain::UserLimits::OFF,
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
    assert_eq!(store.stock("A").await.unwrap(), Some((3, 3)));
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
    assert_eq!(
        store.applied_times(System::Credit, 0).await.unwrap().len(),
        3
    );
    // Only what was applied from `since` on: record 2 went in at 1, the others at 2.
    let since_2 = store.applied_times(System::Credit, 2).await.unwrap();
    assert_eq!(since_2.len(), 2);
    assert_eq!(since_2.get(record(2).effect.order_id().as_str()), None);
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

async fn create_due(store: &Store, n: u32, sku: &str, close_after_ms: Option<i64>) -> OrderId {
    let id = order_id(n);
    store
        .create_order(&new_order("u1", &[(sku, 1)]), &id, 1_000, close_after_ms)
        .await
        .unwrap();
    id
}

async fn status(store: &Store, id: &OrderId) -> OrderStatus {
    store.order(id).await.unwrap().unwrap().status
}

async fn close_releases_stock_once_and_only_when_due(store: Store) {
    use ordermq_store::{CloseOutcome, WriteOp, WriteResult};
    seed(&store, "A", 100, 5).await;
    let due = create_due(&store, 1, "A", Some(0)).await;
    let later = create_due(&store, 2, "A", Some(3_600_000)).await;
    assert_eq!(store.stock("A").await.unwrap(), Some((5, 2)));
    let close = |id: &OrderId| WriteOp::Close(id.clone());
    let results = store
        .write_batch(&[close(&due), close(&due), close(&later)], 2_000)
        .await;
    let outcomes: Vec<_> = results
        .into_iter()
        .map(|r| match r {
            WriteResult::Closed(Ok(o)) => o,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(outcomes[0], CloseOutcome::Closed);
    assert_eq!(outcomes[1], CloseOutcome::NotUnpaid(OrderStatus::Cancelled));
    assert!(matches!(outcomes[2], CloseOutcome::NotDue { .. }));
    assert_eq!(
        store.stock("A").await.unwrap(),
        Some((5, 1)),
        "one reservation released"
    );
    assert_eq!(status(&store, &due).await, OrderStatus::Cancelled);
    assert_eq!(status(&store, &later).await, OrderStatus::Unpaid);
    // The backstop sweep sees only the overdue unpaid order.
    assert_eq!(
        store
            .overdue_unpaid(3_600_000 + 1_000, 0, 10)
            .await
            .unwrap(),
        vec![later.clone()]
    );
    assert!(store.overdue_unpaid(2_000, 0, 10).await.unwrap().is_empty());
    // The close is scheduled through the outbox as a delayed message.
    let claimed = store
        .claim_outbox("t", 10, 1_000, i64::MAX / 2)
        .await
        .unwrap();
    let closes: Vec<_> = claimed
        .iter()
        .filter(|m| m.tag == "OrderCloseDue")
        .collect();
    assert_eq!(closes.len(), 2);
    assert!(closes.iter().all(|m| m.deliver_at.is_some()));
}
on_every_backend!(close, close_releases_stock_once_and_only_when_due);

async fn pay_and_close_race_has_exactly_one_winner(store: Store) {
    use ordermq_store::{WriteOp, WriteResult};
    const ORDERS: u32 = 40;
    seed(&store, "A", 100, i64::from(ORDERS)).await;
    let mut ids = Vec::new();
    for n in 0..ORDERS {
        ids.push(create_due(&store, n, "A", Some(0)).await);
    }
    let mut tasks = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let (a, b) = (store.clone(), store.clone());
        let (close, pay) = (
            WriteOp::Close(id.clone()),
            WriteOp::Pay(notice(id, &format!("p{n}"), 100)),
        );
        tasks.push(tokio::spawn(async move {
            let (closed, paid) = tokio::join!(
                async move { a.write_batch(&[close], 5_000).await },
                async move { b.write_batch(&[pay], 5_000).await }
            );
            (closed, paid)
        }));
    }
    let (mut paid_won, mut close_won) = (0, 0);
    for (task, id) in tasks.into_iter().zip(&ids) {
        let (closed, paid) = task.await.unwrap();
        let Some(WriteResult::Closed(Ok(_))) = closed.first() else {
            panic!("close failed: {closed:?}");
        };
        let Some(WriteResult::Paid(Ok(receipt))) = paid.first() else {
            panic!("payment failed: {paid:?}");
        };
        let order = store.order(id).await.unwrap().unwrap();
        if receipt.refund_required {
            // The close won: the money is owed back, never lost.
            close_won += 1;
            assert_eq!(order.status, OrderStatus::Refunding);
            assert_eq!(order.refunds.len(), 1);
            assert!(order.paid_at.is_none());
        } else {
            paid_won += 1;
            assert_eq!(order.status, OrderStatus::Paid);
            assert!(order.refunds.is_empty());
        }
    }
    assert_eq!(paid_won + close_won, ORDERS);
    let (on_hand, reserved) = store.stock("A").await.unwrap().unwrap();
    assert_eq!(
        reserved,
        i64::from(paid_won),
        "every reservation was either kept by its payment or released"
    );
    assert_eq!(
        on_hand,
        i64::from(ORDERS),
        "a payment takes nothing off the shelf count"
    );
    let paid_events = store
        .claim_outbox("t", 1_000, 1_000, i64::MAX / 2)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.tag == "OrderPaid")
        .count();
    assert_eq!(paid_events, paid_won as usize);
    eprintln!("pay won {paid_won}, close won {close_won}");
}
on_every_backend!(pay_close_race, pay_and_close_race_has_exactly_one_winner);

fn refund_request(
    order: &OrderId,
    key: &str,
    lines: Option<&[(&str, i64)]>,
) -> ordermq_domain::RefundRequest {
    ordermq_domain::RefundRequest::new(
        order.clone(),
        ordermq_domain::IdempotencyKey::parse(key).unwrap(),
        lines.map(|items| {
            items
                .iter()
                .map(|(sku, q)| OrderLine {
                    sku: Sku::parse(sku).unwrap(),
                    quantity: Quantity::parse(*q).unwrap(),
                })
                .collect()
        }),
        None,
    )
    .unwrap()
}

fn refund_id(n: u32) -> ordermq_domain::RefundId {
    ordermq_domain::RefundId::generate(1_700_000_000_000, n)
}

/// A refund of an order is refused before it is paid, limited to what was
/// paid per line (with its idempotency key), completes only when every
/// refund of the order did, and is never retried unless it failed.
async fn refunds_never_exceed_what_was_paid(store: Store) {
    seed(&store, "A", 250, 10).await;
    seed(&store, "B", 1000, 10).await;
    let id = order_id(1);
    store
        .create_order(&new_order("u1", &[("A", 2), ("B", 1)]), &id, 1, None)
        .await
        .unwrap();
    an_unpaid_order_is_not_refundable(&store, &id).await;
    store.pay_order(&notice(&id, "p1", 1500), 3).await.unwrap();
    let partial = a_partial_refund_keeps_its_key_and_its_limits(&store, &id).await;
    let rest = the_rest_leaves_nothing_to_refund(&store, &id).await;
    refunded_only_when_every_refund_succeeded(&store, &id, &partial, &rest).await;
}

async fn an_unpaid_order_is_not_refundable(store: &Store, id: &OrderId) {
    let unpaid = store
        .request_refund(&refund_request(id, "k0", None), &refund_id(0), 2)
        .await;
    assert!(
        matches!(unpaid, Err(RefundError::NotRefundable { .. })),
        "{unpaid:?}"
    );
}

/// One unit of A (250) refunded; the same key again is the same refund, the
/// key reused for another refund, more units than paid, or a SKU that is
/// not a line are refused.
async fn a_partial_refund_keeps_its_key_and_its_limits(store: &Store, id: &OrderId) -> RefundView {
    let partial = store
        .request_refund(
            &refund_request(id, "k1", Some(&[("A", 1)])),
            &refund_id(1),
            4,
        )
        .await
        .unwrap();
    assert_eq!(partial.amount.minor_units(), 250);
    assert!(!partial.full);
    assert_eq!(status(store, id).await, OrderStatus::Paid);
    // Same key, same request: the same refund. Same key, other request: refused.
    let again = store
        .request_refund(
            &refund_request(id, "k1", Some(&[("A", 1)])),
            &refund_id(2),
            5,
        )
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.refund_id, partial.refund_id);
    let reused = store
        .request_refund(
            &refund_request(id, "k1", Some(&[("B", 1)])),
            &refund_id(3),
            5,
        )
        .await;
    assert!(
        matches!(reused, Err(RefundError::KeyReused { .. })),
        "{reused:?}"
    );
    let too_many = store
        .request_refund(
            &refund_request(id, "k2", Some(&[("A", 2)])),
            &refund_id(4),
            5,
        )
        .await;
    assert!(
        matches!(
            too_many,
            Err(RefundError::ExceedsPaid { refundable: 1, .. })
        ),
        "{too_many:?}"
    );
    let unknown = store
        .request_refund(
            &refund_request(id, "k3", Some(&[("C", 1)])),
            &refund_id(5),
            5,
        )
        .await;
    assert!(
        matches!(unknown, Err(RefundError::UnknownLine(_))),
        "{unknown:?}"
    );
    partial
}

/// The rest (1,250): the order is now fully refunded → REFUNDING, and
/// nothing is left to refund.
async fn the_rest_leaves_nothing_to_refund(store: &Store, id: &OrderId) -> RefundView {
    let rest = store
        .request_refund(&refund_request(id, "k4", None), &refund_id(6), 6)
        .await
        .unwrap();
    assert_eq!(rest.amount.minor_units(), 1250);
    assert!(rest.full);
    assert_eq!(status(store, id).await, OrderStatus::Refunding);
    let nothing_left = store
        .request_refund(&refund_request(id, "k5", None), &refund_id(7), 7)
        .await;
    assert!(matches!(
        nothing_left,
        Err(RefundError::NotRefundable { .. })
    ));
    rest
}

/// A failed attempt is visible; REFUNDED only when every refund succeeded;
/// an operator's retry only applies to FAILED refunds.
async fn refunded_only_when_every_refund_succeeded(
    store: &Store,
    id: &OrderId,
    partial: &RefundView,
    rest: &RefundView,
) {
    store
        .refund_attempt_failed(&rest.refund_id, "gateway 503", false, 8)
        .await
        .unwrap();
    assert!(
        store
            .complete_refund(&rest.refund_id, "RF-1", 9)
            .await
            .unwrap()
    );
    assert_eq!(status(store, id).await, OrderStatus::Refunding);
    assert!(
        store
            .complete_refund(&partial.refund_id, "RF-2", 10)
            .await
            .unwrap()
    );
    assert!(
        !store
            .complete_refund(&partial.refund_id, "RF-2", 11)
            .await
            .unwrap(),
        "repeat changes nothing"
    );
    let order = store.order(id).await.unwrap().unwrap();
    assert_eq!(order.status, OrderStatus::Refunded);
    assert_eq!(order.refunds.len(), 2);
    assert!(
        order
            .refunds
            .iter()
            .all(|r| r.status == RefundStatus::Succeeded)
    );
    let rest_view = order
        .refunds
        .iter()
        .find(|r| r.refund_id == rest.refund_id)
        .unwrap();
    assert_eq!(rest_view.attempts, 2);
    assert_eq!(rest_view.last_error.as_deref(), Some("gateway 503"));
    assert_eq!(
        order.history.iter().map(|h| h.to).collect::<Vec<_>>(),
        [
            OrderStatus::Unpaid,
            OrderStatus::Paid,
            OrderStatus::Refunding,
            OrderStatus::Refunded
        ]
    );
    // Operator retry only applies to FAILED refunds.
    let retry = store.retry_refund(&rest.refund_id, None, 12).await;
    assert!(matches!(
        retry,
        Err(ordermq_domain::RetryRefundError::NotRetryable { .. })
    ));
}
on_every_backend!(refunds, refunds_never_exceed_what_was_paid);

async fn failed_refund_can_be_retried_by_an_operator(store: Store) {
    seed(&store, "A", 100, 10).await;
    let id = order_id(1);
    store
        .create_order(&new_order("u1", &[("A", 1)]), &id, 1, None)
        .await
        .unwrap();
    store.pay_order(&notice(&id, "p1", 100), 2).await.unwrap();
    let support = ordermq_domain::Actor::parse("support-ann").unwrap();
    let ops = ordermq_domain::Actor::parse("ops-bob").unwrap();
    let refund = store
        .request_refund(
            &refund_request(&id, "k", None).by(support.clone()),
            &refund_id(1),
            3,
        )
        .await
        .unwrap();
    // The same request again: the same refund, and no second action.
    store
        .request_refund(
            &refund_request(&id, "k", None).by(support.clone()),
            &refund_id(2),
            3,
        )
        .await
        .unwrap();
    store
        .refund_attempt_failed(&refund.refund_id, "card closed", true, 4)
        .await
        .unwrap();
    let failed = store
        .refunds_with_status(RefundStatus::Failed)
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].last_error.as_deref(), Some("card closed"));
    let retried = store
        .retry_refund(&refund.refund_id, Some(&ops), 5)
        .await
        .unwrap();
    assert_eq!(retried.refund_id, refund.refund_id);
    // A refused retry (no longer FAILED) records nothing.
    assert!(
        store
            .retry_refund(&refund.refund_id, Some(&ops), 6)
            .await
            .is_err()
    );
    let actions: Vec<(String, String, String, i64)> = store
        .order(&id)
        .await
        .unwrap()
        .unwrap()
        .actions
        .into_iter()
        .map(|a| (a.action, a.refund_id.to_string(), a.actor.to_string(), a.at))
        .collect();
    let rid = refund.refund_id.to_string();
    assert_eq!(
        actions,
        [
            ("refund".into(), rid.clone(), "support-ann".into(), 3),
            ("refund_retry".into(), rid, "ops-bob".into(), 5),
        ]
    );
    assert_eq!(
        store
            .refund_task(refund.refund_id.as_str())
            .await
            .unwrap()
            .unwrap()
            .status,
        RefundStatus::Requested
    );
    let retry_events = store
        .claim_outbox("t", 100, 1_000, i64::MAX / 2)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.tag == "RefundRetryRequested")
        .count();
    assert_eq!(retry_events, 1);
}
on_every_backend!(refund_retry, failed_refund_can_be_retried_by_an_operator);

/// Reversals of a refund: points taken back once and never more than were
/// earned, a coupon revoked once, a shipment cancelled only before pickup.
async fn reversals_apply_once_and_never_exceed_the_effect(store: Store) {
    let user = UserId::parse("u1").unwrap();
    points_are_taken_back_once_and_never_more_than_earned(&store, &user).await;
    a_coupon_is_revoked_once(&store, &user).await;
    a_shipment_is_cancelled_only_before_pickup(&store, &user).await;
}

fn effect_record(event: &str, effect: Effect) -> ordermq_store::EffectRecord {
    ordermq_store::EffectRecord {
        event_id: event.into(),
        msg_id: "m".into(),
        effect,
    }
}

async fn points_are_taken_back_once_and_never_more_than_earned(store: &Store, user: &UserId) {
    let id = order_id(1);
    store
        .apply_effects(
            &[effect_record(
                "OrderPaid:o1",
                Effect::Points {
                    user_id: user.clone(),
                    order_id: id.clone(),
                    points: 15,
                },
            )],
            1,
        )
        .await
        .unwrap();
    let reverse = |n: u32, points: Option<i64>| {
        effect_record(
            &format!("OrderRefundRequested:{n}"),
            Effect::PointsReversal {
                user_id: user.clone(),
                order_id: id.clone(),
                refund_id: RefundId::generate(1, n),
                points,
            },
        )
    };
    let outcomes = store
        .apply_effects(
            &[reverse(1, Some(10)), reverse(1, Some(10)), reverse(2, None)],
            2,
        )
        .await
        .unwrap();
    assert_eq!(outcomes, vec![Applied::Now, Applied::Already, Applied::Now]);
    let activity = store.user_activity(user).await.unwrap();
    assert_eq!(
        activity.points_total, 0,
        "15 earned, 10 + the remaining 5 taken back"
    );
}

async fn a_coupon_is_revoked_once(store: &Store, user: &UserId) {
    let id = order_id(1);
    let coupon = Effect::Coupon {
        user_id: user.clone(),
        order_id: id.clone(),
        coupon_code: "THX".into(),
        value: Amount::parse(100).unwrap(),
    };
    store
        .apply_effects(&[effect_record("OrderPaid:o1", coupon)], 3)
        .await
        .unwrap();
    store
        .apply_effects(
            &[effect_record(
                "OrderRefundRequested:1",
                Effect::CouponRevocation {
                    order_id: id.clone(),
                    refund_id: RefundId::generate(1, 1u32),
                },
            )],
            4,
        )
        .await
        .unwrap();
    assert_eq!(
        store.user_activity(user).await.unwrap().coupons[0].status,
        "REVOKED"
    );
}

async fn a_shipment_is_cancelled_only_before_pickup(store: &Store, user: &UserId) {
    let ship = |n: u32| Effect::Shipment {
        user_id: user.clone(),
        order_id: order_id(n),
        tracking_no: format!("T{n}"),
    };
    store
        .apply_effects(
            &[
                effect_record("OrderPaid:a", ship(2)),
                effect_record("OrderPaid:b", ship(3)),
            ],
            5,
        )
        .await
        .unwrap();
    store
        .apply_effects(
            &[effect_record(
                "ShipmentUpdated:b:PICKED_UP",
                Effect::ShipmentProgress {
                    order_id: order_id(3),
                    status: ordermq_domain::CarrierStatus::PickedUp,
                },
            )],
            6,
        )
        .await
        .unwrap();
    let cancel = |n: u32| {
        effect_record(
            &format!("OrderRefundRequested:c{n}"),
            Effect::ShipmentCancellation {
                order_id: order_id(n),
                refund_id: RefundId::generate(1, n),
            },
        )
    };
    store
        .apply_effects(&[cancel(2), cancel(3)], 7)
        .await
        .unwrap();
    let shipments = store.user_activity(user).await.unwrap().shipments;
    let status_of = |n: u32| {
        shipments
            .iter()
            .find(|s| s.order_id == order_id(n))
            .unwrap()
            .status
            .clone()
    };
    assert_eq!(status_of(2), "CANCELLED");
    assert_eq!(
        status_of(3),
        "PICKED_UP",
        "already with the carrier: not cancelled"
    );
}
on_every_backend!(reversals, reversals_apply_once_and_never_exceed_the_effect);

async fn carrier_updates_only_move_forward(store: Store) {
    use ordermq_domain::{CarrierStatus, CarrierUpdate, CarrierUpdateError, TrackingNo};
    seed(&store, "A", 100, 10).await;
    let id = order_id(1);
    store
        .create_order(&new_order("u1", &[("A", 1)]), &id, 1, None)
        .await
        .unwrap();
    store.pay_order(&notice(&id, "p1", 100), 2).await.unwrap();
    let update = |tracking: &str, status: CarrierStatus| CarrierUpdate {
        order_id: id.clone(),
        tracking_no: TrackingNo::parse(tracking).unwrap(),
        status,
    };
    let early = store
        .carrier_update(&update("TRK-1", CarrierStatus::PickedUp), 3)
        .await;
    assert!(
        matches!(early, Err(CarrierUpdateError::ShipmentNotFound(_))),
        "{early:?}"
    );
    store
        .apply_effects(
            &[ordermq_store::EffectRecord {
                event_id: OrderEvent::paid_event_id(&id),
                msg_id: "m".into(),
                effect: Effect::Shipment {
                    user_id: UserId::parse("u1").unwrap(),
                    order_id: id.clone(),
                    tracking_no: "TRK-1".into(),
                },
            }],
            4,
        )
        .await
        .unwrap();
    let wrong = store
        .carrier_update(&update("TRK-2", CarrierStatus::PickedUp), 5)
        .await;
    assert!(
        matches!(wrong, Err(CarrierUpdateError::TrackingMismatch { .. })),
        "{wrong:?}"
    );
    let picked = store
        .carrier_update(&update("TRK-1", CarrierStatus::PickedUp), 6)
        .await
        .unwrap();
    assert!(picked.applied);
    assert_eq!(picked.status, OrderStatus::Shipped);
    let repeat = store
        .carrier_update(&update("TRK-1", CarrierStatus::PickedUp), 7)
        .await
        .unwrap();
    assert!(repeat.duplicate && !repeat.applied);
    let delivered = store
        .carrier_update(&update("TRK-1", CarrierStatus::Delivered), 8)
        .await
        .unwrap();
    assert_eq!(delivered.status, OrderStatus::Delivered);
    // A late IN_TRANSIT is recorded but does not move the order back.
    let late = store
        .carrier_update(&update("TRK-1", CarrierStatus::InTransit), 9)
        .await
        .unwrap();
    assert_eq!(late.status, OrderStatus::Delivered);
    let order = store.order(&id).await.unwrap().unwrap();
    assert_eq!(
        order.history.iter().map(|h| h.to).collect::<Vec<_>>(),
        [
            OrderStatus::Unpaid,
            OrderStatus::Paid,
            OrderStatus::Shipped,
            OrderStatus::Delivered
        ]
    );
    let updates = store
        .claim_outbox("t", 100, 1_000, i64::MAX / 2)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.tag == "ShipmentUpdated")
        .count();
    assert_eq!(updates, 3, "one event per distinct carrier status");
}
on_every_backend!(carrier, carrier_updates_only_move_forward);

/// A database created before schema versioning (version 1 tables, no
/// `schema_version`) is upgraded in place on open, keeping its rows; opening
/// again applies nothing twice.
#[tokio::test]
async fn an_unversioned_database_is_migrated_in_place() {
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir().unwrap();
    let old = |file: &str| format!("sqlite://{}?mode=rwc", dir.path().join(file).display());
    let mut orders = sqlx::AnyConnection::connect(&old("orders.db"))
        .await
        .unwrap();
    for ddl in [
        "CREATE TABLE orders (order_id VARCHAR(64) PRIMARY KEY, user_id VARCHAR(64) NOT NULL, \
           status VARCHAR(16) NOT NULL, amount BIGINT NOT NULL, payment_id VARCHAR(64), \
           created_at BIGINT NOT NULL, paid_at BIGINT, updated_at BIGINT NOT NULL)",
        "CREATE TABLE order_lines (order_id VARCHAR(64) NOT NULL, sku VARCHAR(64) NOT NULL, \
           quantity BIGINT NOT NULL, unit_price BIGINT NOT NULL, PRIMARY KEY (order_id, sku))",
        "INSERT INTO orders VALUES ('O1', 'u1', 'UNPAID', 300, NULL, 1, NULL, 1)",
        "INSERT INTO order_lines VALUES ('O1', 'A', 3, 100)",
    ] {
        sqlx::query(ddl).execute(&mut orders).await.unwrap();
    }
    orders.close().await.unwrap();
    let mut marketing = sqlx::AnyConnection::connect(&old("marketing.db"))
        .await
        .unwrap();
    for ddl in [
        "CREATE TABLE marketing_coupons (code VARCHAR(96) PRIMARY KEY, user_id VARCHAR(64) NOT NULL, \
           order_id VARCHAR(64) NOT NULL UNIQUE, value BIGINT NOT NULL, created_at BIGINT NOT NULL)",
        "INSERT INTO marketing_coupons VALUES ('THX-O0', 'u1', 'O0', 100, 1)",
    ] {
        sqlx::query(ddl).execute(&mut marketing).await.unwrap();
    }
    marketing.close().await.unwrap();

    let url = format!("sqlite://{}", dir.path().join("orders.db").display());
    for _ in 0..2 {
        let store = Store::open(&url, &StoreOptions::default()).await.unwrap();
        let order = store
            .order(&OrderId::parse("O1").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(order.status, OrderStatus::Unpaid);
        assert_eq!(order.close_at, None);
        assert_eq!(order.lines[0].refunded, 0);
        let coupons = store
            .user_activity(&UserId::parse("u1").unwrap())
            .await
            .unwrap()
            .coupons;
        assert_eq!(coupons[0].status, "ACTIVE");
        store.close().await;
    }
}

/// Migration 12 on a database whose payments deducted their units (both
/// counters lowered, as before it): every paid order's units go back into
/// both, so `reserved` holds the orders paid or unpaid, `on_hand` the units
/// sold too, and what can be ordered is what it was. Opening again changes
/// nothing.
async fn migration_12_moves_sold_units_back_into_both_counters(db: TestDb) {
    let store = db.store;
    seed(&store, "A", 100, 10).await;
    for (n, quantity) in [(1, 2), (2, 3), (3, 1), (4, 1)] {
        let order = new_order(&format!("u{n}"), &[("A", quantity)]);
        store
            .create_order(&order, &order_id(n), 1, None)
            .await
            .unwrap();
    }
    store.close().await;
    // As the old write path left it: O2 paid (3 units) and O4 refunded (1)
    // deducted, O3 closed (released), O1 unpaid (2 reserved).
    let mut conn = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    for (n, status) in [(2, "PAID"), (3, "CANCELLED"), (4, "REFUNDED")] {
        let update = format!(
            "UPDATE orders SET status = '{status}' WHERE order_id = '{}'",
            order_id(n)
        );
        sqlx::query(&update).execute(&mut conn).await.unwrap();
    }
    for statement in [
        "UPDATE products SET on_hand = 6, reserved = 2 WHERE sku = 'A'",
        "UPDATE schema_version SET version = 11 WHERE component = 'orders'",
    ] {
        sqlx::query(statement).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();
    for _ in 0..2 {
        let store = Store::open(&db.url, &fanout_only()).await.unwrap();
        assert_eq!(store.stock("A").await.unwrap(), Some((10, 6)));
        assert_eq!(
            available(&store).await,
            vec![4],
            "what can be ordered is unchanged"
        );
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migration_12_on_sqlite() {
    migration_12_moves_sold_units_back_into_both_counters(sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migration_12_on_postgres() {
    if let Some(db) = postgres().await {
        migration_12_moves_sold_units_back_into_both_counters(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migration_12_on_mysql() {
    if let Some(db) = mysql().await {
        migration_12_moves_sold_units_back_into_both_counters(db).await;
    }
}

/// A batch of payments takes the set-based path; every tricky case in it must
/// come out exactly as it would one by one.
async fn a_batch_of_payments_is_decided_like_one_by_one(store: Store) {
    use ordermq_store::{WriteOp, WriteResult};
    seed(&store, "A", 100, 50).await;
    seed(&store, "B", 300, 50).await;
    let mut ids = Vec::new();
    for n in 0..8 {
        let id = order_id(n);
        store
            .create_order(&new_order("u1", &[("A", 1), ("B", 2)]), &id, 1, None)
            .await
            .unwrap();
        ids.push(id);
    }
    let pay = |id: &OrderId, payment: &str, amount: i64| WriteOp::Pay(notice(id, payment, amount));
    let ops = vec![
        pay(&ids[0], "p0", 700),
        pay(&ids[1], "p1", 700),
        pay(&ids[0], "p0", 700),     // the same notice twice in one batch
        pay(&ids[1], "p1-bis", 700), // a second payment for an order paid in this batch
        pay(&ids[2], "p2", 699),     // wrong amount
        pay(&ids[3], "shared", 700), // one payment id for two orders
        pay(&ids[4], "shared", 700),
        pay(&order_id(99), "p99", 700), // unknown order
        pay(&ids[5], "p5", 700),
    ];
    let results = store.write_batch(&ops, 10).await;
    let receipts: Vec<_> = results
        .into_iter()
        .map(|r| match r {
            WriteResult::Paid(r) => r,
            other => panic!("{other:?}"),
        })
        .collect();
    // Notices racing for one order (or one payment id) in a batch are like
    // concurrent requests: either may win, exactly one does.
    let fresh = |i: usize| matches!(&receipts[i], Ok(r) if !r.duplicate && !r.refund_required);
    assert!(fresh(0) && fresh(8));
    assert!(
        matches!(&receipts[2], Ok(r) if r.duplicate && !r.refund_required),
        "{:?}",
        receipts[2]
    );
    let owed = |i: usize| matches!(&receipts[i], Ok(r) if r.refund_required);
    assert!(
        fresh(1) != fresh(3) && owed(1) != owed(3),
        "{:?} {:?}",
        receipts[1],
        receipts[3]
    );
    assert!(matches!(
        receipts[4],
        Err(PayOrderError::AmountMismatch { .. })
    ));
    let reused = |i: usize| matches!(receipts[i], Err(PayOrderError::PaymentIdReused { .. }));
    assert!(
        fresh(5) != fresh(6) && reused(5) != reused(6),
        "{:?} {:?}",
        receipts[5],
        receipts[6]
    );
    assert!(matches!(receipts[7], Err(PayOrderError::OrderNotFound(_))));

    let shared_winner = if fresh(5) { 3 } else { 4 };
    let paid = [0, 1, shared_winner, 5];
    for (n, id) in ids.iter().enumerate() {
        let order = store.order(id).await.unwrap().unwrap();
        let expected = if paid.contains(&n) {
            OrderStatus::Paid
        } else {
            OrderStatus::Unpaid
        };
        assert_eq!(order.status, expected, "order {n}");
        assert_eq!(order.history.len(), if paid.contains(&n) { 2 } else { 1 });
    }
    // Stock: the 8 orders' units reserved, 4 of them paid (sold).
    assert_eq!(store.stock("A").await.unwrap(), Some((50, 8)));
    assert_eq!(store.stock("B").await.unwrap(), Some((50, 16)));
    let events = store
        .claim_outbox("t", 100, 1_000, i64::MAX / 2)
        .await
        .unwrap();
    let paid_events: Vec<_> = events.iter().filter(|m| m.tag == "OrderPaid").collect();
    assert_eq!(paid_events.len(), 4);
    for event in &paid_events {
        let body: serde_json::Value = serde_json::from_str(&event.body).unwrap();
        assert_eq!(body["lines"].as_array().unwrap().len(), 2, "{body}");
        assert_eq!(body["user_id"], "u1");
    }
    // The second payment of order 1 is owed back.
    assert_eq!(
        events
            .iter()
            .filter(|m| m.tag == "OrderRefundRequested")
            .count(),
        1
    );
}
on_every_backend!(
    payment_batches,
    a_batch_of_payments_is_decided_like_one_by_one
);
