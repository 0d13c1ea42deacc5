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
    for s in ["ok", "api", "web", "pay", "env", "cert"] {
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
        ("cert", "services/cert/client.pfx", "a PKCS#12 key store"),
        ("env", "services/env/.env.production", "an environment file"),
        (
            "pay",
            "services/pay/.npmrc",
            "an .npmrc holding a registry token",
        ),
        ("web", "services/web/src/settings.dat", "a private key"),
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
    assert_eq!(names, ["cert", "env"], "{:#?}", failures(&a));
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
    assert_eq!(names, ["cert", "env", "ok"]);
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
    for s in ["api", "web", "pay", "env", "cert"] {
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
