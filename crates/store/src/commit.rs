//! A commit whose answer never came back.
//!
//! When the connection breaks after `COMMIT` was sent, the client cannot
//! tell whether the server committed. Answering every request of the batch
//! 503 would tell a shopper "not created" for an order that exists (its
//! stock held until its close, and the retry creating a second one) and a
//! payment gateway "not paid" for a payment that is.
//!
//! PostgreSQL can tell: a transaction reads its own id first
//! (`txid_current()`), and after a commit whose answer was lost a fresh
//! connection asks `txid_status(id)`: `committed`, `aborted`, or `in
//! progress` (the server has not yet noticed the connection drop: asked
//! again until [`RESOLVE_WITHIN`]). MySQL and MariaDB have no such
//! question; there the outcome stays unknown and the batch is answered
//! "unavailable" as before (docs/reliability.md).
//!
//! Base module: it imports nothing from the crate.

use std::future::Future;
use std::time::{Duration, Instant};

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

/// Asks `status` (a query of [`TXID_STATUS`] on a fresh connection) until
/// the server knows the outcome, for at most `within` ([`RESOLVE_WITHIN`]).
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
