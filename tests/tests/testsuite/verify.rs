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

/// Lets the planted credentials into the context of `dotenv` (the context guard's way out).
const ALLOW_PLANTED: &str = "\n[secrets]\nallow = [\"services/dotenv/planted/**\"]\n";

fn run(dir: &Path, program: &str, args: &[&str]) {
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} (Debian's openssh-client / openssl) could not run: {e}")
        });
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes real credentials of every kind the secrets rule knows into the `dotenv` service's
/// `planted/` (copied to `/root/planted/` in its image), and look-alikes that are none. Returns
/// (path in the image, kind) of each credential, and the look-alikes' paths.
fn plant_secrets(fx: &tests::Fixture) -> (Vec<(String, &'static str)>, Vec<String>) {
    let rel = "services/dotenv/planted";
    let dir = fx.path(rel);
    std::fs::create_dir_all(dir.join("tls")).expect("mkdir");
    run(
        &dir,
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "planted",
            "-f",
            "deploy_key",
        ],
    );
    run(
        &dir,
        "openssl",
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "tls/server.key",
        ],
    );
    run(
        &dir,
        "openssl",
        &[
            "req",
            "-x509",
            "-key",
            "tls/server.key",
            "-subj",
            "/CN=planted",
            "-days",
            "1",
            "-out",
            "tls/server.crt",
        ],
    );
    run(
        &dir,
        "openssl",
        &[
            "pkcs12",
            "-export",
            "-inkey",
            "tls/server.key",
            "-in",
            "tls/server.crt",
            "-passout",
            "pass:planted",
            "-out",
            "client.p12",
        ],
    );
    let cosign = cache::cosign::SigningKey::generate().expect("key");
    fx.write(
        &format!("{rel}/signing/cosign.key"),
        &cosign.to_encrypted_pem(b"planted").expect("pem"),
    );
    fx.write(
        &format!("{rel}/signing/cosign.pub"),
        &cosign.public_key().to_pem(),
    );
    fx.write(
        &format!("{rel}/.netrc"),
        "machine github.com login ci password ghp_planted\n",
    );
    fx.write(
        &format!("{rel}/.aws/credentials"),
        "[default]\naws_access_key_id = AKIAPLANTED\naws_secret_access_key = planted\n",
    );
    fx.write(
        &format!("{rel}/.git-credentials"),
        "https://ci:ghp_planted@github.com\n",
    );
    fx.write(
        &format!("{rel}/.yarnrc.yml"),
        "npmRegistryServer: \"https://npm.corp\"\nnpmAuthToken: npm_planted\n",
    );
    fx.write(
        &format!("{rel}/.docker/config.json"),
        r#"{"auths":{"ghcr.io":{"auth":"Y2k6cGxhbnRlZA=="}}}"#,
    );
    fx.write(&format!("{rel}/win.ppk"), "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: planted\nPublic-Lines: 2\nAAAAC3NzaC1lZDI1NTE5AAAAIG5vdC1hLXJlYWwta2V5LWJ1dC10aGUtZm9ybWF0\ndA==\nPrivate-Lines: 1\nAAAAIG5vdC1hLXJlYWwta2V5LWJ1dC10aGUtZm9ybWF0LXNlY3JldA==\nPrivate-MAC: 00\n");
    // Look-alikes.
    fx.write(
        &format!("{rel}/.npmrc"),
        "//registry.npmjs.org/:_authToken=${NPM_TOKEN}\n",
    );
    fx.write(&format!("{rel}/.env.example"), "DB_PASSWORD=\n");
    let at = |p: &str| format!("/root/planted/{p}");
    let secrets = vec![
        (at("deploy_key"), "an SSH private key"),
        (at("tls/server.key"), "a private key"),
        (at("client.p12"), "a PKCS#12 key store"),
        (at("signing/cosign.key"), "a private key"),
        (at(".netrc"), "a .netrc file"),
        (at(".aws/credentials"), "AWS credentials"),
        (at(".git-credentials"), "git credentials"),
        (at(".yarnrc.yml"), "a .yarnrc.yml holding a registry token"),
        (
            at(".docker/config.json"),
            "a docker config holding registry credentials",
        ),
        (at("win.ppk"), "a PuTTY private key"),
    ];
    let lookalikes = [
        "deploy_key.pub",
        "tls/server.crt",
        "signing/cosign.pub",
        ".npmrc",
        ".env.example",
        "README",
    ]
    .iter()
    .map(|p| at(p))
    .collect();
    (secrets, lookalikes)
}

#[test]
fn each_broken_image_fails_on_the_rule_it_breaks() {
    let _guard = tests::docker_lock();
    let repo = Repo::new(broken_fixture(), "vbad");
    let (planted, lookalikes) = plant_secrets(&repo.fx);
    repo.config(ALLOW_PLANTED);

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
    // Every planted credential is found in the image's layer, by its kind, and nothing else:
    // the message lists the first eight of the twelve findings.
    assert!(m.ends_with("; and 4 more"), "{m}");
    let docker = engine::execute::docker::Docker::detect().expect("docker");
    let fs = engine::verify::layers::save(&docker.client, &ids["dotenv"], &|_, _| None)
        .expect("read the layers of dotenv");
    let found: BTreeMap<&str, &str> = fs
        .layers
        .iter()
        .flat_map(|l| &l.entries)
        .filter_map(|e| e.secret.map(|k| (e.path.as_str(), k)))
        .collect();
    for (path, kind) in &planted {
        assert_eq!(found.get(path.as_str()), Some(kind), "{path}: {found:#?}");
    }
    for path in &lookalikes {
        assert!(
            fs.layers
                .iter()
                .flat_map(|l| &l.entries)
                .any(|e| &e.path == path),
            "{path} is in the image"
        );
        assert!(
            !found.contains_key(path.as_str()),
            "{path} is no secret: {found:#?}"
        );
    }
    assert_eq!(found.len(), planted.len() + 2, "{found:#?}");
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
    repo.config(&format!(
        "{ALLOW_PLANTED}\n[services.good]\nsize-budget-mb = 50\n"
    ));
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
