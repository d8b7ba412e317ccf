//! HMAC-SHA256 signatures under named keys: the one rule for everything
//! ordermq signs or checks — callbacks it receives (payment gateway,
//! carrier), requests it sends to third parties, and the events it publishes.
//!
//! Why named keys: a secret must be replaceable without a window in which
//! good messages are refused. A [`Keyring`] holds several keys at once; the
//! first signs, every one verifies. Rotation is: add the new key second,
//! deploy, move it first, deploy, drop the old one. A signature travels with
//! the id of its key, so a verifier never has to try every key.
//!
//! What is signed is `context "." body`, where `context` is a timestamp (for
//! HTTP) or an event id (for messages). A context never holds a `.`: then
//! no other split of the same bytes into context and body exists.
//!
//! Pure computation, no I/O: the clock is the caller's ([`check_freshness`]).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

type HmacSha256 = Hmac<Sha256>;

/// The longest key id accepted: ids travel in headers and message properties.
pub const MAX_KEY_ID_LEN: usize = 64;

/// One named secret.
#[derive(Clone)]
struct SigningKey {
    id: String,
    secret: Arc<[u8]>,
}

/// Several named secrets: the first signs, any of them verifies.
#[derive(Clone)]
pub struct Keyring {
    keys: Vec<SigningKey>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("Keyring")
            .field("key_ids", &ids)
            .finish_non_exhaustive()
    }
}

/// A keyring that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyringError {
    /// No key at all.
    #[error("no signing key")]
    Empty,
    /// A key id is empty, too long, or holds something other than
    /// `[A-Za-z0-9_-]`.
    #[error("key id {0:?}: use 1 to 64 of A-Z a-z 0-9 _ -")]
    BadKeyId(String),
    /// Two keys share an id.
    #[error("key id {0:?} is used twice")]
    DuplicateKeyId(String),
    /// A key's secret is empty (anyone could then sign).
    #[error("key {0:?} has an empty secret")]
    EmptySecret(String),
}

/// A signature that does not hold.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SignatureError {
    /// No signature came with the message.
    #[error("the signature is missing")]
    Missing,
    /// The signature names a key this keyring does not hold (never held it,
    /// or it was rotated out).
    #[error("unknown signing key {0:?}")]
    UnknownKey(String),
    /// The signature is not the one of this message under the named key.
    #[error("the signature does not match")]
    Mismatch,
    /// The signed timestamp is too far from now.
    #[error("the signature is {age_ms} ms from now; at most {window_ms} ms are accepted")]
    Stale {
        /// How far the timestamp is from now (either way), in milliseconds.
        age_ms: i64,
        /// The accepted distance, in milliseconds.
        window_ms: i64,
    },
}

/// A signature and the id of the key that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The key's id.
    pub key_id: String,
    /// The HMAC-SHA256, lowercase hex.
    pub hex: String,
}

fn valid_key_id(id: &str) -> bool {
    (1..=MAX_KEY_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Keyring {
    /// A keyring of `(id, secret)` pairs; the first signs.
    ///
    /// # Errors
    ///
    /// A [`KeyringError`] if there is no key, an id is malformed or repeated,
    /// or a secret is empty.
    pub fn new<I, S>(keys: I) -> Result<Self, KeyringError>
    where
        I: IntoIterator<Item = (String, S)>,
        S: AsRef<[u8]>,
    {
        let mut ring = Vec::new();
        for (id, secret) in keys {
            if !valid_key_id(&id) {
                return Err(KeyringError::BadKeyId(id));
            }
            if ring.iter().any(|k: &SigningKey| k.id == id) {
                return Err(KeyringError::DuplicateKeyId(id));
            }
            if secret.as_ref().is_empty() {
                return Err(KeyringError::EmptySecret(id));
            }
            ring.push(SigningKey {
                id,
                secret: secret.as_ref().into(),
            });
        }
        if ring.is_empty() {
            return Err(KeyringError::Empty);
        }
        Ok(Self { keys: ring })
    }

    /// The id of the key that signs.
    pub fn signing_key_id(&self) -> &str {
        &self.keys[0].id
    }

    /// The ids of every key, the signing one first.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    /// Whether this keyring holds a key with `secret` (to refuse a known
    /// development secret outside development).
    pub fn holds_secret(&self, secret: &[u8]) -> bool {
        self.keys.iter().any(|k| &*k.secret == secret)
    }

    fn mac(key: &SigningKey, context: &str, body: &[u8]) -> HmacSha256 {
        assert!(
            !context.contains('.'),
            "a signed context never holds a '.' (got {context:?})"
        );
        let mut mac =
            HmacSha256::new_from_slice(&key.secret).expect("HMAC accepts keys of any length");
        mac.update(context.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// Signs `context "." body` with the signing key.
    ///
    /// # Panics
    ///
    /// If `context` holds a `.` (timestamps and ordermq's event ids never do).
    pub fn sign(&self, context: &str, body: &[u8]) -> Signature {
        let key = &self.keys[0];
        Signature {
            key_id: key.id.clone(),
            hex: hex::encode(Self::mac(key, context, body).finalize().into_bytes()),
        }
    }

    /// Checks `signature_hex` (either case) over `context "." body` under
    /// the key named `key_id`. Comparison is constant-time.
    ///
    /// # Errors
    ///
    /// - [`SignatureError::Missing`] if `signature_hex` is `None` or empty.
    /// - [`SignatureError::UnknownKey`] if no key has this id.
    /// - [`SignatureError::Mismatch`] if the signature is not hex or not the
    ///   right one (a `context` with a `.` never matches).
    pub fn verify(
        &self,
        key_id: &str,
        context: &str,
        body: &[u8],
        signature_hex: Option<&str>,
    ) -> Result<(), SignatureError> {
        let signature = match signature_hex.map(str::trim) {
            None | Some("") => return Err(SignatureError::Missing),
            Some(s) => s,
        };
        let key = self
            .keys
            .iter()
            .find(|k| k.id == key_id)
            .ok_or_else(|| SignatureError::UnknownKey(key_id.to_owned()))?;
        if context.contains('.') {
            return Err(SignatureError::Mismatch);
        }
        let bytes = hex::decode(signature).map_err(|_| SignatureError::Mismatch)?;
        Self::mac(key, context, body)
            .verify_slice(&bytes)
            .map_err(|_| SignatureError::Mismatch)
    }
}

/// Whether a signed timestamp (ms since the epoch) is within `window` of
/// `now_ms`, either way (a sender's clock may run ahead).
///
/// # Errors
///
/// [`SignatureError::Stale`] if it is not.
pub fn check_freshness(
    timestamp_ms: i64,
    now_ms: i64,
    window: Duration,
) -> Result<(), SignatureError> {
    let age_ms = now_ms.saturating_sub(timestamp_ms).saturating_abs();
    let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    if age_ms <= window_ms {
        Ok(())
    } else {
        Err(SignatureError::Stale { age_ms, window_ms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(keys: &[(&str, &str)]) -> Keyring {
        Keyring::new(keys.iter().map(|(id, s)| (id.to_string(), s.as_bytes()))).unwrap()
    }

    #[test]
    fn the_first_key_signs_and_every_key_verifies() {
        let old = ring(&[("k1", "old-secret")]);
        let rotating = ring(&[("k2", "new-secret"), ("k1", "old-secret")]);
        let signed_old = old.sign("1700000000000", b"{}");
        assert_eq!(signed_old.key_id, "k1");
        rotating
            .verify("k1", "1700000000000", b"{}", Some(&signed_old.hex))
            .expect("the old key still verifies during rotation");
        let signed_new = rotating.sign("1700000000000", b"{}");
        assert_eq!(signed_new.key_id, "k2");
        assert_eq!(
            old.verify("k2", "1700000000000", b"{}", Some(&signed_new.hex)),
            Err(SignatureError::UnknownKey("k2".into()))
        );
        let rotated_out = ring(&[("k2", "new-secret")]);
        assert_eq!(
            rotated_out.verify("k1", "1700000000000", b"{}", Some(&signed_old.hex)),
            Err(SignatureError::UnknownKey("k1".into()))
        );
    }

    #[test]
    fn tampering_with_context_body_or_signature_is_refused() {
        let keys = ring(&[("k1", "secret")]);
        let s = keys.sign("OrderPaid:O1", br#"{"amount":100}"#);
        assert!(
            keys.verify(
                "k1",
                "OrderPaid:O1",
                br#"{"amount":100}"#,
                Some(&s.hex.to_uppercase())
            )
            .is_ok()
        );
        for (context, body, signature) in [
            (
                "OrderPaid:O2",
                &br#"{"amount":100}"#[..],
                Some(s.hex.as_str()),
            ),
            (
                "OrderPaid:O1",
                &br#"{"amount":999}"#[..],
                Some(s.hex.as_str()),
            ),
            ("OrderPaid:O1", &br#"{"amount":100}"#[..], Some("zz")),
            (
                "OrderPaid",
                &b"O1.{\"amount\":100}"[..],
                Some(s.hex.as_str()),
            ),
        ] {
            assert_eq!(
                keys.verify("k1", context, body, signature),
                Err(SignatureError::Mismatch),
                "{context} {body:?}"
            );
        }
        assert_eq!(
            keys.verify("k1", "OrderPaid:O1", b"{}", None),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            keys.verify("k1", "a.b", b"{}", Some(&s.hex)),
            Err(SignatureError::Mismatch),
            "a context with a '.' never verifies"
        );
    }

    #[test]
    fn the_signed_text_is_context_dot_body() {
        // What a provider or a consumer in another language computes: the
        // HMAC-SHA256 of `1700000000000.{"a":1}` under the shared secret.
        let keys = ring(&[("k", "Jefe")]);
        let mut mac = HmacSha256::new_from_slice(b"Jefe").unwrap();
        mac.update(br#"1700000000000.{"a":1}"#);
        let expected = hex::encode(mac.finalize().into_bytes());
        assert_eq!(keys.sign("1700000000000", br#"{"a":1}"#).hex, expected);
    }

    #[test]
    fn bad_keyrings_are_refused() {
        let none: Vec<(String, &[u8])> = Vec::new();
        assert_eq!(Keyring::new(none).unwrap_err(), KeyringError::Empty);
        assert_eq!(
            Keyring::new([("a b".to_owned(), b"s")]).unwrap_err(),
            KeyringError::BadKeyId("a b".into())
        );
        assert_eq!(
            Keyring::new([("k".to_owned(), b"s"), ("k".to_owned(), b"t")]).unwrap_err(),
            KeyringError::DuplicateKeyId("k".into())
        );
        assert_eq!(
            Keyring::new([("k".to_owned(), b"")]).unwrap_err(),
            KeyringError::EmptySecret("k".into())
        );
        let keys = ring(&[("k", "dev")]);
        assert!(keys.holds_secret(b"dev"));
        assert!(!format!("{keys:?}").contains("dev\""), "{keys:?}");
    }

    #[test]
    fn freshness_is_a_window_either_way() {
        let window = Duration::from_secs(300);
        assert!(check_freshness(1_000_000, 1_000_000 + 300_000, window).is_ok());
        assert!(check_freshness(1_000_000 + 300_000, 1_000_000, window).is_ok());
        assert_eq!(
            check_freshness(1_000_000, 1_000_000 + 300_001, window),
            Err(SignatureError::Stale {
                age_ms: 300_001,
                window_ms: 300_000
            })
        );
        assert!(check_freshness(i64::MIN, i64::MAX, window).is_err());
    }
}
