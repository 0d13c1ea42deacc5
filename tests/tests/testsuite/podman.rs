//! Podman as the engine, through its Docker-compatible API (`podman system service`, then
//! `DOCKER_HOST=unix://…`): an image builds, is shared through the registry cache (pushed, then
//! pulled into a checkout that never built it) and passes `verify`, all by Podman. The service is
//! started here with its own configuration; `scripts/test.sh` installs Debian's `podman`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tests::{copy_tree, docker, repo_root, xtask_bin};

/// A `podman system service` of this test, on a socket in a temp dir; stopped when dropped.
struct PodmanService {
    child: Child,
    dir: tempfile::TempDir,
}

impl PodmanService {
    fn start(registry: &str) -> PodmanService {
        let version = Command::new("podman").arg("--version").output();
        assert!(
            version.as_ref().is_ok_and(|o| o.status.success()),
            "the Podman tests need `podman` (Debian's package; scripts/test.sh installs it): {version:?}"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        // Podman raises each container's open-files and processes limits to its own defaults;
        // where the hard limits are lower and CAP_SYS_RESOURCE is not held (this sandbox), runc
        // cannot, and every `run` fails. Limits under the current hard ones are always allowed.
        std::fs::write(
            dir.path().join("containers.conf"),
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n",
        )
        .expect("write containers.conf");
        // The loopback registry speaks plain HTTP: Podman must be told, as dockerd is by default.
        std::fs::write(
            dir.path().join("registries.conf"),
            format!("[[registry]]\nlocation = \"{registry}\"\ninsecure = true\n"),
        )
        .expect("write registries.conf");
        let socket = dir.path().join("podman.sock");
        let child = Command::new("podman")
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .env("CONTAINERS_CONF", dir.path().join("containers.conf"))
            .env(
                "CONTAINERS_REGISTRIES_CONF",
                dir.path().join("registries.conf"),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("service.log")).expect("log"))
            .spawn()
            .expect("start podman system service");
        let service = PodmanService { child, dir };
        let start = Instant::now();
        while !service.docker(&["version"]).status.success() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "podman system service did not answer on {}: {}",
                socket.display(),
                std::fs::read_to_string(service.dir.path().join("service.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        service.load_base();
        service
    }

    fn host(&self) -> String {
        format!("unix://{}", self.dir.path().join("podman.sock").display())
    }

    /// `docker ARGS` against Podman.
    fn docker(&self, args: &[&str]) -> std::process::Output {
        docker()
            .args(args)
            .env("DOCKER_HOST", self.host())
            .output()
            .expect("run docker")
    }

    /// The `node:18-alpine` stand-in, copied from the Docker engine into Podman's storage
    /// unless Podman has the same image already.
    fn load_base(&self) {
        let id = |o: std::process::Output| String::from_utf8_lossy(&o.stdout).trim().to_string();
        let want = id(docker()
            .args(["image", "inspect", "--format", "{{.Id}}", "node:18-alpine"])
            .output()
            .expect("docker inspect"));
        assert!(
            !want.is_empty(),
            "the Docker engine has no node:18-alpine stand-in"
        );
        let have = id(self.docker(&["image", "inspect", "--format", "{{.Id}}", "node:18-alpine"]));
        if have == want {
            return;
        }
        let mut save = docker()
            .args(["save", "node:18-alpine"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("docker save");
        let stdout = save.stdout.take().expect("save stdout");
        let load = docker()
            .args(["load"])
            .env("DOCKER_HOST", self.host())
            .stdin(Stdio::from(stdout))
            .output()
            .expect("docker load into podman");
        assert!(save.wait().expect("wait save").success());
        assert!(
            load.status.success(),
            "{}",
            String::from_utf8_lossy(&load.stderr)
        );
    }
}

impl Drop for PodmanService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `xtask ARGS --json` on `root` with the engine at `host`; the images document.
fn images(root: &Path, host: &str, cache: &Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(xtask_bin())
        .arg("--root")
        .arg(root)
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .arg("--json")
        .env("DOCKER_HOST", host)
        .output()
        .expect("run xtask");
    assert!(
        out.status.success(),
        "xtask {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// A checkout of the verify fixture's passing service, images named with `prefix`.
fn checkout(prefix: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("repo");
    let fixture = repo_root().join("tests/fixtures/verify");
    for f in ["package.json", "pnpm-workspace.yaml"] {
        std::fs::create_dir_all(&root).expect("mkdir");
        std::fs::copy(fixture.join(f), root.join(f)).expect("copy");
    }
    copy_tree(&fixture.join("shared"), &root.join("shared"));
    copy_tree(&fixture.join("services/good"), &root.join("services/good"));
    std::fs::write(
        root.join("images.toml"),
        format!("[images]\nprefix = \"{prefix}\"\n"),
    )
    .expect("images.toml");
    (dir, root)
}

#[test]
fn podman_builds_shares_through_the_registry_and_verifies() {
    let _guard = tests::docker_lock();
    tests::require_docker();
    let registry = std::env::var("DOCKER_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into());
    let podman = PodmanService::start(&registry);
    let prefix = format!("kcpod{}-", std::process::id());
    let cache_registry = format!("{registry}/{}", prefix.trim_end_matches('-'));
    let image = format!("{prefix}good");

    // Build with Podman, pushing the key to the registry.
    let (_a, root) = checkout(&prefix);
    let cache = root.join(".images-cache");
    let built = images(
        &root,
        &podman.host(),
        &cache,
        &["images", "--cache-registry", &cache_registry],
    );
    assert_eq!(built["images"][0]["action"], "built", "{built}");
    let id = built["images"][0]["image_id"]
        .as_str()
        .expect("image_id")
        .to_string();
    // The image is Podman's, not the Docker engine's.
    assert!(podman
        .docker(&["image", "inspect", &image])
        .status
        .success());
    assert!(!docker()
        .args(["image", "inspect", &image])
        .output()
        .expect("docker")
        .status
        .success());
    // Unchanged: cached.
    let again = images(&root, &podman.host(), &cache, &["images"]);
    assert_eq!(again["images"][0]["action"], "cached", "{again}");

    // Another checkout with an empty cache, after the image is gone from Podman: pulled.
    let rm = podman.docker(&["rmi", "-f", &id]);
    assert!(
        rm.status.success(),
        "{}",
        String::from_utf8_lossy(&rm.stderr)
    );
    let (_b, other) = checkout(&prefix);
    let pulled = images(
        &other,
        &podman.host(),
        &other.join(".images-cache"),
        &["images", "--cache-registry", &cache_registry],
    );
    assert_eq!(pulled["images"][0]["action"], "cached", "{pulled}");
    assert!(
        pulled["images"][0]["registry"]
            .to_string()
            .contains("pulled from"),
        "{pulled}"
    );

    // Every rule of verify holds, read from Podman.
    let verified = images(
        &other,
        &podman.host(),
        &other.join(".images-cache"),
        &["verify"],
    );
    assert_eq!(verified["ok"], true, "{verified}");

    // Leave Podman's storage as it was: every tag of this test goes.
    let list = podman.docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    let tags: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|l| l.contains(&prefix))
        .map(str::to_string)
        .collect();
    if !tags.is_empty() {
        let mut args = vec!["rmi", "-f"];
        args.extend(tags.iter().map(String::as_str));
        let _ = podman.docker(&args);
    }
}
