//! Configuration keys at ordermq's edges: the third-party gateways (SMS,
//! logistics, payments) and how they are reached, the per-user and
//! per-token limits, the demo catalog, logging, and the knobs of the fake
//! third parties (under `fakes.`, so they cannot be mistaken for
//! production settings; their flat names and variables still work).
//!
//! One section of the one table (see `keys/mod.rs`): the last, so it hands
//! every entry to `config_table!`.

/// Appends this section's entries to those it is given and passes them on.
macro_rules! edges_keys {
    ($next:ident $(, $rest:ident)* => $($entries:tt)*) => {
        $next! { $($rest),* => $($entries)*
        /// SMS gateway: fake (in process, nothing leaves ordermq; the default) or
        /// http (the provider at gateways.sms.url, protocol in docs/gateways.md).
        gateways_sms_mode: GatewayMode = GatewayMode {
            key: "gateways.sms.mode",
            default: GatewayMode::Fake,
        }
        /// SMS gateway over http: the provider's base URL (required in http mode).
        gateways_sms_url: Option<HttpUrl> = Optional<HttpUrl> {
            key: "gateways.sms.url",
            default: None,
            unset: "none; required in http mode",
        }
        /// SMS gateway over http: the keys requests are signed with (the first
        /// signs; required in http mode).
        gateways_sms_keys: Option<SigningKeys> = Optional<SigningKeys> {
            key: "gateways.sms.keys",
            default: None,
            unset: "none; required in http mode",
        }
        /// SMS gateway: how long one attempt may take. Each call is
        /// bounded by (retries + 1) x timeout plus the waits between attempts,
        /// in fake mode too.
        gateways_sms_timeout: Duration = Span {
            key: "gateways.sms.timeout",
            default: Duration::from_secs(2),
        }
        /// SMS gateway over http: attempts after the first, on connection errors,
        /// timeouts, 5xx and 429 (never on another 4xx), with exponential
        /// backoff and jitter; the same idempotency key every time.
        gateways_sms_retries: u32 = Int<u32> {
            key: "gateways.sms.retries",
            default: 2,
            range: 0..=10,
        }
        /// Logistics system: fake (in process, nothing leaves ordermq; the default) or
        /// http (the provider at gateways.logistics.url, protocol in docs/gateways.md).
        gateways_logistics_mode: GatewayMode = GatewayMode {
            key: "gateways.logistics.mode",
            default: GatewayMode::Fake,
        }
        /// Logistics system over http: the provider's base URL (required in http mode).
        gateways_logistics_url: Option<HttpUrl> = Optional<HttpUrl> {
            key: "gateways.logistics.url",
            default: None,
            unset: "none; required in http mode",
        }
        /// Logistics system over http: the keys requests are signed with (the first
        /// signs; required in http mode).
        gateways_logistics_keys: Option<SigningKeys> = Optional<SigningKeys> {
            key: "gateways.logistics.keys",
            default: None,
            unset: "none; required in http mode",
        }
        /// Logistics system: how long one attempt may take (the warehouse also gives up at logistics_timeout_ms). Each call is
        /// bounded by (retries + 1) x timeout plus the waits between attempts,
        /// in fake mode too.
        gateways_logistics_timeout: Duration = Span {
            key: "gateways.logistics.timeout",
            default: Duration::from_secs(2),
        }
        /// Logistics system over http: attempts after the first, on connection errors,
        /// timeouts, 5xx and 429 (never on another 4xx), with exponential
        /// backoff and jitter; the same idempotency key every time.
        gateways_logistics_retries: u32 = Int<u32> {
            key: "gateways.logistics.retries",
            default: 2,
            range: 0..=10,
        }
        /// Payment gateway (refunds): fake (in process, nothing leaves ordermq; the default) or
        /// http (the provider at gateways.payments.url, protocol in docs/gateways.md).
        gateways_payments_mode: GatewayMode = GatewayMode {
            key: "gateways.payments.mode",
            default: GatewayMode::Fake,
        }
        /// Payment gateway (refunds) over http: the provider's base URL (required in http mode).
        gateways_payments_url: Option<HttpUrl> = Optional<HttpUrl> {
            key: "gateways.payments.url",
            default: None,
            unset: "none; required in http mode",
        }
        /// Payment gateway (refunds) over http: the keys requests are signed with (the first
        /// signs; required in http mode).
        gateways_payments_keys: Option<SigningKeys> = Optional<SigningKeys> {
            key: "gateways.payments.keys",
            default: None,
            unset: "none; required in http mode",
        }
        /// Payment gateway (refunds): how long one attempt may take. Each call is
        /// bounded by (retries + 1) x timeout plus the waits between attempts,
        /// in fake mode too.
        gateways_payments_timeout: Duration = Span {
            key: "gateways.payments.timeout",
            default: Duration::from_secs(5),
        }
        /// Payment gateway (refunds) over http: attempts after the first, on connection errors,
        /// timeouts, 5xx and 429 (never on another 4xx), with exponential
        /// backoff and jitter; the same idempotency key every time.
        gateways_payments_retries: u32 = Int<u32> {
            key: "gateways.payments.retries",
            default: 2,
            range: 0..=10,
        }
        /// Most unpaid orders one user may have at once; one more is refused
        /// (409 TOO_MANY_UNPAID_ORDERS) until one is paid or closes. A shopper
        /// rarely has more than one or two checkouts open; 5 leaves room for
        /// retries and a second device while capping what a script can hold
        /// for order_close_after. 0 = no limit.
        limits_unpaid_orders_per_user: u32 = Int<u32> {
            key: "limits.unpaid_orders_per_user",
            default: 5,
        }
        /// Most units of one SKU a user may hold across its unpaid orders (409
        /// SKU_LIMIT_EXCEEDED beyond). 20 covers a household's order of one
        /// item (a case of 12, a few spares) while one script can hold no more
        /// than 20 units of a scarce product instead of the whole stock (up to
        /// 10,000 a line before); raise it for bulk buyers. 0 = no limit.
        limits_units_per_sku_per_user: u32 = Int<u32> {
            key: "limits.units_per_sku_per_user",
            default: 20,
        }
        /// Orders one caller may create for one user per minute (one bucket per
        /// API token and user id), after a burst of limits.order_burst_per_user;
        /// over it: 429 RATE_LIMITED with Retry-After. 30 a minute is one every
        /// 2 s, far above a shopper's pace. 0 = no limit.
        limits_orders_per_minute_per_user: u32 = Int<u32> {
            key: "limits.orders_per_minute_per_user",
            default: 30,
        }
        /// Orders one caller may create for one user at once before
        /// limits.orders_per_minute_per_user applies.
        limits_order_burst_per_user: u32 = Int<u32> {
            key: "limits.order_burst_per_user",
            default: 10,
            range: 1..,
        }
        /// Orders one API token may create per second for all its users
        /// together (a ceiling for the shop's whole traffic, and for a script
        /// rotating user ids); over it: 429 RATE_LIMITED. Set it near what the
        /// database sustains. 0 = no limit.
        limits_orders_per_second_per_token: u32 = Int<u32> {
            key: "limits.orders_per_second_per_token",
            default: 1_000,
        }
        /// Orders one API token may create at once before
        /// limits.orders_per_second_per_token applies.
        limits_order_burst_per_token: u32 = Int<u32> {
            key: "limits.order_burst_per_token",
            default: 2_000,
            range: 1..,
        }
        /// Failed dashboard sign-ins (an unknown token, or not an operator's)
        /// one client address (IPv6: its /64) may make per minute, all at once
        /// or spread; past them every sign-in from it is 429 RATE_LIMITED, with
        /// Retry-After, until a failure has aged out (one every 60/N s). Behind
        /// a reverse proxy every client has the proxy's address: limit sign-ins
        /// there too. 0 = no limit.
        limits_signin_failures_per_minute: u32 = Int<u32> {
            key: "limits.signin_failures_per_minute",
            default: 10,
        }
        /// Most clients each rate limit keeps track of at once (about 200 bytes
        /// each); past it, idle ones are forgotten first, so rotating user ids
        /// or addresses cannot grow memory.
        limits_tracked_clients: usize = Int<usize> {
            key: "limits.tracked_clients",
            default: 100_000,
            range: 1..,
        }
        /// Seed the demo catalog on start (only products not yet present).
        seed_catalog: bool = Flag {
            key: "seed_catalog",
            default: true,
        }
        /// Log filter (tracing's EnvFilter syntax).
        log: String = LogFilter {
            key: "log",
            default: DEFAULT_LOG.to_owned(),
        }

        // The fakes. The seed document: SMS ~100 ms, logistics ~500 ms, both
        // with spikes past 1 s.

        /// Fake SMS gateway: typical latency.
        sms_latency: Duration = Millis {
            key: "fakes.sms.latency_ms",
            alias: "sms_latency_ms",
            default: ms(100),
        }
        /// Fake SMS gateway: uniform jitter added to the latency (0..=jitter).
        sms_jitter: Duration = Millis {
            key: "fakes.sms.jitter_ms",
            alias: "sms_jitter_ms",
            default: ms(40),
        }
        /// Fake SMS gateway: probability that a call hits a latency spike.
        sms_spike_probability: f64 = Probability {
            key: "fakes.sms.spike_probability",
            alias: "sms_spike_probability",
            default: 0.02,
        }
        /// Fake SMS gateway: latency of a spike.
        sms_spike: Duration = Millis {
            key: "fakes.sms.spike_ms",
            alias: "sms_spike_ms",
            default: ms(1_200),
        }
        /// Fake SMS gateway: probability that a call fails.
        sms_failure_rate: f64 = Probability {
            key: "fakes.sms.failure_rate",
            alias: "sms_failure_rate",
            default: 0.0,
        }
        /// Fake logistics system: typical latency.
        logistics_latency: Duration = Millis {
            key: "fakes.logistics.latency_ms",
            alias: "logistics_latency_ms",
            default: ms(500),
        }
        /// Fake logistics system: uniform jitter added to the latency.
        logistics_jitter: Duration = Millis {
            key: "fakes.logistics.jitter_ms",
            alias: "logistics_jitter_ms",
            default: ms(150),
        }
        /// Fake logistics system: probability of a latency spike.
        logistics_spike_probability: f64 = Probability {
            key: "fakes.logistics.spike_probability",
            alias: "logistics_spike_probability",
            default: 0.02,
        }
        /// Fake logistics system: latency of a spike.
        logistics_spike: Duration = Millis {
            key: "fakes.logistics.spike_ms",
            alias: "logistics_spike_ms",
            default: ms(1_500),
        }
        /// Fake logistics system: probability that a call fails.
        logistics_failure_rate: f64 = Probability {
            key: "fakes.logistics.failure_rate",
            alias: "logistics_failure_rate",
            default: 0.0,
        }
        /// Fake payment gateway (refunds): typical latency (jitter: a quarter of it).
        payment_gateway_latency: Duration = Millis {
            key: "fakes.payment_gateway.latency_ms",
            alias: "payment_gateway_latency_ms",
            default: ms(200),
        }
        /// Fake payment gateway: probability that a refund call fails.
        payment_gateway_failure_rate: f64 = Probability {
            key: "fakes.payment_gateway.failure_rate",
            alias: "payment_gateway_failure_rate",
            default: 0.0,
        }
        }
    };
}
