//! ordermq's HTTP API and dashboard.
//!
//! Handlers are thin: parse the request into domain types (rejecting bad
//! input with a stable code before anything runs), call the
//! [`OrderService`] port, and render JSON. Nothing here knows SQL or RocketMQ.
//!
//! # Layout
//! - [`router`]: the routes and the state they share.
//! - [`signature`]: HMAC-SHA256 signatures of payment-gateway and carrier callbacks.
//! - [`error`]: the `{"code","message"}` error shape.
//! - [`extract`]: size-limited, JSON-only request bodies.

pub mod error;
pub mod extract;
pub mod signature;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ordermq_domain::ports::OrderService;
use ordermq_domain::{
    Amount, CarrierStatus, CarrierUpdate, ErrorCode, IdempotencyKey, NewOrder, OrderId, OrderLine,
    PaymentId, PaymentNotice, Quantity, RefundId, RefundRequest, Sku, TrackingNo, UserId,
};
use serde::Deserialize;

use crate::error::ApiError;
use crate::extract::{JsonBody, MAX_BODY_BYTES, parse_json, raw_json_body};
use crate::signature::PaymentSigner;

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    pub service: Arc<dyn OrderService>,
    /// Verifies payment-gateway callbacks.
    pub signer: PaymentSigner,
    /// Verifies carrier callbacks (a different party, a different secret).
    pub carrier_signer: PaymentSigner,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState").finish_non_exhaustive()
    }
}

/// Every route of ordermq.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/healthz", get(health))
        .route("/api/products", get(list_products))
        .route("/api/orders", post(create_order))
        .route("/api/orders/{id}", get(get_order))
        .route("/api/orders/{id}/refund", post(refund_order))
        .route("/api/refunds/{id}/retry", post(retry_refund))
        .route("/api/payments/notify", post(payment_notify))
        .route("/api/logistics/notify", post(logistics_notify))
        .route("/api/users/{id}", get(user_activity))
        .route("/api/users/{id}/{kind}", get(user_records))
        .route("/api/stats", get(stats))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn dashboard() -> Html<&'static str> {
    Html(include_str!("dashboard.html"))
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        "method not allowed on this route",
    )
}

async fn list_products(State(state): State<ApiState>) -> Result<Response, ApiError> {
    Ok(Json(state.service.products().await?).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateOrderRequest {
    user_id: String,
    items: Vec<ItemRequest>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemRequest {
    sku: String,
    quantity: i64,
}

impl CreateOrderRequest {
    fn parse(self) -> Result<NewOrder, ApiError> {
        let user_id = UserId::parse(&self.user_id)?;
        let lines = self
            .items
            .iter()
            .map(|item| {
                Ok(OrderLine {
                    sku: Sku::parse(&item.sku)?,
                    quantity: Quantity::parse(item.quantity)?,
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        Ok(NewOrder::new(user_id, lines)?)
    }
}

async fn create_order(
    State(state): State<ApiState>,
    body: JsonBody<CreateOrderRequest>,
) -> Result<Response, ApiError> {
    let order = body.value.parse()?;
    let view = state.service.create_order(order).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

fn order_not_found(raw: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::OrderNotFound,
        format!("order {raw} not found"),
    )
}

async fn get_order(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = OrderId::parse(&raw).map_err(|_| order_not_found(&raw))?;
    match state.service.order(id).await? {
        Some(view) => Ok(Json(view).into_response()),
        None => Err(order_not_found(&raw)),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PaymentNotifyRequest {
    order_id: String,
    payment_id: String,
    amount: i64,
}

/// The payment gateway's callback. The signature is checked over the raw
/// body before the body is parsed: unsigned input is never interpreted.
async fn payment_notify(
    State(state): State<ApiState>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    let raw = raw_json_body(request).await?;
    verify_signature(&state.signer, &headers, &raw)?;
    let body: PaymentNotifyRequest = parse_json(&raw)?;
    let notice = PaymentNotice {
        order_id: OrderId::parse(&body.order_id)?,
        payment_id: PaymentId::parse(&body.payment_id)?,
        amount: Amount::parse(body.amount)?,
    };
    let receipt = state.service.pay(notice).await?;
    Ok(Json(receipt).into_response())
}

/// Checks `X-Signature` over the raw body with `signer`, before anything is parsed.
fn verify_signature(
    signer: &PaymentSigner,
    headers: &HeaderMap,
    raw: &[u8],
) -> Result<(), ApiError> {
    let signature = headers
        .get(signature::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    if !signer.verify(raw, signature) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidSignature,
            "missing or invalid X-Signature: expected hex(HMAC-SHA256(secret, raw body))",
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RefundBody {
    /// Omitted: refund everything not refunded yet.
    lines: Option<Vec<ItemRequest>>,
    reason: Option<String>,
}

/// The header that makes a refund request safe to retry.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// Refunds an order, whole (`{}`) or per line. The same `Idempotency-Key`
/// returns the same refund (200); a new refund is 202 (the gateway is called
/// asynchronously; follow it on `GET /api/orders/{id}`).
async fn refund_order(
    State(state): State<ApiState>,
    Path(raw_id): Path<String>,
    headers: HeaderMap,
    body: JsonBody<RefundBody>,
) -> Result<Response, ApiError> {
    let order_id = OrderId::parse(&raw_id).map_err(|_| order_not_found(&raw_id))?;
    let key = match headers.get(IDEMPOTENCY_KEY_HEADER) {
        None => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::IdempotencyKeyRequired,
                "an Idempotency-Key header is required: resending with the same key never refunds twice",
            ));
        }
        Some(value) => IdempotencyKey::parse(value.to_str().unwrap_or("\u{0}"))?,
    };
    let lines = body
        .value
        .lines
        .map(|items| {
            items
                .iter()
                .map(|item| {
                    Ok(OrderLine {
                        sku: Sku::parse(&item.sku)?,
                        quantity: Quantity::parse(item.quantity)?,
                    })
                })
                .collect::<Result<Vec<_>, ApiError>>()
        })
        .transpose()?;
    let request = RefundRequest::new(order_id, key, lines, body.value.reason)?;
    let refund = state.service.refund(request).await?;
    let status = if refund.duplicate {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(refund)).into_response())
}

/// An operator retries a refund that FAILED after every automatic retry.
async fn retry_refund(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let refund_id = RefundId::parse(&raw).map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::RefundNotFound,
            format!("refund {raw} not found"),
        )
    })?;
    let refund = state.service.retry_refund(refund_id).await?;
    Ok((StatusCode::ACCEPTED, Json(refund)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CarrierNotifyRequest {
    order_id: String,
    tracking_no: String,
    status: String,
}

/// A carrier's callback (picked up, in transit, delivered), signed like payments.
async fn logistics_notify(
    State(state): State<ApiState>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    let raw = raw_json_body(request).await?;
    verify_signature(&state.carrier_signer, &headers, &raw)?;
    let body: CarrierNotifyRequest = parse_json(&raw)?;
    let update = CarrierUpdate {
        order_id: OrderId::parse(&body.order_id)?,
        tracking_no: TrackingNo::parse(&body.tracking_no)?,
        status: CarrierStatus::parse(&body.status)?,
    };
    let receipt = state.service.carrier_update(update).await?;
    Ok(Json(receipt).into_response())
}

fn parse_user(raw: &str) -> Result<UserId, ApiError> {
    Ok(UserId::parse(raw)?)
}

async fn user_activity(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let user = parse_user(&raw)?;
    Ok(Json(state.service.user_activity(user).await?).into_response())
}

/// One kind of a user's records: `points`, `coupons`, `sms` or `shipments`.
async fn user_records(
    State(state): State<ApiState>,
    Path((raw, kind)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let user = parse_user(&raw)?;
    if !matches!(kind.as_str(), "points" | "coupons" | "sms" | "shipments") {
        return Err(not_found().await);
    }
    let activity = state.service.user_activity(user).await?;
    let body = match kind.as_str() {
        "points" => serde_json::json!({
            "user_id": activity.user_id,
            "total": activity.points_total,
            "entries": activity.points,
        }),
        "coupons" => serde_json::json!(activity.coupons),
        "sms" => serde_json::json!(activity.sms),
        _ => serde_json::json!(activity.shipments),
    };
    Ok(Json(body).into_response())
}

async fn stats(State(state): State<ApiState>) -> Result<Response, ApiError> {
    Ok(Json(state.service.stats().await?).into_response())
}
