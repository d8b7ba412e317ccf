//! `HttpSms` against the fake provider's `POST /sms/send`.

use std::time::Duration;

use ordermq_domain::ports::SmsGateway;
use ordermq_fake_provider::CallOutcome;
use ordermq_gateways::HttpSms;

use crate::support::{Provider, assert_one_signed_effect, fail_then_lose_the_answer, hanging};

const SEND: &str = "/sms/send";

#[tokio::test]
async fn a_send_is_signed_verified_and_answered_with_the_message_id() {
    let provider = Provider::start().await;
    let sms = HttpSms::new(provider.options(Duration::from_secs(5), 2)).unwrap();
    let id = sms.send("OrderPaid:O1", "u1", "Thank you!").await.unwrap();
    assert_one_signed_effect(&provider, SEND, "OrderPaid:O1", "message_id", &id);
    let request = &provider.calls(SEND)[0].request;
    assert_eq!(
        (request["to_user"].as_str(), request["text"].as_str()),
        (Some("u1"), Some("Thank you!"))
    );
}

#[tokio::test]
async fn a_send_retried_through_an_outage_and_a_lost_answer_sends_once() {
    let provider = Provider::start().await;
    fail_then_lose_the_answer(&provider);
    let sms = HttpSms::new(provider.options(Duration::from_secs(5), 3)).unwrap();
    let id = sms.send("OrderPaid:O2", "u1", "hi").await.unwrap();
    let outcomes: Vec<_> = provider
        .calls(SEND)
        .iter()
        .map(|c| (c.status, c.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            (503, CallOutcome::Failed),
            (503, CallOutcome::Effect),
            (200, CallOutcome::Replay)
        ]
    );
    assert_eq!(provider.handle.effects(SEND).len(), 1, "one SMS");
    assert_eq!(
        provider.handle.effects(SEND)[0].response["message_id"],
        id.as_str()
    );
}

#[tokio::test]
async fn a_refusal_is_not_retried() {
    let provider = Provider::start().await;
    provider.handle.answer_next(422, 1);
    let sms = HttpSms::new(provider.options(Duration::from_secs(5), 3)).unwrap();
    let err = sms.send("OrderPaid:O3", "u1", "hi").await.unwrap_err();
    assert!(err.reason.contains("HTTP 422"), "{err}");
    assert_eq!(provider.calls(SEND).len(), 1, "a 4xx is final");
    assert!(provider.handle.effects(SEND).is_empty());
}

#[tokio::test]
async fn a_hanging_provider_is_given_up_at_the_timeout() {
    let provider = Provider::with_knobs(hanging()).await;
    let sms = HttpSms::new(provider.options(Duration::from_millis(200), 1)).unwrap();
    let started = std::time::Instant::now();
    let err = sms.send("OrderPaid:O4", "u1", "hi").await.unwrap_err();
    assert!(
        err.reason
            .contains("no answer within 200 ms (attempt 2 of 2)"),
        "{err}"
    );
    assert!(
        started.elapsed() < crate::support::HANG,
        "did not wait for the hang"
    );
}

#[tokio::test]
async fn a_wrong_key_is_refused_and_not_retried() {
    let provider = Provider::start().await;
    for (id, secret) in [("k1", "not-the-secret"), ("k9", "provider-test-secret")] {
        let sms = HttpSms::new(provider.options_signed_by(id, secret)).unwrap();
        let err = sms.send("OrderPaid:O5", "u1", "hi").await.unwrap_err();
        assert!(err.reason.contains("HTTP 401 INVALID_SIGNATURE"), "{err}");
        assert!(!err.to_string().contains(secret), "{err}");
    }
    let calls = provider.calls(SEND);
    assert_eq!(calls.len(), 2, "one call per key, none retried");
    assert!(calls.iter().all(|c| c.outcome == CallOutcome::Refused));
}
