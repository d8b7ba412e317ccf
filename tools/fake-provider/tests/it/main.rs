//! The fake provider as ordermq's adapters and the fault suite see it: over
//! real HTTP (port 0), signed requests checked, idempotency keys kept across
//! a restart and a `kill -9`, the binary's first line its address.
//!
//! - [`protocol`]: the checks and answers of docs/gateways.md, in-process.
//! - [`binary`]: the `ordermq-fake-provider` program killed and restarted.

mod binary;
mod protocol;

use ordermq_domain::signing::Keyring;

/// The key the tests sign with.
const KEY: (&str, &str) = ("k1", "provider-test-secret");

fn keyring() -> Keyring {
    Keyring::new([(KEY.0.to_owned(), KEY.1.as_bytes())]).unwrap()
}

/// Posts `body` to `url` signed at `timestamp` (ms) with `keys`, under `key`.
async fn post(
    url: &str,
    keys: &Keyring,
    timestamp: i64,
    key: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let body = body.to_string();
    let timestamp = timestamp.to_string();
    let signature = keys.sign(&timestamp, body.as_bytes());
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .header("x-ordermq-key-id", signature.key_id)
        .header("x-ordermq-timestamp", timestamp)
        .header("x-ordermq-signature", signature.hex)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}
