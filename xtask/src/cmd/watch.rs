//! `cargo xtask watch`: not implemented yet.

use crate::Global;

#[derive(Debug, clap::Args)]
pub struct Args {}

impl Args {
    pub fn run(self, _global: &Global) -> anyhow::Result<i32> {
        anyhow::bail!("`cargo xtask watch` is not implemented yet")
    }
}
