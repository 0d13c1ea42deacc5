//! Inputs: the build context of each service, decided by the engine (DESIGN.md principles 1, 2).
//!
//! A context is what Docker would send for its Dockerfile's sources and nothing else: every
//! `COPY`/`ADD` source (and `RUN --mount=type=bind` source) of the stages the build runs, with
//! `ARG`/`ENV` substituted ([`crate::sources`]), resolved beneath the root without following a
//! symlink ([`crate::resolve`]) into the files BuildKit would copy after `.dockerignore` (or
//! `<Dockerfile>.dockerignore`): files, symlinks as symlinks, directories with their whole
//! subtree, nested workspace packages included; plus the Dockerfile, which the builder reads. The
//! lockfile, when copied, is replaced by its pruning to the workspace packages the context holds.
//! The engine's cache directory and `images.toml` are never in a context.
//!
//! Listing and hashing are one parallel pass: each distinct (directory, ignore file) is walked once
//! for all the services that share it, and each walk answers its files' digests from the stat cache
//! or reads them right away, so reading overlaps walking. The walks are then merged into one sorted
//! table of entries; a context is a sorted list of indices into it, so a shared package's files
//! exist once however many contexts hold them.
//!
//! A service whose sources cannot be resolved fails alone ([`Listing::failed`]); the others are
//! listed.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;

use rayon::prelude::*;

use crate::digest::{ContextDigest, FileDigest};
use crate::dockerfile::Dockerfile;
use crate::dockerignore::DockerIgnore;
use crate::hash::{FileStat, HashStats, StatCache};
use crate::key::EntryKind;
use crate::prunecache::PruneCache;
use crate::resolve::{self, Root, Rules, SelectError, Selection};
use crate::sources::Reads;
use crate::walk::{self, Found};
use crate::workspace::{Workspace, LOCKFILE};
use crate::{Error, Result};

/// Where the bytes of a context file come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// The file at this path relative to the root.
    Disk,
    /// Bytes the engine made (the pruned lockfile).
    Virtual(Arc<Vec<u8>>),
}

/// One entry (file, symlink or directory) of a build context.
#[derive(Debug, Clone)]
pub struct ContextFile {
    /// Relative to the root (and to the context), `/`-separated. Shared with the listing and
    /// every other context holding the file.
    pub path: Arc<str>,
    /// Normalised: `0o755` when the owner may execute, `0o644` otherwise (umask-independent);
    /// `0o777` for symlinks, `0o755` for directories.
    pub mode: u32,
    pub symlink: bool,
    /// A directory (Docker sends directories, empty or not; its content is its other entries).
    pub dir: bool,
    pub size: u64,
    pub digest: FileDigest,
    pub source: Source,
}

impl ContextFile {
    pub fn kind(&self) -> EntryKind {
        if self.dir {
            EntryKind::Dir
        } else if self.symlink {
            EntryKind::Symlink
        } else {
            EntryKind::File
        }
    }
}

/// The build context of one service.
#[derive(Debug, Clone)]
pub struct Context {
    pub service: usize,
    /// Sorted by path, no duplicates.
    pub files: Vec<ContextFile>,
    pub digest: ContextDigest,
    /// The ignore file that filtered it (relative), if any.
    pub dockerignore: Option<String>,
    /// The parsed Dockerfile.
    pub dockerfile: Arc<Dockerfile>,
    /// Directories where a new file could join this context (`.`: anywhere), for watchers.
    pub covers: Vec<String>,
}

/// One disk entry of at least one context, with its digest.
#[derive(Debug, Clone)]
pub struct ListedFile {
    pub path: Arc<str>,
    pub stat: FileStat,
    pub digest: FileDigest,
    /// Read and hashed by this listing (the stat cache could not answer).
    pub hashed: bool,
    /// What kind of credential it looks like, if any ([`crate::secrets`]).
    pub secret: Option<crate::secrets::Kind>,
}

/// Every listed service's context, before assembly: one table of entries, and per service the
/// indices of its entries.
#[derive(Debug, Default)]
pub struct Listing {
    /// Every disk entry of any listed context, once, sorted by path.
    pub files: Vec<ListedFile>,
    /// Per listed service: its entries, the ignore file, the Dockerfile and the pruned lockfile.
    pub services: Vec<ServiceListing>,
    /// Services whose context could not be listed, and why.
    pub failed: Vec<(usize, Error)>,
    /// Things worth saying that fail nothing.
    pub warnings: Vec<String>,
    /// Files listed, read and hashed (each distinct file counted once; directories not counted).
    pub stats: HashStats,
    /// Every pruned lockfile of this listing by its prune key, and how many were pruned now (not
    /// found in [`HashWith::pruned`]).
    pub prunings: Vec<([u8; 32], Arc<Vec<u8>>)>,
    pub pruned_now: usize,
}

#[derive(Debug)]
pub struct ServiceListing {
    pub service: usize,
    /// Indices into [`Listing::files`], ascending (so in path order); the disk entries of the
    /// context, without the lockfile (replaced by `pruned_lockfile`).
    pub files: Vec<u32>,
    pub dockerignore: Option<String>,
    pub dockerfile: Arc<Dockerfile>,
    pub pruned_lockfile: Option<Arc<Vec<u8>>>,
    pub covers: Vec<String>,
}

impl Listing {
    /// The paths of one service's disk entries, in order.
    pub fn paths<'a>(&'a self, sl: &'a ServiceListing) -> impl Iterator<Item = &'a str> + 'a {
        sl.files.iter().map(|&i| &*self.files[i as usize].path)
    }
}

/// How a listing answers digests (and pruned lockfiles).
#[derive(Debug, Clone, Copy)]
pub struct HashWith<'a> {
    /// Digests of unchanged files.
    pub cache: &'a StatCache,
    /// Lockfiles pruned by earlier runs.
    pub pruned: &'a PruneCache,
    /// Walk and hash on every core (the default) or on one thread.
    pub parallel: bool,
    /// The files that look like credentials but may enter a context (`[secrets] allow`).
    pub allow: &'a crate::secrets::Allow,
}

/// The normalised mode of an entry, as it is hashed and as it is put in the tar stream.
pub fn normal_mode(stat: &FileStat) -> u32 {
    if stat.is_symlink() {
        0o777
    } else if stat.is_dir() || stat.mode & 0o100 != 0 {
        0o755
    } else {
        0o644
    }
}

/// One piece of listing work, shared by every service that needs it.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Unit {
    /// A directory and everything below it, filtered by an ignore file.
    Walk { dir: String, ignore: Option<String> },
    /// One file or symlink (already checked against the ignore file of the service that needs
    /// it).
    File(String),
}

/// One service to list: its Dockerfile, parsed for this build, and what it reads.
#[derive(Debug)]
pub struct ServiceInput<'a> {
    pub service: usize,
    pub dockerfile: Arc<Dockerfile>,
    pub reads: &'a Reads,
}

/// Reads and parses the Dockerfile of each of `services` (through symlinks that stay in the root),
/// as a build with its build arguments (`build_args(service)`) sees it. Failures are per service.
#[allow(clippy::type_complexity)]
pub fn load_dockerfiles(
    ws: &Workspace,
    root: &Root,
    services: &[usize],
    build_args: &(dyn Fn(usize) -> std::collections::BTreeMap<String, String> + Sync),
) -> (HashMap<usize, Arc<Dockerfile>>, Vec<(usize, Error)>) {
    let results: Vec<(usize, Result<Arc<Dockerfile>>)> = services
        .par_iter()
        .map(|&s| {
            let df_path = ws.root.join(&ws.services[s].dockerfile);
            let read = || -> Result<Arc<Dockerfile>> {
                let bytes = read_beneath(root, &ws.services[s].dockerfile)?;
                let text = String::from_utf8(bytes).map_err(|_| {
                    Error::Other(format!("`{}` is not UTF-8 text", df_path.display()))
                })?;
                let df = Dockerfile::parse(&df_path, &text)?;
                Ok(Arc::new(df.with_build_args(&df_path, &build_args(s))?))
            };
            (s, read())
        })
        .collect();
    let mut ok = HashMap::new();
    let mut failed = Vec::new();
    for (s, r) in results {
        match r {
            Ok(d) => {
                ok.insert(s, d);
            }
            Err(e) => failed.push((s, e)),
        }
    }
    (ok, failed)
}

/// The bytes of the file at `rel`, following symlinks that stay in the root (in userland).
pub fn read_beneath(root: &Root, rel: &str) -> Result<Vec<u8>> {
    let ignore = DockerIgnore::empty();
    let rules = Rules {
        ignore: &ignore,
        hidden: &[],
    };
    let mut links = Vec::new();
    let abs = root.path().join(rel);
    match resolve::resolve(root, rel, rules, &mut links) {
        Ok((real, resolve::Kind::File)) => root.read(&real).map_err(|e| Error::io("read", &abs, e)),
        Ok(_) => Err(Error::Other(format!("`{}` is not a file", abs.display()))),
        Err(SelectError::Outside { link, target }) => Err(Error::SymlinkOutsideRoot {
            path: root.path().join(link),
            target,
        }),
        Err(SelectError::Io { error, .. }) => Err(Error::io("read", &abs, error)),
        Err(_) => Err(Error::io(
            "read",
            &abs,
            std::io::Error::from(std::io::ErrorKind::NotFound),
        )),
    }
}

/// The error for a source that cannot be resolved, naming the Dockerfile and line.
fn select_error(
    root: &Root,
    dockerfile: &str,
    ignore_file: Option<&str>,
    source: &crate::sources::SourceRef,
    e: SelectError,
) -> Error {
    let df = root.path().join(dockerfile);
    let line = source.line;
    let src = &source.written;
    match e {
        SelectError::Missing { .. } => Error::MissingCopySource {
            dockerfile: df,
            line,
            source_path: src.clone(),
        },
        SelectError::Excluded { path } => Error::Other(format!(
            "`{}` copies `{src}` (line {line}), but `{}` leaves `{path}` out of the build context, so `docker build` would not find it\n  hint: add `!{path}` to `{}`, or stop copying it",
            df.display(),
            ignore_file.unwrap_or(".dockerignore"),
            ignore_file.unwrap_or(".dockerignore"),
        )),
        SelectError::Outside { link, target } => Error::SymlinkOutsideRoot {
            path: root.path().join(link),
            target,
        },
        SelectError::Loop { link } => Error::Other(format!(
            "`{}` copies `{src}` (line {line}), but the symlinks from `{}` loop\n  hint: fix the link",
            df.display(),
            root.path().join(link).display()
        )),
        SelectError::Hidden { path } => Error::Other(format!(
            "`{}` copies `{src}` (line {line}), which is the engine's own `{path}` (its cache directory or `images.toml`): never part of a build context\n  hint: copy something else, or move the cache directory out with `--cache-dir`",
            df.display()
        )),
        SelectError::Io { path, error } => Error::io("read", root.path().join(path), error),
    }
}

/// Lists and hashes every service's context: resolves its sources, walks each distinct
/// directory once (in parallel), applies the ignore rules, answers digests from the stat cache or
/// reads the files, prunes the lockfile. `hidden`: paths never in a context (the cache directory,
/// when inside the root).
pub fn list(
    ws: &Workspace,
    root: &Root,
    inputs: &[ServiceInput<'_>],
    hidden: &[String],
    with: HashWith<'_>,
) -> Listing {
    let mut listing = Listing::default();
    let mut hidden: Vec<String> = hidden.to_vec();
    hidden.extend(walk::ENGINE_FILES.iter().map(|f| f.to_string()));
    let hidden = hidden.as_slice();

    // Ignore files, once each.
    let mut ignores: HashMap<Option<String>, std::result::Result<Arc<DockerIgnore>, String>> =
        HashMap::new();
    struct Plan<'a> {
        service: usize,
        dockerfile: Arc<Dockerfile>,
        ignore_file: Option<String>,
        units: Vec<usize>,
        covers: BTreeSet<String>,
        _input: std::marker::PhantomData<&'a ()>,
    }
    let mut plans: Vec<Plan<'_>> = Vec::new();
    let mut units: Vec<Unit> = Vec::new();
    let mut unit_index: HashMap<Unit, usize> = HashMap::new();
    let mut add = |u: Unit, mine: &mut Vec<usize>| {
        let next = units.len();
        let i = *unit_index.entry(u.clone()).or_insert(next);
        if i == next {
            units.push(u);
        }
        mine.push(i);
    };
    for input in inputs {
        let s = input.service;
        let svc = &ws.services[s];
        // `<Dockerfile>.dockerignore`, else the root's `.dockerignore` (read through symlinks
        // that stay in the root, as Docker reads it).
        let specific = format!("{}.dockerignore", svc.dockerfile);
        let exists = |rel: &str| {
            let empty = DockerIgnore::empty();
            let rules = Rules {
                ignore: &empty,
                hidden: &[],
            };
            matches!(
                resolve::resolve(root, rel, rules, &mut Vec::new()),
                Ok((_, resolve::Kind::File)) | Err(SelectError::Outside { .. })
            )
        };
        let ignore_file = if exists(&specific) {
            Some(specific)
        } else if exists(".dockerignore") {
            Some(".dockerignore".to_string())
        } else {
            None
        };
        let ignore = ignores
            .entry(ignore_file.clone())
            .or_insert_with(|| match &ignore_file {
                Some(f) => {
                    let p = root.path().join(f);
                    read_beneath(root, f)
                        .map_err(|e| e.to_string())
                        .and_then(|b| {
                            DockerIgnore::parse(&p, &String::from_utf8_lossy(&b))
                                .map_err(|e| e.to_string())
                        })
                        .map(Arc::new)
                }
                None => Ok(Arc::new(DockerIgnore::empty())),
            })
            .clone();
        let ignore = match ignore {
            Ok(i) => i,
            Err(e) => {
                listing.failed.push((s, Error::Other(e)));
                continue;
            }
        };
        let rules = Rules {
            ignore: &ignore,
            hidden,
        };
        let mut sel = Selection::default();
        let mut failed = None;
        for src in &input.reads.sources {
            if let Err(e) = resolve::select(root, &src.path, rules, &mut sel) {
                failed = Some(select_error(
                    root,
                    &svc.dockerfile,
                    ignore_file.as_deref(),
                    src,
                    e,
                ));
                break;
            }
        }
        // The Dockerfile: the builder reads it whatever the ignore file says.
        let no_ignore = DockerIgnore::empty();
        let mut df_links = Vec::new();
        let df_rules = Rules {
            ignore: &no_ignore,
            hidden: &[],
        };
        match resolve::resolve(root, &svc.dockerfile, df_rules, &mut df_links) {
            Ok((real, _)) => {
                sel.entries.extend(df_links);
                sel.entries.insert(real);
            }
            Err(e) => {
                failed.get_or_insert_with(|| {
                    Error::Other(format!(
                        "cannot read `{}`: {e:?}",
                        root.path().join(&svc.dockerfile).display()
                    ))
                });
            }
        }
        if let Some(e) = failed {
            listing.failed.push((s, e));
            continue;
        }
        let under = |t: &str| t == "." || svc.dockerfile.starts_with(&format!("{t}/"));
        let patterns = input.reads.sources.iter().filter_map(|src| {
            let p = resolve::clean(&src.path);
            resolve::has_wildcards(&p).then(|| {
                p.split('/')
                    .take_while(|c| !resolve::has_wildcards(c))
                    .collect::<Vec<_>>()
                    .join("/")
            })
        });
        let copied = sel.trees.iter().any(|t| under(t))
            || patterns
                .map(|p| if p.is_empty() { ".".to_string() } else { p })
                .any(|p| under(&p));
        if ignore.is_excluded(&svc.dockerfile) && copied {
            listing.warnings.push(format!(
                "`{}` excludes `{}`, which the Dockerfile's sources would copy: the engine must send the Dockerfile to the builder, so the image holds it where `docker build` leaves it out",
                ignore_file.as_deref().unwrap_or(".dockerignore"),
                svc.dockerfile
            ));
        }
        let mut mine = Vec::new();
        for t in &sel.trees {
            add(
                Unit::Walk {
                    dir: t.clone(),
                    ignore: ignore_file.clone(),
                },
                &mut mine,
            );
        }
        for e in &sel.entries {
            // A file a walk of this context already lists needs no unit of its own.
            let in_tree = sel
                .trees
                .iter()
                .any(|t| t == "." || e.starts_with(&format!("{t}/")));
            if !in_tree || *e == svc.dockerfile {
                add(Unit::File(e.clone()), &mut mine);
            }
        }
        plans.push(Plan {
            service: s,
            dockerfile: input.dockerfile.clone(),
            ignore_file,
            units: mine,
            covers: sel.covers,
            _input: std::marker::PhantomData,
        });
    }

    // Run every unit once: in parallel, each hashing what the stat cache cannot answer.
    let run = |u: &Unit| -> Result<Vec<Found>> {
        match u {
            Unit::Walk { dir, ignore } => {
                let ignore = match ignores.get(ignore) {
                    Some(Ok(i)) => i.clone(),
                    _ => Arc::new(DockerIgnore::empty()),
                };
                let rules = Rules {
                    ignore: &ignore,
                    hidden,
                };
                walk::walk(root, dir, rules, with)
            }
            Unit::File(f) => {
                let empty = DockerIgnore::empty();
                let rules = Rules {
                    ignore: &empty,
                    hidden,
                };
                walk::one(root, f, rules, with).map(|f| vec![f])
            }
        }
    };
    let found: Vec<Result<Vec<Found>>> = if with.parallel {
        units.par_iter().map(run).collect()
    } else {
        units.iter().map(run).collect()
    };
    let mut unit_error: HashMap<usize, String> = HashMap::new();
    let found: Vec<Vec<Found>> = found
        .into_iter()
        .enumerate()
        .map(|(u, r)| match r {
            Ok(f) => f,
            Err(e) => {
                unit_error.insert(u, e.to_string());
                Vec::new()
            }
        })
        .collect();

    // Merge the units' sorted entries into one table; each unit's entries become indices into it.
    let mut unit_ids: Vec<Vec<u32>> = found.iter().map(|f| Vec::with_capacity(f.len())).collect();
    let mut heap: BinaryHeap<Reverse<(&str, usize, usize)>> = found
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.is_empty())
        .map(|(u, f)| Reverse((&*f[0].path, u, 0)))
        .collect();
    // Units are mostly disjoint runs of paths: take each run while it stays below the next one.
    while let Some(Reverse((_, u, mut i))) = heap.pop() {
        let bound: Option<&str> = heap.peek().map(|Reverse((p, _, _))| *p);
        let run = &found[u];
        loop {
            let f = &run[i];
            let same = listing.files.last().is_some_and(|l| l.path == f.path);
            if !same {
                if !f.stat.is_dir() {
                    listing.stats.files += 1;
                }
                if let Some(n) = f.read {
                    listing.stats.hashed += 1;
                    listing.stats.bytes_read += n;
                }
                listing.files.push(ListedFile {
                    path: f.path.clone(),
                    stat: f.stat,
                    digest: f.digest,
                    hashed: f.read.is_some(),
                    secret: f.secret,
                });
            }
            unit_ids[u].push((listing.files.len() - 1) as u32);
            i += 1;
            match run.get(i) {
                None => break,
                Some(next) if bound.is_some_and(|b| &*next.path > b) => {
                    heap.push(Reverse((&*next.path, u, i)));
                    break;
                }
                Some(_) => {}
            }
        }
    }
    let lockfile_id = listing
        .files
        .binary_search_by(|f| (*f.path).cmp(LOCKFILE))
        .ok()
        .filter(|&i| !listing.files[i].stat.is_symlink() && !listing.files[i].stat.is_dir())
        .map(|i| i as u32);

    // Each context's entries; a context holding the lockfile gets its pruning to the workspace
    // packages it holds (each distinct set pruned once, in parallel).
    let manifests: HashMap<String, &str> = ws
        .packages
        .iter()
        .filter(|p| !p.is_root())
        .map(|p| (p.manifest(), p.dir.as_str()))
        .collect();
    let mut per_service: Vec<(Plan<'_>, Vec<u32>, Option<BTreeSet<String>>)> = Vec::new();
    for plan in plans {
        if let Some(e) = plan.units.iter().find_map(|u| unit_error.get(u)) {
            listing.failed.push((plan.service, Error::Other(e.clone())));
            continue;
        }
        let mut files: Vec<u32> = plan
            .units
            .iter()
            .flat_map(|&u| unit_ids[u].iter().copied())
            .collect();
        files.sort_unstable();
        files.dedup();
        // The secret guard: a file that looks like a credential fails the service (the first,
        // in path order), unless `[secrets] allow` lets it in.
        let refused = files.iter().find_map(|&f| {
            let f = &listing.files[f as usize];
            crate::secrets::guard(
                with.allow,
                &ws.services[plan.service].name,
                &f.path,
                f.secret,
            )
            .err()
        });
        if let Some(e) = refused {
            listing.failed.push((plan.service, e));
            continue;
        }
        let mut importers = None;
        if let Some(id) = lockfile_id {
            if let Ok(i) = files.binary_search(&id) {
                files.remove(i);
                let mut set: BTreeSet<String> = BTreeSet::from([".".to_string()]);
                for &f in &files {
                    if let Some(dir) = manifests.get(&*listing.files[f as usize].path) {
                        set.insert(dir.to_string());
                    }
                }
                importers = Some(set);
            }
        }
        per_service.push((plan, files, importers));
    }
    // Check every context's importers against the lockfile, then prune.
    let mut sets: BTreeSet<BTreeSet<String>> = BTreeSet::new();
    let mut ok: Vec<(Plan<'_>, Vec<u32>, Option<BTreeSet<String>>)> = Vec::new();
    for (plan, files, importers) in per_service {
        if let Some(set) = &importers {
            let svc = &ws.services[plan.service];
            let lock = match &ws.lockfile {
                Ok(Some(l)) => l,
                Ok(None) => {
                    // Listed as a file, yet not read at discovery (it appeared since): list again.
                    listing.failed.push((
                        plan.service,
                        Error::Other(format!(
                            "`{}` appeared during the analysis\n  hint: run the command again",
                            root.path().join(LOCKFILE).display()
                        )),
                    ));
                    continue;
                }
                Err(e) => {
                    listing.failed.push((plan.service, Error::Other(e.clone())));
                    continue;
                }
            };
            let known: BTreeSet<String> = lock.importers().into_iter().collect();
            if let Some(missing) = set.iter().find(|i| !known.contains(*i)) {
                listing.failed.push((
                    plan.service,
                    Error::Lockfile {
                        path: root.path().join(LOCKFILE),
                        message: format!(
                            "it has no importer for `{missing}`, whose package.json the context of `{}` holds: `pnpm install --frozen-lockfile` would fail in the build with ERR_PNPM_OUTDATED_LOCKFILE",
                            svc.name
                        ),
                    },
                ));
                continue;
            }
            sets.insert(set.clone());
        }
        ok.push((plan, files, importers));
    }
    let mut pruned: HashMap<BTreeSet<String>, std::result::Result<Arc<Vec<u8>>, String>> =
        HashMap::new();
    if let Ok(Some(lock)) = &ws.lockfile {
        let sets: Vec<(BTreeSet<String>, [u8; 32])> = sets
            .into_iter()
            .map(|set| {
                let key = lock.prune_key(&set);
                (set, key)
            })
            .collect();
        type Made = std::result::Result<(Arc<Vec<u8>>, bool), String>;
        let made: Vec<Made> = sets
            .par_iter()
            .map(|(set, key)| match with.pruned.get(key) {
                Some(bytes) => Ok((bytes, false)),
                None => lock
                    .prune(set)
                    .map(|t| (Arc::new(t.into_bytes()), true))
                    .map_err(|e| e.to_string()),
            })
            .collect();
        for ((set, key), r) in sets.into_iter().zip(made) {
            match r {
                Ok((bytes, now)) => {
                    listing.pruned_now += usize::from(now);
                    listing.prunings.push((key, bytes.clone()));
                    pruned.insert(set, Ok(bytes));
                }
                Err(e) => {
                    pruned.insert(set, Err(e));
                }
            }
        }
    }
    for (plan, files, importers) in ok {
        let pruned_lockfile = match importers.as_ref().map(|set| pruned.get(set)) {
            None => None,
            Some(Some(Ok(bytes))) => Some(bytes.clone()),
            Some(Some(Err(e))) => {
                listing.failed.push((plan.service, Error::Other(e.clone())));
                continue;
            }
            Some(None) => {
                listing.failed.push((
                    plan.service,
                    Error::Other("the lockfile could not be pruned".into()),
                ));
                continue;
            }
        };
        listing.services.push(ServiceListing {
            service: plan.service,
            files,
            dockerignore: plan.ignore_file,
            dockerfile: plan.dockerfile,
            pruned_lockfile,
            covers: plan.covers.into_iter().collect(),
        });
    }
    listing
}

/// Assembles the context of each listed service (in parallel).
pub fn assemble(listing: &Listing) -> Vec<Context> {
    listing
        .services
        .par_iter()
        .map(|sl| {
            let mut files: Vec<ContextFile> = Vec::with_capacity(sl.files.len() + 1);
            files.extend(sl.files.iter().map(|&i| {
                let f = &listing.files[i as usize];
                ContextFile {
                    path: f.path.clone(),
                    mode: normal_mode(&f.stat),
                    symlink: f.stat.is_symlink(),
                    dir: f.stat.is_dir(),
                    size: if f.stat.is_dir() { 0 } else { f.stat.size },
                    digest: f.digest,
                    source: Source::Disk,
                }
            }));
            if let Some(bytes) = &sl.pruned_lockfile {
                let at = files.partition_point(|f| &*f.path < LOCKFILE);
                files.insert(
                    at,
                    ContextFile {
                        path: Arc::from(LOCKFILE),
                        mode: 0o644,
                        symlink: false,
                        dir: false,
                        size: bytes.len() as u64,
                        digest: FileDigest::of_bytes(bytes),
                        source: Source::Virtual(bytes.clone()),
                    },
                );
            }
            let digest = context_digest(&files);
            Context {
                service: sl.service,
                files,
                digest,
                dockerignore: sl.dockerignore.clone(),
                dockerfile: sl.dockerfile.clone(),
                covers: sl.covers.clone(),
            }
        })
        .collect()
}

/// The Merkle digest of a context: every path, its kind and mode, and its content digest, in
/// path order. Versioned, so a change of this encoding changes every key.
pub fn context_digest(files: &[ContextFile]) -> ContextDigest {
    // One buffer, hashed at once: blake3 is much faster on long inputs than on many short ones.
    let mut buf = Vec::with_capacity(16 + files.iter().map(|f| f.path.len() + 45).sum::<usize>());
    buf.extend_from_slice(b"kc-context-v2\0");
    for f in files {
        buf.extend_from_slice(&(f.path.len() as u64).to_le_bytes());
        buf.extend_from_slice(f.path.as_bytes());
        buf.push(match f.kind() {
            EntryKind::File => 0,
            EntryKind::Symlink => 1,
            EntryKind::Dir => 2,
        });
        buf.extend_from_slice(&f.mode.to_le_bytes());
        buf.extend_from_slice(f.digest.as_bytes());
    }
    ContextDigest::of_bytes(&buf)
}
