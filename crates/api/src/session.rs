//! The dashboard's session: an operator signs in with a token once and the
//! browser then carries a signed, expiring cookie.
//!
//! Why a signed cookie and not a server-side table: nothing to store or
//! expire, and several instances need nothing shared. The cookie is
//! `name.expires_ms.signature`, signed with the domain's one signing rule
//! ([`Keyring`]) under a random key made at start, so a restart signs every
//! session out and no configured secret is needed. The name is looked up in
//! the configured tokens on every request, so a token removed from the
//! configuration ends its sessions at the next restart.
//!
//! Why it is CSRF-safe: the cookie is `SameSite=Strict` (a browser does not
//! send it with a request another site starts) and `HttpOnly` (scripts
//! cannot read it); on top of that, a change (any method but GET/HEAD) made
//! with the cookie needs the `X-Ordermq-Csrf: 1` header — which a form on
//! another site cannot send, and a script on another site can only send
//! after a CORS preflight ordermq never approves — and an `Origin`, when the
//! browser sends one, equal to the request's own host. Bearer tokens are not
//! sent by browsers by themselves and need none of this.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Method, header};
use ordermq_domain::signing::Keyring;

/// The cookie's name.
pub const SESSION_COOKIE: &str = "ordermq_session";
/// The header a cookie-authenticated change must carry, with the value `1`.
pub const CSRF_HEADER: &str = "x-ordermq-csrf";
/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

const SESSION_KEY_ID: &str = "session";

/// Issues and checks session cookies.
#[derive(Debug, Clone)]
pub struct Sessions {
    keys: Keyring,
    ttl: Duration,
    secure: bool,
}

impl Sessions {
    /// Sessions signed with a random key of this process. `secure` adds the
    /// cookie's `Secure` attribute (everywhere but loopback, where the
    /// dashboard is plain http).
    ///
    /// # Errors
    ///
    /// If the operating system has no randomness to give.
    pub fn random(secure: bool) -> Result<Self, getrandom::Error> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)?;
        Ok(Self {
            keys: Keyring::new([(SESSION_KEY_ID.to_owned(), key)]).expect("a 32-byte key"),
            ttl: SESSION_TTL,
            secure,
        })
    }

    /// The `Set-Cookie` value of a new session of token `name` from `now_ms`.
    pub fn issue(&self, name: &str, now_ms: i64) -> HeaderValue {
        let expires = now_ms.saturating_add(i64::try_from(self.ttl.as_millis()).unwrap_or(0));
        let context = expires.to_string();
        let signature = self.keys.sign(&context, name.as_bytes());
        let cookie = format!(
            "{SESSION_COOKIE}={name}.{expires}.{}; {}; Max-Age={}",
            signature.hex,
            self.attributes(),
            self.ttl.as_secs()
        );
        HeaderValue::from_str(&cookie).expect("token names and hex are header-safe")
    }

    /// The `Set-Cookie` value that ends a session.
    pub fn clear(&self) -> HeaderValue {
        HeaderValue::from_str(&format!(
            "{SESSION_COOKIE}=; {}; Max-Age=0",
            self.attributes()
        ))
        .expect("a constant cookie is header-safe")
    }

    fn attributes(&self) -> &'static str {
        if self.secure {
            "HttpOnly; SameSite=Strict; Path=/; Secure"
        } else {
            "HttpOnly; SameSite=Strict; Path=/"
        }
    }

    /// The token name of a valid, unexpired session cookie in `headers`;
    /// `None` without one, `Some(Err(()))` for one that does not hold.
    pub fn name(&self, headers: &HeaderMap, now_ms: i64) -> Option<Result<String, ()>> {
        let value = session_cookie(headers)?;
        Some(self.check(value, now_ms))
    }

    fn check(&self, value: &str, now_ms: i64) -> Result<String, ()> {
        let mut parts = value.splitn(3, '.');
        let (Some(name), Some(expires), Some(signature)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(());
        };
        if !valid_token_name(name) || !expires.bytes().all(|b| b.is_ascii_digit()) {
            return Err(());
        }
        self.keys
            .verify(SESSION_KEY_ID, expires, name.as_bytes(), Some(signature))
            .map_err(|_| ())?;
        let expires: i64 = expires.parse().map_err(|_| ())?;
        if expires <= now_ms {
            return Err(());
        }
        Ok(name.to_owned())
    }
}

/// The session cookie's value, if the request carries one.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
}

/// Whether `method` changes something (everything but GET, HEAD, OPTIONS).
pub(crate) fn is_change(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether the request's `Origin`, if any, is its own host.
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest.trim_end_matches('/'));
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// Whether a cookie-authenticated change is safe to run: the CSRF header,
/// and no foreign `Origin`.
pub(crate) fn csrf_safe(headers: &HeaderMap) -> bool {
    let marked = headers
        .get(CSRF_HEADER)
        .is_some_and(|v| v.as_bytes() == b"1");
    marked && same_origin(headers)
}

/// The longest token name: names are recorded with operator actions.
pub const MAX_TOKEN_NAME_LEN: usize = 64;

/// Whether `name` is a valid token name: 1 to 64 of `A-Z a-z 0-9 _ -`.
pub fn valid_token_name(name: &str) -> bool {
    (1..=MAX_TOKEN_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(set_cookie: &HeaderValue) -> HeaderMap {
        let pair = set_cookie.to_str().unwrap().split(';').next().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_str(pair).unwrap());
        headers
    }

    #[test]
    fn a_session_holds_until_it_expires_and_cannot_be_altered() {
        let sessions = Sessions::random(false).unwrap();
        let cookie = sessions.issue("ops", 1_000);
        let text = cookie.to_str().unwrap();
        assert!(text.contains("HttpOnly; SameSite=Strict; Path=/"), "{text}");
        assert!(!text.contains("Secure"), "{text}");
        let headers = with_cookie(&cookie);
        assert_eq!(sessions.name(&headers, 2_000), Some(Ok("ops".into())));
        let ttl = i64::try_from(SESSION_TTL.as_millis()).unwrap();
        assert_eq!(sessions.name(&headers, 1_000 + ttl), Some(Err(())));
        let forged = text.replacen("ops.", "admin.", 1);
        let forged = with_cookie(&HeaderValue::from_str(&forged).unwrap());
        assert_eq!(sessions.name(&forged, 2_000), Some(Err(())));
        let other_process = Sessions::random(false).unwrap();
        assert_eq!(other_process.name(&headers, 2_000), Some(Err(())));
        assert_eq!(sessions.name(&HeaderMap::new(), 2_000), None);
        assert!(
            Sessions::random(true)
                .unwrap()
                .issue("ops", 0)
                .to_str()
                .unwrap()
                .ends_with(&format!("Secure; Max-Age={}", SESSION_TTL.as_secs()))
        );
    }

    #[test]
    fn a_change_needs_the_csrf_header_and_its_own_origin() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(!csrf_safe(&headers));
        headers.insert(CSRF_HEADER, HeaderValue::from_static("1"));
        assert!(csrf_safe(&headers));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(csrf_safe(&headers));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!csrf_safe(&headers));
        headers.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!csrf_safe(&headers));
    }
}
