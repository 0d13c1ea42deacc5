//! Plan: for each image, `build` or `cached`, and why (as cargo's `DirtyReason`: each reason
//! carries what changed, so the story of a rebuild can be told).

use std::collections::BTreeMap;

use serde::Serialize;

use rayon::prelude::*;

use crate::digest::{FileDigest, ImageKey};
use crate::key::{InputManifest, KeyManifest};
use crate::pipeline::{Analysis, ImageInputs};
use crate::tier::{LocalTier, Lookup, Miss, Tier, Want};
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
    /// A record exists for the key but its image carries another key label (or none).
    ImageMislabelled {
        image_id: String,
        found: Option<String>,
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
            Reason::ImageMislabelled { image_id, found } => write!(
                f,
                "the recorded image {image_id} carries the key label {}, not this key",
                found.as_deref().unwrap_or("(none)")
            ),
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

/// Decides, for each analysed image, whether it must be built: the local tier is looked up
/// (a record whose image is gone from the engine, or carries another key label, is a miss,
/// DESIGN.md principle 6), and for an image never built under its key, what changed since the
/// last build of its service.
pub fn plan(analysis: &Analysis, local: &LocalTier<'_>, force: bool) -> Result<Vec<ImagePlan>> {
    let ws = &analysis.ws;
    let mut plans: Vec<ImagePlan> = Vec::new();
    for img in &analysis.images {
        let svc = &ws.services[img.service];
        plans.push(decide(
            img.service,
            &svc.name,
            &svc.image,
            img.key,
            local,
            force,
        )?);
    }
    // What changed since each service's last build: in parallel (each reads and parses a
    // recorded manifest of every file of the context).
    let diffs: Vec<usize> = (0..plans.len())
        .filter(|&i| plans[i].reasons.contains(&Reason::NeverBuilt))
        .collect();
    let found: Vec<Vec<Reason>> = diffs
        .par_iter()
        .map(|&i| {
            let img = &analysis.images[i];
            diff_against_last(local.records(), &ws.services[img.service].name, img)
        })
        .collect::<Result<_>>()?;
    for (i, why) in diffs.into_iter().zip(found) {
        explain_never_built(&mut plans[i].reasons, why);
    }
    Ok(plans)
}

/// The plan of one image, for a driver that plans as it goes (`watch`).
pub(crate) fn plan_one(
    index: usize,
    service: &str,
    image: &str,
    inputs: &ImageInputs,
    local: &LocalTier<'_>,
) -> Result<ImagePlan> {
    let mut p = decide(index, service, image, inputs.key, local, false)?;
    if p.reasons.contains(&Reason::NeverBuilt) {
        let why = diff_against_last(local.records(), service, inputs)?;
        explain_never_built(&mut p.reasons, why);
    }
    Ok(p)
}

/// Looks an image up in the local tier: `cached` on a hit, else `build` and why (`NeverBuilt`
/// stands in for what changed, told by [`diff_against_last`]).
fn decide(
    index: usize,
    service: &str,
    image: &str,
    key: ImageKey,
    local: &LocalTier<'_>,
    force: bool,
) -> Result<ImagePlan> {
    let want = Want {
        service,
        image,
        key: &key,
    };
    let mut reasons = Vec::new();
    let mut image_id = None;
    match local.lookup(&want)? {
        Lookup::Hit(hit) => image_id = hit.image_id,
        Lookup::Miss(Miss::ImageGone { image_id }) => {
            reasons.push(Reason::ImageMissing { image_id })
        }
        Lookup::Miss(Miss::Mislabelled { image_id, found }) => {
            reasons.push(Reason::ImageMislabelled {
                image_id: image_id.unwrap_or_default(),
                found,
            })
        }
        Lookup::Miss(Miss::NotRecorded | Miss::NotFound) => reasons.push(Reason::NeverBuilt),
    }
    if force {
        reasons.insert(0, Reason::Forced);
    }
    let action = if reasons.is_empty() {
        Action::Cached
    } else {
        Action::Build
    };
    Ok(ImagePlan {
        index,
        service: service.to_string(),
        image: image.to_string(),
        key,
        action,
        reasons,
        image_id: if action == Action::Cached {
            image_id
        } else {
            None
        },
    })
}

fn explain_never_built(reasons: &mut Vec<Reason>, why: Vec<Reason>) {
    reasons.retain(|r| *r != Reason::NeverBuilt);
    reasons.extend(why);
}

/// The reasons an image's inputs differ from those of the last build of its service.
fn diff_against_last(
    store: &cache::Store,
    service: &str,
    img: &ImageInputs,
) -> Result<Vec<Reason>> {
    let Some(last) = store.last_built(service) else {
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
