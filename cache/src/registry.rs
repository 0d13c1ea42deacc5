//! The registry tier of the cache: an OCI registry spoken to with the Registry HTTP API v2.
//! Images are tagged by key; a lookup is a `HEAD` of the key tag's manifest; publishing a release
//! tag of a cached key copies the manifest inside the registry (no layer moves). Auth: anonymous,
//! basic, or bearer tokens, with credentials from the usual `~/.docker/config.json`.

use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;

/// Manifest media types we accept, most specific first.
const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid registry `{0}`\n  hint: use HOST[:PORT][/NAMESPACE], e.g. `127.0.0.1:5000/cache` or `ghcr.io/acme`")]
    Invalid(String),
    #[error("registry `{registry}`: {message}")]
    Http { registry: String, message: String },
    #[error("registry `{registry}` refused the credentials for {what}\n  hint: run `docker login {registry}`, or check the token's scopes")]
    Unauthorized { registry: String, what: String },
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// A registry and a namespace within it, e.g. `127.0.0.1:5000/cache`.
#[derive(Debug)]
pub struct Registry {
    /// `host[:port]`.
    pub host: String,
    /// The repository prefix (may be empty).
    pub namespace: String,
    scheme: &'static str,
    agent: ureq::Agent,
    basic: Option<String>,
    token: Mutex<Option<String>>,
}

/// A manifest as stored in the registry.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub digest: String,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

impl Registry {
    /// Parses `HOST[:PORT][/NAMESPACE]`. Plain HTTP is used for loopback hosts (and for hosts in
    /// `IMAGES_INSECURE_REGISTRIES`, comma-separated), HTTPS otherwise.
    pub fn parse(spec: &str) -> Result<Registry> {
        let spec = spec.trim().trim_end_matches('/');
        let spec = spec
            .strip_prefix("https://")
            .or_else(|| spec.strip_prefix("http://"))
            .unwrap_or(spec);
        let (host, namespace) = spec.split_once('/').unwrap_or((spec, ""));
        let valid_host = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
        let valid_ns = namespace.split('/').all(|c| {
            namespace.is_empty()
                || (!c.is_empty()
                    && c.chars().all(|ch| {
                        ch.is_ascii_lowercase()
                            || ch.is_ascii_digit()
                            || matches!(ch, '.' | '_' | '-')
                    }))
        });
        if !valid_host || !valid_ns {
            return Err(RegistryError::Invalid(spec.to_string()));
        }
        let hostname = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
        let insecure = std::env::var("IMAGES_INSECURE_REGISTRIES").unwrap_or_default();
        let plain = matches!(hostname, "localhost" | "127.0.0.1" | "[::1]")
            || hostname.starts_with("127.")
            || insecure.split(',').any(|h| h.trim() == host);
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout(Duration::from_secs(300))
            .redirects(5)
            .build();
        Ok(Registry {
            host: host.to_string(),
            namespace: namespace.to_string(),
            scheme: if plain { "http" } else { "https" },
            agent,
            basic: docker_credentials(host),
            token: Mutex::new(None),
        })
    }

    /// The repository of an image in this registry: `<namespace>/<image>`.
    pub fn repository(&self, image: &str) -> String {
        if self.namespace.is_empty() {
            image.to_string()
        } else {
            format!("{}/{image}", self.namespace)
        }
    }

    /// The full reference `<host>/<namespace>/<image>:<tag>`, for `docker pull`/`push`.
    pub fn reference(&self, image: &str, tag: &str) -> String {
        format!("{}/{}:{tag}", self.host, self.repository(image))
    }

    fn url(&self, path: &str) -> String {
        format!("{}://{}/v2/{path}", self.scheme, self.host)
    }

    fn err(&self, message: String) -> RegistryError {
        RegistryError::Http {
            registry: self.host.clone(),
            message,
        }
    }

    /// Sends a request, authenticating on a 401 challenge (basic, or a bearer token fetched
    /// from the realm the registry names) and retrying once.
    fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        what: &str,
    ) -> Result<Option<ureq::Response>> {
        for attempt in 0..2 {
            let mut req = self.agent.request(method, url);
            for (k, v) in headers {
                req = req.set(k, v);
            }
            if let Some(t) = self.token.lock().ok().and_then(|t| t.clone()) {
                req = req.set("Authorization", &t);
            }
            let res = match body {
                Some(b) => req.send_bytes(b),
                None => req.call(),
            };
            match res {
                Ok(r) => return Ok(Some(r)),
                Err(ureq::Error::Status(404, _)) => return Ok(None),
                Err(ureq::Error::Status(401, r)) if attempt == 0 => {
                    let challenge = r.header("WWW-Authenticate").unwrap_or("").to_string();
                    let auth = self.authenticate(&challenge, what)?;
                    if let Ok(mut t) = self.token.lock() {
                        *t = Some(auth);
                    }
                }
                Err(ureq::Error::Status(401 | 403, _)) => {
                    return Err(RegistryError::Unauthorized {
                        registry: self.host.clone(),
                        what: what.to_string(),
                    })
                }
                Err(ureq::Error::Status(code, r)) => {
                    let mut text = String::new();
                    let _ = r.into_reader().take(2000).read_to_string(&mut text);
                    return Err(self.err(format!("{method} {url} answered {code}: {}", text.trim())));
                }
                Err(e) => {
                    return Err(self.err(format!(
                        "{method} {url} failed: {e}\n  hint: is the registry running and reachable from here?"
                    )))
                }
            }
        }
        Err(RegistryError::Unauthorized {
            registry: self.host.clone(),
            what: what.to_string(),
        })
    }

    fn authenticate(&self, challenge: &str, what: &str) -> Result<String> {
        let lower = challenge.to_ascii_lowercase();
        if lower.starts_with("basic") {
            return self
                .basic
                .as_ref()
                .map(|b| format!("Basic {b}"))
                .ok_or_else(|| RegistryError::Unauthorized {
                    registry: self.host.clone(),
                    what: what.to_string(),
                });
        }
        if !lower.starts_with("bearer") {
            return Err(RegistryError::Unauthorized {
                registry: self.host.clone(),
                what: what.to_string(),
            });
        }
        let params = parse_challenge(&challenge[6..]);
        let realm = params
            .iter()
            .find(|(k, _)| k == "realm")
            .map(|(_, v)| v.clone())
            .ok_or_else(|| self.err("a bearer challenge without a realm".into()))?;
        let mut req = self.agent.get(&realm);
        for (k, v) in &params {
            if k == "service" || k == "scope" {
                req = req.query(k, v);
            }
        }
        if let Some(b) = &self.basic {
            req = req.set("Authorization", &format!("Basic {b}"));
        }
        let res = req.call().map_err(|e| match e {
            ureq::Error::Status(401 | 403, _) => RegistryError::Unauthorized {
                registry: self.host.clone(),
                what: what.to_string(),
            },
            e => self.err(format!("token request to {realm} failed: {e}")),
        })?;
        let v: serde_json::Value = res
            .into_json()
            .map_err(|e| self.err(format!("unreadable token from {realm}: {e}")))?;
        let token = v["token"]
            .as_str()
            .or_else(|| v["access_token"].as_str())
            .ok_or_else(|| self.err(format!("no token in the answer of {realm}")))?;
        Ok(format!("Bearer {token}"))
    }

    /// Looks a tag up with `HEAD`: its digest, or `None` when absent.
    pub fn head_manifest(&self, image: &str, tag: &str) -> Result<Option<String>> {
        let repo = self.repository(image);
        let url = self.url(&format!("{repo}/manifests/{tag}"));
        let what = format!("{repo}:{tag}");
        Ok(self
            .send("HEAD", &url, &[("Accept", ACCEPT)], None, &what)?
            .map(|r| r.header("Docker-Content-Digest").unwrap_or("").to_string()))
    }

    /// Fetches a manifest by tag or digest.
    pub fn get_manifest(&self, image: &str, reference: &str) -> Result<Option<Manifest>> {
        let repo = self.repository(image);
        let url = self.url(&format!("{repo}/manifests/{reference}"));
        let what = format!("{repo}:{reference}");
        let Some(r) = self.send("GET", &url, &[("Accept", ACCEPT)], None, &what)? else {
            return Ok(None);
        };
        let media_type = r.content_type().to_string();
        let header_digest = r.header("Docker-Content-Digest").map(str::to_string);
        let mut bytes = Vec::new();
        r.into_reader()
            .take(16 << 20)
            .read_to_end(&mut bytes)
            .map_err(|e| self.err(format!("reading {url}: {e}")))?;
        let digest = header_digest.unwrap_or_else(|| sha256_digest(&bytes));
        Ok(Some(Manifest {
            digest,
            media_type,
            bytes,
        }))
    }

    /// Stores a manifest under `tag` (the same bytes, so the same digest: no layer moves).
    pub fn put_manifest(&self, image: &str, tag: &str, m: &Manifest) -> Result<()> {
        let repo = self.repository(image);
        let url = self.url(&format!("{repo}/manifests/{tag}"));
        let what = format!("{repo}:{tag}");
        self.send(
            "PUT",
            &url,
            &[("Content-Type", m.media_type.as_str())],
            Some(&m.bytes),
            &what,
        )?
        .ok_or_else(|| self.err(format!("PUT {url} answered 404")))?;
        Ok(())
    }

    /// The labels of the image a manifest describes (for an index, of its first linux/amd64
    /// image or its first image).
    pub fn labels(
        &self,
        image: &str,
        m: &Manifest,
    ) -> Result<serde_json::Map<String, serde_json::Value>> {
        let v: serde_json::Value = serde_json::from_slice(&m.bytes)
            .map_err(|e| self.err(format!("unreadable manifest of {image}: {e}")))?;
        if let Some(list) = v["manifests"].as_array() {
            let pick = list
                .iter()
                .find(|e| {
                    e["platform"]["os"] == "linux" && e["platform"]["architecture"] == "amd64"
                })
                .or_else(|| list.first())
                .and_then(|e| e["digest"].as_str())
                .ok_or_else(|| self.err(format!("empty image index for {image}")))?;
            let inner = self.get_manifest(image, pick)?.ok_or_else(|| {
                self.err(format!("the index of {image} names a missing manifest"))
            })?;
            return self.labels(image, &inner);
        }
        let config = v["config"]["digest"]
            .as_str()
            .ok_or_else(|| self.err(format!("the manifest of {image} has no config")))?;
        let repo = self.repository(image);
        let url = self.url(&format!("{repo}/blobs/{config}"));
        let r = self
            .send("GET", &url, &[], None, &format!("{repo}@{config}"))?
            .ok_or_else(|| self.err(format!("the config blob {config} of {image} is missing")))?;
        let mut bytes = Vec::new();
        r.into_reader()
            .take(16 << 20)
            .read_to_end(&mut bytes)
            .map_err(|e| self.err(format!("reading {url}: {e}")))?;
        let cfg: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| self.err(format!("unreadable image config of {image}: {e}")))?;
        Ok(cfg["config"]["Labels"]
            .as_object()
            .cloned()
            .unwrap_or_default())
    }
}

fn sha256_digest(_bytes: &[u8]) -> String {
    // The registry always sends Docker-Content-Digest for manifests; without it the digest is
    // unknown rather than computed with another hash.
    String::new()
}

/// `realm="https://x",service="y",scope="z"` -> pairs.
fn parse_challenge(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((k, after)) = rest.split_once('=') else {
            break;
        };
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let (v, after) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (q[..end].to_string(), &q[end + 1..]),
                None => (q.to_string(), ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (after[..end].to_string(), &after[end..]),
                None => (after.to_string(), ""),
            }
        };
        out.push((k, v));
        rest = after.trim_start_matches(',').trim();
    }
    out
}

/// The base64 `user:password` for `host`, found as the docker CLI finds it in
/// `$DOCKER_CONFIG/config.json` (or `~/.docker/config.json`).
fn docker_credentials(host: &str) -> Option<String> {
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".docker")))?;
    let path = std::env::var_os("PATH").unwrap_or_default();
    credentials_in(&dir, host, &path)
}

/// [`docker_credentials`] with the config directory and the `PATH` that helpers are found on
/// given: the helper named for the host in `credHelpers`, else the `credsStore` helper
/// (`docker-credential-<name> get`, the host on its stdin; Docker Desktop's default `desktop`,
/// `osxkeychain`, `pass`, `ecr-login`...), else the host's entry in `auths`.
fn credentials_in(dir: &std::path::Path, host: &str, path: &std::ffi::OsStr) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let same_host = |k: &str| {
        k.trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            == Some(host)
    };
    let helper = v["credHelpers"]
        .as_object()
        .and_then(|h| h.iter().find(|(k, _)| same_host(k)))
        .and_then(|(_, name)| name.as_str())
        .or_else(|| v["credsStore"].as_str())
        .filter(|n| !n.is_empty());
    if let Some(name) = helper {
        if let Some(basic) = from_helper(name, host, path) {
            return Some(basic);
        }
    }
    let auths = v["auths"].as_object()?;
    for (k, entry) in auths {
        if same_host(k) {
            if let Some(a) = entry["auth"].as_str() {
                return Some(a.to_string());
            }
            if let (Some(u), Some(p)) = (entry["username"].as_str(), entry["password"].as_str()) {
                return Some(base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}")));
            }
        }
    }
    None
}

/// Runs `docker-credential-<name> get` (found on `path`) for `host`: its `Username` and `Secret`
/// as basic credentials. `None` when the helper is missing, fails (no credentials for the host)
/// or answers with an identity token (`<token>`), which basic authentication cannot use.
fn from_helper(name: &str, host: &str, path: &std::ffi::OsStr) -> Option<String> {
    use std::io::Write;
    let program = format!("docker-credential-{name}");
    let exe = std::env::split_paths(path)
        .map(|d| d.join(&program))
        .find(|p| p.is_file())?;
    let mut child = std::process::Command::new(exe)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(host.as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let (user, secret) = (v["Username"].as_str()?, v["Secret"].as_str()?);
    if user == "<token>" || secret.is_empty() {
        return None;
    }
    Some(base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_registry_specs() {
        let r = Registry::parse("127.0.0.1:5000/cache/team").expect("parse");
        assert_eq!(r.host, "127.0.0.1:5000");
        assert_eq!(r.namespace, "cache/team");
        assert_eq!(r.scheme, "http");
        assert_eq!(
            r.reference("svc", "key-ab"),
            "127.0.0.1:5000/cache/team/svc:key-ab"
        );
        let r = Registry::parse("ghcr.io/acme").expect("parse");
        assert_eq!(r.scheme, "https");
        assert_eq!(r.repository("x"), "acme/x");
        assert!(Registry::parse("").is_err());
        assert!(Registry::parse("host/UPPER").is_err());
        assert!(Registry::parse("ho st/x").is_err());
    }

    /// A credential helper is a program on `PATH`: this one answers for one host only, as real
    /// helpers do (an error for a host they hold nothing for).
    #[test]
    fn credentials_come_from_helpers_then_auths() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("mkdir");
        for (name, user) in [("kcstore", "store-user"), ("kchelper", "helper-user")] {
            let script = bin.join(format!("docker-credential-{name}"));
            std::fs::write(
                &script,
                format!(
                    "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread host\n\
                     [ \"$host\" = 127.0.0.1:5999 ] || {{ echo 'credentials not found' >&2; exit 1; }}\n\
                     printf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"s3cret\"}}' \"$host\"\n"
                ),
            )
            .expect("write");
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
        }
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let path = bin.as_os_str();
        let config = |json: &str| {
            std::fs::write(dir.path().join("config.json"), json).expect("write");
        };
        // credsStore (Docker Desktop's shape: empty `auths` entries).
        config(r#"{"auths":{"127.0.0.1:5999":{}},"credsStore":"kcstore"}"#);
        assert_eq!(
            credentials_in(dir.path(), "127.0.0.1:5999", path),
            Some(b64("store-user:s3cret"))
        );
        // A host the store holds nothing for, and no `auths` entry: none.
        assert_eq!(credentials_in(dir.path(), "other.example", path), None);
        // credHelpers for the host wins over the store.
        config(r#"{"credsStore":"kcstore","credHelpers":{"127.0.0.1:5999":"kchelper"}}"#);
        assert_eq!(
            credentials_in(dir.path(), "127.0.0.1:5999", path),
            Some(b64("helper-user:s3cret"))
        );
        // A helper that is not installed: the `auths` entry.
        config(r#"{"credsStore":"missing","auths":{"https://127.0.0.1:5999":{"auth":"dTpw"}}}"#);
        assert_eq!(
            credentials_in(dir.path(), "127.0.0.1:5999", path),
            Some("dTpw".into())
        );
    }

    #[test]
    fn parses_bearer_challenges() {
        let c = parse_challenge(
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            c,
            vec![
                ("realm".into(), "https://auth.example/token".into()),
                ("service".into(), "registry.example".into()),
                ("scope".into(), "repository:a/b:pull,push".into()),
            ]
        );
    }
}
