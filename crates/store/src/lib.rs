//! The only code in ordermq that speaks SQL.
//!
//! One [`Store`] holds a connection pool for the order database and one for
//! each downstream system (credit, marketing, push, warehouse). On SQLite
//! each system gets its own file next to the order database, as separate
//! services would have their own databases; on PostgreSQL and MySQL/MariaDB
//! all of them share one database with distinct tables.
//!
//! Rules every query here follows:
//! - a status change is one guarded `UPDATE ... WHERE status = <expected>`,
//!   never a read followed by a write, and only a move
//!   `OrderStatus::can_become` allows, even inside a savepoint;
//! - a write transaction starts with its write, so SQLite takes the write lock
//!   up front (waiting on `busy_timeout`) instead of failing on upgrade;
//! - a write goes through the store's gate: a `store::GatedTx` from
//!   `Store::begin_write`, or `Store::run_on_lane`; nothing else can begin one;
//! - a statement both drivers run (the SQLite lane's rusqlite and sqlx) is
//!   one `const` in `sql`;
//! - every time is epoch milliseconds and every amount is minor units, as BIGINT;
//! - a driver error becomes a `StorageError` of a kind (unavailable,
//!   conflict, corrupt) with the driver's error as its source (`fail`).
//!
//! # Layout
//!
//! Imports point one way, down this list: a module imports only from the
//! groups above its own, never from its own group (bar a parent's types in
//! its children), so the crate reads top to bottom without a circle.
//!
//! 1. **Base** (imports nothing from the crate): `sql` (the shared
//!    statements, placeholder helpers, [`Backend`], the relay's round and
//!    the reader of its claimed rows), `dialect` (the query every general
//!    statement goes through; MySQL's rewrite of the shared form), `fail`
//!    (driver errors classified into `StorageError`; `LaneError`), `server`
//!    (what is asked of and read from a database server, in one form for
//!    both: [`SessionSettings`], [`Durability`]), `commit` (a commit whose
//!    answer was lost: asking PostgreSQL what became of it).
//! 2. **Leaves** (import only the base): `schema` (the tables),
//!    `history` (`record_history`), `feed` (the change feed's rows on
//!    the general path), `outbox` (the outbox's statements
//!    on a connection), `effects` (the effect types and their split into
//!    new rows and changes), `lane` (the SQLite lane's thread), `locks`
//!    (the products a batch locks first, in SKU order), `pg`
//!    (PostgreSQL's own path: its pool and session settings, a batch of
//!    payments as one set-based statement, the relay's round; its
//!    durability read and judged), `mysql` (MySQL's forms of what its
//!    dialect cannot rewrite: no `RETURNING`, joins for `UPDATE … FROM`, a
//!    row lock per user), `mysql_session` (MySQL's session settings and
//!    time limits; the server's durability read and judged), `sale_units` (a flash sale's units going back to the
//!    sale: shared by `close` and `flash`).
//! 3. **Handle and shared steps**: `store` (`Store`, options, opening,
//!    migrations, the write gate as the `GatedTx` type), `sink` (the data
//!    team's analytics database fed by the change feed: its own handle,
//!    `FeedSink`), `refund_rows` (a
//!    refund's row and event, a payment owed back: shared by `pay` and
//!    `refunds`).
//! 4. **Operations** (each an `impl Store` block and `*_in` steps on a
//!    connection): `catalog`, `orders` (create, within the
//!    per-user limits), `pay` (one by one and
//!    set-based), `close`, `refunds`, `carrier`, `relay` (and parking rows
//!    that fail every attempt; the systems' receipts too), `parked`
//!    (messages that failed verification; the `ParkingLot` port), `flash`
//!    (sales, leases of their units, admitted attempts with their message),
//!    `reconcile` (the groups' receipts, unsettled sent rows, settling and
//!    putting them back),
//!    `effects::write`, `effects::read`, `audit`, and on the lane's
//!    rusqlite connection `lane::pay`, `lane::flash`, `lane::relay`,
//!    `lane::effects`.
//! 5. **Dispatchers** (nothing imports them): `batch` (group commit:
//!    `WriteOp`, `write_batch`, the relay's round, `apply_effects`, each
//!    choosing the lane or the general path; a flash-sale order made of
//!    `orders` and `flash` steps), `lane::batch` (the lane's
//!    batch: payments, admissions, the relay's rounds), `views` (the order page and the counters, which read
//!    across operations).

mod audit;
mod batch;
mod carrier;
mod catalog;
mod close;
mod commit;
mod dialect;
mod effects;
mod fail;
mod feed;
mod flash;
mod history;
mod lane;
mod locks;
mod mysql;
mod mysql_session;
mod orders;
mod outbox;
mod parked;
mod pay;
mod pg;
mod reconcile;
mod refund_rows;
mod refunds;
mod relay;
mod sale_units;
mod schema;
mod server;
mod sink;
mod sql;
mod store;
mod views;

pub use audit::{
    AuditCarrier, AuditOrder, AuditPayment, AuditRefund, AuditReversals, AuditStock, FailureRecord,
    SystemAudit,
};
pub use batch::{WriteOp, WriteResult};
pub use catalog::DemoProduct;
pub use close::{CLOSE_EARLY_TOLERANCE_MS, CloseOutcome};
pub use effects::{Applied, EffectRecord};
pub use flash::{Admitted, AttemptWrite, ENDED_SALES_LISTED_MS, Leased, SaleCounts};
pub use lane::ThreadStart;
pub use reconcile::{Receipt, SentRow, Unsettled};
pub use refunds::RefundTask;
pub use relay::{Outbox, OutboxRetry, ParkedOutboxRow};
pub use server::{Durability, SessionSettings};
pub use sink::{FeedSink, ParkedEvent, SeqGap, SinkReport};
pub use sql::{Backend, Feed};
pub use store::{Checkpoint, Databases, OpenError, Store, StoreOptions, redact};
