//! Hash: blake3 of files in parallel (rayon), with a persisted stat cache so that a warm run reads
//! no unchanged file. Racy-git aware: an entry as new as the cache file itself is re-hashed, since
//! the file may have changed again within the same timestamp tick.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use rayon::prelude::*;

use crate::digest::FileDigest;
use crate::{Error, Result};

/// What `lstat` says about a file: what the stat cache compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub mode: u32,
}

impl FileStat {
    pub fn from_metadata(m: &std::fs::Metadata) -> FileStat {
        FileStat {
            size: m.size(),
            mtime_ns: m.mtime().saturating_mul(1_000_000_000) + m.mtime_nsec(),
            ctime_ns: m.ctime().saturating_mul(1_000_000_000) + m.ctime_nsec(),
            ino: m.ino(),
            mode: m.mode(),
        }
    }

    pub fn is_symlink(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFLNK
    }

    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    stat: FileStat,
    digest: FileDigest,
    /// The secret guard's verdict on the file ([`crate::secrets::code`]): 0 when not judged.
    secret: u8,
}

/// A stat cache entry, to be checked against a fresh stat with [`StatCache::trust`].
#[derive(Debug, Clone, Copy)]
pub struct CachedEntry(Entry);

impl CachedEntry {
    /// The secret guard's verdict recorded with the digest (0: not judged).
    pub fn secret(&self) -> u8 {
        self.0.secret
    }
}

/// The persisted stat cache: path (relative to the root) -> stat and digest.
///
/// The file is kept as loaded, with an index of its records (sorted by path, binary-searched): a
/// warm run of 100k files decodes nothing it does not look up, and allocates no string per entry.
/// Entries recorded in this run sit in a small map beside it.
#[derive(Debug, Default)]
pub struct StatCache {
    /// The loaded file's records (the body, after the header).
    base: Vec<u8>,
    /// Offsets of the records in `base`, in path order.
    index: Vec<usize>,
    /// [`path_hash`] of each record's path -> its position in `index` (built on load, beside
    /// discovery: a lookup is one hash, not 17 comparisons of long common prefixes). Two paths
    /// with one hash keep one slot; the other is found by binary search.
    by_hash: HashMap<u64, u32, std::hash::BuildHasherDefault<PassThrough>>,
    added: HashMap<String, Entry>,
    /// The mtime of the cache file when loaded; entries not older than this are not trusted.
    saved_at_ns: i64,
}

const MAGIC: &[u8; 8] = b"KCSTAT02";
/// A record after its path: size, mtime, ctime, inode, mode (u64 each; the secret guard's verdict
/// in bits 32..40 of the mode's), then the digest.
const RECORD_TAIL: usize = 5 * 8 + 32;

/// Counters of one hashing pass, for tests and benchmarks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HashStats {
    /// Files asked for.
    pub files: usize,
    /// Files actually read and hashed (not answered by the stat cache).
    pub hashed: usize,
    pub bytes_read: u64,
}

impl StatCache {
    pub fn new() -> StatCache {
        StatCache::default()
    }

    /// Loads the cache at `path`. A missing file is an empty cache; a corrupt one is an empty cache
    /// and a warning (returned), never an error: the stat cache only saves work.
    pub fn load(path: &Path) -> (StatCache, Option<String>) {
        let mut file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(_) => return (StatCache::new(), None),
        };
        let saved_at_ns = file
            .metadata()
            .map(|m| FileStat::from_metadata(&m).mtime_ns)
            .unwrap_or(i64::MIN);
        let mut bytes = Vec::new();
        if let Err(e) = file.read_to_end(&mut bytes) {
            return (
                StatCache::new(),
                Some(format!("ignored stat cache `{}`: {e}", path.display())),
            );
        }
        match Self::index(&bytes) {
            Some(index) => {
                let mut c = StatCache {
                    base: bytes,
                    index,
                    by_hash: HashMap::default(),
                    added: HashMap::new(),
                    saved_at_ns,
                };
                c.by_hash.reserve(c.index.len());
                for (i, &at) in c.index.iter().enumerate() {
                    c.by_hash.insert(path_hash(c.path_at(at)), i as u32);
                }
                (c, None)
            }
            None => (
                StatCache::new(),
                Some(format!(
                    "ignored corrupt stat cache `{}`; every file is hashed again",
                    path.display()
                )),
            ),
        }
    }

    /// Checks the file (magic, checksum, record bounds, strictly ascending paths) and returns the
    /// offset of each record.
    fn index(bytes: &[u8]) -> Option<Vec<usize>> {
        if bytes.len() < MAGIC.len() + 8 + 32 || &bytes[..8] != MAGIC {
            return None;
        }
        let (body, sum) = bytes.split_at(bytes.len() - 32);
        if blake3::hash(body).as_bytes() != sum {
            return None;
        }
        let count = u64::from_le_bytes(body[8..16].try_into().ok()?) as usize;
        let mut index = Vec::with_capacity(count.min(1 << 22));
        let mut at = 16;
        let mut last: &[u8] = &[];
        for _ in 0..count {
            let len = u64::from_le_bytes(body.get(at..at + 8)?.try_into().ok()?) as usize;
            let path = body.get(at + 8..(at + 8).checked_add(len)?)?;
            if !index.is_empty() && path <= last {
                return None;
            }
            index.push(at);
            last = path;
            at = at + 8 + len + RECORD_TAIL;
            if at > body.len() {
                return None;
            }
        }
        (at == body.len()).then_some(index)
    }

    fn path_at(&self, at: usize) -> &[u8] {
        let len = read_u64(&self.base, at) as usize;
        &self.base[at + 8..at + 8 + len]
    }

    fn entry_at(&self, at: usize) -> Entry {
        let p = at + 8 + read_u64(&self.base, at) as usize;
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&self.base[p + 40..p + 72]);
        Entry {
            stat: FileStat {
                size: read_u64(&self.base, p),
                mtime_ns: read_u64(&self.base, p + 8) as i64,
                ctime_ns: read_u64(&self.base, p + 16) as i64,
                ino: read_u64(&self.base, p + 24),
                mode: read_u64(&self.base, p + 32) as u32,
            },
            digest: FileDigest::from_bytes(digest),
            secret: (read_u64(&self.base, p + 32) >> 32) as u8,
        }
    }

    fn get(&self, rel: &str) -> Option<Entry> {
        if let Some(e) = self.added.get(rel) {
            return Some(*e);
        }
        let i = *self.by_hash.get(&path_hash(rel.as_bytes()))? as usize;
        if self.path_at(self.index[i]) == rel.as_bytes() {
            return Some(self.entry_at(self.index[i]));
        }
        // Another path with the same hash holds the slot.
        let i = self
            .index
            .binary_search_by(|&at| self.path_at(at).cmp(rel.as_bytes()))
            .ok()?;
        Some(self.entry_at(self.index[i]))
    }

    /// Writes the cache atomically (temp file, rename): its loaded entries, with this run's
    /// entries over them.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut added: Vec<(&str, &Entry)> =
            self.added.iter().map(|(p, e)| (p.as_str(), e)).collect();
        added.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut merged: Vec<(&str, Entry)> = Vec::with_capacity(self.index.len() + added.len());
        let mut new = added.into_iter().peekable();
        for &at in &self.index {
            let Ok(p) = std::str::from_utf8(self.path_at(at)) else {
                continue;
            };
            while let Some((q, e)) = new.next_if(|(q, _)| *q < p) {
                merged.push((q, *e));
            }
            if new.peek().is_some_and(|(q, _)| *q == p) {
                continue; // replaced below
            }
            merged.push((p, self.entry_at(at)));
        }
        merged.extend(new.map(|(q, e)| (q, *e)));
        Self::write(
            path,
            merged
                .iter()
                .map(|(p, e)| (*p, &e.stat, &e.digest, e.secret)),
        )
    }

    /// Writes a cache holding exactly `entries` (sorted by path, unique; each with the secret
    /// guard's verdict, 0 when not judged) atomically, streamed (no copy of the whole file in
    /// memory).
    pub fn write<'a>(
        path: &Path,
        entries: impl ExactSizeIterator<Item = (&'a str, &'a FileStat, &'a FileDigest, u8)>,
    ) -> Result<()> {
        /// Hashes what it writes: the checksum comes out with the last byte.
        struct Summed<W> {
            inner: W,
            sum: blake3::Hasher,
        }
        impl<W: Write> Write for Summed<W> {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                let n = self.inner.write(b)?;
                self.sum.update(&b[..n]);
                Ok(n)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                self.inner.flush()
            }
        }
        // No fsync: the file only saves work, and a torn one fails its checksum on load (then
        // every file is hashed again). The fsync cost 0.2 s of each cold plan on 100k files.
        cache::atomic::write_stream(path, false, |file| {
            let mut w = Summed {
                inner: std::io::BufWriter::with_capacity(256 * 1024, file),
                sum: blake3::Hasher::new(),
            };
            w.write_all(MAGIC)?;
            w.write_all(&(entries.len() as u64).to_le_bytes())?;
            let mut rec = Vec::with_capacity(256);
            for (p, stat, digest, secret) in entries {
                rec.clear();
                rec.extend_from_slice(&(p.len() as u64).to_le_bytes());
                rec.extend_from_slice(p.as_bytes());
                for v in [
                    stat.size,
                    stat.mtime_ns as u64,
                    stat.ctime_ns as u64,
                    stat.ino,
                    u64::from(stat.mode) | (u64::from(secret) << 32),
                ] {
                    rec.extend_from_slice(&v.to_le_bytes());
                }
                rec.extend_from_slice(digest.as_bytes());
                w.write_all(&rec)?;
            }
            let sum = w.sum.finalize();
            w.inner.write_all(sum.as_bytes())?;
            w.inner.flush()
        })?;
        Ok(())
    }

    /// The digest recorded for `rel`, if its stat is unchanged and not racily new.
    pub fn lookup(&self, rel: &str, stat: &FileStat) -> Option<FileDigest> {
        self.trust(&self.entry(rel)?, stat)
    }

    /// What the cache holds for `rel`, trusted or not (see [`StatCache::trust`]).
    pub fn entry(&self, rel: &str) -> Option<CachedEntry> {
        self.get(rel).map(CachedEntry)
    }

    /// The digest of `entry` if the file's stat now is the recorded one, and not racily new.
    pub fn trust(&self, entry: &CachedEntry, stat: &FileStat) -> Option<FileDigest> {
        let e = &entry.0;
        let trusted =
            e.stat == *stat && stat.mtime_ns < self.saved_at_ns && stat.ctime_ns < self.saved_at_ns;
        trusted.then_some(e.digest)
    }

    /// Records a digest (the file not judged by the secret guard).
    pub fn insert(&mut self, rel: String, stat: FileStat, digest: FileDigest) {
        self.insert_judged(rel, stat, digest, 0);
    }

    /// Records a digest with the secret guard's verdict on the file ([`crate::secrets::code`]).
    pub fn insert_judged(&mut self, rel: String, stat: FileStat, digest: FileDigest, secret: u8) {
        self.added.insert(
            rel,
            Entry {
                stat,
                digest,
                secret,
            },
        );
    }

    /// Entries (loaded or added, an added one counted once).
    pub fn len(&self) -> usize {
        self.index.len()
            + self
                .added
                .keys()
                .filter(|k| {
                    self.index
                        .binary_search_by(|&at| self.path_at(at).cmp(k.as_bytes()))
                        .is_err()
                })
                .count()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty() && self.added.is_empty()
    }
}

/// A fast, non-cryptographic hash of a path (FxHash's rotate-xor-multiply over 8-byte words), for
/// the stat cache's in-memory index only.
fn path_hash(b: &[u8]) -> u64 {
    let mut h: u64 = b.len() as u64;
    for chunk in b.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    h
}

/// The identity hasher for keys that are already hashes.
#[derive(Default)]
struct PassThrough(u64);

impl std::hash::Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

fn read_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The digest of a file's bytes, or of a symlink's target.
pub fn hash_path(abs: &Path, stat: &FileStat) -> std::io::Result<(FileDigest, u64)> {
    if stat.is_symlink() {
        let target = std::fs::read_link(abs)?;
        let bytes = target.as_os_str().as_encoded_bytes();
        return Ok((FileDigest::of_bytes(bytes), bytes.len() as u64));
    }
    let mut file = std::fs::File::open(abs)?;
    hash_reader(&mut file, u64::MAX)
}

/// The digest of an open file of `size` bytes (from its `fstat`): reads exactly that much (a
/// file that grew since is seen by its next stat; one that shrank ends early), so a small file
/// costs one `read`. `u64::MAX`: to the end.
pub fn hash_reader(file: &mut impl Read, size: u64) -> std::io::Result<(FileDigest, u64)> {
    hash_reader_head(file, size, 0, &mut Vec::new())
}

/// [`hash_reader`], keeping the first `head` bytes of what it reads in `kept` (for the secret
/// guard, which judges some files by their head): one read of the file for both.
pub fn hash_reader_head(
    file: &mut impl Read,
    size: u64,
    head: u64,
    kept: &mut Vec<u8>,
) -> std::io::Result<(FileDigest, u64)> {
    with_buffer(|buf| {
        let mut hasher = blake3::Hasher::new();
        let mut total = 0u64;
        while total < size {
            let want = (size - total).min(buf.len() as u64) as usize;
            let n = match file.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buf[..n]);
            if (kept.len() as u64) < head {
                let take = (head - kept.len() as u64).min(n as u64) as usize;
                kept.extend_from_slice(&buf[..take]);
            }
            total += n as u64;
        }
        Ok((FileDigest::from_hash(hasher.finalize()), total))
    })
}

/// Runs `f` with this thread's read buffer (64 KiB, zeroed once per thread, not once per file:
/// zeroing it per file cost more than hashing 100k small files).
fn with_buffer<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|b| match b.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.is_empty() {
                buf.resize(64 * 1024, 0);
            }
            f(&mut buf)
        }
        // Re-entered (not done today): a buffer of its own.
        Err(_) => f(&mut vec![0u8; 64 * 1024]),
    })
}

/// Hashes `files` (paths relative to `root`, with their `lstat`), answering from `cache` where it can,
/// and records every new digest in it. Parallel with rayon unless `parallel` is false; the result is
/// the same either way, in the order of `files`.
pub fn hash_files(
    root: &Path,
    files: &[(String, FileStat)],
    cache: &mut StatCache,
    parallel: bool,
) -> Result<(Vec<FileDigest>, HashStats)> {
    let hashed = AtomicUsize::new(0);
    let bytes = AtomicU64::new(0);
    let one = |(rel, stat): &(String, FileStat)| -> Result<(FileDigest, bool)> {
        if let Some(d) = cache.lookup(rel, stat) {
            return Ok((d, false));
        }
        let abs = root.join(rel);
        let (d, n) = hash_path(&abs, stat).map_err(|e| Error::io("read", abs, e))?;
        hashed.fetch_add(1, Ordering::Relaxed);
        bytes.fetch_add(n, Ordering::Relaxed);
        Ok((d, true))
    };
    let results: Vec<(FileDigest, bool)> = if parallel {
        files.par_iter().map(one).collect::<Result<_>>()?
    } else {
        files.iter().map(one).collect::<Result<_>>()?
    };
    let mut digests = Vec::with_capacity(results.len());
    for ((rel, stat), (d, fresh)) in files.iter().zip(results) {
        if fresh {
            cache.insert(rel.clone(), *stat, d);
        }
        digests.push(d);
    }
    Ok((
        digests,
        HashStats {
            files: files.len(),
            hashed: hashed.into_inner(),
            bytes_read: bytes.into_inner(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(p: &Path) -> FileStat {
        FileStat::from_metadata(&std::fs::symlink_metadata(p).expect("lstat"))
    }

    #[test]
    fn warm_run_reads_nothing_and_edits_are_seen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::write(root.join("a"), "one").expect("write");
        std::fs::write(root.join("b"), "two").expect("write");
        let cache_path = root.join("cache/stat");
        for f in ["a", "b"] {
            set_mtime(&root.join(f), now_ns() - 10_000_000_000);
        }
        let files = |r: &Path| {
            vec![
                ("a".to_string(), stat(&r.join("a"))),
                ("b".to_string(), stat(&r.join("b"))),
            ]
        };

        let mut cache = StatCache::new();
        let (d1, s1) = hash_files(root, &files(root), &mut cache, true).expect("hash");
        assert_eq!(s1.hashed, 2);
        cache.save(&cache_path).expect("save");
        // A moment later: the files are older than the cache file (one timestamp tick at least).
        set_mtime(&cache_path, now_ns() + 10_000_000_000);

        let (mut warm, warn) = StatCache::load(&cache_path);
        assert!(warn.is_none());
        let (d2, s2) = hash_files(root, &files(root), &mut warm, true).expect("hash");
        assert_eq!(s2.hashed, 0, "a warm run reads no unchanged file");
        assert_eq!(d1, d2);

        // Same size, new content: the mtime and ctime give it away.
        std::fs::write(root.join("a"), "uno").expect("write");
        let (d3, s3) = hash_files(root, &files(root), &mut warm, true).expect("hash");
        assert_eq!(s3.hashed, 1);
        assert_ne!(d3[0], d2[0]);
        assert_eq!(d3[1], d2[1]);
    }

    #[test]
    fn racy_entries_are_rehashed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::write(root.join("a"), "one").expect("write");
        let cache_path = root.join("stat");
        let mut cache = StatCache::new();
        let files = vec![("a".to_string(), stat(&root.join("a")))];
        hash_files(root, &files, &mut cache, false).expect("hash");
        cache.save(&cache_path).expect("save");
        // The file is as new as the cache (same tick or newer): not trusted.
        let cache_mtime = stat(&cache_path).mtime_ns;
        set_mtime(&root.join("a"), cache_mtime);
        let files = vec![("a".to_string(), stat(&root.join("a")))];
        let (mut loaded, _) = StatCache::load(&cache_path);
        let (_, s) = hash_files(root, &files, &mut loaded, false).expect("hash");
        assert_eq!(s.hashed, 1);
    }

    #[test]
    fn corrupt_cache_is_empty_with_warning() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("stat");
        std::fs::write(&p, b"KCSTAT01garbage-garbage-garbage-garbage-garbage").expect("write");
        let (c, warn) = StatCache::load(&p);
        assert!(c.is_empty());
        assert!(warn.expect("warning").contains("corrupt"));
    }

    fn digest(s: &str) -> FileDigest {
        FileDigest::of_bytes(s.as_bytes())
    }

    fn st(ino: u64) -> FileStat {
        FileStat {
            size: 1,
            mtime_ns: 1,
            ctime_ns: 1,
            ino,
            mode: 0o100644,
        }
    }

    #[test]
    fn save_keeps_loaded_entries_and_added_ones_win() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("stat");
        let mut c = StatCache::new();
        for (path, ino) in [("b", 2), ("d", 4), ("a/x", 1)] {
            c.insert(path.into(), st(ino), digest(path));
        }
        c.save(&p).expect("save");
        let (mut loaded, warn) = StatCache::load(&p);
        assert!(warn.is_none());
        assert_eq!(loaded.len(), 3);
        loaded.insert("c".into(), st(3), digest("c"));
        loaded.insert("d".into(), st(40), digest("new d"));
        loaded.save(&p).expect("save");
        let (again, _) = StatCache::load(&p);
        assert_eq!(again.len(), 4);
        for (path, ino, d) in [
            ("a/x", 1, "a/x"),
            ("b", 2, "b"),
            ("c", 3, "c"),
            ("d", 40, "new d"),
        ] {
            let e = again.entry(path).expect(path);
            assert_eq!(e.0.stat.ino, ino, "{path}");
            assert_eq!(e.0.digest, digest(d), "{path}");
        }
        assert!(again.entry("e").is_none());
        assert!(again.entry("a").is_none());
        // Every slot of the hash index taken by the first path (as colliding paths would): each
        // path is still found, by binary search.
        let mut collided = again;
        for v in collided.by_hash.values_mut() {
            *v = 0;
        }
        for (path, ino) in [("a/x", 1), ("b", 2), ("c", 3), ("d", 40)] {
            assert_eq!(collided.entry(path).expect(path).0.stat.ino, ino, "{path}");
        }
    }

    #[test]
    fn a_file_out_of_order_is_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("stat");
        let (s1, s2) = (st(1), st(2));
        let (d1, d2) = (digest("1"), digest("2"));
        // Written unsorted (a valid checksum): a binary search could not trust it.
        StatCache::write(&p, [("b", &s1, &d1, 0), ("a", &s2, &d2, 0)].into_iter()).expect("write");
        let (c, warn) = StatCache::load(&p);
        assert!(c.is_empty());
        assert!(warn.expect("warning").contains("corrupt"));
        // A truncated record, checksum recomputed: also corrupt, never read out of bounds.
        let mut bytes = std::fs::read(&p).expect("read");
        bytes.truncate(bytes.len() - 32 - 10);
        let sum = blake3::hash(&bytes);
        bytes.extend_from_slice(sum.as_bytes());
        std::fs::write(&p, &bytes).expect("write");
        let (c, warn) = StatCache::load(&p);
        assert!(c.is_empty());
        assert!(warn.expect("warning").contains("corrupt"));
    }

    fn now_ns() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos() as i64
    }

    fn set_mtime(p: &Path, ns: i64) {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns as u64);
        let f = std::fs::File::options().write(true).open(p).expect("open");
        f.set_times(std::fs::FileTimes::new().set_modified(t).set_accessed(t))
            .expect("set times");
    }
}
