//! An event that arrives before the event it depends on waits a short,
//! fixed delay — not the broker's growing retry schedule — through the real
//! embedded broker with RocketMQ's default delay levels.
//!
//! A refund's `OrderRefundRequested` reaches the downstream groups before
//! its order's `OrderPaid` (published after it here, as a crash or a failing
//! third party can arrange in production). Each group answers "waiting":
//! with "reconsume later" it would come back on level 3 + n (10 s, 30 s,
//! 1 min …), so an `OrderPaid` landing after its second try would be
//! followed by the reversal only ~30 s later. The bridge sends a waiting
//! event on for this group alone, due a second later, so the reversal
//! follows the payment's effect within a few seconds, once per group.

use std::time::{Duration, Instant};

use ordermq::config::SigningKeys;
use ordermq_domain::event::{OrderRefundRequested, PaidLine};
use ordermq_domain::signing::Keyring;
use ordermq_domain::{
    Amount, OrderEvent, OrderId, OutboxMessage, PaymentId, RefundId, Sku, System, UserId,
    now_millis,
};
use ordermq_testkit::{LocalApp, create_order, events, fast_third_parties, get_json};
use serde_json::Value;

const KEYS: &str = "k1:waiting-test-secret";
const ORDER: &str = "O-waits-1";
const USER: &str = "walt";
const AMOUNT: i64 = 2950;

fn keyring() -> Keyring {
    SigningKeys::parse(KEYS).unwrap().keyring().clone()
}

/// A whole refund of [`ORDER`] that reverses its effects, as the outbox would hold it.
fn refund() -> OutboxMessage {
    let event = OrderEvent::OrderRefundRequested(OrderRefundRequested {
        refund_id: RefundId::parse("R-waits-1").unwrap(),
        order_id: OrderId::parse(ORDER).unwrap(),
        user_id: UserId::parse(USER).unwrap(),
        payment_id: PaymentId::parse(&format!("pay-{ORDER}")).unwrap(),
        amount: Amount::parse(AMOUNT).unwrap(),
        lines: vec![PaidLine {
            sku: Sku::parse("SKU-2").unwrap(),
            quantity: 1,
            unit_price: Amount::parse(AMOUNT).unwrap(),
        }],
        full: true,
        reverse_effects: true,
        requested_at: now_millis(),
    });
    OutboxMessage {
        id: 0,
        topic: event.kind().topic().into(),
        tag: event.kind().tag().into(),
        key: ORDER.into(),
        event_id: event.event_id(),
        body: event.to_json(),
        deliver_at: None,
        attempts: 0,
    }
}

async fn user(app: &LocalApp) -> Value {
    get_json(app, &format!("/api/users/{USER}")).await.1
}

fn len(user: &Value, effect: &str) -> usize {
    user[effect].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refund_before_its_payment_is_reversed_seconds_after_the_payment_lands() {
    let app = LocalApp::start(|config| {
        fast_third_parties(config);
        config.event_keys = Some(SigningKeys::parse(KEYS).unwrap());
        // RocketMQ's default levels (also the default when unset), said here
        // because the test is about them.
        config.retry_delay_levels = Some(
            ordermq_messaging::delay::ROCKETMQ_DEFAULT_LEVELS
                .parse()
                .unwrap(),
        );
    })
    .await
    .expect("ordermq starts");
    let credit = System::Credit.consumer_group();
    // A real payment first: every group has subscribed and consumed.
    let created = create_order(&app, "warm-up", &[("SKU-1", 1)]).await;
    assert_eq!(created.status(), 201);
    let order: Value = created.json().await.unwrap();
    let paid = app
        .notify(
            order["order_id"].as_str().unwrap(),
            "pay-warm-up",
            order["amount"].as_i64().unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(paid.status(), 200);
    let warmed: Vec<(&str, u64)> = System::ALL
        .iter()
        .map(|s| (s.consumer_group(), 1))
        .collect();
    app.wait_settled(&warmed, Duration::from_secs(60)).await;

    events::publish_as(&app.namesrv_addr, Some(keyring()), &refund())
        .await
        .expect("the broker takes the refund");
    // Tried twice before its payment exists (a second try within 60 s on
    // either schedule: ~1 s waiting, 10 s on the broker's).
    let deadline = Instant::now() + Duration::from_secs(60);
    while app.deliveries.of(credit).retried < 2 {
        assert!(
            Instant::now() < deadline,
            "the refund was not tried twice: {:?}",
            app.deliveries.of(credit)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(len(&user(&app).await, "points"), 0, "nothing applied yet");
    // An operator (and the fault suite, before it checks) sees the group
    // is not settled: the waiting refund is in a handler or owed back.
    let (_, stats) = get_json(&app, "/api/stats").await;
    let waiting = &stats["deliveries"][credit];
    assert!(
        waiting["in_flight"].as_u64().unwrap() + waiting["retries_owed"].as_u64().unwrap() >= 1,
        "the waiting refund is neither in flight nor owed: {waiting}"
    );

    let landed = Instant::now();
    let paid = events::order_paid(ORDER, USER, "SKU-2", AMOUNT);
    events::publish_as(&app.namesrv_addr, Some(keyring()), &paid)
        .await
        .expect("the broker takes the payment");
    // The payment's points, then the reversal's.
    loop {
        let walt = user(&app).await;
        if len(&walt, "points") == 2 {
            assert_eq!(walt["points_total"], 0, "{walt:#}");
            break;
        }
        assert!(
            landed.elapsed() < Duration::from_secs(12),
            "the reversal did not follow the payment within 12 s: {walt:#} {:?}",
            app.deliveries.of(credit)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = landed.elapsed();

    // Every group applies both events (and the warm-up's) once and
    // settles: no waiting event left owed, none applied twice.
    let groups: Vec<(&str, u64)> = System::ALL
        .iter()
        .map(|s| (s.consumer_group(), 3))
        .collect();
    app.wait_settled(&groups, Duration::from_secs(30)).await;
    let walt = user(&app).await;
    assert_eq!(len(&walt, "points"), 2, "{walt:#}");
    assert_eq!(len(&walt, "coupons"), 1, "{walt:#}");
    assert_eq!(walt["coupons"][0]["status"], "REVOKED", "{walt:#}");
    assert_eq!(len(&walt, "sms"), 2, "paid and refund SMS: {walt:#}");
    let (_, stats) = get_json(&app, "/api/stats").await;
    for system in System::ALL {
        let group = &stats["deliveries"][system.consumer_group()];
        assert_eq!(group["handled"], 3, "{system:?}: {group}");
        assert_eq!(
            (group["in_flight"].as_u64(), group["retries_owed"].as_u64()),
            (Some(0), Some(0)),
            "{system:?}: {group}"
        );
    }
    eprintln!("reversal applied {after:?} after the payment was published");
    app.stop().await.unwrap();
}
