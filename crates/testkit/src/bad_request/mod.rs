//! Generated bad requests: every endpoint, every way of being wrong.
//!
//! Shared by the live `bad-input` scenario (sent to the real binary) and the
//! property test of the router (`crates/ordermq/tests/it/bad_input.rs`), so both
//! prove the same property: a bad request gets a 4xx with a stable code —
//! the exact one when the kind of mistake determines it — never a 5xx, never
//! a panic, and changes nothing. Generation is seeded, so a failing case is
//! reproduced by its seed.
//!
//! This file holds what both callers use — the context ([`FuzzContext`]),
//! a case ([`BadRequest`]) with its judge and the two shapes most cases
//! take (a JSON `POST`, a bare request), and the draw ([`bad_request`]) —
//! and the cases live one endpoint family to a file, so each file reads as
//! the list of mistakes tried on that endpoint:
//! - `orders`: `POST /api/orders` (cases 0 to 12);
//! - `notify`: the signed callbacks, payment notices (13 to 20) and the
//!   carrier's (30);
//! - `routes`: wrong methods, unknown routes and records (21 to 23);
//! - `refunds`: refunds and refund retries (24 to 29);
//! - `values`: the bad ids, keys, quantities and amounts they all draw from.
//!
//! The case numbers and the order of random draws are part of the contract:
//! a seed names the same requests before and after a change here.

mod notify;
mod orders;
mod refunds;
mod routes;
mod values;

use ordermq_api::signature::{CallbackSigner, SignedHeaders};
use ordermq_domain::ErrorCode;
use serde_json::Value;

use self::notify::{bad_carrier_notify, bad_notify};
use self::orders::bad_order;
use self::refunds::bad_refund;
use self::routes::bad_route;

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
        let Some(message) = value["message"].as_str() else {
            return Err(format!("{}: {status} {code} without a message", self.kind));
        };
        if let Some(leak) = internal_text(&self.beyond_echo(message)) {
            return Err(format!(
                "{}: {status} {code} shows internal text ({leak:?}): {message}",
                self.kind
            ));
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

    /// `message` without the words the request itself carried: an id it
    /// sent and the answer names may spell an internal word by chance
    /// (`ONOPEqrJPM58eusQlXmRM` holds `sQlX`), and that is no leak.
    fn beyond_echo(&self, message: &str) -> String {
        let sent = format!("{} {}", self.path, String::from_utf8_lossy(&self.body));
        let mut words: Vec<&str> = sent
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|word| word.len() >= 4)
            .collect();
        words.sort_by_key(|word| std::cmp::Reverse(word.len()));
        words
            .into_iter()
            .fold(message.to_owned(), |rest, word| rest.replace(word, " "))
    }
}

/// Words that only internal error text carries: driver and broker names,
/// source locations, panics, OS errors and file paths. A client is told what
/// was wrong with its request, never what broke inside.
const INTERNAL_WORDS: &[&str] = &[
    "sqlx",
    "sqlite",
    "postgres",
    "rocketmq",
    "panicked",
    "backtrace",
    ".rs:",
    "os error",
    "connection refused",
    "broken pipe",
    "/var/",
    "/tmp/",
    "/home/",
];

/// The first internal word `text` contains (case-insensitive), if any.
pub fn internal_text(text: &str) -> Option<&'static str> {
    let lower = text.to_ascii_lowercase();
    INTERNAL_WORDS.iter().copied().find(|w| lower.contains(w))
}

impl BadRequest {
    /// `body` sent to `path` with `POST` as JSON: no signature and no
    /// `Idempotency-Key` (a case that needs one adds it).
    fn post_json(
        kind: &'static str,
        path: impl Into<String>,
        body: Vec<u8>,
        expect: Option<(u16, ErrorCode)>,
    ) -> Self {
        Self {
            kind,
            method: "POST",
            path: path.into(),
            content_type: Some("application/json".to_owned()),
            signature: None,
            idempotency_key: None,
            body,
            expect,
        }
    }

    /// A `method` request to `path` with neither a body nor headers.
    fn bare(
        kind: &'static str,
        method: &'static str,
        path: String,
        expect: Option<(u16, ErrorCode)>,
    ) -> Self {
        Self {
            kind,
            method,
            path,
            content_type: None,
            signature: None,
            idempotency_key: None,
            body: Vec::new(),
            expect,
        }
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

#[cfg(test)]
mod tests {
    use super::orders::order_req;
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
        let leaked = br#"{"code":"INVALID_REQUEST","message":"error returned from database: (code: 1) near \"x\": sqlite syntax error"}"#;
        assert!(
            any.judge(400, leaked)
                .unwrap_err()
                .contains("internal text")
        );
        assert_eq!(
            internal_text("thread 'main' panicked at src/x.rs:3"),
            Some("panicked")
        );
        assert_eq!(internal_text("must be 1 to 64 characters"), None);
    }

    #[test]
    fn an_id_the_request_sent_is_no_leak_even_when_it_spells_an_internal_word() {
        let body = |message: &str| {
            serde_json::json!({"code": "ORDER_NOT_FOUND", "message": message})
                .to_string()
                .into_bytes()
        };
        let sent = order_req(
            "t",
            br#"{"order_id":"ONOPEqrJPM58eusQlXmRM"}"#.to_vec(),
            None,
        );
        assert!(
            sent.judge(404, &body("order ONOPEqrJPM58eusQlXmRM not found"))
                .is_ok()
        );
        // The same word not from the request is still a leak.
        let leak = sent
            .judge(404, &body("order ABCsQlX9 not found"))
            .unwrap_err();
        assert!(leak.contains("internal text"), "{leak}");
        assert!(
            sent.judge(404, &body("sqlx: order ONOPEqrJPM58eusQlXmRM"))
                .is_err()
        );
    }
}
