//! Generated bad requests: every endpoint, every way of being wrong.
//!
//! Shared by the live `bad-input` scenario (sent to the real binary) and the
//! property test of the router (`crates/ordermq/tests/it/bad_input.rs`), so both
//! prove the same property: a bad request gets a 4xx with a stable code —
//! the exact one when the kind of mistake determines it — never a 5xx, never
//! a panic, and changes nothing. Generation is seeded, so a failing case is
//! reproduced by its seed.

use ordermq_api::signature::{CallbackSigner, SignedHeaders};
use ordermq_domain::ErrorCode;
use serde_json::{Value, json};

/// An order that exists, for requests that refer to one.
#[derive(Debug, Clone)]
pub struct KnownOrder {
    pub order_id: String,
    pub amount: i64,
    /// The payment applied to it, if paid.
    pub payment_id: Option<String>,
}

/// What generated requests may refer to.
#[derive(Debug, Clone)]
pub struct FuzzContext {
    pub signer: CallbackSigner,
    /// Existing orders (some unpaid, some paid).
    pub orders: Vec<KnownOrder>,
    /// A SKU with little stock (ordering more than it has is OUT_OF_STOCK).
    pub scarce_sku: (String, i64),
}

/// One bad request and what it must get.
#[derive(Debug, Clone)]
pub struct BadRequest {
    /// What kind of mistake (for reports).
    pub kind: &'static str,
    pub method: &'static str,
    pub path: String,
    pub content_type: Option<String>,
    pub signature: Option<SignedHeaders>,
    /// The `Idempotency-Key` header (refunds).
    pub idempotency_key: Option<String>,
    pub body: Vec<u8>,
    /// The exact status and code when the mistake determines them.
    pub expect: Option<(u16, ErrorCode)>,
}

impl BadRequest {
    /// The request as an in-process `http` request (router tests).
    pub fn to_request(&self) -> axum::http::Request<axum::body::Body> {
        let mut request = axum::http::Request::builder()
            .method(self.method)
            .uri(self.path.as_str());
        if let Some(ct) = &self.content_type {
            request = request.header("content-type", ct);
        }
        for (name, value) in self.signature.iter().flat_map(SignedHeaders::pairs) {
            request = request.header(name, value);
        }
        if let Some(key) = &self.idempotency_key {
            request = request.header("idempotency-key", key);
        }
        request
            .body(axum::body::Body::from(self.body.clone()))
            .expect("generated requests are well-formed http requests")
    }

    /// Checks an answer: `Err` says what is wrong with it.
    pub fn judge(&self, status: u16, body: &[u8]) -> Result<(), String> {
        if !(400..500).contains(&status) {
            return Err(format!("{}: status {status}, expected a 4xx", self.kind));
        }
        let value: Value = serde_json::from_slice(body)
            .map_err(|_| format!("{}: {status} with a non-JSON body", self.kind))?;
        let code = value["code"].as_str().unwrap_or_default();
        if !ErrorCode::ALL.iter().any(|c| c.as_str() == code) {
            return Err(format!(
                "{}: {status} with unknown code {code:?}",
                self.kind
            ));
        }
        if value["message"].as_str().is_none() {
            return Err(format!("{}: {status} {code} without a message", self.kind));
        }
        if let Some((want_status, want_code)) = self.expect
            && (want_status != status || want_code.as_str() != code)
        {
            return Err(format!(
                "{}: got {status} {code}, expected {want_status} {}",
                self.kind,
                want_code.as_str()
            ));
        }
        Ok(())
    }
}

const JSON: Option<&str> = Some("application/json");

fn order_req(kind: &'static str, body: Vec<u8>, expect: Option<(u16, ErrorCode)>) -> BadRequest {
    BadRequest {
        kind,
        method: "POST",
        path: "/api/orders".into(),
        content_type: JSON.map(str::to_owned),
        signature: None,
        idempotency_key: None,
        body,
        expect,
    }
}

fn random_id(rng: &mut fastrand::Rng) -> String {
    let len = rng.usize(1..=20);
    (0..len).map(|_| rng.alphanumeric()).collect()
}

/// Strings that are not valid ids (`[A-Za-z0-9_.:-]{1,64}`).
fn bad_id(rng: &mut fastrand::Rng) -> String {
    match rng.u8(0..6) {
        0 => String::new(),
        1 => "x".repeat(65 + rng.usize(0..200)),
        2 => "has space".into(),
        3 => "ünïcødé".into(),
        4 => "semi;colon".into(),
        _ => "new\nline".into(),
    }
}

/// Header-safe strings that are not valid idempotency keys.
fn bad_key(rng: &mut fastrand::Rng) -> String {
    match rng.u8(0..4) {
        0 => String::new(),
        1 => "k".repeat(65 + rng.usize(0..200)),
        2 => "has space".into(),
        _ => "semi;colon/slash".into(),
    }
}

/// Quantities outside 1..=10000, or not integers.
fn bad_quantity(rng: &mut fastrand::Rng) -> Value {
    match rng.u8(0..10) {
        0 => json!(0),
        1 => json!(-1),
        2 => json!(i64::MIN),
        3 => json!(i64::MAX),
        4 => json!(10_001),
        5 => json!(u64::MAX),
        6 => json!(1.5),
        7 => json!("3"),
        8 => json!(null),
        _ => json!(-rng.i64(1..i64::MAX)),
    }
}

/// Amounts that are negative, overflow i64, or are not integers.
fn bad_amount(rng: &mut fastrand::Rng) -> Value {
    match rng.u8(0..7) {
        0 => json!(-1),
        1 => json!(i64::MIN),
        2 => json!(u64::MAX),
        3 => json!(1e30),
        4 => json!(12.5),
        5 => json!("100"),
        _ => json!(-rng.i64(1..i64::MAX)),
    }
}

fn random_bytes(rng: &mut fastrand::Rng, max: usize) -> Vec<u8> {
    let len = rng.usize(0..max);
    (0..len).map(|_| rng.u8(..)).collect()
}

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
    BadRequest {
        kind,
        method: "POST",
        path: "/api/payments/notify".into(),
        content_type: JSON.map(str::to_owned),
        signature: Some(ctx.signer.sign(&body)),
        idempotency_key: None,
        body,
        expect,
    }
}

/// One bad request, drawn from every kind of mistake: the case number picks
/// the endpoint's generator, and each generator the kind of mistake.
pub fn bad_request(rng: &mut fastrand::Rng, ctx: &FuzzContext) -> BadRequest {
    match rng.u8(0..31) {
        case @ 0..=12 => bad_order(rng, ctx, case),
        case @ 13..=20 => bad_notify(rng, ctx, case),
        case @ 24..=29 => bad_refund(rng, ctx, case),
        30 => bad_carrier_notify(rng, ctx),
        case => bad_route(rng, case),
    }
}

fn known_order(rng: &mut fastrand::Rng, ctx: &FuzzContext) -> KnownOrder {
    ctx.orders[rng.usize(..ctx.orders.len())].clone()
}

/// `POST /api/orders`: cases 0 to 12.
fn bad_order(rng: &mut fastrand::Rng, ctx: &FuzzContext, case: u8) -> BadRequest {
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

/// `POST /api/payments/notify`: cases 13 to 20.
fn bad_notify(rng: &mut fastrand::Rng, ctx: &FuzzContext, case: u8) -> BadRequest {
    use ErrorCode as E;
    let invalid = Some((422, E::InvalidRequest));
    let order = |rng: &mut fastrand::Rng| known_order(rng, ctx);
    match case {
        13 => {
            let o = order(rng);
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
                kind: "notify: bad signature",
                method: "POST",
                path: "/api/payments/notify".into(),
                content_type: JSON.map(str::to_owned),
                signature,
                idempotency_key: None,
                body,
                expect: Some((401, E::InvalidSignature)),
            }
        }
        14 => notify_req(
            ctx,
            "notify: malformed JSON",
            random_bytes(rng, 200).into_iter().filter(|b| *b != b'{').collect(),
            None,
        ),
        15 => {
            let o = order(rng);
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
            let o = order(rng);
            notify_req(
                ctx,
                "notify: unknown field",
                json!({"order_id": o.order_id, "payment_id": "p", "amount": o.amount, "currency": "EUR"})
                    .to_string()
                    .into_bytes(),
                invalid,
            )
        }
        17 => notify_req(
            ctx,
            "notify: unknown order",
            json!({"order_id": format!("ONOPE{}", random_id(rng)), "payment_id": random_id(rng), "amount": 100})
                .to_string()
                .into_bytes(),
            Some((404, E::OrderNotFound)),
        ),
        18 => {
            let o = order(rng);
            notify_req(
                ctx,
                "notify: amount mismatch",
                json!({"order_id": o.order_id, "payment_id": random_id(rng), "amount": o.amount + rng.i64(1..1_000)})
                    .to_string()
                    .into_bytes(),
                Some((422, E::AmountMismatch)),
            )
        }
        19 => {
            // A payment id that already paid another order.
            let paid: Vec<&KnownOrder> = ctx.orders.iter().filter(|o| o.payment_id.is_some()).collect();
            let unpaid: Vec<&KnownOrder> = ctx.orders.iter().filter(|o| o.payment_id.is_none()).collect();
            if paid.is_empty() || unpaid.is_empty() {
                return order_req("orders: random bytes", random_bytes(rng, 300), None);
            }
            let (p, u) = (paid[rng.usize(..paid.len())], unpaid[rng.usize(..unpaid.len())]);
            notify_req(
                ctx,
                "notify: payment id reused",
                json!({"order_id": u.order_id, "payment_id": p.payment_id, "amount": u.amount})
                    .to_string()
                    .into_bytes(),
                Some((409, E::PaymentConflict)),
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

/// Refunds and refund retries: cases 24 to 29. Never a valid one (that would
/// change state by design).
fn bad_refund(rng: &mut fastrand::Rng, ctx: &FuzzContext, case: u8) -> BadRequest {
    use ErrorCode as E;
    let invalid = Some((422, E::InvalidRequest));
    let order = |rng: &mut fastrand::Rng| known_order(rng, ctx);
    let refund_path = |id: &str| format!("/api/orders/{id}/refund");
    let refund =
        |kind: &'static str, path: String, key: Option<String>, body: Vec<u8>, expect| BadRequest {
            kind,
            method: "POST",
            path,
            content_type: JSON.map(str::to_owned),
            signature: None,
            idempotency_key: key,
            body,
            expect,
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
        _ => BadRequest {
            kind: "refund retry: unknown refund",
            method: "POST",
            path: format!("/api/refunds/RNOPE{}/retry", random_id(rng)),
            content_type: None,
            signature: None,
            idempotency_key: None,
            body: Vec::new(),
            expect: Some((404, E::RefundNotFound)),
        },
    }
}

/// `POST /api/logistics/notify` signed with anything but the carrier's secret: case 30.
fn bad_carrier_notify(rng: &mut fastrand::Rng, ctx: &FuzzContext) -> BadRequest {
    use ErrorCode as E;
    {
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
            kind: "carrier notify: bad signature",
            method: "POST",
            path: "/api/logistics/notify".into(),
            content_type: JSON.map(str::to_owned),
            signature,
            idempotency_key: None,
            body,
            expect: Some((401, E::InvalidSignature)),
        }
    }
}

/// Wrong methods, unknown routes and unknown records: cases 21 to 23.
fn bad_route(rng: &mut fastrand::Rng, case: u8) -> BadRequest {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> FuzzContext {
        FuzzContext {
            signer: CallbackSigner::from_secret(b"s"),
            orders: vec![KnownOrder {
                order_id: "O1".into(),
                amount: 100,
                payment_id: None,
            }],
            scarce_sku: ("SKU-5".into(), 100),
        }
    }

    #[test]
    fn generation_is_deterministic_per_seed_and_covers_every_kind() {
        let (mut a, mut b) = (fastrand::Rng::with_seed(7), fastrand::Rng::with_seed(7));
        let mut kinds = std::collections::BTreeSet::new();
        for _ in 0..2_000 {
            let (x, y) = (bad_request(&mut a, &ctx()), bad_request(&mut b, &ctx()));
            assert_eq!((x.kind, &x.path, &x.body), (y.kind, &y.path, &y.body));
            kinds.insert(x.kind);
        }
        assert!(kinds.len() >= 29, "{kinds:?}");
    }

    #[test]
    fn judge_accepts_only_4xx_with_a_known_code_and_the_expected_one() {
        let r = order_req("t", Vec::new(), Some((400, ErrorCode::MalformedJson)));
        let body = |code: &str| format!(r#"{{"code":"{code}","message":"m"}}"#).into_bytes();
        assert!(r.judge(400, &body("MALFORMED_JSON")).is_ok());
        assert!(r.judge(422, &body("INVALID_REQUEST")).is_err());
        assert!(r.judge(500, &body("INTERNAL")).is_err());
        assert!(r.judge(400, b"plain text").is_err());
        let any = order_req("t", Vec::new(), None);
        assert!(any.judge(404, &body("NOT_FOUND")).is_ok());
        assert!(any.judge(404, &body("NO_SUCH_CODE")).is_err());
    }
}
