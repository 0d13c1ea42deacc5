//! Walks: the entries below a directory of the root, filtered by `.dockerignore`, each file hashed
//! during the walk (or answered by the stat cache), in path order.
//!
//! Directories are opened relative to their parent's descriptor with `O_NOFOLLOW` (the walk's own
//! directory one component at a time from the root), files opened with `O_NOFOLLOW` and `fstat`ed
//! at once, so no symlink is ever followed: a symlink is an entry of its own (its digest is that
//! of its target's text), and one whose target leaves the root is an error naming it. Directories
//! the ignore rules keep are entries too (Docker sends them, empty or not), and the engine's cache
//! directory and config file never are. Subdirectories are walked in parallel.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;

use crate::context::HashWith;
use crate::digest::FileDigest;
use crate::dockerignore::{DirState, DockerIgnore};
use crate::hash::{self, FileStat};
use crate::resolve::{Root, Rules};
use crate::{Error, Result};

/// Root files that configure the engine, not the build: never sent to the builder (their effect,
/// such as build arguments, is in the key manifest).
pub const ENGINE_FILES: &[&str] = &[crate::config::CONFIG_FILE];

/// One entry found by a walk (or named on its own), with its digest.
#[derive(Debug)]
pub struct Found {
    pub path: Arc<str>,
    pub stat: FileStat,
    pub digest: FileDigest,
    /// Bytes read to hash it; `None` when the stat cache answered (or for a directory).
    pub read: Option<u64>,
    /// What kind of credential the file looks like ([`crate::secrets`]), judged as it was read
    /// (or as the stat cache recorded it); `None` for directories and symlinks.
    pub secret: Option<crate::secrets::Kind>,
}

/// The digest every directory entry has: a directory's content is its entries.
pub fn dir_digest() -> FileDigest {
    FileDigest::of_bytes(b"")
}

/// What one walk needs, shared by its directory tasks.
struct Walker<'a> {
    root: &'a Root,
    ignore: &'a DockerIgnore,
    rules: Rules<'a>,
    with: HashWith<'a>,
}

/// The entries below `dir` (a real path: no component a symlink; `.` for the whole root), and
/// `dir` itself, skipping ignored paths and the engine's own. Sorted by path.
pub fn walk(root: &Root, dir: &str, rules: Rules<'_>, with: HashWith<'_>) -> Result<Vec<Found>> {
    let w = Walker {
        root,
        ignore: rules.ignore,
        rules,
        with,
    };
    let fd = root
        .open_dir(dir)
        .map_err(|e| Error::io("read directory", root.path().join(dir), e))?;
    let mut chunks = Vec::new();
    // The directory itself, unless the ignore file leaves it out (then only what an exception
    // brings back below it is there).
    if dir != "." && !rules.ignore.is_excluded(dir) {
        let st = rustix::fs::fstat(&fd)
            .map_err(|e| Error::io("read directory", root.path().join(dir), e.into()))?;
        chunks.push(vec![Found {
            path: Arc::from(dir),
            stat: stat_of(&st),
            digest: dir_digest(),
            read: None,
            secret: None,
        }]);
    }
    w.dir(
        fd,
        dir.to_string(),
        rules.ignore.dir_state(dir),
        &mut chunks,
    )?;
    // The chunks come in path order (see `Walker::dir`): no sort of the whole walk.
    let mut out: Vec<Found> = Vec::with_capacity(chunks.iter().map(Vec::len).sum());
    for c in chunks {
        out.extend(c);
    }
    debug_assert!(out.is_sorted_by(|a, b| a.path < b.path));
    Ok(out)
}

/// One file or symlink named on its own (a real path): its stat and digest, from the stat cache
/// or read now, without following a symlink.
pub fn one(root: &Root, rel: &str, rules: Rules<'_>, with: HashWith<'_>) -> Result<Found> {
    let w = Walker {
        root,
        ignore: rules.ignore,
        rules,
        with,
    };
    let (dir, name) = root
        .parent(rel)
        .map_err(|e| Error::io("read", root.path().join(rel), e))?;
    let st = rustix::fs::statat(&dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| Error::io("read", root.path().join(rel), e.into()))?;
    let ft = rustix::fs::FileType::from_raw_mode(st.st_mode as _);
    if ft == rustix::fs::FileType::Directory {
        return Err(Error::Other(format!(
            "`{}` is a directory, not a file",
            root.path().join(rel).display()
        )));
    }
    w.file(
        rustix::fd::AsFd::as_fd(&dir),
        rel.len() - name.len(),
        Arc::from(rel),
        ft,
    )
}

/// Where a path sorts against the entries below a directory: as against `dir/`.
pub fn cmp_with_dir(file: &str, dir: &str) -> std::cmp::Ordering {
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
pub fn stat_of(st: &rustix::fs::Stat) -> FileStat {
    FileStat {
        size: st.st_size as u64,
        mtime_ns: (st.st_mtime as i64).saturating_mul(1_000_000_000) + st.st_mtime_nsec as i64,
        ctime_ns: (st.st_ctime as i64).saturating_mul(1_000_000_000) + st.st_ctime_nsec as i64,
        ino: st.st_ino as u64,
        mode: st.st_mode as u32,
    }
}

impl Walker<'_> {
    fn abs(&self, rel: &str) -> std::path::PathBuf {
        if rel == "." {
            self.root.path().to_path_buf()
        } else {
            self.root.path().join(rel)
        }
    }

    /// Walks one directory (`fd`, at `rel`): its entries into `out`, its subdirectories in
    /// parallel.
    fn dir(
        &self,
        fd: rustix::fd::OwnedFd,
        rel: String,
        state: DirState,
        out: &mut Vec<Vec<Found>>,
    ) -> Result<()> {
        use rustix::fs::{AtFlags, FileType};
        let mut dir = rustix::fs::Dir::new(fd)
            .map_err(|e| Error::io("read directory", self.abs(&rel), e.into()))?;
        // Each child's path is built in one buffer after the directory's own `rel/`: a file's
        // path is allocated once, as the shared string it stays.
        let mut child = if rel == "." {
            String::new()
        } else {
            format!("{rel}/")
        };
        let base = child.len();
        let top = rel == ".";
        let mut files: Vec<(Arc<str>, FileType)> = Vec::new();
        let mut subdirs: Vec<(String, DirState)> = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(|e| Error::io("read directory", self.abs(&rel), e.into()))?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let Ok(name) = std::str::from_utf8(name) else {
                return Err(Error::Other(format!(
                    "`{}` has a name that is not UTF-8\n  hint: rename it; image contexts need portable names",
                    self.abs(&rel).join(std::ffi::OsStr::from_bytes(name)).display()
                )));
            };
            child.truncate(base);
            child.push_str(name);
            let mut ft = entry.file_type();
            if ft == FileType::Unknown {
                let fd = dir
                    .fd()
                    .map_err(|e| Error::io("read directory", self.abs(&rel), e.into()))?;
                let st = rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| Error::io("read", self.abs(&child), e.into()))?;
                ft = FileType::from_raw_mode(st.st_mode as _);
            }
            if self.rules.is_hidden(&child) || (top && ENGINE_FILES.contains(&name)) {
                continue;
            }
            if ft == FileType::Directory {
                let (excluded, child_state) = self.ignore.check_in(&state, &child);
                if excluded && !self.ignore.may_reinclude_below(&child) {
                    continue;
                }
                if !excluded {
                    files.push((Arc::from(child.as_str()), ft));
                }
                subdirs.push((child.clone(), child_state));
                continue;
            }
            if self.ignore.is_excluded_in(&state, &child) {
                continue;
            }
            if !(ft == FileType::RegularFile || ft == FileType::Symlink) {
                continue; // sockets, fifos and devices are not context files
            }
            files.push((Arc::from(child.as_str()), ft));
        }
        let dfd = dir
            .fd()
            .map_err(|e| Error::io("read directory", self.abs(&rel), e.into()))?;
        // In path order: a directory's entries sort among the others as `name/` does (its own
        // entry as `name`).
        files.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        subdirs.sort_unstable_by(|a, b| {
            let slash = std::iter::once(b'/');
            (a.0.bytes().chain(slash.clone())).cmp(b.0.bytes().chain(slash))
        });
        let mut found = Vec::with_capacity(files.len());
        for (path, ft) in files {
            found.push(self.file(dfd, base, path, ft)?);
        }
        let sub = |(child, st): (String, DirState)| {
            let fd = open_dir(dfd, &child[base..])
                .map_err(|e| Error::io("read directory", self.abs(&child), e))?;
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
        // Interleave: the entries before each subdirectory, then its chunks.
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

    /// One entry of a directory: its stat and digest.
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
            Error::io(what, self.root.path().join(&*child), e.into())
        };
        if ft == FileType::Directory {
            let st = rustix::fs::statat(dfd, name, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| io_err("read", e))?;
            return Ok(Found {
                path: child,
                stat: stat_of(&st),
                digest: dir_digest(),
                read: None,
                secret: None,
            });
        }
        let cached = self.with.cache.entry(&child);
        if ft == FileType::Symlink {
            let st = rustix::fs::statat(dfd, name, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| io_err("read", e))?;
            let stat = stat_of(&st);
            let target = rustix::fs::readlinkat(dfd, name, Vec::new())
                .map_err(|e| io_err("read link", e))?;
            let target = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(target.as_bytes()));
            check_link_target(self.root.path(), &child, &target)?;
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
                secret: None,
            });
        }
        // A file the cache knows: `lstat` it, and read it only if it changed.
        let mut known = None;
        if let Some(c) = &cached {
            let st = rustix::fs::statat(dfd, name, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| io_err("read", e))?;
            let stat = stat_of(&st);
            // Unless the secret guard has not judged it yet (an entry written without).
            let judged = crate::secrets::decode(c.secret());
            if let (Some(digest), Some(secret)) = (self.with.cache.trust(c, &stat), judged) {
                return Ok(Found {
                    path: child,
                    stat,
                    digest,
                    read: None,
                    secret,
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
        // The secret guard judges the file from the same read (its head, when its name alone
        // cannot say).
        let need = crate::secrets::need(&child, stat.size);
        let mut head = Vec::new();
        let (digest, n) =
            hash::hash_reader_head(&mut file, stat.size, need.unwrap_or(0), &mut head)
                .map_err(|e| Error::io("read", self.root.path().join(&*child), e))?;
        let secret = crate::secrets::classify(&child, stat.size, need.map(|_| head.as_slice()));
        Ok(Found {
            path: child,
            stat,
            digest,
            read: Some(n),
            secret,
        })
    }
}

/// A symlink in a context must point inside the root (the builder cannot follow it elsewhere).
pub fn check_link_target(root: &Path, rel: &str, target: &Path) -> Result<()> {
    if crate::resolve::link_stays_inside(root, rel, target) {
        Ok(())
    } else {
        Err(Error::SymlinkOutsideRoot {
            path: root.join(rel),
            target: target.to_path_buf(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::StatCache;
    use crate::prunecache::PruneCache;

    /// A walk comes out in byte order of whole paths, where `a.b/…` sorts before `a/…` and `a/…`
    /// before `a0`: the same order as sorting the paths, in parallel or not; directories are
    /// entries too.
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
        std::fs::create_dir_all(root.join("pkg/empty")).expect("mkdir");
        let mut want: Vec<String> = vec!["pkg".to_string()];
        let mut stack = vec![root.join("pkg")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("read_dir") {
                let e = e.expect("entry");
                let rel = e
                    .path()
                    .strip_prefix(root)
                    .expect("rel")
                    .to_string_lossy()
                    .into_owned();
                if e.file_type().expect("type").is_dir() {
                    stack.push(e.path());
                }
                want.push(rel);
            }
        }
        want.sort();
        let cache = StatCache::new();
        // Also through a symlink to the root (a root given as such a path).
        let elsewhere = tempfile::tempdir().expect("tempdir");
        let link = elsewhere.path().join("link");
        std::os::unix::fs::symlink(root, &link).expect("symlink");
        let ignore = DockerIgnore::empty();
        let rules = Rules {
            ignore: &ignore,
            hidden: &[],
        };
        let pruned = PruneCache::new();
        for (r, parallel) in [(root, true), (root, false), (link.as_path(), true)] {
            let r = Root::open(r).expect("open");
            let got = walk(
                &r,
                "pkg",
                rules,
                HashWith {
                    cache: &cache,
                    pruned: &pruned,
                    parallel,
                    allow: &crate::secrets::Allow::new(&[]).expect("allow"),
                },
            )
            .expect("walk");
            let got: Vec<String> = got.iter().map(|f| f.path.to_string()).collect();
            assert_eq!(got, want, "parallel: {parallel}");
        }
    }
}
