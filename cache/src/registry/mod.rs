//! The registry client: an OCI registry spoken to with the Registry HTTP API v2, as the
//! distribution spec and the docker CLI define it. The cache tags images by key; a lookup is a
//! `HEAD` of the key tag's manifest; publishing a release tag of a cached key copies the manifest
//! inside the registry (no layer moves).
//!
//! - [`reference`]: names (hosts, repositories, tags, digests) validated as the spec defines them,
//!   Docker Hub's conventions (`docker.io` -> `registry-1.docker.io`, `library/`).
//! - [`auth`]: credentials as the docker CLI finds them, challenges, a bearer token per scope,
//!   and where credentials may go.
//! - [`http`]: proxies (`HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`), the system certificate store plus
//!   `IMAGES_REGISTRY_CA`, retries with backoff on 429/5xx.
//! - [`platform`]: the platform's entry of an image index.

pub mod auth;
pub mod http;
pub mod platform;
pub mod reference;
mod requests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

pub use auth::Credential;
pub use http::{HttpSettings, ProxyEnv};
pub use platform::Platform;
pub use reference::ImageRef;

/// Manifest media types we accept, most specific first.
pub const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// The largest manifest read (the spec lets registries refuse over 4 MiB).
const MANIFEST_LIMIT: u64 = 16 << 20;
/// The largest blob read into memory (image configs; layers are never read here).
const BLOB_LIMIT: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid registry reference `{spec}`: {reason}\n  hint: use HOST[:PORT][/NAMESPACE] with lowercase path components, e.g. `127.0.0.1:5000/cache` or `ghcr.io/acme`")]
    Invalid { spec: String, reason: String },
    #[error("registry `{registry}`: {message}")]
    Http { registry: String, message: String },
    #[error("registry `{registry}` refused {what}: {detail}\n  hint: {hint}")]
    Unauthorized {
        registry: String,
        what: String,
        detail: String,
        hint: String,
    },
    #[error("registry `{registry}`: the TLS connection failed: {message}\n  hint: if its certificate comes from a private CA, set IMAGES_REGISTRY_CA to that CA's PEM file (or put it in /etc/docker/certs.d/{registry}/ca.crt)")]
    Tls { registry: String, message: String },
    #[error("registry `{registry}` could not be reached: {message}\n  hint: {hint}")]
    Unreachable {
        registry: String,
        message: String,
        hint: String,
    },
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// How registries are reached: read once from the environment ([`Settings::from_env`]), or
/// built by a test.
#[derive(Debug, Clone)]
pub struct Settings {
    pub http: HttpSettings,
    /// Hosts reached over plain http (`IMAGES_INSECURE_REGISTRIES`, comma-separated); loopback
    /// hosts always are, unless the spec says `https://`.
    pub insecure: Vec<String>,
    /// Token realms trusted with a registry's credentials although on another host:
    /// `(registry, realm host[:port])` (`IMAGES_REGISTRY_TOKEN_REALMS=reg=realm,...`).
    pub token_realms: Vec<(String, String)>,
    /// The docker CLI's config directory (`DOCKER_CONFIG`, else `~/.docker`).
    pub docker_config: Option<PathBuf>,
    /// The platform whose entry of an image index is used.
    pub platform: Platform,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            http: HttpSettings::default(),
            insecure: Vec::new(),
            token_realms: Vec::new(),
            docker_config: None,
            platform: Platform::host(),
        }
    }
}

impl Settings {
    /// The settings users give through the environment: `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`,
    /// `IMAGES_REGISTRY_CA`, Docker's `/etc/docker/certs.d`, `IMAGES_INSECURE_REGISTRIES`,
    /// `IMAGES_REGISTRY_TOKEN_REALMS`, `DOCKER_CONFIG`.
    pub fn from_env() -> Settings {
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.trim().is_empty());
        let list = |n: &str| {
            var(n)
                .map(|v| {
                    v.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        };
        Settings {
            http: HttpSettings {
                proxy: ProxyEnv::from_env(),
                ca_file: var("IMAGES_REGISTRY_CA").map(PathBuf::from),
                certs_d: Some(PathBuf::from("/etc/docker/certs.d")),
                ..HttpSettings::default()
            },
            insecure: list("IMAGES_INSECURE_REGISTRIES"),
            token_realms: list("IMAGES_REGISTRY_TOKEN_REALMS")
                .into_iter()
                .filter_map(|e| {
                    e.split_once('=')
                        .map(|(r, h)| (r.trim().to_string(), h.trim().to_string()))
                })
                .collect(),
            docker_config: std::env::var_os("DOCKER_CONFIG")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker"))),
            platform: Platform::host(),
        }
    }
}

/// A manifest as stored in the registry.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// `sha256:<hex>` of `bytes` (checked against what the registry said).
    pub digest: String,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

impl Manifest {
    /// Whether this is an image index (a manifest list).
    pub fn is_index(&self) -> bool {
        self.media_type.contains("index") || self.media_type.contains("manifest.list")
    }
}

/// A registry and a namespace within it, e.g. `127.0.0.1:5000/cache`.
pub struct Registry {
    /// `host[:port]` as named (`docker.io` for Docker Hub).
    pub host: String,
    /// The repository prefix (may be empty).
    pub namespace: String,
    /// Where the API is: `registry-1.docker.io` for Docker Hub, else `host`.
    api_host: String,
    scheme: &'static str,
    settings: Settings,
    transport: http::Transport,
    state: Mutex<AuthState>,
}

/// What a registry said about authentication, and the tokens it gave, by scope.
#[derive(Default)]
struct AuthState {
    challenge: Option<auth::Challenge>,
    tokens: HashMap<String, auth::Token>,
    /// Looked up on the first challenge only (a helper may prompt or be slow).
    credential: Option<std::result::Result<Option<Credential>, String>>,
    /// Why credentials were not sent to the realm, for the error if access is refused.
    withheld: Option<String>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("host", &self.host)
            .field("namespace", &self.namespace)
            .field("api_host", &self.api_host)
            .field("scheme", &self.scheme)
            .field("platform", &self.settings.platform.to_string())
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// Parses `[http[s]://]HOST[:PORT][/NAMESPACE]` with the settings of the environment.
    /// Plain HTTP is used for loopback hosts (and hosts in `IMAGES_INSECURE_REGISTRIES`) unless
    /// `https://` is written; HTTPS otherwise.
    pub fn parse(spec: &str) -> Result<Registry> {
        Registry::with_settings(spec, Settings::from_env())
    }

    /// [`Registry::parse`] with explicit settings.
    pub fn with_settings(spec: &str, settings: Settings) -> Result<Registry> {
        let invalid = |reason: String| RegistryError::Invalid {
            spec: reference::escape(spec),
            reason,
        };
        let trimmed = spec.trim_matches(|c: char| c == ' ' || c == '\t');
        let (explicit, rest) = match trimmed.split_once("://") {
            Some(("https", r)) => (Some("https"), r),
            Some(("http", r)) => (Some("http"), r),
            Some((s, _)) => {
                return Err(invalid(format!(
                    "`{}` is not http or https",
                    reference::escape(s)
                )))
            }
            None => (None, trimmed),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, namespace) = rest.split_once('/').unwrap_or((rest, ""));
        if let Some(reason) = reference::host_error(host) {
            return Err(invalid(reason));
        }
        if !namespace.is_empty() {
            if let Some(reason) = reference::repository_error(namespace) {
                return Err(invalid(reason));
            }
        }
        let hub = reference::is_docker_hub(host);
        let host = if hub {
            reference::DOCKER_HUB.to_string()
        } else {
            host.to_string()
        };
        let api_host = if hub {
            reference::DOCKER_HUB_API.to_string()
        } else {
            host.clone()
        };
        let hostname = match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default().to_string(),
            None => host.split(':').next().unwrap_or_default().to_string(),
        };
        let loopback = hostname.eq_ignore_ascii_case("localhost")
            || hostname
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        let plain = explicit == Some("http")
            || (explicit.is_none() && (loopback || settings.insecure.iter().any(|h| h == &host)));
        let transport = http::Transport::new(settings.http.clone(), &api_host).map_err(|m| {
            RegistryError::Http {
                registry: host.clone(),
                message: m,
            }
        })?;
        Ok(Registry {
            host,
            namespace: namespace.to_string(),
            api_host,
            scheme: if plain { "http" } else { "https" },
            settings,
            transport,
            state: Mutex::new(AuthState::default()),
        })
    }

    /// The same registry, choosing `platform`'s entry of image indexes.
    pub fn with_platform(mut self, platform: Platform) -> Registry {
        self.settings.platform = platform;
        self
    }

    /// The platform whose entry of an image index is used.
    pub fn platform(&self) -> &Platform {
        &self.settings.platform
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &str {
        self.scheme
    }

    /// The host the API is reached at (`registry-1.docker.io` for Docker Hub).
    pub fn api_host(&self) -> &str {
        &self.api_host
    }

    /// The repository of an image in this registry: `<namespace>/<image>` (Docker Hub's
    /// one-component names are under `library/`, as docker resolves them).
    pub fn repository(&self, image: &str) -> String {
        let repo = if self.namespace.is_empty() {
            image.to_string()
        } else {
            format!("{}/{image}", self.namespace)
        };
        if self.host == reference::DOCKER_HUB && !repo.contains('/') {
            format!("library/{repo}")
        } else {
            repo
        }
    }

    /// The full reference `<host>/<namespace>/<image>:<tag>`, for `docker pull`/`push`.
    pub fn reference(&self, image: &str, tag: &str) -> String {
        format!("{}/{}:{tag}", self.host, self.repository(image))
    }

    /// The config digest of the image `image_ref` (e.g. `node:18-alpine`,
    /// `ghcr.io/acme/base@sha256:…`) for `platform`: the image id a local engine gives it.
    /// `None` when the registry has no such tag or digest.
    pub fn resolve_config_digest(image_ref: &str, platform: &Platform) -> Result<Option<String>> {
        let r = ImageRef::parse(image_ref).map_err(|reason| RegistryError::Invalid {
            spec: reference::escape(image_ref),
            reason,
        })?;
        let registry = Registry::parse(&r.domain)?.with_platform(platform.clone());
        registry.config_digest(&r.repository, r.reference())
    }

    /// The config digest of `image` at `reference` (tag or digest), through the platform's
    /// entry when it is an index; `None` when absent.
    pub fn config_digest(&self, image: &str, reference: &str) -> Result<Option<String>> {
        let Some(m) = self.get_manifest(image, reference)? else {
            return Ok(None);
        };
        let m = self.image_manifest(image, &m)?;
        let v = self.json(image, &m.bytes, "manifest")?;
        match v["config"]["digest"].as_str() {
            Some(d) if reference::valid_digest(d) => Ok(Some(d.to_string())),
            _ => Err(self.err(format!(
                "the manifest of {image} names no valid config digest"
            ))),
        }
    }

    /// The image manifest for this registry's platform: `m` itself, or the entry of an index.
    pub fn image_manifest(&self, image: &str, m: &Manifest) -> Result<Manifest> {
        let v = self.json(image, &m.bytes, "manifest")?;
        if !m.is_index() && v.get("manifests").is_none() {
            return Ok(m.clone());
        }
        let platform = &self.settings.platform;
        let digest = platform::pick(&v, platform).map_err(|have| {
            self.err(format!(
                "the image index of {image} has no entry for {platform} (it has: {})\n  hint: \
                 set the platform in images.toml (`platform = \"…\"`) to one the image is built for",
                if have.is_empty() { "none".to_string() } else { have.join(", ") }
            ))
        })?;
        let inner = self.get_manifest(image, &digest)?.ok_or_else(|| {
            self.err(format!(
                "the index of {image} names {digest}, which is missing"
            ))
        })?;
        if inner.is_index() {
            return Err(self.err(format!(
                "the index of {image} nests another index at {digest}"
            )));
        }
        Ok(inner)
    }

    /// The labels of the image a manifest describes (for an index, of the platform's image).
    pub fn labels(
        &self,
        image: &str,
        m: &Manifest,
    ) -> Result<serde_json::Map<String, serde_json::Value>> {
        let m = self.image_manifest(image, m)?;
        let v = self.json(image, &m.bytes, "manifest")?;
        let config = v["config"]["digest"]
            .as_str()
            .ok_or_else(|| self.err(format!("the manifest of {image} has no config")))?;
        let bytes = self
            .get_blob(image, config)?
            .ok_or_else(|| self.err(format!("the config blob {config} of {image} is missing")))?;
        let cfg = self.json(image, &bytes, "image config")?;
        Ok(cfg["config"]["Labels"]
            .as_object()
            .cloned()
            .unwrap_or_default())
    }

    fn json(&self, image: &str, bytes: &[u8], what: &str) -> Result<serde_json::Value> {
        serde_json::from_slice(bytes)
            .map_err(|e| self.err(format!("unreadable {what} of {image}: {e}")))
    }

    fn err(&self, message: String) -> RegistryError {
        RegistryError::Http {
            registry: self.host.clone(),
            message,
        }
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    for b in d.as_ref() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests;
