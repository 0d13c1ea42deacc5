//! `cargo xtask affected`: the services a change touches, for CI fan-out (a GitHub Actions matrix).

use std::io::Write;

use crate::{output, setup, Global};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    GithubMatrix,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The base revision (e.g. `origin/main`); the diff starts at its merge base with the head
    #[arg(long, value_name = "REF")]
    pub base: String,
    /// The head revision [default: the working tree, uncommitted and untracked changes included]
    #[arg(long, value_name = "REF")]
    pub head: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// When the clone is too shallow to hold the merge base, report every service (saying so)
    /// instead of failing
    #[arg(long)]
    pub fallback_all: bool,
}

impl Args {
    pub fn run(self, global: &Global) -> anyhow::Result<i32> {
        let root = setup::root(global)?;
        let a = engine::affected::affected(&engine::affected::AffectedOptions {
            root,
            base: self.base.clone(),
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
            Format::Json => output::json(&a)?,
            Format::GithubMatrix => println!("{}", serde_json::to_string(&matrix)?),
            Format::Text => {
                eprintln!(
                    "{} changed path(s) since {} ({})",
                    a.changed.len(),
                    a.base,
                    a.merge_base
                        .as_deref()
                        .map(|m| &m[..m.len().min(12)])
                        .unwrap_or("no merge base")
                );
                if let Some(r) = &a.all_reason {
                    eprintln!("all services: {r}");
                }
                for s in &a.services {
                    let why = a.reasons.get(s).map(|r| r.join("; ")).unwrap_or_default();
                    println!("{s}\t{why}");
                }
                for s in &a.removed {
                    eprintln!("removed: {s}");
                }
            }
        }
        Ok(0)
    }
}
