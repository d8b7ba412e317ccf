//! The HTTP adapters against `ordermq-fake-provider` over real sockets
//! (port 0): each call is signed and verified by the provider, retried only
//! when it may succeed, idempotent across retries, and bounded in time.
//!
//! - [`docs`]: docs/gateways.md's worked signature example.
//! - [`support`]: a provider in a temporary directory and the adapters' options.
//! - [`sms`], [`logistics`], [`payments`]: one module per provider.

mod docs;
mod logistics;
mod payments;
mod sms;
mod support;
