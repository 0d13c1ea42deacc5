//! `affected`: git fixtures for every kind of change — an edit, a rename, a deletion, a root file,
//! a new service, a removed service, a diverged branch (merge base, not the branch tip) and a
//! shallow clone.

use std::path::Path;
use std::process::Command;

use engine::affected::{affected, Affected, AffectedOptions};
use tests::{git, project, Fixture};

/// A repository with shared, a and b, committed on `main`.
fn repo() -> Fixture {
    let p = project()
        .shared()
        .service("a", &[])
        .service("b", &[])
        .file("services/b/src/old.ts", "export const old = 1;\n")
        .file(".gitignore", ".images-cache\nnode_modules\n")
        .build();
    git(p.root(), &["init", "-q", "-b", "main"]);
    commit(&p, "initial");
    p
}

fn commit(p: &Fixture, msg: &str) {
    git(p.root(), &["add", "-A"]);
    git(p.root(), &["commit", "-q", "-m", msg]);
}

fn run(root: &Path, base: &str, head: Option<&str>) -> Affected {
    affected(&AffectedOptions {
        root: root.to_path_buf(),
        base: base.to_string(),
        head: head.map(str::to_string),
        fallback_all: false,
    })
    .unwrap_or_else(|e| panic!("affected failed: {e}"))
}

fn services(a: &Affected) -> Vec<&str> {
    a.services.iter().map(String::as_str).collect()
}

#[test]
fn an_edit_affects_its_service_only() {
    let p = repo();
    git(p.root(), &["checkout", "-q", "-b", "feature"]);
    p.write("services/a/src/index.ts", "console.log('edited');\n");
    commit(&p, "edit a");
    let a = run(p.root(), "main", Some("feature"));
    assert_eq!(services(&a), vec!["a"]);
    assert_eq!(a.changed, vec!["services/a/src/index.ts"]);
    assert!(!a.all);
    // The same change, uncommitted, seen from the working tree.
    git(p.root(), &["reset", "-q", "--soft", "HEAD~1"]);
    let a = run(p.root(), "main", None);
    assert_eq!(services(&a), vec!["a"]);
    // An untracked file counts too.
    p.write("services/b/src/new.ts", "export {};\n");
    let a = run(p.root(), "main", None);
    assert_eq!(services(&a), vec!["a", "b"]);
}

#[test]
fn a_rename_and_a_deletion_count() {
    let p = repo();
    git(p.root(), &["checkout", "-q", "-b", "feature"]);
    git(
        p.root(),
        &["mv", "services/b/src/old.ts", "services/b/src/renamed.ts"],
    );
    commit(&p, "rename in b");
    let a = run(p.root(), "main", Some("feature"));
    assert_eq!(services(&a), vec!["b"]);
    assert_eq!(
        a.changed,
        vec!["services/b/src/old.ts", "services/b/src/renamed.ts"]
    );

    git(p.root(), &["checkout", "-q", "main"]);
    git(p.root(), &["checkout", "-q", "-b", "delete"]);
    git(p.root(), &["rm", "-q", "services/b/src/old.ts"]);
    commit(&p, "delete in b");
    let a = run(p.root(), "main", Some("delete"));
    assert_eq!(services(&a), vec!["b"]);
    assert!(
        a.reasons["b"]
            .iter()
            .any(|r| r.contains("removed: services/b/src/old.ts")),
        "{:?}",
        a.reasons
    );
}

#[test]
fn a_root_input_affects_all_and_says_why() {
    let p = repo();
    p.write(
        "package.json",
        "{\n  \"name\": \"fixture\",\n  \"private\": true,\n  \"version\": \"2.0.0\"\n}\n",
    );
    commit(&p, "root");
    let a = run(p.root(), "HEAD~1", Some("HEAD"));
    assert!(a.all);
    assert_eq!(services(&a), vec!["a", "b"]);
    assert_eq!(
        a.all_reason.as_deref(),
        Some("`package.json` is an input of every image")
    );
    // A root file that .dockerignore excludes affects nothing.
    p.write("notes.log", "x\n");
    commit(&p, "ignored");
    let a = run(p.root(), "HEAD~1", Some("HEAD"));
    assert!(!a.all, "{a:?}");
    assert!(a.services.is_empty(), "{a:?}");
}

#[test]
fn a_new_and_a_removed_service() {
    let p = repo();
    git(p.root(), &["checkout", "-q", "-b", "add"]);
    p.write(
        "services/c/package.json",
        "{ \"name\": \"@fx/c\", \"dependencies\": { \"@fx/shared\": \"workspace:*\" } }\n",
    );
    p.write("services/c/Dockerfile", &tests::fixture_dockerfile("c"));
    commit(&p, "add c");
    let a = run(p.root(), "main", Some("add"));
    assert_eq!(services(&a), vec!["c"]);
    assert_eq!(a.reasons["c"], vec!["a new service"]);

    git(p.root(), &["checkout", "-q", "main"]);
    git(p.root(), &["checkout", "-q", "-b", "remove"]);
    git(p.root(), &["rm", "-q", "-r", "services/b"]);
    commit(&p, "remove b");
    let a = run(p.root(), "main", Some("remove"));
    assert!(a.services.is_empty(), "{a:?}");
    assert_eq!(a.removed, vec!["b"]);
}

#[test]
fn a_diverged_branch_is_diffed_from_the_merge_base() {
    let p = repo();
    git(p.root(), &["checkout", "-q", "-b", "feature"]);
    p.write("services/b/src/index.ts", "console.log('feature');\n");
    commit(&p, "feature edits b");
    // Meanwhile main moves on and edits a: not the branch's change.
    git(p.root(), &["checkout", "-q", "main"]);
    p.write("services/a/src/index.ts", "console.log('main');\n");
    commit(&p, "main edits a");
    let a = run(p.root(), "main", Some("feature"));
    assert_eq!(services(&a), vec!["b"], "{a:?}");
    let base = git(p.root(), &["merge-base", "main", "feature"]);
    assert_eq!(a.merge_base.as_deref(), Some(base.as_str()));
}

#[test]
fn a_shallow_clone_is_a_clear_error_or_an_explicit_fallback() {
    let p = repo();
    p.write("services/a/src/index.ts", "console.log('2');\n");
    commit(&p, "second");
    git(p.root(), &["checkout", "-q", "-b", "feature"]);
    p.write("services/b/src/index.ts", "console.log('3');\n");
    commit(&p, "third");
    let clone = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", p.root().display());
    let out = Command::new("git")
        .args([
            "clone",
            "-q",
            "--depth",
            "1",
            "--branch",
            "feature",
            "--no-single-branch",
            &url,
        ])
        .arg(clone.path().join("c"))
        .output()
        .expect("git clone");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = clone.path().join("c");
    let err = affected(&AffectedOptions {
        root: root.clone(),
        base: "origin/main".into(),
        head: Some("HEAD".into()),
        fallback_all: false,
    })
    .expect_err("too shallow");
    let msg = err.to_string();
    assert!(msg.contains("too shallow"), "{msg}");
    assert!(
        msg.contains("--fallback-all") && msg.contains("fetch"),
        "{msg}"
    );
    let a = affected(&AffectedOptions {
        root,
        base: "origin/main".into(),
        head: Some("HEAD".into()),
        fallback_all: true,
    })
    .expect("fallback");
    assert!(a.all);
    assert_eq!(services(&a), vec!["a", "b"]);
    assert!(a
        .fallback
        .as_deref()
        .is_some_and(|f| f.contains("too shallow")));
}

#[test]
fn the_cli_prints_json_a_matrix_and_github_outputs() {
    let p = repo();
    git(p.root(), &["checkout", "-q", "-b", "feature"]);
    p.write("services/a/src/index.ts", "console.log('edited');\n");
    commit(&p, "edit a");
    let j = tests::xtask_json(
        p.root(),
        &[
            "affected", "--base", "main", "--head", "feature", "--format", "json",
        ],
    );
    assert_eq!(j["services"], serde_json::json!(["a"]));
    assert_eq!(j["all"], false);
    assert_eq!(j["changed"], serde_json::json!(["services/a/src/index.ts"]));
    let out_file = p.path("gh-output");
    let out = Command::new(tests::xtask_bin())
        .arg("--root")
        .arg(p.root())
        .args([
            "affected",
            "--base",
            "main",
            "--head",
            "feature",
            "--format",
            "github-matrix",
        ])
        .env("GITHUB_OUTPUT", &out_file)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        m,
        serde_json::json!({"include": [{"service": "a", "image": "a"}]})
    );
    let gh = std::fs::read_to_string(&out_file).expect("GITHUB_OUTPUT");
    assert!(gh.contains("services=[\"a\"]"), "{gh}");
    assert!(
        gh.contains("matrix={\"include\":[{\"service\":\"a\",\"image\":\"a\"}]}"),
        "{gh}"
    );
    assert!(gh.contains("any=true"), "{gh}");
}
