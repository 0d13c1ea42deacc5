//! Watch: rebuild the affected images on save (debounced file events, incremental re-hash).
//!
//! The loop, in [`Watcher::run`]:
//!
//! 1. `fswatch`: notify watches every directory a context could hold (not `.git`, the cache,
//!    or what every `.dockerignore` in use excludes); reads are not changes.
//! 2. `debounce`: a burst of events (a save, a rename-on-save, a `git checkout`) is one batch.
//! 3. `state`: the batch's paths move the analysis forward: files a context holds are re-hashed
//!    in place (only they are read); anything else (a workspace file, a file added or removed, a
//!    directory, a lost event) runs the pipeline's analysis again, warm.
//! 4. `builds`: the images whose key moved are handed to the run ([`crate::run`]), which does
//!    for them what it does for `images` (local tier, remote tier, build, verify, record, publish;
//!    `jobs` at a time, one build per image, one follow-up at most); with compose, they are
//!    brought up.
//!
//! The engine emits [`Event`]s; the CLI prints them. Errors are split by severity, as watchexec
//! does: a watch that cannot start is an error of `run`; a failed build, a workspace that does
//! not parse mid-edit, or lost events are events, and the loop goes on.

mod builds;
pub mod compose;
mod debounce;
mod fswatch;
pub mod replace;
mod state;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::execute::Backend;
use crate::pipeline;
use crate::run::{RunOptions, Runner};
use crate::Result;

use self::compose::Compose;
use self::debounce::Debounce;
use self::fswatch::{Faults, FsMsg, FsWatch};
use self::state::State;

/// The default quiet period that ends a batch (watchexec's default is 50 ms).
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(50);
/// A batch ends after this long even if events keep coming.
const MAX_BATCH: Duration = Duration::from_secs(2);
/// How often the loop looks at its stop flag when nothing happens.
const TICK: Duration = Duration::from_millis(100);
/// How long a stopping watch waits for its cancelled builds to end.
const STOP_WAIT: Duration = Duration::from_secs(60);
/// How often a degraded watch (some directories unwatched) rescans.
const DEGRADED_RESCAN: Duration = Duration::from_secs(2);

/// How a watch runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The root, cache directory, selected services and build arguments.
    pub pipeline: pipeline::Options,
    /// The quiet period that ends a batch of events.
    pub debounce: Duration,
    /// How each batch's run goes: jobs at once, verification, the cache registry, publishing.
    /// It always keeps going past a failure; its cancel flag is the watch's own.
    pub run: RunOptions,
    /// `--up`: the compose client and file.
    pub compose: Option<Compose>,
    /// With `--up`: put a rebuilt image into service while it is verified (the default), or
    /// only after it passed (`--up-after-verify`).
    pub serve_early: bool,
}

impl Options {
    pub fn new(pipeline: pipeline::Options) -> Options {
        Options {
            pipeline,
            debounce: DEFAULT_DEBOUNCE,
            run: RunOptions::default(),
            compose: None,
            serve_early: true,
        }
    }
}

/// How a build ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildResult {
    Built,
    /// The build, its verification, or recording it failed.
    Failed,
    Interrupted,
    /// Not built: an image it builds FROM failed.
    Skipped,
}

/// What the watch reports, in order. Serialized as one JSON object per event, tagged `event`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The watch is up.
    Watching {
        root: String,
        services: Vec<String>,
        directories: usize,
        debounce_ms: u64,
        jobs: usize,
        keys: BTreeMap<String, String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        compose: Option<String>,
    },
    /// A batch of changes was handled.
    Batch {
        /// The relevant paths (the first 20), in the order they changed.
        paths: Vec<String>,
        /// How many relevant paths the batch had.
        changed: usize,
        /// Why the workspace was analysed again (otherwise: re-hashed in place).
        #[serde(skip_serializing_if = "Option::is_none")]
        reanalysed: Option<String>,
        /// Files read and hashed.
        hashed: usize,
        /// From the batch's first event to the end of its analysis.
        latency_ms: f64,
        /// The analysis alone.
        analysis_ms: f64,
        /// Every image's key afterwards.
        keys: BTreeMap<String, String>,
    },
    /// A batch changed an image's key (`key` is `None` for a service that went away).
    Affected {
        service: String,
        key: Option<String>,
        trigger: String,
        files: usize,
    },
    /// An image needs a build that cannot start yet.
    Queued {
        service: String,
        key: String,
        why: String,
    },
    BuildStarted {
        service: String,
        key: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        trigger: Option<String>,
        reasons: Vec<String>,
        /// Its inputs changed while a previous build of it ran.
        follow_up: bool,
    },
    BuildStep {
        service: String,
        step: String,
    },
    BuildFinished {
        service: String,
        key: String,
        result: BuildResult,
        #[serde(skip_serializing_if = "Option::is_none")]
        image_id: Option<String>,
        duration_ms: u64,
        /// Recorded in the cache (only a build whose key is still the image's is).
        recorded: bool,
        /// The inputs changed during the build: a follow-up build is due.
        superseded: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        log_tail: Option<String>,
        /// Where the log of a failed build was saved.
        #[serde(skip_serializing_if = "Option::is_none")]
        log: Option<String>,
        /// What reached a registry (the cache registry's key tag, release tags).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        registry: Vec<String>,
    },
    /// The key is cached (an edit undone, or found in the cache registry): `latest` points at
    /// its image again, no build.
    Restored {
        service: String,
        key: String,
        image_id: String,
        /// Where it came from when not from the local cache.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        registry: Vec<String>,
    },
    /// A registry tier or release: pulling, pushed, tagged.
    Registry {
        service: String,
        message: String,
    },
    /// A service's containers put on a new image: replaced through the Engine API (`via`
    /// `engine`), or by `compose up` (`compose`).
    Up {
        service: String,
        compose_service: String,
        ok: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        duration_ms: u64,
        /// `engine` (a replacement of the containers) or `compose`.
        via: String,
        /// The image in service passed verification (false: it is being verified; `latest`
        /// moves to it only once it passed, and a failure puts the last verified one back).
        verified: bool,
    },
    /// A container that `--up` recreated gave its first healthy answer (its image's health
    /// check, asked every 50 ms): how long after the `up`, and after the save that led to it.
    Healthy {
        service: String,
        compose_service: String,
        /// It answered (else `error` says why not; with `ok` and an `error`, it was not measured).
        ok: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        up_to_healthy_ms: Option<f64>,
        /// From the save (the first file event of the batch that moved its key) to the first
        /// healthy answer of the new container.
        #[serde(skip_serializing_if = "Option::is_none")]
        save_to_healthy_ms: Option<f64>,
    },
    /// Events were lost or the watch is incomplete: everything is looked at again.
    Rescan {
        reason: String,
    },
    Warning {
        message: String,
    },
    /// Something failed (the workspace does not parse, say); the watch goes on.
    Error {
        message: String,
    },
    /// Nothing builds or waits; the keys held.
    Idle {
        keys: BTreeMap<String, String>,
    },
    /// The watch stopped (its stop flag was set).
    Stopped,
}

/// What the loop receives.
#[derive(Debug)]
pub(crate) enum Msg {
    Fs(FsMsg),
    Run(crate::run::Event),
    UpDone(builds::UpDone),
    Healthy(builds::Healthy),
}

/// Fault injection for tests, named as such: lose file events as an overflowing kernel queue
/// does, and report the overflow as notify would. Nothing else uses it.
#[derive(Debug, Clone)]
pub struct FaultInjector {
    faults: Arc<Faults>,
}

impl FaultInjector {
    /// From now on (`true`) or no longer, file events are lost before they reach the watch.
    pub fn lose_events(&self, lose: bool) {
        self.faults.drop_events.store(lose, Ordering::SeqCst);
    }

    /// Reports a queue overflow, as notify does with `Flag::Rescan`.
    pub fn overflow(&self) {
        self.faults.overflow.store(true, Ordering::SeqCst);
    }
}

/// A watch of one monorepo.
pub struct Watcher {
    opts: Options,
    faults: Arc<Faults>,
}

impl Watcher {
    pub fn new(opts: Options) -> Watcher {
        Watcher {
            opts,
            faults: Arc::new(Faults::default()),
        }
    }

    /// The fault injector of this watch (tests only).
    pub fn fault_injector(&self) -> FaultInjector {
        FaultInjector {
            faults: self.faults.clone(),
        }
    }

    /// Watches until `stop` is set: analyses, brings every image up to date, then again on every
    /// change, through `backend` (Docker, or a fake builder alone: then records are trusted and
    /// nothing is tagged or verified). Fails only when the watch cannot start (the workspace does
    /// not parse at start, the cache cannot be opened, the watches cannot be added, an option is
    /// invalid); everything later is an event.
    pub fn run(
        &self,
        backend: Backend<'_>,
        on_event: &(dyn Fn(Event) + Sync),
        stop: &AtomicBool,
    ) -> Result<()> {
        let opts = &self.opts;
        let mut state = State::new(opts.pipeline.clone())?;
        let store = cache::Store::open(&state.analysis.cache_dir)?;
        let root = state.analysis.ws.root.clone();
        let (tx, rx) = std::sync::mpsc::channel::<Msg>();
        let fs_tx = tx.clone();
        let mut fs = FsWatch::start(
            &root,
            move |m| {
                let _ = fs_tx.send(Msg::Fs(m));
            },
            self.faults.clone(),
        )?;
        fs.sync(&state.prune, &BTreeSet::new(), true)?;
        // What changed between the first analysis and the watches: look once more (warm).
        let applied = state.apply(&[], Some("start".to_string()), &|_| false)?;
        let _ = applied;
        for w in std::mem::take(&mut state.analysis.warnings) {
            on_event(Event::Warning { message: w });
        }
        let jobs = opts.run.jobs.max(1);
        on_event(Event::Watching {
            root: root.display().to_string(),
            services: state.keys().into_keys().collect(),
            directories: fs.watched_count(),
            debounce_ms: opts.debounce.as_millis() as u64,
            jobs,
            keys: state.keys(),
            compose: opts
                .compose
                .as_ref()
                .map(|c| format!("{} -f {}", c.version, c.file.display())),
        });

        // The run's events come to this loop, in order with the file events.
        let run_tx = tx.clone();
        // `--up` serving early: a built image's verification waits until its new container
        // answered (or did not), so the two do not compete for the cores (`run::hold`). Held
        // here, on the run's thread, before the run can ask; released by `builds`.
        let hold = (opts.serve_early && opts.compose.is_some())
            .then(|| Arc::new(crate::run::hold::Hold::default()));
        let holding = hold.clone();
        let forward = move |e: crate::run::Event| {
            if let (Some(h), crate::run::Event::Built { image_id, .. }) = (&holding, &e) {
                h.hold(image_id);
            }
            if !matches!(e, crate::run::Event::Line { .. }) {
                let _ = run_tx.send(Msg::Run(e));
            }
        };
        let run_opts = RunOptions {
            jobs,
            keep_going: true,
            force: false,
            cancel: Arc::new(AtomicBool::new(false)),
            hold: hold.clone(),
            ..opts.run.clone()
        };
        let runner = Runner::new(&store, &state.analysis, &run_opts, backend, &forward)?;
        let cx = builds::Ctx {
            runner: &runner,
            on_event,
            tx,
            compose: opts.compose.as_ref(),
            serve_early: opts.serve_early,
            hold,
        };
        let mut builds = builds::Builds::default();
        builds.init(&state, &cx)?;
        let debounce = Debounce {
            quiet: opts.debounce,
            max: MAX_BATCH.max(opts.debounce * 4),
            idle: TICK,
        };

        std::thread::scope(|scope| {
            let cx = &cx;
            for _ in 0..jobs {
                scope.spawn(|| cx.runner.work());
            }
            builds.evaluate(&state, cx);
            if builds.is_idle() {
                on_event(Event::Idle { keys: state.keys() });
            }
            // The last analysis failed (a file mid-edit): the next batch analyses again.
            let mut broken = false;
            let mut last_rescan = Instant::now();
            while !stop.load(Ordering::SeqCst) {
                let batch =
                    debounce::collect(&rx, debounce, |m| matches!(m, Msg::Fs(FsMsg::Change(_))));
                if batch.disconnected {
                    on_event(Event::Error {
                        message: "the file watch and the builds went away".to_string(),
                    });
                    break;
                }
                let mut paths: Vec<String> = Vec::new();
                let mut seen: HashSet<String> = HashSet::new();
                let mut first_event: Option<Instant> = None;
                let mut rescan: Option<String> = None;
                let mut ended = false;
                for m in batch.messages {
                    match m {
                        Msg::Fs(FsMsg::Change(c)) => {
                            first_event.get_or_insert(c.at);
                            let Ok(rel) = c.path.strip_prefix(&root) else {
                                continue;
                            };
                            let Some(rel) = rel.to_str() else { continue };
                            if !rel.is_empty() && seen.insert(rel.to_string()) {
                                paths.push(rel.to_string());
                            }
                        }
                        Msg::Fs(FsMsg::Overflow(why)) => rescan = Some(why),
                        Msg::Fs(FsMsg::Error(message)) => {
                            on_event(Event::Warning { message });
                            rescan.get_or_insert_with(|| {
                                "the file watch reported an error".to_string()
                            });
                        }
                        Msg::Run(e) => {
                            ended |= matches!(e, crate::run::Event::Finished(_));
                            builds.on_run_event(e, cx, scope);
                        }
                        Msg::UpDone(u) => {
                            builds.up_done(u, cx, scope);
                            ended = true;
                        }
                        Msg::Healthy(h) => builds.healthy(h, cx),
                    }
                }
                if self.faults.overflow.swap(false, Ordering::SeqCst) {
                    rescan = Some("the file event queue overflowed (injected fault)".to_string());
                }
                if let Some(why) = &fs.degraded {
                    if last_rescan.elapsed() >= DEGRADED_RESCAN {
                        rescan.get_or_insert_with(|| {
                            format!("some directories are not watched: {why}")
                        });
                    }
                }
                let handled = !paths.is_empty() || rescan.is_some();
                if handled {
                    if let Some(reason) = &rescan {
                        on_event(Event::Rescan {
                            reason: reason.clone(),
                        });
                        last_rescan = Instant::now();
                    }
                    let force = rescan
                        .clone()
                        .or_else(|| broken.then(|| "the last analysis failed".to_string()));
                    broken = !self.handle_batch(
                        &mut state,
                        &mut fs,
                        &mut builds,
                        &paths,
                        force,
                        first_event,
                        on_event,
                    );
                }
                if (handled || ended) && !broken {
                    builds.evaluate(&state, cx);
                }
                if (handled || ended) && !broken && builds.is_idle() {
                    on_event(Event::Idle { keys: state.keys() });
                }
            }
            // Stop: running builds are cancelled and end as interrupted; nothing more starts.
            builds.stop(cx);
            let deadline = Instant::now() + STOP_WAIT;
            while builds.busy() && Instant::now() < deadline {
                match rx.recv_timeout(TICK) {
                    Ok(Msg::Run(e)) => builds.on_run_event(e, cx, scope),
                    Ok(Msg::UpDone(u)) => builds.up_done(u, cx, scope),
                    Ok(Msg::Healthy(h)) => builds.healthy(h, cx),
                    Ok(Msg::Fs(_)) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
        });
        drop(fs);
        on_event(Event::Stopped);
        Ok(())
    }

    /// Applies one batch to the state (watches first, when directories moved); reports it.
    /// False when the analysis failed.
    #[allow(clippy::too_many_arguments)]
    fn handle_batch(
        &self,
        state: &mut State,
        fs: &mut FsWatch,
        builds: &mut builds::Builds,
        paths: &[String],
        force: Option<String>,
        first_event: Option<Instant>,
        on_event: &(dyn Fn(Event) + Sync),
    ) -> bool {
        let root = state.analysis.ws.root.clone();
        // Directories created, moved or removed: watch the new ones before the analysis walks
        // them, so a file made in one is either seen by the walk or sends an event.
        let touched: BTreeSet<String> = paths
            .iter()
            .filter(|p| root.join(p).is_dir())
            .cloned()
            .collect();
        let dirs_moved =
            force.is_some() || !touched.is_empty() || paths.iter().any(|p| fs.is_watched(p));
        if dirs_moved {
            self.sync(fs, state, &touched, on_event);
        }
        let was_watched = |p: &str| fs.is_watched(p);
        let applied = match state.apply(paths, force, &was_watched) {
            Ok(a) => a,
            Err(e) => {
                on_event(Event::Error {
                    message: format!(
                        "{e}\n  note: the watch goes on; it looks again at the next change"
                    ),
                });
                return false;
            }
        };
        if applied.reanalysed.is_some() {
            // The ignore files or the packages may have changed what is watched.
            self.sync(fs, state, &touched, on_event);
            for w in std::mem::take(&mut state.analysis.warnings) {
                on_event(Event::Warning { message: w });
            }
            if paths.contains(&state.analysis.ws.config.images.template) {
                stale_dockerfiles(state, on_event);
            }
        }
        if applied.relevant.is_empty() && applied.reanalysed.is_none() {
            return true;
        }
        on_event(Event::Batch {
            paths: applied.relevant.iter().take(20).cloned().collect(),
            changed: applied.relevant.len(),
            reanalysed: applied.reanalysed.clone(),
            hashed: applied.hash_stats.hashed,
            latency_ms: first_event
                .map(|t| t.elapsed().as_secs_f64() * 1e3)
                .unwrap_or(0.0),
            analysis_ms: applied.duration.as_secs_f64() * 1e3,
            keys: state.keys(),
        });
        for c in &applied.changed {
            on_event(Event::Affected {
                service: c.service.clone(),
                key: c.new.map(|k| k.to_hex()),
                trigger: c.trigger.clone(),
                files: c.files,
            });
        }
        builds.note(&applied.changed, first_event);
        true
    }

    fn sync(
        &self,
        fs: &mut FsWatch,
        state: &State,
        touched: &BTreeSet<String>,
        on_event: &(dyn Fn(Event) + Sync),
    ) {
        let was_degraded = fs.degraded.is_some();
        if let Err(e) = fs.sync(&state.prune, touched, false) {
            on_event(Event::Warning {
                message: format!("{e}; the watch rescans until it can watch again"),
            });
        }
        if let (false, Some(why)) = (was_degraded, &fs.degraded) {
            on_event(Event::Warning {
                message: format!(
                    "{why}\n  note: until then, the watch rescans every {}s so that nothing goes stale",
                    DEGRADED_RESCAN.as_secs()
                ),
            });
        }
    }
}

/// After a template change: say which Dockerfiles no longer match it (the watch does not rewrite
/// them; `cargo xtask dockerfiles` does).
fn stale_dockerfiles(state: &State, on_event: &(dyn Fn(Event) + Sync)) {
    match crate::dockerfiles::render_all(&state.analysis.ws) {
        Ok(rendered) => {
            let stale: Vec<String> = rendered
                .iter()
                .filter(|r| r.is_stale())
                .map(|r| r.path.clone())
                .collect();
            if !stale.is_empty() {
                on_event(Event::Warning {
                    message: format!(
                        "the template changed and {} no longer match it\n  hint: run `cargo xtask dockerfiles` to render them; the watch rebuilds what that changes",
                        stale.join(", ")
                    ),
                });
            }
        }
        Err(e) => on_event(Event::Warning {
            message: format!("cannot render the template: {e}"),
        }),
    }
}
