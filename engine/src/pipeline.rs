//! The front of the pipeline, run by every driver: discover, list the contexts, hash (with the
//! stat cache), build the graph, and compute each selected image's key in DAG order.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::context::{self, Context};
use crate::digest::{FileDigest, ImageKey};
use crate::graph::Graph;
use crate::hash::{HashStats, StatCache};
use crate::key::{BaseImage, InputManifest, KeyManifest, KEY_FORMAT_VERSION};
use crate::prunecache::PruneCache;
use crate::workspace::Workspace;
use crate::Result;

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
        }
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.cache_dir
            .clone()
            .unwrap_or_else(|| cache::Layout::default_dir(&self.root))
    }
}

/// The inputs and key of one image.
#[derive(Debug, Clone)]
pub struct ImageInputs {
    pub service: usize,
    pub context: Context,
    pub manifest: KeyManifest,
    pub key: ImageKey,
}

impl ImageInputs {
    pub fn input_manifest(&self, ws: &Workspace) -> InputManifest {
        InputManifest::new(
            &ws.services[self.service].name,
            self.manifest.clone(),
            &self.context,
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
    /// One per selected service, in DAG order (an image after those it builds `FROM`).
    pub images: Vec<ImageInputs>,
    pub hash_stats: HashStats,
    pub timings: Timings,
    pub warnings: Vec<String>,
    pub cache_dir: PathBuf,
}

impl Analysis {
    pub fn image(&self, service: usize) -> Option<&ImageInputs> {
        self.images.iter().find(|i| i.service == service)
    }
}

/// Runs discover, inputs, hash, graph and keys.
pub fn analyze(opts: &Options) -> Result<Analysis> {
    let t0 = Instant::now();
    let ws = Workspace::discover(&opts.root)?;
    let mut timings = Timings {
        discover: t0.elapsed(),
        ..Timings::default()
    };
    let mut warnings = Vec::new();

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
    let mut dockerfiles = context::load_dockerfiles(&ws, &selected)?;
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
            .filter(|s| !dockerfiles.contains_key(s))
            .collect();
        dockerfiles.extend(context::load_dockerfiles(&ws, &missing)?);
    };
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
    let listing = context::list(
        &ws,
        &selected,
        &dockerfiles,
        context::HashWith {
            cache: &stat_cache,
            pruned: &prune_cache,
            parallel: opts.parallel,
        },
    )?;
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
                if all_services {
                    // Every context was listed: the cache becomes exactly the listing (so it
                    // does not grow without bound).
                    StatCache::write(
                        &stat_path,
                        listed.files.iter().map(|f| (&*f.path, &f.stat, &f.digest)),
                    )
                } else {
                    let mut c = stat_cache;
                    for f in listed.files.iter().filter(|f| f.hashed) {
                        c.insert(f.path.to_string(), f.stat, f.digest);
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

    // Keys, in DAG order so that FROM images' keys are known.
    let t = Instant::now();
    let mut by_service: HashMap<usize, Context> =
        contexts.into_iter().map(|c| (c.service, c)).collect();
    let mut keys: HashMap<usize, ImageKey> = HashMap::new();
    let mut images = Vec::new();
    for s in graph.image_order() {
        let Some(ctx) = by_service.remove(&s) else {
            continue;
        };
        let svc = &ws.services[s];
        let sc = ws.config.service(&svc.name);
        let mut build_args = ws.config.build_args(&svc.name);
        build_args.extend(opts.build_args.clone());
        let dockerfile_digest = ctx
            .files
            .iter()
            .find(|f| *f.path == *svc.dockerfile)
            .map(|f| f.digest)
            .unwrap_or_else(|| FileDigest::of_bytes(b""));
        let mut from_images = BTreeMap::new();
        let mut base_images = Vec::new();
        for (reference, _) in ctx.dockerfile.external_images() {
            let name = crate::graph::strip_tag(&reference);
            match ws.services.iter().position(|o| o.image == name) {
                Some(t) if graph.image_deps[s].contains(&t) => {
                    if let Some(k) = keys.get(&t) {
                        from_images.insert(ws.services[t].name.clone(), *k);
                    }
                }
                _ => base_images.push(BaseImage {
                    digest: reference.split_once('@').map(|(_, d)| d.to_string()),
                    reference,
                }),
            }
        }
        let manifest = KeyManifest {
            format: KEY_FORMAT_VERSION,
            dockerfile: svc.dockerfile.clone(),
            dockerfile_digest,
            context: ctx.digest,
            build_args,
            target: sc
                .target
                .clone()
                .or_else(|| ws.config.images.target.clone()),
            platform: sc
                .platform
                .clone()
                .or_else(|| ws.config.images.platform.clone()),
            base_images,
            from_images,
        };
        let key = manifest.key();
        keys.insert(s, key);
        images.push(ImageInputs {
            service: s,
            context: ctx,
            manifest,
            key,
        });
    }
    timings.keys = t.elapsed();

    Ok(Analysis {
        ws,
        graph,
        images,
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
