//! Reconciliation end to end, on the real embedded broker: a paid order's
//! message lost to one group (dead-lettered while its SMS gateway was down,
//! and never replayed) is published again by the reconciler once that
//! group's receipt has not come, and applied exactly once; every group's
//! receipt shows on the order page; a receipt delivered twice changes
//! nothing; `ordermq outbox missing` lists what the reconciler gave up on.

use std::time::{Duration, Instant};

use ordermq::config::SigningKeys;
use ordermq_domain::reconcile::Receipt;
use ordermq_domain::{OrderEvent, OrderId, OutboxMessage, System};
use ordermq_gateways::Profile;
use ordermq_testkit::{LocalApp, create_order, events, fast_third_parties, get_json};
use serde_json::Value;

const APP_KEYS: &str = "k1:reconcile-secret";

/// Polls the order page until `done`, or panics after `within`.
async fn wait_for_order(
    app: &LocalApp,
    id: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, order) = get_json(app, &format!("/api/orders/{id}")).await;
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

/// The receipt time of `group` for the order's `OrderPaid` on its page.
fn receipt_at(order: &Value, group: &str) -> Option<i64> {
    let paid = format!("OrderPaid:{}", order["order_id"].as_str()?);
    order["consumers"]
        .as_array()?
        .iter()
        .find(|c| c["group"] == group && c["event_id"] == paid.as_str())?["receipt_at"]
        .as_i64()
}

fn groups() -> Vec<&'static str> {
    System::ALL.iter().map(|s| s.consumer_group()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_lost_to_one_group_is_restored_once_by_the_reconciler() {
    let app = LocalApp::start(|c| {
        fast_third_parties(c);
        c.event_keys = Some(SigningKeys::parse(APP_KEYS).unwrap());
        // Dead-lettered after one redelivery, a second later.
        c.max_reconsume_times = 1;
        c.retry_delay_levels = Some(
            "1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s"
                .parse()
                .unwrap(),
        );
        c.reconcile_after = Duration::from_secs(2);
        c.reconcile_interval = Duration::from_millis(200);
        c.reconcile_max = 50;
    })
    .await
    .expect("ordermq starts");
    let sms = app.sms.clone().expect("the fake SMS gateway");
    sms.set_profile(Profile {
        failure_rate: 1.0,
        ..Profile::INSTANT
    });
    let response = create_order(&app, "lost", &[("SKU-2", 1)]).await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    let id = body["order_id"].as_str().unwrap().to_owned();
    let amount = body["amount"].as_i64().unwrap();
    assert_eq!(
        app.notify(&id, "pay-lost", amount).await.unwrap().status(),
        200
    );

    // Push's copy goes to its dead-letter queue; the others apply theirs
    // and their receipts arrive.
    let lost = wait_for_order(&app, &id, Duration::from_secs(60), |o| {
        o["fanout"]["push"] == "failed"
            && ["credit_group", "marketing_group", "warehouse_group"]
                .iter()
                .all(|g| receipt_at(o, g).is_some())
    })
    .await;
    assert_eq!(receipt_at(&lost, "push_group"), None, "{lost:#}");
    assert_eq!(sms.accepted(), 0);

    // The gateway is back; nobody replays the dead-letter queue. The
    // reconciler publishes the event again and push applies it.
    sms.set_profile(Profile::INSTANT);
    let restored = wait_for_order(&app, &id, Duration::from_secs(60), |o| {
        groups().iter().all(|g| receipt_at(o, g).is_some())
    })
    .await;
    assert_eq!(restored["fanout"]["push"], "done", "{restored:#}");
    let (_, stats) = get_json(&app, "/api/stats").await;
    assert!(
        stats["reconcile"]["republished"].as_u64().unwrap() >= 1,
        "{stats:#}"
    );
    // Exactly once everywhere: one SMS, one of each effect, one inbox row per group.
    assert_eq!(sms.accepted(), 1);
    let (_, user) = get_json(&app, "/api/users/lost").await;
    for effect in ["coupons", "sms", "shipments"] {
        assert_eq!(
            user[effect].as_array().map(Vec::len),
            Some(1),
            "{effect}: {user:#}"
        );
    }
    assert_eq!(user["points_total"], amount / 100, "{user:#}");
    for system in System::ALL {
        assert_eq!(stats["systems"][system.name()]["applied"], 1, "{stats:#}");
    }

    // With every receipt in, the row is settled once it is old enough
    // (`reconcile_after`): nothing is owed, nothing is sent again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, stats) = get_json(&app, "/api/stats").await;
        let unsettled = app.store.unsettled(i64::MAX).await.unwrap();
        if unsettled.rows == 0 && stats["reconcile"]["missing"] == 0 {
            assert!(stats["reconcile"]["oldest_missing_age_ms"].is_null());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still unsettled: {unsettled:?} {stats:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A receipt delivered twice (here: sent again, under the app's key,
    // with another time) changes nothing.
    let receipts_before = app.deliveries.of("order_receipt_group").handled;
    let order_id = OrderId::parse(&id).unwrap();
    let paid = OrderEvent::paid_event_id(&order_id);
    let duplicate = Receipt {
        consumer_group: "push_group".to_owned(),
        event_ids: vec![paid.clone()],
        applied_at: 1,
        shipments: Default::default(),
    };
    let message = OutboxMessage {
        id: 0,
        topic: Receipt::KIND.topic().to_owned(),
        tag: Receipt::KIND.tag().to_owned(),
        key: "push_group".to_owned(),
        event_id: "EffectsApplied:push_group:test-duplicate".to_owned(),
        body: duplicate.to_json(),
        deliver_at: None,
        attempts: 0,
    };
    let keys = SigningKeys::parse(APP_KEYS).unwrap().keyring().clone();
    events::publish_as(&app.namesrv_addr, Some(keys), &message)
        .await
        .unwrap();
    app.wait_settled(
        &[("order_receipt_group", receipts_before + 1)],
        Duration::from_secs(30),
    )
    .await;
    let after = app.store.receipts_of(&[paid]).await.unwrap();
    assert_eq!(after.len(), 4, "{after:?}");
    let push = after
        .iter()
        .find(|r| r.consumer_group == "push_group")
        .unwrap();
    assert_eq!(
        Some(push.applied_at),
        receipt_at(&restored, "push_group"),
        "the first receipt stands"
    );
    app.stop().await.unwrap();
}

/// `ordermq outbox missing` lists a sent event re-published
/// `reconcile_max` times and still owed, with the groups that owe it.
#[tokio::test]
async fn an_operator_lists_the_events_the_reconciler_gave_up_on() {
    use ordermq_domain::{NewOrder, OrderLine, Quantity, Sku, UserId};
    use ordermq_store::{Store, StoreOptions};

    let dir = tempfile::tempdir().unwrap();
    let mut config = ordermq_testkit::local_config(dir.path());
    config.reconcile_max = 1;
    let store = Store::open(&config.database_url(), &StoreOptions::default())
        .await
        .unwrap();
    store
        .seed_catalog(ordermq::startup::DEMO_CATALOG)
        .await
        .unwrap();
    let order = NewOrder::new(
        UserId::parse("u1").unwrap(),
        vec![OrderLine {
            sku: Sku::parse("SKU-1").unwrap(),
            quantity: Quantity::parse(1).unwrap(),
        }],
    )
    .unwrap();
    store
        .create_order(&order, &OrderId::generate(1, 7u64), 1, Some(60_000))
        .await
        .unwrap();
    // Its close: sent, put back once, sent again; the order is still unpaid.
    // (Its change-feed event is sent beside it; no group owes that one.)
    let claimed = store.claim_outbox("relay", 10, 1_000, 2).await.unwrap();
    let close = claimed
        .iter()
        .find(|m| m.topic != ordermq_domain::feed::TOPIC_ORDER_CHANGE_FEED)
        .unwrap()
        .clone();
    let ids =
        |rows: &[ordermq_domain::OutboxMessage]| rows.iter().map(|m| m.id).collect::<Vec<_>>();
    store.mark_sent(&ids(&claimed), 3).await.unwrap();
    assert!(ordermq::outbox::missing(&config).await.unwrap().is_empty());
    assert_eq!(store.reconcile_rows(&[], &[close.id], 4).await.unwrap(), 1);
    let again = store.claim_outbox("relay", 10, 1_000, 5).await.unwrap();
    assert_eq!(ids(&again), [close.id]);
    store.mark_sent(&ids(&again), 6).await.unwrap();
    store.close().await;

    let missing = ordermq::outbox::missing(&config).await.unwrap();
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0].owed_by, ["order_close_group"]);
    let table = ordermq::outbox::render_missing(&missing);
    assert!(table.contains(&close.event_id), "{table}");
    assert_eq!(
        ordermq::outbox::missing_json(&missing)[0]["republished"],
        serde_json::json!(1)
    );
}
