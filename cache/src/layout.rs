//! The one owner of the cache directory's layout: every file and folder anything writes in a
//! cache directory `D` is named here, and nowhere else.
//!
//! - `D/v1/`: the content-addressed store ([`crate::Store`]):
//!   - `blobs/<aa>/<digest>`: immutable blobs (input manifests, build logs);
//!   - `records/<aa>/<key>.json`: what was built for an image key;
//!   - `services/<service>.json`: the key last built for a service;
//!   - `corrupt/`: entries that failed verification, moved aside;
//!   - `tmp/`: temporary files of older versions (writes now go beside their target).
//! - `D/stat-cache.bin`: the stat cache of the hashed files (only saves work).
//! - `D/pruned-lockfiles.bin`: lockfiles pruned to each service's closure (only saves work).
//! - `D/verified/<key>.json`: the verification of a key's image against the architecture's rules.
//! - `D/work/`: scratch files of running builds (image id files).
//! - `D/logs/<service>-<key prefix>.log`: the whole log of a failed build.
//!
//! Any file may sit beside its target for a moment as `.<name>.<pid>.<n>.tmp` (see
//! [`crate::atomic`]). `cache stats` reports every part, `cache gc` cleans every part.

use std::path::{Path, PathBuf};

/// The cache directory when none is given, relative to the monorepo root.
pub const DEFAULT_DIR: &str = ".images-cache";
/// The store's directory: bump to start a new store layout beside the old one.
pub const STORE: &str = "v1";
pub const STAT_CACHE: &str = "stat-cache.bin";
pub const PRUNED_LOCKFILES: &str = "pruned-lockfiles.bin";
pub const VERIFIED: &str = "verified";
pub const WORK: &str = "work";
pub const LOGS: &str = "logs";

const BLOBS: &str = "blobs";
const RECORDS: &str = "records";
const SERVICES: &str = "services";
const CORRUPT: &str = "corrupt";
const LEGACY_TMP: &str = "tmp";

/// How many hex digits of a key name a failure log.
const LOG_KEY_DIGITS: usize = 12;

/// The top-level parts of a cache directory, in the order `cache stats` lists them.
pub const PARTS: [&str; 6] = [STORE, STAT_CACHE, PRUNED_LOCKFILES, VERIFIED, WORK, LOGS];

/// The paths of one cache directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    pub fn new(dir: impl Into<PathBuf>) -> Layout {
        Layout { dir: dir.into() }
    }

    /// The default cache directory of a monorepo root.
    pub fn default_dir(root: &Path) -> PathBuf {
        root.join(DEFAULT_DIR)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A top-level part by its name in [`PARTS`].
    pub fn part(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn store(&self) -> PathBuf {
        self.dir.join(STORE)
    }

    pub fn stat_cache(&self) -> PathBuf {
        self.dir.join(STAT_CACHE)
    }

    pub fn pruned_lockfiles(&self) -> PathBuf {
        self.dir.join(PRUNED_LOCKFILES)
    }

    pub fn verified_dir(&self) -> PathBuf {
        self.dir.join(VERIFIED)
    }

    /// The verification marker of a key.
    pub fn verified(&self, key: &str) -> PathBuf {
        self.verified_dir().join(format!("{key}.json"))
    }

    /// The key a verification marker's file name names.
    pub fn verified_key(name: &str) -> Option<&str> {
        name.strip_suffix(".json")
    }

    pub fn work(&self) -> PathBuf {
        self.dir.join(WORK)
    }

    pub fn logs(&self) -> PathBuf {
        self.dir.join(LOGS)
    }

    /// Where the log of a failed build of `service` at `key` (hex) is kept.
    pub fn failure_log(&self, service: &str, key: &str) -> PathBuf {
        let prefix = &key[..key.len().min(LOG_KEY_DIGITS)];
        self.logs().join(format!("{service}-{prefix}.log"))
    }

    /// The service a failure log's file name names (`<service>-<key prefix>.log`).
    pub fn failure_log_service(name: &str) -> Option<&str> {
        let stem = name.strip_suffix(".log")?;
        let (service, prefix) = stem.rsplit_once('-')?;
        (prefix.len() == LOG_KEY_DIGITS && prefix.bytes().all(|b| b.is_ascii_hexdigit()))
            .then_some(service)
    }

    pub(crate) fn blobs(&self) -> PathBuf {
        self.store().join(BLOBS)
    }

    pub(crate) fn blob(&self, digest: &str) -> PathBuf {
        self.blobs().join(&digest[..2]).join(digest)
    }

    pub(crate) fn records(&self) -> PathBuf {
        self.store().join(RECORDS)
    }

    /// A record's path; `key` may be any string (a stray file's name), sharded by its first
    /// two characters.
    pub(crate) fn record(&self, key: &str) -> PathBuf {
        let shard: String = key.chars().take(2).collect();
        self.records().join(shard).join(format!("{key}.json"))
    }

    pub(crate) fn services(&self) -> PathBuf {
        self.store().join(SERVICES)
    }

    pub(crate) fn last_built(&self, service: &str) -> PathBuf {
        self.services().join(format!("{service}.json"))
    }

    pub(crate) fn corrupt(&self) -> PathBuf {
        self.store().join(CORRUPT)
    }

    pub(crate) fn legacy_tmp(&self) -> PathBuf {
        self.store().join(LEGACY_TMP)
    }

    /// The directories the store makes when it opens.
    pub(crate) fn store_dirs(&self) -> [PathBuf; 4] {
        [
            self.blobs(),
            self.records(),
            self.services(),
            self.corrupt(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_logs_name_their_service() {
        let l = Layout::new("/c");
        let key = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let p = l.failure_log("api-gateway", key);
        assert_eq!(p, Path::new("/c/logs/api-gateway-0123456789ab.log"));
        let name = p.file_name().and_then(|n| n.to_str()).expect("name");
        assert_eq!(Layout::failure_log_service(name), Some("api-gateway"));
        assert_eq!(Layout::failure_log_service("notes.txt"), None);
        assert_eq!(Layout::failure_log_service("x-short.log"), None);
    }
}
