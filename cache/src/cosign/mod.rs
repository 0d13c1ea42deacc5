//! Cosign-compatible signatures of images in a registry, with key pairs (no transparency log,
//! no certificates): what `cosign sign --key` writes and `cosign verify --key` (or an admission
//! controller, or Podman's `sigstoreSigned` policy) checks.
//!
//! A signature of the manifest `sha256:<hex>` of `repo` lives in the same repository under the
//! tag `sha256-<hex>.sig`: an OCI image manifest whose layers are simple-signing payloads
//! ([`payload`], media type [`SIMPLE_SIGNING`]), each with its base64 ECDSA-P256/SHA-256
//! signature in the annotation [`SIGNATURE_ANNOTATION`]. Several signers share that manifest:
//! [`sign`] appends a layer and keeps the others' (two signers writing at the same instant can
//! still lose one layer, as with cosign itself).
//!
//! [`verify`] reads that manifest and checks each layer against the trusted keys, the signature
//! first (over the payload's bytes), then the payload: its type, and that it names this very
//! digest. Like `cosign verify --key`, the payload's `docker-reference` is reported, not
//! enforced: what binds an entry to what it claims to be is the signed digest (the image's
//! labels, such as its key, are inside what that digest covers).
//!
//! Keys ([`keys`]): see [`SigningKey`] (from `IMAGES_SIGNING_KEY` / `IMAGES_SIGNING_KEY_FILE`,
//! `COSIGN_PASSWORD`) and [`TrustedKey`].

pub mod keys;
pub mod payload;

use base64::Engine as _;

pub use keys::{SigningKey, TrustedKey};
pub use payload::{Payload, SIGNATURE_TYPE};

use crate::registry::{reference, Manifest, Registry, RegistryError};

/// The media type of a signature layer: a simple-signing payload.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding the base64 signature of the payload.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// The most signature layers looked at (a hostile registry may list thousands).
const MAX_SIGNATURES: usize = 64;
/// The largest payload fetched (cosign's are a few hundred bytes).
const MAX_PAYLOAD: u64 = 64 << 10;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Errors of signing and of reading keys; a refused signature is a [`Verdict`], not an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("key `{origin}`: {message}\n  hint: {hint}")]
    Key {
        /// Where the key came from: a file, or a variable's name (never the key).
        origin: String,
        message: String,
        hint: String,
    },
    #[error("the system's random source failed while making {0}")]
    Random(String),
    #[error("{0}")]
    Crypto(String),
    #[error("`{}` is not a sha256 manifest digest (`sha256:` and 64 lowercase hex digits)\n  hint: sign and verify an image by the digest of its manifest", reference::escape(.0))]
    Digest(String),
    #[error("the signature tag {tag} of {repository} holds {what}: refused to overwrite it\n  hint: look at it (`crane manifest` or `skopeo inspect --raw`) and delete the tag if it is garbage")]
    NotSignatures {
        repository: String,
        tag: String,
        what: String,
    },
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// The tag holding the signatures of the manifest `digest`: `sha256-<hex>.sig`.
pub fn signature_tag(digest: &str) -> Result<String, Error> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(format!("sha256-{hex}.sig"))
        }
        _ => Err(Error::Digest(digest.to_string())),
    }
}

/// The name a signature of `image` in `registry` vouches for, as cosign writes it: the
/// repository with its registry (`index.docker.io/…` on Docker Hub).
pub fn docker_reference(registry: &Registry, image: &str) -> String {
    let host = if registry.host == reference::DOCKER_HUB {
        "index.docker.io"
    } else {
        registry.host.as_str()
    };
    format!("{host}/{}", registry.repository(image))
}

/// What [`sign`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// `sha256-<hex>.sig`.
    pub tag: String,
    /// The digest of the signature manifest now under the tag.
    pub manifest_digest: String,
    /// The digest of the signed payload (the new layer).
    pub payload_digest: String,
    /// How many signatures the manifest holds now.
    pub signatures: usize,
    /// False when this key's signature of this payload was there already (nothing written).
    pub added: bool,
}

/// Signs the manifest `digest` of `image` in `registry` with `key`, as `cosign sign --key`
/// does: a payload naming the digest, pushed as a layer of the manifest under
/// [`signature_tag`], after the signatures already there. `optional` goes into the payload's
/// `optional` object (cosign's `-a key=value` annotations).
pub fn sign(
    registry: &Registry,
    image: &str,
    digest: &str,
    key: &SigningKey,
    optional: Option<&serde_json::Map<String, serde_json::Value>>,
) -> Result<Signed, Error> {
    let tag = signature_tag(digest)?;
    let payload = Payload::new(&docker_reference(registry, image), digest, optional).to_bytes();
    let signature = B64.encode(key.sign(&payload));
    let payload_digest = crate::registry::sha256_digest(&payload);
    let repository = registry.repository(image);

    let mut manifest = match registry.get_manifest(image, &tag)? {
        Some(m) => signature_manifest(&m).map_err(|what| Error::NotSignatures {
            repository: repository.clone(),
            tag: tag.clone(),
            what,
        })?,
        None => serde_json::Map::new(),
    };
    let mut layers = manifest
        .get("layers")
        .and_then(|l| l.as_array())
        .cloned()
        .unwrap_or_default();
    let already = layers.iter().any(|l| {
        l["digest"] == payload_digest.as_str()
            && l["annotations"][SIGNATURE_ANNOTATION] == signature.as_str()
    });
    if already {
        let digest = registry.head_manifest(image, &tag)?.unwrap_or_default();
        return Ok(Signed {
            tag,
            manifest_digest: digest,
            payload_digest,
            signatures: layers.len(),
            added: false,
        });
    }
    registry.put_blob(image, &payload)?;
    layers.push(serde_json::json!({
        "mediaType": SIMPLE_SIGNING,
        "size": payload.len(),
        "digest": payload_digest,
        "annotations": { SIGNATURE_ANNOTATION: signature },
    }));
    // The config cosign's signature images carry: one empty history entry and one diff id per
    // layer (a payload layer is stored uncompressed, so its diff id is its digest).
    let diff_ids: Vec<&serde_json::Value> = layers.iter().map(|l| &l["digest"]).collect();
    let history: Vec<serde_json::Value> = layers
        .iter()
        .map(|_| serde_json::json!({"created": "0001-01-01T00:00:00Z"}))
        .collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": history,
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {},
    }))
    .unwrap_or_default();
    let config_digest = registry.put_blob(image, &config)?;
    let signatures = layers.len();
    manifest.insert("schemaVersion".into(), 2.into());
    manifest.insert("mediaType".into(), OCI_MANIFEST.into());
    manifest.insert(
        "config".into(),
        serde_json::json!({"mediaType": OCI_CONFIG, "size": config.len(), "digest": config_digest}),
    );
    manifest.insert("layers".into(), layers.into());
    let bytes = serde_json::to_vec(&manifest).unwrap_or_default();
    let m = Manifest {
        digest: crate::registry::sha256_digest(&bytes),
        media_type: OCI_MANIFEST.into(),
        bytes,
    };
    let manifest_digest = registry.put_manifest(image, &tag, &m)?;
    Ok(Signed {
        tag,
        manifest_digest,
        payload_digest,
        signatures,
        added: true,
    })
}

/// The JSON object of a signature manifest, or what it is instead.
fn signature_manifest(m: &Manifest) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    if m.is_index() {
        return Err(format!("an image index ({})", m.media_type));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&m.bytes).map_err(|e| format!("unreadable JSON ({e})"))?;
    let serde_json::Value::Object(o) = v else {
        return Err("JSON that is not a manifest object".into());
    };
    if o.contains_key("layers") && !o["layers"].is_array() {
        return Err("a manifest whose `layers` is not a list".into());
    }
    Ok(o)
}

/// A signature that a trusted key made, for this digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The trusted key's name (as listed, e.g. `keys/ci.pub`).
    pub key: String,
    /// The trusted key's fingerprint ([`TrustedKey::fingerprint`]).
    pub fingerprint: String,
    /// The payload's `docker-reference` (reported, not enforced, as `cosign verify` does).
    pub identity: String,
    /// The payload's `optional` object.
    pub optional: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Why an image is not trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No trusted key was given to check with.
    NoTrustedKeys,
    /// No signature tag, or no signature layer under it.
    Unsigned { tag: String },
    /// Well-formed signatures, none of which verifies with a trusted key: another signer's key,
    /// or a payload altered after it was signed (the two cannot be told apart).
    UntrustedKey { tag: String, signatures: usize },
    /// A trusted key signed a payload that names another manifest: a signature moved from
    /// another image.
    OtherDigest {
        tag: String,
        key: String,
        names: String,
    },
    /// A trusted key signed something that is not a cosign image-signature payload.
    BadPayload {
        tag: String,
        key: String,
        reason: String,
    },
    /// Signature data that cannot be checked: a signature that is not base64 DER, a payload
    /// missing or too large, a signature manifest that is no manifest.
    BadSignature { tag: String, reason: String },
}

impl Refusal {
    /// Which refusal says most when several layers fail: the closer to trusted, the better.
    fn rank(&self) -> u8 {
        match self {
            Refusal::NoTrustedKeys => 0,
            Refusal::Unsigned { .. } => 1,
            Refusal::BadSignature { .. } => 2,
            Refusal::UntrustedKey { .. } => 3,
            Refusal::BadPayload { .. } => 4,
            Refusal::OtherDigest { .. } => 5,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NoTrustedKeys => write!(f, "no trusted key is configured to check its signature"),
            Refusal::Unsigned { tag } => write!(f, "unsigned (no cosign signature under {tag})"),
            Refusal::UntrustedKey { tag, signatures } => write!(
                f,
                "not signed by a trusted key: none of the {signatures} signature(s) under {tag} verifies with one (another signer's key, or a payload altered after signing)"
            ),
            Refusal::OtherDigest { tag, key, names } => write!(
                f,
                "the signature under {tag} by trusted key {key} is for another image ({})",
                reference::escape(names)
            ),
            Refusal::BadPayload { tag, key, reason } => write!(
                f,
                "the payload under {tag} signed by trusted key {key} is not an image signature: {reason}"
            ),
            Refusal::BadSignature { tag, reason } => {
                write!(f, "the signature under {tag} cannot be checked: {reason}")
            }
        }
    }
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Trusted(Verified),
    Refused(Refusal),
}

impl Verdict {
    pub fn is_trusted(&self) -> bool {
        matches!(self, Verdict::Trusted(_))
    }
}

/// Checks the cosign signatures of the manifest `digest` of `image` in `registry` against
/// `trusted`, as `cosign verify --key` does: trusted when one signature layer verifies with a
/// trusted key and its payload is a cosign image signature naming `digest`. A refusal says
/// why; an `Err` is a registry that could not be asked.
pub fn verify(
    registry: &Registry,
    image: &str,
    digest: &str,
    trusted: &[TrustedKey],
) -> Result<Verdict, Error> {
    let tag = signature_tag(digest)?;
    if trusted.is_empty() {
        return Ok(Verdict::Refused(Refusal::NoTrustedKeys));
    }
    let refused = |r: Refusal| Ok(Verdict::Refused(r));
    let Some(m) = registry.get_manifest(image, &tag)? else {
        return refused(Refusal::Unsigned { tag });
    };
    let manifest = match signature_manifest(&m) {
        Ok(o) => o,
        Err(what) => {
            return refused(Refusal::BadSignature {
                tag,
                reason: format!("it holds {what}"),
            })
        }
    };
    let layers: Vec<&serde_json::Value> = manifest
        .get("layers")
        .and_then(|l| l.as_array())
        .map(|l| {
            l.iter()
                .filter(|l| l["mediaType"] == SIMPLE_SIGNING)
                .filter(|l| l["annotations"].get(SIGNATURE_ANNOTATION).is_some())
                .collect()
        })
        .unwrap_or_default();
    if layers.is_empty() {
        return refused(Refusal::Unsigned { tag });
    }
    let mut best = Refusal::Unsigned { tag: tag.clone() };
    let mut consider = |r: Refusal| {
        if r.rank() > best.rank() {
            best = r;
        }
    };
    let mut well_formed = 0;
    for layer in layers.iter().take(MAX_SIGNATURES) {
        let bad = |reason: String| Refusal::BadSignature {
            tag: tag.clone(),
            reason,
        };
        let signature = match layer["annotations"][SIGNATURE_ANNOTATION]
            .as_str()
            .map(|s| B64.decode(s.trim()))
        {
            Some(Ok(s)) => s,
            _ => {
                consider(bad("a signature annotation that is not base64".into()));
                continue;
            }
        };
        if p256::ecdsa::Signature::from_der(&signature).is_err() {
            consider(bad(
                "a signature that is not an ASN.1 DER ECDSA signature".into()
            ));
            continue;
        }
        let payload_digest = layer["digest"].as_str().unwrap_or_default();
        if !reference::valid_digest(payload_digest) {
            consider(bad("a signature layer without a valid digest".into()));
            continue;
        }
        if layer["size"].as_u64().is_none_or(|s| s > MAX_PAYLOAD) {
            consider(bad(format!(
                "a payload of {} bytes (at most {MAX_PAYLOAD} are read)",
                layer["size"]
            )));
            continue;
        }
        let Some(payload) = registry.get_blob(image, payload_digest)? else {
            consider(bad(format!("the payload {payload_digest} is missing")));
            continue;
        };
        well_formed += 1;
        let Some(key) = trusted.iter().find(|k| k.verifies(&payload, &signature)) else {
            continue;
        };
        match Payload::parse(&payload) {
            Err(reason) => consider(Refusal::BadPayload {
                tag: tag.clone(),
                key: key.name.clone(),
                reason,
            }),
            Ok(p) if p.critical.image.docker_manifest_digest != digest => {
                consider(Refusal::OtherDigest {
                    tag: tag.clone(),
                    key: key.name.clone(),
                    names: p.critical.image.docker_manifest_digest,
                })
            }
            Ok(p) => {
                return Ok(Verdict::Trusted(Verified {
                    key: key.name.clone(),
                    fingerprint: key.fingerprint.clone(),
                    identity: p.critical.identity.docker_reference,
                    optional: p.optional,
                }))
            }
        }
    }
    if well_formed > 0 {
        consider(Refusal::UntrustedKey {
            tag: tag.clone(),
            signatures: well_formed,
        });
    }
    refused(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_tag_is_the_digest_with_a_dash_and_sig() {
        let hex = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(
            signature_tag(&format!("sha256:{hex}")).expect("tag"),
            format!("sha256-{hex}.sig")
        );
        for bad in [
            format!("sha512:{hex}"),
            format!("sha256:{}", &hex[1..]),
            format!("sha256:{}", hex.to_uppercase()),
            format!("sha256:{hex}/../x"),
            hex.to_string(),
        ] {
            let e = signature_tag(&bad).expect_err(&bad).to_string();
            assert!(e.contains("is not a sha256 manifest digest"), "{e}");
        }
    }

    #[test]
    fn refusals_read_as_sentences() {
        let tag = "sha256-ab.sig".to_string();
        assert_eq!(
            Refusal::Unsigned { tag: tag.clone() }.to_string(),
            "unsigned (no cosign signature under sha256-ab.sig)"
        );
        assert!(Refusal::UntrustedKey {
            tag: tag.clone(),
            signatures: 2
        }
        .to_string()
        .starts_with("not signed by a trusted key: none of the 2 signature(s)"));
        assert!(Refusal::OtherDigest {
            tag,
            key: "keys/ci.pub".into(),
            names: "sha256:cd".into()
        }
        .to_string()
        .contains("by trusted key keys/ci.pub is for another image (sha256:cd)"));
    }
}
