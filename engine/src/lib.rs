//! The image build-graph engine.
//!
//! A map of the modules, in pipeline order. The front of the pipeline (discover, inputs, hash,
//! key, graph) is [`pipeline::analyze`]; the back (plan, tiers, build, verify, record, publish) is
//! one run, [`run::run`], which every driver goes through.
//!
//! - [`config`]: the optional `images.toml` of a monorepo (service detection, ports, build args).
//! - [`workspace`] (discover): `pnpm-workspace.yaml`, every `package.json`, workspace dependencies.
//! - [`lockfile`]: pnpm lockfiles (lockfileVersion 5.3/5.4, 6.0 and 9.0) and their pruning.
//! - [`dockerfile`]: a Dockerfile parser: stages, `FROM`, `COPY`/`ADD` sources, `ARG`s.
//! - [`sources`]: what one build of a Dockerfile reads (context paths with `ARG`/`ENV`
//!   substituted, external images, remote sources), in the stages its target needs.
//! - [`dockerfiles`]: service Dockerfiles rendered from the template, and the lint of forbidden patterns.
//! - [`dockerignore`]: `.dockerignore` with Docker's own matching rules.
//! - [`resolve`]: paths beneath the root resolved as BuildKit does, no symlink followed by the
//!   kernel; what each `COPY` source selects.
//! - [`walk`]: walks of the selected directories, hashing as they go.
//! - [`context`] (inputs): the build context of each service: exactly what Docker would send.
//! - [`digest`]: typed blake3 digests, so a file digest is never passed where a key is meant.
//! - [`hash`]: parallel hashing of files with a persisted, racy-aware stat cache.
//! - [`prunecache`]: pruned lockfiles kept between runs, keyed by what a pruning depends on.
//! - [`base`]: base images by content digest (the engine, then the registry) and the engine's
//!   platform, behind a resolver trait.
//! - [`key`]: the canonical, versioned manifest of every input of an image and its key.
//! - [`graph`]: the DAG of packages and images.
//! - [`pipeline`]: runs the steps above for a driver and computes the keys in DAG order.
//! - [`plan`]: `build` or `cached` for each image (looked up in the local tier), and why.
//! - [`run`]: **the run**: for each image in DAG order, local tier, remote tier, build, verify,
//!   record, publish; one DAG scheduler; returns a summary and emits events. Its seams:
//!   - `tier` (private): the `Tier` trait, `LocalTier` (records checked against the engine's
//!     images), `RegistryTier` (an OCI registry), `Layered` (local first, then remote, filling
//!     local from remote);
//!   - [`execute`]: the `Builder`, `Images` and `Verifier` traits a run works through, and
//!     Docker, which is all three ([`execute::Backend`]);
//!   - [`record`]: the record stage (and the failure log);
//!   - `publish` (private): release tags, by manifest copy (behind a verification gate) or
//!     push, then signed;
//!   - [`trust`]: the signing key and trusted keys of a run; signature checks of registry
//!     entries, signing what was published;
//!   - [`tags`]: the key label, the key tag, the one tag pair.
//!   - [`warmup`]: the stage several images of a run share, built once before them.
//! - [`verify`]: checks of a built image against the architecture's rules, read from its layers.
//! - [`secrets`]: whether a file looks like a credential (verify's `no-secrets`, the context guard).
//! - [`cachedir`]: `cache stats` and `cache gc` over every part of the cache directory, whose
//!   layout one module names ([`cache::layout`]).
//!
//! Drivers of the run besides a one-off `images`:
//!
//! - [`watch`]: on save, hands the images whose key moved to the same run (with supersede).
//! - [`affected`]: the services a git diff touches; [`ci`]: the base a CI names for it.
//!
//! The engine returns data; only `xtask` prints.

pub mod affected;
pub mod base;
pub mod cachedir;
pub mod ci;
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
pub mod resolve;
pub mod run;
pub mod secrets;
pub mod sources;
pub mod tags;
mod tier;
pub mod trust;
pub mod verify;
pub mod walk;
pub mod warmup;
pub mod watch;
pub mod workspace;

pub use error::{Error, Result};
