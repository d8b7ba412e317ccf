//! Fake third parties: the SMS gateway, the logistics system and the payment
//! gateway's refunds.
//!
//! They behave like the real ones as far as ordermq can tell: a typical
//! latency, jitter, rare spikes past a second (the seed document's numbers),
//! a configurable failure rate, and idempotency keys, so a retried request
//! does not send a second SMS or book a second shipment.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use ordermq_domain::ports::{
    BoxFuture, Cancellation, GatewayError, LogisticsGateway, PaymentGateway, SmsGateway,
};
use ordermq_domain::{Amount, OrderPaid};

/// How a fake third party behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    pub latency: Duration,
    pub jitter: Duration,
    pub spike_probability: f64,
    pub spike: Duration,
    pub failure_rate: f64,
}

impl Profile {
    /// Answers at once and never fails.
    pub const INSTANT: Profile = Profile {
        latency: Duration::ZERO,
        jitter: Duration::ZERO,
        spike_probability: 0.0,
        spike: Duration::ZERO,
        failure_rate: 0.0,
    };

    /// A profile from milliseconds: typical latency, jitter, spike probability,
    /// spike latency, failure rate.
    pub fn from_millis(
        latency: u64,
        jitter: u64,
        spike_probability: f64,
        spike: u64,
        failure_rate: f64,
    ) -> Self {
        Self {
            latency: Duration::from_millis(latency),
            jitter: Duration::from_millis(jitter),
            spike_probability,
            spike: Duration::from_millis(spike),
            failure_rate,
        }
    }

    /// One call's latency: the spike, or the typical latency plus uniform jitter.
    pub fn sample_latency(&self) -> Duration {
        if self.spike_probability > 0.0 && fastrand::f64() < self.spike_probability {
            return self.spike;
        }
        let jitter_ms = self.jitter.as_millis() as u64;
        let extra = if jitter_ms == 0 {
            0
        } else {
            fastrand::u64(0..=jitter_ms)
        };
        self.latency + Duration::from_millis(extra)
    }
}

/// A fake third party with idempotency keys; `name` appears in errors.
#[derive(Debug)]
pub struct FakeGateway {
    name: &'static str,
    profile: Mutex<Profile>,
    accepted: Mutex<Accepted>,
}

/// How many idempotency keys a fake remembers. Real providers keep them for
/// a window (a day, say); an unbounded map grew the benchmark's process by
/// ~40 MiB per 170,000 payments, memory that belongs to the provider.
const IDEMPOTENCY_WINDOW: usize = 50_000;

/// The requests a fake accepted, for the last [`IDEMPOTENCY_WINDOW`] keys:
/// a 64-bit hash of the key → the sequence number its reference was made
/// from. Hashes rather than the keys themselves: with the keys (and their
/// references) as strings, the two fakes held ~21 MiB of a `bench capacity`
/// run's heap; a hash collision among 50,000 keys has odds of about 1e-10.
#[derive(Debug, Default)]
struct Accepted {
    numbers: HashMap<u64, usize>,
    oldest_first: std::collections::VecDeque<u64>,
    total: usize,
}

fn key_hash(idempotency_key: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(idempotency_key)
}

impl FakeGateway {
    pub fn new(name: &'static str, profile: Profile) -> Self {
        Self {
            name,
            profile: Mutex::new(profile),
            accepted: Mutex::new(Accepted::default()),
        }
    }

    /// Changes the behaviour at run time (fault tests: "the carrier is down").
    pub fn set_profile(&self, profile: Profile) {
        *self.profile.lock().expect("profile lock") = profile;
    }

    /// Distinct requests accepted so far (a key repeated within the
    /// idempotency window counts once).
    pub fn accepted(&self) -> usize {
        self.accepted.lock().expect("accepted lock").total
    }

    /// One call to the third party: waits its latency, may fail, and returns a
    /// reference (`<prefix>-<n>`), the same one again for a repeated key.
    pub async fn call(&self, idempotency_key: &str, prefix: &str) -> Result<String, GatewayError> {
        let profile = *self.profile.lock().expect("profile lock");
        let latency = profile.sample_latency();
        // A zero sleep still goes through the timer wheel (a wake-up up to
        // a millisecond later); a third party without latency answers at once.
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if profile.failure_rate > 0.0 && fastrand::f64() < profile.failure_rate {
            return Err(GatewayError {
                system: self.name,
                reason: "simulated failure (HTTP 503 from the provider)".into(),
            });
        }
        let key = key_hash(idempotency_key);
        let mut accepted = self.accepted.lock().expect("accepted lock");
        let number = match accepted.numbers.get(&key) {
            Some(&number) => number,
            None => {
                accepted.total += 1;
                let number = accepted.total;
                accepted.numbers.insert(key, number);
                accepted.oldest_first.push_back(key);
                if accepted.oldest_first.len() > IDEMPOTENCY_WINDOW
                    && let Some(oldest) = accepted.oldest_first.pop_front()
                {
                    accepted.numbers.remove(&oldest);
                }
                number
            }
        };
        Ok(format!("{prefix}-{number:08}"))
    }
}

impl SmsGateway for FakeGateway {
    fn send<'a>(
        &'a self,
        idempotency_key: &'a str,
        _to_user: &'a str,
        _text: &'a str,
    ) -> BoxFuture<'a, Result<String, GatewayError>> {
        Box::pin(self.call(idempotency_key, "SMS"))
    }
}

impl LogisticsGateway for FakeGateway {
    fn create_shipment<'a>(
        &'a self,
        idempotency_key: &'a str,
        _order: &'a OrderPaid,
    ) -> BoxFuture<'a, Result<String, GatewayError>> {
        Box::pin(self.call(idempotency_key, "TRK"))
    }

    /// The fake carrier never has a parcel yet: every booking it is asked
    /// to cancel is cancelled.
    fn cancel_shipment<'a>(
        &'a self,
        idempotency_key: &'a str,
        _order_id: &'a str,
        _tracking_no: &'a str,
    ) -> BoxFuture<'a, Result<Cancellation, GatewayError>> {
        Box::pin(async move {
            self.call(idempotency_key, "CNL").await?;
            Ok(Cancellation::Cancelled)
        })
    }
}

impl PaymentGateway for FakeGateway {
    fn refund<'a>(
        &'a self,
        idempotency_key: &'a str,
        _payment_id: &'a str,
        _amount: Amount,
    ) -> BoxFuture<'a, Result<String, GatewayError>> {
        Box::pin(self.call(idempotency_key, "RF"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn repeated_keys_return_the_first_reference() {
        let gw = FakeGateway::new("sms", Profile::INSTANT);
        let a = SmsGateway::send(&gw, "k1", "u", "t").await.unwrap();
        let again = SmsGateway::send(&gw, "k1", "u", "t").await.unwrap();
        let b = SmsGateway::send(&gw, "k2", "u", "t").await.unwrap();
        assert_eq!(a, again);
        assert_ne!(a, b);
        assert_eq!(gw.accepted(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn keys_are_remembered_for_a_window_of_the_latest() {
        let gw = FakeGateway::new("sms", Profile::INSTANT);
        let first = SmsGateway::send(&gw, "k0", "u", "t").await.unwrap();
        for i in 1..=IDEMPOTENCY_WINDOW {
            SmsGateway::send(&gw, &format!("k{i}"), "u", "t")
                .await
                .unwrap();
        }
        let newest = format!("k{IDEMPOTENCY_WINDOW}");
        let before = SmsGateway::send(&gw, &newest, "u", "t").await.unwrap();
        assert_eq!(
            gw.accepted(),
            IDEMPOTENCY_WINDOW + 1,
            "a repeat is no new request"
        );
        assert_eq!(
            SmsGateway::send(&gw, &newest, "u", "t").await.unwrap(),
            before
        );
        // k0 left the window: the provider no longer knows it.
        assert_ne!(SmsGateway::send(&gw, "k0", "u", "t").await.unwrap(), first);
        assert_eq!(gw.accepted(), IDEMPOTENCY_WINDOW + 2);
    }

    #[tokio::test(start_paused = true)]
    async fn failure_rate_one_always_fails_and_accepts_nothing() {
        let gw = FakeGateway::new(
            "logistics",
            Profile {
                failure_rate: 1.0,
                ..Profile::INSTANT
            },
        );
        for _ in 0..10 {
            assert!(SmsGateway::send(&gw, "k", "u", "t").await.is_err());
        }
        assert_eq!(gw.accepted(), 0);
    }

    #[test]
    fn latency_stays_within_jitter_or_is_a_spike() {
        let profile = Profile {
            latency: Duration::from_millis(100),
            jitter: Duration::from_millis(40),
            spike_probability: 0.1,
            spike: Duration::from_millis(1_200),
            failure_rate: 0.0,
        };
        let mut spikes = 0;
        for _ in 0..2_000 {
            let l = profile.sample_latency();
            if l == profile.spike {
                spikes += 1;
            } else {
                assert!(l >= Duration::from_millis(100) && l <= Duration::from_millis(140));
            }
        }
        // 10 % of 2,000 is 200; allow for chance.
        assert!((100..=300).contains(&spikes), "{spikes} spikes");
    }
}
