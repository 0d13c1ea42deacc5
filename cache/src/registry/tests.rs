//! Unit tests of the registry client that need no server: specs, hostile references, Docker
//! Hub's names.

use super::*;

fn parse(spec: &str) -> Result<Registry> {
    Registry::with_settings(spec, Settings::default())
}

#[test]
fn parses_registry_specs() {
    let r = parse("127.0.0.1:5000/cache/team").expect("parse");
    assert_eq!(r.host, "127.0.0.1:5000");
    assert_eq!(r.namespace, "cache/team");
    assert_eq!(r.scheme(), "http");
    assert_eq!(
        r.reference("svc", "key-ab"),
        "127.0.0.1:5000/cache/team/svc:key-ab"
    );
    let r = parse("ghcr.io/acme").expect("parse");
    assert_eq!(r.scheme(), "https");
    assert_eq!(r.repository("x"), "acme/x");
    assert_eq!(parse("localhost:5000").expect("parse").scheme(), "http");
    assert_eq!(parse("[::1]:5000/x").expect("parse").scheme(), "http");
    // An explicit scheme wins over the loopback default.
    assert_eq!(
        parse("https://127.0.0.1:5000/x").expect("parse").scheme(),
        "https"
    );
    assert_eq!(parse("http://reg.corp/x").expect("parse").scheme(), "http");
    let settings = Settings {
        insecure: vec!["reg.corp:5000".into()],
        ..Settings::default()
    };
    let r = Registry::with_settings("reg.corp:5000/x", settings).expect("parse");
    assert_eq!(r.scheme(), "http");
}

/// Each of these once reached the network (`host/../x` sent requests outside `/v2/`): all are
/// refused before any request, with the reason and a hint.
#[test]
fn hostile_references_are_refused() {
    for spec in [
        "",
        "host/../x",
        "host/./x",
        "host//x",
        "host/UPPER",
        "ho st/x",
        "host/x\n",
        "host\n/x",
        "host/x\ny",
        "host/x?y",
        "host/x#y",
        "host/%2e%2e/x",
        "user:pw@host/x",
        "host:99999/x",
        "ftp://host/x",
        "host/-x",
        "host/x_",
    ] {
        let e = parse(spec).expect_err(spec).to_string();
        assert!(e.starts_with("invalid registry reference"), "{spec:?}: {e}");
        assert!(e.contains("hint:"), "{e}");
        assert!(!e.contains('\n') || e.lines().count() == 2, "{spec:?}: {e}");
    }
    // Names given to the methods are checked too, before any request.
    let r = parse("127.0.0.1:1/ns").expect("parse");
    for (image, tag) in [
        ("../x", "t"),
        ("x", "../t"),
        ("x", "t/u"),
        ("X", "t"),
        ("x\n", "t"),
    ] {
        let e = r.head_manifest(image, tag).expect_err(image).to_string();
        assert!(e.starts_with("invalid registry reference"), "{e}");
    }
    let e = r
        .get_blob("x", "sha256:../../etc")
        .expect_err("digest")
        .to_string();
    assert!(e.contains("is not a digest"), "{e}");
}

/// Docker Hub, as the distribution spec and the docker CLI name it, without any traffic.
#[test]
fn docker_hub_names_map_to_its_api_host() {
    for spec in [
        "docker.io",
        "index.docker.io",
        "registry-1.docker.io",
        "docker.io/",
    ] {
        let r = parse(spec).expect(spec);
        assert_eq!(r.host, "docker.io");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.scheme(), "https");
        assert_eq!(r.repository("node"), "library/node");
        assert_eq!(r.repository("acme/app"), "acme/app");
        assert_eq!(r.reference("node", "18"), "docker.io/library/node:18");
        assert_eq!(r.credentials_key(), "https://index.docker.io/v1/");
    }
    let r = parse("docker.io/acme").expect("parse");
    assert_eq!(r.repository("app"), "acme/app");
    assert_eq!(r.reference("app", "v1"), "docker.io/acme/app:v1");
    let r = parse("ghcr.io").expect("parse");
    assert_eq!(r.repository("node"), "node");
    assert_eq!(r.credentials_key(), "ghcr.io");
    assert_eq!(
        parse("127.0.0.1:5000").expect("parse").credentials_key(),
        "127.0.0.1:5000"
    );
}

#[test]
fn sha256_digests_match_known_values() {
    assert_eq!(
        sha256_digest(b""),
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        sha256_digest(b"abc"),
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}
