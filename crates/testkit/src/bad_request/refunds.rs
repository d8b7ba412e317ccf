//! Refunds done wrong: `POST /api/orders/{id}/refund` and
//! `POST /api/refunds/{id}/retry`, cases 24 to 29.
//!
//! A refund is the one write keyed by an `Idempotency-Key` header, and a
//! valid one would change state by design, so its cases stay apart: every
//! one is refused before anything is refunded (a missing or bad key, an
//! unknown order or refund, nothing refundable, an invalid body).

use ordermq_domain::ErrorCode;
use serde_json::json;

use super::values::{bad_key, known_order, random_id};
use super::{BadRequest, FuzzContext};

/// Refunds and refund retries: cases 24 to 29. Never a valid one (that would
/// change state by design).
pub(super) fn bad_refund(rng: &mut fastrand::Rng, ctx: &FuzzContext, case: u8) -> BadRequest {
    use ErrorCode as E;
    let invalid = Some((422, E::InvalidRequest));
    let order = |rng: &mut fastrand::Rng| known_order(rng, ctx);
    let refund_path = |id: &str| format!("/api/orders/{id}/refund");
    let refund =
        |kind: &'static str, path: String, key: Option<String>, body: Vec<u8>, expect| BadRequest {
            idempotency_key: key,
            ..BadRequest::post_json(kind, path, body, expect)
        };
    match case {
        24 => refund(
            "refund: no Idempotency-Key",
            refund_path(&order(rng).order_id),
            None,
            b"{}".to_vec(),
            Some((400, E::IdempotencyKeyRequired)),
        ),
        25 => refund(
            "refund: bad Idempotency-Key",
            refund_path(&order(rng).order_id),
            Some(bad_key(rng)),
            b"{}".to_vec(),
            invalid,
        ),
        26 => refund(
            "refund: unknown order",
            refund_path(&format!("ONOPE{}", random_id(rng))),
            Some(random_id(rng)),
            b"{}".to_vec(),
            Some((404, E::OrderNotFound)),
        ),
        27 => {
            let o = order(rng);
            // A paid order: an unknown line; an unpaid one: nothing to refund.
            let (body, expect) = if o.payment_id.is_some() {
                (
                    json!({"lines": [{"sku": format!("NOPE-{}", random_id(rng)), "quantity": 1}]}),
                    (422, E::UnknownSku),
                )
            } else {
                (json!({}), (409, E::OrderNotRefundable))
            };
            refund(
                "refund: nothing refundable",
                refund_path(&o.order_id),
                Some(random_id(rng)),
                body.to_string().into_bytes(),
                Some(expect),
            )
        }
        28 => {
            let bodies: [&[u8]; 4] = [
                br#"{"lines": []}"#,
                br#"{"amount": 100}"#,
                br#"{"lines": [{"sku": "SKU-1", "quantity": 0}]}"#,
                br#"{"lines": "all"}"#,
            ];
            refund(
                "refund: invalid body",
                refund_path(&order(rng).order_id),
                Some(random_id(rng)),
                bodies[rng.usize(0..bodies.len())].to_vec(),
                invalid,
            )
        }
        _ => BadRequest::bare(
            "refund retry: unknown refund",
            "POST",
            format!("/api/refunds/RNOPE{}/retry", random_id(rng)),
            Some((404, E::RefundNotFound)),
        ),
    }
}
