//! A batch's commit whose answer was lost: asked of the server (`commit`),
//! so the batch's answers say what the server did.

use sqlx::{AnyConnection, Row};

use crate::commit::{self, Ticket};
use crate::dialect;
use crate::sql::Backend;
use crate::store::{GatedTx, Store};

impl Store {
    /// The ticket a general batch's transaction takes first: PostgreSQL's
    /// transaction id; on MySQL/MariaDB its marker row, inserted (the
    /// transaction's first write); none on SQLite, whose commit is local.
    pub(super) async fn commit_ticket(
        &self,
        tx: &mut AnyConnection,
        now: i64,
    ) -> Result<Option<Ticket>, sqlx::Error> {
        match self.backend {
            Backend::Postgres => {
                let txid = sqlx::query_scalar::<_, i64>(commit::TXID)
                    .fetch_one(&mut *tx)
                    .await?;
                Ok(Some(Ticket::Txid(txid)))
            }
            Backend::Mysql => {
                let token = commit::marker_token(now);
                dialect::query(commit::INSERT_MARKER)
                    .bind(token.as_str())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                Ok(Some(Ticket::Marker(token)))
            }
            Backend::Sqlite => Ok(None),
        }
    }

    /// Commits `tx`; if the commit's answer was lost (the connection broke
    /// after `COMMIT` went out) and the transaction took a `ticket`, asks
    /// the server what became of it: `Ok` if it committed after all, so the
    /// batch's answers stand (`commit`).
    pub(super) async fn commit_resolved(
        &self,
        tx: GatedTx<'_>,
        ticket: Option<Ticket>,
        operations: usize,
    ) -> Result<(), sqlx::Error> {
        if let Err(e) = tx.commit().await {
            return match ticket {
                Some(ticket) if commit::answer_lost(&e) => {
                    self.resolve_lost_commit(ticket, operations, e).await
                }
                _ => Err(e),
            };
        }
        if let Some(Ticket::Marker(_)) = ticket
            && fastrand::u32(..commit::FORGET_MARKERS_EVERY) == 0
        {
            self.forget_old_markers();
        }
        Ok(())
    }

    /// Deletes the commit markers older than [`commit::MARKERS_KEPT_MS`],
    /// in the background (its own statement: a batch never waits for it).
    fn forget_old_markers(&self) {
        let pool = self.orders.clone();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let before = commit::marker_token(now - commit::MARKERS_KEPT_MS);
        tokio::spawn(async move {
            if let Err(e) = dialect::query(commit::FORGET_MARKERS)
                .bind(before)
                .execute(&pool)
                .await
            {
                tracing::warn!(error = %e, "could not delete old commit markers; will try again");
            }
        });
    }

    /// [`Store::commit_resolved`]'s question, also asked by PostgreSQL's
    /// set-based path: `Ok` if the transaction of `ticket` committed, else
    /// `lost`.
    pub(super) async fn resolve_lost_commit(
        &self,
        ticket: Ticket,
        operations: usize,
        lost: sqlx::Error,
    ) -> Result<(), sqlx::Error> {
        let outcome = commit::resolve(commit::RESOLVE_WITHIN, || {
            let ticket = &ticket;
            async move {
                match ticket {
                    Ticket::Txid(txid) => {
                        sqlx::query_scalar::<_, Option<String>>(commit::TXID_STATUS)
                            .bind(*txid)
                            .fetch_one(&self.orders)
                            .await
                    }
                    // A locking read: it waits for the marker's transaction.
                    Ticket::Marker(token) => {
                        let row = dialect::query(commit::MARKER_COMMITTED)
                            .bind(token.as_str())
                            .fetch_one(&self.orders)
                            .await?;
                        let found: i64 = row.try_get("n")?;
                        Ok(Some(
                            if found > 0 { "committed" } else { "aborted" }.to_owned(),
                        ))
                    }
                }
            }
        })
        .await;
        match outcome {
            commit::Outcome::Committed => {
                tracing::warn!(
                    error = %lost, %ticket, operations,
                    "a commit's answer was lost; the server says it committed: the batch's answers stand"
                );
                Ok(())
            }
            commit::Outcome::RolledBack => {
                tracing::warn!(
                    error = %lost, %ticket, operations,
                    "a commit's answer was lost; the server says it rolled back"
                );
                Err(lost)
            }
            commit::Outcome::Unknown => {
                tracing::error!(
                    error = %lost, %ticket, operations,
                    "a commit's answer was lost and the server could not say what became of it \
                     within {:?}: its operations are answered unavailable, some may have committed",
                    commit::RESOLVE_WITHIN
                );
                Err(lost)
            }
        }
    }
}
