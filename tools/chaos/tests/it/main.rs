//! The fault suite's integration tests: one binary.

mod suite;
