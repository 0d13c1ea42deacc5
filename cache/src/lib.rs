//! The content-addressed store of what was built.

/// Errors of the cache.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to {action} `{}`: {source}", path.display())]
    Io {
        action: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}
