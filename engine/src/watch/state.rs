//! The watch's model of the monorepo: the current [`Analysis`] (every context's files and
//! digests, every key) and how a batch of changed paths moves it forward.
//!
//! Two ways, chosen per batch:
//!
//! - **in place**, when every relevant path is a file some context already holds and it is still a
//!   regular file: only those files are re-read and hashed, the contexts that hold them get a new
//!   digest, and the keys are recomputed in DAG order. No walk, no discovery.
//! - **re-analysis** (`pipeline::analyze`, with the persisted stat cache, so only files whose
//!   stat changed are read) for everything else: a workspace file (`package.json`, the workspace
//!   file, the lockfile, `images.toml`, an ignore file, the template, a Dockerfile), a file added,
//!   removed or replaced, a directory created, removed or renamed, a rescan.
//!
//! Paths that no context can hold (ignored everywhere, outside every context, or gone again
//! before the batch was handled, like vim's `4913` probe) change nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::context::{self, Source};
use crate::digest::ImageKey;
use crate::dockerignore::DockerIgnore;
use crate::hash::{self, FileStat, HashStats};
use crate::pipeline::{self, Analysis};
use crate::workspace::{LOCKFILE, WORKSPACE_FILE};
use crate::Result;

use super::fswatch::Prune;

/// An image whose key a batch changed.
#[derive(Debug, Clone)]
pub struct Changed {
    pub service: String,
    pub new: Option<ImageKey>,
    /// The file that changed it: the first changed path of its context, else the workspace file
    /// that made the engine look again.
    pub trigger: String,
    /// How many of the batch's paths its context holds (held, or held before).
    pub files: usize,
}

/// What one batch did to the state.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// The paths that mattered, in the order they changed.
    pub relevant: Vec<String>,
    /// Why the engine re-analysed, when it did.
    pub reanalysed: Option<String>,
    pub hash_stats: HashStats,
    pub changed: Vec<Changed>,
    pub duration: Duration,
}

/// How a batch is to be handled.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    InPlace(Vec<String>),
    Reanalyse {
        why: String,
        trigger: Option<String>,
    },
}

pub struct State {
    pub opts: pipeline::Options,
    pub analysis: Analysis,
    /// Disk files of the contexts: path -> (position in `analysis.images`, position in its files).
    index: HashMap<String, Vec<(usize, usize)>>,
    /// Directories a new file may join a context in (closures and `COPY` sources).
    covered: Vec<String>,
    /// The contexts' ignore matchers (empty when some context has none).
    ignores: Vec<Arc<DockerIgnore>>,
    /// Each service's Dockerfile, and the template.
    workspace_files: HashSet<String>,
    dockerfile_name: String,
    /// Which directories the watch skips.
    pub prune: Prune,
}

impl State {
    /// A first analysis.
    pub fn new(opts: pipeline::Options) -> Result<State> {
        let analysis = pipeline::analyze(&opts)?;
        let mut s = State {
            opts,
            analysis,
            index: HashMap::new(),
            covered: Vec::new(),
            ignores: Vec::new(),
            workspace_files: HashSet::new(),
            dockerfile_name: String::new(),
            prune: Prune::default(),
        };
        s.derive();
        Ok(s)
    }

    /// Every image's key, by service name.
    pub fn keys(&self) -> BTreeMap<String, String> {
        self.analysis
            .images
            .iter()
            .map(|i| {
                (
                    self.analysis.ws.services[i.service].name.clone(),
                    i.key.to_hex(),
                )
            })
            .collect()
    }

    fn typed_keys(&self) -> BTreeMap<String, ImageKey> {
        let ws = &self.analysis.ws;
        self.analysis
            .images
            .iter()
            .map(|i| (ws.services[i.service].name.clone(), i.key))
            .collect()
    }

    /// Recomputes what is derived from the analysis: the index, the covered directories, the
    /// ignore matchers, the workspace files and the prune rules.
    fn derive(&mut self) {
        let a = &self.analysis;
        let ws = &a.ws;
        let mut index: HashMap<String, Vec<(usize, usize)>> = HashMap::new();
        let mut covered = BTreeSet::new();
        let mut ignore_files = BTreeSet::new();
        let mut unignored = false;
        for (i, img) in a.images.iter().enumerate() {
            for (j, f) in img.context.files.iter().enumerate() {
                if matches!(f.source, Source::Disk) && !f.dir {
                    index.entry(f.path.to_string()).or_default().push((i, j));
                }
            }
            // Where the context's sources could take in a new file (`.`: anywhere).
            covered.extend(img.context.covers.iter().cloned());
            match &img.context.dockerignore {
                Some(f) => {
                    ignore_files.insert(f.clone());
                }
                None => unignored = true,
            }
        }
        let mut ignores = Vec::new();
        if !unignored {
            for f in &ignore_files {
                let p = ws.root.join(f);
                match std::fs::read_to_string(&p)
                    .ok()
                    .and_then(|t| DockerIgnore::parse(&p, &t).ok())
                {
                    Some(m) => ignores.push(Arc::new(m)),
                    // Unreadable now: prune nothing by ignore rules, to be safe.
                    None => {
                        ignores.clear();
                        break;
                    }
                }
            }
        }
        let template = ws.config.images.template.clone();
        let mut workspace_files: HashSet<String> =
            ws.services.iter().map(|s| s.dockerfile.clone()).collect();
        workspace_files.insert(template.clone());

        // Never watched: the cache directory (ours) and `.git`; always watched: package
        // directories, their parents, and the template's.
        let mut never = vec![".git".to_string()];
        if let Some(rel) = relative_inside(&ws.root, &a.cache_dir) {
            never.push(rel);
        }
        let mut keep = BTreeSet::new();
        let mut add_with_parents = |d: &str| {
            let mut d = d.to_string();
            loop {
                keep.insert(d.clone());
                match d.rsplit_once('/') {
                    Some((parent, _)) => d = parent.to_string(),
                    None => break,
                }
            }
        };
        for p in &ws.packages {
            if p.dir != "." {
                add_with_parents(&p.dir);
            }
        }
        if let Some((dir, _)) = template.rsplit_once('/') {
            add_with_parents(dir);
        }

        self.dockerfile_name = ws.config.images.dockerfile.clone();
        self.index = index;
        self.covered = covered.into_iter().collect();
        self.prune = Prune {
            never,
            ignores: ignores.clone(),
            keep,
        };
        self.ignores = ignores;
        self.workspace_files = workspace_files;
    }

    /// Whether a change to `rel` calls for discovering the workspace again.
    fn is_workspace_file(&self, rel: &str) -> bool {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        name == "package.json"
            || name.ends_with(".dockerignore")
            || name == self.dockerfile_name
            || rel == WORKSPACE_FILE
            || rel == LOCKFILE
            || rel == crate::config::CONFIG_FILE
            || self.workspace_files.contains(rel)
    }

    /// Whether a file that no context holds yet could join one.
    fn may_join(&self, rel: &str) -> bool {
        let top = !rel.contains('/');
        let under = self.covered.iter().any(|d| {
            d == "."
                || rel
                    .strip_prefix(d.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        });
        if !top && !under {
            return false;
        }
        self.ignores.is_empty() || !self.ignores.iter().all(|i| i.is_excluded(rel))
    }

    /// Decides how to handle `paths` (relative, deduplicated, in order); `is_dir_watched` tells
    /// whether a path was a watched directory.
    fn route(
        &self,
        paths: &[String],
        is_dir_watched: &dyn Fn(&str) -> bool,
    ) -> (Route, Vec<String>) {
        let root = &self.analysis.ws.root;
        let mut relevant = Vec::new();
        let mut in_place = Vec::new();
        let mut reanalyse: Option<(String, Option<String>)> = None;
        for p in paths {
            if self.prune.is_never(p) {
                continue;
            }
            let meta = std::fs::symlink_metadata(root.join(p)).ok();
            if self.is_workspace_file(p) {
                relevant.push(p.clone());
                reanalyse.get_or_insert_with(|| (format!("`{p}` changed"), Some(p.clone())));
                continue;
            }
            if let Some(held) = self.index.get(p) {
                relevant.push(p.clone());
                let was_symlink = held
                    .first()
                    .map(|&(i, j)| self.analysis.images[i].context.files[j].symlink)
                    .unwrap_or(false);
                match &meta {
                    Some(m) if m.file_type().is_file() && !was_symlink => in_place.push(p.clone()),
                    Some(_) => {
                        reanalyse.get_or_insert_with(|| (format!("`{p}` was replaced"), None));
                    }
                    None => {
                        reanalyse.get_or_insert_with(|| (format!("`{p}` was removed"), None));
                    }
                }
                continue;
            }
            let is_dir = meta.as_ref().is_some_and(|m| m.file_type().is_dir());
            if is_dir || is_dir_watched(p) {
                if is_dir && self.prune.skips(p) {
                    continue;
                }
                relevant.push(p.clone());
                reanalyse.get_or_insert_with(|| {
                    let what = if is_dir { "appeared" } else { "went away" };
                    (format!("directory `{p}` {what}"), None)
                });
                continue;
            }
            // A file no context holds: one that came and went (an editor's temporary file)
            // changes nothing; a new one matters if a context could hold it.
            if meta.is_some() && self.may_join(p) {
                relevant.push(p.clone());
                reanalyse.get_or_insert_with(|| (format!("`{p}` was added"), None));
            }
        }
        let route = match reanalyse {
            Some((why, trigger)) => Route::Reanalyse { why, trigger },
            None => Route::InPlace(in_place),
        };
        (route, relevant)
    }

    /// Applies one batch of changed paths (relative, deduplicated, in order). `force` re-analyses
    /// whatever the paths (a rescan, or a previous analysis that failed).
    pub fn apply(
        &mut self,
        paths: &[String],
        force: Option<String>,
        is_dir_watched: &dyn Fn(&str) -> bool,
    ) -> Result<Applied> {
        let t = Instant::now();
        let (mut route, relevant) = self.route(paths, is_dir_watched);
        // Forced (a rescan, or a last analysis that failed): analyse again, keeping the paths'
        // own reason when they have one.
        if let (Some(why), Route::InPlace(_)) = (force, &route) {
            route = Route::Reanalyse { why, trigger: None };
        }
        let mut applied = Applied {
            relevant,
            ..Applied::default()
        };
        match route {
            Route::InPlace(files) if files.is_empty() => {}
            Route::InPlace(files) => match self.update_in_place(&files)? {
                Some(stats) => {
                    applied.hash_stats = stats.0;
                    applied.changed = stats.1;
                }
                // A file turned out not to be a plain file any more: look again.
                None => {
                    applied.reanalysed = Some("a file changed kind".to_string());
                    applied.changed = self.reanalyse(&applied.relevant, None)?;
                    applied.hash_stats = self.analysis.hash_stats;
                }
            },
            Route::Reanalyse { why, trigger } => {
                applied.reanalysed = Some(why);
                applied.changed = self.reanalyse(&applied.relevant, trigger)?;
                applied.hash_stats = self.analysis.hash_stats;
            }
        }
        applied.duration = t.elapsed();
        Ok(applied)
    }

    /// Re-hashes `files` (all held by some context) and updates the contexts and keys. `None`
    /// when one of them is no longer a regular file.
    fn update_in_place(&mut self, files: &[String]) -> Result<Option<(HashStats, Vec<Changed>)>> {
        let root = self.analysis.ws.root.clone();
        let hashed: Vec<Option<(FileStat, crate::digest::FileDigest, u64)>> = files
            .par_iter()
            .map(|p| {
                let abs = root.join(p);
                let meta = std::fs::symlink_metadata(&abs).ok()?;
                if !meta.file_type().is_file() {
                    return None;
                }
                let stat = FileStat::from_metadata(&meta);
                let (digest, n) = hash::hash_path(&abs, &stat).ok()?;
                Some((stat, digest, n))
            })
            .collect();
        if hashed.iter().any(Option::is_none) {
            return Ok(None);
        }
        let mut stats = HashStats {
            files: files.len(),
            ..HashStats::default()
        };
        let mut dirty: BTreeMap<usize, String> = BTreeMap::new();
        let mut counts: HashMap<usize, usize> = HashMap::new();
        for (p, h) in files.iter().zip(hashed.into_iter().flatten()) {
            let (stat, digest, n) = h;
            stats.hashed += 1;
            stats.bytes_read += n;
            let mode = context::normal_mode(&stat);
            for &(i, j) in self.index.get(p).map(Vec::as_slice).unwrap_or(&[]) {
                *counts.entry(i).or_default() += 1;
                let f = &mut self.analysis.images[i].context.files[j];
                if f.digest != digest || f.mode != mode || f.size != stat.size {
                    f.digest = digest;
                    f.mode = mode;
                    f.size = stat.size;
                    dirty.entry(i).or_insert_with(|| p.clone());
                }
            }
        }
        let Analysis { ws, images, .. } = &mut self.analysis;
        for &i in dirty.keys() {
            let ctx = &mut images[i].context;
            ctx.digest = context::context_digest(&ctx.files);
            images[i].manifest.context = ctx.digest;
        }
        // Keys in DAG order (the images are), so an image built FROM another gets its new key.
        let mut changed = Vec::new();
        let mut keys: HashMap<String, ImageKey> = HashMap::new();
        let mut from_changed: Option<String> = None;
        for (i, img) in images.iter_mut().enumerate() {
            let name = ws.services[img.service].name.clone();
            for (dep, k) in img.manifest.from_images.iter_mut() {
                if let Some(nk) = keys.get(dep) {
                    *k = *nk;
                }
            }
            let old = img.key;
            img.key = img.manifest.key();
            if img.key != old {
                let trigger = dirty
                    .get(&i)
                    .cloned()
                    .or_else(|| from_changed.clone())
                    .unwrap_or_default();
                from_changed.get_or_insert(trigger.clone());
                changed.push(Changed {
                    service: name.clone(),
                    new: Some(img.key),
                    trigger,
                    files: counts.get(&i).copied().unwrap_or(0),
                });
            }
            keys.insert(name, img.key);
        }
        self.analysis.hash_stats = stats;
        Ok(Some((stats, changed)))
    }

    /// Runs the whole front of the pipeline again and says which keys moved.
    fn reanalyse(&mut self, relevant: &[String], trigger: Option<String>) -> Result<Vec<Changed>> {
        let old_keys = self.typed_keys();
        let old_files: HashMap<String, HashSet<String>> = self.files_by_service();
        self.analysis = pipeline::analyze(&self.opts)?;
        self.derive();
        let new_keys = self.typed_keys();
        let new_files = self.files_by_service();
        let names: BTreeSet<&String> = old_keys.keys().chain(new_keys.keys()).collect();
        let empty = HashSet::new();
        let mut changed = Vec::new();
        for name in names {
            let (old, new) = (old_keys.get(name), new_keys.get(name));
            if old == new {
                continue;
            }
            let (of, nf) = (
                old_files.get(name).unwrap_or(&empty),
                new_files.get(name).unwrap_or(&empty),
            );
            let held: Vec<&String> = relevant
                .iter()
                .filter(|p| of.contains(*p) || nf.contains(*p))
                .collect();
            let trigger = held
                .first()
                .map(|p| p.to_string())
                .or_else(|| trigger.clone())
                .or_else(|| relevant.first().cloned())
                .unwrap_or_else(|| "(rescan)".to_string());
            changed.push(Changed {
                service: name.clone(),
                new: new.copied(),
                trigger,
                files: held.len(),
            });
        }
        // In the order of the DAG.
        let order: HashMap<String, usize> = self
            .analysis
            .images
            .iter()
            .enumerate()
            .map(|(i, img)| (self.analysis.ws.services[img.service].name.clone(), i))
            .collect();
        changed.sort_by_key(|c| order.get(&c.service).copied().unwrap_or(usize::MAX));
        Ok(changed)
    }

    fn files_by_service(&self) -> HashMap<String, HashSet<String>> {
        let ws = &self.analysis.ws;
        self.analysis
            .images
            .iter()
            .map(|img| {
                (
                    ws.services[img.service].name.clone(),
                    img.context
                        .files
                        .iter()
                        .map(|f| f.path.to_string())
                        .collect(),
                )
            })
            .collect()
    }
}

/// `path` relative to `root` when it lies inside it (both made canonical where they exist).
fn relative_inside(root: &Path, path: &Path) -> Option<String> {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let rel = path.strip_prefix(root).ok()?;
    let s = rel.to_str()?.to_string();
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }

    fn fixture() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = dir.path();
        write(r, "package.json", "{\"name\":\"fx\",\"private\":true}\n");
        write(r, "pnpm-workspace.yaml", "packages:\n  - 'services/*'\n");
        write(r, ".dockerignore", "**/node_modules\n**/*.md\n");
        for s in ["a", "b"] {
            write(
                r,
                &format!("services/{s}/package.json"),
                &format!("{{\"name\":\"@fx/{s}\",\"version\":\"1.0.0\"}}\n"),
            );
            write(r, &format!("services/{s}/src/index.ts"), "1\n");
            write(
                r,
                &format!("services/{s}/Dockerfile"),
                &format!("FROM node:18-alpine\nCOPY services/{s}/ /app/\n"),
            );
        }
        dir
    }

    fn state(root: &Path) -> State {
        let mut o = pipeline::Options::new(root);
        o.cache_dir = Some(root.join(".images-cache"));
        State::new(o).expect("analyze")
    }

    fn cold(root: &Path) -> BTreeMap<String, String> {
        state(root).keys()
    }

    #[test]
    fn routes_each_kind_of_path() {
        let dir = fixture();
        let r = dir.path();
        let s = state(r);
        let no_dirs = |_: &str| false;
        let route = |paths: &[&str]| {
            let v: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
            s.route(&v, &no_dirs).0
        };
        assert_eq!(
            route(&["services/a/src/index.ts"]),
            Route::InPlace(vec!["services/a/src/index.ts".into()])
        );
        // Gone again (vim's probe), ignored everywhere, or outside every context: nothing.
        write(r, "services/a/README.md", "x");
        write(r, "docs/notes.txt", "x");
        assert_eq!(
            route(&["services/a/4913", "services/a/README.md", "docs/notes.txt"]),
            Route::InPlace(vec![])
        );
        // The workspace's own files.
        assert!(matches!(
            route(&["services/b/package.json"]),
            Route::Reanalyse { .. }
        ));
        assert!(matches!(route(&[".dockerignore"]), Route::Reanalyse { .. }));
        // A new file in a context, a removed one.
        write(r, "services/b/src/new.ts", "x");
        assert!(matches!(
            route(&["services/b/src/new.ts"]),
            Route::Reanalyse { .. }
        ));
        std::fs::remove_file(r.join("services/a/src/index.ts")).expect("rm");
        assert!(matches!(
            route(&["services/a/src/index.ts"]),
            Route::Reanalyse { .. }
        ));
    }

    #[test]
    fn in_place_updates_give_the_cold_keys() {
        let dir = fixture();
        let r = dir.path();
        let mut s = state(r);
        let before = s.keys();
        let no_dirs = |_: &str| false;
        write(r, "services/a/src/index.ts", "2\n");
        let applied = s
            .apply(&["services/a/src/index.ts".to_string()], None, &no_dirs)
            .expect("apply");
        assert!(
            applied.reanalysed.is_none(),
            "a content edit is handled in place"
        );
        assert_eq!(applied.changed.len(), 1);
        assert_eq!(applied.changed[0].service, "a");
        assert_eq!(applied.changed[0].trigger, "services/a/src/index.ts");
        assert_eq!(s.keys(), cold(r));
        assert_ne!(s.keys()["a"], before["a"]);
        assert_eq!(s.keys()["b"], before["b"]);

        // The same bytes again: no key moves.
        write(r, "services/a/src/index.ts", "2\n");
        let applied = s
            .apply(&["services/a/src/index.ts".to_string()], None, &no_dirs)
            .expect("apply");
        assert!(applied.changed.is_empty());

        // A mode change is an input too.
        let p = r.join("services/b/src/index.ts");
        let mut perm = std::fs::metadata(&p).expect("stat").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(&p, perm).expect("chmod");
        let applied = s
            .apply(&["services/b/src/index.ts".to_string()], None, &no_dirs)
            .expect("apply");
        assert_eq!(applied.changed.len(), 1);
        assert_eq!(s.keys(), cold(r));

        // A service added: re-analysed, and it appears.
        write(r, "services/c/package.json", "{\"name\":\"@fx/c\"}\n");
        write(r, "services/c/Dockerfile", "FROM node:18-alpine\n");
        let applied = s
            .apply(
                &[
                    "services/c".to_string(),
                    "services/c/package.json".to_string(),
                ],
                None,
                &no_dirs,
            )
            .expect("apply");
        assert!(applied.reanalysed.is_some());
        assert_eq!(applied.changed.len(), 1);
        assert_eq!(applied.changed[0].service, "c");
        assert!(!before.contains_key("c"), "c is a new service");
        assert_eq!(s.keys(), cold(r));
    }
}
