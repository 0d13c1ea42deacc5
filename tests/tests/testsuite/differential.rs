//! The differential suite: Docker is the oracle (DESIGN.md principle 1).
//!
//! For each fixture layout, every service's image built through the engine (`cargo xtask images`,
//! which streams its own context) has the same file tree (path, kind, mode, content digest) as the
//! image `docker build` makes from the whole checkout with the same Dockerfile. Then, on the same
//! fixtures, the mutation check: appending a byte to each file of the checkout changes exactly the
//! keys of the images whose tree holds that file's content (or whose Dockerfile it is), and no
//! other. Every file of a fixture has distinct content, so the oracle's trees say which files
//! Docker copied.
//!
//! Fixtures build on a tiny imported base (one file), made once for the suite, so each build
//! takes about a second.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tests::{docker_ok, docker_out, image_tree, remove_images, xtask, TinyImage, TreeEntry};

/// One fixture monorepo.
struct Layout {
    name: &'static str,
    files: Vec<(String, Vec<u8>)>,
    links: Vec<(String, String)>,
    dirs: Vec<String>,
    executables: Vec<String>,
    /// Service name -> Dockerfile text (`{BASE}` is the tiny base, `{PREFIX}` the image prefix).
    services: Vec<(String, String)>,
    build_args: Vec<(String, String)>,
    dockerignore: Option<String>,
    workspace: String,
}

impl Layout {
    fn new(name: &'static str) -> Layout {
        Layout {
            name,
            files: Vec::new(),
            links: Vec::new(),
            dirs: Vec::new(),
            executables: Vec::new(),
            services: Vec::new(),
            build_args: Vec::new(),
            dockerignore: None,
            workspace: "packages:\n  - 'shared'\n  - 'services/*'\n".into(),
        }
    }
    /// A file whose content names it (every file of a fixture has distinct content).
    fn file(mut self, path: &str) -> Layout {
        let body = format!("{} in {}\n", path, self.name).into_bytes();
        self.files.push((path.to_string(), body));
        self
    }
    fn file_with(mut self, path: &str, body: &str) -> Layout {
        self.files
            .push((path.to_string(), body.as_bytes().to_vec()));
        self
    }
    fn exec(mut self, path: &str) -> Layout {
        self = self.file(path);
        self.executables.push(path.to_string());
        self
    }
    fn link(mut self, path: &str, target: &str) -> Layout {
        self.links.push((path.to_string(), target.to_string()));
        self
    }
    fn dir(mut self, path: &str) -> Layout {
        self.dirs.push(path.to_string());
        self
    }
    fn ignore(mut self, text: &str) -> Layout {
        self.dockerignore = Some(text.to_string());
        self
    }
    fn workspace(mut self, text: &str) -> Layout {
        self.workspace = text.to_string();
        self
    }
    fn arg(mut self, k: &str, v: &str) -> Layout {
        self.build_args.push((k.to_string(), v.to_string()));
        self
    }
    /// A service `services/<name>` (a package with a Dockerfile).
    fn service(self, name: &str, dockerfile: &str) -> Layout {
        self.service_at(&format!("services/{name}"), dockerfile)
    }
    fn service_at(mut self, dir: &str, dockerfile: &str) -> Layout {
        let name = dir.rsplit('/').next().unwrap_or(dir).to_string();
        let pkg = format!(
            "{{\n  \"name\": \"@{}/{name}\",\n  \"version\": \"1.0.0\"\n}}\n",
            self.name
        );
        self.files
            .push((format!("{dir}/package.json"), pkg.into_bytes()));
        self.services
            .push((dir.to_string(), dockerfile.to_string()));
        self
    }
}

/// A fixture written to disk.
struct Written {
    dir: tempfile::TempDir,
    cache: tempfile::TempDir,
    prefix: String,
}

fn write(layout: &Layout, base: &str, prefix: &str) -> Written {
    let dir = tempfile::Builder::new()
        .prefix("kc-diff-")
        .tempdir()
        .expect("tempdir");
    let root = dir.path();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let put = |rel: &str, body: &[u8]| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, body).expect("write");
    };
    put(
        "package.json",
        format!(
            "{{\n  \"name\": \"{}-root\",\n  \"private\": true\n}}\n",
            layout.name
        )
        .as_bytes(),
    );
    put("pnpm-workspace.yaml", layout.workspace.as_bytes());
    if let Some(i) = &layout.dockerignore {
        put(".dockerignore", i.as_bytes());
    }
    for (p, b) in &layout.files {
        put(p, b);
    }
    for (dir, df) in &layout.services {
        let df = df.replace("{BASE}", base).replace("{PREFIX}", prefix);
        put(
            &format!("{dir}/Dockerfile"),
            format!("{df}# {dir} of {}\n", layout.name).as_bytes(),
        );
    }
    for d in &layout.dirs {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    for (p, t) in &layout.links {
        let p = root.join(p);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::os::unix::fs::symlink(t, p).expect("symlink");
    }
    for e in &layout.executables {
        std::fs::set_permissions(root.join(e), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }
    let mut toml = format!("[images]\nprefix = \"{prefix}\"\n");
    if !layout.build_args.is_empty() {
        toml.push_str("build-args = { ");
        let args: Vec<String> = layout
            .build_args
            .iter()
            .map(|(k, v)| format!("{k} = \"{v}\""))
            .collect();
        toml.push_str(&args.join(", "));
        toml.push_str(" }\n");
    }
    put("images.toml", toml.as_bytes());
    Written {
        dir,
        cache: tempfile::tempdir().expect("tempdir"),
        prefix: prefix.to_string(),
    }
}

/// Copies a checkout for `docker build`: links as links, modes kept, empty directories kept,
/// without `images.toml` (the engine's config, which it never sends).
fn copy_checkout(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    std::fs::set_permissions(to, std::fs::metadata(from).expect("stat").permissions())
        .expect("chmod");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let ft = e.file_type().expect("type");
        let dest = to.join(e.file_name());
        if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path()).expect("readlink"), &dest)
                .expect("symlink");
        } else if ft.is_dir() {
            copy_checkout(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).expect("copy");
        }
    }
}

/// Every regular file of a checkout (relative), with its bytes.
fn checkout_files(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in std::fs::read_dir(root.join(&rel)).expect("read_dir") {
            let e = e.expect("entry");
            let r = rel.join(e.file_name());
            let ft = e.file_type().expect("type");
            if ft.is_dir() {
                stack.push(r);
            } else if ft.is_file() {
                out.push((
                    r.to_string_lossy().into_owned(),
                    std::fs::read(e.path()).expect("read"),
                ));
            }
        }
    }
    out.sort();
    out
}

fn keys_of(root: &Path, cache: &Path) -> BTreeMap<String, String> {
    let mut opts = engine::pipeline::Options::new(root);
    opts.cache_dir = Some(cache.to_path_buf());
    let a = engine::pipeline::analyze(&opts).expect("analyze");
    assert!(a.failed.is_empty(), "{:?}", a.failed);
    a.images
        .iter()
        .map(|i| (a.ws.services[i.service].name.clone(), i.key.to_hex()))
        .collect()
}

fn diff_trees(a: &BTreeMap<String, TreeEntry>, b: &BTreeMap<String, TreeEntry>) -> Vec<String> {
    let mut out = Vec::new();
    let paths: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for p in paths {
        match (a.get(p), b.get(p)) {
            (Some(x), Some(y)) if x == y => {}
            (x, y) => out.push(format!("{p:?}: engine {x:?}, docker {y:?}")),
        }
    }
    out
}

/// The layouts: each a way real monorepos name their inputs.
fn layouts() -> Vec<Layout> {
    vec![
        Layout::new("rootdirs")
            .file("tsconfig/base.json")
            .file("tsconfig/nested/strict.json")
            .file("conf/app.conf")
            .file("lexicons/a/b/c.json")
            .file("unused/x.txt")
            .file("services/api/src/index.ts")
            .service(
                "api",
                "FROM {BASE}\nCOPY tsconfig ./tsconfig\nCOPY conf ./conf/\nCOPY lexicons /lex\nCOPY package.json /root-pkg/\nCOPY services/api/package.json /app/\nCOPY services/api/src /app/src\n",
            ),
        Layout::new("nested")
            .file("services/web/src/a/b/c/d/deep.ts")
            .file("services/web/src/a/b/sibling.ts")
            .file("services/web/src/top.ts")
            .file("services/web/test/t.ts")
            .service(
                "web",
                "FROM {BASE}\nCOPY services/web/src/a/ /app/a/\nCOPY services/web/src/top.ts /app/\n",
            ),
        Layout::new("globs")
            .file("services/a/src/one.ts")
            .file("services/a/src/two.js")
            .file("services/a/src/sub/three.ts")
            .file("shared/alpha.txt")
            .file("shared/beta.txt")
            .file("shared/gamma.txt")
            .file("shared/nest/alpha.txt")
            .service(
                "a",
                "FROM {BASE}\nCOPY services/[a]/package.json /pkgs/\nCOPY services/a/src/*.ts /ts/\nCOPY shared/[ab]*.txt /ab/\nCOPY shared/**/alpha.txt /deep/\nCOPY services/a/src/* /flat/\nCOPY nothing-matches-* /none/\n",
            )
            .service("b", "FROM scratch\nCOPY shared/gamm?.txt services/[b]/Dockerfil[e] /p/\n"),
        Layout::new("copydot")
            .file("services/a/src/main.ts")
            .file("services/b/src/main.ts")
            .file("shared/lib.ts")
            .file("README.md")
            .file("services/a/node_modules/dep/index.js")
            .file("services/a/debug.log")
            .ignore("**/node_modules\n**/*.log\n")
            .service("a", "FROM {BASE}\nCOPY . /app/\n")
            .service("b", "FROM {BASE}\nWORKDIR /w\nCOPY ./ ./\n"),
        Layout::new("symlinks")
            .file("real/x.txt")
            .file("real/sub/y.txt")
            .file("services/web/src/main.ts")
            .link("linkdir", "real")
            .link("linkfile", "real/x.txt")
            .link("services/web/src/lib", "../../../real")
            .link("services/web/src/alias.ts", "main.ts")
            .link("services/web/src/dangling", "nowhere")
            .service(
                "web",
                "FROM {BASE}\nCOPY linkdir/x.txt /t1/\nCOPY linkfile /t2/\nCOPY services/web/src/ /app/\nCOPY linkdir /t3/\nCOPY services/web/src/lib/sub/y.txt /t4/\n",
            ),
        Layout::new("dotfiles")
            .file("services/web/.env.example")
            .file("services/web/.config/settings.json")
            .file("services/web/.hidden/.deeper")
            .file("services/web/src/.eslintrc")
            .file(".npmrc")
            .service(
                "web",
                "FROM {BASE}\nCOPY services/web/ /app/\nCOPY .npmrc /root/\nCOPY services/web/src/.* /dots/\n",
            ),
        Layout::new("names")
            .file("services/web/my file.txt")
            .file("services/web/données/été.txt")
            .file("services/web/日本/語.txt")
            .file("services/web/odd\nname.txt")
            .file("services/web/tab\there.txt")
            .service(
                "web",
                "FROM {BASE}\nCOPY [\"services/web/my file.txt\", \"/one/\"]\nCOPY services/web/données /two/\nCOPY services/web/ /all/\n",
            ),
        Layout::new("nestedpkg")
            .workspace("packages:\n  - 'controlplane'\n  - 'controlplane/*'\n")
            .file("controlplane/src/server.ts")
            .file("controlplane/emails/src/welcome.ts")
            .file_with(
                "controlplane/emails/package.json",
                "{\n  \"name\": \"@nestedpkg/emails\",\n  \"version\": \"1.0.0\"\n}\n",
            )
            .service_at(
                "controlplane",
                "FROM {BASE}\nCOPY package.json pnpm-workspace.yaml /app/\nCOPY controlplane/ /app/controlplane/\n",
            ),
        Layout::new("ignores")
            .file("services/web/src/app.ts")
            .file("services/web/src/app.log")
            .file("services/web/src/keep.log")
            .file("services/web/tmp/scratch.txt")
            .file("services/web/tmp/keep/kept.txt")
            .file("services/web/docs/guide.md")
            .file("services/web/README.md")
            .file("services/web/node_modules/x/i.js")
            .dir("services/web/emptied")
            .file("services/web/emptied/gone.log")
            // Patterns on which Docker 20.10's matcher and BuildKit's current one agree (they
            // differ on an exception with a wildcard under a directory a wildcard excludes).
            .ignore("**/*.log\n!**/keep.log\nservices/web/tmp\n!services/web/tmp/keep\n**/*.md\n!services/web/README.md\n**/node_modules\n")
            .service("web", "FROM {BASE}\nCOPY services/web /app/\nCOPY services/web/tmp /tmp-copy/\n"),
        Layout::new("argsource")
            .file("services/web/src/main.ts")
            .file("services/web/assets/logo.svg")
            .file("shared/v2/lib.ts")
            .arg("APP", "web")
            .arg("LIBVER", "v2")
            .service(
                "web",
                "ARG BASE_IMAGE={BASE}\nARG LIBVER=v1\nFROM ${BASE_IMAGE}\nARG APP=nope\nARG LIBVER\nARG DIR=services/${APP}\nCOPY $DIR/src /app/src\nCOPY ${DIR}/assets/ /app/assets/\nCOPY shared/${LIBVER}/ /lib/\n",
            ),
        Layout::new("envsource")
            .file("services/web/cfg/a.yml")
            .file("services/web/cfg/b.yml")
            .service(
                "web",
                "FROM scratch AS src\nENV D=services/web\nENV E=${D}/cfg\nCOPY $E/a.yml /x/\nFROM src\nCOPY ${D}/cfg/b.yml /y/\n",
            ),
        Layout::new("copyfrom")
            .file("services/web/src/main.ts")
            .file("services/web/test/only-in-test.ts")
            .file("services/web/build/out.js")
            .service(
                "web",
                "FROM {BASE} AS build\nCOPY services/web/build/ /out/\nFROM {BASE} AS test\nCOPY services/web/test /t/\nFROM scratch\nCOPY --from=build /out/ /app/\nCOPY --from=build /base.txt /from-base.txt\nCOPY services/web/src/main.ts /app/\n",
            ),
        Layout::new("inrepofrom")
            .file("services/base/etc/base.conf")
            .file("services/app/src/app.ts")
            .service("base", "FROM {BASE}\nCOPY services/base/etc /etc/app/\n")
            .service(
                "app",
                "FROM {PREFIX}base\nCOPY services/app/src /app/\n",
            ),
        Layout::new("emptydirs")
            .file("services/web/src/a.ts")
            .dir("services/web/src/empty")
            .dir("services/web/src/empty2/inner")
            .dir("services/web/uploads")
            .file("services/web/uploads/ignored.log")
            .ignore("**/*.log\n")
            .service("web", "FROM {BASE}\nCOPY services/web/ /app/\n"),
        Layout::new("modes")
            .exec("services/web/bin/run.sh")
            .file("services/web/bin/data.txt")
            .exec("tools/gen.sh")
            .service(
                "web",
                "FROM {BASE}\nCOPY services/web/bin /bin2/\nCOPY tools/gen.sh /usr/local/bin/\n",
            ),
        Layout::new("dotdot")
            .file("services/web/x.txt")
            .file("services/web/y.txt")
            .file("root.txt")
            .service(
                "web",
                "FROM {BASE}\nCOPY ../services/web/../web/x.txt /x/\nCOPY ./services//web/./y.txt /y/\nCOPY ../../root.txt /r/\nCOPY /services/web/x.txt /abs/\n",
            ),
        Layout::new("multisource")
            .file("services/a/one.txt")
            .file("services/a/two.txt")
            .file("shared/s.txt")
            .service(
                "a",
                "FROM {BASE}\nCOPY services/a/one.txt services/a/two.txt shared/ /m/\nADD services/a/one.txt /added/\n",
            ),
    ]
}

#[test]
fn engine_images_equal_docker_builds_and_keys_move_exactly_with_what_docker_copies() {
    tests::require_docker();
    let _guard = tests::docker_lock();
    let pid = std::process::id();
    let base = TinyImage::import(&format!("kct-{pid}-tiny:1"), "differential");
    let mut problems: Vec<String> = Vec::new();
    let mut oracle_ids: Vec<String> = Vec::new();
    let layouts = layouts();
    assert!(layouts.len() >= 15);
    let mut built = 0;
    for (i, layout) in layouts.iter().enumerate() {
        let prefix = format!("kct-{pid}-d{i}-");
        let fx = write(layout, &base.reference, &prefix);
        let root = fx.dir.path();
        // Distinct contents, so a tree says which files were copied.
        let files = checkout_files(root);
        let mut seen = BTreeMap::new();
        for (p, b) in &files {
            if let Some(q) = seen.insert(blake3::hash(b).to_hex().to_string(), p.clone()) {
                panic!("{}: {p} and {q} have the same content", layout.name);
            }
        }

        // The engine's images.
        let out = xtask(
            root,
            &[
                "--cache-dir",
                &fx.cache.path().to_string_lossy(),
                "images",
                "--json",
                "--no-verify",
            ],
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{}: images printed no JSON ({e}):\n{}",
                layout.name,
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let mut engine_ids: BTreeMap<String, String> = BTreeMap::new();
        for img in json["images"].as_array().expect("images") {
            let service = img["service"].as_str().expect("service").to_string();
            if img["action"] != "built" {
                problems.push(format!(
                    "{}: {service} was {} ({}):\n{}",
                    layout.name,
                    img["action"],
                    img["error"],
                    String::from_utf8_lossy(&out.stderr)
                ));
                continue;
            }
            engine_ids.insert(service, img["image_id"].as_str().expect("id").to_string());
        }

        // Docker's, from the whole checkout.
        let copy = tempfile::tempdir().expect("tempdir");
        let checkout = copy.path().join("checkout");
        copy_checkout(root, &checkout);
        std::fs::remove_file(checkout.join("images.toml")).expect("rm images.toml");
        let mut trees: BTreeMap<String, BTreeMap<String, TreeEntry>> = BTreeMap::new();
        for (dir, _) in &layout.services {
            let name = dir.rsplit('/').next().unwrap_or(dir).to_string();
            let iid = copy.path().join(format!("{name}.iid"));
            let mut args: Vec<String> = vec![
                "build".into(),
                "-q".into(),
                "-f".into(),
                checkout
                    .join(dir)
                    .join("Dockerfile")
                    .to_string_lossy()
                    .into_owned(),
                "--iidfile".into(),
                iid.to_string_lossy().into_owned(),
            ];
            for (k, v) in &layout.build_args {
                args.push("--build-arg".into());
                args.push(format!("{k}={v}"));
            }
            args.push(checkout.to_string_lossy().into_owned());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = docker_out(&args);
            assert!(
                out.status.success(),
                "{}: docker build of {name} failed: {}",
                layout.name,
                String::from_utf8_lossy(&out.stderr)
            );
            let oracle = std::fs::read_to_string(&iid)
                .expect("iid")
                .trim()
                .to_string();
            oracle_ids.push(oracle.clone());
            let want = image_tree(&oracle);
            if let Some(id) = engine_ids.get(&name) {
                let got = image_tree(id);
                let d = diff_trees(&got, &want);
                if !d.is_empty() {
                    problems.push(format!(
                        "{}: {name}'s image differs from docker's:\n  {}",
                        layout.name,
                        d.join("\n  ")
                    ));
                }
                built += 1;
            }
            trees.insert(name, want);
        }

        // Mutation: a byte appended to each file changes exactly the keys of the images that
        // hold its content (and of the image whose Dockerfile it is).
        let cache = tempfile::tempdir().expect("tempdir");
        let before = keys_of(root, cache.path());
        for (rel, bytes) in &files {
            let digest = blake3::hash(bytes).to_hex().to_string();
            let mut want: BTreeSet<String> = trees
                .iter()
                .filter(|(_, t)| t.values().any(|e| e.kind == 'f' && e.digest == digest))
                .map(|(s, _)| s.clone())
                .collect();
            for (dir, _) in &layout.services {
                if *rel == format!("{dir}/Dockerfile") {
                    want.insert(dir.rsplit('/').next().unwrap_or(dir).to_string());
                }
            }
            // An image built FROM one whose key changes changes too.
            loop {
                let before_len = want.len();
                for (dir, df) in &layout.services {
                    let name = dir.rsplit('/').next().unwrap_or(dir).to_string();
                    if want
                        .clone()
                        .iter()
                        .any(|w| df.contains(&format!("FROM {{PREFIX}}{w}\n")))
                    {
                        want.insert(name);
                    }
                }
                if want.len() == before_len {
                    break;
                }
            }
            let p = root.join(rel);
            let mut more = bytes.clone();
            more.push(b'\n');
            std::fs::write(&p, &more).expect("write");
            let after = keys_of(root, cache.path());
            std::fs::write(&p, bytes).expect("restore");
            let got: BTreeSet<String> = after
                .iter()
                .filter(|(s, k)| before.get(*s) != Some(*k))
                .map(|(s, _)| s.clone())
                .collect();
            if got != want {
                problems.push(format!(
                    "{}: a byte appended to {rel:?} changed the keys of {got:?}, docker's copies say {want:?}",
                    layout.name
                ));
            }
        }
        assert_eq!(keys_of(root, cache.path()), before, "{}", layout.name);
        remove_images(&fx.prefix);
    }
    for id in &oracle_ids {
        let _ = docker_out(&["rmi", "-f", id]);
    }
    let _ = docker_ok(&["version", "--format", "{{.Server.Version}}"]);
    assert!(built >= 20, "only {built} images compared");
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// Mutation on the example: appending a byte to each file of its checkout changes exactly the
/// keys of the services whose build Docker gives that file, and no other. The oracle is Docker's
/// own context transfer: for each service, a probe image `FROM scratch` with its Dockerfile's
/// `COPY`/`ADD` sources (not `--from`), each into a directory of its own, built by `docker build`
/// from the whole checkout, holds exactly the files Docker sends for them.
#[test]
fn on_the_example_a_byte_appended_changes_exactly_the_keys_of_the_builds_that_copy_it() {
    tests::require_docker();
    let _guard = tests::docker_lock();
    let ex = tests::copy_example();
    let root = ex.root();
    // Distinct contents (some files of the example are identical): file i gets i+1 newlines.
    for (i, (rel, bytes)) in checkout_files(root).iter().enumerate() {
        let mut b = bytes.clone();
        b.extend(std::iter::repeat_n(b'\n', i + 1));
        std::fs::write(root.join(rel), b).expect("write");
    }
    let files = checkout_files(root);
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut trees: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut probes = Vec::new();
    let services: Vec<String> = std::fs::read_dir(root.join("services"))
        .expect("read_dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Dockerfile").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(services.len(), 4, "{services:?}");
    for s in &services {
        let text =
            std::fs::read_to_string(root.join(format!("services/{s}/Dockerfile"))).expect("read");
        let mut probe = String::from("FROM scratch\n");
        for (i, line) in text.lines().map(str::trim).enumerate() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let copy = words
                .first()
                .is_some_and(|w| w.eq_ignore_ascii_case("COPY") || w.eq_ignore_ascii_case("ADD"));
            if !copy || words.iter().any(|w| w.starts_with("--from")) {
                continue;
            }
            let sources: Vec<&str> = words[1..words.len() - 1]
                .iter()
                .filter(|w| !w.starts_with("--"))
                .copied()
                .collect();
            probe.push_str(&format!("COPY {} /p{i}/\n", sources.join(" ")));
        }
        let df = scratch.path().join(format!("{s}.Dockerfile"));
        std::fs::write(&df, probe).expect("write");
        let iid = scratch.path().join(format!("{s}.iid"));
        let out = docker_out(&[
            "build",
            "-q",
            "-f",
            &df.to_string_lossy(),
            "--iidfile",
            &iid.to_string_lossy(),
            &root.to_string_lossy(),
        ]);
        assert!(
            out.status.success(),
            "probe of {s}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = std::fs::read_to_string(&iid)
            .expect("iid")
            .trim()
            .to_string();
        let tree = image_tree(&id);
        trees.insert(
            s.clone(),
            tree.values()
                .filter(|e| e.kind == 'f')
                .map(|e| e.digest.clone())
                .collect(),
        );
        probes.push(id);
    }
    let cache = tempfile::tempdir().expect("tempdir");
    let before = keys_of(root, cache.path());
    let mut problems = Vec::new();
    let mut copied = 0;
    for (rel, bytes) in &files {
        // The context holds the lockfile's pruning to its packages (DESIGN.md principle 2), not
        // the file: a byte that changes no entry it keeps changes no key (lockfile tests).
        if rel == "pnpm-lock.yaml" {
            continue;
        }
        let digest = blake3::hash(bytes).to_hex().to_string();
        let mut want: BTreeSet<String> = trees
            .iter()
            .filter(|(_, t)| t.contains(&digest))
            .map(|(s, _)| s.clone())
            .collect();
        copied += usize::from(!want.is_empty());
        if let Some(s) = rel
            .strip_prefix("services/")
            .and_then(|r| r.strip_suffix("/Dockerfile"))
        {
            want.insert(s.to_string());
        }
        let p = root.join(rel);
        let mut more = bytes.clone();
        more.push(b'\n');
        std::fs::write(&p, &more).expect("write");
        let after = keys_of(root, cache.path());
        std::fs::write(&p, bytes).expect("restore");
        let got: BTreeSet<String> = after
            .iter()
            .filter(|(s, k)| before.get(*s) != Some(*k))
            .map(|(s, _)| s.clone())
            .collect();
        if got != want {
            problems.push(format!(
                "a byte appended to {rel:?} changed the keys of {got:?}; docker copies it for {want:?}"
            ));
        }
    }
    for id in &probes {
        let _ = docker_out(&["rmi", "-f", id]);
    }
    assert!(
        copied >= 20,
        "only {copied} files are copied by some service"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
