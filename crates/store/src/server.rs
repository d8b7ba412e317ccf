//! What ordermq asks of a database server and reads back from it, in one
//! form for PostgreSQL and MySQL/MariaDB: the time limits every session
//! gets ([`SessionSettings`]) and the server's durability as the start-up
//! check judges it ([`Durability`]).
//!
//! The two servers name and scale these settings differently (PostgreSQL's
//! `statement_timeout` in milliseconds, InnoDB's `innodb_lock_wait_timeout`
//! in whole seconds, MariaDB's `idle_transaction_timeout`; `fsync` and
//! `synchronous_commit` against `innodb_flush_log_at_trx_commit`). The
//! operator sets one set of keys and reads one verdict; `pg` and
//! `mysql_session` translate.
//!
//! Base module: it imports nothing from the crate.

use std::time::Duration;

/// Time limits set on every connection to a database server; a zero
/// duration leaves the server's setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSettings {
    /// A statement running longer is cancelled (PostgreSQL
    /// `statement_timeout`; MariaDB `max_statement_time`; MySQL
    /// `max_execution_time`, which bounds reads only).
    pub statement_timeout: Duration,
    /// A statement waiting longer for a lock is cancelled (PostgreSQL
    /// `lock_timeout`; InnoDB `innodb_lock_wait_timeout`, whole seconds).
    pub lock_timeout: Duration,
    /// A session idle this long inside a transaction is ended, releasing its
    /// locks (PostgreSQL `idle_in_transaction_session_timeout`; MariaDB
    /// `idle_transaction_timeout`, whole seconds; MySQL has none).
    pub idle_in_transaction_timeout: Duration,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            statement_timeout: Duration::from_secs(30),
            lock_timeout: Duration::from_secs(10),
            idle_in_transaction_timeout: Duration::from_secs(60),
        }
    }
}

/// A database server's settings that decide whether an acknowledged commit
/// survives a crash, as this store's sessions see them, and the verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durability {
    /// Each setting read, by its server's name, for the start-up log.
    pub settings: Vec<(&'static str, String)>,
    /// Why an acknowledged commit might not survive a crash of the server
    /// or its machine, as `name = value`; empty when it would.
    pub unsafe_settings: Vec<String>,
    /// Settings that keep acknowledged commits but deserve a warning (torn
    /// pages, a binary log that can miss commits), each explained.
    pub warnings: Vec<String>,
}

impl Durability {
    /// The value read for the setting `name`.
    pub fn setting(&self, name: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The settings as one line, `name=value, …`, for the log.
    pub fn summary(&self) -> String {
        self.settings
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
