//! ordermq's HTTP API and dashboard.
//!
//! Handlers are thin: parse the request into domain types (rejecting bad
//! input with a stable code before anything runs), call the
//! [`OrderService`] port, and render JSON. Nothing here knows SQL or RocketMQ.
//! Who may call what is decided in one table ([`routes::ROUTES`]), checked
//! before any handler runs.
//!
//! # Layout
//! - [`router`] / [`router_for`]: the routes a listener serves, and the state they share.
//! - [`routes`]: the route table (each route's access and listener) and the access check.
//! - `handlers`: one function per route.
//! - `sales`: the flash-sale routes: create a sale, an attempt (202
//!   `QUEUED` or a refusal), its state by polling and as server-sent events.
//! - [`auth`]: bearer tokens (name, role, SHA-256), callers, demo tokens.
//! - [`session`]: the dashboard's signed session cookie and its CSRF checks.
//! - [`signature`]: signed payment-gateway and carrier callbacks (key id, timestamp, HMAC).
//! - [`error`]: the `{"code","message"}` error shape.
//! - [`extract`]: size-limited, JSON-only request bodies.
//! - [`rate_limit`]: token buckets for order creation (per token and user,
//!   per token) and failed sign-ins (per client address); 429 `RATE_LIMITED`.

pub mod auth;
pub mod error;
pub mod extract;
mod handlers;
pub mod rate_limit;
pub mod routes;
mod sales;
pub mod session;
pub mod signature;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use ordermq_domain::ports::{FlashSaleService, OrderService};

use crate::auth::Auth;
use crate::extract::MAX_BODY_BYTES;
use crate::rate_limit::RateLimits;
use crate::routes::Listener;
use crate::signature::CallbackSigner;

pub use handlers::IDEMPOTENCY_KEY_HEADER;

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    /// The order service the handlers call.
    pub service: Arc<dyn OrderService>,
    /// The flash-sale service the sale and attempt routes call.
    pub flash: Arc<dyn FlashSaleService>,
    /// Verifies payment-gateway callbacks.
    pub signer: CallbackSigner,
    /// Verifies carrier callbacks (a different party, different keys).
    pub carrier_signer: CallbackSigner,
    /// Callers' tokens and the dashboard's sessions.
    pub auth: Auth,
    /// Order creation and sign-in rate limits, shared by every listener.
    pub rate_limits: RateLimits,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState").finish_non_exhaustive()
    }
}

/// Every route of ordermq, on one listener.
pub fn router(state: ApiState) -> Router {
    router_for(state, Listener::Combined)
}

/// The routes `listener` serves: everything on a combined listener; beside
/// an operator listener, the operator routes only there (404 on the public one).
pub fn router_for(state: ApiState, listener: Listener) -> Router {
    routes::build(&state, listener)
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
