//! Tests of `watch` (issue 4), with real file events (inotify through notify).
//!
//! Scheduling tests drive the engine's watch with `CountingBuilder`, a fault-injection builder
//! that records each build request and answers with a fake image id (it still streams each
//! context through the engine's tar writer, which checks every digest). The end-to-end tests in
//! [`docker`] build real images with Docker, bring them up with Compose, and stop the CLI with
//! SIGINT; those in [`replace`] replace compose containers over the Engine API, Compose v1 being
//! the oracle.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use engine::execute::{Backend, BuildError, BuildOutput, BuildRequest, Builder, KEY_LABEL};
use engine::watch::{BuildResult, Event, FaultInjector, Watcher};
use proptest::prelude::*;
use tests::{keys, project, Fixture};

/// Fault injection: a builder that records the build requests and returns a fake image id,
/// optionally after a delay, or fails for the services in `fail`.
#[derive(Default)]
struct CountingBuilder {
    /// (service, key) of every build, in start order.
    builds: Mutex<Vec<(String, String)>>,
    delay: Duration,
    fail: Mutex<HashSet<String>>,
    running: Mutex<HashMap<String, usize>>,
    /// The most builds of one image at once (must stay 1), and of all images at once.
    max_same: AtomicUsize,
    max_all: AtomicUsize,
}

impl CountingBuilder {
    fn with_delay(ms: u64) -> CountingBuilder {
        CountingBuilder {
            delay: Duration::from_millis(ms),
            ..CountingBuilder::default()
        }
    }

    fn count(&self) -> usize {
        self.builds.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The services built since the `from`-th build, sorted.
    fn since(&self, from: usize) -> Vec<String> {
        let mut v: Vec<String> = self.builds.lock().unwrap_or_else(|p| p.into_inner())[from..]
            .iter()
            .map(|(s, _)| s.clone())
            .collect();
        v.sort();
        v
    }
}

impl Builder for CountingBuilder {
    fn build(
        &self,
        req: &BuildRequest,
        _on_line: &(dyn Fn(&str) + Sync),
    ) -> Result<BuildOutput, BuildError> {
        let key = req.labels.get(KEY_LABEL).cloned().unwrap_or_default();
        self.builds
            .lock()
            .expect("lock")
            .push((req.service.clone(), key.clone()));
        {
            let mut r = self.running.lock().unwrap_or_else(|p| p.into_inner());
            *r.entry(req.service.clone()).or_default() += 1;
            self.max_same.fetch_max(r[&req.service], Ordering::SeqCst);
            self.max_all.fetch_max(r.values().sum(), Ordering::SeqCst);
        }
        let streamed =
            engine::execute::tar::write_context(&req.root, &req.context, std::io::sink());
        let end = Instant::now() + self.delay;
        while Instant::now() < end && !req.cancel.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(n) = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&req.service)
        {
            *n -= 1;
        }
        let fail = |message: String| BuildError {
            message,
            log_tail: "fake log".into(),
            log: b"fake log".to_vec(),
            interrupted: false,
        };
        if req.cancel.load(Ordering::SeqCst) {
            return Err(BuildError {
                message: "interrupted".into(),
                log_tail: String::new(),
                log: Vec::new(),
                interrupted: true,
            });
        }
        if self
            .fail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&req.service)
        {
            return Err(fail(format!("{} is set to fail", req.service)));
        }
        streamed.map_err(|e| fail(e.to_string()))?;
        Ok(BuildOutput {
            image_id: format!("sha256:{key}"),
            log: Vec::new(),
        })
    }
}

type Log = Arc<(Mutex<Vec<Event>>, Condvar)>;

/// A watch running on its own thread, its events collected.
struct Running {
    log: Log,
    stop: Arc<AtomicBool>,
    faults: FaultInjector,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

fn start(root: &Path, builder: Arc<CountingBuilder>, debounce_ms: u64, jobs: usize) -> Running {
    let mut popts = engine::pipeline::Options::new(root);
    popts.cache_dir = Some(root.join(".images-cache"));
    let mut opts = engine::watch::Options::new(popts);
    opts.debounce = Duration::from_millis(debounce_ms);
    opts.run.jobs = jobs;
    let r = spawn(Watcher::new(opts), builder, |b| Backend::builder(b));
    r.wait("the watch to start and settle", 0, |e| {
        matches!(e, Event::Idle { .. })
    });
    r
}

/// Runs `watcher` with `builder` on a thread of its own, as the backend `backend` makes of it.
fn spawn<B: Builder + Send + 'static>(
    watcher: Watcher,
    builder: Arc<B>,
    backend: fn(&B) -> Backend<'_>,
) -> Running {
    let faults = watcher.fault_injector();
    let log: Log = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (l, s) = (log.clone(), stop.clone());
    let thread = std::thread::spawn(move || {
        let on_event = |e: Event| {
            let (m, c) = &*l;
            m.lock().unwrap_or_else(|p| p.into_inner()).push(e);
            c.notify_all();
        };
        watcher
            .run(backend(builder.as_ref()), &on_event, &s)
            .map_err(|e| e.to_string())
    });
    Running {
        log,
        stop,
        faults,
        thread: Some(thread),
    }
}

impl Running {
    fn len(&self) -> usize {
        self.log.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn events(&self) -> Vec<Event> {
        self.log.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits for an event at or after `from` that satisfies `pred`; returns its index.
    fn wait(&self, what: &str, from: usize, pred: impl Fn(&Event) -> bool) -> usize {
        let deadline = Instant::now() + Duration::from_secs(60);
        let (m, c) = &*self.log;
        let mut events = m.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(i) = events.iter().skip(from).position(&pred) {
                return from + i;
            }
            let now = Instant::now();
            if now >= deadline {
                let seen = describe(&events[from.min(events.len())..]);
                drop(events);
                panic!("timed out waiting for {what}; events:\n{seen}");
            }
            events = c.wait_timeout(events, deadline - now).expect("wait").0;
        }
    }

    /// Waits until the watch is idle holding exactly the cold run's keys, and checks it stays so
    /// for a while (no late event moves it elsewhere). Returns the index of that idle event.
    /// `from` is the number of events before the change: the last of them (the idle event the
    /// test waited for) counts too, for a change that moves no key.
    fn settles_on_cold_keys(&self, root: &Path, from: usize) -> usize {
        let cold = keys(root);
        let i = self.wait(
            "the watch to hold the cold run's keys",
            from.saturating_sub(1),
            |e| matches!(e, Event::Idle { keys } if *keys == cold),
        );
        std::thread::sleep(Duration::from_millis(400));
        let events = self.events();
        let last = events.iter().rev().find_map(|e| match e {
            Event::Idle { keys } | Event::Batch { keys, .. } => Some(keys.clone()),
            _ => None,
        });
        assert_eq!(last.as_ref(), Some(&cold), "{}", describe(&events[from..]));
        i
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let r = t.join();
            if !std::thread::panicking() {
                r.expect("the watch thread panicked")
                    .expect("the watch failed");
            }
        }
    }
}

fn describe(events: &[Event]) -> String {
    events
        .iter()
        .map(|e| serde_json::to_string(e).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

fn started(events: &[Event]) -> Vec<String> {
    let mut v: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::BuildStarted { service, .. } => Some(service.clone()),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

fn fixture() -> Fixture {
    let fx = project()
        .shared()
        .service("a", &[])
        .service("b", &[])
        .service("c", &[])
        .file("services/a/src/lib/deep.ts", "export const deep = 1;\n")
        .file(".npmrc", "auto-install-peers=true\n")
        .build();
    // Each Dockerfile copies `.npmrc` too, as real ones do: a root file every context holds
    // (through a pattern, Docker's idiom for a file that may be missing: edits may remove it).
    for s in ["a", "b", "c"] {
        let df = format!("services/{s}/Dockerfile");
        fx.write(
            &df,
            &fx.read(&df).replace(
                "COPY package.json pnpm-workspace.yaml ./",
                "COPY package.json pnpm-workspace.yaml .npmr[c] ./",
            ),
        );
    }
    fx
}

fn plain_save(fx: &Fixture, rel: &str, text: &str) {
    fx.write(rel, text)
}

/// Rename-on-save as vim does it (`backupcopy=no`): probe file, original to backup, new file
/// written, backup deleted.
fn vim_save(fx: &Fixture, rel: &str, text: &str) {
    let p = fx.path(rel);
    let dir = p.parent().expect("parent");
    std::fs::write(dir.join("4913"), "").expect("probe");
    std::fs::remove_file(dir.join("4913")).expect("probe");
    let backup = dir.join(format!(
        "{}~",
        p.file_name().expect("name").to_string_lossy()
    ));
    if p.exists() {
        std::fs::rename(&p, &backup).expect("backup");
    }
    std::fs::write(&p, text).expect("write");
    let _ = std::fs::remove_file(&backup);
}

/// Safe write as JetBrains IDEs do it: a temporary file renamed over the original.
fn jetbrains_save(fx: &Fixture, rel: &str, text: &str) {
    let p = fx.path(rel);
    let tmp = p.with_file_name(format!(
        "{}___jb_tmp___",
        p.file_name().expect("name").to_string_lossy()
    ));
    let old = p.with_file_name(format!(
        "{}___jb_old___",
        p.file_name().expect("name").to_string_lossy()
    ));
    std::fs::write(&tmp, text).expect("tmp");
    if p.exists() {
        std::fs::rename(&p, &old).expect("old");
    }
    std::fs::rename(&tmp, &p).expect("rename");
    let _ = std::fs::remove_file(&old);
}

#[test]
fn an_edit_rebuilds_exactly_that_image_and_an_identical_save_none() {
    let fx = fixture();
    let b = Arc::new(CountingBuilder::default());
    let w = start(fx.root(), b.clone(), 50, 2);
    assert_eq!(
        b.since(0),
        ["a", "b", "c"],
        "the first run builds what is not cached"
    );

    // An edit undone: the old key is cached, so `latest` goes back to its image, no build.
    let original = fx.read("services/a/src/index.ts");
    let (mark, n) = (w.len(), b.count());
    fx.write("services/a/src/index.ts", "console.log('undo me');\n");
    w.settles_on_cold_keys(fx.root(), mark);
    assert_eq!(b.since(n), ["a"]);
    let (mark, n) = (w.len(), b.count());
    fx.write("services/a/src/index.ts", &original);
    w.settles_on_cold_keys(fx.root(), mark);
    assert_eq!(b.since(n), Vec::<String>::new());
    assert!(w.events()[mark..]
        .iter()
        .any(|e| matches!(e, Event::Restored { service, .. } if service == "a")));

    // A plain edit.
    let (mark, n) = (w.len(), b.count());
    fx.write("services/a/src/index.ts", "console.log('a2');\n");
    w.settles_on_cold_keys(fx.root(), mark);
    assert_eq!(b.since(n), ["a"]);
    let events = w.events();
    let trigger = events[mark..].iter().find_map(|e| match e {
        Event::BuildStarted { trigger, .. } => trigger.clone(),
        _ => None,
    });
    assert_eq!(trigger.as_deref(), Some("services/a/src/index.ts"));

    // Content-identical saves, plain and rename-on-save: the batch is seen, nothing builds.
    let saves: [fn(&Fixture, &str, &str); 3] = [plain_save, vim_save, jetbrains_save];
    for (i, save) in saves.into_iter().enumerate() {
        let (mark, n) = (w.len(), b.count());
        let p = "services/b/src/index.ts";
        save(&fx, p, &fx.read(p));
        let batch = w.wait(
            &format!("the batch of identical save {i}"),
            mark,
            |e| matches!(e, Event::Batch { paths, .. } if paths.iter().any(|x| x == p)),
        );
        w.wait("idle", batch, |e| matches!(e, Event::Idle { .. }));
        assert_eq!(b.since(n), Vec::<String>::new(), "identical save {i}");
        assert!(started(&w.events()[mark..]).is_empty());
    }

    // Rename-on-save with new content: that image only.
    for save in [vim_save, jetbrains_save] {
        let (mark, n) = (w.len(), b.count());
        let p = "services/c/src/index.ts";
        save(&fx, p, &format!("{}// saved\n", fx.read(p)));
        w.settles_on_cold_keys(fx.root(), mark);
        assert_eq!(b.since(n), ["c"]);
    }

    // The shared package: every image, once each.
    let (mark, n) = (w.len(), b.count());
    fx.write("shared/src/index.ts", "export const shared = 2;\n");
    w.settles_on_cold_keys(fx.root(), mark);
    assert_eq!(b.since(n), ["a", "b", "c"]);
    // Ignored and out-of-context files: nothing.
    let (mark, n) = (w.len(), b.count());
    fx.write("services/a/debug.log", "noise\n");
    fx.write("services/a/dist/index.js", "built\n");
    fx.write("docs/notes.txt", "notes\n");
    fx.write("services/a/src/index.ts", "console.log('a3');\n");
    w.settles_on_cold_keys(fx.root(), mark);
    assert_eq!(b.since(n), ["a"]);
    assert_eq!(b.max_same.load(Ordering::SeqCst), 1);
}

#[test]
fn a_storm_of_2000_changes_across_two_services_gives_two_rebuilds() {
    let mut p = project()
        .shared()
        .service("a", &[])
        .service("b", &[])
        .service("c", &[]);
    for i in 0..1000 {
        for s in ["a", "b"] {
            p = p.file(
                &format!("services/{s}/src/gen/m{i}.ts"),
                &format!("export const v{i} = 0;\n"),
            );
        }
    }
    let fx = p.build();
    let b = Arc::new(CountingBuilder::default());
    // A debounce long enough that a busy machine's scheduling hiccups do not split the burst.
    let w = start(fx.root(), b.clone(), 400, 2);
    let (mark, n) = (w.len(), b.count());
    // As a checkout does: rewrite 1,000 files in each of two services, interleaved, and add and
    // remove a few.
    for i in 0..1000 {
        for s in ["a", "b"] {
            fx.write(
                &format!("services/{s}/src/gen/m{i}.ts"),
                &format!("export const v{i} = 1;\n"),
            );
        }
    }
    for i in 0..20 {
        fx.write(&format!("services/a/src/gen/new{i}.ts"), "export {};\n");
        fx.remove(&format!("services/b/src/gen/m{i}.ts"));
    }
    w.settles_on_cold_keys(fx.root(), mark);
    assert_eq!(b.since(n), ["a", "b"], "one rebuild per affected image");
    let events = w.events();
    let changed: usize = events[mark..]
        .iter()
        .map(|e| match e {
            Event::Batch { changed, .. } => *changed,
            _ => 0,
        })
        .sum();
    assert!(changed >= 2000, "the batches saw every change ({changed})");
}

#[test]
fn a_change_during_a_build_queues_exactly_one_follow_up() {
    let fx = project()
        .shared()
        .service("a", &[])
        .service("b", &[])
        .build();
    let b = Arc::new(CountingBuilder::with_delay(1500));
    let w = start(fx.root(), b.clone(), 50, 2);
    assert_eq!(
        b.max_all.load(Ordering::SeqCst),
        2,
        "two images build in parallel"
    );
    let (mark, n) = (w.len(), b.count());
    fx.write("services/a/src/index.ts", "v2\n");
    let s = w.wait("the build of v2", mark, |e| {
        matches!(e, Event::BuildStarted { .. })
    });
    // Two more changes while it builds, in two batches.
    fx.write("services/a/src/index.ts", "v3\n");
    w.wait("the batch of v3", s, |e| matches!(e, Event::Batch { .. }));
    fx.write("services/a/src/index.ts", "v4\n");
    w.wait("the batch of v4", s + 1, |e| {
        matches!(e, Event::Batch { .. })
    });
    w.settles_on_cold_keys(fx.root(), mark);
    assert_eq!(
        b.since(n),
        ["a", "a"],
        "the build, then exactly one follow-up"
    );
    let builds = b.builds.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(
        builds.last().map(|(_, k)| k.clone()),
        Some(keys(fx.root())["a"].clone())
    );
    assert_eq!(
        b.max_same.load(Ordering::SeqCst),
        1,
        "never two builds of one image"
    );
    let events = w.events();
    let finished: Vec<(bool, bool)> = events[mark..]
        .iter()
        .filter_map(|e| match e {
            Event::BuildFinished {
                superseded,
                recorded,
                ..
            } => Some((*superseded, *recorded)),
            _ => None,
        })
        .collect();
    assert_eq!(
        finished,
        [(true, false), (false, true)],
        "only the last build is recorded: {}",
        describe(&events[mark..])
    );
    assert!(events[mark..].iter().any(|e| matches!(
        e,
        Event::BuildStarted {
            follow_up: true,
            ..
        }
    )));
}

#[test]
fn a_failed_build_is_reported_and_the_watch_goes_on() {
    let fx = project()
        .shared()
        .service("a", &[])
        .service("b", &[])
        .build();
    let b = Arc::new(CountingBuilder::default());
    b.fail
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert("a".into());
    let w = start(fx.root(), b.clone(), 50, 2);
    let events = w.events();
    assert!(events.iter().any(|e| matches!(e,
        Event::BuildFinished { service, result: BuildResult::Failed, error: Some(m), log: Some(_), .. }
            if service == "a" && m.contains("set to fail"))));
    // Other images go on building; the failed key is not retried by itself.
    let (mark, n) = (w.len(), b.count());
    fx.write("services/b/src/index.ts", "b2\n");
    w.settles_on_cold_keys(fx.root(), mark);
    assert_eq!(b.since(n), ["b"]);
    // Fixed: the next change builds it.
    b.fail.lock().unwrap_or_else(|p| p.into_inner()).clear();
    let (mark, n) = (w.len(), b.count());
    fx.write("services/a/src/index.ts", "a2\n");
    w.settles_on_cold_keys(fx.root(), mark);
    assert_eq!(b.since(n), ["a"]);

    // A workspace file that does not parse mid-edit: an error event, then the fix is picked up.
    let (mark, n) = (w.len(), b.count());
    let pkg = fx.read("services/b/package.json");
    fx.write("services/b/package.json", "{ \"name\": ");
    w.wait(
        "the parse error",
        mark,
        |e| matches!(e, Event::Error { message } if message.contains("package.json")),
    );
    fx.write(
        "services/b/package.json",
        &pkg.replace("\"version\": \"1.0.0\"", "\"version\": \"1.0.1\""),
    );
    w.settles_on_cold_keys(fx.root(), mark);
    assert_eq!(b.since(n), ["b"]);
}

#[test]
fn workspace_changes_are_discovered_again() {
    let fx = fixture();
    let b = Arc::new(CountingBuilder::default());
    let w = start(fx.root(), b.clone(), 50, 2);

    // A service added (as a directory moved in, in one go) is built; removed, it is dropped.
    let staging = tempfile::tempdir().expect("tempdir");
    let d = staging.path().join("d");
    std::fs::create_dir_all(d.join("src")).expect("mkdir");
    std::fs::write(
        d.join("package.json"),
        "{\"name\":\"@fx/d\",\"dependencies\":{\"@fx/shared\":\"workspace:*\"}}\n",
    )
    .expect("write");
    std::fs::write(d.join("Dockerfile"), tests::fixture_dockerfile("d")).expect("write");
    std::fs::write(d.join("src/index.ts"), "d\n").expect("write");
    let (mark, n) = (w.len(), b.count());
    // Both temp directories are in the same file system: one rename moves it in.
    std::fs::rename(&d, fx.path("services/d")).expect("move in");
    w.settles_on_cold_keys(fx.root(), mark);
    assert_eq!(b.since(n), ["d"]);

    // An edit inside the moved-in directory is seen (it is watched).
    let (mark, n) = (w.len(), b.count());
    fx.write("services/d/src/index.ts", "d2\n");
    w.settles_on_cold_keys(fx.root(), mark);
    assert_eq!(b.since(n), ["d"]);

    let mark = w.len();
    std::fs::remove_dir_all(fx.path("services/d")).expect("rm");
    w.settles_on_cold_keys(fx.root(), mark);
    assert!(!keys(fx.root()).contains_key("d"));

    // A directory renamed inside a service; then a file in it is edited.
    let (mark, n) = (w.len(), b.count());
    fx.rename("services/a/src/lib", "services/a/src/core");
    w.settles_on_cold_keys(fx.root(), mark);
    assert_eq!(b.since(n), ["a"]);
    let (mark, n) = (w.len(), b.count());
    fx.write("services/a/src/core/deep.ts", "export const deep = 2;\n");
    w.settles_on_cold_keys(fx.root(), mark);
    assert_eq!(b.since(n), ["a"]);
    // Removed and made again under the same name (a new directory to watch), then edited.
    let (mark, n) = (w.len(), b.count());
    std::fs::remove_dir_all(fx.path("services/a/src/core")).expect("rm");
    fx.write("services/a/src/core/deep.ts", "export const deep = 3;\n");
    w.settles_on_cold_keys(fx.root(), mark);
    assert_eq!(b.since(n), ["a"]);
    let (mark, n) = (w.len(), b.count());
    fx.write("services/a/src/core/deep.ts", "export const deep = 4;\n");
    w.settles_on_cold_keys(fx.root(), mark);
    assert_eq!(b.since(n), ["a"]);

    // b gets an ignore file of its own that excludes a file of b: only b's context changes.
    let (mark, n) = (w.len(), b.count());
    fx.write("services/b/src/extra.ts", "x\n");
    w.settles_on_cold_keys(fx.root(), mark);
    assert_eq!(b.since(n), ["b"]);
    let (mark, n) = (w.len(), b.count());
    fx.write(
        "services/b/Dockerfile.dockerignore",
        &format!("{}**/extra.ts\n", fx.read(".dockerignore")),
    );
    w.settles_on_cold_keys(fx.root(), mark);
    assert_eq!(b.since(n), ["b"]);
    let explain = tests::analyze(fx.root());
    let b_files = &explain
        .images
        .iter()
        .find(|i| explain.ws.services[i.service].name == "b")
        .expect("b")
        .context
        .files;
    assert!(!b_files.iter().any(|f| f.path.ends_with("extra.ts")));
    // The root `.dockerignore`: a pattern that leaves out nothing any context holds changes no
    // key; one that leaves out a file every context holds rebuilds all three.
    let (mark, n) = (w.len(), b.count());
    fx.write(
        ".dockerignore",
        &format!("{}**/*.tmp\n", fx.read(".dockerignore")),
    );
    w.settles_on_cold_keys(fx.root(), mark);
    assert_eq!(b.since(n), Vec::<String>::new());
    // (b has an ignore file of its own since the step above: its context does not change.)
    let (mark, n) = (w.len(), b.count());
    fx.write(
        ".dockerignore",
        &format!("{}shared/src/index.ts\n", fx.read(".dockerignore")),
    );
    w.settles_on_cold_keys(fx.root(), mark);
    assert_eq!(b.since(n), ["a", "c"]);

    // A Dockerfile edit rebuilds its image; a root file every context holds rebuilds all.
    let (mark, n) = (w.len(), b.count());
    fx.write(
        "services/c/Dockerfile",
        &format!("{}LABEL x=1\n", fx.read("services/c/Dockerfile")),
    );
    w.settles_on_cold_keys(fx.root(), mark);
    assert_eq!(b.since(n), ["c"]);
    let (mark, n) = (w.len(), b.count());
    fx.write(".npmrc", "auto-install-peers=false\n");
    w.settles_on_cold_keys(fx.root(), mark);
    assert_eq!(b.since(n), ["a", "b", "c"]);

    // The template is in no context: nothing builds, but the watch says which Dockerfiles it
    // would render differently.
    let (mark, n) = (w.len(), b.count());
    fx.write(
        "services/Dockerfile.template",
        "FROM node:18-alpine\nCOPY services/<SERVICE_NAME>/ /app/\n",
    );
    w.wait("the stale Dockerfiles warning", mark, |e| {
        matches!(e, Event::Warning { message }
            if message.contains("services/a/Dockerfile") && message.contains("cargo xtask dockerfiles"))
    });
    w.settles_on_cold_keys(fx.root(), mark);
    assert_eq!(b.since(n), Vec::<String>::new());
}

#[test]
fn an_image_built_from_another_is_rebuilt_after_it() {
    let fx = project()
        .shared()
        .service("base", &[])
        .service("app", &[])
        .file(
            "services/app/Dockerfile",
            "FROM base:latest\nCOPY services/app/ /app/\n",
        )
        .build();
    let b = Arc::new(CountingBuilder::with_delay(300));
    let w = start(fx.root(), b.clone(), 50, 2);
    let (mark, n) = (w.len(), b.count());
    // Only base's source changes; app's key changes with base's key.
    fx.write("services/base/src/index.ts", "base2\n");
    w.settles_on_cold_keys(fx.root(), mark);
    assert_eq!(b.since(n), ["app", "base"]);
    let events = w.events();
    let pos = |pred: &dyn Fn(&Event) -> bool| {
        events[mark..]
            .iter()
            .position(pred)
            .unwrap_or_else(|| panic!("{}", describe(&events[mark..])))
    };
    let base_done =
        pos(&|e| matches!(e, Event::BuildFinished { service, .. } if service == "base"));
    let app_start = pos(&|e| matches!(e, Event::BuildStarted { service, .. } if service == "app"));
    let app_queued = pos(&|e| matches!(e, Event::Queued { service, .. } if service == "app"));
    assert!(app_queued < base_done && base_done < app_start);
    // app's build names what changed it: base's file.
    assert!(matches!(&events[mark + app_start],
        Event::BuildStarted { trigger: Some(t), .. } if t == "services/base/src/index.ts"));
}

#[test]
fn lost_events_end_in_a_rescan_not_stale_keys() {
    let fx = fixture();
    let b = Arc::new(CountingBuilder::default());
    let w = start(fx.root(), b.clone(), 50, 2);
    let (mark, n) = (w.len(), b.count());
    // The kernel queue overflows: the events of this edit are lost, then the overflow is said.
    w.faults.lose_events(true);
    fx.write("services/b/src/index.ts", "lost\n");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(b.count(), n, "nothing was seen");
    w.faults.lose_events(false);
    w.faults.overflow();
    w.wait("the rescan", mark, |e| matches!(e, Event::Rescan { .. }));
    w.settles_on_cold_keys(fx.root(), mark);
    assert_eq!(b.since(n), ["b"]);
}

/// One step of an editing session.
#[derive(Debug, Clone)]
enum Op {
    Write(usize, u8),
    IdenticalSave(usize),
    Vim(usize, u8),
    JetBrains(usize, u8),
    Delete(usize),
    Rename(usize, usize),
    Chmod(usize, bool),
    RenameDir,
    /// The directory removed and made again under the same name (a new inode to watch).
    RecreateDir(u8),
    /// A workspace file: `services/b/package.json` with another version.
    PackageVersion(u8),
    AddService,
    RemoveService,
    Pause(u64),
}

const PATHS: &[&str] = &[
    "services/a/src/index.ts",
    "services/a/src/util.ts",
    "services/a/src/lib/deep.ts",
    "services/b/src/index.ts",
    "services/b/src/extra.ts",
    "shared/src/index.ts",
    ".npmrc",
    "services/b/debug.log",
    "services/a/dist/out.js",
    "docs/notes.txt",
];

fn op() -> impl Strategy<Value = Op> {
    let p = 0..PATHS.len();
    prop_oneof![
        4 => (p.clone(), 0..3u8).prop_map(|(p, c)| Op::Write(p, c)),
        2 => p.clone().prop_map(Op::IdenticalSave),
        2 => (p.clone(), 0..3u8).prop_map(|(p, c)| Op::Vim(p, c)),
        2 => (p.clone(), 0..3u8).prop_map(|(p, c)| Op::JetBrains(p, c)),
        1 => p.clone().prop_map(Op::Delete),
        1 => (p.clone(), p.clone()).prop_map(|(a, b)| Op::Rename(a, b)),
        1 => (p, any::<bool>()).prop_map(|(p, x)| Op::Chmod(p, x)),
        1 => Just(Op::RenameDir),
        1 => (0..3u8).prop_map(Op::RecreateDir),
        1 => (0..3u8).prop_map(Op::PackageVersion),
        1 => Just(Op::AddService),
        1 => Just(Op::RemoveService),
        2 => (0..120u64).prop_map(Op::Pause),
    ]
}

fn apply(fx: &Fixture, op: &Op) {
    let text = |c: u8| format!("export const v = {c};\n");
    let path = |i: usize| {
        // The lib directory may be renamed: follow it.
        let p = PATHS[i];
        if p.contains("/lib/") && !fx.path("services/a/src/lib").exists() {
            p.replace("/lib/", "/lib2/")
        } else {
            p.to_string()
        }
    };
    match op {
        Op::Write(i, c) => fx.write(&path(*i), &text(*c)),
        Op::IdenticalSave(i) => {
            if let Ok(t) = std::fs::read_to_string(fx.path(&path(*i))) {
                fx.write(&path(*i), &t);
            }
        }
        Op::Vim(i, c) => {
            if let Some(parent) = fx.path(&path(*i)).parent() {
                std::fs::create_dir_all(parent).expect("mkdir");
            }
            vim_save(fx, &path(*i), &text(*c))
        }
        Op::JetBrains(i, c) => {
            if let Some(parent) = fx.path(&path(*i)).parent() {
                std::fs::create_dir_all(parent).expect("mkdir");
            }
            jetbrains_save(fx, &path(*i), &text(*c))
        }
        Op::Delete(i) => {
            let _ = std::fs::remove_file(fx.path(&path(*i)));
        }
        Op::Rename(a, b) => {
            let (a, b) = (fx.path(&path(*a)), fx.path(&path(*b)));
            if a.is_file() {
                if let Some(parent) = b.parent() {
                    std::fs::create_dir_all(parent).expect("mkdir");
                }
                std::fs::rename(a, b).expect("rename");
            }
        }
        Op::Chmod(i, x) => {
            if fx.path(&path(*i)).is_file() {
                fx.set_executable(&path(*i), *x);
            }
        }
        Op::RenameDir => {
            let (a, b) = (
                fx.path("services/a/src/lib"),
                fx.path("services/a/src/lib2"),
            );
            if a.is_dir() {
                std::fs::rename(a, b).expect("rename dir");
            } else if b.is_dir() {
                std::fs::rename(b, a).expect("rename dir");
            }
        }
        Op::RecreateDir(c) => {
            let dir = ["services/a/src/lib", "services/a/src/lib2"]
                .into_iter()
                .find(|d| fx.path(d).is_dir())
                .unwrap_or("services/a/src/lib");
            let _ = std::fs::remove_dir_all(fx.path(dir));
            fx.write(&format!("{dir}/deep.ts"), &text(*c));
        }
        Op::PackageVersion(c) => fx.write(
            "services/b/package.json",
            &format!(
                "{{\"name\":\"@fx/b\",\"version\":\"1.0.{c}\",\"dependencies\":{{\"@fx/shared\":\"workspace:*\"}}}}\n"
            ),
        ),
        Op::AddService => {
            if !fx.path("services/z").exists() {
                fx.write("services/z/src/index.ts", "z\n");
                fx.write("services/z/Dockerfile", &tests::fixture_dockerfile("z"));
                fx.write("services/z/package.json", "{\"name\":\"@fx/z\"}\n");
            }
        }
        Op::RemoveService => {
            let _ = std::fs::remove_dir_all(fx.path("services/z"));
        }
        Op::Pause(ms) => std::thread::sleep(Duration::from_millis(*ms)),
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 12,
        max_shrink_iters: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// After any editing session, the keys the watch holds are a cold run's keys, and no image
    /// ever had two builds at once.
    #[test]
    fn the_watch_holds_the_cold_keys_after_any_edits(ops in prop::collection::vec(op(), 1..24)) {
        let fx = fixture();
        let b = Arc::new(CountingBuilder::default());
        let w = start(fx.root(), b.clone(), 50, 2);
        let mark = w.len();
        for op in &ops {
            apply(&fx, op);
        }
        w.settles_on_cold_keys(fx.root(), mark);
        prop_assert!(b.max_same.load(Ordering::SeqCst) <= 1);
    }
}

mod docker;
mod replace;
