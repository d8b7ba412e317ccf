//! `POST /api/orders` done wrong: cases 0 to 12.
//!
//! Creating an order is the endpoint that takes the richest body (a user,
//! lines, quantities, SKUs that must exist and be in stock), so it has the
//! most ways of being wrong; they get a file of their own, one arm per kind
//! of mistake, from unreadable bytes to a valid order for more than the stock.

use ordermq_domain::ErrorCode;
use serde_json::{Value, json};

use super::values::{bad_id, bad_quantity, random_bytes, random_id};
use super::{BadRequest, FuzzContext};

/// A bad `POST /api/orders` with a JSON content type.
pub(super) fn order_req(
    kind: &'static str,
    body: Vec<u8>,
    expect: Option<(u16, ErrorCode)>,
) -> BadRequest {
    BadRequest::post_json(kind, "/api/orders", body, expect)
}

/// `POST /api/orders`: cases 0 to 12.
pub(super) fn bad_order(rng: &mut fastrand::Rng, ctx: &FuzzContext, case: u8) -> BadRequest {
    use ErrorCode as E;
    let invalid = Some((422, E::InvalidRequest));
    match case {
        0 => order_req("orders: random bytes", random_bytes(rng, 300), None),
        1 => {
            let valid = json!({"user_id": "u1", "items": [{"sku": "SKU-1", "quantity": 1}]})
                .to_string()
                .into_bytes();
            let cut = rng.usize(0..valid.len());
            order_req(
                "orders: truncated JSON",
                valid[..cut].to_vec(),
                Some((400, E::MalformedJson)),
            )
        }
        2 => {
            let mut body = br#"{"user_id":"u1","items":[{"sku":"SKU-1","quantity":1}],"pad":""#.to_vec();
            body.extend(std::iter::repeat_n(b'a', 64 * 1024 + rng.usize(1..200_000)));
            body.extend(br#""}"#);
            order_req("orders: huge body", body, Some((413, E::PayloadTooLarge)))
        }
        3 => order_req(
            "orders: bad quantity",
            json!({"user_id": random_id(rng), "items": [{"sku": "SKU-1", "quantity": bad_quantity(rng)}]})
                .to_string()
                .into_bytes(),
            invalid,
        ),
        4 => order_req(
            "orders: unknown field",
            json!({"user_id": "u1", "items": [{"sku": "SKU-1", "quantity": 1}], random_id(rng): 1})
                .to_string()
                .into_bytes(),
            invalid,
        ),
        5 => order_req(
            "orders: unknown item field",
            json!({"user_id": "u1", "items": [{"sku": "SKU-1", "quantity": 1, "price": 1}]})
                .to_string()
                .into_bytes(),
            invalid,
        ),
        6 => order_req(
            "orders: bad user id",
            json!({"user_id": bad_id(rng), "items": [{"sku": "SKU-1", "quantity": 1}]})
                .to_string()
                .into_bytes(),
            invalid,
        ),
        7 => {
            let items: Vec<Value> = (0..rng.usize(51..120))
                .map(|i| json!({"sku": format!("SKU-{i}"), "quantity": 1}))
                .collect();
            order_req(
                "orders: too many lines",
                json!({"user_id": "u1", "items": items}).to_string().into_bytes(),
                invalid,
            )
        }
        8 => order_req(
            "orders: no lines",
            br#"{"user_id":"u1","items":[]}"#.to_vec(),
            invalid,
        ),
        9 => order_req(
            "orders: unknown sku",
            json!({"user_id": "u1", "items": [{"sku": format!("NOPE-{}", random_id(rng)), "quantity": 1}]})
                .to_string()
                .into_bytes(),
            Some((422, E::UnknownSku)),
        ),
        10 => {
            let (sku, stock) = &ctx.scarce_sku;
            order_req(
                "orders: more than the stock",
                json!({"user_id": "u1", "items": [{"sku": sku, "quantity": stock + rng.i64(1..=100)}]})
                    .to_string()
                    .into_bytes(),
                Some((409, E::OutOfStock)),
            )
        }
        11 => {
            let mut r = order_req(
                "orders: wrong content type",
                br#"{"user_id":"u1","items":[{"sku":"SKU-1","quantity":1}]}"#.to_vec(),
                Some((415, E::UnsupportedMediaType)),
            );
            r.content_type = [None, Some("text/plain"), Some("application/x-www-form-urlencoded")]
                [rng.usize(0..3)]
            .map(str::to_owned);
            r
        }
        _ => order_req(
            "orders: wrong JSON shape",
            [&b"[]"[..], b"null", b"42", b"\"x\"", br#"{"user_id":1,"items":{}}"#][rng.usize(0..5)]
                .to_vec(),
            invalid,
        ),
    }
}
