//! A second, fresh Docker engine for a test: its own `dockerd` with its own data root, exec root,
//! pidfile and unix socket in a temp dir, and a bridge of its own with no route out (so its
//! builds cannot download anything), stopped and removed on drop. What a new CI runner is: an
//! empty image store and an empty BuildKit cache.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct FreshEngine {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Its bridge interface (made here, deleted on drop).
    bridge: Option<String>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A bridge of its own for the second engine (BuildKit's `RUN` needs one; Docker's default
/// `docker0` belongs to the first), with no route out: no masquerading, no forwarding rules.
fn make_bridge() -> String {
    let n = std::process::id() % 100_000;
    let name = format!("kcd{n}");
    let _ = ip(&["link", "del", &name]);
    let subnet = format!("10.213.{}.1/24", n % 250);
    for args in [
        vec!["link", "add", name.as_str(), "type", "bridge"],
        vec!["addr", "add", subnet.as_str(), "dev", name.as_str()],
        vec!["link", "set", name.as_str(), "up"],
    ] {
        if let Err(e) = ip(&args) {
            let _ = ip(&["link", "del", &name]);
            panic!("cannot make a bridge for the second dockerd (it needs root): {e}");
        }
    }
    name
}

impl FreshEngine {
    /// Starts a dockerd (the one on PATH) and waits until it answers; panics with its log
    /// otherwise.
    pub fn start() -> FreshEngine {
        // A short path: a unix socket's path is limited to 107 bytes.
        let dir = tempfile::Builder::new()
            .prefix("kcd-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let p = dir.path();
        let log = std::fs::File::create(p.join("dockerd.log")).expect("log file");
        let err = log.try_clone().expect("log file");
        let bridge = make_bridge();
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(p.join("data"))
            .arg("--exec-root")
            .arg(p.join("exec"))
            .arg("--pidfile")
            .arg(p.join("dockerd.pid"))
            .arg("--host")
            .arg(format!("unix://{}", p.join("sock").display()))
            .arg(format!("--bridge={bridge}"))
            .args([
                "--iptables=false",
                "--ip-masq=false",
                "--storage-driver=overlay2",
            ])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) => {
                let _ = ip(&["link", "del", &bridge]);
                panic!("cannot start a second dockerd: {e}");
            }
        };
        let mut e = FreshEngine {
            dir,
            child: Some(child),
            bridge: Some(bridge),
        };
        let t = Instant::now();
        loop {
            let out = e
                .docker()
                .args(["version", "--format", "{{.Server.Version}}"])
                .output();
            if out.is_ok_and(|o| o.status.success()) {
                return e;
            }
            if let Some(c) = e.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("the second dockerd exited ({status}):\n{}", e.log());
                }
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "the second dockerd did not answer within 60 s:\n{}",
                e.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `DOCKER_HOST` for it.
    pub fn host(&self) -> String {
        format!("unix://{}", self.dir.path().join("sock").display())
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A `docker` command talking to it.
    pub fn docker(&self) -> Command {
        let mut c = crate::docker();
        c.env("DOCKER_HOST", self.host())
            .env_remove("DOCKER_CONTEXT");
        c
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// Copies an image of the shared engine into it: `docker save` piped into `docker load`.
    pub fn load_from_main(&self, image: &str) {
        let mut save = crate::docker()
            .args(["save", image])
            .stdout(Stdio::piped())
            .spawn()
            .expect("docker save");
        let stdout = save.stdout.take().expect("save's stdout");
        let load = self
            .docker()
            .arg("load")
            .stdin(Stdio::from(stdout))
            .output()
            .expect("docker load");
        let saved = save.wait().expect("docker save");
        assert!(
            saved.success() && load.status.success(),
            "copying {image} into the fresh engine failed: {}",
            String::from_utf8_lossy(&load.stderr)
        );
    }

    /// The paths under it, for callers that keep their own files beside the engine's.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

impl Drop for FreshEngine {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM: dockerd stops its containers and unmounts its layers.
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(30) {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if !matches!(c.try_wait(), Ok(Some(_))) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if let Some(b) = self.bridge.take() {
            let _ = ip(&["link", "del", &b]);
        }
    }
}
