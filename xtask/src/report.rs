//! Reporting of a build run as it goes: indicatif bars on a terminal (a line per image to build
//! and an overall bar whose ETA comes from recorded durations), plain lines otherwise, nothing
//! but warnings with `--json`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use engine::run::{Event, ImageReport, Outcome};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::output;

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
    fn new(builds: &[(String, u64)], jobs: usize) -> Bars {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        let width = builds.iter().map(|(n, _)| n.len()).max().unwrap_or(10);
        let line_style = ProgressStyle::with_template(&format!(
            "{{spinner:.cyan}} {{prefix:{width}.bold}} {{wide_msg}}"
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
            ProgressStyle::with_template("{elapsed_precise} [{bar:30.cyan/blue}] {msg}")
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
}

pub enum Mode {
    Bars(Bars),
    Plain,
    Quiet,
}

pub struct Reporter {
    mode: Arc<Mutex<Mode>>,
    terminal: bool,
    jobs: usize,
    stop: Arc<AtomicBool>,
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
    pub fn new(json: bool, jobs: usize) -> Reporter {
        let mode = if json { Mode::Quiet } else { Mode::Plain };
        Reporter {
            mode: Arc::new(Mutex::new(mode)),
            terminal: !json && std::io::stderr().is_terminal(),
            jobs,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Bars for `builds` (service, expected ms), ticking on a thread of their own.
    fn start_bars(&self, mode: &mut Mode, builds: &[(String, u64)]) {
        *mode = Mode::Bars(Bars::new(builds, self.jobs));
        let (inner, stop) = (self.mode.clone(), self.stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(r) = inner.lock() {
                    if let Mode::Bars(b) = &*r {
                        b.tick();
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
    }

    pub fn event(&self, e: Event) {
        let Ok(mut mode) = self.mode.lock() else {
            return;
        };
        if let Event::Warning { message } = &e {
            // On stderr even with --json: stdout holds the document, stderr the story.
            match &*mode {
                Mode::Bars(b) => b.multi.suspend(|| output::warn(message)),
                _ => output::warn(message),
            }
            return;
        }
        if let (Event::Planned(plans), Mode::Plain) = (&e, &*mode) {
            let builds: Vec<(String, u64)> = plans
                .iter()
                .filter(|p| p.needs_build())
                .map(|p| (p.plan.service.clone(), p.expected_ms))
                .collect();
            for p in plans.iter().filter(|p| p.needs_build()) {
                let why: Vec<String> = p.plan.reasons.iter().map(|r| r.to_string()).collect();
                eprintln!("   {} needs a build: {}", p.plan.service, why.join("; "));
            }
            if self.terminal && !builds.is_empty() {
                self.start_bars(&mut mode, &builds);
            }
            return;
        }
        match &mut *mode {
            Mode::Quiet => {}
            Mode::Plain => match e {
                Event::Started { service, .. } => eprintln!("   building {service}"),
                Event::Step { service, step } => eprintln!("   {service} {step}"),
                Event::Pulling { service, reference } => {
                    eprintln!("   pulling {service} from {reference}")
                }
                Event::Registry { message, .. } => eprintln!("   {message}"),
                Event::Finished(r) => eprintln!("   {}", outcome_line(&r.service, &r)),
                _ => {}
            },
            Mode::Bars(b) => match e {
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
                Event::Pulling { service, reference } => {
                    if let Some(pb) = b.lines.get(&service) {
                        pb.set_message(format!("pulling from {reference}"));
                    }
                }
                Event::Registry { message, .. } => {
                    let _ = b.multi.println(format!("   {message}"));
                }
                Event::Finished(r) => {
                    if let Some(pb) = b.lines.get(&r.service) {
                        pb.finish_with_message(outcome_line("", &r));
                        b.finished += 1;
                    }
                    b.tick();
                }
                _ => {}
            },
        }
    }

    pub fn finish(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(r) = self.mode.lock() {
            if let Mode::Bars(b) = &*r {
                b.overall.finish_and_clear();
            }
        }
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
        Outcome::Cached => format!("cached {name}"),
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
