//! A batch's commit whose answer was lost: asked of PostgreSQL (`commit`),
//! so the batch's answers say what the server did.

use crate::commit;
use crate::store::{GatedTx, Store};

impl Store {
    /// Commits `tx`; if the commit's answer was lost (the connection broke
    /// after `COMMIT` went out) and `txid` is its PostgreSQL transaction id,
    /// asks the server what became of it: `Ok` if it committed after all,
    /// so the batch's answers stand (`commit`).
    pub(super) async fn commit_resolved(
        &self,
        tx: GatedTx<'_>,
        txid: Option<i64>,
        operations: usize,
    ) -> Result<(), sqlx::Error> {
        let Err(e) = tx.commit().await else {
            return Ok(());
        };
        match txid {
            Some(txid) if commit::answer_lost(&e) => {
                self.resolve_lost_commit(txid, operations, e).await
            }
            _ => Err(e),
        }
    }

    /// [`Store::commit_resolved`]'s question, also asked by PostgreSQL's
    /// set-based path: `Ok` if transaction `txid` committed, else `lost`.
    pub(super) async fn resolve_lost_commit(
        &self,
        txid: i64,
        operations: usize,
        lost: sqlx::Error,
    ) -> Result<(), sqlx::Error> {
        let outcome = commit::resolve(commit::RESOLVE_WITHIN, || {
            sqlx::query_scalar::<_, Option<String>>(commit::TXID_STATUS)
                .bind(txid)
                .fetch_one(&self.orders)
        })
        .await;
        match outcome {
            commit::Outcome::Committed => {
                tracing::warn!(
                    error = %lost, txid, operations,
                    "a commit's answer was lost; the server says it committed: the batch's answers stand"
                );
                Ok(())
            }
            commit::Outcome::RolledBack => {
                tracing::warn!(
                    error = %lost, txid, operations,
                    "a commit's answer was lost; the server says it rolled back"
                );
                Err(lost)
            }
            commit::Outcome::Unknown => {
                tracing::error!(
                    error = %lost, txid, operations,
                    "a commit's answer was lost and the server could not say what became of it \
                     within {:?}: its operations are answered unavailable, some may have committed",
                    commit::RESOLVE_WITHIN
                );
                Err(lost)
            }
        }
    }
}
