//! Discover: the pnpm workspace at a root — `pnpm-workspace.yaml` (globs with `**` and `!`
//! exclusions, catalogs), every `package.json` with all its dependency kinds, the workspace protocol,
//! and which packages are services (a package with a Dockerfile in its directory).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Deserialize;

use crate::config::Config;
use crate::lockfile::Lockfile;
use crate::{Error, Result};

pub const WORKSPACE_FILE: &str = "pnpm-workspace.yaml";
pub const LOCKFILE: &str = "pnpm-lock.yaml";

/// Directories never searched for workspace packages (as pnpm's own default ignores).
const NEVER_PACKAGES: &[&str] = &["node_modules", "bower_components", ".git"];

/// The kind of a dependency, as the `package.json` field that declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum DepKind {
    Dependencies,
    DevDependencies,
    OptionalDependencies,
    PeerDependencies,
}

impl DepKind {
    pub const ALL: [DepKind; 4] = [
        DepKind::Dependencies,
        DepKind::DevDependencies,
        DepKind::OptionalDependencies,
        DepKind::PeerDependencies,
    ];
    pub fn field(self) -> &'static str {
        match self {
            DepKind::Dependencies => "dependencies",
            DepKind::DevDependencies => "devDependencies",
            DepKind::OptionalDependencies => "optionalDependencies",
            DepKind::PeerDependencies => "peerDependencies",
        }
    }
}

/// One dependency of a package.
#[derive(Debug, Clone)]
pub struct Dependency {
    pub name: String,
    pub specifier: String,
    pub kind: DepKind,
    /// The index of the workspace package it resolves to, if any.
    pub workspace: Option<usize>,
}

/// One workspace package (the root included, with `dir == "."`).
#[derive(Debug, Clone)]
pub struct Package {
    /// The `name` field; a package without one cannot be depended on.
    pub name: Option<String>,
    pub version: Option<String>,
    /// The directory relative to the root, `/`-separated; `.` for the root package.
    pub dir: String,
    pub dependencies: Vec<Dependency>,
    /// `config.port` (or `port`) of the `package.json`.
    pub port: Option<u16>,
}

impl Package {
    pub fn is_root(&self) -> bool {
        self.dir == "."
    }
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.dir)
    }
    pub fn manifest(&self) -> String {
        if self.is_root() {
            "package.json".to_string()
        } else {
            format!("{}/package.json", self.dir)
        }
    }
}

/// A service: a workspace package whose directory holds a Dockerfile.
#[derive(Debug, Clone)]
pub struct Service {
    /// The service name: the package directory's base name (e.g. `student-service`).
    pub name: String,
    /// The index of its package in [`Workspace::packages`].
    pub package: usize,
    /// The Dockerfile, relative to the root.
    pub dockerfile: String,
    /// The image name (without tag), validated.
    pub image: String,
}

/// A discovered pnpm workspace.
#[derive(Debug)]
pub struct Workspace {
    pub root: PathBuf,
    pub config: Config,
    /// Packages sorted by directory; index 0 is the root package.
    pub packages: Vec<Package>,
    pub services: Vec<Service>,
    /// The lockfile, if any; a lockfile that cannot be read fails only the contexts that copy it
    /// (the error, as text).
    pub lockfile: std::result::Result<Option<Lockfile>, String>,
    /// `catalog` and `catalogs` of `pnpm-workspace.yaml`: catalog name -> package -> range.
    pub catalogs: BTreeMap<String, BTreeMap<String, String>>,
    by_name: HashMap<String, usize>,
}

#[derive(Deserialize, Default)]
struct WorkspaceYaml {
    #[serde(default)]
    packages: Option<Vec<String>>,
    #[serde(default)]
    catalog: Option<BTreeMap<String, String>>,
    #[serde(default)]
    catalogs: Option<BTreeMap<String, BTreeMap<String, String>>>,
}

impl Workspace {
    /// Discovers the workspace at `root`.
    pub fn discover(root: &Path) -> Result<Workspace> {
        let root = root.canonicalize().map_err(|e| Error::NoWorkspace {
            root: root.to_path_buf(),
            message: e.to_string(),
        })?;
        let (config, _) = Config::load(&root)?;
        Self::discover_with(&root, config)
    }

    pub fn discover_with(root: &Path, config: Config) -> Result<Workspace> {
        let ws_path = root.join(WORKSPACE_FILE);
        let text = match std::fs::read_to_string(&ws_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NoWorkspace {
                    root: root.to_path_buf(),
                    message: format!("`{WORKSPACE_FILE}` not found"),
                })
            }
            Err(e) => return Err(Error::io("read", ws_path, e)),
        };
        let ws: WorkspaceYaml = if text.trim().is_empty() {
            WorkspaceYaml::default()
        } else {
            serde_norway::from_str(&text).map_err(|e| Error::Yaml {
                path: ws_path.clone(),
                line: e.location().map(|l| l.line()),
                message: e.to_string(),
                hint: "`pnpm-workspace.yaml` holds `packages:` (a list of globs) and optionally `catalog:`/`catalogs:`",
            })?
        };
        let mut catalogs = ws.catalogs.unwrap_or_default();
        if let Some(default) = ws.catalog {
            catalogs
                .entry("default".to_string())
                .or_default()
                .extend(default);
        }

        let dirs = find_package_dirs(root, &ws.packages.unwrap_or_default())?;
        let mut packages = Vec::with_capacity(dirs.len() + 1);
        packages.push(read_package(root, ".")?);
        for dir in &dirs {
            packages.push(read_package(root, dir)?);
        }

        let mut by_name: HashMap<String, usize> = HashMap::new();
        for (i, p) in packages.iter().enumerate() {
            if let Some(name) = &p.name {
                if let Some(&j) = by_name.get(name) {
                    return Err(Error::DuplicatePackage {
                        name: name.clone(),
                        first: root.join(packages[j].manifest()),
                        second: root.join(p.manifest()),
                    });
                }
                by_name.insert(name.clone(), i);
            }
        }
        let by_dir: HashMap<String, usize> = packages
            .iter()
            .enumerate()
            .map(|(i, p)| (p.dir.clone(), i))
            .collect();
        for package in &mut packages {
            let dir = package.dir.clone();
            let manifest = root.join(package.manifest());
            for dep in &mut package.dependencies {
                dep.workspace =
                    resolve_workspace_dep(&dir, dep, &by_name, &by_dir).map_err(|()| {
                        Error::UnknownWorkspaceDependency {
                            path: manifest.clone(),
                            dependency: dep.name.clone(),
                            specifier: dep.specifier.clone(),
                        }
                    })?;
            }
        }

        let lock_path = root.join(LOCKFILE);
        let lockfile = match std::fs::symlink_metadata(&lock_path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", &lock_path, e).to_string()),
            Ok(m) if !m.file_type().is_file() => Ok(None),
            Ok(_) => std::fs::read_to_string(&lock_path)
                .map_err(|e| Error::io("read", &lock_path, e).to_string())
                .and_then(|text| {
                    Lockfile::parse(&lock_path, &text)
                        .map(Some)
                        .map_err(|e| e.to_string())
                }),
        };

        let services = find_services(root, &config, &packages)?;
        Ok(Workspace {
            root: root.to_path_buf(),
            config,
            packages,
            services,
            lockfile,
            catalogs,
            by_name,
        })
    }

    pub fn package_by_name(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Finds a service by its name, its package name or its image name.
    pub fn service(&self, name: &str) -> Result<usize> {
        self.services
            .iter()
            .position(|s| {
                s.name == name
                    || s.image == name
                    || self.packages[s.package].name.as_deref() == Some(name)
            })
            .ok_or_else(|| Error::UnknownService {
                name: name.to_string(),
                known: self.services.iter().map(|s| s.name.clone()).collect(),
            })
    }

    /// Why the workspace has no service: the Dockerfiles it saw and why none makes a service (for
    /// a monorepo where nothing is found).
    pub fn why_no_services(&self) -> String {
        let name = &self.config.images.dockerfile;
        let mut seen: Vec<String> = Vec::new();
        if self.root.join(name).is_file() {
            seen.push(format!(
                "`{name}` at the root: the root package is never a service (a service is a workspace package in a directory of its own, e.g. `services/api/{name}`)"
            ));
        }
        let mut package_dirs = std::collections::HashSet::new();
        for p in self.packages.iter().filter(|p| !p.is_root()) {
            package_dirs.insert(p.dir.clone());
            let df = format!("{}/{name}", p.dir);
            if !self.root.join(&df).is_file() {
                continue;
            }
            let svc = p.dir.rsplit('/').next().unwrap_or(&p.dir);
            if self.config.service(svc).skip {
                seen.push(format!(
                    "`{df}`: `skip = true` under `[services.{svc}]` in images.toml"
                ));
            } else {
                seen.push(format!(
                    "`{df}`: its directory is not under `service-dirs` ({}) in images.toml",
                    self.config.images.service_dirs.join(", ")
                ));
            }
        }
        // Dockerfiles in directories that are not workspace packages (three levels down).
        let mut stack = vec![(String::new(), 0)];
        while let Some((rel, depth)) = stack.pop() {
            let abs = if rel.is_empty() {
                self.root.clone()
            } else {
                self.root.join(&rel)
            };
            let Ok(entries) = std::fs::read_dir(&abs) else {
                continue;
            };
            for e in entries.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if !e.file_type().is_ok_and(|t| t.is_dir())
                    || n.starts_with('.')
                    || NEVER_PACKAGES.contains(&n.as_str())
                {
                    continue;
                }
                let child = if rel.is_empty() {
                    n
                } else {
                    format!("{rel}/{n}")
                };
                if !package_dirs.contains(&child) && self.root.join(&child).join(name).is_file() {
                    seen.push(format!(
                        "`{child}/{name}`: `{child}` is not a workspace package (it needs a package.json, and a glob of `{WORKSPACE_FILE}` matching it)"
                    ));
                }
                if depth < 2 {
                    stack.push((child, depth + 1));
                }
            }
        }
        seen.sort();
        let mut msg = format!(
            "no service in `{}`: a service is a workspace package whose directory holds a `{name}`",
            self.root.display()
        );
        if seen.is_empty() {
            msg.push_str(&format!(
                "; no `{name}` was found in any of the {} workspace package(s)",
                self.packages.len().saturating_sub(1)
            ));
        } else {
            msg.push_str("; found:");
            for s in &seen {
                msg.push_str(&format!("\n  - {s}"));
            }
        }
        msg.push_str(&format!(
            "\n  hint: put a `{name}` in each service's package directory (`cargo xtask dockerfiles` renders them from the template)"
        ));
        msg
    }

    /// The workspace packages a package depends on, transitively, itself included, sorted by index.
    pub fn closure(&self, package: usize) -> Vec<usize> {
        let mut seen = vec![false; self.packages.len()];
        let mut stack = vec![package];
        while let Some(p) = stack.pop() {
            if std::mem::replace(&mut seen[p], true) {
                continue;
            }
            stack.extend(
                self.packages[p]
                    .dependencies
                    .iter()
                    .filter_map(|d| d.workspace),
            );
        }
        (0..seen.len()).filter(|&i| seen[i]).collect()
    }
}

/// Resolves a dependency to a workspace package: `Ok(None)` for an external one, `Err` for a
/// `workspace:` specifier that names no workspace package.
fn resolve_workspace_dep(
    dir: &str,
    dep: &Dependency,
    by_name: &HashMap<String, usize>,
    by_dir: &HashMap<String, usize>,
) -> std::result::Result<Option<usize>, ()> {
    let spec = dep.specifier.trim();
    if let Some(rest) = spec.strip_prefix("workspace:") {
        if is_path_spec(rest) {
            return by_dir
                .get(&join_rel(dir, rest))
                .copied()
                .map(Some)
                .ok_or(());
        }
        // `workspace:<alias>@<range>` names another package; anything else is a range.
        let name = match rest.rfind('@') {
            Some(at) if at > 0 => &rest[..at],
            _ => dep.name.as_str(),
        };
        return by_name.get(name).copied().map(Some).ok_or(());
    }
    for prefix in ["link:", "file:"] {
        if let Some(rest) = spec.strip_prefix(prefix) {
            return Ok(by_dir.get(&join_rel(dir, rest)).copied());
        }
    }
    // `catalog:`, registry ranges, tags, git and tarball URLs are external.
    Ok(None)
}

fn is_path_spec(s: &str) -> bool {
    s == "." || s == ".." || s.starts_with("./") || s.starts_with("../") || s.starts_with('/')
}

/// Joins a relative path onto a root-relative directory and normalises it (`.` for the root).
pub fn join_rel(dir: &str, rel: &str) -> String {
    let mut parts: Vec<&str> = if dir == "." {
        Vec::new()
    } else {
        dir.split('/').collect()
    };
    for seg in rel.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    }
}

fn glob(pattern: &str) -> Result<globset::Glob> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| {
            Error::Other(format!(
                "invalid glob `{pattern}` in `{WORKSPACE_FILE}`: {e}"
            ))
        })
}

/// Checks that no component of `rel` is a symlink that leaves the root (a workspace glob must not
/// reach outside it through one).
fn check_inside(root: &Path, rel: &str, pattern: &str) -> Result<()> {
    let mut at = String::new();
    for c in rel.split('/').filter(|c| !c.is_empty()) {
        at = if at.is_empty() {
            c.to_string()
        } else {
            format!("{at}/{c}")
        };
        let abs = root.join(&at);
        match std::fs::symlink_metadata(&abs) {
            Ok(m) if m.file_type().is_symlink() => {
                let target =
                    std::fs::read_link(&abs).map_err(|e| Error::io("read link", &abs, e))?;
                if !crate::resolve::link_stays_inside(root, &at, &target) {
                    return Err(Error::Other(format!(
                        "the workspace glob `{pattern}` in `{}` leaves the monorepo root: `{}` is a symlink to `{}`\n  hint: list only directories under the root",
                        root.join(WORKSPACE_FILE).display(),
                        abs.display(),
                        target.display()
                    )));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The package directories matched by the workspace globs, relative and sorted.
fn find_package_dirs(root: &Path, patterns: &[String]) -> Result<Vec<String>> {
    let mut include = GlobSetBuilder::new();
    let mut exclude = GlobSetBuilder::new();
    let mut starts: Vec<(String, Option<usize>)> = Vec::new();
    for raw in patterns {
        let (negated, pat) = match raw.trim().strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, raw.trim()),
        };
        let pat = pat.trim_start_matches("./").trim_end_matches('/');
        if pat.is_empty() || pat == "." {
            continue;
        }
        if pat.starts_with('/') || pat.split('/').any(|c| c == "..") {
            return Err(Error::Other(format!(
                "the workspace glob `{raw}` in `{}` leaves the monorepo root\n  hint: list only directories under `{}`; images are built from the root's files only",
                root.join(WORKSPACE_FILE).display(),
                root.display()
            )));
        }
        let manifest_glob = glob(&format!("{pat}/package.json"))?;
        if negated {
            exclude.add(manifest_glob);
            continue;
        }
        include.add(manifest_glob);
        // Walk only from the literal prefix, and only as deep as the pattern can reach.
        let segs: Vec<&str> = pat.split('/').collect();
        let literal = segs
            .iter()
            .take_while(|s| !s.contains(['*', '?', '[', '{', '\\']))
            .count();
        let depth = if segs.contains(&"**") {
            None
        } else {
            Some(segs.len() - literal)
        };
        let start = segs[..literal].join("/");
        check_inside(root, &start, raw)?;
        starts.push((start, depth));
    }
    let include: GlobSet = include
        .build()
        .map_err(|e| Error::Other(format!("invalid globs in `{WORKSPACE_FILE}`: {e}")))?;
    let exclude: GlobSet = exclude
        .build()
        .map_err(|e| Error::Other(format!("invalid globs in `{WORKSPACE_FILE}`: {e}")))?;

    let mut found = std::collections::BTreeSet::new();
    for (start, depth) in starts {
        let mut stack = vec![(start, 0usize)];
        while let Some((rel, d)) = stack.pop() {
            let abs = if rel.is_empty() {
                root.to_path_buf()
            } else {
                root.join(&rel)
            };
            if !rel.is_empty() {
                let manifest = format!("{rel}/package.json");
                if include.is_match(&manifest)
                    && !exclude.is_match(&manifest)
                    && abs.join("package.json").is_file()
                {
                    found.insert(rel.clone());
                }
            }
            if depth.is_some_and(|max| d >= max) {
                continue;
            }
            let entries = match std::fs::read_dir(&abs) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("read directory", abs, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| Error::io("read directory", &abs, e))?;
                let Ok(ft) = entry.file_type() else { continue };
                if !ft.is_dir() {
                    continue;
                }
                let name = entry.file_name().to_string_lossy().into_owned();
                if NEVER_PACKAGES.contains(&name.as_str()) {
                    continue;
                }
                let child = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                stack.push((child, d + 1));
            }
        }
    }
    Ok(found.into_iter().collect())
}

fn read_package(root: &Path, dir: &str) -> Result<Package> {
    let rel = if dir == "." {
        "package.json".to_string()
    } else {
        format!("{dir}/package.json")
    };
    let path = root.join(&rel);
    if let Ok(m) = std::fs::symlink_metadata(&path) {
        if m.file_type().is_symlink() {
            let target = std::fs::read_link(&path).map_err(|e| Error::io("read link", &path, e))?;
            if !crate::resolve::link_stays_inside(root, &rel, &target) {
                return Err(Error::SymlinkOutsideRoot { path, target });
            }
        }
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io("read", &path, e))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Json {
        path: path.clone(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    let obj = value.as_object().ok_or_else(|| Error::Package {
        path: path.clone(),
        message: "the top level must be a JSON object".to_string(),
    })?;
    let string_field = |key: &str| -> Result<Option<String>> {
        match obj.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Error::Package {
                path: path.clone(),
                message: format!("`{key}` must be a string"),
            }),
        }
    };
    let name = string_field("name")?;
    let version = string_field("version")?;
    let mut dependencies = Vec::new();
    for kind in DepKind::ALL {
        match obj.get(kind.field()) {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Object(map)) => {
                for (dep, spec) in map {
                    let specifier = spec.as_str().ok_or_else(|| Error::Package {
                        path: path.clone(),
                        message: format!("`{}.{dep}` must be a string", kind.field()),
                    })?;
                    dependencies.push(Dependency {
                        name: dep.clone(),
                        specifier: specifier.to_string(),
                        kind,
                        workspace: None,
                    });
                }
            }
            Some(_) => {
                return Err(Error::Package {
                    path: path.clone(),
                    message: format!("`{}` must be an object", kind.field()),
                })
            }
        }
    }
    let port = obj
        .get("config")
        .and_then(|c| c.get("port"))
        .or_else(|| obj.get("port"))
        .and_then(|p| match p {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        })
        .and_then(|p| u16::try_from(p).ok());
    Ok(Package {
        name,
        version,
        dir: dir.to_string(),
        dependencies,
        port,
    })
}

fn find_services(root: &Path, config: &Config, packages: &[Package]) -> Result<Vec<Service>> {
    let mut services: Vec<Service> = Vec::new();
    for (i, p) in packages.iter().enumerate() {
        if p.is_root() {
            continue;
        }
        if !config.images.service_dirs.is_empty() {
            let parent = p.dir.rsplit_once('/').map(|(a, _)| a).unwrap_or(".");
            if !config
                .images
                .service_dirs
                .iter()
                .any(|d| d.trim_end_matches('/') == parent)
            {
                continue;
            }
        }
        let dockerfile = format!("{}/{}", p.dir, config.images.dockerfile);
        if !root.join(&dockerfile).is_file() {
            continue;
        }
        let name = p.dir.rsplit('/').next().unwrap_or(&p.dir).to_string();
        let sc = config.service(&name);
        if sc.skip {
            continue;
        }
        if let Some(other) = services.iter().find(|s| s.name == name) {
            return Err(Error::Other(format!(
                "two services are named `{name}`: `{}` and `{}`\n  hint: service names are directory names and must be unique; rename one directory",
                packages[other.package].dir, p.dir
            )));
        }
        let image = sc
            .image
            .clone()
            .unwrap_or_else(|| format!("{}{}", config.images.prefix, name));
        validate_image_name(&image).map_err(|reason| Error::InvalidImageName {
            service: name.clone(),
            reason,
        })?;
        services.push(Service {
            name,
            package: i,
            dockerfile,
            image,
        });
    }
    services.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(services)
}

/// Checks a repository name (no tag) against Docker's reference grammar.
pub fn validate_image_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".to_string());
    }
    if name.len() > 255 {
        return Err(format!("`{name}` is longer than 255 characters"));
    }
    for component in name.split('/') {
        if component.is_empty() {
            return Err(format!("`{name}` has an empty path component"));
        }
        let bytes = component.as_bytes();
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
            return Err(format!(
                "`{component}` must start and end with a lowercase letter or digit"
            ));
        }
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if alnum(b) {
                i += 1;
                continue;
            }
            // A separator: `.`, `_`, `__`, or one or more `-`.
            let start = i;
            while i < bytes.len() && !alnum(bytes[i]) {
                i += 1;
            }
            let sep = &component[start..i];
            let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
            if !ok {
                let bad = sep
                    .chars()
                    .find(|c| !matches!(c, '.' | '_' | '-'))
                    .map(|c| format!("the character `{c}` is not allowed"))
                    .unwrap_or_else(|| format!("the separator `{sep}` is not allowed"));
                return Err(format!("`{name}`: {bad}"));
            }
        }
    }
    Ok(())
}

/// Checks a tag against Docker's grammar: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn validate_tag(tag: &str) -> std::result::Result<(), String> {
    let mut chars = tag.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() || c == '_' => {}
        _ => {
            return Err(format!(
                "tag `{tag}` must start with a letter, digit or `_`"
            ))
        }
    }
    if tag.len() > 128 {
        return Err(format!("tag `{tag}` is longer than 128 characters"));
    }
    if let Some(c) = chars.find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))) {
        return Err(format!("tag `{tag}` holds `{c}`, which is not allowed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names() {
        for ok in ["a", "kodingcaravan-api-gateway", "a.b_c__d--e", "reg/ns/x1"] {
            assert!(validate_image_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "A", "-a", "a-", "a..b", "a___b", "a@b", "a//b", "Student",
        ] {
            assert!(validate_image_name(bad).is_err(), "{bad}");
        }
        assert!(validate_tag("v1.0.0").is_ok());
        assert!(validate_tag(".x").is_err());
        assert!(validate_tag("a/b").is_err());
    }

    #[test]
    fn join_rel_normalises() {
        assert_eq!(join_rel("services/a", "../../shared"), "shared");
        assert_eq!(join_rel(".", "./shared/"), "shared");
        assert_eq!(join_rel("a", ".."), ".");
    }
}
