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

/// ordermq with the feed on (it is off by default) and fast third parties.
async fn feed_app() -> LocalApp {
    LocalApp::start(|c| {
        fast_third_parties(c);
        c.feed = ordermq::config::FeedMode::On;
        c.payment_gateway_latency = Duration::from_millis(2);
    })
    .await
    .expect("ordermq starts with the feed on")
}

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
    let app = feed_app().await;
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

/// Keeps what a snapshot would send instead of sending it.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<ordermq_domain::OutboxMessage>>);

impl ordermq_domain::ports::Publisher for Recorder {
    fn publish<'a>(
        &'a self,
        batch: &'a [ordermq_domain::OutboxMessage],
    ) -> ordermq_domain::ports::BoxFuture<'a, Vec<Result<(), ordermq_domain::ports::PublishError>>>
    {
        self.0.lock().unwrap().extend_from_slice(batch);
        Box::pin(async move { vec![Ok(()); batch.len()] })
    }
}

/// `feed snapshot` on the real broker, beside the live feed: a sink that
/// lost an order gets it back from the snapshot (with no false gap), an
/// older snapshot arriving after a live change is skipped, `--since`
/// selects by time; then `feed replay --from` moves the sink's group back,
/// the restarted sink reads every message again and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshots_interleave_with_live_events_and_a_replay_changes_nothing() {
    let app = feed_app().await;
    let config = app.tool_config();
    let (paid, amount) = order(&app, "snap-u1", "SKU-1", 1).await;
    let (late, late_amount) = order(&app, "snap-u2", "SKU-2", 1).await;
    let (_unpaid, _) = order(&app, "snap-u3", "SKU-1", 2).await;
    assert_eq!(
        app.notify(&paid, "sp-1", amount).await.unwrap().status(),
        200
    );
    wait_status(&app, &paid, "PAID").await;

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/analytics.db", dir.path().display());
    let sink = RunningSink::start(&config, &url).await.unwrap();
    let report = wait_verified(&app, &sink).await;
    assert!(report.is_clean(), "{}", report.render());

    // The sink loses an order entirely; the snapshot brings it back.
    for table in ["orders", "order_events"] {
        sink.sink
            .execute(&format!("DELETE FROM {table} WHERE order_id = '{paid}'"))
            .await
            .unwrap();
    }
    assert!(!compare(&app.store, &sink.sink).await.unwrap().is_clean());
    let mut pages = 0;
    let sent = ordermq::feed::snapshot(&config, i64::MIN, &mut |_| pages += 1)
        .await
        .unwrap();
    assert_eq!((sent.orders, pages), (3, 1));
    let report = wait_verified(&app, &sink).await;
    assert!(report.is_clean(), "no false gap: {}", report.render());

    // An older snapshot arriving after a live change is skipped.
    let stale = Recorder::default();
    ordermq::feed::send_snapshot(&app.store, &stale, i64::MIN, 2, &mut |_| {})
        .await
        .unwrap();
    let before_payment = ordermq_domain::now_millis();
    assert_eq!(
        app.notify(&late, "sp-2", late_amount)
            .await
            .unwrap()
            .status(),
        200
    );
    wait_status(&app, &late, "PAID").await;
    let report = wait_verified(&app, &sink).await;
    assert!(report.is_clean(), "{}", report.render());
    let keys = ordermq::event_keys::event_keys(&config).unwrap();
    let producer = app.foreign_producer(Some(keys)).await.unwrap();
    let stale = stale.0.into_inner().unwrap();
    assert_eq!(stale.len(), 3);
    let handled = sink.handled();
    assert!(
        producer
            .publisher()
            .publish(&stale)
            .await
            .iter()
            .all(Result::is_ok)
    );
    // They are skipped: the only trace is the group's count.
    let deadline = Instant::now() + Duration::from_secs(30);
    while sink.handled() < handled + 3 {
        assert!(Instant::now() < deadline, "the stale snapshots never came");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    producer.shutdown().await;
    let report = compare(&app.store, &sink.sink).await.unwrap();
    assert!(
        report.is_clean(),
        "the live event wins: {}",
        report.render()
    );
    let late_seq = |states: Vec<(ordermq_domain::feed::OrderState, i64)>| {
        states
            .into_iter()
            .find(|(s, _)| s.order_id == late)
            .map(|(s, seq)| (s.status, seq))
    };
    assert_eq!(
        late_seq(sink.sink.states("", 10).await.unwrap()),
        Some(("PAID".to_owned(), 2))
    );

    // --since: only what changed at or after the time.
    let since = ordermq::feed::snapshot(&config, before_payment, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(since.orders, 1);
    let later = ordermq::feed::snapshot(&config, ordermq_domain::now_millis() + 1, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(later.orders, 0);

    // Replay from the beginning: the stopped sink's group moves back, the
    // restarted sink reads every message again, and nothing changes.
    let report = wait_verified(&app, &sink).await;
    assert!(report.is_clean(), "{}", report.render());
    let history = sink.sink.history().await.unwrap();
    sink.stop().await;
    let queues = ordermq::feed::replay_from(&config, 0).await.unwrap();
    assert!(!queues.is_empty());
    let sink = RunningSink::start(&config, &url).await.unwrap();
    // Every message of the topic: the live events (3 created, 2 paid), the
    // three snapshots of each of the four snapshot runs but the empty one
    // (3 + 3 stale + 1), of which the sink applied some and skipped the rest.
    let expected = 5 + 3 + 3 + 1;
    let deadline = Instant::now() + Duration::from_secs(60);
    while sink.handled() < expected {
        assert!(
            Instant::now() < deadline,
            "the replayed sink handled {} of {expected} messages",
            sink.handled()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report = compare(&app.store, &sink.sink).await.unwrap();
    assert!(report.is_clean(), "{}", report.render());
    // Not one row written again.
    assert_eq!(sink.sink.history().await.unwrap(), history);
    sink.stop().await;
    app.stop().await.unwrap();
}
