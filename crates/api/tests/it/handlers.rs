//! Each handler's contract: what reaches the service, and what the client gets.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use ordermq_api::auth::{Auth, Role, TokenEntry, Tokens};
use ordermq_api::rate_limit::RateLimits;
use ordermq_api::session::Sessions;
use ordermq_api::signature::{CallbackSigner, SignedHeaders};
use ordermq_api::{ApiState, router};
use ordermq_domain::{OrderId, PayOrderError};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::fake::{Call, FakeService};

const SECRET: &[u8] = b"handler-test-secret";
pub(crate) const SHOP: &str = "shop-token";
pub(crate) const OPERATOR: &str = "operator-token";

pub(crate) fn state(service: Arc<FakeService>) -> ApiState {
    let tokens = Tokens::new(vec![
        TokenEntry::for_token("shop1", Role::Shop, SHOP).unwrap(),
        TokenEntry::for_token("ops1", Role::Operator, OPERATOR).unwrap(),
    ])
    .unwrap();
    ApiState {
        service: service.clone(),
        flash: service,
        signer: CallbackSigner::from_secret(SECRET),
        carrier_signer: CallbackSigner::from_secret(b"carrier"),
        auth: Auth::new(tokens, Sessions::random(false).unwrap()),
        rate_limits: RateLimits::off(),
    }
}

pub(crate) fn app() -> (Router, Arc<FakeService>) {
    let service = Arc::new(FakeService::default());
    (router(state(service.clone())), service)
}

/// Sends `request` as the operator unless it carries its own credential.
async fn send(router: &Router, mut request: Request<Body>) -> (StatusCode, Value) {
    if !request.headers().contains_key("authorization") {
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {OPERATOR}").parse().unwrap(),
        );
    }
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn post_json(path: &str, body: &str, signature: Option<SignedHeaders>) -> Request<Body> {
    let mut request = Request::post(path).header("content-type", "application/json");
    for (name, value) in signature.iter().flat_map(SignedHeaders::pairs) {
        request = request.header(name, value);
    }
    request.body(Body::from(body.to_owned())).unwrap()
}

fn signed_notice(order_id: &str, amount: i64) -> Request<Body> {
    let body = json!({"order_id": order_id, "payment_id": "pay-1", "amount": amount}).to_string();
    let signature = CallbackSigner::from_secret(SECRET).sign(body.as_bytes());
    post_json("/api/payments/notify", &body, Some(signature))
}

#[tokio::test]
async fn a_signed_payment_reaches_the_service_parsed_and_its_receipt_is_returned() {
    let (router, service) = app();
    let (status, body) = send(&router, signed_notice("O1", 1_500)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"order_id": "O1", "status": "PAID", "duplicate": false, "refund_required": false})
    );
    let calls = service.calls();
    assert_eq!(calls.len(), 1);
    let Call::Pay(notice) = &calls[0] else {
        panic!("expected a payment, got {calls:?}");
    };
    assert_eq!(notice.order_id.as_str(), "O1");
    assert_eq!(notice.amount.minor_units(), 1_500);
}

#[tokio::test]
async fn an_unsigned_or_forged_payment_never_reaches_the_service() {
    let (router, service) = app();
    let body = json!({"order_id": "O1", "payment_id": "pay-1", "amount": 1}).to_string();
    let good = CallbackSigner::from_secret(SECRET).sign(body.as_bytes());
    let forged = CallbackSigner::from_secret(b"another secret").sign(body.as_bytes());
    let not_hex = SignedHeaders {
        signature: "zz".into(),
        ..good.clone()
    };
    let unknown_key = SignedHeaders {
        key_id: "k9".into(),
        ..good.clone()
    };
    let no_timestamp = SignedHeaders {
        timestamp: String::new(),
        ..good
    };
    for signature in [
        None,
        Some(forged),
        Some(not_hex),
        Some(unknown_key),
        Some(no_timestamp),
    ] {
        let (status, error) = send(
            &router,
            post_json("/api/payments/notify", &body, signature.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{signature:?}: {error}");
        assert_eq!(error["code"], "INVALID_SIGNATURE");
    }
    assert!(service.calls().is_empty(), "{:?}", service.calls());
}

#[tokio::test]
async fn an_authentic_but_old_or_future_payment_is_expired_and_never_reaches_the_service() {
    let (router, service) = app();
    let body = json!({"order_id": "O1", "payment_id": "pay-1", "amount": 1}).to_string();
    let signer = CallbackSigner::from_secret(SECRET);
    let now = ordermq_api::signature::now_millis();
    for at in [now - 6 * 60_000, now + 6 * 60_000] {
        let signed = signer.sign_at(body.as_bytes(), at);
        let (status, error) = send(
            &router,
            post_json("/api/payments/notify", &body, Some(signed)),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{error}");
        assert_eq!(error["code"], "SIGNATURE_EXPIRED");
    }
    // Within the window either way is accepted (clocks differ).
    let signed = signer.sign_at(body.as_bytes(), now - 4 * 60_000);
    let (status, _) = send(
        &router,
        post_json("/api/payments/notify", &body, Some(signed)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(service.calls().len(), 1, "{:?}", service.calls());
}

#[tokio::test]
async fn a_service_refusal_becomes_its_stable_code() {
    let (router, service) = app();
    *service.pay_answer.lock().unwrap() = Some(PayOrderError::AmountMismatch {
        expected: 1_000,
        notified: 1_500,
    });
    let (status, error) = send(&router, signed_notice("O1", 1_500)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["code"], "AMOUNT_MISMATCH");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
}

#[tokio::test]
async fn an_invalid_order_is_refused_before_the_service_and_a_valid_one_is_passed_on() {
    let (router, service) = app();
    let bad = json!({"user_id": "u1", "items": [{"sku": "SKU-1", "quantity": 0}]}).to_string();
    let (status, error) = send(&router, post_json("/api/orders", &bad, None)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert_eq!(error["code"], "INVALID_REQUEST");
    assert!(service.calls().is_empty());

    let good = json!({"user_id": "u1", "items": [{"sku": "SKU-9", "quantity": 2}]}).to_string();
    let (status, error) = send(&router, post_json("/api/orders", &good, None)).await;
    // The fake knows no SKU: its refusal is the client's answer.
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert_eq!(error["code"], "UNKNOWN_SKU");
    let calls = service.calls();
    let [Call::CreateOrder(order)] = calls.as_slice() else {
        panic!("expected one create, got {calls:?}");
    };
    assert_eq!(order.lines()[0].sku.as_str(), "SKU-9");
    assert_eq!(order.lines()[0].quantity.get(), 2);
}

#[tokio::test]
async fn an_unknown_order_is_404_and_a_malformed_id_is_refused_before_the_service() {
    let (router, service) = app();
    let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();
    let (status, error) = send(&router, get("/api/orders/O42")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error["code"], "ORDER_NOT_FOUND");
    assert_eq!(
        service.calls(),
        vec![Call::Order(OrderId::parse("O42").unwrap())]
    );
    let (status, error) = send(&router, get("/api/orders/bad%20id")).await;
    assert!(status.is_client_error(), "{status}: {error}");
    assert!(error["code"].is_string(), "{error}");
    assert_eq!(
        service.calls().len(),
        1,
        "the malformed id reached the service"
    );
}

#[tokio::test]
async fn a_refund_carries_the_name_of_the_token_that_asked_for_it() {
    let (router, service) = app();
    let request = Request::post("/api/orders/O7/refund")
        .header("content-type", "application/json")
        .header("idempotency-key", "ticket-1")
        .body(Body::from("{}"))
        .unwrap();
    let (status, error) = send(&router, request).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{error}");
    let calls = service.calls();
    let [Call::Refund(refund)] = calls.as_slice() else {
        panic!("expected one refund, got {calls:?}");
    };
    assert_eq!(refund.order_id.as_str(), "O7");
    assert_eq!(
        refund.requested_by.as_ref().map(|a| a.as_str()),
        Some("ops1")
    );
}

#[tokio::test]
async fn a_sales_progress_is_listed_and_read_by_id_and_an_unknown_sale_is_404() {
    let (router, service) = app();
    let progress = ordermq_domain::SaleProgress {
        sale: ordermq_domain::Sale {
            sale_id: ordermq_domain::SaleId::parse("S1").unwrap(),
            sku: ordermq_domain::Sku::parse("FLASH-1").unwrap(),
            units: 10,
            start: 1_000,
            end: 2_000,
            per_user_limit: 1,
        },
        status: ordermq_domain::SaleStatus::Running,
        units_left: 4,
        queued: 2,
        created: 4,
        rejected: 1,
        rejected_by_reason: [("QUEUE_TIMEOUT".to_owned(), 1)].into_iter().collect(),
        created_per_s: 0.4,
        refused_here: [("SOLD_OUT".to_owned(), 90)].into_iter().collect(),
    };
    service.sales.lock().unwrap().push(progress);
    let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();

    let (status, listed) = send(&router, get("/api/sales")).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(
        listed,
        json!([{
            "sale_id": "S1", "sku": "FLASH-1", "units": 10, "start": 1000, "end": 2000,
            "per_user_limit": 1, "status": "RUNNING", "units_left": 4, "queued": 2,
            "created": 4, "rejected": 1, "rejected_by_reason": {"QUEUE_TIMEOUT": 1},
            "created_per_s": 0.4, "refused_here": {"SOLD_OUT": 90}
        }])
    );
    let (status, one) = send(&router, get("/api/sales/S1")).await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one, listed[0]);
    let (status, error) = send(&router, get("/api/sales/S2")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{error}");
    assert_eq!(error["code"], "SALE_NOT_FOUND");
    let (status, error) = send(&router, get("/api/sales/bad%20id")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{error}");
    assert_eq!(
        service.calls().len(),
        3,
        "the malformed id reached the service"
    );
}
