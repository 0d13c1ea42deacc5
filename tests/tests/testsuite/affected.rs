//! Tests of `affected`.
