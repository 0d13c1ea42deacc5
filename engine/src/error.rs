//! The engine's one error type: every variant names the file (and line where known) and carries a hint.

use std::path::{Path, PathBuf};

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

    #[error("invalid JSON in `{}` at line {line}, column {column}: {message}{}", path.display(), hint_line(self))]
    Json {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },

    #[error("invalid YAML in `{}`{}: {message}{}", path.display(), line.map(|l| format!(" at line {l}")).unwrap_or_default(), hint_line(self))]
    Yaml {
        path: PathBuf,
        line: Option<usize>,
        message: String,
        hint: &'static str,
    },

    #[error("invalid lockfile `{}`: {message}{}", path.display(), hint_line(self))]
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

    #[error("two workspace packages are named `{name}`: `{}` and `{}`{}", first.display(), second.display(), hint_line(self))]
    DuplicatePackage {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },

    #[error("`{}` depends on `{dependency}` with `{specifier}`, but no workspace package has that name{}", path.display(), hint_line(self))]
    UnknownWorkspaceDependency {
        path: PathBuf,
        dependency: String,
        specifier: String,
    },

    #[error("dependency cycle between workspace packages: {}{}", cycle.join(" -> "), hint_line(self))]
    Cycle { cycle: Vec<String> },

    #[error(
        "service `{service}` cannot be an image name: {reason}{}",
        hint_line(self)
    )]
    InvalidImageName { service: String, reason: String },

    #[error("`{}` is a symlink to `{}`, which is outside the monorepo root{}", path.display(), target.display(), hint_line(self))]
    SymlinkOutsideRoot { path: PathBuf, target: PathBuf },

    #[error("`{}` names `{source_path}` (line {line}), which does not exist in the build context", dockerfile.display())]
    MissingCopySource {
        dockerfile: PathBuf,
        line: usize,
        source_path: String,
    },

    #[error("unknown service `{name}`{}", hint_line(self))]
    UnknownService { name: String, known: Vec<String> },

    #[error("no pnpm workspace at `{}`: {message}{}", root.display(), hint_line(self))]
    NoWorkspace { root: PathBuf, message: String },

    #[error("invalid config `{}`: {message}", path.display())]
    Config { path: PathBuf, message: String },

    #[error("`{path}` looks like a credential ({kind}) and would enter the build context of `{service}`{}", hint_line(self))]
    SecretInContext {
        /// Relative to the monorepo root.
        path: String,
        kind: &'static str,
        service: String,
    },

    #[error(transparent)]
    Cache(#[from] cache::Error),

    /// A free-form message; a hint, if any, follows it after `\n  hint: `.
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The hint of an error as its message ends: `\n  hint: …`, or nothing.
fn hint_line(e: &Error) -> String {
    e.hint_text()
        .map(|h| format!("\n  hint: {h}"))
        .unwrap_or_default()
}

/// How a free-form message ([`Error::Other`]) carries its hint.
const HINT_SEPARATOR: &str = "\n  hint: ";

impl Error {
    /// The file the error is about, when it names one (as the engine read it).
    pub fn file(&self) -> Option<&Path> {
        match self {
            Error::Io { path, .. }
            | Error::Json { path, .. }
            | Error::Yaml { path, .. }
            | Error::Lockfile { path, .. }
            | Error::Dockerfile { path, .. }
            | Error::DockerIgnore { path, .. }
            | Error::Package { path, .. }
            | Error::UnknownWorkspaceDependency { path, .. }
            | Error::SymlinkOutsideRoot { path, .. }
            | Error::Config { path, .. } => Some(path),
            Error::DuplicatePackage { second, .. } => Some(second),
            Error::SecretInContext { path, .. } => Some(Path::new(path.as_str())),
            Error::MissingCopySource { dockerfile, .. } => Some(dockerfile),
            Error::NoWorkspace { root, .. } => Some(root),
            Error::Cache(e) => e.path(),
            Error::Cycle { .. }
            | Error::InvalidImageName { .. }
            | Error::UnknownService { .. }
            | Error::Other(_) => None,
        }
    }

    /// The line of [`Error::file`] the error is about (1-based), where known.
    pub fn line(&self) -> Option<usize> {
        match self {
            Error::Json { line, .. }
            | Error::Dockerfile { line, .. }
            | Error::DockerIgnore { line, .. }
            | Error::MissingCopySource { line, .. } => Some(*line),
            Error::Yaml { line, .. } => *line,
            _ => None,
        }
    }

    /// The column of [`Error::line`] (1-based), where known.
    pub fn column(&self) -> Option<usize> {
        match self {
            Error::Json { column, .. } => Some(*column),
            _ => None,
        }
    }

    /// What to do about it, when there is something to say.
    pub fn hint(&self) -> Option<String> {
        self.hint_text()
    }

    /// The message without its hint.
    pub fn message(&self) -> String {
        let full = self.to_string();
        match self {
            Error::Other(m) => m
                .split_once(HINT_SEPARATOR)
                .map(|(m, _)| m.to_string())
                .unwrap_or_else(|| m.clone()),
            _ => {
                let hint = hint_line(self);
                match full.strip_suffix(hint.as_str()) {
                    Some(m) if !hint.is_empty() => m.to_string(),
                    _ => full,
                }
            }
        }
    }

    fn hint_text(&self) -> Option<String> {
        let fixed = match self {
            Error::Json { .. } => {
                "fix the syntax of this file; every workspace `package.json` must be valid JSON"
            }
            Error::Yaml { hint, .. } => hint,
            Error::Lockfile { .. } => "run `pnpm install` to regenerate it",
            Error::DuplicatePackage { .. } => {
                "rename one of them; package names must be unique in a workspace"
            }
            Error::UnknownWorkspaceDependency { .. } => {
                "add the package to `pnpm-workspace.yaml`, fix the name, or use a registry version"
            }
            Error::Cycle { .. } => "break the cycle; images are built in dependency order",
            Error::InvalidImageName { .. } => {
                "image names use lowercase letters, digits and the separators `.`, `_`, `__`, `-` (set `image` for it in `images.toml` to choose another)"
            }
            Error::SymlinkOutsideRoot { .. } => {
                "build contexts hold only files under the root; copy the file in or remove the link"
            }
            Error::UnknownService { known, .. } if !known.is_empty() => {
                return Some(format!("the services are: {}", known.join(", ")))
            }
            Error::NoWorkspace { .. } => "run from the monorepo root or pass `--root DIR`",
            Error::SecretInContext { path, .. } => {
                return Some(format!(
                    "keep it out with a `.dockerignore` pattern, or, if it is meant to be there (a test fixture), list it in images.toml: `[secrets] allow = [\"{path}\"]`"
                ))
            }
            Error::Cache(e) => return e.hint().map(str::to_string),
            // A free-form message carries its hint after the separator (see `Error::Other`).
            Error::Other(m) => return m.split_once(HINT_SEPARATOR).map(|(_, h)| h.to_string()),
            _ => return None,
        };
        Some(fixed.to_string())
    }

    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parts_of_an_error_make_its_message() {
        let e = Error::Json {
            path: PathBuf::from("/m/services/a/package.json"),
            line: 3,
            column: 14,
            message: "expected `,`".into(),
        };
        assert_eq!(
            e.to_string(),
            "invalid JSON in `/m/services/a/package.json` at line 3, column 14: expected `,`\n  hint: fix the syntax of this file; every workspace `package.json` must be valid JSON"
        );
        assert_eq!(
            e.message(),
            "invalid JSON in `/m/services/a/package.json` at line 3, column 14: expected `,`"
        );
        assert_eq!(e.file(), Some(Path::new("/m/services/a/package.json")));
        assert_eq!((e.line(), e.column()), (Some(3), Some(14)));
        assert!(e.hint().is_some_and(|h| h.starts_with("fix the syntax")));

        let other = Error::Other("no base\n  hint: pass --base".into());
        assert_eq!(other.message(), "no base");
        assert_eq!(other.hint().as_deref(), Some("pass --base"));
        assert_eq!(other.file(), None);

        let unknown = Error::UnknownService {
            name: "x".into(),
            known: Vec::new(),
        };
        assert_eq!(unknown.hint(), None);
        assert_eq!(unknown.to_string(), "unknown service `x`");
        assert_eq!(unknown.message(), "unknown service `x`");
        let known = Error::UnknownService {
            name: "x".into(),
            known: vec!["a".into(), "b".into()],
        };
        assert_eq!(
            known.to_string(),
            "unknown service `x`\n  hint: the services are: a, b"
        );
    }
}
