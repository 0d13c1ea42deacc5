//! Tests of `verify` (issue: verify every image against the architecture's rules), with a real
//! Docker engine: the example's images pass every rule; the deliberately broken images of
//! `tests/fixtures/verify` each fail on exactly the rule they break. Docker must be reachable
//! (`scripts/test.sh` starts one); these tests fail loudly otherwise.

use std::collections::BTreeMap;
use std::path::Path;

use tests::{copy_example, copy_tree, remove_images, repo_root, xtask, Fixture};

/// A monorepo whose images get a prefix of their own; they are removed on drop.
struct Repo {
    fx: Fixture,
    prefix: String,
}

impl Repo {
    fn new(fx: Fixture, tag: &str) -> Repo {
        tests::require_docker();
        let prefix = format!("kct-{}-{tag}-", std::process::id());
        let repo = Repo { fx, prefix };
        repo.config("");
        repo
    }

    /// Writes `images.toml`: the prefix, then `extra`.
    fn config(&self, extra: &str) {
        self.fx.write(
            "images.toml",
            &format!("[images]\nprefix = \"{}\"\n{extra}", self.prefix),
        );
    }

    /// Builds every image (without the gate `images` runs after each build, so that broken
    /// images exist to be verified); returns service -> image id.
    fn build(&self) -> BTreeMap<String, String> {
        let out = xtask(self.fx.root(), &["images", "--json", "--no-verify"]);
        assert!(
            out.status.success(),
            "images failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("images JSON");
        json["images"]
            .as_array()
            .expect("images")
            .iter()
            .map(|i| {
                (
                    i["service"].as_str().expect("service").to_string(),
                    i["image_id"].as_str().expect("image_id").to_string(),
                )
            })
            .collect()
    }

    /// Runs `verify --json ARGS`; returns the exit code and the document.
    fn verify(&self, args: &[&str]) -> (i32, serde_json::Value) {
        let mut all = vec!["verify", "--json"];
        all.extend_from_slice(args);
        let out = xtask(self.fx.root(), &all);
        let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "verify printed no JSON ({e}); stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap_or(-1), json)
    }
}

impl Drop for Repo {
    fn drop(&mut self) {
        remove_images(&self.prefix);
    }
}

/// A copy of `tests/fixtures/verify`.
fn broken_fixture() -> Fixture {
    let fx = tests::project().build();
    copy_tree(
        &repo_root().join("tests").join("fixtures").join("verify"),
        fx.root(),
    );
    fx
}

/// service -> the names of its failing rules.
fn failing(json: &serde_json::Value) -> BTreeMap<String, Vec<String>> {
    json["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|r| {
            let fails = r["checks"]
                .as_array()
                .expect("checks")
                .iter()
                .filter(|c| c["ok"] == false)
                .map(|c| c["rule"].as_str().expect("rule").to_string())
                .collect();
            (r["service"].as_str().expect("service").to_string(), fails)
        })
        .collect()
}

/// The message of `rule` in the report of `service`.
fn message(json: &serde_json::Value, service: &str, rule: &str) -> String {
    json["images"]
        .as_array()
        .expect("images")
        .iter()
        .find(|r| r["service"] == service)
        .and_then(|r| {
            r["checks"]
                .as_array()?
                .iter()
                .find(|c| c["rule"] == rule)?
                .get("message")?
                .as_str()
                .map(str::to_string)
        })
        .unwrap_or_else(|| panic!("no {rule} check for {service}: {json}"))
}

const RULES: [&str; 13] = [
    "app-isolation",
    "no-pnpm",
    "no-nx",
    "no-typescript",
    "no-dev-dependencies",
    "shared-dependency",
    "shared-resolves",
    "non-root-user",
    "cmd",
    "healthcheck",
    "base-image",
    "no-secrets",
    "size-budget",
];

#[test]
fn every_image_of_the_example_passes_and_is_verified_once_per_key() {
    let _guard = tests::docker_lock();
    let repo = Repo::new(copy_example(), "vok");
    let ids = repo.build();
    assert_eq!(ids.len(), 4);

    let (code, json) = repo.verify(&[]);
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(json["ok"], true);
    let reports = json["images"].as_array().expect("images");
    assert_eq!(reports.len(), 4);
    for r in reports {
        let service = r["service"].as_str().expect("service");
        assert_eq!(r["ok"], true, "{r:#}");
        assert_eq!(r["image_id"].as_str(), Some(ids[service].as_str()));
        let rules: Vec<&str> = r["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .map(|c| c["rule"].as_str().expect("rule"))
            .collect();
        assert_eq!(rules, RULES, "every rule is checked");
        assert!(r["size_bytes"].as_u64().expect("size") > 0);
        assert_eq!(r["budget_bytes"], 300_000_000u64);
    }
    assert_eq!(
        message(&json, "student-service", "shared-resolves"),
        "`@kodingcaravan/shared` resolves to /app/shared/dist/index.js (no network)"
    );
    assert!(message(&json, "api-gateway", "size-budget").ends_with("of a 300.0 MB budget"));

    // The table on stdout, the story on stderr.
    let out = xtask(repo.fx.root(), &["verify", "student-service"]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("SERVICE "), "{table}");
    assert_eq!(table.lines().count(), 1 + RULES.len(), "{table}");
    assert!(
        table
            .lines()
            .skip(1)
            .all(|l| l.starts_with("student-service") && l.contains("  ok  ")),
        "{table}"
    );

    // After a build, `images` verifies through `verify_once`: the second call reuses the marker.
    let analysis = tests::analyze(repo.fx.root());
    let docker = engine::execute::docker::Docker::detect().expect("docker");
    let s = analysis.ws.service("course-service").expect("service");
    let first =
        engine::verify::verify_once(&docker, &analysis, s, &ids["course-service"]).expect("verify");
    assert!(!first.reused && first.report.ok, "{:#?}", first.report);
    assert!(first.warnings.is_empty(), "{:?}", first.warnings);
    let key = analysis.image(s).expect("image").key.to_hex();
    let marker = cache::Layout::new(&analysis.cache_dir).verified(&key);
    assert!(marker.is_file(), "{}", marker.display());
    let second =
        engine::verify::verify_once(&docker, &analysis, s, &ids["course-service"]).expect("verify");
    assert!(second.reused);
    assert_eq!(second.report, first.report);
    // Another image id under the same key (a forced rebuild) is verified again.
    let other = engine::verify::verify_once(&docker, &analysis, s, &ids["student-service"])
        .expect("verify");
    assert!(!other.reused);
    assert!(
        !other.report.ok,
        "the student image is not the course service's"
    );
}

#[test]
fn each_broken_image_fails_on_the_rule_it_breaks() {
    let _guard = tests::docker_lock();
    let repo = Repo::new(broken_fixture(), "vbad");

    // Nothing built yet: the missing image is the failure.
    let (code, json) = repo.verify(&["good"]);
    assert_eq!(code, 1);
    assert_eq!(failing(&json)["good"], vec!["image"]);
    assert!(message(&json, "good", "image").contains("cargo xtask images good"));

    let ids = repo.build();
    assert_eq!(ids.len(), 8, "{ids:?}");
    let (code, json) = repo.verify(&[]);
    assert_eq!(code, 1, "a violation exits non-zero");
    assert_eq!(json["ok"], false);
    let expected: BTreeMap<String, Vec<String>> = [
        ("good", vec![]),
        ("extra-service", vec!["app-isolation"]),
        ("pnpm-runtime", vec!["no-pnpm"]),
        ("root-user", vec!["non-root-user"]),
        ("dotenv", vec!["no-secrets"]),
        ("dotenv-deleted", vec!["no-secrets"]),
        ("dev-dependency", vec!["no-dev-dependencies"]),
        ("cmd-selects", vec!["cmd"]),
    ]
    .into_iter()
    .map(|(s, r)| (s.to_string(), r.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(failing(&json), expected, "{json:#}");

    // `images` runs the same gate by default: the cached broken images make it fail, each with
    // its report, and nothing is published.
    let out = xtask(repo.fx.root(), &["images", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let images: serde_json::Value = serde_json::from_slice(&out.stdout).expect("images JSON");
    for i in images["images"].as_array().expect("images") {
        let service = i["service"].as_str().expect("service");
        assert_eq!(i["action"], "cached", "{i}");
        assert_eq!(i["verify"]["ok"], service == "good", "{i}");
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("root-user breaks the rule `non-root-user`"),
        "{stderr}"
    );

    // Each message names what broke the rule.
    let m = message(&json, "extra-service", "app-isolation");
    assert!(m.contains("/app/good is the service `good`"), "{m}");
    let m = message(&json, "pnpm-runtime", "no-pnpm");
    assert!(m.contains("/usr/local/bin/pnpm (on PATH)"), "{m}");
    let m = message(&json, "root-user", "non-root-user");
    assert!(m.contains("runs as root"), "{m}");
    let m = message(&json, "dotenv", "no-secrets");
    assert!(
        m.contains("/app/service/.env (an environment file)")
            && m.contains("/app/service/.npmrc (an .npmrc holding a registry token)"),
        "{m}"
    );
    let m = message(&json, "dotenv-deleted", "no-secrets");
    assert!(
        m.contains("/app/service/.env.production (an environment file)")
            && m.contains("deleted or replaced by a later layer but still shipped"),
        "{m}"
    );
    let m = message(&json, "dev-dependency", "no-dev-dependencies");
    assert!(
        m.contains("`left-pad` is installed in /app/service/node_modules/left-pad"),
        "{m}"
    );
    let m = message(&json, "cmd-selects", "cmd");
    assert!(
        m.contains(r#"the arguments ["--service","cmd-selects"]"#),
        "{m}"
    );

    // The table names the rule, and the exit code says it failed.
    let out = xtask(repo.fx.root(), &["verify", "root-user"]);
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table
            .lines()
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>())
            .any(|cols| cols == ["root-user", "non-root-user", "FAIL"]),
        "{table}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("root-user"));

    // Any image can be held to a service's rules.
    let other = format!("{}root-user:latest", repo.prefix);
    let (code, json) = repo.verify(&["good", "--image", &other]);
    assert_eq!(code, 1);
    assert_eq!(
        failing(&json)["good"],
        vec!["app-isolation", "non-root-user"]
    );
    assert!(message(&json, "good", "app-isolation")
        .contains("/app/service holds `@vf/root-user`, not this service's package `@vf/good`"));

    // The size budget comes from images.toml, per service.
    repo.config("\n[services.good]\nsize-budget-mb = 50\n");
    let (code, json) = repo.verify(&["good"]);
    assert_eq!(code, 1);
    assert_eq!(failing(&json)["good"], vec!["size-budget"]);
    assert_eq!(json["images"][0]["budget_bytes"], 50_000_000u64);
    let m = message(&json, "good", "size-budget");
    assert!(m.contains("is over the 50.0 MB budget"), "{m}");
}

/// `verify` of a root that is no workspace is a clear error, not a panic.
#[test]
fn verify_outside_a_workspace_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = xtask(Path::new(dir.path()), &["verify"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no pnpm workspace"), "{err}");
}
