//! What the store sets on, and reads from, the database server: the time
//! limits every PostgreSQL and MariaDB session gets (one set of options for
//! both), and the durability settings the server's start-up checks.

use std::time::Duration;

use ordermq_store::{SessionSettings, StoreOptions};

use super::helpers::{fanout_only, mysql_with, postgres_with, sqlite};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_has_no_server_settings() {
    let db = sqlite().await;
    assert_eq!(db.store.durability().await.unwrap(), None);
    assert_eq!(db.store.session_settings().await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_postgres_session_gets_the_configured_timeouts() {
    let session = SessionSettings {
        statement_timeout: Duration::from_millis(12_345),
        lock_timeout: Duration::from_secs(3),
        idle_in_transaction_timeout: Duration::from_secs(120),
    };
    let options = StoreOptions {
        session,
        ..fanout_only()
    };
    let Some(db) = postgres_with(&options).await else {
        return;
    };
    assert_eq!(db.store.session_settings().await.unwrap(), Some(session));
    let durability = db.store.durability().await.unwrap().unwrap();
    for name in ["fsync", "full_page_writes"] {
        let value = durability.setting(name).unwrap();
        assert!(["on", "off"].contains(&value), "{durability:?}");
    }
    assert!(
        !durability.setting("synchronous_commit").unwrap().is_empty(),
        "{durability:?}"
    );
    // The test server runs with fsync off (scripts/start-postgres.sh): the
    // verdict says so, as the start-up check would.
    assert_eq!(
        durability.setting("fsync") == Some("off"),
        durability
            .unsafe_settings
            .contains(&"fsync = off".to_owned()),
        "{durability:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_mariadb_session_gets_the_configured_timeouts() {
    // Whole seconds where InnoDB and MariaDB count in seconds.
    let session = SessionSettings {
        statement_timeout: Duration::from_millis(12_345),
        lock_timeout: Duration::from_secs(3),
        idle_in_transaction_timeout: Duration::from_secs(120),
    };
    let options = StoreOptions {
        session,
        ..fanout_only()
    };
    let Some(db) = mysql_with(&options).await else {
        return;
    };
    assert_eq!(db.store.session_settings().await.unwrap(), Some(session));
    let durability = db.store.durability().await.unwrap().unwrap();
    let flush = durability
        .setting("innodb_flush_log_at_trx_commit")
        .unwrap();
    assert_eq!(
        flush != "1" && flush != "3",
        !durability.unsafe_settings.is_empty(),
        "{durability:?}"
    );
}
