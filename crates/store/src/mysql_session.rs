//! A MySQL or MariaDB server as ordermq needs it: each connection's session
//! settings, and at start the server's durability, read, logged and held to
//! the payment path's promise.
//!
//! ordermq answers a payment once its transaction has committed; the
//! gateway then forgets it. On a server whose InnoDB does not flush its log
//! at every commit (`innodb_flush_log_at_trx_commit` other than 1), a crash
//! loses the last second of acknowledged commits: paid orders that go back
//! to UNPAID and later close. So the verdict ([`Durability`]) names that
//! setting as unsafe, and the server's start refuses it unless told
//! otherwise (`database_allow_unsafe_durability`), as it does PostgreSQL's
//! `fsync = off`. A binary log not synced at every commit (`sync_binlog`
//! other than 1) keeps the commits but can lose them from replicas and
//! point-in-time recovery: a warning.
//!
//! The session's time limits ([`SessionSettings`], the same keys as
//! PostgreSQL's) bound what a stuck statement or lock can hold:
//! `innodb_lock_wait_timeout` (whole seconds, at least 1, both servers),
//! the statement's time (MariaDB's `max_statement_time`, every statement;
//! MySQL's `max_execution_time`, reads only) and, on MariaDB, a transaction
//! left idle (`idle_transaction_timeout`, whole seconds; MySQL has none, and
//! ordermq never leaves one idle: each transaction runs start to commit in
//! one task). A zero duration leaves the server's setting.
//!
//! Leaf module: it imports only the base (`sql`, `dialect`, `server`).

use std::time::Duration;

use sqlx::{AnyConnection, AnyPool, Executor, Row};

use crate::dialect;
use crate::server::{Durability, SessionSettings};
use crate::sql;

/// Applies ordermq's settings (`sql::MYSQL_SETTINGS`) and `limits` to a new
/// connection.
pub(crate) async fn configure(
    conn: &mut AnyConnection,
    limits: &SessionSettings,
) -> Result<(), sqlx::Error> {
    for setting in sql::MYSQL_SETTINGS {
        conn.execute(*setting).await?;
    }
    let version: String = dialect::query("SELECT VERSION() AS version")
        .fetch_one(&mut *conn)
        .await?
        .try_get("version")?;
    let settings = limit_settings(limits, version.contains("MariaDB"));
    if !settings.is_empty() {
        conn.execute(format!("SET SESSION {}", settings.join(", ")).as_str())
            .await?;
    }
    Ok(())
}

/// The `SET SESSION` assignments of `limits` on MariaDB or MySQL; a zero
/// duration is left out.
fn limit_settings(limits: &SessionSettings, mariadb: bool) -> Vec<String> {
    // Whole seconds, at least one: 0 means "no limit" or is refused.
    let seconds = |d: Duration| d.as_secs().max(1);
    let mut settings = Vec::new();
    if !limits.lock_timeout.is_zero() {
        settings.push(format!(
            "innodb_lock_wait_timeout = {}",
            seconds(limits.lock_timeout)
        ));
    }
    let statement = limits.statement_timeout;
    let idle = limits.idle_in_transaction_timeout;
    if mariadb {
        if !statement.is_zero() {
            settings.push(format!(
                "max_statement_time = {:.3}",
                statement.as_secs_f64()
            ));
        }
        if !idle.is_zero() {
            settings.push(format!("idle_transaction_timeout = {}", seconds(idle)));
        }
    } else if !statement.is_zero() {
        settings.push(format!(
            "max_execution_time = {}",
            statement.as_millis().max(1)
        ));
    }
    settings
}

/// The limits `pool`'s sessions run with, as a session reports them (MySQL,
/// which has no idle-transaction limit: zero).
pub(crate) async fn session(pool: &AnyPool) -> Result<SessionSettings, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let version: String = dialect::query("SELECT VERSION() AS version")
        .fetch_one(&mut *conn)
        .await?
        .try_get("version")?;
    let ms = |row: &sqlx::any::AnyRow, name: &str| -> Result<Duration, sqlx::Error> {
        let n: i64 = row.try_get(name)?;
        Ok(Duration::from_millis(u64::try_from(n).unwrap_or(0)))
    };
    let row = if version.contains("MariaDB") {
        dialect::query(
            "SELECT CAST(@@max_statement_time * 1000 AS SIGNED) AS s, \
             CAST(@@innodb_lock_wait_timeout * 1000 AS SIGNED) AS l, \
             CAST(@@idle_transaction_timeout * 1000 AS SIGNED) AS i",
        )
    } else {
        dialect::query(
            "SELECT CAST(@@max_execution_time AS SIGNED) AS s, \
             CAST(@@innodb_lock_wait_timeout * 1000 AS SIGNED) AS l, 0 AS i",
        )
    }
    .fetch_one(&mut *conn)
    .await?;
    Ok(SessionSettings {
        statement_timeout: ms(&row, "s")?,
        lock_timeout: ms(&row, "l")?,
        idle_in_transaction_timeout: ms(&row, "i")?,
    })
}

/// The server's durability settings, as read at start.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Server {
    version: String,
    flush_log_at_trx_commit: i64,
    sync_binlog: i64,
    log_bin: bool,
}

impl Server {
    /// Whether an acknowledged commit survives a crash of the server (or of
    /// its machine): InnoDB flushes its log at every commit. MariaDB's 3
    /// flushes at commit too (it only changes how the binary log joins in).
    fn commits_survive_a_crash(&self) -> bool {
        self.flush_log_at_trx_commit == 1
            || (self.flush_log_at_trx_commit == 3 && self.version.contains("MariaDB"))
    }

    /// Whether the binary log can miss commits after a crash.
    fn binlog_can_lose_commits(&self) -> bool {
        self.log_bin && self.sync_binlog != 1
    }

    /// The verdict in the form shared with PostgreSQL.
    fn judged(self) -> Durability {
        let mut unsafe_settings = Vec::new();
        if !self.commits_survive_a_crash() {
            unsafe_settings.push(format!(
                "innodb_flush_log_at_trx_commit = {}",
                self.flush_log_at_trx_commit
            ));
        }
        let mut warnings = Vec::new();
        if self.binlog_can_lose_commits() {
            warnings.push(format!(
                "the binary log is not synced at every commit (sync_binlog = {}): after a \
                 crash, replicas and point-in-time recovery can miss acknowledged payments",
                self.sync_binlog
            ));
        }
        Durability {
            settings: vec![
                ("version", self.version),
                (
                    "innodb_flush_log_at_trx_commit",
                    self.flush_log_at_trx_commit.to_string(),
                ),
                ("sync_binlog", self.sync_binlog.to_string()),
                (
                    "log_bin",
                    if self.log_bin { "ON" } else { "OFF" }.to_owned(),
                ),
            ],
            unsafe_settings,
            warnings,
        }
    }
}

/// Reads the server's durability settings and judges them.
pub(crate) async fn durability(pool: &AnyPool) -> Result<Durability, sqlx::Error> {
    let row = dialect::query(
        "SELECT VERSION() AS version, \
           CAST(@@innodb_flush_log_at_trx_commit AS SIGNED) AS flush_log_at_trx_commit, \
           CAST(@@sync_binlog AS SIGNED) AS sync_binlog, \
           CAST(@@log_bin AS SIGNED) AS log_bin",
    )
    .fetch_one(pool)
    .await?;
    Ok(Server {
        version: crate::fail::column(&row, "version")?,
        flush_log_at_trx_commit: row.try_get("flush_log_at_trx_commit")?,
        sync_binlog: row.try_get("sync_binlog")?,
        log_bin: row.try_get::<i64, _>("log_bin")? != 0,
    }
    .judged())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(version: &str, flush: i64, sync_binlog: i64, log_bin: bool) -> Server {
        Server {
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

    #[test]
    fn the_verdict_names_the_unsafe_setting_and_warns_of_the_binary_log() {
        let durable = server("8.0.36", 1, 1, true).judged();
        assert!(durable.unsafe_settings.is_empty() && durable.warnings.is_empty());
        assert_eq!(durable.setting("innodb_flush_log_at_trx_commit"), Some("1"));
        let lossy = server("10.11.14-MariaDB", 2, 0, true).judged();
        assert_eq!(
            lossy.unsafe_settings,
            ["innodb_flush_log_at_trx_commit = 2"]
        );
        assert_eq!(lossy.warnings.len(), 1);
    }

    #[test]
    fn limits_become_each_servers_settings_and_zero_keeps_the_servers() {
        let limits = SessionSettings {
            statement_timeout: Duration::from_millis(1_500),
            lock_timeout: Duration::from_millis(300),
            idle_in_transaction_timeout: Duration::from_secs(20),
        };
        assert_eq!(
            limit_settings(&limits, true),
            [
                "innodb_lock_wait_timeout = 1",
                "max_statement_time = 1.500",
                "idle_transaction_timeout = 20"
            ]
        );
        assert_eq!(
            limit_settings(&limits, false),
            ["innodb_lock_wait_timeout = 1", "max_execution_time = 1500"]
        );
        let none = SessionSettings {
            statement_timeout: Duration::ZERO,
            lock_timeout: Duration::ZERO,
            idle_in_transaction_timeout: Duration::ZERO,
        };
        assert!(limit_settings(&none, true).is_empty());
    }
}
