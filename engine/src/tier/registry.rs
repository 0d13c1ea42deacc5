//! The registry tier: an OCI registry shared as a cache, images tagged by key
//! (`<registry>/<namespace>/<image>:key-…`). A lookup is a `HEAD` of the key tag, then the
//! image's labels from its config blob: an image whose key label is another is refused. With
//! `[trust] keys`, the manifest digest the key tag resolved to must carry a cosign signature by
//! one of them, else the entry is refused ([`Miss::Untrusted`]). A fetch pulls that very digest
//! into the engine (not the tag, which may have moved since) and checks the label again on what
//! was pulled. A store pushes the key tag (never in read-only mode, for untrusted builds such as
//! pull requests) and signs what it pushed when a signing key is configured.
//!
//! It speaks through the public methods of [`cache::registry::Registry`] (parse, reference,
//! head_manifest, get_manifest, labels) and the engine's [`Images`], never Docker itself.

use cache::registry::Registry;

use super::{Hit, Lookup, Miss, Tier, Want};
use crate::execute::{Images, LocalImage};
use crate::record::Entry;
use crate::tags::{key_tag, KEY_LABEL};
use crate::trust::{self, Check, Trust};
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
    /// Whose signatures it takes, and the key it signs with.
    trust: Trust,
}

impl<'a> RegistryTier<'a> {
    /// The registry `spec` (`HOST[:PORT]/NAMESPACE`), reading `platform`'s entry of image
    /// indexes.
    pub fn new(
        spec: &str,
        platform: Option<&str>,
        images: Option<&'a dyn Images>,
        read_only: bool,
        trust: Trust,
    ) -> Result<RegistryTier<'a>> {
        Ok(RegistryTier {
            registry: parse(spec, platform)?,
            images,
            read_only,
            trust,
        })
    }

    /// Whether it takes entries on their key label alone (no trusted key is configured).
    pub fn label_only(&self) -> bool {
        self.trust.keys.is_empty()
    }

    /// Whether it pushes (not read-only).
    pub fn writes(&self) -> bool {
        !self.read_only
    }

    /// The registry it caches in.
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
            digest: Some(m.digest),
            signed_by: None,
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
        let mut hit = match lookup(&self.registry, want)? {
            Lookup::Hit(hit) => hit,
            miss => return Ok(miss),
        };
        let Some(digest) = hit.digest.clone() else {
            return Ok(Lookup::Hit(hit));
        };
        match self.trust.check(&self.registry, want.image, &digest)? {
            Check::LabelOnly => {}
            Check::Signed(key) => hit.signed_by = Some(key),
            Check::Refused(why) => {
                return Ok(Lookup::Miss(Miss::Untrusted {
                    reference: format!("{}@{digest}", hit.location),
                    why,
                }))
            }
        }
        Ok(Lookup::Hit(hit))
    }

    fn fetch(&self, want: &Want<'_>, hit: &Hit) -> Result<LocalImage> {
        // The digest the lookup checked (and, with trusted keys, found signed), not the tag.
        let reference = match &hit.digest {
            Some(d) => trust::digest_reference(&self.registry, want.image, d),
            None => self.reference(want),
        };
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
        let mut done = format!("pushed {reference}");
        if self.trust.signer.is_some() {
            let signed = trust::pushed_manifest(
                &self.registry,
                want.image,
                &key_tag(want.key),
                entry.image_id,
            )
            .and_then(|m| self.trust.sign(&self.registry, want.image, &m.digest));
            match signed {
                Ok(Some(s)) => done.push_str(&format!("; {s}")),
                Ok(None) => {}
                Err(e) => return Err(Error::Other(format!("{done}, but not signed: {e}"))),
            }
        }
        Ok(Some(done))
    }
}
