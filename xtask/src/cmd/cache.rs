//! `cargo xtask cache stats|gc|verify`: look after the local content-addressed store.

use crate::{output, Global};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Count records and blobs, and their size on disk
    Stats,
    /// Remove records whose image is gone from the engine (all records with --all), unreferenced
    /// blobs older than an hour and stale temp files
    Gc {
        /// Remove every record, whether or not its image exists
        #[arg(long)]
        all: bool,
    },
    /// Read every record and blob; move aside what fails verification; exit 1 if anything did
    Verify,
}

impl Args {
    pub fn run(self, global: &Global) -> anyhow::Result<i32> {
        let root = output::root(global)?;
        let dir = global
            .cache_dir
            .clone()
            .unwrap_or_else(|| engine::pipeline::default_cache_dir(&root));
        let store = cache::Store::open(&dir)?;
        match self.action {
            Action::Stats => {
                let s = store.stats()?;
                if global.json {
                    output::json(&s)?;
                } else {
                    println!("cache      {}", dir.display());
                    println!("records    {}", s.records);
                    println!("blobs      {}", s.blobs);
                    println!("size       {:.1} KiB", s.bytes as f64 / 1024.0);
                    println!("corrupt    {} (moved aside)", s.corrupt);
                    println!("temp files {}", s.tmp);
                }
                Ok(0)
            }
            Action::Gc { all } => {
                let ids = if all {
                    None
                } else {
                    let docker = engine::execute::docker::Docker::detect()?;
                    docker.ping()?;
                    Some(docker.image_ids()?)
                };
                let report = store.gc(
                    &mut |r| match &ids {
                        None => false,
                        Some(ids) => ids.contains(&r.image_id),
                    },
                    std::time::Duration::from_secs(7 * 24 * 3600),
                )?;
                if global.json {
                    output::json(&report)?;
                } else {
                    println!(
                        "removed {} records, {} blobs, {} temp files ({:.1} KiB)",
                        report.records_removed,
                        report.blobs_removed,
                        report.tmp_removed,
                        report.bytes_freed as f64 / 1024.0
                    );
                }
                Ok(0)
            }
            Action::Verify => {
                let report = store.verify()?;
                if global.json {
                    output::json(&report)?;
                } else {
                    println!(
                        "{} records and {} blobs verified",
                        report.records_ok, report.blobs_ok
                    );
                    for m in &report.moved_aside {
                        output::warn(m);
                    }
                }
                Ok(if report.is_clean() { 0 } else { 1 })
            }
        }
    }
}
