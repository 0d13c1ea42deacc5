//! `cargo xtask images`: plan, and build the images whose key is not cached.

use std::sync::atomic::Ordering;

use engine::execute::docker::Docker;
use serde::Serialize;

use crate::{output, setup, Global};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Services to build (directory, package or image names); all when none is given. Images they
    /// build FROM are included
    pub services: Vec<String>,
    /// Show the plan (each image's key, build or cached, and why) without building
    #[arg(long)]
    pub dry_run: bool,
    /// Build even when the key is cached
    #[arg(long)]
    pub force: bool,
    /// Keep building the other images when one fails
    #[arg(long)]
    pub keep_going: bool,
    /// Only the services a git diff touches (see `cargo xtask affected`); the base is --base,
    /// else the CI's (GitHub Actions, GitLab CI)
    #[arg(long)]
    pub affected: bool,
    /// With --affected: the base revision (its merge base with the head is the start)
    /// [default: from the CI's variables]
    #[arg(long, value_name = "REF", requires = "affected")]
    pub base: Option<String>,
    /// With --affected: the head revision [default: the working tree]
    #[arg(long, value_name = "REF", requires = "affected")]
    pub head: Option<String>,
    #[command(flatten)]
    pub run: RunFlags,
}

/// The flags of a run, shared by `images` and `watch`.
#[derive(Debug, clap::Args)]
pub struct RunFlags {
    /// A build argument for every image, `NAME=VALUE` (part of the key); repeatable
    #[arg(long = "build-arg", value_name = "NAME=VALUE")]
    pub build_args: Vec<String>,
    /// Push each image to --registry (or the cache registry) under its key tag and every --tag;
    /// a key the registry already holds is tagged by copying its manifest (no layer moves)
    #[arg(long)]
    pub push: bool,
    /// A tag to publish with --push (repeatable) [default: latest]
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// The registry to publish to with --push, `HOST[:PORT]/NAMESPACE`
    #[arg(long, env = "IMAGES_REGISTRY", value_name = "R")]
    pub registry: Option<String>,
    /// An OCI registry shared as a cache, `HOST[:PORT]/NAMESPACE`: keys found there are pulled
    /// instead of built, keys built here are pushed there
    #[arg(long, env = "IMAGES_CACHE_REGISTRY", value_name = "R")]
    pub cache_registry: Option<String>,
    /// Use the cache registry without ever pushing (for untrusted builds such as pull requests)
    #[arg(long, env = "IMAGES_CACHE_READ_ONLY")]
    pub cache_read_only: bool,
    /// Skip checking each built or cached image against the architecture's rules (checked once
    /// per key; see `cargo xtask verify`)
    #[arg(long)]
    pub no_verify: bool,
}

impl RunFlags {
    /// The run's options, with the signing key of the environment (`IMAGES_SIGNING_KEY` or
    /// `IMAGES_SIGNING_KEY_FILE`, `COSIGN_PASSWORD`; see docs/trust.md).
    pub fn options(&self, global: &Global) -> anyhow::Result<engine::run::RunOptions> {
        let defaults = engine::run::RunOptions::default();
        let signing_key = cache::cosign::SigningKey::from_env()?.map(std::sync::Arc::new);
        Ok(engine::run::RunOptions {
            jobs: global.jobs.unwrap_or(defaults.jobs).max(1),
            verify: !self.no_verify,
            cache_registry: self.cache_registry.clone(),
            cache_read_only: self.cache_read_only,
            push: self.push,
            registry: self.registry.clone(),
            tags: self.tags.clone(),
            signing_key,
            ..defaults
        })
    }
}

#[derive(Serialize)]
pub struct ImageJson {
    pub service: String,
    pub image: String,
    pub key: String,
    pub action: String,
    pub reasons: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The reasons as data (`kind` and what changed).
    pub reason_details: Vec<engine::plan::Reason>,
    /// Why a build failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The saved log of a failed build.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// Where the image came from when not built here (the cache registry), or was published to.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub registry: Vec<String>,
    /// The verification of the image against the architecture's rules (see `cargo xtask verify`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify: Option<engine::verify::Report>,
    /// The registry reference it was pulled from (a cache registry held its key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pulled_from: Option<String>,
}

#[derive(Serialize, Default)]
pub struct ImagesJson {
    pub images: Vec<ImageJson>,
    /// With --dry-run: whether records were checked against an engine (else `cached` means only
    /// that a build is recorded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine_checked: Option<bool>,
    /// With --affected: the base compared with, and where it came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_source: Option<String>,
}

pub fn parse_build_args(
    args: &[String],
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let mut out = std::collections::BTreeMap::new();
    for a in args {
        let (k, v) = a.split_once('=').ok_or_else(|| {
            anyhow::anyhow!("invalid --build-arg `{a}`\n  hint: use `--build-arg NAME=VALUE`")
        })?;
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            anyhow::bail!("invalid build argument name `{k}` in `--build-arg {a}`\n  hint: names use letters, digits and `_`");
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

impl Args {
    pub fn run(self, global: &Global) -> anyhow::Result<i32> {
        let mut opts = setup::options(global)?;
        opts.services = self.services.clone();
        opts.build_args = parse_build_args(&self.run.build_args)?;
        let mut base = None;
        if self.affected {
            let b = crate::ci::base(self.base.as_deref())?;
            let a = engine::affected::affected(&engine::affected::AffectedOptions {
                root: opts.root.clone(),
                base: b.rev.clone(),
                head: self.head.clone(),
                fallback_all: false,
            })?;
            let mut wanted: Vec<String> = a.services.clone();
            if !self.services.is_empty() {
                wanted.retain(|s| self.services.contains(s));
            }
            if wanted.is_empty() {
                if global.json {
                    output::json(&ImagesJson {
                        base: Some(b.rev),
                        base_source: Some(b.source),
                        ..ImagesJson::default()
                    })?;
                } else {
                    output::info(&format!(
                        "no service is affected by the changes since {}",
                        a.base
                    ));
                }
                crate::ci::append_step_summary(&format!(
                    "### cargo xtask images --affected: no service is affected by the changes since `{}`\n\n",
                    crate::ci::md_cell(&a.base, 200)
                ))?;
                return Ok(0);
            }
            if !global.json {
                output::info(&format!("affected: {}", wanted.join(", ")));
            }
            opts.services = wanted;
            base = Some(b);
        }
        let analysis = setup::analyze(&opts)?;
        if analysis.ws.services.is_empty() {
            anyhow::bail!("{}", analysis.ws.why_no_services());
        }
        // A service whose inputs cannot be resolved fails alone: said now, the others go on,
        // and the exit code says it.
        for f in &analysis.failed {
            output::error(&anyhow::anyhow!("{f}"));
        }
        let code = if self.dry_run {
            self.dry_run(global, &analysis, base.as_ref())
        } else {
            self.build(global, &analysis, base.as_ref())
        };
        let code = code.map(|c| {
            if analysis.failed.is_empty() {
                c
            } else {
                c.max(1)
            }
        });
        // The process exits next: the OS frees the analysis faster than its destructors
        // (300k shared paths on a large monorepo), as rustc and cargo do.
        std::mem::forget(analysis);
        code
    }

    /// The run's options from the flags.
    fn options(&self, global: &Global) -> anyhow::Result<engine::run::RunOptions> {
        Ok(engine::run::RunOptions {
            keep_going: self.keep_going,
            force: self.force,
            ..self.run.options(global)?
        })
    }

    /// The plan, checked against the engine when one answers.
    fn dry_run(
        &self,
        global: &Global,
        analysis: &engine::pipeline::Analysis,
        base: Option<&crate::ci::Base>,
    ) -> anyhow::Result<i32> {
        let docker = Docker::detect().and_then(|d| d.ping().map(|_| d));
        let images = docker
            .as_ref()
            .ok()
            .map(|d| d as &dyn engine::execute::Images);
        let dry = engine::run::plan(analysis, images, self.force)?;
        for w in &dry.warnings {
            output::warn(w);
        }
        if let Err(e) = &docker {
            output::note(&format!(
                "could not check the engine, so `cached` means only that a build is recorded: {}",
                e.to_string().lines().next().unwrap_or_default()
            ));
        }
        let plans = &dry.plans;
        crate::ci::append_step_summary(&crate::ci::plan_summary(plans))?;
        if global.json {
            let images = plans
                .iter()
                .map(ImageJson::planned)
                .chain(failed_json(analysis))
                .collect();
            output::json(&ImagesJson {
                images,
                engine_checked: Some(dry.checked),
                base: base.map(|b| b.rev.clone()),
                base_source: base.map(|b| b.source.clone()),
            })?;
            std::mem::forget(dry);
            return Ok(0);
        }
        let mut rows: Vec<Vec<String>> = plans
            .iter()
            .map(|p| {
                vec![
                    p.service.clone(),
                    p.image.clone(),
                    p.key.short(12),
                    plan_action(p.action).to_string(),
                    if p.reasons.is_empty() {
                        "-".to_string()
                    } else {
                        p.reasons
                            .iter()
                            .map(|r| r.to_string())
                            .collect::<Vec<_>>()
                            .join("; ")
                    },
                ]
            })
            .collect();
        for f in &analysis.failed {
            rows.push(vec![
                f.name.clone(),
                analysis.ws.services[f.service].image.clone(),
                "-".into(),
                "failed".into(),
                f.error.lines().next().unwrap_or("").to_string(),
            ]);
        }
        print!(
            "{}",
            output::table(&["SERVICE", "IMAGE", "KEY", "ACTION", "WHY"], &rows)
        );
        let n_build = plans
            .iter()
            .filter(|p| p.action == engine::plan::Action::Build)
            .count();
        output::info(&format!(
            "{} to build, {} cached ({} files, {} read)",
            n_build,
            plans.len() - n_build,
            analysis.hash_stats.files,
            analysis.hash_stats.hashed
        ));
        std::mem::forget(dry);
        Ok(0)
    }

    /// The real run: one call to the engine, then the report.
    fn build(
        &self,
        global: &Global,
        analysis: &engine::pipeline::Analysis,
        base: Option<&crate::ci::Base>,
    ) -> anyhow::Result<i32> {
        let mut docker = Docker::detect()?;
        let opts = self.options(global)?;
        let reporter = crate::report::Reporter::new(crate::report::show(global), opts.jobs);
        if output::verbose(2) {
            let r = reporter.clone();
            docker.set_trace(std::sync::Arc::new(move |argv: &[String]| r.command(argv)));
        }
        docker.ping()?;
        if let Some(w) = docker.legacy_warning() {
            output::warn(&w);
        }
        if output::verbose(1) {
            if let Some(b) = docker.buildx_builder() {
                output::info(&format!(
                    "buildx builder `{}` (driver {}){}",
                    b.name,
                    b.driver,
                    if b.needs_load() {
                        ": builds run `docker buildx build --load`"
                    } else {
                        ""
                    }
                ));
            }
        }
        {
            let cancel = opts.cancel.clone();
            let _ = ctrlc::set_handler(move || {
                if cancel.swap(true, Ordering::SeqCst) {
                    // A second Ctrl-C: stop now; nothing unfinished was recorded.
                    std::process::exit(130);
                }
                output::info("\ninterrupted: stopping the builds (nothing unfinished is recorded)");
            });
        }
        let summary = engine::run::run(
            analysis,
            &opts,
            engine::execute::Backend::docker(&docker),
            &|e| reporter.event(e),
        );
        reporter.finish();
        let summary = summary?;
        if reporter.show() != crate::report::Show::Json {
            // JSON events carry the failures in their `finished` events.
            for r in &summary.images {
                print_failure(r);
            }
        }
        crate::ci::append_step_summary(&crate::ci::run_summary(&summary, analysis))?;
        if global.json {
            output::json(&ImagesJson {
                images: summary
                    .images
                    .iter()
                    .map(ImageJson::ran)
                    .chain(failed_json(analysis))
                    .collect(),
                engine_checked: None,
                base: base.map(|b| b.rev.clone()),
                base_source: base.map(|b| b.source.clone()),
            })?;
        }
        reporter.summary(&summary, analysis.failed.len());
        Ok(summary.exit_code())
    }
}

/// What went wrong with one image, on stderr (even with --json: stdout holds the document,
/// stderr the story).
fn print_failure(r: &engine::run::ImageReport) {
    if let Some(v) = &r.verify {
        for c in v.failures() {
            output::error_line(&format!(
                "{} breaks the rule `{}`: {}",
                r.service, c.rule, c.message
            ));
        }
    }
    match (&r.error, &r.log_tail) {
        (Some(error), Some(tail)) => {
            eprintln!();
            output::error_line(&format!(
                "building {} failed: {error}\n--- last lines of the log (whole log: {}) ---\n{tail}\n---",
                r.service,
                r.log
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "not saved".to_string()),
            ))
        }
        (Some(error), None) if !r.verify_failed() => output::error_line(error),
        _ => {}
    }
}

/// The services that could not be analysed, as `failed` entries of the JSON document.
fn failed_json(analysis: &engine::pipeline::Analysis) -> Vec<ImageJson> {
    analysis
        .failed
        .iter()
        .map(|f| ImageJson {
            service: f.name.clone(),
            image: analysis.ws.services[f.service].image.clone(),
            key: String::new(),
            action: "failed".into(),
            reasons: Vec::new(),
            image_id: None,
            duration_ms: None,
            reason_details: Vec::new(),
            error: Some(format!("{}\n  hint: {}", f.error, f.hint)),
            log: None,
            registry: Vec::new(),
            verify: None,
            pulled_from: None,
        })
        .collect()
}

fn plan_action(a: engine::plan::Action) -> &'static str {
    match a {
        engine::plan::Action::Build => "build",
        engine::plan::Action::Cached => "cached",
    }
}

impl ImageJson {
    pub(crate) fn planned(p: &engine::plan::ImagePlan) -> ImageJson {
        ImageJson {
            service: p.service.clone(),
            image: p.image.clone(),
            key: p.key.to_hex(),
            action: plan_action(p.action).to_string(),
            reasons: p.reasons.iter().map(|r| r.to_string()).collect(),
            image_id: p.image_id.clone(),
            duration_ms: None,
            reason_details: p.reasons.clone(),
            error: None,
            log: None,
            registry: Vec::new(),
            verify: None,
            pulled_from: None,
        }
    }

    pub(crate) fn ran(r: &engine::run::ImageReport) -> ImageJson {
        let mut reasons: Vec<String> = r.reasons.iter().map(|x| x.to_string()).collect();
        if let Some(because) = &r.skipped_because {
            reasons.push(format!("skipped: {because}"));
        }
        ImageJson {
            service: r.service.clone(),
            image: r.image.clone(),
            key: r.key.to_hex(),
            action: r.outcome.as_str().to_string(),
            reasons,
            image_id: r.image_id.clone(),
            duration_ms: r.duration.map(|d| d.as_millis() as u64),
            reason_details: r.reasons.clone(),
            error: r.error.clone(),
            log: r.log.as_ref().map(|p| p.display().to_string()),
            registry: r.registry.clone(),
            verify: r.verify.clone(),
            pulled_from: r.pulled_from.clone(),
        }
    }
}
