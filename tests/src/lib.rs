//! Test support: a fixture-monorepo builder and helpers to run `cargo xtask` for real.
