//! The content-addressed store of what was built, and the cache directory around it.
//!
//! - [`layout`]: the one owner of the cache directory's layout (every file and folder in it).
//! - [`atomic`]: the one atomic write (temp file beside the target, fsync, rename).
//! - [`Store`] (here): records and blobs under `v1/`: immutable blobs named by the blake3 of their
//!   bytes and verified on every read; a record per image key; the key last built per service;
//!   corrupt entries moved aside (never deleted silently).
//! - [`registry`]: an OCI registry client (the registry tier speaks through it).
//! - [`cosign`]: cosign-compatible key-pair signatures of registry images (sign, verify, keys).
//!
//! Every write is atomic and idempotent, so concurrent processes (a `watch` and an `images`)
//! share one store safely; an interrupted write leaves only a temp file, which `gc` removes.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub mod atomic;
pub mod cosign;
pub mod layout;
pub mod registry;

pub use layout::Layout;

/// The record format written by this version.
pub const RECORD_FORMAT: u32 = 1;

/// Errors of the cache.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to {action} `{}`: {source}{}", path.display(), hint(source))]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid cache key `{0}`: expected 64 hex digits")]
    InvalidKey(String),
}

impl Error {
    /// The file the error is about, if any.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            Error::Io { path, .. } => Some(path),
            Error::InvalidKey(_) => None,
        }
    }

    /// What to do about it, when there is something to say.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Error::Io { source, .. } => hint(source).strip_prefix("\n  hint: "),
            Error::InvalidKey(_) => None,
        }
    }
}

fn hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOSPC) => "\n  hint: the disk is full; free space or run `cargo xtask cache gc`",
        Some(libc::EACCES) | Some(libc::EPERM) => {
            "\n  hint: the cache directory is not writable; fix its permissions or pass `--cache-dir`"
        }
        _ => "",
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
    Error::Io {
        action,
        path: path.into(),
        source,
    }
}

/// What was built for one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub format: u32,
    pub key: String,
    pub service: String,
    pub image: String,
    /// The engine's image id (`sha256:...`).
    pub image_id: String,
    pub tags: Vec<String>,
    pub duration_ms: u64,
    /// When it was built, in milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// The blob holding the input manifest of the build.
    pub manifest: String,
    /// The blob holding the build log, if kept.
    #[serde(default)]
    pub log: Option<String>,
}

/// The pointer from a service to the key last built for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastBuilt {
    pub key: String,
    pub updated_at_ms: u64,
}

/// How much of the disk one top-level part of the cache directory takes.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct PartUsage {
    /// Its name in the layout (`v1`, `stat-cache.bin`, `verified`, ...).
    pub name: String,
    pub files: u64,
    pub bytes: u64,
}

/// What `cache stats` reports: the store's counts, and every part of the cache directory.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Stats {
    pub records: u64,
    pub blobs: u64,
    /// The records' and blobs' size on disk.
    pub bytes: u64,
    pub corrupt: u64,
    /// Temporary files (writes in progress, or left by an interrupted one).
    pub tmp: u64,
    /// Services with a last-built pointer.
    pub services: u64,
    /// Every part of the cache directory, in the layout's order.
    pub parts: Vec<PartUsage>,
    /// Entries of the cache directory that the layout does not name.
    pub unknown: Vec<String>,
    /// The whole cache directory's size.
    pub total_bytes: u64,
}

/// What `cache verify` found.
#[derive(Debug, Default, Clone, Serialize)]
pub struct VerifyReport {
    pub records_ok: u64,
    pub blobs_ok: u64,
    /// Entries that failed verification and were moved aside, with why.
    pub moved_aside: Vec<String>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.moved_aside.is_empty()
    }
}

/// What `cache gc` removed: the store's part is filled by [`Store::gc`], the rest by the engine,
/// which knows what the other parts hold.
#[derive(Debug, Default, Clone, Serialize)]
pub struct GcReport {
    pub records_removed: u64,
    pub blobs_removed: u64,
    pub tmp_removed: u64,
    pub bytes_freed: u64,
    /// Last-built pointers to a key that has no record any more.
    pub pointers_removed: u64,
    /// Corrupt entries moved aside longer ago than the retention.
    pub corrupt_removed: u64,
    /// Verification markers of keys without a record or whose image is gone.
    pub markers_removed: u64,
    /// Stat cache entries of files no context holds any more.
    pub stat_entries_removed: u64,
    /// Pruned lockfiles no service uses any more.
    pub prunings_removed: u64,
    /// Scratch files left by builds that ended long ago.
    pub work_removed: u64,
    /// Failure logs past the retention, or of services that are gone.
    pub logs_removed: u64,
    /// Parts that could not be cleaned, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The local store.
#[derive(Debug)]
pub struct Store {
    layout: Layout,
    warnings: Mutex<Vec<String>>,
}

/// Temp files older than this are leftovers of an interrupted write.
pub const STALE_TMP: Duration = Duration::from_secs(3600);
/// Blobs younger than this are kept by gc: a concurrent writer may be about to reference them.
const YOUNG_BLOB: Duration = Duration::from_secs(3600);

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether a string is a valid key (64 lowercase hex digits).
pub fn is_key(s: &str) -> bool {
    is_hex64(s)
}

fn is_service_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// How long ago a file was last modified (zero when unknown).
pub fn age(p: &Path) -> Duration {
    std::fs::metadata(p)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default()
}

impl Store {
    /// Opens (and creates) the store of the cache directory `dir`.
    pub fn open(dir: &Path) -> Result<Store> {
        Store::open_layout(Layout::new(dir))
    }

    pub fn open_layout(layout: Layout) -> Result<Store> {
        for p in layout.store_dirs() {
            std::fs::create_dir_all(&p).map_err(|e| io("create directory", &p, e))?;
        }
        Ok(Store {
            layout,
            warnings: Mutex::new(Vec::new()),
        })
    }

    pub fn dir(&self) -> &Path {
        self.layout.dir()
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Warnings gathered since the last call (corrupt entries moved aside).
    pub fn take_warnings(&self) -> Vec<String> {
        self.warnings
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default()
    }

    fn warn(&self, msg: String) {
        if let Ok(mut w) = self.warnings.lock() {
            w.push(msg);
        }
    }

    fn move_aside(&self, path: &Path, why: &str) -> String {
        // Unique per process and per move: two moves of the same entry within one millisecond
        // (a directory moved aside by a read, put back, and moved aside again by a write) must
        // not collide, or the second rename fails and the entry stays in the way.
        static MOVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = MOVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dest = self.layout.corrupt().join(format!(
            "{}.{}.{n}.{}",
            now_ms(),
            std::process::id(),
            file_name(path)
        ));
        let msg = match std::fs::rename(path, &dest) {
            Ok(()) => format!(
                "cache entry `{}` is corrupt ({why}); moved aside to `{}` and treated as a miss",
                path.display(),
                dest.display()
            ),
            Err(_) => format!(
                "cache entry `{}` is corrupt ({why}); treated as a miss",
                path.display()
            ),
        };
        self.warn(msg.clone());
        msg
    }

    /// Moves aside whatever sits at `path` that is not a regular file (a directory, a symlink,
    /// a fifo), so that a write can put a file there.
    fn clear_for_write(&self, path: &Path) {
        if let Some(what) = not_regular(path) {
            self.move_aside(path, &format!("it is {what}, not a regular file"));
        }
    }

    /// Stores a blob; returns its digest (hex). Idempotent.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<String> {
        let digest = blake3::hash(bytes).to_hex().to_string();
        let path = self.layout.blob(&digest);
        self.clear_for_write(&path);
        if std::fs::symlink_metadata(&path).is_err() {
            atomic::write(&path, bytes)?;
        }
        Ok(digest)
    }

    /// Reads a blob, verifying its digest; a corrupt blob is moved aside and is a miss.
    pub fn get_blob(&self, digest: &str) -> Result<Option<Vec<u8>>> {
        if !is_hex64(digest) {
            return Ok(None);
        }
        let path = self.layout.blob(digest);
        let bytes = match read_regular(&path) {
            Ok(Some(Ok(b))) => b,
            Ok(Some(Err(what))) => {
                self.move_aside(&path, &format!("it is {what}, not a regular file"));
                return Ok(None);
            }
            Ok(None) => return Ok(None),
            Err(e) => return Err(io("read", &path, e)),
        };
        if blake3::hash(&bytes).to_hex().as_str() != digest {
            self.move_aside(&path, "its content does not match its digest");
            return Ok(None);
        }
        Ok(Some(bytes))
    }

    /// Publishes a record (after the blobs it names).
    pub fn put_record(&self, record: &Record) -> Result<()> {
        if !is_hex64(&record.key) {
            return Err(Error::InvalidKey(record.key.clone()));
        }
        let bytes = serde_json::to_vec_pretty(record).unwrap_or_default();
        let path = self.layout.record(&record.key);
        self.clear_for_write(&path);
        atomic::write(&path, &bytes)?;
        if is_service_name(&record.service) {
            let last = LastBuilt {
                key: record.key.clone(),
                updated_at_ms: now_ms(),
            };
            let pointer = self.layout.last_built(&record.service);
            self.clear_for_write(&pointer);
            atomic::write(&pointer, &serde_json::to_vec(&last).unwrap_or_default())?;
        }
        Ok(())
    }

    /// Reads and verifies the record of `key`: it must parse, name its own key, and its manifest
    /// blob must exist and verify. Anything else is a miss (moved aside with a warning).
    pub fn get_record(&self, key: &str) -> Result<Option<Record>> {
        if !is_hex64(key) {
            return Err(Error::InvalidKey(key.to_string()));
        }
        let path = self.layout.record(key);
        let bytes = match read_regular(&path) {
            Ok(Some(Ok(b))) => b,
            Ok(Some(Err(what))) => {
                self.move_aside(&path, &format!("it is {what}, not a regular file"));
                return Ok(None);
            }
            Ok(None) => return Ok(None),
            Err(e) => return Err(io("read", &path, e)),
        };
        let record: Record = match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            Err(e) => {
                self.move_aside(&path, &format!("unreadable: {e}"));
                return Ok(None);
            }
        };
        if record.key != key || record.format != RECORD_FORMAT {
            self.move_aside(&path, "it names another key or format");
            return Ok(None);
        }
        if self.get_blob(&record.manifest)?.is_none() {
            self.move_aside(&path, "its input manifest is missing");
            return Ok(None);
        }
        Ok(Some(record))
    }

    /// Removes the record of `key` (e.g. its image is gone from the engine).
    pub fn remove_record(&self, key: &str) -> Result<()> {
        if !is_hex64(key) {
            return Err(Error::InvalidKey(key.to_string()));
        }
        remove_if_present(&self.layout.record(key))
    }

    /// The key last built for `service`, if any.
    pub fn last_built(&self, service: &str) -> Option<LastBuilt> {
        if !is_service_name(service) {
            return None;
        }
        let bytes = read_regular(&self.layout.last_built(service)).ok()??.ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Every record file's key.
    pub fn record_keys(&self) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        for path in files_below(&self.layout.records())? {
            if let Some(k) = file_name(&path).strip_suffix(".json") {
                keys.push(k.to_string());
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// The store's counts, and the size of every part of the cache directory.
    pub fn stats(&self) -> Result<Stats> {
        let mut s = Stats::default();
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        for p in files_below(&self.layout.records())? {
            s.records += 1;
            s.bytes += size(&p);
        }
        for p in files_below(&self.layout.blobs())? {
            s.blobs += 1;
            s.bytes += size(&p);
        }
        s.services = files_below(&self.layout.services())?.len() as u64;
        s.corrupt = files_below(&self.layout.corrupt())?.len() as u64;
        s.tmp = self.temp_files()?.len() as u64;
        for name in layout::PARTS {
            let path = self.layout.part(name);
            let mut usage = PartUsage {
                name: name.to_string(),
                ..PartUsage::default()
            };
            if path.is_file() {
                usage.files = 1;
                usage.bytes = size(&path);
            } else {
                for p in all_files_below(&path)? {
                    usage.files += 1;
                    usage.bytes += size(&p);
                }
            }
            s.total_bytes += usage.bytes;
            s.parts.push(usage);
        }
        if let Ok(entries) = std::fs::read_dir(self.layout.dir()) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !layout::PARTS.contains(&name.as_str()) && !atomic::is_temp(&name) {
                    s.unknown.push(name);
                }
            }
        }
        s.unknown.sort();
        Ok(s)
    }

    /// Temp files of the store (written beside their target, or in the old `tmp/`).
    fn temp_files(&self) -> Result<Vec<PathBuf>> {
        let mut out: Vec<PathBuf> = all_files_below(&self.layout.store())?
            .into_iter()
            .filter(|p| atomic::is_temp(&file_name(p)))
            .collect();
        out.extend(files_below(&self.layout.legacy_tmp())?);
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Reads every record and blob, moving aside what fails verification.
    pub fn verify(&self) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        self.aside_non_regular(&mut report.moved_aside)?;
        for path in files_below(&self.layout.blobs())? {
            let name = file_name(&path);
            if !is_hex64(&name) {
                report
                    .moved_aside
                    .push(self.move_aside(&path, "not a blob name"));
                continue;
            }
            let ok = std::fs::read(&path)
                .map(|b| blake3::hash(&b).to_hex().as_str() == name)
                .unwrap_or(false);
            if ok {
                report.blobs_ok += 1;
            } else {
                report
                    .moved_aside
                    .push(self.move_aside(&path, "its content does not match its digest"));
            }
        }
        for key in self.record_keys()? {
            if !is_hex64(&key) {
                let p = self.layout.record(&key);
                report.moved_aside.push(self.move_aside(&p, "not a key"));
                continue;
            }
            let before = self.warnings.lock().map(|w| w.len()).unwrap_or(0);
            match self.get_record(&key)? {
                Some(_) => report.records_ok += 1,
                None => {
                    if let Ok(w) = self.warnings.lock() {
                        report.moved_aside.extend(w[before..].iter().cloned());
                    }
                }
            }
        }
        Ok(report)
    }

    /// Moves aside every entry of the blobs, records and pointers that is not a regular file (a
    /// directory, a symlink, a fifo: nothing the store writes), saying so in `out`.
    fn aside_non_regular(&self, out: &mut Vec<String>) -> Result<()> {
        let mut odd = Vec::new();
        for dir in [self.layout.blobs(), self.layout.records()] {
            let (entries, strays) = sharded_entries(&dir)?;
            odd.extend(strays);
            odd.extend(entries);
        }
        if let Ok(rd) = std::fs::read_dir(self.layout.services()) {
            odd.extend(rd.flatten().map(|e| e.path()));
        }
        for p in odd {
            if atomic::is_temp(&file_name(&p)) {
                continue;
            }
            if let Some(what) = not_regular(&p) {
                out.push(self.move_aside(&p, &format!("it is {what}, not a regular file")));
            }
        }
        Ok(())
    }

    /// Cleans the store: removes records for which `keep` says no, then blobs no record names
    /// (but young ones), last-built pointers whose key has no record, stale temp files, and
    /// corrupt entries moved aside longer ago than `retention`.
    pub fn gc(
        &self,
        keep: &mut dyn FnMut(&Record) -> bool,
        retention: Duration,
    ) -> Result<GcReport> {
        let mut report = GcReport::default();
        let mut odd = Vec::new();
        self.aside_non_regular(&mut odd)?;
        let mut referenced = std::collections::HashSet::new();
        let mut kept = std::collections::HashSet::new();
        for key in self.record_keys()? {
            if !is_hex64(&key) {
                continue;
            }
            let Some(r) = self.get_record(&key)? else {
                continue;
            };
            if keep(&r) {
                referenced.insert(r.manifest.clone());
                if let Some(l) = &r.log {
                    referenced.insert(l.clone());
                }
                kept.insert(key);
            } else {
                report.bytes_freed += remove_counted(&self.layout.record(&key))?;
                report.records_removed += 1;
            }
        }
        for p in files_below(&self.layout.blobs())? {
            if referenced.contains(&file_name(&p)) || age(&p) < YOUNG_BLOB {
                continue;
            }
            report.bytes_freed += remove_counted(&p)?;
            report.blobs_removed += 1;
        }
        for p in files_below(&self.layout.services())? {
            let pointer: Option<LastBuilt> = std::fs::read(&p)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            if pointer.is_none_or(|l| !kept.contains(&l.key)) {
                report.bytes_freed += remove_counted(&p)?;
                report.pointers_removed += 1;
            }
        }
        for p in self.temp_files()? {
            if age(&p) >= STALE_TMP {
                report.bytes_freed += remove_counted(&p)?;
                report.tmp_removed += 1;
            }
        }
        // Whatever was moved aside: files, and directories, symlinks or fifos found where a
        // record or blob should be.
        let corrupt = self.layout.corrupt();
        let entries: Vec<PathBuf> = match std::fs::read_dir(&corrupt) {
            Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io("read directory", &corrupt, e)),
        };
        for p in entries {
            let old = std::fs::symlink_metadata(&p)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .unwrap_or_default();
            if old >= retention {
                report.bytes_freed += remove_entry(&p)?;
                report.corrupt_removed += 1;
            }
        }
        Ok(report)
    }
}

/// What a path that should be a regular file is instead (`None`: a regular file, or nothing).
fn not_regular(p: &Path) -> Option<&'static str> {
    let ft = std::fs::symlink_metadata(p).ok()?.file_type();
    use std::os::unix::fs::FileTypeExt;
    Some(if ft.is_file() {
        return None;
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_symlink() {
        "a symlink"
    } else if ft.is_fifo() {
        "a fifo"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "a device"
    })
}

/// The bytes of the regular file at `p`, opened without following a symlink and without
/// blocking on a fifo: `Ok(None)` when there is nothing there, `Err(Left(what))` when it is
/// something else than a regular file.
fn read_regular(p: &Path) -> std::io::Result<Option<Result<Vec<u8>, &'static str>>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(what) = not_regular(p) {
        return Ok(Some(Err(what)));
    }
    let mut f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(p)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        // Swapped for a symlink since the check.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(Some(Err("a symlink"))),
        Err(e) => return Err(e),
    };
    if !f.metadata()?.is_file() {
        return Ok(Some(Err("not a regular file")));
    }
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    Ok(Some(Ok(bytes)))
}

/// Removes whatever is at `p` (a directory with its content, never following a symlink);
/// returns the bytes freed.
fn remove_entry(p: &Path) -> Result<u64> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            let size: u64 = all_files_below(p)?
                .iter()
                .map(|f| std::fs::symlink_metadata(f).map(|m| m.len()).unwrap_or(0))
                .sum();
            std::fs::remove_dir_all(p).map_err(|e| io("remove", p, e))?;
            Ok(size)
        }
        Ok(_) => remove_counted(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io("remove", p, e)),
    }
}

/// The entries of a sharded directory (`<dir>/<aa>/<name>`) whatever their type, without
/// following a symlink, temp files left out; and the entries at the shard level that are not
/// directories.
fn sharded_entries(dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let (mut entries, mut strays) = (Vec::new(), Vec::new());
    let list = |d: &Path| -> Result<Vec<PathBuf>> {
        match std::fs::read_dir(d) {
            Ok(rd) => rd
                .map(|e| e.map(|e| e.path()).map_err(|e| io("read directory", d, e)))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io("read directory", d, e)),
        }
    };
    for shard in list(dir)? {
        let is_dir = std::fs::symlink_metadata(&shard).is_ok_and(|m| m.is_dir());
        if !is_dir {
            if !atomic::is_temp(&file_name(&shard)) {
                strays.push(shard);
            }
            continue;
        }
        for e in list(&shard)? {
            if !atomic::is_temp(&file_name(&e)) {
                entries.push(e);
            }
        }
    }
    entries.sort();
    strays.sort();
    Ok((entries, strays))
}

/// Removes a file, returning its size; a file already gone is no error.
pub fn remove_counted(p: &Path) -> Result<u64> {
    let size = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    remove_if_present(p)?;
    Ok(size)
}

fn remove_if_present(p: &Path) -> Result<()> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("remove", p, e)),
    }
}

/// Every regular file below `dir` (shard directories and their files, or flat), without the
/// temp files of writes in progress.
fn files_below(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(all_files_below(dir)?
        .into_iter()
        .filter(|p| !atomic::is_temp(&file_name(p)))
        .collect())
}

/// Every regular file below `dir`, temp files included, sorted.
pub fn all_files_below(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io("read directory", &d, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io("read directory", &d, e))?;
            let ft = entry.file_type().map_err(|e| io("read", entry.path(), e))?;
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_file() {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(store: &Store, key: &str) -> Record {
        let manifest = store.put_blob(b"{\"files\":[]}").expect("blob");
        Record {
            format: RECORD_FORMAT,
            key: key.to_string(),
            service: "api".into(),
            image: "kc-api".into(),
            image_id: "sha256:00".into(),
            tags: vec!["kc-api:latest".into()],
            duration_ms: 10,
            created_at_ms: now_ms(),
            manifest,
            log: None,
        }
    }

    const K: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn round_trip_and_last_built() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        assert!(store.get_record(K).expect("get").is_none());
        let r = record(&store, K);
        store.put_record(&r).expect("put");
        assert_eq!(store.get_record(K).expect("get"), Some(r));
        assert_eq!(store.last_built("api").expect("last").key, K);
        let s = store.stats().expect("stats");
        assert_eq!((s.records, s.blobs), (1, 1));
        assert!(store.verify().expect("verify").is_clean());
    }

    #[test]
    fn corrupt_entries_are_misses_moved_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let r = record(&store, K);
        store.put_record(&r).expect("put");
        // Corrupt the manifest blob: the record is now a miss.
        std::fs::write(store.layout.blob(&r.manifest), b"garbage").expect("write");
        assert!(store.get_record(K).expect("get").is_none());
        let warnings = store.take_warnings();
        assert!(
            warnings.iter().any(|w| w.contains("moved aside")),
            "{warnings:?}"
        );
        assert_eq!(store.stats().expect("stats").records, 0);

        // A truncated record file is a miss too.
        let r = record(&store, K);
        store.put_record(&r).expect("put");
        std::fs::write(store.layout.record(K), b"{\"format\":1,").expect("write");
        assert!(store.get_record(K).expect("get").is_none());
        assert!(store.verify().expect("verify").is_clean());
    }

    /// The same entry moved aside many times in a row (within one millisecond, as on a fast
    /// machine): every move must get its own name, or a rename fails, the directory stays in the
    /// way and the write after it fails ("Is a directory"). CI hit this once.
    #[test]
    fn the_same_entry_moved_aside_twice_in_a_millisecond_does_not_block_the_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let r = record(&store, K);
        let rec = store.layout.record(K);
        for i in 0..50 {
            if rec.exists() {
                std::fs::remove_file(&rec).expect("rm");
            }
            std::fs::create_dir_all(rec.join("inner")).expect("mkdir");
            std::fs::write(rec.join("inner/x"), b"x").expect("write");
            store
                .put_record(&r)
                .unwrap_or_else(|e| panic!("write {i} over a directory: {e}"));
        }
        assert_eq!(store.get_record(K).expect("get"), Some(r));
        assert_eq!(
            std::fs::read_dir(store.layout.corrupt())
                .expect("ls")
                .count(),
            50
        );
    }

    /// Each kind of entry that is not a regular file, where a record, a blob or a pointer
    /// should be: a directory (with content), a symlink (to a valid record elsewhere, and
    /// dangling), a fifo (a read would block). Each is a miss moved aside, reported by `verify`;
    /// the next write works; `gc` with no retention removes what was moved aside; then the
    /// store verifies clean.
    #[test]
    fn entries_that_are_not_regular_files_are_moved_aside_and_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let r = record(&store, K);
        let rec = store.layout.record(K);
        let blob = store.layout.blob(&r.manifest);
        // A directory at the record's path: a miss, and a write puts the record back.
        std::fs::create_dir_all(rec.join("inner")).expect("mkdir");
        std::fs::write(rec.join("inner/x"), b"x").expect("write");
        assert!(store.get_record(K).expect("get").is_none());
        let w = store.take_warnings();
        assert!(
            w.iter()
                .any(|w| w.contains("it is a directory, not a regular file")),
            "{w:?}"
        );
        store
            .put_record(&r)
            .expect("a write after the directory was moved aside");
        assert_eq!(store.get_record(K).expect("get"), Some(r.clone()));
        // A directory put back while the store is not looking: `put_record` moves it aside.
        std::fs::remove_file(&rec).expect("rm");
        std::fs::create_dir(&rec).expect("mkdir");
        store.put_record(&r).expect("put over a directory");
        assert_eq!(store.get_record(K).expect("get"), Some(r.clone()));
        store.take_warnings();

        // Odd entries everywhere, found by `verify` without a read of any of them.
        let elsewhere = dir.path().join("elsewhere.json");
        std::fs::copy(&rec, &elsewhere).expect("copy");
        let k2 = "ab".repeat(32);
        let k3 = "cd".repeat(32);
        let k4 = "ef".repeat(32);
        std::fs::create_dir_all(store.layout.record(&k2).parent().expect("p")).expect("mkdir");
        std::os::unix::fs::symlink(&elsewhere, store.layout.record(&k2)).expect("symlink");
        std::fs::create_dir_all(store.layout.record(&k3).parent().expect("p")).expect("mkdir");
        let fifo = store.layout.record(&k3);
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo")
            .success());
        std::fs::create_dir_all(store.layout.record(&k4).parent().expect("p")).expect("mkdir");
        std::os::unix::fs::symlink("/nonexistent", store.layout.record(&k4)).expect("symlink");
        let b2 = store.layout.blob(&"12".repeat(32));
        std::fs::create_dir_all(&b2).expect("a directory at a blob path");
        std::fs::create_dir_all(store.layout.services()).expect("mkdir");
        std::fs::create_dir(store.layout.last_built("web")).expect("a directory pointer");
        // A blob swapped for a symlink to a copy with the right content is still refused.
        let copy = dir.path().join("blob-copy");
        std::fs::copy(&blob, &copy).expect("copy");
        std::fs::remove_file(&blob).expect("rm");
        std::os::unix::fs::symlink(&copy, &blob).expect("symlink");
        let report = store.verify().expect("verify");
        assert!(!report.is_clean());
        let said = report.moved_aside.join("\n");
        for what in ["a symlink", "a directory", "a fifo"] {
            assert!(
                said.contains(&format!("it is {what}, not a regular file")),
                "{said}"
            );
        }
        for k in [&k2, &k3, &k4] {
            assert!(store.get_record(k).expect("get").is_none(), "{k}");
        }
        assert_eq!(report.moved_aside.len(), 7, "{said}");
        // Verified again: clean (the record lost its manifest, so it was moved aside too).
        assert!(store.verify().expect("verify").is_clean());
        assert_eq!(store.stats().expect("stats").records, 0);
        // What was moved aside, whatever it is, is cleaned up without a retention.
        let gc = store.gc(&mut |_| true, Duration::ZERO).expect("gc");
        assert!(gc.corrupt_removed >= 7, "{gc:?}");
        assert_eq!(
            std::fs::read_dir(store.layout.corrupt())
                .expect("ls")
                .count(),
            0
        );
        // The outside files a symlink pointed at are untouched.
        assert!(elsewhere.is_file() && copy.is_file());
        store.put_record(&record(&store, K)).expect("put");
        assert!(store.get_record(K).expect("get").is_some());
        assert!(store.verify().expect("verify").is_clean());
    }

    #[test]
    fn gc_keeps_what_keep_says_and_referenced_blobs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let r = record(&store, K);
        store.put_record(&r).expect("put");
        let report = store
            .gc(&mut |_| true, Duration::from_secs(3600))
            .expect("gc");
        assert_eq!(report.records_removed, 0);
        assert!(store.get_record(K).expect("get").is_some());
        let report = store
            .gc(&mut |_| false, Duration::from_secs(3600))
            .expect("gc");
        assert_eq!(report.records_removed, 1);
        assert!(store.get_record(K).expect("get").is_none());
    }

    #[test]
    fn concurrent_writers_leave_a_valid_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        let handles: Vec<_> = (0..8u64)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let store = Store::open(&path).expect("open");
                    for j in 0..20u8 {
                        let key = blake3::hash(&[j % 5]).to_hex().to_string();
                        let mut r = record(&store, &key);
                        r.duration_ms = i;
                        store.put_record(&r).expect("put");
                        let _ = store.get_record(&key).expect("get");
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread");
        }
        let store = Store::open(&path).expect("open");
        let report = store.verify().expect("verify");
        assert!(report.is_clean(), "{:?}", report.moved_aside);
        assert_eq!(report.records_ok, 5);
        assert_eq!(store.stats().expect("stats").tmp, 0);
    }
}
