//! pnpm lockfiles (lockfileVersion 5.3 and 5.4 of pnpm 7, 6.0 of pnpm 8, 9.0 of pnpm 9 to 11):
//! parsing and pruning to a closure of importers.
//!
//! A build context holds only some of the workspace's packages, so its `pnpm-lock.yaml` is pruned to
//! the importers present in it (the root `.` and the closure's package dirs) and to the packages they
//! reach. pnpm must accept the result with `--frozen-lockfile`, and the result is hashed into the image
//! key, so [`Lockfile::prune`] is deterministic and its output depends only on the kept part:
//!
//! - every top-level section other than `importers`, `packages`, `snapshots` and `time` is kept as it
//!   is (pnpm compares `settings`, `overrides`, `catalogs`, `patchedDependencies`,
//!   `packageExtensionsChecksum`, `pnpmfileChecksum` with the workspace config, which the context
//!   holds whole, so e.g. `patchedDependencies` of dropped packages must stay);
//! - `time` keeps the entries of kept packages only (it is not checked by a frozen install);
//! - the flags that pnpm derives from *all* importers are recomputed from the kept ones, as pnpm's
//!   own lockfile pruning does: `dev`/`optional` of lockfileVersion 5.x and 6.0 packages, `optional` of 9.0
//!   snapshots. Otherwise adding a dev dependency to one service would change another's lockfile;
//! - the YAML is written the way pnpm writes it (its fork of js-yaml: blank lines between sections
//!   and entries, flow style for `resolution`, `engines`, `cpu`, `os`, `libc`, the same quoting), so
//!   pruning a pnpm-written lockfile to all of its importers gives back the same bytes.
//!
//! pnpm 11 may write two YAML documents: `---`, a document for config dependencies and the package
//! manager itself (`importers: {.: {configDependencies, packageManagerDependencies}}`), `---`, then
//! the project lockfile. The project document is pruned; the others are kept, in order.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};

use serde::Deserialize as _;
use serde_norway::{Mapping, Value};

use crate::{Error, Result};

const YAML_HINT: &str =
    "fix the YAML syntax of `pnpm-lock.yaml`, or delete it and run `pnpm install` to regenerate it";

/// Dependency sections of an importer, in pnpm's order.
const IMPORTER_DEP_KINDS: [(&str, DepKind); 3] = [
    ("dependencies", DepKind::Prod),
    ("optionalDependencies", DepKind::Optional),
    ("devDependencies", DepKind::Dev),
];

/// Dependency sections of a package (5.x, 6.0) or snapshot (9.0).
const PACKAGE_DEP_KINDS: [(&str, DepKind); 2] = [
    ("dependencies", DepKind::Prod),
    ("optionalDependencies", DepKind::Optional),
];

/// Keys that hold the root importer's dependencies in a lockfile without `importers` (single project).
const ROOT_IMPORTER_KEYS: [&str; 5] = [
    "specifiers",
    "dependencies",
    "optionalDependencies",
    "devDependencies",
    "dependenciesMeta",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// lockfileVersion 5.3 and 5.4 (pnpm 7): `packages` keyed `/name/version_peers`, holding
    /// dependencies; importers list their `specifiers` apart.
    V5,
    /// lockfileVersion 6.x (pnpm 8): `packages` keyed `/name@version(peers)`, holding dependencies.
    V6,
    /// lockfileVersion 9.x (pnpm 9 to 11): `packages` keyed `name@version` (metadata) and
    /// `snapshots` keyed `name@version(peers)` (dependencies).
    V9,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DepKind {
    Prod,
    Optional,
    Dev,
}

/// Where a dependency version points.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A node: a key of `packages` (5.x, 6.0) or of `snapshots` (9.0).
    Node(String),
    /// A workspace link or a local directory: nothing to keep.
    Local,
    /// No entry matches: an error if pruning reaches it.
    Missing,
}

#[derive(Debug, Clone)]
struct Dep {
    name: String,
    version: String,
    kind: DepKind,
    target: Target,
}

/// A parsed `pnpm-lock.yaml`.
#[derive(Debug, Clone)]
pub struct Lockfile {
    path: PathBuf,
    version: String,
    format: Format,
    /// Every non-empty YAML document of the file, in order.
    documents: Vec<Value>,
    /// The index of the project lockfile in `documents`.
    main: usize,
    /// Importer id -> its dependencies.
    importers: BTreeMap<String, Vec<Dep>>,
    /// Node key -> its dependencies.
    nodes: HashMap<String, Vec<Dep>>,
    /// Whether the root importer's dependencies are top-level keys (a lockfile without `importers`).
    root_inline: bool,
    /// The blake3 of the file's text: with the importers, what a pruning depends on.
    text_digest: [u8; 32],
}

/// The nodes reached from the kept importers, and how (for the flags pnpm derives from that).
struct Reach {
    /// Every reached node.
    all: BTreeSet<String>,
    /// Reached from `devDependencies` of importers.
    dev: HashSet<String>,
    /// Reached from `dependencies` or `optionalDependencies` of importers.
    prod: HashSet<String>,
    /// Reached without going through any `optionalDependencies`.
    non_optional: HashSet<String>,
}

impl Lockfile {
    /// Parses `pnpm-lock.yaml` text. `path` is used only in error messages.
    pub fn parse(path: &Path, text: &str) -> Result<Lockfile> {
        let mut documents = Vec::new();
        for document in serde_norway::Deserializer::from_str(text) {
            let value = Value::deserialize(document).map_err(|e| yaml_error(path, &e))?;
            check_untagged(path, &value)?;
            if !value.is_null() {
                documents.push(value);
            }
        }
        if documents.is_empty() {
            return Err(lockfile_error(path, "the file holds no YAML document"));
        }
        let main = documents
            .iter()
            .rposition(|d| !is_env_document(d))
            .ok_or_else(|| {
                lockfile_error(
                    path,
                    "it holds only the config dependencies document, not the project lockfile",
                )
            })?;
        let root = documents[main]
            .as_mapping()
            .ok_or_else(|| lockfile_error(path, "the top level is not a mapping"))?;

        let version = match root.get("lockfileVersion") {
            None => return Err(lockfile_error(path, "missing `lockfileVersion`")),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => {
                return Err(lockfile_error(
                    path,
                    "`lockfileVersion` is not a string or a number",
                ))
            }
        };
        let format = match version.split('.').next() {
            Some("5") if matches!(version.as_str(), "5.3" | "5.4") => Format::V5,
            Some("6") => Format::V6,
            Some("9") => Format::V9,
            _ => {
                return Err(lockfile_error(
                    path,
                    &format!(
                        "unsupported `lockfileVersion` `{version}`: supported are 5.3 and 5.4 (pnpm 7), 6.0 (pnpm 8) and 9.0 (pnpm 9 to 11)"
                    ),
                ))
            }
        };

        let section = |key: &str| -> Result<Option<&Mapping>> {
            match root.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Mapping(m)) => Ok(Some(m)),
                Some(_) => Err(lockfile_error(path, &format!("`{key}` is not a mapping"))),
            }
        };
        let node_section = match format {
            Format::V5 | Format::V6 => "packages",
            Format::V9 => "snapshots",
        };
        let node_map = section(node_section)?;
        let resolver = Resolver {
            format,
            nodes: node_map,
        };

        let mut importers = BTreeMap::new();
        let root_inline = !root.contains_key("importers");
        if root_inline {
            let deps = importer_deps(path, ".", root, &resolver)?;
            importers.insert(".".to_string(), deps);
        } else if let Some(map) = section("importers")? {
            for (id, entry) in map {
                let id = key_string(id);
                let deps = match entry {
                    Value::Null => Vec::new(),
                    Value::Mapping(m) => importer_deps(path, &id, m, &resolver)?,
                    _ => {
                        return Err(lockfile_error(
                            path,
                            &format!("importer `{id}` is not a mapping"),
                        ))
                    }
                };
                importers.insert(id, deps);
            }
        }

        let mut nodes = HashMap::new();
        for (key, entry) in node_map.into_iter().flatten() {
            let key = key_string(key);
            let deps = match entry {
                Value::Null => Vec::new(),
                Value::Mapping(m) => node_deps(path, &key, m, &resolver)?,
                _ => {
                    return Err(lockfile_error(
                        path,
                        &format!("`{node_section}` entry `{key}` is not a mapping"),
                    ))
                }
            };
            nodes.insert(key, deps);
        }
        if format == Format::V9 {
            section("packages")?;
        }

        Ok(Lockfile {
            path: path.to_path_buf(),
            version,
            format,
            documents,
            main,
            importers,
            nodes,
            root_inline,
            text_digest: *blake3::hash(text.as_bytes()).as_bytes(),
        })
    }

    /// What [`Lockfile::prune`]'s output for `importers` is a function of: this file's text, the
    /// importers, and the code that prunes (this module's source files, so that any change to it makes new
    /// keys; a stored pruning can never outlive the code that made it).
    pub fn prune_key(&self, importers: &BTreeSet<String>) -> [u8; 32] {
        static CODE: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
        let code = CODE.get_or_init(|| {
            let mut h = blake3::Hasher::new();
            h.update(include_str!("lockfile.rs").as_bytes());
            h.update(include_str!("lockfile/emit.rs").as_bytes());
            *h.finalize().as_bytes()
        });
        let mut h = blake3::Hasher::new();
        h.update(b"kc-prune-v1\0");
        h.update(code);
        h.update(&self.text_digest);
        for i in importers {
            h.update(&(i.len() as u64).to_le_bytes());
            h.update(i.as_bytes());
        }
        *h.finalize().as_bytes()
    }

    /// The `lockfileVersion` as written ("6.0", "9.0", ...).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The patch files `patchedDependencies` names (`{path, hash}` entries of lockfile 6.0 and
    /// 9.0), relative to the root: `pnpm install` reads them, so every context holds them.
    pub fn patch_files(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(Value::Mapping(m)) = self.documents[self.main].get("patchedDependencies") {
            for v in m.values() {
                if let Some(Value::String(p)) = v.get("path") {
                    out.push(p.clone());
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Importer ids as written (".", "shared", "services/api-gateway", ...), sorted.
    pub fn importers(&self) -> Vec<String> {
        self.importers.keys().cloned().collect()
    }

    /// Names and resolved versions of the external (non-workspace) packages reachable from one
    /// importer, sorted, e.g. `["ms@2.1.3"]` (for diagnostics). Unresolvable entries are left out.
    pub fn external_closure(&self, importer: &str) -> Vec<String> {
        let Some(deps) = self.importers.get(importer) else {
            return Vec::new();
        };
        let mut seen = HashSet::new();
        let mut queue: VecDeque<&str> = VecDeque::new();
        for dep in deps {
            if let Target::Node(key) = &dep.target {
                if seen.insert(key.as_str()) {
                    queue.push_back(key);
                }
            }
        }
        while let Some(key) = queue.pop_front() {
            for dep in self.nodes.get(key).into_iter().flatten() {
                if let Target::Node(next) = &dep.target {
                    if seen.insert(next.as_str()) {
                        queue.push_back(next);
                    }
                }
            }
        }
        let names: BTreeSet<String> = seen
            .into_iter()
            .map(|key| {
                match self.format {
                    // `/name/1.0.0_peers` -> `name@1.0.0`
                    Format::V5 => {
                        let key = remove_peers_suffix_v5(key);
                        let key = key.strip_prefix('/').unwrap_or(key);
                        match key.rsplit_once('/') {
                            Some((name, version)) => format!("{name}@{version}"),
                            None => key.to_string(),
                        }
                    }
                    Format::V6 => {
                        remove_peers_suffix(key.strip_prefix('/').unwrap_or(key)).to_string()
                    }
                    Format::V9 => remove_peers_suffix(key).to_string(),
                }
            })
            .collect();
        names.into_iter().collect()
    }

    /// The lockfile text restricted to `importers` (ids as above; unknown ids are ignored) and the
    /// packages/snapshots they reach transitively, every other top-level section kept as is (see the
    /// module docs for `time` and the recomputed `dev`/`optional` flags). Deterministic YAML output.
    pub fn prune(&self, importers: &BTreeSet<String>) -> Result<String> {
        let kept: Vec<&str> = self
            .importers
            .keys()
            .filter(|id| importers.contains(*id))
            .map(String::as_str)
            .collect();
        let reach = self.reach(&kept)?;
        let root = self.documents[self.main]
            .as_mapping()
            .ok_or_else(|| lockfile_error(&self.path, "the top level is not a mapping"))?;

        // 9.0: the metadata entries of the reached snapshots.
        let mut package_keys = BTreeSet::new();
        if self.format == Format::V9 {
            let packages = root.get("packages").and_then(Value::as_mapping);
            for key in &reach.all {
                let package_key = remove_peers_suffix(key);
                if !packages.is_some_and(|p| p.contains_key(package_key)) {
                    return Err(lockfile_error(
                        &self.path,
                        &format!("snapshot `{key}` has no entry `{package_key}` in `packages`"),
                    ));
                }
                package_keys.insert(package_key.to_string());
            }
        }

        let time_keys: HashSet<&str> = reach
            .all
            .iter()
            .map(|k| match self.format {
                Format::V5 => remove_peers_suffix_v5(k),
                _ => remove_peers_suffix(k),
            })
            .collect();

        let mut out = Mapping::new();
        for (key, value) in root {
            let name = key.as_str().unwrap_or_default();
            let pruned = match name {
                "importers" => Some(Value::Mapping(filter_mapping(value, |id| {
                    kept.contains(&id)
                }))),
                "packages" if matches!(self.format, Format::V5 | Format::V6) => {
                    let mut map = filter_mapping(value, |k| reach.all.contains(k));
                    for (k, entry) in map.iter_mut() {
                        let k = key_string(k);
                        let dev = match (reach.dev.contains(&k), reach.prod.contains(&k)) {
                            (true, false) => Some(true),
                            (false, true) => Some(false),
                            _ => None,
                        };
                        let optional = (!reach.non_optional.contains(&k)).then_some(true);
                        set_flag(entry, "dev", dev);
                        set_flag(entry, "optional", optional);
                    }
                    non_empty(map)
                }
                "packages" => non_empty(filter_mapping(value, |k| package_keys.contains(k))),
                "snapshots" if self.format == Format::V9 => {
                    let mut map = filter_mapping(value, |k| reach.all.contains(k));
                    for (k, entry) in map.iter_mut() {
                        let k = key_string(k);
                        let optional = (!reach.non_optional.contains(&k)).then_some(true);
                        set_flag(entry, "optional", optional);
                    }
                    non_empty(map)
                }
                // Keyed by package (`/name@version` in 6.0), without peers.
                "time" => non_empty(filter_mapping(value, |k| {
                    reach.all.contains(k) || time_keys.contains(k)
                })),
                _ if self.root_inline && ROOT_IMPORTER_KEYS.contains(&name) => {
                    kept.contains(&".").then(|| value.clone())
                }
                _ => Some(value.clone()),
            };
            if let Some(pruned) = pruned {
                out.insert(key.clone(), pruned);
            }
        }

        let pruned_main = Value::Mapping(out);
        let documents: Vec<&Value> = self
            .documents
            .iter()
            .enumerate()
            .map(|(i, d)| if i == self.main { &pruned_main } else { d })
            .collect();
        Ok(emit::documents(&documents))
    }

    /// The nodes reached from the kept importers, and the flags derived from how they are reached.
    fn reach(&self, kept: &[&str]) -> Result<Reach> {
        let roots = |kinds: &[DepKind]| -> Vec<(&str, &Dep)> {
            kept.iter()
                .flat_map(|id| {
                    self.importers
                        .get(*id)
                        .into_iter()
                        .flatten()
                        .filter(|d| kinds.contains(&d.kind))
                        .map(move |d| (*id, d))
                })
                .collect()
        };
        let dev = self.walk(&roots(&[DepKind::Dev]), true)?;
        let prod = self.walk(&roots(&[DepKind::Prod, DepKind::Optional]), true)?;
        let non_optional = self.walk(&roots(&[DepKind::Prod, DepKind::Dev]), false)?;
        Ok(Reach {
            all: dev.iter().chain(&prod).cloned().collect(),
            dev,
            prod,
            non_optional,
        })
    }

    /// The nodes reachable from `roots` (importer id, dependency), following the
    /// `optionalDependencies` of nodes too if `optional`.
    fn walk(&self, roots: &[(&str, &Dep)], optional: bool) -> Result<HashSet<String>> {
        let mut seen: HashSet<String> = HashSet::new();
        let mut queue: VecDeque<&str> = VecDeque::new();
        let missing = |from: &str, dep: &Dep| {
            lockfile_error(
                &self.path,
                &format!(
                    "{from} depends on `{}` version `{}`, which has no entry in `{}`",
                    dep.name,
                    dep.version,
                    match self.format {
                        Format::V5 | Format::V6 => "packages",
                        Format::V9 => "snapshots",
                    }
                ),
            )
        };
        for (id, dep) in roots {
            match &dep.target {
                Target::Node(key) => {
                    if seen.insert(key.clone()) {
                        queue.push_back(key);
                    }
                }
                Target::Local => {}
                Target::Missing => return Err(missing(&format!("importer `{id}`"), dep)),
            }
        }
        while let Some(key) = queue.pop_front() {
            for dep in self.nodes.get(key).into_iter().flatten() {
                if !optional && dep.kind == DepKind::Optional {
                    continue;
                }
                match &dep.target {
                    Target::Node(next) => {
                        if seen.insert(next.clone()) {
                            queue.push_back(next);
                        }
                    }
                    Target::Local => {}
                    Target::Missing => return Err(missing(&format!("`{key}`"), dep)),
                }
            }
        }
        Ok(seen)
    }
}

/// Resolves dependency versions to node keys the way pnpm does (`refToRelative` of
/// `@pnpm/dependency-path`), then tries the other usual spellings.
struct Resolver<'a> {
    format: Format,
    nodes: Option<&'a Mapping>,
}

impl Resolver<'_> {
    fn resolve(&self, name: &str, version: &str) -> Target {
        if version.starts_with("link:") {
            return Target::Local;
        }
        let has = |key: &str| self.nodes.is_some_and(|n| n.contains_key(key));
        let candidates = match self.format {
            Format::V5 => [
                self.ref_to_relative(name, version),
                version.to_string(),
                format!("/{name}/{version}"),
            ],
            Format::V6 => [
                self.ref_to_relative(name, version),
                version.to_string(),
                format!("/{name}@{version}"),
            ],
            Format::V9 => [
                self.ref_to_relative(name, version),
                version.to_string(),
                format!("{name}@{version}"),
            ],
        };
        if let Some(key) = candidates.into_iter().find(|k| has(k)) {
            return Target::Node(key);
        }
        // pnpm itself skips local directories missing from the lockfile (not tarballs).
        if version.starts_with("file:")
            && !version.ends_with(".tgz")
            && !version.ends_with(".tar.gz")
        {
            return Target::Local;
        }
        Target::Missing
    }

    fn ref_to_relative(&self, name: &str, reference: &str) -> String {
        match self.format {
            // pnpm 7's `refToRelative`: a bare version (peers after `_`) is `/name/version`.
            Format::V5 => {
                if reference.starts_with("file:") || reference.contains('/') {
                    reference.to_string()
                } else {
                    format!("/{name}/{reference}")
                }
            }
            Format::V6 => {
                if reference.starts_with("file:") {
                    return reference.to_string();
                }
                let before_peers = reference.find('(').map_or(reference, |i| &reference[..i]);
                if !before_peers.contains('/') {
                    format!("/{name}@{reference}")
                } else {
                    reference.to_string()
                }
            }
            Format::V9 => {
                if reference.starts_with('@') {
                    return reference.to_string();
                }
                let Some(at) = reference.find('@') else {
                    return format!("{name}@{reference}");
                };
                let before = |c: char| reference.find(c).is_none_or(|i| at < i);
                if before(':') && before('(') {
                    reference.to_string()
                } else {
                    format!("{name}@{reference}")
                }
            }
        }
    }
}

fn importer_deps(
    path: &Path,
    id: &str,
    entry: &Mapping,
    resolver: &Resolver<'_>,
) -> Result<Vec<Dep>> {
    // An importer's dependency is `{specifier, version}` (or, in older files, a bare version).
    let version_of = |spec: &Value| match spec {
        Value::Mapping(m) => m.get("version").and_then(scalar_string),
        other => scalar_string(other),
    };
    let what = || format!("importer `{id}`");
    deps_of(
        path,
        entry,
        &IMPORTER_DEP_KINDS,
        resolver,
        version_of,
        what,
        "has no `version`",
    )
}

fn node_deps(path: &Path, key: &str, entry: &Mapping, resolver: &Resolver<'_>) -> Result<Vec<Dep>> {
    let what = || format!("`{key}`");
    deps_of(
        path,
        entry,
        &PACKAGE_DEP_KINDS,
        resolver,
        scalar_string,
        what,
        "is not a version",
    )
}

/// The dependencies of a lockfile entry in its `sections`, resolved. `version_of` reads one
/// dependency's version; in errors, `what` names the entry and `no_version` says what is wrong
/// with a dependency whose version cannot be read.
fn deps_of(
    path: &Path,
    entry: &Mapping,
    sections: &[(&str, DepKind)],
    resolver: &Resolver<'_>,
    version_of: impl Fn(&Value) -> Option<String>,
    what: impl Fn() -> String,
    no_version: &str,
) -> Result<Vec<Dep>> {
    let mut deps = Vec::new();
    for &(section, kind) in sections {
        let map = match entry.get(section) {
            None | Some(Value::Null) => continue,
            Some(Value::Mapping(m)) => m,
            Some(_) => {
                return Err(lockfile_error(
                    path,
                    &format!("{}: `{section}` is not a mapping", what()),
                ))
            }
        };
        for (name, spec) in map {
            let name = key_string(name);
            let version = version_of(spec).ok_or_else(|| {
                lockfile_error(
                    path,
                    &format!("{}: `{section}.{name}` {no_version}", what()),
                )
            })?;
            let target = resolver.resolve(&name, &version);
            deps.push(Dep {
                name,
                version,
                kind,
                target,
            });
        }
    }
    Ok(deps)
}

/// The depPath without its peers suffix: `foo@1.0.0(bar@2.0.0)(baz@1.0.0)` -> `foo@1.0.0`
/// (`indexOfPeersSuffix` of `@pnpm/dependency-path`: the balanced groups at the end).
fn remove_peers_suffix(key: &str) -> &str {
    let bytes = key.as_bytes();
    if bytes.last() != Some(&b')') {
        return key;
    }
    let mut open = 1usize;
    for i in (0..bytes.len() - 1).rev() {
        match bytes[i] {
            b'(' => open = open.saturating_sub(1),
            b')' => open += 1,
            _ if open == 0 => return &key[..=i],
            _ => {}
        }
    }
    key
}

/// The key of a lockfileVersion 5.x package without its peers suffix: `/foo/1.0.0_bar@2.0.0`
/// -> `/foo/1.0.0` (`_` starts the suffix in the version, after the last `/`; a scoped peer's `/`
/// is written `+` there).
fn remove_peers_suffix_v5(key: &str) -> &str {
    let version_at = key.rfind('/').map_or(0, |i| i + 1);
    match key[version_at..].find('_') {
        Some(i) => &key[..version_at + i],
        None => key,
    }
}

/// The config dependencies document of pnpm 11: only the root importer, with only
/// `configDependencies` and/or `packageManagerDependencies`.
fn is_env_document(doc: &Value) -> bool {
    let Some(importers) = doc.get("importers").and_then(Value::as_mapping) else {
        return false;
    };
    let Some(root) = importers.get(".").and_then(Value::as_mapping) else {
        return false;
    };
    importers.len() == 1
        && !root.is_empty()
        && root.keys().all(|k| {
            matches!(
                k.as_str(),
                Some("configDependencies" | "packageManagerDependencies")
            )
        })
}

/// The entries of a mapping whose key passes `keep`, in order (empty if `value` is not a mapping).
fn filter_mapping(value: &Value, keep: impl Fn(&str) -> bool) -> Mapping {
    value
        .as_mapping()
        .into_iter()
        .flatten()
        .filter(|(k, _)| keep(&key_string(k)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn non_empty(map: Mapping) -> Option<Value> {
    (!map.is_empty()).then_some(Value::Mapping(map))
}

/// pnpm's order of the keys of a package entry (`ORDERED_KEYS` of its `sortLockfileKeys`).
fn package_key_priority(key: &str) -> Option<u8> {
    const ORDERED_KEYS: [&str; 20] = [
        "resolution",
        "id",
        "name",
        "version",
        "engines",
        "cpu",
        "os",
        "libc",
        "deprecated",
        "hasBin",
        "prepare",
        "requiresBuild",
        "bundleDependencies",
        "peerDependencies",
        "peerDependenciesMeta",
        "dependencies",
        "optionalDependencies",
        "transitivePeerDependencies",
        "dev",
        "optional",
    ];
    ORDERED_KEYS
        .iter()
        .position(|k| *k == key)
        .and_then(|p| u8::try_from(p).ok())
}

/// Sets (or removes, for `None`) a boolean flag of a package entry, where pnpm puts it.
fn set_flag(entry: &mut Value, flag: &str, value: Option<bool>) {
    if entry.is_null() {
        if value.is_none() {
            return;
        }
        *entry = Value::Mapping(Mapping::new());
    }
    let Some(map) = entry.as_mapping_mut() else {
        return;
    };
    let Some(value) = value else {
        map.shift_remove(flag);
        return;
    };
    if let Some(slot) = map.get_mut(flag) {
        *slot = Value::Bool(value);
        return;
    }
    let priority = package_key_priority(flag);
    let position = map.keys().position(|k| {
        let p = package_key_priority(k.as_str().unwrap_or_default());
        p.is_none() || p > priority
    });
    let mut entries: Vec<(Value, Value)> = std::mem::take(map).into_iter().collect();
    let at = position.unwrap_or(entries.len());
    entries.insert(at, (Value::String(flag.to_string()), Value::Bool(value)));
    *map = entries.into_iter().collect();
}

/// A mapping key as a string (pnpm's keys are strings; other scalars are written as text).
fn key_string(key: &Value) -> String {
    scalar_string(key).unwrap_or_default()
}

fn scalar_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some("null".to_string()),
        _ => None,
    }
}

/// Tags never appear in lockfiles; refusing them keeps the writer simple and exact.
fn check_untagged(path: &Path, value: &Value) -> Result<()> {
    match value {
        Value::Tagged(t) => Err(lockfile_error(
            path,
            &format!("unexpected YAML tag `{}`", t.tag),
        )),
        Value::Sequence(seq) => seq.iter().try_for_each(|v| check_untagged(path, v)),
        Value::Mapping(map) => map.iter().try_for_each(|(k, v)| {
            if k.is_sequence() || k.is_mapping() {
                return Err(lockfile_error(path, "a mapping key is not a scalar"));
            }
            check_untagged(path, k)?;
            check_untagged(path, v)
        }),
        _ => Ok(()),
    }
}

fn lockfile_error(path: &Path, message: &str) -> Error {
    Error::Lockfile {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

fn yaml_error(path: &Path, error: &serde_norway::Error) -> Error {
    let location = error.location();
    let mut message = error.to_string();
    if let Some(at) = &location {
        // serde_norway puts the location in the message; the error type shows the line itself.
        let shown = format!(" at line {} column {}", at.line(), at.column());
        message = message.replacen(&shown, "", 1);
        message.push_str(&format!(" (column {})", at.column()));
    }
    Error::Yaml {
        path: path.to_path_buf(),
        line: location.map(|l| l.line()),
        message,
        hint: YAML_HINT,
    }
}

mod emit;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Lockfile {
        match Lockfile::parse(Path::new("pnpm-lock.yaml"), text) {
            Ok(l) => l,
            Err(e) => panic!("parse failed: {e}"),
        }
    }

    fn parse_error(text: &str) -> String {
        match Lockfile::parse(Path::new("pnpm-lock.yaml"), text) {
            Ok(_) => panic!("parse succeeded, an error was expected"),
            Err(e) => e.to_string(),
        }
    }

    /// A malformed dependency section names the entry and the section, for an importer and for a
    /// package alike.
    #[test]
    fn malformed_dependency_sections_are_named() {
        let head = "lockfileVersion: '6.0'\n";
        let e = parse_error(&format!("{head}importers:\n  .:\n    dependencies: [ms]\n"));
        assert!(
            e.contains("importer `.`: `dependencies` is not a mapping"),
            "{e}"
        );
        let e = parse_error(&format!(
            "{head}importers:\n  .:\n    dependencies:\n      ms:\n        specifier: ^2.1.3\n"
        ));
        assert!(
            e.contains("importer `.`: `dependencies.ms` has no `version`"),
            "{e}"
        );
        let packages = "packages:\n  /ms@2.1.3:\n    resolution: {integrity: sha512-x}\n";
        let e = parse_error(&format!("{head}{packages}    dependencies: 3\n"));
        assert!(
            e.contains("`/ms@2.1.3`: `dependencies` is not a mapping"),
            "{e}"
        );
        let e = parse_error(&format!(
            "{head}{packages}    dependencies:\n      a: [1]\n"
        ));
        assert!(
            e.contains("`/ms@2.1.3`: `dependencies.a` is not a version"),
            "{e}"
        );
    }

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn lockfile_peers_suffix_is_removed() {
        assert_eq!(remove_peers_suffix("foo@1.0.0"), "foo@1.0.0");
        assert_eq!(remove_peers_suffix("foo@1.0.0(bar@2.0.0)"), "foo@1.0.0");
        assert_eq!(
            remove_peers_suffix("/foo@1.0.0(bar@2.0.0(baz@1.0.0))(qux@1.0.0)"),
            "/foo@1.0.0"
        );
        assert_eq!(remove_peers_suffix("(a)"), "(a)");
    }

    #[test]
    fn lockfile_refs_resolve_like_pnpm_v9() {
        let r = Resolver {
            format: Format::V9,
            nodes: None,
        };
        assert_eq!(r.ref_to_relative("ms", "2.1.3"), "ms@2.1.3");
        assert_eq!(
            r.ref_to_relative("a", "1.0.0(react@19.1.0)"),
            "a@1.0.0(react@19.1.0)"
        );
        assert_eq!(r.ref_to_relative("ms-alias", "ms@2.1.2"), "ms@2.1.2");
        assert_eq!(
            r.ref_to_relative("x", "@scope/real@1.0.0"),
            "@scope/real@1.0.0"
        );
        assert_eq!(r.ref_to_relative("x", "file:../x"), "x@file:../x");
        assert_eq!(
            r.ref_to_relative("x", "https://codeload.github.com/u/x/tar.gz/abc"),
            "x@https://codeload.github.com/u/x/tar.gz/abc"
        );
    }

    #[test]
    fn lockfile_refs_resolve_like_pnpm_v6() {
        let r = Resolver {
            format: Format::V6,
            nodes: None,
        };
        assert_eq!(r.ref_to_relative("ms", "2.1.3"), "/ms@2.1.3");
        assert_eq!(
            r.ref_to_relative("a", "1.0.0(@types/react@18.0.0)"),
            "/a@1.0.0(@types/react@18.0.0)"
        );
        assert_eq!(r.ref_to_relative("ms-alias", "/ms@2.1.2"), "/ms@2.1.2");
        assert_eq!(r.ref_to_relative("x", "file:../x"), "file:../x");
        assert_eq!(
            r.ref_to_relative("x", "github.com/u/x/abc"),
            "github.com/u/x/abc"
        );
    }

    const V6_NON_REGISTRY: &str = r#"lockfileVersion: '6.0'

importers:

  .:
    dependencies:
      gh:
        specifier: github:u/gh
        version: github.com/u/gh/abc123
      local:
        specifier: file:../local
        version: file:../local
      tarball:
        specifier: https://example.test/t.tgz
        version: '@example.test/t.tgz'

packages:

  '@example.test/t.tgz':
    resolution: {tarball: https://example.test/t.tgz}
    name: tarball
    version: 1.0.0
    dev: false

  file:../local:
    resolution: {directory: ../local, type: directory}
    name: local
    dependencies:
      ms: 2.1.3
    dev: false

  github.com/u/gh/abc123:
    resolution: {tarball: https://codeload.github.com/u/gh/tar.gz/abc123}
    name: gh
    version: 1.0.0
    dev: false

  /ms@2.1.3:
    resolution: {integrity: sha512-x}
    dev: false

  /unused@1.0.0:
    resolution: {integrity: sha512-y}
    dev: false
"#;

    #[test]
    fn lockfile_v6_non_registry_keys_resolve() {
        let lock = parse(V6_NON_REGISTRY);
        assert_eq!(
            lock.external_closure("."),
            vec![
                "@example.test/t.tgz",
                "file:../local",
                "github.com/u/gh/abc123",
                "ms@2.1.3"
            ]
        );
        let pruned = lock.prune(&set(&["."])).expect("prune");
        assert!(!pruned.contains("unused"));
        assert_eq!(
            pruned,
            V6_NON_REGISTRY.replace(
                "\n  /unused@1.0.0:\n    resolution: {integrity: sha512-y}\n    dev: false\n",
                ""
            )
        );
    }

    /// Written by pnpm 7.33.7 (`install --lockfile-only`; integrity strings shortened).
    const V5_PNPM7: &str = "lockfileVersion: 5.4

importers:

  .:
    specifiers:
      is-odd: 3.0.1
    devDependencies:
      is-odd: 3.0.1

  services/a:
    specifiers:
      '@fx/shared': workspace:*
      is-even: 1.0.0
      ms: 2.1.3
    dependencies:
      '@fx/shared': link:../../shared
      ms: 2.1.3
    devDependencies:
      is-even: 1.0.0

  services/b:
    specifiers:
      '@fx/shared': workspace:*
      ms: 2.1.2
    dependencies:
      '@fx/shared': link:../../shared
    optionalDependencies:
      ms: 2.1.2

  shared:
    specifiers:
      is-number: 7.0.0
    dependencies:
      is-number: 7.0.0

packages:

  /is-buffer/1.1.6:
    resolution: {integrity: sha512-a}
    dev: true

  /is-even/1.0.0:
    resolution: {integrity: sha512-b}
    engines: {node: '>=0.10.0'}
    dependencies:
      is-odd: 0.1.2
    dev: true

  /is-number/3.0.0:
    resolution: {integrity: sha512-c}
    engines: {node: '>=0.10.0'}
    dependencies:
      kind-of: 3.2.2
    dev: true

  /is-number/6.0.0:
    resolution: {integrity: sha512-d}
    engines: {node: '>=0.10.0'}
    dev: true

  /is-number/7.0.0:
    resolution: {integrity: sha512-e}
    engines: {node: '>=0.12.0'}
    dev: false

  /is-odd/0.1.2:
    resolution: {integrity: sha512-f}
    engines: {node: '>=0.10.0'}
    dependencies:
      is-number: 3.0.0
    dev: true

  /is-odd/3.0.1:
    resolution: {integrity: sha512-g}
    engines: {node: '>=4'}
    dependencies:
      is-number: 6.0.0
    dev: true

  /kind-of/3.2.2:
    resolution: {integrity: sha512-h}
    engines: {node: '>=0.10.0'}
    dependencies:
      is-buffer: 1.1.6
    dev: true

  /ms/2.1.2:
    resolution: {integrity: sha512-i}
    requiresBuild: true
    dev: false
    optional: true

  /ms/2.1.3:
    resolution: {integrity: sha512-j}
    dev: false
";

    #[test]
    fn lockfile_v5_of_pnpm7_reads_and_prunes() {
        let lock = parse(V5_PNPM7);
        assert_eq!(lock.version(), "5.4");
        assert_eq!(
            lock.importers(),
            vec![".", "services/a", "services/b", "shared"]
        );
        assert_eq!(
            lock.external_closure("services/a"),
            vec![
                "is-buffer@1.1.6",
                "is-even@1.0.0",
                "is-number@3.0.0",
                "is-odd@0.1.2",
                "kind-of@3.2.2",
                "ms@2.1.3"
            ]
        );
        // Pruned to every importer: the same bytes, as pnpm 7 wrote them.
        let all = set(&[".", "services/a", "services/b", "shared"]);
        assert_eq!(lock.prune(&all).expect("prune"), V5_PNPM7);
        // Pruned to one service's closure: b's optional ms@2.1.2 goes, and the flags pnpm derives
        // from all importers are recomputed (is-number@7.0.0 stays prod, through shared).
        let a = lock
            .prune(&set(&[".", "services/a", "shared"]))
            .expect("prune");
        assert!(!a.contains("services/b"), "{a}");
        assert!(!a.contains("/ms/2.1.2"), "{a}");
        assert!(a.contains("/ms/2.1.3:"), "{a}");
        assert!(a.contains("/is-number/7.0.0:\n    resolution: {integrity: sha512-e}\n    engines: {node: '>=0.12.0'}\n    dev: false\n"), "{a}");
        assert!(a.starts_with("lockfileVersion: 5.4\n"), "{a}");
        // b alone: ms@2.1.2 is reached only as an optional dependency, the dev chains not at all.
        let b = lock.prune(&set(&["services/b", "shared"])).expect("prune");
        assert!(b.contains("/ms/2.1.2:\n    resolution: {integrity: sha512-i}\n    requiresBuild: true\n    dev: false\n    optional: true\n"), "{b}");
        assert!(!b.contains("is-odd"), "{b}");
        // 5.3 reads too; other 5.x versions and older are refused by name.
        assert!(Lockfile::parse(
            Path::new("pnpm-lock.yaml"),
            &V5_PNPM7.replace("lockfileVersion: 5.4", "lockfileVersion: 5.3")
        )
        .is_ok());
        let e = parse_error(&V5_PNPM7.replace("lockfileVersion: 5.4", "lockfileVersion: 5.1"));
        assert!(e.contains("5.3 and 5.4 (pnpm 7)"), "{e}");
    }

    #[test]
    fn lockfile_v5_peer_suffixes() {
        assert_eq!(
            remove_peers_suffix_v5("/foo/1.0.0_react@17.0.2"),
            "/foo/1.0.0"
        );
        assert_eq!(
            remove_peers_suffix_v5("/@scope/foo_bar/1.0.0_@types+react@17.0.2"),
            "/@scope/foo_bar/1.0.0"
        );
        assert_eq!(remove_peers_suffix_v5("/ms/2.1.3"), "/ms/2.1.3");
    }

    #[test]
    fn lockfile_single_project_v6_without_importers() {
        let text = "lockfileVersion: '6.0'\n\ndependencies:\n  ms:\n    specifier: 2.1.3\n    version: 2.1.3\n\npackages:\n\n  /ms@2.1.3:\n    resolution: {integrity: sha512-x}\n    dev: false\n";
        let lock = parse(text);
        assert_eq!(lock.importers(), vec!["."]);
        assert_eq!(lock.prune(&set(&["."])).expect("prune"), text);
        assert_eq!(
            lock.prune(&set(&[])).expect("prune"),
            "lockfileVersion: '6.0'\n"
        );
    }

    #[test]
    fn lockfile_missing_entry_is_an_error_only_when_reached() {
        let text = "lockfileVersion: '9.0'\n\nimporters:\n\n  a:\n    dependencies:\n      ms:\n        specifier: 2.1.3\n        version: 2.1.3\n\n  b: {}\n";
        let lock = parse(text);
        assert!(lock.prune(&set(&["b"])).is_ok());
        let err = lock.prune(&set(&["a"])).expect_err("dangling");
        let msg = err.to_string();
        assert!(
            msg.contains("importer `a` depends on `ms` version `2.1.3`"),
            "{msg}"
        );
        assert!(msg.contains("pnpm-lock.yaml"), "{msg}");
    }

    #[test]
    fn lockfile_flags_are_inserted_in_pnpm_order() {
        let mut entry: Value = serde_norway::from_str(
            "resolution: {integrity: x}\ndependencies: {a: 1.0.0}\nfoo: 1\n",
        )
        .expect("yaml");
        set_flag(&mut entry, "optional", Some(true));
        set_flag(&mut entry, "dev", Some(false));
        let keys: Vec<String> = entry
            .as_mapping()
            .expect("map")
            .keys()
            .map(key_string)
            .collect();
        assert_eq!(
            keys,
            ["resolution", "dependencies", "dev", "optional", "foo"]
        );
        set_flag(&mut entry, "dev", None);
        assert!(!entry.as_mapping().expect("map").contains_key("dev"));
    }

    #[test]
    fn lockfile_writer_quotes_like_js_yaml() {
        let s = |v: &str| emit::scalar(v, 1, false, true);
        assert_eq!(s("2.1.3"), "2.1.3");
        assert_eq!(s("6.0"), "'6.0'");
        assert_eq!(s("@fx/shared"), "'@fx/shared'");
        assert_eq!(s("catalog:"), "'catalog:'");
        assert_eq!(s("workspace:*"), "workspace:*");
        assert_eq!(s("'*'"), "'''*'''");
        assert_eq!(s("*"), "'*'");
        assert_eq!(s(">=6.0"), "'>=6.0'");
        assert_eq!(s("^1.0.0 || ^2.0.0"), "^1.0.0 || ^2.0.0");
        assert_eq!(s("true"), "'true'");
        assert_eq!(s("yes"), "yes");
        assert_eq!(s("2024-01-02T03:04:05.000Z"), "'2024-01-02T03:04:05.000Z'");
        assert_eq!(s("2024-01-02"), "'2024-01-02'");
        assert_eq!(s("0x1F"), "'0x1F'");
        assert_eq!(s("1e5"), "'1e5'");
        assert_eq!(s("a #b"), "'a #b'");
        assert_eq!(s("a#b"), "a#b");
        assert_eq!(s("a: b"), "'a: b'");
        assert_eq!(s("tab\there"), "\"tab\\there\"");
        assert_eq!(s("two\nlines\n"), "|\n  two\n  lines");
        assert_eq!(s("no end\nnewline"), "|-\n  no end\n  newline");
        assert_eq!(emit::scalar("a,b", 1, true, false), "'a,b'");
        assert_eq!(emit::scalar("a,b", 1, true, true), "a,b");
        assert_eq!(s(""), "''");
    }

    #[test]
    fn lockfile_yaml_error_has_a_line() {
        let err = Lockfile::parse(
            Path::new("x/pnpm-lock.yaml"),
            "lockfileVersion: '9.0'\nimporters:\n  .:\n    dependencies: [\n",
        )
        .expect_err("bad yaml");
        match &err {
            Error::Yaml { line, message, .. } => {
                assert_eq!(*line, Some(5), "{err}");
                assert_eq!(
                    message,
                    "did not find expected node content, while parsing a flow node (column 1)"
                );
            }
            other => panic!("unexpected error {other}"),
        }
        assert!(err
            .to_string()
            .starts_with("invalid YAML in `x/pnpm-lock.yaml` at line 5: "));
        // A duplicate key is located at its mapping.
        let err = Lockfile::parse(Path::new("pnpm-lock.yaml"), "a: 1\na: 2\n").expect_err("dup");
        assert!(matches!(err, Error::Yaml { line: Some(1), .. }), "{err}");
    }

    mod roundtrip {
        use super::super::*;
        use proptest::prelude::*;

        fn reparse(text: &str) -> Value {
            match serde_norway::from_str(text) {
                Ok(v) => v,
                Err(e) => panic!("written YAML does not parse: {e}\n{text}"),
            }
        }

        fn string() -> impl Strategy<Value = String> {
            prop_oneof![
                "[ -~]{0,12}",
                "[0-9.eE+_xob:-]{1,8}",
                "(\\PC|[\t\n\r ]){0,10}",
                Just("null".to_string()),
                Just("~".to_string()),
                Just("2001-12-14 21:59:43.10 -5".to_string()),
            ]
        }

        fn check(key: &str, value: &str, item: &str) {
            let mut inner = Mapping::new();
            inner.insert(Value::String(key.into()), Value::String(value.into()));
            let mut flow = Mapping::new();
            flow.insert(Value::String(value.into()), Value::String(key.into()));
            let mut doc = Mapping::new();
            doc.insert(Value::String("packages".into()), Value::Mapping(inner));
            doc.insert(Value::String("engines".into()), Value::Mapping(flow));
            doc.insert(
                Value::String("os".into()),
                Value::Sequence(vec![Value::String(item.into())]),
            );
            doc.insert(
                Value::String("list".into()),
                Value::Sequence(vec![
                    Value::String(item.into()),
                    Value::String(value.into()),
                ]),
            );
            let doc = Value::Mapping(doc);
            let text = emit::document(&doc);
            assert_eq!(reparse(&text), doc, "{text}");
        }

        /// Where js-yaml's output does not read back, found by the property below.
        #[test]
        fn lockfile_written_strings_read_back_where_js_yaml_fails() {
            check("\u{a1}:{", "", "");
            check("a:?", "", "");
            check("", "\n", "");
            check("x", "\n\n", "a\n\n");
        }

        proptest! {
            #[test]
            fn lockfile_written_strings_read_back(key in string(), value in string(), item in string()) {
                check(&key, &value, &item);
            }
        }
    }
}
