//! Keys: what changes an image's key and what does not (DESIGN.md principles 2 and 3).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tests::{copy_example, keys, project};

fn set_mtime_all(dir: &Path, secs: u64) {
    for entry in walk(dir) {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        let f = std::fs::File::options()
            .write(true)
            .open(&entry)
            .expect("open");
        f.set_times(std::fs::FileTimes::new().set_modified(t).set_accessed(t))
            .expect("set times");
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let e = e.expect("entry");
        if e.file_type().expect("type").is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn same_keys_from_two_copies_with_other_paths_mtimes_and_umask() {
    let a = copy_example();
    let b = copy_example();
    set_mtime_all(a.root(), 1_000_000_000);
    set_mtime_all(b.root(), 1_700_000_000);
    // A group-writable checkout (umask 002) against the default one (022).
    for f in walk(b.root()) {
        let mut p = std::fs::metadata(&f).expect("stat").permissions();
        p.set_mode(p.mode() | 0o020);
        std::fs::set_permissions(&f, p).expect("chmod");
    }
    let ka = keys(a.root());
    let kb = keys(b.root());
    assert_eq!(ka.len(), 4, "{ka:?}");
    assert_eq!(ka, kb);
}

#[test]
fn what_changes_a_key() {
    let p = project()
        .shared()
        .service("a", &[])
        .service("b", &[])
        .file("services/a/src/util.ts", "export const u = 1;\n")
        .file("services/a/debug.log", "noise\n")
        .file("tools/outside.txt", "not in any closure\n")
        .build();
    let base = keys(p.root());
    let changed = |what: &str| {
        let now = keys(p.root());
        assert_ne!(now["a"], base["a"], "{what} must change a's key");
        assert_eq!(now["b"], base["b"], "{what} must not change b's key");
    };

    p.write("services/a/src/util.ts", "export const u = 2;\n");
    changed("a byte of a context file");
    p.write("services/a/src/util.ts", "export const u = 1;\n");
    assert_eq!(keys(p.root()), base, "restoring the byte restores the key");

    p.set_executable("services/a/src/util.ts", true);
    changed("a mode bit");
    p.set_executable("services/a/src/util.ts", false);
    assert_eq!(keys(p.root()), base);

    p.rename("services/a/src/util.ts", "services/a/src/util2.ts");
    changed("a rename");
    p.rename("services/a/src/util2.ts", "services/a/src/util.ts");
    assert_eq!(keys(p.root()), base);

    p.write("services/a/src/new.ts", "export {};\n");
    changed("an added file");
    p.remove("services/a/src/new.ts");
    assert_eq!(keys(p.root()), base);

    let df = p.read("services/a/Dockerfile");
    p.write("services/a/Dockerfile", &format!("{df}# a comment\n"));
    changed("the Dockerfile");
    p.write("services/a/Dockerfile", &df);
    assert_eq!(keys(p.root()), base);

    p.write(
        "images.toml",
        "[services.a]\nbuild-args = { NODE_ENV = \"test\" }\n",
    );
    changed("a build argument");
    p.remove("images.toml");
    assert_eq!(keys(p.root()), base);

    // Not in the key: a file `.dockerignore` excludes, a file outside the closure.
    p.write("services/a/debug.log", "other noise\n");
    p.write("services/a/node_modules/x/index.js", "1\n");
    p.write("tools/outside.txt", "still not in any closure\n");
    assert_eq!(keys(p.root()), base);
}

#[test]
fn a_build_arg_flag_changes_every_key() {
    let p = project().shared().service("a", &[]).build();
    let mut opts = engine::pipeline::Options::new(p.root());
    opts.cache_dir = Some(p.path(".images-cache"));
    let base = engine::pipeline::analyze(&opts).expect("analyze").images[0].key;
    opts.build_args.insert("VERSION".into(), "2".into());
    let with_arg = engine::pipeline::analyze(&opts).expect("analyze").images[0].key;
    assert_ne!(base, with_arg);
}

#[test]
fn editing_a_service_changes_only_its_key_and_shared_changes_all() {
    let ex = copy_example();
    let base = keys(ex.root());
    let path = "services/student-service/src/index.ts";
    let src = ex.read(path);
    ex.write(path, &format!("{src}\n// edited\n"));
    let after = keys(ex.root());
    for (s, k) in &after {
        if s == "student-service" {
            assert_ne!(*k, base[s], "student-service must change");
        } else {
            assert_eq!(*k, base[s], "{s} must not change");
        }
    }
    ex.write(path, &src);
    let shared = "shared/src/logger.ts";
    let src = ex.read(shared);
    ex.write(shared, &format!("{src}\n// edited\n"));
    let after = keys(ex.root());
    for (s, k) in &after {
        assert_ne!(*k, base[s], "{s} must change with the shared package");
    }
    // A root file in every context changes every key too; an ignored one changes none.
    ex.write(shared, &src);
    assert_eq!(keys(ex.root()), base);
    ex.write("README.md", "# edited docs\n");
    ex.write(
        "docker-compose.yml",
        &format!("{}\n# edited\n", ex.read("docker-compose.yml")),
    );
    assert_eq!(keys(ex.root()), base, "ignored root files are not inputs");
}

/// Patch files are in a context exactly when its Dockerfile copies them, as Docker would send
/// them: the engine adds none of its own, so a patch changes only the images that copy it.
#[test]
fn patch_files_are_inputs_where_the_dockerfile_copies_them() {
    let p = project()
        .shared()
        .service("a", &[])
        .service("b", &[])
        .file(
            "package.json",
            "{\n  \"name\": \"fixture\",\n  \"private\": true,\n  \"pnpm\": { \"patchedDependencies\": { \"ms@2.1.3\": \"patches/ms@2.1.3.patch\" } }\n}\n",
        )
        .file("patches/ms@2.1.3.patch", "--- a/index.js\n+++ b/index.js\n")
        .build();
    let df = p.read("services/a/Dockerfile");
    p.write(
        "services/a/Dockerfile",
        &df.replace(
            "COPY shared/package.json shared/",
            "COPY shared/package.json shared/\nCOPY patches/ patches/",
        ),
    );
    let a = tests::analyze_ok(p.root());
    for img in &a.images {
        let name = &a.ws.services[img.service].name;
        let paths: Vec<&str> = img.context.files.iter().map(|f| &*f.path).collect();
        assert_eq!(
            paths.contains(&"patches/ms@2.1.3.patch"),
            name == "a",
            "{name}: {paths:?}"
        );
    }
    let base = keys(p.root());
    p.write(
        "patches/ms@2.1.3.patch",
        "--- a/index.js\n+++ b/index.js\n@@ changed\n",
    );
    let after = keys(p.root());
    assert_ne!(after["a"], base["a"]);
    assert_eq!(after["b"], base["b"]);
}

/// Pruned lockfiles are kept between runs under a key of what a pruning depends on: a stored
/// pruning is used for the same lockfile text and importers, and never once the lockfile changes.
#[test]
fn a_stored_pruning_is_used_only_for_the_same_lockfile() {
    use engine::context::Source;
    let ex = copy_example();
    let root = ex.root();
    let lockfile_of = |a: &engine::pipeline::Analysis| -> Vec<(String, Vec<u8>)> {
        a.images
            .iter()
            .map(|i| {
                let f = i
                    .context
                    .files
                    .iter()
                    .find(|f| &*f.path == "pnpm-lock.yaml")
                    .expect("the pruned lockfile is in every context");
                let Source::Virtual(bytes) = &f.source else {
                    panic!("the lockfile is the engine's pruning")
                };
                (a.ws.services[i.service].name.clone(), bytes.to_vec())
            })
            .collect()
    };
    let first = tests::analyze(root);
    let real = lockfile_of(&first);
    let cache_file = cache::Layout::new(root.join(".images-cache")).pruned_lockfiles();
    assert!(cache_file.is_file(), "the first plan stores its prunings");
    assert_eq!(lockfile_of(&tests::analyze(root)), real);

    // Poison every stored pruning under its own key: the next plan uses them (so they are used)...
    let lock = first
        .ws
        .lockfile
        .as_ref()
        .expect("a readable lockfile")
        .as_ref()
        .expect("the example has a lockfile");
    let mut poisoned = engine::prunecache::PruneCache::new();
    for i in &first.images {
        let importers: std::collections::BTreeSet<String> = first
            .ws
            .closure(first.ws.services[i.service].package)
            .into_iter()
            .map(|p| first.ws.packages[p].dir.clone())
            .chain(std::iter::once(".".to_string()))
            .collect();
        poisoned.insert(
            lock.prune_key(&importers),
            std::sync::Arc::new(b"poisoned\n".to_vec()),
        );
    }
    poisoned.save(&cache_file).expect("save");
    assert!(lockfile_of(&tests::analyze(root))
        .iter()
        .all(|(_, b)| b == b"poisoned\n"));

    // ...and a lockfile with other text (here a comment) makes new keys: pruned again, for real.
    let lock_path = root.join("pnpm-lock.yaml");
    let text = std::fs::read_to_string(&lock_path).expect("read");
    std::fs::write(&lock_path, format!("{text}# a comment\n")).expect("write");
    assert_eq!(lockfile_of(&tests::analyze(root)), real);
}
