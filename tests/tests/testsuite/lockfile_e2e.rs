//! A third-party dependency added to one service changes only its key, and a real
//! `pnpm install --frozen-lockfile` accepts the pruned context the engine hands the builder
//! (pnpm 8 on the example; pnpm 7 and its lockfileVersion 5.4 on a fixture).

use std::path::{Path, PathBuf};
use std::process::Command;

use tests::{analyze_ok, copy_example, keys, materialize, project, run_ok};

fn pnpm() -> Command {
    // pnpm 8.15 is what the example pins; `.ci/run` installs it. Missing pnpm fails loudly.
    let mut c = Command::new("pnpm");
    c.env("CI", "true");
    c
}

#[test]
fn adding_a_dependency_to_one_service_changes_only_its_key_and_pnpm_accepts_the_pruned_context() {
    let ex = copy_example();
    let base = keys(ex.root());

    // Add a small third-party dependency to student-service, as a developer would.
    let pkg_path = "services/student-service/package.json";
    let mut pkg: serde_json::Value = serde_json::from_str(&ex.read(pkg_path)).expect("json");
    pkg["dependencies"]["is-number"] = serde_json::json!("7.0.0");
    ex.write(
        pkg_path,
        &format!("{}\n", serde_json::to_string_pretty(&pkg).expect("json")),
    );
    run_ok(
        pnpm()
            .args(["install", "--lockfile-only", "--ignore-scripts"])
            .current_dir(ex.root()),
        "pnpm install --lockfile-only",
    );
    assert!(ex.read("pnpm-lock.yaml").contains("is-number"));

    let after = keys(ex.root());
    for (s, k) in &after {
        if s == "student-service" {
            assert_ne!(*k, base[s], "student-service's key must change");
        } else {
            assert_eq!(*k, base[s], "{s}'s key must not change");
        }
    }

    // The pruned context of each of two services installs with a frozen lockfile.
    let a = analyze_ok(ex.root());
    for service in ["student-service", "course-service"] {
        let dest = tempfile::tempdir().expect("tempdir");
        materialize(ex.root(), &a, service, dest.path());
        let lock = std::fs::read_to_string(dest.path().join("pnpm-lock.yaml")).expect("lockfile");
        assert_eq!(
            lock.contains("is-number"),
            service == "student-service",
            "the pruned lockfile of {service} holds only its closure"
        );
        assert!(
            !dest.path().join("services/api-gateway").exists(),
            "no other service in the context"
        );
        run_ok(
            pnpm()
                .args(["install", "--frozen-lockfile", "--ignore-scripts"])
                .current_dir(dest.path()),
            &format!("pnpm install --frozen-lockfile in the context of {service}"),
        );
    }
}

/// pnpm 7, installed for this test into a temporary prefix (`npm i --prefix <dir> pnpm@7`).
fn pnpm7(prefix: &Path) -> PathBuf {
    run_ok(
        Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(prefix)
            .arg("pnpm@7"),
        "npm install pnpm@7",
    );
    prefix.join("node_modules/.bin/pnpm")
}

/// Lockfiles of pnpm 7 (lockfileVersion 5.4) are read and pruned, and pnpm 7's own
/// `install --frozen-lockfile` accepts the pruned context (they were refused by every command,
/// `graph` included).
#[test]
fn a_pnpm7_lockfile_is_pruned_and_pnpm7_accepts_it() {
    let prefix = tempfile::tempdir().expect("tempdir");
    let pnpm7 = pnpm7(prefix.path());
    let p = project()
        .shared()
        .file(
            "shared/package.json",
            "{\n  \"name\": \"@fx/shared\",\n  \"version\": \"1.0.0\",\n  \"dependencies\": { \"is-number\": \"7.0.0\" }\n}\n",
        )
        .service("a", &[("ms", "2.1.3")])
        .service("b", &[("ms", "2.1.2")])
        .build();
    for s in ["a", "b"] {
        let df = p.read(&format!("services/{s}/Dockerfile"));
        p.write(
            &format!("services/{s}/Dockerfile"),
            &df.replace(
                "COPY package.json pnpm-workspace.yaml ./",
                "COPY package.json pnpm-workspace.yaml pnpm-lock.yaml ./",
            ),
        );
    }
    run_ok(
        Command::new(&pnpm7)
            .args(["install", "--lockfile-only", "--ignore-scripts"])
            .env("CI", "true")
            .current_dir(p.root()),
        "pnpm 7 install --lockfile-only",
    );
    assert!(p
        .read("pnpm-lock.yaml")
        .starts_with("lockfileVersion: 5.4\n"));
    let graph = tests::xtask(p.root(), &["graph"]);
    assert!(
        graph.status.success(),
        "{}",
        String::from_utf8_lossy(&graph.stderr)
    );
    let a = analyze_ok(p.root());
    for service in ["a", "b"] {
        let dest = tempfile::tempdir().expect("tempdir");
        materialize(p.root(), &a, service, dest.path());
        let lock = std::fs::read_to_string(dest.path().join("pnpm-lock.yaml")).expect("lockfile");
        let other = if service == "a" { "b" } else { "a" };
        assert!(lock.contains(&format!("services/{service}:")), "{lock}");
        assert!(!lock.contains(&format!("services/{other}:")), "{lock}");
        run_ok(
            Command::new(&pnpm7)
                .args(["install", "--frozen-lockfile", "--ignore-scripts"])
                .env("CI", "true")
                .current_dir(dest.path()),
            &format!("pnpm 7 install --frozen-lockfile in the context of {service}"),
        );
    }
}
