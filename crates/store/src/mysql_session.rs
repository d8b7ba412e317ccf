//! A MySQL or MariaDB server as ordermq needs it: each connection's session
//! settings, and at start the server's durability, read, logged and held to
//! the payment path's promise.
//!
//! ordermq answers a payment once its transaction has committed; the
//! gateway then forgets it. On a server whose InnoDB does not flush its log
//! at every commit (`innodb_flush_log_at_trx_commit` other than 1), a crash
//! loses the last second of acknowledged commits: paid orders that go back
//! to UNPAID and later close. So opening refuses such a server unless told
//! otherwise (`StoreOptions::allow_unsafe_durability`), and says loudly
//! that it runs on one. A binary log not synced at every commit
//! (`sync_binlog` other than 1) keeps the commits but can lose them from
//! replicas and point-in-time recovery: a warning.
//!
//! The session's time limits bound what a stuck statement or lock can hold:
//! `innodb_lock_wait_timeout` (seconds, both servers), the statement's time
//! (MariaDB's `max_statement_time`, every statement; MySQL's
//! `max_execution_time`, reads only) and, on MariaDB, a transaction left
//! idle (`idle_transaction_timeout`; MySQL has none, and ordermq never
//! leaves one idle: each transaction runs start to commit in one task).
//!
//! Leaf module: it imports only the base (`sql`, `dialect`).

use std::time::Duration;

use sqlx::{AnyConnection, AnyPool, Executor, Row};

use crate::dialect;
use crate::sql;

/// The time limits of every session.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub statement: Duration,
    pub lock_wait: Duration,
    pub idle_in_transaction: Duration,
}

/// Applies ordermq's settings (`sql::MYSQL_SETTINGS`) and `limits` to a new
/// connection.
pub(crate) async fn configure(conn: &mut AnyConnection, limits: Limits) -> Result<(), sqlx::Error> {
    for setting in sql::MYSQL_SETTINGS {
        conn.execute(*setting).await?;
    }
    let version: String = dialect::query("SELECT VERSION() AS version")
        .fetch_one(&mut *conn)
        .await?
        .try_get("version")?;
    // Whole seconds, at least one: 0 would mean "no limit" to some of them.
    let seconds = |d: Duration| d.as_secs().max(1);
    let mut settings = vec![format!(
        "innodb_lock_wait_timeout = {}",
        seconds(limits.lock_wait)
    )];
    if version.contains("MariaDB") {
        settings.push(format!(
            "max_statement_time = {:.3}",
            limits.statement.as_secs_f64()
        ));
        settings.push(format!(
            "idle_transaction_timeout = {}",
            seconds(limits.idle_in_transaction)
        ));
    } else {
        settings.push(format!(
            "max_execution_time = {}",
            limits.statement.as_millis()
        ));
    }
    conn.execute(format!("SET SESSION {}", settings.join(", ")).as_str())
        .await?;
    Ok(())
}

/// The server's durability settings, as read at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Durability {
    pub version: String,
    pub flush_log_at_trx_commit: i64,
    pub sync_binlog: i64,
    pub log_bin: bool,
}

impl Durability {
    /// Whether an acknowledged commit survives a crash of the server (or of
    /// its machine): InnoDB flushes its log at every commit. MariaDB's 3
    /// flushes at commit too (it only changes how the binary log joins in).
    pub(crate) fn commits_survive_a_crash(&self) -> bool {
        self.flush_log_at_trx_commit == 1
            || (self.flush_log_at_trx_commit == 3 && self.version.contains("MariaDB"))
    }

    /// Whether the binary log can miss commits after a crash.
    pub(crate) fn binlog_can_lose_commits(&self) -> bool {
        self.log_bin && self.sync_binlog != 1
    }
}

/// Reads the server's durability settings.
pub(crate) async fn durability(pool: &AnyPool) -> Result<Durability, sqlx::Error> {
    let row = dialect::query(
        "SELECT VERSION() AS version, \
           CAST(@@innodb_flush_log_at_trx_commit AS SIGNED) AS flush_log_at_trx_commit, \
           CAST(@@sync_binlog AS SIGNED) AS sync_binlog, \
           CAST(@@log_bin AS SIGNED) AS log_bin",
    )
    .fetch_one(pool)
    .await?;
    Ok(Durability {
        version: row.try_get("version")?,
        flush_log_at_trx_commit: row.try_get("flush_log_at_trx_commit")?,
        sync_binlog: row.try_get("sync_binlog")?,
        log_bin: row.try_get::<i64, _>("log_bin")? != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(version: &str, flush: i64, sync_binlog: i64, log_bin: bool) -> Durability {
        Durability {
            version: version.to_owned(),
            flush_log_at_trx_commit: flush,
            sync_binlog,
            log_bin,
        }
    }

    #[test]
    fn only_a_log_flushed_at_every_commit_is_durable() {
        assert!(server("8.0.36", 1, 1, true).commits_survive_a_crash());
        assert!(!server("8.0.36", 2, 1, true).commits_survive_a_crash());
        assert!(!server("8.0.36", 0, 1, true).commits_survive_a_crash());
        assert!(!server("8.0.36", 3, 1, true).commits_survive_a_crash());
        assert!(server("10.11.6-MariaDB", 3, 0, false).commits_survive_a_crash());
    }

    #[test]
    fn an_unsynced_binary_log_matters_only_when_there_is_one() {
        assert!(server("8.0.36", 1, 0, true).binlog_can_lose_commits());
        assert!(!server("8.0.36", 1, 0, false).binlog_can_lose_commits());
        assert!(!server("8.0.36", 1, 1, true).binlog_can_lose_commits());
    }
}
