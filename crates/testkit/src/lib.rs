//! Helpers for ordermq's own tests, benchmark and fault suite; never shipped
//! (`publish = false`, and no server crate depends on it).
//!
//! Everything a test needs to start ordermq the way it runs in production —
//! real store, real embedded RocketMQ broker, real HTTP — in a few lines, so
//! test files say what they check rather than how to set it up.
//!
//! # Layout
//! - [`local_app`]: a whole ordermq in-process on a temporary directory and
//!   ports chosen by the OS ([`LocalApp`]), with signed-request helpers and
//!   requests with the shop's or the operator's token.
//! - [`helpers`]: `spawn_app`, fast fake third parties, the shipped limits,
//!   JSON requests.
//! - [`router`]: the HTTP router on the real order service and a SQLite
//!   store, driven with `oneshot` ([`RouterHarness`]); the test tokens.
//! - [`bad_request`]: the seeded bad-request generator, shared by the router's
//!   property test and the fault suite's live `bad-input` scenario; its
//!   cases one endpoint family to a file (`orders`, `notify` for the signed
//!   callbacks, `routes`, `refunds`) and the bad values they draw from in
//!   `values`.
//! - [`postgres`]: a PostgreSQL server of a run's own (durable settings,
//!   stopped and killed on demand) and databases created and dropped on
//!   any server: for the benchmark and the fault suite.
//! - [`databases`]: a database of a test's or a trial's own on a
//!   PostgreSQL or MySQL/MariaDB server, by the server URL's scheme.
//! - [`events`]: another producer on ordermq's broker, and the `OrderPaid` a
//!   forger copies: for the forged-event test and the `security` scenario.

pub mod bad_request;
pub mod databases;
pub mod events;
pub mod helpers;
pub mod local_app;
pub mod postgres;
pub mod router;

pub use helpers::{create_order, default_limits, fast_third_parties, get_json, spawn_app};
pub use local_app::{LocalApp, LocalAppError, local_config};
pub use router::{OPERATOR_TOKEN, RouterHarness, SHOP_TOKEN, bearer};
