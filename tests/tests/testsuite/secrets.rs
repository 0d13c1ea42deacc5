//! Secrets: the guard on build contexts (a credential in a context is refused at plan time with
//! its path and both ways out, the other services go on), BuildKit secrets, and canaries (a build
//! arg's and a secret's value in no output and no file of the cache directory).

use std::path::Path;
use std::process::Command;

use tests::{xtask, Fixture};

fn run(dir: &Path, program: &str, args: &[&str]) {
    tests::run_ok(Command::new(program).current_dir(dir).args(args), program);
}

/// A fixture with a clean service and services holding credentials of the kinds, made by
/// the tools that make them (ssh-keygen, openssl): `api` an `id_rsa`, `web` a `server.key`
/// (renamed so only its header tells), `pay` an `.npmrc` with a literal `_authToken`, `env` a
/// `.env`, `cert` a PKCS#12 store. `ok` holds the look-alikes that are not credentials.
fn hostile() -> Fixture {
    let mut p = tests::project().shared();
    for s in [
        "ok", "api", "web", "pay", "env", "cert", "aws", "yarn", "git", "net",
    ] {
        p = p.service(s, &[]);
    }
    let fx = p.build();
    let api = fx.path("services/api");
    run(
        &api,
        "ssh-keygen",
        &["-q", "-t", "rsa", "-b", "1024", "-N", "", "-f", "id_rsa"],
    );
    let web = fx.path("services/web/src");
    run(
        &web,
        "openssl",
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "server.key",
        ],
    );
    // Whatever the name: the header tells.
    fx.rename(
        "services/web/src/server.key",
        "services/web/src/settings.dat",
    );
    fx.write(
        "services/pay/.npmrc",
        "@acme:registry=https://npm.acme.test/\n//npm.acme.test/:_authToken=npm_Secr3tValue0123456789\n",
    );
    fx.write("services/env/.env.production", "DB_PASSWORD=hunter2\n");
    fx.write(
        "services/aws/src/.aws/credentials",
        "[default]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = abc\n",
    );
    fx.write(
        "services/yarn/.yarnrc.yml",
        "npmScopes:\n  acme:\n    npmAuthToken: \"npm_yarnLiteral0123456789\"\n",
    );
    fx.write(
        "services/git/.git-credentials",
        "https://ci:ghp_literal0123456789@github.com\n",
    );
    fx.write(
        "services/net/src/.netrc",
        "machine git.acme.test login ci password x\n",
    );
    let cert = fx.path("services/cert");
    run(
        &cert,
        "openssl",
        &[
            "req", "-x509", "-newkey", "rsa:1024", "-nodes", "-keyout", "k.pem", "-subj", "/CN=t",
            "-days", "1", "-out", "c.pem",
        ],
    );
    run(
        &cert,
        "openssl",
        &[
            "pkcs12",
            "-export",
            "-inkey",
            "k.pem",
            "-in",
            "c.pem",
            "-passout",
            "pass:x",
            "-out",
            "client.pfx",
        ],
    );
    std::fs::remove_file(cert.join("k.pem")).expect("rm");
    std::fs::remove_file(cert.join("c.pem")).expect("rm");
    // Look-alikes: a public key, a certificate, a variable-reference token, an env template, a
    // README quoting a key header, a source file holding a key literal.
    let ok = fx.path("services/ok");
    run(
        &ok,
        "ssh-keygen",
        &["-q", "-t", "ed25519", "-N", "", "-f", "deploy"],
    );
    std::fs::remove_file(ok.join("deploy")).expect("rm private half");
    run(
        &ok,
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:1024",
            "-nodes",
            "-keyout",
            "/dev/null",
            "-subj",
            "/CN=t",
            "-days",
            "1",
            "-out",
            "tls.pem",
        ],
    );
    fx.write(
        "services/ok/.npmrc",
        "//registry.npmjs.org/:_authToken=${NPM_TOKEN}\n",
    );
    fx.write("services/ok/.env.example", "DB_PASSWORD=\n");
    fx.write(
        "services/ok/README.md",
        "Keys start with `-----BEGIN OPENSSH PRIVATE KEY-----` and must never be committed.\n",
    );
    fx.write(
        "services/ok/src/fixture.ts",
        "export const key = `-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----`;\n",
    );
    fx
}

fn failures(a: &engine::pipeline::Analysis) -> Vec<(String, String)> {
    a.failed
        .iter()
        .map(|f| (f.name.clone(), f.to_string()))
        .collect()
}

#[test]
fn credentials_in_contexts_are_refused_at_plan_time_and_the_rest_goes_on() {
    let fx = hostile();
    let expect = [
        ("api", "services/api/id_rsa", "an SSH private key"),
        (
            "aws",
            "services/aws/src/.aws/credentials",
            "AWS credentials",
        ),
        ("cert", "services/cert/client.pfx", "a PKCS#12 key store"),
        ("env", "services/env/.env.production", "an environment file"),
        ("git", "services/git/.git-credentials", "git credentials"),
        ("net", "services/net/src/.netrc", "a .netrc file"),
        (
            "pay",
            "services/pay/.npmrc",
            "an .npmrc holding a registry token",
        ),
        ("web", "services/web/src/settings.dat", "a private key"),
        (
            "yarn",
            "services/yarn/.yarnrc.yml",
            "a .yarnrc.yml holding a registry token",
        ),
    ];
    // Cold, then warm (the verdicts come from the stat cache, nothing is read again).
    for round in ["cold", "warm"] {
        let a = tests::analyze(fx.root());
        let got = failures(&a);
        assert_eq!(got.len(), expect.len(), "{round}: {got:#?}");
        for ((name, e), (service, path, kind)) in got.iter().zip(expect) {
            assert_eq!(name, service, "{round}");
            assert!(
                e.contains(&format!("`{path}` looks like a credential ({kind})"))
                    && e.contains(".dockerignore")
                    && e.contains(&format!("[secrets] allow = [\"{path}\"]"))
                    && e.contains(&format!("build context of `{service}`")),
                "{round}: {e}"
            );
        }
        // The look-alikes are in `ok`'s context, which analyses.
        let ok = a
            .images
            .iter()
            .find(|i| a.ws.services[i.service].name == "ok")
            .expect("ok analysed");
        let paths: Vec<&str> = ok.context.files.iter().map(|f| &*f.path).collect();
        for f in [
            "services/ok/deploy.pub",
            "services/ok/tls.pem",
            "services/ok/.npmrc",
            "services/ok/.env.example",
            "services/ok/README.md",
            "services/ok/src/fixture.ts",
        ] {
            assert!(paths.contains(&f), "{round}: {f} not in {paths:?}");
        }
        if round == "warm" {
            assert_eq!(a.hash_stats.hashed, 0, "the warm run read files again");
        }
    }

    // The two ways out: `.dockerignore` keeps one out, `[secrets] allow` lets another in.
    fx.write(
        ".dockerignore",
        "**/node_modules\n**/dist\n**/*.log\n**/id_rsa\n",
    );
    fx.write(
        "images.toml",
        "[secrets]\nallow = [\"services/pay/.npmrc\", \"services/*/src/*.dat\"]\n",
    );
    let a = tests::analyze(fx.root());
    let names: Vec<String> = failures(&a).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        ["aws", "cert", "env", "git", "net", "yarn"],
        "{:#?}",
        failures(&a)
    );
    let api = a
        .images
        .iter()
        .find(|i| a.ws.services[i.service].name == "api")
        .expect("api");
    assert!(!api.context.files.iter().any(|f| f.path.ends_with("id_rsa")));
    assert!(api
        .context
        .files
        .iter()
        .any(|f| &*f.path == "services/api/id_rsa.pub"));

    // A file edited into a credential after a warm run is judged again.
    fx.write(
        "services/ok/.npmrc",
        "//registry.npmjs.org/:_authToken=npm_literal0123456789abcdef\n",
    );
    let names: Vec<String> = failures(&tests::analyze(fx.root()))
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["aws", "cert", "env", "git", "net", "ok", "yarn"]);
}

/// Through the CLI: the refused services fail alone (exit 1, their error on stderr and in the
/// JSON), the others are planned.
#[test]
fn a_refused_context_fails_its_service_alone_in_the_plan() {
    let fx = hostile();
    let out = xtask(fx.root(), &["images", "--dry-run", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(out.status.code(), Some(1));
    let action = |s: &str| {
        json["images"]
            .as_array()
            .expect("images")
            .iter()
            .find(|i| i["service"] == s)
            .map(|i| i["action"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    assert_eq!(action("ok"), "build", "{json:#}");
    for s in [
        "api", "web", "pay", "env", "cert", "aws", "yarn", "git", "net",
    ] {
        assert_eq!(action(s), "failed", "{s}: {json:#}");
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`services/api/id_rsa` looks like a credential")
            && stderr.contains("hint: keep it out with a `.dockerignore` pattern"),
        "{stderr}"
    );
    // Neither the token nor the key's body is printed.
    let all = format!("{}{stderr}", String::from_utf8_lossy(&out.stdout));
    assert!(!all.contains("npm_Secr3tValue"), "{all}");
    assert!(!all.contains("hunter2"), "{all}");
}

/// Every file under `dir`, read whole (any kind of file: records, blobs, logs, caches).
fn every_file(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let e = e.expect("entry");
            let t = e.file_type().expect("type");
            if t.is_dir() {
                stack.push(e.path());
            } else {
                let bytes = if t.is_symlink() {
                    std::fs::read_link(e.path())
                        .expect("link")
                        .into_os_string()
                        .into_encoded_bytes()
                } else {
                    std::fs::read(e.path()).expect("read")
                };
                out.push((e.path(), bytes));
            }
        }
    }
    out
}

fn holds(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// `sha256sum` of some bytes, as the tool says it (an oracle the engine does not share).
fn sha256sum(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut c = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    c.stdin
        .take()
        .expect("stdin")
        .write_all(bytes)
        .expect("write");
    let out = c.wait_with_output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)[..64].to_string()
}

/// BuildKit secrets from a variable and from a file reach the build's `RUN --mount=type=secret`
/// (the image holds their `sha256sum`, checked against the tool's), and neither they nor a build
/// argument's value appear in any output (text, `--json`, `explain`, reasons, the logs of a good
/// and of a failed build) or in any file under the cache directory. A cached image needs no
/// secret; a build without its variable fails naming the id; the cache verifies clean.
#[test]
fn canaries_of_build_args_and_secrets_leak_nowhere() {
    tests::require_docker();
    let _guard = tests::docker_lock();
    let pid = std::process::id();
    let prefix = format!("kct-{pid}-sec-");
    let arg = format!("npm_argcanary_{pid}_0f1e2d3c4b5a");
    let env_secret = format!("//npm.acme.test/:_authToken=npm_envcanary_{pid}_a1b2c3d4\n");
    let file_secret = format!("machine git.acme.test login ci password filecanary_{pid}_9z8y7x\n");
    let canaries = [
        arg.clone(),
        format!("npm_envcanary_{pid}_a1b2c3d4"),
        format!("filecanary_{pid}_9z8y7x"),
    ];
    let fx = tests::project()
        .shared()
        .service("app", &[])
        .service("broken", &[])
        .file(".gitignore", ".images-cache\n")
        .build();
    fx.write(
        "services/app/Dockerfile",
        "FROM node:18-alpine\nARG NPM_TOKEN\nRUN --mount=type=secret,id=npmrc,required=true --mount=type=secret,id=netrc,target=/root/.netrc,required=true \\\n    sh -c 'sha256sum /run/secrets/npmrc /root/.netrc | cut -c1-64 > /secrets.sha && printf %s \"$NPM_TOKEN\" | sha256sum | cut -c1-64 >> /secrets.sha'\nCOPY services/app/src /src\n",
    );
    // A build that fails after printing its secrets (a careless step): its log, kept under
    // `logs/`, holds them redacted.
    fx.write(
        "services/broken/Dockerfile",
        "FROM node:18-alpine\nARG NPM_TOKEN\nRUN --mount=type=secret,id=npmrc,required=true --mount=type=secret,id=netrc,required=true sh -c 'cat /run/secrets/npmrc /run/secrets/netrc; echo \"token of ${#NPM_TOKEN} bytes\"; exit 3'\n",
    );
    let outside = tempfile::tempdir().expect("tempdir");
    let netrc = outside.path().join("netrc");
    std::fs::write(&netrc, &file_secret).expect("write");
    let config = |arg: &str| {
        format!(
            "[images]\nprefix = \"{prefix}\"\nbuild-args = {{ NPM_TOKEN = \"{arg}\" }}\n\n[secrets]\nnpmrc = {{ env = \"KC_TEST_NPMRC\" }}\nnetrc = {{ file = \"{}\" }}\n",
            netrc.display()
        )
    };
    fx.write("images.toml", &config(&arg));
    let with_env = |args: &[&str]| {
        let mut c = Command::new(tests::xtask_bin());
        c.current_dir(fx.root())
            .args(["--root"])
            .arg(fx.root())
            .args(args)
            .env_remove("IMAGES_ROOT")
            .env_remove("IMAGES_CACHE_DIR")
            .env("KC_TEST_NPMRC", &env_secret);
        c.output().expect("xtask")
    };
    let mut outputs: Vec<(String, Vec<u8>)> = Vec::new();
    fn keep_in(outputs: &mut Vec<(String, Vec<u8>)>, what: &str, o: &std::process::Output) {
        outputs.push((format!("{what} stdout"), o.stdout.clone()));
        outputs.push((format!("{what} stderr"), o.stderr.clone()));
    }
    macro_rules! keep {
        ($what:expr, $o:expr) => {
            keep_in(&mut outputs, $what, $o)
        };
    }

    let built = with_env(&["images", "--json", "--no-verify"]);
    keep!("images --json", &built);
    assert_eq!(built.status.code(), Some(1), "broken fails");
    let json: serde_json::Value = serde_json::from_slice(&built.stdout).expect("json");
    let action = |j: &serde_json::Value, s: &str| {
        j["images"]
            .as_array()
            .expect("images")
            .iter()
            .find(|i| i["service"] == s)
            .map(|i| i["action"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    assert_eq!(action(&json, "app"), "built", "{json:#}");
    assert_eq!(action(&json, "broken"), "failed", "{json:#}");
    // The secrets and the build argument reached the build: the image holds their digests, as
    // sha256sum computes them.
    let image = format!("{prefix}app:latest");
    let shas = tests::docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        &image,
        "cat",
        "/secrets.sha",
    ]);
    assert_eq!(
        shas.lines().collect::<Vec<_>>(),
        [
            sha256sum(env_secret.as_bytes()),
            sha256sum(file_secret.as_bytes()),
            sha256sum(arg.as_bytes())
        ]
    );

    // The other outputs: the plain text run (cached), a dry run, explain both ways.
    let text = with_env(&["images", "--no-verify"]);
    keep!("images", &text);
    assert!(text.status.code() == Some(1));
    for args in [
        &["explain", "app"][..],
        &["explain", "app", "--json"],
        &["cache", "stats"],
    ] {
        let o = with_env(args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        keep!(&args.join(" "), &o);
    }
    let explain = String::from_utf8_lossy(&outputs[outputs.len() - 6].1).into_owned();
    assert!(
        explain.contains("secrets     netrc, npmrc (ids)"),
        "{explain}"
    );
    assert!(
        explain.contains("build arg   NPM_TOKEN (value "),
        "{explain}"
    );

    // A cached image needs no secret: without the variable, `app` is cached.
    let o = tests::xtask(fx.root(), &["images", "app", "--json", "--no-verify"]);
    keep!("images app (no variable)", &o);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(action(&j, "app"), "cached");
    // A build does: it fails naming the id and the variable, before Docker runs.
    let o = tests::xtask(fx.root(), &["images", "app", "--force", "--no-verify"]);
    keep!("images app --force (no variable)", &o);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("secret `npmrc`: the variable `KC_TEST_NPMRC` is not set"),
        "{stderr}"
    );

    // A new value of the build argument: the reason names it, never either value.
    fx.write("images.toml", &config(&format!("{arg}_new")));
    let o = with_env(&["images", "--dry-run", "--json", "app"]);
    keep!("images --dry-run --json (new arg)", &o);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(action(&j, "app"), "build");
    let reasons = j["images"][0]["reasons"].to_string();
    assert!(reasons.contains("NPM_TOKEN"), "{reasons}");
    let o = with_env(&["images", "--dry-run", "app"]);
    keep!("images --dry-run (new arg)", &o);
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(text.contains("build arg NPM_TOKEN changed"), "{text}");

    // `verify` reads the image's layers and keeps its report in the cache directory.
    let v = with_env(&["verify", "app", "--json"]);
    keep!("verify app --json", &v);
    let v = with_env(&["cache", "verify"]);
    keep!("cache verify", &v);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));

    // No output and no file of the cache directory holds a canary.
    for (what, bytes) in &outputs {
        for c in &canaries {
            assert!(
                !holds(bytes, c),
                "{what} holds {c}:\n{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
    let files = every_file(&fx.path(".images-cache"));
    let broken_log = files
        .iter()
        .find(|(p, _)| p.to_string_lossy().contains("/logs/broken-"))
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    assert!(
        broken_log.contains("[secret npmrc]") && broken_log.contains("[secret netrc]"),
        "the step printed both secrets, redacted in the log: {broken_log}"
    );
    assert!(
        files
            .iter()
            .any(|(p, _)| p.to_string_lossy().contains("/logs/broken-")),
        "the failed build's log is kept: {:?}",
        files.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    assert!(files.len() > 5, "records, blobs, logs, caches");
    for (p, bytes) in &files {
        for c in &canaries {
            assert!(!holds(bytes, c), "{} holds {c}", p.display());
        }
    }
    tests::remove_images(&prefix);
}
