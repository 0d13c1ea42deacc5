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
//!   builds the stages it copies from (`--target`, all of it already in the local cache) and
//!   pushes them: `<repo>:layers` is the image, `<repo>:layers-<stage>` each such stage. A build
//!   imports them all (`--cache-from`).
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
use crate::dockerfile::{BaseRef, Dockerfile};
use crate::execute::{BuildRequest, CacheExport, LayerCache};

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

/// The named stages whose cache the image itself does not carry (inline): those the output stage
/// copies from, directly or through the stages they copy from, that run something and that no
/// other such stage is built `FROM` (its cache covers them). In file order.
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
    let in_output = chain(output);
    let mut wanted: Vec<usize> = Vec::new();
    let mut todo = copied_from(output);
    while let Some(s) = todo.pop() {
        if wanted.contains(&s) || in_output.contains(&s) {
            continue;
        }
        wanted.push(s);
        todo.extend(copied_from(s));
    }
    let runs = |i: usize| {
        chain(i).iter().any(|s| {
            df.stages[*s]
                .instructions
                .iter()
                .any(|x| x.keyword == "RUN")
        })
    };
    let covered = |i: usize| wanted.iter().any(|&o| o != i && chain(o).contains(&i));
    let mut out: Vec<usize> = wanted
        .iter()
        .copied()
        .filter(|&i| df.stages[i].name.is_some() && runs(i) && !covered(i))
        .collect();
    out.sort_unstable();
    out.into_iter()
        .filter_map(|i| df.stages[i].name.clone())
        .collect()
}

fn read_stages(root: &Path, dockerfile: &str, target: Option<&str>) -> Vec<String> {
    let path = root.join(dockerfile);
    std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| Dockerfile::parse(&path, &text).ok())
        .map(|df| stages_to_export(&df, target))
        .unwrap_or_default()
}

impl Runner<'_> {
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
                for s in read_stages(job.root(), job.dockerfile(), job.target()) {
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
    /// (inline: the image and the stages it copies from, pushed). A failure is a warning: the
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
        for stage in read_stages(job.root(), job.dockerfile(), job.target()) {
            let stage_ref = reg.reference(&job.image, &stage_tag(&stage));
            let sreq = BuildRequest {
                labels: BTreeMap::new(),
                target: Some(stage.clone()),
                layer_cache: Some(LayerCache {
                    from: lc.from.clone(),
                    to: Some(stage_ref.clone()),
                }),
                ..req.clone()
            };
            let built = self.backend.builder.build(&sreq, &|_| {});
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
        // builder covers deps and base (FROM chain); shared-builder copies from shared-deps.
        assert_eq!(
            stages(&text, None),
            ["shared-deps", "shared-builder", "builder"]
        );
        assert_eq!(
            stages(&text, Some("builder")),
            ["shared-deps", "shared-builder"]
        );
    }

    #[test]
    fn stages_the_output_is_built_on_or_that_run_nothing_are_not_exported() {
        let text = "FROM node:18-alpine AS base\nRUN true\nFROM base AS deps\nRUN install\nFROM deps AS build\nRUN build\nFROM scratch AS files\nCOPY a /a\nFROM deps AS out\nCOPY --from=build /x /x\nCOPY --from=files /a /a\nCOPY --from=0 /y /y\n";
        assert_eq!(stages(text, None), ["build"]);
        assert!(stages("FROM node:18-alpine\nRUN true\n", None).is_empty());
    }

    #[test]
    fn stage_tags_are_valid_tags() {
        assert_eq!(stage_tag("shared-builder"), "layers-shared-builder");
        assert_eq!(stage_tag("a/b c"), "layers-a-b-c");
    }
}
