//! The data team's analytics database, fed by `ordermq feed sink`: a
//! denormalized `orders` table (each order as its last applied event says),
//! the `order_events` history, and `parked_events`.
//!
//! Why its own database and handle: it is the data team's, not the order
//! service's — a SQLite file by default, PostgreSQL as an option — and the
//! order database never serves their reports. It is written only through
//! [`FeedSink::apply`], which follows the domain's rule
//! (`FeedEvent::admit`): an event already applied is skipped (by its
//! `order_seq`, and its id is the history's primary key), the next one is
//! applied, and one whose predecessor has not arrived is *parked* for its
//! order only — the batch, and every other order, go on. When the missing
//! event arrives, the parked ones of its order that now follow are applied
//! in the same transaction. Each order is applied under a lock of its own
//! (PostgreSQL: an advisory lock by order id; SQLite: one connection), so
//! an event and its successor handled concurrently can never both miss each
//! other.
//!
//! A snapshot event (`ordermq feed snapshot`) carries an order's whole
//! state at its `order_seq`: it is applied over any older state and
//! skipped over a newer one, so the changes it jumps over are never applied
//! (they are duplicates of it) and parked ones it covers are dropped. The
//! history then has a hole right before the snapshot, which is not a gap:
//! [`FeedSink::gaps`] counts a hole only where the event after it is a
//! change.
//!
//! Handle module: it imports only the base and `store`'s connection helpers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use ordermq_domain::feed::{FeedChange, FeedEvent, FeedLine, OrderState};
use ordermq_domain::parked::ParkedMessage;
use ordermq_domain::ports::{BoxFuture, ParkingLot, StorageError};
use sqlx::{AnyConnection, AnyPool, Row};

use crate::dialect;
use crate::fail::{get, storage};
use crate::sql::Backend;
use crate::store::{OpenError, StoreOptions, backend_of, connect, redact, sqlite_path};

mod apply;

use apply::{IN_LIST, Plan, applied_seqs, parked_of};

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS orders (
        order_id VARCHAR(64) PRIMARY KEY,
        user_id VARCHAR(64) NOT NULL,
        status VARCHAR(16) NOT NULL,
        amount BIGINT NOT NULL,
        payment_id VARCHAR(64),
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        order_seq BIGINT NOT NULL,
        line_count BIGINT NOT NULL,
        units BIGINT NOT NULL,
        refunded_units BIGINT NOT NULL,
        lines TEXT NOT NULL,
        last_event_id VARCHAR(160) NOT NULL,
        last_change VARCHAR(32) NOT NULL,
        applied_at BIGINT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS orders_by_status ON orders (status)",
    "CREATE INDEX IF NOT EXISTS orders_by_user ON orders (user_id)",
    "CREATE TABLE IF NOT EXISTS order_events (
        event_id VARCHAR(160) PRIMARY KEY,
        order_id VARCHAR(64) NOT NULL,
        order_seq BIGINT NOT NULL,
        type VARCHAR(64) NOT NULL,
        time VARCHAR(40) NOT NULL,
        body TEXT NOT NULL,
        applied_at BIGINT NOT NULL,
        UNIQUE (order_id, order_seq)
    )",
    "CREATE TABLE IF NOT EXISTS parked_events (
        event_id VARCHAR(160) PRIMARY KEY,
        order_id VARCHAR(64) NOT NULL,
        order_seq BIGINT NOT NULL,
        waiting_for BIGINT NOT NULL,
        body TEXT NOT NULL,
        parked_at BIGINT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS parked_by_order ON parked_events (order_id, order_seq)",
    // Messages that failed the signature check: never applied.
    "CREATE TABLE IF NOT EXISTS unverified_messages (
        msg_id VARCHAR(200) PRIMARY KEY,
        msg_key VARCHAR(200) NOT NULL,
        event_id VARCHAR(200),
        reason VARCHAR(64) NOT NULL,
        detail TEXT NOT NULL,
        body TEXT NOT NULL,
        parked_at BIGINT NOT NULL
    )",
];

/// The analytics database.
#[derive(Debug, Clone)]
pub struct FeedSink {
    pool: AnyPool,
    backend: Backend,
    /// The latest `applied_at` this handle stamped: a batch is stamped no
    /// earlier (see [`FeedSink::apply`]).
    last_stamp: Arc<AtomicI64>,
}

/// What one [`FeedSink::apply`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkReport {
    /// Events applied as they came.
    pub applied: u64,
    /// Parked events applied because their predecessor came.
    pub unparked: u64,
    /// Redeliveries skipped.
    pub duplicates: u64,
    /// Events parked until their predecessor comes.
    pub parked: u64,
}

/// An event waiting for its predecessor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedEvent {
    pub event_id: String,
    pub order_id: String,
    pub order_seq: i64,
    /// The `order_seq` the sink holds for the order is one less than this.
    pub waiting_for: i64,
    pub parked_at: i64,
}

/// An order whose history is not 1, 2, 3 … without a hole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqGap {
    pub order_id: String,
    /// Events in the history.
    pub events: i64,
    pub first: i64,
    pub last: i64,
}

impl FeedSink {
    /// Opens (creating if needed) the analytics database: `sqlite://PATH`
    /// or `postgres://…`.
    pub async fn open(url: &str) -> Result<Self, OpenError> {
        sqlx::any::install_default_drivers();
        let backend = backend_of(url)?;
        let options = StoreOptions::default();
        let pool = match backend {
            Backend::Sqlite => {
                let path = sqlite_path(url);
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|source| OpenError::DataDir {
                        path: dir.to_path_buf(),
                        source,
                    })?;
                }
                // One connection: SQLite has one writer, and it serializes
                // the orders' applications (see the module's doc).
                connect(backend, &path.to_string_lossy(), 1, &options).await?
            }
            Backend::Postgres => connect(backend, url, 8, &options).await?,
            Backend::Mysql => return Err(OpenError::UnsupportedUrl(redact(url))),
        };
        for ddl in SCHEMA {
            dialect::query(ddl)
                .execute(&pool)
                .await
                .map_err(|source| OpenError::Migrate {
                    url: redact(url),
                    source,
                })?;
        }
        Ok(Self {
            pool,
            backend,
            last_stamp: Arc::new(AtomicI64::new(0)),
        })
    }

    /// Applies `events` in one transaction (see the module's doc), stamped
    /// `applied_at` = `now`, or the last stamp of this handle if that is
    /// later (so the stamps follow the order of application).
    ///
    /// Set-based: whatever the batch's size, the transaction reads the
    /// orders' applied `order_seq`s and their parked events in one
    /// statement each, decides every event's fate in memory
    /// ([`FeedEvent::admit`], as the events and the parked ones of each
    /// order follow each other), and writes the history, the orders' rows
    /// and any parking in a few multi-row statements. (One statement per
    /// event, six of them, held the sink to about 4,000 events/s on SQLite.)
    ///
    /// # Errors
    ///
    /// The database failed: nothing of the batch was written (the broker
    /// redelivers it).
    pub async fn apply(&self, events: &[FeedEvent], now: i64) -> Result<SinkReport, StorageError> {
        let mut by_order: BTreeMap<&str, Vec<&FeedEvent>> = BTreeMap::new();
        for event in events {
            by_order.entry(&event.subject).or_default().push(event);
        }
        if by_order.is_empty() {
            return Ok(SinkReport::default());
        }
        let orders: Vec<&str> = by_order.keys().copied().collect();
        let mut tx = self.pool.begin().await.map_err(storage)?;
        self.lock_orders(&mut tx, &orders).await?;
        // `now` was read before this batch waited for its connection and
        // its orders' locks, so a batch that waited longer than the one
        // after it would carry the earlier time: an order's event 2 could
        // look applied before its event 1 (`reorderings`). Stamped under
        // the locks, never before the last stamp, `applied_at` follows the
        // order of application.
        let now = self.last_stamp.fetch_max(now, Ordering::SeqCst).max(now);
        let applied = applied_seqs(&mut tx, &orders).await?;
        let mut parked = parked_of(&mut tx, &orders).await?;
        let mut report = SinkReport::default();
        let mut plan = Plan::default();
        for (order_id, mut events) in by_order {
            events.sort_by_key(|e| e.data.order_seq);
            let seq = applied.get(order_id).copied().unwrap_or(0);
            let waiting = parked.remove(order_id).unwrap_or_default();
            plan.order(order_id, seq, events, waiting, &mut report);
        }
        plan.write(&mut tx, now).await?;
        tx.commit().await.map_err(storage)?;
        Ok(report)
    }

    /// PostgreSQL: each order's lock to the end of the transaction, taken
    /// in one order (by the lock's key) so two sinks never wait for each
    /// other's.
    async fn lock_orders(
        &self,
        tx: &mut AnyConnection,
        orders: &[&str],
    ) -> Result<(), StorageError> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        for chunk in orders.chunks(IN_LIST) {
            let values = (1..=chunk.len())
                .map(|i| format!("(CAST(${i} AS TEXT))"))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "SELECT COUNT(*) AS n FROM (SELECT pg_advisory_xact_lock(k) FROM \
                 (SELECT DISTINCT hashtext(o) AS k FROM (VALUES {values}) AS v (o) ORDER BY k) \
                 AS keys) AS locks"
            );
            let mut query = dialect::query(&sql);
            for order in chunk {
                query = query.bind(*order);
            }
            query.execute(&mut *tx).await.map_err(storage)?;
        }
        Ok(())
    }

    /// Parked events, oldest first.
    ///
    /// # Errors
    ///
    /// The database could not be read.
    pub async fn parked(&self, limit: i64) -> Result<Vec<ParkedEvent>, StorageError> {
        dialect::query(
            "SELECT event_id, order_id, order_seq, waiting_for, parked_at FROM parked_events \
             ORDER BY parked_at, order_id, order_seq LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(storage)?
        .iter()
        .map(|r| {
            Ok(ParkedEvent {
                event_id: get(r, "event_id")?,
                order_id: get(r, "order_id")?,
                order_seq: r.try_get("order_seq").map_err(storage)?,
                waiting_for: r.try_get("waiting_for").map_err(storage)?,
                parked_at: r.try_get("parked_at").map_err(storage)?,
            })
        })
        .collect()
    }

    /// Tries every parked event again, by order: those whose predecessor is
    /// now applied are applied (with whatever follows them); the others stay.
    ///
    /// # Errors
    ///
    /// The database failed; what was applied before stays applied.
    pub async fn replay_parked(&self, now: i64) -> Result<SinkReport, StorageError> {
        let bodies: Vec<String> =
            dialect::query("SELECT body FROM parked_events ORDER BY order_id, order_seq")
                .fetch_all(&self.pool)
                .await
                .map_err(storage)?
                .iter()
                .map(|r| get(r, "body"))
                .collect::<Result<_, _>>()?;
        let events = bodies
            .iter()
            .map(|b| FeedEvent::from_json(b.as_bytes()).map_err(StorageError::corrupt))
            .collect::<Result<Vec<_>, _>>()?;
        let mut total = SinkReport::default();
        for chunk in events.chunks(500) {
            let report = self.apply(chunk, now).await?;
            // A parked event seen again is "parked" again (it stays): count
            // only what moved.
            total.applied += report.applied + report.unparked;
            total.duplicates += report.duplicates;
        }
        total.parked = self.parked(i64::MAX).await?.len() as u64;
        Ok(total)
    }

    /// A page of the sink's orders after `after`, by order id, with their
    /// `order_seq` (as [`crate::Store::feed_states`] reads the order database).
    ///
    /// # Errors
    ///
    /// The database could not be read, or a row does not decode.
    pub async fn states(
        &self,
        after: &str,
        limit: i64,
    ) -> Result<Vec<(OrderState, i64)>, StorageError> {
        dialect::query(
            "SELECT order_id, user_id, status, amount, payment_id, created_at, updated_at, \
             order_seq, lines FROM orders WHERE order_id > $1 ORDER BY order_id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(storage)?
        .iter()
        .map(|r| {
            let lines: String = get(r, "lines")?;
            let lines = FeedLine::list_from_json(&lines).map_err(StorageError::corrupt)?;
            let state = OrderState {
                order_id: get(r, "order_id")?,
                user_id: get(r, "user_id")?,
                status: get(r, "status")?,
                amount: r.try_get("amount").map_err(storage)?,
                payment_id: get(r, "payment_id")?,
                created_at: r.try_get("created_at").map_err(storage)?,
                updated_at: r.try_get("updated_at").map_err(storage)?,
                lines,
            };
            Ok((state, r.try_get("order_seq").map_err(storage)?))
        })
        .collect()
    }

    /// Orders whose history has a hole before a change (a change `n > 1`
    /// without `n - 1`; a hole before a snapshot is what the snapshot
    /// covers), or whose `orders` row is not at its history's last event.
    ///
    /// # Errors
    ///
    /// The database could not be read.
    pub async fn gaps(&self) -> Result<Vec<SeqGap>, StorageError> {
        dialect::query(
            "SELECT e.order_id, COUNT(*) AS n, MIN(e.order_seq) AS lo, MAX(e.order_seq) AS hi \
             FROM order_events e \
             LEFT JOIN order_events p ON p.order_id = e.order_id AND p.order_seq = e.order_seq - 1 \
             LEFT JOIN orders o ON o.order_id = e.order_id \
             GROUP BY e.order_id, o.order_seq \
             HAVING SUM(CASE WHEN p.event_id IS NULL AND e.order_seq > 1 AND e.type <> $1 \
                        THEN 1 ELSE 0 END) > 0 \
                OR o.order_seq IS NULL OR o.order_seq <> MAX(e.order_seq) \
             ORDER BY e.order_id",
        )
        .bind(FeedChange::Snapshot.event_type())
        .fetch_all(&self.pool)
        .await
        .map_err(storage)?
        .iter()
        .map(|r| {
            Ok(SeqGap {
                order_id: get(r, "order_id")?,
                events: r.try_get("n").map_err(storage)?,
                first: r.try_get("lo").map_err(storage)?,
                last: r.try_get("hi").map_err(storage)?,
            })
        })
        .collect()
    }

    /// Events applied before their predecessor (by `applied_at`): each as
    /// `(order id, order_seq)`. The sink never does this; the check is how
    /// `feed verify` would see a sink that did.
    ///
    /// # Errors
    ///
    /// The database could not be read.
    pub async fn reorderings(&self) -> Result<Vec<(String, i64)>, StorageError> {
        dialect::query(
            "SELECT e.order_id, e.order_seq FROM order_events e \
             JOIN order_events p ON p.order_id = e.order_id AND p.order_seq = e.order_seq - 1 \
             WHERE p.applied_at > e.applied_at ORDER BY e.order_id, e.order_seq",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(storage)?
        .iter()
        .map(|r| {
            Ok((
                get(r, "order_id")?,
                r.try_get("order_seq").map_err(storage)?,
            ))
        })
        .collect()
    }

    /// The history's size and when its last event was applied (epoch ms;
    /// 0 if empty): what a replay that changes nothing leaves as it was.
    ///
    /// # Errors
    ///
    /// The database could not be read.
    pub async fn history(&self) -> Result<(i64, i64), StorageError> {
        let row = dialect::query(
            "SELECT COUNT(*) AS n, COALESCE(MAX(applied_at), 0) AS last FROM order_events",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(storage)?;
        Ok((
            row.try_get("n").map_err(storage)?,
            row.try_get("last").map_err(storage)?,
        ))
    }

    /// Events of `event_type` applied at or after `since` (epoch ms): each
    /// one's id, `time` (the change's, as the event says it) and
    /// `applied_at`. What the benchmark's feed lag is computed from.
    ///
    /// # Errors
    ///
    /// The database could not be read.
    pub async fn applied_times(
        &self,
        event_type: &str,
        since: i64,
    ) -> Result<Vec<(String, String, i64)>, StorageError> {
        dialect::query(
            "SELECT event_id, time, applied_at FROM order_events \
             WHERE type = $1 AND applied_at >= $2",
        )
        .bind(event_type)
        .bind(since)
        .fetch_all(&self.pool)
        .await
        .map_err(storage)?
        .iter()
        .map(|r| Ok((get(r, "event_id")?, get(r, "time")?, get(r, "applied_at")?)))
        .collect()
    }

    /// How many events were applied at or after `since` (epoch ms), and
    /// the first and last `applied_at` among them (0 when none): the
    /// span over which the sink applied them.
    ///
    /// # Errors
    ///
    /// The database could not be read.
    pub async fn applied_span(&self, since: i64) -> Result<(i64, i64, i64), StorageError> {
        let row = dialect::query(
            "SELECT COUNT(*) AS n, COALESCE(MIN(applied_at), 0) AS first, \
             COALESCE(MAX(applied_at), 0) AS last FROM order_events WHERE applied_at >= $1",
        )
        .bind(since)
        .fetch_one(&self.pool)
        .await
        .map_err(storage)?;
        Ok((get(&row, "n")?, get(&row, "first")?, get(&row, "last")?))
    }

    /// Runs `sql` on the analytics database (tests, and an operator's
    /// repair). Returns the rows it changed.
    ///
    /// # Errors
    ///
    /// The statement failed.
    pub async fn execute(&self, sql: &str) -> Result<u64, StorageError> {
        Ok(dialect::query(sql)
            .execute(&self.pool)
            .await
            .map_err(storage)?
            .rows_affected())
    }
}

impl ParkingLot for FeedSink {
    fn park(&self, message: ParkedMessage) -> BoxFuture<'_, Result<bool, StorageError>> {
        Box::pin(async move {
            let inserted = dialect::query(
                "INSERT INTO unverified_messages (msg_id, msg_key, event_id, reason, detail, body, parked_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (msg_id) DO NOTHING",
            )
            .bind(message.msg_id.as_str())
            .bind(message.key.as_str())
            .bind(message.event_id.as_deref())
            .bind(message.reason.as_str())
            .bind(message.detail.as_str())
            .bind(message.body.as_str())
            .bind(message.parked_at)
            .execute(&self.pool)
            .await
            .map_err(storage)?
            .rows_affected();
            Ok(inserted == 1)
        })
    }
}
