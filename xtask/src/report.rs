//! Reporting of a build run: indicatif bars on a terminal (a line per image and an overall bar
//! whose ETA comes from recorded durations), plain lines otherwise, nothing with `--json`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use engine::execute::{Event, Outcome};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The bars and what the ETA is computed from.
pub struct Bars {
    _multi: MultiProgress,
    lines: HashMap<usize, ProgressBar>,
    overall: ProgressBar,
    /// Expected duration of each build (from its last recorded build), in ms.
    expected: HashMap<usize, u64>,
    started: HashMap<usize, Instant>,
    finished: usize,
    jobs: usize,
}

impl Bars {
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

pub enum Reporter {
    Bars(Bars),
    Plain,
    Quiet,
}

pub struct Shared {
    pub inner: Arc<Mutex<Reporter>>,
    pub names: Vec<String>,
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

impl Shared {
    /// `to_build`: the services that will be built, with their expected duration in ms.
    pub fn new(json: bool, names: Vec<String>, to_build: &[(usize, u64)], jobs: usize) -> Shared {
        let stop = Arc::new(AtomicBool::new(false));
        let reporter = if json {
            Reporter::Quiet
        } else if std::io::stderr().is_terminal() && !to_build.is_empty() {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
            let width = names.iter().map(|n| n.len()).max().unwrap_or(10);
            let line_style = ProgressStyle::with_template(&format!(
                "{{spinner:.cyan}} {{prefix:{width}.bold}} {{wide_msg}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
            let mut lines = HashMap::new();
            for (s, _) in to_build {
                let pb = multi.add(ProgressBar::new_spinner());
                pb.set_style(line_style.clone());
                pb.set_prefix(names[*s].clone());
                pb.set_message("queued");
                lines.insert(*s, pb);
            }
            let total: u64 = to_build.iter().map(|(_, ms)| *ms).sum();
            let overall = multi.add(ProgressBar::new(total.max(1)));
            overall.set_style(
                ProgressStyle::with_template("{elapsed_precise} [{bar:30.cyan/blue}] {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            let bars = Bars {
                _multi: multi,
                lines,
                overall,
                expected: to_build.iter().copied().collect(),
                started: HashMap::new(),
                finished: 0,
                jobs,
            };
            bars.tick();
            Reporter::Bars(bars)
        } else {
            Reporter::Plain
        };
        let inner = Arc::new(Mutex::new(reporter));
        if matches!(inner.lock().as_deref(), Ok(Reporter::Bars(_))) {
            let (inner, stop) = (inner.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(r) = inner.lock() {
                        if let Reporter::Bars(b) = &*r {
                            b.tick();
                        }
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            });
        }
        Shared { inner, names, stop }
    }

    pub fn event(&self, e: Event) {
        let Ok(mut r) = self.inner.lock() else { return };
        match &mut *r {
            Reporter::Quiet => {}
            Reporter::Plain => match e {
                Event::Started { service } => eprintln!("   building {}", self.names[service]),
                Event::Step { service, step } => {
                    eprintln!("   {} {}", self.names[service], step)
                }
                Event::Line { .. } => {}
                Event::Finished { service, outcome } => {
                    eprintln!("   {}", outcome_line(&self.names[service], &outcome))
                }
            },
            Reporter::Bars(b) => match e {
                Event::Started { service } => {
                    b.started.insert(service, Instant::now());
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
                Event::Line { .. } => {}
                Event::Finished { service, outcome } => {
                    if let Some(pb) = b.lines.get(&service) {
                        pb.finish_with_message(outcome_line("", &outcome));
                        b.finished += 1;
                    }
                    b.tick();
                }
            },
        }
    }

    pub fn finish(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(r) = self.inner.lock() {
            if let Reporter::Bars(b) = &*r {
                b.overall.finish_and_clear();
            }
        }
    }
}

pub fn outcome_line(name: &str, o: &Outcome) -> String {
    let line = outcome_text(name, o);
    // Without a name (a bar already shows it), squeeze the gap the name leaves.
    if name.is_empty() {
        line.split_whitespace().collect::<Vec<_>>().join(" ")
    } else {
        line
    }
}

fn outcome_text(name: &str, o: &Outcome) -> String {
    match o {
        Outcome::Cached { .. } => format!("cached {name}"),
        Outcome::Built { duration, .. } => format!("built  {name} in {}", fmt_duration(*duration)),
        Outcome::Failed {
            error, duration, ..
        } => format!(
            "FAILED {name} after {}: {}",
            fmt_duration(*duration),
            error.message
        ),
        Outcome::Skipped { because } => format!("skipped {name}: {because}"),
    }
}
