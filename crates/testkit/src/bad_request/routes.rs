//! Requests that miss the API's routes: wrong methods, unknown paths, and
//! reads of records that do not exist or cannot be named (cases 21 to 23).
//!
//! What is wrong is the method, the path, or the record the path names, never
//! a body, so these cases need neither a known order nor a signature: the
//! router's fallbacks and the read endpoints' path checks answer them.

use ordermq_domain::ErrorCode;

use super::values::random_id;
use super::{BadRequest, JSON};

/// Wrong methods, unknown routes and unknown records: cases 21 to 23.
pub(super) fn bad_route(rng: &mut fastrand::Rng, case: u8) -> BadRequest {
    use ErrorCode as E;
    match case {
        21 => BadRequest {
            kind: "wrong method",
            method: ["PUT", "DELETE", "PATCH"][rng.usize(0..3)],
            path: ["/api/orders", "/api/payments/notify", "/api/products"][rng.usize(0..3)].into(),
            content_type: JSON.map(str::to_owned),
            signature: None,
            idempotency_key: None,
            body: b"{}".to_vec(),
            expect: Some((405, E::MethodNotAllowed)),
        },
        22 => BadRequest {
            kind: "unknown route",
            method: "GET",
            path: format!("/api/x-{}", random_id(rng)),
            content_type: None,
            signature: None,
            idempotency_key: None,
            body: Vec::new(),
            expect: Some((404, E::NotFound)),
        },
        _ => BadRequest {
            kind: "unknown order, bad user id or record kind",
            method: "GET",
            path: match rng.u8(0..3) {
                0 => format!("/api/orders/{}", random_id(rng)),
                1 => format!(
                    "/api/users/{}",
                    ["x".repeat(65), "a%20b".into(), "%C3%BC".into()][rng.usize(0..3)]
                ),
                _ => format!("/api/users/u1/x-{}", random_id(rng)),
            },
            content_type: None,
            signature: None,
            idempotency_key: None,
            body: Vec::new(),
            expect: None,
        },
    }
}
