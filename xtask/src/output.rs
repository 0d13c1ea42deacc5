//! Output helpers shared by the commands: errors, warnings, JSON, the root and cache locations.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::Global;

/// Prints an error with its chain of causes, cargo style.
pub fn error(e: &anyhow::Error) {
    let red = std::io::stderr().is_terminal();
    let label = if red {
        "\x1b[1;31merror\x1b[0m"
    } else {
        "error"
    };
    eprintln!("{label}: {e}");
    for cause in e.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
}

pub fn warn(msg: &str) {
    let yellow = std::io::stderr().is_terminal();
    let label = if yellow {
        "\x1b[1;33mwarning\x1b[0m"
    } else {
        "warning"
    };
    eprintln!("{label}: {msg}");
}

pub fn note(msg: &str) {
    eprintln!("note: {msg}");
}

/// Prints a value as one JSON document on stdout.
pub fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value).context("failed to serialize JSON output")?;
    println!("{text}");
    Ok(())
}

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
            note(&format!(
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
pub fn analyze(
    global: &Global,
    opts: &engine::pipeline::Options,
) -> anyhow::Result<engine::pipeline::Analysis> {
    let analysis = engine::pipeline::analyze(opts)?;
    for w in &analysis.warnings {
        warn(w);
    }
    if global.verbose {
        let t = &analysis.timings;
        let s = &analysis.hash_stats;
        eprintln!(
            "discover {:.1?}, list {:.1?}, hash {:.1?} ({} files, {} read, {} bytes), keys {:.1?}",
            t.discover, t.list, t.hash, s.files, s.hashed, s.bytes_read, t.keys
        );
    }
    Ok(analysis)
}

/// A table with left-aligned columns.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let n = cells.len();
        for (i, c) in cells.into_iter().enumerate() {
            if i + 1 == n {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for r in rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}
