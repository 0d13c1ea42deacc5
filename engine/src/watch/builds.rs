//! The watch's side of the run: which images to hand the run after a batch, and what a finished
//! job means to the watch (its events, which key `latest` holds, `compose up`).
//!
//! Rules: an image is submitted when its key is neither the one its `latest` holds nor the key
//! of its last failed job, and no job of that key is under way. The run ([`crate::run`]) does the
//! rest exactly as for `images`: local tier, remote tier, build, verify, record, publish, in DAG
//! order, `jobs` at a time, one job per image at a time; a key that moves while its image builds
//! leaves exactly one follow-up (the newest key), and the build it supersedes records nothing.
//! A key that is cached again (an edit undone) needs no build: `latest` is pointed back at it.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::Scope;
use std::time::{Duration, Instant};

use crate::digest::ImageKey;
use crate::run::hold::Hold;
use crate::run::{self, ImageReport, Outcome, Runner};
use crate::tier::{Lookup, Tier, Want};

use super::compose::Compose;
use super::state::{Changed, State};
use super::{BuildResult, Event, Msg};

/// What the watch's side works with.
pub(crate) struct Ctx<'a> {
    pub runner: &'a Runner<'a>,
    pub on_event: &'a (dyn Fn(Event) + Sync),
    pub tx: Sender<Msg>,
    pub compose: Option<&'a Compose>,
    /// `--up` puts a rebuilt image into service while it is verified (by its id; `latest` moves
    /// only after it passed), instead of after.
    pub serve_early: bool,
    /// Verifications held while their image is served early (`run::hold`): released here when
    /// its new container answered, or when it is not served after all.
    pub hold: Option<Arc<Hold>>,
}

impl Ctx<'_> {
    fn release(&self, image_id: &str) {
        if let Some(h) = &self.hold {
            h.release(image_id);
        }
    }
}

/// How long a new container may take to answer its health check.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(60);

/// The first healthy answer of a service's new container, or why there was none.
#[derive(Debug)]
pub struct Healthy {
    service: String,
    compose_service: String,
    /// When it answered (`None`: the image has no health check).
    result: Result<Option<Instant>, String>,
    /// When the `up` that made it ended, and the save that led to it.
    up_at: Instant,
    saved_at: Option<Instant>,
}

/// An `up` that ended.
#[derive(Debug)]
pub struct UpDone {
    service: String,
    compose_service: String,
    /// What ran.
    job: UpJob,
    result: UpResult,
    duration: Duration,
}

#[derive(Debug)]
enum UpResult {
    Ok,
    /// A replacement that cannot be made (nothing changed): Compose does it.
    NotApplicable(String),
    Failed(String),
}

/// What `--up` does for a service; one at a time (see `Builds::up_running`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum UpJob {
    /// Replace the service's containers with ones running `image_id` (the Engine API, exactly
    /// what Compose would make, in a fraction of its time). `verified`: the image passed
    /// verification (else it is being verified meanwhile, and `latest` does not hold it yet).
    Replace { image_id: String, verified: bool },
    /// `compose up -d --no-deps`: the image `latest` holds (when a replacement cannot be made).
    Compose,
    /// `compose up -d --no-deps --force-recreate`: the last verified image (`latest`) back in
    /// service, after the one served early failed.
    Restore,
}

/// An image in service by a replacement, for a service.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Served {
    /// The image's name (for its compose service) and id.
    image: String,
    image_id: String,
    /// It passed verification (its job finished well and was recorded).
    verified: bool,
}

#[derive(Default)]
pub(crate) struct Builds {
    /// The key whose image `<image>:latest` holds, per service, as far as we know.
    live: HashMap<String, ImageKey>,
    /// The key whose job failed last, per service: not tried again until the key moves.
    failed: HashMap<String, ImageKey>,
    /// The key last submitted per service, until its job is reported.
    inflight: HashMap<String, ImageKey>,
    /// The key being built per service.
    building: HashMap<String, ImageKey>,
    /// The file that last changed each service's key.
    triggers: HashMap<String, String>,
    /// Services whose key moved while a build of them ran.
    follow_ups: HashSet<String>,
    /// The service whose `compose up` runs: one at a time, since two at once race to create the
    /// project's network (Compose v1 then makes two, and every later `up` fails).
    up_running: Option<String>,
    /// `up`s asked for meanwhile, in order, each service once (the newest ask wins):
    /// (service, image, what).
    up_queue: Vec<(String, String, UpJob)>,
    /// The image each service's containers run (or will, once the queued replacement ran) by a
    /// replacement; gone when Compose takes over.
    served: HashMap<String, Served>,
    /// Images whose replacement could not be made: Compose brings them up.
    no_replace: HashSet<(String, String)>,
    /// Services whose replacement was said to be impossible (said once).
    replace_warned: HashSet<String>,
    /// When the save that moved each service's key happened (the batch's first file event):
    /// the start of the save-to-healthy time.
    saved_at: HashMap<String, Instant>,
    /// Compose services already warned about.
    no_compose_service: HashSet<String>,
    stopping: bool,
}

impl Builds {
    /// What the engine already holds: the images whose key is cached and named by `latest`.
    pub fn init(&mut self, state: &State, cx: &Ctx<'_>) -> crate::Result<()> {
        let a = &state.analysis;
        let local = &cx.runner.local;
        local.refresh();
        for img in &a.images {
            let svc = &a.ws.services[img.service];
            let want = Want {
                service: &svc.name,
                image: &svc.image,
                key: &img.key,
            };
            if let Lookup::Hit(hit) = local.lookup(&want)? {
                let latest = hit
                    .image_id
                    .as_deref()
                    .is_none_or(|id| local.is_latest(&svc.image, id));
                if latest {
                    self.live.insert(svc.name.clone(), img.key);
                }
            }
        }
        Ok(())
    }

    /// Nothing is under way.
    pub fn is_idle(&self) -> bool {
        self.inflight.is_empty() && self.up_running.is_none() && self.up_queue.is_empty()
    }

    /// Notes the keys a batch moved: their triggers, and when the save was.
    pub fn note(&mut self, changed: &[Changed], saved_at: Option<Instant>) {
        for c in changed {
            if c.new.is_none() {
                self.triggers.remove(&c.service);
            } else {
                self.triggers.insert(c.service.clone(), c.trigger.clone());
            }
            if let Some(t) = saved_at {
                self.saved_at.insert(c.service.clone(), t);
            }
        }
    }

    /// Hands the run every image whose key is not the one it holds.
    pub fn evaluate(&mut self, state: &State, cx: &Ctx<'_>) {
        if self.stopping {
            return;
        }
        let a = &state.analysis;
        for img in &a.images {
            let name = &a.ws.services[img.service].name;
            let key = img.key;
            match self.inflight.get(name) {
                Some(k) if *k == key => continue,
                Some(_) => {}
                None if self.live.get(name) == Some(&key)
                    || self.failed.get(name) == Some(&key) =>
                {
                    continue
                }
                None => {}
            }
            if self.building.contains_key(name) {
                self.follow_ups.insert(name.clone());
            }
            self.inflight.insert(name.clone(), key);
            cx.runner.submit(cx.runner.job(a, img));
        }
    }

    /// An event of the run, on the watch's thread.
    pub fn on_run_event<'s, 'e: 's>(
        &mut self,
        e: run::Event,
        cx: &'e Ctx<'e>,
        scope: &'s Scope<'s, 'e>,
    ) {
        let emit = cx.on_event;
        match e {
            run::Event::Planned(_) | run::Event::Line { .. } => {}
            run::Event::Waiting { service, key, why } => emit(Event::Queued {
                service,
                key: key.to_hex(),
                why,
            }),
            run::Event::Started {
                service,
                key,
                reasons,
            } => {
                self.building.insert(service.clone(), key);
                emit(Event::BuildStarted {
                    trigger: self.triggers.get(&service).cloned(),
                    reasons: reasons.iter().map(|r| r.to_string()).collect(),
                    follow_up: self.follow_ups.remove(&service),
                    key: key.to_hex(),
                    service,
                });
            }
            run::Event::Step { service, step } => emit(Event::BuildStep { service, step }),
            run::Event::Built {
                service,
                image,
                key,
                image_id,
            } => {
                // Into service while it is verified, unless a newer build of it is due.
                let serving = cx.serve_early
                    && self.inflight.get(&service) == Some(&key)
                    && self.serve(&service, &image, image_id.clone(), false, cx, scope);
                if !serving {
                    cx.release(&image_id);
                }
            }
            run::Event::Pulling { service, reference } => emit(Event::Registry {
                service,
                message: format!("pulling from {reference}"),
            }),
            run::Event::Registry { service, message } => emit(Event::Registry { service, message }),
            run::Event::Warning { message } => emit(Event::Warning { message }),
            run::Event::Finished(r) => self.finished(*r, cx, scope),
        }
    }

    /// A job ended: what `latest` holds now, the event, and what runs.
    fn finished<'s, 'e: 's>(&mut self, r: ImageReport, cx: &'e Ctx<'e>, scope: &'s Scope<'s, 'e>) {
        if self.building.get(&r.service) == Some(&r.key) {
            self.building.remove(&r.service);
        }
        if self.inflight.get(&r.service) == Some(&r.key) {
            self.inflight.remove(&r.service);
        }
        let emit = cx.on_event;
        let good = r.error.is_none() && !r.verify_failed();
        if r.outcome == Outcome::Cached && good {
            self.live.insert(r.service.clone(), r.key);
            self.failed.remove(&r.service);
            self.triggers.remove(&r.service);
            emit(Event::Restored {
                service: r.service.clone(),
                key: r.key.to_hex(),
                image_id: r.image_id.clone().unwrap_or_default(),
                registry: r.registry.clone(),
            });
            if let Some(id) = r.image_id.clone() {
                self.serve(&r.service, &r.image, id, true, cx, scope);
            }
            return;
        }
        let result = match r.outcome {
            Outcome::Built if good => BuildResult::Built,
            Outcome::Skipped if r.skipped_because.as_deref() == Some("interrupted") => {
                BuildResult::Interrupted
            }
            Outcome::Skipped => BuildResult::Skipped,
            _ if r.interrupted => BuildResult::Interrupted,
            _ => BuildResult::Failed,
        };
        if result == BuildResult::Built && r.recorded {
            self.live.insert(r.service.clone(), r.key);
            self.failed.remove(&r.service);
        }
        if matches!(result, BuildResult::Failed | BuildResult::Skipped) && !r.superseded {
            self.failed.insert(r.service.clone(), r.key);
        }
        let error = r.error.clone().or_else(|| r.skipped_because.clone());
        emit(Event::BuildFinished {
            service: r.service.clone(),
            key: r.key.to_hex(),
            result,
            image_id: r.image_id.clone(),
            duration_ms: r.duration.map(|d| d.as_millis() as u64).unwrap_or(0),
            recorded: r.recorded,
            superseded: r.superseded,
            error,
            log_tail: r.log_tail.clone(),
            log: r.log.as_ref().map(|p| p.display().to_string()),
            registry: r.registry.clone(),
        });
        if result == BuildResult::Built && r.recorded {
            let id = r.image_id.clone().unwrap_or_default();
            match self.served.get_mut(&r.service) {
                // Already in service (or on its way) while it was verified: now it is.
                Some(s) if s.image_id == id => s.verified = true,
                _ => {
                    self.serve(&r.service, &r.image, id, true, cx, scope);
                }
            }
            return;
        }
        // No verified image of this job: if one served early is running unverified and no
        // newer build of the service is due, the last verified image goes back into service.
        let unverified = self.served.get(&r.service).is_some_and(|s| !s.verified);
        if unverified && !self.inflight.contains_key(&r.service) {
            self.served.remove(&r.service);
            if !self.stopping {
                emit(Event::Warning {
                    message: format!(
                        "{}: the image put into service while it was verified did not pass ({}); the last verified image goes back into service",
                        r.service,
                        r.error.as_deref().unwrap_or("its job failed")
                    ),
                });
            }
            self.enqueue(&r.service, &r.image, UpJob::Restore, cx, scope);
        }
    }

    /// Puts `image_id` into service for `service`: a replacement of its containers, queued;
    /// whether one was.
    fn serve<'s, 'e: 's>(
        &mut self,
        service: &str,
        image: &str,
        image_id: String,
        verified: bool,
        cx: &'e Ctx<'e>,
        scope: &'s Scope<'s, 'e>,
    ) -> bool {
        if cx.compose.is_none() {
            return false;
        }
        if self
            .no_replace
            .contains(&(service.to_string(), image_id.clone()))
        {
            // Its replacement could not be made when it was served early: Compose, once verified.
            if verified {
                self.served.remove(service);
                self.enqueue(service, image, UpJob::Compose, cx, scope);
            }
            return false;
        }
        self.served.insert(
            service.to_string(),
            Served {
                image: image.to_string(),
                image_id: image_id.clone(),
                verified,
            },
        );
        self.enqueue(
            service,
            image,
            UpJob::Replace { image_id, verified },
            cx,
            scope,
        )
    }

    /// Queues an `up` for a service (replacing one of it that waits), or runs it now; whether
    /// it did.
    fn enqueue<'s, 'e: 's>(
        &mut self,
        service: &str,
        image: &str,
        job: UpJob,
        cx: &'e Ctx<'e>,
        scope: &'s Scope<'s, 'e>,
    ) -> bool {
        let Some(compose) = cx.compose else {
            return false;
        };
        if self.stopping && job != UpJob::Restore {
            return false;
        }
        let Some(cs) = compose.service_for(image, service) else {
            self.served.remove(service);
            if self.no_compose_service.insert(service.to_string()) {
                (cx.on_event)(Event::Warning {
                    message: format!(
                        "no service of `{}` runs `{image}`: --up leaves {service} alone",
                        compose.file.display()
                    ),
                });
            }
            return false;
        };
        if self.up_running.is_some() {
            self.up_queue.retain(|(s, _, j)| {
                let keep = s != service;
                if let (false, UpJob::Replace { image_id, .. }) = (keep, j) {
                    cx.release(image_id);
                }
                keep
            });
            self.up_queue
                .push((service.to_string(), image.to_string(), job));
            return true;
        }
        self.up_running = Some(service.to_string());
        let tx = cx.tx.clone();
        let service = service.to_string();
        let saved_at = match &job {
            UpJob::Restore => None,
            _ => self.saved_at.remove(&service),
        };
        let stop = cx.runner.cancel_flag();
        let hold = cx.hold.clone();
        let held = match &job {
            UpJob::Replace { image_id, .. } => Some(image_id.clone()),
            _ => None,
        };
        scope.spawn(move || {
            let t = Instant::now();
            let result = match &job {
                UpJob::Replace { image_id, .. } => match compose.replace(&cs, image_id) {
                    Ok(_) => UpResult::Ok,
                    Err(super::replace::Replace::NotApplicable(why)) => {
                        UpResult::NotApplicable(why)
                    }
                    Err(super::replace::Replace::Failed(e)) => UpResult::Failed(e),
                },
                UpJob::Compose => match compose.up(&cs, false) {
                    Ok(()) => UpResult::Ok,
                    Err(e) => UpResult::Failed(e),
                },
                UpJob::Restore => match compose.up(&cs, true) {
                    Ok(()) => UpResult::Ok,
                    Err(e) => UpResult::Failed(e),
                },
            };
            let up_at = Instant::now();
            let ok = matches!(result, UpResult::Ok);
            let restore = job == UpJob::Restore;
            let release = || {
                if let (Some(h), Some(id)) = (&hold, &held) {
                    h.release(id);
                }
            };
            if !ok {
                release();
            }
            let _ = tx.send(Msg::UpDone(UpDone {
                service: service.clone(),
                compose_service: cs.clone(),
                job,
                result,
                duration: t.elapsed(),
            }));
            // The next `up` may start meanwhile: this waits on this service's container only.
            if ok && !restore {
                let result = compose.first_healthy(&cs, HEALTHY_TIMEOUT, &stop);
                release();
                let _ = tx.send(Msg::Healthy(Healthy {
                    service,
                    compose_service: cs,
                    result,
                    up_at,
                    saved_at,
                }));
            }
        });
        true
    }

    pub fn up_done<'s, 'e: 's>(&mut self, u: UpDone, cx: &'e Ctx<'e>, scope: &'s Scope<'s, 'e>) {
        self.up_running = None;
        let (via, verified) = match &u.job {
            // Verified meanwhile, perhaps.
            UpJob::Replace { image_id, verified } => (
                "engine",
                *verified
                    || self
                        .served
                        .get(&u.service)
                        .is_some_and(|s| s.image_id == *image_id && s.verified),
            ),
            UpJob::Compose | UpJob::Restore => ("compose", true),
        };
        let fallback = match (&u.job, &u.result) {
            (UpJob::Replace { image_id, .. }, UpResult::NotApplicable(why)) => {
                Some((image_id.clone(), why.clone(), false))
            }
            (UpJob::Replace { image_id, .. }, UpResult::Failed(e)) => {
                Some((image_id.clone(), e.clone(), true))
            }
            _ => None,
        };
        match fallback {
            None => (cx.on_event)(Event::Up {
                service: u.service.clone(),
                compose_service: u.compose_service,
                ok: matches!(u.result, UpResult::Ok),
                error: match u.result {
                    UpResult::Failed(e) | UpResult::NotApplicable(e) => Some(e),
                    UpResult::Ok => None,
                },
                duration_ms: u.duration.as_millis() as u64,
                via: via.to_string(),
                verified,
            }),
            Some((image_id, why, failed)) => {
                // Nothing changed (or what failed was put back): Compose does it, with the
                // image `latest` holds once this one is verified.
                if failed || self.replace_warned.insert(u.service.clone()) {
                    (cx.on_event)(Event::Warning {
                        message: format!(
                            "{}: {} the container directly ({why}); `compose up` brings it up after its verification",
                            u.service,
                            if failed { "could not replace" } else { "cannot replace" },
                        ),
                    });
                }
                self.no_replace
                    .insert((u.service.clone(), image_id.clone()));
                // Verified meanwhile: Compose brings it up now; else its job's end does.
                if self
                    .served
                    .get(&u.service)
                    .is_some_and(|s| s.image_id == image_id)
                {
                    if let Some(was) = self.served.remove(&u.service) {
                        if was.verified {
                            self.enqueue(&u.service, &was.image, UpJob::Compose, cx, scope);
                        }
                    }
                }
            }
        }
        if self.up_running.is_none() && !self.up_queue.is_empty() {
            let (service, image, job) = self.up_queue.remove(0);
            self.enqueue(&service, &image, job, cx, scope);
        }
    }

    /// A new container answered its health check (or did not).
    pub fn healthy(&mut self, h: Healthy, cx: &Ctx<'_>) {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let (ok, error, after_up, after_save) = match h.result {
            Ok(Some(at)) => (
                true,
                None,
                Some(ms(at.saturating_duration_since(h.up_at))),
                h.saved_at.map(|s| ms(at.saturating_duration_since(s))),
            ),
            Ok(None) => (
                true,
                Some("the image has no health check: not measured".to_string()),
                None,
                None,
            ),
            Err(e) => (false, Some(e), None, None),
        };
        (cx.on_event)(Event::Healthy {
            service: h.service,
            compose_service: h.compose_service,
            ok,
            error,
            up_to_healthy_ms: after_up,
            save_to_healthy_ms: after_save,
        });
    }

    /// Stops: the run cancels its builds (they end as interrupted, recording nothing) and skips
    /// what waits; no `up` starts any more.
    pub fn stop(&mut self, cx: &Ctx<'_>) {
        self.stopping = true;
        // What waits is dropped, except putting a verified image back.
        self.up_queue.retain(|(_, _, job)| *job == UpJob::Restore);
        cx.runner.stop();
    }

    /// Whether a job or an `up` is still under way.
    pub fn busy(&self) -> bool {
        !self.is_idle()
    }
}
