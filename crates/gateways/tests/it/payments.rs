//! `HttpPayments` against the fake provider's `POST /payments/refunds`.

use std::time::Duration;

use ordermq_domain::Amount;
use ordermq_domain::ports::PaymentGateway;
use ordermq_fake_provider::CallOutcome;
use ordermq_gateways::HttpPayments;

use crate::support::{Provider, assert_one_signed_effect, fail_then_lose_the_answer, hanging};

const REFUND: &str = "/payments/refunds";

fn amount(cents: i64) -> Amount {
    Amount::parse(cents).unwrap()
}

#[tokio::test]
async fn a_refund_is_signed_verified_and_answered_with_the_providers_id() {
    let provider = Provider::start().await;
    let payments = HttpPayments::new(provider.options(Duration::from_secs(5), 2)).unwrap();
    let id = payments.refund("R1", "pay-1", amount(8_900)).await.unwrap();
    assert_one_signed_effect(&provider, REFUND, "R1", "provider_refund_id", &id);
    let request = &provider.calls(REFUND)[0].request;
    assert_eq!(
        (request["payment_id"].as_str(), request["amount"].as_i64()),
        (Some("pay-1"), Some(8_900))
    );
}

#[tokio::test]
async fn a_refund_retried_through_an_outage_and_a_lost_answer_pays_once() {
    let provider = Provider::start().await;
    fail_then_lose_the_answer(&provider);
    let payments = HttpPayments::new(provider.options(Duration::from_secs(5), 3)).unwrap();
    let id = payments.refund("R2", "pay-2", amount(100)).await.unwrap();
    assert_eq!(provider.calls(REFUND).len(), 3);
    let effects = provider.handle.effects(REFUND);
    assert_eq!(effects.len(), 1, "the money went back once");
    assert_eq!(effects[0].response["provider_refund_id"], id.as_str());
}

#[tokio::test]
async fn a_refusal_is_not_retried() {
    let provider = Provider::start().await;
    provider.handle.answer_next(409, 1);
    let payments = HttpPayments::new(provider.options(Duration::from_secs(5), 3)).unwrap();
    let err = payments
        .refund("R3", "pay-3", amount(100))
        .await
        .unwrap_err();
    assert!(err.reason.contains("HTTP 409"), "{err}");
    assert_eq!(provider.calls(REFUND).len(), 1);
}

#[tokio::test]
async fn a_hanging_provider_is_given_up_at_the_timeout() {
    let provider = Provider::with_knobs(hanging()).await;
    let payments = HttpPayments::new(provider.options(Duration::from_millis(200), 0)).unwrap();
    let started = std::time::Instant::now();
    let err = payments
        .refund("R4", "pay-4", amount(100))
        .await
        .unwrap_err();
    assert!(
        err.reason.contains("no answer within") && err.reason.contains("(attempt 1 of 1)"),
        "{err}"
    );
    assert!(started.elapsed() < crate::support::HANG);
}

#[tokio::test]
async fn a_wrong_key_is_refused_and_not_retried() {
    let provider = Provider::start().await;
    let payments = HttpPayments::new(provider.options_signed_by("k1", "wrong")).unwrap();
    let err = payments
        .refund("R5", "pay-5", amount(100))
        .await
        .unwrap_err();
    assert!(err.reason.contains("HTTP 401 INVALID_SIGNATURE"), "{err}");
    let calls = provider.calls(REFUND);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].outcome, CallOutcome::Refused);
}
