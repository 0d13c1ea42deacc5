//! Trust in the run, end to end with real Docker and the real registry on loopback (issue 13,
//! parts 1 and 2): an image that fails `verify` reaches no registry tag through either push path
//! (a direct push, a release by manifest copy); with `[trust] keys`, an impostor key tag
//! (unsigned, or signed by another key) is refused with a warning naming it and the image is built
//! here, while an entry signed by a trusted key is pulled and used; the signature the run writes
//! is accepted by sigstore-rs (`tests/cosign-oracle`), an independent implementation of
//! `cosign verify --key`; the run signs with a key file sigstore-rs wrote, and takes an entry
//! sigstore-rs signed.
//!
//! The images are the `good` service of `tests/fixtures/verify` and a `leaky` one (the same with
//! an SSH private key written by a `RUN` step), so that BuildKit's layer cache makes every
//! rebuild after the first instant.

use std::process::{Command, Output};

use cache::registry::Registry;
use tests::{copy_tree, docker_ok, repo_root, Fixture};

use crate::registry::signatures::{key_files, Oracle};

const KEY_LABEL: &str = "com.kodingcaravan.images.key";

fn registry_host() -> String {
    std::env::var("DOCKER_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".to_string())
}

/// A copy of `tests/fixtures/verify` with a `leaky` service, images prefixed uniquely, and a
/// namespace of its own in the shared registry.
struct Trusting {
    fx: Fixture,
    prefix: String,
    /// `HOST:PORT/NAMESPACE`.
    cache_registry: String,
}

impl Trusting {
    fn new(tag: &str, extra_config: &str) -> Trusting {
        tests::require_docker();
        let fx = tests::project().build();
        copy_tree(&repo_root().join("tests/fixtures/verify"), fx.root());
        let good = |f: &str| fx.read(&format!("services/good/{f}"));
        fx.write("services/leaky/index.js", &good("index.js"));
        fx.write(
            "services/leaky/package.json",
            &good("package.json").replace("@vf/good", "@vf/leaky"),
        );
        // A private key written by a build step: in a layer of the image, in no file of the
        // context.
        let dockerfile = good("Dockerfile")
            .replace("services/good/", "services/leaky/")
            .replace(
                "USER nodejs",
                "RUN printf '%s\\n' '-----BEGIN OPENSSH PRIVATE KEY-----' \\\n  \
                 'b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW' \\\n  \
                 'QyNTUxOQAAACBmaXh0dXJlLW5vdC1hLXJlYWwta2V5LWZvci10ZXN0cwAAAAAAAAAAAAAA' \\\n  \
                 '-----END OPENSSH PRIVATE KEY-----' > /app/service/deploy_key\nUSER nodejs",
            );
        fx.write("services/leaky/Dockerfile", &dockerfile);
        let pid = std::process::id();
        let prefix = format!("kct-{pid}-{tag}-");
        fx.write(
            "images.toml",
            &format!("[images]\nprefix = \"{prefix}\"\n{extra_config}"),
        );
        Trusting {
            fx,
            prefix,
            cache_registry: format!("{}/kctrust{pid}{tag}", registry_host()),
        }
    }

    fn registry(&self) -> Registry {
        Registry::parse(&self.cache_registry).expect("registry")
    }

    /// The manifest digest `tag` of the service's repository holds in the cache registry.
    fn digest(&self, service: &str, tag: &str) -> Option<String> {
        self.registry()
            .head_manifest(&format!("{}{service}", self.prefix), tag)
            .expect("HEAD manifest")
    }

    fn cache_dir(&self, machine: &str) -> String {
        self.fx
            .path(&format!("cache-{machine}"))
            .display()
            .to_string()
    }

    /// `cargo xtask images --json ARGS` as `machine` (its own cache directory), with `env` and no
    /// signing key but the one `env` gives; returns the output and the JSON document.
    fn images(
        &self,
        machine: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> (Output, serde_json::Value) {
        let out = self.xtask(machine, args, env);
        let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "images {args:?} printed no JSON ({e}):\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out, json)
    }

    /// [`Trusting::images`] without reading its output.
    fn xtask(&self, machine: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(tests::xtask_bin());
        cmd.arg("--root")
            .arg(self.fx.root())
            .args(["--cache-dir", &self.cache_dir(machine), "images", "--json"])
            .args(args);
        for v in [
            "IMAGES_ROOT",
            "IMAGES_CACHE_DIR",
            "IMAGES_CACHE_REGISTRY",
            "IMAGES_REGISTRY",
            "IMAGES_CACHE_READ_ONLY",
            "IMAGES_SIGNING_KEY",
            "IMAGES_SIGNING_KEY_FILE",
            "COSIGN_PASSWORD",
        ] {
            cmd.env_remove(v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run xtask")
    }
}

impl Drop for Trusting {
    fn drop(&mut self) {
        tests::remove_all_images(&self.prefix);
    }
}

/// The JSON entry of `service`.
fn entry<'a>(json: &'a serde_json::Value, service: &str) -> &'a serde_json::Value {
    json["images"]
        .as_array()
        .expect("images")
        .iter()
        .find(|i| i["service"] == service)
        .unwrap_or_else(|| panic!("no {service} in {json}"))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn key_tag(key: &str) -> String {
    format!("key-{}", &key[..32])
}

/// Pushes the local image `id` to `reference` as anyone who can push would (not through the
/// engine: unsigned, unverified).
fn plant(id: &str, reference: &str) {
    docker_ok(&["tag", id, reference]);
    docker_ok(&["push", reference]);
    docker_ok(&["rmi", reference]);
}

/// The image `id` with its key label set to `key` (a `docker commit` of a container of it): an
/// impostor for another key, made without a build.
fn relabel(id: &str, key: &str, reference: &str) -> String {
    let cid = docker_ok(&["create", id]);
    let change = format!("LABEL {KEY_LABEL}={key}");
    let new = docker_ok(&["commit", "--change", &change, &cid, reference]);
    let _ = docker_ok(&["rm", &cid]);
    new
}

#[test]
fn an_image_that_fails_verify_reaches_no_registry_tag_through_either_push_path() {
    let _guard = tests::docker_lock();
    let t = Trusting::new("gate", "");
    let leaky_repo = format!("{}leaky", t.prefix);

    // Direct push: built, fails no-secrets, and neither its key tag nor the release tag exists.
    let (out, json) = t.images(
        "a",
        &[
            "leaky",
            "--cache-registry",
            &t.cache_registry,
            "--push",
            "--tag",
            "v1",
        ],
        &[],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let leaky = entry(&json, "leaky");
    assert_eq!(leaky["action"], "failed", "{leaky}");
    assert!(
        leaky["error"].as_str().unwrap_or("").contains("no-secrets"),
        "{leaky}"
    );
    let key = leaky["key"].as_str().expect("key").to_string();
    let leaky_id = leaky["image_id"].as_str().expect("image id").to_string();
    assert_eq!(t.digest("leaky", &key_tag(&key)), None, "no key tag");
    assert_eq!(t.digest("leaky", "v1"), None, "no release tag");
    // Without [trust] keys the run says, once, that entries are trusted by label only.
    assert_eq!(
        err.matches("trusted by their key label only").count(),
        1,
        "{err}"
    );

    // Someone who can push plants that image under its key tag; a release by another machine
    // pulls it, verifies it, and publishes nothing.
    plant(
        &leaky_id,
        &format!("{}/{leaky_repo}:{}", t.cache_registry, key_tag(&key)),
    );
    let (out, json) = t.images(
        "b",
        &[
            "leaky",
            "--cache-registry",
            &t.cache_registry,
            "--push",
            "--tag",
            "v1",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let leaky = entry(&json, "leaky");
    assert_eq!(leaky["action"], "failed", "{leaky}");
    assert!(
        leaky["registry"].to_string().contains("pulled from"),
        "{leaky}"
    );
    assert_eq!(leaky["verify"]["ok"], false, "{leaky}");
    assert_eq!(t.digest("leaky", "v1"), None, "no release tag");

    // The manifest-copy path proper: machine A holds a verified `good`; the registry's key tag
    // of `good` holds the leaky image relabelled with good's key. The release copies nothing.
    let (out, json) = t.images("a", &["good"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let good = entry(&json, "good");
    let good_key = good["key"].as_str().expect("key").to_string();
    let impostor_ref = format!(
        "{}/{}good:{}",
        t.cache_registry,
        t.prefix,
        key_tag(&good_key)
    );
    let impostor = relabel(&leaky_id, &good_key, &impostor_ref);
    docker_ok(&["push", &impostor_ref]);
    docker_ok(&["rmi", &impostor_ref]);
    let planted = t.digest("good", &key_tag(&good_key)).expect("planted");
    let (out, json) = t.images(
        "a",
        &[
            "good",
            "--cache-registry",
            &t.cache_registry,
            "--push",
            "--tag",
            "v1",
        ],
        &[],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let good = entry(&json, "good");
    assert_eq!(good["action"], "cached", "{good}");
    let error = good["error"].as_str().unwrap_or("");
    assert!(error.contains(&planted), "names the digest: {good}");
    assert!(error.contains("did not pass verify"), "{good}");
    assert!(error.contains("no-secrets"), "{good}");
    assert_eq!(t.digest("good", "v1"), None, "no release tag");
    let _ = tests::docker().args(["rmi", "-f", &impostor]).output();

    // And nothing is pushed without verification.
    let out = t.xtask(
        "a",
        &[
            "good",
            "--cache-registry",
            &t.cache_registry,
            "--push",
            "--no-verify",
        ],
        &[],
    );
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("--push needs verification"), "{err}");
    assert!(err.contains("hint: drop --no-verify"), "{err}");
}

#[test]
fn with_trusted_keys_only_signed_entries_are_used_and_the_signatures_are_cosigns() {
    let _guard = tests::docker_lock();
    let t = Trusting::new("sig", "\n[trust]\nkeys = [\"keys/ci.pub\"]\n");
    let repo = format!("{}good", t.prefix);
    let oracle = Oracle {
        host: registry_host(),
    };
    // The trusted key pair made by sigstore-rs (the run signs with its encrypted key file);
    // another pair the engine makes, trusted by nobody.
    let secrets = tempfile::tempdir().expect("tempdir");
    let (ci_key, ci_pub) = oracle.keygen(secrets.path(), "ci", "ci password");
    std::fs::create_dir_all(t.fx.path("keys")).expect("mkdir keys");
    std::fs::copy(&ci_pub, t.fx.path("keys/ci.pub")).expect("copy ci.pub");
    let other = key_files(secrets.path(), "other", "other password");
    let nobody = key_files(secrets.path(), "nobody", "nobody's password");
    let signing_env = [
        (
            "IMAGES_SIGNING_KEY_FILE",
            ci_key.to_str().expect("utf8 path"),
        ),
        ("COSIGN_PASSWORD", "ci password"),
    ];

    // Machine A builds `good` (no registry).
    let (out, json) = t.images("a", &["good"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let good = entry(&json, "good");
    let key = good["key"].as_str().expect("key").to_string();
    let id = good["image_id"].as_str().expect("image id").to_string();
    let key_ref = format!("{}/{repo}:{}", t.cache_registry, key_tag(&key));

    // An unsigned entry under the key tag: refused, said with the tag, built here.
    plant(&id, &key_ref);
    let planted = t.digest("good", &key_tag(&key)).expect("planted");
    let read_only = [
        "good",
        "--cache-registry",
        &t.cache_registry,
        "--cache-read-only",
    ];
    let mut as_events = read_only.to_vec();
    as_events.extend(["--progress", "json"]);
    let (out, json) = t.images("b", &as_events, &[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let good = entry(&json, "good");
    assert_eq!(good["action"], "built", "{good}");
    // The warning, as a JSON event line on stderr.
    let warning = err
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| {
            e["event"] == "warning"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(&format!("`{key_ref}@{planted}`")))
        })
        .unwrap_or_else(|| panic!("no warning event naming the tag: {err}"));
    let message = warning["message"].as_str().unwrap_or_default();
    assert!(message.contains("refused: unsigned"), "{message}");
    assert!(!err.contains("trusted by their key label only"), "{err}");
    let refused: Vec<&serde_json::Value> = good["reason_details"]
        .as_array()
        .expect("reason_details")
        .iter()
        .filter(|r| r["kind"] == "registry_entry_refused")
        .collect();
    assert_eq!(refused.len(), 1, "{good}");
    assert_eq!(refused[0]["reference"], format!("{key_ref}@{planted}"));
    assert!(
        good["reasons"]
            .to_string()
            .contains("was refused: unsigned"),
        "{good}"
    );

    // Signed, but by a key nobody trusts: refused, built here.
    let r = t.registry();
    cache::cosign::sign(&r, &repo, &planted, &other.key, None).expect("sign with other");
    let (out, json) = t.images("c", &read_only, &[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(entry(&json, "good")["action"], "built", "{json}");
    assert!(err.contains("not signed by a trusted key"), "{err}");
    assert!(err.contains(&key_ref), "{err}");

    // A run with the trusted signing key refuses it too, builds, pushes its own image over the
    // key tag and a release, and signs them.
    let (out, json) = t.images(
        "d",
        &[
            "good",
            "--cache-registry",
            &t.cache_registry,
            "--push",
            "--tag",
            "v1",
        ],
        &signing_env,
    );
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("no signing key"), "{err}");
    // Layer caches carry no signature: with trusted keys none is imported or exported.
    assert_eq!(
        err.matches("is not used: [trust] keys are set").count(),
        1,
        "{err}"
    );
    let good = entry(&json, "good");
    assert_eq!(good["action"], "built", "{good}");
    let lines = good["registry"].to_string();
    assert!(lines.contains("signed"), "{good}");
    assert!(!lines.contains("layer cache"), "{good}");
    let signed = t.digest("good", &key_tag(&key)).expect("key tag");
    assert_eq!(t.digest("good", "v1"), Some(signed.clone()), "{good}");

    // A fresh machine with no key of its own pulls the signed entry by its digest and uses it.
    let (out, json) = t.images("e", &read_only, &[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let good = entry(&json, "good");
    assert_eq!(good["action"], "cached", "{good}");
    let lines = good["registry"].to_string();
    assert!(
        lines.contains(&format!("{key_ref}@{signed} (signed by keys/ci.pub)")),
        "{good}"
    );
    assert!(!err.contains("refused"), "{err}");

    // sigstore-rs accepts the run's signature of the key tag (and of the release, the same
    // manifest) with the trusted public key, and not with a key that signed nothing.
    assert!(oracle.accepts(
        &format!("kctrust{}sig/{repo}", std::process::id()),
        &signed,
        &ci_pub
    ));
    assert!(!oracle.accepts(
        &format!("kctrust{}sig/{repo}", std::process::id()),
        &signed,
        &nobody.public
    ));

    // The other way: sigstore-rs signs the entry with the trusted key (its signature manifest
    // then holds its one signature), and a fresh machine takes the entry on that signature.
    oracle.sign(
        &format!("kctrust{}sig/{repo}", std::process::id()),
        &signed,
        &ci_key,
        "ci password",
    );
    let sig_tag = cache::cosign::signature_tag(&signed).expect("sig tag");
    let sigs = r
        .get_manifest(&repo, &sig_tag)
        .expect("get")
        .expect("signed");
    let sigs: serde_json::Value = serde_json::from_slice(&sigs.bytes).expect("json");
    assert_eq!(sigs["layers"].as_array().map(Vec::len), Some(1), "{sigs}");
    let (out, json) = t.images("f", &read_only, &[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let good = entry(&json, "good");
    assert_eq!(good["action"], "cached", "{good}");
    assert!(
        good["registry"]
            .to_string()
            .contains("(signed by keys/ci.pub)"),
        "{good}"
    );

    // A run that may push, with trusted keys but no signing key, says its pushes are unsigned.
    let (out, _) = t.images("g", &["good", "--cache-registry", &t.cache_registry], &[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(err.matches("no signing key").count(), 1, "{err}");
}
