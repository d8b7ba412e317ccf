//! What every HTTP adapter does the same way: sign the request, send it with
//! a timeout per attempt, retry what may succeed on a second try (no
//! connection, no answer in time, 5xx, 429) with exponential backoff and
//! jitter, never retry a refusal (any other 4xx), give up at an overall
//! deadline, and turn the result into a [`GatewayError`] whose reason never
//! holds a secret.
//!
//! Why one client: the protocol (docs/gateways.md) is the same for the three
//! providers; only paths and bodies differ, and those live in the
//! providers' modules.

use std::time::Duration;

use ordermq_domain::now_millis;
use ordermq_domain::ports::GatewayError;
use ordermq_domain::signing::Keyring;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

/// The first wait before a retry; each next one doubles, up to [`BACKOFF_CAP`].
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// The longest wait between two attempts.
pub const BACKOFF_CAP: Duration = Duration::from_secs(2);

/// How to reach one provider.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// `http://host:port` or `https://host/prefix`; the endpoints' paths are
    /// appended to it.
    pub base_url: String,
    /// The first key signs every request (its id travels in `X-Ordermq-Key-Id`).
    pub keys: Keyring,
    /// How long one attempt may take, connecting and reading the answer included.
    pub timeout: Duration,
    /// Attempts after the first, on connection errors, timeouts, 5xx and 429.
    pub retries: u32,
    /// The whole call's deadline, retries and waits included; `None`:
    /// [`HttpOptions::budget`].
    pub deadline: Option<Duration>,
}

impl HttpOptions {
    /// Options with the whole call's deadline left at [`HttpOptions::budget`].
    pub fn new(
        base_url: impl Into<String>,
        keys: Keyring,
        timeout: Duration,
        retries: u32,
    ) -> Self {
        Self {
            base_url: base_url.into(),
            keys,
            timeout,
            retries,
            deadline: None,
        }
    }

    /// The longest a call can take with these settings: [`call_budget`].
    pub fn budget(&self) -> Duration {
        call_budget(self.timeout, self.retries)
    }

    /// The whole call's deadline: the one set, or [`HttpOptions::budget`].
    pub fn deadline(&self) -> Duration {
        self.deadline.unwrap_or_else(|| self.budget())
    }
}

/// The longest a call with `retries` retries of at most `timeout` each can
/// take: every attempt's timeout plus the longest wait before each retry.
pub fn call_budget(timeout: Duration, retries: u32) -> Duration {
    (1..=retries).fold(timeout, |total, retry| total + timeout + backoff_cap(retry))
}

/// The longest wait before retry number `retry` (from 1).
fn backoff_cap(retry: u32) -> Duration {
    BACKOFF_BASE
        .saturating_mul(
            1u32.checked_shl(retry.saturating_sub(1))
                .unwrap_or(u32::MAX),
        )
        .min(BACKOFF_CAP)
}

/// The wait before retry number `retry`: half its cap plus a uniform jitter
/// up to the other half, so clients that failed together do not retry together.
fn backoff(retry: u32) -> Duration {
    let cap = backoff_cap(retry).as_millis() as u64;
    Duration::from_millis(cap / 2 + fastrand::u64(0..=cap / 2))
}

/// An adapter that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpSetupError {
    /// The base URL is not `http(s)://host[:port][/path]`. The URL is not
    /// repeated: it may hold credentials.
    #[error("{system}: the base URL is not http(s)://host[:port][/path]")]
    BadUrl {
        /// Which provider.
        system: &'static str,
    },
    /// The HTTP client could not be built (TLS set-up).
    #[error("{system}: cannot build the HTTP client")]
    Client {
        /// Which provider.
        system: &'static str,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
}

/// The signed, retried `POST`s to one provider.
#[derive(Debug, Clone)]
pub(crate) struct ProviderClient {
    system: &'static str,
    base: String,
    http: reqwest::Client,
    options: HttpOptions,
}

/// Why one attempt did not succeed, and whether another may.
struct Failed {
    reason: String,
    retry: bool,
}

impl ProviderClient {
    /// A client of the provider `system` (its name in errors and logs).
    pub(crate) fn new(system: &'static str, options: HttpOptions) -> Result<Self, HttpSetupError> {
        let url = reqwest::Url::parse(&options.base_url)
            .map_err(|_| HttpSetupError::BadUrl { system })?;
        if !matches!(url.scheme(), "http" | "https")
            || url.host_str().is_none()
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(HttpSetupError::BadUrl { system });
        }
        let http = reqwest::Client::builder()
            .connect_timeout(options.timeout)
            .build()
            .map_err(|source| HttpSetupError::Client { system, source })?;
        Ok(Self {
            system,
            base: options.base_url.trim_end_matches('/').to_owned(),
            http,
            options,
        })
    }

    /// The whole call's deadline.
    pub(crate) fn deadline(&self) -> Duration {
        self.options.deadline()
    }

    /// `POST`s `body` as JSON to `path` with `idempotency_key`, and decodes
    /// the 2xx answer as `T`; retries as the module says.
    pub(crate) async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        idempotency_key: &str,
        body: &impl Serialize,
    ) -> Result<T, GatewayError> {
        let body = serde_json::to_vec(body).map_err(|e| self.error(path, e.to_string()))?;
        let started = Instant::now();
        let deadline = started + self.options.deadline();
        let attempts = self.options.retries + 1;
        let mut last = String::from("no attempt fitted before the deadline");
        for attempt in 1..=attempts {
            if attempt > 1 {
                let wait = backoff(attempt - 1);
                if Instant::now() + wait >= deadline {
                    break;
                }
                tokio::time::sleep(wait).await;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            match self
                .attempt::<T>(
                    path,
                    idempotency_key,
                    &body,
                    self.options.timeout.min(remaining),
                )
                .await
            {
                Ok(answer) => return Ok(answer),
                Err(Failed { reason, retry }) => {
                    last = format!("{reason} (attempt {attempt} of {attempts})");
                    if !retry {
                        break;
                    }
                    tracing::debug!(system = self.system, path, idempotency_key, reason = %last, "provider call failed; retrying");
                }
            }
        }
        Err(self.error(path, last))
    }

    pub(crate) fn error(&self, path: &str, reason: String) -> GatewayError {
        GatewayError {
            system: self.system,
            reason: format!("POST {path}: {reason}"),
        }
    }

    async fn attempt<T: DeserializeOwned>(
        &self,
        path: &str,
        idempotency_key: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<T, Failed> {
        let timestamp = now_millis().to_string();
        let signature = self.options.keys.sign(&timestamp, body);
        let sent = self
            .http
            .post(format!("{}{path}", self.base))
            .timeout(timeout)
            .header("content-type", "application/json")
            .header("idempotency-key", idempotency_key)
            .header("x-ordermq-key-id", signature.key_id)
            .header("x-ordermq-timestamp", timestamp)
            .header("x-ordermq-signature", signature.hex)
            .body(body.to_vec())
            .send()
            .await;
        // reqwest's errors name the URL, which may hold credentials: only
        // their kind is reported.
        let response = match sent {
            Ok(response) => response,
            Err(e) => return Err(transport_failure(&e, timeout)),
        };
        let status = response.status();
        let answer = match response.bytes().await {
            Ok(answer) => answer,
            Err(e) => return Err(transport_failure(&e, timeout)),
        };
        if status.is_success() {
            return serde_json::from_slice(&answer).map_err(|_| Failed {
                reason: format!(
                    "HTTP {} with an answer that is not the protocol's",
                    status.as_u16()
                ),
                retry: false,
            });
        }
        Err(Failed {
            reason: format!("HTTP {}{}", status.as_u16(), code_of(&answer)),
            retry: status.is_server_error() || status.as_u16() == 429,
        })
    }
}

fn transport_failure(e: &reqwest::Error, timeout: Duration) -> Failed {
    let reason = if e.is_timeout() {
        format!("no answer within {} ms", timeout.as_millis())
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else if e.is_builder() {
        return Failed {
            reason: "the request cannot be built".to_owned(),
            retry: false,
        };
    } else {
        "the connection failed".to_owned()
    };
    Failed {
        reason,
        retry: true,
    }
}

/// ` CODE` from an error answer `{"code": "CODE", ...}`, if it has a
/// plausible one (capitals and underscores, at most 64): a provider's
/// free text is not copied into ordermq's records.
fn code_of(answer: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct ErrorAnswer {
        code: String,
    }
    match serde_json::from_slice::<ErrorAnswer>(answer) {
        Ok(ErrorAnswer { code })
            if !code.is_empty()
                && code.len() <= 64
                && code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') =>
        {
            format!(" {code}")
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(timeout_ms: u64, retries: u32) -> HttpOptions {
        let keys = Keyring::new([("k".to_owned(), b"s")]).unwrap();
        HttpOptions::new(
            "http://127.0.0.1:1",
            keys,
            Duration::from_millis(timeout_ms),
            retries,
        )
    }

    #[test]
    fn the_budget_is_every_attempt_and_the_longest_waits() {
        assert_eq!(options(1_000, 0).budget(), Duration::from_millis(1_000));
        // 3 attempts of 1 s, waits of at most 100 and 200 ms.
        assert_eq!(options(1_000, 2).budget(), Duration::from_millis(3_300));
        let mut fixed = options(1_000, 2);
        fixed.deadline = Some(Duration::from_millis(1_500));
        assert_eq!(fixed.deadline(), Duration::from_millis(1_500));
    }

    #[test]
    fn waits_double_with_jitter_up_to_the_cap() {
        for retry in 1..=40 {
            let cap = backoff_cap(retry);
            assert!(cap <= BACKOFF_CAP);
            let wait = backoff(retry);
            assert!(
                wait >= cap / 2 && wait <= cap,
                "{retry}: {wait:?} of {cap:?}"
            );
        }
        assert_eq!(backoff_cap(1), BACKOFF_BASE);
        assert_eq!(backoff_cap(2), BACKOFF_BASE * 2);
        assert_eq!(backoff_cap(30), BACKOFF_CAP);
    }

    #[test]
    fn only_a_plausible_error_code_is_kept() {
        assert_eq!(
            code_of(br#"{"code":"UNAVAILABLE","message":"x"}"#),
            " UNAVAILABLE"
        );
        assert_eq!(code_of(br#"{"code":"see http://x?token=abc"}"#), "");
        assert_eq!(code_of(b"<html>"), "");
    }

    #[test]
    fn a_base_url_is_http_with_a_host_and_is_never_repeated() {
        for bad in [
            "ftp://sms.example",
            "not a url",
            "http://sms.example/?q=1",
            "http://u:hunter2@/x",
        ] {
            let mut o = options(100, 0);
            o.base_url = bad.into();
            let err = ProviderClient::new("sms gateway", o)
                .unwrap_err()
                .to_string();
            assert!(
                !err.contains("hunter2") && !err.contains("sms.example"),
                "{err}"
            );
        }
        let mut o = options(100, 0);
        o.base_url = "https://sms.example/v1/".into();
        assert_eq!(
            ProviderClient::new("sms gateway", o).unwrap().base,
            "https://sms.example/v1"
        );
    }
}
