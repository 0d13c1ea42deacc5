//! `cargo xtask bench`: how fast the engine is on synthetic monorepos (S, M, L), measured in the
//! same run against the machine's floor on the same files, against turborepo's dry run, and (on
//! the example, with a real Docker engine) a no-op `images` against a cached `docker compose build`.
//!
//! With Docker it also measures the example's Dockerfile layout against the one before it
//! ([`layout`]: a service edit and a shared edit, each until the images are built).
//!
//! Submodules: [`synth`] writes the monorepos, [`measure`] times children and floors, [`ours`]
//! runs the engine's scenarios, [`peer`] the alternatives, [`layout`] the Dockerfile layouts,
//! [`report`] renders the results.

mod buildlog;
mod fresh;
mod layout;
mod measure;
mod ours;
mod peer;
mod report;
mod synth;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;

use crate::{output, Global};
use measure::{FileSet, Proc};
use report::{DockerResult, Kind, Machine, Ratio, Raw, Results, SizeResult};
use synth::Size;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  cargo xtask bench                       size S, 5 runs, turbo and Docker included
  cargo xtask bench --size S,M,L --runs 7
  cargo xtask bench --size L --no-docker --out bench-results/L.md
  cargo xtask bench --no-peer --out bench-results/layout.md   the Dockerfile layout, with S
  cargo xtask bench --size S --generate /tmp/s   only write the synthetic monorepo")]
pub struct Args {
    /// Synthetic monorepo sizes: S (10 services, 5k source files), M (50, 50k), L (200, 100k, and
    /// 300k ignored files in node_modules); comma-separated or repeated
    #[arg(long, value_enum, value_delimiter = ',', default_value = "S")]
    pub size: Vec<Size>,
    /// Measured runs per figure (medians), after one warm-up run that also measures peak memory
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// The results file (markdown); the JSON goes beside it with `.json`
    /// [default: bench-results/<sizes>.md]
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Skip the peer (turborepo's `turbo run build --dry=json`, installed from npm on first use)
    #[arg(long)]
    pub no_peer: bool,
    /// Skip everything that needs Docker (the compose comparison and the layout scenario)
    #[arg(long)]
    pub no_docker: bool,
    /// Skip the Dockerfile layout scenario (a service edit and a shared edit built with the
    /// example's Dockerfiles and with the layout before them; minutes with the default --runs)
    #[arg(long)]
    pub no_layout: bool,
    /// Only issue 15's speed scenarios with Docker: a fresh engine (a second dockerd) building an
    /// edited service with and without the registry layer cache, and `watch --up` from a save to
    /// the new code answering (needs root for the second dockerd's bridge, and docker-compose)
    /// (`--speed fresh` or `--speed watch` for one of them)
    #[arg(long, value_enum, value_delimiter = ',', num_args = 0.., default_missing_value = "fresh,watch")]
    pub speed: Option<Vec<Speed>>,
    /// Only write the synthetic monorepo of `--size` into DIR (new or empty) and exit
    #[arg(long, value_name = "DIR")]
    pub generate: Option<PathBuf>,
}

/// Issue 15's speed scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Speed {
    /// A fresh engine with vs without the registry layer cache.
    Fresh,
    /// `watch --up`: save -> the new code answering.
    Watch,
}

/// Where the bench works and what it runs.
struct Ctx {
    exe: PathBuf,
    repo_root: PathBuf,
    /// `target/bench`.
    work: PathBuf,
    scratch: PathBuf,
    threads: usize,
    runs: usize,
    turbo: Option<PathBuf>,
}

fn repo_root() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    p.canonicalize().unwrap_or(p)
}

fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

impl Args {
    pub fn run(self, global: &Global) -> anyhow::Result<i32> {
        if let Some(dir) = &self.generate {
            return generate_only(&self.size, dir, global);
        }
        measure::check_time()?;
        let repo_root = repo_root();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root.join("target"));
        let work = target.join("bench");
        let scratch = work.join("scratch");
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("failed to create `{}`", scratch.display()))?;
        let exe = ours::engine_binary()?;
        if !exe.ends_with("xtask/xtask") {
            output::warn(&format!(
                "`{}` is not the `xtask` profile build users run; figures may not be representative\n  hint: run `cargo xtask bench`",
                exe.display()
            ));
        }
        let turbo = if self.no_peer {
            None
        } else {
            Some(peer::install_turbo(&work.join("tools"))?)
        };
        let ctx = Ctx {
            exe,
            repo_root,
            work,
            scratch,
            threads: threads(),
            runs: self.runs as usize,
            turbo,
        };
        let mut sizes = self.size.clone();
        sizes.sort();
        sizes.dedup();
        let mut results = Results {
            format: 1,
            date: report::utc_date(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            ),
            machine: machine(&ctx.work),
            engine_binary: ctx.exe.display().to_string(),
            git_commit: peer::version_of(
                "git",
                &[
                    "-C",
                    &ctx.repo_root.to_string_lossy(),
                    "rev-parse",
                    "--short",
                    "HEAD",
                ],
            ),
            runs: ctx.runs,
            peer: ctx.turbo.as_ref().map(|t| {
                format!(
                    "turbo {} (`{}`, telemetry off)",
                    peer::version_of(&t.to_string_lossy(), &["--version"])
                        .unwrap_or_else(|| peer::TURBO_VERSION.to_string()),
                    t.display()
                )
            }),
            sizes: Vec::new(),
            docker: None,
            layout: None,
            speed: Vec::new(),
        };
        let speed = self.speed.clone().unwrap_or_default();
        if speed.contains(&Speed::Fresh) {
            results.speed.push(fresh::fresh(&ctx)?);
        }
        if speed.contains(&Speed::Watch) {
            results.speed.push(fresh::watch_up(&ctx)?);
        }
        for size in sizes.iter().copied().filter(|_| self.speed.is_none()) {
            results.sizes.push(bench_size(&ctx, size)?);
        }
        if !self.no_docker && self.speed.is_none() {
            results.docker = Some(bench_docker(&ctx)?);
            if !self.no_layout {
                results.layout = Some(layout::run(&ctx)?);
            }
        }

        let md = report::markdown(&results);
        let out = self.out.clone().unwrap_or_else(|| {
            let names: Vec<&str> = sizes.iter().map(|s| s.name()).collect();
            ctx.repo_root
                .join("bench-results")
                .join(format!("{}.md", names.join("-")))
        });
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("failed to create `{}`", dir.display()))?;
        }
        std::fs::write(&out, &md)
            .with_context(|| format!("failed to write `{}`", out.display()))?;
        let json_path = out.with_extension("json");
        let json = serde_json::to_string_pretty(&results).context("failed to serialize results")?;
        std::fs::write(&json_path, format!("{json}\n"))
            .with_context(|| format!("failed to write `{}`", json_path.display()))?;
        eprintln!(
            "bench: results in {} and {}",
            out.display(),
            json_path.display()
        );
        if global.json {
            output::json(&results)?;
        } else {
            print!("{md}");
        }
        Ok(0)
    }
}

fn generate_only(sizes: &[Size], dir: &Path, global: &Global) -> anyhow::Result<i32> {
    let [size] = sizes else {
        anyhow::bail!("--generate writes one monorepo\n  hint: pass exactly one --size");
    };
    let spec = size.spec();
    let t = Instant::now();
    let summary = synth::generate(&spec, dir, threads())?;
    if global.json {
        output::json(&serde_json::json!({
            "size": size.name(),
            "root": dir,
            "spec": spec,
            "generated": summary,
        }))?;
    } else {
        eprintln!(
            "bench: wrote {} ({} source files, {} ignored files, {} symlinks, {:.1} MiB) in {:.1?}",
            dir.display(),
            summary.source_files,
            summary.ignored_files,
            summary.symlinks,
            summary.bytes as f64 / (1024.0 * 1024.0),
            t.elapsed()
        );
    }
    Ok(0)
}

/// What is recorded next to a generated tree, to reuse it on the next run.
#[derive(serde::Serialize, serde::Deserialize, PartialEq)]
struct Marker {
    generator: u32,
    size: String,
    source_files: usize,
    ignored_files: usize,
    symlinks: usize,
    bytes: u64,
}

/// The synthetic monorepo of `size` under `target/bench/<size>/repo`, committed to git: reused
/// when an earlier run of the same generator left it intact, else (re)generated.
fn prepare(ctx: &Ctx, size: Size) -> anyhow::Result<(PathBuf, synth::Summary, Option<f64>)> {
    let spec = size.spec();
    let dir = ctx.work.join(size.name());
    let repo = dir.join("repo");
    let marker_path = dir.join("generated.json");
    let dirty = dir.join("dirty");
    let marker: Option<Marker> = std::fs::read(&marker_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if let Some(m) = marker {
        if m.generator == synth::GENERATOR_VERSION
            && m.size == size.name()
            && !dirty.exists()
            && repo.join(".git").is_dir()
        {
            let summary = synth::Summary {
                source_files: m.source_files,
                ignored_files: m.ignored_files,
                symlinks: m.symlinks,
                bytes: m.bytes,
            };
            return Ok((repo, summary, None));
        }
    }
    if dir.exists() {
        eprintln!("bench: removing the stale {}", dir.display());
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("failed to remove `{}`", dir.display()))?;
    }
    eprintln!(
        "bench: generating {} ({} services, {} source files, {} ignored files) in {}",
        size.name(),
        spec.services,
        spec.source_files,
        spec.ignored_files,
        repo.display()
    );
    let t = Instant::now();
    let summary = synth::generate(&spec, &repo, ctx.threads)?;
    peer::git_commit_all(&repo)?;
    let secs = t.elapsed().as_secs_f64();
    let m = Marker {
        generator: synth::GENERATOR_VERSION,
        size: size.name().to_string(),
        source_files: summary.source_files,
        ignored_files: summary.ignored_files,
        symlinks: summary.symlinks,
        bytes: summary.bytes,
    };
    std::fs::write(&marker_path, serde_json::to_vec(&m)?)
        .with_context(|| format!("failed to write `{}`", marker_path.display()))?;
    Ok((repo, summary, Some(measure::round3(secs))))
}

fn bench_size(ctx: &Ctx, size: Size) -> anyhow::Result<SizeResult> {
    let spec = size.spec();
    let (repo, generated, generate_s) = prepare(ctx, size)?;
    let dir = ctx.work.join(size.name());
    let cache = dir.join("cache");
    if cache.exists() {
        std::fs::remove_dir_all(&cache)
            .with_context(|| format!("failed to remove `{}`", cache.display()))?;
    }

    // Exactly the files the engine reads (the disk files of every context, and the lockfile),
    // from a cold analysis with no analysis caches: the floors run over these.
    let mut opts = engine::pipeline::Options::new(&repo);
    opts.cache_dir = Some(dir.join("floor-cache"));
    opts.stat_cache = false;
    opts.resolver = engine::pipeline::Resolver::offline();
    let analysis = engine::pipeline::analyze(&opts)?;
    if let Some(f) = analysis.failed.first() {
        anyhow::bail!("the bench monorepo does not analyse: {f}");
    }
    let mut on_disk: std::collections::BTreeMap<&str, (bool, u64)> = Default::default();
    let mut context_entries = 0usize;
    for img in &analysis.images {
        context_entries += img.context.files.len();
        for f in &img.context.files {
            // Directories are entries of a context, not files to read.
            if matches!(f.source, engine::context::Source::Disk) && !f.dir {
                on_disk.insert(&f.path, (f.symlink, f.size));
            }
        }
    }
    // The lockfile is read (to be pruned) though only its prunings are in the contexts.
    let lockfile = std::fs::symlink_metadata(repo.join(engine::workspace::LOCKFILE)).ok();
    if let Some(m) = &lockfile {
        on_disk
            .entry(engine::workspace::LOCKFILE)
            .or_insert((m.file_type().is_symlink(), m.len()));
    }
    let files = FileSet {
        paths: on_disk.keys().map(|p| repo.join(p)).collect(),
        symlink: on_disk.values().map(|(link, _)| *link).collect(),
    };
    let context_files = files.paths.len();
    let context_bytes: u64 = on_disk.values().map(|(_, size)| size).sum();
    let services = analysis.ws.services.len();
    drop(on_disk);
    drop(analysis);

    let plan = ours::plan_command(&ctx.exe, &repo, &cache);
    eprintln!(
        "bench {}: {context_files} files in {services} contexts; seeding the cache",
        size.name()
    );
    ours::plan(&plan, false, &ctx.scratch, services, None, "first plan")?;
    ours::seed_records(&repo, &cache)?;
    ours::settle();

    let find = Proc::new("find").arg(&repo).args([
        "(",
        "-name",
        "node_modules",
        "-o",
        "-name",
        ".git",
        ")",
        "-prune",
        "-o",
        "-printf",
        "%s\n",
    ]);
    let mut raw = vec![
        Raw::new(
            "floor_stat",
            format!("floor: parallel lstat of the {context_files} files"),
            Kind::Floor,
            None,
        ),
        Raw::new(
            "floor_hash",
            format!("floor: parallel read + blake3 of the {context_files} files"),
            Kind::Floor,
            None,
        ),
        Raw::new(
            "find",
            "reference: `find`, one thread, stat of every file outside node_modules",
            Kind::Reference,
            Some(find.display().replace(&*repo.to_string_lossy(), "<repo>")),
        ),
        Raw::new("cold", "ours: cold plan (no stat cache)", Kind::Ours, None),
        Raw::new("warm", "ours: warm no-op plan", Kind::Ours, None),
        Raw::new(
            "edit_one",
            "ours: plan after a one-file edit",
            Kind::Ours,
            None,
        ),
        Raw::new(
            "edit_shared",
            "ours: plan after a shared-package edit",
            Kind::Ours,
            None,
        ),
    ];
    let plan_display = plan
        .display()
        .replace(&*repo.to_string_lossy(), "<repo>")
        .replace(&*cache.to_string_lossy(), "<cache>");
    for r in raw.iter_mut().filter(|r| r.kind == Kind::Ours) {
        r.command = Some(plan_display.clone());
    }
    let turbo = ctx.turbo.as_ref().map(|t| peer::turbo_command(t, &repo));
    if let Some(t) = &turbo {
        raw.push(Raw::new(
            "turbo",
            "peer: `turbo run build --dry=json`",
            Kind::Peer,
            Some(format!(
                "turbo {}",
                t.args
                    .iter()
                    .map(|a| a.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(" ")
            )),
        ));
    }
    let idx = |raw: &[Raw], id: &str| raw.iter().position(|r| r.id == id).unwrap_or(0);
    let layout = cache::Layout::new(&cache);
    let (stat_cache, prune_cache) = (layout.stat_cache(), layout.pruned_lockfiles());
    let dirty = dir.join("dirty");

    for run in 0..=ctx.runs {
        let warmup = run == 0;
        eprintln!(
            "bench {}: {}",
            size.name(),
            if warmup {
                "warm-up run (peak memory)".to_string()
            } else {
                format!("run {run}/{}", ctx.runs)
            }
        );
        let mut add =
            |id: &str, d: std::time::Duration, rss: Option<u64>, run_: Option<&ours::Run>| {
                let i = idx(&raw, id);
                let r = &mut raw[i];
                if warmup {
                    r.peak_rss_kib = rss;
                } else {
                    r.samples.push(d);
                    if let Some(x) = run_ {
                        r.phases.push(x.phases);
                        r.files_read.push(x.files_read);
                    }
                }
            };
        let d = measure::stat_floor(&files, ctx.threads)?;
        add("floor_stat", d, None, None);
        let d = measure::hash_floor(&files, ctx.threads)?;
        add("floor_hash", d, None, None);
        let o = find.run(warmup, &ctx.scratch)?;
        add("find", o.wall, o.peak_rss_kib, None);

        // Cold: no analysis cache (the stat cache, the pruned lockfiles); the records stay.
        for f in [&stat_cache, &prune_cache] {
            if f.exists() {
                std::fs::remove_file(f)
                    .with_context(|| format!("failed to remove `{}`", f.display()))?;
            }
        }
        let r = ours::plan(
            &plan,
            warmup,
            &ctx.scratch,
            0,
            Some(context_files),
            "cold plan",
        )?;
        add("cold", r.outcome.wall, r.outcome.peak_rss_kib, Some(&r));
        let r = ours::plan(&plan, warmup, &ctx.scratch, 0, Some(0), "warm no-op plan")?;
        add("warm", r.outcome.wall, r.outcome.peak_rss_kib, Some(&r));

        std::fs::write(&dirty, b"an edit scenario is running\n")
            .with_context(|| format!("failed to write `{}`", dirty.display()))?;
        let one = synth::service_edit(&spec, run);
        let one_original = ours::edit(&repo, &one, run)?;
        let r = ours::plan(&plan, warmup, &ctx.scratch, 1, Some(1), "one-file edit")?;
        add("edit_one", r.outcome.wall, r.outcome.peak_rss_kib, Some(&r));
        let shared_original = ours::edit(&repo, synth::SHARED_EDIT, run)?;
        let r = ours::plan(
            &plan,
            warmup,
            &ctx.scratch,
            services,
            Some(1),
            "shared-package edit",
        )?;
        add(
            "edit_shared",
            r.outcome.wall,
            r.outcome.peak_rss_kib,
            Some(&r),
        );
        ours::restore(&repo, &one, &one_original)?;
        ours::restore(&repo, synth::SHARED_EDIT, &shared_original)?;
        std::fs::remove_file(&dirty)
            .with_context(|| format!("failed to remove `{}`", dirty.display()))?;
        ours::settle();

        if let Some(t) = &turbo {
            let o = t.run(warmup, &ctx.scratch)?;
            if warmup {
                peer::check_turbo(&o.stdout, services + 1)?;
            }
            add("turbo", o.wall, o.peak_rss_kib, None);
        }
    }

    let series: Vec<report::Series> = raw.iter().filter_map(Raw::finish).collect();
    let med = |id: &str| {
        series
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.stats.median_ms)
    };
    let mut ratios = Vec::new();
    if let (Some(w), Some(f)) = (med("warm"), med("floor_stat")) {
        ratios.push(Ratio::of(
            "ours: warm no-op / floor: parallel lstat",
            w,
            f,
            Some(1.5),
            None,
        ));
    }
    if let (Some(w), Some(f)) = (med("warm"), med("find")) {
        ratios.push(Ratio::of(
            "ours: warm no-op / reference: find, one thread",
            w,
            f,
            Some(1.5),
            None,
        ));
    }
    if let (Some(c), Some(f)) = (med("cold"), med("floor_hash")) {
        ratios.push(Ratio::of(
            "ours: cold plan / floor: parallel read + blake3",
            c,
            f,
            Some(1.3),
            None,
        ));
    }
    if let (Some(t), Some(w)) = (med("turbo"), med("warm")) {
        ratios.push(Ratio::of(
            "peer: turbo dry run / ours: warm no-op (aim: 4)",
            t,
            w,
            None,
            Some(2.0),
        ));
    }
    if let (Some(t), Some(c)) = (med("turbo"), med("cold")) {
        ratios.push(Ratio::of(
            "peer: turbo dry run / ours: cold plan",
            t,
            c,
            None,
            None,
        ));
    }
    let peak = raw
        .iter()
        .filter(|r| r.kind == Kind::Ours)
        .filter_map(|r| r.peak_rss_kib)
        .max();
    if let Some(kib) = peak {
        ratios.push(Ratio::memory(
            "ours: peak RSS, the largest of the four scenarios",
            kib,
            100.0,
        ));
    }
    Ok(SizeResult {
        size: size.name(),
        spec,
        generated,
        generate_s,
        reused: generate_s.is_none(),
        context_files,
        context_bytes,
        context_entries,
        threads: ctx.threads,
        series,
        ratios,
    })
}

/// Removes the benchmark's own images when the Docker comparison ends, however it ends.
struct ImageCleanup {
    docker: String,
    prefixes: Vec<String>,
}

impl Drop for ImageCleanup {
    fn drop(&mut self) {
        let p: Vec<&str> = self.prefixes.iter().map(String::as_str).collect();
        peer::remove_images(&self.docker, &p);
    }
}

fn bench_docker(ctx: &Ctx) -> anyhow::Result<DockerResult> {
    // The client the engine builds with (`DOCKER`, else the first BuildKit client on PATH), so
    // that compose builds with it too, not with whatever `docker` comes first on PATH.
    let detected = peer::engine_client()?;
    let docker = detected.client.to_string_lossy().into_owned();
    let server = peer::version_of(&docker, &["version", "--format", "{{.Server.Version}}"])
        .context("no Docker engine is reachable\n  hint: run `eval \"$(scripts/docker-env.sh)\"` first, or pass --no-docker")?;
    let client = peer::version_of(&docker, &["version", "--format", "{{.Client.Version}}"])
        .unwrap_or_else(|| "?".into());
    let compose = peer::find_compose(&docker)?;
    let example_src = ctx.repo_root.join("examples").join("kc-backend");
    let dir = ctx.work.join("docker");
    let example = dir.join("example");
    let cache = dir.join("cache");
    if cache.exists() {
        std::fs::remove_dir_all(&cache)
            .with_context(|| format!("failed to remove `{}`", cache.display()))?;
    }
    let tag = format!("kcbench-{}-", std::process::id());
    let (xp, cp) = (format!("{tag}x-"), format!("{tag}c-"));
    peer::copy_example(&example_src, &example, &xp, &cp)?;
    let _cleanup = ImageCleanup {
        docker: docker.clone(),
        prefixes: vec![xp, cp],
    };

    let images = Proc::new(&ctx.exe)
        .arg("--root")
        .arg(&example)
        .arg("--cache-dir")
        .arg(&cache)
        .args(["--json", "images"]);
    let compose_cmd = peer::compose_build(
        &compose,
        &detected,
        &example,
        &format!("{tag}compose"),
        &dir.join("bin"),
    )?;
    let actions = |stdout: &[u8]| -> anyhow::Result<Vec<String>> {
        let json: serde_json::Value =
            serde_json::from_slice(stdout).context("`images --json` printed no JSON")?;
        Ok(json["images"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| i["action"].as_str().unwrap_or("?").to_string())
                    .collect()
            })
            .unwrap_or_default())
    };
    eprintln!("bench docker: building the example's images with `cargo xtask images` (BuildKit's cache may make this quick)");
    let first = images.run(false, &ctx.scratch)?;
    let a = actions(&first.stdout)?;
    if a.is_empty() || a.iter().any(|x| x != "built" && x != "cached") {
        anyhow::bail!("the first `images` run did not build every image: {a:?}");
    }
    eprintln!(
        "bench docker: building them with `{}`",
        compose_cmd.display()
    );
    compose_cmd.run(false, &ctx.scratch)?;

    let mut ours_raw = Raw::new(
        "images_noop",
        "ours: no-op `cargo xtask images` (real run, Docker queried)",
        Kind::Ours,
        Some("xtask --root <example> --cache-dir <cache> --json images".into()),
    );
    let mut compose_raw = Raw::new(
        "compose_cached",
        "peer: `docker compose build`, fully cached",
        Kind::Peer,
        Some(
            compose_cmd
                .display()
                .replace(&*example.to_string_lossy(), "<example>"),
        ),
    );
    for run in 0..=ctx.runs {
        let warmup = run == 0;
        eprintln!(
            "bench docker: {}",
            if warmup {
                "warm-up run (peak memory)".to_string()
            } else {
                format!("run {run}/{}", ctx.runs)
            }
        );
        let o = images.run(warmup, &ctx.scratch)?;
        let a = actions(&o.stdout)?;
        if a.is_empty() || a.iter().any(|x| x != "cached") {
            anyhow::bail!("a no-op `images` run was not all cached: {a:?}");
        }
        let c = compose_cmd.run(warmup, &ctx.scratch)?;
        if warmup {
            ours_raw.peak_rss_kib = o.peak_rss_kib;
            compose_raw.peak_rss_kib = c.peak_rss_kib;
        } else {
            ours_raw.samples.push(o.wall);
            compose_raw.samples.push(c.wall);
        }
    }
    let series: Vec<report::Series> = [&ours_raw, &compose_raw]
        .iter()
        .filter_map(|r| r.finish())
        .collect();
    let mut ratios = Vec::new();
    if let [o, c] = &series[..] {
        ratios.push(Ratio::of(
            "peer: compose build (cached) / ours: no-op images",
            c.stats.median_ms,
            o.stats.median_ms,
            None,
            Some(20.0),
        ));
    }
    Ok(DockerResult {
        example: "examples/kc-backend, 4 services".into(),
        docker: format!("client {client} (`{docker}`), engine {server}"),
        compose: format!(
            "{} (`{}`)",
            compose.version,
            compose_cmd
                .display()
                .replace(&*example.to_string_lossy(), "<example>")
        ),
        series,
        ratios,
    })
}

/// What the results are measured on.
fn machine(work: &Path) -> Machine {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let cpu_model = read("/proc/cpuinfo").and_then(|t| {
        t.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    });
    let mem_total_mib = read("/proc/meminfo").and_then(|t| {
        t.lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kib| kib / 1024)
    });
    let kernel = read("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string());
    // The mount holding the work directory: the longest mount point that prefixes it.
    let filesystem = read("/proc/mounts").and_then(|t| {
        let work = work.canonicalize().unwrap_or_else(|_| work.to_path_buf());
        t.lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (_, point, fstype) = (f.next()?, f.next()?, f.next()?);
                work.starts_with(point)
                    .then(|| (point.len(), fstype.to_string()))
            })
            .max_by_key(|(n, _)| *n)
            .map(|(_, t)| t)
    });
    Machine {
        cpus: threads(),
        cpu_model,
        mem_total_mib,
        kernel,
        filesystem,
    }
}
