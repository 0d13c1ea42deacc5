//! Reporting of a build run as it goes, as `--progress` says: indicatif bars on a terminal (a
//! line per image to build and an overall bar whose ETA comes from recorded durations), plain
//! lines otherwise, one JSON event per line on stderr with `--progress json`, nothing but
//! warnings with `--json` or `-q`. `-v` adds the decisions (waits, cached images), `-vv` every
//! build's log and the Docker commands run.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use engine::run::{Event, ImageReport, Outcome, Summary};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use crate::cmd::images::ImageJson;
use crate::{output, Global};

/// `--progress`: how a run shows what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Progress {
    /// Bars on a terminal, plain lines otherwise (nothing with --json or -q)
    Auto,
    /// Bars (plain lines, with a warning, when stderr is not a terminal)
    Tty,
    /// One line per step
    Plain,
    /// One JSON object per line on stderr (docs/json.md)
    Json,
}

/// What the flags and stderr make of `--progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    Bars,
    Plain,
    Json,
    Quiet,
}

/// How progress is shown for these flags, on this stderr.
pub fn show(global: &Global) -> Show {
    let terminal = std::io::stderr().is_terminal();
    match global.progress {
        Some(Progress::Json) => Show::Json,
        Some(Progress::Plain) => Show::Plain,
        Some(Progress::Tty) if terminal => Show::Bars,
        Some(Progress::Tty) => {
            output::warn("--progress tty: stderr is not a terminal; showing plain lines");
            Show::Plain
        }
        Some(Progress::Auto) | None if global.json || output::quiet() => Show::Quiet,
        Some(Progress::Auto) | None if terminal => Show::Bars,
        Some(Progress::Auto) | None => Show::Plain,
    }
}

/// A bar template with its colours, or without them when stderr is not coloured.
fn template(coloured: &str, colour: bool) -> String {
    if colour {
        return coloured.to_string();
    }
    let mut t = coloured.to_string();
    for c in [".cyan/blue", ".cyan", ".bold"] {
        t = t.replace(c, "");
    }
    t
}

/// The bars and what the ETA is computed from.
pub struct Bars {
    multi: MultiProgress,
    lines: HashMap<String, ProgressBar>,
    overall: ProgressBar,
    /// Expected duration of each build (from its last recorded build), in ms.
    expected: HashMap<String, u64>,
    started: HashMap<String, Instant>,
    finished: usize,
    jobs: usize,
}

impl Bars {
    fn new(builds: &[(String, u64)], jobs: usize, colour: bool) -> Bars {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        let width = builds.iter().map(|(n, _)| n.len()).max().unwrap_or(10);
        let line_style = ProgressStyle::with_template(&template(
            &format!("{{spinner:.cyan}} {{prefix:{width}.bold}} {{wide_msg}}"),
            colour,
        ))
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let mut lines = HashMap::new();
        for (s, _) in builds {
            let pb = multi.add(ProgressBar::new_spinner());
            pb.set_style(line_style.clone());
            pb.set_prefix(s.clone());
            pb.set_message("queued");
            lines.insert(s.clone(), pb);
        }
        let total: u64 = builds.iter().map(|(_, ms)| *ms).sum();
        let overall = multi.add(ProgressBar::new(total.max(1)));
        overall.set_style(
            ProgressStyle::with_template(&template(
                "{elapsed_precise} [{bar:30.cyan/blue}] {msg}",
                colour,
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        let bars = Bars {
            multi,
            lines,
            overall,
            expected: builds.iter().cloned().collect(),
            started: HashMap::new(),
            finished: 0,
            jobs,
        };
        bars.tick();
        bars
    }

    /// Moves the overall bar: finished builds count in full, running ones by their elapsed time
    /// (capped just below their expected duration); the ETA spreads the rest over the jobs.
    fn tick(&self) {
        let mut done_ms = 0u64;
        let mut left_ms = 0u64;
        for (s, exp) in &self.expected {
            let pb_done = self.lines.get(s).is_some_and(|p| p.is_finished());
            if pb_done {
                done_ms += exp;
            } else if let Some(t) = self.started.get(s) {
                let el = (t.elapsed().as_millis() as u64).min(exp * 95 / 100);
                done_ms += el;
                left_ms += exp - el;
            } else {
                left_ms += exp;
            }
        }
        self.overall.set_position(done_ms);
        let eta = Duration::from_millis(left_ms / self.jobs.max(1) as u64);
        self.overall.set_message(format!(
            "{}/{} done, about {} left",
            self.finished,
            self.lines.len(),
            fmt_duration(eta)
        ));
    }

    /// A line above the bars.
    fn println(&self, line: String) {
        let _ = self.multi.println(line);
    }
}

enum Mode {
    /// Bars, once the plan says there is something to build.
    Bars(Bars),
    /// Plain lines, JSON events or nothing, as `show` says.
    Lines,
}

struct Inner {
    mode: Mutex<Mode>,
    show: Show,
    colour: bool,
    jobs: usize,
    stop: AtomicBool,
}

/// Shows the events of one run; cheap to clone (the Docker client's tracer holds one).
#[derive(Clone)]
pub struct Reporter {
    inner: Arc<Inner>,
}

pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    }
}

impl Reporter {
    pub fn new(show: Show, jobs: usize) -> Reporter {
        Reporter {
            inner: Arc::new(Inner {
                mode: Mutex::new(Mode::Lines),
                show,
                colour: output::colour_stderr(),
                jobs,
                stop: AtomicBool::new(false),
            }),
        }
    }

    pub fn show(&self) -> Show {
        self.inner.show
    }

    /// Bars for `builds` (service, expected ms), ticking on a thread of their own.
    fn start_bars(&self, mode: &mut Mode, builds: &[(String, u64)]) {
        *mode = Mode::Bars(Bars::new(builds, self.inner.jobs, self.inner.colour));
        let inner = self.inner.clone();
        std::thread::spawn(move || {
            while !inner.stop.load(Ordering::Relaxed) {
                if let Ok(r) = inner.mode.lock() {
                    if let Mode::Bars(b) = &*r {
                        b.tick();
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
    }

    /// A command the Docker client runs (shown with `-vv`).
    pub fn command(&self, argv: &[String]) {
        if !output::verbose(2) {
            return;
        }
        let Ok(mode) = self.inner.mode.lock() else {
            return;
        };
        let line = format!("   $ {}", argv.join(" "));
        match (&*mode, self.inner.show) {
            (Mode::Bars(b), _) => b.println(line),
            (_, Show::Json) => output::event("command", &json!({ "argv": argv })),
            (_, Show::Plain | Show::Bars) => eprintln!("{line}"),
            (_, Show::Quiet) => {}
        }
    }

    pub fn event(&self, e: Event) {
        let Ok(mut mode) = self.inner.mode.lock() else {
            return;
        };
        if let Event::Warning { message } = &e {
            // On stderr even with --json: stdout holds the document, stderr the story.
            match &*mode {
                Mode::Bars(b) => b.multi.suspend(|| output::warn(message)),
                Mode::Lines => output::warn(message),
            }
            return;
        }
        match self.inner.show {
            Show::Quiet => {}
            Show::Json => json_event(e),
            Show::Plain | Show::Bars => match &mut *mode {
                Mode::Lines => self.line(e, &mut mode),
                Mode::Bars(b) => bar_event(b, e),
            },
        }
    }

    /// A plain line for an event (and the start of the bars, once the plan is known).
    fn line(&self, e: Event, mode: &mut Mode) {
        match e {
            Event::Planned(plans) => {
                let builds: Vec<(String, u64)> = plans
                    .iter()
                    .filter(|p| p.needs_build())
                    .map(|p| (p.plan.service.clone(), p.expected_ms))
                    .collect();
                for p in &plans {
                    if p.needs_build() {
                        let why: Vec<String> =
                            p.plan.reasons.iter().map(|r| r.to_string()).collect();
                        eprintln!("   {} needs a build: {}", p.plan.service, why.join("; "));
                    } else if output::verbose(1) {
                        eprintln!(
                            "   {} is cached (key {})",
                            p.plan.service,
                            p.plan.key.short(12)
                        );
                    }
                }
                if self.inner.show == Show::Bars && !builds.is_empty() {
                    self.start_bars(mode, &builds);
                }
            }
            Event::Waiting { service, why, .. } if output::verbose(1) => {
                eprintln!("   {service} waits: {why}")
            }
            Event::Started { service, .. } => eprintln!("   building {service}"),
            Event::Step { service, step } => eprintln!("   {service} {step}"),
            Event::Line { service, line } if output::verbose(2) => {
                eprintln!("   [{service}] {line}")
            }
            Event::Pulling { service, reference } => {
                eprintln!("   pulling {service} from {reference}")
            }
            Event::Registry { message, .. } => eprintln!("   {message}"),
            Event::Finished(r) => eprintln!("   {}", outcome_line(&r.service, &r)),
            _ => {}
        }
    }

    pub fn finish(&self) {
        self.inner.stop.store(true, Ordering::Relaxed);
        if let Ok(r) = self.inner.mode.lock() {
            if let Mode::Bars(b) = &*r {
                b.overall.finish_and_clear();
            }
        }
    }

    /// The run's summary: a line (not with `-q`), or a `summary` event. `unresolved` services
    /// failed before the run (their inputs could not be resolved) and count as failed.
    pub fn summary(&self, summary: &Summary, unresolved: usize) {
        let mut c = summary.counts();
        c.failed += unresolved;
        let pulled = summary
            .images
            .iter()
            .filter(|i| i.pulled_from.is_some())
            .count();
        match self.inner.show {
            Show::Json => output::event(
                "summary",
                &json!({
                    "built": c.built,
                    "cached": c.cached,
                    "pulled": pulled,
                    "failed": c.failed,
                    "skipped": c.skipped,
                    "verify_failed": c.verify_failed,
                    "interrupted": summary.interrupted,
                    "duration_ms": summary.elapsed.as_millis() as u64,
                    "saved_ms": summary.saved.as_millis() as u64,
                    "exit_code": if unresolved > 0 { summary.exit_code().max(1) } else { summary.exit_code() },
                }),
            ),
            _ if output::quiet() => {}
            _ => {
                if c.verify_failed > 0 {
                    output::error_line(&format!(
                        "{} image(s) break the architecture's rules (details: `cargo xtask verify`)",
                        c.verify_failed
                    ));
                }
                let pulled = if pulled > 0 {
                    format!(" ({pulled} pulled)")
                } else {
                    String::new()
                };
                eprintln!(
                    "{} built, {} cached{pulled}, {} failed, {} skipped in {} (about {} saved by the cache)",
                    c.built,
                    c.cached,
                    c.failed,
                    c.skipped,
                    fmt_duration(summary.elapsed),
                    fmt_duration(summary.saved),
                );
            }
        }
    }
}

/// An event as bars show it.
fn bar_event(b: &mut Bars, e: Event) {
    match e {
        Event::Started { service, .. } => {
            b.started.insert(service.clone(), Instant::now());
            if let Some(pb) = b.lines.get(&service) {
                pb.enable_steady_tick(Duration::from_millis(120));
                pb.set_message("building");
            }
        }
        Event::Step { service, step } => {
            if let Some(pb) = b.lines.get(&service) {
                pb.set_message(format!("building {step}"));
            }
        }
        Event::Line { service, line } if output::verbose(2) => {
            b.println(format!("   [{service}] {line}"))
        }
        Event::Waiting { service, why, .. } if output::verbose(1) => {
            b.println(format!("   {service} waits: {why}"))
        }
        Event::Pulling { service, reference } => {
            if let Some(pb) = b.lines.get(&service) {
                pb.set_message(format!("pulling from {reference}"));
            }
        }
        Event::Built { service, .. } => {
            if let Some(pb) = b.lines.get(&service) {
                pb.set_message("verifying".to_string());
            }
        }
        Event::Registry { message, .. } => b.println(format!("   {message}")),
        Event::Finished(r) => {
            if let Some(pb) = b.lines.get(&r.service) {
                pb.finish_with_message(outcome_line("", &r));
                b.finished += 1;
            }
            b.tick();
        }
        _ => {}
    }
}

/// An event as one JSON line on stderr (shapes in docs/json.md).
fn json_event(e: Event) {
    match e {
        Event::Planned(plans) => {
            let images: Vec<serde_json::Value> = plans
                .iter()
                .map(|p| {
                    let mut v =
                        serde_json::to_value(ImageJson::planned(&p.plan)).unwrap_or_default();
                    if let Some(o) = v.as_object_mut() {
                        o.insert("expected_ms".into(), p.expected_ms.into());
                    }
                    v
                })
                .collect();
            output::event("plan", &json!({ "images": images }));
        }
        Event::Waiting { service, key, why } => output::event(
            "waiting",
            &json!({ "service": service, "key": key.to_hex(), "why": why }),
        ),
        Event::Started {
            service,
            key,
            reasons,
        } => output::event(
            "started",
            &json!({
                "service": service,
                "key": key.to_hex(),
                "reasons": reasons.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            }),
        ),
        Event::Step { service, step } => {
            output::event("step", &json!({ "service": service, "step": step }))
        }
        Event::Line { service, line } if output::verbose(2) => {
            output::event("log", &json!({ "service": service, "line": line }))
        }
        Event::Line { .. } => {}
        Event::Built {
            service,
            key,
            image_id,
            ..
        } => output::event(
            "built",
            &json!({ "service": service, "key": key.to_hex(), "image_id": image_id }),
        ),
        Event::Pulling { service, reference } => output::event(
            "pulling",
            &json!({ "service": service, "reference": reference }),
        ),
        Event::Registry { service, message } => output::event(
            "registry",
            &json!({ "service": service, "message": message }),
        ),
        Event::Warning { message } => output::warn(&message),
        Event::Finished(r) => output::event("finished", &ImageJson::ran(&r)),
    }
}

pub fn outcome_line(name: &str, r: &ImageReport) -> String {
    let line = outcome_text(name, r);
    // Without a name (a bar already shows it), squeeze the gap the name leaves.
    if name.is_empty() {
        line.split_whitespace().collect::<Vec<_>>().join(" ")
    } else {
        line
    }
}

fn outcome_text(name: &str, r: &ImageReport) -> String {
    let took = fmt_duration(r.duration.unwrap_or_default());
    match r.outcome {
        Outcome::Cached => match &r.pulled_from {
            Some(from) => format!("cached {name} (pulled from {from})"),
            None => format!("cached {name}"),
        },
        Outcome::Built => format!("built  {name} in {took}"),
        Outcome::Failed => format!(
            "FAILED {name} after {took}: {}",
            r.error.as_deref().unwrap_or("-")
        ),
        Outcome::Skipped => format!(
            "skipped {name}: {}",
            r.skipped_because.as_deref().unwrap_or("-")
        ),
    }
}
