//! The image build-graph engine.
//!
//! A map of the modules, in pipeline order:
//!
//! - [`config`]: the optional `images.toml` of a monorepo (service detection, ports, build args).
//! - [`workspace`] (discover): `pnpm-workspace.yaml`, every `package.json`, workspace dependencies.
//! - [`lockfile`]: pnpm lockfiles (lockfileVersion 6.0 and 9.0) and their pruning to a closure.
//! - [`dockerfile`]: a Dockerfile parser: stages, `FROM`, `COPY`/`ADD` sources, `ARG`s.
//! - [`dockerfiles`]: service Dockerfiles rendered from the template, and the lint of forbidden patterns.
//! - [`dockerignore`]: `.dockerignore` with Docker's own matching rules.
//! - [`context`] (inputs): the build context of each service, decided by the engine.
//! - [`digest`]: typed blake3 digests, so a file digest is never passed where a key is meant.
//! - [`hash`]: parallel hashing of files with a persisted, racy-aware stat cache.
//! - [`prunecache`]: pruned lockfiles kept between runs, keyed by what a pruning depends on.
//! - [`key`]: the canonical, versioned manifest of every input of an image and its key.
//! - [`graph`]: the DAG of packages and images.
//! - [`pipeline`]: runs the steps above for a driver and computes the keys in DAG order.
//! - [`plan`]: `build` or `cached` for each image, and why.
//! - [`execute`]: the builder backends (Docker) and the DAG-parallel scheduler.
//! - [`remote`]: the registry tier of the cache (look up by key, pull, push, publish by manifest copy).
//! - [`verify`]: checks of a built image against the architecture's rules, read from its layers.
//!
//! Drivers of the pipeline besides a one-off `images`:
//!
//! - [`watch`]: rebuild the affected images on save.
//! - [`affected`]: the services a git diff touches.
//!
//! The engine returns data; only `xtask` prints.

pub mod affected;
pub mod cachedir;
pub mod config;
pub mod context;
pub mod digest;
pub mod dockerfile;
pub mod dockerfiles;
pub mod dockerignore;
pub mod error;
pub mod execute;
pub mod graph;
pub mod hash;
pub mod key;
pub mod lockfile;
pub mod pipeline;
pub mod plan;
pub mod prunecache;
mod publish;
pub mod record;
pub mod run;
pub mod tags;
mod tier;
pub mod verify;
pub mod watch;
pub mod workspace;

pub use error::{Error, Result};
