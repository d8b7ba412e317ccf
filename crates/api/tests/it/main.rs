//! The HTTP layer alone: every handler against a fake `OrderService`, so
//! what is checked is the API's own work — parsing, signatures, status codes
//! and error bodies — with no database and no broker.

mod fake;
mod handlers;
