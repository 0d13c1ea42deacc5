//! `cargo xtask verify [SERVICE...]`: check built images against the architecture's rules (read
//! from their layers by `engine::verify`); a table (or `--json`), and a non-zero exit on any
//! violation.

use crate::{output, setup, Global};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Rules: app-isolation, no-pnpm, no-nx, no-typescript, no-dev-dependencies, \
shared-dependency, shared-resolves, non-root-user, cmd, healthcheck, base-image, no-secrets, \
size-budget (`[images] size-budget-mb` in images.toml, 300 by default; per service under \
`[services.<name>]`)."
)]
pub struct Args {
    /// Services to verify (directory, package or image names); all when none is given
    pub services: Vec<String>,
    /// Verify this image (a reference or an id) instead of `<image>:latest`; takes exactly one
    /// SERVICE, whose rules it is held to
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
}

impl Args {
    pub fn run(self, global: &Global) -> anyhow::Result<i32> {
        let root = setup::root(global)?;
        let ws = engine::workspace::Workspace::discover(&root)?;
        let selected: Vec<usize> = if self.services.is_empty() {
            (0..ws.services.len()).collect()
        } else {
            self.services
                .iter()
                .map(|n| ws.service(n))
                .collect::<Result<_, _>>()?
        };
        if self.image.is_some() && selected.len() != 1 {
            anyhow::bail!(
                "`--image` verifies one image as one service, but {} services are selected\n  hint: name the service, e.g. `cargo xtask verify {} --image REF`",
                selected.len(),
                ws.services.first().map(|s| s.name.as_str()).unwrap_or("SERVICE")
            );
        }
        let docker = engine::execute::docker::Docker::detect()?;
        docker.ping()?;
        let started = std::time::Instant::now();
        let jobs = global.jobs.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        });
        if !global.json {
            let names: Vec<&str> = selected
                .iter()
                .map(|&s| ws.services[s].name.as_str())
                .collect();
            output::info(&format!("   verifying {}", names.join(", ")));
        }
        let reports =
            engine::verify::verify_services(&docker, &ws, &selected, self.image.as_deref(), jobs)
                .into_iter()
                .collect::<Result<Vec<_>, _>>()?;
        let failed = reports.iter().filter(|r| !r.ok).count();
        if global.json {
            output::json(&serde_json::json!({
                "ok": failed == 0,
                "images": reports,
            }))?;
        } else {
            let mut rows = Vec::new();
            for r in &reports {
                for c in &r.checks {
                    rows.push(vec![
                        r.service.clone(),
                        c.rule.name().to_string(),
                        if c.ok { "ok" } else { "FAIL" }.to_string(),
                        c.message.clone(),
                    ]);
                }
            }
            print!(
                "{}",
                output::table(&["SERVICE", "RULE", "RESULT", "DETAIL"], &rows)
            );
            for r in reports.iter().filter(|r| !r.ok) {
                let rules: Vec<&str> = r.failures().map(|c| c.rule.name()).collect();
                output::warn(&format!(
                    "{} ({}) breaks {}",
                    r.service,
                    r.image,
                    rules.join(", ")
                ));
            }
            output::info(&format!(
                "{} image(s) verified in {:.1?}: {} passed, {} failed",
                reports.len(),
                started.elapsed(),
                reports.len() - failed,
                failed
            ));
        }
        Ok(if failed > 0 { 1 } else { 0 })
    }
}
