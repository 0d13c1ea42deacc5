//! `cargo xtask affected`: the services a change touches, for CI fan-out (a GitHub Actions
//! matrix, a GitLab child pipeline).

use std::io::Write;

use serde::Serialize;

use crate::{output, setup, Global};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    /// `{"include":[{"service","image"}]}` for a GitHub Actions matrix
    GithubMatrix,
    /// A GitLab child pipeline (YAML): a `parallel:matrix` job per affected service
    GitlabPipeline,
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Without --base, the base comes from the CI's variables: GitHub Actions \
(GITHUB_BASE_REF of a pull request, the previous commit of a push) and GitLab CI \
(CI_MERGE_REQUEST_DIFF_BASE_SHA, CI_MERGE_REQUEST_TARGET_BRANCH_NAME, CI_COMMIT_BEFORE_SHA); \
a note says which. See docs/ci.md."
)]
pub struct Args {
    /// The base revision (e.g. `origin/main`); the diff starts at its merge base with the head
    /// [default: from the CI's variables]
    #[arg(long, value_name = "REF")]
    pub base: Option<String>,
    /// The head revision [default: the working tree, uncommitted and untracked changes included]
    #[arg(long, value_name = "REF")]
    pub head: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// With `--format gitlab-pipeline`: the repository file defining the hidden job `.images`
    /// that each service's job extends
    #[arg(long, value_name = "FILE", default_value = ".gitlab/images.yml")]
    pub gitlab_include: String,
    /// When the clone is too shallow to hold the merge base, report every service (saying so)
    /// instead of failing
    #[arg(long)]
    pub fallback_all: bool,
}

/// `affected --format json`: the engine's answer and where its base came from.
#[derive(Serialize)]
struct AffectedJson<'a> {
    #[serde(flatten)]
    affected: &'a engine::affected::Affected,
    /// `--base`, or the CI variable the base was read from.
    base_source: &'a str,
}

impl Args {
    pub fn run(self, global: &Global) -> anyhow::Result<i32> {
        let root = setup::root(global)?;
        let base = crate::ci::base(self.base.as_deref())?;
        let a = engine::affected::affected(&engine::affected::AffectedOptions {
            root,
            base: base.rev.clone(),
            head: self.head.clone(),
            fallback_all: self.fallback_all,
        })?;
        for e in &a.errors {
            output::error(&anyhow::anyhow!(
                "service `{}`: {}\n  hint: {}",
                e.service,
                e.error,
                e.hint
            ));
        }
        if let Some(f) = &a.fallback {
            output::warn(&format!(
                "{f}: every service is reported as affected (--fallback-all)"
            ));
        }
        let matrix = serde_json::json!({
            "include": a.services.iter().zip(&a.images).map(|(s, i)| serde_json::json!({"service": s, "image": i})).collect::<Vec<_>>()
        });
        if let Some(path) = std::env::var_os("GITHUB_OUTPUT") {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&path)?;
            writeln!(f, "services={}", serde_json::to_string(&a.services)?)?;
            writeln!(f, "matrix={}", serde_json::to_string(&matrix)?)?;
            writeln!(f, "all={}", a.all)?;
            writeln!(f, "any={}", !a.services.is_empty())?;
        }
        let format = if global.json {
            Format::Json
        } else {
            self.format
        };
        match format {
            Format::Json => output::json(&AffectedJson {
                affected: &a,
                base_source: &base.source,
            })?,
            Format::GithubMatrix => println!("{}", serde_json::to_string(&matrix)?),
            Format::GitlabPipeline => {
                let services: Vec<(&str, &str)> = a
                    .services
                    .iter()
                    .zip(&a.images)
                    .map(|(s, i)| (s.as_str(), i.as_str()))
                    .collect();
                print!(
                    "{}",
                    crate::ci::gitlab_pipeline(
                        &a.base,
                        a.merge_base.as_deref(),
                        &services,
                        &self.gitlab_include
                    )
                )
            }
            Format::Text => {
                output::info(&format!(
                    "{} changed path(s) since {} ({})",
                    a.changed.len(),
                    a.base,
                    a.merge_base
                        .as_deref()
                        .map(|m| &m[..m.len().min(12)])
                        .unwrap_or("no merge base")
                ));
                if let Some(r) = &a.all_reason {
                    output::info(&format!("all services: {r}"));
                }
                for s in &a.services {
                    let why = a.reasons.get(s).map(|r| r.join("; ")).unwrap_or_default();
                    println!("{s}\t{why}");
                }
                for s in &a.removed {
                    output::info(&format!("removed: {s}"));
                }
            }
        }
        Ok(0)
    }
}
