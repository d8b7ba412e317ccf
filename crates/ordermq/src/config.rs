//! Layered configuration: built-in defaults, then a TOML file, then
//! `ORDERMQ_<KEY>` environment variables, each overriding the one before.
//!
//! Every key is listed once in [`KEYS`] with its documentation; `ordermq
//! config` prints them with their current values. An unknown key in the file
//! or an unknown `ORDERMQ_*` variable is an error: a typo must not silently
//! fall back to a default in production.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ordermq_messaging::{DelayLevels, DelayedDelivery, EmbeddedOptions};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use ordermq_gateways::Profile;

/// The payment secret used when none is configured. Public, so never safe.
pub const DEV_PAYMENT_SECRET: &str = "ordermq-dev-secret-change-me";
/// The carriers' callback secret used when none is configured. Public, so never safe.
pub const DEV_LOGISTICS_SECRET: &str = "ordermq-dev-carrier-secret-change-me";

/// Parses a duration like `500ms`, `20s`, `2m`, `1h` (a bare number is seconds).
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{raw:?} is not a duration like 500ms, 20s, 2m"))?;
    let seconds = match unit {
        "ms" => value / 1e3,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{raw:?}: unknown unit {unit:?} (use ms, s, m, h)")),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("{raw:?} is not a positive duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Int,
    Float,
    Bool,
}

struct Key {
    name: &'static str,
    kind: Kind,
    doc: &'static str,
}

const fn key(name: &'static str, kind: Kind, doc: &'static str) -> Key {
    Key { name, kind, doc }
}

/// Every configuration key. The env variable is `ORDERMQ_` + the upper-cased name.
const KEYS: &[Key] = &[
    key(
        "http_addr",
        Kind::Str,
        "Address the HTTP API and dashboard listen on.",
    ),
    key(
        "data_dir",
        Kind::Str,
        "Directory for SQLite databases and the embedded broker's store.",
    ),
    key(
        "database_url",
        Kind::Str,
        "sqlite://PATH or postgres://USER:PASS@HOST/DB. Default: sqlite://<data_dir>/orders.db (plus one file per downstream system).",
    ),
    key(
        "payment_secret",
        Kind::Str,
        "Shared secret of payment-gateway callbacks (X-Signature = hex HMAC-SHA256 of the body). Unset: a public dev secret, with a warning.",
    ),
    key(
        "namesrv_addr",
        Kind::Str,
        "RocketMQ NameServer list, e.g. ns1:9876;ns2:9876. Set: use that cluster. Unset: start an embedded NameServer + broker on loopback.",
    ),
    key(
        "embedded_namesrv_port",
        Kind::Int,
        "Port of the embedded NameServer (0 = any free port).",
    ),
    key(
        "embedded_broker_port",
        Kind::Int,
        "Port of the embedded broker (0 = any free port); it also uses port-2 (fast/VIP) and port+1 (HA).",
    ),
    key(
        "retry_delay_levels",
        Kind::Str,
        "RocketMQ messageDelayLevel, e.g. \"1s 5s 10s 30s 1m 2m\": the embedded broker's (the n-th redelivery of a failed message waits level 3+n), and the levels delayed closes hop through (delayed_delivery = levels). With an external cluster whose messageDelayLevel is not the default, set it to the cluster's. Unset: RocketMQ's default (1s 5s 10s 30s 1m ... 2h).",
    ),
    key(
        "embedded_message_index",
        Kind::Bool,
        "Embedded broker only: index messages by key for RocketMQ's query by key (mqadmin queryMsgByKey). Off: less CPU and memory per message; orders' events are still visible in ordermq's own API.",
    ),
    key(
        "delayed_delivery",
        Kind::Str,
        "How unpaid orders' closes are delayed. levels: RocketMQ delay levels, on any RocketMQ 4.x/5.x; a close hops through the levels until due and fires at most one shortest level (1 s) late. timer: RocketMQ 5 timer messages (the broker must enable its timer wheel; the embedded one then holds ~37 MiB more memory).",
    ),
    key(
        "max_reconsume_times",
        Kind::Int,
        "Redeliveries of a failing message before RocketMQ moves it to %DLQ%<group>.",
    ),
    key(
        "consumer_concurrency",
        Kind::Int,
        "Deliveries each consumer group handles at once (needs rate x third-party latency).",
    ),
    key(
        "write_batch_max",
        Kind::Int,
        "Most creates/payments sharing one commit (group commit).",
    ),
    key(
        "write_linger_ms",
        Kind::Int,
        "Group commit under load: when payments are queuing (the last commit carried 4 or more), wait up to this long for more before committing. Fewer, larger commits (less CPU per payment) for up to this much payment latency. 0 = commit what is queued.",
    ),
    key(
        "effect_linger_ms",
        Kind::Int,
        "Group commit in each downstream system under load: when its consumer batches are queuing (the last commit carried 2 or more), wait up to this long for more before committing. Fewer commits (less CPU and disk per event) for up to this much fan-out delay. 0 = commit what is queued.",
    ),
    key(
        "fanout_nice",
        Kind::Int,
        "How much lower the fan-out's threads run than the payment path (nice value added to the broker, relay, consumers and downstream systems' threads, 0-19): a waking payment runs ahead of them. 0 = same priority.",
    ),
    key(
        "relay_batch_size",
        Kind::Int,
        "Outbox rows the relay claims and publishes per round.",
    ),
    key(
        "relay_linger_ms",
        Kind::Int,
        "After a round that published, the relay lets events gather this long before the next (unless a full batch waits): fewer, larger sends and pulls for up to this much fan-out delay. 0 = go on the next commit.",
    ),
    key(
        "topic_queues",
        Kind::Int,
        "Queues per topic when ordermq creates its topics (embedded broker, or a cluster that allows it). At least the instances consuming each group; fewer queues mean larger batches per pull.",
    ),
    key(
        "sms_latency_ms",
        Kind::Int,
        "Fake SMS gateway: typical latency.",
    ),
    key(
        "sms_jitter_ms",
        Kind::Int,
        "Fake SMS gateway: uniform jitter added to the latency (0..=jitter).",
    ),
    key(
        "sms_spike_probability",
        Kind::Float,
        "Fake SMS gateway: probability that a call hits a latency spike.",
    ),
    key(
        "sms_spike_ms",
        Kind::Int,
        "Fake SMS gateway: latency of a spike.",
    ),
    key(
        "sms_failure_rate",
        Kind::Float,
        "Fake SMS gateway: probability that a call fails.",
    ),
    key(
        "logistics_latency_ms",
        Kind::Int,
        "Fake logistics system: typical latency.",
    ),
    key(
        "logistics_jitter_ms",
        Kind::Int,
        "Fake logistics system: uniform jitter added to the latency.",
    ),
    key(
        "logistics_spike_probability",
        Kind::Float,
        "Fake logistics system: probability of a latency spike.",
    ),
    key(
        "logistics_spike_ms",
        Kind::Int,
        "Fake logistics system: latency of a spike.",
    ),
    key(
        "logistics_failure_rate",
        Kind::Float,
        "Fake logistics system: probability that a call fails.",
    ),
    key(
        "order_close_after",
        Kind::Str,
        "An unpaid order closes itself (stock released) this long after creation, e.g. 30m, 90s.",
    ),
    key(
        "close_sweep_interval",
        Kind::Str,
        "Backstop for lost close messages: every interval, close UNPAID orders overdue by more than one interval (indexed, never a scan). 0s disables it.",
    ),
    key(
        "payment_gateway_latency_ms",
        Kind::Int,
        "Fake payment gateway (refunds): typical latency.",
    ),
    key(
        "payment_gateway_failure_rate",
        Kind::Float,
        "Fake payment gateway: probability that a refund call fails.",
    ),
    key(
        "refund_attempts",
        Kind::Int,
        "Gateway refund attempts per delivery (with backoff) before RocketMQ redelivers later; after max_reconsume_times deliveries the refund is FAILED.",
    ),
    key(
        "logistics_timeout_ms",
        Kind::Int,
        "How long the warehouse waits for the logistics system before retrying later.",
    ),
    key(
        "logistics_secret",
        Kind::Str,
        "Shared secret of carrier callbacks (POST /api/logistics/notify, X-Signature as for payments). Unset: a public dev secret, with a warning.",
    ),
    key(
        "seed_catalog",
        Kind::Bool,
        "Seed the demo catalog on start (only products not yet present).",
    ),
    key(
        "log",
        Kind::Str,
        "Log filter, e.g. info or ordermq=debug,info.",
    ),
];

/// ordermq's settings. Field names are the keys of [`KEYS`].
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub http_addr: String,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub payment_secret: Option<String>,
    pub namesrv_addr: Option<String>,
    pub embedded_namesrv_port: u16,
    pub embedded_broker_port: u16,
    pub retry_delay_levels: Option<String>,
    pub delayed_delivery: String,
    pub embedded_message_index: bool,
    pub max_reconsume_times: i32,
    pub consumer_concurrency: u32,
    pub relay_batch_size: usize,
    pub relay_linger_ms: u64,
    pub topic_queues: i32,
    pub write_batch_max: usize,
    pub write_linger_ms: u64,
    pub effect_linger_ms: u64,
    pub fanout_nice: i32,
    pub sms_latency_ms: u64,
    pub sms_jitter_ms: u64,
    pub sms_spike_probability: f64,
    pub sms_spike_ms: u64,
    pub sms_failure_rate: f64,
    pub logistics_latency_ms: u64,
    pub logistics_jitter_ms: u64,
    pub logistics_spike_probability: f64,
    pub logistics_spike_ms: u64,
    pub logistics_failure_rate: f64,
    pub order_close_after: String,
    pub close_sweep_interval: String,
    pub payment_gateway_latency_ms: u64,
    pub payment_gateway_failure_rate: f64,
    pub refund_attempts: u32,
    pub logistics_timeout_ms: u64,
    pub logistics_secret: Option<String>,
    pub seed_catalog: bool,
    pub log: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http_addr: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./data"),
            database_url: None,
            payment_secret: None,
            namesrv_addr: None,
            embedded_namesrv_port: 19876,
            embedded_broker_port: 20911,
            retry_delay_levels: None,
            delayed_delivery: "levels".into(),
            embedded_message_index: false,
            max_reconsume_times: 16,
            consumer_concurrency: 64,
            relay_batch_size: 512,
            // Larger batches on the wire for a little fan-out delay. Side by
            // side at 1,000 payments/s (docs/benchmarks.md): 10 ms and 4
            // queues took 1,060-1,100 µs of CPU per payment against
            // 1,870-1,890 with no linger and 8 queues; later, 25 ms took
            // 1,090-1,120 against 10 ms's 1,370-1,400 on a slower machine
            // (and 750-780 against 840-860 at 1,900/s), for end-to-end p99
            // 60 ms instead of 50. 50 ms saved ~6 % more but pushed e2e p99
            // past 100 ms at 1,900/s.
            relay_linger_ms: 25,
            topic_queues: 4,
            write_batch_max: 256,
            // Side by side at 5,000/s (docs/benchmarks.md): 307-335 µs of CPU
            // per payment with 2 ms against 371-396 without, payment p99 lower.
            write_linger_ms: 2,
            effect_linger_ms: 5,
            fanout_nice: 10,
            // The seed document: SMS ~100 ms, logistics ~500 ms, both with spikes past 1 s.
            sms_latency_ms: 100,
            sms_jitter_ms: 40,
            sms_spike_probability: 0.02,
            sms_spike_ms: 1_200,
            sms_failure_rate: 0.0,
            logistics_latency_ms: 500,
            logistics_jitter_ms: 150,
            logistics_spike_probability: 0.02,
            logistics_spike_ms: 1_500,
            logistics_failure_rate: 0.0,
            order_close_after: "30m".into(),
            close_sweep_interval: "60s".into(),
            payment_gateway_latency_ms: 200,
            payment_gateway_failure_rate: 0.0,
            refund_attempts: 3,
            logistics_timeout_ms: 5_000,
            logistics_secret: None,
            seed_catalog: true,
            // The RocketMQ crates log first-run chatter at WARN (missing state
            // files, dev security profile, empty retry routes): show their errors only.
            log: "warn,rocketmq_broker=error,rocketmq_store=error,rocketmq_namesrv=error,\
                  rocketmq_runtime=error,rocketmq_transport=error,rocketmq_client_rust=error,\
                  ordermq=info,ordermq_store=info,ordermq_messaging=info,ordermq_api=info"
                .into(),
        }
    }
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("unknown configuration key {0:?} (run `ordermq config` to list the keys)")]
    UnknownKey(String),
    #[error("{var}={value:?}: expected {expected}")]
    BadEnvValue {
        var: String,
        value: String,
        expected: &'static str,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Defaults, then `file` (if given), then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// As [`Config::load`], with the environment given explicitly (tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let table: toml::Table = text.parse().map_err(|source| ConfigError::Parse {
                    path: path.to_owned(),
                    source,
                })?;
                if let Some(unknown) = table.keys().find(|k| find_key(k).is_none()) {
                    return Err(ConfigError::UnknownKey(unknown.clone()));
                }
                table
            }
            None => toml::Table::new(),
        };
        for (var, value) in env {
            let Some(name) = var.strip_prefix("ORDERMQ_") else {
                continue;
            };
            let name = name.to_ascii_lowercase();
            if name == "config" {
                continue; // the config file's path, handled by the caller
            }
            let key = find_key(&name).ok_or_else(|| ConfigError::UnknownKey(var.clone()))?;
            table.insert(name, env_value(key, &var, &value)?);
        }
        let config = Config::deserialize(toml::Value::Table(table))
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.http_addr
            .parse::<SocketAddr>()
            .map_err(|e| ConfigError::Invalid(format!("http_addr {:?}: {e}", self.http_addr)))?;
        for (name, p) in [
            ("sms_spike_probability", self.sms_spike_probability),
            ("sms_failure_rate", self.sms_failure_rate),
            (
                "logistics_spike_probability",
                self.logistics_spike_probability,
            ),
            ("logistics_failure_rate", self.logistics_failure_rate),
            (
                "payment_gateway_failure_rate",
                self.payment_gateway_failure_rate,
            ),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be within 0..=1, got {p}"
                )));
            }
        }
        if let Some(addr) = &self.namesrv_addr
            && addr.split(';').any(|a| a.trim().rsplit_once(':').is_none())
        {
            return Err(ConfigError::Invalid(format!(
                "namesrv_addr {addr:?}: expected host:port[;host:port...]"
            )));
        }
        for (name, raw) in [
            ("order_close_after", &self.order_close_after),
            ("close_sweep_interval", &self.close_sweep_interval),
        ] {
            parse_duration(raw).map_err(|e| ConfigError::Invalid(format!("{name}: {e}")))?;
        }
        if self.refund_attempts == 0 {
            return Err(ConfigError::Invalid("refund_attempts must be > 0".into()));
        }
        if let Some(levels) = &self.retry_delay_levels {
            DelayLevels::parse(levels)
                .map_err(|e| ConfigError::Invalid(format!("retry_delay_levels {e}")))?;
        }
        if !matches!(self.delayed_delivery.as_str(), "levels" | "timer") {
            return Err(ConfigError::Invalid(format!(
                "delayed_delivery {:?}: expected levels or timer",
                self.delayed_delivery
            )));
        }
        if self.relay_batch_size == 0
            || self.topic_queues <= 0
            || self.write_batch_max == 0
            || self.consumer_concurrency == 0
            || self.max_reconsume_times < 0
        {
            return Err(ConfigError::Invalid(
                "relay_batch_size, topic_queues, write_batch_max and consumer_concurrency must be > 0, max_reconsume_times >= 0".into(),
            ));
        }
        if !(0..=19).contains(&self.fanout_nice) {
            return Err(ConfigError::Invalid(format!(
                "fanout_nice must be within 0..=19 (how much lower the fan-out runs), got {}",
                self.fanout_nice
            )));
        }
        Ok(())
    }

    /// The database URL, defaulting to SQLite under the data directory.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("orders.db").display()))
    }

    /// How delayed messages (closes) reach their due time.
    pub fn delayed_delivery(&self) -> DelayedDelivery {
        match self.delayed_delivery.as_str() {
            "timer" => DelayedDelivery::Timer,
            _ => DelayedDelivery::Levels(
                self.retry_delay_levels
                    .as_deref()
                    .map(|levels| DelayLevels::parse(levels).expect("validated at load"))
                    .unwrap_or_default(),
            ),
        }
    }

    /// The embedded NameServer + broker this configuration asks for.
    pub fn embedded_options(&self) -> EmbeddedOptions {
        EmbeddedOptions {
            store_dir: self.data_dir.join("rocketmq"),
            namesrv_port: self.embedded_namesrv_port,
            broker_port: self.embedded_broker_port,
            delay_levels: self.retry_delay_levels.clone(),
            timer_wheel: self.delayed_delivery() == DelayedDelivery::Timer,
            message_index: self.embedded_message_index,
        }
    }

    /// How long an unpaid order lives.
    pub fn close_after(&self) -> Duration {
        parse_duration(&self.order_close_after).expect("validated at load")
    }

    /// The backstop sweep's period; zero disables it.
    pub fn close_sweep_interval(&self) -> Duration {
        parse_duration(&self.close_sweep_interval).expect("validated at load")
    }

    /// The carriers' callback secret, and whether it is the public development one.
    pub fn logistics_secret(&self) -> (&str, bool) {
        match &self.logistics_secret {
            Some(secret) => (secret, false),
            None => (DEV_LOGISTICS_SECRET, true),
        }
    }

    /// How the fake payment gateway behaves (refunds).
    pub fn payment_gateway_profile(&self) -> Profile {
        Profile::from_millis(
            self.payment_gateway_latency_ms,
            self.payment_gateway_latency_ms / 4,
            0.0,
            0,
            self.payment_gateway_failure_rate,
        )
    }

    /// The payment secret, and whether it is the public development one.
    pub fn payment_secret(&self) -> (&str, bool) {
        match &self.payment_secret {
            Some(secret) => (secret, false),
            None => (DEV_PAYMENT_SECRET, true),
        }
    }

    /// How the fake SMS gateway behaves.
    pub fn sms_profile(&self) -> Profile {
        Profile::from_millis(
            self.sms_latency_ms,
            self.sms_jitter_ms,
            self.sms_spike_probability,
            self.sms_spike_ms,
            self.sms_failure_rate,
        )
    }

    /// How the fake logistics system behaves.
    pub fn logistics_profile(&self) -> Profile {
        Profile::from_millis(
            self.logistics_latency_ms,
            self.logistics_jitter_ms,
            self.logistics_spike_probability,
            self.logistics_spike_ms,
            self.logistics_failure_rate,
        )
    }

    /// Every key with its documentation and current value (secrets hidden).
    pub fn describe(&self) -> String {
        let current = |name: &str| -> String {
            match name {
                "http_addr" => self.http_addr.clone(),
                "data_dir" => self.data_dir.display().to_string(),
                "database_url" => ordermq_store::redact(&self.database_url()),
                "payment_secret" => match self.payment_secret {
                    Some(_) => "(set)".into(),
                    None => "(unset: dev secret)".into(),
                },
                "namesrv_addr" => self
                    .namesrv_addr
                    .clone()
                    .unwrap_or_else(|| "(unset: embedded broker)".into()),
                "embedded_namesrv_port" => self.embedded_namesrv_port.to_string(),
                "embedded_broker_port" => self.embedded_broker_port.to_string(),
                "retry_delay_levels" => self
                    .retry_delay_levels
                    .clone()
                    .unwrap_or_else(|| "(unset: RocketMQ default)".into()),
                "delayed_delivery" => self.delayed_delivery.clone(),
                "embedded_message_index" => self.embedded_message_index.to_string(),
                "max_reconsume_times" => self.max_reconsume_times.to_string(),
                "consumer_concurrency" => self.consumer_concurrency.to_string(),
                "relay_batch_size" => self.relay_batch_size.to_string(),
                "relay_linger_ms" => self.relay_linger_ms.to_string(),
                "topic_queues" => self.topic_queues.to_string(),
                "write_batch_max" => self.write_batch_max.to_string(),
                "write_linger_ms" => self.write_linger_ms.to_string(),
                "effect_linger_ms" => self.effect_linger_ms.to_string(),
                "fanout_nice" => self.fanout_nice.to_string(),
                "sms_latency_ms" => self.sms_latency_ms.to_string(),
                "sms_jitter_ms" => self.sms_jitter_ms.to_string(),
                "sms_spike_probability" => self.sms_spike_probability.to_string(),
                "sms_spike_ms" => self.sms_spike_ms.to_string(),
                "sms_failure_rate" => self.sms_failure_rate.to_string(),
                "logistics_latency_ms" => self.logistics_latency_ms.to_string(),
                "logistics_jitter_ms" => self.logistics_jitter_ms.to_string(),
                "logistics_spike_probability" => self.logistics_spike_probability.to_string(),
                "logistics_spike_ms" => self.logistics_spike_ms.to_string(),
                "logistics_failure_rate" => self.logistics_failure_rate.to_string(),
                "order_close_after" => self.order_close_after.clone(),
                "close_sweep_interval" => self.close_sweep_interval.clone(),
                "payment_gateway_latency_ms" => self.payment_gateway_latency_ms.to_string(),
                "payment_gateway_failure_rate" => self.payment_gateway_failure_rate.to_string(),
                "refund_attempts" => self.refund_attempts.to_string(),
                "logistics_timeout_ms" => self.logistics_timeout_ms.to_string(),
                "logistics_secret" => match self.logistics_secret {
                    Some(_) => "(set)".into(),
                    None => "(unset: dev secret)".into(),
                },
                "seed_catalog" => self.seed_catalog.to_string(),
                "log" => self.log.clone(),
                other => unreachable!("key {other} has no value"),
            }
        };
        let mut out = String::new();
        for key in KEYS {
            let _ = writeln!(
                out,
                "{:<30} ORDERMQ_{:<30} = {}\n    {}",
                key.name,
                key.name.to_ascii_uppercase(),
                current(key.name),
                key.doc
            );
        }
        out
    }
}

fn find_key(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

fn env_value(key: &Key, var: &str, value: &str) -> Result<toml::Value, ConfigError> {
    let bad = |expected| ConfigError::BadEnvValue {
        var: var.to_owned(),
        value: value.to_owned(),
        expected,
    };
    Ok(match key.kind {
        Kind::Str => toml::Value::String(value.to_owned()),
        Kind::Int => toml::Value::Integer(value.trim().parse().map_err(|_| bad("an integer"))?),
        Kind::Float => toml::Value::Float(value.trim().parse().map_err(|_| bad("a number"))?),
        Kind::Bool => toml::Value::Boolean(match value.trim() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(bad("true or false")),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_the_embedded_single_process_setup() {
        let config = Config::load_from(None, env(&[])).unwrap();
        assert_eq!(config.http_addr, "127.0.0.1:8080");
        assert!(config.namesrv_addr.is_none());
        assert_eq!(config.database_url(), "sqlite://./data/orders.db");
        assert_eq!(config.payment_secret(), (DEV_PAYMENT_SECRET, true));
    }

    #[test]
    fn environment_overrides_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ordermq.toml");
        std::fs::write(
            &file,
            "http_addr = \"127.0.0.1:9000\"\nsms_latency_ms = 5\n",
        )
        .unwrap();
        let config = Config::load_from(
            Some(&file),
            env(&[
                ("ORDERMQ_HTTP_ADDR", "127.0.0.1:9001"),
                ("ORDERMQ_NAMESRV_ADDR", "ns1:9876;ns2:9876"),
                ("ORDERMQ_SMS_FAILURE_RATE", "0.3"),
                ("ORDERMQ_SEED_CATALOG", "false"),
                ("ORDERMQ_CONFIG", "ignored-here"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(config.http_addr, "127.0.0.1:9001");
        assert_eq!(config.sms_latency_ms, 5);
        assert_eq!(config.sms_failure_rate, 0.3);
        assert!(!config.seed_catalog);
        assert_eq!(config.namesrv_addr.as_deref(), Some("ns1:9876;ns2:9876"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let err = Config::load_from(None, env(&[("ORDERMQ_HTTP_ADRR", "x")])).unwrap_err();
        assert!(matches!(err, ConfigError::UnknownKey(ref k) if k == "ORDERMQ_HTTP_ADRR"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "databse_url = \"x\"\n").unwrap();
        assert!(matches!(
            Config::load_from(Some(&file), env(&[])),
            Err(ConfigError::UnknownKey(_))
        ));
        assert!(matches!(
            Config::load_from(None, env(&[("ORDERMQ_RELAY_BATCH_SIZE", "lots")])),
            Err(ConfigError::BadEnvValue { .. })
        ));
        assert!(matches!(
            Config::load_from(None, env(&[("ORDERMQ_HTTP_ADDR", "nowhere")])),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            Config::load_from(None, env(&[("ORDERMQ_SMS_FAILURE_RATE", "1.5")])),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            Config::load_from(None, env(&[("ORDERMQ_NAMESRV_ADDR", "ns1")])),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            Config::load_from(None, env(&[("ORDERMQ_TOPIC_QUEUES", "0")])),
            Err(ConfigError::Invalid(_))
        ));
        let tuned = Config::load_from(
            None,
            env(&[
                ("ORDERMQ_TOPIC_QUEUES", "4"),
                ("ORDERMQ_RELAY_LINGER_MS", "10"),
            ]),
        )
        .unwrap();
        assert_eq!((tuned.topic_queues, tuned.relay_linger_ms), (4, 10));
        for bad in ["", "1x", "s", "0s", "1s two"] {
            assert!(
                matches!(
                    Config::load_from(None, env(&[("ORDERMQ_RETRY_DELAY_LEVELS", bad)])),
                    Err(ConfigError::Invalid(_))
                ),
                "{bad:?}"
            );
        }
        let fast =
            Config::load_from(None, env(&[("ORDERMQ_RETRY_DELAY_LEVELS", "1s 1s 2s 1m")])).unwrap();
        assert_eq!(fast.retry_delay_levels.as_deref(), Some("1s 1s 2s 1m"));
        assert_eq!(
            fast.delayed_delivery(),
            DelayedDelivery::Levels(DelayLevels::parse("1s 1s 2s 1m").unwrap())
        );
        assert_eq!(
            Config::default().delayed_delivery(),
            DelayedDelivery::Levels(DelayLevels::default())
        );
        let timer = Config::load_from(None, env(&[("ORDERMQ_DELAYED_DELIVERY", "timer")])).unwrap();
        assert_eq!(timer.delayed_delivery(), DelayedDelivery::Timer);
        assert!(matches!(
            Config::load_from(None, env(&[("ORDERMQ_DELAYED_DELIVERY", "wheel")])),
            Err(ConfigError::Invalid(_))
        ));
    }

    #[test]
    fn every_documented_key_is_settable_from_the_environment() {
        // The README documents these; they were once missing from KEYS, so
        // their variables were refused as unknown.
        let config = Config::load_from(
            None,
            env(&[
                ("ORDERMQ_CONSUMER_CONCURRENCY", "8"),
                ("ORDERMQ_WRITE_BATCH_MAX", "32"),
                ("ORDERMQ_WRITE_LINGER_MS", "0"),
            ]),
        )
        .unwrap();
        assert_eq!(config.consumer_concurrency, 8);
        assert_eq!(config.write_batch_max, 32);
        assert_eq!(config.write_linger_ms, 0);
        // And every field of Config is a key: describe() names them all.
        let described = Config::default().describe();
        let fields = serde_json::to_value(Config::default()).unwrap();
        for field in fields.as_object().unwrap().keys() {
            assert!(find_key(field).is_some(), "field {field} is not in KEYS");
            assert!(described.contains(field.as_str()));
        }
    }

    #[test]
    fn every_key_is_a_field_and_is_described() {
        let described = Config::default().describe();
        for key in KEYS {
            assert!(described.contains(key.name));
            // Each key must deserialize as a field (deny_unknown_fields rejects others).
            let mut table = toml::Table::new();
            let value = match key.kind {
                Kind::Str if key.name == "http_addr" => toml::Value::String("127.0.0.1:1".into()),
                Kind::Str => toml::Value::String("x".into()),
                Kind::Int => toml::Value::Integer(1),
                Kind::Float => toml::Value::Float(0.5),
                Kind::Bool => toml::Value::Boolean(true),
            };
            table.insert(key.name.into(), value);
            Config::deserialize(toml::Value::Table(table))
                .unwrap_or_else(|e| panic!("key {}: {e}", key.name));
        }
    }
}
