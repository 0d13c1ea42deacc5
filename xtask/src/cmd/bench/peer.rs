//! The alternatives a user would pick instead, run on the same inputs: turborepo's dry run
//! (installed from the npm registry into `target/bench/tools`, only when the bench runs), and
//! `docker compose build` on the example against a no-op `cargo xtask images` with a real engine.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

use engine::execute::docker::{BuildMode, Docker};

use super::measure::Proc;

/// The turborepo release measured (pinned, so that figures compare across runs).
pub const TURBO_VERSION: &str = "2.11.11";

/// Environment that keeps turbo off the network (telemetry, update checks).
pub const TURBO_ENV: &[(&str, &str)] = &[
    ("TURBO_TELEMETRY_DISABLED", "1"),
    ("DO_NOT_TRACK", "1"),
    ("TURBO_NO_UPDATE_NOTIFIER", "1"),
    ("TURBO_PRINT_VERSION_DISABLED", "1"),
];

/// Installs turbo with `npm install --prefix` under `tools` (never globally) unless it is there,
/// and returns its native binary (what the `turbo` npm shim execs).
pub fn install_turbo(tools: &Path) -> anyhow::Result<PathBuf> {
    let prefix = tools.join(format!("turbo-{TURBO_VERSION}"));
    if let Some(bin) = find_turbo(&prefix) {
        return Ok(bin);
    }
    eprintln!(
        "bench: installing turbo@{TURBO_VERSION} from the npm registry into {}",
        prefix.display()
    );
    std::fs::create_dir_all(&prefix)
        .with_context(|| format!("failed to create `{}`", prefix.display()))?;
    let out = Command::new("npm")
        .arg("install")
        .arg("--prefix")
        .arg(&prefix)
        .arg(format!("turbo@{TURBO_VERSION}"))
        .args(["--no-audit", "--no-fund", "--no-save", "--loglevel=error"])
        .output()
        .context("failed to run `npm`\n  hint: install Node.js and npm, or pass --no-peer")?;
    if !out.status.success() {
        anyhow::bail!(
            "`npm install --prefix {} turbo@{TURBO_VERSION}` failed ({}):\n{}\n  hint: the npm registry must be reachable; or pass --no-peer",
            prefix.display(),
            out.status,
            super::measure::tail(&out.stderr, 20)
        );
    }
    find_turbo(&prefix).with_context(|| {
        format!(
            "no turbo binary under `{}/node_modules/@turbo/*/bin` after npm install",
            prefix.display()
        )
    })
}

fn find_turbo(prefix: &Path) -> Option<PathBuf> {
    let dir = prefix.join("node_modules").join("@turbo");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin").join("turbo"))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found.into_iter().next()
}

/// `turbo run build --dry=json` in `repo`.
pub fn turbo_command(turbo: &Path, repo: &Path) -> Proc {
    let mut p = Proc::new(turbo)
        .args(["run", "build", "--dry=json"])
        .cwd(repo);
    for (k, v) in TURBO_ENV {
        p = p.env(k, v);
    }
    p
}

/// Checks turbo's dry-run JSON: one `build` task per workspace package.
pub fn check_turbo(stdout: &[u8], packages: usize) -> anyhow::Result<()> {
    let json: serde_json::Value =
        serde_json::from_slice(stdout).context("`turbo run build --dry=json` printed no JSON")?;
    let tasks = json["tasks"].as_array().map(Vec::len).unwrap_or(0);
    if tasks != packages {
        anyhow::bail!(
            "`turbo run build --dry=json` planned {tasks} tasks, {packages} expected (one build per package)"
        );
    }
    Ok(())
}

/// Makes the synthetic monorepo a git repository with everything committed, as users' are
/// (turbo hashes through git when it can: the peer at its best).
pub fn git_commit_all(repo: &Path) -> anyhow::Result<()> {
    let git = |args: &[&str]| -> anyhow::Result<()> {
        let out = Command::new("git")
            .args([
                "-c",
                "user.name=bench",
                "-c",
                "user.email=bench@localhost",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .current_dir(repo)
            .output()
            .context("failed to run `git`\n  hint: install git")?;
        if !out.status.success() {
            anyhow::bail!(
                "`git {}` failed in `{}` ({}):\n{}",
                args.join(" "),
                repo.display(),
                out.status,
                super::measure::tail(&out.stderr, 10)
            );
        }
        Ok(())
    };
    git(&["init", "-q"])?;
    git(&["add", "-A"])?;
    git(&["commit", "-q", "-m", "synthetic monorepo"])
}

/// The first line of a command's output, for the results file.
pub fn version_of(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(|l| l.trim().to_string())
}

/// How `docker compose` is run here.
#[derive(Debug, Clone)]
pub struct Compose {
    pub program: PathBuf,
    /// `["compose"]` for the plugin, `[]` for the standalone v1.
    pub prefix: Vec<String>,
    pub version: String,
}

/// Finds `docker compose` (the v2 plugin of `$DOCKER`), else the standalone `docker-compose`.
pub fn find_compose(docker: &str) -> anyhow::Result<Compose> {
    if let Some(v) = version_of(docker, &["compose", "version"]) {
        return Ok(Compose {
            program: PathBuf::from(docker),
            prefix: vec!["compose".into()],
            version: v,
        });
    }
    if let Some(v) = version_of("docker-compose", &["version", "--short"]) {
        return Ok(Compose {
            program: PathBuf::from("docker-compose"),
            prefix: Vec::new(),
            version: format!("docker-compose {v} (standalone v1)"),
        });
    }
    anyhow::bail!(
        "neither `{docker} compose` nor `docker-compose` is available\n  hint: `apt-get install docker-compose` (Debian), or pass --no-docker"
    )
}

/// The Docker client the engine detects (`DOCKER`, else the first `docker` on `PATH` that builds
/// with BuildKit), with an absolute path: what every Docker figure of the bench runs.
pub fn engine_client() -> anyhow::Result<Docker> {
    let mut d = Docker::detect()?;
    if !d.client.is_absolute() {
        let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|dir| dir.join(&d.client))
            .find(|p| p.is_file());
        if let Some(p) = found {
            d.client = p;
        }
    }
    if let Ok(abs) = d.client.canonicalize() {
        d.client = abs;
    }
    Ok(d)
}

/// `docker compose -p <project> -f <file> build --parallel`, building like the engine does.
/// The standalone compose (v1) runs the `docker` first on `PATH` for its builds, which may be
/// another client than the engine's (on this machine: a 28.x client without buildx, which fails
/// with `BuildKit is enabled but the buildx component is missing`): `bin` gets a `docker` link to
/// the engine's client and goes first on its `PATH`, and BuildKit is asked for only when that
/// client has it.
pub fn compose_build(
    compose: &Compose,
    docker: &Docker,
    example: &Path,
    project: &str,
    bin: &Path,
) -> anyhow::Result<Proc> {
    let mut p = Proc::new(&compose.program)
        .args(compose.prefix.iter().cloned())
        .arg("-p")
        .arg(project)
        .arg("-f")
        .arg(example.join("docker-compose.yml"))
        .arg("build");
    if compose.prefix.is_empty() {
        p = p.arg("--parallel");
        std::fs::create_dir_all(bin)
            .with_context(|| format!("failed to create `{}`", bin.display()))?;
        let link = bin.join("docker");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&docker.client, &link)
            .with_context(|| format!("failed to create `{}`", link.display()))?;
        let path = std::env::var("PATH").unwrap_or_default();
        p = p.env("PATH", &format!("{}:{path}", bin.display()));
    }
    let buildkit = if docker.mode == BuildMode::Legacy {
        "0"
    } else {
        "1"
    };
    Ok(p.env("DOCKER_BUILDKIT", buildkit)
        .env("COMPOSE_DOCKER_CLI_BUILD", "1")
        .cwd(example))
}

/// Copies the bundled example (without `node_modules`, `dist` and caches) to `to`, with image
/// names of its own for each tool so that no tag of anyone else's is moved.
pub fn copy_example(
    from: &Path,
    to: &Path,
    xtask_prefix: &str,
    compose_prefix: &str,
) -> anyhow::Result<()> {
    if to.exists() {
        std::fs::remove_dir_all(to)
            .with_context(|| format!("failed to remove `{}`", to.display()))?;
    }
    copy_tree(from, to)?;
    let rewrite = |file: &str, from_s: &str, to_s: &str| -> anyhow::Result<()> {
        let p = to.join(file);
        let text = std::fs::read_to_string(&p)
            .with_context(|| format!("failed to read `{}`", p.display()))?;
        if !text.contains(from_s) {
            anyhow::bail!("`{}` has no `{from_s}` to rename\n  hint: the bench assumes the example's image names", p.display());
        }
        std::fs::write(&p, text.replace(from_s, to_s))
            .with_context(|| format!("failed to write `{}`", p.display()))
    };
    rewrite(
        "images.toml",
        "prefix = \"kodingcaravan-\"",
        &format!("prefix = \"{xtask_prefix}\""),
    )?;
    rewrite(
        "docker-compose.yml",
        "image: kodingcaravan-",
        &format!("image: {compose_prefix}"),
    )
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("failed to create `{}`", to.display()))?;
    for entry in
        std::fs::read_dir(from).with_context(|| format!("failed to read `{}`", from.display()))?
    {
        let entry = entry.with_context(|| format!("failed to read `{}`", from.display()))?;
        let name = entry.file_name();
        if matches!(
            name.to_str(),
            Some("node_modules" | "dist" | ".images-cache")
        ) {
            continue;
        }
        let ft = entry.file_type()?;
        let dest = to.join(&name);
        if ft.is_dir() {
            copy_tree(&entry.path(), &dest)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(entry.path())?;
            std::os::unix::fs::symlink(target, &dest)?;
        } else {
            std::fs::copy(entry.path(), &dest)
                .with_context(|| format!("failed to copy `{}`", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Removes the images tagged with one of `prefixes` (only the benchmark's own).
pub fn remove_images(docker: &str, prefixes: &[&str]) {
    let Ok(out) = Command::new(docker)
        .args(["images", "--format", "{{.Repository}}:{{.Tag}}"])
        .output()
    else {
        return;
    };
    let tags: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| prefixes.iter().any(|p| l.starts_with(p)))
        .map(String::from)
        .collect();
    if !tags.is_empty() {
        let _ = Command::new(docker)
            .args(["rmi", "-f"])
            .args(&tags)
            .output();
    }
}
