//! A fake provider on port 0 with its call log in a temporary directory,
//! and adapter options pointing at it.

use std::time::Duration;

use ordermq_domain::signing::Keyring;
use ordermq_fake_provider::{CallOutcome, CallRecord, Handle, Knobs, Options};
use ordermq_gateways::HttpOptions;

/// The key both sides share.
pub(crate) const KEY_ID: &str = "k1";
const SECRET: &str = "provider-test-secret";

pub(crate) fn keys(id: &str, secret: &str) -> Keyring {
    Keyring::new([(id.to_owned(), secret.as_bytes())]).expect("a valid keyring")
}

/// A running provider; dropped at the end of the test.
pub(crate) struct Provider {
    pub(crate) handle: Handle,
    url: String,
    _dir: tempfile::TempDir,
}

impl Provider {
    pub(crate) async fn start() -> Self {
        Self::with_knobs(Knobs::default()).await
    }

    pub(crate) async fn with_knobs(knobs: Knobs) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let options = Options {
            knobs,
            ..Options::local(keys(KEY_ID, SECRET), dir.path())
        };
        let (addr, handle) = ordermq_fake_provider::spawn(options)
            .await
            .expect("the provider starts");
        Self {
            handle,
            url: format!("http://{addr}"),
            _dir: dir,
        }
    }

    /// Options of an adapter with the shared key.
    pub(crate) fn options(&self, timeout: Duration, retries: u32) -> HttpOptions {
        HttpOptions::new(&self.url, keys(KEY_ID, SECRET), timeout, retries)
    }

    /// Options of an adapter signing with `secret` under `id`.
    pub(crate) fn options_signed_by(&self, id: &str, secret: &str) -> HttpOptions {
        HttpOptions::new(&self.url, keys(id, secret), Duration::from_secs(5), 3)
    }

    pub(crate) fn calls(&self, endpoint: &str) -> Vec<CallRecord> {
        self.handle
            .calls()
            .into_iter()
            .filter(|c| c.endpoint == endpoint)
            .collect()
    }
}

/// What every adapter's tests check of a first, successful call: one call,
/// verified (the provider checked the signature of key `KEY_ID`), one
/// effect, keyed by `key`, whose answer is `reference` in `field`.
pub(crate) fn assert_one_signed_effect(
    provider: &Provider,
    endpoint: &str,
    key: &str,
    field: &str,
    reference: &str,
) {
    let calls = provider.calls(endpoint);
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    assert_eq!(
        (call.status, call.outcome, call.key_id.as_deref()),
        (200, CallOutcome::Effect, Some(KEY_ID))
    );
    assert_eq!(call.idempotency_key.as_deref(), Some(key));
    assert_eq!(
        call.request["idempotency_key"], key,
        "the key is signed too"
    );
    assert_eq!(call.response[field], reference);
}

/// Outage, then a lost answer, then success: the second attempt had the
/// effect, the third got its answer again. Sets the provider up for it.
pub(crate) fn fail_then_lose_the_answer(provider: &Provider) {
    provider.handle.answer_next(503, 1);
    provider.handle.lose_next_answers(1);
}

/// Knobs of a provider that hangs on every call.
pub(crate) fn hanging() -> Knobs {
    Knobs {
        hang_rate: 1.0,
        hang: HANG,
        ..Knobs::default()
    }
}

/// How long a hanging provider hangs: far longer than any adapter waits.
pub(crate) const HANG: Duration = Duration::from_secs(60);
