//! Unit tests of the secret detector: each kind, by name, content and header; what must not be
//! taken for a secret; how much of a file is read; the allow list.

use super::*;

/// Classifies `content` as a file at `path`, reading what `need` asks for.
fn judge(path: &str, content: &str) -> Option<Kind> {
    let size = content.len() as u64;
    let head = need(path, size).map(|n| &content.as_bytes()[..(n as usize).min(content.len())]);
    classify(path, size, head)
}

const RSA_BODY: &str = "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\nVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n";
const OPENSSH_BODY: &str =
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n";

#[test]
fn each_kind_is_caught() {
    let cases: Vec<(&str, String, &str)> = vec![
        ("/app/.env", "DB_PASSWORD=x\n".into(), "an environment file"),
        ("services/api/.env.production", "X=1\n".into(), "an environment file"),
        ("/root/.netrc", "machine github.com login x password y\n".into(), "a .netrc file"),
        ("/home/u/_netrc", "machine a\n".into(), "a .netrc file"),
        ("/root/.aws/credentials", "[default]\naws_secret_access_key = x\n".into(), "AWS credentials"),
        ("/root/.git-credentials", "https://u:p@github.com\n".into(), "git credentials"),
        ("/app/certs/client.p12", "\u{30}\u{82}binary".into(), "a PKCS#12 key store"),
        ("/app/certs/CLIENT.PFX", "binary".into(), "a PKCS#12 key store"),
        ("/root/.ssh/id_ed25519", "anything".into(), "an SSH private key"),
        ("/app/.npmrc", "//registry.npmjs.org/:_authToken=npm_abc\n".into(), "an .npmrc holding a registry token"),
        ("/usr/local/etc/npmrc", "_auth = dXNlcjpwYXNz\n".into(), "an .npmrc holding a registry token"),
        ("/app/.npmrc", "//npm.corp/:_password=c2VjcmV0\n".into(), "an .npmrc holding a registry token"),
        ("/app/.yarnrc", "\"//registry.npmjs.org/:_authToken\" \"npm_abc\"\n".into(), "a .yarnrc holding a registry token"),
        ("/app/.yarnrc.yml", "npmAuthToken: npm_abc\n".into(), "a .yarnrc.yml holding a registry token"),
        ("/app/.yarnrc.yml", "npmScopes:\n  corp:\n    npmAuthIdent: \"dXNlcjpwYXNz\"\n".into(), "a .yarnrc.yml holding a registry token"),
        ("/root/.docker/config.json", r#"{"auths":{"ghcr.io":{"auth":"dXNlcjpwYXNz"}}}"#.into(), "a docker config holding registry credentials"),
        ("/app/server.key", format!("-----BEGIN RSA PRIVATE KEY-----\n{RSA_BODY}-----END RSA PRIVATE KEY-----\n"), "a private key"),
        // Whatever the name: the header decides.
        ("/app/deploy", format!("-----BEGIN OPENSSH PRIVATE KEY-----\n{OPENSSH_BODY}-----END OPENSSH PRIVATE KEY-----\n"), "an SSH private key"),
        ("/srv/tls/bundle.crt", format!("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----\n{RSA_BODY}-----END PRIVATE KEY-----\n"), "a private key"),
        ("/app/legacy.txt", format!("-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00FF\n\n{RSA_BODY}-----END EC PRIVATE KEY-----\n"), "a private key"),
        ("/app/signing/cosign.key", format!("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n{RSA_BODY}-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n"), "a private key"),
        ("/app/keys/release.asc", format!("-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n{RSA_BODY}-----END PGP PRIVATE KEY BLOCK-----\n"), "a PGP private key"),
        // A key file by name needs only the header (its body may be cut).
        ("/app/tls.pem", "-----BEGIN RSA PRIVATE KEY-----\n".into(), "a private key"),
        ("/app/keys/win.ppk", "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: x\nPublic-Lines: 2\nAAAA\nAAAA\nPrivate-Lines: 1\nAAAA\nPrivate-MAC: 00\n".into(), "a PuTTY private key"),
    ];
    for (path, content, kind) in cases {
        assert_eq!(judge(path, &content), Some(kind), "{path}");
    }
}

#[test]
fn look_alikes_are_not_secrets() {
    let cases: Vec<(&str, String)> = vec![
        ("/app/.env.example", "DB_PASSWORD=\n".into()),
        ("/app/.env.local.sample", "X=\n".into()),
        ("/app/.env.template", "X=\n".into()),
        ("/app/.env.dist", "X=\n".into()),
        ("/root/.ssh/id_ed25519.pub", "ssh-ed25519 AAAA x\n".into()),
        ("/app/.npmrc", "auto-install-peers=true\n# _authToken=x\n".into()),
        ("/app/.npmrc", "//registry.npmjs.org/:_authToken=\n".into()),
        // A variable reference is expanded by npm at run time: nothing secret in the file.
        ("/app/.npmrc", "//registry.npmjs.org/:_authToken=${NPM_TOKEN}\n".into()),
        ("/app/.yarnrc.yml", "npmAuthToken: \"${NPM_TOKEN}\"\nnodeLinker: node-modules\n".into()),
        ("/app/.yarnrc.yml", "nodeLinker: node-modules\n".into()),
        ("/root/.docker/config.json", r#"{"auths":{"ghcr.io":{}},"credsStore":"desktop"}"#.into()),
        ("/app/tls/ca.pem", "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUXn\n-----END CERTIFICATE-----\n".into()),
        ("/app/keys/ci.pub", format!("-----BEGIN PUBLIC KEY-----\n{RSA_BODY}-----END PUBLIC KEY-----\n")),
        // Documentation quoting the header, in prose or on a line of its own without a key.
        ("/app/README", "Put your PRIVATE KEY in `server.key` (it starts with -----BEGIN PRIVATE KEY-----).\n".into()),
        ("/app/docs/KEYS", "The file looks like:\n\n    -----BEGIN RSA PRIVATE KEY-----\n    ...\n    -----END RSA PRIVATE KEY-----\n".into()),
        ("/app/README.md", format!("```\n-----BEGIN RSA PRIVATE KEY-----\n{RSA_BODY}```\n")),
        // A key literal in a source file is code, not a key file (and not sniffed).
        ("/app/node_modules/ssh2/test/fixtures.js", format!("const k = `\n-----BEGIN RSA PRIVATE KEY-----\n{RSA_BODY}`;\n")),
        ("/app/node_modules/pkg/LICENSE", "MIT License\n\nCopyright (c)\n".into()),
        ("/app/notes.txt", "PuTTY-User-Key-File-3 is the header of PuTTY keys\n".into()),
    ];
    for (path, content) in cases {
        assert_eq!(judge(path, &content), None, "{path}: {content}");
    }
}

#[test]
fn only_what_the_path_cannot_decide_is_read() {
    assert_eq!(need("/app/.env", 10), None);
    assert_eq!(need("/root/.aws/credentials", 10), None);
    assert_eq!(need("/app/x.p12", 10), None);
    assert_eq!(need("/app/index.js", 10), None);
    assert_eq!(need("/app/types.d.ts", 10), None);
    assert_eq!(need("/app/README.md", 10), None);
    assert_eq!(need("/app/empty", 0), None);
    assert_eq!(need("/usr/local/bin/node", 90 << 20), None);
    assert_eq!(need("/app/deploy", 3000), Some(HEAD as u64));
    assert_eq!(need("/app/.npmrc", 100), Some(1 << 20));
    assert_eq!(need("/app/tls.pem", 100), Some(KEY_FILE_MAX));
    // A key file too large to read is reported, not passed.
    let big = "x".repeat(100);
    assert_eq!(
        classify("/app/huge.key", KEY_FILE_MAX + 1, Some(big.as_bytes())),
        Some("a key file too large to read")
    );
    assert_eq!(
        classify("/app/huge.key", KEY_FILE_MAX + 1, None),
        Some("a key file too large to read")
    );
    assert_eq!(classify("/app/huge.bin", KEY_FILE_MAX + 1, None), None);
}

#[test]
fn files_on_disk_are_checked_by_their_head() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(
        d.join("deploy"),
        format!("-----BEGIN OPENSSH PRIVATE KEY-----\n{OPENSSH_BODY}"),
    )
    .expect("write");
    std::fs::write(d.join("index.js"), "module.exports = 1\n").expect("write");
    std::fs::write(d.join(".npmrc"), "//r/:_authToken=abc\n").expect("write");
    std::os::unix::fs::symlink(d.join("deploy"), d.join("link")).expect("symlink");
    assert_eq!(
        check_file(&d.join("deploy"), "services/a/deploy").expect("check"),
        Some("an SSH private key")
    );
    assert_eq!(
        check_file(&d.join("index.js"), "services/a/index.js").expect("check"),
        None
    );
    assert_eq!(
        check_file(&d.join(".npmrc"), "services/a/.npmrc").expect("check"),
        Some("an .npmrc holding a registry token")
    );
    // A symlink is judged where it points, by whoever follows it: not here.
    assert_eq!(
        check_file(&d.join("link"), "services/a/link").expect("check"),
        None
    );
    assert!(check_file(&d.join("absent"), "absent").is_err());
}

#[test]
fn the_allow_list_takes_paths_and_globs_relative_to_the_root() {
    let allow = Allow::new(&[
        "services/x/test-fixtures/fake.key".to_string(),
        "./services/*/fixtures/**".to_string(),
    ])
    .expect("allow");
    assert!(allow.allows("services/x/test-fixtures/fake.key"));
    assert!(allow.allows("services/y/fixtures/a/b/id_rsa"));
    assert!(
        !allow.allows("services/y/z/fixtures/id_rsa"),
        "`*` stays in one directory"
    );
    assert!(!allow.allows("services/x/test-fixtures/real.key"));
    let e = Allow::new(&["services/[x".to_string()]).expect_err("bad glob");
    assert!(e.contains("[secrets] allow: `services/[x`"), "{e}");
}

/// Every kind round-trips through the byte the stat cache keeps; 0 stays "not judged".
#[test]
fn verdicts_fit_in_a_byte() {
    assert_eq!(decode(0), None);
    assert_eq!(decode(code(None)), Some(None));
    for k in KINDS {
        assert_eq!(decode(code(Some(k))), Some(Some(*k)), "{k}");
    }
    assert_eq!(decode(u8::MAX), Some(Some("a credential")));
}

#[test]
fn the_guard_names_the_file_and_both_ways_out() {
    let allow = Allow::new(&["services/api/test/fake.key".to_string()]).expect("allow");
    let e = guard(
        &allow,
        "api",
        "services/api/id_rsa",
        Some("an SSH private key"),
    )
    .expect_err("refused")
    .to_string();
    assert_eq!(
        e,
        "`services/api/id_rsa` looks like a credential (an SSH private key) and would enter the build context of `api`\n  hint: keep it out with a `.dockerignore` pattern, or, if it is meant to be there (a test fixture), list it in images.toml: `[secrets] allow = [\"services/api/id_rsa\"]`"
    );
    assert!(guard(
        &allow,
        "api",
        "services/api/test/fake.key",
        Some("a private key")
    )
    .is_ok());
    assert!(guard(&allow, "api", "services/api/index.ts", None).is_ok());
}
