//! `cargo xtask graph`: the workspace's packages and images, as text, DOT or JSON.

use crate::{output, setup, Global};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Text,
    Dot,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format (`--json` is the same as `--format json`)
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

impl Args {
    pub fn run(self, global: &Global) -> anyhow::Result<i32> {
        let opts = setup::options(global)?;
        let ws = engine::workspace::Workspace::discover(&opts.root)?;
        let root = engine::resolve::Root::open(&ws.root)?;
        let all: Vec<usize> = (0..ws.services.len()).collect();
        // The graph needs no key: build arguments from images.toml only, and a Dockerfile that
        // cannot be read leaves its service without `FROM` edges (said on stderr).
        let (loaded, failed) = engine::context::load_dockerfiles(&ws, &root, &all, &|s| {
            ws.config.build_args(&ws.services[s].name)
        });
        for (s, e) in &failed {
            output::warn(&format!(
                "service `{}`: {e}\n  hint: {}",
                ws.services[*s].name,
                engine::pipeline::skip_hint(&ws.services[*s].name)
            ));
        }
        let dockerfiles: Vec<_> = all
            .iter()
            .map(|s| loaded.get(s).map(|d| d.as_ref()))
            .collect();
        let graph = engine::graph::Graph::build(&ws, &dockerfiles)?;
        let format = if global.json {
            Format::Json
        } else {
            self.format
        };
        match format {
            Format::Json => output::json(&graph.to_json(&ws))?,
            Format::Dot => print!("{}", graph.to_dot(&ws)),
            Format::Text => print!("{}", graph.to_text(&ws)),
        }
        Ok(0)
    }
}
