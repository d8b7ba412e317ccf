//! The benchmark's integration tests: one binary.

mod smoke;
