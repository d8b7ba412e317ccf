//! The sections without an earlier flat name — `gateways.*` and `limits.*` —
//! each key by variable and in its TOML section, their rules across keys,
//! and lists (keys, tokens) written as text or as a TOML array.

use super::*;

#[test]
fn a_gateway_in_http_mode_needs_its_url_and_keys() {
    let defaults = from_env(&[]).unwrap();
    assert!(
        defaults
            .gateways()
            .iter()
            .all(|g| g.mode == GatewayMode::Fake),
        "the fakes are the default"
    );
    let err = from_env(&[("ORDERMQ_GATEWAYS_SMS_MODE", "http")]).unwrap_err();
    assert!(
        err.to_string()
            .contains("gateways.sms.url (ORDERMQ_GATEWAYS_SMS_URL)"),
        "{err}"
    );
    let err = from_file("[gateways.payments]\nmode = \"http\"\nurl = \"http://127.0.0.1:9090\"\n")
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("gateways.payments.keys (ORDERMQ_GATEWAYS_PAYMENTS_KEYS)"),
        "{err}"
    );
    let config = from_env(&[
        ("ORDERMQ_GATEWAYS_LOGISTICS_MODE", "http"),
        ("ORDERMQ_GATEWAYS_LOGISTICS_URL", "http://127.0.0.1:9090"),
        ("ORDERMQ_GATEWAYS_LOGISTICS_KEYS", "k1:carrier-secret-xyz"),
        ("ORDERMQ_GATEWAYS_LOGISTICS_TIMEOUT", "750ms"),
        ("ORDERMQ_GATEWAYS_LOGISTICS_RETRIES", "4"),
    ])
    .unwrap();
    let logistics = config.logistics_gateway();
    assert_eq!(
        (logistics.mode, logistics.timeout, logistics.retries),
        (GatewayMode::Http, Duration::from_millis(750), 4)
    );
    assert_eq!(logistics.keys.unwrap().keyring().signing_key_id(), "k1");
    for printed in [config.describe(), format!("{config:?}")] {
        assert!(!printed.contains("carrier-secret-xyz"));
    }
    assert!(from_env(&[("ORDERMQ_GATEWAYS_SMS_RETRIES", "11")]).is_err());
    assert!(from_env(&[("ORDERMQ_GATEWAYS_SMS_MODE", "real")]).is_err());
}

/// The gateways' keys (they have no earlier flat name), with values that
/// load together.
const GATEWAY_KEYS: &[(&str, &str)] = &[
    ("gateways.sms.mode", "http"),
    ("gateways.sms.url", "http://127.0.0.1:9090"),
    ("gateways.sms.keys", "k1:s"),
    ("gateways.sms.timeout", "1500ms"),
    ("gateways.sms.retries", "1"),
    ("gateways.logistics.mode", "http"),
    ("gateways.logistics.url", "http://127.0.0.1:9091/carrier"),
    ("gateways.logistics.keys", "k2:s"),
    ("gateways.logistics.timeout", "3s"),
    ("gateways.logistics.retries", "3"),
    ("gateways.payments.mode", "http"),
    ("gateways.payments.url", "https://pay.example"),
    ("gateways.payments.keys", "k3:s"),
    ("gateways.payments.timeout", "9s"),
    ("gateways.payments.retries", "0"),
];

#[test]
fn every_gateway_key_works_as_variable_and_in_its_section() {
    let gateway_keys = KEYS.iter().filter(|k| k.name.starts_with("gateways."));
    assert_eq!(gateway_keys.count(), GATEWAY_KEYS.len());
    let vars: Vec<(String, &str)> = GATEWAY_KEYS
        .iter()
        .map(|(name, value)| (env_var_of(name), *value))
        .collect();
    let by_var = Config::load_from(
        None,
        vars.iter()
            .map(|(var, value)| (var.clone(), value.to_string())),
    )
    .unwrap();
    let mut file = String::new();
    let mut current = "";
    for (name, value) in GATEWAY_KEYS {
        let (section, leaf) = name.rsplit_once('.').unwrap();
        if section != current {
            file.push_str(&format!("[{section}]\n"));
            current = section;
        }
        file.push_str(&format!("{leaf} = {}\n", toml_value(name, value)));
    }
    let by_file = from_file(&file).unwrap();
    assert_eq!(everything(&by_var), everything(&by_file));
    assert_ne!(everything(&by_var), everything(&Config::default()));
    assert_eq!(env_var_of("gateways.sms.mode"), "ORDERMQ_GATEWAYS_SMS_MODE");
    let payments = by_file.payments_gateway();
    assert_eq!(
        (
            payments.url.unwrap().as_str(),
            payments.timeout,
            payments.retries
        ),
        ("https://pay.example", Duration::from_secs(9), 0)
    );
}

/// The limits' keys (they have no earlier flat name), each set away from
/// its default.
const LIMIT_KEYS: &[(&str, &str)] = &[
    ("limits.unpaid_orders_per_user", "2"),
    ("limits.units_per_sku_per_user", "0"),
    ("limits.orders_per_minute_per_user", "12"),
    ("limits.order_burst_per_user", "3"),
    ("limits.orders_per_second_per_token", "0"),
    ("limits.order_burst_per_token", "50"),
    ("limits.signin_failures_per_minute", "4"),
    ("limits.tracked_clients", "500"),
];

#[test]
fn every_limit_key_works_as_variable_and_in_its_section() {
    let limit_keys = KEYS.iter().filter(|k| k.name.starts_with("limits."));
    assert_eq!(limit_keys.count(), LIMIT_KEYS.len());
    let defaults = everything(&Config::default());
    let mut file = String::from("[limits]\n");
    for (name, value) in LIMIT_KEYS {
        let var = env_var_of(name);
        assert_eq!(
            var,
            format!("ORDERMQ_{}", name.replace('.', "_").to_ascii_uppercase())
        );
        let by_var = from_env(&[(&var, value)]).unwrap_or_else(|e| panic!("{var}: {e}"));
        assert_ne!(everything(&by_var), defaults, "{var} changed nothing");
        file.push_str(&format!(
            "{} = {value}\n",
            name.trim_start_matches("limits.")
        ));
    }
    let config = from_file(&file).unwrap();
    assert_eq!(config.user_limits(), UserLimits::new(2, 0));
    let rates = config.rate_settings();
    assert_eq!(rates.orders_per_user, Rate::per_minute(12, 3));
    assert_eq!(rates.orders_per_token, None, "0 turns a limit off");
    assert_eq!(rates.signin_failures, Rate::per_minute(4, 4));
    assert_eq!(rates.max_keys, 500);
    assert!(from_env(&[("ORDERMQ_LIMITS_ORDER_BURST_PER_USER", "0")]).is_err());
    let off = Config::default().without_limits();
    assert_eq!(off.user_limits(), UserLimits::OFF);
    assert_eq!(off.rate_settings().orders_per_user, None);
    assert_eq!(off.rate_settings().orders_per_token, None);
}

#[test]
fn key_lists_and_token_lists_come_as_text_or_as_a_toml_array() {
    let shop = hex_of_token("shop-token-1");
    let ops = hex_of_token("ops-token-1");
    let config = from_file(&format!(
        "event_keys = [\"k2:new-event-secret\", \"k1:old-event-secret\"]\n\
         api_tokens = [\"shop-a:shop:{shop}\", \"ops-a:operator:{ops}\"]\n"
    ))
    .unwrap();
    let keys = config.event_keys.as_ref().unwrap().keyring();
    assert_eq!(keys.key_ids().collect::<Vec<_>>(), ["k2", "k1"]);
    let tokens = config.api_tokens.as_ref().unwrap().tokens();
    let names: Vec<_> = tokens.entries().iter().map(|e| e.name()).collect();
    assert_eq!(names, ["shop-a", "ops-a"]);
    for text in [
        "event_keys = [\"k1:secret\", 5]\n".to_owned(),
        format!("api_tokens = [\"shop-a:shop:{shop}\", true]\n"),
    ] {
        let error = from_file(&text).unwrap_err().to_string();
        assert!(error.contains("in the array, not a string"), "{error}");
    }
}
