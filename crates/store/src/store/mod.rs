//! The store's handle: the connection pools, the SQLite lanes, opening and
//! migrating the databases, and the write gate as a type.
//!
//! A write reaches a database through [`Store::begin_write`] (a [`GatedTx`])
//! or [`Store::run_on_lane`], and both take the database's gate first: a
//! write path cannot forget it, since neither the gates nor a way to begin a
//! write transaction without them leave this module. Reads use the pools.
//!
//! Handle module: it imports only the base and leaves (`schema`, the lane's
//! thread).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ordermq_domain::System;
use ordermq_domain::ports::StorageError;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor, Row};
use thiserror::Error;

use crate::dialect;
use crate::lane::{Lane, ThreadStart};
use crate::mysql_session;
use crate::pg;
use crate::server::{Durability, SessionSettings};
use crate::sql::Feed;
use crate::sql::{self, Backend};

mod migrate;

/// A write transaction holding its database's write gate: commit it or drop
/// it (which rolls it back), and the gate opens with it. It derefs to the
/// connection, so the `*_in` steps take `&mut *tx`.
#[derive(Debug)]
pub(crate) struct GatedTx<'s> {
    // Fields drop in order: the transaction ends before the gate opens.
    tx: sqlx::Transaction<'static, sqlx::Any>,
    _gate: Option<tokio::sync::MutexGuard<'s, ()>>,
}

impl GatedTx<'_> {
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    pub(crate) async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

impl std::ops::Deref for GatedTx<'_> {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for GatedTx<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

/// How long a lane job waited: for the gate, then in the lane's queue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LaneWait {
    pub gate: Duration,
    pub queue: Duration,
}

/// What one SQLite file's checkpoint did (see [`Store::checkpoint`]).
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// `orders`, or the consumer group of the system whose file it is.
    pub database: &'static str,
    /// Frames in the write-ahead log (pages written since it was last reset).
    pub wal_frames: i64,
    /// Frames copied into the database file so far.
    pub copied_frames: i64,
    pub took: Duration,
}

#[derive(Debug, Error)]
pub enum OpenError {
    #[error(
        "unsupported database URL {0:?}: use sqlite://PATH, postgres://…, postgresql://… or mysql://…"
    )]
    UnsupportedUrl(String),
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open database {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("cannot open the write lane of {path}")]
    Lane {
        path: PathBuf,
        #[source]
        source: StorageError,
    },
    #[error("cannot create tables in {url}: {source}")]
    Migrate { url: String, source: sqlx::Error },
}

/// Pool sizes and timeouts.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Connections to the order database (PostgreSQL); SQLite uses a few, as it has one writer.
    pub max_connections: u32,
    /// How long to wait for a connection before failing the request.
    pub acquire_timeout: Duration,
    /// SQLite: runs first on each downstream system's lane thread (the app
    /// lowers their priority there: they are fan-out work, the order
    /// database's lane is the payment path).
    pub on_system_lane_start: Option<ThreadStart>,
    /// SQLite: run the hot write paths on the lanes (the default). Off, every
    /// write takes the general sqlx path: the differential tests compare the two.
    pub lanes: bool,
    /// PostgreSQL and MySQL/MariaDB: the time limits every connection sets.
    pub session: SessionSettings,
    /// PostgreSQL: payments and the relay's rounds take the set-based
    /// path of `pg` (the default). Off, the general sqlx path: the
    /// differential tests compare the two.
    pub pg_fast_path: bool,
    /// Which databases the URL names and this store opens (see [`Databases`]).
    pub databases: Databases,
    /// Whether every order change also writes a change-feed row (`feed`;
    /// off by default, as ordermq's `feed` key).
    pub feed: Feed,
}

/// Which databases a store opens. One process running everything opens
/// them all from the order database's URL; when the systems run as their
/// own processes (`role`), the order service opens its own database (and,
/// on SQLite, `receipts.db`) and each system only its own, whose URL is
/// then the one given. A database a store does not hold is never migrated
/// and never read: its pool stands in with the held one (a query meant for
/// it fails on the missing table), and the reads that show other systems'
/// progress answer from the receipts instead (see [`Store::holds`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Databases {
    /// The order database and every system's (one process runs it all).
    #[default]
    All,
    /// The order database and the receipts only.
    Orders,
    /// One downstream system's database only (the messages its group
    /// parks are kept there too).
    System(System),
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(10),
            on_system_lane_start: None,
            lanes: true,
            session: SessionSettings::default(),
            pg_fast_path: true,
            databases: Databases::All,
            feed: Feed::Off,
        }
    }
}

/// Connection pools for the order database and each system's database.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) backend: Backend,
    pub(crate) orders: AnyPool,
    pub(crate) systems: [AnyPool; 4],
    /// The groups' receipts (`event_receipts`): on SQLite a file of their
    /// own, `receipts.db`, so that recording thousands of them a second
    /// never holds the order database's one write lock while payments
    /// wait; on a server, the order database.
    pub(crate) receipts: AnyPool,
    /// One gate per SQLite file (orders, the systems in [`System::ALL`]
    /// order, receipts); see [`GatedTx`]. Private to this module: writes
    /// take it through [`Store::begin_write`] and [`Store::run_on_lane`]
    /// only.
    gates: Arc<[tokio::sync::Mutex<()>; 6]>,
    /// SQLite only: the hot write paths' dedicated threads (see `lane`).
    lanes: Option<Arc<Lanes>>,
    /// PostgreSQL only: the native pool of the set-based write path (`pg`).
    pub(crate) pg: Option<sqlx::PgPool>,
    /// The databases opened (see [`Databases`]).
    databases: Databases,
    /// Whether order changes write change-feed rows.
    pub(crate) feed: Feed,
}

/// One lane per SQLite file held: the order database, then the systems in
/// [`System::ALL`] order.
#[derive(Debug)]
pub(crate) struct Lanes {
    orders: Option<Lane>,
    systems: [Option<Lane>; 4],
}

/// Which database a write goes to (for its gate).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Db {
    Orders,
    System(System),
    /// The groups' receipts (see [`Store::receipts`](Store)).
    Receipts,
}

pub(crate) fn system_index(system: System) -> usize {
    match system {
        System::Credit => 0,
        System::Marketing => 1,
        System::Push => 2,
        System::Warehouse => 3,
    }
}

impl Store {
    /// Opens (creating if needed) every database behind `database_url` and
    /// creates missing tables. `sqlite://data/orders.db` also opens
    /// `data/credit.db`, `data/marketing.db`, `data/push.db`, `data/warehouse.db`
    /// and `data/receipts.db`.
    pub async fn open(database_url: &str, options: &StoreOptions) -> Result<Self, OpenError> {
        sqlx::any::install_default_drivers();
        let backend = backend_of(database_url)?;
        let store = match backend {
            Backend::Sqlite => {
                let own_path = sqlite_path(database_url);
                if let Some(dir) = own_path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|source| OpenError::DataDir {
                        path: dir.to_path_buf(),
                        source,
                    })?;
                }
                let dir = own_path.parent().unwrap_or(Path::new("."));
                let own = connect(backend, &own_path.to_string_lossy(), 4, options).await?;
                let mut systems = Vec::with_capacity(4);
                for system in System::ALL {
                    systems.push(match options.databases {
                        Databases::All => {
                            let path = dir.join(format!("{}.db", system.name()));
                            connect(backend, &path.to_string_lossy(), 3, options).await?
                        }
                        _ => own.clone(),
                    });
                }
                let receipts = match options.databases {
                    Databases::System(_) => own.clone(),
                    _ => {
                        let receipts = dir.join("receipts.db");
                        connect(backend, &receipts.to_string_lossy(), 2, options).await?
                    }
                };
                Store {
                    backend,
                    orders: own,
                    systems: systems.try_into().expect("four systems"),
                    receipts,
                    gates: Arc::default(),
                    lanes: None,
                    pg: None,
                    databases: options.databases,
                    feed: options.feed,
                }
            }
            Backend::Postgres | Backend::Mysql => {
                let pool = connect(backend, database_url, options.max_connections, options).await?;
                let fast = (backend == Backend::Postgres && options.pg_fast_path)
                    .then(|| {
                        pg::connect(
                            database_url,
                            options.max_connections,
                            options.acquire_timeout,
                            options.session,
                        )
                    })
                    .transpose()
                    .map_err(|source| OpenError::Connect {
                        url: redact(database_url),
                        source,
                    })?;
                Store {
                    backend,
                    orders: pool.clone(),
                    receipts: pool.clone(),
                    systems: [pool.clone(), pool.clone(), pool.clone(), pool],
                    gates: Arc::default(),
                    lanes: None,
                    pg: fast,
                    databases: options.databases,
                    feed: options.feed,
                }
            }
        };
        store.migrate(database_url).await?;
        let mut store = store;
        if backend == Backend::Sqlite && options.lanes {
            // After the migrations: the lanes' statements need the tables.
            let own_path = sqlite_path(database_url);
            let dir = own_path.parent().unwrap_or(Path::new("."));
            let lane = |path: &Path, name: &str, on_start: Option<ThreadStart>| {
                Lane::open(path, name, on_start).map_err(|e| OpenError::Lane {
                    path: path.to_path_buf(),
                    source: e.0,
                })
            };
            let mut systems = Vec::with_capacity(4);
            for system in System::ALL {
                let path = match store.databases {
                    Databases::All => dir.join(format!("{}.db", system.name())),
                    Databases::System(own) if own == system => own_path.clone(),
                    _ => {
                        systems.push(None);
                        continue;
                    }
                };
                systems.push(Some(lane(
                    &path,
                    system.name(),
                    options.on_system_lane_start.clone(),
                )?));
            }
            let orders = match store.databases {
                Databases::System(_) => None,
                _ => Some(lane(&own_path, "orders", None)?),
            };
            store.lanes = Some(Arc::new(Lanes {
                orders,
                systems: systems.try_into().expect("four systems"),
            }));
        }
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The databases this store opened.
    pub fn databases(&self) -> Databases {
        self.databases
    }

    /// Whether this store holds `system`'s database: otherwise that
    /// system's progress is known here only by its receipts.
    pub fn holds(&self, system: System) -> bool {
        match self.databases {
            Databases::All => true,
            Databases::Orders => false,
            Databases::System(own) => own == system,
        }
    }

    /// Whether this store holds the order database (and the receipts).
    pub fn holds_orders(&self) -> bool {
        !matches!(self.databases, Databases::System(_))
    }

    pub(crate) fn system_pool(&self, system: System) -> &AnyPool {
        &self.systems[system_index(system)]
    }

    /// Begins a write transaction on `db` behind its gate (see [`GatedTx`]):
    /// the only way this crate starts a write through sqlx.
    pub(crate) async fn begin_write(&self, db: Db) -> Result<GatedTx<'_>, sqlx::Error> {
        let gate = self.gate(db).await;
        let pool = match db {
            Db::Orders => &self.orders,
            Db::System(system) => self.system_pool(system),
            Db::Receipts => &self.receipts,
        };
        let tx = pool.begin().await?;
        Ok(GatedTx { tx, _gate: gate })
    }

    /// Runs `job` on `db`'s SQLite lane behind the same gate as
    /// [`Store::begin_write`]; `None` without lanes (PostgreSQL, or
    /// `StoreOptions::lanes` off). Says how long the job waited for the
    /// gate and then in the lane's queue.
    pub(crate) async fn run_on_lane<T: Send + 'static>(
        &self,
        db: Db,
        job: impl FnOnce(&mut rusqlite::Connection) -> T + Send + 'static,
    ) -> Option<Result<(T, LaneWait), StorageError>> {
        let lanes = self.lanes.as_ref()?;
        let lane = match db {
            Db::Orders => lanes.orders.as_ref()?,
            Db::System(system) => lanes.systems[system_index(system)].as_ref()?,
            // Receipts are written through sqlx only.
            Db::Receipts => return None,
        };
        let asked = Instant::now();
        let _gate = self.gate(db).await;
        let gate = asked.elapsed();
        Some(
            lane.run(job)
                .await
                .map(|(answer, queue)| (answer, LaneWait { gate, queue })),
        )
    }

    /// The database server's durability settings as this store's sessions
    /// see them, judged (see [`Durability`]); `None` on SQLite, whose
    /// commits are always `synchronous = FULL`.
    ///
    /// # Errors
    ///
    /// The server could not be asked.
    pub async fn durability(&self) -> Result<Option<Durability>, StorageError> {
        let read = match self.backend {
            Backend::Sqlite => return Ok(None),
            Backend::Postgres => pg::durability(&self.orders).await,
            Backend::Mysql => mysql_session::durability(&self.orders).await,
        };
        read.map(Some).map_err(crate::fail::storage)
    }

    /// The time limits the server applies to this store's sessions, as a
    /// session reports them (`None` on SQLite).
    ///
    /// # Errors
    ///
    /// The server could not be asked.
    pub async fn session_settings(&self) -> Result<Option<SessionSettings>, StorageError> {
        let read = match self.backend {
            Backend::Sqlite => return Ok(None),
            Backend::Postgres => pg::session(&self.orders).await,
            Backend::Mysql => mysql_session::session(&self.orders).await,
        };
        read.map(Some).map_err(crate::fail::storage)
    }

    /// Whether this store runs the hot paths on SQLite lanes.
    pub(crate) fn has_lanes(&self) -> bool {
        self.lanes.is_some()
    }

    /// Taken around every write to a SQLite file, so this process's writers
    /// queue here, in order, instead of in SQLite. SQLite has one writer at a
    /// time, and a connection that finds the file locked waits in its busy
    /// handler, which *sleeps* 1, 2, 5, 10, 15, 20, 25 … 100 ms between
    /// tries: a payment batch that met the relay's commit waited 25–90 ms
    /// with the disk idle (measured with `ordermq bench capacity`). Here the
    /// next writer starts the moment the previous one commits. Other
    /// processes (`ordermq dlq replay`) still meet the busy handler, rarely.
    /// PostgreSQL and MySQL lock rows, not the database: no gate.
    async fn gate(&self, db: Db) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        if self.backend != Backend::Sqlite {
            return None;
        }
        let index = match db {
            Db::Orders => 0,
            Db::System(system) => 1 + system_index(system),
            Db::Receipts => 5,
        };
        Some(self.gates[index].lock().await)
    }

    /// Moves committed pages from each SQLite write-ahead log into its database
    /// file without blocking writers (`PASSIVE`). Call it periodically (the app
    /// does, every second); a no-op on PostgreSQL. Returns what each file's
    /// checkpoint did, so a slow one can be told apart from a slow commit.
    pub async fn checkpoint(&self) -> Result<Vec<Checkpoint>, sqlx::Error> {
        if self.backend != Backend::Sqlite {
            return Ok(Vec::new());
        }
        let names = std::iter::once("orders")
            .chain(System::ALL.map(|s| s.consumer_group()))
            .chain(std::iter::once("receipts"));
        let pools = std::iter::once(&self.orders)
            .chain(&self.systems)
            .chain(std::iter::once(&self.receipts));
        let held = std::iter::once(self.holds_orders())
            .chain(System::ALL.map(|s| self.holds(s)))
            .chain(std::iter::once(self.holds_orders()));
        let mut done = Vec::with_capacity(6);
        for ((database, pool), _) in names.zip(pools).zip(held).filter(|(_, held)| *held) {
            let begun = std::time::Instant::now();
            let row = dialect::query("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(pool)
                .await?;
            // (busy, frames in the log, frames checkpointed)
            let frames: i64 = row.try_get(1)?;
            let copied: i64 = row.try_get(2)?;
            done.push(Checkpoint {
                database,
                wal_frames: frames,
                copied_frames: copied,
                took: begun.elapsed(),
            });
        }
        Ok(done)
    }

    /// Closes every pool, waiting for in-flight queries.
    pub async fn close(&self) {
        self.orders.close().await;
        for pool in &self.systems {
            pool.close().await;
        }
        self.receipts.close().await;
    }
}

pub(crate) fn backend_of(url: &str) -> Result<Backend, OpenError> {
    if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
        Ok(Backend::Mysql)
    } else {
        Err(OpenError::UnsupportedUrl(redact(url)))
    }
}

/// The file path of a `sqlite:` URL, without its query string.
pub(crate) fn sqlite_path(url: &str) -> PathBuf {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let path = rest.split('?').next().unwrap_or(rest);
    PathBuf::from(path)
}

/// A URL safe to print: the password, if any, replaced by `***`.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// The pools' page cache, per connection. The lanes do the writing and keep
/// SQLite's default (2 MiB); the pools (up to 16 connections) serve lookups
/// and scans beside them, and with the default each filled its cache on the
/// first large scan: a heap profile of `bench capacity` counted 27 MiB in
/// pool connections' caches after one end-to-end query, pages the OS caches
/// anyway. A read that misses costs a `pread` from that cache instead.
const POOL_CACHE: &str = "PRAGMA cache_size = -512;";

/// Whether an SQLite connection coming back to its pool may be used again.
///
/// SQLite rolls a transaction back by itself on some errors (`SQLITE_FULL`,
/// `SQLITE_IOERR`, `SQLITE_NOMEM`, `SQLITE_BUSY`); sqlx's `ROLLBACK` then
/// fails ("no transaction is active") and its count of open transactions
/// stays one too high. The connection's next transaction is then a
/// `SAVEPOINT`, and rolling that back (`ROLLBACK TO`) leaves it open: the
/// connection goes back to the pool holding the database's write lock, and
/// every other writer is answered "database is locked" until the process
/// restarts. Found by the chaos suite's `disk-full` scenario. Such a
/// connection still counts a transaction once its queued rollback has run
/// (the ping waits for it): it is closed (which rolls back what is open)
/// and the pool opens a fresh one.
async fn keeps_sqlite_connection(conn: &mut sqlx::AnyConnection) -> Result<bool, sqlx::Error> {
    use sqlx::Connection;
    conn.ping().await?;
    if conn.is_in_transaction() {
        tracing::warn!(
            "an SQLite connection came back still counting a transaction (SQLite rolled it \
             back after an error: disk full, I/O error); closed, a fresh one replaces it"
        );
        return Ok(false);
    }
    Ok(true)
}

pub(crate) async fn connect(
    backend: Backend,
    target: &str,
    max_connections: u32,
    options: &StoreOptions,
) -> Result<AnyPool, OpenError> {
    let url = match backend {
        Backend::Sqlite => format!("sqlite://{target}?mode=rwc"),
        Backend::Postgres => target.to_owned(),
        // sqlx's Any driver knows MySQL by the `mysql` scheme only.
        Backend::Mysql => target.replacen("mariadb://", "mysql://", 1),
    };
    let connect_options =
        AnyConnectOptions::from_str(&url).map_err(|source| OpenError::Connect {
            url: redact(&url),
            source,
        })?;
    let limits = options.session;
    let set_postgres = Arc::new(pg::statements(&limits));
    AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(options.acquire_timeout)
        .after_connect(move |conn, _meta| {
            let set_postgres = set_postgres.clone();
            Box::pin(async move {
                match backend {
                    Backend::Sqlite => {
                        conn.execute(sql::SQLITE_SETTINGS).await?;
                        conn.execute(POOL_CACHE).await?;
                    }
                    Backend::Postgres => {
                        conn.execute(set_postgres.as_str()).await?;
                    }
                    Backend::Mysql => mysql_session::configure(conn, &limits).await?,
                }
                Ok(())
            })
        })
        .after_release(move |conn, _meta| {
            Box::pin(async move {
                if backend != Backend::Sqlite {
                    return Ok(true);
                }
                keeps_sqlite_connection(conn).await
            })
        })
        .connect_with(connect_options)
        .await
        .map_err(|source| OpenError::Connect {
            url: redact(&url),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_only_the_password() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/orders"),
            "postgres://app:***@db:5432/orders"
        );
        assert_eq!(redact("sqlite://data/orders.db"), "sqlite://data/orders.db");
        assert_eq!(
            redact("postgres://app@db/orders"),
            "postgres://app@db/orders"
        );
    }

    #[test]
    fn parses_sqlite_paths_and_rejects_unknown_schemes() {
        assert_eq!(
            sqlite_path("sqlite://data/orders.db?mode=rwc"),
            PathBuf::from("data/orders.db")
        );
        assert_eq!(
            sqlite_path("sqlite:///tmp/x.db"),
            PathBuf::from("/tmp/x.db")
        );
        assert!(matches!(
            backend_of("mssql://x"),
            Err(OpenError::UnsupportedUrl(_))
        ));
        assert_eq!(backend_of("mysql://x/y").unwrap(), Backend::Mysql);
        assert_eq!(backend_of("postgresql://x/y").unwrap(), Backend::Postgres);
    }
}
