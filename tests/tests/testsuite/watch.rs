//! Tests of `watch`.
