//! Execute: a builder backend runs the planned builds in DAG order, in parallel up to `jobs`.
//! The builder knows nothing of caching (the plan already short-circuited cached images); the
//! scheduler reports events, skips the dependents of a failed build, and records nothing for a
//! build that failed or was interrupted.

pub mod docker;
pub mod tar;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::context::Context;
use crate::pipeline::Analysis;
use crate::plan::{Action, ImagePlan};

/// The label every built image carries.
pub const KEY_LABEL: &str = "com.kodingcaravan.images.key";
/// The tag prefix of the key tag: `<image>:key-<first 32 hex digits>`.
pub const KEY_TAG_PREFIX: &str = "key-";

/// The tag derived from a key.
pub fn key_tag(key: &crate::digest::ImageKey) -> String {
    format!("{KEY_TAG_PREFIX}{}", key.short(32))
}

/// One build, as the backend sees it.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub service: String,
    pub root: PathBuf,
    pub context: Context,
    pub dockerfile: String,
    pub tags: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub platform: Option<String>,
    /// A directory for the backend's scratch files.
    pub work_dir: PathBuf,
    pub cancel: Arc<AtomicBool>,
}

#[derive(Debug, Clone)]
pub struct BuildOutput {
    pub image_id: String,
    pub log: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct BuildError {
    pub message: String,
    pub log_tail: String,
    pub interrupted: bool,
}

/// A builder backend.
pub trait Builder: Sync {
    /// Builds one image; `on_line` gets every line of its output as it comes.
    fn build(
        &self,
        req: &BuildRequest,
        on_line: &(dyn Fn(&str) + Sync),
    ) -> Result<BuildOutput, BuildError>;
}

/// What happened to one image.
#[derive(Debug, Clone)]
pub enum Outcome {
    Cached {
        image_id: Option<String>,
    },
    Built {
        image_id: String,
        duration: Duration,
        log: Vec<u8>,
    },
    Failed {
        error: BuildError,
        duration: Duration,
        log: Vec<u8>,
    },
    /// Not built: an image it builds FROM failed, or the run stopped first.
    Skipped {
        because: String,
    },
}

/// Progress events, for the reporter.
#[derive(Debug, Clone)]
pub enum Event {
    Started { service: usize },
    Step { service: usize, step: String },
    Line { service: usize, line: String },
    Finished { service: usize, outcome: Outcome },
}

/// How a run goes.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Builds at once (at least one).
    pub jobs: usize,
    /// Go on with the other images after a failure.
    pub keep_going: bool,
    /// Set (by a Ctrl-C handler) to stop: running builds are cancelled, none is started.
    pub cancel: Arc<AtomicBool>,
    /// A directory for the builder's scratch files.
    pub work_dir: PathBuf,
}

/// Runs the builds of `plans` (cached ones are reported as such), at most `jobs` at once.
pub fn run(
    analysis: &Analysis,
    plans: &[ImagePlan],
    builder: &dyn Builder,
    opts: &RunOptions,
    on_event: &(dyn Fn(Event) + Sync),
) -> BTreeMap<usize, Outcome> {
    let RunOptions {
        jobs,
        keep_going,
        cancel,
        work_dir,
    } = opts;
    let (jobs, keep_going) = ((*jobs).max(1), *keep_going);
    let ws = &analysis.ws;
    let mut state = State::default();
    for p in plans {
        if p.action == Action::Cached {
            let o = Outcome::Cached {
                image_id: p.image_id.clone(),
            };
            on_event(Event::Finished {
                service: p.index,
                outcome: o.clone(),
            });
            state.done.insert(p.index, o);
        } else {
            state.pending.push(p.index);
        }
    }
    let state = Mutex::new(state);
    let wake = Condvar::new();
    let plan_of = |s: usize| plans.iter().find(|p| p.index == s);

    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                // Take the next ready build, or finish.
                let next = {
                    let Ok(mut st) = state.lock() else { return };
                    loop {
                        if st.pending.is_empty() {
                            wake.notify_all();
                            return;
                        }
                        let stop = cancel.load(Ordering::SeqCst) || (st.failed && !keep_going);
                        // Skip what can no longer be built.
                        let mut i = 0;
                        while i < st.pending.len() {
                            let s = st.pending[i];
                            let failed_dep = analysis.graph.image_deps[s].iter().find(|d| {
                                matches!(
                                    st.done.get(d),
                                    Some(Outcome::Failed { .. } | Outcome::Skipped { .. })
                                )
                            });
                            let because = if let Some(d) = failed_dep {
                                Some(format!("{} was not built", ws.services[*d].name))
                            } else if stop {
                                Some(if cancel.load(Ordering::SeqCst) {
                                    "interrupted".to_string()
                                } else {
                                    "another build failed (use --keep-going to go on)".to_string()
                                })
                            } else {
                                None
                            };
                            if let Some(because) = because {
                                st.pending.remove(i);
                                let o = Outcome::Skipped { because };
                                on_event(Event::Finished {
                                    service: s,
                                    outcome: o.clone(),
                                });
                                st.done.insert(s, o);
                                wake.notify_all();
                                continue;
                            }
                            i += 1;
                        }
                        let ready = st.pending.iter().position(|s| {
                            analysis.graph.image_deps[*s].iter().all(|d| {
                                st.done.contains_key(d) || !plans.iter().any(|p| p.index == *d)
                            })
                        });
                        if let Some(i) = ready {
                            break st.pending.remove(i);
                        }
                        if st.pending.is_empty() {
                            wake.notify_all();
                            return;
                        }
                        st = match wake.wait(st) {
                            Ok(s) => s,
                            Err(_) => return,
                        };
                    }
                };
                let Some(plan) = plan_of(next) else { continue };
                let outcome = build_one(analysis, plan, builder, cancel, work_dir, on_event);
                on_event(Event::Finished {
                    service: next,
                    outcome: outcome.clone(),
                });
                if let Ok(mut st) = state.lock() {
                    if matches!(outcome, Outcome::Failed { .. }) {
                        st.failed = true;
                    }
                    st.done.insert(next, outcome);
                }
                wake.notify_all();
            });
        }
    });
    state.into_inner().map(|s| s.done).unwrap_or_default()
}

#[derive(Default)]
struct State {
    pending: Vec<usize>,
    done: BTreeMap<usize, Outcome>,
    failed: bool,
}

/// The build request for one planned image.
pub fn request(
    analysis: &Analysis,
    plan: &ImagePlan,
    cancel: Arc<AtomicBool>,
    work_dir: PathBuf,
) -> Option<BuildRequest> {
    let ws = &analysis.ws;
    let img = analysis.image(plan.index)?;
    let svc = &ws.services[plan.index];
    Some(BuildRequest {
        service: svc.name.clone(),
        root: ws.root.clone(),
        context: img.context.clone(),
        dockerfile: svc.dockerfile.clone(),
        tags: vec![
            format!("{}:latest", svc.image),
            format!("{}:{}", svc.image, key_tag(&img.key)),
        ],
        labels: BTreeMap::from([(KEY_LABEL.to_string(), img.key.to_hex())]),
        build_args: img.manifest.build_args.clone(),
        target: img.manifest.target.clone(),
        platform: img.manifest.platform.clone(),
        work_dir,
        cancel,
    })
}

fn build_one(
    analysis: &Analysis,
    plan: &ImagePlan,
    builder: &dyn Builder,
    cancel: &Arc<AtomicBool>,
    work_dir: &std::path::Path,
    on_event: &(dyn Fn(Event) + Sync),
) -> Outcome {
    let s = plan.index;
    let Some(req) = request(analysis, plan, cancel.clone(), work_dir.to_path_buf()) else {
        return Outcome::Skipped {
            because: "not analysed".to_string(),
        };
    };
    on_event(Event::Started { service: s });
    let start = Instant::now();
    let on_line = |line: &str| {
        if let Some(step) = docker::step_of(line) {
            on_event(Event::Step { service: s, step });
        }
        on_event(Event::Line {
            service: s,
            line: line.to_string(),
        });
    };
    match builder.build(&req, &on_line) {
        Ok(out) => Outcome::Built {
            image_id: out.image_id,
            duration: start.elapsed(),
            log: out.log,
        },
        Err(error) => {
            let log = error.log_tail.clone().into_bytes();
            Outcome::Failed {
                error,
                duration: start.elapsed(),
                log,
            }
        }
    }
}
