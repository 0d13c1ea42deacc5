//! Inputs: the build context of each service, decided by the engine (DESIGN.md principles 1, 2).
//!
//! A context holds, with the repository's relative paths kept: the root-level files (the lockfile
//! replaced by its pruning to the closure), the service's package and its transitive workspace
//! dependencies, and any path its Dockerfile names in `COPY`/`ADD`; all filtered by the
//! `.dockerignore` (or `<Dockerfile>.dockerignore`) with Docker's rules.
//!
//! Listing and hashing are one parallel pass: each distinct (directory, ignore file) is walked once
//! for all the services that share it, and each walk answers its files' digests from the stat cache
//! or reads them right away, so reading overlaps walking. The walks are then merged into one sorted
//! table of files; a context is a sorted list of indices into it, so a shared package's files exist
//! once however many contexts hold them.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;

use crate::digest::{ContextDigest, FileDigest};
use crate::dockerfile::Dockerfile;
use crate::dockerignore::DockerIgnore;
use crate::hash::{self, FileStat, HashStats, StatCache};
use crate::prunecache::PruneCache;
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
    /// Relative to the root (and to the context), `/`-separated. Shared with the listing and
    /// every other context holding the file.
    pub path: Arc<str>,
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

/// One disk file of at least one context, with its digest.
#[derive(Debug, Clone)]
pub struct ListedFile {
    pub path: Arc<str>,
    pub stat: FileStat,
    pub digest: FileDigest,
    /// Read and hashed by this listing (the stat cache could not answer).
    pub hashed: bool,
}

/// Every listed service's context, before assembly: one table of files, and per service the
/// indices of its files.
#[derive(Debug, Default)]
pub struct Listing {
    /// Every disk file of any listed context, once, sorted by path.
    pub files: Vec<ListedFile>,
    /// Per service: its files, the ignore file, the Dockerfile and the pruned lockfile.
    pub services: Vec<ServiceListing>,
    /// Files listed, read and hashed (each distinct file counted once).
    pub stats: HashStats,
    /// Every pruned lockfile of this listing by its prune key, and how many were pruned now (not
    /// found in [`HashWith::pruned`]).
    pub prunings: Vec<([u8; 32], Arc<Vec<u8>>)>,
    pub pruned_now: usize,
}

#[derive(Debug)]
pub struct ServiceListing {
    pub service: usize,
    /// Indices into [`Listing::files`], ascending (so in path order); the disk files of the
    /// context, without the lockfile (replaced by `pruned_lockfile`).
    pub files: Vec<u32>,
    pub dockerignore: Option<String>,
    pub dockerfile: Arc<Dockerfile>,
    pub pruned_lockfile: Option<Arc<Vec<u8>>>,
}

impl Listing {
    /// The paths of one service's disk files, in order.
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

/// One piece of listing work, shared by every service that needs it.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Unit {
    /// The files below a directory (only the root's own files for `.`), filtered by an ignore file.
    Walk { dir: String, ignore: Option<String> },
    /// One file, already checked against the ignore file of the service that needs it.
    File(String),
}

/// A file found by one unit, with its digest.
struct Found {
    path: Arc<str>,
    stat: FileStat,
    digest: FileDigest,
    /// Bytes read to hash it; `None` when the stat cache answered.
    read: Option<u64>,
}

/// Parses the Dockerfile of each of `services`.
pub fn load_dockerfiles(
    ws: &Workspace,
    services: &[usize],
) -> Result<HashMap<usize, Arc<Dockerfile>>> {
    services
        .par_iter()
        .map(|&s| {
            let df_path = ws.root.join(&ws.services[s].dockerfile);
            let text =
                std::fs::read_to_string(&df_path).map_err(|e| Error::io("read", &df_path, e))?;
            Ok((s, Arc::new(Dockerfile::parse(&df_path, &text)?)))
        })
        .collect()
}

/// Lists and hashes every service's context: walks each distinct directory once (in parallel),
/// applies the ignore rules, adds `COPY` sources, answers digests from the stat cache or reads the
/// files, prunes the lockfile. `dockerfiles` holds (at least) the Dockerfile of each of `services`
/// (see [`load_dockerfiles`]).
pub fn list(
    ws: &Workspace,
    services: &[usize],
    dockerfiles: &HashMap<usize, Arc<Dockerfile>>,
    with: HashWith<'_>,
) -> Result<Listing> {
    let root = ws.root.as_path();
    let package_dirs: HashSet<&str> = ws.packages.iter().map(|p| p.dir.as_str()).collect();

    // Ignore files, once each.
    let mut ignores: HashMap<Option<String>, Arc<DockerIgnore>> = HashMap::new();
    let mut plans = Vec::new();
    for &s in services {
        let svc = &ws.services[s];
        let dockerfile = match dockerfiles.get(&s) {
            Some(d) => d.clone(),
            None => load_dockerfiles(ws, &[s])?
                .remove(&s)
                .ok_or_else(|| Error::Other(format!("no Dockerfile for `{}`", svc.name)))?,
        };
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

    // What to list: the root's own files, each closure package, COPY sources outside them, patch
    // files, and the Dockerfile (Docker sends it whatever the ignore file says).
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
    let mut per_service: Vec<Vec<usize>> = Vec::new();
    for (s, dockerfile, ignore_file) in &plans {
        let svc = &ws.services[*s];
        let ignore = &ignores[ignore_file];
        let walk = |dir: String| Unit::Walk {
            dir,
            ignore: ignore_file.clone(),
        };
        let mut mine = Vec::new();
        let closure = ws.closure(svc.package);
        add(walk(".".to_string()), &mut mine);
        let closure_dirs: Vec<&str> = closure
            .iter()
            .map(|&p| ws.packages[p].dir.as_str())
            .filter(|d| *d != ".")
            .collect();
        for d in &closure_dirs {
            add(walk(d.to_string()), &mut mine);
        }
        let mut extra_files = Vec::new();
        // Patch files pnpm reads at install: part of every context that holds the lockfile.
        for patch in &ws.patch_files {
            let abs = root.join(patch);
            let meta = std::fs::symlink_metadata(&abs)
                .map_err(|e| Error::io("read the patch", &abs, e))?;
            if meta.is_dir() {
                add(walk(patch.clone()), &mut mine);
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
                // A glob: the walk of its literal prefix (the builder applies the glob itself).
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
                    add(walk(dir), &mut mine);
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
                add(walk(norm), &mut mine);
            } else {
                extra_files.push(norm);
            }
        }
        for f in extra_files {
            if !ignore.is_excluded(&f) {
                add(Unit::File(f), &mut mine);
            }
        }
        add(Unit::File(svc.dockerfile.clone()), &mut mine);
        per_service.push(mine);
    }

    // Run every unit once: in parallel, each hashing what the stat cache cannot answer.
    let run = |u: &Unit| -> Result<Vec<Found>> {
        let listed = match u {
            Unit::Walk { dir, ignore } => {
                return walk(root, dir, &ignores[ignore], &package_dirs, with)
            }
            Unit::File(f) => {
                let abs = root.join(f);
                let meta =
                    std::fs::symlink_metadata(&abs).map_err(|e| Error::io("read", &abs, e))?;
                check_symlink(root, f, &meta)?;
                (f.clone(), FileStat::from_metadata(&meta))
            }
        };
        digest_one(root, listed, with)
    };
    let found: Vec<Vec<Found>> = if with.parallel {
        units.par_iter().map(run).collect::<Result<_>>()?
    } else {
        units.iter().map(run).collect::<Result<_>>()?
    };

    // Merge the units' sorted files into one table; each unit's files become indices into it.
    let mut listing = Listing::default();
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
                listing.stats.files += 1;
                if let Some(n) = f.read {
                    listing.stats.hashed += 1;
                    listing.stats.bytes_read += n;
                }
                listing.files.push(ListedFile {
                    path: f.path.clone(),
                    stat: f.stat,
                    digest: f.digest,
                    hashed: f.read.is_some(),
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
        .map(|i| i as u32);

    // The lockfile is replaced by its pruning to the closure's importers: each distinct set of
    // importers pruned once, in parallel.
    let importers_of = |s: usize| -> BTreeSet<String> {
        ws.closure(ws.services[s].package)
            .into_iter()
            .map(|p| ws.packages[p].dir.clone())
            .chain(std::iter::once(".".to_string()))
            .collect()
    };
    let mut pruned: HashMap<BTreeSet<String>, Option<Arc<Vec<u8>>>> = HashMap::new();
    if let (Some(lock), Some(_)) = (&ws.lockfile, lockfile_id) {
        for (s, _, _) in &plans {
            pruned.entry(importers_of(*s)).or_insert(None);
        }
        // Found in the cache, or pruned now (in parallel).
        let sets: Vec<(&BTreeSet<String>, [u8; 32])> = pruned
            .keys()
            .map(|set| (set, lock.prune_key(set)))
            .collect();
        let made: Vec<(Arc<Vec<u8>>, bool)> = sets
            .par_iter()
            .map(|(set, key)| match with.pruned.get(key) {
                Some(bytes) => Ok((bytes, false)),
                None => lock.prune(set).map(|t| (Arc::new(t.into_bytes()), true)),
            })
            .collect::<Result<_>>()?;
        let sets: Vec<(BTreeSet<String>, [u8; 32])> =
            sets.into_iter().map(|(s, k)| (s.clone(), k)).collect();
        for ((set, key), (bytes, now)) in sets.into_iter().zip(made) {
            listing.pruned_now += usize::from(now);
            listing.prunings.push((key, bytes.clone()));
            pruned.insert(set, Some(bytes));
        }
    }
    for (mine, (s, dockerfile, ignore_file)) in per_service.into_iter().zip(plans) {
        let mut files: Vec<u32> = mine
            .iter()
            .flat_map(|&u| unit_ids[u].iter().copied())
            .collect();
        files.sort_unstable();
        files.dedup();
        let mut pruned_lockfile = None;
        if let (Some(_), Some(id)) = (&ws.lockfile, lockfile_id) {
            if let Ok(i) = files.binary_search(&id) {
                files.remove(i);
                pruned_lockfile = pruned.get(&importers_of(s)).cloned().flatten();
            }
        }
        listing.services.push(ServiceListing {
            service: s,
            files,
            dockerignore: ignore_file,
            dockerfile,
            pruned_lockfile,
        });
    }
    Ok(listing)
}

/// One file named on its own (not walked): its digest, from the stat cache or read now.
fn digest_one(
    root: &Path,
    (path, stat): (String, FileStat),
    with: HashWith<'_>,
) -> Result<Vec<Found>> {
    let (digest, read) = match with.cache.lookup(&path, &stat) {
        Some(d) => (d, None),
        None => {
            let abs = root.join(&path);
            let (d, n) = hash::hash_path(&abs, &stat).map_err(|e| Error::io("read", abs, e))?;
            (d, Some(n))
        }
    };
    Ok(vec![Found {
        path: Arc::from(path),
        stat,
        digest,
        read,
    }])
}

/// What one walk needs, shared by its directory tasks.
struct Walker<'a> {
    root: &'a Path,
    ignore: &'a DockerIgnore,
    package_dirs: &'a HashSet<&'a str>,
    with: HashWith<'a>,
    /// Only the directory's own files (the root's).
    top_only: bool,
}

/// Lists and hashes the files below `dir` (or only the root's own files when `dir` is `.`),
/// skipping ignored paths and nested workspace packages (they are walked on their own when in a
/// closure). Directories are read and files opened relative to their directory's descriptor (one
/// path component to resolve, not the whole path), subdirectories in parallel; a file the stat
/// cache has no entry for is opened and `fstat`ed at once (no separate `lstat`), and read for
/// exactly its size. Sorted by path.
fn walk(
    root: &Path,
    dir: &str,
    ignore: &DockerIgnore,
    package_dirs: &HashSet<&str>,
    with: HashWith<'_>,
) -> Result<Vec<Found>> {
    let w = Walker {
        root,
        ignore,
        package_dirs,
        with,
        top_only: dir == ".",
    };
    let abs = if dir == "." {
        root.to_path_buf()
    } else {
        root.join(dir)
    };
    // The walk's own directory is opened as `read_dir` would (through a symlink, as a root given
    // through one); directories found in the walk are opened without following (they were
    // directories when listed).
    let fd = rustix::fs::openat(
        rustix::fs::CWD,
        &abs,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| Error::io("read directory", &abs, e.into()))?;
    let mut chunks = Vec::new();
    w.dir(fd, dir.to_string(), ignore.dir_state(dir), &mut chunks)?;
    // The chunks come in path order (see `Walker::dir`): no sort of the whole walk.
    let mut out: Vec<Found> = Vec::with_capacity(chunks.iter().map(Vec::len).sum());
    for c in chunks {
        out.extend(c);
    }
    debug_assert!(out.is_sorted_by(|a, b| a.path < b.path));
    Ok(out)
}

/// Where a file's path sorts against the files below a directory: as against `dir/`.
fn cmp_with_dir(file: &str, dir: &str) -> std::cmp::Ordering {
    file.bytes().cmp(dir.bytes().chain(std::iter::once(b'/')))
}

fn open_dir<Fd: rustix::fd::AsFd, P: rustix::path::Arg>(
    at: Fd,
    path: P,
) -> std::io::Result<rustix::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    Ok(rustix::fs::openat(
        at,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )?)
}

// The field types of `struct stat` differ between targets: the casts are needed on some.
#[allow(clippy::unnecessary_cast)]
fn stat_of(st: &rustix::fs::Stat) -> FileStat {
    FileStat {
        size: st.st_size as u64,
        mtime_ns: (st.st_mtime as i64).saturating_mul(1_000_000_000) + st.st_mtime_nsec as i64,
        ctime_ns: (st.st_ctime as i64).saturating_mul(1_000_000_000) + st.st_ctime_nsec as i64,
        ino: st.st_ino as u64,
        mode: st.st_mode as u32,
    }
}

impl Walker<'_> {
    /// Walks one directory (`fd`, at `rel`): its files into `out`, its subdirectories in parallel.
    fn dir(
        &self,
        fd: rustix::fd::OwnedFd,
        rel: String,
        state: crate::dockerignore::DirState,
        out: &mut Vec<Vec<Found>>,
    ) -> Result<()> {
        use rustix::fs::{AtFlags, FileType};
        let abs = || {
            if rel == "." {
                self.root.to_path_buf()
            } else {
                self.root.join(&rel)
            }
        };
        let mut dir =
            rustix::fs::Dir::new(fd).map_err(|e| Error::io("read directory", abs(), e.into()))?;
        // Each child's path is built in one buffer after the directory's own `rel/`: a file's
        // path is allocated once, as the shared string it stays.
        let mut child = if rel == "." {
            String::new()
        } else {
            format!("{rel}/")
        };
        let base = child.len();
        let mut files: Vec<(Arc<str>, FileType)> = Vec::new();
        let mut subdirs: Vec<(String, crate::dockerignore::DirState)> = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(|e| Error::io("read directory", abs(), e.into()))?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let Ok(name) = std::str::from_utf8(name) else {
                return Err(Error::Other(format!(
                    "`{}` has a name that is not UTF-8\n  hint: rename it; image contexts need portable names",
                    abs().join(std::ffi::OsStr::from_bytes(name)).display()
                )));
            };
            child.truncate(base);
            child.push_str(name);
            let mut ft = entry.file_type();
            if ft == FileType::Unknown {
                let fd = dir
                    .fd()
                    .map_err(|e| Error::io("read directory", abs(), e.into()))?;
                let st = rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| Error::io("read", self.root.join(&child), e.into()))?;
                ft = FileType::from_raw_mode(st.st_mode as _);
            }
            if ft == FileType::Directory {
                if self.top_only || self.package_dirs.contains(child.as_str()) {
                    continue;
                }
                let (excluded, child_state) = self.ignore.check_in(&state, &child);
                if excluded && !self.ignore.may_reinclude_below(&child) {
                    continue;
                }
                subdirs.push((child.clone(), child_state));
                continue;
            }
            if self.ignore.is_excluded_in(&state, &child)
                || (self.top_only && ENGINE_FILES.contains(&name))
            {
                continue;
            }
            if !(ft == FileType::RegularFile || ft == FileType::Symlink) {
                continue; // sockets, fifos and devices are not context files
            }
            files.push((Arc::from(child.as_str()), ft));
        }
        let dfd = dir
            .fd()
            .map_err(|e| Error::io("read directory", abs(), e.into()))?;
        // In path order: a directory's files sort among the others as `name/` does.
        files.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        subdirs.sort_unstable_by(|a, b| {
            let slash = std::iter::once(b'/');
            (a.0.bytes().chain(slash.clone())).cmp(b.0.bytes().chain(slash))
        });
        let mut found = Vec::with_capacity(files.len());
        for (path, ft) in files {
            found.push(self.file(dfd, base, path, ft)?);
        }
        let sub = |(child, st): (String, crate::dockerignore::DirState)| {
            let fd = open_dir(dfd, &child[base..])
                .map_err(|e| Error::io("read directory", self.root.join(&child), e))?;
            let mut chunks = Vec::new();
            self.dir(fd, child, st, &mut chunks)?;
            Ok(chunks)
        };
        let names: Vec<String> = subdirs.iter().map(|(c, _)| c.clone()).collect();
        let nested: Vec<Vec<Vec<Found>>> = if self.with.parallel && subdirs.len() > 1 {
            subdirs.into_par_iter().map(sub).collect::<Result<_>>()?
        } else {
            subdirs.into_iter().map(sub).collect::<Result<_>>()?
        };
        // Interleave: the files before each subdirectory, then its chunks.
        let mut files = found.into_iter().peekable();
        for (name, chunks) in names.iter().zip(nested) {
            let mut before = Vec::new();
            while let Some(f) = files.next_if(|f| cmp_with_dir(&f.path, name).is_lt()) {
                before.push(f);
            }
            if !before.is_empty() {
                out.push(before);
            }
            out.extend(chunks);
        }
        let rest: Vec<Found> = files.collect();
        if !rest.is_empty() {
            out.push(rest);
        }
        Ok(())
    }

    /// One file or symlink of a directory: its stat and digest.
    fn file(
        &self,
        dfd: rustix::fd::BorrowedFd<'_>,
        base: usize,
        child: Arc<str>,
        ft: rustix::fs::FileType,
    ) -> Result<Found> {
        let name = &child[base..];
        use rustix::fs::{AtFlags, FileType, Mode, OFlags};
        let io_err = |what: &'static str, e: rustix::io::Errno| {
            Error::io(what, self.root.join(&*child), e.into())
        };
        let cached = self.with.cache.entry(&child);
        if ft == FileType::Symlink {
            let st = rustix::fs::statat(dfd, name, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| io_err("read", e))?;
            let stat = stat_of(&st);
            let target = rustix::fs::readlinkat(dfd, name, Vec::new())
                .map_err(|e| io_err("read link", e))?;
            let target = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(target.as_bytes()));
            check_link_target(self.root, &child, &target)?;
            let (digest, read) = match cached.and_then(|c| self.with.cache.trust(&c, &stat)) {
                Some(d) => (d, None),
                None => {
                    let bytes = target.as_os_str().as_encoded_bytes();
                    (FileDigest::of_bytes(bytes), Some(bytes.len() as u64))
                }
            };
            return Ok(Found {
                path: child,
                stat,
                digest,
                read,
            });
        }
        // A file the cache knows: `lstat` it, and read it only if it changed.
        let mut known = None;
        if let Some(c) = &cached {
            let st = rustix::fs::statat(dfd, name, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| io_err("read", e))?;
            let stat = stat_of(&st);
            if let Some(digest) = self.with.cache.trust(c, &stat) {
                return Ok(Found {
                    path: child,
                    stat,
                    digest,
                    read: None,
                });
            }
            known = Some(stat);
        }
        let fd = rustix::fs::openat(
            dfd,
            name,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NOCTTY,
            Mode::empty(),
        )
        .map_err(|e| io_err("read", e))?;
        let stat = match known {
            Some(s) => s,
            None => stat_of(&rustix::fs::fstat(&fd).map_err(|e| io_err("read", e))?),
        };
        let mut file = std::fs::File::from(fd);
        let (digest, n) = hash::hash_reader(&mut file, stat.size)
            .map_err(|e| Error::io("read", self.root.join(&*child), e))?;
        Ok(Found {
            path: child,
            stat,
            digest,
            read: Some(n),
        })
    }
}

fn check_symlink(root: &Path, rel: &str, meta: &std::fs::Metadata) -> Result<()> {
    if !meta.file_type().is_symlink() {
        return Ok(());
    }
    let abs = root.join(rel);
    let target = std::fs::read_link(&abs).map_err(|e| Error::io("read link", &abs, e))?;
    check_link_target(root, rel, &target)
}

/// A symlink in a context must point inside the root (the builder cannot follow it elsewhere).
fn check_link_target(root: &Path, rel: &str, target: &Path) -> Result<()> {
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
        Err(Error::SymlinkOutsideRoot {
            path: root.join(rel),
            target: target.to_path_buf(),
        })
    }
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
                    size: f.stat.size,
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
            }
        })
        .collect()
}

/// The Merkle digest of a context: every path, its kind and mode, and its content digest, in
/// path order. Versioned, so a change of this encoding changes every key.
pub fn context_digest(files: &[ContextFile]) -> ContextDigest {
    // One buffer, hashed at once: blake3 is much faster on long inputs than on many short ones.
    let mut buf = Vec::with_capacity(16 + files.iter().map(|f| f.path.len() + 45).sum::<usize>());
    buf.extend_from_slice(b"kc-context-v1\0");
    for f in files {
        buf.extend_from_slice(&(f.path.len() as u64).to_le_bytes());
        buf.extend_from_slice(f.path.as_bytes());
        buf.push(u8::from(f.symlink));
        buf.extend_from_slice(&f.mode.to_le_bytes());
        buf.extend_from_slice(f.digest.as_bytes());
    }
    ContextDigest::of_bytes(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A walk comes out in byte order of whole paths, where `a.b/…` sorts before `a/…` and `a/…`
    /// before `a0`: the same order as sorting the paths, in parallel or not.
    #[test]
    fn walks_come_out_in_path_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let files = [
            "a/x", "a/y/z", "a.b/c", "a-c", "a0", "a/", "ab", "a.b.c", "b/a", "b.", "b-/q", "B",
            "_", " s/t",
        ];
        for f in files {
            let f = f.trim_end_matches('/');
            let p = root.join("pkg").join(f);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            if !p.exists() {
                std::fs::write(&p, f).expect("write");
            }
        }
        let mut want: Vec<String> = Vec::new();
        let mut stack = vec![root.join("pkg")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("read_dir") {
                let e = e.expect("entry");
                if e.file_type().expect("type").is_dir() {
                    stack.push(e.path());
                } else {
                    let rel = e
                        .path()
                        .strip_prefix(root)
                        .expect("rel")
                        .to_string_lossy()
                        .into_owned();
                    want.push(rel);
                }
            }
        }
        want.sort();
        let cache = StatCache::new();
        // Also through a symlink to the root (a root given as such a path), and the root's own
        // files through it.
        let elsewhere = tempfile::tempdir().expect("tempdir");
        let link = elsewhere.path().join("link");
        std::os::unix::fs::symlink(root, &link).expect("symlink");
        std::fs::write(root.join("top.txt"), "top").expect("write");
        let top = walk(
            &link,
            ".",
            &DockerIgnore::empty(),
            &HashSet::new(),
            HashWith {
                cache: &cache,
                pruned: &PruneCache::new(),
                parallel: true,
            },
        )
        .expect("walk the root through a symlink");
        let top: Vec<&str> = top.iter().map(|f| &*f.path).collect();
        assert_eq!(top, ["top.txt"]);
        for (root, parallel) in [(root, true), (root, false), (link.as_path(), true)] {
            let got = walk(
                root,
                "pkg",
                &DockerIgnore::empty(),
                &HashSet::new(),
                HashWith {
                    cache: &cache,
                    pruned: &PruneCache::new(),
                    parallel,
                },
            )
            .expect("walk");
            let got: Vec<String> = got.iter().map(|f| f.path.to_string()).collect();
            assert_eq!(got, want, "parallel: {parallel}");
        }
    }
}
