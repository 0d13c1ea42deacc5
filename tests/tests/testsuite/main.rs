//! The one integration test binary: one module per area.

mod affected;
mod bench;
mod build;
mod cachedir;
mod cli;
mod deps;
mod discover;
mod errors;
mod keys;
mod lockfile_e2e;
mod podman;
mod props;
mod registry;
mod run;
mod verify;
mod watch;
