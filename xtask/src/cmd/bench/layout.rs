//! The Dockerfile layout, measured: how long `cargo xtask images` takes after a service source
//! edit and after a shared edit, on two copies of the example that differ only in their
//! Dockerfiles: the current template, and the layout before issue 15 (`baseline.Dockerfile.
//! template`, kept as it was: shared and the service compiled in one step after both sources
//! are copied, the runtime's `npm install` after the compiled code).
//!
//! Both copies are built first; then each run edits one service's source (another service each
//! run), builds with each layout, then edits `shared/` and builds with each layout, checking what
//! was built; first with `images --no-verify` (edit -> images built: what the layout changes, and
//! what the targets are about), then again with the verification `images` runs by default (a
//! fixed cost per built image, the same for both layouts). The layouts take turns going first.
//! Every edit appends a line that no earlier build has seen, so each measured build compiles.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use engine::execute::docker::Docker;

use super::measure::Proc;
use super::report::{fmt_ms, Kind, Ratio, Raw, Series};
use super::{peer, Ctx};

/// The layout the template had before issue 15, rendered for the baseline copy.
pub const BASELINE_TEMPLATE: &str = include_str!("baseline.Dockerfile.template");

/// The example's services, in the order the service edits go round.
const SERVICES: [&str; 4] = [
    "student-service",
    "course-service",
    "enrollment-service",
    "api-gateway",
];
/// The shared file the shared edits append to.
const SHARED_EDIT: &str = "shared/src/logger.ts";

/// Targets (issue 15): a service edit in at most half the baseline's time, a shared edit in 0.6.
const SERVICE_TARGET: f64 = 0.5;
const SHARED_TARGET: f64 = 0.6;

#[derive(Debug, serde::Serialize)]
pub struct LayoutResult {
    pub example: String,
    pub docker: String,
    pub series: Vec<Series>,
    pub ratios: Vec<Ratio>,
}

/// The section of the results file.
pub fn markdown(out: &mut String, r: &LayoutResult) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "## The Dockerfile layout: edit -> images built\n\n{}; Docker {}. `cargo xtask images --no-verify` after each edit (the targets), then the same with the verification `images` runs by default; the layouts take turns going first.\n",
        r.example, r.docker
    );
    super::report::series_table(out, &r.series);
    super::report::ratio_table(out, &r.ratios);
    out.push('\n');
}

/// One copy of the example with its layout.
struct Copy {
    name: &'static str,
    root: PathBuf,
    images: Proc,
}

impl Copy {
    /// Runs `images --json` and checks that exactly `want` were built (the rest cached).
    fn build(
        &self,
        ctx: &Ctx,
        want: &[&str],
        what: &str,
        verify: bool,
    ) -> anyhow::Result<Duration> {
        let cmd = if verify {
            self.images.clone()
        } else {
            self.images.clone().arg("--no-verify")
        };
        let o = cmd.run(false, &ctx.scratch)?;
        let json: serde_json::Value = serde_json::from_slice(&o.stdout)
            .with_context(|| format!("`{}` printed no JSON", self.images.display()))?;
        let mut built: Vec<&str> = Vec::new();
        for i in json["images"].as_array().into_iter().flatten() {
            let service = i["service"].as_str().unwrap_or("?");
            match i["action"].as_str() {
                Some("built") => built.push(service),
                Some("cached") => {}
                other => anyhow::bail!(
                    "{what} ({} layout): {service} ended `{}`",
                    self.name,
                    other.unwrap_or("?")
                ),
            }
        }
        built.sort_unstable();
        let mut want = want.to_vec();
        want.sort_unstable();
        if built != want {
            anyhow::bail!(
                "{what} ({} layout): built {built:?}, {want:?} expected\n  hint: the example or the engine is not what the benchmark assumes",
                self.name
            );
        }
        Ok(o.wall)
    }
}

/// Appends a line no build has seen to `rel` under `root`.
fn edit(root: &Path, rel: &str, tag: &str) -> anyhow::Result<()> {
    let p = root.join(rel);
    let mut text =
        std::fs::read_to_string(&p).with_context(|| format!("failed to read `{}`", p.display()))?;
    text.push_str(&format!("// bench edit {tag}\n"));
    std::fs::write(&p, text).with_context(|| format!("failed to write `{}`", p.display()))
}

/// Both layouts, measured in the same run with the client the engine detects; their images
/// (`kcbench-<pid>-n-*` and `kcbench-<pid>-b-*`) are removed at the end, however it ends.
pub fn run(ctx: &Ctx) -> anyhow::Result<LayoutResult> {
    let docker = peer::engine_client()?;
    let tag = format!("kcbench-{}-", std::process::id());
    let (current, baseline) = (format!("{tag}n-"), format!("{tag}b-"));
    let _cleanup = super::ImageCleanup {
        docker: docker.client.to_string_lossy().into_owned(),
        prefixes: vec![current.clone(), baseline.clone()],
    };
    bench_layout(ctx, &docker, (&current, &baseline))
}

fn bench_layout(
    ctx: &Ctx,
    docker: &Docker,
    prefixes: (&str, &str),
) -> anyhow::Result<LayoutResult> {
    let dir = ctx.work.join("layout");
    let example_src = ctx.repo_root.join("examples").join("kc-backend");
    let nonce = std::process::id();
    let mut copies = Vec::new();
    for (name, prefix, baseline) in [
        ("current", prefixes.0, false),
        ("baseline", prefixes.1, true),
    ] {
        let root = dir.join(name);
        let cache = dir.join(format!("{name}-cache"));
        if cache.exists() {
            std::fs::remove_dir_all(&cache)
                .with_context(|| format!("failed to remove `{}`", cache.display()))?;
        }
        peer::copy_example(&example_src, &root, prefix, prefix)?;
        if baseline {
            let tpl = root.join("services").join("Dockerfile.template");
            std::fs::write(&tpl, BASELINE_TEMPLATE)
                .with_context(|| format!("failed to write `{}`", tpl.display()))?;
            Proc::new(&ctx.exe)
                .arg("--root")
                .arg(&root)
                .arg("dockerfiles")
                .run(false, &ctx.scratch)
                .context("rendering the baseline Dockerfiles")?;
        }
        let images = Proc::new(&ctx.exe)
            .arg("--root")
            .arg(&root)
            .arg("--cache-dir")
            .arg(&cache)
            .args(["--json", "images"]);
        copies.push(Copy { name, root, images });
    }
    for c in &copies {
        eprintln!(
            "bench layout: building the example with the {} layout (BuildKit's cache may make this quick)",
            c.name
        );
        let o = c.images.run(false, &ctx.scratch)?;
        let json: serde_json::Value =
            serde_json::from_slice(&o.stdout).context("`images --json` printed no JSON")?;
        let ok = json["images"].as_array().is_some_and(|a| {
            a.len() == SERVICES.len()
                && a.iter()
                    .all(|i| i["action"] == "built" || i["action"] == "cached")
        });
        if !ok {
            anyhow::bail!("the first build with the {} layout failed: {json}", c.name);
        }
    }

    // Each figure: (id, scenario, layout, verification).
    let mut raw: Vec<(Raw, usize, usize, bool)> = Vec::new();
    for verify in [false, true] {
        for (scenario, what) in [
            (0, "a service source edit -> its image built"),
            (1, "a shared edit -> every image built"),
        ] {
            for (layout, who) in [(0, "ours"), (1, "baseline")] {
                let id: &'static str = match (scenario, layout, verify) {
                    (0, 0, false) => "service_current",
                    (0, 1, false) => "service_baseline",
                    (1, 0, false) => "shared_current",
                    (1, 1, false) => "shared_baseline",
                    (0, 0, true) => "service_current_verified",
                    (0, 1, true) => "service_baseline_verified",
                    (1, 0, true) => "shared_current_verified",
                    _ => "shared_baseline_verified",
                };
                let layout_name = if layout == 0 {
                    "current layout"
                } else {
                    "layout before issue 15"
                };
                let name = if verify {
                    format!("{who}: {what}, then verified ({layout_name})")
                } else {
                    format!("{who}: {what} ({layout_name})")
                };
                let kind = if layout == 0 {
                    Kind::Ours
                } else {
                    Kind::Reference
                };
                let command = if verify {
                    "xtask --root <copy> --cache-dir <cache> --json images"
                } else {
                    "xtask --root <copy> --cache-dir <cache> --json images --no-verify"
                };
                raw.push((
                    Raw::new(id, name, kind, Some(command.to_string())),
                    scenario,
                    layout,
                    verify,
                ));
            }
        }
    }
    for run in 0..=ctx.runs {
        let warmup = run == 0;
        let svc = SERVICES[run % SERVICES.len()];
        eprintln!(
            "bench layout: {} ({svc} edited, then shared; without, then with verification)",
            if warmup {
                "warm-up run".to_string()
            } else {
                format!("run {run}/{}", ctx.runs)
            }
        );
        // The layouts take turns going first.
        let order: [usize; 2] = if run % 2 == 0 { [0, 1] } else { [1, 0] };
        for verify in [false, true] {
            for scenario in [0, 1] {
                let (rel, want, what) = if scenario == 0 {
                    (
                        format!("services/{svc}/src/index.ts"),
                        vec![svc],
                        "a service source edit",
                    )
                } else {
                    (SHARED_EDIT.to_string(), SERVICES.to_vec(), "a shared edit")
                };
                for &layout in &order {
                    let c = &copies[layout];
                    edit(&c.root, &rel, &format!("{nonce}-{run}-{verify}"))?;
                    let wall = c.build(ctx, &want, what, verify)?;
                    eprintln!(
                        "bench layout:   {what}, {} layout{}: {}",
                        c.name,
                        if verify { ", verified" } else { "" },
                        fmt_ms(wall.as_secs_f64() * 1e3)
                    );
                    if !warmup {
                        if let Some(r) = raw
                            .iter_mut()
                            .find(|r| (r.1, r.2, r.3) == (scenario, layout, verify))
                        {
                            r.0.samples.push(wall);
                        }
                    }
                }
            }
        }
    }
    let series: Vec<Series> = raw.iter().filter_map(|r| r.0.finish()).collect();
    let med = |id: &str| {
        series
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.stats.median_ms)
    };
    let mut ratios = Vec::new();
    for (name, current, baseline, target) in [
        (
            "a service source edit -> image built: current / baseline layout",
            "service_current",
            "service_baseline",
            Some(SERVICE_TARGET),
        ),
        (
            "a shared edit -> every image built: current / baseline layout",
            "shared_current",
            "shared_baseline",
            Some(SHARED_TARGET),
        ),
        (
            "... the service edit, verification included",
            "service_current_verified",
            "service_baseline_verified",
            None,
        ),
        (
            "... the shared edit, verification included",
            "shared_current_verified",
            "shared_baseline_verified",
            None,
        ),
    ] {
        if let (Some(n), Some(b)) = (med(current), med(baseline)) {
            ratios.push(Ratio::of(name, n, b, target, None));
        }
    }
    let version = peer::version_of(
        &docker.client.to_string_lossy(),
        &[
            "version",
            "--format",
            "{{.Client.Version}} / {{.Server.Version}}",
        ],
    )
    .unwrap_or_else(|| "?".into());
    Ok(LayoutResult {
        example: "examples/kc-backend, 4 services; two copies differing only in their Dockerfiles"
            .into(),
        docker: format!(
            "client / engine {version} (`{}`, {:?})",
            docker.client.display(),
            docker.mode
        ),
        series,
        ratios,
    })
}
