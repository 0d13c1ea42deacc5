//! Issue 15's Docker scenarios beyond the layout: a fresh engine (a second `dockerd` with its own
//! data root, a new CI runner) building one edited service with and without the registry layer
//! cache, and `watch --up` from a save to the new code answering over HTTP from the container.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::buildlog::Breakdown;
use super::measure::{Proc, Stats};
use super::report::{fmt_ms, Kind, Ratio, Raw, Series};
use super::{peer, Ctx};

/// Target (issue 15): the fresh engine with the registry layer cache in at most half the time.
const FRESH_TARGET: f64 = 0.5;
/// Target (issue 15): save -> the new code answering, in seconds.
const WATCH_TARGET_S: f64 = 2.5;

#[derive(Debug, serde::Serialize)]
pub struct SpeedResult {
    pub title: String,
    pub note: String,
    pub series: Vec<Series>,
    pub ratios: Vec<Ratio>,
    /// Every run, in order, with where its time went.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<String>,
}

pub fn markdown(out: &mut String, r: &SpeedResult) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "## {}\n\n{}\n", r.title, r.note);
    super::report::series_table(out, &r.series);
    super::report::ratio_table(out, &r.ratios);
    if !r.runs.is_empty() {
        out.push_str("\nEvery run:\n\n");
        for line in &r.runs {
            let _ = writeln!(out, "- {line}");
        }
    }
    out.push('\n');
}

fn run_ok(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to run `{program}`"))?;
    if !out.status.success() {
        anyhow::bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A second dockerd in a temp dir, with a bridge of its own whose containers reach the network
/// through rules of its own (removed with it), as a CI runner's would.
struct FreshEngine {
    dir: PathBuf,
    child: Option<Child>,
    bridge: String,
    rules: Vec<Vec<String>>,
}

impl FreshEngine {
    fn start(docker: &str, base: &Path, n: u32) -> anyhow::Result<FreshEngine> {
        let dir = base.join(format!("e{n}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let id = std::process::id() % 10_000;
        let bridge = format!("kcb{id}x{}", n % 100);
        let octet = (id + n) % 250;
        let subnet = format!("10.214.{octet}.0/24");
        let _ = run_ok("ip", &["link", "del", &bridge]);
        let mut e = FreshEngine {
            dir: dir.clone(),
            child: None,
            bridge: bridge.clone(),
            rules: Vec::new(),
        };
        run_ok("ip", &["link", "add", &bridge, "type", "bridge"])?;
        run_ok(
            "ip",
            &[
                "addr",
                "add",
                &format!("10.214.{octet}.1/24"),
                "dev",
                &bridge,
            ],
        )?;
        run_ok("ip", &["link", "set", &bridge, "up"])?;
        for rule in [
            vec![
                "-t",
                "nat",
                "POSTROUTING",
                "-s",
                &subnet,
                "!",
                "-o",
                &bridge,
                "-j",
                "MASQUERADE",
            ],
            vec!["-t", "filter", "FORWARD", "-i", &bridge, "-j", "ACCEPT"],
            vec!["-t", "filter", "FORWARD", "-o", &bridge, "-j", "ACCEPT"],
        ] {
            let rule: Vec<String> = rule.into_iter().map(String::from).collect();
            let mut add = vec![rule[0].clone(), rule[1].clone(), "-I".to_string()];
            add.extend(rule[2..].iter().cloned());
            run_ok(
                "iptables",
                &add.iter().map(String::as_str).collect::<Vec<_>>(),
            )?;
            e.rules.push(rule);
        }
        let log = std::fs::File::create(dir.join("dockerd.log"))?;
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("pid"))
            .arg("--host")
            .arg(e.host())
            .arg(format!("--bridge={bridge}"))
            .args([
                "--iptables=false",
                "--ip-masq=false",
                "--storage-driver=overlay2",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start a second dockerd")?;
        e.child = Some(child);
        let t = Instant::now();
        while run_ok(docker, &["-H", &e.host(), "version"]).is_err() {
            if t.elapsed() > Duration::from_secs(60) {
                anyhow::bail!("the second dockerd did not answer within 60 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // The base image, as a runner has it: `docker save | docker load`, by pipes.
        let mut save = Command::new(docker)
            .args(["save", "node:18-alpine"])
            .stdout(Stdio::piped())
            .spawn()?;
        let out = save.stdout.take().context("docker save's stdout")?;
        let load = Command::new(docker)
            .args(["-H", &e.host(), "load"])
            .stdin(Stdio::from(out))
            .output()?;
        if !save.wait()?.success() || !load.status.success() {
            anyhow::bail!("loading node:18-alpine into the fresh engine failed");
        }
        Ok(e)
    }

    fn host(&self) -> String {
        format!("unix://{}", self.dir.join("sock").display())
    }
}

impl Drop for FreshEngine {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(30) && !matches!(c.try_wait(), Ok(Some(_))) {
                std::thread::sleep(Duration::from_millis(100));
            }
            if !matches!(c.try_wait(), Ok(Some(_))) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for rule in &self.rules {
            let mut del = vec![rule[0].clone(), rule[1].clone(), "-D".to_string()];
            del.extend(rule[2..].iter().cloned());
            let _ = run_ok(
                "iptables",
                &del.iter().map(String::as_str).collect::<Vec<_>>(),
            );
        }
        let _ = run_ok("ip", &["link", "del", &self.bridge]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn edit(root: &Path, rel: &str, tag: &str) -> anyhow::Result<()> {
    let p = root.join(rel);
    let mut text = std::fs::read_to_string(&p)?;
    text.push_str(&format!("// bench edit {tag}\n"));
    std::fs::write(&p, text).with_context(|| format!("failed to write `{}`", p.display()))
}

/// A fresh engine builds one edited service: with the registry layer cache (read-only, as a
/// pull request's CI) and without; the two take turns going first, each on a new engine.
///
/// Round 0 is a warm-up of both sides, printed and left out of the figures: the "without" side
/// downloads every package from the npm registry, whose first answers for a package (DNS, the
/// CDN's cache) are much slower than the next ones, so that every measured "without" build sees
/// the same warm npm as the others. Each build's own log says where its time went (printed).
pub fn fresh(ctx: &Ctx) -> anyhow::Result<SpeedResult> {
    let docker = peer::engine_client()?;
    let client = docker.client.to_string_lossy().into_owned();
    let host = std::env::var("DOCKER_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into());
    let registry = format!("{host}/kcbench{}", std::process::id());
    let prefix = format!("kcbench-{}-f-", std::process::id());
    // The images, and the registry's tags this engine holds (the key and layer cache pushes).
    let _cleanup = super::ImageCleanup {
        docker: client.clone(),
        prefixes: vec![prefix.clone(), format!("{registry}/")],
    };
    let dir = ctx.work.join("fresh");
    // No cache directory of an earlier run: the first build must build (and export).
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("failed to remove `{}`", dir.display()))?;
    }
    let root = dir.join("example");
    peer::copy_example(
        &ctx.repo_root.join("examples").join("kc-backend"),
        &root,
        &prefix,
        &prefix,
    )?;
    let service = "student-service";
    let images = |cache: &Path| {
        Proc::new(&ctx.exe)
            .arg("--root")
            .arg(&root)
            .arg("--cache-dir")
            .arg(cache)
            .args(["--json", "images"])
    };
    eprintln!("bench fresh: building {service} here and sharing its layer cache in {registry}");
    // Verified: an unverified run pushes nothing, its layer cache included.
    let o = images(&dir.join("cache-here"))
        .args([service, "--cache-registry", &registry])
        .run(false, &ctx.scratch)?;
    if !String::from_utf8_lossy(&o.stdout).contains("layer cache pushed") {
        anyhow::bail!(
            "the first build shared no layer cache: {}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
    let mut with = Raw::new(
        "fresh_with_layer_cache",
        format!("ours: a fresh engine, {service} edited -> built, with the registry layer cache"),
        Kind::Ours,
        Some(format!("DOCKER_HOST=<fresh engine> xtask --root <copy> --cache-dir <empty> --json images --no-verify {service} --cache-registry {host}/<ns> --cache-read-only")),
    );
    let mut without = Raw::new(
        "fresh_without_layer_cache",
        format!("baseline: a fresh engine, {service} edited -> built, no layer cache"),
        Kind::Reference,
        Some(format!("DOCKER_HOST=<fresh engine> xtask --root <copy> --cache-dir <empty> --json images --no-verify {service}")),
    );
    let runs = ctx.runs.max(1);
    let mut lines = Vec::new();
    let mut paired = Vec::new();
    let mut n = 0;
    for round in 0..=runs {
        edit(
            &root,
            &format!("services/{service}/src/index.ts"),
            &format!("{}-{round}", std::process::id()),
        )?;
        let order = if round % 2 == 1 {
            [true, false]
        } else {
            [false, true]
        };
        let mut pair = [0.0f64; 2];
        for use_cache in order {
            n += 1;
            let engine = FreshEngine::start(&client, &dir, n)?;
            let cache = dir.join(format!("cache-{n}"));
            let _ = std::fs::remove_dir_all(&cache);
            let mut p = images(&cache)
                .args(["--no-verify", service])
                .env("DOCKER_HOST", &engine.host());
            if use_cache {
                p = p.args(["--cache-registry", &registry, "--cache-read-only"]);
            }
            let o = p.run(false, &ctx.scratch)?;
            let json: serde_json::Value =
                serde_json::from_slice(&o.stdout).context("`images --json` printed no JSON")?;
            if json["images"][0]["action"] != "built" {
                anyhow::bail!("the fresh engine's build did not build: {json}");
            }
            let ms = o.wall.as_secs_f64() * 1e3;
            let what = if use_cache {
                "with the layer cache"
            } else {
                "without"
            };
            let when = if round == 0 {
                "warm-up, not counted".to_string()
            } else {
                format!("run {round}/{runs}")
            };
            let breakdown = recorded_log(&cache, service)
                .map(|log| Breakdown::of(&log).line())
                .unwrap_or_else(|e| format!("(no build log: {e})"));
            let build_ms = json["images"][0]["duration_ms"]
                .as_f64()
                .unwrap_or(f64::NAN);
            let line = format!(
                "{when}, {what}: {} (of which `docker build` {}: {breakdown})",
                fmt_ms(ms),
                fmt_ms(build_ms)
            );
            eprintln!("bench fresh: {line}");
            lines.push(line);
            if round == 0 {
                continue;
            }
            pair[usize::from(!use_cache)] = ms;
            if use_cache {
                with.samples.push(o.wall);
            } else {
                without.samples.push(o.wall);
            }
        }
        if round > 0 && pair[1] > 0.0 {
            paired.push(pair[0] / pair[1]);
        }
    }
    let series: Vec<Series> = [with, without].iter().filter_map(|r| r.finish()).collect();
    let mut ratios = Vec::new();
    if let [a, b] = &series[..] {
        ratios.push(Ratio::of(
            "a fresh engine, one service edited: with / without the registry layer cache",
            a.stats.median_ms,
            b.stats.median_ms,
            Some(FRESH_TARGET),
            None,
        ));
    }
    let paired_text: Vec<String> = paired.iter().map(|r| format!("{r:.2}x")).collect();
    Ok(SpeedResult {
        title: "A fresh engine with the registry layer cache".into(),
        note: format!("examples/kc-backend; each build on a new `dockerd` (own data root, empty BuildKit cache, `node:18-alpine` loaded), Docker client `{client}` ({:?}); the registry's cache was exported by a verified build of the unedited service on the shared engine. A warm-up round of both sides first (not counted), then the two sides take turns going first. The ratio is of the medians; each round's own ratio (with / without, built one after the other): {}. No peer.", docker.mode, paired_text.join(", ")),
        series,
        ratios,
        runs: lines,
    })
}

/// The build log recorded for a service's last build in a cache directory.
fn recorded_log(cache_dir: &Path, service: &str) -> anyhow::Result<String> {
    let store = cache::Store::open(cache_dir)?;
    let last = store
        .last_built(service)
        .context("no build of it recorded")?;
    let record = store
        .get_record(&last.key)?
        .context("its record is missing")?;
    let blob = record.log.context("its record kept no log")?;
    let bytes = store.get_blob(&blob)?.context("its log is missing")?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `watch --up` on the example's compose stack: each run edits student-service and measures
/// from the write to the first `200` of `/health` from a new container (polled here every 20 ms
/// at its address), and reads the watch's own `save_to_healthy_ms`.
pub fn watch_up(ctx: &Ctx) -> anyhow::Result<SpeedResult> {
    let docker = peer::engine_client()?;
    let client = docker.client.to_string_lossy().into_owned();
    let prefix = format!("kcbench-{}-w-", std::process::id());
    let _cleanup = super::ImageCleanup {
        docker: client.clone(),
        prefixes: vec![prefix.clone()],
    };
    let dir = ctx.work.join("watch-up");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("failed to remove `{}`", dir.display()))?;
    }
    let root = dir.join("example");
    peer::copy_example(
        &ctx.repo_root.join("examples").join("kc-backend"),
        &root,
        &prefix,
        &prefix,
    )?;
    let compose_file = root.join("docker-compose.yml");
    let project = format!("kcbenchw{}", std::process::id());
    let compose = |args: &[&str]| -> anyhow::Result<String> {
        let mut all = vec!["-p", project.as_str(), "-f"];
        let f = compose_file.to_string_lossy().into_owned();
        all.push(&f);
        all.extend_from_slice(args);
        run_ok("docker-compose", &all)
    };
    struct Down<'a>(&'a dyn Fn(&[&str]) -> anyhow::Result<String>);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = (self.0)(&["down", "--remove-orphans", "-t", "1"]);
        }
    }
    let cache = dir.join("cache");
    eprintln!("bench watch-up: building the example and bringing the stack up");
    Proc::new(&ctx.exe)
        .arg("--root")
        .arg(&root)
        .arg("--cache-dir")
        .arg(&cache)
        .args(["--json", "images"])
        .run(false, &ctx.scratch)?;
    let _down = Down(&compose);
    let service = "student-service";
    compose(&["up", "-d", "--no-build", service])?;
    let container = || -> String {
        run_ok(
            &client,
            &[
                "ps",
                "-q",
                "--filter",
                &format!("label=com.docker.compose.project={project}"),
                "--filter",
                &format!("label=com.docker.compose.service={service}"),
            ],
        )
        .unwrap_or_default()
    };
    let mut watch = Command::new(&ctx.exe)
        .arg("--root")
        .arg(&root)
        .arg("--cache-dir")
        .arg(&cache)
        .args(["watch", "--json", "--up", "--compose-file"])
        .arg(&compose_file)
        .args([service])
        .env("COMPOSE_PROJECT_NAME", &project)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting `xtask watch --up`")?;
    let stdout = watch.stdout.take().context("watch's stdout")?;
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if tx.send(v).is_err() {
                    break;
                }
            }
        }
    });
    let result = (|| -> anyhow::Result<(Vec<Duration>, Vec<f64>)> {
        let seen = std::cell::RefCell::new(Vec::<serde_json::Value>::new());
        let wait_for = |what: &str, pred: &dyn Fn(&serde_json::Value) -> bool| {
            let deadline = Instant::now() + Duration::from_secs(180);
            while Instant::now() < deadline {
                if let Ok(v) = rx.recv_timeout(Duration::from_millis(200)) {
                    seen.borrow_mut().push(v.clone());
                    if pred(&v) {
                        return Ok(v);
                    }
                }
            }
            anyhow::bail!("the watch gave no `{what}` within 180 s")
        };
        wait_for("idle", &|v| v["event"] == "idle")?;
        let (mut ours, mut reported) = (Vec::new(), Vec::new());
        for run in 0..=ctx.runs.max(1) {
            let old = container();
            let t0 = Instant::now();
            edit(
                &root,
                &format!("services/{service}/src/index.ts"),
                &format!("w{}-{run}", std::process::id()),
            )?;
            // Poll: a new container, answering 200 on /health at its address.
            let answered = loop {
                let c = container();
                if !c.is_empty() && c != old {
                    let ip = run_ok(
                        &client,
                        &[
                            "inspect",
                            "--format",
                            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
                            &c,
                        ],
                    )
                    .unwrap_or_default();
                    let ok = ip.split_whitespace().any(|ip| {
                        ip.parse::<std::net::IpAddr>()
                            .is_ok_and(|ip| http_200(std::net::SocketAddr::new(ip, 3001)))
                    });
                    if ok {
                        break t0.elapsed();
                    }
                }
                if t0.elapsed() > Duration::from_secs(120) {
                    anyhow::bail!("no new container of {service} answered within 120 s");
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            // The watch's events up to the new container's health: where the time went.
            seen.borrow_mut().clear();
            let h = wait_for("healthy", &|v| {
                v["event"] == "healthy" && v["service"] == service
            })?;
            let rep = h["save_to_healthy_ms"].as_f64().unwrap_or(f64::NAN);
            // The new image may be in service before its verification ends: each save is
            // measured from an idle watch, so the run's end (and `idle`) is awaited here.
            if !seen
                .borrow()
                .iter()
                .any(|v| v["event"] == "build_finished" && v["service"] == service)
            {
                wait_for("build_finished", &|v| {
                    v["event"] == "build_finished" && v["service"] == service
                })?;
            }
            let idle_after = {
                let s = seen.borrow();
                let f = s
                    .iter()
                    .rposition(|v| v["event"] == "build_finished")
                    .unwrap_or(0);
                s[f..].iter().any(|v| v["event"] == "idle")
            };
            if !idle_after {
                wait_for("idle", &|v| v["event"] == "idle")?;
            }
            let verify = of_verified(&seen.borrow());
            let of = |event: &str, field: &str| {
                seen.borrow()
                    .iter()
                    .rev()
                    .find(|v| v["event"] == event)
                    .and_then(|v| v[field].as_f64())
                    .unwrap_or(f64::NAN)
            };
            eprintln!(
                "bench watch-up:   batch {}, build {}, up {} ({}), up -> healthy {}",
                fmt_ms(of("batch", "latency_ms") + of("batch", "analysis_ms")),
                fmt_ms(of("build_finished", "duration_ms")),
                fmt_ms(of("up", "duration_ms")),
                verify,
                fmt_ms(of("healthy", "up_to_healthy_ms"))
            );
            eprintln!(
                "bench watch-up: {} save -> new code answering: {} (the watch says {})",
                if run == 0 {
                    "warm-up run".to_string()
                } else {
                    format!("run {run}/{}", ctx.runs.max(1))
                },
                fmt_ms(answered.as_secs_f64() * 1e3),
                fmt_ms(rep)
            );
            if run > 0 {
                ours.push(answered);
                reported.push(rep);
            }
        }
        Ok((ours, reported))
    })();
    let _ = Command::new("kill")
        .args(["-INT", &watch.id().to_string()])
        .status();
    let _ = watch.wait();
    let (ours, reported) = result?;
    let mut raw = Raw::new(
        "watch_up_save_to_answer",
        format!("ours: watch --up, a {service} save -> the new container answers /health (polled here)"),
        Kind::Ours,
        Some(format!("xtask --root <copy> watch --json --up --compose-file <copy>/docker-compose.yml {service}")),
    );
    raw.samples = ours.clone();
    let series: Vec<Series> = raw.finish().into_iter().collect();
    let p95_ours = p95(&ours
        .iter()
        .map(|d| d.as_secs_f64() * 1e3)
        .collect::<Vec<_>>());
    let p95_reported = p95(&reported);
    let reported = Stats::of_ms(&reported);
    let mut ratios = Vec::new();
    if let Some(s) = series.first() {
        ratios.push(Ratio::of(
            "watch --up save -> new code answering: median / 2.5 s target",
            s.stats.median_ms,
            WATCH_TARGET_S * 1e3,
            Some(1.0),
            None,
        ));
    }
    Ok(SpeedResult {
        title: "watch --up: save -> the new code answering".into(),
        note: format!(
            "examples/kc-backend's student-service under docker-compose, Docker client `{client}`. Save -> a new container answers `/health` (polled here): p95 {}. The watch's own `healthy` event (`save_to_healthy_ms`): median {}, p95 {}.",
            fmt_ms(p95_ours),
            reported.as_ref().map(|s| fmt_ms(s.median_ms)).unwrap_or_default(),
            fmt_ms(p95_reported)
        ),
        series,
        ratios,
        runs: Vec::new(),
    })
}

/// The 95th percentile (nearest rank) of samples in ms.
fn p95(ms: &[f64]) -> f64 {
    let mut v: Vec<f64> = ms.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((0.95 * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn http_200(addr: std::net::SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    let mut got = 0;
    while got < head.len() {
        match s.read(&mut head[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    head[..got].starts_with(b"HTTP/1.") && got >= 10 && head[9] == b'2'
}

/// How the last `up` of a watch's events put the image into service: `via` and whether it was
/// verified then.
fn of_verified(seen: &[serde_json::Value]) -> String {
    seen.iter()
        .rev()
        .find(|v| v["event"] == "up")
        .map(|v| {
            format!(
                "via {}, {}",
                v["via"].as_str().unwrap_or("?"),
                if v["verified"] == true {
                    "verified"
                } else {
                    "before its verification"
                }
            )
        })
        .unwrap_or_default()
}
