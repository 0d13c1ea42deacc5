//! Test support: a fixture-monorepo builder (as cargo-test-support's `project()`), a copy of the
//! bundled example, and helpers to run `cargo xtask` for real.

pub mod dockerd;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The repository root (where the cargo workspace is).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// The bundled example monorepo.
pub fn example_dir() -> PathBuf {
    repo_root().join("examples").join("kc-backend")
}

/// A temporary monorepo being written.
pub struct Project {
    dir: tempfile::TempDir,
    files: Vec<(String, String)>,
    shared: bool,
}

/// A minimal Dockerfile in the seed's shape for a fixture service.
pub fn fixture_dockerfile(service: &str) -> String {
    format!(
        "FROM node:18-alpine AS base\nWORKDIR /app\nFROM base AS deps\nCOPY package.json pnpm-workspace.yaml ./\nCOPY shared/package.json shared/\nCOPY services/{service}/package.json services/{service}/\nFROM deps AS builder\nCOPY shared/ shared/\nCOPY services/{service}/ services/{service}/\nFROM node:18-alpine AS runtime\nCOPY --from=builder /app/services/{service} /app/service\nUSER nodejs\nHEALTHCHECK CMD node -e \"0\"\nCMD [\"node\", \"dist/index.js\"]\n"
    )
}

/// Starts a fixture: a root `package.json`, `pnpm-workspace.yaml` (`shared`, `services/*`) and a
/// `.dockerignore`; add packages with the methods below.
pub fn project() -> Project {
    let dir = tempfile::Builder::new()
        .prefix("kc-fixture-")
        .tempdir()
        .unwrap_or_else(|e| panic!("failed to create a temp dir: {e}"));
    Project {
        dir,
        files: vec![
            (
                "package.json".into(),
                "{\n  \"name\": \"fixture\",\n  \"private\": true\n}\n".into(),
            ),
            (
                "pnpm-workspace.yaml".into(),
                "packages:\n  - 'shared'\n  - 'services/*'\n".into(),
            ),
            (
                ".dockerignore".into(),
                "**/node_modules\n**/dist\n**/*.log\n".into(),
            ),
        ],
        shared: false,
    }
}

impl Project {
    /// Adds (or replaces) a file.
    pub fn file(mut self, path: &str, contents: &str) -> Project {
        self.files.retain(|(p, _)| p != path);
        self.files.push((path.to_string(), contents.to_string()));
        self
    }

    /// Adds the shared library `@fx/shared` with a source file.
    pub fn shared(mut self) -> Project {
        self.shared = true;
        self.file(
            "shared/package.json",
            "{\n  \"name\": \"@fx/shared\",\n  \"version\": \"1.0.0\"\n}\n",
        )
        .file("shared/src/index.ts", "export const shared = 1;\n")
    }

    /// Adds a service `services/<name>` depending on the shared package (if any) and on `deps`
    /// (`name` -> specifier), with a Dockerfile and a source file.
    pub fn service(self, name: &str, deps: &[(&str, &str)]) -> Project {
        let mut all: Vec<(String, String)> = Vec::new();
        if self.shared {
            all.push(("@fx/shared".into(), "workspace:*".into()));
        }
        all.extend(deps.iter().map(|(a, b)| (a.to_string(), b.to_string())));
        let deps_json = all
            .iter()
            .map(|(n, s)| format!("    \"{n}\": \"{s}\""))
            .collect::<Vec<_>>()
            .join(",\n");
        let pkg = format!(
            "{{\n  \"name\": \"@fx/{name}\",\n  \"version\": \"1.0.0\",\n  \"config\": {{ \"port\": 3000 }},\n  \"dependencies\": {{\n{deps_json}\n  }}\n}}\n"
        );
        self.file(&format!("services/{name}/package.json"), &pkg)
            .file(
                &format!("services/{name}/src/index.ts"),
                &format!("console.log('{name}');\n"),
            )
            .file(
                &format!("services/{name}/Dockerfile"),
                &fixture_dockerfile(name),
            )
    }

    /// Writes the files and returns the finished fixture.
    pub fn build(self) -> Fixture {
        for (p, c) in &self.files {
            write(&self.dir.path().join(p), c);
        }
        Fixture { dir: self.dir }
    }
}

/// A monorepo on disk, removed when dropped.
pub struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    pub fn root(&self) -> &Path {
        self.dir.path()
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    pub fn write(&self, rel: &str, contents: &str) {
        write(&self.path(rel), contents)
    }
    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel))
            .unwrap_or_else(|e| panic!("failed to read {rel}: {e}"))
    }
    pub fn remove(&self, rel: &str) {
        std::fs::remove_file(self.path(rel))
            .unwrap_or_else(|e| panic!("failed to remove {rel}: {e}"))
    }
    pub fn rename(&self, from: &str, to: &str) {
        std::fs::rename(self.path(from), self.path(to))
            .unwrap_or_else(|e| panic!("failed to rename {from}: {e}"))
    }
    /// Sets or clears the owner-execute bit.
    pub fn set_executable(&self, rel: &str, exec: bool) {
        use std::os::unix::fs::PermissionsExt;
        let p = self.path(rel);
        let mut perm = std::fs::metadata(&p).expect("stat").permissions();
        let mode = if exec {
            perm.mode() | 0o111
        } else {
            perm.mode() & !0o111
        };
        perm.set_mode(mode);
        std::fs::set_permissions(&p, perm).expect("chmod");
    }
}

/// Copies the bundled example (without `node_modules`, `dist` and caches) into a temp dir.
pub fn copy_example() -> Fixture {
    let dir = tempfile::Builder::new()
        .prefix("kc-example-")
        .tempdir()
        .unwrap_or_else(|e| panic!("failed to create a temp dir: {e}"));
    copy_tree(&example_dir(), dir.path());
    Fixture { dir }
}

/// Copies a tree, skipping `node_modules`, `dist` and `.images-cache`.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name();
        if matches!(
            name.to_str(),
            Some("node_modules" | "dist" | ".images-cache")
        ) {
            continue;
        }
        let ft = entry.file_type().expect("file type");
        let dest = to.join(&name);
        if ft.is_dir() {
            copy_tree(&entry.path(), &dest);
        } else if ft.is_symlink() {
            let target = std::fs::read_link(entry.path()).expect("readlink");
            std::os::unix::fs::symlink(target, &dest).expect("symlink");
        } else {
            std::fs::copy(entry.path(), &dest).expect("copy");
        }
    }
}

fn write(path: &Path, contents: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
    }
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// The `xtask` binary, built once per test run (the `xtask` profile, as users run it), or the one
/// named by `XTASK_BIN`.
pub fn xtask_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("XTASK_BIN") {
            return PathBuf::from(p);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "--profile",
                "xtask",
                "--package",
                "xtask",
            ])
            .current_dir(repo_root())
            .status()
            .expect("failed to run cargo build for xtask");
        assert!(status.success(), "building xtask failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join("target"));
        target.join("xtask").join("xtask")
    })
    .clone()
}

/// Runs `cargo xtask ARGS` with `--root root`.
pub fn xtask(root: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(xtask_bin());
    cmd.arg("--root").arg(root).args(args);
    cmd.env_remove("IMAGES_ROOT").env_remove("IMAGES_CACHE_DIR");
    cmd.output().expect("failed to run xtask")
}

/// Runs xtask and parses its stdout as JSON, panicking with stderr when it fails.
pub fn xtask_json(root: &Path, args: &[&str]) -> serde_json::Value {
    let out = xtask(root, args);
    assert!(
        out.status.success(),
        "xtask {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "xtask {args:?} printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Analyses a monorepo with the engine directly, with a private cache dir.
pub fn analyze(root: &Path) -> engine::pipeline::Analysis {
    let mut opts = engine::pipeline::Options::new(root);
    opts.cache_dir = Some(root.join(".images-cache"));
    engine::pipeline::analyze(&opts).unwrap_or_else(|e| panic!("analyze failed: {e}"))
}

/// Each service's key, by service name.
pub fn keys(root: &Path) -> std::collections::BTreeMap<String, String> {
    let a = analyze_ok(root);
    a.images
        .iter()
        .map(|i| (a.ws.services[i.service].name.clone(), i.key.to_hex()))
        .collect()
}

/// The error of analysing a monorepo, as text: the whole analysis's, or the services' that
/// fail alone (one per line group).
pub fn analyze_error(root: &Path) -> String {
    let mut opts = engine::pipeline::Options::new(root);
    opts.cache_dir = Some(root.join(".images-cache"));
    match engine::pipeline::analyze(&opts) {
        Ok(a) if a.failed.is_empty() => panic!(
            "analysis of {} succeeded, an error was expected",
            root.display()
        ),
        Ok(a) => a
            .failed
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => e.to_string(),
    }
}

/// Analyses a monorepo that must analyse whole: no service may fail.
pub fn analyze_ok(root: &Path) -> engine::pipeline::Analysis {
    let a = analyze(root);
    assert!(
        a.failed.is_empty(),
        "services failed: {}",
        a.failed
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    a
}

/// End-to-end Docker tests share one engine and two cores: one at a time, across modules.
pub static DOCKER_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes the Docker lock (a test that panicked while holding it does not poison the others).
pub fn docker_lock() -> std::sync::MutexGuard<'static, ()> {
    DOCKER_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A `docker` command: the client named by `DOCKER` (default `docker`), with BuildKit on unless
/// `DOCKER_BUILDKIT` is set.
pub fn docker() -> Command {
    let client = std::env::var("DOCKER").unwrap_or_else(|_| "docker".into());
    let mut c = Command::new(client);
    if std::env::var("DOCKER_BUILDKIT").is_err() {
        c.env("DOCKER_BUILDKIT", "1");
    }
    c
}

/// Fails the test, saying how to run it, when no Docker engine answers.
pub fn require_docker() {
    let out = docker_out(&["version", "--format", "{{.Server.Version}}"]);
    assert!(
        out.status.success(),
        "these tests need a Docker engine (run them with scripts/test.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `docker ARGS` and returns its output, whatever its status.
pub fn docker_out(args: &[&str]) -> Output {
    docker().args(args).output().expect("failed to run docker")
}

/// Runs `docker ARGS`, panicking with its stderr when it fails; returns its trimmed stdout.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker_out(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The local images (`repository:tag`) whose name starts with `prefix`, or, with `qualified`,
/// has it after a registry (`host:port/<prefix>…`); `None` if Docker could not be run.
fn images_with_prefix(prefix: &str, qualified: bool) -> Option<Vec<String>> {
    let list = docker()
        .args([
            "images",
            "--digests",
            "--format",
            "{{.Repository}}:{{.Tag}}\t{{.Repository}}@{{.Digest}}",
        ])
        .output()
        .ok()?;
    let in_registry = format!("/{prefix}");
    Some(
        String::from_utf8_lossy(&list.stdout)
            .lines()
            .filter(|l| l.starts_with(prefix) || (qualified && l.contains(&in_registry)))
            // An image pulled by digest has no tag: it is named by its digest.
            .filter_map(|l| match l.split_once('\t') {
                Some((tagged, _)) if !tagged.ends_with(":<none>") => Some(tagged.to_string()),
                Some((_, digested)) if !digested.ends_with("@<none>") => Some(digested.to_string()),
                _ => None,
            })
            .collect(),
    )
}

/// Removes (`rmi -f`) the local images whose name starts with `prefix`, ignoring any failure:
/// cleanup for a fixture's `Drop`.
pub fn remove_images(prefix: &str) {
    if let Some(tags) = images_with_prefix(prefix, false) {
        if !tags.is_empty() {
            let _ = docker().args(["rmi", "-f"]).args(&tags).output();
        }
    }
}

/// Removes (`rmi -f`) the local images named with `prefix`, pushed and pulled ones
/// (`host:port/…/<prefix>…`) included, ignoring any failure: cleanup for a fixture's `Drop`.
pub fn remove_all_images(prefix: &str) {
    if let Some(tags) = images_with_prefix(prefix, true) {
        if !tags.is_empty() {
            let _ = docker().args(["rmi", "-f"]).args(&tags).output();
        }
    }
}

/// Removes (`rmi -f`) the local images named with `prefix`, pushed ones (`host:port/<prefix>…`)
/// included, panicking if Docker cannot be run or `rmi` fails.
pub fn remove_images_ok(prefix: &str) {
    let tags = images_with_prefix(prefix, true).expect("failed to run docker");
    if !tags.is_empty() {
        let mut args = vec!["rmi", "-f"];
        args.extend(tags.iter().map(String::as_str));
        docker_ok(&args);
    }
}

/// A tiny image made for a test (`docker import` of one file): a base image that builds in no
/// time and that the test may retag. Removed when dropped.
pub struct TinyImage {
    pub reference: String,
    pub id: String,
}

impl TinyImage {
    /// Imports an image holding `/base.txt` (with `marker` in it) as `reference`.
    pub fn import(reference: &str, marker: &str) -> TinyImage {
        let mut tar = tar::Builder::new(Vec::new());
        let body = format!("tiny base {marker}\n");
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, "base.txt", body.as_bytes())
            .expect("tar");
        let bytes = tar.into_inner().expect("tar");
        let mut child = docker()
            .args(["import", "-", reference])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("failed to run docker import");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(&bytes).expect("write to docker import");
        }
        let out = child.wait_with_output().expect("docker import");
        assert!(
            out.status.success(),
            "docker import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = docker_ok(&["image", "inspect", "--format", "{{.Id}}", reference]);
        TinyImage {
            reference: reference.to_string(),
            id,
        }
    }
}

impl Drop for TinyImage {
    fn drop(&mut self) {
        let _ = docker().args(["rmi", "-f", &self.reference]).output();
    }
}

/// One entry of an image's file tree: its kind, mode, and content digest (a symlink: its target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    pub kind: char,
    pub mode: u32,
    pub digest: String,
}

/// The file tree of an image (path without a leading `/` -> entry), from `docker create` and
/// `docker export`, without what the container runtime adds (`.dockerenv`, `/dev`, `/proc`,
/// `/sys`, `/etc/hosts`, ...).
pub fn image_tree(image: &str) -> std::collections::BTreeMap<String, TreeEntry> {
    let cid = docker_ok(&["create", image, "/nonexistent"]);
    let out = docker()
        .args(["export", &cid])
        .output()
        .expect("failed to run docker export");
    let _ = docker().args(["rm", "-f", &cid]).output();
    assert!(
        out.status.success(),
        "docker export failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut tree = std::collections::BTreeMap::new();
    let mut archive = tar::Archive::new(out.stdout.as_slice());
    for entry in archive.entries().expect("tar entries") {
        let mut entry = entry.expect("tar entry");
        let path = String::from_utf8_lossy(&entry.path_bytes())
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        let runtime = [
            ".dockerenv",
            "etc/hosts",
            "etc/hostname",
            "etc/resolv.conf",
            "etc/mtab",
        ];
        if path.is_empty()
            || runtime.contains(&path.as_str())
            || ["dev", "proc", "sys"]
                .iter()
                .any(|d| path == *d || path.starts_with(&format!("{d}/")))
        {
            continue;
        }
        let h = entry.header();
        let mode = h.mode().expect("mode") & 0o7777;
        let (kind, digest) = match h.entry_type() {
            tar::EntryType::Directory => ('d', String::new()),
            tar::EntryType::Symlink => (
                'l',
                entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default(),
            ),
            tar::EntryType::Link => (
                'h',
                entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default(),
            ),
            _ => {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut bytes).expect("read tar entry");
                ('f', blake3::hash(&bytes).to_hex().to_string())
            }
        };
        tree.insert(path, TreeEntry { kind, mode, digest });
    }
    tree
}

/// Runs a command, panicking with its output when it fails.
pub fn run_ok(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: failed to start: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes a real `pnpm-lock.yaml` for a fixture (`pnpm install --lockfile-only`, pnpm 8.15 as
/// `scripts/test.sh` installs it).
pub fn pnpm_lockfile(root: &Path) {
    run_ok(
        Command::new("pnpm")
            .args(["install", "--lockfile-only", "--ignore-scripts"])
            .env("CI", "true")
            .current_dir(root),
        "pnpm install --lockfile-only (is pnpm 8.15 installed? `npm i -g pnpm@8.15.0`)",
    );
}

/// The bytes of one file of a service's context, as the builder gets them (the pruned lockfile
/// included).
pub fn context_file(a: &engine::pipeline::Analysis, service: &str, path: &str) -> Vec<u8> {
    let s = a.ws.service(service).expect("service");
    let f = a
        .image(s)
        .expect("analysed")
        .context
        .files
        .iter()
        .find(|f| &*f.path == path)
        .unwrap_or_else(|| panic!("{path} is not in the context of {service}"));
    match &f.source {
        engine::context::Source::Virtual(b) => b.to_vec(),
        engine::context::Source::Disk => {
            std::fs::read(a.ws.root.join(path)).expect("read context file")
        }
    }
}

/// Writes the context of `service` (exactly the tar the builder gets) into `dest`.
pub fn materialize(root: &Path, a: &engine::pipeline::Analysis, service: &str, dest: &Path) {
    let s = a.ws.service(service).expect("service");
    let img = a.image(s).expect("analysed");
    let tar = engine::execute::tar::write_context(root, &img.context, Vec::new()).expect("tar");
    std::fs::create_dir_all(dest).expect("mkdir");
    let mut archive = tar::Archive::new(tar.as_slice());
    archive.set_preserve_permissions(true);
    archive.unpack(dest).expect("unpack the context");
}

/// What a command wrote to a terminal, and how it ended.
pub struct TtyOutput {
    pub status: std::process::ExitStatus,
    /// Everything written to the terminal (stderr), escape sequences included.
    pub tty: String,
    /// Its stdout (a pipe, so that a `--json` document stays apart).
    pub stdout: Vec<u8>,
}

/// Runs `xtask --root root ARGS` with its stderr on a pseudo-terminal (120x40, `TERM=xterm`),
/// as at a developer's terminal, and `env` set (colour variables are cleared first). The
/// terminal is read until the command closes it.
pub fn xtask_tty(root: &Path, args: &[&str], env: &[(&str, &str)]) -> TtyOutput {
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;

    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("openpt");
    grantpt(&master).expect("grantpt");
    unlockpt(&master).expect("unlockpt");
    let name = ptsname(&master, Vec::new()).expect("ptsname");
    rustix::termios::tcsetwinsize(
        &master,
        rustix::termios::Winsize {
            ws_row: 40,
            ws_col: 120,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )
    .expect("set the terminal's size");
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc_o_noctty())
        .open(name.to_string_lossy().as_ref())
        .expect("open the terminal");
    let mut cmd = Command::new(xtask_bin());
    cmd.arg("--root").arg(root).args(args);
    for k in [
        "IMAGES_ROOT",
        "IMAGES_CACHE_DIR",
        "NO_COLOR",
        "CLICOLOR",
        "CLICOLOR_FORCE",
        "IMAGES_PROGRESS",
    ] {
        cmd.env_remove(k);
    }
    cmd.env("TERM", "xterm-256color");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::from(slave));
    let mut child = cmd.spawn().expect("failed to run xtask");
    // The parent's copy of the terminal's end goes with the command: reads end when the child's do.
    drop(cmd);
    let mut master = std::fs::File::from(master);
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        // Linux answers EIO once no process holds the terminal open.
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    });
    let mut stdout = Vec::new();
    if let Some(mut o) = child.stdout.take() {
        o.read_to_end(&mut stdout).expect("read stdout");
    }
    let status = child.wait().expect("wait for xtask");
    let tty = reader.join().expect("terminal reader");
    TtyOutput {
        status,
        tty: String::from_utf8_lossy(&tty).into_owned(),
        stdout,
    }
}

/// `O_NOCTTY`: opening the terminal does not make it the test process's controlling terminal.
fn libc_o_noctty() -> i32 {
    rustix::fs::OFlags::NOCTTY.bits() as i32
}

/// Runs `git -C dir args…` with a fixed author, asserts it succeeded, and returns its trimmed
/// standard output.
pub fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
