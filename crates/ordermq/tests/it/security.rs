//! Credentials through the whole server: configuration to start-up to the
//! listeners. A refused callback changes nothing (the database is read, not
//! only the status); a key rotation accepts both keys; ordermq refuses to
//! start with public credentials where others can reach it; operator routes
//! live only on their own listener when it is set; and no secret reaches
//! the log at start.

use std::io::Write;
use std::sync::{Arc, Mutex};

use ordermq::config::{ApiTokens, SigningKeys};
use ordermq::{Application, Config, StartError};
use ordermq_api::signature::{CallbackSigner, DEFAULT_MAX_AGE, SignedHeaders, now_millis};
use ordermq_domain::signing::Keyring;
use ordermq_testkit::{LocalApp, OPERATOR_TOKEN, SHOP_TOKEN, fast_third_parties};
use reqwest::Method;
use serde_json::{Value, json};

const NEW_SECRET: &str = "new-payment-s3cret";
const OLD_SECRET: &str = "old-payment-s3cret";
const GONE_SECRET: &str = "retired-payment-s3cret";
const CARRIER_SECRET: &str = "carrier-s3cret";

/// A log sink shared with the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn ring(keys: &[(&str, &str)]) -> Keyring {
    Keyring::new(keys.iter().map(|(id, s)| (id.to_string(), s.as_bytes()))).unwrap()
}

/// A payment callback with exactly these headers.
async fn notify(app: &LocalApp, body: &str, signed: &SignedHeaders) -> (u16, Value) {
    let mut request = app
        .client
        .post(app.url("/api/payments/notify"))
        .header("content-type", "application/json");
    for (name, value) in signed.pairs() {
        request = request.header(name, value);
    }
    let response = request.body(body.to_owned()).send().await.unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

/// Everything a refused payment could change.
async fn state(app: &LocalApp) -> String {
    format!(
        "{:?}\n{:?}\n{:?}",
        app.store.audit_orders().await.unwrap(),
        app.store.audit_payments().await.unwrap(),
        app.store.outbox_backlog().await.unwrap(),
    )
}

#[tokio::test]
async fn rotated_keys_forged_expired_and_retired_signatures_and_an_operator_listener() {
    let logs = Captured::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_writer(move || sink.clone())
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    let app = LocalApp::start(|config| {
        fast_third_parties(config);
        config.payment_secret = None;
        config.payment_keys =
            Some(SigningKeys::parse(&format!("new:{NEW_SECRET},old:{OLD_SECRET}")).unwrap());
        config.logistics_secret = Some(CARRIER_SECRET.into());
        config.operator_http_addr = Some(([127, 0, 0, 1], 0).into());
    })
    .await
    .expect("ordermq starts");
    drop(guard);
    let printed = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    // Proof that the start was captured at all (or the checks below would
    // pass on an empty log). Any of the start's lines will do: with other
    // tests logging on other threads, tracing's per-callsite interest cache
    // can miss a single line of this thread's scoped subscriber.
    assert!(
        [
            "database ready",
            "NameServer + broker started",
            "subscribed"
        ]
        .iter()
        .any(|line| printed.contains(line)),
        "the log was captured: {printed}"
    );
    for secret in [
        NEW_SECRET,
        OLD_SECRET,
        CARRIER_SECRET,
        SHOP_TOKEN,
        OPERATOR_TOKEN,
    ] {
        assert!(!printed.contains(secret), "{secret} in the log:\n{printed}");
    }

    // Operator routes only on the operator listener; the shop's on both.
    let operator_addr = app.operator_addr.expect("an operator listener");
    let on_public = app
        .client
        .get(app.url("/api/stats"))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(on_public.status(), 404);
    let on_operator = app
        .as_operator(Method::GET, "/api/stats")
        .send()
        .await
        .unwrap();
    assert_eq!(on_operator.status(), 200);
    assert!(app.operator_url("/").contains(&operator_addr.to_string()));
    let callback_on_operator = app
        .client
        .post(app.operator_url("/api/payments/notify"))
        .send()
        .await
        .unwrap();
    assert_eq!(callback_on_operator.status(), 404, "callbacks stay public");

    let created: Value = ordermq_testkit::create_order(&app, "sec-user", &[("SKU-2", 1)])
        .await
        .json()
        .await
        .unwrap();
    let id = created["order_id"].as_str().unwrap();
    let body = json!({"order_id": id, "payment_id": "pay-sec", "amount": 2950}).to_string();
    let before = state(&app).await;

    let old_sender = CallbackSigner::new(ring(&[("old", OLD_SECRET)]), DEFAULT_MAX_AGE);
    let refused = [
        (
            "forged",
            CallbackSigner::new(ring(&[("new", "not-the-secret")]), DEFAULT_MAX_AGE)
                .sign(body.as_bytes()),
            "INVALID_SIGNATURE",
        ),
        (
            "retired key",
            CallbackSigner::new(ring(&[("gone", GONE_SECRET)]), DEFAULT_MAX_AGE)
                .sign(body.as_bytes()),
            "INVALID_SIGNATURE",
        ),
        (
            "expired",
            old_sender.sign_at(body.as_bytes(), now_millis() - 10 * 60_000),
            "SIGNATURE_EXPIRED",
        ),
    ];
    for (what, signed, code) in refused {
        let (status, answer) = notify(&app, &body, &signed).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (401, Some(code)),
            "{what}: {answer}"
        );
        assert_eq!(state(&app).await, before, "{what} changed the database");
    }
    let (_, order) = ordermq_testkit::get_json(&app, &format!("/api/orders/{id}")).await;
    assert_eq!(order["status"], "UNPAID");

    // The second key of the ring is accepted (the gateway not rotated yet).
    let (status, receipt) = notify(&app, &body, &old_sender.sign(body.as_bytes())).await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["status"], "PAID");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn ordermq_refuses_to_start_with_public_credentials_on_an_open_address() {
    let dir = tempfile::tempdir().unwrap();
    let open = |adjust: &dyn Fn(&mut Config)| {
        let mut config = ordermq_testkit::local_config(dir.path());
        config.http_addr = ([0, 0, 0, 0], 0).into();
        config.logistics_secret = Some("carrier".into());
        adjust(&mut config);
        config
    };
    // The development payment secret on 0.0.0.0.
    let config = open(&|c| c.payment_secret = None);
    let error = Application::build(&config).await.unwrap_err();
    assert!(matches!(error, StartError::Security(_)), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("payment secret")
            && message.contains("ORDERMQ_PAYMENT_SECRET")
            && message.contains("dev_mode"),
        "{message}"
    );
    // No tokens configured: the demo tokens would be open to all.
    let config = open(&|c| c.api_tokens = None);
    let error = Application::build(&config).await.unwrap_err();
    assert!(error.to_string().contains("`ordermq token"), "{error}");
    // A configured but empty secret, even on loopback.
    let mut config = ordermq_testkit::local_config(dir.path());
    config.logistics_secret = Some("".into());
    let error = Application::build(&config).await.unwrap_err();
    assert!(
        error.to_string().contains("logistics_secret is empty"),
        "{error}"
    );
    // Nothing was started: no database file was created.
    assert!(!dir.path().join("orders.db").exists());
    // Real tokens parse from their configured form.
    assert!(ApiTokens::parse("x:shop:00").is_err());
}
