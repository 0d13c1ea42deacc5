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
        let all: Vec<usize> = (0..ws.services.len()).collect();
        let loaded = engine::context::load_dockerfiles(&ws, &all)?;
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
