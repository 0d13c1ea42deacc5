//! Execute: the backends a run works through, each behind a trait so that the run and the cache
//! tiers never name Docker's concrete type, and a test can inject faults with a fake named so.
//!
//! - [`Builder`]: builds one image from the engine's own tar of its context. It knows nothing of
//!   caching, tags or verification.
//! - [`Images`]: the container engine's image store: what images it holds (with their key label
//!   and tags), tag, pull, push.
//! - [`Verifier`]: checks an image against the architecture's rules, once per key.
//! - [`Backend`]: the three together, as a run is given them; [`docker::Docker`] is all three.
//! - [`tar`]: the deterministic tar of a context that a builder streams.
//! - [`api`]: the Engine API over the daemon's unix socket, for what the engine asks or does
//!   without starting a `docker` process.

pub mod api;
pub mod docker;
pub mod tar;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::context::Context;
use crate::digest::ImageKey;
use crate::verify::{Subject, Verified};
use crate::Result;

pub use crate::tags::KEY_LABEL;

/// One build, as the backend sees it.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub service: String,
    pub root: PathBuf,
    pub context: Context,
    pub dockerfile: String,
    pub labels: BTreeMap<String, String>,
    pub build_args: BTreeMap<String, String>,
    /// The BuildKit secrets the build mounts (ids and where their values are; never the values).
    pub secrets: Vec<crate::config::Secret>,
    pub target: Option<String>,
    pub platform: Option<String>,
    /// A directory for the backend's scratch files.
    pub work_dir: PathBuf,
    pub cancel: Arc<AtomicBool>,
    /// The registry layer cache to import from and export to, if any: it can only spare steps
    /// (BuildKit reuses a layer for the same cache key), never change what is built, and the
    /// image is verified as any other.
    pub layer_cache: Option<LayerCache>,
}

/// How a builder shares its layer cache through a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheExport {
    /// It cannot (the legacy builder, Podman).
    None,
    /// BuildKit's inline cache: the built image carries its cache metadata, and a pushed image
    /// is a cache to import (`--cache-from <image>`). Only the layers of the image built are
    /// described: the run pushes the build stages it copies from as images of their own.
    Inline,
    /// A cache image of every stage (`--cache-to type=registry,mode=max`, buildx).
    Registry,
}

/// The layer cache of one build.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerCache {
    /// References whose cache the build imports, in order (missing ones are skipped by BuildKit).
    pub from: Vec<String>,
    /// Where the cache is exported, if this build exports one: with [`CacheExport::Registry`]
    /// the builder itself writes it there; with [`CacheExport::Inline`] the image is built
    /// with its cache metadata, and the run pushes it there once verified. `None`: import only
    /// (a read-only cache registry), and an inline build carries no cache metadata.
    pub to: Option<String>,
}

#[derive(Debug, Clone)]
pub struct BuildOutput {
    pub image_id: String,
    pub log: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct BuildError {
    pub message: String,
    /// The last lines of the output, for messages.
    pub log_tail: String,
    /// The whole output, as far as it came (kept under the cache directory's `logs/`).
    pub log: Vec<u8>,
    pub interrupted: bool,
}

/// A builder backend.
pub trait Builder: Sync {
    /// Builds one image; `on_line` gets every line of its output as it comes.
    fn build(
        &self,
        req: &BuildRequest,
        on_line: &(dyn Fn(&str) + Sync),
    ) -> Result<BuildOutput, BuildError>;

    /// Removes an image this builder made for the run's own use (a warm-up's stage image), if
    /// nothing else names it.
    fn discard(&self, _image_id: &str) {}

    /// How it can share its layer cache through a registry.
    fn cache_export(&self) -> CacheExport {
        CacheExport::None
    }

    /// What, besides a build's inputs, its layer cache depends on (BuildKit's cache keys may
    /// change with the builder's version): part of a stage cache's key.
    fn cache_identity(&self) -> String {
        String::new()
    }
}

/// An image of the engine, as the tiers see it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LocalImage {
    /// The image id (`sha256:...`).
    pub id: String,
    /// Its key label ([`KEY_LABEL`]), if it has one.
    pub key: Option<String>,
    /// Its `repository:tag` names.
    pub tags: Vec<String>,
}

/// The container engine's image store.
pub trait Images: Sync {
    /// Every image of the engine, with its key label and tags.
    fn list(&self) -> Result<Vec<LocalImage>>;
    /// Points `reference` (`repository:tag`) at an image.
    fn tag(&self, image_id: &str, reference: &str) -> Result<()>;
    /// Pulls `reference` into the engine; returns what was pulled.
    fn pull(&self, reference: &str) -> Result<LocalImage>;
    /// Pushes an image of the engine under `reference` (tagging it so first).
    fn push(&self, image_id: &str, reference: &str) -> Result<()>;
    /// The engine's own platform (`os/arch`), if it says: which entry of a registry's image
    /// index is this engine's.
    fn platform(&self) -> Option<String> {
        None
    }
}

/// Checks images against the architecture's rules.
pub trait Verifier: Sync {
    /// Verifies the image `image_id` as the image `image` of `subject` at `key`, once per key: a
    /// report kept in the cache directory `cache_dir` is reused while the image and the rules
    /// are the same.
    fn verify(
        &self,
        cache_dir: &Path,
        subject: &Subject,
        image: &str,
        key: &ImageKey,
        image_id: &str,
    ) -> Result<Verified>;
}

/// The backends a run is given.
#[derive(Clone, Copy)]
pub struct Backend<'a> {
    pub builder: &'a dyn Builder,
    /// The engine's images; `None` when there is no engine to ask (a fake builder): records are
    /// trusted as they are, and nothing is tagged, pulled or pushed.
    pub images: Option<&'a dyn Images>,
    /// `None`: images are not verified.
    pub verifier: Option<&'a dyn Verifier>,
}

impl<'a> Backend<'a> {
    /// Docker as builder, image store and verifier.
    pub fn docker(docker: &'a docker::Docker) -> Backend<'a> {
        Backend {
            builder: docker,
            images: Some(docker),
            verifier: Some(docker),
        }
    }

    /// A builder alone: no engine to ask, nothing verified.
    pub fn builder(builder: &'a dyn Builder) -> Backend<'a> {
        Backend {
            builder,
            images: None,
            verifier: None,
        }
    }
}
