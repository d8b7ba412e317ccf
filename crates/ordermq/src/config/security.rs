//! The credentials ordermq accepts, resolved once at start: the payment
//! gateway's and the carriers' callback keys, and the API's tokens — and the
//! refusal to start with public ones where others can reach ordermq.
//!
//! Why a refusal and not a warning: a warning in a log nobody reads left
//! production open to forged payments. The public development secrets and
//! demo tokens exist so that the quick start is two commands; they are
//! accepted only while every listener is on loopback, or with `dev_mode`
//! set explicitly. An empty secret is refused everywhere (anyone could sign).

use std::net::SocketAddr;

use ordermq_api::auth::{DEMO_OPERATOR_TOKEN, DEMO_SHOP_TOKEN, Tokens, demo_tokens};
use ordermq_api::signature::{CallbackSigner, DEFAULT_KEY_ID};
use ordermq_domain::signing::Keyring;
use thiserror::Error;

use super::secret::{Secret, SigningKeys};
use super::{Config, DEV_LOGISTICS_SECRET, DEV_PAYMENT_SECRET};

/// A public credential in use (each is logged at WARN at start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublicCredential {
    /// The public development payment secret.
    PaymentSecret,
    /// The public development carrier secret.
    LogisticsSecret,
    /// The public demo tokens.
    DemoTokens,
}

/// What ordermq accepts, resolved from a [`Config`].
#[derive(Debug, Clone)]
pub struct Security {
    /// Verifies payment-gateway callbacks.
    pub payment: CallbackSigner,
    /// Verifies carrier callbacks.
    pub carrier: CallbackSigner,
    /// The API's tokens.
    pub tokens: Tokens,
    /// The public credentials in use (only on loopback or in dev_mode).
    pub public: Vec<PublicCredential>,
}

/// Why ordermq refuses to start with these credentials.
#[derive(Debug, Error)]
pub enum SecurityError {
    /// A secret is set to the empty string.
    #[error(
        "{key} is empty: anyone could sign {what}. Set {var} to the secret you share with \
         them, or leave it unset to use the public development secret on loopback"
    )]
    EmptySecret {
        /// The key.
        key: &'static str,
        /// Its variable.
        var: &'static str,
        /// What it signs.
        what: &'static str,
    },
    /// A secret and a keyring for the same party are both set.
    #[error(
        "{secret_key} and {keys_key} are both set: set {keys_key} only (the old secret can be \
         one of its keys, as default:<secret>)"
    )]
    Both {
        /// The single secret's key.
        secret_key: &'static str,
        /// The keyring's key.
        keys_key: &'static str,
    },
    /// A public credential would be used on an address others can reach.
    #[error(
        "refusing to start: {what} would be used while listening on {addr}, which is not \
         loopback. {fix} (Only for a development machine: set dev_mode = true, \
         ORDERMQ_DEV_MODE=true.)"
    )]
    Public {
        /// Which credential.
        what: &'static str,
        /// The address others can reach.
        addr: SocketAddr,
        /// What to set instead.
        fix: &'static str,
    },
}

const PAYMENT_FIX: &str = "Set ORDERMQ_PAYMENT_SECRET (or ORDERMQ_PAYMENT_KEYS=id:secret,...) \
     to the secret you share with the payment gateway.";
const LOGISTICS_FIX: &str = "Set ORDERMQ_LOGISTICS_SECRET (or ORDERMQ_LOGISTICS_KEYS=id:secret,...) \
     to the secret you share with the carrier.";
const TOKENS_FIX: &str = "Set ORDERMQ_API_TOKENS to name:role:sha256hex entries; \
     `ordermq token --name NAME --role shop|operator` makes a token and prints its entry.";

/// The ring of one party: its keyring, or its single secret as key
/// `default`, or the public development secret; and whether that is public.
fn callback_ring(
    secret: Option<&Secret>,
    keys: Option<&SigningKeys>,
    names: (&'static str, &'static str, &'static str, &'static str),
    dev_secret: &str,
) -> Result<(Keyring, bool), SecurityError> {
    let (secret_key, keys_key, var, what) = names;
    let ring = match (secret, keys) {
        (Some(_), Some(_)) => {
            return Err(SecurityError::Both {
                secret_key,
                keys_key,
            });
        }
        (None, Some(keys)) => keys.keyring().clone(),
        (Some(secret), None) => Keyring::new([(DEFAULT_KEY_ID.to_owned(), secret.expose())])
            .map_err(|_| SecurityError::EmptySecret {
                key: secret_key,
                var,
                what,
            })?,
        (None, None) => Keyring::new([(DEFAULT_KEY_ID.to_owned(), dev_secret)])
            .expect("the development secret is not empty"),
    };
    let public = ring.holds_secret(dev_secret.as_bytes());
    Ok((ring, public))
}

impl Config {
    /// The first listening address others can reach, if any.
    fn reachable_addr(&self) -> Option<SocketAddr> {
        std::iter::once(self.http_addr)
            .chain(self.operator_http_addr)
            .find(|addr| !addr.ip().is_loopback())
    }

    /// The credentials ordermq accepts with this configuration.
    ///
    /// # Errors
    ///
    /// A [`SecurityError`] when a secret is empty, a party has both a secret
    /// and keys, or a public secret or the demo tokens would be used on an
    /// address that is not loopback without `dev_mode`.
    pub fn security(&self) -> Result<Security, SecurityError> {
        let (payment, public_payment) = callback_ring(
            self.payment_secret.as_ref(),
            self.payment_keys.as_ref(),
            (
                "payment_secret",
                "payment_keys",
                "ORDERMQ_PAYMENT_SECRET",
                "payment callbacks",
            ),
            DEV_PAYMENT_SECRET,
        )?;
        let (carrier, public_carrier) = callback_ring(
            self.logistics_secret.as_ref(),
            self.logistics_keys.as_ref(),
            (
                "logistics_secret",
                "logistics_keys",
                "ORDERMQ_LOGISTICS_SECRET",
                "carrier callbacks",
            ),
            DEV_LOGISTICS_SECRET,
        )?;
        let tokens = match &self.api_tokens {
            Some(tokens) => tokens.tokens().clone(),
            None => demo_tokens(),
        };
        let demo = tokens.caller(DEMO_SHOP_TOKEN).is_some()
            || tokens.caller(DEMO_OPERATOR_TOKEN).is_some();
        let mut public = Vec::new();
        for (used, credential, what, fix) in [
            (
                public_payment,
                PublicCredential::PaymentSecret,
                "the public development payment secret",
                PAYMENT_FIX,
            ),
            (
                public_carrier,
                PublicCredential::LogisticsSecret,
                "the public development carrier secret",
                LOGISTICS_FIX,
            ),
            (
                demo,
                PublicCredential::DemoTokens,
                "the public demo API tokens",
                TOKENS_FIX,
            ),
        ] {
            if !used {
                continue;
            }
            if let Some(addr) = self.reachable_addr()
                && !self.dev_mode
            {
                return Err(SecurityError::Public { what, addr, fix });
            }
            public.push(credential);
        }
        Ok(Security {
            payment: CallbackSigner::new(payment, self.callback_max_age),
            carrier: CallbackSigner::new(carrier, self.callback_max_age),
            tokens,
            public,
        })
    }
}
