//! The third parties as configured: for each of the SMS gateway, the
//! logistics system and the payment gateway, the in-process fake or the
//! provider over HTTP (`gateways.<name>.mode`), and how long the consumers
//! wait for each call.
//!
//! Why one place: the server and `ordermq dlq replay` must call the same
//! third parties — a replay through a fake would record an SMS nobody was
//! sent — and the loud warning about fakes is said once, from one list.

use std::sync::Arc;
use std::time::Duration;

use ordermq_domain::ports::{LogisticsGateway, PaymentGateway, SmsGateway};
use ordermq_gateways::http::client::call_budget;
use ordermq_gateways::{
    FakeGateway, HttpLogistics, HttpOptions, HttpPayments, HttpSetupError, HttpSms,
};
use ordermq_service::consumers::SystemGateways;

use crate::config::{Config, ConfigError, GatewayMode, GatewaySettings};

/// Why the third parties could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum GatewaysError {
    /// A gateway in http mode lacks its URL or keys.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An HTTP adapter could not be built.
    #[error(transparent)]
    Http(#[from] HttpSetupError),
}

/// The fakes in use (none for a gateway in http mode): fault tests change
/// their behaviour, and tests count their calls.
#[derive(Debug, Clone, Default)]
pub struct Fakes {
    /// The fake SMS gateway.
    pub sms: Option<Arc<FakeGateway>>,
    /// The fake logistics system.
    pub logistics: Option<Arc<FakeGateway>>,
    /// The fake payment gateway.
    pub payments: Option<Arc<FakeGateway>>,
}

/// The adapters behind the three third-party ports, and the consumers' timeouts.
#[derive(Clone)]
pub struct Gateways {
    /// Sends SMS (push group).
    pub sms: Arc<dyn SmsGateway>,
    /// Books and cancels shipments (warehouse group).
    pub logistics: Arc<dyn LogisticsGateway>,
    /// Refunds (payment_refund_group).
    pub payments: Arc<dyn PaymentGateway>,
    /// Which of them are fakes.
    pub fakes: Fakes,
    /// How long a consumer waits for one SMS call, retries included.
    pub sms_timeout: Duration,
    /// How long the warehouse waits for one logistics call, retries included.
    pub logistics_timeout: Duration,
    /// How long the refund group waits for one refund call, retries included.
    pub payments_timeout: Duration,
}

impl std::fmt::Debug for Gateways {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateways")
            .field("fakes", &self.fake_names())
            .field("sms_timeout", &self.sms_timeout)
            .field("logistics_timeout", &self.logistics_timeout)
            .field("payments_timeout", &self.payments_timeout)
            .finish_non_exhaustive()
    }
}

/// The whole-call bound of a gateway: every attempt and the waits between.
fn bound(settings: &GatewaySettings<'_>) -> Duration {
    call_budget(settings.timeout, settings.retries)
}

/// The adapter options of a gateway in http mode.
fn http_options(settings: &GatewaySettings<'_>, deadline: Duration) -> HttpOptions {
    let (url, keys) = match (settings.url, settings.keys) {
        (Some(url), Some(keys)) => (url, keys),
        // `Config::check` ran first.
        _ => unreachable!("a gateway in http mode has its url and keys"),
    };
    HttpOptions {
        deadline: Some(deadline),
        ..HttpOptions::new(
            url.as_str(),
            keys.keyring().clone(),
            settings.timeout,
            settings.retries,
        )
    }
}

impl Gateways {
    /// Builds each gateway as `config` says.
    ///
    /// # Errors
    ///
    /// [`GatewaysError::Config`] if a gateway in http mode lacks its URL or
    /// keys; [`GatewaysError::Http`] if an HTTP adapter cannot be built.
    pub fn from_config(config: &Config) -> Result<Self, GatewaysError> {
        config.check()?;
        let mut fakes = Fakes::default();
        let (sms, logistics, payments) = (
            config.sms_gateway(),
            config.logistics_gateway(),
            config.payments_gateway(),
        );
        let sms_timeout = bound(&sms);
        // The warehouse never waits longer than logistics_timeout_ms.
        let logistics_timeout = bound(&logistics).min(config.logistics_timeout);
        let payments_timeout = bound(&payments);

        let sms: Arc<dyn SmsGateway> = match sms.mode {
            GatewayMode::Fake => {
                let fake = Arc::new(FakeGateway::new("sms gateway", config.sms_profile()));
                fakes.sms = Some(fake.clone());
                fake
            }
            GatewayMode::Http => Arc::new(HttpSms::new(http_options(&sms, sms_timeout))?),
        };
        let logistics: Arc<dyn LogisticsGateway> = match logistics.mode {
            GatewayMode::Fake => {
                let fake = Arc::new(FakeGateway::new(
                    "logistics system",
                    config.logistics_profile(),
                ));
                fakes.logistics = Some(fake.clone());
                fake
            }
            GatewayMode::Http => Arc::new(HttpLogistics::new(http_options(
                &logistics,
                logistics_timeout,
            ))?),
        };
        let payments: Arc<dyn PaymentGateway> = match payments.mode {
            GatewayMode::Fake => {
                let fake = Arc::new(FakeGateway::new(
                    "payment gateway",
                    config.payment_gateway_profile(),
                ));
                fakes.payments = Some(fake.clone());
                fake
            }
            GatewayMode::Http => Arc::new(HttpPayments::new(http_options(
                &payments,
                payments_timeout,
            ))?),
        };
        Ok(Self {
            sms,
            logistics,
            payments,
            fakes,
            sms_timeout,
            logistics_timeout,
            payments_timeout,
        })
    }

    /// The SMS gateway and the logistics system with their timeouts, as the
    /// downstream systems' handlers take them.
    pub fn for_systems(&self) -> SystemGateways {
        SystemGateways {
            sms: self.sms.clone(),
            sms_timeout: self.sms_timeout,
            logistics: self.logistics.clone(),
            logistics_timeout: self.logistics_timeout,
        }
    }

    /// What each fake in use does not do, in words: `sms gateway (no SMS is sent)`, …
    pub fn fake_names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.fakes.sms.is_some() {
            names.push("sms gateway (no SMS is sent)");
        }
        if self.fakes.logistics.is_some() {
            names.push("logistics system (nothing is booked or cancelled)");
        }
        if self.fakes.payments.is_some() {
            names.push("payment gateway (refunds move no money)");
        }
        names
    }

    /// One WARN line listing the fakes in use, if any.
    pub fn warn_about_fakes(&self) {
        let fakes = self.fake_names();
        if !fakes.is_empty() {
            tracing::warn!(
                "!!! FAKE third parties in use: {}. Set gateways.<sms|logistics|payments>.mode = \"http\" \
                 with its url and keys for real providers (docs/gateways.md). !!!",
                fakes.join("; ")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HttpUrl, SigningKeys};

    fn over_http(config: &mut Config) {
        let url: HttpUrl = "http://127.0.0.1:9".parse().unwrap();
        let keys = SigningKeys::parse("k1:secret").unwrap();
        config.gateways_sms_mode = GatewayMode::Http;
        config.gateways_sms_url = Some(url.clone());
        config.gateways_sms_keys = Some(keys.clone());
        config.gateways_payments_mode = GatewayMode::Http;
        config.gateways_payments_url = Some(url);
        config.gateways_payments_keys = Some(keys);
    }

    #[test]
    fn the_fakes_are_the_default_and_are_named_with_what_they_do_not_do() {
        let gateways = Gateways::from_config(&Config::default()).unwrap();
        let fakes = gateways.fake_names().join("; ");
        assert!(fakes.contains("refunds move no money"), "{fakes}");
        assert!(fakes.contains("sms gateway") && fakes.contains("logistics system"));
        assert!(gateways.fakes.payments.is_some());
    }

    #[test]
    fn gateways_over_http_are_no_fakes_and_their_calls_are_bounded() {
        let mut config = Config::default();
        over_http(&mut config);
        config.gateways_sms_timeout = Duration::from_secs(1);
        config.gateways_sms_retries = 1;
        config.gateways_logistics_timeout = Duration::from_secs(4);
        let gateways = Gateways::from_config(&config).unwrap();
        assert_eq!(
            gateways.fake_names(),
            ["logistics system (nothing is booked or cancelled)"]
        );
        assert!(gateways.fakes.sms.is_none() && gateways.fakes.payments.is_none());
        // Two attempts of 1 s and at most 100 ms between them.
        assert_eq!(gateways.sms_timeout, Duration::from_millis(2_100));
        // Never longer than logistics_timeout_ms (5 s by default).
        assert_eq!(gateways.logistics_timeout, config.logistics_timeout);
    }

    #[test]
    fn a_gateway_over_http_without_its_keys_is_refused() {
        let mut config = Config::default();
        over_http(&mut config);
        config.gateways_payments_keys = None;
        let err = Gateways::from_config(&config).unwrap_err().to_string();
        assert!(err.contains("gateways.payments.keys"), "{err}");
    }
}
