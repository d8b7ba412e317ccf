//! Settings that must never be printed: the callback secrets, and the
//! database URL's password.
//!
//! Why a type: `Config` is `Debug`, is logged, and is listed by `ordermq
//! config`. A secret held in a plain `String` leaks the first time anyone
//! prints the struct. [`Secret`] has no `Display`, redacts its `Debug` and
//! `Serialize`, and hands out its text only through [`Secret::expose`], so
//! every use of the value is visible in the code.

use std::fmt;

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
    const ACCEPTS: &'static str = "sqlite://PATH or postgres://USER:PASS@HOST/DB";
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
