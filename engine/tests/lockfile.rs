//! Lockfile parsing and pruning on real lockfiles written by pnpm 8, 9, 10 and 11
//! (`tests/fixtures/lockfiles/*`, see the README there).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use engine::lockfile::Lockfile;
use engine::Error;
use serde_norway::Value;

/// Every fixture and its `lockfileVersion`.
const FIXTURES: [(&str, &str); 9] = [
    ("pnpm8", "6.0"),
    ("pnpm8-a-plus", "6.0"),
    ("pnpm8-time", "6.0"),
    ("pnpm9", "9.0"),
    ("pnpm9-a-plus", "9.0"),
    ("pnpm9-patch", "9.0"),
    ("pnpm10", "9.0"),
    ("pnpm11", "9.0"),
    ("pnpm11-package-manager", "9.0"),
];

/// The workspace fixtures (root + `shared` + `services/a` + `services/b`) with the same packages.
const WORKSPACES: [&str; 5] = ["pnpm8", "pnpm8-time", "pnpm9", "pnpm10", "pnpm11"];

/// The fixtures with `pruned-a.yaml` and `pruned-b.yaml`, checked with pnpm (see the README).
const CHECKED_WITH_PNPM: [&str; 6] = [
    "pnpm8",
    "pnpm8-time",
    "pnpm9",
    "pnpm9-patch",
    "pnpm10",
    "pnpm11",
];

const A: [&str; 3] = [".", "shared", "services/a"];
const B: [&str; 3] = [".", "shared", "services/b"];

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/lockfiles")
        .join(name)
}

fn read(name: &str, file: &str) -> String {
    let path = dir(name).join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn load(name: &str) -> Lockfile {
    let path = dir(name).join("pnpm-lock.yaml");
    Lockfile::parse(&path, &read(name, "pnpm-lock.yaml"))
        .unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

fn ids(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

fn prune(lock: &Lockfile, importers: &[&str]) -> String {
    lock.prune(&ids(importers))
        .unwrap_or_else(|e| panic!("prune: {e}"))
}

/// The last YAML document of a pruned lockfile.
fn project_document(text: &str) -> Value {
    let docs: Vec<Value> = serde_norway::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).expect("pruned output is YAML"))
        .collect();
    docs.into_iter().last().expect("one document")
}

fn keys(doc: &Value, section: &str) -> Vec<String> {
    doc.get(section)
        .and_then(Value::as_mapping)
        .map(|m| {
            m.keys()
                .map(|k| k.as_str().expect("string key").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn lockfile_fixtures_parse() {
    for (name, version) in FIXTURES {
        let lock = load(name);
        assert_eq!(lock.version(), version, "{name}");
        let expected: Vec<&str> = if name == "pnpm11-package-manager" {
            vec!["."]
        } else {
            vec![".", "services/a", "services/b", "shared"]
        };
        assert_eq!(lock.importers(), expected, "{name}");
    }
}

#[test]
fn lockfile_external_closure() {
    for name in WORKSPACES {
        let lock = load(name);
        assert_eq!(lock.external_closure("."), ["is-number@7.0.0"], "{name}");
        assert_eq!(
            lock.external_closure("shared"),
            ["is-number@7.0.0", "ms@2.1.3"],
            "{name}"
        );
        assert_eq!(
            lock.external_closure("services/a"),
            ["debug@4.4.3", "ms@2.1.2", "ms@2.1.3"],
            "{name}"
        );
        assert_eq!(
            lock.external_closure("services/b"),
            ["ms@2.0.0", "react@19.1.0", "use-sync-external-store@1.5.0"],
            "{name}"
        );
        assert!(lock.external_closure("services/nope").is_empty());
    }
    // The package manager's own packages (first document) are not the project's.
    assert_eq!(
        load("pnpm11-package-manager").external_closure("."),
        ["ms@2.1.3"]
    );
}

/// pnpm's own files come back byte for byte: same YAML style, and the recomputed `dev`/`optional`
/// flags agree with the ones pnpm wrote.
#[test]
fn lockfile_prune_to_every_importer_gives_back_the_file() {
    for (name, _) in FIXTURES {
        let lock = load(name);
        let all: Vec<String> = lock.importers();
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        assert_eq!(prune(&lock, &all), read(name, "pnpm-lock.yaml"), "{name}");
    }
}

#[test]
fn lockfile_prune_keeps_the_closure_only() {
    for name in WORKSPACES {
        let lock = load(name);
        let a = project_document(&prune(&lock, &A));
        assert_eq!(
            keys(&a, "importers"),
            [".", "services/a", "shared"],
            "{name}"
        );
        let b = project_document(&prune(&lock, &B));
        assert_eq!(
            keys(&b, "importers"),
            [".", "services/b", "shared"],
            "{name}"
        );
        let v6 = name.starts_with("pnpm8");
        let (a_nodes, b_nodes) = if v6 {
            (keys(&a, "packages"), keys(&b, "packages"))
        } else {
            assert_eq!(
                keys(&a, "packages"),
                ["debug@4.4.3", "is-number@7.0.0", "ms@2.1.2", "ms@2.1.3"],
                "{name}"
            );
            assert_eq!(
                keys(&b, "packages"),
                [
                    "is-number@7.0.0",
                    "ms@2.0.0",
                    "ms@2.1.3",
                    "react@19.1.0",
                    "use-sync-external-store@1.5.0"
                ],
                "{name}"
            );
            (keys(&a, "snapshots"), keys(&b, "snapshots"))
        };
        let slash = if v6 { "/" } else { "" };
        let expect =
            |list: &[&str]| -> Vec<String> { list.iter().map(|k| format!("{slash}{k}")).collect() };
        assert_eq!(
            a_nodes,
            expect(&["debug@4.4.3", "is-number@7.0.0", "ms@2.1.2", "ms@2.1.3"]),
            "{name}"
        );
        assert_eq!(
            b_nodes,
            expect(&[
                "is-number@7.0.0",
                "ms@2.0.0",
                "ms@2.1.3",
                "react@19.1.0",
                "use-sync-external-store@1.5.0(react@19.1.0)"
            ]),
            "{name}"
        );
        // Other sections are kept as they are.
        let full = project_document(&read(name, "pnpm-lock.yaml"));
        for section in ["lockfileVersion", "settings", "catalogs"] {
            assert_eq!(a.get(section), full.get(section), "{name} {section}");
            assert_eq!(b.get(section), full.get(section), "{name} {section}");
        }
    }
}

/// The pruned lockfiles that were checked with `pnpm install --frozen-lockfile` (see the README).
#[test]
fn lockfile_prune_matches_the_files_checked_with_pnpm() {
    for name in CHECKED_WITH_PNPM {
        let lock = load(name);
        assert_eq!(prune(&lock, &A), read(name, "pruned-a.yaml"), "{name}");
        assert_eq!(prune(&lock, &B), read(name, "pruned-b.yaml"), "{name}");
    }
}

#[test]
fn lockfile_prune_is_deterministic() {
    for (name, _) in FIXTURES {
        let first = prune(&load(name), &A);
        let lock = load(name);
        assert_eq!(prune(&lock, &A), first, "{name}");
        assert_eq!(prune(&lock, &A), first, "{name}");
        // Unknown importer ids are ignored.
        assert_eq!(
            prune(&lock, &[".", "shared", "services/a", "services/nope"]),
            first,
            "{name}"
        );
    }
}

/// `*-a-plus` is the same workspace after adding `is-odd` (dependency) and `ms@2.0.0`
/// (devDependency, also a dependency of b) to `services/a`: b's lockfile must not change,
/// though pnpm dropped `dev: false` from `/ms@2.0.0` in the whole 6.0 lockfile.
#[test]
fn lockfile_prune_of_b_ignores_changes_to_a() {
    for name in ["pnpm8", "pnpm9"] {
        let plus = format!("{name}-a-plus");
        let (before, after) = (load(name), load(&plus));
        assert_ne!(read(name, "pnpm-lock.yaml"), read(&plus, "pnpm-lock.yaml"));
        assert_eq!(prune(&before, &B), prune(&after, &B), "{name}");
        assert_ne!(prune(&before, &A), prune(&after, &A), "{name}");
        let root_only = prune(&before, &["."]);
        assert_eq!(root_only, prune(&after, &["."]), "{name}");
    }
}

/// Flags that pnpm derives from every importer are recomputed for the kept ones.
#[test]
fn lockfile_prune_recomputes_dev_and_optional() {
    let flags = |doc: &Value, section: &str, key: &str| -> (Option<bool>, Option<bool>) {
        let entry = &doc[section][key];
        (
            entry.get("dev").and_then(Value::as_bool),
            entry.get("optional").and_then(Value::as_bool),
        )
    };
    // In b's closure `ms@2.1.3` is reached only from `optionalDependencies` of `shared`.
    let b6 = project_document(&prune(&load("pnpm8"), &B));
    assert_eq!(
        flags(&b6, "packages", "/ms@2.1.3"),
        (Some(false), Some(true))
    );
    assert_eq!(flags(&b6, "packages", "/react@19.1.0"), (None, None));
    let b6plus = project_document(&prune(&load("pnpm8-a-plus"), &B));
    assert_eq!(flags(&b6plus, "packages", "/ms@2.0.0"), (Some(false), None));
    let full6plus = project_document(&read("pnpm8-a-plus", "pnpm-lock.yaml"));
    assert_eq!(flags(&full6plus, "packages", "/ms@2.0.0"), (None, None));
    let a6 = project_document(&prune(&load("pnpm8"), &A));
    assert_eq!(flags(&a6, "packages", "/ms@2.1.3"), (Some(false), None));

    let b9 = project_document(&prune(&load("pnpm9"), &B));
    assert_eq!(flags(&b9, "snapshots", "ms@2.1.3"), (None, Some(true)));
    let a9 = project_document(&prune(&load("pnpm9"), &A));
    assert_eq!(flags(&a9, "snapshots", "ms@2.1.3"), (None, None));
}

/// pnpm 11 writes `---`, the config dependencies document, `---`, the project lockfile.
#[test]
fn lockfile_pnpm11_keeps_the_config_dependencies_document() {
    for name in ["pnpm11", "pnpm11-package-manager"] {
        let text = read(name, "pnpm-lock.yaml");
        let env_end = text.find("\n---\n").expect("two documents") + "\n---\n".len();
        assert!(text.starts_with("---\n"), "{name}");
        let lock = load(name);
        let importers: &[&str] = if name == "pnpm11" { &A } else { &["."] };
        let pruned = prune(&lock, importers);
        assert!(pruned.starts_with(&text[..env_end]), "{name}:\n{pruned}");
        // Pruning to nothing still keeps the first document whole.
        let none = prune(&lock, &[]);
        assert!(none.starts_with(&text[..env_end]), "{name}");
        let project = project_document(&none);
        assert_eq!(project["importers"], Value::Mapping(Default::default()));
        assert!(project.get("packages").is_none() && project.get("snapshots").is_none());
    }
}

/// `patchedDependencies` is kept whole: pnpm refuses a frozen install when it differs from the
/// config (checked: `ERR_PNPM_LOCKFILE_CONFIG_MISMATCH`). Patched snapshots resolve like peers.
#[test]
fn lockfile_prune_keeps_every_patch() {
    let lock = load("pnpm9-patch");
    let full = project_document(&read("pnpm9-patch", "pnpm-lock.yaml"));
    let a = project_document(&prune(&lock, &A));
    let b = project_document(&prune(&lock, &B));
    assert!(full.get("patchedDependencies").is_some());
    assert_eq!(
        a.get("patchedDependencies"),
        full.get("patchedDependencies")
    );
    assert_eq!(
        b.get("patchedDependencies"),
        full.get("patchedDependencies")
    );
    let patched = "ms@2.0.0(patch_hash=vawbk7a2n5ifwc5mboau4gcycm)";
    assert!(keys(&b, "snapshots").iter().any(|k| k == patched));
    assert!(keys(&b, "packages").iter().any(|k| k == "ms@2.0.0"));
    assert!(!keys(&a, "snapshots").iter().any(|k| k == patched));
    assert_eq!(lock.external_closure("services/b")[0], "ms@2.0.0");
}

/// `time` (resolution-mode=time-based) keeps the entries of kept packages, keyed without peers.
#[test]
fn lockfile_prune_keeps_time_of_kept_packages() {
    let lock = load("pnpm8-time");
    assert_eq!(
        keys(&project_document(&prune(&lock, &A)), "time"),
        ["/debug@4.4.3", "/is-number@7.0.0", "/ms@2.1.2", "/ms@2.1.3"]
    );
    assert_eq!(
        keys(&project_document(&prune(&lock, &B)), "time"),
        [
            "/is-number@7.0.0",
            "/ms@2.0.0",
            "/ms@2.1.3",
            "/react@19.1.0",
            "/use-sync-external-store@1.5.0"
        ]
    );
}

#[test]
fn lockfile_only_config_dependencies_is_an_error() {
    let text = read("pnpm11-package-manager", "pnpm-lock.yaml");
    let env_end = text.find("\n---\n").expect("two documents") + "\n---\n".len();
    let err = Lockfile::parse(Path::new("pnpm-lock.yaml"), &text[..env_end])
        .expect_err("no project document");
    assert!(
        matches!(&err, Error::Lockfile { message, .. } if message.contains("config dependencies")),
        "{err}"
    );
}

#[test]
fn lockfile_malformed_yaml_is_a_yaml_error_with_a_line() {
    let text = read("pnpm9", "pnpm-lock.yaml").replacen(
        "  services/a:\n",
        "  services/a:\n   - oops: [\n",
        1,
    );
    let line = text
        .lines()
        .position(|l| l.contains("oops"))
        .expect("inserted");
    let err = Lockfile::parse(Path::new("repo/pnpm-lock.yaml"), &text).expect_err("bad YAML");
    match &err {
        Error::Yaml {
            path,
            line: Some(at),
            ..
        } => {
            assert_eq!(path, Path::new("repo/pnpm-lock.yaml"));
            assert!(
                (line + 1..=line + 3).contains(at),
                "error at line {at}, oops at line {}",
                line + 1
            );
        }
        other => panic!("expected a YAML error with a line, got {other:?}"),
    }
    let shown = err.to_string();
    assert!(
        shown.contains("repo/pnpm-lock.yaml") && shown.contains(" at line "),
        "{shown}"
    );
}

#[test]
fn lockfile_version_missing_or_unsupported_is_a_lockfile_error() {
    let text = read("pnpm9", "pnpm-lock.yaml");
    let cases = [
        (
            text.replacen("lockfileVersion: '9.0'\n", "", 1),
            "missing `lockfileVersion`",
        ),
        // pnpm 7's 5.3 and 5.4 are read (see the unit tests); older ones are not.
        (text.replacen("'9.0'", "'5.1'", 1), "`5.1`"),
        (text.replacen("'9.0'", "5.2", 1), "`5.2`"),
        (text.replacen("'9.0'", "'7.0'", 1), "`7.0`"),
    ];
    for (text, expected) in cases {
        let err = Lockfile::parse(Path::new("repo/pnpm-lock.yaml"), &text).expect_err("rejected");
        match &err {
            Error::Lockfile { path, message } => {
                assert_eq!(path, Path::new("repo/pnpm-lock.yaml"));
                assert!(message.contains(expected), "{message}");
            }
            other => panic!("expected a lockfile error, got {other:?}"),
        }
        assert!(err.to_string().contains("repo/pnpm-lock.yaml"));
    }
    let err = Lockfile::parse(Path::new("pnpm-lock.yaml"), "").expect_err("empty");
    assert!(matches!(err, Error::Lockfile { .. }), "{err}");
    let err = Lockfile::parse(Path::new("pnpm-lock.yaml"), "- a\n").expect_err("a list");
    assert!(matches!(err, Error::Lockfile { .. }), "{err}");
}
