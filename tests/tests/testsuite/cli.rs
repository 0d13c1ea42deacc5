//! The commands as users run them: `graph`, `images --dry-run`, `explain`, with their JSON shapes.

use tests::{copy_example, xtask, xtask_json};

#[test]
fn graph_json_dot_and_text() {
    let ex = copy_example();
    let g = xtask_json(ex.root(), &["graph", "--format", "json"]);
    let packages = g["packages"].as_array().expect("packages");
    assert_eq!(packages.len(), 5);
    let shared = packages
        .iter()
        .find(|p| p["name"] == "@kodingcaravan/shared")
        .expect("shared");
    assert_eq!(shared["kind"], "library");
    assert_eq!(shared["dir"], "shared");
    let gw = packages
        .iter()
        .find(|p| p["dir"] == "services/api-gateway")
        .expect("gateway");
    assert_eq!(gw["kind"], "service");
    let edges = g["edges"].as_array().expect("edges");
    assert_eq!(edges.len(), 4);
    assert!(edges.iter().all(|e| e["to"] == "@kodingcaravan/shared"));

    let dot = xtask(ex.root(), &["graph", "--format", "dot"]);
    assert!(dot.status.success());
    let dot = String::from_utf8_lossy(&dot.stdout);
    assert!(dot.starts_with("digraph"), "{dot}");
    assert!(
        dot.contains("\"@kodingcaravan/api-gateway\" -> \"@kodingcaravan/shared\""),
        "{dot}"
    );
    let text = xtask(ex.root(), &["graph"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("student-service"));
}

#[test]
fn dry_run_plans_every_image_with_reasons() {
    let ex = copy_example();
    let plan = xtask_json(ex.root(), &["images", "--dry-run", "--json"]);
    let images = plan["images"].as_array().expect("images");
    assert_eq!(images.len(), 4);
    for i in images {
        assert_eq!(i["action"], "build");
        assert_eq!(i["key"].as_str().expect("key").len(), 64);
        assert!(i["image"]
            .as_str()
            .expect("image")
            .starts_with("kodingcaravan-"));
        assert_eq!(i["reasons"][0], "no previous build recorded");
    }
    // Selecting one service plans only that one.
    let one = xtask_json(
        ex.root(),
        &["images", "--dry-run", "--json", "course-service"],
    );
    assert_eq!(one["images"].as_array().expect("images").len(), 1);
    // An unknown service is an error that lists the known ones.
    let bad = xtask(ex.root(), &["images", "--dry-run", "nope"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("unknown service `nope`") && err.contains("api-gateway"),
        "{err}"
    );
}

#[test]
fn explain_lists_every_context_file_with_its_digest() {
    let ex = copy_example();
    let e = xtask_json(ex.root(), &["explain", "student-service", "--json"]);
    assert_eq!(e["service"], "student-service");
    let inputs = e["inputs"].as_array().expect("inputs");
    let paths: Vec<&str> = inputs
        .iter()
        .map(|i| i["path"].as_str().expect("path"))
        .collect();
    for must in [
        "package.json",
        "pnpm-lock.yaml",
        "pnpm-workspace.yaml",
        ".npmrc",
        "shared/src/index.ts",
        "services/student-service/src/index.ts",
        "services/student-service/Dockerfile",
    ] {
        assert!(paths.contains(&must), "{must} missing from {paths:?}");
    }
    for never in [
        "services/api-gateway/src/index.ts",
        "README.md",
        "docker-compose.yml",
    ] {
        assert!(!paths.contains(&never), "{never} must not be an input");
    }
    assert!(inputs
        .iter()
        .all(|i| i["digest"].as_str().expect("digest").len() == 64));
    let plan = xtask_json(
        ex.root(),
        &["images", "--dry-run", "--json", "student-service"],
    );
    assert_eq!(plan["images"][0]["key"], e["key"]);
}

#[test]
fn dockerfiles_check_render_and_lint() {
    let ex = copy_example();
    let ok = xtask(ex.root(), &["dockerfiles", "--check"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    // A stale Dockerfile: --check prints a diff and fails; a plain run rewrites it.
    let tpl = ex.read("services/Dockerfile.template");
    ex.write(
        "services/Dockerfile.template",
        &tpl.replace(
            "ENV NODE_ENV=production",
            "ENV NODE_ENV=production\nENV TZ=UTC",
        ),
    );
    let stale = xtask(ex.root(), &["dockerfiles", "--check"]);
    assert!(!stale.status.success());
    let diff = String::from_utf8_lossy(&stale.stdout);
    assert!(diff.contains("+") && diff.contains("ENV TZ=UTC"), "{diff}");
    assert!(String::from_utf8_lossy(&stale.stderr).contains("4 Dockerfile(s) differ"));
    let write = xtask(ex.root(), &["dockerfiles"]);
    assert!(write.status.success());
    assert!(ex
        .read("services/course-service/Dockerfile")
        .contains("ENV TZ=UTC"));
    assert!(ex
        .read("services/course-service/Dockerfile")
        .contains("EXPOSE 3002"));
    assert!(xtask(ex.root(), &["dockerfiles", "--check"])
        .status
        .success());

    // A forbidden pattern in the template: each rendered Dockerfile fails with file, line, rule.
    ex.write(
        "services/Dockerfile.template",
        &tpl.replace(
            "CMD [\"node\", \"dist/index.js\"]",
            "CMD [\"node\", \"dist/index.js\", \"<SERVICE_NAME>\"]",
        ),
    );
    let lint = xtask(ex.root(), &["dockerfiles"]);
    assert!(!lint.status.success());
    let err = String::from_utf8_lossy(&lint.stderr);
    assert!(
        err.contains("services/student-service/Dockerfile:"),
        "{err}"
    );
    assert!(err.contains("service-selected-at-runtime"), "{err}");
}

#[test]
fn graph_dot_snapshot() {
    let ex = copy_example();
    let out = xtask(ex.root(), &["graph", "--format", "dot"]);
    assert!(out.status.success());
    insta::assert_snapshot!("example_graph_dot", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn error_message_snapshots() {
    // Messages are part of the interface: file, line, what is wrong, and a hint.
    let p = tests::project()
        .shared()
        .service("a", &[("@fx/missing", "workspace:^")])
        .build();
    let out = xtask(p.root(), &["images", "--dry-run"]);
    assert!(!out.status.success());
    let err =
        String::from_utf8_lossy(&out.stderr).replace(&p.root().display().to_string(), "[ROOT]");
    insta::assert_snapshot!("unknown_workspace_dependency", err);
}
