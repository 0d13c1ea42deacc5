//! The run's decisions (issue 12), without Docker: `engine::run::run` drives `FaultyBuilder`, a
//! fault-injection backend (builder, image store and verifier in memory) that fails the builds or
//! verifications it is told to, cancels the run mid-build, and refuses pushes to registries that
//! are down. The registry tier speaks HTTP for real: to the test registry for misses, to a closed
//! port (down) and to `garbage_registry` (answers that are not a registry's). Each case checks
//! what is recorded, published (pushed or tagged) and reported.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use engine::execute::{
    Backend, BuildError, BuildOutput, BuildRequest, Builder, CacheExport, Images, LocalImage,
    Verifier, KEY_LABEL,
};
use engine::run::{Event, Outcome, RunOptions, Summary};
use engine::verify::{Check, Report, Rule, Subject, Verified};
use tests::{project, Fixture};

/// Fault injection: builds, tags, pushes and verifies in memory.
#[derive(Default)]
struct FaultyBuilder {
    /// Services whose build fails.
    fail_build: HashSet<String>,
    /// Services whose image breaks a rule.
    fail_verify: HashSet<String>,
    /// The service whose build is interrupted by a Ctrl-C (the run's cancel flag is set).
    cancel_during: Option<String>,
    /// Registry hosts a push to fails (down, or not a registry).
    unreachable: HashSet<String>,
    /// Image id -> key label.
    images: Mutex<BTreeMap<String, Option<String>>>,
    /// `repository:tag` -> image id.
    tags: Mutex<BTreeMap<String, String>>,
    /// Services built, in order.
    built: Mutex<Vec<String>>,
    /// References pushed.
    pushed: Mutex<Vec<String>>,
    /// Images verified.
    verified: Mutex<Vec<String>>,
    /// Says it exports BuildKit's inline cache, and each build takes a while.
    inline: bool,
    /// Builds running now, and the most that ran at once: all, and those exporting a cache.
    running: [AtomicUsize; 2],
    most: [AtomicUsize; 2],
}

impl FaultyBuilder {
    fn backend(&self) -> Backend<'_> {
        Backend {
            builder: self,
            images: Some(self),
            verifier: Some(self),
        }
    }

    fn built(&self) -> Vec<String> {
        self.built.lock().expect("lock").clone()
    }

    fn pushed(&self) -> Vec<String> {
        self.pushed.lock().expect("lock").clone()
    }

    /// A new fault-free backend whose engine holds this one's images and tags.
    fn same_engine(&self) -> FaultyBuilder {
        FaultyBuilder {
            images: Mutex::new(self.images.lock().expect("lock").clone()),
            tags: Mutex::new(self.tags.lock().expect("lock").clone()),
            ..FaultyBuilder::default()
        }
    }

    fn tag_of(&self, reference: &str) -> Option<String> {
        self.tags.lock().expect("lock").get(reference).cloned()
    }
}

impl Builder for FaultyBuilder {
    fn cache_export(&self) -> CacheExport {
        if self.inline {
            CacheExport::Inline
        } else {
            CacheExport::None
        }
    }

    fn build(
        &self,
        req: &BuildRequest,
        on_line: &(dyn Fn(&str) + Sync),
    ) -> Result<BuildOutput, BuildError> {
        self.built.lock().expect("lock").push(req.service.clone());
        // What runs at once, while a build takes a while.
        let _running = self.inline.then(|| {
            let exporting = req.layer_cache.as_ref().is_some_and(|l| l.to.is_some());
            let counted: &[usize] = if exporting { &[0, 1] } else { &[0] };
            for &i in counted {
                let now = self.running[i].fetch_add(1, Ordering::SeqCst) + 1;
                self.most[i].fetch_max(now, Ordering::SeqCst);
            }
            std::thread::sleep(std::time::Duration::from_millis(300));
            Running(&self.running, counted.to_vec())
        });
        // The context is streamed as a real build's would be (every digest checked).
        engine::execute::tar::write_context(&req.root, &req.context, std::io::sink()).map_err(
            |e| BuildError {
                message: e.to_string(),
                log_tail: String::new(),
                log: Vec::new(),
                interrupted: false,
            },
        )?;
        on_line("#5 [runtime 2/3] COPY services/ /app/");
        if self.cancel_during.as_deref() == Some(req.service.as_str()) {
            req.cancel.store(true, Ordering::SeqCst);
            return Err(BuildError {
                message: "interrupted".into(),
                log_tail: String::new(),
                log: Vec::new(),
                interrupted: true,
            });
        }
        if self.fail_build.contains(&req.service) {
            return Err(BuildError {
                message: format!("{} is set to fail", req.service),
                log_tail: "error TS2322: not a number".into(),
                log: b"error TS2322: not a number".to_vec(),
                interrupted: false,
            });
        }
        let key = req.labels.get(KEY_LABEL).cloned().unwrap_or_default();
        let id = format!("sha256:{}", blake3::hash(key.as_bytes()).to_hex());
        self.images
            .lock()
            .expect("lock")
            .insert(id.clone(), Some(key));
        Ok(BuildOutput {
            image_id: id,
            log: b"built\n".to_vec(),
        })
    }
}

/// Counts a build as running until dropped.
struct Running<'a>(&'a [AtomicUsize; 2], Vec<usize>);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        for &i in &self.1 {
            self.0[i].fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Images for FaultyBuilder {
    fn list(&self) -> engine::Result<Vec<LocalImage>> {
        let tags = self.tags.lock().expect("lock");
        Ok(self
            .images
            .lock()
            .expect("lock")
            .iter()
            .map(|(id, key)| LocalImage {
                id: id.clone(),
                key: key.clone(),
                tags: tags
                    .iter()
                    .filter(|(_, i)| *i == id)
                    .map(|(t, _)| t.clone())
                    .collect(),
            })
            .collect())
    }

    fn tag(&self, image_id: &str, reference: &str) -> engine::Result<()> {
        self.tags
            .lock()
            .expect("lock")
            .insert(reference.to_string(), image_id.to_string());
        Ok(())
    }

    fn pull(&self, reference: &str) -> engine::Result<LocalImage> {
        Err(engine::Error::Other(format!(
            "`{reference}`: nothing to pull in this test"
        )))
    }

    fn push(&self, image_id: &str, reference: &str) -> engine::Result<()> {
        if self.unreachable.iter().any(|h| reference.starts_with(h)) {
            return Err(engine::Error::Other(format!(
                "`docker push {reference}` failed: connection refused"
            )));
        }
        self.tag(image_id, reference)?;
        self.pushed
            .lock()
            .expect("lock")
            .push(reference.to_string());
        Ok(())
    }
}

impl Verifier for FaultyBuilder {
    fn verify(
        &self,
        _cache_dir: &Path,
        subject: &Subject,
        image: &str,
        _key: &engine::digest::ImageKey,
        image_id: &str,
    ) -> engine::Result<Verified> {
        self.verified
            .lock()
            .expect("lock")
            .push(subject.service.clone());
        let ok = !self.fail_verify.contains(&subject.service);
        let check = if ok {
            Check::pass(Rule::NonRootUser, "runs as nodejs")
        } else {
            Check::fail(Rule::NonRootUser, "runs as root")
        };
        Ok(Verified {
            report: Report {
                service: subject.service.clone(),
                image: image.to_string(),
                image_id: Some(image_id.to_string()),
                size_bytes: 1,
                budget_bytes: 2,
                ok,
                checks: vec![check],
            },
            reused: false,
            warnings: Vec::new(),
        })
    }
}

/// Two services, `a` and `b`, and `app`, built FROM `b`.
fn fixture() -> Fixture {
    project()
        .shared()
        .service("a", &[])
        .service("b", &[])
        .service("app", &[])
        .file(
            "services/a/Dockerfile",
            "FROM node:18-alpine\nCOPY services/a/ /app/\n",
        )
        .file(
            "services/b/Dockerfile",
            "FROM node:18-alpine\nCOPY services/b/ /app/\n",
        )
        .file(
            "services/app/Dockerfile",
            "FROM b:latest\nCOPY services/app/ /app/\n",
        )
        .build()
}

/// Runs every image of `fx` with `faulty`; returns the summary and every event.
fn run(fx: &Fixture, faulty: &FaultyBuilder, opts: &RunOptions) -> (Summary, Vec<Event>) {
    let analysis = tests::analyze(fx.root());
    let events = Mutex::new(Vec::new());
    let summary = engine::run::run(&analysis, opts, faulty.backend(), &|e| {
        events.lock().expect("lock").push(e)
    })
    .expect("the run starts");
    (summary, events.into_inner().expect("events"))
}

fn outcomes(s: &Summary) -> BTreeMap<String, Outcome> {
    s.images
        .iter()
        .map(|i| (i.service.clone(), i.outcome))
        .collect()
}

/// Whether the local store has a record of each service's key.
fn recorded(fx: &Fixture, s: &Summary) -> BTreeMap<String, bool> {
    let store = cache::Store::open(&fx.path(".images-cache")).expect("store");
    s.images
        .iter()
        .map(|i| {
            let r = store.get_record(&i.key.to_hex()).expect("read");
            (i.service.clone(), r.is_some())
        })
        .collect()
}

fn warnings(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Warning { message } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

fn map(pairs: &[(&str, bool)]) -> BTreeMap<String, bool> {
    pairs.iter().map(|(s, b)| (s.to_string(), *b)).collect()
}

/// The test registry, with a namespace of this test's own (nothing there: every lookup misses).
fn empty_registry(tag: &str) -> String {
    let host = std::env::var("DOCKER_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into());
    format!("{host}/kcrun{}{tag}", std::process::id())
}

fn opts(cache_registry: Option<String>) -> RunOptions {
    RunOptions {
        jobs: 2,
        keep_going: true,
        cache_registry,
        ..RunOptions::default()
    }
}

#[test]
fn a_failed_build_records_and_publishes_nothing_and_skips_what_builds_from_it() {
    let fx = fixture();
    let registry = empty_registry("fail");
    let faulty = FaultyBuilder {
        fail_build: ["b".to_string()].into(),
        ..FaultyBuilder::default()
    };
    let (s, _) = run(&fx, &faulty, &opts(Some(registry.clone())));
    assert_eq!(
        outcomes(&s),
        [
            ("a".to_string(), Outcome::Built),
            ("app".to_string(), Outcome::Skipped),
            ("b".to_string(), Outcome::Failed),
        ]
        .into()
    );
    assert_eq!(
        recorded(&fx, &s),
        map(&[("a", true), ("app", false), ("b", false)])
    );
    let b = s.images.iter().find(|i| i.service == "b").expect("b");
    assert_eq!(b.error.as_deref(), Some("b is set to fail"));
    assert!(b.log.as_ref().is_some_and(|p| p.is_file()), "{b:?}");
    let app = s.images.iter().find(|i| i.service == "app").expect("app");
    assert_eq!(app.skipped_because.as_deref(), Some("b was not built"));
    // Only a was pushed, under its key tag; nothing was tagged for b.
    let a = s.images.iter().find(|i| i.service == "a").expect("a");
    assert_eq!(
        faulty.pushed(),
        [format!("{registry}/a:key-{}", a.key.short(32))]
    );
    assert!(faulty.tag_of("b:latest").is_none());
    assert_eq!(faulty.tag_of("a:latest"), a.image_id);
    let mut built = faulty.built();
    built.sort();
    assert_eq!(built, ["a", "b"], "app is never built");
    assert_eq!(s.exit_code(), 1);
}

#[test]
fn a_failed_verification_records_tags_and_publishes_nothing() {
    let fx = fixture();
    let registry = empty_registry("verify");
    let faulty = FaultyBuilder {
        fail_verify: ["a".to_string()].into(),
        ..FaultyBuilder::default()
    };
    let mut o = opts(Some(registry.clone()));
    o.push = true;
    o.tags = vec!["v1".into()];
    let (s, _) = run(&fx, &faulty, &o);
    assert_eq!(
        outcomes(&s),
        [
            ("a".to_string(), Outcome::Failed),
            ("app".to_string(), Outcome::Built),
            ("b".to_string(), Outcome::Built),
        ]
        .into()
    );
    assert_eq!(
        recorded(&fx, &s),
        map(&[("a", false), ("app", true), ("b", true)])
    );
    let a = s.images.iter().find(|i| i.service == "a").expect("a");
    assert!(a.verify_failed(), "{a:?}");
    assert!(
        a.error
            .as_deref()
            .is_some_and(|e| e.contains("non-root-user")),
        "{a:?}"
    );
    assert!(a.registry.is_empty(), "{a:?}");
    assert!(faulty.tag_of("a:latest").is_none(), "not tagged");
    // Nothing of a reached a registry; b and app got their key tag and the release tag.
    let pushed = faulty.pushed();
    assert!(!pushed.iter().any(|r| r.contains("/a:")), "{pushed:?}");
    for svc in ["b", "app"] {
        assert!(
            pushed.iter().any(|r| r == &format!("{registry}/{svc}:v1")),
            "{pushed:?}"
        );
    }
    assert_eq!(s.exit_code(), 1);

    // The next run builds a again (nothing was recorded), and the others are cached.
    let faulty2 = faulty.same_engine();
    let (s2, _) = run(&fx, &faulty2, &opts(None));
    assert_eq!(faulty2.built(), ["a"]);
    assert_eq!(s2.exit_code(), 0);
}

#[test]
fn an_unverified_run_pushes_nothing_and_refuses_to_publish() {
    let fx = fixture();
    let registry = empty_registry("noverify");
    let faulty = FaultyBuilder::default();
    let mut o = opts(Some(registry.clone()));
    o.verify = false;
    let (s, events) = run(&fx, &faulty, &o);
    assert_eq!(s.exit_code(), 0, "{s:?}");
    assert!(faulty.verified.lock().expect("lock").is_empty());
    assert!(faulty.pushed().is_empty(), "{:?}", faulty.pushed());
    let w = warnings(&events);
    assert!(
        w.iter()
            .any(|w| w.contains("(--no-verify): nothing is pushed to the cache registry")),
        "{w:?}"
    );

    o.push = true;
    let analysis = tests::analyze(fx.root());
    let e = engine::run::run(&analysis, &o, faulty.backend(), &|_| {})
        .expect_err("--push without verification")
        .to_string();
    assert!(e.contains("--push needs verification"), "{e}");
    assert!(faulty.pushed().is_empty());
}

#[test]
fn without_trusted_keys_a_run_says_once_that_registry_entries_are_trusted_by_label() {
    let fx = fixture();
    let faulty = FaultyBuilder::default();
    let (_, events) = run(&fx, &faulty, &opts(Some(empty_registry("label"))));
    let said = warnings(&events)
        .iter()
        .filter(|w| w.contains("are trusted by their key label only"))
        .count();
    assert_eq!(said, 1);
    // With no cache registry, there is nothing to say.
    let (_, events) = run(&fx, &faulty.same_engine(), &opts(None));
    assert!(
        !warnings(&events)
            .iter()
            .any(|w| w.contains("trusted by their key label")),
        "{events:?}"
    );
}

/// A registry that answers every request with a success and a body that is not a registry's.
fn garbage_registry() -> (String, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let handle = std::thread::spawn(move || {
        for stream in listener.incoming().take(40) {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            let mut head = false;
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head |= line.starts_with("HEAD ");
            }
            let body = if head {
                ""
            } else {
                "{\"schemaVersion\": <<garbage"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nDocker-Content-Digest: sha256:00\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (format!("{addr}"), handle)
}

#[test]
fn a_remote_tier_that_is_down_or_answers_garbage_is_a_warning_and_a_miss() {
    // Down: a port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let (garbage, _server) = garbage_registry();
    for host in [closed.to_string(), garbage] {
        let fx = fixture();
        let faulty = FaultyBuilder {
            unreachable: [host.clone()].into(),
            ..FaultyBuilder::default()
        };
        let (s, events) = run(&fx, &faulty, &opts(Some(format!("{host}/ns"))));
        assert!(
            s.images.iter().all(|i| i.outcome == Outcome::Built),
            "{host}: {:?}",
            outcomes(&s)
        );
        assert_eq!(
            recorded(&fx, &s),
            map(&[("a", true), ("app", true), ("b", true)]),
            "{host}"
        );
        assert!(faulty.pushed().is_empty(), "{host}");
        let w = warnings(&events);
        assert!(
            w.iter()
                .filter(|m| m.contains("cannot be read") && m.contains(&host))
                .count()
                == 3,
            "{host}: {w:#?}"
        );
        assert!(
            w.iter().any(|m| m.contains("could not store")),
            "{host}: {w:#?}"
        );
        // A cache that cannot be shared does not fail the run.
        assert_eq!(s.exit_code(), 0, "{host}");
    }
}

#[test]
fn a_cancelled_run_records_nothing_unfinished_and_exits_130() {
    let fx = fixture();
    let faulty = FaultyBuilder {
        cancel_during: Some("a".into()),
        ..FaultyBuilder::default()
    };
    let mut o = opts(None);
    o.jobs = 1;
    o.keep_going = false;
    let cancel = o.cancel.clone();
    let (s, _) = run(&fx, &faulty, &o);
    assert!(cancel.load(Ordering::SeqCst));
    assert!(s.interrupted);
    let by: HashMap<String, (Outcome, Option<String>)> = s
        .images
        .iter()
        .map(|i| (i.service.clone(), (i.outcome, i.skipped_because.clone())))
        .collect();
    assert_eq!(by["a"].0, Outcome::Failed);
    for other in ["b", "app"] {
        assert_eq!(
            by[other],
            (Outcome::Skipped, Some("interrupted".to_string())),
            "{by:?}"
        );
    }
    assert_eq!(faulty.built(), ["a"]);
    assert_eq!(
        recorded(&fx, &s),
        map(&[("a", false), ("app", false), ("b", false)])
    );
    assert!(
        faulty.tags.lock().expect("lock").is_empty(),
        "nothing tagged"
    );
    assert_eq!(s.exit_code(), 130);
}

#[test]
fn a_record_whose_image_is_gone_or_mislabelled_is_a_miss() {
    let fx = fixture();
    let faulty = FaultyBuilder::default();
    let (first, _) = run(&fx, &faulty, &opts(None));
    assert_eq!(first.exit_code(), 0);
    // The engine loses a's image, and b's image id now names an image of another key.
    let id_of = |svc: &str| {
        first
            .images
            .iter()
            .find(|i| i.service == svc)
            .and_then(|i| i.image_id.clone())
            .expect("id")
    };
    {
        let mut images = faulty.images.lock().expect("lock");
        images.remove(&id_of("a"));
        images.insert(id_of("b"), Some("0".repeat(64)));
    }
    let analysis = tests::analyze(fx.root());
    let dry = engine::run::plan(&analysis, Some(&faulty), false).expect("plan");
    assert!(dry.checked);
    let why: BTreeMap<String, Vec<String>> = dry
        .plans
        .iter()
        .map(|p| {
            (
                p.service.clone(),
                p.reasons.iter().map(|r| r.to_string()).collect(),
            )
        })
        .collect();
    assert!(why["a"][0].contains("is gone from the engine"), "{why:?}");
    assert!(
        why["b"][0].contains(&format!("carries the key label {}", "0".repeat(64))),
        "{why:?}"
    );
    assert!(why["app"].is_empty(), "{why:?}");
    // Without an engine to ask, the records are trusted, and the plan says it could not check.
    let blind = engine::run::plan(&analysis, None, false).expect("plan");
    assert!(!blind.checked);
    assert!(blind.plans.iter().all(|p| p.reasons.is_empty()));
    // The run rebuilds exactly those two.
    let faulty_after = faulty.same_engine();
    let (s, _) = run(&fx, &faulty_after, &opts(None));
    let mut built = faulty_after.built();
    built.sort();
    assert_eq!(built, ["a", "b"]);
    assert_eq!(s.exit_code(), 0);
}

/// Without an engine, `images --dry-run` still plans, and says it could not check the records.
#[test]
fn a_dry_run_without_an_engine_says_it_could_not_check() {
    let fx = fixture();
    let out = std::process::Command::new(tests::xtask_bin())
        .arg("--root")
        .arg(fx.root())
        .args(["images", "--dry-run", "--json"])
        .env("DOCKER", "/nonexistent/docker")
        .env_remove("IMAGES_ROOT")
        .env_remove("IMAGES_CACHE_DIR")
        .output()
        .expect("run xtask");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(plan["engine_checked"], false, "{plan}");
    assert_eq!(plan["images"].as_array().map(Vec::len), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("could not check the engine"), "{stderr}");
}

#[test]
fn a_held_image_is_verified_only_once_released_and_nothing_else_waits() {
    // What `watch --up` does when it serves a rebuilt image early: it holds the image's
    // verification from the `Built` event until its new container answered.
    let fx = fixture();
    let faulty = FaultyBuilder::default();
    let hold = std::sync::Arc::new(engine::run::hold::Hold::default());
    let mut o = opts(None);
    o.hold = Some(hold.clone());
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let tx = Mutex::new(tx);
    // The releaser: while a's image is held, a is not verified; then it lets it go.
    let seen_while_held = std::thread::scope(|scope| {
        let (held, verified) = (&hold, &faulty.verified);
        let releaser = scope.spawn(move || {
            let id = rx.recv().expect("a was built");
            std::thread::sleep(std::time::Duration::from_millis(500));
            let seen = verified.lock().expect("lock").clone();
            assert!(held.is_held(&id));
            held.release(&id);
            seen
        });
        let analysis = tests::analyze(fx.root());
        let s = engine::run::run(&analysis, &o, faulty.backend(), &|e| {
            if let Event::Built {
                service, image_id, ..
            } = &e
            {
                if service == "a" {
                    hold.hold(image_id);
                    tx.lock()
                        .expect("lock")
                        .send(image_id.clone())
                        .expect("send");
                }
            }
        })
        .expect("the run starts");
        assert_eq!(s.exit_code(), 0, "{:?}", s.images);
        releaser.join().expect("the releaser ends")
    });
    assert!(
        !seen_while_held.contains(&"a".to_string()),
        "a was verified while held: {seen_while_held:?}"
    );
    assert!(
        seen_while_held.contains(&"b".to_string()),
        "b, not held, was verified meanwhile: {seen_while_held:?}"
    );
    let mut verified = faulty.verified.lock().expect("lock").clone();
    verified.sort();
    assert_eq!(verified, ["a", "app", "b"]);

    // A run cancelled (Ctrl-C) while an image is held does not wait for a release.
    let fx = fixture();
    let faulty = FaultyBuilder::default();
    let hold = std::sync::Arc::new(engine::run::hold::Hold::default());
    let mut o = opts(None);
    o.hold = Some(hold.clone());
    let cancel = o.cancel.clone();
    let analysis = tests::analyze(fx.root());
    let (built_tx, built_rx) = std::sync::mpsc::channel();
    let built_tx = Mutex::new(built_tx);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let s = engine::run::run(&analysis, &o, faulty.backend(), &|e| {
                if let Event::Built { image_id, .. } = &e {
                    hold.hold(image_id);
                    let _ = built_tx.lock().expect("lock").send(());
                }
            });
            let _ = done_tx.send(s.map(|s| s.exit_code()));
        });
        built_rx.recv().expect("an image was built");
        assert!(
            done_rx
                .recv_timeout(std::time::Duration::from_millis(300))
                .is_err(),
            "the run waits on its hold"
        );
        cancel.store(true, Ordering::SeqCst);
        let ended = done_rx.recv_timeout(engine::run::hold::AT_MOST / 2);
        assert!(ended.is_ok(), "the cancelled run waited on its hold");
    });
    assert!(faulty.verified.lock().expect("lock").is_empty());
}

/// Docker 20.10's BuildKit can crash the daemon when two builds export inline cache at once
/// (`fatal error: concurrent map writes`, moby/moby#42422; it happened in this suite): a run
/// that writes a layer cache builds one exporting build at a time, and every other build of
/// it side by side as before.
#[test]
fn builds_that_export_an_inline_cache_run_one_at_a_time_and_others_side_by_side() {
    let fx = fixture();
    let most = |b: &FaultyBuilder| {
        [
            b.most[0].load(Ordering::SeqCst),
            b.most[1].load(Ordering::SeqCst),
        ]
    };

    // Writing to the cache registry: a and b export, one at a time.
    let exporting = FaultyBuilder {
        inline: true,
        ..FaultyBuilder::default()
    };
    let (s, _) = run(&fx, &exporting, &opts(Some(empty_registry("exp"))));
    assert_eq!(s.exit_code(), 0, "{:?}", outcomes(&s));
    assert_eq!(most(&exporting), [1, 1], "one exporting build at a time");

    // Only importing (read-only): the same builds run two at a time (-j 2).
    let importing = FaultyBuilder {
        inline: true,
        ..FaultyBuilder::default()
    };
    let read_only = RunOptions {
        cache_read_only: true,
        ..opts(Some(empty_registry("imp")))
    };
    let (s, _) = run(&fx, &importing, &read_only);
    assert_eq!(s.exit_code(), 0, "{:?}", outcomes(&s));
    assert_eq!(
        most(&importing),
        [2, 0],
        "builds that export nothing run side by side"
    );
}
