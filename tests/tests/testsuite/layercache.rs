//! The registry layer cache across machines (issue 15, item 3): a fresh engine (a second dockerd
//! with its own data root, like a new CI runner) that has only the cache registry reuses the
//! dependency-install layers of an image no tier holds. The oracle is BuildKit's own progress
//! log (`CACHED` or `DONE` per step, `exporting cache`), read from the records of the builds, and
//! the image configs the registry holds; the fresh engine has no route out, so an install step
//! that ran would also fail there.

use std::path::Path;
use std::process::{Command, Output};

use tests::dockerd::FreshEngine;
use tests::{copy_example, remove_images_ok, xtask_bin};

use crate::layout::step;

fn registry(tag: &str) -> String {
    let host = std::env::var("DOCKER_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into());
    format!("{host}/kclayers{}{tag}", std::process::id())
}

fn images(root: &Path, cache_dir: &Path, args: &[&str], docker_host: Option<&str>) -> Output {
    let mut cmd = Command::new(xtask_bin());
    cmd.arg("--root")
        .arg(root)
        .arg("images")
        .arg("--json")
        .arg("--cache-dir")
        .arg(cache_dir)
        .args(args)
        .env_remove("IMAGES_ROOT")
        .env_remove("IMAGES_CACHE_DIR")
        .env_remove("IMAGES_CACHE_REGISTRY");
    if let Some(h) = docker_host {
        cmd.env("DOCKER_HOST", h).env_remove("DOCKER_CONTEXT");
    }
    cmd.output().expect("failed to run xtask")
}

/// The one image of a `--json` summary: its action and the whole JSON (for messages). A failed
/// run's message holds the whole build log: which cache imports answered and which steps were
/// `CACHED` are at its start, where the error's tail does not reach.
fn one(out: &Output) -> (String, serde_json::Value) {
    let json: Option<serde_json::Value> = serde_json::from_slice(&out.stdout).ok();
    assert!(
        out.status.success(),
        "images failed ({}):\n{}\n{}\n--- the whole build log ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        json.as_ref()
            .and_then(|j| j["images"][0]["log"].as_str())
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_else(|| "(none recorded)".into())
    );
    let json = json.expect("JSON summary");
    let img = json["images"][0].clone();
    (img["action"].as_str().unwrap_or("").to_string(), img)
}

/// The build log recorded for a service's last build in a cache directory.
fn recorded_log(cache_dir: &Path, service: &str) -> String {
    let store = cache::Store::open(cache_dir).expect("store");
    let last = store.last_built(service).expect("a recorded build");
    let record = store
        .get_record(&last.key)
        .expect("record")
        .expect("a record");
    let blob = record.log.expect("a kept log");
    String::from_utf8_lossy(&store.get_blob(&blob).expect("blob").expect("the log blob"))
        .into_owned()
}

/// Asserts that an image's registry messages hold each of `whats`.
fn says(img: &serde_json::Value, whats: &[&str]) {
    let said: Vec<&str> = img["registry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m.as_str())
        .collect();
    for what in whats {
        assert!(
            said.iter().any(|m| m.contains(what)),
            "`{what}` in {said:#?}"
        );
    }
}

struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        remove_images_ok(&self.0);
    }
}

#[test]
fn a_fresh_engine_with_only_the_registry_reuses_the_install_layers_of_a_missed_image() {
    let _guard = tests::docker_lock();
    tests::require_docker();
    let ex = copy_example();
    let prefix = format!("kcl-{}-", std::process::id());
    let _cleanup = Cleanup(prefix.clone());
    ex.write("images.toml", &format!("[images]\nprefix = \"{prefix}\"\n"));
    let reg = registry("a");
    let service = "student-service";

    // This machine builds the image and shares it: its key tag, and its layer cache.
    let here = ex.path(".images-cache");
    let (action, img) = one(&images(
        ex.root(),
        &here,
        &["--cache-registry", &reg, service],
        None,
    ));
    assert_eq!(action, "built", "{img:#}");
    says(
        &img,
        &[
            "layer cache pushed to",
            "layer cache of stage `base` pushed",
            "layer cache of stage `shared-deps` pushed",
            "layer cache of stage `deps` pushed",
            "layer cache of stage `shared-builder` pushed",
            "layer cache of stage `builder` pushed",
        ],
    );

    // What it pushed is a cache: BuildKit's inline cache metadata in the config of the image
    // and of each stage image (read back from the registry), computed by the build that
    // exported it (`exporting cache` in BuildKit's own log).
    let r = cache::registry::Registry::parse(&reg).expect("registry");
    let image = format!("{prefix}{service}");
    for tag in [
        "layers",
        "layers-base",
        "layers-shared-deps",
        "layers-deps",
        "layers-shared-builder",
        "layers-builder",
    ] {
        let config = r
            .config_digest(&image, tag)
            .expect("the registry answers")
            .unwrap_or_else(|| panic!("{reg}/{image}:{tag} was pushed"));
        let config = r
            .get_blob(&image, &config)
            .expect("the registry answers")
            .expect("its config");
        let config: serde_json::Value = serde_json::from_slice(&config).expect("config JSON");
        assert!(
            config.get("moby.buildkit.cache.v0").is_some(),
            "{image}:{tag} carries BuildKit's inline cache metadata: {config:#}"
        );
        // A stage's cache image says what its inputs were, so that a run with the same ones
        // can leave it there (below).
        let stage_key = config["config"]["Labels"]["com.kodingcaravan.images.layers-key"].as_str();
        assert_eq!(
            stage_key.is_some_and(|k| k.len() == 64),
            tag != "layers",
            "{image}:{tag}'s stage key label: {config:#}"
        );
    }
    assert!(
        recorded_log(&here, service).contains("exporting cache"),
        "the build that pushed its layer cache computed it:\n{}",
        recorded_log(&here, service)
    );

    // A source edit: a key no tier holds.
    let src = "services/student-service/src/index.ts";
    let text = ex.read(src);
    ex.write(src, &format!("{text}\n// edited on another machine\n"));

    let fresh = FreshEngine::start();
    fresh.load_from_main("node:18-alpine");

    // Read-only, as a pull request's CI would: the key misses every tier, the image is built
    // (and verified) with the registry's layer cache imported. An empty engine with no route
    // out could build none of its install steps otherwise.
    let img = one(&images(
        ex.root(),
        &fresh.path("images-cache"),
        &["--cache-registry", &reg, "--cache-read-only", service],
        Some(&fresh.host()),
    ))
    .1;
    let there = fresh.path("images-cache");
    assert_eq!(
        img["action"], "built",
        "a key no tier holds is built: {img:#}"
    );
    assert_eq!(img["verify"]["ok"], true, "the image is verified: {img:#}");
    let log = recorded_log(&there, service);
    for (stage, what) in [
        ("deps", "pnpm install --frozen-lockfile"),
        ("shared-builder", "pnpm install --frozen-lockfile"),
        ("runtime", "npm install --omit=dev"),
    ] {
        assert_eq!(
            step(&log, stage, what),
            Some(true),
            "[{stage}] {what} is CACHED on the fresh engine (from the registry):\n{log}"
        );
    }
    // What the edit changed ran: the service's compile, on the fresh engine.
    assert_eq!(
        step(
            &log,
            "builder",
            "run-package-script services/student-service build"
        ),
        Some(false),
        "the edited service's compile ran:\n{log}"
    );
    // The imports came from the registry: the log names the cache refs it imported.
    assert!(
        log.contains("importing cache manifest from") && log.contains(&reg),
        "the build imported the registry's cache:\n{log}"
    );
    // A read-only run pushes no cache, so its build computes none: BuildKit's inline cache
    // export costs the compressed digest of every layer, seconds on a fresh engine.
    assert!(
        !log.contains("exporting cache") && !log.contains("preparing build cache for export"),
        "a run that only imports exports no inline cache:\n{log}"
    );
    // Nothing was pushed by a read-only run.
    assert!(img["registry"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|m| !m.as_str().unwrap_or("").contains("pushed")));

    // This machine builds the edit and shares it: the stages whose inputs the edit left alone
    // keep the cache images already there (the registry's manifests are the same ones), the
    // stage that copies the service's sources is built and pushed again.
    let digest = |tag: &str| {
        r.head_manifest(&image, tag)
            .expect("the registry answers")
            .unwrap_or_else(|| panic!("{image}:{tag} is there"))
    };
    let kept = [
        "layers-base",
        "layers-shared-deps",
        "layers-deps",
        "layers-shared-builder",
    ];
    let before: Vec<String> = kept.iter().map(|t| digest(t)).collect();
    let builder_before = digest("layers-builder");
    let (action, img) = one(&images(
        ex.root(),
        &here,
        &["--cache-registry", &reg, service],
        None,
    ));
    assert_eq!(action, "built", "{img:#}");
    says(
        &img,
        &[
            "layer cache pushed to",
            "layer cache of stage `base` unchanged",
            "layer cache of stage `shared-deps` unchanged",
            "layer cache of stage `deps` unchanged",
            "layer cache of stage `shared-builder` unchanged",
            "layer cache of stage `builder` pushed",
        ],
    );
    for (tag, was) in kept.iter().zip(&before) {
        assert_eq!(&digest(tag), was, "{tag} not pushed again");
    }
    assert_ne!(digest("layers-builder"), builder_before, "pushed again");
}
