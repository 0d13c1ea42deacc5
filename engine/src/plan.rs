//! Plan: for each image, `build` or `cached`, and why (as cargo's `DirtyReason`: each reason
//! carries what changed, so the story of a rebuild can be told).

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
    /// A build argument was added, removed, or its value changed (values are never shown).
    BuildArgChanged {
        name: String,
        change: Change,
    },
    TargetChanged {
        old: Option<String>,
        new: Option<String>,
    },
    /// The BuildKit secrets the build mounts (by id; their values are never keyed) changed.
    SecretsChanged {
        old: Vec<String>,
        new: Vec<String>,
    },
    PlatformChanged {
        old: Option<String>,
        new: Option<String>,
    },
    /// An external image now has another content digest (`None`: unknown).
    BaseImageChanged {
        reference: String,
        old: Option<String>,
        new: Option<String>,
    },
    /// An external image the build reads was added or removed.
    BaseImageAdded {
        reference: String,
    },
    BaseImageRemoved {
        reference: String,
    },
    /// A pinned `ADD <url>` changed (its URL or checksum).
    RemoteSourcesChanged {
        urls: Vec<String>,
    },
    /// The key is incomplete (a base image's digest or the platform is not known): the image is
    /// built, never taken from a cache.
    Unresolved {
        what: String,
    },
    /// The image can never be taken from a cache (an `ADD <url>` without `--checksum`).
    Uncacheable {
        why: String,
    },
    FromImageChanged {
        service: String,
    },
    KeyFormatChanged {
        old: u32,
        new: u32,
    },
    /// The cache registry holds the key, but no trusted key signed that entry: refused (built
    /// here instead). `reference` names the key tag and the digest it resolved to.
    RegistryEntryRefused {
        reference: String,
        why: String,
    },
}

/// How a build argument changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Added,
    Removed,
    Changed,
}

const SHOW: usize = 5;

/// A content digest, short: `sha256:1a2b3c4d5e6f`; `unknown` for none.
fn short_digest(d: &Option<String>) -> String {
    match d {
        Some(d) => match d.split_once(':') {
            Some((algo, hex)) => format!("{algo}:{}", &hex[..hex.len().min(12)]),
            None => d.clone(),
        },
        None => "unknown".to_string(),
    }
}

fn or_unknown(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("unknown")
}

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
            Reason::BuildArgChanged { name, change } => {
                let how = match change {
                    Change::Added => "added",
                    Change::Removed => "removed",
                    Change::Changed => "changed",
                };
                write!(f, "build arg {name} {how}")
            }
            Reason::TargetChanged { old, new } => write!(
                f,
                "target changed: {} -> {}",
                old.as_deref().unwrap_or("(last stage)"),
                new.as_deref().unwrap_or("(last stage)")
            ),
            Reason::SecretsChanged { old, new } => {
                let list = |v: &[String]| {
                    if v.is_empty() {
                        "(none)".to_string()
                    } else {
                        v.join(", ")
                    }
                };
                write!(f, "secret ids changed: {} -> {}", list(old), list(new))
            }
            Reason::PlatformChanged { old, new } => {
                write!(
                    f,
                    "platform changed: {} -> {}",
                    or_unknown(old),
                    or_unknown(new)
                )
            }
            Reason::BaseImageChanged {
                reference,
                old,
                new,
            } => write!(
                f,
                "base image {reference}: {} -> {}",
                short_digest(old),
                short_digest(new)
            ),
            Reason::BaseImageAdded { reference } => write!(f, "base image {reference} added"),
            Reason::BaseImageRemoved { reference } => {
                write!(f, "base image {reference} removed")
            }
            Reason::RemoteSourcesChanged { urls } => {
                write!(f, "remote sources changed: {}", list(urls))
            }
            Reason::Unresolved { what } => write!(f, "key incomplete: {what}"),
            Reason::Uncacheable { why } => write!(f, "uncacheable: {why}"),
            Reason::FromImageChanged { service } => {
                write!(f, "the image it builds FROM changed: {service}")
            }
            Reason::KeyFormatChanged { old, new } => {
                write!(f, "key format changed: {old} -> {new}")
            }
            Reason::RegistryEntryRefused { reference, why } => {
                write!(
                    f,
                    "the cache registry's entry `{reference}` was refused: {why}"
                )
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
            img,
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
    let mut p = decide(index, service, image, inputs, local, false)?;
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
    inputs: &ImageInputs,
    local: &LocalTier<'_>,
    force: bool,
) -> Result<ImagePlan> {
    let key = inputs.key;
    let want = Want {
        service,
        image,
        key: &key,
    };
    // An incomplete key, or an uncacheable image, is never a hit.
    let mut reasons: Vec<Reason> = inputs
        .unresolved
        .iter()
        .map(|w| Reason::Unresolved { what: w.clone() })
        .chain(
            inputs
                .uncacheable
                .iter()
                .map(|w| Reason::Uncacheable { why: w.clone() }),
        )
        .collect();
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
        Lookup::Miss(Miss::NotRecorded | Miss::NotFound | Miss::Untrusted { .. }) => {
            reasons.push(Reason::NeverBuilt)
        }
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
    let blob = store
        .get_record(&last.key)?
        .and_then(|r| store.get_blob(&r.manifest).ok().flatten());
    // A manifest of another key format may not even read as this one: say so.
    if let Some(old) = blob
        .as_deref()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
        .and_then(|v| v["manifest"]["format"].as_u64())
    {
        if old != u64::from(img.manifest.format) {
            return Ok(vec![Reason::KeyFormatChanged {
                old: u32::try_from(old).unwrap_or(u32::MAX),
                new: img.manifest.format,
            }]);
        }
    }
    let previous: Option<InputManifest> = blob.and_then(|b| serde_json::from_slice(&b).ok());
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
    for (name, d) in &nm.build_args {
        match om.build_args.get(name) {
            None => reasons.push(Reason::BuildArgChanged {
                name: name.clone(),
                change: Change::Added,
            }),
            Some(o) if o != d => reasons.push(Reason::BuildArgChanged {
                name: name.clone(),
                change: Change::Changed,
            }),
            Some(_) => {}
        }
    }
    for name in om.build_args.keys() {
        if !nm.build_args.contains_key(name) {
            reasons.push(Reason::BuildArgChanged {
                name: name.clone(),
                change: Change::Removed,
            });
        }
    }
    if om.target != nm.target {
        reasons.push(Reason::TargetChanged {
            old: om.target.clone(),
            new: nm.target.clone(),
        });
    }
    if om.secrets != nm.secrets {
        reasons.push(Reason::SecretsChanged {
            old: om.secrets.clone(),
            new: nm.secrets.clone(),
        });
    }
    if om.platform != nm.platform {
        reasons.push(Reason::PlatformChanged {
            old: om.platform.clone(),
            new: nm.platform.clone(),
        });
    }
    let same = |a: &crate::key::BaseImage, b: &crate::key::BaseImage| {
        a.reference == b.reference && a.platform == b.platform
    };
    for n in &nm.base_images {
        match om.base_images.iter().find(|o| same(o, n)) {
            None => reasons.push(Reason::BaseImageAdded {
                reference: n.reference.clone(),
            }),
            Some(o) if o.digest != n.digest => reasons.push(Reason::BaseImageChanged {
                reference: n.reference.clone(),
                old: o.digest.clone(),
                new: n.digest.clone(),
            }),
            Some(_) => {}
        }
    }
    for o in &om.base_images {
        if !nm.base_images.iter().any(|n| same(o, n)) {
            reasons.push(Reason::BaseImageRemoved {
                reference: o.reference.clone(),
            });
        }
    }
    if om.remote_sources != nm.remote_sources {
        let mut urls: Vec<String> = om
            .remote_sources
            .iter()
            .chain(&nm.remote_sources)
            .filter(|r| !(om.remote_sources.contains(r) && nm.remote_sources.contains(r)))
            .map(|r| r.url.clone())
            .collect();
        urls.sort();
        urls.dedup();
        reasons.push(Reason::RemoteSourcesChanged { urls });
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
