//! A job: one image to bring up to date, with its own copy of everything the steps need (a
//! `watch` moves its analysis on while a job runs).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::digest::ImageKey;
use crate::execute::{BuildRequest, LayerCache};
use crate::key::InputManifest;
use crate::pipeline::{Analysis, ImageInputs};
use crate::plan::{Action, ImagePlan};
use crate::tags::KEY_LABEL;
use crate::tier::Want;
use crate::verify::Subject;

pub(crate) struct Job {
    pub service: String,
    /// Its index in the analysis it was made from.
    pub index: usize,
    pub image: String,
    pub key: ImageKey,
    /// The images (service names) it builds FROM: it waits for their jobs.
    pub deps: Vec<String>,
    /// Decided before the run (`images`), or when the job starts (`watch`).
    pub plan: Option<ImagePlan>,
    pub inputs: ImageInputs,
    root: PathBuf,
    dockerfile: String,
    /// What the rules compare the image with (when verifying).
    pub subject: Option<Subject>,
    /// How long its last build took, in ms (for progress and the time saved).
    pub expected_ms: u64,
    /// Set when a job of the same image with another key was submitted while this one ran.
    pub superseded: Arc<AtomicBool>,
    /// Its wait was said.
    pub announced: AtomicBool,
}

impl Job {
    /// The job of analysed image `img`.
    pub fn new(
        analysis: &Analysis,
        img: &ImageInputs,
        plan: Option<ImagePlan>,
        verify: bool,
        expected_ms: u64,
    ) -> Job {
        let ws = &analysis.ws;
        let svc = &ws.services[img.service];
        let cached = plan.as_ref().is_some_and(|p| p.action == Action::Cached);
        let deps = if cached {
            Vec::new()
        } else {
            analysis.graph.image_deps[img.service]
                .iter()
                .map(|&d| ws.services[d].name.clone())
                .collect()
        };
        Job {
            service: svc.name.clone(),
            index: img.service,
            image: svc.image.clone(),
            key: img.key,
            deps,
            plan,
            inputs: img.clone(),
            root: ws.root.clone(),
            dockerfile: svc.dockerfile.clone(),
            subject: verify.then(|| Subject::new(ws, img.service)),
            expected_ms,
            superseded: Arc::new(AtomicBool::new(false)),
            announced: AtomicBool::new(false),
        }
    }

    pub fn want(&self) -> Want<'_> {
        Want {
            service: &self.service,
            image: &self.image,
            key: &self.key,
        }
    }

    /// Planned `cached` before the run: it builds nothing, waits for nothing.
    pub fn is_cached(&self) -> bool {
        self.plan
            .as_ref()
            .is_some_and(|p| p.action == Action::Cached)
    }

    pub fn is_superseded(&self) -> bool {
        self.superseded.load(Ordering::SeqCst)
    }

    /// Every input of the image, as recorded.
    pub fn input_manifest(&self) -> InputManifest {
        InputManifest::new(
            &self.service,
            self.inputs.manifest.clone(),
            &self.inputs.context,
        )
    }

    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    pub fn dockerfile(&self) -> &str {
        &self.dockerfile
    }

    pub fn target(&self) -> Option<&str> {
        self.inputs.manifest.target.as_deref()
    }

    /// The build request: exactly the hashed files, the key label, the build argument values
    /// (the key holds their digests), the target, the platform when one is configured, and the
    /// registry layer cache (which the key does not depend on: it only spares steps).
    pub fn request(
        &self,
        cancel: Arc<AtomicBool>,
        work_dir: PathBuf,
        layer_cache: Option<LayerCache>,
    ) -> BuildRequest {
        let m = &self.inputs.manifest;
        BuildRequest {
            service: self.service.clone(),
            root: self.root.clone(),
            context: self.inputs.context.clone(),
            dockerfile: self.dockerfile.clone(),
            labels: BTreeMap::from([(KEY_LABEL.to_string(), self.key.to_hex())]),
            build_args: self.inputs.build_args.values().clone(),
            secrets: self.inputs.secrets.clone(),
            target: m.target.clone(),
            platform: self.inputs.platform_flag.clone(),
            work_dir,
            cancel,
            layer_cache,
        }
    }
}
