//! A commit whose answer never came back.
//!
//! When the connection breaks after `COMMIT` was sent, the client cannot
//! tell whether the server committed. Answering every request of the batch
//! 503 would tell a shopper "not created" for an order that exists (its
//! stock held until its close, and the retry creating a second one) and a
//! payment gateway "not paid" for a payment that is.
//!
//! The server can tell, given a [`Ticket`] the transaction took:
//!
//! - **PostgreSQL**: the transaction reads its own id (`txid_current()`),
//!   and after a commit whose answer was lost a fresh connection asks
//!   `txid_status(id)`: `committed`, `aborted`, or `in progress` (the server
//!   has not yet noticed the connection drop: asked again until
//!   [`RESOLVE_WITHIN`]).
//! - **MySQL and MariaDB** have no such question. The transaction's first
//!   write is a row of its own in `commit_markers` (a fresh token); a fresh
//!   connection then reads that row with a *locking* read, which InnoDB
//!   makes wait while the transaction that inserted it is still open or
//!   committing: the row found means committed, none means rolled back
//!   (and never to commit: its insert went with it). A wait that runs into
//!   the lock timeout is asked again until [`RESOLVE_WITHIN`]. Markers older
//!   than [`MARKERS_KEPT_MS`] are deleted now and then ([`FORGET_MARKERS`]):
//!   a lost commit is resolved within seconds.
//!
//! Base module: it imports nothing from the crate.

use std::future::Future;
use std::time::{Duration, Instant};

/// What a transaction carries so that the outcome of its commit can be
/// asked after, should the answer be lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ticket {
    /// PostgreSQL: the transaction's id ([`TXID`]).
    Txid(i64),
    /// MySQL/MariaDB: the token of its row in `commit_markers`
    /// ([`INSERT_MARKER`]).
    Marker(String),
}

impl std::fmt::Display for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Txid(id) => write!(f, "transaction {id}"),
            Self::Marker(token) => write!(f, "commit marker {token}"),
        }
    }
}

/// A fresh marker token: the batch's time first (zero-padded, so tokens
/// sort by age and [`FORGET_MARKERS`] reads a range of the key), then 64
/// random bits.
pub(crate) fn marker_token(now_ms: i64) -> String {
    format!("{:013}-{:016x}", now_ms.max(0), fastrand::u64(..))
}

/// The transaction's marker (MySQL/MariaDB): its first write. `$1` token,
/// `$2` now.
pub(crate) const INSERT_MARKER: &str = "INSERT INTO commit_markers (token, at) VALUES ($1, $2)";

/// Whether the marker `$1` committed: a locking read, which waits for the
/// transaction that inserted it to end.
pub(crate) const MARKER_COMMITTED: &str =
    "SELECT COUNT(*) AS n FROM commit_markers WHERE token = $1 LOCK IN SHARE MODE";

/// Deletes the markers whose tokens sort before `$1` (a token prefix: a
/// time [`MARKERS_KEPT_MS`] ago).
pub(crate) const FORGET_MARKERS: &str = "DELETE FROM commit_markers WHERE token < $1";

/// How long a marker is kept: far longer than any resolution takes.
pub(crate) const MARKERS_KEPT_MS: i64 = 60 * 60 * 1_000;

/// About one committed batch in this many deletes the old markers.
pub(crate) const FORGET_MARKERS_EVERY: u32 = 1_024;

/// The transaction's id, read inside it (PostgreSQL).
pub(crate) const TXID: &str = "SELECT txid_current()";

/// What became of a transaction, by its id (PostgreSQL 10 and later).
pub(crate) const TXID_STATUS: &str = "SELECT txid_status($1)";

/// How long a lost commit's outcome is asked after before it is given up
/// as unknown: the server notices a dropped connection within moments, and
/// the batch's callers wait meanwhile.
pub(crate) const RESOLVE_WITHIN: Duration = Duration::from_secs(5);

/// What the server says became of a transaction whose commit's answer was
/// lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Committed,
    RolledBack,
    /// Not known within [`RESOLVE_WITHIN`] (the server is away too).
    Unknown,
}

/// Whether a failed commit may have committed all the same: any failure
/// but the server's own answer (a database error is a refusal, so nothing
/// was committed) leaves the outcome open.
pub(crate) fn answer_lost(e: &sqlx::Error) -> bool {
    !matches!(e, sqlx::Error::Database(_))
}

/// Asks `status` (a query of [`TXID_STATUS`], or of [`MARKER_COMMITTED`]
/// put in its words, on a fresh connection) until the server knows the
/// outcome, for at most `within` ([`RESOLVE_WITHIN`]).
pub(crate) async fn resolve<F, Fut>(within: Duration, mut status: F) -> Outcome
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<String>, sqlx::Error>>,
{
    let deadline = Instant::now() + within;
    loop {
        match status().await.as_ref().map(|s| s.as_deref()) {
            Ok(Some("committed")) => return Outcome::Committed,
            Ok(Some("aborted")) => return Outcome::RolledBack,
            // `in progress`, or the server not reachable yet: ask again.
            _ => {}
        }
        if Instant::now() >= deadline {
            return Outcome::Unknown;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_tokens_sort_by_time_and_differ() {
        let (a, b) = (
            marker_token(1_700_000_000_000),
            marker_token(1_700_000_000_000),
        );
        assert_ne!(a, b);
        assert!(marker_token(999) < marker_token(1_000), "zero-padded");
        assert!(a < marker_token(1_700_000_000_001));
        assert!(a.len() <= 64, "fits commit_markers.token");
    }

    #[test]
    fn only_the_servers_own_answer_settles_a_failed_commit() {
        assert!(answer_lost(&sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::UnexpectedEof
        ))));
        assert!(answer_lost(&sqlx::Error::Protocol("cut".into())));
        assert!(answer_lost(&sqlx::Error::PoolTimedOut));
    }

    #[tokio::test]
    async fn an_outcome_in_progress_is_asked_again_and_an_unreachable_one_given_up() {
        let within = Duration::from_millis(300);
        let mut asked = 0;
        let outcome = resolve(within, || {
            asked += 1;
            let answer = if asked < 3 {
                "in progress"
            } else {
                "committed"
            };
            async move { Ok(Some(answer.to_owned())) }
        })
        .await;
        assert_eq!((outcome, asked), (Outcome::Committed, 3));
        let outcome = resolve(within, || async { Err(sqlx::Error::PoolTimedOut) }).await;
        assert_eq!(outcome, Outcome::Unknown);
        let outcome = resolve(within, || async { Ok(Some("aborted".to_owned())) }).await;
        assert_eq!(outcome, Outcome::RolledBack);
    }
}
