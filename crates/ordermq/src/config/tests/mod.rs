//! The configuration's behaviour: layering, the names users already set,
//! typed values refused at load, test variables that are not
//! configuration, and the README's table against the code's; secrets and
//! credentials in `secrets`, the sections in `sections`.

use std::time::Duration;

use ordermq_domain::System;
use ordermq_messaging::{DelayLevels, DelayedDelivery};

use super::*;

mod broker;
mod roles;
mod secrets;
mod sections;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn from_env(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::load_from(None, env(pairs))
}

fn from_file(text: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ordermq.toml");
    std::fs::write(&file, text).unwrap();
    Config::load_from(Some(&file), env(&[]))
}

/// Every key as it was named before the table (and as the README and
/// scripts name it), with a valid value. Each must keep working as a flat
/// TOML key and as `ORDERMQ_<NAME>`.
const FLAT_NAMES: &[(&str, &str)] = &[
    ("http_addr", "127.0.0.1:9000"),
    ("role", "order"),
    ("data_dir", "/tmp/ordermq"),
    ("database_url", "postgres://u:p@h/db"),
    ("payment_secret", "s1"),
    ("namesrv_addr", "ns1:9876;ns2:9876"),
    ("embedded_namesrv_port", "1"),
    ("embedded_broker_port", "2"),
    ("retry_delay_levels", "1s 2s"),
    ("embedded_message_index", "true"),
    ("delayed_delivery", "timer"),
    ("embedded_broker_flush", "async"),
    ("relay_park_after_attempts", "5"),
    ("max_reconsume_times", "3"),
    ("consumer_concurrency", "8"),
    ("write_batch_max", "32"),
    ("postgres_writers", "8"),
    ("postgres_set_based", "false"),
    ("feed", "on"),
    ("feed_sink_batch", "128"),
    ("database_acquire_timeout_ms", "500"),
    ("database_statement_timeout_ms", "5000"),
    ("database_lock_timeout_ms", "1000"),
    ("database_idle_in_transaction_timeout_ms", "9000"),
    ("database_allow_unsafe_durability", "true"),
    ("write_linger_ms", "0"),
    ("effect_linger_ms", "7"),
    ("fanout_nice", "0"),
    ("relay_batch_size", "16"),
    ("relay_linger_ms", "10"),
    ("topic_queues", "2"),
    ("sms_latency_ms", "5"),
    ("sms_jitter_ms", "6"),
    ("sms_spike_probability", "0.5"),
    ("sms_spike_ms", "7"),
    ("sms_failure_rate", "0.25"),
    ("logistics_latency_ms", "8"),
    ("logistics_jitter_ms", "9"),
    ("logistics_spike_probability", "0.5"),
    ("logistics_spike_ms", "10"),
    ("logistics_failure_rate", "0.25"),
    ("order_close_after", "90s"),
    ("close_sweep_interval", "0s"),
    ("reconcile_after", "2m"),
    ("reconcile_interval", "0s"),
    ("reconcile_window", "1h"),
    ("reconcile_batch", "9"),
    ("reconcile_max", "2"),
    ("flash_sale_order_rate", "50"),
    ("flash_sale_max_wait", "10s"),
    ("flash_sale_order_close_after", "2m"),
    ("flash_sale_lease_chunk", "7"),
    ("flash_sale_lease_ttl", "20s"),
    ("payment_gateway_latency_ms", "11"),
    ("payment_gateway_failure_rate", "0.75"),
    ("refund_attempts", "4"),
    ("logistics_timeout_ms", "12"),
    ("logistics_secret", "s2"),
    ("seed_catalog", "false"),
    ("log", "debug"),
    ("event_keys", "k1:event-secret"),
    ("http_header_timeout", "3s"),
    ("http_request_timeout", "4s"),
    ("http_idle_timeout", "6s"),
    ("http_max_connections", "7"),
    ("operator_http_addr", "127.0.0.1:9001"),
    (
        "api_tokens",
        "ops:operator:0000000000000000000000000000000000000000000000000000000000000000",
    ),
    ("payment_keys", "k1:s3"),
    ("logistics_keys", "k2:s4"),
    ("callback_max_age", "90s"),
    ("dev_mode", "true"),
];

/// Keys that only load together (checked in
/// `rocketmq_acl_keys_come_together_and_never_print`), so not one by one above.
const PAIRED: usize = 2;

/// The TOML spelling of `value` for the key named `name`.
fn toml_value(name: &str, value: &str) -> String {
    let key = KEYS.iter().find(|k| k.is_named(name)).unwrap();
    let quoted = key.accepts.starts_with("a whole number")
        || key.accepts.starts_with("whole milliseconds")
        || key.accepts.starts_with("a probability")
        || key.accepts == "true or false";
    if quoted {
        value.to_owned()
    } else {
        format!("{value:?}")
    }
}

/// `config` with every value shown, secrets exposed: to compare two loads.
fn everything(config: &Config) -> String {
    format!(
        "{} {:?} {:?} {:?}",
        config.describe(),
        config.database_url(),
        config.payment_secret.as_ref().map(Secret::expose),
        config.logistics_secret.as_ref().map(Secret::expose)
    )
}

#[test]
fn defaults_are_the_embedded_single_process_setup() {
    let config = from_env(&[]).unwrap();
    assert_eq!(config.http_addr.to_string(), "127.0.0.1:8080");
    assert!(config.namesrv_addr.is_none());
    assert_eq!(config.database_url(), "sqlite://./data/orders.db");
    assert!(config.payment_secret.is_none() && config.api_tokens.is_none());
    assert_eq!(
        config.security().unwrap().public,
        [
            PublicCredential::PaymentSecret,
            PublicCredential::LogisticsSecret,
            PublicCredential::DemoTokens
        ],
        "on loopback, the public development credentials"
    );
    assert_eq!(config.order_close_after, Duration::from_secs(30 * 60));
    assert_eq!(config.relay_linger, Duration::from_millis(25));
    assert_eq!(config.delayed_delivery, DeliveryMode::Levels);
}

#[test]
fn environment_overrides_file_which_overrides_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ordermq.toml");
    std::fs::write(
        &file,
        "http_addr = \"127.0.0.1:9000\"\n[fakes.sms]\nlatency_ms = 5\n",
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
    assert_eq!(config.http_addr.to_string(), "127.0.0.1:9001");
    assert_eq!(config.sms_latency, Duration::from_millis(5));
    assert_eq!(config.sms_failure_rate, 0.3);
    assert!(!config.seed_catalog);
    assert_eq!(config.namesrv_addr.as_deref(), Some("ns1:9876;ns2:9876"));
}

#[test]
fn every_earlier_name_works_as_variable_as_flat_key_and_as_new_key() {
    assert_eq!(
        FLAT_NAMES.len() + PAIRED,
        KEYS.iter()
            .filter(|k| {
                !k.name.starts_with("gateways.")
                    && !k.name.starts_with("limits.")
                    && !k.name.starts_with("broker.")
                    && !System::ALL
                        .iter()
                        .any(|s| k.name.starts_with(&format!("{}.", s.name())))
            })
            .count(),
        "a key is missing from FLAT_NAMES"
    );
    for (name, value) in FLAT_NAMES {
        let var = format!("ORDERMQ_{}", name.to_ascii_uppercase());
        let by_var = from_env(&[(&var, value)]).unwrap_or_else(|e| panic!("{var}: {e}"));
        let flat = format!("{name} = {}\n", toml_value(name, value));
        let by_flat = from_file(&flat).unwrap_or_else(|e| panic!("{flat}: {e}"));
        let key = KEYS.iter().find(|k| k.is_named(name)).unwrap();
        let (section, leaf) = key.name.rsplit_once('.').unwrap_or(("", key.name));
        let header = if section.is_empty() {
            String::new()
        } else {
            format!("[{section}]\n")
        };
        let nested = format!("{header}{leaf} = {}\n", toml_value(name, value));
        let by_new = from_file(&nested).unwrap_or_else(|e| panic!("{nested}: {e}"));
        let default = everything(&Config::default());
        assert_ne!(everything(&by_var), default, "{var} changed nothing");
        assert_eq!(everything(&by_var), everything(&by_flat), "{name}");
        assert_eq!(everything(&by_var), everything(&by_new), "{}", key.name);
    }
    // Dotted keys work without a section header too.
    let dotted = from_file("fakes.logistics.latency_ms = 3\n").unwrap();
    assert_eq!(dotted.logistics_latency, Duration::from_millis(3));
}

#[test]
fn the_fakes_knobs_are_under_fakes_and_production_keys_are_not() {
    let fakes: Vec<_> = KEYS
        .iter()
        .filter(|k| k.name.starts_with("fakes."))
        .collect();
    assert_eq!(fakes.len(), 12);
    for key in KEYS {
        let fake = key.doc.trim_start().starts_with("Fake ");
        assert_eq!(fake, key.name.starts_with("fakes."), "{}", key.name);
        // Fakes keep their earlier flat names; a production key in a section
        // (`rocketmq.`) has a flat name for its variable.
        let sectioned = key.name.starts_with("rocketmq.");
        assert_eq!(key.alias.is_some(), fake || sectioned, "{}", key.name);
    }
}

#[test]
fn the_table_is_consistent() {
    let mut names = std::collections::HashSet::new();
    let mut vars = std::collections::HashSet::new();
    for key in KEYS {
        assert!(names.insert(key.name), "{} twice", key.name);
        if let Some(alias) = key.alias {
            assert!(names.insert(alias), "{alias} twice");
        }
        let var = key.env_var();
        assert!(
            var.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
            "{var}"
        );
        assert!(
            !var.starts_with(TEST_ENV_PREFIX) && var != CONFIG_FILE_VAR,
            "{var}"
        );
        assert!(vars.insert(var));
        assert!(!key.doc.trim().is_empty(), "{} has no doc", key.name);
    }
    let described = Config::default().describe();
    for key in KEYS {
        assert!(described.contains(key.name));
        assert!(described.contains(&key.env_var()));
    }
}

#[test]
fn test_variables_are_not_configuration() {
    let config = from_env(&[
        (
            "ORDERMQ_TEST_POSTGRES_URL",
            "postgres://test:pw@localhost/t",
        ),
        ("ORDERMQ_TEST_ANYTHING_ELSE", "x"),
    ])
    .unwrap();
    assert_eq!(config.database_url(), Config::default().database_url());
    // Only that prefix is skipped: a typo of a real key is still refused.
    assert!(from_env(&[("ORDERMQ_TESTS", "x")]).is_err());
}

#[test]
fn unknown_keys_are_refused_with_the_nearest_key() {
    let err = from_env(&[("ORDERMQ_HTTP_ADRR", "x")]).unwrap_err();
    let ConfigError::UnknownKey {
        given, suggestion, ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(given, "ORDERMQ_HTTP_ADRR");
    assert_eq!(suggestion.as_deref(), Some("ORDERMQ_HTTP_ADDR"));
    assert!(
        err.to_string()
            .contains("did you mean \"ORDERMQ_HTTP_ADDR\"")
    );

    let err = from_file("databse_url = \"x\"\n").unwrap_err();
    assert!(
        err.to_string().contains("did you mean \"database_url\""),
        "{err}"
    );
    let err = from_file("[fakes.sms]\nlatncy_ms = 1\n").unwrap_err();
    assert!(
        err.to_string().contains("\"fakes.sms.latency_ms\""),
        "{err}"
    );
    // A section that is not one, and a key far from any other.
    assert!(matches!(
        from_file("[database]\nurl = \"x\"\n"),
        Err(ConfigError::UnknownKey { .. })
    ));
    let err = from_env(&[("ORDERMQ_COMPLETELY_DIFFERENT", "1")]).unwrap_err();
    assert!(!err.to_string().contains("did you mean"), "{err}");
    // One key under two names in one file.
    assert!(matches!(
        from_file("sms_latency_ms = 1\n[fakes.sms]\nlatency_ms = 2\n"),
        Err(ConfigError::Twice {
            key: "fakes.sms.latency_ms",
            ..
        })
    ));
}

#[test]
fn invalid_values_are_refused_at_load_naming_key_variable_and_form() {
    for (var, bad, key, expected) in [
        (
            "ORDERMQ_RELAY_BATCH_SIZE",
            "lots",
            "relay_batch_size",
            "a whole number",
        ),
        (
            "ORDERMQ_HTTP_ADDR",
            "nowhere",
            "http_addr",
            "an IP address and port",
        ),
        (
            "ORDERMQ_SMS_FAILURE_RATE",
            "1.5",
            "fakes.sms.failure_rate",
            "a probability",
        ),
        ("ORDERMQ_NAMESRV_ADDR", "ns1", "namesrv_addr", "host:port"),
        (
            "ORDERMQ_TOPIC_QUEUES",
            "0",
            "topic_queues",
            "a whole number in 1..",
        ),
        ("ORDERMQ_FANOUT_NICE", "20", "fanout_nice", "in 0..=19"),
        (
            "ORDERMQ_MAX_RECONSUME_TIMES",
            "-1",
            "max_reconsume_times",
            "in 0..",
        ),
        ("ORDERMQ_REFUND_ATTEMPTS", "0", "refund_attempts", "in 1.."),
        (
            "ORDERMQ_EMBEDDED_BROKER_PORT",
            "70000",
            "embedded_broker_port",
            "a whole number",
        ),
        (
            "ORDERMQ_ORDER_CLOSE_AFTER",
            "soon",
            "order_close_after",
            "a duration like",
        ),
        (
            "ORDERMQ_CLOSE_SWEEP_INTERVAL",
            "5 parsecs",
            "close_sweep_interval",
            "a duration",
        ),
        (
            "ORDERMQ_WRITE_LINGER_MS",
            "2ms",
            "write_linger_ms",
            "whole milliseconds",
        ),
        (
            "ORDERMQ_DELAYED_DELIVERY",
            "wheel",
            "delayed_delivery",
            "levels or timer",
        ),
        (
            "ORDERMQ_SEED_CATALOG",
            "maybe",
            "seed_catalog",
            "true or false",
        ),
        ("ORDERMQ_LOG", "ordermq=loud", "log", "a log filter"),
    ] {
        let err = from_env(&[(var, bad)]).unwrap_err();
        let ConfigError::BadValue(refused) = &err else {
            panic!("{var}={bad}: {err}")
        };
        assert_eq!(refused.key, key);
        let message = err.to_string();
        for part in [key, var, expected, bad] {
            assert!(message.contains(part), "{message:?} lacks {part:?}");
        }
    }
    for bad in ["", "1x", "s", "0s", "1s two"] {
        assert!(
            matches!(
                from_env(&[("ORDERMQ_RETRY_DELAY_LEVELS", bad)]),
                Err(ConfigError::BadValue(refused)) if refused.key == "retry_delay_levels"
            ),
            "{bad:?}"
        );
    }
    // The file's types are checked too, naming the spelling used.
    let err = from_file("sms_latency_ms = \"5\"\n").unwrap_err();
    let message = err.to_string();
    assert!(message.contains("fakes.sms.latency_ms") && message.contains("as sms_latency_ms"));
    assert!(message.contains("ORDERMQ_SMS_LATENCY_MS"), "{message}");
}

#[test]
fn durations_and_modes_are_typed_at_load() {
    let tuned = from_env(&[
        ("ORDERMQ_ORDER_CLOSE_AFTER", "90s"),
        ("ORDERMQ_CLOSE_SWEEP_INTERVAL", "0s"),
        ("ORDERMQ_RELAY_LINGER_MS", "10"),
        ("ORDERMQ_RETRY_DELAY_LEVELS", "1s 1s 2s 1m"),
    ])
    .unwrap();
    assert_eq!(tuned.order_close_after, Duration::from_secs(90));
    assert_eq!(tuned.close_sweep_interval, Duration::ZERO);
    assert_eq!(tuned.relay_linger, Duration::from_millis(10));
    assert_eq!(
        tuned.delayed_delivery(),
        DelayedDelivery::Levels(DelayLevels::parse("1s 1s 2s 1m").unwrap())
    );
    assert_eq!(
        tuned.embedded_options().delay_levels.as_deref(),
        Some("1s 1s 2s 1m")
    );
    assert_eq!(
        Config::default().delayed_delivery(),
        DelayedDelivery::Levels(DelayLevels::default())
    );
    let timer = from_env(&[("ORDERMQ_DELAYED_DELIVERY", "timer")]).unwrap();
    assert_eq!(timer.delayed_delivery, DeliveryMode::Timer);
    assert_eq!(timer.delayed_delivery(), DelayedDelivery::Timer);
    assert!(timer.embedded_options().timer_wheel);
}

fn hex_of_token(token: &str) -> String {
    ordermq_api::auth::TokenEntry::for_token("x", ordermq_api::auth::Role::Shop, token)
        .unwrap()
        .config_entry()
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned()
}

/// The README's configuration table, between its marker comments.
fn readme_table() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let start = readme
        .find(README_START)
        .expect("README has the config-table start marker");
    let end = readme
        .find(README_END)
        .expect("README has the config-table end marker");
    let after_marker = start + readme[start..].find('\n').unwrap() + 1;
    readme[after_marker..end].to_owned()
}

const README_START: &str = "<!-- config-table:start";
const README_END: &str = "<!-- config-table:end -->";

#[test]
fn the_readme_table_is_the_generated_one() {
    assert!(
        readme_table() == markdown_table(),
        "README.md's configuration table differs from the keys' table: \
         replace the lines between the config-table markers with the output of \
         `cargo run --release -- config --markdown`"
    );
}

#[test]
fn a_key_names_its_variable_by_either_name() {
    assert_eq!(env_var_of("fakes.sms.latency_ms"), "ORDERMQ_SMS_LATENCY_MS");
    assert_eq!(env_var_of("sms_latency_ms"), "ORDERMQ_SMS_LATENCY_MS");
    assert_eq!(env_var_of("topic_queues"), "ORDERMQ_TOPIC_QUEUES");
    assert_eq!(env_var_of("no_such_key"), "ORDERMQ_NO_SUCH_KEY");
}

#[test]
fn event_keys_and_http_limits_load_from_variables() {
    let config = from_env(&[
        (
            "ORDERMQ_EVENT_KEYS",
            "k2:new-event-secret,k1:old-event-secret",
        ),
        ("ORDERMQ_HTTP_HEADER_TIMEOUT", "2s"),
        ("ORDERMQ_HTTP_MAX_CONNECTIONS", "64"),
    ])
    .unwrap();
    let keys = config.event_keys.as_ref().unwrap().keyring();
    assert_eq!(keys.key_ids().collect::<Vec<_>>(), ["k2", "k1"]);
    assert!(!config.describe().contains("event-secret"));
    assert_eq!(config.http_header_timeout, Duration::from_secs(2));
    assert_eq!(config.http_max_connections, 64);
    assert!(from_env(&[("ORDERMQ_HTTP_MAX_CONNECTIONS", "0")]).is_err());
}

#[test]
fn the_database_keys_reach_the_store() {
    let defaults = Config::default().store_options();
    assert!(defaults.pg_fast_path);
    let config = from_env(&[
        ("ORDERMQ_DATABASE_ACQUIRE_TIMEOUT_MS", "700"),
        ("ORDERMQ_DATABASE_STATEMENT_TIMEOUT_MS", "5000"),
        ("ORDERMQ_DATABASE_LOCK_TIMEOUT_MS", "3000"),
        ("ORDERMQ_DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS", "20000"),
        ("ORDERMQ_POSTGRES_SET_BASED", "false"),
    ])
    .unwrap();
    let options = config.store_options();
    assert_eq!(options.acquire_timeout, Duration::from_millis(700));
    assert_eq!(options.session.statement_timeout, Duration::from_secs(5));
    assert_eq!(options.session.lock_timeout, Duration::from_secs(3));
    assert_eq!(
        options.session.idle_in_transaction_timeout,
        Duration::from_secs(20)
    );
    assert!(!options.pg_fast_path);
    assert_eq!(options.max_connections, defaults.max_connections);
}
