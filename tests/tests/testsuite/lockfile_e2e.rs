//! A third-party dependency added to one service changes only its key, and a real
//! `pnpm install --frozen-lockfile` accepts the pruned context the engine hands the builder.

use std::path::Path;
use std::process::Command;

use tests::{analyze, copy_example, keys};

fn pnpm() -> Command {
    // pnpm 8.15 is what the example pins; `.ci/run` installs it. Missing pnpm fails loudly.
    let mut c = Command::new("pnpm");
    c.env("CI", "true");
    c
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{what}: failed to start (is pnpm 8.15 installed? `npm i -g pnpm@8.15.0`): {e}")
    });
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes the context of `service` (exactly what the builder gets) into `dest`.
fn materialize(root: &Path, service: &str, dest: &Path) {
    let a = analyze(root);
    let s = a.ws.service(service).expect("service");
    let img = a.image(s).expect("analysed");
    let tar = engine::execute::tar::write_context(root, &img.context, Vec::new()).expect("tar");
    std::fs::create_dir_all(dest).expect("mkdir");
    let tar_path = dest.with_extension("tar");
    std::fs::write(&tar_path, tar).expect("write tar");
    run(
        Command::new("tar")
            .arg("-xf")
            .arg(&tar_path)
            .arg("-C")
            .arg(dest),
        "tar -x",
    );
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
    run(
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
    for service in ["student-service", "course-service"] {
        let dest = ex.path(&format!("../ctx-{service}-{}", std::process::id()));
        materialize(ex.root(), service, &dest);
        let lock = std::fs::read_to_string(dest.join("pnpm-lock.yaml")).expect("lockfile");
        assert_eq!(
            lock.contains("is-number"),
            service == "student-service",
            "the pruned lockfile of {service} holds only its closure"
        );
        assert!(
            !dest.join("services/api-gateway").exists(),
            "no other service in the context"
        );
        run(
            pnpm()
                .args(["install", "--frozen-lockfile", "--ignore-scripts"])
                .current_dir(&dest),
            &format!("pnpm install --frozen-lockfile in the context of {service}"),
        );
        std::fs::remove_dir_all(&dest).ok();
        std::fs::remove_file(dest.with_extension("tar")).ok();
    }
}
