//! The rate limits at the router: order creation per token and user and
//! per token, failed sign-ins per client address. Over a limit the answer
//! is 429 `RATE_LIMITED` with `Retry-After`, and nothing reaches the service.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use axum::response::Response;
use ordermq_api::rate_limit::{Rate, RateLimits, RateSettings};
use ordermq_api::router;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::fake::{Call, FakeService};
use crate::handlers::{OPERATOR, SHOP, state};

fn limited_app(settings: RateSettings) -> (Router, Arc<FakeService>) {
    let service = Arc::new(FakeService::default());
    let mut state = state(service.clone());
    state.rate_limits = RateLimits::new(settings);
    (router(state), service)
}

fn settings() -> RateSettings {
    RateSettings {
        orders_per_user: None,
        orders_per_token: None,
        signin_failures: None,
        max_keys: 1_000,
    }
}

async fn create(router: &Router, token: &str, user: &str) -> Response {
    let body = json!({"user_id": user, "items": [{"sku": "SKU-1", "quantity": 1}]}).to_string();
    let request = Request::post("/api/orders")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::from(body))
        .unwrap();
    router.clone().oneshot(request).await.unwrap()
}

async fn json_of(response: Response) -> Value {
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// A 429 `RATE_LIMITED` with `Retry-After: seconds`.
async fn assert_rate_limited(response: Response, seconds: &str) {
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()[header::RETRY_AFTER], seconds);
    let body = json_of(response).await;
    assert_eq!(body["code"], "RATE_LIMITED", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("try again"),
        "{body}"
    );
}

fn created_for(service: &FakeService) -> Vec<String> {
    service
        .calls()
        .into_iter()
        .filter_map(|call| match call {
            Call::CreateOrder(order) => Some(order.user_id().as_str().to_owned()),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn orders_for_one_user_past_the_burst_are_429_and_never_reach_the_service() {
    let (router, service) = limited_app(RateSettings {
        orders_per_user: Rate::per_minute(6, 2),
        ..settings()
    });
    for _ in 0..2 {
        // The fake refuses every order (UNKNOWN_SKU): it reached the service.
        assert_eq!(
            create(&router, SHOP, "u1").await.status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
    // 6 a minute: the next token is 10 s away.
    assert_rate_limited(create(&router, SHOP, "u1").await, "10").await;
    assert_eq!(
        created_for(&service),
        ["u1", "u1"],
        "the refused one did not reach it"
    );
    // Other users, and the same user through another token, have buckets of their own.
    assert_ne!(
        create(&router, SHOP, "u2").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_ne!(
        create(&router, OPERATOR, "u1").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    tokio::time::advance(Duration::from_secs(9)).await;
    assert_rate_limited(create(&router, SHOP, "u1").await, "1").await;
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_ne!(
        create(&router, SHOP, "u1").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(created_for(&service), ["u1", "u1", "u2", "u1", "u1"]);
}

#[tokio::test(start_paused = true)]
async fn one_token_is_capped_over_all_its_users() {
    let (router, service) = limited_app(RateSettings {
        orders_per_user: Rate::per_minute(60, 5),
        orders_per_token: Rate::per_second(1, 3),
        ..settings()
    });
    for user in ["a", "b", "c"] {
        assert_ne!(
            create(&router, SHOP, user).await.status(),
            StatusCode::TOO_MANY_REQUESTS
        );
    }
    assert_rate_limited(create(&router, SHOP, "d").await, "1").await;
    assert_eq!(created_for(&service), ["a", "b", "c"]);
    // Another token is not held back by this one.
    assert_ne!(
        create(&router, OPERATOR, "d").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn a_malformed_order_costs_no_token() {
    let (router, service) = limited_app(RateSettings {
        orders_per_user: Rate::per_minute(1, 1),
        ..settings()
    });
    for _ in 0..5 {
        let request = Request::post("/api/orders")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {SHOP}"))
            .body(Body::from(r#"{"user_id":"u1","items":[]}"#))
            .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
    assert_ne!(
        create(&router, SHOP, "u1").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(created_for(&service), ["u1"]);
}

fn sign_in(token: &str, client: [u8; 4]) -> Request<Body> {
    let mut request = Request::post("/signin")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({ "token": token }).to_string()))
        .unwrap();
    // What the server's accept loop attaches to every request.
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from((client, 40_000))));
    request
}

#[tokio::test(start_paused = true)]
async fn failed_sign_ins_from_one_address_are_slowed_and_a_right_guess_is_not_told_apart() {
    let (router, _service) = limited_app(RateSettings {
        signin_failures: Rate::per_minute(3, 3),
        ..settings()
    });
    let send = |request| router.clone().oneshot(request);
    let attacker = [10, 0, 0, 1];
    for guess in ["guess-1", "guess-2", SHOP] {
        let status = send(sign_in(guess, attacker)).await.unwrap().status();
        assert!(
            matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN),
            "{guess}: {status}"
        );
    }
    // Three failures a minute: the right token now gets the same 429, and no cookie.
    let right = send(sign_in(OPERATOR, attacker)).await.unwrap();
    assert!(right.headers().get(header::SET_COOKIE).is_none());
    assert_rate_limited(right, "20").await;
    // Another address is not held back.
    let other = send(sign_in(OPERATOR, [10, 0, 0, 2])).await.unwrap();
    assert_eq!(other.status(), StatusCode::NO_CONTENT);
    // Once a failure has aged out, the address may try again.
    tokio::time::advance(Duration::from_secs(20)).await;
    let later = send(sign_in(OPERATOR, attacker)).await.unwrap();
    assert_eq!(later.status(), StatusCode::NO_CONTENT);
    assert!(later.headers().get(header::SET_COOKIE).is_some());
}
