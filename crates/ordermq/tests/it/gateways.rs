//! ordermq with all three third parties in `http` mode, against an
//! in-process `ordermq-fake-provider` over real HTTP: what the provider's
//! call log holds is what ordermq asked of the outside world.

use std::time::Duration;

use ordermq::config::{GatewayMode, SigningKeys};
use ordermq_domain::topology::{Consumer, group_of};
use ordermq_domain::{OrderEvent, OrderId, System};
use ordermq_fake_provider::{CallOutcome, Options};
use ordermq_testkit::LocalApp;
use reqwest::Method;
use serde_json::{Value, json};

use crate::lifecycle::wait_for_order;

const KEYS: &str = "k1:e2e-provider-secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paid_then_refunded_order_reaches_the_providers_once_each() {
    let dir = tempfile::tempdir().unwrap();
    let keyring = ordermq_fake_provider::parse_keys(KEYS).unwrap();
    let (addr, provider) = ordermq_fake_provider::spawn(Options::local(keyring, dir.path()))
        .await
        .unwrap();
    // The first two calls do their work and lose their answer: ordermq
    // retries them with the same key.
    provider.lose_next_answers(2);
    let url: ordermq::config::HttpUrl = format!("http://{addr}").parse().unwrap();
    let app = LocalApp::start(|c| {
        c.gateways_sms_mode = GatewayMode::Http;
        c.gateways_sms_url = Some(url.clone());
        c.gateways_sms_keys = Some(SigningKeys::parse(KEYS).unwrap());
        c.gateways_logistics_mode = GatewayMode::Http;
        c.gateways_logistics_url = Some(url.clone());
        c.gateways_logistics_keys = Some(SigningKeys::parse(KEYS).unwrap());
        c.gateways_payments_mode = GatewayMode::Http;
        c.gateways_payments_url = Some(url.clone());
        c.gateways_payments_keys = Some(SigningKeys::parse(KEYS).unwrap());
    })
    .await
    .unwrap();
    assert!(
        app.sms.is_none() && app.logistics.is_none() && app.payments.is_none(),
        "no fake in use"
    );

    // Paid: one SMS and one booking, keyed by the OrderPaid event.
    let response = ordermq_testkit::create_order(&app, "gw-user", &[("SKU-1", 2)]).await;
    assert_eq!(response.status(), 201);
    let order: Value = response.json().await.unwrap();
    let id = order["order_id"].as_str().unwrap().to_owned();
    let paid = app
        .notify(&id, "gw-pay-1", order["amount"].as_i64().unwrap())
        .await
        .unwrap();
    assert_eq!(paid.status(), 200);
    let push = System::Push.consumer_group();
    let warehouse = System::Warehouse.consumer_group();
    app.wait_settled(&[(push, 1), (warehouse, 1)], Duration::from_secs(30))
        .await;
    let paid_event = OrderEvent::paid_event_id(&OrderId::parse(&id).unwrap());
    let keyed = |endpoint: &str, key: &str| {
        provider
            .effects(endpoint)
            .into_iter()
            .filter(|c| c.idempotency_key.as_deref() == Some(key))
            .count()
    };
    assert_eq!(keyed("/sms/send", &paid_event), 1, "one SMS");
    assert_eq!(keyed("/logistics/shipments", &paid_event), 1, "one booking");
    let (_, activity) = ordermq_testkit::get_json(&app, "/api/users/gw-user").await;
    let tracking_no = activity["shipments"][0]["tracking_no"]
        .as_str()
        .unwrap()
        .to_owned();
    let booking = &provider.effects("/logistics/shipments")[0];
    assert_eq!(booking.response["tracking_no"], tracking_no.as_str());

    // Refunded whole before the carrier collected it: one refund, one
    // cancellation of that booking, one refund SMS.
    let refund: Value = app
        .as_operator(Method::POST, &format!("/api/orders/{id}/refund"))
        .header("idempotency-key", "gw-refund-1")
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refund_id = refund["refund_id"].as_str().unwrap().to_owned();
    wait_for_order(&app, &id, Duration::from_secs(60), |o| {
        o["status"] == "REFUNDED"
            && o["consumers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["state"] == "done")
    })
    .await;
    let refund_event = format!("OrderRefundRequested:{refund_id}");
    app.wait_settled(
        &[
            (group_of(Consumer::Refund).name, 1),
            (push, 2),
            (warehouse, 2),
        ],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(keyed("/payments/refunds", &refund_id), 1, "one refund");
    assert_eq!(
        keyed("/logistics/shipments/cancel", &refund_event),
        1,
        "one cancellation"
    );
    assert_eq!(keyed("/sms/send", &refund_event), 1, "one refund SMS");
    let cancel = &provider.effects("/logistics/shipments/cancel")[0];
    assert_eq!(cancel.request["tracking_no"], tracking_no.as_str());
    let (_, activity) = ordermq_testkit::get_json(&app, "/api/users/gw-user").await;
    assert_eq!(activity["shipments"][0]["status"], "CANCELLED");

    // Every call was signed with the configured key and accepted.
    let calls = provider.calls();
    assert!(
        calls
            .iter()
            .all(|c| c.key_id.as_deref() == Some("k1") && c.outcome != CallOutcome::Refused),
        "{calls:#?}"
    );
    assert_eq!(provider.effects("/sms/send").len(), 2);
    app.stop().await.unwrap();
    provider.stop().await.unwrap();
}
