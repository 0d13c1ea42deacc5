//! `cargo xtask`: the command-line front of the engine. Only dispatches.
fn main() {}
