//! The routes: the three providers' endpoints, `GET /calls` and
//! `GET /healthz`, and what every provider call goes through — the
//! signature, the knobs, the request's checks, the idempotency key — before
//! its provider's effect.
//!
//! Why one path for all four endpoints: the protocol (docs/gateways.md) is
//! the same for each; only the body and the effect differ.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State as Extract;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ordermq_domain::signing::{Keyring, check_freshness};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::ledger::{BOOK, CallOutcome, CallRecord, Ledger};
use crate::options::{Knobs, Options};

/// `POST /sms/send`: send a text.
pub(crate) const SMS: &str = "/sms/send";
/// `POST /logistics/shipments/cancel`: cancel a booking.
pub(crate) const CANCEL: &str = "/logistics/shipments/cancel";
/// `POST /payments/refunds`: give money back.
pub(crate) const REFUND: &str = "/payments/refunds";

/// An answer forced on the next calls by a test.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Forced {
    /// Answer this status, with no effect.
    Status(u16),
    /// Have the effect, then answer 503.
    LoseAnswer,
}

/// What the routes share.
#[derive(Debug)]
pub(crate) struct State {
    keys: Keyring,
    freshness: Duration,
    knobs: Mutex<Knobs>,
    forced: Mutex<VecDeque<Forced>>,
    ledger: Mutex<Ledger>,
}

impl State {
    pub(crate) fn new(options: &Options, ledger: Ledger) -> Self {
        Self {
            keys: options.keys.clone(),
            freshness: options.freshness,
            knobs: Mutex::new(options.knobs),
            forced: Mutex::new(VecDeque::new()),
            ledger: Mutex::new(ledger),
        }
    }

    pub(crate) fn calls(&self) -> Vec<CallRecord> {
        self.ledger.lock().expect("ledger lock").calls().to_vec()
    }

    pub(crate) fn set_knobs(&self, knobs: Knobs) {
        *self.knobs.lock().expect("knobs lock") = knobs;
    }

    pub(crate) fn force(&self, forced: Forced, times: usize) {
        self.forced
            .lock()
            .expect("forced lock")
            .extend(std::iter::repeat_n(forced, times));
    }
}

/// The provider's routes.
pub(crate) fn router(state: Arc<State>) -> Router {
    Router::new()
        .route(SMS, post(sms))
        .route(BOOK, post(book))
        .route(CANCEL, post(cancel))
        .route(REFUND, post(refund))
        .route("/calls", get(calls))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state)
}

async fn calls(Extract(state): Extract<Arc<State>>) -> Json<Vec<CallRecord>> {
    Json(state.calls())
}

async fn sms(Extract(s): Extract<Arc<State>>, headers: HeaderMap, body: Bytes) -> Response {
    call::<SmsRequest>(&s, SMS, &headers, &body).await
}

async fn book(Extract(s): Extract<Arc<State>>, headers: HeaderMap, body: Bytes) -> Response {
    call::<BookRequest>(&s, BOOK, &headers, &body).await
}

async fn cancel(Extract(s): Extract<Arc<State>>, headers: HeaderMap, body: Bytes) -> Response {
    call::<CancelRequest>(&s, CANCEL, &headers, &body).await
}

async fn refund(Extract(s): Extract<Arc<State>>, headers: HeaderMap, body: Bytes) -> Response {
    call::<RefundRequest>(&s, REFUND, &headers, &body).await
}

/// `POST /sms/send`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SmsRequest {
    idempotency_key: String,
    to_user: String,
    text: String,
}

/// One line of a booking.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BookLine {
    #[serde(rename = "sku")]
    _sku: String,
    quantity: u32,
}

/// `POST /logistics/shipments`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BookRequest {
    idempotency_key: String,
    order_id: String,
    #[serde(rename = "user_id")]
    _user_id: String,
    lines: Vec<BookLine>,
}

/// `POST /logistics/shipments/cancel`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelRequest {
    idempotency_key: String,
    order_id: String,
    tracking_no: String,
}

/// `POST /payments/refunds`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RefundRequest {
    idempotency_key: String,
    #[serde(rename = "payment_id")]
    _payment_id: String,
    amount: i64,
}

/// A provider request: its key, its own checks, and its effect's answer.
trait ProviderRequest: for<'de> Deserialize<'de> {
    fn idempotency_key(&self) -> &str;

    /// A rule the request breaks (422), if any.
    fn invalid(&self) -> Option<&'static str>;

    /// The effect's answer (`n` numbers references), or a refusal.
    fn effect(&self, n: u64, ledger: &Ledger) -> Result<Value, Refusal>;
}

impl ProviderRequest for SmsRequest {
    fn idempotency_key(&self) -> &str {
        &self.idempotency_key
    }
    fn invalid(&self) -> Option<&'static str> {
        (self.to_user.is_empty() || self.text.is_empty()).then_some("to_user and text are required")
    }
    fn effect(&self, n: u64, _: &Ledger) -> Result<Value, Refusal> {
        Ok(json!({ "message_id": format!("SMS-{n:08}") }))
    }
}

impl ProviderRequest for BookRequest {
    fn idempotency_key(&self) -> &str {
        &self.idempotency_key
    }
    fn invalid(&self) -> Option<&'static str> {
        if self.order_id.is_empty() || self.lines.is_empty() {
            Some("order_id and at least one line are required")
        } else if self.lines.iter().any(|l| l.quantity == 0) {
            Some("a line's quantity is at least 1")
        } else {
            None
        }
    }
    fn effect(&self, n: u64, _: &Ledger) -> Result<Value, Refusal> {
        Ok(json!({ "tracking_no": format!("TRK-{n:08}") }))
    }
}

impl ProviderRequest for CancelRequest {
    fn idempotency_key(&self) -> &str {
        &self.idempotency_key
    }
    fn invalid(&self) -> Option<&'static str> {
        (self.order_id.is_empty() || self.tracking_no.is_empty())
            .then_some("order_id and tracking_no are required")
    }
    /// The fake carrier collects nothing: every booking it made can be cancelled.
    fn effect(&self, _: u64, ledger: &Ledger) -> Result<Value, Refusal> {
        match ledger.booking(&self.tracking_no) {
            Some(order) if order == self.order_id => Ok(json!({ "cancelled": true })),
            _ => Err(Refusal {
                status: StatusCode::NOT_FOUND,
                code: "SHIPMENT_NOT_FOUND",
                message: "no booking with this tracking number for this order".into(),
            }),
        }
    }
}

impl ProviderRequest for RefundRequest {
    fn idempotency_key(&self) -> &str {
        &self.idempotency_key
    }
    fn invalid(&self) -> Option<&'static str> {
        (self.amount <= 0).then_some("amount is a positive number of minor units")
    }
    fn effect(&self, n: u64, _: &Ledger) -> Result<Value, Refusal> {
        Ok(json!({ "provider_refund_id": format!("RF-{n:08}") }))
    }
}

/// A call answered with an error and no effect.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn body(&self) -> Value {
        json!({ "code": self.code, "message": self.message })
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Checks `X-Ordermq-Key-Id`, `X-Ordermq-Timestamp` and
/// `X-Ordermq-Signature` over `timestamp "." body`.
fn verify(state: &State, headers: &HeaderMap, body: &[u8]) -> Result<(), Refusal> {
    let refuse = |why: String| Refusal::new(StatusCode::UNAUTHORIZED, "INVALID_SIGNATURE", why);
    let key_id = header(headers, "x-ordermq-key-id")
        .ok_or_else(|| refuse("X-Ordermq-Key-Id is missing".into()))?;
    let timestamp = header(headers, "x-ordermq-timestamp")
        .ok_or_else(|| refuse("X-Ordermq-Timestamp is missing".into()))?;
    let at: i64 = timestamp
        .parse()
        .map_err(|_| refuse("X-Ordermq-Timestamp is not whole milliseconds".into()))?;
    state
        .keys
        .verify(
            key_id,
            timestamp,
            body,
            header(headers, "x-ordermq-signature"),
        )
        .map_err(|e| refuse(e.to_string()))?;
    check_freshness(at, ordermq_domain::now_millis(), state.freshness)
        .map_err(|e| refuse(e.to_string()))
}

/// Waits as the knobs say: latency plus jitter, and sometimes a hang.
async fn wait(knobs: &Knobs) {
    let jitter_ms = knobs.jitter.as_millis() as u64;
    let mut delay = knobs.latency;
    if jitter_ms > 0 {
        delay += Duration::from_millis(fastrand::u64(0..=jitter_ms));
    }
    if knobs.hang_rate > 0.0 && fastrand::f64() < knobs.hang_rate {
        delay += knobs.hang;
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

/// One provider call, from the signature to the effect: each step below
/// either passes it on or refuses it, and every refusal is logged.
async fn call<R: ProviderRequest>(
    state: &State,
    endpoint: &'static str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let call = Call {
        state,
        endpoint,
        key_id: header(headers, "x-ordermq-key-id").map(str::to_owned),
        idempotency_key: header(headers, "idempotency-key").map(str::to_owned),
        request: serde_json::from_slice(body).unwrap_or(Value::Null),
    };
    match call.answer::<R>(headers, body).await {
        Ok(answer) => (StatusCode::OK, Json(answer)).into_response(),
        Err(refusal) => (refusal.status, Json(refusal.body())).into_response(),
    }
}

/// What is known of a call before its body is trusted: enough to log it.
struct Call<'a> {
    state: &'a State,
    endpoint: &'static str,
    key_id: Option<String>,
    idempotency_key: Option<String>,
    request: Value,
}

impl Call<'_> {
    /// The effect's answer, or why there is none. Refusals are logged here;
    /// a refusal that follows the effect (a lost answer) was logged with it.
    async fn answer<R: ProviderRequest>(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Value, Refusal> {
        let (parsed, key, lose_answer) = self
            .checks::<R>(headers, body)
            .await
            .map_err(|refusal| self.refused(refusal))?;
        self.apply(&parsed, key, lose_answer)
    }

    /// The signature, the knobs' delay and faults, and the request's own
    /// checks, in that order: the request, its key and whether its answer
    /// is to be lost.
    async fn checks<R: ProviderRequest>(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(R, String, bool), Refusal> {
        verify(self.state, headers, body)?;
        let lose_answer = injected_fault(self.state).await?;
        let Some(key) = self.idempotency_key.clone() else {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "IDEMPOTENCY_KEY_REQUIRED",
                "the Idempotency-Key header is required",
            ));
        };
        let parsed: R = serde_json::from_slice(body).map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                format!("the body is not this endpoint's JSON: {e}"),
            )
        })?;
        if parsed.idempotency_key() != key {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "IDEMPOTENCY_KEY_MISMATCH",
                "the body's idempotency_key is not the Idempotency-Key header",
            ));
        }
        if let Some(rule) = parsed.invalid() {
            return Err(Refusal::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "INVALID_REQUEST",
                rule,
            ));
        }
        Ok((parsed, key, lose_answer))
    }

    /// Checks the key and applies the effect under one lock (two calls with
    /// one key at once make one effect), then logs it before answering.
    fn apply<R: ProviderRequest>(
        &self,
        parsed: &R,
        key: String,
        lose_answer: bool,
    ) -> Result<Value, Refusal> {
        let mut ledger = self.state.ledger.lock().expect("ledger lock");
        let (outcome, answer) = match ledger.answer_of(self.endpoint, &key) {
            Some(stored) if stored.request == self.request => {
                (CallOutcome::Replay, stored.response.clone())
            }
            Some(_) => {
                drop(ledger);
                return Err(self.refused(Refusal::new(
                    StatusCode::CONFLICT,
                    "IDEMPOTENCY_KEY_REUSED",
                    "this Idempotency-Key was used for another request",
                )));
            }
            None => match parsed.effect(ledger.next_effect(), &ledger) {
                Ok(answer) => (CallOutcome::Effect, answer),
                Err(refusal) => {
                    drop(ledger);
                    return Err(self.refused(refusal));
                }
            },
        };
        let lost = lose_answer && outcome == CallOutcome::Effect;
        let status = if lost {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        };
        let record = self.record(ledger.next_seq(), status, outcome, &answer);
        if let Err(e) = ledger.record(record) {
            // Not on disk: not done. The client retries with the same key.
            eprintln!("fake-provider: cannot append to the call log: {e}");
            return Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "the call log cannot be written",
            ));
        }
        if lost {
            return Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "simulated lost answer (the effect happened)",
            ));
        }
        Ok(answer)
    }

    /// Logs a refusal (5xx and 429 as failures, the rest as refusals) and
    /// hands it back.
    fn refused(&self, refusal: Refusal) -> Refusal {
        let outcome = if refusal.status.is_server_error()
            || refusal.status == StatusCode::TOO_MANY_REQUESTS
        {
            CallOutcome::Failed
        } else {
            CallOutcome::Refused
        };
        let mut ledger = self.state.ledger.lock().expect("ledger lock");
        let record = self.record(ledger.next_seq(), refusal.status, outcome, &refusal.body());
        if let Err(e) = ledger.record(record) {
            eprintln!("fake-provider: cannot append to the call log: {e}");
        }
        refusal
    }

    fn record(
        &self,
        seq: u64,
        status: StatusCode,
        outcome: CallOutcome,
        response: &Value,
    ) -> CallRecord {
        CallRecord {
            seq,
            at_ms: ordermq_domain::now_millis(),
            endpoint: self.endpoint.to_owned(),
            idempotency_key: self.idempotency_key.clone(),
            key_id: self.key_id.clone(),
            status: status.as_u16(),
            outcome,
            request: self.request.clone(),
            response: response.clone(),
        }
    }
}

/// What the knobs and the tests' forced answers make of this call, after
/// the knobs' delay: an outage refusal, or whether the effect's answer is
/// to be lost.
async fn injected_fault(state: &State) -> Result<bool, Refusal> {
    let knobs = *state.knobs.lock().expect("knobs lock");
    wait(&knobs).await;
    let forced = state.forced.lock().expect("forced lock").pop_front();
    match forced {
        Some(Forced::Status(status)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            Err(Refusal::new(status, "FORCED", "answer forced by the test"))
        }
        Some(Forced::LoseAnswer) => Ok(true),
        None if knobs.failure_rate > 0.0 && fastrand::f64() < knobs.failure_rate => {
            Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "simulated outage (failure_rate)",
            ))
        }
        None => Ok(knobs.lost_answer_rate > 0.0 && fastrand::f64() < knobs.lost_answer_rate),
    }
}
