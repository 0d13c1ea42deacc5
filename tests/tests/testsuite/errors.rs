//! Bad input gets a clear error naming the file (and line where known), with a hint.

use tests::{analyze_error, project};

#[test]
fn malformed_package_json_names_file_and_line() {
    let p = project()
        .shared()
        .service("a", &[])
        .file(
            "services/a/package.json",
            "{\n  \"name\": \"@fx/a\",\n  \"version\": 1.0.0\n}\n",
        )
        .build();
    let e = analyze_error(p.root());
    assert!(e.contains("services/a/package.json"), "{e}");
    assert!(e.contains("line 3"), "{e}");
}

#[test]
fn malformed_workspace_yaml_names_file_and_line() {
    let p = project()
        .shared()
        .service("a", &[])
        .file(
            "pnpm-workspace.yaml",
            "packages:\n  - 'shared'\n  - [services/*\n",
        )
        .build();
    let e = analyze_error(p.root());
    assert!(e.contains("pnpm-workspace.yaml"), "{e}");
    assert!(e.contains("line"), "{e}");
}

/// A lockfile that cannot be read fails the services that copy it, naming it; the others (and
/// `graph`) do not need it.
#[test]
fn malformed_lockfile_names_file() {
    let p = project()
        .shared()
        .service("a", &[])
        .service("b", &[])
        .file(
            "pnpm-lock.yaml",
            "lockfileVersion: '6.0'\nimporters:\n  .: [\n",
        )
        .build();
    let df = p.read("services/a/Dockerfile");
    p.write(
        "services/a/Dockerfile",
        &df.replace(
            "COPY package.json pnpm-workspace.yaml ./",
            "COPY package.json pnpm-workspace.yaml pnpm-lock.yaml ./",
        ),
    );
    let e = analyze_error(p.root());
    assert!(e.contains("pnpm-lock.yaml"), "{e}");
    assert!(e.contains("service `a`"), "{e}");
    assert!(!e.contains("service `b`"), "{e}");
    let a = tests::analyze(p.root());
    assert_eq!(a.images.len(), 1, "b is analysed");
}

#[test]
fn a_cycle_is_named() {
    let p = project()
        .shared()
        .service("a", &[("@fx/b", "workspace:*")])
        .service("b", &[("@fx/a", "workspace:^")])
        .build();
    let e = analyze_error(p.root());
    assert!(e.contains("cycle"), "{e}");
    assert!(e.contains("@fx/a -> @fx/b -> @fx/a"), "{e}");
}

#[test]
fn an_unknown_workspace_dependency_names_the_package_json() {
    let p = project()
        .shared()
        .service("a", &[("@fx/nope", "workspace:*")])
        .build();
    let e = analyze_error(p.root());
    assert!(e.contains("services/a/package.json"), "{e}");
    assert!(e.contains("@fx/nope"), "{e}");
}

#[test]
fn two_packages_with_one_name() {
    let p = project()
        .shared()
        .service("a", &[])
        .file("services/b/package.json", "{ \"name\": \"@fx/a\" }\n")
        .build();
    let e = analyze_error(p.root());
    assert!(
        e.contains("two workspace packages are named `@fx/a`"),
        "{e}"
    );
    assert!(
        e.contains("services/a/package.json") && e.contains("services/b/package.json"),
        "{e}"
    );
}

#[test]
fn a_service_name_that_cannot_be_an_image_name() {
    let p = project().shared().service("Student_Service", &[]).build();
    let e = analyze_error(p.root());
    assert!(e.contains("Student_Service"), "{e}");
    assert!(e.contains("cannot be an image name"), "{e}");
}

#[test]
fn a_symlink_that_leaves_the_root() {
    let p = project().shared().service("a", &[]).build();
    std::os::unix::fs::symlink("/etc/hostname", p.path("services/a/src/host")).expect("symlink");
    let e = analyze_error(p.root());
    assert!(e.contains("services/a/src/host"), "{e}");
    assert!(e.contains("outside the monorepo root"), "{e}");
    std::fs::remove_file(p.path("services/a/src/host")).expect("rm");
    std::os::unix::fs::symlink("../../../../x", p.path("services/a/src/up")).expect("symlink");
    let e = analyze_error(p.root());
    assert!(e.contains("outside the monorepo root"), "{e}");
}

#[test]
fn a_file_name_that_is_not_utf8() {
    use std::os::unix::ffi::OsStrExt;
    let p = project().shared().service("a", &[]).build();
    let name = std::ffi::OsStr::from_bytes(b"bad-\xff.ts");
    std::fs::write(p.path("services/a/src").join(name), "x").expect("write");
    let e = analyze_error(p.root());
    assert!(e.contains("services/a/src/bad-"), "{e}");
    assert!(e.contains("not UTF-8"), "{e}");
    assert!(e.contains("rename it"), "{e}");
}

#[test]
fn a_missing_copy_source_names_the_dockerfile_line() {
    let p = project().shared().service("a", &[]).build();
    let df = p.read("services/a/Dockerfile");
    p.write(
        "services/a/Dockerfile",
        &df.replace(
            "COPY shared/ shared/",
            "COPY shared/ shared/\nCOPY config/missing.json ./",
        ),
    );
    let e = analyze_error(p.root());
    assert!(e.contains("services/a/Dockerfile"), "{e}");
    assert!(e.contains("config/missing.json"), "{e}");
    assert!(e.contains("line 9"), "{e}");
}

#[test]
fn no_workspace_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = analyze_error(dir.path());
    assert!(e.contains("pnpm-workspace.yaml"), "{e}");
    assert!(e.contains("--root"), "{e}");
}
