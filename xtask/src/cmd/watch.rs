//! `cargo xtask watch`: keep the images (and, with `--up`, the compose stack) in step with the
//! sources. The engine's watch decides and emits events; this module prints them: a status line
//! per image on a terminal, plain lines otherwise, one JSON object per line with `--json`.

use std::collections::HashMap;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use engine::execute::docker::Docker;
use engine::watch::compose::Compose;
use engine::watch::{BuildResult, Event, Watcher};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::report::{fmt_duration, Show};
use crate::{output, setup, Global};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  cargo xtask watch                       rebuild any image whose inputs change
  cargo xtask watch api-gateway --up      ... and restart its compose service after each build
  cargo xtask watch --json | jq .event    one JSON object per event")]
pub struct Args {
    /// Services to watch (directory, package or image names); all when none is given. Images
    /// they build FROM are included
    pub services: Vec<String>,
    /// Keep the compose stack on the new images: after each rebuild, the service's containers
    /// are replaced (as `docker compose up -d --no-deps <service>` would, through the Engine API;
    /// Compose itself where that cannot be done exactly). The new image goes into service while
    /// it is verified; one that fails is replaced by the last verified image again
    #[arg(long)]
    pub up: bool,
    /// With --up: put a rebuilt image into service only after it passed verification (slower by
    /// the verification's time, about a second)
    #[arg(long, requires = "up")]
    pub up_after_verify: bool,
    /// The quiet period that ends a batch of file events, in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 50)]
    pub debounce: u64,
    /// The compose file for --up [default: compose.yaml, compose.yml, docker-compose.yaml or
    /// docker-compose.yml at the root]
    #[arg(long, value_name = "FILE", requires = "up")]
    pub compose_file: Option<PathBuf>,
    #[command(flatten)]
    pub run: crate::cmd::images::RunFlags,
}

impl Args {
    pub fn run(self, global: &Global) -> anyhow::Result<i32> {
        let mut popts = setup::options(global)?;
        popts.services = self.services.clone();
        popts.build_args = crate::cmd::images::parse_build_args(&self.run.build_args)?;
        let docker = Docker::detect()?;
        docker.ping()?;
        if let Some(w) = docker.legacy_warning() {
            output::warn(&w);
        }
        let compose = if self.up {
            let file = match &self.compose_file {
                Some(f) => f.clone(),
                None => Compose::default_file(&popts.root).with_context(|| {
                    format!(
                        "--up needs a compose file, and `{}` has none of {}\n  hint: pass --compose-file FILE",
                        popts.root.display(),
                        engine::watch::compose::DEFAULT_FILES.join(", ")
                    )
                })?,
            };
            Some(Compose::detect(&docker.client, &file)?)
        } else {
            None
        };
        let mut opts = engine::watch::Options::new(popts);
        opts.debounce = Duration::from_millis(self.debounce.max(1));
        opts.run = self.run.options(global)?;
        opts.compose = compose;
        opts.serve_early = !self.up_after_verify;

        let stop = Arc::new(AtomicBool::new(false));
        {
            let stop = stop.clone();
            let json = global.json || output::events();
            ctrlc::set_handler(move || {
                if stop.swap(true, Ordering::SeqCst) {
                    // A second Ctrl-C: leave now; nothing unfinished was recorded.
                    std::process::exit(130);
                }
                if !json && !output::quiet() {
                    eprintln!(
                        "\nstopping: cancelling running builds (nothing unfinished is recorded)"
                    );
                }
            })
            .context("failed to install the Ctrl-C handler")?;
        }
        let printer = Printer::new(global);
        Watcher::new(opts).run(
            engine::execute::Backend::docker(&docker),
            &|e| printer.event(e),
            &stop,
        )?;
        printer.finish();
        Ok(0)
    }
}

/// How events are shown.
enum Mode {
    /// One JSON object per line: on stdout with `--json`, on stderr with `--progress json`.
    Json {
        stdout: bool,
    },
    Plain {
        verbose: bool,
    },
    /// `-q`: failures, errors and warnings only.
    Quiet,
    Bars(Bars),
}

struct Bars {
    multi: MultiProgress,
    lines: HashMap<String, ProgressBar>,
    status: ProgressBar,
    width: usize,
}

struct Printer {
    mode: Mutex<Mode>,
}

fn short_key(k: &str) -> &str {
    &k[..k.len().min(12)]
}

fn short_id(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

impl Printer {
    fn new(global: &Global) -> Printer {
        let show = crate::report::show(global);
        let mode = if global.json {
            Mode::Json { stdout: true }
        } else if show == Show::Json {
            Mode::Json { stdout: false }
        } else if show == Show::Quiet {
            Mode::Quiet
        } else if show == Show::Bars {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
            let status = multi.add(ProgressBar::new_spinner());
            let template = if output::colour_stderr() {
                "{spinner:.cyan} {wide_msg}"
            } else {
                "{spinner} {wide_msg}"
            };
            status.set_style(
                ProgressStyle::with_template(template)
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            status.enable_steady_tick(Duration::from_millis(200));
            status.set_message("starting the watch");
            Mode::Bars(Bars {
                multi,
                lines: HashMap::new(),
                status,
                width: 12,
            })
        } else {
            Mode::Plain {
                verbose: output::verbose(1),
            }
        };
        Printer {
            mode: Mutex::new(mode),
        }
    }

    fn event(&self, e: Event) {
        let Ok(mut mode) = self.mode.lock() else {
            return;
        };
        match &mut *mode {
            Mode::Json { stdout: true } => output::json_line(&mut std::io::stdout().lock(), &e),
            Mode::Json { stdout: false } => output::json_line(&mut std::io::stderr().lock(), &e),
            Mode::Plain { verbose } => {
                if let Some(line) = plain_line(&e, *verbose) {
                    eprintln!("{line}");
                }
            }
            Mode::Quiet => {
                let failed = matches!(
                    e,
                    Event::BuildFinished {
                        result: BuildResult::Failed,
                        ..
                    } | Event::Up { ok: false, .. }
                        | Event::Error { .. }
                        | Event::Warning { .. }
                        | Event::Rescan { .. }
                );
                if failed {
                    if let Some(line) = plain_line(&e, false) {
                        eprintln!("{line}");
                    }
                }
            }
            Mode::Bars(bars) => bars.event(e),
        }
    }

    fn finish(&self) {
        if let Ok(mode) = self.mode.lock() {
            if let Mode::Bars(b) = &*mode {
                for pb in b.lines.values() {
                    pb.finish();
                }
                b.status.finish_with_message("stopped");
            }
        }
    }
}

/// One line per event worth a line, for logs and pipes.
fn plain_line(e: &Event, verbose: bool) -> Option<String> {
    Some(match e {
        Event::Watching {
            root,
            services,
            directories,
            debounce_ms,
            compose,
            ..
        } => format!(
            "watching {root}: {} image(s) ({}), {directories} directories, debounce {debounce_ms}ms{}; Ctrl-C to stop",
            services.len(),
            services.join(", "),
            compose
                .as_ref()
                .map(|c| format!(", --up with {c}"))
                .unwrap_or_default()
        ),
        Event::Batch {
            paths,
            changed,
            reanalysed,
            hashed,
            latency_ms,
            ..
        } => {
            let more = if *changed > paths.len().min(1) {
                format!(" and {} more", changed - paths.len().min(1))
            } else {
                String::new()
            };
            let how = match reanalysed {
                Some(why) => format!("analysed again ({why})"),
                None => "re-hashed in place".to_string(),
            };
            format!(
                "change: {}{more}: {how}, {hashed} file(s) read, {latency_ms:.0}ms after the first event",
                paths.first().map(String::as_str).unwrap_or("-")
            )
        }
        Event::Affected {
            service,
            key,
            trigger,
            ..
        } => match key {
            Some(k) => format!("   {service}: key {} (changed by {trigger})", short_key(k)),
            None => format!("   {service}: no longer a service"),
        },
        Event::Queued { service, why, .. } => format!("   {service}: queued: {why}"),
        Event::BuildStarted {
            service,
            trigger,
            follow_up,
            reasons,
            ..
        } => format!(
            "   {service}: building{}{}",
            match (trigger, reasons.first()) {
                (Some(t), _) => format!(" ({t} changed)"),
                (None, Some(r)) => format!(" ({r})"),
                (None, None) => String::new(),
            },
            if *follow_up { ", a follow-up" } else { "" }
        ),
        Event::BuildStep { service, step } if verbose => format!("   {service}: {step}"),
        Event::BuildStep { .. } => return None,
        Event::BuildFinished {
            service,
            result,
            image_id,
            duration_ms,
            superseded,
            error,
            log_tail,
            log,
            ..
        } => {
            let d = fmt_duration(Duration::from_millis(*duration_ms));
            let note = if *superseded {
                " (its inputs changed meanwhile: a follow-up build is due)"
            } else {
                ""
            };
            match result {
                BuildResult::Built => format!(
                    "   {service}: built in {d} ({}){note}",
                    image_id.as_deref().map(short_id).unwrap_or("-")
                ),
                BuildResult::Interrupted => format!("   {service}: interrupted after {d}"),
                BuildResult::Skipped => format!(
                    "   {service}: skipped: {}",
                    error.as_deref().unwrap_or("-")
                ),
                BuildResult::Failed => format!(
                    "   {service}: FAILED after {d}: {}{note}{}{}",
                    error.as_deref().unwrap_or("-"),
                    log_tail
                        .as_ref()
                        .map(|t| format!("\n--- last lines of the log ---\n{t}\n---"))
                        .unwrap_or_default(),
                    log.as_ref()
                        .map(|l| format!("\n   whole log: {l}"))
                        .unwrap_or_default()
                ),
            }
        }
        Event::Restored {
            service,
            image_id,
            registry,
            ..
        } => format!(
            "   {service}: {}: latest is {} (no build)",
            registry
                .first()
                .map(String::as_str)
                .unwrap_or("cached again"),
            short_id(image_id)
        ),
        Event::Up {
            service,
            compose_service,
            ok,
            error,
            duration_ms,
            via,
            verified,
        } => match (ok, error) {
            (true, _) => format!(
                "   {service}: compose service {compose_service} up in {}{}{}",
                fmt_duration(Duration::from_millis(*duration_ms)),
                if via == "engine" {
                    " (container replaced)"
                } else {
                    " (compose up)"
                },
                if *verified { "" } else { ", being verified" }
            ),
            (false, e) => format!(
                "   {service}: compose up failed: {}",
                e.as_deref().unwrap_or("-")
            ),
        },
        Event::Registry { service, message } => format!("   {service}: {message}"),
        Event::Rescan { reason } => format!("warning: rescanning everything: {reason}"),
        Event::Warning { message } => format!("warning: {message}"),
        Event::Error { message } => format!("error: {message}"),
        Event::Healthy {
            service,
            compose_service,
            ok,
            error,
            save_to_healthy_ms,
            up_to_healthy_ms,
        } => match (ok, error, save_to_healthy_ms, up_to_healthy_ms) {
            (true, None, Some(s), Some(u)) => format!(
                "   {service}: compose service {compose_service} healthy {} after the save ({} after up)",
                fmt_duration(Duration::from_secs_f64(s / 1e3)),
                fmt_duration(Duration::from_secs_f64(u / 1e3))
            ),
            (true, None, None, Some(u)) => format!(
                "   {service}: compose service {compose_service} healthy {} after up",
                fmt_duration(Duration::from_secs_f64(u / 1e3))
            ),
            (_, e, _, _) => format!(
                "   {service}: compose service {compose_service}: {}",
                e.clone().unwrap_or_else(|| "no healthy answer".to_string())
            ),
        },
        Event::Idle { .. } => "   all images up to date; watching".to_string(),
        Event::Stopped => "stopped".to_string(),
    })
}

impl Bars {
    fn line(&mut self, service: &str) -> ProgressBar {
        if let Some(pb) = self.lines.get(service) {
            return pb.clone();
        }
        self.width = self.width.max(service.len());
        let pb = self
            .multi
            .insert_before(&self.status, ProgressBar::new_spinner());
        pb.set_style(self.style(false));
        pb.set_prefix(service.to_string());
        self.lines.insert(service.to_string(), pb.clone());
        pb
    }

    fn style(&self, busy: bool) -> ProgressStyle {
        let w = self.width;
        let t = if busy {
            format!("{{spinner:.cyan}} {{prefix:{w}.bold}} {{elapsed:>4}} {{wide_msg}}")
        } else {
            format!("  {{prefix:{w}.bold}} {{wide_msg}}")
        };
        ProgressStyle::with_template(&t).unwrap_or_else(|_| ProgressStyle::default_spinner())
    }

    fn set_busy(&mut self, service: &str, busy: bool, msg: String) {
        let pb = self.line(service);
        pb.set_style(self.style(busy));
        if busy {
            pb.reset_elapsed();
            pb.enable_steady_tick(Duration::from_millis(120));
        } else {
            pb.disable_steady_tick();
        }
        pb.set_message(msg);
    }

    fn event(&mut self, e: Event) {
        match e {
            Event::Watching { .. } => {
                if let Some(l) = plain_line(&e, false) {
                    self.status.set_message(l);
                }
                if let Event::Watching { keys, .. } = e {
                    for (s, k) in keys {
                        self.set_busy(&s, false, format!("key {}", short_key(&k)));
                    }
                }
            }
            Event::Batch { .. } => {
                if let Some(l) = plain_line(&e, false) {
                    self.status.set_message(l);
                }
            }
            Event::Affected {
                service,
                key,
                trigger,
                ..
            } => {
                let msg = match key {
                    Some(k) => format!("key {} · {trigger} changed", short_key(&k)),
                    None => "no longer a service".to_string(),
                };
                self.set_busy(&service, false, msg);
            }
            Event::Queued { service, why, .. } => {
                self.set_busy(&service, false, format!("queued: {why}"))
            }
            Event::BuildStarted {
                service,
                trigger,
                follow_up,
                ..
            } => {
                let msg = format!(
                    "building{}{}",
                    trigger.map(|t| format!(" · {t}")).unwrap_or_default(),
                    if follow_up { " · follow-up" } else { "" }
                );
                self.set_busy(&service, true, msg);
            }
            Event::BuildStep { service, step } => {
                let pb = self.line(&service);
                pb.set_message(format!("building · {step}"));
            }
            Event::BuildFinished { ref service, .. } => {
                let service = service.clone();
                let failed = matches!(
                    e,
                    Event::BuildFinished {
                        result: BuildResult::Failed,
                        ..
                    }
                );
                let line = plain_line(&e, false).unwrap_or_default();
                let (first, rest) = line.trim().split_once('\n').unwrap_or((line.trim(), ""));
                let first = first
                    .strip_prefix(&format!("{service}: "))
                    .unwrap_or(first)
                    .to_string();
                self.set_busy(&service, false, first);
                if failed && !rest.is_empty() {
                    self.multi.suspend(|| eprintln!("{service}: {rest}"));
                }
            }
            Event::Restored { ref service, .. }
            | Event::Up { ref service, .. }
            | Event::Healthy { ref service, .. }
            | Event::Registry { ref service, .. } => {
                let service = service.clone();
                let line = plain_line(&e, false).unwrap_or_default();
                let msg = line
                    .trim()
                    .strip_prefix(&format!("{service}: "))
                    .unwrap_or(line.trim())
                    .to_string();
                self.set_busy(&service, false, msg);
            }
            Event::Rescan { .. } | Event::Warning { .. } | Event::Error { .. } => {
                if let Some(l) = plain_line(&e, false) {
                    let _ = self.multi.println(l);
                }
            }
            Event::Idle { .. } => self
                .status
                .set_message("all images up to date · watching · Ctrl-C to stop"),
            Event::Stopped => self.status.set_message("stopped"),
        }
    }
}
