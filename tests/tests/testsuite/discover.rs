//! Discovery of any pnpm workspace: globs with `**` and `!`, catalogs, the workspace protocol in
//! all its forms, nested packages, directory names with `@`.

use engine::workspace::Workspace;
use tests::project;

fn dirs(ws: &Workspace) -> Vec<&str> {
    ws.packages.iter().map(|p| p.dir.as_str()).collect()
}

#[test]
fn globs_exclusions_catalogs_and_protocols() {
    let p = project()
        .file(
            "pnpm-workspace.yaml",
            "packages:\n  - 'libs/**'\n  - 'apps/*'\n  - '!**/fixtures/**'\n  - '!apps/legacy'\ncatalog:\n  ms: 2.1.3\ncatalogs:\n  tools:\n    typescript: 5.4.5\n",
        )
        .file("libs/core/package.json", r#"{"name":"@x/core","version":"1.2.0"}"#)
        .file("libs/nested/deep/util/package.json", r#"{"name":"@x/util","dependencies":{"@x/core":"workspace:~"}}"#)
        .file("libs/core/fixtures/sample/package.json", r#"{"name":"fixture-pkg"}"#)
        .file("libs/core/node_modules/dep/package.json", r#"{"name":"dep"}"#)
        .file("apps/legacy/package.json", r#"{"name":"legacy"}"#)
        .file(
            "apps/@scope-web/package.json",
            r#"{"name":"@x/web","dependencies":{"@x/core":"workspace:^","alias":"workspace:@x/util@*","ms":"catalog:","typescript":"catalog:tools"},"devDependencies":{"rel":"workspace:../../libs/core"},"peerDependencies":{"@x/util":"workspace:*"},"optionalDependencies":{"left-pad":"^1.3.0"}}"#,
        )
        .file("apps/@scope-web/Dockerfile", "FROM node:18-alpine\nCMD [\"node\", \"dist/index.js\"]\n")
        // `@scope-web` cannot be an image name: the config names the image.
        .file("images.toml", "[services.\"@scope-web\"]\nimage = \"web\"\n")
        .build();
    let ws = Workspace::discover(p.root()).expect("discover");
    assert_eq!(
        dirs(&ws),
        vec![".", "apps/@scope-web", "libs/core", "libs/nested/deep/util"]
    );
    assert_eq!(ws.catalogs["default"]["ms"], "2.1.3");
    assert_eq!(ws.catalogs["tools"]["typescript"], "5.4.5");
    let web = &ws.packages[1];
    let resolved: Vec<(&str, Option<&str>)> = web
        .dependencies
        .iter()
        .map(|d| {
            (
                d.name.as_str(),
                d.workspace.map(|i| ws.packages[i].dir.as_str()),
            )
        })
        .collect();
    for (name, dir) in [
        ("@x/core", Some("libs/core")),
        ("alias", Some("libs/nested/deep/util")),
        ("ms", None),
        ("typescript", None),
        ("rel", Some("libs/core")),
        ("@x/util", Some("libs/nested/deep/util")),
        ("left-pad", None),
    ] {
        assert!(resolved.contains(&(name, dir)), "{name}: {resolved:?}");
    }
    assert_eq!(ws.services.len(), 1);
    assert_eq!(ws.services[0].name, "@scope-web");
    assert_eq!(ws.services[0].image, "web");
    // The closure of the app holds both libraries.
    let closure: Vec<&str> = ws
        .closure(1)
        .into_iter()
        .map(|i| ws.packages[i].dir.as_str())
        .collect();
    assert_eq!(
        closure,
        vec!["apps/@scope-web", "libs/core", "libs/nested/deep/util"]
    );
}

#[test]
fn the_example_is_four_services_and_a_library() {
    let ws = Workspace::discover(&tests::example_dir()).expect("discover");
    let names: Vec<&str> = ws.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "api-gateway",
            "course-service",
            "enrollment-service",
            "student-service"
        ]
    );
    for s in &ws.services {
        assert_eq!(s.image, format!("kodingcaravan-{}", s.name));
        let closure = ws.closure(s.package);
        assert_eq!(closure.len(), 2, "{} depends on shared only", s.name);
    }
    let lock = ws
        .lockfile
        .as_ref()
        .expect("a readable lockfile")
        .as_ref()
        .expect("lockfile");
    assert_eq!(lock.version(), "6.0");
}
