//! `--up`: after a rebuild, `docker compose up -d --no-deps <service>` (the Compose plugin, or
//! Debian's `docker-compose` v1 where that is what is installed), so the running stack follows
//! the images. No shell: argument vectors only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{Error, Result};

/// The compose files looked for at the root when none is given, in Compose's own order.
pub const DEFAULT_FILES: &[&str] = &[
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];

/// A Compose client and the compose file it runs.
#[derive(Debug, Clone)]
pub struct Compose {
    program: PathBuf,
    /// `["compose"]` for the plugin (`docker compose`), empty for `docker-compose`.
    pre_args: Vec<String>,
    pub file: PathBuf,
    /// Compose service -> its `image` (tag included, as written).
    services: BTreeMap<String, Option<String>>,
    /// What was found, for the user: `docker compose 2.24.0` or `docker-compose 1.29.2`.
    pub version: String,
}

fn version_of(program: &Path, pre: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(pre)
        .args(["version", "--short"])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !v.is_empty()).then_some(v)
}

impl Compose {
    /// The first default compose file that exists at `root`.
    pub fn default_file(root: &Path) -> Option<PathBuf> {
        DEFAULT_FILES
            .iter()
            .map(|f| root.join(f))
            .find(|p| p.is_file())
    }

    /// Finds a Compose client: `DOCKER_COMPOSE` if set, else `<docker> compose`, else
    /// `docker-compose` on `PATH`; and reads the services of `file`.
    pub fn detect(docker_client: &Path, file: &Path) -> Result<Compose> {
        let text = std::fs::read_to_string(file).map_err(|e| Error::io("read", file, e))?;
        let services = parse_services(file, &text)?;
        let mut candidates: Vec<(PathBuf, Vec<String>)> = Vec::new();
        if let Some(c) = std::env::var_os("DOCKER_COMPOSE").filter(|c| !c.is_empty()) {
            candidates.push((PathBuf::from(c), Vec::new()));
        } else {
            candidates.push((docker_client.to_path_buf(), vec!["compose".to_string()]));
            candidates.push((PathBuf::from("docker-compose"), Vec::new()));
        }
        for (program, pre) in candidates {
            let pre_refs: Vec<&str> = pre.iter().map(String::as_str).collect();
            if let Some(v) = version_of(&program, &pre_refs) {
                let mut name = program
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if !pre.is_empty() {
                    name.push_str(" compose");
                }
                return Ok(Compose {
                    program,
                    pre_args: pre,
                    file: file.to_path_buf(),
                    services,
                    version: format!("{name} {v}"),
                });
            }
        }
        Err(Error::Other(format!(
            "--up needs Docker Compose, and neither `{} compose` nor `docker-compose` runs\n  hint: install the Compose plugin, or `apt-get install docker-compose` (v1 works too), or set DOCKER_COMPOSE to its path",
            docker_client.display()
        )))
    }

    /// The compose service that runs `image` (by its `image:` entry), else the one named like
    /// the service.
    pub fn service_for(&self, image: &str, service: &str) -> Option<String> {
        let by_image = self.services.iter().find(|(_, i)| {
            i.as_deref()
                .is_some_and(|i| i == image || i == format!("{image}:{}", crate::tags::LATEST))
        });
        match by_image {
            Some((name, _)) => Some(name.clone()),
            None => self
                .services
                .contains_key(service)
                .then(|| service.to_string()),
        }
    }

    /// `up -d --no-deps <service>`: recreates its container when its image changed.
    pub fn up(&self, service: &str) -> std::result::Result<(), String> {
        let out = Command::new(&self.program)
            .args(&self.pre_args)
            .arg("-f")
            .arg(&self.file)
            .args(["up", "-d", "--no-deps", service])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("failed to run `{}`: {e}", self.program.display()))?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "`{} up -d --no-deps {service}` exited with {}: {}",
            self.version,
            out.status
                .code()
                .map(|c| format!("code {c}"))
                .unwrap_or_else(|| "a signal".to_string()),
            crate::execute::docker::tail(&stderr, 5).trim()
        ))
    }
}

fn parse_services(file: &Path, text: &str) -> Result<BTreeMap<String, Option<String>>> {
    let doc: serde_norway::Value = serde_norway::from_str(text).map_err(|e| Error::Yaml {
        path: file.to_path_buf(),
        line: e.location().map(|l| l.line()),
        message: e.to_string(),
        hint: "a compose file has a `services:` mapping",
    })?;
    let Some(services) = doc.get("services").and_then(|s| s.as_mapping()) else {
        return Err(Error::Other(format!(
            "`{}` has no `services:`\n  hint: pass the compose file that runs the images with --compose-file",
            file.display()
        )));
    };
    Ok(services
        .iter()
        .filter_map(|(k, v)| {
            let name = k.as_str()?.to_string();
            let image = v.get("image").and_then(|i| i.as_str()).map(String::from);
            Some((name, image))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_are_found_by_image_then_by_name() {
        let text = "services:\n  gw:\n    image: kc-api-gateway:latest\n  student-service:\n    build: .\n  db:\n    image: postgres:16\n";
        let services = parse_services(Path::new("compose.yml"), text).expect("parse");
        let c = Compose {
            program: PathBuf::from("docker-compose"),
            pre_args: Vec::new(),
            file: PathBuf::from("compose.yml"),
            services,
            version: String::new(),
        };
        assert_eq!(
            c.service_for("kc-api-gateway", "api-gateway").as_deref(),
            Some("gw")
        );
        assert_eq!(
            c.service_for("kc-student-service", "student-service")
                .as_deref(),
            Some("student-service")
        );
        assert_eq!(c.service_for("kc-course-service", "course-service"), None);
        let err = parse_services(Path::new("c.yml"), "version: '3'\n").expect_err("no services");
        assert!(err.to_string().contains("no `services:`"), "{err}");
    }
}
