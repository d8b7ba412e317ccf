//! The protocol's checks and answers, against an in-process provider.

use ordermq_domain::now_millis;
use ordermq_fake_provider::{CallOutcome, Options, spawn};
use serde_json::json;

use crate::{KEY, keyring, post};

fn sms(key: &str) -> serde_json::Value {
    json!({"idempotency_key": key, "to_user": "u1", "text": "hi"})
}

#[tokio::test]
async fn the_same_key_gets_the_same_answer_across_a_restart_and_another_body_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, handle) = spawn(Options::local(keyring(), dir.path())).await.unwrap();
    let url = format!("http://{addr}/sms/send");
    let (status, first) = post(&url, &keyring(), now_millis(), "E1", &sms("E1")).await;
    assert_eq!(status, 200, "{first}");
    handle.stop().await.unwrap();

    let (addr, handle) = spawn(Options::local(keyring(), dir.path())).await.unwrap();
    let url = format!("http://{addr}/sms/send");
    let (status, again) = post(&url, &keyring(), now_millis(), "E1", &sms("E1")).await;
    assert_eq!(
        (status, &again),
        (200, &first),
        "remembered after a restart"
    );
    let other = json!({"idempotency_key": "E1", "to_user": "u2", "text": "hi"});
    let (status, answer) = post(&url, &keyring(), now_millis(), "E1", &other).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (409, Some("IDEMPOTENCY_KEY_REUSED"))
    );
    let (status, second) = post(&url, &keyring(), now_millis(), "E2", &sms("E2")).await;
    assert_eq!(status, 200);
    assert_ne!(second, first, "a new key is a new message");
    assert_eq!(handle.effects("/sms/send").len(), 2);
    let outcomes: Vec<_> = handle.calls().iter().map(|c| c.outcome).collect();
    assert_eq!(
        outcomes,
        [
            CallOutcome::Effect,
            CallOutcome::Replay,
            CallOutcome::Refused,
            CallOutcome::Effect
        ]
    );
    handle.stop().await.unwrap();
}

#[tokio::test]
async fn stale_or_forged_signatures_and_mismatched_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, handle) = spawn(Options::local(keyring(), dir.path())).await.unwrap();
    let url = format!("http://{addr}/sms/send");
    let ten_minutes_ago = now_millis() - 600_000;
    let (status, answer) = post(&url, &keyring(), ten_minutes_ago, "E1", &sms("E1")).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (401, Some("INVALID_SIGNATURE"))
    );
    let forged = ordermq_domain::signing::Keyring::new([(KEY.0.to_owned(), b"guess")]).unwrap();
    let (status, _) = post(&url, &forged, now_millis(), "E1", &sms("E1")).await;
    assert_eq!(status, 401);
    let (status, answer) = post(&url, &keyring(), now_millis(), "E2", &sms("E1")).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("IDEMPOTENCY_KEY_MISMATCH")),
        "the signed body's key is the header's"
    );
    assert!(handle.effects("/sms/send").is_empty());
    handle.stop().await.unwrap();
}

#[tokio::test]
async fn concurrent_calls_with_one_key_have_one_effect() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, handle) = spawn(Options::local(keyring(), dir.path())).await.unwrap();
    let url = format!("http://{addr}/payments/refunds");
    let body = json!({"idempotency_key": "R1", "payment_id": "p1", "amount": 100});
    let calls = (0..8).map(|_| {
        let (url, body) = (url.clone(), body.clone());
        async move { post(&url, &keyring(), now_millis(), "R1", &body).await }
    });
    let answers = futures_join(calls).await;
    assert!(
        answers.iter().all(|a| a == &answers[0] && a.0 == 200),
        "{answers:?}"
    );
    assert_eq!(handle.effects("/payments/refunds").len(), 1);
    handle.stop().await.unwrap();
}

/// Runs the futures at once on the test's runtime.
async fn futures_join<F: Future<Output = T> + Send + 'static, T: Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<T> {
    let tasks: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}
