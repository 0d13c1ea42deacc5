//! One module per command, each with `impl Args { fn run(self, &Global) -> anyhow::Result<i32> }`.

pub mod affected;
pub mod bench;
pub mod cache;
pub mod completions;
pub mod dockerfiles;
pub mod explain;
pub mod graph;
pub mod images;
pub mod keygen;
pub mod verify;
pub mod watch;
