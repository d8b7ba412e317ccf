//! The flash-sale routes: an operator creates a sale; a shop sends a
//! shopper's attempt and reads (or follows, over SSE) the attempt's state.
//!
//! Why apart from `handlers`: an attempt is answered 202 `QUEUED` — the
//! order comes later, at the paced rate — so its contract is a state that
//! moves, read by polling or pushed as server-sent events, not a created
//! resource. Input is parsed before anything runs, the caller's rate limit
//! (the one orders use, per token and user) is checked before the service
//! is asked, and a refusal is a stable code: nothing is written for it.

use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use ordermq_domain::{Attempt, AttemptId, ErrorCode, NewSale, SaleId, Sku, UserId};
use serde::Deserialize;

use crate::ApiState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::rate_limit::rate_limited;

/// How often an attempt's SSE stream reads the attempt's state again.
const STREAM_POLL: Duration = Duration::from_millis(250);
/// The longest an attempt's SSE stream stays open.
const STREAM_MAX: Duration = Duration::from_secs(600);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateSaleRequest {
    sku: String,
    units: i64,
    /// Epoch milliseconds.
    start: i64,
    /// Epoch milliseconds.
    end: i64,
    per_user_limit: i64,
}

/// Creates a sale; its units leave the product's stock. 201 with the sale.
pub(crate) async fn create_sale(
    State(state): State<ApiState>,
    body: JsonBody<CreateSaleRequest>,
) -> Result<Response, ApiError> {
    let r = body.value;
    let sale = NewSale::new(
        Sku::parse(&r.sku)?,
        r.units,
        r.start,
        r.end,
        r.per_user_limit,
    )?;
    let sale = state.flash.create_sale(sale).await?;
    Ok((StatusCode::CREATED, Json(sale)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AttemptRequest {
    user_id: String,
    /// Units; 1 if absent.
    quantity: Option<i64>,
}

fn sale_not_found(raw: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::SaleNotFound,
        format!("sale {raw} not found"),
    )
}

fn attempt_not_found(raw: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::AttemptNotFound,
        format!("attempt {raw} not found"),
    )
}

/// Sales not ended longer than an hour ago, the latest first, each with
/// its units left, queued, created and rejected attempts (by reason), its
/// creation rate and the refusals this instance counted: what the
/// dashboard's "Flash sales" card shows.
pub(crate) async fn list_sales(State(state): State<ApiState>) -> Result<Response, ApiError> {
    Ok(Json(state.flash.sales().await?).into_response())
}

/// One sale's progress; 404 `SALE_NOT_FOUND` for an unknown id.
pub(crate) async fn get_sale(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let sale = SaleId::parse(&raw).map_err(|_| sale_not_found(&raw))?;
    let progress = state
        .flash
        .sale(sale)
        .await?
        .ok_or_else(|| sale_not_found(&raw))?;
    Ok(Json(progress).into_response())
}

/// A shopper's attempt: 202 `QUEUED` with the attempt's id once it is
/// durable, or a refusal.
pub(crate) async fn attempt(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    body: JsonBody<AttemptRequest>,
) -> Result<Response, ApiError> {
    let sale = SaleId::parse(&raw).map_err(|_| sale_not_found(&raw))?;
    let user = UserId::parse(&body.value.user_id)?;
    let quantity = body.value.quantity.unwrap_or(1);
    let quantity = u32::try_from(quantity)
        .ok()
        .filter(|q| *q >= 1)
        .ok_or_else(|| {
            ApiError::from(ordermq_domain::ValidationError::new(
                "quantity",
                "must be at least 1",
            ))
        })?;
    if let Err(wait) =
        state
            .rate_limits
            .admit_order(&caller.name, user.as_str(), tokio::time::Instant::now())
    {
        return Ok(rate_limited(wait, "attempts for this user"));
    }
    let attempt = state.flash.attempt(sale, user, quantity).await?;
    Ok((StatusCode::ACCEPTED, Json(attempt)).into_response())
}

async fn read_attempt(state: &ApiState, raw: &str) -> Result<Attempt, ApiError> {
    let id = AttemptId::parse(raw).map_err(|_| attempt_not_found(raw))?;
    state
        .flash
        .attempt_state(id)
        .await?
        .ok_or_else(|| attempt_not_found(raw))
}

/// The attempt's state: `QUEUED`, `CREATED` with its order, `REJECTED` with a reason.
pub(crate) async fn get_attempt(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(read_attempt(&state, &raw).await?).into_response())
}

/// The attempt's state as server-sent events: one `state` event now and
/// one at each change, the stream ending after the final one (`CREATED`
/// or `REJECTED`), or after ten minutes.
pub(crate) async fn attempt_events(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let first = read_attempt(&state, &raw).await?;
    let deadline = tokio::time::Instant::now() + STREAM_MAX;
    let stream = changes(state, first, deadline);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// What the stream remembers between events.
struct Follow {
    state: ApiState,
    id: AttemptId,
    /// The state to send next (`None`: wait for a change).
    pending: Option<Attempt>,
    last: ordermq_domain::AttemptState,
    deadline: tokio::time::Instant,
}

fn changes(
    state: ApiState,
    first: Attempt,
    deadline: tokio::time::Instant,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let follow = Follow {
        state,
        id: first.attempt_id.clone(),
        last: first.state.clone(),
        pending: Some(first),
        deadline,
    };
    stream::unfold(Some(follow), |follow| async move {
        let mut follow = follow?;
        loop {
            if let Some(attempt) = follow.pending.take() {
                let event = Event::default()
                    .event("state")
                    .json_data(&attempt)
                    .unwrap_or_else(|_| Event::default().event("state"));
                let next = (!attempt.state.is_final()).then_some(follow);
                return Some((Ok(event), next));
            }
            if tokio::time::Instant::now() >= follow.deadline {
                return None;
            }
            tokio::time::sleep(STREAM_POLL).await;
            // A failed read is tried again at the next poll.
            if let Ok(Some(attempt)) = follow.state.flash.attempt_state(follow.id.clone()).await
                && attempt.state != follow.last
            {
                follow.last = attempt.state.clone();
                follow.pending = Some(attempt);
            }
        }
    })
}
