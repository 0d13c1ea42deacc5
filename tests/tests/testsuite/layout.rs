//! The example's Dockerfile layout and compose file (issue 15): what an edit rebuilds, read from
//! BuildKit's own progress log and build-cache records; shared compiled once per run; and
//! `docker compose up --scale` behind the gateway. Docker must be reachable (`scripts/test.sh`
//! starts one); the Docker tests fail loudly otherwise.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use engine::execute::Backend;
use engine::run::{Event, Outcome};
use tests::{copy_example, docker, docker_ok, remove_images, Fixture};

const SERVICES: [&str; 4] = [
    "api-gateway",
    "course-service",
    "enrollment-service",
    "student-service",
];

/// The compile of shared, as its `RUN` reads in the template (and as BuildKit describes the
/// cache record it leaves: `mount / from exec /bin/sh -c <this>...`).
const SHARED_COMPILE: &str = "run-package-script shared build";

fn analysis(fx: &Fixture) -> engine::pipeline::Analysis {
    let mut opts = engine::pipeline::Options::new(fx.root());
    opts.cache_dir = Some(fx.path(".images-cache"));
    engine::pipeline::analyze(&opts).unwrap_or_else(|e| panic!("analyze failed: {e}"))
}

#[test]
fn the_shared_build_stage_is_the_one_warmed_up() {
    let ex = copy_example();
    let a = analysis(&ex);
    let all: Vec<usize> = (0..a.ws.services.len()).collect();
    let w = engine::warmup::plan(&a, &all).expect("a stage to warm up");
    assert_eq!(w.stage, "shared-builder");
    assert_eq!(w.images.len(), 4, "{w:?}");
    assert_eq!(w.images[0], w.leader);
    // One image: nothing to share.
    assert_eq!(engine::warmup::plan(&a, &all[..1]), None);

    // A service whose shared stage differs (another compile command) is not counted in.
    let p = "services/course-service/Dockerfile";
    let df = ex.read(p);
    assert!(df.contains(SHARED_COMPILE));
    ex.write(
        p,
        &df.replace(SHARED_COMPILE, "run-package-script shared build:fast"),
    );
    let a = analysis(&ex);
    let w = engine::warmup::plan(&a, &all).expect("a stage to warm up");
    let names: Vec<&str> = w
        .images
        .iter()
        .map(|s| a.ws.services[*s].name.as_str())
        .collect();
    assert_eq!(w.stage, "shared-builder");
    assert_eq!(
        names,
        ["api-gateway", "enrollment-service", "student-service"]
    );
}

/// A copy of the example whose images get a prefix of their own; removed on drop.
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

    /// Builds `services` (all when empty; `--force`) with the engine's run and Docker,
    /// `jobs` at a time, verification off: each image's outcome and BuildKit's progress log.
    fn build(&self, services: &[&str], jobs: usize) -> BTreeMap<String, (bool, String)> {
        let mut opts = engine::pipeline::Options::new(self.fx.root());
        opts.cache_dir = Some(self.fx.path(".images-cache"));
        opts.services = services.iter().map(|s| s.to_string()).collect();
        let a = engine::pipeline::analyze(&opts).unwrap_or_else(|e| panic!("analyze failed: {e}"));
        let docker = engine::execute::docker::Docker::detect().expect("a docker client");
        let logs: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());
        let run = engine::run::RunOptions {
            jobs,
            force: true,
            verify: false,
            ..engine::run::RunOptions::default()
        };
        let summary = engine::run::run(&a, &run, Backend::docker(&docker), &|e| {
            if let Event::Line { service, line } = e {
                let mut l = logs.lock().unwrap_or_else(|p| p.into_inner());
                let log = l.entry(service).or_default();
                log.push_str(&line);
                log.push('\n');
            }
        })
        .expect("run");
        let mut logs = logs.into_inner().unwrap_or_else(|p| p.into_inner());
        summary
            .images
            .into_iter()
            .map(|r| {
                let log = logs.remove(&r.service).unwrap_or_default();
                assert!(
                    r.outcome != Outcome::Failed,
                    "{} failed: {:?}\n{log}",
                    r.service,
                    r.error
                );
                (r.service, (r.outcome == Outcome::Built, log))
            })
            .collect()
    }

    fn append(&self, rel: &str, nonce: &str) {
        let text = self.fx.read(rel);
        self.fx.write(rel, &format!("{text}\n// edited {nonce}\n"));
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        remove_images(&self.prefix);
    }
}

/// What BuildKit's plain progress log says of each step: `Some(true)` when it was `CACHED`,
/// `Some(false)` when it ran (`DONE`), by the step's text (`[stage n/m] INSTRUCTION`).
pub(crate) fn steps(log: &str) -> Vec<(String, Option<bool>)> {
    let mut names: BTreeMap<u64, String> = BTreeMap::new();
    let mut state: BTreeMap<u64, bool> = BTreeMap::new();
    for line in log.lines() {
        let Some(rest) = line.strip_prefix('#') else {
            continue;
        };
        let Some((n, rest)) = rest.split_once(' ') else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        if rest.starts_with('[') {
            names.entry(n).or_insert_with(|| rest.to_string());
        } else if rest == "CACHED" {
            state.insert(n, true);
        } else if rest.starts_with("DONE") {
            state.entry(n).or_insert(false);
        }
    }
    names
        .into_iter()
        .map(|(n, name)| (name, state.get(&n).copied()))
        .collect()
}

/// The state of the one step whose text holds `stage` and `what`.
pub(crate) fn step(log: &str, stage: &str, what: &str) -> Option<bool> {
    let found: Vec<(String, Option<bool>)> = steps(log)
        .into_iter()
        .filter(|(name, _)| name.starts_with(&format!("[{stage} ")) && name.contains(what))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one step `[{stage} ..] ...{what}...` in the log:\n{log}"
    );
    found[0].1
}

/// The ids of BuildKit's build-cache records that a `RUN` holding `what` left (a record per
/// execution: `docker system df -v`, Docker's own accounting).
fn cache_records(what: &str) -> BTreeSet<String> {
    let json = docker_ok(&["system", "df", "-v", "--format", "{{json .BuildCache}}"]);
    let records: serde_json::Value = serde_json::from_str(&json).expect("build cache JSON");
    records
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| {
            r["Description"]
                .as_str()
                .is_some_and(|d| d.contains("exec") && d.contains(what))
        })
        .filter_map(|r| r["ID"].as_str().map(String::from))
        .collect()
}

#[test]
fn a_source_edit_reuses_install_and_shared_steps_and_shared_compiles_once() {
    let _guard = tests::docker_lock();
    let ex = Example::new("layout");
    let nonce = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let first = ex.build(&[], 2);
    assert_eq!(first.len(), 4);

    // A service's source: its compile and the final COPY run; the dependency install, shared's
    // compile and the runtime's production install come from the cache.
    ex.append("services/student-service/src/students.ts", &nonce);
    let edit = ex.build(&["student-service"], 2);
    let (built, log) = &edit["student-service"];
    assert!(built);
    assert_eq!(
        step(log, "deps", "RUN pnpm install --frozen-lockfile"),
        Some(true),
        "the dependency install is reused:\n{log}"
    );
    assert_eq!(step(log, "shared-builder", SHARED_COMPILE), Some(true));
    assert_eq!(step(log, "runtime", "npm install --omit=dev"), Some(true));
    assert_eq!(
        step(
            log,
            "builder",
            "run-package-script services/student-service build"
        ),
        Some(false),
        "the service's compile runs:\n{log}"
    );
    assert_eq!(
        step(log, "runtime", "COPY --from=builder"),
        Some(false),
        "the final COPY runs:\n{log}"
    );
    // Nothing but the compile, the COPY of the sources before it and the final COPY ran.
    let ran: Vec<String> = steps(log)
        .into_iter()
        .filter(|(_, s)| *s == Some(false))
        .map(|(n, _)| n)
        .filter(|n| !n.contains(" FROM ") && !n.starts_with("[internal]"))
        .collect();
    assert_eq!(ran.len(), 3, "{ran:#?}");

    // shared: one compile for the four images of the run (BuildKit's records), served to each
    // build from the cache; each service compiles against it, nothing is installed again.
    let before = cache_records(SHARED_COMPILE);
    ex.append("shared/src/logger.ts", &nonce);
    let all = ex.build(&[], 2);
    let after = cache_records(SHARED_COMPILE);
    let new: Vec<&String> = after.difference(&before).collect();
    assert_eq!(new.len(), 1, "shared compiled once: {new:?}");
    for s in SERVICES {
        let (built, log) = &all[s];
        assert!(built, "{s} rebuilt");
        assert_eq!(
            step(log, "shared-builder", SHARED_COMPILE),
            Some(true),
            "{s}:\n{log}"
        );
        assert_eq!(step(log, "deps", "RUN pnpm install"), Some(true), "{s}");
        assert_eq!(
            step(log, "runtime", "npm install --omit=dev"),
            Some(true),
            "{s}"
        );
        let compile = format!("run-package-script services/{s} build");
        assert_eq!(step(log, "builder", &compile), Some(false), "{s}");
    }
}

// ---------------------------------------------------------------------------------------------
// docker compose up --scale

/// How compose runs here: the plugin of the Docker client, else `docker-compose` (v1).
fn compose_cmd() -> Command {
    let client = std::env::var("DOCKER").unwrap_or_else(|_| "docker".into());
    let plugin = Command::new(&client)
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if plugin {
        let mut c = Command::new(client);
        c.arg("compose");
        c
    } else {
        Command::new("docker-compose")
    }
}

/// A compose project of the example, brought down (`down -v`) when dropped.
struct Stack {
    dir: PathBuf,
    project: String,
    port: u16,
}

impl Stack {
    fn compose(&self, args: &[&str]) -> Output {
        compose_cmd()
            .arg("-p")
            .arg(&self.project)
            .arg("-f")
            .arg(self.dir.join("docker-compose.yml"))
            .arg("-f")
            .arg(self.dir.join("health-every-2s.yml"))
            .args(args)
            .env("GATEWAY_PORTS", format!("127.0.0.1:{}", self.port))
            .current_dir(&self.dir)
            .output()
            .expect("failed to run compose (apt-get install docker-compose, or the plugin)")
    }

    fn compose_ok(&self, args: &[&str]) -> String {
        let out = self.compose(args);
        assert!(
            out.status.success(),
            "compose {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-v", "--remove-orphans"]);
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn http(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

fn health(id: &str) -> String {
    docker_ok(&["inspect", "--format", "{{.State.Health.Status}}", id])
}

#[test]
fn compose_scales_a_service_to_three_healthy_replicas_behind_the_gateway() {
    let _guard = tests::docker_lock();
    let ex = Example::new("scale");
    let out = tests::xtask(ex.fx.root(), &["images"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The example's compose file, naming this copy's images; the health checks of the images
    // run every 2 s instead of 30 s (the checks themselves are the images').
    let file = ex.fx.path("docker-compose.yml");
    let text = std::fs::read_to_string(&file).expect("compose file");
    assert!(text.contains("image: kodingcaravan-"));
    std::fs::write(
        &file,
        text.replace("image: kodingcaravan-", &format!("image: {}", ex.prefix)),
    )
    .expect("write");
    let fast: String = std::iter::once("services:\n".to_string())
        .chain(
            SERVICES
                .iter()
                .map(|s| format!("  {s}:\n    healthcheck:\n      interval: 2s\n")),
        )
        .collect();
    ex.fx.write("health-every-2s.yml", &fast);
    let stack = Stack {
        dir: ex.fx.root().to_path_buf(),
        project: format!("kct{}scale", std::process::id()),
        port: free_port(),
    };

    stack.compose_ok(&["up", "-d", "--scale", "student-service=3"]);
    let ids: Vec<String> = stack
        .compose_ok(&["ps", "-q", "student-service"])
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(ids.len(), 3, "three replicas: {ids:?}");
    let gateway = stack.compose_ok(&["ps", "-q", "api-gateway"]);
    let deadline = Instant::now() + Duration::from_secs(90);
    for id in ids.iter().chain(std::iter::once(&gateway)) {
        while health(id) != "healthy" {
            assert!(
                Instant::now() < deadline,
                "{id} is `{}`; logs:\n{}",
                health(id),
                String::from_utf8_lossy(
                    &docker().args(["logs", id]).output().expect("logs").stderr
                )
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    let (status, body) = http(stack.port, "GET", "/health/upstreams").expect("the gateway answers");
    assert_eq!(status, 200, "{body}");

    // Each replica gets a student only it knows; the gateway must bring each one back.
    let mut markers = BTreeSet::new();
    for (i, id) in ids.iter().enumerate() {
        let name = format!("replica {i} of {}", stack.project);
        let script = format!(
            "const r=require('http').request({{host:'127.0.0.1',port:3001,path:'/students',method:'POST',headers:{{'content-type':'application/json'}}}},(s)=>{{s.resume();s.on('end',()=>process.exit(s.statusCode===201?0:1))}});r.end(JSON.stringify({{name:{name:?},email:'replica{i}@example.com'}}))"
        );
        docker_ok(&["exec", id, "node", "-e", &script]);
        markers.insert(name);
    }
    let mut seen = BTreeSet::new();
    for _ in 0..60 {
        let (status, body) = http(stack.port, "GET", "/students").expect("the gateway answers");
        assert_eq!(status, 200, "{body}");
        for m in &markers {
            if body.contains(m.as_str()) {
                seen.insert(m.clone());
            }
        }
        if seen == markers {
            break;
        }
    }
    assert_eq!(seen, markers, "every replica answers through the gateway");
    drop(stack);
    let left = docker_ok(&[
        "ps",
        "-a",
        "-q",
        "--filter",
        &format!(
            "label=com.docker.compose.project=kct{}scale",
            std::process::id()
        ),
    ]);
    assert!(left.is_empty(), "down removed the containers: {left}");
}
