//! PostgreSQL's connections: the session settings every connection gets
//! (statement, lock and idle-in-transaction timeouts, as `SET` statements),
//! the pool of the fast write path, and the server's durability settings
//! read at start and judged.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AnyPool, Row};

use crate::server::{Durability, SessionSettings};

/// Every session plans each execution of a prepared statement with its
/// actual parameters and the tables' current size. By default PostgreSQL
/// switches a connection's prepared statement to a *generic* plan after five
/// executions and keeps it until the tables are next analyzed; on a young
/// database (autovacuum analyzes a minute after start at the earliest) that
/// plan was made for empty tables and scans: payments hash-joined against a
/// sequential scan of `payments`, the batch's read scanning `orders`, the
/// inbox checked by scanning a group's rows. Measured (`ordermq-bench
/// capacity --database postgres`, 2 order writers, one sitting): 698
/// payments/s sustained, payment p50 rising from 20 to 63 ms within a minute;
/// with this setting 1,707/s. Planning each execution costs far less than
/// one such scan: ordermq's statements touch a handful of rows by key.
const PLAN_EVERY_EXECUTION: &str = "SET plan_cache_mode = force_custom_plan;";

/// The `SET` statements of `session`, one simple query: the time limits (a
/// zero duration is left out: the server's setting stays) and
/// [`PLAN_EVERY_EXECUTION`].
pub(crate) fn statements(session: &SessionSettings) -> String {
    let mut set: Vec<String> = [
        ("statement_timeout", session.statement_timeout),
        ("lock_timeout", session.lock_timeout),
        (
            "idle_in_transaction_session_timeout",
            session.idle_in_transaction_timeout,
        ),
    ]
    .iter()
    .filter(|(_, d)| !d.is_zero())
    .map(|(name, d)| format!("SET {name} = {};", d.as_millis().max(1)))
    .collect();
    set.push(PLAN_EVERY_EXECUTION.to_owned());
    set.join(" ")
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
    let set = statements(&session);
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .after_connect(move |conn, _meta| {
            let set = set.clone();
            Box::pin(async move {
                sqlx::Executor::execute(&mut *conn, set.as_str()).await?;
                Ok(())
            })
        })
        .connect_lazy_with(options))
}

/// The server's durability settings as `pool`'s sessions see them, judged:
/// `fsync = off` or `synchronous_commit = off` lose acknowledged commits
/// (`local`, `remote_write`, `on` and `remote_apply` all flush the local WAL
/// first); `full_page_writes = off` keeps them but risks torn pages.
///
/// # Errors
///
/// The server could not be asked.
pub(crate) async fn durability(pool: &AnyPool) -> Result<Durability, sqlx::Error> {
    let row = sqlx::query(
        "SELECT current_setting('fsync') AS fsync, \
         current_setting('synchronous_commit') AS synchronous_commit, \
         current_setting('full_page_writes') AS full_page_writes",
    )
    .fetch_one(pool)
    .await?;
    Ok(judge(
        row.try_get("fsync")?,
        row.try_get("synchronous_commit")?,
        row.try_get("full_page_writes")?,
    ))
}

fn judge(fsync: String, synchronous_commit: String, full_page_writes: String) -> Durability {
    let mut unsafe_settings = Vec::new();
    if fsync != "on" {
        unsafe_settings.push(format!("fsync = {fsync}"));
    }
    if synchronous_commit == "off" {
        unsafe_settings.push(format!("synchronous_commit = {synchronous_commit}"));
    }
    let mut warnings = Vec::new();
    if full_page_writes != "on" {
        warnings.push(
            "full_page_writes is off: an OS crash may tear pages and leave the database unreadable"
                .to_owned(),
        );
    }
    Durability {
        settings: vec![
            ("fsync", fsync),
            ("synchronous_commit", synchronous_commit),
            ("full_page_writes", full_page_writes),
        ],
        unsafe_settings,
        warnings,
    }
}

/// The timeouts PostgreSQL applies to `pool`'s sessions, as one reports them.
///
/// # Errors
///
/// The server could not be asked, or answered a duration this does not read.
pub(crate) async fn session(pool: &AnyPool) -> Result<SessionSettings, sqlx::Error> {
    let row = sqlx::query(
        "SELECT CAST(current_setting('statement_timeout') AS TEXT) AS s, \
         CAST(current_setting('lock_timeout') AS TEXT) AS l, \
         CAST(current_setting('idle_in_transaction_session_timeout') AS TEXT) AS i",
    )
    .fetch_one(pool)
    .await?;
    let get = |name: &str| -> Result<Duration, sqlx::Error> {
        let text: String = row.try_get(name)?;
        parse_duration(&text)
            .ok_or_else(|| sqlx::Error::Protocol(format!("unexpected timeout setting {text:?}")))
    };
    Ok(SessionSettings {
        statement_timeout: get("s")?,
        lock_timeout: get("l")?,
        idle_in_transaction_timeout: get("i")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn durability(fsync: &str, synchronous_commit: &str) -> Durability {
        judge(fsync.into(), synchronous_commit.into(), "on".into())
    }

    #[test]
    fn only_settings_that_lose_acknowledged_commits_are_unsafe() {
        for level in ["on", "local", "remote_write", "remote_apply"] {
            assert!(
                durability("on", level).unsafe_settings.is_empty(),
                "{level}"
            );
        }
        assert_eq!(
            durability("on", "off").unsafe_settings,
            ["synchronous_commit = off"]
        );
        assert_eq!(durability("off", "on").unsafe_settings, ["fsync = off"]);
        assert_eq!(durability("off", "off").unsafe_settings.len(), 2);
        assert!(durability("on", "on").warnings.is_empty());
        assert_eq!(
            judge("on".into(), "on".into(), "off".into()).warnings.len(),
            1
        );
    }

    #[test]
    fn session_settings_skip_zero_and_parse_back() {
        let settings = SessionSettings {
            statement_timeout: Duration::from_secs(30),
            lock_timeout: Duration::ZERO,
            idle_in_transaction_timeout: Duration::from_millis(1_500),
        };
        assert_eq!(
            statements(&settings),
            "SET statement_timeout = 30000; SET idle_in_transaction_session_timeout = 1500; \
             SET plan_cache_mode = force_custom_plan;"
        );
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("1500ms"), Some(Duration::from_millis(1_500)));
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("10min"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("ten"), None);
    }
}
