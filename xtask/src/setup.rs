//! From the global flags to the engine: the monorepo root, the pipeline's options, and the
//! analysis (with its warnings and, with `--verbose`, its timings printed).

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::output::warn;
use crate::Global;

/// The monorepo root: `--root`, else the nearest ancestor of the current directory with
/// `pnpm-workspace.yaml`, else the bundled example.
pub fn root(global: &Global) -> anyhow::Result<PathBuf> {
    if let Some(r) = &global.root {
        return Ok(r.clone());
    }
    let cwd = std::env::current_dir().context("failed to read the current directory")?;
    for dir in cwd.ancestors() {
        if dir.join(engine::workspace::WORKSPACE_FILE).is_file() {
            return Ok(dir.to_path_buf());
        }
    }
    let example = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("examples")
        .join("kc-backend");
    if example.join(engine::workspace::WORKSPACE_FILE).is_file() {
        let example = example.canonicalize().unwrap_or(example);
        if !global.json {
            crate::output::note(&format!(
                "no pnpm workspace above the current directory; using the bundled example `{}` (pass --root DIR for another)",
                example.display()
            ));
        }
        return Ok(example);
    }
    anyhow::bail!(
        "no `pnpm-workspace.yaml` in `{}` or above it\n  hint: run from the monorepo root or pass `--root DIR`",
        cwd.display()
    )
}

/// The engine options for the global flags.
pub fn options(global: &Global) -> anyhow::Result<engine::pipeline::Options> {
    let root = root(global)?;
    let mut opts = engine::pipeline::Options::new(root);
    opts.cache_dir = global.cache_dir.clone();
    Ok(opts)
}

/// Runs the front of the pipeline, printing its warnings (and timings with `--verbose`).
pub fn analyze(opts: &engine::pipeline::Options) -> anyhow::Result<engine::pipeline::Analysis> {
    let analysis = engine::pipeline::analyze(opts)?;
    for w in &analysis.warnings {
        warn(w);
    }
    let t = &analysis.timings;
    let s = &analysis.hash_stats;
    if crate::output::events() {
        crate::output::event(
            "analysis",
            &serde_json::json!({
                "discover_ms": t.discover.as_secs_f64() * 1e3,
                "list_ms": t.list.as_secs_f64() * 1e3,
                "hash_ms": t.hash.as_secs_f64() * 1e3,
                "keys_ms": t.keys.as_secs_f64() * 1e3,
                "files": s.files,
                "files_read": s.hashed,
                "bytes_read": s.bytes_read,
            }),
        );
    } else if crate::output::verbose(1) {
        eprintln!(
            "discover {:.1?}, list {:.1?}, hash {:.1?} ({} files, {} read, {} bytes), keys {:.1?}",
            t.discover, t.list, t.hash, s.files, s.hashed, s.bytes_read, t.keys
        );
    }
    Ok(analysis)
}
