//! The HTTP layer alone: every handler against a fake `OrderService`, so
//! what is checked is the API's own work — access, parsing, signatures,
//! status codes and error bodies — with no database and no broker.
//!
//! - `access`: the route table walked through the router (every route, every
//!   method, every kind of caller), the listeners, the dashboard's session.
//! - `handlers`: each handler's contract.
//! - `limits`: the rate limits (orders per token and user and per token,
//!   failed sign-ins per address): 429 with `Retry-After`, nothing reaching
//!   the service.
//! - `fake`: the recording `OrderService`.

mod access;
mod fake;
mod handlers;
mod limits;
