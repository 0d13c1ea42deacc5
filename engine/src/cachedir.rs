//! The cache directory as a whole (`cache stats`, `cache gc`): every part the layout names
//! ([`cache::layout`]) is reported and cleaned, so a cache used for months stays bounded.
//!
//! `gc` removes:
//! - records whose image is gone from the engine or carries another key label, or whose service
//!   is no longer one (every record with `all`), the blobs only they named, last-built pointers
//!   to a removed record, stale temp files, corrupt entries past the retention (every one with
//!   `all`), entries that are not regular files where records and blobs should be (moved aside,
//!   as `cache verify` does) ([`cache::Store::gc`]);
//! - verification markers of keys that have no record any more;
//! - stat cache entries of files no context holds, and pruned lockfiles no service uses (the
//!   workspace is analysed once, and both caches rewritten to exactly what it uses);
//! - scratch files in `work/` older than an hour (builds remove their own);
//! - failure logs of services that are gone, of keys that are no longer the service's, or past
//!   the retention.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use cache::{GcReport, Layout, Stats};

use crate::execute::Images;
use crate::hash::StatCache;
use crate::pipeline;
use crate::prunecache::PruneCache;
use crate::Result;

/// How long corrupt entries and failure logs are kept by default.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// What `gc` cleans.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Remove every record, whether or not its image exists.
    pub all: bool,
    /// How long corrupt entries and failure logs are kept.
    pub retention: Duration,
    /// The workspace, analysed (every service) to know which stat entries, prunings and logs are
    /// in use; `None` leaves those parts alone.
    pub workspace: Option<pipeline::Options>,
}

/// The store's counts and every part's size.
pub fn stats(cache_dir: &Path) -> Result<Stats> {
    Ok(cache::Store::open(cache_dir)?.stats()?)
}

/// Cleans every part of the cache directory (see the module's documentation). `images` is the
/// engine's image store (records are kept as they are without one, unless `all`).
pub fn gc(cache_dir: &Path, images: Option<&dyn Images>, opts: &GcOptions) -> Result<GcReport> {
    let layout = Layout::new(cache_dir);
    let store = cache::Store::open(cache_dir)?;
    let mut warnings = Vec::new();

    // The workspace as it is now: its services and their keys; the analysis caches are rewritten
    // to exactly what it uses.
    let mut current: Option<HashMap<String, String>> = None;
    let mut compacted = (0, 0, 0);
    if let Some(w) = &opts.workspace {
        let before = (
            StatCache::load(&layout.stat_cache()).0.len(),
            PruneCache::load(&layout.pruned_lockfiles()).0.len(),
            size(&layout.stat_cache()) + size(&layout.pruned_lockfiles()),
        );
        let mut w = w.clone();
        w.services.clear();
        w.cache_dir = Some(cache_dir.to_path_buf());
        w.stat_cache = true;
        w.compact_caches = true;
        match pipeline::analyze(&w) {
            Ok(a) => {
                warnings.extend(a.warnings.iter().cloned());
                let after = (
                    StatCache::load(&layout.stat_cache()).0.len(),
                    PruneCache::load(&layout.pruned_lockfiles()).0.len(),
                    size(&layout.stat_cache()) + size(&layout.pruned_lockfiles()),
                );
                compacted = (
                    before.0.saturating_sub(after.0) as u64,
                    before.1.saturating_sub(after.1) as u64,
                    before.2.saturating_sub(after.2),
                );
                current = Some(
                    a.images
                        .iter()
                        .map(|i| (a.ws.services[i.service].name.clone(), i.key.to_hex()))
                        .collect(),
                );
            }
            Err(e) => warnings.push(format!(
                "the workspace could not be analysed, so the stat cache, the pruned lockfiles, the logs and the records of services that are gone were left as they are: {e}"
            )),
        }
    }

    // Records: of an image still in the engine with its key label, of a service still there.
    let labels: Option<HashMap<String, Option<String>>> = match images {
        Some(i) => Some(i.list()?.into_iter().map(|i| (i.id, i.key)).collect()),
        None => None,
    };
    let mut report = store.gc(
        &mut |r| {
            if opts.all {
                return false;
            }
            let service_there = current.as_ref().is_none_or(|c| c.contains_key(&r.service));
            let image_there = match &labels {
                None => true,
                Some(l) => l
                    .get(&r.image_id)
                    .is_some_and(|k| k.as_deref() == Some(&r.key)),
            };
            service_there && image_there
        },
        // `all` empties the store: corrupt entries go too, whatever their age.
        if opts.all {
            Duration::ZERO
        } else {
            opts.retention
        },
    )?;
    report.warnings = warnings;
    if labels.is_none() && !opts.all {
        report
            .warnings
            .push("no engine to ask: records were kept whatever their image".to_string());
    }
    report.warnings.extend(store.take_warnings());
    report.stat_entries_removed = compacted.0;
    report.prunings_removed = compacted.1;
    report.bytes_freed += compacted.2;

    // Verification markers of keys without a record.
    for p in cache::all_files_below(&layout.verified_dir())? {
        let name = file_name(&p);
        let keep = if cache::atomic::is_temp(&name) {
            cache::age(&p) < cache::STALE_TMP
        } else {
            Layout::verified_key(&name)
                .filter(|k| cache::is_key(k))
                .is_some_and(|k| matches!(store.get_record(k), Ok(Some(_))))
        };
        if !keep {
            report.bytes_freed += cache::remove_counted(&p)?;
            report.markers_removed += 1;
        }
    }

    // Scratch files of builds long ended.
    for p in cache::all_files_below(&layout.work())? {
        if cache::age(&p) >= cache::STALE_TMP {
            report.bytes_freed += cache::remove_counted(&p)?;
            report.work_removed += 1;
        }
    }

    // Failure logs: of a service that is still one, at its current key, within the retention.
    for p in cache::all_files_below(&layout.logs())? {
        let name = file_name(&p);
        let old = cache::age(&p) >= opts.retention;
        let stale = match &current {
            None => false,
            Some(keys) => match Layout::failure_log_service(&name) {
                Some(service) => keys
                    .get(service)
                    .is_none_or(|key| layout.failure_log(service, key) != p),
                None => true,
            },
        };
        if old || stale {
            report.bytes_freed += cache::remove_counted(&p)?;
            report.logs_removed += 1;
        }
    }
    Ok(report)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}
