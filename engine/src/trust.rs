//! Trust: who signs what a run publishes, whose signatures make a registry entry usable, and
//! which exact image (by manifest digest) a registry tag holds.
//!
//! - A run signs every manifest it publishes (cache key tags and release tags) with the signing
//!   key of the environment ([`cache::cosign::SigningKey::from_env`]), in cosign's key-pair
//!   format, after the image passed `verify`.
//! - With `[trust] keys` set, a registry entry is used only when one of those keys signed the
//!   manifest digest the key tag resolves to, and it is then pulled by that digest, so what is
//!   verified, recorded and published is what was signed. With none set, entries are trusted by
//!   their key label only (the run says so once).

use std::sync::Arc;

use cache::cosign::{self, SigningKey, TrustedKey, Verdict};
use cache::registry::{Manifest, Registry};

use crate::tier::registry::reg_err;
use crate::{Error, Result};

/// The keys of a run.
#[derive(Clone, Default)]
pub struct Trust {
    /// Signs what the run publishes.
    pub signer: Option<Arc<SigningKey>>,
    /// Whose signatures make a registry entry trusted (empty: trusted by label only).
    pub keys: Vec<TrustedKey>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trust")
            .field("signer", &self.signer.as_ref().map(|k| k.source.clone()))
            .field("keys", &self.keys)
            .finish()
    }
}

/// What the signatures of a registry entry say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// No trusted key is configured: the entry is taken on its key label.
    LabelOnly,
    /// Signed by this trusted key (its name as listed).
    Signed(String),
    /// Refused, and why (unsigned, another signer, …).
    Refused(String),
}

impl Trust {
    /// Checks the signatures of the manifest `digest` of `image` in `registry`. An `Err` is a
    /// registry that could not be asked.
    pub fn check(&self, registry: &Registry, image: &str, digest: &str) -> Result<Check> {
        if self.keys.is_empty() {
            return Ok(Check::LabelOnly);
        }
        match cosign::verify(registry, image, digest, &self.keys).map_err(cosign_err)? {
            Verdict::Trusted(v) => Ok(Check::Signed(v.key)),
            Verdict::Refused(r) => Ok(Check::Refused(r.to_string())),
        }
    }

    /// Signs the manifest `digest` of `image` in `registry` when a signing key is configured;
    /// what was done, for the report.
    pub fn sign(&self, registry: &Registry, image: &str, digest: &str) -> Result<Option<String>> {
        let Some(key) = &self.signer else {
            return Ok(None);
        };
        let signed = cosign::sign(registry, image, digest, key, None).map_err(cosign_err)?;
        let what = if signed.added {
            "signed"
        } else {
            "already signed"
        };
        Ok(Some(format!(
            "{}: {what} ({} by {})",
            digest_reference(registry, image, digest),
            signed.tag,
            key.source
        )))
    }
}

fn cosign_err(e: cosign::Error) -> Error {
    Error::Other(e.to_string())
}

/// `<registry>/<repository>@<digest>`: the one image a digest names.
pub fn digest_reference(registry: &Registry, image: &str, digest: &str) -> String {
    format!("{}/{}@{digest}", registry.host, registry.repository(image))
}

/// The config digest (the image id a local engine gives it) of the image manifest `m` names
/// for the registry's platform.
pub fn config_digest(registry: &Registry, image: &str, m: &Manifest) -> Result<String> {
    let inner = registry.image_manifest(image, m).map_err(reg_err)?;
    let v: serde_json::Value = serde_json::from_slice(&inner.bytes).map_err(|e| {
        Error::Other(format!(
            "the manifest {} of {image} is unreadable: {e}",
            inner.digest
        ))
    })?;
    match v["config"]["digest"].as_str() {
        Some(d) if cache::registry::reference::valid_digest(d) => Ok(d.to_string()),
        _ => Err(Error::Other(format!(
            "the manifest {} of {image} names no valid config digest",
            inner.digest
        ))),
    }
}

/// The manifest `tag` of `image` now holds, checked to be the image `image_id` (its config
/// digest): what a push just wrote, and not whatever another writer put there since.
pub fn pushed_manifest(
    registry: &Registry,
    image: &str,
    tag: &str,
    image_id: &str,
) -> Result<Manifest> {
    let reference = registry.reference(image, tag);
    let m = registry
        .get_manifest(image, tag)
        .map_err(reg_err)?
        .ok_or_else(|| Error::Other(format!("`{reference}` is missing right after its push")))?;
    let config = config_digest(registry, image, &m)?;
    if config != image_id && m.digest != image_id {
        return Err(Error::Other(format!(
            "`{reference}` holds the image {config}, not {image_id} that was pushed (another writer?): not signed"
        )));
    }
    Ok(m)
}
