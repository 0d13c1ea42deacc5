//! Cosign signatures (`cache::cosign`) against independent implementations, on a real registry
//! on loopback (Debian's `docker-registry`):
//!
//! - sigstore-rs (the Sigstore project's Rust implementation of cosign, built into the small
//!   `tests/cosign-oracle` binary, its own workspace so its dependencies stay out of the engine's
//!   build) verifies what the engine signs, signs with the engine's key files, writes key files
//!   the engine reads, and makes signatures the engine verifies;
//! - each hostile signature (unsigned, another signer, a signature moved from another image, a
//!   payload altered after signing, garbage) is refused by the engine, with its reason, and by
//!   sigstore-rs;
//! - OpenSSL reads and checks the engine's keys and signatures, and makes keys the engine reads.
//!
//! (Debian's skopeo and Podman would be a third, but Debian builds containers/image with
//! sigstore disabled.)

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use base64::Engine as _;
use cache::cosign::{self, Refusal, SigningKey, TrustedKey, Verdict};
use cache::registry::{Manifest, Registry};

use super::servers::{Auth, DistRegistry};
use super::{registry, settings, OCI_MANIFEST};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Pushes a small image (an uncompressed, empty tar layer; a config made unique by `label`);
/// returns its manifest digest.
fn push_small_image(r: &Registry, image: &str, label: &str) -> String {
    let layer = vec![0u8; 1024];
    let layer_digest = r.put_blob(image, &layer).expect("put layer");
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Labels": {"test": label}},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    })
    .to_string();
    let config_digest = r.put_blob(image, config.as_bytes()).expect("put config");
    let bytes = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
    })
    .to_string()
    .into_bytes();
    let m = Manifest {
        digest: cache::registry::sha256_digest(&bytes),
        media_type: OCI_MANIFEST.into(),
        bytes,
    };
    r.put_manifest(image, label, &m).expect("put manifest")
}

/// The `cosign-oracle` binary (`tests/cosign-oracle`), built once per test run into
/// `target/cosign-oracle`, or the one named by `COSIGN_ORACLE_BIN`.
fn oracle_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("COSIGN_ORACLE_BIN") {
            return PathBuf::from(p);
        }
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| tests::repo_root().join("target"))
            .join("cosign-oracle");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "--quiet", "--locked", "--manifest-path"])
            .arg(tests::repo_root().join("tests/cosign-oracle/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .output()
            .expect("run cargo build for tests/cosign-oracle");
        assert!(
            out.status.success(),
            "building the cosign oracle (sigstore-rs) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        target.join("debug").join("cosign-oracle")
    })
    .clone()
}

/// sigstore-rs, through `cosign-oracle`, against the registry `host` (plain HTTP).
pub(crate) struct Oracle {
    pub(crate) host: String,
}

impl Oracle {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(oracle_bin())
            .args(args)
            .env("RUST_LOG", "off")
            .output()
            .expect("run cosign-oracle")
    }

    /// Whether sigstore-rs verifies a signature of `repo@digest` by `public_key` (exit 0), or
    /// refuses (exit 1); anything else is a broken oracle.
    pub(crate) fn accepts(&self, repo: &str, digest: &str, public_key: &Path) -> bool {
        let image = format!("{}/{repo}@{digest}", self.host);
        let out = self.run(&["verify", &image, &public_key.display().to_string()]);
        match out.status.code() {
            Some(0) => true,
            Some(1) => false,
            _ => panic!("cosign-oracle verify {image} failed: {}", text(&out)),
        }
    }

    /// sigstore-rs signs `repo@digest` with an encrypted private key file.
    pub(crate) fn sign(&self, repo: &str, digest: &str, key: &Path, password: &str) {
        let image = format!("{}/{repo}@{digest}", self.host);
        let out = self.run(&["sign", &image, &key.display().to_string(), password]);
        assert!(
            out.status.success(),
            "cosign-oracle sign {image}: {}",
            text(&out)
        );
    }

    /// A key pair made by sigstore-rs: `dir/name.key` (encrypted with `password`), `.pub`.
    pub(crate) fn keygen(&self, dir: &Path, name: &str, password: &str) -> (PathBuf, PathBuf) {
        let prefix = dir.join(name);
        let out = self.run(&["keygen", &prefix.display().to_string(), password]);
        assert!(out.status.success(), "cosign-oracle keygen: {}", text(&out));
        (prefix.with_extension("key"), prefix.with_extension("pub"))
    }
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A key pair written as `cargo xtask keygen` writes it (cosign's encrypted format).
pub(crate) struct KeyFiles {
    pub(crate) key: SigningKey,
    pub(crate) private: PathBuf,
    pub(crate) public: PathBuf,
}

pub(crate) fn key_files(dir: &Path, name: &str, password: &str) -> KeyFiles {
    let key = SigningKey::generate().expect("generate");
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    std::fs::write(
        &private,
        key.to_encrypted_pem(password.as_bytes()).expect("encrypt"),
    )
    .expect("write key");
    std::fs::write(&public, key.public_key().to_pem()).expect("write pub");
    let key = SigningKey::from_file(&private, Some(password.as_bytes())).expect("read back");
    KeyFiles {
        key,
        private,
        public,
    }
}

fn trusted(k: &KeyFiles, name: &str) -> TrustedKey {
    TrustedKey::from_file(&k.public, name).expect("public key")
}

fn signature_layers(r: &Registry, image: &str, digest: &str) -> Vec<serde_json::Value> {
    let tag = cosign::signature_tag(digest).expect("tag");
    let m = r.get_manifest(image, &tag).expect("get").expect("signed");
    let v: serde_json::Value = serde_json::from_slice(&m.bytes).expect("json");
    v["layers"].as_array().expect("layers").clone()
}

/// Both directions, on one registry: the engine's signature passes sigstore-rs's check (and only
/// with the engine's key); sigstore-rs signs with the engine's encrypted key file and the engine
/// verifies it; the engine reads sigstore-rs's encrypted key file; the engine appends to
/// sigstore-rs's signature manifest, whose signature still verifies.
#[test]
fn signatures_interoperate_with_sigstore_rs_both_ways() {
    let reg = DistRegistry::start(Auth::None, None);
    let host = reg.host();
    let r = registry(&format!("{host}/sig"), settings(None));
    let oracle = Oracle { host: host.clone() };
    let keys = tempfile::tempdir().expect("tempdir");
    let engine_key = key_files(keys.path(), "engine", "engine-password");
    let (oracle_private, oracle_public) = oracle.keygen(keys.path(), "oracle", "oracle password");

    // Key files: each reads the other's.
    let read_back = SigningKey::from_file(&oracle_private, Some(b"oracle password"))
        .expect("the engine reads sigstore-rs's encrypted key");
    let oracle_trusted = TrustedKey::from_file(&oracle_public, "keys/oracle.pub").expect("pub");
    assert_eq!(read_back.public_key(), oracle_trusted);
    assert!(SigningKey::from_file(&oracle_private, Some(b"wrong")).is_err());

    // The engine signs; sigstore-rs accepts it with the engine's public key only.
    let a = push_small_image(&r, "app", "a");
    let signed = cosign::sign(&r, "app", &a, &engine_key.key, None).expect("sign");
    assert!(signed.added && signed.signatures == 1, "{signed:?}");
    assert_eq!(signed.tag, cosign::signature_tag(&a).expect("tag"));
    assert!(
        oracle.accepts("sig/app", &a, &engine_key.public),
        "sigstore-rs refused the engine's signature"
    );
    assert!(
        !oracle.accepts("sig/app", &a, &oracle_public),
        "sigstore-rs took another key's signature"
    );
    // Signing again changes nothing (RFC 6979 signatures are deterministic).
    let again = cosign::sign(&r, "app", &a, &engine_key.key, None).expect("sign again");
    assert!(!again.added && again.signatures == 1, "{again:?}");
    assert_eq!(again.manifest_digest, signed.manifest_digest);

    // sigstore-rs signs with the engine's key file; the engine verifies, with that key only.
    let b = push_small_image(&r, "app", "b");
    oracle.sign("sig/app", &b, &engine_key.private, "engine-password");
    match cosign::verify(&r, "app", &b, &[trusted(&engine_key, "keys/ci.pub")]).expect("verify") {
        Verdict::Trusted(v) => {
            assert_eq!(v.key, "keys/ci.pub");
            assert!(
                v.identity.starts_with(&format!("{host}/sig/app")),
                "{}",
                v.identity
            );
        }
        other => panic!("the engine refused sigstore-rs's signature: {other:?}"),
    }
    let v = cosign::verify(&r, "app", &b, std::slice::from_ref(&oracle_trusted)).expect("verify");
    assert!(
        matches!(v, Verdict::Refused(Refusal::UntrustedKey { .. })),
        "{v:?}"
    );

    // sigstore-rs signs first, the engine appends: both verify, each with its own key.
    let c = push_small_image(&r, "app", "c");
    oracle.sign("sig/app", &c, &oracle_private, "oracle password");
    let v = cosign::verify(&r, "app", &c, std::slice::from_ref(&oracle_trusted)).expect("verify");
    assert!(v.is_trusted(), "{v:?}");
    let signed = cosign::sign(&r, "app", &c, &engine_key.key, None).expect("sign");
    assert!(signed.added && signed.signatures == 2, "{signed:?}");
    assert_eq!(signature_layers(&r, "app", &c).len(), 2);
    assert!(
        oracle.accepts("sig/app", &c, &oracle_public),
        "the engine clobbered sigstore-rs's signature"
    );
    assert!(oracle.accepts("sig/app", &c, &engine_key.public));
    for keys in [
        vec![oracle_trusted.clone()],
        vec![trusted(&engine_key, "ci")],
    ] {
        assert!(cosign::verify(&r, "app", &c, &keys)
            .expect("verify")
            .is_trusted());
    }

    // Optional annotations ride in the payload, and come back.
    let d = push_small_image(&r, "app", "d");
    let mut optional = serde_json::Map::new();
    optional.insert("com.kodingcaravan.images.key".into(), "ab12".into());
    cosign::sign(&r, "app", &d, &engine_key.key, Some(&optional)).expect("sign");
    assert!(oracle.accepts("sig/app", &d, &engine_key.public));
    match cosign::verify(&r, "app", &d, &[trusted(&engine_key, "ci")]).expect("verify") {
        Verdict::Trusted(v) => assert_eq!(v.optional, Some(optional)),
        other => panic!("{other:?}"),
    }
}

/// Replaces the signature manifest of `digest` with `layers` (as an attacker with push access
/// would), keeping its config.
fn put_signature_layers(r: &Registry, image: &str, digest: &str, layers: Vec<serde_json::Value>) {
    let tag = cosign::signature_tag(digest).expect("tag");
    let old = r.get_manifest(image, &tag).expect("get").expect("signed");
    let mut v: serde_json::Value = serde_json::from_slice(&old.bytes).expect("json");
    v["layers"] = layers.into();
    let bytes = serde_json::to_vec(&v).expect("json");
    let m = Manifest {
        digest: cache::registry::sha256_digest(&bytes),
        media_type: OCI_MANIFEST.into(),
        bytes,
    };
    r.put_manifest(image, &tag, &m).expect("put");
}

/// Copies the signature manifest of `from` to the signature tag of `to`.
fn move_signatures(r: &Registry, image: &str, from: &str, to: &str) {
    let m = r
        .get_manifest(image, &cosign::signature_tag(from).expect("tag"))
        .expect("get")
        .expect("signed");
    r.put_manifest(image, &cosign::signature_tag(to).expect("tag"), &m)
        .expect("put");
}

/// Each way a signature can fail is refused with its reason, and sigstore-rs, asked the same
/// question, refuses the same entries (an unsigned image, another signer, a signature moved from
/// another image, a payload altered after signing, garbage in the annotation).
#[test]
fn hostile_signatures_are_refused_by_the_engine_and_by_sigstore_rs() {
    let reg = DistRegistry::start(Auth::None, None);
    let host = reg.host();
    let r = registry(&format!("{host}/hostile"), settings(None));
    let oracle = Oracle { host: host.clone() };
    let keys = tempfile::tempdir().expect("tempdir");
    let ci = key_files(keys.path(), "ci", "pw");
    let intruder = key_files(keys.path(), "intruder", "pw");
    let trusted_keys = [trusted(&ci, "keys/ci.pub")];
    let check = |digest: &str| cosign::verify(&r, "app", digest, &trusted_keys).expect("verify");
    let oracle_accepts = |digest: &str| oracle.accepts("hostile/app", digest, &ci.public);

    // Unsigned.
    let unsigned = push_small_image(&r, "app", "unsigned");
    let tag = cosign::signature_tag(&unsigned).expect("tag");
    assert_eq!(
        check(&unsigned),
        Verdict::Refused(Refusal::Unsigned { tag })
    );
    assert!(!oracle_accepts(&unsigned));

    // Signed, by a key nobody trusts.
    let impostor = push_small_image(&r, "app", "impostor");
    cosign::sign(&r, "app", &impostor, &intruder.key, None).expect("sign");
    let v = check(&impostor);
    assert!(
        matches!(
            &v,
            Verdict::Refused(Refusal::UntrustedKey { signatures: 1, .. })
        ),
        "{v:?}"
    );
    assert!(!oracle_accepts(&impostor));
    // With no trusted key at all, nothing is trusted.
    assert_eq!(
        cosign::verify(&r, "app", &impostor, &[]).expect("verify"),
        Verdict::Refused(Refusal::NoTrustedKeys)
    );

    // A good signature of one image, copied to another image's signature tag.
    let good = push_small_image(&r, "app", "good");
    cosign::sign(&r, "app", &good, &ci.key, None).expect("sign");
    assert!(check(&good).is_trusted());
    assert!(oracle_accepts(&good));
    let evil = push_small_image(&r, "app", "evil");
    move_signatures(&r, "app", &good, &evil);
    match check(&evil) {
        Verdict::Refused(Refusal::OtherDigest { key, names, .. }) => {
            assert_eq!(key, "keys/ci.pub");
            assert_eq!(names, good);
        }
        other => panic!("a moved signature was not refused as such: {other:?}"),
    }
    assert!(!oracle_accepts(&evil));

    // The payload rewritten to name the evil image, its old signature kept.
    let mut layers = signature_layers(&r, "app", &good);
    let payload = r
        .get_blob("app", layers[0]["digest"].as_str().expect("digest"))
        .expect("get")
        .expect("payload");
    let forged = String::from_utf8(payload)
        .expect("utf8")
        .replace(&good, &evil)
        .into_bytes();
    let forged_digest = r.put_blob("app", &forged).expect("put");
    layers[0]["digest"] = forged_digest.into();
    layers[0]["size"] = forged.len().into();
    put_signature_layers(&r, "app", &evil, layers.clone());
    let v = check(&evil);
    assert!(
        matches!(
            &v,
            Verdict::Refused(Refusal::UntrustedKey { signatures: 1, .. })
        ),
        "a tampered payload was not refused: {v:?}"
    );
    assert!(!oracle_accepts(&evil));

    // Garbage where the signature goes.
    layers[0]["annotations"][cosign::SIGNATURE_ANNOTATION] = "not base64!".into();
    put_signature_layers(&r, "app", &evil, layers.clone());
    let v = check(&evil);
    assert!(
        matches!(&v, Verdict::Refused(Refusal::BadSignature { reason, .. }) if reason.contains("not base64")),
        "{v:?}"
    );
    layers[0]["annotations"][cosign::SIGNATURE_ANNOTATION] = B64.encode(b"not DER").into();
    put_signature_layers(&r, "app", &evil, layers.clone());
    assert!(matches!(
        check(&evil),
        Verdict::Refused(Refusal::BadSignature { .. })
    ));
    assert!(!oracle_accepts(&evil));

    // A trusted key's signature over something that is not a cosign payload.
    let odd = b"{\"critical\":{},\"optional\":null}".to_vec();
    let odd_digest = r.put_blob("app", &odd).expect("put");
    layers[0]["digest"] = odd_digest.into();
    layers[0]["size"] = odd.len().into();
    layers[0]["annotations"][cosign::SIGNATURE_ANNOTATION] = B64.encode(ci.key.sign(&odd)).into();
    put_signature_layers(&r, "app", &evil, layers.clone());
    let v = check(&evil);
    assert!(
        matches!(&v, Verdict::Refused(Refusal::BadPayload { key, .. }) if key == "keys/ci.pub"),
        "{v:?}"
    );
    assert!(!oracle_accepts(&evil));

    // Among refused layers, one good signature is enough (other signers' layers do no harm).
    cosign::sign(&r, "app", &evil, &ci.key, None).expect("sign");
    assert_eq!(signature_layers(&r, "app", &evil).len(), 2);
    assert!(check(&evil).is_trusted());
    assert!(oracle_accepts(&evil));

    // A signature tag holding something that is not a signature manifest is not overwritten.
    let index = push_small_image(&r, "app", "index");
    let bytes = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#.to_vec();
    let m = Manifest {
        digest: cache::registry::sha256_digest(&bytes),
        media_type: "application/vnd.oci.image.index.v1+json".into(),
        bytes,
    };
    r.put_manifest("app", &cosign::signature_tag(&index).expect("tag"), &m)
        .expect("put index");
    let e = cosign::sign(&r, "app", &index, &ci.key, None)
        .expect_err("an index under the tag")
        .to_string();
    assert!(
        e.contains("holds an image index") && e.contains("refused to overwrite"),
        "{e}"
    );
    assert!(matches!(
        check(&index),
        Verdict::Refused(Refusal::BadSignature { .. })
    ));
}

fn openssl(args: &[&str], dir: &Path) -> Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (Debian's openssl package)")
}

/// OpenSSL as the oracle of the key and signature encodings: keys it makes (PKCS#8, and SEC1
/// after its `EC PARAMETERS` block) sign for the engine, and it verifies those signatures with
/// the public key the engine derives; it reads the engine's public key PEM and verifies the
/// engine's DER signatures, and the engine verifies its.
#[test]
fn openssl_reads_and_verifies_the_engines_keys_and_signatures_and_vice_versa() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(d.join("msg"), b"the payload").expect("write");
    let ok = |o: Output| assert!(o.status.success(), "{}", text(&o));
    ok(openssl(
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "pkcs8.pem",
        ],
        d,
    ));
    ok(openssl(
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-out",
            "sec1.pem",
        ],
        d,
    ));
    for name in ["pkcs8.pem", "sec1.pem"] {
        let key = SigningKey::from_file(&d.join(name), None).expect(name);
        // The engine's public half of OpenSSL's key is OpenSSL's.
        let pub_file = format!("{name}.pub");
        ok(openssl(
            &["pkey", "-in", name, "-pubout", "-out", &pub_file],
            d,
        ));
        let theirs = TrustedKey::from_file(&d.join(&pub_file), &pub_file).expect("their pub");
        assert_eq!(theirs, key.public_key(), "{name}");
        // OpenSSL verifies the engine's signature with the engine's PEM of the public key.
        std::fs::write(d.join("sig.der"), key.sign(b"the payload")).expect("write");
        std::fs::write(d.join("engine.pub"), key.public_key().to_pem()).expect("write");
        let out = openssl(
            &[
                "dgst",
                "-sha256",
                "-verify",
                "engine.pub",
                "-signature",
                "sig.der",
                "msg",
            ],
            d,
        );
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Verified OK"),
            "{}",
            text(&out)
        );
        // And the engine verifies OpenSSL's.
        ok(openssl(
            &["dgst", "-sha256", "-sign", name, "-out", "their.sig", "msg"],
            d,
        ));
        let sig = std::fs::read(d.join("their.sig")).expect("read");
        assert!(theirs.verifies(b"the payload", &sig), "{name}");
        assert!(!theirs.verifies(b"another payload", &sig), "{name}");
    }
    // A signature of the engine fails OpenSSL's check with another message: the oracle can say no.
    std::fs::write(d.join("msg2"), b"another payload").expect("write");
    let out = openssl(
        &[
            "dgst",
            "-sha256",
            "-verify",
            "engine.pub",
            "-signature",
            "sig.der",
            "msg2",
        ],
        d,
    );
    assert!(!out.status.success(), "{}", text(&out));
}
