//! `cargo xtask explain SERVICE`: every input of one image — its key manifest and every file of its
//! build context with its digest — to answer "why did (or didn't) this rebuild?".

use serde::Serialize;

use crate::{output, setup, Global};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The service (its directory name, package name or image name)
    pub service: String,
}

#[derive(Serialize)]
struct Input {
    path: String,
    digest: String,
    mode: String,
    size: u64,
    /// `file`, `symlink` or `dir`.
    kind: engine::key::EntryKind,
}

#[derive(Serialize)]
struct Explain<'a> {
    service: &'a str,
    image: &'a str,
    key: String,
    context: String,
    dockerignore: Option<&'a str>,
    manifest: &'a engine::key::KeyManifest,
    inputs: Vec<Input>,
    /// Why it would be built now (empty when cached).
    reasons: Vec<String>,
    /// Why its key is incomplete (a base image digest or the platform not known).
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    unresolved: &'a [String],
    /// Why it is never taken from the cache.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    uncacheable: &'a [String],
}

impl Args {
    pub fn run(self, global: &Global) -> anyhow::Result<i32> {
        let mut opts = setup::options(global)?;
        opts.services = vec![self.service.clone()];
        let analysis = setup::analyze(&opts)?;
        let s = analysis.ws.service(&self.service)?;
        if let Some(f) = analysis.failure(s) {
            anyhow::bail!("{f}");
        }
        let img = analysis
            .image(s)
            .ok_or_else(|| anyhow::anyhow!("service `{}` was not analysed", self.service))?;
        let svc = &analysis.ws.services[s];
        // What changed since the last build (records trusted: no engine is asked here).
        let plans = engine::run::plan(&analysis, None, false)?.plans;
        let reasons = plans
            .iter()
            .find(|p| p.index == s)
            .map(|p| p.reasons.iter().map(|r| r.to_string()).collect())
            .unwrap_or_default();
        let doc = Explain {
            service: &svc.name,
            image: &svc.image,
            key: img.key.to_hex(),
            context: img.context.digest.to_hex(),
            dockerignore: img.context.dockerignore.as_deref(),
            manifest: &img.manifest,
            inputs: img
                .context
                .files
                .iter()
                .map(|f| Input {
                    path: f.path.to_string(),
                    digest: f.digest.to_hex(),
                    mode: format!("{:o}", f.mode),
                    size: f.size,
                    kind: f.kind(),
                })
                .collect(),
            reasons,
            unresolved: &img.unresolved,
            uncacheable: &img.uncacheable,
        };
        if global.json {
            output::json(&doc)?;
            return Ok(0);
        }
        println!(
            "service     {} ({})",
            doc.service,
            analysis.ws.packages[svc.package].display_name()
        );
        println!("image       {}", doc.image);
        println!("key         {}", doc.key);
        println!(
            "dockerfile  {} ({})",
            img.manifest.dockerfile,
            img.manifest.dockerfile_digest.short(12)
        );
        println!(
            "context     {} ({} files)",
            img.context.digest.short(12),
            doc.inputs.len()
        );
        println!("ignore      {}", doc.dockerignore.unwrap_or("(none)"));
        // Build arguments by name and the digest of their value: values are never shown.
        if img.manifest.build_args.is_empty() {
            println!("build args  (none)");
        }
        for (name, d) in &img.manifest.build_args {
            println!("build arg   {name} (value {}, not shown)", d.short(12));
        }
        if !img.manifest.secrets.is_empty() {
            // Ids only: a secret's value is neither keyed nor shown.
            println!("secrets     {} (ids)", img.manifest.secrets.join(", "));
        }
        println!(
            "target      {}",
            img.manifest.target.as_deref().unwrap_or("(last stage)")
        );
        println!(
            "platform    {}{}",
            img.manifest.platform.as_deref().unwrap_or("unknown"),
            if img.platform_flag.is_some() {
                " (configured)"
            } else {
                " (the engine's)"
            }
        );
        for b in &img.manifest.base_images {
            println!(
                "base image  {}: {}{}",
                b.reference,
                b.digest.as_deref().unwrap_or("digest unknown"),
                b.platform
                    .as_deref()
                    .filter(|p| Some(*p) != img.manifest.platform.as_deref())
                    .map(|p| format!(" ({p})"))
                    .unwrap_or_default()
            );
        }
        for r in &img.manifest.remote_sources {
            println!("remote      {} ({})", r.url, r.checksum);
        }
        for u in &img.unresolved {
            println!("incomplete  {u}");
        }
        for u in &img.uncacheable {
            println!("uncacheable {u}");
        }
        for (s, k) in &img.manifest.from_images {
            println!("from image  {s} ({})", k.short(12));
        }
        if doc.reasons.is_empty() {
            println!("status      cached");
        } else {
            println!("status      build: {}", doc.reasons.join("; "));
        }
        println!();
        let rows: Vec<Vec<String>> = doc
            .inputs
            .iter()
            .map(|i| {
                vec![
                    i.mode.clone(),
                    i.size.to_string(),
                    i.digest[..16].to_string(),
                    match i.kind {
                        engine::key::EntryKind::Dir => format!("{}/", i.path),
                        _ => i.path.clone(),
                    },
                ]
            })
            .collect();
        print!(
            "{}",
            output::table(&["MODE", "SIZE", "DIGEST", "PATH"], &rows)
        );
        Ok(0)
    }
}
