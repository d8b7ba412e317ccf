//! The store's integration tests, one binary: every test runs once per
//! backend (SQLite, then PostgreSQL when `ORDERMQ_TEST_POSTGRES_URL` is set
//! and MariaDB when `ORDERMQ_TEST_MYSQL_URL` is).
//!
//! - `rules`: each rule of the store, checked on its own.
//! - `limits`: the per-user limits on unpaid orders, concurrent creates included.
//! - `parked`: messages that failed verification, once per group, clipped to fit.
//! - `differential`: one sequence of operations through the SQLite lane,
//!   general SQLite, PostgreSQL and MariaDB; every answer and every row compared.
//! - `helpers`: fresh stores and the domain values tests build.

mod differential;
mod helpers;
mod limits;
mod parked;
mod rules;
