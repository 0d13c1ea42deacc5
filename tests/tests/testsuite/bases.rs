//! Base images are keyed by content digest: a tag moved for real (`docker tag`) changes the key,
//! with a reason naming both digests; an image that is not local is looked up in its registry (a
//! real one on loopback); with neither, the key says it is incomplete and the image is built.

use std::process::Command;

use tests::{docker_ok, docker_out, remove_images, xtask, xtask_bin, xtask_json, TinyImage};

fn fixture(base: &str, prefix: &str) -> tests::Fixture {
    let p = tests::project().shared().service("a", &[]).build();
    p.write(
        "services/a/Dockerfile",
        &format!("FROM {base}\nCOPY services/a/src /src\n"),
    );
    p.write("images.toml", &format!("[images]\nprefix = \"{prefix}\"\n"));
    p
}

fn first(json: &serde_json::Value) -> &serde_json::Value {
    &json["images"][0]
}

#[test]
fn a_moved_base_tag_changes_the_key_with_both_digests_in_the_reason() {
    tests::require_docker();
    let _guard = tests::docker_lock();
    let pid = std::process::id();
    let old = TinyImage::import(&format!("kct-{pid}-retag-old:1"), "old base");
    let new = TinyImage::import(&format!("kct-{pid}-retag-new:1"), "new base");
    let tag = format!("kct-{pid}-movable:18-alpine");
    docker_ok(&["tag", &old.reference, &tag]);
    let prefix = format!("kct-{pid}-retag-");
    let p = fixture(&tag, &prefix);
    let run = || {
        let out = xtask(p.root(), &["images", "--json", "--no-verify"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")
    };
    let built = run();
    assert_eq!(first(&built)["action"], "built");
    let key1 = first(&built)["key"].as_str().expect("key").to_string();
    let dry = xtask_json(p.root(), &["images", "--dry-run", "--json"]);
    assert_eq!(first(&dry)["action"], "cached");

    // `explain` shows the digest the key holds.
    let explain = xtask_json(p.root(), &["explain", "a", "--json"]);
    assert_eq!(explain["manifest"]["base_images"][0]["digest"], old.id);
    assert_eq!(explain["manifest"]["base_images"][0]["reference"], tag);
    let text = String::from_utf8_lossy(&xtask(p.root(), &["explain", "a"]).stdout).into_owned();
    assert!(
        text.contains(&format!("base image  {tag}: {}", old.id)),
        "{text}"
    );

    // Move the tag to another image, as a patched `node:18-alpine` would arrive.
    docker_ok(&["tag", &new.reference, &tag]);
    let dry = xtask_json(p.root(), &["images", "--dry-run", "--json"]);
    let img = first(&dry);
    assert_eq!(img["action"], "build");
    assert_ne!(img["key"], key1.as_str());
    let want = format!(
        "base image {tag}: sha256:{} -> sha256:{}",
        &old.id[7..19],
        &new.id[7..19]
    );
    let reasons: Vec<&str> = img["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    assert_eq!(reasons, vec![want.as_str()], "{img}");
    let details = &img["reason_details"][0];
    assert_eq!(details["kind"], "base_image_changed");
    assert_eq!(details["old"], old.id);
    assert_eq!(details["new"], new.id);

    // The build now uses the new base.
    let rebuilt = run();
    assert_eq!(first(&rebuilt)["action"], "built");
    let tree = tests::image_tree(first(&rebuilt)["image_id"].as_str().expect("id"));
    let base_txt = &tree["base.txt"];
    assert_eq!(
        base_txt.digest,
        blake3::hash(b"tiny base new base\n").to_hex().to_string()
    );
    let _ = docker_out(&["rmi", &tag]);
    remove_images(&prefix);
}

#[test]
fn a_base_that_is_not_local_is_looked_up_in_its_registry() {
    tests::require_docker();
    let registry = std::env::var("DOCKER_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into());
    let _guard = tests::docker_lock();
    let pid = std::process::id();
    let tiny = TinyImage::import(&format!("kct-{pid}-pushed:1"), "in the registry");
    let remote = format!("{registry}/kct-{pid}-bases/tiny:1");
    docker_ok(&["tag", &tiny.reference, &remote]);
    docker_ok(&["push", &remote]);
    docker_ok(&["rmi", &remote]);
    let p = fixture(&remote, &format!("kct-{pid}-reg-"));
    let a = tests::analyze_ok(p.root());
    let b = &a.images[0].manifest.base_images[0];
    assert_eq!(b.reference, remote);
    assert_eq!(
        b.digest.as_deref(),
        Some(tiny.id.as_str()),
        "the registry's config digest is the image ID"
    );
    assert!(a.images[0].unresolved.is_empty());

    // A name neither the engine nor the registry holds fails that service, saying so.
    p.write(
        "services/a/Dockerfile",
        &format!("FROM {registry}/kct-{pid}-bases/missing:1\nCOPY services/a/src /src\n"),
    );
    let e = tests::analyze_error(p.root());
    assert!(
        e.contains("neither in the engine nor in its registry"),
        "{e}"
    );

    // A digest pins itself: no lookup, even of a name nobody serves.
    let pinned = format!("unreachable.invalid/x@sha256:{}", "ab".repeat(32));
    p.write(
        "services/a/Dockerfile",
        &format!("FROM {pinned}\nCOPY services/a/src /src\n"),
    );
    let a = tests::analyze_ok(p.root());
    assert_eq!(
        a.images[0].manifest.base_images[0].digest.as_deref(),
        Some(format!("sha256:{}", "ab".repeat(32)).as_str())
    );
}

/// Without an engine (and a registry that does not answer), no key claims a digest it does not
/// know: the plan says `build`, and why.
#[test]
fn without_an_engine_the_key_says_it_is_incomplete() {
    // A registry port nothing listens on: bind one, then close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let p = fixture(&format!("127.0.0.1:{port}/team/base:1"), "kct-offline-");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(xtask_bin())
        .arg("--root")
        .arg(p.root())
        .args(["images", "--dry-run", "--json"])
        .env(
            "DOCKER_HOST",
            format!("unix://{}/none.sock", dir.path().display()),
        )
        .env("DOCKER", dir.path().join("no-docker"))
        .env_remove("IMAGES_ROOT")
        .env_remove("IMAGES_CACHE_DIR")
        .output()
        .expect("xtask");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let img = first(&json);
    assert_eq!(img["action"], "build");
    let reasons = img["reasons"].to_string();
    assert!(reasons.contains("key incomplete"), "{reasons}");
    assert!(reasons.contains("digest unknown"), "{reasons}");
    assert!(reasons.contains("platform is not known"), "{reasons}");
    // The same through the engine API, with the seam: nothing claimed.
    let mut opts = engine::pipeline::Options::new(p.root());
    opts.cache_dir = Some(p.path(".images-cache"));
    opts.resolver = engine::pipeline::Resolver::offline();
    let a = engine::pipeline::analyze(&opts).expect("analyze");
    let m = &a.images[0].manifest;
    assert_eq!(m.platform, None);
    assert_eq!(m.base_images[0].digest, None);
    assert!(!a.images[0].unresolved.is_empty());
}
