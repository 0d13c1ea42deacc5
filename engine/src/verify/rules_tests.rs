//! Unit tests of the rules on hand-made image filesystems and configs.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::verify::layers::{Entry, Layer};

/// A layer from `(path, content)`: a path ending in `/` is a directory, `path -> target` a
/// symlink, `-path` a whiteout.
fn layer(entries: &[(&str, &str)]) -> Layer {
    let mut l = Layer::default();
    for (p, c) in entries {
        if let Some(w) = p.strip_prefix('-') {
            l.whiteouts.push(w.to_string());
            continue;
        }
        let (path, kind, link) = if let Some(d) = p.strip_suffix('/') {
            (d.to_string(), Kind::Dir, None)
        } else if let Some((a, b)) = p.split_once(" -> ") {
            (a.to_string(), Kind::Symlink, Some(b.to_string()))
        } else {
            (p.to_string(), Kind::File, None)
        };
        let content = (kind == Kind::File && wants_content(&path, c.len() as u64).is_some())
            .then(|| Arc::<[u8]>::from(c.as_bytes()));
        let secret = (kind == Kind::File)
            .then(|| {
                let head = crate::secrets::need(&path, c.len() as u64)
                    .map(|n| &c.as_bytes()[..(n as usize).min(c.len())]);
                crate::secrets::classify(&path, c.len() as u64, head)
            })
            .flatten();
        l.entries.push(Entry {
            path,
            kind,
            size: c.len() as u64,
            mode: 0o644,
            link,
            content,
            secret,
        });
    }
    l
}

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnode:x:1000:1000::/home/node:/bin/sh\nnodejs:x:1001:1001::/home/nodejs:/sbin/nologin\n";

/// The base image's layer, and a good service image on top of it.
fn base_layer() -> Layer {
    layer(&[
        ("/etc/", ""),
        ("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        ("/etc/ssl/cert.pem", "-----BEGIN CERTIFICATE-----\n"),
        ("/usr/local/bin/node", "ELF"),
        (
            "/usr/local/bin/npm -> ../lib/node_modules/npm/bin/npm-cli.js",
            "",
        ),
        (
            "/usr/local/lib/node_modules/corepack/shims/pnpm",
            "#!/bin/sh",
        ),
        ("/usr/local/lib/node_modules/corepack/dist/pnpm.js", ""),
        (
            "/usr/local/lib/node_modules/npm/package.json",
            r#"{"name":"npm"}"#,
        ),
    ])
}

fn good_layers() -> Vec<Layer> {
    vec![
        base_layer(),
        layer(&[("/etc/passwd", PASSWD)]),
        layer(&[
            ("/app/", ""),
            ("/app/shared/", ""),
            (
                "/app/shared/package.json",
                r#"{"name":"@kc/shared","main":"dist/index.js"}"#,
            ),
            ("/app/shared/dist/index.js", ""),
            ("/app/shared/dist/index.d.ts", ""),
            ("/app/service/", ""),
            (
                "/app/service/package.json",
                r#"{"name":"@kc/api","dependencies":{"@kc/shared":"file:../shared","express":"4"}}"#,
            ),
            ("/app/service/dist/index.js", ""),
            (
                "/app/service/node_modules/@kc/shared -> ../../../shared",
                "",
            ),
            (
                "/app/service/node_modules/express/package.json",
                r#"{"name":"express","dependencies":{"debug":"2"}}"#,
            ),
            (
                "/app/service/node_modules/debug/package.json",
                r#"{"name":"debug"}"#,
            ),
            (
                "/app/service/node_modules/express/index.ts",
                "// shipped by the package",
            ),
        ]),
    ]
}

fn subject() -> Subject {
    Subject {
        service: "api".into(),
        package: Some("@kc/api".into()),
        others: vec![OtherService {
            name: "course-service".into(),
            package: Some("@kc/course-service".into()),
        }],
        shared: vec!["@kc/shared".into()],
        dev_dependencies: BTreeMap::from([
            (
                "/app/service/node_modules".to_string(),
                vec!["@types/node".to_string(), "typescript".to_string()],
            ),
            (
                "/app/shared/node_modules".to_string(),
                vec!["typescript".to_string()],
            ),
        ]),
        prod_dependencies: ["@kc/shared", "express"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        base: "node:18-alpine".into(),
        budget_bytes: 300_000_000,
    }
}

fn config() -> ImageConfig {
    ImageConfig {
        id: "sha256:img".into(),
        user: "nodejs".into(),
        cmd: Some(vec!["node".into(), "dist/index.js".into()]),
        entrypoint: None,
        workdir: "/app/service".into(),
        healthcheck: Some(vec!["CMD-SHELL".into(), "node -e 0".into()]),
        env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
        labels: BTreeMap::new(),
        size: 120_000_000,
        diff_ids: vec!["sha256:base".into(), "sha256:a".into(), "sha256:b".into()],
    }
}

fn base() -> BaseImage {
    BaseImage {
        reference: "node:18-alpine".into(),
        config: Some(ImageConfig {
            diff_ids: vec!["sha256:base".into()],
            ..ImageConfig::default()
        }),
    }
}

fn run(layers: Vec<Layer>, config: &ImageConfig) -> Vec<Check> {
    let fs = ImageFs::from_layers(layers);
    check_all(
        &subject(),
        config,
        &base(),
        &fs,
        Check::pass(Rule::SharedResolves, "given"),
    )
}

fn failing(checks: &[Check]) -> Vec<Rule> {
    checks.iter().filter(|c| !c.ok).map(|c| c.rule).collect()
}

fn message(checks: &[Check], rule: Rule) -> String {
    checks
        .iter()
        .find(|c| c.rule == rule)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// Adds a layer to the good image and returns the failing rules and the checks.
fn with(extra: &[(&str, &str)]) -> (Vec<Rule>, Vec<Check>) {
    let mut layers = good_layers();
    layers.push(layer(extra));
    let mut c = config();
    c.diff_ids.push("sha256:extra".into());
    let checks = run(layers, &c);
    (failing(&checks), checks)
}

#[test]
fn a_good_image_passes_every_rule() {
    let checks = run(good_layers(), &config());
    assert_eq!(failing(&checks), vec![], "{checks:#?}");
    assert_eq!(
        checks.iter().map(|c| c.rule).collect::<Vec<_>>(),
        Rule::CHECKED.to_vec(),
        "every rule, in report order"
    );
    assert_eq!(
        message(&checks, Rule::NonRootUser),
        "runs as `nodejs` (uid 1001)"
    );
    assert_eq!(
        message(&checks, Rule::SizeBudget),
        "120.0 MB of a 300.0 MB budget"
    );
}

#[test]
fn another_service_in_app_is_named() {
    let (fail, checks) = with(&[
        ("/app/course-service/", ""),
        (
            "/app/course-service/package.json",
            r#"{"name":"@kc/course-service"}"#,
        ),
    ]);
    assert_eq!(fail, vec![Rule::AppIsolation]);
    let m = message(&checks, Rule::AppIsolation);
    assert!(
        m.contains("/app/course-service is the service `course-service`"),
        "{m}"
    );
    assert!(
        m.contains("the package of the service `course-service`"),
        "{m}"
    );
}

#[test]
fn a_directory_named_after_another_service_fails_but_a_file_may_name_it() {
    let (fail, checks) = with(&[
        ("/app/service/dist/routes/course-service.js", ""),
        ("/app/shared/course-service/a.js", ""),
        ("/app/shared/course-service/b.js", ""),
    ]);
    assert_eq!(fail, vec![Rule::AppIsolation]);
    assert_eq!(
        message(&checks, Rule::AppIsolation),
        "/app/shared/course-service is named after the service `course-service`"
    );
}

#[test]
fn a_wrong_package_in_app_service_fails_isolation() {
    let (fail, checks) = with(&[(
        "/app/service/package.json",
        r#"{"name":"@kc/other","dependencies":{"@kc/shared":"file:../shared"}}"#,
    )]);
    assert_eq!(fail, vec![Rule::AppIsolation]);
    assert!(message(&checks, Rule::AppIsolation).contains("not this service's package `@kc/api`"));
}

#[test]
fn pnpm_on_path_or_prepared_by_corepack_fails() {
    let (fail, checks) = with(&[(
        "/usr/local/bin/pnpm -> ../lib/node_modules/corepack/dist/pnpm.js",
        "",
    )]);
    assert_eq!(fail, vec![Rule::NoPnpm]);
    assert!(message(&checks, Rule::NoPnpm).contains("/usr/local/bin/pnpm (on PATH)"));
    let (fail, checks) = with(&[(
        "/root/.cache/node/corepack/v1/pnpm/8.15.0/package.json",
        "{}",
    )]);
    assert_eq!(fail, vec![Rule::NoPnpm]);
    assert!(message(&checks, Rule::NoPnpm).contains("prepared by corepack"));
    let (fail, _) = with(&[("/app/service/node_modules/.pnpm/", "")]);
    assert_eq!(fail, vec![Rule::NoPnpm]);
    let (fail, _) = with(&[("/app/pnpm-workspace.yaml", "packages: []")]);
    assert!(fail.contains(&Rule::NoPnpm), "{fail:?}");
}

#[test]
fn nx_and_typescript_fail_their_rules() {
    let (fail, _) = with(&[(
        "/app/service/node_modules/nx/package.json",
        r#"{"name":"nx"}"#,
    )]);
    assert_eq!(fail, vec![Rule::NoNx]);
    let (fail, _) = with(&[("/app/service/node_modules/@nx/js/package.json", "{}")]);
    assert_eq!(fail, vec![Rule::NoNx]);
    let (fail, checks) = with(&[("/usr/local/bin/tsc", "")]);
    assert_eq!(fail, vec![Rule::NoTypescript]);
    assert!(message(&checks, Rule::NoTypescript).contains("/usr/local/bin/tsc"));
    let (fail, checks) = with(&[
        ("/app/service/src/index.ts", ""),
        ("/app/service/dist/types.d.ts", ""),
    ]);
    assert_eq!(fail, vec![Rule::NoTypescript]);
    let m = message(&checks, Rule::NoTypescript);
    assert!(
        m.contains("1 TypeScript source file(s): /app/service/src/index.ts"),
        "{m}"
    );
}

#[test]
fn typescript_as_a_dev_dependency_fails_both_rules() {
    let (fail, checks) = with(&[(
        "/app/service/node_modules/typescript/package.json",
        r#"{"name":"typescript"}"#,
    )]);
    assert_eq!(fail, vec![Rule::NoTypescript, Rule::NoDevDependencies]);
    assert!(message(&checks, Rule::NoDevDependencies).contains(
        "the devDependency `typescript` is installed in /app/service/node_modules/typescript"
    ));
}

#[test]
fn a_dev_dependency_needed_at_run_time_is_allowed() {
    // `debug` needs `@types/node` (as some packages do): it is not a dev-only install.
    let (fail, _) = with(&[
        (
            "/app/service/node_modules/debug/package.json",
            r#"{"name":"debug","dependencies":{"@types/node":"*"}}"#,
        ),
        ("/app/service/node_modules/@types/node/package.json", "{}"),
    ]);
    assert_eq!(fail, vec![]);
    // Alone, it is a dev dependency.
    let (fail, _) = with(&[("/app/service/node_modules/@types/node/package.json", "{}")]);
    assert_eq!(fail, vec![Rule::NoDevDependencies]);
}

#[test]
fn the_shared_dependency_must_read_file_shared() {
    let (fail, checks) = with(&[(
        "/app/service/package.json",
        r#"{"name":"@kc/api","dependencies":{"@kc/shared":"workspace:*"}}"#,
    )]);
    assert_eq!(fail, vec![Rule::SharedDependency]);
    let m = message(&checks, Rule::SharedDependency);
    assert!(
        m.contains("with `workspace:*`, not `file:../shared`"),
        "{m}"
    );
}

#[test]
fn users_are_resolved_through_passwd() {
    let fs = ImageFs::from_layers(good_layers());
    let mut c = config();
    c.user = String::new();
    assert!(non_root_user(&c, &fs).message.contains("runs as root"));
    c.user = "root".into();
    assert!(!non_root_user(&c, &fs).ok);
    c.user = "node".into();
    let m = non_root_user(&c, &fs).message;
    assert!(m.contains("uid 1000, not 1001"), "{m}");
    c.user = "1001:1001".into();
    assert!(non_root_user(&c, &fs).ok);
    c.user = "ghost".into();
    assert!(non_root_user(&c, &fs)
        .message
        .contains("not in the image's /etc/passwd"));
}

#[test]
fn a_cmd_that_selects_the_service_is_named() {
    let fs = ImageFs::from_layers(good_layers());
    let mut c = config();
    c.cmd = Some(vec![
        "node".into(),
        "dist/index.js".into(),
        "--service".into(),
        "api".into(),
    ]);
    let check = cmd(&c, &base(), &fs, 1);
    assert!(!check.ok);
    assert!(
        check
            .message
            .contains(r#"the arguments ["--service","api"] select what runs"#),
        "{}",
        check.message
    );
    let mut c = config();
    c.entrypoint = Some(vec!["/start-service.sh".into()]);
    assert!(cmd(&c, &base(), &fs, 1).message.contains("ENTRYPOINT is"));
    // The base image's own entrypoint (docker-entrypoint.sh in the official node images) is fine.
    let mut b = base();
    if let Some(bc) = b.config.as_mut() {
        bc.entrypoint = Some(vec!["docker-entrypoint.sh".into()]);
    }
    let mut c = config();
    c.entrypoint = Some(vec!["docker-entrypoint.sh".into()]);
    assert!(cmd(&c, &b, &fs, 1).ok);
    let (fail, checks) = with(&[("/app/start-service.sh", "#!/bin/sh")]);
    assert!(fail.contains(&Rule::Cmd), "{fail:?}");
    assert!(message(&checks, Rule::Cmd).contains("/app/start-service.sh is a start script"));
}

#[test]
fn healthcheck_and_base_image() {
    let mut c = config();
    c.healthcheck = None;
    assert!(!healthcheck(&c).ok);
    c.healthcheck = Some(vec!["NONE".into()]);
    assert!(!healthcheck(&c).ok);
    let mut c = config();
    c.diff_ids = vec!["sha256:debian".into(), "sha256:a".into()];
    let check = base_image(&c, &base());
    assert!(!check.ok);
    assert!(
        check
            .message
            .contains("do not start with the 1 layer(s) of `node:18-alpine` (0 in common)"),
        "{}",
        check.message
    );
    let missing = BaseImage {
        reference: "node:18-alpine".into(),
        config: None,
    };
    assert!(base_image(&config(), &missing)
        .message
        .contains("not in the engine"));
}

#[test]
fn secrets_in_any_layer() {
    let (fail, checks) = with(&[("/app/service/.env", "DB_PASSWORD=x")]);
    assert_eq!(fail, vec![Rule::NoSecrets]);
    assert_eq!(
        message(&checks, Rule::NoSecrets),
        "/app/service/.env (an environment file) in layer 4 of 4"
    );
    // Added in one layer, deleted in the next: still shipped.
    let mut layers = good_layers();
    layers.push(layer(&[("/root/.ssh/id_rsa", "KEY")]));
    layers.push(layer(&[("-/root/.ssh/id_rsa", "")]));
    let checks = run(layers, &config());
    assert_eq!(failing(&checks), vec![Rule::NoSecrets]);
    let m = message(&checks, Rule::NoSecrets);
    assert!(m.contains("/root/.ssh/id_rsa (an SSH private key) in layer 4 of 5, deleted or replaced by a later layer"), "{m}");
}

#[test]
fn the_secrets_rule_names_each_file_and_its_kind() {
    // What counts as a secret is `crate::secrets`' to say (tested there); the rule reports each.
    let (fail, checks) = with(&[
        (
            "/app/service/.npmrc",
            "//registry.npmjs.org/:_authToken=npm_abc\n",
        ),
        ("/root/.netrc", "machine x password y\n"),
        ("/app/service/certs/client.p12", "binary"),
    ]);
    assert_eq!(fail, vec![Rule::NoSecrets]);
    let m = message(&checks, Rule::NoSecrets);
    assert!(
        m.contains("/app/service/.npmrc (an .npmrc holding a registry token)"),
        "{m}"
    );
    assert!(m.contains("/root/.netrc (a .netrc file)"), "{m}");
    assert!(
        m.contains("/app/service/certs/client.p12 (a PKCS#12 key store)"),
        "{m}"
    );
    let (fail, _) = with(&[
        ("/app/service/.npmrc", "auto-install-peers=true\n"),
        ("/app/service/.env.example", "X=\n"),
    ]);
    assert_eq!(fail, vec![]);
}

#[test]
fn size_over_budget_fails() {
    let mut s = subject();
    s.budget_bytes = 100_000_000;
    let check = size_budget(&s, &config());
    assert!(!check.ok);
    assert!(
        check
            .message
            .starts_with("120.0 MB is over the 100.0 MB budget by 20.0 MB"),
        "{}",
        check.message
    );
}

#[test]
fn subject_from_the_example_workspace() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kc-backend");
    let ws = crate::workspace::Workspace::discover(&root).expect("discover");
    let s = ws.service("course-service").expect("service");
    let subject = Subject::new(&ws, s);
    assert_eq!(subject.service, "course-service");
    assert_eq!(
        subject.package.as_deref(),
        Some("@kodingcaravan/course-service")
    );
    assert_eq!(subject.shared, vec!["@kodingcaravan/shared"]);
    assert_eq!(subject.others.len(), 3);
    assert_eq!(
        subject.dev_dependencies["/app/service/node_modules"],
        vec!["@types/ms", "@types/node", "typescript"]
    );
    assert_eq!(subject.base, "node:18-alpine");
    assert_eq!(subject.budget_bytes, 300_000_000);
}
