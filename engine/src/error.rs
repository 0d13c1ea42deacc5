//! The engine's one error type: every variant names the file (and line where known) and carries a hint.

use std::path::PathBuf;

/// Errors of the engine. Messages are lowercase, name the file and the thing, and end without a period.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to {action} `{}`: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("invalid JSON in `{}` at line {line}, column {column}: {message}\n  hint: fix the syntax of this file; every workspace `package.json` must be valid JSON", path.display())]
    Json {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },

    #[error("invalid YAML in `{}`{}: {message}\n  hint: {hint}", path.display(), line.map(|l| format!(" at line {l}")).unwrap_or_default())]
    Yaml {
        path: PathBuf,
        line: Option<usize>,
        message: String,
        hint: &'static str,
    },

    #[error("invalid lockfile `{}`: {message}\n  hint: run `pnpm install` to regenerate it", path.display())]
    Lockfile { path: PathBuf, message: String },

    #[error("invalid Dockerfile `{}` at line {line}: {message}", path.display())]
    Dockerfile {
        path: PathBuf,
        line: usize,
        message: String,
    },

    #[error("invalid pattern in `{}` at line {line}: {message}", path.display())]
    DockerIgnore {
        path: PathBuf,
        line: usize,
        message: String,
    },

    #[error("invalid package `{}`: {message}", path.display())]
    Package { path: PathBuf, message: String },

    #[error("two workspace packages are named `{name}`: `{}` and `{}`\n  hint: rename one of them; package names must be unique in a workspace", first.display(), second.display())]
    DuplicatePackage {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },

    #[error("`{}` depends on `{dependency}` with `{specifier}`, but no workspace package has that name\n  hint: add the package to `pnpm-workspace.yaml`, fix the name, or use a registry version", path.display())]
    UnknownWorkspaceDependency {
        path: PathBuf,
        dependency: String,
        specifier: String,
    },

    #[error("dependency cycle between workspace packages: {}\n  hint: break the cycle; images are built in dependency order", cycle.join(" -> "))]
    Cycle { cycle: Vec<String> },

    #[error("service `{service}` cannot be an image name: {reason}\n  hint: image names use lowercase letters, digits and the separators `.`, `_`, `__`, `-` (set `image` for it in `images.toml` to choose another)")]
    InvalidImageName { service: String, reason: String },

    #[error("`{}` is a symlink to `{}`, which is outside the monorepo root\n  hint: build contexts hold only files under the root; copy the file in or remove the link", path.display(), target.display())]
    SymlinkOutsideRoot { path: PathBuf, target: PathBuf },

    #[error("`{}` names `{source_path}` (line {line}), which does not exist in the build context", dockerfile.display())]
    MissingCopySource {
        dockerfile: PathBuf,
        line: usize,
        source_path: String,
    },

    #[error("unknown service `{name}`{}", if known.is_empty() { String::new() } else { format!("\n  hint: the services are: {}", known.join(", ")) })]
    UnknownService { name: String, known: Vec<String> },

    #[error("no pnpm workspace at `{}`: {message}\n  hint: run from the monorepo root or pass `--root DIR`", root.display())]
    NoWorkspace { root: PathBuf, message: String },

    #[error("invalid config `{}`: {message}", path.display())]
    Config { path: PathBuf, message: String },

    #[error("`{path}` looks like a credential ({kind}) and would enter the build context of `{service}`\n  hint: keep it out with a `.dockerignore` pattern, or, if it is meant to be there (a test fixture), list it in images.toml: `[secrets] allow = [\"{path}\"]`")]
    SecretInContext {
        /// Relative to the monorepo root.
        path: String,
        kind: &'static str,
        service: String,
    },

    #[error(transparent)]
    Cache(#[from] cache::Error),

    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
