//! Requests that miss the API's routes: wrong methods, unknown paths, and
//! reads of records that do not exist or cannot be named (cases 21 to 23).
//!
//! What is wrong is the method, the path, or the record the path names, never
//! a body, so these cases need neither a known order nor a signature: the
//! router's fallbacks and the read endpoints' path checks answer them.

use ordermq_domain::ErrorCode;

use super::BadRequest;
use super::values::random_id;

/// Wrong methods, unknown routes and unknown records: cases 21 to 23.
pub(super) fn bad_route(rng: &mut fastrand::Rng, case: u8) -> BadRequest {
    use ErrorCode as E;
    match case {
        // The method is drawn before the path (the order of draws is the contract).
        21 => BadRequest {
            method: ["PUT", "DELETE", "PATCH"][rng.usize(0..3)],
            ..BadRequest::post_json(
                "wrong method",
                ["/api/orders", "/api/payments/notify", "/api/products"][rng.usize(0..3)],
                b"{}".to_vec(),
                Some((405, E::MethodNotAllowed)),
            )
        },
        22 => BadRequest::bare(
            "unknown route",
            "GET",
            format!("/api/x-{}", random_id(rng)),
            Some((404, E::NotFound)),
        ),
        _ => BadRequest::bare(
            "unknown order, bad user id or record kind",
            "GET",
            match rng.u8(0..3) {
                0 => format!("/api/orders/{}", random_id(rng)),
                1 => format!(
                    "/api/users/{}",
                    ["x".repeat(65), "a%20b".into(), "%C3%BC".into()][rng.usize(0..3)]
                ),
                _ => format!("/api/users/u1/x-{}", random_id(rng)),
            },
            None,
        ),
    }
}
