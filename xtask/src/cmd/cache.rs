//! `cargo xtask cache stats|gc|verify`: look after the local cache directory, every part of it
//! (the engine's `cachedir` decides; this module prints).

use crate::{output, setup, Global};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Count records and blobs, and the size of every part of the cache directory
    Stats,
    /// Remove records whose image is gone from the engine (all records with --all), what only
    /// they used (blobs, verification markers), stat cache entries and pruned lockfiles the
    /// workspace no longer uses, stale scratch and temp files, and failure logs of keys that are
    /// not current or older than a week
    Gc {
        /// Remove every record, whether or not its image exists, and every entry moved aside
        #[arg(long)]
        all: bool,
    },
    /// Read every record and blob; move aside what fails verification (or is not a regular
    /// file); exit 1 if anything did
    Verify,
}

impl Args {
    pub fn run(self, global: &Global) -> anyhow::Result<i32> {
        let root = setup::root(global)?;
        let dir = global
            .cache_dir
            .clone()
            .unwrap_or_else(|| engine::pipeline::default_cache_dir(&root));
        match self.action {
            Action::Stats => {
                let s = engine::cachedir::stats(&dir)?;
                if global.json {
                    output::json(&s)?;
                } else {
                    println!("cache      {}", dir.display());
                    println!("records    {}", s.records);
                    println!("blobs      {}", s.blobs);
                    println!("size       {:.1} KiB", s.bytes as f64 / 1024.0);
                    println!("corrupt    {} (moved aside)", s.corrupt);
                    println!("temp files {}", s.tmp);
                    for p in &s.parts {
                        println!(
                            "  {:<22} {:>6} file(s) {:>10.1} KiB",
                            p.name,
                            p.files,
                            p.bytes as f64 / 1024.0
                        );
                    }
                    println!("total      {:.1} KiB", s.total_bytes as f64 / 1024.0);
                    for u in &s.unknown {
                        output::warn(&format!(
                            "`{}` in the cache directory is not the engine's",
                            dir.join(u).display()
                        ));
                    }
                }
                Ok(0)
            }
            Action::Gc { all } => {
                let docker = if all {
                    None
                } else {
                    let docker = engine::execute::docker::Docker::detect()?;
                    docker.ping()?;
                    Some(docker)
                };
                let mut workspace = engine::pipeline::Options::new(root);
                workspace.cache_dir = Some(dir.clone());
                let report = engine::cachedir::gc(
                    &dir,
                    docker.as_ref().map(|d| d as &dyn engine::execute::Images),
                    &engine::cachedir::GcOptions {
                        all,
                        retention: engine::cachedir::DEFAULT_RETENTION,
                        workspace: Some(workspace),
                    },
                )?;
                for w in &report.warnings {
                    output::warn(w);
                }
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
                    println!(
                        "and {} verification markers, {} stat cache entries, {} pruned lockfiles, {} scratch files, {} logs, {} last-built pointers, {} corrupt entries",
                        report.markers_removed,
                        report.stat_entries_removed,
                        report.prunings_removed,
                        report.work_removed,
                        report.logs_removed,
                        report.pointers_removed,
                        report.corrupt_removed
                    );
                }
                Ok(0)
            }
            Action::Verify => {
                let store = cache::Store::open(&dir)?;
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
