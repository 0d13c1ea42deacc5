//! Base images: what a build reads from outside the repository, keyed by content digest, and the
//! platform a build targets when none is configured (DESIGN.md principle 3).
//!
//! A base image's digest is its image ID (the `sha256:` of its config), which is the same on every
//! machine for one platform, whether the image was pulled or imported. The analysis asks a
//! [`BaseResolver`] (the seam tests and other drivers plug into); [`EngineResolver`] asks the
//! Docker engine first (the Engine API over its socket, else the CLI), as `docker build` uses a
//! local image when it has one, then the image's registry (the platform's manifest, then its
//! config digest). `name@sha256:...` pins its content and needs no lookup.
//!
//! Without an engine and a registry, a digest is not known: the analysis then says so (the key is
//! marked incomplete and the image is planned `build`), it never claims a digest it does not know.

use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The answer to one question about the outside world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The answer: a digest (`sha256:...`) or a platform (`linux/amd64`).
    Found(String),
    /// It does not exist (the build would fail): why.
    NotFound(String),
    /// It could not be asked (no engine, registry unreachable): why.
    Unavailable(String),
}

/// Where base image digests and the default platform come from.
pub trait BaseResolver: Send + Sync {
    /// The engine's own platform (`os/arch[/variant]`): what a build targets when no platform is
    /// configured.
    fn engine_platform(&self) -> Lookup;
    /// The content digest of `reference` for `platform` (normalised, as [`normalize_platform`]).
    fn digest(&self, reference: &str, platform: &str) -> Lookup;
}

/// The Docker engine, then the registry.
#[derive(Debug, Default)]
pub struct EngineResolver {
    platform: OnceLock<Lookup>,
    /// Look up images that are not local in their registry (on by default).
    no_registry: bool,
}

impl EngineResolver {
    pub fn new() -> EngineResolver {
        EngineResolver::default()
    }

    /// Asks the engine only: an image that is not local is unknown (for callers that must not
    /// reach the network).
    pub fn engine_only() -> EngineResolver {
        EngineResolver {
            no_registry: true,
            ..EngineResolver::default()
        }
    }
}

/// Knows nothing: every answer is unavailable (for commands that must not ask the engine).
#[derive(Debug, Default)]
pub struct OfflineResolver;

impl BaseResolver for OfflineResolver {
    fn engine_platform(&self) -> Lookup {
        Lookup::Unavailable("not asked".into())
    }
    fn digest(&self, reference: &str, _platform: &str) -> Lookup {
        match pinned_digest(reference) {
            Some(d) => Lookup::Found(d),
            None => Lookup::Unavailable("not asked".into()),
        }
    }
}

/// The digest a reference pins (`name@sha256:<64 hex>`).
pub fn pinned_digest(reference: &str) -> Option<String> {
    let (_, digest) = reference.rsplit_once('@')?;
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
    .then(|| digest.to_string())
}

/// Checks an image reference against the distribution spec's grammar (as the registry client
/// parses it), so that it can be put in a request path or an argument vector.
pub fn validate_reference(reference: &str) -> Result<(), String> {
    cache::registry::ImageRef::parse(reference)
        .map(|_| ())
        .map_err(|why| {
            format!(
                "`{}` is not an image reference: {why}",
                reference.escape_debug()
            )
        })
}

/// Normalises a platform as Docker does (`linux/x86_64` -> `linux/amd64`, `linux/arm64/v8` ->
/// `linux/arm64`, `linux/arm` -> `linux/arm/v7`; `arm64` alone is `linux/arm64`).
pub fn normalize_platform(platform: &str) -> Result<String, String> {
    cache::registry::Platform::parse(platform)
        .map(|p| p.to_string())
        .map_err(|e| {
            format!(
                "{e}\n  hint: write it as `os/arch[/variant]`, e.g. `linux/amd64` or `linux/arm64`"
            )
        })
}

/// Whether an image's `Os`/`Architecture`/`Variant` (as the engine or a registry names them) is
/// `platform`.
fn platform_matches(platform: &str, os: &str, arch: &str, variant: &str) -> bool {
    let have = if variant.is_empty() {
        format!("{os}/{arch}")
    } else {
        format!("{os}/{arch}/{variant}")
    };
    normalize_platform(&have).is_ok_and(|h| h == platform)
}

impl BaseResolver for EngineResolver {
    fn engine_platform(&self) -> Lookup {
        self.platform.get_or_init(engine_platform).clone()
    }

    fn digest(&self, reference: &str, platform: &str) -> Lookup {
        if let Some(d) = pinned_digest(reference) {
            return Lookup::Found(d);
        }
        if let Err(e) = validate_reference(reference) {
            return Lookup::NotFound(e);
        }
        let local = local_image(reference);
        match &local {
            Some(Ok((id, os, arch, variant))) if platform_matches(platform, os, arch, variant) => {
                return Lookup::Found(id.clone());
            }
            _ => {}
        }
        if self.no_registry {
            return Lookup::Unavailable(match local {
                Some(Ok((_, os, arch, _))) => format!(
                    "the engine holds it for {os}/{arch}, not {platform}, and the registry is not asked"
                ),
                _ => "not in the engine, and the registry is not asked".to_string(),
            });
        }
        match registry_digest(reference, platform) {
            Lookup::Unavailable(why) if local.is_none() => Lookup::Unavailable(format!(
                "no Docker engine answered, and its registry: {why}"
            )),
            other => other,
        }
    }
}

/// The engine's platform, from the Engine API (`/version`, and `/info` for an ARM variant), else
/// the CLI.
fn engine_platform() -> Lookup {
    if let Some(sock) = crate::execute::api::engine_socket() {
        if let Some((200, body)) = crate::execute::api::get(&sock, "/version") {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            if let (Some(os), Some(arch)) = (v["Os"].as_str(), v["Arch"].as_str()) {
                let mut p = format!("{os}/{arch}");
                if arch == "arm" {
                    if let Some((200, info)) = crate::execute::api::get(&sock, "/info") {
                        let i: serde_json::Value =
                            serde_json::from_slice(&info).unwrap_or_default();
                        if let Some(m) = i["Architecture"].as_str() {
                            if let Some(v) = m.strip_prefix("armv").and_then(|r| r.get(..1)) {
                                p = format!("{os}/arm/v{v}");
                            }
                        }
                    }
                }
                return match normalize_platform(&p) {
                    Ok(p) => Lookup::Found(p),
                    Err(e) => Lookup::NotFound(e),
                };
            }
        }
    }
    let Some(client) = docker_client() else {
        return Lookup::Unavailable("no Docker client found".into());
    };
    let out = Command::new(client)
        .args(["version", "--format", "{{.Server.Os}}/{{.Server.Arch}}"])
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let p = String::from_utf8_lossy(&o.stdout).trim().to_string();
            match normalize_platform(&p) {
                Ok(p) => Lookup::Found(p),
                Err(_) => Lookup::Unavailable(format!("the engine named its platform `{p}`")),
            }
        }
        Ok(o) => Lookup::Unavailable(format!(
            "no Docker engine answered: {}",
            crate::execute::docker::tail(String::from_utf8_lossy(&o.stderr).trim(), 2)
        )),
        Err(e) => Lookup::Unavailable(format!("no Docker engine answered: {e}")),
    }
}

/// The Docker client to ask when the engine's socket is not reachable directly: `DOCKER`, else
/// `docker` on `PATH`.
fn docker_client() -> Option<std::path::PathBuf> {
    if let Some(c) = std::env::var_os("DOCKER").filter(|c| !c.is_empty()) {
        return Some(c.into());
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("docker"))
        .find(|p| p.is_file())
}

/// A local image: its id, os, architecture and variant; `None` when the engine does not have it
/// (or cannot be asked); `Some(Err)` when asking failed.
fn local_image(reference: &str) -> Option<Result<(String, String, String, String), String>> {
    let from = |v: &serde_json::Value| -> Option<(String, String, String, String)> {
        let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
        let id = v["Id"].as_str()?.to_string();
        id.starts_with("sha256:")
            .then(|| (id, s("Os"), s("Architecture"), s("Variant")))
    };
    if let Some(sock) = crate::execute::api::engine_socket() {
        match crate::execute::api::get(&sock, &format!("/images/{reference}/json")) {
            Some((200, body)) => {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                return from(&v).map(Ok);
            }
            Some((404, _)) => return None,
            Some((code, _)) => return Some(Err(format!("the engine answered {code}"))),
            None => {}
        }
    }
    let client = docker_client()?;
    let out = Command::new(client)
        .args(["image", "inspect", "--format", "{{json .}}", reference])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    from(&v).map(Ok)
}

/// The config digest of `reference` for `platform`, from its registry.
fn registry_digest(reference: &str, platform: &str) -> Lookup {
    let p = match cache::registry::Platform::parse(platform) {
        Ok(p) => p,
        Err(e) => return Lookup::NotFound(e),
    };
    match cache::registry::Registry::resolve_config_digest(reference, &p) {
        Ok(Some(d)) => Lookup::Found(d),
        Ok(None) => Lookup::NotFound(format!(
            "`{reference}` is neither in the engine nor in its registry"
        )),
        Err(cache::registry::RegistryError::Invalid { reason, .. }) => Lookup::NotFound(reason),
        Err(e) => Lookup::Unavailable(e.to_string().lines().next().unwrap_or("").to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_references_need_no_lookup() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(pinned_digest(&format!("x@{d}")), Some(d.clone()));
        assert_eq!(pinned_digest("x@sha256:abc"), None);
        assert_eq!(
            OfflineResolver.digest(&format!("localhost/x:1@{d}"), "linux/amd64"),
            Lookup::Found(d)
        );
    }

    #[test]
    fn platforms_normalise() {
        assert_eq!(
            normalize_platform("linux/x86_64").as_deref(),
            Ok("linux/amd64")
        );
        assert_eq!(
            normalize_platform("Linux/ARM64/v8").as_deref(),
            Ok("linux/arm64")
        );
        assert_eq!(
            normalize_platform("linux/arm").as_deref(),
            Ok("linux/arm/v7")
        );
        assert_eq!(normalize_platform("amd64").as_deref(), Ok("linux/amd64"));
        assert!(normalize_platform("linux/amd64/../x").is_err());
        assert!(normalize_platform("linux amd64").is_err());
    }

    #[test]
    fn references_that_cannot_be_sent_anywhere_are_refused() {
        for bad in ["node 18", "a\r\nHost: x", "", "/x", "x//y", "x?y", "x%2f"] {
            assert!(validate_reference(bad).is_err(), "{bad:?}");
        }
        let pinned = format!("x@sha256:{}", "0".repeat(64));
        for ok in ["node:18-alpine", "127.0.0.1:5000/a/b:1", pinned.as_str()] {
            assert!(validate_reference(ok).is_ok(), "{ok}");
        }
    }
}
