//! The registry tier: an OCI registry shared as a cache, images tagged by key
//! (`<registry>/<namespace>/<image>:key-…`). A lookup is a `HEAD` of the key tag, then the
//! image's labels from its config blob: an image whose key label is another is refused. A fetch
//! pulls into the engine and checks the label again on what was pulled. A store pushes the key
//! tag (never in read-only mode, for untrusted builds such as pull requests).
//!
//! It speaks through the public methods of [`cache::registry::Registry`] (parse, reference,
//! head_manifest, get_manifest, labels) and the engine's [`Images`], never Docker itself.

use cache::registry::Registry;

use super::{Hit, Lookup, Miss, Tier, Want};
use crate::execute::{Images, LocalImage};
use crate::record::Entry;
use crate::tags::{key_tag, KEY_LABEL};
use crate::{Error, Result};

pub(crate) fn reg_err(e: cache::registry::RegistryError) -> Error {
    Error::Other(e.to_string())
}

/// A registry `spec` (`HOST[:PORT]/NAMESPACE`) whose image indexes are read at `platform`'s
/// entry (`os/arch[/variant]`: the configured platform, else the engine's own).
pub(crate) fn parse(spec: &str, platform: Option<&str>) -> Result<Registry> {
    let registry = Registry::parse(spec).map_err(reg_err)?;
    let Some(p) = platform else {
        return Ok(registry);
    };
    let p = cache::registry::Platform::parse(p).map_err(|e| {
        Error::Other(format!(
            "{e}\n  hint: set `platform` in images.toml to os/arch, e.g. `linux/amd64`"
        ))
    })?;
    Ok(registry.with_platform(p))
}

/// A registry used as a shared cache.
pub struct RegistryTier<'a> {
    registry: Registry,
    images: Option<&'a dyn Images>,
    /// Never push.
    read_only: bool,
}

impl<'a> RegistryTier<'a> {
    /// The registry `spec` (`HOST[:PORT]/NAMESPACE`), reading `platform`'s entry of image
    /// indexes.
    pub fn new(
        spec: &str,
        platform: Option<&str>,
        images: Option<&'a dyn Images>,
        read_only: bool,
    ) -> Result<RegistryTier<'a>> {
        Ok(RegistryTier {
            registry: parse(spec, platform)?,
            images,
            read_only,
        })
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Never pushed to (`--cache-read-only`).
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// The key tag's full reference.
    pub fn reference(&self, want: &Want<'_>) -> String {
        self.registry.reference(want.image, &key_tag(want.key))
    }

    fn images(&self) -> Result<&'a dyn Images> {
        self.images.ok_or_else(|| {
            Error::Other(format!(
                "no container engine to pull from or push to `{}`",
                self.registry.host
            ))
        })
    }
}

/// What the key tag of `image` in `registry` holds: a hit when its image carries the key label.
pub(crate) fn lookup(registry: &Registry, want: &Want<'_>) -> Result<Lookup> {
    let tag = key_tag(want.key);
    if registry
        .head_manifest(want.image, &tag)
        .map_err(reg_err)?
        .is_none()
    {
        return Ok(Lookup::Miss(Miss::NotFound));
    }
    let Some(m) = registry.get_manifest(want.image, &tag).map_err(reg_err)? else {
        return Ok(Lookup::Miss(Miss::NotFound));
    };
    let labels = registry.labels(want.image, &m).map_err(reg_err)?;
    let found = labels
        .get(KEY_LABEL)
        .and_then(|v| v.as_str())
        .map(str::to_string);
    if found.as_deref() == Some(want.key.to_hex().as_str()) {
        Ok(Lookup::Hit(Hit {
            image_id: None,
            location: registry.reference(want.image, &tag),
            duration_ms: None,
        }))
    } else {
        Ok(Lookup::Miss(Miss::Mislabelled {
            image_id: None,
            found,
        }))
    }
}

impl Tier for RegistryTier<'_> {
    fn describe(&self) -> String {
        let ns = if self.registry.namespace.is_empty() {
            String::new()
        } else {
            format!("/{}", self.registry.namespace)
        };
        format!("the cache registry `{}{ns}`", self.registry.host)
    }

    fn lookup(&self, want: &Want<'_>) -> Result<Lookup> {
        lookup(&self.registry, want)
    }

    fn fetch(&self, want: &Want<'_>) -> Result<LocalImage> {
        let reference = self.reference(want);
        let pulled = self.images()?.pull(&reference)?;
        // Check again what was pulled, not only what the registry said.
        if pulled.key.as_deref() != Some(want.key.to_hex().as_str()) {
            return Err(Error::Other(format!(
                "`{reference}` carries the key label {:?}, not {}: refused",
                pulled.key,
                want.key.to_hex()
            )));
        }
        Ok(pulled)
    }

    fn store(&self, want: &Want<'_>, entry: &Entry<'_>) -> Result<Option<String>> {
        if self.read_only {
            return Ok(None);
        }
        let reference = self.reference(want);
        self.images()?.push(entry.image_id, &reference)?;
        Ok(Some(format!("pushed {reference}")))
    }
}
