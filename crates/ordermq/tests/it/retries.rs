//! A failed effect is retried by ordermq's listener bridge, on RocketMQ's
//! schedule, and after its last try dead-lettered — never through the
//! client's send-back, which a busy client or broker refuses and whose
//! fallback the 1.0.0 broker dead-letters at once (docs/reliability.md,
//! defect 4). The real embedded broker; `%RETRY%<group>` stays empty, as it
//! would not if the client's send-back were used.

use std::time::{Duration, Instant};

use ordermq::config::SigningKeys;
use ordermq::dlq;
use ordermq_domain::System;
use ordermq_gateways::Profile;
use ordermq_messaging::MqClient;
use ordermq_testkit::{LocalApp, create_order, fast_third_parties, get_json};
use serde_json::Value;

const PUSH: &str = "push_group";

/// Creates and pays an order of `user`; its id.
async fn paid_order(app: &LocalApp, user: &str) -> String {
    let response = create_order(app, user, &[("SKU-2", 1)]).await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    let id = body["order_id"].as_str().unwrap().to_owned();
    let amount = body["amount"].as_i64().unwrap();
    let paid = app
        .notify(&id, &format!("pay-{user}"), amount)
        .await
        .unwrap();
    assert_eq!(paid.status(), 200);
    id
}

/// Polls `what` until it holds, or panics after `within`.
async fn eventually<T: std::fmt::Debug>(
    within: Duration,
    mut what: impl AsyncFnMut() -> (bool, T),
) -> T {
    let deadline = Instant::now() + within;
    loop {
        let (done, seen) = what().await;
        if done {
            return seen;
        }
        assert!(Instant::now() < deadline, "never got there: {seen:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Messages stored in `%RETRY%push_group` (a topic the broker may not have
/// created at all: none then).
async fn stored_in_retry_topic(app: &LocalApp) -> i64 {
    let mq = MqClient::connect(&app.namesrv_addr, "retries_test_admin", Default::default())
        .await
        .unwrap();
    let stored = mq.messages_stored(&format!("%RETRY%{PUSH}")).await;
    mq.shutdown().await;
    match stored {
        Ok(per_broker) => per_broker.values().sum(),
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.contains("not exist") || text.contains("route"),
                "{text}"
            );
            0
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_effect_is_retried_on_schedule_then_dead_lettered_and_one_that_heals_is_applied_once()
 {
    let app = LocalApp::start(|c| {
        fast_third_parties(c);
        c.event_keys = Some(SigningKeys::parse("k1:retries-secret").unwrap());
        // Tried three times (two retries), each a second after the last.
        c.max_reconsume_times = 2;
        c.retry_delay_levels = Some(
            "1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s"
                .parse()
                .unwrap(),
        );
    })
    .await
    .expect("ordermq starts");
    let sms = app.sms.clone().expect("the fake SMS gateway");
    sms.set_profile(Profile {
        failure_rate: 1.0,
        ..Profile::INSTANT
    });

    // The SMS gateway is down for good: push tries three times, then the
    // message is in its dead-letter queue, listed by `ordermq dlq`.
    let lost = paid_order(&app, "dora").await;
    let config = app.tool_config();
    let letters = eventually(Duration::from_secs(60), async || {
        let letters = dlq::list(&config, &[System::Push]).await.unwrap();
        (letters.iter().any(|l| l.order_id == lost), letters)
    })
    .await;
    assert_eq!(letters.len(), 1, "{letters:#?}");
    let letter = &letters[0];
    assert_eq!(letter.event_id, format!("OrderPaid:{lost}"), "{letter:#?}");
    assert_eq!(letter.state, "pending", "{letter:#?}");
    assert_eq!(letter.attempts, 3, "{letter:#?}");
    let push = app.deliveries.of(PUSH);
    assert_eq!(push.retried, 3, "three tries, none applied: {push:?}");
    assert_eq!(push.handled, 0, "{push:?}");
    assert!(
        push.is_settled(),
        "nothing owed after the last try: {push:?}"
    );
    let (_, order) = get_json(&app, &format!("/api/orders/{lost}")).await;
    assert_eq!(order["fanout"]["push"], "failed", "{order:#}");
    assert_eq!(sms.accepted(), 0);

    // It fails once, then the gateway is back: applied on its retry, once.
    let healed = paid_order(&app, "hal").await;
    eventually(Duration::from_secs(30), async || {
        let push = app.deliveries.of(PUSH);
        (push.retried >= 4, push)
    })
    .await;
    sms.set_profile(Profile::INSTANT);
    let order = eventually(Duration::from_secs(30), async || {
        let (_, order) = get_json(&app, &format!("/api/orders/{healed}")).await;
        (order["fanout"]["push"] == "done", order)
    })
    .await;
    assert_eq!(order["fanout"]["push"], "done");
    let settled = app
        .wait_settled(&[(PUSH, 1)], Duration::from_secs(30))
        .await;
    assert_eq!(
        sms.accepted(),
        1,
        "one SMS for the healed order: {settled:?}"
    );
    let (_, hal) = get_json(&app, "/api/users/hal").await;
    assert_eq!(hal["sms"].as_array().map(Vec::len), Some(1), "{hal:#}");
    // Only the lost order's letter: the healed one never reached the DLQ.
    assert_eq!(dlq::list(&config, &[System::Push]).await.unwrap().len(), 1);

    // Neither went through the client's send-back.
    assert_eq!(stored_in_retry_topic(&app).await, 0);
    app.stop().await.unwrap();
}
