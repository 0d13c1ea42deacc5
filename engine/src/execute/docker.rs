//! The Docker backend: finds a client (the user's `DOCKER`, else the `docker` on `PATH` that
//! supports BuildKit), and builds by streaming the engine's own tar of the context to
//! `docker build -`. No shell: every process gets an argument vector.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::{
    api, BuildError, BuildOutput, BuildRequest, Builder, CacheExport, Images, LayerCache,
    LocalImage, Verifier,
};
use crate::digest::ImageKey;
use crate::tags::KEY_LABEL;
use crate::verify::{Subject, Verified};
use crate::{Error, Result};

/// How the client builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildMode {
    /// `docker buildx` is installed: `docker build` is BuildKit.
    Buildx,
    /// A client older than 23 that builds with BuildKit when `DOCKER_BUILDKIT=1`.
    BuildkitEnv,
    /// The deprecated legacy builder.
    Legacy,
}

/// A Docker client and what it supports.
#[derive(Debug, Clone)]
pub struct Docker {
    pub client: PathBuf,
    pub version: String,
    pub mode: BuildMode,
    /// The engine is Podman (its Docker-compatible API): builds go through the API's classic
    /// build endpoint (Buildah behind it), as BuildKit's session protocol is not served there.
    pub podman: bool,
    /// The buildx builder in use, asked once, at the first build (`Buildx` mode only).
    builder: Arc<OnceLock<Option<BuildxBuilder>>>,
    /// Told every command the client runs, before it runs.
    trace: Tracer,
}

/// A buildx builder, as `docker buildx inspect` describes the one in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildxBuilder {
    pub name: String,
    /// `docker`, `docker-container`, `kubernetes`, `remote`, …
    pub driver: String,
}

impl BuildxBuilder {
    /// Reads the builder's name and driver from `docker buildx inspect` (its first lines:
    /// `Name:` then `Driver:`; the nodes come after a blank line).
    pub fn parse(inspect: &str) -> Option<BuildxBuilder> {
        let head = inspect.split("\n\n").next().unwrap_or_default();
        let field = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        Some(BuildxBuilder {
            name: field("Name:").unwrap_or_default(),
            driver: field("Driver:")?,
        })
    }

    /// Its results stay in its own store unless loaded: every driver but `docker` (which
    /// builds inside the engine itself).
    pub fn needs_load(&self) -> bool {
        self.driver != "docker"
    }
}

/// Told each command the client runs: its program and arguments.
pub type TraceFn = Arc<dyn Fn(&[String]) + Send + Sync>;

/// The function told each command the client runs, if any.
#[derive(Clone, Default)]
pub struct Tracer(Option<TraceFn>);

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Tracer(on)"
        } else {
            "Tracer(off)"
        })
    }
}

impl Tracer {
    fn command(&self, cmd: &Command) {
        if let Some(f) = &self.0 {
            f(&traced_argv(cmd));
        }
    }
}

/// A command's argument vector as a trace shows it: a build argument's value is not shown
/// (`--build-arg NAME=<value not shown>`); `--secret` says an id and where its value is, never
/// the value
fn traced_argv(cmd: &Command) -> Vec<String> {
    let mut out: Vec<String> = vec![cmd.get_program().to_string_lossy().into_owned()];
    let mut masked = false;
    for a in cmd.get_args() {
        let a = a.to_string_lossy().into_owned();
        out.push(match (masked, a.split_once('=')) {
            (true, Some((k, _))) => format!("{k}=<value not shown>"),
            _ => a.clone(),
        });
        masked = a == "--build-arg";
    }
    out
}

fn client_version(client: &Path) -> Option<String> {
    let out = Command::new(client)
        .args(["version", "--format", "{{.Client.Version}}"])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!v.is_empty()).then_some(v)
}

fn major(version: &str) -> u32 {
    version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

fn probe(client: &Path) -> Option<Docker> {
    // A client's abilities do not change while its binary does not: remember them per binary
    // (path, size, mtime), so that a no-op run starts no `docker` process at all.
    let meta = std::fs::metadata(client).ok();
    let id = meta.as_ref().map(|m| {
        use std::os::unix::fs::MetadataExt;
        format!("{}:{}:{}", client.display(), m.size(), m.mtime())
    });
    let memo_path = std::env::var_os("HOME")
        .map(|h| Path::new(&h).join(".cache/kc-images/docker-clients.json"));
    let mut memo: std::collections::BTreeMap<String, (String, String)> = memo_path
        .as_ref()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    if let Some((version, mode)) = id.as_ref().and_then(|id| memo.get(id)) {
        let mode = match mode.as_str() {
            "buildx" => BuildMode::Buildx,
            "buildkit-env" => BuildMode::BuildkitEnv,
            _ => BuildMode::Legacy,
        };
        return Some(Docker {
            client: client.to_path_buf(),
            version: version.clone(),
            mode,
            podman: false,
            builder: Arc::default(),
            trace: Tracer::default(),
        });
    }
    let version = client_version(client)?;
    let buildx = Command::new(client)
        .args(["buildx", "version"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let mode = if buildx {
        BuildMode::Buildx
    } else if major(&version) < 23 && major(&version) >= 18 {
        BuildMode::BuildkitEnv
    } else {
        BuildMode::Legacy
    };
    if let (Some(id), Some(p)) = (id, memo_path) {
        let name = match mode {
            BuildMode::Buildx => "buildx",
            BuildMode::BuildkitEnv => "buildkit-env",
            BuildMode::Legacy => "legacy",
        };
        memo.insert(id, (version.clone(), name.to_string()));
        if let Ok(bytes) = serde_json::to_vec(&memo) {
            let _ = cache::atomic::write(&p, &bytes);
        }
    }
    Some(Docker {
        client: client.to_path_buf(),
        version,
        mode,
        podman: false,
        builder: Arc::default(),
        trace: Tracer::default(),
    })
}

/// Where the daemon's socket is (kept here too: callers name it as `docker::engine_socket`).
pub(crate) use super::api::engine_socket;

/// Every image of the engine, from the Engine API: its id, key label and `repo:tag`s.
fn api_images(socket: &Path) -> Option<Vec<LocalImage>> {
    let (status, body) = api::get(socket, "/images/json?all=1")?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    Some(
        v.as_array()?
            .iter()
            .filter_map(|i| {
                let id = i["Id"].as_str()?.to_string();
                let tags = i["RepoTags"]
                    .as_array()
                    .map(|t| {
                        t.iter()
                            .filter_map(|x| x.as_str())
                            .filter(|x| *x != "<none>:<none>")
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                let key = i["Labels"][KEY_LABEL].as_str().map(str::to_string);
                Some(LocalImage { id, key, tags })
            })
            .collect(),
    )
}

/// `docker image inspect --format` for an image's id and key label (an image without labels has
/// none, where `index` would fail the whole command).
fn inspect_format() -> String {
    format!("{{{{.Id}}}}\t{{{{if .Config.Labels}}}}{{{{index .Config.Labels \"{KEY_LABEL}\"}}}}{{{{end}}}}")
}

/// A label value as `docker image inspect --format` prints it: none when empty.
fn label_value(v: &str) -> Option<String> {
    let v = v.trim();
    (!v.is_empty() && v != "<no value>").then(|| v.to_string())
}

impl Docker {
    /// The client named by `DOCKER`, else the first `docker` on `PATH` that builds with BuildKit,
    /// else the first `docker` on `PATH` (legacy builder, with a warning from the caller). An
    /// engine that is Podman gets the classic build endpoint, whatever the client could do.
    pub fn detect() -> Result<Docker> {
        let mut d = Self::detect_client()?;
        if d.engine_is_podman() {
            d.podman = true;
            d.mode = BuildMode::Legacy;
        }
        Ok(d)
    }

    /// Whether the engine answering is Podman (its `/version` names a "Podman Engine").
    fn engine_is_podman(&self) -> bool {
        let names = match engine_socket().and_then(|s| api::get(&s, "/version")) {
            Some((200, body)) => String::from_utf8_lossy(&body).into_owned(),
            _ => self
                .run_ok(&[
                    "version",
                    "--format",
                    "{{range .Server.Components}}{{.Name}};{{end}}",
                ])
                .unwrap_or_default(),
        };
        names.contains("Podman Engine")
    }

    fn detect_client() -> Result<Docker> {
        if let Some(c) = std::env::var_os("DOCKER").filter(|c| !c.is_empty()) {
            let c = PathBuf::from(c);
            return probe(&c).ok_or_else(|| {
                Error::Other(format!(
                    "the Docker client `{}` (from the DOCKER variable) does not run\n  hint: set DOCKER to a working `docker` binary, or unset it",
                    c.display()
                ))
            });
        }
        let mut first = None;
        let mut seen = HashSet::new();
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            let c = dir.join("docker");
            if !c.is_file() {
                continue;
            }
            let canon = c.canonicalize().unwrap_or(c.clone());
            if !seen.insert(canon) {
                continue;
            }
            if let Some(d) = probe(&c) {
                if d.mode != BuildMode::Legacy {
                    return Ok(d);
                }
                first.get_or_insert(d);
            }
        }
        first.ok_or_else(|| {
            Error::Other(
                "no Docker client found on PATH\n  hint: install Docker (or run `scripts/docker-env.sh`), or set DOCKER to the client's path".to_string(),
            )
        })
    }

    /// Tells `f` every command the client runs from now on (`-vv` prints them).
    pub fn set_trace(&mut self, f: TraceFn) {
        self.trace = Tracer(Some(f));
    }

    /// Runs a command to its end, telling the tracer first.
    pub(crate) fn output(&self, cmd: &mut Command) -> std::io::Result<std::process::Output> {
        self.trace.command(cmd);
        cmd.output()
    }

    /// The buildx builder builds go to, when the client builds with buildx (asked once).
    pub fn buildx_builder(&self) -> Option<&BuildxBuilder> {
        if self.mode != BuildMode::Buildx || self.podman {
            return None;
        }
        self.builder
            .get_or_init(|| {
                let out = self.run_ok(&["buildx", "inspect"]).ok()?;
                BuildxBuilder::parse(&out)
            })
            .as_ref()
    }

    /// The arguments of one build (after the client): `build`, or `buildx build --load` when the
    /// builder in use keeps results in its own store, so that the image lands in the engine.
    fn build_args(
        &self,
        builder: Option<&BuildxBuilder>,
        req: &BuildRequest,
        iid: &Path,
        secrets: &[String],
    ) -> Vec<std::ffi::OsString> {
        let mut a: Vec<std::ffi::OsString> = Vec::new();
        if builder.is_some_and(BuildxBuilder::needs_load) {
            a.extend(["buildx".into(), "build".into(), "--load".into()]);
        } else {
            a.push("build".into());
        }
        if self.mode != BuildMode::Legacy {
            a.push("--progress=plain".into());
        }
        a.push("-f".into());
        a.push(req.dockerfile.clone().into());
        a.push("--iidfile".into());
        a.push(iid.into());
        // No `-t`: the run tags the image once it is verified and recorded (and a context stream
        // that failed half-way must not leave a key tag on a partial image).
        for (k, v) in &req.labels {
            a.push("--label".into());
            a.push(format!("{k}={v}").into());
        }
        for f in build_arg_flags(&req.build_args).0 {
            a.push("--build-arg".into());
            a.push(f.into());
        }
        if let Some(t) = &req.target {
            a.push("--target".into());
            a.push(t.into());
        }
        if let Some(p) = &req.platform {
            a.push("--platform".into());
            a.push(p.into());
        }
        for s in secrets {
            a.push("--secret".into());
            a.push(s.into());
        }
        if let Some(lc) = &req.layer_cache {
            a.extend(self.cache_args(lc).into_iter().map(Into::into));
        }
        a.push("-".into());
        a
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.client);
        match self.mode {
            BuildMode::BuildkitEnv => {
                c.env("DOCKER_BUILDKIT", "1");
            }
            // A user's DOCKER_BUILDKIT=1 must not send a build to an engine without BuildKit.
            BuildMode::Legacy => {
                c.env("DOCKER_BUILDKIT", "0");
            }
            BuildMode::Buildx => {}
        }
        c.stdin(Stdio::null());
        c
    }

    /// The `docker build` arguments that import and export a layer cache, as this client can.
    pub fn cache_args(&self, lc: &LayerCache) -> Vec<String> {
        let mut args = Vec::new();
        match self.cache_export() {
            CacheExport::None => {}
            CacheExport::Inline => {
                if lc.to.is_some() {
                    args.extend([
                        "--build-arg".to_string(),
                        "BUILDKIT_INLINE_CACHE=1".to_string(),
                    ]);
                }
                for r in &lc.from {
                    args.extend(["--cache-from".to_string(), r.clone()]);
                }
            }
            CacheExport::Registry => {
                for r in &lc.from {
                    args.extend(["--cache-from".to_string(), format!("type=registry,ref={r}")]);
                }
                if let Some(to) = &lc.to {
                    args.extend([
                        "--cache-to".to_string(),
                        format!("type=registry,ref={to},mode=max"),
                    ]);
                }
            }
        }
        args
    }

    /// A warning to show when builds will use the legacy builder.
    pub fn legacy_warning(&self) -> Option<String> {
        (self.mode == BuildMode::Legacy && !self.podman).then(|| {
            format!(
                "the Docker client `{}` ({}) has no BuildKit (no buildx plugin): using the deprecated legacy builder\n  hint: install the buildx plugin, or set DOCKER to a client that has it",
                self.client.display(),
                self.version
            )
        })
    }

    /// Checks that the daemon answers; the error says how to fix it.
    pub fn ping(&self) -> Result<String> {
        if let Some(sock) = engine_socket() {
            if let Some((200, body)) = api::get(&sock, "/version") {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                if let Some(version) = v["Version"].as_str() {
                    return Ok(version.to_string());
                }
            }
        }
        let out = self
            .output(
                self.cmd()
                    .args(["version", "--format", "{{.Server.Version}}"]),
            )
            .map_err(|e| Error::io("run", &self.client, e))?;
        let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !v.is_empty() {
            return Ok(v);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "the default socket".into());
        Err(Error::Other(format!(
            "cannot reach the Docker daemon ({host}): {}\n  hint: start Docker (on a machine without one: `scripts/docker-env.sh`), or point DOCKER_HOST / `docker context use` at a running engine",
            tail(&stderr, 3).trim()
        )))
    }

    /// The engine's own platform (`os/arch`), e.g. `linux/amd64`; `None` if it does not say.
    pub fn platform(&self) -> Option<String> {
        if let Some((200, body)) = engine_socket().and_then(|s| api::get(&s, "/version")) {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            if let (Some(os), Some(arch)) = (v["Os"].as_str(), v["Arch"].as_str()) {
                return Some(format!("{os}/{arch}"));
            }
        }
        self.run_ok(&["version", "--format", "{{.Server.Os}}/{{.Server.Arch}}"])
            .ok()
            .filter(|p| p.contains('/') && !p.starts_with('/') && !p.ends_with('/'))
    }

    /// Every image of the engine (the Engine API when the socket is reachable, else two
    /// `docker` processes whatever the number of images).
    pub fn images(&self) -> Result<Vec<LocalImage>> {
        if let Some(images) = engine_socket().and_then(|s| api_images(&s)) {
            return Ok(images);
        }
        self.images_cli()
    }

    /// [`Docker::images`] through the client.
    fn images_cli(&self) -> Result<Vec<LocalImage>> {
        let listed = self.run_ok(&[
            "images",
            "-a",
            "--no-trunc",
            "--format",
            "{{.ID}}\t{{.Repository}}:{{.Tag}}",
        ])?;
        let mut by_id: std::collections::BTreeMap<String, LocalImage> = Default::default();
        for line in listed.lines() {
            let Some((id, tag)) = line.split_once('\t') else {
                continue;
            };
            let img = by_id.entry(id.to_string()).or_insert_with(|| LocalImage {
                id: id.to_string(),
                ..LocalImage::default()
            });
            // `repo:<none>` is a reference by digest only (a pull by digest), not a tag: the API
            // lists it under RepoDigests, never RepoTags.
            if !tag.ends_with(":<none>") {
                img.tags.push(tag.to_string());
            }
        }
        if !by_id.is_empty() {
            let format = inspect_format();
            let mut args = vec!["image", "inspect", "--format", format.as_str()];
            args.extend(by_id.keys().map(String::as_str));
            // An image removed meanwhile fails the whole command: then ask one by one.
            let labels = match self.run_ok(&args) {
                Ok(out) => out,
                Err(_) => {
                    let ids: Vec<String> = by_id.keys().cloned().collect();
                    ids.iter()
                        .filter_map(|id| {
                            self.run_ok(&["image", "inspect", "--format", &format, id])
                                .ok()
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                }
            };
            for line in labels.lines() {
                if let Some((id, key)) = line.split_once('\t') {
                    if let Some(img) = by_id.get_mut(id) {
                        img.key = label_value(key);
                    }
                }
            }
        }
        Ok(by_id.into_values().collect())
    }

    /// Runs a docker subcommand, returning its stdout; failures keep the command and stderr tail.
    fn run_ok(&self, args: &[&str]) -> Result<String> {
        let out = self
            .output(self.cmd().args(args))
            .map_err(|e| Error::io("run", &self.client, e))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(Error::Other(format!(
                "`docker {}` failed with {}: {}",
                args.join(" "),
                out.status,
                tail(&String::from_utf8_lossy(&out.stderr), 5).trim()
            )))
        }
    }

    /// The id and key label of a local image, if the engine has it.
    fn inspect(&self, reference: &str) -> Option<LocalImage> {
        let format = inspect_format();
        let out = self
            .run_ok(&["image", "inspect", "--format", &format, reference])
            .ok()?;
        let (id, key) = out.split_once('\t').unwrap_or((out.as_str(), ""));
        id.starts_with("sha256:").then(|| LocalImage {
            id: id.to_string(),
            key: label_value(key),
            tags: Vec::new(),
        })
    }

    fn tag_image(&self, image_id: &str, tag: &str) -> Result<()> {
        let out = self
            .output(self.cmd().args(["tag", image_id, tag]))
            .map_err(|e| Error::io("run", &self.client, e))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(Error::Other(format!(
                "`docker tag {image_id} {tag}` failed: {}",
                tail(&String::from_utf8_lossy(&out.stderr), 5)
            )))
        }
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The current step of a build, from one line of its progress output.
pub fn step_of(line: &str) -> Option<String> {
    // Legacy: "Step 3/20 : RUN pnpm install"
    if let Some(rest) = line.strip_prefix("Step ") {
        return Some(rest.trim().to_string());
    }
    // BuildKit plain: "#7 [deps 3/4] RUN pnpm install --frozen-lockfile"
    let rest = line.strip_prefix('#')?;
    let (_, rest) = rest.split_once(' ')?;
    if rest.starts_with('[') {
        let end = rest.find(']')?;
        let inner = &rest[1..end];
        if inner.contains('/') {
            return Some(rest.trim().to_string());
        }
    }
    None
}

/// The values of a build's secrets as they could show in its output (a step that prints one):
/// each whole value and each of its lines of 8 bytes or more, trimmed, longest first, with what
/// replaces it (`[secret <id>]`).
fn secret_needles(secrets: &[crate::config::Secret]) -> Vec<(Vec<u8>, Vec<u8>)> {
    use crate::config::SecretFrom;
    use std::os::unix::ffi::OsStringExt;
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for s in secrets {
        let value = match &s.from {
            SecretFrom::Env(var) => std::env::var_os(var).map(OsStringExt::into_vec),
            SecretFrom::File(p) => std::fs::File::open(p).ok().and_then(|f| {
                let mut v = Vec::new();
                f.take(1 << 20).read_to_end(&mut v).ok().map(|_| v)
            }),
        };
        let Some(value) = value else { continue };
        let with = format!("[secret {}]", s.id).into_bytes();
        let mut parts = vec![value.trim_ascii().to_vec()];
        parts.extend(
            value
                .split(|&b| b == b'\n')
                .map(|l| l.trim_ascii().to_vec()),
        );
        for p in parts {
            if p.len() >= 8 && !out.iter().any(|(n, _)| *n == p) {
                out.push((p, with.clone()));
            }
        }
    }
    out.sort_by_key(|n| std::cmp::Reverse(n.0.len()));
    out
}

/// `line` with every secret value in it replaced.
fn redact(mut line: Vec<u8>, needles: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    for (needle, with) in needles {
        if memchr::memmem::find(&line, needle).is_none() {
            continue;
        }
        let mut out = Vec::with_capacity(line.len());
        let mut rest = line.as_slice();
        while let Some(i) = memchr::memmem::find(rest, needle) {
            out.extend_from_slice(&rest[..i]);
            out.extend_from_slice(with);
            rest = &rest[i + needle.len()..];
        }
        out.extend_from_slice(rest);
        line = out;
    }
    line
}

/// The `--build-arg` values of a build, and the variables to set for the client: a value goes
/// through the client's environment (`--build-arg NAME` reads it there), so it is not on a
/// command line any local user can read in `/proc`; only a name the client itself reads
/// (`PATH`, `HOME`, `DOCKER_*`, proxies, ...) or one that is not a variable name stays `NAME=value`.
pub fn build_arg_flags(
    args: &std::collections::BTreeMap<String, String>,
) -> (Vec<String>, Vec<(String, String)>) {
    let mut flags = Vec::new();
    let mut env = Vec::new();
    for (k, v) in args {
        let name_ok = k
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        let upper = k.to_ascii_uppercase();
        let client_reads = ["PATH", "HOME", "USER", "TMPDIR", "SHELL", "LANG", "TZ"]
            .contains(&upper.as_str())
            || [
                "DOCKER_",
                "BUILDKIT_",
                "BUILDX_",
                "SSL_",
                "XDG_",
                "LC_",
                "GO",
                "OTEL_",
            ]
            .iter()
            .any(|p| upper.starts_with(p))
            || upper.ends_with("_PROXY");
        if name_ok && !client_reads && !v.contains('\0') {
            flags.push(k.clone());
            env.push((k.clone(), v.clone()));
        } else {
            flags.push(format!("{k}={v}"));
        }
    }
    (flags, env)
}

/// Removes a file when dropped.
struct RemoveOnDrop<'a>(&'a Path);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

/// The last line of a build's output saying a disk is full (`no space left on device`, which
/// names the path it could not write), trimmed.
pub fn disk_full(log: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(log);
    let line = text
        .lines()
        .rev()
        .find(|l| l.to_ascii_lowercase().contains("no space left on device"))?;
    let line = line.trim();
    Some(match line.char_indices().nth(400) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_string(),
    })
}

impl Docker {
    /// The `--secret` values of a build: `id=…,env=…` (the client reads the variable: the value
    /// is written nowhere) or `id=…,src=…`. A variable that is not set or a file that cannot be
    /// read is an error naming the id; so is a secret with a builder that cannot pass one.
    fn secret_args(&self, req: &BuildRequest) -> std::result::Result<Vec<String>, String> {
        use crate::config::SecretFrom;
        if req.secrets.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = req.secrets.iter().map(|s| s.id.as_str()).collect();
        if self.mode == BuildMode::Legacy {
            let builder = if self.podman {
                "Podman's Docker-compatible build endpoint"
            } else {
                "the legacy builder"
            };
            return Err(format!(
                "`{}` mounts BuildKit secrets ({}), which {builder} cannot pass\n  hint: build with BuildKit (a Docker client with the buildx plugin, or DOCKER_BUILDKIT=1 with Docker 18.09 or later)",
                req.dockerfile,
                ids.join(", ")
            ));
        }
        let mut out = Vec::new();
        for s in &req.secrets {
            match &s.from {
                SecretFrom::Env(var) => {
                    if std::env::var_os(var).is_none() {
                        return Err(format!(
                            "secret `{}`: the variable `{var}` is not set\n  hint: set `{var}` to the secret's value, or change `{}` under `[secrets]` in images.toml",
                            s.id, s.id
                        ));
                    }
                    out.push(format!("id={},env={var}", s.id));
                }
                SecretFrom::File(path) => {
                    let ok = std::fs::metadata(path).map(|m| m.is_file());
                    let shown = path.display();
                    match ok {
                        Ok(true) => {}
                        Ok(false) => {
                            return Err(format!(
                                "secret `{}`: `{shown}` is not a file\n  hint: point `{}` under `[secrets]` in images.toml at the file holding the secret",
                                s.id, s.id
                            ))
                        }
                        Err(e) => {
                            return Err(format!(
                                "secret `{}`: cannot read `{shown}`: {e}\n  hint: create the file, or point `{}` under `[secrets]` in images.toml at another",
                                s.id, s.id
                            ))
                        }
                    }
                    let Some(p) = path.to_str().filter(|p| !p.contains([',', '"', '\n'])) else {
                        return Err(format!(
                            "secret `{}`: the path `{shown}` cannot be passed to `docker build --secret`\n  hint: move the file to a path without commas, quotes or newlines",
                            s.id
                        ));
                    };
                    out.push(format!("id={},src={p}", s.id));
                }
            }
        }
        Ok(out)
    }
}

impl Builder for Docker {
    fn build(
        &self,
        req: &BuildRequest,
        on_line: &(dyn Fn(&str) + Sync),
    ) -> std::result::Result<BuildOutput, BuildError> {
        let fail = |message: String, log: &[u8]| BuildError {
            message,
            log_tail: tail(&String::from_utf8_lossy(log), 30),
            log: log.to_vec(),
            interrupted: false,
        };
        // Unique per process and build: two runs on one cache build the same service at once.
        static BUILDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let iid = req.work_dir.join(format!(
            "{}.{}.{}.iid",
            req.service,
            std::process::id(),
            BUILDS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&iid);
        // Removed however the build ends: no empty image-id file stays behind (a full disk, a
        // failed or interrupted build).
        let _iid_guard = RemoveOnDrop(&iid);
        let mut cmd = self.cmd();
        let secrets = self.secret_args(req).map_err(|m| fail(m, b""))?;
        cmd.args(self.build_args(self.buildx_builder(), req, &iid, &secrets));
        // Build-arg values the client reads from its environment (see `build_arg_flags`).
        cmd.envs(build_arg_flags(&req.build_args).1);
        self.trace.command(&cmd);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Its own process group: a Ctrl-C at the terminal reaches us, and we stop it cleanly.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn().map_err(|e| {
            fail(
                format!("failed to run `{}`: {e}", self.client.display()),
                b"",
            )
        })?;

        let log = Arc::new(Mutex::new(Vec::<u8>::new()));
        let needles = secret_needles(&req.secrets);
        let mut stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let stream_error: Mutex<Option<String>> = Mutex::new(None);
        let stream_failed = std::sync::atomic::AtomicBool::new(false);
        let status = std::thread::scope(|scope| {
            scope.spawn(|| {
                if let Some(w) = stdin.take() {
                    let w = std::io::BufWriter::with_capacity(256 * 1024, w);
                    match super::tar::write_context(&req.root, &req.context, w) {
                        Ok(mut w) => {
                            let _ = w.flush();
                        }
                        Err(e) => {
                            if let Ok(mut s) = stream_error.lock() {
                                *s = Some(e.to_string());
                            }
                            stream_failed.store(true, Ordering::SeqCst);
                        }
                    }
                }
            });
            let pump = |r: Box<dyn Read + Send>| {
                let log = log.clone();
                let needles = &needles;
                move || {
                    for line in BufReader::new(r).split(b'\n') {
                        let Ok(line) = line else { break };
                        let line = redact(line, needles);
                        if let Ok(mut l) = log.lock() {
                            l.extend_from_slice(&line);
                            l.push(b'\n');
                        }
                        on_line(&String::from_utf8_lossy(&line));
                    }
                }
            };
            if let Some(o) = stdout {
                scope.spawn(pump(Box::new(o)));
            }
            if let Some(e) = stderr {
                scope.spawn(pump(Box::new(e)));
            }
            loop {
                if stream_failed.load(Ordering::SeqCst) {
                    // The context could not be streamed whole: stop the build now.
                    let _ = child.kill();
                    return Ok(child.wait().unwrap_or_default());
                }
                if req.cancel.load(Ordering::SeqCst) {
                    // SIGINT lets the client cancel the build in the daemon; then make sure.
                    let pid = child.id() as libc::pid_t;
                    let _ = Command::new("kill")
                        .args(["-INT", &pid.to_string()])
                        .status();
                    for _ in 0..50 {
                        if let Ok(Some(s)) = child.try_wait() {
                            return Err(s);
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    let _ = child.kill();
                    return Err(child.wait().unwrap_or_default());
                }
                match child.try_wait() {
                    Ok(Some(s)) => return Ok(s),
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                    Err(_) => return Ok(child.wait().unwrap_or_default()),
                }
            }
        });
        let log = log.lock().map(|l| l.clone()).unwrap_or_default();
        let status = match status {
            Ok(s) => s,
            Err(_) => {
                return Err(BuildError {
                    message: "interrupted".to_string(),
                    log_tail: tail(&String::from_utf8_lossy(&log), 30),
                    log,
                    interrupted: true,
                })
            }
        };
        if let Some(e) = stream_error.lock().ok().and_then(|s| s.clone()) {
            return Err(fail(e, &log));
        }
        if !status.success() {
            let exited = format!(
                "`docker build` exited with {}",
                status
                    .code()
                    .map(|c| format!("code {c}"))
                    .unwrap_or_else(|| "a signal".to_string())
            );
            let message = match disk_full(&log) {
                Some(line) => format!(
                    "{exited}: a disk is full: {line}\n  hint: free space where that path is: the Docker engine's data (`docker system df`, `docker builder prune`) or the cache directory `{}` (`cargo xtask cache gc`)",
                    req.work_dir.parent().unwrap_or(&req.work_dir).display()
                ),
                None => exited,
            };
            return Err(fail(message, &log));
        }
        let image_id = std::fs::read_to_string(&iid)
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        if !image_id.starts_with("sha256:") {
            return Err(fail(
                "`docker build` succeeded but wrote no image id".to_string(),
                &log,
            ));
        }
        Ok(BuildOutput { image_id, log })
    }

    fn cache_export(&self) -> CacheExport {
        match self.mode {
            _ if self.podman => CacheExport::None,
            // A builder of its own (docker-container, …) exports a cache image; buildx's
            // `docker` driver cannot (`cache export feature is currently not supported`), but
            // builds inline cache as the classic client does.
            BuildMode::Buildx if self.buildx_builder().is_some_and(BuildxBuilder::needs_load) => {
                CacheExport::Registry
            }
            BuildMode::Buildx | BuildMode::BuildkitEnv => CacheExport::Inline,
            BuildMode::Legacy => CacheExport::None,
        }
    }

    fn cache_identity(&self) -> String {
        format!("docker {} {:?}", self.version, self.mode)
    }

    fn discard(&self, image_id: &str) {
        // Only while untagged: `rmi` of an id with one tag would remove someone's tag.
        let tags = self.run_ok(&[
            "image",
            "inspect",
            "--format",
            "{{len .RepoTags}}",
            image_id,
        ]);
        if tags.is_ok_and(|t| t == "0") {
            let _ = self.run_ok(&["rmi", image_id]);
        }
    }
}

impl Images for Docker {
    fn list(&self) -> Result<Vec<LocalImage>> {
        self.images()
    }

    fn tag(&self, image_id: &str, reference: &str) -> Result<()> {
        self.tag_image(image_id, reference)
    }

    fn pull(&self, reference: &str) -> Result<LocalImage> {
        self.run_ok(&["pull", "--quiet", reference])?;
        self.inspect(reference)
            .ok_or_else(|| Error::Other(format!("`{reference}` is missing after its pull")))
    }

    fn push(&self, image_id: &str, reference: &str) -> Result<()> {
        self.tag_image(image_id, reference)?;
        self.run_ok(&["push", reference]).map(|_| ())
    }

    fn platform(&self) -> Option<String> {
        Docker::platform(self)
    }
}

impl Verifier for Docker {
    fn verify(
        &self,
        cache_dir: &Path,
        subject: &Subject,
        image: &str,
        key: &ImageKey,
        image_id: &str,
    ) -> Result<Verified> {
        crate::verify::verify_key(self, cache_dir, subject, image, key, image_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_cache_arguments_follow_what_the_client_can() {
        let with_builder = |mode, driver: Option<&str>| Docker {
            client: PathBuf::from("docker"),
            version: "20.10.24".into(),
            mode,
            podman: false,
            builder: Arc::new(OnceLock::from(driver.map(|d| BuildxBuilder {
                name: "b".into(),
                driver: d.into(),
            }))),
            trace: Tracer::default(),
        };
        let d = |mode| with_builder(mode, None);
        let lc = LayerCache {
            from: vec!["r/ns/a:layers".into(), "r/ns/a:layers-builder".into()],
            to: Some("r/ns/a:buildcache".into()),
        };
        assert_eq!(
            d(BuildMode::BuildkitEnv).cache_args(&lc),
            [
                "--build-arg",
                "BUILDKIT_INLINE_CACHE=1",
                "--cache-from",
                "r/ns/a:layers",
                "--cache-from",
                "r/ns/a:layers-builder"
            ]
        );
        // buildx with its `docker` driver: inline, as the classic client.
        assert_eq!(
            with_builder(BuildMode::Buildx, Some("docker")).cache_args(&lc),
            d(BuildMode::BuildkitEnv).cache_args(&lc)
        );
        // A builder of its own exports a cache image.
        assert_eq!(
            with_builder(BuildMode::Buildx, Some("docker-container")).cache_args(&lc),
            [
                "--cache-from",
                "type=registry,ref=r/ns/a:layers",
                "--cache-from",
                "type=registry,ref=r/ns/a:layers-builder",
                "--cache-to",
                "type=registry,ref=r/ns/a:buildcache,mode=max"
            ]
        );
        // Import only: no cache metadata computed for an image nobody pushes as a cache.
        let import_only = LayerCache {
            to: None,
            ..lc.clone()
        };
        assert_eq!(
            d(BuildMode::BuildkitEnv).cache_args(&import_only),
            [
                "--cache-from",
                "r/ns/a:layers",
                "--cache-from",
                "r/ns/a:layers-builder"
            ]
        );
        assert_eq!(
            with_builder(BuildMode::Buildx, Some("docker-container")).cache_args(&import_only),
            [
                "--cache-from",
                "type=registry,ref=r/ns/a:layers",
                "--cache-from",
                "type=registry,ref=r/ns/a:layers-builder"
            ]
        );
        assert!(d(BuildMode::Legacy).cache_args(&lc).is_empty());
        let podman = Docker {
            podman: true,
            ..d(BuildMode::BuildkitEnv)
        };
        assert_eq!(podman.cache_export(), CacheExport::None);
        assert!(podman.cache_args(&lc).is_empty());
    }

    #[test]
    fn the_engine_api_answers_like_the_cli() {
        // Needs an engine: CI has one (scripts/test.sh starts it) and must not pass without it.
        let ci = std::env::var_os("CI").is_some();
        let Some(sock) = engine_socket() else {
            assert!(!ci, "no Docker engine socket in CI");
            return;
        };
        let docker = Docker::detect().expect("a docker client");
        let sorted = |mut v: Vec<LocalImage>| {
            for i in &mut v {
                i.tags.sort();
            }
            v.sort_by(|a, b| a.id.cmp(&b.id));
            v
        };
        // Other helpers build meanwhile: compare twice at most.
        let mut last = None;
        for _ in 0..3 {
            let api = sorted(api_images(&sock).expect("images from the API"));
            let cli = sorted(docker.images_cli().expect("images from the client"));
            if api == cli {
                return;
            }
            last = Some((api, cli));
        }
        let (api, cli) = last.expect("compared");
        assert_eq!(api, cli);
    }

    /// `docker buildx inspect` as buildx prints it, for the `docker` driver (current and older
    /// buildx), `docker-container` and `remote` (transcribed from buildx's documented output:
    /// no buildx plugin is installable on the machine that runs these tests).
    const INSPECT_DOCKER: &str = include_str!("testdata/buildx-inspect-docker.txt");
    const INSPECT_DOCKER_OLD: &str = include_str!("testdata/buildx-inspect-docker-old.txt");
    const INSPECT_CONTAINER: &str = include_str!("testdata/buildx-inspect-docker-container.txt");
    const INSPECT_REMOTE: &str = include_str!("testdata/buildx-inspect-remote.txt");

    #[test]
    fn the_builder_in_use_from_buildx_inspect() {
        let parsed = |s: &str| BuildxBuilder::parse(s).expect("a builder");
        let d = parsed(INSPECT_DOCKER);
        assert_eq!((d.name.as_str(), d.driver.as_str()), ("default", "docker"));
        assert!(!d.needs_load());
        assert!(!parsed(INSPECT_DOCKER_OLD).needs_load());
        let c = parsed(INSPECT_CONTAINER);
        assert_eq!(
            (c.name.as_str(), c.driver.as_str()),
            ("builder", "docker-container")
        );
        assert!(c.needs_load());
        // "Driver Options:" of a node is not the builder's driver.
        assert!(!INSPECT_CONTAINER
            .lines()
            .nth(1)
            .unwrap_or_default()
            .contains("Options"));
        assert_eq!(parsed(INSPECT_REMOTE).driver, "remote");
        assert!(parsed(INSPECT_REMOTE).needs_load());
        assert_eq!(BuildxBuilder::parse(""), None);
        assert_eq!(BuildxBuilder::parse("error: no builder \"x\" found"), None);
    }

    #[test]
    fn a_builder_with_its_own_store_loads_into_the_engine() {
        let docker = Docker {
            client: PathBuf::from("docker"),
            version: "27.0.0".into(),
            mode: BuildMode::Buildx,
            podman: false,
            builder: Arc::default(),
            trace: Tracer::default(),
        };
        let req = BuildRequest {
            service: "a".into(),
            root: PathBuf::from("/m"),
            context: crate::context::Context {
                service: 0,
                files: Vec::new(),
                digest: crate::digest::ContextDigest::of_bytes(b""),
                dockerignore: None,
                dockerfile: Arc::new(
                    crate::dockerfile::Dockerfile::parse(Path::new("Dockerfile"), "FROM scratch\n")
                        .expect("a Dockerfile"),
                ),
                covers: Vec::new(),
            },
            dockerfile: "services/a/Dockerfile".into(),
            labels: [("k".to_string(), "v".to_string())].into(),
            build_args: Default::default(),
            secrets: Vec::new(),
            target: None,
            platform: None,
            work_dir: PathBuf::from("/w"),
            cancel: Arc::default(),
            layer_cache: None,
        };
        let args = |inspect: &str| -> Vec<String> {
            let b = BuildxBuilder::parse(inspect);
            docker
                .build_args(b.as_ref(), &req, Path::new("/w/a.iid"), &[])
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        };
        let container = args(INSPECT_CONTAINER);
        assert_eq!(
            container[..4],
            ["buildx", "build", "--load", "--progress=plain"]
        );
        assert_eq!(container.last().map(String::as_str), Some("-"));
        assert!(container.windows(2).any(|w| w == ["--iidfile", "/w/a.iid"]));
        assert_eq!(args(INSPECT_REMOTE)[..3], ["buildx", "build", "--load"]);
        let own = args(INSPECT_DOCKER);
        assert_eq!(own[..2], ["build", "--progress=plain"]);
        assert!(!own.iter().any(|a| a == "--load"));
        // No buildx at all (a 20.10 client with DOCKER_BUILDKIT=1): a plain `docker build`.
        let plain = docker.build_args(None, &req, Path::new("/w/a.iid"), &[]);
        assert_eq!(plain[0], "build");
        assert!(!plain.iter().any(|a| a == "--load"));
    }

    #[test]
    fn build_arg_values_go_through_the_environment() {
        let args: std::collections::BTreeMap<String, String> = [
            ("NPM_TOKEN", "npm_value"),
            ("HTTP_PROXY", "http://p:3128"),
            ("PATH", "/x"),
            ("DOCKER_HOST", "tcp://x"),
            ("a-b", "v"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let (flags, env) = build_arg_flags(&args);
        assert_eq!(
            flags,
            [
                "DOCKER_HOST=tcp://x",
                "HTTP_PROXY=http://p:3128",
                "NPM_TOKEN",
                "PATH=/x",
                "a-b=v"
            ]
        );
        assert_eq!(env, [("NPM_TOKEN".to_string(), "npm_value".to_string())]);
    }

    #[test]
    fn traces_show_no_build_arg_value() {
        let mut c = Command::new("docker");
        c.args([
            "build",
            "--build-arg",
            "HTTPS_PROXY=http://u:p@h",
            "--build-arg",
            "NPM_TOKEN",
        ])
        .args(["--label", "k=v", "-"]);
        assert_eq!(
            traced_argv(&c),
            [
                "docker",
                "build",
                "--build-arg",
                "HTTPS_PROXY=<value not shown>",
                "--build-arg",
                "NPM_TOKEN",
                "--label",
                "k=v",
                "-"
            ]
        );
    }

    #[test]
    fn secret_values_are_redacted_from_build_output() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("netrc");
        std::fs::write(&file, "machine h login u password filecanary123\nshort\n").expect("write");
        let secrets = [crate::config::Secret {
            id: "netrc".into(),
            from: crate::config::SecretFrom::File(file),
        }];
        let needles = secret_needles(&secrets);
        let line = b"#5 0.3 machine h login u password filecanary123 and short".to_vec();
        assert_eq!(
            String::from_utf8(redact(line, &needles)).expect("utf-8"),
            "#5 0.3 [secret netrc] and short"
        );
        assert_eq!(redact(b"nothing here".to_vec(), &needles), b"nothing here");
    }

    #[test]
    fn a_full_disk_is_found_in_the_log_with_its_path() {
        let log = b"#7 [2/2] COPY x /x\n#7 ERROR: failed to copy: write /var/lib/docker/tmp/x: No space left on device\n------\nerror: exit status 1\n";
        assert_eq!(
            disk_full(log).as_deref(),
            Some("#7 ERROR: failed to copy: write /var/lib/docker/tmp/x: No space left on device")
        );
        assert_eq!(disk_full(b"#1 DONE\n"), None);
    }

    #[test]
    fn steps_from_both_builders() {
        assert_eq!(
            step_of("Step 3/20 : RUN pnpm install").as_deref(),
            Some("3/20 : RUN pnpm install")
        );
        assert_eq!(
            step_of("#7 [deps 3/4] RUN pnpm install --frozen-lockfile").as_deref(),
            Some("[deps 3/4] RUN pnpm install --frozen-lockfile")
        );
        assert_eq!(step_of("#7 0.512 Progress: resolved 5"), None);
        assert_eq!(step_of("#1 [internal] load build definition"), None);
    }
}
