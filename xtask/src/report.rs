//! Reporting of a build run: indicatif bars on a terminal (a line per image and an overall bar
//! whose ETA comes from recorded durations), plain lines otherwise, nothing with `--json`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use engine::execute::{Event, Outcome};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub enum Reporter {
    Bars {
        _multi: MultiProgress,
        lines: HashMap<usize, ProgressBar>,
        overall: ProgressBar,
        expected: HashMap<usize, u64>,
    },
    Plain,
    Quiet,
}

pub struct Shared {
    pub inner: Mutex<Reporter>,
    pub names: Vec<String>,
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
    pub fn new(json: bool, names: Vec<String>, to_build: &[(usize, u64)]) -> Shared {
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
                ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30.cyan/blue}] {msg} (eta {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            overall.enable_steady_tick(Duration::from_millis(100));
            overall.set_message(format!("0/{} built", to_build.len()));
            Reporter::Bars {
                _multi: multi,
                lines,
                overall,
                expected: to_build.iter().copied().collect(),
            }
        } else {
            Reporter::Plain
        };
        Shared {
            inner: Mutex::new(reporter),
            names,
        }
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
            Reporter::Bars {
                lines,
                overall,
                expected,
                ..
            } => match e {
                Event::Started { service } => {
                    if let Some(pb) = lines.get(&service) {
                        pb.enable_steady_tick(Duration::from_millis(120));
                        pb.set_message("building");
                    }
                }
                Event::Step { service, step } => {
                    if let Some(pb) = lines.get(&service) {
                        pb.set_message(format!("building {step}"));
                    }
                }
                Event::Line { .. } => {}
                Event::Finished { service, outcome } => {
                    if let Some(pb) = lines.get(&service) {
                        pb.finish_with_message(outcome_line("", &outcome).trim().to_string());
                        overall.inc(expected.get(&service).copied().unwrap_or(0));
                        let done = lines.values().filter(|p| p.is_finished()).count();
                        overall.set_message(format!("{done}/{} done", lines.len()));
                    }
                }
            },
        }
    }

    pub fn finish(&self) {
        if let Ok(r) = self.inner.lock() {
            if let Reporter::Bars { overall, .. } = &*r {
                overall.finish_and_clear();
            }
        }
    }
}

pub fn outcome_line(name: &str, o: &Outcome) -> String {
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

pub use fmt_duration as duration;
