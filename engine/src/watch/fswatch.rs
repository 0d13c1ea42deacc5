//! The file-system side of the watch: a notify watcher (inotify on Linux) on every directory of
//! the monorepo that some build context could hold, its events turned into changed paths, and the
//! errors that matter (a queue overflow, a watch limit) turned into messages that say what to do.
//!
//! Directories are watched one by one (non-recursively) rather than with notify's recursive mode,
//! so that what no context contains (`.git`, the cache directory, `node_modules` and whatever the
//! `.dockerignore` files exclude) costs no inotify watch and sends no event. New directories are
//! picked up by [`FsWatch::sync`], which the loop runs after any directory event.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecursiveMode, Watcher as _};

use crate::dockerignore::DockerIgnore;
use crate::{Error, Result};

/// One changed path, as notify reported it.
#[derive(Debug, Clone)]
pub struct FsChange {
    pub path: PathBuf,
    /// When the event reached the engine (for the save-to-build latency).
    pub at: Instant,
}

/// What the notify thread sends to the loop.
#[derive(Debug)]
pub enum FsMsg {
    Change(FsChange),
    /// Events were lost (the kernel queue overflowed): only a full rescan is safe.
    Overflow(String),
    /// The watcher reported an error (a watch that could not be added, say).
    Error(String),
}

/// Fault injection for tests: lose events as an overflowing queue would, then report the
/// overflow. Nothing else in the engine sets these.
#[derive(Debug, Default)]
pub struct Faults {
    pub(crate) drop_events: AtomicBool,
    pub(crate) overflow: AtomicBool,
}

/// What decides which directories are not watched.
#[derive(Debug, Clone, Default)]
pub struct Prune {
    /// Relative directories never watched (the cache directory, `.git`).
    pub never: Vec<String>,
    /// The ignore matchers of the contexts: a directory every one of them excludes (with nothing
    /// re-included below) is not watched. Empty when some context has no ignore file.
    pub ignores: Vec<Arc<DockerIgnore>>,
    /// Directories always watched (workspace packages and their parents), ignore rules or not:
    /// their `package.json` decides the workspace.
    pub keep: BTreeSet<String>,
}

impl Prune {
    /// Whether the directory `rel` (and everything below it) can be left unwatched.
    pub fn skips(&self, rel: &str) -> bool {
        if self
            .never
            .iter()
            .any(|n| rel == n || rel.starts_with(&format!("{n}/")))
        {
            return true;
        }
        if self.keep.contains(rel) || self.ignores.is_empty() {
            return false;
        }
        self.ignores
            .iter()
            .all(|i| i.is_excluded(rel) && !i.may_reinclude_below(rel))
    }

    /// Whether a changed path lies where nothing is watched on purpose (events for it are noise).
    pub fn is_never(&self, rel: &str) -> bool {
        self.never
            .iter()
            .any(|n| rel == n || rel.starts_with(&format!("{n}/")))
    }
}

/// The running notify watcher and the directories it watches.
pub struct FsWatch {
    watcher: notify::RecommendedWatcher,
    root: PathBuf,
    /// Watched directories, relative (`.` for the root).
    watched: BTreeSet<String>,
    /// Why some directories are not watched (a watch limit), if so: the loop then rescans
    /// periodically, so state never goes stale.
    pub degraded: Option<String>,
}

/// What a sync did.
#[derive(Debug, Default)]
pub struct SyncReport {
    pub added: usize,
    pub removed: usize,
}

impl FsWatch {
    /// Starts a watcher whose events go to `send`. Watches nothing yet: see [`FsWatch::sync`].
    pub fn start(
        root: &Path,
        send: impl Fn(FsMsg) + Send + 'static,
        faults: Arc<Faults>,
    ) -> Result<FsWatch> {
        let handler = move |res: notify::Result<notify::Event>| {
            if faults.drop_events.load(Ordering::SeqCst) {
                return;
            }
            let msg = match res {
                Ok(ev) if ev.need_rescan() => FsMsg::Overflow(
                    "the kernel's file event queue overflowed; events were lost".to_string(),
                ),
                Ok(ev) => {
                    if !is_change(&ev.kind) {
                        return;
                    }
                    let at = Instant::now();
                    for path in ev.paths {
                        send(FsMsg::Change(FsChange { path, at }));
                    }
                    return;
                }
                Err(e) => FsMsg::Error(describe_error(&e)),
            };
            send(msg);
        };
        let watcher = notify::recommended_watcher(handler).map_err(|e| start_error(root, &e))?;
        Ok(FsWatch {
            watcher,
            root: root.to_path_buf(),
            watched: BTreeSet::new(),
            degraded: None,
        })
    }

    pub fn is_watched(&self, rel: &str) -> bool {
        self.watched.contains(rel)
    }

    pub fn watched_count(&self) -> usize {
        self.watched.len()
    }

    /// Brings the set of watched directories in line with the tree: unwatches those gone or now
    /// pruned, watches new ones, and re-watches `touched` directories (a directory deleted and
    /// made again, or moved, is a new inode). A watch limit is fatal when `fatal_limit` (at
    /// start), otherwise it marks the watch degraded.
    pub fn sync(
        &mut self,
        prune: &Prune,
        touched: &BTreeSet<String>,
        fatal_limit: bool,
    ) -> Result<SyncReport> {
        let want = dirs_to_watch(&self.root, prune)?;
        let mut report = SyncReport::default();
        let gone: Vec<String> = self.watched.difference(&want).cloned().collect();
        for rel in gone {
            let _ = self.watcher.unwatch(&self.abs(&rel));
            self.watched.remove(&rel);
            report.removed += 1;
        }
        self.degraded = None;
        for rel in &want {
            if self.watched.contains(rel) && !touched.contains(rel) {
                continue;
            }
            match self
                .watcher
                .watch(&self.abs(rel), RecursiveMode::NonRecursive)
            {
                Ok(()) => {
                    if self.watched.insert(rel.clone()) {
                        report.added += 1;
                    }
                }
                Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
                    let msg = limit_message(&format!(" while watching {} directories", want.len()));
                    if fatal_limit {
                        return Err(Error::Other(format!(
                            "cannot watch `{}`: {msg}",
                            self.root.display()
                        )));
                    }
                    self.degraded = Some(msg);
                    break;
                }
                // Gone since the walk (deleted meanwhile): the next sync sees it.
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    let msg = describe_error(&e);
                    if fatal_limit {
                        return Err(Error::Other(format!(
                            "cannot watch `{}`: {msg}",
                            self.root.join(rel).display()
                        )));
                    }
                    self.degraded = Some(msg);
                }
            }
        }
        Ok(report)
    }

    fn abs(&self, rel: &str) -> PathBuf {
        if rel == "." {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }
}

/// The kinds of event that can change a context: content, metadata, names, creation, removal.
/// Reads (ours included: hashing and streaming a context open every file) are not changes.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Any | EventKind::Other => false,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => true,
    }
}

fn is_not_found(e: &notify::Error) -> bool {
    match &e.kind {
        notify::ErrorKind::PathNotFound => true,
        notify::ErrorKind::Io(io) => io.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    }
}

/// The directories to watch, relative (`.` first): every directory below the root that is not
/// pruned, symlinks not followed (a context walk does not follow them either).
pub fn dirs_to_watch(root: &Path, prune: &Prune) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    out.insert(".".to_string());
    let mut stack = vec![".".to_string()];
    while let Some(rel) = stack.pop() {
        let abs = if rel == "." {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        let entries = match std::fs::read_dir(&abs) {
            Ok(e) => e,
            // Removed since it was listed: not watched, and its parent's event says so.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && rel != "." => continue,
            Err(e) => return Err(Error::io("read directory", abs, e)),
        };
        for entry in entries.flatten() {
            let Ok(ft) = entry.file_type() else { continue };
            if !ft.is_dir() {
                continue;
            }
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let child = if rel == "." {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            if prune.skips(&child) {
                continue;
            }
            out.insert(child.clone());
            stack.push(child);
        }
    }
    Ok(out)
}

fn read_limit(name: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/sys/fs/inotify/{name}"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// What to say when the watch limit is reached; `detail` goes after the first sentence.
pub fn limit_message(detail: &str) -> String {
    let limit = read_limit("max_user_watches")
        .map(|n| format!(" (fs.inotify.max_user_watches is {n})"))
        .unwrap_or_default();
    format!(
        "the inotify watch limit is reached{limit}{detail}\n  hint: raise it, e.g. `sudo sysctl fs.inotify.max_user_watches=524288` (persist it in /etc/sysctl.d/), stop other watchers, or exclude big directories in `.dockerignore`"
    )
}

/// A notify error as a message that says what to change.
pub fn describe_error(e: &notify::Error) -> String {
    let paths = if e.paths.is_empty() {
        String::new()
    } else {
        format!(
            " (`{}`)",
            e.paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join("`, `")
        )
    };
    match &e.kind {
        notify::ErrorKind::MaxFilesWatch => limit_message(&paths),
        notify::ErrorKind::Io(io) if io.raw_os_error() == Some(libc::EMFILE) => format!(
            "too many inotify instances{paths}: {io}\n  hint: raise `fs.inotify.max_user_instances` (`sudo sysctl fs.inotify.max_user_instances=512`) or stop other watchers"
        ),
        _ => format!("file watch error{paths}: {e}"),
    }
}

fn start_error(root: &Path, e: &notify::Error) -> Error {
    Error::Other(format!(
        "cannot start watching `{}`: {}",
        root.display(),
        describe_error(e)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_errors_say_what_to_change() {
        let e = notify::Error::new(notify::ErrorKind::MaxFilesWatch)
            .add_path(PathBuf::from("/repo/services"));
        let msg = describe_error(&e);
        assert!(msg.contains("fs.inotify.max_user_watches"), "{msg}");
        assert!(msg.contains("/repo/services"), "{msg}");
        let e = notify::Error::io(std::io::Error::from_raw_os_error(libc::EMFILE));
        let msg = describe_error(&e);
        assert!(msg.contains("fs.inotify.max_user_instances"), "{msg}");
    }

    #[test]
    fn pruned_directories_are_not_watched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        for d in [
            ".git/objects",
            ".images-cache/records",
            "services/a/src",
            "services/a/node_modules/x",
            "services/a/dist",
            "docs",
        ] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        let ignore = DockerIgnore::parse(Path::new(".dockerignore"), "**/node_modules\n**/dist\n")
            .expect("parse");
        let prune = Prune {
            never: vec![".git".into(), ".images-cache".into()],
            ignores: vec![Arc::new(ignore)],
            keep: BTreeSet::new(),
        };
        let dirs: Vec<String> = dirs_to_watch(root, &prune)
            .expect("walk")
            .into_iter()
            .collect();
        assert_eq!(
            dirs,
            vec![".", "docs", "services", "services/a", "services/a/src"]
        );
        // A context without an ignore file: only the never-watched ones are pruned.
        let prune = Prune {
            ignores: Vec::new(),
            ..prune
        };
        assert!(dirs_to_watch(root, &prune)
            .expect("walk")
            .contains("services/a/node_modules/x"));
    }
}
