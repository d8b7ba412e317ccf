//! Secrets and credentials: they never print (Debug, the `config` listing,
//! errors), public demo credentials are refused where others can reach
//! ordermq, a single secret is a key ring of one, and RocketMQ's ACL keys
//! come together.

use super::*;

#[test]
fn secrets_never_print() {
    const PAYMENT: &str = "pay-s3cret-value";
    const CARRIER: &str = "carrier-s3cret-value";
    const DB_PASSWORD: &str = "db-pa55word";
    const ROTATED: &str = "rotated-s3cret-value";
    let token_hash = hex_of_token("t0ken-value");
    let config = from_env(&[
        ("ORDERMQ_PAYMENT_SECRET", PAYMENT),
        (
            "ORDERMQ_LOGISTICS_KEYS",
            &format!("new:{ROTATED},old:{CARRIER}"),
        ),
        (
            "ORDERMQ_DATABASE_URL",
            &format!("postgres://ordermq:{DB_PASSWORD}@db/orders"),
        ),
        ("ORDERMQ_API_TOKENS", &format!("backend:shop:{token_hash}")),
    ])
    .unwrap();
    assert_eq!(config.payment_secret.as_ref().unwrap().expose(), PAYMENT);
    assert!(config.database_url().contains(DB_PASSWORD));
    let security = config.security().unwrap();
    assert!(security.public.is_empty());
    let described = config.describe();
    for printed in [
        format!("{config:?}"),
        format!("{config:#?}"),
        format!("{security:?}"),
        described.clone(),
    ] {
        for secret in [PAYMENT, CARRIER, ROTATED, DB_PASSWORD, token_hash.as_str()] {
            assert!(!printed.contains(secret), "{secret} printed in {printed}");
        }
    }
    assert!(format!("{config:?}").contains(REDACTED));
    let line = |name: &str| {
        described
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap()
            .to_owned()
    };
    assert!(line("payment_secret").ends_with("= (set)"));
    assert!(line("logistics_keys").ends_with("= keys new,old (secrets not shown)"));
    assert!(line("api_tokens").ends_with("= tokens backend:shop (hashes not shown)"));
    assert!(line("database_url").ends_with("= postgres://ordermq:***@db/orders"));
    assert!(
        Config::default()
            .describe()
            .contains("(unset: public dev secret, loopback only)")
    );
    // A secret that does not parse is not echoed in the error either.
    let err = from_file(&format!("payment_secret = [{PAYMENT:?}]\n")).unwrap_err();
    assert!(!err.to_string().contains(PAYMENT), "{err}");
    let err =
        from_env(&[("ORDERMQ_API_TOKENS", &format!("backend:admin:{token_hash}"))]).unwrap_err();
    assert!(!err.to_string().contains(&token_hash), "{err}");
}
#[test]
fn public_credentials_are_refused_where_others_can_reach_ordermq() {
    let token_entry = format!("ops:operator:{}", hex_of_token("t"));
    let production = [
        ("ORDERMQ_PAYMENT_SECRET", "p"),
        ("ORDERMQ_LOGISTICS_SECRET", "l"),
        ("ORDERMQ_API_TOKENS", token_entry.as_str()),
    ];
    let with = |extra: &[(&str, &str)]| {
        let mut pairs: Vec<(&str, &str)> = production.to_vec();
        pairs.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
        pairs.extend_from_slice(extra);
        pairs.retain(|(_, v)| *v != "(unset)");
        from_env(&pairs).unwrap().security()
    };
    with(&[("ORDERMQ_HTTP_ADDR", "0.0.0.0:8080")]).expect("real credentials on any address");
    for (unset, names) in [
        ("ORDERMQ_PAYMENT_SECRET", "payment secret"),
        ("ORDERMQ_LOGISTICS_SECRET", "carrier secret"),
        ("ORDERMQ_API_TOKENS", "demo API tokens"),
    ] {
        let error = with(&[("ORDERMQ_HTTP_ADDR", "0.0.0.0:8080"), (unset, "(unset)")])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("refusing to start")
                && error.contains(names)
                && error.contains("0.0.0.0:8080"),
            "{error}"
        );
        // The operator listener counts too.
        let error = with(&[
            ("ORDERMQ_OPERATOR_HTTP_ADDR", "10.0.0.5:9090"),
            (unset, "(unset)"),
        ])
        .unwrap_err();
        assert!(error.to_string().contains("10.0.0.5:9090"), "{error}");
        // Loopback, or dev_mode, accepts them (with a warning at start).
        assert!(with(&[(unset, "(unset)")]).is_ok());
        assert!(
            with(&[
                ("ORDERMQ_HTTP_ADDR", "0.0.0.0:8080"),
                ("ORDERMQ_DEV_MODE", "true"),
                (unset, "(unset)")
            ])
            .is_ok()
        );
    }
    // The development secret set by hand is still the public one.
    let error = with(&[
        ("ORDERMQ_HTTP_ADDR", "0.0.0.0:8080"),
        ("ORDERMQ_PAYMENT_SECRET", DEV_PAYMENT_SECRET),
    ])
    .unwrap_err();
    assert!(
        error.to_string().contains("ORDERMQ_PAYMENT_SECRET"),
        "{error}"
    );
    // An empty secret is refused everywhere, loopback included.
    let error = with(&[("ORDERMQ_PAYMENT_SECRET", "")]).unwrap_err();
    assert!(
        matches!(
            error,
            SecurityError::EmptySecret {
                key: "payment_secret",
                ..
            }
        ),
        "{error}"
    );
    // A secret and keys for one party: ambiguous, refused.
    let error = with(&[("ORDERMQ_PAYMENT_KEYS", "k1:x")]).unwrap_err();
    assert!(matches!(error, SecurityError::Both { .. }), "{error}");
}

#[test]
fn a_single_secret_is_a_ring_of_one_key_named_default_and_keys_rotate() {
    let config = from_env(&[("ORDERMQ_PAYMENT_SECRET", "s")]).unwrap();
    let security = config.security().unwrap();
    assert_eq!(
        security.payment.keyring().key_ids().collect::<Vec<_>>(),
        ["default"]
    );
    assert_eq!(security.payment.max_age(), Duration::from_secs(300));
    let config = from_env(&[
        ("ORDERMQ_LOGISTICS_KEYS", "k2:new,k1:old"),
        ("ORDERMQ_CALLBACK_MAX_AGE", "30s"),
    ])
    .unwrap();
    let security = config.security().unwrap();
    assert_eq!(
        security.carrier.keyring().key_ids().collect::<Vec<_>>(),
        ["k2", "k1"]
    );
    assert_eq!(security.carrier.max_age(), Duration::from_secs(30));
}

#[test]
fn rocketmq_acl_keys_come_together_and_never_print() {
    let none = from_env(&[]).unwrap();
    assert!(none.rocketmq_acl().is_none());
    let both = from_env(&[
        ("ORDERMQ_ROCKETMQ_ACCESS_KEY", "ordermq-app"),
        ("ORDERMQ_ROCKETMQ_SECRET_KEY", "acl-s3cret-value"),
    ])
    .unwrap();
    let acl = both.rocketmq_acl().unwrap();
    assert_eq!(
        (acl.access_key.as_str(), acl.secret_key.as_str()),
        ("ordermq-app", "acl-s3cret-value")
    );
    for printed in [format!("{both:?}"), both.describe(), format!("{acl:?}")] {
        assert!(!printed.contains("acl-s3cret-value"), "{printed}");
    }
    let file = from_file("[rocketmq]\naccess_key = \"a\"\nsecret_key = \"b\"\n").unwrap();
    assert!(file.rocketmq_acl().is_some());
    for half in [
        [("ORDERMQ_ROCKETMQ_ACCESS_KEY", "ordermq-app")],
        [("ORDERMQ_ROCKETMQ_SECRET_KEY", "acl-s3cret-value")],
    ] {
        let refused = from_env(&half).unwrap_err();
        assert!(
            refused.to_string().contains("set both or neither"),
            "{refused}"
        );
        assert!(
            !refused.to_string().contains("acl-s3cret-value"),
            "{refused}"
        );
    }
}
