//! Signed callbacks from third parties (the payment gateway, carriers).
//!
//! Why: a callback is the only way a payment or a shipment reaches ordermq
//! without a person's credential, so its signature is all that separates a
//! real `PAID` from a forged one. The rule is the domain's one signing rule
//! ([`ordermq_domain::signing`]); this module only carries it over HTTP:
//!
//! - `X-Key-Id`: which key of the ring signed (optional; `default`, the id a
//!   single configured secret gets);
//! - `X-Timestamp`: milliseconds since the epoch, at most the window
//!   (`callback_max_age`) from ordermq's clock either way, so a captured
//!   callback cannot be replayed later;
//! - `X-Signature`: hex HMAC-SHA256 over `timestamp "." raw body`.
//!
//! The signature is checked before the freshness: only an authentic but
//! old callback is told `SIGNATURE_EXPIRED`; anything forged is
//! `INVALID_SIGNATURE`. Comparison is constant-time (in [`Keyring::verify`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use ordermq_domain::signing::{Keyring, SignatureError, check_freshness};

/// The signature header: hex HMAC-SHA256 over `timestamp "." body`.
pub const SIGNATURE_HEADER: &str = "x-signature";
/// The header naming the key that signed (optional).
pub const KEY_ID_HEADER: &str = "x-key-id";
/// The header with the signing time, milliseconds since the epoch.
pub const TIMESTAMP_HEADER: &str = "x-timestamp";
/// The key id of a single configured secret, and of a callback without `X-Key-Id`.
pub const DEFAULT_KEY_ID: &str = "default";
/// How far a callback's timestamp may be from now unless configured.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(5 * 60);

/// Milliseconds since the epoch, by this machine's clock.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The three headers of a signed callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    /// `X-Key-Id`.
    pub key_id: String,
    /// `X-Timestamp` (ms since the epoch, as text).
    pub timestamp: String,
    /// `X-Signature` (lowercase hex).
    pub signature: String,
}

impl SignedHeaders {
    /// Header names and values, to add to a request.
    pub fn pairs(&self) -> [(&'static str, &str); 3] {
        [
            (KEY_ID_HEADER, self.key_id.as_str()),
            (TIMESTAMP_HEADER, self.timestamp.as_str()),
            (SIGNATURE_HEADER, self.signature.as_str()),
        ]
    }
}

/// One party's callback keys and the accepted clock window: verifies what
/// ordermq receives, and signs what tests and tools send.
#[derive(Debug, Clone)]
pub struct CallbackSigner {
    keys: Keyring,
    max_age: Duration,
}

impl CallbackSigner {
    /// Verifies with every key of `keys`, signs with its first.
    pub fn new(keys: Keyring, max_age: Duration) -> Self {
        Self { keys, max_age }
    }

    /// A one-key ring with id [`DEFAULT_KEY_ID`] and the default window.
    ///
    /// # Panics
    ///
    /// If `secret` is empty (no keyring holds an empty secret).
    pub fn from_secret(secret: &[u8]) -> Self {
        let keys = Keyring::new([(DEFAULT_KEY_ID.to_owned(), secret)])
            .expect("a non-empty secret makes a keyring");
        Self::new(keys, DEFAULT_MAX_AGE)
    }

    /// The keys.
    pub fn keyring(&self) -> &Keyring {
        &self.keys
    }

    /// The accepted distance between a callback's timestamp and now.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// The headers of `body` signed now with the signing key.
    pub fn sign(&self, body: &[u8]) -> SignedHeaders {
        self.sign_at(body, now_millis())
    }

    /// The headers of `body` signed as of `timestamp_ms` (an old timestamp
    /// makes an expired callback).
    pub fn sign_at(&self, body: &[u8], timestamp_ms: i64) -> SignedHeaders {
        let timestamp = timestamp_ms.to_string();
        let signature = self.keys.sign(&timestamp, body);
        SignedHeaders {
            key_id: signature.key_id,
            timestamp,
            signature: signature.hex,
        }
    }

    /// Checks a callback's headers over its raw body against `now_ms`.
    ///
    /// # Errors
    ///
    /// - [`SignatureError::Missing`] without `X-Signature` or `X-Timestamp`.
    /// - [`SignatureError::UnknownKey`] if `X-Key-Id` names no key of the ring.
    /// - [`SignatureError::Mismatch`] if the timestamp is not a whole number
    ///   or the signature is not the body's under that key and timestamp.
    /// - [`SignatureError::Stale`] if all of that holds but the timestamp is
    ///   outside the window.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now_ms: i64,
    ) -> Result<(), SignatureError> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let signature = header(SIGNATURE_HEADER);
        let key_id = header(KEY_ID_HEADER)
            .map(str::trim)
            .unwrap_or(DEFAULT_KEY_ID);
        let timestamp = header(TIMESTAMP_HEADER)
            .map(str::trim)
            .ok_or(SignatureError::Missing)?;
        let valid_timestamp =
            (1..=18).contains(&timestamp.len()) && timestamp.bytes().all(|b| b.is_ascii_digit());
        if !valid_timestamp {
            // Checked first so that the unverified text never becomes a
            // signed context (a '.' would be refused there anyway).
            return match signature {
                None | Some("") => Err(SignatureError::Missing),
                Some(_) => Err(SignatureError::Mismatch),
            };
        }
        self.keys.verify(key_id, timestamp, body, signature)?;
        let at: i64 = timestamp.parse().map_err(|_| SignatureError::Mismatch)?;
        check_freshness(at, now_ms, self.max_age)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(signed: &SignedHeaders) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in signed.pairs() {
            map.insert(name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn a_fresh_signature_holds_and_tampering_does_not() {
        let signer = CallbackSigner::from_secret(b"secret");
        let body = br#"{"order_id":"O1","payment_id":"p1","amount":100}"#;
        let signed = signer.sign_at(body, NOW);
        assert_eq!(signed.key_id, DEFAULT_KEY_ID);
        assert_eq!(signer.verify(&headers(&signed), body, NOW + 1_000), Ok(()));
        assert_eq!(
            signer.verify(&headers(&signed), b"{}", NOW),
            Err(SignatureError::Mismatch)
        );
        let mut later = signed.clone();
        later.timestamp = (NOW + 1).to_string();
        assert_eq!(
            signer.verify(&headers(&later), body, NOW),
            Err(SignatureError::Mismatch),
            "the timestamp is signed"
        );
        let mut no_key_id = headers(&signed);
        no_key_id.remove(KEY_ID_HEADER);
        assert_eq!(
            signer.verify(&no_key_id, body, NOW),
            Ok(()),
            "default key id"
        );
        let mut no_timestamp = headers(&signed);
        no_timestamp.remove(TIMESTAMP_HEADER);
        assert_eq!(
            signer.verify(&no_timestamp, body, NOW),
            Err(SignatureError::Missing)
        );
        let mut dotted = signed.clone();
        dotted.timestamp = "1.5".into();
        assert_eq!(
            signer.verify(&headers(&dotted), body, NOW),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn an_old_or_future_timestamp_is_stale_only_when_authentic() {
        let signer = CallbackSigner::from_secret(b"secret");
        let old = signer.sign_at(b"{}", NOW - 300_001);
        assert!(matches!(
            signer.verify(&headers(&old), b"{}", NOW),
            Err(SignatureError::Stale { .. })
        ));
        let future = signer.sign_at(b"{}", NOW + 300_001);
        assert!(matches!(
            signer.verify(&headers(&future), b"{}", NOW),
            Err(SignatureError::Stale { .. })
        ));
        let forged = CallbackSigner::from_secret(b"other").sign_at(b"{}", NOW - 300_001);
        assert_eq!(
            signer.verify(&headers(&forged), b"{}", NOW),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn the_second_key_verifies_and_a_rotated_out_one_does_not() {
        let ring = |keys: &[(&str, &str)]| {
            Keyring::new(keys.iter().map(|(id, s)| (id.to_string(), s.as_bytes()))).unwrap()
        };
        let rotating = CallbackSigner::new(ring(&[("k2", "new"), ("k1", "old")]), DEFAULT_MAX_AGE);
        let old_sender = CallbackSigner::new(ring(&[("k1", "old")]), DEFAULT_MAX_AGE);
        let signed = old_sender.sign_at(b"{}", NOW);
        assert_eq!(rotating.verify(&headers(&signed), b"{}", NOW), Ok(()));
        let rotated_out = CallbackSigner::new(ring(&[("k2", "new")]), DEFAULT_MAX_AGE);
        assert_eq!(
            rotated_out.verify(&headers(&signed), b"{}", NOW),
            Err(SignatureError::UnknownKey("k1".into()))
        );
    }
}
