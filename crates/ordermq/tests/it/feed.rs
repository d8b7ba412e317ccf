//! The change feed end to end, on the real embedded broker: orders
//! created, paid, refunded, shipped and delivered through the API; the
//! relay publishes their feed events; `order_feed_sink_group` applies them
//! to an analytics SQLite file; `feed verify` finds the order database and
//! the sink equal — and reports a row broken in the sink.

use std::time::{Duration, Instant};

use ordermq::feed::{RunningSink, Verification, compare};
use ordermq_domain::OrderId;
use ordermq_testkit::{LocalApp, create_order, fast_third_parties, get_json};
use reqwest::Method;
use serde_json::{Value, json};

async fn order(app: &LocalApp, user: &str, sku: &str, quantity: i64) -> (String, i64) {
    let response = create_order(app, user, &[(sku, quantity)]).await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    (
        body["order_id"].as_str().unwrap().to_owned(),
        body["amount"].as_i64().unwrap(),
    )
}

async fn wait_status(app: &LocalApp, id: &str, status: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = get_json(app, &format!("/api/orders/{id}")).await;
        if body["status"] == status {
            return;
        }
        assert!(Instant::now() < deadline, "{id} never {status}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_verified(app: &LocalApp, sink: &RunningSink) -> Verification {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let report = compare(&app.store, &sink.sink).await.unwrap();
        if report.is_clean() || Instant::now() > deadline {
            return report;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sink_follows_every_order_and_verify_finds_a_broken_row() {
    let app = LocalApp::start(|c| {
        fast_third_parties(c);
        c.payment_gateway_latency = Duration::from_millis(2);
    })
    .await
    .unwrap();
    let (refunded, amount1) = order(&app, "feed-u1", "SKU-1", 2).await;
    let (delivered, amount2) = order(&app, "feed-u2", "SKU-2", 1).await;
    let (_unpaid, _) = order(&app, "feed-u3", "SKU-1", 1).await;
    assert_eq!(
        app.notify(&refunded, "fp-1", amount1)
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        app.notify(&delivered, "fp-2", amount2)
            .await
            .unwrap()
            .status(),
        200
    );

    // A partial refund, then the rest: REFUNDING, then REFUNDED once the
    // (fake) gateway confirms.
    for (key, body) in [
        ("fk-1", json!({"lines": [{"sku": "SKU-1", "quantity": 1}]})),
        ("fk-2", json!({})),
    ] {
        let response = app
            .as_operator(Method::POST, &format!("/api/orders/{refunded}/refund"))
            .header("idempotency-key", key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }
    wait_status(&app, &refunded, "REFUNDED").await;

    // The carrier picks up and delivers the other one.
    let id = OrderId::parse(&delivered).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let tracking = loop {
        if let Some(t) = app.store.tracking_no_of(&id).await.unwrap() {
            break t;
        }
        assert!(Instant::now() < deadline, "no shipment for {delivered}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for status in ["PICKED_UP", "DELIVERED"] {
        let response = app
            .carrier_notify(&delivered, &tracking, status)
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    wait_status(&app, &delivered, "DELIVERED").await;

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/analytics.db", dir.path().display());
    let sink = RunningSink::start(&app.tool_config(), &url).await.unwrap();
    let report = wait_verified(&app, &sink).await;
    assert!(report.is_clean(), "{}", report.render());
    assert_eq!(report.orders, 3);
    let histories = sink
        .sink
        .states("", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|(state, seq)| (state.order_id, seq))
        .collect::<Vec<_>>();
    // created, paid, refund requested, refunding, refunded; created, paid,
    // shipped, delivered; created.
    let seq_of = |id: &str| histories.iter().find(|(o, _)| o == id).unwrap().1;
    assert_eq!((seq_of(&refunded), seq_of(&delivered)), (5, 4));

    // A row broken in the sink is reported, field by field.
    sink.sink
        .execute(&format!(
            "UPDATE orders SET status = 'PAID', amount = 1 WHERE order_id = '{refunded}'"
        ))
        .await
        .unwrap();
    let report = compare(&app.store, &sink.sink).await.unwrap();
    assert!(!report.is_clean());
    let text = report.render();
    assert_eq!(report.differences.len(), 2, "{text}");
    assert!(
        text.contains(&format!(
            "order {refunded}: status is REFUNDED in the order database, PAID in the sink"
        )),
        "{text}"
    );
    // A hole in an order's history is a gap.
    sink.sink
        .execute(&format!(
            "DELETE FROM order_events WHERE event_id = 'OrderChanged:{delivered}:2'"
        ))
        .await
        .unwrap();
    let report = compare(&app.store, &sink.sink).await.unwrap();
    assert_eq!(report.gaps.len(), 1, "{}", report.render());
    sink.stop().await;
    app.stop().await.unwrap();
}
