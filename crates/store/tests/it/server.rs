//! What the store sets on, and reads from, the database server: the
//! timeouts every PostgreSQL session gets, and the durability settings the
//! server's start-up checks.

use std::time::Duration;

use ordermq_store::{SessionSettings, StoreOptions};

use super::helpers::{postgres_with, sqlite};

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
        ..StoreOptions::default()
    };
    let Some(db) = postgres_with(&options).await else {
        return;
    };
    assert_eq!(db.store.session_settings().await.unwrap(), Some(session));
    let durability = db.store.durability().await.unwrap().unwrap();
    for value in [&durability.fsync, &durability.full_page_writes] {
        assert!(["on", "off"].contains(&value.as_str()), "{durability:?}");
    }
    assert!(!durability.synchronous_commit.is_empty(), "{durability:?}");
}
