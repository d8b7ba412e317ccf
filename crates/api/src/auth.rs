//! Who is calling: bearer tokens with a name and a role, and the dashboard's
//! session cookie.
//!
//! Why: refunds, retries, order and user reads and the operators' counters
//! must not be open to whoever reaches the port (a shopper could refund a
//! delivered order and keep the goods, or read anyone's SMS and coupons).
//! Callers present `Authorization: Bearer <token>`; configuration holds only
//! each token's SHA-256 (`name:role:sha256hex`), so a leaked configuration
//! file holds no usable credential. A presented token is hashed and compared
//! with every configured hash in constant time, so neither timing nor the
//! order of the list tells how close a guess was.
//!
//! Roles: `shop` (the shop's backend: create orders, read orders, users and
//! the catalog) and `operator` (refunds, refund retries, the counters, the
//! dashboard — and everything `shop` may, so one operator token is enough
//! for support work).
//!
//! The dashboard signs in with an operator token once and then carries a
//! session cookie (see [`crate::session`]).

use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::session::{MAX_TOKEN_NAME_LEN, Sessions, valid_token_name};

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// The shop's backend: orders, users, the catalog.
    Shop,
    /// Support and operations: everything `shop` may, plus refunds,
    /// retries, counters and the dashboard.
    Operator,
}

impl Role {
    /// `"shop"` or `"operator"`, as configured.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shop => "shop",
            Self::Operator => "operator",
        }
    }

    /// Parses `shop` or `operator`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "shop" => Some(Self::Shop),
            "operator" => Some(Self::Operator),
            _ => None,
        }
    }

    /// Whether this role may use a route that needs `needed`.
    pub fn may(self, needed: Role) -> bool {
        self >= needed
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated caller, as handlers see it (a request extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's configured name: recorded with what an operator asks for.
    pub name: String,
    /// What it may do.
    pub role: Role,
}

/// The SHA-256 of a token, as configured (`sha256hex`).
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Equality of two hashes that takes the same time wherever they differ.
fn same_hash(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A new random token (256 bits from the OS, hex), for `ordermq token`.
///
/// # Errors
///
/// If the operating system has no randomness to give.
pub fn generate_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("omq_{}", hex::encode(bytes)))
}

/// One configured token: its name, role and SHA-256.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenEntry {
    name: String,
    role: Role,
    hash: [u8; 32],
}

impl fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.role)
    }
}

impl TokenEntry {
    /// An entry for `token` itself (demo tokens, tests).
    ///
    /// # Errors
    ///
    /// If `name` is not a valid token name.
    pub fn for_token(name: &str, role: Role, token: &str) -> Result<Self, String> {
        Self::new(name, role, hash_token(token))
    }

    fn new(name: &str, role: Role, hash: [u8; 32]) -> Result<Self, String> {
        if !valid_token_name(name) {
            return Err(format!(
                "token name {name:?}: use 1 to {MAX_TOKEN_NAME_LEN} of A-Z a-z 0-9 _ -"
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            role,
            hash,
        })
    }

    /// Parses `name:role:sha256hex`.
    ///
    /// # Errors
    ///
    /// A message naming what is wrong (never echoing the hash).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = text.trim().splitn(3, ':');
        let (Some(name), Some(role), Some(hash)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err("each token is name:role:sha256hex".to_owned());
        };
        let role = Role::parse(role.trim())
            .ok_or_else(|| format!("token {name:?}: role {role:?} is not shop or operator"))?;
        let hash: [u8; 32] = hex::decode(hash.trim())
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| {
                format!(
                    "token {name:?}: the third part is the token's SHA-256, 64 hex digits \
                     (`ordermq token` prints the entry)"
                )
            })?;
        Self::new(name.trim(), role, hash)
    }

    /// The entry as configured: `name:role:sha256hex`.
    pub fn config_entry(&self) -> String {
        format!("{}:{}:{}", self.name, self.role, hex::encode(self.hash))
    }

    /// The token's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The token's role.
    pub fn role(&self) -> Role {
        self.role
    }
}

/// Every accepted token. `Debug` shows names and roles only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    entries: Vec<TokenEntry>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.entries).finish()
    }
}

impl Tokens {
    /// A set of tokens.
    ///
    /// # Errors
    ///
    /// If two entries share a name (actions are recorded by name).
    pub fn new(entries: Vec<TokenEntry>) -> Result<Self, String> {
        for (i, entry) in entries.iter().enumerate() {
            if entries[..i].iter().any(|e| e.name == entry.name) {
                return Err(format!("token name {:?} is used twice", entry.name));
            }
        }
        Ok(Self { entries })
    }

    /// Whether no token is configured.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries.
    pub fn entries(&self) -> &[TokenEntry] {
        &self.entries
    }

    /// The caller a presented token belongs to. Every entry is compared,
    /// each in constant time.
    pub fn caller(&self, token: &str) -> Option<Caller> {
        let presented = hash_token(token);
        let mut found = None;
        for entry in &self.entries {
            if same_hash(&presented, &entry.hash) && found.is_none() {
                found = Some(entry);
            }
        }
        found.map(|entry| Caller {
            name: entry.name.clone(),
            role: entry.role,
        })
    }

    /// The caller a token name belongs to (a signed-in session).
    pub fn by_name(&self, name: &str) -> Option<Caller> {
        self.entries
            .iter()
            .find(|entry| entry.name == name)
            .map(|entry| Caller {
                name: entry.name.clone(),
                role: entry.role,
            })
    }
}

/// The demo shop token: accepted only when no token is configured and
/// ordermq listens on loopback (or `dev_mode` is set). Public, never safe.
pub const DEMO_SHOP_TOKEN: &str = "demo-shop-token";
/// The demo operator token; as [`DEMO_SHOP_TOKEN`].
pub const DEMO_OPERATOR_TOKEN: &str = "demo-operator-token";

/// The demo tokens, named `demo-shop` and `demo-operator`.
pub fn demo_tokens() -> Tokens {
    Tokens::new(vec![
        TokenEntry::for_token("demo-shop", Role::Shop, DEMO_SHOP_TOKEN)
            .expect("a valid token name"),
        TokenEntry::for_token("demo-operator", Role::Operator, DEMO_OPERATOR_TOKEN)
            .expect("a valid token name"),
    ])
    .expect("distinct names")
}

/// Everything the access checks need: the tokens and the sessions.
#[derive(Debug, Clone)]
pub struct Auth {
    pub(crate) tokens: Arc<Tokens>,
    pub(crate) sessions: Sessions,
}

impl Auth {
    /// Checks `tokens`, and signs sessions with `sessions`.
    pub fn new(tokens: Tokens, sessions: Sessions) -> Self {
        Self {
            tokens: Arc::new(tokens),
            sessions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_parses_and_prints_without_its_hash_in_debug() {
        let hash = hex::encode(hash_token("t0ken"));
        let entry = TokenEntry::parse(&format!("backend:shop:{hash}")).unwrap();
        assert_eq!(entry.config_entry(), format!("backend:shop:{hash}"));
        assert_eq!(format!("{entry:?}"), "backend:shop");
        for bad in [
            "backend:shop",
            "backend:admin:00",
            &format!("back end:shop:{hash}"),
            "backend:shop:zz",
        ] {
            let error = TokenEntry::parse(bad).unwrap_err();
            assert!(!error.contains(&hash), "{error}");
        }
    }

    #[test]
    fn a_token_finds_its_caller_and_nothing_else_does() {
        let tokens = Tokens::new(vec![
            TokenEntry::for_token("shop1", Role::Shop, "s-token").unwrap(),
            TokenEntry::for_token("ops", Role::Operator, "o-token").unwrap(),
        ])
        .unwrap();
        assert_eq!(
            tokens.caller("o-token"),
            Some(Caller {
                name: "ops".into(),
                role: Role::Operator
            })
        );
        assert_eq!(tokens.caller("s-token").unwrap().role, Role::Shop);
        assert_eq!(tokens.caller("o-token "), None);
        assert_eq!(tokens.caller(""), None);
        assert!(
            Tokens::new(vec![
                TokenEntry::for_token("a", Role::Shop, "x").unwrap(),
                TokenEntry::for_token("a", Role::Operator, "y").unwrap(),
            ])
            .is_err()
        );
    }

    #[test]
    fn operator_may_do_what_shop_may_and_not_the_reverse() {
        assert!(Role::Operator.may(Role::Shop));
        assert!(Role::Operator.may(Role::Operator));
        assert!(Role::Shop.may(Role::Shop));
        assert!(!Role::Shop.may(Role::Operator));
    }

    #[test]
    fn generated_tokens_differ() {
        let (a, b) = (generate_token().unwrap(), generate_token().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 64);
    }
}
