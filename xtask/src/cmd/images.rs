//! `cargo xtask images`: plan, and build the images whose key is not cached.

use serde::Serialize;

use crate::{output, Global};

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
    /// A build argument for every image, `NAME=VALUE` (part of the key); repeatable
    #[arg(long = "build-arg", value_name = "NAME=VALUE")]
    pub build_args: Vec<String>,
    /// Only the services a git diff touches (see `cargo xtask affected`); needs --base
    #[arg(long, requires = "base")]
    pub affected: bool,
    /// With --affected: the base revision (its merge base with the head is the start)
    #[arg(long, value_name = "REF")]
    pub base: Option<String>,
    /// With --affected: the head revision [default: the working tree]
    #[arg(long, value_name = "REF")]
    pub head: Option<String>,
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
}

#[derive(Serialize)]
pub struct ImagesJson {
    pub images: Vec<ImageJson>,
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
        let mut opts = output::options(global)?;
        opts.services = self.services.clone();
        opts.build_args = parse_build_args(&self.build_args)?;
        for t in &self.tags {
            engine::workspace::validate_tag(t)
                .map_err(|e| anyhow::anyhow!("invalid --tag: {e}"))?;
        }
        if self.push && self.cache_read_only {
            anyhow::bail!("--push and --cache-read-only contradict each other\n  hint: read-only builds (pull requests) never push");
        }
        if self.affected {
            let base = self.base.clone().unwrap_or_default();
            let a = engine::affected::affected(&engine::affected::AffectedOptions {
                root: opts.root.clone(),
                base,
                head: self.head.clone(),
                fallback_all: false,
            })?;
            let mut wanted: Vec<String> = a.services.clone();
            if !self.services.is_empty() {
                wanted.retain(|s| self.services.contains(s));
            }
            if wanted.is_empty() {
                if global.json {
                    output::json(&ImagesJson { images: Vec::new() })?;
                } else {
                    eprintln!("no service is affected by the changes since {}", a.base);
                }
                return Ok(0);
            }
            if !global.json {
                eprintln!("affected: {}", wanted.join(", "));
            }
            opts.services = wanted;
        }
        let analysis = output::analyze(global, &opts)?;
        let store = output::open_store(&analysis)?;
        if !self.dry_run {
            let code = build(self, global, &analysis, &store);
            // The process exits next: the OS frees the analysis faster than its destructors
            // (300k shared paths on a large monorepo), as rustc and cargo do.
            std::mem::forget(analysis);
            return code;
        }
        let plans = engine::plan::plan(&analysis, &store, self.force, &mut |_| true)?;
        for w in store.take_warnings() {
            output::warn(&w);
        }
        if global.json {
            let images = plans
                .iter()
                .map(|p| ImageJson {
                    service: p.service.clone(),
                    image: p.image.clone(),
                    key: p.key.to_hex(),
                    action: match p.action {
                        engine::plan::Action::Build => "build".into(),
                        engine::plan::Action::Cached => "cached".into(),
                    },
                    reasons: p.reasons.iter().map(|r| r.to_string()).collect(),
                    image_id: p.image_id.clone(),
                    duration_ms: None,
                    reason_details: p.reasons.clone(),
                    error: None,
                    log: None,
                    registry: Vec::new(),
                    verify: None,
                })
                .collect();
            output::json(&ImagesJson { images })?;
            std::mem::forget(plans);
            std::mem::forget(analysis); // see above
            return Ok(0);
        }
        let rows: Vec<Vec<String>> = plans
            .iter()
            .map(|p| {
                vec![
                    p.service.clone(),
                    p.image.clone(),
                    p.key.short(12),
                    match p.action {
                        engine::plan::Action::Build => "build".into(),
                        engine::plan::Action::Cached => "cached".into(),
                    },
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
        print!(
            "{}",
            output::table(&["SERVICE", "IMAGE", "KEY", "ACTION", "WHY"], &rows)
        );
        let n_build = plans
            .iter()
            .filter(|p| p.action == engine::plan::Action::Build)
            .count();
        eprintln!(
            "{} to build, {} cached ({} files, {} read)",
            n_build,
            plans.len() - n_build,
            analysis.hash_stats.files,
            analysis.hash_stats.hashed
        );
        std::mem::forget(plans);
        std::mem::forget(analysis); // see above
        Ok(0)
    }
}

/// The real run: plan against the engine's images, build what is not cached, record, report.
fn build(
    args: Args,
    global: &Global,
    analysis: &engine::pipeline::Analysis,
    store: &cache::Store,
) -> anyhow::Result<i32> {
    use engine::execute::{self, docker::Docker, Outcome};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let docker = Docker::detect()?;
    docker.ping()?;
    if let Some(w) = docker.legacy_warning() {
        output::warn(&w);
    }
    let ids = docker.image_ids()?;
    let mut plans = engine::plan::plan(analysis, store, args.force, &mut |r| {
        ids.contains(&r.image_id)
    })?;
    let cache_spec = args
        .cache_registry
        .clone()
        .or_else(|| analysis.ws.config.images.cache_registry.clone());
    let remote = cache_spec
        .as_deref()
        .map(|s| {
            let platform = analysis
                .ws
                .config
                .images
                .platform
                .clone()
                .or_else(|| docker.platform());
            engine::remote::RemoteCache::new(s, args.cache_read_only)?
                .with_platform(platform.as_deref())
        })
        .transpose()?;
    let publish_spec = if args.push {
        Some(args.registry.clone().or(cache_spec.clone()).ok_or_else(|| {
            anyhow::anyhow!("--push needs a registry\n  hint: pass --registry HOST[:PORT]/NAMESPACE (or --cache-registry)")
        })?)
    } else {
        None
    };
    let publish = publish_spec
        .as_deref()
        .map(cache::registry::Registry::parse)
        .transpose()?;
    // service -> where it came from, when not built here
    let mut via_registry: std::collections::HashMap<usize, Vec<String>> = Default::default();
    let mut refuse_push: std::collections::HashSet<usize> = Default::default();
    if let Some(remote) = &remote {
        for p in plans.iter_mut() {
            if p.action != engine::plan::Action::Build || args.force {
                continue;
            }
            match remote.lookup(&p.image, &p.key)? {
                engine::remote::Lookup::Hit { .. } => {
                    let reference = remote
                        .registry
                        .reference(&p.image, &execute::key_tag(&p.key));
                    let same_registry = publish.as_ref().is_some_and(|r| {
                        r.host == remote.registry.host && r.namespace == remote.registry.namespace
                    });
                    if same_registry {
                        // Publishing to the registry that holds it: nothing to pull or build.
                        p.action = engine::plan::Action::Cached;
                        p.image_id = None;
                        via_registry.insert(p.index, vec![format!("in {reference}")]);
                        continue;
                    }
                    if !global.json {
                        eprintln!("   pulling {} from {reference}", p.service);
                    }
                    let id = remote.pull(&docker, &p.image, &p.key)?;
                    engine::plan::record_build(
                        store,
                        analysis,
                        p.index,
                        &id,
                        vec![
                            format!("{}:latest", p.image),
                            format!("{}:{}", p.image, execute::key_tag(&p.key)),
                        ],
                        0,
                        None,
                    )?;
                    p.action = engine::plan::Action::Cached;
                    p.image_id = Some(id);
                    via_registry.insert(p.index, vec![format!("pulled from {reference}")]);
                }
                engine::remote::Lookup::Mismatch { found } => {
                    output::warn(&format!(
                        "`{}` is labelled with key {}, not {}: refused; building {} here instead",
                        remote
                            .registry
                            .reference(&p.image, &execute::key_tag(&p.key)),
                        found.as_deref().unwrap_or("(none)"),
                        p.key.to_hex(),
                        p.service
                    ));
                    refuse_push.insert(p.index);
                }
                engine::remote::Lookup::Miss => {}
            }
        }
    }
    for w in store.take_warnings() {
        output::warn(&w);
    }
    let ws = &analysis.ws;

    // Cached images: make `<image>:latest` (and the key tag) point at the cached image.
    let tags = docker.tags()?;
    for p in plans
        .iter()
        .filter(|p| p.action == engine::plan::Action::Cached)
    {
        if let Some(id) = &p.image_id {
            for t in [
                format!("{}:latest", p.image),
                format!("{}:{}", p.image, execute::key_tag(&p.key)),
            ] {
                if tags.get(&t) != Some(id) {
                    docker.tag(id, &t)?;
                }
            }
        }
    }

    let cancel = Arc::new(AtomicBool::new(false));
    {
        let cancel = cancel.clone();
        let _ = ctrlc::set_handler(move || {
            if cancel.swap(true, Ordering::SeqCst) {
                // A second Ctrl-C: stop now; nothing unfinished was recorded.
                std::process::exit(130);
            }
            eprintln!("\ninterrupted: stopping the builds (nothing unfinished is recorded)");
        });
    }

    let names: Vec<String> = ws.services.iter().map(|s| s.name.clone()).collect();
    let expected = |s: usize| {
        store
            .last_built(&ws.services[s].name)
            .and_then(|l| store.get_record(&l.key).ok().flatten())
            .map(|r| r.duration_ms)
            .unwrap_or(30_000)
    };
    let to_build: Vec<(usize, u64)> = plans
        .iter()
        .filter(|p| p.action == engine::plan::Action::Build)
        .map(|p| (p.index, expected(p.index)))
        .collect();
    if !global.json {
        for p in plans
            .iter()
            .filter(|p| p.action == engine::plan::Action::Build)
        {
            let why: Vec<String> = p.reasons.iter().map(|r| r.to_string()).collect();
            eprintln!("   {} needs a build: {}", p.service, why.join("; "));
        }
    }
    let work_dir = analysis.cache_dir.join("work");
    std::fs::create_dir_all(&work_dir)?;
    let jobs = global.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    let reporter = crate::report::Shared::new(global.json, names.clone(), &to_build, jobs);
    let started = std::time::Instant::now();
    let outcomes = execute::run(
        analysis,
        &plans,
        &docker,
        &execute::RunOptions {
            jobs,
            keep_going: args.keep_going,
            cancel: cancel.clone(),
            work_dir,
        },
        &|e| reporter.event(e),
    );
    reporter.finish();

    // Record what was built; save the logs of failures.
    let logs_dir = analysis.cache_dir.join("logs");
    let mut json_images = Vec::new();
    let (mut built, mut cached, mut failed, mut skipped) = (0, 0, 0, 0);
    let mut saved_ms = 0u64;
    let mut verify_failed = 0;
    for p in &plans {
        let mut failure = None;
        let outcome = outcomes.get(&p.index);
        let (action, image_id, duration_ms) = match outcome {
            Some(Outcome::Cached { image_id }) => {
                cached += 1;
                saved_ms += expected(p.index);
                ("cached", image_id.clone(), None)
            }
            Some(Outcome::Built {
                image_id,
                duration,
                log,
            }) => {
                built += 1;
                let tags = vec![
                    format!("{}:latest", p.image),
                    format!("{}:{}", p.image, execute::key_tag(&p.key)),
                ];
                engine::plan::record_build(
                    store,
                    analysis,
                    p.index,
                    image_id,
                    tags,
                    duration.as_millis() as u64,
                    Some(log),
                )?;
                if let Some(remote) = &remote {
                    if !refuse_push.contains(&p.index)
                        && remote.push(&docker, &p.image, &p.key, image_id)?
                    {
                        let r = remote
                            .registry
                            .reference(&p.image, &execute::key_tag(&p.key));
                        if !global.json {
                            eprintln!("   pushed {r}");
                        }
                        via_registry
                            .entry(p.index)
                            .or_default()
                            .push(format!("pushed {r}"));
                    }
                }
                (
                    "built",
                    Some(image_id.clone()),
                    Some(duration.as_millis() as u64),
                )
            }
            Some(Outcome::Failed {
                error,
                duration,
                log,
            }) => {
                failed += 1;
                std::fs::create_dir_all(&logs_dir)?;
                let path = logs_dir.join(format!("{}-{}.log", p.service, p.key.short(12)));
                std::fs::write(&path, log)?;
                // On stderr even with --json: stdout holds the document, stderr the story.
                eprintln!(
                    "\nerror: building {} failed: {}\n--- last lines of the log (whole log: {}) ---\n{}\n---",
                    p.service,
                    error.message,
                    path.display(),
                    error.log_tail
                );
                failure = Some((error.message.clone(), path.display().to_string()));
                ("failed", None, Some(duration.as_millis() as u64))
            }
            Some(Outcome::Skipped { .. }) | None => {
                skipped += 1;
                ("skipped", None, None)
            }
        };
        // Verify what is built or cached against the architecture's rules (once per key).
        let mut verify_json = None;
        if let (false, Some(id), false) = (args.no_verify, &image_id, interrupted_now(&cancel)) {
            let v = engine::verify::verify_once(&docker, analysis, p.index, id)?;
            for w in &v.warnings {
                output::warn(w);
            }
            if !v.report.ok {
                verify_failed += 1;
                for c in v.report.failures() {
                    eprintln!(
                        "error: {} breaks the rule `{}`: {}",
                        p.service, c.rule, c.message
                    );
                }
            }
            verify_json = Some(v.report);
        }
        let verified_ok = verify_json.as_ref().is_none_or(|r| r.ok);
        // Publish release tags of what is built or cached (and passes verification).
        if let (Some(reg), Some(a)) = (&publish, outcome) {
            if matches!(a, Outcome::Built { .. } | Outcome::Cached { .. })
                && verified_ok
                && !refuse_push.contains(&p.index)
            {
                let tags = if args.tags.is_empty() {
                    vec!["latest".to_string()]
                } else {
                    args.tags.clone()
                };
                let local = image_id.clone().or_else(|| {
                    docker.image_id(&format!("{}:{}", p.image, execute::key_tag(&p.key)))
                });
                let how = engine::remote::publish(
                    reg,
                    &docker,
                    &p.image,
                    &p.key,
                    &tags,
                    local.as_deref(),
                )?;
                let what = match how {
                    engine::remote::Published::ManifestCopied { .. } => {
                        "tagged in the registry (manifest copied, no layer moved)"
                    }
                    engine::remote::Published::Pushed => "pushed",
                };
                for t in &tags {
                    let r = reg.reference(&p.image, t);
                    if !global.json {
                        eprintln!("   {r}: {what}");
                    }
                    via_registry
                        .entry(p.index)
                        .or_default()
                        .push(format!("{r}: {what}"));
                }
            }
        }
        let mut reasons: Vec<String> = p.reasons.iter().map(|r| r.to_string()).collect();
        if let Some(Outcome::Skipped { because }) = outcome {
            reasons.push(format!("skipped: {because}"));
        }
        json_images.push(ImageJson {
            service: p.service.clone(),
            image: p.image.clone(),
            key: p.key.to_hex(),
            action: action.to_string(),
            reasons,
            image_id,
            duration_ms,
            reason_details: p.reasons.clone(),
            error: failure.as_ref().map(|f| f.0.clone()),
            log: failure.map(|f| f.1),
            registry: via_registry.remove(&p.index).unwrap_or_default(),
            verify: verify_json,
        });
    }
    let interrupted = cancel.load(Ordering::SeqCst);
    if global.json {
        output::json(&ImagesJson {
            images: json_images,
        })?;
    } else {
        if verify_failed > 0 {
            eprintln!(
                "error: {verify_failed} image(s) break the architecture's rules (details: `cargo xtask verify`)"
            );
        }
        eprintln!(
            "{} built, {} cached, {} failed, {} skipped in {} (about {} saved by the cache)",
            built,
            cached,
            failed,
            skipped,
            crate::report::fmt_duration(started.elapsed()),
            crate::report::fmt_duration(std::time::Duration::from_millis(saved_ms)),
        );
    }
    Ok(if interrupted {
        130
    } else if failed > 0 || skipped > 0 || verify_failed > 0 {
        1
    } else {
        0
    })
}

fn interrupted_now(cancel: &std::sync::atomic::AtomicBool) -> bool {
    cancel.load(std::sync::atomic::Ordering::SeqCst)
}
