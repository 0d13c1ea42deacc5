//! The one integration test binary: one module per area.

mod affected;
mod bases;
mod bench;
mod build;
mod cachedir;
mod ci;
mod cli;
mod conventions;
mod deps;
mod differential;
mod discover;
mod errors;
mod hardening;
mod isolation;
mod keys;
mod layercache;
mod layout;
mod lockfile_e2e;
mod podman;
mod props;
mod registry;
mod run;
mod secrets;
mod soundness;
mod verify;
mod watch;
