//! The `broker.*` keys: a broker's place in a cluster (`ordermq broker`),
//! each by variable and in its TOML section, refused when malformed or when
//! role and id disagree, and handed to the broker as they were given.

use std::net::IpAddr;
use std::path::PathBuf;

use ordermq_messaging::{BrokerRole, ClusterMember};

use super::*;

#[test]
fn the_default_broker_is_the_embedded_single_master() {
    let options = from_env(&[]).unwrap().embedded_options();
    assert_eq!(options.member, ClusterMember::default());
    assert_eq!(options.store_dir, PathBuf::from("./data/rocketmq"));
}

#[test]
fn a_cluster_member_loads_from_variables_and_from_the_broker_section() {
    let by_var = from_env(&[
        ("ORDERMQ_BROKER_CLUSTER", "OrdermqCluster"),
        ("ORDERMQ_BROKER_NAME", "broker-b"),
        ("ORDERMQ_BROKER_ID", "1"),
        ("ORDERMQ_BROKER_ROLE", "slave"),
        ("ORDERMQ_BROKER_IP", "10.0.0.22"),
        (
            "ORDERMQ_BROKER_NAMESRV_ADDR",
            "10.0.0.11:9876;10.0.0.12:9876",
        ),
        ("ORDERMQ_BROKER_STORE_DIR", "/var/lib/rocketmq"),
    ])
    .unwrap();
    let by_file = from_file(
        "[broker]\ncluster = \"OrdermqCluster\"\nname = \"broker-b\"\nid = 1\nrole = \"slave\"\n\
         ip = \"10.0.0.22\"\nnamesrv_addr = \"10.0.0.11:9876;10.0.0.12:9876\"\n\
         store_dir = \"/var/lib/rocketmq\"\n",
    )
    .unwrap();
    for config in [by_var, by_file] {
        let options = config.embedded_options();
        assert_eq!(
            options.member,
            ClusterMember {
                cluster: "OrdermqCluster".into(),
                name: "broker-b".into(),
                id: 1,
                role: BrokerRole::Slave,
                ip: IpAddr::from([10, 0, 0, 22]),
                namesrv_addr: Some("10.0.0.11:9876;10.0.0.12:9876".into()),
            }
        );
        assert_eq!(options.store_dir, PathBuf::from("/var/lib/rocketmq"));
    }
}

#[test]
fn malformed_broker_settings_are_refused_naming_key_and_form() {
    for (var, bad, key, expected) in [
        (
            "ORDERMQ_BROKER_NAME",
            "broker a",
            "broker.name",
            "only letters, digits",
        ),
        (
            "ORDERMQ_BROKER_NAME",
            "",
            "broker.name",
            "1 to 64 characters",
        ),
        (
            "ORDERMQ_BROKER_CLUSTER",
            "a;b",
            "broker.cluster",
            "only letters, digits",
        ),
        (
            "ORDERMQ_BROKER_ROLE",
            "master",
            "broker.role",
            "async_master, sync_master or slave",
        ),
        ("ORDERMQ_BROKER_ID", "-1", "broker.id", "a whole number"),
        (
            "ORDERMQ_BROKER_IP",
            "0.0.0.0",
            "broker.ip",
            "cannot connect to it",
        ),
        (
            "ORDERMQ_BROKER_IP",
            "broker-a.local",
            "broker.ip",
            "an IP address",
        ),
        (
            "ORDERMQ_BROKER_NAMESRV_ADDR",
            "ns1",
            "broker.namesrv_addr",
            "host:port",
        ),
    ] {
        let error = from_env(&[(var, bad)]).unwrap_err().to_string();
        assert!(error.contains(key), "{var}={bad:?}: {error}");
        assert!(error.contains(expected), "{var}={bad:?}: {error}");
    }
}

#[test]
fn role_and_id_must_agree_and_a_slave_needs_the_name_servers() {
    let ns = ("ORDERMQ_BROKER_NAMESRV_ADDR", "127.0.0.1:9876");
    for (role, id, expected) in [
        ("async_master", "1", "needs broker.id 0"),
        ("sync_master", "2", "needs broker.id 0"),
        ("slave", "0", "needs broker.id 1 or more"),
    ] {
        let error = from_env(&[("ORDERMQ_BROKER_ROLE", role), ("ORDERMQ_BROKER_ID", id), ns])
            .unwrap_err()
            .to_string();
        assert!(error.contains(expected), "{role} {id}: {error}");
        assert!(error.contains("ORDERMQ_BROKER_ID"), "{role} {id}: {error}");
    }
    for (role, id) in [("async_master", "0"), ("sync_master", "0"), ("slave", "3")] {
        from_env(&[("ORDERMQ_BROKER_ROLE", role), ("ORDERMQ_BROKER_ID", id), ns])
            .unwrap_or_else(|e| panic!("{role} {id}: {e}"));
    }
    let error = from_env(&[("ORDERMQ_BROKER_ROLE", "slave"), ("ORDERMQ_BROKER_ID", "1")])
        .unwrap_err()
        .to_string();
    assert!(error.contains("broker.namesrv_addr"), "{error}");
}
