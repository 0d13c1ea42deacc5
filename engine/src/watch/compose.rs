//! `--up`: after a rebuild, `docker compose up -d --no-deps <service>` (the Compose plugin, or
//! Debian's `docker-compose` v1 where that is what is installed), so the running stack follows
//! the images. No shell: argument vectors only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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
    /// The Docker client, for what Compose does not say (a container's health check, its address).
    docker: PathBuf,
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
                    docker: docker_client.to_path_buf(),
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

    /// `up -d --no-deps <service>`: recreates its container when its image changed (always,
    /// with `force`).
    pub fn up(&self, service: &str, force: bool) -> std::result::Result<(), String> {
        let mut args = vec!["up", "-d", "--no-deps"];
        if force {
            args.push("--force-recreate");
        }
        args.push(service);
        let out = Command::new(&self.program)
            .args(&self.pre_args)
            .arg("-f")
            .arg(&self.file)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("failed to run `{}`: {e}", self.program.display()))?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "`{} {}` exited with {}: {}",
            self.version,
            args.join(" "),
            out.status
                .code()
                .map(|c| format!("code {c}"))
                .unwrap_or_else(|| "a signal".to_string()),
            crate::execute::docker::tail(&stderr, 5).trim()
        ))
    }
}

/// How often a new container's health is asked.
const PROBE_EVERY: Duration = Duration::from_millis(50);

/// How a container's first healthy answer is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// An HTTP GET from here to the container's address (its health check asks `url` inside).
    Http { port: u16, path: String },
    /// The image's health check itself, run in the container (`docker exec`).
    Exec(Vec<String>),
}

impl Probe {
    /// From an image's `HEALTHCHECK` test (`["CMD", ...]` or `["CMD-SHELL", "..."]`): an HTTP GET
    /// when it asks a loopback URL (a GET from outside answers when the server inside does),
    /// else the check itself. `None` without a health check.
    pub fn from_test(test: &[String]) -> Option<Probe> {
        let (kind, rest) = test.split_first()?;
        let cmd: Vec<String> = match kind.as_str() {
            "CMD" => rest.to_vec(),
            "CMD-SHELL" => vec!["/bin/sh".into(), "-c".into(), rest.join(" ")],
            _ => return None,
        };
        if cmd.is_empty() {
            return None;
        }
        let text = rest.join(" ");
        for host in ["http://127.0.0.1:", "http://localhost:"] {
            if let Some(i) = text.find(host) {
                let after = &text[i + host.len()..];
                let digits: String = after.chars().take_while(|c| c.is_ascii_digit()).collect();
                let tail = &after[digits.len()..];
                let path: String = tail
                    .chars()
                    .take_while(|c| !c.is_whitespace() && !matches!(c, '\'' | '"' | '`' | ')'))
                    .collect();
                if let Ok(port) = digits.parse::<u16>() {
                    let path = if path.starts_with('/') {
                        path
                    } else {
                        "/".into()
                    };
                    return Some(Probe::Http { port, path });
                }
            }
        }
        Some(Probe::Exec(cmd))
    }
}

/// A GET of `path` at `addr`; whether it answered 2xx.
fn http_ok(addr: std::net::SocketAddr, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    let mut got = 0;
    while got < head.len() {
        match s.read(&mut head[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    let head = String::from_utf8_lossy(&head[..got]);
    head.starts_with("HTTP/") && head.get(9..10) == Some("2")
}

impl Compose {
    fn docker_out(&self, args: &[&str]) -> Option<String> {
        let out = Command::new(&self.docker)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The compose project's name, as Compose derives it: `COMPOSE_PROJECT_NAME`, else the
    /// compose file's directory name, lower-cased, in `[a-z0-9_-]`.
    pub fn project(&self) -> Option<String> {
        if let Some(p) = std::env::var_os("COMPOSE_PROJECT_NAME").filter(|p| !p.is_empty()) {
            return Some(p.to_string_lossy().into_owned());
        }
        let dir = std::fs::canonicalize(&self.file)
            .ok()?
            .parent()?
            .file_name()?
            .to_string_lossy()
            .to_ascii_lowercase();
        let name: String = dir
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .collect();
        (!name.is_empty()).then_some(name)
    }

    /// The running containers of a compose service: by Compose's labels through the engine
    /// (one quick `docker ps`), else `compose ps -q`.
    pub fn containers(&self, service: &str) -> Vec<String> {
        if let Some(project) = self.project() {
            let found = self
                .docker_out(&[
                    "ps",
                    "-q",
                    "--filter",
                    &format!("label=com.docker.compose.project={project}"),
                    "--filter",
                    &format!("label=com.docker.compose.service={service}"),
                    "--filter",
                    "label=com.docker.compose.oneoff=False",
                ])
                .unwrap_or_default();
            let ids: Vec<String> = found.lines().map(|l| l.trim().to_string()).collect();
            if ids.iter().any(|l| !l.is_empty()) {
                return ids.into_iter().filter(|l| !l.is_empty()).collect();
            }
        }
        let out = Command::new(&self.program)
            .args(&self.pre_args)
            .arg("-f")
            .arg(&self.file)
            .args(["ps", "-q", service])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output();
        out.map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default()
    }

    /// Waits for the first healthy answer of the service's new container(s): each container
    /// answers its own health check (asked every 50 ms, not at the check's own interval). Returns
    /// when it answered, `Ok(None)` when the image has no health check, an error past `timeout`
    /// or when `stop` is set.
    pub fn first_healthy(
        &self,
        service: &str,
        timeout: Duration,
        stop: &AtomicBool,
    ) -> std::result::Result<Option<Instant>, String> {
        let deadline = Instant::now() + timeout;
        let containers = self.containers(service);
        if containers.is_empty() {
            return Err(format!(
                "no running container of compose service `{service}`"
            ));
        }
        let mut when = None;
        for c in &containers {
            let test = self
                .docker_out(&["inspect", "--format", "{{json .Config.Healthcheck}}", c])
                .unwrap_or_default();
            let test: Vec<String> = serde_json::from_str::<serde_json::Value>(&test)
                .ok()
                .and_then(|v| serde_json::from_value(v["Test"].clone()).ok())
                .unwrap_or_default();
            let Some(probe) = Probe::from_test(&test) else {
                return Ok(None);
            };
            let addrs: Vec<std::net::IpAddr> = match &probe {
                Probe::Http { .. } => self
                    .docker_out(&[
                        "inspect",
                        "--format",
                        "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
                        c,
                    ])
                    .unwrap_or_default()
                    .split_whitespace()
                    .filter_map(|a| a.parse().ok())
                    .collect(),
                Probe::Exec(_) => Vec::new(),
            };
            loop {
                let ok = match &probe {
                    Probe::Http { port, path } => addrs
                        .iter()
                        .any(|ip| http_ok(std::net::SocketAddr::new(*ip, *port), path)),
                    Probe::Exec(cmd) => {
                        let mut args = vec!["exec", c.as_str()];
                        args.extend(cmd.iter().map(String::as_str));
                        self.docker_out(&args).is_some()
                    }
                };
                if ok {
                    when = Some(Instant::now());
                    break;
                }
                if stop.load(Ordering::SeqCst) {
                    return Err("the watch stopped".to_string());
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "container {} of `{service}` gave no healthy answer within {} s",
                        &c[..c.len().min(12)],
                        timeout.as_secs()
                    ));
                }
                std::thread::sleep(PROBE_EVERY);
            }
        }
        Ok(when)
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
    fn health_checks_become_probes() {
        let t = |v: &[&str]| Probe::from_test(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            t(&[
                "CMD-SHELL",
                "node -e \"require('http').get('http://127.0.0.1:3001/health', (r) => 0)\""
            ]),
            Some(Probe::Http {
                port: 3001,
                path: "/health".into()
            })
        );
        assert_eq!(
            t(&["CMD", "wget", "-q", "http://localhost:8080"]),
            Some(Probe::Http {
                port: 8080,
                path: "/".into()
            })
        );
        assert_eq!(
            t(&["CMD", "pg_isready"]),
            Some(Probe::Exec(vec!["pg_isready".into()]))
        );
        assert_eq!(
            t(&["CMD-SHELL", "test -f /ok"]),
            Some(Probe::Exec(vec![
                "/bin/sh".into(),
                "-c".into(),
                "test -f /ok".into()
            ]))
        );
        assert_eq!(t(&["NONE"]), None);
        assert_eq!(t(&[]), None);
    }

    #[test]
    fn services_are_found_by_image_then_by_name() {
        let text = "services:\n  gw:\n    image: kc-api-gateway:latest\n  student-service:\n    build: .\n  db:\n    image: postgres:16\n";
        let services = parse_services(Path::new("compose.yml"), text).expect("parse");
        let c = Compose {
            program: PathBuf::from("docker-compose"),
            docker: PathBuf::from("docker"),
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
