//! The watch's build scheduler: which images to build after a batch, and what to do when a build
//! ends.
//!
//! Rules: an image is built when its key is neither cached (a record whose image still exists)
//! nor the key of its last failed build. At most one build of an image runs; a change to its
//! inputs meanwhile leaves exactly one follow-up, which is nothing more than "its key differs from
//! the running build's", looked at again when that build ends, so there can never be two pending.
//! Other images build in parallel up to `jobs`, an image after the in-repo images it builds
//! `FROM`. A key that is cached again (an edit undone) needs no build: `<image>:latest` is pointed
//! back at its image.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::Scope;
use std::time::{Duration, Instant};

use crate::digest::ImageKey;
use crate::execute::docker::{step_of, Docker};
use crate::execute::{self, BuildError, BuildOutput, Builder};
use crate::plan::{self, Action, ImagePlan};

use super::compose::Compose;
use super::state::{Changed, State};
use super::{BuildResult, Event, Msg};

/// What the scheduler works with.
pub struct Ctx<'a> {
    pub builder: &'a dyn Builder,
    pub on_event: &'a (dyn Fn(Event) + Sync),
    pub store: &'a cache::Store,
    pub tx: Sender<Msg>,
    pub work_dir: PathBuf,
    pub logs_dir: PathBuf,
    pub docker: Option<&'a Docker>,
    pub compose: Option<&'a Compose>,
    pub jobs: usize,
}

/// A build that ended.
#[derive(Debug)]
pub struct Done {
    service: String,
    key: ImageKey,
    result: Result<BuildOutput, BuildError>,
    duration: Duration,
}

/// A `compose up` that ended.
#[derive(Debug)]
pub struct UpDone {
    service: String,
    compose_service: String,
    result: Result<(), String>,
    duration: Duration,
}

struct Running {
    key: ImageKey,
    cancel: Arc<AtomicBool>,
}

#[derive(Default)]
pub struct Scheduler {
    running: HashMap<String, Running>,
    /// The key whose build failed last, per service: not tried again until the key moves.
    failed: HashMap<String, ImageKey>,
    /// The key whose image `<image>:latest` points at, per service, as far as we know.
    live: HashMap<String, ImageKey>,
    /// Image ids in the engine (`None`: no engine to ask; records are trusted).
    known_ids: Option<HashSet<String>>,
    /// The file that last changed each service's key.
    triggers: HashMap<String, String>,
    /// Services whose key moved while a build of them ran.
    follow_ups: HashSet<String>,
    /// The queued key announced per service (so it is said once).
    announced: HashMap<String, ImageKey>,
    /// The service whose `compose up` runs: one at a time, since two at once race to create the
    /// project's network (Compose v1 then makes two, and every later `up` fails).
    up_running: Option<String>,
    /// `up`s asked for meanwhile, in order, each service once: (service, image).
    up_queue: Vec<(String, String)>,
    /// Compose services already warned about.
    no_compose_service: HashSet<String>,
    stopping: bool,
}

impl Scheduler {
    /// What the engine already has: its image ids and which key each `latest` tag points at.
    pub fn init(&mut self, state: &State, cx: &Ctx<'_>) -> crate::Result<()> {
        let a = &state.analysis;
        let tags = match cx.docker {
            Some(d) => {
                self.known_ids = Some(d.image_ids()?);
                Some(d.tags()?)
            }
            None => None,
        };
        for img in &a.images {
            let svc = &a.ws.services[img.service];
            let Some(record) = cx.store.get_record(&img.key.to_hex())? else {
                continue;
            };
            let live = match &tags {
                Some(t) => t.get(&format!("{}:latest", svc.image)) == Some(&record.image_id),
                None => true,
            };
            if live {
                self.live.insert(svc.name.clone(), img.key);
            }
        }
        Ok(())
    }

    pub fn is_idle(&self) -> bool {
        self.running.is_empty() && self.up_running.is_none() && self.up_queue.is_empty()
    }

    /// Notes the keys a batch moved: their triggers, and follow-ups of running builds.
    pub fn note(&mut self, changed: &[Changed]) {
        for c in changed {
            if c.new.is_none() {
                self.triggers.remove(&c.service);
                continue;
            }
            self.triggers.insert(c.service.clone(), c.trigger.clone());
            if let Some(r) = self.running.get(&c.service) {
                if Some(r.key) != c.new {
                    self.follow_ups.insert(c.service.clone());
                }
            }
        }
    }

    /// Plans every image against the cache and starts the builds that can start.
    pub fn evaluate<'s, 'e: 's>(
        &mut self,
        state: &State,
        cx: &'e Ctx<'e>,
        scope: &'s Scope<'s, 'e>,
    ) {
        // A retag that finds its image gone makes the plan change: look twice at most.
        for _ in 0..2 {
            if !self.evaluate_once(state, cx, scope) {
                break;
            }
        }
    }

    fn evaluate_once<'s, 'e: 's>(
        &mut self,
        state: &State,
        cx: &'e Ctx<'e>,
        scope: &'s Scope<'s, 'e>,
    ) -> bool {
        if self.stopping {
            return false;
        }
        let a = &state.analysis;
        let ids = &self.known_ids;
        let plans = match plan::plan(a, cx.store, false, &mut |r| {
            ids.as_ref().is_none_or(|s| s.contains(&r.image_id))
        }) {
            Ok(p) => p,
            Err(e) => {
                (cx.on_event)(Event::Error {
                    message: format!("cannot plan: {e}"),
                });
                return false;
            }
        };
        for w in cx.store.take_warnings() {
            (cx.on_event)(Event::Warning { message: w });
        }
        let to_build: HashSet<usize> = plans
            .iter()
            .filter(|p| p.action == Action::Build && self.failed.get(&p.service) != Some(&p.key))
            .map(|p| p.index)
            .collect();
        let mut again = false;
        for p in &plans {
            match p.action {
                Action::Cached => {
                    // A build of another key runs: its image will have to be replaced by this
                    // one, once it ends.
                    if self.running.contains_key(&p.service)
                        || self.live.get(&p.service) == Some(&p.key)
                    {
                        continue;
                    }
                    self.failed.remove(&p.service);
                    self.announced.remove(&p.service);
                    let Some(id) = p.image_id.clone() else {
                        continue;
                    };
                    match self.retag(cx, p, &id) {
                        Ok(()) => {
                            self.live.insert(p.service.clone(), p.key);
                            self.triggers.remove(&p.service);
                            (cx.on_event)(Event::Restored {
                                service: p.service.clone(),
                                key: p.key.to_hex(),
                                image_id: id,
                            });
                            self.up(&p.service, &p.image, cx, scope);
                        }
                        Err(message) => {
                            (cx.on_event)(Event::Warning { message });
                            if let Some(ids) = &mut self.known_ids {
                                ids.remove(&id);
                            }
                            again = true;
                        }
                    }
                }
                Action::Build => {
                    if self.failed.get(&p.service) == Some(&p.key) {
                        continue;
                    }
                    if let Some(r) = self.running.get(&p.service) {
                        if r.key != p.key {
                            self.announce(
                                cx,
                                p,
                                "a build of it is running; one more build follows",
                            );
                        }
                        continue;
                    }
                    let dep = a.graph.image_deps[p.index].iter().find(|d| {
                        to_build.contains(*d) || self.running.contains_key(&a.ws.services[**d].name)
                    });
                    if let Some(d) = dep {
                        let why =
                            format!("waits for {}, which it builds FROM", a.ws.services[*d].name);
                        self.announce(cx, p, &why);
                        continue;
                    }
                    if self.running.len() >= cx.jobs.max(1) {
                        self.announce(cx, p, "waits for a free job (--jobs)");
                        continue;
                    }
                    self.start(state, p, cx, scope);
                }
            }
        }
        again
    }

    fn announce(&mut self, cx: &Ctx<'_>, p: &ImagePlan, why: &str) {
        if self.announced.get(&p.service) == Some(&p.key) {
            return;
        }
        self.announced.insert(p.service.clone(), p.key);
        (cx.on_event)(Event::Queued {
            service: p.service.clone(),
            key: p.key.to_hex(),
            why: why.to_string(),
        });
    }

    fn retag(&self, cx: &Ctx<'_>, p: &ImagePlan, id: &str) -> Result<(), String> {
        let Some(docker) = cx.docker else {
            return Ok(());
        };
        for tag in [
            format!("{}:latest", p.image),
            format!("{}:{}", p.image, execute::key_tag(&p.key)),
        ] {
            docker
                .tag(id, &tag)
                .map_err(|e| format!("cannot point `{tag}` at the cached image: {e}"))?;
        }
        Ok(())
    }

    fn start<'s, 'e: 's>(
        &mut self,
        state: &State,
        p: &ImagePlan,
        cx: &'e Ctx<'e>,
        scope: &'s Scope<'s, 'e>,
    ) {
        let cancel = Arc::new(AtomicBool::new(false));
        let Some(req) = execute::request(&state.analysis, p, cancel.clone(), cx.work_dir.clone())
        else {
            return;
        };
        self.announced.remove(&p.service);
        (cx.on_event)(Event::BuildStarted {
            service: p.service.clone(),
            key: p.key.to_hex(),
            trigger: self.triggers.get(&p.service).cloned(),
            reasons: p.reasons.iter().map(|r| r.to_string()).collect(),
            follow_up: self.follow_ups.remove(&p.service),
        });
        self.running
            .insert(p.service.clone(), Running { key: p.key, cancel });
        let (tx, builder, on_event) = (cx.tx.clone(), cx.builder, cx.on_event);
        let (service, key) = (p.service.clone(), p.key);
        scope.spawn(move || {
            let t = Instant::now();
            let on_line = |line: &str| {
                if let Some(step) = step_of(line) {
                    on_event(Event::BuildStep {
                        service: service.clone(),
                        step,
                    });
                }
            };
            let result = builder.build(&req, &on_line);
            let _ = tx.send(Msg::Done(Done {
                service,
                key,
                result,
                duration: t.elapsed(),
            }));
        });
    }

    /// A build ended: record it (when its key is still the image's), report it, bring the
    /// compose service up.
    pub fn finished<'s, 'e: 's>(
        &mut self,
        d: Done,
        state: &State,
        cx: &'e Ctx<'e>,
        scope: &'s Scope<'s, 'e>,
    ) {
        self.running.remove(&d.service);
        let a = &state.analysis;
        let index = a
            .images
            .iter()
            .map(|i| i.service)
            .find(|&s| a.ws.services[s].name == d.service);
        let superseded = state.key_of(&d.service) != Some(d.key);
        let duration_ms = d.duration.as_millis() as u64;
        match d.result {
            Ok(out) => {
                if let Some(ids) = &mut self.known_ids {
                    ids.insert(out.image_id.clone());
                }
                self.live.insert(d.service.clone(), d.key);
                self.failed.remove(&d.service);
                let mut recorded = false;
                if let (false, Some(s)) = (superseded, index) {
                    let image = &a.ws.services[s].image;
                    let tags = vec![
                        format!("{image}:latest"),
                        format!("{image}:{}", execute::key_tag(&d.key)),
                    ];
                    match plan::record_build(
                        cx.store,
                        a,
                        s,
                        &out.image_id,
                        tags,
                        duration_ms,
                        Some(&out.log),
                    ) {
                        Ok(_) => recorded = true,
                        Err(e) => (cx.on_event)(Event::Warning {
                            message: format!("could not record the build of {}: {e}", d.service),
                        }),
                    }
                }
                (cx.on_event)(Event::BuildFinished {
                    service: d.service.clone(),
                    key: d.key.to_hex(),
                    result: BuildResult::Built,
                    image_id: Some(out.image_id),
                    duration_ms,
                    recorded,
                    superseded,
                    error: None,
                    log_tail: None,
                    log: None,
                });
                if let Some(s) = index {
                    let image = a.ws.services[s].image.clone();
                    self.up(&d.service, &image, cx, scope);
                }
            }
            Err(e) => {
                let result = if e.interrupted {
                    BuildResult::Interrupted
                } else {
                    BuildResult::Failed
                };
                let mut log = None;
                if !e.interrupted {
                    if !superseded {
                        self.failed.insert(d.service.clone(), d.key);
                    }
                    let path = cx
                        .logs_dir
                        .join(format!("{}-{}.log", d.service, d.key.short(12)));
                    let saved = std::fs::create_dir_all(&cx.logs_dir)
                        .and_then(|()| std::fs::write(&path, e.log_tail.as_bytes()));
                    if saved.is_ok() {
                        log = Some(path.display().to_string());
                    }
                }
                (cx.on_event)(Event::BuildFinished {
                    service: d.service,
                    key: d.key.to_hex(),
                    result,
                    image_id: None,
                    duration_ms,
                    recorded: false,
                    superseded,
                    error: Some(e.message),
                    log_tail: (!e.log_tail.is_empty()).then_some(e.log_tail),
                    log,
                });
            }
        }
    }

    /// Runs `compose up` for a service; one `up` at a time.
    fn up<'s, 'e: 's>(
        &mut self,
        service: &str,
        image: &str,
        cx: &'e Ctx<'e>,
        scope: &'s Scope<'s, 'e>,
    ) {
        let Some(compose) = cx.compose else { return };
        if self.stopping {
            return;
        }
        let Some(cs) = compose.service_for(image, service) else {
            if self.no_compose_service.insert(service.to_string()) {
                (cx.on_event)(Event::Warning {
                    message: format!(
                        "no service of `{}` runs `{image}`: --up leaves {service} alone",
                        compose.file.display()
                    ),
                });
            }
            return;
        };
        if self.up_running.is_some() {
            if !self.up_queue.iter().any(|(s, _)| s == service) {
                self.up_queue.push((service.to_string(), image.to_string()));
            }
            return;
        }
        self.up_running = Some(service.to_string());
        let tx = cx.tx.clone();
        let service = service.to_string();
        scope.spawn(move || {
            let t = Instant::now();
            let result = compose.up(&cs);
            let _ = tx.send(Msg::UpDone(UpDone {
                service,
                compose_service: cs,
                result,
                duration: t.elapsed(),
            }));
        });
    }

    pub fn up_done<'s, 'e: 's>(&mut self, u: UpDone, cx: &'e Ctx<'e>, scope: &'s Scope<'s, 'e>) {
        self.up_running = None;
        (cx.on_event)(Event::Up {
            service: u.service.clone(),
            compose_service: u.compose_service,
            ok: u.result.is_ok(),
            error: u.result.err(),
            duration_ms: u.duration.as_millis() as u64,
        });
        if !self.up_queue.is_empty() {
            let (service, image) = self.up_queue.remove(0);
            self.up(&service, &image, cx, scope);
        }
    }

    /// Stops: running builds are cancelled (they end as interrupted, recording nothing) and no
    /// build or `up` starts any more.
    pub fn stop(&mut self) {
        self.stopping = true;
        self.up_queue.clear();
        for r in self.running.values() {
            r.cancel.store(true, Ordering::SeqCst);
        }
    }

    /// Whether a build or an `up` still runs.
    pub fn busy(&self) -> bool {
        !self.is_idle()
    }
}
