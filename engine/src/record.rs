//! Record: what the cache keeps of a run. A verified image is recorded under its key (its input
//! manifest and log as blobs, then the record, atomically, so the next plan can say `cached` and
//! tell what changed since); a failed build keeps only its log, under `logs/`. Nothing is
//! recorded for a build that failed, was interrupted or superseded, or failed verification.

use std::path::PathBuf;

use crate::digest::ImageKey;
use crate::key::InputManifest;
use crate::pipeline::Analysis;
use crate::{Error, Result};

/// One image to record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry<'a> {
    pub service: &'a str,
    pub image: &'a str,
    pub key: &'a ImageKey,
    /// Every input of the image (shown by the next plan's reasons).
    pub manifest: &'a InputManifest,
    /// The engine's image id (`sha256:...`).
    pub image_id: &'a str,
    pub duration_ms: u64,
    pub log: Option<&'a [u8]>,
}

/// Records an image: the input manifest and the log as blobs, then the record.
pub(crate) fn record(store: &cache::Store, e: &Entry<'_>) -> Result<cache::Record> {
    let manifest = serde_json::to_vec(e.manifest)
        .map_err(|err| Error::Other(format!("cannot encode the inputs of {}: {err}", e.service)))?;
    let manifest = store.put_blob(&manifest)?;
    let log = e.log.map(|l| store.put_blob(l)).transpose()?;
    let record = cache::Record {
        format: cache::RECORD_FORMAT,
        key: e.key.to_hex(),
        service: e.service.to_string(),
        image: e.image.to_string(),
        image_id: e.image_id.to_string(),
        tags: crate::tags::pair(e.image, e.key).to_vec(),
        duration_ms: e.duration_ms,
        created_at_ms: cache::now_ms(),
        manifest,
        log,
    };
    store.put_record(&record)?;
    Ok(record)
}

/// Records image `image_id` as the image of service `service` of `analysis` (an index into its
/// services), at its analysed key: for drivers that bring images in themselves (the benchmark
/// seeds records this way).
pub fn record_analysed(
    store: &cache::Store,
    analysis: &Analysis,
    service: usize,
    image_id: &str,
    duration_ms: u64,
) -> Result<cache::Record> {
    let img = analysis
        .image(service)
        .ok_or_else(|| Error::Other(format!("service {service} was not analysed")))?;
    let svc = &analysis.ws.services[service];
    let manifest = img.input_manifest(&analysis.ws);
    record(
        store,
        &Entry {
            service: &svc.name,
            image: &svc.image,
            key: &img.key,
            manifest: &manifest,
            image_id,
            duration_ms,
            log: None,
        },
    )
}

/// Keeps the log of a failed build under the cache directory's `logs/`; returns where.
pub(crate) fn save_failure_log(
    layout: &cache::Layout,
    service: &str,
    key: &ImageKey,
    log: &[u8],
) -> Result<PathBuf> {
    let path = layout.failure_log(service, &key.to_hex());
    cache::atomic::write_with(&path, log, false)?;
    Ok(path)
}
