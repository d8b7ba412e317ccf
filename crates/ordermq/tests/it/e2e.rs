//! The whole system through a real embedded RocketMQ broker: many orders
//! created and paid concurrently, duplicate callbacks mixed in, then the
//! databases are read directly to check each invariant.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use ordermq_domain::{OrderStatus, System};
use ordermq_testkit::LocalApp;
use serde_json::Value;

const ORDERS: usize = 260;
const PAID_EVERY: usize = 5; // every 5th order stays unpaid
const SKUS: [&str; 3] = ["SKU-1", "SKU-2", "SKU-4"];

/// One created order: `(id, amount, sku, quantity)`.
type Created = (String, i64, &'static str, i64);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paid_orders_get_exactly_one_of_each_effect() {
    // The batching knobs off their defaults, so their path is covered too:
    // the relay lingers between rounds, and the topics have 4 queues.
    let app = LocalApp::start(|c| {
        ordermq_testkit::fast_third_parties(c);
        c.relay_linger = Duration::from_millis(5);
        c.topic_queues = 4;
    })
    .await
    .expect("ordermq starts");
    let mut start_stock = HashMap::new();
    for sku in SKUS {
        start_stock.insert(sku, app.store.stock(sku).await.unwrap().unwrap().0);
    }

    let orders = create_orders(&app).await;
    let (paid, unpaid): (Vec<_>, Vec<_>) = orders
        .iter()
        .enumerate()
        .partition(|(i, _)| i % PAID_EVERY != PAID_EVERY - 1);
    let paid: Vec<&Created> = paid.into_iter().map(|(_, o)| o).collect();
    let unpaid: Vec<&Created> = unpaid.into_iter().map(|(_, o)| o).collect();
    assert!(paid.len() >= 200);

    let started = Instant::now();
    pay_with_duplicates(&app, &orders).await;
    wait_for_fanout(&app, paid.len()).await;
    eprintln!(
        "fan-out of {} orders complete {:?} after the first notice",
        paid.len(),
        started.elapsed()
    );
    // Every group has handled every OrderPaid and owes no retry: nothing it
    // received can come back by itself, so the counts below are final.
    let groups: Vec<(&str, u64)> = System::ALL
        .iter()
        .map(|system| (system.consumer_group(), paid.len() as u64))
        .collect();
    let settled = app.wait_settled(&groups, Duration::from_secs(30)).await;
    eprintln!("settled: {settled:?}");

    check_effects(&app, &paid, &unpaid).await;
    check_stock(&app, &start_stock, &paid, &unpaid).await;
    check_outbox_drains(&app).await;
    check_api_views(&app, &paid, &unpaid).await;
    app.stop().await.unwrap();
}

/// Creates [`ORDERS`] orders concurrently, over three SKUs and 17 users.
async fn create_orders(app: &LocalApp) -> Vec<Created> {
    join_all((0..ORDERS).map(|i| async move {
        let sku = SKUS[i % SKUS.len()];
        let quantity = (i % 3 + 1) as i64;
        let response =
            ordermq_testkit::create_order(app, &format!("user-{}", i % 17), &[(sku, quantity)])
                .await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "UNPAID");
        (
            body["order_id"].as_str().unwrap().to_owned(),
            body["amount"].as_i64().unwrap(),
            sku,
            quantity,
        )
    }))
    .await
}

/// Pays 4 of 5 orders concurrently: every paid order is notified twice, every
/// third one three times, all at once; exactly one notice per order is fresh.
async fn pay_with_duplicates(app: &LocalApp, orders: &[Created]) {
    let mut notices = Vec::new();
    for (i, (id, amount, _, _)) in orders.iter().enumerate() {
        if i % PAID_EVERY == PAID_EVERY - 1 {
            continue;
        }
        let repeats = if i % 3 == 0 { 3 } else { 2 };
        for _ in 0..repeats {
            notices.push((id.clone(), format!("pay-{i}"), *amount));
        }
    }
    fastrand::shuffle(&mut notices);
    let started = Instant::now();
    let results = join_all(notices.iter().map(|(id, payment, amount)| async move {
        let response = app.notify(id, payment, *amount).await.unwrap();
        assert_eq!(response.status(), 200, "notify {id}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "PAID");
        assert_eq!(body["refund_required"], false);
        body["duplicate"].as_bool().unwrap()
    }))
    .await;
    let fresh = results.iter().filter(|duplicate| !**duplicate).count();
    let paying = orders.len() - orders.len() / PAID_EVERY;
    assert_eq!(fresh, paying, "each order transitions exactly once");
    eprintln!(
        "{} notices ({paying} orders) answered in {:?}",
        notices.len(),
        started.elapsed()
    );
}

/// Waits until every system has an effect for `paid` orders.
async fn wait_for_fanout(app: &LocalApp, paid: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut done = true;
        for system in System::ALL {
            let counts = app.store.effect_counts_by_order(system).await.unwrap();
            done &= counts.len() >= paid;
        }
        if done {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "fan-out did not complete in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Exactly one effect per system for each paid order, none for the others.
async fn check_effects(app: &LocalApp, paid: &[&Created], unpaid: &[&Created]) {
    for system in System::ALL {
        let counts = app.store.effect_counts_by_order(system).await.unwrap();
        for (id, ..) in paid {
            assert_eq!(
                counts.get(id.as_str()),
                Some(&1),
                "{system:?} for paid order {id}"
            );
        }
        for (id, ..) in unpaid {
            assert_eq!(
                counts.get(id.as_str()),
                None,
                "{system:?} for unpaid order {id}"
            );
        }
        assert_eq!(
            counts.len(),
            paid.len(),
            "{system:?}: no effects for unknown orders"
        );
    }
}

/// Stock: nothing comes off the shelf count (`on_hand`); the paid and the
/// unpaid orders hold their units (`reserved`), the closed ones none.
async fn check_stock(
    app: &LocalApp,
    start_stock: &HashMap<&str, i64>,
    paid: &[&Created],
    unpaid: &[&Created],
) {
    for sku in SKUS {
        let paid_qty: i64 = paid.iter().filter(|o| o.2 == sku).map(|o| o.3).sum();
        let reserved_qty: i64 = unpaid.iter().filter(|o| o.2 == sku).map(|o| o.3).sum();
        let (on_hand, reserved) = app.store.stock(sku).await.unwrap().unwrap();
        assert_eq!(on_hand, start_stock[sku], "{sku} on hand");
        assert_eq!(reserved, paid_qty + reserved_qty, "{sku} reserved");
    }
    assert_eq!(
        app.store
            .order_ids_with_status(OrderStatus::Paid)
            .await
            .unwrap()
            .len(),
        paid.len()
    );
}

/// The relay marks rows sent in its next round, a few ms after the broker
/// took them: the outbox drains shortly after the fan-out.
async fn check_outbox_drains(app: &LocalApp) {
    // A bound on the wait, not a timing claim: a loaded machine is slower.
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.store.outbox_backlog().await.unwrap() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        app.store.outbox_backlog().await.unwrap(),
        0,
        "outbox drained"
    );
}

/// The API shows the same: PAID with every group done, points, stats.
async fn check_api_views(app: &LocalApp, paid: &[&Created], unpaid: &[&Created]) {
    let (status, order) =
        ordermq_testkit::get_json(app, &format!("/api/orders/{}", paid[0].0)).await;
    assert_eq!(status, 200);
    assert_eq!(order["status"], "PAID");
    for system in ["credit", "marketing", "push", "warehouse"] {
        assert_eq!(order["fanout"][system], "done", "{system}");
    }
    let (_, unpaid_order) =
        ordermq_testkit::get_json(app, &format!("/api/orders/{}", unpaid[0].0)).await;
    assert_eq!(unpaid_order["status"], "UNPAID");
    assert_eq!(unpaid_order["fanout"]["credit"], "pending");

    let user = order["user_id"].as_str().unwrap().to_owned();
    let (_, points) = ordermq_testkit::get_json(app, &format!("/api/users/{user}/points")).await;
    assert!(points["total"].as_i64().unwrap() > 0);
    let (_, stats) = ordermq_testkit::get_json(app, "/api/stats").await;
    assert_eq!(stats["outbox_backlog"], 0);
    assert_eq!(stats["systems"]["warehouse"]["applied"], paid.len());
}
