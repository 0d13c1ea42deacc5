//! Warm-up: the build stage several images of one run build identically, built once before them.
//!
//! Service Dockerfiles rendered from one template often share stages (the example compiles its
//! shared package in stages that read nothing of the service). BuildKit's cache then serves such
//! a stage to every image, but only once one build has finished it: builds running at the same
//! time each run it themselves. So when a run builds several images in parallel, the engine first
//! builds the deepest stage that the most of them share (`docker build --target <stage>` with the
//! first such image's context), and only then the images.
//!
//! Two stages are taken as shared when their instructions are the same text, FROM and `--from`
//! stages that are shared too, with the same build arguments and platform. That does not prove
//! that they read the same files (a `COPY` of a file that differs between contexts): it is only a
//! guess about where the time goes, and a wrong guess costs one build of a stage ahead of time,
//! never a wrong image. The warm-up records nothing, tags nothing (its untagged image is removed
//! afterwards), and a failed warm-up changes nothing: each image's build runs the step again and
//! reports its own error.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::dockerfile::{BaseRef, Dockerfile, Instruction};
use crate::execute::{BuildRequest, Builder};
use crate::pipeline::Analysis;
use crate::run::Event;

/// A stage to build once, first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmUp {
    /// The image (a service index) whose Dockerfile and context build the stage.
    pub leader: usize,
    /// The stage's name (`--target`).
    pub stage: String,
    /// The images of the run that share the stage, the leader first.
    pub images: Vec<usize>,
}

/// One stage of one Dockerfile, for grouping.
struct StageId {
    image: usize,
    name: String,
    /// The fingerprints of the stage and of those it depends on (built along with it).
    closure: Vec<[u8; 32]>,
}

/// The stage to warm up among the images `to_build` (service indices, in build order), if
/// at least two of them share one that runs something. Images that build FROM another image of
/// the repository are left out (that image is not built yet). Dockerfiles that cannot be read or
/// parsed are left out too: their build reports that.
pub fn plan(analysis: &Analysis, to_build: &[usize]) -> Option<WarmUp> {
    let ws = &analysis.ws;
    let mut groups: BTreeMap<[u8; 32], Vec<StageId>> = BTreeMap::new();
    for &s in to_build {
        if !analysis.graph.image_deps[s].is_empty() {
            continue;
        }
        let Some(img) = analysis.image(s) else {
            continue;
        };
        let path = ws.root.join(&ws.services[s].dockerfile);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let Ok(df) = Dockerfile::parse(&path, &text) else {
            continue;
        };
        let m = &img.manifest;
        let mut settings = blake3::Hasher::new();
        for (k, v) in &m.build_args {
            settings.update(&(k.len() as u64).to_le_bytes());
            settings.update(k.as_bytes());
            settings.update(v.as_bytes());
        }
        settings.update(format!("platform={:?}", m.platform).as_bytes());
        let prints = fingerprints(&df, &text, settings.finalize());
        let output = m
            .target
            .as_deref()
            .and_then(|t| stage_index(&df, t))
            .unwrap_or(df.stages.len() - 1);
        for (i, (print, closure, runs)) in prints.iter().enumerate() {
            let Some(name) = &df.stages[i].name else {
                continue;
            };
            if i == output || !runs {
                continue;
            }
            groups.entry(*print.as_bytes()).or_default().push(StageId {
                image: s,
                name: name.clone(),
                closure: closure.iter().map(|c| *prints[*c].0.as_bytes()).collect(),
            });
        }
    }
    // The stage whose one build serves the most builds of a stage: itself and the stages it is
    // built on, each counted for every image that shares it. Then the one more images share.
    let sharing = |p: &[u8; 32]| {
        groups
            .get(p)
            .map_or(0, |g| if g.len() >= 2 { g.len() } else { 0 })
    };
    let best = groups.values().filter(|g| g.len() >= 2).max_by_key(|g| {
        let served: usize = g[0].closure.iter().map(sharing).sum();
        (served, g.len(), std::cmp::Reverse(g[0].image))
    })?;
    Some(WarmUp {
        leader: best[0].image,
        stage: best[0].name.clone(),
        images: best.iter().map(|i| i.image).collect(),
    })
}

/// Builds the warm-up stage of `to_build` (the images the run will build, service indices), when
/// the run builds several images `jobs` at a time. Progress goes to the leader's events as steps
/// prefixed `warm-up`.
pub fn run(
    analysis: &Analysis,
    to_build: &[usize],
    builder: &dyn Builder,
    jobs: usize,
    cancel: Arc<AtomicBool>,
    work_dir: PathBuf,
    on_event: &(dyn Fn(Event) + Sync),
) {
    if jobs < 2 || to_build.len() < 2 || cancel.load(Ordering::SeqCst) {
        return;
    }
    let Some(w) = plan(analysis, to_build) else {
        return;
    };
    let ws = &analysis.ws;
    let Some(img) = analysis.image(w.leader) else {
        return;
    };
    let svc = &ws.services[w.leader];
    let req = BuildRequest {
        service: svc.name.clone(),
        root: ws.root.clone(),
        context: img.context.clone(),
        dockerfile: svc.dockerfile.clone(),
        // No key label: this is a stage, not the image of any key.
        labels: BTreeMap::new(),
        build_args: img.build_args.values().clone(),
        target: Some(w.stage.clone()),
        platform: img.platform_flag.clone(),
        // The stage mounts what the image mounts (a stage of it cannot need more).
        secrets: img.secrets.clone(),
        work_dir,
        cancel,
        layer_cache: None,
    };
    let names: Vec<&str> = w
        .images
        .iter()
        .map(|s| ws.services[*s].name.as_str())
        .collect();
    on_event(Event::Step {
        service: svc.name.clone(),
        step: format!(
            "warm-up: stage `{}`, shared by {}",
            w.stage,
            names.join(", ")
        ),
    });
    let on_line = |line: &str| {
        if let Some(step) = crate::execute::docker::step_of(line) {
            on_event(Event::Step {
                service: svc.name.clone(),
                step: format!("warm-up {step}"),
            });
        }
    };
    match builder.build(&req, &on_line) {
        Ok(out) => builder.discard(&out.image_id),
        Err(e) if !e.interrupted => on_event(Event::Step {
            service: svc.name.clone(),
            step: format!("warm-up failed ({}); the builds go on", e.message),
        }),
        Err(_) => {}
    }
}

/// For each stage: a digest of its text and of the stages it depends on (with the prelude of
/// global `ARG`s and parser directives, and `settings`), the stages that covers (itself first),
/// and whether any of them has a `RUN`.
fn fingerprints(
    df: &Dockerfile,
    text: &str,
    settings: blake3::Hash,
) -> Vec<(blake3::Hash, Vec<usize>, bool)> {
    let lines: Vec<&str> = text.lines().collect();
    let starts: Vec<usize> = df.stages.iter().map(|s| s.line).collect();
    let prelude = significant(&lines[..starts[0].saturating_sub(1).min(lines.len())], true);
    let mut memo: HashMap<usize, (blake3::Hash, Vec<usize>, bool)> = HashMap::new();
    (0..df.stages.len())
        .map(|i| fingerprint(df, &lines, &starts, &prelude, settings, i, &mut memo))
        .collect()
}

fn fingerprint(
    df: &Dockerfile,
    lines: &[&str],
    starts: &[usize],
    prelude: &str,
    settings: blake3::Hash,
    i: usize,
    memo: &mut HashMap<usize, (blake3::Hash, Vec<usize>, bool)>,
) -> (blake3::Hash, Vec<usize>, bool) {
    if let Some(v) = memo.get(&i) {
        return v.clone();
    }
    // A placeholder first: a stage cannot depend on itself or a later one (Docker's rule), but
    // a malformed file must not recurse forever.
    memo.insert(i, (blake3::Hash::from([0; 32]), vec![i], false));
    let from = starts[i].saturating_sub(1).min(lines.len());
    let to = starts
        .get(i + 1)
        .map(|l| l.saturating_sub(1))
        .unwrap_or(lines.len())
        .clamp(from, lines.len());
    let mut h = blake3::Hasher::new();
    h.update(b"kc-images warm-up stage v1\0");
    h.update(settings.as_bytes());
    h.update(prelude.as_bytes());
    h.update(b"\0");
    h.update(significant(&lines[from..to], false).as_bytes());
    let stage = &df.stages[i];
    let mut closure = vec![i];
    let mut runs = stage.instructions.iter().any(|x| x.keyword == "RUN");
    for dep in dependencies(df, i) {
        h.update(b"\0dep ");
        match dep {
            Dep::Stage(j) if j < i => {
                let (dh, dc, dr) = fingerprint(df, lines, starts, prelude, settings, j, memo);
                h.update(dh.as_bytes());
                runs |= dr;
                for c in dc {
                    if !closure.contains(&c) {
                        closure.push(c);
                    }
                }
            }
            Dep::Stage(j) => {
                h.update(format!("later stage {j}").as_bytes());
            }
            Dep::Image(r) => {
                h.update(r.as_bytes());
            }
        }
    }
    let v = (h.finalize(), closure, runs);
    memo.insert(i, v.clone());
    v
}

/// The Dockerfile's lines without blank lines and comments (in the prelude, parser directives
/// are kept: they change the build).
fn significant(lines: &[&str], prelude: bool) -> String {
    let mut out = String::new();
    for l in lines {
        let t = l.trim();
        if t.is_empty() {
            continue;
        }
        if let Some(c) = t.strip_prefix('#') {
            let c = c.trim_start().to_ascii_lowercase();
            if !(prelude && (c.starts_with("syntax") || c.starts_with("escape"))) {
                continue;
            }
        }
        out.push_str(l);
        out.push('\n');
    }
    out
}

enum Dep {
    Stage(usize),
    Image(String),
}

/// What stage `i` reads besides the context: its `FROM`, each `COPY --from` and each
/// `RUN --mount=...,from=...`.
fn dependencies(df: &Dockerfile, i: usize) -> Vec<Dep> {
    let mut out = Vec::new();
    match df.base_of(i) {
        BaseRef::Stage(j) => out.push(Dep::Stage(j)),
        BaseRef::Image(r) => out.push(Dep::Image(r.to_string())),
        BaseRef::Scratch => out.push(Dep::Image("scratch".into())),
    }
    for ins in &df.stages[i].instructions {
        for r in from_references(ins) {
            match stage_index(df, &r) {
                Some(j) => out.push(Dep::Stage(j)),
                None => out.push(Dep::Image(r)),
            }
        }
    }
    out
}

fn from_references(ins: &Instruction) -> Vec<String> {
    let mut refs = Vec::new();
    for (name, value) in &ins.flags {
        let Some(value) = value else { continue };
        match (ins.keyword.as_str(), name.as_str()) {
            ("COPY" | "ADD", "from") => refs.push(value.clone()),
            ("RUN", "mount") => {
                for field in value.split(',') {
                    if let Some(f) = field.trim().strip_prefix("from=") {
                        refs.push(f.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    refs
}

/// A stage by name (case-insensitive) or index, as `--from` and `--target` name them.
fn stage_index(df: &Dockerfile, reference: &str) -> Option<usize> {
    if let Ok(i) = reference.parse::<usize>() {
        return (i < df.stages.len()).then_some(i);
    }
    let wanted = reference.to_ascii_lowercase();
    df.stages
        .iter()
        .position(|s| s.name.as_deref() == Some(wanted.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn prints(text: &str) -> Vec<(blake3::Hash, Vec<usize>, bool)> {
        let df = Dockerfile::parse(Path::new("Dockerfile"), text).expect("parse");
        fingerprints(&df, text, blake3::hash(b""))
    }

    fn service(name: &str, shared_step: &str) -> String {
        format!(
            "# syntax=docker/dockerfile:1\n# the image of {name}\nFROM node:18-alpine AS base\nRUN corepack enable\n\n# shared ({name})\nFROM base AS shared\nCOPY shared/ shared/\n{shared_step}\nFROM base AS deps\nCOPY services/{name}/package.json services/{name}/\nRUN pnpm install\nFROM deps AS builder\nCOPY --from=shared /app/shared/dist shared/dist\nRUN pnpm build\nFROM node:18-alpine AS runtime\nCOPY --from=builder /app/dist dist\nCMD [\"node\", \"dist/index.js\"]\n"
        )
    }

    #[test]
    fn stages_with_the_same_text_and_ancestry_match_across_services() {
        let a = prints(&service("a", "RUN tsc"));
        let b = prints(&service("b", "RUN tsc"));
        // base, shared: same (comments aside); deps, builder, runtime: not.
        let same: Vec<bool> = a.iter().zip(&b).map(|(x, y)| x.0 == y.0).collect();
        assert_eq!(same, [true, true, false, false, false]);
        assert_eq!(a[1].1, [1, 0], "shared covers itself and base");
        assert_eq!(
            a[3].1,
            [3, 2, 0, 1],
            "builder: itself, deps, base, shared (--from)"
        );
        assert!(a[0].2 && a[1].2);
    }

    #[test]
    fn a_different_step_or_parent_or_directive_is_another_stage() {
        let a = prints(&service("a", "RUN tsc"));
        let b = prints(&service("a", "RUN tsc -p ."));
        assert_eq!(a[0].0, b[0].0);
        assert_ne!(a[1].0, b[1].0);
        // The same stage text on another base is another stage.
        let c = prints(&service("a", "RUN tsc").replace(
            "RUN corepack enable",
            "RUN corepack enable && corepack prepare pnpm@9 --activate",
        ));
        assert_ne!(a[1].0, c[1].0);
        let d = prints(
            &service("a", "RUN tsc").replace("docker/dockerfile:1", "docker/dockerfile:1.4"),
        );
        assert_ne!(a[0].0, d[0].0, "a parser directive counts");
        // Build settings count.
        let df = Dockerfile::parse(Path::new("D"), &service("a", "RUN tsc")).expect("parse");
        let text = service("a", "RUN tsc");
        let x = fingerprints(&df, &text, blake3::hash(b"ARG=1"));
        assert_ne!(a[0].0, x[0].0);
    }

    #[test]
    fn copy_only_stages_run_nothing() {
        let p = prints(
            "FROM scratch AS files\nCOPY a /a\nFROM node:18-alpine\nCOPY --from=files /a /a\n",
        );
        assert!(!p[0].2);
    }
}
