//! Affected: the services a git diff touches, from the merge base of `base` and `head` (or the
//! working tree, uncommitted changes included). Both ends are analysed in full, so a service is
//! affected when a path its context held at either end changed, or its key differs (a Dockerfile,
//! a build argument, the pruned lockfile); deletions and renames count. A shallow clone that
//! lacks the merge base is an error, or, when asked, an explicit and reported fallback to all.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::pipeline::{analyze, Analysis, Options};
use crate::{Error, Result};

#[derive(Debug, Clone)]
pub struct AffectedOptions {
    pub root: PathBuf,
    pub base: String,
    /// A commit; `None` compares with the working tree (uncommitted and untracked files included).
    pub head: Option<String>,
    /// When the merge base cannot be found (a shallow clone): report every service, saying so,
    /// instead of failing.
    pub fallback_all: bool,
}

/// The answer, as `affected --format json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Affected {
    pub base: String,
    pub head: String,
    /// The commit the diff starts from.
    pub merge_base: Option<String>,
    /// Changed paths, relative to the monorepo root (both ends of a rename).
    pub changed: Vec<String>,
    /// Affected services at the head, sorted.
    pub services: Vec<String>,
    /// Their image names, in the order of `services`.
    #[serde(skip)]
    pub images: Vec<String>,
    /// True when every service is affected because a root input changed (or by fallback).
    pub all: bool,
    /// Why `all` is true.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all_reason: Option<String>,
    /// Services of the base that the head no longer has.
    pub removed: Vec<String>,
    /// Why each service is affected.
    pub reasons: BTreeMap<String, Vec<String>>,
    /// Set when the answer is a fallback to all services.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// Services of the head whose inputs cannot be resolved: each fails alone, and is listed as
    /// affected (building it shows the error where it belongs).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<AffectedError>,
}

/// A service the head cannot analyse.
#[derive(Debug, Clone, Serialize)]
pub struct AffectedError {
    pub service: String,
    pub error: String,
    pub hint: String,
}

fn git(dir: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .map_err(|e| Error::Other(format!("failed to run git: {e}\n  hint: install git")))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(Error::Other(format!(
            "`git {}` failed with {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn git_str(dir: &Path, args: &[&str]) -> Result<String> {
    Ok(String::from_utf8_lossy(&git(dir, args)?).trim().to_string())
}

fn resolve(dir: &Path, rev: &str) -> Result<String> {
    git_str(dir, &["rev-parse", "--verify", "--quiet", &format!("{rev}^{{commit}}")]).map_err(|_| {
        Error::Other(format!(
            "unknown git revision `{rev}`\n  hint: fetch it first (e.g. `git fetch origin main`), or check the name"
        ))
    })
}

/// Writes the tree of `rev` under `prefix` into `dest` (via `git archive`), so it can be analysed.
fn materialize(top: &Path, rev: &str, prefix: &str, dest: &Path) -> Result<()> {
    let mut args = vec!["archive", "--format=tar", rev];
    if !prefix.is_empty() {
        args.push("--");
        args.push(prefix);
    }
    let tar_bytes = git(top, &args)?;
    let mut archive = tar::Archive::new(tar_bytes.as_slice());
    archive
        .unpack(dest)
        .map_err(|e| Error::io("unpack the git tree into", dest, e))?;
    Ok(())
}

fn parse_name_status(out: &[u8], prefix: &str, changed: &mut BTreeSet<String>) {
    let fields: Vec<&[u8]> = out.split(|b| *b == 0).collect();
    let mut i = 0;
    while i < fields.len() {
        let status = String::from_utf8_lossy(fields[i]).to_string();
        if status.is_empty() {
            i += 1;
            continue;
        }
        let paths = if status.starts_with('R') || status.starts_with('C') {
            2
        } else {
            1
        };
        for p in fields.iter().skip(i + 1).take(paths) {
            let p = String::from_utf8_lossy(p).to_string();
            if let Some(rel) = strip_prefix(&p, prefix) {
                changed.insert(rel);
            }
        }
        i += 1 + paths;
    }
}

fn strip_prefix(path: &str, prefix: &str) -> Option<String> {
    if prefix.is_empty() {
        return Some(path.to_string());
    }
    path.strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('/'))
        .map(str::to_string)
}

fn analysis_of(root: &Path, cache_dir: &Path) -> Result<Analysis> {
    let mut opts = Options::new(root);
    opts.cache_dir = Some(cache_dir.to_path_buf());
    analyze(&opts)
}

/// Computes the affected services.
pub fn affected(opts: &AffectedOptions) -> Result<Affected> {
    let root = opts
        .root
        .canonicalize()
        .map_err(|e| Error::io("open", &opts.root, e))?;
    let top = PathBuf::from(git_str(&root, &["rev-parse", "--show-toplevel"]).map_err(|e| {
        Error::Other(format!(
            "`{}` is not in a git repository ({e})\n  hint: `affected` compares git revisions; run it in a clone",
            root.display()
        ))
    })?);
    let top = top.canonicalize().unwrap_or(top);
    let prefix = root
        .strip_prefix(&top)
        .map(|p| p.to_string_lossy().replace('\\', "/"))
        .unwrap_or_default();
    let base_sha = resolve(&top, &opts.base)?;
    let head_sha = match &opts.head {
        Some(h) => Some(resolve(&top, h)?),
        None => None,
    };
    let head_name = opts
        .head
        .clone()
        .unwrap_or_else(|| "working tree".to_string());
    let head_rev = head_sha.clone().unwrap_or_else(|| "HEAD".to_string());

    let scratch = tempdir()?;
    let head_analysis = match &head_sha {
        None => analysis_of(&root, &scratch.join("cache-head"))?,
        Some(sha) => {
            let dir = scratch.join("head");
            materialize(&top, sha, &prefix, &dir)?;
            analysis_of(&dir.join(&prefix), &scratch.join("cache-head"))?
        }
    };

    let merge_base = git_str(&top, &["merge-base", &base_sha, &head_rev]).ok();
    let Some(merge_base) = merge_base else {
        let shallow = git_str(&top, &["rev-parse", "--is-shallow-repository"])
            .map(|s| s == "true")
            .unwrap_or(false);
        let why = if shallow {
            format!(
                "the clone is too shallow to hold the merge base of `{}` and `{head_name}`",
                opts.base
            )
        } else {
            format!("`{}` and `{head_name}` have no common history", opts.base)
        };
        if !opts.fallback_all {
            return Err(Error::Other(format!(
                "{why}\n  hint: fetch more history (`git fetch --deepen=100`, or `fetch-depth: 0` in actions/checkout), or pass `--fallback-all` to build every service"
            )));
        }
        let ws = &head_analysis.ws;
        return Ok(Affected {
            base: opts.base.clone(),
            head: head_name,
            merge_base: None,
            changed: Vec::new(),
            services: ws.services.iter().map(|s| s.name.clone()).collect(),
            images: ws.services.iter().map(|s| s.image.clone()).collect(),
            all: true,
            all_reason: Some(format!("fallback: {why}")),
            removed: Vec::new(),
            reasons: BTreeMap::new(),
            fallback: Some(why),
            errors: errors_of(&head_analysis),
        });
    };

    // The changed paths, from the merge base to the head (or the working tree).
    let mut changed = BTreeSet::new();
    match &head_sha {
        Some(h) => {
            let out = git(&top, &["diff", "--name-status", "-z", "-M", &merge_base, h])?;
            parse_name_status(&out, &prefix, &mut changed);
        }
        None => {
            let out = git(&top, &["diff", "--name-status", "-z", "-M", &merge_base])?;
            parse_name_status(&out, &prefix, &mut changed);
            let untracked = git(&top, &["ls-files", "--others", "--exclude-standard", "-z"])?;
            for p in untracked.split(|b| *b == 0).filter(|p| !p.is_empty()) {
                if let Some(rel) = strip_prefix(&String::from_utf8_lossy(p), &prefix) {
                    changed.insert(rel);
                }
            }
        }
    }

    // The base end, analysed in full (an unbuildable base counts as having no services).
    let base_dir = scratch.join("base");
    materialize(&top, &merge_base, &prefix, &base_dir)?;
    let base_root = base_dir.join(&prefix);
    // A base that cannot be analysed at all has, for this comparison, no services.
    let base_analysis = if base_root.join(crate::workspace::WORKSPACE_FILE).is_file() {
        analysis_of(&base_root, &scratch.join("cache-base")).ok()
    } else {
        None
    };

    let files_of = |a: &Analysis, service: &str| -> Option<BTreeSet<String>> {
        let s = a.ws.services.iter().position(|s| s.name == service)?;
        let img = a.image(s)?;
        Some(
            img.context
                .files
                .iter()
                .map(|f| f.path.to_string())
                .collect(),
        )
    };

    let ws = &head_analysis.ws;
    let mut reasons: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for img in &head_analysis.images {
        let svc = &ws.services[img.service];
        let head_files = files_of(&head_analysis, &svc.name).unwrap_or_default();
        let base_img = base_analysis.as_ref().and_then(|b| {
            let s = b.ws.services.iter().position(|s| s.name == svc.name)?;
            b.image(s).map(|i| (b, i))
        });
        let mut why = Vec::new();
        let failed_at_base = base_analysis
            .as_ref()
            .is_some_and(|b| b.failed.iter().any(|f| f.name == svc.name));
        match base_img {
            None if failed_at_base => {
                why.push("its inputs could not be resolved at the base".to_string())
            }
            None => why.push("a new service".to_string()),
            Some((b, bi)) => {
                let base_files = files_of(b, &svc.name).unwrap_or_default();
                let touched: Vec<&String> = changed
                    .iter()
                    .filter(|p| {
                        p.as_str() != crate::workspace::LOCKFILE
                            && (head_files.contains(*p) || base_files.contains(*p))
                    })
                    .collect();
                if bi.key != img.key {
                    let prev = bi.input_manifest(&b.ws);
                    let cur = img.input_manifest(ws);
                    why.extend(crate::plan::diff(&prev, &cur).iter().map(|r| r.to_string()));
                    if why.is_empty() {
                        why.push("its key changed".to_string());
                    }
                } else if !touched.is_empty() {
                    // Same key, yet a path of its context changed (e.g. a file renamed away and back).
                    let shown: Vec<&str> = touched.iter().take(5).map(|s| s.as_str()).collect();
                    why.push(format!("changed inputs: {}", shown.join(", ")));
                }
            }
        }
        if !why.is_empty() {
            reasons.insert(svc.name.clone(), why);
        }
    }

    // A changed root-level input of every image: everything is affected, and we say which.
    let root_input = changed.iter().find(|p| {
        !p.contains('/')
            && p.as_str() != crate::workspace::LOCKFILE
            && !head_analysis.images.is_empty()
            && head_analysis
                .images
                .iter()
                .all(|i| i.context.files.iter().any(|f| *f.path == **p))
    });
    let all_reason = root_input.map(|p| format!("`{p}` is an input of every image"));
    if let Some(r) = &all_reason {
        for s in &ws.services {
            let e = reasons.entry(s.name.clone()).or_default();
            if !e.contains(r) {
                e.push(r.clone());
            }
        }
    }

    // A service the head cannot analyse is reported, and counted as affected.
    for f in &head_analysis.failed {
        reasons.entry(f.name.clone()).or_default().push(format!(
            "its inputs cannot be resolved: {}",
            first_line(&f.error)
        ));
    }
    let mut services: Vec<String> = reasons.keys().cloned().collect();
    services.sort();
    let images = services
        .iter()
        .filter_map(|n| ws.services.iter().find(|s| &s.name == n))
        .map(|s| s.image.clone())
        .collect();
    let removed = base_analysis
        .as_ref()
        .map(|b| {
            b.ws.services
                .iter()
                .filter(|s| !ws.services.iter().any(|h| h.name == s.name))
                .map(|s| s.name.clone())
                .collect()
        })
        .unwrap_or_default();
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(Affected {
        base: opts.base.clone(),
        head: head_name,
        merge_base: Some(merge_base),
        changed: changed.into_iter().collect(),
        all: all_reason.is_some(),
        services,
        images,
        all_reason,
        removed,
        reasons,
        fallback: None,
        errors: errors_of(&head_analysis),
    })
}

fn errors_of(a: &Analysis) -> Vec<AffectedError> {
    a.failed
        .iter()
        .map(|f| AffectedError {
            service: f.name.clone(),
            error: f.error.clone(),
            hint: f.hint.clone(),
        })
        .collect()
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

fn tempdir() -> Result<PathBuf> {
    let base = std::env::temp_dir();
    for n in 0..1000u32 {
        let p = base.join(format!("kc-affected-{}-{n}", std::process::id()));
        match std::fs::create_dir(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io("create", p, e)),
        }
    }
    Err(Error::Other("could not create a temp directory".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_status_with_renames_and_prefix() {
        let out = b"M\0mono/a.txt\0R087\0mono/old.ts\0mono/new.ts\0D\0other/x\0A\0mono/s/b\0";
        let mut set = BTreeSet::new();
        parse_name_status(out, "mono", &mut set);
        let v: Vec<&str> = set.iter().map(String::as_str).collect();
        assert_eq!(v, vec!["a.txt", "new.ts", "old.ts", "s/b"]);
    }
}
