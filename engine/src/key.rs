//! The key of an image: blake3 over a canonical, versioned manifest of every input
//! (DESIGN.md principle 3). The manifest is a plain struct listing each input; maps are sorted, so
//! the key is the same on every machine, checkout path, umask and file order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::digest::{ContextDigest, FileDigest, ImageKey};

/// Bump this to invalidate every key (as moon's fingerprint `version`).
pub const KEY_FORMAT_VERSION: u32 = 1;

/// Every input of one image build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyManifest {
    pub format: u32,
    /// The Dockerfile, relative to the root, and the digest of its bytes.
    pub dockerfile: String,
    pub dockerfile_digest: FileDigest,
    /// The Merkle digest of the build context.
    pub context: ContextDigest,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub platform: Option<String>,
    /// External base images, in Dockerfile order, with their digest when known.
    pub base_images: Vec<BaseImage>,
    /// In-repo images this one builds `FROM`, by service, with their keys.
    pub from_images: BTreeMap<String, ImageKey>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseImage {
    pub reference: String,
    pub digest: Option<String>,
}

impl KeyManifest {
    /// The canonical bytes of the manifest: compact JSON with fields in declaration order.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        // Serializing a struct of strings, maps and digests cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn key(&self) -> ImageKey {
        let mut h = blake3::Hasher::new();
        h.update(b"kc-image-key\0");
        h.update(&self.canonical_bytes());
        ImageKey::from_hash(h.finalize())
    }
}

/// The record of one input file, as stored with a build (for `explain` and the plan's reasons).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    pub path: String,
    pub mode: u32,
    pub digest: FileDigest,
}

/// What a build is of: the key manifest and every file of its context. Stored in the cache as a
/// blob, so a later plan can say which inputs changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputManifest {
    pub service: String,
    pub key: ImageKey,
    pub manifest: KeyManifest,
    pub files: Vec<InputFile>,
}

impl InputManifest {
    pub fn new(service: &str, manifest: KeyManifest, ctx: &Context) -> InputManifest {
        InputManifest {
            service: service.to_string(),
            key: manifest.key(),
            manifest,
            files: ctx
                .files
                .iter()
                .map(|f| InputFile {
                    path: f.path.to_string(),
                    mode: f.mode,
                    digest: f.digest,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> KeyManifest {
        KeyManifest {
            format: KEY_FORMAT_VERSION,
            dockerfile: "services/a/Dockerfile".into(),
            dockerfile_digest: FileDigest::of_bytes(b"FROM x"),
            context: ContextDigest::of_bytes(b"ctx"),
            build_args: BTreeMap::from([("B".into(), "2".into()), ("A".into(), "1".into())]),
            target: None,
            platform: None,
            base_images: vec![BaseImage {
                reference: "node:18-alpine".into(),
                digest: None,
            }],
            from_images: BTreeMap::new(),
        }
    }

    #[test]
    fn every_field_changes_the_key() {
        let base = manifest().key();
        let mut m = manifest();
        m.build_args.insert("A".into(), "9".into());
        assert_ne!(m.key(), base);
        let mut m = manifest();
        m.target = Some("runtime".into());
        assert_ne!(m.key(), base);
        let mut m = manifest();
        m.platform = Some("linux/arm64".into());
        assert_ne!(m.key(), base);
        let mut m = manifest();
        m.format += 1;
        assert_ne!(m.key(), base);
        let mut m = manifest();
        m.base_images[0].digest = Some("sha256:00".into());
        assert_ne!(m.key(), base);
        let mut m = manifest();
        m.from_images
            .insert("base".into(), ImageKey::of_bytes(b"k"));
        assert_ne!(m.key(), base);
        let mut m = manifest();
        m.dockerfile_digest = FileDigest::of_bytes(b"FROM y");
        assert_ne!(m.key(), base);
        assert_eq!(manifest().key(), base);
    }
}
