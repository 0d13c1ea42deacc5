//! Registry authentication: credentials found as the docker CLI finds them (`config.json`'s
//! `auths`, `credsStore`, `credHelpers`, identity tokens), `WWW-Authenticate` challenges, bearer
//! tokens fetched per scope from the realm a registry names, and the rule for where credentials
//! may go.
//!
//! The rule: credentials (a password or an identity token) are sent
//! 1. to the registry itself (basic auth, on its `Basic` challenge);
//! 2. to a token realm of the registry's own origin (scheme, host and port), or on its host and
//!    port over https;
//! 3. to a token realm over https on a host listed for that registry: Docker Hub's
//!    `auth.docker.io` and GitLab's `gitlab.com` are built in, more come from
//!    `IMAGES_REGISTRY_TOKEN_REALMS` (`registry=realm-host[:port]`, comma-separated).
//!
//! Any other realm (another host or port, or plain http) is asked for an anonymous token only.

use std::io::BufReader;
use std::path::Path;
use std::time::{Duration, Instant};

/// Realms trusted with a registry's credentials although on another host: (registry, realm).
pub const BUILTIN_REALMS: &[(&str, &str)] = &[
    ("docker.io", "auth.docker.io"),
    ("registry-1.docker.io", "auth.docker.io"),
    ("registry.gitlab.com", "gitlab.com"),
];

/// A credential for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Basic {
        username: String,
        password: String,
    },
    /// A refresh token (`identitytoken` in `config.json`, or a helper's `<token>` user),
    /// exchanged for access tokens at the realm's OAuth2 endpoint.
    IdentityToken(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credential::IdentityToken(_) => write!(f, "IdentityToken(<redacted>)"),
        }
    }
}

impl Credential {
    pub fn basic_header(&self) -> Option<String> {
        use base64::Engine as _;
        match self {
            Credential::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )),
            Credential::IdentityToken(_) => None,
        }
    }
}

/// The credential stored under `key` (`host[:port]`, or Docker Hub's
/// `https://index.docker.io/v1/`) in `<config_dir>/config.json`, running its helper if one is
/// named; `None` when there is none. The helper programs are found on `PATH`.
pub fn lookup(config_dir: Option<&Path>, key: &str) -> Result<Option<Credential>, String> {
    use docker_credential::{CredentialRetrievalError as E, DockerCredential as C};
    let Some(dir) = config_dir else {
        return Ok(None);
    };
    let path = dir.join("config.json");
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("failed to read `{}`: {e}", path.display())),
    };
    match docker_credential::get_credential_from_reader(BufReader::new(file), key) {
        Ok(C::UsernamePassword(username, password)) => {
            Ok(Some(Credential::Basic { username, password }))
        }
        Ok(C::IdentityToken(t)) => Ok(Some(Credential::IdentityToken(t))),
        Err(E::NoCredentialConfigured) => Ok(None),
        // What every helper of docker-credential-helpers says for a host it holds nothing for.
        Err(E::HelperFailure { stdout, stderr, .. })
            if format!("{stdout}{stderr}").contains("credentials not found") =>
        {
            Ok(None)
        }
        Err(E::HelperFailure { helper, stderr, .. }) => Err(format!(
            "the credential helper `{helper}` failed for `{key}`: {}",
            stderr.trim()
        )),
        Err(E::HelperCommunicationError) => Err(format!(
            "the credential helper that `{}` names for `{key}` could not be run\n  hint: install \
             docker-credential-<name> on PATH, or remove it from `credsStore`/`credHelpers`",
            path.display()
        )),
        Err(e) => Err(format!("`{}`: {e}", path.display())),
    }
}

/// A `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `basic` or `bearer`, lowercase.
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "basic" && scheme != "bearer" {
            return None;
        }
        Some(Challenge {
            scheme,
            params: parse_params(rest),
        })
    }

    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// `realm="https://x",service="y",scope="z"` -> pairs (keys lowercase).
pub fn parse_params(s: &str) -> Vec<(String, String)> {
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

/// `scheme://host[:port]` of a URL, lowercase, with the default port filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

impl Origin {
    pub fn of(url: &str) -> Option<Origin> {
        let uri: ureq::http::Uri = url.parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return None;
        }
        let authority = uri.authority()?;
        if authority.as_str().contains('@') {
            return None;
        }
        Some(Origin {
            port: uri
                .port_u16()
                .unwrap_or(if scheme == "http" { 80 } else { 443 }),
            host: authority.host().to_ascii_lowercase(),
            scheme,
        })
    }

    fn host_port(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Whether credentials may go to `realm` for the registry at `registry` (named `named`, e.g.
/// `docker.io`), under the rule of this module; the reason when not.
pub fn may_send_credentials(
    registry: &Origin,
    named: &str,
    realm: &Origin,
    trusted: &[(String, String)],
) -> Result<(), String> {
    if realm == registry {
        return Ok(());
    }
    if realm.scheme != "https" {
        return Err(format!(
            "the token realm `{}://{}` is plain http",
            realm.scheme,
            realm.host_port()
        ));
    }
    if realm.host == registry.host && realm.port == registry.port {
        return Ok(());
    }
    let named = named.to_ascii_lowercase();
    let listed = BUILTIN_REALMS
        .iter()
        .map(|(r, h)| (r.to_string(), h.to_string()))
        .chain(trusted.iter().cloned())
        .any(|(r, h)| {
            let r = r.to_ascii_lowercase();
            let registry_matches = r == named || r == registry.host || r == registry.host_port();
            let h = h.to_ascii_lowercase();
            let realm_matches = h == realm.host_port() || (h == realm.host && realm.port == 443);
            registry_matches && realm_matches
        });
    if listed {
        Ok(())
    } else {
        Err(format!(
            "the token realm `https://{}` is on another host or port than the registry",
            realm.host_port()
        ))
    }
}

/// An access token and when to stop using it.
#[derive(Debug, Clone)]
pub struct Token {
    pub header: String,
    pub expires: Instant,
}

/// What a token request needs.
pub struct TokenRequest<'a> {
    pub realm: &'a str,
    pub service: Option<&'a str>,
    pub scopes: &'a [String],
    /// Sent only when [`may_send_credentials`] allowed it.
    pub credential: Option<&'a Credential>,
}

/// The request that asks a realm for a token: `GET` with basic credentials (or none), or, for
/// an identity token, the OAuth2 refresh-token grant as a form `POST`.
pub fn token_request(t: &TokenRequest<'_>) -> super::http::Request {
    let mut query: Vec<(&str, &str)> = Vec::new();
    if let Some(s) = t.service {
        query.push(("service", s));
    }
    match t.credential {
        Some(Credential::IdentityToken(token)) => {
            let scope = t.scopes.join(" ");
            let mut form = vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", token.as_str()),
                ("client_id", "kc-images"),
                ("scope", scope.as_str()),
            ];
            form.extend(query);
            super::http::Request {
                method: "POST",
                url: t.realm.to_string(),
                headers: vec![(
                    "Content-Type".into(),
                    "application/x-www-form-urlencoded".into(),
                )],
                body: Some(encode_query(&form).into_bytes()),
            }
        }
        credential => {
            let account = match credential {
                Some(Credential::Basic { username, .. }) => Some(username.as_str()),
                _ => None,
            };
            if let Some(a) = account {
                query.push(("account", a));
            }
            for s in t.scopes {
                query.push(("scope", s));
            }
            let sep = if t.realm.contains('?') { '&' } else { '?' };
            let url = if query.is_empty() {
                t.realm.to_string()
            } else {
                format!("{}{sep}{}", t.realm, encode_query(&query))
            };
            super::http::Request {
                method: "GET",
                url,
                headers: credential
                    .and_then(Credential::basic_header)
                    .map(|h| vec![("Authorization".to_string(), h)])
                    .unwrap_or_default(),
                body: None,
            }
        }
    }
}

/// The token in a realm's answer (`token` or `access_token`, valid `expires_in` seconds, 60
/// when not said, as the spec defines).
pub fn parse_token(body: &[u8]) -> Option<Token> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let token = v["token"]
        .as_str()
        .or_else(|| v["access_token"].as_str())
        .filter(|t| !t.is_empty())?;
    let secs = v["expires_in"].as_u64().unwrap_or(60).max(1);
    // Renew a little before the end, as the clock of the realm may run ahead.
    let life = Duration::from_secs(secs).saturating_sub(Duration::from_secs(secs.min(10)));
    Some(Token {
        header: format!("Bearer {token}"),
        expires: Instant::now() + life,
    })
}

fn encode_query(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .expect("challenge");
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.param("realm"), Some("https://auth.example/token"));
        assert_eq!(c.param("service"), Some("registry.example"));
        assert_eq!(c.param("scope"), Some("repository:a/b:pull,push"));
        assert_eq!(
            Challenge::parse(r#"Basic realm="Registry Realm""#).map(|c| c.scheme),
            Some("basic".into())
        );
        assert_eq!(Challenge::parse("Negotiate abc"), None);
    }

    fn origin(u: &str) -> Origin {
        Origin::of(u).expect("origin")
    }

    /// Where credentials may go: the registry's own origin, its host and port over https, or
    /// a listed realm over https; never another host or port, never plain http elsewhere.
    #[test]
    fn credentials_go_only_to_trusted_realms() {
        let reg = origin("https://reg.example");
        let ok = |realm: &str, trusted: &[(String, String)]| {
            may_send_credentials(&reg, "reg.example", &origin(realm), trusted)
        };
        assert!(ok("https://reg.example/token", &[]).is_ok());
        assert!(ok("https://reg.example:443/token", &[]).is_ok());
        let e = ok("https://auth.other/token", &[]).expect_err("another host");
        assert!(e.contains("another host"), "{e}");
        assert!(ok("https://reg.example:8443/token", &[]).is_err());
        let e = ok("http://reg.example/token", &[]).expect_err("http");
        assert!(e.contains("plain http"), "{e}");
        let listed = [("reg.example".to_string(), "auth.other".to_string())];
        assert!(ok("https://auth.other/token", &listed).is_ok());
        assert!(ok("https://auth.other:444/token", &listed).is_err());
        assert!(ok("http://auth.other/token", &listed).is_err());
        // A listing for another registry does not count.
        let elsewhere = [("x.example".to_string(), "auth.other".to_string())];
        assert!(ok("https://auth.other/token", &elsewhere).is_err());
        // Docker Hub's realm is built in, for its names only.
        let hub = origin("https://registry-1.docker.io");
        let auth = origin("https://auth.docker.io/token");
        assert!(may_send_credentials(&hub, "docker.io", &auth, &[]).is_ok());
        assert!(may_send_credentials(&reg, "reg.example", &auth, &[]).is_err());
        // A plain-http registry (loopback) may use a realm of its own origin only.
        let local = origin("http://127.0.0.1:5000");
        assert!(may_send_credentials(
            &local,
            "127.0.0.1:5000",
            &origin("http://127.0.0.1:5000/t"),
            &[]
        )
        .is_ok());
        assert!(may_send_credentials(
            &local,
            "127.0.0.1:5000",
            &origin("http://127.0.0.1:5001/t"),
            &[]
        )
        .is_err());
        // A URL with user info is no origin at all.
        assert_eq!(Origin::of("https://user@reg.example/token"), None);
    }

    #[test]
    fn token_requests_carry_scopes_and_credentials_as_docker_sends_them() {
        let basic = Credential::Basic {
            username: "u".into(),
            password: "p w".into(),
        };
        let scopes = vec![
            "repository:a/b:pull".to_string(),
            "repository:a/b:pull,push".to_string(),
        ];
        let r = token_request(&TokenRequest {
            realm: "https://auth.example/token?x=1",
            service: Some("reg example"),
            scopes: &scopes,
            credential: Some(&basic),
        });
        assert_eq!(r.method, "GET");
        assert_eq!(
            r.url,
            "https://auth.example/token?x=1&service=reg%20example&account=u&scope=repository%3Aa%2Fb%3Apull&scope=repository%3Aa%2Fb%3Apull%2Cpush"
        );
        assert_eq!(r.headers[0].1, "Basic dTpwIHc=");
        let id = Credential::IdentityToken("refresh".into());
        let r = token_request(&TokenRequest {
            realm: "https://auth.example/token",
            service: Some("svc"),
            scopes: &scopes[..1],
            credential: Some(&id),
        });
        assert_eq!(r.method, "POST");
        assert!(r.headers.iter().all(|(k, _)| k != "Authorization"));
        assert_eq!(
            String::from_utf8(r.body.expect("body")).expect("utf8"),
            "grant_type=refresh_token&refresh_token=refresh&client_id=kc-images&scope=repository%3Aa%2Fb%3Apull&service=svc"
        );
        let anon = token_request(&TokenRequest {
            realm: "https://auth.example/token",
            service: None,
            scopes: &[],
            credential: None,
        });
        assert!(anon.headers.is_empty() && anon.url == "https://auth.example/token");
        assert_eq!(format!("{basic:?}"), "Basic(u, <redacted>)");
    }

    #[test]
    fn tokens_are_read_with_their_lifetime() {
        let t = parse_token(br#"{"token":"abc","expires_in":300}"#).expect("token");
        assert_eq!(t.header, "Bearer abc");
        assert!(t.expires > Instant::now() + Duration::from_secs(280));
        let t = parse_token(br#"{"access_token":"xyz"}"#).expect("token");
        assert_eq!(t.header, "Bearer xyz");
        assert!(parse_token(br#"{"token":""}"#).is_none());
        assert!(parse_token(b"nope").is_none());
    }

    /// `config.json` as the docker CLI writes it: `auths` with `auth` or an `identitytoken`,
    /// Docker Hub's entry under its v1 URL; no file means no credential.
    #[test]
    fn credentials_come_from_config_json() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(lookup(Some(dir.path()), "reg.example"), Ok(None));
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"auths":{
                "https://index.docker.io/v1/":{"auth":"aHViOmh1YnB3"},
                "reg.example:5000":{"auth":"dTpw"},
                "id.example":{"auth":"","identitytoken":"refresh-me"}
            }}"#,
        )
        .expect("write");
        let basic = |u: &str, p: &str| {
            Some(Credential::Basic {
                username: u.into(),
                password: p.into(),
            })
        };
        assert_eq!(
            lookup(
                Some(dir.path()),
                super::super::reference::DOCKER_HUB_CREDENTIALS
            ),
            Ok(basic("hub", "hubpw"))
        );
        assert_eq!(
            lookup(Some(dir.path()), "reg.example:5000"),
            Ok(basic("u", "p"))
        );
        assert_eq!(
            lookup(Some(dir.path()), "id.example"),
            Ok(Some(Credential::IdentityToken("refresh-me".into())))
        );
        assert_eq!(lookup(Some(dir.path()), "other.example"), Ok(None));
        assert_eq!(lookup(None, "reg.example:5000"), Ok(None));
    }
}
