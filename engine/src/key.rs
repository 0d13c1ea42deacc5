//! The key of an image: blake3 over a canonical, versioned manifest of every input
//! (DESIGN.md principle 3). The manifest is a plain struct listing each input; maps are sorted, so
//! the key is the same on every machine, checkout path, umask and file order.
//!
//! Format 2 (this one) holds: the Dockerfile and its digest, the context's Merkle digest, each
//! build argument by the digest of its value (never the value), the target stage, the platform
//! (configured, else the engine's own), each external image the build reads by content digest
//! (with the platform it is resolved for), each `ADD <url>` by its pinned checksum, the keys of
//! the in-repo images it builds `FROM`, and the ids (never the values) of the BuildKit secrets it
//! mounts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::digest::{ArgDigest, ContextDigest, FileDigest, ImageKey};

/// Bump this to invalidate every key (as moon's fingerprint `version`).
/// 2: build args by digest, the platform always (the engine's when none is configured), base
/// images by content digest, pinned remote sources, contexts of exactly what the Dockerfile copies.
pub const KEY_FORMAT_VERSION: u32 = 2;

/// Every input of one image build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyManifest {
    pub format: u32,
    /// The Dockerfile, relative to the root, and the digest of its bytes.
    pub dockerfile: String,
    pub dockerfile_digest: FileDigest,
    /// The Merkle digest of the build context.
    pub context: ContextDigest,
    /// Build arguments by name, each value by its digest: values are never stored or printed.
    pub build_args: BTreeMap<String, ArgDigest>,
    pub target: Option<String>,
    /// The platform built for (`os/arch[/variant]`): the configured one, else the engine's own;
    /// `None` when neither is known (no engine reachable), and then the key is incomplete.
    pub platform: Option<String>,
    /// External images the build reads (`FROM`, `COPY --from`, `RUN --mount=from=`), in
    /// Dockerfile order, each with its content digest when known.
    pub base_images: Vec<BaseImage>,
    /// `ADD <url>` sources, pinned by their `--checksum`.
    pub remote_sources: Vec<RemoteSource>,
    /// In-repo images this one builds `FROM`, by service, with their keys.
    pub from_images: BTreeMap<String, ImageKey>,
    /// The ids of the BuildKit secrets the build mounts and is given (`[secrets]` in
    /// images.toml), sorted; never their values. Left out when empty, so a build without
    /// secrets keeps the key it had before this field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
}

/// An external image, as the build reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseImage {
    /// As written (after `ARG` substitution), e.g. `node:18-alpine`.
    pub reference: String,
    /// The platform it is resolved for (a stage's `--platform`, else the build's).
    pub platform: Option<String>,
    /// Its content digest: the image ID (`sha256:` of its config) for that platform, or the
    /// digest a reference pins (`name@sha256:...`). `None`: not known (no engine, no registry).
    pub digest: Option<String>,
}

/// An `ADD <url>` source pinned by `--checksum=`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RemoteSource {
    pub url: String,
    pub checksum: String,
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

/// What an entry of a context is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    #[default]
    File,
    Symlink,
    Dir,
}

impl EntryKind {
    fn is_file(&self) -> bool {
        *self == EntryKind::File
    }
}

/// The record of one input file, as stored with a build (for `explain` and the plan's reasons).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    pub path: String,
    pub mode: u32,
    pub digest: FileDigest,
    #[serde(default, skip_serializing_if = "EntryKind::is_file")]
    pub kind: EntryKind,
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
                    kind: f.kind(),
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
            build_args: BTreeMap::from([
                ("B".into(), ArgDigest::of_value("2")),
                ("A".into(), ArgDigest::of_value("1")),
            ]),
            target: None,
            platform: Some("linux/amd64".into()),
            base_images: vec![BaseImage {
                reference: "node:18-alpine".into(),
                platform: Some("linux/amd64".into()),
                digest: Some("sha256:aa".into()),
            }],
            remote_sources: Vec::new(),
            from_images: BTreeMap::new(),
            secrets: Vec::new(),
        }
    }

    #[test]
    fn every_field_changes_the_key() {
        let base = manifest().key();
        let mut m = manifest();
        m.build_args.insert("A".into(), ArgDigest::of_value("9"));
        assert_ne!(m.key(), base);
        let mut m = manifest();
        m.target = Some("runtime".into());
        assert_ne!(m.key(), base);
        let mut m = manifest();
        m.platform = Some("linux/arm64".into());
        assert_ne!(m.key(), base);
        let mut m = manifest();
        m.platform = None;
        assert_ne!(m.key(), base);
        let mut m = manifest();
        m.format += 1;
        assert_ne!(m.key(), base);
        let mut m = manifest();
        m.base_images[0].digest = Some("sha256:00".into());
        assert_ne!(m.key(), base);
        let mut m = manifest();
        m.base_images[0].platform = Some("linux/arm64".into());
        assert_ne!(m.key(), base);
        let mut m = manifest();
        m.remote_sources.push(RemoteSource {
            url: "https://example.test/x".into(),
            checksum: "sha256:00".into(),
        });
        assert_ne!(m.key(), base);
        let mut m = manifest();
        m.from_images
            .insert("base".into(), ImageKey::of_bytes(b"k"));
        assert_ne!(m.key(), base);
        let mut m = manifest();
        m.dockerfile_digest = FileDigest::of_bytes(b"FROM y");
        assert_ne!(m.key(), base);
        let mut m = manifest();
        m.secrets.push("npmrc".into());
        assert_ne!(m.key(), base);
        assert_eq!(manifest().key(), base);
    }

    #[test]
    fn build_arg_values_are_not_in_the_manifest() {
        let mut m = manifest();
        m.build_args
            .insert("NPM_TOKEN".into(), ArgDigest::of_value("npm_canary_value"));
        let text = String::from_utf8(m.canonical_bytes()).expect("utf-8");
        assert!(text.contains("NPM_TOKEN"), "{text}");
        assert!(!text.contains("npm_canary_value"), "{text}");
        // Not a plain blake3 of the value either (domain-separated).
        assert!(!text.contains(&blake3::hash(b"npm_canary_value").to_hex().to_string()));
    }
}
