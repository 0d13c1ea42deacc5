//! Pruned lockfiles kept between runs: pruning the lockfile to each service's importers is most
//! of what a no-op plan computes beyond the walk (200 prunings, about 30 ms on 2 cores, on a
//! monorepo of 200 services). Each pruning is stored under [`Lockfile::prune_key`]: the
//! lockfile's text, the importers and the pruning code itself, so a stored pruning is never
//! stale. Like the stat cache, the file only saves work: a missing or corrupt one (checked by its
//! checksum) is an empty cache.
//!
//! [`Lockfile::prune_key`]: crate::lockfile::Lockfile::prune_key

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use crate::Result;

const MAGIC: &[u8; 8] = b"KCPRUN01";

/// Prune key -> the pruned lockfile's bytes.
#[derive(Debug, Default)]
pub struct PruneCache {
    entries: HashMap<[u8; 32], Arc<Vec<u8>>>,
}

impl PruneCache {
    pub fn new() -> PruneCache {
        PruneCache::default()
    }

    /// Loads the cache at `path`: missing is empty; corrupt is empty and a warning.
    pub fn load(path: &Path) -> (PruneCache, Option<String>) {
        let mut bytes = Vec::new();
        match std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (PruneCache::new(), None),
            Err(e) => {
                return (
                    PruneCache::new(),
                    Some(format!("ignored `{}`: {e}", path.display())),
                )
            }
        }
        match Self::decode(&bytes) {
            Some(entries) => (PruneCache { entries }, None),
            None => (
                PruneCache::new(),
                Some(format!(
                    "ignored corrupt `{}`; the lockfile is pruned again",
                    path.display()
                )),
            ),
        }
    }

    fn decode(bytes: &[u8]) -> Option<HashMap<[u8; 32], Arc<Vec<u8>>>> {
        if bytes.len() < MAGIC.len() + 8 + 32 || &bytes[..8] != MAGIC {
            return None;
        }
        let (body, sum) = bytes.split_at(bytes.len() - 32);
        if blake3::hash(body).as_bytes() != sum {
            return None;
        }
        let mut r = &body[8..];
        let count = take_u64(&mut r)?;
        let mut entries = HashMap::new();
        for _ in 0..count {
            let key: [u8; 32] = r.get(..32)?.try_into().ok()?;
            r = &r[32..];
            let len = usize::try_from(take_u64(&mut r)?).ok()?;
            let value = r.get(..len)?.to_vec();
            r = &r[len..];
            entries.insert(key, Arc::new(value));
        }
        r.is_empty().then_some(entries)
    }

    /// The pruned lockfile stored under `key`.
    pub fn get(&self, key: &[u8; 32]) -> Option<Arc<Vec<u8>>> {
        self.entries.get(key).cloned()
    }

    pub fn insert(&mut self, key: [u8; 32], bytes: Arc<Vec<u8>>) {
        self.entries.insert(key, bytes);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes a cache holding exactly `entries`, atomically (no fsync: see the stat cache).
    pub fn write<'a>(
        path: &Path,
        entries: impl ExactSizeIterator<Item = (&'a [u8; 32], &'a [u8])>,
    ) -> Result<()> {
        let mut body = Vec::new();
        body.extend_from_slice(MAGIC);
        body.extend_from_slice(&(entries.len() as u64).to_le_bytes());
        for (key, bytes) in entries {
            body.extend_from_slice(key);
            body.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            body.extend_from_slice(bytes);
        }
        let sum = blake3::hash(&body);
        cache::atomic::write_stream(path, false, |f| {
            f.write_all(&body)?;
            f.write_all(sum.as_bytes())
        })?;
        Ok(())
    }

    /// Writes this cache's entries (see [`PruneCache::write`]).
    pub fn save(&self, path: &Path) -> Result<()> {
        Self::write(path, self.entries.iter().map(|(k, v)| (k, v.as_slice())))
    }
}

fn take_u64(r: &mut &[u8]) -> Option<u64> {
    let (a, b) = r.split_at_checked(8)?;
    *r = b;
    Some(u64::from_le_bytes(a.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = cache::Layout::new(dir.path()).pruned_lockfiles();
        let (empty, warn) = PruneCache::load(&p);
        assert!(
            empty.is_empty() && warn.is_none(),
            "a missing file is an empty cache"
        );
        let mut c = PruneCache::new();
        c.insert([1; 32], Arc::new(b"lockfileVersion: '6.0'\n".to_vec()));
        c.insert([2; 32], Arc::new(Vec::new()));
        c.save(&p).expect("save");
        let (back, warn) = PruneCache::load(&p);
        assert!(warn.is_none());
        assert_eq!(back.len(), 2);
        assert_eq!(
            back.get(&[1; 32]).as_deref().map(Vec::as_slice),
            Some(&b"lockfileVersion: '6.0'\n"[..])
        );
        assert!(back.get(&[3; 32]).is_none());
        // One flipped byte: the checksum catches it; the cache is empty and says so.
        let mut bytes = std::fs::read(&p).expect("read");
        bytes[20] ^= 1;
        std::fs::write(&p, &bytes).expect("write");
        let (bad, warn) = PruneCache::load(&p);
        assert!(bad.is_empty());
        assert!(warn.expect("warning").contains("corrupt"));
    }
}
