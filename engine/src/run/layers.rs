//! The registry layer cache: with a cache registry, each build imports the last layer cache of
//! its service, and exports its own once its image passed verification, so that a fresh engine
//! (a CI runner) reuses the dependency-install layers of an image no tier holds.
//!
//! What the client supports decides how ([`CacheExport`]):
//! - **inline** (BuildKit without buildx, e.g. Docker 20.10 with `DOCKER_BUILDKIT=1`): when the
//!   run writes to the cache registry, the image is built with `BUILDKIT_INLINE_CACHE=1`, so it
//!   carries the cache metadata of its own layers (a run that only imports leaves it out: it
//!   costs the compressed digest of every layer, seconds on a fresh engine).
//!   That covers the runtime stage only, so after the image passed verification the run also
//!   builds the stages it needs that run something (`--target`, all of it already in the local
//!   cache) and pushes them: `<repo>:layers` is the image, `<repo>:layers-<stage>` each such
//!   stage. A build imports them all (`--cache-from`).
//! - **registry** (buildx): `--cache-from`/`--cache-to type=registry,mode=max` on
//!   `<repo>:buildcache`, exported by BuildKit itself.
//!
//! The key never depends on the layer cache: an imported layer is one BuildKit would build for
//! the same cache key, the image is verified as any other, and a cache that cannot be read only
//! costs its steps. A read-only cache registry (`--cache-read-only`) is imported from, never
//! written. With `[trust] keys` the layer cache is off: it carries no signature, and a planted
//! layer would end up in an image the run then signs.

use std::collections::BTreeMap;
use std::path::Path;

use super::{Event, ImageReport, Job, Runner};
use crate::context::ContextFile;
use crate::dockerfile::{BaseRef, Dockerfile};
use crate::execute::{BuildRequest, CacheExport, LayerCache};
use crate::key::KeyManifest;

/// The tag of a service's image as a cache (inline).
pub const LAYERS_TAG: &str = "layers";
/// The tag of a service's cache image (buildx).
pub const BUILDCACHE_TAG: &str = "buildcache";

/// The tag of a stage's cache image: `layers-<stage>`, in the characters a tag allows.
pub fn stage_tag(stage: &str) -> String {
    let clean: String = stage
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(100)
        .collect();
    format!("{LAYERS_TAG}-{clean}")
}

/// The named stages whose cache the image itself does not carry (inline), each of which gets a
/// cache image of its own: every stage the output stage is built `FROM` or copies from, directly
/// or through the stages it needs, that runs something itself. In file order.
///
/// A stage another is built `FROM` is exported too, though the other's cache image holds its
/// steps: BuildKit 0.8 (Docker 20.10) gives a result in inline cache metadata to the last step
/// of the image and to whichever earlier steps its solver happened to load, which varies from
/// build to build of the same cached stage. An export of `builder` that left out the result of
/// `deps`' install made every fresh engine that imported it run that install (4 of 28 exports
/// here); `deps`' own cache image ends with that install, which is always there.
pub fn stages_to_export(df: &Dockerfile, target: Option<&str>) -> Vec<String> {
    if df.stages.is_empty() {
        return Vec::new();
    }
    let index = |r: &str| {
        let r = r.to_ascii_lowercase();
        df.stages
            .iter()
            .position(|s| s.name.as_deref() == Some(r.as_str()))
            .or_else(|| r.parse::<usize>().ok().filter(|i| *i < df.stages.len()))
    };
    let output = target.and_then(index).unwrap_or(df.stages.len() - 1);
    // The FROM chain of a stage (itself included).
    let chain = |mut i: usize| {
        let mut c = vec![i];
        while let BaseRef::Stage(j) = df.base_of(i) {
            if c.contains(&j) {
                break;
            }
            c.push(j);
            i = j;
        }
        c
    };
    let copied_from = |i: usize| -> Vec<usize> {
        chain(i)
            .into_iter()
            .flat_map(|s| df.stages[s].instructions.iter())
            .filter(|ins| ins.keyword == "COPY" || ins.keyword == "ADD")
            .filter_map(|ins| {
                ins.flags
                    .iter()
                    .find(|(n, _)| n == "from")
                    .and_then(|(_, v)| v.as_deref())
                    .and_then(index)
            })
            .collect()
    };
    // Every stage the output needs: its FROM chain, what it copies from, and so on.
    let mut wanted: Vec<usize> = Vec::new();
    let mut todo = vec![output];
    while let Some(s) = todo.pop() {
        if wanted.contains(&s) {
            continue;
        }
        wanted.push(s);
        todo.extend(chain(s));
        todo.extend(copied_from(s));
    }
    let runs = |i: usize| df.stages[i].instructions.iter().any(|x| x.keyword == "RUN");
    let mut out: Vec<usize> = wanted
        .iter()
        .copied()
        .filter(|&i| i != output && df.stages[i].name.is_some() && runs(i))
        .collect();
    out.sort_unstable();
    out.into_iter()
        .filter_map(|i| df.stages[i].name.clone())
        .collect()
}

/// The stages of a job's Dockerfile (as its key read it) whose cache it exports.
fn job_stages(job: &Job) -> Vec<String> {
    stages_to_export(&job.inputs.context.dockerfile, job.target())
}

/// The label of a stage's cache image: its [`stage_key`], so that a run whose stage has the same
/// inputs leaves the cache image there instead of building and pushing it again.
pub const STAGE_KEY_LABEL: &str = "com.kodingcaravan.images.layers-key";

/// What a stage's cache key is made of: the image's Dockerfile (with its build arguments), the
/// values of those, the image key's manifest and its context.
pub(crate) struct StageInputs<'a> {
    pub dockerfile: &'a Dockerfile,
    /// Where the Dockerfile is (for messages only).
    pub path: &'a Path,
    pub build_args: &'a BTreeMap<String, String>,
    pub manifest: &'a KeyManifest,
    pub files: &'a [ContextFile],
}

impl<'a> StageInputs<'a> {
    fn of(job: &'a Job, path: &'a Path) -> StageInputs<'a> {
        StageInputs {
            dockerfile: &job.inputs.context.dockerfile,
            path,
            build_args: job.inputs.build_args.values(),
            manifest: &job.inputs.manifest,
            files: &job.inputs.context.files,
        }
    }
}

/// A digest of everything BuildKit's cache keys of a build of `stage` can depend on, a superset:
/// the image key's inputs but the context and the target (the Dockerfile's bytes, the build
/// arguments, the platform, the base images by digest, in-repo images, remote sources, secret
/// ids), the builder (`identity`), the stage, and the context entries the stages it needs read
/// (path, kind, size, mode, content digest; every entry when a source is a pattern, a variable
/// or leaves the root). `None` when what the stage reads cannot be told: its cache is then
/// always exported.
pub(crate) fn stage_key(i: &StageInputs<'_>, stage: &str, identity: &str) -> Option<String> {
    let m = i.manifest;
    let platform = m.platform.as_deref();
    let reads = crate::sources::reads(
        i.dockerfile,
        i.path,
        i.build_args,
        Some(stage),
        crate::sources::Platforms {
            target: platform,
            build: platform,
        },
    )
    .ok()?;
    let read = read_filter(reads.sources.iter().map(|s| s.path.as_str()));
    let inputs = serde_json::json!({
        "format": 1,
        "identity": identity,
        "stage": stage,
        "key_format": m.format,
        "dockerfile": m.dockerfile,
        "dockerfile_digest": m.dockerfile_digest,
        "build_args": m.build_args,
        "platform": m.platform,
        "base_images": m.base_images,
        "remote_sources": m.remote_sources,
        "from_images": m.from_images,
        "secrets": m.secrets,
    });
    let mut h = blake3::Hasher::new();
    h.update(b"kc-images stage cache key\n");
    h.update(&serde_json::to_vec(&inputs).ok()?);
    for f in i.files.iter().filter(|f| read(&f.path)) {
        h.update(b"\n");
        h.update(f.path.as_bytes());
        h.update(format!("\0{}\0{}\0{}\0{:o}\0", f.dir, f.symlink, f.size, f.mode).as_bytes());
        h.update(f.digest.to_hex().as_bytes());
    }
    Some(h.finalize().to_hex().to_string())
}

/// Which context paths a build reading `sources` (substituted, as [`crate::sources`] gives
/// them) may read: a path named, or beneath a directory named; every path when a source is a
/// pattern, still holds a variable, is the whole context or leaves it.
fn read_filter<'s>(sources: impl Iterator<Item = &'s str>) -> impl Fn(&str) -> bool {
    let mut prefixes: Vec<String> = Vec::new();
    let mut all = false;
    for src in sources {
        let mut p = src.trim_start_matches('/');
        while let Some(rest) = p.strip_prefix("./") {
            p = rest.trim_start_matches('/');
        }
        let p = p.trim_end_matches('/');
        if p.is_empty()
            || p.contains(['*', '?', '[', '\\', '$'])
            || p.split('/').any(|c| c == ".." || c == "." || c.is_empty())
        {
            all = true;
        }
        prefixes.push(p.to_string());
    }
    move |path: &str| {
        all || prefixes.iter().any(|p| {
            path == p
                || path
                    .strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    }
}

impl Runner<'_> {
    /// Builds `req`; a build that exports BuildKit's inline cache waits until no other build
    /// of this run does. Docker 20.10's BuildKit (0.8) can crash the whole daemon with `fatal
    /// error: concurrent map writes` in its cache exporter (`remotecache/v1` `LinkFrom`) when
    /// two builds export at once (moby/moby#42422, fixed in BuildKit by moby/buildkit#2051):
    /// seen here in a test run that built four images with a cache registry to write to; it
    /// took every build and container of the engine with it. Builds that only import, and every
    /// build of a run without a cache registry to write to, still run side by side.
    pub(super) fn build_one(
        &self,
        req: &BuildRequest,
        on_line: &(dyn Fn(&str) + Sync),
    ) -> std::result::Result<crate::execute::BuildOutput, crate::execute::BuildError> {
        let exports = self.backend.builder.cache_export() == CacheExport::Inline
            && req.layer_cache.as_ref().is_some_and(|l| l.to.is_some());
        let _one_at_a_time =
            exports.then(|| self.exports.lock().unwrap_or_else(|e| e.into_inner()));
        self.backend.builder.build(req, on_line)
    }

    /// The layer cache a build of `job` imports and exports, when there is a cache registry and
    /// the builder can use one.
    pub(super) fn layer_cache(&self, job: &Job) -> Option<LayerCache> {
        let remote = self.remote.as_ref()?;
        // A layer cache carries no signature: with trusted keys, importing one would let anyone
        // who can push there plant a layer a signed image then contains.
        if !remote.label_only() {
            return None;
        }
        let reg = remote.registry();
        match self.backend.builder.cache_export() {
            CacheExport::None => None,
            CacheExport::Inline => {
                let image_ref = reg.reference(&job.image, LAYERS_TAG);
                let mut from = vec![image_ref.clone()];
                for s in job_stages(job) {
                    from.push(reg.reference(&job.image, &stage_tag(&s)));
                }
                // The image carries its cache metadata only when the run will push it: BuildKit
                // computes it from the compressed digest of every layer of the image, base
                // included (measured on a fresh engine: 6-8 s of a 14 s build), wasted on a
                // run that only imports.
                let to = (remote.writes() && self.backend.images.is_some()).then_some(image_ref);
                Some(LayerCache { from, to })
            }
            CacheExport::Registry => {
                let r = reg.reference(&job.image, BUILDCACHE_TAG);
                Some(LayerCache {
                    from: vec![r.clone()],
                    to: (!remote.read_only()).then_some(r),
                })
            }
        }
    }

    /// Exports the layer cache of a build whose image passed verification and was recorded
    /// (inline: the image and the stages it needs, pushed). A failure is a warning: the
    /// image and its key tag are there, only a later build on a fresh engine is slower.
    pub(super) fn export_layers(
        &self,
        job: &Job,
        req: &BuildRequest,
        image_id: &str,
        r: &mut ImageReport,
    ) {
        let (Some(remote), Some(images), Some(lc)) = (
            self.remote.as_ref(),
            self.backend.images,
            req.layer_cache.as_ref(),
        ) else {
            return;
        };
        if remote.read_only()
            || self.backend.builder.cache_export() != CacheExport::Inline
            || self.cancelled()
        {
            return;
        }
        let Some(image_ref) = lc.to.clone() else {
            return;
        };
        let reg = remote.registry();
        let mut said = |message: String| {
            self.emit(Event::Registry {
                service: job.service.clone(),
                message: message.clone(),
            });
            r.registry.push(message);
        };
        match images.push(image_id, &image_ref) {
            Ok(()) => said(format!("layer cache pushed to {image_ref}")),
            Err(e) => {
                self.warn(format!(
                    "could not push the layer cache of {} to {image_ref}: {e}",
                    job.service
                ));
                return;
            }
        }
        let identity = self.backend.builder.cache_identity();
        for stage in job_stages(job) {
            let tag = stage_tag(&stage);
            let stage_ref = reg.reference(&job.image, &tag);
            // Its inputs unchanged since the cache image there was pushed: that cache maps the
            // same BuildKit keys to the same layers; building and pushing it again (seconds:
            // BuildKit compresses its layers for the metadata) would change nothing.
            let path = job.root().join(job.dockerfile());
            let skey = stage_key(&StageInputs::of(job, &path), &stage, &identity);
            if let Some(k) = &skey {
                let there = reg
                    .get_manifest(&job.image, &tag)
                    .ok()
                    .flatten()
                    .and_then(|m| reg.labels(&job.image, &m).ok())
                    .and_then(|l| {
                        l.get(STAGE_KEY_LABEL)
                            .and_then(|v| v.as_str())
                            .map(String::from)
                    });
                if there.as_deref() == Some(k.as_str()) {
                    said(format!(
                        "layer cache of stage `{stage}` unchanged in {stage_ref}"
                    ));
                    continue;
                }
            }
            let sreq = BuildRequest {
                labels: skey
                    .map(|k| BTreeMap::from([(STAGE_KEY_LABEL.to_string(), k)]))
                    .unwrap_or_default(),
                target: Some(stage.clone()),
                layer_cache: Some(LayerCache {
                    from: lc.from.clone(),
                    to: Some(stage_ref.clone()),
                }),
                ..req.clone()
            };
            let built = self.build_one(&sreq, &|_| {});
            let pushed = built.map_err(|e| e.message).and_then(|out| {
                images
                    .push(&out.image_id, &stage_ref)
                    .map_err(|e| e.to_string())
            });
            match pushed {
                Ok(()) => said(format!(
                    "layer cache of stage `{stage}` pushed to {stage_ref}"
                )),
                Err(e) => self.warn(format!(
                    "could not push the layer cache of {}'s stage `{stage}` to {stage_ref}: {e}",
                    job.service
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stages(text: &str, target: Option<&str>) -> Vec<String> {
        let df = Dockerfile::parse(Path::new("Dockerfile"), text).expect("parse");
        stages_to_export(&df, target)
    }

    #[test]
    fn the_example_exports_the_stages_its_runtime_copies_from() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../examples/kc-backend/services/student-service/Dockerfile"),
        )
        .expect("the example's Dockerfile");
        // builder is built FROM deps, FROM base; shared-builder copies from shared-deps.
        assert_eq!(
            stages(&text, None),
            ["base", "shared-deps", "deps", "shared-builder", "builder"]
        );
        assert_eq!(
            stages(&text, Some("builder")),
            ["base", "shared-deps", "deps", "shared-builder"]
        );
    }

    #[test]
    fn stages_the_output_needs_that_run_something_are_exported_and_no_other() {
        let text = "FROM node:18-alpine AS base\nRUN true\nFROM base AS deps\nRUN install\nFROM deps AS build\nRUN build\nFROM scratch AS files\nCOPY a /a\nFROM base AS unused\nRUN other\nFROM deps AS out\nCOPY --from=build /x /x\nCOPY --from=files /a /a\nCOPY --from=0 /y /y\n";
        // `out` is the image's own cache; `files` runs nothing; `unused` is not needed.
        assert_eq!(stages(text, None), ["base", "deps", "build"]);
        assert_eq!(stages(text, Some("build")), ["base", "deps"]);
        assert!(stages("FROM node:18-alpine\nRUN true\n", None).is_empty());
    }

    /// The stage keys of the example's student-service Dockerfile over a context of `files`
    /// (path, content; directories end with `/`), with `identity`.
    fn keys(files: &[(&str, &str)], identity: &str) -> BTreeMap<String, Option<String>> {
        use crate::context::{context_digest, Source};
        use crate::digest::FileDigest;
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/kc-backend/services/student-service/Dockerfile");
        let text = std::fs::read_to_string(&path).expect("the example's Dockerfile");
        let df = Dockerfile::parse(&path, &text).expect("parse");
        let files: Vec<ContextFile> = files
            .iter()
            .map(|(p, content)| ContextFile {
                path: p.trim_end_matches('/').into(),
                mode: if p.ends_with('/') { 0o755 } else { 0o644 },
                symlink: false,
                dir: p.ends_with('/'),
                size: content.len() as u64,
                digest: FileDigest::of_bytes(content.as_bytes()),
                source: Source::Disk,
            })
            .collect();
        let manifest = KeyManifest {
            format: crate::key::KEY_FORMAT_VERSION,
            dockerfile: "services/student-service/Dockerfile".into(),
            dockerfile_digest: FileDigest::of_bytes(text.as_bytes()),
            context: context_digest(&files),
            build_args: BTreeMap::new(),
            target: None,
            platform: Some("linux/amd64".into()),
            base_images: Vec::new(),
            remote_sources: Vec::new(),
            from_images: BTreeMap::new(),
            secrets: Vec::new(),
        };
        let args = BTreeMap::new();
        let inputs = StageInputs {
            dockerfile: &df,
            path: &path,
            build_args: &args,
            manifest: &manifest,
            files: &files,
        };
        ["shared-deps", "shared-builder", "deps", "builder"]
            .into_iter()
            .map(|s| (s.to_string(), stage_key(&inputs, s, identity)))
            .collect()
    }

    const CONTEXT: &[(&str, &str)] = &[
        (".npmrc", "x"),
        ("package.json", "{}"),
        ("pnpm-lock.yaml", "lock"),
        ("pnpm-workspace.yaml", "packages"),
        ("services/", ""),
        ("services/student-service/", ""),
        ("services/student-service/Dockerfile", "FROM"),
        ("services/student-service/package.json", "{\"name\":\"s\"}"),
        ("services/student-service/src/", ""),
        ("services/student-service/src/index.ts", "a"),
        ("shared/", ""),
        ("shared/package.json", "{\"name\":\"shared\"}"),
        ("shared/src/", ""),
        ("shared/src/index.ts", "b"),
        ("shared-extra/", ""),
        ("shared-extra/x", "c"),
        ("tsconfig.base.json", "{}"),
    ];

    /// Which stage keys move when `path` gets `content` (`None`: the path is removed).
    fn moved(path: &str, content: Option<&str>) -> Vec<String> {
        let base = keys(CONTEXT, "docker 20.10");
        let mut files: Vec<(&str, &str)> = CONTEXT
            .iter()
            .copied()
            .filter(|(p, _)| *p != path)
            .collect();
        if let Some(c) = content {
            files.push((path, c));
            files.sort();
        }
        let other = keys(&files, "docker 20.10");
        base.iter()
            .filter(|(s, k)| other[*s] != **k)
            .map(|(s, _)| s.clone())
            .collect()
    }

    #[test]
    fn a_stage_key_moves_with_what_the_stage_reads_and_nothing_else() {
        let all = ["builder", "deps", "shared-builder", "shared-deps"];
        assert!(keys(CONTEXT, "d").values().all(Option::is_some));
        // A service source edit: only the stage that copies the service's sources.
        assert_eq!(
            moved("services/student-service/src/index.ts", Some("a2")),
            ["builder"]
        );
        // Its manifest: the stages that install or copy it.
        assert_eq!(
            moved("services/student-service/package.json", Some("{}")),
            ["builder", "deps"]
        );
        // Shared's sources: shared's compile, and builder, which copies its output (BuildKit's
        // keys of builder's steps follow shared-builder's).
        assert_eq!(
            moved("shared/src/index.ts", Some("b2")),
            ["builder", "shared-builder"]
        );
        assert_eq!(
            moved("shared/src/new.ts", Some("n")),
            ["builder", "shared-builder"]
        );
        assert_eq!(
            moved("shared/src/index.ts", None),
            ["builder", "shared-builder"]
        );
        // The lockfile: every stage whose chain copies it (shared-builder through shared-deps).
        assert_eq!(moved("pnpm-lock.yaml", Some("lock2")), all);
        assert_eq!(
            moved("tsconfig.base.json", Some("{ }")),
            ["builder", "shared-builder"]
        );
        // A sibling whose name starts like a copied directory is not in it.
        assert!(moved("shared-extra/x", Some("c2")).is_empty());
        // The builder's identity moves them all.
        assert!(keys(CONTEXT, "docker 24.0")
            .iter()
            .all(|(s, k)| keys(CONTEXT, "docker 20.10")[s] != *k));
    }

    #[test]
    fn a_pattern_a_variable_or_the_whole_context_reads_everything() {
        let f = read_filter(["shared/", "./a.json", "/b"].into_iter());
        assert!(f("shared") && f("shared/x/y") && f("a.json") && f("b"));
        assert!(!f("shared-extra/x") && !f("a.json.bak") && !f("c"));
        for src in [
            "*.json", "src/[ab]", ".", "./", "", "../x", "a/../b", "${X}/a", "a//b",
        ] {
            let f = read_filter([src, "shared/"].into_iter());
            assert!(f("anything/at/all"), "`{src}` reads everything");
        }
    }

    #[test]
    fn stage_tags_are_valid_tags() {
        assert_eq!(stage_tag("shared-builder"), "layers-shared-builder");
        assert_eq!(stage_tag("a/b c"), "layers-a-b-c");
    }
}
