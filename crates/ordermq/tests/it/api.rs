//! The HTTP contract, driven through the router with `oneshot` on the real
//! order service and a SQLite store (no broker: nothing here publishes).
//!
//! Every rejected request must answer a 4xx with a stable code and change
//! nothing: the tests compare the database before and after.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use ordermq_api::signature::{CallbackSigner, SignedHeaders};
use ordermq_testkit::RouterHarness;
use serde_json::{Value, json};
use tower::ServiceExt;

/// What the HTTP-contract tests add to the shared router harness.
trait ApiHarness {
    /// Everything a rejected request must leave untouched.
    async fn snapshot(&self) -> (Vec<ordermq_domain::Product>, ordermq_domain::view::Stats);
    async fn create(&self, sku: &str, quantity: i64) -> Value;
    async fn refund(&self, id: &str, key: Option<&str>, body: &str) -> (StatusCode, Value);
    async fn carrier(&self, body: &str, signer: &CallbackSigner) -> (StatusCode, Value);
}

async fn harness() -> RouterHarness {
    RouterHarness::start().await
}

impl ApiHarness for RouterHarness {
    async fn snapshot(&self) -> (Vec<ordermq_domain::Product>, ordermq_domain::view::Stats) {
        (
            self.store.products().await.unwrap(),
            self.store.stats().await.unwrap(),
        )
    }

    async fn create(&self, sku: &str, quantity: i64) -> Value {
        let (status, body) = self
            .post_json(
                "/api/orders",
                json!({"user_id": "u1", "items": [{"sku": sku, "quantity": quantity}]}).to_string(),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    async fn refund(&self, id: &str, key: Option<&str>, body: &str) -> (StatusCode, Value) {
        let mut request = Request::post(format!("/api/orders/{id}/refund"))
            .header("content-type", "application/json");
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        self.send(request.body(Body::from(body.to_owned())).unwrap())
            .await
    }

    async fn carrier(&self, body: &str, signer: &CallbackSigner) -> (StatusCode, Value) {
        let mut request =
            Request::post("/api/logistics/notify").header("content-type", "application/json");
        for (name, value) in signer.sign(body.as_bytes()).pairs() {
            request = request.header(name, value);
        }
        self.send(request.body(Body::from(body.to_owned())).unwrap())
            .await
    }
}

#[tokio::test]
async fn creates_reads_and_pays_an_order() {
    let h = harness().await;
    let order = h.create("SKU-2", 3).await;
    assert_eq!(order["status"], "UNPAID");
    assert_eq!(order["amount"], 3 * 2950);
    let id = order["order_id"].as_str().unwrap();

    let (status, products) = h
        .send(Request::get("/api/products").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, StatusCode::OK);
    let sku2 = products
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["sku"] == "SKU-2")
        .unwrap();
    assert_eq!(
        sku2["stock"],
        10_000 - 3,
        "stock shown is on hand minus reserved"
    );
    assert_eq!(sku2["price"], 2950);
    assert!(sku2["name"].is_string());

    let body = json!({"order_id": id, "payment_id": "pay-1", "amount": 8850}).to_string();
    let (status, receipt) = h.notify(&body).await;
    assert_eq!(status, StatusCode::OK, "{receipt}");
    assert_eq!(
        receipt,
        json!({"order_id": id, "status": "PAID", "duplicate": false, "refund_required": false})
    );
    let (status, again) = h.notify(&body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["duplicate"], true);

    let (status, view) = h
        .send(
            Request::get(format!("/api/orders/{id}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["status"], "PAID");
    assert_eq!(view["lines"][0]["sku"], "SKU-2");
    assert_eq!(view["history"].as_array().unwrap().len(), 2);
    for system in ["credit", "marketing", "push", "warehouse"] {
        assert_eq!(view["fanout"][system], "pending");
    }
    assert!(view["close_at"].as_i64().unwrap() > view["created_at"].as_i64().unwrap());
    // The order's delayed close, then its OrderPaid (the change feed is off
    // by default: no feed rows).
    assert_eq!(h.store.outbox_backlog().await.unwrap(), 2);
}

#[tokio::test]
async fn bad_orders_are_rejected_with_stable_codes_and_change_nothing() {
    let h = harness().await;
    let before = h.snapshot().await;
    let huge = format!(
        r#"{{"user_id":"u1","items":[],"pad":"{}"}}"#,
        "x".repeat(70_000)
    );
    let cases: Vec<(&str, String, StatusCode, &str)> = vec![
        ("malformed", "{not json".into(), StatusCode::BAD_REQUEST, "MALFORMED_JSON"),
        ("truncated", r#"{"user_id":"u1""#.into(), StatusCode::BAD_REQUEST, "MALFORMED_JSON"),
        ("empty body", "".into(), StatusCode::BAD_REQUEST, "MALFORMED_JSON"),
        ("too large", huge, StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
        ("unknown field", r#"{"user_id":"u1","items":[{"sku":"SKU-1","quantity":1}],"admin":true}"#.into(), StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST"),
        ("missing items", r#"{"user_id":"u1"}"#.into(), StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST"),
        ("no items", r#"{"user_id":"u1","items":[]}"#.into(), StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST"),
        ("zero quantity", r#"{"user_id":"u1","items":[{"sku":"SKU-1","quantity":0}]}"#.into(), StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST"),
        ("negative quantity", r#"{"user_id":"u1","items":[{"sku":"SKU-1","quantity":-5}]}"#.into(), StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST"),
        ("overflowing quantity", r#"{"user_id":"u1","items":[{"sku":"SKU-1","quantity":99999999999999999999999}]}"#.into(), StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST"),
        ("fractional quantity", r#"{"user_id":"u1","items":[{"sku":"SKU-1","quantity":1.5}]}"#.into(), StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST"),
        ("string quantity", r#"{"user_id":"u1","items":[{"sku":"SKU-1","quantity":"2"}]}"#.into(), StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST"),
        ("duplicate sku", r#"{"user_id":"u1","items":[{"sku":"SKU-1","quantity":1},{"sku":"SKU-1","quantity":1}]}"#.into(), StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST"),
        ("bad user id", r#"{"user_id":"u 1","items":[{"sku":"SKU-1","quantity":1}]}"#.into(), StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST"),
        ("unknown sku", r#"{"user_id":"u1","items":[{"sku":"SKU-1","quantity":1},{"sku":"NOPE","quantity":1}]}"#.into(), StatusCode::UNPROCESSABLE_ENTITY, "UNKNOWN_SKU"),
        ("out of stock", r#"{"user_id":"u1","items":[{"sku":"SKU-1","quantity":1},{"sku":"FLASH-1","quantity":11}]}"#.into(), StatusCode::CONFLICT, "OUT_OF_STOCK"),
    ];
    for (name, body, status, code) in cases {
        let (got, error) = h.post_json("/api/orders", body).await;
        assert_eq!(got, status, "{name}: {error}");
        assert_eq!(error["code"], code, "{name}: {error}");
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{name}"
        );
    }
    let (status, error) = h
        .send(
            Request::post("/api/orders")
                .header("content-type", "text/plain")
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some("UNSUPPORTED_MEDIA_TYPE")
        )
    );
    assert_eq!(
        h.snapshot().await,
        before,
        "rejected requests changed state"
    );
}

#[tokio::test]
async fn bad_payment_notices_are_rejected_and_change_nothing() {
    let h = harness().await;
    let order = h.create("SKU-1", 1).await;
    let id = order["order_id"].as_str().unwrap().to_owned();
    let before = h.snapshot().await;
    let good = json!({"order_id": id, "payment_id": "pay-1", "amount": 8900}).to_string();

    let (status, error) = h.notify_raw(&good, None).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("INVALID_SIGNATURE"))
    );
    let not_ours = SignedHeaders {
        signature: "deadbeef".into(),
        ..h.signer.sign(good.as_bytes())
    };
    let (status, error) = h.notify_raw(&good, Some(&not_ours)).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("INVALID_SIGNATURE"))
    );
    let forged = CallbackSigner::from_secret(b"wrong-secret").sign(good.as_bytes());
    let (status, _) = h.notify_raw(&good, Some(&forged)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A signature over a different body does not carry over.
    let tampered = good.replace("8900", "1");
    let (status, _) = h
        .notify_raw(&tampered, Some(&h.signer.sign(good.as_bytes())))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let cases: Vec<(String, StatusCode, &str)> = vec![
        (
            json!({"order_id": id, "payment_id": "pay-1", "amount": 8899}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "AMOUNT_MISMATCH",
        ),
        (
            json!({"order_id": id, "payment_id": "pay-1", "amount": -8900}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST",
        ),
        (
            json!({"order_id": "O0000000000000deadbeef", "payment_id": "pay-1", "amount": 8900})
                .to_string(),
            StatusCode::NOT_FOUND,
            "ORDER_NOT_FOUND",
        ),
        (
            json!({"order_id": id, "payment_id": "", "amount": 8900}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST",
        ),
        (
            json!({"order_id": id, "payment_id": "pay-1", "amount": 8900, "extra": 1}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST",
        ),
        (
            r#"{"order_id": "x", "payment_id": "p", "amount": 1e400}"#.to_owned(),
            StatusCode::BAD_REQUEST,
            "MALFORMED_JSON",
        ),
        (
            r#"{"order_id": "#.to_owned(),
            StatusCode::BAD_REQUEST,
            "MALFORMED_JSON",
        ),
        (
            "[1,2,3]".to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST",
        ),
    ];
    for (body, status, code) in cases {
        let (got, error) = h.notify(&body).await;
        assert_eq!(got, status, "{body}: {error}");
        assert_eq!(error["code"], code, "{body}: {error}");
    }
    assert_eq!(h.snapshot().await, before, "rejected notices changed state");
    let view = h
        .store
        .order(&ordermq_domain::OrderId::parse(&id).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.status, ordermq_domain::OrderStatus::Unpaid);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json_errors() {
    let h = harness().await;
    let (status, error) = h
        .send(Request::get("/api/nope").body(Body::empty()).unwrap())
        .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("NOT_FOUND"))
    );
    let (status, error) = h
        .send(Request::delete("/api/orders").body(Body::empty()).unwrap())
        .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("METHOD_NOT_ALLOWED"))
    );
    let (status, error) = h
        .send(
            Request::get("/api/orders/not%20an%20id")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("ORDER_NOT_FOUND"))
    );
    let (status, error) = h
        .send(
            Request::get("/api/users/u1/bananas")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("NOT_FOUND"))
    );
    let (status, activity) = h
        .send(Request::get("/api/users/u1").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(activity["points_total"], 0);
    let response = h
        .router
        .clone()
        .oneshot(
            Request::get("/")
                .header(
                    "authorization",
                    ordermq_testkit::bearer(ordermq_testkit::OPERATOR_TOKEN),
                )
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn refunds_are_refused_with_stable_codes_and_change_nothing() {
    let h = harness().await;
    let order = h.create("SKU-2", 2).await;
    let id = order["order_id"].as_str().unwrap();
    let before = h.snapshot().await;
    bad_refunds_and_one_of_an_unpaid_order_are_refused(&h, id).await;

    let pay = json!({"order_id": id, "payment_id": "pay-r", "amount": 5900}).to_string();
    assert_eq!(h.notify(&pay).await.0, StatusCode::OK);
    let paid = h.snapshot().await;
    assert_ne!(before.1, paid.1);
    more_than_paid_or_a_line_not_ordered_is_refused(&h, id).await;
    assert_eq!(h.snapshot().await, paid, "rejected refunds change nothing");

    let first = a_key_names_one_refund(&h, id).await;
    only_a_failed_refund_is_retried(&h, &first).await;
}

/// A missing or bad key, a malformed or invalid body, a refund of an
/// unpaid order or of no order: each refused with its code and a message.
async fn bad_refunds_and_one_of_an_unpaid_order_are_refused(h: &RouterHarness, id: &str) {
    let cases: Vec<(Option<&str>, &str, StatusCode, &str)> = vec![
        (
            None,
            "{}",
            StatusCode::BAD_REQUEST,
            "IDEMPOTENCY_KEY_REQUIRED",
        ),
        (
            Some("bad key!"),
            "{}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST",
        ),
        (Some("k"), "{", StatusCode::BAD_REQUEST, "MALFORMED_JSON"),
        (
            Some("k"),
            r#"{"amount": 5}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST",
        ),
        (
            Some("k"),
            r#"{"lines": []}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST",
        ),
        (
            Some("k"),
            r#"{"lines": [{"sku": "SKU-2", "quantity": -1}]}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST",
        ),
        // Unpaid: nothing to give back.
        (
            Some("k"),
            "{}",
            StatusCode::CONFLICT,
            "ORDER_NOT_REFUNDABLE",
        ),
    ];
    for (key, body, status, code) in cases {
        let (got, answer) = h.refund(id, key, body).await;
        assert_eq!(
            (got, answer["code"].as_str()),
            (status, Some(code)),
            "{key:?} {body}: {answer}"
        );
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (status, answer) = h.refund("O-missing", Some("k"), "{}").await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("ORDER_NOT_FOUND"))
    );
}

async fn more_than_paid_or_a_line_not_ordered_is_refused(h: &RouterHarness, id: &str) {
    let (status, answer) = h
        .refund(
            id,
            Some("k"),
            r#"{"lines": [{"sku": "SKU-2", "quantity": 3}]}"#,
        )
        .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("REFUND_EXCEEDS_PAID")
        )
    );
    let (status, answer) = h
        .refund(
            id,
            Some("k"),
            r#"{"lines": [{"sku": "SKU-1", "quantity": 1}]}"#,
        )
        .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("UNKNOWN_SKU"))
    );
}

/// A refund is accepted under a key; the key asked again for another refund
/// is refused. The accepted refund's answer.
async fn a_key_names_one_refund(h: &RouterHarness, id: &str) -> Value {
    let (status, first) = h
        .refund(
            id,
            Some("k"),
            r#"{"lines": [{"sku": "SKU-2", "quantity": 1}]}"#,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert_eq!(first["status"], "REQUESTED");
    let (status, reused) = h.refund(id, Some("k"), "{}").await;
    assert_eq!(
        (status, reused["code"].as_str()),
        (StatusCode::CONFLICT, Some("IDEMPOTENCY_KEY_REUSED"))
    );
    first
}

/// A retry of no refund, or of one that has not failed, is refused.
async fn only_a_failed_refund_is_retried(h: &RouterHarness, first: &Value) {
    let retry = |path: &'static str| h.send(Request::post(path).body(Body::empty()).unwrap());
    let (status, answer) = retry("/api/refunds/R-missing/retry").await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("REFUND_NOT_FOUND"))
    );
    let path: &'static str = Box::leak(
        format!(
            "/api/refunds/{}/retry",
            first["refund_id"].as_str().unwrap()
        )
        .into_boxed_str(),
    );
    let (status, answer) = retry(path).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (StatusCode::CONFLICT, Some("REFUND_NOT_RETRYABLE"))
    );
}

#[tokio::test]
async fn carrier_callbacks_are_verified_and_validated() {
    let h = harness().await;
    let carrier = CallbackSigner::from_secret(b"carrier-secret");
    let order = h.create("SKU-1", 1).await;
    let id = order["order_id"].as_str().unwrap();
    let body = json!({"order_id": id, "tracking_no": "TRK-1", "status": "PICKED_UP"}).to_string();
    let before = h.snapshot().await;
    // Signed with the payment secret instead of the carrier's: refused.
    let (status, answer) = h.carrier(&body, &h.signer).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("INVALID_SIGNATURE"))
    );
    let cases = [
        (
            json!({"order_id": id, "tracking_no": "TRK-1", "status": "LOST"}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST",
        ),
        (
            json!({"order_id": id, "tracking_no": "", "status": "DELIVERED"}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST",
        ),
        (
            json!({"order_id": id, "status": "DELIVERED"}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST",
        ),
        (
            "not json".to_owned(),
            StatusCode::BAD_REQUEST,
            "MALFORMED_JSON",
        ),
        // No shipment booked yet: the carrier must retry later.
        (body.clone(), StatusCode::CONFLICT, "SHIPMENT_NOT_FOUND"),
        (
            json!({"order_id": "O-missing", "tracking_no": "TRK-1", "status": "DELIVERED"})
                .to_string(),
            StatusCode::NOT_FOUND,
            "ORDER_NOT_FOUND",
        ),
    ];
    for (body, status, code) in cases {
        let (got, answer) = h.carrier(&body, &carrier).await;
        assert_eq!(
            (got, answer["code"].as_str()),
            (status, Some(code)),
            "{body}: {answer}"
        );
    }
    assert_eq!(
        h.snapshot().await,
        before,
        "rejected callbacks change nothing"
    );
}
