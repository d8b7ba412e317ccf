//! Signed callbacks done wrong: the payment gateway's notice
//! (`POST /api/payments/notify`, cases 13 to 20) and the carrier's
//! (`POST /api/logistics/notify`, case 30).
//!
//! A payment notice is the one request that moves money, so it is attacked
//! on every layer in turn, one builder per layer: the signature, the JSON,
//! the fields, and a well-formed notice that contradicts the records (an
//! unknown order, a wrong amount, a payment id already used). Apart from the
//! signature cases, each is signed correctly, so it is refused for the
//! mistake it was built to show and not for its signature.

use ordermq_api::signature::SignedHeaders;
use ordermq_domain::ErrorCode;
use serde_json::json;

use super::orders::order_req;
use super::values::{bad_amount, bad_id, known_order, random_bytes, random_id};
use super::{BadRequest, FuzzContext, KnownOrder};

/// The payment gateway's callback.
const PAYMENT_NOTIFY: &str = "/api/payments/notify";

/// Fresh signature headers with `signature` in place of the real one.
fn forged(ctx: &FuzzContext, signature: &str) -> SignedHeaders {
    SignedHeaders {
        signature: signature.to_owned(),
        ..ctx.signer.sign(b"")
    }
}

/// A bad payment notice body, signed correctly unless the case is about signatures.
fn notify_req(
    ctx: &FuzzContext,
    kind: &'static str,
    body: Vec<u8>,
    expect: Option<(u16, ErrorCode)>,
) -> BadRequest {
    let signature = Some(ctx.signer.sign(&body));
    BadRequest {
        signature,
        ..BadRequest::post_json(kind, PAYMENT_NOTIFY, body, expect)
    }
}

/// `POST /api/payments/notify`: cases 13 to 20, by layer of the mistake.
pub(super) fn bad_notify(rng: &mut fastrand::Rng, ctx: &FuzzContext, case: u8) -> BadRequest {
    match case {
        13 => bad_signature(rng, ctx),
        14 => malformed_json(rng, ctx),
        17..=19 => contradicts_records(rng, ctx, case),
        _ => invalid_fields(rng, ctx, case),
    }
}

/// Case 13: a valid notice with no signature, an empty or a zero one, or the
/// signature of another body.
fn bad_signature(rng: &mut fastrand::Rng, ctx: &FuzzContext) -> BadRequest {
    let o = known_order(rng, ctx);
    let body = json!({"order_id": o.order_id, "payment_id": random_id(rng), "amount": o.amount})
        .to_string()
        .into_bytes();
    let signature = match rng.u8(0..4) {
        0 => None,
        1 => Some(forged(ctx, "")),
        2 => Some(forged(ctx, &"00".repeat(32))),
        _ => Some(ctx.signer.sign(b"some other body")),
    };
    BadRequest {
        signature,
        ..BadRequest::post_json(
            "notify: bad signature",
            PAYMENT_NOTIFY,
            body,
            Some((401, ErrorCode::InvalidSignature)),
        )
    }
}

/// Case 14: random bytes that cannot open a JSON object, correctly signed.
fn malformed_json(rng: &mut fastrand::Rng, ctx: &FuzzContext) -> BadRequest {
    notify_req(
        ctx,
        "notify: malformed JSON",
        random_bytes(rng, 200)
            .into_iter()
            .filter(|b| *b != b'{')
            .collect(),
        None,
    )
}

/// Cases 15, 16 and 20: JSON that fails validation (a bad amount, an unknown
/// field, ids that are not ids): 422 `INVALID_REQUEST`.
fn invalid_fields(rng: &mut fastrand::Rng, ctx: &FuzzContext, case: u8) -> BadRequest {
    let invalid = Some((422, ErrorCode::InvalidRequest));
    match case {
        15 => {
            let o = known_order(rng, ctx);
            notify_req(
                ctx,
                "notify: bad amount",
                json!({"order_id": o.order_id, "payment_id": random_id(rng), "amount": bad_amount(rng)})
                    .to_string()
                    .into_bytes(),
                invalid,
            )
        }
        16 => {
            let o = known_order(rng, ctx);
            notify_req(
                ctx,
                "notify: unknown field",
                json!({"order_id": o.order_id, "payment_id": "p", "amount": o.amount, "currency": "EUR"})
                    .to_string()
                    .into_bytes(),
                invalid,
            )
        }
        _ => notify_req(
            ctx,
            "notify: bad ids",
            json!({"order_id": bad_id(rng), "payment_id": bad_id(rng), "amount": 1})
                .to_string()
                .into_bytes(),
            invalid,
        ),
    }
}

/// Cases 17 to 19: a valid notice the records contradict: an unknown order,
/// an amount that is not the order's, a payment id that already paid another
/// order.
fn contradicts_records(rng: &mut fastrand::Rng, ctx: &FuzzContext, case: u8) -> BadRequest {
    use ErrorCode as E;
    match case {
        17 => notify_req(
            ctx,
            "notify: unknown order",
            json!({"order_id": format!("ONOPE{}", random_id(rng)), "payment_id": random_id(rng), "amount": 100})
                .to_string()
                .into_bytes(),
            Some((404, E::OrderNotFound)),
        ),
        18 => {
            let o = known_order(rng, ctx);
            notify_req(
                ctx,
                "notify: amount mismatch",
                json!({"order_id": o.order_id, "payment_id": random_id(rng), "amount": o.amount + rng.i64(1..1_000)})
                    .to_string()
                    .into_bytes(),
                Some((422, E::AmountMismatch)),
            )
        }
        _ => payment_id_reused(rng, ctx),
    }
}

/// Case 19: a payment id that already paid another order. Without both a
/// paid and an unpaid order to pair, the case falls back to an order body
/// of random bytes.
fn payment_id_reused(rng: &mut fastrand::Rng, ctx: &FuzzContext) -> BadRequest {
    let paid: Vec<&KnownOrder> = ctx
        .orders
        .iter()
        .filter(|o| o.payment_id.is_some())
        .collect();
    let unpaid: Vec<&KnownOrder> = ctx
        .orders
        .iter()
        .filter(|o| o.payment_id.is_none())
        .collect();
    if paid.is_empty() || unpaid.is_empty() {
        return order_req("orders: random bytes", random_bytes(rng, 300), None);
    }
    let (p, u) = (
        paid[rng.usize(..paid.len())],
        unpaid[rng.usize(..unpaid.len())],
    );
    notify_req(
        ctx,
        "notify: payment id reused",
        json!({"order_id": u.order_id, "payment_id": p.payment_id, "amount": u.amount})
            .to_string()
            .into_bytes(),
        Some((409, ErrorCode::PaymentConflict)),
    )
}

/// `POST /api/logistics/notify` signed with anything but the carrier's secret: case 30.
pub(super) fn bad_carrier_notify(rng: &mut fastrand::Rng, ctx: &FuzzContext) -> BadRequest {
    let o = known_order(rng, ctx);
    let body =
        json!({"order_id": o.order_id, "tracking_no": random_id(rng), "status": "DELIVERED"})
            .to_string()
            .into_bytes();
    // The payment gateway's secret is not the carrier's.
    let signature = match rng.u8(0..3) {
        0 => None,
        1 => Some(forged(ctx, &"00".repeat(32))),
        _ => Some(ctx.signer.sign(&body)),
    };
    BadRequest {
        signature,
        ..BadRequest::post_json(
            "carrier notify: bad signature",
            "/api/logistics/notify",
            body,
            Some((401, ErrorCode::InvalidSignature)),
        )
    }
}
