//! Settings that must never be printed: the callback secrets, signing
//! keyrings, the database URL's password, and the API tokens' hashes.
//!
//! Why a type: `Config` is `Debug`, is logged, and is listed by `ordermq
//! config`. A secret held in a plain `String` leaks the first time anyone
//! prints the struct. [`Secret`] has no `Display`, redacts its `Debug` and
//! `Serialize`, and hands out its text only through [`Secret::expose`], so
//! every use of the value is visible in the code.

use std::fmt;

use ordermq_api::auth::{TokenEntry, Tokens};
use ordermq_domain::signing::Keyring;
use serde::{Serialize, Serializer};

use super::table::{Form, Raw};

/// What a secret prints as.
pub const REDACTED: &str = "[redacted]";

/// A secret string: redacted in `Debug` and `Serialize`, no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for the one place that needs it (a signer).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(secret: &str) -> Self {
        Self::new(secret)
    }
}

impl From<String> for Secret {
    fn from(secret: String) -> Self {
        Self(secret)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({REDACTED})")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

impl Form for Secret {
    type Value = Self;
    const ACCEPTS: &'static str = "text (never printed)";
    const SECRET: bool = true;
    fn parse(raw: Raw<'_>) -> Result<Self, String> {
        raw.text().map(Self::new)
    }
    fn show(_: &Self) -> Option<String> {
        Some("(set)".to_owned())
    }
}

/// Named signing keys, `id:secret` pairs separated by commas (or a TOML
/// array of `"id:secret"` strings): the first signs, all verify (see
/// [`ordermq_domain::signing`]). Printed as the key ids only.
#[derive(Clone)]
pub struct SigningKeys(Keyring);

impl SigningKeys {
    /// The keyring, for the one place that signs or verifies.
    pub fn keyring(&self) -> &Keyring {
        &self.0
    }

    /// Parses `id:secret[,id:secret...]`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let pairs = text
            .split(',')
            .map(str::trim)
            .filter(|pair| !pair.is_empty())
            .map(|pair| match pair.split_once(':') {
                Some((id, secret)) => Ok((id.trim().to_owned(), secret.as_bytes().to_vec())),
                // Never echo the text: it may be a secret without its id.
                None => Err("each key is id:secret (an id, a colon, the secret)".to_owned()),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Keyring::new(pairs).map(Self).map_err(|e| e.to_string())
    }

    fn ids(&self) -> String {
        self.0.key_ids().collect::<Vec<_>>().join(",")
    }
}

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKeys({}: {REDACTED})", self.ids())
    }
}

impl Serialize for SigningKeys {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{}: {REDACTED}", self.ids()))
    }
}

impl Form for SigningKeys {
    type Value = Self;
    const ACCEPTS: &'static str =
        "id:secret[,id:secret...] (the first signs, all verify; secrets never printed)";
    const SECRET: bool = true;
    fn parse(raw: Raw<'_>) -> Result<Self, String> {
        Self::parse(&raw.comma_list()?)
    }
    fn show(value: &Self) -> Option<String> {
        Some(format!("keys {} (secrets not shown)", value.ids()))
    }
}

/// The API's tokens, `name:role:sha256hex` entries separated by commas (or
/// a TOML array of such strings): each token's SHA-256, never the token, so
/// the configuration holds no usable credential. Printed as names and roles
/// only (a hash still lets anyone test guesses offline).
#[derive(Clone, PartialEq, Eq)]
pub struct ApiTokens(Tokens);

impl ApiTokens {
    /// The tokens, for the access checks.
    pub fn tokens(&self) -> &Tokens {
        &self.0
    }

    /// Parses `name:role:sha256hex[,name:role:sha256hex...]`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let entries = text
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(TokenEntry::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if entries.is_empty() {
            return Err("no token: each is name:role:sha256hex".to_owned());
        }
        Tokens::new(entries).map(Self)
    }

    fn names(&self) -> String {
        self.0
            .entries()
            .iter()
            .map(|e| format!("{}:{}", e.name(), e.role()))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiTokens({})", self.names())
    }
}

impl Serialize for ApiTokens {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.names())
    }
}

impl Form for ApiTokens {
    type Value = Self;
    const ACCEPTS: &'static str =
        "name:role:sha256hex[,...] with role shop or operator (`ordermq token` prints an entry)";
    const SECRET: bool = true;
    fn parse(raw: Raw<'_>) -> Result<Self, String> {
        Self::parse(&raw.comma_list()?)
    }
    fn show(value: &Self) -> Option<String> {
        Some(format!("tokens {} (hashes not shown)", value.names()))
    }
}

/// A database URL: printed with its password redacted (`Debug`, `Display`,
/// `Serialize`); [`DatabaseUrl::expose`] gives it whole to the driver.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The URL with its password, for the driver.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for DatabaseUrl {
    fn from(url: &str) -> Self {
        Self(url.to_owned())
    }
}

impl From<String> for DatabaseUrl {
    fn from(url: String) -> Self {
        Self(url)
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&ordermq_store::redact(&self.0))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl Form for DatabaseUrl {
    type Value = Self;
    const ACCEPTS: &'static str =
        "sqlite://PATH, postgres://USER:PASS@HOST/DB or mysql://USER:PASS@HOST/DB";
    const SECRET: bool = true;
    fn parse(raw: Raw<'_>) -> Result<Self, String> {
        raw.text().map(Self::from)
    }
    fn show(value: &Self) -> Option<String> {
        Some(value.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_prints_as_redacted_everywhere() {
        let secret = Secret::new("hunter2-xyz");
        assert_eq!(secret.expose(), "hunter2-xyz");
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert!(!format!("{:?}", Some(&secret)).contains("hunter2"));
        let json = serde_json::to_string(&secret).unwrap();
        assert_eq!(json, format!("\"{REDACTED}\""));
    }

    #[test]
    fn signing_keys_parse_from_text_or_an_array_and_print_ids_only() {
        let keys = SigningKeys::parse("k2:new-secret, k1:old-secret").unwrap();
        assert_eq!(keys.keyring().signing_key_id(), "k2");
        let array: toml::Value = toml::from_str::<toml::Table>(
            r#"k = ["k2:new-secret", "k1:old-secret"]"#,
        )
        .unwrap()["k"]
            .clone();
        let from_toml = <SigningKeys as Form>::parse(Raw::Toml(&array)).unwrap();
        assert_eq!(from_toml.ids(), "k2,k1");
        for printed in [
            format!("{keys:?}"),
            serde_json::to_string(&keys).unwrap(),
            <SigningKeys as Form>::show(&keys).unwrap(),
        ] {
            assert!(
                !printed.contains("secret-") && !printed.contains("new-secret"),
                "{printed}"
            );
            assert!(printed.contains("k2"), "{printed}");
        }
        for bad in ["", "no-colon-here", "k1:", "k1:a,k1:b", "bad id:x"] {
            let error = SigningKeys::parse(bad).unwrap_err();
            assert!(
                !error.contains("no-colon-here"),
                "never echo a secret: {error}"
            );
        }
    }

    #[test]
    fn a_database_url_prints_without_its_password() {
        let url = DatabaseUrl::from("postgres://app:pa55word@db/orders");
        assert_eq!(url.expose(), "postgres://app:pa55word@db/orders");
        for printed in [
            format!("{url}"),
            format!("{url:?}"),
            serde_json::to_string(&url).unwrap(),
        ] {
            assert!(!printed.contains("pa55word"), "{printed}");
            assert!(printed.contains("db/orders"), "{printed}");
        }
    }
}
