//! One function per route: parse, call the order service, render. Who may
//! call each one is decided in the route table (`routes.rs`), before any of
//! these runs.

use std::net::SocketAddr;

use axum::Extension;
use axum::Json;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use ordermq_domain::signing::SignatureError;
use ordermq_domain::{
    Actor, Amount, CarrierStatus, CarrierUpdate, ErrorCode, IdempotencyKey, NewOrder, OrderId,
    OrderLine, PaymentId, PaymentNotice, Quantity, RefundId, RefundRequest, Sku, TrackingNo,
    UserId,
};
use serde::Deserialize;

use crate::ApiState;
use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::extract::{JsonBody, parse_json, raw_json_body};
use crate::rate_limit::rate_limited;
use crate::session::same_origin;
use crate::signature::{CallbackSigner, now_millis};

pub(crate) async fn dashboard() -> Html<&'static str> {
    Html(include_str!("dashboard.html"))
}

pub(crate) async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such route")
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        "method not allowed on this route",
    )
}

pub(crate) async fn list_products(State(state): State<ApiState>) -> Result<Response, ApiError> {
    Ok(Json(state.service.products().await?).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateOrderRequest {
    user_id: String,
    items: Vec<ItemRequest>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ItemRequest {
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

/// Creates an order, within the caller's rate limits (per token and user,
/// per token): a request over them is answered 429 before it costs a
/// transaction. Checked after the body is parsed (the user is in it); a
/// malformed body costs no token and no transaction either.
pub(crate) async fn create_order(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: JsonBody<CreateOrderRequest>,
) -> Result<Response, ApiError> {
    let order = body.value.parse()?;
    if let Err(wait) = state.rate_limits.admit_order(
        &caller.name,
        order.user_id().as_str(),
        tokio::time::Instant::now(),
    ) {
        return Ok(rate_limited(wait, "orders for this user"));
    }
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

pub(crate) async fn get_order(
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
pub(crate) async fn payment_notify(
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

/// Checks the callback's signature headers over the raw body with
/// `signer`, before anything is parsed.
fn verify_signature(
    signer: &CallbackSigner,
    headers: &HeaderMap,
    raw: &[u8],
) -> Result<(), ApiError> {
    match signer.verify(headers, raw, now_millis()) {
        Ok(()) => Ok(()),
        Err(SignatureError::Stale { .. }) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::SignatureExpired,
            format!(
                "X-Timestamp is more than {} s from now: sign each callback when sending it",
                signer.max_age().as_secs()
            ),
        )),
        Err(SignatureError::UnknownKey(_)) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidSignature,
            "X-Key-Id names no key this ordermq holds",
        )),
        Err(SignatureError::Missing | SignatureError::Mismatch) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidSignature,
            "missing or invalid signature: X-Timestamp (ms since the epoch) and \
             X-Signature = hex(HMAC-SHA256(secret, timestamp \".\" raw body)), \
             X-Key-Id optional (default \"default\")",
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RefundBody {
    /// Omitted: refund everything not refunded yet.
    lines: Option<Vec<ItemRequest>>,
    reason: Option<String>,
}

/// The caller as recorded with what it asks for (token names are valid actors).
fn actor(caller: &Caller) -> Result<Actor, ApiError> {
    Ok(Actor::parse(&caller.name)?)
}

/// The header that makes a refund request safe to retry.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// Refunds an order, whole (`{}`) or per line. The same `Idempotency-Key`
/// returns the same refund (200); a new refund is 202 (the gateway is called
/// asynchronously; follow it on `GET /api/orders/{id}`).
pub(crate) async fn refund_order(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
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
    let request = RefundRequest::new(order_id, key, lines, body.value.reason)?.by(actor(&caller)?);
    let refund = state.service.refund(request).await?;
    let status = if refund.duplicate {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(refund)).into_response())
}

/// An operator retries a refund that FAILED after every automatic retry.
pub(crate) async fn retry_refund(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let refund_id = RefundId::parse(&raw).map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::RefundNotFound,
            format!("refund {raw} not found"),
        )
    })?;
    let refund = state
        .service
        .retry_refund(refund_id, actor(&caller)?)
        .await?;
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
pub(crate) async fn logistics_notify(
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

pub(crate) async fn user_activity(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let user = parse_user(&raw)?;
    Ok(Json(state.service.user_activity(user).await?).into_response())
}

/// One kind of a user's records: `points`, `coupons`, `sms` or `shipments`.
pub(crate) async fn user_records(
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

pub(crate) async fn stats(State(state): State<ApiState>) -> Result<Response, ApiError> {
    Ok(Json(state.service.stats().await?).into_response())
}

pub(crate) async fn signin_page() -> Html<&'static str> {
    Html(include_str!("signin.html"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignInRequest {
    token: String,
}

/// The dashboard's sign-in: an operator token for a session cookie. JSON
/// only (a form on another site cannot send it without a preflight), and
/// refused from a foreign `Origin`. A client address with too many failed
/// attempts (an unknown token, or one that is not an operator's) is
/// answered 429 before its token is even looked at, so guessing is slow
/// and a right guess is not told apart while it lasts.
pub(crate) async fn signin(
    State(state): State<ApiState>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: JsonBody<SignInRequest>,
) -> Result<Response, ApiError> {
    if !same_origin(&headers) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "sign in from ordermq's own page",
        ));
    }
    let client = client.map(|Extension(ConnectInfo(addr))| addr.ip());
    let now = tokio::time::Instant::now();
    if let Err(wait) = state.rate_limits.signin_allowed(client, now) {
        return Ok(rate_limited(wait, "failed sign-ins from this address"));
    }
    let Some(caller) = state.auth.tokens.caller(body.value.token.trim()) else {
        state.rate_limits.signin_failed(client, now);
        return Err(ApiError::unauthenticated("unknown token"));
    };
    if caller.role != Role::Operator {
        state.rate_limits.signin_failed(client, now);
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "the dashboard needs an operator token",
        ));
    }
    tracing::info!(token = %caller.name, "dashboard sign-in");
    let cookie = state.auth.sessions.issue(&caller.name, now_millis());
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response())
}

/// Ends the dashboard's session.
pub(crate) async fn signout(State(state): State<ApiState>) -> Response {
    (
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, state.auth.sessions.clear())],
    )
        .into_response()
}
