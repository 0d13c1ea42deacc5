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
}

impl Args {
    pub fn run(self, global: &Global) -> anyhow::Result<i32> {
        let mut opts = setup::options(global)?;
        opts.services = vec![self.service.clone()];
        let analysis = setup::analyze(global, &opts)?;
        let s = analysis.ws.service(&self.service)?;
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
                })
                .collect(),
            reasons,
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
        println!("build args  {:?}", img.manifest.build_args);
        println!(
            "target      {}",
            img.manifest.target.as_deref().unwrap_or("(last stage)")
        );
        println!(
            "platform    {}",
            img.manifest
                .platform
                .as_deref()
                .unwrap_or("(engine default)")
        );
        for b in &img.manifest.base_images {
            println!("base        {}", b.reference);
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
                    i.path.clone(),
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
