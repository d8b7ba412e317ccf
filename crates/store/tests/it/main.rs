//! The store's integration tests, one binary: every test runs once per
//! backend (SQLite, then PostgreSQL when `ORDERMQ_TEST_POSTGRES_URL` is set
//! and MariaDB when `ORDERMQ_TEST_MYSQL_URL` is).
//!
//! - `rules`: each rule of the store, checked on its own.
//! - `limits`: the per-user limits on unpaid orders, concurrent creates included.
//! - `parked`: messages that failed verification, once per group, clipped to fit.
//! - `flash`: flash sales: units out of stock, leases that never oversell,
//!   admitted attempts with their message, units back to the sale.
//! - `receipts`: receipts written with effects and queued again, recorded
//!   once; the reconciler's reads and writes of unsettled sent rows.
//! - `differential`: one sequence of operations through the SQLite lane,
//!   general SQLite, PostgreSQL's set-based path and its general path, and
//!   MariaDB; every answer and every row compared.
//! - `feed`: the change feed's rows on every write path, numbered per
//!   order, claimed per order in order across relays; none when off.
//! - `batches`: concurrent group-commit batches on a hot SKU, and a batch
//!   of good and bad payments against paying them one by one.
//! - `deadlocks`: a batch that loses a deadlock anyway runs again.
//! - `server`: the time limits set on every PostgreSQL and MariaDB session,
//!   the durability settings read from the server and judged.
//! - `helpers`: fresh stores and the domain values tests build.

mod batches;
mod deadlocks;
mod differential;
mod feed;
mod flash;
mod helpers;
mod limits;
mod lost_commit;
mod parked;
mod receipts;
mod rules;
mod server;
