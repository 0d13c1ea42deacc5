//! Registry conformance of the client (`cache::registry`) against real registries on loopback
//! (Debian's `docker-registry`, distribution 2.8: the oracle for auth, scopes and manifests),
//! with basic auth, with a token server of the test's own whose JWTs the registry verifies,
//! over TLS with a CA made here, through a proxy; and the faults a real registry will not
//! produce on demand (503s, hostile token realms) from small servers named for them.

mod servers;
pub(crate) mod signatures;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use cache::registry::{HttpSettings, Manifest, Platform, ProxyEnv, Registry, Settings};
use servers::{Auth, ConnectProxy, DistRegistry, Pki, Req, Resp, TestServer, TokenIssuer};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Settings that read nothing from the environment: fast retries, no proxy, no docker config.
fn settings(docker_config: Option<&Path>) -> Settings {
    Settings {
        http: HttpSettings {
            backoff: Duration::from_millis(10),
            ..HttpSettings::default()
        },
        docker_config: docker_config.map(Path::to_path_buf),
        platform: Platform::parse("linux/amd64").expect("platform"),
        ..Settings::default()
    }
}

fn registry(spec: &str, s: Settings) -> Registry {
    Registry::with_settings(spec, s).unwrap_or_else(|e| panic!("{spec}: {e}"))
}

/// A docker config directory with `config.json`.
fn docker_config(json: serde_json::Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("config.json"), json.to_string()).expect("write config");
    dir
}

fn auth_entry(user: &str, password: &str) -> serde_json::Value {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    serde_json::json!({ "auth": b64 })
}

/// Pushes a tiny image (a config labelled with `arch`, one layer) through the API; returns the
/// manifest and its config digest.
fn push_image(r: &Registry, image: &str, arch: &str, tag: Option<&str>) -> (Manifest, String) {
    let layer = r
        .put_blob(image, format!("layer for {arch}").as_bytes())
        .expect("put layer");
    let config = serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {"Labels": {"arch": arch}},
        "rootfs": {"type": "layers", "diff_ids": [layer]},
    })
    .to_string();
    let config_digest = r.put_blob(image, config.as_bytes()).expect("put config");
    let bytes = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": format!("layer for {arch}").len()}],
    })
    .to_string()
    .into_bytes();
    let m = Manifest {
        digest: cache::registry::sha256_digest(&bytes),
        media_type: OCI_MANIFEST.into(),
        bytes,
    };
    let reference = tag.unwrap_or(&m.digest).to_string();
    let put = r.put_manifest(image, &reference, &m).expect("put manifest");
    assert_eq!(put, m.digest);
    (m, config_digest)
}

#[test]
fn basic_auth_credentials_come_from_config_json_and_are_refused_clearly() {
    let reg = DistRegistry::start(Auth::Htpasswd(&[("kc", "s3cret")]), None);
    let host = reg.host();
    let cfg = docker_config(serde_json::json!({"auths": {&host: auth_entry("kc", "s3cret")}}));
    let r = registry(&format!("{host}/kc"), settings(Some(cfg.path())));
    let (m, _) = push_image(&r, "app", "amd64", Some("v1"));
    assert_eq!(
        r.head_manifest("app", "v1").expect("head"),
        Some(m.digest.clone())
    );
    let got = r.get_manifest("app", "v1").expect("get").expect("present");
    assert_eq!((got.digest, got.bytes), (m.digest.clone(), m.bytes.clone()));
    assert_eq!(r.head_manifest("app", "absent").expect("head"), None);

    // No credentials: the registry refuses, and the error says what to do.
    let none = tempfile::tempdir().expect("tempdir");
    let r = registry(&format!("{host}/kc"), settings(Some(none.path())));
    let e = r
        .head_manifest("app", "v1")
        .expect_err("anonymous")
        .to_string();
    assert!(e.contains(&format!("registry `{host}` refused")), "{e}");
    assert!(e.contains("no credentials for"), "{e}");
    assert!(e.contains(&format!("docker login {host}")), "{e}");

    // Wrong credentials.
    let bad = docker_config(serde_json::json!({"auths": {&host: auth_entry("kc", "wrong")}}));
    let r = registry(&format!("{host}/kc"), settings(Some(bad.path())));
    let e = r
        .head_manifest("app", "v1")
        .expect_err("wrong password")
        .to_string();
    assert!(e.contains("credentials were refused"), "{e}");
}

/// The token server of these tests: `writer` may pull and push, `reader` may only pull, the
/// identity token `kc-refresh-token` stands for `writer`; anything else is refused.
fn token_server(issuer: Arc<TokenIssuer>, tls: Arc<rustls::ServerConfig>) -> TestServer {
    TestServer::start(Some(tls), move |req: &Req| {
        let user = match (req.method.as_str(), req.header("Authorization")) {
            ("POST", _) => {
                let grant = req.param("grant_type");
                let token = req.param("refresh_token");
                (grant == ["refresh_token"] && token == ["kc-refresh-token"]).then_some("writer")
            }
            (_, Some(h)) => {
                let b64 = h.strip_prefix("Basic ").unwrap_or_default();
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap_or_default();
                match String::from_utf8_lossy(&decoded).as_ref() {
                    "writer:wpw" => Some("writer"),
                    "reader:rpw" => Some("reader"),
                    _ => None,
                }
            }
            _ => None,
        };
        let Some(user) = user else {
            return Resp::new(401).json(serde_json::json!({"details": "who are you"}));
        };
        let scopes: Vec<String> = if req.method == "POST" {
            req.param("scope")
                .iter()
                .flat_map(|s| s.split(' ').map(str::to_string).collect::<Vec<_>>())
                .collect()
        } else {
            req.param("scope")
        };
        let access = scopes
            .iter()
            .filter_map(|s| {
                let mut parts = s.splitn(3, ':');
                let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                (kind == "repository").then_some(())?;
                let allowed: Vec<String> = actions
                    .split(',')
                    .filter(|a| *a == "pull" || (*a == "push" && user == "writer"))
                    .map(str::to_string)
                    .collect();
                Some((name.to_string(), allowed))
            })
            .collect::<Vec<_>>();
        let key = if req.method == "POST" {
            "access_token"
        } else {
            "token"
        };
        Resp::new(200)
            .json(serde_json::json!({ key: issuer.token(user, &access), "expires_in": 300 }))
    })
}

#[test]
fn a_token_registry_gets_one_token_per_scope_and_refuses_a_pull_token_for_a_push() {
    let pki = Pki::new();
    let leaf = pki.leaf("realm", &["127.0.0.1"]);
    let signer = Arc::new(TokenIssuer::new());
    let realm = token_server(signer.clone(), Pki::server_config(&leaf));
    let reg = DistRegistry::start(
        Auth::Token {
            realm: realm.url("https", "/token"),
            issuer: &signer,
        },
        None,
    );
    let host = reg.host();
    let with_user = |user: &str, pw: &str| {
        let cfg = docker_config(serde_json::json!({"auths": {&host: auth_entry(user, pw)}}));
        let mut s = settings(Some(cfg.path()));
        s.http.ca_file = Some(pki.ca_path());
        s.token_realms = vec![(host.clone(), format!("127.0.0.1:{}", realm.port))];
        (cfg, s)
    };

    let (_cfg, s) = with_user("writer", "wpw");
    let r = registry(&format!("{host}/kc"), s);
    let (m, _) = push_image(&r, "app", "amd64", Some("v1"));
    assert_eq!(
        r.head_manifest("app", "v1").expect("head"),
        Some(m.digest.clone())
    );
    assert_eq!(
        r.head_manifest("app", "v1").expect("head again"),
        Some(m.digest.clone())
    );
    let asked: Vec<Vec<String>> = realm.requests().iter().map(|q| q.param("scope")).collect();
    assert_eq!(
        asked,
        vec![
            vec!["repository:kc/app:pull,push".to_string()],
            vec!["repository:kc/app:pull".to_string()],
        ],
        "one token per scope, each fetched once"
    );
    assert!(realm
        .requests()
        .iter()
        .all(|q| q.header("Authorization").is_some() && q.param("account") == ["writer"]));

    // The registry itself refuses a pull-only token for a push: a client that reused one token
    // for every scope could not push.
    let pull_only = signer.token("writer", &[("kc/app".into(), vec!["pull".into()])]);
    let both = signer.token(
        "writer",
        &[("kc/app".into(), vec!["pull".into(), "push".into()])],
    );
    let put = |token: &str| {
        servers::raw_status(
            reg.port,
            "PUT",
            "/v2/kc/app/manifests/v2",
            &[
                ("Authorization", &format!("Bearer {token}")),
                ("Content-Type", OCI_MANIFEST),
            ],
            &m.bytes,
        )
    };
    assert_eq!(put(&pull_only), 401);
    assert_eq!(put(&both), 201);

    // A reader gets a pull token; its push is refused with the scope named.
    let (_cfg, s) = with_user("reader", "rpw");
    let r = registry(&format!("{host}/kc"), s);
    assert_eq!(
        r.head_manifest("app", "v1").expect("reader head"),
        Some(m.digest.clone())
    );
    let e = r
        .put_manifest("app", "v3", &m)
        .expect_err("reader push")
        .to_string();
    assert!(
        e.contains(&format!("registry `{host}` refused")) && e.contains("push"),
        "{e}"
    );

    // An identity token (config.json's `identitytoken`) is exchanged at the OAuth2 endpoint.
    let cfg = docker_config(
        serde_json::json!({"auths": {&host: {"auth": "", "identitytoken": "kc-refresh-token"}}}),
    );
    let mut s = settings(Some(cfg.path()));
    s.http.ca_file = Some(pki.ca_path());
    s.token_realms = vec![(host.clone(), format!("127.0.0.1:{}", realm.port))];
    let r = registry(&format!("{host}/kc"), s);
    let before = realm.requests().len();
    r.put_manifest("app", "v4", &m)
        .expect("push with an identity token");
    let posts: Vec<Req> = realm.requests()[before..].to_vec();
    assert!(
        posts.iter().any(|q| q.method == "POST"
            && q.param("grant_type") == ["refresh_token"]
            && q.header("Authorization").is_none()),
        "{posts:?}"
    );
}

#[test]
fn a_tag_resolves_to_the_platform_entry_of_a_two_platform_index() {
    let reg = DistRegistry::start(Auth::None, None);
    let spec = format!("{}/kc", reg.host());
    let r = registry(&spec, settings(None));
    let (amd, amd_config) = push_image(&r, "multi", "amd64", None);
    let (arm, arm_config) = push_image(&r, "multi", "arm64", None);
    let entry = |m: &Manifest, arch: &str, variant: Option<&str>| {
        let mut platform = serde_json::json!({"os": "linux", "architecture": arch});
        if let Some(v) = variant {
            platform["variant"] = v.into();
        }
        serde_json::json!({"mediaType": OCI_MANIFEST, "digest": m.digest, "size": m.bytes.len(), "platform": platform})
    };
    let bytes = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [entry(&amd, "amd64", None), entry(&arm, "arm64", Some("v8"))],
    })
    .to_string()
    .into_bytes();
    let index = Manifest {
        digest: cache::registry::sha256_digest(&bytes),
        media_type: OCI_INDEX.into(),
        bytes,
    };
    // The registry accepts the index only if both entries exist in the repository.
    r.put_manifest("multi", "latest", &index)
        .expect("put index");
    assert_eq!(
        r.head_manifest("multi", "latest").expect("head"),
        Some(index.digest.clone())
    );
    let got = r
        .get_manifest("multi", "latest")
        .expect("get")
        .expect("index");
    assert!(got.is_index(), "{}", got.media_type);

    let on = |p: &str| {
        registry(&spec, settings(None)).with_platform(Platform::parse(p).expect("platform"))
    };
    assert_eq!(
        on("linux/amd64")
            .config_digest("multi", "latest")
            .expect("amd64"),
        Some(amd_config)
    );
    assert_eq!(
        on("linux/arm64/v8")
            .config_digest("multi", "latest")
            .expect("arm64"),
        Some(arm_config.clone())
    );
    assert_eq!(
        on("linux/arm64")
            .config_digest("multi", "latest")
            .expect("arm64"),
        Some(arm_config)
    );
    let labels = on("linux/arm64").labels("multi", &got).expect("labels");
    assert_eq!(labels["arch"], "arm64");
    let labels = on("linux/amd64").labels("multi", &got).expect("labels");
    assert_eq!(labels["arch"], "amd64");
    let e = on("linux/s390x")
        .config_digest("multi", "latest")
        .expect_err("no entry")
        .to_string();
    assert!(
        e.contains("no entry for linux/s390x") && e.contains("linux/amd64, linux/arm64"),
        "{e}"
    );
    assert_eq!(
        on("linux/amd64")
            .config_digest("multi", "absent")
            .expect("absent"),
        None
    );
    // The same from an image reference, as the key computation asks for a base image.
    let arm64 = Platform::parse("linux/arm64").expect("platform");
    let by_ref = Registry::resolve_config_digest(&format!("{spec}/multi:latest"), &arm64);
    assert_eq!(
        by_ref.expect("resolve"),
        on("linux/arm64")
            .config_digest("multi", "latest")
            .expect("arm64")
    );
    let pinned = format!("{spec}/multi@{}", index.digest);
    let amd64 = Platform::parse("linux/amd64").expect("platform");
    assert_eq!(
        Registry::resolve_config_digest(&pinned, &amd64).expect("resolve"),
        on("linux/amd64")
            .config_digest("multi", "latest")
            .expect("amd64")
    );
}

/// Runs the probe (`Registry::parse`, settings from the environment) with `env` set.
fn probe(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_registry-probe"));
    c.args(args);
    for v in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "NO_PROXY",
        "no_proxy",
        "IMAGES_REGISTRY_CA",
        "IMAGES_INSECURE_REGISTRIES",
        "IMAGES_REGISTRY_TOKEN_REALMS",
    ] {
        c.env_remove(v);
    }
    c.envs(env.iter().copied());
    c.output().expect("run registry-probe")
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn requests_go_through_the_proxy_named_by_http_proxy_and_not_for_no_proxy_hosts() {
    let reg = DistRegistry::start(Auth::None, None);
    let r = registry(&format!("{}/kc", reg.host()), settings(None));
    let (m, _) = push_image(&r, "app", "amd64", Some("v1"));
    let proxy = ConnectProxy::start();
    // `registry.test` resolves nowhere: only the proxy (which tunnels it to loopback) reaches it.
    let name = format!("registry.test:{}", reg.port);
    let proxy_url = format!("http://127.0.0.1:{}", proxy.port);
    let out = probe(
        &[&format!("{name}/kc"), "head", "app", "v1"],
        &[
            ("HTTP_PROXY", &proxy_url),
            ("IMAGES_INSECURE_REGISTRIES", &name),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), m.digest);
    assert!(
        !proxy.seen().is_empty() && proxy.seen().iter().all(|t| *t == name),
        "{:?}",
        proxy.seen()
    );
    // NO_PROXY: a direct connection, which cannot resolve the name; the proxy sees nothing more.
    let seen = proxy.seen().len();
    let out = probe(
        &[&format!("{name}/kc"), "head", "app", "v1"],
        &[
            ("HTTP_PROXY", &proxy_url),
            ("IMAGES_INSECURE_REGISTRIES", &name),
            ("NO_PROXY", ".test"),
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("could not be reached"),
        "{}",
        stderr(&out)
    );
    assert_eq!(proxy.seen().len(), seen);
    // In-process settings: the same through `ProxyEnv`, for https proxies' variable too.
    let mut s = settings(None);
    s.http.proxy = ProxyEnv {
        http: Some(proxy_url.clone()),
        ..ProxyEnv::default()
    };
    s.insecure = vec![name.clone()];
    let via = registry(&format!("{name}/kc"), s);
    assert_eq!(
        via.head_manifest("app", "v1").expect("via proxy"),
        Some(m.digest)
    );
}

#[test]
fn a_tls_registry_is_trusted_through_the_ca_setting_only() {
    let pki = Pki::new();
    let leaf = pki.leaf("registry", &["127.0.0.1", "localhost"]);
    let reg = DistRegistry::start(Auth::None, Some(&leaf));
    let spec = format!("https://{}/kc", reg.host());
    // Without the CA: a clear error naming the registry and the setting.
    let e = registry(&spec, settings(None))
        .head_manifest("app", "v1")
        .expect_err("untrusted");
    let e = e.to_string();
    assert!(
        e.contains(&format!("registry `{}`", reg.host())) && e.contains("TLS"),
        "{e}"
    );
    assert!(e.contains("IMAGES_REGISTRY_CA"), "{e}");
    // With it (the system store stays trusted besides).
    let mut s = settings(None);
    s.http.ca_file = Some(pki.ca_path());
    let r = registry(&spec, s);
    let (m, _) = push_image(&r, "app", "amd64", Some("v1"));
    assert_eq!(
        r.head_manifest("app", "v1").expect("head"),
        Some(m.digest.clone())
    );
    // The same through the environment, as users set it.
    let ca = pki.ca_path().display().to_string();
    let out = probe(
        &[&spec, "head", "app", "v1"],
        &[("IMAGES_REGISTRY_CA", &ca)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), m.digest);
    let out = probe(&[&spec, "head", "app", "v1"], &[]);
    assert!(
        stderr(&out).contains("IMAGES_REGISTRY_CA"),
        "{}",
        stderr(&out)
    );
}

/// A credential helper for the tests (a fixture standing in for `docker-credential-pass` and
/// the like): answers `get` for one host with the given user and secret, "credentials not
/// found" (as real helpers do) for any other.
fn fixture_helper(dir: &Path, name: &str, host: &str, user: &str, secret: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(format!("docker-credential-{name}"));
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread h\n[ \"$h\" = '{host}' ] || {{ echo 'credentials not found in native keychain'; exit 1; }}\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{secret}\"}}' \"$h\"\n"
        ),
    )
    .expect("write helper");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[test]
fn credentials_come_from_credential_helpers_on_path() {
    let reg = DistRegistry::start(Auth::Htpasswd(&[("kc", "s3cret")]), None);
    let host = reg.host();
    let writer = docker_config(serde_json::json!({"auths": {&host: auth_entry("kc", "s3cret")}}));
    let r = registry(&format!("{host}/kc"), settings(Some(writer.path())));
    let (m, _) = push_image(&r, "app", "amd64", Some("v1"));
    let bin = tempfile::tempdir().expect("tempdir");
    fixture_helper(bin.path(), "kcfixture", &host, "kc", "s3cret");
    fixture_helper(bin.path(), "kcwrong", &host, "kc", "nope");
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let spec = format!("{host}/kc");
    for (config, ok) in [
        // credHelpers for the host.
        (
            serde_json::json!({"credHelpers": {&host: "kcfixture"}}),
            true,
        ),
        // credsStore (Docker Desktop's shape: an empty `auths` entry).
        (
            serde_json::json!({"auths": {&host: {}}, "credsStore": "kcfixture"}),
            true,
        ),
        // credHelpers wins over the store.
        (
            serde_json::json!({"credsStore": "kcwrong", "credHelpers": {&host: "kcfixture"}}),
            true,
        ),
        (
            serde_json::json!({"credHelpers": {&host: "kcwrong"}}),
            false,
        ),
    ] {
        let cfg = docker_config(config.clone());
        let dir = cfg.path().display().to_string();
        let out = probe(
            &[&spec, "head", "app", "v1"],
            &[("DOCKER_CONFIG", &dir), ("PATH", &path)],
        );
        assert_eq!(out.status.success(), ok, "{config}: {}", stderr(&out));
        if ok {
            assert_eq!(stdout(&out), m.digest);
        } else {
            assert!(
                stderr(&out).contains("credentials were refused"),
                "{}",
                stderr(&out)
            );
        }
    }
    // A helper that is not installed: the error says so once the registry asks.
    let cfg = docker_config(serde_json::json!({"credHelpers": {&host: "kc-not-installed"}}));
    let dir = cfg.path().display().to_string();
    let out = probe(
        &[&spec, "head", "app", "v1"],
        &[("DOCKER_CONFIG", &dir), ("PATH", &path)],
    );
    assert!(
        stderr(&out).contains("could not be run"),
        "{}",
        stderr(&out)
    );
}

/// A registry that fails on demand (a real one will not): `plan` gives the status of each
/// successive request, then 200.
fn flaky_registry(plan: Vec<(u16, Option<&'static str>)>) -> TestServer {
    let step = std::sync::Mutex::new(0usize);
    TestServer::start(None, move |_req: &Req| {
        let mut i = step.lock().expect("step");
        let answer = plan.get(*i).copied();
        *i += 1;
        match answer {
            Some((status, retry_after)) => {
                let r = Resp::new(status);
                match retry_after {
                    Some(v) => r.header("Retry-After", v),
                    None => r,
                }
            }
            None => Resp::new(200)
                .header(
                    "Docker-Content-Digest",
                    &format!("sha256:{}", "a".repeat(64)),
                )
                .header("Content-Type", OCI_MANIFEST),
        }
    })
}

#[test]
fn answers_429_and_503_are_retried_with_backoff_and_retry_after() {
    let server = flaky_registry(vec![(503, Some("1")), (429, None), (502, None)]);
    let r = registry(&format!("127.0.0.1:{}/kc", server.port), settings(None));
    let start = std::time::Instant::now();
    let d = r.head_manifest("app", "v1").expect("retried");
    assert_eq!(d, Some(format!("sha256:{}", "a".repeat(64))));
    assert_eq!(server.requests().len(), 4);
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was not honoured"
    );

    // Retries run out: the error says the status and how often it was tried.
    let server = flaky_registry(vec![(503, None); 10]);
    let r = registry(&format!("127.0.0.1:{}/kc", server.port), settings(None));
    let e = r
        .head_manifest("app", "v1")
        .expect_err("always 503")
        .to_string();
    assert!(e.contains("answered 503 (after 3 retries)"), "{e}");
    assert_eq!(server.requests().len(), 4);

    // A Retry-After longer than the client waits: no retry, a clear error at once.
    let server = flaky_registry(vec![(429, Some("3600"))]);
    let r = registry(&format!("127.0.0.1:{}/kc", server.port), settings(None));
    let e = r
        .head_manifest("app", "v1")
        .expect_err("too long")
        .to_string();
    assert!(e.contains("429"), "{e}");
    assert_eq!(server.requests().len(), 1);
}

/// A hostile registry (a fault a real one will not produce): it names `realm` as its token
/// realm; the realm records what it receives and refuses everything.
#[test]
fn basic_credentials_never_reach_a_realm_on_another_host_port_or_over_http() {
    let pki = Pki::new();
    let leaf = pki.leaf("realm", &["127.0.0.1"]);
    let https_realm = TestServer::start(Some(Pki::server_config(&leaf)), |_r: &Req| Resp::new(401));
    let http_realm = TestServer::start(None, |_r: &Req| Resp::new(401));
    let realm_of = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let named = realm_of.clone();
    let hostile = TestServer::start(None, move |req: &Req| {
        if req.path() == "/token" {
            return Resp::new(401);
        }
        let realm = named.lock().expect("realm").clone();
        Resp::new(401).header(
            "WWW-Authenticate",
            &format!(
                "Bearer realm=\"{realm}\",service=\"hostile\",scope=\"repository:kc/app:pull\""
            ),
        )
    });
    let host = format!("127.0.0.1:{}", hostile.port);
    let cfg = docker_config(serde_json::json!({"auths": {&host: auth_entry("kc", "s3cret")}}));
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("kc:s3cret")
    );
    let attempt = |realm: &str, trusted: Vec<(String, String)>| {
        *realm_of.lock().expect("realm") = realm.to_string();
        let mut s = settings(Some(cfg.path()));
        s.http.ca_file = Some(pki.ca_path());
        s.token_realms = trusted;
        let r = registry(&format!("{host}/kc"), s);
        r.head_manifest("app", "v1")
            .expect_err("the realm refuses")
            .to_string()
    };
    let sent = |server: &TestServer| -> Vec<Option<String>> {
        server
            .requests()
            .iter()
            .map(|q| q.header("Authorization").map(str::to_string))
            .collect()
    };

    // Plain http on another port: asked anonymously, never with the password.
    let e = attempt(&http_realm.url("http", "/token"), vec![]);
    assert_eq!(sent(&http_realm), vec![None], "{e}");
    assert!(http_realm.requests()[0].param("account").is_empty());
    assert!(
        e.contains("were not sent") && e.contains("plain http"),
        "{e}"
    );
    // https, another port, not listed: anonymous too.
    let e = attempt(&https_realm.url("https", "/token"), vec![]);
    assert_eq!(sent(&https_realm), vec![None], "{e}");
    assert!(
        e.contains("another host or port") && e.contains("IMAGES_REGISTRY_TOKEN_REALMS"),
        "{e}"
    );
    // Listed, but plain http: still anonymous.
    let listed_http = vec![(host.clone(), format!("127.0.0.1:{}", http_realm.port))];
    attempt(&http_realm.url("http", "/token"), listed_http);
    assert_eq!(sent(&http_realm), vec![None, None]);
    // Listed and https: the credentials go (the control that shows the recorder sees them).
    let listed = vec![(host.clone(), format!("127.0.0.1:{}", https_realm.port))];
    attempt(&https_realm.url("https", "/token"), listed);
    assert_eq!(sent(&https_realm), vec![None, Some(expected.clone())]);
    // The registry's own origin: the credentials go there as they would for basic auth.
    attempt(&hostile.url("http", "/token"), vec![]);
    let own: Vec<Option<String>> = hostile
        .requests()
        .iter()
        .filter(|q| q.path() == "/token")
        .map(|q| q.header("Authorization").map(str::to_string))
        .collect();
    assert_eq!(own, vec![Some(expected)]);
    // None of the registry's own API requests carried the password in the clear either way.
    assert!(hostile
        .requests()
        .iter()
        .filter(|q| q.path().starts_with("/v2/"))
        .all(|q| q.header("Authorization").is_none()));
}

/// Hostile references given as users give them: the CLI refuses them before any request.
#[test]
fn the_cli_refuses_hostile_cache_registry_references() {
    let _guard = tests::docker_lock();
    tests::require_docker();
    let p = tests::project().shared().service("a", &[]).build();
    for spec in [
        "127.0.0.1:5000/../x",
        "127.0.0.1:5000//x",
        "127.0.0.1:5000/X",
        "127.0.0.1:5000/x\ny",
    ] {
        let out = tests::xtask(p.root(), &["images", "--cache-registry", spec]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{spec:?} was accepted");
        assert!(
            err.contains("invalid registry reference"),
            "{spec:?}: {err}"
        );
        assert!(err.contains("hint:"), "{err}");
    }
}

/// A registry that leaves out or lies about digests (a fault a real one will not produce): the
/// digest is that of the bytes, a `HEAD` without one falls back to a `GET`, and a mismatch is
/// refused, never taken.
#[test]
fn manifest_digests_are_the_bytes_digest_and_lies_are_refused() {
    let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"},"layers":[]}"#;
    let real = cache::registry::sha256_digest(body);
    let liar = format!("sha256:{}", "b".repeat(64));
    let lie = liar.clone();
    let server = TestServer::start(None, move |req: &Req| {
        let r = Resp::new(200).header("Content-Type", OCI_MANIFEST);
        match (req.method.as_str(), req.path()) {
            // No Docker-Content-Digest at all.
            (_, "/v2/kc/silent/manifests/v1") => Resp {
                body: body.to_vec(),
                ..r
            },
            // A digest that is not the bytes'.
            (_, "/v2/kc/liar/manifests/v1") => Resp {
                body: body.to_vec(),
                ..r.header("Docker-Content-Digest", &lie)
            },
            // Asked by digest, answers other bytes.
            (_, p) if p.starts_with("/v2/kc/swap/manifests/sha256:") => Resp {
                body: body.to_vec(),
                ..r
            },
            _ => Resp::new(404),
        }
    });
    let r = registry(&format!("127.0.0.1:{}/kc", server.port), settings(None));
    assert_eq!(
        r.head_manifest("silent", "v1").expect("head"),
        Some(real.clone())
    );
    assert_eq!(
        r.get_manifest("silent", "v1")
            .expect("get")
            .expect("manifest")
            .digest,
        real
    );
    let e = r.get_manifest("liar", "v1").expect_err("lie").to_string();
    assert!(e.contains("refused") && e.contains(&liar), "{e}");
    let e = r
        .get_manifest("swap", &liar)
        .expect_err("swapped")
        .to_string();
    assert!(e.contains("refused"), "{e}");
}
