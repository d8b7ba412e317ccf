//! Layered configuration: built-in defaults, then a TOML file, then
//! `ORDERMQ_<KEY>` environment variables, each overriding the one before.
//!
//! Why one table: every key is one entry in one table (`keys/`), from which the
//! [`Config`] struct, its defaults, loading, `ordermq config` and the
//! README's table are generated, so they cannot drift apart (a test holds the
//! README to the table). Values are parsed once, at load, into the types the
//! code uses; an invalid value or an unknown key stops ordermq at start with
//! the key's name, its variable and the accepted form, because a typo must
//! not silently fall back to a default in production. Secrets are
//! [`Secret`]s, which never print.
//!
//! # Layout
//! - `keys/`: the table itself, one entry per key, in three sections
//!   (deployment, tuning, edges) of one file each.
//! - `table.rs`: the macro that turns the table into code, and [`Key`].
//! - `types.rs`: how each kind of value is parsed and shown.
//! - `secret.rs`: [`Secret`], [`SigningKeys`], [`ApiTokens`] and [`DatabaseUrl`], redacted when printed.
//! - `security.rs`: the callback keys and API tokens in use, and the refusal
//!   to start with public ones on an address others can reach ([`Security`]).
//! - `load.rs`: the layering, unknown keys, skipped variables.

mod keys;
mod load;
mod secret;
mod security;
mod table;
#[cfg(test)]
mod tests;
mod types;

use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

use ordermq_api::rate_limit::{Rate, RateSettings};
use ordermq_domain::UserLimits;
use ordermq_messaging::{
    AclCredentials, BrokerRole, ClusterMember, DelayLevels, DelayedDelivery, EmbeddedOptions,
};
use thiserror::Error;

use ordermq_gateways::Profile;

pub use keys::{Config, KEYS};
pub use load::{CONFIG_FILE_VAR, ENV_PREFIX, TEST_ENV_PREFIX};
pub use secret::{ApiTokens, DatabaseUrl, REDACTED, Secret, SigningKeys};
pub use security::{PublicCredential, Security, SecurityError};
pub use table::Key;
pub use types::{
    DeliveryMode, FeedMode, GatewayMode, HttpUrl, ProcessRole, RetryLevels, parse_duration,
};

/// The payment secret used when none is configured. Public, so never safe.
pub const DEV_PAYMENT_SECRET: &str = "ordermq-dev-secret-change-me";
/// The carriers' callback secret used when none is configured. Public, so never safe.
pub const DEV_LOGISTICS_SECRET: &str = "ordermq-dev-carrier-secret-change-me";

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A TOML file.
    File(PathBuf),
    /// The process environment (or a bench `--set`).
    Environment,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "in {}", path.display()),
            Origin::Environment => f.write_str("in the environment"),
        }
    }
}

/// Why a configuration did not load.
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
    #[error(
        "unknown configuration key {given:?} {origin}{} (run `ordermq config` to list the keys)",
        suggestion.as_ref().map(|s| format!("; did you mean {s:?}?")).unwrap_or_default()
    )]
    UnknownKey {
        given: String,
        origin: Origin,
        suggestion: Option<String>,
    },
    #[error("{0}")]
    BadValue(Box<BadValue>),
    #[error("{0}")]
    Inconsistent(String),
    #[error("{key} ({var}) is required: {because}")]
    Missing {
        key: &'static str,
        var: String,
        because: String,
    },
    #[error("{key} is set twice {origin}, as {first} and as {second}")]
    Twice {
        key: &'static str,
        first: String,
        second: String,
        origin: Origin,
    },
}

/// A value that does not parse or is out of range.
#[derive(Debug, Error)]
pub struct BadValue {
    /// The key's name in the table.
    pub key: &'static str,
    /// The name it was set under (the new or the flat name, or the variable).
    pub given: String,
    /// The key's variable.
    pub var: String,
    /// Where the value came from.
    pub origin: Origin,
    /// The value as given (`[redacted]` for a secret).
    pub value: String,
    /// Why it was refused.
    pub reason: String,
    /// What the key accepts.
    pub accepted: String,
}

impl fmt::Display for BadValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            key,
            given,
            var,
            origin,
            value,
            reason,
            accepted,
        } = self;
        write!(f, "invalid value {value} for {key} ")?;
        if given == var {
            write!(f, "({var} {origin})")?;
        } else {
            write!(f, "(set as {given} {origin}; variable {var})")?;
        }
        write!(f, ": {reason}; expected {accepted}")
    }
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
        let mut config = Self::default();
        if let Some(path) = file {
            load::apply_file(&mut config, path)?;
        }
        load::apply_env(&mut config, env)?;
        config.check()?;
        Ok(config)
    }

    /// The RocketMQ ACL credentials, when both keys are set.
    pub fn rocketmq_acl(&self) -> Option<AclCredentials> {
        match (&self.rocketmq_access_key, &self.rocketmq_secret_key) {
            (Some(access), Some(secret)) => Some(AclCredentials {
                access_key: access.expose().to_owned(),
                secret_key: secret.expose().to_owned(),
            }),
            _ => None,
        }
    }

    /// What no single key can check: the ACL's two keys come together, and a
    /// gateway in http mode needs its URL and its keys.
    ///
    /// # Errors
    /// [`ConfigError::Inconsistent`] or [`ConfigError::Missing`], naming the
    /// keys.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.check_role()?;
        match (self.broker_role.is_master(), self.broker_id) {
            (true, 0) | (false, 1..) => {}
            (true, id) => {
                return Err(ConfigError::Inconsistent(format!(
                    "broker.role {} needs broker.id 0, not {id} (ORDERMQ_BROKER_ROLE, ORDERMQ_BROKER_ID): \
                     a master is id 0, its slaves 1 and up",
                    self.broker_role
                )));
            }
            (false, _) => {
                return Err(ConfigError::Inconsistent(
                    "broker.role slave needs broker.id 1 or more (ORDERMQ_BROKER_ROLE, ORDERMQ_BROKER_ID): \
                     id 0 is the master"
                        .to_owned(),
                ));
            }
        }
        if self.broker_role == BrokerRole::Slave && self.broker_namesrv_addr.is_none() {
            return Err(ConfigError::Missing {
                key: "broker.namesrv_addr",
                var: "ORDERMQ_BROKER_NAMESRV_ADDR".to_owned(),
                because: "a slave finds its master through the NameServers".to_owned(),
            });
        }
        if let (Some(_), None) | (None, Some(_)) =
            (&self.rocketmq_access_key, &self.rocketmq_secret_key)
        {
            return Err(ConfigError::Inconsistent(
                "rocketmq.access_key and rocketmq.secret_key (ORDERMQ_ROCKETMQ_ACCESS_KEY, \
                 ORDERMQ_ROCKETMQ_SECRET_KEY) go together: set both or neither"
                    .to_owned(),
            ));
        }
        for gateway in self.gateways() {
            if gateway.mode != GatewayMode::Http {
                continue;
            }
            let missing = |setting: &str| {
                let key = KEYS
                    .iter()
                    .find(|k| k.name == format!("gateways.{}.{setting}", gateway.name))
                    .expect("every gateway has url and keys");
                ConfigError::Missing {
                    key: key.name,
                    var: key.env_var(),
                    because: format!("gateways.{}.mode is http", gateway.name),
                }
            };
            if gateway.url.is_none() {
                return Err(missing("url"));
            }
            if gateway.keys.is_none() {
                return Err(missing("keys"));
            }
        }
        Ok(())
    }

    /// The SMS gateway's settings (`gateways.sms.*`).
    pub fn sms_gateway(&self) -> GatewaySettings<'_> {
        GatewaySettings {
            name: "sms",
            mode: self.gateways_sms_mode,
            url: self.gateways_sms_url.as_ref(),
            keys: self.gateways_sms_keys.as_ref(),
            timeout: self.gateways_sms_timeout,
            retries: self.gateways_sms_retries,
        }
    }

    /// The logistics system's settings (`gateways.logistics.*`).
    pub fn logistics_gateway(&self) -> GatewaySettings<'_> {
        GatewaySettings {
            name: "logistics",
            mode: self.gateways_logistics_mode,
            url: self.gateways_logistics_url.as_ref(),
            keys: self.gateways_logistics_keys.as_ref(),
            timeout: self.gateways_logistics_timeout,
            retries: self.gateways_logistics_retries,
        }
    }

    /// The payment gateway's settings (`gateways.payments.*`).
    pub fn payments_gateway(&self) -> GatewaySettings<'_> {
        GatewaySettings {
            name: "payments",
            mode: self.gateways_payments_mode,
            url: self.gateways_payments_url.as_ref(),
            keys: self.gateways_payments_keys.as_ref(),
            timeout: self.gateways_payments_timeout,
            retries: self.gateways_payments_retries,
        }
    }

    /// The three gateways' settings.
    pub fn gateways(&self) -> [GatewaySettings<'_>; 3] {
        [
            self.sms_gateway(),
            self.logistics_gateway(),
            self.payments_gateway(),
        ]
    }

    /// How much one user may hold in unpaid orders (`limits.*`; 0 = off).
    pub fn user_limits(&self) -> UserLimits {
        UserLimits::new(
            self.limits_unpaid_orders_per_user,
            self.limits_units_per_sku_per_user,
        )
    }

    /// The API's rate limits (`limits.*`; a rate of 0 = off).
    pub fn rate_settings(&self) -> RateSettings {
        RateSettings {
            orders_per_user: Rate::per_minute(
                self.limits_orders_per_minute_per_user,
                self.limits_order_burst_per_user,
            ),
            orders_per_token: Rate::per_second(
                self.limits_orders_per_second_per_token,
                self.limits_order_burst_per_token,
            ),
            signin_failures: Rate::per_minute(
                self.limits_signin_failures_per_minute,
                self.limits_signin_failures_per_minute,
            ),
            max_keys: self.limits_tracked_clients,
        }
    }

    /// Every per-user and rate limit off (`limits.*` = 0): for tests and
    /// benchmarks that load many orders per user, never for a shop.
    pub fn without_limits(mut self) -> Self {
        self.limits_unpaid_orders_per_user = 0;
        self.limits_units_per_sku_per_user = 0;
        self.limits_orders_per_minute_per_user = 0;
        self.limits_orders_per_second_per_token = 0;
        self
    }

    /// The database URL, defaulting to SQLite under the data directory. It
    /// holds the password: give it to the driver, print it through
    /// [`ordermq_store::redact`].
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.expose().to_owned(),
            None => format!("sqlite://{}", self.data_dir.join("orders.db").display()),
        }
    }

    /// What a role needs: a system's own process finds the broker through
    /// NameServers, and on a database server has a database of its own.
    fn check_role(&self) -> Result<(), ConfigError> {
        let ProcessRole::System(system) = self.role else {
            return Ok(());
        };
        if self.namesrv_addr.is_none() {
            return Err(ConfigError::Missing {
                key: "namesrv_addr",
                var: "ORDERMQ_NAMESRV_ADDR".to_owned(),
                because: format!(
                    "role {system} consumes from the cluster the order service publishes to",
                    system = system.name()
                ),
            });
        }
        self.system_database_url(system).map(|_| ())
    }

    /// A downstream system's own database (`<system>.database_url`);
    /// unset, its SQLite file under data_dir, but only while the order
    /// database is SQLite too: with a server, the system's database must be
    /// named (it is never the order database).
    fn system_database_url(&self, system: ordermq_domain::System) -> Result<String, ConfigError> {
        let configured = match system {
            ordermq_domain::System::Credit => &self.credit_database_url,
            ordermq_domain::System::Marketing => &self.marketing_database_url,
            ordermq_domain::System::Push => &self.push_database_url,
            ordermq_domain::System::Warehouse => &self.warehouse_database_url,
        };
        match (configured, &self.database_url) {
            (Some(url), _) => Ok(url.expose().to_owned()),
            (None, None) => Ok(format!(
                "sqlite://{}",
                self.data_dir
                    .join(format!("{}.db", system.name()))
                    .display()
            )),
            (None, Some(_)) => {
                let key = KEYS
                    .iter()
                    .find(|k| k.name == format!("{}.database_url", system.name()))
                    .expect("every system has a database_url key");
                Err(ConfigError::Missing {
                    key: key.name,
                    var: key.env_var(),
                    because: format!(
                        "role {} runs on a database server: the system has its own database, \
                         never the order database",
                        system.name()
                    ),
                })
            }
        }
    }

    /// The database this process opens and which of its databases it
    /// holds: the order database's URL (roles all and order; all also
    /// opens the systems' from it), or a system's own.
    ///
    /// # Errors
    /// [`ConfigError::Missing`] as [`Config::check`] says.
    pub fn role_database(&self) -> Result<(String, ordermq_store::Databases), ConfigError> {
        use ordermq_store::Databases;
        Ok(match self.role {
            ProcessRole::All => (self.database_url(), Databases::All),
            ProcessRole::Order => (self.database_url(), Databases::Orders),
            ProcessRole::System(system) => {
                (self.system_database_url(system)?, Databases::System(system))
            }
        })
    }

    /// The store's options from the `database_*` keys and
    /// `postgres_set_based` (pool sizes and the SQLite lanes as the store's
    /// defaults): one form for every server.
    pub fn store_options(&self) -> ordermq_store::StoreOptions {
        ordermq_store::StoreOptions {
            acquire_timeout: self.database_acquire_timeout,
            pg_fast_path: self.postgres_set_based,
            feed: match self.feed {
                FeedMode::On => ordermq_store::Feed::On,
                FeedMode::Off => ordermq_store::Feed::Off,
            },
            session: ordermq_store::SessionSettings {
                statement_timeout: self.database_statement_timeout,
                lock_timeout: self.database_lock_timeout,
                idle_in_transaction_timeout: self.database_idle_in_transaction_timeout,
            },
            ..ordermq_store::StoreOptions::default()
        }
    }

    /// How delayed messages (closes) reach their due time.
    pub fn delayed_delivery(&self) -> DelayedDelivery {
        match self.delayed_delivery {
            DeliveryMode::Timer => DelayedDelivery::Timer,
            DeliveryMode::Levels => DelayedDelivery::Levels(self.retry_levels()),
        }
    }

    /// The broker's delay levels (`retry_delay_levels`, else RocketMQ's
    /// default): the schedule of retries, and of closes' hops.
    pub fn retry_levels(&self) -> DelayLevels {
        self.retry_delay_levels
            .as_ref()
            .map(|levels| levels.levels().clone())
            .unwrap_or_default()
    }

    /// The embedded NameServer + broker this configuration asks for.
    pub fn embedded_options(&self) -> EmbeddedOptions {
        EmbeddedOptions {
            store_dir: self
                .broker_store_dir
                .clone()
                .unwrap_or_else(|| self.data_dir.join("rocketmq")),
            namesrv_port: self.embedded_namesrv_port,
            broker_port: self.embedded_broker_port,
            delay_levels: self
                .retry_delay_levels
                .as_ref()
                .map(|levels| levels.as_str().to_owned()),
            timer_wheel: self.delayed_delivery == DeliveryMode::Timer,
            message_index: self.embedded_message_index,
            flush: self.embedded_broker_flush,
            member: ClusterMember {
                cluster: self.broker_cluster.clone(),
                name: self.broker_name.clone(),
                id: u64::from(self.broker_id),
                role: self.broker_role,
                ip: self.broker_ip,
                namesrv_addr: self.broker_namesrv_addr.clone(),
            },
        }
    }

    /// How the fake SMS gateway behaves.
    pub fn sms_profile(&self) -> Profile {
        Profile {
            latency: self.sms_latency,
            jitter: self.sms_jitter,
            spike_probability: self.sms_spike_probability,
            spike: self.sms_spike,
            failure_rate: self.sms_failure_rate,
        }
    }

    /// How the fake logistics system behaves.
    pub fn logistics_profile(&self) -> Profile {
        Profile {
            latency: self.logistics_latency,
            jitter: self.logistics_jitter,
            spike_probability: self.logistics_spike_probability,
            spike: self.logistics_spike,
            failure_rate: self.logistics_failure_rate,
        }
    }

    /// How the fake payment gateway behaves (refunds).
    pub fn payment_gateway_profile(&self) -> Profile {
        Profile {
            latency: self.payment_gateway_latency,
            jitter: self.payment_gateway_latency / 4,
            spike_probability: 0.0,
            spike: std::time::Duration::ZERO,
            failure_rate: self.payment_gateway_failure_rate,
        }
    }

    /// Every key with its variable, current value (secrets: only whether
    /// set) and documentation: `ordermq config`.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for key in KEYS {
            let _ = writeln!(
                out,
                "{:<34} {:<38} = {}\n    {}\n    accepts {}{}",
                key.name,
                key.env_var(),
                key.shown(self),
                key.doc.trim(),
                key.accepted(),
                key.alias
                    .map(|alias| format!("; also as {alias} in the file"))
                    .unwrap_or_default(),
            );
        }
        out
    }
}

/// One third party's settings, `gateways.<name>.*`.
#[derive(Debug, Clone, Copy)]
pub struct GatewaySettings<'a> {
    /// `sms`, `logistics` or `payments`.
    pub name: &'static str,
    /// Fake or http.
    pub mode: GatewayMode,
    /// The provider's base URL (http mode).
    pub url: Option<&'a HttpUrl>,
    /// The keys requests are signed with (http mode).
    pub keys: Option<&'a SigningKeys>,
    /// One attempt's timeout.
    pub timeout: std::time::Duration,
    /// Attempts after the first.
    pub retries: u32,
}

/// The README's configuration table: every key, its variable, default,
/// accepted form and meaning (`ordermq config --markdown`).
pub fn markdown_table() -> String {
    let defaults = Config::default();
    let mut out =
        String::from("| key | variable | default | accepts | meaning |\n|---|---|---|---|---|\n");
    for key in KEYS {
        let name = match key.alias {
            Some(alias) => format!("`{}` (or `{alias}`)", key.name),
            None => format!("`{}`", key.name),
        };
        let _ = writeln!(
            out,
            "| {name} | `{}` | `{}` | {} | {} |",
            key.env_var(),
            key.shown(&defaults),
            markdown_text(&key.accepted()),
            markdown_text(key.doc.trim()),
        );
    }
    out
}

/// The variable of the key named `name` (its TOML name or earlier flat
/// name), or `ORDERMQ_` + `name` upper-cased if no key has that name.
pub fn env_var_of(name: &str) -> String {
    KEYS.iter().find(|k| k.is_named(name)).map_or_else(
        || format!("{ENV_PREFIX}{}", name.to_ascii_uppercase()),
        Key::env_var,
    )
}

/// Text safe in a Markdown table cell.
fn markdown_text(text: &str) -> String {
    text.replace('|', "\\|").replace('<', "\\<")
}
