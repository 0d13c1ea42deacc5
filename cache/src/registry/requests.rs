//! The requests of the registry client: manifests and blobs, each authenticated for its own
//! scope (`repository:<name>:pull` to read, `pull,push` to write) with the challenge the
//! registry gave, and every digest checked against the bytes.

use super::auth::{self, Challenge, Origin, TokenRequest};
use super::http::{Failure, Request, Response};
use super::{
    reference, sha256_digest, Manifest, Registry, RegistryError, Result, ACCEPT, BLOB_LIMIT,
    MANIFEST_LIMIT,
};

/// What a request needs.
struct Call<'a> {
    method: &'static str,
    url: String,
    repo: &'a str,
    push: bool,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    limit: u64,
    /// Send the registry's credentials or token (not to a blob store it redirects to).
    authenticate: bool,
}

impl Registry {
    fn base(&self) -> String {
        format!("{}://{}", self.scheme, self.api_host)
    }

    fn checked_repo(&self, image: &str) -> Result<String> {
        let repo = self.repository(image);
        match reference::repository_error(&repo) {
            None => Ok(repo),
            Some(reason) => Err(RegistryError::Invalid {
                spec: reference::escape(&repo),
                reason,
            }),
        }
    }

    fn checked_reference(&self, r: &str) -> Result<()> {
        if reference::valid_reference(r) {
            Ok(())
        } else {
            Err(RegistryError::Invalid {
                spec: reference::escape(r),
                reason: "not a tag (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`) nor a digest".into(),
            })
        }
    }

    fn failure(&self, f: Failure) -> RegistryError {
        let registry = self.host.clone();
        match f {
            Failure::Tls(message) => RegistryError::Tls { registry, message },
            Failure::Proxy(message) => RegistryError::Unreachable {
                registry,
                message,
                hint: "check HTTPS_PROXY/HTTP_PROXY, or list the registry in NO_PROXY".into(),
            },
            Failure::Connect(message) => {
                let (host, port) = match self.api_host.rsplit_once(':') {
                    Some((h, p)) if !h.ends_with(']') || self.api_host.starts_with('[') => {
                        (h, p.parse().unwrap_or(0))
                    }
                    _ => (self.api_host.as_str(), 0),
                };
                let port = match (port, self.scheme) {
                    (0, "http") => 80,
                    (0, _) => 443,
                    (p, _) => p,
                };
                let proxy = self.settings.http.proxy.proxy_for(self.scheme, host, port);
                RegistryError::Unreachable {
                    registry,
                    message: format!("{message} (after {} retries)", self.settings.http.retries),
                    hint: match proxy {
                        Some(p) => format!(
                            "is the registry running? requests go through the proxy {p} \
                             (HTTPS_PROXY/HTTP_PROXY; NO_PROXY lists the exceptions)"
                        ),
                        None => "is the registry running and reachable from here?".into(),
                    },
                }
            }
            Failure::Other(message) => RegistryError::Http { registry, message },
        }
    }

    /// Sends a call, authenticating as the registry's challenge asks, once more after a 401.
    fn call(&self, c: Call<'_>) -> Result<Response> {
        let scope = format!(
            "repository:{}:{}",
            c.repo,
            if c.push { "pull,push" } else { "pull" }
        );
        let mut extra_scope: Option<String> = None;
        for attempt in 0..2 {
            let mut headers = c.headers.clone();
            if c.authenticate {
                if let Some(h) = self.auth_header(&scope, extra_scope.as_deref())? {
                    headers.push(("Authorization".into(), h));
                }
            }
            let req = Request {
                method: c.method,
                url: c.url.clone(),
                headers,
                body: c.body.clone(),
            };
            let res = self
                .transport
                .send(&req, c.limit)
                .map_err(|f| self.failure(f))?;
            if res.status != 401 || attempt == 1 || !c.authenticate {
                return Ok(res);
            }
            let challenge = res
                .header("WWW-Authenticate")
                .and_then(Challenge::parse)
                .ok_or_else(|| {
                    self.err(format!(
                        "{} {} answered 401 without a Basic or Bearer challenge",
                        c.method, c.url
                    ))
                })?;
            extra_scope = challenge
                .param("scope")
                .filter(|s| !covers(&scope, s))
                .map(str::to_string);
            let mut state = self.lock()?;
            state
                .tokens
                .remove(&token_key(&scope, extra_scope.as_deref()));
            state.challenge = Some(challenge);
        }
        Err(self.err("unreachable: the loop returns".into()))
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, super::AuthState>> {
        self.state
            .lock()
            .map_err(|_| self.err("a registry client lock was poisoned".into()))
    }

    /// The key the docker CLI stores this registry's credentials under.
    pub fn credentials_key(&self) -> &str {
        if self.host == reference::DOCKER_HUB {
            reference::DOCKER_HUB_CREDENTIALS
        } else {
            &self.host
        }
    }

    /// The `Authorization` value for a scope, once the registry has challenged: basic
    /// credentials for a `Basic` challenge, else a token for the scope (fetched when not held).
    fn auth_header(&self, scope: &str, extra: Option<&str>) -> Result<Option<String>> {
        let mut state = self.lock()?;
        let Some(challenge) = state.challenge.clone() else {
            return Ok(None);
        };
        if state.credential.is_none() {
            state.credential = Some(auth::lookup(
                self.settings.docker_config.as_deref(),
                self.credentials_key(),
            ));
        }
        let credential = state.credential.clone().and_then(|c| c.ok()).flatten();
        if challenge.scheme == "basic" {
            return Ok(credential.as_ref().and_then(auth::Credential::basic_header));
        }
        let key = token_key(scope, extra);
        if let Some(t) = state.tokens.get(&key) {
            if t.expires > std::time::Instant::now() {
                return Ok(Some(t.header.clone()));
            }
        }
        let realm = challenge
            .param("realm")
            .ok_or_else(|| self.err("a bearer challenge without a realm".into()))?;
        let realm_origin = Origin::of(realm).ok_or_else(|| {
            self.err(format!(
                "the token realm `{}` is not an http(s) URL",
                reference::escape(realm)
            ))
        })?;
        let registry_origin = Origin::of(&self.base())
            .ok_or_else(|| self.err(format!("`{}` is not a URL", self.base())))?;
        let allowed = match &credential {
            Some(_) => auth::may_send_credentials(
                &registry_origin,
                &self.host,
                &realm_origin,
                &self.settings.token_realms,
            ),
            None => Ok(()),
        };
        state.withheld = allowed.as_ref().err().cloned();
        let mut scopes = vec![scope.to_string()];
        scopes.extend(extra.map(str::to_string));
        let req = auth::token_request(&TokenRequest {
            realm,
            service: challenge.param("service"),
            scopes: &scopes,
            credential: credential.as_ref().filter(|_| allowed.is_ok()),
        });
        let res = self
            .transport
            .send(&req, 1 << 20)
            .map_err(|f| self.failure(f))?;
        if matches!(res.status, 401 | 403) {
            let (detail, hint) = self.refusal(&state, &credential, scope);
            return Err(RegistryError::Unauthorized {
                registry: self.host.clone(),
                what: format!("a token for `{scope}` from {realm}"),
                detail,
                hint,
            });
        }
        if res.status != 200 {
            return Err(self.err(format!(
                "the token realm {realm} answered {}: {}",
                res.status,
                body_tail(&res.body)
            )));
        }
        let token = auth::parse_token(&res.body)
            .ok_or_else(|| self.err(format!("no token in the answer of {realm}")))?;
        let header = token.header.clone();
        state.tokens.insert(key, token);
        Ok(Some(header))
    }

    /// Why access was refused and what to do, from what was sent.
    fn refusal(
        &self,
        state: &super::AuthState,
        credential: &Option<auth::Credential>,
        scope: &str,
    ) -> (String, String) {
        let login = if self.host == reference::DOCKER_HUB {
            "docker login".to_string()
        } else {
            format!("docker login {}", self.host)
        };
        if let Some(Err(e)) = &state.credential {
            return (
                format!("looking up credentials failed: {e}"),
                format!("fix the credential setup, then `{login}`"),
            );
        }
        match (credential, &state.withheld) {
            (None, _) => (
                format!(
                    "no credentials for `{}` in the docker config ({}), and anonymous access is not allowed",
                    self.credentials_key(),
                    self.settings
                        .docker_config
                        .as_ref()
                        .map(|d| d.join("config.json").display().to_string())
                        .unwrap_or_else(|| "none".into())
                ),
                format!("run `{login}` (or set DOCKER_CONFIG to the directory of a config.json that has them)"),
            ),
            (Some(_), Some(reason)) => (
                format!("the credentials were not sent: {reason}"),
                format!(
                    "if that realm belongs to the registry, trust it with IMAGES_REGISTRY_TOKEN_REALMS={}=<realm host[:port]> (https only)",
                    self.host
                ),
            ),
            (Some(_), None) => (
                format!("the credentials were refused, or do not grant `{scope}`"),
                format!("check them with `{login}`, and that the account may {} this repository",
                    if scope.ends_with("push") { "push to" } else { "pull from" }),
            ),
        }
    }

    fn status_error(&self, method: &str, url: &str, res: &Response, what: &str) -> RegistryError {
        let scope_push = matches!(method, "PUT" | "POST" | "PATCH" | "DELETE");
        if matches!(res.status, 401 | 403) {
            let state = self.lock();
            let credential = state
                .as_ref()
                .ok()
                .and_then(|s| s.credential.clone())
                .and_then(|c| c.ok())
                .flatten();
            let scope = if scope_push { "pull,push" } else { "pull" };
            let (detail, hint) = match state {
                Ok(s) => self.refusal(&s, &credential, scope),
                Err(_) => ("access denied".into(), "check the credentials".into()),
            };
            return RegistryError::Unauthorized {
                registry: self.host.clone(),
                what: format!(
                    "{} {what} ({} {})",
                    if scope_push { "pushing" } else { "reading" },
                    res.status,
                    body_tail(&res.body)
                ),
                detail,
                hint,
            };
        }
        let retried = if matches!(res.status, 429 | 500 | 502 | 503 | 504) {
            format!(" (after {} retries)", self.settings.http.retries)
        } else {
            String::new()
        };
        self.err(format!(
            "{method} {url} answered {}{retried}: {}",
            res.status,
            body_tail(&res.body)
        ))
    }

    /// Looks a tag up with `HEAD`: its digest, or `None` when absent. A registry that sends no
    /// `Docker-Content-Digest` gets a `GET`, and the digest of the bytes.
    pub fn head_manifest(&self, image: &str, tag: &str) -> Result<Option<String>> {
        let repo = self.checked_repo(image)?;
        self.checked_reference(tag)?;
        let url = format!("{}/v2/{repo}/manifests/{tag}", self.base());
        let res = self.call(Call {
            method: "HEAD",
            url: url.clone(),
            repo: &repo,
            push: false,
            headers: vec![("Accept".into(), ACCEPT.into())],
            body: None,
            limit: 0,
            authenticate: true,
        })?;
        match res.status {
            404 => Ok(None),
            200 => match res.header("Docker-Content-Digest") {
                Some(d) if reference::valid_digest(d) => Ok(Some(d.to_string())),
                _ => Ok(self.get_manifest(image, tag)?.map(|m| m.digest)),
            },
            _ => Err(self.status_error("HEAD", &url, &res, &format!("{repo}:{tag}"))),
        }
    }

    /// Fetches a manifest by tag or digest; its digest is that of its bytes, and must match
    /// the digest asked for and the one the registry says.
    pub fn get_manifest(&self, image: &str, reference: &str) -> Result<Option<Manifest>> {
        let repo = self.checked_repo(image)?;
        self.checked_reference(reference)?;
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base());
        let res = self.call(Call {
            method: "GET",
            url: url.clone(),
            repo: &repo,
            push: false,
            headers: vec![("Accept".into(), ACCEPT.into())],
            body: None,
            limit: MANIFEST_LIMIT,
            authenticate: true,
        })?;
        match res.status {
            404 => return Ok(None),
            200 => {}
            _ => return Err(self.status_error("GET", &url, &res, &format!("{repo}:{reference}"))),
        }
        let digest = sha256_digest(&res.body);
        let said = res
            .header("Docker-Content-Digest")
            .filter(|d| d.starts_with("sha256:"));
        let asked = Some(reference).filter(|r| r.starts_with("sha256:"));
        for claimed in [said, asked].into_iter().flatten() {
            if claimed != digest {
                return Err(self.err(format!(
                    "the manifest {repo}:{reference} has digest {digest}, not {claimed}: refused"
                )));
            }
        }
        let media_type = res
            .header("Content-Type")
            .map(|c| c.split(';').next().unwrap_or_default().trim().to_string())
            .filter(|c| !c.is_empty() && c != "application/json")
            .or_else(|| {
                serde_json::from_slice::<serde_json::Value>(&res.body)
                    .ok()
                    .and_then(|v| v["mediaType"].as_str().map(str::to_string))
            })
            .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".into());
        Ok(Some(Manifest {
            digest,
            media_type,
            bytes: res.body,
        }))
    }

    /// Stores a manifest under `tag` (or its digest); returns its digest. The same bytes give
    /// the same digest: copying a manifest moves no layer.
    pub fn put_manifest(&self, image: &str, tag: &str, m: &Manifest) -> Result<String> {
        let repo = self.checked_repo(image)?;
        self.checked_reference(tag)?;
        let url = format!("{}/v2/{repo}/manifests/{tag}", self.base());
        let res = self.call(Call {
            method: "PUT",
            url: url.clone(),
            repo: &repo,
            push: true,
            headers: vec![("Content-Type".into(), m.media_type.clone())],
            body: Some(m.bytes.clone()),
            limit: 1 << 20,
            authenticate: true,
        })?;
        if !(200..=202).contains(&res.status) {
            return Err(self.status_error("PUT", &url, &res, &format!("{repo}:{tag}")));
        }
        Ok(sha256_digest(&m.bytes))
    }

    /// Reads a blob (an image config) by digest, checked against it; `None` when absent.
    pub fn get_blob(&self, image: &str, digest: &str) -> Result<Option<Vec<u8>>> {
        let repo = self.checked_repo(image)?;
        if !reference::valid_digest(digest) {
            return Err(self.err(format!("`{}` is not a digest", reference::escape(digest))));
        }
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base());
        let res = self.call(Call {
            method: "GET",
            url: url.clone(),
            repo: &repo,
            push: false,
            headers: Vec::new(),
            body: None,
            limit: BLOB_LIMIT,
            authenticate: true,
        })?;
        match res.status {
            404 => Ok(None),
            200 => {
                if digest.starts_with("sha256:") && sha256_digest(&res.body) != digest {
                    return Err(self.err(format!(
                        "the blob {digest} of {repo} does not match its digest: refused"
                    )));
                }
                Ok(Some(res.body))
            }
            _ => Err(self.status_error("GET", &url, &res, &format!("{repo}@{digest}"))),
        }
    }

    /// Uploads a blob (monolithic: `POST` then `PUT ?digest=`) unless the registry has it;
    /// returns its digest.
    pub fn put_blob(&self, image: &str, bytes: &[u8]) -> Result<String> {
        let repo = self.checked_repo(image)?;
        let digest = sha256_digest(bytes);
        let head_url = format!("{}/v2/{repo}/blobs/{digest}", self.base());
        let head = self.call(Call {
            method: "HEAD",
            url: head_url,
            repo: &repo,
            push: true,
            headers: Vec::new(),
            body: None,
            limit: 0,
            authenticate: true,
        })?;
        if head.status == 200 {
            return Ok(digest);
        }
        let url = format!("{}/v2/{repo}/blobs/uploads/", self.base());
        let res = self.call(Call {
            method: "POST",
            url: url.clone(),
            repo: &repo,
            push: true,
            headers: Vec::new(),
            body: Some(Vec::new()),
            limit: 1 << 20,
            authenticate: true,
        })?;
        if res.status != 202 {
            return Err(self.status_error("POST", &url, &res, &format!("an upload to {repo}")));
        }
        let location = res
            .header("Location")
            .ok_or_else(|| self.err(format!("POST {url} answered 202 without a Location")))?;
        let location = if location.starts_with('/') {
            format!("{}{location}", self.base())
        } else {
            location.to_string()
        };
        // The upload URL is the registry's to give; credentials go with it only to the registry.
        let same_origin = Origin::of(&location) == Origin::of(&self.base());
        let sep = if location.contains('?') { '&' } else { '?' };
        let put_url = format!("{location}{sep}digest={}", digest.replace(':', "%3A"));
        let res = self.call(Call {
            method: "PUT",
            url: put_url.clone(),
            repo: &repo,
            push: true,
            headers: vec![("Content-Type".into(), "application/octet-stream".into())],
            body: Some(bytes.to_vec()),
            limit: 1 << 20,
            authenticate: same_origin,
        })?;
        if !matches!(res.status, 201 | 204) {
            return Err(self.status_error("PUT", &location, &res, &format!("blob {digest}")));
        }
        Ok(digest)
    }
}

/// Whether the scope `ours` grants everything `theirs` asks: the same resource, and a subset
/// of the actions (`repository:x:pull` is within `repository:x:pull,push`).
fn covers(ours: &str, theirs: &str) -> bool {
    match (ours.rsplit_once(':'), theirs.rsplit_once(':')) {
        (Some((resource, actions)), Some((their_resource, their_actions))) => {
            resource == their_resource
                && their_actions
                    .split(',')
                    .all(|a| actions.split(',').any(|b| b == a))
        }
        _ => ours == theirs,
    }
}

fn token_key(scope: &str, extra: Option<&str>) -> String {
    match extra {
        Some(e) => format!("{scope} {e}"),
        None => scope.to_string(),
    }
}

/// The start of an error body: the registry's `errors[].code: message`, else the text.
fn body_tail(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(errors) = v["errors"].as_array() {
            let parts: Vec<String> = errors
                .iter()
                .map(|e| {
                    format!(
                        "{}: {}",
                        e["code"].as_str().unwrap_or("ERROR"),
                        e["message"].as_str().unwrap_or("")
                    )
                })
                .collect();
            if !parts.is_empty() {
                return parts.join("; ");
            }
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let cut: String = text.chars().take(300).collect();
    reference::escape(&cut)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_push_scope_covers_the_pull_scope_of_the_same_repository_only() {
        use super::covers;
        assert!(covers("repository:a/b:pull,push", "repository:a/b:pull"));
        assert!(covers("repository:a/b:pull", "repository:a/b:pull"));
        assert!(!covers("repository:a/b:pull", "repository:a/b:pull,push"));
        assert!(!covers("repository:a/b:pull,push", "repository:a/c:pull"));
        assert!(!covers("repository:a/b:pull,push", "registry:catalog:*"));
    }
}
