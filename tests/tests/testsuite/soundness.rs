//! Sound keys on real monorepos (issue 11): everything a build can read is in its key, nothing
//! outside the root is read, and a service that cannot be resolved fails alone. Each case here
//! is one a new user hit on public monorepos or with hostile input; each failed before.

use std::collections::BTreeMap;
use std::path::Path;

use tests::{analyze, analyze_error, analyze_ok, keys, project, xtask, xtask_json};

fn replace(p: &tests::Fixture, rel: &str, from: &str, to: &str) {
    let text = p.read(rel);
    assert!(text.contains(from), "{rel} has no {from:?}");
    p.write(rel, &text.replacen(from, to, 1));
}

fn paths(a: &engine::pipeline::Analysis, service: &str) -> Vec<String> {
    let s = a.ws.service(service).expect("service");
    a.image(s)
        .expect("analysed")
        .context
        .files
        .iter()
        .map(|f| f.path.to_string())
        .collect()
}

/// `COPY tsconfig ./tsconfig`: a directory at the root is copied whole, and its files are in the
/// key (they were left out: edits never rebuilt, and the build failed with `"/conf" not found`).
#[test]
fn a_root_directory_copied_is_in_the_context_and_the_key() {
    let p = project()
        .shared()
        .service("a", &[])
        .service("b", &[])
        .file("tsconfig/base.json", "{}\n")
        .file("tsconfig/nested/strict.json", "{ \"strict\": true }\n")
        .build();
    replace(
        &p,
        "services/a/Dockerfile",
        "COPY shared/ shared/",
        "COPY shared/ shared/\nCOPY tsconfig ./tsconfig",
    );
    let a = analyze_ok(p.root());
    let files = paths(&a, "a");
    for f in ["tsconfig/base.json", "tsconfig/nested/strict.json"] {
        assert!(files.iter().any(|p| p == f), "{f} in {files:?}");
    }
    assert!(!paths(&a, "b").iter().any(|p| p.starts_with("tsconfig")));
    let base = keys(p.root());
    p.write("tsconfig/nested/strict.json", "{ \"strict\": false }\n");
    let after = keys(p.root());
    assert_ne!(after["a"], base["a"], "a copies tsconfig/");
    assert_eq!(after["b"], base["b"], "b does not");
}

/// `COPY other/link/x` where `other/link` leads out of the root: refused, naming the link, and
/// nothing outside is read (it was read and baked in: `explain` listed `/etc/shadow`).
#[test]
fn a_symlink_in_the_middle_of_a_copy_path_that_leaves_the_root_is_refused() {
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(outside.path().join("secret"), "outside the root\n").expect("write");
    let p = project()
        .shared()
        .service("a", &[])
        .service("b", &[])
        .build();
    std::fs::create_dir_all(p.path("other")).expect("mkdir");
    std::os::unix::fs::symlink(outside.path(), p.path("other/link")).expect("symlink");
    replace(
        &p,
        "services/a/Dockerfile",
        "COPY shared/ shared/",
        "COPY shared/ shared/\nCOPY other/link/secret ./",
    );
    let e = analyze_error(p.root());
    assert!(e.contains("other/link"), "{e}");
    assert!(e.contains("outside the monorepo root"), "{e}");
    assert!(e.contains("service `a`"), "{e}");
    assert!(e.contains("skip = true"), "{e}");
    // b does not copy it: analysed, and its key holds nothing from outside.
    let a = analyze(p.root());
    assert_eq!(a.images.len(), 1);
    assert!(!paths(&a, "b").iter().any(|f| f.contains("secret")));
    // A relative link that climbs out, at the end of the path: the same.
    std::os::unix::fs::symlink("../../../../../../../etc/hostname", p.path("other/up"))
        .expect("symlink");
    replace(
        &p,
        "services/a/Dockerfile",
        "COPY other/link/secret ./",
        "COPY other/up ./",
    );
    let e = analyze_error(p.root());
    assert!(e.contains("other/up") && e.contains("outside"), "{e}");
    // `..` in a source stops at the root, as in BuildKit: `../../shared` is `shared`.
    replace(
        &p,
        "services/a/Dockerfile",
        "COPY other/up ./",
        "COPY ../../shared/src ./s",
    );
    let a = analyze_ok(p.root());
    assert!(paths(&a, "a").contains(&"shared/src/index.ts".to_string()));
}

/// Workspace globs that leave the root (`../outside/*`, or a link that leads out) are refused.
#[test]
fn a_workspace_glob_that_leaves_the_root_is_refused() {
    let outside = tempfile::tempdir().expect("tempdir");
    let pkg = outside.path().join("pkgs/evil");
    std::fs::create_dir_all(&pkg).expect("mkdir");
    std::fs::write(pkg.join("package.json"), "{ \"name\": \"evil\" }\n").expect("write");
    std::fs::write(pkg.join("Dockerfile"), "FROM scratch\n").expect("write");
    let p = project().shared().service("a", &[]).build();
    let rel = pathdiff(outside.path(), p.root());
    p.write(
        "pnpm-workspace.yaml",
        &format!("packages:\n  - 'shared'\n  - 'services/*'\n  - '{rel}/pkgs/*'\n"),
    );
    let e = analyze_error(p.root());
    assert!(e.contains("leaves the monorepo root"), "{e}");
    assert!(e.contains("pnpm-workspace.yaml"), "{e}");
    // Through a symlink inside the root.
    std::os::unix::fs::symlink(outside.path().join("pkgs"), p.path("vendor")).expect("symlink");
    p.write(
        "pnpm-workspace.yaml",
        "packages:\n  - 'shared'\n  - 'services/*'\n  - 'vendor/*'\n",
    );
    let e = analyze_error(p.root());
    assert!(e.contains("leaves the monorepo root"), "{e}");
    assert!(e.contains("vendor"), "{e}");
}

/// A relative path from `base` to `target`, with `..`.
fn pathdiff(target: &Path, base: &Path) -> String {
    let t: Vec<_> = target.components().collect();
    let b: Vec<_> = base.components().collect();
    let common = t.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut parts: Vec<String> = vec!["..".into(); b.len() - common];
    parts.extend(
        t[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("/")
}

/// With no platform configured the key holds the engine's; another platform is another key.
#[test]
fn another_platform_changes_the_key() {
    let p = project().shared().service("a", &[]).build();
    p.write(
        "services/a/Dockerfile",
        "FROM scratch\nCOPY services/a/src /src\n",
    );
    let a = analyze_ok(p.root());
    let engine_platform = a.images[0].manifest.platform.clone();
    if tests::docker_out(&["version"]).status.success() {
        assert_eq!(engine_platform.as_deref(), Some("linux/amd64"));
    }
    let base = keys(p.root());
    p.write("images.toml", "[images]\nplatform = \"linux/arm64\"\n");
    let arm = keys(p.root());
    assert_ne!(arm["a"], base["a"]);
    let a = analyze_ok(p.root());
    assert_eq!(
        a.images[0].manifest.platform.as_deref(),
        Some("linux/arm64")
    );
    assert_eq!(a.images[0].platform_flag.as_deref(), Some("linux/arm64"));
    // The same platform written as Docker's aliases is the same key.
    p.write("images.toml", "[images]\nplatform = \"linux/aarch64\"\n");
    assert_eq!(keys(p.root()), arm);
    // An invalid one fails the services, saying how to write it.
    p.write("images.toml", "[images]\nplatform = \"linux/arm64/v8/x\"\n");
    let e = analyze_error(p.root());
    assert!(e.contains("os/arch"), "{e}");
}

/// `--cache-dir services/a/.kc`: the cache is never part of a context, wherever it is, so keys
/// are the same run after run (they changed on every run: nothing was ever cached).
#[test]
fn a_cache_dir_inside_a_package_gives_stable_keys() {
    let p = project().shared().service("a", &[]).build();
    let run = || {
        let mut opts = engine::pipeline::Options::new(p.root());
        opts.cache_dir = Some(p.path("services/a/.kc"));
        let a = engine::pipeline::analyze(&opts).expect("analyze");
        assert!(a.failed.is_empty(), "{:?}", a.failed);
        let files = paths(&a, "a");
        assert!(!files.iter().any(|f| f.contains(".kc")), "{files:?}");
        a.images[0].key
    };
    let first = run();
    assert!(p.path("services/a/.kc/stat-cache.bin").is_file());
    assert_eq!(run(), first);
    assert_eq!(run(), first);
    // Relative to the current directory, too (the flag as a user types it).
    let out = xtask_json(
        p.root(),
        &[
            "--cache-dir",
            &p.path("services/a/.kc").to_string_lossy(),
            "images",
            "--dry-run",
            "--json",
        ],
    );
    assert_eq!(out["images"][0]["key"], first.to_hex());
    // A Dockerfile that names it is told so.
    replace(
        &p,
        "services/a/Dockerfile",
        "COPY shared/ shared/",
        "COPY shared/ shared/\nCOPY services/a/.kc/stat-cache.bin /x",
    );
    let mut opts = engine::pipeline::Options::new(p.root());
    opts.cache_dir = Some(p.path("services/a/.kc"));
    let a = engine::pipeline::analyze(&opts).expect("analyze");
    let e = a.failed[0].to_string();
    assert!(e.contains("cache directory"), "{e}");
}

/// A nested workspace package inside a copied directory is in the context, and the pruned
/// lockfile keeps its importer: a real `pnpm install --frozen-lockfile` accepts the context.
#[test]
fn a_nested_workspace_package_is_in_the_context_and_pnpm_accepts_its_lockfile() {
    let p = project()
        .file(
            "pnpm-workspace.yaml",
            "packages:\n  - 'controlplane'\n  - 'controlplane/*'\n  - 'services/*'\n",
        )
        .file(
            "controlplane/package.json",
            "{\n  \"name\": \"@fx/controlplane\",\n  \"version\": \"1.0.0\"\n}\n",
        )
        .file("controlplane/src/server.ts", "export {};\n")
        .file(
            "controlplane/emails/package.json",
            "{\n  \"name\": \"@fx/emails\",\n  \"version\": \"1.0.0\",\n  \"dependencies\": { \"is-number\": \"7.0.0\" }\n}\n",
        )
        .file("controlplane/emails/src/welcome.ts", "export {};\n")
        .file(
            "controlplane/Dockerfile",
            "FROM node:18-alpine\nWORKDIR /app\nCOPY package.json pnpm-lock.yaml pnpm-workspace.yaml ./\nCOPY controlplane/ controlplane/\n",
        )
        .service("other", &[("ms", "2.1.3")])
        .file(
            "services/other/Dockerfile",
            "FROM node:18-alpine\nCOPY services/other/ /app/\n",
        )
        .build();
    tests::pnpm_lockfile(p.root());
    let a = analyze_ok(p.root());
    let files = paths(&a, "controlplane");
    assert!(files.contains(&"controlplane/emails/src/welcome.ts".to_string()));
    let lock = tests::context_file(&a, "controlplane", "pnpm-lock.yaml");
    let lock = String::from_utf8(lock).expect("utf-8");
    assert!(lock.contains("controlplane/emails:"), "{lock}");
    assert!(lock.contains("is-number"), "{lock}");
    assert!(!lock.contains("services/other"), "{lock}");
    let dest = tempfile::tempdir().expect("tempdir");
    tests::materialize(p.root(), &a, "controlplane", dest.path());
    tests::run_ok(
        std::process::Command::new("pnpm")
            .args(["install", "--frozen-lockfile", "--ignore-scripts"])
            .env("CI", "true")
            .current_dir(dest.path()),
        "pnpm install --frozen-lockfile in the pruned context",
    );
    // A lockfile without the nested package's importer fails at plan time, not in Docker.
    let full = p.read("pnpm-lock.yaml");
    let start = full.find("\n  controlplane/emails:").expect("importer");
    let end = full[start + 1..]
        .find("\n\n")
        .map_or(full.len(), |e| start + 1 + e);
    p.write(
        "pnpm-lock.yaml",
        &format!("{}{}", &full[..start], &full[end..]),
    );
    let e = analyze_error(p.root());
    assert!(e.contains("no importer for `controlplane/emails`"), "{e}");
    assert!(e.contains("ERR_PNPM_OUTDATED_LOCKFILE"), "{e}");
    assert!(e.contains("service `controlplane`"), "{e}");
}

/// `ARG` and `ENV` in a source are substituted as BuildKit does; one whose value would come from
/// the base image's environment is named (it gave a misleading "does not exist").
#[test]
fn args_in_sources_are_substituted_and_unknown_ones_named() {
    let p = project().shared().service("a", &[]).build();
    p.write(
        "services/a/Dockerfile",
        "FROM node:18-alpine\nARG SVC=a\nARG SUB\nCOPY services/${SVC}/${SUB:-src} /app/\n",
    );
    let a = analyze_ok(p.root());
    assert!(paths(&a, "a").contains(&"services/a/src/index.ts".to_string()));
    p.write("images.toml", "[images]\nbuild-args = { SUB = \"lib\" }\n");
    p.write("services/a/lib/x.ts", "export {};\n");
    let a = analyze_ok(p.root());
    assert!(paths(&a, "a").contains(&"services/a/lib/x.ts".to_string()));
    assert!(!paths(&a, "a").contains(&"services/a/src/index.ts".to_string()));
    p.write(
        "services/a/Dockerfile",
        "FROM node:18-alpine\nCOPY services/$NODE_SVC/src /app/\n",
    );
    let e = analyze_error(p.root());
    assert!(e.contains("$NODE_SVC") && e.contains("line 2"), "{e}");
    assert!(e.contains("ARG NODE_SVC"), "{e}");
}

/// A `.dockerignore` that leaves out what a Dockerfile copies is a plan-time error naming the
/// path (with `*`, the build failed late, the context holding only the Dockerfile).
#[test]
fn an_ignore_file_that_excludes_a_copied_path_is_named_at_plan_time() {
    let p = project().shared().service("a", &[]).build();
    p.write(".dockerignore", "*\n");
    let e = analyze_error(p.root());
    assert!(
        e.contains("`.dockerignore` leaves `package.json` out"),
        "{e}"
    );
    assert!(e.contains("line 4"), "{e}");
    assert!(e.contains("hint: add `!package.json`"), "{e}");
    // With the exceptions it needs, it analyses.
    p.write(
        ".dockerignore",
        "*\n!package.json\n!pnpm-workspace.yaml\n!shared\n!services/a\n",
    );
    let a = analyze_ok(p.root());
    assert!(paths(&a, "a").contains(&"services/a/src/index.ts".to_string()));
}

/// `ADD <url>` without `--checksum` is never keyed silently: the image is uncacheable, said so;
/// with `--checksum` the checksum is in the key.
#[test]
fn an_unpinned_remote_add_makes_the_image_uncacheable() {
    let p = project()
        .shared()
        .service("a", &[])
        .service("b", &[])
        .build();
    replace(
        &p,
        "services/a/Dockerfile",
        "COPY shared/ shared/",
        "COPY shared/ shared/\nADD https://example.test/tool.tgz /opt/",
    );
    let json = xtask_json(p.root(), &["images", "--dry-run", "--json"]);
    let img = |s: &str| {
        json["images"]
            .as_array()
            .expect("images")
            .iter()
            .find(|i| i["service"] == s)
            .cloned()
            .expect("service")
    };
    let a = img("a");
    assert_eq!(a["action"], "build");
    let why: Vec<String> = a["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .map(|r| r.as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        why.iter()
            .any(|r| r.contains("uncacheable") && r.contains("--checksum") && r.contains("line 9")),
        "{why:?}"
    );
    let base = keys(p.root());
    replace(
        &p,
        "services/a/Dockerfile",
        "ADD https://example.test/tool.tgz",
        "ADD --checksum=sha256:0000000000000000000000000000000000000000000000000000000000000000 https://example.test/tool.tgz",
    );
    let pinned = analyze_ok(p.root());
    let s = pinned.ws.service("a").expect("a");
    let img = pinned.image(s).expect("a");
    assert!(img.uncacheable.is_empty());
    assert_eq!(img.manifest.remote_sources.len(), 1);
    let k1 = keys(p.root());
    assert_ne!(k1["a"], base["a"]);
    replace(&p, "services/a/Dockerfile", "sha256:0000", "sha256:1111");
    assert_ne!(keys(p.root())["a"], k1["a"], "the checksum is in the key");
}

/// A monorepo whose only Dockerfile is at the root says why nothing is built (it said `0 to
/// build` and exited 0).
#[test]
fn a_monorepo_without_a_service_says_why() {
    let p = project().shared().build();
    p.write("Dockerfile", "FROM node:18-alpine\nCOPY . .\n");
    p.write("tools/x/Dockerfile", "FROM scratch\n");
    let out = xtask(p.root(), &["images", "--dry-run"]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("no service in"), "{e}");
    assert!(e.contains("the root package is never a service"), "{e}");
    assert!(e.contains("tools/x/Dockerfile"), "{e}");
    assert!(e.contains("hint:"), "{e}");
}

/// One service that cannot be resolved (`COPY dist`, meant for another context) fails alone:
/// the dry run plans the others, names it with the `skip = true` hint, and exits 1; with
/// `skip = true` it is gone.
#[test]
fn one_unresolvable_service_leaves_the_others_planned() {
    let p = project()
        .shared()
        .service("a", &[])
        .service("bad", &[])
        .build();
    replace(
        &p,
        "services/bad/Dockerfile",
        "COPY shared/ shared/",
        "COPY shared/ shared/\nCOPY dist ./dist",
    );
    let out = xtask(p.root(), &["images", "--dry-run", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let actions: BTreeMap<String, String> = json["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|i| {
            (
                i["service"].as_str().unwrap_or("").to_string(),
                i["action"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(actions["a"], "build");
    assert_eq!(actions["bad"], "failed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`dist`") || err.contains("dist"), "{err}");
    assert!(
        err.contains("[services.bad]") && err.contains("skip = true"),
        "{err}"
    );
    p.write("images.toml", "[services.bad]\nskip = true\n");
    let out = xtask(p.root(), &["images", "--dry-run"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Build argument values are never printed nor stored: the key holds their digest, a reason
/// says which one changed.
#[test]
fn build_arg_values_appear_in_no_output() {
    let p = project().shared().service("a", &[]).build();
    let canary = "npm_canary_0123456789abcdef";
    p.write(
        "images.toml",
        &format!("[images]\nbuild-args = {{ NPM_TOKEN = \"{canary}\" }}\n"),
    );
    let mut outputs = Vec::new();
    for args in [
        vec!["images", "--dry-run"],
        vec!["images", "--dry-run", "--json"],
        vec!["explain", "a"],
        vec!["explain", "a", "--json"],
        vec![
            "images",
            "--dry-run",
            "--build-arg",
            "NPM_TOKEN=npm_other_canary_value",
        ],
    ] {
        let out = xtask(p.root(), &args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        outputs.push(String::from_utf8_lossy(&out.stdout).into_owned());
        outputs.push(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    for o in &outputs {
        assert!(
            !o.contains(canary) && !o.contains("npm_other_canary_value"),
            "{o}"
        );
    }
    assert!(outputs.iter().any(|o| o.contains("NPM_TOKEN")));
    // A change is told by name.
    let prev = engine::key::InputManifest::new(
        "a",
        analyze_ok(p.root()).images[0].manifest.clone(),
        &analyze_ok(p.root()).images[0].context,
    );
    p.write(
        "images.toml",
        "[images]\nbuild-args = { NPM_TOKEN = \"npm_new_value\" }\n",
    );
    let a = analyze_ok(p.root());
    let cur = a.images[0].input_manifest(&a.ws);
    let why: Vec<String> = engine::plan::diff(&prev, &cur)
        .iter()
        .map(|r| r.to_string())
        .collect();
    assert_eq!(why, vec!["build arg NPM_TOKEN changed"]);
    let stored = serde_json::to_string(&cur).expect("json");
    assert!(!stored.contains("npm_new_value"), "{stored}");
}
