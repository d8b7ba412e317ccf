//! The fault suite's integration tests: one binary.
//!
//! - `suite`: every scenario's short form, and the checker's self-test.
//! - `sale`: the flash-sale rules' self-test.

mod sale;
mod suite;
