//! Plan: for each image, `build` or `cached`, and why (as cargo's `DirtyReason`: each reason
//! carries what changed, so the story of a rebuild can be told).

use std::collections::BTreeMap;

use serde::Serialize;

use rayon::prelude::*;

use crate::digest::{FileDigest, ImageKey};
use crate::key::{InputManifest, KeyManifest};
use crate::pipeline::Analysis;
use crate::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Build,
    Cached,
}

/// Why an image must be built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// `--force` was given.
    Forced,
    /// Nothing was ever built for this service (in this cache).
    NeverBuilt,
    /// A record exists for the key but its image is gone from the engine.
    ImageMissing {
        image_id: String,
    },
    /// The previous build's inputs are not known (its record or manifest is gone).
    PreviousUnknown {
        key: String,
    },
    FilesAdded {
        paths: Vec<String>,
    },
    FilesRemoved {
        paths: Vec<String>,
    },
    FilesModified {
        paths: Vec<String>,
    },
    ModeChanged {
        paths: Vec<String>,
    },
    DockerfileChanged {
        path: String,
    },
    BuildArgsChanged {
        old: BTreeMap<String, String>,
        new: BTreeMap<String, String>,
    },
    TargetChanged {
        old: Option<String>,
        new: Option<String>,
    },
    PlatformChanged {
        old: Option<String>,
        new: Option<String>,
    },
    BaseImagesChanged {
        old: Vec<String>,
        new: Vec<String>,
    },
    FromImageChanged {
        service: String,
    },
    KeyFormatChanged {
        old: u32,
        new: u32,
    },
}

const SHOW: usize = 5;

fn list(paths: &[String]) -> String {
    let mut s = paths
        .iter()
        .take(SHOW)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if paths.len() > SHOW {
        s.push_str(&format!(" and {} more", paths.len() - SHOW));
    }
    s
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Forced => write!(f, "forced with --force"),
            Reason::NeverBuilt => write!(f, "no previous build recorded"),
            Reason::ImageMissing { image_id } => {
                write!(f, "the recorded image {image_id} is gone from the engine")
            }
            Reason::PreviousUnknown { key } => write!(
                f,
                "the inputs of the previous build ({}) are unknown",
                &key[..key.len().min(12)]
            ),
            Reason::FilesAdded { paths } => write!(f, "added: {}", list(paths)),
            Reason::FilesRemoved { paths } => write!(f, "removed: {}", list(paths)),
            Reason::FilesModified { paths } => write!(f, "modified: {}", list(paths)),
            Reason::ModeChanged { paths } => write!(f, "mode changed: {}", list(paths)),
            Reason::DockerfileChanged { path } => write!(f, "Dockerfile changed: {path}"),
            Reason::BuildArgsChanged { old, new } => {
                write!(f, "build args changed: {old:?} -> {new:?}")
            }
            Reason::TargetChanged { old, new } => write!(f, "target changed: {old:?} -> {new:?}"),
            Reason::PlatformChanged { old, new } => {
                write!(f, "platform changed: {old:?} -> {new:?}")
            }
            Reason::BaseImagesChanged { old, new } => {
                write!(f, "base images changed: {old:?} -> {new:?}")
            }
            Reason::FromImageChanged { service } => {
                write!(f, "the image it builds FROM changed: {service}")
            }
            Reason::KeyFormatChanged { old, new } => {
                write!(f, "key format changed: {old} -> {new}")
            }
        }
    }
}

/// The plan for one image.
#[derive(Debug, Clone, Serialize)]
pub struct ImagePlan {
    /// Index into the workspace's services.
    #[serde(skip)]
    pub index: usize,
    pub service: String,
    pub image: String,
    pub key: ImageKey,
    pub action: Action,
    pub reasons: Vec<Reason>,
    /// The recorded image id, when cached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
}

/// Decides, for each analysed image, whether it must be built.
///
/// `image_exists` tells whether a recorded image is still in the engine (a record whose image is
/// gone is a miss, DESIGN.md principle 6); a dry run without an engine passes `|_| true`.
pub fn plan(
    analysis: &Analysis,
    store: &cache::Store,
    force: bool,
    image_exists: &mut dyn FnMut(&cache::Record) -> bool,
) -> Result<Vec<ImagePlan>> {
    let ws = &analysis.ws;
    let mut plans: Vec<ImagePlan> = Vec::new();
    let mut diffs: Vec<usize> = Vec::new();
    for img in &analysis.images {
        let svc = &ws.services[img.service];
        let key_hex = img.key.to_hex();
        let mut reasons = Vec::new();
        let mut image_id = None;
        let record = store.get_record(&key_hex)?;
        match &record {
            Some(r) if image_exists(r) => {
                image_id = Some(r.image_id.clone());
            }
            Some(r) => reasons.push(Reason::ImageMissing {
                image_id: r.image_id.clone(),
            }),
            None => {}
        }
        if force {
            reasons.insert(0, Reason::Forced);
        }
        // Without a record, the image is built; why is told by the diff below (`NeverBuilt`
        // stands in until then).
        if record.is_none() {
            reasons.push(Reason::NeverBuilt);
        }
        let action = if reasons.is_empty() {
            Action::Cached
        } else {
            Action::Build
        };
        plans.push(ImagePlan {
            index: img.service,
            service: svc.name.clone(),
            image: svc.image.clone(),
            key: img.key,
            action,
            reasons,
            image_id: if action == Action::Cached {
                image_id
            } else {
                None
            },
        });
        if record.is_none() {
            diffs.push(plans.len() - 1);
        }
    }
    // What changed since each service's last build: in parallel (each reads and parses a
    // recorded manifest of every file of the context).
    let found: Vec<Vec<Reason>> = diffs
        .par_iter()
        .map(|&i| diff_against_last(analysis, store, &analysis.images[i]))
        .collect::<Result<_>>()?;
    for (i, why) in diffs.into_iter().zip(found) {
        let reasons = &mut plans[i].reasons;
        reasons.retain(|r| *r != Reason::NeverBuilt);
        reasons.extend(why);
    }
    Ok(plans)
}

/// The reasons an image's inputs differ from those of the last build of its service.
fn diff_against_last(
    analysis: &Analysis,
    store: &cache::Store,
    img: &crate::pipeline::ImageInputs,
) -> Result<Vec<Reason>> {
    let ws = &analysis.ws;
    let svc = &ws.services[img.service];
    let Some(last) = store.last_built(&svc.name) else {
        return Ok(vec![Reason::NeverBuilt]);
    };
    let previous: Option<InputManifest> = store
        .get_record(&last.key)?
        .and_then(|r| store.get_blob(&r.manifest).ok().flatten())
        .and_then(|b| serde_json::from_slice(&b).ok());
    let Some(prev) = previous else {
        return Ok(vec![Reason::PreviousUnknown { key: last.key }]);
    };
    let files = img
        .context
        .files
        .iter()
        .map(|f| (&*f.path, f.mode, f.digest));
    Ok(diff_parts(&prev, &img.manifest, img.key, files))
}

/// The differences between two input manifests, as reasons.
pub fn diff(old: &InputManifest, new: &InputManifest) -> Vec<Reason> {
    let files = new
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.mode, f.digest));
    diff_parts(old, &new.manifest, new.key, files)
}

/// [`diff`] against a new manifest given in parts: its key manifest, key, and files.
fn diff_parts<'a>(
    old: &InputManifest,
    nm: &KeyManifest,
    new_key: ImageKey,
    new_files: impl Iterator<Item = (&'a str, u32, FileDigest)>,
) -> Vec<Reason> {
    let mut reasons = Vec::new();
    let om = &old.manifest;
    if om.format != nm.format {
        reasons.push(Reason::KeyFormatChanged {
            old: om.format,
            new: nm.format,
        });
    }
    if om.dockerfile != nm.dockerfile || om.dockerfile_digest != nm.dockerfile_digest {
        reasons.push(Reason::DockerfileChanged {
            path: nm.dockerfile.clone(),
        });
    }
    // Both sides in path order (contexts are; a manifest from elsewhere is sorted here), then
    // one merge.
    let mut old_files: Vec<(&str, u32, FileDigest)> = old
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.mode, f.digest))
        .collect();
    let mut new_files: Vec<(&str, u32, FileDigest)> = new_files.collect();
    for v in [&mut old_files, &mut new_files] {
        if !v.is_sorted_by(|a, b| a.0 <= b.0) {
            v.sort_by(|a, b| a.0.cmp(b.0));
        }
    }
    let mut added = Vec::new();
    let mut removed = Vec::new();
    let mut modified = Vec::new();
    let mut mode = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < old_files.len() || j < new_files.len() {
        let order = match (old_files.get(i), new_files.get(j)) {
            (Some(o), Some(n)) => o.0.cmp(n.0),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Less => {
                removed.push(old_files[i].0.to_string());
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                added.push(new_files[j].0.to_string());
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let (o, n) = (old_files[i], new_files[j]);
                if o.2 != n.2 && n.0 != nm.dockerfile {
                    modified.push(n.0.to_string());
                }
                if o.1 != n.1 {
                    mode.push(n.0.to_string());
                }
                i += 1;
                j += 1;
            }
        }
    }
    if !added.is_empty() {
        reasons.push(Reason::FilesAdded { paths: added });
    }
    if !removed.is_empty() {
        reasons.push(Reason::FilesRemoved { paths: removed });
    }
    if !modified.is_empty() {
        reasons.push(Reason::FilesModified { paths: modified });
    }
    if !mode.is_empty() {
        reasons.push(Reason::ModeChanged { paths: mode });
    }
    if om.build_args != nm.build_args {
        reasons.push(Reason::BuildArgsChanged {
            old: om.build_args.clone(),
            new: nm.build_args.clone(),
        });
    }
    if om.target != nm.target {
        reasons.push(Reason::TargetChanged {
            old: om.target.clone(),
            new: nm.target.clone(),
        });
    }
    if om.platform != nm.platform {
        reasons.push(Reason::PlatformChanged {
            old: om.platform.clone(),
            new: nm.platform.clone(),
        });
    }
    if om.base_images != nm.base_images {
        let refs = |v: &[crate::key::BaseImage]| {
            v.iter()
                .map(|b| match &b.digest {
                    Some(d) => format!("{}@{d}", b.reference),
                    None => b.reference.clone(),
                })
                .collect()
        };
        reasons.push(Reason::BaseImagesChanged {
            old: refs(&om.base_images),
            new: refs(&nm.base_images),
        });
    }
    for (s, k) in &nm.from_images {
        if om.from_images.get(s) != Some(k) {
            reasons.push(Reason::FromImageChanged { service: s.clone() });
        }
    }
    if reasons.is_empty() && old.key != new_key {
        // Same inputs by every measure above, yet another key: the context encoding changed.
        reasons.push(Reason::KeyFormatChanged {
            old: om.format,
            new: nm.format,
        });
    }
    reasons
}

/// Records a successful build: the input manifest as a blob, then the record (atomically).
pub fn record_build(
    store: &cache::Store,
    analysis: &Analysis,
    service: usize,
    image_id: &str,
    tags: Vec<String>,
    duration_ms: u64,
    log: Option<&[u8]>,
) -> Result<cache::Record> {
    let img = analysis
        .image(service)
        .ok_or_else(|| crate::Error::Other(format!("service {service} was not analysed")))?;
    let ws = &analysis.ws;
    let manifest = serde_json::to_vec(&img.input_manifest(ws)).unwrap_or_default();
    let manifest = store.put_blob(&manifest)?;
    let log = log.map(|l| store.put_blob(l)).transpose()?;
    let record = cache::Record {
        format: cache::RECORD_FORMAT,
        key: img.key.to_hex(),
        service: ws.services[service].name.clone(),
        image: ws.services[service].image.clone(),
        image_id: image_id.to_string(),
        tags,
        duration_ms,
        created_at_ms: cache::now_ms(),
        manifest,
        log,
    };
    store.put_record(&record)?;
    Ok(record)
}
