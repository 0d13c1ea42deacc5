//! Inputs: the build context of each service, decided by the engine (DESIGN.md principles 1, 2).
//!
//! A context holds, with the repository's relative paths kept: the root-level files (the lockfile
//! replaced by its pruning to the closure), the service's package and its transitive workspace
//! dependencies, and any path its Dockerfile names in `COPY`/`ADD`; all filtered by the
//! `.dockerignore` (or `<Dockerfile>.dockerignore`) with Docker's rules. Walks are shared between
//! services, and run in parallel.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;

use crate::digest::{ContextDigest, FileDigest};
use crate::dockerfile::Dockerfile;
use crate::dockerignore::DockerIgnore;
use crate::hash::FileStat;
use crate::workspace::{join_rel, Workspace, LOCKFILE};
use crate::{Error, Result};

/// Where the bytes of a context file come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// The file at this path relative to the root.
    Disk,
    /// Bytes the engine made (the pruned lockfile).
    Virtual(Arc<Vec<u8>>),
}

/// One file (or symlink) of a build context.
#[derive(Debug, Clone)]
pub struct ContextFile {
    /// Relative to the root (and to the context), `/`-separated.
    pub path: String,
    /// Normalised: `0o755` when the owner may execute, `0o644` otherwise (umask-independent);
    /// `0o777` for symlinks.
    pub mode: u32,
    pub symlink: bool,
    pub size: u64,
    pub digest: FileDigest,
    pub source: Source,
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
}

/// What is needed to assemble contexts: the listing of every path once, before hashing.
#[derive(Debug, Default)]
pub struct Listing {
    /// Every disk file of any context: path -> stat.
    pub files: BTreeMap<String, FileStat>,
    /// Per service: the disk paths of its context (sorted), the ignore file, the Dockerfile and
    /// the pruned lockfile (if the root has one).
    pub services: Vec<ServiceListing>,
}

#[derive(Debug)]
pub struct ServiceListing {
    pub service: usize,
    pub paths: Vec<String>,
    pub dockerignore: Option<String>,
    pub dockerfile: Arc<Dockerfile>,
    pub pruned_lockfile: Option<Arc<Vec<u8>>>,
}

/// The normalised mode of a file, as it is hashed and as it is put in the tar stream.
pub fn normal_mode(stat: &FileStat) -> u32 {
    if stat.is_symlink() {
        0o777
    } else if stat.mode & 0o100 != 0 {
        0o755
    } else {
        0o644
    }
}

/// Root files that configure the engine, not the build: never sent to the builder (their effect,
/// such as build arguments, is in the key manifest).
const ENGINE_FILES: &[&str] = &[crate::config::CONFIG_FILE];

#[derive(Clone, PartialEq, Eq, Hash)]
struct WalkKey {
    dir: String,
    ignore: Option<String>,
}

/// Lists every service's context: walks each distinct directory once (in parallel), applies the
/// ignore rules, adds `COPY` sources, prunes the lockfile.
pub fn list(ws: &Workspace, services: &[usize]) -> Result<Listing> {
    let root = ws.root.as_path();
    let package_dirs: HashSet<&str> = ws.packages.iter().map(|p| p.dir.as_str()).collect();

    // Ignore files and Dockerfiles, once each.
    let mut ignores: HashMap<Option<String>, Arc<DockerIgnore>> = HashMap::new();
    let mut plans = Vec::new();
    for &s in services {
        let svc = &ws.services[s];
        let df_path = root.join(&svc.dockerfile);
        let text = std::fs::read_to_string(&df_path).map_err(|e| Error::io("read", &df_path, e))?;
        let dockerfile = Arc::new(Dockerfile::parse(&df_path, &text)?);
        let specific = format!("{}.dockerignore", svc.dockerfile);
        let ignore_file = if root.join(&specific).is_file() {
            Some(specific)
        } else if root.join(".dockerignore").is_file() {
            Some(".dockerignore".to_string())
        } else {
            None
        };
        if !ignores.contains_key(&ignore_file) {
            let matcher = match &ignore_file {
                Some(f) => {
                    let p = root.join(f);
                    let text = std::fs::read_to_string(&p).map_err(|e| Error::io("read", &p, e))?;
                    DockerIgnore::parse(&p, &text)?
                }
                None => DockerIgnore::empty(),
            };
            ignores.insert(ignore_file.clone(), Arc::new(matcher));
        }
        plans.push((s, dockerfile, ignore_file));
    }

    // What to walk: the root's own files, each closure package, and COPY sources outside them.
    let mut per_service: Vec<(usize, Vec<WalkKey>, Vec<String>)> = Vec::new();
    let mut walks: HashSet<WalkKey> = HashSet::new();
    for (s, dockerfile, ignore_file) in &plans {
        let svc = &ws.services[*s];
        let closure = ws.closure(svc.package);
        let mut keys = vec![WalkKey {
            dir: ".".to_string(),
            ignore: ignore_file.clone(),
        }];
        let closure_dirs: Vec<&str> = closure
            .iter()
            .map(|&p| ws.packages[p].dir.as_str())
            .filter(|d| *d != ".")
            .collect();
        for d in &closure_dirs {
            keys.push(WalkKey {
                dir: d.to_string(),
                ignore: ignore_file.clone(),
            });
        }
        let mut extra_files = Vec::new();
        // Patch files pnpm reads at install: part of every context that holds the lockfile.
        for patch in &ws.patch_files {
            let abs = root.join(patch);
            let meta = std::fs::symlink_metadata(&abs)
                .map_err(|e| Error::io("read the patch", &abs, e))?;
            if meta.is_dir() {
                keys.push(WalkKey {
                    dir: patch.clone(),
                    ignore: ignore_file.clone(),
                });
            } else {
                extra_files.push(patch.clone());
            }
        }
        for (src, line) in dockerfile.context_sources() {
            let norm = join_rel(".", src.trim_start_matches('/'));
            if norm == "." {
                continue; // `COPY . .` copies this (pruned) context
            }
            let covered = |p: &str| {
                closure_dirs
                    .iter()
                    .any(|d| p == *d || p.starts_with(&format!("{d}/")))
                    || !p.contains('/')
            };
            if norm.contains(['*', '?', '[']) {
                // A glob: the walk of its literal prefix, filtered later by matching.
                let prefix: Vec<&str> = norm
                    .split('/')
                    .take_while(|s| !s.contains(['*', '?', '[']))
                    .collect();
                let dir = if prefix.is_empty() {
                    ".".to_string()
                } else {
                    prefix.join("/")
                };
                if !covered(&norm) && dir != "." {
                    keys.push(WalkKey {
                        dir,
                        ignore: ignore_file.clone(),
                    });
                }
                continue;
            }
            let abs = root.join(&norm);
            let meta = std::fs::symlink_metadata(&abs).map_err(|_| Error::MissingCopySource {
                dockerfile: root.join(&svc.dockerfile),
                line,
                source_path: src.clone(),
            })?;
            if covered(&norm) {
                continue;
            }
            if meta.is_dir() {
                keys.push(WalkKey {
                    dir: norm,
                    ignore: ignore_file.clone(),
                });
            } else {
                extra_files.push(norm);
            }
        }
        walks.extend(keys.iter().cloned());
        per_service.push((*s, keys, extra_files));
    }

    // Walk each distinct (directory, ignore file) once, in parallel.
    let walks: Vec<WalkKey> = walks.into_iter().collect();
    let results: Vec<(WalkKey, Vec<(String, FileStat)>)> = walks
        .par_iter()
        .map(|k| {
            let ignore = &ignores[&k.ignore];
            walk(root, &k.dir, ignore, &package_dirs).map(|files| (k.clone(), files))
        })
        .collect::<Result<_>>()?;
    let results: HashMap<WalkKey, Vec<(String, FileStat)>> = results.into_iter().collect();

    // Every walked file once (walks of different services overlap: shared packages, the root).
    let mut listing = Listing::default();
    for files in results.values() {
        for (p, st) in files {
            if !listing.files.contains_key(p) {
                listing.files.insert(p.clone(), *st);
            }
        }
    }
    let mut pruned_cache: HashMap<BTreeSet<String>, Arc<Vec<u8>>> = HashMap::new();
    for ((s, keys, extra_files), (_, dockerfile, ignore_file)) in per_service.into_iter().zip(plans)
    {
        let svc = &ws.services[s];
        let ignore = &ignores[&ignore_file];
        let mut paths: Vec<String> = keys
            .iter()
            .flat_map(|k| results[k].iter().map(|(p, _)| p.clone()))
            .collect();
        for f in extra_files {
            if ignore.is_excluded(&f) {
                continue;
            }
            let abs = root.join(&f);
            let meta = std::fs::symlink_metadata(&abs).map_err(|e| Error::io("read", &abs, e))?;
            check_symlink(root, &f, &meta)?;
            listing
                .files
                .entry(f.clone())
                .or_insert_with(|| FileStat::from_metadata(&meta));
            paths.push(f);
        }
        // Docker sends the Dockerfile whatever the ignore file says.
        if !listing.files.contains_key(&svc.dockerfile) {
            let abs = root.join(&svc.dockerfile);
            let meta = std::fs::symlink_metadata(&abs).map_err(|e| Error::io("read", &abs, e))?;
            listing
                .files
                .insert(svc.dockerfile.clone(), FileStat::from_metadata(&meta));
        }
        paths.push(svc.dockerfile.clone());
        paths.sort_unstable();
        paths.dedup();
        // The lockfile is replaced by its pruning to the closure's importers.
        let mut pruned_lockfile = None;
        if let Some(lock) = &ws.lockfile {
            if let Ok(i) = paths.binary_search_by(|p| p.as_str().cmp(LOCKFILE)) {
                paths.remove(i);
                let importers: BTreeSet<String> = ws
                    .closure(svc.package)
                    .into_iter()
                    .map(|p| ws.packages[p].dir.clone())
                    .chain(std::iter::once(".".to_string()))
                    .collect();
                let bytes = match pruned_cache.get(&importers) {
                    Some(b) => b.clone(),
                    None => {
                        let b = Arc::new(lock.prune(&importers)?.into_bytes());
                        pruned_cache.insert(importers, b.clone());
                        b
                    }
                };
                pruned_lockfile = Some(bytes);
            }
        }
        listing.services.push(ServiceListing {
            service: s,
            paths,
            dockerignore: ignore_file,
            dockerfile,
            pruned_lockfile,
        });
    }
    // Glob COPY sources were walked from their prefix; nothing more to do: a walk of a prefix
    // dir includes every file that the glob can match, and the builder applies the glob itself.
    Ok(listing)
}

/// Lists the files below `dir` (or only the root's own files when `dir` is `.`), skipping ignored
/// paths and nested workspace packages (they are walked on their own when in a closure).
fn walk(
    root: &Path,
    dir: &str,
    ignore: &DockerIgnore,
    package_dirs: &HashSet<&str>,
) -> Result<Vec<(String, FileStat)>> {
    let mut out = Vec::new();
    let top_only = dir == ".";
    let mut stack = vec![(dir.to_string(), ignore.dir_state(dir))];
    while let Some((rel, state)) = stack.pop() {
        let abs = if rel == "." {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        let entries = std::fs::read_dir(&abs).map_err(|e| Error::io("read directory", &abs, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("read directory", &abs, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                return Err(Error::Other(format!(
                    "`{}` has a name that is not UTF-8\n  hint: rename it; image contexts need portable names",
                    entry.path().display()
                )));
            };
            let child = if rel == "." {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            let ft = entry
                .file_type()
                .map_err(|e| Error::io("read", entry.path(), e))?;
            if ft.is_dir() {
                if top_only || package_dirs.contains(child.as_str()) {
                    continue;
                }
                let (excluded, child_state) = ignore.check_in(&state, &child);
                if excluded && !ignore.may_reinclude_below(&child) {
                    continue;
                }
                stack.push((child, child_state));
                continue;
            }
            if ignore.check_in(&state, &child).0 || (top_only && ENGINE_FILES.contains(&name)) {
                continue;
            }
            let meta = entry
                .metadata()
                .map_err(|e| Error::io("read", entry.path(), e))?;
            check_symlink(root, &child, &meta)?;
            if !(ft.is_file() || ft.is_symlink()) {
                continue; // sockets, fifos and devices are not context files
            }
            out.push((child, FileStat::from_metadata(&meta)));
        }
    }
    Ok(out)
}

fn check_symlink(root: &Path, rel: &str, meta: &std::fs::Metadata) -> Result<()> {
    if !meta.file_type().is_symlink() {
        return Ok(());
    }
    let abs = root.join(rel);
    let target = std::fs::read_link(&abs).map_err(|e| Error::io("read link", &abs, e))?;
    let t = target.to_string_lossy();
    let inside = if target.is_absolute() {
        target.starts_with(root)
    } else {
        let parent = rel.rsplit_once('/').map(|(a, _)| a).unwrap_or(".");
        // Lexically: count how far `..` climbs.
        let mut depth: i64 = if parent == "." {
            0
        } else {
            parent.split('/').count() as i64
        };
        let mut ok = true;
        for seg in t.split('/') {
            match seg {
                "" | "." => {}
                ".." => {
                    depth -= 1;
                    if depth < 0 {
                        ok = false;
                        break;
                    }
                }
                _ => depth += 1,
            }
        }
        ok
    };
    if inside {
        Ok(())
    } else {
        Err(Error::SymlinkOutsideRoot { path: abs, target })
    }
}

/// Assembles the context of each listed service from the digests of the listing's files.
pub fn assemble(listing: &Listing, digests: &HashMap<&str, FileDigest>) -> Vec<Context> {
    listing
        .services
        .iter()
        .map(|sl| {
            let mut files: Vec<ContextFile> = sl
                .paths
                .iter()
                .map(|p| {
                    let st = &listing.files[p];
                    ContextFile {
                        path: p.clone(),
                        mode: normal_mode(st),
                        symlink: st.is_symlink(),
                        size: st.size,
                        digest: digests[p.as_str()],
                        source: Source::Disk,
                    }
                })
                .collect();
            if let Some(bytes) = &sl.pruned_lockfile {
                files.push(ContextFile {
                    path: LOCKFILE.to_string(),
                    mode: 0o644,
                    symlink: false,
                    size: bytes.len() as u64,
                    digest: FileDigest::of_bytes(bytes),
                    source: Source::Virtual(bytes.clone()),
                });
                files.sort_by(|a, b| a.path.cmp(&b.path));
            }
            let digest = context_digest(&files);
            Context {
                service: sl.service,
                files,
                digest,
                dockerignore: sl.dockerignore.clone(),
                dockerfile: sl.dockerfile.clone(),
            }
        })
        .collect()
}

/// The Merkle digest of a context: every path, its kind and mode, and its content digest, in
/// path order. Versioned, so a change of this encoding changes every key.
pub fn context_digest(files: &[ContextFile]) -> ContextDigest {
    let mut h = blake3::Hasher::new();
    h.update(b"kc-context-v1\0");
    for f in files {
        h.update(&(f.path.len() as u64).to_le_bytes());
        h.update(f.path.as_bytes());
        h.update(&[u8::from(f.symlink)]);
        h.update(&f.mode.to_le_bytes());
        h.update(f.digest.as_bytes());
    }
    ContextDigest::from_hash(h.finalize())
}
