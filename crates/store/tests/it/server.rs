//! What the store sets on, and reads from, the database server: the time
//! limits every PostgreSQL and MariaDB session gets (one set of options for
//! both), and the durability settings the server's start-up checks.

use std::time::Duration;

use ordermq_store::{SessionSettings, StoreOptions};

use super::helpers::{fanout_only, fresh_postgres_database, mysql_with, postgres_with, sqlite};

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

/// Instances starting together on a fresh PostgreSQL database take turns at
/// its schema, the version table included: six stores opened at once on
/// each of five new databases all open. With the version table created
/// before the advisory lock, some failed with `duplicate key value violates
/// unique constraint "pg_type_typname_nsp_index"` (two sessions creating the
/// same table at once), as an order instance of the fault suite's topology
/// did once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_opening_a_fresh_postgres_database_at_once_all_open() {
    for _ in 0..5 {
        let Some(url) = fresh_postgres_database().await else {
            return;
        };
        let opens = (0..6).map(|_| {
            let url = url.clone();
            tokio::spawn(async move { ordermq_store::Store::open(&url, &fanout_only()).await })
        });
        for opened in futures_util::future::join_all(opens).await {
            match opened.unwrap() {
                Ok(store) => store.close().await,
                Err(e) => panic!("a store opening at the same time as five others: {e}"),
            }
        }
    }
}
