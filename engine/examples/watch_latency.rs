//! Benchmark (not a test): the time from a save to the start of the rebuild in `watch`, median
//! and p95, against baselines measured in the same run (a cold and a warm `pipeline::analyze` of
//! the same tree: what a one-off `cargo xtask images` pays before it can start a build).
//!
//! Run: `cargo run --release -p engine --example watch_latency -- [--saves N] [--debounce MS]
//! [--extra-files N] [--root DIR]` (see docs/watch.md). The watch runs for real (inotify, the
//! debounce, the analysis, the plan against the cache); the builder is a stand-in that stamps the
//! moment a build starts and returns at once, since the build itself is not what is measured.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use engine::execute::{BuildError, BuildOutput, BuildRequest, Builder, KEY_LABEL};
use engine::pipeline;
use engine::watch::{Event, Watcher};

/// The stand-in builder: says when a build starts, returns a fake image id.
struct StampBuilder {
    started: Mutex<Sender<(String, Instant)>>,
}

impl Builder for StampBuilder {
    fn build(
        &self,
        req: &BuildRequest,
        _on_line: &(dyn Fn(&str) + Sync),
    ) -> Result<BuildOutput, BuildError> {
        let at = Instant::now();
        if let Ok(tx) = self.started.lock() {
            let _ = tx.send((req.service.clone(), at));
        }
        let key = req.labels.get(KEY_LABEL).cloned().unwrap_or_default();
        Ok(BuildOutput {
            image_id: format!("sha256:{key}"),
            log: Vec::new(),
        })
    }
}

struct Args {
    root: PathBuf,
    saves: usize,
    debounce: u64,
    extra_files: usize,
}

fn parse_args() -> Result<Args, String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut a = Args {
        root: manifest.join("../examples/kc-backend"),
        saves: 40,
        debounce: engine::watch::DEFAULT_DEBOUNCE.as_millis() as u64,
        extra_files: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--root" => a.root = PathBuf::from(value()?),
            "--saves" => a.saves = value()?.parse().map_err(|e| format!("--saves: {e}"))?,
            "--debounce" => {
                a.debounce = value()?.parse().map_err(|e| format!("--debounce: {e}"))?
            }
            "--extra-files" => {
                a.extra_files = value()?
                    .parse()
                    .map_err(|e| format!("--extra-files: {e}"))?
            }
            "-h" | "--help" => {
                println!("usage: watch_latency [--saves N] [--debounce MS] [--extra-files N] [--root DIR]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}` (try --help)")),
        }
    }
    Ok(a)
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if matches!(
            name.to_str(),
            Some("node_modules" | "dist" | ".images-cache" | ".git")
        ) {
            continue;
        }
        let ft = entry.file_type()?;
        let dest = to.join(&name);
        if ft.is_dir() {
            copy_tree(&entry.path(), &dest)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &dest)?;
        } else {
            std::fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (
        percentile(&v, 50.0),
        percentile(&v, 95.0),
        v.last().copied().unwrap_or(f64::NAN),
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The analysis a one-off run does, `n` times: (cold, without the stat cache; warm, with it).
fn baselines(root: &Path, n: usize) -> Result<(Vec<f64>, Vec<f64>), String> {
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    let mut o = pipeline::Options::new(root);
    for _ in 0..n {
        o.stat_cache = false;
        let t = Instant::now();
        pipeline::analyze(&o).map_err(|e| e.to_string())?;
        cold.push(ms(t.elapsed()));
    }
    o.stat_cache = true;
    pipeline::analyze(&o).map_err(|e| e.to_string())?;
    for _ in 0..n {
        let t = Instant::now();
        pipeline::analyze(&o).map_err(|e| e.to_string())?;
        warm.push(ms(t.elapsed()));
    }
    Ok((cold, warm))
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let tmp = tempfile::Builder::new()
        .prefix("kc-watch-bench-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    let root = tmp.path().join("repo");
    copy_tree(&args.root, &root).map_err(|e| format!("copy {}: {e}", args.root.display()))?;
    let service_dir = {
        let ws = engine::workspace::Workspace::discover(&root).map_err(|e| e.to_string())?;
        let svc = ws.services.last().ok_or("the monorepo has no service")?;
        ws.packages[svc.package].dir.clone()
    };
    for i in 0..args.extra_files {
        let p = root.join(&service_dir).join(format!("src/gen/m{i}.ts"));
        std::fs::create_dir_all(p.parent().ok_or("path")?).map_err(|e| e.to_string())?;
        std::fs::write(&p, format!("export const v{i} = {i};\n")).map_err(|e| e.to_string())?;
    }

    let (cold, warm) = baselines(&root, 15)?;
    let warm_one = pipeline::analyze(&pipeline::Options::new(&root)).map_err(|e| e.to_string())?;
    let files = warm_one.hash_stats.files;
    let t = &warm_one.timings;

    let (tx, rx) = channel();
    let builder = Arc::new(StampBuilder {
        started: Mutex::new(tx),
    });
    let (ev_tx, ev_rx) = channel::<Event>();
    let ev_tx = Mutex::new(ev_tx);
    let stop = Arc::new(AtomicBool::new(false));
    let mut opts = engine::watch::Options::new(pipeline::Options::new(&root));
    opts.debounce = Duration::from_millis(args.debounce);
    opts.run.jobs = 2;
    let watcher = Watcher::new(opts);
    let (b2, s2) = (builder.clone(), stop.clone());
    let thread = std::thread::spawn(move || {
        let on_event = |e: Event| {
            if let Ok(tx) = ev_tx.lock() {
                let _ = tx.send(e);
            }
        };
        watcher.run(
            engine::execute::Backend::builder(b2.as_ref()),
            &on_event,
            &s2,
        )
    });
    let wait_idle = |what: &str| -> Result<Vec<Event>, String> {
        let mut seen = Vec::new();
        loop {
            match ev_rx.recv_timeout(Duration::from_secs(30)) {
                Ok(e @ Event::Idle { .. }) => {
                    seen.push(e);
                    return Ok(seen);
                }
                Ok(e) => seen.push(e),
                Err(_) => return Err(format!("no idle event after {what}")),
            }
        }
    };
    wait_idle("the start")?;
    while rx.try_recv().is_ok() {}

    // Each save: an edit of a source file (handled in place), then a new file (a re-analysis).
    let mut in_place = Vec::new();
    let mut reanalysed = Vec::new();
    let mut analysis_in_place = Vec::new();
    let mut analysis_full = Vec::new();
    let edited = root.join(&service_dir).join("src/index.ts");
    let original = std::fs::read_to_string(&edited).map_err(|e| e.to_string())?;
    for i in 0..args.saves {
        for (kind, path, text) in [
            (0, edited.clone(), format!("{original}\n// save {i}\n")),
            (
                1,
                root.join(&service_dir).join(format!("src/added{i}.ts")),
                format!("export const added{i} = {i};\n"),
            ),
        ] {
            // Let the inotify queue and the machine settle between saves.
            std::thread::sleep(Duration::from_millis(20));
            let t0 = Instant::now();
            std::fs::write(&path, text).map_err(|e| e.to_string())?;
            let (_, started) = rx
                .recv_timeout(Duration::from_secs(30))
                .map_err(|_| format!("save {i}: no rebuild started"))?;
            let events = wait_idle(&format!("save {i}"))?;
            let latency = ms(started.duration_since(t0));
            let analysis = events.iter().find_map(|e| match e {
                Event::Batch { analysis_ms, .. } => Some(*analysis_ms),
                _ => None,
            });
            if kind == 0 {
                in_place.push(latency);
                analysis_in_place.extend(analysis);
            } else {
                reanalysed.push(latency);
                analysis_full.extend(analysis);
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    thread
        .join()
        .map_err(|_| "the watch thread panicked".to_string())?
        .map_err(|e| e.to_string())?;

    let line = |name: &str, v: Vec<f64>| {
        let n = v.len();
        let (p50, p95, max) = summary(v);
        println!("{name:<52} {p50:>9.2} {p95:>9.2} {max:>9.2} {n:>6}");
    };
    println!(
        "watch latency on a copy of {} ({files} context files; {} saves of each kind; debounce {} ms; {} CPUs)",
        args.root.display(),
        args.saves,
        args.debounce,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    );
    println!(
        "{:<52} {:>9} {:>9} {:>9} {:>6}",
        "", "median ms", "p95 ms", "max ms", "runs"
    );
    line("save -> rebuild start: edit (re-hashed in place)", in_place);
    line("save -> rebuild start: new file (re-analysed)", reanalysed);
    line(
        "  of which the batch's analysis, in place",
        analysis_in_place,
    );
    line(
        "  of which the batch's analysis, re-analysed",
        analysis_full,
    );
    line("baseline: cold pipeline::analyze (no stat cache)", cold);
    line("baseline: warm pipeline::analyze (stat cache)", warm);
    println!(
        "(the save -> start figures include the {} ms debounce)",
        args.debounce
    );
    println!(
        "one warm analyze by phase: discover {:.2} ms, list {:.2} ms, hash {:.2} ms ({} files read), keys {:.2} ms",
        ms(t.discover),
        ms(t.list),
        ms(t.hash),
        warm_one.hash_stats.hashed,
        ms(t.keys)
    );
    Ok(())
}
