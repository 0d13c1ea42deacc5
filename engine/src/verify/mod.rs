//! Verify: checks of a built image against the architecture's rules, read natively from its layers.
//!
//! - [`layers`]: the image's filesystem from `docker save` (every layer, and the final tree with
//!   whiteouts applied), read as a stream with the `tar` crate.
//! - [`model`]: the rules' names, a check's outcome, the [`Subject`] and an image's config.
//! - [`rules`]: the rules as pure functions of the image's config, its layers and what the
//!   workspace says the service is ([`Subject`]).
//! - here: running them on an image (`docker image inspect`, `docker save`, and one container
//!   started with no network to resolve the shared package), and [`verify_once`], which `images`
//!   calls after a build and which verifies each key once (a marker in the cache directory).
//!
//! How the base image is checked: the image's layers (`RootFS.Layers`, the diff ids, which are
//! the digests of the layers' contents) must start with the configured base image's layers, as
//! the engine has that image. That proves the runtime stage is `FROM` that very image, whatever it
//! is called, where a name or label check would trust what a Dockerfile says; it needs the base
//! image in the engine (it was needed to build), and fails if the base was re-pulled since.

pub mod layers;
pub mod model;
pub mod rules;

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use rules::{BaseImage, Check, ImageConfig, Rule, Subject};

use crate::digest::ImageKey;
use crate::execute::docker::{tail, Docker};
use crate::pipeline::Analysis;
use crate::workspace::Workspace;
use crate::{Error, Result};

/// Bump to verify every image again (a rule changed): part of every "verified" marker.
pub const VERIFY_VERSION: u32 = 1;
/// How long the container resolving the shared package may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(60);

/// The verification of one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub service: String,
    /// The image as it was named (a reference or an id).
    pub image: String,
    /// The image id, when the image exists.
    pub image_id: Option<String>,
    pub size_bytes: u64,
    pub budget_bytes: u64,
    /// Every check passed.
    pub ok: bool,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.ok)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Inspect {
    id: String,
    #[serde(default)]
    config: Option<InspectConfig>,
    #[serde(default)]
    size: u64,
    #[serde(default, rename = "RootFS")]
    root_fs: Option<InspectRootFs>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct InspectConfig {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    healthcheck: Option<InspectHealth>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct InspectHealth {
    #[serde(default)]
    test: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct InspectRootFs {
    #[serde(default)]
    layers: Option<Vec<String>>,
}

/// Parses the output of `docker image inspect` for one image.
pub fn parse_inspect(json: &str) -> std::result::Result<ImageConfig, String> {
    let mut all: Vec<Inspect> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    if all.is_empty() {
        return Err("no image in the output".to_string());
    }
    let i = all.swap_remove(0);
    let c = i.config.unwrap_or_default();
    Ok(ImageConfig {
        id: i.id,
        user: c.user.unwrap_or_default(),
        cmd: c.cmd,
        entrypoint: c.entrypoint,
        workdir: c.working_dir.unwrap_or_default(),
        healthcheck: c.healthcheck.and_then(|h| h.test),
        env: c.env.unwrap_or_default(),
        labels: c.labels.unwrap_or_default(),
        size: i.size,
        diff_ids: i.root_fs.and_then(|r| r.layers).unwrap_or_default(),
    })
}

/// `docker image inspect REF`: the image's config, or `None` when the engine has no such image.
pub fn inspect(docker: &Docker, reference: &str) -> Result<Option<ImageConfig>> {
    let out = docker
        .output(
            Command::new(&docker.client)
                .args(["image", "inspect", reference])
                .stdin(Stdio::null()),
        )
        .map_err(|e| Error::io("run", &docker.client, e))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if stderr.to_ascii_lowercase().contains("no such image") {
            return Ok(None);
        }
        return Err(Error::Other(format!(
            "`docker image inspect {reference}` failed: {}",
            tail(&stderr, 5).trim()
        )));
    }
    let mut config = parse_inspect(&String::from_utf8_lossy(&out.stdout)).map_err(|e| {
        Error::Other(format!(
            "unexpected output from `docker image inspect {reference}`: {e}"
        ))
    })?;
    if docker.podman && config.healthcheck.is_none() {
        config.healthcheck = podman_healthcheck(reference);
    }
    Ok(Some(config))
}

/// The HEALTHCHECK of an image as Podman's own API gives it: its Docker-compatible image
/// inspect leaves `Healthcheck` out (Podman 4.3), although the image (Docker format) has one.
fn podman_healthcheck(reference: &str) -> Option<Vec<String>> {
    let socket = crate::execute::api::engine_socket()?;
    let name: String = reference
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b':' | b'@' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (status, body) =
        crate::execute::api::get(&socket, &format!("/v4.0.0/libpod/images/{name}/json"))?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    let test: Vec<String> = v["Healthcheck"]["Test"]
        .as_array()?
        .iter()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    (!test.is_empty()).then_some(test)
}

/// Resolves each shared package from /app/service in a container of the image started with no
/// network, as the service's `require` would: it must resolve inside /app/shared.
pub fn shared_resolves(docker: &Docker, image: &str, subject: &Subject) -> Result<Check> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let rule = Rule::SharedResolves;
    if subject.shared.is_empty() {
        return Ok(Check::pass(
            rule,
            "the service depends on no workspace package",
        ));
    }
    let mut resolved = Vec::new();
    for name in &subject.shared {
        let cname = format!(
            "kc-verify-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut child = Command::new(&docker.client)
            .args(["run", "--rm", "--name", &cname, "--network", "none"])
            .args(["--entrypoint", "node", "--workdir", "/app/service", image])
            .args([
                "-e",
                "process.stdout.write(require.resolve(process.argv[1]))",
                name,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::io("run", &docker.client, e))?;
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if started.elapsed() > RESOLVE_TIMEOUT => break None,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(Error::io("wait for", &docker.client, e)),
            }
        };
        let Some(status) = status else {
            let _ = Command::new(&docker.client)
                .args(["rm", "-f", &cname])
                .stdin(Stdio::null())
                .output();
            let _ = child.kill();
            let _ = child.wait();
            return Ok(Check::fail(
                rule,
                format!(
                    "resolving `{name}` in a container took over {}s",
                    RESOLVE_TIMEOUT.as_secs()
                ),
            ));
        };
        let (mut stdout, mut stderr) = (String::new(), String::new());
        if let Some(mut o) = child.stdout.take() {
            let _ = o.read_to_string(&mut stdout);
        }
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        match status.code() {
            Some(0) => {
                let path = stdout.trim().to_string();
                if !path.starts_with("/app/shared/") {
                    return Ok(Check::fail(
                        rule,
                        format!("`{name}` resolves to {path}, outside /app/shared"),
                    ));
                }
                resolved.push(format!("`{name}` resolves to {path}"));
            }
            // The engine could not start the container: not a property of the image.
            Some(125) => {
                return Err(Error::Other(format!(
                    "`docker run` of `{image}` failed: {}",
                    tail(&stderr, 5).trim()
                )))
            }
            code => {
                let why = stderr
                    .lines()
                    .find(|l| l.contains("Cannot find module") || l.starts_with("Error"))
                    .map(str::trim)
                    .map(str::to_string)
                    .unwrap_or_else(|| tail(&stderr, 2).trim().to_string());
                return Ok(Check::fail(
                    rule,
                    format!(
                        "`node` cannot resolve `{name}` from /app/service (exit code {}): {why}",
                        code.map(|c| c.to_string()).unwrap_or_else(|| "none".into())
                    ),
                ));
            }
        }
    }
    Ok(Check::pass(
        rule,
        format!("{} (no network)", resolved.join(", ")),
    ))
}

/// Verifies one image (a reference or an id) as the image of `subject`.
pub fn verify_image(docker: &Docker, image: &str, subject: &Subject) -> Result<Report> {
    let mut report = Report {
        service: subject.service.clone(),
        image: image.to_string(),
        image_id: None,
        size_bytes: 0,
        budget_bytes: subject.budget_bytes,
        ok: false,
        checks: Vec::new(),
    };
    let Some(config) = inspect(docker, image)? else {
        report.checks.push(Check::fail(
            Rule::Image,
            format!(
                "no image `{image}` in the engine; build it with `cargo xtask images {}`",
                subject.service
            ),
        ));
        return Ok(report);
    };
    let base = BaseImage {
        reference: subject.base.clone(),
        config: inspect(docker, &subject.base)?,
    };
    // The container resolving the shared package runs while the layers stream.
    let (fs, resolves) = std::thread::scope(|scope| {
        let resolves = scope.spawn(|| shared_resolves(docker, &config.id, subject));
        let fs = layers::save(&docker.client, &config.id, &rules::wants_content);
        let resolves = resolves
            .join()
            .unwrap_or_else(|_| Err(Error::Other("the shared-resolves check panicked".into())));
        (fs, resolves)
    });
    let (fs, resolves) = (fs?, resolves?);
    report.checks = rules::check_all(subject, &config, &base, &fs, resolves);
    report.ok = report.checks.iter().all(|c| c.ok);
    report.size_bytes = config.size;
    report.image_id = Some(config.id);
    Ok(report)
}

/// Verifies the image of service `service` (an index into `ws.services`): `image`, or
/// `<image>:latest` when `None`.
pub fn verify_service(
    docker: &Docker,
    ws: &Workspace,
    service: usize,
    image: Option<&str>,
) -> Result<Report> {
    let subject = Subject::new(ws, service);
    let reference = image
        .map(str::to_string)
        .unwrap_or_else(|| format!("{}:{}", ws.services[service].image, crate::tags::LATEST));
    verify_image(docker, &reference, &subject)
}

/// Verifies the images of several services, `jobs` at a time (`docker save` mostly waits on the
/// engine, so two at once go faster even on two cores); the results are in the order given.
pub fn verify_services(
    docker: &Docker,
    ws: &Workspace,
    services: &[usize],
    image: Option<&str>,
    jobs: usize,
) -> Vec<Result<Report>> {
    use rayon::prelude::*;
    let run = || {
        services
            .par_iter()
            .map(|&s| verify_service(docker, ws, s, image))
            .collect()
    };
    match rayon::ThreadPoolBuilder::new()
        .num_threads(jobs.clamp(1, services.len().max(1)))
        .build()
    {
        Ok(pool) => pool.install(run),
        Err(_) => services
            .iter()
            .map(|&s| verify_service(docker, ws, s, image))
            .collect(),
    }
}

/// The result of [`verify_once`].
#[derive(Debug, Clone)]
pub struct Verified {
    pub report: Report,
    /// The report was read from the marker of an earlier verification of this key.
    pub reused: bool,
    /// Problems with the marker (it could not be written); the report stands.
    pub warnings: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Marker {
    version: u32,
    image_id: String,
    /// blake3 of the subject's JSON: what the workspace says the service is.
    subject: String,
    report: Report,
}

fn subject_digest(subject: &Subject) -> String {
    let json = serde_json::to_vec(subject).unwrap_or_default();
    blake3::hash(&json).to_hex().to_string()
}

/// Verifies the image just built (or found cached) for service `service` of `analysis`, once per
/// key (see [`verify_key`]).
pub fn verify_once(
    docker: &Docker,
    analysis: &Analysis,
    service: usize,
    image_id: &str,
) -> Result<Verified> {
    let ws = &analysis.ws;
    let img = analysis.image(service).ok_or_else(|| {
        Error::Other(format!(
            "service `{}` was not analysed, so its key is unknown",
            ws.services
                .get(service)
                .map(|s| s.name.as_str())
                .unwrap_or("?")
        ))
    })?;
    let subject = Subject::new(ws, service);
    let image = &ws.services[service].image;
    verify_key(
        docker,
        &analysis.cache_dir,
        &subject,
        image,
        &img.key,
        image_id,
    )
}

/// Verifies the image `image_id` as the image `image` of `subject` at `key`, once per key: the report is
/// kept in the cache directory's `verified/<key>.json` and reused while the image id,
/// [`VERIFY_VERSION`] and the [`Subject`] are unchanged. A failing report is kept too, so a cached
/// image that broke a rule keeps failing without being read again.
pub fn verify_key(
    docker: &Docker,
    cache_dir: &std::path::Path,
    subject: &Subject,
    image: &str,
    key: &ImageKey,
    image_id: &str,
) -> Result<Verified> {
    let digest = subject_digest(subject);
    let key_hex = key.to_hex();
    let path = cache::Layout::new(cache_dir).verified(&key_hex);
    if let Ok(bytes) = std::fs::read(&path) {
        if let Ok(m) = serde_json::from_slice::<Marker>(&bytes) {
            if m.version == VERIFY_VERSION && m.image_id == image_id && m.subject == digest {
                return Ok(Verified {
                    report: m.report,
                    reused: true,
                    warnings: Vec::new(),
                });
            }
        }
    }
    let mut report = verify_image(docker, image_id, subject)?;
    report.image = format!("{image}:{}", crate::tags::key_tag(key));
    let marker = Marker {
        version: VERIFY_VERSION,
        image_id: image_id.to_string(),
        subject: digest,
        report: report.clone(),
    };
    let mut warnings = Vec::new();
    // Only a verification of an existing image is worth keeping.
    if report.image_id.is_some() {
        let bytes = serde_json::to_vec_pretty(&marker).unwrap_or_default();
        if let Err(e) = cache::atomic::write(&path, &bytes) {
            warnings.push(format!("could not save the verification of {key_hex}: {e}"));
        }
    }
    Ok(Verified {
        report,
        reused: false,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_inspect() {
        let json = r#"[{"Id":"sha256:abc","Size":123,
            "Config":{"User":"nodejs","Cmd":["node","dist/index.js"],"Entrypoint":null,
              "WorkingDir":"/app/service","Env":["PATH=/usr/bin"],
              "Healthcheck":{"Test":["CMD-SHELL","node -e 0"],"Interval":30000000000},
              "Labels":{"a":"b"}},
            "RootFS":{"Type":"layers","Layers":["sha256:1","sha256:2"]}}]"#;
        let c = parse_inspect(json).expect("parse");
        assert_eq!(c.id, "sha256:abc");
        assert_eq!(c.user, "nodejs");
        assert_eq!(
            c.cmd,
            Some(vec!["node".to_string(), "dist/index.js".to_string()])
        );
        assert_eq!(c.entrypoint, None);
        assert_eq!(c.workdir, "/app/service");
        assert_eq!(c.healthcheck.as_ref().map(|h| h.len()), Some(2));
        assert_eq!(c.diff_ids, vec!["sha256:1", "sha256:2"]);
        assert_eq!(c.size, 123);
        assert_eq!(c.labels.get("a").map(String::as_str), Some("b"));
        // A config with nulls everywhere (as an imported image has).
        let c =
            parse_inspect(r#"[{"Id":"sha256:x","Config":{"Cmd":null,"Env":null,"Labels":null}}]"#)
                .expect("parse");
        assert!(c.cmd.is_none() && c.env.is_empty() && c.diff_ids.is_empty());
        assert!(parse_inspect("[]").is_err());
    }
}
