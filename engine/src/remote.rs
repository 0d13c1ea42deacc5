//! The registry tier: before building, look each key up in an OCI registry (images tagged by
//! key); a hit whose key label matches is pulled and tagged instead of built; a miss is built and
//! pushed under its key tag (unless read-only). Publishing a release tag of a key the registry
//! already holds copies the manifest inside the registry: no layer moves.

use cache::registry::Registry;

use crate::digest::ImageKey;
use crate::execute::docker::Docker;
use crate::execute::{key_tag, KEY_LABEL};
use crate::{Error, Result};

fn reg_err(e: cache::registry::RegistryError) -> Error {
    Error::Other(e.to_string())
}

/// What a registry holds for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The key tag exists and its image carries the key label.
    Hit {
        digest: String,
    },
    Miss,
    /// The key tag exists but its image's key label is another (or none): refused.
    Mismatch {
        found: Option<String>,
    },
}

/// A registry used as a shared cache.
#[derive(Debug)]
pub struct RemoteCache {
    pub registry: Registry,
    /// Never push (untrusted builds, e.g. pull requests).
    pub read_only: bool,
}

impl RemoteCache {
    pub fn new(spec: &str, read_only: bool) -> Result<RemoteCache> {
        Ok(RemoteCache {
            registry: Registry::parse(spec).map_err(reg_err)?,
            read_only,
        })
    }

    /// The same cache, reading `platform`'s entry of image indexes (the configured platform,
    /// else the engine's own; `os/arch[/variant]`).
    pub fn with_platform(mut self, platform: Option<&str>) -> Result<RemoteCache> {
        if let Some(p) = platform {
            let p = cache::registry::Platform::parse(p).map_err(|e| {
                Error::Other(format!(
                    "{e}\n  hint: set `platform` in images.toml to os/arch, e.g. `linux/amd64`"
                ))
            })?;
            self.registry = self.registry.with_platform(p);
        }
        Ok(self)
    }

    pub fn lookup(&self, image: &str, key: &ImageKey) -> Result<Lookup> {
        lookup(&self.registry, image, key)
    }

    /// Pulls the key's image and tags it `<image>:latest` and `<image>:key-…`; returns its id.
    pub fn pull(&self, docker: &Docker, image: &str, key: &ImageKey) -> Result<String> {
        let reference = self.registry.reference(image, &key_tag(key));
        docker.pull(&reference)?;
        // Check again what was pulled, not only what the registry said.
        let label = docker.label(&reference, KEY_LABEL)?;
        if label.as_deref() != Some(key.to_hex().as_str()) {
            return Err(Error::Other(format!(
                "`{reference}` carries the key label {label:?}, not {}: refused",
                key.to_hex()
            )));
        }
        let id = docker
            .image_id(&reference)
            .ok_or_else(|| Error::Other(format!("`{reference}` is missing after its pull")))?;
        docker.tag(&id, &format!("{image}:latest"))?;
        docker.tag(&id, &format!("{image}:{}", key_tag(key)))?;
        Ok(id)
    }

    /// Pushes a built image under its key tag (a no-op in read-only mode).
    pub fn push(
        &self,
        docker: &Docker,
        image: &str,
        key: &ImageKey,
        image_id: &str,
    ) -> Result<bool> {
        if self.read_only {
            return Ok(false);
        }
        let reference = self.registry.reference(image, &key_tag(key));
        docker.tag(image_id, &reference)?;
        docker.push(&reference)?;
        Ok(true)
    }
}

/// Looks a key up: `HEAD` of the key tag, then the image's labels from its config blob.
pub fn lookup(registry: &Registry, image: &str, key: &ImageKey) -> Result<Lookup> {
    let tag = key_tag(key);
    if registry
        .head_manifest(image, &tag)
        .map_err(reg_err)?
        .is_none()
    {
        return Ok(Lookup::Miss);
    }
    let Some(m) = registry.get_manifest(image, &tag).map_err(reg_err)? else {
        return Ok(Lookup::Miss);
    };
    let labels = registry.labels(image, &m).map_err(reg_err)?;
    let found = labels
        .get(KEY_LABEL)
        .and_then(|v| v.as_str())
        .map(str::to_string);
    if found.as_deref() == Some(key.to_hex().as_str()) {
        Ok(Lookup::Hit { digest: m.digest })
    } else {
        Ok(Lookup::Mismatch { found })
    }
}

/// How a release tag was published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// The registry held the key: its manifest was copied under the tags (no layer moved).
    ManifestCopied { digest: String },
    /// The local image was pushed under its key tag and the tags.
    Pushed,
}

/// Publishes `<registry>/<image>:<tag>` for each tag. When the registry already holds the key
/// (with the right label), the manifest is copied inside the registry; otherwise the local image
/// `local_id` is pushed.
pub fn publish(
    registry: &Registry,
    docker: &Docker,
    image: &str,
    key: &ImageKey,
    tags: &[String],
    local_id: Option<&str>,
) -> Result<Published> {
    match lookup(registry, image, key)? {
        Lookup::Hit { .. } => {
            let m = registry
                .get_manifest(image, &key_tag(key))
                .map_err(reg_err)?
                .ok_or_else(|| Error::Other(format!("the key tag of {image} vanished")))?;
            for t in tags {
                registry.put_manifest(image, t, &m).map_err(reg_err)?;
            }
            Ok(Published::ManifestCopied { digest: m.digest })
        }
        Lookup::Mismatch { found } => Err(Error::Other(format!(
            "`{}` holds an image labelled with key {found:?}, not {}: refusing to publish over it",
            registry.reference(image, &key_tag(key)),
            key.to_hex()
        ))),
        Lookup::Miss => {
            let id = local_id.ok_or_else(|| {
                Error::Other(format!(
                    "{image} is neither in `{}` nor in the local engine: nothing to publish",
                    registry.host
                ))
            })?;
            let mut refs = vec![registry.reference(image, &key_tag(key))];
            refs.extend(tags.iter().map(|t| registry.reference(image, t)));
            for r in &refs {
                docker.tag(id, r)?;
                docker.push(r)?;
            }
            Ok(Published::Pushed)
        }
    }
}
