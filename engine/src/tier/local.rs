//! The local tier: records in the local store ([`cache::Store`]), checked against the engine's
//! images. A record is a hit only when its image is still in the engine and carries the key label
//! of the key it is recorded under; otherwise it is a miss that says why (DESIGN.md principle 6).
//! Without an engine to ask, records are trusted as they are, and [`LocalTier::checks_engine`]
//! says so.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{Hit, Lookup, Miss, Tier, Want};
use crate::execute::{Images, LocalImage};
use crate::record::{self, Entry};
use crate::tags;
use crate::Result;

/// What the engine holds, read once per plan (or watch batch) and kept up to date by the run.
#[derive(Debug, Default)]
struct Snapshot {
    /// Image id -> its key label.
    labels: HashMap<String, Option<String>>,
    /// `repository:tag` -> image id.
    tags: HashMap<String, String>,
}

/// The local store, checked against the engine.
pub struct LocalTier<'a> {
    store: &'a cache::Store,
    images: Option<&'a dyn Images>,
    snapshot: Mutex<Option<Snapshot>>,
}

impl<'a> LocalTier<'a> {
    pub fn new(store: &'a cache::Store, images: Option<&'a dyn Images>) -> LocalTier<'a> {
        LocalTier {
            store,
            images,
            snapshot: Mutex::new(None),
        }
    }

    pub fn records(&self) -> &cache::Store {
        self.store
    }

    /// Whether records are checked against an engine (else they are trusted).
    pub fn checks_engine(&self) -> bool {
        self.images.is_some()
    }

    /// Reads the engine's images again at the next lookup.
    pub fn refresh(&self) {
        if let Ok(mut s) = self.snapshot.lock() {
            *s = None;
        }
    }

    /// Runs `f` on the engine's images (read first if need be); `None` without an engine.
    fn with_snapshot<R>(&self, f: impl FnOnce(&mut Snapshot) -> R) -> Result<Option<R>> {
        let Some(images) = self.images else {
            return Ok(None);
        };
        let mut guard = self
            .snapshot
            .lock()
            .map_err(|_| crate::Error::Other("the image snapshot lock is poisoned".into()))?;
        if guard.is_none() {
            let mut s = Snapshot::default();
            for img in images.list()? {
                for t in &img.tags {
                    s.tags.insert(t.clone(), img.id.clone());
                }
                s.labels.insert(img.id, img.key);
            }
            *guard = Some(s);
        }
        Ok(guard.as_mut().map(f))
    }

    /// Notes an image the run brought into the engine (built or pulled).
    pub fn note(&self, image: &LocalImage) {
        let _ = self.with_snapshot(|s| {
            s.labels.insert(image.id.clone(), image.key.clone());
        });
    }

    /// Whether `<image>:latest` names `image_id` (always so without an engine).
    pub fn is_latest(&self, image: &str, image_id: &str) -> bool {
        let latest = format!("{image}:{}", tags::LATEST);
        self.with_snapshot(|s| s.tags.get(&latest).map(String::as_str) == Some(image_id))
            .ok()
            .flatten()
            .unwrap_or(true)
    }

    /// Points the tag pair of `want` at `image_id`, where it does not already; whether any tag
    /// moved. Without an engine, nothing is tagged.
    pub fn tag(&self, want: &Want<'_>, image_id: &str) -> Result<bool> {
        let Some(images) = self.images else {
            return Ok(false);
        };
        let mut moved = false;
        for t in tags::pair(want.image, want.key) {
            let current = self.with_snapshot(|s| s.tags.get(&t).cloned())?.flatten();
            if current.as_deref() == Some(image_id) {
                continue;
            }
            images.tag(image_id, &t)?;
            moved = true;
            let _ = self.with_snapshot(|s| s.tags.insert(t.clone(), image_id.to_string()));
        }
        Ok(moved)
    }
}

impl Tier for LocalTier<'_> {
    fn describe(&self) -> String {
        format!("the local cache `{}`", self.store.dir().display())
    }

    fn lookup(&self, want: &Want<'_>) -> Result<Lookup> {
        let Some(r) = self.store.get_record(&want.key.to_hex())? else {
            return Ok(Lookup::Miss(Miss::NotRecorded));
        };
        let label = self.with_snapshot(|s| s.labels.get(&r.image_id).cloned())?;
        let hit = || {
            Lookup::Hit(Hit {
                image_id: Some(r.image_id.clone()),
                location: "the local cache".to_string(),
                duration_ms: Some(r.duration_ms),
                digest: None,
                signed_by: None,
            })
        };
        Ok(match label {
            // No engine to ask: the record is trusted.
            None => hit(),
            Some(None) => Lookup::Miss(Miss::ImageGone {
                image_id: r.image_id.clone(),
            }),
            Some(Some(found)) if found.as_deref() == Some(want.key.to_hex().as_str()) => hit(),
            Some(Some(found)) => Lookup::Miss(Miss::Mislabelled {
                image_id: Some(r.image_id.clone()),
                found,
            }),
        })
    }

    fn fetch(&self, want: &Want<'_>, _hit: &Hit) -> Result<LocalImage> {
        match self.lookup(want)? {
            Lookup::Hit(Hit {
                image_id: Some(id), ..
            }) => Ok(LocalImage {
                id,
                key: Some(want.key.to_hex()),
                tags: Vec::new(),
            }),
            _ => Err(crate::Error::Other(format!(
                "{} holds no image for {} at {}",
                self.describe(),
                want.service,
                want.key.short(12)
            ))),
        }
    }

    fn store(&self, _want: &Want<'_>, entry: &Entry<'_>) -> Result<Option<String>> {
        record::record(self.store, entry)?;
        Ok(Some("recorded".to_string()))
    }
}
