//! What verify works with: the rules' names, a check's outcome, the [`Subject`] (what the
//! workspace says a service is), and an image's config as `docker image inspect` gives it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::workspace::{DepKind, Workspace};

/// Where the runtime stage puts things, per the architecture.
pub const APP: &str = "/app";
pub const APP_SHARED: &str = "/app/shared";
pub const APP_SERVICE: &str = "/app/service";
/// The one command an image may run.
pub const EXPECTED_CMD: [&str; 2] = ["node", "dist/index.js"];
/// The uid of the runtime user (`nodejs:1001`).
pub const RUNTIME_UID: u32 = 1001;
/// The size budget when the config sets none, in MB.
pub const DEFAULT_SIZE_BUDGET_MB: u64 = 300;
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A rule of the architecture, as it is named in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// The image exists in the engine.
    Image,
    AppIsolation,
    NoPnpm,
    NoNx,
    NoTypescript,
    NoDevDependencies,
    SharedDependency,
    SharedResolves,
    NonRootUser,
    Cmd,
    Healthcheck,
    BaseImage,
    NoSecrets,
    SizeBudget,
}

impl Rule {
    /// Every rule checked on an image, in report order.
    pub const CHECKED: [Rule; 13] = [
        Rule::AppIsolation,
        Rule::NoPnpm,
        Rule::NoNx,
        Rule::NoTypescript,
        Rule::NoDevDependencies,
        Rule::SharedDependency,
        Rule::SharedResolves,
        Rule::NonRootUser,
        Rule::Cmd,
        Rule::Healthcheck,
        Rule::BaseImage,
        Rule::NoSecrets,
        Rule::SizeBudget,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Rule::Image => "image",
            Rule::AppIsolation => "app-isolation",
            Rule::NoPnpm => "no-pnpm",
            Rule::NoNx => "no-nx",
            Rule::NoTypescript => "no-typescript",
            Rule::NoDevDependencies => "no-dev-dependencies",
            Rule::SharedDependency => "shared-dependency",
            Rule::SharedResolves => "shared-resolves",
            Rule::NonRootUser => "non-root-user",
            Rule::Cmd => "cmd",
            Rule::Healthcheck => "healthcheck",
            Rule::BaseImage => "base-image",
            Rule::NoSecrets => "no-secrets",
            Rule::SizeBudget => "size-budget",
        }
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The outcome of one rule on one image; the message names what broke it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub rule: Rule,
    pub ok: bool,
    pub message: String,
}

impl Check {
    pub fn pass(rule: Rule, message: impl Into<String>) -> Check {
        Check {
            rule,
            ok: true,
            message: message.into(),
        }
    }
    pub fn fail(rule: Rule, message: impl Into<String>) -> Check {
        Check {
            rule,
            ok: false,
            message: message.into(),
        }
    }
    /// Passes with `ok` when nothing was found, else fails listing the findings.
    pub(super) fn from_findings(rule: Rule, ok: &str, findings: Vec<String>) -> Check {
        if findings.is_empty() {
            Check::pass(rule, ok)
        } else {
            Check::fail(rule, list(&findings))
        }
    }
}

/// Findings joined for a message: the first eight, then how many more.
pub(super) fn list(findings: &[String]) -> String {
    const MAX: usize = 8;
    let mut s = findings
        .iter()
        .take(MAX)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if findings.len() > MAX {
        s.push_str(&format!("; and {} more", findings.len() - MAX));
    }
    s
}

/// Another service of the workspace, which must not be in this image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtherService {
    /// The service (directory) name.
    pub name: String,
    pub package: Option<String>,
}

/// What the workspace says about one service: everything the rules compare an image with
/// (besides the image). It is hashed into the "verified" marker, so a change here verifies again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    pub service: String,
    pub package: Option<String>,
    pub others: Vec<OtherService>,
    /// The workspace packages the service depends on at run time (the shared package).
    pub shared: Vec<String>,
    /// `node_modules` directory -> the devDependencies that must not be in it.
    pub dev_dependencies: BTreeMap<String, Vec<String>>,
    /// The run-time dependencies of the service and of the shared packages.
    pub prod_dependencies: BTreeSet<String>,
    /// The base image the runtime stage must start FROM (`[images] base`).
    pub base: String,
    pub budget_bytes: u64,
}

const PROD_KINDS: [DepKind; 3] = [
    DepKind::Dependencies,
    DepKind::OptionalDependencies,
    DepKind::PeerDependencies,
];

impl Subject {
    /// The subject of service `service` (an index into `ws.services`).
    pub fn new(ws: &Workspace, service: usize) -> Subject {
        let svc = &ws.services[service];
        let pkg = &ws.packages[svc.package];
        let sc = ws.config.service(&svc.name);
        let budget_mb = sc
            .size_budget_mb
            .or(ws.config.images.size_budget_mb)
            .unwrap_or(DEFAULT_SIZE_BUDGET_MB);
        let shared_idx: Vec<usize> = pkg
            .dependencies
            .iter()
            .filter(|d| PROD_KINDS.contains(&d.kind))
            .filter_map(|d| d.workspace)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let dev_only = |p: usize| -> Vec<String> {
            let deps = &ws.packages[p].dependencies;
            let prod: BTreeSet<&str> = deps
                .iter()
                .filter(|d| PROD_KINDS.contains(&d.kind))
                .map(|d| d.name.as_str())
                .collect();
            deps.iter()
                .filter(|d| d.kind == DepKind::DevDependencies && !prod.contains(d.name.as_str()))
                .map(|d| d.name.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        };
        let mut dev_dependencies = BTreeMap::new();
        dev_dependencies.insert(format!("{APP_SERVICE}/node_modules"), dev_only(svc.package));
        // The architecture has one shared package at /app/shared.
        if let Some(&s) = shared_idx.first() {
            dev_dependencies.insert(format!("{APP_SHARED}/node_modules"), dev_only(s));
        }
        let prod_dependencies = std::iter::once(svc.package)
            .chain(shared_idx.iter().copied())
            .flat_map(|p| ws.packages[p].dependencies.iter())
            .filter(|d| PROD_KINDS.contains(&d.kind))
            .map(|d| d.name.clone())
            .collect();
        Subject {
            service: svc.name.clone(),
            package: pkg.name.clone(),
            others: ws
                .services
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != service)
                .map(|(_, o)| OtherService {
                    name: o.name.clone(),
                    package: ws.packages[o.package].name.clone(),
                })
                .collect(),
            shared: shared_idx
                .iter()
                .map(|&s| ws.packages[s].display_name().to_string())
                .collect(),
            dev_dependencies,
            prod_dependencies,
            base: ws.config.images.base.clone(),
            budget_bytes: budget_mb.saturating_mul(1_000_000),
        }
    }
}

/// The parts of an image's config the rules read (`docker image inspect`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub id: String,
    pub user: String,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub workdir: String,
    /// `Healthcheck.Test`, e.g. `["CMD-SHELL", "node -e ..."]`.
    pub healthcheck: Option<Vec<String>>,
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub size: u64,
    /// `RootFS.Layers`: the layers' diff ids, bottom first.
    pub diff_ids: Vec<String>,
}

impl ImageConfig {
    pub(super) fn path_dirs(&self) -> Vec<String> {
        let path = self
            .env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH);
        path.split(':')
            .filter(|d| d.starts_with('/'))
            .map(|d| d.trim_end_matches('/').to_string())
            .collect()
    }
}

/// The base image as the engine has it (`None`: not in the engine).
#[derive(Debug, Clone)]
pub struct BaseImage {
    pub reference: String,
    pub config: Option<ImageConfig>,
}

impl BaseImage {
    /// How many of the image's first layers are the base image's (0 when it is not built on it).
    pub fn layers_in(&self, image: &ImageConfig) -> usize {
        match &self.config {
            Some(b) if image.diff_ids.starts_with(&b.diff_ids) => b.diff_ids.len(),
            _ => 0,
        }
    }
}
