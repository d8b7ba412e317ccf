//! Messages that fail verification: why, what is kept of them, and the check.
//!
//! Why: anyone who can reach the broker can publish to ordermq's topics (in
//! production the cluster is shared with other teams' producers). Every
//! event ordermq publishes carries an HMAC of its id and body under the event
//! keys ([`crate::signing`]); every consumer group checks it before its
//! handler sees the message. A message that fails is *parked*: acknowledged
//! (so never retried and never applied), recorded with its reason, counted
//! and logged. It is not dead-lettered: a DLQ holds messages worth replaying
//! once a cause is fixed, and no fix makes a forgery worth applying.
//!
//! Pure rules, no I/O: the `ParkingLot` port (in `ports`, above this
//! module) records a [`ParkedMessage`].

use std::fmt;

use serde::Serialize;

use crate::signing::{Keyring, SignatureError};

/// Why a message was parked instead of applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unverified {
    /// The message carries no event id (the signed context).
    NoEventId,
    /// The signature is missing, names an unknown key, or does not match.
    Signature(SignatureError),
}

impl Unverified {
    /// A stable, machine-readable reason: `no_event_id`,
    /// `missing_signature`, `unknown_key` or `signature_mismatch`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoEventId => "no_event_id",
            Self::Signature(SignatureError::Missing) => "missing_signature",
            Self::Signature(SignatureError::UnknownKey(_)) => "unknown_key",
            // Events carry no timestamp; a stale signature cannot occur.
            Self::Signature(SignatureError::Mismatch | SignatureError::Stale { .. }) => {
                "signature_mismatch"
            }
        }
    }
}

impl fmt::Display for Unverified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoEventId => f.write_str("the message carries no event id"),
            Self::Signature(e) => e.fmt(f),
        }
    }
}

/// Checks an event message: its signature (hex, under the key named
/// `key_id`) must be the HMAC of `event_id "." body` under that key.
///
/// # Errors
///
/// - [`Unverified::NoEventId`] if `event_id` is missing or empty.
/// - [`Unverified::Signature`] with [`SignatureError::Missing`] if there is
///   no signature, [`SignatureError::UnknownKey`] if `key_id` is missing or
///   names no key of `keys`, [`SignatureError::Mismatch`] otherwise.
pub fn verify_event(
    keys: &Keyring,
    event_id: Option<&str>,
    key_id: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
) -> Result<(), Unverified> {
    let event_id = match event_id {
        Some(id) if !id.is_empty() => id,
        _ => return Err(Unverified::NoEventId),
    };
    keys.verify(key_id.unwrap_or(""), event_id, body, signature)
        .map_err(Unverified::Signature)
}

/// The reason of a message that passed verification but whose body is not
/// an event this version can read: every redelivery would fail the same way,
/// so the group that received it parks it on its own and applies the rest
/// of its batch.
pub const UNDECODABLE: &str = "undecodable";

/// The longest body kept of a parked message (the rest is cut).
pub const MAX_PARKED_BODY: usize = 4_096;

/// A message a consumer group refused, as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParkedMessage {
    /// The consumer group that received it.
    pub group: String,
    /// The broker's message id (the producer's unique key when it has one).
    pub msg_id: String,
    /// The topic it came on.
    pub topic: String,
    /// Its tag.
    pub tag: String,
    /// Its key (the order id, for a copied event).
    pub key: String,
    /// The event id it claims, if any.
    pub event_id: Option<String>,
    /// The signing key it names, if any.
    pub key_id: Option<String>,
    /// [`Unverified::code`].
    pub reason: String,
    /// [`Unverified`]'s text.
    pub detail: String,
    /// Its body as text (invalid UTF-8 replaced), at most [`MAX_PARKED_BODY`] bytes.
    pub body: String,
    /// When it was parked (epoch ms).
    pub parked_at: i64,
}

/// `text` cut to at most `max` bytes, on a character boundary. Everything a
/// parked message keeps comes from whoever sent it: the store's columns have
/// limits.
pub fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keyring {
        Keyring::new([("k1".to_owned(), b"secret")]).unwrap()
    }

    #[test]
    fn an_event_verifies_only_with_its_id_body_and_a_known_key() {
        let keys = keys();
        let body = br#"{"type":"OrderPaid","amount":100}"#;
        let s = keys.sign("OrderPaid:O1", body);
        let ok = verify_event(&keys, Some("OrderPaid:O1"), Some("k1"), Some(&s.hex), body);
        assert_eq!(ok, Ok(()));
        let cases = [
            (
                None,
                Some("k1"),
                Some(s.hex.as_str()),
                &body[..],
                "no_event_id",
            ),
            (Some(""), Some("k1"), Some(&s.hex), &body[..], "no_event_id"),
            (
                Some("OrderPaid:O1"),
                Some("k1"),
                None,
                &body[..],
                "missing_signature",
            ),
            (
                Some("OrderPaid:O1"),
                None,
                Some(&s.hex),
                &body[..],
                "unknown_key",
            ),
            (
                Some("OrderPaid:O1"),
                Some("k9"),
                Some(&s.hex),
                &body[..],
                "unknown_key",
            ),
            (
                Some("OrderPaid:O2"),
                Some("k1"),
                Some(&s.hex),
                &body[..],
                "signature_mismatch",
            ),
            (
                Some("OrderPaid:O1"),
                Some("k1"),
                Some(&s.hex),
                &br#"{"type":"OrderPaid","amount":999}"#[..],
                "signature_mismatch",
            ),
            (
                Some("a.b"),
                Some("k1"),
                Some(&s.hex),
                &body[..],
                "signature_mismatch",
            ),
        ];
        for (event_id, key_id, signature, body, code) in cases {
            let refused = verify_event(&keys, event_id, key_id, signature, body).unwrap_err();
            assert_eq!(refused.code(), code, "{event_id:?} {key_id:?}");
            assert!(!refused.to_string().is_empty());
        }
    }

    #[test]
    fn clipping_keeps_whole_characters() {
        assert_eq!(clip("abc", 5), "abc");
        assert_eq!(clip("abcdef", 3), "abc");
        assert_eq!(clip("aé", 2), "a");
    }
}
