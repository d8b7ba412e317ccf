//! The HTTP router on the real order service and a fresh SQLite store, driven
//! with `oneshot`: no broker, no listener, nothing published.
//!
//! The router tests (the HTTP contract, the bad-request property) share this
//! one harness, so every test builds the service the way the server does.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use ordermq::startup::DEMO_CATALOG;
use ordermq_api::auth::{Auth, Role, TokenEntry, Tokens};
use ordermq_api::rate_limit::RateLimits;
use ordermq_api::routes::Listener;
use ordermq_api::session::Sessions;
use ordermq_api::signature::{CallbackSigner, SignedHeaders};
use ordermq_api::{ApiState, router_for};
use ordermq_domain::UserLimits;
use ordermq_service::{FlashSales, FlashSettings, OrderWriter, Orders};
use ordermq_store::{Store, StoreOptions};
use serde_json::Value;
use tower::ServiceExt;

use crate::bad_request::BadRequest;

/// The payment gateway's secret in the router harness.
pub const PAYMENT_SECRET: &[u8] = b"test-secret";
/// The carrier's secret in the router harness.
pub const CARRIER_SECRET: &[u8] = b"carrier-secret";

/// The shop token in the harness and in `LocalApp` (name `test-shop`).
pub const SHOP_TOKEN: &str = "testkit-shop-token";
/// The operator token in the harness and in `LocalApp` (name `test-operator`).
pub const OPERATOR_TOKEN: &str = "testkit-operator-token";

/// The tokens [`SHOP_TOKEN`] (`test-shop`) and [`OPERATOR_TOKEN`] (`test-operator`).
pub fn test_tokens() -> Tokens {
    Tokens::new(vec![
        TokenEntry::for_token("test-shop", Role::Shop, SHOP_TOKEN).expect("valid name"),
        TokenEntry::for_token("test-operator", Role::Operator, OPERATOR_TOKEN).expect("valid name"),
    ])
    .expect("distinct names")
}

/// `Authorization` header value for `token`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A router on the real order service, its store and its signers.
#[derive(Debug)]
pub struct RouterHarness {
    pub router: Router,
    pub store: Store,
    /// Signs payment callbacks ([`PAYMENT_SECRET`], key id `default`).
    pub signer: CallbackSigner,
    /// Signs carrier callbacks ([`CARRIER_SECRET`], key id `default`).
    pub carrier_signer: CallbackSigner,
    _dir: tempfile::TempDir,
}

impl RouterHarness {
    /// A fresh SQLite store with the demo catalog, the group-commit writer
    /// and the order service behind the router (orders close after 30 min),
    /// without per-user or rate limits: the contract's tests send many
    /// orders for one user.
    pub async fn start() -> Self {
        Self::with_limits(UserLimits::OFF, RateLimits::off()).await
    }

    /// As [`RouterHarness::start`], with the order service holding users to
    /// `user_limits` and the router applying `rate_limits`.
    pub async fn with_limits(user_limits: UserLimits, rate_limits: RateLimits) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}/orders.db", dir.path().display());
        let store = Store::open(&url, &StoreOptions::default())
            .await
            .expect("store opens");
        store
            .seed_catalog(DEMO_CATALOG)
            .await
            .expect("catalog seeds");
        let signer = CallbackSigner::from_secret(PAYMENT_SECRET);
        let carrier_signer = CallbackSigner::from_secret(CARRIER_SECRET);
        let (writer, _task) = OrderWriter::spawn(store.clone(), 64);
        let wake = Arc::new(tokio::sync::Notify::new());
        let flash = FlashSales::new(
            store.clone(),
            writer.clone(),
            wake.clone(),
            FlashSettings {
                owner: "router-harness".into(),
                chunk: 5,
                lease_ttl: std::time::Duration::from_secs(30),
                sold_out_recheck: std::time::Duration::from_millis(500),
            },
        );
        let service = Orders::new(store.clone(), writer, wake, 30 * 60 * 1_000, user_limits);
        let router = router_for(
            ApiState {
                service: Arc::new(service),
                flash: Arc::new(flash),
                signer: signer.clone(),
                carrier_signer: carrier_signer.clone(),
                auth: Auth::new(test_tokens(), Sessions::random(false).expect("randomness")),
                rate_limits,
            },
            Listener::Combined,
        );
        Self {
            router,
            store,
            signer,
            carrier_signer,
            _dir: dir,
        }
    }

    /// Sends `request` exactly as given; the status and the raw body.
    pub async fn send_bytes(&self, request: Request<Body>) -> (StatusCode, Vec<u8>) {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body within 1 MiB");
        (status, bytes.to_vec())
    }

    /// Sends `request` as the operator ([`OPERATOR_TOKEN`]) unless it
    /// carries its own `Authorization` or `Cookie`; the status and the body
    /// as JSON (`Null` if it is not JSON).
    pub async fn send(&self, mut request: Request<Body>) -> (StatusCode, Value) {
        let headers = request.headers_mut();
        if !headers.contains_key("authorization") && !headers.contains_key("cookie") {
            headers.insert(
                "authorization",
                bearer(OPERATOR_TOKEN).parse().expect("header-safe"),
            );
        }
        let (status, bytes) = self.send_bytes(request).await;
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// POSTs a JSON body, unsigned, as the operator.
    pub async fn post_json(&self, path: &str, body: impl Into<String>) -> (StatusCode, Value) {
        self.send(
            Request::post(path)
                .header("content-type", "application/json")
                .body(Body::from(body.into()))
                .expect("valid request"),
        )
        .await
    }

    /// POSTs a JSON body, signed with the payment secret when `signed`.
    pub async fn post(&self, path: &str, body: &Value, signed: bool) -> (StatusCode, Value) {
        let raw = body.to_string();
        let mut request = Request::post(path).header("content-type", "application/json");
        if signed {
            for (name, value) in self.signer.sign(raw.as_bytes()).pairs() {
                request = request.header(name, value);
            }
        }
        self.send(request.body(Body::from(raw)).expect("valid request"))
            .await
    }

    /// A payment callback with the given signature headers (none when `None`).
    pub async fn notify_raw(
        &self,
        body: &str,
        signature: Option<&SignedHeaders>,
    ) -> (StatusCode, Value) {
        let mut request =
            Request::post("/api/payments/notify").header("content-type", "application/json");
        if let Some(signature) = signature {
            for (name, value) in signature.pairs() {
                request = request.header(name, value);
            }
        }
        self.send(
            request
                .body(Body::from(body.to_owned()))
                .expect("valid request"),
        )
        .await
    }

    /// A payment callback signed with the payment secret.
    pub async fn notify(&self, body: &str) -> (StatusCode, Value) {
        let signature = self.signer.sign(body.as_bytes());
        self.notify_raw(body, Some(&signature)).await
    }

    /// Sends a generated bad request as generated, as the operator (so
    /// that it reaches the handler its mistake is about).
    pub async fn send_bad(&self, bad: &BadRequest) -> (StatusCode, Vec<u8>) {
        let mut request = bad.to_request();
        request.headers_mut().insert(
            "authorization",
            bearer(OPERATOR_TOKEN).parse().expect("header-safe"),
        );
        self.send_bytes(request).await
    }

    /// Everything a request could change in the order database, as one
    /// comparable value: orders, payments, stock and the outbox backlog.
    pub async fn state(&self) -> String {
        format!(
            "{:?}\n{:?}\n{:?}\n{:?}",
            self.store.audit_orders().await.expect("audit orders"),
            self.store.audit_payments().await.expect("audit payments"),
            self.store.audit_stock().await.expect("audit stock"),
            self.store.outbox_backlog().await.expect("outbox backlog"),
        )
    }
}
