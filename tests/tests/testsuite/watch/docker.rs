//! Tests of `watch` with real Docker and Compose: a change during a real build ends with an
//! image of the last content; the CLI rebuilds on save, brings the compose service up with the new
//! image, builds nothing on an identical save, and exits cleanly on SIGINT.

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use engine::execute::{Backend, Verifier, KEY_LABEL};
use engine::verify::{Check, Report, Rule, Subject, Verified};
use engine::watch::{BuildResult, Event, Watcher};
use tests::{docker, docker_ok, project, remove_images, Fixture};

use super::{describe, spawn, started};

/// A small fixture whose images get a prefix of their own, removed on drop (with any compose
/// containers).
struct DockerFixture {
    fx: Fixture,
    prefix: String,
}

impl DockerFixture {
    fn new(tag: &str, extra_step: &str) -> DockerFixture {
        tests::require_docker();
        let prefix = format!("kcw-{}-{tag}-", std::process::id());
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dockerfile = |s: &str| {
            format!("FROM node:18-alpine\nWORKDIR /app\nCOPY services/{s}/ /app/\n{extra_step}CMD [\"node\", \"-e\", \"setInterval(() => {{}}, 1000)\"]\n")
        };
        let fx = project()
            .service("a", &[])
            .service("b", &[])
            .file("services/a/Dockerfile", &dockerfile("a"))
            .file("services/b/Dockerfile", &dockerfile("b"))
            .file("images.toml", &format!("[images]\nprefix = \"{prefix}\"\n"))
            // Sources of their own, so that no layer of an earlier run is reused: a build here
            // really runs every step.
            .file("services/a/src/index.ts", &format!("// {prefix}{nonce}\n"))
            .file("services/b/src/index.ts", &format!("// {prefix}{nonce}\n"))
            .file(
                "compose.yml",
                &format!("services:\n  a:\n    image: {prefix}a:latest\n  b:\n    image: {prefix}b:latest\n"),
            )
            .build();
        DockerFixture { fx, prefix }
    }

    fn image_of(&self, service: &str) -> String {
        format!("{}{service}:latest", self.prefix)
    }
}

impl Drop for DockerFixture {
    fn drop(&mut self) {
        let compose = self.fx.path("compose.yml");
        let _ = Command::new("docker-compose")
            .arg("-f")
            .arg(&compose)
            .args(["down", "--timeout", "1"])
            .output();
        // What `down` may leave: networks of this project (Compose v1 names the project after
        // the directory, lowercased, keeping [-_a-z0-9]).
        let project: String = self
            .fx
            .root()
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        if let Ok(out) = docker()
            .args(["network", "ls", "-q", "--filter"])
            .arg(format!("name={project}_"))
            .output()
        {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(String::from)
                .collect();
            if !project.is_empty() && !ids.is_empty() {
                let _ = docker().args(["network", "rm"]).args(&ids).output();
            }
        }
        remove_images(&self.prefix);
    }
}

#[test]
fn a_change_during_a_real_build_ends_with_an_image_of_the_last_content() {
    let _guard = tests::docker_lock();
    // A build that takes a few seconds, so that edits land while it runs.
    let dfx = DockerFixture::new("during", "RUN sleep 4\n");
    let fx = &dfx.fx;
    let docker_client = engine::execute::docker::Docker::detect().expect("docker");
    let mut popts = engine::pipeline::Options::new(fx.root());
    popts.services = vec!["a".into()];
    let mut opts = engine::watch::Options::new(popts);
    opts.run.jobs = 1;
    // The fixture's trivial Dockerfiles are not seed-style images: no verification gate.
    opts.run.verify = false;
    let w = spawn(Watcher::new(opts), Arc::new(docker_client), |d| {
        Backend::docker(d)
    });
    // The first build starts at once (nothing is cached); edit twice while it runs.
    let s = w.wait("the first build", 0, |e| {
        matches!(e, Event::BuildStarted { .. })
    });
    std::thread::sleep(Duration::from_millis(1000));
    fx.write("services/a/src/index.ts", "console.log('second');\n");
    w.wait("the batch of the first edit", s, |e| {
        matches!(e, Event::Batch { .. })
    });
    fx.write("services/a/src/index.ts", "console.log('last');\n");
    let cold = {
        let mut o = engine::pipeline::Options::new(fx.root());
        o.services = vec!["a".into()];
        let a = engine::pipeline::analyze(&o).expect("analyze");
        a.images[0].key.to_hex()
    };
    w.wait("the follow-up build of the last content", s, |e| {
        matches!(e, Event::BuildFinished { key, result: BuildResult::Built, recorded: true, .. } if *key == cold)
    });
    let events = w.events();
    assert_eq!(
        started(&events),
        ["a", "a"],
        "one build, one follow-up:\n{}",
        describe(&events)
    );
    // The edits landed during the first build: it ended superseded, and unrecorded.
    let first = events.iter().find_map(|e| match e {
        Event::BuildFinished {
            superseded,
            recorded,
            ..
        } => Some((*superseded, *recorded)),
        _ => None,
    });
    assert_eq!(first, Some((true, false)), "{}", describe(&events));
    let content = docker_ok(&[
        "run",
        "--rm",
        &dfx.image_of("a"),
        "cat",
        "/app/src/index.ts",
    ]);
    assert_eq!(content, "console.log('last');");
    let label = docker_ok(&[
        "inspect",
        "--format",
        &format!("{{{{index .Config.Labels \"{KEY_LABEL}\"}}}}"),
        &dfx.image_of("a"),
    ]);
    assert_eq!(label, cold);
}

/// The CLI's JSON event stream, read as it comes.
struct Stream {
    lines: Arc<(Mutex<Vec<serde_json::Value>>, Condvar)>,
}

impl Stream {
    fn wait(&self, what: &str, from: usize, pred: impl Fn(&serde_json::Value) -> bool) -> usize {
        let deadline = Instant::now() + Duration::from_secs(240);
        let (m, c) = &*self.lines;
        let mut lines = m.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(i) = lines.iter().skip(from).position(&pred) {
                return from + i;
            }
            let now = Instant::now();
            if now >= deadline {
                let seen = format!("{lines:#?}");
                drop(lines);
                panic!("timed out waiting for {what}: {seen}");
            }
            lines = c.wait_timeout(lines, deadline - now).expect("wait").0;
        }
    }

    fn len(&self) -> usize {
        self.lines.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn since(&self, from: usize) -> Vec<serde_json::Value> {
        self.lines.0.lock().unwrap_or_else(|p| p.into_inner())[from..].to_vec()
    }
}

fn is(v: &serde_json::Value, event: &str, service: &str) -> bool {
    v["event"] == event && v["service"] == service
}

fn container_of(compose: &Path, service: &str) -> String {
    let out = Command::new("docker-compose")
        .arg("-f")
        .arg(compose)
        .args(["ps", "-q", service])
        .output()
        .expect("docker-compose");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn the_cli_rebuilds_on_save_brings_compose_up_and_stops_on_ctrl_c() {
    let _guard = tests::docker_lock();
    let compose_ok = Command::new("docker-compose").arg("version").output();
    assert!(
        compose_ok.is_ok_and(|o| o.status.success()),
        "--up needs docker-compose (apt-get install docker-compose) or the Compose plugin"
    );
    let dfx = DockerFixture::new("cli", "");
    let fx = &dfx.fx;
    let compose = fx.path("compose.yml");
    // a serves its source over HTTP (read at start) and has a health check, as the example's
    // services do: the watch times the new container's first healthy answer.
    fx.write(
        "services/a/Dockerfile",
        &format!(
            "FROM node:18-alpine\nWORKDIR /app\nCOPY services/a/ /app/\nHEALTHCHECK --interval=30s CMD {}\nCMD {}\n",
            r#"node -e "require('http').get('http://127.0.0.1:8080/', (r) => process.exit(r.statusCode === 200 ? 0 : 1)).on('error', () => process.exit(1))""#,
            r#"["node", "-e", "const b = require('fs').readFileSync('/app/src/index.ts'); require('http').createServer((q, r) => r.end(b)).listen(8080)"]"#
        ),
    );
    let mut child = Command::new(tests::xtask_bin())
        .arg("--root")
        .arg(fx.root())
        .args([
            "watch",
            "--json",
            // The fixture's trivial Dockerfiles are not seed-style images: no verification gate.
            "--no-verify",
            "--up",
            "--debounce",
            "100",
            "--compose-file",
        ])
        .arg(&compose)
        .env_remove("IMAGES_ROOT")
        .env_remove("IMAGES_CACHE_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn xtask watch");
    let stream = Stream {
        lines: Arc::new((Mutex::new(Vec::new()), Condvar::new())),
    };
    let stdout = child.stdout.take().expect("stdout");
    let lines = stream.lines.clone();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let v: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
            let (m, c) = &*lines;
            m.lock().unwrap_or_else(|p| p.into_inner()).push(v);
            c.notify_all();
        }
    });
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // First: both images built and brought up.
        for s in ["a", "b"] {
            stream.wait(&format!("{s} up"), 0, |v| is(v, "up", s) && v["ok"] == true);
        }
        let built_id = |from: usize, s: &str| {
            stream
                .since(from)
                .iter()
                .rev()
                .find(|v| is(v, "build_finished", s))
                .and_then(|v| v["image_id"].as_str().map(String::from))
                .expect("image id")
        };
        let id_a = built_id(0, "a");
        let cid = container_of(&compose, "a");
        assert_eq!(
            docker_ok(&["inspect", "--format", "{{.Image}}", &cid]),
            id_a
        );

        let healthy = stream.wait("a healthy", 0, |v| is(v, "healthy", "a"));
        assert_eq!(
            stream.since(0)[healthy]["ok"],
            true,
            "{:?}",
            stream.since(0)[healthy]
        );
        let b_container = container_of(&compose, "b");

        // An edit of a: a (only) is rebuilt, and its container now runs the new image.
        let mark = stream.len();
        fx.write("services/a/src/index.ts", "console.log('edited');\n");
        let up = stream.wait("a up again", mark, |v| is(v, "up", "a"));
        assert_eq!(stream.since(mark)[up - mark]["ok"], true);
        // Its new container's first healthy answer, timed from the save: the new code answers
        // then (asked here over HTTP at the container's address).
        let h = stream.wait("a healthy again", mark, |v| is(v, "healthy", "a"));
        let h = &stream.since(mark)[h - mark];
        assert_eq!(h["ok"], true, "{h}");
        let (save, up_ms) = (
            h["save_to_healthy_ms"]
                .as_f64()
                .expect("save_to_healthy_ms"),
            h["up_to_healthy_ms"].as_f64().expect("up_to_healthy_ms"),
        );
        assert!(save > up_ms && up_ms >= 0.0, "{h}");
        let ip = docker_ok(&[
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &container_of(&compose, "a"),
        ]);
        let mut conn = std::net::TcpStream::connect((ip.as_str(), 8080)).expect("connect to a");
        std::io::Write::write_all(&mut conn, b"GET / HTTP/1.0\r\n\r\n").expect("request");
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut conn, &mut answer).expect("answer");
        assert!(answer.ends_with("console.log('edited');\n"), "{answer}");
        // b's container was left alone.
        assert_eq!(container_of(&compose, "b"), b_container);
        let new_id = built_id(mark, "a");
        assert_ne!(new_id, id_a);
        let started: Vec<String> = stream
            .since(mark)
            .iter()
            .filter(|v| v["event"] == "build_started")
            .map(|v| v["service"].as_str().unwrap_or("").to_string())
            .collect();
        assert_eq!(started, ["a"]);
        let trigger = stream
            .since(mark)
            .iter()
            .find(|v| v["event"] == "build_started")
            .map(|v| v["trigger"].clone());
        assert_eq!(trigger, Some(serde_json::json!("services/a/src/index.ts")));
        let cid = container_of(&compose, "a");
        assert_eq!(
            docker_ok(&["inspect", "--format", "{{.Image}}", &cid]),
            new_id
        );
        assert_eq!(
            docker_ok(&["exec", &cid, "cat", "/app/src/index.ts"]),
            "console.log('edited');"
        );

        // A content-identical save of b: seen, nothing built.
        let mark = stream.len();
        let p = "services/b/src/index.ts";
        fx.write(p, &fx.read(p));
        let batch = stream.wait("the identical save", mark, |v| {
            v["event"] == "batch"
                && v["paths"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == p))
        });
        stream.wait("idle", batch, |v| v["event"] == "idle");
        assert!(!stream
            .since(mark)
            .iter()
            .any(|v| v["event"] == "build_started"));
    }));
    // Ctrl-C: the watch stops cleanly.
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = reader.join();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    if let Err(e) = result {
        eprintln!("xtask watch stderr:\n{stderr}");
        std::panic::resume_unwind(e);
    }
    let status = status.expect("the watch exits on SIGINT");
    assert!(status.success(), "exit {status:?}; stderr:\n{stderr}");
    let lines = stream.since(0);
    assert_eq!(
        lines.last().map(|v| v["event"].clone()),
        Some(serde_json::json!("stopped"))
    );
    // Every event line says the version of its shape.
    let unversioned: Vec<&serde_json::Value> = lines.iter().filter(|v| v["schema"] != 1).collect();
    assert!(
        unversioned.is_empty(),
        "events without schema 1: {unversioned:?}"
    );
}

/// The key of `service` as a cold analysis of `root` (with `cache_dir`) computes it.
fn cold_key(root: &Path, cache_dir: &Path, service: &str) -> String {
    let mut o = engine::pipeline::Options::new(root);
    o.services = vec![service.into()];
    o.cache_dir = Some(cache_dir.to_path_buf());
    let a = engine::pipeline::analyze(&o).expect("analyze");
    a.images[0].key.to_hex()
}

fn image_id(reference: &str) -> String {
    docker_ok(&["inspect", "--format", "{{.Id}}", reference])
}

/// A watch rebuild goes through the same run as `images`: it is verified, and an image that
/// breaks a rule is reported failed, recorded nowhere, and `latest` keeps the last good image.
#[test]
fn a_watch_rebuild_that_fails_verification_is_reported_failed_and_not_recorded() {
    let _guard = tests::docker_lock();
    tests::require_docker();
    let fx = project().build();
    tests::copy_tree(&tests::repo_root().join("tests/fixtures/verify"), fx.root());
    let prefix = format!("kcw-{}-vfy-", std::process::id());
    fx.write("images.toml", &format!("[images]\nprefix = \"{prefix}\"\n"));
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            remove_images(&self.0);
        }
    }
    let _cleanup = Cleanup(prefix.clone());
    let cache_dir = fx.path(".images-cache");
    let mut popts = engine::pipeline::Options::new(fx.root());
    popts.services = vec!["good".into()];
    popts.cache_dir = Some(cache_dir.clone());
    let mut opts = engine::watch::Options::new(popts);
    opts.run.jobs = 1;
    let docker_client = engine::execute::docker::Docker::detect().expect("docker");
    let w = spawn(Watcher::new(opts), Arc::new(docker_client), |d| {
        Backend::docker(d)
    });
    // The first build passes every rule: recorded, and `latest` is it.
    let first = cold_key(fx.root(), &cache_dir, "good");
    w.wait("the verified first build", 0, |e| {
        matches!(e, Event::BuildFinished { key, result: BuildResult::Built, recorded: true, .. } if *key == first)
    });
    let latest = format!("{prefix}good:latest");
    let good_id = image_id(&latest);

    // An edit that makes it run as root: rebuilt, fails verification.
    let mark = w.len();
    let dockerfile = fx.read("services/good/Dockerfile");
    fx.write(
        "services/good/Dockerfile",
        &dockerfile.replace("USER nodejs\n", ""),
    );
    let i = w.wait(
        "the rebuild's end",
        mark,
        |e| matches!(e, Event::BuildFinished { service, .. } if service == "good"),
    );
    let broken = cold_key(fx.root(), &cache_dir, "good");
    assert_ne!(broken, first);
    let events = w.events();
    match &events[i] {
        Event::BuildFinished {
            key,
            result,
            recorded,
            error,
            registry,
            ..
        } => {
            assert_eq!(key, &broken);
            assert_eq!(
                *result,
                BuildResult::Failed,
                "{}",
                describe(&events[mark..])
            );
            assert!(!recorded);
            assert!(
                error
                    .as_deref()
                    .is_some_and(|e| e.contains("non-root-user")),
                "{error:?}"
            );
            assert!(registry.is_empty());
        }
        other => panic!("not a build's end: {other:?}"),
    }
    let store = cache::Store::open(&cache_dir).expect("store");
    assert!(store.get_record(&broken).expect("read").is_none());
    assert!(store.get_record(&first).expect("read").is_some());
    assert_eq!(image_id(&latest), good_id, "latest keeps the good image");
    // The failed key is not retried by itself; the watch goes on and is idle.
    w.wait("idle", i, |e| matches!(e, Event::Idle { .. }));
    assert_eq!(started(&events[mark..]), ["good"]);
}

/// A verifier that waives the architecture's rules (named so): the watch fixture's trivial images
/// are not seed-style, and nothing is pushed to a registry without a verification that passed.
/// The gate itself is tested with real rules in `trust.rs`.
struct WaivedRules;

static WAIVED_RULES: WaivedRules = WaivedRules;

impl Verifier for WaivedRules {
    fn verify(
        &self,
        _cache_dir: &Path,
        subject: &Subject,
        image: &str,
        _key: &engine::digest::ImageKey,
        image_id: &str,
    ) -> engine::Result<Verified> {
        Ok(Verified {
            report: Report {
                service: subject.service.clone(),
                image: image.to_string(),
                image_id: Some(image_id.to_string()),
                size_bytes: 0,
                budget_bytes: 0,
                ok: true,
                checks: vec![Check::pass(Rule::Image, "rules waived for this fixture")],
            },
            reused: false,
            warnings: Vec::new(),
        })
    }
}

/// With a cache registry, a watch rebuild is pushed there under its key tag, and a key the
/// registry holds is pulled (and verified, recorded, tagged) instead of built, as `images` does.
#[test]
fn a_watch_rebuild_is_looked_up_in_and_pushed_to_the_cache_registry() {
    let _guard = tests::docker_lock();
    let dfx = DockerFixture::new("reg", "");
    let fx = &dfx.fx;
    let registry = format!(
        "{}/kcw{}",
        std::env::var("DOCKER_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into()),
        std::process::id()
    );
    let reg = cache::registry::Registry::parse(&registry).expect("registry");
    let in_registry = |key: &str| {
        reg.head_manifest(&format!("{}a", dfx.prefix), &format!("key-{}", &key[..32]))
            .expect("HEAD")
            .is_some()
    };
    let watch = |cache_dir: &Path| {
        let mut popts = engine::pipeline::Options::new(fx.root());
        popts.services = vec!["a".into()];
        popts.cache_dir = Some(cache_dir.to_path_buf());
        let mut opts = engine::watch::Options::new(popts);
        opts.run.jobs = 1;
        opts.run.cache_registry = Some(registry.clone());
        let d = engine::execute::docker::Docker::detect().expect("docker");
        // The fixture's trivial Dockerfiles are not seed-style images: the rules are waived.
        spawn(Watcher::new(opts), Arc::new(d), |d| Backend {
            builder: d,
            images: Some(d),
            verifier: Some(&WAIVED_RULES),
        })
    };
    let pushed = |events: &[Event], key: &str| {
        events.iter().any(|e| {
            matches!(e, Event::BuildFinished { key: k, recorded: true, registry, .. }
                if k == key && registry.iter().any(|r| r.starts_with("pushed ") && r.contains(&registry_host())))
        })
    };

    // Machine A: the first build and a rebuild are both pushed under their key tags.
    let cache_a = fx.path("cache-a");
    let original = fx.read("services/a/src/index.ts");
    let k1 = cold_key(fx.root(), &cache_a, "a");
    {
        let w = watch(&cache_a);
        w.wait(
            "the first build",
            0,
            |e| matches!(e, Event::BuildFinished { key, recorded: true, .. } if *key == k1),
        );
        let mark = w.len();
        fx.write("services/a/src/index.ts", "console.log('rebuilt');\n");
        let k2 = cold_key(fx.root(), &cache_a, "a");
        w.wait(
            "the rebuild",
            mark,
            |e| matches!(e, Event::BuildFinished { key, recorded: true, .. } if *key == k2),
        );
        let events = w.events();
        assert!(pushed(&events, &k1), "{}", describe(&events));
        assert!(pushed(&events, &k2), "{}", describe(&events));
        assert!(in_registry(&k1) && in_registry(&k2));
    }

    // Machine B: no image, a fresh cache: the key is pulled from the registry, not built; an edit
    // back to a key the registry holds is pulled too.
    tests::remove_images_ok(&dfx.prefix);
    let cache_b = fx.path("cache-b");
    let k2 = cold_key(fx.root(), &cache_b, "a");
    let w = watch(&cache_b);
    let restored = |from: usize, key: &str| {
        w.wait("a pull from the registry", from, |e| {
            matches!(e, Event::Restored { key: k, registry, .. }
                if k == key && registry.iter().any(|r| r.starts_with("pulled from ")))
        })
    };
    restored(0, &k2);
    let mark = w.len();
    fx.write("services/a/src/index.ts", &original);
    restored(mark, &k1);
    let events = w.events();
    assert!(
        started(&events).is_empty(),
        "nothing is built: {}",
        describe(&events)
    );
    let label = docker_ok(&[
        "inspect",
        "--format",
        &format!("{{{{index .Config.Labels \"{KEY_LABEL}\"}}}}"),
        &dfx.image_of("a"),
    ]);
    assert_eq!(label, k1);
    let store = cache::Store::open(&cache_b).expect("store");
    assert!(
        store.get_record(&k1).expect("read").is_some(),
        "pulled and recorded"
    );
    drop(w);
    tests::remove_images_ok(&dfx.prefix);
}

fn registry_host() -> String {
    std::env::var("DOCKER_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into())
}

/// `--up` puts a rebuilt image into service while it is verified (its containers replaced by
/// id; `latest` moves only once it passed), and one that fails verification is replaced by the
/// last verified image again. Oracles: Docker (what each container runs, what `latest` is),
/// Compose (the service's container), and the new code answering over HTTP.
#[test]
fn watch_up_serves_a_rebuild_while_it_is_verified_and_puts_the_last_verified_back_on_failure() {
    let _guard = tests::docker_lock();
    tests::require_docker();
    let fx = project().build();
    tests::copy_tree(&tests::repo_root().join("tests/fixtures/verify"), fx.root());
    let prefix = format!("kcw-{}-serve-", std::process::id());
    fx.write("images.toml", &format!("[images]\nprefix = \"{prefix}\"\n"));
    // `good` serves its own file over HTTP, with an HTTP health check, as a service does.
    let server = |text: &str| {
        format!(
            "const {{ greeting }} = require('@vf/shared');\nconst body = greeting('good') + ' {text}';\nrequire('http').createServer((q, r) => r.end(body)).listen(8080);\nprocess.once('SIGTERM', () => process.exit(0));\n"
        )
    };
    fx.write("services/good/index.js", &server("first"));
    let dockerfile = fx.read("services/good/Dockerfile").replace(
        "HEALTHCHECK CMD node -e \"0\"",
        r#"HEALTHCHECK --interval=30s CMD node -e "require('http').get('http://127.0.0.1:8080/', (r) => process.exit(r.statusCode === 200 ? 0 : 1)).on('error', () => process.exit(1))""#,
    );
    assert!(dockerfile.contains("127.0.0.1:8080"), "{dockerfile}");
    fx.write("services/good/Dockerfile", &dockerfile);
    let compose_file = fx.path("compose.yml");
    fx.write(
        "compose.yml",
        &format!("services:\n  good:\n    image: {prefix}good:latest\n"),
    );
    // Compose names the project after the fixture's directory, for the watch as for this test.
    struct Cleanup(String, std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Command::new("docker-compose")
                .arg("-f")
                .arg(&self.1)
                .args(["down", "--timeout", "1"])
                .output();
            remove_images(&self.0);
        }
    }
    let _cleanup = Cleanup(prefix.clone(), compose_file.clone());
    let container = || -> String {
        let out = Command::new("docker-compose")
            .arg("-f")
            .arg(&compose_file)
            .args(["ps", "-q", "good"])
            .output()
            .expect("docker-compose");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let answer = |cid: &str| -> String {
        let ip = docker_ok(&[
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            cid,
        ]);
        let mut conn = std::net::TcpStream::connect((ip.as_str(), 8080)).expect("connect");
        std::io::Write::write_all(&mut conn, b"GET / HTTP/1.0\r\n\r\n").expect("request");
        let mut text = String::new();
        std::io::Read::read_to_string(&mut conn, &mut text).expect("answer");
        text
    };
    let cache_dir = fx.path(".images-cache");
    let mut popts = engine::pipeline::Options::new(fx.root());
    popts.services = vec!["good".into()];
    popts.cache_dir = Some(cache_dir.clone());
    let mut opts = engine::watch::Options::new(popts);
    opts.run.jobs = 1;
    let docker_client = engine::execute::docker::Docker::detect().expect("docker");
    opts.compose = Some(
        engine::watch::compose::Compose::detect(&docker_client.client, &compose_file)
            .expect("compose"),
    );
    assert!(opts.serve_early, "serving while verifying is the default");
    let w = spawn(Watcher::new(opts), Arc::new(docker_client), |d| {
        Backend::docker(d)
    });
    let latest = format!("{prefix}good:latest");
    let up = |e: &Event| matches!(e, Event::Up { service, .. } if service == "good");
    let healthy = |e: &Event| matches!(e, Event::Healthy { service, .. } if service == "good");

    // The first build: no container runs yet, so Compose brings it up once it is verified.
    let i = w.wait("the first up", 0, up);
    let events = w.events();
    match &events[i] {
        Event::Up {
            ok, via, verified, ..
        } => assert!(
            *ok && via == "compose" && *verified,
            "{}",
            describe(&events)
        ),
        _ => unreachable!(),
    }
    w.wait("healthy", i, healthy);
    let first_id = image_id(&latest);
    let cid = container();
    assert_eq!(
        docker_ok(&["inspect", "--format", "{{.Image}}", &cid]),
        first_id
    );
    assert!(answer(&cid).ends_with("first"));

    // A source edit: the new image is put into service before its verification ends, by a
    // replacement of the container; then it passes, `latest` is it, and Compose runs no more.
    let mark = w.len();
    fx.write("services/good/index.js", &server("second"));
    let i = w.wait("the edit's up", mark, up);
    let events = w.events();
    let done = events[mark..]
        .iter()
        .position(|e| matches!(e, Event::BuildFinished { service, .. } if service == "good"));
    match &events[i] {
        Event::Up {
            ok, via, verified, ..
        } => {
            assert!(*ok && via == "engine", "{}", describe(&events[mark..]));
            // Served before its job finished (the verification), or marked verified when the
            // job happened to finish first.
            assert!(
                !*verified || done.is_some_and(|d| mark + d < i),
                "{}",
                describe(&events[mark..])
            );
        }
        _ => unreachable!(),
    }
    let h = w.wait("healthy after the edit", i, healthy);
    let f = w.wait("the edit's verified end", mark, |e| {
        matches!(e, Event::BuildFinished { service, result: BuildResult::Built, recorded: true, .. } if service == "good")
    });
    w.wait("idle", f.max(h), |e| matches!(e, Event::Idle { .. }));
    let second_id = image_id(&latest);
    assert_ne!(second_id, first_id);
    let cid2 = container();
    assert_ne!(cid2, cid, "a new container");
    assert_eq!(
        docker_ok(&["inspect", "--format", "{{.Image}}", &cid2]),
        second_id
    );
    assert!(answer(&cid2).ends_with("second"));
    let ups = w.events()[mark..].iter().filter(|e| up(e)).count();
    assert_eq!(
        ups,
        1,
        "one replacement, no compose up after it: {}",
        describe(&w.events()[mark..])
    );

    // An edit that plants a secret: same image config, so it is served early too; it fails
    // `no-secrets`, and the last verified image (still `latest`) is back in service.
    let mark = w.len();
    fx.write("services/good/index.js", &server("third"));
    fx.write(
        "services/good/Dockerfile",
        &dockerfile.replace(
            "USER nodejs\n",
            "RUN echo 'DB_PASSWORD=fixture-not-a-secret' > /app/service/.env\nUSER nodejs\n",
        ),
    );
    let f = w.wait(
        "the failed verification",
        mark,
        |e| matches!(e, Event::BuildFinished { service, .. } if service == "good"),
    );
    let events = w.events();
    match &events[f] {
        Event::BuildFinished {
            result,
            recorded,
            error,
            ..
        } => {
            assert_eq!(
                *result,
                BuildResult::Failed,
                "{}",
                describe(&events[mark..])
            );
            assert!(!recorded);
            assert!(
                error.as_deref().is_some_and(|e| e.contains("no-secrets")),
                "{error:?}"
            );
        }
        _ => unreachable!(),
    }
    let restore = w.wait(
        "the restore",
        f,
        |e| matches!(e, Event::Up { service, via, .. } if service == "good" && via == "compose"),
    );
    w.wait("idle", restore, |e| matches!(e, Event::Idle { .. }));
    let events = w.events();
    let served_early = events[mark..f].iter().any(|e| {
        matches!(e, Event::Up { service, via, verified: false, ok: true, .. } if service == "good" && via == "engine")
    });
    assert!(served_early, "{}", describe(&events[mark..]));
    assert!(
        events[f..].iter().any(|e| matches!(e, Event::Warning { message } if message.contains("last verified image goes back"))),
        "{}",
        describe(&events[mark..])
    );
    assert_eq!(
        image_id(&latest),
        second_id,
        "latest keeps the verified image"
    );
    let cid3 = container();
    assert_eq!(
        docker_ok(&["inspect", "--format", "{{.Image}}", &cid3]),
        second_id,
        "the last verified image is back in service"
    );
    assert!(answer(&cid3).ends_with("second"));
}
