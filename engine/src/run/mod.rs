//! The run: the back half of the pipeline, the one every driver goes through (as cargo's
//! `ops::compile`). [`run`] takes an analysis, the options and an event sink, and decides for each
//! image, in DAG order and `jobs` at a time:
//!
//! 1. **local tier**: a record whose image is still in the engine with its key label: `cached`
//!    (the tag pair is pointed at it again);
//! 2. **remote tier** (an OCI registry, when configured): a key found there is pulled;
//! 3. **build**, when no tier holds the key;
//! 4. **verify** the image against the architecture's rules (once per key);
//! 5. **record** it in the local tier, and tag it `<image>:latest` and `<image>:key-…`;
//! 6. **publish**: push the key tag to the cache registry, and release tags (`--push`).
//!
//! Nothing reaches a registry tag unless that very image passed `verify` (a release by manifest
//! copy included: the publish step's gate pulls and verifies a registry image this run did not
//! verify); a pulled image is verified before it is recorded or tagged; a failed verification
//! records and publishes nothing and is reported failed. With a signing key, what is published
//! is signed; with `[trust] keys`, registry entries are taken only when signed (`crate::trust`). It returns data ([`Summary`]: each image's outcome and reasons, durations, the time
//! saved, the exit status) and emits [`Event`]s; it prints nothing.
//!
//! - `schedule`: the one DAG scheduler (jobs, dependencies, follow-ups, skips);
//! - `job`: one image's job, owning what its steps need;
//! - `steps`: the steps of one job;
//! - [`layers`]: the registry layer cache a build imports and exports;
//! - [`hold`]: a built image's verification held while a driver puts it into service.
//!
//! `watch` drives the same machinery (`Runner`) for each batch of changes, submitting jobs while
//! others run; a job superseded by a newer one for the same image records nothing.

pub mod hold;
mod job;
pub mod layers;
mod schedule;
mod steps;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::digest::ImageKey;
use crate::execute::{Backend, Images};
use crate::pipeline::{Analysis, ImageInputs};
use crate::plan::{Action, ImagePlan, Reason};
use crate::publish::Publisher;
use crate::tier::{LocalTier, RegistryTier, Tier};
use crate::{Error, Result};

pub(crate) use job::Job;
use schedule::{Next, Scheduler};

/// How long a build is expected to take when none was recorded yet.
const DEFAULT_EXPECTED_MS: u64 = 30_000;

/// How a run goes.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Jobs at once (at least one).
    pub jobs: usize,
    /// Go on with the other images after a failure.
    pub keep_going: bool,
    /// Build even when a tier holds the key.
    pub force: bool,
    /// Check each image against the architecture's rules before it is recorded or published.
    pub verify: bool,
    /// An OCI registry shared as a cache, `HOST[:PORT]/NAMESPACE`; the config's
    /// `cache-registry` when `None`.
    pub cache_registry: Option<String>,
    /// Use the cache registry without ever pushing (untrusted builds).
    pub cache_read_only: bool,
    /// Publish release tags: to `registry`, else to the cache registry.
    pub push: bool,
    pub registry: Option<String>,
    /// The release tags (`latest` when empty).
    pub tags: Vec<String>,
    /// Set to stop: running builds are cancelled, none is started, nothing unfinished recorded.
    pub cancel: Arc<AtomicBool>,
    /// Signs every manifest the run publishes (cache key tags, release tags), in cosign's
    /// format; the CLI reads it from `IMAGES_SIGNING_KEY` / `IMAGES_SIGNING_KEY_FILE`.
    pub signing_key: Option<Arc<cache::cosign::SigningKey>>,
    /// Built images whose verification waits while the driver serves them (`watch --up`).
    pub hold: Option<Arc<hold::Hold>>,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions {
            jobs: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            keep_going: false,
            force: false,
            verify: true,
            cache_registry: None,
            cache_read_only: false,
            push: false,
            registry: None,
            tags: Vec::new(),
            cancel: Arc::new(AtomicBool::new(false)),
            signing_key: None,
            hold: None,
        }
    }
}

/// What happened to one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Built,
    Cached,
    Failed,
    /// Not built: an image it builds FROM was not, or the run stopped first.
    Skipped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Built => "built",
            Outcome::Cached => "cached",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
        }
    }
}

/// One image's part of a run.
#[derive(Debug, Clone)]
pub struct ImageReport {
    pub service: String,
    pub image: String,
    pub key: ImageKey,
    pub outcome: Outcome,
    /// Why it needed a build (empty when cached).
    pub reasons: Vec<Reason>,
    /// Why it was skipped.
    pub skipped_because: Option<String>,
    /// The image, when one is in the engine.
    pub image_id: Option<String>,
    /// How long its build took.
    pub duration: Option<Duration>,
    /// Why it failed (a build, its verification, recording or publishing).
    pub error: Option<String>,
    /// The last lines of a failed build's log.
    pub log_tail: Option<String>,
    /// Where a failed build's log was saved.
    pub log: Option<PathBuf>,
    /// What the registry tiers and the release did (pulled, pushed, tagged).
    pub registry: Vec<String>,
    /// Where it was pulled from, when a registry tier held its key.
    pub pulled_from: Option<String>,
    /// Its verification against the architecture's rules.
    pub verify: Option<crate::verify::Report>,
    /// Recorded in the local tier by this run.
    pub recorded: bool,
    /// A newer job for the same image came while it built: nothing recorded or published.
    pub superseded: bool,
    /// The build was cancelled.
    pub interrupted: bool,
    /// The tag pair was moved to it.
    pub retagged: bool,
    /// Publishing its release tags failed.
    pub publish_failed: bool,
    /// How long its last build took (the time a cached image saves).
    pub expected_ms: u64,
}

impl ImageReport {
    fn new(job: &Job) -> ImageReport {
        ImageReport {
            service: job.service.clone(),
            image: job.image.clone(),
            key: job.key,
            outcome: Outcome::Skipped,
            reasons: job
                .plan
                .as_ref()
                .map(|p| p.reasons.clone())
                .unwrap_or_default(),
            skipped_because: None,
            image_id: None,
            duration: None,
            error: None,
            log_tail: None,
            log: None,
            registry: Vec::new(),
            pulled_from: None,
            verify: None,
            recorded: false,
            superseded: false,
            interrupted: false,
            retagged: false,
            publish_failed: false,
            expected_ms: job.expected_ms,
        }
    }

    /// Its verification failed (or could not be made).
    pub fn verify_failed(&self) -> bool {
        self.verify.as_ref().is_some_and(|v| !v.ok)
    }
}

/// The plan of one image and how long its last build took.
#[derive(Debug, Clone)]
pub struct Planned {
    pub plan: ImagePlan,
    pub expected_ms: u64,
}

/// What a run reports as it goes.
#[derive(Debug, Clone)]
pub enum Event {
    /// Before anything runs: every image's plan.
    Planned(Vec<Planned>),
    /// An image cannot start yet, and why.
    Waiting {
        service: String,
        key: ImageKey,
        why: String,
    },
    /// A build starts.
    Started {
        service: String,
        key: ImageKey,
        reasons: Vec<Reason>,
    },
    /// A build reached a step.
    Step {
        service: String,
        step: String,
    },
    /// A line of a build's output.
    Line {
        service: String,
        line: String,
    },
    /// A build made an image (by id); its verification, record and publication follow. Until
    /// the job's `Finished`, the image is unverified: nothing but a local container may use it.
    Built {
        service: String,
        /// Its image name (without a tag).
        image: String,
        key: ImageKey,
        image_id: String,
    },
    /// An image is pulled from a registry tier.
    Pulling {
        service: String,
        reference: String,
    },
    /// Something reached a registry or the engine's tags (pushed, tagged).
    Registry {
        service: String,
        message: String,
    },
    Warning {
        message: String,
    },
    /// An image is done.
    Finished(Box<ImageReport>),
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Every image, in the plan's order.
    pub images: Vec<ImageReport>,
    /// The run was cancelled.
    pub interrupted: bool,
    pub elapsed: Duration,
    /// What the cached images' builds took the last time.
    pub saved: Duration,
}

/// Counts of a summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub built: usize,
    pub cached: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Images whose verification failed (cached ones included).
    pub verify_failed: usize,
    pub publish_failed: usize,
}

impl Summary {
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for i in &self.images {
            match i.outcome {
                Outcome::Built => c.built += 1,
                Outcome::Cached => c.cached += 1,
                Outcome::Failed => c.failed += 1,
                Outcome::Skipped => c.skipped += 1,
            }
            c.verify_failed += usize::from(i.verify_failed());
            c.publish_failed += usize::from(i.publish_failed);
        }
        c
    }

    /// 130 when interrupted, 1 when anything failed, was skipped, broke a rule or was not
    /// published, else 0.
    pub fn exit_code(&self) -> i32 {
        let c = self.counts();
        if self.interrupted {
            130
        } else if c.failed + c.skipped + c.verify_failed + c.publish_failed > 0
            || self.images.iter().any(|i| i.error.is_some())
        {
            1
        } else {
            0
        }
    }
}

/// The plan alone (`images --dry-run`).
#[derive(Debug)]
pub struct DryRun {
    pub plans: Vec<ImagePlan>,
    /// Records were checked against an engine (else trusted: `cached` means "recorded").
    pub checked: bool,
    pub warnings: Vec<String>,
}

/// Plans without running: each image's key, `build` or `cached`, and why. With the engine's
/// images, a record is a hit only when its image is there with the key label.
pub fn plan(analysis: &Analysis, images: Option<&dyn Images>, force: bool) -> Result<DryRun> {
    let store = cache::Store::open(&analysis.cache_dir)?;
    let local = LocalTier::new(&store, images);
    let plans = crate::plan::plan(analysis, &local, force)?;
    Ok(DryRun {
        plans,
        checked: local.checks_engine(),
        warnings: store.take_warnings(),
    })
}

/// Runs the analysed images: plans them against the local tier, then runs every job (see the
/// module's documentation) and reports each image. Fails only when the run cannot start (the
/// store cannot be opened, an option is invalid, the engine's images cannot be listed).
pub fn run(
    analysis: &Analysis,
    opts: &RunOptions,
    backend: Backend<'_>,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<Summary> {
    let started = Instant::now();
    let store = cache::Store::open(&analysis.cache_dir)?;
    let reports: Mutex<Vec<ImageReport>> = Mutex::new(Vec::new());
    let sink = |e: Event| {
        if let Event::Finished(r) = &e {
            if let Ok(mut all) = reports.lock() {
                all.push((**r).clone());
            }
        }
        on_event(e);
    };
    let runner = Runner::new(&store, analysis, opts, backend, &sink)?;
    let plans = crate::plan::plan(analysis, &runner.local, opts.force)?;
    runner.store_warnings();
    let planned: Vec<Planned> = plans
        .iter()
        .map(|p| Planned {
            expected_ms: expected_ms(&store, &p.service),
            plan: p.clone(),
        })
        .collect();
    on_event(Event::Planned(planned.clone()));
    // A stage several of the images to build share is built once, first (see `warmup`); not
    // with a registry tier, which may hold the images themselves.
    if runner.remote.is_none() {
        let to_build: Vec<usize> = planned
            .iter()
            .filter(|p| p.needs_build())
            .map(|p| p.plan.index)
            .collect();
        crate::warmup::run(
            analysis,
            &to_build,
            backend.builder,
            opts.jobs,
            opts.cancel.clone(),
            runner.layout.work(),
            &sink,
        );
    }
    for p in planned {
        let Some(img) = analysis.image(p.plan.index) else {
            continue;
        };
        runner.submit(Job::new(
            analysis,
            img,
            Some(p.plan),
            opts.verify,
            p.expected_ms,
        ));
    }
    runner.close();
    std::thread::scope(|scope| {
        for _ in 0..opts.jobs.max(1) {
            scope.spawn(|| runner.work());
        }
    });
    let mut done = reports.into_inner().unwrap_or_default();
    let order: std::collections::HashMap<&str, usize> = plans
        .iter()
        .enumerate()
        .map(|(i, p)| (p.service.as_str(), i))
        .collect();
    done.sort_by_key(|r| order.get(r.service.as_str()).copied().unwrap_or(usize::MAX));
    let saved = done
        .iter()
        .filter(|r| r.outcome == Outcome::Cached)
        .map(|r| r.expected_ms)
        .sum();
    Ok(Summary {
        images: done,
        interrupted: opts.cancel.load(Ordering::SeqCst),
        elapsed: started.elapsed(),
        saved: Duration::from_millis(saved),
    })
}

/// How long the last build of a service took.
pub(crate) fn expected_ms(store: &cache::Store, service: &str) -> u64 {
    store
        .last_built(service)
        .and_then(|l| store.get_record(&l.key).ok().flatten())
        .map(|r| r.duration_ms)
        .filter(|&ms| ms > 0)
        .unwrap_or(DEFAULT_EXPECTED_MS)
}

/// The machinery of a run: the tiers, the backends, the scheduler and the event sink. `images`
/// makes one per run ([`run`]); `watch` keeps one for its whole session and submits each batch.
pub(crate) struct Runner<'a> {
    pub layout: cache::Layout,
    pub local: LocalTier<'a>,
    remote: Option<RegistryTier<'a>>,
    publisher: Option<Publisher<'a>>,
    backend: Backend<'a>,
    opts: RunOptions,
    sched: Scheduler,
    on_event: &'a (dyn Fn(Event) + Sync),
    /// Held by a build that exports BuildKit's inline cache ([`layers`]): one at a time.
    exports: std::sync::Mutex<()>,
}

impl<'a> Runner<'a> {
    /// Checks the options against the workspace's configuration and opens the tiers.
    pub fn new(
        store: &'a cache::Store,
        analysis: &Analysis,
        opts: &RunOptions,
        backend: Backend<'a>,
        on_event: &'a (dyn Fn(Event) + Sync),
    ) -> Result<Runner<'a>> {
        for t in &opts.tags {
            crate::workspace::validate_tag(t)
                .map_err(|e| Error::Other(format!("invalid --tag: {e}")))?;
        }
        if opts.push && opts.cache_read_only {
            return Err(Error::Other("--push and --cache-read-only contradict each other\n  hint: read-only builds (pull requests) never push".into()));
        }
        let cache_spec = opts
            .cache_registry
            .clone()
            .or_else(|| analysis.ws.config.images.cache_registry.clone());
        // Image indexes in a registry are read at this platform's entry.
        let platform = analysis
            .ws
            .config
            .images
            .platform
            .clone()
            .or_else(|| backend.images.and_then(|i| i.platform()));
        let platform = platform.as_deref();
        // Nothing reaches a registry unverified: without verification, nothing is pushed.
        let verify = opts.verify && backend.verifier.is_some();
        if opts.push && !verify {
            return Err(Error::Other("--push needs verification: nothing reaches a registry unless it passed verify\n  hint: drop --no-verify".into()));
        }
        let trust = crate::trust::Trust {
            signer: opts.signing_key.clone(),
            keys: analysis.ws.config.trusted_keys(&analysis.ws.root)?,
        };
        let read_only = opts.cache_read_only || !verify;
        let remote = cache_spec
            .as_deref()
            .map(|s| RegistryTier::new(s, platform, backend.images, read_only, trust.clone()))
            .transpose()?;
        if let Some(r) = &remote {
            let name = r.describe();
            if !opts.cache_read_only && !verify {
                on_event(Event::Warning {
                    message: format!(
                        "images are not verified (--no-verify): nothing is pushed to {name}"
                    ),
                });
            }
            if !r.label_only()
                && backend.builder.cache_export() != crate::execute::CacheExport::None
            {
                on_event(Event::Warning {
                    message: format!("the layer cache of {name} is not used: [trust] keys are set and layer caches carry no signature\n  hint: a fresh engine reruns every step of a missed image; signed entries are still pulled whole"),
                });
            }
            if r.label_only() {
                on_event(Event::Warning {
                    message: format!("entries of {name} are trusted by their key label only: anyone who can push there can plant one\n  hint: list the public keys whose signatures you trust under [trust] keys in images.toml (see docs/trust.md)"),
                });
            }
        }
        let pushes = opts.push || remote.as_ref().is_some_and(|r| r.writes());
        if pushes && !trust.keys.is_empty() && trust.signer.is_none() {
            on_event(Event::Warning {
                message: "no signing key: what this run pushes is unsigned, and runs that trust only [trust] keys refuse it\n  hint: set IMAGES_SIGNING_KEY_FILE (or IMAGES_SIGNING_KEY) and COSIGN_PASSWORD".into(),
            });
        }
        let publisher = if opts.push {
            let spec = opts.registry.clone().or(cache_spec).ok_or_else(|| {
                Error::Other("--push needs a registry\n  hint: pass --registry HOST[:PORT]/NAMESPACE (or --cache-registry)".into())
            })?;
            Some(Publisher::new(
                &spec,
                platform,
                &opts.tags,
                backend.images,
                trust,
            )?)
        } else {
            None
        };
        let layout = cache::Layout::new(&analysis.cache_dir);
        let work = layout.work();
        std::fs::create_dir_all(&work).map_err(|e| Error::io("create directory", &work, e))?;
        Ok(Runner {
            layout,
            local: LocalTier::new(store, backend.images),
            remote,
            publisher,
            backend,
            opts: RunOptions {
                verify,
                ..opts.clone()
            },
            sched: Scheduler::new(opts.jobs, opts.keep_going, opts.cancel.clone()),
            on_event,
            exports: std::sync::Mutex::new(()),
        })
    }

    fn emit(&self, e: Event) {
        (self.on_event)(e)
    }

    /// Says the store's warnings (corrupt entries moved aside).
    pub fn store_warnings(&self) {
        for message in self.local.records().take_warnings() {
            self.emit(Event::Warning { message });
        }
    }

    /// The job of analysed image `img`, planned when it starts.
    pub fn job(&self, analysis: &Analysis, img: &ImageInputs) -> Job {
        let expected = expected_ms(
            self.local.records(),
            &analysis.ws.services[img.service].name,
        );
        Job::new(analysis, img, None, self.opts.verify, expected)
    }

    /// Queues a job (see [`Scheduler::submit`]).
    pub fn submit(&self, job: Job) {
        let (service, key) = (job.service.clone(), job.key);
        if let Some(why) = self.sched.submit(job) {
            self.emit(Event::Waiting { service, key, why });
        }
    }

    /// No more jobs will come.
    pub fn close(&self) {
        self.sched.close();
    }

    /// Stops: running builds are cancelled, waiting jobs skipped, and the workers return.
    pub fn stop(&self) {
        self.opts.cancel.store(true, Ordering::SeqCst);
        self.sched.close();
        self.sched.wake();
    }

    /// A worker: takes jobs until the scheduler is closed and drained.
    pub fn work(&self) {
        let waiting = |j: &Job, why: &str| {
            if !j.announced.swap(true, Ordering::SeqCst) {
                self.emit(Event::Waiting {
                    service: j.service.clone(),
                    key: j.key,
                    why: why.to_string(),
                });
            }
        };
        loop {
            let report = match self.sched.next(&waiting) {
                Next::Done => return,
                Next::Skip(job, because) => {
                    let mut r = ImageReport::new(&job);
                    r.outcome = Outcome::Skipped;
                    r.skipped_because = Some(because);
                    r
                }
                Next::Run(job) => self.process(&job),
            };
            // Said before the scheduler lets what waits on it start: a job's end comes before
            // the start of a job that builds FROM it.
            let (service, key, outcome) = (report.service.clone(), report.key, report.outcome);
            self.emit(Event::Finished(Box::new(report)));
            self.sched.finished(&service, key, outcome);
        }
    }

    /// The flag that stops the run (set by [`Runner::stop`]).
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.opts.cancel.clone()
    }

    fn cancelled(&self) -> bool {
        self.opts.cancel.load(Ordering::SeqCst)
    }
}

impl Planned {
    pub fn needs_build(&self) -> bool {
        self.plan.action == Action::Build
    }
}
