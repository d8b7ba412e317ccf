//! ordermq's integration tests: one test binary, one module per area.
//!
//! - [`api`] and [`bad_input`]: the HTTP contract through the router on the
//!   real order service and a SQLite store (no broker).
//! - [`cluster`]: ordermq on two NameServers and two brokers, each a
//!   process of the built binary; one broker `kill -9`ed under load and
//!   brought back: nothing lost, its backlog consumed.
//! - [`docs`]: the README's error table against the stable codes.
//! - [`drain`]: the order role as a process under load, stopped with
//!   SIGTERM: every answered payment PAID and its event sent, nothing sent
//!   twice after the restart.
//! - [`flash`]: flash sales through the router: a sale, attempts and their
//!   refusal codes, the attempt's state polled and streamed (SSE), bad
//!   input that changes nothing; two instances with their own PostgreSQL
//!   pools selling every unit of a sale and not one more.
//! - [`durability`]: when the embedded broker answers a send (after the
//!   disk by default), as the broker itself reports it; `ordermq outbox`
//!   listing and requeueing parked outbox rows.
//! - [`e2e`] and [`lifecycle`]: a whole ordermq in-process with the real
//!   embedded RocketMQ broker ([`ordermq_testkit::LocalApp`]).
//! - [`feed`]: the change feed through the real broker into the data
//!   team's sink; `feed verify` clean, then reporting a broken row and a gap.
//! - [`events`]: forged events parked by every group, a rotated-in key
//!   accepted, unpredictable ids (the real broker).
//! - [`limits`]: a hoarding script held to the per-user limits and the rate
//!   limit while other shoppers buy (the real broker).
//! - [`mariadb`]: an order created, paid and fanned out with the whole
//!   server on MariaDB (the real broker).
//! - [`peak`]: flash-sale attempts become orders at the configured rate
//!   through the real broker; none is lost, unpaid sale orders give their
//!   units back.
//! - [`modules`]: no crate of the workspace has a circle of modules.
//! - [`reconcile`]: a message lost to one group restored once by the
//!   reconciler, receipts on the order page, a duplicate receipt changing
//!   nothing (the real broker); `ordermq outbox missing`.
//! - [`retries`]: a failing effect retried by ordermq on RocketMQ's
//!   schedule and dead-lettered after its last try, one that heals applied
//!   once, never through the client's send-back (the real broker).
//! - [`roles`]: the order service and the four systems as five processes
//!   (`role`), each on its own database, one broker: paid, all four done on
//!   the order page, each system's effects only in its own database.
//! - [`http`]: the server's timeouts and connection cap through its real
//!   listener.
//! - [`security`]: callback keys, the refusal to start with public
//!   credentials, the operator listener and a log without secrets, through
//!   the whole server.
//! - [`waiting`]: an event that arrives before the one it depends on is
//!   applied seconds after it lands, not on the broker's growing retry
//!   schedule (the real broker).
//! - [`gateways`]: the same, with its third parties over HTTP against an
//!   in-process `ordermq-fake-provider`.
//!
//! Helpers come from `ordermq-testkit`, shared with the benchmark and the
//! fault suite.

mod api;
mod bad_input;
mod cluster;
mod docs;
mod drain;
mod durability;
mod e2e;
mod events;
mod feed;
mod flash;
mod gateways;
mod http;
mod lifecycle;
mod limits;
mod mariadb;
mod modules;
mod peak;
mod reconcile;
mod retries;
mod roles;
mod security;
mod waiting;
