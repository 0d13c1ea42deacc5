//! Publish: the release tags of an image (`images --push --tag T`), the last step of a run and the
//! one place a release reaches a registry. The run calls it only for an image that passed
//! verification, after it was recorded; it passes the gate (`verify` of the run) for the case
//! where the registry holds another image than the one verified here.
//!
//! When the registry already holds the key (with the right key label), the manifest is copied
//! inside the registry under each tag: no layer moves. That manifest is released only when its
//! image is the one this run verified (its config digest is the local image id), or after
//! [`Publisher::copy_gate`] pulled that very manifest by digest and the gate verified it.
//! Otherwise the local image is pushed under its key tag and the tags. A key tag holding another
//! key's image is never published over.
//!
//! After the tags are written, each manifest published is signed (cosign's format) when a
//! signing key is configured, the signature naming the digest that was verified.

use cache::registry::Registry;

use crate::execute::Images;
use crate::tags::key_tag;
use crate::tier::registry::{lookup, reg_err};
use crate::tier::{Lookup, Miss, Want};
use crate::trust::{self, Check, Trust};
use crate::{Error, Result};

/// Verifies an image of the engine (by id) under the run's rules: `Err` says why it may not be
/// published.
pub type Gate<'g> = dyn FnMut(&str) -> Result<()> + 'g;

/// A registry to publish release tags to.
pub struct Publisher<'a> {
    registry: Registry,
    tags: Vec<String>,
    images: Option<&'a dyn Images>,
    trust: Trust,
}

impl<'a> Publisher<'a> {
    /// `spec` is `HOST[:PORT]/NAMESPACE` (its indexes read at `platform`'s entry); `tags` the
    /// release tags (`latest` when empty).
    pub fn new(
        spec: &str,
        platform: Option<&str>,
        tags: &[String],
        images: Option<&'a dyn Images>,
        trust: Trust,
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
            trust,
        })
    }

    /// Before a release tag is made by copying the manifest `m` of the key tag: the image it
    /// names must be the one this run verified (`local_id`), or (with `[trust] keys`, signed by
    /// one of them and) pulled by that very digest and verified by `gate`.
    fn copy_gate(
        &self,
        want: &Want<'_>,
        m: &cache::registry::Manifest,
        local_id: Option<&str>,
        gate: &mut Gate<'_>,
    ) -> Result<Copy> {
        let config = trust::config_digest(&self.registry, want.image, m)?;
        if local_id == Some(config.as_str()) || local_id == Some(m.digest.as_str()) {
            return Ok(Copy::Yes(
                "tagged in the registry (manifest copied, no layer moved)",
            ));
        }
        let reference = trust::digest_reference(&self.registry, want.image, &m.digest);
        if let Check::Refused(why) = self.trust.check(&self.registry, want.image, &m.digest)? {
            return Ok(Copy::Untrusted(format!("`{reference}` was refused: {why}")));
        }
        let images = self.images.ok_or_else(|| {
            Error::Other(format!(
                "`{reference}` was not verified here and there is no container engine to pull it into: not published"
            ))
        })?;
        let pulled = images.pull(&reference)?;
        if pulled.key.as_deref() != Some(want.key.to_hex().as_str()) {
            return Err(Error::Other(format!(
                "`{reference}` carries the key label {:?}, not {}: not published",
                pulled.key,
                want.key.to_hex()
            )));
        }
        gate(&pulled.id).map_err(|e| {
            Error::Other(format!(
                "`{reference}` (the registry's image under the key tag) did not pass verify: {e}; not published"
            ))
        })?;
        Ok(Copy::Yes(
            "tagged in the registry (manifest copied after its image was pulled and verified)",
        ))
    }

    /// Publishes `<registry>/<image>:<tag>` for each release tag, then signs what it published
    /// (with a signing key); returns what was done, one line per tag and per signature.
    /// `local_id` is the image this run verified, if one is in the engine; `gate` verifies an
    /// image the registry holds instead.
    pub fn publish(
        &self,
        want: &Want<'_>,
        local_id: Option<&str>,
        gate: &mut Gate<'_>,
    ) -> Result<Vec<String>> {
        let mut done = Vec::new();
        let how = match lookup(&self.registry, want)? {
            Lookup::Hit(_) => {
                let m = self
                    .registry
                    .get_manifest(want.image, &key_tag(want.key))
                    .map_err(reg_err)?
                    .ok_or_else(|| {
                        Error::Other(format!("the key tag of {} vanished", want.image))
                    })?;
                match self.copy_gate(want, &m, local_id, gate)? {
                    Copy::Yes(how) => {
                        for t in &self.tags {
                            self.registry
                                .put_manifest(want.image, t, &m)
                                .map_err(reg_err)?;
                        }
                        done.extend(self.trust.sign(&self.registry, want.image, &m.digest)?);
                        how
                    }
                    // The image verified here replaces an entry no trusted key signed.
                    Copy::Untrusted(why) => match local_id {
                        Some(id) => {
                            done.push(format!("{why}; the image verified here is pushed over it"));
                            self.push(want, id, &mut done)?;
                            "pushed"
                        }
                        None => return Err(Error::Other(format!("{why}: not published"))),
                    },
                }
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
                self.push(want, id, &mut done)?;
                "pushed"
            }
        };
        let mut lines: Vec<String> = self
            .tags
            .iter()
            .map(|t| format!("{}: {how}", self.registry.reference(want.image, t)))
            .collect();
        lines.extend(done);
        Ok(lines)
    }

    /// Pushes the local image `id` (verified) under the key tag and each release tag, then
    /// signs what the tags hold (checked to be `id`) when a signing key is configured.
    fn push(&self, want: &Want<'_>, id: &str, done: &mut Vec<String>) -> Result<()> {
        let images = self.images.ok_or_else(|| {
            Error::Other(format!("no container engine to push {} from", want.image))
        })?;
        let key = key_tag(want.key);
        let tags: Vec<&String> = std::iter::once(&key).chain(&self.tags).collect();
        for t in &tags {
            images.push(id, &self.registry.reference(want.image, t))?;
        }
        if self.trust.signer.is_some() {
            let mut digests = Vec::new();
            for t in &tags {
                let m = trust::pushed_manifest(&self.registry, want.image, t, id)?;
                if !digests.contains(&m.digest) {
                    done.extend(self.trust.sign(&self.registry, want.image, &m.digest)?);
                    digests.push(m.digest);
                }
            }
        }
        Ok(())
    }
}

/// Whether the key tag's manifest may be copied to the release tags.
enum Copy {
    /// Yes, and how it was vouched for.
    Yes(&'static str),
    /// No trusted key signed it.
    Untrusted(String),
}
