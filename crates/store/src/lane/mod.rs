//! The hot write paths on SQLite, one dedicated thread per database file.
//!
//! sqlx runs a SQLite connection on a worker thread and sends it every
//! statement (and every returned row) as a message, so each statement costs
//! two thread hand-offs. On a busy two-core machine a hand-off waits for the
//! scheduler: `ordermq bench capacity` measured a group-commit batch of two
//! writes at ~3 ms (a dozen statements) with the disk's fsync at 0.15 ms,
//! and the order writer busy 96 % of the time at 600 payments/s.
//!
//! Here a *lane* — one thread owning one rusqlite connection with cached
//! prepared statements — runs a whole batch as one job: one hand-off per
//! batch, a few microseconds per statement. Only the paths every payment
//! takes run here (payments that apply, flash-sale admissions, the relay's
//! round, the downstream systems' new effects: `pay`, `flash`, `relay`,
//! `effects`, each from the statements
//! in `sql` that the general path runs too); anything unusual (a duplicate
//! callback, a closed order, a reversal) is handed back and takes the
//! general sqlx path, which explains it. Both connections write the same
//! file; the store's write gate (`Store::run_on_lane`, `Store::begin_write`)
//! keeps them from meeting in SQLite's busy handler.
//!
//! This file (the thread) is a leaf: it imports only the base (`sql`,
//! `fail`). Its children `pay`, `flash`, `relay` and `effects` are operation
//! modules on a rusqlite connection; `batch` dispatches a batch to `pay`,
//! `flash` and `relay`.

pub(crate) mod batch;
pub(crate) mod effects;
pub(crate) mod flash;
pub(crate) mod pay;
pub(crate) mod relay;

use std::path::Path;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use ordermq_domain::ports::StorageError;
use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::fail::{LaneError, LaneResult};
use crate::sql;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Code run first on a thread the store starts (see `StoreOptions`).
#[derive(Clone)]
pub struct ThreadStart(pub Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for ThreadStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ThreadStart")
    }
}

/// A thread owning one connection; jobs run in the order they are sent. The
/// thread ends when the last handle is dropped.
#[derive(Debug, Clone)]
pub(crate) struct Lane {
    jobs: mpsc::Sender<Job>,
}

impl Lane {
    /// Opens `path` (created by the sqlx pool already) with ordermq's
    /// durability settings and starts the lane's thread, which runs
    /// `on_start` first.
    pub(crate) fn open(path: &Path, name: &str, on_start: Option<ThreadStart>) -> LaneResult<Self> {
        let conn = Connection::open(path)?;
        conn.execute_batch(sql::SQLITE_SETTINGS)?;
        conn.set_prepared_statement_cache_capacity(64);
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(format!("sqlite-{name}"))
            .spawn(move || {
                if let Some(on_start) = on_start {
                    (on_start.0)();
                }
                let mut conn = conn;
                while let Ok(job) = queue.recv() {
                    job(&mut conn);
                }
            })
            .map_err(|e| LaneError(StorageError::unavailable(e)))?;
        Ok(Self { jobs })
    }

    /// Runs `job` on the lane's thread and waits for its answer, with how
    /// long it waited in the lane's queue. Only the store's gate calls it
    /// (`Store::run_on_lane`).
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Connection) -> T + Send + 'static,
    ) -> Result<(T, Duration), StorageError> {
        let (reply, answer) = oneshot::channel();
        let sent = Instant::now();
        self.jobs
            .send(Box::new(move |conn| {
                let queued = sent.elapsed();
                let _ = reply.send((job(conn), queued));
            }))
            .map_err(|_| StorageError::unavailable("the SQLite lane has stopped"))?;
        answer
            .await
            .map_err(|_| StorageError::unavailable("the SQLite lane stopped mid-job"))
    }
}

/// Runs a savepoint statement from the statement cache: `execute_batch`
/// parsed it again for every payment (~2 % of the lane's time).
pub(crate) fn savepoint(tx: &rusqlite::Transaction<'_>, sql: &str) -> LaneResult<()> {
    tx.prepare_cached(sql)?.execute([])?;
    Ok(())
}
