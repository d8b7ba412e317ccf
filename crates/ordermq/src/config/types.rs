//! The forms a setting can take: how each kind of value is parsed from a
//! variable or the TOML file, checked, and shown again.
//!
//! Why here: a value is parsed once, at load, into the type the code uses
//! (a [`Duration`], an enum, a [`SocketAddr`]), so an invalid value stops
//! ordermq at start with the key's name instead of panicking later, and no
//! caller re-parses a string it was told is valid.

use std::fmt;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use ordermq_messaging::DelayLevels;
use ordermq_messaging::embedded_options::{BrokerFlush, BrokerRole};

use super::table::{Form, Raw};

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

/// A duration in its shortest whole unit: `30m`, `60s` stays `1m`, `1500ms`.
pub(super) fn show_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    match ms {
        _ if !ms.is_multiple_of(1_000) => format!("{ms}ms"),
        _ if ms > 0 && ms.is_multiple_of(3_600_000) => format!("{}h", ms / 3_600_000),
        _ if ms > 0 && ms.is_multiple_of(60_000) => format!("{}m", ms / 60_000),
        _ => format!("{}s", ms / 1_000),
    }
}

/// A filesystem path.
pub(super) struct Dir;

impl Form for Dir {
    type Value = PathBuf;
    const ACCEPTS: &'static str = "a path";
    fn parse(raw: Raw<'_>) -> Result<PathBuf, String> {
        raw.text().map(PathBuf::from)
    }
    fn show(value: &PathBuf) -> Option<String> {
        Some(value.display().to_string())
    }
}

/// An IP address and port to listen on.
pub(super) struct Addr;

impl Form for Addr {
    type Value = SocketAddr;
    const ACCEPTS: &'static str = "an IP address and port, e.g. 127.0.0.1:8080";
    fn parse(raw: Raw<'_>) -> Result<SocketAddr, String> {
        let text = raw.text()?;
        text.trim().parse().map_err(|e| format!("{text:?}: {e}"))
    }
    fn show(value: &SocketAddr) -> Option<String> {
        Some(value.to_string())
    }
}

/// An IP address to bind and advertise.
pub(super) struct Ip;

impl Form for Ip {
    type Value = IpAddr;
    const ACCEPTS: &'static str = "an IP address, e.g. 10.0.0.5";
    fn parse(raw: Raw<'_>) -> Result<IpAddr, String> {
        let text = raw.text()?;
        let ip: IpAddr = text.trim().parse().map_err(|e| format!("{text:?}: {e}"))?;
        if ip.is_unspecified() {
            // The broker advertises this address: clients cannot connect to 0.0.0.0.
            return Err(format!(
                "{ip} is advertised to clients, who cannot connect to it: give the host's own address"
            ));
        }
        Ok(ip)
    }
    fn show(value: &IpAddr) -> Option<String> {
        Some(value.to_string())
    }
}

/// A RocketMQ cluster or broker name: what every client sees in routes.
pub(super) struct BrokerName;

impl Form for BrokerName {
    type Value = String;
    const ACCEPTS: &'static str = "1 to 64 letters, digits, '-' or '_'";
    fn parse(raw: Raw<'_>) -> Result<String, String> {
        let text = raw.text()?;
        let name = text.trim();
        if name.is_empty() || name.len() > 64 {
            return Err(format!("{text:?} is not 1 to 64 characters long"));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!(
                "{text:?} holds {c:?}: only letters, digits, '-' and '_'"
            ));
        }
        Ok(name.to_owned())
    }
    fn show(value: &String) -> Option<String> {
        Some(value.clone())
    }
}

/// A broker's role: `async_master`, `sync_master` or `slave`.
pub(super) struct Role;

impl Form for Role {
    type Value = BrokerRole;
    const ACCEPTS: &'static str = "async_master, sync_master or slave";
    fn parse(raw: Raw<'_>) -> Result<BrokerRole, String> {
        raw.text()?.parse()
    }
    fn show(value: &BrokerRole) -> Option<String> {
        Some(value.to_string())
    }
}

/// What one ordermq process runs (`role`): everything, the order service,
/// or one downstream system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProcessRole {
    /// The order service and all four systems in one process.
    #[default]
    All,
    /// The HTTP API, group commit, the relay, the reconciler and the order
    /// service's groups (close, refund, receipts, flash-sale orders).
    Order,
    /// One downstream system's group, its database and its receipts' relay.
    System(ordermq_domain::System),
}

impl ProcessRole {
    /// The name as configured (`all`, `order`, `credit`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Order => "order",
            Self::System(system) => system.name(),
        }
    }
}

impl fmt::Display for ProcessRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ProcessRole {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let name = text.trim();
        match name {
            "all" => Ok(Self::All),
            "order" => Ok(Self::Order),
            _ => ordermq_domain::System::ALL
                .into_iter()
                .find(|s| s.name() == name)
                .map(Self::System)
                .ok_or_else(|| {
                    format!(
                        "{text:?} is not a role: all, order, credit, marketing, push or warehouse"
                    )
                }),
        }
    }
}

/// The `role` key's form.
pub(super) struct RoleOfProcess;

impl Form for RoleOfProcess {
    type Value = ProcessRole;
    const ACCEPTS: &'static str = "all, order, credit, marketing, push or warehouse";
    fn parse(raw: Raw<'_>) -> Result<ProcessRole, String> {
        raw.text()?.parse()
    }
    fn show(value: &ProcessRole) -> Option<String> {
        Some(value.to_string())
    }
}

/// A whole number of type `T` (its range written per key in the table).
pub(super) struct Int<T>(PhantomData<T>);

impl<T: TryFrom<i64> + fmt::Display> Form for Int<T> {
    type Value = T;
    const ACCEPTS: &'static str = "a whole number";
    fn parse(raw: Raw<'_>) -> Result<T, String> {
        let n = raw.integer()?;
        T::try_from(n).map_err(|_| format!("{n} does not fit"))
    }
    fn show(value: &T) -> Option<String> {
        Some(value.to_string())
    }
}

/// A duration written as whole milliseconds (keys ending in `_ms`).
pub(super) struct Millis;

impl Form for Millis {
    type Value = Duration;
    const ACCEPTS: &'static str = "whole milliseconds, e.g. 250";
    fn parse(raw: Raw<'_>) -> Result<Duration, String> {
        let n = raw.integer()?;
        u64::try_from(n)
            .map(Duration::from_millis)
            .map_err(|_| format!("{n} is negative"))
    }
    fn show(value: &Duration) -> Option<String> {
        Some(value.as_millis().to_string())
    }
}

/// A duration with its unit: `500ms`, `90s`, `30m`, `2h`.
pub(super) struct Span;

impl Form for Span {
    type Value = Duration;
    const ACCEPTS: &'static str = "a duration like 500ms, 90s, 30m, 2h";
    fn parse(raw: Raw<'_>) -> Result<Duration, String> {
        parse_duration(raw.text()?)
    }
    fn show(value: &Duration) -> Option<String> {
        Some(show_duration(*value))
    }
}

/// A probability.
pub(super) struct Probability;

impl Form for Probability {
    type Value = f64;
    const ACCEPTS: &'static str = "a probability from 0 to 1, e.g. 0.02";
    fn parse(raw: Raw<'_>) -> Result<f64, String> {
        let p = raw.float()?;
        if (0.0..=1.0).contains(&p) {
            Ok(p)
        } else {
            Err(format!("{p} is not within 0..=1"))
        }
    }
    fn show(value: &f64) -> Option<String> {
        Some(value.to_string())
    }
}

/// On or off.
pub(super) struct Flag;

impl Form for Flag {
    type Value = bool;
    const ACCEPTS: &'static str = "true or false";
    fn parse(raw: Raw<'_>) -> Result<bool, String> {
        raw.boolean()
    }
    fn show(value: &bool) -> Option<String> {
        Some(value.to_string())
    }
}

/// A value that may be left unset; the table says what unset means.
pub(super) struct Optional<F>(PhantomData<F>);

impl<F: Form> Form for Optional<F> {
    type Value = Option<F::Value>;
    const ACCEPTS: &'static str = F::ACCEPTS;
    const SECRET: bool = F::SECRET;
    fn parse(raw: Raw<'_>) -> Result<Self::Value, String> {
        F::parse(raw).map(Some)
    }
    fn show(value: &Self::Value) -> Option<String> {
        value.as_ref().and_then(F::show)
    }
}

/// A RocketMQ NameServer list, `host:port[;host:port...]`.
pub(super) struct NameServers;

impl Form for NameServers {
    type Value = String;
    const ACCEPTS: &'static str = "host:port[;host:port...]";
    fn parse(raw: Raw<'_>) -> Result<String, String> {
        let list = raw.text()?;
        if list.split(';').any(|a| a.trim().rsplit_once(':').is_none()) {
            return Err(format!("{list:?} has an entry without a port"));
        }
        Ok(list.to_owned())
    }
    fn show(value: &String) -> Option<String> {
        Some(value.clone())
    }
}

/// A `tracing` filter such as `info` or `ordermq=debug,info`.
pub(super) struct LogFilter;

impl Form for LogFilter {
    type Value = String;
    const ACCEPTS: &'static str = "a log filter, e.g. info or ordermq=debug,info";
    fn parse(raw: Raw<'_>) -> Result<String, String> {
        let filter = raw.text()?;
        tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| e.to_string())?;
        Ok(filter.to_owned())
    }
    fn show(value: &String) -> Option<String> {
        Some(value.clone())
    }
}

/// RocketMQ's `messageDelayLevel`, parsed, with the text the embedded broker is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryLevels {
    text: String,
    levels: DelayLevels,
}

impl RetryLevels {
    /// The levels as RocketMQ writes them (`1s 5s 10s ...`).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed levels.
    pub fn levels(&self) -> &DelayLevels {
        &self.levels
    }
}

impl FromStr for RetryLevels {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let levels = DelayLevels::parse(text).map_err(|e| e.to_string())?;
        Ok(Self {
            text: text.to_owned(),
            levels,
        })
    }
}

impl Form for RetryLevels {
    type Value = Self;
    const ACCEPTS: &'static str = "delays separated by spaces, e.g. \"1s 5s 10s 30s 1m 2m\"";
    fn parse(raw: Raw<'_>) -> Result<Self, String> {
        raw.text()?.parse()
    }
    fn show(value: &Self) -> Option<String> {
        Some(value.text.clone())
    }
}

/// How unpaid orders' closes are delayed (the mode; the levels come from
/// `retry_delay_levels`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeliveryMode {
    /// RocketMQ delay levels, hopping until due.
    #[default]
    Levels,
    /// RocketMQ 5 timer messages.
    Timer,
}

impl FromStr for DeliveryMode {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "levels" => Ok(Self::Levels),
            "timer" => Ok(Self::Timer),
            other => Err(format!("{other:?} is neither levels nor timer")),
        }
    }
}

impl fmt::Display for DeliveryMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Levels => "levels",
            Self::Timer => "timer",
        })
    }
}

impl Form for DeliveryMode {
    type Value = Self;
    const ACCEPTS: &'static str = "levels or timer";
    fn parse(raw: Raw<'_>) -> Result<Self, String> {
        raw.text()?.parse()
    }
    fn show(value: &Self) -> Option<String> {
        Some(value.to_string())
    }
}

/// Whether order changes also write the data team's change feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FeedMode {
    /// One `TopicOrderChangeFeed` row per order change.
    On,
    /// None (the default): a shop that does not need the feed pays nothing
    /// for it.
    #[default]
    Off,
}

impl FromStr for FeedMode {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            other => Err(format!("{other:?} is neither on nor off")),
        }
    }
}

impl fmt::Display for FeedMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::On => "on",
            Self::Off => "off",
        })
    }
}

impl Form for FeedMode {
    type Value = Self;
    const ACCEPTS: &'static str = "on or off";
    fn parse(raw: Raw<'_>) -> Result<Self, String> {
        raw.text()?.parse()
    }
    fn show(value: &Self) -> Option<String> {
        Some(value.to_string())
    }
}

/// Which adapter serves a third party.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GatewayMode {
    /// The in-process fake (no third party is called).
    #[default]
    Fake,
    /// The provider over HTTP (docs/gateways.md).
    Http,
}

impl FromStr for GatewayMode {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "fake" => Ok(Self::Fake),
            "http" => Ok(Self::Http),
            other => Err(format!("{other:?} is neither fake nor http")),
        }
    }
}

impl fmt::Display for GatewayMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Fake => "fake",
            Self::Http => "http",
        })
    }
}

impl Form for GatewayMode {
    type Value = Self;
    const ACCEPTS: &'static str = "fake or http";
    fn parse(raw: Raw<'_>) -> Result<Self, String> {
        raw.text()?.parse()
    }
    fn show(value: &Self) -> Option<String> {
        Some(value.to_string())
    }
}

/// When the embedded broker answers a send: `sync` (on disk) or `async`.
pub(super) struct Flush;

impl Form for Flush {
    type Value = BrokerFlush;
    const ACCEPTS: &'static str = "sync or async";
    fn parse(raw: Raw<'_>) -> Result<BrokerFlush, String> {
        raw.text()?.parse()
    }
    fn show(value: &BrokerFlush) -> Option<String> {
        Some(value.to_string())
    }
}

/// A provider's base URL, `http(s)://host[:port][/path]`. Credentials in it
/// are refused: keys go in the `keys` settings, which never print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl(String);

impl HttpUrl {
    /// The URL as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for HttpUrl {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let rest = text
            .strip_prefix("http://")
            .or_else(|| text.strip_prefix("https://"))
            .ok_or("not an http:// or https:// URL")?;
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty() {
            return Err("no host".to_owned());
        }
        if authority.contains('@') {
            // Not echoed: the part before the @ is a password.
            return Err("credentials in the URL are refused (use the keys setting)".to_owned());
        }
        if rest.contains(['?', '#', ' ']) {
            return Err("a base URL has no query, fragment or space".to_owned());
        }
        Ok(Self(text.to_owned()))
    }
}

impl Form for HttpUrl {
    type Value = Self;
    const ACCEPTS: &'static str = "http(s)://host[:port][/path]";
    fn parse(raw: Raw<'_>) -> Result<Self, String> {
        raw.text()?.parse()
    }
    fn show(value: &Self) -> Option<String> {
        Some(value.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_show_in_their_shortest_unit() {
        for (text, shown) in [("30m", "30m"), ("60s", "1m"), ("90s", "90s"), ("2h", "2h")] {
            assert_eq!(show_duration(parse_duration(text).unwrap()), shown);
        }
        assert_eq!(show_duration(Duration::from_millis(1_500)), "1500ms");
        assert_eq!(show_duration(Duration::ZERO), "0s");
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn numbers_refuse_what_does_not_fit() {
        assert!(Int::<u16>::parse(Raw::Env("70000")).is_err());
        assert!(Int::<u32>::parse(Raw::Env("-1")).is_err());
        assert!(Millis::parse(Raw::Env("-5")).is_err());
        assert!(Probability::parse(Raw::Env("1.5")).is_err());
        assert_eq!(
            Millis::parse(Raw::Toml(&toml::Value::Integer(250))).unwrap(),
            Duration::from_millis(250)
        );
        assert!(Millis::parse(Raw::Toml(&toml::Value::String("250".into()))).is_err());
    }

    #[test]
    fn provider_urls_are_http_without_credentials() {
        for good in ["http://127.0.0.1:9090", "https://sms.example/v1/"] {
            assert_eq!(good.parse::<HttpUrl>().unwrap().as_str(), good);
        }
        for bad in [
            "ftp://x",
            "http://",
            "https://u:hunter2@host",
            "http://h/?a=1",
            "host:80",
        ] {
            let error = bad.parse::<HttpUrl>().unwrap_err();
            assert!(!error.contains("hunter2"), "{error}");
        }
        assert_eq!("http".parse::<GatewayMode>(), Ok(GatewayMode::Http));
        assert!("real".parse::<GatewayMode>().is_err());
    }
}
