//! The front of the pipeline, run by every driver: discover, read each Dockerfile as its build
//! will (build arguments, target, platform), list the contexts, hash (with the stat cache), build
//! the graph, resolve the external base images, and compute each selected image's key in DAG
//! order.
//!
//! A service whose inputs cannot be resolved fails alone ([`Analysis::failed`], with its error and
//! a hint); the others are analysed. Only errors of the whole workspace (its `package.json`s,
//! `pnpm-workspace.yaml`, `images.toml`, a dependency cycle) stop the analysis.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::base::{BaseResolver, EngineResolver, Lookup, OfflineResolver};
use crate::context::{self, Context, ServiceInput};
use crate::digest::{ArgDigest, FileDigest, ImageKey};
use crate::graph::Graph;
use crate::hash::{HashStats, StatCache};
use crate::key::{BaseImage, InputManifest, KeyManifest, KEY_FORMAT_VERSION};
use crate::prunecache::PruneCache;
use crate::resolve::Root;
use crate::sources::{Platforms, Reads};
use crate::workspace::Workspace;
use crate::{Error, Result};

/// Where base image digests and the engine's platform come from (see [`crate::base`]).
#[derive(Clone)]
pub struct Resolver(pub Arc<dyn BaseResolver>);

impl Resolver {
    /// The Docker engine, then the registry (the default).
    pub fn engine() -> Resolver {
        Resolver(Arc::new(EngineResolver::new()))
    }

    /// Asks nothing: keys say their base images and platform are unknown.
    pub fn offline() -> Resolver {
        Resolver(Arc::new(OfflineResolver))
    }
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub root: PathBuf,
    /// The cache directory; `<root>/.images-cache` when `None`.
    pub cache_dir: Option<PathBuf>,
    /// Services to analyse (names, package names or image names); all when empty. The images
    /// they build `FROM` are added.
    pub services: Vec<String>,
    /// Extra build arguments (from flags), over the config's.
    pub build_args: BTreeMap<String, String>,
    /// Hash in parallel (the default) or on one thread.
    pub parallel: bool,
    /// Read and write the analysis caches (the default): the stat cache and the pruned lockfiles.
    pub stat_cache: bool,
    /// Rewrite the analysis caches even when nothing new was hashed or pruned, so that with every
    /// service analysed they hold exactly what is in use (`cache gc`).
    pub compact_caches: bool,
    /// Where base image digests and the default platform come from.
    pub resolver: Resolver,
}

impl Options {
    pub fn new(root: impl Into<PathBuf>) -> Options {
        Options {
            root: root.into(),
            cache_dir: None,
            services: Vec::new(),
            build_args: BTreeMap::new(),
            parallel: true,
            stat_cache: true,
            compact_caches: false,
            resolver: Resolver::engine(),
        }
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.cache_dir
            .clone()
            .unwrap_or_else(|| cache::Layout::default_dir(&self.root))
    }
}

/// Build argument values, kept apart from the key (which holds only their digests). Never
/// printed: its `Debug` shows names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct BuildArgs(BTreeMap<String, String>);

impl BuildArgs {
    pub fn new(values: BTreeMap<String, String>) -> BuildArgs {
        BuildArgs(values)
    }

    /// The values, for the builder only.
    pub fn values(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// Each value's digest, as the key holds it.
    pub fn digests(&self) -> BTreeMap<String, ArgDigest> {
        self.0
            .iter()
            .map(|(k, v)| (k.clone(), ArgDigest::of_value(v)))
            .collect()
    }
}

impl std::fmt::Debug for BuildArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// The inputs and key of one image.
#[derive(Debug, Clone)]
pub struct ImageInputs {
    pub service: usize,
    pub context: Context,
    pub manifest: KeyManifest,
    pub key: ImageKey,
    /// The build argument values (the manifest holds their digests).
    pub build_args: BuildArgs,
    /// The platform to ask the builder for: a configured one only (else it builds for its own,
    /// which the key names).
    pub platform_flag: Option<String>,
    /// Why the key is incomplete (a base image's digest or the platform not known): such an image
    /// is never taken from the cache.
    pub unresolved: Vec<String>,
    /// Why the image is never taken from the cache (an unpinned `ADD <url>`).
    pub uncacheable: Vec<String>,
    /// The BuildKit secrets it mounts that `[secrets]` configures (the manifest holds their ids).
    pub secrets: Vec<crate::config::Secret>,
}

impl ImageInputs {
    /// Whether a cache (local or registry) may stand in for a build of it: its key is complete
    /// and nothing it reads escapes the key.
    pub fn cacheable(&self) -> bool {
        self.unresolved.is_empty() && self.uncacheable.is_empty()
    }

    pub fn input_manifest(&self, ws: &Workspace) -> InputManifest {
        InputManifest::new(
            &ws.services[self.service].name,
            self.manifest.clone(),
            &self.context,
        )
    }
}

/// A service whose inputs could not be resolved: it fails alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceFailure {
    pub service: usize,
    pub name: String,
    pub error: String,
    pub hint: String,
}

impl std::fmt::Display for ServiceFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "service `{}`: {}\n  hint: {}",
            self.name, self.error, self.hint
        )
    }
}

/// Timings of the phases, for `--verbose` and benchmarks.
#[derive(Debug, Default, Clone)]
pub struct Timings {
    pub discover: Duration,
    pub list: Duration,
    pub hash: Duration,
    pub keys: Duration,
}

/// The result of the front of the pipeline.
#[derive(Debug)]
pub struct Analysis {
    pub ws: Workspace,
    pub graph: Graph,
    /// One per selected service that could be analysed, in DAG order (an image after those it
    /// builds `FROM`).
    pub images: Vec<ImageInputs>,
    /// The selected services that could not be, sorted by name.
    pub failed: Vec<ServiceFailure>,
    pub hash_stats: HashStats,
    pub timings: Timings,
    pub warnings: Vec<String>,
    pub cache_dir: PathBuf,
}

impl Analysis {
    pub fn image(&self, service: usize) -> Option<&ImageInputs> {
        self.images.iter().find(|i| i.service == service)
    }

    pub fn failure(&self, service: usize) -> Option<&ServiceFailure> {
        self.failed.iter().find(|f| f.service == service)
    }
}

/// The hint of a service that fails alone.
pub fn skip_hint(name: &str) -> String {
    format!("if `{name}` is not meant to be built, set `skip = true` under `[services.{name}]` in images.toml")
}

/// The cache directory relative to the root, if it is inside it.
fn inside_root(root: &Path, dir: &Path) -> Option<String> {
    let abs = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(dir)
    };
    // The longest existing ancestor, canonical (the directory may not exist yet).
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        rest.push(existing.file_name()?.to_owned());
        existing = existing.parent()?;
    }
    let mut canon = existing.canonicalize().ok()?;
    for r in rest.iter().rev() {
        canon.push(r);
    }
    let rel = canon.strip_prefix(root).ok()?;
    let rel = rel.to_string_lossy().replace('\\', "/");
    let rel = crate::workspace::join_rel(".", &rel);
    Some(rel)
}

/// Runs discover, inputs, hash, graph and keys.
pub fn analyze(opts: &Options) -> Result<Analysis> {
    let t0 = Instant::now();
    let ws = Workspace::discover(&opts.root)?;
    let root = Root::open(&ws.root).map_err(|e| Error::io("open", &ws.root, e))?;
    let mut timings = Timings {
        discover: t0.elapsed(),
        ..Timings::default()
    };
    let mut warnings = Vec::new();
    let mut failures: BTreeMap<usize, Error> = BTreeMap::new();
    let allow = ws.config.secret_allow(&ws.root)?;
    let secrets = ws.config.secrets(&ws.root)?;

    // The stat cache loads while the workspace's Dockerfiles are read.
    let cache_dir = opts.cache_dir();
    let layout = cache::Layout::new(&cache_dir);
    let (stat_path, prune_path) = (layout.stat_cache(), layout.pruned_lockfiles());
    let loading = opts.stat_cache.then(|| {
        let (p, q) = (stat_path.clone(), prune_path.clone());
        std::thread::spawn(move || (StatCache::load(&p), PruneCache::load(&q)))
    });

    // Selection: the named services and, transitively, the images they build FROM.
    let t = Instant::now();
    let mut selected: Vec<usize> = if opts.services.is_empty() {
        (0..ws.services.len()).collect()
    } else {
        opts.services
            .iter()
            .map(|n| ws.service(n))
            .collect::<Result<_>>()?
    };
    let args_of = |s: usize| -> BTreeMap<String, String> {
        let mut a = ws.config.build_args(&ws.services[s].name);
        a.extend(opts.build_args.clone());
        a
    };
    let (mut dockerfiles, failed) = context::load_dockerfiles(&ws, &root, &selected, &args_of);
    failures.extend(failed);
    let graph = loop {
        let refs: Vec<Option<&crate::dockerfile::Dockerfile>> = (0..ws.services.len())
            .map(|s| dockerfiles.get(&s).map(|d| d.as_ref()))
            .collect();
        let graph = Graph::build(&ws, &refs)?;
        // Add the FROM dependencies missing from the selection, until none is.
        let mut closure: HashSet<usize> = selected.iter().copied().collect();
        let mut stack = selected.clone();
        while let Some(s) = stack.pop() {
            for &d in &graph.image_deps[s] {
                if closure.insert(d) {
                    stack.push(d);
                }
            }
        }
        if closure.len() == selected.len() {
            break graph;
        }
        selected = closure.into_iter().collect();
        selected.sort_unstable();
        let missing: Vec<usize> = selected
            .iter()
            .copied()
            .filter(|s| !dockerfiles.contains_key(s) && !failures.contains_key(s))
            .collect();
        let (more, failed) = context::load_dockerfiles(&ws, &root, &missing, &args_of);
        dockerfiles.extend(more);
        failures.extend(failed);
    };

    // The platform of each build (configured, else the engine's), and what its Dockerfile reads.
    let engine_platform = std::sync::OnceLock::new();
    let engine_platform = || {
        engine_platform
            .get_or_init(|| opts.resolver.0.engine_platform())
            .clone()
    };
    let mut platforms: HashMap<usize, std::result::Result<String, String>> = HashMap::new();
    let mut reads: HashMap<usize, Reads> = HashMap::new();
    for &s in &selected {
        let Some(df) = dockerfiles.get(&s) else {
            continue;
        };
        let svc = &ws.services[s];
        let sc = ws.config.service(&svc.name);
        let configured = sc
            .platform
            .clone()
            .or_else(|| ws.config.images.platform.clone());
        let platform = match configured {
            Some(p) => match crate::base::normalize_platform(&p) {
                Ok(p) => Ok(p),
                Err(e) => {
                    failures.insert(s, Error::Other(format!("invalid platform in images.toml: {e}")));
                    continue;
                }
            },
            None => match engine_platform() {
                Lookup::Found(p) => Ok(p),
                Lookup::NotFound(why) | Lookup::Unavailable(why) => Err(format!(
                    "the platform is not known: none is configured and the engine's is unknown ({why})"
                )),
            },
        };
        let build_platform = match engine_platform() {
            Lookup::Found(p) => Some(p),
            _ => None,
        };
        let target = sc
            .target
            .clone()
            .or_else(|| ws.config.images.target.clone());
        let r = crate::sources::reads(
            df,
            &ws.root.join(&svc.dockerfile),
            &args_of(s),
            target.as_deref(),
            Platforms {
                target: platform.as_ref().ok().map(String::as_str),
                build: build_platform.as_deref(),
            },
        );
        match r {
            Ok(r) => {
                reads.insert(s, r);
                platforms.insert(s, platform);
            }
            Err(e) => {
                failures.insert(s, e);
            }
        }
    }

    let (stat_cache, prune_cache) = match loading {
        Some(h) => {
            let ((c, warn), (p, warn2)) = h.join().unwrap_or_else(|_| {
                (
                    (
                        StatCache::new(),
                        Some("could not load the stat cache".into()),
                    ),
                    (PruneCache::new(), None),
                )
            });
            warnings.extend(warn);
            warnings.extend(warn2);
            (c, p)
        }
        None => (StatCache::new(), PruneCache::new()),
    };

    // List and hash every file once (in parallel), answering from the stat cache where it can.
    let hidden: Vec<String> = inside_root(&ws.root, &cache_dir)
        .into_iter()
        .filter(|r| r != ".")
        .collect();
    let inputs: Vec<ServiceInput<'_>> = selected
        .iter()
        .filter_map(|&s| {
            Some(ServiceInput {
                service: s,
                dockerfile: dockerfiles.get(&s)?.clone(),
                reads: reads.get(&s)?,
            })
        })
        .collect();
    let mut listing = context::list(
        &ws,
        &root,
        &inputs,
        &hidden,
        context::HashWith {
            cache: &stat_cache,
            pruned: &prune_cache,
            parallel: opts.parallel,
            allow: &allow,
        },
    );
    failures.extend(std::mem::take(&mut listing.failed));
    warnings.append(&mut listing.warnings);
    timings.list = t.elapsed();

    let t = Instant::now();
    let hash_stats = listing.stats;
    let all_services = opts.services.is_empty();
    let compact = opts.compact_caches && all_services;
    let save = opts.stat_cache && (hash_stats.hashed > 0 || compact);
    let save_prunings = opts.stat_cache && (listing.pruned_now > 0 || compact);
    let contexts = std::thread::scope(|scope| {
        // The caches are written while the contexts are assembled.
        let listed = &listing;
        let prune_saver = save_prunings.then(|| {
            scope.spawn(move || {
                if all_services {
                    // Exactly this listing's prunings: the cache does not grow without bound.
                    PruneCache::write(
                        &prune_path,
                        listed.prunings.iter().map(|(k, b)| (k, b.as_slice())),
                    )
                } else {
                    let mut c = prune_cache;
                    for (k, b) in &listed.prunings {
                        c.insert(*k, b.clone());
                    }
                    c.save(&prune_path)
                }
            })
        });
        let saver = save.then(|| {
            scope.spawn(move || {
                // Directories are entries, not files: the stat cache keeps files only.
                let files: Vec<_> = listed.files.iter().filter(|f| !f.stat.is_dir()).collect();
                if all_services {
                    // Every context was listed: the cache becomes exactly the listing (so it
                    // does not grow without bound).
                    StatCache::write(
                        &stat_path,
                        files.into_iter().map(|f| {
                            (&*f.path, &f.stat, &f.digest, crate::secrets::code(f.secret))
                        }),
                    )
                } else {
                    let mut c = stat_cache;
                    for f in files.into_iter().filter(|f| f.hashed) {
                        c.insert_judged(
                            f.path.to_string(),
                            f.stat,
                            f.digest,
                            crate::secrets::code(f.secret),
                        );
                    }
                    c.save(&stat_path)
                }
            })
        });
        let contexts = context::assemble(listed);
        for (h, what) in [
            (saver, "the stat cache"),
            (prune_saver, "the pruned lockfiles"),
        ] {
            match h.map(|h| h.join()) {
                None | Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => warnings.push(format!("could not save {what}: {e}")),
                Some(Err(_)) => warnings.push(format!("could not save {what}")),
            }
        }
        contexts
    });
    drop(listing);
    timings.hash = t.elapsed();

    // Base image digests: every distinct (reference, platform) asked once, in parallel.
    let t = Instant::now();
    let in_repo = |reference: &str| {
        let name = crate::graph::strip_tag(reference);
        ws.services.iter().position(|o| o.image == name)
    };
    let mut wanted: Vec<(String, String)> = Vec::new();
    for (s, r) in &reads {
        let Some(Ok(platform)) = platforms.get(s) else {
            continue;
        };
        for img in &r.images {
            if in_repo(&img.reference).is_some() {
                continue;
            }
            let p = img.platform.clone().unwrap_or_else(|| platform.clone());
            let pair = (img.reference.clone(), p);
            if !wanted.contains(&pair) {
                wanted.push(pair);
            }
        }
    }
    let resolver = &opts.resolver.0;
    let digests: HashMap<(String, String), Lookup> = wanted
        .into_par_iter()
        .map(|(reference, platform)| {
            let answer = if platform.contains('$') {
                Lookup::Unavailable(format!("the platform `{platform}` is not known"))
            } else {
                match crate::base::normalize_platform(&platform) {
                    Ok(p) => resolver.digest(&reference, &p),
                    Err(e) => Lookup::NotFound(e),
                }
            };
            ((reference, platform), answer)
        })
        .collect();

    // Keys, in DAG order so that FROM images' keys are known.
    let mut by_service: HashMap<usize, Context> =
        contexts.into_iter().map(|c| (c.service, c)).collect();
    let mut keys: HashMap<usize, ImageKey> = HashMap::new();
    let mut images = Vec::new();
    for s in graph.image_order() {
        let Some(ctx) = by_service.remove(&s) else {
            continue;
        };
        if failures.contains_key(&s) {
            continue;
        }
        let (Some(r), Some(platform)) = (reads.get(&s), platforms.get(&s)) else {
            continue;
        };
        let svc = &ws.services[s];
        let sc = ws.config.service(&svc.name);
        let build_args = BuildArgs::new(args_of(s));
        let dockerfile_digest = ctx
            .files
            .iter()
            .find(|f| *f.path == *svc.dockerfile)
            .map(|f| f.digest)
            .unwrap_or_else(|| FileDigest::of_bytes(b""));
        let mut unresolved = Vec::new();
        if let Err(why) = platform {
            unresolved.push(why.clone());
        }
        let mut from_images = BTreeMap::new();
        let mut base_images = Vec::new();
        let mut failure = None;
        for img in &r.images {
            if let Some(t) = in_repo(&img.reference) {
                match keys.get(&t) {
                    Some(k) => {
                        from_images.insert(ws.services[t].name.clone(), *k);
                    }
                    None => {
                        failure = Some(Error::Other(format!(
                            "it builds FROM `{}` (line {}), the image of `{}`, which cannot be built",
                            img.reference, img.line, ws.services[t].name
                        )));
                        break;
                    }
                }
                continue;
            }
            if img.reference.contains('$') {
                // `FROM node:$TARGETARCH` with the platform not known.
                unresolved.push(format!(
                    "base image {}: not known until the platform is",
                    img.reference
                ));
                base_images.push(BaseImage {
                    reference: img.reference.clone(),
                    platform: img.platform.clone(),
                    digest: None,
                });
                continue;
            }
            if let Err(e) = crate::base::validate_reference(&img.reference) {
                failure = Some(Error::Dockerfile {
                    path: ws.root.join(&svc.dockerfile),
                    line: img.line,
                    message: e,
                });
                break;
            }
            let p = match (&img.platform, platform) {
                (Some(p), _) => Some(p.clone()),
                (None, Ok(p)) => Some(p.clone()),
                (None, Err(_)) => None,
            };
            let answer = p
                .as_ref()
                .and_then(|p| digests.get(&(img.reference.clone(), p.clone())));
            let digest = match answer {
                Some(Lookup::Found(d)) => Some(d.clone()),
                Some(Lookup::NotFound(why)) => {
                    failure = Some(Error::Other(format!(
                        "base image `{}` (line {} of `{}`): {why}\n  hint: check the name, or `docker pull {}`",
                        img.reference, img.line, svc.dockerfile, img.reference
                    )));
                    break;
                }
                Some(Lookup::Unavailable(why)) => {
                    unresolved.push(format!(
                        "base image {}: digest unknown ({why})",
                        img.reference
                    ));
                    None
                }
                None => {
                    unresolved.push(format!(
                        "base image {}: digest unknown (the platform is not known)",
                        img.reference
                    ));
                    None
                }
            };
            let p = p.map(|p| crate::base::normalize_platform(&p).unwrap_or(p));
            base_images.push(BaseImage {
                reference: img.reference.clone(),
                platform: p,
                digest,
            });
        }
        if let Some(e) = failure {
            failures.insert(s, e);
            continue;
        }
        let configured = sc
            .platform
            .clone()
            .or_else(|| ws.config.images.platform.clone());
        // The secrets its Dockerfile mounts: those configured are given to the build (and their
        // ids keyed); BuildKit runs a mount without a secret given, so the others are said.
        let mut given = Vec::new();
        for id in &r.secrets {
            match secrets.get(id) {
                Some(s) => given.push(s.clone()),
                None => warnings.push(format!(
                    "`{}` mounts the secret `{id}`, which images.toml does not configure: the build runs without it\n  hint: add `{id} = {{ env = \"VARIABLE\" }}` (or `{{ file = \"path\" }}`) under `[secrets]` in images.toml",
                    svc.dockerfile
                )),
            }
        }
        let manifest = KeyManifest {
            format: KEY_FORMAT_VERSION,
            dockerfile: svc.dockerfile.clone(),
            dockerfile_digest,
            context: ctx.digest,
            build_args: build_args.digests(),
            target: sc
                .target
                .clone()
                .or_else(|| ws.config.images.target.clone()),
            platform: platform.as_ref().ok().cloned(),
            base_images,
            remote_sources: r.remote.clone(),
            from_images,
            secrets: given.iter().map(|s| s.id.clone()).collect(),
        };
        let key = manifest.key();
        keys.insert(s, key);
        images.push(ImageInputs {
            service: s,
            context: ctx,
            manifest,
            key,
            build_args,
            platform_flag: configured,
            unresolved,
            uncacheable: r.uncacheable.clone(),
            secrets: given,
        });
    }
    timings.keys = t.elapsed();

    let mut failed: Vec<ServiceFailure> = failures
        .into_iter()
        .map(|(s, e)| {
            let name = ws.services[s].name.clone();
            ServiceFailure {
                service: s,
                hint: skip_hint(&name),
                name,
                error: e.to_string(),
            }
        })
        .collect();
    failed.sort_by(|a, b| a.name.cmp(&b.name));

    Ok(Analysis {
        ws,
        graph,
        images,
        failed,
        hash_stats,
        timings,
        warnings,
        cache_dir,
    })
}

/// The cache directory for a root when none is given.
pub fn default_cache_dir(root: &Path) -> PathBuf {
    cache::Layout::default_dir(root)
}
