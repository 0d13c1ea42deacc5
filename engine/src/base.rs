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

use std::path::Path;
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

/// Checks an image reference against Docker's grammar closely enough that it can be put in a
/// request path or an argument vector: `[host[:port]/]path[:tag][@algo:hex]`, no whitespace.
pub fn validate_reference(reference: &str) -> Result<(), String> {
    if reference.is_empty() || reference.len() > 512 {
        return Err(format!("`{reference}` is not an image reference"));
    }
    if let Some(c) = reference
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '@')))
    {
        return Err(format!(
            "`{reference}` is not an image reference: `{}` is not allowed in one",
            c.escape_default()
        ));
    }
    let (name, _) = reference.split_once('@').unwrap_or((reference, ""));
    if name.is_empty() || name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        return Err(format!("`{reference}` is not an image reference"));
    }
    Ok(())
}

/// A reference split for the registry API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The API host (`registry-1.docker.io` for Docker Hub).
    pub host: String,
    /// The repository, e.g. `library/node`.
    pub repository: String,
    /// The tag or digest.
    pub reference: String,
}

/// Splits a reference as Docker does: the first component is a registry host when it has a `.`
/// or a `:`, or is `localhost`; else Docker Hub, where one-component names are in `library/`.
pub fn parse_reference(reference: &str) -> Reference {
    let (name, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    let (name, tag) = match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => (&name[..i], Some(&name[i + 1..])),
        _ => (name, None),
    };
    let (host, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => ("docker.io".to_string(), name.to_string()),
    };
    let (host, path) = if matches!(host.as_str(), "docker.io" | "index.docker.io") {
        let path = if path.contains('/') {
            path
        } else {
            format!("library/{path}")
        };
        ("registry-1.docker.io".to_string(), path)
    } else {
        (host, path)
    };
    Reference {
        host,
        repository: path,
        reference: digest
            .map(str::to_string)
            .or_else(|| tag.map(str::to_string))
            .unwrap_or_else(|| "latest".to_string()),
    }
}

/// Normalises a platform as Docker does (`linux/x86_64` -> `linux/amd64`, `linux/arm64/v8` ->
/// `linux/arm64`, `linux/arm` -> `linux/arm/v7`).
pub fn normalize_platform(platform: &str) -> Result<String, String> {
    let lower = platform.trim().to_ascii_lowercase();
    let parts: Vec<&str> = lower.split('/').collect();
    let bad = || {
        format!(
            "`{platform}` is not a platform\n  hint: write it as `os/arch[/variant]`, e.g. `linux/amd64` or `linux/arm64`"
        )
    };
    if parts.len() < 2 || parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(bad());
    }
    if !parts
        .iter()
        .all(|p| p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    {
        return Err(bad());
    }
    let os = parts[0];
    let (arch, mut variant) = match parts[1] {
        "x86_64" | "x86-64" => ("amd64", None),
        "aarch64" => ("arm64", None),
        "armhf" => ("arm", Some("v7")),
        "armel" => ("arm", Some("v6")),
        "i386" | "i686" => ("386", None),
        a => (a, None),
    };
    if let Some(v) = parts.get(2) {
        variant = Some(v);
    }
    let variant = match (arch, variant) {
        ("arm64", Some("v8")) => None,
        ("arm", None) => Some("v7"),
        (_, v) => v,
    };
    Ok(match variant {
        Some(v) => format!("{os}/{arch}/{v}"),
        None => format!("{os}/{arch}"),
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
    if let Some(sock) = crate::execute::docker::engine_socket() {
        if let Some((200, body)) = crate::execute::docker::api_get(&sock, "/version") {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            if let (Some(os), Some(arch)) = (v["Os"].as_str(), v["Arch"].as_str()) {
                let mut p = format!("{os}/{arch}");
                if arch == "arm" {
                    if let Some((200, info)) = crate::execute::docker::api_get(&sock, "/info") {
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
    if let Some(sock) = crate::execute::docker::engine_socket() {
        match crate::execute::docker::api_get(&sock, &format!("/images/{reference}/json")) {
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
    let r = parse_reference(reference);
    let (namespace, image) = match r.repository.rsplit_once('/') {
        Some((ns, img)) => (ns.to_string(), img.to_string()),
        None => (String::new(), r.repository.clone()),
    };
    let spec = if namespace.is_empty() {
        r.host.clone()
    } else {
        format!("{}/{namespace}", r.host)
    };
    let registry = match cache::registry::Registry::parse(&spec) {
        Ok(reg) => reg,
        Err(e) => return Lookup::NotFound(e.to_string()),
    };
    let unavailable = |e: cache::registry::RegistryError| Lookup::Unavailable(e.to_string());
    let manifest = match registry.get_manifest(&image, &r.reference) {
        Ok(Some(m)) => m,
        Ok(None) => {
            return Lookup::NotFound(format!(
                "`{reference}` is neither in the engine nor in its registry `{}`",
                r.host
            ))
        }
        Err(e) => return unavailable(e),
    };
    let v: serde_json::Value = match serde_json::from_slice(&manifest.bytes) {
        Ok(v) => v,
        Err(e) => return Lookup::Unavailable(format!("unreadable manifest of `{reference}`: {e}")),
    };
    let manifest = if let Some(list) = v["manifests"].as_array() {
        let found = list.iter().find(|m| {
            let p = &m["platform"];
            platform_matches(
                platform,
                p["os"].as_str().unwrap_or(""),
                p["architecture"].as_str().unwrap_or(""),
                p["variant"].as_str().unwrap_or(""),
            )
        });
        let Some(digest) = found.and_then(|m| m["digest"].as_str()) else {
            return Lookup::NotFound(format!("`{reference}` has no image for {platform}"));
        };
        match registry.get_manifest(&image, digest) {
            Ok(Some(m)) => match serde_json::from_slice::<serde_json::Value>(&m.bytes) {
                Ok(v) => v,
                Err(e) => {
                    return Lookup::Unavailable(format!(
                        "unreadable manifest of `{reference}`: {e}"
                    ))
                }
            },
            Ok(None) => {
                return Lookup::NotFound(format!("`{reference}`: manifest {digest} is missing"))
            }
            Err(e) => return unavailable(e),
        }
    } else {
        // One image (no index): its platform is in its config, which this does not fetch; the
        // build fails as docker's would if it is another platform's.
        v
    };
    match manifest["config"]["digest"].as_str() {
        Some(d) if d.starts_with("sha256:") => Lookup::Found(d.to_string()),
        _ => Lookup::Unavailable(format!("the manifest of `{reference}` names no config")),
    }
}

/// Whether a path is a Docker socket that answers (for tests and diagnostics).
pub fn engine_reachable() -> bool {
    crate::execute::docker::engine_socket()
        .as_deref()
        .is_some_and(|s: &Path| crate::execute::docker::api_get(s, "/_ping").is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_as_docker_does() {
        let r = parse_reference("node:18-alpine");
        assert_eq!(r.host, "registry-1.docker.io");
        assert_eq!(r.repository, "library/node");
        assert_eq!(r.reference, "18-alpine");
        let r = parse_reference("127.0.0.1:5000/team/base:1");
        assert_eq!(
            (r.host.as_str(), r.repository.as_str(), r.reference.as_str()),
            ("127.0.0.1:5000", "team/base", "1")
        );
        let r = parse_reference("bitnami/redis");
        assert_eq!(
            (r.repository.as_str(), r.reference.as_str()),
            ("bitnami/redis", "latest")
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let r = parse_reference(&format!("localhost/x:1@{d}"));
        assert_eq!((r.host.as_str(), r.repository.as_str()), ("localhost", "x"));
        assert_eq!(r.reference, d);
        assert_eq!(pinned_digest(&format!("x@{d}")), Some(d));
        assert_eq!(pinned_digest("x@sha256:abc"), None);
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
        assert!(normalize_platform("amd64").is_err());
        assert!(normalize_platform("linux/amd64/../x").is_err());
    }

    #[test]
    fn references_that_cannot_be_sent_anywhere_are_refused() {
        for bad in ["node 18", "a\r\nHost: x", "", "/x", "x//y", "x?y", "x%2f"] {
            assert!(validate_reference(bad).is_err(), "{bad:?}");
        }
        for ok in ["node:18-alpine", "127.0.0.1:5000/a/b:1", "x@sha256:00"] {
            assert!(validate_reference(ok).is_ok(), "{ok}");
        }
    }
}
