//! Events that cannot be forged, through the real embedded broker: a message
//! published to `TopicOrderPaySuccess` by a producer without ordermq's event
//! keys is parked by every group (recorded with its reason, counted, never
//! applied), while one signed under a key rotated in is applied. And the
//! identifiers a shopper sees cannot be predicted from one another.

use std::time::Duration;

use ordermq::config::SigningKeys;
use ordermq::dlq;
use ordermq_domain::signing::Keyring;
use ordermq_domain::{OutboxMessage, System};
use ordermq_testkit::{
    LocalApp, RouterHarness, create_order, events, fast_third_parties, get_json,
};
use serde_json::{Value, json};

/// The app's event keys: k1 signs, k2 was rotated in (verifies only).
const APP_KEYS: &str = "k1:old-secret,k2:new-secret";

fn keyring(text: &str) -> Keyring {
    SigningKeys::parse(text).unwrap().keyring().clone()
}

async fn start() -> LocalApp {
    LocalApp::start(|config| {
        fast_third_parties(config);
        config.event_keys = Some(SigningKeys::parse(APP_KEYS).unwrap());
    })
    .await
    .expect("ordermq starts")
}

/// The four groups of `TopicOrderPaySuccess`.
fn paid_groups() -> Vec<&'static str> {
    System::ALL.iter().map(|s| s.consumer_group()).collect()
}

async fn create(app: &LocalApp, user: &str) -> (String, i64) {
    let response = create_order(app, user, &[("SKU-2", 1)]).await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    (
        body["order_id"].as_str().unwrap().to_owned(),
        body["amount"].as_i64().unwrap(),
    )
}

/// An `OrderPaid` for `order_id` (one SKU-2), as the outbox would hold it.
fn order_paid(order_id: &str, user: &str, amount: i64) -> OutboxMessage {
    events::order_paid(order_id, user, "SKU-2", amount)
}

/// Publishes `message` from a producer that signs with `keys` (`None`: unsigned).
async fn publish_as(app: &LocalApp, keys: Option<Keyring>, message: &OutboxMessage) {
    events::publish_as(&app.namesrv_addr, keys, message)
        .await
        .expect("the broker takes the message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_events_are_parked_by_every_group_and_applied_by_none() {
    let app = start().await;
    let groups = paid_groups();
    // A real payment: applied by all four groups.
    let (paid, amount) = create(&app, "alice").await;
    assert_eq!(
        app.notify(&paid, "pay-real", amount)
            .await
            .unwrap()
            .status(),
        200
    );
    let wanted: Vec<(&str, u64)> = groups.iter().map(|g| (*g, 1)).collect();
    let before = app.wait_settled(&wanted, Duration::from_secs(60)).await;

    // The real event's body, copied for an order that was never paid, with
    // the amount raised: unsigned, signed with a guessed secret under the
    // signing key's id, and signed under a key ordermq never had.
    let (victim, _) = create(&app, "mallory").await;
    let forged = order_paid(&victim, "mallory", 100_000_000);
    publish_as(&app, None, &forged).await;
    publish_as(&app, Some(keyring("k1:guessed-secret")), &forged).await;
    publish_as(&app, Some(keyring("k9:attacker-secret")), &forged).await;

    let parked: Vec<(&str, u64)> = groups.iter().map(|g| (*g, 3)).collect();
    let after = app.wait_parked(&parked, Duration::from_secs(60)).await;
    for ((group, before), after) in groups.iter().zip(&before).zip(&after) {
        assert_eq!(after.parked, 3, "{group}: {after:?}");
        assert_eq!(
            after.handled, before.handled,
            "{group}: a forgery reached the handler"
        );
    }

    // Nothing applied: the order is still unpaid and nobody did anything for mallory.
    let (_, order) = get_json(&app, &format!("/api/orders/{victim}")).await;
    assert_eq!(order["status"], "UNPAID", "{order:#}");
    for system in System::ALL {
        assert_eq!(order["fanout"][system.name()], "pending", "{order:#}");
    }
    let (_, mallory) = get_json(&app, "/api/users/mallory").await;
    assert_eq!(mallory["points_total"], 0, "{mallory:#}");
    for effect in ["points", "coupons", "sms", "shipments"] {
        assert_eq!(mallory[effect], json!([]), "{effect}: {mallory:#}");
    }

    // Counted per group in /api/stats, kept with the reason in the store.
    let (_, stats) = get_json(&app, "/api/stats").await;
    for group in &groups {
        assert_eq!(stats["parked"][group], 3, "{group}: {stats:#}");
    }
    assert_eq!(stats["parked"]["order_close_group"], 0, "{stats:#}");
    for group in &groups {
        let rows = app.store.parked(Some(group)).await.unwrap();
        let mut reasons: Vec<&str> = rows.iter().map(|p| p.reason.as_str()).collect();
        reasons.sort_unstable();
        assert_eq!(
            reasons,
            ["missing_signature", "signature_mismatch", "unknown_key"],
            "{group}: {rows:#?}"
        );
        for row in &rows {
            assert_eq!(row.key, victim);
            assert_eq!(row.event_id.as_deref(), Some(forged.event_id.as_str()));
            assert!(row.body.contains("100000000"), "{row:?}");
            assert!(row.parked_at > 0 && !row.msg_id.is_empty(), "{row:?}");
        }
    }

    // The real payment's coupon code says nothing about its order.
    let (_, alice) = get_json(&app, "/api/users/alice").await;
    let code = alice["coupons"][0]["code"].as_str().unwrap().to_owned();
    assert!(code.starts_with("THX-") && code.len() == 24, "{code}");
    assert!(
        !code.contains(&paid[1..]),
        "{code} contains the order id {paid}"
    );
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_signed_under_a_key_rotated_in_is_applied() {
    let app = start().await;
    let groups = paid_groups();
    let (order, amount) = create(&app, "bob").await;
    // A producer already on the new key (k2), which this app only verifies with.
    publish_as(
        &app,
        Some(keyring("k2:new-secret")),
        &order_paid(&order, "bob", amount),
    )
    .await;
    let wanted: Vec<(&str, u64)> = groups.iter().map(|g| (*g, 1)).collect();
    let counts = app.wait_settled(&wanted, Duration::from_secs(60)).await;
    assert!(counts.iter().all(|c| c.parked == 0), "{counts:?}");
    let (_, bob) = get_json(&app, "/api/users/bob").await;
    assert_eq!(bob["points_total"], amount / 100, "{bob:#}");
    for effect in ["coupons", "sms", "shipments"] {
        assert_eq!(
            bob[effect].as_array().map(Vec::len),
            Some(1),
            "{effect}: {bob:#}"
        );
    }
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dlq_tool_lists_each_groups_parked_forgery() {
    let app = start().await;
    let (victim, _) = create(&app, "trudy").await;
    let forged = order_paid(&victim, "trudy", 5_000);
    publish_as(&app, None, &forged).await;
    let parked: Vec<(&str, u64)> = paid_groups().iter().map(|g| (*g, 1)).collect();
    app.wait_parked(&parked, Duration::from_secs(60)).await;

    // `ordermq dlq parked`: each group's refusal, with its reason.
    let config = app.tool_config();
    let listed = dlq::parked(&config, None)
        .await
        .expect("the tool reads the store");
    let mut groups: Vec<&str> = listed.iter().map(|p| p.group.as_str()).collect();
    groups.sort_unstable();
    let mut wanted = paid_groups();
    wanted.sort_unstable();
    assert_eq!(groups, wanted, "{listed:#?}");
    for message in &listed {
        assert_eq!(message.event_id.as_deref(), Some(forged.event_id.as_str()));
        assert_eq!(message.key, victim);
        assert_eq!(message.reason, "missing_signature", "{message:#?}");
    }
    let table = dlq::render_parked(&listed);
    assert!(table.contains("4 parked message(s)"), "{table}");
    assert_eq!(dlq::parked_count(&config).await.unwrap(), 4);

    // Listed, never applied.
    let (_, order) = get_json(&app, &format!("/api/orders/{victim}")).await;
    assert_eq!(order["status"], "UNPAID", "{order:#}");
    let (_, trudy) = get_json(&app, "/api/users/trudy").await;
    assert_eq!(trudy["points_total"], 0, "{trudy:#}");
    app.stop().await.unwrap();
}

/// How many bits two 16-hex-digit suffixes differ in.
fn bits_apart(a: &str, b: &str) -> u32 {
    let parse = |s: &str| u64::from_str_radix(s, 16).expect("16 hex digits");
    (parse(a) ^ parse(b)).count_ones()
}

#[tokio::test]
async fn order_ids_of_one_millisecond_differ_in_64_random_bits() {
    let harness = RouterHarness::start().await;
    let mut ids = Vec::new();
    for _ in 0..40 {
        let (status, order) = harness
            .post(
                "/api/orders",
                &json!({"user_id": "u1", "items": [{"sku": "SKU-1", "quantity": 1}]}),
                false,
            )
            .await;
        assert_eq!(status, 201, "{order}");
        ids.push(order["order_id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        // O + 13 digits of milliseconds + 16 hex digits of randomness.
        assert_eq!(id.len(), 30, "{id}");
        assert!(id[14..].bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    }
    for (i, a) in ids.iter().enumerate() {
        for b in &ids[i + 1..] {
            // Independent 64-bit draws differ in 32 bits on average; fewer
            // than 8 happens once in ~10^11 pairs. A counter or a clock
            // would differ in a few.
            assert!(bits_apart(&a[14..], &b[14..]) >= 8, "{a} and {b} are close");
        }
    }
}
