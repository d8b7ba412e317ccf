//! Rate limits: order creation per caller, and failed dashboard sign-ins
//! per address, each a token bucket kept in memory.
//!
//! Why: creating an order costs a transaction (a reservation, a count of the
//! user's unpaid orders, an outbox row), and a refused one costs most of
//! that too, so a script looping on `POST /api/orders` is a cheap way to
//! load the database; and a sign-in form that answers as fast as it is
//! asked lets a script guess operator tokens. Orders are limited per
//! (token, user) — a shop's backend creates orders for many users with one
//! token, and one user must not use up everyone's share — and per token as
//! a whole, a ceiling for the shop's traffic. Sign-ins are limited by the
//! failures of one client address (an IPv6 address by its /64, which one
//! client usually owns whole).
//!
//! A bucket holds up to `burst` tokens and gains `per_second` of them a
//! second; a request takes one, and with none left it is answered 429
//! `RATE_LIMITED` with `Retry-After`: the whole seconds until a token is
//! back. Memory is bounded: a bucket that has filled up again is the same
//! as no bucket and is dropped (every minute, and whenever the map is
//! full); if the map is still full, the least recently used quarter goes.
//! A script rotating keys therefore cannot grow memory past `max_keys`
//! buckets, and can at worst give some idle keys a fresh burst.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ordermq_domain::ErrorCode;
use tokio::time::Instant;

use crate::error::ApiError;

/// How often full buckets are swept out even when the map is not full.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// A bucket's size and refill rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens regained per second (> 0).
    pub per_second: f64,
    /// The most tokens a bucket holds: how many requests may come at once.
    pub burst: u32,
}

impl Rate {
    /// `per_minute` requests a minute with bursts of `burst`; `None` (no
    /// limit) if either is 0.
    pub fn per_minute(per_minute: u32, burst: u32) -> Option<Self> {
        (per_minute > 0 && burst > 0).then(|| Self {
            per_second: f64::from(per_minute) / 60.0,
            burst,
        })
    }

    /// `per_second` requests a second with bursts of `burst`; `None` (no
    /// limit) if either is 0.
    pub fn per_second(per_second: u32, burst: u32) -> Option<Self> {
        (per_second > 0 && burst > 0).then(|| Self {
            per_second: f64::from(per_second),
            burst,
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug)]
struct Buckets {
    map: HashMap<Box<str>, Bucket>,
    swept: Instant,
}

/// Token buckets by key, at most `max_keys` of them.
#[derive(Debug)]
pub struct Limiter {
    rate: Rate,
    max_keys: usize,
    buckets: Mutex<Buckets>,
}

impl Limiter {
    /// Buckets of `rate`, at most `max_keys` (at least 1) kept at once.
    pub fn new(rate: Rate, max_keys: usize) -> Self {
        Self {
            rate,
            max_keys: max_keys.max(1),
            buckets: Mutex::new(Buckets {
                map: HashMap::new(),
                swept: Instant::now(),
            }),
        }
    }

    /// Takes a token from `key`'s bucket; `Err` with the time until one is
    /// back if it is empty (nothing is taken then).
    pub fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        self.with_bucket(key, now, |bucket, rate| {
            if bucket.tokens >= 1.0 {
                bucket.tokens -= 1.0;
                Ok(())
            } else {
                Err(rate.wait_for_one(bucket.tokens))
            }
        })
    }

    /// Whether `key`'s bucket has a token, without taking it.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        self.with_bucket(key, now, |bucket, rate| {
            if bucket.tokens >= 1.0 {
                Ok(())
            } else {
                Err(rate.wait_for_one(bucket.tokens))
            }
        })
    }

    /// Gives back a token taken from `key` (the request was refused by
    /// another limit and did no work).
    pub fn give_back(&self, key: &str, now: Instant) {
        self.with_bucket(key, now, |bucket, rate| {
            bucket.tokens = (bucket.tokens + 1.0).min(f64::from(rate.burst));
        });
    }

    /// How many buckets are kept now.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether no bucket is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buckets> {
        // A panic while holding it leaves whole buckets behind: keep going.
        self.buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` on `key`'s bucket refilled to `now`, making room for it first.
    fn with_bucket<T>(&self, key: &str, now: Instant, f: impl FnOnce(&mut Bucket, Rate) -> T) -> T {
        let rate = self.rate;
        let mut buckets = self.lock();
        if now.saturating_duration_since(buckets.swept) >= SWEEP_EVERY {
            buckets.swept = now;
            buckets.map.retain(|_, b| !rate.is_full(b, now));
        }
        if !buckets.map.contains_key(key) && buckets.map.len() >= self.max_keys {
            self.make_room(&mut buckets.map, now);
        }
        let bucket = buckets.map.entry(key.into()).or_insert(Bucket {
            tokens: f64::from(rate.burst),
            at: now,
        });
        rate.refill(bucket, now);
        f(bucket, rate)
    }

    /// Drops the buckets that are full again; if that is not enough, the
    /// least recently used quarter (so the cost is paid once per many new keys).
    fn make_room(&self, map: &mut HashMap<Box<str>, Bucket>, now: Instant) {
        let rate = self.rate;
        map.retain(|_, b| !rate.is_full(b, now));
        if map.len() < self.max_keys {
            return;
        }
        let mut ages: Vec<Instant> = map.values().map(|b| b.at).collect();
        let drop = (self.max_keys / 4).max(1).min(ages.len() - 1);
        let (_, cutoff, _) = ages.select_nth_unstable(drop);
        let cutoff = *cutoff;
        map.retain(|_, b| b.at >= cutoff);
        // Ties at the cutoff may keep too many: then any will do.
        while map.len() >= self.max_keys {
            let Some(key) = map.keys().next().cloned() else {
                break;
            };
            map.remove(&key);
        }
    }
}

impl Rate {
    fn refill(self, bucket: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(f64::from(self.burst));
        bucket.at = now;
    }

    fn is_full(self, bucket: &Bucket, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens + elapsed * self.per_second >= f64::from(self.burst)
    }

    fn wait_for_one(self, tokens: f64) -> Duration {
        Duration::from_secs_f64(((1.0 - tokens) / self.per_second).max(0.0))
    }
}

/// What the API limits, as configured; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RateSettings {
    /// Orders per (token, user).
    pub orders_per_user: Option<Rate>,
    /// Orders per token, all users together.
    pub orders_per_token: Option<Rate>,
    /// Failed dashboard sign-ins per client address.
    pub signin_failures: Option<Rate>,
    /// The most buckets each limit keeps.
    pub max_keys: usize,
}

/// The API's rate limits, shared by every listener (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct RateLimits {
    inner: Arc<Limiters>,
}

#[derive(Debug, Default)]
struct Limiters {
    orders_per_user: Option<Limiter>,
    orders_per_token: Option<Limiter>,
    signin_failures: Option<Limiter>,
}

impl RateLimits {
    /// No limit at all (tests of other things).
    pub fn off() -> Self {
        Self::default()
    }

    /// The limits `settings` describe.
    pub fn new(settings: RateSettings) -> Self {
        let limiter = |rate: Option<Rate>| rate.map(|r| Limiter::new(r, settings.max_keys));
        Self {
            inner: Arc::new(Limiters {
                orders_per_user: limiter(settings.orders_per_user),
                orders_per_token: limiter(settings.orders_per_token),
                signin_failures: limiter(settings.signin_failures),
            }),
        }
    }

    /// Admits one order of `user` by `token`, or says how long to wait.
    /// Both buckets must have a token; neither is charged if one refuses.
    pub(crate) fn admit_order(
        &self,
        token: &str,
        user: &str,
        now: Instant,
    ) -> Result<(), Duration> {
        // '/' is in neither a token name nor a user id: keys cannot collide.
        let user_key = format!("{token}/{user}");
        if let Some(per_user) = &self.inner.orders_per_user {
            per_user.take(&user_key, now)?;
        }
        if let Some(per_token) = &self.inner.orders_per_token
            && let Err(wait) = per_token.take(token, now)
        {
            if let Some(per_user) = &self.inner.orders_per_user {
                per_user.give_back(&user_key, now);
            }
            return Err(wait);
        }
        Ok(())
    }

    /// Whether `client` may try to sign in now (its failures are within the limit).
    pub(crate) fn signin_allowed(
        &self,
        client: Option<IpAddr>,
        now: Instant,
    ) -> Result<(), Duration> {
        match &self.inner.signin_failures {
            Some(limiter) => limiter.check(&client_key(client), now),
            None => Ok(()),
        }
    }

    /// Counts a failed sign-in of `client`.
    pub(crate) fn signin_failed(&self, client: Option<IpAddr>, now: Instant) {
        if let Some(limiter) = &self.inner.signin_failures {
            // Already empty: the attempt was refused before it was checked.
            let _ = limiter.take(&client_key(client), now);
        }
    }
}

/// The key of a client address: IPv4 whole, IPv6 by its /64. Without an
/// address (a router driven in-process) every client shares one key.
fn client_key(client: Option<IpAddr>) -> String {
    match client {
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        None => "unknown".to_owned(),
    }
}

/// 429 `RATE_LIMITED` with `Retry-After`: whole seconds, at least 1.
pub(crate) fn rate_limited(wait: Duration, what: &str) -> Response {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let seconds = seconds.max(1);
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::RateLimited,
        format!("too many {what}; try again in {seconds} s (Retry-After)"),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: f64, burst: u32, max_keys: usize) -> Limiter {
        Limiter::new(Rate { per_second, burst }, max_keys)
    }

    #[tokio::test(start_paused = true)]
    async fn a_bucket_allows_its_burst_then_its_rate() {
        let limiter = limiter(0.5, 3, 10);
        let now = Instant::now();
        for _ in 0..3 {
            assert!(limiter.take("a", now).is_ok());
        }
        let wait = limiter.take("a", now).unwrap_err();
        assert_eq!(wait, Duration::from_secs(2));
        // Another key has its own bucket.
        assert!(limiter.take("b", now).is_ok());
        tokio::time::advance(Duration::from_millis(1_999)).await;
        assert!(limiter.take("a", Instant::now()).is_err());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(limiter.take("a", Instant::now()).is_ok());
        assert!(limiter.take("a", Instant::now()).is_err());
        // A long pause refills to the burst, not beyond.
        tokio::time::advance(Duration::from_secs(3_600)).await;
        let now = Instant::now();
        for _ in 0..3 {
            assert!(limiter.take("a", now).is_ok());
        }
        assert!(limiter.take("a", now).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn check_does_not_take_and_give_back_returns_one() {
        let limiter = limiter(1.0, 1, 10);
        let now = Instant::now();
        assert!(limiter.check("a", now).is_ok());
        assert!(limiter.check("a", now).is_ok());
        assert!(limiter.take("a", now).is_ok());
        assert!(limiter.check("a", now).is_err());
        limiter.give_back("a", now);
        assert!(limiter.take("a", now).is_ok());
        limiter.give_back("a", now);
        limiter.give_back("a", now);
        assert!(limiter.take("a", now).is_ok());
        assert!(limiter.take("a", now).is_err(), "never more than the burst");
    }

    #[tokio::test(start_paused = true)]
    async fn rotating_keys_never_grow_past_the_cap() {
        let limiter = limiter(0.001, 5, 1_000);
        for i in 0..20_000 {
            let _ = limiter.take(&format!("user-{i}"), Instant::now());
            assert!(limiter.len() <= 1_000);
            if i % 100 == 0 {
                tokio::time::advance(Duration::from_millis(1)).await;
            }
        }
        // The most recent keys are the ones kept: a key just used is still limited.
        let now = Instant::now();
        for _ in 0..4 {
            assert!(limiter.take("user-19999", now).is_ok());
        }
        assert!(limiter.take("user-19999", now).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_buckets_are_swept() {
        let limiter = limiter(1.0, 2, 100);
        for i in 0..50 {
            limiter.take(&format!("k{i}"), Instant::now()).unwrap();
        }
        assert_eq!(limiter.len(), 50);
        tokio::time::advance(SWEEP_EVERY).await;
        limiter.take("fresh", Instant::now()).unwrap();
        assert_eq!(limiter.len(), 1, "refilled buckets are dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn an_order_needs_both_buckets_and_a_refusal_charges_neither() {
        let limits = RateLimits::new(RateSettings {
            orders_per_user: Rate::per_minute(60, 2),
            orders_per_token: Rate::per_second(1, 3),
            signin_failures: None,
            max_keys: 100,
        });
        let now = Instant::now();
        assert!(limits.admit_order("shop", "u1", now).is_ok());
        assert!(limits.admit_order("shop", "u1", now).is_ok());
        assert!(limits.admit_order("shop", "u1", now).is_err(), "u1's burst");
        assert!(
            limits.admit_order("shop", "u2", now).is_ok(),
            "the token's third"
        );
        assert!(
            limits.admit_order("shop", "u3", now).is_err(),
            "the token's burst"
        );
        // u3 was not charged: one second later the token has one, u3 two.
        tokio::time::advance(Duration::from_secs(1)).await;
        let now = Instant::now();
        assert!(limits.admit_order("shop", "u3", now).is_ok());
        assert!(limits.admit_order("shop", "u3", now).is_err());
        assert!(limits.admit_order("other", "u3", now).is_ok(), "per token");
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(Some(a)), client_key(Some(b)));
        assert_ne!(client_key(Some(a)), client_key(Some(c)));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(client_key(Some(mapped)), "10.0.0.1");
    }

    #[test]
    fn retry_after_is_whole_seconds_and_at_least_one() {
        for (wait, want) in [
            (Duration::ZERO, "1"),
            (Duration::from_millis(10), "1"),
            (Duration::from_millis(1_001), "2"),
            (Duration::from_secs(30), "30"),
        ] {
            let response = rate_limited(wait, "orders");
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(response.headers()[header::RETRY_AFTER], want);
        }
    }
}
