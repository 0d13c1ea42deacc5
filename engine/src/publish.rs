//! Publish: the release tags of an image (`images --push --tag T`), the last step of a run and the
//! one place a release reaches a registry. The run calls it only for an image that passed
//! verification (or was checked with `--no-verify` off on purpose), after it was recorded.
//!
//! When the registry already holds the key (with the right key label), the manifest is copied
//! inside the registry under each tag: no layer moves, no image is needed locally. Otherwise the
//! local image is pushed under its key tag and the tags. A key tag holding another key's image is
//! never published over.
//!
//! Where later work plugs in: signing (cosign) goes after each tag is written, in
//! [`Publisher::publish`]; a verification of a registry image before a manifest copy (the image
//! was pushed by another machine's run, which verified it) goes in [`Publisher::copy_gate`].

use cache::registry::Registry;

use crate::execute::Images;
use crate::tags::key_tag;
use crate::tier::registry::{lookup, reg_err};
use crate::tier::{Lookup, Miss, Want};
use crate::{Error, Result};

/// A registry to publish release tags to.
pub struct Publisher<'a> {
    registry: Registry,
    tags: Vec<String>,
    images: Option<&'a dyn Images>,
}

impl<'a> Publisher<'a> {
    /// `spec` is `HOST[:PORT]/NAMESPACE` (its indexes read at `platform`'s entry); `tags` the
    /// release tags (`latest` when empty).
    pub fn new(
        spec: &str,
        platform: Option<&str>,
        tags: &[String],
        images: Option<&'a dyn Images>,
    ) -> Result<Self> {
        let tags = if tags.is_empty() {
            vec![crate::tags::LATEST.to_string()]
        } else {
            tags.to_vec()
        };
        Ok(Publisher {
            registry: crate::tier::registry::parse(spec, platform)?,
            tags,
            images,
        })
    }

    /// Whether this is the registry (and namespace) `other` names.
    pub fn is_in(&self, other: &Registry) -> bool {
        self.registry.host == other.host && self.registry.namespace == other.namespace
    }

    /// Before a release tag is made by copying a registry entry this run did not verify itself:
    /// today the entry is trusted as another run's verified push (the key label was checked by
    /// the lookup). Issue 13 (trust) checks a signature or verifies the registry image here.
    fn copy_gate(&self, _want: &Want<'_>, _manifest: &cache::registry::Manifest) -> Result<()> {
        Ok(())
    }

    /// Publishes `<registry>/<image>:<tag>` for each release tag; returns what was done, one
    /// line per tag.
    pub fn publish(&self, want: &Want<'_>, local_id: Option<&str>) -> Result<Vec<String>> {
        let how = match lookup(&self.registry, want)? {
            Lookup::Hit(_) => {
                let m = self
                    .registry
                    .get_manifest(want.image, &key_tag(want.key))
                    .map_err(reg_err)?
                    .ok_or_else(|| {
                        Error::Other(format!("the key tag of {} vanished", want.image))
                    })?;
                self.copy_gate(want, &m)?;
                for t in &self.tags {
                    self.registry
                        .put_manifest(want.image, t, &m)
                        .map_err(reg_err)?;
                }
                "tagged in the registry (manifest copied, no layer moved)"
            }
            Lookup::Miss(Miss::Mislabelled { found, .. }) => {
                return Err(Error::Other(format!(
                    "`{}` holds an image labelled with key {found:?}, not {}: refusing to publish over it",
                    self.registry.reference(want.image, &key_tag(want.key)),
                    want.key.to_hex()
                )))
            }
            Lookup::Miss(_) => {
                let id = local_id.ok_or_else(|| {
                    Error::Other(format!(
                        "{} is neither in `{}` nor in the local engine: nothing to publish",
                        want.image, self.registry.host
                    ))
                })?;
                let images = self.images.ok_or_else(|| {
                    Error::Other(format!(
                        "no container engine to push {} from",
                        want.image
                    ))
                })?;
                let mut refs = vec![self.registry.reference(want.image, &key_tag(want.key))];
                refs.extend(self.tags.iter().map(|t| self.registry.reference(want.image, t)));
                for r in &refs {
                    images.push(id, r)?;
                }
                "pushed"
            }
        };
        Ok(self
            .tags
            .iter()
            .map(|t| format!("{}: {how}", self.registry.reference(want.image, t)))
            .collect())
    }
}
