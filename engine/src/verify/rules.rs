//! The architecture's rules as pure checks of an image: its config (from `docker image inspect`)
//! and its layers (from `docker save`), against what the workspace says the service is. No Docker
//! here: the one check that needs a container (`shared-resolves`) runs in `verify::mod`.

use std::collections::{BTreeSet, HashMap};

use super::layers::{ImageFs, Kind};
pub use super::model::{
    BaseImage, Check, ImageConfig, OtherService, Rule, Subject, APP, APP_SERVICE, APP_SHARED,
    DEFAULT_SIZE_BUDGET_MB, EXPECTED_CMD, RUNTIME_UID,
};

/// Runs every rule but `shared-resolves` (given, as it needs a container), in report order.
pub fn check_all(
    subject: &Subject,
    config: &ImageConfig,
    base: &BaseImage,
    fs: &ImageFs,
    shared_resolves: Check,
) -> Vec<Check> {
    let base_layers = base.layers_in(config);
    vec![
        app_isolation(subject, fs),
        no_pnpm(config, fs),
        no_nx(config, fs),
        no_typescript(config, fs, base_layers),
        no_dev_dependencies(subject, fs),
        shared_dependency(subject, fs),
        shared_resolves,
        non_root_user(config, fs),
        cmd(config, base, fs, base_layers),
        healthcheck(config),
        base_image(config, base),
        no_secrets(fs),
        size_budget(subject, config),
    ]
}

/// Parses a `package.json` the reader kept.
fn package_json(fs: &ImageFs, path: &str) -> Option<serde_json::Value> {
    serde_json::from_slice(fs.content(path)?).ok()
}

fn under_node_modules(path: &str) -> bool {
    path.split('/').any(|s| s == "node_modules")
}

/// `(name, path)` of every installed package (`.../node_modules/<name>/package.json`).
fn installed_packages(fs: &ImageFs, dir: &str) -> Vec<(String, String)> {
    fs.below(dir)
        .filter_map(|(p, _)| {
            let rest = p.strip_suffix("/package.json")?;
            let (_, name) = rest.rsplit_once("/node_modules/")?;
            let ok = match name.split_once('/') {
                None => !name.starts_with('.') && !name.starts_with('@'),
                Some((scope, n)) => scope.starts_with('@') && !n.contains('/'),
            };
            ok.then(|| (name.to_string(), p.clone()))
        })
        .collect()
}

/// `/app` holds the shared package and this service only.
pub fn app_isolation(s: &Subject, fs: &ImageFs) -> Check {
    let rule = Rule::AppIsolation;
    if !fs.has(APP) || fs.get(APP).is_some_and(|n| n.kind != Kind::Dir) {
        return Check::fail(rule, "there is no /app directory: the runtime stage must put the shared package in /app/shared and the service in /app/service");
    }
    let other_of = |name: &str| s.others.iter().find(|o| o.name == name);
    let mut findings = Vec::new();
    for child in fs.children(APP) {
        if child == "shared" || child == "service" {
            continue;
        }
        let what = match other_of(child) {
            Some(o) => format!("/app/{child} is the service `{}`", o.name),
            None => format!("/app/{child} is neither shared/ nor service/"),
        };
        findings.push(what);
    }
    let name_of = |path: &str| {
        package_json(fs, path).and_then(|v| v.get("name")?.as_str().map(str::to_string))
    };
    match (s.package.as_deref(), name_of("/app/service/package.json")) {
        (_, None) => findings.push("/app/service/package.json is missing or unreadable".into()),
        (Some(want), Some(got)) if got != want => findings.push(format!(
            "/app/service holds `{got}`, not this service's package `{want}`"
        )),
        _ => {}
    }
    if let Some(want) = s.shared.first() {
        match name_of("/app/shared/package.json") {
            None => findings.push(format!(
                "/app/shared/package.json is missing or unreadable (the shared package `{want}` belongs there)"
            )),
            Some(got) if &got != want => findings.push(format!(
                "/app/shared holds `{got}`, not the shared package `{want}`"
            )),
            _ => {}
        }
    }
    let mut named_dirs = BTreeSet::new();
    for (path, node) in fs.below(APP) {
        if path.ends_with("/package.json") && node.kind == Kind::File {
            if let Some(name) = name_of(path) {
                if let Some(o) = s
                    .others
                    .iter()
                    .find(|o| o.package.as_deref() == Some(&name))
                {
                    findings.push(format!(
                        "{path} is `{name}`, the package of the service `{}`",
                        o.name
                    ));
                }
            }
        }
        if under_node_modules(path) {
            continue;
        }
        // A directory named after another service, below shared/ or service/ (a file so named,
        // like a gateway's route to that service, is fine).
        let segs: Vec<&str> = path[APP.len() + 1..].split('/').collect();
        let dirs = if node.kind == Kind::Dir {
            segs.len()
        } else {
            segs.len() - 1
        };
        if let Some(i) = (1..dirs).find(|&i| other_of(segs[i]).is_some()) {
            let dir = format!("{APP}/{}", segs[..=i].join("/"));
            if named_dirs.insert(dir.clone()) {
                findings.push(format!("{dir} is named after the service `{}`", segs[i]));
            }
        }
    }
    Check::from_findings(
        rule,
        "/app holds shared/ and service/ only, with no other service's code or package",
        findings,
    )
}

/// Entries named `name` in a directory on PATH or in any `node_modules/.bin`.
fn executables(config: &ImageConfig, fs: &ImageFs, names: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for dir in config.path_dirs() {
        for n in names {
            let p = format!("{dir}/{n}");
            if fs
                .get(&p)
                .is_some_and(|x| matches!(x.kind, Kind::File | Kind::Symlink))
            {
                out.push(format!("{p} (on PATH)"));
            }
        }
    }
    for (p, _) in fs.files.iter() {
        if let Some((dir, n)) = p.rsplit_once('/') {
            if dir.ends_with("/node_modules/.bin") && names.contains(&n) {
                out.push(p.clone());
            }
        }
    }
    out
}

/// Installed packages named as in `names` (exactly, or a scope ending in `/`).
fn packages_named(fs: &ImageFs, names: &[&str]) -> Vec<String> {
    installed_packages(fs, "/")
        .into_iter()
        .filter(|(n, _)| {
            names.iter().any(|w| match w.strip_suffix('/') {
                Some(scope) => n.starts_with(&format!("{scope}/")),
                None => n == w,
            })
        })
        .map(|(n, p)| {
            format!(
                "the package `{n}` ({})",
                p.trim_end_matches("/package.json")
            )
        })
        .collect()
}

/// No pnpm in the runtime image: no executable, package, corepack download, store, or pnpm
/// workspace files in /app.
pub fn no_pnpm(config: &ImageConfig, fs: &ImageFs) -> Check {
    let mut findings = executables(config, fs, &["pnpm", "pnpx"]);
    findings.extend(packages_named(fs, &["pnpm", "@pnpm/exe"]));
    let mut seen_dirs = BTreeSet::new();
    for (p, _) in fs.files.iter() {
        let segs: Vec<&str> = p.split('/').collect();
        // Corepack's cache of a prepared pnpm: ~/.cache/node/corepack/[v1/]pnpm/<version>.
        if let Some(i) = segs.iter().position(|s| *s == "corepack") {
            let is_cache = i >= 2 && segs[i - 1] == "node" && segs[i - 2] == ".cache";
            let pnpm = segs[i + 1..].iter().take(2).any(|s| *s == "pnpm");
            if is_cache && pnpm {
                let dir = segs[..(i + 2).min(segs.len())].join("/");
                if seen_dirs.insert(dir.clone()) {
                    findings.push(format!("{dir} (pnpm prepared by corepack)"));
                }
                continue;
            }
        }
        for store in [".pnpm-store", "pnpm"] {
            if let Some(i) = segs.iter().position(|s| *s == store) {
                let is_store = store == ".pnpm-store"
                    || (i >= 2 && segs[i - 1] == "share" && segs[i - 2] == ".local");
                let dir = segs[..=i].join("/");
                if is_store && seen_dirs.insert(dir.clone()) {
                    findings.push(format!("{dir} (a pnpm store)"));
                }
            }
        }
        if p.starts_with("/app/") {
            let name = segs.last().copied().unwrap_or("");
            if matches!(
                name,
                "pnpm-lock.yaml" | "pnpm-workspace.yaml" | ".pnpmfile.cjs"
            ) {
                findings.push(format!("{p} (pnpm workspace files)"));
            }
            if name == ".pnpm" && segs.len() >= 2 && segs[segs.len() - 2] == "node_modules" {
                findings.push(format!("{p} (node_modules installed by pnpm)"));
            }
        }
    }
    Check::from_findings(Rule::NoPnpm, "no pnpm in the image", findings)
}

/// No nx in the runtime image.
pub fn no_nx(config: &ImageConfig, fs: &ImageFs) -> Check {
    let mut findings = executables(config, fs, &["nx"]);
    findings.extend(packages_named(fs, &["nx", "@nrwl/", "@nx/"]));
    for (p, _) in fs.below(APP) {
        if p.ends_with("/nx.json") && !under_node_modules(p) {
            findings.push(format!("{p} (an nx workspace file)"));
        }
    }
    Check::from_findings(Rule::NoNx, "no nx in the image", findings)
}

/// A TypeScript source (not a declaration file).
fn is_ts_source(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let ts = [".ts", ".mts", ".cts", ".tsx"]
        .iter()
        .any(|e| name.ends_with(e));
    let decl = [".d.ts", ".d.mts", ".d.cts"]
        .iter()
        .any(|e| name.ends_with(e));
    ts && !decl
}

/// No TypeScript compiler (the `typescript` package, `tsc`) and no `.ts` sources outside
/// `node_modules` in what the image adds to its base (declaration files aside).
pub fn no_typescript(config: &ImageConfig, fs: &ImageFs, base_layers: usize) -> Check {
    let mut findings = executables(config, fs, &["tsc", "tsserver"]);
    findings.extend(packages_named(fs, &["typescript"]));
    let sources: Vec<&String> = fs
        .files
        .iter()
        .filter(|(p, n)| {
            n.kind == Kind::File
                && n.layer >= base_layers
                && is_ts_source(p)
                && !under_node_modules(p)
        })
        .map(|(p, _)| p)
        .collect();
    if !sources.is_empty() {
        let shown: Vec<&str> = sources.iter().take(3).map(|s| s.as_str()).collect();
        findings.push(format!(
            "{} TypeScript source file(s): {}{}",
            sources.len(),
            shown.join(", "),
            if sources.len() > 3 { ", ..." } else { "" }
        ));
    }
    Check::from_findings(
        Rule::NoTypescript,
        "no TypeScript compiler and no .ts sources",
        findings,
    )
}

/// No devDependency of the service (or of the shared package) is installed, unless a run-time
/// dependency needs it.
pub fn no_dev_dependencies(s: &Subject, fs: &ImageFs) -> Check {
    // What the run-time dependencies need, transitively, by the installed packages' manifests.
    let mut deps_of: HashMap<String, BTreeSet<String>> = HashMap::new();
    for (name, path) in installed_packages(fs, APP) {
        let Some(v) = package_json(fs, &path) else {
            continue;
        };
        let entry = deps_of.entry(name).or_default();
        for field in ["dependencies", "optionalDependencies", "peerDependencies"] {
            if let Some(m) = v.get(field).and_then(|m| m.as_object()) {
                entry.extend(m.keys().cloned());
            }
        }
    }
    let mut needed: BTreeSet<String> = BTreeSet::new();
    let mut stack: Vec<String> = s.prod_dependencies.iter().cloned().collect();
    while let Some(n) = stack.pop() {
        if needed.insert(n.clone()) {
            if let Some(d) = deps_of.get(&n) {
                stack.extend(d.iter().cloned());
            }
        }
    }
    let mut findings = Vec::new();
    let mut checked = 0;
    for (nm, devs) in &s.dev_dependencies {
        for d in devs {
            checked += 1;
            let p = format!("{nm}/{d}");
            if fs.has(&p) && !needed.contains(d) {
                findings.push(format!("the devDependency `{d}` is installed in {p}"));
            }
        }
    }
    let ok = if checked == 0 {
        "no devDependencies are declared".to_string()
    } else {
        format!("none of the {checked} devDependencies (of the service and the shared package) is installed")
    };
    Check::from_findings(Rule::NoDevDependencies, &ok, findings)
}

/// The service's dependency on the shared package reads `file:../shared`; no `workspace:` left.
pub fn shared_dependency(s: &Subject, fs: &ImageFs) -> Check {
    let rule = Rule::SharedDependency;
    let path = "/app/service/package.json";
    let Some(v) = package_json(fs, path) else {
        return Check::fail(rule, format!("{path} is missing or is not valid JSON"));
    };
    let mut findings = Vec::new();
    let spec_of = |name: &str| {
        ["dependencies", "optionalDependencies"]
            .iter()
            .find_map(|f| v.get(f)?.get(name)?.as_str().map(str::to_string))
    };
    for name in &s.shared {
        match spec_of(name) {
            Some(spec) if spec == "file:../shared" => {}
            Some(spec) => findings.push(format!(
                "{path} depends on `{name}` with `{spec}`, not `file:../shared`"
            )),
            None => findings.push(format!(
                "{path} does not depend on `{name}` (it must read `file:../shared`)"
            )),
        }
    }
    for field in [
        "dependencies",
        "optionalDependencies",
        "peerDependencies",
        "devDependencies",
    ] {
        if let Some(m) = v.get(field).and_then(|m| m.as_object()) {
            for (dep, spec) in m {
                if spec.as_str().is_some_and(|x| x.starts_with("workspace:")) {
                    findings.push(format!(
                        "{path} keeps the workspace dependency `{dep}`: `{}` in {field} (no workspace resolution at run time)",
                        spec.as_str().unwrap_or_default()
                    ));
                }
            }
        }
    }
    let ok = if s.shared.is_empty() {
        "the service depends on no workspace package".to_string()
    } else {
        format!("{} reads `file:../shared` in {path}", s.shared.join(", "))
    };
    Check::from_findings(rule, &ok, findings)
}

/// `uid` of a user name in the image's `/etc/passwd`.
fn passwd_uid(fs: &ImageFs, user: &str) -> Option<u32> {
    let text = String::from_utf8_lossy(fs.content("/etc/passwd")?).into_owned();
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == user).then_some(())?;
        f.next()?;
        f.next()?.parse().ok()
    })
}

/// The image runs as the non-root user with uid 1001.
pub fn non_root_user(config: &ImageConfig, fs: &ImageFs) -> Check {
    let rule = Rule::NonRootUser;
    let user = config.user.split(':').next().unwrap_or("").trim();
    if user.is_empty() {
        return Check::fail(
            rule,
            "no USER: the image runs as root; add `USER nodejs` (uid 1001) to the runtime stage",
        );
    }
    let uid = match user.parse::<u32>() {
        Ok(u) => u,
        Err(_) => match passwd_uid(fs, user) {
            Some(u) => u,
            None => {
                return Check::fail(
                    rule,
                    format!("USER `{user}` is not in the image's /etc/passwd"),
                )
            }
        },
    };
    if uid == 0 {
        Check::fail(rule, format!("USER `{user}` is root (uid 0)"))
    } else if uid != RUNTIME_UID {
        Check::fail(
            rule,
            format!("USER `{user}` has uid {uid}, not {RUNTIME_UID} (`nodejs:1001`)"),
        )
    } else {
        Check::pass(rule, format!("runs as `{user}` (uid {uid})"))
    }
}

fn json_words(words: &[String]) -> String {
    serde_json::to_string(words).unwrap_or_default()
}

/// A script that starts or selects services, by its name.
fn is_start_script(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "start-service",
        "run-service",
        "select-service",
        "start-all",
    ]
    .iter()
    .any(|p| n.starts_with(p))
        || n == "start.sh"
        || n.ends_with("entrypoint.sh")
}

/// `CMD ["node", "dist/index.js"]` from /app/service, with no arguments that select a service,
/// no ENTRYPOINT of its own and no start scripts.
pub fn cmd(config: &ImageConfig, base: &BaseImage, fs: &ImageFs, base_layers: usize) -> Check {
    let mut findings = Vec::new();
    let cmd = config.cmd.clone().unwrap_or_default();
    if cmd != EXPECTED_CMD {
        let extra = cmd.len() > 2 && cmd[..2] == EXPECTED_CMD;
        findings.push(if extra {
            format!(
                "CMD is {}: the arguments {} select what runs; the image must run its one service with CMD [\"node\",\"dist/index.js\"]",
                json_words(&cmd),
                json_words(&cmd[2..])
            )
        } else if cmd.is_empty() {
            "there is no CMD; use CMD [\"node\",\"dist/index.js\"]".to_string()
        } else {
            format!(
                "CMD is {}, not [\"node\",\"dist/index.js\"]",
                json_words(&cmd)
            )
        });
    }
    let entry = config.entrypoint.clone().unwrap_or_default();
    let base_entry = base
        .config
        .as_ref()
        .and_then(|b| b.entrypoint.clone())
        .unwrap_or_default();
    if !entry.is_empty() && entry != base_entry {
        findings.push(format!(
            "ENTRYPOINT is {}: nothing may wrap `node dist/index.js`",
            json_words(&entry)
        ));
    }
    if config.workdir.trim_end_matches('/') != APP_SERVICE {
        findings.push(format!(
            "the working directory is `{}`, not /app/service, so `dist/index.js` is not this service's",
            config.workdir
        ));
    }
    if !fs.exists("/app/service/dist/index.js") {
        findings.push("/app/service/dist/index.js does not exist".to_string());
    }
    for (p, n) in fs.files.iter() {
        let name = p.rsplit('/').next().unwrap_or("");
        if n.layer >= base_layers
            && n.kind != Kind::Dir
            && !under_node_modules(p)
            && is_start_script(name)
        {
            findings.push(format!("{p} is a start script"));
        }
    }
    Check::from_findings(
        Rule::Cmd,
        "CMD [\"node\",\"dist/index.js\"] in /app/service, no entrypoint, no start scripts",
        findings,
    )
}

/// The image has a HEALTHCHECK.
pub fn healthcheck(config: &ImageConfig) -> Check {
    match config.healthcheck.as_deref() {
        Some([kind, rest @ ..]) if kind != "NONE" && !rest.is_empty() => {
            let mut text = rest.join(" ");
            if text.chars().count() > 60 {
                text = format!("{}...", text.chars().take(57).collect::<String>());
            }
            Check::pass(Rule::Healthcheck, format!("HEALTHCHECK {kind} {text}"))
        }
        Some(_) => Check::fail(Rule::Healthcheck, "the HEALTHCHECK is disabled (NONE)"),
        None => Check::fail(
            Rule::Healthcheck,
            "no HEALTHCHECK; add one that calls the service's /health",
        ),
    }
}

/// The image is built on the configured base: the base image's layers are the image's first
/// layers (compared by diff id, which is the content digest of each layer).
pub fn base_image(config: &ImageConfig, base: &BaseImage) -> Check {
    let rule = Rule::BaseImage;
    let Some(b) = &base.config else {
        return Check::fail(
            rule,
            format!(
                "the base image `{}` is not in the engine, so the image's layers cannot be matched to it; pull it (`docker pull {}`) and verify again",
                base.reference, base.reference
            ),
        );
    };
    if b.diff_ids.is_empty() {
        return Check::fail(rule, format!("`{}` has no layers", base.reference));
    }
    if config.diff_ids.starts_with(&b.diff_ids) {
        return Check::pass(
            rule,
            format!(
                "built on `{}` (its {} layer(s) are the image's first)",
                base.reference,
                b.diff_ids.len()
            ),
        );
    }
    let common = config
        .diff_ids
        .iter()
        .zip(&b.diff_ids)
        .take_while(|(a, b)| a == b)
        .count();
    Check::fail(
        rule,
        format!(
            "the image's layers do not start with the {} layer(s) of `{}` ({common} in common): its runtime stage is not FROM `{}`, or `{}` changed since the build (rebuild with --force)",
            b.diff_ids.len(),
            base.reference,
            base.reference,
            base.reference
        ),
    )
}

/// No secret in any layer ([`crate::secrets`] judges each file as its layer is read): a file
/// deleted by a later layer still ships in the layer that added it.
pub fn no_secrets(fs: &ImageFs) -> Check {
    let n = fs.layers.len();
    let mut findings = Vec::new();
    for (i, layer) in fs.layers.iter().enumerate() {
        for e in &layer.entries {
            if e.kind != Kind::File {
                continue;
            }
            let Some(kind) = e.secret else {
                continue;
            };
            let still = fs.get(&e.path).is_some_and(|f| f.layer == i);
            findings.push(if still {
                format!("{} ({kind}) in layer {} of {n}", e.path, i + 1)
            } else {
                format!(
                    "{} ({kind}) in layer {} of {n}, deleted or replaced by a later layer but still shipped in that one",
                    e.path,
                    i + 1
                )
            });
        }
    }
    Check::from_findings(
        Rule::NoSecrets,
        &format!("no secret in any of the {n} layers"),
        findings,
    )
}

/// The files whose bytes the rules read, and how many bytes at most: `package.json` files under
/// /app and `/etc/passwd` (the secrets rule judges files as they stream past, keeping nothing).
pub fn wants_content(path: &str, _size: u64) -> Option<u64> {
    if path == "/etc/passwd" {
        return Some(1 << 20);
    }
    if path.starts_with("/app/") && path.ends_with("/package.json") {
        return Some(1 << 20);
    }
    None
}

/// Megabytes (10^6 bytes, as `docker images` prints them).
pub fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// The image's size against its budget.
pub fn size_budget(s: &Subject, config: &ImageConfig) -> Check {
    if config.size <= s.budget_bytes {
        Check::pass(
            Rule::SizeBudget,
            format!("{} of a {} budget", mb(config.size), mb(s.budget_bytes)),
        )
    } else {
        Check::fail(
            Rule::SizeBudget,
            format!(
                "{} is over the {} budget by {}; slim the image, or raise `size-budget-mb` in images.toml",
                mb(config.size),
                mb(s.budget_bytes),
                mb(config.size - s.budget_bytes)
            ),
        )
    }
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
