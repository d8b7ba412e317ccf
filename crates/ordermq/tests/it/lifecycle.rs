//! The order's life after creation, through the real embedded RocketMQ
//! broker: unpaid orders close themselves by delayed message, a payment and a
//! close racing have one winner, refunds get through a failing gateway and a
//! restart, and carrier callbacks move the order forward.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use ordermq_domain::topology::{Consumer, group_of};
use ordermq_domain::{OrderId, OrderStatus};
use ordermq_testkit::LocalApp;
use reqwest::Method;
use serde_json::{Value, json};

/// Polls `GET /api/orders/{id}` until `done` holds or `within` passes.
pub(crate) async fn wait_for_order(
    app: &LocalApp,
    id: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, order) = ordermq_testkit::get_json(app, &format!("/api/orders/{id}")).await;
        assert_eq!(status, 200, "{order}");
        if done(&order) {
            return order;
        }
        assert!(
            Instant::now() < deadline,
            "order {id} never got there: {order:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create(app: &LocalApp, user: String, sku: &str, quantity: i64) -> (String, i64) {
    let response = ordermq_testkit::create_order(app, &user, &[(sku, quantity)]).await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    (
        body["order_id"].as_str().unwrap().to_owned(),
        body["amount"].as_i64().unwrap(),
    )
}

fn history_at(order: &Value, to: &str) -> Option<i64> {
    order["history"]
        .as_array()?
        .iter()
        .find(|h| h["to"] == to)
        .and_then(|h| h["at"].as_i64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unpaid_orders_close_on_time_and_paid_ones_never_do() {
    // The default: RocketMQ delay levels (1 s, 5 s, ...), so a 3 s close hops
    // three times through the 1 s level.
    unpaid_orders_close_on_time("levels").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unpaid_orders_close_on_time_with_timer_messages_too() {
    unpaid_orders_close_on_time("timer").await;
}

async fn unpaid_orders_close_on_time(delayed_delivery: &'static str) {
    const ORDERS: usize = 20;
    let app = LocalApp::start(|c| {
        ordermq_testkit::fast_third_parties(c);
        c.delayed_delivery = delayed_delivery.parse().unwrap();
        c.order_close_after = Duration::from_secs(3);
        // Only the delayed message may close orders here, not the backstop.
        c.close_sweep_interval = Duration::ZERO;
        // The carrier hangs: the warehouse times out and retries, and
        // nothing else may slow down because of it.
        c.logistics_latency = Duration::from_secs(3);
        c.logistics_timeout = Duration::from_millis(300);
    })
    .await
    .unwrap();
    let (start_on_hand, _) = app.store.stock("SKU-5").await.unwrap().unwrap();
    let orders: Vec<_> =
        join_all((0..ORDERS).map(|i| create(&app, format!("u{i}"), "SKU-5", 1))).await;
    let paid: Vec<_> = orders.iter().step_by(2).collect();
    for (i, (id, amount)) in paid.iter().enumerate() {
        let response = app.notify(id, &format!("p{i}"), *amount).await.unwrap();
        assert_eq!(response.status(), 200);
    }

    let mut lateness = Vec::new();
    for (id, _) in orders.iter().skip(1).step_by(2) {
        let order = wait_for_order(&app, id, Duration::from_secs(30), |o| {
            o["status"] == "CANCELLED"
        })
        .await;
        let closed_at = history_at(&order, "CANCELLED").unwrap();
        lateness.push(closed_at - order["close_at"].as_i64().unwrap());
    }
    lateness.sort_unstable();
    eprintln!(
        "close timing error ({delayed_delivery}) over {} orders (actual - scheduled): min {} ms, median {} ms, max {} ms",
        lateness.len(),
        lateness[0],
        lateness[lateness.len() / 2],
        lateness[lateness.len() - 1]
    );
    // The close handler refuses a close before `close_at` (the broker would
    // redeliver it 10 s later), so nothing is early; and no hop is lost.
    assert!(lateness[0] >= 0, "closed too early: {lateness:?}");
    assert!(
        lateness[lateness.len() - 1] < 5_000,
        "closed too late: {lateness:?}"
    );

    // Every close message has fired by now; paid orders stayed paid, and the
    // credit, marketing and push systems did their part although the carrier hangs.
    for (id, _) in &paid {
        // Until the warehouse has also tried once (its carrier times out):
        // on a loaded machine the other three can be done first.
        let order = wait_for_order(&app, id, Duration::from_secs(10), |o| {
            ["credit", "marketing", "push"]
                .iter()
                .all(|s| o["fanout"][s] == "done")
                && o["consumers"].as_array().is_some_and(|groups| {
                    groups
                        .iter()
                        .any(|c| c["group"] == "warehouse_group" && !c["last_error"].is_null())
                })
        })
        .await;
        assert_eq!(order["status"], "PAID", "{order:#}");
        assert_ne!(order["fanout"]["warehouse"], "done");
        let warehouse = order["consumers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["group"] == "warehouse_group")
            .unwrap();
        assert!(
            warehouse["last_error"]
                .as_str()
                .unwrap_or_default()
                .contains("did not answer"),
            "{warehouse}"
        );
    }
    let (on_hand, reserved) = app.store.stock("SKU-5").await.unwrap().unwrap();
    assert_eq!(
        reserved,
        paid.len() as i64,
        "closed orders released their reservations; paid ones keep theirs"
    );
    assert_eq!(on_hand, start_on_hand);
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payment_racing_the_close_has_exactly_one_winner() {
    const ORDERS: usize = 40;
    let app = LocalApp::start(|c| {
        ordermq_testkit::fast_third_parties(c);
        c.order_close_after = Duration::from_secs(2);
        c.payment_gateway_latency = Duration::from_millis(5);
    })
    .await
    .unwrap();
    let (start_on_hand, _) = app.store.stock("SKU-4").await.unwrap().unwrap();
    let orders: Vec<_> =
        join_all((0..ORDERS).map(|i| create(&app, format!("r{i}"), "SKU-4", 1))).await;
    // Pay each order at a moment spread around its close (1.5 s .. 4.5 s after creation).
    let receipts = join_all(orders.iter().enumerate().map(|(i, (id, amount))| {
        let app = &app;
        async move {
            tokio::time::sleep(Duration::from_millis(
                1_200 + (i as u64 * 2_000) / ORDERS as u64,
            ))
            .await;
            let response = app.notify(id, &format!("race-{i}"), *amount).await.unwrap();
            assert_eq!(response.status(), 200, "a payment is always accepted");
            response.json::<Value>().await.unwrap()
        }
    }))
    .await;
    let (mut paid, mut closed) = (0, 0);
    for ((id, _), receipt) in orders.iter().zip(&receipts) {
        if receipt["refund_required"] == true {
            // The close won: the payment is refunded through the gateway.
            closed += 1;
            let order = wait_for_order(&app, id, Duration::from_secs(60), |o| {
                o["status"] == "REFUNDED"
            })
            .await;
            assert!(order["paid_at"].is_null());
            assert_eq!(order["refunds"].as_array().unwrap().len(), 1);
            assert!(history_at(&order, "CANCELLED").is_some());
        } else {
            paid += 1;
            let order = wait_for_order(&app, id, Duration::from_secs(30), |o| {
                o["fanout"]
                    .as_object()
                    .unwrap()
                    .values()
                    .all(|s| s == "done")
            })
            .await;
            assert_eq!(order["status"], "PAID");
            assert!(history_at(&order, "CANCELLED").is_none());
            assert!(order["refunds"].as_array().unwrap().is_empty());
        }
    }
    eprintln!("pay/close race over {ORDERS} orders: payment won {paid}, close won {closed}");
    assert_eq!(paid + closed, ORDERS);
    // Every order's close has been handled and its group owes no retry, and
    // so has every refund: nothing can change an order any more.
    let groups = [
        (group_of(Consumer::Close).name, ORDERS as u64),
        (group_of(Consumer::Refund).name, closed as u64),
    ];
    app.wait_settled(&groups, Duration::from_secs(30)).await;
    let paid_orders = app
        .store
        .order_ids_with_status(OrderStatus::Paid)
        .await
        .unwrap();
    assert_eq!(paid_orders.len(), paid);
    let (on_hand, reserved) = app.store.stock("SKU-4").await.unwrap().unwrap();
    assert_eq!(reserved, paid as i64, "the paid orders' units, sold");
    assert_eq!(on_hand, start_on_hand);
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refund_gets_through_gateway_failures_and_a_restart() {
    let app = LocalApp::start(|c| {
        ordermq_testkit::fast_third_parties(c);
        c.payment_gateway_latency = Duration::from_millis(5);
        c.payment_gateway_failure_rate = 1.0; // down until the restart
        c.refund_attempts = 2;
    })
    .await
    .unwrap();
    let (id, amount) = create(&app, "refund-user".into(), "SKU-2", 2).await;
    assert_eq!(
        app.notify(&id, "pay-r", amount).await.unwrap().status(),
        200
    );
    wait_for_order(&app, &id, Duration::from_secs(30), |o| {
        o["fanout"]
            .as_object()
            .unwrap()
            .values()
            .all(|s| s == "done")
    })
    .await;

    two_refunds_by_key_then_nothing_left(&app, &id).await;
    while_the_gateway_is_down_the_refunds_stay_requested(&app, &id).await;

    // Restart mid-refund with a gateway that still fails 30 % of the time.
    let app = app
        .restart(|c| {
            ordermq_testkit::fast_third_parties(c);
            c.payment_gateway_latency = Duration::from_millis(5);
            c.payment_gateway_failure_rate = 0.3;
            c.refund_attempts = 4;
        })
        .await
        .unwrap();
    after_the_restart_both_succeed_and_each_effect_is_reversed_once(&app, &id, amount).await;
    app.stop().await.unwrap();
}

/// Asks for a refund of order `id` with `key`; the answer's status and body.
async fn refund(app: &LocalApp, id: &str, key: &str, body: Value) -> (u16, Value) {
    let response = app
        .as_operator(Method::POST, &format!("/api/orders/{id}/refund"))
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.json::<Value>().await.unwrap(),
    )
}

/// A partial refund and the rest are accepted (the rest asked twice with
/// one key is one refund); then nothing is left to refund.
async fn two_refunds_by_key_then_nothing_left(app: &LocalApp, id: &str) {
    let (status, partial) = refund(
        app,
        id,
        "k1",
        json!({"lines": [{"sku": "SKU-2", "quantity": 1}]}),
    )
    .await;
    assert_eq!(status, 202, "{partial}");
    let (status, rest) = refund(app, id, "k2", json!({"reason": "changed my mind"})).await;
    assert_eq!(status, 202, "{rest}");
    let (status, again) = refund(app, id, "k2", json!({"reason": "changed my mind"})).await;
    assert_eq!(status, 200);
    assert_eq!(
        again["refund_id"], rest["refund_id"],
        "same key, same refund"
    );
    let (status, none_left) = refund(app, id, "k3", json!({})).await;
    assert_eq!(status, 409, "{none_left}");
    assert_eq!(none_left["code"], "ORDER_NOT_REFUNDABLE");
}

/// The gateway is down: attempts are recorded, the refunds stay REQUESTED.
async fn while_the_gateway_is_down_the_refunds_stay_requested(app: &LocalApp, id: &str) {
    let failing = wait_for_order(app, id, Duration::from_secs(30), |o| {
        o["refunds"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["attempts"].as_i64().unwrap() >= 1)
    })
    .await;
    assert_eq!(failing["status"], "REFUNDING");
    for r in failing["refunds"].as_array().unwrap() {
        assert_eq!(r["status"], "REQUESTED", "{r}");
        assert!(
            r["last_error"]
                .as_str()
                .unwrap()
                .contains("payment gateway")
        );
    }
}

/// Both refunds succeed, for exactly what was paid, and each effect of the
/// order is reversed exactly once.
async fn after_the_restart_both_succeed_and_each_effect_is_reversed_once(
    app: &LocalApp,
    id: &str,
    amount: i64,
) {
    let order = wait_for_order(app, id, Duration::from_secs(120), |o| {
        o["status"] == "REFUNDED"
            && o["consumers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["state"] == "done")
    })
    .await;
    let refunds = order["refunds"].as_array().unwrap();
    assert_eq!(refunds.len(), 2);
    assert!(refunds.iter().all(|r| r["status"] == "SUCCEEDED"));
    assert_eq!(
        refunds
            .iter()
            .map(|r| r["amount"].as_i64().unwrap())
            .sum::<i64>(),
        amount,
        "exactly what was paid, no more"
    );
    // Each effect reversed exactly once.
    let (_, activity) = ordermq_testkit::get_json(app, "/api/users/refund-user").await;
    assert_eq!(activity["points_total"], 0, "{activity:#}");
    assert_eq!(
        activity["points"].as_array().unwrap().len(),
        3,
        "earned, then two reversals"
    );
    assert_eq!(activity["coupons"][0]["status"], "REVOKED");
    assert_eq!(
        activity["sms"].as_array().unwrap().len(),
        3,
        "paid + one per refund"
    );
    assert_eq!(activity["shipments"][0]["status"], "CANCELLED");
    let id = OrderId::parse(id).unwrap();
    let view = app.store.order(&id).await.unwrap().unwrap();
    assert_eq!(
        view.history.iter().map(|h| h.to).collect::<Vec<_>>(),
        [
            OrderStatus::Unpaid,
            OrderStatus::Paid,
            OrderStatus::Refunding,
            OrderStatus::Refunded
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn carrier_callbacks_move_the_order_and_the_shipment_forward() {
    let app = ordermq_testkit::spawn_app().await;
    let (id, amount) = create(&app, "ship-user".into(), "SKU-1", 1).await;
    assert_eq!(
        app.notify(&id, "pay-s", amount).await.unwrap().status(),
        200
    );
    wait_for_order(&app, &id, Duration::from_secs(30), |o| {
        o["fanout"]["warehouse"] == "done"
    })
    .await;
    let (_, shipments) = ordermq_testkit::get_json(&app, "/api/users/ship-user/shipments").await;
    let tracking = shipments[0]["tracking_no"].as_str().unwrap().to_owned();

    // Unsigned or mis-signed: refused, nothing changes.
    let forged_body =
        json!({"order_id": id, "tracking_no": tracking, "status": "DELIVERED"}).to_string();
    let mut forged = app
        .client
        .post(app.url("/api/logistics/notify"))
        .header("content-type", "application/json");
    // Signed with the payment secret: not the carrier's.
    for (name, value) in app.signer.sign(forged_body.as_bytes()).pairs() {
        forged = forged.header(name, value);
    }
    let forged = forged.body(forged_body).send().await.unwrap();
    assert_eq!(forged.status(), 401);
    let wrong = app
        .carrier_notify(&id, "TRK-NOPE", "PICKED_UP")
        .await
        .unwrap();
    assert_eq!(wrong.status(), 409);
    assert_eq!(
        wrong.json::<Value>().await.unwrap()["code"],
        "TRACKING_MISMATCH"
    );
    let bad = app.carrier_notify(&id, &tracking, "LOST").await.unwrap();
    assert_eq!(bad.status(), 422);

    let picked: Value = app
        .carrier_notify(&id, &tracking, "PICKED_UP")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(picked["status"], "SHIPPED");
    let repeat: Value = app
        .carrier_notify(&id, &tracking, "PICKED_UP")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(repeat["duplicate"], true);
    let delivered: Value = app
        .carrier_notify(&id, &tracking, "DELIVERED")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(delivered["status"], "DELIVERED");

    // The warehouse hears of it through RocketMQ.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, shipments) =
            ordermq_testkit::get_json(&app, "/api/users/ship-user/shipments").await;
        if shipments[0]["status"] == "DELIVERED" {
            break;
        }
        assert!(Instant::now() < deadline, "{shipments}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let order = wait_for_order(&app, &id, Duration::from_secs(5), |_| true).await;
    let tos: Vec<_> = order["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["to"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(tos, ["UNPAID", "PAID", "SHIPPED", "DELIVERED"]);
    let updates = order["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["event_id"]
                .as_str()
                .unwrap()
                .starts_with("ShipmentUpdated:")
        })
        .count();
    assert_eq!(updates, 2);
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refund_that_keeps_failing_is_failed_visibly_and_an_operator_retries_it() {
    let app = LocalApp::start(|c| {
        ordermq_testkit::fast_third_parties(c);
        c.payment_gateway_latency = Duration::from_millis(5);
        c.payment_gateway_failure_rate = 1.0;
        c.refund_attempts = 2;
        // Give up after one redelivery, retried after a second.
        c.max_reconsume_times = 1;
        c.retry_delay_levels = Some(
            "1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s"
                .parse()
                .unwrap(),
        );
    })
    .await
    .unwrap();
    let (id, amount) = create(&app, "unlucky".into(), "SKU-3", 1).await;
    assert_eq!(
        app.notify(&id, "pay-u", amount).await.unwrap().status(),
        200
    );
    let response = app
        .as_operator(Method::POST, &format!("/api/orders/{id}/refund"))
        .header("idempotency-key", "k")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let refund: Value = response.json().await.unwrap();
    let refund_id = refund["refund_id"].as_str().unwrap().to_owned();

    let failed = wait_for_order(&app, &id, Duration::from_secs(60), |o| {
        o["refunds"][0]["status"] == "FAILED"
    })
    .await;
    assert_eq!(
        failed["status"], "REFUNDING",
        "money still owed, and visibly so"
    );
    assert!(
        failed["refunds"][0]["attempts"].as_i64().unwrap() >= 4,
        "{failed:#}"
    );
    assert!(
        failed["refunds"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("payment gateway")
    );
    let (_, stats) = ordermq_testkit::get_json(&app, "/api/stats").await;
    assert_eq!(stats["refunds_by_status"]["FAILED"], 1);

    // The gateway is back; the operator retries.
    app.payments
        .as_ref()
        .expect("the fake payment gateway")
        .set_profile(ordermq_gateways::Profile::INSTANT);
    let retried = app
        .as_operator(Method::POST, &format!("/api/refunds/{refund_id}/retry"))
        .send()
        .await
        .unwrap();
    assert_eq!(retried.status(), 202);
    let done = wait_for_order(&app, &id, Duration::from_secs(30), |o| {
        o["status"] == "REFUNDED"
    })
    .await;
    assert_eq!(done["refunds"][0]["status"], "SUCCEEDED");
    // Who asked, with the order: the operator token's name, twice.
    let actions: Vec<(&str, &str)> = done["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["action"].as_str().unwrap(), a["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("refund", "test-operator"),
            ("refund_retry", "test-operator")
        ]
    );
    // Retrying a refund that succeeded is refused and changes nothing.
    let again = app
        .as_operator(Method::POST, &format!("/api/refunds/{refund_id}/retry"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    app.stop().await.unwrap();
}
