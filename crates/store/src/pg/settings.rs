//! PostgreSQL's connections: the session settings every connection gets
//! (statement, lock and idle-in-transaction timeouts), the pool of the fast
//! write path, and the server's durability settings read at start.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

/// Timeouts set on every PostgreSQL connection (`SET` after connecting); a
/// zero duration leaves the server's setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSettings {
    /// `statement_timeout`: a statement running longer is cancelled.
    pub statement_timeout: Duration,
    /// `lock_timeout`: a statement waiting longer for a lock is cancelled.
    pub lock_timeout: Duration,
    /// `idle_in_transaction_session_timeout`: a session idle this long
    /// inside a transaction is ended, releasing its locks.
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

impl SessionSettings {
    /// The `SET` statements, one simple query.
    pub(crate) fn statements(&self) -> String {
        [
            ("statement_timeout", self.statement_timeout),
            ("lock_timeout", self.lock_timeout),
            (
                "idle_in_transaction_session_timeout",
                self.idle_in_transaction_timeout,
            ),
        ]
        .iter()
        .filter(|(_, d)| !d.is_zero())
        .map(|(name, d)| format!("SET {name} = {};", d.as_millis().max(1)))
        .collect::<Vec<_>>()
        .join(" ")
    }
}

/// A duration as `SHOW` prints one: `0`, `250ms`, `30s`, `10min`, `1h`, `1d`.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let ms = match unit {
        "" | "ms" => n,
        "s" => n * 1_000,
        "min" => n * 60_000,
        "h" => n * 3_600_000,
        "d" => n * 86_400_000,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

/// The pool of PostgreSQL's fast write path, connecting on first use (the
/// general pool has already reached the server).
///
/// # Errors
///
/// A URL that does not parse.
pub(crate) fn connect(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
    session: SessionSettings,
) -> Result<PgPool, sqlx::Error> {
    let options = PgConnectOptions::from_str(url)?;
    let set = session.statements();
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .after_connect(move |conn, _meta| {
            let set = set.clone();
            Box::pin(async move {
                if !set.is_empty() {
                    sqlx::Executor::execute(&mut *conn, set.as_str()).await?;
                }
                Ok(())
            })
        })
        .connect_lazy_with(options))
}

/// The PostgreSQL server's settings that decide whether an acknowledged
/// commit survives a crash, as this store's sessions see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durability {
    /// `fsync`: `off` lets the server skip flushing the WAL at all.
    pub fsync: String,
    /// `synchronous_commit`: `off` acknowledges a commit before its WAL
    /// record is flushed. `local`, `remote_write`, `on` and `remote_apply`
    /// all flush the local WAL first.
    pub synchronous_commit: String,
    /// `full_page_writes`: `off` risks torn pages after an OS crash.
    pub full_page_writes: String,
}

impl Durability {
    /// Why an acknowledged commit might not survive a crash of the server
    /// or its machine: `fsync = off` or `synchronous_commit = off`. Empty
    /// when it would.
    pub fn unsafe_settings(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if self.fsync != "on" {
            reasons.push(format!("fsync = {}", self.fsync));
        }
        if self.synchronous_commit == "off" {
            reasons.push(format!("synchronous_commit = {}", self.synchronous_commit));
        }
        reasons
    }

    /// `full_page_writes = off`: commits survive, but a page torn by an OS
    /// crash may leave the database unreadable. Worth a warning.
    pub fn torn_pages_possible(&self) -> bool {
        self.full_page_writes != "on"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn durability(fsync: &str, synchronous_commit: &str) -> Durability {
        Durability {
            fsync: fsync.into(),
            synchronous_commit: synchronous_commit.into(),
            full_page_writes: "on".into(),
        }
    }

    #[test]
    fn only_settings_that_lose_acknowledged_commits_are_unsafe() {
        for level in ["on", "local", "remote_write", "remote_apply"] {
            assert!(
                durability("on", level).unsafe_settings().is_empty(),
                "{level}"
            );
        }
        assert_eq!(
            durability("on", "off").unsafe_settings(),
            ["synchronous_commit = off"]
        );
        assert_eq!(durability("off", "on").unsafe_settings(), ["fsync = off"]);
        assert_eq!(durability("off", "off").unsafe_settings().len(), 2);
    }

    #[test]
    fn session_settings_skip_zero_and_parse_back() {
        let settings = SessionSettings {
            statement_timeout: Duration::from_secs(30),
            lock_timeout: Duration::ZERO,
            idle_in_transaction_timeout: Duration::from_millis(1_500),
        };
        assert_eq!(
            settings.statements(),
            "SET statement_timeout = 30000; SET idle_in_transaction_session_timeout = 1500;"
        );
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("1500ms"), Some(Duration::from_millis(1_500)));
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("10min"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("ten"), None);
    }
}
