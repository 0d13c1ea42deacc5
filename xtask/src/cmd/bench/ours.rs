//! The engine as users run it: `xtask images --dry-run` as a child process (the optimized `xtask`
//! profile binary) on a synthetic monorepo, in the four scenarios (cold, warm no-op, one-file edit,
//! shared-package edit); its output checked, its phase timings read from `-v`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use super::measure::{Outcome, Proc};

/// What a recorded (never built) image of the benchmark is called: the dry-run plan only needs a
/// record per key; no image exists.
pub const FAKE_IMAGE_ID: &str =
    "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// The phases `-v` prints, in milliseconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Phases {
    pub discover: f64,
    pub list: f64,
    pub hash: f64,
    pub keys: f64,
    /// The run's wall time less the four phases: process start, plan, output.
    pub rest: f64,
}

/// One checked run of the engine.
#[derive(Debug)]
pub struct Run {
    pub outcome: Outcome,
    pub phases: Phases,
    pub files_read: usize,
}

/// The engine binary: this very executable (run as `cargo xtask bench`, the `xtask` profile).
pub fn engine_binary() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("failed to find the xtask executable")
}

/// `xtask --root R --cache-dir C --json -v images --dry-run`, with no engine to check the
/// records against (`DOCKER` names no client): the records of the benchmark name no real image,
/// and what is measured is the engine's own work, not the container engine's answer.
pub fn plan_command(exe: &Path, repo: &Path, cache: &Path) -> Proc {
    Proc::new(exe)
        .arg("--root")
        .arg(repo)
        .arg("--cache-dir")
        .arg(cache)
        .args(["--json", "-v", "images", "--dry-run"])
        .env("DOCKER", NO_ENGINE)
}

/// A Docker client that does not exist: the plan says it could not check the engine.
pub const NO_ENGINE: &str = "/nonexistent/kc-bench-no-docker";

/// Runs the plan and checks what it says against what the scenario expects: `to_build` images
/// to build, the rest cached, and `read` files read (`None`: any).
pub fn plan(
    cmd: &Proc,
    memory: bool,
    scratch: &Path,
    expect_build: usize,
    expect_read: Option<usize>,
    scenario: &str,
) -> anyhow::Result<Run> {
    let outcome = cmd.run(memory, scratch)?;
    let json: serde_json::Value = serde_json::from_slice(&outcome.stdout)
        .with_context(|| format!("`{}` printed no JSON", cmd.display()))?;
    let images = json["images"]
        .as_array()
        .with_context(|| format!("`{}` printed no `images`", cmd.display()))?;
    let to_build = images.iter().filter(|i| i["action"] == "build").count();
    let stderr = String::from_utf8_lossy(&outcome.stderr);
    let (mut phases, _files, files_read) = parse_verbose(&stderr).with_context(|| {
        format!(
            "`{}` printed no phase timings on stderr:\n{stderr}",
            cmd.display()
        )
    })?;
    phases.rest = (outcome.wall.as_secs_f64() * 1e3
        - phases.discover
        - phases.list
        - phases.hash
        - phases.keys)
        .max(0.0);
    if to_build != expect_build {
        anyhow::bail!(
            "{scenario}: the plan has {to_build} images to build, {expect_build} expected\n  hint: the engine or the synthetic monorepo is not what the benchmark assumes"
        );
    }
    if let Some(r) = expect_read {
        if files_read != r {
            anyhow::bail!("{scenario}: the engine read {files_read} files, {r} expected");
        }
    }
    Ok(Run {
        outcome,
        phases,
        files_read,
    })
}

/// Records a (fake) build of every image at its current key, so that a no-op plan says `cached`
/// and an edit is explained against the last build, as for a user.
pub fn seed_records(repo: &Path, cache: &Path) -> anyhow::Result<usize> {
    let mut opts = engine::pipeline::Options::new(repo);
    opts.cache_dir = Some(cache.to_path_buf());
    let analysis = engine::pipeline::analyze(&opts)?;
    let store = cache::Store::open(&analysis.cache_dir)?;
    for img in &analysis.images {
        engine::record::record_analysed(&store, &analysis, img.service, FAKE_IMAGE_ID, 0)?;
    }
    Ok(analysis.images.len())
}

/// Reads `discover 1.2ms, list 3.4ms, hash 5.6ms (N files, M read, B bytes), keys 7.8ms`.
pub fn parse_verbose(stderr: &str) -> Option<(Phases, usize, usize)> {
    let line = stderr.lines().find(|l| l.starts_with("discover "))?;
    let field = |name: &str| -> Option<f64> {
        let rest = line.split(&format!("{name} ")).nth(1)?;
        let token = rest.split([',', ' ']).next()?;
        parse_duration_ms(token)
    };
    let phases = Phases {
        discover: field("discover")?,
        list: field("list")?,
        hash: field("hash")?,
        keys: field("keys")?,
        rest: 0.0,
    };
    let inner = line.split('(').nth(1)?.split(')').next()?;
    let mut nums = inner.split(", ").map(|p| p.split(' ').next());
    let files = nums.next()??.parse().ok()?;
    let read = nums.next()??.parse().ok()?;
    Some((phases, files, read))
}

/// A `Duration`'s `{:.1?}` text (`12.3ms`, `1.2s`, `830.5µs`, `5ns`) in milliseconds.
pub fn parse_duration_ms(s: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("µs") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix("ns") {
        (n, 1e-6)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e3)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|v| v * scale)
}

/// Appends a line to a file (an edit a user would make), returning the original bytes.
pub fn edit(repo: &Path, rel: &str, run: usize) -> anyhow::Result<Vec<u8>> {
    let p = repo.join(rel);
    let original =
        std::fs::read(&p).with_context(|| format!("failed to read `{}`", p.display()))?;
    let mut edited = original.clone();
    edited.extend_from_slice(format!("// bench edit {run}\n").as_bytes());
    std::fs::write(&p, edited).with_context(|| format!("failed to write `{}`", p.display()))?;
    Ok(original)
}

pub fn restore(repo: &Path, rel: &str, original: &[u8]) -> anyhow::Result<()> {
    let p = repo.join(rel);
    std::fs::write(&p, original).with_context(|| format!("failed to write `{}`", p.display()))
}

/// Sleeps past the filesystem's timestamp granularity, so that files written just before a run
/// are not "racily clean" for the stat cache (git's rule) and the scenario measures what a user
/// sees a moment after saving.
pub fn settle() {
    std::thread::sleep(Duration::from_millis(20));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_verbose_line() {
        let s = "note: x\ndiscover 12.3ms, list 1.2s, hash 830.5µs (100000 files, 3 read, 42 bytes), keys 7ns\n";
        let (p, files, read) = parse_verbose(s).expect("parsed");
        assert_eq!((files, read), (100_000, 3));
        assert!((p.discover - 12.3).abs() < 1e-9);
        assert!((p.list - 1200.0).abs() < 1e-9);
        assert!((p.hash - 0.8305).abs() < 1e-9);
        assert!((p.keys - 7e-6).abs() < 1e-12);
        assert!(parse_verbose("nothing").is_none());
    }
}
