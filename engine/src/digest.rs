//! Typed blake3 digests: a file's content digest, a context's Merkle digest and an image key are
//! different types, so one is never passed where another is meant (as buck2's `CasDigest<Kind>`).

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

/// What a digest is of. Only a marker: it carries no data.
pub trait DigestKind: 'static {
    /// A short prefix used when a digest of this kind is printed in full.
    const NAME: &'static str;
}

/// A blake3 digest of one kind of thing.
pub struct Digest<K: DigestKind> {
    hash: blake3::Hash,
    kind: PhantomData<fn() -> K>,
}

impl<K: DigestKind> Digest<K> {
    pub fn from_hash(hash: blake3::Hash) -> Self {
        Digest {
            hash,
            kind: PhantomData,
        }
    }

    pub fn of_bytes(bytes: &[u8]) -> Self {
        Self::from_hash(blake3::hash(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        self.hash.as_bytes()
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self::from_hash(blake3::Hash::from_bytes(bytes))
    }

    /// The full digest as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        self.hash.to_hex().to_string()
    }

    /// The first `n` hex digits, for tags and display.
    pub fn short(&self, n: usize) -> String {
        let hex = self.to_hex();
        hex[..n.min(hex.len())].to_string()
    }
}

impl<K: DigestKind> Clone for Digest<K> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K: DigestKind> Copy for Digest<K> {}
impl<K: DigestKind> PartialEq for Digest<K> {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash
    }
}
impl<K: DigestKind> Eq for Digest<K> {}
impl<K: DigestKind> std::hash::Hash for Digest<K> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.hash.as_bytes().hash(state)
    }
}
impl<K: DigestKind> PartialOrd for Digest<K> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<K: DigestKind> Ord for Digest<K> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.hash.as_bytes().cmp(other.hash.as_bytes())
    }
}

impl<K: DigestKind> fmt::Display for Digest<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl<K: DigestKind> fmt::Debug for Digest<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", K::NAME, self.short(16))
    }
}

impl<K: DigestKind> FromStr for Digest<K> {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        blake3::Hash::from_hex(s)
            .map(Self::from_hash)
            .map_err(|e| format!("invalid {} digest `{s}`: {e}", K::NAME))
    }
}

impl<K: DigestKind> serde::Serialize for Digest<K> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de, K: DigestKind> serde::Deserialize<'de> for Digest<K> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

macro_rules! kind {
    ($(#[$doc:meta])* $name:ident, $alias:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {}
        impl DigestKind for $name {
            const NAME: &'static str = $prefix;
        }
        $(#[$doc])*
        pub type $alias = Digest<$name>;
    };
}

kind!(
    /// The blake3 of one file's bytes (or of a symlink's target).
    FileKind, FileDigest, "file"
);
kind!(
    /// The Merkle digest of a whole build context: paths, modes and file digests.
    ContextKind, ContextDigest, "context"
);
kind!(
    /// An image key: blake3 of the canonical manifest of every input of the image.
    KeyKind, ImageKey, "key"
);
kind!(
    /// The digest of a blob in the cache (a manifest, a log).
    BlobKind, BlobDigest, "blob"
);
kind!(
    /// The digest of a build argument's value: the key holds it, never the value.
    ArgKind, ArgDigest, "arg"
);

impl ArgDigest {
    /// The digest of one build argument value (domain-separated from every other digest).
    pub fn of_value(value: &str) -> ArgDigest {
        let mut h = blake3::Hasher::new_derive_key("kc-images 2024 build argument value");
        h.update(value.as_bytes());
        ArgDigest::from_hash(h.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let d = FileDigest::of_bytes(b"hello");
        let parsed: FileDigest = d.to_hex().parse().expect("valid hex");
        assert_eq!(d, parsed);
        assert_eq!(d.short(12).len(), 12);
        assert!(format!("{d:?}").starts_with("file:"));
    }

    #[test]
    fn serde_is_plain_hex() {
        let k = ImageKey::of_bytes(b"x");
        let json = serde_json::to_string(&k).expect("serialize");
        assert_eq!(json, format!("\"{}\"", k.to_hex()));
        let back: ImageKey = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, k);
        assert!(serde_json::from_str::<ImageKey>("\"zz\"").is_err());
    }
}
