//! The `role` key and the systems' own databases: what each role opens,
//! and the refusals (an unknown role, a system without the NameServers or,
//! on a database server, without its own database).

use ordermq_store::Databases;

use super::*;

const NS: (&str, &str) = ("ORDERMQ_NAMESRV_ADDR", "127.0.0.1:9876");

#[test]
fn the_default_role_runs_everything_on_the_order_database() {
    let config = from_env(&[]).unwrap();
    assert_eq!(config.role, ProcessRole::All);
    assert_eq!(
        config.role_database().unwrap(),
        ("sqlite://./data/orders.db".to_owned(), Databases::All)
    );
}

#[test]
fn the_order_role_opens_the_order_database_only() {
    let config = from_env(&[
        ("ORDERMQ_ROLE", "order"),
        ("ORDERMQ_DATABASE_URL", "postgres://u:p@h/orders"),
    ])
    .unwrap();
    assert_eq!(
        config.role_database().unwrap(),
        ("postgres://u:p@h/orders".to_owned(), Databases::Orders)
    );
}

#[test]
fn a_system_role_opens_its_own_database_by_variable_or_section() {
    for system in System::ALL {
        let var = format!(
            "ORDERMQ_{}_DATABASE_URL",
            system.name().to_ascii_uppercase()
        );
        let url = format!("postgres://u:p@h/{}", system.name());
        let by_var = from_env(&[
            ("ORDERMQ_ROLE", system.name()),
            ("ORDERMQ_DATABASE_URL", "postgres://u:p@h/orders"),
            (&var, &url),
            NS,
        ])
        .unwrap_or_else(|e| panic!("{var}: {e}"));
        let by_file = from_file(&format!(
            "role = \"{name}\"\nnamesrv_addr = \"127.0.0.1:9876\"\n\
             database_url = \"postgres://u:p@h/orders\"\n[{name}]\ndatabase_url = \"{url}\"\n",
            name = system.name()
        ))
        .unwrap();
        for config in [by_var, by_file] {
            assert_eq!(config.role, ProcessRole::System(system));
            assert_eq!(
                config.role_database().unwrap(),
                (url.clone(), Databases::System(system))
            );
        }
    }
}

#[test]
fn on_sqlite_a_system_role_defaults_to_its_file_under_data_dir() {
    let config = from_env(&[
        ("ORDERMQ_ROLE", "warehouse"),
        ("ORDERMQ_DATA_DIR", "/srv/wh"),
        NS,
    ])
    .unwrap();
    assert_eq!(
        config.role_database().unwrap(),
        (
            "sqlite:///srv/wh/warehouse.db".to_owned(),
            Databases::System(System::Warehouse)
        )
    );
}

#[test]
fn an_unknown_role_is_refused_naming_the_key_and_the_roles() {
    let error = from_env(&[("ORDERMQ_ROLE", "shipping")])
        .unwrap_err()
        .to_string();
    assert!(error.contains("role"), "{error}");
    assert!(
        error.contains("all, order, credit, marketing, push or warehouse"),
        "{error}"
    );
}

#[test]
fn a_system_role_needs_the_name_servers_and_on_a_server_its_own_database() {
    let error = from_env(&[("ORDERMQ_ROLE", "credit")])
        .unwrap_err()
        .to_string();
    assert!(error.contains("ORDERMQ_NAMESRV_ADDR"), "{error}");
    let error = from_env(&[
        ("ORDERMQ_ROLE", "push"),
        ("ORDERMQ_DATABASE_URL", "postgres://u:p@h/orders"),
        NS,
    ])
    .unwrap_err()
    .to_string();
    assert!(error.contains("push.database_url"), "{error}");
    assert!(error.contains("ORDERMQ_PUSH_DATABASE_URL"), "{error}");
    assert!(error.contains("never the order database"), "{error}");
}
