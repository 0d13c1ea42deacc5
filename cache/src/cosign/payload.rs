//! The simple-signing payload cosign signs: which manifest digest is vouched for, under which
//! name, in the exact shape cosign writes (and containers/image checks field by field).

use serde::{Deserialize, Serialize};

/// `critical.type` of every cosign image signature.
pub const SIGNATURE_TYPE: &str = "cosign container image signature";

/// `{"critical":{"identity":{"docker-reference":…},"image":{"docker-manifest-digest":…},
/// "type":…},"optional":…}`, fields in cosign's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    pub critical: Critical,
    /// Free annotations (`null` when none, as cosign writes it).
    pub optional: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Critical {
    pub identity: Identity,
    pub image: Image,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    #[serde(rename = "docker-reference")]
    pub docker_reference: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    #[serde(rename = "docker-manifest-digest")]
    pub docker_manifest_digest: String,
}

impl Payload {
    pub fn new(
        docker_reference: &str,
        digest: &str,
        optional: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Payload {
        Payload {
            critical: Critical {
                identity: Identity {
                    docker_reference: docker_reference.to_string(),
                },
                image: Image {
                    docker_manifest_digest: digest.to_string(),
                },
                kind: SIGNATURE_TYPE.to_string(),
            },
            optional: optional.cloned(),
        }
    }

    /// The bytes that are signed.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses signed bytes strictly: exactly cosign's fields, its type.
    pub fn parse(bytes: &[u8]) -> Result<Payload, String> {
        let p: Payload = serde_json::from_slice(bytes)
            .map_err(|e| format!("not a cosign simple-signing payload: {e}"))?;
        if p.critical.kind != SIGNATURE_TYPE {
            return Err(format!(
                "the payload's type is `{}`, not `{SIGNATURE_TYPE}`",
                crate::registry::reference::escape(&p.critical.kind)
            ));
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_has_cosigns_shape_and_order() {
        let p = Payload::new(
            "127.0.0.1:5000/cache/api",
            "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            None,
        );
        assert_eq!(
            String::from_utf8(p.to_bytes()).expect("utf8"),
            r#"{"critical":{"identity":{"docker-reference":"127.0.0.1:5000/cache/api"},"image":{"docker-manifest-digest":"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},"type":"cosign container image signature"},"optional":null}"#
        );
        assert_eq!(Payload::parse(&p.to_bytes()).expect("parse"), p);
    }

    #[test]
    fn other_shapes_are_refused() {
        let ok = r#"{"critical":{"identity":{"docker-reference":"r"},"image":{"docker-manifest-digest":"sha256:aa"},"type":"cosign container image signature"},"optional":{"creator":"x"}}"#;
        assert!(Payload::parse(ok.as_bytes()).is_ok());
        // cosign (Go's encoding/json) reads a payload without `optional`: so does this.
        assert!(
            Payload::parse(ok.replace(r#","optional":{"creator":"x"}"#, "").as_bytes()).is_ok()
        );
        for bad in [
            ok.replace(
                "cosign container image signature",
                "atomic container signature",
            ),
            ok.replace(r#""image":"#, r#""extra":1,"image":"#),
            ok.replace(
                r#"{"docker-manifest-digest":"sha256:aa"}"#,
                r#"{"docker-manifest-digest":"sha256:aa","docker-manifest-digest":"sha256:bb"}"#,
            ),
            "[]".to_string(),
        ] {
            assert!(Payload::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
