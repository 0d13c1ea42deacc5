//! End-to-end builds with a real Docker engine on copies of the example (issue: build the images).
//! Docker must be reachable (`scripts/test.sh` starts one); these tests fail loudly otherwise.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use tests::{copy_example, docker_ok, docker_out, remove_images_ok, xtask, Fixture};

/// A copy of the example whose images get a prefix of their own; they are removed on drop.
struct Example {
    fx: Fixture,
    prefix: String,
}

impl Example {
    fn new(tag: &str) -> Example {
        tests::require_docker();
        let fx = copy_example();
        let prefix = format!("kct-{}-{tag}-", std::process::id());
        fx.write("images.toml", &format!("[images]\nprefix = \"{prefix}\"\n"));
        Example { fx, prefix }
    }

    fn images(&self, args: &[&str]) -> (Output, serde_json::Value) {
        self.images_env(args, &[])
    }

    /// `images --json ARGS` with `env` set.
    fn images_env(&self, args: &[&str], env: &[(&str, &Path)]) -> (Output, serde_json::Value) {
        let mut all = vec!["images", "--json"];
        all.extend_from_slice(args);
        let out = if env.is_empty() {
            xtask(self.fx.root(), &all)
        } else {
            let mut cmd = Command::new(tests::xtask_bin());
            cmd.arg("--root").arg(self.fx.root()).args(&all);
            cmd.env_remove("IMAGES_ROOT").env_remove("IMAGES_CACHE_DIR");
            for (k, v) in env {
                cmd.env(k, v);
            }
            cmd.output().expect("failed to run xtask")
        };
        let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "images printed no JSON ({e}); stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out, json)
    }

    /// Runs `images` and asserts success; returns service -> (action, image id).
    fn run_ok(&self) -> std::collections::BTreeMap<String, (String, String)> {
        let (out, json) = self.images(&[]);
        assert!(
            out.status.success(),
            "images failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        actions(&json)
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        // Pushed and pulled ones too (a registry test pulls by digest).
        tests::remove_all_images(&self.prefix);
    }
}

/// A service's entry in a `--json` summary or plan.
fn image_of<'j>(json: &'j serde_json::Value, service: &str) -> &'j serde_json::Value {
    json["images"]
        .as_array()
        .expect("images")
        .iter()
        .find(|i| i["service"] == service)
        .unwrap_or_else(|| panic!("{service} in {json:#}"))
}

fn actions(json: &serde_json::Value) -> std::collections::BTreeMap<String, (String, String)> {
    json["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|i| {
            (
                i["service"].as_str().expect("service").to_string(),
                (
                    i["action"].as_str().expect("action").to_string(),
                    i["image_id"].as_str().unwrap_or("").to_string(),
                ),
            )
        })
        .collect()
}

fn built(a: &std::collections::BTreeMap<String, (String, String)>) -> Vec<&str> {
    a.iter()
        .filter(|(_, (act, _))| act == "built")
        .map(|(s, _)| s.as_str())
        .collect()
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// Starts an image, checks the runtime rules, stops it.
fn check_image(image: &str, service: &str, all_services: &[&str]) {
    let cid = docker_ok(&[
        "run",
        "-d",
        "-p",
        "127.0.0.1::8080",
        "-e",
        "PORT=8080",
        image,
    ]);
    let result = std::panic::catch_unwind(|| {
        let port: u16 = docker_ok(&["port", &cid, "8080/tcp"])
            .lines()
            .next()
            .and_then(|l| l.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .expect("published port");
        let mut health = None;
        for _ in 0..50 {
            if let Some(b) = http_get(port, "/health") {
                if b.starts_with("HTTP/1.1 200") || b.starts_with("HTTP/1.0 200") {
                    health = Some(b);
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let health = health.unwrap_or_else(|| {
            panic!(
                "{image} never answered /health; logs:\n{}",
                docker_ok(&["logs", &cid])
            )
        });
        assert!(health.contains(service), "{health}");
        assert_eq!(docker_ok(&["exec", &cid, "id", "-u"]), "1001");
        let cmd = docker_ok(&["inspect", "--format", "{{json .Config.Cmd}}", image]);
        assert_eq!(cmd, "[\"node\",\"dist/index.js\"]");
        let entry = docker_ok(&["inspect", "--format", "{{json .Config.Entrypoint}}", image]);
        assert_eq!(entry, "null");
        let app = docker_ok(&["exec", &cid, "ls", "/app"]);
        let mut entries: Vec<&str> = app.lines().collect();
        entries.sort();
        assert_eq!(
            entries,
            vec!["service", "shared"],
            "/app holds shared and this service only"
        );
        let found = docker_ok(&[
            "exec",
            &cid,
            "sh",
            "-c",
            "grep -rl -e kodingcaravan/ /app --include=package.json | sort",
        ]);
        for other in all_services.iter().filter(|s| **s != service) {
            assert!(!found.contains(other), "{other} found in {image}: {found}");
            let grep = docker_out(&[
                "exec",
                &cid,
                "grep",
                "-rq",
                other,
                "/app/service/dist",
                "/app/shared/dist",
            ]);
            // The gateway routes to the others by URL, so only it may name them in code.
            if service != "api-gateway" {
                assert!(!grep.status.success(), "{image} mentions {other}");
            }
        }
        let pnpm = docker_out(&["exec", &cid, "sh", "-c", "command -v pnpm || ls /root/.cache/node/corepack/pnpm 2>/dev/null || find / -name 'pnpm*' -path '*bin*' 2>/dev/null | head -1"]);
        assert!(
            String::from_utf8_lossy(&pnpm.stdout).trim().is_empty(),
            "pnpm found in {image}: {}",
            String::from_utf8_lossy(&pnpm.stdout)
        );
        let label = docker_ok(&[
            "inspect",
            "--format",
            "{{index .Config.Labels \"com.kodingcaravan.images.key\"}}",
            image,
        ]);
        assert_eq!(label.len(), 64);
    });
    let _ = docker_out(&["rm", "-f", &cid]);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn builds_everything_once_then_exactly_what_changed() {
    let _guard = tests::docker_lock();
    let ex = Example::new("seq");
    let services = [
        "api-gateway",
        "course-service",
        "enrollment-service",
        "student-service",
    ];

    let first = ex.run_ok();
    assert_eq!(
        built(&first),
        services.to_vec(),
        "the first run builds every image"
    );

    let second = ex.run_ok();
    assert!(second.values().all(|(a, _)| a == "cached"), "{second:?}");
    for s in services {
        assert_eq!(first[s].1, second[s].1, "image ids are unchanged");
    }

    // A file .dockerignore excludes: nothing to build.
    ex.fx.write("README.md", "edited\n");
    ex.fx.write("services/student-service/debug.log", "noise\n");
    let third = ex.run_ok();
    assert!(built(&third).is_empty(), "{third:?}");

    // One service's source: exactly that image.
    let p = "services/student-service/src/index.ts";
    ex.fx.write(p, &format!("{}\n// edited\n", ex.fx.read(p)));
    let fourth = ex.run_ok();
    assert_eq!(built(&fourth), vec!["student-service"]);

    // The shared package: all of them.
    let p = "shared/src/logger.ts";
    ex.fx.write(p, &format!("{}\n// edited\n", ex.fx.read(p)));
    let fifth = ex.run_ok();
    assert_eq!(built(&fifth), services.to_vec());

    // An image removed from the engine: the plan says so, and that one is rebuilt.
    let image = format!("{}course-service", ex.prefix);
    let id = fifth["course-service"].1.clone();
    docker_ok(&["rmi", "-f", &id]);
    let (_, plan) = ex.images(&["--dry-run"]);
    assert_eq!(plan["engine_checked"], true, "{plan}");
    let planned = |plan: &serde_json::Value, s: &str| -> (String, String) {
        let i = image_of(plan, s);
        (
            i["action"].as_str().expect("action").to_string(),
            i["reasons"].to_string(),
        )
    };
    let (action, why) = planned(&plan, "course-service");
    assert_eq!(action, "build", "removed image planned `build`: {why}");
    assert!(why.contains("is gone from the engine"), "{why}");
    assert_eq!(planned(&plan, "student-service").0, "cached");
    let sixth = ex.run_ok();
    assert_eq!(built(&sixth), vec!["course-service"]);

    // A record whose image id names another image (another key label) is a miss, not retagged.
    let course_key = plan["images"]
        .as_array()
        .expect("images")
        .iter()
        .find(|i| i["service"] == "course-service")
        .and_then(|i| i["key"].as_str())
        .expect("key")
        .to_string();
    let store = cache::Store::open(&ex.fx.path(".images-cache")).expect("store");
    let mut record = store
        .get_record(&course_key)
        .expect("read")
        .expect("record");
    record.image_id = sixth["student-service"].1.clone();
    store.put_record(&record).expect("tamper");
    let (_, plan) = ex.images(&["--dry-run"]);
    let (action, why) = planned(&plan, "course-service");
    assert_eq!(action, "build", "wrong label is a miss: {why}");
    assert!(why.contains("carries the key label"), "{why}");
    let seventh = ex.run_ok();
    assert_eq!(built(&seventh), vec!["course-service"]);
    let label = docker_ok(&[
        "inspect",
        "--format",
        "{{index .Config.Labels \"com.kodingcaravan.images.key\"}}",
        &format!("{image}:latest"),
    ]);
    assert_eq!(label, course_key, "latest is not the impostor");

    for s in services {
        check_image(&format!("{}{s}:latest", ex.prefix), s, &services);
    }
    // The key tag names the same image as latest.
    let (_, plan) = ex.images(&["--dry-run"]);
    let key = plan["images"][1]["key"].as_str().expect("key").to_string();
    let by_key = docker_ok(&[
        "inspect",
        "--format",
        "{{.Id}}",
        &format!("{image}:key-{}", &key[..32]),
    ]);
    assert_eq!(
        by_key,
        docker_ok(&["inspect", "--format", "{{.Id}}", &format!("{image}:latest")])
    );
}

/// student-service's build script in `failing_builds_...`: the compile, then a file of its own in
/// `dist` saying what the script was given (the package's fields and lifecycle variables, the
/// `node_modules/.bin` directories on `PATH`, `INIT_CWD`), relative to the package so that the
/// host and the image can be compared.
const STAMP_JS: &str = r#"// What this build script was given, written into dist/meta (not compiled by tsc).
const fs = require("fs"), path = require("path");
const cwd = process.cwd();
const env = Object.entries(process.env)
  .filter(([k]) => /^npm_(package|lifecycle)_/.test(k))
  .sort(([a], [b]) => (a < b ? -1 : 1));
const bins = (process.env.PATH || "").split(":")
  .filter((d) => d.endsWith(path.join("node_modules", ".bin")))
  .map((d) => path.relative(cwd, d));
const stamp = {
  env: Object.fromEntries(env),
  bins,
  init_cwd: path.relative(cwd, process.env.INIT_CWD || "/"),
  node: process.env.NODE === process.execPath && process.env.npm_node_execpath === process.execPath,
};
fs.mkdirSync("dist/meta", { recursive: true });
fs.writeFileSync("dist/meta/build-env.json", JSON.stringify(stamp, null, 2) + "\n");
"#;

/// Rewrites a package.json of the fixture.
fn edit_manifest(fx: &Fixture, rel: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut pkg: serde_json::Value = serde_json::from_str(&fx.read(rel)).expect("package.json");
    edit(&mut pkg);
    fx.write(
        rel,
        &format!("{}\n", serde_json::to_string_pretty(&pkg).expect("json")),
    );
}

/// Every entry under `dir` on the host: relative path -> (kind, content digest).
fn host_tree(dir: &Path) -> BTreeMap<String, (char, String)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (char, String)>) {
        for e in std::fs::read_dir(dir).expect("read_dir") {
            let p = e.expect("entry").path();
            let rel = p
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            if p.is_dir() {
                out.insert(rel, ('d', String::new()));
                walk(root, &p, out);
            } else {
                let bytes = std::fs::read(&p).expect("read");
                out.insert(rel, ('f', blake3::hash(&bytes).to_hex().to_string()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The entries under `dir` (no leading `/`) of an image's tree, as [`host_tree`] gives them.
fn image_subtree(image: &str, dir: &str) -> BTreeMap<String, (char, String)> {
    let prefix = format!("{dir}/");
    tests::image_tree(image)
        .into_iter()
        .filter_map(|(p, e)| {
            p.strip_prefix(&prefix)
                .map(|rel| (rel.to_string(), (e.kind, e.digest)))
        })
        .collect()
}

/// One run with three broken or unusual services (`--keep-going`):
/// - enrollment-service does not compile: that image fails, the others build, nothing is recorded
///   for it, its log is kept;
/// - course-service has no `build` script: its image fails with an error saying so (`pnpm
///   --filter` would have built nothing and exited 0);
/// - student-service's build script does more than `tsc` (it writes a file of its own): the image
///   gets exactly the `dist` that pnpm makes on the host from the same context (`pnpm --filter
///   <package> build` in the context the engine hands Docker, the oracle), the variables pnpm gives
///   a script included; shared's `dist` likewise, without its declarations.
#[test]
fn failing_builds_fail_their_image_only_and_an_image_gets_what_its_build_script_makes() {
    let _guard = tests::docker_lock();
    let ex = Example::new("fail");
    let p = "services/enrollment-service/src/index.ts";
    ex.fx.write(
        p,
        &format!(
            "{}\nconst broken: number = \"not a number\";\n",
            ex.fx.read(p)
        ),
    );
    edit_manifest(&ex.fx, "services/course-service/package.json", |pkg| {
        pkg["scripts"]
            .as_object_mut()
            .expect("scripts")
            .remove("build");
    });
    ex.fx.write("services/student-service/stamp.js", STAMP_JS);
    edit_manifest(&ex.fx, "services/student-service/package.json", |pkg| {
        pkg["scripts"]["build"] = serde_json::json!("tsc -p tsconfig.json && node stamp.js");
    });

    let (out, json) = ex.images(&["--keep-going"]);
    assert!(!out.status.success(), "a failed build exits non-zero");
    let a = actions(&json);
    assert_eq!(a["enrollment-service"].0, "failed");
    assert_eq!(a["course-service"].0, "failed");
    assert_eq!(built(&a), vec!["api-gateway", "student-service"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("building enrollment-service failed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error TS2322"),
        "the log tail shows the compiler error: {stderr}"
    );
    assert!(
        stderr.contains("building course-service failed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: services/course-service/package.json has no \"build\" script")
            && stderr.contains("hint: add one to its \"scripts\""),
        "the log tail says the build script is missing: {stderr}"
    );
    // The whole logs are saved, and no record was written for the failed keys.
    let store = cache::Store::open(&ex.fx.path(".images-cache")).expect("store");
    for s in ["enrollment-service", "course-service"] {
        let key = image_of(&json, s)["key"].as_str().expect("key").to_string();
        assert!(store.get_record(&key).expect("read").is_none(), "{s}");
    }
    let logs: Vec<_> = std::fs::read_dir(ex.fx.path(".images-cache/logs"))
        .expect("logs")
        .collect();
    assert_eq!(logs.len(), 2);
    // Whole: from the first stage's FROM (which the error's last lines are far from) to the
    // error, as the message that points at them says.
    for s in ["enrollment-service", "course-service"] {
        let path = image_of(&json, s)["log"]
            .as_str()
            .unwrap_or_else(|| panic!("{s}'s log in {json:#}"))
            .to_string();
        assert!(stderr.contains(&format!("whole log: {path}")), "{stderr}");
        let log = std::fs::read_to_string(&path).expect("the kept log");
        assert!(
            log.lines().count() > 30
                && log.contains("node:18-alpine")
                && (log.contains("error TS2322") || log.contains("has no \"build\" script")),
            "{s}'s whole log, from its first step to its error:\n{log}"
        );
    }

    // The oracle: pnpm itself runs the scripts in the context Docker got.
    let analysis = tests::analyze_ok(ex.fx.root());
    let host = tempfile::tempdir().expect("tempdir");
    tests::materialize(ex.fx.root(), &analysis, "student-service", host.path());
    for args in [
        &["install", "--frozen-lockfile"][..],
        &["--filter", "@kodingcaravan/shared", "build"],
        &["--filter", "@kodingcaravan/student-service", "build"],
    ] {
        tests::run_ok(
            Command::new("pnpm")
                .args(args)
                .env("CI", "true")
                .current_dir(host.path()),
            &format!("pnpm {args:?} on the host (pnpm 8.15, as `scripts/test.sh` installs it)"),
        );
    }
    let image = format!("{}student-service:latest", ex.prefix);
    let want = host_tree(&host.path().join("services/student-service/dist"));
    assert!(
        want.contains_key("meta/build-env.json") && want.contains_key("index.js"),
        "{want:?}"
    );
    let got = image_subtree(&image, "app/service/dist");
    if got != want {
        // Say what the script saw in the image, against what it saw under pnpm.
        let seen = docker_out(&[
            "run",
            "--rm",
            "--entrypoint",
            "cat",
            &image,
            "/app/service/dist/meta/build-env.json",
        ]);
        panic!(
            "the image's dist differs from pnpm's:\n  image: {got:?}\n  pnpm:  {want:?}\nbuild-env.json in the image:\n{}\nunder pnpm:\n{}",
            String::from_utf8_lossy(&seen.stdout),
            std::fs::read_to_string(
                host.path()
                    .join("services/student-service/dist/meta/build-env.json")
            )
            .unwrap_or_default()
        );
    }
    let stamp: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            host.path()
                .join("services/student-service/dist/meta/build-env.json"),
        )
        .expect("stamp"),
    )
    .expect("json");
    assert_eq!(
        stamp["env"]["npm_package_name"], "@kodingcaravan/student-service",
        "{stamp}"
    );
    assert_eq!(stamp["env"]["npm_lifecycle_event"], "build", "{stamp}");
    assert_eq!(
        stamp["bins"],
        serde_json::json!(["node_modules/.bin", "../../node_modules/.bin"]),
        "{stamp}"
    );
    assert_eq!(stamp["init_cwd"], "../..", "{stamp}");
    assert_eq!(stamp["node"], true, "{stamp}");
    let shared: BTreeMap<_, _> = host_tree(&host.path().join("shared/dist"))
        .into_iter()
        .filter(|(p, _)| !p.ends_with(".d.ts"))
        .collect();
    assert!(shared.contains_key("index.js"), "{shared:?}");
    assert_eq!(image_subtree(&image, "app/shared/dist"), shared);

    // The next run builds only the broken ones again (and fails again).
    let (out, json) = ex.images(&["--keep-going"]);
    assert!(!out.status.success());
    let a = actions(&json);
    assert_eq!(a["enrollment-service"].0, "failed");
    assert_eq!(a["course-service"].0, "failed");
    assert!(built(&a).is_empty(), "{a:?}");
}

fn verify_cache(root: &Path) {
    let out = xtask(root, &["cache", "verify", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(out.status.success(), "cache verify: {report}");
    assert!(
        report["moved_aside"].as_array().expect("list").is_empty(),
        "{report}"
    );
}

#[test]
fn concurrent_runs_and_a_killed_run_leave_a_sound_cache() {
    let _guard = tests::docker_lock();
    let ex = Example::new("conc");
    let root = ex.fx.root().to_path_buf();
    let spawn = || {
        Command::new(tests::xtask_bin())
            .arg("--root")
            .arg(&root)
            .args(["images", "--json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let a = spawn();
    let b = spawn();
    let (a, b) = (
        a.wait_with_output().expect("a"),
        b.wait_with_output().expect("b"),
    );
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    verify_cache(&root);
    let after = ex.run_ok();
    assert!(after.values().all(|(a, _)| a == "cached"), "{after:?}");

    // A run killed with SIGKILL in the middle of a build.
    // A content no earlier run built (BuildKit's layer cache would make the builds instant).
    let p = "shared/src/health.ts";
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    ex.fx
        .write(p, &format!("{}\n// edited {unique}\n", ex.fx.read(p)));
    let mut victim = spawn();
    // Let its builds get going (all four rebuild after a shared edit), then kill it mid-build.
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        victim.try_wait().expect("wait").is_none(),
        "the run must still be building"
    );
    victim.kill().expect("SIGKILL");
    let _ = victim.wait();
    verify_cache(&root);
    let next = ex.run_ok();
    assert!(
        next.values().all(|(a, _)| a == "built" || a == "cached"),
        "{next:?}"
    );
    let again = ex.run_ok();
    assert!(again.values().all(|(a, _)| a == "cached"), "{again:?}");
    verify_cache(&root);
}

fn registry_addr() -> String {
    std::env::var("DOCKER_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".to_string())
}

fn manifest_digest(registry: &str, repo: &str, tag: &str) -> Option<String> {
    let r = cache::registry::Registry::parse(registry).expect("registry");
    r.head_manifest(repo, tag).expect("HEAD manifest")
}

#[test]
fn a_registry_shares_the_cache_between_machines() {
    let _guard = tests::docker_lock();
    let ex = Example::new("reg");
    let ns = format!("kct{}", std::process::id());
    let cache_registry = format!("{}/{ns}", registry_addr());
    let services = [
        "api-gateway",
        "course-service",
        "enrollment-service",
        "student-service",
    ];

    // Machine A builds everything and pushes each image under its key tag.
    let (out, json) = ex.images(&["--cache-registry", &cache_registry]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let a = actions(&json);
    assert_eq!(built(&a), services.to_vec());
    for i in json["images"].as_array().expect("images") {
        let pushed = i["registry"].to_string();
        assert!(pushed.contains("pushed"), "{i}");
    }
    let key_of = |json: &serde_json::Value, s: &str| -> String {
        image_of(json, s)["key"].as_str().expect("key").to_string()
    };

    // Machine B: a fresh cache directory and no image in the engine: everything is pulled.
    remove_images_ok(&ex.prefix);
    let b_cache = ex.fx.path("cache-b");
    let ci = tempfile::tempdir().expect("tempdir");
    let step_summary = ci.path().join("summary.md");
    let (out, json) = ex.images_env(
        &[
            "--cache-dir",
            b_cache.to_str().expect("utf8"),
            "--cache-registry",
            &cache_registry,
        ],
        &[("GITHUB_STEP_SUMMARY", &step_summary)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b = actions(&json);
    assert!(built(&b).is_empty(), "machine B builds nothing: {b:?}");
    // Each says where it was pulled from, in the JSON and in the GitHub job summary.
    let md = std::fs::read_to_string(&step_summary).expect("the job summary");
    assert!(md.contains("0 built, 4 cached (4 pulled)"), "{md}");
    for i in json["images"].as_array().expect("images") {
        let from = i["pulled_from"].as_str().unwrap_or_default();
        assert!(from.starts_with(&cache_registry), "{i}");
        let s = i["service"].as_str().expect("service");
        assert!(
            md.lines()
                .any(|l| l.starts_with(&format!("| {s} | ")) && l.contains("| build | pulled |")),
            "{s}: {md}"
        );
    }
    for s in services {
        assert_eq!(b[s].0, "cached");
        let image = format!("{}{s}:latest", ex.prefix);
        let label = docker_ok(&[
            "inspect",
            "--format",
            "{{index .Config.Labels \"com.kodingcaravan.images.key\"}}",
            &image,
        ]);
        assert_eq!(label, key_of(&json, s), "the pulled image carries its key");
    }
    // And B's own cache now knows them: a second run is a local hit.
    let (_, json2) = ex.images(&["--cache-dir", b_cache.to_str().expect("utf8")]);
    assert!(actions(&json2).values().all(|(a, _)| a == "cached"));

    // Publishing a release tag of keys the registry holds copies manifests (no layer is pushed),
    // but only after machine C, which has no image at all, pulled each entry by its digest and
    // verified it: nothing is published unverified.
    remove_images_ok(&ex.prefix);
    let c_cache = ex.fx.path("cache-c");
    let (out, json) = ex.images(&[
        "--cache-dir",
        c_cache.to_str().expect("utf8"),
        "--cache-registry",
        &cache_registry,
        "--push",
        "--tag",
        "v1.0.0",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = actions(&json);
    assert!(built(&c).is_empty(), "{c:?}");
    for i in json["images"].as_array().expect("images") {
        let registry = i["registry"].to_string();
        assert!(registry.contains("pulled from"), "{i}");
        assert!(registry.contains("manifest copied"), "{i}");
        assert_eq!(i["verify"]["ok"], true, "{i}");
    }
    for s in services {
        let repo = format!("{}{s}", ex.prefix);
        let key = key_of(&json, s);
        let by_key = manifest_digest(&cache_registry, &repo, &format!("key-{}", &key[..32]));
        let release = manifest_digest(&cache_registry, &repo, "v1.0.0");
        assert!(by_key.is_some());
        assert_eq!(
            by_key, release,
            "v1.0.0 is the same manifest as the key tag"
        );
    }

    // A key tag holding an image with another key label is refused, and built here instead.
    let victim = format!("{}student-service", ex.prefix);
    let victim_key = key_of(&json, "student-service");
    let (out, _) = ex.images(&[
        "--cache-dir",
        c_cache.to_str().expect("utf8"),
        "--cache-registry",
        &cache_registry,
        "course-service",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let impostor = format!("{}/{}:key-{}", cache_registry, victim, &victim_key[..32]);
    docker_ok(&[
        "tag",
        &format!("{}course-service:latest", ex.prefix),
        &impostor,
    ]);
    docker_ok(&["push", &impostor]);
    docker_ok(&["rmi", &impostor]);
    let d_cache = ex.fx.path("cache-d");
    let (out, json) = ex.images(&[
        "--cache-dir",
        d_cache.to_str().expect("utf8"),
        "--cache-registry",
        &cache_registry,
        "student-service",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("refused"), "{stderr}");
    let d = actions(&json);
    assert_eq!(d["student-service"].0, "built", "{d:?}");
    let label = docker_ok(&[
        "inspect",
        "--format",
        "{{index .Config.Labels \"com.kodingcaravan.images.key\"}}",
        &format!("{victim}:latest"),
    ]);
    assert_eq!(label, victim_key);
}

/// A fixture where `app` builds FROM the image of `base`, with trivial Dockerfiles.
fn from_chain(prefix: &str) -> Fixture {
    let p = tests::project()
        .shared()
        .service("base", &[])
        .service("app", &[])
        .file("images.toml", &format!("[images]\nprefix = \"{prefix}\"\n"))
        .file(
            "services/base/Dockerfile",
            "FROM node:18-alpine\nCOPY services/base/src/ /base/\nRUN echo base > /base/marker\n",
        )
        .file(
            "services/app/Dockerfile",
            &format!(
                "FROM {prefix}base:latest\nCOPY services/app/src/ /app/\nRUN cat /base/marker\n"
            ),
        )
        .build();
    p
}

#[test]
fn an_image_built_from_another_waits_for_it_and_follows_its_key() {
    let _guard = tests::docker_lock();
    let prefix = format!("kct-{}-from-", std::process::id());
    let fx = from_chain(&prefix);
    let cleanup = Example {
        fx: tests::project().build(),
        prefix: prefix.clone(),
    };
    let g = tests::xtask_json(fx.root(), &["graph", "--json"]);
    assert!(
        g["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .any(|e| e["from"] == "@fx/app" && e["to"] == "@fx/base" && e["kind"] == "image"),
        "{g}"
    );
    // The fixture's trivial Dockerfiles are not seed-style images: no verification gate.
    let run = |args: &[&str]| {
        let mut all = vec!["images", "--json", "--no-verify"];
        all.extend_from_slice(args);
        let out = xtask(fx.root(), &all);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        (out, actions(&json))
    };
    let (out, first) = run(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(built(&first), vec!["app", "base"]);
    // Editing base changes app's key too (app is built FROM it), and rebuilds both in order.
    fx.write("services/base/src/index.ts", "console.log('base 2');\n");
    let (out, second) = run(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(built(&second), vec!["app", "base"]);
    // Editing app alone rebuilds app alone.
    fx.write("services/app/src/index.ts", "console.log('app 2');\n");
    let (_, third) = run(&[]);
    assert_eq!(built(&third), vec!["app"]);
    // A failed base: app is skipped, not built on a stale base; the exit code is non-zero.
    fx.write(
        "services/base/Dockerfile",
        "FROM node:18-alpine\nCOPY services/base/src/ /base/\nRUN exit 3\n",
    );
    let (out, fourth) = run(&["--keep-going"]);
    assert!(!out.status.success());
    assert_eq!(fourth["base"].0, "failed");
    assert_eq!(fourth["app"].0, "skipped");
    drop(cleanup);
}

#[test]
fn ctrl_c_stops_the_builds_records_nothing_and_exits_130() {
    let _guard = tests::docker_lock();
    let prefix = format!("kct-{}-int-", std::process::id());
    let fx = from_chain(&prefix);
    let cleanup = Example {
        fx: tests::project().build(),
        prefix: prefix.clone(),
    };
    fx.write(
        "services/base/Dockerfile",
        "FROM node:18-alpine\nCOPY services/base/src/ /base/\nRUN sleep 30 && echo base > /base/marker\n",
    );
    let child = Command::new(tests::xtask_bin())
        .arg("--root")
        .arg(fx.root())
        .args(["images", "--json", "--no-verify"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // Let the build start, then interrupt it as a terminal's Ctrl-C would.
    std::thread::sleep(Duration::from_secs(5));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = cache::Store::open(&fx.path(".images-cache")).expect("store");
    assert_eq!(
        store.stats().expect("stats").records,
        0,
        "nothing unfinished is recorded"
    );
    verify_cache(fx.root());
    drop(cleanup);
}
